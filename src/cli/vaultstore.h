/*
 * vaultstore.h - the Vault target of `rivet apply` / `rivet get secret` / `rivet delete
 * secret` (one entry of secrets.c's target table). Each call connects to the source's Vault
 * (Settings + VAULT_* environment, AppRole when configured: control/vault.h), authenticates
 * and detects the KV version first; failures are printed ("rivet <cmd>: vault <addr>: ...").
 */
#ifndef RV_CLI_VAULTSTORE_H
#define RV_CLI_VAULTSTORE_H

#include <stdbool.h>

#include "config/config.h"
#include "config/secret.h"

struct cli_store_s;

/* Write s (Gloo's stored form, JSON) at its Gloo path: KV v2 with options.cas = the version
 * read (a concurrent write is a conflict), KV v1 plain. dry: print where it would go.
 * 1 created, 2 configured, 3 unchanged (or dry), 0 conflict, -1 error (printed). */
int cli_vault_put(struct cli_store_s *cs, const rv_secret_src_t *src, const rv_secret_t *s, bool dry,
                  const char *cmd);

/* Delete ns/name (KV v2: every version, through metadata/). 1 deleted, 0 absent, -1 error. */
int cli_vault_del(struct cli_store_s *cs, const rv_secret_src_t *src, const char *ns, const char *name,
                  const char *cmd);

/* Read every secret of src into source idx of t. 0, or -1 after printing why. */
int cli_vault_load(struct cli_store_s *cs, const rv_secret_src_t *src, rv_secrets_t *t, int idx, const char *cmd);

/* Read every Vault source of s into t at its index (rivet validate / get: secretRefs resolve as
 * in rivet run). A source that cannot be read is printed and left empty. Returns 0. */
int cli_vault_load_settings(const rv_settings_t *s, rv_secrets_t *t, const char *cmd);

#endif
