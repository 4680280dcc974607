/*
 * fuzz_data_scan.c - libFuzzer target for the DATA/BDAT content scanner.
 *
 * The first input octet picks the mode (bit 0: BDAT, bit 1: normalize),
 * max_line (bits 2-3: none, 1, 10, 1000) and the split pattern (bits 4-7:
 * 0 byte by byte, 1-7 fixed chunks of that size, 8-15 pseudo-random chunk
 * sizes seeded by the pattern and the length). The rest is the content.
 *
 * It aborts when:
 *  - split feeding differs from one call in output, consumed count, final
 *    state, flags, line_len or out_total (the scanner must not depend on
 *    how the network cut the stream);
 *  - either differs from a byte-at-a-time reference model written from
 *    data_scan.h;
 *  - a DATA end is reported anywhere but right after CR LF "." CR LF (or
 *    ". CR LF" at the very start);
 *  - the output is longer than twice the input, or one call writes more
 *    than 2 * inlen + HELD_MAX (each call's buffer is malloc'ed to that
 *    exact size, so ASan also catches a write past it).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data_scan.h"

#define HELD_MAX 2 /* see DATA_SCAN_HELD_MAX in data_scan.c */

struct res {
	char *out;
	size_t outlen;
	size_t consumed;
	enum data_scan_state state;
	unsigned flags;
	uint64_t line_len;
	uint64_t out_total;
};

static void
check(int ok)
{
	if (!ok)
		abort();
}

/* Split pattern: the size of the next chunk. */
static size_t
next_chunk(unsigned pattern, uint32_t *seed)
{
	if (pattern == 0)
		return 1;
	if (pattern < 8)
		return pattern;
	*seed = *seed * 1103515245u + 12345u;
	return 1 + (*seed >> 16) % (pattern == 15 ? 300 : 4 * pattern);
}

static void
run(const char *in, size_t len, int bdat, int normalize, unsigned max_line,
    int split, unsigned pattern, struct res *r)
{
	struct data_scan s;
	size_t start = 0, off = 0;
	uint32_t seed = (uint32_t)len ^ pattern;
	char fin[2];
	size_t n;

	memset(r, 0, sizeof(*r));
	r->out = malloc(2 * len + 2 + 1);
	check(r->out != NULL);
	data_scan_init(&s, bdat, normalize, max_line);
	for (;;) {
		size_t chunk = split ? next_chunk(pattern, &seed) : len;
		size_t got, olen = 0, cap;
		char *o;

		if (chunk > len - start)
			chunk = len - start;
		cap = 2 * chunk + (split ? HELD_MAX : 0);
		o = malloc(cap + 1);
		check(o != NULL);
		got = data_scan(&s, in + start, chunk, o, &olen);
		check(got <= chunk);
		check(olen <= cap);
		memcpy(r->out + off, o, olen);
		off += olen;
		free(o);
		r->consumed += got;
		start += got;
		if (got < chunk) {
			check(data_scan_done(&s));
			break;
		}
		if (start == len)
			break;
	}
	if (bdat) {
		n = data_scan_finish(&s, fin);
		check(n <= 2);
		memcpy(r->out + off, fin, n);
		off += n;
	}
	check(off == s.out_total);
	check(off <= 2 * len);
	r->outlen = off;
	r->state = s.state;
	r->flags = s.flags;
	r->line_len = s.line_len;
	r->out_total = s.out_total;
}

/* Reference model: one byte at a time, no fast path. */
struct ref {
	enum data_scan_state st;
	unsigned flags;
	uint64_t len;
	unsigned max_line;
	int normalize;
	char *out;
	size_t o;
};

static void
ref_len(struct ref *m)
{
	m->len++;
	if (m->max_line && m->len > m->max_line)
		m->flags |= DATA_SCAN_LONG_LINE;
}

