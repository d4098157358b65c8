/*
 * conn.c - downstream HTTP/1.1 connections: reading and parsing request heads, routing, the
 * request body (Content-Length or chunked, scanned in place), local replies (direct
 * responses, redirects, errors), writing responses with writev, keep-alive, pipelining
 * (requests are served in order, one at a time; the next one waits in the input buffer),
 * timeouts and the end of each request (access log, counters, snapshot unpin).
 *
 * Buffer layout of conn->in while a request is in flight:
 *     [0, head_len)            the request head; every parsed slice points here
 *     [head_len, body_fwd)     body already forwarded, kept only for a replay (s->retain)
 *     [body_fwd, body_scan)    body received, not yet forwarded upstream
 *     [body_scan, in_len)      bytes after the body: the next pipelined request
 * Forwarded body bytes are dropped by moving the tail down to head_len (compaction), so a
 * body of any size streams through this one 64 KiB buffer.
 *
 * Events: sockets are registered edge-triggered once; can_read/can_write remember readiness
 * until a syscall returns EAGAIN (or a short count), so interest never has to be changed
 * with epoll_ctl. rv_dp_pump() runs every step until none makes progress.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sock.h"
#include "core/err.h"
#include "core/regex.h"
#include "http/path.h"
#include "proxy/dp.h"
#include "proxy/rewrite.h"
#include "proxy/router.h"
#include "tls/server.h"

static const char resp_oom[] = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 13\r\n"
                               "content-type: text/plain\r\nconnection: close\r\n\r\nout of memory";

static void d_on_io(rv_loop_t *loop, rv_io_t *io, uint32_t events);
static void d_on_timer(rv_loop_t *loop, rv_timer_t *t);

static void free_tls(rv_dp_conn_t *d)
{
    if (!d->tls)
        return;
    rv_tls_free(&d->tls->t);
    free(d->tls->xfcc);
    free(d->tls);
    d->tls = NULL;
}

/* After an RV_EAGAIN or a short count from the TLS layer: forget the readiness it waits for. */
static void tls_blocked(rv_dp_conn_t *d)
{
    int want = rv_tls_want(&d->tls->t);
    if (want == RV_TLS_WANT_READ)
        d->can_read = false;
    else if (want == RV_TLS_WANT_WRITE)
        d->can_write = false;
}

rv_str_t rv_dp_client_identity(rv_dp_conn_t *d)
{
    rv_dp_tls_t *t = d->tls;
    if (!t)
        return RV_STR_NULL;
    if (t->xfcc_len < 0) {
        char buf[RV_DP_XFCC_MAX];  /* a longer identity keeps a prefix of its SANs (server.h) */
        int n = rv_tls_peer_xfcc(&t->t, buf, sizeof(buf));
        t->xfcc_len = 0;
        if (n > 0 && (t->xfcc = malloc((size_t)n))) {
            memcpy(t->xfcc, buf, (size_t)n);
            t->xfcc_len = n;
        }
    }
    return rv_str(t->xfcc, (size_t)t->xfcc_len);
}

/* ---- connection life cycle ----------------------------------------------------------- */

/* Take over an accepted socket. Worker. On any failure the socket is closed. */
void rv_dp_conn_accepted(rv_dp_worker_t *w, rv_dp_listener_t *l, int fd, const struct sockaddr *sa)
{
    rv_dp_conn_t *d = w->free_conns;
    if (d) {
        w->free_conns = d->qnext;
        w->nfree_conns--;
    } else {
        d = malloc(sizeof(*d));
        if (!d) {
            rv_ctr_add(&w->st->oom, 1);
            close(fd);
            return;
        }
    }
    memset(d, 0, sizeof(*d));
    d->w = w;
    d->l = l;
    rv_timer_init(&d->timer, d_on_timer);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    d->peer_len = (uint8_t)rv_dp_fmt_addr(sa, d->peer, sizeof(d->peer), false);
    if (l->cfg && l->cfg->ssl) {
        /* a TLS listener: the handshake runs inside the first reads, bounded by the header
         * timeout armed below; without usable contexts the connection is refused */
        d->tls = l->cfg->tls ? malloc(sizeof(*d->tls)) : NULL;
        if (!d->tls || rv_tls_new(&d->tls->t, rv_tls_server_ctx(l->cfg->tls), fd, true, NULL) < 0) {
            if (l->cfg->tls)
                rv_ctr_add(&w->st->oom, 1);
            free(d->tls);
            d->tls = NULL;
            close(fd);
            d->qnext = w->free_conns;
            w->free_conns = d;
            w->nfree_conns++;
            return;
        }
        d->tls->xfcc = NULL;
        d->tls->xfcc_len = -1;
        d->tls->counted = false;
    }
    if (rv_io_add(&w->loop, &d->io, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, d_on_io) < 0) {
        free_tls(d);
        close(fd);
        d->qnext = w->free_conns;
        w->free_conns = d;
        w->nfree_conns++;
        return;
    }
    l->nconns++;
    d->next = w->conns;
    if (w->conns)
        w->conns->prev = d;
    w->conns = d;
    w->nconns++;
    rv_gauge_add(&w->st->conns_active, 1);
    rv_ctr_add(&w->st->conns_total, 1);
    d->state = DS_IDLE;
    d->can_write = true;
    d->last_in = d->last_any = rv_loop_now(&w->loop);
    /* a fresh connection must send its head within the header timeout */
    rv_timer_after(&w->loop, &d->timer, DP_HEADER_TIMEOUT_MS);
}

