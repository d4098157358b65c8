/*
 * vault.c - the Vault client and the Vault secret watcher of vault.h.
 *
 * The client runs each request on libcurl's multi interface (as consul.c does) so that
 * rv_vault_stop can cancel one in flight at once. The watcher thread owns its client; only the
 * "latest set" slot, the stop flag and the health block are shared (each under a mutex).
 * Nothing here ever logs a token, a secret id or a secret's content.
 */
#include "control/vault.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "control/consul.h"
#include "control/httpc.h"
#include "control/secretsrc.h"
#include "control/watcher.h"
#include "core/err.h"
#include "core/log.h"

#define MAX_BODY (32u << 20)        /* Vault's own request limit; answers are far smaller */
#define CONNECT_TIMEOUT_MS 3000
#define REQUEST_TIMEOUT_MS 15000    /* default; VAULT_CLIENT_TIMEOUT overrides */
#define DEFAULT_ADDR "https://127.0.0.1:8200"
#define GLOO_SECRET_DIR "gloo.solo.io/v1/Secret"
#define MIN_RENEW_MS 200

struct rv_vault_client_s {
    char *base;                 /* "http(s)://host:port" */
    struct curl_slist *connect_to;  /* VAULT_TLS_SERVER_NAME (rv_consul_tls_target) */
    char *ca_cert, *ca_path, *client_cert, *client_key;
    bool insecure;
    char *namespace_;           /* X-Vault-Namespace */
    char *token;                /* current token; wiped */
    bool approle;               /* log in with AppRole (else: the static token) */
    char *approle_mount, *role_id, *role_id_file, *secret_id, *secret_id_file;   /* secret_id wiped */
    char *path_prefix, *root_key;
    int kv;                     /* 0 not detected, 1, 2 */
    char *mount;                /* KV mount without slashes, e.g. "secret" */
    char *rel;                  /* path under the mount of the Secret folder, "gloo/gloo.solo.io/v1/Secret" */
    int64_t ttl_s;              /* token TTL as last learnt (login, lookup, renew); 0 = no expiry */
    bool renewable;
    long timeout_ms;            /* per request: VAULT_CLIENT_TIMEOUT, else REQUEST_TIMEOUT_MS */
    CURL *easy;
    CURLM *multi;
    _Atomic bool cancelled;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wipe_str(char **p)
{
    if (*p)
        rv_httpc_wipe_free(*p, strlen(*p));
    *p = NULL;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/*
 * VAULT_CLIENT_TIMEOUT as Vault's client reads it: a Go duration ("30s", "1m30s", "500ms") or
 * a number of seconds. Milliseconds (> 0), or -1 when malformed.
 */
static long parse_timeout(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!errno && end != s && !*end)
        return v > 0 && v <= 86400 ? (long)v * 1000 : -1;
    double total = 0;
    const char *p = s;
    while (*p) {
        double x = strtod(p, &end);
        if (end == p || x < 0)
            return -1;
        p = end;
        double unit;
        if (!strncmp(p, "ms", 2)) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60000;
            p++;
        } else if (*p == 'h') {
            unit = 3600000;
            p++;
        } else {
            return -1;
        }
        total += x * unit;
    }
    return total >= 1 && total <= 86400000 ? (long)total : -1;
}

/* The first of a or b that is set (copied), else NULL; *oom on failure. */
static char *first(const char *a, const char *b, bool *oom)
{
    const char *s = a && a[0] ? a : b && b[0] ? b : NULL;
    char *p = s ? strdup(s) : NULL;
    if (s && !p)
        *oom = true;
    return p;
}

/* The trimmed first line of a file (a token, role id or secret id). 0, or RV_EINVAL with err. */
static int read_cred_file(const char *what, const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char buf[4096];
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return RV_EINVAL;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = buf;
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t l = strcspn(s, "\r\n");
    while (l && isspace((unsigned char)s[l - 1]))
        l--;
    int rc = 0;
    if (!l) {
        snprintf(err, errlen, "%s %s is empty", what, path);
        rc = RV_EINVAL;
    } else if (!(*out = strndup(s, l))) {
        rc = RV_ENOMEM;
    }
    volatile char *v = buf;
    for (size_t i = 0; i < sizeof(buf); i++)
        v[i] = 0;
    return rc;
}

void rv_vault_resp_free(rv_vault_resp_t *r)
{
    if (!r)
        return;
    rv_httpc_wipe_free(r->body, r->len);
    r->body = NULL;
    r->len = 0;
}

void rv_vault_client_free(rv_vault_client_t *c)
{
    if (!c)
        return;
    rv_httpc_handles_free(c->easy, c->multi);
    curl_slist_free_all(c->connect_to);
    wipe_str(&c->token);
    wipe_str(&c->secret_id);
    char *f[] = { c->base, c->ca_cert, c->ca_path, c->client_cert, c->client_key, c->namespace_, c->approle_mount,
                  c->role_id, c->role_id_file, c->secret_id_file, c->path_prefix, c->root_key, c->mount, c->rel };
    for (size_t i = 0; i < RV_ARRAY_LEN(f); i++)
        free(f[i]);
    free(c);
}

const char *rv_vault_client_address(const rv_vault_client_t *c)
{
    return c->base;
}

