/*
 * queue.c - the in-memory queue, routing, retries, journal and bounces.
 * See queue.h for the objects and their ownership, and
 * docs/internals/DELIVERY.md for the scheduling rules.
 *
 * Life of a recipient:
 *
 *   PENDING --(delivery READY on its destination)--> taken by a connection
 *      |            ^                                   |
 *      |            +--- OUT_REQUEUE (no verdict) ------+
 *      |            +--- OUT_DEFER: DEFERRED until next_try (backoff) --+
 *      |                                                |
 *      +--> DELIVERED (2xx)  --journal "D" (none if it completes the
 *      |                       message: the removal is the record)
 *      +--> FAILED (5xx, expiry, DNS says never) --journal "F"-->
 *
 * When every recipient of a message is final and every journal line is
 * durable, the message is finalized: a bounce (RFC 3464) to the sender if
 * any recipient failed and the sender is not <>, then the spool files are
 * removed.
 *
 * Routing (router_*): the recipient domain's [destination] section decides:
 * a static route, else the smarthost, else MX lookup of the domain. An
 * address literal user@[192.0.2.1] goes to that address.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>

#include "bounce.h"
#include "log.h"
#include "queue.h"
#include "queue_list.h"
#include "smtp_client.h"
#include "smtp_server.h"
#include "spool.h"
#include "util.h"

#define MSG_HASH 4096
#define HOPS_TTL_MS (300 * 1000)
#define TICK_MS 500
#define REQUEUE_MAX 5

struct queue {
	struct event_base *base;
	const struct config *cfg;
	struct spool *sp;
	struct dns *dns;
	struct qmsg *msgs;              /* all messages */
	struct qmsg *hash[MSG_HASH];    /* by id (chained through hnext) */
	struct dest *dests;
	unsigned nmsgs;
	uint64_t next_token;
	struct event *ev_tick;
	int stopping;
	int draining;
	int loading;
	uint64_t start_ms;
	/* Per-second counters of the last minute, for `petrel status`. */
	unsigned recv_count[60], dlv_count[60];
	uint64_t count_sec[60];
};

/* Per-message extras not in queue.h. */
struct qmsg_x {
	struct qmsg m;
	struct qmsg_x *hnext;
	uint64_t serial;
};

struct delivery_x {
	struct delivery d;
	uint8_t *verdict;   /* per ridx: 0 none yet, 1 defer, 2 requeue */
};

static void dest_kick(struct queue *q, struct dest *d);
static void msg_maybe_finalize(struct queue *q, struct qmsg *m);

/* ---- small helpers ----------------------------------------------------- */

static unsigned
hash_str(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static struct qmsg *
msg_find(struct queue *q, const char *id)
{
	struct qmsg_x *x = (struct qmsg_x *)q->hash[hash_str(id) % MSG_HASH];

	for (; x; x = x->hnext)
		if (strcmp(x->m.env.id, id) == 0)
			return &x->m;
	return NULL;
}

static uint64_t
backoff_ms(const struct queue *q, unsigned attempts)
{
	uint64_t ms = (uint64_t)q->cfg->retry_initial * 1000;
	uint64_t max = (uint64_t)q->cfg->retry_max * 1000;

	while (attempts > 1 && ms < max) {
		ms *= 2;
		attempts--;
	}
	return ms < max ? ms : max;
}

static const char *
rcpt_domain(const struct queue *q, const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at ? at + 1 : q->cfg->hostname;
}

static void
list_append(struct delivery **head, struct delivery **tail, struct delivery *d)
{
	d->next = NULL;
	d->prev = *tail;
	if (*tail)
		(*tail)->next = d;
	else
		*head = d;
	*tail = d;
}

static void
list_remove(struct delivery **head, struct delivery **tail, struct delivery *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		*head = d->next;
	if (d->next)
		d->next->prev = d->prev;
	else if (tail)
		*tail = d->prev;
	d->next = d->prev = NULL;
}

static void
count_event(struct queue *q, int delivered)
{
	uint64_t sec = util_now_ms() / 1000;
	size_t i = sec % 60;

	if (q->count_sec[i] != sec) {
		q->count_sec[i] = sec;
		q->recv_count[i] = 0;
		q->dlv_count[i] = 0;
	}
	if (delivered)
		q->dlv_count[i]++;
	else
		q->recv_count[i]++;
}

/* ---- routing ----------------------------------------------------------- */

/*
 * The route of a domain under cfg: kind, static hosts (borrowed from cfg),
 * settings, and the destination key (next hop).
 */
static void
route_of(const struct config *cfg, const char *domain, enum route_kind *kind,
         char ***hosts, size_t *nhosts, const struct dest_conf **conf,
         char *key, size_t keylen)
{
	const struct dest_conf *dc = config_find_dest(cfg, domain);

	*kind = ROUTE_MX;
	*hosts = NULL;
	*nhosts = 0;
	*conf = dc;
	if (dc->nroute > 0) {
		snprintf(key, keylen, "route:%s", dc->pattern);
		*kind = ROUTE_STATIC;
		*hosts = dc->route;
		*nhosts = dc->nroute;
	} else if (cfg->smarthost) {
		snprintf(key, keylen, "smarthost:%s", cfg->smarthost);
		*kind = ROUTE_STATIC;
		*hosts = (char **)&cfg->smarthost;
		*nhosts = 1;
	} else if (domain[0] == '[') {
		snprintf(key, keylen, "literal:%s", domain);
		*kind = ROUTE_STATIC;
	} else {
		size_t i, n = strlen(domain);
		snprintf(key, keylen, "mx:");
		for (i = 0; i < n && i + 4 < keylen; i++)
			key[3 + i] = (char)((domain[i] >= 'A' && domain[i] <= 'Z')
			    ? domain[i] + 32 : domain[i]);
		key[3 + i] = '\0';
	}
}

static struct dest *
dest_get(struct queue *q, const char *domain)
{
	char key[600];
	struct dest *d;
	enum route_kind kind;
	char **hosts;
	size_t nhosts;
	const struct dest_conf *dc;

	route_of(q->cfg, domain, &kind, &hosts, &nhosts, &dc, key, sizeof(key));
	for (d = q->dests; d; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->key = strdup(key);
	d->domain = strdup(domain);
	if (d->key == NULL || d->domain == NULL) {
		free(d->key);
		free(d->domain);
		free(d);
		return NULL;
	}
	d->kind = kind;
	d->conf = dc;
	d->hosts = hosts;
	d->nhosts = nhosts;
	d->token = ++q->next_token;
	d->next = q->dests;
	q->dests = d;
	return d;
}

/* Split "host:port" / "[v6]:port" into host and port. */
static int
split_hostport(const char *s, char *host, size_t hlen, unsigned *port)
{
	const char *colon;
	size_t n;
	uint64_t p;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':')
			return -1;
		n = (size_t)(rb - s - 1);
		if (n >= hlen)
			return -1;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		n = (size_t)(colon - s);
		if (n >= hlen)
			return -1;
		memcpy(host, s, n);
		host[n] = '\0';
	}
	if (util_parse_u64(colon + 1, strlen(colon + 1), &p) == -1 || p == 0 ||
	    p > 65535)
		return -1;
	*port = (unsigned)p;
	return 0;
}

