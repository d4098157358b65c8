/*
 * schema.c - the Gloo Edge messages rivet reads: one field table per message (names as in
 * Gloo's .proto files) and the checks that run once a message is decoded.
 *
 * Every field Gloo defines is listed: supported ones decode into the model of
 * config-internal.h; the rest are F_UNSUP so the user reads "<path> is not supported yet"
 * instead of "unknown field". Checks here are the ones a single resource can decide alone
 * (so a bad edit is caught while the last accepted version keeps serving); checks that need
 * other resources are in translate.c.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/schema-internal.h"
#include "core/regex.h"

/* ---- helpers for checks ------------------------------------------------------------ */

bool cfg_is_token(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", ch))
            return false;
    }
    return true;
}

void cfg_lower(char *s)
{
    for (; s && *s; s++)
        *s = rv_lower(*s);
}

/* Node of the i-th element of list field camel in mapping n (for error positions). */
const ynode_t *schema_elem_node(const ynode_t *n, const char *camel, uint32_t i)
{
    const ynode_t *l = cfg_field_node(n, camel);
    if (l && l->type == YN_SEQ && i < l->n)
        return l->kids[i];
    return l ? l : n;
}

const ynode_t *schema_fnode(const ynode_t *n, const char *camel)
{
    const ynode_t *f = cfg_field_node(n, camel);
    return f ? f : n;
}

/* Compile pattern to prove it valid (translate.c compiles it again for the snapshot). */
static int check_regex(dctx_t *c, const ynode_t *n, const char *sub, const char *pattern, bool caseless)
{
    char e[200];
    rv_regex_t *re = rv_regex_compile(rv_cstr(pattern), caseless, e, sizeof(e));
    if (!re)
        return cfg_derr(c, n, sub, "%s", e);
    rv_regex_free(re);
    return 0;
}

