/*
 * discovery-query.c - the watches of the Consul discovery watcher: one per datacenter list,
 * service list (per datacenter) and health answer (per service and datacenter). Each builds
 * its blocking query, applies its answer to the state, and keeps Consul's index, backoff and
 * per-watch rate limit; the scheduler starts what may start under the caps (blocking queries,
 * plain reads, lowered after a 429). Watcher thread only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/discovery-internal.h"
#include "core/err.h"
#include "core/log.h"

#define DEFAULT_WAIT_MS 300000      /* Consul's own default; changes do not wait for it */
#define BUFFER_SIZE 4096            /* curl's receive buffer per handle (default 16 KiB) */
#define MIN_SHARED_WAIT_MS 1000     /* wait when there are more watches than slots */
#define RATE_REFILL_MS 1000         /* per watch: burst 2, then one request per second */
#define RATE_BURST 2.0
#define DCS_REFRESH_MS 60000
#define SWEEP_MS 60000              /* more watches than the cap: each is read about this often */
#define PUSHBACK_MIN 16              /* the cap never goes below this after 429s */
#define PUSHBACK_RECOVER_MS 600000  /* 10 min without a 429: the cap doubles (up to its value) */
#define MAX_BODY (64u << 20)        /* with its NUL */

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    watch_t *w = ud;
    size_t n = sz * nm;
    static const char key[] = "x-consul-index:";
    if (n > sizeof(key) - 1 && !strncasecmp(p, key, sizeof(key) - 1)) {
        uint64_t v = 0;
        for (size_t i = sizeof(key) - 1; i < n; i++) {
            if (p[i] >= '0' && p[i] <= '9') {
                if (v > (UINT64_MAX - 9) / 10)
                    break;
                v = v * 10 + (uint64_t)(p[i] - '0');
            } else if (p[i] != ' ' && p[i] != '\t') {
                break;
            }
        }
        w->got_index = v;
    }
    return n;
}

watch_t *disc_add_watch(rv_disc_t *d, int kind, const char *svc, const char *dc)
{
    if (d->nw == d->capw) {
        uint32_t nc = d->capw ? d->capw * 2 : 64;
        watch_t **p = realloc(d->w, nc * sizeof(*p));
        if (!p)
            return NULL;
        d->w = p;
        d->capw = nc;
    }
    watch_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->kind = kind;
    w->shard = d->next_sh++ % d->nsh;
    w->svc = xstrdup(svc);
    w->dc = xstrdup(dc);
    w->tokens = RATE_BURST;
    w->tok_at = mono_ms();
    if ((svc && !w->svc) || (dc && !w->dc)) {
        free(w->svc);
        free(w->dc);
        free(w);
        return NULL;
    }
    d->w[d->nw++] = w;
    d->nhealth += kind == WK_HEALTH;
    return w;
}

void disc_watch_free(rv_disc_t *d, watch_t *w)
{
    if (w->h) {
        if (w->inflight) {
            curl_multi_remove_handle(d->sh[w->shard].multi, w->h);
            d->inflight--;
            d->inflight_blocking -= w->blocking;
        }
        curl_easy_cleanup(w->h);
    }
    if (w->failures)
        d->nfailing--;
    free(w->svc);
    free(w->dc);
    free(w->body.body);
    free(w);
}

/* Drop dead watches that are not in flight. */
void disc_sweep_watches(rv_disc_t *d)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < d->nw; i++) {
        watch_t *w = d->w[i];
        if (w->dead && !w->inflight)
            disc_watch_free(d, w);
        else
            d->w[k++] = w;
    }
    d->nw = k;
    if (d->cursor >= d->nw)
        d->cursor = 0;
}

static void kill_watch(rv_disc_t *d, watch_t *w)
{
    if (!w->dead && w->kind == WK_HEALTH)
        d->nhealth--;
    w->dead = true;
}

