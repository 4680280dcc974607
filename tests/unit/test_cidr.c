/*
 * test_cidr.c - unit tests for cidr.c: parsing (prefix range, host bits
 * cleared, IPv4-mapped networks), list parsing and its error message,
 * formatting, and matching of IPv4, IPv6 and IPv4-mapped client addresses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "cidr.h"

/* cidr_format() of s, which must parse. */
static const char *
fmt(const char *s)
{
	static char buf[64];
	struct cidr c;

	assert_int_equal(cidr_parse(s, &c), 0);
	cidr_format(&c, buf, sizeof(buf));
	return buf;
}

static struct sockaddr_storage
sa_of(const char *addr)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(25);
	} else {
		assert_int_equal(
		    inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(25);
	}
	return ss;
}

static int
match(const struct cidr_list *l, const char *addr)
{
	struct sockaddr_storage ss = sa_of(addr);

	return cidr_list_match(l, (struct sockaddr *)&ss);
}

static void
test_parse_v4(void **state)
{
	struct cidr c;
	static const uint8_t net[4] = {10, 0, 0, 0};

	assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_memory_equal(c.addr, net, 4);

	assert_int_equal(cidr_parse("192.0.2.7", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 32);
	assert_string_equal(fmt("192.0.2.7"), "192.0.2.7/32");
	assert_string_equal(fmt("0.0.0.0/0"), "0.0.0.0/0");
	assert_string_equal(fmt("255.255.255.255/32"), "255.255.255.255/32");
}

static void
test_parse_v6(void **state)
{
	struct cidr c;

	assert_int_equal(cidr_parse("2001:db8::/32", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(c.addr[0], 0x20);
	assert_int_equal(c.addr[1], 0x01);
	assert_int_equal(c.addr[2], 0x0d);
	assert_int_equal(c.addr[3], 0xb8);

	assert_int_equal(cidr_parse("::1", &c), 0);
	assert_int_equal(c.prefix, 128);
	assert_string_equal(fmt("::1"), "::1/128");
	assert_string_equal(fmt("::/0"), "::/0");
	assert_string_equal(fmt("fe80::/10"), "fe80::/10");
}

static void
test_parse_clears_host_bits(void **state)
{
	struct cidr c;
	size_t i;

	assert_string_equal(fmt("10.1.2.3/8"), "10.0.0.0/8");
	assert_string_equal(fmt("192.168.255.255/17"), "192.168.128.0/17");
	assert_string_equal(fmt("10.1.2.3/0"), "0.0.0.0/0");
	assert_string_equal(fmt("10.1.2.3/31"), "10.1.2.2/31");
	assert_string_equal(fmt("2001:db8:ffff::1/32"), "2001:db8::/32");
	assert_string_equal(fmt("2001:db8::ffff/127"), "2001:db8::fffe/127");
	assert_string_equal(fmt("ffff::/1"), "8000::/1");

	/* The unused bytes of an IPv4 entry are zero. */
	assert_int_equal(cidr_parse("10.1.2.3/8", &c), 0);
	for (i = 4; i < 16; i++)
		assert_int_equal(c.addr[i], 0);
}

static void
test_parse_v4_mapped(void **state)
{
	struct cidr c;

	assert_int_equal(cidr_parse("::ffff:10.0.0.0/104", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_string_equal(fmt("::ffff:10.0.0.0/104"), "10.0.0.0/8");
	assert_string_equal(fmt("::ffff:192.0.2.1"), "192.0.2.1/32");
	assert_string_equal(fmt("::ffff:0:0/96"), "0.0.0.0/0");
	/* Wider than the mapped space: stays IPv6. */
	assert_int_equal(cidr_parse("::ffff:0:0/95", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_string_equal(fmt("::ffff:0:0/95"), "::fffe:0:0/95");
}

static void
test_parse_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "10.0.0.0/33",
	    "::/129",
	    "10.0.0.0/",
	    "10.0.0.0/-1",
	    "10.0.0.0/+8",
	    "10.0.0.0/8x",
	    "10.0.0.0/ 8",
	    "10.0.0/8",
	    "10.0.0.256",
	    "abc",
	    "/8",
	    "10.0.0.0/8/8",
	    "10.0.0.0/0008",
	    " 10.0.0.0/8",
	    "10.0.0.0/8 ",
	    "1.2.3.4/1e1",
	    "example.com/8",
	    "fe80::1%eth0/64",
	    "::1/1280",
	    "2001:db8::/",
	    "2001:db8:0:0:0:0:0:0:1/64",
	};
	struct cidr c;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cidr_parse(bad[i], &c) != -1)
			fail_msg("accepted '%s'", bad[i]);
	}
	assert_int_equal(cidr_parse(NULL, &c), -1);
	assert_int_equal(cidr_parse("10.0.0.0/8", NULL), -1);
}

static void
test_list_parse(void **state)
{
	struct cidr_list l = {NULL, 0};
	char err[128] = "";
	char buf[64];

	assert_int_equal(
	    cidr_list_parse("127.0.0.0/8, ::1/128", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 2);
	cidr_format(&l.v[0], buf, sizeof(buf));
	assert_string_equal(buf, "127.0.0.0/8");
	cidr_format(&l.v[1], buf, sizeof(buf));
	assert_string_equal(buf, "::1/128");

	/* Appends; commas and/or white space separate; empties skipped. */
	assert_int_equal(cidr_list_parse("10.0.0.0/8,192.0.2.0/24 \t"
					 "2001:db8::/32 , ,fe80::/10,",
			     &l, err, sizeof(err)),
	    0);
	assert_int_equal(l.n, 6);
	cidr_format(&l.v[5], buf, sizeof(buf));
	assert_string_equal(buf, "fe80::/10");

	cidr_list_free(&l);
	assert_null(l.v);
	assert_int_equal(l.n, 0);
	cidr_list_free(&l); /* twice is harmless */

	assert_int_equal(cidr_list_parse("", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(cidr_list_parse(" ,\t, ", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	cidr_list_free(&l);
}

static void
test_list_parse_error(void **state)
{
	struct cidr_list l = {NULL, 0};
	char err[128] = "";

	assert_int_equal(
	    cidr_list_parse("192.0.2.0/24", &l, err, sizeof(err)), 0);
	assert_int_equal(cidr_list_parse("10.1.0.0/16, 10.0.0.0/33, ::1", &l,
			     err, sizeof(err)),
	    -1);
	assert_string_equal(err, "bad network '10.0.0.0/33'");
	/* What this call appended is rolled back; the rest is kept. */
	assert_int_equal(l.n, 1);

	assert_int_equal(
	    cidr_list_parse("10.0.0.0/8 bogus", &l, err, sizeof(err)), -1);
	assert_string_equal(err, "bad network 'bogus'");
	assert_int_equal(l.n, 1);

	/* Non-printable bytes are not copied into the message. */
	assert_int_equal(
	    cidr_list_parse("10.0.0.0/8\x01", &l, err, sizeof(err)), -1);
	assert_string_equal(err, "bad network '10.0.0.0/8?'");

	/* A very long entry is cut in the message. */
	assert_int_equal(cidr_list_parse("1111111111111111111111111111111111"
					 "1111111111111111111111111111111111111"
					 "1111111111111111111111111",
			     &l, err, sizeof(err)),
	    -1);
	assert_non_null(strstr(err, "...'"));

	/* err may be NULL. */
	assert_int_equal(cidr_list_parse("x", &l, NULL, 0), -1);
	cidr_list_free(&l);
}

static void
test_match_v4(void **state)
{
	struct cidr_list l = {NULL, 0};
	char err[128];

	assert_int_equal(
	    cidr_list_parse("10.0.0.0/8, 192.0.2.128/25", &l, err, sizeof(err)),
	    0);
	assert_true(match(&l, "10.0.0.0"));
	assert_true(match(&l, "10.255.255.255"));
	assert_false(match(&l, "11.0.0.0"));
	assert_false(match(&l, "9.255.255.255"));
	assert_true(match(&l, "192.0.2.128"));
	assert_true(match(&l, "192.0.2.255"));
	assert_false(match(&l, "192.0.2.127"));
	/* An IPv4 client never matches IPv6 networks, even ::/0. */
	cidr_list_free(&l);
	assert_int_equal(cidr_list_parse("::/0", &l, err, sizeof(err)), 0);
	assert_false(match(&l, "10.0.0.1"));
	cidr_list_free(&l);

	assert_int_equal(cidr_list_parse("0.0.0.0/0", &l, err, sizeof(err)), 0);
	assert_true(match(&l, "203.0.113.9"));
	assert_false(match(&l, "2001:db8::1"));
	cidr_list_free(&l);
}

static void
test_match_v6(void **state)
{
	struct cidr_list l = {NULL, 0};
	char err[128];

	assert_int_equal(cidr_list_parse("2001:db8::/32 ::1/128 fe80::/10", &l,
			     err, sizeof(err)),
	    0);
	assert_true(match(&l, "2001:db8::1"));
	assert_true(match(&l, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
	assert_false(match(&l, "2001:db9::"));
	assert_false(match(&l, "2001:db7:ffff::"));
	assert_true(match(&l, "::1"));
	assert_false(match(&l, "::2"));
	assert_true(match(&l, "febf::1"));
	assert_false(match(&l, "fec0::1"));
	assert_false(match(&l, "127.0.0.1"));
	cidr_list_free(&l);
}

static void
test_match_v4_mapped(void **state)
{
	struct cidr_list l = {NULL, 0};
	char err[128];

	assert_int_equal(
	    cidr_list_parse("127.0.0.0/8, 192.0.2.0/24", &l, err, sizeof(err)),
	    0);
	assert_true(match(&l, "::ffff:127.0.0.1"));
	assert_true(match(&l, "::ffff:192.0.2.200"));
	assert_false(match(&l, "::ffff:192.0.3.1"));
	/* Not mapped: ::7f00:1 (IPv4-compatible) is plain IPv6. */
	assert_false(match(&l, "::127.0.0.1"));
	cidr_list_free(&l);

	/* A network written in mapped form matches both spellings. */
	assert_int_equal(
	    cidr_list_parse("::ffff:10.0.0.0/104", &l, err, sizeof(err)), 0);
	assert_true(match(&l, "10.9.8.7"));
	assert_true(match(&l, "::ffff:10.9.8.7"));
	assert_false(match(&l, "::ffff:11.0.0.1"));
	cidr_list_free(&l);
}

static void
test_match_edge(void **state)
{
	struct cidr_list l = {NULL, 0};
	struct sockaddr_storage ss;
	char err[128];

	/* Empty list, NULL arguments, other families. */
	memset(&ss, 0, sizeof(ss));
	assert_false(match(&l, "127.0.0.1"));
	assert_int_equal(
	    cidr_list_parse("0.0.0.0/0 ::/0", &l, err, sizeof(err)), 0);
	assert_int_equal(cidr_list_match(&l, NULL), 0);
	assert_int_equal(cidr_list_match(NULL, (struct sockaddr *)&ss), 0);
	ss.ss_family = AF_UNIX;
	assert_int_equal(cidr_list_match(&l, (struct sockaddr *)&ss), 0);
	cidr_list_free(&l);
}

static void
test_format_small_buffer(void **state)
{
	struct cidr c;
	char buf[8];

	assert_int_equal(cidr_parse("192.168.100.0/24", &c), 0);
	cidr_format(&c, buf, sizeof(buf));
	assert_string_equal(buf, "192.168");
	memset(&c, 0, sizeof(c));
	cidr_format(&c, buf, sizeof(buf));
	assert_string_equal(buf, "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_v4),
	    cmocka_unit_test(test_parse_v6),
	    cmocka_unit_test(test_parse_clears_host_bits),
	    cmocka_unit_test(test_parse_v4_mapped),
	    cmocka_unit_test(test_parse_bad),
	    cmocka_unit_test(test_list_parse),
	    cmocka_unit_test(test_list_parse_error),
	    cmocka_unit_test(test_match_v4),
	    cmocka_unit_test(test_match_v6),
	    cmocka_unit_test(test_match_v4_mapped),
	    cmocka_unit_test(test_match_edge),
	    cmocka_unit_test(test_format_small_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