bool schema_has_ctl(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* ---- metadata, refs ---------------------------------------------------------------- */

static const field_t meta_fields[] = {
    FLD("name", F_STR, OFF(meta_t, name)),
    FLD("namespace", F_STR, OFF(meta_t, ns)),
    FLD("labels", F_LABELS, OFF(meta_t, labels)),
    IGN("annotations"), IGN("resourceVersion"), IGN("generation"), IGN("uid"), IGN("creationTimestamp"),
    IGN("ownerReferences"), IGN("managedFields"), IGN("finalizers"), IGN("deletionTimestamp"),
    IGN("deletionGracePeriodSeconds"), IGN("generateName"), IGN("selfLink"), IGN("clusterName"),
};
const msgdesc_t cfg_meta_desc = { "ObjectMeta", sizeof(meta_t), meta_fields, (uint32_t)RV_ARRAY_LEN(meta_fields),
                                  NULL, false };

static int ref_check(dctx_t *c, void *msg, const ynode_t *n)
{
    ref_t *r = msg;
    if (!r->name || !r->name[0])
        return cfg_derr(c, n, "name", "is required");
    return 0;
}

static const field_t ref_fields[] = {
    FLD("name", F_STR, OFF(ref_t, name)),
    FLD("namespace", F_STR, OFF(ref_t, ns)),
};
DESC_SHARED(schema_ref_desc, ref_t, ref_fields, ref_check);

/* ---- headers ----------------------------------------------------------------------- */

static const field_t hval_fields[] = {
    FLD("key", F_STR, OFF(hval_t, key)),
    FLD("value", F_STR, OFF(hval_t, value)),
};
DESC(hval_desc, hval_t, hval_fields, NULL);

/* Shared check of a header to add; request says which side it is on. */
static int hvopt_check(dctx_t *c, hvopt_t *o, const ynode_t *n, bool request)
{
    const ynode_t *hn = cfg_field_node(n, "header");
    if (!o->header.h.set)
        return cfg_derr(c, n, "header", "is required");
    char *k = o->header.key;
    if (!k || !k[0])
        return cfg_derr(c, hn, "header.key", "is required");
    if (k[0] == ':')
        return cfg_derr(c, schema_fnode(hn, "key"), "header.key", "'%s': pseudo-headers cannot be modified", k);
    if (!cfg_is_token(k))
        return cfg_derr(c, schema_fnode(hn, "key"), "header.key", "'%s' is not a valid header name", k);
    if (request && rv_str_ieq(rv_cstr(k), RV_STR("host")))
        return cfg_derr(c, schema_fnode(hn, "key"), "header.key",
                        "the Host header cannot be added (use options.hostRewrite)");
    char *v = o->header.value;
    if (!v) {
        o->header.value = v = rv_arena_strndup(c->a, "", 0);
        if (!v)
            return cfg_derrp(c, n, "out of memory");
    }
    for (const char *p = v; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return cfg_derr(c, schema_fnode(hn, "value"), "header.value", "must not contain CR, LF or control characters");
    /* Envoy's %VARIABLE% substitutions: "%%" is a literal '%', anything else we cannot do yet */
    char *w = v;
    for (char *r = v; *r; r++) {
        if (*r == '%') {
            if (r[1] == '%') {
                *w++ = '%';
                r++;
                continue;
            }
            return cfg_derr(c, schema_fnode(hn, "value"), "header.value",
                            "'%s': %%VARIABLE%% substitutions are not supported yet (write %%%% for a literal %%)",
                            o->header.value);
        }
        *w++ = *r;
    }
    *w = '\0';
    if (!o->has_append)
        o->append = true;
    return 0;
}

static int hvopt_req_check(dctx_t *c, void *msg, const ynode_t *n) { return hvopt_check(c, msg, n, true); }
static int hvopt_resp_check(dctx_t *c, void *msg, const ynode_t *n) { return hvopt_check(c, msg, n, false); }

static const field_t hvopt_fields[] = {
    FLD("header", F_MSG, OFF(hvopt_t, header), .sub = &hval_desc, .oneof = 1),
    FLD("headerSecretRef", F_UNSUP, .oneof = 1),
    FLD("append", F_BOOL, OFF(hvopt_t, append), SETF(hvopt_t, has_append)),
};
DESC(hvopt_req_desc, hvopt_t, hvopt_fields, hvopt_req_check);
DESC(hvopt_resp_desc, hvopt_t, hvopt_fields, hvopt_resp_check);

static int remove_list_check(dctx_t *c, strs_t *l, const ynode_t *n, const char *camel, bool request)
{
    for (uint32_t i = 0; i < l->n; i++) {
        char *h = l->v[i];
        char sub[64];
        snprintf(sub, sizeof(sub), "%s[%u]", camel, i);
        if (h[0] == ':')
            return cfg_derr(c, schema_elem_node(n, camel, i), sub, "'%s': pseudo-headers cannot be removed", h);
        if (!cfg_is_token(h))
            return cfg_derr(c, schema_elem_node(n, camel, i), sub, "'%s' is not a valid header name", h);
        cfg_lower(h);
        if (request && !strcmp(h, "host"))
            return cfg_derr(c, schema_elem_node(n, camel, i), sub, "the Host header cannot be removed");
    }
    return 0;
}

static int hman_check(dctx_t *c, void *msg, const ynode_t *n)
{
    hman_t *m = msg;
    if (remove_list_check(c, &m->req_remove, n, "requestHeadersToRemove", true) < 0)
        return -1;
    return remove_list_check(c, &m->resp_remove, n, "responseHeadersToRemove", false);
}

static const field_t hman_fields[] = {
    FLD("requestHeadersToAdd", F_MSGS, OFF(hman_t, req_add), .sub = &hvopt_req_desc),
    FLD("requestHeadersToRemove", F_STRS, OFF(hman_t, req_remove)),
    FLD("responseHeadersToAdd", F_MSGS, OFF(hman_t, resp_add), .sub = &hvopt_resp_desc),
    FLD("responseHeadersToRemove", F_STRS, OFF(hman_t, resp_remove)),
};
DESC(hman_desc, hman_t, hman_fields, hman_check);

/* ---- retries ----------------------------------------------------------------------- */

static const struct { const char *name; uint32_t bit; } retry_conds[] = {
    { "5xx", RV_RETRY_5XX },
    { "gateway-error", RV_RETRY_GATEWAY_ERROR },
    { "connect-failure", RV_RETRY_CONNECT_FAILURE },
    { "reset", RV_RETRY_RESET },
    { "retriable-status-codes", RV_RETRY_RETRIABLE_STATUS },
    { "refused-stream", RV_RETRY_REFUSED_STREAM },
};

static int backoff_check(dctx_t *c, void *msg, const ynode_t *n)
{
    backoff_t *b = msg;
    if (!b->has_base || b->base_ms <= 0)
        return cfg_derr(c, schema_fnode(n, "baseInterval"), "baseInterval", "is required and must be greater than 0");
    if (b->has_max && b->max_ms < b->base_ms)
        return cfg_derr(c, schema_fnode(n, "maxInterval"), "maxInterval", "must not be less than baseInterval");
    return 0;
}

static const field_t backoff_fields[] = {
    FLD("baseInterval", F_DUR, OFF(backoff_t, base_ms), SETF(backoff_t, has_base)),
    FLD("maxInterval", F_DUR, OFF(backoff_t, max_ms), SETF(backoff_t, has_max)),
};
DESC(backoff_desc, backoff_t, backoff_fields, backoff_check);

static int retry_check(dctx_t *c, void *msg, const ynode_t *n)
{
    retry_t *r = msg;
    const char *s = r->retry_on ? r->retry_on : "";
    r->on_bits = 0;
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        size_t len = (size_t)(e - s);
        while (len && s[len - 1] == ' ')
            len--;
        if (len) {
            size_t k;
            for (k = 0; k < RV_ARRAY_LEN(retry_conds); k++)
                if (strlen(retry_conds[k].name) == len && !memcmp(retry_conds[k].name, s, len))
                    break;
            if (k == RV_ARRAY_LEN(retry_conds))
                return cfg_derr(c, schema_fnode(n, "retryOn"), "retryOn",
                                "unknown retry condition '%.*s' (supported: 5xx, gateway-error, connect-failure, "
                                "reset, retriable-status-codes, refused-stream)",
                                (int)RV_MIN(len, 64), s);
            r->on_bits |= retry_conds[k].bit;
        }
        s = e;
    }
    for (uint32_t i = 0; i < r->codes.n; i++)
        if (r->codes.v[i] < 100) {
            char sub[48];
            snprintf(sub, sizeof(sub), "retriableStatusCodes[%u]", i);
            return cfg_derr(c, schema_elem_node(n, "retriableStatusCodes", i), sub, "%u is not an HTTP status code",
                            r->codes.v[i]);
        }
    if (r->has_per_try && r->per_try_ms == 0)
        r->has_per_try = false;
    return 0;
}

static const field_t retry_fields[] = {
    FLD("retryOn", F_STR, OFF(retry_t, retry_on)),
    FLD("numRetries", F_U32, OFF(retry_t, num_retries), SETF(retry_t, has_num)),
    FLD("perTryTimeout", F_DUR, OFF(retry_t, per_try_ms), SETF(retry_t, has_per_try)),
    FLD("retryBackOff", F_MSG, OFF(retry_t, backoff), .sub = &backoff_desc),
    FLD("retriableStatusCodes", F_U32S, OFF(retry_t, codes), .max = 599),
    UNSUP("priorityPredicate"), UNSUP("rateLimitedRetryBackOff"), UNSUP("hostSelectionRetryMaxAttempts"),
};
DESC(retry_desc, retry_t, retry_fields, retry_check);

/* ---- regex rewrite ----------------------------------------------------------------- */

/*
 * A path (or path piece) rivet writes into the upstream request line from config: only bytes
 * a normalised request path may hold, so config can never split the request line or inject
 * a header (no CTL, space, '#', '?', non-ASCII). refs: allow "\0".."\9" group references.
 * Returns 0, or -1 after cfg_derr().
 */
static int path_text_check(dctx_t *c, const ynode_t *n, const char *sub, const char *p, bool refs)
{
    for (const unsigned char *q = (const unsigned char *)p; *q; q++) {
        if (refs && *q == '\\' && q[1] >= '0' && q[1] <= '9') {
            q++;
            continue;
        }
        if (*q <= 0x20 || *q >= 0x7f || *q == '#' || *q == '?' || *q == '\\')
            return cfg_derr(c, n, sub, "byte 0x%02x is not allowed in a path (percent-encode it)", *q);
    }
    return 0;
}

static const field_t regexpat_fields[] = {
    FLD("regex", F_STR, OFF(regexpat_t, regex)),
    IGN("googleRe2"),
};
DESC(regexpat_desc, regexpat_t, regexpat_fields, NULL);

static int regexrw_check(dctx_t *c, void *msg, const ynode_t *n)
{
    regexrw_t *r = msg;
    if (!r->pattern.h.set || !r->pattern.regex || !r->pattern.regex[0])
        return cfg_derr(c, n, "pattern.regex", "is required");
    if (check_regex(c, schema_fnode(schema_fnode(n, "pattern"), "regex"), "pattern.regex", r->pattern.regex, false) < 0)
        return -1;
    if (r->subst && path_text_check(c, schema_fnode(n, "substitution"), "substitution", r->subst, true) < 0)
        return -1;
    if (!r->subst) {
        r->subst = rv_arena_strndup(c->a, "", 0);
        if (!r->subst)
            return cfg_derrp(c, n, "out of memory");
    }
    return 0;
}

static const field_t regexrw_fields[] = {
    FLD("pattern", F_MSG, OFF(regexrw_t, pattern), .sub = &regexpat_desc),
    FLD("substitution", F_STR, OFF(regexrw_t, subst), SETF(regexrw_t, has_subst)),
};
DESC(regexrw_desc, regexrw_t, regexrw_fields, regexrw_check);

/* ---- route options ----------------------------------------------------------------- */

static int host_text_check(dctx_t *c, const ynode_t *n, const char *sub, const char *h)
{
    if (!h[0])
        return cfg_derr(c, n, sub, "must not be empty");
    for (const char *p = h; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr("/?#@\\,", *p))
            return cfg_derr(c, n, sub, "'%s' is not a valid host", h);
    return 0;
}

static int ropts_check(dctx_t *c, void *msg, const ynode_t *n)
{
    ropts_t *o = msg;
    if (o->has_prefix_rewrite && o->regex_rewrite.h.set)
        return cfg_derr(c, schema_fnode(n, "regexRewrite"), NULL, "prefixRewrite and regexRewrite cannot both be set");
    if (o->has_prefix_rewrite && !o->prefix_rewrite) {
        o->prefix_rewrite = rv_arena_strndup(c->a, "", 0);
        if (!o->prefix_rewrite)
            return cfg_derrp(c, n, "out of memory");
    }
    if (o->has_prefix_rewrite &&
        path_text_check(c, schema_fnode(n, "prefixRewrite"), "prefixRewrite", o->prefix_rewrite, false) < 0)
        return -1;
    if (o->has_host_rewrite && host_text_check(c, schema_fnode(n, "hostRewrite"), "hostRewrite", o->host_rewrite) < 0)
        return -1;
    return 0;
}

static const field_t ropts_fields[] = {
    FLD("prefixRewrite", F_STR, OFF(ropts_t, prefix_rewrite), SETF(ropts_t, has_prefix_rewrite)),
    FLD("regexRewrite", F_MSG, OFF(ropts_t, regex_rewrite), .sub = &regexrw_desc),
    FLD("timeout", F_DUR, OFF(ropts_t, timeout_ms), SETF(ropts_t, has_timeout)),
    FLD("retries", F_MSG, OFF(ropts_t, retries), .sub = &retry_desc),
    FLD("headerManipulation", F_MSG, OFF(ropts_t, headers), .sub = &hman_desc),
    FLD("hostRewrite", F_STR, OFF(ropts_t, host_rewrite), SETF(ropts_t, has_host_rewrite), .oneof = 1),
    FLD("autoHostRewrite", F_BOOL, OFF(ropts_t, auto_host), SETF(ropts_t, has_auto_host), .oneof = 1),
    FLD("hostRewritePathRegex", F_UNSUP, .oneof = 1),
    FLD("hostRewriteHeader", F_UNSUP, .oneof = 1),
    UNSUP("appendXForwardedHost"), UNSUP("transformations"), UNSUP("faults"), UNSUP("extensions"),
    UNSUP("tracing"), UNSUP("shadowing"), UNSUP("cors"), UNSUP("lbHash"), UNSUP("upgrades"),
    UNSUP("ratelimitBasic"), UNSUP("ratelimitEarly"), UNSUP("rateLimitEarlyConfigs"), UNSUP("ratelimit"),
    UNSUP("rateLimitConfigs"), UNSUP("ratelimitRegular"), UNSUP("rateLimitRegularConfigs"), UNSUP("waf"),
    UNSUP("jwt"), UNSUP("jwtStaged"), UNSUP("jwtProvidersStaged"), UNSUP("rbac"), UNSUP("extauth"),
    UNSUP("dlp"), UNSUP("bufferPerRoute"), UNSUP("csrf"), UNSUP("stagedTransformations"),
    UNSUP("envoyMetadata"), UNSUP("maxStreamDuration"), UNSUP("idleTimeout"), UNSUP("extProc"), UNSUP("ai"),
    UNSUP("setFilterState"),
};
DESC(ropts_desc, ropts_t, ropts_fields, ropts_check);

static const field_t vhopts_fields[] = {
    FLD("headerManipulation", F_MSG, OFF(vhopts_t, headers), .sub = &hman_desc),
    FLD("retries", F_MSG, OFF(vhopts_t, retries), .sub = &retry_desc),
    UNSUP("extensions"), UNSUP("stats"), UNSUP("cors"), UNSUP("transformations"), UNSUP("ratelimitBasic"),
    UNSUP("ratelimitEarly"), UNSUP("rateLimitEarlyConfigs"), UNSUP("ratelimit"), UNSUP("rateLimitConfigs"),
    UNSUP("ratelimitRegular"), UNSUP("rateLimitRegularConfigs"), UNSUP("waf"), UNSUP("jwt"),
    UNSUP("jwtStaged"), UNSUP("rbac"), UNSUP("extauth"), UNSUP("dlp"), UNSUP("bufferPerRoute"), UNSUP("csrf"),
    UNSUP("includeRequestAttemptCount"), UNSUP("includeAttemptCountInResponse"), UNSUP("stagedTransformations"),
    UNSUP("extProc"), UNSUP("corsPolicyMergeSettings"), UNSUP("setFilterState"),
};
DESC(vhopts_desc, vhopts_t, vhopts_fields, NULL);

/* ---- matchers ---------------------------------------------------------------------- */

static bool pseudo_ok(const char *h)
{
    return !strcmp(h, ":authority") || !strcmp(h, ":method") || !strcmp(h, ":path") || !strcmp(h, ":scheme");
}

static int hmatch_check(dctx_t *c, void *msg, const ynode_t *n)
{
    hmatch_t *m = msg;
    if (!m->name || !m->name[0])
        return cfg_derr(c, n, "name", "is required");
    cfg_lower(m->name);
    if (m->name[0] == ':' ? !pseudo_ok(m->name) : !cfg_is_token(m->name))
        return cfg_derr(c, schema_fnode(n, "name"), "name", "'%s' is not a valid header name", m->name);
    if (m->has_value && schema_has_ctl(m->value))
        return cfg_derr(c, schema_fnode(n, "value"), "value", "must not contain control characters");
    if (m->regex && m->has_value && check_regex(c, schema_fnode(n, "value"), "value", m->value, false) < 0)
        return -1;
    return 0;
}

static const field_t hmatch_fields[] = {
    FLD("name", F_STR, OFF(hmatch_t, name)),
    FLD("value", F_STR, OFF(hmatch_t, value), SETF(hmatch_t, has_value)),
    FLD("regex", F_BOOL, OFF(hmatch_t, regex)),
    FLD("invertMatch", F_BOOL, OFF(hmatch_t, invert)),
};
DESC(hmatch_desc, hmatch_t, hmatch_fields, hmatch_check);

static int qmatch_check(dctx_t *c, void *msg, const ynode_t *n)
{
    qmatch_t *m = msg;
    if (!m->name || !m->name[0])
        return cfg_derr(c, n, "name", "is required");
    if (m->regex && m->has_value && check_regex(c, schema_fnode(n, "value"), "value", m->value, false) < 0)
        return -1;
    return 0;
}

static const field_t qmatch_fields[] = {
    FLD("name", F_STR, OFF(qmatch_t, name)),
    FLD("value", F_STR, OFF(qmatch_t, value), SETF(qmatch_t, has_value)),
    FLD("regex", F_BOOL, OFF(qmatch_t, regex)),
};
DESC(qmatch_desc, qmatch_t, qmatch_fields, qmatch_check);

static int matcher_check(dctx_t *c, void *msg, const ynode_t *n)
{
    matcher_t *m = msg;
    if (!m->has_cs)
        m->case_sensitive = true;
    if (m->has_prefix) {
        if (!m->prefix || !m->prefix[0]) {
            m->prefix = rv_arena_strndup(c->a, "/", 1);     /* "" is proto3's unset: match all */
            if (!m->prefix)
                return cfg_derrp(c, n, "out of memory");
        } else if (m->prefix[0] != '/') {
            return cfg_derr(c, schema_fnode(n, "prefix"), "prefix", "'%s' must start with '/'", m->prefix);
        }
        if (schema_has_ctl(m->prefix))
            return cfg_derr(c, schema_fnode(n, "prefix"), "prefix", "must not contain control characters");
    }
    if (m->has_exact && (!m->exact || m->exact[0] != '/'))
        return cfg_derr(c, schema_fnode(n, "exact"), "exact", "'%s' must start with '/'", m->exact ? m->exact : "");
    if (m->has_exact && schema_has_ctl(m->exact))
        return cfg_derr(c, schema_fnode(n, "exact"), "exact", "must not contain control characters");
    if (m->has_regex) {
        if (!m->regex || !m->regex[0])
            return cfg_derr(c, schema_fnode(n, "regex"), "regex", "must not be empty");
        if (check_regex(c, schema_fnode(n, "regex"), "regex", m->regex, !m->case_sensitive) < 0)
            return -1;
    }
    for (uint32_t i = 0; i < m->methods.n; i++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "methods[%u]", i);
        if (!cfg_is_token(m->methods.v[i]))
            return cfg_derr(c, schema_elem_node(n, "methods", i), sub, "'%s' is not a valid HTTP method", m->methods.v[i]);
        for (char *p = m->methods.v[i]; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 32);
    }
    return 0;
}

