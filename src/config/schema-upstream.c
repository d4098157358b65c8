/*
 * schema-upstream.c - the Upstream message and its parts (static and Consul hosts, load
 * balancing, upstream TLS, connectionConfig, healthChecks, circuitBreakers): field tables and
 * checks, as schema.c does for the other Gloo messages (split from it by subject).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/schema-internal.h"

/* ---- upstreams ----------------------------------------------------------------------- */

/*
 * A server name as TLS sends it in SNI (RFC 6066: a DNS host name, never an IP literal).
 * Returns 0, or -1 after cfg_derr().
 */
static int sni_text_check(dctx_t *c, const ynode_t *n, const char *sub, const char *h)
{
    size_t len = strlen(h);
    unsigned char buf[sizeof(struct in6_addr)];
    if (!len)
        return cfg_derr(c, n, sub, "must not be empty");
    if (len > 253)
        return cfg_derr(c, n, sub, "is longer than a DNS name can be (253)");
    for (const char *p = h; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_'))
            return cfg_derr(c, n, sub, "'%s' is not a DNS name (SNI carries a host name)", h);
    }
    if (inet_pton(AF_INET, h, buf) == 1)
        return cfg_derr(c, n, sub, "'%s' is an IP address; SNI carries a host name only", h);
    return 0;
}

static int shost_check(dctx_t *c, void *msg, const ynode_t *n)
{
    shost_t *h = msg;
    if (!h->addr || !h->addr[0])
        return cfg_derr(c, n, "addr", "is required");
    for (const char *p = h->addr; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr("/?#@\\,[]", *p))
            return cfg_derr(c, schema_fnode(n, "addr"), "addr", "'%s' is not a host name or IP address", h->addr);
    if (h->port == 0)
        return cfg_derr(c, schema_fnode(n, "port"), "port", "is required (1-65535)");
    if (h->has_weight && h->weight == 0)
        return cfg_derr(c, schema_fnode(n, "loadBalancingWeight"), "loadBalancingWeight", "must be at least 1");
    if (!h->has_weight)
        h->weight = 1;
    if (h->sni_addr && sni_text_check(c, schema_fnode(n, "sniAddr"), "sniAddr", h->sni_addr) < 0)
        return -1;
    return 0;
}

static const field_t shost_fields[] = {
    FLD("addr", F_STR, OFF(shost_t, addr)),
    FLD("port", F_U32, OFF(shost_t, port), .max = 65535),
    FLD("loadBalancingWeight", F_U32, OFF(shost_t, weight), SETF(shost_t, has_weight)),
    FLD("sniAddr", F_STR, OFF(shost_t, sni_addr)),
    UNSUP("healthCheckConfig"), UNSUP("metadata"),
};
DESC(shost_desc, shost_t, shost_fields, shost_check);

static int static_check(dctx_t *c, void *msg, const ynode_t *n)
{
    static_t *s = msg;
    const shost_t *h = s->hosts.v;
    if (s->hosts.n == 0)
        return cfg_derr(c, n, "hosts", "must list at least one host");
    /* Gloo: useTls unset is on when a host listens on 443 */
    if (!s->has_use_tls)
        for (uint32_t i = 0; i < s->hosts.n; i++)
            if (h[i].port == 443)
                s->use_tls = true;
    if (!s->has_auto_sni)
        s->auto_sni = true;
    return 0;
}

static const field_t static_fields[] = {
    FLD("hosts", F_MSGS, OFF(static_t, hosts), .sub = &shost_desc),
    FLD("useTls", F_BOOL, OFF(static_t, use_tls), SETF(static_t, has_use_tls)),
    FLD("autoSniRewrite", F_BOOL, OFF(static_t, auto_sni), SETF(static_t, has_auto_sni)),
    UNSUP("serviceSpec"),
};
DESC(static_desc, static_t, static_fields, static_check);

static const field_t lbrr_fields[] = { UNSUP("slowStartConfig") };
DESC(lbrr_desc, lbrr_t, lbrr_fields, NULL);
static const field_t no_fields[1] = { UNSUP("") };
static const msgdesc_t lbrand_desc = { "Random", sizeof(lbrr_t), no_fields, 0, NULL, false };

