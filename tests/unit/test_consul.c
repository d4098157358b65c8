/*
 * test_consul.c - the Consul client's rules (next index, backoff bounds, CONSUL_* environment),
 * the KV listing parser (base64, null values), the KV key <-> resource mapping, store loading
 * from a listing (metadata mismatch, last good kept, removal), kind names and recognition,
 * and the Settings' Consul fields.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "control/consul.h"
#include "control/kvsource.h"
#include "core/err.h"
#include "tdir.h"
#include "test.h"

static void test_next_index(void)
{
    CHECK_INT(rv_consul_next_index(0, 42), 42, "first read: use the returned index");
    CHECK_INT(rv_consul_next_index(42, 42), 42, "same index: block on it again");
    CHECK_INT(rv_consul_next_index(42, 50), 50, "forward");
    CHECK_INT(rv_consul_next_index(42, 7), 0, "backwards: reset to 0");
    CHECK_INT(rv_consul_next_index(0, 0), 1, "0 never sent as a blocking index: 1");
    CHECK_INT(rv_consul_next_index(1, 0), 0, "0 after 1 went backwards: reset");
    CHECK_INT(rv_consul_next_index(0, 1), 1, "1 stays 1");
}

static void test_backoff(void)
{
    uint64_t rng = 12345;
    CHECK_INT(rv_consul_backoff_ms(0, &rng), 0, "no failure, no delay");
    bool ok = true, some_nonzero = false;
    for (unsigned f = 1; f < 40; f++) {
        int64_t cap = f >= 20 ? 60000 : (250LL << (f - 1)) > 60000 ? 60000 : (250LL << (f - 1));
        for (int i = 0; i < 200; i++) {
            int64_t d = rv_consul_backoff_ms(f, &rng);
            if (d < 0 || d > cap)
                ok = false;
            some_nonzero |= d > 0;
        }
    }
    CHECK(ok, "backoff within [0, min(250 ms * 2^(n-1), 60 s)] (full jitter)");
    CHECK(some_nonzero, "backoff jitters");
    int64_t big = 0;
    for (int i = 0; i < 200; i++) {
        int64_t d = rv_consul_backoff_ms(1000, &rng);
        if (d > big)
            big = d;
    }
    CHECK(big <= 60000 && big > 30000, "many failures: capped at 60 s (max seen %lld)", (long long)big);
    uint64_t zero = 0;
    rv_consul_backoff_ms(3, &zero);
    CHECK(zero != 0, "a zero PRNG state is seeded");
}

static void clear_env(void)
{
    const char *v[] = { "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT",
                        "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME",
                        "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_HTTP_AUTH" };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        unsetenv(v[i]);
}

static void test_env(void)
{
    char err[256];
    rv_consul_cfg_t c = { 0 };
    clear_env();
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == 0 && !strcmp(c.address, "127.0.0.1:8500") &&
              !strcmp(c.scheme, "http") && !c.token && !c.insecure_skip_verify,
          "defaults: 127.0.0.1:8500, http");
    rv_consul_cfg_free(&c);

    setenv("CONSUL_HTTP_ADDR", "https://consul.example:8501", 1);
    setenv("CONSUL_HTTP_TOKEN", "tok", 1);
    setenv("CONSUL_CACERT", "/ca.pem", 1);
    setenv("CONSUL_CLIENT_CERT", "/c.pem", 1);
    setenv("CONSUL_CLIENT_KEY", "/k.pem", 1);
    setenv("CONSUL_TLS_SERVER_NAME", "server.dc1.consul:8501", 1);
    setenv("CONSUL_HTTP_SSL_VERIFY", "false", 1);
    setenv("CONSUL_HTTP_AUTH", "u:p", 1);
    memset(&c, 0, sizeof c);
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == 0, "env read");
    CHECK(!strcmp(c.scheme, "https"), "https:// address forces https");
    CHECK(!strcmp(c.token, "tok") && !strcmp(c.ca_file, "/ca.pem") && !strcmp(c.cert_file, "/c.pem") &&
              !strcmp(c.key_file, "/k.pem") && !strcmp(c.basic_auth, "u:p"),
          "token, CA, client cert/key, basic auth from the environment");
    CHECK(!strcmp(c.tls_server_name, "server.dc1.consul"), "CONSUL_TLS_SERVER_NAME without its port");
    CHECK(c.insecure_skip_verify, "CONSUL_HTTP_SSL_VERIFY=false skips verification");
    rv_consul_cfg_free(&c);

    /* explicit settings win over the environment, except the token file (as Go's NewClient) */
    memset(&c, 0, sizeof c);
    c.address = strdup("10.0.0.1:8500");
    c.token = strdup("from-settings");
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == 0 && !strcmp(c.address, "10.0.0.1:8500") &&
              !strcmp(c.token, "from-settings"),
          "configured address and token are kept");
    rv_consul_cfg_free(&c);
    char tf[] = "/tmp/rivet-token-XXXXXX";
    int fd = mkstemp(tf);
    CHECK(fd >= 0 && write(fd, "  file-token\n", 13) == 13, "token file written");
    close(fd);
    setenv("CONSUL_HTTP_TOKEN_FILE", tf, 1);
    memset(&c, 0, sizeof c);
    c.token = strdup("from-settings");
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == 0 && !strcmp(c.token, "file-token"),
          "CONSUL_HTTP_TOKEN_FILE wins, trimmed");
    rv_consul_cfg_free(&c);
    unlink(tf);
    memset(&c, 0, sizeof c);
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == RV_EINVAL && strstr(err, "CONSUL_HTTP_TOKEN_FILE"),
          "unreadable token file is an error naming it (%s)", err);
    rv_consul_cfg_free(&c);
    clear_env();
    setenv("CONSUL_HTTP_SSL", "true", 1);
    memset(&c, 0, sizeof c);
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == 0 && !strcmp(c.scheme, "https"), "CONSUL_HTTP_SSL=true");
    rv_consul_cfg_free(&c);
    setenv("CONSUL_HTTP_SSL", "maybe", 1);
    memset(&c, 0, sizeof c);
    CHECK(rv_consul_cfg_from_env(&c, err, sizeof err) == 0 && !strcmp(c.scheme, "http"),
          "unparsable CONSUL_HTTP_SSL ignored (as Go does)");
    rv_consul_cfg_free(&c);
    clear_env();
}

