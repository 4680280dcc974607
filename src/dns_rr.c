/*
 * dns_rr.c - pure DNS helpers for dns.c: MX RDATA parsing, MX host
 * ordering, and a reader for the answer section of a DNS response.
 *
 * Role: everything in this file is a pure function over its arguments (no
 * I/O, no global state, no allocation), so that the bytes a DNS server
 * sends can be unit tested and fuzzed without a resolver. dns.c does the
 * asking (libunbound) and the policy (RFC 5321 5.1, RFC 7505); this file
 * only turns bytes into names, preferences and addresses.
 *
 * Invariants:
 *  - No read ever goes past msg + len or rd + len; nothing relies on a NUL.
 *  - A name written by these functions is NUL-terminated, lower case,
 *    without the final dot, at most 253 characters ("" for the root), and
 *    holds only printable ASCII other than '.' inside a label, so its text
 *    form reads back as the same labels (a label holding '.', a space, a
 *    control byte or a non-ASCII byte is refused, not escaped).
 *  - Compression pointers are followed only in a whole message
 *    (dns_msg_*), only backwards, so every walk ends; a lone RDATA
 *    (dns_parse_mx_rdata) must be uncompressed.
 *
 * dns_msg_mx() and dns_msg_addrs() are not declared in dns.h (that header
 * is frozen as a contract): their prototypes are repeated, word for word,
 * in dns.c, tests/unit/test_dns_rr.c and tests/fuzz/fuzz_dns_rr.c, and
 * below so that the definitions are checked against them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "dns.h"


#define DNS_HDR_LEN 12
#define DNS_T_A 1
#define DNS_T_MX 15
#define DNS_T_AAAA 28
#define DNS_C_IN 1
#define DNS_WIRE_NAME_MAX 255 /* RFC 1035 2.3.4, length octets included */
#define DNS_LABEL_MAX 63

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

/*
 * Append one label (len bytes at p) to the text name out (outlen bytes,
 * *pos characters used so far, NUL kept at out[*pos]). Lower-cases ASCII.
 * Returns -1 if a byte has no plain text form or out is too small.
 */
static int
label_append(
    const uint8_t *p, size_t len, char *out, size_t outlen, size_t *pos)
{
	size_t i, need;

	need = len + (*pos > 0 ? 1 : 0) + 1;
	if (outlen < need || *pos > outlen - need)
		return -1;
	if (*pos > 0)
		out[(*pos)++] = '.';
	for (i = 0; i < len; i++) {
		uint8_t c = p[i];

		if (c <= 0x20 || c >= 0x7f || c == '.')
			return -1;
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		out[(*pos)++] = (char)c;
	}
	out[*pos] = '\0';
	return 0;
}

int
dns_parse_mx_rdata(
    const uint8_t *rd, size_t len, unsigned *pref, char *name, size_t namelen)
{
	size_t off = 2, wire = 0, pos = 0;

	if (name == NULL || namelen == 0)
		return -1;
	name[0] = '\0';
	if (rd == NULL || len < 3)
		return -1;
	for (;;) {
		uint8_t l;

		if (off >= len)
			goto fail; /* truncated: no root label */
		l = rd[off++];
		if (l & 0xc0)
			goto fail; /* pointer (11), or 01/10: label over 63 */
		wire += 1 + (size_t)l;
		if (wire > DNS_WIRE_NAME_MAX)
			goto fail;
		if (l == 0)
			break;
		if (len - off < l)
			goto fail;
		if (label_append(rd + off, l, name, namelen, &pos) == -1)
			goto fail;
		off += l;
	}
	if (off != len)
		goto fail; /* trailing bytes after the name */
	*pref = get16(rd);
	return 0;
fail:
	name[0] = '\0';
	return -1;
}

/* Multiply-shift: a value in [0, bound) from a 32-bit random value, never
 * looping (a rejection loop could spin on a bad generator). */
static size_t
rnd_below(uint32_t (*rnd)(void), size_t bound)
{
	return (size_t)(((uint64_t)rnd() * (uint64_t)bound) >> 32);
}

static void
host_swap(struct dns_host *a, struct dns_host *b)
{
	struct dns_host t;

	if (a == b)
		return;
	memcpy(&t, a, sizeof(t));
	memcpy(a, b, sizeof(t));
	memcpy(b, &t, sizeof(t));
}

