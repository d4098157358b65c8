/*
 * test_secret.c - Gloo Secrets: both stored forms (Gloo and Kubernetes, YAML and JSON), the
 * strict refusals (unknown fields, unsupported kinds, bad base64, unusable names), that no
 * message ever carries key material, the secret table (content comparison, precedence,
 * generations) and the directory source (layout, stat-only rescans, bad files).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config-internal.h"
#include "config/secret.h"
#include "core/err.h"
#include "tdir.h"
#include "test.h"

#define MARK "SUPERSECRETKEYBYTES"

static char err[CFG_ERRLEN];

static rv_secret_t *dec(const char *doc)
{
    rv_secret_t *s = NULL;
    err[0] = '\0';
    int rc = rv_secret_decode("t.yaml", doc, strlen(doc), "gloo-system", NULL, &s, err, sizeof(err));
    if (rc != 0)
        return NULL;
    return s;
}

/* Rejected, the message holds want, and never the key marker. */
static void rej(const char *doc, const char *want, const char *what)
{
    rv_secret_t *s = dec(doc);
    CHECK(!s && strstr(err, want) != NULL, "refused: %s", what);
    if (s || !strstr(err, want))
        printf("#   err: %s\n", err);
    CHECK(!strstr(err, MARK), "refusal of %s does not show key material", what);
    rv_secret_free(s);
}

/* A key pasted where a field name belongs (a PEM body line as a map key) is never echoed;
 * a misspelt field name still is. */
static void test_key_as_field_name(void)
{
    const char *line = "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSk";
    char doc[512];
    snprintf(doc, sizeof(doc),
             "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ntype: kubernetes.io/tls\n"
             "data:\n  %s: eA==\n", line);
    rej(doc, "is not a key rivet reads", "a PEM line as a data key");
    CHECK(!strstr(err, line), "the PEM line is not in the message (%s)", err);
    snprintf(doc, sizeof(doc), "metadata: {name: k}\ntls:\n  certChain: a\n  privateKey: b\n  %s: c\n", line);
    rej(doc, "unknown field", "a PEM line as a stored-form field");
    CHECK(!strstr(err, line), "the PEM line is not in the stored-form message (%s)", err);
    snprintf(doc, sizeof(doc), "metadata: {name: k}\n%s: c\n", "MIIEvg+IBAD/ANBg");
    rej(doc, "unknown field", "a short base64 key at the top");
    CHECK(!strstr(err, "MIIEvg"), "a short base64 key is not echoed (%s)", err);
    rej("metadata: {name: k}\ntls:\n  certChian: a\n  privateKey: b\n", "certChian", "a misspelt field is named");
}

static void test_gloo_form(void)
{
    rv_secret_t *s = dec("metadata: {name: tls1, namespace: web}\n"
                         "tls:\n  certChain: |\n    -----BEGIN CERTIFICATE-----\n    abc\n    -----END CERTIFICATE-----\n"
                         "  privateKey: \"-----BEGIN PRIVATE KEY-----\\n" MARK "\\n-----END PRIVATE KEY-----\\n\"\n"
                         "  rootCa: ca-pem\n");
    CHECK(s != NULL, "gloo tls form decodes (%s)", err);
    if (s) {
        CHECK_INT(s->kind, RV_SECRET_TLS, "kind tls");
        CHECK(!strcmp(s->ns, "web") && !strcmp(s->name, "tls1"), "metadata kept");
        CHECK(!strcmp(s->cert_chain, "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"),
              "certChain text");
        CHECK_INT(s->cert_chain_len, strlen(s->cert_chain), "certChain length");
        CHECK(strstr(s->private_key, MARK) != NULL && s->private_key_len == strlen(s->private_key), "privateKey");
        CHECK(!strcmp(s->root_ca, "ca-pem") && s->root_ca_len == 6, "rootCa");
        CHECK(!s->ocsp_staple && !s->ocsp_staple_len, "no staple");
        CHECK(!strcmp(s->source, "t.yaml"), "source names the document");
    }
    rv_secret_free(s);

    /* snake_case spelling, namespace from the default, staple base64 (std and url-safe) */
    s = dec("metadata: {name: a}\ntls: {cert_chain: c, private_key: k, ocsp_staple: \"AAEC/w==\"}\n");
    CHECK(s && !strcmp(s->ns, "gloo-system"), "namespace defaults (%s)", err);
    CHECK(s && s->ocsp_staple_len == 4 && !memcmp(s->ocsp_staple, "\x00\x01\x02\xff", 4), "ocspStaple decoded");
    rv_secret_free(s);
    s = dec("metadata: {name: a}\ntls: {certChain: c, privateKey: k, ocspStaple: \"AAEC_w\"}\n");
    CHECK(s && s->ocsp_staple_len == 4 && s->ocsp_staple[3] == 0xff, "url-safe unpadded staple (%s)", err);
    rv_secret_free(s);

    /* rootCa alone: an upstream's CA bundle */
    s = dec("metadata: {name: ca}\ntls: {rootCa: only-ca}\n");
    CHECK(s && !s->cert_chain && !s->private_key && s->root_ca, "rootCa-only tls secret (%s)", err);
    rv_secret_free(s);

    /* JSON, as Vault and Consul hold it */
    s = dec("{\"metadata\":{\"name\":\"j\",\"namespace\":\"n\"},\"aws\":{\"accessKey\":\"AKIA1\",\"secretKey\":\"" MARK
            "\",\"sessionToken\":\"tok\"}}");
    CHECK(s && s->kind == RV_SECRET_AWS, "json aws form (%s)", err);
    CHECK(s && !strcmp(s->access_key, "AKIA1") && !strcmp(s->secret_key, MARK) && !strcmp(s->session_token, "tok"),
          "aws fields");
    rv_secret_free(s);
    s = dec("metadata: {name: a}\naws: {accessKey: a, secretKey: b}\n");
    CHECK(s && !s->session_token, "sessionToken optional");
    rv_secret_free(s);

    /* name from the caller when metadata has none (Vault names by path) */
    rv_secret_t *o = NULL;
    int rc = rv_secret_decode("v", "tls: {rootCa: x}\n", 16, "ns1", "from-path", &o, err, sizeof(err));
    CHECK(rc == 0 && o && !strcmp(o->name, "from-path") && !strcmp(o->ns, "ns1"), "name_default fills the name");
    rv_secret_free(o);
}

