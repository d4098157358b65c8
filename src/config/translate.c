/*
 * translate.c - from the store's accepted resources to an immutable snapshot.
 *
 * Gateways become listeners, Upstreams clusters, VirtualServices virtual hosts whose routes
 * are flattened through RouteTable delegation (one rv_route_t per matcher, options merged
 * child over parent over virtual host). Checks that need several resources live here:
 * missing references (Warning, 503 at run time), bind conflicts, domain conflicts,
 * delegation prefixes and cycles (Rejected). A resource refused here whose previous version
 * an earlier build accepted is translated again in that version (rv_snapshot_build_disc
 * builds another round), so a conflict never takes away what was serving; in a conflict the
 * resource that was serving keeps its place and the new or edited one is refused. Under rivet
 * run each listener is bind-checked (rv_config_set_bind_check) and a Gateway that cannot bind
 * is refused the same way. Every string the snapshot holds is copied into its arena: the
 * store may free its versions while a worker still serves the snapshot.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config-internal.h"
#include "control/discovery.h"
#include "core/err.h"
#include "core/log.h"
#include "core/regex.h"

#include "config/translate-internal.h"


static rv_bind_check_fn bind_check;     /* rivet run: the data plane's listener check */

void rv_config_set_bind_check(rv_bind_check_fn fn)
{
    bind_check = fn;
}

/* t is translated in a version no build accepted yet while an older one was: it can fall back. */
static bool can_fall_back(const tres_t *t)
{
    return t->r && t->r->good && t->obj != t->r->good && !t->dup;
}

/* t's version differs from its last accepted one (new, edited, or never accepted). */
static bool is_changed(const tres_t *t)
{
    return t->r && t->obj != t->r->good;
}

/* ---- small helpers ----------------------------------------------------------------- */

void *cfg_vec_push(bctx_t *b, vec_t *v, size_t size)
{
    if (v->n == v->cap) {
        uint32_t ncap = v->cap ? v->cap * 2 : 8;
        void *p = realloc(v->v, ncap * size);
        if (!p) {
            b->oom = true;
            return NULL;
        }
        v->v = p;
        v->cap = ncap;
    }
    void *e = (char *)v->v + (size_t)v->n++ * size;
    memset(e, 0, size);
    return e;
}

