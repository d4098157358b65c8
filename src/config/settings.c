/*
 * settings.c - Gloo's bootstrap Settings (DIR/<ns>/default.yaml): which directories (or which
 * Consul KV root) hold the config and the secrets, the namespaces to watch, the refresh
 * period, and the Consul client and discovery options. Without a Settings file, DIR itself is
 * the config directory.
 *
 * The Consul messages (consulKvSource, consul, consulDiscovery) are decoded here with their own
 * field tables, spliced into the generic Settings table at first use: schema.c keeps naming
 * them "not supported" for any other caller, and the Settings decoder stays the strict one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config-internal.h"
#include "core/err.h"

#define DEFAULT_REFRESH_MS 60000
#define DEFAULT_DNS_ADDRESS "127.0.0.1:8600"
#define DEFAULT_DNS_POLL_MS 5000

/* ---- Consul messages (Gloo's settings.proto) ---------------------------------------- */

#define FLD(n, t, ...) { .name = (n), .type = (t), __VA_ARGS__ }
#define OFF(T, f)      .off = (uint16_t)offsetof(T, f)
#define SETF(T, f)     .set_off = (uint16_t)offsetof(T, f)
#define UNSUP(n)       FLD(n, F_UNSUP)
#define DESC(var, T, fl, chk) \
    static const msgdesc_t var = { #T, sizeof(T), fl, (uint32_t)RV_ARRAY_LEN(fl), chk, false }

typedef struct kvsrc_doc_s { mhdr_t h; char *root_key; } kvsrc_doc_t;
typedef struct csd_doc_s { mhdr_t h; strs_t dcs; } csd_doc_t;
typedef struct consul_doc_s {
    mhdr_t h;
    char *address, *http_address, *datacenter, *username, *password, *token;
    char *ca_file, *ca_path, *cert_file, *key_file;
    bool insecure;
    int64_t wait_ms; bool has_wait;
    csd_doc_t sd;
    char *dns_address;
    int64_t dns_poll_ms; bool has_dns_poll;
} consul_doc_t;
typedef struct cdisc_doc_s {
    mhdr_t h;
    uint32_t consistency;
    strs_t tags_allow;
    bool rivet_health; bool has_rivet_health;   /* rivet extension, not in Gloo's proto */
} cdisc_doc_t;

/* Gloo's VaultSecrets (settings.proto): tlsConfig and the deprecated top-level TLS fields. */
typedef struct vtls_doc_s {
    mhdr_t h;
    char *ca_cert, *ca_path, *client_cert, *client_key, *server_name;
    bool insecure; bool has_insecure;
} vtls_doc_t;
typedef struct vault_doc_s {
    mhdr_t h;
    char *address, *root_key, *path_prefix, *access_token, *token;
    vtls_doc_t tls;             /* tlsConfig */
    vtls_doc_t old;             /* deprecated top-level caCert, caPath, ... */
} vault_doc_t;
typedef struct sdir_doc_s { mhdr_t h; char *directory; } sdir_doc_t;
typedef struct ssrc_doc_s { mhdr_t h; vault_doc_t vault; sdir_doc_t dir; } ssrc_doc_t;
typedef struct secopts_doc_s { mhdr_t h; list_t sources; } secopts_doc_t;   /* ssrc_doc_t */

/* The Settings message with the Consul and secret parts rivet supports. base first: its
 * offsets stand. */
typedef struct xsettings_s {
    settings_doc_t base;
    kvsrc_doc_t kv;
    consul_doc_t consul;
    cdisc_doc_t disc;
    vault_doc_t vault;          /* vaultSecretSource */
    secopts_doc_t secopts;      /* secretOptions */
} xsettings_t;

static const field_t kvsrc_fields[] = { FLD("rootKey", F_STR, OFF(kvsrc_doc_t, root_key)) };
DESC(kvsrc_desc, kvsrc_doc_t, kvsrc_fields, NULL);

static const field_t csd_fields[] = { FLD("dataCenters", F_STRS, OFF(csd_doc_t, dcs)) };
DESC(csd_desc, csd_doc_t, csd_fields, NULL);

static const field_t consul_fields[] = {
    FLD("address", F_STR, OFF(consul_doc_t, address)),
    FLD("httpAddress", F_STR, OFF(consul_doc_t, http_address)),
    FLD("datacenter", F_STR, OFF(consul_doc_t, datacenter)),
    FLD("username", F_STR, OFF(consul_doc_t, username)),
    FLD("password", F_STR, OFF(consul_doc_t, password)),
    FLD("token", F_STR, OFF(consul_doc_t, token)),
    FLD("caFile", F_STR, OFF(consul_doc_t, ca_file)),
    FLD("caPath", F_STR, OFF(consul_doc_t, ca_path)),
    FLD("certFile", F_STR, OFF(consul_doc_t, cert_file)),
    FLD("keyFile", F_STR, OFF(consul_doc_t, key_file)),
    FLD("insecureSkipVerify", F_BOOL, OFF(consul_doc_t, insecure)),
    FLD("waitTime", F_DUR, OFF(consul_doc_t, wait_ms), SETF(consul_doc_t, has_wait)),
    FLD("serviceDiscovery", F_MSG, OFF(consul_doc_t, sd), .sub = &csd_desc),
    FLD("dnsAddress", F_STR, OFF(consul_doc_t, dns_address)),
    FLD("dnsPollingInterval", F_DUR, OFF(consul_doc_t, dns_poll_ms), SETF(consul_doc_t, has_dns_poll)),
};
DESC(consul_desc, consul_doc_t, consul_fields, NULL);

static const char *const consistency_names[] = { "DefaultMode", "StaleMode", "ConsistentMode", NULL };

static const field_t cdisc_fields[] = {
    FLD("consistencyMode", F_ENUM, OFF(cdisc_doc_t, consistency), .enums = consistency_names),
    FLD("serviceTagsAllowlist", F_STRS, OFF(cdisc_doc_t, tags_allow)),
    /* rivet's own field (Gloo has none: it always uses the catalog): false = every registered
     * instance receives traffic, as in Gloo; default true = only instances passing their checks */
    FLD("rivetHealthChecks", F_BOOL, OFF(cdisc_doc_t, rivet_health), SETF(cdisc_doc_t, has_rivet_health)),
    FLD("useTlsTagging", F_FALSE_ONLY, .note = "(TLS to discovered services arrives in a later release)"),
    UNSUP("tlsTagName"), UNSUP("rootCa"), UNSUP("splitTlsServices"), UNSUP("queryOptions"),
    UNSUP("edsBlockingQueries"),
};
DESC(cdisc_desc, cdisc_doc_t, cdisc_fields, NULL);

static const field_t vtls_fields[] = {
    FLD("caCert", F_STR, OFF(vtls_doc_t, ca_cert)),
    FLD("caPath", F_STR, OFF(vtls_doc_t, ca_path)),
    FLD("clientCert", F_STR, OFF(vtls_doc_t, client_cert)),
    FLD("clientKey", F_STR, OFF(vtls_doc_t, client_key)),
    FLD("tlsServerName", F_STR, OFF(vtls_doc_t, server_name)),
    FLD("insecure", F_BOOL, OFF(vtls_doc_t, insecure), SETF(vtls_doc_t, has_insecure)),
};
DESC(vtls_desc, vtls_doc_t, vtls_fields, NULL);

static const field_t vault_fields[] = {
    FLD("address", F_STR, OFF(vault_doc_t, address)),
    FLD("rootKey", F_STR, OFF(vault_doc_t, root_key)),
    FLD("pathPrefix", F_STR, OFF(vault_doc_t, path_prefix)),
    FLD("tlsConfig", F_MSG, OFF(vault_doc_t, tls), .sub = &vtls_desc),
    FLD("accessToken", F_STR, OFF(vault_doc_t, access_token), .oneof = 1),
    FLD("aws", F_UNSUP, .oneof = 1,
        .note = "(Vault AWS IAM auth; use accessToken, VAULT_TOKEN or AppRole)"),
    /* deprecated in Gloo, still read by it */
    FLD("token", F_STR, OFF(vault_doc_t, token)),
    FLD("caCert", F_STR, OFF(vault_doc_t, old.ca_cert)),
    FLD("caPath", F_STR, OFF(vault_doc_t, old.ca_path)),
    FLD("clientCert", F_STR, OFF(vault_doc_t, old.client_cert)),
    FLD("clientKey", F_STR, OFF(vault_doc_t, old.client_key)),
    FLD("tlsServerName", F_STR, OFF(vault_doc_t, old.server_name)),
    FLD("insecure", F_BOOL, OFF(vault_doc_t, old.insecure), SETF(vault_doc_t, old.has_insecure)),
};
DESC(vault_desc, vault_doc_t, vault_fields, NULL);

static int sdir_check(dctx_t *c, void *msg, const ynode_t *n)
{
    sdir_doc_t *d = msg;
    if (!d->directory || !d->directory[0])
        return cfg_derr(c, n, "directory", "is required");
    return 0;
}

static const field_t sdir_fields[] = { FLD("directory", F_STR, OFF(sdir_doc_t, directory)) };
DESC(sdir_desc, sdir_doc_t, sdir_fields, sdir_check);

static int ssrc_check(dctx_t *c, void *msg, const ynode_t *n)
{
    ssrc_doc_t *d = msg;
    if (!d->vault.h.set && !d->dir.h.set)
        return cfg_derr(c, n, NULL, "a source needs one of directory or vault");
    return 0;
}

static const field_t ssrc_fields[] = {
    FLD("directory", F_MSG, OFF(ssrc_doc_t, dir), .sub = &sdir_desc, .oneof = 1),
    FLD("vault", F_MSG, OFF(ssrc_doc_t, vault), .sub = &vault_desc, .oneof = 1),
    FLD("kubernetes", F_UNSUP, .oneof = 1, .note = "(rivet runs without Kubernetes: use directory or vault)"),
};
DESC(ssrc_desc, ssrc_doc_t, ssrc_fields, ssrc_check);

static int secopts_check(dctx_t *c, void *msg, const ynode_t *n)
{
    secopts_doc_t *d = msg;
    if (!d->sources.n)
        return cfg_derr(c, n, "sources", "must list at least one source (Gloo refuses an empty list)");
    return 0;
}

static const field_t secopts_fields[] = { FLD("sources", F_MSGS, OFF(secopts_doc_t, sources), .sub = &ssrc_desc) };
DESC(secopts_desc, secopts_doc_t, secopts_fields, secopts_check);

static const field_t consul_msg_fields[] = {
    FLD("consulKvSource", F_MSG, OFF(xsettings_t, kv), .sub = &kvsrc_desc, .oneof = 1),
    FLD("consul", F_MSG, OFF(xsettings_t, consul), .sub = &consul_desc),
    FLD("consulDiscovery", F_MSG, OFF(xsettings_t, disc), .sub = &cdisc_desc),
    FLD("vaultSecretSource", F_MSG, OFF(xsettings_t, vault), .sub = &vault_desc, .oneof = 2),
    FLD("secretOptions", F_MSG, OFF(xsettings_t, secopts), .sub = &secopts_desc),
};

static field_t xsettings_fields[128];
static msgdesc_t xsettings_desc;
static pthread_once_t xsettings_once = PTHREAD_ONCE_INIT;

/* Build the Settings table: the generic one (schema.c) with the Consul entries replaced. */
static void xsettings_init(void)
{
    const msgdesc_t *base = cfg_kinds[RK_SETTINGS].desc;
    uint32_t n = 0;
    for (uint32_t i = 0; i < base->nfields && n < RV_ARRAY_LEN(xsettings_fields) - RV_ARRAY_LEN(consul_msg_fields);
         i++) {
        bool replaced = false;
        for (size_t j = 0; j < RV_ARRAY_LEN(consul_msg_fields); j++)
            replaced |= !strcmp(base->fields[i].name, consul_msg_fields[j].name);
        if (!replaced)
            xsettings_fields[n++] = base->fields[i];
    }
    for (size_t j = 0; j < RV_ARRAY_LEN(consul_msg_fields); j++)
        xsettings_fields[n++] = consul_msg_fields[j];
    xsettings_desc = *base;
    xsettings_desc.size = sizeof(xsettings_t);
    xsettings_desc.fields = xsettings_fields;
    xsettings_desc.nfields = n;
}

static struct {
    bool set;
    char *addr, *root_key;
    bool stale;
} consul_override;

void rv_settings_consul_override(const char *addr, const char *root_key, bool stale)
{
    consul_override.set = true;
    consul_override.addr = addr ? strdup(addr) : NULL;
    consul_override.root_key = root_key ? strdup(root_key) : NULL;
    consul_override.stale = stale;
}

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* dir + "/" + rel, or rel when it is absolute; NULL on OOM. */
static char *join(const char *dir, const char *rel)
{
    if (rel[0] == '/')
        return strdup(rel);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    size_t n = dl + 1 + strlen(rel) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%.*s/%s", (int)dl, dir, rel);
    return p;
}

int cfg_read_file(const char *path, char **buf, size_t *len)
{
    /* O_NONBLOCK: a FIFO swapped in after a stat must not block the control thread */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    char *p = NULL;
    size_t got = 0;
    int rc = RV_EIO;

    *buf = NULL;
    *len = 0;
    if (fd < 0)
        return errno == ENOENT ? RV_ENOTFOUND : RV_EIO;
    if (fstat(fd, &st) != 0)
        goto out;
    if (!S_ISREG(st.st_mode)) {
        errno = EISDIR;
        goto out;
    }
    if ((uint64_t)st.st_size > CFG_MAX_FILE) {
        rc = RV_ETOOBIG;
        goto out;
    }
    size_t cap = (size_t)st.st_size + 1;
    p = malloc(cap);
    if (!p) {
        rc = RV_ENOMEM;
        goto out;
    }
    for (;;) {
        if (got + 1 >= cap) {
            if (cap > CFG_MAX_FILE) {
                rc = RV_ETOOBIG;
                goto out;
            }
            char *q = realloc(p, cap * 2);
            if (!q) {
                rc = RV_ENOMEM;
                goto out;
            }
            p = q;
            cap *= 2;
        }
        ssize_t r = read(fd, p + got, cap - 1 - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got > CFG_MAX_FILE) {
        rc = RV_ETOOBIG;
        goto out;
    }
    p[got] = '\0';
    *buf = p;
    *len = got;
    p = NULL;
    rc = 0;
out:
    free(p);
    close(fd);
    return rc;
}

void rv_secret_src_free(rv_secret_src_t *src)
{
    if (!src)
        return;
    rv_vault_cfg_t *v = &src->vault;
    free(src->directory);
    free(v->address);
    free(v->path_prefix);
    free(v->root_key);
    free(v->ca_cert);
    free(v->ca_path);
    free(v->client_cert);
    free(v->client_key);
    free(v->tls_server_name);
    if (v->access_token) {
        explicit_bzero(v->access_token, strlen(v->access_token));
        free(v->access_token);
    }
    memset(src, 0, sizeof(*src));
}

void rv_settings_free(rv_settings_t *s)
{
    if (!s)
        return;
    free(s->bootstrap_dir);
    free(s->settings_file);
    free(s->settings_ns);
    free(s->config_dir);
    free(s->secret_dir);
    free(s->discovery_ns);
    for (uint32_t i = 0; i < s->nwatch_ns; i++)
        free(s->watch_ns[i]);
    free(s->watch_ns);
    free(s->consul_root_key);
    free(s->consul_address);
    free(s->consul_datacenter);
    free(s->consul_token);
    free(s->consul_basic_auth);
    free(s->consul_ca_file);
    free(s->consul_ca_path);
    free(s->consul_cert_file);
    free(s->consul_key_file);
    for (uint32_t i = 0; i < s->nconsul_dcs; i++)
        free(s->consul_dcs[i]);
    free(s->consul_dcs);
    for (uint32_t i = 0; i < s->nconsul_tags_allow; i++)
        free(s->consul_tags_allow[i]);
    free(s->consul_tags_allow);
    free(s->consul_dns_address);
    for (uint32_t i = 0; i < s->nsecret_srcs; i++)
        rv_secret_src_free(&s->secret_srcs[i]);
    free(s->secret_srcs);
    free(s->rejected);
    memset(s, 0, sizeof(*s));
}

/* Non-empty copy of s, or NULL (also when s is NULL or empty); *oom set on failure. */
static char *dup_nonempty(const char *s, bool *oom)
{
    if (!s || !s[0])
        return NULL;
    char *p = strdup(s);
    if (!p)
        *oom = true;
    return p;
}

/* Copy the non-empty strings of in into *out and *n. 0 or RV_ENOMEM. */
static int copy_strs(const strs_t *in, char ***out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    if (!in->n)
        return 0;
    if (!(*out = calloc(in->n, sizeof(char *))))
        return RV_ENOMEM;
    for (uint32_t i = 0; i < in->n; i++) {
        if (!in->v[i][0])
            continue;
        if (!((*out)[*n] = strdup(in->v[i])))
            return RV_ENOMEM;
        (*n)++;
    }
    return 0;
}

/* Root key without surrounding slashes ("gloo/" -> "gloo"); "gloo" when empty. NULL on OOM. */
static char *clean_root(const char *k)
{
    if (!k)
        k = "";
    while (*k == '/')
        k++;
    size_t n = strlen(k);
    while (n && k[n - 1] == '/')
        n--;
    return n ? strndup(k, n) : strdup(RV_CONSUL_DEFAULT_ROOT);
}

/* Apply the Consul messages of a decoded Settings (x may be NULL: defaults), then the override. */
static int apply_consul(rv_settings_t *out, const xsettings_t *x, char *err, size_t errlen)
{
    bool oom = false;
    out->consul_dns_poll_ms = DEFAULT_DNS_POLL_MS;
    if (x) {
        const consul_doc_t *cd = &x->consul;
        if (x->kv.h.set) {
            out->consul_kv = true;
            out->consul_root_key = clean_root(x->kv.root_key);
            oom |= !out->consul_root_key;
        }
        out->consul_address = dup_nonempty(cd->http_address && cd->http_address[0] ? cd->http_address : cd->address,
                                           &oom);
        out->consul_datacenter = dup_nonempty(cd->datacenter, &oom);
        out->consul_token = dup_nonempty(cd->token, &oom);
        out->consul_ca_file = dup_nonempty(cd->ca_file, &oom);
        out->consul_ca_path = dup_nonempty(cd->ca_path, &oom);
        out->consul_cert_file = dup_nonempty(cd->cert_file, &oom);
        out->consul_key_file = dup_nonempty(cd->key_file, &oom);
        out->consul_insecure_skip_verify = cd->insecure;
        if (cd->username && cd->username[0]) {
            size_t n = strlen(cd->username) + (cd->password ? strlen(cd->password) : 0) + 2;
            if ((out->consul_basic_auth = malloc(n)))
                snprintf(out->consul_basic_auth, n, "%s%s%s", cd->username, cd->password ? ":" : "",
                         cd->password ? cd->password : "");
            else
                oom = true;
        } else if (cd->password && cd->password[0]) {
            snprintf(err, errlen, "Settings %s/default: consul.password needs consul.username (%s)", out->settings_ns,
                     out->settings_file);
            return RV_EPARSE;
        }
        if (cd->has_wait) {
            if (cd->wait_ms <= 0 || cd->wait_ms > 600000) {
                snprintf(err, errlen, "Settings %s/default: consul.waitTime must be between 1ms and 10m (%s)",
                         out->settings_ns, out->settings_file);
                return RV_EPARSE;
            }
            out->consul_wait_ms = cd->wait_ms;
        }
        out->consul_discovery = cd->sd.h.set;
        if (copy_strs(&cd->sd.dcs, &out->consul_dcs, &out->nconsul_dcs) != 0)
            oom = true;
        out->consul_dns_address = dup_nonempty(cd->dns_address, &oom);
        if (cd->has_dns_poll) {
            if (cd->dns_poll_ms <= 0) {
                snprintf(err, errlen, "Settings %s/default: consul.dnsPollingInterval must be greater than 0 (%s)",
                         out->settings_ns, out->settings_file);
                return RV_EPARSE;
            }
            out->consul_dns_poll_ms = cd->dns_poll_ms;
        }
        out->consul_consistency = (int)x->disc.consistency;
        out->consul_disc_catalog_only = x->disc.has_rivet_health && !x->disc.rivet_health;
        if (copy_strs(&x->disc.tags_allow, &out->consul_tags_allow, &out->nconsul_tags_allow) != 0)
            oom = true;
    }
    if (!out->consul_dns_address)
        oom |= !(out->consul_dns_address = strdup(DEFAULT_DNS_ADDRESS));
    if (consul_override.set) {
        out->consul_kv = true;
        out->consul_kv_stale = consul_override.stale;
        if (consul_override.addr) {
            free(out->consul_address);
            oom |= !(out->consul_address = strdup(consul_override.addr));
        }
        if (consul_override.root_key || !out->consul_root_key) {
            free(out->consul_root_key);
            oom |= !(out->consul_root_key = clean_root(consul_override.root_key));
        }
    }
    return oom ? RV_ENOMEM : 0;
}

/* Append one source to out->secret_srcs; the new element (zeroed), or NULL on OOM. */
static rv_secret_src_t *add_src(rv_settings_t *out, int type)
{
    rv_secret_src_t *v = realloc(out->secret_srcs, (out->nsecret_srcs + 1) * sizeof(*v));
    if (!v)
        return NULL;
    out->secret_srcs = v;
    rv_secret_src_t *e = &v[out->nsecret_srcs++];
    memset(e, 0, sizeof(*e));
    e->type = type;
    return e;
}

/* "/x/" -> "x" for Vault path parts; dflt when empty. NULL on OOM. */
static char *clean_part(const char *k, const char *dflt)
{
    if (!k)
        k = "";
    while (*k == '/')
        k++;
    size_t n = strlen(k);
    while (n && k[n - 1] == '/')
        n--;
    return n ? strndup(k, n) : strdup(dflt);
}

static int vault_from_doc(rv_vault_cfg_t *v, const vault_doc_t *d)
{
    bool oom = false;
    const vtls_doc_t *t = &d->tls, *o = &d->old;
    v->address = dup_nonempty(d->address, &oom);
    oom |= !(v->path_prefix = clean_part(d->path_prefix, RV_VAULT_DEFAULT_PATH_PREFIX));
    oom |= !(v->root_key = clean_part(d->root_key, RV_VAULT_DEFAULT_ROOT_KEY));
    /* tlsConfig wins over the deprecated top-level spelling of the same field */
    v->ca_cert = dup_nonempty(t->ca_cert && t->ca_cert[0] ? t->ca_cert : o->ca_cert, &oom);
    v->ca_path = dup_nonempty(t->ca_path && t->ca_path[0] ? t->ca_path : o->ca_path, &oom);
    v->client_cert = dup_nonempty(t->client_cert && t->client_cert[0] ? t->client_cert : o->client_cert, &oom);
    v->client_key = dup_nonempty(t->client_key && t->client_key[0] ? t->client_key : o->client_key, &oom);
    v->tls_server_name = dup_nonempty(t->server_name && t->server_name[0] ? t->server_name : o->server_name, &oom);
    v->insecure = t->has_insecure ? t->insecure : o->insecure;
    v->access_token = dup_nonempty(d->access_token && d->access_token[0] ? d->access_token : d->token, &oom);
    return oom ? RV_ENOMEM : 0;
}

static int cmp_dir_src(const void *a, const void *b)
{
    const rv_secret_src_t *x = a, *y = b;
    return strcmp(x->directory, y->directory);
}

/*
 * The secret sources of a decoded Settings (x NULL: none) into out, in Gloo's lookup order.
 * secretOptions together with a legacy source is refused: Gloo would silently use only
 * secretOptions. Two directory sources of one path are refused (they would shadow each other).
 */
static int apply_secrets(rv_settings_t *out, const xsettings_t *x, const char *dir, char *err, size_t errlen)
{
    if (x && x->secopts.h.set) {
        if (x->base.secret_src.h.set || x->vault.h.set) {
            snprintf(err, errlen, "Settings %s/default: secretOptions and %s cannot both be set (Gloo would use only "
                     "secretOptions) (%s)", out->settings_ns,
                     x->vault.h.set ? "vaultSecretSource" : "directorySecretSource", out->settings_file);
            return RV_EPARSE;
        }
        const ssrc_doc_t *v = x->secopts.sources.v;
        for (uint32_t i = 0; i < x->secopts.sources.n; i++) {
            if (!v[i].dir.h.set)
                continue;
            rv_secret_src_t *e = add_src(out, RV_SECRET_SRC_DIRECTORY);
            if (!e || !(e->directory = join(dir, v[i].dir.directory)))
                return RV_ENOMEM;
        }
        if (out->nsecret_srcs > 1)      /* qsort's base must not be NULL, even for 0 elements */
            qsort(out->secret_srcs, out->nsecret_srcs, sizeof(*out->secret_srcs), cmp_dir_src);
        for (uint32_t i = 1; i < out->nsecret_srcs; i++)
            if (!strcmp(out->secret_srcs[i].directory, out->secret_srcs[i - 1].directory)) {
                snprintf(err, errlen, "Settings %s/default: secretOptions.sources lists the directory %s twice (%s)",
                         out->settings_ns, out->secret_srcs[i].directory, out->settings_file);
                return RV_EPARSE;
            }
        for (uint32_t i = 0; i < x->secopts.sources.n; i++) {
            if (!v[i].vault.h.set)
                continue;
            rv_secret_src_t *e = add_src(out, RV_SECRET_SRC_VAULT);
            if (!e || vault_from_doc(&e->vault, &v[i].vault) != 0)
                return RV_ENOMEM;
        }
        return 0;
    }
    if (x && x->vault.h.set) {
        rv_secret_src_t *e = add_src(out, RV_SECRET_SRC_VAULT);
        if (!e || vault_from_doc(&e->vault, &x->vault) != 0)
            return RV_ENOMEM;
        return 0;
    }
    if (!out->secret_dir)
        return 0;
    rv_secret_src_t *e = add_src(out, RV_SECRET_SRC_DIRECTORY);
    if (!e || !(e->directory = strdup(out->secret_dir)))
        return RV_ENOMEM;
    return 0;
}

/*
 * Decode the Settings document buf into an xsettings_t allocated in a: Gloo's stored form or
 * the Kubernetes form (apiVersion gloo.solo.io/v1, kind Settings, metadata, spec), as
 * cfg_decode_resource() does for the other kinds. metadata.name must be "default" and
 * metadata.namespace ns when given. Returns 0, or -1 with the message in err.
 */
static int decode_settings(rv_arena_t *a, const char *file, const char *who, const char *ns, const char *buf,
                           size_t len, xsettings_t **out, char *err, size_t errlen)
{
    dctx_t c = { .a = a, .file = file, .who = who, .err = err, .errlen = errlen };
    const kind_info_t *ki = &cfg_kinds[RK_SETTINGS];
    char yerr[CFG_ERRLEN];
    int eline, ecol;

    pthread_once(&xsettings_once, xsettings_init);
    err[0] = '\0';
    *out = NULL;
    ynode_t *root = cfg_yaml_parse(a, buf, len, yerr, sizeof(yerr), &eline, &ecol);
    if (!root) {
        ynode_t at = { .line = eline, .col = ecol };
        return cfg_derrp(&c, &at, "%s", yerr);
    }
    if (root->type != YN_MAP)
        return cfg_derr(&c, root, NULL, "expected a mapping at the top level");
    xsettings_t *x = rv_arena_calloc(a, sizeof(*x));
    if (!x)
        return cfg_derrp(&c, root, "out of memory");
    const ynode_t *mn = cfg_ymap_get(root, "metadata");
    bool k8s = cfg_ymap_get(root, "apiVersion") || cfg_ymap_get(root, "kind") || cfg_ymap_get(root, "spec");
    if (k8s) {
        const ynode_t *spec = NULL;
        for (uint32_t i = 0; i < root->n; i++) {
            const ynode_t *k = root->kids[2 * i], *v = root->kids[2 * i + 1];
            if (!strcmp(k->s, "apiVersion")) {
                if (v->type != YN_SCALAR || strcmp(v->s, ki->api) != 0)
                    return cfg_derr(&c, v, "apiVersion", "expected %s for a %s", ki->api, ki->kind);
            } else if (!strcmp(k->s, "kind")) {
                if (v->type != YN_SCALAR || strcmp(v->s, ki->kind) != 0)
                    return cfg_derr(&c, v, "kind", "expected %s", ki->kind);
            } else if (!strcmp(k->s, "spec")) {
                spec = v;
            } else if (strcmp(k->s, "metadata") != 0 && strcmp(k->s, "status") != 0) {
                return cfg_derr(&c, k, k->s,
                                "unknown field (a Kubernetes-form resource has apiVersion, kind, metadata and spec)");
            }
        }
        if (!cfg_ymap_get(root, "apiVersion"))
            return cfg_derr(&c, root, "apiVersion", "is required in the Kubernetes form (%s)", ki->api);
        if (!cfg_ymap_get(root, "kind"))
            return cfg_derr(&c, root, "kind", "is required in the Kubernetes form (%s)", ki->kind);
        if (spec && !(spec->type == YN_SCALAR && spec->is_null)) {
            size_t old = cfg_path_push(&c, "spec");
            if (spec->type == YN_MAP && cfg_ymap_get(spec, "metadata"))
                return cfg_derr(&c, cfg_ymap_get(spec, "metadata"), "metadata", "belongs at the top level, not in spec");
            if (cfg_decode_msg(&c, &xsettings_desc, spec, x) < 0)
                return -1;
            cfg_path_pop(&c, old);
        }
        if (mn && !(mn->type == YN_SCALAR && mn->is_null)) {
            size_t old = cfg_path_push(&c, "metadata");
            if (cfg_decode_msg(&c, &cfg_meta_desc, mn, &x->base.meta) < 0)
                return -1;
            cfg_path_pop(&c, old);
        }
    } else if (cfg_decode_msg(&c, &xsettings_desc, root, x) < 0) {
        return -1;
    }
    const meta_t *m = &x->base.meta;
    cfg_path_pop(&c, 0);
    if (m->name && m->name[0] && strcmp(m->name, "default") != 0)
        return cfg_derr(&c, cfg_field_node(mn, "name"), NULL,
                        "metadata.name '%s' does not match the file name 'default' (the file must be named "
                        "<metadata.name>.yaml)",
                        m->name);
    if (m->ns && m->ns[0] && ns && strcmp(m->ns, ns) != 0)
        return cfg_derr(&c, cfg_field_node(mn, "namespace"), NULL,
                        "metadata.namespace '%s' does not match the folder '%s' it is stored in", m->ns, ns);
    *out = x;
    return 0;
}

/* Append ns to the watch list unless it is there already. */
static int add_watch(rv_settings_t *s, const char *ns)
{
    for (uint32_t i = 0; i < s->nwatch_ns; i++)
        if (!strcmp(s->watch_ns[i], ns))
            return 0;
    char **w = realloc(s->watch_ns, (s->nwatch_ns + 1) * sizeof(*w));
    if (!w)
        return RV_ENOMEM;
    s->watch_ns = w;
    if (!(w[s->nwatch_ns] = strdup(ns)))
        return RV_ENOMEM;
    s->nwatch_ns++;
    return 0;
}

/* Apply a decoded Settings document to out. */
static int apply_doc(rv_settings_t *out, const settings_doc_t *d, const char *dir, char *err, size_t errlen)
{
    out->discovery_ns = dup_str(d->discovery_ns && d->discovery_ns[0] ? d->discovery_ns : RV_DEFAULT_NAMESPACE);
    out->config_dir = d->config_src.h.set ? join(dir, d->config_src.directory) : dup_str(dir);
    /* Gloo's directorySecretSource keeps secrets under <directory>/secrets/<ns>/ (a file client
     * rooted at the directory plus the plural name); secretOptions' directory has no such level */
    if (d->secret_src.h.set) {
        char *base = join(dir, d->secret_src.directory);
        out->secret_dir = base ? join(base, "secrets") : NULL;
        free(base);
    } else {
        out->secret_dir = join(dir, "secrets");
    }
    if (!out->discovery_ns || !out->config_dir || !out->secret_dir)
        return RV_ENOMEM;
    if (d->has_refresh) {
        if (d->refresh_ms <= 0) {
            snprintf(err, errlen, "Settings %s/default: refreshRate must be greater than 0 (%s)", out->settings_ns,
                     out->settings_file);
            return RV_EPARSE;
        }
        out->refresh_ms = d->refresh_ms;
    }
    for (uint32_t i = 0; i < d->watch_ns.n; i++) {
        if (!d->watch_ns.v[i][0])
            continue;
        if (add_watch(out, d->watch_ns.v[i]) != 0)
            return RV_ENOMEM;
    }
    /* Gloo always watches the discovery namespace */
    if (out->nwatch_ns && add_watch(out, out->discovery_ns) != 0)
        return RV_ENOMEM;
    const cbcfg_t *cb = &d->gloo_opts.cb;
    out->has_cb_max_connections = cb->has_max_connections;
    out->cb_max_connections = cb->max_connections;
    out->has_cb_max_pending = cb->has_max_pending;
    out->cb_max_pending = cb->max_pending;
    out->has_cb_max_requests = cb->has_max_requests;
    out->cb_max_requests = cb->max_requests;
    out->has_cb_max_retries = cb->has_max_retries;
    out->cb_max_retries = cb->max_retries;
    return 0;
}

int rv_settings_load(const char *dir, const char *ns, rv_settings_t *out, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL, *path = NULL, *who = NULL;
    size_t len = 0;
    rv_arena_t a;
    int rc;

    memset(out, 0, sizeof(*out));
    rv_arena_init(&a, 0);
    if (err && errlen)
        err[0] = '\0';
    if (!ns || !ns[0])
        ns = RV_DEFAULT_NAMESPACE;
    if ((!dir || !dir[0]) && consul_override.set) {
        /* rivet run --consul without --dir: defaults, config from Consul KV */
        out->refresh_ms = DEFAULT_REFRESH_MS;
        out->settings_ns = strdup(ns);
        out->discovery_ns = strdup(ns);
        if (!out->settings_ns || !out->discovery_ns)
            goto oom;
        rc = apply_consul(out, NULL, err, errlen);
        if (rc == RV_ENOMEM)
            goto oom;
        return 0;
    }
    if (!dir || !dir[0]) {
        snprintf(err, errlen, "no config directory given");
        return RV_ENOTFOUND;
    }
    DIR *dh = opendir(dir);
    if (!dh || stat(dir, &st) != 0) {
        snprintf(err, errlen, "cannot read directory %s: %s", dir, strerror(errno));
        if (dh)
            closedir(dh);
        return RV_ENOTFOUND;
    }
    closedir(dh);

    out->refresh_ms = DEFAULT_REFRESH_MS;
    out->bootstrap_dir = strdup(dir);
    out->settings_ns = strdup(ns);
    if (!out->bootstrap_dir || !out->settings_ns)
        goto oom;

    static const char *const names[] = { "default.yaml", "default.yml" };
    for (size_t i = 0; i < RV_ARRAY_LEN(names) && !buf; i++) {
        char rel[512];
        snprintf(rel, sizeof(rel), "%s/%s", ns, names[i]);
        free(path);
        if (!(path = join(dir, rel)))
            goto oom;
        rc = cfg_read_file(path, &buf, &len);
        if (rc == RV_ENOTFOUND)
            continue;
        if (rc == RV_ENOMEM)
            goto oom;
        if (rc != 0) {
            snprintf(err, errlen, "Settings %s/default: cannot read %s: %s", ns, path,
                     rc == RV_ETOOBIG ? "file is larger than 4 MiB" : strerror(errno));
            rc = RV_EPARSE;
            goto fail;
        }
    }
    if (!buf) {
        /* no Settings: DIR is the config directory, the namespace is where defaults go */
        free(path);
        path = NULL;
        out->discovery_ns = strdup(ns);
        out->config_dir = strdup(dir);
        out->secret_dir = join(dir, "secrets");
        if (!out->discovery_ns || !out->config_dir || !out->secret_dir)
            goto oom;
        rc = apply_secrets(out, NULL, dir, err, errlen);
        if (rc == 0)
            rc = apply_consul(out, NULL, err, errlen);
        if (rc == RV_ENOMEM)
            goto oom;
        return 0;
    }
    out->settings_file = path;
    path = NULL;
    size_t wl = strlen(ns) + 32;
    if (!(who = malloc(wl)))
        goto oom;
    snprintf(who, wl, "Settings %s/default", ns);
    xsettings_t *x;
    if (decode_settings(&a, out->settings_file, who, ns, buf, len, &x, err, errlen) < 0) {
        rc = RV_EPARSE;
        goto fail;
    }
    rc = apply_doc(out, &x->base, dir, err, errlen);
    if (rc == 0)
        rc = apply_secrets(out, x, dir, err, errlen);
    if (rc == 0)
        rc = apply_consul(out, x, err, errlen);
    if (rc == RV_ENOMEM)
        goto oom;
    if (rc != 0)
        goto fail;
    free(buf);
    free(who);
    rv_arena_free(&a);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    rc = RV_ENOMEM;
fail:
    free(buf);
    free(path);
    free(who);
    rv_arena_free(&a);
    rv_settings_free(out);
    return rc;
}
