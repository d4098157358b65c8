/*
 * fuzz_config.c - libFuzzer target for the strict Gloo resource decoder (YAML parse + schema
 * decode). The first byte picks the resource kind; the rest is the file content. Any input
 * must give either a decoded resource or an error message, never a crash or a hang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config-internal.h"
#include "core/arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    rv_arena_t a;
    rv_arena_init(&a, 0);
    void *obj = NULL;
    char err[512];
    err[0] = '\0';
    int kind = data[0] % RK_COUNT;
    int rc = cfg_decode_resource(&a, kind, "fuzz.yaml", NULL, kind == RK_SETTINGS ? NULL : "gloo-system", "x",
                                 (const char *)data + 1, size - 1, &obj, err, sizeof err);
    if (rc == 0 && !obj)
        abort();
    if (rc != 0 && err[0] == '\0')
        abort(); /* every rejection must say why */
    rv_arena_free(&a);
    return 0;
}