static const field_t matcher_fields[] = {
    FLD("prefix", F_STR, OFF(matcher_t, prefix), SETF(matcher_t, has_prefix), .oneof = 1),
    FLD("exact", F_STR, OFF(matcher_t, exact), SETF(matcher_t, has_exact), .oneof = 1),
    FLD("regex", F_STR, OFF(matcher_t, regex), SETF(matcher_t, has_regex), .oneof = 1),
    FLD("connectMatcher", F_UNSUP, .oneof = 1),
    FLD("caseSensitive", F_BOOL, OFF(matcher_t, case_sensitive), SETF(matcher_t, has_cs)),
    FLD("headers", F_MSGS, OFF(matcher_t, headers), .sub = &hmatch_desc),
    FLD("queryParameters", F_MSGS, OFF(matcher_t, query), .sub = &qmatch_desc),
    FLD("methods", F_STRS, OFF(matcher_t, methods)),
};
DESC(matcher_desc, matcher_t, matcher_fields, matcher_check);

/* ---- destinations and actions ------------------------------------------------------ */

/* Names of Consul services and tags: non-empty, no control characters. */
int schema_check_names(dctx_t *c, const ynode_t *n, const char *field, const strs_t *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (!l->v[i][0] || schema_has_ctl(l->v[i])) {
            char sub[64];
            snprintf(sub, sizeof(sub), "%s[%u]", field, i);
            return cfg_derr(c, schema_elem_node(n, field, i), sub, "must be non-empty, without control characters");
        }
    return 0;
}

