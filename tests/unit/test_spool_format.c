/*
 * test_spool_format.c - unit tests for the spool file envelope and trailer.
 *
 * The format is on disk and survives upgrades, so the tests pin the exact
 * bytes serialize writes, then check that parse reads back an equal struct,
 * that serialize refuses what parse would refuse, and that every malformed
 * trailer and envelope is rejected with a reason naming the line. Run under
 * valgrind, they also check that every error path frees what it allocated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "spool_format.h"

#define B(s) (s), (sizeof(s) - 1)

static const char *
nz(const char *s)
{
	return s != NULL ? s : "";
}

/* Two envelopes are equal when every field reads the same ("" == NULL). */
static void
assert_env_equal(const struct spool_env *a, const struct spool_env *b)
{
	size_t i;

	assert_string_equal(a->id, b->id);
	assert_true(a->time_ms == b->time_ms);
	assert_string_equal(nz(a->sender), nz(b->sender));
	assert_string_equal(nz(a->helo), nz(b->helo));
	assert_string_equal(nz(a->client), nz(b->client));
	assert_string_equal(nz(a->proto), nz(b->proto));
	assert_string_equal(nz(a->tls), nz(b->tls));
	assert_int_equal(!!a->body_8bit, !!b->body_8bit);
	assert_int_equal(!!a->smtputf8, !!b->smtputf8);
	assert_string_equal(nz(a->msgid), nz(b->msgid));
	assert_int_equal(a->nrcpt, b->nrcpt);
	for (i = 0; i < a->nrcpt; i++)
		assert_string_equal(nz(a->rcpt[i]), nz(b->rcpt[i]));
}

/*
 * Serialize e, read the trailer back as a reader would (the last
 * SPOOL_TRAILER_MAX octets of a file with content_size octets of content
 * in front), parse the envelope, and compare.
 */
static void
round_trip(const struct spool_env *e, uint64_t content_size)
{
	char *buf = NULL, err[128];
	size_t len = 0, tlen;
	uint64_t csize = 1, esize = 1;
	struct spool_env got;

	assert_int_equal(spool_env_serialize(e, content_size, &buf, &len), 0);
	assert_non_null(buf);
	tlen = len < SPOOL_TRAILER_MAX ? len : SPOOL_TRAILER_MAX;
	assert_int_equal(spool_trailer_parse(buf + len - tlen, tlen,
			     content_size + len, &csize, &esize),
	    0);
	assert_true(csize == content_size);
	assert_true(esize < len);

	memset(&got, 0xa5, sizeof(got));
	if (spool_env_parse(buf, (size_t)esize, &got, err, sizeof(err)) != 0)
		fail_msg("parse: %s", err);
	assert_env_equal(e, &got);
	assert_true(got.content_size == 0);
	/* Every string is owned and non-NULL after a parse. */
	assert_non_null(got.sender);
	assert_non_null(got.helo);
	assert_non_null(got.client);
	assert_non_null(got.proto);
	assert_non_null(got.tls);
	assert_non_null(got.msgid);
	spool_env_free(&got);
	free(buf);
}

static void
test_round_trip_all_fields(void **state)
{
	static const char expect[] = "id 1vQx2a-0000Ab-7F\n"
				     "time 1764417600123\n"
				     "sender alice@example.com\n"
				     "helo client.example\n"
				     "client 192.0.2.5\n"
				     "proto esmtps\n"
				     "tls TLS1.3:TLS_AES_256_GCM_SHA384:256\n"
				     "body 8bitmime\n"
				     "smtputf8 1\n"
				     "msgid <20261129.1@client.example>\n"
				     "rcpt bob@customer.example\n"
				     "rcpt carol@customer.example\n"
				     "rcpt dave@other.example\n"
				     "PETREL-SPOOL 1 2048 289\n";
	char *rcpt[] = {"bob@customer.example", "carol@customer.example",
	    "dave@other.example"};
	struct spool_env e = {
	    .id = "1vQx2a-0000Ab-7F",
	    .time_ms = 1764417600123ULL,
	    .sender = "alice@example.com",
	    .helo = "client.example",
	    .client = "192.0.2.5",
	    .proto = "esmtps",
	    .tls = "TLS1.3:TLS_AES_256_GCM_SHA384:256",
	    .body_8bit = 1,
	    .smtputf8 = 1,
	    .msgid = "<20261129.1@client.example>",
	    .rcpt = rcpt,
	    .nrcpt = 3,
	};
	char *buf;
	size_t len;

	assert_int_equal(spool_env_serialize(&e, 2048, &buf, &len), 0);
	assert_int_equal(len, sizeof(expect) - 1);
	assert_memory_equal(buf, expect, len);
	/* The trailer's env_size is the length of the lines before it. */
	assert_int_equal(
	    strlen(expect) - strlen("PETREL-SPOOL 1 2048 289\n"), 289);
	free(buf);
	round_trip(&e, 2048);
	round_trip(&e, 0);
	round_trip(&e, UINT64_MAX - 1000);
}

