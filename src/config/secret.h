/*
 * secret.h - Gloo Secrets (tls, aws) as rivet holds them, and the secret table every source
 * (directory, Vault) feeds and every snapshot build reads.
 *
 * A secret is decoded from Gloo's stored form (metadata beside `tls: {certChain, privateKey,
 * rootCa, ocspStaple}` or `aws: {accessKey, secretKey, sessionToken}`) or from a Kubernetes
 * Secret (`type: kubernetes.io/tls`, base64 `data` with tls.crt, tls.key, ca.crt; or
 * aws_access_key_id / aws_secret_access_key), YAML or JSON. Key material lives in malloc'd
 * buffers that are wiped (OPENSSL_cleanse-style) before they are freed; it is never logged and
 * never copied into a snapshot's /config_dump.
 *
 * The table keeps, per source, the secrets that source last delivered. A lookup walks the
 * sources in Gloo's precedence (kubernetes > directory > vault: the lowest source index that
 * has the name wins). Snapshot builds see the table through the store (rv_store_attach_secrets)
 * and look secrets up by reference; a change of any secret's content bumps the table's
 * generation so the control thread knows to rebuild.
 *
 * Thread: the control thread (and the CLI). Nothing here runs on a worker.
 */
#ifndef RV_SECRET_H
#define RV_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rv_secret_kind { RV_SECRET_TLS = 1, RV_SECRET_AWS = 2 };

typedef struct rv_secret_s {
    int kind;                   /* enum rv_secret_kind */
    char *ns, *name;            /* metadata (namespace defaults to the directory's / path's) */
    char *source;               /* file path or Vault path, for messages; never key material */
    uint64_t version;           /* table-wide counter value when this content arrived */
    /* RV_SECRET_TLS: PEM text, NUL-terminated, length without the NUL; NULL/0 when absent */
    char *cert_chain;
    size_t cert_chain_len;
    char *private_key;          /* wiped on free */
    size_t private_key_len;
    char *root_ca;
    size_t root_ca_len;
    unsigned char *ocsp_staple; /* DER bytes (base64-decoded ocspStaple); NULL/0 when absent */
    size_t ocsp_staple_len;
    /* RV_SECRET_AWS: NUL-terminated; session_token may be NULL */
    char *access_key, *secret_key, *session_token;    /* secret_key and session_token wiped */
} rv_secret_t;

/*
 * Decode one document (YAML or JSON) holding a Gloo Secret in its stored form or a
 * Kubernetes Secret. src names the document in messages (a path or Vault path); ns_default
 * fills a missing metadata.namespace, name_default a missing metadata.name (Vault's path
 * names it). Strict like every other resource: an unknown field or an unsupported secret kind
 * (oauth, apiKey, header, ...) is refused with a message naming it. Returns 0 with *out
 * (caller frees with rv_secret_free); RV_EPARSE with the reason in err; RV_ENOMEM.
 */
int rv_secret_decode(const char *src, const char *doc, size_t len, const char *ns_default,
                     const char *name_default, rv_secret_t **out, char *err, size_t errlen);

/* Wipe key material and free. NULL is ignored. */
void rv_secret_free(rv_secret_t *s);

/*
 * Gloo's stored form of s: metadata{name, namespace} beside tls{certChain, privateKey, rootCa,
 * ocspStaple (base64)} or aws{accessKey, secretKey, sessionToken}; json: one JSON object (the
 * value Gloo keeps in Vault), else YAML (every value double-quoted). rv_secret_decode reads it
 * back to the same content. Allocated once at its exact size: the caller wipes it
 * (OPENSSL_cleanse(p, *len)) before free, since it holds key material. NULL on OOM.
 */
char *rv_secret_stored(const rv_secret_t *s, bool json, size_t *len);

/* ---- the secret table ----------------------------------------------------------------- */

typedef struct rv_secrets_s rv_secrets_t;

rv_secrets_t *rv_secrets_new(void);
void rv_secrets_free(rv_secrets_t *t);      /* wipes every secret */

/*
 * Make source src (0 = looked up first; Gloo's order kubernetes > directory > vault decides the
 * index) hold exactly list[0..n): the table takes ownership of every element (and frees the
 * array's elements it does not keep); bad[0..nbad) names secrets that exist at the source but
 * failed to decode, with their reasons ("ns/name" -> reason), so a lookup can say why.
 * Returns 1 when any secret's content (or a reason) changed, 0 when nothing did, RV_ENOMEM.
 */
typedef struct rv_secret_bad_s {
    char *ns, *name, *reason;   /* owned by the table after the call */
} rv_secret_bad_t;
int rv_secrets_replace(rv_secrets_t *t, int src, rv_secret_t **list, size_t n, rv_secret_bad_t *bad, size_t nbad);

/* Sources are 0..RV_SECRETS_MAX_SOURCES-1; a bad src (or a NULL ns/name) is RV_EINVAL, and the
 * inputs are freed then too. Two secrets (or two failures) of one ns/name in one list: the
 * first stays. An unchanged secret keeps its pointer and version (only its source string may
 * change). */
