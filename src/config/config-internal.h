/*
 * config-internal.h - what the files of src/config/ share: the YAML node tree (yaml.c), the
 * decoded Gloo resource model and its strict decoder (decode.c, schema.c), the store's
 * resource records (store.c), the translator (translate.c) and the JSON writer (json.c).
 *
 * Not for use outside src/config/ (and its unit tests).
 */
#ifndef RV_CONFIG_INTERNAL_H
#define RV_CONFIG_INTERNAL_H

#include <sys/stat.h>
#include <sys/types.h>

#include "config/config.h"
#include "core/arena.h"

/* ---- limits ------------------------------------------------------------------------- */

#define CFG_MAX_FILE      (4u << 20)   /* bytes of one resource file */
#define CFG_MAX_DEPTH     40           /* nesting of mappings/sequences */
#define CFG_MAX_NODES     500000u      /* nodes after alias expansion (billion laughs guard) */
#define CFG_MAX_ANCHORS   4096
#define CFG_MAX_DELEGATION 16          /* depth of VirtualService -> RouteTable -> ... chains */
#define CFG_ERRLEN        1024

/* ---- YAML tree (yaml.c) ------------------------------------------------------------ */

enum ynode_type { YN_SCALAR = 0, YN_MAP, YN_SEQ };

typedef struct ynode_s ynode_t;
struct ynode_s {
    uint8_t type;           /* enum ynode_type */
    bool plain;             /* scalar written without quotes (may be null/bool/number) */
    bool is_null;           /* plain null, ~, or empty */
    bool force_str;         /* tagged !!str */
    int line, col;          /* 1-based position of the node (0 when unknown) */
    const char *s;          /* scalar text, NUL-terminated (never holds a NUL) */
    size_t len;
    ynode_t **kids;         /* map: key0, val0, key1, val1 ...; seq: items */
    uint32_t n;             /* map: pairs; seq: items */
    uint64_t weight;        /* nodes in the subtree once aliases are expanded */
};

/*
 * Parse one YAML document (buf, len bytes) into a tree allocated in a. Rejects (returns NULL
 * with a message in err, its 1-based position in eline and ecol, 0 when none) malformed
 * YAML, more than one document, an empty document, non-UTF-8, NUL characters, duplicate
 * keys, non-scalar keys, unknown tags, nesting deeper than CFG_MAX_DEPTH and documents
 * expanding to more than CFG_MAX_NODES nodes.
 */
ynode_t *cfg_yaml_parse(rv_arena_t *a, const char *buf, size_t len, char *err, size_t errlen, int *eline,
                        int *ecol);

/* Value of key in map node m (exact match), or NULL. */
ynode_t *cfg_ymap_get(const ynode_t *m, const char *key);

/* ---- decoded model ----------------------------------------------------------------- */

/* Every decoded message starts with this header. */
typedef struct mhdr_s {
    bool set;               /* the message was present (and not null) */
    int line, col;
} mhdr_t;

typedef struct strs_s { char **v; uint32_t n; } strs_t;
typedef struct u32s_s { uint32_t *v; uint32_t n; } u32s_t;
typedef struct labels_s { char **k; char **v; uint32_t n; } labels_t;
typedef struct list_s { void *v; uint32_t n; } list_t;   /* array of one message type */

typedef struct ref_s { mhdr_t h; char *name; char *ns; } ref_t;

typedef struct meta_s { mhdr_t h; char *name; char *ns; labels_t labels; } meta_t;

typedef struct hval_s { mhdr_t h; char *key; char *value; } hval_t;
typedef struct hvopt_s { mhdr_t h; hval_t header; bool append; bool has_append; } hvopt_t;
typedef struct hman_s {
    mhdr_t h;
    list_t req_add;         /* hvopt_t */
    strs_t req_remove;
    list_t resp_add;        /* hvopt_t */
    strs_t resp_remove;
} hman_t;

typedef struct backoff_s {
    mhdr_t h;
    int64_t base_ms; bool has_base;
    int64_t max_ms; bool has_max;
} backoff_t;

