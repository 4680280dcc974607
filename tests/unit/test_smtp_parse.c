/*
 * test_smtp_parse.c - unit tests for src/smtp_parse.c.
 *
 * Almost every test is a table of exact inputs and exact expected outputs.
 * Every input is first copied into a heap buffer of exactly its length
 * (dup_exact), so that any read past the end shows up under valgrind or
 * ASan; none of the parsers may rely on a terminating NUL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_parse.h"

/* A string literal and its length, embedded NULs included. */
#define S(x) x, (sizeof(x) - 1)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define ALLEXT (SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 | \
                SMTP_EXT_BINARYMIME)
#define N SMTP_PATH_ALLOW_NULL
#define P SMTP_PATH_ALLOW_POSTMASTER

#define CHECK_INT(row, got, want)                                           \
	do {                                                                \
		long long g_ = (long long)(got), w_ = (long long)(want);    \
		if (g_ != w_)                                               \
			fail_msg("%s row %zu: %s = %lld, want %lld",        \
			         __func__, (size_t)(row), #got, g_, w_);    \
	} while (0)

#define CHECK_STR(row, got, want)                                           \
	do {                                                                \
		if (strcmp((got), (want)) != 0)                             \
			fail_msg("%s row %zu: %s = \"%s\", want \"%s\"",    \
			         __func__, (size_t)(row), #got, (got),      \
			         (want));                                   \
	} while (0)

/* [p, p + n) must equal the NUL-terminated want. */
#define CHECK_MEM(row, p, n, want)                                          \
	do {                                                                \
		if ((n) != strlen(want) || memcmp((p), (want), (n)) != 0)   \
			fail_msg("%s row %zu: %s = \"%.*s\", want \"%s\"",  \
			         __func__, (size_t)(row), #p, (int)(n),     \
			         (p), (want));                              \
	} while (0)

/* A heap copy of exactly len bytes (not NUL-terminated). */
static char *
dup_exact(const char *s, size_t len)
{
	char *d = malloc(len);

	if (len > 0) {
		assert_non_null(d);
		memcpy(d, s, len);
	}
	return d;
}

static char *
repeat(char *buf, size_t bufsize, const char *unit, size_t times)
{
	size_t ul = strlen(unit), i;

	assert_true(ul * times < bufsize);
	for (i = 0; i < times; i++)
		memcpy(buf + i * ul, unit, ul);
	buf[ul * times] = '\0';
	return buf;
}

/*
 * A valid domain name of exactly n octets (n >= 1): labels of 62 'x' and a
 * last label of 1 to 63 octets.
 */
static char *
make_domain(char *buf, size_t bufsize, size_t n)
{
	size_t o = 0, left = n;

	assert_true(n >= 1 && n < bufsize);
	while (left > 63) {
		memset(buf + o, 'x', 62);
		buf[o + 62] = '.';
		o += 63;
		left -= 63;
	}
	memset(buf + o, 'y', left);
	buf[o + left] = '\0';
	assert_int_equal(strlen(buf), n);
	return buf;
}

/* ---- command lines ----------------------------------------------------- */

static void
test_command_table(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		int rc;
		enum smtp_verb verb;
		const char *arg;
	} t[] = {
		{ S("MAIL FROM:<a@b>"), 0, SMTP_MAIL, "FROM:<a@b>" },
		{ S("mail from:<a@b>"), 0, SMTP_MAIL, "from:<a@b>" },
		{ S("MaIl FROM:<a@b>   "), 0, SMTP_MAIL, "FROM:<a@b>" },
		{ S("MAIL    FROM:<a@b> SIZE=1"), 0, SMTP_MAIL,
		  "FROM:<a@b> SIZE=1" },
		{ S("MAIL FROM:<a b>  x  "), 0, SMTP_MAIL, "FROM:<a b>  x" },
		{ S("RCPT TO:<a@b>"), 0, SMTP_RCPT, "TO:<a@b>" },
		{ S("rcpt TO:<a@b>"), 0, SMTP_RCPT, "TO:<a@b>" },
		{ S("HELO host"), 0, SMTP_HELO, "host" },
		{ S("EHLO host.example"), 0, SMTP_EHLO, "host.example" },
		{ S("ehlo [192.0.2.1]"), 0, SMTP_EHLO, "[192.0.2.1]" },
		{ S("EHLO"), 0, SMTP_EHLO, "" },
		{ S("DATA"), 0, SMTP_DATA, "" },
		{ S("data"), 0, SMTP_DATA, "" },
		{ S("DATA   "), 0, SMTP_DATA, "" },
		{ S("BDAT 100 LAST"), 0, SMTP_BDAT, "100 LAST" },
		{ S("bdat 0"), 0, SMTP_BDAT, "0" },
		{ S("RSET"), 0, SMTP_RSET, "" },
		{ S("NOOP"), 0, SMTP_NOOP, "" },
		{ S("NOOP anything at all"), 0, SMTP_NOOP, "anything at all" },
		{ S("QUIT"), 0, SMTP_QUIT, "" },
		{ S("VRFY user"), 0, SMTP_VRFY, "user" },
		{ S("EXPN list"), 0, SMTP_EXPN, "list" },
		{ S("expn"), 0, SMTP_EXPN, "" },
		{ S("HELP"), 0, SMTP_HELP, "" },
		{ S("HELP MAIL"), 0, SMTP_HELP, "MAIL" },
		{ S("STARTTLS"), 0, SMTP_STARTTLS, "" },
		{ S("starttls"), 0, SMTP_STARTTLS, "" },
		{ S("StartTLS extra"), 0, SMTP_STARTTLS, "extra" },
		{ S("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), 0, SMTP_AUTH,
		  "PLAIN AGFsaWNlAHNlY3JldA==" },
		{ S("auth login"), 0, SMTP_AUTH, "login" },
		/* Not a verb: the verb must be followed by a space or the end. */
		{ S("MAILX FROM:<a@b>"), 0, SMTP_UNKNOWN, "FROM:<a@b>" },
		{ S("STARTTLSX"), 0, SMTP_UNKNOWN, "" },
		{ S("DATAX"), 0, SMTP_UNKNOWN, "" },
		{ S("MAI"), 0, SMTP_UNKNOWN, "" },
		{ S("MAIL:FROM"), 0, SMTP_UNKNOWN, "" },
		{ S("MAIL\tFROM:<a@b>"), 0, SMTP_UNKNOWN, "" },
		{ S(" MAIL FROM:<a@b>"), 0, SMTP_UNKNOWN, "MAIL FROM:<a@b>" },
		{ S("TURN"), 0, SMTP_UNKNOWN, "" },
		{ S("ATRN x"), 0, SMTP_UNKNOWN, "x" },
		{ S("\x80\xff"), 0, SMTP_UNKNOWN, "" },
		{ S(""), 0, SMTP_UNKNOWN, "" },
		{ S("    "), 0, SMTP_UNKNOWN, "" },
		/* NUL, CR, LF anywhere. */
		{ S("MAIL FROM:<a@b>\r"), -1, SMTP_UNKNOWN, "" },
		{ S("MAIL FROM:<a@b>\n"), -1, SMTP_UNKNOWN, "" },
		{ S("DATA\r\n"), -1, SMTP_UNKNOWN, "" },
		{ S("MAIL\0 FROM:<a@b>"), -1, SMTP_UNKNOWN, "" },
		{ S("RCPT TO:<a\r@b>"), -1, SMTP_UNKNOWN, "" },
		{ S("\nNOOP"), -1, SMTP_UNKNOWN, "" },
		{ S("\0"), -1, SMTP_UNKNOWN, "" },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		struct smtp_cmd cmd;
		int rc = smtp_parse_command(in, t[i].len, &cmd);

		CHECK_INT(i, rc, t[i].rc);
		CHECK_INT(i, cmd.verb, t[i].verb);
		CHECK_MEM(i, cmd.arg, cmd.arglen, t[i].arg);
		assert_true(cmd.arg >= in && cmd.arg + cmd.arglen <= in + t[i].len);
		free(in);
	}
}

/* The line ends at len, not at a NUL: bytes beyond it are never looked at. */
static void
test_command_respects_len(void **state)
{
	struct smtp_cmd cmd;
	const char *line = "NOOP\r\n";
	char *in = dup_exact("NOOPX", 5);

	assert_int_equal(smtp_parse_command(line, 4, &cmd), 0);
	assert_int_equal(cmd.verb, SMTP_NOOP);
	assert_int_equal(cmd.arglen, 0);
	assert_ptr_equal(cmd.arg, line + 4);

	assert_int_equal(smtp_parse_command(in, 4, &cmd), 0);
	assert_int_equal(cmd.verb, SMTP_NOOP);
	assert_int_equal(smtp_parse_command(in, 3, &cmd), 0);
	assert_int_equal(cmd.verb, SMTP_UNKNOWN);
	assert_int_equal(smtp_parse_command(in, 5, &cmd), 0);
	assert_int_equal(cmd.verb, SMTP_UNKNOWN);
	free(in);
}

static void
test_verb_table(void **state)
{
	static const struct {
		enum smtp_verb verb;
		const char *name;
		int ends;
	} t[] = {
		{ SMTP_UNKNOWN, "UNKNOWN", 1 },
		{ SMTP_HELO, "HELO", 1 },
		{ SMTP_EHLO, "EHLO", 1 },
		{ SMTP_MAIL, "MAIL", 0 },
		{ SMTP_RCPT, "RCPT", 0 },
		{ SMTP_DATA, "DATA", 1 },
		{ SMTP_BDAT, "BDAT", 0 },
		{ SMTP_RSET, "RSET", 0 },
		{ SMTP_NOOP, "NOOP", 1 },
		{ SMTP_QUIT, "QUIT", 1 },
		{ SMTP_VRFY, "VRFY", 1 },
		{ SMTP_EXPN, "EXPN", 1 },
		{ SMTP_HELP, "HELP", 0 },
		{ SMTP_STARTTLS, "STARTTLS", 1 },
		{ SMTP_AUTH, "AUTH", 1 },
		{ (enum smtp_verb)99, "UNKNOWN", 1 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		CHECK_STR(i, smtp_verb_name(t[i].verb), t[i].name);
		CHECK_INT(i, smtp_verb_ends_group(t[i].verb), t[i].ends);
	}
	/* Every name parses back to its verb, in any case. */
	for (i = 1; i + 1 < NELEM(t); i++) {
		char buf[16];
		struct smtp_cmd cmd;
		size_t j, n = strlen(t[i].name);

		for (j = 0; j < n; j++)
			buf[j] = (char)(t[i].name[j] | 0x20);
		assert_int_equal(smtp_parse_command(buf, n, &cmd), 0);
		CHECK_INT(i, cmd.verb, t[i].verb);
		assert_int_equal(smtp_parse_command(t[i].name, n, &cmd), 0);
		CHECK_INT(i, cmd.verb, t[i].verb);
	}
}

static void
test_skip_prefix(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		const char *prefix;
		const char *rest;   /* NULL: prefix absent */
	} t[] = {
		{ S("FROM:<a@b>"), "FROM:", "<a@b>" },
		{ S("from:<a@b>"), "FROM:", "<a@b>" },
		{ S("FrOm:<a@b> SIZE=1"), "FROM:", "<a@b> SIZE=1" },
		{ S("FROM:   <a@b>"), "FROM:", "<a@b>" },
		{ S("FROM:"), "FROM:", "" },
		{ S("FROM:  "), "FROM:", "" },
		{ S("TO:<a@b>"), "TO:", "<a@b>" },
		{ S("to: <a@b>"), "TO:", "<a@b>" },
		{ S("FROM <a@b>"), "FROM:", NULL },
		{ S("FROM"), "FROM:", NULL },
		{ S("FRO"), "FROM:", NULL },
		{ S(""), "FROM:", NULL },
		{ S("FROM:<a@b>"), "TO:", NULL },
		{ S(" FROM:<a@b>"), "FROM:", NULL },
		{ S("FROMX:<a@b>"), "FROM:", NULL },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		size_t restlen = 12345;
		const char *r = smtp_skip_prefix(in, t[i].len, t[i].prefix,
		                                 &restlen);

		if (t[i].rest == NULL) {
			if (r != NULL)
				fail_msg("row %zu: prefix found", i);
		} else {
			if (r == NULL)
				fail_msg("row %zu: prefix not found", i);
			CHECK_MEM(i, r, restlen, t[i].rest);
			assert_ptr_equal(r + restlen, in + t[i].len);
		}
		free(in);
	}
}

/* ---- paths ------------------------------------------------------------- */

struct path_case {
	const char *in;
	size_t len;
	int flags;
	enum smtp_path_status st;
	const char *addr;   /* expected addr ("" on failure) */
	size_t at;
	int null, pm, utf8;
	const char *rest;
};

static void
check_path(size_t row, const struct path_case *c)
{
	char *in = dup_exact(c->in, c->len);
	struct smtp_path p;
	const char *rest = NULL;
	size_t restlen = 999;
	enum smtp_path_status st;

	memset(&p, 0x5a, sizeof(p));
	st = smtp_parse_path(in, c->len, c->flags, &p, &rest, &restlen);
	CHECK_INT(row, st, c->st);
	CHECK_STR(row, p.addr, c->addr);
	CHECK_INT(row, p.at, c->at);
	CHECK_INT(row, p.null, c->null);
	CHECK_INT(row, p.postmaster, c->pm);
	CHECK_INT(row, p.utf8, c->utf8);
	if (st == SMTP_PATH_OK) {
		CHECK_MEM(row, rest, restlen, c->rest);
		assert_ptr_equal(rest + restlen, in + c->len);
		if (!p.null && !p.postmaster)
			CHECK_INT(row, p.addr[p.at], '@');
	} else {
		/* untouched on failure */
		assert_null(rest);
		CHECK_INT(row, restlen, 999);
	}
	free(in);
}

static void
test_path_good(void **state)
{
	static const struct path_case t[] = {
		{ S("<a@b>"), 0, SMTP_PATH_OK, "a@b", 1, 0, 0, 0, "" },
		{ S("<user@example.com>"), N | P, SMTP_PATH_OK,
		  "user@example.com", 4, 0, 0, 0, "" },
		{ S("<User.Name+tag@Sub.Example-Host.COM>"), 0, SMTP_PATH_OK,
		  "User.Name+tag@Sub.Example-Host.COM", 13, 0, 0, 0, "" },
		{ S("<a@b> SIZE=10"), 0, SMTP_PATH_OK, "a@b", 1, 0, 0, 0,
		  "SIZE=10" },
		{ S("<a@b>    SIZE=10 BODY=7BIT"), 0, SMTP_PATH_OK, "a@b", 1,
		  0, 0, 0, "SIZE=10 BODY=7BIT" },
		{ S("<a@b>   "), 0, SMTP_PATH_OK, "a@b", 1, 0, 0, 0, "" },
		{ S("<a.b.c@x-y.z>"), 0, SMTP_PATH_OK, "a.b.c@x-y.z", 5, 0, 0,
		  0, "" },
		{ S("<1@2.3>"), 0, SMTP_PATH_OK, "1@2.3", 1, 0, 0, 0, "" },
		{ S("<a@a-b--c>"), 0, SMTP_PATH_OK, "a@a-b--c", 1, 0, 0, 0, "" },
		{ S("<!#$%&'*+-/=?^_`{|}~@x>"), 0, SMTP_PATH_OK,
		  "!#$%&'*+-/=?^_`{|}~@x", 19, 0, 0, 0, "" },
		/* Relay-attack shapes: parsed literally, never reinterpreted. */
		{ S("<user%other@local>"), 0, SMTP_PATH_OK, "user%other@local",
		  10, 0, 0, 0, "" },
		{ S("<user%other.example@local.example>"), 0, SMTP_PATH_OK,
		  "user%other.example@local.example", 18, 0, 0, 0, "" },
		{ S("<a!b@c>"), 0, SMTP_PATH_OK, "a!b@c", 3, 0, 0, 0, "" },
		{ S("<c!d!user@e>"), 0, SMTP_PATH_OK, "c!d!user@e", 8, 0, 0, 0,
		  "" },
		{ S("<@a,@b:user@c>"), 0, SMTP_PATH_OK, "user@c", 4, 0, 0, 0,
		  "" },
		{ S("<@a.example:user@c>"), 0, SMTP_PATH_OK, "user@c", 4, 0, 0,
		  0, "" },
		{ S("<@a,@b.c,@d-e.f:u%v@g> X=1"), 0, SMTP_PATH_OK, "u%v@g", 3,
		  0, 0, 0, "X=1" },
		{ S("<\"a@b\"@c>"), 0, SMTP_PATH_OK, "\"a@b\"@c", 5, 0, 0, 0, "" },
		{ S("<\"a@b@d\"@c.example>"), 0, SMTP_PATH_OK,
		  "\"a@b@d\"@c.example", 7, 0, 0, 0, "" },
		{ S("<@r:\"a@b\"@c>"), 0, SMTP_PATH_OK, "\"a@b\"@c", 5, 0, 0, 0,
		  "" },
		/* Quoted strings. */
		{ S("<\"a b\"@c>"), 0, SMTP_PATH_OK, "\"a b\"@c", 5, 0, 0, 0, "" },
		{ S("<\"a\\\"b\"@c>"), 0, SMTP_PATH_OK, "\"a\\\"b\"@c", 6, 0, 0, 0,
		  "" },
		{ S("<\"a\\\\b\"@c>"), 0, SMTP_PATH_OK, "\"a\\\\b\"@c", 6, 0, 0, 0,
		  "" },
		{ S("<\"\\ \\~\"@c>"), 0, SMTP_PATH_OK, "\"\\ \\~\"@c", 6, 0, 0, 0,
		  "" },
		{ S("<\"\"@c>"), 0, SMTP_PATH_OK, "\"\"@c", 2, 0, 0, 0, "" },
		{ S("<\"a>b\"@c>"), 0, SMTP_PATH_OK, "\"a>b\"@c", 5, 0, 0, 0, "" },
		{ S("<\"a,b:c\"@d>"), 0, SMTP_PATH_OK, "\"a,b:c\"@d", 7, 0, 0, 0,
		  "" },
		{ S("<\"a..b.\"@c>"), 0, SMTP_PATH_OK, "\"a..b.\"@c", 7, 0, 0, 0,
		  "" },
		/* Address literals. */
		{ S("<a@[192.0.2.1]>"), 0, SMTP_PATH_OK, "a@[192.0.2.1]", 1, 0,
		  0, 0, "" },
		{ S("<a@[0.0.0.0]>"), 0, SMTP_PATH_OK, "a@[0.0.0.0]", 1, 0, 0, 0,
		  "" },
		{ S("<a@[255.255.255.255]>"), 0, SMTP_PATH_OK,
		  "a@[255.255.255.255]", 1, 0, 0, 0, "" },
		{ S("<a@[IPv6:2001:db8::1]>"), 0, SMTP_PATH_OK,
		  "a@[IPv6:2001:db8::1]", 1, 0, 0, 0, "" },
		{ S("<a@[ipv6:::1]>"), 0, SMTP_PATH_OK, "a@[ipv6:::1]", 1, 0, 0,
		  0, "" },
		{ S("<a@[IPv6:::ffff:192.0.2.1]>"), 0, SMTP_PATH_OK,
		  "a@[IPv6:::ffff:192.0.2.1]", 1, 0, 0, 0, "" },
		{ S("<a@[IPv6:2001:0db8:0000:0000:0000:0000:0000:0001]>"), 0,
		  SMTP_PATH_OK, "a@[IPv6:2001:0db8:0000:0000:0000:0000:0000:0001]",
		  1, 0, 0, 0, "" },
		{ S("<\"x\"@[192.0.2.1]> A"), 0, SMTP_PATH_OK,
		  "\"x\"@[192.0.2.1]", 3, 0, 0, 0, "A" },
		/* UTF-8 (RFC 6531). */
		{ S("<pel\xc3\xa9@\xc3\xa9xample.org>"), 0, SMTP_PATH_OK,
		  "pel\xc3\xa9@\xc3\xa9xample.org", 5, 0, 0, 1, "" },
		{ S("<\xe4\xbd\xa0\xe5\xa5\xbd@\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b"
		    "\xe8\xaf\x95>"), 0, SMTP_PATH_OK,
		  "\xe4\xbd\xa0\xe5\xa5\xbd@\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b"
		  "\xe8\xaf\x95", 6, 0, 0, 1, "" },
		{ S("<\xf0\x9f\x98\x80@x>"), 0, SMTP_PATH_OK,
		  "\xf0\x9f\x98\x80@x", 4, 0, 0, 1, "" },
		{ S("<\"\xc3\xa9 x\"@c>"), 0, SMTP_PATH_OK, "\"\xc3\xa9 x\"@c", 6,
		  0, 0, 1, "" },
		{ S("<a@b.\xc3\xa9>"), 0, SMTP_PATH_OK, "a@b.\xc3\xa9", 1, 0, 0, 1,
		  "" },
		/* The route is dropped, and its UTF-8 does not mark addr. */
		{ S("<@\xc3\xa9:a@b>"), 0, SMTP_PATH_OK, "a@b", 1, 0, 0, 0, "" },
		/* Null path and postmaster. */
		{ S("<>"), N, SMTP_PATH_OK, "", 0, 1, 0, 0, "" },
		{ S("<>"), N | P, SMTP_PATH_OK, "", 0, 1, 0, 0, "" },
		{ S("<> SIZE=1 BODY=8BITMIME"), N, SMTP_PATH_OK, "", 0, 1, 0, 0,
		  "SIZE=1 BODY=8BITMIME" },
		{ S("<>   "), N, SMTP_PATH_OK, "", 0, 1, 0, 0, "" },
		{ S("<postmaster>"), P, SMTP_PATH_OK, "postmaster", 0, 0, 1, 0,
		  "" },
		{ S("<PostMaster>"), P | N, SMTP_PATH_OK, "postmaster", 0, 0, 1,
		  0, "" },
		{ S("<POSTMASTER> NOTIFY=NEVER"), P, SMTP_PATH_OK, "postmaster",
		  0, 0, 1, 0, "NOTIFY=NEVER" },
		{ S("<postmaster@example.com>"), 0, SMTP_PATH_OK,
		  "postmaster@example.com", 10, 0, 0, 0, "" },
		{ S("<Postmaster@example.com>"), P, SMTP_PATH_OK,
		  "Postmaster@example.com", 10, 0, 0, 0, "" },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++)
		check_path(i, &t[i]);
}

#define BAD(s, fl, st) { S(s), fl, st, "", 0, 0, 0, 0, NULL }

static void
test_path_bad(void **state)
{
	static const struct path_case t[] = {
		/* Not a path at all. */
		BAD("", N | P, SMTP_PATH_SYNTAX),
		BAD("a@b", N | P, SMTP_PATH_SYNTAX),
		BAD(" <a@b>", N | P, SMTP_PATH_SYNTAX),
		BAD("<", N | P, SMTP_PATH_SYNTAX),
		BAD("<a@b", N | P, SMTP_PATH_SYNTAX),
		BAD("a@b>", N | P, SMTP_PATH_SYNTAX),
		/* Null path and postmaster where not allowed. */
		BAD("<>", 0, SMTP_PATH_SYNTAX),
		BAD("<>", P, SMTP_PATH_SYNTAX),
		BAD("<postmaster>", 0, SMTP_PATH_SYNTAX),
		BAD("<postmaster>", N, SMTP_PATH_SYNTAX),
		BAD("<>x", N, SMTP_PATH_SYNTAX),
		BAD("<postmaster>x", P, SMTP_PATH_SYNTAX),
		BAD("<@a:postmaster>", P, SMTP_PATH_SYNTAX),
		BAD("<@a:>", N, SMTP_PATH_SYNTAX),
		BAD("<postmaster.x>", P, SMTP_PATH_SYNTAX),
		/* After '>': nothing, or a space. */
		BAD("<a@b>x", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b>SIZE=1", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b>>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b>\t", 0, SMTP_PATH_SYNTAX),
		/* Spaces and structure. */
		BAD("< a@b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b >", 0, SMTP_PATH_SYNTAX),
		BAD("<a @b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a>", 0, SMTP_PATH_SYNTAX),
		BAD("<@b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<<a@b>>", 0, SMTP_PATH_SYNTAX),
		/* Dot-string. */
		BAD("<.a@b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a.@b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a..b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a(b)@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a,b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a;b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a\\b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a\x7f@c>", 0, SMTP_PATH_SYNTAX),
		/* Domains. */
		BAD("<a@b.c.>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@.b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b..c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@.>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@-b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b->", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b.-c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b.c->", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b_c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b%c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b!c>", 0, SMTP_PATH_SYNTAX),
		/* Quoted strings. */
		BAD("<\"a\"b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\".b@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<a.\"b\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\\\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\x01\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\x7f\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\\\x01\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\\\x7f\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\\\xc3\xa9\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"a\tb\"@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<\"\"\"@c>", 0, SMTP_PATH_SYNTAX),
		/* Source routes. */
		BAD("<@a,@b,user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a:@b:user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a,b:user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@:user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a.:user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a,:user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@[1.2.3.4]:user@c>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a:>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a>", 0, SMTP_PATH_SYNTAX),
		BAD("<@a,@b:>", N, SMTP_PATH_SYNTAX),
		/* Address literals. */
		BAD("<a@[1.2.3]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[256.0.0.1]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4.5]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4 ]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[ 1.2.3.4]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.a]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[01.2.3.4]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[IPv6:1.2.3.4]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[IPv6:2001:db8::g]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[IPv6:fe80::1%eth0]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[IPv6:]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[2001:db8::1]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[x400:foo]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4]", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4]x>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4]]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[[1.2.3.4]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@b.[1.2.3.4]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4].b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[\xc3\xa9]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0]>", 0,
		    SMTP_PATH_SYNTAX),
		BAD("<a@[11111111111111111111111111111111111111111111111111111111"
		    "111111111]>", 0, SMTP_PATH_SYNTAX),
		/* NUL and control bytes. */
		BAD("<a@b\0>", 0, SMTP_PATH_SYNTAX),
		BAD("<\0@b>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4\0]>", 0, SMTP_PATH_SYNTAX),
		BAD("<a@[1.2.3.4]\0", 0, SMTP_PATH_SYNTAX),
		BAD("<\0>", N, SMTP_PATH_SYNTAX),
		/* Bad UTF-8. */
		BAD("<\xff@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<a@\xc3>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<a\xc3@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<\xc0\xaf@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<\xed\xa0\x80@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<a@b\xf4\x90\x80\x80>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<\"\xff\"@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<\"\xc3\"@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<@\xff:a@b>", 0, SMTP_PATH_BAD_UTF8),
		BAD("<a@\x80.b>", 0, SMTP_PATH_BAD_UTF8),
		/* A syntax error wins over bad UTF-8. */
		BAD("<\xff@b", 0, SMTP_PATH_SYNTAX),
		BAD("<\xff@b.>", 0, SMTP_PATH_SYNTAX),
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++)
		check_path(i, &t[i]);
}

