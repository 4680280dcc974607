/*
 * test_smtp_reply.c - unit tests for src/smtp_reply.c.
 *
 * Most tests are tables of exact input bytes and exact expected results.
 * Every input is first copied into a heap buffer of exactly its length
 * (dup_exact), so that any read past the end shows up under valgrind or
 * ASan; the parsers may not rely on a terminating NUL. Every valid reply
 * in the tables is also parsed cut at each split point, which must give
 * NEED_MORE (or BAD for a reply already proven malformed) and never a
 * different result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "smtp_reply.h"

/* A string literal and its length, embedded NULs included. */
#define S(x) x, (sizeof(x) - 1)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define OK SMTP_REPLY_OK
#define MORE SMTP_REPLY_NEED_MORE
#define BAD SMTP_REPLY_BAD

#define CHECK_INT(row, got, want)                                           \
	do {                                                                \
		long long g_ = (long long)(got), w_ = (long long)(want);    \
		if (g_ != w_)                                               \
			fail_msg("%s row %zu: %s = %lld, want %lld",        \
			    __func__, (size_t)(row), #got, g_, w_);         \
	} while (0)

#define CHECK_STR(row, got, want)                                           \
	do {                                                                \
		if (strcmp((got), (want)) != 0)                             \
			fail_msg("%s row %zu: %s = \"%s\", want \"%s\"",    \
			    __func__, (size_t)(row), #got, (got), (want));  \
	} while (0)

/* A heap copy of exactly len bytes (not NUL-terminated). */
static char *
dup_exact(const char *s, size_t len)
{
	char *d = malloc(len ? len : 1);

	assert_non_null(d);
	if (len > 0)
		memcpy(d, s, len);
	return d;
}

/* Parse [s, s + len) from an exact heap copy. */
static enum smtp_reply_status
parse_exact(const char *s, size_t len, struct smtp_reply *r, size_t *consumed)
{
	char *in = dup_exact(s, len);
	enum smtp_reply_status st = smtp_reply_parse(in, len, r, consumed);

	free(in);
	return st;
}

/* *r and consumed as promised for NEED_MORE and BAD: all zero. */
static void
check_cleared(size_t row, const struct smtp_reply *r, size_t consumed)
{
	CHECK_INT(row, consumed, 0);
	CHECK_INT(row, r->code, 0);
	CHECK_INT(row, r->nlines, 0);
	CHECK_STR(row, r->enh, "");
	CHECK_STR(row, r->text, "");
}

/*
 * Every proper prefix of [s, s + len) gives NEED_MORE, or BAD when final
 * is BAD (the bytes may already prove it), and never anything else.
 */
static void
check_prefixes(size_t row, const char *s, size_t len,
    enum smtp_reply_status final)
{
	struct smtp_reply r;
	size_t k, consumed;

	for (k = 0; k < len; k++) {
		enum smtp_reply_status st = parse_exact(s, k, &r, &consumed);

		if (st != MORE && !(final == BAD && st == BAD))
			fail_msg("%s row %zu: prefix %zu -> %d (final %d)",
			    __func__, row, k, st, final);
		check_cleared(row, &r, consumed);
	}
}

/* ---- replies: tables ---------------------------------------------------- */

static const struct reply_case {
	const char *in;
	size_t len;
	enum smtp_reply_status st;
	size_t consumed;
	int code;
	unsigned nlines;
	const char *enh;
	const char *text;
} good[] = {
	/* Single-line replies. */
	{ S("250 2.0.0 Ok: queued as X\r\n"), OK, 27, 250, 1, "2.0.0",
	  "250 2.0.0 Ok: queued as X" },
	{ S("220 mx.example.org ESMTP Postfix\r\n"), OK, 34, 220, 1, "",
	  "220 mx.example.org ESMTP Postfix" },
	{ S("354 End data with <CR><LF>.<CR><LF>\r\n"), OK, 37, 354, 1, "",
	  "354 End data with <CR><LF>.<CR><LF>" },
	{ S("421 4.3.2 Service shutting down\r\n"), OK, 33, 421, 1, "4.3.2",
	  "421 4.3.2 Service shutting down" },
	{ S("550 5.1.1 <bob@example.org>: Recipient address rejected\r\n"), OK,
	  57, 550, 1, "5.1.1",
	  "550 5.1.1 <bob@example.org>: Recipient address rejected" },
	{ S("599 x\r\n"), OK, 7, 599, 1, "", "599 x" },
	{ S("200 x\r\n"), OK, 7, 200, 1, "", "200 x" },
	/* "DDD" alone, and "DDD " with empty text, are last lines. */
	{ S("250\r\n"), OK, 5, 250, 1, "", "250" },
	{ S("250 \r\n"), OK, 6, 250, 1, "", "250" },
	{ S("250\n"), OK, 4, 250, 1, "", "250" },
	/* Bare LF as a line end. */
	{ S("250 ok\n"), OK, 7, 250, 1, "", "250 ok" },
	{ S("250-a\n250 b\n"), OK, 12, 250, 2, "", "250 a / b" },
	{ S("250-a\r\n250 b\n"), OK, 13, 250, 2, "", "250 a / b" },
	/* Multi-line replies. */
	{ S("250-a\r\n250 b\r\n"), OK, 14, 250, 2, "", "250 a / b" },
	{ S("250-a\r\n250-b\r\n250 c\r\n"), OK, 21, 250, 3, "",
	  "250 a / b / c" },
	{ S("250-a\r\n250\r\n"), OK, 12, 250, 2, "", "250 a" },
	{ S("250-\r\n250 b\r\n"), OK, 13, 250, 2, "", "250 / b" },
	{ S("250-a\r\n250-\r\n250 b\r\n"), OK, 20, 250, 3, "", "250 a / b" },
	{ S("550-5.1.1 No\r\n550 5.1.1 such user\r\n"), OK, 35, 550, 2,
	  "5.1.1", "550 5.1.1 No / such user" },
	{ S("550-5.7.1 a\r\n550-5.7.1\r\n550 5.7.1 b\r\n"), OK, 37, 550, 3,
	  "5.7.1", "550 5.7.1 a / b" },
	/* Only an identical enhanced code is dropped from later lines. */
	{ S("550-5.7.1 a\r\n550 5.7.10 b\r\n"), OK, 27, 550, 2, "5.7.1",
	  "550 5.7.1 a / 5.7.10 b" },
	{ S("550-5.7.1 a\r\n550 5.7.1b\r\n"), OK, 25, 550, 2, "5.7.1",
	  "550 5.7.1 a / 5.7.1b" },
	{ S("550-a\r\n550 5.7.1 b\r\n"), OK, 20, 550, 2, "",
	  "550 a / 5.7.1 b" },
	/* Real multi-line EHLO replies. */
	{ S("250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	    "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
	    "250-SMTPUTF8\r\n250 CHUNKING\r\n"), OK, 167, 250, 11, "",
	  "250 mail.example.org / PIPELINING / SIZE 10240000 / VRFY / ETRN / "
	  "STARTTLS / ENHANCEDSTATUSCODES / 8BITMIME / DSN / SMTPUTF8 / "
	  "CHUNKING" },
	/* Text is sanitised: controls, DEL and non-ASCII become '?'. */
	{ S("250 a\tb\x7f" "c\x01\r\n"), OK, 12, 250, 1, "", "250 a?b?c?" },
	{ S("250 caf\xc3\xa9\r\n"), OK, 11, 250, 1, "", "250 caf??" },
	{ S("250 a\0b\r\n"), OK, 9, 250, 1, "", "250 a?b" },
	{ S("250 a\rb\r\n"), OK, 9, 250, 1, "", "250 a?b" },
	{ S("250 a\r\r\n"), OK, 8, 250, 1, "", "250 a?" },
	{ S("250-\x80\r\n250 \xff\r\n"), OK, 14, 250, 2, "", "250 ? / ?" },
	/* Enhanced status codes (first line only, class = first digit). */
	{ S("250 2.1.5\r\n"), OK, 11, 250, 1, "2.1.5", "250 2.1.5" },
	{ S("250 2.123.456 x\r\n"), OK, 17, 250, 1, "2.123.456",
	  "250 2.123.456 x" },
	{ S("250 2.0.0  x\r\n"), OK, 14, 250, 1, "2.0.0", "250 2.0.0  x" },
	{ S("451 4.7.1 Try later\r\n"), OK, 21, 451, 1, "4.7.1",
	  "451 4.7.1 Try later" },
	{ S("250 5.0.0 x\r\n"), OK, 13, 250, 1, "", "250 5.0.0 x" },
	{ S("550 2.0.0 x\r\n"), OK, 13, 550, 1, "", "550 2.0.0 x" },
	{ S("354 3.0.0 x\r\n"), OK, 13, 354, 1, "", "354 3.0.0 x" },
	{ S("250 2.0 x\r\n"), OK, 11, 250, 1, "", "250 2.0 x" },
	{ S("250 2..0 x\r\n"), OK, 12, 250, 1, "", "250 2..0 x" },
	{ S("250 2.0.\r\n"), OK, 10, 250, 1, "", "250 2.0." },
	{ S("250 2.0.0x\r\n"), OK, 12, 250, 1, "", "250 2.0.0x" },
	{ S("250 2.0.0.0 x\r\n"), OK, 15, 250, 1, "", "250 2.0.0.0 x" },
	{ S("250 2.1234.0 x\r\n"), OK, 16, 250, 1, "", "250 2.1234.0 x" },
	{ S("250 2.0.1234 x\r\n"), OK, 16, 250, 1, "", "250 2.0.1234 x" },
	{ S("250 2.a.0 x\r\n"), OK, 13, 250, 1, "", "250 2.a.0 x" },
	{ S("250 2.0.0\tx\r\n"), OK, 13, 250, 1, "", "250 2.0.0?x" },
	{ S("250  2.0.0 x\r\n"), OK, 14, 250, 1, "", "250  2.0.0 x" },
	{ S("250 x2.0.0 x\r\n"), OK, 14, 250, 1, "", "250 x2.0.0 x" },
	{ S("250-a\r\n250 2.0.0 b\r\n"), OK, 20, 250, 2, "",
	  "250 a / 2.0.0 b" },
	{ S("250-2.0.0\r\n250 b\r\n"), OK, 18, 250, 2, "2.0.0",
	  "250 2.0.0 / b" },
};

/* Malformed replies: each with how many bytes the prefix must have before
 * BAD may be reported (earlier prefixes must be NEED_MORE). */
static const struct {
	const char *in;
	size_t len;
	size_t bad_from;   /* shortest prefix that is already BAD */
} bad[] = {
	{ S("600 x\r\n"), 1 },
	{ S("199 x\r\n"), 1 },
	{ S("099 x\r\n"), 1 },
	{ S("650 x\r\n"), 1 },
	{ S("X50 x\r\n"), 1 },
	{ S("2X0 x\r\n"), 2 },
	{ S("25X x\r\n"), 3 },
	{ S(" 250 x\r\n"), 1 },
	{ S("\r\n"), 1 },
	{ S("\n"), 1 },
	{ S("25\r\n"), 3 },
	{ S("25\n"), 3 },
	{ S("250x\r\n"), 4 },
	{ S("250\tx\r\n"), 4 },
	{ S("250=x\r\n"), 4 },
	{ S("250\r\r\n"), 5 },
	{ S("250\rx\r\n"), 5 },
	{ S("2500 x\r\n"), 4 },
	{ S("250-a\r\n251 b\r\n"), 10 },
	{ S("250-a\r\n350 b\r\n"), 8 },
	{ S("250-a\r\n550 b\r\n"), 8 },
	{ S("250-a\r\n250-b\r\n520 c\r\n"), 15 },
	{ S("550-5.1.1 a\r\n551 5.1.1 b\r\n"), 16 },
	{ S("250-a\r\n25\r\n"), 10 },
	{ S("250-a\r\n\r\n"), 8 },
	{ S("250-a\r\n250x\r\n"), 11 },
	{ S("250-a\r\nhello\r\n"), 8 },
};

static void
test_reply_good(void **state)
{
	size_t i;

	for (i = 0; i < NELEM(good); i++) {
		const struct reply_case *c = &good[i];
		struct smtp_reply r;
		size_t consumed = 12345;
		enum smtp_reply_status st;

		st = parse_exact(c->in, c->len, &r, &consumed);
		CHECK_INT(i, st, c->st);
		CHECK_INT(i, consumed, c->consumed);
		CHECK_INT(i, r.code, c->code);
		CHECK_INT(i, r.nlines, c->nlines);
		CHECK_STR(i, r.enh, c->enh);
		CHECK_STR(i, r.text, c->text);
		/* Each case is exactly one reply. */
		CHECK_INT(i, consumed, c->len);
	}
}

/* Every prefix of a good reply is NEED_MORE; the whole gives the same. */
static void
test_reply_good_split(void **state)
{
	size_t i;

	for (i = 0; i < NELEM(good); i++)
		check_prefixes(i, good[i].in, good[i].len, OK);
}

static void
test_reply_bad(void **state)
{
	size_t i, k;

	for (i = 0; i < NELEM(bad); i++) {
		struct smtp_reply r;
		size_t consumed = 12345;
		enum smtp_reply_status st;

		st = parse_exact(bad[i].in, bad[i].len, &r, &consumed);
		CHECK_INT(i, st, BAD);
		check_cleared(i, &r, consumed);
		/* Early detection: BAD from the proving byte on, never
		 * before, and never anything but NEED_MORE before. */
		for (k = 0; k < bad[i].len; k++) {
			st = parse_exact(bad[i].in, k, &r, &consumed);
			if (st != (k < bad[i].bad_from ? MORE : BAD))
				fail_msg("bad row %zu: prefix %zu -> %d", i, k,
				    st);
			check_cleared(i, &r, consumed);
		}
		/* Bytes after a malformed reply change nothing. */
		{
			char buf[256];

			assert_true(bad[i].len + 9 <= sizeof(buf));
			memcpy(buf, bad[i].in, bad[i].len);
			memcpy(buf + bad[i].len, "250 ok\r\n", 8);
			st = parse_exact(buf, bad[i].len + 8, &r, &consumed);
			CHECK_INT(i, st, BAD);
		}
	}
}

static void
test_reply_empty(void **state)
{
	struct smtp_reply r;
	size_t consumed = 7;

	assert_int_equal(smtp_reply_parse(NULL, 0, &r, &consumed), MORE);
	check_cleared(0, &r, consumed);
	assert_int_equal(smtp_reply_parse("250 ok\r\n", 0, &r, &consumed),
	    MORE);
	check_cleared(0, &r, consumed);
}

/* The reply ends at len, not at a NUL or at the end of the string. */
static void
test_reply_respects_len(void **state)
{
	const char *s = "250-a\r\n250 b\r\n";
	struct smtp_reply r;
	size_t consumed;

	assert_int_equal(smtp_reply_parse(s, 7, &r, &consumed), MORE);
	assert_int_equal(smtp_reply_parse(s, 13, &r, &consumed), MORE);
	assert_int_equal(smtp_reply_parse(s, 14, &r, &consumed), OK);
	assert_int_equal(consumed, 14);
	/* A stale r from an earlier OK is cleared by NEED_MORE. */
	assert_int_equal(smtp_reply_parse(s, 3, &r, &consumed), MORE);
	check_cleared(0, &r, consumed);
}

/* ---- replies: pipelined ------------------------------------------------- */

static void
test_reply_pipelined(void **state)
{
	/* What a server sends back for EHLO, then MAIL, RCPT x2 and DATA
	 * pipelined, then the end of data and QUIT. */
	static const char stream[] =
	    "250-mx.example.org\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
	    "250 2.1.0 Ok\r\n"
	    "250 2.1.5 Ok\r\n"
	    "550 5.1.1 <x@example.org>: Recipient address rejected\r\n"
	    "354 End data with <CR><LF>.<CR><LF>\n"
	    "250-2.0.0 Ok: queued as 4Xy\r\n250 2.0.0 see you\r\n"
	    "221 2.0.0 Bye\r\n";
	static const struct {
		int code;
		unsigned nlines;
		const char *enh, *text;
	} want[] = {
		{ 250, 3, "", "250 mx.example.org / PIPELINING / CHUNKING" },
		{ 250, 1, "2.1.0", "250 2.1.0 Ok" },
		{ 250, 1, "2.1.5", "250 2.1.5 Ok" },
		{ 550, 1, "5.1.1",
		  "550 5.1.1 <x@example.org>: Recipient address rejected" },
		{ 354, 1, "", "354 End data with <CR><LF>.<CR><LF>" },
		{ 250, 2, "2.0.0", "250 2.0.0 Ok: queued as 4Xy / see you" },
		{ 221, 1, "2.0.0", "221 2.0.0 Bye" },
	};
	size_t len = sizeof(stream) - 1, off = 0, i, consumed;
	char *in = dup_exact(stream, len);
	struct smtp_reply r;

	for (i = 0; i < NELEM(want); i++) {
		assert_int_equal(smtp_reply_parse(in + off, len - off, &r,
		    &consumed), OK);
		CHECK_INT(i, r.code, want[i].code);
		CHECK_INT(i, r.nlines, want[i].nlines);
		CHECK_STR(i, r.enh, want[i].enh);
		CHECK_STR(i, r.text, want[i].text);
		assert_true(consumed > 0 && consumed <= len - off);
		/* Every prefix of what is left, cut inside this reply,
		 * is NEED_MORE; cut after it, the same reply again. */
		check_prefixes(i, in + off, consumed, OK);
		off += consumed;
	}
	assert_int_equal(off, len);
	assert_int_equal(smtp_reply_parse(in + off, 0, &r, &consumed), MORE);
	free(in);
}

/*
 * The parser reads only the first reply of a buffer: with the reply's last
 * LF as the last byte of a readable page and an inaccessible page after
 * it, a buffer that claims to go on past the page parses without a fault.
 * (It also must not depend on anything after the first reply.)
 */
static void
test_reply_reads_only_first(void **state)
{
	static const char reply[] = "250-a\r\n250 2.0.0 b\r\n";
	size_t rlen = sizeof(reply) - 1, consumed;
	long pg = sysconf(_SC_PAGESIZE);
	struct smtp_reply r;
	char *map, *start;

	assert_true(pg > 0);
	map = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
	start = map + pg - rlen;
	memcpy(start, reply, rlen);
	assert_int_equal(smtp_reply_parse(start, rlen + (size_t)pg, &r,
	    &consumed), OK);
	assert_int_equal(consumed, rlen);
	assert_string_equal(r.text, "250 a / 2.0.0 b");
	munmap(map, 2 * (size_t)pg);
}

/* ---- replies: limits ---------------------------------------------------- */

/* "250" + sep + filler to make a line of total bytes (LF included) that
 * ends with CR LF (crlf) or a bare LF; returns the length. */
static size_t
make_line(char *buf, size_t total, char sep, int crlf)
{
	size_t eol = crlf ? 2 : 1;

	assert_true(total >= 4 + eol);
	memcpy(buf, "250", 3);
	buf[3] = sep;
	memset(buf + 4, 'x', total - 4 - eol);
	if (crlf)
		buf[total - 2] = '\r';
	buf[total - 1] = '\n';
	return total;
}

static void
test_reply_line_limit(void **state)
{
	static char buf[3 * SMTP_REPLY_LINE_MAX];
	struct smtp_reply r;
	size_t n, consumed;

	/* Exactly SMTP_REPLY_LINE_MAX bytes with CRLF or with bare LF. */
	n = make_line(buf, SMTP_REPLY_LINE_MAX, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), OK);
	assert_int_equal(consumed, SMTP_REPLY_LINE_MAX);
	assert_int_equal(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
	assert_memory_equal(r.text, "250 xxxx", 8);
	n = make_line(buf, SMTP_REPLY_LINE_MAX, ' ', 0);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), OK);

	/* One byte more is BAD, whether the LF has come or not. */
	n = make_line(buf, SMTP_REPLY_LINE_MAX + 1, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), BAD);
	check_cleared(0, &r, consumed);
	n = make_line(buf, SMTP_REPLY_LINE_MAX + 1, ' ', 0);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), BAD);

	/* A partial line: NEED_MORE while it may still end in time (the
	 * last byte may be the LF), BAD once it has SMTP_REPLY_LINE_MAX
	 * bytes and no LF. */
	memset(buf + 4, 'x', sizeof(buf) - 4);
	assert_int_equal(parse_exact(buf, SMTP_REPLY_LINE_MAX - 1, &r,
	    &consumed), MORE);
	assert_int_equal(parse_exact(buf, SMTP_REPLY_LINE_MAX, &r, &consumed),
	    BAD);
	assert_int_equal(parse_exact(buf, sizeof(buf), &r, &consumed), BAD);
	/* ... also for a CR that might be followed by the LF. */
	buf[SMTP_REPLY_LINE_MAX - 2] = '\r';
	assert_int_equal(parse_exact(buf, SMTP_REPLY_LINE_MAX - 1, &r,
	    &consumed), MORE);
	buf[SMTP_REPLY_LINE_MAX - 1] = '\n';
	assert_int_equal(parse_exact(buf, SMTP_REPLY_LINE_MAX, &r, &consumed),
	    OK);

	/* The same on a later line. */
	n = make_line(buf, 10, '-', 1);
	n += make_line(buf + n, SMTP_REPLY_LINE_MAX, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), OK);
	assert_int_equal(r.nlines, 2);
	assert_int_equal(consumed, n);
	n = make_line(buf, 10, '-', 1);
	n += make_line(buf + n, SMTP_REPLY_LINE_MAX + 1, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), BAD);
	assert_int_equal(parse_exact(buf, 10 + SMTP_REPLY_LINE_MAX - 1, &r,
	    &consumed), MORE);
	assert_int_equal(parse_exact(buf, 10 + SMTP_REPLY_LINE_MAX, &r,
	    &consumed), BAD);
}

