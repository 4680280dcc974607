/*
 * test_dns_rr.c - unit tests for src/dns_rr.c, the pure DNS helpers.
 *
 * dns_parse_mx_rdata: exact values and every boundary the contract names
 * (label 63/64, name 255/256 octets, the root, compression pointers,
 * trailing bytes, truncation) plus bytes that have no text form.
 * dns_order_hosts: with deterministic generators: preference order is
 * never broken, ties come out in different orders for different random
 * sequences (and evenly over many runs), duplicate names are dropped.
 * dns_msg_mx / dns_msg_addrs: whole response messages as libunbound hands
 * them over (compressed names, CNAME chains, RCODEs) and malformed ones.
 *
 * Every input is copied into a heap buffer of exactly its length, so a read
 * past the end shows up under valgrind or ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "dns.h"

/* Internal interface of dns_rr.c (not in dns.h; see dns_rr.c). */

#define B(s) (const uint8_t *)(s), (sizeof(s) - 1)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static uint8_t *
dup_exact(const uint8_t *p, size_t len)
{
	uint8_t *d = malloc(len > 0 ? len : 1);

	assert_non_null(d);
	if (len > 0)
		memcpy(d, p, len);
	return d;
}

/* dns_parse_mx_rdata on an exact-size copy. */
static int
parse_mx(
    const uint8_t *rd, size_t len, unsigned *pref, char *name, size_t namelen)
{
	uint8_t *d = dup_exact(rd, len);
	int r = dns_parse_mx_rdata(d, len, pref, name, namelen);

	free(d);
	return r;
}

/* RDATA: preference, then labels of the given lengths ('a'..), then root. */
static size_t
mk_rdata(uint8_t *out, size_t outlen, unsigned pref, const size_t *labels,
    size_t nlabels)
{
	size_t n = 0, i, j;

	out[n++] = (uint8_t)(pref >> 8);
	out[n++] = (uint8_t)pref;
	for (i = 0; i < nlabels; i++) {
		assert_true(n + 1 + labels[i] < outlen);
		out[n++] = (uint8_t)labels[i];
		for (j = 0; j < labels[i]; j++)
			out[n++] = (uint8_t)('a' + i % 26);
	}
	out[n++] = 0;
	return n;
}

static void
test_mx_rdata_basic(void **state)
{
	char name[DNS_NAME_MAX + 1];
	unsigned pref = 99;

	assert_int_equal(parse_mx(B("\x00\x0a\003mx1\007example\003com\x00"),
			     &pref, name, sizeof(name)),
	    0);
	assert_int_equal(pref, 10);
	assert_string_equal(name, "mx1.example.com");

	assert_int_equal(
	    parse_mx(B("\xff\xff\x01m\x00"), &pref, name, sizeof(name)), 0);
	assert_int_equal(pref, 65535);
	assert_string_equal(name, "m");

	/* Upper case comes out lower case; digits, '-' and '_' kept. */
	assert_int_equal(parse_mx(B("\x01\x00\006MX-1_a\002Ex\x00"), &pref,
			     name, sizeof(name)),
	    0);
	assert_int_equal(pref, 256);
	assert_string_equal(name, "mx-1_a.ex");
}

static void
test_mx_rdata_root(void **state)
{
	char name[8] = "junk";
	unsigned pref = 99;

	/* RFC 7505 null MX: preference 0, target ".". */
	assert_int_equal(
	    parse_mx(B("\x00\x00\x00"), &pref, name, sizeof(name)), 0);
	assert_int_equal(pref, 0);
	assert_string_equal(name, "");
	assert_int_equal(parse_mx(B("\x00\x14\x00"), &pref, name, 1), 0);
	assert_int_equal(pref, 20);
	assert_string_equal(name, "");
}

static void
test_mx_rdata_label_63_64(void **state)
{
	uint8_t rd[80];
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
	size_t l63[] = {63}, len;

	len = mk_rdata(rd, sizeof(rd), 5, l63, 1);
	assert_int_equal(len, 2 + 1 + 63 + 1);
	assert_int_equal(parse_mx(rd, len, &pref, name, sizeof(name)), 0);
	assert_int_equal(strlen(name), 63);
	assert_int_equal(pref, 5);

	/* 64 = 0x40: an extended label type, never a 64-octet label. */
	rd[2] = 64;
	memset(rd + 3, 'a', 64);
	rd[3 + 64] = 0;
	assert_int_equal(
	    parse_mx(rd, 3 + 64 + 1, &pref, name, sizeof(name)), -1);
	assert_string_equal(name, "");
}

