/*
 * admin.h - the admin listener: /ready, /metrics, /config_dump, /status. It runs on its own
 * thread with a small blocking loop: admin traffic is rare and must never disturb workers.
 */
#ifndef RV_ADMIN_H
#define RV_ADMIN_H

#include <stddef.h>

/*
 * Bind and listen on addr ("host:port", "[v6]:port"). Returns 0, or a negative RV_E* with a
 * message in err. Control thread, at startup.
 */
int rv_admin_start(const char *addr, char *err, size_t errlen);

/* Stop the admin thread and close its socket. */
void rv_admin_stop(void);

/* Split "host:port" / "[v6]:port" into a socket address. 0 or RV_EINVAL. */
struct sockaddr_storage;
int rv_parse_hostport(const char *s, struct sockaddr_storage *ss, unsigned *len);

#endif
