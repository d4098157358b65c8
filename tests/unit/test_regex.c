/* test_regex.c - PCRE2 wrapper: full match, replace, compile errors. */
#include "core/err.h"
#include "core/regex.h"
#include "test.h"

int main(void)
{
    char err[200];
    rv_regex_t *re = rv_regex_compile(RV_STR("/api/v[0-9]+/.*"), false, err, sizeof err);
    CHECK(re != NULL, "compile");
    CHECK(rv_regex_full_match(re, RV_STR("/api/v2/users")), "full match");
    CHECK(!rv_regex_full_match(re, RV_STR("/x/api/v2/users")), "anchored at start");
    rv_regex_t *re2 = rv_regex_compile(RV_STR("/a"), false, err, sizeof err);
    CHECK(!rv_regex_full_match(re2, RV_STR("/ab")), "anchored at end");
    rv_regex_t *ci = rv_regex_compile(RV_STR("/abc"), true, err, sizeof err);
    CHECK(rv_regex_full_match(ci, RV_STR("/ABC")), "caseless");
    CHECK(rv_regex_compile(RV_STR("(unclosed"), false, err, sizeof err) == NULL, "bad regex rejected");
    CHECK(strstr(err, "offset") != NULL, "error names the offset: %s", err);

    rv_regex_t *rw = rv_regex_compile(RV_STR("^/service/([^/]+)(/.*)$"), false, err, sizeof err);
    char out[64];
    size_t n;
    CHECK(rv_regex_replace(rw, RV_STR("/service/foo/v1/api"), RV_STR("\\2/instance/\\1"), out, sizeof out, &n) == 0,
          "replace ok");
    CHECK_STRN(out, n, "/v1/api/instance/foo", "groups substituted");
    rv_regex_t *o = rv_regex_compile(RV_STR("o"), false, err, sizeof err);
    CHECK(rv_regex_replace(o, RV_STR("foo/bar/boo"), RV_STR("0"), out, sizeof out, &n) == 0, "replace all");
    CHECK_STRN(out, n, "f00/bar/b00", "every match replaced");
    CHECK(rv_regex_replace(o, RV_STR("oooooooo"), RV_STR("xxxxxxxxxx"), out, 8, &n) == RV_ETOOBIG, "cap enforced");
    /* catastrophic backtracking hits the limit: no match, and the error flag is raised once */
    rv_regex_t *bt = rv_regex_compile(RV_STR("/(a*)*b"), false, err, sizeof err);
    char longpath[16384];
    longpath[0] = '/';
    memset(longpath + 1, 'a', sizeof longpath - 1);
    CHECK(!rv_regex_take_error(), "no error before");
    CHECK(!rv_regex_full_match(bt, rv_str(longpath, sizeof longpath)), "limit hit: not a match");
    CHECK(rv_regex_take_error(), "limit hit raises the error flag");
    CHECK(!rv_regex_take_error(), "the flag is cleared by reading it");
    CHECK(!rv_regex_full_match(re, RV_STR("/nope")) && !rv_regex_take_error(), "plain no-match is not an error");
    rv_regex_free(bt);
    rv_regex_free(re);
    rv_regex_free(re2);
    rv_regex_free(ci);
    rv_regex_free(rw);
    rv_regex_free(o);
    rv_regex_free(NULL);
    TEST_DONE();
}