/* Inputs are byte ranges: the path ends at len whatever follows it. */
static void
test_path_respects_len(void **state)
{
	static const char s[] = "<a@b> SIZE=1";
	struct smtp_path p;
	const char *rest;
	size_t restlen;

	assert_int_equal(smtp_parse_path(s, 4, 0, &p, &rest, &restlen),
	                 SMTP_PATH_SYNTAX);
	assert_int_equal(smtp_parse_path(s, 5, 0, &p, &rest, &restlen),
	                 SMTP_PATH_OK);
	assert_int_equal(restlen, 0);
	assert_ptr_equal(rest, s + 5);
	assert_int_equal(smtp_parse_path(s, 6, 0, &p, &rest, &restlen),
	                 SMTP_PATH_OK);
	assert_int_equal(restlen, 0);
	assert_ptr_equal(rest, s + 6);
	assert_int_equal(smtp_parse_path(s, 8, 0, &p, &rest, &restlen),
	                 SMTP_PATH_OK);
	assert_int_equal(restlen, 2);
	assert_int_equal(smtp_parse_path("<>", 1, N, &p, &rest, &restlen),
	                 SMTP_PATH_SYNTAX);
	assert_int_equal(smtp_parse_path("<postmaster>", 11, P, &p, &rest,
	                                 &restlen), SMTP_PATH_SYNTAX);
	assert_int_equal(smtp_parse_path("<\"a\\\"@b>", 4, 0, &p, &rest,
	                                 &restlen), SMTP_PATH_SYNTAX);
	/* rest and restlen may be NULL */
	assert_int_equal(smtp_parse_path(s, sizeof(s) - 1, 0, &p, NULL, NULL),
	                 SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
}

/* Parse "<" local "@" domain ">", built in a buffer, and check the result. */
static void
check_built_path(size_t row, const char *route, const char *local,
                 const char *domain, enum smtp_path_status want)
{
	char buf[1024], addr[1024];
	int n;

	n = snprintf(buf, sizeof(buf), "<%s%s@%s> SIZE=1", route, local,
	             domain);
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	snprintf(addr, sizeof(addr), "%s@%s", local, domain);

	struct path_case c = { buf, (size_t)n, 0, want, "", 0, 0, 0, 0,
	                       "SIZE=1" };
	if (want == SMTP_PATH_OK) {
		c.addr = addr;
		c.at = strlen(local);
		c.utf8 = strchr(addr, '\xc3') != NULL;
	}
	check_path(row, &c);
}

static void
test_path_limits(void **state)
{
	char l[300], d[300], r[300], d2[300], lab[128];
	size_t row = 0;

	/* Local part: 64 octets. */
	check_built_path(row++, "", repeat(l, sizeof(l), "l", 64), "b",
	                 SMTP_PATH_OK);
	check_built_path(row++, "", repeat(l, sizeof(l), "l", 65), "b",
	                 SMTP_PATH_TOO_LONG);
	/* Octets, not characters: 32 x U+00E9 is 64 octets. */
	check_built_path(row++, "", repeat(l, sizeof(l), "\xc3\xa9", 32), "b",
	                 SMTP_PATH_OK);
	check_built_path(row++, "", repeat(l, sizeof(l), "\xc3\xa9", 33), "b",
	                 SMTP_PATH_TOO_LONG);
	/* A quoted local part counts its quotes. */
	repeat(lab, sizeof(lab), "q", 62);
	snprintf(l, sizeof(l), "\"%s\"", lab);
	check_built_path(row++, "", l, "b", SMTP_PATH_OK);
	repeat(lab, sizeof(lab), "q", 63);
	snprintf(l, sizeof(l), "\"%s\"", lab);
	check_built_path(row++, "", l, "b", SMTP_PATH_TOO_LONG);

	/* Label: 63 octets (a longer one is a syntax error). */
	repeat(lab, sizeof(lab), "x", 63);
	snprintf(d, sizeof(d), "%s.com", lab);
	check_built_path(row++, "", "a", d, SMTP_PATH_OK);
	repeat(lab, sizeof(lab), "x", 64);
	snprintf(d, sizeof(d), "%s.com", lab);
	check_built_path(row++, "", "a", d, SMTP_PATH_SYNTAX);
	repeat(lab, sizeof(lab), "\xc3\xa9", 31);
	snprintf(d, sizeof(d), "%sx.com", lab);
	check_built_path(row++, "", "a", d, SMTP_PATH_OK);
	repeat(lab, sizeof(lab), "\xc3\xa9", 32);
	snprintf(d, sizeof(d), "%s.com", lab);
	check_built_path(row++, "", "a", d, SMTP_PATH_SYNTAX);

	/* Whole path "<" addr ">": 256 octets. */
	check_built_path(row++, "", "a", make_domain(d, sizeof(d), 252),
	                 SMTP_PATH_OK);
	check_built_path(row++, "", "a", make_domain(d, sizeof(d), 253),
	                 SMTP_PATH_TOO_LONG);
	check_built_path(row++, "", repeat(l, sizeof(l), "l", 64),
	                 make_domain(d, sizeof(d), 189), SMTP_PATH_OK);
	check_built_path(row++, "", repeat(l, sizeof(l), "l", 64),
	                 make_domain(d, sizeof(d), 190), SMTP_PATH_TOO_LONG);
	/* Domain: 255 octets (always over the path limit too). */
	check_built_path(row++, "", "a", make_domain(d, sizeof(d), 255),
	                 SMTP_PATH_TOO_LONG);
	check_built_path(row++, "", "a", make_domain(d, sizeof(d), 256),
	                 SMTP_PATH_TOO_LONG);

	/* The route does not count towards the path, but its domains are
	 * limited to 255 octets like any domain. */
	snprintf(r, sizeof(r), "@%s:", make_domain(d, sizeof(d), 255));
	check_built_path(row++, r, "a", make_domain(d2, sizeof(d2), 252),
	                 SMTP_PATH_OK);
	snprintf(r, sizeof(r), "@%s:", make_domain(d, sizeof(d), 256));
	check_built_path(row++, r, "a", "b", SMTP_PATH_TOO_LONG);
	snprintf(r, sizeof(r), "@a,@%s:", make_domain(d, sizeof(d), 256));
	check_built_path(row++, r, "a", "b", SMTP_PATH_TOO_LONG);

	/* Precedence: syntax, then UTF-8, then length. */
	repeat(l, sizeof(l), "l", 70);
	check_built_path(row++, "", l, "b.", SMTP_PATH_SYNTAX);
	l[3] = '\xff';
	check_built_path(row++, "", l, "b", SMTP_PATH_BAD_UTF8);
}

/* ---- parameters -------------------------------------------------------- */

/* "KEY=VALUE|KEY|..." for comparison. */
static void
params_join(const struct smtp_param *prm, int n, char *buf, size_t size)
{
	size_t o = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; i < n; i++) {
		int w;

		if (prm[i].value != NULL)
			w = snprintf(buf + o, size - o, "%s%.*s=%.*s",
			             i ? "|" : "", (int)prm[i].keylen, prm[i].key,
			             (int)prm[i].valuelen, prm[i].value);
		else
			w = snprintf(buf + o, size - o, "%s%.*s", i ? "|" : "",
			             (int)prm[i].keylen, prm[i].key);
		assert_true(w > 0 && (size_t)w < size - o);
		o += (size_t)w;
	}
}

