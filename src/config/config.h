/*
 * config.h - Gloo Edge resources from a directory: bootstrap Settings, the resource store
 * (last accepted version of each resource), and the build of a snapshot.
 *
 * Thread: the control thread (and the CLI). Nothing here runs on a worker.
 */
#ifndef RV_CONFIG_H
#define RV_CONFIG_H

#include "config/snapshot-t.h"

#define RV_DEFAULT_NAMESPACE "gloo-system"

/*
 * Vault client settings (Settings vaultSecretSource or secretOptions.sources[].vault, Gloo's
 * VaultSecrets message). settings.c decodes them (defaults applied, deprecated top-level TLS
 * fields folded into the tlsConfig ones, aws auth refused by name); the Vault secret source
 * (src/control/vault.c) owns what they mean, including the VAULT_* environment fallbacks.
 */
typedef struct rv_vault_cfg_s {
    char *address;              /* address; NULL = VAULT_ADDR / Vault's default */
    char *path_prefix;          /* pathPrefix, default "secret" (the KV mount) */
    char *root_key;             /* rootKey, default "gloo" */
    char *ca_cert, *ca_path;    /* tlsConfig.caCert / caPath (or the deprecated top-level ones) */
    char *client_cert, *client_key;
    char *tls_server_name;
    bool insecure;              /* tlsConfig.insecure (or deprecated insecure) */
    char *access_token;         /* accessToken (or deprecated token); NULL = VAULT_TOKEN / AppRole */
} rv_vault_cfg_t;

#define RV_VAULT_DEFAULT_PATH_PREFIX "secret"
#define RV_VAULT_DEFAULT_ROOT_KEY "gloo"

/* One secret source; its index in rv_settings_t.secret_srcs is its rv_secrets_t source index. */
enum rv_secret_src_type { RV_SECRET_SRC_DIRECTORY = 1, RV_SECRET_SRC_VAULT = 2 };
typedef struct rv_secret_src_s {
    int type;                   /* enum rv_secret_src_type */
    char *directory;            /* DIRECTORY: the root holding <ns>/<name>.yaml (absolute or DIR-relative resolved) */
    rv_vault_cfg_t vault;       /* VAULT */
} rv_secret_src_t;

/* What the bootstrap Settings decide (or the defaults without a Settings file). */
typedef struct rv_settings_s {
    char *bootstrap_dir;        /* --dir as given */
    char *settings_file;        /* path of DIR/<ns>/default.yaml when it exists, else NULL */
    char *config_dir;           /* directoryConfigSource.directory (relative to DIR), else DIR */
    char *secret_dir;           /* directorySecretSource.directory + "/secrets" (Gloo's layout), else DIR/secrets */
    char *discovery_ns;         /* discoveryNamespace, default gloo-system */
    char **watch_ns;            /* watchNamespaces; NULL/0 = all */
    uint32_t nwatch_ns;
    int64_t refresh_ms;         /* refreshRate, default 60000 (Gloo's default when unset) */
    char *settings_ns;          /* --namespace: the folder of the Settings file (added) */

    /* Consul: Settings.consulKvSource, .consul, .consulDiscovery (or rivet run --consul). */
    bool consul_kv;             /* config comes from Consul KV, not config_dir */
    char *consul_root_key;      /* consulKvSource.rootKey, default "gloo" */
    char *consul_address;       /* consul.httpAddress (or deprecated address); NULL = CONSUL_HTTP_ADDR/default */
    char *consul_datacenter;    /* consul.datacenter; NULL = the agent's */
    char *consul_token;         /* consul.token; NULL = CONSUL_HTTP_TOKEN(_FILE) */
    char *consul_basic_auth;    /* "username:password" from consul.username/password, or NULL */
    char *consul_ca_file, *consul_ca_path, *consul_cert_file, *consul_key_file;
    bool consul_insecure_skip_verify;
    bool consul_kv_stale;       /* ?stale on KV reads (default: consistent, as Gloo's config client) */
    int64_t consul_wait_ms;     /* consul.waitTime; 0 = unset (the KV watch then waits refreshRate) */
    bool consul_discovery;      /* consul.serviceDiscovery is present */
    char **consul_dcs;          /* consul.serviceDiscovery.dataCenters; NULL/0 = all */
    uint32_t nconsul_dcs;
    int consul_consistency;     /* enum rv_consul_consistency (consulDiscovery.consistencyMode) */
    char **consul_tags_allow;   /* consulDiscovery.serviceTagsAllowlist; NULL/0 = every service */
    uint32_t nconsul_tags_allow;
    bool consul_disc_catalog_only;  /* consulDiscovery.rivetHealthChecks: false (rivet's extension):
                                     * failing instances receive traffic too, as in Gloo */
    char *consul_dns_address;   /* consul.dnsAddress, default 127.0.0.1:8600 */
    int64_t consul_dns_poll_ms; /* consul.dnsPollingInterval, default 5000 */

    /*
     * Secret sources in lookup order, Gloo's precedence kubernetes > directory > vault
     * (directories sorted by path, then vaults in written order, as Gloo's SourceList sort):
     * secretOptions.sources, else the one legacy source (directorySecretSource or
     * vaultSecretSource), else the directory secret_dir. Never empty after a load from a
     * directory; empty with --consul and no directory and no secret source.
     */
    rv_secret_src_t *secret_srcs;
    uint32_t nsecret_srcs;

    /* Settings.gloo.circuitBreakers: defaults for every upstream's limits. A limit applies when
     * its has_ flag is set; else (and for an Upstream's own circuitBreakers field) Envoy's. */
    bool has_cb_max_connections, has_cb_max_pending, has_cb_max_requests, has_cb_max_retries;
    uint32_t cb_max_connections, cb_max_pending, cb_max_requests, cb_max_retries;

    /* Set by rivet run when a newer Settings file was refused and these settings stay in
     * force: the reason (malloc), shown as the Settings status; NULL otherwise. */
    char *rejected;
} rv_settings_t;