/* A numeric host fills h directly. Returns 0, or -1 if host is a name. */
static int
host_literal(const char *host, unsigned port, struct dns_host *h)
{
	struct sockaddr_in s4;
	struct sockaddr_in6 s6;
	char tmp[DNS_NAME_MAX + 1];
	size_t n = strlen(host);

	/* "[1.2.3.4]" and "[IPv6:...]" address literals */
	if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
		const char *in = host + 1;
		size_t len = n - 2;
		if (len > 5 && strncasecmp(in, "IPv6:", 5) == 0) {
			in += 5;
			len -= 5;
		}
		if (len >= sizeof(tmp))
			return -1;
		memcpy(tmp, in, len);
		tmp[len] = '\0';
		host = tmp;
	}
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", host);
	memset(&s4, 0, sizeof(s4));
	memset(&s6, 0, sizeof(s6));
	if (inet_pton(AF_INET, host, &s4.sin_addr) == 1) {
		s4.sin_family = AF_INET;
		s4.sin_port = htons((uint16_t)port);
		memcpy(&h->addr[0], &s4, sizeof(s4));
		h->addrlen[0] = sizeof(s4);
		h->naddr = 1;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6.sin6_addr) == 1) {
		s6.sin6_family = AF_INET6;
		s6.sin6_port = htons((uint16_t)port);
		memcpy(&h->addr[0], &s6, sizeof(s6));
		h->addrlen[0] = sizeof(s6);
		h->naddr = 1;
		return 0;
	}
	return -1;
}

/* ---- failing and deferring whole destinations --------------------------- */

static void
journal_done(uint64_t token, const char *id, int err, void *arg)
{
	struct queue *q = arg;
	struct qmsg *m = msg_find(q, id);

	if (err)
		log_info("%s journal write failed: %s", id, strerror(err));
	if (m == NULL)
		return;
	m->journal_pending--;
	msg_maybe_finalize(q, m);
}

/*
 * One journal line (docs/internals/QUEUE.md) into line[size]: CR and LF of
 * the reason become spaces, a long reason is cut, and the line always
 * ends with its "\n". Returns its length.
 */
static size_t
journal_format(char *line, size_t size, char kind, size_t r, const char *why)
{
	int n = snprintf(line, size - 1, "%c %zu %llu%s%s", kind, r,
	    (unsigned long long)util_now_ms(), why ? " " : "", why ? why : "");
	size_t len = n < 0 ? 0 : (size_t)n > size - 2 ? size - 2 : (size_t)n;

	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[len++] = '\n';
	line[len] = '\0';
	return len;
}

static void
journal(struct queue *q, struct qmsg *m, char kind, size_t r, const char *why)
{
	char line[1024];

	journal_format(line, sizeof(line), kind, r, why);
	if (spool_journal(q->sp, m->env.id, line, journal_done, q, 0) == 0)
		m->journal_pending++;
	else
		log_info("%s cannot queue journal write", m->env.id);
}

/*
 * The administrator's commands are acknowledged only once durable: write
 * their journal line right here (one fdatasync on the loop; they are rare).
 */
static int
journal_sync(struct queue *q, struct qmsg *m, char kind, size_t r,
             const char *why)
{
	char path[PATH_MAX], line[1024];
	int fd, created = 0, rc = 0;
	size_t len;

	len = journal_format(line, sizeof(line), kind, r, why);
	snprintf(path, sizeof(path), "%s/journal/%s", q->cfg->spool_dir,
	    m->env.id);
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)) == -1 &&
	    errno == ENOENT) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		created = 1;
	}
	if (fd == -1)
		return -1;
	if (write(fd, line, len) != (ssize_t)len || fdatasync(fd) == -1)
		rc = -1;
	close(fd);
	if (rc == 0 && created) {
		snprintf(path, sizeof(path), "%s/journal", q->cfg->spool_dir);
		if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
		    fsync(fd) == -1)
			rc = -1;
		if (fd != -1)
			close(fd);
	}
	return rc;
}

static void
rcpt_final(struct queue *q, struct qmsg *m, size_t r, int delivered,
           const char *why)
{
	if (m->rstate[r] != RCPT_PENDING)
		return;
	m->rstate[r] = delivered ? RCPT_DELIVERED : RCPT_FAILED;
	m->npending--;
	if (!delivered) {
		free(m->rerr[r]);
		m->rerr[r] = strdup(why ? why : "failed");
		journal(q, m, 'F', r, why);
	}
	/* D lines: journal_delivered(), once the delivery is done. */
}

/*
 * The D lines of the recipients a delivery delivered. When they complete
 * a message that needs no bounce, none is written: msg_maybe_finalize()
 * removes the message in the same call (queue_delivery_done ->
 * delivery_free), and that removal, made durable by the spool worker's
 * directory fsync, is the record. This saves one journal file, its
 * fdatasync and a directory fsync per message on the common path; a crash
 * before the removal is durable redelivers the message, as a crash before
 * the D line would.
 */
static void
journal_delivered(struct queue *q, struct delivery *dlv)
{
	struct qmsg *m = dlv->msg;
	int completes = m->npending == 0 && m->journal_pending == 0 &&
	    m->ndeliveries == 1 && !m->finalizing && !q->stopping;

	for (size_t r = 0; completes && r < m->env.nrcpt; r++)
		if (m->rstate[r] == RCPT_FAILED)
			completes = 0;     /* a bounce first: keep the lines */
	if (completes)
		return;
	/* Recipients of a delivery were all pending when it started, so
	 * DELIVERED ones were delivered by it. */
	for (size_t i = 0; i < dlv->nr; i++)
		if (m->rstate[dlv->ridx[i]] == RCPT_DELIVERED)
			journal(q, m, 'D', dlv->ridx[i], NULL);
}

static void
delivery_free(struct queue *q, struct delivery *dlv)
{
	struct qmsg *m = dlv->msg;

	free(((struct delivery_x *)dlv)->verdict);
	free(dlv->ridx);
	free(dlv);
	m->ndeliveries--;
	msg_maybe_finalize(q, m);
}

