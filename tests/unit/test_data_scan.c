/*
 * test_data_scan.c - unit tests for the DATA/BDAT content scanner.
 *
 * The cases are data: each row gives the exact input bytes, the mode, and
 * the exact output, consumed count, end state and flags expected. Every row
 * is also fed in every split (each single cut point, every pair of cut
 * points for short inputs, byte by byte, seeded random chunks), and each
 * split must give the same result as one call: the scanner's answer must
 * never depend on how TCP cut the stream. Random inputs are compared with
 * a byte-at-a-time reference model written straight from data_scan.h.
 *
 * Every data_scan() call gets an output buffer of its own, malloc'ed to the
 * exact bound, so valgrind or ASan catch a write past it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data_scan.h"

/*
 * One call may write the octets it held from the previous call on top of
 * 2 * inlen: at most 2 more (". CR" then "x" -> ". CR LF x" when
 * normalizing). See DATA_SCAN_HELD_MAX in data_scan.c.
 */
#define HELD_MAX 2

struct ds_case {
	const char *name;
	const char *in;
	size_t inlen;
	int bdat;
	int normalize;
	unsigned max_line;
	const char *out;
	size_t outlen;
	size_t consumed;
	enum data_scan_state state; /* after data_scan_finish() in BDAT */
	unsigned flags;
};

#define B(s) (s), (sizeof(s) - 1)
#define ALL SIZE_MAX /* consumed: the whole input */

#define LF DATA_SCAN_BARE_LF
#define CR DATA_SCAN_BARE_CR
#define NUL DATA_SCAN_NUL
#define LONG DATA_SCAN_LONG_LINE
#define BIT8 DATA_SCAN_8BIT