enum rv_consul_consistency { RV_CONSUL_DEFAULT = 0, RV_CONSUL_STALE, RV_CONSUL_CONSISTENT };

#define RV_CONSUL_DEFAULT_ROOT "gloo"

/*
 * Process-wide override of the config source, for `rivet run --consul ADDR`: every later
 * rv_settings_load() selects Consul KV at addr (NULL keeps Settings' or the environment's
 * address) with root_key (NULL keeps Settings' or "gloo"); stale adds ?stale to KV reads.
 * With the override set, dir may be NULL or "" (no bootstrap directory, no Settings file).
 * Call before any thread starts (main thread, once).
 */
void rv_settings_consul_override(const char *addr, const char *root_key, bool stale);

/*
 * Read DIR/<ns>/default.yaml when present. Returns 0; RV_ENOTFOUND if DIR cannot be read
 * (the CLI exits 2); RV_EPARSE when the Settings file is invalid or uses a field rivet does
 * not support, with a message in err naming the file and field.
 */
int rv_settings_load(const char *dir, const char *ns, rv_settings_t *out, char *err, size_t errlen);
void rv_settings_free(rv_settings_t *s);

/* Free what one secret source owns (the access token is wiped) and zero it. NULL is ignored. */
void rv_secret_src_free(rv_secret_src_t *src);

typedef struct rv_store_s rv_store_t;

/* New empty store; NULL on OOM. */
rv_store_t *rv_store_new(void);
void rv_store_free(rv_store_t *st);

/*
 * Re-read the config directory of s (plurals gateways, virtualservices, routetables,
 * upstreams, upstreamgroups; <plural>/<ns>/<name>.yaml|.yml; only watch_ns when set).
 * Every file is decoded strictly; a file that fails keeps the resource's last accepted
 * version and records the rejection; a file that disappeared removes its resource.
 * Returns 1 when anything changed since the last scan (content compared), 0 when nothing
 * did, RV_ENOTFOUND when the directory cannot be read.
 */
int rv_store_scan_dir(rv_store_t *st, const rv_settings_t *s);

/*
 * Translate the store into a new snapshot: resolve references, flatten delegation, merge
 * options, compile regexes, resolve static hostnames (blocking getaddrinfo: control thread
 * only), compute every resource's status and the JSON dump. Resource-level problems never
 * fail the build (the resource is Rejected or Warning); the build fails only on OOM.
 * The new snapshot has refs == 1 (the caller's). Returns 0 or RV_ENOMEM.
 */
int rv_snapshot_build(rv_store_t *st, const rv_settings_t *s, rv_snapshot_t **out);

/*
 * Listener check for the builds that follow (process-wide; rivet run sets the data plane's,
 * rivet validate and apply leave none). fn returns 0 when listener l can be bound now (its
 * port free, or already one of ours), else a positive errno. A Gateway whose listener fails
 * is Rejected with the reason and left out of the snapshot - or, when its last accepted
 * version binds elsewhere, that version keeps serving. NULL removes the check.
 * Control thread, before the builds that use it.
 */
typedef int (*rv_bind_check_fn)(const rv_listener_cfg_t *l);
void rv_config_set_bind_check(rv_bind_check_fn fn);

/* ---- resource kinds, for the CLI and the Consul KV layout ------------------------------ */

/* The five Gloo kinds rivet serves, in the store's order. */
enum rv_kind { RV_KIND_GATEWAY = 0, RV_KIND_VS, RV_KIND_RT, RV_KIND_US, RV_KIND_UG, RV_KIND_COUNT };

/* Not a config kind: Secrets live in the secret store (secret.h). rv_kind_detect and
 * rv_kind_parse return it; rv_kind_name says "Secret", rv_kind_plural "secrets". */
#define RV_KIND_SECRET 100

const char *rv_kind_name(int kind);     /* "VirtualService" */
const char *rv_kind_plural(int kind);   /* "virtualservices" */
const char *rv_kind_api(int kind);      /* "gateway.solo.io/v1" */

/*
 * Kind named by s: Gloo's kind ("VirtualService"), its lower-case singular and plural
 * ("virtualservice(s)") or glooctl's short name (gw, vs, rt, us, ug); case-insensitive.
 * "Secret"/"secret(s)" gives RV_KIND_SECRET. Returns the enum rv_kind, RV_KIND_SECRET, or -1.
 */