typedef struct retry_s {
    mhdr_t h;
    char *retry_on;
    uint32_t on_bits;       /* parsed retry_on (enum rv_retry_on) */
    uint32_t num_retries; bool has_num;
    int64_t per_try_ms; bool has_per_try;
    backoff_t backoff;
    u32s_t codes;
} retry_t;

typedef struct regexpat_s { mhdr_t h; char *regex; } regexpat_t;
typedef struct regexrw_s { mhdr_t h; regexpat_t pattern; char *subst; bool has_subst; } regexrw_t;

typedef struct ropts_s {
    mhdr_t h;
    char *prefix_rewrite; bool has_prefix_rewrite;
    regexrw_t regex_rewrite;
    int64_t timeout_ms; bool has_timeout;
    retry_t retries;
    hman_t headers;
    char *host_rewrite; bool has_host_rewrite;
    bool auto_host; bool has_auto_host;
} ropts_t;

typedef struct hmatch_s {
    mhdr_t h;
    char *name; char *value; bool has_value;
    bool regex; bool invert;
} hmatch_t;

typedef struct qmatch_s { mhdr_t h; char *name; char *value; bool has_value; bool regex; } qmatch_t;

typedef struct matcher_s {
    mhdr_t h;
    char *prefix; bool has_prefix;
    char *exact; bool has_exact;
    char *regex; bool has_regex;
    bool case_sensitive; bool has_cs;
    list_t headers;         /* hmatch_t */
    list_t query;           /* qmatch_t */
    strs_t methods;
} matcher_t;

/* Route destination consul{serviceName, tags, dataCenters} (resolved against the discovery view). */
typedef struct cdest_s { mhdr_t h; char *service; strs_t tags; strs_t dcs; } cdest_t;
typedef struct dest_s { mhdr_t h; ref_t upstream; cdest_t consul; } dest_t;
typedef struct wdopts_s { mhdr_t h; hman_t headers; } wdopts_t;
typedef struct wdest_s { mhdr_t h; dest_t dest; uint32_t weight; bool has_weight; wdopts_t opts; } wdest_t;
typedef struct multi_s { mhdr_t h; list_t dests; } multi_t;  /* wdest_t */
typedef struct raction_s { mhdr_t h; dest_t single; multi_t multi; ref_t ug; } raction_t;

typedef struct redirect_s {
    mhdr_t h;
    char *host;
    char *path; bool has_path;
    char *prefix; bool has_prefix;
    uint32_t code_enum;     /* 0..4 */
    bool https;
    bool strip_query;
    uint32_t port;
} redirect_t;

typedef struct direct_s { mhdr_t h; uint32_t status; char *body; } direct_t;
typedef struct rtsel_s { mhdr_t h; strs_t namespaces; labels_t labels; } rtsel_t;
typedef struct delegate_s {
    mhdr_t h;
    char *name; char *ns;   /* legacy form */
    ref_t ref;
    rtsel_t selector;
} delegate_t;

typedef struct route_s {
    mhdr_t h;
    list_t matchers;        /* matcher_t */
    raction_t ra;
    redirect_t redirect;
    direct_t direct;
    delegate_t delegate;
    ropts_t opts;
    char *name;
} route_t;

typedef struct vhopts_s { mhdr_t h; hman_t headers; retry_t retries; } vhopts_t;
typedef struct vhost_s { mhdr_t h; strs_t domains; list_t routes; vhopts_t opts; } vhost_t;

/* VirtualService sslConfig (Gloo SslConfig): downstream TLS. */
typedef struct sslfiles_s { mhdr_t h; char *cert; char *key; char *root_ca; char *ocsp; } sslfiles_t;
enum { TLSV_AUTO = 0, TLSV_1_0, TLSV_1_1, TLSV_1_2, TLSV_1_3 };
typedef struct sslparams_s {
    mhdr_t h;
    uint32_t min_ver, max_ver;  /* TLSV_* */
    strs_t ciphers;
    strs_t curves;
} sslparams_t;
enum { OCSP_LENIENT = 0, OCSP_STRICT, OCSP_MUST_STAPLE };
typedef struct sslcfg_s {
    mhdr_t h;
    ref_t secret;               /* secretRef */
    sslfiles_t files;           /* sslFiles */
    strs_t sni;                 /* sniDomains */
    strs_t san;                 /* verifySubjectAltName */
    sslparams_t params;
    strs_t alpn;
    bool one_way;
    bool no_resume;             /* disableTlsSessionResumption */
    uint32_t ocsp_policy;       /* OCSP_* */
} sslcfg_t;

