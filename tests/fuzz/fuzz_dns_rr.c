/*
 * fuzz_dns_rr.c - libFuzzer target for src/dns_rr.c.
 *
 * The input is copied into a heap buffer of exactly its size, so ASan
 * reports any read past the end. It is read three ways:
 *  - as MX RDATA (dns_parse_mx_rdata): a name that parses is NUL-terminated,
 *    at most 253 characters, lower case, free of bytes with no text form,
 *    has no empty label and no label over 63; its wire form rebuilt from
 *    the text parses again to the same name and preference;
 *  - as a whole DNS response (dns_msg_mx, dns_msg_addrs): counts are
 *    consistent, stored names obey the same rules, addresses carry the
 *    requested port and family;
 *  - as MX hosts: the input is cut into (preference, name) records, hosts
 *    are ordered with a generator fed from the input (dns_order_hosts), and
 *    the result must be sorted by preference, free of duplicate names, and
 *    a subset of the input of the right size.
 * Invariants are checked with abort().
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       src/dns_rr.c tests/fuzz/fuzz_dns_rr.c -o fuzz_dns_rr
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

/* Internal interface of dns_rr.c (not in dns.h; see dns_rr.c). */

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "invariant failed: %s (line %d)\n",    \
			    #cond, __LINE__);                                  \
			abort();                                               \
		}                                                              \
	} while (0)

#define MAX_HOSTS 24

/* A name as the helpers promise to write it. */
static void
check_name(const char *name, size_t cap)
{
	size_t len = strnlen(name, cap), label = 0, i;

	CHECK(len < cap);
	CHECK(len <= 253);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		CHECK(c > 0x20 && c < 0x7f);
		CHECK(!(c >= 'A' && c <= 'Z'));
		if (c == '.') {
			CHECK(label > 0);
			label = 0;
		} else {
			label++;
			CHECK(label <= 63);
		}
	}
	CHECK(len == 0 || label > 0);
}

/* Wire form of a checked text name into out; returns its length. */
static size_t
name_to_wire(const char *name, uint8_t *out)
{
	size_t n = 0, start = 0, i, len = strlen(name);

	for (i = 0; i <= len; i++) {
		if (i == len || name[i] == '.') {
			if (i > start) {
				out[n++] = (uint8_t)(i - start);
				memcpy(out + n, name + start, i - start);
				n += i - start;
			}
			start = i + 1;
		}
	}
	out[n++] = 0;
	return n;
}

static void
fuzz_rdata(const uint8_t *data, size_t size)
{
	char name[DNS_NAME_MAX + 1], again[DNS_NAME_MAX + 1];
	uint8_t wire[2 + 256];
	unsigned pref, pref2;
	size_t n;

	if (dns_parse_mx_rdata(data, size, &pref, name, sizeof(name)) == -1) {
		CHECK(name[0] == '\0');
		return;
	}
	CHECK(pref <= 0xffff);
	CHECK(pref == ((unsigned)data[0] << 8 | data[1]));
	check_name(name, sizeof(name));
	/* Case aside, the input is exactly the wire form of the name. */
	wire[0] = (uint8_t)(pref >> 8);
	wire[1] = (uint8_t)pref;
	n = 2 + name_to_wire(name, wire + 2);
	CHECK(n == size);
	CHECK(dns_parse_mx_rdata(wire, n, &pref2, again, sizeof(again)) == 0);
	CHECK(pref2 == pref);
	CHECK(strcmp(again, name) == 0);
}