static void test_kube_form(void)
{
    /* base64 of "CERT\n", MARK "\n", "CA" */
    rv_secret_t *s = dec("apiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: ns}\n"
                         "type: kubernetes.io/tls\ndata:\n  tls.crt: Q0VSVAo=\n"
                         "  tls.key: U1VQRVJTRUNSRVRLRVlCWVRFUwo=\n  ca.crt: Q0E=\n");
    CHECK(s && s->kind == RV_SECRET_TLS, "kubernetes tls decodes (%s)", err);
    CHECK(s && !strcmp(s->cert_chain, "CERT\n") && s->cert_chain_len == 5, "tls.crt base64-decoded");
    CHECK(s && !strcmp(s->private_key, MARK "\n"), "tls.key base64-decoded");
    CHECK(s && !strcmp(s->root_ca, "CA"), "ca.crt");
    rv_secret_free(s);

    s = dec("apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ntype: kubernetes.io/tls\n"
            "data: {tls.crt: Q0VSVAo=, tls.key: a2V5}\nstringData: {tls.key: plain-key}\nimmutable: true\n");
    CHECK(s && !strcmp(s->private_key, "plain-key"), "stringData wins over data (%s)", err);
    rv_secret_free(s);

    s = dec("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"aw\"},\"type\":\"Opaque\","
            "\"data\":{\"aws_access_key_id\":\"QUtJQQ==\",\"aws_secret_access_key\":\"c2s=\"}}");
    CHECK(s && s->kind == RV_SECRET_AWS && !strcmp(s->access_key, "AKIA") && !strcmp(s->secret_key, "sk"),
          "kubernetes aws (json) (%s)", err);
    rv_secret_free(s);
    s = dec("apiVersion: v1\nkind: Secret\nmetadata: {name: aw}\nstringData: {aws_access_key_id: a, "
            "aws_secret_access_key: b, aws_session_token: c}\n");
    CHECK(s && s->kind == RV_SECRET_AWS && !strcmp(s->session_token, "c"), "no type means Opaque (%s)", err);
    rv_secret_free(s);
    s = dec("apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ntype: kubernetes.io/tls\n"
            "data:\n  tls.crt: |\n    Q0VS\n    VAo=\n  tls.key: a2V5\n");
    CHECK(s && !strcmp(s->cert_chain, "CERT\n"), "base64 with line breaks (%s)", err);
    rv_secret_free(s);
}