void cfg_addmsg(bctx_t *b, tres_t *t, bool reject, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

void cfg_addmsg(bctx_t *b, tres_t *t, bool reject, const char *fmt, ...)
{
    char m[CFG_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof(m), fmt, ap);
    va_end(ap);
    char **dst = reject ? &t->rej : &t->warn;
    if (*dst && strstr(*dst, m))
        return;
    size_t old = *dst ? strlen(*dst) : 0, ml = strlen(m);
    if (old + ml + 3 > MSG_CAP)
        return;
    char *p = realloc(*dst, old + ml + 3);
    if (!p) {
        b->oom = true;
        return;
    }
    if (old) {
        memcpy(p + old, "; ", 2);
        old += 2;
    }
    memcpy(p + old, m, ml + 1);
    *dst = p;
}

rv_str_t cfg_astr(bctx_t *b, const char *s)
{
    if (!s || !s[0])
        return (rv_str_t){ "", 0 };
    rv_str_t r = rv_arena_str(b->a, rv_cstr(s));
    if (!r.ptr)
        b->oom = true;
    return r;
}

rv_str_t cfg_astrf(bctx_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

rv_str_t cfg_astrf(bctx_t *b, const char *fmt, ...)
{
    char tmp[CFG_ERRLEN + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    return cfg_astr(b, tmp);
}

void *cfg_anew(bctx_t *b, size_t n)
{
    if (n == 0)
        return NULL;
    void *p = rv_arena_calloc(b->a, n);
    if (!p)
        b->oom = true;
    return p;
}

/* Compile and register a regex with the snapshot (freed by its free_hook). */
static rv_regex_t *compile(bctx_t *b, const char *pat, bool caseless)
{
    snap_priv_t *sp = b->sp;
    char e[200];
    if (sp->nre == sp->capre) {
        uint32_t ncap = sp->capre ? sp->capre * 2 : 16;
        rv_regex_t **p = realloc(sp->re, ncap * sizeof(*p));
        if (p)
            sp->re = p;
        const char **q = realloc(sp->pat, ncap * sizeof(*q));
        if (q)
            sp->pat = q;
        if (!p || !q) {
            b->oom = true;
            return NULL;
        }
        sp->capre = ncap;
    }
    rv_regex_t *re = rv_regex_compile(rv_cstr(pat), caseless, e, sizeof(e));
    if (!re) {
        b->oom = true;   /* validated at decode time: only OOM can fail here */
        return NULL;
    }
    sp->pat[sp->nre] = cfg_astr(b, pat).ptr;
    sp->re[sp->nre++] = re;
    return re;
}

const char *cfg_regex_pattern(const rv_snapshot_t *snap, const rv_regex_t *re)
{
    const snap_priv_t *sp = (const snap_priv_t *)snap;
    for (uint32_t i = 0; i < sp->nre; i++)
        if (sp->re[i] == re)
            return sp->pat[i] ? sp->pat[i] : "";
    return "";
}

int cfg_tres_cmp(const void *x, const void *y)
{
    const tres_t *a = *(tres_t *const *)x, *c = *(tres_t *const *)y;
    int r = strcmp(a->ns, c->ns);
    return r ? r : strcmp(a->name, c->name);
}

/* Order of b->all: kind, namespace, name (then path, which the key does not know). */
static int key_cmp(const tres_t *t, int kind, const char *ns, const char *name)
{
    if (t->kind != kind)
        return t->kind < kind ? -1 : 1;
    int r = strcmp(t->ns, ns);
    return r ? r : strcmp(t->name, name);
}

/* Resource of kind by namespace and name (usable or not), NULL when no file defines it. */
static tres_t *lookup_any(bctx_t *b, int kind, const char *ns, const char *name)
{
    uint32_t lo = 0, hi = b->nall;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&b->all[mid], kind, ns, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* the first file for a name is the one in use; later ones are duplicates */
    return lo < b->nall && key_cmp(&b->all[lo], kind, ns, name) == 0 ? &b->all[lo] : NULL;
}

int cfg_disc_cmp(const void *x, const void *y)
{
    return strcmp(((const tres_t *)x)->name, ((const tres_t *)y)->name);
}

static tres_t *lookup(bctx_t *b, int kind, const char *ns, const char *name)
{
    tres_t key = { .ns = ns, .name = name }, *kp = &key;
    tres_t **f = bsearch(&kp, b->by[kind], b->nby[kind], sizeof(tres_t *), cfg_tres_cmp);
    if (f)
        return *f;
    /* a discovered Upstream (a user's Upstream of the same name won above) */
    if (kind == RK_US && b->ndisc && !strcmp(ns, b->s->discovery_ns))
        return bsearch(&key, b->disc, b->ndisc, sizeof(tres_t), cfg_disc_cmp);
    return NULL;
}

/* Why a reference does not resolve: "not found" or "is rejected". */
static const char *ref_problem(bctx_t *b, int kind, const char *ns, const char *name)
{
    return lookup_any(b, kind, ns, name) ? "is rejected" : "not found";
}

static bool labels_match(const labels_t *want, const labels_t *have)
{
    for (uint32_t i = 0; i < want->n; i++) {
        uint32_t j;
        for (j = 0; j < have->n; j++)
            if (!strcmp(want->k[i], have->k[j]) && !strcmp(want->v[i], have->v[j]))
                break;
        if (j == have->n)
            return false;
    }
    return true;
}

bool cfg_in_list(const strs_t *l, const char *s)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return true;
    return false;
}

/* ---- options and actions ------------------------------------------------------------ */

static void conv_adds(bctx_t *b, const list_t *l, rv_header_add_t **out, uint32_t *n)
{
    const hvopt_t *o = l->v;
    *n = 0;
    if (!l->n)
        return;
    if (!(*out = cfg_anew(b, l->n * sizeof(rv_header_add_t))))
        return;
    for (uint32_t i = 0; i < l->n; i++) {
        (*out)[i].name = cfg_astr(b, o[i].header.key);
        (*out)[i].value = cfg_astr(b, o[i].header.value);
        (*out)[i].append = o[i].append;
    }
    *n = l->n;
}

static void conv_removes(bctx_t *b, const strs_t *l, rv_str_t **out, uint32_t *n)
{
    *n = 0;
    if (!l->n)
        return;
    if (!(*out = cfg_anew(b, l->n * sizeof(rv_str_t))))
        return;
    for (uint32_t i = 0; i < l->n; i++)
        (*out)[i] = cfg_astr(b, l->v[i]);
    *n = l->n;
}

static void conv_headers(bctx_t *b, const hman_t *h, rv_header_ops_t *o)
{
    memset(o, 0, sizeof(*o));
    if (!h->h.set)
        return;
    conv_adds(b, &h->req_add, &o->req_add, &o->nreq_add);
    conv_removes(b, &h->req_remove, &o->req_remove, &o->nreq_remove);
    conv_adds(b, &h->resp_add, &o->resp_add, &o->nresp_add);
    conv_removes(b, &h->resp_remove, &o->resp_remove, &o->nresp_remove);
}

static void conv_retry(bctx_t *b, const retry_t *r, rv_retry_policy_t *o)
{
    memset(o, 0, sizeof(*o));
    o->per_try_timeout_ms = RV_TIMEOUT_UNSET;
    o->backoff_base_ms = 25;
    o->backoff_max_ms = 250;
    if (!r->h.set)
        return;
    o->on = r->on_bits;
    o->num_retries = r->has_num ? r->num_retries : 1;
    if (r->has_per_try)
        o->per_try_timeout_ms = r->per_try_ms;
    if (r->backoff.h.set) {
        o->backoff_base_ms = r->backoff.base_ms;
        o->backoff_max_ms = r->backoff.has_max ? r->backoff.max_ms : 10 * r->backoff.base_ms;
    }
    if (r->codes.n && (o->status_codes = cfg_anew(b, r->codes.n * sizeof(uint16_t)))) {
        for (uint32_t i = 0; i < r->codes.n; i++)
            o->status_codes[i] = (uint16_t)r->codes.v[i];
        o->nstatus_codes = r->codes.n;
    }
}

/* Delegated options: the child's fields over the parent's (rewrites and host rewrites as groups). */
static ropts_t merge_opts(const ropts_t *child, const ropts_t *parent)
{
    ropts_t r = *child;
    if (!parent || !parent->h.set)
        return r;
    if (!child->h.set) {
        r = *parent;
        return r;
    }
    if (!child->has_prefix_rewrite && !child->regex_rewrite.h.set) {
        r.has_prefix_rewrite = parent->has_prefix_rewrite;
        r.prefix_rewrite = parent->prefix_rewrite;
        r.regex_rewrite = parent->regex_rewrite;
    }
    if (!child->has_timeout) {
        r.has_timeout = parent->has_timeout;
        r.timeout_ms = parent->timeout_ms;
    }
    if (!child->retries.h.set)
        r.retries = parent->retries;
    if (!child->headers.h.set)
        r.headers = parent->headers;
    if (!child->has_host_rewrite && !child->has_auto_host) {
        r.has_host_rewrite = parent->has_host_rewrite;
        r.host_rewrite = parent->host_rewrite;
        r.has_auto_host = parent->has_auto_host;
        r.auto_host = parent->auto_host;
    }
    return r;
}

/*
 * Cluster of an upstream reference (namespace defaults to owner's); RV_NO_CLUSTER when it
 * does not resolve, with a Warning on owner when warn.
 */
static uint32_t upstream_cluster(bctx_t *b, tres_t *owner, bool warn, const char *where, const ref_t *ref)
{
    const char *ns = ref->ns && ref->ns[0] ? ref->ns : owner->ns;
    tres_t *u = lookup(b, RK_US, ns, ref->name);
    if (u)
        return u->cluster;
    if (warn)
        cfg_addmsg(b, owner, false, "%s: upstream %s/%s %s", where, ns, ref->name, ref_problem(b, RK_US, ns, ref->name));
    return RV_NO_CLUSTER;
}

/* Cluster of a destination: an Upstream reference or a consul service. */
static uint32_t dest_cluster(bctx_t *b, tres_t *owner, bool warn, const char *where, const dest_t *d)
{
    if (d->consul.h.set)
        return cfg_consul_dest_cluster(b, owner, warn, where, &d->consul);
    return upstream_cluster(b, owner, warn, where, &d->upstream);
}

static void conv_wdests(bctx_t *b, tres_t *owner, bool warn, const char *where, const list_t *l, rv_action_t *act)
{
    const wdest_t *d = l->v;
    uint32_t n = 0;
    for (uint32_t i = 0; i < l->n; i++)
        n += d[i].weight > 0;
    if (!(act->dests = cfg_anew(b, n * sizeof(rv_dest_t))))
        return;
    for (uint32_t i = 0, k = 0; i < l->n; i++) {
        if (!d[i].weight)
            continue;
        rv_dest_t *o = &act->dests[k++];
        o->cluster = dest_cluster(b, owner, warn, where, &d[i].dest);
        o->weight = d[i].weight;
        conv_headers(b, &d[i].opts.headers, &o->headers);
        act->total_weight += o->weight;
    }
    act->ndests = n;
}

static void conv_action(bctx_t *b, tres_t *owner, const char *where, const route_t *r, rv_action_t *act)
{
    static const uint16_t codes[] = { 301, 302, 303, 307, 308 };
    memset(act, 0, sizeof(*act));
    if (r->redirect.h.set) {
        const redirect_t *d = &r->redirect;
        act->kind = RV_ACTION_REDIRECT;
        act->redirect.host = cfg_astr(b, d->host);
        act->redirect.path_kind =
            d->has_path ? RV_REDIRECT_PATH_REPLACE : d->has_prefix ? RV_REDIRECT_PREFIX : RV_REDIRECT_PATH_KEEP;
        act->redirect.path = cfg_astr(b, d->has_path ? d->path : d->has_prefix ? d->prefix : NULL);
        act->redirect.code = codes[d->code_enum < 5 ? d->code_enum : 0];
        act->redirect.port = (uint16_t)d->port;
        act->redirect.https = d->https;
        act->redirect.strip_query = d->strip_query;
        return;
    }
    if (r->direct.h.set) {
        act->kind = RV_ACTION_DIRECT;
        act->status = (uint16_t)r->direct.status;
        act->body = cfg_astr(b, r->direct.body);
        return;
    }
    act->kind = RV_ACTION_ROUTE;
    const raction_t *ra = &r->ra;
    if (ra->single.h.set) {
        if (!(act->dests = cfg_anew(b, sizeof(rv_dest_t))))
            return;
        act->dests[0].cluster = dest_cluster(b, owner, true, where, &ra->single);
        act->dests[0].weight = 1;
        act->ndests = 1;
        act->total_weight = 1;
    } else if (ra->multi.h.set) {
        conv_wdests(b, owner, true, where, &ra->multi.dests, act);
    } else {
        const char *ns = ra->ug.ns && ra->ug.ns[0] ? ra->ug.ns : owner->ns;
        tres_t *g = lookup(b, RK_UG, ns, ra->ug.name);
        if (g) {
            /* missing upstreams of the group are reported on the group (check_ugs) */
            conv_wdests(b, g, false, "destinations", &((ug_t *)g->obj)->dests, act);
        } else {
            cfg_addmsg(b, owner, false, "%s: upstream group %s/%s %s", where, ns, ra->ug.name,
                   ref_problem(b, RK_UG, ns, ra->ug.name));
            if (!(act->dests = cfg_anew(b, sizeof(rv_dest_t))))
                return;
            act->dests[0].cluster = RV_NO_CLUSTER;
            act->dests[0].weight = 1;
            act->ndests = 1;
            act->total_weight = 1;
        }
    }
}

/* ---- routes and delegation ----------------------------------------------------------- */

typedef struct flat_s {
    bctx_t *b;
    tres_t *vs;                 /* owning VirtualService */
    vec_t out;                  /* rv_route_t */
    const retry_t *vh_retries;
    bool too_many;
} flat_t;

/* Emit one route per matcher of r (owner's route at where). */
static void emit_route(flat_t *f, tres_t *owner, const char *where, const route_t *r, const ropts_t *opts,
                       const matcher_t *m, const char *inherited_prefix)
{
    bctx_t *b = f->b;
    if (f->out.n >= MAX_ROUTES_PER_VS || b->routes_total >= MAX_ROUTES_TOTAL) {
        f->too_many = true;
        return;
    }
    b->routes_total++;
    rv_route_t *o = cfg_vec_push(b, &f->out, sizeof(rv_route_t));
    if (!o)
        return;
    rv_matcher_t *mm = &o->match;
    mm->case_sensitive = true;
    if (!m) {
        mm->path_kind = RV_PATH_PREFIX;
        mm->path = cfg_astr(b, inherited_prefix ? inherited_prefix : "/");
    } else {
        mm->case_sensitive = !m->has_cs || m->case_sensitive;
        if (m->has_exact) {
            mm->path_kind = RV_PATH_EXACT;
            mm->path = cfg_astr(b, m->exact);
        } else if (m->has_regex) {
            mm->path_kind = RV_PATH_REGEX;
            mm->path = cfg_astr(b, m->regex);
            mm->path_re = compile(b, m->regex, !mm->case_sensitive);
        } else {
            mm->path_kind = RV_PATH_PREFIX;
            mm->path = cfg_astr(b, m->has_prefix ? m->prefix : inherited_prefix ? inherited_prefix : "/");
        }
        const hmatch_t *hm = m->headers.v;
        if (m->headers.n && (mm->headers = cfg_anew(b, m->headers.n * sizeof(rv_header_matcher_t)))) {
            for (uint32_t i = 0; i < m->headers.n; i++) {
                rv_header_matcher_t *x = &mm->headers[i];
                x->name = cfg_astr(b, hm[i].name);
                x->has_value = hm[i].has_value;
                x->is_regex = hm[i].regex && hm[i].has_value;
                x->invert = hm[i].invert;
                if (x->has_value)
                    x->value = cfg_astr(b, hm[i].value);
                if (x->is_regex)
                    x->re = compile(b, hm[i].value, false);
            }
            mm->nheaders = m->headers.n;
        }
        const qmatch_t *qm = m->query.v;
        if (m->query.n && (mm->query = cfg_anew(b, m->query.n * sizeof(rv_query_matcher_t)))) {
            for (uint32_t i = 0; i < m->query.n; i++) {
                rv_query_matcher_t *x = &mm->query[i];
                x->name = cfg_astr(b, qm[i].name);
                x->has_value = qm[i].has_value;
                x->is_regex = qm[i].regex && qm[i].has_value;
                if (x->has_value)
                    x->value = cfg_astr(b, qm[i].value);
                if (x->is_regex)
                    x->re = compile(b, qm[i].value, false);
            }
            mm->nquery = m->query.n;
        }
        if (m->methods.n && (mm->methods = cfg_anew(b, m->methods.n * sizeof(rv_str_t)))) {
            for (uint32_t i = 0; i < m->methods.n; i++)
                mm->methods[i] = cfg_astr(b, m->methods.v[i]);
            mm->nmethods = m->methods.n;
        }
    }
    conv_action(b, owner, where, r, &o->action);

    rv_route_opts_t *ro = &o->opts;
    ro->has_prefix_rewrite = opts->has_prefix_rewrite;
    if (ro->has_prefix_rewrite && mm->path_kind == RV_PATH_REGEX) {
        /* only reachable through inheritance: the route's own options were checked at decode */
        cfg_addmsg(b, owner, false, "%s: the inherited prefixRewrite does not apply to a regex matcher", where);
        ro->has_prefix_rewrite = false;
    }
    if (ro->has_prefix_rewrite)
        ro->prefix_rewrite = cfg_astr(b, opts->prefix_rewrite);
    if (opts->regex_rewrite.h.set) {
        ro->regex_rewrite = compile(b, opts->regex_rewrite.pattern.regex, false);
        ro->regex_substitution = cfg_astr(b, opts->regex_rewrite.subst);
    }
    ro->timeout_ms = opts->has_timeout ? opts->timeout_ms : 15000;
    conv_retry(b, opts->retries.h.set ? &opts->retries : f->vh_retries, &ro->retries);
    if (opts->has_host_rewrite)
        ro->host_rewrite = cfg_astr(b, opts->host_rewrite);
    ro->auto_host_rewrite = opts->has_auto_host && opts->auto_host;
    conv_headers(b, &opts->headers, &o->headers);
    o->name = r->name && r->name[0] ? cfg_astr(b, r->name) : (rv_str_t){ NULL, 0 };
}

static int rt_cmp(const void *x, const void *y)
{
    const tres_t *a = *(tres_t *const *)x, *c = *(tres_t *const *)y;
    const rt_t *ra = a->obj, *rc = c->obj;
    if (ra->weight != rc->weight)
        return ra->weight < rc->weight ? -1 : 1;
    return cfg_tres_cmp(x, y);
}

/* Does every route of table t stay under prefix? On failure, names the route in why. */
static bool under_prefix(const rt_t *t, const char *prefix, char *why, size_t whylen)
{
    const route_t *r = t->routes.v;
    for (uint32_t i = 0; i < t->routes.n; i++) {
        const matcher_t *m = r[i].matchers.v;
        for (uint32_t k = 0; k < r[i].matchers.n; k++) {
            const char *p = m[k].has_exact ? m[k].exact : m[k].has_regex ? m[k].regex : m[k].prefix;
            const char *what = m[k].has_exact ? "exact" : m[k].has_regex ? "regex" : "prefix";
            if (!m[k].has_exact && !m[k].has_regex && !m[k].has_prefix)
                continue;   /* no path: inherits the parent prefix */
            if (strncmp(p, prefix, strlen(prefix)) != 0) {
                snprintf(why, whylen, "route routes[%u] matcher %s '%s' does not start with the delegating prefix '%s'",
                         i, what, p, prefix);
                return false;
            }
        }
    }
    return true;
}

static bool flatten(flat_t *f, tres_t *owner, const list_t *routes, const char *base, const ropts_t *parent_opts,
                    const char *parent_prefix, int depth);

/* Delegate route r (matcher m, prefix) of owner to the RouteTables it selects. */
static bool delegate(flat_t *f, tres_t *owner, const char *where, const route_t *r, const ropts_t *opts,
                     const char *prefix, int depth)
{
    bctx_t *b = f->b;
    const delegate_t *d = &r->delegate;
    vec_t targets = { 0 };
    bool ok = true;

    if (d->ref.h.set) {
        const char *ns = d->ref.ns && d->ref.ns[0] ? d->ref.ns : owner->ns;
        tres_t *t = lookup(b, RK_RT, ns, d->ref.name);
        if (!t)
            cfg_addmsg(b, owner, false, "%s: RouteTable %s/%s %s", where, ns, d->ref.name,
                   ref_problem(b, RK_RT, ns, d->ref.name));
        else if (cfg_vec_push(b, &targets, sizeof(tres_t *)))
            ((tres_t **)targets.v)[targets.n - 1] = t;
    } else {
        const rtsel_t *s = &d->selector;
        for (uint32_t i = 0; i < b->nby[RK_RT]; i++) {
            tres_t *t = b->by[RK_RT][i];
            bool ns_ok = s->namespaces.n ? (cfg_in_list(&s->namespaces, "*") || cfg_in_list(&s->namespaces, t->ns))
                                         : !strcmp(t->ns, owner->ns);
            if (!ns_ok || !labels_match(&s->labels, &((rt_t *)t->obj)->meta.labels))
                continue;
            if (cfg_vec_push(b, &targets, sizeof(tres_t *)))
                ((tres_t **)targets.v)[targets.n - 1] = t;
        }
        if (!targets.n)
            cfg_addmsg(b, owner, false, "%s: delegateAction.selector selects no RouteTable", where);
        if (targets.n > 1)
            qsort(targets.v, targets.n, sizeof(tres_t *), rt_cmp);
    }
    for (uint32_t i = 0; i < targets.n && !b->oom; i++) {
        tres_t *t = ((tres_t **)targets.v)[i];
        rt_t *rt = t->obj;
        char why[CFG_ERRLEN];
        if (t->in_chain) {
            /* owner points back into its own delegation chain: owner is the culprit */
            cfg_addmsg(b, owner, true, "%s: delegation cycle: RouteTable %s/%s already delegates to %s %s/%s", where,
                   t->ns, t->name, cfg_kinds[owner->kind].kind, owner->ns, owner->name);
            ok = false;
            break;
        }
        if (depth + 1 > CFG_MAX_DELEGATION) {
            cfg_addmsg(b, owner, true, "%s: delegation deeper than %d levels", where, CFG_MAX_DELEGATION);
            ok = false;
            break;
        }
        b->prefix_work += rt->routes.n;
        if (b->prefix_work > MAX_PREFIX_WORK) {
            cfg_addmsg(b, owner, true, "%s: too many delegated routes to check (more than %u in this config)", where,
                   MAX_PREFIX_WORK);
            ok = false;
            break;
        }
        if (!under_prefix(rt, prefix, why, sizeof(why))) {
            if (!is_changed(t) && can_fall_back(owner))
                /* the table is as last accepted: the parent's edit is what no longer fits */
                cfg_addmsg(b, owner, true, "%s: RouteTable %s/%s does not fit under it: %s", where, t->ns, t->name, why);
            else
                cfg_addmsg(b, t, true, "%s (delegated from %s %s/%s)", why, cfg_kinds[owner->kind].kind, owner->ns,
                       owner->name);
            continue;
        }
        uint32_t mark = f->out.n;
        t->in_chain = true;
        bool child_ok = flatten(f, t, &rt->routes, "routes", opts, prefix, depth + 1);
        t->in_chain = false;
        if (!child_ok)
            f->out.n = mark;    /* drop everything the failed table contributed */
    }
    free(targets.v);
    return ok;
}

/*
 * Flatten routes of owner (a VirtualService or a RouteTable). Returns false when owner turned
 * out invalid in this context (a cycle through it), so the caller drops what it emitted.
 */
static bool flatten(flat_t *f, tres_t *owner, const list_t *routes, const char *base, const ropts_t *parent_opts,
                    const char *parent_prefix, int depth)
{
    const route_t *r = routes->v;
    bool ok = true;
    for (uint32_t i = 0; i < routes->n && !f->b->oom && !f->too_many; i++) {
        char where[200];
        snprintf(where, sizeof(where), "route %s[%u]", base, i);
        ropts_t opts = merge_opts(&r[i].opts, parent_opts);
        const matcher_t *m = r[i].matchers.v;
        uint32_t nm = r[i].matchers.n ? r[i].matchers.n : 1;
        for (uint32_t k = 0; k < nm; k++) {
            const matcher_t *mk = r[i].matchers.n ? &m[k] : NULL;
            if (r[i].delegate.h.set) {
                const char *prefix = mk && mk->has_prefix ? mk->prefix : parent_prefix ? parent_prefix : "/";
                if (!delegate(f, owner, where, &r[i], &opts, prefix, depth))
                    ok = false;
            } else {
                emit_route(f, owner, where, &r[i], &opts, mk, parent_prefix);
            }
        }
    }
    return ok;
}

/* Translate VirtualService t into its route template (once per build). */
static void translate_vs(bctx_t *b, tres_t *t)
{
    vs_t *vs = t->obj;
    if (t->vs_done)
        return;
    t->vs_done = true;
    if (!vs->vh.routes.n) {
        t->vs_empty = true;
        cfg_addmsg(b, t, false, "virtualHost has no routes: the virtual service serves nothing");
        return;
    }
    flat_t f = { .b = b, .vs = t, .vh_retries = &vs->vh.opts.retries };
    flatten(&f, t, &vs->vh.routes, "virtualHost.routes", NULL, NULL, 0);
    if (f.too_many) {
        /* served partially would be worse than not at all */
        cfg_addmsg(b, t, true, "too many routes after delegation (at most %u per virtual service, %u in all)",
               MAX_ROUTES_PER_VS, MAX_ROUTES_TOTAL);
        f.out.n = 0;
    }
    t->routes = f.out.v;
    t->nroutes = f.out.n;
    rv_route_t *rr = t->routes;
    rv_str_t vsname = cfg_astrf(b, "%s.%s", t->ns, t->name);
    for (uint32_t i = 0; i < t->nroutes; i++) {
        rr[i].vs = vsname;
        if (!rr[i].name.ptr)
            rr[i].name = cfg_astrf(b, "%s.%s.%u", t->ns, t->name, i);
    }
}

/* ---- gateways ---------------------------------------------------------------------- */

static bool sockaddr_for(const char *addr, uint32_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
        return true;
    }
    if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return true;
    }
    return false;
}