static int cdest_check(dctx_t *c, void *msg, const ynode_t *n)
{
    cdest_t *d = msg;
    if (!d->service || !d->service[0])
        return cfg_derr(c, n, "serviceName", "is required");
    if (schema_has_ctl(d->service))
        return cfg_derr(c, schema_fnode(n, "serviceName"), "serviceName", "must not contain control characters");
    if (schema_check_names(c, n, "tags", &d->tags) < 0 || schema_check_names(c, n, "dataCenters", &d->dcs) < 0)
        return -1;
    return 0;
}

static const field_t cdest_fields[] = {
    FLD("serviceName", F_STR, OFF(cdest_t, service)),
    FLD("tags", F_STRS, OFF(cdest_t, tags)),
    FLD("dataCenters", F_STRS, OFF(cdest_t, dcs)),
};
DESC(cdest_desc, cdest_t, cdest_fields, cdest_check);

static int dest_check(dctx_t *c, void *msg, const ynode_t *n)
{
    dest_t *d = msg;
    if (!d->upstream.h.set && !d->consul.h.set)
        return cfg_derr(c, n, "upstream", "is required (or consul)");
    return 0;
}

static const field_t dest_fields[] = {
    FLD("upstream", F_MSG, OFF(dest_t, upstream), .sub = &schema_ref_desc, .oneof = 1),
    FLD("kube", F_UNSUP, .oneof = 1, .note = "(route to an Upstream instead)"),
    FLD("consul", F_MSG, OFF(dest_t, consul), .sub = &cdest_desc, .oneof = 1),
    UNSUP("destinationSpec"), UNSUP("subset"),
};
DESC(dest_desc, dest_t, dest_fields, dest_check);

static const field_t wdopts_fields[] = {
    FLD("headerManipulation", F_MSG, OFF(wdopts_t, headers), .sub = &hman_desc),
    UNSUP("transformations"), UNSUP("extensions"), UNSUP("bufferPerRoute"), UNSUP("csrf"),
    UNSUP("stagedTransformations"), UNSUP("extauth"),
};
DESC(wdopts_desc, wdopts_t, wdopts_fields, NULL);

static int wdest_check(dctx_t *c, void *msg, const ynode_t *n)
{
    wdest_t *w = msg;
    if (!w->dest.h.set)
        return cfg_derr(c, n, "destination", "is required");
    return 0;
}

static const field_t wdest_fields[] = {
    FLD("destination", F_MSG, OFF(wdest_t, dest), .sub = &dest_desc),
    FLD("weight", F_U32, OFF(wdest_t, weight), SETF(wdest_t, has_weight)),
    FLD("options", F_MSG, OFF(wdest_t, opts), .sub = &wdopts_desc),
};
DESC(wdest_desc, wdest_t, wdest_fields, wdest_check);

