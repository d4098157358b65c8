/*
 * regex.c - PCRE2 wrapper. Compiled once per snapshot on the control thread (JIT when the
 * platform has it); matched on workers with per-thread match data, so a match allocates
 * nothing after a thread's first call.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "core/regex.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"

struct rv_regex_s {
    pcre2_code *code;
    bool jit;
};

static _Thread_local pcre2_match_data *tls_md;
static _Thread_local pcre2_match_context *tls_mc;
static _Thread_local bool tls_error;

/*
 * Backtracking bounds: a route regex like "/(a*)*b" on a long path must cost bounded CPU
 * (PCRE2's defaults allow ~10M steps, 0.1 s a request). Past these the match is an error,
 * never a silent "no match" (that would let a request fall through a deny route).
 */
#define RV_REGEX_MATCH_LIMIT 100000u
#define RV_REGEX_DEPTH_LIMIT 5000u

static pcre2_match_context *match_ctx(void)
{
    if (!tls_mc) {
        tls_mc = pcre2_match_context_create(NULL);
        if (tls_mc) {
            pcre2_set_match_limit(tls_mc, RV_REGEX_MATCH_LIMIT);
            pcre2_set_depth_limit(tls_mc, RV_REGEX_DEPTH_LIMIT);
        }
    }
    return tls_mc;
}

bool rv_regex_take_error(void)
{
    bool e = tls_error;
    tls_error = false;
    return e;
}

static pcre2_match_data *match_data(void)
{
    if (!tls_md)
        tls_md = pcre2_match_data_create(32, NULL);
    return tls_md;
}

rv_regex_t *rv_regex_compile(rv_str_t pattern, bool caseless, char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (caseless ? PCRE2_CASELESS : 0);
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern.ptr, pattern.len, opts, &ec, &off, NULL);
    if (!code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        if (err && errlen)
            snprintf(err, errlen, "invalid regex at offset %zu: %s", (size_t)off, (const char *)msg);
        return NULL;
    }
    rv_regex_t *re = malloc(sizeof(*re));
    if (!re) {
        pcre2_code_free(code);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    re->code = code;
    re->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

bool rv_regex_full_match(const rv_regex_t *re, rv_str_t subject)
{
    pcre2_match_data *md = match_data();
    if (!md)
        return false;
    /* Anchored at both ends: the match must start at 0 and cover the whole subject. */
    int rc = pcre2_match(re->code, (PCRE2_SPTR)(subject.ptr ? subject.ptr : ""), subject.len, 0,
                         PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, match_ctx());
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
        tls_error = true;
    return rc >= 0;
}

int rv_regex_replace(const rv_regex_t *re, rv_str_t subject, rv_str_t subst, char *out, size_t cap,
                     size_t *out_len)
{
    size_t o = 0, start = 0;
    pcre2_match_data *md = match_data();
    if (!md)
        return RV_ENOMEM;
    const char *subj = subject.ptr ? subject.ptr : "";
    while (start <= subject.len) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)subj, subject.len, start, 0, md, match_ctx());
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return RV_EINVAL;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms - start > cap - o)
            return RV_ETOOBIG;
        memcpy(out + o, subj + start, ms - start);
        o += ms - start;
        for (size_t i = 0; i < subst.len; i++) {
            char c = subst.ptr[i];
            if (c == '\\' && i + 1 < subst.len && subst.ptr[i + 1] >= '0' && subst.ptr[i + 1] <= '9') {
                int g = subst.ptr[++i] - '0';
                if (g < rc && ov[2 * g] != PCRE2_UNSET) {
                    size_t gl = ov[2 * g + 1] - ov[2 * g];
                    if (gl > cap - o)
                        return RV_ETOOBIG;
                    memcpy(out + o, subj + ov[2 * g], gl);
                    o += gl;
                }
                continue;
            }
            if (o >= cap)
                return RV_ETOOBIG;
            out[o++] = c;
        }
        if (me == ms) { /* empty match: copy one byte and move on */
            if (ms < subject.len) {
                if (o >= cap)
                    return RV_ETOOBIG;
                out[o++] = subj[ms];
            }
            start = me + 1;
        } else {
            start = me;
        }
    }
    if (start < subject.len) {
        if (subject.len - start > cap - o)
            return RV_ETOOBIG;
        memcpy(out + o, subj + start, subject.len - start);
        o += subject.len - start;
    }
    *out_len = o;
    return 0;
}

void rv_regex_free(rv_regex_t *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}
