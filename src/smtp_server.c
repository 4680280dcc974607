/*
 * smtp_server.c - the inbound SMTP session state machine.
 *
 * One struct session per connection. io (io.c) calls session_io() with an
 * event; the session parses every complete command in the input buffer, in
 * order, and queues the replies; io writes them out together when the
 * callback returns, so a pipelined batch gets its replies in one write.
 *
 *                 greeting sent
 *   S_GREETING -----------------> S_COMMAND <------------------------------+
 *                                  |  |  |  \                              |
 *                     DATA + 354   |  |  |   STARTTLS + 220                |
 *                 +----------------+  |  |    \                            |
 *                 v      BDAT n       |  |     v                           |
 *              S_DATA    +------------+  |   S_TLS --IO_TLSREADY-----------+
 *                 |      v               |                                 |
 *                 |   S_BDAT --chunk ok, not LAST: 250 --------------------+
 *                 |      | LAST                                            |
 *        CRLF.CRLF|      v                                                 |
 *                 +--> S_SPOOLING --spool durable: 250 queued as ID--------+
 *
 *   any state --QUIT, sync error, too many errors, timeout--> S_CLOSING
 *   (the last reply drains, IO_LOWAT frees the session)
 *
 * session_enter() is the only place the state changes.
 *
 * Synchronization (RFC 2920): before a command that must end a group
 * (smtp_verb_ends_group), or before any command when PIPELINING was not
 * advertised, the input buffer must be empty and the socket must hold
 * nothing more (io_peek); else the client sent ahead where it had to wait:
 * 554 5.5.0, log line, close. Message content after 354, BDAT chunk bytes,
 * and commands after the end of data are never checked (they are legal).
 *
 * Durability: the reply to the end of a message is queued only in
 * session_spool_done(), after the spool reports the file durable. While the
 * commit runs, reading is paused and later pipelined commands wait in the
 * input buffer, so replies stay in order.
 *
 * Spool completions find their session by id in a hash table; a session
 * that went away meanwhile is simply not found.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>

#include "client_limits.h"
#include "config.h"
#include "data_scan.h"
#include "io.h"
#include "log.h"
#include "smtp_parse.h"
#include "smtp_server.h"
#include "spool.h"
#include "util.h"

#define SMTP_LINE_MAX 2048     /* command line incl. CRLF (RFC 5321 4.5.3.1.4
                                  is 512; extensions make room for more) */
#define SCAN_CHUNK 16384
#define HDRCAP_MAX 8192        /* header bytes kept to find Message-ID */
#define SESSION_HASH 1024
#define REFUSAL_LOG_BURST 20   /* connection refusals logged per second;
                                  the rest are counted in one line */
#define CLOSING_LINGER_MS 30000 /* to flush the last replies, then free */
#define OUT_PAUSE 65536        /* replies queued: stop reading commands */
#define RCPT_OVERSHOOT 10      /* RCPTs past max_recipients that are not
                                  counted as errors: 10 x the limit */

enum session_state {
	S_GREETING,
	S_COMMAND,
	S_DATA,
	S_BDAT,
	S_SPOOLING,
	S_TLS,
	S_CLOSING,
};

static const char *state_names[] = {
	"GREETING", "COMMAND", "DATA", "BDAT", "SPOOLING", "TLS", "CLOSING",
};

enum helo_kind { HELO_NONE, HELO_HELO, HELO_EHLO };

struct session {
	uint64_t id;
	struct smtp_server *srv;
	const struct smtp_listener *lst;
	const struct listen_conf *conf;
	struct io *io;
	struct event *ev_timer;    /* greeting delay, then the deadlines */
	uint64_t line_start;      /* ms: first byte of an incomplete command
	                             line, 0 = none */
	uint64_t phase_start;     /* ms: entered S_DATA, S_BDAT or S_TLS */
	uint64_t phase_bytes;     /* content bytes since phase_start */
	int bdat_phase;           /* phase_start: first chunk of this BDAT
	                             transaction */
	enum session_state state;
	char ip[64];
	int port;
	int sync_exempt;          /* enforce_sync off or client exempt */
	int relay_ok;             /* client in [relay] networks */
	int client_counted;       /* a session in srv->clients */
	enum helo_kind helo_kind;
	char helo[256];
	int pipelining;           /* PIPELINING advertised in this EHLO */
	unsigned errors;
	unsigned transactions;
	int overlong;             /* discarding an over-long command line */
	int peer_eof;             /* client closed its side while spooling */
	struct session *hnext;

	/* Transaction (MAIL ... end of data). */
	int in_tx;
	char *sender;
	struct smtp_mail_params mp;
	char **rcpt;
	size_t nrcpt;
	size_t rcpt_cap;
	unsigned rcpt_seen;
	int bdat_used;            /* this transaction uses BDAT */
	uint64_t bdat_left;       /* bytes of the current chunk to come */
	uint64_t bdat_size;
	int bdat_last;
	int bdat_discard;         /* consume the chunk, then reply bdat_code */
	int bdat_code;
	struct spool_msg *msg;
	struct data_scan scan;
	char qid[QUEUE_ID_LEN + 1];
	int too_big;
	int write_err;            /* errno of a failed spool write */
	char *hdrcap;             /* first HDRCAP_MAX content bytes */
	size_t hdrcap_len;
	char *msgid;              /* Message-ID, kept for the log line */
	char proto[16];
	uint64_t msg_size;        /* content size including Received */
};

struct smtp_server {
	struct event_base *base;
	const struct config *cfg;
	struct spool *spool;
	unsigned nsessions;
	uint64_t next_id;
	int draining;
	void (*on_queued)(void *, const char *);
	void *on_queued_arg;
	struct client_table *clients; /* per-address limits */
	uint64_t refusal_window;  /* ms: start of the current second */
	unsigned refusals_logged; /* refusal lines in it */
	unsigned refusals_quiet;  /* refusals not logged in it */
	struct session *hash[SESSION_HASH];
};

static char scratch[2 * SCAN_CHUNK + DATA_SCAN_OUT_SLACK];

static void session_io(struct io *io, enum io_event ev, void *arg);
static void session_process(struct session *s);

static struct client_limits
client_limits_of(const struct config *cfg)
{
	struct client_limits lim = {
		.max_sessions = cfg->max_sessions_per_client,
		.max_errors = cfg->max_client_errors,
		.window_ms = (uint64_t)cfg->client_penalty_time * 1000,
	};
	return lim;
}

/* A session admitted with CLIENT_OK (counted) is over. */
static void
release_client(struct smtp_server *srv, const char *ip, int counted)
{
	struct client_limits lim;
	char key[64];

	if (!counted)
		return;
	lim = client_limits_of(srv->cfg);
	client_key(ip, key, sizeof(key));
	client_release(srv->clients, key, util_mono_ms(), &lim);
}