typedef struct vs_s { mhdr_t h; meta_t meta; vhost_t vh; char *display_name; sslcfg_t ssl; } vs_t;
typedef struct rt_s { mhdr_t h; meta_t meta; list_t routes; int32_t weight; } rt_t;

typedef struct httpgw_s {
    mhdr_t h;
    list_t vss;             /* ref_t */
    labels_t selector;
    strs_t vs_namespaces;
} httpgw_t;

typedef struct gw_s {
    mhdr_t h;
    meta_t meta;
    char *bind_address;
    uint32_t bind_port;
    httpgw_t http;
    bool ssl;
    strs_t proxy_names;
    bool use_proxy_proto;
} gw_t;

typedef struct shost_s {
    mhdr_t h;
    char *addr; uint32_t port; uint32_t weight; bool has_weight;
    char *sni_addr;         /* SNI for this host (upstream TLS) */
} shost_t;
typedef struct static_s {
    mhdr_t h;
    list_t hosts;
    bool use_tls; bool has_use_tls;     /* absent: on when a host has port 443 (Gloo) */
    bool auto_sni; bool has_auto_sni;   /* autoSniRewrite, default true */
} static_t;
/* Upstream sslConfig (Gloo's UpstreamSslConfig): TLS from rivet to the upstream. */
typedef struct usslfiles_s { mhdr_t h; char *cert; char *key; char *root_ca; } usslfiles_t;
typedef struct utlsparams_s {
    mhdr_t h;
    uint32_t min_ver, max_ver;  /* enum: 0 TLS_AUTO, 1 TLSv1_0, 2 TLSv1_1, 3 TLSv1_2, 4 TLSv1_3 */
    strs_t ciphers;
    strs_t curves;
} utlsparams_t;
typedef struct ussl_s {
    mhdr_t h;
    ref_t secret;           /* secretRef (a Gloo tls secret) */
    usslfiles_t files;      /* sslFiles */
    char *sni;
    strs_t san;             /* verifySubjectAltName */
    utlsparams_t params;
    strs_t alpn;            /* only "http/1.1" */
    bool allow_reneg;
    bool one_way;           /* oneWayTls: never present a client certificate */
} ussl_t;
typedef struct lbrr_s { mhdr_t h; } lbrr_t;
typedef struct lblr_s { mhdr_t h; uint32_t choice_count; bool has_choice; } lblr_t;
typedef struct lbcfg_s {
    mhdr_t h; lbrr_t rr; lblr_t lr; lbrr_t random;
    double panic_pct; bool has_panic;   /* healthyPanicThreshold (with healthChecks; default 50) */
} lbcfg_t;
/* Upstream consul{...}: instances of serviceName from the discovery view, filtered. */
typedef struct cus_s {
    mhdr_t h;
    char *service;
    strs_t subset_tags;     /* accepted; subsets are not implemented (no route subset selection) */
    strs_t service_tags;    /* deprecated spelling of subsetTags */
    strs_t instance_tags;   /* an instance must carry every one */
    strs_t blacklist;       /* an instance must carry none */
    strs_t dcs;             /* only these datacenters; empty = every one */
    uint32_t consistency;   /* consistencyMode: DefaultMode only (cus_check refuses the others) */
    mhdr_t qopts;           /* queryOptions: accepted, nothing to keep */
} cus_t;
/* Upstream connectionConfig (Gloo's ConnectionConfig): per-upstream connection settings. */
typedef struct tcpka_s {
    mhdr_t h;
    uint32_t probes;        /* keepaliveProbes; 0 = the OS default */
    int64_t time_ms; bool has_time;     /* keepaliveTime (rounded up to seconds when applied) */
    int64_t intvl_ms; bool has_intvl;   /* keepaliveInterval (same) */
} tcpka_t;
typedef struct httpopts_s {
    mhdr_t h;
    int64_t idle_ms; bool has_idle;     /* idleTimeout; 0 = never reaped */
    uint32_t max_headers;               /* maxHeadersCount; 0 = the default (100) */
    uint32_t underscores;               /* headersWithUnderscoresAction: ALLOW only */
} httpopts_t;
typedef struct conncfg_s {
    mhdr_t h;
    uint32_t max_requests;              /* maxRequestsPerConnection; 0 = unlimited */
    int64_t connect_ms; bool has_connect;
    tcpka_t ka;                         /* tcpKeepalive */
    httpopts_t http;                    /* commonHttpProtocolOptions */
} conncfg_t;
/* Upstream healthChecks[] (Envoy core HealthCheck): one entry at most (hc_check). */
typedef struct hcrange_s { mhdr_t h; uint32_t start, end; bool has_start, has_end; } hcrange_t;
typedef struct hchttp_s {
    mhdr_t h;
    char *path;             /* required */
    char *host;             /* NULL: the Upstream's Gloo cluster name "<name>_<namespace>" */
    list_t statuses;        /* expectedStatuses: hcrange_t, [start, end); empty = 200 only */
} hchttp_t;
typedef struct hc_s {
    mhdr_t h;
    int64_t timeout_ms; bool has_timeout;
    int64_t interval_ms; bool has_interval;
    int64_t jitter_ms;      /* intervalJitter: 0..jitter added to each interval */
    uint32_t unhealthy; bool has_unhealthy;
    uint32_t healthy; bool has_healthy;
    hchttp_t http;          /* httpHealthCheck */
    mhdr_t tcp;             /* tcpHealthCheck: connect only */
} hc_t;
/* Upstream circuitBreakers (Gloo's CircuitBreakerConfig; UInt32Value fields). */
typedef struct cbcfg_s {
    mhdr_t h;
    uint32_t max_connections; bool has_max_connections;
    uint32_t max_pending; bool has_max_pending;
    uint32_t max_requests; bool has_max_requests;
    uint32_t max_retries; bool has_max_retries;
} cbcfg_t;
typedef struct us_s {
    mhdr_t h;
    meta_t meta;
    static_t st;
    lbcfg_t lb;
    cus_t consul;
    ussl_t ssl;
    conncfg_t conn;         /* connectionConfig */
    list_t hcs;             /* healthChecks: hc_t, at most one (us_check) */
    cbcfg_t cb;             /* circuitBreakers */
} us_t;

