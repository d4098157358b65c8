/*
 * secrets.c - Secrets in `rivet apply`, `rivet get secret` and `rivet delete secret`.
 *
 * Secrets live in the secret sources of the Settings (secret_srcs, in lookup order), not in
 * the config store. Each kind of source is one entry of the target table below (put, delete,
 * load); adding the Vault target is one entry and its three functions. `apply` writes to the
 * first source (the one `rivet run` looks up first, so what was applied is what serves).
 *
 * Key material never reaches stdout or stderr: get prints names, kinds, sources and which
 * fields are present; buffers that held key material are wiped before they are freed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/vaultstore.h"
#include "config/secret.h"
#include "core/err.h"

static void wipe_free(char *p, size_t n)
{
    if (p) {
        OPENSSL_cleanse(p, n);
        free(p);
    }
}

/* ---- directory target -------------------------------------------------------------------- */

static const char *const dir_exts[] = { ".yaml", ".yml", ".json" };

/* <dir>/<ns>/<name><ext>; malloc'd. */
static char *dir_file(const char *dir, const char *ns, const char *name, const char *ext)
{
    size_t n = strlen(dir) + strlen(ns) + strlen(name) + strlen(ext) + 3;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s/%s%s", dir, ns, name, ext);
    return p;
}

/* mkdir -p of path's directory; new directories are 0700 (they hold keys). */
static int mkdirs(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return 0;
}

/* Whole file (the caller wipes it before free); NULL with *exists false when absent. */
static char *slurp(const char *path, size_t *len, bool *exists)
{
    return cli_slurp(path, len, exists, NULL);
}

/*
 * Write val to path atomically (0600 temp file in the same directory, fsync, rename), unless
 * the file no longer holds what was read (old/oldlen/oldexists): 1 written, 0 concurrent
 * change, -1 error printed.
 */
static int write_checked(const char *path, const char *old, size_t oldlen, bool oldexists, const char *val,
                         size_t len, const char *cmd)
{
    if (mkdirs(path) != 0) {
        fprintf(stderr, "rivet %s: cannot create the directory of %s: %s\n", cmd, path, strerror(errno));
        return -1;
    }
    return cli_write_swap(path, old, oldlen, oldexists, val, len, true, cmd);
}

/* 1 created, 2 configured, 3 unchanged, 0 conflict, -1 error (printed). */
static int dir_put(cli_store_t *cs, const rv_secret_src_t *src, const rv_secret_t *s, bool dry, const char *cmd)
{
    (void)cs;
    char *path = NULL;
    bool json = false;
    /* an existing file of that name keeps its name (and a .json its format) */
    for (size_t i = 0; i < RV_ARRAY_LEN(dir_exts) && !path; i++) {
        char *p = dir_file(src->directory, s->ns, s->name, dir_exts[i]);
        if (p && access(p, F_OK) == 0) {
            path = p;
            json = i == 2;
        } else {
            free(p);
        }
    }
    if (!path && !(path = dir_file(src->directory, s->ns, s->name, ".yaml")))
        return -1;
    if (dry) {
        printf("Secret %s/%s -> %s (dry run)\n", s->ns, s->name, path);
        free(path);
        return 3;
    }
    size_t vlen = 0, olen = 0;
    char *val = rv_secret_stored(s, json, &vlen);
    bool ex;
    char *old = slurp(path, &olen, &ex);
    int w;
    if (!val) {
        fprintf(stderr, "rivet %s: out of memory\n", cmd);
        w = -1;
    } else if (ex && !old) {
        fprintf(stderr, "rivet %s: %s: %s\n", cmd, path, strerror(errno));
        w = -1;
    } else if (ex && olen == vlen && !memcmp(old, val, vlen)) {
        w = 3;
    } else {
        w = write_checked(path, old, olen, ex, val, vlen, cmd);
        if (w == 1 && ex)
            w = 2;
    }
    if (w == 0)
        fprintf(stderr, "rivet %s: conflict: Secret %s/%s (%s) was changed by someone else since it was read; not "
                "overwritten (read it again and re-apply)\n", cmd, s->ns, s->name, path);
    wipe_free(val, vlen);
    wipe_free(old, olen);
    free(path);
    return w;
}

