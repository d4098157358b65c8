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

/*
 * Read every secret of a directory source into source src: with secrets_subdir, Gloo's
 * directorySecretSource layout <dir>/<ns>/<name>.yaml|.yml|.json (dir is then Settings'
 * secret_dir, DIR/secrets by default), which is also secretOptions.sources[].directory's
 * (whose root is the directory itself). Costs a stat per file when nothing changed.
 * Returns 1/0 as rv_secrets_replace; RV_ENOTFOUND is never returned for a missing directory
 * (no secrets is a valid state); RV_ENOMEM.
 */
int rv_secrets_scan_dir(rv_secrets_t *t, int src, const char *dir);

/*
 * The secret ns/name as the build should use it: the first source (by index) holding it.
 * Returns it, or NULL with *why set (when why is non-NULL) to a static-lifetime-until-next-
 * replace reason when some source has it but it failed to decode, or NULL *why when no
 * source has it. The pointer stays valid until the next rv_secrets_replace/scan_dir.
 */
const rv_secret_t *rv_secrets_get(const rv_secrets_t *t, const char *ns, const char *name, const char **why);

/* Generation: bumps whenever replace/scan_dir returned 1. */
uint64_t rv_secrets_generation(const rv_secrets_t *t);

/* ---- what a snapshot build sees ------------------------------------------------------- */

struct rv_store_s;

/*
 * Let builds from st resolve secretRefs in t (NULL detaches: every secretRef is then missing).
 * The store does not own t. rv_snapshot_build reads it through rv_store_secret.
 */
void rv_store_attach_secrets(struct rv_store_s *st, const rv_secrets_t *t);
const rv_secret_t *rv_store_secret(const struct rv_store_s *st, const char *ns, const char *name, const char **why);

#endif