/* ---- helpers ----------------------------------------------------------- */

static void deadline_update(struct session *s);

static void
session_enter(struct session *s, enum session_state st)
{
	/* The content phase of a BDAT transaction spans all its chunks
	 * (and the BDAT commands between them): it starts once, at the
	 * first chunk, and tx_reset() ends it. */
	if (st != s->state && (st == S_DATA || st == S_TLS ||
	    (st == S_BDAT && !s->bdat_phase))) {
		s->phase_start = util_mono_ms();
		s->phase_bytes = 0;
		s->bdat_phase = st == S_BDAT;
	}
	if (st == S_CLOSING && s->state != S_CLOSING)
		s->phase_start = util_mono_ms();
	s->state = st;
	if (st != S_GREETING)
		deadline_update(s);
	switch (st) {
	case S_COMMAND:
		io_set_timeout(s->io, s->conf->command_timeout * 1000);
		break;
	case S_DATA:
	case S_BDAT:
		io_set_timeout(s->io, s->conf->data_timeout * 1000);
		break;
	case S_SPOOLING:
		io_set_timeout(s->io, 0);
		break;
	case S_TLS:
		io_set_timeout(s->io, s->conf->command_timeout * 1000);
		break;
	case S_CLOSING:
		io_set_timeout(s->io, 0);
		io_pause(s->io);
		break;
	case S_GREETING:
		break;
	}
}

static void reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply_not_error(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vreply(struct session *s, int is_error, const char *fmt,
                   va_list ap) __attribute__((format(printf, 3, 0)));

/* Queue one reply line; a 4xx/5xx counts as an error of the session (and
 * of the client address) when is_error. */
static void
vreply(struct session *s, int is_error, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	io_write(s->io, line, (size_t)n);
	if (!is_error || (line[0] != '4' && line[0] != '5'))
		return;
	s->errors++;
	if (s->client_counted) {
		struct client_limits lim = client_limits_of(s->srv->cfg);
		char key[64];

		client_key(s->ip, key, sizeof(key));
		if (client_error(s->srv->clients, key, util_mono_ms(), &lim))
			log_info("s%llu client [%s] refused for %us from now: "
			    "%u error replies within %us (max_client_errors)",
			    (unsigned long long)s->id, key,
			    s->srv->cfg->client_penalty_time, lim.max_errors,
			    s->srv->cfg->client_penalty_time);
	}
}

static void
reply(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreply(s, 1, fmt, ap);
	va_end(ap);
}

/* A 4xx/5xx that is no fault of the client (a limit it could not know). */
static void
reply_not_error(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreply(s, 0, fmt, ap);
	va_end(ap);
}

static void
session_close(struct session *s)
{
	session_enter(s, S_CLOSING);
}

static void
hash_insert(struct smtp_server *srv, struct session *s)
{
	struct session **b = &srv->hash[s->id % SESSION_HASH];

	s->hnext = *b;
	*b = s;
}

static void
hash_remove(struct smtp_server *srv, struct session *s)
{
	struct session **pp = &srv->hash[s->id % SESSION_HASH];

	for (; *pp; pp = &(*pp)->hnext)
		if (*pp == s) {
			*pp = s->hnext;
			return;
		}
}

static struct session *
hash_find(struct smtp_server *srv, uint64_t id)
{
	struct session *s = srv->hash[id % SESSION_HASH];

	while (s && s->id != id)
		s = s->hnext;
	return s;
}

static void
tx_reset(struct session *s)
{
	s->bdat_phase = 0;
	free(s->sender);
	s->sender = NULL;
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpt[i]);
	s->nrcpt = 0;
	s->rcpt_seen = 0;
	s->in_tx = 0;
	memset(&s->mp, 0, sizeof(s->mp));
	s->bdat_used = 0;
	s->bdat_left = 0;
	s->bdat_last = 0;
	s->bdat_discard = 0;
	if (s->msg) {
		spool_msg_abort(s->msg);
		s->msg = NULL;
	}
	s->too_big = 0;
	s->write_err = 0;
	free(s->hdrcap);
	s->hdrcap = NULL;
	s->hdrcap_len = 0;
	free(s->msgid);
	s->msgid = NULL;
	s->qid[0] = '\0';
	s->msg_size = 0;
}

static void
session_free(struct session *s)
{
	struct smtp_server *srv = s->srv;

	tx_reset(s);
	free(s->rcpt);
	if (s->ev_timer)
		event_free(s->ev_timer);
	io_free(s->io);
	hash_remove(srv, s);
	srv->nsessions--;
	release_client(srv, s->ip, s->client_counted);
	free(s);
}

/* A MAIL or RCPT refused for the syntax of its path: log what was sent
 * (escaped, bounded), so that relay tricks that fail to parse are seen. */
static void
log_refused(struct session *s, const char *cmd, const char *arg, size_t len,
            const char *why)
{
	char esc[600];

	util_escape(esc, sizeof(esc), arg, len > 512 ? 512 : len);
	log_info("s%llu H=%s [%s] rejected %s %s: %s",
	    (unsigned long long)s->id, s->helo[0] ? s->helo : "(none)", s->ip,
	    cmd, esc, why);
}

/* Log the first bytes the client sent ahead and give up on it. */
static void
sync_error(struct session *s, const char *after)
{
	struct buf *in = io_in(s->io);
	char esc[200];

	util_escape(esc, sizeof(esc), buf_ptr(in),
	    buf_len(in) > 48 ? 48 : buf_len(in));
	log_info("s%llu SMTP synchronization error H=%s [%s]:%d: input sent "
	    "without waiting for reply %s: \"%s\"", (unsigned long long)s->id,
	    s->helo[0] ? s->helo : "(none)", s->ip, s->port, after, esc);
	reply(s, "554 5.5.0 SMTP synchronization error");
	buf_reset(in);
	session_close(s);
}

static int
sync_enforced(const struct session *s)
{
	return !s->sync_exempt;
}

/* ---- greeting ---------------------------------------------------------- */

static void
session_greet(struct session *s)
{
	if (sync_enforced(s) && io_peek(s->io) > 0) {
		sync_error(s, "before the greeting");
		return;
	}
	reply(s, "220 %s ESMTP Petrel", s->srv->cfg->hostname);
	session_enter(s, S_COMMAND);
	if (buf_len(io_in(s->io)) > 0) /* exempt client that sent ahead */
		session_process(s);
}

