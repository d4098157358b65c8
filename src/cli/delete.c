/*
 * delete.c - `rivet delete KIND NAME`: remove one resource from the store, compare-and-set
 * (Consul ?cas=ModifyIndex; for a directory, the file must still hold what was read).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rivet delete KIND NAME [-n NS] [store flags]\n"
            "\n"
            "Delete one resource from the store (Consul KV key or config directory file). KIND as in\n"
            "rivet get (gw, vs, rt, us, ug or their Gloo names and plurals). KIND secret deletes from\n"
            "the first secret source holding NAME (DIR/secrets/<ns>/<name>.yaml by default).\n"
            "\n"
            "flags:\n"
            "  -n, --namespace NS        namespace (default " RV_DEFAULT_NAMESPACE ")\n"
            "  -h, --help                this help\n"
            "%s"
            "\n"
            "exit status: 0 deleted, 1 not found or changed concurrently, 2 usage error or the store\n"
            "is unusable\n",
            cli_store_help);
}

static int delete_main(int argc, char **argv)
{
    cli_store_opts_t so = { 0 };
    const char *kind_s = NULL, *name = NULL, *ns = RV_DEFAULT_NAMESPACE;
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if ((v = cli_flag(argc, argv, &i, "--namespace", "-n", &missing))) {
            ns = v;
        } else if (cli_kind_name_arg(argc, argv, &i, missing, &so, "delete", &kind_s, &name) < 0) {
            return 2;
        }
    }
    if (!kind_s || !name) {
        fprintf(stderr, "rivet delete: KIND and NAME are required (see rivet delete --help)\n");
        return 2;
    }
    int kind = rv_kind_parse(kind_s);
    if (kind < 0) {
        fprintf(stderr, "rivet delete: unknown kind '%s' (gw, vs, rt, us, ug, secret or their Gloo names)\n",
                kind_s);
        return 2;
    }
    if (strchr(name, '/') || strchr(ns, '/') || !name[0] || !ns[0]) {
        fprintf(stderr, "rivet delete: invalid name or namespace\n");
        return 2;
    }
    if (kind == RV_KIND_SECRET)
        return cli_secret_delete(&so, ns, name);
    cli_store_t cs;
    int rc = cli_store_open(&cs, &so, "delete");
    if (rc)
        return rc;
    const char *what = rv_kind_name(kind);
    int w;
    char where[2048];
    if (cs.kv) {
        char *old;
        size_t olen;
        uint64_t mi;
        rv_kv_key(where, sizeof(where), cs.root, kind, ns, name);
        int ex = cli_kv_read(&cs, where, &old, &olen, &mi, "delete");
        free(old);
        w = ex <= 0 ? (ex == 0 ? 3 : -1) : cli_kv_cas(&cs, where, NULL, 0, mi, true, "delete");
    } else {
        char *path = cli_dir_path(&cs, kind, ns, name);
        snprintf(where, sizeof(where), "%s", path ? path : "?");
        size_t len = 0;
        bool exists = false;
        char *buf = path ? cli_slurp(path, &len, &exists, NULL) : NULL;
        if (!exists)
            w = 3;
        else
            w = buf ? cli_dir_cas(path, buf, len, true, NULL, 0, true, "delete") : -1;
        free(buf);
        free(path);
    }
    if (w == 1) {
        printf("%s %s/%s deleted\n", what, ns, name);
        rc = 0;
    } else if (w == 3) {
        fprintf(stderr, "rivet delete: %s %s/%s not found (%s)\n", what, ns, name, where);
        rc = 1;
    } else if (w == 0) {
        fprintf(stderr, "rivet delete: conflict: %s %s/%s (%s) changed since it was read; not deleted\n", what, ns,
                name, where);
        rc = 1;
    } else {
        rc = 1;
    }
    cli_store_close(&cs);
    return rc;
}

const rv_cmd_t rv_cmd_delete = { "delete", "delete one resource from the store (compare-and-set)", delete_main };
