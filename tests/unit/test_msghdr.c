/*
 * test_msghdr.c - unit tests for the header helpers of `petrel sendmail`
 * (src/msghdr.c): walking fields, the end of the header section, unfolding,
 * finding a field, splitting address lists (the -t recipients) and writing
 * display names (the From: header Petrel adds).
 *
 * Address lists are tables: the header value as a person or a mail user
 * agent writes it, and the exact addr-specs expected, in order, with "!"
 * marking an element that must be refused and the text reported for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msghdr.h"

#define B(s) (s), (sizeof(s) - 1)

/* ---- fields -------------------------------------------------------------- */

static void
test_fields_crlf(void **state)
{
	static const char m[] = "From: a@b\r\nSubject: hello\r\n  world\r\n"
	                        "X-Empty:\r\nTo : c@d\r\n\r\nbody\r\n";
	struct msghdr_field f;
	size_t pos = 0, hend, body;
	int blank;

	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_int_equal(f.namelen, 4);
	assert_memory_equal(f.name, "From", 4);
	assert_int_equal(f.valuelen, 4);
	assert_memory_equal(f.value, " a@b", 4);
	assert_int_equal(f.start, 0);
	assert_int_equal(f.end, 11);

	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_true(msghdr_name_is(&f, "subject"));
	assert_int_equal(f.valuelen, strlen(" hello\r\n  world"));
	assert_memory_equal(f.value, " hello\r\n  world", f.valuelen);

	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_true(msghdr_name_is(&f, "X-EMPTY"));
	assert_int_equal(f.valuelen, 0);

	/* White space before the colon (obs-optional) is not in the name. */
	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_true(msghdr_name_is(&f, "To"));
	assert_int_equal(f.namelen, 2);

	assert_int_equal(msghdr_next(B(m), &pos, &f), 0);
	assert_memory_equal(m + pos, "\r\nbody", 6);
	/* Stays at the end. */
	assert_int_equal(msghdr_next(B(m), &pos, &f), 0);

	msghdr_split(B(m), &hend, &body, &blank);
	assert_int_equal(hend, pos);
	assert_int_equal(body, pos + 2);
	assert_int_equal(blank, 1);
}

static void
test_fields_lf_and_eof(void **state)
{
	static const char m[] = "A: 1\nB: 2\n\tcont\nC: no newline";
	struct msghdr_field f;
	size_t pos = 0, hend, body;
	int blank;

	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_int_equal(f.valuelen, 2);
	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_memory_equal(f.value, " 2\n\tcont", f.valuelen);
	assert_int_equal(f.valuelen, 8);
	assert_int_equal(msghdr_next(B(m), &pos, &f), 1);
	assert_memory_equal(f.value, " no newline", f.valuelen);
	assert_int_equal(f.end, sizeof(m) - 1);
	assert_int_equal(msghdr_next(B(m), &pos, &f), 0);
	assert_int_equal(pos, sizeof(m) - 1);

	msghdr_split(B(m), &hend, &body, &blank);
	assert_int_equal(hend, sizeof(m) - 1);
	assert_int_equal(body, sizeof(m) - 1);
	assert_int_equal(blank, 0);
}

