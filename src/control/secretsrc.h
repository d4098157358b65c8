/*
 * secretsrc.h - the secret sources as the control thread runs them: the directory sources
 * (scanned at start, on inotify events and at refreshRate), the health every source reports
 * for /ready and /metrics, and the log lines a change of secrets produces (once per change;
 * names, versions, files and reasons - never key material).
 *
 * The Vault source (src/control/vault.c) feeds its own index of the same rv_secrets_t with
 * rv_secrets_replace, then calls rv_secretsrc_changed() and reports with rv_secretsrc_health().
 *
 * Thread: the control thread, except rv_secretsrc_ready_detail / rv_secretsrc_prometheus,
 * which any thread (the admin thread) may call.
 */
#ifndef RV_SECRETSRC_H
#define RV_SECRETSRC_H

#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"
#include "config/secret.h"

/*
 * Forget every source's health and log state, and register the sources of s (index i =
 * s->secret_srcs[i]): directory sources start healthy-unknown until their first scan; a Vault
 * source is registered as "vault", reported by its own code.
 */
void rv_secretsrc_configure(const rv_settings_t *s);

/*
 * Scan every directory source of s into t (force: read every file even when no stat
 * changed - the refreshRate resync). Logs what changed, updates health. Returns 1 when any
 * source changed (the caller rebuilds), 0 when none did, RV_ENOMEM.
 */
int rv_secretsrc_scan_dirs(rv_secrets_t *t, const rv_settings_t *s, bool force);

/* Log what changed at source src of t since the last call for it (new, rotated, removed,
 * failed and fixed secrets) and refresh its counts. For sources other than the directory. */
void rv_secretsrc_changed(const rv_secrets_t *t, int src);

/* Set the health of source src: healthy or not, with a one-line detail (printf format). */
void rv_secretsrc_health(int src, bool healthy, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Append one line per source to detail (n bytes, NUL-terminated); false when one is unhealthy. */
bool rv_secretsrc_ready_detail(char *detail, size_t n);

/* rivet_secret_source_healthy and rivet_secret_source_secrets gauges, one sample per source. */
void rv_secretsrc_prometheus(FILE *f);

#endif