int rv_vault_client_new(const rv_vault_cfg_t *cfg, rv_vault_client_t **out, char *err, size_t errlen)
{
    bool oom = false;
    int rc = RV_EINVAL;
    const char *v;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    rv_httpc_global_init();
    rv_vault_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return RV_ENOMEM;
    atomic_init(&c->cancelled, false);
    char *addr = first(cfg->address, env("VAULT_ADDR"), &oom);
    if (!addr && !oom)
        oom = !(addr = strdup(DEFAULT_ADDR));
    c->ca_cert = first(cfg->ca_cert, env("VAULT_CACERT"), &oom);
    c->ca_path = first(cfg->ca_path, env("VAULT_CAPATH"), &oom);
    c->client_cert = first(cfg->client_cert, env("VAULT_CLIENT_CERT"), &oom);
    c->client_key = first(cfg->client_key, env("VAULT_CLIENT_KEY"), &oom);
    c->namespace_ = first(env("VAULT_NAMESPACE"), NULL, &oom);
    c->path_prefix = first(cfg->path_prefix, "secret", &oom);
    c->root_key = first(cfg->root_key, "gloo", &oom);
    c->approle_mount = first(env("VAULT_APPROLE_MOUNT"), "approle", &oom);
    char *tls_name = first(cfg->tls_server_name, env("VAULT_TLS_SERVER_NAME"), &oom);
    if (oom) {
        free(addr);
        free(tls_name);
        goto oom;
    }
    c->insecure = cfg->insecure;
    c->timeout_ms = REQUEST_TIMEOUT_MS;
    if ((v = env("VAULT_CLIENT_TIMEOUT")) && (c->timeout_ms = parse_timeout(v)) < 0) {
        snprintf(err, errlen, "could not parse VAULT_CLIENT_TIMEOUT '%s' (a duration such as 30s, or seconds)", v);
        free(addr);
        free(tls_name);
        goto fail;
    }
    if ((v = env("VAULT_SKIP_VERIFY"))) {
        int b = rv_go_bool(v);
        if (b < 0) {
            snprintf(err, errlen, "could not parse VAULT_SKIP_VERIFY '%s'", v);
            free(addr);
            free(tls_name);
            goto fail;
        }
        c->insecure |= b == 1;
    }
    /* the address: "http://h:p", "https://h:p" or "h:p" (https, as Vault's default) */
    {
        const char *a = addr;
        const char *scheme = "https";
        if (!strncmp(a, "https://", 8)) {
            a += 8;
        } else if (!strncmp(a, "http://", 7)) {
            a += 7;
            scheme = "http";
        } else if (strstr(a, "://")) {
            snprintf(err, errlen, "Vault address %s: only http:// and https:// are supported", addr);
            free(addr);
            free(tls_name);
            goto fail;
        }
        if (!(c->base = rv_httpc_base(scheme, a))) {
            free(addr);
            free(tls_name);
            goto oom;
        }
        free(addr);
    }
    if (tls_name) {
        int r = rv_httpc_server_name(&c->base, tls_name, &c->connect_to);
        free(tls_name);
        if (r == RV_ENOMEM)
            goto oom;
        if (r != 0) {
            snprintf(err, errlen, "Vault address %s has no host for tlsServerName", c->base);
            goto fail;
        }
    }
    /* authentication: accessToken, else AppRole, else VAULT_TOKEN */
    if (cfg->access_token && cfg->access_token[0]) {
        if (!(c->token = strdup(cfg->access_token)))
            goto oom;
    } else {
        if ((v = env("VAULT_ROLE_ID")))
            c->role_id = first(v, NULL, &oom);
        else if ((v = env("VAULT_ROLE_ID_FILE")))
            c->role_id_file = first(v, NULL, &oom);
        if ((v = env("VAULT_SECRET_ID")))
            c->secret_id = first(v, NULL, &oom);
        else if ((v = env("VAULT_SECRET_ID_FILE")))
            c->secret_id_file = first(v, NULL, &oom);
        if (oom)
            goto oom;
        c->approle = c->role_id || c->role_id_file;
        if (!c->approle) {
            if ((v = env("VAULT_TOKEN")) && !(c->token = strdup(v)))
                goto oom;
            if (!c->token) {
                snprintf(err, errlen,
                         "no way to authenticate to Vault: set accessToken, VAULT_ROLE_ID(_FILE) and "
                         "VAULT_SECRET_ID(_FILE), or VAULT_TOKEN");
                goto fail;
            }
        }
    }
    if (rv_httpc_handles_new(&c->easy, &c->multi) != 0)
        goto oom;
    *out = c;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    rc = RV_ENOMEM;
fail:
    rv_vault_client_free(c);
    return rc;
}

/* ---- one request ----------------------------------------------------------------------------- */

/* The first message of Vault's {"errors": [...]} on one line, into out->err. */
static void error_text(rv_vault_resp_t *out)
{
    json_t *root = out->body ? json_loadb(out->body, out->len, 0, NULL) : NULL;
    json_t *errs = json_object_get(root, "errors");
    const char *m = json_string_value(json_array_get(errs, 0));
    char msg[200] = "";
    if (m) {
        size_t o = 0;
        bool sp = false;
        for (const char *s = m; *s && o + 1 < sizeof(msg); s++) {
            if (*s == '\n' || *s == '\t' || *s == '\r') {
                sp = o > 0;
                continue;
            }
            if (sp) {
                msg[o++] = ' ';
                sp = false;
                if (o + 1 >= sizeof(msg))
                    break;
            }
            msg[o++] = *s;
        }
        msg[o] = '\0';
    }
    snprintf(out->err, sizeof(out->err), "HTTP %d%s%s", out->status, msg[0] ? ": " : "", msg);
    if (root)
        json_decref(root);
}

int rv_vault_request(rv_vault_client_t *c, const char *method, const char *path, const char *body,
                     rv_vault_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    if (atomic_load(&c->cancelled)) {
        snprintf(out->err, sizeof(out->err), "cancelled");
        return RV_EIO;
    }
    size_t un = strlen(c->base) + strlen(path) + 8;
    char *url = malloc(un);
    if (!url)
        return RV_ENOMEM;
    snprintf(url, un, "%s/v1/%s", c->base, path[0] == '/' ? path + 1 : path);
    struct curl_slist *hdrs = NULL, *l;
    char *tokh = NULL;
    int rc = RV_ENOMEM;
#define HDR(s) do { if (!(l = curl_slist_append(hdrs, (s)))) goto done; hdrs = l; } while (0)
    HDR("X-Vault-Request: true");
    HDR("Expect:");
    if (body)
        HDR("Content-Type: application/json");
    if (c->namespace_) {
        char nh[512];
        snprintf(nh, sizeof(nh), "X-Vault-Namespace: %s", c->namespace_);
        HDR(nh);
    }
    if (c->token) {
        size_t tn = strlen(c->token) + 32;
        if (!(tokh = malloc(tn)))
            goto done;
        snprintf(tokh, tn, "X-Vault-Token: %s", c->token);
        HDR(tokh);
    }
#undef HDR

    rv_httpc_body_t x = { .max = MAX_BODY, .wipe = true };
    CURL *e = c->easy;
    rv_httpc_prepare(e, url, CONNECT_TIMEOUT_MS, c->timeout_ms, &x);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);   /* Vault's client minimum */
    rv_httpc_tls(e, c->ca_cert, c->ca_path, c->client_cert, c->client_key, c->insecure, c->connect_to);
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        }
    }

    rc = rv_httpc_run(c->multi, e, &c->cancelled, &x, &out->status, out->err, sizeof(out->err));
    out->body = x.body;
    out->len = x.len;
    if (rc != 0)
        goto done;
    if (out->status >= 300)
        error_text(out);
done:
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    wipe_str(&tokh);
    free(url);
    return rc;
}

/* Parse a 2xx body as a JSON object. NULL (with out->err) when it is not one. */
static json_t *parse_body(rv_vault_resp_t *r)
{
    json_t *root = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
    if (!json_is_object(root)) {
        if (root)
            json_decref(root);
        snprintf(r->err, sizeof(r->err), "HTTP %d: the answer is not a JSON object", r->status);
        return NULL;
    }
    return root;
}

/* An answer that is not the expected 2xx: make the call fail (status and err kept). */
static int not_ok(rv_vault_resp_t *r)
{
    if (!r->err[0])
        snprintf(r->err, sizeof(r->err), "HTTP %d", r->status);
    return RV_EIO;
}

/*
 * method path (body may be NULL) whose answer must be 200 with a JSON object: *root (caller
 * decrefs). absent_ok: a 404 is 0 with *root NULL (r freed). Anything else is an error with r
 * describing it.
 */
static int request_object(rv_vault_client_t *c, const char *method, const char *path, const char *body,
                          bool absent_ok, rv_vault_resp_t *r, json_t **root)
{
    *root = NULL;
    int rc = rv_vault_request(c, method, path, body, r);
    if (rc != 0)
        return rc;
    if (absent_ok && r->status == 404) {
        rv_vault_resp_free(r);
        return 0;
    }
    if (r->status != 200)
        return not_ok(r);
    return (*root = parse_body(r)) ? 0 : RV_EIO;
}