static void
test_header_end_variants(void **state)
{
	static const struct {
		const char *msg;
		size_t hend, body;
		int blank;
	} t[] = {
		/* no header at all: the body starts at once */
		{ "Hello there\r\n", 0, 0, 0 },
		{ "", 0, 0, 0 },
		{ "\r\nbody", 0, 2, 1 },
		{ "\nbody", 0, 1, 1 },
		/* a continuation line with no field before it */
		{ " indented\r\n", 0, 0, 0 },
		/* a line without a colon ends the section, no empty line */
		{ "A: 1\r\nnot a header\r\n", 6, 6, 0 },
		/* a space inside the name: not a field */
		{ "A: 1\r\nBad Name: x\r\n\r\n", 6, 6, 0 },
		/* a bare CR does not end a line */
		{ "A: 1\rB: 2\r\n\r\nx", 11, 13, 1 },
		/* name with every printable but ':' */
		{ "!#~: v\r\n\r\n", 8, 10, 1 },
		/* "From " line (mbox): not a field */
		{ "From a@b Sat Jan  1\r\nA: 1\r\n", 0, 0, 0 },
		/* empty name */
		{ ": v\r\n", 0, 0, 0 },
		/* name at the end of input, no colon */
		{ "Name", 0, 0, 0 },
		{ "Name  ", 0, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		size_t hend = 99, body = 99;
		int blank = 9;

		msghdr_split(t[i].msg, strlen(t[i].msg), &hend, &body, &blank);
		if (hend != t[i].hend || body != t[i].body ||
		    blank != t[i].blank)
			fail_msg("case %zu %s: got %zu %zu %d", i, t[i].msg,
			    hend, body, blank);
	}
}

static void
test_find(void **state)
{
	static const char m[] = "Subject: x\r\nmessage-id: <1@x>\r\n"
	                        "Message-ID: <2@x>\r\n\r\n"
	                        "Message-ID: <3@x>\r\n";
	struct msghdr_field f;
	char v[64];

	assert_int_equal(msghdr_find(B(m), "Message-ID", &f), 1);
	msghdr_unfold(f.value, f.valuelen, v, sizeof(v));
	assert_string_equal(v, "<1@x>");
	assert_int_equal(msghdr_find(B(m), "Date", &f), 0);
	/* Never in the body. */
	assert_int_equal(msghdr_find(B("\r\nDate: x\r\n"), "Date", &f), 0);
	/* A prefix of a name is not the name. */
	assert_int_equal(msghdr_find(B("Dates: x\r\n"), "Date", &f), 0);
	assert_int_equal(msghdr_find(B("Dat: x\r\n"), "Date", &f), 0);
}

static void
test_unfold(void **state)
{
	static const struct {
		const char *in, *out;
	} t[] = {
		{ " a b ", "a b" },
		{ " a\r\n b", "a b" },
		{ " a\r\n\tb\r\n c", "a\tb c" },
		{ " a\n b", "a b" },
		{ "\r\n a", "a" },
		{ "  \t ", "" },
		{ "", "" },
		/* a line break not followed by white space is not a fold */
		{ " a\r\nb", "a\r\nb" },
		{ " a\rb", "a\rb" },
	};
	char out[64];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		size_t n = msghdr_unfold(t[i].in, strlen(t[i].in), out,
		    sizeof(out));
		assert_string_equal(out, t[i].out);
		assert_int_equal(n, strlen(t[i].out));
	}
	/* Bounded: never more than outlen - 1 octets. */
	assert_int_equal(msghdr_unfold(B("abcdef"), out, 4), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(msghdr_unfold(B("abcdef"), out, 1), 0);
	assert_string_equal(out, "");
}

/* ---- address lists ------------------------------------------------------- */

/*
 * Run the list; the result is the addresses joined by "|", a refused
 * element written as "!<element>".
 */
static void
alist(const char *s, char *res, size_t reslen, size_t outlen)
{
	struct msghdr_alist a;
	char out[300];
	const char *bad;
	size_t badlen, n = 0;
	int rc;

	assert_true(outlen <= sizeof(out));
	res[0] = '\0';
	msghdr_alist_init(&a, s, strlen(s));
	for (int guard = 0; guard < 100; guard++) {
		rc = msghdr_alist_next(&a, out, outlen, &bad, &badlen);
		if (rc == 0)
			return;
		if (n > 0)
			n += (size_t)snprintf(res + n, reslen - n, "|");
		if (rc == 1) {
			n += (size_t)snprintf(res + n, reslen - n, "%s", out);
		} else {
			assert_int_equal(rc, -1);
			assert_string_equal(out, "");
			assert_true(bad >= s && bad + badlen <= s + strlen(s));
			n += (size_t)snprintf(res + n, reslen - n, "!%.*s",
			    (int)badlen, bad);
		}
		assert_true(n < reslen);
	}
	fail_msg("address list iterator does not end: %s", s);
}

static void
test_alist_table(void **state)
{
	static const struct {
		const char *in, *out;
	} t[] = {
		{ "a@b", "a@b" },
		{ "a@b, c@d", "a@b|c@d" },
		{ "  a@b  ,c@d,", "a@b|c@d" },
		{ "", "" },
		{ " , ,, ", "" },
		{ "Jane Doe <jane@example.com>", "jane@example.com" },
		{ "\"Doe, Jane\" <jane@example.com>, bob@example.org",
		  "jane@example.com|bob@example.org" },
		{ "\"a <b@c>, d\" <x@y>", "x@y" },
		{ "jane@example.com (Jane, \"the\" Doe)", "jane@example.com" },
		{ "(lead) jane @ example . com (trail)", "jane@example.com" },
		{ "j(c)a@b", "!j(c)a@b" },
		{ "j(c).(d)a@b", "j.a@b" },
		{ "<jane@example.com>", "jane@example.com" },
		{ "< jane@example.com >", "jane@example.com" },
		{ "Name <@r1,@r2:jane@example.com>", "jane@example.com" },
		{ "\"quoted local\"@example.com",
		  "\"quoted local\"@example.com" },
		{ "\"a\\\"b\"@example.com", "\"a\\\"b\"@example.com" },
		{ "user@[192.0.2.1]", "user@[192.0.2.1]" },
		{ "user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]" },
		{ "first.last@sub.example.com", "first.last@sub.example.com" },
		{ "root", "root" },
		{ "root, Admin <admin>", "root|admin" },
		{ "j\xc3\xbcrgen@b\xc3\xbc.example",
		  "j\xc3\xbcrgen@b\xc3\xbc.example" },
		/* groups */
		{ "undisclosed-recipients:;", "" },
		{ "undisclosed-recipients: ;", "" },
		{ "Friends: a@b, Carl <c@d>; e@f", "a@b|c@d|e@f" },
		{ "\"My: group\": a@b;", "a@b" },
		{ "(c) Team (x): a@b;, z@y", "a@b|z@y" },
		{ "G: a@b", "a@b" },              /* missing ';' at the end */
		{ "A:;B: x@y;", "x@y" },
		/* ';' outside a group: a separator, as people type it */
		{ "a@b; c@d", "a@b|c@d" },
		/* malformed elements are reported and skipped */
		{ "John Smith", "!John Smith" },
		{ "a@b, John Smith, c@d", "a@b|!John Smith|c@d" },
		{ "a@@b", "!a@@b" },
		{ "@b", "!@b" },
		{ "a@", "!a@" },
		{ "a.@b", "!a.@b" },
		{ ".a@b", "!.a@b" },
		{ "a..b@c", "!a..b@c" },
		{ "a@b.", "!a@b." },
		{ "a@.b", "!a@.b" },
		{ "a b@c", "!a b@c" },
		{ "<a@b", "!<a@b" },
		{ "a@b>", "!a@b>" },
		{ "<a@b> trailing", "!<a@b> trailing" },
		{ "<<a@b>>", "!<<a@b>>" },
		{ "<>", "!<>" },
		{ "Name <>", "!Name <>" },
		{ "\"unterminated@b", "!\"unterminated@b" },
		{ "a@b (unterminated", "!a@b (unterminated" },
		{ "a@[1.2.3.4", "!a@[1.2.3.4" },
		{ "<@route-without-colon>", "!<@route-without-colon>" },
		{ "a@b: c@d", "!a@b: c@d" },
		{ "G: H: a@b;", "!H: a@b" },
		{ "a@b,\"x\" y <", "a@b|!\"x\" y <" },
		{ "a\\b@c", "!a\\b@c" },
		{ "a@b@c", "!a@b@c" },
		/* no address may hold CR or LF (nor NUL: test_alist_nul) */
		{ "\"a\r\nb\"@c, x@y", "!\"a\r\nb\"@c|x@y" },
		{ "a@[1.2\n.3.4]", "!a@[1.2\n.3.4]" },
	};
	char res[1024];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		alist(t[i].in, res, sizeof(res), 300);
		if (strcmp(res, t[i].out) != 0)
			fail_msg("case %zu: %s\n  want %s\n  got  %s", i,
			    t[i].in, t[i].out, res);
	}
}

