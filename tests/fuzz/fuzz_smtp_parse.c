/*
 * fuzz_smtp_parse.c - libFuzzer target for src/smtp_parse.c.
 *
 * The input is one command line. It is copied into a heap buffer of exactly
 * its size, so ASan reports any read past the end (the parsers must never
 * rely on a NUL). The line goes through every parser the server would run
 * on it, and the invariants each result promises are checked with abort():
 * output pointers stay inside the input, addr is NUL-terminated and within
 * the RFC 5321 limits, '@' sits at p->at, and a parsed path parses again to
 * the same address. smtp_utf8_valid is checked against an independent
 * decoder.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       src/smtp_parse.c tests/fuzz/fuzz_smtp_parse.c -o fuzz_smtp_parse
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "invariant failed: %s (line %d)\n", \
			        #cond, __LINE__);                           \
			abort();                                            \
		}                                                           \
	} while (0)

/* [p, p + n) lies within [s, s + len). */
static int
within(const char *p, size_t n, const char *s, size_t len)
{
	return p >= s && n <= len && (size_t)(p - s) <= len - n;
}

/* Independent UTF-8 check: decode, then judge the code point. */
static int
ref_utf8_valid(const unsigned char *s, size_t len)
{
	static const uint32_t min[] = { 0, 0x80, 0x800, 0x10000 };
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n, k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			n = 1;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			n = 2;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (len - i - 1 < n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += n + 1;
	}
	return 1;
}

static void
check_path(const char *s, size_t len, int flags)
{
	struct smtp_path p, again;
	const char *rest = NULL;
	size_t restlen = 0, alen, i;
	char buf[SMTP_PATH_MAX + 1];
	int has8 = 0;
	enum smtp_path_status st;

	st = smtp_parse_path(s, len, flags, &p, &rest, &restlen);
	CHECK(st == SMTP_PATH_OK || st == SMTP_PATH_SYNTAX ||
	      st == SMTP_PATH_TOO_LONG || st == SMTP_PATH_BAD_UTF8);
	alen = strnlen(p.addr, sizeof(p.addr));
	CHECK(alen < sizeof(p.addr));
	if (st != SMTP_PATH_OK) {
		CHECK(alen == 0 && p.at == 0 && !p.null && !p.postmaster);
		return;
	}

	CHECK(len > 0 && s[0] == '<');
	CHECK(within(rest, restlen, s, len));
	CHECK(rest + restlen == s + len);
	CHECK(restlen == 0 || rest[0] != ' ');
	CHECK(alen + 2 <= SMTP_PATH_MAX);
	CHECK(smtp_utf8_valid(p.addr, alen));
	for (i = 0; i < alen; i++)
		if ((unsigned char)p.addr[i] >= 0x80)
			has8 = 1;
	CHECK(p.utf8 == has8);

	if (p.null) {
		CHECK(flags & SMTP_PATH_ALLOW_NULL);
		CHECK(alen == 0 && p.at == 0 && !p.postmaster);
		return;
	}
	if (p.postmaster) {
		CHECK(flags & SMTP_PATH_ALLOW_POSTMASTER);
		CHECK(strcmp(p.addr, "postmaster") == 0 && p.at == 0);
		return;
	}
	CHECK(p.at > 0 && p.at < alen && p.addr[p.at] == '@');
	CHECK(p.at <= SMTP_LOCAL_MAX);
	CHECK(alen - p.at - 1 <= SMTP_DOMAIN_MAX && alen - p.at - 1 > 0);
	/* The domain never holds an '@'. */
	CHECK(memchr(p.addr + p.at + 1, '@', alen - p.at - 1) == NULL);

	/* "<" addr ">" is a path for the same address. */
	buf[0] = '<';
	memcpy(buf + 1, p.addr, alen);
	buf[alen + 1] = '>';
	CHECK(smtp_parse_path(buf, alen + 2, flags, &again, NULL, NULL) ==
	      SMTP_PATH_OK);
	CHECK(strcmp(again.addr, p.addr) == 0 && again.at == p.at &&
	      again.utf8 == p.utf8);
	CHECK(!again.null && !again.postmaster);
}

static void
check_mail_params(const char *s, size_t len, unsigned exts)
{
	struct smtp_mail_params mp;
	char err[128];
	int rc;

	rc = smtp_parse_mail_params(s, len, exts, &mp, err, sizeof(err));
	CHECK(rc == 0 || rc == 501 || rc == 555);
	CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	CHECK((rc == 0) == (err[0] == '\0'));
	if (rc == 0) {
		CHECK(!mp.has_size || (exts & SMTP_EXT_SIZE));
		CHECK(!mp.smtputf8 || (exts & SMTP_EXT_SMTPUTF8));
		CHECK(mp.body != SMTP_BODY_8BITMIME || (exts & SMTP_EXT_8BITMIME));
		CHECK(mp.body != SMTP_BODY_BINARYMIME ||
		      (exts & SMTP_EXT_BINARYMIME));
		CHECK(smtp_parse_params(s, len, NULL, 0) == 0 ||
		      smtp_parse_params(s, len, NULL, SMTP_PARAMS_MAX) > 0);
	}
}