static void
ref_bare(struct ref *m, char c)
{
	m->flags |= c == '\r' ? DATA_SCAN_BARE_CR : DATA_SCAN_BARE_LF;
	if (m->normalize) {
		m->out[m->o++] = '\r';
		m->out[m->o++] = '\n';
	} else
		m->out[m->o++] = c;
	m->st = DS_TEXT;
}

static size_t
ref_scan(const unsigned char *in, size_t n, int bdat, struct ref *m)
{
	size_t i;

	m->st = DS_LINESTART;
	for (i = 0; i < n && m->st != DS_DONE; i++) {
		unsigned char c = in[i];
	again:
		switch (m->st) {
		case DS_LINESTART:
			if (c == '.' && !bdat) {
				ref_len(m);
				m->st = DS_DOT;
				break;
			}
			m->st = DS_TEXT;
			goto again;
		case DS_TEXT:
			ref_len(m);
			if (c == '\r')
				m->st = DS_CR;
			else if (c == '\n')
				ref_bare(m, '\n');
			else {
				if (c == 0)
					m->flags |= DATA_SCAN_NUL;
				if (c >= 0x80)
					m->flags |= DATA_SCAN_8BIT;
				m->out[m->o++] = (char)c;
			}
			break;
		case DS_CR:
			if (c == '\n') {
				ref_len(m);
				m->out[m->o++] = '\r';
				m->out[m->o++] = '\n';
				m->len = 0;
				m->st = DS_LINESTART;
				break;
			}
			ref_bare(m, '\r');
			goto again;
		case DS_DOT:
			if (c == '\r') {
				ref_len(m);
				m->st = DS_DOT_CR;
				break;
			}
			if (c == '\n')
				m->out[m->o++] = '.';
			m->st = DS_TEXT;
			goto again;
		case DS_DOT_CR:
			if (c == '\n') {
				ref_len(m);
				m->st = DS_DONE;
				break;
			}
			m->out[m->o++] = '.';
			ref_bare(m, '\r');
			goto again;
		case DS_DONE:
			break;
		}
	}
	if (bdat && m->st == DS_CR)
		ref_bare(m, '\r');
	return i;
}

static void
same(const struct res *a, const struct res *b)
{
	check(a->outlen == b->outlen);
	check(memcmp(a->out, b->out, a->outlen) == 0);
	check(a->consumed == b->consumed);
	check(a->state == b->state);
	check(a->flags == b->flags);
	check(a->line_len == b->line_len);
	check(a->out_total == b->out_total);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned max_lines[4] = {0, 1, 10, 1000};
	const char *in;
	size_t len;
	int bdat, normalize;
	unsigned max_line, pattern;
	struct res one, split;
	struct ref m;

	if (size == 0)
		return 0;
	bdat = data[0] & 1;
	normalize = (data[0] >> 1) & 1;
	max_line = max_lines[(data[0] >> 2) & 3];
	pattern = data[0] >> 4;
	in = (const char *)data + 1;
	len = size - 1;

	run(in, len, bdat, normalize, max_line, 0, pattern, &one);
	run(in, len, bdat, normalize, max_line, 1, pattern, &split);
	same(&one, &split);

	memset(&m, 0, sizeof(m));
	m.max_line = max_line;
	m.normalize = normalize;
	m.out = malloc(2 * len + 2 + 1);
	check(m.out != NULL);
	check(
	    ref_scan((const unsigned char *)in, len, bdat, &m) == one.consumed);
	check(m.o == one.outlen);
	check(memcmp(m.out, one.out, m.o) == 0);
	check(m.st == one.state);
	check(m.flags == one.flags);
	check(m.len == one.line_len);
	free(m.out);

	/* The only end of DATA: (start | CR LF) "." CR LF. */
	if (one.state == DS_DONE) {
		size_t c = one.consumed;

		check(!bdat);
		check(c >= 3 && memcmp(in + c - 3, ".\r\n", 3) == 0);
		check(c == 3 || (c >= 5 && memcmp(in + c - 5, "\r\n", 2) == 0));
	} else
		check(one.consumed == len);

	free(one.out);
	free(split.out);
	return 0;
}