static void test_listing(void)
{
    unsigned char out[64];
    CHECK_INT(rv_base64_decode("dGVzdA==", 8, out), 4, "base64 length");
    CHECK(!memcmp(out, "test", 4), "base64 bytes");
    CHECK_INT(rv_base64_decode("dGVzdA=", 7, out), -1, "bad padding refused");
    CHECK_INT(rv_base64_decode("dG*zdA==", 8, out), -1, "bad character refused");
    rv_kv_listing_t *l;
    char err[256];
    const char *body = "[{\"LockIndex\":0,\"Key\":\"gloo/a\",\"Flags\":0,\"Value\":\"dGVzdA==\",\"CreateIndex\":5,"
                       "\"ModifyIndex\":7},{\"Key\":\"gloo/b\",\"Value\":null,\"ModifyIndex\":9}]";
    CHECK(rv_kv_parse_listing(body, strlen(body), &l, err, sizeof err) == 0 && l->n == 2, "listing parsed");
    CHECK(!strcmp(l->pairs[0].key, "gloo/a") && l->pairs[0].len == 4 && !memcmp(l->pairs[0].value, "test", 4) &&
              l->pairs[0].modify_index == 7,
          "entry: key, decoded value, ModifyIndex");
    CHECK(l->pairs[1].len == 0 && !l->pairs[1].value, "null value is empty");
    rv_kv_listing_free(l);
    CHECK(rv_kv_parse_listing("{}", 2, &l, err, sizeof err) == RV_EPARSE, "not an array refused");
    CHECK(rv_kv_parse_listing("[{\"Key\":\"k\",\"Value\":\"@@\"}]", 26, &l, err, sizeof err) == RV_EPARSE &&
              strstr(err, "base64"),
          "bad base64 refused (%s)", err);
}