static void
check_params(const char *s, size_t len)
{
	struct smtp_param prm[SMTP_PARAMS_MAX];
	char err[64];
	int n, i, rc;

	n = smtp_parse_params(s, len, prm, SMTP_PARAMS_MAX);
	CHECK(n >= -1 && n <= SMTP_PARAMS_MAX);
	for (i = 0; i < n; i++) {
		CHECK(prm[i].keylen > 0 && within(prm[i].key, prm[i].keylen, s, len));
		if (prm[i].value != NULL) {
			CHECK(prm[i].valuelen > 0);
			CHECK(within(prm[i].value, prm[i].valuelen, s, len));
			CHECK(prm[i].value == prm[i].key + prm[i].keylen + 1);
			CHECK(memchr(prm[i].value, ' ', prm[i].valuelen) == NULL);
		}
	}
	rc = smtp_parse_rcpt_params(s, len, err, sizeof(err));
	CHECK(rc == 0 || rc == 501 || rc == 555);
	CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	CHECK((rc == 0) == (n == 0));
	CHECK(rc != 501 || n == -1);
}

static void
check_args(const char *s, size_t len)
{
	char out[SMTP_DOMAIN_MAX + 1];
	uint64_t size;
	int last;
	size_t n;

	if (smtp_parse_bdat(s, len, &size, &last) == 0) {
		CHECK(len > 0 && s[0] >= '0' && s[0] <= '9');
		CHECK(last == 0 || last == 1);
	} else {
		CHECK(size == 0 && last == 0);
	}
	if (smtp_parse_helo(s, len, out, sizeof(out)) == 0) {
		n = strlen(out);
		CHECK(n > 0 && n <= 255 && n <= len && memcmp(out, s, n) == 0);
	} else {
		CHECK(out[0] == '\0');
	}
}

static void
check_line(const char *s, size_t len)
{
	struct smtp_cmd cmd;
	const char *r;
	size_t restlen = 0, i;
	int flags, rc;
	static const char *const prefixes[] = { "FROM:", "TO:" };

	rc = smtp_parse_command(s, len, &cmd);
	CHECK(rc == 0 || rc == -1);
	CHECK(smtp_verb_name(cmd.verb) != NULL);
	CHECK(smtp_verb_ends_group(cmd.verb) == 0 ||
	      smtp_verb_ends_group(cmd.verb) == 1);
	if (rc == -1) {
		CHECK(cmd.verb == SMTP_UNKNOWN && cmd.arglen == 0);
		CHECK(memchr(s, '\0', len) || memchr(s, '\r', len) ||
		      memchr(s, '\n', len));
		return;
	}
	CHECK(within(cmd.arg, cmd.arglen, s, len));
	CHECK(cmd.arglen == 0 ||
	      (cmd.arg[0] != ' ' && cmd.arg[cmd.arglen - 1] != ' '));

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		r = smtp_skip_prefix(cmd.arg, cmd.arglen, prefixes[i], &restlen);
		if (r == NULL)
			continue;
		CHECK(within(r, restlen, cmd.arg, cmd.arglen));
		for (flags = 0; flags < 4; flags++)
			check_path(r, restlen, flags);
	}
	/* The path parser on the raw argument too (no prefix). */
	check_path(cmd.arg, cmd.arglen, SMTP_PATH_ALLOW_NULL);
	check_args(cmd.arg, cmd.arglen);
}

/* Path then parameters, as for MAIL FROM. */
static void
check_mail(const char *s, size_t len)
{
	struct smtp_path p;
	const char *rest;
	size_t restlen;
	unsigned exts;

	if (smtp_parse_path(s, len, SMTP_PATH_ALLOW_NULL, &p, &rest,
	                    &restlen) != SMTP_PATH_OK)
		rest = s, restlen = len;
	for (exts = 0; exts < 16; exts++)
		check_mail_params(rest, restlen, exts);
	check_params(rest, restlen);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);

	if (s == NULL)
		return 0;
	if (size > 0)
		memcpy(s, data, size);

	check_line(s, size);
	check_mail(s, size);
	check_args(s, size);
	CHECK(smtp_utf8_valid(s, size) ==
	      ref_utf8_valid((const unsigned char *)s, size));

	free(s);
	return 0;
}
