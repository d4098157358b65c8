/*
 * err.h - one table of error codes. Functions return int: 0 ok, negative RV_E* on error.
 */
#ifndef RV_ERR_H
#define RV_ERR_H

#define RV_ERRORS(X)                                             \
    X(RV_OK, 0, "ok")                                            \
    X(RV_EAGAIN, -1, "need more data / try again")              \
    X(RV_ENOMEM, -2, "out of memory")                            \
    X(RV_EINVAL, -3, "invalid argument")                         \
    X(RV_EPARSE, -4, "malformed input")                          \
    X(RV_ETOOBIG, -5, "limit exceeded")                          \
    X(RV_EIO, -6, "i/o error")                                   \
    X(RV_ENOTFOUND, -7, "not found")                             \
    X(RV_EUNSUPPORTED, -8, "not supported")                      \
    X(RV_ECLOSED, -9, "connection closed")                       \
    X(RV_ETIMEDOUT, -10, "timed out")                            \
    X(RV_EBADPATH, -11, "path rejected")                         \
    X(RV_EFULL, -12, "buffer full")

enum rv_err {
#define RV_ERR_ENUM(name, val, msg) name = (val),
    RV_ERRORS(RV_ERR_ENUM)
#undef RV_ERR_ENUM
};

/* Message for an RV_E* code; never NULL. */
const char *rv_strerror(int err);

#endif