static void test_keys(void)
{
    char k[256];
    CHECK(rv_kv_key(k, sizeof k, "gloo", RV_KIND_VS, "gloo-system", "default") == 0 &&
              !strcmp(k, "gloo/gateway.solo.io/v1/VirtualService/gloo-system/default"),
          "VirtualService key (%s)", k);
    CHECK(rv_kv_key(k, sizeof k, "gloo", RV_KIND_US, "ns", "name") == 0 &&
              !strcmp(k, "gloo/gloo.solo.io/v1/Upstream/ns/name"), "Upstream key (%s)", k);
    CHECK(rv_kv_key(k, sizeof k, "gloo", RV_KIND_UG, "ns", "g") == 0 &&
              !strcmp(k, "gloo/gloo.solo.io/v1/UpstreamGroup/ns/g"), "UpstreamGroup key");
    CHECK(rv_kv_key(k, sizeof k, "gloo", RV_KIND_GATEWAY, "ns", "g") == 0 &&
              !strcmp(k, "gloo/gateway.solo.io/v1/Gateway/ns/g"), "Gateway key");
    CHECK(rv_kv_key(k, sizeof k, "gloo", RV_KIND_RT, "ns", "r") == 0 &&
              !strcmp(k, "gloo/gateway.solo.io/v1/RouteTable/ns/r"), "RouteTable key");
    CHECK(rv_kv_key(k, 10, "gloo", RV_KIND_RT, "ns", "r") == RV_ETOOBIG, "small buffer");
    int kind;
    const char *ns, *name;
    size_t nl, ml;
    CHECK(rv_kv_parse_key("gloo", "gloo/gateway.solo.io/v1/RouteTable/team/r1", &kind, &ns, &nl, &name, &ml) == 0 &&
              kind == RV_KIND_RT && nl == 4 && !strncmp(ns, "team", 4) && !strcmp(name, "r1"),
          "key parsed into kind, namespace, name");
    CHECK(rv_kv_parse_key("a/b", "a/b/gloo.solo.io/v1/Upstream/n/u", &kind, &ns, &nl, &name, &ml) == 0 &&
              kind == RV_KIND_US, "nested root key");
    CHECK(rv_kv_parse_key("gloo", "gloo/gloo.solo.io/v1/Proxy/n/p", &kind, &ns, &nl, &name, &ml) == RV_EUNSUPPORTED,
          "Proxy: a Gloo kind rivet does not serve");
    CHECK(rv_kv_parse_key("gloo", "gloo/gateway.solo.io/v1/VirtualService/n", &kind, &ns, &nl, &name, &ml) ==
              RV_ENOTFOUND, "too short");
    CHECK(rv_kv_parse_key("gloo", "gloo/gateway.solo.io/v1/VirtualService/n/a/b", &kind, &ns, &nl, &name, &ml) ==
              RV_ENOTFOUND, "too long");
    CHECK(rv_kv_parse_key("gloo", "gloo/gateway.solo.io/v1/VirtualService//a", &kind, &ns, &nl, &name, &ml) ==
              RV_ENOTFOUND, "empty namespace");
    CHECK(rv_kv_parse_key("gloo", "glooX/gateway.solo.io/v1/VirtualService/n/a", &kind, &ns, &nl, &name, &ml) ==
              RV_ENOTFOUND, "other root");
    CHECK(rv_kv_parse_key("gloo", "gloo/gateway.solo.io/v2/VirtualService/n/a", &kind, &ns, &nl, &name, &ml) ==
              RV_ENOTFOUND, "other version");
}