/* clang-format off */
static const struct ds_case cases[] = {
	/* --- end of data -------------------------------------------- */
	{ "empty message", B(".\r\n"), 0, 0, 0, B(""), 3, DS_DONE, 0 },
	{ "empty message, pipelined command after",
	    B(".\r\nMAIL FROM:<a@b>\r\n"), 0, 0, 0, B(""), 3, DS_DONE, 0 },
	{ "normal message", B("Subject: hi\r\n\r\nbody\r\n.\r\n"), 0, 0, 0,
	    B("Subject: hi\r\n\r\nbody\r\n"), ALL, DS_DONE, 0 },
	{ "stops right after the terminator",
	    B("a\r\n.\r\nQUIT\r\n"), 0, 0, 0, B("a\r\n"), 6, DS_DONE, 0 },
	{ "no terminator yet", B("abc\r\n"), 0, 0, 0, B("abc\r\n"), ALL,
	    DS_LINESTART, 0 },
	{ "dot held at end", B("abc\r\n."), 0, 0, 0, B("abc\r\n"), ALL,
	    DS_DOT, 0 },
	{ "dot CR held at end", B("abc\r\n.\r"), 0, 0, 0, B("abc\r\n"), ALL,
	    DS_DOT_CR, 0 },
	{ "CR held at end", B("abc\r"), 0, 0, 0, B("abc"), ALL, DS_CR, 0 },
	{ "empty input", B(""), 0, 0, 0, B(""), 0, DS_LINESTART, 0 },

	/* --- dot-stuffing (RFC 5321 4.5.2) --------------------------- */
	{ "stuffed dots", B("..x\r\n.y\r\n..\r\n...\r\n.\r\n"), 0, 0, 0,
	    B(".x\r\ny\r\n.\r\n..\r\n"), ALL, DS_DONE, 0 },
	{ "dots not at line start", B("a.b\r\na..\r\n.\r\n"), 0, 0, 0,
	    B("a.b\r\na..\r\n"), ALL, DS_DONE, 0 },
	{ "stuffed dot line then end", B("..\r\n.\r\n"), 0, 0, 0,
	    B(".\r\n"), ALL, DS_DONE, 0 },

	/* --- smuggling: none of these ends the data ------------------- */
	{ "LF . LF", B("a\n.\nb\r\n.\r\n"), 0, 0, 0,
	    B("a\n.\nb\r\n"), ALL, DS_DONE, LF },
	{ "LF . LF alone", B("a\n.\n"), 0, 0, 0, B("a\n.\n"), ALL, DS_TEXT,
	    LF },
	{ "CR . CR", B("a\r.\rb\r\n.\r\n"), 0, 0, 0,
	    B("a\r.\rb\r\n"), ALL, DS_DONE, CR },
	{ "CR . CR alone", B("a\r.\r"), 0, 0, 0, B("a\r."), ALL, DS_CR, CR },
	{ "CRLF . LF", B("a\r\n.\nb\r\n.\r\n"), 0, 0, 0,
	    B("a\r\n.\nb\r\n"), ALL, DS_DONE, LF },
	{ "CRLF . LF alone", B("a\r\n.\n"), 0, 0, 0, B("a\r\n.\n"), ALL,
	    DS_TEXT, LF },
	{ "LF . CRLF", B("a\n.\r\nb\r\n.\r\n"), 0, 0, 0,
	    B("a\n.\r\nb\r\n"), ALL, DS_DONE, LF },
	{ "LF . CRLF alone", B("a\n.\r\n"), 0, 0, 0, B("a\n.\r\n"), ALL,
	    DS_LINESTART, LF },
	{ "CR . CRLF", B("a\r.\r\nb\r\n.\r\n"), 0, 0, 0,
	    B("a\r.\r\nb\r\n"), ALL, DS_DONE, CR },
	{ "CR . CRLF alone", B("a\r.\r\n"), 0, 0, 0, B("a\r.\r\n"), ALL,
	    DS_LINESTART, CR },
	{ "CRLF . CR", B("a\r\n.\rb\r\n.\r\n"), 0, 0, 0,
	    B("a\r\n.\rb\r\n"), ALL, DS_DONE, CR },
	{ "CRLF . CR CR LF", B("a\r\n.\r\r\n.\r\n"), 0, 0, 0,
	    B("a\r\n.\r\r\n"), ALL, DS_DONE, CR },
	{ "dot LF at start", B(".\nb\r\n.\r\n"), 0, 0, 0, B(".\nb\r\n"), ALL,
	    DS_DONE, LF },
	{ "dot CR at start", B(".\rb\r\n.\r\n"), 0, 0, 0, B(".\rb\r\n"), ALL,
	    DS_DONE, CR },
	{ "CRLF NUL . CRLF", B("a\r\n\0.\r\n.\r\n"), 0, 0, 0,
	    B("a\r\n\0.\r\n"), ALL, DS_DONE, NUL },
	{ "LF . CRLF at start", B("\n.\r\n"), 0, 0, 0, B("\n.\r\n"), ALL,
	    DS_LINESTART, LF },
	{ "CR . CRLF at start", B("\r.\r\n"), 0, 0, 0, B("\r.\r\n"), ALL,
	    DS_LINESTART, CR },
	{ "space . CRLF", B("a\r\n .\r\n.\r\n"), 0, 0, 0,
	    B("a\r\n .\r\n"), ALL, DS_DONE, 0 },
	{ "dot dot CRLF is a stuffed dot", B("a\r\n..\r\nb\r\n.\r\n"), 0, 0, 0,
	    B("a\r\n.\r\nb\r\n"), ALL, DS_DONE, 0 },
	/* A bare CR before a real CR LF: the real CR LF does start a line. */
	{ "CR CR LF . CR LF", B("a\r\r\n.\r\n"), 0, 0, 0, B("a\r\r\n"), ALL,
	    DS_DONE, CR },
	{ "LF CR LF . CR LF", B("a\n\r\n.\r\n"), 0, 0, 0, B("a\n\r\n"), ALL,
	    DS_DONE, LF },

	/* --- smuggling, normalizing: the output has CRLF, still no end */
	{ "norm LF . LF", B("a\n.\nb\r\n.\r\n"), 0, 1, 0,
	    B("a\r\n.\r\nb\r\n"), ALL, DS_DONE, LF },
	{ "norm LF . CRLF alone", B("a\n.\r\n"), 0, 1, 0, B("a\r\n.\r\n"),
	    ALL, DS_LINESTART, LF },
	{ "norm CR . CR", B("a\r.\rb\r\n.\r\n"), 0, 1, 0,
	    B("a\r\n.\r\nb\r\n"), ALL, DS_DONE, CR },
	{ "norm CRLF . LF", B("a\r\n.\nb\r\n.\r\n"), 0, 1, 0,
	    B("a\r\n.\r\nb\r\n"), ALL, DS_DONE, LF },
	{ "norm CRLF . CR x", B("a\r\n.\rb\r\n.\r\n"), 0, 1, 0,
	    B("a\r\n.\r\nb\r\n"), ALL, DS_DONE, CR },
	{ "norm CRLF . CR LF... bare LF", B("a\r\n.\r\n"), 0, 1, 0,
	    B("a\r\n"), ALL, DS_DONE, 0 },
	{ "norm dot CR then bare LF", B(".\r\r\n\n.\r\n"), 0, 1, 0,
	    B(".\r\n\r\n\r\n.\r\n"), ALL, DS_LINESTART, CR | LF },
	{ "norm mixed", B("a\nb\rc\r\n.\r\n"), 0, 1, 0,
	    B("a\r\nb\r\nc\r\n"), ALL, DS_DONE, CR | LF },
	{ "norm CR CR LF", B("a\r\r\nb\r\n.\r\n"), 0, 1, 0,
	    B("a\r\n\r\nb\r\n"), ALL, DS_DONE, CR },
	{ "norm only bare LFs", B("\n\n\n"), 0, 1, 0,
	    B("\r\n\r\n\r\n"), ALL, DS_TEXT, LF },
	{ "norm only bare CRs", B("\r\r\r"), 0, 1, 0,
	    B("\r\n\r\n"), ALL, DS_CR, CR },

	/* --- NUL and 8-bit ------------------------------------------- */
	{ "NUL", B("a\0b\r\n.\r\n"), 0, 0, 0, B("a\0b\r\n"), ALL, DS_DONE,
	    NUL },
	{ "NUL at line start", B("\0\r\n.\r\n"), 0, 0, 0, B("\0\r\n"), ALL,
	    DS_DONE, NUL },
	{ "8bit", B("caf\xc3\xa9\r\n.\r\n"), 0, 0, 0, B("caf\xc3\xa9\r\n"),
	    ALL, DS_DONE, BIT8 },
	{ "0x7f is 7bit", B("\x7f\r\n.\r\n"), 0, 0, 0, B("\x7f\r\n"), ALL,
	    DS_DONE, 0 },
	{ "0x80 0xff", B("\x80x\xff\r\n.\r\n"), 0, 0, 0, B("\x80x\xff\r\n"),
	    ALL, DS_DONE, BIT8 },
	{ "NUL and 8bit", B("\xff\0\xff\0\r\n"), 0, 0, 0, B("\xff\0\xff\0\r\n"),
	    ALL, DS_LINESTART, NUL | BIT8 },
	{ "stuffed dot then 8bit", B(".\xe9\r\n.\r\n"), 0, 0, 0, B("\xe9\r\n"),
	    ALL, DS_DONE, BIT8 },

	/* --- line length (raw octets, CRLF and stuffing dot included) - */
	{ "line at limit", B("12345678\r\n.\r\n"), 0, 0, 10,
	    B("12345678\r\n"), ALL, DS_DONE, 0 },
	{ "line over limit", B("123456789\r\n.\r\n"), 0, 0, 10,
	    B("123456789\r\n"), ALL, DS_DONE, LONG },
	{ "stuffed line at limit", B("..234567\r\n.\r\n"), 0, 0, 10,
	    B(".234567\r\n"), ALL, DS_DONE, 0 },
	{ "stuffed line over limit", B("..2345678\r\n.\r\n"), 0, 0, 10,
	    B(".2345678\r\n"), ALL, DS_DONE, LONG },
	{ "bare LF does not end a line", B("1234\n5678\r\n.\r\n"), 0, 0, 10,
	    B("1234\n5678\r\n"), ALL, DS_DONE, LF | LONG },
	{ "bare LF normalized still one line", B("1234\n5678\r\n.\r\n"), 0, 1,
	    10, B("1234\r\n5678\r\n"), ALL, DS_DONE, LF | LONG },
	{ "many lines at limit", B("12345678\r\nabcdefgh\r\n\r\n.\r\n"), 0, 0,
	    10, B("12345678\r\nabcdefgh\r\n\r\n"), ALL, DS_DONE, 0 },
	{ "unterminated long line", B("123456789AB"), 0, 0, 10,
	    B("123456789AB"), ALL, DS_TEXT, LONG },
	{ "no limit", B("123456789012345678901234567890\r\n.\r\n"), 0, 0, 0,
	    B("123456789012345678901234567890\r\n"), ALL, DS_DONE, 0 },

	/* --- BDAT: no terminator, no dots ----------------------------- */
	{ "bdat CRLF.CRLF inside", B("a\r\n.\r\nb\r\n"), 1, 0, 0,
	    B("a\r\n.\r\nb\r\n"), ALL, DS_LINESTART, 0 },
	{ "bdat starts with .CRLF", B(".\r\n"), 1, 0, 0, B(".\r\n"), ALL,
	    DS_LINESTART, 0 },
	{ "bdat no unstuffing", B("..x\r\n"), 1, 0, 0, B("..x\r\n"), ALL,
	    DS_LINESTART, 0 },
	{ "bdat bare LF", B("a\nb"), 1, 0, 0, B("a\nb"), ALL, DS_TEXT, LF },
	{ "bdat bare LF normalized", B("a\nb\r\n"), 1, 1, 0, B("a\r\nb\r\n"),
	    ALL, DS_LINESTART, LF },
	{ "bdat trailing CR finished", B("abc\r"), 1, 0, 0, B("abc\r"), ALL,
	    DS_TEXT, CR },
	{ "bdat trailing CR finished, normalized", B("abc\r"), 1, 1, 0,
	    B("abc\r\n"), ALL, DS_TEXT, CR },
	{ "bdat NUL 8bit", B("\0\x80\r\n"), 1, 0, 0, B("\0\x80\r\n"), ALL,
	    DS_LINESTART, NUL | BIT8 },
	{ "bdat long line", B("123456789\r\nab\r\n"), 1, 0, 10,
	    B("123456789\r\nab\r\n"), ALL, DS_LINESTART, LONG },
	{ "bdat line at limit", B("12345678\r\n"), 1, 0, 10,
	    B("12345678\r\n"), ALL, DS_LINESTART, 0 },
};
/* clang-format on */

