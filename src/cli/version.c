/* version.c - `rivet version`. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static int version_main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: rivet version\n\nPrints rivet's version.\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "rivet version: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    printf("rivet %s\n", RIVET_VERSION);
    return 0;
}

const rv_cmd_t rv_cmd_version = { "version", "print the version", version_main };