/* ---- authentication --------------------------------------------------------------------------- */

/* Learn ttl and renewable from an "auth" block. */
static void take_auth(rv_vault_client_t *c, json_t *auth)
{
    json_t *ld = json_object_get(auth, "lease_duration");
    c->ttl_s = json_is_integer(ld) ? (int64_t)json_integer_value(ld) : 0;
    c->renewable = json_is_true(json_object_get(auth, "renewable"));
}

static int approle_login(rv_vault_client_t *c, rv_vault_resp_t *out)
{
    char err[300];
    char *role = NULL, *secret = NULL;
    int rc = 0;
    memset(out, 0, sizeof(*out));
    if (c->role_id_file)
        rc = read_cred_file("AppRole role id file", c->role_id_file, &role, err, sizeof(err));
    else
        rc = (role = strdup(c->role_id)) ? 0 : RV_ENOMEM;
    if (rc == 0 && c->secret_id_file)
        rc = read_cred_file("AppRole secret id file", c->secret_id_file, &secret, err, sizeof(err));
    else if (rc == 0 && c->secret_id)
        rc = (secret = strdup(c->secret_id)) ? 0 : RV_ENOMEM;
    if (rc != 0) {
        snprintf(out->err, sizeof(out->err), "%.200s", rc == RV_ENOMEM ? "out of memory" : err);
        out->status = -1;   /* a local problem, not an unreachable Vault (classify) */
        goto done;
    }
    json_t *req = json_object();
    if (!req || json_object_set_new(req, "role_id", json_string(role)) != 0 ||
        (secret && json_object_set_new(req, "secret_id", json_string(secret)) != 0)) {
        if (req)
            json_decref(req);
        rc = RV_ENOMEM;
        goto done;
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!body) {
        rc = RV_ENOMEM;
        goto done;
    }
    char path[300];
    snprintf(path, sizeof(path), "auth/%s/login", c->approle_mount);
    /* the login itself goes without a token */
    char *tok = c->token;
    c->token = NULL;
    rc = rv_vault_request(c, "POST", path, body, out);
    c->token = tok;
    wipe_str(&body);
    if (rc != 0)
        goto done;
    if (out->status != 200) {
        rc = not_ok(out);
        goto done;
    }
    json_t *root = parse_body(out);
    json_t *auth = json_object_get(root, "auth");
    const char *t = json_string_value(json_object_get(auth, "client_token"));
    if (!t || !t[0]) {
        snprintf(out->err, sizeof(out->err), "AppRole login answered without auth.client_token");
        rc = RV_EIO;
    } else {
        wipe_str(&c->token);
        if (!(c->token = strdup(t)))
            rc = RV_ENOMEM;
        take_auth(c, auth);
    }
    if (root)
        json_decref(root);
done:
    wipe_str(&role);
    wipe_str(&secret);
    return rc;
}

static int lookup_self(rv_vault_client_t *c, rv_vault_resp_t *out)
{
    json_t *root;
    int rc = request_object(c, "GET", "auth/token/lookup-self", NULL, false, out, &root);
    if (rc != 0)
        return rc;
    json_t *d = json_object_get(root, "data");
    json_t *ttl = json_object_get(d, "ttl");
    c->ttl_s = json_is_integer(ttl) ? (int64_t)json_integer_value(ttl) : 0;
    c->renewable = json_is_true(json_object_get(d, "renewable"));
    json_decref(root);
    return 0;
}

int rv_vault_authenticate(rv_vault_client_t *c, bool force, rv_vault_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    if (c->approle && (force || !c->token))
        return approle_login(c, out);   /* the login tells the TTL: no lookup needed */
    return lookup_self(c, out);
}

/* POST auth/token/renew-self: the token's own increment. */
static int renew_self(rv_vault_client_t *c, rv_vault_resp_t *out)
{
    json_t *root;
    int rc = request_object(c, "POST", "auth/token/renew-self", "{}", false, out, &root);
    if (rc != 0)
        return rc;
    take_auth(c, json_object_get(root, "auth"));
    json_decref(root);
    return 0;
}

/* ---- paths ------------------------------------------------------------------------------------ */

/* Percent-encode s (one path segment) outside [A-Za-z0-9-._~] into f. */
static void put_seg(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || strchr("-._~", ch))
            fputc(ch, f);
        else
            fprintf(f, "%%%02X", ch);
    }
}

