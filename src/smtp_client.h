/*
 * smtp_client.h - one outbound SMTP connection (struct mta_conn): connect
 * with failover over the next hops, EHLO (HELO fallback), STARTTLS by
 * policy, then transactions taken from its destination's ready list,
 * pipelined (RFC 2920) and chunked (RFC 3030) when the server offers it,
 * for as long as the connection's limits allow. See
 * docs/internals/DELIVERY.md.
 */
#ifndef PETREL_SMTP_CLIENT_H
#define PETREL_SMTP_CLIENT_H

#include "dns.h"

struct event_base;
struct queue;
struct dest;
struct mta_conn;

/*
 * Open a connection for destination d to the first reachable address of
 * hops (copied). Returns NULL if nothing could even be attempted. The
 * connection links itself into d->conns and reports its end with
 * queue_conn_closed().
 */
struct mta_conn *mta_conn_new(struct event_base *base, struct queue *q,
                              struct dest *d, const struct dns_result *hops);

/* Deliveries may be ready for d: take what fits now. */
void mta_conn_kick(struct mta_conn *c);

/* 1 while the connection can take another delivery at once. */
int mta_conn_has_room(const struct mta_conn *c);

/* How many transactions the connection can carry at once (its window). */
unsigned mta_conn_capacity(const struct mta_conn *c);

/* Transactions in flight on the connection. */
unsigned mta_conn_busy(const struct mta_conn *c);

/* 1 until the connection is usable (connecting, greeting, EHLO, TLS). */
int mta_conn_starting(const struct mta_conn *c);

struct mta_conn *mta_conn_next(const struct mta_conn *c);

/* One line for `petrel status`: "C=3 H=host [ip]:port READY TLS1.3:... 17 messages, 2 in flight". */
void mta_conn_describe(const struct mta_conn *c, char *buf, size_t len);

/* Close at once (shutdown): in-flight deliveries are re-queued. */
void mta_conn_abort(struct mta_conn *c);

/* Free the TLS client contexts (at exit). */
void mta_tls_cleanup(void);

#endif
