/*
 * msghdr.c - pure helpers for a message's header section: fields, unfolding,
 * address lists, display names (RFC 5322, RFC 2047, RFC 6532).
 *
 * Invariants, for every function in this file:
 *  - the input is a byte range [s, s + len) that need not be NUL-terminated;
 *    every read is guarded by an index compared with len (the fuzz target,
 *    tests/fuzz/fuzz_msghdr.c, checks this under ASan);
 *  - nothing is allocated; copies go into caller-owned buffers whose size is
 *    checked before every write, and outputs are always NUL-terminated;
 *  - no global state, no locale: the character classes are ASCII only.
 *
 * Address lists are read in two steps. alist_next() cuts the list into
 * elements at ',' and ';' outside comments, quoted strings, domain literals
 * and angle brackets, and enters a group at a ':' that comes before any '@'
 * or '<' of the element. mailbox_parse() then reads one element:
 *
 *   element  = [display-name] "<" [route ":"] addr-spec ">" [CFWS]
 *            / addr-spec
 *   addr-spec = word *("." word) ["@" (atom *("." atom) / "[" dtext "]")]
 *
 * with CFWS (comments, white space) allowed between the tokens and dropped
 * from the result. The display name is not checked beyond being balanced:
 * mail user agents write every kind of phrase, and only the address is used.
 */
#include "msghdr.h"

#include <stdint.h>
#include <string.h>

#define NPOS ((size_t)-1)

/* ---- character classes (ASCII only) -------------------------------------- */

static int
is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static int
is_ftext(unsigned char c)
{
	return c >= 33 && c <= 126 && c != ':';
}

/* RFC 5322 atext, plus every non-ASCII octet (RFC 6532 UTF-8). */
static int
is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c >= 0x80)
		return 1;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static unsigned char
lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* ---- header fields ------------------------------------------------------- */

/* Length of the line break at msg[i] (1 for LF, 2 for CRLF), else 0. */
static size_t
eol_len(const char *msg, size_t len, size_t i)
{
	if (i < len && msg[i] == '\n')
		return 1;
	if (i + 1 < len && msg[i] == '\r' && msg[i + 1] == '\n')
		return 2;
	return 0;
}

int
msghdr_next(const char *msg, size_t len, size_t *pos, struct msghdr_field *f)
{
	size_t i = *pos, j, k, vend, end;
	const char *lf;

	if (i >= len || eol_len(msg, len, i) > 0 ||
	    is_wsp((unsigned char)msg[i]))
		return 0;
	for (j = i; j < len && is_ftext((unsigned char)msg[j]); j++)
		;
	if (j == i)
		return 0;
	for (k = j; k < len && is_wsp((unsigned char)msg[k]); k++)
		;
	if (k >= len || msg[k] != ':')
		return 0;
	/* The field runs to the first line break not followed by SP/HTAB. */
	end = k + 1;
	for (;;) {
		lf = memchr(msg + end, '\n', len - end);
		if (lf == NULL) {
			vend = end = len;
			break;
		}
		vend = (size_t)(lf - msg);
		end = vend + 1;
		if (end < len && is_wsp((unsigned char)msg[end]))
			continue;
		if (vend > k + 1 && msg[vend - 1] == '\r')
			vend--;
		break;
	}
	f->name = msg + i;
	f->namelen = j - i;
	f->value = msg + k + 1;
	f->valuelen = vend - (k + 1);
	f->start = i;
	f->end = end;
	*pos = end;
	return 1;
}

void
msghdr_split(const char *msg, size_t len, size_t *hdr_end, size_t *body,
             int *blank)
{
	struct msghdr_field f;
	size_t pos = 0, n;

	while (msghdr_next(msg, len, &pos, &f) == 1)
		;
	*hdr_end = pos;
	n = eol_len(msg, len, pos);
	*blank = n > 0;
	*body = pos + n;
}

int
msghdr_name_is(const struct msghdr_field *f, const char *name)
{
	size_t n = strlen(name);

	if (f->namelen != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)f->name[i]) !=
		    lower((unsigned char)name[i]))
			return 0;
	return 1;
}

int
msghdr_find(const char *msg, size_t len, const char *name,
            struct msghdr_field *f)
{
	size_t pos = 0;