static void
test_mx_rdata_name_255_256(void **state)
{
	uint8_t rd[300];
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
	/* 3 * (1 + 63) + (1 + 61) + 1 = 255 octets. */
	size_t ok[] = {63, 63, 63, 61}, over[] = {63, 63, 63, 62};
	size_t len;

	len = mk_rdata(rd, sizeof(rd), 1, ok, NELEM(ok));
	assert_int_equal(len, 2 + 255);
	assert_int_equal(parse_mx(rd, len, &pref, name, sizeof(name)), 0);
	assert_int_equal(strlen(name), 253);
	assert_int_equal(name[63], '.');
	/* The text form needs exactly 254 bytes. */
	assert_int_equal(parse_mx(rd, len, &pref, name, 254), 0);
	assert_int_equal(parse_mx(rd, len, &pref, name, 253), -1);

	len = mk_rdata(rd, sizeof(rd), 1, over, NELEM(over));
	assert_int_equal(len, 2 + 256);
	assert_int_equal(parse_mx(rd, len, &pref, name, sizeof(name)), -1);
}

static void
test_mx_rdata_pointer_rejected(void **state)
{
	static const struct {
		const char *rd;
		size_t len;
	} bad[] = {
	    {"\x00\x0a\xc0\x0c", 4},	   /* pointer alone */
	    {"\x00\x0a\x02mx\xc0\x0c", 7}, /* label, then pointer */
	    {"\x00\x0a\x80\x00", 4},	   /* 10xxxxxx: reserved */
	    {"\x00\x0a\101a", 4},	   /* 01xxxxxx: extended */
	};
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
	size_t i;

	for (i = 0; i < NELEM(bad); i++)
		assert_int_equal(parse_mx((const uint8_t *)bad[i].rd,
				     bad[i].len, &pref, name, sizeof(name)),
		    -1);
}

static void
test_mx_rdata_trailing_and_truncated(void **state)
{
	static const struct {
		const char *rd;
		size_t len;
	} bad[] = {
	    {"", 0}, {"\x00", 1}, {"\x00\x0a", 2}, /* no name at all */
	    {"\x00\x0a\x02mx", 5},		   /* no root label */
	    {"\x00\x0a\x03mx", 5},		   /* label runs past end */
	    {"\x00\x0a\x00\x00", 4},		   /* root, then a byte */
	    {"\x00\x0a\x02mx\x00x", 7},		   /* name, then a byte */
	    {"\x00\x0a\x02mx\x00\x02mx\x00", 10},  /* two names */
	};
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
	size_t i;

	for (i = 0; i < NELEM(bad); i++) {
		memcpy(name, "junk", 5);
		assert_int_equal(parse_mx((const uint8_t *)bad[i].rd,
				     bad[i].len, &pref, name, sizeof(name)),
		    -1);
		assert_string_equal(name, "");
	}
	assert_int_equal(
	    dns_parse_mx_rdata(NULL, 0, &pref, name, sizeof(name)), -1);
	assert_int_equal(parse_mx(B("\x00\x0a\x00"), &pref, name, 0), -1);
}

static void
test_mx_rdata_bad_bytes(void **state)
{
	static const char bytes[] = {
	    '.', ' ', '\0', '\n', 0x7f, (char)0x80, (char)0xff};
	uint8_t rd[] = {0, 10, 3, 'm', 'x', 'x', 0};
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
	size_t i;

	for (i = 0; i < sizeof(bytes); i++) {
		rd[4] = (uint8_t)bytes[i];
		assert_int_equal(
		    parse_mx(rd, sizeof(rd), &pref, name, sizeof(name)), -1);
	}
	rd[4] = '!';
	assert_int_equal(
	    parse_mx(rd, sizeof(rd), &pref, name, sizeof(name)), 0);
	assert_string_equal(name, "m!x");
}

