/*
 * smtp_reply.c - pure parsers for what an SMTP client reads: replies
 * (RFC 5321 4.2 and 4.2.1), enhanced status codes at the start of a reply's
 * text (RFC 3463) and the keywords of an EHLO reply (RFC 5321 4.1.1.1 and
 * the extension RFCs listed in smtp_reply.h).
 *
 * Invariants, for every function in this file:
 *  - the input is a byte range [buf, buf + len) that need not be
 *    NUL-terminated; every read is guarded by an index compared with len,
 *    so no byte outside the range is ever touched (the fuzz target checks
 *    this under ASan);
 *  - nothing is allocated and there is no global state; results go into
 *    the caller's struct, whose fixed-size strings are always terminated;
 *  - character classes are ASCII only, on purpose (ctype.h obeys locale).
 *
 * smtp_reply_parse() is stateless and incremental: the caller keeps its
 * input buffer, calls again with more bytes after SMTP_REPLY_NEED_MORE, and
 * after SMTP_REPLY_OK drops *consumed bytes and calls again for the next
 * pipelined reply. One call reads only the first reply: each line is found
 * with a memchr bounded by SMTP_REPLY_LINE_MAX and by the line's own LF, so
 * the cost is the size of the first reply, never that of the whole buffer.
 * A reply that can no longer become valid is SMTP_REPLY_BAD as soon as the
 * bytes that prove it are present, complete or not: a bad code digit, a bad
 * separator, a code that differs from the first line's, a partial line that
 * has reached SMTP_REPLY_LINE_MAX bytes without its LF, or a continuation
 * mark on line SMTP_REPLY_LINES_MAX. So a hostile server can make the
 * client hold at most LINES_MAX * LINE_MAX bytes for one reply, and the
 * result is split-invariant: a prefix of an input gives NEED_MORE or the
 * same result as the whole input.
 *
 *   smtp_reply_parse, per line:
 *     partial line (no LF yet) --line_prefix_ok--> NEED_MORE | BAD
 *     complete line --line_check--> BAD | continuation | last line
 *       first line: enh_scan (RFC 3463 code) --> r->enh
 *       every line: text_line --> r->text
 *     last line --> OK, *consumed = through its LF
 *
 * The flattened text, for logs and bounces, is built thus: the code, then
 * SP and the first line's text when it has any; then, for each later line
 * whose text is not empty, " / " and that text. A later line that starts
 * with the same enhanced code as the first line (followed by SP or the end
 * of the line) loses that repeated code. Every byte below 0x20, 0x7f and
 * every byte >= 0x80 becomes '?'; the text stops at
 * SMTP_REPLY_TEXT_MAX - 1 bytes. So "250-a\r\n250-\r\n250 b\r\n" gives
 * "250 a / b" and "550-5.1.1 No\r\n550 5.1.1 such user\r\n" gives
 * "550 5.1.1 No / such user".
 */
#include "smtp_reply.h"

#include <assert.h>
#include <limits.h>
#include <string.h>

/* ---- ASCII helpers ------------------------------------------------------ */

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char
to_upper(unsigned char c)
{
	return (c >= 'a' && c <= 'z') ? (unsigned char)(c - ('a' - 'A')) : c;
}

/* 1 if [s, s + len) is exactly the ASCII word w (upper case), any case. */
static int
word_eq(const char *s, size_t len, const char *w)
{
	size_t i;

	if (len != strlen(w))
		return 0;
	for (i = 0; i < len; i++)
		if (to_upper((unsigned char)s[i]) != (unsigned char)w[i])
			return 0;
	return 1;
}