static void
test_round_trip_empty_sender(void **state)
{
	static const char expect[] = "id A\n"
				     "time 0\n"
				     "sender \n"
				     "helo \n"
				     "client \n"
				     "proto \n"
				     "tls \n"
				     "body 7bit\n"
				     "smtputf8 0\n"
				     "msgid \n"
				     "rcpt postmaster\n"
				     "PETREL-SPOOL 1 0 90\n";
	char *rcpt[] = {"postmaster"};
	struct spool_env e = {.id = "A", .rcpt = rcpt, .nrcpt = 1};
	char *buf;
	size_t len;

	/* NULL strings serialize as empty values, "key " then newline. */
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), 0);
	assert_int_equal(len, sizeof(expect) - 1);
	assert_memory_equal(buf, expect, len);
	free(buf);
	round_trip(&e, 0);

	e.sender = "";
	e.helo = "";
	round_trip(&e, 7);
}

static void
test_round_trip_many_rcpts(void **state)
{
	size_t n = SPOOL_MAX_RCPTS, i;
	char **rcpt = calloc(n, sizeof(*rcpt));
	struct spool_env e = {.id = "many-RCPTS-0123456789abcdefghijk"};
	char *buf;
	size_t len;

	assert_int_equal(strlen(e.id), SPOOL_ID_MAX);
	assert_non_null(rcpt);
	for (i = 0; i < n; i++) {
		rcpt[i] = malloc(32);
		assert_non_null(rcpt[i]);
		snprintf(rcpt[i], 32, "user%zu@example.org", i);
	}
	e.rcpt = rcpt;
	e.time_ms = UINT64_MAX;
	e.nrcpt = 1000;
	round_trip(&e, 123456789);
	e.nrcpt = n;
	round_trip(&e, 1);
	/* One more than the limit is refused. */
	e.nrcpt = n + 1;
	assert_int_equal(spool_env_serialize(&e, 1, &buf, &len), -1);
	assert_null(buf);
	for (i = 0; i < n; i++)
		free(rcpt[i]);
	free(rcpt);
}

static void
test_round_trip_spaces_utf8(void **state)
{
	char *rcpt[] = {("j\xc3\xb6rg@b\xc3\xbc"
			 "cher.example"),
	    " lead space", "trail space ", "two  spaces", ""};
	struct spool_env e = {
	    .id = "x-1",
	    .time_ms = 1,
	    .sender = "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.cn",
	    .helo = "my host  name ",
	    .client = " ",
	    .proto = "utf8esmtps",
	    .tls = "TLS1.2:ECDHE RSA:128",
	    .smtputf8 = 1,
	    .msgid = "  <a b>  ",
	    .rcpt = rcpt,
	    .nrcpt = 5,
	};

	round_trip(&e, 99);
}

static void
test_serialize_refuses(void **state)
{
	char *rcpt[] = {"a@b"};
	char *bad_rcpt[] = {"a@b", "c\n@d"};
	struct spool_env good = {.id = "Q1", .rcpt = rcpt, .nrcpt = 1};
	struct spool_env e;
	char *buf = (char *)1;
	size_t len = 1;

	assert_int_equal(spool_env_serialize(&good, 0, &buf, &len), 0);
	free(buf);

#define REFUSE(field, value)                                                   \
	do {                                                                   \
		e = good;                                                      \
		e.field = value;                                               \
		buf = (char *)1;                                               \
		assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);  \
		assert_null(buf);                                              \
		assert_int_equal(len, 0);                                      \
	} while (0)

	REFUSE(sender, "a\r@b");
	REFUSE(sender, "a@b\n");
	REFUSE(helo, "\r");
	REFUSE(client, "1.2.3.4\nrcpt evil@x");
	REFUSE(proto, "smtp\r\n");
	REFUSE(tls, "x\ny");
	REFUSE(msgid, "<a>\r");
	REFUSE(nrcpt, 0);
	REFUSE(rcpt, NULL);
