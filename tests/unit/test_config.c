/*
 * test_config.c - the config decoder: YAML limits, strict fields (both spellings, both forms),
 * types, every supported and every refused field, durations, and Settings.
 * Directory-level behaviour (store, translation, statuses) is in test_config_build.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config-internal.h"
#include "core/err.h"
#include "tdir.h"
#include "test.h"

static char err[CFG_ERRLEN];
static rv_arena_t arena;

/* Decode yaml as kind from "<plural>/gloo-system/<name>.yaml"; NULL and err on rejection. */
static void *dec_named(int kind, const char *name, const char *yaml)
{
    void *obj = NULL;
    rv_arena_free(&arena);
    rv_arena_init(&arena, 0);
    char file[128];
    snprintf(file, sizeof(file), "%s/gloo-system/%s.yaml", cfg_kinds[kind].plural, name);
    if (cfg_decode_resource(&arena, kind, file, NULL, "gloo-system", name, yaml, strlen(yaml), &obj, err,
                            sizeof(err)) != 0)
        return NULL;
    err[0] = '\0';
    return obj;
}

static void *dec(int kind, const char *yaml)
{
    return dec_named(kind, "x", yaml);
}

/* Rejected, and the message holds want. */
#define REJ(kind, yaml, want, ...)                                                  \
    do {                                                                            \
        void *o_ = dec(kind, yaml);                                                 \
        CHECK(!o_ && strstr(err, want) != NULL, __VA_ARGS__);                       \
        if (o_ || !strstr(err, want))                                               \
            printf("#   error was: '%s'\n#   wanted: '%s'\n", o_ ? "(accepted)" : err, want); \
    } while (0)

#define ACC(kind, yaml, ...)                                                        \
    do {                                                                            \
        void *o_ = dec(kind, yaml);                                                 \
        CHECK(o_ != NULL, __VA_ARGS__);                                             \
        if (!o_)                                                                    \
            printf("#   error: %s\n", err);                                         \
    } while (0)

#define VS_ROUTE(route) "metadata: {name: x}\nvirtualHost:\n  routes:\n  - " route "\n"
#define US_STATIC(extra) "metadata: {name: x}\nstatic: {hosts: [{addr: 10.0.0.1, port: 80}]" extra "}\n"
#define ACT "routeAction: {single: {upstream: {name: u}}}"

/* ---- YAML -------------------------------------------------------------------------- */

static void test_yaml(void)
{
    int line, col;
    char e[256];
    rv_arena_t a;
    rv_arena_init(&a, 0);
    ynode_t *n = cfg_yaml_parse(&a, "a: 1\nb:\n  - x\n  - 'y'\nc: ~\n", 26, e, sizeof(e), &line, &col);
    CHECK(n && n->type == YN_MAP && n->n == 3, "yaml: mapping with 3 pairs");
    ynode_t *b = cfg_ymap_get(n, "b");
    CHECK(b && b->type == YN_SEQ && b->n == 2 && b->line == 3 && b->col == 3, "yaml: sequence at 3:3");
    CHECK(b && b->kids[0]->plain && !b->kids[1]->plain, "yaml: plain vs quoted scalar");
    CHECK(cfg_ymap_get(n, "c") && cfg_ymap_get(n, "c")->is_null, "yaml: ~ is null");
    CHECK(cfg_ymap_get(n, "zz") == NULL, "yaml: missing key");

    n = cfg_yaml_parse(&a, "a: 1\nb: [1, 2\nc: 3", 17, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "invalid YAML") && line >= 2, "yaml: unclosed flow sequence (line %d: %s)", line, e);
    n = cfg_yaml_parse(&a, "a: 1\nb: 2\na: 3\n", 15, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "duplicate key 'a'") && line == 3 && col == 1, "yaml: duplicate key at 3:1");
    n = cfg_yaml_parse(&a, "a: \"x\\0y\"\n", 10, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "NUL"), "yaml: escaped NUL refused: %s", e);
    n = cfg_yaml_parse(&a, "a: 1\0b: 2", 9, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "NUL byte") && line == 1, "yaml: raw NUL byte refused");
    n = cfg_yaml_parse(&a, "a: \"\xc3\x28\"\n", 8, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "UTF"), "yaml: invalid UTF-8 refused: %s", e);
    n = cfg_yaml_parse(&a, "a: caf\xc3\xa9\n", 9, e, sizeof(e), &line, &col);
    CHECK(n != NULL, "yaml: valid UTF-8 accepted");
    n = cfg_yaml_parse(&a, "a: *nope\n", 9, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "unknown alias"), "yaml: unknown alias: %s", e);
    n = cfg_yaml_parse(&a, "a: 1\n---\nb: 2\n", 14, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "second YAML document") && line == 2, "yaml: two documents refused");
    n = cfg_yaml_parse(&a, "# only a comment\n", 17, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "empty"), "yaml: empty document refused");
    n = cfg_yaml_parse(&a, "a: !custom x\n", 13, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "unsupported YAML tag"), "yaml: custom tag refused");
    n = cfg_yaml_parse(&a, "a: !!str 12\n", 12, e, sizeof(e), &line, &col);
    CHECK(n && cfg_ymap_get(n, "a")->force_str, "yaml: !!str forces a string");
    n = cfg_yaml_parse(&a, "{[1]: 2}\n", 9, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "keys must be scalars"), "yaml: complex key refused: %s", e);
    n = cfg_yaml_parse(&a, "a: &x {k: v}\nb: *x\n", 19, e, sizeof(e), &line, &col);
    CHECK(n && cfg_ymap_get(n, "b") == cfg_ymap_get(n, "a"), "yaml: alias shares the anchored node");

    n = cfg_yaml_parse(&a, "a: &x 1\nb: &x 2\nc: *x\n", 21, e, sizeof(e), &line, &col);
    CHECK(n && !strcmp(cfg_ymap_get(n, "c")->s, "2"), "yaml: a redefined anchor takes the latest value");
    size_t cap = 5000 * 16, used = 0;
    char *many = malloc(cap);
    for (int i = 0; i < 5000; i++)
        used += (size_t)snprintf(many + used, cap - used, "- &a%d x\n", i);
    n = cfg_yaml_parse(&a, many, used, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "too many YAML anchors"), "yaml: anchors are limited (%s)", e);
    free(many);

    /* billion laughs: 10 levels of 10 aliases = 10^10 nodes once expanded */
    char bomb[2048];
    size_t o = (size_t)snprintf(bomb, sizeof(bomb), "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++)
        o += (size_t)snprintf(bomb + o, sizeof(bomb) - o, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
                              i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    n = cfg_yaml_parse(&a, bomb, o, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "document too large"), "yaml: alias bomb refused: %s", e);

    char deep[1024];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    n = cfg_yaml_parse(&a, deep, 400, e, sizeof(e), &line, &col);
    CHECK(!n && (strstr(e, "nesting") || strstr(e, "invalid YAML")), "yaml: deep nesting refused: %s", e);

    char *big = malloc(CFG_MAX_FILE + 2);
    memset(big, ' ', CFG_MAX_FILE + 1);
    n = cfg_yaml_parse(&a, big, CFG_MAX_FILE + 1, e, sizeof(e), &line, &col);
    CHECK(!n && strstr(e, "larger than"), "yaml: more than 4 MiB refused");
    free(big);
    rv_arena_free(&a);
}

/* Every prefix of a real resource, random bytes and random mutations: never a crash. */
static void test_fuzzish(void)
{
    const char *doc = "apiVersion: gateway.solo.io/v1\nkind: VirtualService\nmetadata: {name: x, namespace: gloo-system}\n"
                      "spec:\n  virtualHost:\n    domains: ['*', \"a.com\"]\n    routes:\n    - matchers: [{prefix: /a, "
                      "headers: [{name: x, value: 'y', regex: true}]}]\n      routeAction: &ra\n        multi: "
                      "{destinations: [{destination: {upstream: {name: u}}, weight: 2}]}\n      options: {timeout: 1.5s, "
                      "retries: {retryOn: '5xx,reset'}}\n    - matchers: [{regex: '/b[0-9]+'}]\n      routeAction: *ra\n";
    size_t len = strlen(doc);
    int ok = 0, bad = 0, msgs = 0;
    for (size_t i = 0; i <= len; i++) {
        char *cut = strndup(doc, i);
        if (dec(RK_VS, cut))
            ok++;
        else {
            bad++;
            msgs += err[0] != '\0';
        }
        free(cut);
    }
    CHECK(ok >= 1 && bad > 100 && msgs == bad, "fuzz: %zu truncations decode or fail with a message (%d ok)", len + 1, ok);
    CHECK(dec(RK_VS, doc) != NULL, "fuzz: the full document decodes (%s)", err);

    uint32_t seed = 12345;
    int crashes = 0;
    char buf[600];
    for (int it = 0; it < 3000; it++) {
        size_t n = (size_t)(seed % 500);
        if (it % 2) {
            for (size_t k = 0; k < n; k++) {
                seed = seed * 1103515245u + 12345u;
                buf[k] = (char)(seed >> 16);
            }
        } else {
            n = RV_MIN(len, sizeof(buf) - 1);
            memcpy(buf, doc, n);
            for (int m = 0; m < 4; m++) {
                seed = seed * 1103515245u + 12345u;
                buf[(seed >> 8) % n] = "{}[]:,&*!|>'\"#- \n\t\x80\xff"[(seed >> 20) % 20];
            }
        }
        seed = seed * 1103515245u + 12345u;
        buf[n] = '\0';
        void *o = dec(RK_VS, buf);
        crashes += !o && !err[0];
    }
    CHECK(crashes == 0, "fuzz: 3000 garbage/mutated inputs handled, every rejection has a message");
}

