/*
 * translate-clusters.c - Upstreams to clusters: static hosts (resolved here, on the control
 * thread), Consul-fed clusters (explicit consul Upstreams, discovered services, route consul
 * destinations) from the discovery view, and the endpoint sets published when only Consul
 * instances change (no re-translation, no route-table rebuild).
 */
#include <openssl/crypto.h>

#include "config/secret.h"
#include "config/translate-internal.h"
#include "tls/client.h"

/* ---- clusters ---------------------------------------------------------------------- */

static int add_endpoint(bctx_t *b, vec_t *eps, const struct sockaddr *sa, socklen_t len, const shost_t *h)
{
    rv_endpoint_t *e;
    for (uint32_t i = 0; i < eps->n; i++) {
        e = (rv_endpoint_t *)eps->v + i;
        if (e->addrlen == len && !memcmp(&e->addr, sa, len) && !strcmp(e->hostname.ptr, h->addr))
            return 0;   /* the same address twice (DNS answers) */
    }
    if (!(e = cfg_vec_push(b, eps, sizeof(*e))))
        return -1;
    memcpy(&e->addr, sa, len);
    e->addrlen = len;
    e->weight = h->weight ? h->weight : 1;
    e->hostname = cfg_astr(b, h->addr);
    if (h->sni_addr)
        e->sni = cfg_astr(b, h->sni_addr);
    bool v6 = strchr(h->addr, ':') != NULL;
    e->host_header = v6 ? cfg_astrf(b, "[%s]", h->addr) : e->hostname;
    if (h->port == 80)
        e->authority = v6 ? cfg_astrf(b, "[%s]", h->addr) : cfg_astr(b, h->addr);
    else
        e->authority = v6 ? cfg_astrf(b, "[%s]:%u", h->addr, h->port) : cfg_astrf(b, "%s:%u", h->addr, h->port);
    return 0;
}

/* Resolve one static host into endpoints (getaddrinfo for names: control thread only). */
static void resolve_host(bctx_t *b, tres_t *t, vec_t *eps, const shost_t *h, uint32_t idx)
{
    struct sockaddr_in in4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)h->port) };
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)h->port) };
    if (inet_pton(AF_INET, h->addr, &in4.sin_addr) == 1) {
        add_endpoint(b, eps, (struct sockaddr *)&in4, sizeof(in4), h);
        return;
    }
    if (inet_pton(AF_INET6, h->addr, &in6.sin6_addr) == 1) {
        add_endpoint(b, eps, (struct sockaddr *)&in6, sizeof(in6), h);
        return;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(h->addr, NULL, &hints, &res);
    if (rc != 0 || !res) {
        cfg_addmsg(b, t, false, "static.hosts[%u]: host name '%s' does not resolve (%s); endpoint left out", idx,
               h->addr, rc ? gai_strerror(rc) : "no address");
        if (res)
            freeaddrinfo(res);
        return;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in s4;
            memcpy(&s4, ai->ai_addr, sizeof(s4));
            s4.sin_port = htons((uint16_t)h->port);
            add_endpoint(b, eps, (struct sockaddr *)&s4, sizeof(s4), h);
        } else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 s6;
            memcpy(&s6, ai->ai_addr, sizeof(s6));
            s6.sin6_port = htons((uint16_t)h->port);
            add_endpoint(b, eps, (struct sockaddr *)&s6, sizeof(s6), h);
        }
    }
    freeaddrinfo(res);
}

/* A new cluster at the end of b->clusters (its index is stable); NULL on OOM. */
static rv_cluster_t *new_cluster(bctx_t *b, uint32_t *index)
{
    *index = b->clusters.n;
    rv_cluster_t *c = cfg_vec_push(b, &b->clusters, sizeof(rv_cluster_t));
    if (c) {
        /* circuit breakers: Settings.gloo.circuitBreakers, else Envoy's defaults */
        const rv_settings_t *s = b->s;
        c->index = *index;
        c->cb = (rv_cb_limits_t){ true, s->has_cb_max_connections ? s->cb_max_connections : RV_CB_MAX_CONNECTIONS,
                                  s->has_cb_max_pending ? s->cb_max_pending : RV_CB_MAX_PENDING,
                                  s->has_cb_max_requests ? s->cb_max_requests : RV_CB_MAX_REQUESTS,
                                  s->has_cb_max_retries ? s->cb_max_retries : RV_CB_MAX_RETRIES };
    }
    return c;
}

/* Whole seconds of a keepalive duration, rounded up (Gloo's conversion). */
static uint32_t ka_secs(int64_t ms)
{
    return (uint32_t)((ms + 999) / 1000);
}

static uint64_t mix64(uint64_t h, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return h;
}

/* connectionConfig of an Upstream into its cluster (decoded and checked by schema.c). The pool
 * key digest stays 0 while every setting is the default, so such clusters share connections
 * to a common address as before. */