static int lblr_check(dctx_t *c, void *msg, const ynode_t *n)
{
    lblr_t *l = msg;
    if (!l->has_choice || l->choice_count == 0)
        l->choice_count = 2;
    else if (l->choice_count < 2)
        return cfg_derr(c, schema_fnode(n, "choiceCount"), "choiceCount", "must be at least 2");
    return 0;
}

static const field_t lblr_fields[] = {
    FLD("choiceCount", F_U32, OFF(lblr_t, choice_count), SETF(lblr_t, has_choice), .max = 100),
    UNSUP("slowStartConfig"),
};
DESC(lblr_desc, lblr_t, lblr_fields, lblr_check);

static const field_t lbcfg_fields[] = {
    FLD("roundRobin", F_MSG, OFF(lbcfg_t, rr), .sub = &lbrr_desc, .oneof = 1),
    FLD("leastRequest", F_MSG, OFF(lbcfg_t, lr), .sub = &lblr_desc, .oneof = 1),
    FLD("random", F_MSG, OFF(lbcfg_t, random), .sub = &lbrand_desc, .oneof = 1),
    FLD("ringHash", F_UNSUP, .oneof = 1),
    FLD("maglev", F_UNSUP, .oneof = 1),
    FLD("healthyPanicThreshold", F_PCT, OFF(lbcfg_t, panic_pct), SETF(lbcfg_t, has_panic)),
    IGN("updateMergeWindow"), UNSUP("localityWeightedLbConfig"),
    UNSUP("useHostnameForHashing"), UNSUP("closeConnectionsOnHostSetChange"),
};
DESC(lbcfg_desc, lbcfg_t, lbcfg_fields, NULL);

static int cus_check(dctx_t *c, void *msg, const ynode_t *n)
{
    cus_t *u = msg;
    if (!u->service || !u->service[0])
        return cfg_derr(c, n, "serviceName", "is required");
    if (schema_has_ctl(u->service))
        return cfg_derr(c, schema_fnode(n, "serviceName"), "serviceName", "must not contain control characters");
    if (schema_check_names(c, n, "subsetTags", &u->subset_tags) < 0 || schema_check_names(c, n, "serviceTags", &u->service_tags) < 0 ||
        schema_check_names(c, n, "instanceTags", &u->instance_tags) < 0 ||
        schema_check_names(c, n, "instanceBlacklistTags", &u->blacklist) < 0 ||
        schema_check_names(c, n, "dataCenters", &u->dcs) < 0)
        return -1;
    /* rivet holds one watch per service for every Upstream and route that names it, read with
     * Settings consulDiscovery.consistencyMode; a per-Upstream mode would be silently ignored */
    if (u->consistency != 0)
        return cfg_derr(c, schema_fnode(n, "consistencyMode"), "consistencyMode",
                        "%s on an Upstream is not supported yet (every service is read with Settings "
                        "consulDiscovery.consistencyMode; set it there, or use DefaultMode here)",
                        u->consistency == 1 ? "StaleMode" : "ConsistentMode");
    return 0;
}

static const char *const consistency_modes[] = { "DefaultMode", "StaleMode", "ConsistentMode", NULL };

static const field_t cqopts_fields[] = { IGN("useCache") };
DESC(cqopts_desc, mhdr_t, cqopts_fields, NULL);

static const field_t cus_fields[] = {
    FLD("serviceName", F_STR, OFF(cus_t, service)),
    FLD("subsetTags", F_STRS, OFF(cus_t, subset_tags)),
    FLD("serviceTags", F_STRS, OFF(cus_t, service_tags)),
    FLD("instanceTags", F_STRS, OFF(cus_t, instance_tags)),
    FLD("instanceBlacklistTags", F_STRS, OFF(cus_t, blacklist)),
    FLD("dataCenters", F_STRS, OFF(cus_t, dcs)),
    FLD("connectEnabled", F_FALSE_ONLY, .note = "(Consul Connect is not supported)"),
    /* DefaultMode only (cus_check): the watcher reads with Settings consulDiscovery's mode */
    FLD("consistencyMode", F_ENUM, OFF(cus_t, consistency), .enums = consistency_modes),
    FLD("queryOptions", F_MSG, OFF(cus_t, qopts), .sub = &cqopts_desc),
    UNSUP("serviceSpec"),
};
DESC(cus_desc, cus_t, cus_fields, cus_check);

