/*
 * dns.c - asynchronous MX and address lookups with libunbound, inside the
 * libevent loop (see dns.h for the contract).
 *
 * Role: turn a mail domain into an ordered list of mail exchangers with
 * their addresses (RFC 5321 5.1: MX, else the domain's own A/AAAA as an
 * implicit MX; RFC 7505 null MX), or a host name into its addresses.
 * libunbound runs in the caller's event_base (ub_ctx_create_event +
 * ub_resolve_event): no thread, no process, every socket and timer of the
 * resolver is an event of the one loop. ub_resolve_event hands over the
 * answer as a wire-format message; the bytes are read by the pure, fuzzed
 * helpers of dns_rr.c. DNSSEC: libunbound validates only against trust
 * anchors, and none is configured, so answers are taken as insecure.
 *
 * One dns_resolve_*() call is a job; a job owns its queries (one per
 * ub_resolve_event). Life of a job:
 *
 *   dns_resolve_mx ──► J_MX ──(MX answer: job_mx_done)──► J_ADDR ──┐
 *   dns_resolve_host ─────────────────────────────────► J_ADDR ──┤
 *                                  (every A/AAAA answered, or the  │
 *                                   30 s timer: job_addr_done)     ▼
 *                              job_finish: free the job, then the callback
 *
 * Invariants:
 *  - libunbound callbacks (query_cb) only record the answer in their query
 *    and activate the job's step event; all decisions run from that event
 *    (job_step) or the job's timer, i.e. from the loop. So the user's
 *    callback never runs inside dns_resolve_*() (libunbound may answer from
 *    its cache or /etc/hosts before ub_resolve_event returns), and no
 *    libunbound call is made from inside a libunbound callback.
 *  - A query is either answered (done: libunbound will never call it
 *    again) or outstanding with its async id; freeing an outstanding query
 *    first ub_cancel()s it, after which libunbound never calls it back.
 *    So a pointer given to libunbound is always valid when it comes back.
 *  - The user's callback fires exactly once per accepted job, after the job
 *    is unlinked and freed: the callback may call dns_resolve_*() or
 *    dns_free() on the same struct dns.
 *  - Every job ends within DNS_JOB_TIMEOUT seconds.
 *
 * Ownership: struct dns owns the ub_ctx and every job; a job owns its
 * queries, its two events and the result until the callback returns. The
 * result passed to the callback is freed when the callback returns.
 */
#include <sys/queue.h>
#include <sys/random.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <unbound-event.h>
#include <unbound.h>

#include "dns.h"
#include "util.h"


#define DNS_T_A 1
#define DNS_T_MX 15
#define DNS_T_AAAA 28
#define DNS_C_IN 1
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_NXDOMAIN 3

/* Seconds for a whole job; tests build a copy with -DDNS_JOB_TIMEOUT=2. */
#ifndef DNS_JOB_TIMEOUT
#define DNS_JOB_TIMEOUT 30
#endif
#define DNS_MX_PARSE_MAX 64   /* MX records read before ordering */
#define DNS_TEXT_NAME_MAX 253 /* longest name in text, no final dot */

enum job_stage { J_MX, J_ADDR };

struct dns_job;

/* One ub_resolve_event() call. */
struct dns_query {
	struct dns_job *job; /* owner */
	int ubid;	     /* libunbound async id while outstanding, or 0 */
	int done;	     /* answered: libunbound is finished with it */
	int err;	     /* done, but no DNS answer (SERVFAIL, timeout,
				could not start) */
	int rcode;	     /* DNS RCODE of the answer when !err */
	uint8_t *pkt;	     /* copy of the answer when !err, owned */
	size_t pktlen;
};

struct dns_job {
	TAILQ_ENTRY(dns_job) entry;
	struct dns *d;
	uint64_t token;
	dns_cb cb;
	void *arg;
	uint16_t port;
	int is_mx;
	int literal;   /* dns_resolve_host of an IP literal: no query */
	int timed_out; /* the DNS_JOB_TIMEOUT timer has fired */
	enum job_stage stage;
	char name[DNS_NAME_MAX + 1]; /* lower case, no final dot */
	struct event *ev_step;	     /* activated when a query is answered */
	struct event *ev_timer;	     /* DNS_JOB_TIMEOUT */
	struct dns_query *mxq;
	struct dns_query *aq[DNS_MAX_HOSTS][2]; /* A, AAAA per res->hosts[i] */
	struct dns_result *res;			/* being built */
};