/* ---- field names, types, forms ------------------------------------------------------ */

static void test_fields(void)
{
    gw_t *g = dec(RK_GATEWAY, "metadata: {name: x, namespace: gloo-system}\nbindAddress: '::'\nbindPort: 8080\n"
                              "httpGateway: {}\nproxyNames: [gateway-proxy]\nssl: false\nuseProxyProto: false\n");
    CHECK(g && g->bind_port == 8080 && !strcmp(g->bind_address, "::") && g->http.h.set, "gateway: stored form");
    CHECK(g && g->proxy_names.n == 1 && g->meta.ns && !strcmp(g->meta.ns, "gloo-system"), "gateway: proxyNames, ns");
    g = dec(RK_GATEWAY, "metadata: {name: x}\nbind_address: 127.0.0.1\nbind_port: 81\nhttp_gateway: {virtual_services: "
                        "[{name: a}], virtual_service_namespaces: ['*']}\n");
    CHECK(g && g->bind_port == 81 && g->http.vss.n == 1 && g->http.vs_namespaces.n == 1, "gateway: snake_case names");
    CHECK(g && g->meta.ns && !strcmp(g->meta.ns, "gloo-system"), "namespace comes from the folder when absent");
    g = dec(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: Gateway\nmetadata: {name: x, resourceVersion: '5', "
                        "uid: abc, generation: 2, creationTimestamp: '2020-01-01T00:00:00Z', annotations: {a: b}, "
                        "labels: {app: web}}\nspec: {bindPort: 8081, httpGateway: {virtualServiceSelector: {app: web}}}\n"
                        "status: {state: 1}\n");
    CHECK(g && g->bind_port == 8081 && g->http.selector.n == 1 && g->meta.labels.n == 1,
          "gateway: Kubernetes form, k8s metadata fields accepted (%s)", err);
    CHECK(g && !strcmp(g->bind_address, "::"), "gateway: bindAddress defaults to ::");
    g = dec(RK_GATEWAY, "metadata: {name: x}\nbindPort: '8082'\n");
    CHECK(g && g->bind_port == 8082, "integer given as a quoted string (protobuf JSON)");
    ACC(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nnamespacedStatuses: {statuses: {gloo-system: {state: 1}}}\n",
        "namespacedStatuses accepted and ignored");

    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: abc\n", "bindPort: expected an integer, got string",
        "wrong type: string for integer");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1.5\n", "expected an integer, got number", "number for integer");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 70000\n", "between 0 and 65535", "port out of range");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: -1\n", "must not be negative", "negative port");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1e3\n", "expected an integer, got number", "exponent is a number");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1-2\n", "expected an integer, got string", "1-2 is a string");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: true\n", "expected an integer, got boolean", "boolean for integer");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: {}\n", "expected an integer, got mapping", "mapping for integer");
    g = dec(RK_GATEWAY, "metadata: {name: x}\nbindPort: +8083\n");
    CHECK(g && g->bind_port == 8083, "+8083 is an integer (YAML 1.2 core)");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: [1]\n", "expected an integer, got list", "list for integer");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nssl: 'false'\n", "ssl: expected a boolean",
        "quoted boolean refused");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nproxyNames: gateway-proxy\n", "proxyNames: expected a list",
        "scalar for a list");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nhttpGateway: []\n", "httpGateway: expected a mapping, got list",
        "list for a message");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nbind_port: 2\n", "duplicate field", "both spellings refused");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nbindport: 2\n", "bindport: unknown field",
        "wrong case is not a spelling");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nhttpGateway: {virtualServices: [{nmae: a}]}\n",
        "httpGateway.virtualServices[0].nmae: unknown field", "unknown field named with its path");
    g = dec(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nssl: true\n");
    CHECK(g && g->ssl, "ssl: true accepted");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nuseProxyProto: true\n", "useProxyProto: true is not supported",
        "useProxyProto: true refused");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\ntcpGateway: {}\n", "tcpGateway is not supported yet",
        "tcpGateway refused");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\noptions: {perConnectionBufferLimitBytes: 1}\n",
        "options is not supported yet", "listener options refused");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nhttpGateway: {}\nhybridGateway: {}\n", "hybridGateway",
        "oneof: two gateway types");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nbindAddress: localhost\n", "not an IP address",
        "bindAddress must be an IP");
    REJ(RK_GATEWAY, "metadata: {name: x}\nhttpGateway: {}\n", "bindPort: is required", "bindPort required");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\nhttpGateway: {virtualServiceExpressions: {}}\n",
        "httpGateway.virtualServiceExpressions is not supported yet", "selector expressions refused");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1\n<<: {a: 1}\n", "merge keys", "YAML merge keys refused");

    /* metadata and the file's place */
    REJ(RK_GATEWAY, "metadata: {name: other}\nbindPort: 1\n", "metadata.name 'other' does not match the file name 'x'",
        "name must match the file");
    REJ(RK_GATEWAY, "metadata: {name: x, namespace: elsewhere}\nbindPort: 1\n",
        "metadata.namespace 'elsewhere' does not match the folder 'gloo-system'", "namespace must match the folder");
    REJ(RK_GATEWAY, "bindPort: 1\n", "metadata.name is required", "name required");
    REJ(RK_GATEWAY, "metadata: {name: x, bogus: 1}\nbindPort: 1\n", "metadata.bogus: unknown field",
        "unknown metadata field");
    REJ(RK_GATEWAY, "apiVersion: gloo.solo.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {bindPort: 1}\n",
        "apiVersion: expected gateway.solo.io/v1", "wrong apiVersion");
    REJ(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {}\n",
        "kind: 'VirtualService' does not belong in gateways/ (expected Gateway)", "kind must match the folder");
    REJ(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {bindPort: 1}\nextra: 1\n",
        "extra: unknown field", "unknown top-level key in the Kubernetes form");
    REJ(RK_GATEWAY, "kind: Gateway\nmetadata: {name: x}\nspec: {bindPort: 1}\n", "apiVersion: is required",
        "apiVersion required in the Kubernetes form");
    REJ(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: Gateway\nspec: {bindPort: 1, metadata: {name: x}}\n",
        "spec.metadata: belongs at the top level", "metadata inside spec refused");
    REJ(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {bindPort: x}\n",
        "spec.bindPort: expected an integer", "Kubernetes-form paths start at spec");
    REJ(RK_GATEWAY, "- a\n- b\n", "expected a mapping at the top level", "top level must be a mapping");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: 1: 2\nhttpGateway: {}\n",
        "gateways/gloo-system/x.yaml:2:12: invalid YAML: invalid nested block mapping", "bad YAML names file:line:col");
    REJ(RK_GATEWAY, "metadata: {name: x}\n  bindPort: 1\n", "x.yaml:2:3: invalid YAML", "bad indentation line:col");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: [1\n", "x.yaml:3:1: invalid YAML: flow sequence without a closing",
        "unclosed flow sequence at the end");
    REJ(RK_GATEWAY, "metadata: {name: x}\nbindPort: \x01\n", "x.yaml:2:11: control character 0x01",
        "control character named with its position");
}