/* Deterministic generators. */
static uint32_t xs_state;

static uint32_t
xorshift(void)
{
	xs_state ^= xs_state << 13;
	xs_state ^= xs_state >> 17;
	xs_state ^= xs_state << 5;
	return xs_state;
}

static uint32_t
rnd_zero(void)
{
	return 0;
}

static uint32_t
rnd_max(void)
{
	return UINT32_MAX;
}

static void
set_host(struct dns_host *h, const char *name, unsigned pref)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->pref = pref;
}

/* "name,name,..." of the first n hosts. */
static const char *
names(const struct dns_host *h, size_t n)
{
	static char buf[512];
	size_t i, pos = 0;

	buf[0] = '\0';
	for (i = 0; i < n; i++)
		pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, "%s%s",
		    i > 0 ? "," : "", h[i].name);
	return buf;
}

static void
test_order_by_pref(void **state)
{
	struct dns_host h[5];

	set_host(&h[0], "c", 30);
	set_host(&h[1], "a", 10);
	set_host(&h[2], "e", 65535);
	set_host(&h[3], "z", 0);
	set_host(&h[4], "b", 20);
	xs_state = 7;
	assert_int_equal(dns_order_hosts(h, 5, xorshift), 5);
	assert_string_equal(names(h, 5), "z,a,b,c,e");
	assert_int_equal(h[0].pref, 0);
	assert_int_equal(h[4].pref, 65535);
}

static void
test_order_ties_exact(void **state)
{
	struct dns_host h[4];

	/* rnd always 0: Fisher-Yates swaps i with 0 for i = n-1 .. 1. */
	set_host(&h[0], "a", 10);
	set_host(&h[1], "b", 10);
	set_host(&h[2], "c", 10);
	set_host(&h[3], "m", 5);
	assert_int_equal(dns_order_hosts(h, 4, rnd_zero), 4);
	/* [a,b,c,m] -> [m,b,c,a] -> [c,b,m,a] -> [b,c,m,a]; sort: m first */
	assert_string_equal(names(h, 4), "m,b,c,a");

	/* rnd always max: j = i, no swap: ties keep their input order. */
	set_host(&h[0], "a", 10);
	set_host(&h[1], "b", 10);
	set_host(&h[2], "c", 10);
	set_host(&h[3], "m", 5);
	assert_int_equal(dns_order_hosts(h, 4, rnd_max), 4);
	assert_string_equal(names(h, 4), "m,a,b,c");
}

static void
test_order_ties_vary(void **state)
{
	char seen[64][32];
	size_t nseen = 0, i, k;
	uint32_t seed;

	for (seed = 1; seed <= 200; seed++) {
		struct dns_host h[6];
		char tie[32];

		set_host(&h[0], "t1", 20);
		set_host(&h[1], "x", 30);
		set_host(&h[2], "t2", 20);
		set_host(&h[3], "best", 10);
		set_host(&h[4], "t3", 20);
		set_host(&h[5], "y", 30);
		xs_state = seed * 2654435761u;
		assert_int_equal(dns_order_hosts(h, 6, xorshift), 6);
		/* Preference order is never broken. */
		assert_string_equal(h[0].name, "best");
		for (i = 1; i < 6; i++)
			assert_true(h[i - 1].pref <= h[i].pref);
		assert_int_equal(h[1].pref, 20);
		assert_int_equal(h[3].pref, 20);
		assert_int_equal(h[4].pref, 30);
		snprintf(tie, sizeof(tie), "%s", names(h + 1, 3));
		for (k = 0; k < nseen; k++)
			if (strcmp(seen[k], tie) == 0)
				break;
		if (k == nseen) {
			assert_true(nseen < NELEM(seen));
			snprintf(seen[nseen++], sizeof(seen[0]), "%s", tie);
		}
	}
	/* Different random sequences, different tie orders: all 3! show. */
	assert_int_equal(nseen, 6);
}

