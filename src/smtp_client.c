/*
 * smtp_client.c - one outbound SMTP connection.
 *
 *   C_CONNECTING --IO_CONNECTED--> C_GREETING --220--> C_EHLO
 *   C_EHLO --250, STARTTLS wanted--> C_STARTTLS --220--> C_TLS --handshake-->
 *          C_EHLO2 --250--> C_READY
 *   C_EHLO --250, no TLS--> C_READY      C_EHLO --5xx--> C_HELO --250--> C_READY
 *   C_READY --idle_timeout or limits--> C_QUIT --221/EOF--> C_DEAD
 *   any --error, timeout, 421, EOF--> C_DEAD (in-flight work re-queued)
 *
 * conn_enter() is the only place the state changes.
 *
 * Transactions. Commands are queued on c->pending with what reply they
 * expect; conn_send() writes them (all at once with PIPELINING, one per
 * reply without) and appends each expectation to the c->exp ring. Replies
 * are matched to commands by counting: each complete reply pops the oldest
 * expectation; the reply text is never used to match.
 *
 *   CHUNKING + PIPELINING: MAIL, RCPT..., "BDAT n LAST" + content, for up to
 *     pipeline_window transactions in flight: several messages per round trip.
 *   PIPELINING only: MAIL, RCPT..., DATA; after 354 the content, ".", and
 *     the next transaction's MAIL/RCPT/DATA leave in one write: one round
 *     trip per message.
 *   neither: lock-step, one command per reply.
 *
 * Message content streams from the spool file (c->stream) into the output
 * buffer as it drains (IO_LOWAT), at most STREAM_HIGH bytes ahead, so a
 * large message never sits whole in memory and both sides can always read.
 *
 * Failure rules: a RCPT 4xx/5xx decides that recipient; the reply to the
 * end of data decides the accepted ones; 421, EOF, timeout or an error with
 * transactions in flight re-queues every recipient without a final 2xx
 * (never reported delivered, never lost). A failed transaction is followed
 * by RSET, pipelined with the next MAIL.
 *
 * Desynchronisation. Counting is only right if the server sends exactly
 * one reply per command (RFC 5321 4.2, RFC 2920 3.2), so the client
 * checks what it can before it acts on a reply, and a connection that
 * fails a check is closed as a protocol error, its transactions re-queued:
 *  - more replies than commands: a read that holds more replies (a
 *    partial one counts) than commands in flight, or a reply that is
 *    followed by more bytes during the opening dialogue, where only one
 *    command is ever outstanding. Those bytes arrived before the next
 *    command was sent, so they answer nothing. Exceptions: a surplus 421
 *    (a server may announce that it closes at any time, RFC 5321 3.8: the
 *    replies before it are acted on, then the connection closes), and the
 *    plaintext after the 220 to STARTTLS (discarded, see io.c).
 *  - a reply that cannot answer its command (RFC 5321 4.3.2): a 2xx to
 *    DATA, a 3xx to anything but DATA, 220/221 to a command of the mail
 *    transaction, a greeting other than 220, an EHLO/HELO success other
 *    than 250, a 2xx/3xx other than 220 to STARTTLS.
 * A server that adds one reply and later swallows another, with
 * everything in between well formed, cannot be told from a correct one
 * by counting; nothing here pretends to.
 *
 * Timeouts (RFC 5321 4.5.3.2) run from the last progress: a complete
 * reply, output drained while content streams, or a command sent when
 * nothing was outstanding. Neither the queue's periodic kick nor bytes
 * that never complete a reply (a server trickling one byte at a time)
 * push the deadline back.
 *
 * Memory: the connection is freed only at the end of an entry point (io
 * callback, timer) when conn_close() has marked it C_DEAD, so code below an
 * entry point never touches freed memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "io.h"
#include "log.h"
#include "queue.h"
#include "smtp_client.h"
#include "smtp_reply.h"
#include "spool.h"
#include "tls.h"
#include "util.h"

#define STREAM_HIGH (256 * 1024)  /* content bytes queued ahead of the socket */
#define STREAM_READ (64 * 1024)
#define QUIT_TIMEOUT 10           /* seconds for the reply to QUIT */

enum cstate {
	C_CONNECTING,
	C_GREETING,
	C_EHLO,
	C_HELO,
	C_STARTTLS,
	C_TLS,
	C_EHLO2,
	C_READY,
	C_QUIT,
	C_DEAD,
};

static const char *cstate_names[] = {
	"CONNECTING", "GREETING", "EHLO", "HELO", "STARTTLS", "TLS", "EHLO2",
	"READY", "QUIT", "DEAD",
};

enum rkind { RK_MAIL, RK_RCPT, RK_DATA, RK_DOT, RK_BDAT, RK_RSET, RK_QUIT };

struct mta_tx {
	struct delivery *dlv;
	int fd;
	uint64_t size;
	int mail_code;
	char *mail_text;
	int *rcode;           /* per recipient; 0 = not sent / no reply */
	char **rtext;
	size_t nr;            /* recipients of the delivery (rcode/rtext size) */
	size_t nsent;         /* recipients sent (RCPTMAX may cap) */
	size_t naccepted;
	int content_done;     /* "." or BDAT LAST written */
	int chained;          /* MAIL sent behind an end of data ("." of
	                         DATA) whose reply had not come yet */
	int finished;
	unsigned seq;
	uint64_t start_ms;
	struct mta_tx *next;
};

struct pcmd {
	enum rkind kind;
	struct mta_tx *tx;
	size_t i;
	char *line;           /* with CRLF */
	struct pcmd *next;
};

struct expect {
	enum rkind kind;
	struct mta_tx *tx;
	size_t i;
};

struct stream {
	struct mta_tx *tx;
	uint64_t off;
	int dot;              /* DATA: dot-stuff and end with CRLF "." CRLF */
	int linestart;
	int lastcr;
	char lastc;
};