static void
test_alist_outlen(void **state)
{
	char res[256];

	/* "a@b.c" needs 6 octets with its NUL. */
	alist("a@b.c", res, sizeof(res), 6);
	assert_string_equal(res, "a@b.c");
	alist("a@b.c, x@y", res, sizeof(res), 5);
	assert_string_equal(res, "!a@b.c|x@y");
	alist("\"long quoted\"@x", res, sizeof(res), 8);
	assert_string_equal(res, "!\"long quoted\"@x");
	alist("a@[1.2.3.4]", res, sizeof(res), 8);
	assert_string_equal(res, "!a@[1.2.3.4]");
	{
		struct msghdr_alist a;
		char out[4];

		msghdr_alist_init(&a, B("a@b"));
		assert_int_equal(msghdr_alist_next(&a, out, 0, NULL, NULL), -1);
		assert_int_equal(msghdr_alist_next(&a, out, 4, NULL, NULL), 1);
		assert_string_equal(out, "a@b");
		assert_int_equal(msghdr_alist_next(&a, out, 4, NULL, NULL), 0);
	}
}

/* One step of the iterator into out (64 octets). */
static int
next(struct msghdr_alist *a, char *out)
{
	return msghdr_alist_next(a, out, 64, NULL, NULL);
}

/* The list ends exactly at len: what follows is never read. */
static void
test_alist_respects_len(void **state)
{
	static const char s[] = "a@b, c@dXXX";
	struct msghdr_alist a;
	char out[64];

	msghdr_alist_init(&a, s, 8);
	assert_int_equal(next(&a, out), 1);
	assert_string_equal(out, "a@b");
	assert_int_equal(next(&a, out), 1);
	assert_string_equal(out, "c@d");
	assert_int_equal(next(&a, out), 0);
}

