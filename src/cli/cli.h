/* cli.h - the subcommand table: each command is one file in src/cli/ and one line in main.c. */
#ifndef RV_CLI_H
#define RV_CLI_H

typedef struct rv_cmd_s {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);     /* argv[0] is the command name */
} rv_cmd_t;

extern const rv_cmd_t rv_cmd_run, rv_cmd_validate, rv_cmd_version, rv_cmd_apply, rv_cmd_get, rv_cmd_delete;

#define RIVET_VERSION "0.1.0"

/* ---- the store `rivet apply/get/delete` work on (apply.c) --------------------------------- */

#include "config/config.h"

typedef struct rv_consul_s rv_consul_t;

typedef struct cli_store_s {
    rv_settings_t s;            /* the Settings `rivet run` would read (or defaults) */
    bool kv;                    /* Consul KV, else the config directory s.config_dir */
    const char *root;           /* KV root key */
    rv_consul_t *consul;        /* when kv */
    struct rv_secrets_s *secrets;   /* cli_store_load: the secret sources' secrets, for secretRefs */
} cli_store_t;

typedef struct cli_store_opts_s {
    const char *dir, *settings_ns, *consul, *root_key;
    bool consul_set, stale;
} cli_store_opts_t;

/*
 * Parse a store-selection flag at argv[*i] (--dir, --settings-namespace, --consul,
 * --consul-root-key, --consul-allow-stale) into o. 1 when taken, 0 when not a store flag,
 * -1 when its value is missing (message printed for cmd).
 */
int cli_store_flag(int argc, char **argv, int *i, cli_store_opts_t *o, const char *cmd);

/*
 * The rest of `rivet get` and `rivet delete`'s argument loop once their own flags did not
 * match argv[*i] (missing: one of them lacked its value): a store flag (into so), else an
 * error for a flag, else the positionals KIND then NAME (into *kind, *name). 1 taken, -1 after
 * printing why for cmd (a value missing, an unknown flag, a third positional). get.c.
 */
int cli_kind_name_arg(int argc, char **argv, int *i, bool missing, cli_store_opts_t *so, const char *cmd,
                      const char **kind, const char **name);

/* Help lines for the store flags. */
extern const char cli_store_help[];

/* Open the selected store. 0, or 2 after printing why (for cmd). */
int cli_store_open(cli_store_t *cs, const cli_store_opts_t *o, const char *cmd);
void cli_store_close(cli_store_t *cs);

/*
 * Load every resource of the store and build a snapshot, as `rivet run` would (statuses for
 * `rivet get`). *listing gets the KV listing (NULL for a directory). 0 or 2 after printing.
 */
struct rv_kv_listing_s;
int cli_store_load(cli_store_t *cs, rv_store_t **st, rv_snapshot_t **snap, struct rv_kv_listing_s **listing,
                   const char *cmd);

/* Consul KV helpers (apply.c): read one key (1 found, 0 absent, -1 error printed) and
 * compare-and-set write or delete (1 done, 0 refused: concurrent change, -1 error printed). */
int cli_kv_read(cli_store_t *cs, const char *key, char **val, size_t *len, uint64_t *modify, const char *cmd);
int cli_kv_cas(cli_store_t *cs, const char *key, const char *val, size_t len, uint64_t index, bool del,
               const char *cmd);

/* Directory store helpers (apply.c): a resource's file path (malloc'd) and the checked write
 * or delete (1 done, 0 the file changed since (old, oldlen, oldexists) was read, -1 error). */
char *cli_dir_path(const cli_store_t *cs, int kind, const char *ns, const char *name);
int cli_dir_cas(const char *path, const char *old, size_t oldlen, bool oldexists, const char *val, size_t len,
                bool del, const char *cmd);

/*
 * The write step of cli_dir_cas (and of the secrets directory target): val into a temp file in
 * path's directory (which must exist) + fsync, then, unless path no longer holds (old, oldlen,
 * oldexists), rename over it (link for a new file: fails when someone created it meanwhile).
 * secret: the temp file is 0600 and never followed through a symlink, and the re-read content
 * is wiped (else 0644). 1 written, 0 concurrent change, -1 error printed.
 */
int cli_write_swap(const char *path, const char *old, size_t oldlen, bool oldexists, const char *val, size_t len,
                   bool secret, const char *cmd);

/* Value of "--name VALUE" / "--name=VALUE" (or short -x VALUE when sname) at argv[*i]. */
const char *cli_flag(int argc, char **argv, int *i, const char *name, const char *sname, bool *missing);

/* Largest file the CLI reads (a resource file, an apply input). */
#define CLI_MAX_INPUT (16u << 20)

struct stat;
/* Whole file (NUL-terminated) or NULL when absent (*exists false), too large (errno EFBIG) or
 * unreadable; sb (may be NULL) gets its stat. The caller frees it. */
char *cli_slurp(const char *path, size_t *len, bool *exists, struct stat *sb);

/* ---- Secrets (secrets.c): the Settings' secret sources, never the config store ---------- */

struct rv_secret_s;

/* Write s to the first secret source (the one looked up first). 0 written or unchanged (a
 * line printed), -1 after printing why. dry: say where it would go. */
int cli_secret_put(cli_store_t *cs, const struct rv_secret_s *s, bool dry);

/* `rivet get secret [NAME]`: every source's secrets (names, kinds, fields present, source,
 * status; never a value) as out (table, yaml, json). Exit status as rivet get. */
int cli_secret_get(const cli_store_opts_t *so, const char *name, const char *ns, const char *out);

/* `rivet delete secret NAME`: from the first source holding it. Exit status as rivet delete. */
int cli_secret_delete(const cli_store_opts_t *so, const char *ns, const char *name);

#endif
