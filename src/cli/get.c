/* get.c - `rivet get` (in progress). */
#include <stdio.h>

#include "cli/cli.h"

static int get_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rivet get: not available yet\n");
    return 2;
}

const rv_cmd_t rv_cmd_get = { "get", "(not available yet)", get_main };