typedef struct ug_s { mhdr_t h; meta_t meta; list_t dests; } ug_t;   /* wdest_t */

typedef struct dirsrc_s { mhdr_t h; char *directory; } dirsrc_t;
typedef struct glooopts_s { mhdr_t h; cbcfg_t cb; } glooopts_t;    /* Settings.gloo */
typedef struct settings_doc_s {
    mhdr_t h;
    meta_t meta;
    char *discovery_ns;
    strs_t watch_ns;
    dirsrc_t config_src;
    dirsrc_t secret_src;
    int64_t refresh_ms; bool has_refresh;
    glooopts_t gloo_opts;       /* gloo: circuitBreakers, and harmless fields */
    mhdr_t gw_opts;             /* only harmless fields: nothing to keep */
} settings_doc_t;

/* ---- resource kinds ---------------------------------------------------------------- */

enum res_kind { RK_GATEWAY = 0, RK_VS, RK_RT, RK_US, RK_UG, RK_SETTINGS, RK_COUNT };

typedef struct kind_info_s {
    const char *kind;       /* "Gateway" */
    const char *plural;     /* "gateways" */
    const char *api;        /* "gateway.solo.io/v1" */
    const struct msgdesc_s *desc;
} kind_info_t;

extern const kind_info_t cfg_kinds[RK_COUNT];

/* ---- strict decoder (decode.c; message tables in schema.c) ------------------------- */

typedef struct dctx_s dctx_t;
typedef struct msgdesc_s msgdesc_t;

enum ftype {
    F_STR = 0, F_BOOL, F_U32, F_I32, F_DUR, F_STRS, F_U32S, F_LABELS, F_ENUM,
    F_MSG, F_MSGS, F_IGNORE, F_UNSUP, F_FALSE_ONLY,
    F_PCT,      /* a percentage (protobuf DoubleValue) 0..100 into a double */
};

