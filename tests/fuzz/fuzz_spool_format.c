/*
 * fuzz_spool_format.c - libFuzzer target for the spool envelope and trailer.
 *
 * The input is treated as a whole spool file: spool_trailer_parse() runs on
 * its last SPOOL_TRAILER_MAX octets and, when it accepts, spool_env_parse()
 * runs on the envelope the trailer points at; spool_env_parse() also runs
 * on the whole input. Every envelope that parses must serialize, its
 * trailer must parse back with the same sizes, the envelope must re-parse
 * to an equal struct, and serializing that must give the same bytes.
 * Anything else aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool_format.h"

static void
check(int ok)
{
	if (!ok)
		abort();
}

static int
str_eq(const char *a, const char *b)
{
	return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

static void
env_equal(const struct spool_env *a, const struct spool_env *b)
{
	size_t i;

	check(strcmp(a->id, b->id) == 0);
	check(a->time_ms == b->time_ms);
	check(str_eq(a->sender, b->sender));
	check(str_eq(a->helo, b->helo));
	check(str_eq(a->client, b->client));
	check(str_eq(a->proto, b->proto));
	check(str_eq(a->tls, b->tls));
	check(a->body_8bit == b->body_8bit);
	check(a->smtputf8 == b->smtputf8);
	check(str_eq(a->msgid, b->msgid));
	check(a->nrcpt == b->nrcpt);
	for (i = 0; i < a->nrcpt; i++)
		check(str_eq(a->rcpt[i], b->rcpt[i]));
}

/* e parsed: it must serialize, and survive the round trip exactly. */
static void
round_trip(const struct spool_env *e, uint64_t content_size)
{
	char *buf, *buf2, err[128];
	size_t len, len2, tlen;
	uint64_t cs, es;
	struct spool_env e2;

	check(spool_env_serialize(e, content_size, &buf, &len) == 0);
	tlen = len < SPOOL_TRAILER_MAX ? len : SPOOL_TRAILER_MAX;
	check(spool_trailer_parse(
		  buf + len - tlen, tlen, content_size + len, &cs, &es) == 0);
	check(cs == content_size);
	check(es < len);
	check(spool_env_parse(buf, (size_t)es, &e2, err, sizeof(err)) == 0);
	env_equal(e, &e2);
	check(spool_env_serialize(&e2, content_size, &buf2, &len2) == 0);
	check(len2 == len && memcmp(buf, buf2, len) == 0);
	spool_env_free(&e2);
	free(buf);
	free(buf2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	size_t tlen = size < SPOOL_TRAILER_MAX ? size : SPOOL_TRAILER_MAX;
	uint64_t cs = 0, es = 0;
	struct spool_env e;
	char err[128];

	if (spool_trailer_parse(in + size - tlen, tlen, size, &cs, &es) == 0) {
		check(cs <= size && es <= size - cs);
		memset(&e, 0, sizeof(e));
		if (spool_env_parse(
			in + cs, (size_t)es, &e, err, sizeof(err)) == 0) {
			round_trip(&e, cs);
			spool_env_free(&e);
		}
	}

	if (spool_env_parse(in, size, &e, err, sizeof(err)) == 0) {
		check(e.nrcpt >= 1 && e.nrcpt <= SPOOL_MAX_RCPTS);
		check(strlen(e.id) >= 1 && strlen(e.id) <= SPOOL_ID_MAX);
		round_trip(&e, size);
		spool_env_free(&e);
	} else {
		/* A failed parse leaves nothing behind, and says where. */
		static const struct spool_env zero;

		check(memcmp(&e, &zero, sizeof(e)) == 0);
		check(strncmp(err, "line ", 5) == 0);
	}
	return 0;
}
