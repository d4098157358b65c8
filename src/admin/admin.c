/*
 * admin.c - the admin listener on its own thread: GET /ready, /metrics, /config_dump,
 * /status. One connection at a time, Connection: close, small bounded reads: admin traffic
 * is an operator's curl or a Prometheus scrape, never the data path.
 */
#include "admin/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config/config.h"
#include "control/control.h"
#include "core/err.h"
#include "core/log.h"
#include "http/h1.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

static int lfd = -1;
static int wake[2] = { -1, -1 };
static pthread_t thr;
static bool started;

int rv_parse_hostport(const char *s, struct sockaddr_storage *ss, unsigned *len)
{
    char host[256];
    const char *colon;
    memset(ss, 0, sizeof *ss);
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host)
            return RV_EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host)
            return RV_EINVAL;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    uint64_t port;
    if (rv_str_to_u64(rv_cstr(colon + 1), &port) != 0 || port > 65535)
        return RV_EINVAL;
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        if (host[0] == '\0')
            a4->sin_addr.s_addr = htonl(INADDR_ANY);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return 0;
    }
    if (strcmp(host, "localhost") == 0) {
        a4->sin_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return 0;
    }
    return RV_EINVAL;
}

/* Append s to f as a JSON string literal. */
static void json_str(FILE *f, rv_str_t s)
{
    fputc('"', f);
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void write_status_json(FILE *f, const rv_snapshot_t *s)
{
    fprintf(f, "{\"version\":%llu,\"resources\":[", (unsigned long long)(s ? s->version : 0));
    for (uint32_t i = 0; s && i < s->nstatuses; i++) {
        const rv_status_t *st = &s->statuses[i];
        fputs(i ? ",\n{" : "\n{", f);
        fputs("\"kind\":", f);
        json_str(f, st->kind);
        fputs(",\"namespace\":", f);
        json_str(f, st->ns);
        fputs(",\"name\":", f);
        json_str(f, st->name);
        fputs(",\"state\":", f);
        json_str(f, rv_cstr(rv_state_name(st->state)));
        fputs(",\"reason\":", f);
        json_str(f, st->reason);
        fputs(",\"source\":", f);
        json_str(f, st->file);
        fputc('}', f);
    }
    fputs("\n]}\n", f);
}

static void respond(int fd, int status, const char *ctype, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, rv_http_reason(status), ctype, len);
    struct iovec iov[2] = { { head, (size_t)n }, { (void *)body, len } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    size_t total = (size_t)n + len;
    while (total > 0) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        total -= (size_t)w;
        while (mh.msg_iovlen && (size_t)w >= mh.msg_iov[0].iov_len) {
            w -= (ssize_t)mh.msg_iov[0].iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + w;
            mh.msg_iov[0].iov_len -= (size_t)w;
        }
    }
}