	while (msghdr_next(msg, len, &pos, f) == 1)
		if (msghdr_name_is(f, name))
			return 1;
	return 0;
}

size_t
msghdr_unfold(const char *v, size_t len, char *out, size_t outlen)
{
	size_t o = 0, i = 0, a = 0;

	if (outlen == 0)
		return 0;
	while (i < len && o + 1 < outlen) {
		size_t n = eol_len(v, len, i);

		if (n > 0 && i + n < len && is_wsp((unsigned char)v[i + n])) {
			i += n;
			continue;
		}
		out[o++] = v[i++];
	}
	while (o > 0 && is_wsp((unsigned char)out[o - 1]))
		o--;
	while (a < o && is_wsp((unsigned char)out[a]))
		a++;
	if (a > 0)
		memmove(out, out + a, o - a);
	o -= a;
	out[o] = '\0';
	return o;
}

/* ---- lexical pieces of address lists ------------------------------------- */

/* s[i] == '(': index after the matching ')' (comments nest), or NPOS. */
static size_t
skip_comment(const char *s, size_t len, size_t i)
{
	unsigned depth = 0;

	for (; i < len; i++) {
		if (s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == '(')
			depth++;
		else if (s[i] == ')' && --depth == 0)
			return i + 1;
	}
	return NPOS;
}

/* s[i] is the opening '"' or '[': index after the closing one, or NPOS. */
static size_t
skip_delimited(const char *s, size_t len, size_t i, char close)
{
	for (i++; i < len; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == close)
			return i + 1;
	}
	return NPOS;
}

/* Skip white space, line breaks and comments from i: index, or NPOS for
 * an unterminated comment. */
static size_t
skip_cfws(const char *s, size_t len, size_t i)
{
	while (i < len) {
		unsigned char c = (unsigned char)s[i];

		if (is_wsp(c) || c == '\r' || c == '\n')
			i++;
		else if (c == '(') {
			if ((i = skip_comment(s, len, i)) == NPOS)
				return NPOS;
		} else
			break;
	}
	return i;
}

/*
 * Index after the quoted string, comment or domain literal that starts at
 * s[i] (NPOS if unterminated), or i itself when s[i] starts none of them.
 */
static size_t
skip_token(const char *s, size_t len, size_t i)
{
	if (s[i] == '(')
		return skip_comment(s, len, i);
	if (s[i] == '"')
		return skip_delimited(s, len, i, '"');
	if (s[i] == '[')
		return skip_delimited(s, len, i, ']');
	return i;
}

/* Append s[a..b) to out at *o, keeping room for the NUL. 0, or -1 when it
 * does not fit or holds a NUL, CR or LF (which no address may hold: they
 * would end the C string or the envelope line). */
static int
put(char *out, size_t outlen, size_t *o, const char *s, size_t a, size_t b)
{
	if (b - a >= outlen - *o)
		return -1;
	for (size_t i = a; i < b; i++)
		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			return -1;
	memcpy(out + *o, s + a, b - a);
	*o += b - a;
	return 0;
}

/* One atom (run of atext) at s[i]: its end, or i if there is none. */
static size_t
atom_end(const char *s, size_t e, size_t i)
{
	while (i < e && is_atext((unsigned char)s[i]))
		i++;
	return i;
}

/*
 * addr-spec over s[i..e), CFWS allowed around every token: the address
 * without CFWS into out. The domain is optional. 0 or -1.
 */
