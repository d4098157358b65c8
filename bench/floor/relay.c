/*
 * relay.c - the benchmark's "floor": the cheapest TCP relay with an HTTP proxy's wire pattern.
 *
 * A measuring stick for bench/, not product code. Usage: relay LISTEN_PORT ORIGIN_PORT, both
 * on 127.0.0.1. Single-threaded, one edge-triggered epoll loop. For each accepted client
 * connection it opens one connection to the origin (non-blocking connect at accept time,
 * TCP_NODELAY on both) and moves bytes both ways: what one side sends is read with one recv()
 * into that direction's fixed 64 KiB buffer (allocated with the connection pair at accept,
 * nothing per request) and written at once with one send(MSG_NOSIGNAL) to the other side; a
 * partial write keeps the rest and waits for EPOLLOUT. EOF or an error on either side closes
 * both. No HTTP parsing at all.
 *
 * Why it is the floor: with keep-alive GETs a request and a response are each one recv and
 * one send (a short read is taken as "drained": edge-triggered epoll reports the next
 * arrival, as nginx assumes too), i.e. 4 syscalls and 4 TCP segments per request, exactly the
 * minimum of an HTTP/1.1 proxy with upstream keep-alive. Its CPU per request is what the
 * kernel charges for that pattern (on loopback the sender's send() also runs the receiver's
 * TCP receive path) plus the epoll loop: no proxy with the same pattern can go under it.
 * Stops cleanly (exit status 0) on SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 256

struct pair;

/* One socket of a pair: side 0 is the client, side 1 the origin. */
struct end {
	struct pair *p;
	int i;
};

/* Bytes read from side i and not yet written to side 1 - i. */
struct dir {
	size_t off, len;
	int more;       /* side i may have unread bytes: recv again when the buffer is free */
	int rdhup;      /* side i shut its write half: read until EOF */
	char buf[BUF_SIZE];
};

struct pair {
	int fd[2];
	int closed;
	struct end end[2];
	struct dir d[2];
	struct pair *prev, *next;       /* every live pair, freed at exit */
	struct pair *dead;              /* closed in this batch, freed after it */
};

static struct pair *live_pairs, *dead_pairs;

/* Close both sockets (which also leaves epoll) and defer the free to the end of the batch:
 * later events of the same batch may still point at the pair. */
static void pair_close(struct pair *p)
{
	if (p->closed)
		return;
	p->closed = 1;
	close(p->fd[0]);
	close(p->fd[1]);
	if (p->prev)
		p->prev->next = p->next;
	else
		live_pairs = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->dead = dead_pairs;
	dead_pairs = p;
}

/* Move bytes from side i to side 1 - i: flush what is pending, then recv and send while side
 * i may have more. Returns 0 to wait for the next event, -1 when the pair must close. */
static int pump(struct pair *p, int i)
{
	struct dir *d = &p->d[i];

	for (;;) {
		while (d->off < d->len) {
			ssize_t n = send(p->fd[1 - i], d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
			if (n > 0)
				d->off += (size_t)n;
			else if (n < 0 && errno == EINTR)
				continue;
			else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return 0;       /* EPOLLOUT on side 1 - i resumes here */
			else
				return -1;
		}
		d->off = d->len = 0;
		if (!d->more && !d->rdhup)
			return 0;
		ssize_t n = recv(p->fd[i], d->buf, sizeof d->buf, 0);
		if (n > 0) {
			d->len = (size_t)n;
			d->more = (size_t)n == sizeof d->buf;   /* a short read drained the socket */
		} else if (n == 0) {
			return -1;                              /* EOF: close both */
		} else if (errno == EINTR) {
			continue;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			d->more = 0;
			return 0;
		} else {
			return -1;
		}
	}
}

static int set_nodelay(int fd)
{
	int one = 1;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Accept one client and connect its origin connection; 0, or -1 when accept has nothing
 * more to give (EAGAIN) or failed. */
static int accept_one(int ep, int lfd, const struct sockaddr_in *origin)
{
	int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			perror("relay: accept4");
		return -1;
	}
	int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct pair *p = NULL;
	if (ufd < 0 || set_nodelay(cfd) < 0 || set_nodelay(ufd) < 0) {
		perror("relay: socket");
		goto fail;
	}
	if (connect(ufd, (const struct sockaddr *)origin, sizeof *origin) < 0 && errno != EINPROGRESS) {
		perror("relay: connect to the origin");
		goto fail;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		fputs("relay: out of memory\n", stderr);
		goto fail;
	}
	p->fd[0] = cfd;
	p->fd[1] = ufd;
	for (int i = 0; i < 2; i++) {
		p->end[i].p = p;
		p->end[i].i = i;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					  .data.ptr = &p->end[i] };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, p->fd[i], &ev) < 0) {
			perror("relay: epoll_ctl");
			goto fail;
		}
	}
	p->next = live_pairs;
	if (live_pairs)
		live_pairs->prev = p;
	live_pairs = p;
	return 0;