static bool is_wildcard(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    return !memcmp(&((const struct sockaddr_in6 *)ss)->sin6_addr, &in6addr_any, sizeof(struct in6_addr));
}

/* Same port, and the same address or a wildcard on either side: the second bind would fail. */
static bool binds_conflict(const rv_listener_cfg_t *a, const rv_listener_cfg_t *c)
{
    if (a->port != c->port)
        return false;
    if (is_wildcard(&a->addr) || is_wildcard(&c->addr))
        return true;
    return a->addrlen == c->addrlen && !memcmp(&a->addr, &c->addr, a->addrlen);
}

typedef struct dom_s {
    const char *d;
    uint32_t vs;            /* index into the gateway's selection */
} dom_t;

static int dom_cmp(const void *x, const void *y)
{
    const dom_t *a = x, *c = y;
    int r = strcmp(a->d, c->d);
    return r ? r : (a->vs > c->vs) - (a->vs < c->vs);
}

/* (domain, service) pairs of the services' last accepted versions, sorted; false on OOM. */
static bool held_domains(bctx_t *b, tres_t **vs, uint32_t n, vec_t *held)
{
    for (uint32_t i = 0; i < n; i++) {
        const vs_t *g = vs[i]->r ? vs[i]->r->good : NULL;
        if (!g)
            continue;
        uint32_t nd = g->vh.domains.n ? g->vh.domains.n : 1;
        for (uint32_t k = 0; k < nd; k++) {
            dom_t *d = cfg_vec_push(b, held, sizeof(dom_t));
            if (!d)
                return false;
            d->d = g->vh.domains.n ? g->vh.domains.v[k] : "*";
            d->vs = i;
        }
    }
    if (held->n > 1)
        qsort(held->v, held->n, sizeof(dom_t), dom_cmp);
    return true;
}

