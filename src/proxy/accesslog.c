/*
 * accesslog.c - one line per request on stdout, Envoy-like text or JSON lines.
 *
 * Each worker appends to its own 64 KiB buffer and writes it once per loop iteration (so a
 * busy worker makes one write(2) for many requests). The worker's descriptor is a separate
 * non-blocking open of stdout when stdout is a pipe or terminal, so a slow reader can never
 * stall a worker: when the buffer cannot be flushed, new lines are dropped and counted
 * (rivet_access_log_dropped_total). Writes to a pipe are cut at line boundaries below
 * PIPE_BUF so that the lines of different workers never interleave.
 *
 * Text format:
 * [START_TIME] "METHOD PATH PROTOCOL" STATUS FLAGS BYTES_RECEIVED BYTES_SENT DURATION_MS
 * UPSTREAM_HOST "X-REQUEST-ID" "AUTHORITY" ROUTE UPSTREAM_CLUSTER
 * "UPSTREAM_TRANSPORT_FAILURE_REASON" DOWNSTREAM_TLS_VERSION "REQUESTED_SERVER_NAME"
 * "DOWNSTREAM_PEER_CERT"
 *
 * UPSTREAM_TRANSPORT_FAILURE_REASON (Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON%) says why the
 * upstream TLS handshake failed, e.g. "certificate verify failed: self-signed certificate";
 * "-" otherwise. On a TLS listener, DOWNSTREAM_TLS_VERSION is "TLSv1.3"/"TLSv1.2",
 * REQUESTED_SERVER_NAME the client's SNI, and DOWNSTREAM_PEER_CERT the verified client
 * certificate as the forwarded x-forwarded-client-cert element (Hash=<sha256>;Subject="...";
 * URI=...;DNS=...); each "-" when absent. JSON keys: downstream_tls_version,
 * requested_server_name, downstream_peer_cert (null when absent).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proxy/dp.h"

#define LOG_BUF_SIZE (64u * 1024u)
#define LOG_LINE_MAX (12u * 1024u)     /* reserve per line; long fields are truncated */
#define LOG_FIELD_MAX 2048u

size_t rv_dp_fmt_addr(const struct sockaddr *sa, char *out, size_t cap, bool with_port)
{
    char ip[INET6_ADDRSTRLEN] = "-";
    unsigned port = 0;
    bool v6 = false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        port = ntohs(a->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], ip, sizeof(ip));  /* dual-stack client */
        } else {
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
            v6 = true;
        }
    }
    int n = with_port ? snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", ip, port) : snprintf(out, cap, "%s", ip);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