struct dns {
	struct event_base *base; /* borrowed; outlives the struct dns */
	struct ub_ctx *ctx;
	TAILQ_HEAD(, dns_job) jobs;
};

static void job_step(evutil_socket_t fd, short what, void *arg);
static void job_finish(struct dns_job *job, enum dns_status status,
    int temporary, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void job_timer(evutil_socket_t fd, short what, void *arg);

static uint32_t
dns_rnd(void)
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	return (uint32_t)random() ^ ((uint32_t)random() << 16);
}

struct dns *
dns_new(struct event_base *base, const char *resolver, char *err, size_t errlen)
{
	struct dns *d;
	int r;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		util_errf(err, errlen, "dns: out of memory");
		return NULL;
	}
	d->base = base;
	TAILQ_INIT(&d->jobs);
	/* NULL when libunbound was built without libevent (mini-event). */
	if ((d->ctx = ub_ctx_create_event(base)) == NULL) {
		util_errf(err, errlen,
		    "dns: libunbound cannot use the libevent "
		    "event base (ub_ctx_create_event failed)");
		goto fail;
	}
	if (resolver != NULL) {
		/* Forward everything, recursion desired, to ADDR[@PORT]. */
		if ((r = ub_ctx_set_fwd(d->ctx, resolver)) != 0) {
			util_errf(err, errlen, "dns: resolver \"%s\": %s", resolver,
			    ub_strerror(r));
			goto fail;
		}
	} else {
		if ((r = ub_ctx_resolvconf(d->ctx, NULL)) != 0) {
			util_errf(err, errlen, "dns: /etc/resolv.conf: %s",
			    ub_strerror(r));
			goto fail;
		}
		/* A missing /etc/hosts is fine; a broken one is not. */
		if ((r = ub_ctx_hosts(d->ctx, NULL)) != 0 && r != UB_READFILE) {
			util_errf(
			    err, errlen, "dns: /etc/hosts: %s", ub_strerror(r));
			goto fail;
		}
	}
	return d;
fail:
	if (d->ctx != NULL)
		ub_ctx_delete(d->ctx);
	free(d);
	return NULL;
}

/* Cancel (if outstanding) and free one query. */
static void
query_free(struct dns *d, struct dns_query *q)
{
	if (q == NULL)
		return;
	if (!q->done && q->ubid != 0 && ub_cancel(d->ctx, q->ubid) != 0) {
		/*
		 * Cannot happen: an outstanding query is in libunbound's
		 * table until its callback runs. Leak it rather than let a
		 * late callback touch freed memory.
		 */
		q->job = NULL;
		return;
	}
	free(q->pkt);
	free(q);
}

/* Unlink and free a job and its queries; the result is the caller's. */
static void
job_free(struct dns_job *job)
{
	size_t i;

	TAILQ_REMOVE(&job->d->jobs, job, entry);
	query_free(job->d, job->mxq);
	for (i = 0; i < DNS_MAX_HOSTS; i++) {
		query_free(job->d, job->aq[i][0]);
		query_free(job->d, job->aq[i][1]);
	}
	if (job->ev_step != NULL)
		event_free(job->ev_step);
	if (job->ev_timer != NULL)
		event_free(job->ev_timer);
	free(job->res);
	free(job);
}

void
dns_free(struct dns *d)
{
	struct dns_job *job;

	if (d == NULL)
		return;
	while ((job = TAILQ_FIRST(&d->jobs)) != NULL)
		job_free(job);
	/* Every query is cancelled: deleting the context calls nothing. */
	ub_ctx_delete(d->ctx);
	free(d);
}

/*
 * libunbound's callback: record the answer, wake the job. packet is only
 * valid during the call, and only meaningful when rcode is 0.
 */
static void
query_cb(void *mydata, int rcode, void *packet, int packet_len, int sec,
    char *why_bogus, int was_ratelimited)
{
	struct dns_query *q = mydata;

	q->ubid = 0;
	q->done = 1;
	if (q->job == NULL) {
		/* Orphan of a failed ub_cancel (see query_free). */
		free(q);
		return;
	}
	if (rcode != DNS_RCODE_NOERROR) {
		/* libunbound's own verdict: SERVFAIL for timeouts etc. */
		q->rcode = rcode;
		q->err = rcode != DNS_RCODE_NXDOMAIN;
	} else if (packet == NULL || packet_len <= 0 ||
		   (q->pkt = malloc((size_t)packet_len)) == NULL) {
		q->err = 1;
	} else {
		memcpy(q->pkt, packet, (size_t)packet_len);
		q->pktlen = (size_t)packet_len;
		q->rcode = DNS_RCODE_NOERROR; /* real RCODE is in the header */
	}
	event_active(q->job->ev_step, EV_TIMEOUT, 0);
}