static void test_refusals(void)
{
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: " MARK "}\nfoo: 1\n", "foo: unknown field",
        "unknown top-level field");
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: " MARK ", pin: x}\n", "tls.pin: unknown field",
        "unknown tls field");
    static const char *const kinds[] = { "oauth", "apiKey", "header", "encryption", "extensions", "azure",
                                         "credentials" };
    for (size_t i = 0; i < RV_ARRAY_LEN(kinds); i++) {
        char doc[200], want[64];
        snprintf(doc, sizeof(doc), "metadata: {name: a}\n%s: {x: " MARK "}\n", kinds[i]);
        snprintf(want, sizeof(want), "%s is not supported yet", kinds[i]);
        rej(doc, want, kinds[i]);
    }
    rej("metadata: {name: a}\napi_key: {x: 1}\n", "api_key is not supported yet", "snake_case unsupported kind");
    rej("metadata: {name: a}\ntls: {rootCa: x}\naws: {accessKey: a, secretKey: b}\n", "cannot both be set",
        "tls and aws together");
    rej("metadata: {name: a}\n", "needs tls or aws", "no kind at all");
    rej("metadata: {name: a}\ntls: {}\n", "a tls secret needs", "empty tls");
    rej("metadata: {name: a}\ntls: {certChain: c}\n", "tls.privateKey is required", "cert without key");
    rej("metadata: {name: a}\ntls: {privateKey: " MARK "}\n", "tls.certChain is required", "key without cert");
    rej("metadata: {name: a}\naws: {accessKey: a}\n", "needs aws.accessKey and aws.secretKey", "aws without key");
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: k, ocspStaple: \"" MARK "!!\"}\n",
        "tls.ocspStaple: is not valid base64", "bad staple");
    rej("metadata: {name: a}\ntls: {certChain: [" MARK "], privateKey: k}\n", "expected a string", "list value");
    rej("metadata: {name: a/b}\ntls: {rootCa: x}\n", "cannot name a file", "slash in name");
    rej("metadata: {name: ..}\ntls: {rootCa: x}\n", "cannot name a file", "dot-dot name");
    rej("metadata: {name: a, namespace: ../x}\ntls: {rootCa: x}\n", "cannot name a directory", "ns traversal");
    rej("metadata: {name: \"a b\"}\ntls: {rootCa: x}\n", "cannot name a file", "space in name");
    rej("tls: {rootCa: x}\n", "metadata.name is required", "no name");
    rej("apiVersion: v2\nkind: Secret\nmetadata: {name: a}\n", "expected v1", "k8s apiVersion");
    rej("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "kind: expected Secret", "k8s kind");
    rej("kind: Secret\nmetadata: {name: a}\n", "apiVersion: is required", "k8s without apiVersion");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/basic-auth\n"
        "data: {password: " MARK "}\n", "'kubernetes.io/basic-auth' is not supported", "basic-auth type");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0E=, "
        "tls.key: a2V5, extra: " MARK "}\n", "data.extra: is not a key rivet reads", "unknown data key");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0E=, "
        "tls.key: \"" MARK "*\"}\n", "data.tls.key: is not valid base64", "bad base64 in data");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0E=, "
        "tls.key: AAAA}\n", "holds bytes that are not text", "NUL in decoded PEM");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0E=, "
        "tls.key: ypez}\n", "data.tls.key: holds bytes that are not text", "binary (non-UTF-8) key (fuzz find)");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0E=, "
        "aws_access_key_id: QQ==}\n", "does not belong in a secret of type kubernetes.io/tls", "aws key in tls");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\nspec: {}\n",
        "spec: unknown field", "spec in a kubernetes secret");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: [" MARK "]\n",
        "expected a mapping of strings", "data as list");
    rej("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0E=}\n",
        "data.tls.key is required", "kube cert without key");
    /* malformed documents */
    rej("", "t.yaml", "empty document");
    rej("- a\n- b\n", "expected a mapping at the top level", "top-level list");
    rej("metadata: {name: a\ntls: {privateKey: " MARK "\n", "t.yaml", "broken flow mapping");
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: \"" MARK "\"}\ntls: {rootCa: x}\n", "duplicate key",
        "duplicate key");
    rej("a: &x [*x]\n", "t.yaml", "self alias");
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: *" MARK "}\n", "unknown alias", "alias name not echoed");
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: !<tag:" MARK "> x}\n", "unsupported YAML tag",
        "tag not echoed");
    char deep[400] = "";
    for (int i = 0; i < 60; i++)
        strcat(deep, "[");
    rej(deep, "t.yaml", "deep nesting");
    rej("metadata: {name: a}\ntls: {certChain: c, privateKey: \"\\0" MARK "\"}\n", "t.yaml", "NUL escape");

    /* every error has a message; a NULL src works */
    rv_secret_t *o = (rv_secret_t *)1;
    int rc = rv_secret_decode(NULL, "x: 1", 4, NULL, NULL, &o, err, sizeof(err));
    CHECK(rc == RV_EPARSE && o == NULL && err[0], "NULL src: refused with a message (%s)", err);
}