/* At least one weighted destination with a weight above 0 (Gloo's rule). */
static int weights_check(dctx_t *c, const list_t *l, const ynode_t *n)
{
    const wdest_t *d = l->v;
    uint64_t total = 0;
    if (l->n == 0)
        return cfg_derr(c, n, "destinations", "must list at least one destination");
    for (uint32_t i = 0; i < l->n; i++)
        total += d[i].weight;
    if (total == 0)
        return cfg_derr(c, schema_fnode(n, "destinations"), "destinations",
                        "at least one destination needs a weight greater than 0");
    if (total > UINT32_MAX)
        return cfg_derr(c, schema_fnode(n, "destinations"), "destinations", "the weights add up to more than 4294967295");
    return 0;
}

static int multi_check(dctx_t *c, void *msg, const ynode_t *n)
{
    return weights_check(c, &((multi_t *)msg)->dests, n);
}

static const field_t multi_fields[] = {
    FLD("destinations", F_MSGS, OFF(multi_t, dests), .sub = &wdest_desc),
};
DESC(multi_desc, multi_t, multi_fields, multi_check);

static int raction_check(dctx_t *c, void *msg, const ynode_t *n)
{
    raction_t *r = msg;
    if (!r->single.h.set && !r->multi.h.set && !r->ug.h.set)
        return cfg_derr(c, n, NULL, "needs one of single, multi or upstreamGroup");
    return 0;
}

static const field_t raction_fields[] = {
    FLD("single", F_MSG, OFF(raction_t, single), .sub = &dest_desc, .oneof = 1),
    FLD("multi", F_MSG, OFF(raction_t, multi), .sub = &multi_desc, .oneof = 1),
    FLD("upstreamGroup", F_MSG, OFF(raction_t, ug), .sub = &schema_ref_desc, .oneof = 1),
    FLD("clusterHeader", F_UNSUP, .oneof = 1),
    FLD("dynamicForwardProxy", F_UNSUP, .oneof = 1),
};
DESC(raction_desc, raction_t, raction_fields, raction_check);

static const char *const redirect_codes[] = { "MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT",
                                              "PERMANENT_REDIRECT", NULL };

static int redirect_check(dctx_t *c, void *msg, const ynode_t *n)
{
    redirect_t *r = msg;
    if (r->host && r->host[0] && host_text_check(c, schema_fnode(n, "hostRedirect"), "hostRedirect", r->host) < 0)
        return -1;
    if (r->has_path && (!r->path || r->path[0] != '/'))
        return cfg_derr(c, schema_fnode(n, "pathRedirect"), "pathRedirect", "must start with '/'");
    if (r->has_path && schema_has_ctl(r->path))
        return cfg_derr(c, schema_fnode(n, "pathRedirect"), "pathRedirect", "must not contain control characters");
    if (r->has_prefix && !r->prefix && !(r->prefix = rv_arena_strndup(c->a, "", 0)))
        return cfg_derrp(c, n, "out of memory");
    if (r->has_prefix && schema_has_ctl(r->prefix))
        return cfg_derr(c, schema_fnode(n, "prefixRewrite"), "prefixRewrite", "must not contain control characters");
    return 0;
}

static const field_t redirect_fields[] = {
    FLD("hostRedirect", F_STR, OFF(redirect_t, host)),
    FLD("pathRedirect", F_STR, OFF(redirect_t, path), SETF(redirect_t, has_path), .oneof = 1),
    FLD("prefixRewrite", F_STR, OFF(redirect_t, prefix), SETF(redirect_t, has_prefix), .oneof = 1),
    FLD("regexRewrite", F_UNSUP, .oneof = 1),
    FLD("responseCode", F_ENUM, OFF(redirect_t, code_enum), .enums = redirect_codes),
    FLD("httpsRedirect", F_BOOL, OFF(redirect_t, https)),
    FLD("stripQuery", F_BOOL, OFF(redirect_t, strip_query)),
    FLD("portRedirect", F_U32, OFF(redirect_t, port), .max = 65535),
};
DESC(redirect_desc, redirect_t, redirect_fields, redirect_check);

static int direct_check(dctx_t *c, void *msg, const ynode_t *n)
{
    direct_t *d = msg;
    if (d->status < 100 || d->status > 599)
        return cfg_derr(c, schema_fnode(n, "status"), "status", "must be an HTTP status between 100 and 599");
    return 0;
}

static const field_t direct_fields[] = {
    FLD("status", F_U32, OFF(direct_t, status)),
    FLD("body", F_STR, OFF(direct_t, body)),
};
DESC(direct_desc, direct_t, direct_fields, direct_check);

static const field_t rtsel_fields[] = {
    FLD("namespaces", F_STRS, OFF(rtsel_t, namespaces)),
    FLD("labels", F_LABELS, OFF(rtsel_t, labels)),
    UNSUP("expressions"),
};
DESC(rtsel_desc, rtsel_t, rtsel_fields, NULL);

static int delegate_check(dctx_t *c, void *msg, const ynode_t *n)
{
    delegate_t *d = msg;
    bool legacy = (d->name && d->name[0]) || (d->ns && d->ns[0]);
    if (legacy && (d->ref.h.set || d->selector.h.set))
        return cfg_derr(c, n, NULL, "the deprecated name/namespace fields cannot be combined with ref or selector");
    if (legacy) {
        if (!d->name || !d->name[0])
            return cfg_derr(c, n, "name", "is required");
        d->ref.h = d->h;
        d->ref.name = d->name;
        d->ref.ns = d->ns && d->ns[0] ? d->ns : NULL;
    }
    if (!d->ref.h.set && !d->selector.h.set)
        return cfg_derr(c, n, NULL, "needs ref or selector");
    return 0;
}

static const field_t delegate_fields[] = {
    FLD("name", F_STR, OFF(delegate_t, name)),
    FLD("namespace", F_STR, OFF(delegate_t, ns)),
    FLD("ref", F_MSG, OFF(delegate_t, ref), .sub = &schema_ref_desc, .oneof = 1),
    FLD("selector", F_MSG, OFF(delegate_t, selector), .sub = &rtsel_desc, .oneof = 1),
};
DESC(delegate_desc, delegate_t, delegate_fields, delegate_check);

/* ---- routes, virtual services, route tables ---------------------------------------- */