static void test_vs_fields(void)
{
    vs_t *v = dec(RK_VS, "metadata: {name: x}\ndisplayName: hello\nvirtualHost:\n  domains: [A.Example.COM, '*.b.com', "
                         "'c.*', 'd.com:8080']\n  options:\n    headerManipulation: {requestHeadersToAdd: [{header: {key: x-a, "
                         "value: '1'}}], responseHeadersToRemove: [Server]}\n    retries: {retryOn: 5xx}\n  routes:\n"
                         "  - " ACT "\n");
    CHECK(v && v->vh.domains.n == 4 && !strcmp(v->vh.domains.v[0], "a.example.com"), "vs: domains lower-cased");
    CHECK(v && v->vh.opts.headers.req_add.n == 1 && !strcmp(v->vh.opts.headers.resp_remove.v[0], "server"),
          "vs: vhost headerManipulation");
    CHECK(v && v->vh.opts.retries.on_bits == RV_RETRY_5XX, "vs: vhost retries");
    CHECK(v && !strcmp(v->display_name, "hello"), "vs: displayName");
    REJ(RK_VS, "metadata: {name: x}\nvirtualHost: {domains: ['a*b']}\n", "virtualHost.domains[0]: 'a*b' wildcard",
        "wildcard in the middle");
    REJ(RK_VS, "metadata: {name: x}\nvirtualHost: {domains: ['*.a.*']}\n", "only one wildcard", "two wildcards");
    REJ(RK_VS, "metadata: {name: x}\nvirtualHost: {domains: [a.com, A.COM]}\n", "duplicate domain 'a.com'",
        "duplicate domain");
    REJ(RK_VS, "metadata: {name: x}\nvirtualHost: {domains: ['a b']}\n", "not a valid domain", "space in a domain");
    v = dec(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s, namespace: n}, sniDomains: [A.example.com, "
                   "'*.b.example.com'], verifySubjectAltName: [spiffe://x], oneWayTls: true,\n"
                   "  disableTlsSessionResumption: true, alpnProtocols: [http/1.1], ocspStaplePolicy: STRICT_STAPLING,\n"
                   "  parameters: {minimumProtocolVersion: TLSv1_2, maximumProtocolVersion: TLSv1_3, "
                   "cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256], ecdhCurves: [X25519]}}\nvirtualHost: {}\n");
    CHECK(v && v->ssl.h.set && v->ssl.secret.h.set && !strcmp(v->ssl.secret.name, "s") && v->ssl.sni.n == 2 &&
              !strcmp(v->ssl.sni.v[0], "a.example.com") && v->ssl.one_way && v->ssl.no_resume &&
              v->ssl.ocsp_policy == 1 && v->ssl.params.min_ver == 3 && v->ssl.params.max_ver == 4 &&
              v->ssl.params.ciphers.n == 1 && v->ssl.params.curves.n == 1 && v->ssl.san.n == 1,
          "sslConfig decoded (sniDomains lower-cased)");
    v = dec(RK_VS, "metadata: {name: x}\nsslConfig: {sslFiles: {tlsCert: /c, tlsKey: /k, rootCa: /r, ocspStaple: /o}}\n"
                   "virtualHost: {}\n");
    CHECK(v && v->ssl.files.h.set && !strcmp(v->ssl.files.cert, "/c") && !strcmp(v->ssl.files.root_ca, "/r"),
          "sslConfig.sslFiles decoded");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {sds: {}}\nvirtualHost: {}\n", "sds is not supported",
        "sslConfig.sds refused by name");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {sniDomains: [a.com]}\nvirtualHost: {}\n",
        "one of secretRef or sslFiles is required", "sslConfig without material refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {sslFiles: {tlsCert: /c}}\nvirtualHost: {}\n",
        "tlsKey: is required", "sslFiles without a key refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, sslFiles: {tlsCert: /c, tlsKey: /k}}\n"
               "virtualHost: {}\n", "secretRef and sslFiles cannot both be set", "secretRef and sslFiles together refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, alpnProtocols: [h2]}\nvirtualHost: {}\n",
        "'h2' is not supported (rivet speaks HTTP/1.1 only", "alpn h2 refused by name");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, alpnProtocols: [spdy/3]}\nvirtualHost: {}\n",
        "'spdy/3' is not supported", "other alpn refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, sniDomains: ['a b']}\nvirtualHost: {}\n",
        "is not a server name", "bad sniDomain refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, parameters: {minimumProtocolVersion: TLSv1_0}}\n"
               "virtualHost: {}\n", "TLSv1_0 is not supported", "TLS 1.0 refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, parameters: {minimumProtocolVersion: TLSv1_3, "
               "maximumProtocolVersion: TLSv1_2}}\nvirtualHost: {}\n", "is below minimumProtocolVersion",
        "max below min refused");
    REJ(RK_VS, "metadata: {name: x}\nsslConfig: {secretRef: {name: s}, parameters: {minimumProtocolVersion: TLSv9}}\n"
               "virtualHost: {}\n", "unknown value 'TLSv9'", "unknown version refused");
    REJ(RK_VS, "metadata: {name: x}\nvirtualHost: {options: {cors: {allowOrigin: ['*']}}}\n",
        "virtualHost.options.cors is not supported yet", "vhost cors refused");
    REJ(RK_VS, "metadata: {name: x}\nvirtualHost: {options: {stats: {}}}\n", "virtualHost.options.stats is not supported",
        "vhost stats refused");
    REJ(RK_VS, VS_ROUTE("routeAction: {single: {upstream: {nmae: u}}}"),
        "virtualHost.routes[0].routeAction.single.upstream.nmae: unknown field", "unknown field deep in a route");
    REJ(RK_VS, VS_ROUTE("routeAction: {single: {upstream: {}}}"), "routeAction.single.upstream.name: is required",
        "upstream name required");
    REJ(RK_VS, VS_ROUTE("matchers: [{prefix: /}]"), "virtualHost.routes[0]: needs an action", "route needs an action");
    REJ(RK_VS, VS_ROUTE(ACT "\n    directResponseAction: {status: 200}"), "cannot both be set",
        "two actions refused");
    REJ(RK_VS, VS_ROUTE("routeAction: {single: {kube: {ref: {name: s}, port: 80}}}"),
        "virtualHost.routes[0].routeAction.single.kube is not supported yet", "kube destination refused");
    REJ(RK_VS, VS_ROUTE("routeAction: {single: {consul: {}}}"), "single.consul.serviceName: is required",
        "consul destination needs serviceName");
    REJ(RK_VS, VS_ROUTE("routeAction: {clusterHeader: x}"), "routeAction.clusterHeader is not supported yet",
        "clusterHeader refused");
    REJ(RK_VS, VS_ROUTE("routeAction: {}"), "needs one of single, multi or upstreamGroup", "empty routeAction");
    REJ(RK_VS, VS_ROUTE("routeAction: {single: {upstream: {name: u}, subset: {values: {a: b}}}}"),
        "single.subset is not supported yet", "subset refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {cors: {allowOrigin: ['*']}}"),
        "virtualHost.routes[0].options.cors is not supported yet", "route options.cors refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {faults: {}}"), "options.faults is not supported yet", "faults refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {stagedTransformations: {}}"), "options.stagedTransformations is not",
        "stagedTransformations refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {extauth: {disable: true}}"), "options.extauth is not supported yet",
        "extauth refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {hostRewriteHeader: x}"), "options.hostRewriteHeader is not supported",
        "hostRewriteHeader refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {hostRewrite: a.com, autoHostRewrite: true}"), "cannot both be set",
        "hostRewrite/autoHostRewrite oneof");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {prefixRewrite: /a, regexRewrite: {pattern: {regex: x}}}"),
        "prefixRewrite and regexRewrite cannot both be set", "two rewrites refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    inheritableMatchers: true"), "inheritableMatchers: true is not supported",
        "inheritableMatchers refused");
    ACC(RK_VS, VS_ROUTE(ACT "\n    inheritableMatchers: false\n    name: r1"), "inheritableMatchers: false accepted");
    REJ(RK_VS, VS_ROUTE("graphqlApiRef: {name: g}"), "graphqlApiRef is not supported yet", "graphql refused");
}

static void test_matchers(void)
{
    vs_t *v = dec(RK_VS, VS_ROUTE("matchers:\n    - {prefix: /a, caseSensitive: false, methods: [get, Post], headers: "
                                  "[{name: X-Test, value: 'v[0-9]', regex: true}, {name: x-present}, {name: x-not, value: "
                                  "a, invertMatch: true}], queryParameters: [{name: q, value: '1'}, {name: r, value: '\\d+', "
                                  "regex: true}]}\n    - {exact: /e}\n    - {regex: '/r/[a-z]+'}\n    - {}\n    " ACT));
    CHECK(v != NULL, "matchers: accepted (%s)", err);
    if (v) {
        route_t *r = v->vh.routes.v;
        matcher_t *m = r->matchers.v;
        CHECK(r->matchers.n == 4 && m[0].has_prefix && !m[0].case_sensitive, "matchers: prefix, caseSensitive false");
        CHECK(!strcmp(m[0].methods.v[0], "GET") && !strcmp(m[0].methods.v[1], "POST"), "matchers: methods upper-cased");
        hmatch_t *h = m[0].headers.v;
        CHECK(!strcmp(h[0].name, "x-test") && h[0].regex && h[0].has_value, "matchers: header name lower-cased");
        CHECK(!h[1].has_value && h[2].invert, "matchers: presence match, invertMatch");
        qmatch_t *q = m[0].query.v;
        CHECK(m[0].query.n == 2 && !strcmp(q[0].value, "1") && q[1].regex, "matchers: queryParameters");
        CHECK(m[1].has_exact && m[2].has_regex && m[3].case_sensitive && !m[3].has_prefix,
              "matchers: exact, regex, empty matcher (caseSensitive defaults true)");
    }
    v = dec(RK_VS, VS_ROUTE("matchers: [{prefix: ''}]\n    " ACT));
    CHECK(v && !strcmp(((matcher_t *)((route_t *)v->vh.routes.v)->matchers.v)->prefix, "/"), "prefix '' means '/'");
    REJ(RK_VS, VS_ROUTE("matchers: [{prefix: api}]\n    " ACT), "matchers[0].prefix: 'api' must start with '/'",
        "prefix must start with /");
    REJ(RK_VS, VS_ROUTE("matchers: [{exact: ''}]\n    " ACT), "matchers[0].exact: '' must start with '/'",
        "exact must start with /");
    REJ(RK_VS, VS_ROUTE("matchers: [{regex: '/a(['}]\n    " ACT), "matchers[0].regex: invalid regex at offset",
        "bad regex refused with its offset");
    REJ(RK_VS, VS_ROUTE("matchers: [{prefix: /, exact: /a}]\n    " ACT), "prefix and exact cannot both be set",
        "two path specifiers refused");
    REJ(RK_VS, VS_ROUTE("matchers: [{connectMatcher: {}}]\n    " ACT), "connectMatcher is not supported yet",
        "connectMatcher refused");
    REJ(RK_VS, VS_ROUTE("matchers: [{headers: [{value: a}]}]\n    " ACT), "headers[0].name: is required",
        "header matcher needs a name");
    REJ(RK_VS, VS_ROUTE("matchers: [{headers: [{name: 'a b'}]}]\n    " ACT), "not a valid header name",
        "bad header name");
    REJ(RK_VS, VS_ROUTE("matchers: [{headers: [{name: ':weird'}]}]\n    " ACT), "not a valid header name",
        "unknown pseudo-header");
    ACC(RK_VS, VS_ROUTE("matchers: [{headers: [{name: ':authority', value: a.com}]}]\n    " ACT),
        ":authority accepted for Host");
    REJ(RK_VS, VS_ROUTE("matchers: [{headers: [{name: a, value: '(', regex: true}]}]\n    " ACT),
        "headers[0].value: invalid regex", "bad header regex");
    REJ(RK_VS, VS_ROUTE("matchers: [{queryParameters: [{name: a, value: '[', regex: true}]}]\n    " ACT),
        "queryParameters[0].value: invalid regex", "bad query regex");
    REJ(RK_VS, VS_ROUTE("matchers: [{methods: ['G T']}]\n    " ACT), "not a valid HTTP method", "bad method");
    REJ(RK_VS, VS_ROUTE("matchers: [{regex: /a}]\n    " ACT "\n    options: {prefixRewrite: /b}"),
        "cannot be used with a regex matcher", "prefixRewrite with a regex matcher");
    REJ(RK_VS, VS_ROUTE("matchers: [{headers: {name: a}}]\n    " ACT), "matchers[0].headers: expected a list",
        "headers must be a list");
}