static void conn_settings(rv_cluster_t *c, const conncfg_t *k)
{
    rv_conn_cfg_t *o = &c->conn;
    if (!k->h.set)
        return;
    if (k->has_connect)
        o->connect_timeout_ms = k->connect_ms;
    o->max_requests = k->max_requests;
    if (k->ka.h.set) {
        o->keepalive = true;
        o->ka_probes = k->ka.probes;
        o->ka_time_s = k->ka.has_time ? ka_secs(k->ka.time_ms) : 0;
        o->ka_intvl_s = k->ka.has_intvl ? ka_secs(k->ka.intvl_ms) : 0;
    }
    if (k->http.has_idle)
        o->idle_timeout_ms = k->http.idle_ms ? k->http.idle_ms : -1;   /* 0s: never reaped (Envoy) */
    if (k->http.max_headers)
        o->max_headers = k->http.max_headers;
    /* connect_timeout and max_headers act per request, not per connection: not in the key */
    if (o->idle_timeout_ms == RV_UP_IDLE_TIMEOUT_MS)
        o->idle_timeout_ms = 0;
    if (!o->idle_timeout_ms && !o->max_requests && !o->keepalive)
        return;
    uint64_t h = 0xcbf29ce484222325ull;
    h = mix64(h, (uint64_t)o->idle_timeout_ms);
    h = mix64(h, o->max_requests);
    h = mix64(h, o->keepalive);
    h = mix64(h, o->ka_probes);
    h = mix64(h, o->ka_time_s);
    h = mix64(h, o->ka_intvl_s);
    o->pool_key = h ? h : 1;
}

static void set_endpoints(bctx_t *b, rv_cluster_t *c, vec_t *eps)
{
    if (!eps->n)
        return;
    c->eps = cfg_anew(b, eps->n * sizeof(rv_endpoint_t));
    if (c->eps)
        memcpy(c->eps, eps->v, eps->n * sizeof(rv_endpoint_t));
    c->neps = c->eps ? eps->n : 0;
    for (uint32_t k = 0; k < c->neps; k++)
        c->total_weight += c->eps[k].weight;
}

static bool str_in(const rv_str_t *l, uint32_t n, const char *s)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(l[i].ptr, s))
            return true;
    return false;
}

/* Which instances of a Consul service a cluster takes. */
typedef struct isel_s {
    const strs_t *dcs;          /* empty: every datacenter */
    const strs_t *want;         /* every one of these tags */
    const strs_t *deny;         /* none of these (may be NULL) */
} isel_t;

static bool inst_selected(const rv_disc_inst_t *in, const isel_t *f)
{
    if (f->dcs && f->dcs->n && !cfg_in_list(f->dcs, in->dc.ptr))
        return false;
    for (uint32_t i = 0; f->want && i < f->want->n; i++)
        if (!str_in(in->tags, in->ntags, f->want->v[i]))
            return false;
    for (uint32_t i = 0; f->deny && i < f->deny->n; i++)
        if (str_in(in->tags, in->ntags, f->deny->v[i]))
            return false;
    return true;
}

/* Endpoints of the selected instances; passing ones only when the view filters on health.
 * Raw form: hostname points into the view, authority.ptr is NULL and authority.len holds the
 * port, until consul_strings() gives them their strings in the arena. */
static uint32_t consul_collect(bctx_t *b, const rv_disc_svc_t *svc, const isel_t *f, vec_t *eps,
                               uint32_t *nselected)
{
    uint32_t nsel = 0;
    for (uint32_t i = 0; i < svc->ninsts && !b->oom; i++) {
        const rv_disc_inst_t *in = &svc->insts[i];
        if (!inst_selected(in, f))
            continue;
        nsel++;
        if (b->view->health && !in->passing)
            continue;
        for (uint32_t k = 0; k < in->naddrs; k++) {
            rv_endpoint_t *e = cfg_vec_push(b, eps, sizeof(*e));
            if (!e)
                break;
            memcpy(&e->addr, &in->addrs[k].sa, in->addrs[k].len);
            e->addrlen = in->addrs[k].len;
            e->weight = 1;
            e->hostname = in->host;     /* the view outlives the build: copied below */
            e->authority = (rv_str_t){ NULL, in->port };
        }
    }
    if (nselected)
        *nselected = nsel;
    return eps->n;
}

/* Strings of consul_collect()'s raw endpoints, into the arena (the view is released
 * independently of the snapshot or endpoint set). */
static void consul_strings(bctx_t *b, vec_t *eps)
{
    for (uint32_t k = 0; k < eps->n && !b->oom; k++) {
        rv_endpoint_t *e = (rv_endpoint_t *)eps->v + k;
        if (e->authority.ptr)
            continue;
        unsigned port = (unsigned)e->authority.len;
        bool v6 = memchr(e->hostname.ptr, ':', e->hostname.len) != NULL;
        rv_str_t h = e->hostname;
        e->hostname = rv_arena_str(b->a, h);
        e->host_header = v6 ? cfg_astrf(b, "[%.*s]", (int)h.len, h.ptr) : e->hostname;
        if (port == 80)
            e->authority = v6 ? cfg_astrf(b, "[%.*s]", (int)h.len, h.ptr) : e->hostname;
        else
            e->authority = v6 ? cfg_astrf(b, "[%.*s]:%u", (int)h.len, h.ptr, port)
                              : cfg_astrf(b, "%.*s:%u", (int)h.len, h.ptr, port);
        if (!e->hostname.ptr)
            b->oom = true;
    }
}

/* consul_collect() then consul_strings(). */
static uint32_t consul_endpoints(bctx_t *b, const rv_disc_svc_t *svc, const isel_t *f, vec_t *eps,
                                 uint32_t *nselected)
{
    consul_collect(b, svc, f, eps, nselected);
    consul_strings(b, eps);
    return eps->n;
}

/* Whether raw endpoints (consul_collect) are exactly c's (same order, address, host, port). */
static bool same_raw_eps(const vec_t *eps, const rv_cluster_t *c)
{
    if (eps->n != c->neps)
        return false;
    for (uint32_t k = 0; k < eps->n; k++) {
        const rv_endpoint_t *e = (const rv_endpoint_t *)eps->v + k, *o = &c->eps[k];
        if (e->addrlen != o->addrlen || memcmp(&e->addr, &o->addr, e->addrlen) != 0 ||
            !rv_str_eq(e->hostname, o->hostname))
            return false;
    }
    return true;
}

