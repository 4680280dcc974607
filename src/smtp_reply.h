/*
 * smtp_reply.h - pure parsers for what an SMTP client reads: replies
 * (RFC 5321 4.2, multi-line "NNN-text" ... "NNN text"), enhanced status
 * codes (RFC 3463) and the EHLO keyword list (RFC 5321 4.1.1.1, 1870, 2920,
 * 3030, 3207, 3461, 6152, 6531, 9422).
 *
 * Functions work on byte ranges (not NUL-terminated), allocate nothing and
 * never read outside the range.
 */
#ifndef PETREL_SMTP_REPLY_H
#define PETREL_SMTP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_LINE_MAX 2048  /* one reply line incl. CRLF (RFC: 512) */
#define SMTP_REPLY_LINES_MAX 128  /* lines in one reply */
#define SMTP_REPLY_TEXT_MAX 512   /* text kept for logs and bounces */

struct smtp_reply {
	int code;                 /* 200..599 */
	char enh[16];             /* "2.0.0" when the first line has one, else "" */
	char text[SMTP_REPLY_TEXT_MAX]; /* whole reply as one line for logs:
	                             "250 2.0.0 Ok: queued as X", lines after
	                             the first joined with " / "; control and
	                             non-ASCII bytes replaced by '?'; truncated */
	unsigned nlines;
};

enum smtp_reply_status {
	SMTP_REPLY_NEED_MORE = 0, /* no complete reply yet */
	SMTP_REPLY_OK = 1,        /* *consumed bytes form one complete reply */
	SMTP_REPLY_BAD = -1,      /* malformed: not "DDD" + (SP|'-'|CRLF), code
	                             out of 200..599, codes differ between
	                             lines, a line over SMTP_REPLY_LINE_MAX, or
	                             more than SMTP_REPLY_LINES_MAX lines */
};

/*
 * Parse one reply at the start of buf. Lines end with CRLF; a bare LF is
 * accepted as a line end too (tolerance for broken servers). A line that is
 * exactly "DDD" (no text) is a last line. On SMTP_REPLY_OK, *consumed is the
 * number of bytes the reply took (through its last line's LF) and *r is
 * filled. On NEED_MORE nothing is consumed; when len already exceeds what a
 * valid incomplete reply could hold (a partial line over
 * SMTP_REPLY_LINE_MAX), the status is SMTP_REPLY_BAD instead.
 */
enum smtp_reply_status smtp_reply_parse(const char *buf, size_t len,
                                        struct smtp_reply *r,
                                        size_t *consumed);

/* Extensions found in an EHLO reply. */
#define EHLO_PIPELINING   0x0001
#define EHLO_SIZE         0x0002
#define EHLO_8BITMIME     0x0004
#define EHLO_ENHANCED     0x0008  /* ENHANCEDSTATUSCODES */
#define EHLO_STARTTLS     0x0010
#define EHLO_CHUNKING     0x0020
#define EHLO_SMTPUTF8     0x0040
#define EHLO_DSN          0x0080
#define EHLO_LIMITS       0x0100
#define EHLO_BINARYMIME   0x0200
#define EHLO_AUTH         0x0400

struct smtp_ehlo {
	unsigned exts;        /* EHLO_* */
	uint64_t size;        /* SIZE argument, 0 = none or unlimited */
	unsigned rcptmax;     /* LIMITS RCPTMAX=, 0 = not given */
	unsigned mailmax;     /* LIMITS MAILMAX=, 0 = not given */
	unsigned rcptdomainmax; /* LIMITS RCPTDOMAINMAX=, 0 = not given */
};

/*
 * Read the keywords of a complete 250 EHLO reply (the raw bytes of all its
 * lines, as consumed by smtp_reply_parse). The first line is the greeting
 * and is skipped. Keywords are case-insensitive; unknown keywords and bad
 * arguments are ignored (a bad SIZE or LIMITS value counts as absent).
 */
void smtp_ehlo_parse(const char *buf, size_t len, struct smtp_ehlo *e);

/*
 * Classify a reply code for delivery: 2 = success, 3 = intermediate
 * (354), 4 = temporary failure, 5 = permanent failure; 0 for anything
 * else.
 */
int smtp_reply_class(int code);

#endif