/* Release a closed connection's memory (after the loop iteration that closed it). */
void rv_dp_conn_free(rv_dp_worker_t *w, rv_dp_conn_t *d)
{
    if (w->nfree_conns < 1024) {
        d->qnext = w->free_conns;
        w->free_conns = d;
        w->nfree_conns++;
    } else {
        free(d);
    }
}

static void end_request(rv_dp_conn_t *d);

/* Close the socket now; the struct is freed after this iteration (events may be pending). */
static void d_close(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    if (d->dead)
        return;
    if (d->state == DS_REQ)
        end_request(d);
    d->dead = true;
    rv_timer_stop(&w->loop, &d->timer);
    free_tls(d);
    close(d->io.fd);
    rv_dp_buf_put(w, d->in);
    d->in = NULL;
    if (d->prev)
        d->prev->next = d->next;
    else
        w->conns = d->next;
    if (d->next)
        d->next->prev = d->prev;
    w->nconns--;
    rv_gauge_add(&w->st->conns_active, -1);
    rv_dp_listener_unref(w, d->l);
    if (d->queued) {
        for (rv_dp_conn_t **pp = &w->ready; *pp; pp = &(*pp)->qnext)
            if (*pp == d) {
                *pp = d->qnext;
                break;
            }
        d->queued = false;
    }
    d->qnext = w->zconns;
    w->zconns = d;
}

/*
 * Close after a final response: half-close our side and read-and-discard what the client
 * still sends for a moment, so that unread request bytes do not turn our close into a TCP
 * reset that could destroy the response before the client read it. client_done: the client
 * asked for the close (it sends no further request, RFC 9112 9.6), its request was read
 * whole with nothing after it, and the last read drained the socket (TLS: and OpenSSL's
 * buffer) - nothing is unread, so close at once, as nginx does. Lingering there kept the
 * socket open until the client's own close: TIME_WAITs on the client's ports and SYN
 * retransmissions on its next connections (2-3 per second, a 1 s connect stall each, at
 * 4,500 TLS connections/s; none for nginx or with this; doc/internals/tls.md section 7).
 */
static void d_linger(rv_dp_conn_t *d, bool client_done)
{
    if (d->rd_eof) {
        d_close(d);
        return;
    }
    if (d->tls)
        (void)rv_tls_shutdown(&d->tls->t);    /* close_notify when the socket takes it now */
    if (client_done && !d->can_read) {
        d_close(d);
        return;
    }
    shutdown(d->io.fd, SHUT_WR);
    d->state = DS_LINGER;
    rv_timer_after(&d->w->loop, &d->timer, DP_LINGER_MS);
}

/* Graceful stop of one connection: idle ones close now, busy ones after their response
 * (which then carries "Connection: close"); force closes regardless. Worker. */
void rv_dp_conn_stop(rv_dp_conn_t *d, bool force)
{
    if (d->dead)
        return;
    if (force) {
        if (d->s)
            d->s->flags |= DP_F_DC;
        d_close(d);
        return;
    }
    d->close_after = true;
    if (d->state == DS_IDLE && d->in_len == 0)
        d_close(d);
}

/* Re-arm the connection timer after progress (lazy: usually just stores the deadline). */
void rv_dp_touch(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    int64_t now = rv_loop_now(&w->loop);
    d->last_any = now;
    if (d->state != DS_REQ)
        return;
    int64_t dl = now + DP_STREAM_IDLE_MS;
    if (!d->s->req_done && d->last_in + DP_BODY_IDLE_MS < dl)
        dl = d->last_in + DP_BODY_IDLE_MS;
    rv_timer_at(&w->loop, &d->timer, dl);
}

/* ---- reading ------------------------------------------------------------------------- */

/* Read what fits into conn->in. Returns 1 on progress (bytes or EOF), 0 when nothing was
 * read, -1 when the connection was closed (out of memory). */
static int client_read(rv_dp_conn_t *d)
{
    if (!d->can_read || d->rd_eof || d->in_len >= DP_BUF_SIZE)
        return 0;
    if (!d->in) {
        d->in = rv_dp_buf_get(d->w);
        if (!d->in) {
            rv_ctr_add(&d->w->st->oom, 1);
            d_close(d);
            return -1;
        }
    }
    size_t space = DP_BUF_SIZE - d->in_len;
    if (d->tls) {
        ssize_t r = rv_tls_read(&d->tls->t, d->in + d->in_len, space);
        if (!d->tls->counted && (rv_tls_handshake_done(&d->tls->t) || r == RV_EIO)) {
            rv_wstats_t *st = d->w->st;
            d->tls->counted = true;
            rv_ctr_add(!rv_tls_handshake_done(&d->tls->t) ? &st->ds_tls_fail
                       : rv_tls_resumed(&d->tls->t)       ? &st->ds_tls_resumed
                                                          : &st->ds_tls_full, 1);
        }
        if (r > 0) {
            d->in_len += (uint32_t)r;
            d->last_in = rv_loop_now(&d->w->loop);
            if ((size_t)r < space)
                tls_blocked(d);
            return 1;
        }
        if (r == RV_EAGAIN) {
            tls_blocked(d);
            return 0;
        }
        d->rd_eof = true;   /* close_notify, EOF, or a failed handshake/record */
        d->rd_reset = r != 0;
        return 1;
    }
    ssize_t n = rv_sock_recv(d->io.fd, d->in + d->in_len, space);
    if (n > 0) {
        d->in_len += (uint32_t)n;
        d->last_in = rv_loop_now(&d->w->loop);
        if ((size_t)n < space && !d->rdhup)
            d->can_read = false;    /* drained: edge-triggered epoll reports new data */
        return 1;
    }
    if (n == 0) {
        d->rd_eof = true;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        d->can_read = false;
        return 0;
    }
    if (errno == EINTR)
        return 0;
    d->rd_eof = d->rd_reset = true;     /* reset: end of input, and nothing can be sent back */
    return 1;
}