/*
 * Domains must be unique among the virtual services of one gateway. A service whose last
 * accepted version claims the domain was serving it and keeps it: the others claiming it are
 * rejected and left out (drop[i]). When none was serving it, every claimant is (Gloo's
 * rule). When several were (they met on this gateway) and the Gateway itself changed, the
 * Gateway is rejected: it falls back to its last accepted version. Sorting the (domain,
 * service) pairs keeps this O(n log n) for gateways with many services.
 */
static void domain_conflicts(bctx_t *b, tres_t *gt, tres_t **vs, uint32_t n, bool *drop)
{
    vec_t doms = { 0 }, held = { 0 };
    bool have_held = false;
    for (uint32_t i = 0; i < n; i++) {
        const vs_t *v = vs[i]->obj;
        if (vs[i]->vs_empty)
            continue;
        uint32_t nd = v->vh.domains.n ? v->vh.domains.n : 1;
        for (uint32_t k = 0; k < nd; k++) {
            dom_t *d = cfg_vec_push(b, &doms, sizeof(dom_t));
            if (!d)
                goto out;
            d->d = v->vh.domains.n ? v->vh.domains.v[k] : "*";
            d->vs = i;
        }
    }
    if (doms.n > 1)
        qsort(doms.v, doms.n, sizeof(dom_t), dom_cmp);
    dom_t *d = doms.v;
    for (uint32_t i = 0; i < doms.n;) {
        uint32_t j = i + 1;
        while (j < doms.n && !strcmp(d[j].d, d[i].d))
            j++;
        if (j - i > 1 && !have_held) {
            have_held = true;
            if (!held_domains(b, vs, n, &held))
                goto out;
        }
        /* the claimants that were serving the domain (at most two named) */
        uint32_t ninc = 0, inc1 = j, inc2 = j;
        for (uint32_t k = i; j - i > 1 && k < j; k++) {
            if (!held.n || !bsearch(&d[k], held.v, held.n, sizeof(dom_t), dom_cmp))
                continue;
            ninc++;
            if (inc1 == j)
                inc1 = k;
            else if (inc2 == j)
                inc2 = k;
        }
        for (uint32_t k = i; j - i > 1 && k < j; k++) {
            tres_t *me = vs[d[k].vs];
            bool inc = ninc && bsearch(&d[k], held.v, held.n, sizeof(dom_t), dom_cmp);
            if (ninc && !inc) {
                tres_t *holder = vs[d[inc1].vs];
                cfg_addmsg(b, me, true, "domain '%s' is already served by VirtualService %s/%s on Gateway %s/%s", d[k].d,
                       holder->ns, holder->name, gt->ns, gt->name);
            } else if (ninc > 1 && can_fall_back(gt)) {
                cfg_addmsg(b, gt, true, "httpGateway: VirtualServices %s/%s and %s/%s would both serve domain '%s'",
                       vs[d[inc1].vs]->ns, vs[d[inc1].vs]->name, vs[d[inc2].vs]->ns, vs[d[inc2].vs]->name, d[k].d);
            } else if (ninc != 1) {
                tres_t *other = vs[d[ninc ? (k == inc1 ? inc2 : inc1) : (k == i ? i + 1 : i)].vs];
                cfg_addmsg(b, me, true, "domain '%s' is also claimed by VirtualService %s/%s on Gateway %s/%s", d[k].d,
                       other->ns, other->name, gt->ns, gt->name);
            }
            if (!inc || ninc > 1)
                drop[d[k].vs] = true;
        }
        i = j;
    }
out:
    free(doms.v);
    free(held.v);
}