static void handle(int fd)
{
    char buf[8192];
    size_t len = 0;
    rv_header_t hdrs[100];
    rv_h1_request_t req;
    int rc = RV_EAGAIN;
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (rc == RV_EAGAIN && len < sizeof buf) {
        ssize_t r = recv(fd, buf + len, sizeof buf - len, 0);
        if (r <= 0)
            return;
        len += (size_t)r;
        rc = rv_h1_parse_request(buf, len, &rv_h1_default_limits, hdrs, &req);
    }
    if (rc < 0) {
        const char *msg = "bad request\n";
        respond(fd, rc == RV_EAGAIN ? 431 : (req.status ? req.status : 400), "text/plain", msg, strlen(msg));
        return;
    }
    if (!rv_str_eq(req.method, RV_STR("GET")) && !rv_str_eq(req.method, RV_STR("HEAD"))) {
        const char *msg = "method not allowed\n";
        respond(fd, 405, "text/plain", msg, strlen(msg));
        return;
    }
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    if (!f)
        return;
    int status = 200;
    const char *ctype = "text/plain; charset=utf-8";
    rv_str_t path = req.path;
    if (rv_str_eq(path, RV_STR("/ready"))) {
        /* Ready once the first config serves; a failing source (Consul down...) does not
         * make an instance unready (it keeps serving its last good config), but says so. */
        char detail[1024];
        bool healthy = rv_control_sources_healthy(detail, sizeof detail);
        if (rv_control_ready()) {
            fputs(healthy ? "ready\n" : "ready (serving the last good config; a source is unhealthy)\n", f);
        } else {
            status = 503;
            fputs("not ready: no config served yet\n", f);
        }
        if (detail[0])
            fprintf(f, "%s%s", detail, detail[strlen(detail) - 1] == '\n' ? "" : "\n");
    } else if (rv_str_eq(path, RV_STR("/metrics"))) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        rv_stats_write_prometheus(f);
        rv_control_sources_prometheus(f);
    } else if (rv_str_eq(path, RV_STR("/config_dump"))) {
        ctype = "application/json";
        rv_snapshot_t *s;
        rv_endpoint_set_t *es;
        if (rv_control_current_pair(&s, &es)) {
            /* endpoints as served: the snapshot's, or the endpoint set published since */
            size_t n = 0;
            char *js = es ? rv_endpoint_set_dump_json(s, es, &n) : NULL;
            if (js)
                fwrite(js, 1, n, f);
            else
                fwrite(s->config_json, 1, s->config_json_len, f);
            free(js);
            rv_endpoint_set_release(es);
            rv_snapshot_release(s);
        } else {
            fputs("{}\n", f);
        }
    } else if (rv_str_eq(path, RV_STR("/status"))) {
        ctype = "application/json";
        rv_snapshot_t *s = rv_control_current();
        write_status_json(f, s);
        if (s)
            rv_snapshot_release(s);
    } else if (rv_str_eq(path, RV_STR("/"))) {
        fputs("rivet admin\n  /ready\n  /metrics\n  /config_dump\n  /status\n", f);
    } else {
        status = 404;
        fputs("not found\n", f);
    }
    fclose(f);
    respond(fd, status, ctype, out, rv_str_eq(req.method, RV_STR("HEAD")) ? 0 : outlen);
    free(out);
}

/* Connections being served; each has its own short-lived thread, so an idle or slow client
 * (it has 2 s to send its request) never holds up a scrape or a readiness probe. */
#define ADMIN_MAX_CONNS 32
static atomic_int nconns;

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    handle(fd);
    close(fd);
    atomic_fetch_sub(&nconns, 1);
    return NULL;
}

static void *admin_main(void *arg)
{
    (void)arg;
    struct pollfd p[2] = { { lfd, POLLIN, 0 }, { wake[0], POLLIN, 0 } };
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int n = poll(p, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        if (p[0].revents & POLLIN) {
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            pthread_t t;
            if (atomic_fetch_add(&nconns, 1) >= ADMIN_MAX_CONNS ||
                pthread_create(&t, &attr, conn_main, (void *)(intptr_t)fd) != 0) {
                atomic_fetch_sub(&nconns, 1);
                const char *msg = "admin busy\n";
                respond(fd, 503, "text/plain", msg, strlen(msg));
                close(fd);
            }
        }
    }
    pthread_attr_destroy(&attr);
    return NULL;
}

int rv_admin_start(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    unsigned sl;
    if (rv_parse_hostport(addr, &ss, &sl) != 0) {
        snprintf(err, errlen, "invalid admin address '%s' (want host:port)", addr);
        return RV_EINVAL;
    }
    lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, 64) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (lfd >= 0)
            close(lfd);
        lfd = -1;
        return RV_EIO;
    }
    if (pipe2(wake, O_CLOEXEC) < 0 || pthread_create(&thr, NULL, admin_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start admin thread");
        close(lfd);
        lfd = -1;
        return RV_EIO;
    }
    started = true;
    return 0;
}

void rv_admin_stop(void)
{
    if (!started)
        return;
    ssize_t w = write(wake[1], "x", 1);
    (void)w;
    pthread_join(thr, NULL);
    /* let connection threads finish (each is bounded by its 2 s socket timeouts) */
    for (int i = 0; i < 300 && atomic_load(&nconns) > 0; i++)
        usleep(10000);
    close(lfd);
    close(wake[0]);
    close(wake[1]);
    lfd = -1;
    started = false;
}
