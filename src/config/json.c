/*
 * json.c - a small JSON writer and the /config_dump document of a snapshot: listeners,
 * virtual hosts, routes (matchers, actions, effective options) and clusters with their
 * resolved endpoints. Strings are escaped per RFC 8259; config holds no secrets yet.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config-internal.h"
#include "tls/client.h"
#include "core/err.h"

/* ---- writer ------------------------------------------------------------------------ */

void cfg_jb_raw(jbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *p = realloc(b->p, ncap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Comma before a new element of the current container (not after a key). */
static void sep(jbuf_t *b)
{
    uint64_t bit = UINT64_C(1) << (b->depth & 63);
    if (b->after_key) {
        b->after_key = false;
        return;
    }
    if (b->commas & bit)
        cfg_jb_raw(b, ",", 1);
    b->commas |= bit;
}

static void str_body(jbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    cfg_jb_raw(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (ch == '"')
            esc = "\\\"";
        else if (ch == '\\')
            esc = "\\\\";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '\r')
            esc = "\\r";
        else if (ch == '\t')
            esc = "\\t";
        else if (ch < 0x20 || ch == 0x7f) {
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[ch >> 4], u[5] = hex[ch & 15], u[6] = 0;
            esc = u;
        }
        if (esc) {
            cfg_jb_raw(b, s + i - run, run);
            run = 0;
            cfg_jb_raw(b, esc, strlen(esc));
        } else {
            run++;
        }
    }
    cfg_jb_raw(b, s + n - run, run);
    cfg_jb_raw(b, "\"", 1);
}

void cfg_jb_str(jbuf_t *b, const char *s, size_t n)
{
    sep(b);
    str_body(b, s ? s : "", s ? n : 0);
}

void cfg_jb_open(jbuf_t *b, char c)
{
    sep(b);
    cfg_jb_raw(b, &c, 1);
    b->depth++;
    b->commas &= ~(UINT64_C(1) << (b->depth & 63));
}

void cfg_jb_close(jbuf_t *b, char c)
{
    b->commas &= ~(UINT64_C(1) << (b->depth & 63));
    b->depth--;
    cfg_jb_raw(b, &c, 1);
}

void cfg_jb_key(jbuf_t *b, const char *k)
{
    sep(b);
    str_body(b, k, strlen(k));
    cfg_jb_raw(b, ":", 1);
    b->after_key = true;
}

void cfg_jb_kstr(jbuf_t *b, const char *k, rv_str_t v)
{
    cfg_jb_key(b, k);
    cfg_jb_str(b, v.ptr, v.len);
}

void cfg_jb_vint(jbuf_t *b, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    sep(b);
    cfg_jb_raw(b, tmp, (size_t)n);
}

void cfg_jb_kint(jbuf_t *b, const char *k, long long v)
{
    cfg_jb_key(b, k);
    cfg_jb_vint(b, v);
}

void cfg_jb_knum(jbuf_t *b, const char *k, double v)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.15g", v);
    cfg_jb_key(b, k);
    sep(b);
    cfg_jb_raw(b, tmp, (size_t)(n > 0 && n < (int)sizeof(tmp) ? n : 0));
}

void cfg_jb_kbool(jbuf_t *b, const char *k, bool v)
{
    cfg_jb_key(b, k);
    sep(b);
    cfg_jb_raw(b, v ? "true" : "false", v ? 4 : 5);
}

void cfg_jb_vstr(jbuf_t *b, rv_str_t v)
{
    cfg_jb_str(b, v.ptr, v.len);
}

/* ---- the dump ---------------------------------------------------------------------- */

static void dump_adds(jbuf_t *b, const char *key, const rv_header_add_t *a, uint32_t n)
{
    if (!n)
        return;
    cfg_jb_key(b, key);
    cfg_jb_open(b, '[');
    for (uint32_t i = 0; i < n; i++) {
        cfg_jb_open(b, '{');
        cfg_jb_kstr(b, "name", a[i].name);
        cfg_jb_kstr(b, "value", a[i].value);
        cfg_jb_kbool(b, "append", a[i].append);
        cfg_jb_close(b, '}');
    }
    cfg_jb_close(b, ']');
}

static void dump_strs(jbuf_t *b, const char *key, const rv_str_t *v, uint32_t n)
{
    if (!n)
        return;
    cfg_jb_key(b, key);
    cfg_jb_open(b, '[');
    for (uint32_t i = 0; i < n; i++)
        cfg_jb_vstr(b, v[i]);
    cfg_jb_close(b, ']');
}

