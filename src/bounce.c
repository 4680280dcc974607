/*
 * bounce.c - RFC 3464 delivery status notifications.
 *
 * bounce_build() is pure (text in, text out) and unit tested;
 * bounce_send() reads the original headers from the spool and writes the
 * bounce as a new spool message from <> to the original sender. A bounce is
 * never sent for a message whose sender is <> (the queue checks), so a
 * bounce that bounces is dropped, not bounced again.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bounce.h"
#include "buf.h"
#include "config.h"
#include "queue.h"
#include "util.h"

#define HEADERS_MAX (64 * 1024)

/* "5.1.1" from "550 5.1.1 text", else "5.0.0". */
static void
status_of(const char *reason, char *out, size_t len)
{
	const char *p = reason;
	size_t n = 0;

	snprintf(out, len, "5.0.0");
	if (p == NULL || strlen(p) < 5 || p[3] != ' ')
		return;
	p += 4;
	if (p[0] != '5' && p[0] != '4')
		return;
	while (p[n] && p[n] != ' ' && n < 15)
		n++;
	if (n >= 5 && p[1] == '.' && n < len) {
		memcpy(out, p, n);
		out[n] = '\0';
		out[0] = '5'; /* a bounce reports a permanent failure */
	}
}

/* Header-safe copy: no CR/LF. */
static void
clean(char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			*s = ' ';
}

char *
bounce_build(const char *hostname, const char *bounce_id, const char *orig_id,
             const char *orig_sender, uint64_t arrival_ms,
             const struct bounce_rcpt *rcpts, size_t nrcpts,
             const char *orig_headers, size_t hlen, uint64_t now_ms,
             size_t *outlen)
{
	struct buf b = { 0 };
	char date[64], arrival[64], boundary[128], st[16], reason[600];
	int rc = 0;

	util_fmt_rfc5322(date, sizeof(date), (time_t)(now_ms / 1000));
	util_fmt_rfc5322(arrival, sizeof(arrival), (time_t)(arrival_ms / 1000));
	snprintf(boundary, sizeof(boundary), "%s/%s", bounce_id, hostname);
	rc |= buf_printf(&b,
	    "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: Undelivered Mail Returned to Sender\r\n"
	    "Date: %s\r\n"
	    "Message-ID: <%s@%s>\r\n"
	    "Auto-Submitted: auto-replied\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n"
	    "\r\n"
	    "This is a MIME-encapsulated message.\r\n"
	    "\r\n"
	    "--%s\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n"
	    "This is the mail system at host %s.\r\n"
	    "\r\n"
	    "Your message could not be delivered to one or more recipients.\r\n"
	    "It is attached below (headers only).\r\n"
	    "\r\n",
	    hostname, orig_sender, date, bounce_id, hostname, boundary,
	    boundary, hostname);
	for (size_t i = 0; i < nrcpts; i++) {
		snprintf(reason, sizeof(reason), "%s",
		    rcpts[i].reason ? rcpts[i].reason : "failed");
		clean(reason);
		rc |= buf_printf(&b, "<%s>: %s\r\n", rcpts[i].addr, reason);
	}
	rc |= buf_printf(&b,
	    "\r\n--%s\r\n"
	    "Content-Type: message/delivery-status\r\n"
	    "\r\n"
	    "Reporting-MTA: dns; %s\r\n"
	    "X-Petrel-Queue-ID: %s\r\n"
	    "Arrival-Date: %s\r\n",
	    boundary, hostname, orig_id, arrival);
	for (size_t i = 0; i < nrcpts; i++) {
		snprintf(reason, sizeof(reason), "%s",
		    rcpts[i].reason ? rcpts[i].reason : "failed");
		clean(reason);
		status_of(reason, st, sizeof(st));
		rc |= buf_printf(&b,
		    "\r\n"
		    "Final-Recipient: rfc822; %s\r\n"
		    "Action: failed\r\n"
		    "Status: %s\r\n"
		    "Diagnostic-Code: smtp; %s\r\n"
		    "Last-Attempt-Date: %s\r\n",
		    rcpts[i].addr, st, reason, date);
	}
	rc |= buf_printf(&b,
	    "\r\n--%s\r\n"
	    "Content-Type: text/rfc822-headers\r\n"
	    "\r\n", boundary);
	rc |= buf_append(&b, orig_headers, hlen);
	if (hlen > 0 && orig_headers[hlen - 1] != '\n')
		rc |= buf_append(&b, "\r\n", 2);
	rc |= buf_printf(&b, "\r\n--%s--\r\n", boundary);
	if (rc != 0) {
		buf_free(&b);
		return NULL;
	}
	*outlen = buf_len(&b);
	return b.data; /* start is 0: nothing was consumed */
}

/* The original's header section (up to the empty line), at most 64 KiB. */
static char *
read_headers(const struct config *cfg, const struct qmsg *m, size_t *len)
{
	char path[PATH_MAX], *buf, *end;
	size_t want = m->env.content_size < HEADERS_MAX ?
	    (size_t)m->env.content_size : HEADERS_MAX;
	ssize_t n;
	int fd;

	*len = 0;
	snprintf(path, sizeof(path), "%s/queue/%s", cfg->spool_dir, m->env.id);
	if ((buf = malloc(want + 1)) == NULL)
		return NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		free(buf);
		return NULL;
	}
	n = pread(fd, buf, want, 0);
	close(fd);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	end = memmem(buf, (size_t)n, "\r\n\r\n", 4);
	*len = end ? (size_t)(end - buf) + 2 : (size_t)n;
	return buf;
}

int
bounce_send(struct spool *sp, const struct config *cfg, const struct qmsg *m,
            spool_done_cb cb, void *arg, uint64_t token)
{
	struct bounce_rcpt *rc;
	struct spool_env env;
	struct spool_msg *msg;
	char id[QUEUE_ID_LEN + 1], msgid[300], *text, *hdr, *rcpt[1];
	size_t n = 0, len, hlen;
	int ret = -1;

	if ((rc = calloc(m->env.nrcpt, sizeof(*rc))) == NULL)
		return -1;
	for (size_t i = 0; i < m->env.nrcpt; i++)
		if (m->rstate[i] == RCPT_FAILED) {
			rc[n].addr = m->env.rcpt[i];
			rc[n].reason = m->rerr[i];
			n++;
		}
	util_queue_id(id, sizeof(id));
	hdr = read_headers(cfg, m, &hlen);
	text = bounce_build(cfg->hostname, id, m->env.id, m->env.sender,
	    m->env.time_ms, rc, n, hdr ? hdr : "", hdr ? hlen : 0,
	    util_now_ms(), &len);
	free(hdr);
	free(rc);
	if (text == NULL)
		return -1;
	if ((msg = spool_msg_new(sp, id)) == NULL)
		goto done;
	if (spool_msg_write(msg, text, len) == -1) {
		spool_msg_abort(msg);
		goto done;
	}
	memset(&env, 0, sizeof(env));
	snprintf(env.id, sizeof(env.id), "%s", id);
	snprintf(msgid, sizeof(msgid), "<%s@%s>", id, cfg->hostname);
	env.time_ms = util_now_ms();
	env.sender = "";
	env.helo = cfg->hostname;
	env.client = "127.0.0.1";
	env.proto = "local";
	env.tls = "";
	env.msgid = msgid;
	rcpt[0] = m->env.sender;
	env.rcpt = rcpt;
	env.nrcpt = 1;
	ret = spool_msg_commit_cb(msg, &env, cb, arg, token);
done:
	free(text);
	return ret;
}