char *rv_vault_secret_path(const rv_vault_client_t *c, const char *kind, const char *ns, const char *name)
{
    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    if (!f)
        return NULL;
    fputs(c->mount, f);
    if (c->kv == 2)
        fprintf(f, "/%s", kind);
    fprintf(f, "/%s", c->rel);
    if (ns) {
        fputc('/', f);
        put_seg(f, ns);
        if (name) {
            fputc('/', f);
            put_seg(f, name);
        }
    }
    if (fclose(f) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

int rv_vault_kv_version(const rv_vault_client_t *c)
{
    return c->kv;
}

int rv_vault_detect_kv(rv_vault_client_t *c, rv_vault_resp_t *out)
{
    char *logical = NULL, *path = NULL;
    size_t ln = strlen(c->path_prefix) + strlen(c->root_key) + sizeof(GLOO_SECRET_DIR) + 4;
    int rc = RV_ENOMEM;
    memset(out, 0, sizeof(*out));
    if (!(logical = malloc(ln)) || !(path = malloc(ln + 32)))
        goto done;
    snprintf(logical, ln, "%s/%s/%s", c->path_prefix, c->root_key, GLOO_SECRET_DIR);
    snprintf(path, ln + 32, "sys/internal/ui/mounts/%s", logical);
    rc = rv_vault_request(c, "GET", path, NULL, out);
    if (rc != 0)
        goto done;
    int kv = 0;
    char *mount = NULL;
    if (out->status == 404) {
        kv = 1;     /* a server without the endpoint (before Vault 0.10): KV v1, as the CLI decides */
    } else if (out->status == 200) {
        json_t *root = parse_body(out);
        if (!root) {
            rc = RV_EIO;    /* an answer that is not JSON decides nothing (not "v1") */
            goto done;
        }
        json_t *d = json_object_get(root, "data");
        const char *mp = json_string_value(json_object_get(d, "path"));
        const char *ver = json_string_value(json_object_get(json_object_get(d, "options"), "version"));
        kv = ver && !strcmp(ver, "2") ? 2 : 1;
        if (mp) {
            size_t ml = strlen(mp);
            while (ml && mp[ml - 1] == '/')
                ml--;
            /* the mount must be a prefix of the logical path, ending at a segment boundary */
            if (ml && !strncmp(logical, mp, ml) && logical[ml] == '/' && !(mount = strndup(mp, ml)))
                rc = RV_ENOMEM;
        }
        if (root)
            json_decref(root);
        if (rc != 0)
            goto done;
    } else {
        rc = not_ok(out);
        goto done;
    }
    if (!mount && !(mount = strdup(c->path_prefix))) {
        rc = RV_ENOMEM;
        goto done;
    }
    char *rel = strdup(logical + strlen(mount) + 1);
    if (!rel) {
        free(mount);
        rc = RV_ENOMEM;
        goto done;
    }
    free(c->mount);
    free(c->rel);
    c->mount = mount;
    c->rel = rel;
    c->kv = kv;
    rc = 0;
done:
    free(logical);
    free(path);
    return rc;
}

/* ---- polling ---------------------------------------------------------------------------------- */

static void doc_clear(rv_vault_doc_t *d)
{
    free(d->ns);
    free(d->name);
    free(d->path);
    rv_httpc_wipe_free(d->json, d->len);
    memset(d, 0, sizeof(*d));
}

void rv_vault_set_free(rv_vault_set_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        doc_clear(&s->docs[i]);
    free(s->docs);
    for (size_t i = 0; i < s->nlist; i++)
        rv_secret_free(s->list[i]);
    free(s->list);
    for (size_t i = 0; i < s->nbad; i++) {
        free(s->bad[i].ns);
        free(s->bad[i].name);
        free(s->bad[i].reason);
    }
    free(s->bad);
    free(s);
}

/*
 * Decode every document of set into set->list (good) and set->bad (with reasons): the
 * watcher does it off the control thread (about 20 us a secret). A document whose metadata
 * names another secret than its Vault path is refused. 0 or RV_ENOMEM (set left undecoded).
 */
static int set_decode(rv_vault_set_t *set)
{
    rv_secret_t **list = set->n ? calloc(set->n, sizeof(*list)) : NULL;
    rv_secret_bad_t *bad = set->n ? calloc(set->n, sizeof(*bad)) : NULL;
    size_t n = 0, nbad = 0;
    if (set->n && (!list || !bad)) {
        free(list);
        free(bad);
        return RV_ENOMEM;
    }
    for (size_t i = 0; i < set->n; i++) {
        const rv_vault_doc_t *d = &set->docs[i];
        char err[512];
        rv_secret_t *s = NULL;
        int rc = rv_secret_decode(d->path, d->json, d->len, d->ns, d->name, &s, err, sizeof(err));
        if (rc == 0 && (strcmp(s->ns, d->ns) != 0 || strcmp(s->name, d->name) != 0)) {
            snprintf(err, sizeof(err), "%s: metadata names %s/%s, not the secret its Vault path names", d->path,
                     s->ns, s->name);
            rv_secret_free(s);
            s = NULL;
            rc = RV_EPARSE;
        }
        if (rc == 0) {
            list[n++] = s;
            continue;
        }
        if (rc == RV_ENOMEM)
            snprintf(err, sizeof(err), "out of memory");
        bad[nbad].ns = strdup(d->ns);
        bad[nbad].name = strdup(d->name);
        bad[nbad].reason = strdup(err);
        if (!bad[nbad].ns || !bad[nbad].name || !bad[nbad].reason) {
            free(bad[nbad].ns);
            free(bad[nbad].name);
            free(bad[nbad].reason);
            for (size_t k = 0; k < n; k++)
                rv_secret_free(list[k]);
            for (size_t k = 0; k < nbad; k++) {
                free(bad[k].ns);
                free(bad[k].name);
                free(bad[k].reason);
            }
            free(list);
            free(bad);
            return RV_ENOMEM;
        }
        nbad++;
    }
    set->list = list;
    set->nlist = n;
    set->bad = bad;
    set->nbad = nbad;
    set->decoded = true;
    return 0;
}

static int doc_copy(rv_vault_doc_t *dst, const rv_vault_doc_t *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->ns = strdup(src->ns);
    dst->name = strdup(src->name);
    dst->path = strdup(src->path);
    dst->json = malloc(src->len + 1);
    if (!dst->ns || !dst->name || !dst->path || !dst->json) {
        doc_clear(dst);
        return RV_ENOMEM;
    }
    memcpy(dst->json, src->json, src->len + 1);
    dst->len = src->len;
    dst->version = src->version;
    return 0;
}

static rv_vault_set_t *set_copy(const rv_vault_set_t *s)
{
    rv_vault_set_t *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    if (s->n && !(o->docs = calloc(s->n, sizeof(*o->docs)))) {
        free(o);
        return NULL;
    }
    for (size_t i = 0; i < s->n; i++, o->n++)
        if (doc_copy(&o->docs[i], &s->docs[i]) != 0) {
            rv_vault_set_free(o);
            return NULL;
        }
    return o;
}

static bool set_equal(const rv_vault_set_t *a, const rv_vault_set_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const rv_vault_doc_t *x = &a->docs[i], *y = &b->docs[i];
        if (strcmp(x->ns, y->ns) || strcmp(x->name, y->name) || x->version != y->version || x->len != y->len ||
            memcmp(x->json, y->json, x->len) != 0)
            return false;
    }
    return true;
}

static int doc_cmp(const void *a, const void *b)
{
    const rv_vault_doc_t *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

static const rv_vault_doc_t *set_find(const rv_vault_set_t *s, const char *ns, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->docs[i].ns, ns) && !strcmp(s->docs[i].name, name))
            return &s->docs[i];
    return NULL;
}

/* LIST path: the keys (a JSON array, caller decrefs), an empty array on 404. */
static int list_keys(rv_vault_client_t *c, const char *path, json_t **keys, rv_vault_resp_t *r)
{
    *keys = NULL;
    json_t *root;
    int rc = request_object(c, "LIST", path, NULL, true, r, &root);
    if (rc != 0)
        return rc;
    if (!root)      /* 404 */
        return (*keys = json_array()) ? 0 : RV_ENOMEM;
    json_t *k = json_object_get(json_object_get(root, "data"), "keys");
    if (!json_is_array(k)) {
        json_decref(root);
        snprintf(r->err, sizeof(r->err), "LIST %s: no data.keys in the answer", path);
        return RV_EIO;
    }
    *keys = json_incref(k);
    json_decref(root);
    rv_vault_resp_free(r);
    return 0;
}

/* Append a document to s (taking json). */
static int set_add(rv_vault_set_t *s, size_t *cap, const char *ns, const char *name, const char *path, char *json,
                   size_t len, uint64_t version)
{
    if (s->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        rv_vault_doc_t *d = realloc(s->docs, nc * sizeof(*d));
        if (!d) {
            rv_httpc_wipe_free(json, len);
            return RV_ENOMEM;
        }
        s->docs = d;
        *cap = nc;
    }
    rv_vault_doc_t *d = &s->docs[s->n];
    memset(d, 0, sizeof(*d));
    d->json = json;
    d->len = len;
    d->version = version;
    d->ns = strdup(ns);
    d->name = strdup(name);
    d->path = strdup(path);
    s->n++;
    return d->ns && d->name && d->path ? 0 : RV_ENOMEM;
}

typedef struct poll_stats_s {
    uint64_t data_reads;
} poll_stats_t;

/*
 * Read one secret into s: KV v2 reads its metadata and, when the current version is new (or
 * might have been deleted by time), its data; KV v1 reads it. Absent (404, deleted,
 * destroyed): nothing added. 0 or an error with r describing it.
 */
