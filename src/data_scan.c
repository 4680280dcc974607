/*
 * data_scan.c - the message content scanner (DATA and BDAT), a pure
 * byte-level state machine with no I/O and no allocation.
 *
 * Role: every inbound content octet passes through data_scan(). In DATA
 * mode it finds the end of data, removes dot-stuffing and flags bare CR,
 * bare LF, NUL, 8-bit octets and over-long lines. In BDAT mode it only
 * does the flagging (and normalization); there is no terminator and no dot.
 *
 * Invariants (each one is what closes a class of SMTP smuggling or makes
 * the scanner safe to feed from a network buffer):
 *
 *  - Only a real CR LF (or the start of the content) puts the scanner at
 *    DS_LINESTART. A bare CR or bare LF leaves it in DS_TEXT, with or
 *    without normalization, so "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n" and
 *    the like are content, never an end of data.
 *  - The end of data is exactly DS_LINESTART '.' CR LF; nothing else
 *    reaches DS_DONE, and nothing is consumed after it.
 *  - The result is independent of how the input is split: a byte whose
 *    meaning depends on the next one (a CR, a dot at line start, a dot and
 *    CR at line start) is held in the state, never in a buffer, and written
 *    when the next byte arrives (or by data_scan_finish() for a BDAT CR).
 *    So output, flags, line_len, out_total, the consumed count and the
 *    final state are the same for any split of the same input.
 *  - Each input octet produces at most 2 output octets (a normalized bare
 *    CR or LF). Because up to 2 octets (". CR") can be held from one call
 *    to the next, one call may write up to DATA_SCAN_HELD_MAX (2) more
 *    than 2 * inlen; see the note at data_scan().
 *
 * Transitions (the diagram in data_scan.h, with the function doing each):
 *
 *      LINESTART --'.'--> DOT                        scan_byte()
 *      DOT --CR--> DOT_CR --LF--> DONE               scan_byte()
 *      DOT --LF--> write '.', bare LF --> TEXT        scan_byte(), emit_bare()
 *      DOT --other--> (dot dropped) TEXT, reprocess   scan_byte()
 *      DOT_CR --other--> write '.', bare CR --> TEXT  scan_byte(), emit_bare()
 *      LINESTART/TEXT --run of ordinary--> TEXT       scan_run()
 *      LINESTART/TEXT --CR--> CR --LF--> LINESTART    scan_byte()
 *      CR --other--> bare CR --> TEXT, reprocess      scan_byte(), emit_bare()
 *      LINESTART/TEXT --LF--> bare LF --> TEXT        scan_byte(), emit_bare()
 *      CR --(end of BDAT LAST)--> bare CR --> TEXT    data_scan_finish()
 */
#include <assert.h>
#include <string.h>

#include "data_scan.h"

/*
 * Most octets one call can write beyond 2 * inlen. Only octets held from
 * the previous call can cause it. The worst is a held ". CR" resolved by an
 * ordinary octet x when normalizing: ". CR LF x", 4 octets for inlen 1 (a
 * held "." or CR costs at most 1 extra; an LF after ". CR" is the end and
 * writes nothing). An exhaustive check of all short inputs and splits
 * agrees; the unit test and the fuzz target size buffers to exactly this.
 */
#define DATA_SCAN_HELD_MAX DATA_SCAN_OUT_SLACK

/* Octet classes for the fast path. */
/* clang-format off */
#define C_EOL   0x01    /* CR or LF: ends a run of ordinary octets */
#define C_NUL   0x02
#define C_8BIT  0x04

#define C8_x4  C_8BIT, C_8BIT, C_8BIT, C_8BIT
#define C8_x16 C8_x4, C8_x4, C8_x4, C8_x4
static const unsigned char ds_class[256] = {
	[0x00] = C_NUL,
	['\n'] = C_EOL,
	['\r'] = C_EOL,
	[0x80] = C8_x16, C8_x16, C8_x16, C8_x16,
	C8_x16, C8_x16, C8_x16, C8_x16,
};
#undef C8_x16
#undef C8_x4
/* clang-format on */

static void
line_add(struct data_scan *s, uint64_t n)
{
	s->line_len += n;
	if (s->max_line != 0 && s->line_len > s->max_line)
		s->flags |= DATA_SCAN_LONG_LINE;
}

/*
 * A bare CR or bare LF: flag it, and write it as is or as CR LF. The
 * scanner stays in (or goes to) DS_TEXT: a bare line ending never starts a
 * line.
 */
static char *
emit_bare(struct data_scan *s, char *o, char c)
{
	s->flags |= (c == '\r') ? DATA_SCAN_BARE_CR : DATA_SCAN_BARE_LF;
	if (s->normalize) {
		*o++ = '\r';
		*o++ = '\n';
	} else
		*o++ = c;
	s->state = DS_TEXT;
	return o;
}

/*
 * DS_TEXT fast path: copy the run of octets up to the next CR or LF, setting
 * the NUL and 8BIT flags on the way. The stop mask drops a class once its
 * flag is set, so the common loop is one table lookup per octet.
 */
