/*
 * store.c - the resource store: one record per file of the config directory, holding the
 * last accepted decoded version and why the current content is rejected, if it is.
 *
 * A rescan runs on every inotify event and every refreshRate, so it must cost a stat per
 * file when nothing changed: files are re-read only when dev/inode/size/mtime/ctime moved,
 * and re-decoded only when their bytes differ from what was read last time.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "config/config-internal.h"
#include "core/err.h"
#include "core/log.h"

rv_store_t *rv_store_new(void)
{
    return calloc(1, sizeof(rv_store_t));
}

static void res_free(res_t *r)
{
    if (!r)
        return;
    free(r->path);
    free(r->rel);
    free(r->ns);
    free(r->name);
    free(r->content);
    free(r->error);
    rv_arena_free(&r->arena);
    free(r);
}

void rv_store_free(rv_store_t *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->nres; i++)
        res_free(st->res[i]);
    free(st->res);
    free(st);
}

/* Index of path in st->res (kept sorted by path), or the insertion point as -(i+1). */
static long find_path(const rv_store_t *st, const char *path)
{
    long lo = 0, hi = (long)st->nres - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        int c = strcmp(st->res[mid]->path, path);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -(lo + 1);
}

static bool same_stat(const res_t *r, const struct stat *sb)
{
    return r->have_content && r->dev == sb->st_dev && r->ino == sb->st_ino && r->size == sb->st_size &&
           r->mtime.tv_sec == sb->st_mtim.tv_sec && r->mtime.tv_nsec == sb->st_mtim.tv_nsec &&
           r->ctime.tv_sec == sb->st_ctim.tv_sec && r->ctime.tv_nsec == sb->st_ctim.tv_nsec;
}

static void set_error(res_t *r, const char *msg)
{
    free(r->error);
    r->error = msg ? strdup(msg) : NULL;
    if (msg && !r->error)
        rv_log_error("config: out of memory recording the status of %s", r->rel);
}

/*
 * Bring record r up to date with its file (already stat'ed into sb). Returns 1 when its
 * accepted version or its rejection changed, 0 when not, RV_ENOMEM.
 */
static int refresh(res_t *r, const struct stat *sb)
{
    char *buf = NULL;
    size_t len = 0;
    char err[CFG_ERRLEN];

    if (same_stat(r, sb))
        return 0;
    int rc = cfg_read_file(r->path, &buf, &len);
    r->dev = sb->st_dev;
    r->ino = sb->st_ino;
    r->size = sb->st_size;
    r->mtime = sb->st_mtim;
    r->ctime = sb->st_ctim;
    if (rc == RV_ENOMEM)
        return RV_ENOMEM;
    if (rc != 0) {
        /* unreadable: forget the content so the next scan tries again */
        snprintf(err, sizeof(err), "%s: %s", r->rel,
                 rc == RV_ETOOBIG ? "file is larger than 4 MiB" : strerror(errno));
        bool changed = !r->error || strcmp(r->error, err) != 0;
        set_error(r, err);
        free(r->content);
        r->content = NULL;
        r->clen = 0;
        r->have_content = rc == RV_ETOOBIG;
        return changed;
    }
    if (r->have_content && r->content && len == r->clen && memcmp(buf, r->content, len) == 0) {
        free(buf);
        return 0;
    }
    free(r->content);
    r->content = buf;
    r->clen = len;
    r->have_content = true;

    rv_arena_t a;
    void *obj;
    rv_arena_init(&a, 0);
    if (cfg_decode_resource(&a, r->kind, r->rel, NULL, r->ns, r->name, buf, len, &obj, err, sizeof(err)) == 0) {
        rv_arena_free(&r->arena);
        r->arena = a;
        r->obj = obj;
        set_error(r, NULL);
    } else {
        rv_arena_free(&a);
        set_error(r, err);
    }
    return 1;
}

static bool yaml_name(const char *f, size_t *base)
{
    size_t n = strlen(f);
    if (f[0] == '.')
        return false;
    if (n > 5 && !strcmp(f + n - 5, ".yaml")) {
        *base = n - 5;
        return true;
    }
    if (n > 4 && !strcmp(f + n - 4, ".yml")) {
        *base = n - 4;
        return true;
    }
    return false;
}

