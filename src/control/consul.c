/*
 * consul.c - the Consul HTTP API client of consul.h, on libcurl's multi interface so that a
 * blocked query can be cancelled at once (curl_multi_wakeup) by another thread.
 *
 * One client per thread; it keeps its connection between requests. Nothing here logs: the
 * caller decides what a failure means (the KV watcher logs once per state change).
 */
#include "control/consul.h"
#include "control/httpc.h"

#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

#define MAX_BODY (64u << 20)
#define CONNECT_TIMEOUT_MS 3000
#define PLAIN_TIMEOUT_MS 15000     /* a non-blocking request */
#define DEFAULT_ADDR "127.0.0.1:8500"

struct rv_consul_s {
    rv_consul_cfg_t cfg;
    char *base;                 /* "http://host:port[/prefix]" */
    char *unix_path;            /* unix:///path addresses */
    CURL *easy;
    CURLM *multi;
    struct curl_slist *hdrs;    /* token, auth */
    struct curl_slist *connect_to;  /* CONSUL_TLS_SERVER_NAME: "name:port:host:port", or NULL */
    _Atomic bool cancelled;
};

static char *xdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void rv_consul_cfg_free(rv_consul_cfg_t *c)
{
    if (!c)
        return;
    char **f[] = { &c->address, &c->scheme, &c->datacenter, &c->token, &c->ca_file, &c->ca_path,
                   &c->cert_file, &c->key_file, &c->tls_server_name, &c->basic_auth };
    for (size_t i = 0; i < RV_ARRAY_LEN(f); i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
    c->insecure_skip_verify = c->stale = false;
}

int rv_go_bool(const char *s)
{
    static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
    static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };
    for (size_t i = 0; i < RV_ARRAY_LEN(t); i++) {
        if (!strcmp(s, t[i]))
            return 1;
        if (!strcmp(s, f[i]))
            return 0;
    }
    return -1;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* Set *field to a copy of v when *field is unset and v is non-empty. */
static int fill(char **field, const char *v)
{
    if (*field || !v)
        return 0;
    return (*field = strdup(v)) ? 0 : RV_ENOMEM;
}

int rv_consul_cfg_from_env(rv_consul_cfg_t *c, char *err, size_t errlen)
{
    int rc = 0;
    const char *v;
    if (err && errlen)
        err[0] = '\0';
    rc |= fill(&c->address, env("CONSUL_HTTP_ADDR"));
    rc |= fill(&c->address, DEFAULT_ADDR);
    rc |= fill(&c->token, env("CONSUL_HTTP_TOKEN"));
    rc |= fill(&c->basic_auth, env("CONSUL_HTTP_AUTH"));
    rc |= fill(&c->ca_file, env("CONSUL_CACERT"));
    rc |= fill(&c->ca_path, env("CONSUL_CAPATH"));
    rc |= fill(&c->cert_file, env("CONSUL_CLIENT_CERT"));
    rc |= fill(&c->key_file, env("CONSUL_CLIENT_KEY"));
    if (rc)
        goto oom;
    if (!c->tls_server_name && (v = env("CONSUL_TLS_SERVER_NAME"))) {
        /* Go strips a port: "consul.example:8501" -> "consul.example" */
        const char *colon = strrchr(v, ':');
        size_t n = colon && !strchr(v, ']') && colon == strchr(v, ':') ? (size_t)(colon - v) : strlen(v);
        if (!(c->tls_server_name = strndup(v, n)))
            goto oom;
    }
    if ((v = env("CONSUL_HTTP_SSL"))) {
        int b = rv_go_bool(v);
        if (b < 0)
            rv_log_warn("consul: could not parse CONSUL_HTTP_SSL '%s' (ignored)", v);
        else if (b == 1 && !c->scheme && !(c->scheme = strdup("https")))
            goto oom;
    }
    if ((v = env("CONSUL_HTTP_SSL_VERIFY"))) {
        int b = rv_go_bool(v);
        if (b < 0)
            rv_log_warn("consul: could not parse CONSUL_HTTP_SSL_VERIFY '%s' (ignored)", v);
        else if (b == 0)
            c->insecure_skip_verify = true;
    }
    /* the token file wins over any token, as in the Go client's NewClient */
    if ((v = env("CONSUL_HTTP_TOKEN_FILE"))) {
        FILE *f = fopen(v, "re");
        char buf[4096];
        if (!f) {
            snprintf(err, errlen, "CONSUL_HTTP_TOKEN_FILE %s: %s", v, strerror(errno));
            return RV_EINVAL;
        }
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *s = buf;
        while (*s && isspace((unsigned char)*s))
            s++;
        size_t l = strlen(s);
        while (l && isspace((unsigned char)s[l - 1]))
            s[--l] = '\0';
        if (l) {
            free(c->token);
            if (!(c->token = strdup(s)))
                goto oom;
        }
    }
    /* an https:// or http:// address decides the scheme */
    if (!strncmp(c->address, "https://", 8) || !strncmp(c->address, "http://", 7)) {
        bool tls = c->address[4] == 's';
        free(c->scheme);
        if (!(c->scheme = strdup(tls ? "https" : "http")))
            goto oom;
    }
    if (!c->scheme && !(c->scheme = strdup("http")))
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return RV_ENOMEM;
}

/* Build c->base (and c->unix_path) from the address and scheme. */
static int make_base(rv_consul_t *c)
{
    const char *a = c->cfg.address ? c->cfg.address : DEFAULT_ADDR;
    const char *scheme = c->cfg.scheme ? c->cfg.scheme : "http";
    if (!strncmp(a, "unix://", 7)) {
        if (!(c->unix_path = strdup(a + 7)))
            return RV_ENOMEM;
        a = "localhost";
    } else if (!strncmp(a, "https://", 8)) {
        a += 8;
        scheme = "https";
    } else if (!strncmp(a, "http://", 7)) {
        a += 7;
        scheme = "http";
    }
    return (c->base = rv_httpc_base(scheme, a)) ? 0 : RV_ENOMEM;
}

int rv_consul_tls_target(const char *base, const char *server_name, char **url_base, char **connect_to)
{
    *url_base = *connect_to = NULL;
    if (!base || !server_name || !server_name[0] || strncmp(base, "https://", 8) != 0)
        return 0;
    const char *h = base + 8, *end = h + strcspn(h, "/?#"), *hend, *port = NULL;
    if (*h == '[') {    /* IPv6 literal: keep the brackets for CURLOPT_CONNECT_TO */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return RV_EINVAL;
        hend = rb + 1;
    } else {
        hend = memchr(h, ':', (size_t)(end - h));
        if (!hend)
            hend = end;
    }
    if (hend < end && *hend == ':')
        port = hend + 1;
    size_t hl = (size_t)(hend - h), pl = port ? (size_t)(end - port) : 3;
    if (!hl || (port && !pl))
        return RV_EINVAL;
    const char *pv = port ? port : "443";
    size_t n1 = strlen(server_name) + pl + strlen(end) + 16, n2 = strlen(server_name) + hl + 2 * pl + 4;
    char *u = malloc(n1), *c = malloc(n2);
    if (!u || !c) {
        free(u);
        free(c);
        return RV_ENOMEM;
    }
    snprintf(u, n1, "https://%s:%.*s%s", server_name, (int)pl, pv, end);
    snprintf(c, n2, "%s:%.*s:%.*s:%.*s", server_name, (int)pl, pv, (int)hl, h, (int)pl, pv);
    *url_base = u;
    *connect_to = c;
    return 0;
}

rv_consul_t *rv_consul_new(const rv_consul_cfg_t *cfg)
{
    rv_httpc_global_init();
    rv_consul_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    const rv_consul_cfg_t *s = cfg;
    c->cfg.address = xdup(s->address);
    c->cfg.scheme = xdup(s->scheme);
    c->cfg.datacenter = xdup(s->datacenter);
    c->cfg.token = xdup(s->token);
    c->cfg.ca_file = xdup(s->ca_file);
    c->cfg.ca_path = xdup(s->ca_path);
    c->cfg.cert_file = xdup(s->cert_file);
    c->cfg.key_file = xdup(s->key_file);
    c->cfg.tls_server_name = xdup(s->tls_server_name);
    c->cfg.basic_auth = xdup(s->basic_auth);
    c->cfg.insecure_skip_verify = s->insecure_skip_verify;
    c->cfg.stale = s->stale;
    atomic_init(&c->cancelled, false);
    if (make_base(c) != 0)
        goto fail;
    if (!c->unix_path && c->cfg.tls_server_name &&
        rv_httpc_server_name(&c->base, c->cfg.tls_server_name, &c->connect_to) != 0)
        goto fail;
    if (rv_httpc_handles_new(&c->easy, &c->multi) != 0)
        goto fail;
    if (c->cfg.token) {
        size_t n = strlen(c->cfg.token) + 32;
        char *h = malloc(n);
        if (!h)
            goto fail;
        snprintf(h, n, "X-Consul-Token: %s", c->cfg.token);
        struct curl_slist *l = curl_slist_append(c->hdrs, h);
        free(h);
        if (!l)
            goto fail;
        c->hdrs = l;
    }
    /* no "Expect: 100-continue" round trip on PUT */
    struct curl_slist *l = curl_slist_append(c->hdrs, "Expect:");
    if (!l)
        goto fail;
    c->hdrs = l;
    return c;
fail:
    rv_consul_free(c);
    return NULL;
}

void rv_consul_free(rv_consul_t *c)
{
    if (!c)
        return;
    rv_httpc_handles_free(c->easy, c->multi);
    curl_slist_free_all(c->hdrs);
    curl_slist_free_all(c->connect_to);
    free(c->base);
    free(c->unix_path);
    rv_consul_cfg_free(&c->cfg);
    free(c);
}

void rv_consul_cancel(rv_consul_t *c)
{
    atomic_store(&c->cancelled, true);
    curl_multi_wakeup(c->multi);
}

void rv_consul_resp_free(rv_consul_resp_t *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

/* Header value of name (case-insensitive) in line, trimmed, into v; false when another header. */
static bool header_is(const char *line, size_t n, const char *name, char *v, size_t vn)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return false;
    const char *s = line + nl + 1, *e = line + n;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    size_t l = (size_t)(e - s) < vn - 1 ? (size_t)(e - s) : vn - 1;
    memcpy(v, s, l);
    v[l] = '\0';
    return true;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    rv_consul_resp_t *out = ud;
    size_t n = sz * nm;
    char v[64];
    if (n >= 5 && !strncmp(p, "HTTP/", 5)) {
        /* a new response (after a 100 Continue or a redirect): forget the previous headers */
        out->index = 0;
        out->known_leader = false;
        out->has_known_leader = false;
    } else if (header_is(p, n, "X-Consul-Index", v, sizeof(v))) {
        char *end;
        errno = 0;
        unsigned long long i = strtoull(v, &end, 10);
        out->index = (!errno && end != v && !*end) ? (uint64_t)i : 0;
    } else if (header_is(p, n, "X-Consul-KnownLeader", v, sizeof(v))) {
        out->known_leader = !strcasecmp(v, "true");
        out->has_known_leader = true;
    }
    return n;
}

/* Append "<sep>name[=value]" to url (capacity n). */
static void add_param(char *url, size_t n, const char *name, const char *value)
{
    size_t l = strlen(url);
    snprintf(url + l, n > l ? n - l : 0, "%c%s%s%s", strchr(url, '?') ? '&' : '?', name, value ? "=" : "",
             value ? value : "");
}

/* Run one request. method: "GET", "PUT", "DELETE". */
static int perform(rv_consul_t *c, const char *method, const char *path, uint64_t index, int wait_ms,
                   const void *body, size_t blen, rv_consul_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    if (atomic_load(&c->cancelled)) {
        snprintf(out->err, sizeof(out->err), "cancelled");
        return RV_EIO;
    }
    size_t un = strlen(c->base) + strlen(path) + 256 + (c->cfg.datacenter ? strlen(c->cfg.datacenter) * 3 : 0);
    char *url = malloc(un);
    if (!url)
        return RV_ENOMEM;
    snprintf(url, un, "%s/v1/%s", c->base, path[0] == '/' ? path + 1 : path);
    bool get = !strcmp(method, "GET");
    if (c->cfg.datacenter) {
        char *dc = curl_easy_escape(c->easy, c->cfg.datacenter, 0);
        if (dc) {
            add_param(url, un, "dc", dc);
            curl_free(dc);
        }
    }
    if (get && c->cfg.stale)
        add_param(url, un, "stale", NULL);
    long timeout_ms = PLAIN_TIMEOUT_MS;
    if (get && index > 0) {
        char iv[32], wv[32];
        if (wait_ms <= 0)
            wait_ms = 300000;
        if (wait_ms > 600000)
            wait_ms = 600000;
        snprintf(iv, sizeof(iv), "%llu", (unsigned long long)index);
        snprintf(wv, sizeof(wv), "%dms", wait_ms);
        add_param(url, un, "index", iv);
        add_param(url, un, "wait", wv);
        timeout_ms = (long)wait_ms + wait_ms / 16 + 5000;
    }

    rv_httpc_body_t x = { .max = MAX_BODY };
    CURL *e = c->easy;
    rv_httpc_prepare(e, url, CONNECT_TIMEOUT_MS, timeout_ms, &x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (c->unix_path)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
    if (c->cfg.basic_auth) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERPWD, c->cfg.basic_auth);
    }
    /* CONSUL_TLS_SERVER_NAME: connect_to (rv_consul_tls_target) */
    rv_httpc_tls(e, c->cfg.ca_file, c->cfg.ca_path, c->cfg.cert_file, c->cfg.key_file, c->cfg.insecure_skip_verify,
                 c->connect_to);
    if (!get) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (body || !strcmp(method, "PUT")) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        }
    }

    int rc = rv_httpc_run(c->multi, e, &c->cancelled, &x, &out->status, out->err, sizeof(out->err));
    out->body = x.body;
    out->len = x.len;
    if (rc != 0)
        goto done;
    if (out->status >= 300) {
        /* Consul's errors are plain text: keep the first line for logs */
        size_t l = strcspn(out->body, "\r\n");
        snprintf(out->err, sizeof(out->err), "HTTP %d: %.*s", out->status, (int)(l > 200 ? 200 : l), out->body);
    }