struct ds_result {
	char *out;
	size_t outlen;
	size_t consumed;
	enum data_scan_state state;
	unsigned flags;
	uint64_t line_len;
	uint64_t out_total;
};

static void
result_free(struct ds_result *r)
{
	free(r->out);
	memset(r, 0, sizeof(*r));
}

/*
 * Feed in[0..len) cut at cuts[0..ncuts) (ascending), each call with its
 * own exactly-sized output buffer; in BDAT mode end with data_scan_finish.
 */
static void
feed(const struct ds_case *c, const char *in, size_t len, const size_t *cuts,
    size_t ncuts, struct ds_result *r)
{
	struct data_scan s;
	size_t start = 0, k, off = 0;

	memset(r, 0, sizeof(*r));
	r->out = malloc(2 * len + HELD_MAX + 2);
	assert_non_null(r->out);
	data_scan_init(&s, c->bdat, c->normalize, c->max_line);
	for (k = 0; k <= ncuts; k++) {
		size_t stop = k < ncuts ? cuts[k] : len;
		size_t n = stop - start, got, olen = 0;
		size_t cap = 2 * n + HELD_MAX;
		char *o = malloc(cap);

		assert_non_null(o);
		assert_true(stop >= start);
		got = data_scan(&s, in + start, n, o, &olen);
		assert_true(got <= n);
		assert_true(olen <= cap);
		memcpy(r->out + off, o, olen);
		off += olen;
		free(o);
		r->consumed += got;
		if (got < n) {
			assert_true(data_scan_done(&s));
			break;
		}
		start = stop;
	}
	if (c->bdat) {
		char fin[2];
		size_t n = data_scan_finish(&s, fin);

		assert_true(n <= 2);
		memcpy(r->out + off, fin, n);
		off += n;
	}
	assert_int_equal(off, s.out_total);
	r->outlen = off;
	r->state = s.state;
	r->flags = s.flags;
	r->line_len = s.line_len;
	r->out_total = s.out_total;
	assert_true(r->outlen <= 2 * r->consumed);
}