/* Health watches follow the state's (service, dc) pairs: add new ones, retire gone ones. */
static void sync_health_watches(rv_disc_t *d, const char *dc)
{
    rv_disc_state_t *st = d->st;
    for (uint32_t i = 0; i < d->nw; i++) {
        watch_t *w = d->w[i];
        if (w->kind != WK_HEALTH || w->dead || strcmp(w->dc, dc))
            continue;
        ssvc_t *s = disc_svc_get(st, w->svc, false);
        if (!s || !disc_sdc_get(s, dc, false))
            kill_watch(d, w);
    }
    /* new pairs (a pair's flag is set once its watch exists) */
    for (uint32_t i = 0; i < st->n; i++) {
        sdc_t *sd = disc_sdc_get(st->svcs[i], dc, false);
        if (!sd || sd->watched)
            continue;
        if (disc_add_watch(d, WK_HEALTH, st->svcs[i]->name, dc))
            sd->watched = true;
    }
}

static void url_escape(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s && o + 4 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
            out[o++] = (char)c;
        } else {
            snprintf(out + o, outlen - o, "%%%02X", c);
            o += 3;
        }
    }
    out[o] = '\0';
}

static int wait_for(const rv_disc_t *d, const watch_t *w)
{
    int wait = d->o.wait_ms > 0 ? d->o.wait_ms : DEFAULT_WAIT_MS;
    if (w->kind != WK_HEALTH)
        return wait;
    /* the service lists (one per datacenter) hold blocking slots too */
    uint32_t n = d->nhealth, slots = d->max_blocking;
    if (n + d->ndcs <= slots)
        return wait;
    /* more watches than slots: shorter waits so every service gets its turn */
    /* a sweep of every watch takes about min(wait, 60 s) */
    int64_t shared = (int64_t)(wait < SWEEP_MS ? wait : SWEEP_MS) * slots / (n + d->ndcs);
    return (int)(shared < MIN_SHARED_WAIT_MS ? MIN_SHARED_WAIT_MS : shared);
}

/* wait minus up to wait/16 at random: thousands of queries started together (the first
 * reads) would otherwise time out together at every period (Consul adds its own jitter on
 * top, up to wait/16, but not every server does). */
static int jittered(rv_disc_t *d, int wait)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return wait - (int)(d->rng % (uint64_t)(wait / 16 + 1));
}

static int start_watch(rv_disc_t *d, watch_t *w)
{
    char url[2048], esvc[1024] = "", edc[256] = "", q[512];
    size_t ql = 0;
    q[0] = '\0';
    if (w->dc) {
        url_escape(edc, sizeof(edc), w->dc);
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "%sdc=%s", ql ? "&" : "?", edc);
    }
    int wait = 0;
    if (w->kind != WK_DCS && w->index > 0) {
        wait = jittered(d, wait_for(d, w));
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "%sindex=%llu&wait=%dms", ql ? "&" : "?",
                               (unsigned long long)w->index, wait);
    }
    if (d->o.stale && w->kind != WK_DCS && ql < sizeof(q))
        snprintf(q + ql, sizeof(q) - ql, "%sstale", ql ? "&" : "?");
    if (w->kind == WK_DCS) {
        snprintf(url, sizeof(url), "%s/v1/catalog/datacenters", d->base);
    } else if (w->kind == WK_SERVICES) {
        snprintf(url, sizeof(url), "%s/v1/catalog/services%s", d->base, q);
    } else {
        url_escape(esvc, sizeof(esvc), w->svc);
        snprintf(url, sizeof(url), "%s/v1/health/service/%s%s", d->base, esvc, q);
    }
    if (!w->h && !(w->h = curl_easy_init()))
        return RV_ENOMEM;
    CURL *h = w->h;
    curl_easy_reset(h);
    w->body.len = 0;
    w->body.max = MAX_BODY - 1;
    w->body.too_big = false;
    w->got_index = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, rv_httpc_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &w->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, w);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(wait + wait / 16 + 5000));
    curl_easy_setopt(h, CURLOPT_PRIVATE, w);
    w->err[0] = 0;
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, w->err);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)BUFFER_SIZE);
    if (d->hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, d->hdrs);
    if (d->basic_auth)
        curl_easy_setopt(h, CURLOPT_USERPWD, d->basic_auth);
    rv_httpc_tls(h, d->ca_file, d->ca_path, d->cert_file, d->key_file, d->insecure, d->connect_to);
    if (curl_multi_add_handle(d->sh[w->shard].multi, h) != CURLM_OK)
        return RV_EIO;
    w->inflight = true;
    w->blocking = wait > 0;
    d->inflight++;
    d->inflight_blocking += w->blocking;
    return 0;
}