/* Why a consul cluster has no endpoint (for a Warning), given the selection counts. */
static const char *consul_problem(bctx_t *b, const rv_disc_svc_t *svc, uint32_t nsel)
{
    if (!b->view)
        return "Consul service discovery is not running (Settings consul.serviceDiscovery or rivet run "
               "--consul-discovery)";
    if (!b->view->synced && (!svc || !svc->known))
        return "the Consul catalog has not been read yet";
    if (!svc)
        return "the Consul catalog has no such service";
    if (!nsel)
        return "no instance of the service matches (datacenters and tags)";
    if (b->view->health)
        return "no instance passes its Consul health checks";
    return "no instance address resolves";
}

/* A copy of l in the snapshot arena (b->oom on failure). */
static strs_t astrs(bctx_t *b, const strs_t *l)
{
    strs_t r = { 0 };
    if (!l || !l->n)
        return r;
    r.v = cfg_anew(b, l->n * sizeof(char *));
    if (!r.v)
        return (strs_t){ 0 };
    for (uint32_t i = 0; i < l->n; i++)
        r.v[i] = (char *)cfg_astr(b, l->v[i]).ptr;
    r.n = l->n;
    return r;
}

/* Remember how Consul-fed cluster idx selects instances, for rv_endpoint_set_build. */
static void record_csel(bctx_t *b, uint32_t idx, int kind, const char *service, const strs_t *dcs,
                        const strs_t *want, const strs_t *deny, bool empty, bool nomatch)
{
    csel_t *cs = cfg_vec_push(b, &b->csels, sizeof(*cs));
    if (!cs)
        return;
    cs->cluster = idx;
    cs->kind = kind;
    cs->service = cfg_astr(b, service).ptr;
    cs->dcs = astrs(b, dcs);
    cs->want = astrs(b, want);
    cs->deny = astrs(b, deny);
    cs->empty = empty;
    cs->nomatch = nomatch;
}

static void consul_cluster(bctx_t *b, tres_t *t, rv_cluster_t *c, const cus_t *cu)
{
    b->uses_consul = true;
    const rv_disc_svc_t *svc = b->view ? rv_disc_find(b->view, cu->service) : NULL;
    vec_t eps = { 0 };
    uint32_t nsel = 0;
    if (svc) {
        isel_t f = { &cu->dcs, &cu->instance_tags, &cu->blacklist };
        consul_endpoints(b, svc, &f, &eps, &nsel);
    }
    set_endpoints(b, c, &eps);
    record_csel(b, c->index, CSEL_UPSTREAM, cu->service, &cu->dcs, &cu->instance_tags, &cu->blacklist,
                c->neps == 0, nsel == 0);
    if (!c->neps && !b->oom)
        cfg_addmsg(b, t, false, "consul service '%s': %s; requests to this upstream get 503", cu->service,
               consul_problem(b, svc, nsel));
    free(eps.v);
}

/* The Upstream Gloo discovers from a Consul service: every datacenter, every instance. */
static void discovered_cluster(bctx_t *b, tres_t *t, rv_cluster_t *c)
{
    static const strs_t none = { 0 };
    const rv_disc_svc_t *svc = t->dsvc;
    vec_t eps = { 0 };
    uint32_t nsel = 0;
    isel_t f = { &none, &none, NULL };
    consul_endpoints(b, svc, &f, &eps, &nsel);
    set_endpoints(b, c, &eps);
    record_csel(b, c->index, CSEL_DISCOVERED, svc->name.ptr, NULL, NULL, NULL, c->neps == 0, nsel == 0);
    if (!c->neps && !b->oom)
        cfg_addmsg(b, t, false, "consul service '%s': %s; requests to this upstream get 503", svc->name.ptr,
               consul_problem(b, svc, nsel));
    free(eps.v);
}

/*
 * One tres_t per Consul service, named as Gloo names discovered Upstreams, in the discovery
 * namespace; names taken by a user's Upstream, or by another service whose name sanitises the
 * same way, are left out (Warning on the one that keeps the name).
 */
static void collect_discovered(bctx_t *b)
{
    const rv_disc_view_t *v = b->view;
    if (!b->discover || !v || !v->nsvcs)
        return;
    b->disc = calloc(v->nsvcs, sizeof(tres_t));
    if (!b->disc) {
        b->oom = true;
        return;
    }
    for (uint32_t i = 0; i < v->nsvcs && !b->oom; i++) {
        char nm[128];
        rv_disc_upstream_name(v->svcs[i].name.ptr, nm, sizeof(nm));
        tres_t *t = &b->disc[b->ndisc];
        t->kind = RK_US;
        t->ns = b->s->discovery_ns;
        t->name = cfg_astr(b, nm).ptr;
        t->file = cfg_astrf(b, "consul:%s", v->svcs[i].name.ptr).ptr;
        t->rel = t->file;
        t->dsvc = &v->svcs[i];
        if (!t->name || !t->file)
            return;
        tres_t key = { .ns = t->ns, .name = t->name }, *kp = &key;
        if (bsearch(&kp, b->by[RK_US], b->nby[RK_US], sizeof(tres_t *), cfg_tres_cmp))
            continue;   /* the user's Upstream of that name wins */
        b->ndisc++;
    }
    qsort(b->disc, b->ndisc, sizeof(tres_t), cfg_disc_cmp);
    uint32_t k = 0;
    for (uint32_t i = 0; i < b->ndisc; i++) {
        if (k && !strcmp(b->disc[k - 1].name, b->disc[i].name)) {
            cfg_addmsg(b, &b->disc[k - 1], false, "consul services '%s' and '%s' have the same Upstream name; "
                   "'%s' is not discovered", b->disc[k - 1].dsvc->name.ptr, b->disc[i].dsvc->name.ptr,
                   b->disc[i].dsvc->name.ptr);
            free(b->disc[i].rej);
            free(b->disc[i].warn);
            continue;
        }
        b->disc[k++] = b->disc[i];
    }
    b->ndisc = k;
}