static void
test_reply_line_count(void **state)
{
	static char buf[(SMTP_REPLY_LINES_MAX + 2) * 8];
	struct smtp_reply r;
	size_t n = 0, consumed;
	unsigned i;

	/* SMTP_REPLY_LINES_MAX lines: the most a reply may have. */
	for (i = 0; i + 1 < SMTP_REPLY_LINES_MAX; i++)
		n += make_line(buf + n, 7, '-', 1);
	n += make_line(buf + n, 7, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), OK);
	assert_int_equal(r.nlines, SMTP_REPLY_LINES_MAX);
	assert_int_equal(consumed, n);
	/* The text is truncated, never overflowed. */
	assert_int_equal(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
	assert_memory_equal(r.text, "250 x / x / x / x", 17);

	/* 129 lines: BAD, and already BAD once line 128 shows its '-'. */
	n = 0;
	for (i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		n += make_line(buf + n, 7, '-', 1);
	n += make_line(buf + n, 7, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), BAD);
	check_cleared(0, &r, consumed);
	n = 7 * (SMTP_REPLY_LINES_MAX - 1);
	assert_int_equal(parse_exact(buf, n + 3, &r, &consumed), MORE);
	assert_int_equal(parse_exact(buf, n + 4, &r, &consumed), BAD);
	assert_int_equal(parse_exact(buf, n + 7, &r, &consumed), BAD);
	assert_int_equal(parse_exact(buf, n + 8, &r, &consumed), BAD);
}

