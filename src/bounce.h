/*
 * bounce.h - delivery status notifications (RFC 3464) for recipients that
 * failed permanently, sent from the null sender to the envelope sender.
 */
#ifndef PETREL_BOUNCE_H
#define PETREL_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "spool.h"

struct config;
struct qmsg;

struct bounce_rcpt {
	const char *addr;
	const char *reason;   /* the reply or reason, e.g. "550 5.1.1 no such user" */
};

/*
 * Build the DSN message text (CRLF lines): headers, a multipart/report with
 * a human-readable part, a message/delivery-status part (one per-recipient
 * block each, Status from the reason's enhanced code or 5.0.0), and the
 * original message's headers as text/rfc822-headers. Pure: no I/O.
 * Returns a malloc'ed buffer (caller frees) or NULL.
 */
char *bounce_build(const char *hostname, const char *bounce_id,
                   const char *orig_id, const char *orig_sender,
                   uint64_t arrival_ms, const struct bounce_rcpt *rcpts,
                   size_t nrcpts, const char *orig_headers, size_t hlen,
                   uint64_t now_ms, size_t *outlen);

/*
 * Write the bounce for the failed recipients of m into the spool (reading
 * the original headers from its spool file) and commit it; cb fires with
 * token when it is durable. Returns 0 or -1.
 */
int bounce_send(struct spool *sp, const struct config *cfg,
                const struct qmsg *m, spool_done_cb cb, void *arg,
                uint64_t token);

#endif