struct mta_conn {
	struct queue *q;
	struct dest *d;
	const struct dest_conf *conf;
	struct event_base *base;
	struct io *io;
	enum cstate state;
	unsigned id;
	struct dns_result hops;
	size_t hi, ai;        /* current host and address */
	char ip[64];
	int port;
	struct smtp_ehlo ehlo;
	int pipelining;
	int chunking;
	int no_tls;           /* "may": TLS failed here, go on in plaintext */
	struct pcmd *pending, *pending_tail;
	struct expect *exp;
	size_t exp_head, exp_len, exp_cap;
	struct mta_tx *txs, *txs_tail;
	unsigned ntx;
	struct stream stream;
	int streaming;
	unsigned msgs;        /* transactions started */
	uint64_t opened_ms;
	uint64_t wait_ms;     /* last progress: the reply deadline runs from it */
	int need_rset;
	int reached;          /* got a greeting */
	int pumping;          /* conn_pump() is on the stack */
	struct event *ev_idle;
	int closing_failed;
	char close_reason[256];
	struct mta_conn *next;
};

static unsigned conn_counter;
static SSL_CTX *ctx_noverify, *ctx_verify;

static void conn_io(struct io *io, enum io_event ev, void *arg);
static void conn_pump(struct mta_conn *c);
static void conn_timeout_update(struct mta_conn *c);
static uint64_t conn_deadline(const struct mta_conn *c);
static int conn_try_next(struct mta_conn *c, const char *why);

/* ---- small helpers ----------------------------------------------------- */

static void
conn_enter(struct mta_conn *c, enum cstate st)
{
	c->state = st;
}

static const char *
conn_host(const struct mta_conn *c)
{
	return c->hops.hosts[c->hi].name;
}

static int
exp_push(struct mta_conn *c, enum rkind k, struct mta_tx *tx, size_t i)
{
	if (c->exp_len == 0)
		c->wait_ms = util_mono_ms(); /* a wait for a reply begins */
	if (c->exp_len == c->exp_cap) {
		size_t ncap = c->exp_cap ? c->exp_cap * 2 : 64;
		struct expect *nv = malloc(ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		for (size_t j = 0; j < c->exp_len; j++)
			nv[j] = c->exp[(c->exp_head + j) % c->exp_cap];
		free(c->exp);
		c->exp = nv;
		c->exp_cap = ncap;
		c->exp_head = 0;
	}
	c->exp[(c->exp_head + c->exp_len) % c->exp_cap] =
	    (struct expect){ k, tx, i };
	c->exp_len++;
	return 0;
}

static struct expect
exp_pop(struct mta_conn *c)
{
	struct expect e = c->exp[c->exp_head];

	c->exp_head = (c->exp_head + 1) % c->exp_cap;
	c->exp_len--;
	return e;
}

static void
pcmd_add(struct mta_conn *c, enum rkind k, struct mta_tx *tx, size_t i,
         char *line)
{
	struct pcmd *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		free(line);
		return;
	}
	p->kind = k;
	p->tx = tx;
	p->i = i;
	p->line = line;
	if (c->pending_tail)
		c->pending_tail->next = p;
	else
		c->pending = p;
	c->pending_tail = p;
}

static char *
xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		s = NULL;
	va_end(ap);
	return s;
}

static SSL_CTX *
conn_tls_ctx(int verify)
{
	char err[256];
	SSL_CTX **pp = verify ? &ctx_verify : &ctx_noverify;

	if (*pp == NULL && (*pp = tls_client_ctx(verify, err, sizeof(err))) == NULL)
		log_info("TLS client context: %s", err);
	return *pp;
}

void
mta_tls_cleanup(void)
{
	SSL_CTX_free(ctx_verify);
	SSL_CTX_free(ctx_noverify);
	ctx_verify = ctx_noverify = NULL;
}

/* "H=host [ip]:port C=3#17 X=... L K" for log lines. */
static void
conn_loginfo(const struct mta_conn *c, const struct mta_tx *tx, char *buf,
             size_t len)
{
	const char *tls = io_tls_info(c->io);

	snprintf(buf, len, "H=%s [%s]:%d C=%u#%u%s%s%s%s", conn_host(c), c->ip,
	    c->port, c->id, tx ? tx->seq : 0, tls ? " X=" : "", tls ? tls : "",
	    c->pipelining ? " L" : "", c->chunking ? " K" : "");
}

/* ---- transactions ------------------------------------------------------ */

static void
tx_free(struct mta_tx *tx)
{
	if (tx->fd != -1)
		close(tx->fd);
	/* tx->dlv may be gone already (handed back to the queue). */
	if (tx->rtext) {
		for (size_t i = 0; i < tx->nr; i++)
			free(tx->rtext[i]);
	}
	free(tx->rtext);
	free(tx->rcode);
	free(tx->mail_text);
	free(tx);
}

static void
tx_unlink(struct mta_conn *c, struct mta_tx *tx)
{
	struct mta_tx **pp = &c->txs, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->next)
		if (*pp == tx) {
			*pp = tx->next;
			if (c->txs_tail == tx)
				c->txs_tail = prev;
			c->ntx--;
			return;
		}
}

/*
 * Give every recipient of tx its outcome and hand the delivery back.
 * final_code/final_text: the reply to the end of data (0 if none came).
 */