/* Fail every recipient of a delivery (permanent routing failure). */
static void
delivery_fail(struct queue *q, struct delivery *dlv, const char *why)
{
	for (size_t i = 0; i < dlv->nr; i++) {
		log_info("%s ** %s: %s", dlv->msg->env.id,
		    dlv->msg->env.rcpt[dlv->ridx[i]], why);
		rcpt_final(q, dlv->msg, dlv->ridx[i], 0, why);
	}
	delivery_free(q, dlv);
}

/* Defer a delivery (not in any list) until next_try, or expire it. */
static void
delivery_defer(struct queue *q, struct delivery *dlv, const char *why,
               uint64_t next_try)
{
	struct qmsg *m = dlv->msg;
	struct dest *d = dlv->dest;
	uint64_t now = util_now_ms();

	for (size_t i = 0; i < dlv->nr; i++) {
		size_t r = dlv->ridx[i];
		if (why) {
			free(m->rerr[r]);
			m->rerr[r] = strdup(why);
		}
	}
	if (now > m->env.time_ms &&
	    now - m->env.time_ms >= (uint64_t)q->cfg->max_queue_time * 1000) {
		char reason[700];
		snprintf(reason, sizeof(reason), "retry timeout exceeded; last "
		    "error: %s", why ? why : (m->rerr[dlv->ridx[0]]
		    ? m->rerr[dlv->ridx[0]] : "none"));
		delivery_fail(q, dlv, reason);
		return;
	}
	dlv->state = DLV_DEFERRED;
	dlv->next_try = next_try;
	for (size_t i = 0; i < dlv->nr; i++)
		m->rnext[dlv->ridx[i]] = next_try;
	dlv->next = d->deferred;
	dlv->prev = NULL;
	if (d->deferred)
		d->deferred->prev = dlv;
	d->deferred = dlv;
	d->ndeferred++;
}

/* Every ready delivery of d: defer (temporary) or fail (permanent). */
static void
dest_fail_ready(struct queue *q, struct dest *d, int permanent,
                const char *why)
{
	uint64_t until = d->backoff_until;

	while (d->ready) {
		struct delivery *dlv = d->ready;
		list_remove(&d->ready, &d->ready_tail, dlv);
		d->nready--;
		if (permanent) {
			delivery_fail(q, dlv, why);
		} else {
			dlv->attempts++;
			for (size_t i = 0; i < dlv->nr; i++)
				log_info("%s == %s R=%s: %s; retry in %llus",
				    dlv->msg->env.id,
				    dlv->msg->env.rcpt[dlv->ridx[i]], d->key, why,
				    (unsigned long long)((until - util_now_ms()) /
				    1000));
			delivery_defer(q, dlv, why, until);
		}
	}
}

static void
dest_backoff(struct queue *q, struct dest *d, const char *why)
{
	d->failures++;
	d->backoff_until = util_now_ms() + backoff_ms(q, d->failures);
	free(d->last_error);
	d->last_error = strdup(why ? why : "connection failed");
	dest_fail_ready(q, d, 0, why ? why : "connection failed");
}

/* ---- DNS ---------------------------------------------------------------- */

static struct dest *
dest_by_token(struct queue *q, uint64_t token)
{
	for (struct dest *d = q->dests; d; d = d->next)
		if (d->token == token)
			return d;
	return NULL;
}

static void
dest_resolved(uint64_t token, const struct dns_result *res, void *arg)
{
	struct queue *q = arg;
	struct dest *d = dest_by_token(q, token);

	if (d == NULL || q->stopping)
		return;
	d->resolving = 0;
	if (res->status != DNS_OK) {
		char why[400];
		snprintf(why, sizeof(why), "%s %s", res->temporary ?
		    "451 4.4.3" : "550 5.1.2", res->why);
		log_info("R=%s DNS lookup failed: %s", d->key, res->why);
		if (res->temporary)
			dest_backoff(q, d, why);
		else
			dest_fail_ready(q, d, 1, why);
		return;
	}
	if (d->hops == NULL && (d->hops = malloc(sizeof(*d->hops))) == NULL)
		return;
	*d->hops = *res;
	d->hops_expire = util_now_ms() + HOPS_TTL_MS;
	dest_kick(q, d);
}

/*
 * Make d->hops valid. Returns 1 if they are, 0 if a lookup is running
 * (dest_resolved kicks the destination again).
 */
static int
dest_hops(struct queue *q, struct dest *d)
{
	if (d->hops && util_now_ms() < d->hops_expire)
		return 1;
	if (d->resolving)
		return 0;
	if (d->kind == ROUTE_STATIC) {
		struct dns_result res;
		char host[DNS_NAME_MAX + 1];
		unsigned port;

		memset(&res, 0, sizeof(res));
		if (d->nhosts == 0) { /* address literal domain */
			if (host_literal(d->domain, d->conf->port, &res.hosts[0]) == 0)
				res.nhosts = 1;
		}
		for (size_t i = 0; i < d->nhosts && res.nhosts < DNS_MAX_HOSTS;
		    i++) {
			if (split_hostport(d->hosts[i], host, sizeof(host),
			    &port) == -1)
				continue;
			if (host_literal(host, port, &res.hosts[res.nhosts]) == 0) {
				res.nhosts++;
				continue;
			}
			/* A name: resolve it (first named entry decides). */
			if (res.nhosts == 0 && q->dns) {
				d->resolving = 1;
				if (dns_resolve_host(q->dns, host, (uint16_t)port,
				    d->token, dest_resolved, q) == 0)
					return 0;
				d->resolving = 0;
			}
		}
		if (res.nhosts == 0) {
			dest_fail_ready(q, d, 1, "550 5.4.4 no usable address in "
			    "the route");
			return 0;
		}
		if (d->hops == NULL &&
		    (d->hops = malloc(sizeof(*d->hops))) == NULL)
			return 0;
		*d->hops = res;
		d->hops_expire = UINT64_MAX;
		return 1;
	}
	if (q->dns == NULL) {
		dest_backoff(q, d, "451 4.4.3 no DNS resolver");
		return 0;
	}
	d->resolving = 1;
	if (dns_resolve_mx(q->dns, d->domain, (uint16_t)d->conf->port, d->token,
	    dest_resolved, q) == -1) {
		d->resolving = 0;
		dest_backoff(q, d, "451 4.4.3 DNS lookup could not start");
	}
	return 0;
}

/* ---- scheduling --------------------------------------------------------- */