/* VirtualServices gateway g serves, in ns/name order (vector of tres_t *). */
static void select_vss(bctx_t *b, tres_t *gt, const gw_t *g, vec_t *out)
{
    const httpgw_t *h = &g->http;
    if (!h->selector.n && h->vss.n) {
        const ref_t *refs = h->vss.v;
        for (uint32_t i = 0; i < h->vss.n; i++) {
            const char *ns = refs[i].ns && refs[i].ns[0] ? refs[i].ns : gt->ns;
            tres_t *t = lookup(b, RK_VS, ns, refs[i].name);
            if (!t) {
                cfg_addmsg(b, gt, false, "httpGateway.virtualServices[%u]: VirtualService %s/%s %s", i, ns, refs[i].name,
                       ref_problem(b, RK_VS, ns, refs[i].name));
                continue;
            }
            if (cfg_vec_push(b, out, sizeof(tres_t *)))
                ((tres_t **)out->v)[out->n - 1] = t;
        }
        if (out->n > 1)
            qsort(out->v, out->n, sizeof(tres_t *), cfg_tres_cmp);
        /* a service listed twice is served once */
        tres_t **v = out->v;
        uint32_t w = 0;
        for (uint32_t k = 0; k < out->n; k++)
            if (!w || v[w - 1] != v[k])
                v[w++] = v[k];
        out->n = w;
        return;
    }
    bool all_ns = !h->vs_namespaces.n || cfg_in_list(&h->vs_namespaces, "*");
    for (uint32_t i = 0; i < b->nby[RK_VS]; i++) {
        tres_t *t = b->by[RK_VS][i];
        if (!all_ns && !cfg_in_list(&h->vs_namespaces, t->ns))
            continue;
        if (!labels_match(&h->selector, &((vs_t *)t->obj)->meta.labels))
            continue;
        if (cfg_vec_push(b, out, sizeof(tres_t *)))
            ((tres_t **)out->v)[out->n - 1] = t;
    }
}