static void
test_order_ties_even(void **state)
{
	static const char *perm[6] = {
	    "a,b,c", "a,c,b", "b,a,c", "b,c,a", "c,a,b", "c,b,a"};
	unsigned count[6] = {0};
	size_t run, i;

	xs_state = 12345;
	for (run = 0; run < 6000; run++) {
		struct dns_host h[3];
		const char *got;

		set_host(&h[0], "a", 7);
		set_host(&h[1], "b", 7);
		set_host(&h[2], "c", 7);
		assert_int_equal(dns_order_hosts(h, 3, xorshift), 3);
		got = names(h, 3);
		for (i = 0; i < 6; i++)
			if (strcmp(got, perm[i]) == 0)
				break;
		assert_true(i < 6);
		count[i]++;
	}
	for (i = 0; i < 6; i++)
		if (count[i] < 850 || count[i] > 1150)
			fail_msg(
			    "permutation %s: %u of 6000", perm[i], count[i]);
}

static void
test_order_duplicates(void **state)
{
	struct dns_host h[6];
	size_t n, i;

	set_host(&h[0], "mx1", 20);
	set_host(&h[1], "mx2", 10);
	set_host(&h[2], "mx1", 10);
	set_host(&h[3], "mx2", 30);
	set_host(&h[4], "mx3", 10);
	set_host(&h[5], "mx1", 5);
	xs_state = 99;
	n = dns_order_hosts(h, 6, xorshift);
	assert_int_equal(n, 3);
	/* The best preference of each name stays. */
	assert_string_equal(h[0].name, "mx1");
	assert_int_equal(h[0].pref, 5);
	for (i = 1; i < 3; i++)
		assert_int_equal(h[i].pref, 10);
	assert_true(
	    (strcmp(h[1].name, "mx2") == 0 && strcmp(h[2].name, "mx3") == 0) ||
	    (strcmp(h[1].name, "mx3") == 0 && strcmp(h[2].name, "mx2") == 0));

	set_host(&h[0], "same", 10);
	set_host(&h[1], "same", 10);
	set_host(&h[2], "same", 10);
	assert_int_equal(dns_order_hosts(h, 3, rnd_zero), 1);
	assert_string_equal(h[0].name, "same");
}

static void
test_order_edge(void **state)
{
	struct dns_host h[1];

	assert_int_equal(dns_order_hosts(NULL, 0, rnd_zero), 0);
	assert_int_equal(dns_order_hosts(h, 0, rnd_zero), 0);
	set_host(&h[0], "only", 42);
	assert_int_equal(dns_order_hosts(h, 1, rnd_max), 1);
	assert_string_equal(h[0].name, "only");
	assert_int_equal(h[0].pref, 42);
}

/* ---- whole messages ---- */

struct pkt {
	uint8_t b[8192];
	size_t n;
};

static void
put8(struct pkt *p, unsigned v)
{
	assert_true(p->n < sizeof(p->b));
	p->b[p->n++] = (uint8_t)v;
}

static void
put16(struct pkt *p, unsigned v)
{
	put8(p, v >> 8);
	put8(p, v & 0xff);
}

static void
put_bytes(struct pkt *p, const void *s, size_t len)
{
	assert_true(p->n + len <= sizeof(p->b));
	memcpy(p->b + p->n, s, len);
	p->n += len;
}

/* A text name ("a.b") as uncompressed wire labels, with the root. */
static void
put_name(struct pkt *p, const char *name)
{
	const char *s = name, *dot;

	while (*s != '\0') {
		dot = strchr(s, '.');
		if (dot == NULL)
			dot = s + strlen(s);
		put8(p, (unsigned)(dot - s));
		put_bytes(p, s, (size_t)(dot - s));
		s = *dot == '.' ? dot + 1 : dot;
	}
	put8(p, 0);
}

/* Response header and one question; name at offset 12 for pointers. */
static void
msg_begin(struct pkt *p, unsigned rcode, unsigned ancount, const char *q,
    unsigned qtype)
{
	p->n = 0;
	put16(p, 0);
	put16(p, 0x8180 | rcode);
	put16(p, 1);
	put16(p, ancount);
	put16(p, 0);
	put16(p, 0);
	put_name(p, q);
	put16(p, qtype);
	put16(p, 1);
}

/* RR header with owner = pointer to the question name; returns where
 * RDLENGTH goes, for rr_end. */
