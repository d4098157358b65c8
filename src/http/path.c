/*
 * path.c - request path normalisation: decode unreserved escapes, upper-case the others,
 * refuse escapes that change the path's structure, remove dot segments, merge slashes.
 *
 * One left-to-right pass. Each segment is written to the output as it is decoded; when its
 * end ('/' or the end of input) is reached it is judged: empty (a run of slashes) and "."
 * vanish, ".." also removes the segment before it. Because dot segments are judged after
 * decoding, "%2e%2e" is as much a ".." as "..". The write position never passes the read
 * position, so the output may be the input buffer itself (in-place normalisation).
 */
#include "http/path.h"
#include "core/err.h"

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/*
 * See path.h. out may alias in.ptr (in place). Bytes >= 0x80 are passed through unchanged
 * (the HTTP/1 parser already refuses them in a request-target). ';' is an ordinary byte:
 * "/p;/../admin" is "/admin". A run of slashes is merged before dot segments are applied,
 * so "/a//../b" is "/b". On error *out_len is untouched and out holds scratch bytes.
 */
int rv_path_normalize(rv_str_t in, char *out, size_t cap, size_t *out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)in.ptr;
    size_t n = in.len, i = 1, o = 0, seg;

    if (n == 0 || s[0] != '/')
        return RV_EBADPATH;
    if (cap == 0)
        return RV_ETOOBIG;
    out[o++] = '/';
    seg = o;            /* start of the current segment; out[seg - 1] == '/' */

    for (;;) {
        if (i == n || s[i] == '/') {
            size_t sl = o - seg;
            if (sl == 1 && out[seg] == '.') {
                o = seg;
            } else if (sl == 2 && out[seg] == '.' && out[seg + 1] == '.') {
                o = seg;
                if (seg > 1) {
                    size_t k = seg - 1;
                    while (k > 0 && out[k - 1] != '/')
                        k--;
                    o = seg = k;
                }
            } else if (sl > 0 && i < n) {
                if (o >= cap)
                    return RV_ETOOBIG;
                out[o++] = '/';
                seg = o;
            }
            if (i == n)
                break;
            i++;
            continue;
        }

        unsigned char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (n - i < 3 || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
                return RV_EBADPATH;
            unsigned char d = (unsigned char)(hi << 4 | lo);
            if (d == 0 || d == '/' || d == '\\')
                return RV_EBADPATH;
            i += 3;
            if (unreserved(d)) {
                if (o >= cap)
                    return RV_ETOOBIG;
                out[o++] = (char)d;
            } else {
                if (cap - o < 3)
                    return RV_ETOOBIG;
                out[o++] = '%';
                out[o++] = hex[hi];
                out[o++] = hex[lo];
            }
            continue;
        }
        if (c <= 0x20 || c == 0x7f || c == '#' || c == '\\')
            return RV_EBADPATH;
        if (o >= cap)
            return RV_ETOOBIG;
        out[o++] = (char)c;
        i++;
    }
    *out_len = o;
    return 0;
}