static void
tx_finish(struct mta_conn *c, struct mta_tx *tx, int final_code,
          const char *final_text)
{
	struct delivery *dlv = tx->dlv;
	char info[400];
	uint64_t dt = util_mono_ms() - tx->start_ms;

	conn_loginfo(c, tx, info, sizeof(info));
	for (size_t i = 0; i < dlv->nr; i++) {
		int rc = tx->rcode[i];
		enum rcpt_outcome out;
		const char *text = tx->rtext[i];

		if (i >= tx->nsent) {
			out = OUT_NOT_TRIED; /* over the server's RCPTMAX */
		} else if (tx->mail_code != 0 && tx->mail_code / 100 != 2) {
			/* MAIL refused decides for all (the RCPTs pipelined
			 * behind it only got 503s). A 503 to MAIL means the
			 * server was still in an old transaction: try again. */
			text = tx->mail_text;
			out = tx->mail_code == 503 ? OUT_REQUEUE :
			    tx->mail_code / 100 == 5 ? OUT_FAIL : OUT_DEFER;
		} else if (rc == 0) {
			out = OUT_REQUEUE;
			text = final_text ? final_text : "no reply";
		} else if (rc / 100 == 2) {
			if (final_code == 0) {
				out = OUT_REQUEUE;
				text = "connection ended before the final reply";
			} else {
				text = final_text;
				out = final_code / 100 == 2 ? OUT_DELIVERED :
				    final_code / 100 == 5 ? OUT_FAIL : OUT_DEFER;
			}
		} else {
			out = rc / 100 == 5 ? OUT_FAIL : OUT_DEFER;
		}
		queue_rcpt_result(c->q, dlv, i, out, text, info, dt);
	}
	tx->finished = 1;
	tx_unlink(c, tx);
	tx->dlv = NULL;
	queue_delivery_done(c->q, dlv);
	tx_free(tx);
}

/* Permanent failure of a whole delivery before anything is sent. */
static void
tx_refuse(struct mta_conn *c, struct delivery *dlv, const char *why)
{
	char info[400];

	conn_loginfo(c, NULL, info, sizeof(info));
	for (size_t i = 0; i < dlv->nr; i++)
		queue_rcpt_result(c->q, dlv, i, OUT_FAIL, why, info, 0);
	queue_delivery_done(c->q, dlv);
}

/* Queue the commands of a new transaction for dlv. 0, or -1 if refused. */
static int
tx_start(struct mta_conn *c, struct delivery *dlv)
{
	const struct spool_env *env = &dlv->msg->env;
	char path[PATH_MAX], params[128] = "";
	struct mta_tx *tx;
	size_t n;

	if (env->smtputf8 && !(c->ehlo.exts & EHLO_SMTPUTF8)) {
		tx_refuse(c, dlv, "553 5.6.7 message needs SMTPUTF8 and the "
		    "server does not offer it");
		return -1;
	}
	if (env->body_8bit && !(c->ehlo.exts & EHLO_8BITMIME)) {
		/* RFC 6152: without 8BITMIME we would have to convert; we
		 * return it with a clear reason rather than send it broken. */
		tx_refuse(c, dlv, "554 5.6.3 message has 8-bit content and the "
		    "server does not offer 8BITMIME");
		return -1;
	}
	if (c->ehlo.size && env->content_size > c->ehlo.size) {
		char why[200];
		snprintf(why, sizeof(why), "552 5.3.4 message size %llu exceeds "
		    "the server's limit of %llu",
		    (unsigned long long)env->content_size,
		    (unsigned long long)c->ehlo.size);
		tx_refuse(c, dlv, why);
		return -1;
	}
	if ((tx = calloc(1, sizeof(*tx))) == NULL)
		goto oom;
	tx->dlv = dlv;
	tx->nr = dlv->nr;
	tx->fd = -1;
	tx->rcode = calloc(dlv->nr, sizeof(*tx->rcode));
	tx->rtext = calloc(dlv->nr, sizeof(*tx->rtext));
	if (tx->rcode == NULL || tx->rtext == NULL)
		goto oom_tx;
	snprintf(path, sizeof(path), "%s/queue/%s",
	    spool_dir(queue_spool(c->q)), env->id);
	if ((tx->fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		log_info("%s cannot open spool file: %s", env->id,
		    strerror(errno));
		goto oom_tx;
	}
	tx->size = env->content_size;
	tx->chained = c->pipelining && !c->chunking && c->txs != NULL;
	tx->seq = ++c->msgs;
	tx->start_ms = util_mono_ms();
	if (c->txs_tail)
		c->txs_tail->next = tx;
	else
		c->txs = tx;
	c->txs_tail = tx;
	c->ntx++;

	if (c->need_rset) {
		pcmd_add(c, RK_RSET, NULL, 0, xasprintf("RSET\r\n"));
		c->need_rset = 0;
	}
	n = 0;
	if (c->ehlo.exts & EHLO_SIZE)
		n += (size_t)snprintf(params + n, sizeof(params) - n, " SIZE=%llu",
		    (unsigned long long)env->content_size);
	if (env->body_8bit && (c->ehlo.exts & EHLO_8BITMIME))
		n += (size_t)snprintf(params + n, sizeof(params) - n,
		    " BODY=8BITMIME");
	if (env->smtputf8)
		snprintf(params + n, sizeof(params) - n, " SMTPUTF8");
	pcmd_add(c, RK_MAIL, tx, 0, xasprintf("MAIL FROM:<%s>%s\r\n",
	    env->sender, params));
	tx->nsent = dlv->nr;
	if (c->ehlo.rcptmax && tx->nsent > c->ehlo.rcptmax)
		tx->nsent = c->ehlo.rcptmax; /* the rest: next transaction */
	for (size_t i = 0; i < tx->nsent; i++)
		pcmd_add(c, RK_RCPT, tx, i, xasprintf("RCPT TO:<%s>\r\n",
		    env->rcpt[dlv->ridx[i]]));
	if (c->chunking)
		pcmd_add(c, RK_BDAT, tx, 0, xasprintf("BDAT %llu LAST\r\n",
		    (unsigned long long)tx->size));
	else
		pcmd_add(c, RK_DATA, tx, 0, xasprintf("DATA\r\n"));
	return 0;
oom_tx:
	if (tx->fd != -1)
		close(tx->fd);
	free(tx->rcode);
	free(tx->rtext);
	free(tx);
oom:
	{
		char info[400];
		conn_loginfo(c, NULL, info, sizeof(info));
		for (size_t i = 0; i < dlv->nr; i++)
			queue_rcpt_result(c->q, dlv, i, OUT_DEFER,
			    "451 4.3.0 local error reading the message", info, 0);
		queue_delivery_done(c->q, dlv);
	}
	return -1;
}

/* ---- output ------------------------------------------------------------ */

/* Dot-stuff src into out (room 3*n), CRLF only. Returns bytes written. */
static size_t
stuff(struct stream *st, const char *src, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = src[i];

		if (ch == '\n' && !st->lastcr)
			out[o++] = '\r'; /* bare LF: never sent bare */
		if (st->lastcr && ch != '\n') {
			out[o++] = '\n'; /* bare CR: complete it */
			st->linestart = 1;
		}
		if (st->linestart && ch == '.')
			out[o++] = '.';
		out[o++] = ch;
		st->lastcr = ch == '\r';
		st->linestart = ch == '\n';
		st->lastc = ch;
	}
	return o;
}

