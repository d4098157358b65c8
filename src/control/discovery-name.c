/*
 * discovery-name.c - Gloo's name for the Upstream discovered from a Consul service
 * (kubeutils.SanitizeNameV2), with the MD5 its long-name rule needs.
 */
#include <stdio.h>
#include <string.h>

#include "control/discovery.h"

/* ---- MD5 (RFC 1321), for Gloo's long-name rule only ------------------------------------ */

static uint32_t rol(uint32_t x, int c)
{
    return (x << c) | (x >> (32 - c));
}

static void md5(const unsigned char *msg, size_t len, unsigned char out[16])
{
    static const int sh[64] = { 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21 };
    uint32_t k[64];
    for (int i = 0; i < 64; i++) {
        double v = __builtin_fabs(__builtin_sin((double)(i + 1))) * 4294967296.0;
        k[i] = (uint32_t)v;
    }
    uint32_t h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476;
    size_t total = ((len + 8) / 64 + 1) * 64;
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[16];
        for (int i = 0; i < 16; i++) {
            uint32_t v = 0;
            for (int j = 0; j < 4; j++) {
                size_t p = off + (size_t)i * 4 + (size_t)j;
                unsigned char byte;
                if (p < len)
                    byte = msg[p];
                else if (p == len)
                    byte = 0x80;
                else if (p >= total - 8)
                    byte = (unsigned char)(((uint64_t)len * 8) >> (8 * (p - (total - 8))));
                else
                    byte = 0;
                v |= (uint32_t)byte << (8 * j);
            }
            w[i] = v;
        }
        uint32_t a = h0, b = h1, c = h2, d = h3;
        for (int i = 0; i < 64; i++) {
            uint32_t f;
            int g;
            if (i < 16) {
                f = (b & c) | (~b & d);
                g = i;
            } else if (i < 32) {
                f = (d & b) | (~d & c);
                g = (5 * i + 1) % 16;
            } else if (i < 48) {
                f = b ^ c ^ d;
                g = (3 * i + 5) % 16;
            } else {
                f = c ^ (b | ~d);
                g = (7 * i) % 16;
            }
            uint32_t tmp = d;
            d = c;
            c = b;
            b = b + rol(a + f + k[i] + w[g], sh[i]);
            a = tmp;
        }
        h0 += a;
        h1 += b;
        h2 += c;
        h3 += d;
    }
    uint32_t hs[4] = { h0, h1, h2, h3 };
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[i * 4 + j] = (unsigned char)(hs[i] >> (8 * j));
}

char *rv_disc_upstream_name(const char *service, char *out, size_t outlen)
{
    char tmp[1024];
    size_t n = 0;
    if (!outlen)
        return out;
    for (const char *p = service; *p && n + 1 < sizeof(tmp); p++) {
        char ch = *p;
        if (strchr("*/.:_ ", ch))
            ch = '-';
        else if (strchr("[]\n\"'", ch))
            continue;
        tmp[n++] = ch;
    }
    tmp[n] = '\0';
    if (n > 63) {
        unsigned char d[16];
        md5((const unsigned char *)tmp, n, d);
        char hex[33];
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        snprintf(tmp + 31, sizeof(tmp) - 31, "-%s", hex);
        tmp[63] = '\0';
        n = 63;
    }
    size_t k = 0;
    for (; k < n && k + 1 < outlen; k++)
        out[k] = (char)((tmp[k] >= 'A' && tmp[k] <= 'Z') ? tmp[k] + 32 : tmp[k]);
    out[k] = '\0';
    return out;
}