static void test_actions(void)
{
    static const char *const codes[] = { "MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT",
                                         "PERMANENT_REDIRECT" };
    for (int i = 0; i < 5; i++) {
        char y[300];
        snprintf(y, sizeof(y), VS_ROUTE("redirectAction: {hostRedirect: a.com, responseCode: %s}"), codes[i]);
        vs_t *v = dec(RK_VS, y);
        CHECK(v && ((route_t *)v->vh.routes.v)->redirect.code_enum == (uint32_t)i, "redirect: responseCode %s",
              codes[i]);
        snprintf(y, sizeof(y), VS_ROUTE("redirectAction: {responseCode: %d}"), i);
        v = dec(RK_VS, y);
        CHECK(v && ((route_t *)v->vh.routes.v)->redirect.code_enum == (uint32_t)i, "redirect: numeric code %d", i);
    }
    vs_t *v = dec(RK_VS, VS_ROUTE("redirectAction: {hostRedirect: b.com, prefixRewrite: /n, httpsRedirect: true, "
                                  "stripQuery: true, portRedirect: 8443}"));
    redirect_t *rd = v ? &((route_t *)v->vh.routes.v)->redirect : NULL;
    CHECK(rd && rd->has_prefix && rd->https && rd->strip_query && rd->port == 8443 && !strcmp(rd->host, "b.com"),
          "redirect: every field");
    REJ(RK_VS, VS_ROUTE("redirectAction: {responseCode: TEAPOT}"), "unknown value 'TEAPOT' (expected one of",
        "unknown redirect code");
    REJ(RK_VS, VS_ROUTE("redirectAction: {responseCode: 5}"), "out of range", "numeric code out of range");
    REJ(RK_VS, VS_ROUTE("redirectAction: {pathRedirect: x}"), "pathRedirect: must start with '/'", "pathRedirect /");
    REJ(RK_VS, VS_ROUTE("redirectAction: {pathRedirect: /a, prefixRewrite: /b}"), "cannot both be set",
        "pathRedirect/prefixRewrite oneof");
    REJ(RK_VS, VS_ROUTE("redirectAction: {hostRedirect: 'a/b'}"), "not a valid host", "bad hostRedirect");
    REJ(RK_VS, VS_ROUTE("redirectAction: {regexRewrite: {}}"), "redirectAction.regexRewrite is not supported yet",
        "redirect regexRewrite refused");
    REJ(RK_VS, VS_ROUTE("redirectAction: {portRedirect: 65536}"), "between 0 and 65535", "portRedirect range");
    v = dec(RK_VS, VS_ROUTE("directResponseAction: {status: 418, body: \"no\\n\"}"));
    CHECK(v && ((route_t *)v->vh.routes.v)->direct.status == 418, "directResponseAction");
    REJ(RK_VS, VS_ROUTE("directResponseAction: {body: x}"), "status: must be an HTTP status", "direct status needed");
    REJ(RK_VS, VS_ROUTE("directResponseAction: {status: 600}"), "between 100 and 599", "direct status range");
    v = dec(RK_VS, VS_ROUTE("routeAction:\n      multi:\n        destinations:\n        - {destination: {upstream: "
                            "{name: a}}, weight: 3, options: {headerManipulation: {requestHeadersToAdd: [{header: "
                            "{key: x-d, value: a}, append: false}]}}}\n        - {destination: {upstream: {name: b, "
                            "namespace: other}}}"));
    CHECK(v != NULL, "multi destinations (%s)", err);
    if (v) {
        wdest_t *d = ((route_t *)v->vh.routes.v)->ra.multi.dests.v;
        hvopt_t *h = d[0].opts.headers.req_add.v;
        CHECK(d[0].weight == 3 && d[1].weight == 0 && !strcmp(d[1].dest.upstream.ns, "other"), "multi: weights, ns");
        CHECK(h && !h->append && h->has_append, "multi: destination headerManipulation, append false");
    }
    REJ(RK_VS, VS_ROUTE("routeAction: {multi: {destinations: [{destination: {upstream: {name: a}}}]}}"),
        "at least one destination needs a weight greater than 0", "all weights 0 refused");
    REJ(RK_VS, VS_ROUTE("routeAction: {multi: {destinations: []}}"), "must list at least one destination",
        "empty multi refused");
    REJ(RK_VS, VS_ROUTE("routeAction: {multi: {destinations: [{weight: 1}]}}"), "destination: is required",
        "weighted destination needs a destination");
    REJ(RK_VS, VS_ROUTE("routeAction: {multi: {destinations: [{destination: {upstream: {name: a}}, weight: 1, "
                        "options: {transformations: {}}}]}}"),
        "options.transformations is not supported yet", "destination transformations refused");
    ACC(RK_VS, VS_ROUTE("routeAction: {upstreamGroup: {name: g, namespace: n}}"), "upstreamGroup action");

    /* delegation */
    v = dec(RK_VS, VS_ROUTE("matchers: [{prefix: /a}]\n    delegateAction: {name: rt, namespace: n}"));
    CHECK(v && ((route_t *)v->vh.routes.v)->delegate.ref.h.set &&
              !strcmp(((route_t *)v->vh.routes.v)->delegate.ref.name, "rt"),
          "delegateAction legacy name/namespace become a ref");
    ACC(RK_VS, VS_ROUTE("matchers: [{prefix: /a}]\n    delegateAction: {selector: {labels: {t: a}, namespaces: ['*']}}"),
        "delegate by selector");
    REJ(RK_VS, VS_ROUTE("matchers: [{exact: /a}]\n    delegateAction: {ref: {name: rt}}"),
        "routes[0].matchers[0]: a delegating route must use a prefix matcher, not exact", "exact parent refused");
    REJ(RK_VS, VS_ROUTE("matchers: [{regex: /a}]\n    delegateAction: {ref: {name: rt}}"),
        "must use a prefix matcher, not regex", "regex parent refused");
    REJ(RK_VS, VS_ROUTE("matchers: [{prefix: /a, headers: [{name: x}]}]\n    delegateAction: {ref: {name: rt}}"),
        "cannot match on headers, queryParameters or methods", "headers on a delegating matcher refused");
    REJ(RK_VS, VS_ROUTE("matchers: [{prefix: /a, methods: [GET]}]\n    delegateAction: {ref: {name: rt}}"),
        "cannot match on headers", "methods on a delegating matcher refused");
    REJ(RK_VS, VS_ROUTE("delegateAction: {name: rt, ref: {name: rt}}"), "cannot be combined with ref or selector",
        "legacy and ref together refused");
    REJ(RK_VS, VS_ROUTE("delegateAction: {}"), "needs ref or selector", "empty delegateAction");
    REJ(RK_VS, VS_ROUTE("delegateAction: {selector: {expressions: [{key: a}]}}"),
        "selector.expressions is not supported yet", "selector expressions refused");
    REJ(RK_VS, VS_ROUTE("delegateAction: {ref: {name: a}, selector: {}}"), "ref and selector cannot both be set",
        "ref/selector oneof");
}

