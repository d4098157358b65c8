/*
 * fuzz_secret.c - libFuzzer target for the secret decoder (YAML/JSON parse, Gloo's stored form
 * and the Kubernetes Secret form, base64). Every input gives a secret or a message, never a
 * crash or a hang; a decoded secret then goes through the table (replace twice: the second,
 * identical one must report no change), so the content comparison and the wiping free run too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/secret.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rv_secret_t *s = NULL, *s2 = NULL;
    char err[512];
    err[0] = '\0';
    int rc = rv_secret_decode("fuzz.yaml", (const char *)data, size, "gloo-system", "x", &s, err, sizeof err);
    if (rc == 0 && !s)
        abort();
    if (rc != 0 && (s || err[0] == '\0'))
        abort(); /* every rejection must say why */
    if (rc != 0)
        return 0;
    if (s->kind == RV_SECRET_TLS && !s->cert_chain && !s->root_ca)
        abort();
    if (s->kind == RV_SECRET_AWS && (!s->access_key || !s->secret_key))
        abort();
    if (rv_secret_decode("fuzz.yaml", (const char *)data, size, "gloo-system", "x", &s2, err, sizeof err) != 0)
        abort(); /* decoding is deterministic */
    /* the stored form (YAML and JSON) decodes back to the same content */
    for (int json = 0; json < 2; json++) {
        size_t sl;
        char *st = rv_secret_stored(s, json, &sl);
        rv_secret_t *back = NULL;
        if (!st)
            continue;   /* OOM */
        if (rv_secret_decode("stored", st, sl, NULL, NULL, &back, err, sizeof err) != 0)
            abort();
        rv_secrets_t *t2 = rv_secrets_new();
        rv_secret_t *c1 = NULL;
        if (t2 && rv_secret_decode("fuzz.yaml", (const char *)data, size, "gloo-system", "x", &c1, err,
                                   sizeof err) == 0) {
            rv_secret_t *a1[] = { c1 }, *a2[] = { back };
            back = NULL;
            if (rv_secrets_replace(t2, 0, a1, 1, NULL, 0) != 1 || rv_secrets_replace(t2, 0, a2, 1, NULL, 0) != 0)
                abort();    /* same content after the round trip */
        }
        rv_secrets_free(t2);
        rv_secret_free(back);
        free(st);
    }
    rv_secrets_t *t = rv_secrets_new();
    if (!t) {
        rv_secret_free(s);
        rv_secret_free(s2);
        return 0;
    }
    rv_secret_t *l1[] = { s }, *l2[] = { s2 };
    if (rv_secrets_replace(t, 0, l1, 1, NULL, 0) != 1)
        abort();
    if (rv_secrets_replace(t, 0, l2, 1, NULL, 0) != 0)
        abort();
    rv_secrets_free(t);
    return 0;
}