/* Decimal digits only, no sign, value <= max; -1 otherwise. */
static int
parse_dec(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned d;

		if (!is_digit((unsigned char)s[i]))
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* ---- replies ------------------------------------------------------------ */

/*
 * The flattened text being built in r->text: len bytes so far, always
 * below SMTP_REPLY_TEXT_MAX; bytes beyond the room are dropped.
 */
struct text {
	char *buf;
	size_t len;
};

static void
text_put(struct text *t, const char *s, size_t n)
{
	size_t room = SMTP_REPLY_TEXT_MAX - 1 - t->len, i;

	if (n > room)
		n = room;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		t->buf[t->len++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
	}
	t->buf[t->len] = '\0';
}

/*
 * Length of an RFC 3463 status code of class cls at the start of
 * [s, s + n), followed by SP or by the end of the range; 0 if there is
 * none. status-code = class "." 1*3digit "." 1*3digit, class 2, 4 or 5.
 */
static size_t
enh_scan(const char *s, size_t n, char cls)
{
	size_t i = 0, part, k;

	if (cls != '2' && cls != '4' && cls != '5')
		return 0;
	if (n < 5 || s[0] != cls || s[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (k = 0; k < 3 && i < n && is_digit((unsigned char)s[i]);
		    k++)
			i++;
		if (k == 0)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && s[i] != ' ')
		return 0;
	return i;
}

/*
 * A partial line [p, p + have) holds no LF yet. 1 if it may still become
 * a valid line number idx (0-based) of a reply whose first line starts at
 * code0 (NULL for the first line itself), 0 if it never can.
 */
static int
line_prefix_ok(const char *p, size_t have, const char *code0, unsigned idx)
{
	size_t i;

	for (i = 0; i < have && i < 3; i++) {
		if (!is_digit((unsigned char)p[i]))
			return 0;
		if (i == 0 && (p[0] < '2' || p[0] > '5'))
			return 0;
		if (code0 != NULL && p[i] != code0[i])
			return 0;
	}
	if (have < 4)
		return 1;
	switch (p[3]) {
	case ' ':
		return 1;
	case '-':
		return idx + 1 < SMTP_REPLY_LINES_MAX;
	case '\r':
		return have == 4;  /* "DDD\r" may still end "DDD\r\n" */
	default:
		return 0;
	}
}

/*
 * A complete line [p, p + n), CR LF or LF removed, of a reply whose first
 * line starts at code0 (NULL for the first line itself). Returns -1 if it
 * is malformed, 1 if it is a last line, 0 if a continuation line.
 */
static int
line_check(const char *p, size_t n, const char *code0)
{
	if (n < 3)
		return -1;
	if (!line_prefix_ok(p, 3, code0, 0))
		return -1;
	if (n == 3 || p[3] == ' ')
		return 1;
	if (p[3] == '-')
		return 0;
	return -1;
}

/* Append line idx's text [s, s + n) (after "DDD" and its separator). */
static void
text_line(struct text *t, const struct smtp_reply *r, unsigned idx,
    const char *s, size_t n)
{
	size_t elen = strlen(r->enh);

	if (idx == 0) {
		if (n > 0) {
			text_put(t, " ", 1);
			text_put(t, s, n);
		}
		return;
	}
	/* Drop an enhanced code that only repeats the first line's. */
	if (elen > 0 && n >= elen && memcmp(s, r->enh, elen) == 0 &&
	    (n == elen || s[elen] == ' ')) {
		s += elen;
		n -= elen;
		if (n > 0) {
			s++;
			n--;
		}
	}
	if (n > 0) {
		text_put(t, " / ", 3);
		text_put(t, s, n);
	}
}

/*
 * On NEED_MORE and BAD, *r is all zeros (code 0, empty strings) and
 * *consumed is 0; see smtp_reply.h for the rest.
 */
enum smtp_reply_status
smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r,
    size_t *consumed)
{
	enum smtp_reply_status st;
	struct text t;
	size_t off = 0;
	unsigned idx;

	assert(r != NULL && consumed != NULL);
	memset(r, 0, sizeof(*r));
	*consumed = 0;
	t.buf = r->text;
	t.len = 0;

	for (idx = 0;; idx++) {
		const char *p, *lf, *code0 = idx ? buf : NULL;
		size_t avail = len - off, scan, n, linelen;
		int last;

		/* Invariant: lines 0..idx-1 were continuation lines. */
		assert(idx < SMTP_REPLY_LINES_MAX && off <= len);
		if (avail == 0) {
			st = SMTP_REPLY_NEED_MORE;
			goto fail;
		}
		p = buf + off;
		scan = avail < SMTP_REPLY_LINE_MAX ? avail :
		    SMTP_REPLY_LINE_MAX;
		lf = memchr(p, '\n', scan);
		if (lf == NULL) {
			if (avail >= SMTP_REPLY_LINE_MAX ||
			    !line_prefix_ok(p, scan, code0, idx))
				st = SMTP_REPLY_BAD;
			else
				st = SMTP_REPLY_NEED_MORE;
			goto fail;
		}
		linelen = (size_t)(lf - p) + 1;
		n = linelen - 1;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		last = line_check(p, n, code0);
		if (last < 0) {
			st = SMTP_REPLY_BAD;
			goto fail;
		}

		if (idx == 0) {
			size_t e = n > 4 ? enh_scan(p + 4, n - 4, p[0]) : 0;

			assert(e < sizeof(r->enh));
			if (e > 0)
				memcpy(r->enh, p + 4, e);
			r->code = (p[0] - '0') * 100 + (p[1] - '0') * 10 +
			    (p[2] - '0');
			text_put(&t, p, 3);
		}
		text_line(&t, r, idx, p + (n > 3 ? 4 : 3), n > 3 ? n - 4 : 0);
		off += linelen;

		if (last) {
			r->nlines = idx + 1;
			*consumed = off;
			return SMTP_REPLY_OK;
		}
		if (idx + 1 == SMTP_REPLY_LINES_MAX) {
			/* A continuation mark on the last line allowed: the
			 * reply would need one line more. (line_prefix_ok()
			 * catches the same mark while the line is partial.) */
			st = SMTP_REPLY_BAD;
			goto fail;
		}
	}

fail:
	memset(r, 0, sizeof(*r));
	*consumed = 0;
	return st;
}

/* ---- EHLO keywords ------------------------------------------------------ */

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The next blank-separated token of [*s, end): *tok and *toklen, 0 if none. */
static int
next_token(const char **s, const char *end, const char **tok, size_t *toklen)
{
	const char *p = *s;

	while (p < end && is_blank(*p))
		p++;
	if (p == end) {
		*s = p;
		return 0;
	}
	*tok = p;
	while (p < end && !is_blank(*p))
		p++;
	*toklen = (size_t)(p - *tok);
	*s = p;
	return 1;
}

/* LIMITS arguments (RFC 9422 3): NAME=VALUE pairs; bad ones ignored. */
static void
ehlo_limits(const char *s, const char *end, struct smtp_ehlo *e)
{
	const char *tok, *eq;
	size_t toklen, nlen;
	uint64_t v;

	while (next_token(&s, end, &tok, &toklen)) {
		eq = memchr(tok, '=', toklen);
		if (eq == NULL)
			continue;
		nlen = (size_t)(eq - tok);
		if (parse_dec(eq + 1, toklen - nlen - 1, UINT_MAX, &v) < 0 ||
		    v == 0)
			continue;
		if (word_eq(tok, nlen, "RCPTMAX"))
			e->rcptmax = (unsigned)v;
		else if (word_eq(tok, nlen, "MAILMAX"))
			e->mailmax = (unsigned)v;
		else if (word_eq(tok, nlen, "RCPTDOMAINMAX"))
			e->rcptdomainmax = (unsigned)v;
	}
}

static const struct {
	const char *name;
	unsigned flag;
} ehlo_table[] = {
	{ "PIPELINING", EHLO_PIPELINING },
	{ "SIZE", EHLO_SIZE },
	{ "8BITMIME", EHLO_8BITMIME },
	{ "ENHANCEDSTATUSCODES", EHLO_ENHANCED },
	{ "STARTTLS", EHLO_STARTTLS },
	{ "CHUNKING", EHLO_CHUNKING },
	{ "SMTPUTF8", EHLO_SMTPUTF8 },
	{ "DSN", EHLO_DSN },
	{ "LIMITS", EHLO_LIMITS },
	{ "BINARYMIME", EHLO_BINARYMIME },
	{ "AUTH", EHLO_AUTH },
};

/* One keyword line's text [s, end), after "250-" or "250 ". */
static void
ehlo_line(const char *s, const char *end, struct smtp_ehlo *e)
{
	const char *kw, *arg;
	size_t kwlen, arglen, i;
	uint64_t v;

	if (!next_token(&s, end, &kw, &kwlen))
		return;
	/* "AUTH=LOGIN PLAIN": the pre-RFC 4954 form some servers still send. */
	if (kwlen > 5 && word_eq(kw, 5, "AUTH=")) {
		e->exts |= EHLO_AUTH;
		return;
	}
	for (i = 0; i < sizeof(ehlo_table) / sizeof(ehlo_table[0]); i++)
		if (word_eq(kw, kwlen, ehlo_table[i].name))
			break;
	if (i == sizeof(ehlo_table) / sizeof(ehlo_table[0]))
		return;
	e->exts |= ehlo_table[i].flag;
	switch (ehlo_table[i].flag) {
	case EHLO_SIZE:
		/* A good value replaces an earlier one; a bad one does not. */
		if (next_token(&s, end, &arg, &arglen) &&
		    parse_dec(arg, arglen, UINT64_MAX, &v) == 0)
			e->size = v;
		break;
	case EHLO_LIMITS:
		ehlo_limits(s, end, e);
		break;
	default:
		break;
	}
}

void
smtp_ehlo_parse(const char *buf, size_t len, struct smtp_ehlo *e)
{
	size_t off = 0;
	int first = 1;

	assert(e != NULL);
	memset(e, 0, sizeof(*e));
	while (off < len) {
		const char *p = buf + off;
		const char *lf = memchr(p, '\n', len - off);
		size_t n = lf != NULL ? (size_t)(lf - p) : len - off;

		off += lf != NULL ? n + 1 : n;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (first) {
			first = 0;  /* the greeting: "250-host.example ..." */
			continue;
		}
		if (n < 4 || !is_digit((unsigned char)p[0]) ||
		    !is_digit((unsigned char)p[1]) ||
		    !is_digit((unsigned char)p[2]) ||
		    (p[3] != ' ' && p[3] != '-'))
			continue;
		ehlo_line(p + 4, p + n, e);
	}
}

int
smtp_reply_class(int code)
{
	if (code < 200 || code > 599)
		return 0;
	return code / 100;
}