static size_t
rr_begin(struct pkt *p, unsigned type, unsigned class)
{
	size_t at;

	put16(p, 0xc00c);
	put16(p, type);
	put16(p, class);
	put16(p, 0);
	put16(p, 60);
	at = p->n;
	put16(p, 0);
	return at;
}

static void
rr_end(struct pkt *p, size_t at)
{
	size_t len = p->n - at - 2;

	p->b[at] = (uint8_t)(len >> 8);
	p->b[at + 1] = (uint8_t)len;
}

static int
msg_mx(
    const struct pkt *p, int *rcode, struct dns_host *h, size_t max, size_t *n)
{
	uint8_t *d = dup_exact(p->b, p->n);
	int r = dns_msg_mx(d, p->n, rcode, h, max, n);

	free(d);
	return r;
}

static int
msg_addrs(const struct pkt *p, int *rcode, int qtype, struct dns_host *h,
    uint16_t port)
{
	uint8_t *d = dup_exact(p->b, p->n);
	int r = dns_msg_addrs(d, p->n, rcode, qtype, h, port);

	free(d);
	return r;
}

static void
test_msg_mx_compressed(void **state)
{
	struct pkt p;
	struct dns_host h[4];
	size_t n, at;
	int rcode;

	/* example.org MX 10 mx1.example.org (suffix compressed), MX 20
	 * example.org (pointer only), MX 30 MX.Other.NET (uncompressed). */
	msg_begin(&p, 0, 3, "example.org", 15);
	at = rr_begin(&p, 15, 1);
	put16(&p, 10);
	put8(&p, 3);
	put_bytes(&p, "mx1", 3);
	put16(&p, 0xc00c);
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 20);
	put16(&p, 0xc00c);
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 30);
	put_name(&p, "MX.Other.NET");
	rr_end(&p, at);

	assert_int_equal(msg_mx(&p, &rcode, h, 4, &n), 3);
	assert_int_equal(rcode, 0);
	assert_int_equal(n, 3);
	assert_string_equal(h[0].name, "mx1.example.org");
	assert_int_equal(h[0].pref, 10);
	assert_string_equal(h[1].name, "example.org");
	assert_int_equal(h[1].pref, 20);
	assert_string_equal(h[2].name, "mx.other.net");
	assert_int_equal(h[2].pref, 30);
	assert_int_equal(h[2].naddr, 0);
}

static void
test_msg_mx_cname_and_others(void **state)
{
	struct pkt p;
	struct dns_host h[4];
	size_t n, at, target;
	int rcode;

	/* alias.example CNAME real.example; real.example MX 5 mx.real.example;
	 * plus an A record and an MX of class CH, both ignored. */
	msg_begin(&p, 0, 4, "alias.example", 15);
	at = rr_begin(&p, 5, 1);
	target = p.n;
	put_name(&p, "real.example");
	rr_end(&p, at);
	put16(&p, 0xc000 | (unsigned)target);
	put16(&p, 15);
	put16(&p, 1);
	put16(&p, 0);
	put16(&p, 60);
	at = p.n;
	put16(&p, 0);
	put16(&p, 5);
	put8(&p, 2);
	put_bytes(&p, "mx", 2);
	put16(&p, 0xc000 | (unsigned)target);
	rr_end(&p, at);
	at = rr_begin(&p, 1, 1);
	put_bytes(&p, "\x7f\x00\x00\x01", 4);
	rr_end(&p, at);
	at = rr_begin(&p, 15, 3);
	put16(&p, 1);
	put_name(&p, "chaos");
	rr_end(&p, at);

	assert_int_equal(msg_mx(&p, &rcode, h, 4, &n), 1);
	assert_int_equal(n, 1);
	assert_string_equal(h[0].name, "mx.real.example");
	assert_int_equal(h[0].pref, 5);
}

