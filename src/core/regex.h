/*
 * regex.h - PCRE2 (JIT when available) behind a small interface.
 *
 * Patterns are compiled on the control thread while a snapshot is built; matching runs on
 * workers and allocates nothing per call (per-thread match data, created once per thread).
 */
#ifndef RV_REGEX_H
#define RV_REGEX_H

#include "config/snapshot-t.h"
#include "core/common.h"

/*
 * Compile pattern (ECMAScript-like syntax as PCRE2 accepts it). caseless: case-insensitive.
 * Returns a new regex, or NULL with a message in err (errlen bytes, NUL-terminated) naming the
 * offset of the problem. Free with rv_regex_free().
 */
rv_regex_t *rv_regex_compile(rv_str_t pattern, bool caseless, char *err, size_t errlen);

/*
 * True when the whole subject matches (anchored at both ends). When the match cannot be
 * decided (backtracking limit hit) it returns false and sets this thread's error flag.
 */
bool rv_regex_full_match(const rv_regex_t *re, rv_str_t subject);

/*
 * Whether a match on this thread hit a limit since the last call; clears the flag. Workers
 * check it after routing and refuse the request (400) instead of trusting a "no match".
 */
bool rv_regex_take_error(void);

/*
 * Replace every match of re in subject with subst (\0..\9 refer to groups), writing into
 * out[0..cap). Returns 0 with *out_len set, RV_ETOOBIG if cap is too small, RV_EINVAL on error.
 */
int rv_regex_replace(const rv_regex_t *re, rv_str_t subject, rv_str_t subst, char *out, size_t cap,
                     size_t *out_len);

/* Free a compiled regex; accepts NULL. */
void rv_regex_free(rv_regex_t *re);

#endif