static void test_options(void)
{
    vs_t *v = dec(RK_VS, VS_ROUTE(ACT "\n    options:\n      prefixRewrite: /new\n      timeout: 2.5s\n      retries: "
                                  "{retryOn: '5xx, gateway-error,connect-failure,reset,retriable-status-codes,refused-"
                                  "stream', num_retries: 4, perTryTimeout: 500ms, retryBackOff: {baseInterval: 10ms, "
                                  "maxInterval: 1s}, retriable_status_codes: [503, 429]}\n      hostRewrite: up.example\n"
                                  "      headerManipulation:\n        requestHeadersToAdd: [{header: {key: X-Pct, value: "
                                  "'50%%'}}]\n        requestHeadersToRemove: [X-Remove]\n        responseHeadersToAdd: "
                                  "[{header: {key: X-R, value: r}, append: false}]"));
    CHECK(v != NULL, "route options: accepted (%s)", err);
    if (v) {
        ropts_t *o = &((route_t *)v->vh.routes.v)->opts;
        CHECK(o->has_prefix_rewrite && !strcmp(o->prefix_rewrite, "/new"), "options: prefixRewrite");
        CHECK(o->has_timeout && o->timeout_ms == 2500, "options: timeout 2.5s");
        CHECK(o->retries.on_bits == (RV_RETRY_5XX | RV_RETRY_GATEWAY_ERROR | RV_RETRY_CONNECT_FAILURE | RV_RETRY_RESET |
                                     RV_RETRY_RETRIABLE_STATUS | RV_RETRY_REFUSED_STREAM),
              "options: every retryOn value");
        CHECK(o->retries.num_retries == 4 && o->retries.per_try_ms == 500, "options: numRetries, perTryTimeout");
        CHECK(o->retries.backoff.base_ms == 10 && o->retries.backoff.max_ms == 1000, "options: retryBackOff");
        CHECK(o->retries.codes.n == 2 && o->retries.codes.v[1] == 429, "options: retriable_status_codes (snake_case)");
        CHECK(o->has_host_rewrite && !strcmp(o->host_rewrite, "up.example"), "options: hostRewrite");
        hvopt_t *h = o->headers.req_add.v;
        CHECK(h && !strcmp(h->header.value, "50%") && h->append, "options: %% unescaped, append defaults true");
        CHECK(!strcmp(o->headers.req_remove.v[0], "x-remove"), "options: requestHeadersToRemove lower-cased");
    }
    v = dec(RK_VS, VS_ROUTE(ACT "\n    options: {regexRewrite: {pattern: {regex: '^/v1/(.*)'}, substitution: '/\\1'}, "
                                "autoHostRewrite: true, timeout: 0s}"));
    CHECK(v && ((route_t *)v->vh.routes.v)->opts.regex_rewrite.h.set && ((route_t *)v->vh.routes.v)->opts.auto_host &&
              ((route_t *)v->vh.routes.v)->opts.timeout_ms == 0,
          "options: regexRewrite, autoHostRewrite, timeout 0s (%s)", err);
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {retries: {retryOn: '5xx,bogus'}}"),
        "options.retries.retryOn: unknown retry condition 'bogus'", "unknown retryOn value named");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {retries: {retriableStatusCodes: [99]}}"), "99 is not an HTTP status",
        "retriable code below 100");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {retries: {retriableStatusCodes: [600]}}"), "between 0 and 599",
        "retriable code above 599");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {retries: {retryBackOff: {maxInterval: 1s}}}"),
        "retryBackOff.baseInterval: is required", "backoff needs a base");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {retries: {retryBackOff: {baseInterval: 2s, maxInterval: 1s}}}"),
        "maxInterval: must not be less than baseInterval", "backoff max < base");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {retries: {priorityPredicate: {}}}"), "retries.priorityPredicate is not",
        "retry priorityPredicate refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {timeout: 20}"), "options.timeout: expected a duration", "integer timeout");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {timeout: 20x}"), "invalid duration '20x'", "bad duration");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {regexRewrite: {pattern: {regex: '('}}}"),
        "regexRewrite.pattern.regex: invalid regex", "bad rewrite regex");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {regexRewrite: {substitution: x}}"), "pattern.regex: is required",
        "rewrite needs a pattern");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToAdd: [{header: {key: ':path', value: "
                            "x}}]}}"),
        "pseudo-headers cannot be modified", "pseudo-header add refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToAdd: [{header: {key: Host, value: x}}]}}"),
        "the Host header cannot be added", "Host add refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToAdd: [{header: {key: 'a b', value: x}}]}}"),
        "'a b' is not a valid header name", "bad header name refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToAdd: [{header: {key: a, value: \"x\\r\\ny\"}}]}}"),
        "must not contain CR, LF", "CR/LF in a header value refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToAdd: [{header: {key: a, value: "
                            "'%DOWNSTREAM_REMOTE_ADDRESS%'}}]}}"),
        "%VARIABLE% substitutions are not supported yet", "Envoy header formatters refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToAdd: [{headerSecretRef: {name: s}}]}}"),
        "headerSecretRef is not supported yet", "headerSecretRef refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {requestHeadersToRemove: [host]}}"),
        "requestHeadersToRemove[0]: the Host header cannot be removed", "Host removal refused");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {responseHeadersToRemove: [':status']}}"),
        "pseudo-headers cannot be removed", "pseudo-header removal refused");
    ACC(RK_VS, VS_ROUTE(ACT "\n    options: {headerManipulation: {responseHeadersToAdd: [{header: {key: host, value: x}}]}}"),
        "host in a response header is allowed");
    REJ(RK_VS, VS_ROUTE(ACT "\n    options: {hostRewrite: 'a b'}"), "hostRewrite: 'a b' is not a valid host",
        "bad hostRewrite");
}