/*
 * Shuffle all hosts (Fisher-Yates), then sort stably by preference
 * (insertion sort: n is at most a few dozen): equal preferences end up in
 * a uniformly random order. Then drop later copies of a name, so the copy
 * with the best preference stays.
 */
size_t
dns_order_hosts(struct dns_host *hosts, size_t n, uint32_t (*rnd)(void))
{
	size_t i, j, k;

	if (hosts == NULL || n == 0)
		return 0;
	for (i = n - 1; i > 0; i--) {
		j = rnd_below(rnd, i + 1);
		host_swap(&hosts[i], &hosts[j]);
	}
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && hosts[j - 1].pref > hosts[j].pref; j--)
			host_swap(&hosts[j - 1], &hosts[j]);
	k = 0;
	for (i = 0; i < n; i++) {
		for (j = 0; j < k; j++)
			if (strcmp(hosts[j].name, hosts[i].name) == 0)
				break;
		if (j < k)
			continue; /* duplicate of a kept, better host */
		if (k != i)
			memcpy(&hosts[k], &hosts[i], sizeof(hosts[k]));
		k++;
	}
	return k;
}

/*
 * Skip a possibly compressed name at msg[*off]; on return *off is just past
 * it (past the first pointer, if any). Returns 0 or -1.
 */
static int
msg_skip_name(const uint8_t *msg, size_t len, size_t *off)
{
	size_t o = *off;

	for (;;) {
		uint8_t l;

		if (o >= len)
			return -1;
		l = msg[o];
		if ((l & 0xc0) == 0xc0) {
			if (len - o < 2)
				return -1;
			*off = o + 2;
			return 0;
		}
		if (l & 0xc0)
			return -1;
		o++;
		if (l == 0)
			break;
		if (len - o < l)
			return -1;
		o += l;
	}
	*off = o;
	return 0;
}

/*
 * Write the name at msg[off], compression followed, uncompressed in wire
 * form into out (out must hold DNS_WIRE_NAME_MAX bytes). A pointer must
 * point before the label that holds it, so the walk ends. Returns the wire
 * length, or -1.
 */
static int
msg_unpack_name(const uint8_t *msg, size_t len, size_t off, uint8_t *out)
{
	size_t w = 0;

	for (;;) {
		uint8_t l;

		if (off >= len)
			return -1;
		l = msg[off];
		if ((l & 0xc0) == 0xc0) {
			size_t to;

			if (len - off < 2)
				return -1;
			to = (size_t)get16(msg + off) & 0x3fff;
			if (to >= off)
				return -1;
			off = to;
			continue;
		}
		if (l & 0xc0)
			return -1;
		if (w + 1 + (size_t)l > DNS_WIRE_NAME_MAX)
			return -1;
		off++;
		if (len - off < l)
			return -1;
		out[w++] = l;
		if (l == 0)
			return (int)w;
		memcpy(out + w, msg + off, l);
		w += l;
		off += l;
	}
}

/* One resource record of the answer section. */
struct msg_rr {
	uint16_t type, class;
	size_t rdoff, rdlen; /* RDATA at msg[rdoff .. rdoff + rdlen) */
};

/*
 * Check the header of a response, return its RCODE in *rcode, skip the
 * question section; *off is then the first answer RR and *ancount their
 * number. Returns 0 or -1.
 */
static int
msg_start(
    const uint8_t *msg, size_t len, int *rcode, size_t *off, unsigned *ancount)
{
	unsigned qd, i;

	if (msg == NULL || len < DNS_HDR_LEN)
		return -1;
	if ((msg[2] & 0x80) == 0)
		return -1; /* QR clear: not a response */
	*rcode = msg[3] & 0x0f;
	qd = get16(msg + 4);
	*ancount = get16(msg + 6);
	*off = DNS_HDR_LEN;
	for (i = 0; i < qd; i++) {
		if (msg_skip_name(msg, len, off) == -1 || len - *off < 4)
			return -1;
		*off += 4;
	}
	return 0;
}

/* Read the RR at *off and move past it. Returns 0 or -1. */
static int
msg_next_rr(const uint8_t *msg, size_t len, size_t *off, struct msg_rr *rr)
{
	if (msg_skip_name(msg, len, off) == -1 || len - *off < 10)
		return -1;
	rr->type = get16(msg + *off);
	rr->class = get16(msg + *off + 2);
	rr->rdlen = get16(msg + *off + 8);
	rr->rdoff = *off + 10;
	if (len - rr->rdoff < rr->rdlen)
		return -1;
	*off = rr->rdoff + rr->rdlen;
	return 0;
}