static void
test_params_split(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		size_t max;
		int rc;
		const char *joined;
	} t[] = {
		{ S(""), 16, 0, "" },
		{ S(""), 0, 0, "" },
		{ S("    "), 16, 0, "" },
		{ S("SIZE=100"), 16, 1, "SIZE=100" },
		{ S("SIZE=100 BODY=8BITMIME SMTPUTF8"), 16, 3,
		  "SIZE=100|BODY=8BITMIME|SMTPUTF8" },
		{ S("SIZE=100    BODY=7BIT  "), 16, 2, "SIZE=100|BODY=7BIT" },
		{ S("  SIZE=1"), 16, 1, "SIZE=1" },
		{ S("X-FOO=bar"), 16, 1, "X-FOO=bar" },
		{ S("1ABC=x"), 16, 1, "1ABC=x" },
		{ S("A-"), 16, 1, "A-" },
		{ S("ENVID=abc+2Bdef"), 16, 1, "ENVID=abc+2Bdef" },
		{ S("ORCPT=rfc822;a@b.c"), 16, 1, "ORCPT=rfc822;a@b.c" },
		{ S("K=!~<>\"\\"), 16, 1, "K=!~<>\"\\" },
		{ S("K=\xc3\xa9t\xc3\xa9"), 16, 1, "K=\xc3\xa9t\xc3\xa9" },
		{ S("A B C"), 3, 3, "A|B|C" },
		{ S("A B C"), 2, -1, "" },
		{ S("A"), 0, -1, "" },
		{ S("-FOO=x"), 16, -1, "" },
		{ S("SIZE="), 16, -1, "" },
		{ S("SIZE= 1"), 16, -1, "" },
		{ S("=x"), 16, -1, "" },
		{ S("SIZE==1"), 16, -1, "" },
		{ S("SIZE=a=b"), 16, -1, "" },
		{ S("FOO_BAR"), 16, -1, "" },
		{ S("FOO.BAR=1"), 16, -1, "" },
		{ S("SIZE=1\tBODY=7BIT"), 16, -1, "" },
		{ S("K=\x7f"), 16, -1, "" },
		{ S("K=a\x01"), 16, -1, "" },
		{ S("K=a\0"), 16, -1, "" },
		{ S("K=\xff"), 16, -1, "" },
		{ S("K=\xc3"), 16, -1, "" },
		{ S("K\xc3\xa9=1"), 16, -1, "" },
		{ S("A B =x"), 16, -1, "" },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		struct smtp_param prm[16];
		char joined[256];
		int rc = smtp_parse_params(in, t[i].len, prm, t[i].max);

		CHECK_INT(i, rc, t[i].rc);
		if (rc > 0) {
			params_join(prm, rc, joined, sizeof(joined));
			CHECK_STR(i, joined, t[i].joined);
		}
		free(in);
	}
}

