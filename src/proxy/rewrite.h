/*
 * rewrite.h - pure functions computing what a route does to a request: path rewrites,
 * redirect locations. Workers call them with the per-request arena.
 */
#ifndef RV_REWRITE_H
#define RV_REWRITE_H

#include "config/snapshot-t.h"
#include "core/arena.h"
#include "proxy/router.h"

/*
 * Path to forward for route r and the (normalised) request path: prefixRewrite replaces the
 * matched prefix (Envoy semantics: "/api" + prefixRewrite "/" on "/api/x" -> "/x", never a
 * double slash), regexRewrite substitutes; otherwise the path itself. *out may point into
 * path (no copy) or into arena a. Returns 0 or RV_ENOMEM.
 */
int rv_rewrite_path(const rv_route_t *r, rv_str_t path, rv_arena_t *a, rv_str_t *out);

/*
 * Location header value for a redirect action, from the request (host, path, query) and
 * whether the request came over TLS. Follows Envoy's redirect semantics for hostRedirect,
 * pathRedirect, prefixRewrite (matched prefix from r), httpsRedirect, portRedirect,
 * stripQuery. Returns 0 or RV_ENOMEM.
 */
int rv_redirect_location(const rv_route_t *r, const rv_req_view_t *req, bool tls, rv_arena_t *a,
                         rv_str_t *out);

#endif