/*
 * Start one query for job. Returns the query (possibly already answered,
 * or done with err set if libunbound refused it: then *ubret holds the
 * libunbound error), or NULL if out of memory.
 */
static struct dns_query *
query_start(struct dns_job *job, const char *name, int qtype, int *ubret)
{
	struct dns_query *q;
	int r;

	*ubret = 0;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->job = job;
	r = ub_resolve_event(
	    job->d->ctx, name, qtype, DNS_C_IN, q, query_cb, &q->ubid);
	if (r != 0) {
		*ubret = r;
		if (!q->done) {
			q->done = 1;
			q->err = 1;
		}
		q->ubid = 0;
	}
	return q;
}

/* Lower-case name into out without its final dot; -1 if it is not a
 * plausible domain name (empty, too long, empty label, odd byte). */
static int
name_norm(const char *name, char *out)
{
	size_t len, i, label = 0;

	if (name == NULL)
		return -1;
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_TEXT_NAME_MAX)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c <= 0x20 || c >= 0x7f)
			return -1;
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if (++label > 63) {
			return -1;
		}
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	if (label == 0)
		return -1;
	out[len] = '\0';
	return 0;
}

static struct dns_job *
job_new(struct dns *d, const char *name, uint16_t port, uint64_t token,
    dns_cb cb, void *arg)
{
	struct dns_job *job;
	struct timeval tv = {DNS_JOB_TIMEOUT, 0};

	if ((job = calloc(1, sizeof(*job))) == NULL)
		return NULL;
	TAILQ_INSERT_TAIL(&d->jobs, job, entry);
	job->d = d;
	job->token = token;
	job->cb = cb;
	job->arg = arg;
	job->port = port;
	if (name_norm(name, job->name) == -1)
		goto fail;
	if ((job->res = calloc(1, sizeof(*job->res))) == NULL)
		goto fail;
	job->ev_step = event_new(d->base, -1, 0, job_step, job);
	job->ev_timer = evtimer_new(d->base, job_timer, job);
	if (job->ev_step == NULL || job->ev_timer == NULL ||
	    evtimer_add(job->ev_timer, &tv) == -1)
		goto fail;
	return job;
fail:
	job_free(job);
	return NULL;
}

/*
 * End the job: fill in the verdict, free the job, then call back. The
 * callback may free d, so nothing here touches d afterwards.
 */
static void
job_finish(struct dns_job *job, enum dns_status status, int temporary,
    const char *fmt, ...)
{
	struct dns_result *res = job->res;
	dns_cb cb = job->cb;
	uint64_t token = job->token;
	void *arg = job->arg;
	va_list ap;

	job->res = NULL;
	res->status = status;
	res->temporary = temporary;
	if (status != DNS_OK)
		res->nhosts = 0;
	res->why[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(res->why, sizeof(res->why), fmt, ap);
		va_end(ap);
	}
	job_free(job);
	cb(token, res, arg);
	free(res);
}

static const char *
rcode_name(int rcode)
{
	switch (rcode) {
	case 1:
		return "FORMERR";
	case 2:
		return "SERVFAIL";
	case 3:
		return "NXDOMAIN";
	case 4:
		return "NOTIMP";
	case 5:
		return "REFUSED";
	default:
		return "error";
	}
}

/* Start A and AAAA for every host of job->res; move to J_ADDR. */
static void
job_start_addr(struct dns_job *job)
{
	size_t i;
	int f, ubret;

	job->stage = J_ADDR;
	for (i = 0; i < job->res->nhosts; i++) {
		for (f = 0; f < 2; f++) {
			job->aq[i][f] =
			    query_start(job, job->res->hosts[i].name,
				f == 0 ? DNS_T_A : DNS_T_AAAA, &ubret);
			if (job->aq[i][f] == NULL) {
				job_finish(job, DNS_TEMPFAIL, 1,
				    "%s: out of memory", job->name);
				return;
			}
		}
	}
	/* Answers may all have come already (cache, /etc/hosts). */
	event_active(job->ev_step, EV_TIMEOUT, 0);
}

