/*
 * translate-tls.c - Gateway `ssl: true` listeners: from the selected VirtualServices'
 * sslConfigs to the listener's TLS contexts (src/tls/server.h), built here on the control
 * thread during the snapshot build and owned by the snapshot (freed by its free hook).
 *
 * Services whose sslConfigs differ only in sniDomains share one chain (Gloo merges them the
 * same way); a service without sniDomains makes its chain match every name. Material comes from
 * the secret table (secretRef: a Gloo tls secret) or from files (sslFiles), which are read
 * here and recorded (path, inode, size, times) so that the control thread can notice a
 * rotated file within a second (rv_snapshot_tls_files_changed). Key material is wiped after
 * the contexts are built and never reaches a message, a log or /config_dump.
 */
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config/secret.h"
#include "config/translate-internal.h"
#include "tls/server.h"

typedef struct tmat_s {
    const sslcfg_t *sc;
    char *cert, *key, *ca;          /* NUL-terminated PEM (malloc, key wiped) */
    size_t key_len;
    unsigned char *ocsp;
    size_t ocsp_len;
    char cert_src[300], key_src[300], ca_src[300], ocsp_src[300];
    int group;                      /* index of the first member with the same config, -1 none */
    bool ok;
    bool stale;                     /* the last working material, the current one is unusable */
    char bad_fp[17];                /* stale: digest of the unusable material (dump changes with it) */
} tmat_t;

void cfg_tls_note_file(bctx_t *b, const char *path)
{
    snap_priv_t *sp = b->sp;
    for (uint32_t i = 0; i < sp->ntls_files; i++)
        if (!strcmp(sp->tls_files[i].path, path))
            return;
    if (sp->ntls_files == sp->captls_files) {
        uint32_t nc = sp->captls_files ? sp->captls_files * 2 : 8;
        tls_file_t *v = realloc(sp->tls_files, nc * sizeof(*v));
        if (!v) {
            b->oom = true;
            return;
        }
        sp->tls_files = v;
        sp->captls_files = nc;
    }
    tls_file_t *f = &sp->tls_files[sp->ntls_files];
    memset(f, 0, sizeof(*f));
    if (!(f->path = strdup(path))) {
        b->oom = true;
        return;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        f->missing = true;
    } else {
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->size = st.st_size;
        f->mtime = st.st_mtim;
        f->ctime = st.st_ctim;
    }
    sp->ntls_files++;
}

/* Read one sslFiles file: 0, or -1 with the VS rejected (reason names the field and path). */
static int read_one(bctx_t *b, tres_t *t, const char *field, const char *path, char **out, size_t *len)
{
    cfg_tls_note_file(b, path);
    int rc = cfg_read_file(path, out, len);
    if (rc == 0)
        return 0;
    if (rc == RV_ENOMEM)
        b->oom = true;
    cfg_addmsg(b, t, true, "sslConfig.sslFiles.%s: cannot read %s: %s", field, path,
               rc == RV_ENOTFOUND ? "no such file" : rc == RV_ETOOBIG ? "file is larger than 4 MiB" : strerror(errno));
    return -1;
}

static char *dup_pem(const char *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = 0;
    }
    return s;
}