/* ---- writing ------------------------------------------------------------------------- */

/* Response body iovecs: the ready bytes of the upstream buffer, framed as chunks when
 * re-chunking. Returns the number of iovecs added (at most 4). */
static int body_iovs(rv_dp_stream_t *s, struct iovec *iov)
{
    static const char crlf[] = "\r\n", last[] = "0\r\n\r\n";
    uint32_t avail = s->resp_scan - s->resp_off;
    int n = 0;
    if (!s->rechunk) {
        if (avail)
            iov[n++] = (struct iovec){ s->u->in + s->resp_off, avail };
        return n;
    }
    if (!s->ck_open && avail) {
        static const char hex[] = "0123456789abcdef";
        char tmp[10];
        int k = 0;
        for (uint32_t v = avail; v; v >>= 4)
            tmp[k++] = hex[v & 15];
        s->ck_len = 0;
        while (k)
            s->ck_hdr[s->ck_len++] = tmp[--k];
        s->ck_hdr[s->ck_len++] = '\r';
        s->ck_hdr[s->ck_len++] = '\n';
        s->ck_off = 0;
        s->ck_data = avail;
        s->ck_trail = 2;
        s->ck_open = true;
    }
    if (s->ck_open) {
        if (s->ck_off < s->ck_len)
            iov[n++] = (struct iovec){ s->ck_hdr + s->ck_off, (size_t)(s->ck_len - s->ck_off) };
        if (s->ck_data)
            iov[n++] = (struct iovec){ s->u->in + s->resp_off, s->ck_data };
        iov[n++] = (struct iovec){ (void *)(crlf + 2 - s->ck_trail), s->ck_trail };
    } else if (s->resp_src_done && s->ck_last < 5) {
        iov[n++] = (struct iovec){ (void *)(last + s->ck_last), (size_t)(5 - s->ck_last) };
    }
    return n;
}

/* Account left written bytes to the body iovecs built by body_iovs(). */
static void body_advance(rv_dp_stream_t *s, size_t left)
{
    if (!s->rechunk) {
        s->resp_off += (uint32_t)left;
        s->resp_bytes += left;
        return;
    }
    if (s->ck_open) {
        size_t k = RV_MIN(left, (size_t)(s->ck_len - s->ck_off));
        s->ck_off += (uint8_t)k;
        left -= k;
        k = RV_MIN(left, (size_t)s->ck_data);
        s->ck_data -= (uint32_t)k;
        s->resp_off += (uint32_t)k;
        s->resp_bytes += k;
        left -= k;
        k = RV_MIN(left, (size_t)s->ck_trail);
        s->ck_trail -= (uint8_t)k;
        if (s->ck_off == s->ck_len && !s->ck_data && !s->ck_trail)
            s->ck_open = false;
        return;
    }
    s->ck_last += (uint8_t)RV_MIN(left, (size_t)(5 - s->ck_last));
}

/* Everything of the response body that is ready has been written (framing included). */
static bool body_flushed(const rv_dp_stream_t *s)
{
    return s->resp_off == s->resp_scan && (!s->rechunk || (!s->ck_open && (!s->resp_src_done || s->ck_last == 5)));
}

/* Write pending bytes to the client: interim "100 Continue", the response head, response
 * body from the upstream buffer. Returns 1 on progress, 0 when blocked/nothing, -1 closed. */
static int client_write(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    if (!d->can_write || !s)
        return 0;
    struct iovec iov[40];
    int n = 0, ndh = 0;
    bool body = false;
    if (d->pre_len)
        iov[n++] = (struct iovec){ (void *)d->pre, d->pre_len };
    if (d->state == DS_REQ && s->resp_state == RS_STREAM) {
        for (int i = s->dh_i; i < s->dh_n && n < 35; i++, ndh++)
            iov[n++] = s->dh[i];
        if (s->dh_i + ndh == s->dh_n && s->u && !s->resp_local) {
            int k = body_iovs(s, iov + n);
            n += k;
            body = k > 0;
        }
    }
    if (n == 0)
        return 0;
    ssize_t wr;
    if (d->tls) {
        wr = rv_tls_writev(&d->tls->t, iov, n);
        if (wr == RV_EAGAIN) {
            tls_blocked(d);
            return 0;
        }
        if (wr < 0) {
            rv_dp_abort(d, DP_F_DC);
            return -1;
        }
        size_t want = 0;
        for (int i = 0; i < n; i++)
            want += iov[i].iov_len;
        if ((size_t)wr < want)
            tls_blocked(d);
        if (wr == 0)
            return 0;
    } else {
        wr = rv_sock_sendv(d->io.fd, iov, n);
    }
    if (wr < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            d->can_write = false;
            return 0;
        }
        if (errno == EINTR)
            return 0;
        rv_dp_abort(d, DP_F_DC);
        return -1;
    }
    size_t left = (size_t)wr, total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if ((size_t)wr < total && !d->tls)
        d->can_write = false;
    if (d->pre_len) {
        size_t k = RV_MIN(left, (size_t)d->pre_len);
        d->pre += k;
        d->pre_len -= (uint8_t)k;
        left -= k;
    }
    while (left && s->dh_i < s->dh_n) {
        struct iovec *v = &s->dh[s->dh_i];
        size_t k = RV_MIN(left, v->iov_len);
        v->iov_base = (char *)v->iov_base + k;
        v->iov_len -= k;
        left -= k;
        s->resp_started = true;
        if (v->iov_len == 0)
            s->dh_i++;
    }
    if (s->resp_state == RS_STREAM && s->dh_i == s->dh_n) {
        s->resp_head_done = true;
        s->resp_started = true;
    }
    if (left && body)
        body_advance(s, left);
    return 1;
}