/* The MX answer is in: decide, or go on to the addresses. */
static void
job_mx_done(struct dns_job *job)
{
	struct dns_query *q = job->mxq;
	struct dns_result *res = job->res;
	struct dns_host *mx = NULL;
	size_t n = 0, i, k;
	int seen, rcode;

	if (q->err) {
		job_finish(job, DNS_TEMPFAIL, 1, "%s: MX lookup failed (%s)",
		    job->name, rcode_name(q->rcode));
		return;
	}
	if (q->rcode == DNS_RCODE_NXDOMAIN) {
		job_finish(job, DNS_NXDOMAIN, 0, "%s: NXDOMAIN", job->name);
		return;
	}
	if ((mx = calloc(DNS_MX_PARSE_MAX, sizeof(*mx))) == NULL) {
		job_finish(
		    job, DNS_TEMPFAIL, 1, "%s: out of memory", job->name);
		return;
	}
	seen = dns_msg_mx(q->pkt, q->pktlen, &rcode, mx, DNS_MX_PARSE_MAX, &n);
	if (seen == -1) {
		job_finish(
		    job, DNS_TEMPFAIL, 1, "%s: malformed MX answer", job->name);
		goto done;
	}
	if (rcode == DNS_RCODE_NXDOMAIN) {
		job_finish(job, DNS_NXDOMAIN, 0, "%s: NXDOMAIN", job->name);
		goto done;
	}
	if (rcode != DNS_RCODE_NOERROR) {
		job_finish(job, DNS_TEMPFAIL, 1, "%s: MX lookup failed (%s)",
		    job->name, rcode_name(rcode));
		goto done;
	}
	if (seen == 0) {
		/* RFC 5321 5.1: no MX, the domain is its own exchanger. */
		res->implicit_mx = 1;
		res->nhosts = 1;
		memcpy(res->hosts[0].name, job->name, strlen(job->name) + 1);
		res->hosts[0].pref = 0;
		job_start_addr(job);
		goto done;
	}
	if (seen == 1 && n == 1 && mx[0].pref == 0 && mx[0].name[0] == '\0') {
		job_finish(job, DNS_NULLMX, 0,
		    "%s: null MX (RFC 7505): the domain accepts no mail",
		    job->name);
		goto done;
	}
	/* Drop "." targets mixed with real ones. */
	for (i = k = 0; i < n; i++) {
		if (mx[i].name[0] == '\0')
			continue;
		if (k != i)
			memcpy(&mx[k], &mx[i], sizeof(mx[k]));
		k++;
	}
	if (k == 0) {
		/* Only "." targets, or only unreadable records. */
		job_finish(job, DNS_NOADDR, n < (size_t)seen,
		    "%s: no usable MX target", job->name);
		goto done;
	}
	k = dns_order_hosts(mx, k, dns_rnd);
	if (k > DNS_MAX_HOSTS)
		k = DNS_MAX_HOSTS;
	memcpy(res->hosts, mx, k * sizeof(mx[0]));
	res->nhosts = k;
	job_start_addr(job);
done:
	free(mx);
}

/*
 * Read the answer of q into host h. Returns 1 if the lookup failed in a
 * way that may go away (SERVFAIL, timeout, unanswered), else 0; *nx is
 * set on NXDOMAIN.
 */
static int
addr_collect(
    struct dns_query *q, int qtype, struct dns_host *h, uint16_t port, int *nx)
{
	int rcode;

	if (q == NULL || !q->done || q->err)
		return 1;
	if (q->rcode == DNS_RCODE_NXDOMAIN) {
		*nx = 1;
		return 0;
	}
	if (dns_msg_addrs(q->pkt, q->pktlen, &rcode, qtype, h, port) == -1)
		return 1;
	if (rcode == DNS_RCODE_NXDOMAIN) {
		*nx = 1;
		return 0;
	}
	return rcode != DNS_RCODE_NOERROR;
}

/*
 * Every A/AAAA answer is in (or the job timed out: unanswered lookups
 * count as temporary failures). Keep the hosts that have an address.
 */
static void
job_addr_done(struct dns_job *job)
{
	struct dns_result *res = job->res;
	size_t i, k = 0;
	int anytemp = 0, nx4 = 0, nx6 = 0, t4, t6;

	for (i = 0; i < res->nhosts; i++) {
		struct dns_host *h = &res->hosts[i];

		h->naddr = 0;
		t4 = addr_collect(job->aq[i][0], DNS_T_A, h, job->port, &nx4);
		t6 =
		    addr_collect(job->aq[i][1], DNS_T_AAAA, h, job->port, &nx6);
		if (h->naddr == 0) {
			anytemp |= t4 | t6;
			continue; /* dropped */
		}
		if (k != i)
			memcpy(&res->hosts[k], h, sizeof(*h));
		k++;
	}
	res->nhosts = k;
	if (k > 0) {
		job_finish(job, DNS_OK, 0, NULL);
		return;
	}
	if (job->is_mx && !res->implicit_mx) {
		job_finish(job, DNS_NOADDR, anytemp,
		    anytemp ? "%s: no MX host has an address (lookups failed)"
			    : "%s: no MX host has an address",
		    job->name);
	} else if (anytemp) {
		job_finish(job, DNS_TEMPFAIL, 1,
		    "%s: address lookup failed (SERVFAIL or timeout)",
		    job->name);
	} else if (!job->is_mx && nx4 && nx6) {
		job_finish(job, DNS_NXDOMAIN, 0, "%s: NXDOMAIN", job->name);
	} else {
		job_finish(job, DNS_NOADDR, 0, "%s: no MX and no A/AAAA record",
		    job->name);
	}
}