static void set_failing(rv_disc_t *d, watch_t *w, bool failing)
{
    bool was = w->failures > 0;
    if (failing && !was)
        d->nfailing++;
    else if (!failing && was)
        d->nfailing--;
}

static void mark_dirty(rv_disc_t *d, int64_t now)
{
    if (!d->dirty)
        d->dirty_at = now;
    d->dirty = true;
}

/* Datacenters from /v1/catalog/datacenters (JSON array of strings). */
static void apply_dcs(rv_disc_t *d, const char *body, size_t len)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    for (size_t i = 0; i < json_array_size(root); i++) {
        const char *dc = json_string_value(json_array_get(root, i));
        if (!dc || !dc[0])
            continue;
        bool have = false;
        for (uint32_t k = 0; k < d->ndcs && !have; k++)
            have = !strcmp(d->dcs[k], dc);
        if (have)
            continue;
        char **p = realloc(d->dcs, (d->ndcs + 1) * sizeof(*p));
        if (!p)
            break;
        d->dcs = p;
        if (!(p[d->ndcs] = strdup(dc)))
            break;
        d->ndcs++;
        disc_add_watch(d, WK_SERVICES, NULL, dc);
        rv_log_info("consul discovery: watching datacenter %s", dc);
    }
    json_decref(root);
}

/*
 * Consul answered 429 Too Many Requests: its RPC rate limit (protocols.md 1), or, on the
 * agents that answer it so, its per-client connection limit (limits.http_max_conns_per_client,
 * 200 by default) - each held query is a connection. Hold fewer: the cap becomes 3/4 of the
 * queries open now (at least PUSHBACK_MIN) and plain reads a quarter of that, so the services
 * take turns (wait_for) instead of failing; logged. 10 min without a 429 doubles it back
 * (disc_recover_cap), up to the configured cap.
 */
static void push_back(rv_disc_t *d, int64_t now)
{
    uint32_t open = d->inflight + 1;
    uint32_t cap = open * 3 / 4;
    if (cap < PUSHBACK_MIN)
        cap = PUSHBACK_MIN;
    d->pushed_back_at = now;
    if (cap >= d->max_blocking)
        return;
    rv_log_warn("consul discovery: Consul answered 429 Too Many Requests with %u queries open (rate limit, or "
                "limits.http_max_conns_per_client); holding at most %u blocking queries, services take turns",
                open, cap);
    d->max_blocking = cap;
    d->max_plain = cap / 4 < PLAIN_INFLIGHT ? (cap / 4 ? cap / 4 : 1) : PLAIN_INFLIGHT;
}

void disc_recover_cap(rv_disc_t *d, int64_t now)
{
    if (!d->pushed_back_at || now - d->pushed_back_at < PUSHBACK_RECOVER_MS)
        return;
    uint32_t cap = d->max_blocking * 2;
    d->max_blocking = cap > d->cap_blocking ? d->cap_blocking : cap;
    d->max_plain = d->max_blocking / 4 < PLAIN_INFLIGHT ? d->max_blocking / 4 + 1 : PLAIN_INFLIGHT;
    d->pushed_back_at = d->max_blocking < d->cap_blocking ? now : 0;
    rv_log_info("consul discovery: no 429 from Consul for %d min; holding up to %u blocking queries",
                PUSHBACK_RECOVER_MS / 60000, d->max_blocking);
}