static void test_stored(void)
{
    rv_secret_t *s = dec("metadata: {name: rt, namespace: web}\ntls: {certChain: \"line1\\nline2 \\\"q\\\" \\\\ \\t"
                         "\\u0085\\u00e9\\n\", privateKey: \"" MARK "\", rootCa: ca, ocspStaple: \"AAEC/w==\"}\n");
    CHECK(s != NULL, "tricky tls secret decodes (%s)", err);
    for (int json = 0; s && json < 2; json++) {
        size_t n;
        char *st = rv_secret_stored(s, json, &n);
        CHECK(st && n == strlen(st), "%s stored form written", json ? "json" : "yaml");
        rv_secret_t *b = NULL;
        int rc = st ? rv_secret_decode("back", st, n, NULL, NULL, &b, err, sizeof(err)) : -1;
        CHECK(rc == 0 && b, "%s stored form decodes (%s)", json ? "json" : "yaml", err);
        if (b) {
            CHECK(!strcmp(b->ns, "web") && !strcmp(b->name, "rt"), "metadata kept");
            CHECK(b->cert_chain_len == s->cert_chain_len && !memcmp(b->cert_chain, s->cert_chain, b->cert_chain_len),
                  "certChain with quotes, backslash, tab, C1 control round-trips");
            CHECK(!strcmp(b->private_key, MARK) && !strcmp(b->root_ca, "ca"), "key and ca round-trip");
            CHECK(b->ocsp_staple_len == 4 && !memcmp(b->ocsp_staple, "\x00\x01\x02\xff", 4), "staple round-trips");
        }
        if (json && st)
            CHECK(st[0] == '{' && strstr(st, "\"tls\":{\"certChain\":"), "json shape");
        rv_secret_free(b);
        free(st);
    }
    rv_secret_free(s);
    s = dec("apiVersion: v1\nkind: Secret\nmetadata: {name: aw, namespace: n}\nstringData: {aws_access_key_id: a, "
            "aws_secret_access_key: b}\n");
    size_t n;
    char *st = s ? rv_secret_stored(s, false, &n) : NULL;
    CHECK(st && !strcmp(st, "metadata:\n  name: \"aw\"\n  namespace: \"n\"\naws:\n  accessKey: \"a\"\n  secretKey: "
                        "\"b\"\n"), "kubernetes aws written in Gloo's stored form");
    free(st);
    rv_secret_free(s);
}

static rv_secret_t *mk(const char *ns, const char *name, const char *key)
{
    char doc[300];
    snprintf(doc, sizeof(doc), "metadata: {name: %s, namespace: %s}\ntls: {certChain: cert, privateKey: %s}\n", name,
             ns, key);
    rv_secret_t *s = NULL;
    rv_secret_decode("mk", doc, strlen(doc), NULL, NULL, &s, err, sizeof(err));
    return s;
}

static rv_secret_bad_t mkbad(const char *ns, const char *name, const char *reason)
{
    return (rv_secret_bad_t){ strdup(ns), strdup(name), strdup(reason) };
}