/*
 * See whether the job can move on. Once the timer has fired (timed_out),
 * nothing more is waited for: an MX answer that came just in time still
 * starts the address lookups, and those are then taken as they stand.
 */
static void
job_advance(struct dns_job *job)
{
	size_t i;

	if (job->literal) {
		job_finish(job, DNS_OK, 0, NULL);
		return;
	}
	if (job->stage == J_MX) {
		if (job->mxq->done)
			job_mx_done(job);
		else if (job->timed_out)
			job_finish(job, DNS_TEMPFAIL, 1,
			    "%s: MX lookup timeout", job->name);
		return;
	}
	if (!job->timed_out) {
		for (i = 0; i < job->res->nhosts; i++)
			if (!job->aq[i][0]->done || !job->aq[i][1]->done)
				return;
	}
	job_addr_done(job);
}

/* Step event: a query of the job was answered (or nothing to wait for). */
static void
job_step(evutil_socket_t fd, short what, void *arg)
{
	job_advance(arg);
}

/* DNS_JOB_TIMEOUT after the job started. */
static void
job_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dns_job *job = arg;

	job->timed_out = 1;
	job_advance(job);
}

int
dns_resolve_mx(struct dns *d, const char *domain, uint16_t port, uint64_t token,
    dns_cb cb, void *arg)
{
	struct dns_job *job;
	int ubret;

	if (d == NULL || cb == NULL)
		return -1;
	if ((job = job_new(d, domain, port, token, cb, arg)) == NULL)
		return -1;
	job->is_mx = 1;
	job->stage = J_MX;
	job->mxq = query_start(job, job->name, DNS_T_MX, &ubret);
	if (job->mxq == NULL || ubret != 0) {
		job_free(job);
		return -1;
	}
	return 0;
}

/* An IP address literal ("192.0.2.1", "2001:db8::1"): no DNS at all. */
static int
host_literal(struct dns_host *h, const char *s, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&h->addr[0];
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->addr[0];
	size_t len = strlen(s);

	if (len >= sizeof(h->name))
		return -1;
	memset(&h->addr[0], 0, sizeof(h->addr[0]));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		h->addrlen[0] = sizeof(*sin);
	} else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		h->addrlen[0] = sizeof(*sin6);
	} else {
		return -1;
	}
	memcpy(h->name, s, len + 1);
	h->naddr = 1;
	h->pref = 0;
	return 0;
}

int
dns_resolve_host(struct dns *d, const char *host, uint16_t port, uint64_t token,
    dns_cb cb, void *arg)
{
	struct dns_job *job;
	struct dns_host lit;
	int ubret, f;

	if (d == NULL || cb == NULL || host == NULL)
		return -1;
	if ((job = job_new(d, host, port, token, cb, arg)) == NULL)
		return -1;
	memset(&lit, 0, sizeof(lit));
	if (host_literal(&lit, host, port) == 0) {
		/* No DNS; the answer still comes from the loop. */
		memcpy(&job->res->hosts[0], &lit, sizeof(lit));
		job->res->nhosts = 1;
		job->literal = 1;
		job->stage = J_ADDR;
		event_active(job->ev_step, EV_TIMEOUT, 0);
		return 0;
	}
	job->res->nhosts = 1;
	memcpy(job->res->hosts[0].name, job->name, strlen(job->name) + 1);
	job->stage = J_ADDR;
	for (f = 0; f < 2; f++) {
		job->aq[0][f] = query_start(
		    job, job->name, f == 0 ? DNS_T_A : DNS_T_AAAA, &ubret);
		if (job->aq[0][f] == NULL || ubret != 0) {
			job_free(job);
			return -1;
		}
	}
	event_active(job->ev_step, EV_TIMEOUT, 0);
	return 0;
}