typedef struct field_s {
    const char *name;           /* lowerCamelCase; snake_case is accepted too */
    uint8_t type;               /* enum ftype */
    uint8_t oneof;              /* 0, or a group number shared by exclusive fields */
    uint16_t off;               /* offset of the value in the message struct */
    uint16_t set_off;           /* offset of a bool set when present, 0 = none */
    const msgdesc_t *sub;       /* F_MSG, F_MSGS */
    const char *const *enums;   /* F_ENUM: names by value, NULL-terminated */
    uint32_t max;               /* F_U32/F_ENUM upper bound (0 = UINT32_MAX) */
    const char *note;           /* F_UNSUP / F_FALSE_ONLY: text after "not supported yet" */
} field_t;

struct msgdesc_s {
    const char *name;
    size_t size;
    const field_t *fields;
    uint32_t nfields;
    /* semantic checks once the fields are decoded; 0 ok, -1 after cfg_derr() */
    int (*check)(dctx_t *c, void *msg, const ynode_t *n);
    /* unknown keys are Gloo fields we do not list: say "not supported yet", not "unknown" */
    bool open_unsup;
};

struct dctx_s {
    rv_arena_t *a;              /* where decoded values go */
    const char *file;           /* prefix for messages (relative path), may be NULL */
    char path[512];
    size_t plen;
    char *err;
    size_t errlen;
    bool failed;
    const char *who;            /* when set, messages read "<who>: <msg> (<file>:<line>:<col>)" */
    bool redact_keys;           /* a secret: unknown keys are named only when they look like field names */
};

/*
 * The name of mapping key k as messages may quote it: k->s, or, when c->redact_keys and k does
 * not look like a field name (at most 32 of [A-Za-z._-]; a base64 line of a PEM body nearly
 * always has a digit, '+' or '/'), a placeholder - so a key pasted where a field belongs is
 * never echoed into logs or /status.
 */
const char *cfg_key_name(const dctx_t *c, const ynode_t *k);

/* Decode mapping n into msg (desc->size bytes, zeroed by the caller). 0 or -1 (c->err set). */
int cfg_decode_msg(dctx_t *c, const msgdesc_t *desc, const ynode_t *n, void *msg);