/* 1 if d should get one more connection now (see dest_kick). */
static int
dest_wants_conn(struct queue *q, struct dest *d)
{
	struct mta_conn *c;
	size_t absorb = 0;

	if (q->stopping || q->draining || q->cfg->queue_only || d->nready == 0)
		return 0;
	if (util_now_ms() < d->backoff_until)
		return 0;
	if (d->nconns >= d->conf->max_connections)
		return 0;
	/*
	 * One connection at a time until one to this destination has got
	 * through its opening (greeting, EHLO, STARTTLS) since the last
	 * failure (a dead or broken host costs one attempt, not
	 * max_connections); after that, as many in parallel as the backlog
	 * needs, so a burst pays the TCP + TLS set-up once, not once per
	 * connection in turn.
	 */
	if (d->connecting > 0 && !d->proven)
		return 0;
	/*
	 * A new connection only for a backlog the open and opening ones
	 * cannot absorb in their next window: else it would often arrive to
	 * find nothing left (one TCP + TLS setup for no message).
	 */
	for (c = d->conns; c; c = mta_conn_next(c)) {
		if (mta_conn_has_room(c))
			return 0;
		absorb += mta_conn_capacity(c);
	}
	return d->nready > absorb;
}

static void
dest_kick(struct queue *q, struct dest *d)
{
	struct mta_conn *c;

	if (q->stopping || q->draining || d->nready == 0 || q->cfg->queue_only)
		return;
	for (c = d->conns; c && d->nready > 0; c = mta_conn_next(c))
		mta_conn_kick(c);
	/* Bounded: each turn opens one connection, at most max_connections
	 * are open, and a connection that fails at once clears proven. */
	for (unsigned n = 0; n < d->conf->max_connections; n++) {
		if (!dest_wants_conn(q, d) || !dest_hops(q, d))
			return;
		mta_conn_new(q->base, q, d, d->hops);
	}
}

struct delivery *
queue_take(struct dest *d)
{
	struct delivery *dlv;

	if (d->q_draining)
		return NULL;
	for (dlv = d->ready; dlv; dlv = dlv->next)
		if (!dlv->msg->hold)
			break;
	if (dlv == NULL)
		return NULL;
	list_remove(&d->ready, &d->ready_tail, dlv);
	d->nready--;
	dlv->state = DLV_INFLIGHT;
	return dlv;
}

static void
dest_ready(struct dest *d, struct delivery *dlv, int front)
{
	dlv->state = DLV_READY;
	if (front && d->ready) {
		dlv->prev = NULL;
		dlv->next = d->ready;
		d->ready->prev = dlv;
		d->ready = dlv;
	} else {
		list_append(&d->ready, &d->ready_tail, dlv);
	}
	d->nready++;
}

static struct delivery *
delivery_new(struct qmsg *m, struct dest *d, size_t *ridx, size_t nr)
{
	struct delivery_x *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return NULL;
	x->d.msg = m;
	x->d.dest = d;
	x->d.ridx = ridx;
	x->d.nr = nr;
	x->verdict = calloc(nr ? nr : 1, 1);
	if (x->verdict == NULL) {
		free(x);
		return NULL;
	}
	m->ndeliveries++;
	return &x->d;
}

/* Group the message's pending recipients by destination: deliveries. */
static void
msg_route(struct queue *q, struct qmsg *m)
{
	size_t n = m->env.nrcpt;
	uint8_t *done = calloc(n ? n : 1, 1);

	if (done == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		struct dest *d;
		size_t *ridx, nr = 0;

		if (done[i] || m->rstate[i] != RCPT_PENDING)
			continue;
		d = dest_get(q, rcpt_domain(q, m->env.rcpt[i]));
		if (d == NULL || (ridx = calloc(n, sizeof(*ridx))) == NULL)
			break;
		for (size_t j = i; j < n; j++) {
			if (done[j] || m->rstate[j] != RCPT_PENDING)
				continue;
			if (dest_get(q, rcpt_domain(q, m->env.rcpt[j])) != d)
				continue;
			done[j] = 1;
			ridx[nr++] = j;
		}
		struct delivery *dlv = delivery_new(m, d, ridx, nr);
		if (dlv == NULL) {
			free(ridx);
			break;
		}
		dest_ready(d, dlv, 0);
		dest_kick(q, d);
	}
	free(done);
}

void
queue_rcpt_result(struct queue *q, struct delivery *dlv, size_t i,
                  enum rcpt_outcome out, const char *reply,
                  const char *loginfo, uint64_t dt_ms)
{
	struct qmsg *m = dlv->msg;
	struct delivery_x *x = (struct delivery_x *)dlv;
	size_t r = dlv->ridx[i];
	uint64_t qt = util_now_ms() - m->env.time_ms;

	switch (out) {
	case OUT_DELIVERED:
		log_info("%s => %s %s C=\"%s\" QT=%llums DT=%llums", m->env.id,
		    m->env.rcpt[r], loginfo, reply ? reply : "",
		    (unsigned long long)qt, (unsigned long long)dt_ms);
		rcpt_final(q, m, r, 1, NULL);
		count_event(q, 1);
		break;
	case OUT_FAIL:
		log_info("%s ** %s %s: %s", m->env.id, m->env.rcpt[r], loginfo,
		    reply ? reply : "failed");
		rcpt_final(q, m, r, 0, reply);
		break;
	case OUT_DEFER:
		log_info("%s == %s %s: %s; retry in %llus", m->env.id,
		    m->env.rcpt[r], loginfo, reply ? reply : "deferred",
		    (unsigned long long)(backoff_ms(q, dlv->attempts + 1) / 1000));
		free(m->rerr[r]);
		m->rerr[r] = strdup(reply ? reply : "deferred");
		x->verdict[i] = 1;
		break;
	case OUT_REQUEUE:
		x->verdict[i] = 2;
		break;
	case OUT_NOT_TRIED:
		x->verdict[i] = 3;
		break;
	}
}

void
queue_delivery_done(struct queue *q, struct delivery *dlv)
{
	struct delivery_x *x = (struct delivery_x *)dlv;
	struct qmsg *m = dlv->msg;
	struct dest *d = dlv->dest;
	size_t *defer = NULL, *requeue = NULL, *later = NULL;
	size_t nd = 0, nq = 0, nl = 0;

	journal_delivered(q, dlv);
	if (dlv->nr > 0) {
		defer = calloc(dlv->nr, sizeof(*defer));
		requeue = calloc(dlv->nr, sizeof(*requeue));
		later = calloc(dlv->nr, sizeof(*later));
	}
	for (size_t i = 0; i < dlv->nr; i++) {
		size_t r = dlv->ridx[i];
		if (m->rstate[r] != RCPT_PENDING)
			continue;
		if (defer == NULL || requeue == NULL || later == NULL)
			break; /* out of memory: the tick finds nothing; restart does */
		if (x->verdict[i] == 3)
			later[nl++] = r;
		else if (x->verdict[i] == 1 || dlv->attempts >= REQUEUE_MAX)
			defer[nd++] = r;
		else
			requeue[nq++] = r;
	}
	if (nl > 0) {
		struct delivery *n = delivery_new(m, d, later, nl);
		if (n) {
			n->attempts = dlv->attempts;
			later = NULL;
			dest_ready(d, n, 1);
		}
	}
	if (nq > 0) {
		struct delivery *n = delivery_new(m, d, requeue, nq);
		if (n) {
			n->attempts = dlv->attempts + 1;
			requeue = NULL;
			dest_ready(d, n, 1);
		}
	}
	if (nd > 0) {
		struct delivery *n = delivery_new(m, d, defer, nd);
		if (n) {
			n->attempts = dlv->attempts + 1;
			defer = NULL;
			delivery_defer(q, n, NULL, util_now_ms() +
			    backoff_ms(q, n->attempts));
		}
	}
	free(defer);
	free(requeue);
	free(later);
	delivery_free(q, dlv);
	dest_kick(q, d);
}