static int read_secret(rv_vault_client_t *c, const rv_vault_set_t *old, rv_vault_set_t *s, size_t *cap,
                       const char *ns, const char *name, rv_vault_resp_t *r, poll_stats_t *st)
{
    char *mpath = NULL, *dpath = NULL, *logical = NULL;
    json_t *root = NULL;
    int rc = RV_ENOMEM;
    size_t ln = strlen(c->mount) + strlen(c->rel) + strlen(ns) + strlen(name) + 4;
    if (!(logical = malloc(ln)))
        goto done;
    snprintf(logical, ln, "%s/%s/%s/%s", c->mount, c->rel, ns, name);
    if (!(dpath = rv_vault_secret_path(c, "data", ns, name)))
        goto done;
    if (c->kv == 2) {
        if (!(mpath = rv_vault_secret_path(c, "metadata", ns, name)))
            goto done;
        rc = request_object(c, "GET", mpath, NULL, true, r, &root);
        if (rc != 0 || !root)       /* !root: 404, deleted since the LIST */
            goto done;
        json_t *d = json_object_get(root, "data");
        json_t *cvj = json_object_get(d, "current_version");
        if (!json_is_integer(cvj) || json_integer_value(cvj) < 0) {
            /* not Vault's metadata answer: an error, never a silently missing secret */
            snprintf(r->err, sizeof(r->err), "HTTP %d: the metadata of %s/%s has no current_version", r->status, ns,
                     name);
            rc = RV_EIO;
            goto done;
        }
        uint64_t cv = (uint64_t)json_integer_value(cvj);
        char vk[32];
        snprintf(vk, sizeof(vk), "%llu", (unsigned long long)cv);
        json_t *ver = json_object_get(json_object_get(d, "versions"), vk);
        const char *dt = json_string_value(json_object_get(ver, "deletion_time"));
        bool destroyed = json_is_true(json_object_get(ver, "destroyed"));
        rv_vault_resp_free(r);
        if (!cv || destroyed)
            goto done;      /* no live version: absent */
        const rv_vault_doc_t *prev = set_find(old, ns, name);
        if (prev && prev->version == cv && (!dt || !dt[0])) {
            rv_vault_doc_t cp;
            if ((rc = doc_copy(&cp, prev)) != 0)
                goto done;
            rc = set_add(s, cap, ns, name, logical, cp.json, cp.len, cp.version);
            cp.json = NULL;
            cp.len = 0;
            doc_clear(&cp);
            goto done;
        }
        json_decref(root);
        root = NULL;
    }
    st->data_reads++;
    rc = request_object(c, "GET", dpath, NULL, true, r, &root);
    if (rc != 0 || !root)       /* !root: 404, never existed, deleted or destroyed: absent */
        goto done;
    json_t *d = json_object_get(root, "data");
    uint64_t version = 0;
    json_t *secret = d;
    if (c->kv == 2) {
        secret = json_object_get(d, "data");
        json_t *vj = json_object_get(json_object_get(d, "metadata"), "version");
        version = json_is_integer(vj) ? (uint64_t)json_integer_value(vj) : 0;
    }
    char *text = secret ? json_dumps(secret, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : strdup("null");
    rv_vault_resp_free(r);
    if (!text) {
        rc = RV_ENOMEM;
        goto done;
    }
    rc = set_add(s, cap, ns, name, logical, text, strlen(text), version);
done:
    if (root)
        json_decref(root);
    free(mpath);
    free(dpath);
    free(logical);
    return rc;
}

/* One poll: every secret under the Secret folder into *out (sorted by ns, name). */
static int poll_once(rv_vault_client_t *c, const rv_vault_set_t *old, rv_vault_set_t **out, rv_vault_resp_t *r,
                     poll_stats_t *st)
{
    json_t *nss = NULL, *names = NULL;
    char *folder = NULL;
    size_t cap = 0;
    int rc = RV_ENOMEM;
    rv_vault_set_t *s = calloc(1, sizeof(*s));
    *out = NULL;
    memset(r, 0, sizeof(*r));
    if (!s || !(folder = rv_vault_secret_path(c, "metadata", NULL, NULL)))
        goto done;
    if ((rc = list_keys(c, folder, &nss, r)) != 0)
        goto done;
    size_t i;
    json_t *k;
    json_array_foreach(nss, i, k) {
        const char *nk = json_string_value(k);
        size_t nl = nk ? strlen(nk) : 0;
        if (nl < 2 || nk[nl - 1] != '/')
            continue;   /* a key straight under Secret/ is not a namespace */
        char *ns = strndup(nk, nl - 1);
        char *nspath = ns ? rv_vault_secret_path(c, "metadata", ns, NULL) : NULL;
        if (!ns || !nspath) {
            free(ns);
            free(nspath);
            rc = RV_ENOMEM;
            goto done;
        }
        rc = list_keys(c, nspath, &names, r);
        free(nspath);
        if (rc != 0) {
            free(ns);
            goto done;
        }
        size_t j;
        json_t *nm;
        json_array_foreach(names, j, nm) {
            const char *name = json_string_value(nm);
            if (!name || !name[0] || name[strlen(name) - 1] == '/')
                continue;   /* a folder below a namespace holds no Gloo secret */
            if ((rc = read_secret(c, old, s, &cap, ns, name, r, st)) != 0) {
                free(ns);
                goto done;
            }
        }
        json_decref(names);
        names = NULL;
        free(ns);
    }
    if (s->n)
        qsort(s->docs, s->n, sizeof(*s->docs), doc_cmp);
    *out = s;
    s = NULL;
    rc = 0;
done:
    if (rc == RV_ENOMEM && !r->err[0])
        snprintf(r->err, sizeof(r->err), "out of memory");
    if (nss)
        json_decref(nss);
    if (names)
        json_decref(names);
    free(folder);
    rv_vault_set_free(s);
    return rc;
}

int rv_vault_read_all(rv_vault_client_t *c, rv_vault_set_t **out, rv_vault_resp_t *r)
{
    rv_vault_set_t none = { 0 };
    poll_stats_t st = { 0 };
    return poll_once(c, &none, out, r, &st);
}

/* ---- the watcher: state, health, metrics ------------------------------------------------------ */

struct rv_vault_s {
    rv_vault_client_t *client;
    int source;                 /* index in the secret table, for messages and metrics */
    _Atomic int64_t refresh_ms;    /* poll period; rv_vault_srcs_set_refresh may change it */
    rv_watcher_t w;             /* thread, eventfd, stop flag, latest rv_vault_set_t not yet taken;
                                 * w.kick: the period changed, wake and reschedule */
    uint64_t rng;
    /* health, guarded by w.mu: 0 unhealthy (or not yet read), 1 healthy */
    int hstate;
    bool tried;                 /* a first poll (or login) succeeded or failed */
    char hdetail[400];
    size_t nsecrets;
    _Atomic uint64_t polls_ok, polls_err, data_reads, logins, renew_ok, renew_err;
};

/* The running watchers, for /metrics (admin thread): added at start, removed before the free. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static rv_vault_t *reg[RV_SECRETS_MAX_SOURCES];

static void set_health(rv_vault_t *v, int state, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_health(rv_vault_t *v, int state, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&v->w.mu);
    v->hstate = state;
    v->tried = true;
    va_start(ap, fmt);
    vsnprintf(v->hdetail, sizeof(v->hdetail), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&v->w.mu);
}

bool rv_vault_health(rv_vault_t *v, char *detail, size_t n)
{
    pthread_mutex_lock(&v->w.mu);
    int st = v->hstate;
    if (detail && n)
        snprintf(detail, n, "%s", v->hdetail);
    pthread_mutex_unlock(&v->w.mu);
    return st == 1;
}

void rv_vault_prometheus(FILE *f)
{
    static const char *const fam[][3] = {
        { "rivet_vault_polls_total", "counter", "Polls of a Vault secret source by result." },
        { "rivet_vault_secret_reads_total", "counter",
          "Secret data reads of a Vault source (KV v2: only new or changed versions)." },
        { "rivet_vault_logins_total", "counter", "AppRole logins of a Vault source." },
        { "rivet_vault_token_renewals_total", "counter", "Token renewals of a Vault source by result." },
    };
    pthread_mutex_lock(&reg_mu);
    bool any = false;
    for (size_t i = 0; i < RV_ARRAY_LEN(reg); i++)
        any |= reg[i] != NULL;
    for (size_t k = 0; any && k < RV_ARRAY_LEN(fam); k++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam[k][0], fam[k][2], fam[k][0], fam[k][1]);
        for (size_t i = 0; i < RV_ARRAY_LEN(reg); i++) {
            rv_vault_t *v = reg[i];
            if (!v)
                continue;
            unsigned long long a = 0, b = 0;
            switch (k) {
            case 0:
                a = atomic_load(&v->polls_ok);
                b = atomic_load(&v->polls_err);
                break;
            case 1:
                a = atomic_load(&v->data_reads);
                break;
            case 2:
                a = atomic_load(&v->logins);
                break;
            default:
                a = atomic_load(&v->renew_ok);
                b = atomic_load(&v->renew_err);
                break;
            }
            if (k == 0 || k == 3)
                fprintf(f, "%s{index=\"%d\",result=\"ok\"} %llu\n%s{index=\"%d\",result=\"error\"} %llu\n",
                        fam[k][0], v->source, a, fam[k][0], v->source, b);
            else
                fprintf(f, "%s{index=\"%d\"} %llu\n", fam[k][0], v->source, a);
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

/* When to renew (or, for an AppRole token that cannot be renewed, log in again): about two
 * thirds of the TTL, minus up to a tenth of it of jitter. 0 = never (no TTL). */
static int64_t renew_time(rv_vault_t *v)
{
    rv_vault_client_t *c = v->client;
    if (c->ttl_s <= 0 || (!c->renewable && !c->approle))
        return 0;
    int64_t ttl = c->ttl_s * 1000, span = ttl / 10;
    int64_t jitter = span > 0 ? rv_consul_backoff_ms(20, &v->rng) % (span + 1) : 0;
    int64_t d = ttl * 2 / 3 - jitter;
    return now_ms() + (d < MIN_RENEW_MS ? MIN_RENEW_MS : d);
}

/* A failure's class (for log-once) and its description for /ready. */
static const char *classify(const rv_vault_resp_t *r, char *what, size_t n)
{
    if (r->status < 0) {
        snprintf(what, n, "%s", r->err);
        return "local";
    }
    if (r->status == 0) {
        snprintf(what, n, "unreachable: %s", r->err[0] ? r->err : "no answer");
        return "unreachable";
    }
    if (r->status == 503) {
        snprintf(what, n, "sealed or unavailable (%.200s)", r->err);
        return "sealed";
    }
    if (r->status == 403) {
        snprintf(what, n, "permission denied: the token is expired, revoked or lacks a policy (%.200s)", r->err);
        return "forbidden";
    }
    snprintf(what, n, "%s", r->err[0] ? r->err : "error");
    return "error";
}

static void free_set(void *s)
{
    rv_vault_set_free(s);
}

/* rv_watcher_stop: end the request in flight at once */
static void cancel_client(void *arg)
{
    rv_vault_client_t *c = arg;
    atomic_store(&c->cancelled, true);
    curl_multi_wakeup(c->multi);
}

static void *watch(void *arg)
{
    rv_vault_t *v = arg;
    rv_vault_client_t *c = v->client;
    rv_vault_set_t *cache = NULL;   /* the last poll's secrets */
    unsigned failures = 0;
    int64_t renew_at = 0, next_poll = 0, down_since = 0, login_ttl = 0;
    bool have_token = false, relogin_tried = false;
    char state[32] = "";            /* "" never polled, "ok", or a failure class */
    const char *addr = rv_vault_client_address(c);

    while (!rv_watcher_stopping(&v->w)) {
        rv_vault_resp_t r;
        memset(&r, 0, sizeof(r));
        pthread_mutex_lock(&v->w.mu);
        if (v->w.kick) {    /* a new period: the next poll comes no later than one new period */
            v->w.kick = false;
            int64_t np = now_ms() + atomic_load(&v->refresh_ms);
            if (next_poll > np)
                next_poll = np;
        }
        pthread_mutex_unlock(&v->w.mu);
        const char *step = "";
        int rc;
        if (!have_token) {
            step = c->approle ? "AppRole login" : "token lookup";
            rc = rv_vault_authenticate(c, c->approle, &r);
            if (rv_watcher_stopping(&v->w))
                break;
            if (rc != 0)
                goto failed;
            if (c->approle) {
                atomic_fetch_add(&v->logins, 1);
                login_ttl = c->ttl_s;
                rv_log_info("vault %s: AppRole login (token TTL %llds%s)", addr, (long long)c->ttl_s,
                            c->renewable ? ", renewable" : "");
            }
            have_token = true;
            renew_at = renew_time(v);
            rv_vault_resp_free(&r);
        }
        if (renew_at && now_ms() >= renew_at) {
            if (c->renewable) {
                step = "token renewal";
                rc = renew_self(c, &r);
                if (rv_watcher_stopping(&v->w))
                    break;
                if (rc == 0) {
                    atomic_fetch_add(&v->renew_ok, 1);
                    rv_log_debug("vault %s: token renewed (TTL %llds)", addr, (long long)c->ttl_s);
                    rv_vault_resp_free(&r);
                    /* the grant is shrinking towards the max TTL: a fresh AppRole login instead */
                    if (c->approle && login_ttl > 0 && c->ttl_s * 3 < login_ttl) {
                        rv_log_info("vault %s: token near its max TTL (%llds left); logging in again", addr,
                                    (long long)c->ttl_s);
                        have_token = false;
                        continue;
                    }
                    renew_at = renew_time(v);
                } else {
                    atomic_fetch_add(&v->renew_err, 1);
                    if (c->approle) {
                        rv_log_warn("vault %s: token renewal failed (%s); logging in again", addr, r.err);
                        rv_vault_resp_free(&r);
                        have_token = false;
                        continue;
                    }
                    if (r.status == 403 || r.status == 400)
                        goto failed;    /* the static token is gone for good: say so */
                    /* a transient failure: try again soon, the token is still valid */
                    renew_at = now_ms() + rv_consul_backoff_ms(failures + 1, &v->rng) + MIN_RENEW_MS;
                    rv_vault_resp_free(&r);
                }
            } else {
                have_token = false;     /* an AppRole token that cannot be renewed: log in again */
                continue;
            }
        }
        if (now_ms() >= next_poll) {
            if (!rv_vault_kv_version(c)) {
                step = "KV mount detection";
                if ((rc = rv_vault_detect_kv(c, &r)) != 0)
                    goto failed;
                rv_log_info("vault %s: Gloo secrets at %s/ (KV v%d)", addr, c->mount, c->kv);
                rv_vault_resp_free(&r);
            }
            step = "poll";
            rv_vault_set_t *s = NULL;
            poll_stats_t st = { 0 };
            rc = poll_once(c, cache ? cache : &(rv_vault_set_t){ 0 }, &s, &r, &st);
            atomic_fetch_add(&v->data_reads, st.data_reads);
            if (rv_watcher_stopping(&v->w)) {
                rv_vault_set_free(s);
                break;
            }
            if (rc != 0) {
                if (r.status == 403 && c->approle && !relogin_tried) {
                    /* the token was revoked or expired under us: one immediate new login */
                    relogin_tried = true;
                    have_token = false;
                    rv_vault_resp_free(&r);
                    continue;
                }
                goto failed;
            }
            relogin_tried = false;
            atomic_fetch_add(&v->polls_ok, 1);
            bool changed = !cache || !set_equal(cache, s);
            rv_vault_set_free(cache);
            cache = s;
            if (strcmp(state, "ok") != 0) {
                if (state[0])
                    rv_log_info("vault %s: healthy again after %.1f s; %zu secrets", addr,
                                (double)(now_ms() - down_since) / 1000.0, cache->n);
                else
                    rv_log_info("vault %s: %zu secrets under %s/%s", addr, cache->n, c->mount, c->rel);
                snprintf(state, sizeof(state), "ok");
            }
            failures = 0;
            /* The secrets are handed over before the source counts as tried (set_health): the
             * warm-up (rv_vault_srcs_warm) stops waiting once every source is tried and must
             * find them then, not while they are still being decoded here. */
            if (changed) {
                rv_vault_set_t *cp = set_copy(cache);
                if (cp) {
                    set_decode(cp);     /* off the control thread; on OOM it decodes there */
                    rv_watcher_hand_over(&v->w, cp);
                } else {
                    rv_log_error("vault %s: out of memory handing the secrets over", addr);
                }
            }
            set_health(v, 1, "vault %s: healthy (%zu secrets, KV v%d)", addr, cache->n, c->kv);
            rv_watcher_wake(&v->w);     /* the health change may need showing (and ends a warm-up wait) */
            next_poll = now_ms() + atomic_load(&v->refresh_ms);
        }
        int64_t until = next_poll;
        if (renew_at && renew_at < until)
            until = renew_at;
        if (rv_watcher_nap(&v->w, until - now_ms()))
            break;
        continue;

    failed:
        {
            char what[300];
            const char *cls = classify(&r, what, sizeof(what));
            if (r.status == 403 && c->approle)
                have_token = false;     /* the next attempt logs in again */
            atomic_fetch_add(&v->polls_err, 1);
            failures++;
            if (strcmp(state, cls) != 0) {
                if (!state[0] || !strcmp(state, "ok"))
                    down_since = now_ms();
                rv_log_error("vault %s: %s failed: %s; keeping the last secrets, retrying with backoff", addr, step,
                             what);
                snprintf(state, sizeof(state), "%s", cls);
                set_health(v, 0, "vault %s: unhealthy: %s: %s", addr, step, what);
                rv_watcher_wake(&v->w);
            }
            rv_vault_resp_free(&r);
            /* exponential with full jitter (consul.h), capped at the poll period: a failing
             * Vault is never asked more often than a healthy one, and is retried at least as
             * often as it would be polled */
            int64_t d = rv_consul_backoff_ms(failures, &v->rng);
            if (d > atomic_load(&v->refresh_ms))
                d = atomic_load(&v->refresh_ms);
            next_poll = now_ms() + d;
            if (rv_watcher_nap(&v->w, d))
                break;
        }
    }
    rv_vault_set_free(cache);
    return NULL;
}

rv_vault_t *rv_vault_start(const rv_vault_opts_t *o, char *err, size_t errlen)
{
    rv_vault_t *v = calloc(1, sizeof(*v));
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rv_watcher_init(&v->w, free_set);
    atomic_init(&v->refresh_ms, o->refresh_ms > 0 ? o->refresh_ms : 60000);
    v->source = o->source;
    v->rng = rv_watcher_seed(v);
    if (rv_vault_client_new(o->cfg, &v->client, err, errlen) != 0)
        goto fail;
    v->w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (v->w.efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    set_health(v, 0, "vault %s: unhealthy: not read yet (waiting for the first poll)",
               rv_vault_client_address(v->client));
    v->tried = false;       /* not started yet: nothing tried */
    if (rv_watcher_run(&v->w, watch, v) != 0) {
        snprintf(err, errlen, "cannot start the Vault watcher thread");
        goto fail;
    }
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < RV_ARRAY_LEN(reg); i++)
        if (!reg[i]) {
            reg[i] = v;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    return v;
fail:
    rv_vault_stop(v);
    return NULL;
}

int rv_vault_fd(const rv_vault_t *v)
{
    return v->w.efd;
}

int rv_vault_take(rv_vault_t *v, rv_vault_set_t **out)
{
    void *s;
    int r = rv_watcher_take(&v->w, &s);
    *out = s;
    return r;
}

void rv_vault_stop(rv_vault_t *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < RV_ARRAY_LEN(reg); i++)
        if (reg[i] == v)
            reg[i] = NULL;
    pthread_mutex_unlock(&reg_mu);
    rv_watcher_stop(&v->w, cancel_client, v->client);
    rv_vault_client_free(v->client);
    rv_watcher_destroy(&v->w);
    free(v);
}

/* ---- into the secret table (control thread) --------------------------------------------------- */

int rv_vault_apply(rv_secrets_t *t, int src, rv_vault_set_t *set)
{
    if (!set->decoded && set_decode(set) != 0)
        return RV_ENOMEM;
    /* the table takes every element, kept or not */
    int rc = rv_secrets_replace(t, src, set->list, set->nlist, set->bad, set->nbad);
    free(set->list);
    free(set->bad);
    set->list = NULL;
    set->bad = NULL;
    set->nlist = set->nbad = 0;
    set->decoded = false;
    return rc;
}

/* ---- every Vault source of the settings (control thread) ------------------------------------ */

struct rv_vault_srcs_s {
    int ep;
    size_t n;
    struct {
        rv_vault_t *w;
        int src;
        int healthy;            /* as last reported to secretsrc: -1 not yet */
        bool read;              /* a first set of secrets went into the table */
        char detail[400];
    } s[RV_SECRETS_MAX_SOURCES];
};

/* Mark source src unread in t with why (NULL: no reason known yet), for "not found" messages. */
static void mark_unread(rv_secrets_t *t, int src, const char *addr, const char *why)
{
    char note[600];
    snprintf(note, sizeof(note), "Vault source %s: not read yet%s%s", addr, why ? ": " : "", why ? why : "");
    if (rv_secrets_set_unread(t, src, note) == RV_ENOMEM)
        rv_log_error("secret source %d: out of memory noting it is not read yet", src);
}

rv_vault_srcs_t *rv_vault_srcs_start(const rv_settings_t *st, int ep, rv_secrets_t *t)
{
    rv_vault_srcs_t *vs = calloc(1, sizeof(*vs));
    if (!vs)
        return NULL;
    vs->ep = ep;
    for (uint32_t i = 0; i < st->nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
        if (st->secret_srcs[i].type != RV_SECRET_SRC_VAULT)
            continue;
        char err[300];
        rv_vault_opts_t o = { .cfg = &st->secret_srcs[i].vault, .refresh_ms = st->refresh_ms, .source = (int)i };
        rv_vault_t *w = rv_vault_start(&o, err, sizeof(err));
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = w ? rv_vault_fd(w) : -1 };
        if (w && epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0) {
            snprintf(err, sizeof(err), "epoll: %s", strerror(errno));
            rv_vault_stop(w);
            w = NULL;
        }
        if (!w) {
            const char *addr = st->secret_srcs[i].vault.address ? st->secret_srcs[i].vault.address : "(VAULT_ADDR)";
            rv_log_error("secret source %u: vault %s cannot start: %s; its secrets are missing", i, addr, err);
            rv_secretsrc_health((int)i, false, "secrets vault %s: unavailable: %s", addr, err);
            mark_unread(t, (int)i, addr, err);
            continue;
        }
        /* unhealthy until its first read: /ready shows it (and is not ready) in that window */
        rv_secretsrc_health((int)i, false, "secrets vault %s: unhealthy: not read yet (waiting for the first poll)",
                            rv_vault_client_address(w->client));
        mark_unread(t, (int)i, rv_vault_client_address(w->client), NULL);
        rv_log_info("secret source %u: vault %s (polled every %lld ms)", i, rv_vault_client_address(w->client),
                    (long long)atomic_load(&w->refresh_ms));
        vs->s[vs->n].w = w;
        vs->s[vs->n].src = (int)i;
        vs->s[vs->n].healthy = -1;
        vs->n++;
    }
    return vs;
}