static void dump_headers(jbuf_t *b, const char *key, const rv_header_ops_t *h)
{
    if (!h || !(h->nreq_add || h->nreq_remove || h->nresp_add || h->nresp_remove))
        return;
    cfg_jb_key(b, key);
    cfg_jb_open(b, '{');
    dump_adds(b, "requestHeadersToAdd", h->req_add, h->nreq_add);
    dump_strs(b, "requestHeadersToRemove", h->req_remove, h->nreq_remove);
    dump_adds(b, "responseHeadersToAdd", h->resp_add, h->nresp_add);
    dump_strs(b, "responseHeadersToRemove", h->resp_remove, h->nresp_remove);
    cfg_jb_close(b, '}');
}

static void dump_match(jbuf_t *b, const rv_matcher_t *m)
{
    static const char *const kinds[] = { "prefix", "exact", "regex" };
    cfg_jb_key(b, "match");
    cfg_jb_open(b, '{');
    cfg_jb_kstr(b, kinds[m->path_kind <= RV_PATH_REGEX ? m->path_kind : 0], m->path);
    cfg_jb_kbool(b, "caseSensitive", m->case_sensitive);
    if (m->nheaders) {
        cfg_jb_key(b, "headers");
        cfg_jb_open(b, '[');
        for (uint32_t i = 0; i < m->nheaders; i++) {
            const rv_header_matcher_t *h = &m->headers[i];
            cfg_jb_open(b, '{');
            cfg_jb_kstr(b, "name", h->name);
            if (h->has_value)
                cfg_jb_kstr(b, h->is_regex ? "regex" : "value", h->value);
            else
                cfg_jb_kbool(b, "present", true);
            if (h->invert)
                cfg_jb_kbool(b, "invertMatch", true);
            cfg_jb_close(b, '}');
        }
        cfg_jb_close(b, ']');
    }
    if (m->nquery) {
        cfg_jb_key(b, "queryParameters");
        cfg_jb_open(b, '[');
        for (uint32_t i = 0; i < m->nquery; i++) {
            const rv_query_matcher_t *q = &m->query[i];
            cfg_jb_open(b, '{');
            cfg_jb_kstr(b, "name", q->name);
            if (q->has_value)
                cfg_jb_kstr(b, q->is_regex ? "regex" : "value", q->value);
            else
                cfg_jb_kbool(b, "present", true);
            cfg_jb_close(b, '}');
        }
        cfg_jb_close(b, ']');
    }
    dump_strs(b, "methods", m->methods, m->nmethods);
    cfg_jb_close(b, '}');
}

static void dump_action(jbuf_t *b, const rv_snapshot_t *snap, const rv_action_t *a)
{
    cfg_jb_key(b, "action");
    cfg_jb_open(b, '{');
    if (a->kind == RV_ACTION_REDIRECT) {
        static const char *const pk[] = { "keep", "replace", "prefix" };
        const rv_redirect_t *r = &a->redirect;
        cfg_jb_key(b, "redirect");
        cfg_jb_open(b, '{');
        if (r->host.len)
            cfg_jb_kstr(b, "host", r->host);
        cfg_jb_kstr(b, "path", rv_cstr(pk[r->path_kind <= RV_REDIRECT_PREFIX ? r->path_kind : 0]));
        if (r->path_kind != RV_REDIRECT_PATH_KEEP)
            cfg_jb_kstr(b, r->path_kind == RV_REDIRECT_PREFIX ? "prefixRewrite" : "pathRedirect", r->path);
        cfg_jb_kint(b, "code", r->code);
        if (r->port)
            cfg_jb_kint(b, "port", r->port);
        cfg_jb_kbool(b, "https", r->https);
        cfg_jb_kbool(b, "stripQuery", r->strip_query);
        cfg_jb_close(b, '}');
    } else if (a->kind == RV_ACTION_DIRECT) {
        cfg_jb_key(b, "directResponse");
        cfg_jb_open(b, '{');
        cfg_jb_kint(b, "status", a->status);
        cfg_jb_kstr(b, "body", a->body);
        cfg_jb_close(b, '}');
    } else {
        cfg_jb_key(b, "route");
        cfg_jb_open(b, '{');
        cfg_jb_key(b, "destinations");
        cfg_jb_open(b, '[');
        for (uint32_t i = 0; i < a->ndests; i++) {
            const rv_dest_t *d = &a->dests[i];
            cfg_jb_open(b, '{');
            if (d->cluster < snap->nclusters) {
                cfg_jb_kstr(b, "cluster", snap->clusters[d->cluster].name);
            } else {
                cfg_jb_key(b, "cluster");
                sep(b);
                cfg_jb_raw(b, "null", 4);
            }
            cfg_jb_kint(b, "weight", d->weight);
            dump_headers(b, "headers", &d->headers);
            cfg_jb_close(b, '}');
        }
        cfg_jb_close(b, ']');
        cfg_jb_close(b, '}');
    }
    cfg_jb_close(b, '}');
}

