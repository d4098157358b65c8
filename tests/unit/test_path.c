/* test_path.c - request path normalisation: dot segments, slashes, escapes, bypass shapes. */
#include "core/err.h"
#include "http/path.h"
#include "test.h"

static char obuf[1024];
static size_t olen;

static int norm(const char *p, size_t n)
{
    olen = (size_t)-1;
    return rv_path_normalize(rv_str(p, n), obuf, sizeof obuf, &olen);
}

/* in normalises to want */
#define NORM(in, want)                                                                   \
    do {                                                                                 \
        int rc_ = norm(in, sizeof(in) - 1);                                              \
        CHECK_INT(rc_, 0, "normalise '%s' ok", in);                                      \
        if (rc_ == 0)                                                                    \
            CHECK_STRN(obuf, olen, want, "'%s' -> '%s'", in, want);                      \
        else                                                                             \
            CHECK(0, "'%s' -> '%s' (not run)", in, want);                                \
    } while (0)

/* in is refused with RV_EBADPATH */
#define BAD(in, what) CHECK_INT(norm(in, sizeof(in) - 1), RV_EBADPATH, "reject %s", what)

/* A tiny model of a "deny /admin*" rule: what a router would do with the normalised path. */
static int denied(const char *in, size_t n)
{
    int rc = norm(in, n);
    if (rc != 0)
        return 1; /* rejected with 400 before routing */
    return olen >= 6 && memcmp(obuf, "/admin", 6) == 0;
}

