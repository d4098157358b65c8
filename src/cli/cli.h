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

#endif