done:
    free(url);
    return rc;
}

int rv_consul_get(rv_consul_t *c, const char *path, uint64_t index, int wait_ms, rv_consul_resp_t *out)
{
    return perform(c, "GET", path, index, wait_ms, NULL, 0, out);
}

int rv_consul_put(rv_consul_t *c, const char *path, const void *body, size_t len, rv_consul_resp_t *out)
{
    return perform(c, "PUT", path, 0, 0, body, len, out);
}

int rv_consul_delete(rv_consul_t *c, const char *path, rv_consul_resp_t *out)
{
    return perform(c, "DELETE", path, 0, 0, NULL, 0, out);
}

uint64_t rv_consul_next_index(uint64_t prev, uint64_t got)
{
    if (got < prev)
        return 0;           /* went backwards: start over with a non-blocking read */
    return got ? got : 1;   /* 0 would never block: a busy loop */
}

/* xorshift64*: the caller's state, never 0. */
static uint64_t next_rand(uint64_t *s)
{
    if (!*s)
        *s = 0x9e3779b97f4a7c15ull;
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

int64_t rv_consul_backoff_ms(unsigned failures, uint64_t *rng)
{
    const int64_t base = 250, cap = 60000;
    if (failures == 0)
        return 0;
    int64_t ceil_ms = cap;
    if (failures < 20) {
        ceil_ms = base << (failures - 1);
        if (ceil_ms > cap)
            ceil_ms = cap;
    }
    return (int64_t)(next_rand(rng) % (uint64_t)(ceil_ms + 1));
}
