/*
 * fuzz_smtp_reply.c - libFuzzer target for src/smtp_reply.c.
 *
 * The input is what a server might send: it is copied into a heap buffer of
 * exactly its size, so ASan reports any read past the end (the parsers
 * must never rely on a NUL), and replies are parsed one after another over
 * the whole of it, as a client reading pipelined replies does. Every result
 * is checked with abort() against what smtp_reply.h promises:
 *  - OK: the reply ends with an LF inside the input, code 200..599, 1 to
 *    SMTP_REPLY_LINES_MAX lines of at most SMTP_REPLY_LINE_MAX bytes, text
 *    terminated, printable ASCII and starting with the code, enh empty or
 *    an RFC 3463 code of the reply's class that the text carries;
 *  - NEED_MORE and BAD: nothing consumed, *r cleared; NEED_MORE never on
 *    more bytes than a valid reply may hold;
 *  - split invariance: the same input cut at a point chosen from the input
 *    (copied again into an exact buffer) gives NEED_MORE or the same
 *    result; cut just before the end of an OK reply, NEED_MORE; and a
 *    NEED_MORE on the whole never becomes BAD or OK on a part.
 * smtp_ehlo_parse runs on the whole input and on every reply found, and
 * its result must be consistent (only known flags, values only with their
 * keyword).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       src/smtp_reply.c tests/fuzz/fuzz_smtp_reply.c -o fuzz_smtp_reply
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_reply.h"

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "invariant failed: %s (line %d)\n", \
			    #cond, __LINE__);                               \
			abort();                                            \
		}                                                           \
	} while (0)

#define EHLO_ALL (EHLO_PIPELINING | EHLO_SIZE | EHLO_8BITMIME |             \
    EHLO_ENHANCED | EHLO_STARTTLS | EHLO_CHUNKING | EHLO_SMTPUTF8 |         \
    EHLO_DSN | EHLO_LIMITS | EHLO_BINARYMIME | EHLO_AUTH)

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* [s, s + n) is an RFC 3463 code: class "." 1*3digit "." 1*3digit. */
static int
enh_valid(const char *s, size_t n, int cls)
{
	size_t i = 2, part, k;

	if (n < 5 || s[0] != '0' + cls || s[1] != '.')
		return 0;
	for (part = 0; part < 2; part++) {
		for (k = 0; i < n && is_digit(s[i]); k++, i++)
			;
		if (k < 1 || k > 3)
			return 0;
		if (part == 0 && (i >= n || s[i++] != '.'))
			return 0;
	}
	return i == n;
}

static void
check_cleared(const struct smtp_reply *r, size_t consumed)
{
	CHECK(consumed == 0);
	CHECK(r->code == 0 && r->nlines == 0);
	CHECK(r->enh[0] == '\0' && r->text[0] == '\0');
}

static void
check_ehlo(const char *s, size_t len)
{
	struct smtp_ehlo e, again;

	smtp_ehlo_parse(s, len, &e);
	CHECK((e.exts & ~(unsigned)EHLO_ALL) == 0);
	CHECK(e.size == 0 || (e.exts & EHLO_SIZE));
	CHECK((e.rcptmax == 0 && e.mailmax == 0 && e.rcptdomainmax == 0) ||
	    (e.exts & EHLO_LIMITS));
	/* A bare greeting line holds no keyword. */
	if (memchr(s, '\n', len) == NULL)
		CHECK(e.exts == 0);
	smtp_ehlo_parse(s, len, &again);
	CHECK(memcmp(&e, &again, sizeof(e)) == 0);
}

