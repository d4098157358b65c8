/*
 * kvsource.c - the Consul KV watcher thread (kvsource.h): blocking recursive reads of
 * <root>/, listing handed to the control thread, health kept for /ready and /metrics.
 */
#include "control/kvsource.h"
#include "control/watcher.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

#define BUCKET_BURST 2.0
#define BUCKET_RATE 10.0        /* tokens per second */

struct rv_kvsource_s {
    rv_consul_t *client;
    char *root;
    char *path;                 /* "kv/<root>/?recurse" */
    int wait_ms;
    rv_watcher_t w;             /* thread, eventfd, stop flag, latest rv_kv_listing_t not yet taken */
    uint64_t rng;
};

/* Process-wide health, for the admin thread. */
static pthread_mutex_t health_mu = PTHREAD_MUTEX_INITIALIZER;
/* -1 no source, 0 unhealthy (or not yet read), 1 healthy, 2 degraded: reads answer (?stale)
 * but Consul says it has no known leader (X-Consul-KnownLeader: false) */
static int health_state = -1;
static char health_detail[384];
static uint64_t reads_ok, reads_err;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- listing ---------------------------------------------------------------------------- */

void rv_kv_listing_free(rv_kv_listing_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free((char *)l->pairs[i].key);
        free((char *)l->pairs[i].value);
    }
    free(l->pairs);
    free(l);
}

long rv_base64_decode(const char *in, size_t len, unsigned char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    long o = 0;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '+')
            v = 62;
        else if (ch == '/')
            v = 63;
        else if (ch == '=') {
            pad++;
            continue;
        } else
            return -1;
        if (pad)
            return -1;      /* data after padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (pad > 2 || (len % 4 != 0) || bits >= 6)
        return -1;
    return o;
}

int rv_kv_parse_listing(const char *body, size_t len, rv_kv_listing_t **out, char *err, size_t errlen)
{
    json_error_t jerr;
    int rc = RV_EPARSE;
    *out = NULL;
    rv_kv_listing_t *l = calloc(1, sizeof(*l));
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!l) {
        rc = RV_ENOMEM;
        goto fail;
    }
    if (!root) {
        snprintf(err, errlen, "invalid JSON in the KV listing: %s (line %d)", jerr.text, jerr.line);
        goto fail;
    }
    if (!json_is_array(root)) {
        snprintf(err, errlen, "the KV listing is not a JSON array");
        goto fail;
    }
    size_t n = json_array_size(root);
    if (n && !(l->pairs = calloc(n, sizeof(*l->pairs)))) {
        rc = RV_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(root, i);
        json_t *k = json_object_get(e, "Key"), *v = json_object_get(e, "Value");
        json_t *mi = json_object_get(e, "ModifyIndex");
        if (!json_is_string(k) || (v && !json_is_string(v) && !json_is_null(v))) {
            snprintf(err, errlen, "KV listing entry %zu has no string Key or a Value that is not a string", i);
            goto fail;
        }
        rv_kv_pair_t *p = &l->pairs[l->n];
        if (!(p->key = strdup(json_string_value(k)))) {
            rc = RV_ENOMEM;
            goto fail;
        }
        l->n++;
        p->modify_index = json_is_integer(mi) ? (uint64_t)json_integer_value(mi) : 0;
        if (json_is_string(v)) {
            size_t vl = json_string_length(v);
            unsigned char *buf = malloc(vl / 4 * 3 + 4);
            if (!buf) {
                rc = RV_ENOMEM;
                goto fail;
            }
            long dl = rv_base64_decode(json_string_value(v), vl, buf);
            if (dl < 0) {
                free(buf);
                snprintf(err, errlen, "KV value of %s is not valid base64", p->key);
                goto fail;
            }
            buf[dl] = '\0';
            p->value = (char *)buf;
            p->len = (size_t)dl;
        }
    }
    json_decref(root);
    *out = l;
    return 0;
fail:
    if (root)
        json_decref(root);
    rv_kv_listing_free(l);
    return rc;
}

/* ---- health ------------------------------------------------------------------------------ */

static void set_health(int state, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_health(int state, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&health_mu);
    health_state = state;
    va_start(ap, fmt);
    vsnprintf(health_detail, sizeof(health_detail), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&health_mu);
}

bool rv_kvsource_healthy(char *detail, size_t n)
{
    pthread_mutex_lock(&health_mu);
    int st = health_state;
    if (detail && n)
        snprintf(detail, n, "%s", st < 0 ? "" : health_detail);
    pthread_mutex_unlock(&health_mu);
    return st < 0 || st == 1;
}