/*
 * Slow clients. The io timeout restarts with every read, so alone it lets
 * a client that sends one byte now and then hold a session (and in DATA a
 * spool file) for ever. These deadlines are not moved by reads: a command
 * line must be complete within command_timeout of its first byte; a TLS
 * handshake within command_timeout of STARTTLS; content (DATA, a BDAT
 * chunk) must come at min_data_rate bytes/s on average after a grace of
 * data_timeout (like Postfix's smtpd_per_request_deadline and
 * smtpd_min_data_rate).
 */
/* The content deadline of the current DATA or BDAT phase, 0 = none. */
static uint64_t
content_deadline(const struct session *s)
{
	const struct listen_conf *lc = s->conf;

	if (lc->min_data_rate == 0)
		return 0;
	return s->phase_start + (uint64_t)lc->data_timeout * 1000 +
	    s->phase_bytes * 1000 / lc->min_data_rate;
}

static void
deadline_update(struct session *s)
{
	const struct listen_conf *lc = s->conf;
	uint64_t now = util_mono_ms(), dl = 0;

	switch (s->state) {
	case S_COMMAND:
		if (buf_len(io_in(s->io)) == 0 && !s->overlong) {
			s->line_start = 0;
		} else {
			if (s->line_start == 0)
				s->line_start = now;
			dl = s->line_start + (uint64_t)lc->command_timeout * 1000;
		}
		/* between the chunks of a BDAT transaction its content
		 * deadline still runs */
		if (s->bdat_phase && content_deadline(s) &&
		    (dl == 0 || content_deadline(s) < dl))
			dl = content_deadline(s);
		break;
	case S_TLS:
		dl = s->phase_start + (uint64_t)lc->command_timeout * 1000;
		break;
	case S_DATA:
	case S_BDAT:
		dl = content_deadline(s);
		break;
	case S_CLOSING:
		/* the last replies are flushed, then the session goes; a
		 * client that does not read them is not waited for long */
		dl = s->phase_start + CLOSING_LINGER_MS;
		break;
	default:
		break;
	}
	if (dl == 0) {
		evtimer_del(s->ev_timer);
	} else {
		uint64_t ms = dl > now ? dl - now : 1;
		struct timeval tv = {
			.tv_sec = (time_t)(ms / 1000),
			.tv_usec = (suseconds_t)((ms % 1000) * 1000),
		};
		evtimer_add(s->ev_timer, &tv);
	}
}

static void
session_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == S_GREETING) {
		session_greet(s);
	} else if (s->state == S_TLS) {
		log_info("s%llu TLS error on connection from [%s]:%d: "
		    "handshake not complete within command_timeout",
		    (unsigned long long)s->id, s->ip, s->port);
		session_free(s);
		return;
	} else if (s->state == S_CLOSING) {
		log_info("s%llu [%s]:%d closing: the client does not read our "
		    "last replies, dropped", (unsigned long long)s->id, s->ip,
		    s->port);
		session_free(s);
		return;
	} else {
		/* the deadline deadline_update() chose (the timer may fire a
		 * millisecond early, so do not compare with the clock) */
		uint64_t cdl = s->bdat_phase ? content_deadline(s) : 0;
		uint64_t ldl = s->line_start ? s->line_start +
		    (uint64_t)s->conf->command_timeout * 1000 : 0;
		int content = s->state != S_COMMAND ||
		    (cdl && (ldl == 0 || cdl <= ldl));
		log_info("s%llu H=%s [%s] too slow in state %s (%s), closing",
		    (unsigned long long)s->id, s->helo[0] ? s->helo : "(none)",
		    s->ip, state_names[s->state], content ?
		    "content slower than min_data_rate" :
		    "command line not complete within command_timeout");
		tx_reset(s);
		reply(s, "421 4.4.2 %s Error: timeout exceeded",
		    s->srv->cfg->hostname);
		session_close(s);
	}
	if (s->state == S_CLOSING && io_outlen(s->io) == 0)
		session_free(s);
}

/* ---- message content --------------------------------------------------- */