static void test_kinds(void)
{
    const char *vs[] = { "VirtualService", "virtualservice", "virtualservices", "vs", "VS" };
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(rv_kind_parse(vs[i]), RV_KIND_VS, "kind name %s", vs[i]);
    CHECK_INT(rv_kind_parse("gw"), RV_KIND_GATEWAY, "gw");
    CHECK_INT(rv_kind_parse("gateways"), RV_KIND_GATEWAY, "gateways");
    CHECK_INT(rv_kind_parse("us"), RV_KIND_US, "us");
    CHECK_INT(rv_kind_parse("upstream"), RV_KIND_US, "upstream");
    CHECK_INT(rv_kind_parse("ug"), RV_KIND_UG, "ug");
    CHECK_INT(rv_kind_parse("UpstreamGroups"), RV_KIND_UG, "UpstreamGroups");
    CHECK_INT(rv_kind_parse("rt"), RV_KIND_RT, "rt");
    CHECK_INT(rv_kind_parse("routetable"), RV_KIND_RT, "routetable");
    CHECK_INT(rv_kind_parse("proxy"), -1, "unknown kind");
    char err[512];
#define DET(doc, want, what) CHECK_INT(rv_kind_detect(doc, strlen(doc), err, sizeof err), want, what)
    DET("metadata: {name: a}\nvirtualHost: {domains: ['*']}\n", RV_KIND_VS, "virtualHost -> VirtualService");
    DET("bindPort: 8080\n", RV_KIND_GATEWAY, "bindPort -> Gateway");
    DET("httpGateway: {}\n", RV_KIND_GATEWAY, "httpGateway -> Gateway");
    DET("routes: []\n", RV_KIND_RT, "routes -> RouteTable");
    DET("destinations: []\n", RV_KIND_UG, "destinations -> UpstreamGroup");
    DET("static: {hosts: []}\n", RV_KIND_US, "static -> Upstream");
    DET("awsEc2: {}\n", RV_KIND_US, "awsEc2 -> Upstream");
    DET("consul: {serviceName: s}\n", RV_KIND_US, "consul -> Upstream");
    DET("apiVersion: gloo.solo.io/v1\nkind: UpstreamGroup\n", RV_KIND_UG, "Kubernetes form: kind");
    DET("apiVersion: gloo.solo.io/v1\nkind: Proxy\n", -1, "Kubernetes form: a kind rivet does not serve");
    DET("metadata: {name: a}\n", -1, "nothing telling");
    CHECK(strstr(err, "--kind") != NULL, "the message points at --kind");
    DET("a: [\n", -1, "bad YAML");
#undef DET
    char *ns, *name;
    bool kube;
    const char *d = "apiVersion: gateway.solo.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec: {virtualHost: "
                    "{domains: ['*']}}\n";
    CHECK(rv_resource_check(RV_KIND_VS, "x", d, strlen(d), "team", &ns, &name, &kube, err, sizeof err) == 0 &&
              !strcmp(ns, "team") && !strcmp(name, "v") && kube,
          "check: Kubernetes form, namespace defaulted");
    size_t jl;
    char *j = rv_resource_stored_json(RV_KIND_VS, d, strlen(d), ns, name, &jl);
    CHECK(j && !strcmp(j, "{\"metadata\":{\"name\":\"v\",\"namespace\":\"team\"},\"virtualHost\":{\"domains\":"
                          "[\"*\"]}}\n"),
          "stored form JSON (%s)", j ? j : "NULL");
    free(j);
    free(ns);
    free(name);
    const char *num = "metadata: {name: u}\nstatic: {hosts: [{addr: h, port: 80}], useTls: false}\n";
    j = rv_resource_stored_json(RV_KIND_US, num, strlen(num), "n", "u", &jl);
    CHECK(j && strstr(j, "\"port\":80") && strstr(j, "\"useTls\":false"), "numbers and booleans stay (%s)", j);
    free(j);
    const char *bad = "metadata: {name: v}\nvirtualHost: {domains: ['*'], nope: 1}\n";
    CHECK(rv_resource_check(RV_KIND_VS, "in.yaml", bad, strlen(bad), NULL, &ns, &name, &kube, err, sizeof err) ==
              RV_EPARSE && strstr(err, "in.yaml") && strstr(err, "nope"),
          "check: strict decoder's message (%s)", err);
}

static const char *VS_A = "metadata: {name: a, namespace: ns}\nvirtualHost: {domains: ['*']}\n";