static void
fuzz_msg(const uint8_t *data, size_t size)
{
	struct dns_host *hosts, h;
	size_t n, i, k;
	int seen, rcode, qtype;

	hosts = calloc(4, sizeof(*hosts));
	CHECK(hosts != NULL);
	seen = dns_msg_mx(data, size, &rcode, hosts, 4, &n);
	CHECK(seen >= -1);
	if (seen == -1) {
		CHECK(n == 0);
	} else {
		CHECK(rcode >= 0 && rcode <= 15);
		CHECK(n <= 4 && n <= (size_t)seen);
		for (i = 0; i < n; i++) {
			check_name(hosts[i].name, sizeof(hosts[i].name));
			CHECK(hosts[i].pref <= 0xffff);
			CHECK(hosts[i].naddr == 0);
		}
	}
	free(hosts);

	for (qtype = 1; qtype <= 28; qtype += 27) {
		memset(&h, 0, sizeof(h));
		seen = dns_msg_addrs(data, size, &rcode, qtype, &h, 2525);
		CHECK(seen >= -1);
		CHECK(h.naddr <= DNS_MAX_ADDRS);
		CHECK(seen == -1 || h.naddr <= (size_t)seen);
		for (k = 0; k < h.naddr; k++) {
			const struct sockaddr_in *sin =
			    (const void *)&h.addr[k];
			const struct sockaddr_in6 *sin6 =
			    (const void *)&h.addr[k];

			if (qtype == 1) {
				CHECK(sin->sin_family == AF_INET);
				CHECK(ntohs(sin->sin_port) == 2525);
				CHECK(h.addrlen[k] == sizeof(*sin));
			} else {
				CHECK(sin6->sin6_family == AF_INET6);
				CHECK(ntohs(sin6->sin6_port) == 2525);
				CHECK(h.addrlen[k] == sizeof(*sin6));
			}
		}
	}
}

/* Generator for dns_order_hosts, fed from the input. */
static const uint8_t *rnd_data;
static size_t rnd_len, rnd_pos;

static uint32_t
rnd_from_input(void)
{
	uint32_t r = 0;
	size_t i;

	for (i = 0; i < 4; i++) {
		r = r << 8 | (rnd_len > 0 ? rnd_data[rnd_pos % rnd_len] : 0);
		rnd_pos++;
	}
	return r;
}

static void
fuzz_order(const uint8_t *data, size_t size)
{
	struct dns_host *in, *out;
	size_t n = 0, off = 0, m, i, j, distinct = 0;

	in = calloc(MAX_HOSTS, sizeof(*in));
	out = calloc(MAX_HOSTS, sizeof(*out));
	CHECK(in != NULL && out != NULL);
	/* Records: 1 byte preference (few values: many ties), 1 byte name
	 * length (mod 4: many duplicates), the name. */
	while (n < MAX_HOSTS && size - off >= 2) {
		size_t len = data[off + 1] % 4;

		if (size - off - 2 < len)
			break;
		in[n].pref = data[off] % 5;
		memcpy(in[n].name, data + off + 2, len);
		in[n].name[len] = '\0';
		off += 2 + len;
		n++;
	}
	for (i = 0; i < n; i++) {
		for (j = 0; j < i; j++)
			if (strcmp(in[j].name, in[i].name) == 0)
				break;
		distinct += j == i;
	}
	memcpy(out, in, n * sizeof(*in));
	rnd_data = data;
	rnd_len = size;
	rnd_pos = 0;
	m = dns_order_hosts(out, n, rnd_from_input);
	CHECK(m == distinct);
	for (i = 0; i < m; i++) {
		unsigned best = 0xffffffffu;

		if (i > 0)
			CHECK(out[i - 1].pref <= out[i].pref);
		for (j = 0; j < i; j++)
			CHECK(strcmp(out[j].name, out[i].name) != 0);
		/* Each kept host is the best-preference copy of its name. */
		for (j = 0; j < n; j++)
			if (strcmp(in[j].name, out[i].name) == 0 &&
			    in[j].pref < best)
				best = in[j].pref;
		CHECK(best == out[i].pref);
	}
	free(in);
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size > 0 ? size : 1);

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	fuzz_rdata(copy, size);
	fuzz_msg(copy, size);
	fuzz_order(copy, size);
	free(copy);
	return 0;
}