static void
test_mail_params(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		unsigned exts;
		int rc;
		const char *err;
		int has_size;
		uint64_t size;
		enum smtp_body body;
		int smtputf8;
	} t[] = {
		{ S(""), ALLEXT, 0, "", 0, 0, SMTP_BODY_NONE, 0 },
		{ S(""), 0, 0, "", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=0"), SMTP_EXT_SIZE, 0, "", 1, 0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=12345"), SMTP_EXT_SIZE, 0, "", 1, 12345,
		  SMTP_BODY_NONE, 0 },
		{ S("size=000123"), SMTP_EXT_SIZE, 0, "", 1, 123,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE=18446744073709551615"), SMTP_EXT_SIZE, 0, "", 1,
		  UINT64_MAX, SMTP_BODY_NONE, 0 },
		{ S("SIZE=00000000000000000001"), SMTP_EXT_SIZE, 0, "", 1, 1,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE=000000000000000000001"), SMTP_EXT_SIZE, 501,
		  "Bad SIZE value", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=18446744073709551616"), SMTP_EXT_SIZE, 501,
		  "Bad SIZE value", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=99999999999999999999"), SMTP_EXT_SIZE, 501,
		  "Bad SIZE value", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=-1"), SMTP_EXT_SIZE, 501, "Bad SIZE value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE=+1"), SMTP_EXT_SIZE, 501, "Bad SIZE value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE=1k"), SMTP_EXT_SIZE, 501, "Bad SIZE value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE=0x10"), SMTP_EXT_SIZE, 501, "Bad SIZE value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE"), SMTP_EXT_SIZE, 501, "Bad SIZE value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE=1 SIZE=2"), SMTP_EXT_SIZE, 501,
		  "Duplicate parameter SIZE", 1, 1, SMTP_BODY_NONE, 0 },
		{ S("SIZE=1 size=x"), SMTP_EXT_SIZE, 501,
		  "Duplicate parameter SIZE", 1, 1, SMTP_BODY_NONE, 0 },
		{ S("SIZE=1"), ALLEXT & ~SMTP_EXT_SIZE, 555,
		  "Unsupported parameter SIZE", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("size=x"), 0, 555, "Unsupported parameter size", 0, 0,
		  SMTP_BODY_NONE, 0 },
		/* BODY */
		{ S("BODY=7BIT"), SMTP_EXT_8BITMIME, 0, "", 0, 0,
		  SMTP_BODY_7BIT, 0 },
		{ S("body=7bit"), SMTP_EXT_8BITMIME, 0, "", 0, 0,
		  SMTP_BODY_7BIT, 0 },
		{ S("BODY=8BITMIME"), SMTP_EXT_8BITMIME, 0, "", 0, 0,
		  SMTP_BODY_8BITMIME, 0 },
		{ S("Body=8bitMime"), SMTP_EXT_8BITMIME, 0, "", 0, 0,
		  SMTP_BODY_8BITMIME, 0 },
		{ S("BODY=BINARYMIME"), SMTP_EXT_8BITMIME | SMTP_EXT_BINARYMIME,
		  0, "", 0, 0, SMTP_BODY_BINARYMIME, 0 },
		{ S("BODY=binarymime"), SMTP_EXT_BINARYMIME, 0, "", 0, 0,
		  SMTP_BODY_BINARYMIME, 0 },
		{ S("BODY=7BIT"), SMTP_EXT_BINARYMIME, 0, "", 0, 0,
		  SMTP_BODY_7BIT, 0 },
		{ S("BODY=BINARYMIME"), SMTP_EXT_8BITMIME, 555,
		  "Unsupported parameter BODY=BINARYMIME", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=8BITMIME"), SMTP_EXT_BINARYMIME, 555,
		  "Unsupported parameter BODY=8BITMIME", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=8BITMIME"), SMTP_EXT_SIZE | SMTP_EXT_SMTPUTF8, 555,
		  "Unsupported parameter BODY", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("BODY=7BIT"), 0, 555, "Unsupported parameter BODY", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=FOO"), ALLEXT, 501, "Bad BODY value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=8BIT"), ALLEXT, 501, "Bad BODY value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=7BITX"), ALLEXT, 501, "Bad BODY value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY"), ALLEXT, 501, "Bad BODY value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=7BIT BODY=8BITMIME"), ALLEXT, 501,
		  "Duplicate parameter BODY", 0, 0, SMTP_BODY_7BIT, 0 },
		{ S("BODY=7BIT BODY=7BIT"), ALLEXT, 501,
		  "Duplicate parameter BODY", 0, 0, SMTP_BODY_7BIT, 0 },
		/* SMTPUTF8 */
		{ S("SMTPUTF8"), SMTP_EXT_SMTPUTF8, 0, "", 0, 0,
		  SMTP_BODY_NONE, 1 },
		{ S("smtputf8"), SMTP_EXT_SMTPUTF8, 0, "", 0, 0,
		  SMTP_BODY_NONE, 1 },
		{ S("SMTPUTF8=yes"), SMTP_EXT_SMTPUTF8, 501,
		  "SMTPUTF8 takes no value", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("SMTPUTF8 SMTPUTF8"), SMTP_EXT_SMTPUTF8, 501,
		  "Duplicate parameter SMTPUTF8", 0, 0, SMTP_BODY_NONE, 1 },
		{ S("SMTPUTF8"), ALLEXT & ~SMTP_EXT_SMTPUTF8, 555,
		  "Unsupported parameter SMTPUTF8", 0, 0, SMTP_BODY_NONE, 0 },
		/* Unknown parameters. */
		{ S("FOO=bar"), ALLEXT, 555, "Unsupported parameter FOO", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("x-Custom"), ALLEXT, 555, "Unsupported parameter x-Custom",
		  0, 0, SMTP_BODY_NONE, 0 },
		{ S("RET=HDRS"), ALLEXT, 555, "Unsupported parameter RET", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZE2=1"), ALLEXT, 555, "Unsupported parameter SIZE2", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("SIZ=1"), ALLEXT, 555, "Unsupported parameter SIZ", 0, 0,
		  SMTP_BODY_NONE, 0 },
		/* Everything together; the first error wins. */
		{ S("SIZE=100 BODY=8BITMIME SMTPUTF8"), ALLEXT, 0, "", 1, 100,
		  SMTP_BODY_8BITMIME, 1 },
		{ S("smtputf8   body=binarymime  size=7  "), ALLEXT, 0, "", 1,
		  7, SMTP_BODY_BINARYMIME, 1 },
		{ S("SIZE=1 FOO"), ALLEXT, 555, "Unsupported parameter FOO", 1,
		  1, SMTP_BODY_NONE, 0 },
		{ S("FOO SIZE=x"), ALLEXT, 555, "Unsupported parameter FOO", 0,
		  0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=x FOO"), ALLEXT, 501, "Bad SIZE value", 0, 0,
		  SMTP_BODY_NONE, 0 },
		/* Syntax errors anywhere come first. */
		{ S("SIZE=1 =x"), ALLEXT, 501, "Bad parameter syntax", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("FOO SIZE=1 BAD_"), ALLEXT, 501, "Bad parameter syntax", 0,
		  0, SMTP_BODY_NONE, 0 },
		{ S("SIZE=1\tBODY=7BIT"), ALLEXT, 501, "Bad parameter syntax", 0,
		  0, SMTP_BODY_NONE, 0 },
		{ S("SIZE="), ALLEXT, 501, "Bad parameter syntax", 0, 0,
		  SMTP_BODY_NONE, 0 },
		{ S("BODY=\xff"), ALLEXT, 501, "Bad parameter syntax", 0, 0,
		  SMTP_BODY_NONE, 0 },
		/* SMTP_PARAMS_MAX */
		{ S("A B C D E F G H I J K L M N O P"), ALLEXT, 555,
		  "Unsupported parameter A", 0, 0, SMTP_BODY_NONE, 0 },
		{ S("A B C D E F G H I J K L M N O P Q"), ALLEXT, 501,
		  "Too many parameters", 0, 0, SMTP_BODY_NONE, 0 },
		/* The key in the reply is cut at 64 octets. */
		{ S("K123456789012345678901234567890123456789"
		    "0123456789012345678901234567890=1"), ALLEXT, 555,
		  "Unsupported parameter K12345678901234567890123456789012345"
		  "6789012345678901234567890123", 0, 0, SMTP_BODY_NONE, 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		struct smtp_mail_params mp;
		char err[128];
		int rc;

		memset(&mp, 0x5a, sizeof(mp));
		memset(err, 'Z', sizeof(err));
		rc = smtp_parse_mail_params(in, t[i].len, t[i].exts, &mp, err,
		                            sizeof(err));
		CHECK_INT(i, rc, t[i].rc);
		CHECK_STR(i, err, t[i].err);
		CHECK_INT(i, mp.has_size, t[i].has_size);
		if (mp.size != t[i].size)
			fail_msg("row %zu: size %llu", i,
			         (unsigned long long)mp.size);
		CHECK_INT(i, mp.body, t[i].body);
		CHECK_INT(i, mp.smtputf8, t[i].smtputf8);
		free(in);
	}
}