fail:
	free(p);        /* closing the fds below also takes them out of epoll */
	close(cfd);
	if (ufd >= 0)
		close(ufd);
	return 0;       /* this client is refused; the next one may still be accepted */
}

static void on_event(struct end *e, uint32_t events)
{
	struct pair *p = e->p;
	int i = e->i;

	if (p->closed)
		return;
	if (events & (EPOLLERR | EPOLLHUP)) {
		pair_close(p);
		return;
	}
	if (events & EPOLLRDHUP)
		p->d[i].rdhup = 1;
	if (events & (EPOLLIN | EPOLLRDHUP))
		p->d[i].more = 1;
	/* EPOLLOUT on side i: what side 1 - i sent may now go out */
	if (((events & EPOLLOUT) && pump(p, 1 - i) < 0) ||
	    ((events & (EPOLLIN | EPOLLRDHUP)) && pump(p, i) < 0))
		pair_close(p);
}

/* The port in s (1..65535), or -1. */
static int parse_port(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
		return -1;
	return (int)v;
}

static void on_signal(int sig)
{
	(void)sig;      /* only interrupts epoll_pwait, where the signal is unblocked */
}

int main(int argc, char **argv)
{
	int lport = argc == 3 ? parse_port(argv[1]) : -1;
	int oport = argc == 3 ? parse_port(argv[2]) : -1;
	if (lport < 0 || oport < 0) {
		fputs("usage: relay LISTEN_PORT ORIGIN_PORT (both on 127.0.0.1)\n", stderr);
		return 2;
	}

	/* SIGTERM and SIGINT are blocked but while waiting in epoll_pwait: no lost wake-up */
	sigset_t block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct sockaddr_in laddr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)lport),
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in origin = laddr;
	origin.sin_port = htons((uint16_t)oport);
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (lfd < 0 || ep < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(lfd, (struct sockaddr *)&laddr, sizeof laddr) < 0 || listen(lfd, 4096) < 0) {
		perror("relay: listen");
		return 1;
	}
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };   /* level-triggered */
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
		perror("relay: epoll_ctl");
		return 1;
	}
	fprintf(stderr, "relay: 127.0.0.1:%d -> 127.0.0.1:%d\n", lport, oport);

	struct epoll_event evs[MAX_EVENTS];
	int status = 0;
	for (;;) {
		int n = epoll_pwait(ep, evs, MAX_EVENTS, -1, &wait_mask);
		if (n < 0) {
			if (errno == EINTR)
				break;          /* SIGTERM / SIGINT */
			perror("relay: epoll_pwait");
			status = 1;
			break;
		}
		for (int k = 0; k < n; k++) {
			if (evs[k].data.ptr == NULL) {
				for (int a = 0; a < 64 && accept_one(ep, lfd, &origin) == 0; a++)
					;
			} else {
				on_event(evs[k].data.ptr, evs[k].events);
			}
		}
		while (dead_pairs) {
			struct pair *p = dead_pairs;
			dead_pairs = p->dead;
			free(p);
		}
	}
	while (live_pairs)
		pair_close(live_pairs);
	while (dead_pairs) {
		struct pair *p = dead_pairs;
		dead_pairs = p->dead;
		free(p);
	}
	close(lfd);
	close(ep);
	return status;
}