/* 1 deleted, 0 absent, -1 error (printed). Every spelling of the file goes. */
static int dir_del(cli_store_t *cs, const rv_secret_src_t *src, const char *ns, const char *name, const char *cmd)
{
    (void)cs;
    int out = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(dir_exts); i++) {
        char *p = dir_file(src->directory, ns, name, dir_exts[i]);
        if (!p)
            return -1;
        if (unlink(p) == 0) {
            out = out < 0 ? out : 1;
        } else if (errno != ENOENT) {
            fprintf(stderr, "rivet %s: %s: %s\n", cmd, p, strerror(errno));
            out = -1;
        }
        free(p);
    }
    return out;
}

/* 0, or -1 after printing why. */
static int dir_load(cli_store_t *cs, const rv_secret_src_t *src, rv_secrets_t *t, int idx, const char *cmd)
{
    (void)cs;
    int rc = rv_secrets_scan_dir(t, idx, src->directory);
    if (rc < 0) {
        fprintf(stderr, "rivet %s: secrets directory %s: %s\n", cmd, src->directory,
                rc == RV_ENOMEM ? "out of memory" : strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- the targets --------------------------------------------------------------------------- */

typedef struct target_s {
    int type;                   /* enum rv_secret_src_type */
    const char *what;           /* for messages */
    int (*put)(cli_store_t *cs, const rv_secret_src_t *src, const rv_secret_t *s, bool dry, const char *cmd);
    int (*del)(cli_store_t *cs, const rv_secret_src_t *src, const char *ns, const char *name, const char *cmd);
    int (*load)(cli_store_t *cs, const rv_secret_src_t *src, rv_secrets_t *t, int idx, const char *cmd);
} target_t;

static const target_t targets[] = {
    { RV_SECRET_SRC_DIRECTORY, "directory", dir_put, dir_del, dir_load },
    { RV_SECRET_SRC_VAULT, "vault", cli_vault_put, cli_vault_del, cli_vault_load },     /* vaultstore.c */
};

static const target_t *target_of(const rv_secret_src_t *src)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(targets); i++)
        if (targets[i].type == src->type)
            return &targets[i];
    return NULL;
}

static const char *src_where(const rv_secret_src_t *src)
{
    if (src->type == RV_SECRET_SRC_DIRECTORY)
        return src->directory;
    return src->vault.address ? src->vault.address : "vault (VAULT_ADDR)";
}

int cli_secret_put(cli_store_t *cs, const rv_secret_t *s, bool dry)
{
    if (!cs->s.nsecret_srcs) {
        fprintf(stderr, "rivet apply: Secret %s/%s: no secret store (give --dir DIR: DIR/secrets, or Settings "
                "directorySecretSource / secretOptions)\n", s->ns, s->name);
        return -1;
    }
    const rv_secret_src_t *src = &cs->s.secret_srcs[0];
    const target_t *t = target_of(src);
    if (!t) {
        fprintf(stderr, "rivet apply: Secret %s/%s: writing to %s is not available in this build\n", s->ns, s->name,
                src_where(src));
        return -1;
    }
    int w = t->put(cs, src, s, dry, "apply");
    if (w == 1 || w == 2)
        printf("Secret %s/%s %s (%s %s)\n", s->ns, s->name, w == 1 ? "created" : "configured", t->what,
               src_where(src));
    else if (w == 3 && !dry)
        printf("Secret %s/%s unchanged\n", s->ns, s->name);
    return w > 0 ? 0 : -1;
}

/* Load every source into t (index = source index). Sources that cannot be read are named. */
static rv_secrets_t *load_all(cli_store_t *cs, const char *cmd, bool *partial)
{
    rv_secrets_t *t = rv_secrets_new();
    *partial = false;
    if (!t || rv_secrets_watch(t, cs->s.watch_ns, cs->s.nwatch_ns) < 0) {
        fprintf(stderr, "rivet %s: out of memory\n", cmd);
        rv_secrets_free(t);
        return NULL;
    }
    for (uint32_t i = 0; i < cs->s.nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
        const rv_secret_src_t *src = &cs->s.secret_srcs[i];
        const target_t *tg = target_of(src);
        if (!tg) {
            fprintf(stderr, "rivet %s: secret source %u (%s): reading it is not available in this build\n", cmd, i,
                    src_where(src));
            *partial = true;
            continue;
        }
        if (tg->load(cs, src, t, (int)i, cmd) != 0)
            *partial = true;
    }
    return t;
}

/* Names of the fields a secret holds (never their values). */
static void fields_of(const rv_secret_t *s, char *out, size_t n)
{
    out[0] = '\0';
    const char *names[4];
    size_t k = 0;
    if (s->kind == RV_SECRET_TLS) {
        if (s->cert_chain)
            names[k++] = "certChain";
        if (s->private_key)
            names[k++] = "privateKey";
        if (s->root_ca)
            names[k++] = "rootCa";
        if (s->ocsp_staple)
            names[k++] = "ocspStaple";
    } else {
        if (s->access_key)
            names[k++] = "accessKey";
        if (s->secret_key)
            names[k++] = "secretKey";
        if (s->session_token)
            names[k++] = "sessionToken";
    }
    size_t o = 0;
    for (size_t i = 0; i < k && o < n; i++) {
        int w = snprintf(out + o, n - o, "%s%s", i ? "," : "", names[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* One listed row: a decoded secret (s) or a failure (b). */
typedef struct row_s {
    const char *ns, *name, *source, *reason;
    const rv_secret_t *s;
    int src;
    const char *state;          /* Accepted, Rejected, Shadowed */
} row_t;

static void print_row(const row_t *r, const char *out, size_t idx)
{
    char fields[128] = "";
    const char *kind = !r->s ? "-" : r->s->kind == RV_SECRET_TLS ? "tls" : "aws";
    if (r->s)
        fields_of(r->s, fields, sizeof(fields));
    if (!strcmp(out, "table")) {
        printf("%-20s %-32s %-5s %-40s %-9s %s\n", r->ns, r->name, kind, fields[0] ? fields : "-", r->state,
               r->reason ? r->reason : r->source);
        return;
    }
    if (!strcmp(out, "yaml")) {
        if (idx)
            printf("---\n");
        printf("metadata:\n  name: ");
        json_str(r->name);
        printf("\n  namespace: ");
        json_str(r->ns);
        printf("\nkind: %s\nfields: [%s]\nsource: ", kind, fields);
        json_str(r->source);
        printf("\nsourceIndex: %d\nstatus:\n  state: %s\n", r->src, r->state);
        if (r->reason) {
            printf("  reason: ");
            json_str(r->reason);
            putchar('\n');
        }
        return;
    }
    printf("%s{\"metadata\":{\"name\":", idx ? "," : "");
    json_str(r->name);
    printf(",\"namespace\":");
    json_str(r->ns);
    printf("},\"kind\":\"%s\",\"fields\":[", kind);
    for (char *p = fields, *q; *p; p = q + (*q ? 1 : 0)) {
        q = strchr(p, ',');
        if (!q)
            q = p + strlen(p);
        printf("%s\"%.*s\"", p == fields ? "" : ",", (int)(q - p), p);
    }
    printf("],\"source\":");
    json_str(r->source);
    printf(",\"sourceIndex\":%d,\"status\":{\"state\":\"%s\"", r->src, r->state);
    if (r->reason) {
        printf(",\"reason\":");
        json_str(r->reason);
    }
    printf("}}");
}

int cli_secret_get(const cli_store_opts_t *so, const char *name, const char *ns, const char *out)
{
    cli_store_t cs;
    int rc = cli_store_open(&cs, so, "get");
    if (rc)
        return rc;
    bool partial;
    rv_secrets_t *t = load_all(&cs, "get", &partial);
    if (!t) {
        cli_store_close(&cs);
        return 2;
    }
    size_t found = 0;
    if (!strcmp(out, "table"))
        printf("%-20s %-32s %-5s %-40s %-9s %s\n", "NAMESPACE", "NAME", "KIND", "FIELDS", "STATUS", "SOURCE/REASON");
    else if (!strcmp(out, "json") && !name)
        printf("[");
    for (uint32_t i = 0; i < cs.s.nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
        const rv_secret_t *const *good;
        const rv_secret_bad_t *bad;
        size_t ng = rv_secrets_list(t, (int)i, &good), nb = rv_secrets_bad(t, (int)i, &bad);
        /* merge by ns/name so the listing is sorted within a source */
        size_t a = 0, b = 0;
        while (a < ng || b < nb) {
            int c = a == ng ? 1 : b == nb ? -1 : strcmp(good[a]->ns, bad[b].ns);
            if (a < ng && b < nb && c == 0)
                c = strcmp(good[a]->name, bad[b].name);
            row_t r = { .src = (int)i };
            if (c <= 0) {
                r.s = good[a++];
                r.ns = r.s->ns;
                r.name = r.s->name;
                r.source = r.s->source ? r.s->source : src_where(&cs.s.secret_srcs[i]);
            } else {
                r.ns = bad[b].ns;
                r.name = bad[b].name;
                r.reason = bad[b].reason;
                r.source = src_where(&cs.s.secret_srcs[i]);
                b++;
            }
            if ((ns && strcmp(ns, r.ns)) || (name && strcmp(name, r.name)))
                continue;
            /* the first source holding a name is the one used */
            const char *why = NULL;
            const rv_secret_t *used = rv_secrets_get(t, r.ns, r.name, &why);
            bool first = r.s ? used == r.s : (!used && why == r.reason);
            r.state = !rv_secrets_watched(t, r.ns) ? "Unwatched" : !first ? "Shadowed" : r.s ? "Accepted"
                                                                                            : "Rejected";
            print_row(&r, out, found++);
        }
    }
    if (!strcmp(out, "json"))
        printf(name ? "\n" : "]\n");
    if (name && !found) {
        fprintf(stderr, "rivet get: Secret %s/%s not found\n", ns ? ns : "*", name);
        rc = 1;
    }
    if (partial && !rc)
        rc = 1;
    rv_secrets_free(t);
    cli_store_close(&cs);
    return rc;
}

int cli_secret_delete(const cli_store_opts_t *so, const char *ns, const char *name)
{
    cli_store_t cs;
    int rc = cli_store_open(&cs, so, "delete");
    if (rc)
        return rc;
    bool partial;
    rv_secrets_t *t = load_all(&cs, "delete", &partial);
    if (!t) {
        cli_store_close(&cs);
        return 2;
    }
    rc = 1;
    int at = -1;
    for (uint32_t i = 0; i < cs.s.nsecret_srcs && i < RV_SECRETS_MAX_SOURCES && at < 0; i++) {
        const rv_secret_t *const *good;
        const rv_secret_bad_t *bad;
        size_t ng = rv_secrets_list(t, (int)i, &good), nb = rv_secrets_bad(t, (int)i, &bad);
        for (size_t k = 0; k < ng && at < 0; k++)
            if (!strcmp(good[k]->ns, ns) && !strcmp(good[k]->name, name))
                at = (int)i;
        for (size_t k = 0; k < nb && at < 0; k++)
            if (!strcmp(bad[k].ns, ns) && !strcmp(bad[k].name, name))
                at = (int)i;
    }
    if (at < 0) {
        fprintf(stderr, "rivet delete: Secret %s/%s not found\n", ns, name);
    } else {
        const rv_secret_src_t *src = &cs.s.secret_srcs[at];
        int w = target_of(src)->del(&cs, src, ns, name, "delete");
        if (w == 1) {
            printf("Secret %s/%s deleted (%s)\n", ns, name, src_where(src));
            rc = 0;
            for (uint32_t i = (uint32_t)at + 1; i < cs.s.nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
                const char *why = NULL;
                const rv_secret_t *const *good;
                size_t ng = rv_secrets_list(t, (int)i, &good);
                for (size_t k = 0; k < ng; k++)
                    if (!strcmp(good[k]->ns, ns) && !strcmp(good[k]->name, name))
                        why = src_where(&cs.s.secret_srcs[i]);
                if (why) {
                    printf("note: source %u (%s) also holds Secret %s/%s; it is the one used now\n", i, why, ns,
                           name);
                    break;
                }
            }
        } else if (w == 0) {
            fprintf(stderr, "rivet delete: Secret %s/%s not found\n", ns, name);
        }
    }
    rv_secrets_free(t);
    cli_store_close(&cs);
    return rc;
}