bool rv_kvsource_active(void)
{
    pthread_mutex_lock(&health_mu);
    int st = health_state;
    pthread_mutex_unlock(&health_mu);
    return st >= 0;
}

void rv_kvsource_prometheus(FILE *f)
{
    pthread_mutex_lock(&health_mu);
    int st = health_state;
    uint64_t ok = reads_ok, bad = reads_err;
    pthread_mutex_unlock(&health_mu);
    if (st < 0)
        return;
    fprintf(f,
            "# HELP rivet_config_source_healthy Whether the config source answered its last read (1) or not (0).\n"
            "# TYPE rivet_config_source_healthy gauge\n"
            "rivet_config_source_healthy{source=\"consul\"} %d\n"
            "# HELP rivet_config_source_reads_total Reads of the config source by result.\n"
            "# TYPE rivet_config_source_reads_total counter\n"
            "rivet_config_source_reads_total{source=\"consul\",result=\"ok\"} %llu\n"
            "rivet_config_source_reads_total{source=\"consul\",result=\"error\"} %llu\n"
            "# HELP rivet_config_source_known_leader Whether the config source's last answer named a known leader (1) or not (0: degraded).\n"
            "# TYPE rivet_config_source_known_leader gauge\n"
            "rivet_config_source_known_leader{source=\"consul\"} %d\n",
            st == 1, (unsigned long long)ok, (unsigned long long)bad, st != 2);
}

/* ---- watcher thread ------------------------------------------------------------------------ */

static void free_listing(void *l)
{
    rv_kv_listing_free(l);
}

static void cancel_client(void *c)
{
    rv_consul_cancel(c);
}

static void *watch(void *arg)
{
    rv_kvsource_t *k = arg;
    uint64_t index = 0;
    unsigned failures = 0;
    double tokens = BUCKET_BURST;
    int64_t last = now_ms();
    int state = -1;                 /* -1 never read, 0 failing, 1 healthy (for log-once) */
    char *prev = NULL;              /* last body handed over, to skip identical listings */
    size_t prevlen = 0;
    int64_t down_since = 0;
    bool was_leaderless = false;    /* for log-once on the degraded state */

    while (!rv_watcher_stopping(&k->w)) {
        /* token bucket: the loop never runs faster than BUCKET_RATE, whatever Consul does */
        int64_t t = now_ms();
        tokens += (double)(t - last) * BUCKET_RATE / 1000.0;
        if (tokens > BUCKET_BURST)
            tokens = BUCKET_BURST;
        last = t;
        if (tokens < 1.0) {
            if (rv_watcher_nap(&k->w, (int64_t)((1.0 - tokens) * 1000.0 / BUCKET_RATE) + 1))
                break;
            continue;
        }
        tokens -= 1.0;

        rv_consul_resp_t r;
        int rc = rv_consul_get(k->client, k->path, index, k->wait_ms, &r);
        if (rv_watcher_stopping(&k->w)) {
            rv_consul_resp_free(&r);
            break;
        }
        char why[300] = "";
        rv_kv_listing_t *l = NULL;
        if (rc == 0 && r.status == 200) {
            if (rv_kv_parse_listing(r.body, r.len, &l, why, sizeof(why)) != 0 && !why[0])
                snprintf(why, sizeof(why), "out of memory");
        } else if (rc == 0 && r.status == 404) {
            l = calloc(1, sizeof(*l));   /* no key under the root: an empty config */
            if (!l)
                snprintf(why, sizeof(why), "out of memory");
        } else {
            snprintf(why, sizeof(why), "%s", r.err[0] ? r.err : rv_strerror(rc));
        }
        if (l) {
            l->index = r.index;
            pthread_mutex_lock(&health_mu);
            reads_ok++;
            pthread_mutex_unlock(&health_mu);
            bool same = state >= 0 && prev && r.status == 200 && r.len == prevlen && !memcmp(prev, r.body, r.len);
            bool empty_again = state >= 0 && !prev && r.status == 404;
            if (same || empty_again) {
                rv_kv_listing_free(l);
            } else {
                free(prev);
                prev = NULL;
                prevlen = 0;
                if (r.status == 200) {
                    prev = r.body;      /* keep the bytes: the next identical answer is no change */
                    prevlen = r.len;
                    r.body = NULL;
                }
                rv_watcher_hand_over(&k->w, l);
            }
            uint64_t next = rv_consul_next_index(index, r.index);
            if (next == 0 && index != 0)
                rv_log_info("consul kv: index went backwards (%llu -> %llu); reading again from scratch",
                            (unsigned long long)index, (unsigned long long)r.index);
            index = next;
            failures = 0;
            if (state != 1) {
                if (state == 0)
                    rv_log_info("consul kv: %s/ readable again after %.1f s; catching up", k->root,
                                (double)(now_ms() - down_since) / 1000.0);
                else
                    rv_log_info("consul kv: watching %s/ (index %llu)", k->root, (unsigned long long)r.index);
                state = 1;
            }
            bool leaderless = r.has_known_leader && !r.known_leader;
            if (leaderless != was_leaderless) {
                if (leaderless)
                    rv_log_warn("consul kv: Consul reports no known leader (X-Consul-KnownLeader: false); "
                                "serving its stale answers, source degraded");
                else if (was_leaderless)
                    rv_log_info("consul kv: Consul has a known leader again");
                was_leaderless = leaderless;
            }
            if (leaderless)
                set_health(2, "consul kv %s/: degraded: no known leader (stale reads, index %llu); serving them",
                           k->root, (unsigned long long)r.index);
            else
                set_health(1, "consul kv %s/: healthy (index %llu)", k->root, (unsigned long long)r.index);
            if (l == NULL || same || empty_again) {
                /* nothing new for the control thread */
            }
            rv_consul_resp_free(&r);
            continue;
        }
        pthread_mutex_lock(&health_mu);
        reads_err++;
        pthread_mutex_unlock(&health_mu);
        failures++;
        if (state != 0) {
            rv_log_error("consul kv: cannot read %s/: %s; keeping the last good config, retrying with backoff",
                         k->root, why);
            down_since = now_ms();
            state = 0;
            set_health(0, "consul kv %s/: unhealthy: %s", k->root, why);
            rv_watcher_wake(&k->w);
        } else {
            set_health(0, "consul kv %s/: unhealthy for %.0f s: %s", k->root,
                       (double)(now_ms() - down_since) / 1000.0, why);
        }
        rv_consul_resp_free(&r);
        int64_t d = rv_consul_backoff_ms(failures, &k->rng);
        if (rv_watcher_nap(&k->w, d))
            break;
    }
    free(prev);
    return NULL;
}