static void test_upstreams(void)
{
    us_t *u = dec(RK_US, "metadata: {name: x}\nstatic:\n  hosts:\n  - {addr: 10.0.0.1, port: 8080, loadBalancingWeight: 3}\n"
                         "  - {addr: svc.local, port: 81}\n  autoSniRewrite: false\nloadBalancerConfig: {leastRequest: "
                         "{choiceCount: 3}, updateMergeWindow: 1s}\ndiscoveryMetadata: {labels: {a: b}}\n");
    CHECK(u && u->st.hosts.n == 2 && ((shost_t *)u->st.hosts.v)[0].weight == 3 && ((shost_t *)u->st.hosts.v)[1].weight == 1,
          "upstream: static hosts, loadBalancingWeight default 1 (%s)", err);
    CHECK(u && u->lb.lr.h.set && u->lb.lr.choice_count == 3, "upstream: leastRequest choiceCount");
    u = dec(RK_US, US_STATIC("") "loadBalancerConfig: {random: {}}\n");
    CHECK(u && u->lb.random.h.set, "upstream: random lb");
    u = dec(RK_US, US_STATIC("") "loadBalancerConfig: {roundRobin: {}}\n");
    CHECK(u && u->lb.rr.h.set, "upstream: roundRobin lb");
    u = dec(RK_US, US_STATIC("") "loadBalancerConfig: {leastRequest: {}}\n");
    CHECK(u && u->lb.lr.choice_count == 2, "upstream: leastRequest choiceCount defaults to 2");
    REJ(RK_US, "metadata: {name: x}\nconsul: {dataCenters: [dc1]}\n", "consul.serviceName: is required",
        "consul upstream needs serviceName");
    REJ(RK_US, "metadata: {name: x}\nconsul: {serviceName: s, connectEnabled: true}\n",
        "consul.connectEnabled", "consul connectEnabled refused");
    REJ(RK_US, "metadata: {name: x}\nconsul: {serviceName: s, consistencyMode: StaleMode}\n",
        "consul.consistencyMode: StaleMode on an Upstream is not supported yet", "per-upstream StaleMode refused");
    REJ(RK_US, "metadata: {name: x}\nconsul: {serviceName: s, consistencyMode: ConsistentMode}\n",
        "ConsistentMode on an Upstream is not supported yet", "per-upstream ConsistentMode refused");
    ACC(RK_US, "metadata: {name: x}\nconsul: {serviceName: s, consistencyMode: DefaultMode}\n",
        "per-upstream DefaultMode accepted");
    REJ(RK_US, "metadata: {name: x}\nkube: {serviceName: s}\n", "upstream type kube is not supported yet",
        "kube upstream refused");
    REJ(RK_US, "metadata: {name: x}\nawsEc2: {region: r}\n", "upstream type awsEc2 is not supported yet",
        "awsEc2 upstream refused");
    REJ(RK_US, "metadata: {name: x}\naws_ec2: {region: r}\n", "upstream type awsEc2 is not supported yet",
        "aws_ec2 spelling refused the same way");
    REJ(RK_US, "metadata: {name: x}\n", "upstream type is required (rivet supports static and consul)", "upstream type required");
    u = dec(RK_US, US_STATIC(", useTls: true"));
    CHECK(u && u->st.use_tls && u->st.auto_sni, "useTls: true accepted, autoSniRewrite defaults to true (%s)", err);
    u = dec(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a.com, port: 80}, {addr: b.com, port: 443}]}\n");
    CHECK(u && u->st.use_tls && !u->st.has_use_tls, "a host on port 443 turns useTls on (Gloo) (%s)", err);
    u = dec(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a.com, port: 443}], useTls: false}\n");
    CHECK(u && !u->st.use_tls, "port 443 with useTls: false stays plain");
    u = dec(RK_US, US_STATIC(""));
    CHECK(u && !u->st.use_tls && !u->ssl.h.set, "port 80 without useTls is plain");
    u = dec(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: 10.0.0.1, port: 8443, sniAddr: api.test}], useTls: true}\n");
    CHECK(u && u->st.hosts.n == 1 && !strcmp(((shost_t *)u->st.hosts.v)[0].sni_addr, "api.test"), "sniAddr kept");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a.com, port: 80, sniAddr: a.com}]}\n",
        "static.hosts[0].sniAddr: needs TLS to the upstream", "sniAddr without TLS refused");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a.com, port: 443, sniAddr: 10.1.1.1}]}\n",
        "is an IP address", "sniAddr IP literal refused");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a.com, port: 443, sniAddr: 'a b'}]}\n",
        "is not a DNS name", "sniAddr with a space refused");
    u = dec(RK_US, US_STATIC("") "sslConfig:\n  sslFiles: {tlsCert: /c.pem, tlsKey: /k.pem, rootCa: /ca.pem}\n"
                                 "  sni: api.test\n  verifySubjectAltName: [api.test, spiffe://x]\n"
                                 "  parameters: {minimumProtocolVersion: TLSv1_2, maximumProtocolVersion: TLSv1_3,"
                                 " cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256], ecdhCurves: [X25519]}\n"
                                 "  alpnProtocols: [http/1.1]\n  allowRenegotiation: true\n  oneWayTls: true\n");
    CHECK(u && u->ssl.h.set && !strcmp(u->ssl.files.cert, "/c.pem") && !strcmp(u->ssl.files.root_ca, "/ca.pem") &&
              !strcmp(u->ssl.sni, "api.test") && u->ssl.san.n == 2 && u->ssl.params.min_ver == 3 &&
              u->ssl.params.max_ver == 4 && u->ssl.params.ciphers.n == 1 && u->ssl.alpn.n == 1 && u->ssl.allow_reneg &&
              u->ssl.one_way,
          "upstream sslConfig decoded (%s)", err);
    u = dec(RK_US, US_STATIC("") "sslConfig: {secretRef: {name: s, namespace: n}}\n");
    CHECK(u && !strcmp(u->ssl.secret.name, "s") && !strcmp(u->ssl.secret.ns, "n"), "sslConfig.secretRef decoded");
    REJ(RK_US, US_STATIC("") "sslConfig: {secretRef: {name: s}, sslFiles: {rootCa: /x}}\n", "sslFiles",
        "secretRef and sslFiles are exclusive");
    REJ(RK_US, US_STATIC("") "sslConfig: {sds: {}}\n", "sslConfig.sds is not supported yet", "sds refused by name");
    REJ(RK_US, US_STATIC("") "sslConfig: {alpnProtocols: [h2, http/1.1]}\n",
        "sslConfig.alpnProtocols[0]: 'h2' is not supported", "alpn h2 refused naming it");
    REJ(RK_US, US_STATIC("") "sslConfig: {sslFiles: {tlsCert: /c.pem}}\n", "sslFiles.tlsKey: is required",
        "a client cert needs its key");
    REJ(RK_US, US_STATIC("") "sslConfig: {sslFiles: {}}\n", "names no file", "empty sslFiles refused");
    REJ(RK_US, US_STATIC("") "sslConfig: {sslFiles: {rootCa: /ca, ocspStaple: /o}}\n", "ocspStaple is not supported",
        "ocspStaple refused for upstreams");
    REJ(RK_US, US_STATIC("") "sslConfig: {parameters: {minimumProtocolVersion: TLSv1_3, maximumProtocolVersion: TLSv1_2}}\n",
        "minimumProtocolVersion: TLSv1_3 is above maximumProtocolVersion", "min above max refused");
    REJ(RK_US, US_STATIC("") "sslConfig: {parameters: {minimumProtocolVersion: TLSv9}}\n", "minimumProtocolVersion",
        "unknown TLS version refused");
    REJ(RK_US, US_STATIC("") "sslConfig: {parameters: {cipherSuites: ['A:B']}}\n", "cipherSuites[0]",
        "cipher list syntax refused per element");
    REJ(RK_US, US_STATIC(", useTls: false") "sslConfig: {sni: a.test}\n", "static.useTls: false contradicts sslConfig",
        "useTls false with sslConfig refused");
    REJ(RK_US, US_STATIC("") "sslConfig: {sni: 10.0.0.1}\n", "sslConfig.sni", "sni IP literal refused");
    REJ(RK_US, US_STATIC("") "sslConfig: {verifySubjectAltName: ['']}\n", "verifySubjectAltName[0]", "empty SAN refused");
    REJ(RK_US, US_STATIC("") "sslConfig: {bogus: 1}\n", "bogus", "unknown sslConfig field refused");
    REJ(RK_US, US_STATIC("") "outlierDetection: {}\n", "outlierDetection is not supported yet", "outlierDetection refused");
    REJ(RK_US, US_STATIC("") "useHttp2: true\n", "useHttp2: true is not supported yet", "useHttp2 refused");
    REJ(RK_US, US_STATIC("") "loadBalancerConfig: {ringHash: {}}\n", "loadBalancerConfig.ringHash is not supported",
        "ringHash refused");
    REJ(RK_US, US_STATIC("") "loadBalancerConfig: {roundRobin: {slowStartConfig: {}}}\n",
        "roundRobin.slowStartConfig is not supported", "slow start refused");
    REJ(RK_US, US_STATIC("") "loadBalancerConfig: {random: {x: 1}}\n", "random.x: unknown field",
        "random takes no fields");
    REJ(RK_US, US_STATIC("") "loadBalancerConfig: {leastRequest: {choiceCount: 1}}\n", "choiceCount: must be at least 2",
        "choiceCount 1 refused");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: []}\n", "static.hosts: must list at least one host",
        "no hosts refused");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a.com}]}\n", "hosts[0].port: is required",
        "host port required");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{port: 80}]}\n", "hosts[0].addr: is required",
        "host addr required");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: 'a b', port: 80}]}\n", "not a host name or IP address",
        "bad host addr");
    REJ(RK_US, "metadata: {name: x}\nstatic: {hosts: [{addr: a, port: 80, loadBalancingWeight: 0}]}\n",
        "loadBalancingWeight: must be at least 1", "weight 0 refused");
    REJ(RK_US, US_STATIC("") "kube: {}\n", "upstream type kube is not supported yet", "second upstream type refused");

    /* connectionConfig */
    u = dec(RK_US, US_STATIC("") "connectionConfig:\n  maxRequestsPerConnection: 2\n  connectTimeout: 0.250s\n"
                                 "  tcpKeepalive: {keepaliveProbes: 3, keepaliveTime: 1.2s, keepaliveInterval: 5s}\n"
                                 "  commonHttpProtocolOptions: {idleTimeout: 0s, maxHeadersCount: 20,"
                                 " headersWithUnderscoresAction: ALLOW}\n");
    CHECK(u && u->conn.h.set && u->conn.max_requests == 2 && u->conn.has_connect && u->conn.connect_ms == 250 &&
              u->conn.ka.h.set && u->conn.ka.probes == 3 && u->conn.ka.time_ms == 1200 && u->conn.ka.intvl_ms == 5000 &&
              u->conn.http.has_idle && u->conn.http.idle_ms == 0 && u->conn.http.max_headers == 20,
          "connectionConfig decoded (%s)", err);
    u = dec(RK_US, US_STATIC("") "connection_config: {max_requests_per_connection: 0, tcp_keepalive: {}}\n");
    CHECK(u && u->conn.h.set && u->conn.max_requests == 0 && u->conn.ka.h.set && !u->conn.ka.has_time &&
              !u->conn.http.h.set,
          "connectionConfig: snake_case, 0 = unlimited, an empty tcpKeepalive keeps the OS counts (%s)", err);
    u = dec(RK_US, US_STATIC(""));
    CHECK(u && !u->conn.h.set, "no connectionConfig: nothing set");
    REJ(RK_US, US_STATIC("") "connectionConfig: {connectTimeout: 0s}\n",
        "connectionConfig.connectTimeout: must be greater than 0", "connectTimeout 0 refused (Envoy: > 0)");
    REJ(RK_US, US_STATIC("") "connectionConfig: {connectTimeout: -1s}\n", "connectionConfig.connectTimeout: invalid duration",
        "negative connectTimeout refused");
    REJ(RK_US, US_STATIC("") "connectionConfig: {connectTimeout: 5}\n", "connectionConfig.connectTimeout: expected a duration",
        "integer connectTimeout refused");
    REJ(RK_US, US_STATIC("") "connectionConfig: {maxRequestsPerConnection: -1}\n",
        "connectionConfig.maxRequestsPerConnection: must not be negative", "negative maxRequestsPerConnection refused");
    REJ(RK_US, US_STATIC("") "connectionConfig: {maxRequestsPerConnection: 4294967296}\n",
        "connectionConfig.maxRequestsPerConnection: must be between 0 and 4294967295", "maxRequestsPerConnection > uint32");
    REJ(RK_US, US_STATIC("") "connectionConfig: {tcpKeepalive: {keepaliveProbes: 128}}\n",
        "connectionConfig.tcpKeepalive.keepaliveProbes: must be at most 127", "keepaliveProbes past the kernel's limit");
    REJ(RK_US, US_STATIC("") "connectionConfig: {tcpKeepalive: {keepaliveTime: 0s}}\n",
        "connectionConfig.tcpKeepalive.keepaliveTime: must be greater than 0", "keepaliveTime 0 refused");
    REJ(RK_US, US_STATIC("") "connectionConfig: {tcpKeepalive: {keepaliveInterval: 32767.5s}}\n",
        "connectionConfig.tcpKeepalive.keepaliveInterval: must be at most 32767s", "keepaliveInterval rounds up past the limit");
    ACC(RK_US, US_STATIC("") "connectionConfig: {tcpKeepalive: {keepaliveInterval: 32767s, keepaliveTime: 1ms}}\n",
        "keepalive durations at the limits accepted");
    REJ(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {maxHeadersCount: 101}}\n",
        "connectionConfig.commonHttpProtocolOptions.maxHeadersCount: must be at most 100", "maxHeadersCount > 100 refused");
    REJ(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {maxHeadersCount: 0}}\n",
        "connectionConfig.commonHttpProtocolOptions.maxHeadersCount: must be at least 1",
        "maxHeadersCount 0 refused by name (Envoy: >= 1), not read as the default");
    REJ(RK_US, US_STATIC("") "connection_config: {common_http_protocol_options: {max_headers_count: '0'}}\n",
        "maxHeadersCount: must be at least 1", "maxHeadersCount 0 refused in snake_case and quoted");
    u = dec(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {maxHeadersCount: 1}}\n");
    CHECK(u && u->conn.http.max_headers == 1, "maxHeadersCount 1 accepted (%s)", err);
    u = dec(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {maxHeadersCount: null}}\n");
    CHECK(u && u->conn.http.max_headers == 0, "maxHeadersCount null is absent: the default (%s)", err);
    REJ(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {maxStreamDuration: 1s}}\n",
        "connectionConfig.commonHttpProtocolOptions.maxStreamDuration is not supported yet", "maxStreamDuration refused by name");
    REJ(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {headersWithUnderscoresAction: DROP_HEADER}}\n",
        "headersWithUnderscoresAction: DROP_HEADER is not supported yet", "DROP_HEADER refused by name");
    REJ(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {headersWithUnderscoresAction: 1}}\n",
        "headersWithUnderscoresAction: REJECT_REQUEST is not supported yet", "REJECT_REQUEST as a number refused");
    REJ(RK_US, US_STATIC("") "connectionConfig: {perConnectionBufferLimitBytes: 1024}\n",
        "connectionConfig.perConnectionBufferLimitBytes is not supported yet", "perConnectionBufferLimitBytes refused by name");
    REJ(RK_US, US_STATIC("") "connectionConfig: {http1ProtocolOptions: {enableTrailers: true}}\n",
        "connectionConfig.http1ProtocolOptions is not supported yet", "http1ProtocolOptions refused by name");
    REJ(RK_US, US_STATIC("") "connectionConfig: {bogus: 1}\n", "connectionConfig.bogus: unknown field",
        "unknown connectionConfig field");
    REJ(RK_US, US_STATIC("") "connectionConfig: {commonHttpProtocolOptions: {idleTimeout: -5s}}\n",
        "commonHttpProtocolOptions.idleTimeout: invalid duration", "negative idleTimeout refused");

    /* circuitBreakers */
    u = dec(RK_US, US_STATIC("") "circuitBreakers: {maxConnections: 1, maxPendingRequests: 2, maxRequests: 3,"
                                 " maxRetries: 0}\n");
    CHECK(u && u->cb.h.set && u->cb.has_max_connections && u->cb.max_connections == 1 && u->cb.max_pending == 2 &&
              u->cb.max_requests == 3 && u->cb.has_max_retries && u->cb.max_retries == 0,
          "circuitBreakers decoded, maxRetries 0 kept as set (%s)", err);
    u = dec(RK_US, US_STATIC("") "circuit_breakers: {max_requests: 7}\n");
    CHECK(u && u->cb.has_max_requests && u->cb.max_requests == 7 && !u->cb.has_max_connections &&
              !u->cb.has_max_pending && !u->cb.has_max_retries,
          "circuitBreakers: snake_case, absent limits stay unset (%s)", err);
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRequests: -1}\n", "circuitBreakers.maxRequests: must not be negative",
        "negative maxRequests refused");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxConnections: 4294967296}\n",
        "circuitBreakers.maxConnections: must be between 0 and 4294967295", "maxConnections past uint32 refused");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRetries: 1.5}\n", "circuitBreakers.maxRetries: expected an integer",
        "fractional maxRetries refused");
    /* an integer past int64 is out of range, not "not an integer" */
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRequests: 99999999999999999999999}\n",
        "circuitBreakers.maxRequests: out of range: must be between 0 and 4294967295, got 99999999999999999999999",
        "huge maxRequests: out of range");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRequests: '99999999999999999999999'}\n",
        "circuitBreakers.maxRequests: out of range", "huge quoted maxRequests: out of range");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRetries: -99999999999999999999999}\n",
        "circuitBreakers.maxRetries: must not be negative", "hugely negative maxRetries: negative");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRequests: 4611686018427387905}\n",
        "circuitBreakers.maxRequests: out of range", "just past 2^62: out of range");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRequests: '99999999999999999999x'}\n",
        "circuitBreakers.maxRequests: expected an integer, got string", "long digits then a letter: not an integer");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {maxRequests: 1" "0000000000000000000000000000000000000000000000000000000}\n",
        "got 1000000000000000000000000000000000000000...", "a very long integer is quoted shortened");
    REJ(RK_US, US_STATIC("") "circuitBreakers: {trackRemaining: true}\n", "circuitBreakers.trackRemaining: unknown field",
        "a field Gloo does not have is unknown");

    ug_t *g = dec(RK_UG, "apiVersion: gloo.solo.io/v1\nkind: UpstreamGroup\nmetadata: {name: x}\nspec:\n  destinations:\n"
                         "  - {destination: {upstream: {name: a}}, weight: 9}\n  - {destination: {upstream: {name: b}}, "
                         "weight: 1}\n");
    CHECK(g && g->dests.n == 2, "upstream group: Kubernetes form (%s)", err);
    REJ(RK_UG, "metadata: {name: x}\ndestinations: []\n", "destinations: must list at least one destination",
        "empty upstream group refused");
    rt_t *t = dec(RK_RT, "metadata: {name: x, labels: {team: a}}\nweight: -3\nroutes:\n- " ACT "\n");
    CHECK(t && t->weight == -3 && t->routes.n == 1 && t->meta.labels.n == 1, "route table: weight, routes, labels");
}