/* Gather the material of service t into m; false (t Rejected) when some part is unusable. */
static bool load_material(bctx_t *b, tres_t *t, tmat_t *m)
{
    const sslcfg_t *sc = m->sc;
    if (sc->secret.h.set) {
        const char *ns = sc->secret.ns && sc->secret.ns[0] ? sc->secret.ns : t->ns;
        const char *why = NULL;
        const rv_secret_t *sec = rv_store_secret(b->st, ns, sc->secret.name, &why);
        snprintf(m->cert_src, sizeof(m->cert_src), "secret %s/%s", ns, sc->secret.name);
        memcpy(m->key_src, m->cert_src, sizeof(m->key_src));
        memcpy(m->ca_src, m->cert_src, sizeof(m->ca_src));
        memcpy(m->ocsp_src, m->cert_src, sizeof(m->ocsp_src));
        if (!sec) {
            const char *unread = why ? NULL : rv_store_secrets_unread(b->st);
            cfg_addmsg(b, t, true, "sslConfig.secretRef: secret %s/%s %s%s%s%s%s", ns, sc->secret.name,
                       why ? "is unusable: " : "not found", why ? why : "", unread ? " (" : "",
                       unread ? unread : "", unread ? ")" : "");
            return false;
        }
        if (sec->kind != RV_SECRET_TLS) {
            cfg_addmsg(b, t, true, "sslConfig.secretRef: secret %s/%s is not a tls secret", ns, sc->secret.name);
            return false;
        }
        if (!sec->cert_chain || !sec->private_key) {
            cfg_addmsg(b, t, true, "sslConfig.secretRef: secret %s/%s has no %s", ns, sc->secret.name,
                       !sec->cert_chain ? "certChain" : "privateKey");
            return false;
        }
        m->cert = dup_pem(sec->cert_chain, sec->cert_chain_len);
        m->key = dup_pem(sec->private_key, sec->private_key_len);
        m->key_len = sec->private_key_len;
        if (sec->root_ca && sec->root_ca_len)
            m->ca = dup_pem(sec->root_ca, sec->root_ca_len);
        if (sec->ocsp_staple && sec->ocsp_staple_len && (m->ocsp = malloc(sec->ocsp_staple_len))) {
            memcpy(m->ocsp, sec->ocsp_staple, sec->ocsp_staple_len);
            m->ocsp_len = sec->ocsp_staple_len;
        }
        if (!m->cert || !m->key || (sec->root_ca && sec->root_ca_len && !m->ca) ||
            (sec->ocsp_staple_len && !m->ocsp)) {
            b->oom = true;
            return false;
        }
        return true;
    }
    const sslfiles_t *f = &sc->files;
    size_t len;
    snprintf(m->cert_src, sizeof(m->cert_src), "file %s", f->cert);
    snprintf(m->key_src, sizeof(m->key_src), "file %s", f->key);
    if (f->root_ca)
        snprintf(m->ca_src, sizeof(m->ca_src), "file %s", f->root_ca);
    if (f->ocsp)
        snprintf(m->ocsp_src, sizeof(m->ocsp_src), "file %s", f->ocsp);
    if (read_one(b, t, "tlsCert", f->cert, &m->cert, &len) < 0)
        return false;
    if (read_one(b, t, "tlsKey", f->key, &m->key, &m->key_len) < 0)
        return false;
    if (f->root_ca && f->root_ca[0] && read_one(b, t, "rootCa", f->root_ca, &m->ca, &len) < 0)
        return false;
    if (f->ocsp && f->ocsp[0]) {
        char *o;
        if (read_one(b, t, "ocspStaple", f->ocsp, &o, &m->ocsp_len) < 0)
            return false;
        m->ocsp = (unsigned char *)o;
    }
    return true;
}

static void free_material(tmat_t *m)
{
    free(m->cert);
    if (m->key) {
        OPENSSL_cleanse(m->key, m->key_len);
        free(m->key);
    }
    free(m->ca);
    free(m->ocsp);
}

static bool str_same(const char *a, const char *c)
{
    return (!a && !c) || (a && c && !strcmp(a, c));
}

static bool strs_same(const strs_t *a, const strs_t *c)
{
    if (a->n != c->n)
        return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], c->v[i]))
            return false;
    return true;
}

/* Same chain: everything but sniDomains equal (Gloo's merge rule). */
static bool same_chain(const tmat_t *x, const tmat_t *y)
{
    const sslcfg_t *a = x->sc, *c = y->sc;
    return str_same(x->cert, y->cert) && str_same(x->key, y->key) && str_same(x->ca, y->ca) &&
           x->ocsp_len == y->ocsp_len && (!x->ocsp_len || !memcmp(x->ocsp, y->ocsp, x->ocsp_len)) &&
           strs_same(&a->san, &c->san) && a->params.min_ver == c->params.min_ver &&
           a->params.max_ver == c->params.max_ver && strs_same(&a->params.ciphers, &c->params.ciphers) &&
           strs_same(&a->params.curves, &c->params.curves) && a->one_way == c->one_way &&
           a->no_resume == c->no_resume && a->ocsp_policy == c->ocsp_policy;
}

