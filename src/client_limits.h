/*
 * client_limits.h - per-client (per IP address) limits of the receiving
 * side, like Postfix's anvil: concurrent sessions of one address, and
 * error replies of all its sessions together within a time window. A
 * client over the error limit is refused at connect for the penalty time.
 *
 * Pure bookkeeping: the caller passes the time and the limits, and
 * decides what to reply. Memory is bounded: at most CLIENTS_MAX entries;
 * an entry lives while its address has a session, or its error window or
 * penalty is running. Beyond CLIENTS_MAX, new addresses are not tracked
 * (their sessions are admitted and their errors forgotten) rather than
 * refused: the global max_sessions still holds.
 */
#ifndef PETREL_CLIENT_LIMITS_H
#define PETREL_CLIENT_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#define CLIENTS_MAX 65536

struct client_limits {
	unsigned max_sessions;   /* per address; 0 = no limit */
	unsigned max_errors;     /* per address per window; 0 = no limit */
	uint64_t window_ms;      /* error window and penalty time */
};

enum client_verdict {
	CLIENT_OK,               /* admitted and counted */
	CLIENT_UNTRACKED,        /* admitted, table full: do not release */
	CLIENT_TOO_MANY_SESSIONS,
	CLIENT_BLOCKED,          /* in its penalty time */
};

struct client_table;

struct client_table *client_table_new(void);
void client_table_free(struct client_table *t);

/*
 * A connection from ip: CLIENT_OK or CLIENT_UNTRACKED admit it (only the
 * first counts a session: call client_release() for it when the session
 * ends). For the refusals, *info is the session count or the seconds of
 * penalty left.
 */
enum client_verdict client_admit(struct client_table *t, const char *ip,
                                 uint64_t now_ms,
                                 const struct client_limits *lim,
                                 unsigned *info);

/* A session admitted with CLIENT_OK ended. */
void client_release(struct client_table *t, const char *ip, uint64_t now_ms,
                    const struct client_limits *lim);

/*
 * One error reply to a session of ip (admitted with CLIENT_OK). Returns 1
 * when this error started the client's penalty (log it), else 0.
 */
int client_error(struct client_table *t, const char *ip, uint64_t now_ms,
                 const struct client_limits *lim);

/*
 * The table key of a client address (string from util_addr_str): IPv4 as
 * it is, IPv6 as its /64 ("2001:db8:1:2::/64"), IPv4-mapped as IPv4.
 * out: at least 64 bytes.
 */
void client_key(const char *ip, char *out, size_t outlen);

/* Addresses tracked now (status, tests). */
size_t client_table_size(const struct client_table *t);

#endif