static void
hexdump(const char *label, const char *p, size_t n)
{
	size_t i;

	fprintf(stderr, "%s (%zu): ", label, n);
	for (i = 0; i < n; i++)
		fprintf(stderr, "%02x", (unsigned char)p[i]);
	fprintf(stderr, "\n");
}

static void
expect_same(const char *name, const char *how, const struct ds_result *a,
    const struct ds_result *b)
{
	if (a->outlen == b->outlen && memcmp(a->out, b->out, a->outlen) == 0 &&
	    a->consumed == b->consumed && a->state == b->state &&
	    a->flags == b->flags && a->line_len == b->line_len &&
	    a->out_total == b->out_total)
		return;
	fprintf(stderr, "case \"%s\": %s differs from one call\n", name, how);
	hexdump("one call", a->out, a->outlen);
	hexdump("split", b->out, b->outlen);
	fprintf(stderr, "consumed %zu/%zu state %d/%d flags %#x/%#x\n",
	    a->consumed, b->consumed, a->state, b->state, a->flags, b->flags);
	fail();
}

static void
check_case(const struct ds_case *c)
{
	struct ds_result r;
	size_t consumed = c->consumed == ALL ? c->inlen : c->consumed;

	feed(c, c->in, c->inlen, NULL, 0, &r);
	if (r.outlen != c->outlen || memcmp(r.out, c->out, c->outlen) != 0 ||
	    r.consumed != consumed || r.state != c->state ||
	    r.flags != c->flags) {
		fprintf(stderr, "case \"%s\" failed\n", c->name);
		hexdump("expected", c->out, c->outlen);
		hexdump("got     ", r.out, r.outlen);
		fprintf(stderr,
		    "consumed %zu (want %zu) state %d (want %d) "
		    "flags %#x (want %#x)\n",
		    r.consumed, consumed, r.state, c->state, r.flags, c->flags);
		result_free(&r);
		fail();
	}
	result_free(&r);
}