static int route_check(dctx_t *c, void *msg, const ynode_t *n)
{
    route_t *r = msg;
    const matcher_t *m = r->matchers.v;
    if (!r->ra.h.set && !r->redirect.h.set && !r->direct.h.set && !r->delegate.h.set)
        return cfg_derr(c, n, NULL,
                        "needs an action: routeAction, redirectAction, directResponseAction or delegateAction");
    for (uint32_t i = 0; i < r->matchers.n; i++) {
        char sub[48];
        const ynode_t *mn = schema_elem_node(n, "matchers", i);
        snprintf(sub, sizeof(sub), "matchers[%u]", i);
        if (r->delegate.h.set) {
            if (m[i].has_exact || m[i].has_regex)
                return cfg_derr(c, mn, sub, "a delegating route must use a prefix matcher, not %s",
                                m[i].has_exact ? "exact" : "regex");
            if (m[i].headers.n || m[i].query.n || m[i].methods.n)
                return cfg_derr(c, mn, sub,
                                "a delegating route cannot match on headers, queryParameters or methods");
            if (m[i].has_cs && !m[i].case_sensitive)
                return cfg_derr(c, mn, sub, "a delegating route cannot set caseSensitive: false");
        }
        if (m[i].has_regex && r->opts.has_prefix_rewrite)
            return cfg_derr(c, schema_fnode(schema_fnode(n, "options"), "prefixRewrite"), "options.prefixRewrite",
                            "cannot be used with a regex matcher (%s); use regexRewrite", sub);
    }
    return 0;
}

static const field_t route_fields[] = {
    FLD("matchers", F_MSGS, OFF(route_t, matchers), .sub = &matcher_desc),
    FLD("inheritableMatchers", F_FALSE_ONLY), FLD("inheritablePathMatchers", F_FALSE_ONLY),
    FLD("routeAction", F_MSG, OFF(route_t, ra), .sub = &raction_desc, .oneof = 1),
    FLD("redirectAction", F_MSG, OFF(route_t, redirect), .sub = &redirect_desc, .oneof = 1),
    FLD("directResponseAction", F_MSG, OFF(route_t, direct), .sub = &direct_desc, .oneof = 1),
    FLD("delegateAction", F_MSG, OFF(route_t, delegate), .sub = &delegate_desc, .oneof = 1),
    FLD("graphqlApiRef", F_UNSUP, .oneof = 1),
    FLD("options", F_MSG, OFF(route_t, opts), .sub = &ropts_desc),
    FLD("name", F_STR, OFF(route_t, name)),
    UNSUP("optionsConfigRefs"),
};
DESC(route_desc, route_t, route_fields, route_check);

/* A domain as Envoy takes it: "*", or one '*' as first or last character; no spaces. */
static const char *domain_problem(const char *d)
{
    if (!d[0])
        return "must not be empty";
    const char *star = strchr(d, '*');
    if (star && strcmp(d, "*") != 0) {
        if (strchr(star + 1, '*'))
            return "may hold only one wildcard '*'";
        if (star != d && star[1] != '\0')
            return "wildcard '*' must be the first or the last character";
        if (d[1] == '\0')
            return NULL;
    }
    for (const char *p = d; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr("/?#@\\,\"", *p))
            return "is not a valid domain";
    return NULL;
}

/* Compare two pointers to list entries by text, then by position (document order). */
static int strp_cmp(const void *x, const void *y)
{
    char *const *a = *(char *const *const *)x, *const *b = *(char *const *const *)y;
    int r = strcmp(*a, *b);
    return r ? r : (a > b) - (a < b);
}

static int vhost_check(dctx_t *c, void *msg, const ynode_t *n)
{
    vhost_t *v = msg;
    for (uint32_t i = 0; i < v->domains.n; i++) {
        char sub[40];
        snprintf(sub, sizeof(sub), "domains[%u]", i);
        cfg_lower(v->domains.v[i]);
        const char *why = domain_problem(v->domains.v[i]);
        if (why)
            return cfg_derr(c, schema_elem_node(n, "domains", i), sub, "'%s' %s", v->domains.v[i], why);
    }
    if (v->domains.n < 2)
        return 0;
    /* duplicates: sort pointers to the entries (O(n log n) for long lists) */
    char ***p = malloc(v->domains.n * sizeof(char **));
    if (!p)
        return cfg_derrp(c, n, "out of memory");
    for (uint32_t i = 0; i < v->domains.n; i++)
        p[i] = &v->domains.v[i];
    qsort(p, v->domains.n, sizeof(*p), strp_cmp);
    int rc = 0;
    for (uint32_t i = 1; i < v->domains.n && !rc; i++)
        if (!strcmp(*p[i], *p[i - 1])) {
            uint32_t at = (uint32_t)(p[i] - v->domains.v);
            char sub[40];
            snprintf(sub, sizeof(sub), "domains[%u]", at);
            rc = cfg_derr(c, schema_elem_node(n, "domains", at), sub, "duplicate domain '%s'", *p[i]);
        }
    free(p);
    return rc;
}

static const field_t vhost_fields[] = {
    FLD("domains", F_STRS, OFF(vhost_t, domains)),
    FLD("routes", F_MSGS, OFF(vhost_t, routes), .sub = &route_desc),
    FLD("options", F_MSG, OFF(vhost_t, opts), .sub = &vhopts_desc),
    UNSUP("optionsConfigRefs"),
};
DESC(vhost_desc, vhost_t, vhost_fields, vhost_check);

/* ---- sslConfig (downstream TLS) --------------------------------------------------------- */

static int sslfiles_check(dctx_t *c, void *msg, const ynode_t *n)
{
    sslfiles_t *f = msg;
    if (!f->cert || !f->cert[0])
        return cfg_derr(c, n, "tlsCert", "is required");
    if (!f->key || !f->key[0])
        return cfg_derr(c, n, "tlsKey", "is required");
    return 0;
}

static const field_t sslfiles_fields[] = {
    FLD("tlsCert", F_STR, OFF(sslfiles_t, cert)),
    FLD("tlsKey", F_STR, OFF(sslfiles_t, key)),
    FLD("rootCa", F_STR, OFF(sslfiles_t, root_ca)),
    FLD("ocspStaple", F_STR, OFF(sslfiles_t, ocsp)),
};
DESC(sslfiles_desc, sslfiles_t, sslfiles_fields, sslfiles_check);

static const char *const dtls_versions[] = { "TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3", NULL };

static int sslparams_check(dctx_t *c, void *msg, const ynode_t *n)
{
    sslparams_t *p = msg;
    if (p->min_ver == TLSV_1_0 || p->min_ver == TLSV_1_1)
        return cfg_derr(c, schema_fnode(n, "minimumProtocolVersion"), "minimumProtocolVersion",
                        "%s is not supported (rivet serves TLSv1_2 and TLSv1_3)", dtls_versions[p->min_ver]);
    if (p->max_ver == TLSV_1_0 || p->max_ver == TLSV_1_1)
        return cfg_derr(c, schema_fnode(n, "maximumProtocolVersion"), "maximumProtocolVersion",
                        "%s is not supported (rivet serves TLSv1_2 and TLSv1_3)", dtls_versions[p->max_ver]);
    if (p->min_ver && p->max_ver && p->min_ver > p->max_ver)
        return cfg_derr(c, schema_fnode(n, "maximumProtocolVersion"), "maximumProtocolVersion",
                        "%s is below minimumProtocolVersion %s", dtls_versions[p->max_ver], dtls_versions[p->min_ver]);
    for (uint32_t i = 0; i < p->ciphers.n; i++)
        if (!p->ciphers.v[i][0] || strpbrk(p->ciphers.v[i], ": ,"))
            return cfg_derr(c, schema_elem_node(n, "cipherSuites", i), "cipherSuites", "'%s' is not one cipher suite name",
                            p->ciphers.v[i]);
    for (uint32_t i = 0; i < p->curves.n; i++)
        if (!p->curves.v[i][0] || strpbrk(p->curves.v[i], ": ,"))
            return cfg_derr(c, schema_elem_node(n, "ecdhCurves", i), "ecdhCurves", "'%s' is not one curve name",
                            p->curves.v[i]);
    return 0;
}