void rv_vault_srcs_stop(rv_vault_srcs_t *vs)
{
    if (!vs)
        return;
    for (size_t i = 0; i < vs->n; i++) {
        epoll_ctl(vs->ep, EPOLL_CTL_DEL, rv_vault_fd(vs->s[i].w), NULL);
        rv_vault_stop(vs->s[i].w);
    }
    free(vs);
}

int rv_vault_srcs_event(rv_vault_srcs_t *vs, int fd, rv_secrets_t *t)
{
    if (!vs)
        return -1;
    for (size_t i = 0; i < vs->n; i++) {
        if (rv_vault_fd(vs->s[i].w) != fd)
            continue;
        rv_vault_set_t *set = NULL;
        int changed = 0;
        if (rv_vault_take(vs->s[i].w, &set) == 1) {
            struct timespec c0, c1;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
            int rc = rv_vault_apply(t, vs->s[i].src, set);
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
            rv_log_debug("secret source %d: %zu Vault secrets applied (%s) in %lld us control-thread CPU", vs->s[i].src,
                         set->n, rc == 1 ? "changed" : "unchanged",
                         (long long)(c1.tv_sec - c0.tv_sec) * 1000000 + (c1.tv_nsec - c0.tv_nsec) / 1000);
            rv_vault_set_free(set);
            if (rc < 0)
                rv_log_error("secret source %d: the Vault secrets could not be stored: %s", vs->s[i].src,
                             rv_strerror(rc));
            if (rc == 1) {
                rv_secretsrc_changed(t, vs->s[i].src);  /* logs what changed, once */
                changed = 1;
            }
            if (rc >= 0 && !vs->s[i].read) {
                vs->s[i].read = true;
                if (rv_secrets_set_unread(t, vs->s[i].src, NULL) == 1)
                    changed = 1;    /* a "not found ... not read yet" may be answered now */
            }
        }
        char d[400];
        bool h = rv_vault_health(vs->s[i].w, d, sizeof(d));
        if (!vs->s[i].read) {
            /* "vault <addr>: unhealthy: <step>: <what>" -> the part after "unhealthy: " */
            const char *u = strstr(d, ": unhealthy: ");
            if (u && !strncmp(u + 13, "not read yet", 12))
                u = NULL;   /* no failure yet: only waiting */
            mark_unread(t, vs->s[i].src, rv_vault_client_address(vs->s[i].w->client), u ? u + 13 : NULL);
        }
        if (vs->s[i].healthy != (int)h || strcmp(d, vs->s[i].detail) != 0) {
            vs->s[i].healthy = h;
            snprintf(vs->s[i].detail, sizeof(vs->s[i].detail), "%s", d);
            rv_secretsrc_health(vs->s[i].src, h, "secrets %s", d);
        }
        return changed;
    }
    return -1;
}