static void
test_mail_params_errbuf(void **state)
{
	struct smtp_mail_params mp;
	char err[8];

	/* A small buffer gets a truncated, NUL-terminated reason. */
	memset(err, 'Z', sizeof(err));
	assert_int_equal(smtp_parse_mail_params("FOO", 3, ALLEXT, &mp, err,
	                                        sizeof(err)), 555);
	assert_string_equal(err, "Unsuppo");
	/* No buffer at all. */
	assert_int_equal(smtp_parse_mail_params("SIZE=x", 6, ALLEXT, &mp, NULL,
	                                        0), 501);
	assert_int_equal(smtp_parse_mail_params("SIZE=9", 6, ALLEXT, &mp, NULL,
	                                        0), 0);
	assert_int_equal(mp.size, 9);
	assert_int_equal(smtp_parse_rcpt_params("X", 1, NULL, 0), 555);
	/* The range ends at len. */
	assert_int_equal(smtp_parse_mail_params("SIZE=12FOO", 7, ALLEXT, &mp,
	                                        err, sizeof(err)), 0);
	assert_int_equal(mp.size, 12);
}

static void
test_rcpt_params(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		int rc;
		const char *err;
	} t[] = {
		{ S(""), 0, "" },
		{ S("   "), 0, "" },
		{ S("NOTIFY=NEVER"), 555, "Unsupported parameter NOTIFY" },
		{ S("ORCPT=rfc822;a@b.c"), 555, "Unsupported parameter ORCPT" },
		{ S("SIZE=1"), 555, "Unsupported parameter SIZE" },
		{ S("smtputf8"), 555, "Unsupported parameter smtputf8" },
		{ S("A B"), 555, "Unsupported parameter A" },
		{ S("=x"), 501, "Bad parameter syntax" },
		{ S("NOTIFY="), 501, "Bad parameter syntax" },
		{ S("NOTIFY=NEVER ="), 501, "Bad parameter syntax" },
		{ S("A\tB"), 501, "Bad parameter syntax" },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		char err[128];
		int rc;

		memset(err, 'Z', sizeof(err));
		rc = smtp_parse_rcpt_params(in, t[i].len, err, sizeof(err));
		CHECK_INT(i, rc, t[i].rc);
		CHECK_STR(i, err, t[i].err);
		free(in);
	}
}

