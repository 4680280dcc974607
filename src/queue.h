/*
 * queue.h - the in-memory queue and the delivery scheduler.
 *
 * Every message in the spool is a struct qmsg; each of its recipients is
 * pending until a final outcome (delivered, failed) is journaled. Pending
 * recipients are grouped per destination (next hop: an MX domain, a static
 * route or the smarthost) into struct delivery objects, one per message and
 * destination. A destination (struct dest) has a FIFO of ready deliveries,
 * a list of deferred ones (each with its retry time), its open connections
 * and its own backoff. Connections (smtp_client.c) take deliveries from
 * their destination's ready list whenever they have room, so a message that
 * arrives while a connection is open rides that connection.
 *
 * Ownership: the queue owns messages, deliveries and destinations. A
 * delivery taken by a connection is "in flight" and owned by the connection
 * until it hands it back with queue_delivery_done(), which records the
 * outcome and frees or re-queues it. Outcomes reach the spool journal
 * asynchronously; a message is finalized (bounce, removal) only after all
 * its journal writes are durable.
 */
#ifndef PETREL_QUEUE_H
#define PETREL_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dns.h"
#include "buf.h"
#include "spool_format.h"

struct event_base;
struct spool;
struct dns;
struct mta_conn;

enum rcpt_state { RCPT_PENDING = 0, RCPT_DELIVERED, RCPT_FAILED };

struct qmsg {
	struct spool_env env;      /* envelope as in the spool file (owned) */
	uint8_t *rstate;           /* enum rcpt_state per recipient */
	char **rerr;               /* last reply or reason per recipient */
	uint64_t *rnext;           /* next retry time (ms) of pending rcpts */
	size_t npending;           /* recipients not final */
	unsigned journal_pending;  /* journal writes not yet durable */
	unsigned ndeliveries;      /* deliveries alive for this message */
	int hold;                  /* held by the administrator (journaled) */
	int removed;               /* removed by the administrator: no bounce */
	int finalizing;
	struct qmsg *next, *prev;  /* all messages */
};

enum delivery_state { DLV_READY, DLV_DEFERRED, DLV_INFLIGHT };

struct delivery {
	struct qmsg *msg;
	struct dest *dest;
	size_t *ridx;              /* indexes into msg->env.rcpt */
	size_t nr;
	enum delivery_state state;
	uint64_t next_try;         /* ms, when DLV_DEFERRED */
	unsigned attempts;
	struct delivery *next, *prev;
};

enum route_kind { ROUTE_MX, ROUTE_STATIC };

struct dest {
	char *key;                 /* "mx:example.org", "route:...", ... */
	char *domain;              /* recipient domain (MX lookups) */
	enum route_kind kind;
	const struct dest_conf *conf;
	char **hosts;              /* static: "host:port" entries (borrowed) */
	size_t nhosts;
	struct delivery *ready, *ready_tail;
	size_t nready;
	struct delivery *deferred; /* unordered */
	size_t ndeferred;
	struct mta_conn *conns;    /* open connections */
	unsigned nconns;
	unsigned connecting;       /* lookups + connects in progress */
	int proven;                /* a connection got ready since the last
	                              connection failure: connect in parallel */
	uint64_t no_chain_until;   /* learned (monotonic ms): its server
	                              loses commands pipelined after the end
	                              of data; do not chain until then */
	uint64_t backoff_until;    /* ms: no new connection before */
	unsigned failures;         /* consecutive connection failures */
	char *last_error;
	/* Resolved next hops (MX hosts or static hosts), cached. */
	struct dns_result *hops;
	uint64_t hops_expire;
	int resolving;
	uint64_t token;            /* dns lookups are matched by this */
	int q_draining;            /* the queue is shutting down */
	struct dest *next;
};

struct queue;

struct queue *queue_new(struct event_base *base, const struct config *cfg,
                        struct spool *sp, struct dns *dns);
void queue_free(struct queue *q);

/*
 * SIGHUP: use cfg from now on (routing of new messages, limits, retries);
 * existing destinations take their new [destination] settings. The old
 * config must stay allocated (connections point into it).
 */
void queue_reconfigure(struct queue *q, const struct config *cfg);

/*
 * Shutting down: start no new transaction; idle connections QUIT, busy
 * ones QUIT after their transactions. queue_busy() is non-zero while
 * transactions are in flight or connections are still open.
 */
void queue_drain(struct queue *q);
int queue_draining(const struct queue *q);
unsigned queue_busy(const struct queue *q);

/* Scan the spool (at start): load every message and its journal. */
int queue_load(struct queue *q);

/* A message just became durable in the spool (server, bounce): load it. */
void queue_inject(struct queue *q, const char *id);

/* ---- for connections (smtp_client.c) ---------------------------------- */

/* Next ready delivery of d for connection use, or NULL. */
struct delivery *queue_take(struct dest *d);

/* Outcome of one recipient of an in-flight delivery (i = index in dlv). */
/*
 * OUT_REQUEUE: no verdict (connection lost, sequencing hiccup): again at
 * once, counted as an attempt. OUT_NOT_TRIED: never sent (the server's
 * RCPTMAX split the recipients): again at once, not an attempt.
 */
enum rcpt_outcome { OUT_DELIVERED, OUT_DEFER, OUT_FAIL, OUT_REQUEUE,
                    OUT_NOT_TRIED };
void queue_rcpt_result(struct queue *q, struct delivery *dlv, size_t i,
                       enum rcpt_outcome out, const char *reply,
                       const char *loginfo, uint64_t dt_ms);

/*
 * The connection is done with dlv: every recipient got a result (those that
 * did not are re-queued at once). Frees or re-queues the delivery.
 */
void queue_delivery_done(struct queue *q, struct delivery *dlv);

/* A connection of d closed (error: reason or NULL for a clean close). */
void queue_conn_closed(struct queue *q, struct dest *d, struct mta_conn *c,
                       int failed, const char *reason);

/* A connection reached the server (greeting): reset the backoff. */
/* A connection got through its opening (ready for mail): the destination
 * works, so the connections a backlog needs may be opened in parallel. */
void queue_conn_ok(struct queue *q, struct dest *d);

struct spool *queue_spool(struct queue *q);
const struct config *queue_config(struct queue *q);

/*
 * Administration (control socket): run one request line ("queue", "summary",
 * "status", "flush [DOMAIN]", "deliver ID", "hold ID", "release ID",
 * "remove ID", "bounce ID", "inject ID") and append its output to out.
 * Returns 0, or -1 with "ERR <reason>\n" in out.
 */
struct smtp_server;
int queue_admin(struct queue *q, struct smtp_server *srv, const char *line,
                struct buf *out);

/* Counters for status/tests. */
unsigned queue_messages(const struct queue *q);

#endif