void rv_vault_srcs_set_refresh(rv_vault_srcs_t *vs, int64_t refresh_ms)
{
    if (!vs || refresh_ms <= 0)
        return;
    for (size_t i = 0; i < vs->n; i++) {
        rv_vault_t *v = vs->s[i].w;
        atomic_store(&v->refresh_ms, refresh_ms);
        pthread_mutex_lock(&v->w.mu);
        v->w.kick = true;
        pthread_cond_broadcast(&v->w.cv);
        pthread_mutex_unlock(&v->w.mu);
    }
}

void rv_vault_srcs_warm(rv_vault_srcs_t *vs, rv_secrets_t *t, int ms)
{
    if (!vs || !vs->n)
        return;
    int64_t end = now_ms() + ms;
    for (;;) {
        size_t waiting = 0;
        struct pollfd p[RV_SECRETS_MAX_SOURCES];
        for (size_t i = 0; i < vs->n; i++) {
            rv_vault_t *v = vs->s[i].w;
            pthread_mutex_lock(&v->w.mu);
            bool tried = v->tried;
            pthread_mutex_unlock(&v->w.mu);
            if (!tried)
                waiting++;
            p[i].fd = rv_vault_fd(v);
            p[i].events = POLLIN;
            p[i].revents = 0;
        }
        int64_t left = end - now_ms();
        if (!waiting || left <= 0) {
            if (waiting)
                rv_log_warn("vault: %zu source(s) not read within %d ms; starting without their secrets", waiting, ms);
            break;
        }
        if (poll(p, vs->n, (int)left) > 0)
            for (size_t i = 0; i < vs->n; i++)
                if (p[i].revents)
                    rv_vault_srcs_event(vs, p[i].fd, t);
    }
    /* what arrived meanwhile (a set handed over with the first health) */
    for (size_t i = 0; i < vs->n; i++)
        rv_vault_srcs_event(vs, rv_vault_fd(vs->s[i].w), t);
}