static void dump_retry(jbuf_t *b, const rv_retry_policy_t *r)
{
    static const char *const names[] = { "5xx", "gateway-error", "connect-failure", "reset",
                                         "retriable-status-codes", "refused-stream" };
    if (!r->on)
        return;
    cfg_jb_key(b, "retries");
    cfg_jb_open(b, '{');
    cfg_jb_key(b, "retryOn");
    cfg_jb_open(b, '[');
    for (unsigned i = 0; i < RV_ARRAY_LEN(names); i++)
        if (r->on & (1u << i))
            cfg_jb_vstr(b, rv_cstr(names[i]));
    cfg_jb_close(b, ']');
    cfg_jb_kint(b, "numRetries", r->num_retries);
    if (r->per_try_timeout_ms != RV_TIMEOUT_UNSET)
        cfg_jb_kint(b, "perTryTimeoutMs", r->per_try_timeout_ms);
    cfg_jb_kint(b, "backoffBaseMs", r->backoff_base_ms);
    cfg_jb_kint(b, "backoffMaxMs", r->backoff_max_ms);
    if (r->nstatus_codes) {
        cfg_jb_key(b, "retriableStatusCodes");
        cfg_jb_open(b, '[');
        for (uint32_t i = 0; i < r->nstatus_codes; i++)
            cfg_jb_vint(b, r->status_codes[i]);
        cfg_jb_close(b, ']');
    }
    cfg_jb_close(b, '}');
}

/* A cluster's connectionConfig, only the settings that differ from the defaults (a dump
 * that changes with them makes the snapshot publish). */
static void dump_conn(jbuf_t *b, const rv_conn_cfg_t *k)
{
    if (!k->connect_timeout_ms && !k->idle_timeout_ms && !k->max_requests && !k->max_headers && !k->keepalive)
        return;
    cfg_jb_key(b, "connection");
    cfg_jb_open(b, '{');
    cfg_jb_kint(b, "connectTimeoutMs", k->connect_timeout_ms ? k->connect_timeout_ms : RV_UP_CONNECT_TIMEOUT_MS);
    if (k->idle_timeout_ms < 0)
        cfg_jb_kstr(b, "idleTimeout", RV_STR("none"));
    else
        cfg_jb_kint(b, "idleTimeoutMs", k->idle_timeout_ms ? k->idle_timeout_ms : RV_UP_IDLE_TIMEOUT_MS);
    cfg_jb_kint(b, "maxRequestsPerConnection", k->max_requests);
    cfg_jb_kint(b, "maxHeadersCount", k->max_headers ? k->max_headers : RV_UP_MAX_HEADERS);
    if (k->keepalive) {
        cfg_jb_key(b, "tcpKeepalive");
        cfg_jb_open(b, '{');
        cfg_jb_kint(b, "probes", k->ka_probes);
        cfg_jb_kint(b, "timeSeconds", k->ka_time_s);
        cfg_jb_kint(b, "intervalSeconds", k->ka_intvl_s);
        cfg_jb_close(b, '}');
    }
    cfg_jb_close(b, '}');
}