static void test_store_kv(void)
{
    rv_settings_t s = { 0 };
    rv_store_t *st = rv_store_new();
    rv_snapshot_t *snap = NULL;
    rv_kv_pair_t kv[3] = {
        { "gloo/gateway.solo.io/v1/VirtualService/ns/a", VS_A, strlen(VS_A), 5 },
        { "gloo/gloo.solo.io/v1/Proxy/ns/p", "x", 1, 6 },
        { "gloo/other/thing", "y", 1, 7 },
    };
    CHECK_INT(rv_store_load_kv(st, &s, "gloo", kv, 3), 1, "first listing changes the store");
    CHECK_INT(rv_store_load_kv(st, &s, "gloo", kv, 3), 0, "same listing: no change");
    CHECK(rv_snapshot_build(st, &s, &snap) == 0 && snap->nstatuses == 1 && snap->statuses[0].state != RV_STATE_REJECTED,
          "one resource, not rejected (other kinds and shapes skipped)");
    CHECK(snap && rv_str_eq(snap->statuses[0].file, rv_cstr(kv[0].key)), "status source is the key");
    rv_snapshot_release(snap);
    /* metadata disagreeing with the key: rejected, the last accepted version kept */
    const char *moved = "metadata: {name: b, namespace: ns}\nvirtualHost: {domains: ['*']}\n";
    kv[0].value = moved;
    kv[0].len = strlen(moved);
    CHECK_INT(rv_store_load_kv(st, &s, "gloo", kv, 1), 1, "changed value");
    CHECK(rv_snapshot_build(st, &s, &snap) == 0 && snap->statuses[0].state == RV_STATE_REJECTED &&
              memmem(snap->statuses[0].reason.ptr, snap->statuses[0].reason.len, "does not match the key", 22),
          "key/metadata mismatch rejected, saying so");
    rv_snapshot_release(snap);
    /* a namespace-less value takes the key's */
    const char *nons = "metadata: {name: a}\nvirtualHost: {domains: ['*']}\n";
    kv[0].value = nons;
    kv[0].len = strlen(nons);
    rv_store_load_kv(st, &s, "gloo", kv, 1);
    CHECK(rv_snapshot_build(st, &s, &snap) == 0 && snap->statuses[0].state != RV_STATE_REJECTED &&
              rv_str_eq(snap->statuses[0].ns, rv_cstr("ns")),
          "missing metadata.namespace taken from the key");
    rv_snapshot_release(snap);
    CHECK_INT(rv_store_load_kv(st, &s, "gloo", kv, 0), 1, "empty listing removes the resource");
    CHECK(rv_snapshot_build(st, &s, &snap) == 0 && snap->nstatuses == 0, "store empty");
    rv_snapshot_release(snap);
    rv_store_free(st);
}