/* ---- upstream TLS ------------------------------------------------------------------- */

void cfg_free_tls(snap_priv_t *sp)
{
    for (uint32_t i = 0; i < sp->ntls; i++)
        rv_tls_client_free(sp->tls[i]);
    free(sp->tls);
    sp->tls = NULL;
    sp->ntls = sp->captls = 0;
}

/* One file of sslFiles, read on the control thread and recorded for the rotation watch. 0, or
 * -1 with the reason in why (or b->oom). */
static int read_pem(bctx_t *b, const char *field, const char *path, char **buf, size_t *len, char *why,
                    size_t whylen)
{
    cfg_tls_note_file(b, path);     /* watched: a rotated file rebuilds within a second */
    int rc = cfg_read_file(path, buf, len);
    if (rc == 0)
        return 0;
    if (rc == RV_ENOMEM)
        b->oom = true;
    else
        snprintf(why, whylen, "sslFiles.%s: cannot read %s: %s", field, path,
                 rc == RV_ENOTFOUND ? "no such file" : rc == RV_ETOOBIG ? "file is larger than 4 MiB" : strerror(errno));
    return -1;
}

static void wipe_free(char *p, size_t n)
{
    if (p)
        OPENSSL_cleanse(p, n);
    free(p);
}

/* The secret ns/name from the store's secret sources (rv_store_secret). */
static const rv_secret_t *lookup_secret(bctx_t *b, const char *ns, const char *name, const char **why)
{
    *why = NULL;
    if (!b->st) {
        *why = "cannot be read here (no secret source)";
        return NULL;
    }
    return rv_store_secret(b->st, ns, name, why);
}

/* ---- last working material -----------------------------------------------------------
 * Per Upstream (ns/name), the PEM its client context was last built from (control thread
 * only). When the material becomes unusable - a rotation caught half way (new certificate,
 * old key), a deleted file, a broken secret - the Upstream is Rejected with the reason and
 * its last working material keeps serving (with the current parameters), rather than the
 * upstream losing every endpoint. Entries live until the process ends; keys are wiped when
 * replaced. The same policy as the downstream contexts (translate-tls.c). */

typedef struct ulg_s {
    char *us;                       /* "ns/name" */
    char *cert, *key, *ca;
    size_t cert_len, key_len, ca_len;
} ulg_t;

static ulg_t *ulg;
static uint32_t nulg, capulg;

static ulg_t *ulg_find(const tres_t *t, bool create)
{
    char k[600];
    snprintf(k, sizeof(k), "%s/%s", t->ns, t->name);
    for (uint32_t i = 0; i < nulg; i++)
        if (!strcmp(ulg[i].us, k))
            return &ulg[i];
    if (!create)
        return NULL;
    if (nulg == capulg) {
        uint32_t nc = capulg ? capulg * 2 : 8;
        ulg_t *v = realloc(ulg, nc * sizeof(*v));
        if (!v)
            return NULL;
        ulg = v;
        capulg = nc;
    }
    ulg_t *e = &ulg[nulg];
    memset(e, 0, sizeof(*e));
    if (!(e->us = strdup(k)))
        return NULL;
    nulg++;
    return e;
}