#undef REFUSE
	e = good;
	e.rcpt = bad_rcpt;
	e.nrcpt = 2;
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);
	assert_null(buf);

	/* Bad ids: empty, too long (no NUL in the array), bad characters. */
	e = good;
	e.id[0] = '\0';
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);
	memset(e.id, 'a', sizeof(e.id));
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);
	snprintf(e.id, sizeof(e.id), "a b");
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);
	snprintf(e.id, sizeof(e.id), "a_b");
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);
	snprintf(e.id, sizeof(e.id), "../x");
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), -1);
	/* SPOOL_ID_MAX characters is the longest id. */
	memset(e.id, 'Z', SPOOL_ID_MAX);
	e.id[SPOOL_ID_MAX] = '\0';
	assert_int_equal(spool_env_serialize(&e, 0, &buf, &len), 0);
	free(buf);
}

/* ------------------------------------------------------------------ */
/* Trailer                                                             */
/* ------------------------------------------------------------------ */

struct trailer_case {
	const char *tail;
	size_t tlen;
	uint64_t file_size;
	int ok;
	uint64_t csize, esize;
};

/* clang-format off */
static const struct trailer_case trailer_cases[] = {
	/* good */
	{ B("PETREL-SPOOL 1 0 0\n"), 19, 1, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5\n"), 35, 1, 10, 5 },
	{ B("rcpt a\nPETREL-SPOOL 1 10 7\n"), 37, 1, 10, 7 },
	{ B("\nPETREL-SPOOL 1 1000000 90\n"), 1000000 + 90 + 26, 1, 1000000,
	    90 },
	{ B("PETREL-SPOOL 1 18446744073709551000 100\n"),
	    18446744073709551140ULL, 1, 18446744073709551000ULL, 100 },
	/* wrong arithmetic */
	{ B("PETREL-SPOOL 1 10 5\n"), 34, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 0 0\n"), 0, 0, 0, 0 },
	/* leading zeros, signs, blanks */
	{ B("PETREL-SPOOL 1 010 5\n"), 35, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 05\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 00 5\n"), 25, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 +10 5\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 -1 5\n"), 35, 0, 0, 0 },
	{ B("PETREL-SPOOL 1  10 5\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10  5\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5 \n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10\t5\n"), 35, 0, 0, 0 },
	/* garbage, wrong version or magic */
	{ B("PETREL-SPOOL 1 1x 5\n"), 35, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5x\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 2 10 5\n"), 35, 0, 0, 0 },
	{ B("PETREL-SPOOL 10 10 5\n"), 36, 0, 0, 0 },
	{ B("petrel-spool 1 10 5\n"), 35, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10\n"), 28, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5 6\n"), 37, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 \n"), 16, 0, 0, 0 },
	{ B("xPETREL-SPOOL 1 10 5\n"), 36, 0, 0, 0 },
	{ B("a PETREL-SPOOL 1 10 5\n"), 37, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5\r\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5\n\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 5\0\n"), 36, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 1\0 5\n"), 35, 0, 0, 0 },
	{ B(""), 0, 0, 0, 0 },
	{ B("\n"), 1, 0, 0, 0 },
	/* truncated: no final newline, or cut inside the line */
	{ B("PETREL-SPOOL 1 10 5"), 34, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 10 "), 33, 0, 0, 0 },
	{ B("SPOOL 1 10 5\n"), 28, 0, 0, 0 },
	{ B("1 10 5\n"), 22, 0, 0, 0 },
	/* overflow */
	{ B("PETREL-SPOOL 1 18446744073709551615 0\n"), UINT64_MAX, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 18446744073709551615 1\n"), 37, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 18446744073709551616 0\n"), 37, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 1 18446744073709551615\n"), 37, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 100000000000000000000 0\n"), 39, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 9223372036854775808 9223372036854775808\n"),
	    54, 0, 0, 0 },
	{ B("PETREL-SPOOL 1 18446744073709551615 18446744073709551615\n"),
	    56, 0, 0, 0 },
};
/* clang-format on */