/* ---- BDAT, HELO -------------------------------------------------------- */

static void
test_bdat(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		int rc;
		uint64_t size;
		int last;
	} t[] = {
		{ S("0"), 0, 0, 0 },
		{ S("100"), 0, 100, 0 },
		{ S("100 LAST"), 0, 100, 1 },
		{ S("100 last"), 0, 100, 1 },
		{ S("100 LaSt"), 0, 100, 1 },
		{ S("100   LAST"), 0, 100, 1 },
		{ S("100 LAST  "), 0, 100, 1 },
		{ S("100  "), 0, 100, 0 },
		{ S("0 LAST"), 0, 0, 1 },
		{ S("000100"), 0, 100, 0 },
		{ S("00000000000000000000"), 0, 0, 0 },
		{ S("18446744073709551615 LAST"), 0, UINT64_MAX, 1 },
		{ S("18446744073709551616"), -1, 0, 0 },
		{ S("99999999999999999999"), -1, 0, 0 },
		{ S("000000000000000000001"), -1, 0, 0 },
		{ S(""), -1, 0, 0 },
		{ S(" "), -1, 0, 0 },
		{ S("LAST"), -1, 0, 0 },
		{ S(" 100"), -1, 0, 0 },
		{ S("100LAST"), -1, 0, 0 },
		{ S("100 LASTX"), -1, 0, 0 },
		{ S("100 LAST X"), -1, 0, 0 },
		{ S("100 LAS"), -1, 0, 0 },
		{ S("100 FIRST"), -1, 0, 0 },
		{ S("100\tLAST"), -1, 0, 0 },
		{ S("100 200"), -1, 0, 0 },
		{ S("-1"), -1, 0, 0 },
		{ S("+1"), -1, 0, 0 },
		{ S("1e3"), -1, 0, 0 },
		{ S("0x10"), -1, 0, 0 },
		{ S("1 LAST\0"), -1, 0, 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		uint64_t size = 777;
		int last = 7, rc;

		rc = smtp_parse_bdat(in, t[i].len, &size, &last);
		CHECK_INT(i, rc, t[i].rc);
		if (size != t[i].size)
			fail_msg("row %zu: size %llu", i,
			         (unsigned long long)size);
		CHECK_INT(i, last, t[i].last);
		free(in);
	}
	/* The range ends at len. */
	{
		uint64_t size;
		int last;

		assert_int_equal(smtp_parse_bdat("100 LAST", 3, &size, &last), 0);
		assert_int_equal(size, 100);
		assert_int_equal(last, 0);
		assert_int_equal(smtp_parse_bdat("100 LAST", 7, &size, &last),
		                 -1);
	}
}