static void dump_route(jbuf_t *b, const rv_snapshot_t *snap, const rv_route_t *r)
{
    const rv_route_opts_t *o = &r->opts;
    cfg_jb_open(b, '{');
    cfg_jb_kstr(b, "name", r->name);
    cfg_jb_kstr(b, "virtualService", r->vs);
    dump_match(b, &r->match);
    dump_action(b, snap, &r->action);
    cfg_jb_key(b, "options");
    cfg_jb_open(b, '{');
    cfg_jb_kint(b, "timeoutMs", o->timeout_ms);
    if (o->has_prefix_rewrite)
        cfg_jb_kstr(b, "prefixRewrite", o->prefix_rewrite);
    if (o->regex_rewrite) {
        cfg_jb_key(b, "regexRewrite");
        cfg_jb_open(b, '{');
        cfg_jb_kstr(b, "pattern", rv_cstr(cfg_regex_pattern(snap, o->regex_rewrite)));
        cfg_jb_kstr(b, "substitution", o->regex_substitution);
        cfg_jb_close(b, '}');
    }
    dump_retry(b, &o->retries);
    if (o->host_rewrite.len)
        cfg_jb_kstr(b, "hostRewrite", o->host_rewrite);
    if (o->auto_host_rewrite)
        cfg_jb_kbool(b, "autoHostRewrite", true);
    cfg_jb_close(b, '}');
    dump_headers(b, "headers", &r->headers);
    cfg_jb_close(b, '}');
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    }
}

/*
 * The /config_dump JSON of snap with the cluster table clusters (snap->clusters, or an
 * endpoint set's copy): malloc'd into *out / *outlen. RV_ENOMEM. Any thread.
 */