static void build_listener(bctx_t *b, tres_t *gt, rv_listener_cfg_t *l, uint32_t *route_index)
{
    const gw_t *g = gt->obj;
    vec_t sel = { 0 };
    select_vss(b, gt, g, &sel);
    /* Gloo: an ssl Gateway serves only the services with an sslConfig, a plain one only those
     * without */
    uint32_t kept = 0;
    for (uint32_t i = 0; i < sel.n; i++) {
        tres_t *t = ((tres_t **)sel.v)[i];
        if (((const vs_t *)t->obj)->ssl.h.set == g->ssl)
            ((tres_t **)sel.v)[kept++] = t;
    }
    sel.n = kept;
    tres_t **vs = sel.v;
    bool *drop = sel.n ? calloc(sel.n, sizeof(bool)) : NULL;
    if (sel.n && !drop) {
        b->oom = true;
        free(sel.v);
        return;
    }
    for (uint32_t i = 0; i < sel.n; i++) {
        translate_vs(b, vs[i]);
        if (vs[i]->vs_empty)
            drop[i] = true;
    }
    domain_conflicts(b, gt, vs, sel.n, drop);
    uint32_t n = 0;
    uint64_t total = *route_index;
    for (uint32_t i = 0; i < sel.n; i++) {
        if (!drop[i] && total + vs[i]->nroutes > MAX_SNAPSHOT_ROUTES) {
            cfg_addmsg(b, vs[i], true, "left out of Gateway %s/%s: the config would exceed %u routes", gt->ns, gt->name,
                   MAX_SNAPSHOT_ROUTES);
            drop[i] = true;
        }
        if (!drop[i])
            total += vs[i]->nroutes;
        n += !drop[i];
    }
    uint32_t *chain_of = NULL;
    rv_str_t *src_of = NULL;
    if (g->ssl) {
        chain_of = sel.n ? calloc(sel.n, sizeof(uint32_t)) : NULL;
        src_of = sel.n ? calloc(sel.n, sizeof(rv_str_t)) : NULL;
        if (sel.n && (!chain_of || !src_of)) {
            b->oom = true;
        } else {
            cfg_build_tls(b, gt, l, vs, sel.n, drop, chain_of, src_of);
            n = 0;
            for (uint32_t i = 0; i < sel.n; i++)
                n += !drop[i];
        }
    }
    l->vhosts = cfg_anew(b, n * sizeof(rv_vhost_t));
    for (uint32_t i = 0, k = 0; i < sel.n && l->vhosts; i++) {
        if (drop[i])
            continue;
        tres_t *t = vs[i];
        const vs_t *v = t->obj;
        rv_vhost_t *vh = &l->vhosts[k++];
        vh->name = cfg_astrf(b, "%s.%s", t->ns, t->name);
        if (chain_of) {
            vh->tls_chain = chain_of[i];
            vh->tls_source = src_of[i];
        }
        uint32_t nd = v->vh.domains.n;
        vh->domains = cfg_anew(b, (nd ? nd : 1) * sizeof(rv_str_t));
        if (vh->domains) {
            for (uint32_t d = 0; d < nd; d++)
                vh->domains[d] = cfg_astr(b, v->vh.domains.v[d]);
            if (!nd)
                vh->domains[0] = cfg_astr(b, "*");
            vh->ndomains = nd ? nd : 1;
        }
        conv_headers(b, &v->vh.opts.headers, &vh->headers);
        if (t->nroutes && (vh->routes = cfg_anew(b, t->nroutes * sizeof(rv_route_t)))) {
            memcpy(vh->routes, t->routes, t->nroutes * sizeof(rv_route_t));
            vh->nroutes = t->nroutes;
            bool has_vh_headers = v->vh.opts.headers.h.set;
            for (uint32_t r = 0; r < vh->nroutes; r++) {
                vh->routes[r].index = (*route_index)++;
                vh->routes[r].vhost_headers = has_vh_headers ? &vh->headers : NULL;
            }
        }
    }
    l->nvhosts = l->vhosts ? n : 0;
    free(chain_of);
    free(src_of);
    free(drop);
    free(sel.v);
}

/* Gateway gt's last accepted version binds l's address too: its listener is the one serving it. */
static bool holds_bind(const tres_t *gt, const rv_listener_cfg_t *l)
{
    const gw_t *g = gt->r ? gt->r->good : NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    return g && sockaddr_for(g->bind_address, g->bind_port, &ss, &len) && len == l->addrlen &&
           !memcmp(&ss, &l->addr, len);
}

/* Gateway gt's listener cannot be bound (errno e from the bind check): Rejected saying why. */
static void bind_refused(bctx_t *b, tres_t *gt, const gw_t *g, int e)
{
    if (e == EADDRINUSE)
        cfg_addmsg(b, gt, true, "bindPort %u: address already in use by another process", g->bind_port);
    else if (e == EADDRNOTAVAIL)
        cfg_addmsg(b, gt, true, "bindAddress %s: not an address of this host", g->bind_address);
    else if (e == EACCES)
        cfg_addmsg(b, gt, true, "bindPort %u: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
               g->bind_port);
    else
        cfg_addmsg(b, gt, true, "bindAddress %s port %u cannot be bound: %s", g->bind_address, g->bind_port, strerror(e));
}

/*
 * One listener per Gateway (or the default one) that can have its address: bind conflicts
 * between Gateways and, under rivet run, the bind check decide; refused Gateways are Rejected
 * and left out. Listeners keep the Gateways' namespace/name order.
 */
static void build_listeners(bctx_t *b)
{
    rv_snapshot_t *snap = &b->sp->snap;
    vec_t gws = { 0 };
    if (b->ngw_files == 0) {
        /* Gloo's default Gateway when none exists */
        gw_t *g = &b->defgw_obj;
        g->h.set = true;
        g->bind_address = "::";
        g->bind_port = 8080;
        g->http.h.set = true;
        b->defgw = (tres_t){ .kind = RK_GATEWAY, .ns = b->s->discovery_ns ? b->s->discovery_ns : RV_DEFAULT_NAMESPACE,
                             .name = "gateway-proxy", .obj = g };
        if (cfg_vec_push(b, &gws, sizeof(tres_t *)))
            ((tres_t **)gws.v)[0] = &b->defgw;
        /* and Gloo's default gateway-proxy-ssl, for the services with an sslConfig */
        bool any_ssl = false;
        for (uint32_t i = 0; i < b->nby[RK_VS] && !any_ssl; i++)
            any_ssl = ((const vs_t *)b->by[RK_VS][i]->obj)->ssl.h.set;
        if (any_ssl) {
            gw_t *gs = &b->defgw_ssl_obj;
            gs->h.set = true;
            gs->bind_address = "::";
            gs->bind_port = 8443;
            gs->ssl = true;
            gs->http.h.set = true;
            b->defgw_ssl = b->defgw;
            b->defgw_ssl.name = "gateway-proxy-ssl";
            b->defgw_ssl.obj = gs;
            if (cfg_vec_push(b, &gws, sizeof(tres_t *)))
                ((tres_t **)gws.v)[gws.n - 1] = &b->defgw_ssl;
        }
    } else {
        for (uint32_t i = 0; i < b->nby[RK_GATEWAY]; i++)
            if (cfg_vec_push(b, &gws, sizeof(tres_t *)))
                ((tres_t **)gws.v)[gws.n - 1] = b->by[RK_GATEWAY][i];
    }
    snap->listeners = cfg_anew(b, gws.n * sizeof(rv_listener_cfg_t));
    tres_t **gv = gws.v;
    rv_listener_cfg_t *ls = snap->listeners;
    uint8_t *placed = gws.n ? calloc(gws.n, 1) : NULL;     /* 0 undecided, 1 bound, 2 refused */
    if (gws.n && !placed)
        b->oom = true;
    /*
     * Addresses are claimed first by the Gateways whose last accepted version binds the same
     * one (their listener is serving), then by the others in namespace/name order: a new or
     * edited Gateway never takes an address from one that holds it.
     */
    for (int pass = 0; pass < 2 && ls && placed && !b->oom; pass++) {
        for (uint32_t i = 0; i < gws.n; i++) {
            tres_t *gt = gv[i];
            const gw_t *g = gt->obj;
            rv_listener_cfg_t *l = &ls[i];
            if (pass == 0) {
                memset(l, 0, sizeof(*l));
                l->port = (uint16_t)g->bind_port;
                l->bind_address = cfg_astr(b, g->bind_address);
                l->name = cfg_astrf(b, "%s.%s", gt->ns, gt->name);
                if (!sockaddr_for(g->bind_address, g->bind_port, &l->addr, &l->addrlen)) {
                    cfg_addmsg(b, gt, true, "bindAddress '%s' is not an IP address", g->bind_address);
                    placed[i] = 2;
                    continue;
                }
            }
            if (placed[i] || holds_bind(gt, l) != (pass == 0))
                continue;
            uint32_t k;
            for (k = 0; k < gws.n; k++)
                if (placed[k] == 1 && binds_conflict(&ls[k], l))
                    break;
            int e = 0;
            if (k < gws.n)
                cfg_addmsg(b, gt, true, "bindAddress %s port %u conflicts with Gateway %s/%s (bound to %.*s port %u)",
                       g->bind_address, g->bind_port, gv[k]->ns, gv[k]->name, (int)ls[k].bind_address.len,
                       ls[k].bind_address.ptr, ls[k].port);
            else if (bind_check && (e = bind_check(l)) != 0)
                bind_refused(b, gt, g, e);
            placed[i] = k < gws.n || e ? 2 : 1;
        }
    }
    uint32_t n = 0, route_index = 0;
    for (uint32_t i = 0; i < gws.n && ls && placed && !b->oom; i++) {
        if (placed[i] != 1)
            continue;
        if (n != i)
            ls[n] = ls[i];
        build_listener(b, gv[i], &ls[n], &route_index);
        n++;
    }
    snap->nlisteners = ls ? n : 0;
    snap->nroutes = route_index;
    free(placed);
    free(gws.v);
}