static void
test_helo(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		size_t outlen;
		int rc;
		const char *out;
	} t[] = {
		{ S("mail.example.com"), 256, 0, "mail.example.com" },
		{ S("[192.0.2.1]"), 256, 0, "[192.0.2.1]" },
		{ S("[IPv6:2001:db8::1]"), 256, 0, "[IPv6:2001:db8::1]" },
		{ S("host   "), 256, 0, "host" },
		{ S("a"), 256, 0, "a" },
		{ S("!~"), 256, 0, "!~" },
		{ S("under_score"), 256, 0, "under_score" },
		{ S("host"), 5, 0, "host" },
		{ S("host"), 4, -1, "" },
		{ S("host"), 1, -1, "" },
		{ S(""), 256, -1, "" },
		{ S("   "), 256, -1, "" },
		{ S(" host"), 256, -1, "" },
		{ S("a b"), 256, -1, "" },
		{ S("host extra"), 256, -1, "" },
		{ S("a\tb"), 256, -1, "" },
		{ S("host\t"), 256, -1, "" },
		{ S("\x80host"), 256, -1, "" },
		{ S("h\xc3\xa9"), 256, -1, "" },
		{ S("host\x7f"), 256, -1, "" },
		{ S("host\0"), 256, -1, "" },
		{ S("host\r"), 256, -1, "" },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);
		char out[300];
		int rc;

		memset(out, 'Z', sizeof(out));
		rc = smtp_parse_helo(in, t[i].len, out, t[i].outlen);
		CHECK_INT(i, rc, t[i].rc);
		CHECK_STR(i, out, t[i].out);
		free(in);
	}
}