/* ---- request body -------------------------------------------------------------------- */

/* Drop request bytes that are no longer needed by moving the rest down to head_len. Cheap
 * in the common cases (nothing after the body, or nothing forwarded yet). */
void rv_dp_compact_in(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    if (s->retain || s->body_fwd <= s->head_len)
        return;
    if (s->body_fwd != s->body_scan && d->in_len < DP_BUF_SIZE)
        return;     /* unsent bytes: wait until the space is actually needed */
    uint32_t shift = s->body_fwd - s->head_len;
    memmove(d->in + s->head_len, d->in + s->body_fwd, d->in_len - s->body_fwd);
    d->in_len -= shift;
    s->body_scan -= shift;
    s->body_fwd = s->head_len;
}

/* Decide what to do with a request body still arriving after the response is settled:
 * discard it to keep the connection, or close (when the client may not send it at all or
 * it is too large to be worth reading). */
static void settle_body(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    s->retain = false;
    if (s->req_done) {
        s->body_fwd = s->body_scan;
        return;
    }
    s->drain = true;
    if ((s->expect && !s->sent100) ||
        (s->req_body == RV_H1_BODY_LENGTH && s->req_remaining > DP_DRAIN_MAX))
        d->close_after = true;
}

/*
 * Request trailers are dropped, as Envoy's HTTP/1 codec does unless enable_trailers is set
 * (so no client-sent field, x-forwarded-client-cert included, reaches the upstream after the
 * body): the trailer field bytes the last scan of take bytes at body_scan accepted are cut
 * from conn->in before anything forwards them, leaving the last chunk and the final CRLF.
 * Returns the bytes cut. Only runs for a body that has trailers.
 */
static uint32_t cut_trailers(rv_dp_conn_t *d, size_t take)
{
    rv_dp_stream_t *s = d->s;
    uint32_t nf = s->req_ck.trailer_fields - s->tr_cut;
    uint32_t fin = s->req_ck.trailer_bytes - s->req_ck.trailer_fields;
    uint32_t nfin = fin - s->tr_fin;
    /* this scan's bytes: [body, last chunk] [nf field bytes] [nfin final-CRLF bytes] */
    uint32_t end = s->body_scan + (uint32_t)take - nfin, start = end - nf;
    memmove(d->in + start, d->in + end, d->in_len - end);
    d->in_len -= nf;
    s->tr_cut += nf;
    s->tr_fin = (uint8_t)fin;
    return nf;
}

/* Classify newly read bytes as request body (Content-Length countdown or chunked scan).
 * Returns true on progress. May end the request (bad chunked framing). */
static bool req_scan(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    if (s->req_done || s->body_scan >= d->in_len)
        return false;
    size_t avail = d->in_len - s->body_scan, take;
    if (s->req_body == RV_H1_BODY_LENGTH) {
        take = (size_t)RV_MIN((uint64_t)avail, s->req_remaining);
        s->req_remaining -= take;
        s->req_bytes += take;
        if (s->req_remaining == 0)
            s->req_done = true;
    } else if (s->req_body == RV_H1_BODY_CHUNKED) {
        uint64_t payload = 0;
        int r = rv_h1_chunked_scan(&s->req_ck, d->in + s->body_scan, avail, &take, &payload);
        s->req_bytes += payload;
        if (r < 0) {
            d->close_after = true;
            s->req_done = true;     /* nothing more is read for this request */
            s->body_scan += (uint32_t)take;
            s->body_fwd = s->body_scan;
            rv_dp_local_reply(d, 400, RV_STR("invalid chunked request body"), RV_STR_NULL, DP_F_DPE);
            return true;
        }
        if (s->req_ck.trailer_fields != s->tr_cut)
            take -= cut_trailers(d, take);
        if (r == 1)
            s->req_done = true;
    } else {
        s->req_done = true;
        return true;
    }
    s->body_scan += (uint32_t)take;
    if (s->drain) {
        s->drained += take;
        s->body_fwd = s->body_scan;
        if (s->drained > DP_DRAIN_MAX && !s->req_done)
            d->close_after = true;
    }
    if (s->req_done) {
        s->req_done_at = rv_loop_now(&d->w->loop);
        rv_dp_req_complete(d);
    } else if (d->in_len == DP_BUF_SIZE && s->retain) {
        /* the body does not fit next to the head: give up replays, stream it */
        s->retain = false;
    }
    return take > 0 || s->req_done;
}

