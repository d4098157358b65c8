/* main.c - rivet's entry point: dispatches to subcommands (see cli.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const rv_cmd_t *const commands[] = { &rv_cmd_run,   &rv_cmd_validate, &rv_cmd_apply,
                                            &rv_cmd_get,   &rv_cmd_delete,   &rv_cmd_version };

static void usage(FILE *f)
{
    fprintf(f, "usage: rivet <command> [flags]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "\n'rivet <command> --help' lists the command's flags.\n");
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
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i]->name) == 0)
            return commands[i]->main(argc - 1, argv + 1);
    fprintf(stderr, "rivet: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