/* A short digest of the material (dump text: a rotated file changes the dump, so the control
 * thread publishes it; the key enters only through its own digest). */
static void fingerprint(const tmat_t *m, char out[17])
{
    unsigned char kd[32], md[32];
    unsigned int l = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    memset(md, 0, sizeof(md));
    EVP_Digest(m->key ? m->key : "", m->key ? m->key_len : 0, kd, &l, EVP_sha256(), NULL);
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
        if (m->cert)
            EVP_DigestUpdate(c, m->cert, strlen(m->cert));
        EVP_DigestUpdate(c, kd, sizeof(kd));
        if (m->ca)
            EVP_DigestUpdate(c, m->ca, strlen(m->ca));
        if (m->ocsp)
            EVP_DigestUpdate(c, m->ocsp, m->ocsp_len);
        EVP_DigestFinal_ex(c, md, NULL);
    }
    EVP_MD_CTX_free(c);
    OPENSSL_cleanse(kd, sizeof(kd));
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[16] = 0;
}

static int tls_version(uint32_t v)
{
    return v == TLSV_1_2 ? TLS1_2_VERSION : v == TLSV_1_3 ? TLS1_3_VERSION : 0;
}

static void fingerprint(const tmat_t *m, char out[17]);

/* ---- last working material ---------------------------------------------------------------
 * Per VirtualService (ns/name), the certificate, key and CA its chain was last built from
 * (control thread only). When its material becomes unusable - a file half-way through a
 * rotation (new certificate, old key), a deleted file, a broken secret - the service is
 * Rejected with the reason, and its last working material keeps serving instead of the
 * service dropping out of TLS. Entries are wiped when replaced, and dropped (wiped) by the
 * next ssl listener build once the service is gone or has no sslConfig; never logged. */

typedef struct lastgood_s {
    char *vs;                       /* "ns/name" */
    char *cert, *key, *ca;
    size_t key_len;
    unsigned char *ocsp;
    size_t ocsp_len;
} lastgood_t;

static lastgood_t *lg;
static uint32_t nlg, caplg;

static lastgood_t *lg_find(const tres_t *t)
{
    char k[600];
    snprintf(k, sizeof(k), "%s/%s", t->ns, t->name);
    for (uint32_t i = 0; i < nlg; i++)
        if (!strcmp(lg[i].vs, k))
            return &lg[i];
    return NULL;
}

static void lg_clear(lastgood_t *e)
{
    free(e->cert);
    if (e->key) {
        OPENSSL_cleanse(e->key, e->key_len);
        free(e->key);
    }
    free(e->ca);
    free(e->ocsp);
    e->cert = e->key = e->ca = NULL;
    e->ocsp = NULL;
}