static void
test_helo_limits(void **state)
{
	char name[300], out[300], *in;

	/* 255 octets fit (in 256 bytes), 256 never do. */
	make_domain(name, sizeof(name), 255);
	in = dup_exact(name, 255);
	assert_int_equal(smtp_parse_helo(in, 255, out, sizeof(out)), 0);
	assert_string_equal(out, name);
	assert_int_equal(smtp_parse_helo(in, 255, out, 256), 0);
	assert_int_equal(smtp_parse_helo(in, 255, out, 255), -1);
	assert_string_equal(out, "");
	free(in);

	make_domain(name, sizeof(name), 256);
	in = dup_exact(name, 256);
	assert_int_equal(smtp_parse_helo(in, 256, out, sizeof(out)), -1);
	assert_string_equal(out, "");
	free(in);

	/* outlen 0: nothing is written. */
	out[0] = 'Z';
	assert_int_equal(smtp_parse_helo("a", 1, out, 0), -1);
	assert_int_equal(out[0], 'Z');
	/* The range ends at len. */
	assert_int_equal(smtp_parse_helo("host extra", 4, out, sizeof(out)), 0);
	assert_string_equal(out, "host");
}

/* ---- UTF-8 ------------------------------------------------------------- */

static void
test_utf8_table(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		int valid;
	} t[] = {
		{ S(""), 1 },
		{ S("abc"), 1 },
		{ S("\0"), 1 },
		{ S("\x7f"), 1 },
		{ S("\xc2\x80"), 1 },             /* U+0080 */
		{ S("\xc3\xa9"), 1 },
		{ S("\xdf\xbf"), 1 },             /* U+07FF */
		{ S("\xe0\xa0\x80"), 1 },         /* U+0800 */
		{ S("\xe2\x82\xac"), 1 },         /* EURO SIGN */
		{ S("\xed\x9f\xbf"), 1 },         /* U+D7FF */
		{ S("\xee\x80\x80"), 1 },         /* U+E000 */
		{ S("\xef\xbf\xbf"), 1 },         /* U+FFFF */
		{ S("\xf0\x90\x80\x80"), 1 },     /* U+10000 */
		{ S("\xf0\x9f\x98\x80"), 1 },
		{ S("\xf4\x8f\xbf\xbf"), 1 },     /* U+10FFFF */
		{ S("a\xc3\xa9z\xe2\x82\xac"), 1 },
		{ S("\x80"), 0 },
		{ S("\xbf"), 0 },
		{ S("a\x80"), 0 },
		{ S("\xc0\x80"), 0 },             /* overlong NUL */
		{ S("\xc0\xaf"), 0 },             /* overlong '/' */
		{ S("\xc1\xbf"), 0 },
		{ S("\xe0\x80\x80"), 0 },
		{ S("\xe0\x9f\xbf"), 0 },         /* overlong U+07FF */
		{ S("\xf0\x80\x80\x80"), 0 },
		{ S("\xf0\x8f\xbf\xbf"), 0 },     /* overlong U+FFFF */
		{ S("\xed\xa0\x80"), 0 },         /* U+D800 */
		{ S("\xed\xbf\xbf"), 0 },         /* U+DFFF */
		{ S("\xed\xa0\x80\xed\xb0\x80"), 0 },  /* CESU-8 pair */
		{ S("\xf4\x90\x80\x80"), 0 },     /* U+110000 */
		{ S("\xf5\x80\x80\x80"), 0 },
		{ S("\xf7\xbf\xbf\xbf"), 0 },
		{ S("\xf8\x88\x80\x80\x80"), 0 },
		{ S("\xfc\x84\x80\x80\x80\x80"), 0 },
		{ S("\xfe"), 0 },
		{ S("\xff"), 0 },
		{ S("\xc3"), 0 },
		{ S("\xe2\x82"), 0 },
		{ S("\xf0\x9f\x98"), 0 },
		{ S("a\xc3"), 0 },
		{ S("\xc3\x28"), 0 },
		{ S("\xc3\xc3\xa9"), 0 },
		{ S("\xe2\x28\xa1"), 0 },
		{ S("\xe2\x82\x28"), 0 },
		{ S("\xf0\x9f\x28\x80"), 0 },
		{ S("\xf0\x9f\x98\x28"), 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		char *in = dup_exact(t[i].in, t[i].len);

		CHECK_INT(i, smtp_utf8_valid(in, t[i].len), t[i].valid);
		free(in);
	}
	/* The range ends at len. */
	assert_int_equal(smtp_utf8_valid("\xc3\xa9", 1), 0);
	assert_int_equal(smtp_utf8_valid("a\xff", 1), 1);
}

static size_t
utf8_encode(uint32_t cp, unsigned char *b)
{
	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (unsigned char)(0xC0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (unsigned char)(0xE0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	b[0] = (unsigned char)(0xF0 | (cp >> 18));
	b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	b[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Every scalar value encodes to valid UTF-8; surrogates do not. */
static void
test_utf8_every_code_point(void **state)
{
	unsigned char b[4];
	uint32_t cp;

	for (cp = 0; cp <= 0x10FFFF; cp++) {
		size_t n = utf8_encode(cp, b);
		int want = !(cp >= 0xD800 && cp <= 0xDFFF);

		if (smtp_utf8_valid((const char *)b, n) != want)
			fail_msg("U+%04X: got %d", (unsigned)cp, !want);
		/* Every proper prefix of a multi-byte sequence is truncated. */
		if (n > 1 && smtp_utf8_valid((const char *)b, n - 1))
			fail_msg("U+%04X: prefix valid", (unsigned)cp);
	}
	/* Overlong forms of every 1- and 2-byte code point are rejected. */
	for (cp = 0; cp < 0x800; cp++) {
		unsigned char o[4] = {
			(unsigned char)(0xE0 | (cp >> 12)),
			(unsigned char)(0x80 | ((cp >> 6) & 0x3F)),
			(unsigned char)(0x80 | (cp & 0x3F)), 0 };

		assert_int_equal(smtp_utf8_valid((const char *)o, 3), 0);
		if (cp < 0x80) {
			o[0] = (unsigned char)(0xC0 | (cp >> 6));
			o[1] = (unsigned char)(0x80 | (cp & 0x3F));
			assert_int_equal(smtp_utf8_valid((const char *)o, 2), 0);
		}
	}
	/* Beyond U+10FFFF, up to what a 4-byte form can hold. */
	for (cp = 0x110000; cp < 0x200000; cp += 0x101) {
		size_t n = utf8_encode(cp, b);

		assert_int_equal(n, 4);
		assert_int_equal(smtp_utf8_valid((const char *)b, n), 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_table),
		cmocka_unit_test(test_command_respects_len),
		cmocka_unit_test(test_verb_table),
		cmocka_unit_test(test_skip_prefix),
		cmocka_unit_test(test_path_good),
		cmocka_unit_test(test_path_bad),
		cmocka_unit_test(test_path_respects_len),
		cmocka_unit_test(test_path_limits),
		cmocka_unit_test(test_params_split),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_mail_params_errbuf),
		cmocka_unit_test(test_rcpt_params),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_helo_limits),
		cmocka_unit_test(test_utf8_table),
		cmocka_unit_test(test_utf8_every_code_point),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