/* Move content into the output buffer. Returns -1 on a read error. */
static int
conn_stream(struct mta_conn *c)
{
	static char rbuf[STREAM_READ], sbuf[3 * STREAM_READ + 8];
	struct stream *st = &c->stream;

	while (c->streaming && io_outlen(c->io) < STREAM_HIGH) {
		struct mta_tx *tx = st->tx;
		uint64_t left = tx->size - st->off;
		size_t want = left > STREAM_READ ? STREAM_READ : (size_t)left;
		ssize_t r = 0;

		if (want > 0) {
			r = pread(tx->fd, rbuf, want, (off_t)st->off);
			if (r <= 0) {
				log_info("%s spool read error: %s", tx->dlv->msg->env.id,
				    r == 0 ? "short file" : strerror(errno));
				return -1;
			}
			st->off += (uint64_t)r;
			if (st->dot)
				io_write(c->io, sbuf, stuff(st, rbuf, (size_t)r, sbuf));
			else
				io_write(c->io, rbuf, (size_t)r);
		}
		if (st->off == tx->size) {
			if (st->dot) {
				if (st->lastcr)
					io_write(c->io, "\n.\r\n", 4);
				else if (tx->size > 0 && st->lastc != '\n')
					io_write(c->io, "\r\n.\r\n", 5);
				else
					io_write(c->io, ".\r\n", 3);
				exp_push(c, RK_DOT, tx, 0);
			}
			tx->content_done = 1;
			c->streaming = 0;
		}
	}
	return 0;
}

static void
conn_start_stream(struct mta_conn *c, struct mta_tx *tx, int dot)
{
	memset(&c->stream, 0, sizeof(c->stream));
	c->stream.tx = tx;
	c->stream.dot = dot;
	c->stream.linestart = 1;
	c->streaming = 1;
}

/* Write queued commands as the mode allows. */
static void
conn_send(struct mta_conn *c)
{
	while (c->pending && !c->streaming && c->state == C_READY) {
		struct pcmd *p = c->pending;

		if (!c->pipelining && c->exp_len > 0)
			break;
		c->pending = p->next;
		if (c->pending == NULL)
			c->pending_tail = NULL;
		if (p->line)
			io_write(c->io, p->line, strlen(p->line));
		exp_push(c, p->kind, p->tx, p->i);
		if (p->kind == RK_BDAT)
			conn_start_stream(c, p->tx, 0);
		free(p->line);
		free(p);
		if (c->streaming && conn_stream(c) == -1)
			break;
	}
}

/* ---- closing ----------------------------------------------------------- */

static void
conn_free(struct mta_conn *c)
{
	while (c->pending) {
		struct pcmd *p = c->pending;
		c->pending = p->next;
		free(p->line);
		free(p);
	}
	free(c->exp);
	if (c->ev_idle)
		event_free(c->ev_idle);
	free(c);
}

/*
 * Some servers (chasquid 1.11) drop the commands a client pipelines right
 * behind the end of data, though RFC 2920 3.1 allows it and 3.2 forbids a
 * server to lose its input buffer: they answer the "." and never the MAIL
 * that followed, until their timeout closes the connection. If a
 * connection fails while the oldest command waiting for its reply is such
 * a chained MAIL that has waited at least NO_CHAIN_WAIT (or the reply
 * timeout, if shorter) since the last reply, the destination stops
 * chaining (as chain_after_data = no would) for NO_CHAIN_TIME or until a
 * SIGHUP; the work is re-queued and goes out on the next connection one
 * round trip later per message, instead of stalling each connection for
 * the server's timeout. The wait tells this apart from a server that
 * answers "." (often 5xx, content filters) and drops the connection at
 * once, which is no reason to stop chaining.
 */
#define NO_CHAIN_WAIT 5000               /* ms */
#define NO_CHAIN_TIME (24ull * 3600 * 1000)

static void
learn_no_chain(struct mta_conn *c)
{
	struct expect e;
	uint64_t now = util_mono_ms(), wait = NO_CHAIN_WAIT;

	if (c->exp_len == 0 || now < c->d->no_chain_until)
		return;
	e = c->exp[c->exp_head];
	if (e.kind != RK_MAIL || e.tx == NULL || !e.tx->chained)
		return;
	if ((uint64_t)c->conf->reply_timeout * 1000 < wait)
		wait = (uint64_t)c->conf->reply_timeout * 1000;
	if (now - c->wait_ms < wait)
		return;
	c->d->no_chain_until = now + NO_CHAIN_TIME;
	log_info("R=%s H=%s [%s]: the server did not answer a MAIL pipelined "
	    "after the end of data; not chaining transactions to it from now "
	    "on (as chain_after_data = no)", c->d->key, conn_host(c), c->ip);
}

/*
 * End the connection: every transaction without its final reply is
 * re-queued (recipients with their own RCPT verdict keep it), the io goes,
 * the destination hears about it. Memory is freed by the entry point.
 */