void disc_finish(rv_disc_t *d, watch_t *w, CURLcode cc, int64_t now)
{
    long status = 0;
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(d->sh[w->shard].multi, w->h);
    w->inflight = false;
    d->inflight--;
    d->inflight_blocking -= w->blocking;
    w->blocking = false;
    if (w->dead)
        return;
    int rc = 0;
    if (cc == CURLE_OK && status == 429)
        push_back(d, now);
    if (cc != CURLE_OK || status != 200) {
        rc = RV_EIO;
        if (w->failures == 0 || rv_log_level >= RV_LOG_DEBUG) {
            char why[CURL_ERROR_SIZE + 96];
            if (cc != CURLE_OK && w->body.too_big)
                snprintf(why, sizeof(why), "answer too large");
            else if (cc != CURLE_OK)
                rv_httpc_why(why, sizeof(why), cc, w->err);
            else
                snprintf(why, sizeof(why), "HTTP %ld: %.100s", status, w->body.body ? w->body.body : "");
            rv_log_debug("consul discovery: %s %s%s%s failed: %s",
                         w->kind == WK_HEALTH ? "health of" : w->kind == WK_SERVICES ? "services of" : "datacenters",
                         w->svc ? w->svc : "", w->svc ? " in " : "", w->dc ? w->dc : "", why);
            if (d->nfailing == 0 && d->was_healthy)
                rv_log_warn("consul discovery: Consul unavailable (%s); keeping the last instances", why);
        }
    } else if (w->kind == WK_DCS) {
        apply_dcs(d, w->body.body ? w->body.body : "", w->body.len);
    } else if (w->kind == WK_SERVICES) {
        rc = rv_disc_set_services(d->st, w->dc, w->body.body ? w->body.body : "", w->body.len);
        if (rc >= 0) {
            sync_health_watches(d, w->dc);
            if (rc > 0)
                mark_dirty(d, now);
        }
    } else {
        rc = rv_disc_set_health(d->st, w->svc, w->dc, w->body.body ? w->body.body : "", w->body.len);
        if (rc > 0)
            mark_dirty(d, now);
    }
    if (rc < 0) {
        set_failing(d, w, true);
        w->failures++;
        /* after a failure the index may belong to a Consul that restarted (or lost its
         * leader): a query with an index above the server's would block for the whole wait,
         * so the next one is a plain read */
        w->index = 0;
        w->not_before = now + rv_consul_backoff_ms(w->failures, &d->rng);
        w->ok = false;
        return;
    }
    set_failing(d, w, false);
    w->failures = 0;
    w->ok = true;
    if (w->kind == WK_DCS) {
        w->not_before = now + DCS_REFRESH_MS;
        return;
    }
    w->index = rv_consul_next_index(w->index, w->got_index);
    w->not_before = now;
}

/* Token bucket per watch: burst RATE_BURST, refill one per RATE_REFILL_MS. */
static bool take_token(watch_t *w, int64_t now, int64_t *ready_at)
{
    w->tokens += (double)(now - w->tok_at) / RATE_REFILL_MS;
    if (w->tokens > RATE_BURST)
        w->tokens = RATE_BURST;
    w->tok_at = now;
    if (w->tokens >= 1.0) {
        w->tokens -= 1.0;
        return true;
    }
    *ready_at = now + (int64_t)((1.0 - w->tokens) * RATE_REFILL_MS) + 1;
    return false;
}

/*
 * Start what may start: plain reads (first reads, reads after an error) up to PLAIN_INFLIGHT
 * at once, blocking queries up to max_blocking, round robin from the cursor so that no watch
 * starves when there are more watches than blocking slots. The cursor moves once, after the
 * scan, to just past the last blocking watch started. Returns when the next scan is due.
 */
int64_t disc_start_due(rv_disc_t *d, int64_t now)
{
    int64_t next = now + 1000;
    uint32_t nw = d->nw;
    bool started_any = false;
    uint32_t last_started = 0;
    uint32_t inflight_plain = d->inflight - d->inflight_blocking;
    for (uint32_t k = 0; k < nw; k++) {
        if (inflight_plain >= d->max_plain && d->inflight_blocking >= d->max_blocking)
            break;
        uint32_t i = (d->cursor + k) % nw;
        watch_t *w = d->w[i];
        bool plain = w->kind == WK_DCS || w->index == 0;
        if (w->inflight || w->dead)
            continue;
        if (plain ? inflight_plain >= d->max_plain : d->inflight_blocking >= d->max_blocking)
            continue;
        if (w->not_before > now) {
            if (w->not_before < next)
                next = w->not_before;
            continue;
        }
        int64_t ready;
        if (!take_token(w, now, &ready)) {
            w->not_before = ready;
            if (ready < next)
                next = ready;
            continue;
        }
        if (start_watch(d, w) != 0) {
            w->not_before = now + 1000;
            continue;
        }
        inflight_plain += plain;
        /* Only blocking starts move the cursor: a plain read (a first read, or the retry
         * after a failure) can sit anywhere, and letting it pull the cursor back would
         * restart the round robin from there and starve the watches at the end. */
        if (!plain) {
            started_any = true;
            last_started = i;
        }
    }
    if (started_any)
        d->cursor = (last_started + 1) % nw;
    return next;
}