static size_t
scan_run(struct data_scan *s, const unsigned char *p, size_t n, char *o)
{
	size_t i = 0;
	unsigned stop;

	for (;;) {
		stop = C_EOL;
		if (!(s->flags & DATA_SCAN_NUL))
			stop |= C_NUL;
		if (!(s->flags & DATA_SCAN_8BIT))
			stop |= C_8BIT;
		while (i < n && (ds_class[p[i]] & stop) == 0)
			i++;
		if (i == n || (ds_class[p[i]] & C_EOL))
			break;
		/* A first NUL or 8-bit octet: flag it; it is content. */
		if (ds_class[p[i]] & C_NUL)
			s->flags |= DATA_SCAN_NUL;
		else
			s->flags |= DATA_SCAN_8BIT;
		i++;
	}
	memcpy(o, p, i);
	line_add(s, i);
	return i;
}

/*
 * Handle the octet at *p in the current state (which is not DS_DONE).
 * Returns the number of input octets consumed: 1, or 0 when the octet is to
 * be processed again in the new state (DS_TEXT). *op advances over what was
 * written.
 */
static size_t
scan_byte(struct data_scan *s, unsigned char c, char **op)
{
	char *o = *op;
	size_t used = 1;

	switch (s->state) {
	case DS_LINESTART:
		if (c == '.' && !s->bdat) {
			line_add(s, 1);
			s->state = DS_DOT;
			break;
		}
		/* Anything else is handled as in the middle of a line. */
		s->state = DS_TEXT;
		used = 0;
		break;
	case DS_TEXT:
		/* Only CR and LF come here; scan_run() took the rest. */
		line_add(s, 1);
		if (c == '\r')
			s->state = DS_CR;
		else if (c == '\n')
			o = emit_bare(s, o, '\n');
		else {
			assert(!"DS_TEXT: ordinary octet outside scan_run");
			*o++ = (char)c;
		}
		break;
	case DS_CR:
		if (c == '\n') {
			line_add(s, 1);
			*o++ = '\r';
			*o++ = '\n';
			s->line_len = 0;
			s->state = DS_LINESTART;
		} else {
			o = emit_bare(s, o, '\r');
			used = 0;
		}
		break;
	case DS_DOT:
		if (c == '\r') {
			line_add(s, 1);
			s->state = DS_DOT_CR;
		} else if (c == '\n') {
			/* ".\n": the dot is content, the LF a bare LF. */
			*o++ = '.';
			s->state = DS_TEXT;
			used = 0;
		} else {
			/* A stuffed dot: drop it, keep what follows. */
			s->state = DS_TEXT;
			used = 0;
		}
		break;
	case DS_DOT_CR:
		if (c == '\n') {
			line_add(s, 1);
			s->state = DS_DONE;
		} else {
			/* ".\r" not followed by LF: dot is content, CR bare. */
			*o++ = '.';
			o = emit_bare(s, o, '\r');
			used = 0;
		}
		break;
	case DS_DONE:
	default:
		assert(!"scan_byte: bad state");
		break;
	}
	*op = o;
	return used;
}

void
data_scan_init(struct data_scan *s, int bdat, int normalize, unsigned max_line)
{
	memset(s, 0, sizeof(*s));
	s->state = DS_LINESTART;
	s->bdat = bdat != 0;
	s->normalize = normalize != 0;
	s->max_line = max_line;
}

/*
 * Note on the output size: a call that receives the octet after a held "."
 * or ". CR" also writes the held octets, so a call can write up to
 * 2 * inlen + DATA_SCAN_OUT_SLACK (data_scan.h).
 * The total over all calls never exceeds 2 * (total consumed).
 */
size_t
data_scan(struct data_scan *s, const char *in, size_t inlen, char *out,
    size_t *outlen)
{
	const unsigned char *p = (const unsigned char *)in;
	const unsigned char *end = p + inlen;
	char *o = out;

	while (p < end && s->state != DS_DONE) {
		if (s->state == DS_TEXT ||
		    (s->state == DS_LINESTART && (*p != '.' || s->bdat) &&
			!(ds_class[*p] & C_EOL))) {
			size_t n = scan_run(s, p, (size_t)(end - p), o);

			if (n > 0)
				s->state = DS_TEXT;
			p += n;
			o += n;
			if (p == end)
				break;
		}
		p += scan_byte(s, *p, &o);
	}

	assert(o >= out && (size_t)(o - out) <= 2 * inlen + DATA_SCAN_HELD_MAX);
	*outlen = (size_t)(o - out);
	s->out_total += *outlen;
	return (size_t)(p - (const unsigned char *)in);
}

int
data_scan_done(const struct data_scan *s)
{
	return s->state == DS_DONE;
}

size_t
data_scan_finish(struct data_scan *s, char *out)
{
	char *o = out;

	/* Only a BDAT transaction ends without a terminator. */
	if (!s->bdat || s->state != DS_CR)
		return 0;
	o = emit_bare(s, o, '\r');
	s->out_total += (size_t)(o - out);
	return (size_t)(o - out);
}