static char *dup_mem(const char *p, size_t n)
{
    char *d = p ? malloc(n + 1) : NULL;
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static void ulg_clear(ulg_t *e)
{
    wipe_free(e->cert, e->cert_len);
    wipe_free(e->key, e->key_len);
    wipe_free(e->ca, e->ca_len);
    e->cert = e->key = e->ca = NULL;
    e->cert_len = e->key_len = e->ca_len = 0;
}

/* Remember o's material as t's working one (best effort: nothing on OOM). */
static void ulg_store(const tres_t *t, const rv_tls_client_opts_t *o)
{
    ulg_t *e = ulg_find(t, true);
    if (!e)
        return;
    ulg_clear(e);
    e->cert = dup_mem(o->cert, o->cert_len);
    e->key = dup_mem(o->key, o->key_len);
    e->ca = dup_mem(o->ca, o->ca_len);
    e->cert_len = o->cert ? o->cert_len : 0;
    e->key_len = o->key ? o->key_len : 0;
    e->ca_len = o->ca ? o->ca_len : 0;
    if ((o->cert && !e->cert) || (o->key && !e->key) || (o->ca && !e->ca))
        ulg_clear(e);
}

/* Register c with the snapshot (freed by its hook). false (c freed, b->oom) on OOM. */
static bool keep_ctx(bctx_t *b, rv_tls_client_t *c)
{
    snap_priv_t *sp = b->sp;
    if (sp->ntls == sp->captls) {
        uint32_t cap = sp->captls ? sp->captls * 2 : 8;
        void *nv = realloc(sp->tls, cap * sizeof(*sp->tls));
        if (!nv) {
            rv_tls_client_free(c);
            b->oom = true;
            return false;
        }
        sp->tls = nv;
        sp->captls = cap;
    }
    sp->tls[sp->ntls++] = c;
    return true;
}

/*
 * The TLS client context of Upstream t (sslConfig, or static.useTls alone: system trust
 * store, no client certificate). Returns it (registered with the snapshot), or NULL with t
 * Rejected naming the secret or file and the problem (or b->oom). When the material is
 * unusable but t had working material before, t is Rejected and the context is built from
 * that material (*stale set to a digest of the reason, never 0).
 */
static rv_tls_client_t *upstream_tls(bctx_t *b, tres_t *t, const us_t *u, uint64_t *stale)
{
    const ussl_t *ss = &u->ssl;
    rv_tls_client_opts_t o = { 0 };
    char *fcert = NULL, *fkey = NULL, *fca = NULL, src[3][600], why[1000];
    size_t lcert = 0, lkey = 0, lca = 0;
    rv_tls_client_t *c = NULL;
    bool material = true;   /* the material could be read (the failure, if any, is the build's) */
    *stale = 0;
    why[0] = '\0';
    if (ss->secret.h.set) {
        const char *ns = ss->secret.ns && ss->secret.ns[0] ? ss->secret.ns : t->ns, *sw = NULL;
        const rv_secret_t *sec = lookup_secret(b, ns, ss->secret.name, &sw);
        const char *unread = sec || sw || !b->st ? NULL : rv_store_secrets_unread(b->st);
        if (!sec)
            snprintf(why, sizeof(why), "sslConfig.secretRef: secret %s/%s %s%s%s%s", ns, ss->secret.name,
                     sw ? sw : "not found", unread ? " (" : "", unread ? unread : "", unread ? ")" : "");
        else if (sec->kind != RV_SECRET_TLS)
            snprintf(why, sizeof(why), "sslConfig.secretRef: secret %s/%s is not a tls secret", ns, ss->secret.name);
        else if (!sec->cert_chain != !sec->private_key)
            snprintf(why, sizeof(why), "sslConfig.secretRef: secret %s/%s has a %s but no %s", ns, ss->secret.name,
                     sec->cert_chain ? "certChain" : "privateKey", sec->cert_chain ? "privateKey" : "certChain");
        if (why[0]) {
            material = false;
        } else {
            o.cert = sec->cert_chain;
            o.cert_len = sec->cert_chain_len;
            o.key = sec->private_key;
            o.key_len = sec->private_key_len;
            o.ca = sec->root_ca;
            o.ca_len = sec->root_ca_len;
        }
        snprintf(src[0], sizeof(src[0]), "secret %s/%s certChain", ns, ss->secret.name);
        snprintf(src[1], sizeof(src[1]), "secret %s/%s privateKey", ns, ss->secret.name);
        snprintf(src[2], sizeof(src[2]), "secret %s/%s rootCa", ns, ss->secret.name);
    } else if (ss->files.h.set) {
        const usslfiles_t *f = &ss->files;
        if ((f->cert && read_pem(b, "tlsCert", f->cert, &fcert, &lcert, why, sizeof(why)) < 0) ||
            (f->key && read_pem(b, "tlsKey", f->key, &fkey, &lkey, why, sizeof(why)) < 0) ||
            (f->root_ca && read_pem(b, "rootCa", f->root_ca, &fca, &lca, why, sizeof(why)) < 0))
            material = false;
        o.cert = fcert;
        o.cert_len = lcert;
        o.key = fkey;
        o.key_len = lkey;
        o.ca = fca;
        o.ca_len = lca;
        snprintf(src[0], sizeof(src[0]), "sslFiles.tlsCert %s", f->cert ? f->cert : "");
        snprintf(src[1], sizeof(src[1]), "sslFiles.tlsKey %s", f->key ? f->key : "");
        snprintf(src[2], sizeof(src[2]), "sslFiles.rootCa %s", f->root_ca ? f->root_ca : "");
    }
    if (b->oom)
        goto out;
    o.cert_src = src[0];
    o.key_src = src[1];
    o.ca_src = src[2];
    o.min_ver = (int)ss->params.min_ver;
    o.max_ver = (int)ss->params.max_ver;
    o.ciphers = (const char *const *)ss->params.ciphers.v;
    o.nciphers = ss->params.ciphers.n;
    o.curves = (const char *const *)ss->params.curves.v;
    o.ncurves = ss->params.curves.n;
    o.san = (const char *const *)ss->san.v;
    o.nsan = ss->san.n;
    o.allow_reneg = ss->allow_reneg;
    o.one_way = ss->one_way;
    char err[800];
    int rc = material ? rv_tls_client_new(&o, &c, err, sizeof(err)) : RV_EPARSE;
    if (rc == RV_ENOMEM) {
        b->oom = true;
        goto out;
    }
    if (rc == 0) {
        if (keep_ctx(b, c))
            ulg_store(t, &o);
        else
            c = NULL;
        goto out;
    }
    if (material)
        snprintf(why, sizeof(why), "sslConfig: %s", err);
    else if (strncmp(why, "sslConfig", 9) != 0) {
        static const char pre[] = "sslConfig.";
        size_t n = strnlen(why, sizeof(why) - sizeof(pre));
        memmove(why + sizeof(pre) - 1, why, n);
        memcpy(why, pre, sizeof(pre) - 1);
        why[n + sizeof(pre) - 1] = '\0';
    }
    /* the last working material, with today's parameters */
    const ulg_t *e = ulg_find(t, false);
    if (e && (e->cert || e->ca)) {
        rv_tls_client_opts_t lo = o;
        lo.cert = e->cert;
        lo.cert_len = e->cert_len;
        lo.key = e->key;
        lo.key_len = e->key_len;
        lo.ca = e->ca;
        lo.ca_len = e->ca_len;
        rc = rv_tls_client_new(&lo, &c, err, sizeof(err));
        if (rc == RV_ENOMEM) {
            b->oom = true;
            goto out;
        }
        if (rc == 0 && keep_ctx(b, c)) {
            uint64_t h = 0xcbf29ce484222325ull;
            for (const char *p = why; *p; p++)
                h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
            *stale = h ? h : 1;
            cfg_addmsg(b, t, true, "%s; its last working certificate, key and CA keep serving", why);
            goto out;
        }
        c = NULL;
    }
    cfg_addmsg(b, t, true, "%s", why);
out:
    wipe_free(fcert, lcert);
    wipe_free(fkey, lkey);
    wipe_free(fca, lca);
    return c;
}

/* SNI per endpoint of a static TLS cluster: sniAddr (already set), else the cluster's
 * sslConfig.sni, else (autoSniRewrite) the host's name when it is a DNS name. */
static void static_sni(rv_cluster_t *c, const us_t *u)
{
    if (c->sni.len || !u->st.auto_sni)
        return;
    for (uint32_t k = 0; k < c->neps; k++) {
        rv_endpoint_t *e = &c->eps[k];
        unsigned char ip[16];
        if (e->sni.len || !e->hostname.ptr)
            continue;
        if (inet_pton(AF_INET, e->hostname.ptr, ip) == 1 || inet_pton(AF_INET6, e->hostname.ptr, ip) == 1)
            continue;
        e->sni = e->hostname;
    }
}

/* The snapshot's copy of an Upstream's healthChecks[0] (schema.c checked it); NULL on OOM. */
static const rv_hc_cfg_t *health_cfg(bctx_t *b, const tres_t *t, const us_t *u, const hc_t *h)
{
    rv_hc_cfg_t *o = cfg_anew(b, sizeof(*o));
    if (!o)
        return NULL;
    o->timeout_ms = h->timeout_ms;
    o->interval_ms = h->interval_ms;
    o->jitter_ms = h->jitter_ms;
    o->unhealthy_threshold = h->unhealthy;
    o->healthy_threshold = h->healthy;
    o->panic_pct = u->lb.has_panic ? u->lb.panic_pct : 50;     /* Envoy's default */
    o->http = h->http.h.set;
    if (o->http) {
        o->path = cfg_astr(b, h->http.path);
        /* Envoy sends the cluster's name when host is empty; Gloo names it <name>_<namespace> */
        o->host = h->http.host ? cfg_astr(b, h->http.host) : cfg_astrf(b, "%s_%s", t->name, t->ns);
        const hcrange_t *r = h->http.statuses.v;
        if (h->http.statuses.n && (o->statuses = cfg_anew(b, h->http.statuses.n * sizeof(*o->statuses)))) {
            for (uint32_t i = 0; i < h->http.statuses.n; i++)
                o->statuses[i] = (rv_hc_range_t){ (uint16_t)r[i].start, (uint16_t)r[i].end };
            o->nstatuses = h->http.statuses.n;
        }
    }
    return o;
}

void cfg_build_clusters(bctx_t *b)
{
    uint32_t n = b->nby[RK_US];
    for (uint32_t i = 0; i < n && !b->oom; i++) {
        tres_t *t = b->by[RK_US][i];
        us_t *u = t->obj;
        uint32_t idx;
        rv_cluster_t *c = new_cluster(b, &idx);
        if (!c)
            return;
        c->name = cfg_astrf(b, "%s.%s", t->ns, t->name);
        c->lb = u->lb.lr.h.set ? RV_LB_LEAST_REQUEST : u->lb.random.h.set ? RV_LB_RANDOM : RV_LB_ROUND_ROBIN;
        c->choice_count = u->lb.lr.h.set ? u->lb.lr.choice_count : 2;
        conn_settings(c, &u->conn);
        /* Gloo takes the first circuit breaker config present, whole: the Upstream's (its unset
         * limits are Envoy's defaults), else Settings' (new_cluster) */
        if (u->cb.h.set)
            c->cb = (rv_cb_limits_t){ true, RV_CB_MAX_CONNECTIONS, RV_CB_MAX_PENDING, RV_CB_MAX_REQUESTS,
                                      RV_CB_MAX_RETRIES };
        if (u->cb.has_max_connections)
            c->cb.max_connections = u->cb.max_connections;
        if (u->cb.has_max_pending)
            c->cb.max_pending = u->cb.max_pending;
        if (u->cb.has_max_requests)
            c->cb.max_requests = u->cb.max_requests;
        if (u->cb.has_max_retries)
            c->cb.max_retries = u->cb.max_retries;
        t->cluster = idx;
        bool tls = u->ssl.h.set || (u->st.h.set && u->st.use_tls);
        if (tls) {
            uint64_t stale = 0;
            rv_tls_client_t *ctx = upstream_tls(b, t, u, &stale);
            c = (rv_cluster_t *)b->clusters.v + idx;
            if (!ctx)
                continue;   /* Rejected: no endpoints (503), never plain text to a TLS upstream */
            c->tls = ctx;
            c->tls_stale = stale;
            if (u->ssl.sni)
                c->sni = cfg_astr(b, u->ssl.sni);
        }
        if (u->hcs.n)
            c->hc = health_cfg(b, t, u, (const hc_t *)u->hcs.v);
        if (u->consul.h.set) {
            consul_cluster(b, t, c, &u->consul);
            continue;
        }
        vec_t eps = { 0 };
        const shost_t *h = u->st.hosts.v;
        for (uint32_t k = 0; k < u->st.hosts.n; k++)
            resolve_host(b, t, &eps, &h[k], k);
        c = (rv_cluster_t *)b->clusters.v + idx;
        set_endpoints(b, c, &eps);
        if (c->tls)
            static_sni(c, u);
        if (!eps.n)
            cfg_addmsg(b, t, false, "no endpoint resolves: requests to this upstream get 503");
        free(eps.v);
    }
    collect_discovered(b);
    for (uint32_t i = 0; i < b->ndisc && !b->oom; i++) {
        tres_t *t = &b->disc[i];
        uint32_t idx;
        rv_cluster_t *c = new_cluster(b, &idx);
        if (!c)
            return;
        c->name = cfg_astrf(b, "%s.%s", t->ns, t->name);
        c->lb = RV_LB_ROUND_ROBIN;
        c->choice_count = 2;
        t->cluster = idx;
        discovered_cluster(b, t, c);
    }
}

/* Copy the clusters into the snapshot once every route destination has made its own. */
void cfg_finish_clusters(bctx_t *b)
{
    rv_snapshot_t *snap = &b->sp->snap;
    snap->nclusters = 0;
    if (!b->clusters.n || b->oom)
        return;
    snap->clusters = cfg_anew(b, b->clusters.n * sizeof(rv_cluster_t));
    if (!snap->clusters)
        return;
    memcpy(snap->clusters, b->clusters.v, b->clusters.n * sizeof(rv_cluster_t));
    snap->nclusters = b->clusters.n;
}

/* Route destination consul{serviceName, tags, dataCenters}: one cluster per distinct triple. */
typedef struct cdest_key_s {
    const cdest_t *d;
    uint32_t cluster;
} cdest_key_t;

static bool strs_same(const strs_t *x, const strs_t *y)
{
    if (x->n != y->n)
        return false;
    for (uint32_t i = 0; i < x->n; i++)
        if (!cfg_in_list(y, x->v[i]))
            return false;
    for (uint32_t i = 0; i < y->n; i++)
        if (!cfg_in_list(x, y->v[i]))
            return false;
    return true;
}

static void join_strs(char *out, size_t outlen, const strs_t *l)
{
    size_t o = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < l->n && o < outlen; i++) {
        int w = snprintf(out + o, outlen - o, "%s%s", i ? "," : "", l->v[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/*
 * Cluster of a consul destination: instances of the service in the listed datacenters that
 * carry every listed tag; when none does, every instance of the service (Gloo's subset
 * fallback_policy ANY_ENDPOINT).
 */
uint32_t cfg_consul_dest_cluster(bctx_t *b, tres_t *owner, bool warn, const char *where, const cdest_t *d)
{
    b->uses_consul = true;
    for (uint32_t i = 0; i < b->cdests.n; i++) {
        const cdest_key_t *k = (const cdest_key_t *)b->cdests.v + i;
        if (!strcmp(k->d->service, d->service) && strs_same(&k->d->tags, &d->tags) && strs_same(&k->d->dcs, &d->dcs))
            return k->cluster;
    }
    uint32_t idx;
    rv_cluster_t *c = new_cluster(b, &idx);
    cdest_key_t *k = c ? cfg_vec_push(b, &b->cdests, sizeof(*k)) : NULL;
    if (!k)
        return RV_NO_CLUSTER;
    k->d = d;
    k->cluster = idx;
    char tags[256], dcs[256];
    join_strs(tags, sizeof(tags), &d->tags);
    join_strs(dcs, sizeof(dcs), &d->dcs);
    if (d->tags.n || d->dcs.n)
        c->name = cfg_astrf(b, "%s.consul-svc:%s[tags=%s;dcs=%s]", b->s->discovery_ns, d->service, tags, dcs);
    else
        c->name = cfg_astrf(b, "%s.consul-svc:%s", b->s->discovery_ns, d->service);
    c->lb = RV_LB_ROUND_ROBIN;
    c->choice_count = 2;
    const rv_disc_svc_t *svc = b->view ? rv_disc_find(b->view, d->service) : NULL;
    vec_t eps = { 0 };
    uint32_t nsel = 0;
    if (svc) {
        isel_t f = { &d->dcs, &d->tags, NULL };
        consul_endpoints(b, svc, &f, &eps, &nsel);
        if (!nsel) {
            isel_t all = { NULL, NULL, NULL };
            consul_endpoints(b, svc, &all, &eps, &nsel);
        }
    }
    c = (rv_cluster_t *)b->clusters.v + idx;
    set_endpoints(b, c, &eps);
    record_csel(b, idx, CSEL_DEST, d->service, &d->dcs, &d->tags, NULL, c->neps == 0, nsel == 0);
    if (!c->neps && !b->oom && warn)
        cfg_addmsg(b, owner, false, "%s: consul service '%s': %s; requests get 503", where, d->service,
               consul_problem(b, svc, nsel));
    free(eps.v);
    return idx;
}


/* ---- endpoint sets ----------------------------------------------------------------- */

/* FNV-1a over s and a separator byte. */
static uint64_t fp_str(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= 0xff;
    return h * 0x100000001b3ull;
}

/*
 * Fingerprint of what a build takes from a view besides instances: health mode, synced, and
 * per service its name, known flag and tag union (discovered Upstreams and statuses follow
 * them). Two views with the same fingerprint differ only in instances.
 */
uint64_t rv_disc_view_fingerprint(const rv_disc_view_t *v)
{
    uint64_t h = 0xcbf29ce484222325ull;
    char f[3] = { v->health ? 'h' : '-', v->synced ? 's' : '-', 0 };
    h = fp_str(h, f, 2);
    for (uint32_t i = 0; i < v->nsvcs; i++) {
        const rv_disc_svc_t *sv = &v->svcs[i];
        h = fp_str(h, sv->name.ptr, sv->name.len);
        h = fp_str(h, sv->known ? "k" : "-", 1);
        for (uint32_t k = 0; k < sv->ntags; k++)
            h = fp_str(h, sv->tags[k].ptr, sv->tags[k].len);
    }
    return h;
}

rv_endpoint_set_t *rv_endpoint_set_initial(rv_snapshot_t *snap)
{
    rv_endpoint_set_t *es = calloc(1, sizeof(*es));
    if (!es)
        return NULL;
    rv_arena_init(&es->arena, 1024);
    atomic_init(&es->refs, 1);
    rv_snapshot_ref(snap);
    es->snap = snap;
    es->version = 1;
    es->clusters = snap->clusters;
    es->nclusters = snap->nclusters;
    es->initial = true;
    for (uint32_t i = 0; i < snap->nclusters; i++)
        es->nendpoints += snap->clusters[i].neps;
    return es;
}

void rv_endpoint_set_ref(rv_endpoint_set_t *es)
{
    atomic_fetch_add_explicit(&es->refs, 1, memory_order_relaxed);
}

void rv_endpoint_set_release(rv_endpoint_set_t *es)
{
    if (!es || atomic_fetch_sub_explicit(&es->refs, 1, memory_order_acq_rel) != 1)
        return;
    rv_arena_free(&es->arena);
    rv_endpoint_set_release(es->base);
    rv_snapshot_release(es->snap);
    free(es);
}

int rv_endpoint_set_build(rv_snapshot_t *snap, const rv_disc_view_t *view, uint64_t prev_version,
                          rv_endpoint_set_t **out)
{
    const snap_priv_t *sp = (const snap_priv_t *)snap;
    *out = NULL;
    if (!view || !sp->has_view || rv_disc_view_fingerprint(view) != sp->view_fp)
        return RV_EAGAIN;
    rv_endpoint_set_t *es = calloc(1, sizeof(*es));
    if (!es)
        return RV_ENOMEM;
    rv_arena_init(&es->arena, 64 * 1024);
    atomic_init(&es->refs, 1);
    rv_snapshot_ref(snap);
    es->snap = snap;
    es->version = prev_version + 1;
    es->nclusters = snap->nclusters;
    int rc = 0;
    bctx_t b = { .a = &es->arena, .view = view };
    if (snap->nclusters) {
        es->clusters = cfg_anew(&b, snap->nclusters * sizeof(rv_cluster_t));
        if (es->clusters)
            memcpy(es->clusters, snap->clusters, snap->nclusters * sizeof(rv_cluster_t));
    }
    for (uint32_t i = 0; i < sp->ncsel && !b.oom && rc == 0; i++) {
        const csel_t *cs = &sp->csel[i];
        if (cs->cluster >= snap->nclusters)
            continue;
        rv_cluster_t *c = &es->clusters[cs->cluster];
        c->eps = NULL;
        c->neps = 0;
        c->total_weight = 0;
        const rv_disc_svc_t *svc = rv_disc_find(view, cs->service);
        vec_t eps = { 0 };
        uint32_t nsel = 0;
        if (svc) {
            isel_t f = { &cs->dcs, &cs->want, cs->kind == CSEL_UPSTREAM ? &cs->deny : NULL };
            consul_collect(&b, svc, &f, &eps, &nsel);
            if (cs->kind == CSEL_DEST && !nsel) {
                isel_t all = { NULL, NULL, NULL };
                consul_collect(&b, svc, &all, &eps, &nsel);
            }
        }
        const rv_cluster_t *sc = &snap->clusters[cs->cluster];
        if (eps.n && same_raw_eps(&eps, sc)) {
            /* unchanged since the snapshot: share its array (the set holds the snapshot) */
            c->eps = sc->eps;
            c->neps = sc->neps;
            c->total_weight = sc->total_weight;
        } else {
            consul_strings(&b, &eps);
            set_endpoints(&b, c, &eps);
        }
        free(eps.v);
        if ((c->neps == 0) != cs->empty || (cs->empty && (nsel == 0) != cs->nomatch))
            rc = RV_EAGAIN;     /* a status would change: the caller rebuilds */
    }
    if (b.oom && rc == 0)
        rc = RV_ENOMEM;
    if (rc != 0) {
        rv_endpoint_set_release(es);
        return rc;
    }
    for (uint32_t i = 0; i < es->nclusters; i++)
        es->nendpoints += es->clusters[i].neps;
    *out = es;
    return 0;
}

char *rv_endpoint_set_dump_json(const rv_snapshot_t *snap, const rv_endpoint_set_t *es, size_t *len)
{
    if (!es || es->initial || es->snap != snap) {
        char *p = malloc(snap->config_json_len + 1);
        if (!p)
            return NULL;
        memcpy(p, snap->config_json, snap->config_json_len);
        p[snap->config_json_len] = '\0';
        *len = snap->config_json_len;
        return p;
    }
    char *p = NULL;
    if (cfg_dump_json_with(snap, es->clusters, &p, len) != 0)
        return NULL;
    return p;
}