/* UpstreamGroups referencing missing upstreams get a Warning even when no route uses them. */
static void check_ugs(bctx_t *b)
{
    for (uint32_t i = 0; i < b->nby[RK_UG]; i++) {
        tres_t *t = b->by[RK_UG][i];
        const ug_t *g = t->obj;
        const wdest_t *d = g->dests.v;
        for (uint32_t k = 0; k < g->dests.n; k++) {
            char where[64];
            snprintf(where, sizeof(where), "destinations[%u]", k);
            dest_cluster(b, t, true, where, &d[k].dest);
        }
    }
}

/* ---- statuses ---------------------------------------------------------------------- */

static int status_cmp(const void *x, const void *y)
{
    const rv_status_t *a = x, *c = y;
    int r = strcmp(a->kind.ptr, c->kind.ptr);
    if (!r)
        r = strcmp(a->ns.ptr, c->ns.ptr);
    if (!r)
        r = strcmp(a->name.ptr, c->name.ptr);
    if (!r)
        r = strcmp(a->file.ptr, c->file.ptr);
    return r;
}

/* x then y (then z, may be NULL) as one string in the snapshot arena, without length cap. */
static rv_str_t astrcat(bctx_t *b, const char *x, const char *y, const char *z)
{
    size_t lx = strlen(x), ly = strlen(y), lz = z ? strlen(z) : 0;
    char *p = rv_arena_alloc(b->a, lx + ly + lz + 1);
    if (!p) {
        b->oom = true;
        return (rv_str_t){ "", 0 };
    }
    memcpy(p, x, lx);
    memcpy(p + lx, y, ly);
    if (lz)
        memcpy(p + lx + ly, z, lz);
    p[lx + ly + lz] = '\0';
    return (rv_str_t){ p, lx + ly + lz };
}

static void build_statuses(bctx_t *b)
{
    rv_snapshot_t *snap = &b->sp->snap;
    bool settings = b->s->settings_file || b->s->rejected;
    uint32_t n = b->nall + b->ndisc + (settings ? 1 : 0) + (b->defgw.rej ? 1 : 0) + (b->defgw_ssl.rej ? 1 : 0);
    snap->statuses = cfg_anew(b, n * sizeof(rv_status_t));
    if (!snap->statuses)
        return;
    uint32_t k = 0;
    if (settings) {
        /* a refused newer Settings file: the settings in force are the previous ones */
        rv_status_t *st = &snap->statuses[k++];
        st->kind = cfg_astr(b, "Settings");
        st->ns = cfg_astr(b, b->s->settings_ns ? b->s->settings_ns : RV_DEFAULT_NAMESPACE);
        st->name = cfg_astr(b, "default");
        st->file = cfg_astr(b, b->s->settings_file);
        st->state = b->s->rejected ? RV_STATE_REJECTED : RV_STATE_ACCEPTED;
        st->reason = cfg_astr(b, b->s->rejected ? b->s->rejected : "");
        snap->nrejected += st->state == RV_STATE_REJECTED;
    }
    if (b->defgw.rej) {
        /* the implicit Gateway has a status only when it cannot serve (its port is taken) */
        rv_status_t *st = &snap->statuses[k++];
        st->kind = cfg_astr(b, "Gateway");
        st->ns = cfg_astr(b, b->defgw.ns);
        st->name = cfg_astr(b, b->defgw.name);
        st->file = cfg_astr(b, "");
        st->state = RV_STATE_REJECTED;
        st->reason = astrcat(b, b->defgw.rej, " (the default Gateway, served when no Gateway exists)", NULL);
        snap->nrejected++;
    }
    if (b->defgw_ssl.rej) {
        rv_status_t *st = &snap->statuses[k++];
        st->kind = cfg_astr(b, "Gateway");
        st->ns = cfg_astr(b, b->defgw_ssl.ns);
        st->name = cfg_astr(b, b->defgw_ssl.name);
        st->file = cfg_astr(b, "");
        st->state = RV_STATE_REJECTED;
        st->reason = astrcat(b, b->defgw_ssl.rej, " (the default ssl Gateway, served when no Gateway exists)", NULL);
        snap->nrejected++;
    }
    for (uint32_t i = 0; i < b->nall; i++) {
        tres_t *t = &b->all[i];
        rv_status_t *st = &snap->statuses[k++];
        st->kind = cfg_astr(b, cfg_kinds[t->kind].kind);
        st->ns = cfg_astr(b, t->ns);
        st->name = cfg_astr(b, t->name);
        st->file = cfg_astr(b, t->file);
        if (t->r && t->r->error) {
            st->state = RV_STATE_REJECTED;
            st->reason = t->obj ? cfg_astrf(b, "%s (the last accepted version keeps serving)", t->r->error)
                                : cfg_astr(b, t->r->error);
        } else if (t->r && t->r->use_good) {
            /* the newest version was refused by translation; the last accepted one serves */
            st->state = RV_STATE_REJECTED;
            st->reason = astrcat(b, t->r->fb_reason ? t->r->fb_reason : "",
                                 t->rej ? " (the last accepted version keeps serving, with problems: "
                                        : " (the last accepted version keeps serving)",
                                 t->rej ? t->rej : NULL);
            if (t->rej)
                st->reason = astrcat(b, st->reason.ptr, ")", NULL);
        } else if (t->rej) {
            st->state = RV_STATE_REJECTED;
            st->reason = cfg_astr(b, t->rej);
        } else if (t->warn) {
            st->state = RV_STATE_WARNING;
            st->reason = cfg_astr(b, t->warn);
        } else {
            st->state = RV_STATE_ACCEPTED;
            st->reason = cfg_astr(b, "");
        }
        snap->nrejected += st->state == RV_STATE_REJECTED;
    }
    for (uint32_t i = 0; i < b->ndisc; i++) {
        tres_t *t = &b->disc[i];
        rv_status_t *st = &snap->statuses[k++];
        st->kind = cfg_astr(b, "Upstream");
        st->ns = cfg_astr(b, t->ns);
        st->name = cfg_astr(b, t->name);
        st->file = cfg_astr(b, t->file);
        st->state = t->warn ? RV_STATE_WARNING : RV_STATE_ACCEPTED;
        st->reason = cfg_astr(b, t->warn ? t->warn : "");
    }
    snap->nstatuses = k;
    if (!b->oom && k > 1)
        qsort(snap->statuses, k, sizeof(rv_status_t), status_cmp);
}

/* ---- snapshot life cycle ------------------------------------------------------------- */

static void free_regexes(rv_snapshot_t *snap)
{
    snap_priv_t *sp = (snap_priv_t *)snap;
    for (uint32_t i = 0; i < sp->nre; i++)
        rv_regex_free(sp->re[i]);
    free(sp->re);
    free(sp->pat);
    sp->re = NULL;
    sp->pat = NULL;
    sp->nre = sp->capre = 0;
}

/* The snapshot's free hook: regex codes and upstream TLS contexts. */
static void free_snap_extras(rv_snapshot_t *snap)
{
    free_regexes(snap);
    cfg_free_tls((snap_priv_t *)snap);
    cfg_free_dtls(snap);
}