static void test_table(void)
{
    rv_secrets_t *t = rv_secrets_new();
    const char *why = "x";
    CHECK(rv_secrets_get(t, "a", "b", &why) == NULL && why == NULL, "empty table: missing, no reason");
    CHECK_INT(rv_secrets_generation(t), 0, "generation starts at 0");

    rv_secret_t *l1[] = { mk("ns", "b", "k1"), mk("ns", "a", "k2") };
    CHECK_INT(rv_secrets_replace(t, 1, l1, 2, NULL, 0), 1, "first replace changes");
    CHECK_INT(rv_secrets_generation(t), 1, "generation bumped");
    const rv_secret_t *a = rv_secrets_get(t, "ns", "a", NULL), *b = rv_secrets_get(t, "ns", "b", NULL);
    CHECK(a && b && !strcmp(a->private_key, "k2") && !strcmp(b->private_key, "k1"), "lookup by ns/name");
    uint64_t va = a ? a->version : 0, vb = b ? b->version : 0;
    CHECK(va && vb && va != vb, "each content has a version");

    rv_secret_t *l2[] = { mk("ns", "a", "k2"), mk("ns", "b", "k1") };
    CHECK_INT(rv_secrets_replace(t, 1, l2, 2, NULL, 0), 0, "same content: no change");
    CHECK_INT(rv_secrets_generation(t), 1, "generation unchanged");
    CHECK(rv_secrets_get(t, "ns", "a", NULL) == a && a->version == va, "unchanged secret keeps pointer and version");

    rv_secret_t *l3[] = { mk("ns", "a", "k2"), mk("ns", "b", "rotated") };
    CHECK_INT(rv_secrets_replace(t, 1, l3, 2, NULL, 0), 1, "rotated key: change");
    const rv_secret_t *b2 = rv_secrets_get(t, "ns", "b", NULL);
    CHECK(b2 && !strcmp(b2->private_key, "rotated") && b2->version > vb, "new content, newer version");
    CHECK(rv_secrets_get(t, "ns", "a", NULL) == a, "the other secret untouched");

    /* precedence: source 0 wins over source 1 */
    rv_secret_t *l4[] = { mk("ns", "a", "from-src0") };
    CHECK_INT(rv_secrets_replace(t, 0, l4, 1, NULL, 0), 1, "second source added");
    const rv_secret_t *p = rv_secrets_get(t, "ns", "a", NULL);
    CHECK(p && !strcmp(p->private_key, "from-src0"), "lower source index wins");

    /* a failure at the winning source hides the other source's copy, with the reason */
    rv_secret_bad_t bd[] = { mkbad("ns", "b", "b.yaml: tls.privateKey is required") };
    CHECK_INT(rv_secrets_replace(t, 0, NULL, 0, bd, 1), 1, "bad entry: change");
    CHECK(rv_secrets_get(t, "ns", "b", &why) == NULL && why && strstr(why, "privateKey is required"),
          "failed secret: NULL with the reason");
    p = rv_secrets_get(t, "ns", "a", NULL);
    CHECK(p && !strcmp(p->private_key, "k2"), "source 0 lost a: source 1's copy serves");
    rv_secret_bad_t bd2[] = { mkbad("ns", "b", "b.yaml: tls.privateKey is required") };
    CHECK_INT(rv_secrets_replace(t, 0, NULL, 0, bd2, 1), 0, "same failure again: no change");
    rv_secret_bad_t bd3[] = { mkbad("ns", "b", "b.yaml: other reason") };
    CHECK_INT(rv_secrets_replace(t, 0, NULL, 0, bd3, 1), 1, "new reason: change");

    /* watchNamespaces: lookups elsewhere fail, saying why; the source keeps what it holds */
    char *wl[] = { "other" };
    uint64_t g0 = rv_secrets_generation(t);
    CHECK_INT(rv_secrets_watch(t, wl, 1), 1, "watch set");
    CHECK(rv_secrets_generation(t) > g0, "a new watch set bumps the generation");
    CHECK(!rv_secrets_get(t, "ns", "a", &why) && why && strstr(why, "not watched"), "unwatched namespace refused");
    CHECK(!rv_secrets_watched(t, "ns") && rv_secrets_watched(t, "other"), "watched()");
    CHECK_INT(rv_secrets_watch(t, wl, 1), 0, "same watch set: no change");
    CHECK_INT(rv_secrets_watch(t, NULL, 0), 1, "watch everything again");
    CHECK(rv_secrets_get(t, "ns", "a", NULL) != NULL, "visible again");

    /* listing */
    const rv_secret_t *const *lv;
    size_t n = rv_secrets_list(t, 1, &lv);
    CHECK(n == 2 && !strcmp(lv[0]->name, "a") && !strcmp(lv[1]->name, "b"), "list is sorted");
    const rv_secret_bad_t *bl;
    CHECK(rv_secrets_bad(t, 0, &bl) == 1 && !strcmp(bl[0].name, "b"), "bad list");
    CHECK(rv_secrets_list(t, 99, &lv) == 0 && !lv, "bad source lists nothing");

    /* duplicates in one list: the first stays */
    rv_secret_t *l5[] = { mk("ns", "d", "first"), mk("ns", "d", "second") };
    CHECK_INT(rv_secrets_replace(t, 2, l5, 2, NULL, 0), 1, "duplicates accepted");
    p = rv_secrets_get(t, "ns", "d", NULL);
    CHECK(p && !strcmp(p->private_key, "first"), "first duplicate kept");

    /* removal */
    CHECK_INT(rv_secrets_replace(t, 2, NULL, 0, NULL, 0), 1, "emptying a source changes");
    CHECK(rv_secrets_get(t, "ns", "d", &why) == NULL && !why, "removed secret gone, no reason");

    /* bad arguments free their inputs (ASan would see a leak) */
    rv_secret_t *l6[] = { mk("ns", "e", "k") };
    rv_secret_bad_t bd4[] = { mkbad("ns", "f", "r") };
    CHECK_INT(rv_secrets_replace(t, RV_SECRETS_MAX_SOURCES, l6, 1, bd4, 1), RV_EINVAL, "source out of range");
    CHECK_INT(rv_secrets_replace(t, -1, NULL, 0, NULL, 0), RV_EINVAL, "negative source");

    /* sources not read yet: named for "not found" messages, joined in source order */
    CHECK(rv_secrets_unread(t) == NULL, "no unread source");
    CHECK_INT(rv_secrets_set_unread(t, 5, "Vault source B: not read yet"), 0, "mark: no rebuild");
    CHECK_INT(rv_secrets_set_unread(t, 3, "Vault source A: not read yet: sealed"), 0, "mark another");
    const char *u = rv_secrets_unread(t);
    CHECK(u && !strcmp(u, "Vault source A: not read yet: sealed; Vault source B: not read yet"),
          "joined in source order: %s", u ? u : "(null)");
    CHECK_INT(rv_secrets_set_unread(t, 3, "Vault source A: not read yet: sealed"), 0, "same note: no change");
    CHECK_INT(rv_secrets_set_unread(t, 3, NULL), 1, "cleared: rebuild");
    u = rv_secrets_unread(t);
    CHECK(u && !strcmp(u, "Vault source B: not read yet"), "the other left: %s", u ? u : "(null)");
    CHECK_INT(rv_secrets_set_unread(t, 3, NULL), 0, "clearing again: nothing");
    CHECK_INT(rv_secrets_set_unread(t, RV_SECRETS_MAX_SOURCES, "x"), RV_EINVAL, "source out of range");
    CHECK(rv_secrets_get(t, "ns", "zz", &why) == NULL && !why, "a missing secret still has no decode reason");

    rv_secrets_free(t);     /* frees the remaining note (ASan) */
    rv_secrets_free(NULL);
    rv_secret_free(NULL);
}