int cfg_dump_json_with(const rv_snapshot_t *snap, const rv_cluster_t *clusters, char **out, size_t *outlen)
{
    static const char *const lbs[] = { "roundRobin", "leastRequest", "random" };
    jbuf_t jb = { 0 }, *b = &jb;
    cfg_jb_open(b, '{');
    /* no version here: control compares dumps to skip publishing an identical config */
    cfg_jb_key(b, "listeners");
    cfg_jb_open(b, '[');
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const rv_listener_cfg_t *l = &snap->listeners[i];
        cfg_jb_open(b, '{');
        cfg_jb_kstr(b, "name", l->name);
        cfg_jb_kstr(b, "bindAddress", l->bind_address);
        cfg_jb_kint(b, "bindPort", l->port);
        if (l->ssl)
            cfg_jb_kbool(b, "ssl", true);
        cfg_jb_key(b, "virtualHosts");
        cfg_jb_open(b, '[');
        for (uint32_t v = 0; v < l->nvhosts; v++) {
            const rv_vhost_t *vh = &l->vhosts[v];
            cfg_jb_open(b, '{');
            cfg_jb_kstr(b, "name", vh->name);
            dump_strs(b, "domains", vh->domains, vh->ndomains);
            if (l->ssl) {
                cfg_jb_kstr(b, "sslConfig", vh->tls_source);    /* the reference, never the key */
                cfg_jb_kint(b, "tlsChain", vh->tls_chain);
            }
            dump_headers(b, "headers", &vh->headers);
            cfg_jb_key(b, "routes");
            cfg_jb_open(b, '[');
            for (uint32_t r = 0; r < vh->nroutes; r++)
                dump_route(b, snap, &vh->routes[r]);
            cfg_jb_close(b, ']');
            cfg_jb_close(b, '}');
        }
        cfg_jb_close(b, ']');
        cfg_jb_close(b, '}');
    }
    cfg_jb_close(b, ']');
    cfg_jb_key(b, "clusters");
    cfg_jb_open(b, '[');
    for (uint32_t i = 0; i < snap->nclusters; i++) {
        const rv_cluster_t *c = &clusters[i];
        cfg_jb_open(b, '{');
        cfg_jb_kstr(b, "name", c->name);
        cfg_jb_kstr(b, "lb", rv_cstr(lbs[c->lb <= RV_LB_RANDOM ? c->lb : 0]));
        if (c->lb == RV_LB_LEAST_REQUEST)
            cfg_jb_kint(b, "choiceCount", c->choice_count);
        dump_conn(b, &c->conn);
        if (c->cb.on) {
            cfg_jb_key(b, "circuitBreakers");
            cfg_jb_open(b, '{');
            cfg_jb_kint(b, "maxConnections", c->cb.max_connections);
            cfg_jb_kint(b, "maxPendingRequests", c->cb.max_pending);
            cfg_jb_kint(b, "maxRequests", c->cb.max_requests);
            cfg_jb_kint(b, "maxRetries", c->cb.max_retries);
            cfg_jb_close(b, '}');
        }
        if (c->tls) {
            /* what the context is, never what it holds: its id is a salted fingerprint (so a
             * rotated certificate changes the dump, and the snapshot is published) */
            char id[24];
            snprintf(id, sizeof(id), "%016llx", (unsigned long long)c->tls->id);
            cfg_jb_key(b, "tls");
            cfg_jb_open(b, '{');
            cfg_jb_kstr(b, "context", rv_cstr(id));
            if (c->sni.len)
                cfg_jb_kstr(b, "sni", c->sni);
            cfg_jb_kstr(b, "trust", c->tls->has_ca ? RV_STR("rootCa") : RV_STR("system"));
            cfg_jb_kstr(b, "verify", c->tls->check_san ? RV_STR("verifySubjectAltName") : RV_STR("hostname"));
            cfg_jb_kbool(b, "clientCertificate", c->tls->has_cert);
            if (c->tls_stale) {
                /* serving the last working material: the current one is unusable (status) */
                snprintf(id, sizeof(id), "%016llx", (unsigned long long)c->tls_stale);
                cfg_jb_kstr(b, "material", RV_STR("last working"));
                cfg_jb_kstr(b, "unusable", rv_cstr(id));
            }
            cfg_jb_close(b, '}');
        }
        if (c->hc) {
            /* the check's settings; the endpoints below are the ones served (unhealthy ones
             * left out by control/health.c unless the cluster is in panic mode) */
            cfg_jb_key(b, "healthCheck");
            cfg_jb_open(b, '{');
            cfg_jb_kstr(b, "type", c->hc->http ? RV_STR("http") : RV_STR("tcp"));
            cfg_jb_kint(b, "timeoutMs", c->hc->timeout_ms);
            cfg_jb_kint(b, "intervalMs", c->hc->interval_ms);
            if (c->hc->jitter_ms)
                cfg_jb_kint(b, "intervalJitterMs", c->hc->jitter_ms);
            cfg_jb_kint(b, "unhealthyThreshold", c->hc->unhealthy_threshold);
            cfg_jb_kint(b, "healthyThreshold", c->hc->healthy_threshold);
            cfg_jb_knum(b, "healthyPanicThreshold", c->hc->panic_pct);   /* finite, 0..100 */
            if (c->hc->http) {
                cfg_jb_kstr(b, "path", c->hc->path);
                cfg_jb_kstr(b, "host", c->hc->host);
                cfg_jb_key(b, "expectedStatuses");
                cfg_jb_open(b, '[');
                for (uint32_t k = 0; k < c->hc->nstatuses; k++) {
                    cfg_jb_open(b, '{');
                    cfg_jb_kint(b, "start", c->hc->statuses[k].start);
                    cfg_jb_kint(b, "end", c->hc->statuses[k].end);
                    cfg_jb_close(b, '}');
                }
                cfg_jb_close(b, ']');
            }
            cfg_jb_close(b, '}');
        }
        cfg_jb_key(b, "endpoints");
        cfg_jb_open(b, '[');
        for (uint32_t e = 0; e < c->neps; e++) {
            char addr[INET6_ADDRSTRLEN + 16];
            sockaddr_text(&c->eps[e].addr, addr, sizeof(addr));
            cfg_jb_open(b, '{');
            cfg_jb_kstr(b, "address", rv_cstr(addr));
            cfg_jb_kstr(b, "hostname", c->eps[e].hostname);
            cfg_jb_kint(b, "weight", c->eps[e].weight);
            if (c->tls && c->eps[e].sni.len)
                cfg_jb_kstr(b, "sni", c->eps[e].sni);
            cfg_jb_close(b, '}');
        }
        cfg_jb_close(b, ']');
        cfg_jb_close(b, '}');
    }
    cfg_jb_close(b, ']');
    cfg_jb_close(b, '}');
    cfg_jb_raw(b, "\n", 1);
    if (b->oom) {
        free(b->p);
        return RV_ENOMEM;
    }
    *out = b->p;
    *outlen = b->len;
    return 0;
}

int cfg_dump_json(rv_snapshot_t *snap)
{
    char *p = NULL;
    size_t len = 0;
    int rc = cfg_dump_json_with(snap, snap->clusters, &p, &len);
    if (rc != 0)
        return rc;
    snap->config_json = rv_arena_strndup(&snap->arena, p, len);
    snap->config_json_len = len;
    free(p);
    return snap->config_json ? 0 : RV_ENOMEM;
}