/* The promises of an OK reply [s, s + consumed) out of len bytes. */
static void
check_ok(const char *s, size_t len, const struct smtp_reply *r,
    size_t consumed)
{
	size_t tlen, elen, i, lines = 0, linestart = 0;

	CHECK(consumed > 0 && consumed <= len);
	CHECK(s[consumed - 1] == '\n');
	CHECK(r->code >= 200 && r->code <= 599);
	CHECK(smtp_reply_class(r->code) == r->code / 100);
	CHECK(r->nlines >= 1 && r->nlines <= SMTP_REPLY_LINES_MAX);
	for (i = 0; i < consumed; i++) {
		if (s[i] != '\n')
			continue;
		CHECK(i + 1 - linestart <= SMTP_REPLY_LINE_MAX);
		CHECK(i - linestart >= 3);
		CHECK(memcmp(s + linestart, s, 3) == 0);
		linestart = i + 1;
		lines++;
	}
	CHECK(lines == r->nlines);
	CHECK((s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0') == r->code);

	tlen = strnlen(r->text, sizeof(r->text));
	CHECK(tlen < sizeof(r->text) && tlen >= 3);
	CHECK(memcmp(r->text, s, 3) == 0);
	for (i = 0; i < tlen; i++)
		CHECK(r->text[i] >= 0x20 && r->text[i] < 0x7f);

	elen = strnlen(r->enh, sizeof(r->enh));
	CHECK(elen < sizeof(r->enh));
	if (elen > 0) {
		CHECK(enh_valid(r->enh, elen, r->code / 100));
		CHECK(memcmp(s + 4, r->enh, elen) == 0);
		CHECK(tlen >= 4 + elen && r->text[3] == ' ' &&
		    memcmp(r->text + 4, r->enh, elen) == 0);
	}
}

/* Parse a copy of [s, s + k) in an exact buffer. */
static enum smtp_reply_status
parse_cut(const char *s, size_t k, struct smtp_reply *r, size_t *consumed)
{
	char *c = malloc(k ? k : 1);
	enum smtp_reply_status st;

	CHECK(c != NULL);
	if (k > 0)
		memcpy(c, s, k);
	st = smtp_reply_parse(c, k, r, consumed);
	free(c);
	return st;
}

/* The input cut at k gives NEED_MORE or what the whole gave. */
static void
check_cut(const char *s, size_t len, size_t k, enum smtp_reply_status st,
    const struct smtp_reply *r, size_t consumed)
{
	struct smtp_reply rc;
	size_t cc = 99;
	enum smtp_reply_status sc;

	if (k > len)
		return;
	sc = parse_cut(s, k, &rc, &cc);
	if (sc != SMTP_REPLY_OK)
		check_cleared(&rc, cc);
	switch (st) {
	case SMTP_REPLY_OK:
		if (k < consumed) {
			CHECK(sc == SMTP_REPLY_NEED_MORE);
		} else {
			CHECK(sc == SMTP_REPLY_OK && cc == consumed);
			CHECK(memcmp(&rc, r, sizeof(rc)) == 0);
		}
		break;
	case SMTP_REPLY_NEED_MORE:
		CHECK(sc == SMTP_REPLY_NEED_MORE);
		break;
	case SMTP_REPLY_BAD:
		CHECK(sc == SMTP_REPLY_NEED_MORE || sc == SMTP_REPLY_BAD);
		break;
	default:
		CHECK(!"unknown status");
	}
}

static uint64_t
fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);
	uint64_t h = fnv1a(data, size);
	size_t off = 0;

	if (s == NULL)
		return 0;
	if (size > 0)
		memcpy(s, data, size);

	for (;;) {
		const char *p = s + off;
		size_t rem = size - off, consumed = 99;
		struct smtp_reply r;
		enum smtp_reply_status st;

		memset(&r, 0x5a, sizeof(r));
		st = smtp_reply_parse(p, rem, &r, &consumed);
		CHECK(st == SMTP_REPLY_OK || st == SMTP_REPLY_NEED_MORE ||
		    st == SMTP_REPLY_BAD);
		if (st == SMTP_REPLY_OK) {
			check_ok(p, rem, &r, consumed);
			check_ehlo(p, consumed);
		} else {
			check_cleared(&r, consumed);
		}
		if (st == SMTP_REPLY_NEED_MORE)
			CHECK(rem < (size_t)SMTP_REPLY_LINES_MAX *
			    SMTP_REPLY_LINE_MAX);

		/* Split invariance at a point picked from the input, at the
		 * edges of the reply, and on the part of rem it needed. */
		if (rem > 0)
			check_cut(p, rem, (size_t)(h % (rem + 1)), st, &r,
			    consumed);
		h = h * 0x9e3779b97f4a7c15ULL + 1;
		if (st == SMTP_REPLY_OK) {
			check_cut(p, rem, consumed - 1, st, &r, consumed);
			check_cut(p, rem, consumed, st, &r, consumed);
		} else if (rem > 0) {
			check_cut(p, rem, rem - 1, st, &r, consumed);
		}

		if (st != SMTP_REPLY_OK)
			break;
		off += consumed;
	}

	check_ehlo(s, size);
	free(s);
	return 0;
}