/* ---- local replies ------------------------------------------------------------------- */

static bool status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/*
 * Answer the current request ourselves (direct response, redirect, error). body and location
 * must outlive the response (snapshot, static, or arena). flag: DP_F_* for the log. When the
 * response already started, the connection is closed instead (truncation). Always returns 0
 * (the reply is queued; out of memory falls back to a static 503).
 */
int rv_dp_local_reply(rv_dp_conn_t *d, int status, rv_str_t body, rv_str_t location, uint32_t flag)
{
    rv_dp_stream_t *s = d->s;
    rv_dp_worker_t *w = d->w;
    if (s->resp_started) {
        rv_dp_abort(d, flag);
        return 0;
    }
    if (s->u)
        rv_dp_up_release(d, false);
    rv_timer_stop(&w->loop, &s->t_try);
    rv_timer_stop(&w->loop, &s->t_route);
    s->up_state = UP_NONE;
    rv_dp_cb_unpend(s);
    s->flags |= flag;
    s->status = status;
    s->resp_local = true;
    settle_body(d);
    if (w->stopping || d->l->cfg == NULL)
        d->close_after = true;
    bool has_body = status_has_body(status);
    if (!has_body)
        body = RV_STR_NULL;
    if (!s->arena)
        s->arena = rv_dp_arena_get(w);
    char *h = NULL;
    size_t hl = 0;
    if (!s->arena || location.len > 8192 ||
        rv_dp_build_local_head(d, status, body.len, has_body, location, &h, &hl) < 0) {
        rv_ctr_add(&w->st->oom, 1);
        s->flags |= DP_F_OM;
        s->status = 503;
        d->close_after = true;
        s->dh_inline[0] = (struct iovec){ (void *)resp_oom, sizeof(resp_oom) - 1 };
        s->dh = s->dh_inline;
        s->dh_n = 1;
        s->resp_bytes = 13;
        goto queued;
    }
    s->dh_inline[0] = (struct iovec){ h, hl };
    s->dh = s->dh_inline;
    s->dh_n = 1;
    if (body.len && !s->is_head) {
        s->dh_inline[1] = (struct iovec){ (void *)body.ptr, body.len };
        s->dh_n = 2;
        s->resp_bytes = body.len;
    }
queued:
    s->dh_i = 0;
    s->resp_state = RS_STREAM;
    s->resp_src_done = true;
    return 0;
}

/* Local reply before any request could be parsed (bad head, header timeout). */
static void reply_unparsed(rv_dp_conn_t *d, int status, rv_str_t body, uint32_t flag)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = rv_dp_stream_get(w, d);
    if (!s) {
        rv_ctr_add(&w->st->oom, 1);
        d_close(d);
        return;
    }
    d->s = s;
    s->gen = w->cur;
    s->gen->inflight++;
    s->eg = w->ecur;
    s->eg->inflight++;
    s->series = s->gen->noroute;
    s->start_ms = rv_loop_now(&w->loop);
    s->start_wall_ms = rv_dp_wall_ms(w);
    s->ep = s->ep_counted = -1;
    s->minor = 1;
    s->req_done = true;
    d->state = DS_REQ;
    d->close_after = true;
    rv_dp_local_reply(d, status, body, RV_STR_NULL, flag);
}

/* ---- request start ------------------------------------------------------------------- */

/*
 * A request on a TLS connection whose Host's virtual host is not served by the chain the
 * connection's SNI selects (in the listener config of this request's snapshot, so a reload
 * in between is judged by the new rules), or by a chain that checks client certificates when
 * this session carries no verified one.
 */
static bool misdirected(rv_dp_conn_t *d, const rv_listener_cfg_t *l, const rv_vhost_t *vh)
{
    if (!l->ssl || !l->tls)
        return true;
    const char *sni = rv_tls_sni(&d->tls->t);
    uint32_t chain = rv_tls_server_select(l->tls, sni, sni ? strlen(sni) : 0);
    if (vh->tls_chain != chain)
        return true;
    return rv_tls_server_chain_mtls(l->tls, chain) && !rv_tls_peer_verified(&d->tls->t);
}