static void test_scan_dir(void)
{
    tdir_new("secret");
    rv_secrets_t *t = rv_secrets_new();
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/nope", tdir);
    CHECK_INT(rv_secrets_scan_dir(t, 1, dir), 0, "missing directory: no secrets, no change");

    tdir_put_atomic("gloo-system/tls1.yaml", "metadata: {name: tls1}\ntls: {certChain: c1, privateKey: k1}\n");
    tdir_put_atomic("web/aws.json", "{\"metadata\":{\"name\":\"aws\",\"namespace\":\"web\"},\"aws\":{\"accessKey\":\"a\","
                        "\"secretKey\":\"" MARK "\"}}");
    tdir_put_atomic("web/broken.yaml", "metadata: {name: broken}\ntls: {certChain: c, privateKey: \"" MARK "\"\n");
    tdir_put_atomic("web/wrong.yaml", "metadata: {name: other}\ntls: {rootCa: x}\n");
    tdir_put_atomic("web/.hidden.yaml", "junk: [");
    tdir_put_atomic("web/readme.txt", "not a secret");
    tdir_put_atomic("..data/x.yaml", "junk: [");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "first scan changes");
    const rv_secret_t *s = rv_secrets_get(t, "gloo-system", "tls1", NULL);
    CHECK(s && !strcmp(s->private_key, "k1"), "namespace from the folder, name from the file");
    CHECK(s && strstr(s->source, "gloo-system/tls1.yaml"), "source is the path");
    s = rv_secrets_get(t, "web", "aws", NULL);
    CHECK(s && s->kind == RV_SECRET_AWS, ".json read");
    const char *why = NULL;
    CHECK(!rv_secrets_get(t, "web", "broken", &why) && why && strstr(why, "web/broken.yaml"),
          "malformed file: reason names the file (%s)", why ? why : "");
    CHECK(why && !strstr(why, MARK), "reason shows no key material");
    CHECK(!rv_secrets_get(t, "web", "wrong", &why) && why && strstr(why, "does not match the file name"),
          "metadata.name disagreeing with the file refused");
    const rv_secret_t *const *lv;
    CHECK_INT(rv_secrets_list(t, 1, &lv), 2, "two good secrets; hidden, .txt and ..data skipped");
    uint64_t g = rv_secrets_generation(t);

    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 0, "rescan without change: 0");
    CHECK_INT(rv_secrets_generation(t), g, "generation unchanged");
    rv_secrets_forget_files(t, 1);
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 0, "full re-read of the same content: 0");

    const rv_secret_t *aws = rv_secrets_get(t, "web", "aws", NULL);
    tdir_put_atomic("gloo-system/tls1.yaml", "metadata: {name: tls1}\ntls: {certChain: c2, privateKey: k2}\n");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "rotated file: change");
    s = rv_secrets_get(t, "gloo-system", "tls1", NULL);
    CHECK(s && !strcmp(s->private_key, "k2"), "rotated content served");
    CHECK(rv_secrets_get(t, "web", "aws", NULL) == aws, "unchanged secret kept as it was");

    tdir_put_atomic("web/broken.yaml", "metadata: {name: broken}\ntls: {certChain: c, privateKey: k}\n");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "fixed file: change");
    CHECK(rv_secrets_get(t, "web", "broken", NULL) != NULL, "fixed secret served");

    char p[400], q[400];
    /* a name that cannot be read is reported, not dropped */
    snprintf(p, sizeof(p), "%s/web/dangling.yaml", tdir);
    snprintf(q, sizeof(q), "%s/web/nowhere", tdir);
    CHECK(symlink(q, p) == 0, "dangling link made");
    snprintf(p, sizeof(p), "%s/web/dir.yaml", tdir);
    mkdir(p, 0755);
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "unreadable names: change");
    CHECK(!rv_secrets_get(t, "web", "dangling", &why) && why && strstr(why, "dangling.yaml: cannot read"),
          "dangling link reported (%s)", why ? why : "");
    CHECK(!rv_secrets_get(t, "web", "dir", &why) && why && strstr(why, "not a regular file"),
          "directory named like a secret reported (%s)", why ? why : "");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 0, "unchanged unreadable names: no change");
    snprintf(p, sizeof(p), "%s/web/dangling.yaml", tdir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/web/dir.yaml", tdir);
    rmdir(p);
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "gone again: change");

    snprintf(p, sizeof(p), "%s/web/aws.json", tdir);
    unlink(p);
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "deleted file: change");
    CHECK(!rv_secrets_get(t, "web", "aws", &why) && !why, "deleted secret gone");

    /* two files of one name: the first (by file name) serves; when it goes, the other one's own
     * content serves (its unchanged stat must not make the scan reuse the winner's copy) */
    tdir_put_atomic("dup/x.yaml", "metadata: {name: x}\ntls: {certChain: c, privateKey: from-yaml}\n");
    tdir_put_atomic("dup/x.yml", "metadata: {name: x}\ntls: {certChain: c, privateKey: from-yml}\n");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "duplicate files scanned");
    s = rv_secrets_get(t, "dup", "x", NULL);
    CHECK(s && !strcmp(s->private_key, "from-yaml"), "x.yaml serves");
    snprintf(p, sizeof(p), "%s/dup/x.yaml", tdir);
    unlink(p);
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "winner removed: change");
    s = rv_secrets_get(t, "dup", "x", NULL);
    CHECK(s && !strcmp(s->private_key, "from-yml"), "x.yml's own content serves now");
    /* a failure of an unchanged file is kept with its reason across a rescan of another change */
    tdir_put_atomic("dup/y.yaml", "metadata: {name: y}\ntls: {certChain: c}\n");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "bad file added");
    tdir_put_atomic("dup/z.yaml", "metadata: {name: z}\ntls: {rootCa: ca}\n");
    CHECK_INT(rv_secrets_scan_dir(t, 1, tdir), 1, "another file added");
    CHECK(!rv_secrets_get(t, "dup", "y", &why) && why && strstr(why, "dup/y.yaml") &&
              strstr(why, "privateKey is required"),
          "unchanged bad file keeps its reason (%s)", why ? why : "");
    CHECK(rv_secrets_get(t, "dup", "x", NULL) == s, "unchanged good file keeps its pointer");

    /* store attachment */
    rv_store_t *st = rv_store_new();
    CHECK(rv_store_secret(st, "gloo-system", "tls1", &why) == NULL && !why, "detached store: every ref missing");
    rv_store_attach_secrets(st, t);
    s = rv_store_secret(st, "gloo-system", "tls1", NULL);
    CHECK(s && !strcmp(s->private_key, "k2"), "attached store resolves");
    rv_store_attach_secrets(st, NULL);
    CHECK(rv_store_secret(st, "gloo-system", "tls1", NULL) == NULL, "detached again");
    rv_store_free(st);

    rv_secrets_free(t);
    tdir_remove();
}