/* "kv/<root>/?recurse" with the root percent-encoded outside [A-Za-z0-9-._~/]. */
static char *kv_path(const char *root)
{
    size_t n = strlen(root) * 3 + 32;
    char *p = malloc(n);
    if (!p)
        return NULL;
    size_t o = (size_t)snprintf(p, n, "kv/");
    for (const char *s = root; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  strchr("-._~/", ch);
        o += (size_t)snprintf(p + o, n - o, ok ? "%c" : "%%%02X", ch);
    }
    snprintf(p + o, n - o, "/?recurse");
    return p;
}

rv_kvsource_t *rv_kvsource_start(const rv_kvsource_opts_t *o)
{
    rv_kvsource_t *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    rv_watcher_init(&k->w, free_listing);
    k->wait_ms = o->wait_ms > 0 ? o->wait_ms : 300000;
    if (k->wait_ms > 300000)
        k->wait_ms = 300000;
    k->root = strdup(o->root);
    k->path = k->root ? kv_path(k->root) : NULL;
    k->client = rv_consul_new(o->consul);
    k->w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    k->rng = rv_watcher_seed(k);
    if (!k->root || !k->path || !k->client || k->w.efd < 0)
        goto fail;
    set_health(0, "consul kv %s/: waiting for the first read", k->root);
    if (rv_watcher_run(&k->w, watch, k) != 0)
        goto fail;
    return k;
fail:
    rv_kvsource_stop(k);
    return NULL;
}

int rv_kvsource_fd(const rv_kvsource_t *k)
{
    return k->w.efd;
}

int rv_kvsource_take(rv_kvsource_t *k, rv_kv_listing_t **out)
{
    void *l;
    int r = rv_watcher_take(&k->w, &l);
    *out = l;
    return r;
}

void rv_kvsource_stop(rv_kvsource_t *k)
{
    if (!k)
        return;
    rv_watcher_stop(&k->w, cancel_client, k->client);
    set_health(-1, "%s", "");
    rv_consul_free(k->client);
    rv_watcher_destroy(&k->w);
    free(k->root);
    free(k->path);
    free(k);
}
