/*
 * settings.c - Gloo's bootstrap Settings (DIR/<ns>/default.yaml): which directories hold the
 * config and the secrets, the namespaces to watch, and the refresh period. Without a
 * Settings file, DIR itself is the config directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config-internal.h"
#include "core/err.h"

#define DEFAULT_REFRESH_MS 60000

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* dir + "/" + rel, or rel when it is absolute; NULL on OOM. */
static char *join(const char *dir, const char *rel)
{
    if (rel[0] == '/')
        return strdup(rel);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    size_t n = dl + 1 + strlen(rel) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%.*s/%s", (int)dl, dir, rel);
    return p;
}

int cfg_read_file(const char *path, char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *p = NULL;
    size_t got = 0;
    int rc = RV_EIO;

    *buf = NULL;
    *len = 0;
    if (fd < 0)
        return errno == ENOENT ? RV_ENOTFOUND : RV_EIO;
    if (fstat(fd, &st) != 0)
        goto out;
    if (!S_ISREG(st.st_mode)) {
        errno = EISDIR;
        goto out;
    }
    if ((uint64_t)st.st_size > CFG_MAX_FILE) {
        rc = RV_ETOOBIG;
        goto out;
    }
    size_t cap = (size_t)st.st_size + 1;
    p = malloc(cap);
    if (!p) {
        rc = RV_ENOMEM;
        goto out;
    }
    for (;;) {
        if (got + 1 >= cap) {
            if (cap > CFG_MAX_FILE) {
                rc = RV_ETOOBIG;
                goto out;
            }
            char *q = realloc(p, cap * 2);
            if (!q) {
                rc = RV_ENOMEM;
                goto out;
            }
            p = q;
            cap *= 2;
        }
        ssize_t r = read(fd, p + got, cap - 1 - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got > CFG_MAX_FILE) {
        rc = RV_ETOOBIG;
        goto out;
    }
    p[got] = '\0';
    *buf = p;
    *len = got;
    p = NULL;
    rc = 0;
out:
    free(p);
    close(fd);
    return rc;
}

void rv_settings_free(rv_settings_t *s)
{
    if (!s)
        return;
    free(s->bootstrap_dir);
    free(s->settings_file);
    free(s->settings_ns);
    free(s->config_dir);
    free(s->secret_dir);
    free(s->discovery_ns);
    for (uint32_t i = 0; i < s->nwatch_ns; i++)
        free(s->watch_ns[i]);
    free(s->watch_ns);
    memset(s, 0, sizeof(*s));
}

/* Append ns to the watch list unless it is there already. */
static int add_watch(rv_settings_t *s, const char *ns)
{
    for (uint32_t i = 0; i < s->nwatch_ns; i++)
        if (!strcmp(s->watch_ns[i], ns))
            return 0;
    char **w = realloc(s->watch_ns, (s->nwatch_ns + 1) * sizeof(*w));
    if (!w)
        return RV_ENOMEM;
    s->watch_ns = w;
    if (!(w[s->nwatch_ns] = strdup(ns)))
        return RV_ENOMEM;
    s->nwatch_ns++;
    return 0;
}

/* Apply a decoded Settings document to out. */
static int apply_doc(rv_settings_t *out, const settings_doc_t *d, const char *dir, char *err, size_t errlen)
{
    out->discovery_ns = dup_str(d->discovery_ns && d->discovery_ns[0] ? d->discovery_ns : RV_DEFAULT_NAMESPACE);
    out->config_dir = d->config_src.h.set ? join(dir, d->config_src.directory) : dup_str(dir);
    out->secret_dir = d->secret_src.h.set ? join(dir, d->secret_src.directory) : join(dir, "secrets");
    if (!out->discovery_ns || !out->config_dir || !out->secret_dir)
        return RV_ENOMEM;
    if (d->has_refresh) {
        if (d->refresh_ms <= 0) {
            snprintf(err, errlen, "Settings %s/default: refreshRate must be greater than 0 (%s)", out->settings_ns,
                     out->settings_file);
            return RV_EPARSE;
        }
        out->refresh_ms = d->refresh_ms;
    }
    for (uint32_t i = 0; i < d->watch_ns.n; i++) {
        if (!d->watch_ns.v[i][0])
            continue;
        if (add_watch(out, d->watch_ns.v[i]) != 0)
            return RV_ENOMEM;
    }
    /* Gloo always watches the discovery namespace */
    if (out->nwatch_ns && add_watch(out, out->discovery_ns) != 0)
        return RV_ENOMEM;
    return 0;
}

int rv_settings_load(const char *dir, const char *ns, rv_settings_t *out, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL, *path = NULL, *who = NULL;
    size_t len = 0;
    rv_arena_t a;
    int rc;

    memset(out, 0, sizeof(*out));
    rv_arena_init(&a, 0);
    if (err && errlen)
        err[0] = '\0';
    if (!ns || !ns[0])
        ns = RV_DEFAULT_NAMESPACE;
    if (!dir || !dir[0]) {
        snprintf(err, errlen, "no config directory given");
        return RV_ENOTFOUND;
    }
    DIR *dh = opendir(dir);
    if (!dh || stat(dir, &st) != 0) {
        snprintf(err, errlen, "cannot read directory %s: %s", dir, strerror(errno));
        if (dh)
            closedir(dh);
        return RV_ENOTFOUND;
    }
    closedir(dh);

    out->refresh_ms = DEFAULT_REFRESH_MS;
    out->bootstrap_dir = strdup(dir);
    out->settings_ns = strdup(ns);
    if (!out->bootstrap_dir || !out->settings_ns)
        goto oom;

    static const char *const names[] = { "default.yaml", "default.yml" };
    for (size_t i = 0; i < RV_ARRAY_LEN(names) && !buf; i++) {
        char rel[512];
        snprintf(rel, sizeof(rel), "%s/%s", ns, names[i]);
        free(path);
        if (!(path = join(dir, rel)))
            goto oom;
        rc = cfg_read_file(path, &buf, &len);
        if (rc == RV_ENOTFOUND)
            continue;
        if (rc == RV_ENOMEM)
            goto oom;
        if (rc != 0) {
            snprintf(err, errlen, "Settings %s/default: cannot read %s: %s", ns, path,
                     rc == RV_ETOOBIG ? "file is larger than 4 MiB" : strerror(errno));
            rc = RV_EPARSE;
            goto fail;
        }
    }
    if (!buf) {
        /* no Settings: DIR is the config directory, the namespace is where defaults go */
        free(path);
        path = NULL;
        out->discovery_ns = strdup(ns);
        out->config_dir = strdup(dir);
        out->secret_dir = join(dir, "secrets");
        if (!out->discovery_ns || !out->config_dir || !out->secret_dir)
            goto oom;
        return 0;
    }
    out->settings_file = path;
    path = NULL;
    size_t wl = strlen(ns) + 32;
    if (!(who = malloc(wl)))
        goto oom;
    snprintf(who, wl, "Settings %s/default", ns);
    void *obj;
    if (cfg_decode_resource(&a, RK_SETTINGS, out->settings_file, who, ns, "default", buf, len, &obj, err, errlen) <
        0) {
        rc = RV_EPARSE;
        goto fail;
    }
    rc = apply_doc(out, obj, dir, err, errlen);
    if (rc == RV_ENOMEM)
        goto oom;
    if (rc != 0)
        goto fail;
    free(buf);
    free(who);
    rv_arena_free(&a);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    rc = RV_ENOMEM;
fail:
    free(buf);
    free(path);
    free(who);
    rv_arena_free(&a);
    rv_settings_free(out);
    return rc;
}