static bool watched(const rv_settings_t *s, const char *ns)
{
    if (!s->nwatch_ns)
        return true;
    for (uint32_t i = 0; i < s->nwatch_ns; i++)
        if (!strcmp(s->watch_ns[i], ns))
            return true;
    return false;
}

static char *pathf(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Scan <config>/<plural>/<ns>/ for one namespace. Returns changed (0/1) or RV_ENOMEM. */
static int scan_ns(rv_store_t *st, int kind, const char *nsdir, const char *ns)
{
    DIR *d = opendir(nsdir);
    int changed = 0;
    if (!d) {
        rv_log_warn("config: cannot read %s: %s", nsdir, strerror(errno));
        return 0;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t base;
        if (!yaml_name(de->d_name, &base))
            continue;
        char *path = pathf(nsdir, de->d_name);
        if (!path)
            goto oom;
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(path);
            continue;
        }
        long i = find_path(st, path);
        res_t *r;
        if (i >= 0) {
            r = st->res[i];
            free(path);
        } else {
            if (st->nres == st->cap) {
                uint32_t ncap = st->cap ? st->cap * 2 : 64;
                res_t **nr = realloc(st->res, ncap * sizeof(*nr));
                if (!nr) {
                    free(path);
                    goto oom;
                }
                st->res = nr;
                st->cap = ncap;
            }
            r = calloc(1, sizeof(*r));
            size_t rl = strlen(cfg_kinds[kind].plural) + strlen(ns) + strlen(de->d_name) + 3;
            if (r) {
                r->path = path;
                r->kind = kind;
                r->ns = strdup(ns);
                r->name = strndup(de->d_name, base);
                r->rel = malloc(rl);
                rv_arena_init(&r->arena, 0);
            } else {
                free(path);
            }
            if (!r || !r->ns || !r->name || !r->rel) {
                res_free(r);
                goto oom;
            }
            snprintf(r->rel, rl, "%s/%s/%s", cfg_kinds[kind].plural, ns, de->d_name);
            long at = -i - 1;
            memmove(&st->res[at + 1], &st->res[at], (st->nres - (uint32_t)at) * sizeof(*st->res));
            st->res[at] = r;
            st->nres++;
            changed = 1;
        }
        r->seen = true;
        int rc = refresh(r, &sb);
        if (rc < 0)
            goto oom;
        changed |= rc;
    }
    closedir(d);
    return changed;
oom:
    closedir(d);
    return RV_ENOMEM;
}

int rv_store_scan_dir(rv_store_t *st, const rv_settings_t *s)
{
    int changed = 0;
    DIR *top = opendir(s->config_dir);
    if (!top) {
        rv_log_error("config: cannot read %s: %s", s->config_dir, strerror(errno));
        return RV_ENOTFOUND;
    }
    closedir(top);
    for (uint32_t i = 0; i < st->nres; i++)
        st->res[i]->seen = false;
    for (int kind = 0; kind < RK_SETTINGS; kind++) {
        char *kdir = pathf(s->config_dir, cfg_kinds[kind].plural);
        if (!kdir)
            return RV_ENOMEM;
        DIR *d = opendir(kdir);
        if (!d) {
            if (errno != ENOENT && errno != ENOTDIR)
                rv_log_warn("config: cannot read %s: %s", kdir, strerror(errno));
            free(kdir);
            continue;
        }
        struct dirent *de;
        int rc = 0;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.' || !watched(s, de->d_name))
                continue;
            char *nsdir = pathf(kdir, de->d_name);
            struct stat sb;
            if (!nsdir) {
                rc = RV_ENOMEM;
                break;
            }
            if (stat(nsdir, &sb) == 0 && S_ISDIR(sb.st_mode))
                rc = scan_ns(st, kind, nsdir, de->d_name);
            free(nsdir);
            if (rc < 0)
                break;
            changed |= rc;
        }
        closedir(d);
        free(kdir);
        if (rc < 0)
            return rc;
    }
    /* files that disappeared (or left the watched namespaces) drop their resource */
    uint32_t w = 0;
    for (uint32_t i = 0; i < st->nres; i++) {
        if (st->res[i]->seen) {
            st->res[w++] = st->res[i];
        } else {
            res_free(st->res[i]);
            changed = 1;
        }
    }
    st->nres = w;
    return changed;
}
