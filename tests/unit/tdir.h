/*
 * tdir.h - a scratch directory for unit tests that read files (Settings, resources, secrets,
 * certificates): make it, write and delete files under it, remove it with all it holds.
 * Header-only (static inline), like test.h: each tests/unit/test_*.c is its own binary.
 * One directory at a time per binary, in `tdir` ("" when there is none).
 */
#ifndef RV_TEST_TDIR_H
#define RV_TEST_TDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tdir[256];

static inline int tdir_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove the scratch directory and everything below it; tdir becomes "". No-op without one. */
static inline void tdir_remove(void)
{
    if (tdir[0])
        nftw(tdir, tdir_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    tdir[0] = '\0';
}

/*
 * A new empty scratch directory /tmp/rivet-test-<name>-XXXXXX (mkdtemp), the previous one
 * removed first. Returns tdir, or NULL (tdir "") when it cannot be made.
 */
static inline const char *tdir_new(const char *name)
{
    tdir_remove();
    snprintf(tdir, sizeof(tdir), "/tmp/rivet-test-%s-XXXXXX", name);
    if (!mkdtemp(tdir)) {
        tdir[0] = '\0';
        return NULL;
    }
    return tdir;
}

static inline int tdir_rm_below_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    return ftw->level ? remove(path) : 0;
}

/*
 * The scratch directory emptied, its path kept (for a test that compares paths across
 * reloads), or a new one as tdir_new(name) when there is none. Returns tdir, or NULL.
 */
static inline const char *tdir_empty(const char *name)
{
    if (!tdir[0])
        return tdir_new(name);
    nftw(tdir, tdir_rm_below_cb, 16, FTW_DEPTH | FTW_PHYS);
    return tdir;
}

/* tdir/rel in out (outlen bytes); returns out. */
static inline char *tdir_path(char *out, size_t outlen, const char *rel)
{
    snprintf(out, outlen, "%s/%s", tdir, rel);
    return out;
}

/* Make the parent directories of path that lie below tdir (mode 0755). */
static inline void tdir_mkparents(char *path)
{
    for (char *p = path + strlen(tdir) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
}

/* Write content to tdir/rel in place (the same inode when it exists), parents made as needed.
 * A file that cannot be written is left as it was (the test's next check tells). */
static inline void tdir_put(const char *rel, const char *content)
{
    char path[512];
    tdir_path(path, sizeof(path), rel);
    tdir_mkparents(path);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

/* Write content to tdir/rel through rel.tmp and a rename: a new inode, as an editor or kubectl
 * replaces a file atomically. Parents made as needed. */
static inline void tdir_put_atomic(const char *rel, const char *content)
{
    char path[512], tmp[560];
    tdir_path(path, sizeof(path), rel);
    tdir_mkparents(path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
    rename(tmp, path);
}

/* Delete the file tdir/rel. */
static inline void tdir_del(const char *rel)
{
    char path[512];
    unlink(tdir_path(path, sizeof(path), rel));
}

#endif