void
queue_conn_ok(struct queue *q, struct dest *d)
{
	d->failures = 0;
	d->backoff_until = 0;
	d->proven = 1;
	dest_kick(q, d);   /* the other connections the backlog needs */
}

void
queue_conn_closed(struct queue *q, struct dest *d, struct mta_conn *c,
                  int failed, const char *reason)
{
	if (failed)
		d->proven = 0;
	if (q->stopping)
		return;
	if (failed) {
		log_info("R=%s connection failed: %s", d->key,
		    reason ? reason : "unknown");
		if (d->nconns == 0 && d->connecting == 0) {
			dest_backoff(q, d, reason);
		} else {
			/* Others are still open and carry on; no new one
			 * before the backoff (a server that greets and then
			 * fails every session must not be redialled in a
			 * loop). */
			d->failures++;
			d->backoff_until = util_now_ms() +
			    backoff_ms(q, d->failures);
		}
	}
	dest_kick(q, d);
}

/* Timer: deferred deliveries whose time has come go back to ready. */
static void
queue_tick(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	uint64_t now = util_now_ms();

	for (struct dest *d = q->dests; d; d = d->next) {
		struct delivery *dlv = d->deferred, *next;
		for (; dlv; dlv = next) {
			next = dlv->next;
			if (dlv->next_try > now || dlv->msg->hold)
				continue;
			if (dlv->prev)
				dlv->prev->next = dlv->next;
			else
				d->deferred = dlv->next;
			if (dlv->next)
				dlv->next->prev = dlv->prev;
			d->ndeferred--;
			dest_ready(d, dlv, 0);
		}
		if (d->nready > 0 && now >= d->backoff_until)
			dest_kick(q, d);
	}
}

/* ---- messages ----------------------------------------------------------- */

static void
msg_free(struct queue *q, struct qmsg *m)
{
	struct qmsg_x *x = (struct qmsg_x *)m, **pp;

	pp = (struct qmsg_x **)&q->hash[hash_str(m->env.id) % MSG_HASH];
	for (; *pp; pp = &(*pp)->hnext)
		if (*pp == x) {
			*pp = x->hnext;
			break;
		}
	if (m->prev)
		m->prev->next = m->next;
	else
		q->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	for (size_t i = 0; i < m->env.nrcpt; i++)
		free(m->rerr[i]);
	free(m->rerr);
	free(m->rstate);
	free(m->rnext);
	spool_env_free(&m->env);
	free(x);
	q->nmsgs--;
}

/* "Completed" only once the removal is durable (directory fsync'ed): a
 * message logged Completed is never delivered again, even after a crash. */
static void
remove_done(uint64_t token, const char *id, int err, void *arg)
{
	if (err)
		log_info("%s removing spool files: %s", id, strerror(err));
	else
		log_info("%s Completed", id);
}

static struct qmsg *
msg_by_serial(struct queue *q, uint64_t serial)
{
	for (struct qmsg *m = q->msgs; m; m = m->next)
		if (((struct qmsg_x *)m)->serial == serial)
			return m;
	return NULL;
}

static void
msg_complete(struct queue *q, struct qmsg *m)
{
	spool_remove(q->sp, m->env.id, remove_done, q, 0);
	msg_free(q, m);
}

static void
bounce_done(uint64_t token, const char *id, int err, void *arg)
{
	struct queue *q = arg;
	struct qmsg *m = msg_by_serial(q, token);

	if (err) {
		log_info("bounce %s could not be spooled: %s", id, strerror(err));
		if (m)
			m->finalizing = 0; /* try again at the next start */
		return;
	}
	if (m)
		log_info("%s <= <> R=%s bounce for %s", id, m->env.id,
		    m->env.sender);
	queue_inject(q, id);
	if (m)
		msg_complete(q, m);
}

static void
msg_maybe_finalize(struct queue *q, struct qmsg *m)
{
	size_t nfail = 0;

	if (m->npending > 0 || m->journal_pending > 0 || m->ndeliveries > 0 ||
	    m->finalizing || q->stopping)
		return;
	m->finalizing = 1;
	if (m->removed) {
		msg_complete(q, m);
		return;
	}
	for (size_t i = 0; i < m->env.nrcpt; i++)
		if (m->rstate[i] == RCPT_FAILED)
			nfail++;
	if (nfail > 0 && m->env.sender[0] != '\0') {
		if (bounce_send(q->sp, q->cfg, m, bounce_done, q,
		    ((struct qmsg_x *)m)->serial) == 0)
			return;
		log_info("%s bounce could not be generated", m->env.id);
	} else if (nfail > 0) {
		log_info("%s bounce not sent: null sender", m->env.id);
	}
	msg_complete(q, m);
}

/* Apply the journal journal/<id> to m. */
static void
msg_read_journal(struct queue *q, struct qmsg *m)
{
	char path[PATH_MAX], line[1200];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/journal/%s", q->cfg->spool_dir,
	    m->env.id);
	if ((fp = fopen(path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), fp)) {
		const char *why;
		size_t whylen;
		uint64_t r;
		char kind;

		if (spool_journal_parse(line, strlen(line), &kind, &r, &why,
		    &whylen) == -1)
			continue;
		if (kind == 'H' || kind == 'U') {
			m->hold = kind == 'H';
			continue;
		}
		if (kind == 'X') {
			m->removed = 1;
			continue;
		}
		if (r >= m->env.nrcpt || m->rstate[r] != RCPT_PENDING)
			continue;
		m->rstate[r] = kind == 'D' ? RCPT_DELIVERED : RCPT_FAILED;
		m->npending--;
		if (kind == 'F') {
			free(m->rerr[r]);
			m->rerr[r] = why ? strndup(why, whylen) : strdup("failed");
		}
	}
	fclose(fp);
	if (m->removed) {
		for (size_t r = 0; r < m->env.nrcpt; r++)
			if (m->rstate[r] == RCPT_PENDING) {
				m->rstate[r] = RCPT_FAILED;
				m->npending--;
			}
	}
}