/* A head was parsed from conn->in: set up the stream, route it, and act. */
static void start_request(rv_dp_conn_t *d, const rv_h1_request_t *req)
{
    rv_dp_worker_t *w = d->w;
    rv_loop_t *loop = &w->loop;
    rv_dp_stream_t *s = rv_dp_stream_get(w, d);
    if (!s) {
        rv_ctr_add(&w->st->oom, 1);
        d_close(d);
        return;
    }
    d->s = s;
    s->gen = w->cur;
    s->gen->inflight++;
    s->eg = w->ecur;
    s->eg->inflight++;
    s->series = s->gen->noroute;
    s->start_ms = rv_loop_now(loop);
    s->start_wall_ms = rv_dp_wall_ms(w);
    s->ep = s->ep_counted = -1;
    s->head_len = (uint32_t)req->head_len;
    s->body_scan = s->body_fwd = s->head_len;
    s->method = req->method;
    s->target = req->target;
    s->query = req->query;
    s->has_query = req->has_query;
    s->host = req->host.len ? req->host : req->authority;
    s->has_host = req->host.len > 0;
    s->nhdrs = req->nheaders;
    s->minor = (uint8_t)req->minor;
    s->keep_alive = req->keep_alive;
    s->expect = req->expect_continue;
    s->is_head = rv_str_eq(req->method, RV_STR("HEAD"));
    s->req_body = req->body;
    s->req_remaining = req->content_length;
    if (s->req_body == RV_H1_BODY_NONE || (s->req_body == RV_H1_BODY_LENGTH && s->req_remaining == 0)) {
        s->req_body = RV_H1_BODY_NONE;
        s->req_done = true;
        s->req_done_at = s->start_ms;
    } else {
        s->retain = true;
    }
    d->state = DS_REQ;
    if (!req->keep_alive || w->stopping)
        d->close_after = true;
    rv_dp_touch(d);

    /* X-Request-Id: the client's when it sent a usable one, else ours (UUIDv4) */
    const rv_header_t *rid = rv_h1_find_header(req->headers, req->nheaders, RV_STR("x-request-id"));
    if (rid && rid->value.len > 0 && rid->value.len <= 200) {
        s->reqid = rid->value;
    } else {
        rv_dp_gen_reqid(w, s->reqid_buf);
        s->reqid = rv_str(s->reqid_buf, sizeof(s->reqid_buf));
    }

    s->lcfg = d->l->cfg;
    if (!s->lcfg) {     /* listener removed by a reload: this connection drains */
        d->close_after = true;
        rv_dp_local_reply(d, 404, RV_STR("route not found"), RV_STR_NULL, DP_F_NR);
        return;
    }

    /* the normalised path is both what routes match and what is forwarded */
    size_t plen = 0;
    int rc = rv_path_normalize(req->path, w->scratch, DP_BUF_SIZE, &plen);
    if (rc < 0) {
        d->close_after = true;
        rv_dp_local_reply(d, 400, RV_STR("Bad Request"), RV_STR_NULL, DP_F_DPE);
        return;
    }
    if (plen == req->path.len && memcmp(w->scratch, req->path.ptr, plen) == 0) {
        s->path = req->path;
    } else {
        s->arena = rv_dp_arena_get(w);
        s->path = s->arena ? rv_arena_str(s->arena, rv_str(w->scratch, plen)) : RV_STR_NULL;
        if (!s->path.ptr) {
            rv_ctr_add(&w->st->oom, 1);
            rv_dp_local_reply(d, 503, RV_STR("out of memory"), RV_STR_NULL, DP_F_OM);
            return;
        }
    }
    s->fwd_path = s->path;

    rv_req_view_t view = { .method = req->method,
                           .path = s->path,
                           .query = req->has_query ? req->query : RV_STR(""),
                           .host = s->host,
                           .headers = req->headers,
                           .nheaders = req->nheaders };
    /* vhost by Host, then the indexed first-match lookup (O(log n) over plain prefix runs) */
    s->route = rv_router_match(s->lcfg, &view, &s->vh);
    if (RV_UNLIKELY(rv_regex_take_error())) {
        /* a route regex could not be evaluated: never fall through to a later route */
        rv_dp_local_reply(d, 400, RV_STR("request could not be matched against the route table"), RV_STR_NULL,
                          DP_F_NR);
        return;
    }
    if (RV_UNLIKELY(!d->tls != !s->lcfg->ssl)) {
        /* the Gateway switched between plain and ssl since this connection was accepted: a
         * plain connection must not reach services that now require TLS (or client
         * certificates), nor a TLS one services now served in plain text */
        s->route = NULL;
        d->close_after = true;
        rv_dp_local_reply(d, 421, RV_STR("misdirected request"), RV_STR_NULL, DP_F_NR);
        return;
    }
    if (d->tls && s->vh && misdirected(d, s->lcfg, s->vh)) {
        /* RFC 9110 15.5.20: this connection's certificate (and client certificate check) is
         * not the one for the host asked for */
        s->route = NULL;
        rv_dp_local_reply(d, 421, RV_STR("misdirected request"), RV_STR_NULL, DP_F_NR);
        return;
    }
    if (!s->route) {
        rv_dp_local_reply(d, 404, RV_STR("route not found"), RV_STR_NULL, DP_F_NR);
        return;
    }
    const rv_route_t *rt = s->route;
    if (rt->index < s->gen->snap->nroutes)
        s->series = s->gen->series[s->gen->series_off[rt->index]];
    switch (rt->action.kind) {
    case RV_ACTION_DIRECT:
        rv_dp_local_reply(d, rt->action.status ? rt->action.status : 200, rt->action.body, RV_STR_NULL, 0);
        return;
    case RV_ACTION_REDIRECT: {
        rv_str_t loc = RV_STR_NULL;
        if (!s->arena)
            s->arena = rv_dp_arena_get(w);
        if (!s->arena || rv_redirect_location(rt, &view, false, s->arena, &loc) < 0) {
            rv_ctr_add(&w->st->oom, 1);
            rv_dp_local_reply(d, 503, RV_STR("out of memory"), RV_STR_NULL, DP_F_OM);
            return;
        }
        int code = rt->action.redirect.code ? rt->action.redirect.code : 301;
        rv_dp_local_reply(d, code, RV_STR_NULL, loc, 0);
        return;
    }
    default:
        rv_dp_proxy_start(d);
        return;
    }
}

/* ---- request end --------------------------------------------------------------------- */