int rv_kind_parse(const char *s);

/*
 * Kind of one YAML/JSON document: the Kubernetes form's `kind` (kind Secret -> RV_KIND_SECRET),
 * else Gloo's stored form recognised by its fields: virtualHost -> VirtualService; bindPort,
 * httpGateway, tcpGateway or hybridGateway -> Gateway; destinations -> UpstreamGroup; routes ->
 * RouteTable; tls (or oauth, apiKey, header, credentials, encryption, extensions, which the
 * secret decoder then refuses by name), or aws holding accessKey/secretKey/sessionToken ->
 * RV_KIND_SECRET (an Upstream's aws holds region, lambdaFunctions...); an upstream type (static, kube, consul,
 * aws, awsEc2, azure, pipe, gcp) -> Upstream. Returns the enum rv_kind or RV_KIND_SECRET, or
 * -1 with the reason in err (malformed YAML, unknown kind, no telling field).
 */
int rv_kind_detect(const char *doc, size_t len, char *err, size_t errlen);

/*
 * Decode one document of kind strictly, as the store would (src names it in messages).
 * ns_default fills a missing metadata.namespace. On success returns 0 with *ns and *name
 * (malloc'd) and *kube (the document is in the Kubernetes form); else RV_EPARSE with the
 * reason in err, or RV_ENOMEM.
 */
int rv_resource_check(int kind, const char *src, const char *doc, size_t len, const char *ns_default, char **ns,
                      char **name, bool *kube, char *err, size_t errlen);

/*
 * Gloo's stored form of a valid document of kind as JSON (fields beside metadata; metadata
 * carries name and namespace; status dropped), the value Gloo itself keeps in Consul.
 * Returns a malloc'd NUL-terminated string (length in *outlen), or NULL (invalid or OOM).
 */
char *rv_resource_stored_json(int kind, const char *doc, size_t len, const char *ns, const char *name,
                              size_t *outlen);

/* ---- Consul KV layout: <root>/<group>/<version>/<Kind>/<namespace>/<name> ------------------- */

typedef struct rv_kv_pair_s {
    const char *key;            /* full key */
    const char *value;          /* raw bytes (not base64), may be NULL when len is 0 */
    size_t len;
    uint64_t modify_index;
} rv_kv_pair_t;

/* Key of a resource into buf. 0, or RV_ETOOBIG when buf is too small. */
int rv_kv_key(char *buf, size_t n, const char *root, int kind, const char *ns, const char *name);

/*
 * Split key (under root) into kind, namespace and name (pointers into key, with lengths).
 * Returns 0 for a resource of a kind rivet serves; RV_EUNSUPPORTED for another Gloo kind
 * (Proxy, RouteOption, ...: *kind is -1); RV_ENOTFOUND for a key of another shape.
 */
int rv_kv_parse_key(const char *root, const char *key, int *kind, const char **ns, size_t *nslen,
                    const char **name, size_t *namelen);

/*
 * Make the store hold exactly the resources of a full listing of Consul KV under root (the
 * keys of a recursive read). Each value is decoded strictly (source = its key); a key whose
 * path disagrees with the value's metadata is rejected saying so; a value that fails keeps
 * the resource's last accepted version; a key that disappeared removes its resource. Keys of
 * other kinds or shapes, and namespaces s does not watch, are skipped. Returns 1 when anything
 * changed, 0 when nothing did, RV_ENOMEM. Control thread (or CLI).
 */
int rv_store_load_kv(rv_store_t *st, const rv_settings_t *s, const char *root, const rv_kv_pair_t *kv, size_t n);

/*
 * The initial endpoint set of snap: its own cluster table, no copy (takes a reference on snap).
 * Returns NULL on OOM. Any thread holding a reference on snap.
 */
rv_endpoint_set_t *rv_endpoint_set_initial(rv_snapshot_t *snap);

/* Take / drop a reference on an endpoint set. The last release frees it and drops its
 * snapshot reference (any thread). NULL is ignored by release. */
void rv_endpoint_set_ref(rv_endpoint_set_t *es);
void rv_endpoint_set_release(rv_endpoint_set_t *es);

/*
 * /config_dump JSON of snap with the endpoints of es (es NULL or initial: snap->config_json
 * copied). Returns a malloc'd NUL-terminated string and its length in *len, NULL on OOM.
 * Any thread holding references on both.
 */
char *rv_endpoint_set_dump_json(const rv_snapshot_t *snap, const rv_endpoint_set_t *es, size_t *len);

/* Take / drop a reference. The last release frees the snapshot (any thread). */
void rv_snapshot_ref(rv_snapshot_t *snap);
void rv_snapshot_release(rv_snapshot_t *snap);

/* Name of a state ("Accepted", ...). */
const char *rv_state_name(int state);

#endif/* Control thread: a file some ssl listener of snap was built from (sslFiles) changed since the
 * build (inode, size, times; a stat per file): rebuild to serve it. */
bool rv_snapshot_tls_files_changed(const rv_snapshot_t *snap);