static struct qmsg *
msg_load(struct queue *q, const char *id)
{
	struct qmsg_x *x;
	struct qmsg *m;
	char err[512];
	unsigned h;

	if (msg_find(q, id))
		return NULL; /* already known */
	if ((x = calloc(1, sizeof(*x))) == NULL)
		return NULL;
	m = &x->m;
	if (queue_read_envelope(q->cfg->spool_dir, id, &m->env, NULL, err,
	    sizeof(err)) == -1) {
		log_info("%s cannot be loaded: %s", id, err);
		free(x);
		return NULL;
	}
	m->rstate = calloc(m->env.nrcpt, 1);
	m->rerr = calloc(m->env.nrcpt, sizeof(*m->rerr));
	m->rnext = calloc(m->env.nrcpt, sizeof(*m->rnext));
	if (!m->rstate || !m->rerr || !m->rnext) {
		free(m->rstate);
		free(m->rerr);
		free(m->rnext);
		spool_env_free(&m->env);
		free(x);
		return NULL;
	}
	m->npending = m->env.nrcpt;
	x->serial = ++q->next_token;
	h = hash_str(m->env.id) % MSG_HASH;
	x->hnext = (struct qmsg_x *)q->hash[h];
	q->hash[h] = m;
	m->next = q->msgs;
	if (q->msgs)
		q->msgs->prev = m;
	q->msgs = m;
	q->nmsgs++;
	msg_read_journal(q, m);
	return m;
}

void
queue_inject(struct queue *q, const char *id)
{
	struct qmsg *m = msg_load(q, id);

	if (m == NULL)
		return;
	if (!q->loading)
		count_event(q, 0);
	if (m->npending == 0)
		msg_maybe_finalize(q, m);
	else
		msg_route(q, m);
}

int
queue_load(struct queue *q)
{
	char path[PATH_MAX];
	struct dirent *de;
	unsigned n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "%s/queue", q->cfg->spool_dir);
	if ((dir = opendir(path)) == NULL)
		return -1;
	q->loading = 1;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		queue_inject(q, de->d_name);
		n++;
	}
	q->loading = 0;
	closedir(dir);
	/*
	 * A journal whose message file is gone was left by a crash during
	 * removal (the message file goes first). A journal whose message file
	 * is still there belongs to it, even if the message was just
	 * finalized and its removal is still queued: never delete that one,
	 * or a crash now would deliver its recipients again.
	 */
	snprintf(path, sizeof(path), "%s/journal", q->cfg->spool_dir);
	if ((dir = opendir(path)) != NULL) {
		char qpath[PATH_MAX];
		while ((de = readdir(dir)) != NULL) {
			if (de->d_name[0] == '.' || msg_find(q, de->d_name))
				continue;
			if ((size_t)snprintf(qpath, sizeof(qpath), "%s/queue/%s",
			    q->cfg->spool_dir, de->d_name) >= sizeof(qpath) ||
			    access(qpath, F_OK) == 0 || errno != ENOENT)
				continue;
			log_info("%s removing stale journal", de->d_name);
			unlinkat(dirfd(dir), de->d_name, 0);
		}
		closedir(dir);
	}
	log_info("queue loaded: %u messages", n);
	return 0;
}

/* ---- setup -------------------------------------------------------------- */

struct queue *
queue_new(struct event_base *base, const struct config *cfg, struct spool *sp,
          struct dns *dns)
{
	struct queue *q = calloc(1, sizeof(*q));
	struct timeval tv = { 0, TICK_MS * 1000 };

	if (q == NULL)
		return NULL;
	q->base = base;
	q->cfg = cfg;
	q->sp = sp;
	q->dns = dns;
	q->start_ms = util_now_ms();
	q->ev_tick = event_new(base, -1, EV_PERSIST, queue_tick, q);
	if (q->ev_tick == NULL) {
		free(q);
		return NULL;
	}
	event_add(q->ev_tick, &tv);
	return q;
}

static void
dest_free_list(struct delivery *dlv)
{
	while (dlv) {
		struct delivery *n = dlv->next;
		free(((struct delivery_x *)dlv)->verdict);
		free(dlv->ridx);
		free(dlv);
		dlv = n;
	}
}

void
queue_free(struct queue *q)
{
	if (q == NULL)
		return;
	q->stopping = 1;
	for (struct dest *d = q->dests; d; d = d->next)
		while (d->conns)
			mta_conn_abort(d->conns);
	while (q->dests) {
		struct dest *d = q->dests;
		q->dests = d->next;
		dest_free_list(d->ready);
		dest_free_list(d->deferred);
		free(d->hops);
		free(d->key);
		free(d->domain);
		free(d->last_error);
		free(d);
	}
	while (q->msgs)
		msg_free(q, q->msgs);
	event_free(q->ev_tick);
	free(q);
}

struct spool *
queue_spool(struct queue *q)
{
	return q->sp;
}

const struct config *
queue_config(struct queue *q)
{
	return q->cfg;
}

unsigned
queue_messages(const struct queue *q)
{
	return q->nmsgs;
}

/* ---- administration (control socket) ------------------------------------ */

/* Unlink dlv from its destination's ready or deferred list. */
static void
dest_unlist(struct dest *d, struct delivery *dlv)
{
	if (dlv->state == DLV_READY) {
		list_remove(&d->ready, &d->ready_tail, dlv);
		d->nready--;
	} else if (dlv->state == DLV_DEFERRED) {
		list_remove(&d->deferred, NULL, dlv);
		d->ndeferred--;
	}
}

/*
 * Move deferred deliveries back to ready: of message m (or of every
 * message when NULL) whose first recipient's domain is domain (or any
 * domain when NULL). Returns how many.
 */
static unsigned
queue_wake(struct queue *q, struct qmsg *m, const char *domain)
{
	unsigned n = 0;

	for (struct dest *d = q->dests; d; d = d->next) {
		struct delivery *dlv = d->deferred, *next;
		int hit = 0;

		for (; dlv; dlv = next) {
			next = dlv->next;
			if (m && dlv->msg != m)
				continue;
			if (dlv->msg->hold)
				continue;
			if (domain && strcasecmp(rcpt_domain(q,
			    dlv->msg->env.rcpt[dlv->ridx[0]]), domain) != 0)
				continue;
			dest_unlist(d, dlv);
			dest_ready(d, dlv, 0);
			n++;
			hit = 1;
		}
		if (hit || (m == NULL && domain == NULL)) {
			d->backoff_until = 0;
			d->failures = 0;
		}
		if (d->nready > 0)
			dest_kick(q, d);
	}
	return n;
}

