/*
 * validate.c - `rivet validate`: load a config directory exactly as `rivet run` would
 * (Settings, scan, build) and print every resource's status, one line each.
 * Exit 0: nothing rejected; 1: something rejected; 2: the directory or Settings are unusable.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/vaultstore.h"
#include "config/config.h"
#include "config/secret.h"
#include "core/err.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rivet validate --dir DIR [--namespace NS]\n"
            "\n"
            "Load Gloo Edge resources from DIR as `rivet run` would and print one line per\n"
            "resource: <Kind> <namespace>/<name> <Accepted|Rejected|Warning>[: <reason>].\n"
            "\n"
            "flags:\n"
            "  --dir DIR          Gloo's bootstrap directory: DIR/<NS>/default.yaml (Settings) when\n"
            "                     present, else DIR holds <plural>/<namespace>/<name>.yaml itself\n"
            "  --namespace NS     namespace of the Settings (default " RV_DEFAULT_NAMESPACE ")\n"
            "  -h, --help         show this help\n"
            "\n"
            "exit status: 0 all accepted (warnings allowed), 1 a resource is rejected,\n"
            "2 the directory cannot be read or the Settings are invalid\n");
}

/* "--flag VALUE" or "--flag=VALUE"; advances *i. NULL when argv[*i] is not this flag. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag, bool *missing)
{
    size_t n = strlen(flag);
    if (strncmp(argv[*i], flag, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

/* Write s with control bytes escaped, so every status stays on one line. */
static void put_clean(rv_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int validate_main(int argc, char **argv)
{
    const char *dir = NULL, *ns = RV_DEFAULT_NAMESPACE;
    char err[1024];
    rv_settings_t s;
    rv_store_t *st = NULL;
    rv_snapshot_t *snap = NULL;
    rv_secrets_t *secrets = NULL;
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if ((v = flag_value(argc, argv, &i, "--dir", &missing)) != NULL) {
            dir = v;
        } else if ((v = flag_value(argc, argv, &i, "--namespace", &missing)) != NULL) {
            ns = v;
        } else {
            if (missing)
                fprintf(stderr, "rivet validate: %s needs a value\n", argv[i]);
            else
                fprintf(stderr, "rivet validate: unknown flag '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "rivet validate: --dir is required\n");
        usage(stderr);
        return 2;
    }
    if (rv_settings_load(dir, ns, &s, err, sizeof(err)) != 0) {
        fprintf(stderr, "rivet validate: %s\n", err);
        return 2;
    }
    st = rv_store_new();
    if (!st) {
        fprintf(stderr, "rivet validate: out of memory\n");
        goto out;
    }
    int r = rv_store_scan_dir(st, &s);
    if (r == RV_ENOTFOUND) {
        fprintf(stderr, "rivet validate: cannot read config directory %s\n", s.config_dir);
        goto out;
    }
    /* secretRefs resolve as in rivet run: the directory secret sources */
    if (r >= 0 && (!(secrets = rv_secrets_new()) || rv_secrets_scan_settings(secrets, &s) == RV_ENOMEM))
        r = RV_ENOMEM;
    if (r >= 0)
        cli_vault_load_settings(&s, secrets, "validate");      /* and the Vault sources */
    rv_store_attach_secrets(st, secrets);
    if (r < 0 || rv_snapshot_build(st, &s, &snap) != 0) {
        fprintf(stderr, "rivet validate: %s\n", rv_strerror(r < 0 ? r : RV_ENOMEM));
        goto out;
    }
    for (uint32_t i = 0; i < snap->nstatuses; i++) {
        const rv_status_t *x = &snap->statuses[i];
        printf("%.*s ", (int)x->kind.len, x->kind.ptr);
        put_clean(x->ns);
        putchar('/');
        put_clean(x->name);
        printf(" %s%s", rv_state_name(x->state), x->reason.len ? ": " : "");
        put_clean(x->reason);
        putchar('\n');
    }
    rc = snap->nrejected ? 1 : 0;
out:
    rv_snapshot_release(snap);
    rv_store_free(st);
    rv_secrets_free(secrets);
    rv_settings_free(&s);
    return rc;
}

const rv_cmd_t rv_cmd_validate = { "validate", "check a config directory and print each resource's status",
                                   validate_main };