/* Text over SMTP_REPLY_TEXT_MAX is cut; the reply is still OK. */
static void
test_reply_text_truncated(void **state)
{
	static char buf[4 * 600];
	struct smtp_reply r;
	size_t n = 0, consumed;

	n += make_line(buf + n, 300, '-', 1);
	n += make_line(buf + n, 300, ' ', 1);
	assert_int_equal(parse_exact(buf, n, &r, &consumed), OK);
	assert_int_equal(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
	/* "250 " + 294 x + " / " + the rest of the second line's x. */
	assert_memory_equal(r.text + 298, " / xxx", 6);
	assert_int_equal(r.text[SMTP_REPLY_TEXT_MAX - 2], 'x');
}

/* ---- EHLO --------------------------------------------------------------- */

#define ALL_POSTFIX (EHLO_PIPELINING | EHLO_SIZE | EHLO_STARTTLS |          \
    EHLO_ENHANCED | EHLO_8BITMIME | EHLO_DSN | EHLO_SMTPUTF8 | EHLO_CHUNKING)

static void
test_ehlo_table(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		unsigned exts;
		uint64_t size;
		unsigned rcptmax, mailmax, rcptdomainmax;
	} t[] = {
		/* Postfix 3.7. */
		{ S("250-mail.example.org\r\n250-PIPELINING\r\n"
		    "250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
		    "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
		    "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
		    "250 CHUNKING\r\n"), ALL_POSTFIX, 10240000, 0, 0, 0 },
		/* Exim 4.97, after STARTTLS. */
		{ S("250-mx.example.net Hello client.example [192.0.2.5]\r\n"
		    "250-SIZE 52428800\r\n"
		    "250-LIMITS MAILMAX=1000 RCPTMAX=50000\r\n"
		    "250-8BITMIME\r\n250-PIPELINING\r\n250-PIPECONNECT\r\n"
		    "250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n250-PRDR\r\n"
		    "250 HELP\r\n"),
		  EHLO_SIZE | EHLO_LIMITS | EHLO_8BITMIME | EHLO_PIPELINING |
		  EHLO_AUTH | EHLO_CHUNKING, 52428800, 50000, 1000, 0 },
		/* OpenSMTPD 7: neither PIPELINING nor CHUNKING. */
		{ S("250-mail.example.com Hello client.example [192.0.2.5], "
		    "pleased to meet you\r\n250-8BITMIME\r\n"
		    "250-ENHANCEDSTATUSCODES\r\n250-SIZE 36700160\r\n"
		    "250-DSN\r\n250-STARTTLS\r\n250 HELP\r\n"),
		  EHLO_8BITMIME | EHLO_ENHANCED | EHLO_SIZE | EHLO_DSN |
		  EHLO_STARTTLS, 36700160, 0, 0, 0 },
		/* Microsoft 365. */
		{ S("250-AM0PR01MB1234.eurprd01.prod.outlook.com Hello "
		    "[192.0.2.5]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n"
		    "250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n"
		    "250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n"
		    "250 SMTPUTF8\r\n"),
		  EHLO_SIZE | EHLO_PIPELINING | EHLO_DSN | EHLO_ENHANCED |
		  EHLO_STARTTLS | EHLO_8BITMIME | EHLO_BINARYMIME |
		  EHLO_CHUNKING | EHLO_SMTPUTF8, 157286400, 0, 0, 0 },
		/* LIMITS: every name, any case, any order. */
		{ S("250-h\r\n250 LIMITS RCPTMAX=20 MAILMAX=5 "
		    "RCPTDOMAINMAX=1\r\n"), EHLO_LIMITS, 0, 20, 5, 1 },
		{ S("250-h\r\n250 limits rcptmax=20 MailMax=5\r\n"),
		  EHLO_LIMITS, 0, 20, 5, 0 },
		{ S("250-h\r\n250 LIMITS RCPTMAX=4294967295\r\n"),
		  EHLO_LIMITS, 0, 4294967295u, 0, 0 },
		{ S("250-h\r\n250 LIMITS  RCPTMAX=7   MAILMAX=8  \r\n"),
		  EHLO_LIMITS, 0, 7, 8, 0 },
		/* LIMITS: bad pairs ignored, good ones kept. */
		{ S("250-h\r\n250 LIMITS RCPTMAX=0 MAILMAX=5\r\n"),
		  EHLO_LIMITS, 0, 0, 5, 0 },
		{ S("250-h\r\n250 LIMITS RCPTMAX=4294967296 MAILMAX=x\r\n"),
		  EHLO_LIMITS, 0, 0, 0, 0 },
		{ S("250-h\r\n250 LIMITS RCPTMAX= MAILMAX=-1 "
		    "RCPTDOMAINMAX=+3\r\n"),
		  EHLO_LIMITS, 0, 0, 0, 0 },
		{ S("250-h\r\n250 LIMITS RCPTMAX=99999999999999999999999\r\n"),
		  EHLO_LIMITS, 0, 0, 0, 0 },
		{ S("250-h\r\n250 LIMITS RCPTMAX 10 =10 RCPTMAX==10\r\n"),
		  EHLO_LIMITS, 0, 0, 0, 0 },
		{ S("250-h\r\n250 LIMITS FOO=1 RCPTMAXX=2 RCPTMA=3 "
		    "MAILMAX=4\r\n"),
		  EHLO_LIMITS, 0, 0, 4, 0 },
		{ S("250-h\r\n250 LIMITS RCPTMAX=12x MAILMAX=0x10\r\n"),
		  EHLO_LIMITS, 0, 0, 0, 0 },
		{ S("250-h\r\n250 LIMITS\r\n"), EHLO_LIMITS, 0, 0, 0, 0 },
		/* The arguments of another keyword are not LIMITS. */
		{ S("250-h\r\n250 X-LIMITS RCPTMAX=5\r\n"), 0, 0, 0, 0, 0 },
		{ S("250-h\r\n250 AUTH RCPTMAX=5\r\n"), EHLO_AUTH, 0, 0, 0, 0 },
		/* SIZE: with and without a value; bad values count as 0. */
		{ S("250-h\r\n250 SIZE\r\n"), EHLO_SIZE, 0, 0, 0, 0 },
		{ S("250-h\r\n250 SIZE 0\r\n"), EHLO_SIZE, 0, 0, 0, 0 },
		{ S("250-h\r\n250 size 1000\r\n"), EHLO_SIZE, 1000, 0, 0, 0 },
		{ S("250-h\r\n250 SIZE 18446744073709551615\r\n"), EHLO_SIZE,
		  UINT64_MAX, 0, 0, 0 },
		{ S("250-h\r\n250 SIZE 18446744073709551616\r\n"), EHLO_SIZE,
		  0, 0, 0, 0 },
		{ S("250-h\r\n250 SIZE -1\r\n"), EHLO_SIZE, 0, 0, 0, 0 },
		{ S("250-h\r\n250 SIZE 10M\r\n"), EHLO_SIZE, 0, 0, 0, 0 },
		{ S("250-h\r\n250 SIZE 100 200\r\n"), EHLO_SIZE, 100, 0, 0, 0 },
		{ S("250-h\r\n250-SIZE 100\r\n250 SIZE x\r\n"), EHLO_SIZE, 100,
		  0, 0, 0 },
		{ S("250-h\r\n250 SIZE\t5000\r\n"), EHLO_SIZE, 5000, 0, 0, 0 },
		/* Keywords: case-insensitive, exact, args ignored. */
		{ S("250-h\r\n250-pipelining\r\n250 Chunking\r\n"),
		  EHLO_PIPELINING | EHLO_CHUNKING, 0, 0, 0, 0 },
		{ S("250-h\r\n250-PIPELININGX\r\n250-PIPE\r\n"
		    "250 XCHUNKING\r\n"),
		  0, 0, 0, 0, 0 },
		{ S("250-h\r\n250-8BITMIME foo\r\n250-DSN\r\n250 STARTTLS\r\n"),
		  EHLO_8BITMIME | EHLO_DSN | EHLO_STARTTLS, 0, 0, 0, 0 },
		{ S("250-h\r\n250-AUTH\r\n"), EHLO_AUTH, 0, 0, 0, 0 },
		{ S("250-h\r\n250-AUTH=LOGIN PLAIN\r\n"), EHLO_AUTH, 0, 0, 0,
		  0 },
		{ S("250-h\r\n250-AUTH=\r\n"), 0, 0, 0, 0, 0 },
		{ S("250-h\r\n250-AUTHX\r\n"), 0, 0, 0, 0, 0 },
		{ S("250-h\r\n250-BINARYMIME\r\n250 SMTPUTF8\r\n"),
		  EHLO_BINARYMIME | EHLO_SMTPUTF8, 0, 0, 0, 0 },
		/* The greeting line is skipped, whatever it holds. */
		{ S("250-PIPELINING\r\n250 CHUNKING\r\n"), EHLO_CHUNKING, 0,
		  0, 0, 0 },
		{ S("250 PIPELINING\r\n"), 0, 0, 0, 0, 0 },
		{ S("250 mx.example.org\r\n"), 0, 0, 0, 0, 0 },
		/* Bare LF, no final line end, leading blanks. */
		{ S("250-h\n250-PIPELINING\n250 DSN"),
		  EHLO_PIPELINING | EHLO_DSN, 0, 0, 0, 0 },
		{ S("250-h\r\n250  DSN\r\n"), EHLO_DSN, 0, 0, 0, 0 },
		/* Lines that are not "DDD-" or "DDD " are skipped. */
		{ S("250-h\r\nPIPELINING\r\n250DSN\r\n25 SIZE 1\r\n"
		    "250 CHUNKING"),
		  EHLO_CHUNKING, 0, 0, 0, 0 },
		{ S("250-h\r\n250-\r\n250\r\n250 \r\n"), 0, 0, 0, 0, 0 },
		{ S("250-h\r\n250-PIPE\0LINING\r\n250 DSN\r\n"), EHLO_DSN, 0, 0,
		  0, 0 },
		{ S(""), 0, 0, 0, 0, 0 },
		{ S("\r\n"), 0, 0, 0, 0, 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		struct smtp_ehlo e;

		memset(&e, 0xa5, sizeof(e));
		smtp_ehlo_parse(in, t[i].len, &e);
		CHECK_INT(i, e.exts, t[i].exts);
		CHECK_INT(i, e.size, t[i].size);
		CHECK_INT(i, e.rcptmax, t[i].rcptmax);
		CHECK_INT(i, e.mailmax, t[i].mailmax);
		CHECK_INT(i, e.rcptdomainmax, t[i].rcptdomainmax);
		free(in);
	}
}