#define RV_SECRETS_MAX_SOURCES 16

/*
 * Read every secret of a directory source into source src. dir is the root holding
 * <ns>/<name>.yaml|.yml|.json: Settings' secret_dir (directorySecretSource.directory + "/secrets",
 * DIR/secrets by default) or a secretOptions.sources[].directory as written (no secrets/ level).
 * Entries starting with '.' are skipped (Kubernetes-style ..data links are followed through
 * the names that point into them). A file that fails to decode, or whose metadata disagrees
 * with its place, is recorded as bad with "<path>: <reason>". Costs one stat per file when
 * no file was added, removed or changed (path, inode, size, mtime, ctime) since the last scan
 * of src; otherwise every file is read again and rv_secrets_replace keeps the unchanged ones.
 * Returns 1/0 as rv_secrets_replace; a missing directory is no secrets (never RV_ENOTFOUND);
 * RV_EIO when dir exists but cannot be listed; RV_ENOMEM; RV_EINVAL for a bad src.
 */
int rv_secrets_scan_dir(rv_secrets_t *t, int src, const char *dir);

/*
 * The secret ns/name as the build should use it: the first source (by index) holding it.
 * Returns it, or NULL with *why set (when why is non-NULL) to a static-lifetime-until-next-
 * replace reason when some source has it but it failed to decode, or NULL *why when no
 * source has it. The pointer stays valid until the next rv_secrets_replace/scan_dir.
 */
const rv_secret_t *rv_secrets_get(const rv_secrets_t *t, const char *ns, const char *name, const char **why);

/*
 * Mark source src as not read successfully yet (a Vault source before its first poll
 * succeeded), note saying so for messages ("Vault source <addr>: not read yet: <reason>"; no
 * key material); NULL clears it (the source has been read). A missing secret may then be one
 * this source holds: rv_secrets_unread names every such source, and the build appends it to
 * its "not found". Returns 1 when the mark was cleared (rebuild: a "not found" may now be
 * stale), 0 otherwise, RV_ENOMEM, RV_EINVAL.
 */
int rv_secrets_set_unread(rv_secrets_t *t, int src, const char *note);

/* The notes of every source marked unread, in source order, joined by "; "; NULL when none
 * (or on OOM building it). Valid until the next rv_secrets_set_unread. */
const char *rv_secrets_unread(const rv_secrets_t *t);

/*
 * Restrict lookups to the namespaces ns[0..n) (Settings watchNamespaces, which already holds
 * the discovery namespace; n 0 = every namespace), as Gloo watches secrets only there: a
 * lookup elsewhere is NULL with a reason saying so. Sources still hold what they read.
 * Returns 1 when the set changed (the generation bumps: rebuild), 0 when not, RV_ENOMEM.
 */
int rv_secrets_watch(rv_secrets_t *t, char *const *ns, size_t n);
bool rv_secrets_watched(const rv_secrets_t *t, const char *ns);

/* Generation: bumps whenever replace/scan_dir returned 1. */
uint64_t rv_secrets_generation(const rv_secrets_t *t);

/* What source src holds now, sorted by ns then name (for the CLI, /ready and logs): the
 * secrets, and the names that failed with their reasons. Valid until the next replace/scan. */
size_t rv_secrets_list(const rv_secrets_t *t, int src, const rv_secret_t *const **out);
size_t rv_secrets_bad(const rv_secrets_t *t, int src, const rv_secret_bad_t **out);

/*
 * Scan every directory source of settings s into t at its index, and apply its
 * watchNamespaces (rv_secrets_watch) - the CLI's one-shot load: rivet validate and get see the
 * secrets rivet run would. Vault sources are left empty.
 * Returns 1/0 as rv_secrets_replace, or the first error of a scan (the others still scanned).
 */
struct rv_settings_s;
int rv_secrets_scan_settings(rv_secrets_t *t, const struct rv_settings_s *s);

/* Make the next rv_secrets_scan_dir of src read every file even when no stat changed (the
 * refreshRate resync: a change no stat shows, such as a same-size rewrite within one
 * timestamp tick, is then seen too). */
void rv_secrets_forget_files(rv_secrets_t *t, int src);

/* ---- what a snapshot build sees ------------------------------------------------------- */

struct rv_store_s;

/*
 * Let builds from st resolve secretRefs in t (NULL detaches: every secretRef is then missing).
 * The store does not own t. rv_snapshot_build reads it through rv_store_secret.
 */
void rv_store_attach_secrets(struct rv_store_s *st, const rv_secrets_t *t);
const rv_secret_t *rv_store_secret(const struct rv_store_s *st, const char *ns, const char *name, const char **why);
/* rv_secrets_unread of the attached table (NULL when none): to say why a secret is missing. */
const char *rv_store_secrets_unread(const struct rv_store_s *st);

#endif