static void
test_msg_mx_null_and_nodata(void **state)
{
	struct pkt p;
	struct dns_host h[2];
	size_t n, at;
	int rcode;

	msg_begin(&p, 0, 1, "nomail.example", 15);
	at = rr_begin(&p, 15, 1);
	put16(&p, 0);
	put8(&p, 0);
	rr_end(&p, at);
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), 1);
	assert_int_equal(n, 1);
	assert_int_equal(h[0].pref, 0);
	assert_string_equal(h[0].name, "");

	/* NOERROR, no answer (NODATA) and NXDOMAIN: 0 records, RCODE. */
	msg_begin(&p, 0, 0, "nodata.example", 15);
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), 0);
	assert_int_equal(rcode, 0);
	assert_int_equal(n, 0);
	msg_begin(&p, 3, 0, "nx.example", 15);
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), 0);
	assert_int_equal(rcode, 3);
	msg_begin(&p, 2, 0, "sf.example", 15);
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), 0);
	assert_int_equal(rcode, 2);
}

static void
test_msg_mx_keeps_lowest(void **state)
{
	struct pkt p;
	struct dns_host h[4];
	size_t n, at, i;
	unsigned prefs[] = {50, 40, 30, 20, 10, 60, 5, 70};
	int rcode, seen[8] = {0};

	msg_begin(&p, 0, NELEM(prefs), "many.example", 15);
	for (i = 0; i < NELEM(prefs); i++) {
		char name[16];

		snprintf(name, sizeof(name), "mx%u", prefs[i]);
		at = rr_begin(&p, 15, 1);
		put16(&p, prefs[i]);
		put_name(&p, name);
		rr_end(&p, at);
	}
	assert_int_equal(msg_mx(&p, &rcode, h, 4, &n), 8);
	assert_int_equal(n, 4);
	for (i = 0; i < 4; i++) {
		switch (h[i].pref) {
		case 5:
			seen[0]++;
			break;
		case 10:
			seen[1]++;
			break;
		case 20:
			seen[2]++;
			break;
		case 30:
			seen[3]++;
			break;
		default:
			fail_msg("kept pref %u", h[i].pref);
		}
	}
	assert_int_equal(seen[0] + seen[1] + seen[2] + seen[3], 4);
	assert_int_equal(msg_mx(&p, &rcode, h, 0, &n), 8);
	assert_int_equal(n, 0);
}

static void
test_msg_mx_bad_records(void **state)
{
	struct pkt p;
	struct dns_host h[4];
	size_t n, at;
	int rcode;

	/* Counted but not stored: forward pointer, pointer to itself,
	 * trailing byte after the name, RDLENGTH 2, bad byte. */
	msg_begin(&p, 0, 6, "bad.example", 15);
	at = rr_begin(&p, 15, 1);
	put16(&p, 1);
	put16(&p, 0xc000 | (unsigned)(p.n + 2));
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 2);
	put16(&p, 0xc000 | (unsigned)p.n);
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 3);
	put_name(&p, "mx");
	put8(&p, 'x');
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 4);
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 5);
	put_name(&p, "m x");
	rr_end(&p, at);
	at = rr_begin(&p, 15, 1);
	put16(&p, 6);
	put_name(&p, "good");
	rr_end(&p, at);
	assert_int_equal(msg_mx(&p, &rcode, h, 4, &n), 6);
	assert_int_equal(n, 1);
	assert_string_equal(h[0].name, "good");
	assert_int_equal(h[0].pref, 6);
}

static void
test_msg_malformed(void **state)
{
	struct pkt p, good;
	struct dns_host h[2];
	size_t n, at, cut;
	int rcode;

	msg_begin(&good, 0, 1, "x.example", 15);
	at = rr_begin(&good, 15, 1);
	put16(&good, 10);
	put_name(&good, "mx.x.example");
	rr_end(&good, at);
	assert_int_equal(msg_mx(&good, &rcode, h, 2, &n), 1);

	/* Every truncation of a good message is malformed. */
	for (cut = 0; cut < good.n; cut++) {
		p = good;
		p.n = cut;
		assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), -1);
		assert_int_equal(n, 0);
	}
	/* QR clear: a query, not a response. */
	p = good;
	p.b[2] &= 0x7f;
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), -1);
	/* RDLENGTH past the end. */
	p = good;
	p.b[at + 1]++;
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), -1);
	/* ANCOUNT larger than what is there. */
	p = good;
	p.b[7] = 2;
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), -1);
	/* Label type 01 in the question. */
	p = good;
	p.b[12] = 0x41;
	assert_int_equal(msg_mx(&p, &rcode, h, 2, &n), -1);
	assert_int_equal(dns_msg_mx(NULL, 0, &rcode, h, 2, &n), -1);
}