static void
test_table(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i]);
}

/* Every split of every table input gives the one-call result. */
static void
test_split_invariance(void **state)
{
	size_t i, a, b, k;
	size_t cuts[4096];

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct ds_case *c = &cases[i];
		struct ds_result one, r;

		feed(c, c->in, c->inlen, NULL, 0, &one);

		/* Byte by byte. */
		assert_true(c->inlen <= 4096);
		for (k = 0; k < c->inlen; k++)
			cuts[k] = k;
		feed(c, c->in, c->inlen, cuts, c->inlen, &r);
		expect_same(c->name, "byte by byte", &one, &r);
		result_free(&r);

		/* Every single cut point, every pair of cut points. */
		for (a = 0; a <= c->inlen; a++) {
			cuts[0] = a;
			feed(c, c->in, c->inlen, cuts, 1, &r);
			expect_same(c->name, "one cut", &one, &r);
			result_free(&r);
			for (b = a; b <= c->inlen; b++) {
				cuts[1] = b;
				feed(c, c->in, c->inlen, cuts, 2, &r);
				expect_same(c->name, "two cuts", &one, &r);
				result_free(&r);
			}
		}
		result_free(&one);
	}
}

/* ------------------------------------------------------------------ */
/* Reference model: one byte at a time, straight from data_scan.h.     */
/* ------------------------------------------------------------------ */

struct ref {
	enum data_scan_state st;
	unsigned flags;
	uint64_t len;
};

static void
ref_len(struct ref *m, unsigned max_line)
{
	m->len++;
	if (max_line && m->len > max_line)
		m->flags |= DATA_SCAN_LONG_LINE;
}

static void
ref_bare(struct ref *m, int normalize, char c, char *out, size_t *o)
{
	m->flags |= c == '\r' ? DATA_SCAN_BARE_CR : DATA_SCAN_BARE_LF;
	if (normalize) {
		out[(*o)++] = '\r';
		out[(*o)++] = '\n';
	} else
		out[(*o)++] = c;
	m->st = DS_TEXT;
}