/* An EHLO reply goes through smtp_reply_parse first, then its bytes. */
static void
test_ehlo_after_reply(void **state)
{
	static const char in[] =
	    "250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	    "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
	    "250-SMTPUTF8\r\n250 CHUNKING\r\n"
	    "250 2.1.0 Ok\r\n";
	struct smtp_reply r;
	struct smtp_ehlo e;
	size_t consumed;

	assert_int_equal(smtp_reply_parse(in, sizeof(in) - 1, &r, &consumed),
	    OK);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.nlines, 11);
	smtp_ehlo_parse(in, consumed, &e);
	assert_int_equal(e.exts, ALL_POSTFIX);
	assert_int_equal(e.size, 10240000);
}

/* ---- reply classes ------------------------------------------------------ */

static void
test_reply_class(void **state)
{
	static const struct {
		int code, cls;
	} t[] = {
		{ 200, 2 }, { 220, 2 }, { 250, 2 }, { 299, 2 },
		{ 354, 3 }, { 300, 3 }, { 399, 3 },
		{ 421, 4 }, { 450, 4 }, { 499, 4 },
		{ 500, 5 }, { 550, 5 }, { 554, 5 }, { 599, 5 },
		{ 0, 0 }, { -250, 0 }, { 199, 0 }, { 100, 0 }, { 600, 0 },
		{ 999, 0 }, { 25, 0 }, { 2500, 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++)
		CHECK_INT(i, smtp_reply_class(t[i].code), t[i].cls);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_good),
		cmocka_unit_test(test_reply_good_split),
		cmocka_unit_test(test_reply_bad),
		cmocka_unit_test(test_reply_empty),
		cmocka_unit_test(test_reply_respects_len),
		cmocka_unit_test(test_reply_pipelined),
		cmocka_unit_test(test_reply_reads_only_first),
		cmocka_unit_test(test_reply_line_limit),
		cmocka_unit_test(test_reply_line_count),
		cmocka_unit_test(test_reply_text_truncated),
		cmocka_unit_test(test_ehlo_table),
		cmocka_unit_test(test_ehlo_after_reply),
		cmocka_unit_test(test_reply_class),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
