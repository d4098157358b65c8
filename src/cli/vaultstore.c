/*
 * vaultstore.c - the Vault target of the CLI's secret commands (secrets.c's target table):
 * `rivet apply` writes a Secret where Gloo keeps it (KV v2 with options.cas = the version read,
 * so a concurrent change is a conflict and not lost; KV v1 plain), `rivet delete secret`
 * removes it (KV v2: every version, through metadata/, as Gloo does), and `rivet get secret`
 * reads every secret of the source into a table (vault.h does the reading).
 *
 * Key material never reaches stdout or stderr; buffers that held it are wiped.
 */
#include "cli/vaultstore.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/vault.h"
#include "core/err.h"

static void wipe_free(char *p, size_t n)
{
    if (p) {
        OPENSSL_cleanse(p, n);
        free(p);
    }
}

/* A client for src, authenticated, its KV version detected. NULL after printing why. */
static rv_vault_client_t *connect_src(const rv_secret_src_t *src, const char *cmd)
{
    char err[300];
    rv_vault_client_t *c = NULL;
    rv_vault_resp_t r;
    if (rv_vault_client_new(&src->vault, &c, err, sizeof(err)) != 0) {
        fprintf(stderr, "rivet %s: vault: %s\n", cmd, err);
        return NULL;
    }
    const char *step = "login";
    int rc = rv_vault_authenticate(c, false, &r);
    if (rc == 0) {
        rv_vault_resp_free(&r);
        step = "KV mount detection";
        rc = rv_vault_detect_kv(c, &r);
    }
    if (rc != 0) {
        fprintf(stderr, "rivet %s: vault %s: %s failed: %s\n", cmd, rv_vault_client_address(c), step,
                r.err[0] ? r.err : rv_strerror(rc));
        rv_vault_resp_free(&r);
        rv_vault_client_free(c);
        return NULL;
    }
    rv_vault_resp_free(&r);
    return c;
}

/* Print a failed request and return -1. */
static int failed(const char *cmd, rv_vault_client_t *c, const char *what, const char *path, rv_vault_resp_t *r,
                  int rc)
{
    fprintf(stderr, "rivet %s: vault %s: %s %s: %s\n", cmd, rv_vault_client_address(c), what, path,
            r->err[0] ? r->err : rv_strerror(rc));
    return -1;
}

int cli_vault_put(struct cli_store_s *cs, const rv_secret_src_t *src, const rv_secret_t *s, bool dry,
                  const char *cmd)
{
    (void)cs;
    rv_vault_client_t *c = connect_src(src, cmd);
    if (!c)
        return -1;
    int out = -1;
    size_t vlen = 0;
    char *val = NULL, *body = NULL, *path = rv_vault_secret_path(c, "data", s->ns, s->name);
    size_t blen = 0;
    json_t *cur = NULL, *want = NULL;
    rv_vault_resp_t r = { 0 };
    if (!path)
        goto oom;
    if (dry) {
        printf("Secret %s/%s -> vault %s /v1/%s (dry run)\n", s->ns, s->name, rv_vault_client_address(c), path);
        out = 3;
        goto done;
    }
    if (!(val = rv_secret_stored(s, true, &vlen)) || !(want = json_loadb(val, vlen, 0, NULL)))
        goto oom;
    /* what is there now: its content and (KV v2) the version a write must be based on */
    int rc = rv_vault_request(c, "GET", path, NULL, &r);
    if (rc != 0 || (r.status != 200 && r.status != 404)) {
        out = failed(cmd, c, "reading", path, &r, rc);
        goto done;
    }
    uint64_t version = 0;
    bool exists = false;
    if (r.status == 200 || r.len) {
        json_t *root = json_loadb(r.body, r.len, 0, NULL);
        json_t *d = json_object_get(root, "data");
        if (rv_vault_kv_version(c) == 2) {
            json_t *vj = json_object_get(json_object_get(d, "metadata"), "version");
            version = json_is_integer(vj) ? (uint64_t)json_integer_value(vj) : 0;
            d = json_object_get(d, "data");
        }
        exists = r.status == 200;
        if (exists && d)
            cur = json_incref(d);
        if (root)
            json_decref(root);
    }
    rv_vault_resp_free(&r);
    if (cur && json_equal(cur, want)) {
        out = 3;
        goto done;
    }
    if (rv_vault_kv_version(c) == 2) {
        blen = vlen + 64;
        if (!(body = malloc(blen)))
            goto oom;
        snprintf(body, blen, "{\"options\":{\"cas\":%llu},\"data\":%s}", (unsigned long long)version, val);
    } else if (!(body = strdup(val))) {
        goto oom;
    } else {
        blen = vlen + 1;
    }
    rc = rv_vault_request(c, rv_vault_kv_version(c) == 2 ? "POST" : "PUT", path, body, &r);
    if (rc == 0 && r.status == 400 && strstr(r.err, "check-and-set")) {
        fprintf(stderr, "rivet %s: conflict: Secret %s/%s (vault %s) was changed by someone else since it was read; "
                "not overwritten (read it again and re-apply)\n", cmd, s->ns, s->name, rv_vault_client_address(c));
        out = 0;
    } else if (rc != 0 || (r.status != 200 && r.status != 204)) {
        out = failed(cmd, c, "writing", path, &r, rc);
    } else {
        out = exists ? 2 : 1;
    }
    rv_vault_resp_free(&r);
    goto done;
oom:
    fprintf(stderr, "rivet %s: out of memory\n", cmd);
    out = -1;
done:
    if (cur)
        json_decref(cur);
    if (want)
        json_decref(want);
    wipe_free(val, vlen);
    wipe_free(body, blen);
    free(path);
    rv_vault_client_free(c);
    return out;
}

