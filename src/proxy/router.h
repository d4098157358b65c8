/*
 * router.h - compiled route table: pick the virtual host by Host, then the first route that
 * matches. Index built on the control thread (rv_router_build) into the snapshot's arena;
 * lookups run on workers, read-only, lock-free, allocation-free.
 */
#ifndef RV_ROUTER_H
#define RV_ROUTER_H

#include "config/snapshot-t.h"
#include "http/h1.h"

/* What the router looks at; every field is a slice owned by the caller. */
typedef struct rv_req_view_s {
    rv_str_t method;
    rv_str_t path;              /* normalised path, no query */
    rv_str_t query;             /* raw query without '?' (len 0 when none) */
    rv_str_t host;              /* Host / :authority as received (may carry ":port") */
    const rv_header_t *headers;
    uint32_t nheaders;
} rv_req_view_t;

/* Build the lookup index of every listener of snap. Control thread. 0 or RV_ENOMEM. */
int rv_router_build(rv_snapshot_t *snap);

/*
 * Virtual host for host on listener l: exact domain, then the longest "*.suffix" or
 * "prefix.*" wildcard, then "*". Matching is case-insensitive; a port in host is ignored
 * unless a domain names that port. NULL when none matches (404 NR).
 */
const rv_vhost_t *rv_router_find_vhost(const rv_listener_cfg_t *l, rv_str_t host);

/* First route of vh whose matcher matches req; NULL when none (404 NR). */
const rv_route_t *rv_router_find_route(const rv_vhost_t *vh, const rv_req_view_t *req);

/* True when m matches req (exposed for tests). */
bool rv_matcher_matches(const rv_matcher_t *m, const rv_req_view_t *req);

/*
 * rv_router_find_route using the listener's compiled index (rv_router_build): same result,
 * but runs of consecutive case-sensitive prefix/exact routes are looked up in O(log n) plus
 * the depth of nested prefixes, instead of tested one by one. vh must be one of l->vhosts
 * (as returned by rv_router_find_vhost(l, ...)); otherwise, or before rv_router_build, this
 * is exactly rv_router_find_route. Worker threads; read-only, allocation-free.
 * (rv_vhost_t has no field for a per-vhost index, hence the listener argument.)
 */
const rv_route_t *rv_router_lookup_route(const rv_listener_cfg_t *l, const rv_vhost_t *vh,
                                         const rv_req_view_t *req);

/*
 * Both steps for a worker: virtual host by req->host, then the indexed route lookup.
 * *vh_out (may be NULL) gets the virtual host, or NULL. Returns the route, or NULL when no
 * virtual host or no route matches (404 NR).
 */
const rv_route_t *rv_router_match(const rv_listener_cfg_t *l, const rv_req_view_t *req,
                                  const rv_vhost_t **vh_out);

/*
 * Split a Host / :authority value into name and port: "a.com:8080" -> "a.com" + "8080",
 * "[::1]:80" -> "[::1]" + "80", "a.com:" -> "a.com" + "". A suffix counts as a port only
 * when it is all digits; an unbracketed host with several ':' (bare IPv6) has no port.
 * Returns the name (a slice of host); *port (may be NULL) gets the digits, or ptr NULL when
 * host carries no port. Any thread.
 */
rv_str_t rv_host_split_port(rv_str_t host, rv_str_t *port);

#endif