/* ---- upstream TLS (UpstreamSslConfig) ---------------------------------------------- */

static int usslfiles_check(dctx_t *c, void *msg, const ynode_t *n)
{
    usslfiles_t *f = msg;
    if (!f->cert != !f->key)
        return cfg_derr(c, n, f->cert ? "tlsKey" : "tlsCert",
                        "is required with %s (a client certificate needs its key)", f->cert ? "tlsCert" : "tlsKey");
    if (!f->cert && !f->root_ca)
        return cfg_derrp(c, n, "%s: names no file (tlsCert and tlsKey, rootCa, or both)", c->path);
    const char *names[] = { "tlsCert", "tlsKey", "rootCa" };
    const char *vals[] = { f->cert, f->key, f->root_ca };
    for (int i = 0; i < 3; i++)
        if (vals[i] && (!vals[i][0] || schema_has_ctl(vals[i])))
            return cfg_derr(c, schema_fnode(n, names[i]), names[i], "must be a file path");
    return 0;
}

static const field_t usslfiles_fields[] = {
    FLD("tlsCert", F_STR, OFF(usslfiles_t, cert)),
    FLD("tlsKey", F_STR, OFF(usslfiles_t, key)),
    FLD("rootCa", F_STR, OFF(usslfiles_t, root_ca)),
    FLD("ocspStaple", F_UNSUP, .note = "(an OCSP staple is what a server sends; an upstream connection has none to send)"),
};
DESC(usslfiles_desc, usslfiles_t, usslfiles_fields, usslfiles_check);

static const char *const tls_versions[] = { "TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3", NULL };