static int
addr_spec(const char *s, size_t i, size_t e, char *out, size_t outlen)
{
	size_t o = 0, n;

	if ((i = skip_cfws(s, e, i)) == NPOS)
		return -1;
	for (;;) {            /* local-part = word *("." word) */
		if (i >= e)
			return -1;
		if (s[i] == '"')
			n = skip_delimited(s, e, i, '"');
		else
			n = atom_end(s, e, i);
		if (n == NPOS || n == i || put(out, outlen, &o, s, i, n) == -1)
			return -1;
		if ((i = skip_cfws(s, e, n)) == NPOS)
			return -1;
		if (i < e && s[i] == '.') {
			if (put(out, outlen, &o, s, i, i + 1) == -1 ||
			    (i = skip_cfws(s, e, i + 1)) == NPOS)
				return -1;
			continue;
		}
		break;
	}
	if (i < e && s[i] == '@') {
		if (put(out, outlen, &o, s, i, i + 1) == -1 ||
		    (i = skip_cfws(s, e, i + 1)) == NPOS || i >= e)
			return -1;
		if (s[i] == '[') {
			n = skip_delimited(s, e, i, ']');
			if (n == NPOS || put(out, outlen, &o, s, i, n) == -1 ||
			    (i = skip_cfws(s, e, n)) == NPOS)
				return -1;
		} else {
			for (;;) {    /* atom *("." atom) */
				if ((n = atom_end(s, e, i)) == i ||
				    put(out, outlen, &o, s, i, n) == -1 ||
				    (i = skip_cfws(s, e, n)) == NPOS)
					return -1;
				if (i >= e || s[i] != '.')
					break;
				if (put(out, outlen, &o, s, i, i + 1) == -1 ||
				    (i = skip_cfws(s, e, i + 1)) == NPOS ||
				    i >= e)
					return -1;
			}
		}
	}
	if (i != e)
		return -1;
	out[o] = '\0';
	return 0;
}

/* One mailbox (name-addr or addr-spec) over s[b..e). 0 or -1. */
static int
mailbox_parse(const char *s, size_t b, size_t e, char *out, size_t outlen)
{
	size_t i = b, lt = NPOS, gt = NPOS, n;

	/* The first '<' outside comments, quoted strings and literals. */
	while (i < e) {
		if ((n = skip_token(s, e, i)) == NPOS)
			return -1;
		if (n != i) {
			i = n;
			continue;
		}
		if (s[i] == '<') {
			lt = i;
			break;
		}
		i++;
	}
	if (lt == NPOS)
		return addr_spec(s, b, e, out, outlen);
	for (i = lt + 1; i < e; ) {
		if ((n = skip_token(s, e, i)) == NPOS)
			return -1;
		if (n != i) {
			i = n;
			continue;
		}
		if (s[i] == '>') {
			gt = i;
			break;
		}
		i++;
	}
	if (gt == NPOS || skip_cfws(s, e, gt + 1) != e)
		return -1;
	/* An obsolete source route "@a,@b:" is dropped. */
	if ((i = skip_cfws(s, gt, lt + 1)) == NPOS)
		return -1;
	if (i < gt && s[i] == '@') {
		while (i < gt && s[i] != ':') {
			if ((n = skip_token(s, gt, i)) == NPOS)
				return -1;
			i = n != i ? n : i + 1;
		}
		if (i >= gt)
			return -1;
		i++;
	}
	return addr_spec(s, i, gt, out, outlen);
}

/* ---- address lists ------------------------------------------------------- */

void
msghdr_alist_init(struct msghdr_alist *a, const char *s, size_t len)
{
	a->s = s;
	a->len = len;
	a->pos = 0;
	a->in_group = 0;
}

int
msghdr_alist_next(struct msghdr_alist *a, char *out, size_t outlen,
                  const char **bad, size_t *badlen)
{
	const char *s = a->s;
	size_t len = a->len, i, start, end, n;
	int angle, seen, broken;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
again:
	if (a->pos >= len)
		return 0;
	i = skip_cfws(s, len, a->pos);
	if (i == NPOS) {            /* an unterminated comment: the rest */
		start = a->pos;
		end = len;
		goto fail;
	}
	if (i >= len) {
		a->pos = len;
		return 0;
	}
	if (s[i] == ',' || s[i] == ';') {
		if (s[i] == ';')
			a->in_group = 0;
		a->pos = i + 1;
		goto again;
	}
	start = i;
	angle = seen = broken = 0;
	while (i < len) {
		unsigned char c = (unsigned char)s[i];

		if ((n = skip_token(s, len, i)) == NPOS) {
			broken = 1;
			i = len;
			break;
		}
		if (n != i) {
			i = n;
			continue;
		}
		if (c == '<') {
			broken |= angle;
			angle = seen = 1;
		} else if (c == '>') {
			broken |= !angle;
			angle = 0;
			seen = 1;
		} else if (c == '@') {
			seen = 1;
		} else if (!angle && (c == ',' || c == ';')) {
			break;
		} else if (!angle && c == ':') {
			if (!a->in_group && !seen) {
				/* "display-name:" opens a group */
				a->in_group = 1;
				a->pos = i + 1;
				goto again;
			}
			broken = 1;
		}
		i++;
	}
	end = i;
	a->pos = end;
	if (!broken && !angle && mailbox_parse(s, start, end, out, outlen) == 0)
		return 1;
fail:
	a->pos = end;
	out[0] = '\0';
	while (start < end && (is_wsp((unsigned char)s[start]) ||
	    s[start] == '\r' || s[start] == '\n'))
		start++;
	while (end > start && (is_wsp((unsigned char)s[end - 1]) ||
	    s[end - 1] == '\r' || s[end - 1] == '\n'))
		end--;
	if (bad)
		*bad = s + start;
	if (badlen)
		*badlen = end - start;
	return -1;
}