/* Drop m's queued (not in-flight) deliveries. */
static void
msg_unqueue(struct queue *q, struct qmsg *m)
{
	for (struct dest *d = q->dests; d; d = d->next) {
		struct delivery *lists[2] = { d->ready, d->deferred }, *dlv, *next;
		for (int l = 0; l < 2; l++)
			for (dlv = lists[l]; dlv; dlv = next) {
				next = dlv->next;
				if (dlv->msg != m)
					continue;
				dest_unlist(d, dlv);
				m->ndeliveries--;
				free(((struct delivery_x *)dlv)->verdict);
				free(dlv->ridx);
				free(dlv);
			}
	}
}

static int
msg_cmp_time(const void *a, const void *b)
{
	const struct qmsg *x = *(const struct qmsg *const *)a;
	const struct qmsg *y = *(const struct qmsg *const *)b;

	if (x->env.time_ms != y->env.time_ms)
		return x->env.time_ms < y->env.time_ms ? -1 : 1;
	return strcmp(x->env.id, y->env.id);
}

static void
admin_queue(struct queue *q, struct buf *out)
{
	uint64_t now = util_now_ms();
	struct qmsg **v;
	size_t n = 0;

	if (q->nmsgs == 0) {
		buf_printf(out, "Mail queue is empty\n");
		return;
	}
	if ((v = calloc(q->nmsgs, sizeof(*v))) == NULL) {
		buf_printf(out, "out of memory\n");
		return;
	}
	for (struct qmsg *m = q->msgs; m && n < q->nmsgs; m = m->next)
		v[n++] = m;
	qsort(v, n, sizeof(*v), msg_cmp_time);
	for (size_t i = 0; i < n; i++) {
		struct qmsg *m = v[i];
		char age[16];

		util_fmt_age(age, sizeof(age), now > m->env.time_ms ?
		    now - m->env.time_ms : 0);
		buf_printf(out, "%s %5s %8llu <%s>%s\n", m->env.id, age,
		    (unsigned long long)m->env.content_size, m->env.sender,
		    m->hold ? " (held)" : "");
		for (size_t r = 0; r < m->env.nrcpt; r++) {
			char when[16];
			if (m->rstate[r] != RCPT_PENDING)
				continue;
			buf_printf(out, "        <%s>", m->env.rcpt[r]);
			if (m->rnext[r] > now) {
				util_fmt_age(when, sizeof(when), m->rnext[r] - now);
				buf_printf(out, " next retry in %s", when);
			}
			if (m->rerr[r])
				buf_printf(out, " (%s)", m->rerr[r]);
			buf_printf(out, "\n");
		}
		buf_printf(out, "\n");
	}
	buf_printf(out, "%zu message%s in queue\n", n, n == 1 ? "" : "s");
	free(v);
}

/* qshape: per destination, deliveries by age (minutes). */
static void
admin_summary(struct queue *q, struct buf *out)
{
	static const unsigned edges[] = { 5, 10, 20, 40, 80, 160, 320, 640, 1280 };
	enum { NB = sizeof(edges) / sizeof(edges[0]) + 1 };
	unsigned tot[NB + 1] = { 0 };
	uint64_t now = util_now_ms();

	buf_printf(out, "%-40s %6s", "destination", "T");
	for (size_t b = 0; b < NB - 1; b++)
		buf_printf(out, " %5u", edges[b]);
	buf_printf(out, " %5s\n", "1280+");
	for (struct dest *d = q->dests; d; d = d->next) {
		unsigned cnt[NB + 1] = { 0 };
		struct delivery *lists[2] = { d->ready, d->deferred };
		for (int l = 0; l < 2; l++)
			for (struct delivery *dlv = lists[l]; dlv; dlv = dlv->next) {
				uint64_t min = (now - dlv->msg->env.time_ms) / 60000;
				size_t b = 0;
				while (b < NB - 1 && min >= edges[b])
					b++;
				cnt[b]++;
				cnt[NB]++;
			}
		if (cnt[NB] == 0)
			continue;
		buf_printf(out, "%-40s %6u", d->key, cnt[NB]);
		for (size_t b = 0; b < NB; b++) {
			buf_printf(out, " %5u", cnt[b]);
			tot[b] += cnt[b];
		}
		tot[NB] += cnt[NB];
		buf_printf(out, "\n");
	}
	buf_printf(out, "%-40s %6u", "TOTAL", tot[NB]);
	for (size_t b = 0; b < NB; b++)
		buf_printf(out, " %5u", tot[b]);
	buf_printf(out, "\n");
}

static void
admin_status(struct queue *q, struct smtp_server *srv, struct buf *out)
{
	uint64_t now = util_now_ms(), sec = now / 1000;
	unsigned recv = 0, dlv = 0, pending = 0, conns = 0;
	char up[16];

	for (size_t i = 0; i < 60; i++)
		if (q->count_sec[i] + 60 > sec) {
			recv += q->recv_count[i];
			dlv += q->dlv_count[i];
		}
	for (struct qmsg *m = q->msgs; m; m = m->next)
		pending += (unsigned)m->npending;
	for (struct dest *d = q->dests; d; d = d->next)
		conns += d->nconns;
	util_fmt_age(up, sizeof(up), now - q->start_ms);
	buf_printf(out, "petrel %s, pid %d, up %s\n", PETREL_VERSION,
	    (int)getpid(), up);
	buf_printf(out, "sessions in: %u\n", srv ? smtp_server_sessions(srv) : 0);
	buf_printf(out, "connections out: %u\n", conns);
	buf_printf(out, "queue: %u messages, %u recipients pending%s\n",
	    q->nmsgs, pending, q->cfg->queue_only ? " (queue_only)" : "");
	buf_printf(out, "last minute: %u messages received, %u recipients "
	    "delivered\n", recv, dlv);
	for (struct dest *d = q->dests; d; d = d->next) {
		if (d->nconns == 0 && d->nready == 0 && d->ndeferred == 0)
			continue;
		buf_printf(out, "%s: %zu ready, %zu deferred, %u connections",
		    d->key, d->nready, d->ndeferred, d->nconns);
		if (d->backoff_until > now) {
			char b[16];
			util_fmt_age(b, sizeof(b), d->backoff_until - now);
			buf_printf(out, ", backing off %s (%s)", b,
			    d->last_error ? d->last_error : "");
		}
		buf_printf(out, "\n");
		for (struct mta_conn *c = d->conns; c; c = mta_conn_next(c)) {
			char line[512];
			mta_conn_describe(c, line, sizeof(line));
			buf_printf(out, "    %s\n", line);
		}
	}
}

