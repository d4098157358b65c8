/*
 * get.c - `rivet get KIND [NAME]`: list resources of the store with the status rivet would
 * give them, computed locally by loading the whole store as `rivet validate` does (rivet
 * never writes statuses back to Consul), as a table, or their stored documents in YAML/JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "control/kvsource.h"
#include "core/err.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rivet get KIND [NAME] [-n NS | -A] [-o table|yaml|json] [store flags]\n"
            "\n"
            "Show resources of the store with the status `rivet run` would report (computed here by\n"
            "loading the whole store, as `rivet validate` does).\n"
            "KIND: Gateway|gateway(s)|gw, VirtualService|virtualservice(s)|vs, RouteTable|\n"
            "routetable(s)|rt, Upstream|upstream(s)|us, UpstreamGroup|upstreamgroup(s)|ug,\n"
            "Secret|secret(s): every secret source of the Settings (KIND tls|aws, the fields present,\n"
            "the source, Accepted/Rejected/Shadowed); key material is never printed, in any format.\n"
            "\n"
            "flags:\n"
            "  -n, --namespace NS        only this namespace (default: every namespace; with NAME: "
            RV_DEFAULT_NAMESPACE ")\n"
            "  -A, --all-namespaces      every namespace (the default without NAME)\n"
            "  -o, --output FORMAT       table (default; NAMESPACE NAME STATUS REASON), yaml (the stored\n"
            "                            documents, --- separated) or json (stored form plus \"status\")\n"
            "  -h, --help                this help\n"
            "%s"
            "\n"
            "exit status: 0 found, 1 NAME not found, 2 usage error or the store is unusable\n",
            cli_store_help);
}

/* Stored text of a resource: KV value from the listing, or the file. malloc'd, NULL if none. */
static char *stored_text(const cli_store_t *cs, const rv_kv_listing_t *l, const rv_status_t *st, size_t *len)
{
    char src[4096];
    snprintf(src, sizeof(src), "%.*s", (int)st->file.len, st->file.ptr);
    if (cs->kv) {
        for (size_t i = 0; l && i < l->n; i++)
            if (!strcmp(l->pairs[i].key, src)) {
                *len = l->pairs[i].len;
                return strndup(l->pairs[i].value ? l->pairs[i].value : "", *len);
            }
        return NULL;
    }
    bool exists;
    return cli_slurp(src, len, &exists, NULL);
}

static void json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void put_clean(rv_str_t s, size_t max)
{
    size_t n = s.len < max ? s.len : max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        putchar(c < 0x20 || c == 0x7f ? ' ' : c);
    }
    if (s.len > max)
        fputs("...", stdout);
}

int cli_kind_name_arg(int argc, char **argv, int *i, bool missing, cli_store_opts_t *so, const char *cmd,
                      const char **kind, const char **name)
{
    int sf = cli_store_flag(argc, argv, i, so, cmd);
    if (sf != 0)
        return sf < 0 ? -1 : 1;
    if (missing || argv[*i][0] == '-') {
        fprintf(stderr, missing ? "rivet %s: %s needs a value\n" : "rivet %s: unknown flag '%s'\n", cmd, argv[*i]);
        return -1;
    }
    if (!*kind) {
        *kind = argv[*i];
    } else if (!*name) {
        *name = argv[*i];
    } else {
        fprintf(stderr, "rivet %s: unexpected argument '%s'\n", cmd, argv[*i]);
        return -1;
    }
    return 1;
}