static char *dup_opt(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Remember m as t's working material (best effort: on OOM nothing is remembered). */
static void lg_store(const tres_t *t, const tmat_t *m)
{
    lastgood_t *e = lg_find(t);
    if (!e) {
        if (nlg == caplg) {
            uint32_t nc = caplg ? caplg * 2 : 8;
            lastgood_t *v = realloc(lg, nc * sizeof(*v));
            if (!v)
                return;
            lg = v;
            caplg = nc;
        }
        char k[600];
        snprintf(k, sizeof(k), "%s/%s", t->ns, t->name);
        e = &lg[nlg];
        memset(e, 0, sizeof(*e));
        if (!(e->vs = strdup(k)))
            return;
        nlg++;
    }
    lg_clear(e);
    e->cert = dup_opt(m->cert);
    e->key = m->key ? dup_pem(m->key, m->key_len) : NULL;
    e->key_len = m->key_len;
    e->ca = dup_opt(m->ca);
    if (m->ocsp && (e->ocsp = malloc(m->ocsp_len))) {
        memcpy(e->ocsp, m->ocsp, m->ocsp_len);
        e->ocsp_len = m->ocsp_len;
    }
    if (!e->cert || !e->key || (m->ca && !e->ca) || (m->ocsp && !e->ocsp))
        lg_clear(e);
}

/* Forget (and wipe) the last working material of services that no longer exist or no longer
 * have an sslConfig, so keys of a deleted VirtualService do not linger in memory. */
static void lg_prune(bctx_t *b)
{
    uint32_t w = 0;
    for (uint32_t i = 0; i < nlg; i++) {
        char ns[300];
        const char *slash = strchr(lg[i].vs, '/');
        size_t nl = slash ? (size_t)(slash - lg[i].vs) : 0;
        bool keep = false;
        if (slash && nl < sizeof(ns)) {
            memcpy(ns, lg[i].vs, nl);
            ns[nl] = 0;
            tres_t key = { .ns = ns, .name = slash + 1 };
            tres_t *kp = &key;
            tres_t **hit = b->nby[RK_VS] ? bsearch(&kp, b->by[RK_VS], b->nby[RK_VS], sizeof(tres_t *), cfg_tres_cmp)
                                         : NULL;
            keep = hit && ((const vs_t *)(*hit)->obj)->ssl.h.set;
        }
        if (keep) {
            lg[w++] = lg[i];
        } else {
            lg_clear(&lg[i]);
            free(lg[i].vs);
        }
    }
    nlg = w;
}

/* Replace m's material by t's last working one; false when there is none. */
static bool lg_use(const tres_t *t, tmat_t *m)
{
    const lastgood_t *e = lg_find(t);
    if (!e || !e->cert || !e->key)
        return false;
    tmat_t c = *m;
    c.cert = strdup(e->cert);
    c.key = dup_pem(e->key, e->key_len);
    c.key_len = e->key_len;
    c.ca = dup_opt(e->ca);
    c.ocsp = NULL;
    c.ocsp_len = 0;
    if (e->ocsp && (c.ocsp = malloc(e->ocsp_len))) {
        memcpy(c.ocsp, e->ocsp, e->ocsp_len);
        c.ocsp_len = e->ocsp_len;
    }
    if (!c.cert || !c.key || (e->ca && !c.ca) || (e->ocsp && !c.ocsp)) {
        free_material(&c);
        return false;
    }
    fingerprint(m, c.bad_fp);
    free_material(m);
    *m = c;
    m->stale = true;
    return true;
}

/* Build the chain of group leader i (every service j with m[j].group == i). Returns the chain
 * index, or < 0 with err set (RV_ENOMEM: b->oom). */
static int build_group(bctx_t *b, rv_tls_server_t *srv, tmat_t *m, uint32_t n, const bool *drop, uint32_t i,
                       char *err, size_t errlen)
{
    vec_t sni = { 0 };
    bool all = false;
    for (uint32_t j = i; j < n; j++) {
        if (drop[j] || m[j].group != (int)i)
            continue;
        const strs_t *s = &m[j].sc->sni;
        if (!s->n)
            all = true;
        for (uint32_t k = 0; k < s->n && !all; k++) {
            const char **p = cfg_vec_push(b, &sni, sizeof(char *));
            if (p)
                *p = s->v[k];
        }
    }
    const sslcfg_t *sc = m[i].sc;
    rv_tls_chain_cfg_t c = {
        .cert_pem = m[i].cert, .cert_src = m[i].cert_src,
        .key_pem = m[i].key, .key_src = m[i].key_src,
        .ca_pem = m[i].ca, .ca_src = m[i].ca_src,
        .ocsp = m[i].ocsp, .ocsp_len = m[i].ocsp_len, .ocsp_src = m[i].ocsp_src,
        .sni = all ? NULL : (const char *const *)sni.v, .nsni = all ? 0 : sni.n,
        .san = (const char *const *)sc->san.v, .nsan = sc->san.n,
        .min_ver = tls_version(sc->params.min_ver), .max_ver = tls_version(sc->params.max_ver),
        .ciphers = (const char *const *)sc->params.ciphers.v, .nciphers = sc->params.ciphers.n,
        .curves = (const char *const *)sc->params.curves.v, .ncurves = sc->params.curves.n,
        .one_way = sc->one_way, .no_resumption = sc->no_resume,
        .ocsp_policy = (int)sc->ocsp_policy,
    };
    int idx = rv_tls_server_add(srv, &c, err, errlen);
    free(sni.v);
    if (idx == RV_ENOMEM)
        b->oom = true;
    return idx;
}

#define KEEP_NOTE "; its last working certificate and key keep serving"

typedef struct sname_s {
    const char *name;
    uint32_t group;
} sname_t;

static int sname_cmp(const void *x, const void *y)
{
    const sname_t *a = x, *c = y;
    int r = strcmp(a->name, c->name);
    return r ? r : (a->group > c->group) - (a->group < c->group);
}

/* A server name in the sniDomains of two chains is served by the first one (Envoy would refuse
 * the listener): every service of a later chain listing it gets a Warning saying so. */
static void warn_shared_names(bctx_t *b, tres_t **vs, const tmat_t *m, uint32_t n, const bool *drop)
{
    vec_t v = { 0 };
    for (uint32_t i = 0; i < n; i++) {
        if (drop[i] || m[i].group < 0)
            continue;
        for (uint32_t k = 0; k < m[i].sc->sni.n; k++) {
            sname_t *e = cfg_vec_push(b, &v, sizeof(sname_t));
            if (!e)
                goto out;
            *e = (sname_t){ m[i].sc->sni.v[k], (uint32_t)m[i].group };
        }
    }
    if (v.n > 1)
        qsort(v.v, v.n, sizeof(sname_t), sname_cmp);
    sname_t *e = v.v;
    for (uint32_t k = 1; k < v.n; k++) {
        if (strcmp(e[k].name, e[k - 1].name) || e[k].group == e[k - 1].group)
            continue;
        uint32_t first = k - 1;
        while (first > 0 && !strcmp(e[first - 1].name, e[k].name))
            first--;
        if (e[first].group == e[k].group)
            continue;
        tres_t *owner = vs[e[first].group];
        for (uint32_t j = 0; j < n; j++)
            if (!drop[j] && m[j].group == (int)e[k].group && cfg_in_list(&m[j].sc->sni, e[k].name))
                cfg_addmsg(b, vs[j], false,
                           "sslConfig.sniDomains: '%s' is already served by the certificate of VirtualService %s/%s "
                           "on this Gateway: connections naming it get that one", e[k].name, owner->ns, owner->name);
    }
out:
    free(v.v);
}

void cfg_build_tls(bctx_t *b, tres_t *gt, rv_listener_cfg_t *l, tres_t **vs, uint32_t n, bool *drop,
                   uint32_t *chain_of, rv_str_t *src_of)
{
    l->ssl = true;
    lg_prune(b);
    tmat_t *m = n ? calloc(n, sizeof(tmat_t)) : NULL;
    int *chain_idx = n ? malloc(n * sizeof(int)) : NULL;
    rv_tls_server_t *srv = rv_tls_server_new();
    if ((n && (!m || !chain_idx)) || !srv) {
        b->oom = true;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        chain_idx[i] = -1;
        if (drop[i])
            continue;
        const vs_t *v = vs[i]->obj;
        m[i].sc = &v->ssl;
        m[i].group = -1;
        m[i].ok = load_material(b, vs[i], &m[i]);
        if (!m[i].ok && lg_use(vs[i], &m[i])) {
            m[i].ok = true;
            cfg_addmsg(b, vs[i], true, "sslConfig: its last working certificate and key keep serving");
        }
        if (!m[i].ok) {
            drop[i] = true;
            continue;
        }
        for (uint32_t j = 0; j < i && !m[i].stale; j++)
            if (m[j].ok && !m[j].stale && m[j].group == (int)j && same_chain(&m[j], &m[i])) {
                m[i].group = (int)j;
                break;
            }
        if (m[i].group < 0)
            m[i].group = (int)i;
    }
    warn_shared_names(b, vs, m, n, drop);
    /* one chain per group, in the order of their first service (ns/name order) */
    for (uint32_t i = 0; i < n && !b->oom; i++) {
        if (drop[i] || m[i].group != (int)i)
            continue;
        char err[600];
        int idx = build_group(b, srv, m, n, drop, i, err, sizeof(err));
        if (b->oom)
            break;
        if (idx >= 0) {
            for (uint32_t j = i; j < n; j++)
                if (!drop[j] && m[j].group == (int)i)
                    chain_idx[j] = idx;
            continue;
        }
        /* refused: every member is Rejected; one with last working material is built alone
         * on it */
        for (uint32_t j = i; j < n; j++) {
            if (drop[j] || m[j].group != (int)i)
                continue;
            m[j].group = -2;
            drop[j] = true;
        }
        for (uint32_t j = i; j < n && !b->oom; j++) {
            if (m[j].group != -2)
                continue;
            bool keep = !m[j].stale && lg_use(vs[j], &m[j]);
            cfg_addmsg(b, vs[j], true, "sslConfig: %s%s", err, keep ? KEEP_NOTE : "");
            m[j].group = -3;
            if (!keep)
                continue;
            char err2[600];
            m[j].group = (int)j;
            drop[j] = false;
            int k = build_group(b, srv, m, n, drop, j, err2, sizeof(err2));
            m[j].group = -3;
            if (k >= 0)
                chain_idx[j] = k;
            else
                drop[j] = true;
        }
    }
    for (uint32_t i = 0; i < n && m; i++) {
        chain_of[i] = chain_idx && chain_idx[i] >= 0 ? (uint32_t)chain_idx[i] : 0;
        if (drop[i] || !m[i].ok || chain_idx[i] < 0)
            continue;
        if (!m[i].stale)
            lg_store(vs[i], &m[i]);
        const sslcfg_t *sc = m[i].sc;
        char fp[17];
        fingerprint(&m[i], fp);
        char note[64] = "";
        if (m[i].stale)
            snprintf(note, sizeof(note), ", last working; unusable %s", m[i].bad_fp);
        src_of[i] = sc->secret.h.set
                        ? cfg_astrf(b, "secretRef %s/%s (material %s%s)",
                                    sc->secret.ns && sc->secret.ns[0] ? sc->secret.ns : vs[i]->ns, sc->secret.name, fp,
                                    note)
                        : cfg_astrf(b, "sslFiles tlsCert=%s tlsKey=%s%s%s (material %s%s)", sc->files.cert,
                                    sc->files.key, sc->files.root_ca ? " rootCa=" : "",
                                    sc->files.root_ca ? sc->files.root_ca : "", fp, note);
    }
    if (!b->oom && rv_tls_server_nchains(srv) > 0) {
        int rc = rv_tls_server_finish(srv);
        if (rc == RV_ENOMEM)
            b->oom = true;
        else if (rc == 0) {
            l->tls = srv;
            srv = NULL;
        }
    }
    if (!l->tls)
        cfg_addmsg(b, gt, false, "ssl: no VirtualService with a usable sslConfig: TLS connections are refused");
out:
    rv_tls_server_free(srv);
    for (uint32_t i = 0; m && i < n; i++)
        free_material(&m[i]);
    free(m);
    free(chain_idx);
}

void cfg_free_dtls(rv_snapshot_t *snap)
{
    snap_priv_t *sp = (snap_priv_t *)snap;
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        rv_tls_server_free(snap->listeners[i].tls);
        snap->listeners[i].tls = NULL;
    }
    for (uint32_t i = 0; i < sp->ntls_files; i++)
        free(sp->tls_files[i].path);
    free(sp->tls_files);
    sp->tls_files = NULL;
    sp->ntls_files = sp->captls_files = 0;
}

bool rv_snapshot_tls_files_changed(const rv_snapshot_t *snap)
{
    const snap_priv_t *sp = (const snap_priv_t *)snap;
    for (uint32_t i = 0; i < sp->ntls_files; i++) {
        const tls_file_t *f = &sp->tls_files[i];
        struct stat st;
        bool missing = stat(f->path, &st) != 0;
        if (missing != f->missing)
            return true;
        if (missing)
            continue;
        if (st.st_dev != f->dev || st.st_ino != f->ino || st.st_size != f->size ||
            st.st_mtim.tv_sec != f->mtime.tv_sec || st.st_mtim.tv_nsec != f->mtime.tv_nsec ||
            st.st_ctim.tv_sec != f->ctime.tv_sec || st.st_ctim.tv_nsec != f->ctime.tv_nsec)
            return true;
    }
    return false;
}