int main(void)
{
    /* identity */
    NORM("/", "/");
    NORM("/a/b/c", "/a/b/c");
    NORM("/a/b/", "/a/b/");
    NORM("/index.html", "/index.html");
    NORM("/a;b=c/d", "/a;b=c/d");
    NORM("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=");

    /* dot segments (RFC 3986 5.2.4) */
    NORM("/a/../admin", "/admin");
    NORM("/a/..", "/");
    NORM("/a/b/..", "/a/");
    NORM("/a/b/../", "/a/");
    NORM("/a/./b", "/a/b");
    NORM("/.", "/");
    NORM("/..", "/");
    NORM("/../admin", "/admin");
    NORM("/../../../etc/passwd", "/etc/passwd");
    NORM("/a/b/c/../../d", "/a/d");
    NORM("/admin/.", "/admin/");
    NORM("/admin/./", "/admin/");
    NORM("/a/b/../../..", "/");
    NORM("/...", "/...");
    NORM("/.../x", "/.../x");
    NORM("/.a/..b/c.", "/.a/..b/c.");
    NORM("/a/.b/../c", "/a/c");

    /* slashes */
    NORM("//admin", "/admin");
    NORM("///admin///x//", "/admin/x/");
    NORM("/a//b", "/a/b");
    NORM("//", "/");
    NORM("/a//../b", "/b");
    NORM("/a/.//b", "/a/b");

    /* ';' is ordinary */
    NORM("/p;/../admin", "/admin");
    NORM("/..;/admin", "/..;/admin");

    /* escapes */
    NORM("/%2e%2e/admin", "/admin");
    NORM("/%2E%2e/", "/");
    NORM("/x/%2e%2E/admin", "/admin");
    NORM("/x/.%2e/admin", "/admin");
    NORM("/x/%2e./admin", "/admin");
    NORM("/x/%2e/admin", "/x/admin");
    NORM("/%61dmin", "/admin");
    NORM("/%41%5a%30%2D%5F%7e", "/AZ0-_~");
    NORM("/a%20b", "/a%20b");
    NORM("/%3f%3a%25", "/%3F%3A%25");
    NORM("/%2500", "/%2500");
    NORM("/%25%32%65", "/%252e");
    NORM("/caf%c3%a9", "/caf%C3%A9");
    NORM("/%7b%7D", "/%7B%7D");

    /* refused */
    BAD("", "empty path");
    BAD("a/b", "relative path");
    BAD("*", "asterisk");
    BAD("/admin%2fx", "%2f");
    BAD("/admin%2Fx", "%2F");
    BAD("/a%5cb", "%5c");
    BAD("/a%5Cb", "%5C");
    BAD("/a%00b", "%00");
    BAD("/a\\b", "backslash");
    BAD("/..\\admin", "backslash dot-dot");
    BAD("/admin#x", "fragment");
    BAD("/a b", "space");
    BAD("/a\tb", "tab");
    BAD("/a\x01", "control byte");
    BAD("/a\x7f", "DEL");
    BAD("/a\r\nb", "CRLF");
    BAD("/a%", "truncated escape");
    BAD("/a%2", "short escape");
    BAD("/a%zz", "non-hex escape");
    BAD("/a%g0", "non-hex first digit");
    BAD("/a%0g", "non-hex second digit");
    BAD("/%%30", "percent percent");
    CHECK_INT(norm("/a\0b", 4), RV_EBADPATH, "reject raw NUL");

    /* in place and capacity */
    {
        char b[] = "/x/%2e%2e//admin/./%7euser";
        size_t n = 0;
        int rc = rv_path_normalize(rv_str(b, sizeof b - 1), b, sizeof b - 1, &n);
        CHECK_INT(rc, 0, "in-place normalisation ok");
        CHECK_STRN(b, n, "/admin/~user", "in-place result");
        char small[4];
        CHECK_INT(rv_path_normalize(RV_STR("/abcdef"), small, sizeof small, &n), RV_ETOOBIG,
                  "cap too small -> RV_ETOOBIG");
        CHECK_INT(rv_path_normalize(RV_STR("/%61%62"), small, 3, &n), 0, "cap below input length suffices "
                  "when the result fits");
        CHECK_STRN(small, n, "/ab", "result in a small buffer");
        CHECK_INT(rv_path_normalize(RV_STR("/%3f"), small, 3, &n), RV_ETOOBIG, "escape needing 3 bytes");
        CHECK_INT(rv_path_normalize(RV_STR("/"), small, 0, &n), RV_ETOOBIG, "cap 0");
    }

    /* result never longer than the input, over many generated paths */
    {
        static const char *parts[] = { "a", ".", "..", "", "%2e", "%2E%2e", "%41", "%3b", "b;", "~" };
        char in[64], out[64];
        int longer = 0, fails = 0, total = 0;
        for (int x = 0; x < 1000; x++) {
            size_t n = 0;
            unsigned v = (unsigned)x * 2654435761u;
            for (int k = 0; k < 5; k++) {
                const char *pp = parts[(v >> (k * 4)) % RV_ARRAY_LEN(parts)];
                in[n++] = '/';
                memcpy(in + n, pp, strlen(pp));
                n += strlen(pp);
            }
            size_t on = 0;
            int rc = rv_path_normalize(rv_str(in, n), out, n, &on);
            total++;
            if (rc != 0)
                fails++;
            else if (on > n || out[0] != '/')
                longer++;
            /* idempotent: normalising the result changes nothing */
            char again[64];
            size_t an = 0;
            if (rc == 0 && (rv_path_normalize(rv_str(out, on), again, sizeof again, &an) != 0 || an != on ||
                            memcmp(again, out, on) != 0))
                longer++;
        }
        CHECK_INT(fails, 0, "generated paths all normalise with cap == input length");
        CHECK_INT(longer, 0, "results start with '/', never grow, and are idempotent (%d paths)", total);
    }

    /* hardening item 9: every bypass shape of a "/admin" deny rule is denied or rejected */
    {
        static const char *shapes[] = {
            "/admin", "/a/../admin", "/%2e%2e/admin", "/%2E%2e/admin", "//admin", "/admin%2fx",
            "/admin%2Fx", "/p;/../admin", "/admin/.", "/admin%2500", "/admin%00", "/admin\\x",
            "/admin#x", "/./admin", "/%61dmin", "/%61%64%6d%69%6e", "///admin", "/x/y/../../admin",
            "/.%2e/admin", "/%2e/admin", "/admin/", "/\\admin",
        };
        for (size_t k = 0; k < RV_ARRAY_LEN(shapes); k++)
            CHECK(denied(shapes[k], strlen(shapes[k])), "deny rule holds for %s", shapes[k]);
        CHECK(!denied("/public/x", 9), "unrelated path not denied");
        CHECK(!denied("/admi", 5), "prefix of the rule not denied");
    }
    TEST_DONE();
}