static const char *
proto_name(const struct session *s, int upper)
{
	static char buf[16];
	const char *p;
	int tls = io_tls_active(s->io);

	if (s->helo_kind != HELO_EHLO)
		p = "SMTP";
	else if (s->mp.smtputf8)
		p = tls ? "UTF8SMTPS" : "UTF8SMTP";
	else
		p = tls ? "ESMTPS" : "ESMTP";
	if (upper)
		return p;
	for (size_t i = 0; i <= strlen(p) && i < sizeof(buf); i++)
		buf[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
	return buf;
}

static void
msg_write(struct session *s, const char *p, size_t n)
{
	if (s->write_err || s->too_big || n == 0)
		return;
	/* The limit applies to the client's content, not our header. */
	if (s->scan.out_total > s->conf->max_message_size) {
		s->too_big = 1;
		return;
	}
	if (s->hdrcap && s->hdrcap_len < HDRCAP_MAX) {
		size_t c = HDRCAP_MAX - s->hdrcap_len;
		if (c > n)
			c = n;
		memcpy(s->hdrcap + s->hdrcap_len, p, c);
		s->hdrcap_len += c;
	}
	if (spool_msg_write(s->msg, p, n) == -1)
		s->write_err = errno ? errno : EIO;
	s->msg_size += n;
}

/* Start the message: queue id, spool message, Received header. 0 or -1. */
static int
msg_begin(struct session *s)
{
	char date[64], hdr[1024];
	const char *tls = io_tls_info(s->io);
	int n;

	util_queue_id(s->qid, sizeof(s->qid));
	s->msg = spool_msg_new(s->srv->spool, s->qid);
	if (s->msg == NULL)
		return -1;
	if (s->hdrcap == NULL && (s->hdrcap = malloc(HDRCAP_MAX)) == NULL)
		return -1;
	s->msg_size = 0;
	s->hdrcap_len = 0;
	util_fmt_rfc5322(date, sizeof(date), time(NULL));
	n = snprintf(hdr, sizeof(hdr),
	    "Received: from %s ([%s])\r\n"
	    "\tby %s (Petrel) with %s id %s%s%s%s\r\n"
	    "\t%s%s%s%s; %s\r\n",
	    s->helo, s->ip, s->srv->cfg->hostname, proto_name(s, 1), s->qid,
	    tls ? "\r\n\t(" : "", tls ? tls : "", tls ? ")" : "",
	    s->nrcpt == 1 ? "for <" : "", s->nrcpt == 1 ? s->rcpt[0] : "",
	    s->nrcpt == 1 ? ">" : "", "", date);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -1;
	if (spool_msg_write(s->msg, hdr, (size_t)n) == -1)
		s->write_err = errno ? errno : EIO;
	s->msg_size = (uint64_t)n;
	snprintf(s->proto, sizeof(s->proto), "%s", proto_name(s, 0));
	return 0;
}

/* The message is complete: reject it, or hand it to the spool. */
static void
msg_finish(struct session *s)
{
	struct spool_env env;
	char msgid[256] = "";
	unsigned f = s->scan.flags;

	if (s->too_big || s->scan.out_total > s->conf->max_message_size) {
		log_info("s%llu H=%s [%s] F=<%s> rejected: message too big "
		    "(over %llu octets)", (unsigned long long)s->id, s->helo,
		    s->ip, s->sender,
		    (unsigned long long)s->conf->max_message_size);
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
		goto reject;
	}
	if (f & DATA_SCAN_NUL) {
		log_info("s%llu H=%s [%s] F=<%s> rejected: NUL character in "
		    "message", (unsigned long long)s->id, s->helo, s->ip,
		    s->sender);
		reply(s, "550 5.6.0 Message contains a NUL character");
		goto reject;
	}
	if ((f & (DATA_SCAN_BARE_LF | DATA_SCAN_BARE_CR)) &&
	    s->conf->bare_lf == BARE_LF_REJECT) {
		log_info("s%llu H=%s [%s] F=<%s> rejected: bare %s in message "
		    "(bare_lf = reject)", (unsigned long long)s->id, s->helo,
		    s->ip, s->sender, (f & DATA_SCAN_BARE_LF) ? "LF" : "CR");
		reply(s, "550 5.6.0 Message contains bare CR or LF characters");
		goto reject;
	}
	if (f & DATA_SCAN_LONG_LINE) {
		log_info("s%llu H=%s [%s] F=<%s> rejected: line longer than %u "
		    "octets", (unsigned long long)s->id, s->helo, s->ip,
		    s->sender, s->conf->max_line_length);
		reply(s, "552 5.6.0 Message line too long (maximum %u octets)",
		    s->conf->max_line_length);
		goto reject;
	}
	if (s->write_err) {
		log_info("s%llu H=%s [%s] F=<%s> temporarily rejected: spool "
		    "write failed: %s", (unsigned long long)s->id, s->helo,
		    s->ip, s->sender, strerror(s->write_err));
		reply_not_error(s, "452 4.3.1 Insufficient system storage");
		goto reject;
	}
	if (s->hdrcap)
		util_find_header(s->hdrcap, s->hdrcap_len, "Message-ID", msgid,
		    sizeof(msgid));
	for (char *p = msgid; *p; p++)
		if (*p == '\r' || *p == '\n' || *p == ' ')
			*p = '_';
	memset(&env, 0, sizeof(env));
	snprintf(env.id, sizeof(env.id), "%s", s->qid);
	env.time_ms = util_now_ms();
	env.sender = s->sender;
	env.helo = s->helo;
	env.client = s->ip;
	env.proto = s->proto;
	env.tls = (char *)(io_tls_info(s->io) ? io_tls_info(s->io) : "");
	env.body_8bit = s->mp.body == SMTP_BODY_8BITMIME ||
	    (f & DATA_SCAN_8BIT) != 0;
	env.smtputf8 = s->mp.smtputf8;
	env.msgid = msgid;
	env.rcpt = s->rcpt;
	env.nrcpt = s->nrcpt;
	{
		struct spool_msg *m = s->msg;
		s->msg = NULL; /* the spool owns it now */
		if (spool_msg_commit(m, &env, s->id) == -1) {
			log_info("s%llu %s cannot serialize envelope",
			    (unsigned long long)s->id, s->qid);
			reply_not_error(s, "451 4.3.0 Local error in processing");
			goto reject;
		}
	}
	/* Keep what the log line needs until the spool answers. */
	s->msgid = strdup(msgid);
	session_enter(s, S_SPOOLING);
	io_pause(s->io);
	return;
reject:
	tx_reset(s);
	session_enter(s, S_COMMAND);
}

/* Called from the spool on the loop thread. */
void
smtp_server_spool_done(uint64_t token, const char *id, int err, void *arg)
{
	struct smtp_server *srv = arg;
	struct session *s = hash_find(srv, token);

	if (s == NULL || s->state != S_SPOOLING) {
		/* Client went away before the reply: the file stays queued
		 * (a duplicate is better than a loss). */
		if (err == 0) {
			log_info("%s queued but client gone before reply", id);
			if (srv->on_queued)
				srv->on_queued(srv->on_queued_arg, id);
		}
		return;
	}
	if (err) {
		log_info("s%llu H=%s [%s] F=<%s> temporarily rejected: spool "
		    "commit failed: %s", (unsigned long long)s->id, s->helo,
		    s->ip, s->sender, strerror(err));
		reply_not_error(s, "452 4.3.1 Insufficient system storage");
	} else {
		const char *tls = io_tls_info(s->io);
		log_info("%s <= %s H=%s [%s] P=%s%s%s S=%llu id=%s", id,
		    s->sender[0] ? s->sender : "<>", s->helo, s->ip, s->proto,
		    tls ? " X=" : "", tls ? tls : "",
		    (unsigned long long)s->msg_size,
		    s->msgid && s->msgid[0] ? s->msgid : "(none)");
		reply(s, "250 2.0.0 Ok: queued as %s", id);
		if (srv->on_queued)
			srv->on_queued(srv->on_queued_arg, id);
	}
	tx_reset(s);
	session_enter(s, S_COMMAND);
	io_resume(s->io);
	session_process(s);
	if (s->peer_eof && s->state != S_CLOSING)
		session_close(s); /* nothing more can come */
}

/* DATA content. Returns 1 to go on processing, 0 when more input is needed. */
static int
session_data(struct session *s)
{
	struct buf *in = io_in(s->io);

	while (buf_len(in) > 0 && !data_scan_done(&s->scan)) {
		size_t n = buf_len(in) > SCAN_CHUNK ? SCAN_CHUNK : buf_len(in);
		size_t outlen = 0, used;

		used = data_scan(&s->scan, buf_ptr(in), n, scratch, &outlen);
		msg_write(s, scratch, outlen);
		buf_consume(in, used);
		s->phase_bytes += used;
	}
	if (!data_scan_done(&s->scan))
		return 0;
	if (!s->pipelining && sync_enforced(s) &&
	    (buf_len(in) > 0 || io_peek(s->io) > 0)) {
		tx_reset(s);
		sync_error(s, "after the end of data");
		return 0;
	}
	msg_finish(s);
	return 1;
}

/* End of one BDAT chunk. */
static void
bdat_chunk_done(struct session *s)
{
	struct buf *in = io_in(s->io);

	if (!s->pipelining && sync_enforced(s) &&
	    (buf_len(in) > 0 || io_peek(s->io) > 0)) {
		tx_reset(s);
		sync_error(s, "after BDAT");
		return;
	}
	if (s->bdat_discard) {
		int code = s->bdat_code;
		if (code == 452)
			reply_not_error(s, "452 4.3.1 Insufficient system storage");
		else if (code == 552)
			reply(s, "552 5.3.4 Message size exceeds fixed limit");
		else
			reply(s, "503 5.5.1 Error: need MAIL and RCPT before BDAT");
		s->bdat_discard = 0;
		session_enter(s, S_COMMAND);
		return;
	}
	if (s->too_big) {
		/* RFC 3030: the transaction is over; later chunks get 503. */
		log_info("s%llu H=%s [%s] F=<%s> rejected: message too big",
		    (unsigned long long)s->id, s->helo, s->ip, s->sender);
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
		tx_reset(s);
		session_enter(s, S_COMMAND);
		return;
	}
	if (!s->bdat_last) {
		reply(s, "250 2.0.0 %llu octets received",
		    (unsigned long long)s->bdat_size);
		session_enter(s, S_COMMAND);
		return;
	}
	{
		char tail[2];
		size_t n = data_scan_finish(&s->scan, tail);
		msg_write(s, tail, n);
	}
	msg_finish(s);
}

/* BDAT chunk bytes. Returns 1 to go on processing, 0 when input is needed. */
static int
session_bdat(struct session *s)
{
	struct buf *in = io_in(s->io);

	while (s->bdat_left > 0 && buf_len(in) > 0) {
		size_t n = buf_len(in);

		if (n > SCAN_CHUNK)
			n = SCAN_CHUNK;
		if (n > s->bdat_left)
			n = (size_t)s->bdat_left;
		if (!s->bdat_discard) {
			size_t outlen = 0;
			data_scan(&s->scan, buf_ptr(in), n, scratch, &outlen);
			msg_write(s, scratch, outlen);
		}
		buf_consume(in, n);
		s->bdat_left -= n;
		s->phase_bytes += n;
	}
	if (s->bdat_left > 0)
		return 0;
	bdat_chunk_done(s);
	return s->state == S_COMMAND;
}

/* ---- commands ---------------------------------------------------------- */

static void
cmd_helo(struct session *s, const struct smtp_cmd *c, int ehlo)
{
	const struct listen_conf *lc = s->conf;
	char name[256];

	if (smtp_parse_helo(c->arg, c->arglen, name, sizeof(name)) == -1) {
		reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		return;
	}
	tx_reset(s);
	memcpy(s->helo, name, sizeof(s->helo));
	s->helo_kind = ehlo ? HELO_EHLO : HELO_HELO;
	s->pipelining = ehlo && lc->pipelining;
	if (!ehlo) {
		reply(s, "250 %s Hello %s [%s]", s->srv->cfg->hostname, name,
		    s->ip);
		return;
	}
	reply(s, "250-%s Hello %s [%s]", s->srv->cfg->hostname, name, s->ip);
	if (lc->pipelining)
		reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %llu", (unsigned long long)lc->max_message_size);
	reply(s, "250-8BITMIME");
	reply(s, "250-ENHANCEDSTATUSCODES");
	if (lc->starttls && s->lst->tls && !io_tls_active(s->io))
		reply(s, "250-STARTTLS");
	if (lc->chunking)
		reply(s, "250-CHUNKING");
	reply(s, "250-SMTPUTF8");
	reply(s, "250 LIMITS RCPTMAX=%u MAILMAX=%u", lc->max_recipients,
	    lc->max_messages);
}

static void
cmd_mail(struct session *s, const struct smtp_cmd *c)
{
	struct smtp_path path;
	const char *rest, *params;
	size_t restlen, plen;
	unsigned exts = 0;
	char err[128];
	int rc;

	if (s->helo_kind == HELO_NONE) {
		reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->in_tx) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->transactions >= s->conf->max_messages) {
		reply_not_error(s, "451 4.5.3 Too many messages in this session "
		    "(MAILMAX %u)", s->conf->max_messages);
		return;
	}
	rest = smtp_skip_prefix(c->arg, c->arglen, "FROM:", &restlen);
	if (rest == NULL) {
		reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	switch (smtp_parse_path(rest, restlen, SMTP_PATH_ALLOW_NULL, &path,
	    &params, &plen)) {
	case SMTP_PATH_OK:
		break;
	case SMTP_PATH_TOO_LONG:
		log_refused(s, "MAIL", rest, restlen, "address too long");
		reply(s, "501 5.1.7 Sender address too long");
		return;
	case SMTP_PATH_BAD_UTF8:
		log_refused(s, "MAIL", rest, restlen, "malformed UTF-8");
		reply(s, "553 5.6.7 Malformed UTF-8 in sender address");
		return;
	default:
		log_refused(s, "MAIL", rest, restlen, "bad address syntax");
		reply(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if (s->helo_kind == HELO_EHLO)
		exts = SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8;
	memset(&s->mp, 0, sizeof(s->mp));
	rc = smtp_parse_mail_params(params, plen, exts, &s->mp, err,
	    sizeof(err));
	if (rc != 0) {
		reply(s, "%d 5.5.4 %s", rc, err);
		return;
	}
	if (s->mp.has_size && s->mp.size > s->conf->max_message_size) {
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	if (path.utf8 && !s->mp.smtputf8) {
		reply(s, "553 5.6.7 Address requires SMTPUTF8");
		return;
	}
	if ((s->sender = strdup(path.addr)) == NULL) {
		reply_not_error(s, "451 4.3.0 Out of memory");
		return;
	}
	s->in_tx = 1;
	s->transactions++;
	reply(s, "250 2.1.0 Ok");
}

static void
cmd_rcpt(struct session *s, const struct smtp_cmd *c)
{
	struct smtp_path path;
	const char *rest, *params;
	size_t restlen, plen;
	unsigned max = s->conf->max_recipients;
	char err[128];
	int rc;

	if (!s->in_tx) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	rest = smtp_skip_prefix(c->arg, c->arglen, "TO:", &restlen);
	if (rest == NULL) {
		reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	switch (smtp_parse_path(rest, restlen, SMTP_PATH_ALLOW_POSTMASTER,
	    &path, &params, &plen)) {
	case SMTP_PATH_OK:
		break;
	case SMTP_PATH_TOO_LONG:
		log_refused(s, "RCPT", rest, restlen, "address too long");
		reply(s, "501 5.1.3 Recipient address too long");
		return;
	case SMTP_PATH_BAD_UTF8:
		log_refused(s, "RCPT", rest, restlen, "malformed UTF-8");
		reply(s, "553 5.6.7 Malformed UTF-8 in recipient address");
		return;
	default:
		log_refused(s, "RCPT", rest, restlen, "bad address syntax");
		reply(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	if ((rc = smtp_parse_rcpt_params(params, plen, err, sizeof(err))) != 0) {
		reply(s, "%d 5.5.4 %s", rc, err);
		return;
	}
	if (path.utf8 && !s->mp.smtputf8) {
		reply(s, "553 5.6.7 Address requires SMTPUTF8");
		return;
	}
	s->rcpt_seen++;
	if (s->nrcpt >= max) {
		/* RFC 5321 4.5.3.1.10: a client that pipelined past the limit
		 * sends the rest in another transaction; its overshoot is not
		 * an error, up to RCPT_OVERSHOOT times the limit. */
		uint64_t seen = s->rcpt_seen;
		void (*rf)(struct session *, const char *, ...) =
		    seen <= (uint64_t)RCPT_OVERSHOOT * max ? reply_not_error
		                                           : reply;
		if (seen > 2 * (uint64_t)max)
			rf(s, "552 5.5.3 Too many recipients");
		else
			rf(s, "452 4.5.3 Too many recipients");
		return;
	}
	if (!path.postmaster && !s->relay_ok &&
	    !config_is_local_domain(s->srv->cfg, path.addr + path.at + 1)) {
		log_info("s%llu H=%s [%s] F=<%s> rejected RCPT <%s>: relaying "
		    "denied", (unsigned long long)s->id, s->helo, s->ip,
		    s->sender, path.addr);
		reply(s, "550 5.7.1 <%s>: Relaying denied", path.addr);
		return;
	}
	if (s->nrcpt == s->rcpt_cap) {
		size_t ncap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
		char **nv = realloc(s->rcpt, ncap * sizeof(*nv));
		if (nv == NULL) {
			reply_not_error(s, "452 4.3.0 Out of memory");
			return;
		}
		s->rcpt = nv;
		s->rcpt_cap = ncap;
	}
	if (path.postmaster) {
		/* RFC 5321 4.1.1.3: <postmaster> is this server's; qualify it
		 * (first local domain, else hostname) so that it is routed as
		 * local mail and never sent on unqualified (2.3.5). */
		const struct config *cfg = s->srv->cfg;
		snprintf(path.addr, sizeof(path.addr), "postmaster@%s",
		    cfg->nlocal_domains ? cfg->local_domains[0] : cfg->hostname);
	}
	if ((s->rcpt[s->nrcpt] = strdup(path.addr)) == NULL) {
		reply_not_error(s, "452 4.3.0 Out of memory");
		return;
	}
	s->nrcpt++;
	reply(s, "250 2.1.5 Ok");
}

static void
cmd_data(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen) {
		reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (!s->in_tx) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->bdat_used) {
		reply(s, "503 5.5.1 Error: DATA after BDAT in one transaction");
		return;
	}
	if (s->nrcpt == 0) {
		reply(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (msg_begin(s) == -1) {
		reply_not_error(s, "452 4.3.1 Insufficient system storage");
		tx_reset(s);
		return;
	}
	data_scan_init(&s->scan, 0, s->conf->bare_lf == BARE_LF_NORMALIZE,
	    s->conf->max_line_length);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	session_enter(s, S_DATA);
}

static void
cmd_bdat(struct session *s, const struct smtp_cmd *c)
{
	uint64_t size;
	int last;

	if (!s->conf->chunking || s->helo_kind != HELO_EHLO) {
		reply(s, "502 5.5.1 BDAT not available");
		return;
	}
	if (smtp_parse_bdat(c->arg, c->arglen, &size, &last) == -1) {
		reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		return;
	}
	/* Every path below consumes exactly size bytes (RFC 3030 2). */
	s->bdat_discard = 0;
	if (!s->in_tx || s->nrcpt == 0) {
		s->bdat_discard = 1;
		s->bdat_code = 503;
	} else if (!s->bdat_used) {
		s->bdat_used = 1;
		if (msg_begin(s) == -1) {
			tx_reset(s);
			s->bdat_discard = 1;
			s->bdat_code = 452;
		} else {
			data_scan_init(&s->scan, 1,
			    s->conf->bare_lf == BARE_LF_NORMALIZE,
			    s->conf->max_line_length);
		}
	}
	if (!s->bdat_discard && s->scan.out_total + size >
	    s->conf->max_message_size) {
		log_info("s%llu H=%s [%s] F=<%s> rejected: message too big "
		    "(BDAT, over %llu octets)", (unsigned long long)s->id,
		    s->helo, s->ip, s->sender,
		    (unsigned long long)s->conf->max_message_size);
		tx_reset(s);
		s->bdat_discard = 1;
		s->bdat_code = 552;
	}
	s->bdat_size = size;
	s->bdat_left = size;
	s->bdat_last = last;
	session_enter(s, S_BDAT);
}

static void
cmd_starttls(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen) {
		reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (io_tls_active(s->io)) {
		reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!s->conf->starttls || s->lst->tls == NULL) {
		reply(s, "502 5.5.1 STARTTLS not available");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	/* RFC 3207 4.2: forget everything learned before TLS. */
	tx_reset(s);
	s->helo_kind = HELO_NONE;
	s->helo[0] = '\0';
	s->pipelining = 0;
	session_enter(s, S_TLS);
	io_starttls(s->io, s->lst->tls);
}

static void
session_command(struct session *s, const struct smtp_cmd *c, int bad)
{
	if (bad) {
		reply(s, "500 5.5.2 Error: bad character in command");
		return;
	}
	switch (c->verb) {
	case SMTP_EHLO:
		cmd_helo(s, c, 1);
		break;
	case SMTP_HELO:
		cmd_helo(s, c, 0);
		break;
	case SMTP_MAIL:
		cmd_mail(s, c);
		break;
	case SMTP_RCPT:
		cmd_rcpt(s, c);
		break;
	case SMTP_DATA:
		cmd_data(s, c);
		break;
	case SMTP_BDAT:
		cmd_bdat(s, c);
		break;
	case SMTP_RSET:
		if (c->arglen) {
			reply(s, "501 5.5.4 Syntax: RSET");
			break;
		}
		tx_reset(s);
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_QUIT:
		reply(s, "221 2.0.0 Bye");
		session_close(s);
		break;
	case SMTP_VRFY:
		reply(s, "252 2.5.2 Cannot VRFY user, but will accept message "
		    "and attempt delivery");
		break;
	case SMTP_EXPN:
		reply(s, "502 5.5.1 EXPN not available");
		break;
	case SMTP_HELP:
		reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET "
		    "NOOP QUIT VRFY HELP STARTTLS");
		break;
	case SMTP_STARTTLS:
		cmd_starttls(s, c);
		break;
	case SMTP_AUTH:
		reply(s, "502 5.5.1 AUTH not available");
		break;
	case SMTP_UNKNOWN:
	default:
		reply(s, "500 5.5.2 Error: command not recognized");
		break;
	}
}

/*
 * Handle every complete command (and content) in the input buffer, in
 * order, until more input is needed or the session waits for something.
 */
static void
session_process(struct session *s)
{
	struct buf *in = io_in(s->io);
	char line[SMTP_LINE_MAX];

	for (;;) {
		struct smtp_cmd cmd;
		const char *p, *nl;
		size_t len, linelen;
		int bad;

		if (s->state == S_DATA) {
			if (!session_data(s))
				break;
			continue;
		}
		if (s->state == S_BDAT) {
			if (!session_bdat(s))
				break;
			continue;
		}
		if (s->state != S_COMMAND)
			break;
		/* A client that pipelines commands and does not read the
		 * replies: stop here; the input buffer fills, reading stops
		 * (io.c), and IO_LOWAT resumes once the replies are out. */
		if (io_outlen(s->io) > OUT_PAUSE)
			break;
		if (s->srv->draining && !s->in_tx) {
			reply_not_error(s, "421 4.3.2 %s Service shutting down",
			    s->srv->cfg->hostname);
			session_close(s);
			break;
		}
		if (s->errors >= s->conf->max_errors) {
			log_info("s%llu H=%s [%s] too many errors (%u), closing",
			    (unsigned long long)s->id,
			    s->helo[0] ? s->helo : "(none)", s->ip, s->errors);
			reply(s, "421 4.7.0 %s Error: too many errors",
			    s->srv->cfg->hostname);
			session_close(s);
			break;
		}
		p = buf_ptr(in);
		len = buf_len(in);
		nl = len ? memchr(p, '\n', len) : NULL;
		if (nl == NULL) {
			if (len >= SMTP_LINE_MAX) {
				s->overlong = 1;
				buf_consume(in, len);
			}
			break;
		}
		linelen = (size_t)(nl - p);
		if (s->overlong || linelen + 1 > SMTP_LINE_MAX) {
			s->overlong = 0;
			s->line_start = 0;
			buf_consume(in, linelen + 1);
			reply(s, "500 5.5.6 Line too long");
			continue;
		}
		if (linelen > 0 && p[linelen - 1] == '\r')
			linelen--;
		memcpy(line, p, linelen);
		buf_consume(in, (size_t)(nl - p) + 1);
		s->line_start = 0;
		bad = smtp_parse_command(line, linelen, &cmd) == -1;
		if (sync_enforced(s) && cmd.verb != SMTP_BDAT &&
		    (smtp_verb_ends_group(cmd.verb) || !s->pipelining || bad) &&
		    (buf_len(in) > 0 || io_peek(s->io) > 0)) {
			char after[64];
			snprintf(after, sizeof(after), "after %s",
			    smtp_verb_name(cmd.verb));
			sync_error(s, after);
			break;
		}
		session_command(s, &cmd, bad);
	}
	deadline_update(s);
}

/* ---- io events --------------------------------------------------------- */

static void
session_io(struct io *io, enum io_event ev, void *arg)
{
	struct session *s = arg;

	switch (ev) {
	case IO_DATAIN:
		if (s->state == S_GREETING) {
			if (sync_enforced(s)) {
				event_del(s->ev_timer);
				sync_error(s, "before the greeting");
			}
			return;
		}
		session_process(s);
		return;
	case IO_LOWAT:
		if (s->state == S_CLOSING)
			session_free(s);
		else if (s->state == S_COMMAND && buf_len(io_in(s->io)) > 0)
			session_process(s);   /* paused on OUT_PAUSE */
		return;
	case IO_CONNECTED: /* cannot happen: accepted sockets */
		return;
	case IO_TLSREADY:
		session_enter(s, S_COMMAND);
		session_process(s);
		return;
	case IO_TIMEOUT:
		if (s->state == S_TLS) {
			log_info("s%llu TLS error on connection from [%s]:%d: "
			    "handshake timed out", (unsigned long long)s->id,
			    s->ip, s->port);
			session_free(s);
			return;
		}
		log_info("s%llu H=%s [%s] timeout in state %s, closing",
		    (unsigned long long)s->id, s->helo[0] ? s->helo : "(none)",
		    s->ip, state_names[s->state]);
		tx_reset(s);
		reply(s, "421 4.4.2 %s Error: timeout exceeded",
		    s->srv->cfg->hostname);
		session_close(s);
		return;
	case IO_DISCONNECTED:
		if (s->state == S_DATA || s->state == S_BDAT) {
			log_info("s%llu H=%s [%s] connection lost during %s%s%s",
			    (unsigned long long)s->id, s->helo, s->ip,
			    state_names[s->state], s->qid[0] ? ", discarded " : "",
			    s->qid);
		} else if (s->state == S_SPOOLING) {
			/* Half-closed after the end of data: answer anyway. */
			s->peer_eof = 1;
			return;
		} else if (io_outlen(io) > 0 && s->state != S_CLOSING) {
			session_close(s); /* flush, then IO_LOWAT frees */
			return;
		}
		session_free(s);
		return;
	case IO_ERROR:
		if (s->state == S_TLS)
			log_info("s%llu TLS error on connection from [%s]:%d: %s",
			    (unsigned long long)s->id, s->ip, s->port,
			    io_error(io));
		else if (s->state != S_CLOSING)
			log_info("s%llu [%s]:%d connection error: %s",
			    (unsigned long long)s->id, s->ip, s->port,
			    io_error(io));
		session_free(s);
		return;
	}
}

/* ---- server ------------------------------------------------------------ */

struct smtp_server *
smtp_server_new(struct event_base *base, const struct config *cfg)
{
	struct smtp_server *srv = calloc(1, sizeof(*srv));

	if (srv == NULL)
		return NULL;
	srv->base = base;
	srv->cfg = cfg;
	srv->next_id = 1;
	if ((srv->clients = client_table_new()) == NULL) {
		free(srv);
		return NULL;
	}
	return srv;
}

void
smtp_server_set_config(struct smtp_server *srv, const struct config *cfg)
{
	srv->cfg = cfg;
}

void
smtp_server_set_spool(struct smtp_server *srv, struct spool *sp)
{
	srv->spool = sp;
}

void
smtp_server_free(struct smtp_server *srv)
{
	if (srv == NULL)
		return;
	for (size_t i = 0; i < SESSION_HASH; i++)
		while (srv->hash[i])
			session_free(srv->hash[i]);
	client_table_free(srv->clients);
	free(srv);
}

void
smtp_server_on_queued(struct smtp_server *srv,
                      void (*fn)(void *arg, const char *id), void *arg)
{
	srv->on_queued = fn;
	srv->on_queued_arg = arg;
}

unsigned
smtp_server_drain(struct smtp_server *srv)
{
	unsigned busy = 0;

	srv->draining = 1;
	for (size_t i = 0; i < SESSION_HASH; i++)
		for (struct session *s = srv->hash[i]; s; s = s->hnext) {
			if (s->state == S_CLOSING)
				continue;
			if (s->in_tx || s->state == S_DATA || s->state == S_BDAT ||
			    s->state == S_SPOOLING) {
				busy++;
				continue;
			}
			if (s->state == S_COMMAND || s->state == S_GREETING) {
				if (s->ev_timer)
					event_del(s->ev_timer);
				reply_not_error(s, "421 4.3.2 %s Service shutting down",
				    srv->cfg->hostname);
				session_close(s);
			}
		}
	return busy;
}

unsigned
smtp_server_sessions(const struct smtp_server *srv)
{
	return srv->nsessions;
}

static void refuse(struct smtp_server *srv, int fd, const char *fmt)
    __attribute__((format(printf, 3, 0)));

/* Refuse a connection at connect: one reply (fmt takes the hostname), and
 * close. The socket is fresh, so the short line fits its send buffer. */
static void
refuse(struct smtp_server *srv, int fd, const char *fmt)
{
	char msg[300];
	int n;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	n = snprintf(msg, sizeof(msg) - 2, fmt, srv->cfg->hostname);
#pragma GCC diagnostic pop
	if (n > 0 && (size_t)n < sizeof(msg) - 2) {
		msg[n++] = '\r';
		msg[n++] = '\n';
		if (write(fd, msg, (size_t)n) < 0) {
			/* nothing more to do */
		}
	}
	close(fd);
}

/*
 * A flood of refused connections must not become a flood of log lines:
 * REFUSAL_LOG_BURST per second are logged, the others counted, and the
 * count is logged when the second is over (at the next connection).
 */
static void
refusal_log_roll(struct smtp_server *srv)
{
	uint64_t now = util_mono_ms();

	if (now - srv->refusal_window < 1000)
		return;
	if (srv->refusals_quiet > 0)
		log_info("%u more refused connections not logged (over %d per "
		    "second)", srv->refusals_quiet, REFUSAL_LOG_BURST);
	srv->refusal_window = now;
	srv->refusals_logged = 0;
	srv->refusals_quiet = 0;
}

static int
refusal_log_ok(struct smtp_server *srv)
{
	refusal_log_roll(srv);
	if (srv->refusals_logged < REFUSAL_LOG_BURST) {
		srv->refusals_logged++;
		return 1;
	}
	srv->refusals_quiet++;
	return 0;
}

void
smtp_server_accept(struct smtp_server *srv, const struct smtp_listener *lst,
                   int fd, const struct sockaddr *peer, socklen_t peerlen)
{
	const struct listen_conf *lc = lst->conf;
	struct session *s;
	char ip[64];
	int port, counted = 0;

	util_addr_str(peer, ip, sizeof(ip), &port);
	refusal_log_roll(srv);    /* log a finished second's count */
	if (srv->nsessions >= srv->cfg->max_sessions) {
		if (refusal_log_ok(srv))
			log_info("SMTP connection from [%s]:%d refused: too "
			    "many connections (max_sessions %u)", ip, port,
			    srv->cfg->max_sessions);
		refuse(srv, fd, "421 4.7.0 %s Error: too many connections");
		return;
	}
	if (!cidr_list_match(&srv->cfg->relay_networks, peer) &&
	    !cidr_list_match(&srv->cfg->client_limit_exceptions, peer)) {
		struct client_limits lim = client_limits_of(srv->cfg);
		unsigned info;
		char key[64];

		client_key(ip, key, sizeof(key));
		switch (client_admit(srv->clients, key, util_mono_ms(), &lim,
		    &info)) {
		case CLIENT_OK:
			counted = 1;
			break;
		case CLIENT_UNTRACKED:
			break;
		case CLIENT_TOO_MANY_SESSIONS:
			if (refusal_log_ok(srv))
				log_info("SMTP connection from [%s]:%d "
				    "refused: %u sessions from this address "
				    "(max_sessions_per_client %u)", ip, port,
				    info, lim.max_sessions);
			refuse(srv, fd, "421 4.7.0 %s Error: too many "
			    "connections from your address");
			return;
		case CLIENT_BLOCKED:
			if (refusal_log_ok(srv))
				log_info("SMTP connection from [%s]:%d "
				    "refused: too many errors from this "
				    "address, %us of penalty left "
				    "(max_client_errors)", ip, port, info);
			refuse(srv, fd, "421 4.7.0 %s Error: too many errors "
			    "from your address, try again later");
			return;
		}
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		release_client(srv, ip, counted);
		close(fd);
		return;
	}
	s->client_counted = counted;
	s->id = srv->next_id++;
	s->srv = srv;
	s->lst = lst;
	s->conf = lc;
	memcpy(s->ip, ip, sizeof(s->ip));
	s->port = port;
	s->sync_exempt = !lc->enforce_sync ||
	    cidr_list_match(&lc->sync_exempt_networks, peer);
	s->relay_ok = cidr_list_match(&srv->cfg->relay_networks, peer);
	s->io = io_new(srv->base, fd, session_io, s);
	s->ev_timer = evtimer_new(srv->base, session_on_timer, s);
	if (s->io == NULL || s->ev_timer == NULL) {
		if (s->io)
			io_free(s->io);
		else
			close(fd);
		if (s->ev_timer)
			event_free(s->ev_timer);
		release_client(srv, ip, counted);
		free(s);
		return;
	}
	hash_insert(srv, s);
	srv->nsessions++;
	log_info("s%llu SMTP connection from [%s]:%d (%s, %u sessions)",
	    (unsigned long long)s->id, ip, port, lc->name, srv->nsessions);
	s->state = S_GREETING;
	if (lc->greeting_delay_ms > 0) {
		struct timeval tv = {
			.tv_sec = lc->greeting_delay_ms / 1000,
			.tv_usec = (lc->greeting_delay_ms % 1000) * 1000,
		};
		evtimer_add(s->ev_timer, &tv);
		io_set_timeout(s->io, lc->command_timeout * 1000);
	} else {
		session_greet(s);
	}
}