static void
test_msg_addrs(void **state)
{
	struct pkt p;
	struct dns_host h;
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;
	char ip[INET6_ADDRSTRLEN];
	size_t at, i;
	int rcode;

	memset(&h, 0, sizeof(h));
	msg_begin(&p, 0, 3, "mx.example", 1);
	at = rr_begin(&p, 1, 1);
	put_bytes(&p, "\x7f\x00\x00\x02", 4);
	rr_end(&p, at);
	at = rr_begin(&p, 1, 1);
	put_bytes(&p, "\x7f\x00\x00", 3); /* wrong size: ignored */
	rr_end(&p, at);
	at = rr_begin(&p, 28, 1); /* other type: ignored */
	put_bytes(&p, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16);
	rr_end(&p, at);
	assert_int_equal(msg_addrs(&p, &rcode, 1, &h, 2525), 2);
	assert_int_equal(rcode, 0);
	assert_int_equal(h.naddr, 1);
	sin = (const struct sockaddr_in *)&h.addr[0];
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 2525);
	assert_int_equal(h.addrlen[0], sizeof(struct sockaddr_in));
	inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
	assert_string_equal(ip, "127.0.0.2");

	/* AAAA appended after the A. */
	assert_int_equal(msg_addrs(&p, &rcode, 28, &h, 25), 1);
	assert_int_equal(h.naddr, 2);
	sin6 = (const struct sockaddr_in6 *)&h.addr[1];
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 25);
	assert_int_equal(h.addrlen[1], sizeof(struct sockaddr_in6));
	inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
	assert_string_equal(ip, "::1");

	/* At most DNS_MAX_ADDRS. */
	memset(&h, 0, sizeof(h));
	msg_begin(&p, 0, DNS_MAX_ADDRS + 3, "many.example", 1);
	for (i = 0; i < DNS_MAX_ADDRS + 3; i++) {
		uint8_t a[4] = {10, 0, 0, (uint8_t)i};

		at = rr_begin(&p, 1, 1);
		put_bytes(&p, a, 4);
		rr_end(&p, at);
	}
	assert_int_equal(msg_addrs(&p, &rcode, 1, &h, 25), DNS_MAX_ADDRS + 3);
	assert_int_equal(h.naddr, DNS_MAX_ADDRS);
	sin = (const struct sockaddr_in *)&h.addr[DNS_MAX_ADDRS - 1];
	assert_int_equal(
	    ((const uint8_t *)&sin->sin_addr)[3], DNS_MAX_ADDRS - 1);

	/* Only A and AAAA. */
	assert_int_equal(msg_addrs(&p, &rcode, 15, &h, 25), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mx_rdata_basic),
	    cmocka_unit_test(test_mx_rdata_root),
	    cmocka_unit_test(test_mx_rdata_label_63_64),
	    cmocka_unit_test(test_mx_rdata_name_255_256),
	    cmocka_unit_test(test_mx_rdata_pointer_rejected),
	    cmocka_unit_test(test_mx_rdata_trailing_and_truncated),
	    cmocka_unit_test(test_mx_rdata_bad_bytes),
	    cmocka_unit_test(test_order_by_pref),
	    cmocka_unit_test(test_order_ties_exact),
	    cmocka_unit_test(test_order_ties_vary),
	    cmocka_unit_test(test_order_ties_even),
	    cmocka_unit_test(test_order_duplicates),
	    cmocka_unit_test(test_order_edge),
	    cmocka_unit_test(test_msg_mx_compressed),
	    cmocka_unit_test(test_msg_mx_cname_and_others),
	    cmocka_unit_test(test_msg_mx_null_and_nodata),
	    cmocka_unit_test(test_msg_mx_keeps_lowest),
	    cmocka_unit_test(test_msg_mx_bad_records),
	    cmocka_unit_test(test_msg_malformed),
	    cmocka_unit_test(test_msg_addrs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
