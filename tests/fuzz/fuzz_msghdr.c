/*
 * fuzz_msghdr.c - libFuzzer target for src/msghdr.c.
 *
 * The input is a message (header section, maybe a body). It is copied into
 * a heap buffer of exactly its size, so ASan reports any read past the end.
 * Every field msghdr_next() returns is checked (inside the input, in order,
 * a valid name, the value inside the field), its value is unfolded and run
 * through the address list iterator, and so is the whole input. Each
 * address the iterator returns must fit its buffer, hold no white space or
 * comment outside quoted strings and literals, and read back as itself both
 * alone and as "<addr>" (the result is a fixed point). The input is also
 * made into a display name, which must hold no control character and must
 * not disturb the address after it in "phrase <a@b>".
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       src/msghdr.c tests/fuzz/fuzz_msghdr.c -o fuzz_msghdr
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msghdr.h"

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "invariant failed: %s (line %d)\n", \
			        #cond, __LINE__);                           \
			abort();                                            \
		}                                                           \
	} while (0)

#define ADDR_MAX 300

/* [p, p + n) lies within [s, s + len). */
static int
within(const char *p, size_t n, const char *s, size_t len)
{
	return p >= s && n <= len && (size_t)(p - s) <= len - n;
}

/* Exactly one address, equal to want, in s[0..len). */
static void
check_reads_as(const char *s, size_t len, const char *want)
{
	struct msghdr_alist a;
	char out[ADDR_MAX];

	msghdr_alist_init(&a, s, len);
	CHECK(msghdr_alist_next(&a, out, sizeof(out), NULL, NULL) == 1);
	CHECK(strcmp(out, want) == 0);
	CHECK(msghdr_alist_next(&a, out, sizeof(out), NULL, NULL) == 0);
}

static void
check_addr(const char *addr)
{
	size_t n = strlen(addr), i;
	char wrapped[ADDR_MAX + 2];
	int q = 0, lit = 0;

	CHECK(n > 0 && n < ADDR_MAX);
	for (i = 0; i < n; i++) {
		char c = addr[i];

		if (q) {
			if (c == '\\')
				i++;
			else if (c == '"')
				q = 0;
			continue;
		}
		if (lit) {
			if (c == '\\')
				i++;
			else if (c == ']')
				lit = 0;
			continue;
		}
		CHECK(c != ' ' && c != '\t' && c != '\r' && c != '\n' &&
		      c != '(' && c != ')' && c != '<' && c != '>' &&
		      c != ',' && c != ';' && c != ':');
		if (c == '"')
			q = 1;
		else if (c == '[')
			lit = 1;
	}
	CHECK(!q && !lit);
	check_reads_as(addr, n, addr);
	wrapped[0] = '<';
	memcpy(wrapped + 1, addr, n);
	wrapped[n + 1] = '>';
	check_reads_as(wrapped, n + 2, addr);
}

static void
check_alist(const char *s, size_t len)
{
	struct msghdr_alist a;
	char out[ADDR_MAX];
	const char *bad;
	size_t badlen, last = 0;
	int rc, guard = 0;

	msghdr_alist_init(&a, s, len);
	while ((rc = msghdr_alist_next(&a, out, sizeof(out), &bad,
	    &badlen)) != 0) {
		CHECK(rc == 1 || rc == -1);
		CHECK(a.pos <= len);
		CHECK(guard++ <= (int)len + 1);
		CHECK(a.pos > last || guard == 1);
		last = a.pos;
		if (rc == 1) {
			check_addr(out);
		} else {
			CHECK(out[0] == '\0');
			CHECK(within(bad, badlen, s, len));
		}
	}
	CHECK(out[0] == '\0');
	/* A too small buffer never overflows. */
	msghdr_alist_init(&a, s, len);
	while ((rc = msghdr_alist_next(&a, out, 4, NULL, NULL)) != 0)
		CHECK(rc == -1 ? out[0] == '\0' : strlen(out) < 4);
}

static void
check_fields(const char *s, size_t len)
{
	struct msghdr_field f;
	size_t pos = 0, prev = 0, hend, body;
	int blank;

	while (msghdr_next(s, len, &pos, &f) == 1) {
		char *v;
		size_t n;

		CHECK(f.start == prev && f.end > f.start && f.end == pos);
		CHECK(f.name == s + f.start && f.namelen > 0);
		CHECK(within(f.value, f.valuelen, s + f.start,
		    f.end - f.start));
		for (size_t i = 0; i < f.namelen; i++)
			CHECK(f.name[i] > 32 && f.name[i] < 127 &&
			      f.name[i] != ':');
		prev = pos;
		if ((v = malloc(f.valuelen + 1)) == NULL)
			return;
		n = msghdr_unfold(f.value, f.valuelen, v, f.valuelen + 1);
		CHECK(n <= f.valuelen && v[n] == '\0');
		CHECK(n == 0 || (v[0] != ' ' && v[n - 1] != ' '));
		CHECK(msghdr_name_is(&f, "x") == (f.namelen == 1 &&
		      (f.name[0] == 'x' || f.name[0] == 'X')));
		check_alist(v, n);
		free(v);
	}
	CHECK(pos == prev);
	msghdr_split(s, len, &hend, &body, &blank);
	CHECK(hend == pos && body >= hend && body <= len);
	CHECK(blank ? (body == hend + 1 || body == hend + 2) : body == hend);
}

static void
check_phrase(const char *s, size_t len)
{
	char out[600], mb[700];
	int n = msghdr_phrase(s, len, out, sizeof(out));

	if (n < 0) {
		CHECK(out[0] == '\0');
		return;
	}
	CHECK((size_t)n == strlen(out) && n > 0);
	for (int i = 0; i < n; i++)
		CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
	snprintf(mb, sizeof(mb), "%s <a@b>", out);
	check_reads_as(mb, strlen(mb), "a@b");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);

	if (s == NULL)
		return 0;
	if (size > 0)
		memcpy(s, data, size);
	check_fields(s, size);
	check_alist(s, size);
	check_phrase(s, size);
	free(s);
	return 0;
}
