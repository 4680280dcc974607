/*
 * cidr.c - CIDR network lists and address matching (see cidr.h).
 *
 * Role: parse "a.b.c.d/n", "x::y/n" or a bare address into a struct cidr,
 * parse comma and/or white space separated lists of them, and tell whether
 * a client's socket address lies inside any network of a list. Everything
 * here is a pure function over its arguments: no I/O, no global state.
 *
 * Invariants of a parsed struct cidr:
 *  - family is AF_INET (addr[0..3] used, prefix 0..32) or AF_INET6
 *    (addr[0..15] used, prefix 0..128); unused bytes of addr are zero;
 *  - host bits are cleared: "10.1.2.3/8" is stored as 10.0.0.0/8 (accepted
 *    and normalised, not rejected);
 *  - an IPv4-mapped IPv6 network "::ffff:a.b.c.d/n" with n >= 96 is stored
 *    as the IPv4 network a.b.c.d/(n-96). Matching does the same to the
 *    client address (::ffff:a.b.c.d is matched as a.b.c.d), so the two
 *    spellings of one network behave the same and a mapped network is never
 *    a dead entry. Other IPv6 networks never match an IPv4 client, even
 *    ::/0 (as in Postfix).
 *
 * Ownership: a struct cidr_list owns its array; cidr_list_free() releases
 * it and leaves an empty list that may be reused.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

/* Longest text form we accept for one entry: an IPv6 address plus "/128". */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4)

static const uint8_t v4mapped_prefix[12] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Clear every bit of addr (len bytes) after the first prefix bits. */
static void
cidr_clear_host_bits(uint8_t *addr, size_t len, unsigned prefix)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (prefix >= 8) {
			prefix -= 8;
			continue;
		}
		addr[i] &= (uint8_t)(0xff00u >> prefix);
		prefix = 0;
	}
}

/* Do the first prefix bits of a and b agree? */
static int
cidr_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;
	uint8_t mask;

	if (memcmp(a, b, bytes) != 0)
		return 0;
	if (bits == 0)
		return 1;
	mask = (uint8_t)(0xff00u >> bits);
	return (a[bytes] & mask) == (b[bytes] & mask);
}

/* Parse a prefix length: 1 to 3 decimal digits, nothing else, <= max. */
static int
cidr_parse_prefix(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t i;

	if (s[0] == '\0' || strlen(s) > 3)
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

int
cidr_parse(const char *s, struct cidr *out)
{
	char buf[CIDR_TEXT_MAX + 1];
	struct cidr c;
	char *slash;
	size_t len;
	unsigned max;

	if (s == NULL || out == NULL)
		return -1;
	len = strlen(s);
	if (len == 0 || len > CIDR_TEXT_MAX)
		return -1;
	memcpy(buf, s, len + 1);

	memset(&c, 0, sizeof(c));
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, c.addr) == 1) {
		c.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
		c.family = AF_INET6;
		max = 128;
	} else
		return -1;

	c.prefix = max;
	if (slash != NULL && cidr_parse_prefix(slash + 1, max, &c.prefix) == -1)
		return -1;

	if (c.family == AF_INET6 && c.prefix >= 96 &&
	    memcmp(c.addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
		memmove(c.addr, c.addr + 12, 4);
		memset(c.addr + 4, 0, 12);
		c.family = AF_INET;
		c.prefix -= 96;
	}
	cidr_clear_host_bits(c.addr, c.family == AF_INET ? 4 : 16, c.prefix);
	*out = c;
	return 0;
}

static int
cidr_is_sep(char ch)
{
	return ch == ',' || ch == ' ' || ch == '\t' || ch == '\r' ||
	       ch == '\n' || ch == '\f' || ch == '\v';
}

static void
cidr_set_err(char *err, size_t errlen, const char *tok, size_t toklen)
{
	char shown[CIDR_TEXT_MAX + 8];
	size_t i, n = 0;

	if (err == NULL || errlen == 0)
		return;
	/* Show at most CIDR_TEXT_MAX bytes, non-printable bytes as '?'. */
	for (i = 0; i < toklen && n < CIDR_TEXT_MAX; i++) {
		unsigned char ch = (unsigned char)tok[i];

		shown[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	if (i < toklen) {
		memcpy(shown + n, "...", 3);
		n += 3;
	}
	shown[n] = '\0';
	snprintf(err, errlen, "bad network '%s'", shown);
}

int
cidr_list_parse(const char *s, struct cidr_list *list, char *err, size_t errlen)
{
	char tok[CIDR_TEXT_MAX + 1];
	size_t n0, toklen = 0;
	const char *p, *start = NULL;
	struct cidr c, *v;

	if (s == NULL || list == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "no network list");
		return -1;
	}
	n0 = list->n;
	p = s;
	for (;;) {
		while (*p != '\0' && cidr_is_sep(*p))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && !cidr_is_sep(*p))
			p++;
		toklen = (size_t)(p - start);
		if (toklen > CIDR_TEXT_MAX)
			goto bad;
		memcpy(tok, start, toklen);
		tok[toklen] = '\0';
		if (cidr_parse(tok, &c) == -1)
			goto bad;
		if (list->n >= SIZE_MAX / sizeof(*v) - 1)
			goto nomem;
		v = realloc(list->v, (list->n + 1) * sizeof(*v));
		if (v == NULL)
			goto nomem;
		list->v = v;
		list->v[list->n++] = c;
	}
	return 0;

bad:
	cidr_set_err(err, errlen, start, toklen);
	list->n = n0;
	return -1;
nomem:
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "out of memory");
	list->n = n0;
	return -1;
}

int
cidr_list_match(const struct cidr_list *list, const struct sockaddr *sa)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	uint8_t addr[16];
	int family;
	size_t i;

	if (list == NULL || sa == NULL)
		return 0;
	/* Copy out: sa may point into a buffer of any alignment. */
	if (sa->sa_family == AF_INET) {
		memcpy(&sin, sa, sizeof(sin));
		memcpy(addr, &sin.sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(&sin6, sa, sizeof(sin6));
		memcpy(addr, &sin6.sin6_addr, 16);
		family = AF_INET6;
		if (memcmp(addr, v4mapped_prefix, sizeof(v4mapped_prefix)) ==
		    0) {
			memmove(addr, addr + 12, 4);
			family = AF_INET;
		}
	} else
		return 0;

	for (i = 0; i < list->n; i++) {
		const struct cidr *c = &list->v[i];

		if (c->family == family &&
		    cidr_prefix_equal(c->addr, addr, c->prefix))
			return 1;
	}
	return 0;
}

void
cidr_format(const struct cidr *c, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];

	if (buf == NULL || len == 0)
		return;
	if (c == NULL || (c->family != AF_INET && c->family != AF_INET6) ||
	    inet_ntop(c->family, c->addr, addr, sizeof(addr)) == NULL) {
		snprintf(buf, len, "?");
		return;
	}
	snprintf(buf, len, "%s/%u", addr, c->prefix);
}

void
cidr_list_free(struct cidr_list *list)
{
	if (list == NULL)
		return;
	free(list->v);
	list->v = NULL;
	list->n = 0;
}