int
queue_admin(struct queue *q, struct smtp_server *srv, const char *line,
            struct buf *out)
{
	char cmd[32], arg[256];
	struct qmsg *m = NULL;
	const char *sp = strchr(line, ' ');
	size_t clen = sp ? (size_t)(sp - line) : strlen(line);

	if (clen == 0 || clen >= sizeof(cmd)) {
		buf_printf(out, "ERR empty or unknown command\n");
		return -1;
	}
	memcpy(cmd, line, clen);
	cmd[clen] = '\0';
	snprintf(arg, sizeof(arg), "%s", sp ? sp + 1 : "");
	if (strcmp(cmd, "queue") == 0) {
		admin_queue(q, out);
		return 0;
	}
	if (strcmp(cmd, "summary") == 0) {
		admin_summary(q, out);
		return 0;
	}
	if (strcmp(cmd, "status") == 0) {
		admin_status(q, srv, out);
		return 0;
	}
	if (strcmp(cmd, "flush") == 0) {
		unsigned n = queue_wake(q, NULL, arg[0] ? arg : NULL);
		log_info("flush%s%s requested: %u deliveries released", arg[0] ?
		    " of " : "", arg, n);
		buf_printf(out, "%u deliver%s scheduled now\n", n,
		    n == 1 ? "y" : "ies");
		return 0;
	}
	if (strcmp(cmd, "inject") == 0) {
		queue_inject(q, arg);
		if (msg_find(q, arg) == NULL) {
			buf_printf(out, "ERR %s: not found in the spool\n", arg);
			return -1;
		}
		buf_printf(out, "%s queued\n", arg);
		return 0;
	}
	if (strcmp(cmd, "deliver") != 0 && strcmp(cmd, "hold") != 0 &&
	    strcmp(cmd, "release") != 0 && strcmp(cmd, "remove") != 0 &&
	    strcmp(cmd, "bounce") != 0) {
		buf_printf(out, "ERR unknown command '%s'\n", cmd);
		return -1;
	}
	if (arg[0] == '\0' || (m = msg_find(q, arg)) == NULL || m->finalizing) {
		buf_printf(out, "ERR %s: no such message in the queue\n",
		    arg[0] ? arg : "(no id)");
		return -1;
	}
	if (strcmp(cmd, "deliver") == 0) {
		unsigned n;
		if (m->hold) {
			buf_printf(out, "ERR %s is held: release it first\n", arg);
			return -1;
		}
		n = queue_wake(q, m, NULL);
		buf_printf(out, "%s: %u deliver%s scheduled now\n", arg, n,
		    n == 1 ? "y" : "ies");
	} else if (strcmp(cmd, "hold") == 0) {
		if (journal_sync(q, m, 'H', 0, NULL) == -1) {
			buf_printf(out, "ERR %s: journal write failed: %s\n", arg,
			    strerror(errno));
			return -1;
		}
		m->hold = 1;
		log_info("%s held by the administrator", m->env.id);
		buf_printf(out, "%s held\n", arg);
	} else if (strcmp(cmd, "release") == 0) {
		if (journal_sync(q, m, 'U', 0, NULL) == -1) {
			buf_printf(out, "ERR %s: journal write failed: %s\n", arg,
			    strerror(errno));
			return -1;
		}
		m->hold = 0;
		log_info("%s released by the administrator", m->env.id);
		queue_wake(q, m, NULL);
		for (struct dest *d = q->dests; d; d = d->next)
			if (d->nready > 0)
				dest_kick(q, d);
		buf_printf(out, "%s released\n", arg);
	} else if (strcmp(cmd, "remove") == 0) {
		if (journal_sync(q, m, 'X', 0, NULL) == -1) {
			buf_printf(out, "ERR %s: journal write failed: %s\n", arg,
			    strerror(errno));
			return -1;
		}
		m->removed = 1;
		msg_unqueue(q, m);
		for (size_t r = 0; r < m->env.nrcpt; r++)
			if (m->rstate[r] == RCPT_PENDING) {
				m->rstate[r] = RCPT_FAILED;
				m->npending--;
			}
		log_info("%s removed by the administrator", m->env.id);
		buf_printf(out, "%s removed\n", arg);
		msg_maybe_finalize(q, m);
	} else { /* bounce */
		msg_unqueue(q, m);
		for (size_t r = 0; r < m->env.nrcpt; r++) {
			if (m->rstate[r] != RCPT_PENDING)
				continue;
			static const char why[] = "550 5.0.0 returned to sender "
			    "by the administrator";
			if (journal_sync(q, m, 'F', r, why) == -1) {
				buf_printf(out, "ERR %s: journal write failed: %s\n",
				    arg, strerror(errno));
				return -1;
			}
			log_info("%s ** %s: returned to sender by the administrator",
			    m->env.id, m->env.rcpt[r]);
			m->rstate[r] = RCPT_FAILED;
			m->npending--;
			free(m->rerr[r]);
			m->rerr[r] = strdup(why);
		}
		buf_printf(out, "%s returned to sender\n", arg);
		msg_maybe_finalize(q, m);
	}
	return 0;
}

void
queue_reconfigure(struct queue *q, const struct config *cfg)
{
	q->cfg = cfg;
	/* Every destination takes its route and settings from the new
	 * file; cached next hops are looked up again. (Deliveries already
	 * grouped under a destination stay with it.) */
	for (struct dest *d = q->dests; d; d = d->next) {
		char key[600];
		route_of(cfg, d->domain, &d->kind, &d->hosts, &d->nhosts,
		    &d->conf, key, sizeof(key));
		d->hops_expire = 0;
		d->backoff_until = 0;
		d->failures = 0;
		d->no_chain_until = 0;   /* learned quirks are learned again */
	}
}

void
queue_drain(struct queue *q)
{
	q->draining = 1;
	for (struct dest *d = q->dests; d; d = d->next) {
		d->q_draining = 1;
		for (struct mta_conn *c = d->conns; c; c = mta_conn_next(c))
			mta_conn_kick(c); /* idle ones QUIT */
	}
}

int
queue_draining(const struct queue *q)
{
	return q->draining;
}

unsigned
queue_busy(const struct queue *q)
{
	unsigned n = 0;

	/* Transactions in flight, plus every open connection: after
	 * queue_drain() each one sends QUIT and closes by itself. */
	for (const struct dest *d = q->dests; d; d = d->next)
		for (const struct mta_conn *c = d->conns; c; c = mta_conn_next(c))
			n += mta_conn_busy(c) + 1;
	return n;
}