static void
conn_close(struct mta_conn *c, int failed, const char *reason)
{
	struct dest *d = c->d;
	struct mta_conn **pp;

	if (c->state == C_DEAD)
		return;
	if (failed)
		learn_no_chain(c);
	log_info("C=%u H=%s [%s]:%d closed%s%s (%u messages)", c->id,
	    c->hops.nhosts ? conn_host(c) : "-", c->ip, c->port,
	    reason ? ": " : "", reason ? reason : "", c->msgs);
	conn_enter(c, C_DEAD);
	while (c->txs)
		tx_finish(c, c->txs, 0, reason ? reason : "connection closed");
	if (c->io) {
		io_free(c->io);
		c->io = NULL;
	}
	for (pp = &d->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	d->nconns--;
	if (!c->reached)
		d->connecting--;
	/* Only a host that could not be reached backs the destination off;
	 * a session that broke later just re-queues its work. */
	queue_conn_closed(c->q, d, c, failed && !c->reached, reason);
}

static void
conn_quit(struct mta_conn *c)
{
	if (c->state != C_READY)
		return;
	io_write(c->io, "QUIT\r\n", 6);
	exp_push(c, RK_QUIT, NULL, 0);
	conn_enter(c, C_QUIT);
	conn_timeout_update(c);
}

static void
conn_on_idle(evutil_socket_t fd, short what, void *arg)
{
	struct mta_conn *c = arg;

	if (c->state == C_READY && c->ntx == 0 && !c->pending)
		conn_quit(c);
	if (c->state == C_DEAD)
		conn_free(c);
}

/* ---- replies ----------------------------------------------------------- */

static void
conn_ehlo(struct mta_conn *c)
{
	const struct config *cfg = queue_config(c->q);

	io_printf(c->io, "EHLO %s\r\n", cfg->helo_name ? cfg->helo_name
	                                               : cfg->hostname);
}

static void
conn_ready(struct mta_conn *c)
{
	c->pipelining = (c->ehlo.exts & EHLO_PIPELINING) && c->conf->pipelining;
	c->chunking = (c->ehlo.exts & EHLO_CHUNKING) && c->conf->chunking;
	conn_enter(c, C_READY);
	if (!c->reached) {
		c->reached = 1;
		c->d->connecting--;
	}
	queue_conn_ok(c->q, c->d);
	conn_pump(c);
}

/* Reply during the opening dialogue. */
static void
conn_opening_reply(struct mta_conn *c, const struct smtp_reply *r,
                   const struct smtp_ehlo *eh)
{
	int tls_required = c->conf->tls >= TLS_POLICY_ENCRYPT;

	switch (c->state) {
	case C_GREETING:
		if (r->code != 220) {  /* RFC 5321 4.3.2: 220, else 554 */
			conn_try_next(c, r->text);
			return;
		}
		conn_ehlo(c);
		conn_enter(c, C_EHLO);
		return;
	case C_EHLO:
	case C_EHLO2:
		if (r->code != 250) {
			/* Only a 5xx (EHLO not known) falls back to HELO (RFC
			 * 5321 3.2); a 421 or other 4xx ends the session, and a
			 * 2xx/3xx other than 250 answers some other command. */
			if (c->state == C_EHLO2 || tls_required ||
			    r->code / 100 != 5) {
				conn_try_next(c, r->text);
				return;
			}
			io_printf(c->io, "HELO %s\r\n", queue_config(c->q)->helo_name);
			conn_enter(c, C_HELO);
			return;
		}
		c->ehlo = *eh;
		if (c->state == C_EHLO && c->conf->tls != TLS_POLICY_NONE &&
		    !c->no_tls && (c->ehlo.exts & EHLO_STARTTLS)) {
			io_write(c->io, "STARTTLS\r\n", 10);
			conn_enter(c, C_STARTTLS);
			return;
		}
		if (c->state == C_EHLO && tls_required) {
			conn_try_next(c, "TLS required but the server does not "
			    "offer STARTTLS");
			return;
		}
		conn_ready(c);
		return;
	case C_HELO:
		if (r->code != 250 || tls_required) {
			conn_try_next(c, tls_required ? "TLS required but EHLO "
			    "was refused" : r->text);
			return;
		}
		memset(&c->ehlo, 0, sizeof(c->ehlo));
		conn_ready(c);
		return;
	case C_STARTTLS: {
		char key[400];
		SSL_CTX *ctx;

		if (r->code != 220) {
			/* "may" goes on in plaintext after a refusal (454, 5xx),
			 * never after a 421 (the server is closing) or a reply
			 * that answers some other command (2xx, 3xx). */
			if (tls_required || r->code == 421 || r->code / 100 < 4) {
				conn_try_next(c, r->text);
				return;
			}
			conn_ready(c);
			return;
		}
		ctx = conn_tls_ctx(c->conf->tls == TLS_POLICY_VERIFY);
		snprintf(key, sizeof(key), "%s:%d:%d", conn_host(c), c->port,
		    (int)c->conf->tls);
		if (ctx == NULL || io_starttls_client(c->io, ctx, conn_host(c), key,
		    c->conf->tls == TLS_POLICY_VERIFY ? conn_host(c) : NULL,
		    tls_cache_get(key)) == -1) {
			conn_try_next(c, "TLS setup failed");
			return;
		}
		conn_enter(c, C_TLS);
		return;
	}
	default:
		return;
	}
}

/*
 * 1 if code can be the reply to a command of kind k (RFC 5321 4.3.2): DATA
 * gets 354 or a failure, never a 2xx; nothing else in a mail transaction
 * gets a 3xx, or the greeting's 220 or QUIT's 221. Anything else means the
 * replies no longer line up with the commands.
 */
static int
reply_fits(enum rkind k, int code)
{
	switch (k) {
	case RK_QUIT:
		return 1;
	case RK_DATA:
		return code == 354 || code / 100 == 4 || code / 100 == 5;
	default:
		return (code / 100 == 2 && code != 220 && code != 221) ||
		    code / 100 == 4 || code / 100 == 5;
	}
}

static const char *const rkind_names[] = {
	"MAIL", "RCPT", "DATA", "end of data", "BDAT", "RSET", "QUIT",
};

/* One reply in C_READY or C_QUIT, matched to the oldest expectation. */
static void
conn_reply(struct mta_conn *c, const struct smtp_reply *r)
{
	struct expect e;

	if (c->exp_len == 0) {
		if (r->code == 421) {  /* closing, unasked (RFC 5321 3.8) */
			conn_close(c, 0, r->text);
			return;
		}
		log_info("C=%u H=%s [%s]: unexpected reply \"%s\"", c->id,
		    conn_host(c), c->ip, r->text);
		conn_close(c, 1, "protocol error: reply without a command");
		return;
	}
	e = exp_pop(c);
	if (r->code == 421 && e.kind != RK_QUIT) {
		/* Server is closing: whatever had no final reply goes back. */
		conn_close(c, 0, r->text);
		return;
	}
	if (!reply_fits(e.kind, r->code)) {
		log_info("C=%u H=%s [%s]: reply \"%s\" cannot answer %s", c->id,
		    conn_host(c), c->ip, r->text, rkind_names[e.kind]);
		conn_close(c, 1, "protocol error: replies out of step with "
		    "commands");
		return;
	}
	switch (e.kind) {
	case RK_MAIL:
		e.tx->mail_code = r->code;
		free(e.tx->mail_text);
		e.tx->mail_text = strdup(r->text);
		if (r->code / 100 != 2)
			c->need_rset = 1;
		break;
	case RK_RCPT:
		e.tx->rcode[e.i] = r->code;
		free(e.tx->rtext[e.i]);
		e.tx->rtext[e.i] = strdup(r->text);
		if (r->code / 100 == 2)
			e.tx->naccepted++;
		break;
	case RK_DATA:
		if (r->code == 354) {
			if (e.tx->naccepted == 0 || e.tx->mail_code / 100 != 2) {
				/* RFC 2920 3.1: "." alone ends it harmlessly. */
				io_write(c->io, ".\r\n", 3);
				exp_push(c, RK_DOT, e.tx, 0);
				e.tx->content_done = 1;
			} else {
				conn_start_stream(c, e.tx, 1);
				if (conn_stream(c) == -1) {
					conn_close(c, 1, "spool read error");
					return;
				}
			}
		} else {
			c->need_rset = 1;
			e.tx->content_done = 1;
			tx_finish(c, e.tx, r->code, r->text);
		}
		break;
	case RK_DOT:
	case RK_BDAT:
		if (r->code / 100 != 2)
			c->need_rset = 1;
		if (e.tx->naccepted == 0 || e.tx->mail_code / 100 != 2)
			tx_finish(c, e.tx, 0, NULL);
		else
			tx_finish(c, e.tx, r->code, r->text);
		break;
	case RK_RSET:
		if (r->code / 100 != 2) {
			conn_close(c, 1, r->text);
			return;
		}
		break;
	case RK_QUIT:
		conn_close(c, 0, NULL);
		return;
	}
}

/*
 * 1 if [p, p + n) is, or may still become, a 421 reply: the server
 * closing, which RFC 5321 3.8 lets it announce at any time, not only as
 * a reply to a command. Such a surplus reply is no desynchronisation.
 */
static int
maybe_421(const char *p, size_t n)
{
	return n > 0 && memcmp(p, "421", n < 3 ? n : 3) == 0;
}

/*
 * 1 if [buf, buf + len) holds more replies than max: more than max complete
 * ones, or bytes after the max-th (a partial or malformed reply), unless
 * the first surplus one is (or may become) a 421. Cost: at most max + 1
 * replies parsed, never the whole buffer.
 */
static int
replies_exceed(const char *buf, size_t len, size_t max)
{
	size_t n = 0, off = 0;

	while (off < len) {
		struct smtp_reply r;
		size_t used;

		if (n == max)
			return !maybe_421(buf + off, len - off);
		if (smtp_reply_parse(buf + off, len - off, &r, &used) !=
		    SMTP_REPLY_OK)
			return 0; /* the n+1-th: partial or malformed */
		off += used;
		n++;
	}
	return 0;
}

static void
conn_read(struct mta_conn *c)
{
	int counted = 0;

	for (;;) {
		struct smtp_reply r;
		size_t used = 0;
		struct buf *in;
		enum smtp_reply_status st;

		/* A failover may have replaced (or freed) the io. */
		if (c->state == C_DEAD || c->state == C_TLS ||
		    c->state == C_CONNECTING || c->io == NULL)
			return;
		in = io_in(c->io);
		if (buf_len(in) == 0)
			break;
		if (!counted && (c->state == C_READY || c->state == C_QUIT)) {
			/* Before acting on any of them: every reply here came
			 * before the commands queued from now on were sent, so
			 * there can be no more than are in flight now. */
			counted = 1;
			if (replies_exceed(buf_ptr(in), buf_len(in),
			    c->exp_len)) {
				log_info("C=%u H=%s [%s]: more replies than the "
				    "%zu commands in flight", c->id, conn_host(c),
				    c->ip, c->exp_len);
				conn_close(c, 1, "protocol error: more replies "
				    "than commands");
				return;
			}
		}
		st = smtp_reply_parse(buf_ptr(in), buf_len(in), &r, &used);

		if (st == SMTP_REPLY_NEED_MORE)
			break;
		if (st == SMTP_REPLY_BAD) {
			char esc[100];
			util_escape(esc, sizeof(esc), buf_ptr(in),
			    buf_len(in) > 40 ? 40 : buf_len(in));
			log_info("C=%u H=%s [%s]: malformed reply \"%s\"", c->id,
			    conn_host(c), c->ip, esc);
			if (c->state == C_READY || c->state == C_QUIT)
				conn_close(c, 1, "malformed reply");
			else
				conn_try_next(c, "malformed reply");
			return;
		}
		c->wait_ms = util_mono_ms(); /* progress */
		if (c->state == C_READY || c->state == C_QUIT) {
			buf_consume(in, used);
			conn_reply(c, &r);
		} else {
			struct smtp_ehlo eh;

			/* One command (or the greeting) is outstanding in the
			 * opening: bytes after its reply answer nothing. After
			 * a 220 to STARTTLS they are dropped unread (io.c). */
			if (buf_len(in) > used &&
			    !(c->state == C_STARTTLS && r.code == 220) &&
			    !maybe_421(buf_ptr(in) + used, buf_len(in) - used)) {
				char esc[100];
				util_escape(esc, sizeof(esc), buf_ptr(in) + used,
				    buf_len(in) - used > 40 ? 40 :
				    buf_len(in) - used);
				log_info("C=%u H=%s [%s]: reply before the command "
				    "was sent: \"%s\"", c->id, conn_host(c), c->ip,
				    esc);
				conn_try_next(c, "protocol error: more replies "
				    "than commands");
				return;
			}
			memset(&eh, 0, sizeof(eh));
			if ((c->state == C_EHLO || c->state == C_EHLO2) &&
			    r.code / 100 == 2)
				smtp_ehlo_parse(buf_ptr(in), used, &eh);
			buf_consume(in, used);
			conn_opening_reply(c, &r, &eh);
		}
	}
	if (c->state == C_READY) {
		conn_send(c);
		conn_pump(c);
	}
}

/* ---- connecting -------------------------------------------------------- */

static int
conn_connect(struct mta_conn *c)
{
	while (c->hi < c->hops.nhosts) {
		const struct dns_host *h = &c->hops.hosts[c->hi];

		if (c->ai < h->naddr) {
			const struct sockaddr *sa =
			    (const struct sockaddr *)&h->addr[c->ai];
			util_addr_str(sa, c->ip, sizeof(c->ip), &c->port);
			c->io = io_connect(c->base, sa, h->addrlen[c->ai],
			    c->conf->connect_timeout * 1000, conn_io, c);
			if (c->io != NULL) {
				conn_enter(c, C_CONNECTING);
				return 0;
			}
			log_info("C=%u H=%s [%s]:%d connect: %s", c->id, h->name,
			    c->ip, c->port, strerror(errno));
			c->ai++;
			continue;
		}
		c->hi++;
		c->ai = 0;
	}
	return -1;
}

/* This address failed: try the next one, or give up on the destination. */
static int
conn_try_next(struct mta_conn *c, const char *why)
{
	log_info("C=%u H=%s [%s]:%d failed in state %s: %s", c->id,
	    conn_host(c), c->ip, c->port, cstate_names[c->state], why);
	snprintf(c->close_reason, sizeof(c->close_reason), "H=%s [%s]: %s",
	    conn_host(c), c->ip, why);
	while (c->txs)
		tx_finish(c, c->txs, 0, why);
	if (c->io) {
		io_free(c->io);
		c->io = NULL;
	}
	c->exp_len = 0;
	c->exp_head = 0;
	memset(&c->ehlo, 0, sizeof(c->ehlo));
	if (c->reached) {
		/* Failed after the opening: the host works, this session not. */
		conn_close(c, 1, c->close_reason);
		return -1;
	}
	if (c->state == C_TLS && c->conf->tls == TLS_POLICY_MAY && !c->no_tls) {
		/* Opportunistic TLS that fails is no reason not to deliver:
		 * the same address again, without STARTTLS (as Postfix does). */
		log_info("C=%u H=%s [%s]:%d retrying without TLS (tls = may)",
		    c->id, conn_host(c), c->ip, c->port);
		c->no_tls = 1;
		if (conn_connect(c) == 0)
			return 0;
	}
	c->no_tls = 0;
	c->ai++;
	if (conn_connect(c) == 0)
		return 0;
	conn_close(c, 1, c->close_reason);
	return -1;
}

static void
conn_io(struct io *io, enum io_event ev, void *arg)
{
	struct mta_conn *c = arg;

	switch (ev) {
	case IO_CONNECTED:
		conn_enter(c, C_GREETING);
		c->wait_ms = util_mono_ms();
		break;
	case IO_DATAIN:
		conn_read(c);
		break;
	case IO_LOWAT:
		if (c->state == C_READY && c->streaming) {
			c->wait_ms = util_mono_ms(); /* the server takes content */
			if (conn_stream(c) == -1) {
				conn_close(c, 1, "spool read error");
				break;
			}
			conn_send(c);
			conn_pump(c);
		}
		break;
	case IO_TLSREADY:
		if (c->conf->tls == TLS_POLICY_VERIFY &&
		    SSL_get_verify_result(io_ssl(io)) != X509_V_OK) {
			char why[200];
			snprintf(why, sizeof(why), "TLS certificate verification "
			    "failed: %s", X509_verify_cert_error_string(
			    SSL_get_verify_result(io_ssl(io))));
			conn_try_next(c, why);
			break;
		}
		conn_ehlo(c);
		conn_enter(c, C_EHLO2);
		c->wait_ms = util_mono_ms();
		break;
	case IO_TIMEOUT:
		if (c->state == C_READY && c->exp_len == 0 && !c->streaming)
			break; /* idle: the idle timer decides */
		if (c->state != C_CONNECTING && util_mono_ms() < conn_deadline(c))
			break; /* early: re-armed below */
		if (c->reached)
			conn_close(c, 1, "timeout waiting for the server");
		else
			conn_try_next(c, "timeout");
		break;
	case IO_DISCONNECTED:
		if (c->state == C_QUIT)
			conn_close(c, 0, NULL);
		else if (c->reached)
			conn_close(c, 1, "connection closed by the server");
		else
			conn_try_next(c, "connection closed by the server");
		break;
	case IO_ERROR:
		if (c->state == C_QUIT)
			conn_close(c, 0, NULL);
		else if (c->reached)
			conn_close(c, 1, io_error(io));
		else
			conn_try_next(c, io_error(io));
		break;
	}
	if (c->state == C_DEAD)
		conn_free(c);
	else
		conn_timeout_update(c); /* bytes that are no reply gain no time */
}

/* ---- scheduling -------------------------------------------------------- */

static int
conn_exhausted(const struct mta_conn *c)
{
	uint64_t age_ms = util_mono_ms() - c->opened_ms;

	return c->d->q_draining ||
	    c->msgs >= c->conf->max_messages_per_connection ||
	    (c->ehlo.mailmax && c->msgs >= c->ehlo.mailmax) ||
	    age_ms >= (uint64_t)c->conf->max_connection_age * 1000;
}

int
mta_conn_has_room(const struct mta_conn *c)
{
	if (c->state != C_READY || conn_exhausted(c) || c->streaming ||
	    c->pending)
		return 0;
	if (c->chunking && c->pipelining)
		return c->ntx < c->conf->pipeline_window;
	if (c->pipelining) {
		/* Next MAIL only once the current content is on its way (and,
		 * with chain_after_data = no, once its final reply is in). */
		for (const struct mta_tx *t = c->txs; t; t = t->next)
			if (!t->content_done)
				return 0;
		return c->ntx < (c->conf->chain_after_data &&
		    util_mono_ms() >= c->d->no_chain_until ? 2u : 1u);
	}
	return c->ntx == 0;
}

unsigned
mta_conn_capacity(const struct mta_conn *c)
{
	if (c->state < C_READY)
		return c->conf->pipeline_window; /* not known yet: hope */
	if (c->chunking && c->pipelining)
		return c->conf->pipeline_window;
	return c->pipelining ? 2 : 1;
}

unsigned
mta_conn_busy(const struct mta_conn *c)
{
	return c->ntx;
}

int
mta_conn_starting(const struct mta_conn *c)
{
	return c->state < C_READY;
}

/*
 * When the wait for the next reply times out (ms): the last progress plus
 * the timeout. RFC 5321 4.5.3.2: the reply to the end of data may take
 * longer (data_timeout, 10 min) than other replies (reply_timeout, 5 min).
 */
static uint64_t
conn_deadline(const struct mta_conn *c)
{
	uint64_t t = c->conf->reply_timeout;

	if (c->state == C_QUIT)
		t = QUIT_TIMEOUT;
	else if (c->state == C_READY)
		for (const struct mta_tx *tx = c->txs; tx; tx = tx->next)
			if (tx->content_done && c->conf->data_timeout > t)
				t = c->conf->data_timeout;
	return c->wait_ms + t * 1000;
}

/* Arm the io timer for the deadline; none while idle (ev_idle decides). */
static void
conn_timeout_update(struct mta_conn *c)
{
	uint64_t now, end;

	if (c->io == NULL || c->state == C_DEAD || c->state == C_CONNECTING)
		return;  /* connecting: io_connect()'s connect_timeout */
	if (c->state == C_READY && c->exp_len == 0 && !c->streaming) {
		io_set_timeout(c->io, 0);
		return;
	}
	now = util_mono_ms();
	end = conn_deadline(c);
	io_set_timeout(c->io, end <= now ? 1 : end - now > UINT_MAX ?
	    UINT_MAX : (unsigned)(end - now));
}

/* Take deliveries while there is room; idle or quit when there is none. */
static void
conn_pump(struct mta_conn *c)
{
	/* Finishing a transaction kicks the destination, which kicks us:
	 * the outer call does the work. */
	if (c->pumping)
		return;
	c->pumping = 1;
	while (c->state == C_READY && mta_conn_has_room(c)) {
		struct delivery *dlv = queue_take(c->d);

		if (dlv == NULL)
			break;
		if (tx_start(c, dlv) == 0)
			conn_send(c);
	}
	c->pumping = 0;
	if (c->state != C_READY)
		return;
	conn_timeout_update(c);
	if (c->ntx == 0 && !c->pending && !c->streaming) {
		if (conn_exhausted(c)) {
			conn_quit(c);
		} else {
			struct timeval tv = { c->conf->idle_timeout, 0 };
			evtimer_add(c->ev_idle, &tv);
		}
	} else {
		evtimer_del(c->ev_idle);
	}
}

void
mta_conn_kick(struct mta_conn *c)
{
	if (c->state == C_READY)
		conn_pump(c);
	/* Called from the queue, not an io callback: the connection stays
	 * alive here (conn_pump never closes it). */
}

void
mta_conn_describe(const struct mta_conn *c, char *buf, size_t len)
{
	const char *tls = c->io ? io_tls_info(c->io) : NULL;

	snprintf(buf, len, "C=%u H=%s [%s]:%d %s %s%s%s, %u messages, %u in "
	    "flight, %llus old", c->id, c->hops.nhosts ? conn_host(c) : "-",
	    c->ip, c->port, cstate_names[c->state], tls ? tls : "no TLS",
	    c->pipelining ? " L" : "", c->chunking ? " K" : "", c->msgs, c->ntx,
	    (unsigned long long)((util_mono_ms() - c->opened_ms) / 1000));
}

struct mta_conn *
mta_conn_next(const struct mta_conn *c)
{
	return c->next;
}

void
mta_conn_abort(struct mta_conn *c)
{
	conn_close(c, 0, "shutting down");
	conn_free(c);
}

struct mta_conn *
mta_conn_new(struct event_base *base, struct queue *q, struct dest *d,
             const struct dns_result *hops)
{
	struct mta_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->q = q;
	c->d = d;
	c->base = base;
	c->conf = d->conf;
	c->hops = *hops;
	c->id = ++conn_counter;
	c->opened_ms = util_mono_ms();
	c->ev_idle = evtimer_new(base, conn_on_idle, c);
	if (c->ev_idle == NULL) {
		free(c);
		return NULL;
	}
	/* An MX host with settings of its own ("*.filter.example"). */
	if (d->kind == ROUTE_MX && hops->nhosts > 0) {
		const struct dest_conf *hc =
		    config_find_dest(queue_config(q), hops->hosts[0].name);
		if (hc != &queue_config(q)->dest_default)
			c->conf = hc;
	}
	c->next = d->conns;
	d->conns = c;
	d->nconns++;
	d->connecting++;
	if (conn_connect(c) == -1) {
		snprintf(c->close_reason, sizeof(c->close_reason),
		    "no address could be connected to");
		conn_close(c, 1, c->close_reason);
		conn_free(c);
		return NULL;
	}
	log_info("C=%u connecting to %s [%s]:%d for %s", c->id, conn_host(c),
	    c->ip, c->port, d->key);
	return c;
}
