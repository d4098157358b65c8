/* main.c - rivet's entry point: dispatches to subcommands (see cli.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"

static const rv_cmd_t *const commands[] = { &rv_cmd_run,   &rv_cmd_validate, &rv_cmd_apply,
                                            &rv_cmd_get,   &rv_cmd_delete,   &rv_cmd_version };

static void usage(FILE *f)
{
    fprintf(f, "usage: rivet <command> [flags]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "\n'rivet <command> --help' lists the command's flags.\n");
}

/* Value of "--name value" / "--name=value" at argv[*i] (advancing *i), else NULL; *bad when missing. */
static const char *take(int argc, char **argv, int *i, const char *name, bool *bad)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *bad = true;
        return NULL;
    }
    return argv[++*i];
}

/*
 * `rivet run` learns the Consul flags here (run.c parses the others): --consul ADDR,
 * --consul-root-key KEY and --consul-allow-stale become a settings override, and --dir is
 * optional with --consul. argv is rewritten in place (Consul flags removed; "--dir=" added
 * when absent, which rv_settings_load reads as "no bootstrap directory").
 */
static int run_with_consul(int argc, char **argv)
{
    const char *addr = NULL, *root = NULL;
    bool stale = false, have_dir = false, help = false, consul = false;
    char **out = calloc((size_t)argc + 2, sizeof(char *));
    int n = 0;
    if (!out)
        return 1;
    for (int i = 0; i < argc; i++) {
        bool bad = false;
        const char *v;
        if (i > 0 && (v = take(argc, argv, &i, "--consul-root-key", &bad))) {
            root = v;
            consul = true;
        } else if (i > 0 && (v = take(argc, argv, &i, "--consul", &bad))) {
            addr = v;
            consul = true;
        } else if (i > 0 && !strcmp(argv[i], "--consul-allow-stale")) {
            stale = consul = true;
        } else if (bad) {
            fprintf(stderr, "rivet run: %s needs a value\n", argv[i]);
            free(out);
            return 2;
        } else {
            if (!strcmp(argv[i], "--dir") || !strncmp(argv[i], "--dir=", 6))
                have_dir = true;
            if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
                help = true;
            out[n++] = argv[i];
        }
    }
    if (consul) {
        rv_settings_consul_override(addr, root, stale);
        if (!have_dir)
            out[n++] = "--dir=";
    }
    int rc = rv_cmd_run.main(n, out);
    if (help)
        printf("\nConsul KV config source (Gloo's layout <root>/<group>/<version>/<Kind>/<ns>/<name>):\n"
               "  --consul ADDR          read the config from Consul KV at ADDR (host:port, http:// or\n"
               "                         https://; empty = CONSUL_HTTP_ADDR or 127.0.0.1:8500); --dir is\n"
               "                         then optional (a Settings file there still applies)\n"
               "  --consul-root-key KEY  root key (default: Settings consulKvSource.rootKey, else gloo)\n"
               "  --consul-allow-stale   ?stale reads (any server answers; default: consistent reads)\n"
               "  CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE), CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY,\n"
               "  CONSUL_HTTP_SSL(_VERIFY), CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_AUTH are honoured.\n");
    free(out);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return rv_cmd_version.main(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0)
        return run_with_consul(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i]->name) == 0)
            return commands[i]->main(argc - 1, argv + 1);
    fprintf(stderr, "rivet: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
