/*
 * vault.h - the Vault secret source: a small Vault HTTP API client (libcurl multi, so another
 * thread can cancel a request at once) and a watcher thread that keeps the Gloo Secrets kept in
 * Vault (KV v2 at <pathPrefix>/data/<rootKey>/gloo.solo.io/v1/Secret/<ns>/<name>, or KV v1)
 * and hands them to the control thread through an eventfd and a "latest result" slot, as the
 * Consul KV source (kvsource.h) does. The control thread never waits on Vault.
 *
 * Protocol: ../shared/reference/protocols.md section 3. Auth: Settings accessToken, else
 * AppRole (VAULT_ROLE_ID[_FILE] / VAULT_SECRET_ID[_FILE], mount VAULT_APPROLE_MOUNT), else VAULT_TOKEN.
 * Tokens with a TTL are renewed at about two thirds of it (with jitter); an AppRole token whose
 * renewal fails, or that Vault refuses (403), is replaced by a new login.
 *
 * Polling (every refreshRate): LIST the namespaces and names, read each secret's metadata and
 * fetch a secret's data only when its current version changed (KV v2); KV v1 has no versions,
 * so each secret is read and compared. Deleted and destroyed versions are absent secrets. The
 * control thread gets a new set only when something changed.
 *
 * Health (for /ready and /metrics, any thread): healthy after a successful poll, unhealthy
 * (unreachable, sealed, 403, ...) from the first failure until the next success, each change
 * logged once; the last secrets delivered stay in force meanwhile. Failures are retried with
 * exponential backoff and full jitter (rv_consul_backoff_ms), capped at the poll period.
 */
#ifndef RV_VAULT_H
#define RV_VAULT_H

#include <stdio.h>

#include "config/config.h"
#include "config/secret.h"

/* ---- client ------------------------------------------------------------------------------ */

typedef struct rv_vault_client_s rv_vault_client_t;

typedef struct rv_vault_resp_s {
    int status;             /* HTTP status; 0 when no response (connection error, timeout); -1 for a
                             * local problem before any request (an unreadable credential file) */
    char *body;             /* NUL-terminated (malloc'd; rv_vault_resp_free wipes and frees it) */
    size_t len;
    char err[256];          /* transport error, or the first of Vault's "errors", for logs */
} rv_vault_resp_t;

void rv_vault_resp_free(rv_vault_resp_t *r);

/*
 * A client for cfg (copied) with Vault's environment variables filling what Settings leave
 * unset, as Vault's Go client does: VAULT_ADDR (default https://127.0.0.1:8200), VAULT_TOKEN,
 * VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_TLS_SERVER_NAME,
 * VAULT_SKIP_VERIFY, VAULT_NAMESPACE (sent as X-Vault-Namespace), VAULT_CLIENT_TIMEOUT (per
 * request; default 15 s here, 60 s in Vault's client); and rivet's AppRole variables
 * VAULT_ROLE_ID / VAULT_ROLE_ID_FILE, VAULT_SECRET_ID / VAULT_SECRET_ID_FILE, VAULT_APPROLE_MOUNT
 * (default approle). Returns 0 with
 * *out, RV_EINVAL with a message in err (no way to authenticate, bad variable), RV_ENOMEM.
 */
int rv_vault_client_new(const rv_vault_cfg_t *cfg, rv_vault_client_t **out, char *err, size_t errlen);
void rv_vault_client_free(rv_vault_client_t *c);

/* "http://127.0.0.1:8200" (for messages). */
const char *rv_vault_client_address(const rv_vault_client_t *c);

/*
 * One request to /v1/<path> with the current token (method "GET", "LIST", "PUT", "POST",
 * "DELETE"; body JSON or NULL). Returns 0 when an HTTP response arrived (check out->status),
 * RV_EIO on transport failure (out->err says why), RV_ETOOBIG over 32 MiB, RV_ENOMEM.
 */
int rv_vault_request(rv_vault_client_t *c, const char *method, const char *path, const char *body,
                     rv_vault_resp_t *out);

/*
 * Make sure the client holds a usable token: log in with AppRole when that is the method and
 * no token is held (or force), then look the token up (lookup-self) to learn its TTL. A
 * static token is only looked up. Returns 0; RV_EIO with out describing the failure (status
 * 0 unreachable, 503 sealed, 400/403 refused ...); RV_ENOMEM.
 */
int rv_vault_authenticate(rv_vault_client_t *c, bool force, rv_vault_resp_t *out);

/*
 * Where the Gloo secrets live: detect the mount's KV version as Vault's CLI does
 * (sys/internal/ui/mounts/<path>: options.version "2" = v2, missing/"1" or a 404 = v1).
 * Returns 0 (c remembers it); RV_EIO with out describing the failure.
 */
int rv_vault_detect_kv(rv_vault_client_t *c, rv_vault_resp_t *out);

/* KV version found by rv_vault_detect_kv: 1, 2, or 0 when not detected yet. */
int rv_vault_kv_version(const rv_vault_client_t *c);

/*
 * API path of a Gloo secret (kind "data" or "metadata" on KV v2, ignored on v1; ns and name
 * NULL: the Secret folder, ns only: the namespace folder). Malloc'd, NULL on OOM.
 */
char *rv_vault_secret_path(const rv_vault_client_t *c, const char *kind, const char *ns, const char *name);

/* One Gloo secret as Vault holds it, and a set of them (defined below). */
typedef struct rv_vault_doc_s rv_vault_doc_t;
typedef struct rv_vault_set_s rv_vault_set_t;

/*
 * Read every Gloo secret under the Secret folder (the KV version must be detected first) into
 * *out (free with rv_vault_set_free), as one poll of the watcher does (for the CLI). Returns 0;
 * RV_EIO with r describing the failure; RV_ENOMEM.
 */