/* Cipher suite and curve names: OpenSSL's alphabet; the context build proves them. */
static int tls_names_check(dctx_t *c, const ynode_t *n, const char *camel, const strs_t *l)
{
    for (uint32_t i = 0; i < l->n; i++) {
        const char *v = l->v[i];
        bool ok = v[0] != '\0';
        for (const char *p = v; *p && ok; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                 *p == '_' || *p == '+' || *p == '!';
        if (!ok) {
            char sub[48];
            snprintf(sub, sizeof(sub), "%s[%u]", camel, i);
            return cfg_derr(c, schema_elem_node(n, camel, i), sub, "'%s' is not a cipher suite or curve name", v);
        }
    }
    return 0;
}

static int utlsparams_check(dctx_t *c, void *msg, const ynode_t *n)
{
    utlsparams_t *p = msg;
    if (p->min_ver && p->max_ver && p->min_ver > p->max_ver)
        return cfg_derr(c, schema_fnode(n, "minimumProtocolVersion"), "minimumProtocolVersion",
                        "%s is above maximumProtocolVersion %s", tls_versions[p->min_ver], tls_versions[p->max_ver]);
    if (tls_names_check(c, n, "cipherSuites", &p->ciphers) < 0)
        return -1;
    return tls_names_check(c, n, "ecdhCurves", &p->curves);
}

static const field_t utlsparams_fields[] = {
    FLD("minimumProtocolVersion", F_ENUM, OFF(utlsparams_t, min_ver), .enums = tls_versions),
    FLD("maximumProtocolVersion", F_ENUM, OFF(utlsparams_t, max_ver), .enums = tls_versions),
    FLD("cipherSuites", F_STRS, OFF(utlsparams_t, ciphers)),
    FLD("ecdhCurves", F_STRS, OFF(utlsparams_t, curves)),
};
DESC(utlsparams_desc, utlsparams_t, utlsparams_fields, utlsparams_check);

static int ussl_check(dctx_t *c, void *msg, const ynode_t *n)
{
    ussl_t *u = msg;
    if (u->sni && sni_text_check(c, schema_fnode(n, "sni"), "sni", u->sni) < 0)
        return -1;
    for (uint32_t i = 0; i < u->san.n; i++)
        if (!u->san.v[i][0] || schema_has_ctl(u->san.v[i])) {
            char sub[48];
            snprintf(sub, sizeof(sub), "verifySubjectAltName[%u]", i);
            return cfg_derr(c, schema_elem_node(n, "verifySubjectAltName", i), sub, "must be a non-empty name");
        }
    for (uint32_t i = 0; i < u->alpn.n; i++)
        if (strcmp(u->alpn.v[i], "http/1.1") != 0) {
            char sub[48];
            snprintf(sub, sizeof(sub), "alpnProtocols[%u]", i);
            return cfg_derr(c, schema_elem_node(n, "alpnProtocols", i), sub,
                            "'%s' is not supported (rivet speaks HTTP/1.1 to upstreams: only \"http/1.1\")",
                            u->alpn.v[i]);
        }
    return 0;
}

static const field_t ussl_fields[] = {
    FLD("secretRef", F_MSG, OFF(ussl_t, secret), .sub = &schema_ref_desc, .oneof = 1),
    FLD("sslFiles", F_MSG, OFF(ussl_t, files), .sub = &usslfiles_desc, .oneof = 1),
    FLD("sds", F_UNSUP, .oneof = 1, .note = "(SDS needs an xDS secret server; use secretRef or sslFiles)"),
    FLD("sni", F_STR, OFF(ussl_t, sni)),
    FLD("verifySubjectAltName", F_STRS, OFF(ussl_t, san)),
    FLD("parameters", F_MSG, OFF(ussl_t, params), .sub = &utlsparams_desc),
    FLD("alpnProtocols", F_STRS, OFF(ussl_t, alpn)),
    FLD("allowRenegotiation", F_BOOL, OFF(ussl_t, allow_reneg)),
    FLD("oneWayTls", F_BOOL, OFF(ussl_t, one_way)),
};
DESC(ussl_desc, ussl_t, ussl_fields, ussl_check);

/* ---- upstream connectionConfig (Gloo's ConnectionConfig) ---------------------------- */

/* Linux bounds of TCP_KEEPIDLE/TCP_KEEPINTVL (seconds) and TCP_KEEPCNT (MAX_TCP_KEEP*):
 * setsockopt refuses values past them, so they are refused here instead. */
#define KA_SECS_MAX   32767
#define KA_PROBES_MAX 127

/* A keepalive duration applied in whole seconds, rounded up as Gloo does: > 0 and at most
 * KA_SECS_MAX once rounded. */
static int ka_secs_check(dctx_t *c, const ynode_t *n, const char *camel, int64_t ms)
{
    if (ms <= 0)
        return cfg_derr(c, schema_fnode(n, camel), camel, "must be greater than 0 (the kernel takes 1s to %ds)",
                        KA_SECS_MAX);
    if ((ms + 999) / 1000 > KA_SECS_MAX)
        return cfg_derr(c, schema_fnode(n, camel), camel, "must be at most %ds (the kernel's limit)", KA_SECS_MAX);
    return 0;
}

static int tcpka_check(dctx_t *c, void *msg, const ynode_t *n)
{
    tcpka_t *k = msg;
    if (k->probes > KA_PROBES_MAX)
        return cfg_derr(c, schema_fnode(n, "keepaliveProbes"), "keepaliveProbes",
                        "must be at most %d (the kernel's limit), got %u", KA_PROBES_MAX, k->probes);
    if (k->has_time && ka_secs_check(c, n, "keepaliveTime", k->time_ms) < 0)
        return -1;
    if (k->has_intvl && ka_secs_check(c, n, "keepaliveInterval", k->intvl_ms) < 0)
        return -1;
    return 0;
}

static const field_t tcpka_fields[] = {
    FLD("keepaliveProbes", F_U32, OFF(tcpka_t, probes)),
    FLD("keepaliveTime", F_DUR, OFF(tcpka_t, time_ms), SETF(tcpka_t, has_time)),
    FLD("keepaliveInterval", F_DUR, OFF(tcpka_t, intvl_ms), SETF(tcpka_t, has_intvl)),
};
DESC(tcpka_desc, tcpka_t, tcpka_fields, tcpka_check);

static const char *const underscore_actions[] = { "ALLOW", "REJECT_REQUEST", "DROP_HEADER", NULL };

static int httpopts_check(dctx_t *c, void *msg, const ynode_t *n)
{
    httpopts_t *o = msg;
    /* 0 is the value of an absent field, never a limit of its own: written, it is refused as
     * Envoy's proto does (gte 1), not read as the default 100 */
    const ynode_t *mh = cfg_field_node(n, "maxHeadersCount");
    if (o->max_headers == 0 && mh && !(mh->type == YN_SCALAR && mh->is_null))
        return cfg_derr(c, mh, "maxHeadersCount", "must be at least 1 (Envoy requires 1 or more; omit the field "
                        "for the default %u), got 0", RV_UP_MAX_HEADERS);
    if (o->max_headers > RV_UP_MAX_HEADERS)
        return cfg_derr(c, schema_fnode(n, "maxHeadersCount"), "maxHeadersCount",
                        "must be at most %u (rivet parses at most %u header fields in a response), got %u",
                        RV_UP_MAX_HEADERS, RV_UP_MAX_HEADERS, o->max_headers);
    if (o->underscores != 0)
        return cfg_derr(c, schema_fnode(n, "headersWithUnderscoresAction"), "headersWithUnderscoresAction",
                        "%s is not supported yet (only ALLOW, the default: it acts on client requests, which an "
                        "Upstream does not see)", underscore_actions[o->underscores]);
    return 0;
}

static const field_t httpopts_fields[] = {
    FLD("idleTimeout", F_DUR, OFF(httpopts_t, idle_ms), SETF(httpopts_t, has_idle)),
    FLD("maxHeadersCount", F_U32, OFF(httpopts_t, max_headers)),
    FLD("maxStreamDuration", F_UNSUP, .note = "(use the route's timeout)"),
    FLD("headersWithUnderscoresAction", F_ENUM, OFF(httpopts_t, underscores), .enums = underscore_actions),
};
DESC(httpopts_desc, httpopts_t, httpopts_fields, httpopts_check);

static int conncfg_check(dctx_t *c, void *msg, const ynode_t *n)
{
    conncfg_t *k = msg;
    if (k->has_connect && k->connect_ms <= 0)
        return cfg_derr(c, schema_fnode(n, "connectTimeout"), "connectTimeout", "must be greater than 0");
    return 0;
}

static const field_t conncfg_fields[] = {
    FLD("maxRequestsPerConnection", F_U32, OFF(conncfg_t, max_requests)),
    FLD("connectTimeout", F_DUR, OFF(conncfg_t, connect_ms), SETF(conncfg_t, has_connect)),
    FLD("tcpKeepalive", F_MSG, OFF(conncfg_t, ka), .sub = &tcpka_desc),
    FLD("perConnectionBufferLimitBytes", F_UNSUP,
        .note = "(rivet's connection buffers have a fixed size of 64 KiB)"),
    FLD("commonHttpProtocolOptions", F_MSG, OFF(conncfg_t, http), .sub = &httpopts_desc),
    FLD("http1ProtocolOptions", F_UNSUP),
};
DESC(conncfg_desc, conncfg_t, conncfg_fields, conncfg_check);

/* ---- upstream health checks (healthChecks[], Envoy's core HealthCheck) ---------------- */

static int hcrange_check(dctx_t *c, void *msg, const ynode_t *n)
{
    hcrange_t *r = msg;
    if (!r->has_start || !r->has_end)
        return cfg_derr(c, n, r->has_start ? "end" : "start", "is required (a range is [start, end))");
    if (r->start < 100 || r->start >= 600)
        return cfg_derr(c, schema_fnode(n, "start"), "start", "%u is outside [100, 600)", r->start);
    if (r->end <= r->start)
        return cfg_derr(c, schema_fnode(n, "end"), "end", "%u must be above start %u (the range is [start, end))", r->end,
                        r->start);
    return 0;
}

static const field_t hcrange_fields[] = {
    FLD("start", F_U32, OFF(hcrange_t, start), SETF(hcrange_t, has_start), .max = 600),
    FLD("end", F_U32, OFF(hcrange_t, end), SETF(hcrange_t, has_end), .max = 600),
};
DESC(hcrange_desc, hcrange_t, hcrange_fields, hcrange_check);

static int hchttp_check(dctx_t *c, void *msg, const ynode_t *n)
{
    hchttp_t *h = msg;
    if (!h->path || !h->path[0])
        return cfg_derr(c, schema_fnode(n, "path"), "path", "is required");
    if (h->path[0] != '/')
        return cfg_derr(c, schema_fnode(n, "path"), "path", "must begin with '/'");
    /* written into the check's request line: visible ASCII only, no fragment */
    for (const unsigned char *q = (const unsigned char *)h->path; *q; q++)
        if (*q <= 0x20 || *q >= 0x7f || *q == '#')
            return cfg_derr(c, schema_fnode(n, "path"), "path", "byte 0x%02x is not allowed in a path (percent-encode it)",
                            *q);
    if (h->host) {
        if (!h->host[0])
            h->host = NULL;     /* empty = the default, as in Envoy */
        else
            for (const unsigned char *q = (const unsigned char *)h->host; *q; q++)
                if (*q <= 0x20 || *q >= 0x7f || strchr("/?#@\\,", *q))
                    return cfg_derr(c, schema_fnode(n, "host"), "host", "'%s' is not a host name (with an optional port)",
                                    h->host);
    }
    return 0;
}

static const field_t hchttp_fields[] = {
    FLD("path", F_STR, OFF(hchttp_t, path)),
    FLD("host", F_STR, OFF(hchttp_t, host)),
    FLD("expectedStatuses", F_MSGS, OFF(hchttp_t, statuses), .sub = &hcrange_desc),
    FLD("useHttp2", F_FALSE_ONLY, .note = "(checks speak HTTP/1.1)"),
    FLD("codecClientType", F_UNSUP, .note = "(checks speak HTTP/1.1)"),
    UNSUP("send"), UNSUP("receive"), UNSUP("serviceName"), UNSUP("serviceNameMatcher"),
    UNSUP("requestHeadersToAdd"), UNSUP("requestHeadersToRemove"), UNSUP("retriableStatuses"), UNSUP("method"),
    UNSUP("responseAssertions"), UNSUP("responseBufferSize"),
};
static const msgdesc_t hchttp_desc = { "HttpHealthCheck", sizeof(hchttp_t), hchttp_fields,
                                       (uint32_t)RV_ARRAY_LEN(hchttp_fields), hchttp_check, true };

static const field_t hctcp_fields[] = {
    FLD("send", F_UNSUP, .note = "(a tcpHealthCheck connects only: leave send and receive out)"),
    FLD("receive", F_UNSUP, .note = "(a tcpHealthCheck connects only: leave send and receive out)"),
    UNSUP("proxyProtocolConfig"),
};
static const msgdesc_t hctcp_desc = { "TcpHealthCheck", sizeof(mhdr_t), hctcp_fields,
                                      (uint32_t)RV_ARRAY_LEN(hctcp_fields), NULL, true };

static int hc_check(dctx_t *c, void *msg, const ynode_t *n)
{
    hc_t *h = msg;
    if (!h->has_timeout || h->timeout_ms <= 0)
        return cfg_derr(c, schema_fnode(n, "timeout"), "timeout", "is required and must be greater than 0");
    if (!h->has_interval || h->interval_ms <= 0)
        return cfg_derr(c, schema_fnode(n, "interval"), "interval", "is required and must be greater than 0");
    if (!h->has_unhealthy || h->unhealthy == 0)
        return cfg_derr(c, schema_fnode(n, "unhealthyThreshold"), "unhealthyThreshold", "is required and must be at least 1");
    if (!h->has_healthy || h->healthy == 0)
        return cfg_derr(c, schema_fnode(n, "healthyThreshold"), "healthyThreshold", "is required and must be at least 1");
    if (h->jitter_ms < 0)
        return cfg_derr(c, schema_fnode(n, "intervalJitter"), "intervalJitter", "must not be negative");
    if (!h->http.h.set && !h->tcp.set)
        return cfg_derrp(c, n, "%s: a health checker is required (httpHealthCheck or tcpHealthCheck)", c->path);
    return 0;
}

#define HCNOTE "(rivet checks every interval, whatever the traffic and the last result)"
static const field_t hc_fields[] = {
    FLD("timeout", F_DUR, OFF(hc_t, timeout_ms), SETF(hc_t, has_timeout)),
    FLD("interval", F_DUR, OFF(hc_t, interval_ms), SETF(hc_t, has_interval)),
    FLD("intervalJitter", F_DUR, OFF(hc_t, jitter_ms)),
    FLD("unhealthyThreshold", F_U32, OFF(hc_t, unhealthy), SETF(hc_t, has_unhealthy)),
    FLD("healthyThreshold", F_U32, OFF(hc_t, healthy), SETF(hc_t, has_healthy)),
    FLD("httpHealthCheck", F_MSG, OFF(hc_t, http), .sub = &hchttp_desc, .oneof = 1),
    FLD("tcpHealthCheck", F_MSG, OFF(hc_t, tcp), .sub = &hctcp_desc, .oneof = 1),
    FLD("grpcHealthCheck", F_UNSUP, .oneof = 1, .note = "(use httpHealthCheck or tcpHealthCheck)"),
    FLD("customHealthCheck", F_UNSUP, .oneof = 1, .note = "(use httpHealthCheck or tcpHealthCheck)"),
    FLD("reuseConnection", F_FALSE_ONLY, .note = "(rivet opens a new connection for each check)"),
    UNSUP("initialJitter"), UNSUP("intervalJitterPercent"), UNSUP("altPort"),
    FLD("noTrafficInterval", F_UNSUP, .note = HCNOTE), FLD("noTrafficHealthyInterval", F_UNSUP, .note = HCNOTE),
    FLD("unhealthyInterval", F_UNSUP, .note = HCNOTE), FLD("unhealthyEdgeInterval", F_UNSUP, .note = HCNOTE),
    FLD("healthyEdgeInterval", F_UNSUP, .note = HCNOTE),
    UNSUP("eventLogPath"), UNSUP("eventService"), UNSUP("eventLogger"), UNSUP("alwaysLogHealthCheckFailures"),
    UNSUP("alwaysLogHealthCheckSuccess"), UNSUP("tlsOptions"), UNSUP("transportSocketMatchCriteria"),
};
static const msgdesc_t hc_desc = { "HealthCheck", sizeof(hc_t), hc_fields, (uint32_t)RV_ARRAY_LEN(hc_fields),
                                   hc_check, true };

/* ---- upstream circuitBreakers (Gloo's CircuitBreakerConfig) ------------------------- */

/* Every UInt32Value is valid, 0 included (Envoy: then every request, connection or retry
 * overflows); an absent one keeps Envoy's default. */
static const field_t cbcfg_fields[] = {
    FLD("maxConnections", F_U32, OFF(cbcfg_t, max_connections), SETF(cbcfg_t, has_max_connections)),
    FLD("maxPendingRequests", F_U32, OFF(cbcfg_t, max_pending), SETF(cbcfg_t, has_max_pending)),
    FLD("maxRequests", F_U32, OFF(cbcfg_t, max_requests), SETF(cbcfg_t, has_max_requests)),
    FLD("maxRetries", F_U32, OFF(cbcfg_t, max_retries), SETF(cbcfg_t, has_max_retries)),
};
DESC_SHARED(schema_cbcfg_desc, cbcfg_t, cbcfg_fields, NULL);

static int us_check(dctx_t *c, void *msg, const ynode_t *n)
{
    us_t *u = msg;
    if (!u->st.h.set && !u->consul.h.set)
        return cfg_derrp(c, n, "%s%supstream type is required (rivet supports static and consul)", c->path,
                         c->plen ? ": " : "");
    if (u->ssl.h.set && u->st.h.set && u->st.has_use_tls && !u->st.use_tls)
        return cfg_derr(c, schema_fnode(schema_fnode(n, "static"), "useTls"), "static.useTls",
                        "false contradicts sslConfig (an Upstream with sslConfig always uses TLS)");
    if (u->st.h.set && !u->st.use_tls && !u->ssl.h.set) {
        const shost_t *h = u->st.hosts.v;
        for (uint32_t i = 0; i < u->st.hosts.n; i++)
            if (h[i].sni_addr) {
                char sub[48];
                snprintf(sub, sizeof(sub), "static.hosts[%u].sniAddr", i);
                return cfg_derr(c, schema_fnode(schema_elem_node(schema_fnode(n, "static"), "hosts", i), "sniAddr"), sub,
                                "needs TLS to the upstream (static.useTls or sslConfig)");
            }
    }
    if (u->hcs.n > 1)
        return cfg_derr(c, schema_elem_node(n, "healthChecks", 1), "healthChecks[1]",
                        "only one health check per Upstream is supported (healthChecks[0])");
    if (u->hcs.n == 1 && ((const hc_t *)u->hcs.v)->http.h.set &&
        (u->ssl.h.set || (u->st.h.set && u->st.use_tls)))
        return cfg_derr(c, schema_fnode(schema_elem_node(n, "healthChecks", 0), "httpHealthCheck"), "healthChecks[0].httpHealthCheck",
                        "is not supported on an Upstream with TLS (sslConfig or useTls) yet: use tcpHealthCheck");
    return 0;
}

#define UTYPE "upstream type %s is not supported yet"
static const field_t us_fields[] = {
    FLD("metadata", F_MSG, OFF(us_t, meta), .sub = &cfg_meta_desc),
    IGN("status"), IGN("namespacedStatuses"), IGN("discoveryMetadata"),
    FLD("sslConfig", F_MSG, OFF(us_t, ssl), .sub = &ussl_desc),
    FLD("static", F_MSG, OFF(us_t, st), .sub = &static_desc, .oneof = 1),
    FLD("kube", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("pipe", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("aws", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("azure", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("consul", F_MSG, OFF(us_t, consul), .sub = &cus_desc, .oneof = 1),
    FLD("awsEc2", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("gcp", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("ai", F_UNSUP, .oneof = 1, .note = UTYPE),
    FLD("loadBalancerConfig", F_MSG, OFF(us_t, lb), .sub = &lbcfg_desc),
    FLD("circuitBreakers", F_MSG, OFF(us_t, cb), .sub = &schema_cbcfg_desc),
    FLD("healthChecks", F_MSGS, OFF(us_t, hcs), .sub = &hc_desc),
    UNSUP("outlierDetection"), UNSUP("failover"),
    FLD("connectionConfig", F_MSG, OFF(us_t, conn), .sub = &conncfg_desc),
    UNSUP("protocolSelection"), FLD("useHttp2", F_FALSE_ONLY),
    UNSUP("initialStreamWindowSize"), UNSUP("initialConnectionWindowSize"), UNSUP("maxConcurrentStreams"),
    UNSUP("overrideStreamErrorOnInvalidHttpMessage"), UNSUP("httpProxyHostname"),
    UNSUP("httpConnectSslConfig"), UNSUP("httpConnectHeaders"), UNSUP("ignoreHealthOnHostRemoval"),
    UNSUP("respectDnsTtl"), UNSUP("dnsRefreshRate"), UNSUP("proxyProtocolVersion"), UNSUP("preconnectPolicy"),
    UNSUP("disableIstioAutoMtls"),
};
DESC_SHARED(schema_us_desc, us_t, us_fields, us_check);