/*
 * Every MX record of the answer section of a response (any owner: the
 * answer holds the CNAME chain, if any, and the final RRset). Each target
 * is decompressed and parsed with dns_parse_mx_rdata(); an unparsable
 * record is counted but not stored. hosts (max entries, caller-owned) gets
 * name and pref of up to max records, keeping the lowest preferences when
 * there are more; addresses are cleared. Returns the number of MX records
 * seen (>= *nhosts), or -1 if the message is malformed. *rcode is the
 * header's RCODE whenever the header could be read.
 */
int
dns_msg_mx(const uint8_t *msg, size_t len, int *rcode, struct dns_host *hosts,
    size_t max, size_t *nhosts)
{
	size_t off, n = 0;
	unsigned an, i;
	int seen = 0;

	*nhosts = 0;
	*rcode = -1;
	if (msg_start(msg, len, rcode, &off, &an) == -1)
		return -1;
	for (i = 0; i < an; i++) {
		struct msg_rr rr;
		uint8_t rd[2 + DNS_WIRE_NAME_MAX];
		char name[DNS_NAME_MAX + 1];
		unsigned pref;
		size_t k, end;
		int w;

		if (msg_next_rr(msg, len, &off, &rr) == -1)
			return -1;
		if (rr.type != DNS_T_MX || rr.class != DNS_C_IN)
			continue;
		seen++;
		end = rr.rdoff + 2;
		if (rr.rdlen < 3 ||
		    msg_skip_name(msg, rr.rdoff + rr.rdlen, &end) == -1 ||
		    end != rr.rdoff + rr.rdlen)
			continue; /* truncated, or bytes after the name */
		w = msg_unpack_name(
		    msg, rr.rdoff + rr.rdlen, rr.rdoff + 2, rd + 2);
		if (w == -1)
			continue;
		memcpy(rd, msg + rr.rdoff, 2);
		if (dns_parse_mx_rdata(
			rd, 2 + (size_t)w, &pref, name, sizeof(name)) == -1)
			continue;
		if (n < max) {
			k = n++;
		} else {
			size_t j;

			if (max == 0)
				continue;
			k = 0;
			for (j = 1; j < max; j++)
				if (hosts[j].pref > hosts[k].pref)
					k = j;
			if (hosts[k].pref <= pref)
				continue;
		}
		memset(&hosts[k], 0, sizeof(hosts[k]));
		memcpy(hosts[k].name, name, strlen(name) + 1);
		hosts[k].pref = pref;
	}
	*nhosts = n;
	return seen;
}

/*
 * Append the addresses of every A (qtype 1) or AAAA (qtype 28) record of
 * the answer section to h, as sockaddr_in/sockaddr_in6 with port (host
 * order), while h->naddr < DNS_MAX_ADDRS. A record of the wrong size is
 * ignored. Returns the number of records of qtype seen, or -1 if the
 * message is malformed or qtype is neither. *rcode as for dns_msg_mx().
 */
int
dns_msg_addrs(const uint8_t *msg, size_t len, int *rcode, int qtype,
    struct dns_host *h, uint16_t port)
{
	size_t off;
	unsigned an, i;
	int seen = 0;

	*rcode = -1;
	if (qtype != DNS_T_A && qtype != DNS_T_AAAA)
		return -1;
	if (msg_start(msg, len, rcode, &off, &an) == -1)
		return -1;
	for (i = 0; i < an; i++) {
		struct msg_rr rr;
		struct sockaddr_storage *ss;

		if (msg_next_rr(msg, len, &off, &rr) == -1)
			return -1;
		if (rr.type != qtype || rr.class != DNS_C_IN)
			continue;
		seen++;
		if (h->naddr >= DNS_MAX_ADDRS)
			continue;
		ss = &h->addr[h->naddr];
		memset(ss, 0, sizeof(*ss));
		if (qtype == DNS_T_A && rr.rdlen == 4) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;

			sin->sin_family = AF_INET;
			sin->sin_port = htons(port);
			memcpy(&sin->sin_addr, msg + rr.rdoff, 4);
			h->addrlen[h->naddr++] = sizeof(*sin);
		} else if (qtype == DNS_T_AAAA && rr.rdlen == 16) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(port);
			memcpy(&sin6->sin6_addr, msg + rr.rdoff, 16);
			h->addrlen[h->naddr++] = sizeof(*sin6);
		}
	}
	return seen;
}