static int get_main(int argc, char **argv)
{
    cli_store_opts_t so = { 0 };
    const char *kind_s = NULL, *name = NULL, *ns = NULL, *out = "table";
    bool all = false;
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if ((v = cli_flag(argc, argv, &i, "--namespace", "-n", &missing))) {
            ns = v;
        } else if ((v = cli_flag(argc, argv, &i, "--output", "-o", &missing))) {
            out = v;
        } else if (!strcmp(argv[i], "-A") || !strcmp(argv[i], "--all-namespaces")) {
            all = true;
        } else if (cli_kind_name_arg(argc, argv, &i, missing, &so, "get", &kind_s, &name) < 0) {
            return 2;
        }
    }
    if (!kind_s) {
        fprintf(stderr, "rivet get: KIND is required (see rivet get --help)\n");
        return 2;
    }
    int kind = rv_kind_parse(kind_s);
    if (kind < 0) {
        fprintf(stderr, "rivet get: unknown kind '%s' (gw, vs, rt, us, ug, secret or their Gloo names)\n", kind_s);
        return 2;
    }
    if (strcmp(out, "table") && strcmp(out, "yaml") && strcmp(out, "json")) {
        fprintf(stderr, "rivet get: -o must be table, yaml or json, got '%s'\n", out);
        return 2;
    }
    if (name && !ns && !all)
        ns = RV_DEFAULT_NAMESPACE;
    if (all)
        ns = NULL;
    if (kind == RV_KIND_SECRET)   /* the secret sources, not the config store */
        return cli_secret_get(&so, name, ns, out);

    cli_store_t cs;
    rv_store_t *st = NULL;
    rv_snapshot_t *snap = NULL;
    rv_kv_listing_t *l = NULL;
    int rc = cli_store_open(&cs, &so, "get");
    if (rc)
        return rc;
    if ((rc = cli_store_load(&cs, &st, &snap, &l, "get")) != 0)
        goto done;
    const char *kname = rv_kind_name(kind);
    size_t found = 0;
    if (!strcmp(out, "table"))
        printf("%-20s %-32s %-10s %s\n", "NAMESPACE", "NAME", "STATUS", "REASON");
    else if (!strcmp(out, "json") && !name)
        printf("[");
    for (uint32_t i = 0; i < snap->nstatuses; i++) {
        const rv_status_t *x = &snap->statuses[i];
        if (!rv_str_eq(x->kind, rv_cstr(kname)) || (ns && !rv_str_eq(x->ns, rv_cstr(ns))) ||
            (name && !rv_str_eq(x->name, rv_cstr(name))))
            continue;
        found++;
        if (!strcmp(out, "table")) {
            printf("%-20.*s %-32.*s %-10s ", (int)x->ns.len, x->ns.ptr, (int)x->name.len, x->name.ptr,
                   rv_state_name(x->state));
            put_clean(x->reason, name ? 4096 : 100);
            putchar('\n');
            continue;
        }
        size_t len = 0;
        char *text = stored_text(&cs, l, x, &len);
        if (!strcmp(out, "yaml")) {
            if (found > 1)
                printf("---\n");
            if (text) {
                fwrite(text, 1, len, stdout);
                if (len && text[len - 1] != '\n')
                    putchar('\n');
            }
        } else {
            char nsb[256], nmb[512];
            snprintf(nsb, sizeof(nsb), "%.*s", (int)x->ns.len, x->ns.ptr);
            snprintf(nmb, sizeof(nmb), "%.*s", (int)x->name.len, x->name.ptr);
            size_t jl = 0;
            char *j = text ? rv_resource_stored_json(kind, text, len, nsb, nmb, &jl) : NULL;
            if (found > 1)
                printf(",");
            /* the stored form, with the locally computed status added */
            if (j && jl >= 2) {
                while (jl && j[jl - 1] == '\n')
                    jl--;
                if (jl && j[jl - 1] == '}')
                    jl--;
                fwrite(j, 1, jl, stdout);
                printf("%s\"status\":{\"state\":\"%s\",\"reason\":", jl > 1 ? "," : "", rv_state_name(x->state));
            } else {
                printf("{\"metadata\":{\"name\":");
                json_string(stdout, nmb, strlen(nmb));
                printf(",\"namespace\":");
                json_string(stdout, nsb, strlen(nsb));
                printf("},\"status\":{\"state\":\"%s\",\"reason\":", rv_state_name(x->state));
            }
            json_string(stdout, x->reason.ptr, x->reason.len);
            printf(",\"source\":");
            json_string(stdout, x->file.ptr, x->file.len);
            printf("}}");
            free(j);
        }
        free(text);
    }
    if (!strcmp(out, "json"))
        printf(name ? "\n" : "]\n");
    if (name && !found) {
        fprintf(stderr, "rivet get: %s %s/%s not found\n", kname, ns, name);
        rc = 1;
    }
done:
    rv_kv_listing_free(l);
    rv_snapshot_release(snap);
    rv_store_free(st);
    cli_store_close(&cs);
    return rc;
}

const rv_cmd_t rv_cmd_get = { "get", "list resources of the store with their status (table, yaml, json)",
                              get_main };
