/* err.c - messages for the RV_E* table. */
#include "core/err.h"
#include "core/common.h"

const char *rv_strerror(int err)
{
    switch (err) {
#define RV_ERR_CASE(name, val, msg) case val: return msg;
        RV_ERRORS(RV_ERR_CASE)
#undef RV_ERR_CASE
    }
    return "unknown error";
}

int rv_str_to_u64(rv_str_t s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.len == 0)
        return -1;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < '0' || c > '9')
            return -1;
        if (v > (UINT64_MAX - (c - '0')) / 10)
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}