static void
test_trailer_table(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(trailer_cases) / sizeof(trailer_cases[0]); i++) {
		const struct trailer_case *c = &trailer_cases[i];
		uint64_t cs = 42, es = 42;
		int rc;

		rc = spool_trailer_parse(
		    c->tail, c->tlen, c->file_size, &cs, &es);
		if (rc != (c->ok ? 0 : -1))
			fail_msg("trailer case %zu \"%.*s\": rc %d", i,
			    (int)c->tlen, c->tail, rc);
		if (c->ok) {
			assert_true(cs == c->csize);
			assert_true(es == c->esize);
		} else {
			/* Outputs untouched on failure. */
			assert_true(cs == 42 && es == 42);
		}
	}
}

/* The tail is the last 64 octets of a longer file; and bad tlen values. */
static void
test_trailer_tail_window(void **state)
{
	char file[256];
	const char *tr = "PETREL-SPOOL 1 100 81\n";
	size_t tl = strlen(tr);
	uint64_t cs, es;

	memset(file, 'c', 100);
	memset(file + 100, 'e', 80);
	file[179] = '\n';
	memcpy(file + 180, tr, tl);
	assert_int_equal(
	    spool_trailer_parse(file + 180 + tl - 64, 64, 180 + tl, &cs, &es),
	    -1); /* env_size says 81, not 80 */

	tr = "PETREL-SPOOL 1 100 80\n";
	memcpy(file + 180, tr, tl);
	assert_int_equal(
	    spool_trailer_parse(file + 180 + tl - 64, 64, 180 + tl, &cs, &es),
	    0);
	assert_true(cs == 100 && es == 80);
	/* A longer tail than needed looks only at the last 64 octets. */
	assert_int_equal(
	    spool_trailer_parse(file, 180 + tl, 180 + tl, &cs, &es), 0);
	assert_true(cs == 100 && es == 80);
	/* A tail longer than the file is a caller error. */
	assert_int_equal(
	    spool_trailer_parse(file + 180, tl, tl - 1, &cs, &es), -1);
	/* A tail that starts mid-line cannot make a trailer out of it. */
	file[179] = 'e';
	assert_int_equal(
	    spool_trailer_parse(file + 180, tl, 180 + tl, &cs, &es), 0);
	assert_int_equal(
	    spool_trailer_parse(file + 180 + tl - 64, 64, 180 + tl, &cs, &es),
	    -1);
}

/* ------------------------------------------------------------------ */
/* Envelope parse                                                      */
/* ------------------------------------------------------------------ */