int rv_dp_log_init(rv_dp_worker_t *w, const rv_dataplane_opts_t *o)
{
    w->log_on = o->access_log;
    w->log_json = o->access_log_json;
    w->log_fd = -1;
    if (!w->log_on)
        return 0;
    w->logbuf = malloc(LOG_BUF_SIZE);
    if (!w->logbuf)
        return -1;
    struct stat st;
    if (fstat(1, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
        /* a new open file description: O_NONBLOCK here does not affect stdout's users */
        w->log_fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        w->log_pipe = S_ISFIFO(st.st_mode);
    }
    if (w->log_fd < 0)
        w->log_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (w->log_fd < 0)
        w->log_on = false;
    return 0;
}

void rv_dp_log_free(rv_dp_worker_t *w)
{
    if (w->log_fd >= 0)
        close(w->log_fd);
    w->log_fd = -1;
    free(w->logbuf);
    w->logbuf = NULL;
}

/* Write the buffered lines (as many as the descriptor takes now). Worker. */
void rv_dp_log_flush(rv_dp_worker_t *w)
{
    uint32_t off = 0;
    while (off < w->log_len) {
        size_t n = w->log_len - off;
        if (w->log_pipe && n > PIPE_BUF) {
            /* cut after the last newline that keeps the write atomic */
            size_t cut = PIPE_BUF;
            while (cut > 0 && w->logbuf[off + cut - 1] != '\n')
                cut--;
            n = cut ? cut : PIPE_BUF;
        }
        ssize_t r = write(w->log_fd, w->logbuf + off, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        off += (uint32_t)r;
    }
    if (off) {
        memmove(w->logbuf, w->logbuf + off, w->log_len - off);
        w->log_len -= off;
    }
}

typedef struct out_s {
    char *p;
    size_t n, cap;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (n > o->cap - o->n)
        n = o->cap - o->n;
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void puts_(out_t *o, const char *s) { put(o, s, strlen(s)); }

static void putu(out_t *o, uint64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    put(o, b, (size_t)n);
}

/* A request-derived field: quotes, backslashes and non-printable bytes escaped (\xHH in
 * text, \u00HH in JSON), truncated to LOG_FIELD_MAX input bytes. */
static void put_esc(out_t *o, rv_str_t s, bool json)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = RV_MIN(s.len, LOG_FIELD_MAX);
    for (size_t i = 0; i < n && o->n + 6 < o->cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') {
            o->p[o->n++] = '\\';
            o->p[o->n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            if (json) {
                memcpy(o->p + o->n, "\\u00", 4);
                o->n += 4;
            } else {
                o->p[o->n++] = '\\';
                o->p[o->n++] = 'x';
            }
            o->p[o->n++] = hex[c >> 4];
            o->p[o->n++] = hex[c & 15];
        } else {
            o->p[o->n++] = (char)c;
        }
    }
}

static size_t fmt_flags(uint32_t f, char *b, size_t cap)
{
    static const char *const names[] = { "NR", "UH", "UF", "UC", "UT", "URX", "DC", "UPE", "DPE", "SI", "OM", "UO" };
    size_t n = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(names); i++)
        if (f & (1u << i)) {
            size_t l = strlen(names[i]);
            if (n + l + 2 > cap)
                break;
            if (n)
                b[n++] = ',';
            memcpy(b + n, names[i], l);
            n += l;
        }
    if (!n)
        b[n++] = '-';
    return n;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" for a wall time in ms; the date part is cached per second. */
static size_t fmt_time(rv_dp_worker_t *w, int64_t ms, char *b)
{
    int64_t sec = ms / 1000;
    if (sec != w->date_sec || !w->date[0]) {
        struct tm tm;
        time_t t = (time_t)sec;
        gmtime_r(&t, &tm);
        snprintf(w->date, sizeof(w->date), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        w->date_sec = sec;
    }
    int n = snprintf(b, 32, "%.19s.%03dZ", w->date, (int)(ms % 1000));
    return (size_t)n;
}

/* Append the access log line of the request ending on d. Worker. */
void rv_dp_log_request(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    if (!w->log_on)
        return;
    if (LOG_BUF_SIZE - w->log_len < LOG_LINE_MAX) {
        rv_dp_log_flush(w);
        if (LOG_BUF_SIZE - w->log_len < LOG_LINE_MAX) {
            rv_ctr_add(&w->st->log_dropped, 1);
            return;
        }
    }
    out_t o = { w->logbuf + w->log_len, 0, LOG_LINE_MAX };
    char tb[32], fb[64], hb[64];
    size_t tl = fmt_time(w, s->start_wall_ms, tb);
    size_t fl = fmt_flags(s->flags, fb, sizeof(fb));
    size_t hl = 0;
    if (s->cluster && s->ep >= 0 && (uint32_t)s->ep < s->cluster->neps)
        hl = rv_dp_fmt_addr((const struct sockaddr *)&s->cluster->eps[s->ep].addr, hb, sizeof(hb), true);
    rv_str_t proto = s->method.len ? (s->minor ? RV_STR("HTTP/1.1") : RV_STR("HTTP/1.0")) : RV_STR_NULL;
    rv_str_t route = s->route ? s->route->name : RV_STR_NULL;
    rv_str_t cluster = s->cluster ? s->cluster->name : RV_STR_NULL;
    uint64_t dur = (uint64_t)RV_MAX(0, rv_loop_now(&w->loop) - s->start_ms);
    rv_str_t tlsv = RV_STR_NULL, sni = RV_STR_NULL, peer = RV_STR_NULL;
    if (d->tls) {
        tlsv = rv_cstr(rv_tls_version(&d->tls->t));
        sni = rv_cstr(rv_tls_sni(&d->tls->t));
        peer = rv_dp_client_identity(d);
    }
    if (!w->log_json) {
        put(&o, "[", 1);
        put(&o, tb, tl);
        put(&o, "] \"", 3);
        if (s->method.len) {
            put_esc(&o, s->method, false);
            put(&o, " ", 1);
            put_esc(&o, s->target, false);
            put(&o, " ", 1);
            put(&o, proto.ptr, proto.len);
        } else {
            puts_(&o, "- - -");
        }
        put(&o, "\" ", 2);
        putu(&o, (uint64_t)s->status);
        put(&o, " ", 1);
        put(&o, fb, fl);
        put(&o, " ", 1);
        putu(&o, s->req_bytes);
        put(&o, " ", 1);
        putu(&o, s->resp_bytes);
        put(&o, " ", 1);
        putu(&o, dur);
        put(&o, " ", 1);
        put(&o, hl ? hb : "-", hl ? hl : 1);
        put(&o, " \"", 2);
        if (s->reqid.len)
            put_esc(&o, s->reqid, false);
        else
            put(&o, "-", 1);
        put(&o, "\" \"", 3);
        if (s->host.len)
            put_esc(&o, s->host, false);
        else
            put(&o, "-", 1);
        put(&o, "\" ", 2);
        if (route.len)
            put_esc(&o, route, false);
        else
            put(&o, "-", 1);
        put(&o, " ", 1);
        if (cluster.len)
            put_esc(&o, cluster, false);
        else
            put(&o, "-", 1);
        put(&o, " \"", 2);
        if (s->up_fail.len)
            put_esc(&o, s->up_fail, false);
        else
            put(&o, "-", 1);
        put(&o, "\" ", 2);
        if (tlsv.len)
            put_esc(&o, tlsv, false);
        else
            put(&o, "-", 1);
        put(&o, " \"", 2);
        if (sni.len)
            put_esc(&o, sni, false);
        else
            put(&o, "-", 1);
        put(&o, "\" \"", 3);
        if (peer.len)
            put_esc(&o, peer, false);
        else
            put(&o, "-", 1);
        put(&o, "\"\n", 2);
    } else {
        const struct {
            const char *key;
            rv_str_t v;
        } strs[] = {
            { "\"method\":", s->method },          { ",\"path\":", s->target },
            { ",\"protocol\":", proto },            { ",\"upstream_host\":", rv_str(hb, hl) },
            { ",\"x_request_id\":", s->reqid },     { ",\"authority\":", s->host },
            { ",\"route_name\":", route },          { ",\"upstream_cluster\":", cluster },
            { ",\"upstream_transport_failure_reason\":", s->up_fail },
            { ",\"downstream_tls_version\":", tlsv }, { ",\"requested_server_name\":", sni },
            { ",\"downstream_peer_cert\":", peer },
        };
        put(&o, "{\"start_time\":\"", 15);
        put(&o, tb, tl);
        put(&o, "\",", 2);
        for (size_t i = 0; i < RV_ARRAY_LEN(strs); i++) {
            puts_(&o, strs[i].key);
            if (strs[i].v.len) {
                put(&o, "\"", 1);
                put_esc(&o, strs[i].v, true);
                put(&o, "\"", 1);
            } else {
                puts_(&o, "null");
            }
        }
        puts_(&o, ",\"response_code\":");
        putu(&o, (uint64_t)s->status);
        puts_(&o, ",\"response_flags\":\"");
        put(&o, fb, fl);
        puts_(&o, "\",\"bytes_received\":");
        putu(&o, s->req_bytes);
        puts_(&o, ",\"bytes_sent\":");
        putu(&o, s->resp_bytes);
        puts_(&o, ",\"duration\":");
        putu(&o, dur);
        puts_(&o, "}\n");
    }
    if (o.n == o.cap)
        o.p[o.n - 1] = '\n';    /* truncated line still ends a line */
    w->log_len += (uint32_t)o.n;
}
