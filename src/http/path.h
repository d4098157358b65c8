/*
 * path.h - request path normalisation, as Envoy's edge settings do it.
 *
 * Applied before routing; the normalised path is both what routes match and what is
 * forwarded, so "/a/../admin", "//admin" or "/%2e%2e/admin" cannot walk around a rule.
 */
#ifndef RV_PATH_H
#define RV_PATH_H

#include "core/common.h"

/*
 * Normalise the path part of a request target (no query) into out (cap bytes; the result is
 * never longer than the input, so cap >= in.len is enough). Steps: percent-encoded unreserved
 * characters (ALPHA DIGIT - . _ ~) are decoded, remaining percent-encodings upper-cased;
 * dot segments removed (RFC 3986 5.2.4); runs of '/' merged.
 * Returns 0 with *out_len set; RV_EBADPATH when the path does not start with '/', holds an
 * encoded slash or backslash (%2F %5C), %00 or a bad percent-encoding, a backslash, or a
 * control byte/space/'#'; RV_ETOOBIG when cap is too small.
 */
int rv_path_normalize(rv_str_t in, char *out, size_t cap, size_t *out_len);

#endif