/* Load Settings text from a fresh DIR/gloo-system/default.yaml. */
static int load(const char *settings, rv_settings_t *s, char *e, size_t el)
{
    tdir_empty("secret-settings");
    if (settings)
        tdir_put_atomic("gloo-system/default.yaml", settings);
    int rc = rv_settings_load(tdir, NULL, s, e, el);
    return rc;
}

static void test_settings(void)
{
    rv_settings_t s;
    char e[1024], want[400];

    CHECK_INT(load(NULL, &s, e, sizeof(e)), 0, "no Settings file");
    snprintf(want, sizeof(want), "%s/secrets", tdir);
    CHECK(s.nsecret_srcs == 1 && s.secret_srcs[0].type == RV_SECRET_SRC_DIRECTORY &&
              !strcmp(s.secret_srcs[0].directory, want),
          "without Settings: one directory source DIR/secrets");
    rv_settings_free(&s);

    CHECK_INT(load("metadata: {name: default}\n", &s, e, sizeof(e)), 0, "Settings without secret source (%s)", e);
    CHECK(s.nsecret_srcs == 1 && !strcmp(s.secret_srcs[0].directory, want), "default stays DIR/secrets");
    rv_settings_free(&s);

    CHECK_INT(load("directorySecretSource: {directory: /data/secret}\n", &s, e, sizeof(e)), 0, "legacy directory");
    CHECK(s.nsecret_srcs == 1 && !strcmp(s.secret_srcs[0].directory, "/data/secret/secrets") &&
              !strcmp(s.secret_dir, "/data/secret/secrets"),
          "directorySecretSource keeps Gloo's secrets/ level");
    rv_settings_free(&s);

    CHECK_INT(load("directorySecretSource: {directory: sec}\n", &s, e, sizeof(e)), 0, "relative legacy directory");
    snprintf(want, sizeof(want), "%s/sec/secrets", tdir);
    CHECK(s.nsecret_srcs == 1 && !strcmp(s.secret_srcs[0].directory, want), "relative to DIR");
    rv_settings_free(&s);

    CHECK_INT(load("secretOptions:\n  sources:\n  - vault: {address: http://v2, rootKey: /r/, pathPrefix: kv,\n"
                   "      tlsConfig: {caCert: /ca.pem, insecure: true}, accessToken: tok}\n"
                   "  - directory: {directory: /z}\n  - directory: {directory: /a}\n"
                   "  - vault: {address: http://v1, caCert: /old.pem, token: old}\n",
                   &s, e, sizeof(e)),
              0, "secretOptions read (%s)", e);
    CHECK_INT(s.nsecret_srcs, 4, "four sources");
    if (s.nsecret_srcs == 4) {
        rv_secret_src_t *v = s.secret_srcs;
        CHECK(v[0].type == RV_SECRET_SRC_DIRECTORY && !strcmp(v[0].directory, "/a") &&
                  v[1].type == RV_SECRET_SRC_DIRECTORY && !strcmp(v[1].directory, "/z"),
              "directories first, sorted by path (Gloo's order)");
        CHECK(v[2].type == RV_SECRET_SRC_VAULT && !strcmp(v[2].vault.address, "http://v2") &&
                  v[3].type == RV_SECRET_SRC_VAULT && !strcmp(v[3].vault.address, "http://v1"),
              "then the vaults in written order");
        CHECK(!strcmp(v[2].vault.root_key, "r") && !strcmp(v[2].vault.path_prefix, "kv") &&
                  !strcmp(v[2].vault.ca_cert, "/ca.pem") && v[2].vault.insecure &&
                  !strcmp(v[2].vault.access_token, "tok"),
              "vault fields");
        CHECK(!strcmp(v[3].vault.root_key, "gloo") && !strcmp(v[3].vault.path_prefix, "secret") &&
                  !strcmp(v[3].vault.ca_cert, "/old.pem") && !strcmp(v[3].vault.access_token, "old") &&
                  !v[3].vault.insecure,
              "vault defaults and deprecated fields");
    }
    rv_settings_free(&s);

    CHECK_INT(load("vaultSecretSource: {}\n", &s, e, sizeof(e)), 0, "empty vaultSecretSource");
    CHECK(s.nsecret_srcs == 1 && !s.secret_srcs[0].vault.address && !s.secret_srcs[0].vault.access_token,
          "no address/token: the environment decides");
    rv_settings_free(&s);

    static const struct { const char *doc, *want, *what; } bad[] = {
        { "secretOptions: {sources: [{kubernetes: {}}]}\n", "secretOptions.sources[0].kubernetes is not supported yet",
          "kubernetes source" },
        { "kubernetesSecretSource: {}\n", "kubernetesSecretSource is not supported yet", "legacy kubernetes" },
        { "secretOptions: {sources: []}\n", "must list at least one source", "empty sources" },
        { "secretOptions: {sources: [{}]}\n", "needs one of directory or vault", "empty source" },
        { "secretOptions: {sources: [{directory: {}}]}\n", "directory: is required", "directory without path" },
        { "secretOptions: {sources: [{directory: {directory: /a}, vault: {}}]}\n", "cannot both be set",
          "two kinds in one source" },
        { "secretOptions: {sources: [{directory: {directory: /a}}, {directory: {directory: /a}}]}\n",
          "lists the directory /a twice", "same directory twice" },
        { "secretOptions: {sources: [{vault: {aws: {vaultRole: r}}}]}\n", "vault.aws is not supported yet",
          "vault aws auth" },
        { "secretOptions: {sources: [{vault: {accessToken: a, aws: {}}}]}\n", "vault.aws is not supported yet",
          "accessToken and aws" },
        { "secretOptions: {sources: [{vault: {namespace: x}}]}\n", "namespace: unknown field", "unknown vault field" },
        { "secretOptions: {sources: [{directory: {directory: /a}}]}\ndirectorySecretSource: {directory: /b}\n",
          "secretOptions and directorySecretSource cannot both be set", "secretOptions with the legacy source" },
        { "directorySecretSource: {directory: /b}\nvaultSecretSource: {}\n", "cannot both be set",
          "two legacy sources" },
    };
    for (size_t i = 0; i < RV_ARRAY_LEN(bad); i++) {
        int rc = load(bad[i].doc, &s, e, sizeof(e));
        CHECK(rc == RV_EPARSE && strstr(e, bad[i].want), "refused: %s", bad[i].what);
        if (rc != RV_EPARSE || !strstr(e, bad[i].want))
            printf("#   rc %d err: %s\n", rc, e);
        if (rc == 0)
            rv_settings_free(&s);
    }
    tdir_remove();
}

int main(void)
{
    test_key_as_field_name();
    test_gloo_form();
    test_kube_form();
    test_refusals();
    test_stored();
    test_table();
    test_scan_dir();
    test_settings();
    TEST_DONE();
}