static void test_durations(void)
{
    static const struct { const char *s; int64_t ms; } ok[] = {
        { "5s", 5000 }, { "1.5s", 1500 }, { "100ms", 100 }, { "1m", 60000 }, { "1h", 3600000 },
        { "1m30s", 90000 }, { "0s", 0 }, { "0", 0 }, { "500us", 1 }, { "1.0001s", 1001 }, { "0.5ms", 1 },
        { "2h1m", 7260000 }, { "1000ns", 1 }, { ".5s", 500 },
    };
    for (size_t i = 0; i < RV_ARRAY_LEN(ok); i++) {
        int64_t ms = -1;
        int rc = cfg_parse_duration(ok[i].s, strlen(ok[i].s), &ms);
        CHECK(rc == 0 && ms == ok[i].ms, "duration '%s' = %lld ms (got %lld)", ok[i].s, (long long)ok[i].ms,
              (long long)ms);
    }
    static const char *const bad[] = { "", "s", "5", "5x", "-1s", "1 s", "1s ", "99999999999999999999s",
                                       "3000000h", "1.2.3s", "ms" };
    for (size_t i = 0; i < RV_ARRAY_LEN(bad); i++) {
        int64_t ms;
        CHECK(cfg_parse_duration(bad[i], strlen(bad[i]), &ms) < 0, "duration '%s' refused", bad[i]);
    }
    CHECK(cfg_name_matches("retriable_status_codes", 22, "retriableStatusCodes"), "snake_case spelling matches");
    CHECK(cfg_name_matches("retriableStatusCodes", 20, "retriableStatusCodes"), "camelCase spelling matches");
    CHECK(!cfg_name_matches("retriable_statuscodes", 21, "retriableStatusCodes"), "half snake_case does not match");
    CHECK(!cfg_name_matches("retriableStatusCode", 19, "retriableStatusCodes"), "prefix does not match");
    CHECK(cfg_name_matches("aws_ec2", 7, "awsEc2"), "aws_ec2 matches awsEc2");
}

/* ---- Settings ---------------------------------------------------------------------- */