/* Returns the consumed count; out gets the content (plus BDAT finish). */
static size_t
ref_scan(const unsigned char *in, size_t n, int bdat, int normalize,
    unsigned max_line, char *out, size_t *outlen, struct ref *m)
{
	size_t i, o = 0;

	memset(m, 0, sizeof(*m));
	m->st = DS_LINESTART;
	for (i = 0; i < n && m->st != DS_DONE; i++) {
		unsigned char c = in[i];
	again:
		switch (m->st) {
		case DS_LINESTART:
			if (c == '.' && !bdat) {
				ref_len(m, max_line);
				m->st = DS_DOT;
				break;
			}
			m->st = DS_TEXT;
			goto again;
		case DS_TEXT:
			ref_len(m, max_line);
			if (c == '\r')
				m->st = DS_CR;
			else if (c == '\n')
				ref_bare(m, normalize, '\n', out, &o);
			else {
				if (c == 0)
					m->flags |= DATA_SCAN_NUL;
				if (c >= 0x80)
					m->flags |= DATA_SCAN_8BIT;
				out[o++] = (char)c;
			}
			break;
		case DS_CR:
			if (c == '\n') {
				ref_len(m, max_line);
				out[o++] = '\r';
				out[o++] = '\n';
				m->len = 0;
				m->st = DS_LINESTART;
				break;
			}
			ref_bare(m, normalize, '\r', out, &o);
			goto again;
		case DS_DOT:
			if (c == '\r') {
				ref_len(m, max_line);
				m->st = DS_DOT_CR;
				break;
			}
			if (c == '\n')
				out[o++] = '.';
			m->st = DS_TEXT;
			goto again;
		case DS_DOT_CR:
			if (c == '\n') {
				ref_len(m, max_line);
				m->st = DS_DONE;
				break;
			}
			out[o++] = '.';
			ref_bare(m, normalize, '\r', out, &o);
			goto again;
		case DS_DONE:
			break;
		}
	}
	if (bdat && m->st == DS_CR)
		ref_bare(m, normalize, '\r', out, &o);
	*outlen = o;
	return i;
}

static uint32_t rng_state = 12345;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* Random inputs over an alphabet rich in CR, LF and dots. */
static void
test_random_vs_reference(void **state)
{
	static const char alpha[] = "\r\n.\r\n.ab\0\xe9 ";
	unsigned char in[300];
	char refout[2 * sizeof(in) + 4];
	size_t cuts[sizeof(in)];
	int iter;

	for (iter = 0; iter < 20000; iter++) {
		struct ds_case c;
		struct ds_result one, r;
		struct ref m;
		size_t n = rng() % sizeof(in), i, ncuts = 0, reflen, refcons;

		for (i = 0; i < n; i++)
			in[i] =
			    (unsigned char)alpha[rng() % (sizeof(alpha) - 1)];
		memset(&c, 0, sizeof(c));
		c.name = "random";
		c.bdat = rng() % 4 == 0;
		c.normalize = rng() % 2;
		c.max_line = rng() % 3 ? 0 : rng() % 20;

		refcons = ref_scan(in, n, c.bdat, c.normalize, c.max_line,
		    refout, &reflen, &m);
		feed(&c, (const char *)in, n, NULL, 0, &one);
		if (one.consumed != refcons || one.outlen != reflen ||
		    memcmp(one.out, refout, reflen) != 0 || one.state != m.st ||
		    one.flags != m.flags || one.line_len != m.len) {
			hexdump("input", (const char *)in, n);
			hexdump("reference", refout, reflen);
			hexdump("scanner", one.out, one.outlen);
			fprintf(stderr, "bdat %d normalize %d max_line %u\n",
			    c.bdat, c.normalize, c.max_line);
			fail();
		}
		for (i = 1; i < n; i++)
			if (rng() % 4 == 0)
				cuts[ncuts++] = i;
		feed(&c, (const char *)in, n, cuts, ncuts, &r);
		expect_same("random", "random chunks", &one, &r);
		result_free(&r);
		result_free(&one);
	}
}

/* Every octet value in the middle of a line and at line start. */
static void
test_every_octet(void **state)
{
	int b;

	for (b = 0; b < 256; b++) {
		char in[8] = {'x', (char)b, 'y', '\r', '\n', '.', '\r', '\n'};
		char ls[6] = {(char)b, 'y', '\r', '\n', '.', '\r'};
		char refout[32];
		struct ds_case c;
		struct ds_result r;
		struct ref m;
		size_t reflen, refcons;

		memset(&c, 0, sizeof(c));
		c.name = "octet";
		refcons = ref_scan((unsigned char *)in, sizeof(in), 0, 0, 0,
		    refout, &reflen, &m);
		feed(&c, in, sizeof(in), NULL, 0, &r);
		assert_int_equal(r.consumed, refcons);
		assert_int_equal(r.outlen, reflen);
		assert_memory_equal(r.out, refout, reflen);
		assert_int_equal(r.flags, m.flags);
		if (b >= 0x80)
			assert_true(r.flags & DATA_SCAN_8BIT);
		else
			assert_false(r.flags & DATA_SCAN_8BIT);
		result_free(&r);

		refcons = ref_scan((unsigned char *)ls, sizeof(ls), 0, 1, 0,
		    refout, &reflen, &m);
		c.normalize = 1;
		feed(&c, ls, sizeof(ls), NULL, 0, &r);
		assert_int_equal(r.consumed, refcons);
		assert_int_equal(r.outlen, reflen);
		assert_memory_equal(r.out, refout, reflen);
		assert_int_equal(r.flags, m.flags);
		assert_int_equal(r.state, m.st);
		result_free(&r);
	}
}

