/* apply.c - `rivet apply` (in progress). */
#include <stdio.h>

#include "cli/cli.h"

static int apply_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rivet apply: not available yet\n");
    return 2;
}

const rv_cmd_t rv_cmd_apply = { "apply", "(not available yet)", apply_main };
