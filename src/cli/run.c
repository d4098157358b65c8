/* run.c - `rivet run`: placeholder until the control thread lands (issue 2). */
#include <stdio.h>

#include "cli/cli.h"

static int run_main(int argc, char **argv)
{
    fprintf(stderr, "rivet run: not available in this build yet\n");
    return 2;
}

const rv_cmd_t rv_cmd_run = { "run", "serve Gloo Edge resources from a directory", run_main };