/* Log, count and release everything the request held. The connection stays as it is. */
static void end_request(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    if (!s->resp_started)
        s->status = 0;  /* nothing reached the client (Envoy logs 0 too) */
    rv_dp_log_request(d);
    if (s->series)
        rv_series_observe(s->series, s->status, (rv_loop_now(&w->loop) - s->start_ms) * 1000);
    if (s->u) {
        rv_dp_upconn_t *u = s->u;
        bool reuse = s->resp_state == RS_DONE && !s->resp_local && s->resp_up_keepalive && s->up_sent_all &&
                     s->resp_src_done && !s->upe && !u->eof && !u->err && !u->noreuse &&
                     u->in_len == s->resp_raw;
        rv_dp_up_release(d, reuse);
    }
    rv_dp_cb_release(s);
    if (s->ep_counted >= 0 && s->cluster) {
        rv_lb_state_t *lb = &s->eg->lb[s->cluster->index];
        if (lb->active[s->ep_counted])
            lb->active[s->ep_counted]--;
        s->ep_counted = -1;
    }
    rv_timer_stop(&w->loop, &s->t_route);
    rv_timer_stop(&w->loop, &s->t_try);
    rv_dp_gen_unpin(w, s->gen);
    s->gen = NULL;
    rv_dp_epgen_unpin(w, s->eg);
    s->eg = NULL;
    rv_dp_arena_put(w, s->arena);
    s->arena = NULL;
    d->pre_len = 0;
    d->s = NULL;
    rv_dp_stream_put(w, s);
}

/* Abort the request and close the connection now (client gone, or a failure after the
 * response started: the client sees a truncated response). flag: DP_F_* for the log. */
void rv_dp_abort(rv_dp_conn_t *d, uint32_t flag)
{
    if (d->s)
        d->s->flags |= flag;
    d_close(d);
}

/* The response is complete and the request consumed: log, release, and go on with the next
 * request (pipelined bytes may already be in the buffer) or close. */
static void finish(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    uint32_t consumed = s->body_scan;
    bool client_done = !s->keep_alive && s->req_done && consumed >= d->in_len;
    end_request(d);
    d->state = DS_IDLE;
    if (d->close_after || d->rd_eof) {
        d_linger(d, client_done);
        return;
    }
    if (consumed > d->in_len)
        consumed = d->in_len;
    memmove(d->in, d->in + consumed, d->in_len - consumed);
    d->in_len -= consumed;
    d->scan_pos = 0;
    d->in_head = d->in_len > 0;
    if (d->in_len == 0) {
        rv_dp_buf_put(w, d->in);
        d->in = NULL;
    }
    rv_timer_after(&w->loop, &d->timer, d->in_head ? DP_HEADER_TIMEOUT_MS : DP_IDLE_TIMEOUT_MS);
}

/* Drop response bytes already written to the client from the upstream buffer. */
static void resp_compact(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    rv_dp_upconn_t *u = s->u;
    if (!u || !s->resp_head_done || s->resp_off != s->resp_scan || s->resp_raw == 0)
        return;
    uint32_t shift = s->resp_raw;
    memmove(u->in, u->in + shift, u->in_len - shift);
    u->in_len -= shift;
    s->resp_off = s->resp_scan = s->resp_raw = 0;
}

static bool maybe_finish(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    bool p = false;
    if (s->resp_state == RS_STREAM && s->resp_src_done && s->dh_i == s->dh_n && d->pre_len == 0 &&
        (!s->u || s->resp_local || body_flushed(s))) {
        s->resp_state = RS_DONE;
        s->resp_started = true;
        p = true;
    }
    if (s->resp_state != RS_DONE)
        return p;
    if (!s->req_done || s->body_fwd < s->body_scan) {
        if (s->u)
            rv_dp_up_release(d, false);     /* it did not get the whole request */
        settle_body(d);
        if (!d->close_after && !s->req_done)
            return p;               /* keep discarding the body */
    }
    finish(d);
    return true;
}

/* One pass over an in-flight request. Returns true when anything moved. */
static bool req_step(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    bool p = false;
    int r = client_read(d);
    if (r < 0)
        return false;
    p |= r > 0;
    p |= req_scan(d);
    if (d->dead || d->state != DS_REQ)
        return p;
    if (d->rd_reset) {
        /* The client reset the connection (or TLS failed): no answer can reach it. Abort now
         * rather than hold the upstream connection and the circuit breaker counts until the
         * backend answers nobody; a request still waiting for a connection is never sent. A
         * FIN is not this: a client may half-close after its request and read the answer. */
        rv_dp_abort(d, DP_F_DC);
        return false;
    }
    if (d->rd_eof && !s->req_done && s->body_scan == d->in_len) {
        if (s->resp_state == RS_NONE) {
            rv_dp_abort(d, DP_F_DC);    /* the client left before its request was complete */
            return false;
        }
        s->req_done = true;             /* no more body will come */
        s->body_fwd = s->body_scan;
        d->close_after = true;
        if (s->u)
            s->u->noreuse = true;
    }
    if (d->rd_eof)
        d->close_after = true;
    if (s->u || s->up_state != UP_NONE) {
        p |= rv_dp_up_step(d);
        if (d->dead || d->state != DS_REQ)
            return true;
    }
    r = client_write(d);
    if (r < 0)
        return false;
    p |= r > 0;
    resp_compact(d);
    if (s->drain && s->body_fwd < s->body_scan) {
        s->body_fwd = s->body_scan;
        p = true;
    }
    rv_dp_compact_in(d);
    p |= maybe_finish(d);
    if (p && !d->dead && d->state == DS_REQ)
        rv_dp_touch(d);
    return p;
}