int cli_vault_del(struct cli_store_s *cs, const rv_secret_src_t *src, const char *ns, const char *name,
                  const char *cmd)
{
    (void)cs;
    rv_vault_client_t *c = connect_src(src, cmd);
    if (!c)
        return -1;
    /* KV v2: the metadata path removes every version, as Gloo's delete does */
    char *path = rv_vault_secret_path(c, "metadata", ns, name);
    rv_vault_resp_t r = { 0 };
    int out = -1;
    if (!path) {
        fprintf(stderr, "rivet %s: out of memory\n", cmd);
        goto done;
    }
    int rc = rv_vault_request(c, "GET", path, NULL, &r);
    if (rc == 0 && r.status == 404) {
        out = 0;
        goto done;
    }
    if (rc != 0 || r.status != 200) {
        out = failed(cmd, c, "reading", path, &r, rc);
        goto done;
    }
    rv_vault_resp_free(&r);
    rc = rv_vault_request(c, "DELETE", path, NULL, &r);
    if (rc != 0 || (r.status != 204 && r.status != 200))
        out = failed(cmd, c, "deleting", path, &r, rc);
    else
        out = 1;
done:
    rv_vault_resp_free(&r);
    free(path);
    rv_vault_client_free(c);
    return out;
}

int cli_vault_load(struct cli_store_s *cs, const rv_secret_src_t *src, rv_secrets_t *t, int idx, const char *cmd)
{
    (void)cs;
    rv_vault_client_t *c = connect_src(src, cmd);
    if (!c)
        return -1;
    rv_vault_set_t *set = NULL;
    rv_vault_resp_t r = { 0 };
    int rc = rv_vault_read_all(c, &set, &r);
    int out = 0;
    if (rc != 0) {
        fprintf(stderr, "rivet %s: vault %s: reading the secrets failed: %s\n", cmd, rv_vault_client_address(c),
                r.err[0] ? r.err : rv_strerror(rc));
        out = -1;
    } else if (rv_vault_apply(t, idx, set) < 0) {
        fprintf(stderr, "rivet %s: out of memory\n", cmd);
        out = -1;
    }
    rv_vault_resp_free(&r);
    rv_vault_set_free(set);
    rv_vault_client_free(c);
    return out;
}

int cli_vault_load_settings(const rv_settings_t *s, rv_secrets_t *t, const char *cmd)
{
    for (uint32_t i = 0; i < s->nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
        const rv_secret_src_t *src = &s->secret_srcs[i];
        if (src->type != RV_SECRET_SRC_VAULT)
            continue;
        if (cli_vault_load(NULL, src, t, (int)i, cmd) != 0)
            fprintf(stderr, "rivet %s: secret source %u (vault) could not be read: its secrets count as missing\n",
                    cmd, i);
    }
    return 0;
}