static const field_t sslparams_fields[] = {
    FLD("minimumProtocolVersion", F_ENUM, OFF(sslparams_t, min_ver), .enums = dtls_versions),
    FLD("maximumProtocolVersion", F_ENUM, OFF(sslparams_t, max_ver), .enums = dtls_versions),
    FLD("cipherSuites", F_STRS, OFF(sslparams_t, ciphers)),
    FLD("ecdhCurves", F_STRS, OFF(sslparams_t, curves)),
};
DESC(sslparams_desc, sslparams_t, sslparams_fields, sslparams_check);

static const char *const ocsp_policies[] = { "LENIENT_STAPLING", "STRICT_STAPLING", "MUST_STAPLE", NULL };

/* A server name as Envoy's server_names takes it: a host name or "*.suffix", lower-cased. */
static bool sni_name_ok(char *s)
{
    cfg_lower(s);
    const char *p = s;
    if (p[0] == '*' && p[1] == '.')
        p += 2;
    if (!*p || strlen(s) > 253)
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
            return false;
    return s[strlen(s) - 1] != '.';
}

static int sslcfg_check(dctx_t *c, void *msg, const ynode_t *n)
{
    sslcfg_t *s = msg;
    if (!s->secret.h.set && !s->files.h.set)
        return cfg_derrp(c, n, "%s%ssslConfig: one of secretRef or sslFiles is required", c->path, c->plen ? "." : "");
    for (uint32_t i = 0; i < s->sni.n; i++)
        if (!sni_name_ok(s->sni.v[i]))
            return cfg_derr(c, schema_elem_node(n, "sniDomains", i), "sniDomains",
                            "'%s' is not a server name (a host name or *.suffix)", s->sni.v[i]);
    for (uint32_t i = 0; i < s->alpn.n; i++) {
        const char *a = s->alpn.v[i];
        if (!strcmp(a, "http/1.1"))
            continue;
        if (!strcmp(a, "h2"))
            return cfg_derr(c, schema_elem_node(n, "alpnProtocols", i), "alpnProtocols",
                            "'h2' is not supported (rivet speaks HTTP/1.1 only: list http/1.1)");
        return cfg_derr(c, schema_elem_node(n, "alpnProtocols", i), "alpnProtocols",
                        "'%s' is not supported (rivet speaks HTTP/1.1 only: list http/1.1)", a);
    }
    for (uint32_t i = 0; i < s->san.n; i++)
        if (!s->san.v[i][0] || schema_has_ctl(s->san.v[i]))
            return cfg_derr(c, schema_elem_node(n, "verifySubjectAltName", i), "verifySubjectAltName",
                            "'%s' is not a subject alternative name", s->san.v[i]);
    return 0;
}

static const field_t sslcfg_fields[] = {
    FLD("secretRef", F_MSG, OFF(sslcfg_t, secret), .sub = &schema_ref_desc, .oneof = 1),
    FLD("sslFiles", F_MSG, OFF(sslcfg_t, files), .sub = &sslfiles_desc, .oneof = 1),
    FLD("sds", F_UNSUP, .oneof = 1, .note = "(SDS is not supported: use secretRef or sslFiles)"),
    FLD("sniDomains", F_STRS, OFF(sslcfg_t, sni)),
    FLD("verifySubjectAltName", F_STRS, OFF(sslcfg_t, san)),
    FLD("parameters", F_MSG, OFF(sslcfg_t, params), .sub = &sslparams_desc),
    FLD("alpnProtocols", F_STRS, OFF(sslcfg_t, alpn)),
    FLD("oneWayTls", F_BOOL, OFF(sslcfg_t, one_way)),
    FLD("disableTlsSessionResumption", F_BOOL, OFF(sslcfg_t, no_resume)),
    FLD("ocspStaplePolicy", F_ENUM, OFF(sslcfg_t, ocsp_policy), .enums = ocsp_policies),
    UNSUP("transportSocketConnectTimeout"),
};
DESC(sslcfg_desc, sslcfg_t, sslcfg_fields, sslcfg_check);

static const field_t vs_fields[] = {
    FLD("virtualHost", F_MSG, OFF(vs_t, vh), .sub = &vhost_desc),
    FLD("sslConfig", F_MSG, OFF(vs_t, ssl), .sub = &sslcfg_desc),
    FLD("displayName", F_STR, OFF(vs_t, display_name)),
    FLD("metadata", F_MSG, OFF(vs_t, meta), .sub = &cfg_meta_desc),
    IGN("status"), IGN("namespacedStatuses"),
};
DESC(vs_desc, vs_t, vs_fields, NULL);

static const field_t rt_fields[] = {
    FLD("routes", F_MSGS, OFF(rt_t, routes), .sub = &route_desc),
    FLD("weight", F_I32, OFF(rt_t, weight)),
    FLD("metadata", F_MSG, OFF(rt_t, meta), .sub = &cfg_meta_desc),
    IGN("status"), IGN("namespacedStatuses"),
};
DESC(rt_desc, rt_t, rt_fields, NULL);

/* ---- gateways ---------------------------------------------------------------------- */

static const field_t httpgw_fields[] = {
    FLD("virtualServices", F_MSGS, OFF(httpgw_t, vss), .sub = &schema_ref_desc),
    FLD("virtualServiceSelector", F_LABELS, OFF(httpgw_t, selector)),
    FLD("virtualServiceNamespaces", F_STRS, OFF(httpgw_t, vs_namespaces)),
    UNSUP("virtualServiceExpressions"), UNSUP("options"),
};
DESC(httpgw_desc, httpgw_t, httpgw_fields, NULL);

static int gw_check(dctx_t *c, void *msg, const ynode_t *n)
{
    gw_t *g = msg;
    if (!g->bind_address || !g->bind_address[0]) {
        g->bind_address = rv_arena_strndup(c->a, "::", 2);
        if (!g->bind_address)
            return cfg_derrp(c, n, "out of memory");
    } else {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, g->bind_address, buf) != 1 && inet_pton(AF_INET6, g->bind_address, buf) != 1)
            return cfg_derr(c, schema_fnode(n, "bindAddress"), "bindAddress", "'%s' is not an IP address",
                            g->bind_address);
    }
    if (g->bind_port == 0)
        return cfg_derr(c, schema_fnode(n, "bindPort"), "bindPort", "is required (1-65535)");
    return 0;
}

