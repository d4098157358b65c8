/* sock.h - the data path's socket I/O calls.
 *
 * recv(2) and send(2)/sendmsg(2) go straight to the socket layer; read(2) and writev(2) on
 * a socket pass through the VFS first (file position lock check, rw_verify_area, fsnotify),
 * which the kernel's per-request profile of a proxied GET shows as a few percent of the
 * proxy's CPU. One buffer goes out with send(2), several with sendmsg(2). MSG_NOSIGNAL: a
 * peer that closed gives EPIPE, never SIGPIPE. Same return and errno as the libc calls. */
#ifndef RV_CORE_SOCK_H
#define RV_CORE_SOCK_H

#include <sys/socket.h>
#include <sys/uio.h>

/* Reads up to len bytes from the socket fd: recv(2) without flags. */
static inline ssize_t rv_sock_recv(int fd, void *buf, size_t len)
{
    return recv(fd, buf, len, 0);
}

/* Writes the n buffers of iov (n >= 1) to the socket fd in one call; like writev(2). */
static inline ssize_t rv_sock_sendv(int fd, const struct iovec *iov, int n)
{
    if (n == 1)
        return send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };
    return sendmsg(fd, &m, MSG_NOSIGNAL);
}

#endif