static void test_settings(void)
{
    tdir_new("consul");
    rv_settings_t s;
    char e[1024];
    tdir_put("gloo-system/default.yaml",
        "consulKvSource: {rootKey: /edge/}\nrefreshRate: 2s\n"
        "consul: {httpAddress: 'https://c:8501', address: old:1, datacenter: dc2, token: t, username: u, password: p,"
        " caFile: /ca, certFile: /c, keyFile: /k, insecureSkipVerify: true, waitTime: 30s,"
        " serviceDiscovery: {dataCenters: [dc1, dc2]}, dnsAddress: '127.0.0.1:53', dnsPollingInterval: 1s}\n"
        "consulDiscovery: {consistencyMode: StaleMode, serviceTagsAllowlist: [web], useTlsTagging: false}\n");
    int rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == 0, "full Consul Settings load (%s)", e);
    if (rc == 0) {
        CHECK(s.consul_kv && !strcmp(s.consul_root_key, "edge"), "consulKvSource.rootKey, slashes trimmed");
        CHECK(!strcmp(s.consul_address, "https://c:8501"), "httpAddress wins over the deprecated address");
        CHECK(!strcmp(s.consul_datacenter, "dc2") && !strcmp(s.consul_token, "t") &&
                  !strcmp(s.consul_basic_auth, "u:p") && !strcmp(s.consul_ca_file, "/ca") &&
                  !strcmp(s.consul_cert_file, "/c") && !strcmp(s.consul_key_file, "/k") &&
                  s.consul_insecure_skip_verify && s.consul_wait_ms == 30000,
              "client fields");
        CHECK(s.consul_discovery && s.nconsul_dcs == 2 && !strcmp(s.consul_dcs[1], "dc2"), "serviceDiscovery");
        CHECK(!strcmp(s.consul_dns_address, "127.0.0.1:53") && s.consul_dns_poll_ms == 1000, "dns fields");
        CHECK(s.consul_consistency == RV_CONSUL_STALE && s.nconsul_tags_allow == 1, "consulDiscovery fields");
        CHECK(!s.consul_disc_catalog_only, "health checks honoured by default");
        rv_settings_free(&s);
    }
    tdir_put("gloo-system/default.yaml", "consul: {serviceDiscovery: {}}\nconsulDiscovery: {rivetHealthChecks: false}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == 0 && s.consul_discovery && s.consul_disc_catalog_only,
          "consulDiscovery.rivetHealthChecks: false selects catalog-only discovery (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "consulDiscovery: {rivetHealthChecks: true}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == 0 && !s.consul_disc_catalog_only, "rivetHealthChecks: true is the default (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "consul: {}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == 0 && !s.consul_kv && !s.consul_discovery && !strcmp(s.consul_dns_address, "127.0.0.1:8600") &&
              s.consul_dns_poll_ms == 5000,
          "defaults: no KV, no discovery, DNS 127.0.0.1:8600 every 5 s");
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "consulDiscovery: {useTlsTagging: true}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == RV_EPARSE && strstr(e, "useTlsTagging: true is not supported yet"), "TLS tagging refused (%s)", e);
    tdir_put("gloo-system/default.yaml", "consulDiscovery: {splitTlsServices: true}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == RV_EPARSE && strstr(e, "consulDiscovery.splitTlsServices is not supported yet"),
          "other consulDiscovery fields refused by name (%s)", e);
    tdir_put("gloo-system/default.yaml", "consul: {serviceDiscovery: {dataCenter: [x]}}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == RV_EPARSE && strstr(e, "consul.serviceDiscovery.dataCenter: unknown field"), "typo named (%s)", e);
    tdir_put("gloo-system/default.yaml", "consulDiscovery: {consistencyMode: Sometimes}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == RV_EPARSE && strstr(e, "consistencyMode"), "bad consistencyMode (%s)", e);
    tdir_put("gloo-system/default.yaml",
        "apiVersion: gloo.solo.io/v1\nkind: Settings\nmetadata: {name: default, namespace: gloo-system}\n"
        "spec: {consulKvSource: {}, consul: {address: 'a:1'}}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == 0 && s.consul_kv && !strcmp(s.consul_root_key, "gloo") && !strcmp(s.consul_address, "a:1"),
          "Kubernetes form with Consul fields (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_put("gloo-system/default.yaml", "consul: {password: p}\n");
    rc = rv_settings_load(tdir, NULL, &s, e, sizeof e);
    CHECK(rc == RV_EPARSE && strstr(e, "needs consul.username"), "password without username (%s)", e);
    /* rivet run --consul: the override */
    rv_settings_consul_override("127.0.0.1:9", "root", true);
    rc = rv_settings_load(NULL, NULL, &s, e, sizeof e);
    CHECK(rc == 0 && s.consul_kv && s.consul_kv_stale && !strcmp(s.consul_address, "127.0.0.1:9") &&
              !strcmp(s.consul_root_key, "root") && !s.config_dir,
          "override without a directory (%s)", e);
    if (rc == 0)
        rv_settings_free(&s);
    tdir_remove();
}

static void test_tls_target(void)
{
    char *u, *c;
    int rc = rv_consul_tls_target("https://127.0.0.1:8501", "consul.example", &u, &c);
    CHECK(rc == 0 && u && c && !strcmp(u, "https://consul.example:8501") &&
              !strcmp(c, "consul.example:8501:127.0.0.1:8501"),
          "server name in the URL, connection to the address (%s, %s)", u ? u : "-", c ? c : "-");
    free(u);
    free(c);
    rc = rv_consul_tls_target("https://[::1]:8501/pfx", "c.local", &u, &c);
    CHECK(rc == 0 && u && c && !strcmp(u, "https://c.local:8501/pfx") && !strcmp(c, "c.local:8501:[::1]:8501"),
          "IPv6 address and path prefix (%s, %s)", u ? u : "-", c ? c : "-");
    free(u);
    free(c);
    rc = rv_consul_tls_target("https://consul", "c.local", &u, &c);
    CHECK(rc == 0 && u && !strcmp(u, "https://c.local:443") && !strcmp(c, "c.local:443:consul:443"),
          "no port: 443");
    free(u);
    free(c);
    rc = rv_consul_tls_target("http://127.0.0.1:8500", "c.local", &u, &c);
    CHECK(rc == 0 && !u && !c, "plain http: nothing to do");
    rc = rv_consul_tls_target("https://127.0.0.1:8501", NULL, &u, &c);
    CHECK(rc == 0 && !u && !c, "no server name: nothing to do");
    rc = rv_consul_tls_target("https://:8501", "c", &u, &c);
    CHECK(rc == RV_EINVAL && !u && !c, "no host refused");
}

int main(void)
{
    test_tls_target();
    test_next_index();
    test_backoff();
    test_env();
    test_listing();
    test_keys();
    test_kinds();
    test_store_kv();
    test_settings();
    TEST_DONE();
}
