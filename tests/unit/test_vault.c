/*
 * test_vault.c - the Vault source's pure parts: client configuration from Settings and the
 * VAULT_* environment (address, auth method selection), and rv_vault_apply (documents into the
 * secret table: good, undecodable, metadata naming another secret, unchanged).
 * The HTTP behaviour is tested against the Vault double in tests/integ/test_vault_secrets.py.
 */
#include <stdlib.h>
#include <string.h>

#include "config/secret.h"
#include "control/vault.h"
#include "core/err.h"
#include "test.h"

static void clear_env(void)
{
    const char *v[] = { "VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_ROLE_ID_FILE", "VAULT_SECRET_ID",
                        "VAULT_SECRET_ID_FILE", "VAULT_SKIP_VERIFY", "VAULT_NAMESPACE", "VAULT_TLS_SERVER_NAME",
                        "VAULT_CLIENT_TIMEOUT" };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        unsetenv(v[i]);
}

static void test_client_config(void)
{
    rv_vault_cfg_t cfg = { 0 };
    rv_vault_client_t *c = NULL;
    char err[300];
    clear_env();
    int rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == RV_EINVAL && strstr(err, "authenticate"), "no token, no AppRole: refused (%s)", err);

    setenv("VAULT_TOKEN", "t0k3n", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0 && c, "VAULT_TOKEN is enough");
    if (c)
        CHECK(!strcmp(rv_vault_client_address(c), "https://127.0.0.1:8200"), "Vault's default address (%s)",
              rv_vault_client_address(c));
    rv_vault_client_free(c);

    setenv("VAULT_ADDR", "http://vault.env:8200/", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0 && !strcmp(rv_vault_client_address(c), "http://vault.env:8200"), "VAULT_ADDR, trailing / gone");
    rv_vault_client_free(c);

    cfg.address = "vault.settings:8200";
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0 && !strcmp(rv_vault_client_address(c), "https://vault.settings:8200"),
          "Settings address wins over VAULT_ADDR; no scheme = https");
    rv_vault_client_free(c);

    cfg.address = "ftp://x";
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == RV_EINVAL && strstr(err, "ftp://x"), "other schemes refused (%s)", err);
    cfg.address = NULL;

    setenv("VAULT_SKIP_VERIFY", "maybe", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == RV_EINVAL && strstr(err, "VAULT_SKIP_VERIFY"), "a bad VAULT_SKIP_VERIFY is named (%s)", err);
    unsetenv("VAULT_SKIP_VERIFY");

    setenv("VAULT_CLIENT_TIMEOUT", "1m30s", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0, "VAULT_CLIENT_TIMEOUT as a Go duration");
    rv_vault_client_free(c);
    setenv("VAULT_CLIENT_TIMEOUT", "20", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0, "VAULT_CLIENT_TIMEOUT in seconds");
    rv_vault_client_free(c);
    setenv("VAULT_CLIENT_TIMEOUT", "soon", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == RV_EINVAL && strstr(err, "VAULT_CLIENT_TIMEOUT"), "a bad VAULT_CLIENT_TIMEOUT is named (%s)", err);
    unsetenv("VAULT_CLIENT_TIMEOUT");

    unsetenv("VAULT_TOKEN");
    setenv("VAULT_ROLE_ID", "role", 1);
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0, "VAULT_ROLE_ID alone selects AppRole (a role without a bound secret id)");
    rv_vault_client_free(c);

    setenv("VAULT_TLS_SERVER_NAME", "vault.internal", 1);
    cfg.address = "https://10.0.0.1:8200";
    rc = rv_vault_client_new(&cfg, &c, err, sizeof err);
    CHECK(rc == 0 && !strcmp(rv_vault_client_address(c), "https://vault.internal:8200"),
          "tlsServerName: the URL names the server name (connect-to keeps the address): %s",
          c ? rv_vault_client_address(c) : "-");
    rv_vault_client_free(c);
    clear_env();
}

static rv_vault_set_t *set_of(const char *const *docs, size_t n)
{
    rv_vault_set_t *s = calloc(1, sizeof(*s));
    s->docs = calloc(n, sizeof(*s->docs));
    for (size_t i = 0; i < n; i++) {
        rv_vault_doc_t *d = &s->docs[s->n++];
        d->ns = strdup(docs[3 * i]);
        d->name = strdup(docs[3 * i + 1]);
        d->path = strdup("secret/gloo/gloo.solo.io/v1/Secret/x");
        d->json = strdup(docs[3 * i + 2]);
        d->len = strlen(d->json);
        d->version = 1;
    }
    return s;
}

static void test_apply(void)
{
    rv_secrets_t *t = rv_secrets_new();
    const char *docs[] = {
        "ns1", "good", "{\"metadata\":{\"name\":\"good\",\"namespace\":\"ns1\"},\"tls\":{\"rootCa\":\"CA\"}}",
        "ns1", "bare", "{\"aws\":{\"accessKey\":\"A\",\"secretKey\":\"S\"}}",
        "ns1", "odd", "{\"oauth\":{\"clientSecret\":\"x\"}}",
        "ns1", "other", "{\"metadata\":{\"name\":\"else\",\"namespace\":\"ns1\"},\"tls\":{\"rootCa\":\"CA\"}}",
        "ns1", "null", "null",
    };
    rv_vault_set_t *s = set_of(docs, 5);
    int rc = rv_vault_apply(t, 2, s);
    CHECK_INT(rc, 1, "first delivery changes the table");
    const char *why = NULL;
    const rv_secret_t *g = rv_secrets_get(t, "ns1", "good", &why);
    CHECK(g && g->kind == RV_SECRET_TLS && g->root_ca && !strcmp(g->root_ca, "CA"), "good: a tls secret");
    g = rv_secrets_get(t, "ns1", "bare", &why);
    CHECK(g && g->kind == RV_SECRET_AWS, "no metadata: the Vault path names it");
    why = NULL;
    CHECK(!rv_secrets_get(t, "ns1", "odd", &why) && why && strstr(why, "oauth"), "oauth: bad, named (%s)",
          why ? why : "-");
    why = NULL;
    CHECK(!rv_secrets_get(t, "ns1", "other", &why) && why && strstr(why, "else"),
          "metadata naming another secret: bad (%s)", why ? why : "-");
    why = NULL;
    CHECK(!rv_secrets_get(t, "ns1", "null", &why) && why, "a null document: bad (%s)", why ? why : "-");
    CHECK(!rv_secrets_get(t, "ns1", "else", NULL), "the other name is not served");
    uint64_t gen = rv_secrets_generation(t);
    rv_vault_set_free(s);
    s = set_of(docs, 5);
    CHECK_INT(rv_vault_apply(t, 2, s), 0, "the same documents again: no change");
    CHECK(rv_secrets_generation(t) == gen, "generation unchanged");
    rv_vault_set_free(s);
    s = set_of(docs, 1);
    CHECK_INT(rv_vault_apply(t, 2, s), 1, "four secrets gone: a change");
    CHECK(!rv_secrets_get(t, "ns1", "bare", NULL), "gone from the table");
    rv_vault_set_free(s);
    rv_secrets_free(t);
}

int main(void)
{
    test_client_config();
    test_apply();
    TEST_DONE();
}