/* RFC 5321 4.5.3.1.6: 1000 octets including CRLF. */
static void
test_long_line_boundary(void **state)
{
	static char in[1100], out[2300];
	struct data_scan s;
	size_t outlen;

	memset(in, 'a', sizeof(in));
	memcpy(in + 998, "\r\n", 2);
	data_scan_init(&s, 0, 0, 1000);
	assert_int_equal(data_scan(&s, in, 1000, out, &outlen), 1000);
	assert_int_equal(s.flags, 0);
	assert_int_equal(s.line_len, 0);
	assert_int_equal(s.state, DS_LINESTART);

	memcpy(in + 998, "a\r\n", 3);
	data_scan_init(&s, 0, 0, 1000);
	assert_int_equal(data_scan(&s, in, 1001, out, &outlen), 1001);
	assert_int_equal(s.flags, DATA_SCAN_LONG_LINE);

	/* The 1001st octet flags the line before it ends. */
	data_scan_init(&s, 0, 0, 1000);
	data_scan(&s, in, 1000, out, &outlen);
	assert_int_equal(s.flags, 0);
	assert_int_equal(s.line_len, 1000);
	data_scan(&s, in + 1000, 1, out, &outlen);
	assert_int_equal(s.flags, DATA_SCAN_LONG_LINE);

	/* A long first line in a 1 MB message with no limit: no flag. */
	{
		size_t big = 1 << 20;
		char *bin = malloc(big), *bout = malloc(2 * big);

		assert_non_null(bin);
		assert_non_null(bout);
		memset(bin, 'z', big);
		data_scan_init(&s, 0, 0, 0);
		assert_int_equal(data_scan(&s, bin, big, bout, &outlen), big);
		assert_int_equal(outlen, big);
		assert_int_equal(s.flags, 0);
		assert_int_equal(s.line_len, big);
		assert_int_equal(s.out_total, big);
		free(bin);
		free(bout);
	}
}

/* After the terminator nothing more is consumed or written. */
static void
test_done_consumes_nothing(void **state)
{
	struct data_scan s;
	char out[64];
	size_t outlen = 99;

	data_scan_init(&s, 0, 0, 0);
	assert_int_equal(
	    data_scan(&s, "x\r\n.\r\nRSET\r\n", 12, out, &outlen), 6);
	assert_int_equal(outlen, 3);
	assert_true(data_scan_done(&s));
	assert_int_equal(s.out_total, 3);
	assert_int_equal(data_scan(&s, "RSET\r\n", 6, out, &outlen), 0);
	assert_int_equal(outlen, 0);
	assert_int_equal(s.out_total, 3);
	assert_int_equal(data_scan_finish(&s, out), 0);
	assert_true(data_scan_done(&s));
}