static void test_settings(void)
{
    rv_settings_t s;
    char e[1024], want[600];

    tdir_new("config");
    CHECK(rv_settings_load(tdir, NULL, &s, e, sizeof(e)) == 0, "settings: none present");
    CHECK(!s.settings_file && !strcmp(s.config_dir, tdir) && !strcmp(s.discovery_ns, "gloo-system") &&
              s.refresh_ms == 60000 && s.nwatch_ns == 0,
          "settings: defaults without a Settings file");
    snprintf(want, sizeof(want), "%s/secrets", tdir);
    CHECK(!strcmp(s.secret_dir, want), "settings: secret dir defaults to DIR/secrets");
    rv_settings_free(&s);
    CHECK(rv_settings_load(tdir, "team-a", &s, e, sizeof(e)) == 0 && !strcmp(s.discovery_ns, "team-a"),
          "settings: without a file the namespace flag is the discovery namespace");
    rv_settings_free(&s);
    CHECK(rv_settings_load("/nonexistent/rivet", NULL, &s, e, sizeof(e)) == RV_ENOTFOUND && strstr(e, "cannot read"),
          "settings: missing directory is RV_ENOTFOUND");

    /* Gloo's shipped files-only example, verbatim */
    tdir_put("gloo-system/default.yaml", "gloo: {xdsBindAddr: 0.0.0.0:9977}\nmetadata: {name: default, namespace: gloo-system}\n"
                                    "devMode: true\ndiscoveryNamespace: gloo-system\ndirectoryArtifactSource: {directory: "
                                    "/data/artifact}\ndirectoryConfigSource:   {directory: /data/config}\n"
                                    "directorySecretSource:   {directory: /data/secret}\nrefreshRate: 5s\n"
                                    "watchNamespaces: [gloo-system]\ngateway: {persistProxySpec: true}\n");
    int rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == 0, "settings: Gloo's shipped example loads (%s)", e);
    if (rc == 0) {
        CHECK(s.settings_file && strstr(s.settings_file, "gloo-system/default.yaml"), "settings: file recorded");
        CHECK(!strcmp(s.config_dir, "/data/config") && !strcmp(s.secret_dir, "/data/secret/secrets"),
              "settings: absolute directories kept");
        CHECK(s.refresh_ms == 5000 && s.nwatch_ns == 1 && !strcmp(s.watch_ns[0], "gloo-system"),
              "settings: refreshRate and watchNamespaces");
        rv_settings_free(&s);
    }
    tdir_put("gloo-system/default.yaml", "metadata: {name: default}\ndirectoryConfigSource: {directory: config}\n"
                                    "discovery_namespace: edge\nrefresh_rate: 500ms\nwatchNamespaces: [apps]\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    snprintf(want, sizeof(want), "%s/config", tdir);
    CHECK(rc == 0 && !strcmp(s.config_dir, want), "settings: relative directory is relative to DIR (%s)", e);
    CHECK(rc == 0 && s.refresh_ms == 500 && !strcmp(s.discovery_ns, "edge"), "settings: snake_case, 500ms");
    CHECK(rc == 0 && s.nwatch_ns == 2 && !strcmp(s.watch_ns[1], "edge"),
          "settings: the discovery namespace is always watched");
    if (rc == 0)
        rv_settings_free(&s);

    tdir_put("gloo-system/default.yaml", "metadata: {name: default, namespace: gloo-system}\nconsulKvSource: {}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == 0 && s.consul_kv && !strcmp(s.consul_root_key, "gloo"),
          "settings: consulKvSource selects Consul KV, root key gloo (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "vaultSecretSource: {address: http://vault:8200}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == 0 && s.nsecret_srcs == 1 && s.secret_srcs[0].type == RV_SECRET_SRC_VAULT &&
              !strcmp(s.secret_srcs[0].vault.address, "http://vault:8200"),
          "settings: vaultSecretSource read (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "vaultSecretSource: {address: http://vault:8200, aws: {}}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "vaultSecretSource.aws is not supported yet"), "settings: vault aws refused");
    tdir_put("gloo-system/default.yaml", "kubernetesConfigSource: {}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "kubernetesConfigSource is not supported yet"), "settings: kubernetes refused");
    tdir_put("gloo-system/default.yaml", "gloo: {xdsBindAddr: x, invalidConfigPolicy: {}}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "gloo.invalidConfigPolicy is not supported yet"),
          "settings: other gloo options refused (%s)", e);
    tdir_put("gloo-system/default.yaml", "gloo: {xdsBindAddr: x, circuitBreakers: {maxRequests: 5, maxRetries: 0}}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == 0 && s.has_cb_max_requests && s.cb_max_requests == 5 && s.has_cb_max_retries && s.cb_max_retries == 0 &&
              !s.has_cb_max_connections && !s.has_cb_max_pending,
          "settings: gloo.circuitBreakers decoded, unset limits stay unset (%s)", e);
    rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "gloo: {circuitBreakers: {maxConnections: -2}}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "gloo.circuitBreakers.maxConnections: must not be negative"),
          "settings: a bad gloo.circuitBreakers value names its path (%s)", e);
    tdir_put("gloo-system/default.yaml", "refreshRate: soon\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "refreshRate: invalid duration") && strstr(e, "default.yaml:1:"),
          "settings: bad refreshRate names field, file and line (%s)", e);
    tdir_put("gloo-system/default.yaml", "refreshRate: 0s\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "refreshRate must be greater than 0"), "settings: refreshRate 0 refused");
    tdir_put("gloo-system/default.yaml", "bogus: 1\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "bogus: unknown field"), "settings: unknown field");
    tdir_put("gloo-system/default.yaml", "metadata: {name: other}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "metadata.name 'other'"), "settings: metadata.name must be default");
    tdir_put("gloo-system/default.yaml", "directoryConfigSource: {directory: a}\nconsulKvSource: {}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE, "settings: two config sources refused");
    tdir_put("gloo-system/default.yaml", "a: [\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == RV_EPARSE && strstr(e, "invalid YAML"), "settings: bad YAML (%s)", e);
    tdir_put("gloo-system/default.yaml", "apiVersion: gloo.solo.io/v1\nkind: Settings\nmetadata: {name: default}\nspec: "
                                    "{discoveryNamespace: k8s-form}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof(e));
    CHECK(rc == 0 && !strcmp(s.discovery_ns, "k8s-form"), "settings: Kubernetes form (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("other/default.yml", "discoveryNamespace: from-other\n");
    rc = rv_settings_load(tdir, "other", &s, e, sizeof(e));
    CHECK(rc == 0 && !strcmp(s.discovery_ns, "from-other") && !strcmp(s.settings_ns, "other"),
          "settings: --namespace picks DIR/<ns>/default.yml");
    if (rc == 0)
        rv_settings_free(&s);
    rv_settings_free(NULL);
    tdir_remove();
}

/* Audit findings: an absent spec is checked like a written one; config cannot inject bytes
 * into the upstream request line. */
static void test_audit_regressions(void)
{
    REJ(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: Gateway\nmetadata: {name: x}\n", "bindPort",
        "k8s Gateway without spec is checked (bindPort required)");
    REJ(RK_GATEWAY, "apiVersion: gateway.solo.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec:\n", "bindPort",
        "k8s Gateway with an empty spec is checked");
    REJ(RK_US, "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: x}\n", "upstream type",
        "k8s Upstream without spec needs a type");
    REJ(RK_UG, "apiVersion: gloo.solo.io/v1\nkind: UpstreamGroup\nmetadata: {name: x}\n", "destinations",
        "k8s UpstreamGroup without spec needs destinations");
    REJ(RK_VS, VS_ROUTE("{matchers: [{prefix: /a}], " ACT ", options: {regexRewrite: {pattern: {regex: '^/a.*$'}, "
                        "substitution: \"/x HTTP/1.1\\r\\nX-Injected: 1\"}}}"),
        "substitution", "CR/LF in regexRewrite.substitution rejected");
    REJ(RK_VS, VS_ROUTE("{matchers: [{prefix: /a}], " ACT ", options: {regexRewrite: {pattern: {regex: '^/a.*$'}, "
                        "substitution: '/x y'}}}"),
        "substitution", "space in regexRewrite.substitution rejected");
    ACC(RK_VS, VS_ROUTE("{matchers: [{prefix: /a}], " ACT ", options: {regexRewrite: {pattern: {regex: '^/a(.*)$'}, "
                        "substitution: '/b\\1'}}}"),
        "group reference in substitution accepted");
    REJ(RK_VS, VS_ROUTE("{matchers: [{prefix: /a}], " ACT ", options: {prefixRewrite: '/a b#?'}}"), "prefixRewrite",
        "space/#/? in prefixRewrite rejected");
    ACC(RK_VS, VS_ROUTE("{matchers: [{prefix: /a}], " ACT ", options: {prefixRewrite: '/b/%20c'}}"),
        "percent-encoded prefixRewrite accepted");
}

int main(void)
{
    rv_arena_init(&arena, 0);
    test_audit_regressions();
    test_yaml();
    test_fuzzish();
    test_fields();
    test_vs_fields();
    test_matchers();
    test_actions();
    test_options();
    test_upstreams();
    test_durations();
    test_settings();
    rv_arena_free(&arena);
    TEST_DONE();
}
