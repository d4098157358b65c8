/* delete.c - `rivet delete` (in progress). */
#include <stdio.h>

#include "cli/cli.h"

static int delete_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rivet delete: not available yet\n");
    return 2;
}

const rv_cmd_t rv_cmd_delete = { "delete", "(not available yet)", delete_main };
