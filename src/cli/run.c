/* run.c - `rivet run`: parse flags, then hand over to the control thread (control.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "control/control.h"
#include "control/discovery.h"
#include "core/log.h"

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: rivet run --dir DIR | --consul ADDR [flags]\n"
            "\n"
            "Serve Gloo Edge resources (Gateway, VirtualService, RouteTable, Upstream, UpstreamGroup)\n"
            "from a directory. Files are watched: a change is live within a second.\n"
            "\n"
            "flags:\n"
            "  --dir DIR              Gloo bootstrap directory: DIR/<NS>/default.yaml (a Settings) when\n"
            "                         present picks the sources; otherwise DIR is the config directory\n"
            "  --namespace NS         Settings namespace (default gloo-system)\n"
            "  --admin HOST:PORT      admin listener: /ready /metrics /config_dump /status\n"
            "                         (default 127.0.0.1:19000)\n"
            "  --workers N            worker threads (default: number of online CPUs)\n"
            "  --log-level LEVEL      error|warn|info|debug (default info)\n"
            "  --access-log FORMAT    text|json|off (default text, on stdout)\n"
            "  --drain-timeout SECS   on SIGTERM, wait this long for in-flight requests (default 15)\n"
            "  --consul-discovery[=passing|catalog]\n"
            "                         discover every Consul service as an Upstream (as Settings\n"
            "                         consul.serviceDiscovery does); passing (default): only instances\n"
            "                         whose Consul health checks pass get traffic; catalog: every\n"
            "                         registered instance does (Gloo's behaviour)\n"
            "  --consul-discovery-max-queries N\n"
            "                         blocking queries held open at once, one per service and datacenter\n"
            "                         (default 8192; each is a connection: a Consul agent allows 200 per\n"
            "                         client address unless limits.http_max_conns_per_client is raised)\n"
            "  --consul ADDR          read the config from Consul KV at ADDR in Gloo's layout\n"
            "                         <root>/<group>/<version>/<Kind>/<ns>/<name> (host:port, http:// or\n"
            "                         https://; empty = CONSUL_HTTP_ADDR or 127.0.0.1:8500); --dir is\n"
            "                         then optional (a Settings file there still applies)\n"
            "  --consul-root-key KEY  root key (default: Settings consulKvSource.rootKey, else gloo)\n"
            "  --consul-allow-stale   ?stale reads (any server answers; default: consistent reads)\n"
            "  -h, --help             this help\n"
            "\n"
            "CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE), CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY,\n"
            "CONSUL_HTTP_SSL(_VERIFY), CONSUL_TLS_SERVER_NAME and CONSUL_HTTP_AUTH are honoured.\n"
            "signals: SIGHUP re-reads the config; SIGTERM/SIGINT stop accepting and drain.\n");
}

/* Value of "--name value" or "--name=value" at argv[*i] (cli_flag); says so when it is missing. */
static const char *flag_value(int argc, char **argv, int *i, const char *name, int *bad)
{
    bool missing = false;
    const char *v = cli_flag(argc, argv, i, name, NULL, &missing);
    if (missing) {
        fprintf(stderr, "rivet run: %s needs a value\n", name);
        *bad = 1;
    }
    return v;
}

static int run_main(int argc, char **argv)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const char *consul_addr = NULL, *consul_root = NULL;
    bool consul = false, consul_stale = false;
    rv_control_opts_t o = { .ns = RV_DEFAULT_NAMESPACE, .admin_addr = "127.0.0.1:19000",
                            .workers = ncpu > 0 ? (int)ncpu : 1, .access_log = true, .drain_ms = 15000 };
    for (int i = 1; i < argc; i++) {
        int bad = 0;
        const char *v;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            run_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--consul-discovery") == 0 ||
                   strncmp(argv[i], "--consul-discovery=", 19) == 0) {
            const char *m = argv[i][18] == '=' ? argv[i] + 19 : "passing";
            if (strcmp(m, "passing") != 0 && strcmp(m, "catalog") != 0) {
                fprintf(stderr, "rivet run: --consul-discovery must be passing|catalog, got '%s'\n", m);
                return 2;
            }
            rv_disc_override(true, strcmp(m, "catalog") == 0);
        } else if ((v = flag_value(argc, argv, &i, "--consul-discovery-max-queries", &bad))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 1 || n > 1000000) {
                fprintf(stderr, "rivet run: --consul-discovery-max-queries must be 1..1000000, got '%s'\n", v);
                return 2;
            }
            rv_disc_set_max_queries((uint32_t)n);
        } else if ((v = flag_value(argc, argv, &i, "--dir", &bad))) {
            o.dir = v;
        } else if ((v = flag_value(argc, argv, &i, "--consul", &bad))) {
            consul_addr = v;
            consul = true;
        } else if ((v = flag_value(argc, argv, &i, "--consul-root-key", &bad))) {
            consul_root = v;
            consul = true;
        } else if (strcmp(argv[i], "--consul-allow-stale") == 0) {
            consul_stale = consul = true;
        } else if ((v = flag_value(argc, argv, &i, "--namespace", &bad))) {
            o.ns = v;
        } else if ((v = flag_value(argc, argv, &i, "--admin", &bad))) {
            o.admin_addr = v;
        } else if ((v = flag_value(argc, argv, &i, "--workers", &bad))) {
            char *end;
            long w = strtol(v, &end, 10);
            if (*end || w < 1 || w > 256) {
                fprintf(stderr, "rivet run: --workers must be 1..256, got '%s'\n", v);
                return 2;
            }
            o.workers = (int)w;
        } else if ((v = flag_value(argc, argv, &i, "--log-level", &bad))) {
            int l = rv_log_parse_level(v);
            if (l < 0) {
                fprintf(stderr, "rivet run: --log-level must be error|warn|info|debug, got '%s'\n", v);
                return 2;
            }
            rv_log_level = l;
        } else if ((v = flag_value(argc, argv, &i, "--access-log", &bad))) {
            if (strcmp(v, "text") == 0) {
                o.access_log = true;
            } else if (strcmp(v, "json") == 0) {
                o.access_log = o.access_log_json = true;
            } else if (strcmp(v, "off") == 0) {
                o.access_log = false;
            } else {
                fprintf(stderr, "rivet run: --access-log must be text|json|off, got '%s'\n", v);
                return 2;
            }
        } else if ((v = flag_value(argc, argv, &i, "--drain-timeout", &bad))) {
            char *end;
            double s = strtod(v, &end);
            if (*end || s < 0 || s > 3600) {
                fprintf(stderr, "rivet run: --drain-timeout must be 0..3600 seconds, got '%s'\n", v);
                return 2;
            }
            o.drain_ms = (int)(s * 1000);
        } else {
            if (!bad)
                fprintf(stderr, "rivet run: unknown flag '%s' (see rivet run --help)\n", argv[i]);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (consul) {
        rv_settings_consul_override(consul_addr, consul_root, consul_stale);
        if (!o.dir)
            o.dir = ""; /* no bootstrap directory: the config comes from Consul KV */
    }
    if (!o.dir) {
        fprintf(stderr, "rivet run: --dir (or --consul) is required (see rivet run --help)\n");
        return 2;
    }
    return rv_control_run(&o);
}

const rv_cmd_t rv_cmd_run = { "run", "serve Gloo Edge resources from a directory", run_main };