/* BDAT: a CR at a chunk end waits for the next chunk or for LAST. */
static void
test_bdat_cr_split(void **state)
{
	struct data_scan s;
	char out[64];
	size_t outlen;

	data_scan_init(&s, 1, 0, 0);
	assert_int_equal(data_scan(&s, "abc\r", 4, out, &outlen), 4);
	assert_int_equal(outlen, 3);
	assert_memory_equal(out, "abc", 3);
	assert_int_equal(s.state, DS_CR);
	assert_int_equal(data_scan(&s, "\ndef", 4, out, &outlen), 4);
	assert_int_equal(outlen, 5);
	assert_memory_equal(out, "\r\ndef", 5);
	assert_int_equal(s.flags, 0);
	assert_int_equal(data_scan_finish(&s, out), 0);
	assert_int_equal(s.out_total, 8);

	/* CR then a non-LF chunk: bare CR. */
	data_scan_init(&s, 1, 1, 0);
	data_scan(&s, "abc\r", 4, out, &outlen);
	assert_int_equal(data_scan(&s, "x", 1, out, &outlen), 1);
	assert_int_equal(outlen, 3);
	assert_memory_equal(out, "\r\nx", 3);
	assert_int_equal(s.flags, DATA_SCAN_BARE_CR);

	/* CR at the end of BDAT LAST, raw and normalized. */
	data_scan_init(&s, 1, 0, 0);
	data_scan(&s, "abc\r", 4, out, &outlen);
	assert_int_equal(data_scan_finish(&s, out), 1);
	assert_memory_equal(out, "\r", 1);
	assert_int_equal(s.flags, DATA_SCAN_BARE_CR);
	assert_int_equal(s.out_total, 4);

	data_scan_init(&s, 1, 1, 0);
	data_scan(&s, "abc\r", 4, out, &outlen);
	assert_int_equal(data_scan_finish(&s, out), 2);
	assert_memory_equal(out, "\r\n", 2);
	assert_int_equal(s.flags, DATA_SCAN_BARE_CR);
	assert_int_equal(s.out_total, 5);

	/* Several chunks, state carried: CRLF.CRLF never ends BDAT. */
	data_scan_init(&s, 1, 0, 0);
	assert_int_equal(data_scan(&s, "a\r", 2, out, &outlen), 2);
	assert_int_equal(data_scan(&s, "\n.", 2, out, &outlen), 2);
	assert_int_equal(data_scan(&s, "\r", 1, out, &outlen), 1);
	assert_int_equal(data_scan(&s, "\n", 1, out, &outlen), 1);
	assert_false(data_scan_done(&s));
	assert_int_equal(s.state, DS_LINESTART);
	assert_int_equal(s.out_total, 6);
	assert_int_equal(s.flags, 0);
}

/* DATA mode: finish is for BDAT only and writes nothing. */
static void
test_finish_data_mode(void **state)
{
	struct data_scan s;
	char out[4];
	size_t outlen;

	data_scan_init(&s, 0, 0, 0);
	data_scan(&s, "abc\r", 4, out, &outlen);
	assert_int_equal(data_scan_finish(&s, out), 0);
	assert_int_equal(s.state, DS_CR);
	assert_int_equal(s.flags, 0);
}

/*
 * The held octets: the worst one-octet call, after a held ". CR", writes
 * ". CR LF x" (4 octets, 2 * inlen + 2) when normalizing.
 */
static void
test_held_octets(void **state)
{
	struct data_scan s;
	char out[8];
	size_t outlen;

	data_scan_init(&s, 0, 1, 0);
	assert_int_equal(data_scan(&s, ".", 1, out, &outlen), 1);
	assert_int_equal(outlen, 0);
	assert_int_equal(data_scan(&s, "\r", 1, out, &outlen), 1);
	assert_int_equal(outlen, 0);
	assert_int_equal(s.state, DS_DOT_CR);
	assert_int_equal(data_scan(&s, "\n", 1, out, &outlen), 1);
	assert_true(data_scan_done(&s));
	assert_int_equal(outlen, 0);

	data_scan_init(&s, 0, 1, 0);
	data_scan(&s, ".\r", 2, out, &outlen);
	assert_int_equal(data_scan(&s, "\r", 1, out, &outlen), 1);
	assert_int_equal(outlen, 3);
	assert_memory_equal(out, ".\r\n", 3);
	assert_int_equal(s.state, DS_CR);

	data_scan_init(&s, 0, 1, 0);
	data_scan(&s, "a\n.\r\n.\r", 7, out, &outlen);
	assert_false(data_scan_done(&s));
	assert_int_equal(data_scan(&s, "x", 1, out, &outlen), 1);
	assert_int_equal(outlen, 4);
	assert_memory_equal(out, ".\r\nx", 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_split_invariance),
	    cmocka_unit_test(test_random_vs_reference),
	    cmocka_unit_test(test_every_octet),
	    cmocka_unit_test(test_long_line_boundary),
	    cmocka_unit_test(test_done_consumes_nothing),
	    cmocka_unit_test(test_bdat_cr_split),
	    cmocka_unit_test(test_finish_data_mode),
	    cmocka_unit_test(test_held_octets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