int rv_vault_read_all(rv_vault_client_t *c, rv_vault_set_t **out, rv_vault_resp_t *r);

/* ---- the watcher --------------------------------------------------------------------------- */

/* One Gloo secret as Vault holds it. */
struct rv_vault_doc_s {
    char *ns, *name;
    char *path;             /* logical Vault path, for messages */
    char *json;             /* the secret map (KV v2 data.data, KV v1 data), JSON; wiped on free */
    size_t len;
    uint64_t version;       /* KV v2 version; 0 on KV v1 */
};

struct rv_vault_set_s {
    rv_vault_doc_t *docs;
    size_t n;
    /* decoded (the watcher decodes a set before handing it over): rv_vault_apply gives them to
     * the table; rv_vault_set_free frees what was not given */
    bool decoded;
    rv_secret_t **list;
    size_t nlist;
    rv_secret_bad_t *bad;
    size_t nbad;
};

void rv_vault_set_free(rv_vault_set_t *s);

typedef struct rv_vault_opts_s {
    const rv_vault_cfg_t *cfg;  /* copied */
    int64_t refresh_ms;         /* poll period (refreshRate) */
    int source;                 /* index in the secret table (messages, metrics) */
} rv_vault_opts_t;

typedef struct rv_vault_s rv_vault_t;

/* Start the watcher thread. NULL with err set (configuration, OOM, thread). Control thread. */
rv_vault_t *rv_vault_start(const rv_vault_opts_t *o, char *err, size_t errlen);

/* The eventfd the control thread polls (readable after a new set or a health change). */
int rv_vault_fd(const rv_vault_t *v);

/*
 * Control thread, after the fd is readable: drains it; returns 1 with *out the latest set not
 * yet taken (free with rv_vault_set_free), 0 when there is none.
 */
int rv_vault_take(rv_vault_t *v, rv_vault_set_t **out);

/*
 * Make source src of t hold exactly the secrets of set: decoded ones (the watcher decodes
 * before handing a set over; otherwise rv_secret_decode runs here; a document whose metadata
 * names another secret than its path is refused), the ones that failed as bad entries with
 * their reasons. The decoded secrets move to the table (set keeps its documents). Returns
 * what rv_secrets_replace returns: 1 changed, 0 unchanged, RV_ENOMEM. Control thread, CLI.
 */
int rv_vault_apply(rv_secrets_t *t, int src, rv_vault_set_t *set);

/* Stop (cancels a request in flight), join and free. NULL is fine. Control thread. */
void rv_vault_stop(rv_vault_t *v);

/*
 * Health of one watcher, any thread: true after a successful poll, false before the first one
 * and from a failure until the next success; detail gets one line ("vault http://...: healthy
 * (3 secrets, KV v2)", "vault ...: unhealthy: poll: sealed or unavailable (...)"). The watcher
 * signals its fd on every change of health, so the control thread can report it.
 */
bool rv_vault_health(rv_vault_t *v, char *detail, size_t n);

/*
 * Prometheus text for every running watcher (nothing when none runs), label source = its
 * index in the secret table (label index, as rivet_secret_source_healthy):
 *   rivet_vault_polls_total{index,result="ok|error"}, rivet_vault_secret_reads_total{index}
 *   (data reads: only new or changed versions on KV v2), rivet_vault_logins_total{index},
 *   rivet_vault_token_renewals_total{index,result="ok|error"}. Any thread.
 */
void rv_vault_prometheus(FILE *f);

/* ---- every Vault source of the settings (control thread) -------------------------------------- */

typedef struct rv_vault_srcs_s rv_vault_srcs_t;

/*
 * Start one watcher per Vault source of s (secret table index = its index in s->secret_srcs),
 * each fd added to the epoll set ep. A source that cannot start (no way to authenticate, ...)
 * is logged and reported unhealthy through secretsrc.h. Every source is reported unhealthy
 * ("not read yet") until its first poll, and marked unread in t (rv_secrets_set_unread) until
 * its first secrets went into t, so a secretRef it might hold is "not found (Vault source
 * <addr>: not read yet: <reason>)" meanwhile. NULL on OOM.
 */
rv_vault_srcs_t *rv_vault_srcs_start(const rv_settings_t *s, int ep, rv_secrets_t *t);

/*
 * fd became readable: when it is one of the watchers', put its latest secrets into t
 * (rv_vault_apply, then rv_secretsrc_changed logs what changed) and report its health
 * (rv_secretsrc_health) when that changed; the first secrets clear the source's unread mark
 * in t (until then its note carries the latest failure). Returns 1 when a secret changed or
 * the unread mark was cleared (rebuild), 0 when not, -1 when fd is none of the watchers'.
 */
int rv_vault_srcs_event(rv_vault_srcs_t *vs, int fd, rv_secrets_t *t);

/*
 * At startup, before the first build: wait up to ms for every watcher's first poll (or its
 * first failure), putting what arrives into t, so the first config already resolves the Vault
 * secretRefs (as disc_warm does for the Consul catalog). Logs the sources still unread.
 */
void rv_vault_srcs_warm(rv_vault_srcs_t *vs, rv_secrets_t *t, int ms);

/* A new refreshRate: every watcher polls at the new period from now on (its next poll no later
 * than one new period away). NULL is fine. */
void rv_vault_srcs_set_refresh(rv_vault_srcs_t *vs, int64_t refresh_ms);

/* Stop every watcher (their fds leave ep) and free. NULL is fine. */
void rv_vault_srcs_stop(rv_vault_srcs_t *vs);

#endif
