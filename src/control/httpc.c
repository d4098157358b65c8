/*
 * httpc.c - the cancellable request loop of httpc.h, shared by consul.c and vault.c.
 */
#include "control/httpc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/consul.h"
#include "core/err.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void rv_httpc_global_init(void)
{
    pthread_once(&curl_once, curl_init_once);
}

int rv_httpc_handles_new(CURL **easy, CURLM **multi)
{
    *easy = curl_easy_init();
    *multi = curl_multi_init();
    if (*easy && *multi)
        return 0;
    rv_httpc_handles_free(*easy, *multi);
    *easy = NULL;
    *multi = NULL;
    return RV_ENOMEM;
}

void rv_httpc_handles_free(CURL *easy, CURLM *multi)
{
    if (easy)
        curl_easy_cleanup(easy);
    if (multi)
        curl_multi_cleanup(multi);
}

void rv_httpc_wipe_free(char *p, size_t n)
{
    if (!p)
        return;
    volatile char *v = p;
    while (n--)
        *v++ = 0;
    free(p);
}

char *rv_httpc_base(const char *scheme, const char *hostport)
{
    size_t n = strlen(scheme) + strlen(hostport) + 4;
    char *b = malloc(n);
    if (!b)
        return NULL;
    snprintf(b, n, "%s://%s", scheme, hostport);
    size_t bl = strlen(b);
    while (bl > strlen(scheme) + 3 && b[bl - 1] == '/')
        b[--bl] = '\0';
    return b;
}

int rv_httpc_server_name(char **base, const char *server_name, struct curl_slist **connect_to)
{
    char *nb, *ct;
    int rc = rv_consul_tls_target(*base, server_name, &nb, &ct);
    if (rc != 0 || !nb)
        return rc;
    free(*base);
    *base = nb;
    *connect_to = curl_slist_append(NULL, ct);
    free(ct);
    return *connect_to ? 0 : RV_ENOMEM;
}

size_t rv_httpc_on_body(char *p, size_t sz, size_t nm, void *ud)
{
    rv_httpc_body_t *o = ud;
    size_t n = sz * nm;
    if (o->len + n > o->max) {
        o->too_big = true;
        return 0;
    }
    if (o->len + n + 1 > o->cap) {
        size_t ncap = o->cap ? o->cap : 4096;
        while (ncap < o->len + n + 1)
            ncap *= 2;
        char *b;
        if (o->wipe) {
            /* not realloc: the old buffer may hold key material and must be wiped */
            if (!(b = malloc(ncap)))
                return 0;
            if (o->body) {
                memcpy(b, o->body, o->len);
                rv_httpc_wipe_free(o->body, o->len);
            }
        } else if (!(b = realloc(o->body, ncap))) {
            return 0;
        }
        o->body = b;
        o->cap = ncap;
    }
    memcpy(o->body + o->len, p, n);
    o->len += n;
    o->body[o->len] = '\0';
    return n;
}

void rv_httpc_prepare(CURL *e, const char *url, long connect_timeout_ms, long timeout_ms, rv_httpc_body_t *b)
{
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, rv_httpc_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
}

void rv_httpc_tls(CURL *e, const char *ca_file, const char *ca_path, const char *cert, const char *key,
                  bool insecure, struct curl_slist *connect_to)
{
    if (ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    if (ca_path)
        curl_easy_setopt(e, CURLOPT_CAPATH, ca_path);
    if (cert)
        curl_easy_setopt(e, CURLOPT_SSLCERT, cert);
    if (key)
        curl_easy_setopt(e, CURLOPT_SSLKEY, key);
    if (insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    /* a TLS server name: the URL names it (SNI, certificate check) and CURLOPT_CONNECT_TO sends
     * the connection to the configured address (rv_consul_tls_target) */
    if (connect_to)
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, connect_to);
}

void rv_httpc_why(char *out, size_t outlen, CURLcode res, const char *detail)
{
    const char *what = curl_easy_strerror(res);
    size_t n = detail ? strlen(detail) : 0;
    while (n && (detail[n - 1] == '\n' || detail[n - 1] == '\r' || detail[n - 1] == ' '))
        n--;
    if (n && strncmp(detail, what, n) != 0)
        snprintf(out, outlen, "%s: %.*s", what, (int)n, detail);
    else
        snprintf(out, outlen, "%s", what);
}

int rv_httpc_run(CURLM *multi, CURL *e, _Atomic bool *cancelled, rv_httpc_body_t *b, int *status, char *err,
                 size_t errlen)
{
    int rc = 0;
    CURLcode res = CURLE_OK;
    char detail[CURL_ERROR_SIZE] = "";
    *status = 0;
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, detail);
    curl_multi_add_handle(multi, e);
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc != CURLM_OK) {
            res = CURLE_FAILED_INIT;
            snprintf(err, errlen, "%s", curl_multi_strerror(mc));
            break;
        }
        if (!running) {
            int q;
            CURLMsg *m;
            while ((m = curl_multi_info_read(multi, &q)))
                if (m->msg == CURLMSG_DONE)
                    res = m->data.result;
            break;
        }
        if (atomic_load(cancelled)) {
            res = CURLE_ABORTED_BY_CALLBACK;
            snprintf(err, errlen, "cancelled");
            break;
        }
        curl_multi_poll(multi, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(multi, e);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);     /* detail is about to go out of scope */
    if (res != CURLE_OK) {
        if (b->too_big) {
            snprintf(err, errlen, "response body larger than %zu MiB", b->max >> 20);
            rc = RV_ETOOBIG;
        } else {
            if (!err[0])
                rv_httpc_why(err, errlen, res, detail);
            rc = res == CURLE_OUT_OF_MEMORY ? RV_ENOMEM : RV_EIO;
        }
        if (b->wipe)
            rv_httpc_wipe_free(b->body, b->len);
        else
            free(b->body);
        b->body = NULL;
        b->len = b->cap = 0;
        return rc;
    }
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    *status = (int)code;
    if (!b->body && !(b->body = calloc(1, 1)))
        return RV_ENOMEM;
    return 0;
}