void rv_snapshot_ref(rv_snapshot_t *snap)
{
    atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
}

void rv_snapshot_release(rv_snapshot_t *snap)
{
    if (!snap)
        return;
    if (atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (snap->free_hook)
        snap->free_hook(snap);
    free_regexes(snap);     /* harmless after the hook: it leaves nothing behind */
    rv_arena_free(&snap->arena);
    free(snap);
}

const char *rv_state_name(int state)
{
    switch (state) {
    case RV_STATE_ACCEPTED:
        return "Accepted";
    case RV_STATE_REJECTED:
        return "Rejected";
    case RV_STATE_WARNING:
        return "Warning";
    default:
        return "Pending";
    }
}

static int res_order(const void *x, const void *y)
{
    const res_t *a = *(res_t *const *)x, *c = *(res_t *const *)y;
    if (a->kind != c->kind)
        return a->kind - c->kind;
    int r = strcmp(a->ns, c->ns);
    if (!r)
        r = strcmp(a->name, c->name);
    return r ? r : strcmp(a->path, c->path);
}

int rv_snapshot_build(rv_store_t *st, const rv_settings_t *s, rv_snapshot_t **out)
{
    return rv_snapshot_build_disc(st, s, NULL, false, out);
}

bool rv_snapshot_uses_consul(const rv_snapshot_t *snap)
{
    return ((const snap_priv_t *)snap)->uses_consul;
}

/*
 * One build of a snapshot from the store (see rv_snapshot_build_disc). Each resource is
 * translated in its newest decoded version, or in its last accepted one when a previous round
 * set use_good. Unless last, a version refused here whose resource has an accepted one sets
 * use_good and *again (the caller builds again); otherwise the versions accepted here become
 * the last accepted ones.
 */
static int build_once(rv_store_t *st, const rv_settings_t *s, const rv_disc_view_t *view, bool discover, bool last,
                      rv_snapshot_t **out, bool *again)
{
    bctx_t b = { .s = s, .st = st, .view = view, .discover = discover };
    res_t **order = NULL;
    int rc = RV_ENOMEM;

    *out = NULL;
    b.sp = calloc(1, sizeof(snap_priv_t));
    if (!b.sp)
        return RV_ENOMEM;
    rv_arena_init(&b.sp->snap.arena, 64 * 1024);
    atomic_init(&b.sp->snap.refs, 1);
    b.sp->snap.free_hook = free_snap_extras;
    b.sp->snap.version = ++st->builds;
    b.a = &b.sp->snap.arena;

    if (st->nres) {
        order = malloc(st->nres * sizeof(*order));
        b.all = calloc(st->nres, sizeof(tres_t));
        for (int k = 0; k < RK_COUNT; k++)
            b.by[k] = calloc(st->nres, sizeof(tres_t *));
        if (!order || !b.all || !b.by[0] || !b.by[1] || !b.by[2] || !b.by[3] || !b.by[4] || !b.by[5])
            goto out;
        memcpy(order, st->res, st->nres * sizeof(*order));
        qsort(order, st->nres, sizeof(*order), res_order);
    }
    for (uint32_t i = 0; i < st->nres; i++) {
        res_t *r = order[i];
        tres_t *t = &b.all[b.nall++];
        t->kind = r->kind;
        t->ns = r->ns;
        t->name = r->name;
        t->file = r->path;
        t->rel = r->rel;
        t->r = r;
        t->obj = r->use_good && r->good ? r->good : r->obj;
        b.ngw_files += r->kind == RK_GATEWAY;
        if (i > 0 && order[i - 1]->kind == r->kind && !strcmp(order[i - 1]->ns, r->ns) &&
            !strcmp(order[i - 1]->name, r->name)) {
            t->dup = true;
            cfg_addmsg(&b, t, true, "%s %s/%s is already defined by %s; this file is ignored", cfg_kinds[r->kind].kind,
                   r->ns, r->name, order[i - 1]->rel);
            continue;   /* the first file (in path order) stays the one in use */
        }
        if (t->obj)
            b.by[t->kind][b.nby[t->kind]++] = t;
    }
    for (int k = 0; k < RK_COUNT; k++)
        if (b.nby[k])
            qsort(b.by[k], b.nby[k], sizeof(tres_t *), cfg_tres_cmp);

    cfg_build_clusters(&b);
    check_ugs(&b);
    if (!b.oom)
        build_listeners(&b);
    /* VirtualServices no Gateway selected still get their routes checked (and statuses) */
    for (uint32_t i = 0; i < b.nby[RK_VS] && !b.oom; i++)
        translate_vs(&b, b.by[RK_VS][i]);
    cfg_finish_clusters(&b);
    b.sp->uses_consul = b.uses_consul;
    if (b.csels.n && !b.oom) {
        b.sp->csel = cfg_anew(&b, b.csels.n * sizeof(csel_t));
        if (b.sp->csel) {
            memcpy(b.sp->csel, b.csels.v, b.csels.n * sizeof(csel_t));
            b.sp->ncsel = b.csels.n;
        }
    }
    b.sp->has_view = view != NULL;
    b.sp->view_fp = view ? rv_disc_view_fingerprint(view) : 0;
    if (!b.oom)
        build_statuses(&b);
    if (!b.oom && cfg_dump_json(&b.sp->snap) != 0)
        b.oom = true;
    if (b.oom)
        goto out;
    for (uint32_t i = 0; i < b.nall && !last; i++) {
        tres_t *t = &b.all[i];
        if (!t->rej || !can_fall_back(t))
            continue;
        char *why = strdup(t->rej);
        if (!why)
            goto out;
        free(t->r->fb_reason);
        t->r->fb_reason = why;
        t->r->use_good = true;
        *again = true;
    }
    for (uint32_t i = 0; i < b.nall && !*again; i++) {
        tres_t *t = &b.all[i];
        if (t->r && !t->dup && !t->rej && !t->r->use_good)
            cfg_res_accept(t->r);
    }
    *out = &b.sp->snap;
    b.sp = NULL;
    rc = 0;
out:
    for (uint32_t i = 0; i < b.nall; i++) {
        free(b.all[i].rej);
        free(b.all[i].warn);
        free(b.all[i].routes);
    }
    free(b.all);
    free(b.defgw.rej);
    free(b.defgw.warn);
    free(b.defgw_ssl.rej);
    free(b.defgw_ssl.warn);
    for (uint32_t i = 0; i < b.ndisc; i++) {
        free(b.disc[i].rej);
        free(b.disc[i].warn);
    }
    free(b.disc);
    free(b.clusters.v);
    free(b.cdests.v);
    free(b.csels.v);
    for (int k = 0; k < RK_COUNT; k++)
        free(b.by[k]);
    free(order);
    if (b.sp)
        rv_snapshot_release(&b.sp->snap);
    if (rc != 0)
        rv_log_error("config: snapshot build failed: out of memory");
    return rc;
}

int rv_snapshot_build_disc(rv_store_t *st, const rv_settings_t *s, const rv_disc_view_t *view, bool discover,
                           rv_snapshot_t **out)
{
    for (uint32_t i = 0; i < st->nres; i++) {
        res_t *r = st->res[i];
        r->use_good = false;
        free(r->fb_reason);
        r->fb_reason = NULL;
    }
    /* a fallback can bring back a version that meets another conflict: a few rounds at most */
    for (int round = 1;; round++) {
        bool again = false;
        int rc = build_once(st, s, view, discover, round == MAX_BUILD_ROUNDS, out, &again);
        if (rc != 0 || !again)
            return rc;
        rv_snapshot_release(*out);
        *out = NULL;
    }
}