static void
test_parse_lenient_parts(void **state)
{
	static const char env[] = "rcpt first\n"
				  "future-key some value\n"
				  "x\n"
				  "sender\n" /* key alone: empty value */
				  "time 5\n"
				  "id abc\n"
				  "helo\n"
				  "rcpt second value\n";
	struct spool_env e;
	char err[128];

	memset(&e, 0x5a, sizeof(e));
	if (spool_env_parse(B(env), &e, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(e.id, "abc");
	assert_true(e.time_ms == 5);
	assert_string_equal(e.sender, "");
	assert_string_equal(e.helo, "");
	assert_string_equal(e.client, "");
	assert_string_equal(e.tls, "");
	assert_string_equal(e.msgid, "");
	assert_int_equal(e.body_8bit, 0);
	assert_int_equal(e.smtputf8, 0);
	assert_int_equal(e.nrcpt, 2);
	assert_string_equal(e.rcpt[0], "first");
	assert_string_equal(e.rcpt[1], "second value");
	spool_env_free(&e);
	/* Freed and zeroed; freeing again is harmless. */
	assert_null(e.sender);
	assert_null(e.rcpt);
	assert_int_equal(e.nrcpt, 0);
	assert_int_equal(e.id[0], '\0');
	spool_env_free(&e);
	spool_env_free(NULL);

	/* err may be NULL. */
	assert_int_equal(spool_env_parse(B("id a\n"), &e, NULL, 0), -1);
	assert_int_equal(spool_env_parse(B(env), &e, NULL, 0), 0);
	spool_env_free(&e);
}

struct perr_case {
	const char *env;
	size_t len;
	const char *err;
};

#define BASE "id Q\ntime 1\nsender a@b\n"

/* clang-format off */
static const struct perr_case perr_cases[] = {
	/* missing required keys */
	{ B("time 1\nsender a\nrcpt b\n"), "line 4: end of envelope, "
	    "missing id" },
	{ B("id Q\nsender a\nrcpt b\n"), "line 4: end of envelope, "
	    "missing time" },
	{ B("id Q\ntime 1\nrcpt b\n"), "line 4: end of envelope, "
	    "missing sender" },
	{ B(BASE), "line 4: end of envelope, missing rcpt" },
	{ B(""), "line 1: end of envelope, missing id" },
	/* duplicates */
	{ B(BASE "id R\nrcpt x\n"), "line 4: duplicate id" },
	{ B(BASE "rcpt x\ntime 2\n"), "line 5: duplicate time" },
	{ B(BASE "sender \nrcpt x\n"), "line 4: duplicate sender" },
	{ B(BASE "helo a\nhelo a\nrcpt x\n"), "line 5: duplicate helo" },
	{ B(BASE "client a\nclient\nrcpt x\n"), "line 5: duplicate client" },
	{ B(BASE "proto a\nproto b\nrcpt x\n"), "line 5: duplicate proto" },
	{ B(BASE "tls a\ntls b\nrcpt x\n"), "line 5: duplicate tls" },
	{ B(BASE "body 7bit\nbody 7bit\nrcpt x\n"), "line 5: duplicate body" },
	{ B(BASE "smtputf8 0\nsmtputf8 1\nrcpt x\n"),
	    "line 5: duplicate smtputf8" },
	{ B(BASE "msgid a\nmsgid a\nrcpt x\n"), "line 5: duplicate msgid" },
	/* bad values */
	{ B("id \ntime 1\n"), "line 1: bad id value" },
	{ B("id\n"), "line 1: bad id value" },
	{ B("id a b\n"), "line 1: bad id value" },
	{ B("id a_b\n"), "line 1: bad id value" },
	{ B("id ../etc\n"), "line 1: bad id value" },
	{ B("id 0123456789abcdef0123456789abcdefX\n"), "line 1: bad id value" },
	{ B("id Q\nsender a\ntime 0x1\n"), "line 3: bad time value" },
	{ B("id Q\ntime 01\n"), "line 2: bad time value" },
	{ B("id Q\ntime \n"), "line 2: bad time value" },
	{ B("id Q\ntime -1\n"), "line 2: bad time value" },
	{ B("id Q\ntime  1\n"), "line 2: bad time value" },
	{ B("id Q\ntime 18446744073709551616\n"), "line 2: bad time value" },
	{ B(BASE "body 8BITMIME\n"), "line 4: bad body value" },
	{ B(BASE "body binarymime\n"), "line 4: bad body value" },
	{ B(BASE "body\n"), "line 4: bad body value" },
	{ B(BASE "smtputf8 2\n"), "line 4: bad smtputf8 value" },
	{ B(BASE "smtputf8 10\n"), "line 4: bad smtputf8 value" },
	{ B(BASE "smtputf8\n"), "line 4: bad smtputf8 value" },
	/* bad lines */
	{ B(BASE "rcpt x"), "line 4: no newline at end" },
	{ B(BASE "rcpt x\0y\n"), "line 4: NUL byte" },
	{ B(BASE "rcpt x\r\n"), "line 4: CR byte" },
	{ B(BASE "unknown\rkey\nrcpt x\n"), "line 4: CR byte" },
	{ B(BASE "\nrcpt x\n"), "line 4: empty key" },
	{ B(BASE " rcpt x\n"), "line 4: empty key" },
};
/* clang-format on */

static void
test_parse_errors(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(perr_cases) / sizeof(perr_cases[0]); i++) {
		const struct perr_case *c = &perr_cases[i];
		struct spool_env e, zero;
		char err[128];

		memset(&e, 0x5a, sizeof(e));
		memset(&zero, 0, sizeof(zero));
		err[0] = '\0';
		if (spool_env_parse(c->env, c->len, &e, err, sizeof(err)) != -1)
			fail_msg(
			    "parse error case %zu (%s) succeeded", i, c->err);
		if (strcmp(err, c->err) != 0)
			fail_msg("parse error case %zu: got \"%s\", want "
				 "\"%s\"",
			    i, err, c->err);
		/* Nothing left allocated, the struct zeroed. */
		assert_memory_equal(&e, &zero, sizeof(e));
	}
}

/* Partial work is freed on errors found after allocations. */
static void
test_parse_error_after_allocations(void **state)
{
	static const char env[] =
	    "id Q\ntime 1\nsender s\nhelo h\nclient c\n"
	    "proto p\ntls t\nmsgid m\nrcpt 1\nrcpt 2\nrcpt 3\nrcpt 4\n"
	    "rcpt 5\nrcpt 6\nrcpt 7\nrcpt 8\nrcpt 9\nhelo again\n";
	struct spool_env e;
	char err[8];

	/* A short err buffer is truncated, never overrun. */
	assert_int_equal(spool_env_parse(B(env), &e, err, sizeof(err)), -1);
	assert_string_equal(err, "line 18");
	assert_null(e.sender);
	assert_null(e.rcpt);
}

static void
test_parse_too_many_rcpts(void **state)
{
	size_t n = SPOOL_MAX_RCPTS + 1, i, len;
	char *buf, *p, err[128];
	struct spool_env e;

	buf = malloc(32 + n * 7);
	assert_non_null(buf);
	p = buf;
	memcpy(p, B(BASE));
	p += sizeof(BASE) - 1;
	for (i = 0; i < n; i++) {
		memcpy(p, "rcpt x\n", 7);
		p += 7;
	}
	len = (size_t)(p - buf);
	assert_int_equal(spool_env_parse(buf, len, &e, err, sizeof(err)), -1);
	assert_string_equal(err, "line 100004: more than 100000 recipients");
	/* Exactly the limit is fine. */
	assert_int_equal(
	    spool_env_parse(buf, len - 7, &e, err, sizeof(err)), 0);
	assert_int_equal(e.nrcpt, SPOOL_MAX_RCPTS);
	spool_env_free(&e);
	free(buf);
}

/* Journal lines (docs/internals/QUEUE.md), good and bad. */
static void
test_journal_parse(void **state)
{
	static const struct {
		const char *line;
		int rc;
		char kind;
		uint64_t idx;
		const char *why;
	} t[] = {
		{ "D 0 1795950372499\n", 0, 'D', 0, NULL },
		{ "D 12 1795950372499", 0, 'D', 12, NULL },
		{ "F 3 1795950372499 550 5.1.1 no such user\n", 0, 'F', 3,
		  "550 5.1.1 no such user" },
		{ "H 0 1\n", 0, 'H', 0, NULL },
		{ "U 0 1\n", 0, 'U', 0, NULL },
		{ "X 0 1\n", 0, 'X', 0, NULL },
		{ "D 1\n", -1, 0, 0, NULL },        /* torn: no time */
		{ "D 1", -1, 0, 0, NULL },
		{ "Q 1 2\n", -1, 0, 0, NULL },      /* unknown kind */
		{ "D x 2\n", -1, 0, 0, NULL },
		{ "D -1 2\n", -1, 0, 0, NULL },
		{ "D 1 2x\n", -1, 0, 0, NULL },
		{ "D  1 2\n", -1, 0, 0, NULL },
		{ "", -1, 0, 0, NULL },
		{ "D", -1, 0, 0, NULL },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		const char *why = (const char *)1;
		size_t whylen = 99;
		uint64_t idx = 77;
		char kind = 0;
		int rc = spool_journal_parse(t[i].line, strlen(t[i].line), &kind,
		    &idx, &why, &whylen);

		assert_int_equal(rc, t[i].rc);
		if (rc != 0)
			continue;
		assert_int_equal(kind, t[i].kind);
		assert_int_equal(idx, t[i].idx);
		if (t[i].why == NULL) {
			assert_null(why);
			assert_int_equal(whylen, 0);
		} else {
			assert_int_equal(whylen, strlen(t[i].why));
			assert_memory_equal(why, t[i].why, whylen);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_all_fields),
	    cmocka_unit_test(test_round_trip_empty_sender),
	    cmocka_unit_test(test_round_trip_many_rcpts),
	    cmocka_unit_test(test_round_trip_spaces_utf8),
	    cmocka_unit_test(test_serialize_refuses),
	    cmocka_unit_test(test_trailer_table),
	    cmocka_unit_test(test_trailer_tail_window),
	    cmocka_unit_test(test_parse_lenient_parts),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_parse_error_after_allocations),
	    cmocka_unit_test(test_parse_too_many_rcpts),
	    cmocka_unit_test(test_journal_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
