/* validate.c - `rivet validate`: placeholder until the config loader lands (issue 2). */
#include <stdio.h>

#include "cli/cli.h"

static int validate_main(int argc, char **argv)
{
    fprintf(stderr, "rivet validate: not available in this build yet\n");
    return 2;
}

const rv_cmd_t rv_cmd_validate = { "validate", "check a config directory and print each resource's status", validate_main };