/* Record an error at node n (may be NULL) for the current path, with an optional sub-field. */
int cfg_derr(dctx_t *c, const ynode_t *n, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Same, but msg is the whole text (the caller names the field itself). */
int cfg_derrp(dctx_t *c, const ynode_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Node of field camel (either spelling) in mapping n, or NULL. */
const ynode_t *cfg_field_node(const ynode_t *n, const char *camel);

/* Push ".name" or "[i]" on the path; returns the previous length for cfg_path_pop(). */
size_t cfg_path_push(dctx_t *c, const char *name);
size_t cfg_path_push_idx(dctx_t *c, uint32_t i);
void cfg_path_pop(dctx_t *c, size_t len);

/* True when key equals the lowerCamelCase name or its snake_case spelling. */
bool cfg_name_matches(const char *key, size_t keylen, const char *camel);

/* Longest duration accepted, in nanoseconds (2 500 000 h, about 285 years). */
#define RV_DURATION_CAP_NS 9000000000000000000ull

/*
 * Parse a duration: protobuf JSON "<n>[.<frac>]s" and, leniently, Go-style sequences of
 * <number><unit> with units h, m, s, ms, us, ns ("1m30s", "500ms"). Sub-millisecond
 * remainders round up. 0 with *ms set; -1 when malformed; -2 when well-formed but longer
 * than RV_DURATION_CAP_NS.
 */
int cfg_parse_duration(const char *s, size_t len, int64_t *ms);

/*
 * Decode one resource document. kind selects the message; both Gloo's stored form (fields
 * beside metadata) and the Kubernetes form (apiVersion, kind, metadata, spec) are accepted.
 * ns/name come from the file's place (ns may be NULL for Settings); the resource is rejected
 * when metadata disagrees. obj receives a zeroed struct of the kind's type allocated in a.
 * Returns 0, or -1 with err "file:line:col: path: message" (or, when who is set,
 * "who: path: message (file:line:col)").
 */
int cfg_decode_resource(rv_arena_t *a, int kind, const char *file, const char *who, const char *ns,
                        const char *name, const char *buf, size_t len, void **obj, char *err, size_t errlen);

/* The ObjectMeta message (shared by every kind). */
extern const msgdesc_t cfg_meta_desc;

/* Lower-case copy in place; true when s is a valid HTTP token (RFC 9110). */
bool cfg_is_token(const char *s);
void cfg_lower(char *s);

/*
 * Read a whole file of at most CFG_MAX_FILE bytes into a malloc'd, NUL-terminated buffer
 * (settings.c). Returns 0, RV_ENOTFOUND when it does not exist, RV_ETOOBIG, RV_EIO (errno
 * kept) or RV_ENOMEM.
 */
int cfg_read_file(const char *path, char **buf, size_t *len);

/* ---- store (store.c) ---------------------------------------------------------------- */

typedef struct res_s {
    int kind;                   /* enum res_kind */
    char *path;                 /* full path of the file */
    char *rel;                  /* path relative to the config directory */
    char *ns, *name;            /* from the file's place */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    char *content;              /* bytes last read (malloc), for change detection */
    size_t clen;
    bool have_content;
    rv_arena_t arena;           /* owns obj */
    void *obj;                  /* last accepted decoded version, or NULL */
    char *error;                /* why the current file content is rejected (malloc), or NULL */
    bool seen;
    /*
     * The version the last build accepted as a whole (decoded and translated without a
     * rejection), kept while a newer obj is rejected by translation (a conflict with other
     * resources): the build then translates good instead (use_good, with fb_reason saying why
     * obj was refused). good == obj when obj was accepted; otherwise good_arena owns it.
     */
    void *good;
    rv_arena_t good_arena;
    bool use_good;
    char *fb_reason;            /* malloc, when use_good */
} res_t;

/* The build accepted r's decoded version: it becomes r's last accepted version (translate.c). */
void cfg_res_accept(res_t *r);

struct rv_store_s {
    res_t **res;                /* sorted by kind, ns, name, then path after each scan */
    uint32_t nres, cap;
    uint64_t builds;
    const struct rv_secrets_s *secrets;     /* rv_store_attach_secrets; not owned */
};

/* ---- JSON writer (json.c) ---------------------------------------------------------- */

typedef struct jbuf_s {
    char *p;
    size_t len, cap;
    bool oom;
    uint64_t commas;            /* bit d: a value was written at depth d, next needs ',' */
    int depth;
    bool after_key;             /* the next value completes a "key": pair */
} jbuf_t;

void cfg_jb_raw(jbuf_t *b, const char *s, size_t n);
void cfg_jb_str(jbuf_t *b, const char *s, size_t n);          /* quoted, escaped */
void cfg_jb_open(jbuf_t *b, char c);                           /* '{' or '[' */
void cfg_jb_close(jbuf_t *b, char c);                          /* '}' or ']' */
void cfg_jb_key(jbuf_t *b, const char *k);                     /* "k": */
void cfg_jb_kstr(jbuf_t *b, const char *k, rv_str_t v);
void cfg_jb_kint(jbuf_t *b, const char *k, long long v);
void cfg_jb_kbool(jbuf_t *b, const char *k, bool v);
void cfg_jb_knum(jbuf_t *b, const char *k, double v);         /* a finite number */
void cfg_jb_vstr(jbuf_t *b, rv_str_t v);                       /* array element */
void cfg_jb_vint(jbuf_t *b, long long v);

/* Write snap's listeners and clusters as JSON into snap->config_json (arena). 0 or RV_ENOMEM. */
int cfg_dump_json(rv_snapshot_t *snap);
int cfg_dump_json_with(const rv_snapshot_t *snap, const rv_cluster_t *clusters, char **out, size_t *outlen);

/* Source text of a regex compiled for snap (translate.c), "" when unknown. */
const char *cfg_regex_pattern(const rv_snapshot_t *snap, const rv_regex_t *re);

#endif