/* Waiting for (the rest of) a request head. */
static bool idle_step(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    int r = client_read(d);
    if (r < 0)
        return false;
    bool p = r > 0;
    /* RFC 9112 2.2: ignore empty lines before a request line (clients that add CRLF after a body) */
    uint32_t k = 0;
    while (k + 1 < d->in_len && d->in[k] == '\r' && d->in[k + 1] == '\n')
        k += 2;
    if (k) {
        memmove(d->in, d->in + k, d->in_len - k);
        d->in_len -= k;
        d->scan_pos = 0;
    }
    if (d->in_len == 0) {
        if (d->rd_eof) {
            d_close(d);
            return false;
        }
        if (d->in) {
            rv_dp_buf_put(w, d->in);
            d->in = NULL;
        }
        if (w->stopping) {
            d_close(d);
            return false;
        }
        return p;
    }
    if (!d->in_head) {
        d->in_head = true;
        rv_timer_after(&w->loop, &d->timer, DP_HEADER_TIMEOUT_MS);
    }
    size_t end = rv_dp_find_head_end(d->in, d->in_len, &d->scan_pos);
    if (!end && d->in_len < rv_h1_default_limits.max_head && d->in_len < DP_BUF_SIZE) {
        if (d->rd_eof)
            d_close(d);     /* the client gave up mid-head */
        return p;
    }
    rv_h1_request_t req;
    memset(&req, 0, sizeof(req));
    int rc = rv_h1_parse_request(d->in, d->in_len, &rv_h1_default_limits, w->hdrs, &req);
    d->in_head = false;
    if (rc == RV_EAGAIN) {
        /* no complete head although the limit is reached (or the terminator seen) */
        rc = RV_ETOOBIG;
        req.status = end ? 400 : 431;
    }
    if (rc < 0) {
        int st = req.status >= 400 && req.status <= 599 ? req.status : 400;
        reply_unparsed(d, st, rv_cstr(rv_http_reason(st)), DP_F_DPE);
        return true;
    }
    start_request(d, &req);
    return true;
}

/* After the final response of a closing connection: discard input until EOF or timeout. */
static bool linger_step(rv_dp_conn_t *d)
{
    char tmp[4096];
    for (int i = 0; i < 16 && d->can_read; i++) {
        if (d->tls) {
            ssize_t r = rv_tls_read(&d->tls->t, tmp, sizeof(tmp));
            if (r > 0 && rv_tls_want(&d->tls->t) != RV_TLS_WANT_READ)
                continue;
            if (r > 0 || r == RV_EAGAIN) {
                tls_blocked(d);
                return false;
            }
            d_close(d);
            return false;
        }
        ssize_t n = read(d->io.fd, tmp, sizeof(tmp));
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            d->can_read = false;
            return false;
        }
        if (n < 0 && errno == EINTR)
            continue;
        d_close(d);
        return false;
    }
    return d->can_read;     /* more to drop: go on (the pump yields to others in turn) */
}

/* Run the connection's state machine until nothing moves. A connection that keeps moving
 * yields after a few rounds and is resumed next iteration (fairness between clients). */
void rv_dp_pump(rv_dp_conn_t *d)
{
    for (int round = 0;; round++) {
        if (d->dead)
            return;
        bool p;
        switch (d->state) {
        case DS_IDLE:
            p = idle_step(d);
            break;
        case DS_REQ:
            p = req_step(d);
            break;
        default:
            p = linger_step(d);
            break;
        }
        if (!p || d->dead)
            return;
        if (round == 16) {
            if (!d->queued) {
                d->queued = true;
                d->qnext = d->w->ready;
                d->w->ready = d;
            }
            return;
        }
    }
}

static void d_on_io(rv_loop_t *loop, rv_io_t *io, uint32_t events)
{
    rv_dp_conn_t *d = RV_CONTAINER_OF(io, rv_dp_conn_t, io);
    if (d->dead)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        d->can_read = true;
    if (events & EPOLLRDHUP)
        d->rdhup = true;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        d->can_write = true;
    rv_dp_pump(d);
}

static void d_on_timer(rv_loop_t *loop, rv_timer_t *t)
{
    rv_dp_conn_t *d = RV_CONTAINER_OF(t, rv_dp_conn_t, timer);
    rv_dp_stream_t *s = d->s;
    if (d->dead)
        return;
    int64_t now = rv_loop_now(loop);
    switch (d->state) {
    case DS_IDLE:
        if (d->in_len > 0)
            reply_unparsed(d, 408, RV_STR("request header timeout"), DP_F_SI);
        else
            d_close(d);
        break;
    case DS_REQ: {
        int64_t body_dl = s->req_done ? INT64_MAX : d->last_in + DP_BODY_IDLE_MS;
        int64_t idle_dl = d->last_any + DP_STREAM_IDLE_MS;
        if (now < body_dl && now < idle_dl) {
            rv_timer_at(loop, t, RV_MIN(body_dl, idle_dl));
            return;
        }
        if (s->resp_started) {
            rv_dp_abort(d, DP_F_SI);
            return;
        }
        d->close_after = true;
        rv_dp_local_reply(d, 408, RV_STR("stream timeout"), RV_STR_NULL, DP_F_SI);
        break;
    }
    default:
        d_close(d);
        return;
    }
    rv_dp_pump(d);
}