static void
test_alist_nul(void **state)
{
	static const char s[] = "\"a\0b\"@c, <x\0@y>, ok@z";
	struct msghdr_alist a;
	char out[64];

	msghdr_alist_init(&a, s, sizeof(s) - 1);
	assert_int_equal(next(&a, out), -1);
	assert_int_equal(next(&a, out), -1);
	assert_int_equal(next(&a, out), 1);
	assert_string_equal(out, "ok@z");
	assert_int_equal(next(&a, out), 0);
}

/* ---- display names ------------------------------------------------------- */

static void
test_phrase(void **state)
{
	static const struct {
		const char *in, *out;
	} t[] = {
		{ "Jane Doe", "Jane Doe" },
		{ "  Jane   Doe  ", "Jane Doe" },
		{ "Cron Daemon", "Cron Daemon" },
		{ "root", "root" },
		{ "Jane Q. Doe", "\"Jane Q. Doe\"" },
		{ "Doe, Jane", "\"Doe, Jane\"" },
		{ "a \"b\" \\c", "\"a \\\"b\\\" \\\\c\"" },
		{ "x\r\nBcc: victim@example.com",
		  "\"x Bcc: victim@example.com\"" },
		{ "tab\there", "tab here" },
		{ "J\xc3\xbcrgen", "=?UTF-8?B?SsO8cmdlbg==?=" },
		/* invalid UTF-8 octets become '?', then it is plain ASCII */
		{ "J\xfcrgen", "J?rgen" },
		{ "\xc3", "?" },
	};
	char out[256];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int n = msghdr_phrase(t[i].in, strlen(t[i].in), out,
		    sizeof(out));
		if (n < 0 || strcmp(out, t[i].out) != 0 ||
		    (size_t)n != strlen(out))
			fail_msg("case %zu: %s: got %d %s", i, t[i].in, n, out);
	}
	assert_int_equal(msghdr_phrase(B(""), out, sizeof(out)), -1);
	assert_int_equal(msghdr_phrase(B(" \r\n "), out, sizeof(out)), -1);
	assert_string_equal(out, "");
	/* Too long for out: -1 and "". */
	assert_int_equal(msghdr_phrase(B("Jane Doe"), out, 8), -1);
	assert_string_equal(out, "");
	assert_int_equal(msghdr_phrase(B("Jane Doe"), out, 9), 8);
	assert_int_equal(msghdr_phrase(B("a.b"), out, 5), -1);
	assert_int_equal(msghdr_phrase(B("a.b"), out, 6), 5);
	assert_string_equal(out, "\"a.b\"");
}

/* Long non-ASCII names: several encoded words, each at most 75 octets,
 * never cutting a UTF-8 sequence. */
static void
test_phrase_long_utf8(void **state)
{
	char name[200], out[512];
	size_t n = 0;
	int len;
	const char *w;

	for (int i = 0; i < 40; i++) {
		memcpy(name + n, "\xc3\xa9", 2);     /* 80 octets of e-acute */
		n += 2;
	}
	len = msghdr_phrase(name, n, out, sizeof(out));
	assert_true(len > 0);
	/* 44 + 36 octets: two words */
	assert_string_equal(out,
	    "=?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOp"
	    "w6k=?= "
	    "=?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOp?=");
	for (w = out; *w; ) {
		const char *sp = strchr(w, ' ');
		size_t wl = sp ? (size_t)(sp - w) : strlen(w);
		assert_true(wl <= 75);
		w += wl + (sp != NULL);
	}
	/* Too small: -1. */
	assert_int_equal(msghdr_phrase(name, n, out, 80), -1);
	/* A name longer than the limit of the scratch buffer. */
	memset(out, 'a', 511);
	assert_int_equal(msghdr_phrase(out, 511, name, sizeof(name)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields_crlf),
		cmocka_unit_test(test_fields_lf_and_eof),
		cmocka_unit_test(test_header_end_variants),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_unfold),
		cmocka_unit_test(test_alist_table),
		cmocka_unit_test(test_alist_outlen),
		cmocka_unit_test(test_alist_respects_len),
		cmocka_unit_test(test_alist_nul),
		cmocka_unit_test(test_phrase),
		cmocka_unit_test(test_phrase_long_utf8),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