static const field_t gw_fields[] = {
    FLD("ssl", F_BOOL, OFF(gw_t, ssl)),
    FLD("bindAddress", F_STR, OFF(gw_t, bind_address)),
    FLD("bindPort", F_U32, OFF(gw_t, bind_port), .max = 65535),
    FLD("options", F_UNSUP),
    FLD("metadata", F_MSG, OFF(gw_t, meta), .sub = &cfg_meta_desc),
    FLD("useProxyProto", F_FALSE_ONLY),
    FLD("httpGateway", F_MSG, OFF(gw_t, http), .sub = &httpgw_desc, .oneof = 1),
    FLD("tcpGateway", F_UNSUP, .oneof = 1),
    FLD("hybridGateway", F_UNSUP, .oneof = 1),
    FLD("proxyNames", F_STRS, OFF(gw_t, proxy_names)),
    UNSUP("routeOptions"),
    IGN("status"), IGN("namespacedStatuses"),
};
DESC(gw_desc, gw_t, gw_fields, gw_check);

static int ug_check(dctx_t *c, void *msg, const ynode_t *n)
{
    return weights_check(c, &((ug_t *)msg)->dests, n);
}

static const field_t ug_fields[] = {
    FLD("destinations", F_MSGS, OFF(ug_t, dests), .sub = &wdest_desc),
    FLD("metadata", F_MSG, OFF(ug_t, meta), .sub = &cfg_meta_desc),
    IGN("status"), IGN("namespacedStatuses"),
};
DESC(ug_desc, ug_t, ug_fields, ug_check);

/* ---- settings ---------------------------------------------------------------------- */

static int dirsrc_check(dctx_t *c, void *msg, const ynode_t *n)
{
    dirsrc_t *d = msg;
    if (!d->directory || !d->directory[0])
        return cfg_derr(c, n, "directory", "is required");
    return 0;
}

static const field_t dirsrc_fields[] = { FLD("directory", F_STR, OFF(dirsrc_t, directory)) };
DESC(dirsrc_desc, dirsrc_t, dirsrc_fields, dirsrc_check);

/* Addresses of Gloo's own servers: rivet has none of them, so they are harmless. */
static const field_t glooopts_fields[] = {
    IGN("xdsBindAddr"), IGN("validationBindAddr"), IGN("restXdsBindAddr"), IGN("proxyDebugBindAddr"),
    FLD("circuitBreakers", F_MSG, OFF(glooopts_t, cb), .sub = &schema_cbcfg_desc),    /* every upstream's defaults */
};
static const msgdesc_t glooopts_desc = { "GlooOptions", sizeof(glooopts_t), glooopts_fields,
                                         (uint32_t)RV_ARRAY_LEN(glooopts_fields), NULL, true };

static const field_t gwopts_fields[] = { IGN("persistProxySpec") };
static const msgdesc_t gwopts_desc = { "GatewayOptions", sizeof(mhdr_t), gwopts_fields,
                                       (uint32_t)RV_ARRAY_LEN(gwopts_fields), NULL, true };

static const field_t settings_fields[] = {
    FLD("discoveryNamespace", F_STR, OFF(settings_doc_t, discovery_ns)),
    FLD("watchNamespaces", F_STRS, OFF(settings_doc_t, watch_ns)),
    FLD("directoryConfigSource", F_MSG, OFF(settings_doc_t, config_src), .sub = &dirsrc_desc, .oneof = 1),
    FLD("kubernetesConfigSource", F_UNSUP, .oneof = 1),
    FLD("consulKvSource", F_UNSUP, .oneof = 1),
    FLD("directorySecretSource", F_MSG, OFF(settings_doc_t, secret_src), .sub = &dirsrc_desc, .oneof = 2),
    FLD("kubernetesSecretSource", F_UNSUP, .oneof = 2),
    FLD("vaultSecretSource", F_UNSUP, .oneof = 2),
    FLD("refreshRate", F_DUR, OFF(settings_doc_t, refresh_ms), SETF(settings_doc_t, has_refresh)),
    FLD("metadata", F_MSG, OFF(settings_doc_t, meta), .sub = &cfg_meta_desc),
    FLD("gloo", F_MSG, .sub = &glooopts_desc, OFF(settings_doc_t, gloo_opts)),
    FLD("gateway", F_MSG, .sub = &gwopts_desc, OFF(settings_doc_t, gw_opts)),
    IGN("devMode"), IGN("directoryArtifactSource"), IGN("status"), IGN("namespacedStatuses"),
    UNSUP("secretOptions"), UNSUP("kubernetesArtifactSource"), UNSUP("consulKvArtifactSource"),
    FLD("linkerd", F_FALSE_ONLY), UNSUP("knative"), UNSUP("discovery"), UNSUP("consul"),
    UNSUP("consulDiscovery"), UNSUP("kubernetes"), UNSUP("extensions"), UNSUP("ratelimit"),
    UNSUP("ratelimitServer"), UNSUP("rbac"), UNSUP("extauth"), UNSUP("namedExtauth"), UNSUP("cachingServer"),
    UNSUP("observabilityOptions"), UNSUP("upstreamOptions"), UNSUP("consoleOptions"), UNSUP("graphqlOptions"),
    UNSUP("extProc"), UNSUP("watchNamespaceSelectors"),
};
DESC(settings_desc, settings_doc_t, settings_fields, NULL);

/* ---- kinds ------------------------------------------------------------------------- */

const kind_info_t cfg_kinds[RK_COUNT] = {
    [RK_GATEWAY] = { "Gateway", "gateways", "gateway.solo.io/v1", &gw_desc },
    [RK_VS] = { "VirtualService", "virtualservices", "gateway.solo.io/v1", &vs_desc },
    [RK_RT] = { "RouteTable", "routetables", "gateway.solo.io/v1", &rt_desc },
    [RK_US] = { "Upstream", "upstreams", "gloo.solo.io/v1", &schema_us_desc },
    [RK_UG] = { "UpstreamGroup", "upstreamgroups", "gloo.solo.io/v1", &ug_desc },
    [RK_SETTINGS] = { "Settings", "settings", "gloo.solo.io/v1", &settings_desc },
};

_Static_assert(offsetof(vs_t, meta) == offsetof(gw_t, meta) && offsetof(vs_t, meta) == offsetof(rt_t, meta) &&
                   offsetof(vs_t, meta) == offsetof(us_t, meta) && offsetof(vs_t, meta) == offsetof(ug_t, meta) &&
                   offsetof(vs_t, meta) == offsetof(settings_doc_t, meta),
               "metadata sits at the same place in every resource");