/* ---- display names ------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..len) (2 to 4), or 0. */
static size_t
utf8_seq(const unsigned char *s, size_t len)
{
	size_t n;
	uint32_t cp;

	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2, cp = s[0] & 0x1Fu;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3, cp = s[0] & 0x0Fu;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4, cp = s[0] & 0x07u;
	else
		return 0;
	if (len < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[k] & 0x3Fu);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

#define PHRASE_MAX 512

int
msghdr_phrase(const char *name, size_t len, char *out, size_t outlen)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char t[PHRASE_MAX];
	size_t n = 0, o = 0, i = 0;
	int space = 0, has8 = 0, plain = 1;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
	/* Normalize: controls are white space, runs of it one space, trimmed;
	 * invalid UTF-8 octets become '?'. */
	while (i < len) {
		unsigned char c = (unsigned char)name[i];
		size_t k = 1;
		int repl = 0;

		if (c < 0x20 || c == 0x7f || c == ' ') {
			space = n > 0;
			i++;
			continue;
		}
		if (c >= 0x80) {
			k = utf8_seq((const unsigned char *)name + i, len - i);
			if (k == 0) {
				k = 1;
				repl = 1;
			} else {
				has8 = 1;
			}
		}
		if (n + (size_t)space + k > sizeof(t))
			return -1;
		if (space)
			t[n++] = ' ';
		space = 0;
		if (repl)
			t[n++] = '?';
		else
			memcpy(t + n, name + i, k);
		n += repl ? 0 : k;
		i += k;
	}
	if (n == 0)
		return -1;
	for (i = 0; i < n; i++)
		if (t[i] != ' ' && !is_atext(t[i]))
			plain = 0;
	if (has8) {
		/* Encoded words of at most 45 octets (60 base64 characters,
		 * 72 with the delimiters: under RFC 2047's 75), cut between
		 * UTF-8 sequences. */
		for (i = 0; i < n; ) {
			size_t e = i, q;

			while (e < n) {
				size_t k = t[e] < 0x80 ? 1
				                       : utf8_seq(t + e, n - e);
				if (e + k - i > 45)
					break;
				e += k;
			}
			if (o + (i > 0) + 12 + (e - i + 2) / 3 * 4 >= outlen)
				goto toolong;
			if (i > 0)
				out[o++] = ' ';
			memcpy(out + o, "=?UTF-8?B?", 10);
			o += 10;
			for (q = i; q < e; q += 3) {
				uint32_t v = (uint32_t)t[q] << 16;
				size_t r = e - q;

				if (r > 1)
					v |= (uint32_t)t[q + 1] << 8;
				if (r > 2)
					v |= t[q + 2];
				out[o++] = b64[(v >> 18) & 63];
				out[o++] = b64[(v >> 12) & 63];
				out[o++] = r > 1 ? b64[(v >> 6) & 63] : '=';
				out[o++] = r > 2 ? b64[v & 63] : '=';
			}
			out[o++] = '?';
			out[o++] = '=';
			i = e;
		}
	} else if (plain) {
		if (n >= outlen)
			goto toolong;
		memcpy(out, t, n);
		o = n;
	} else {
		if (outlen < 3)
			goto toolong;
		out[o++] = '"';
		for (i = 0; i < n; i++) {
			int esc = t[i] == '"' || t[i] == '\\';

			if (o + (size_t)esc + 3 > outlen)
				goto toolong;
			if (esc)
				out[o++] = '\\';
			out[o++] = (char)t[i];
		}
		out[o++] = '"';
	}
	out[o] = '\0';
	return (int)o;
toolong:
	out[0] = '\0';
	return -1;
}
