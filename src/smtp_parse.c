/*
 * smtp_parse.c - pure parsers for what an SMTP client sends: command lines
 * (RFC 5321 4.1.1), reverse and forward paths (4.1.2), ESMTP parameters of
 * MAIL and RCPT (RFC 1870 SIZE, RFC 6152 BODY, RFC 3030 BINARYMIME, RFC 6531
 * SMTPUTF8), BDAT arguments (RFC 3030) and HELO/EHLO arguments.
 *
 * Invariants, for every function in this file:
 *  - the input is a byte range [s, s + len) that need not be NUL-terminated;
 *    every read is guarded by an index compared with len, so no byte outside
 *    the range is ever touched (the fuzz target checks this under ASan);
 *  - nothing is allocated; output pointers point into the caller's input,
 *    and copies go into fixed-size buffers owned by the caller, whose size
 *    is always checked first;
 *  - the functions are pure: no global state, no locale (the character
 *    classes below are ASCII only, on purpose; ctype.h depends on locale).
 *
 * Paths are parsed in two steps. path_scan() checks the syntax only and
 * records where the parts are (struct path_parts); path_check() then applies
 * the rules that need the whole picture: address literal contents, UTF-8
 * validity, and the length limits of RFC 5321 4.5.3.1. So a path that is
 * both malformed and too long is reported as SMTP_PATH_SYNTAX, and one that
 * is well formed but holds bad UTF-8 and is too long as SMTP_PATH_BAD_UTF8.
 *
 *   path_scan:  "<" [route ":"] local "@" (domain | "[" literal "]") ">" [SP...]
 *                      |          |             |              |
 *                route_scan  local_scan    domain_scan   literal_scan
 *   path_check: literal_valid -> smtp_utf8_valid -> length limits -> copy
 */
#include "smtp_parse.h"
#include "util.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* ---- ASCII character classes ------------------------------------------ */

static int
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char
to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* RFC 5322 atext, ASCII part (RFC 6531 adds UTF8-non-ascii, checked apart). */
static int
is_atext(unsigned char c)
{
	if (is_alpha(c) || is_digit(c))
		return 1;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Bytes of a domain label: Let-dig, '-', and (RFC 6531) non-ASCII. */
static int
is_label_byte(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c == '-' || c >= 0x80;
}

/* Case-insensitive comparison of n bytes of s with the ASCII word w. */
static int
ascii_caseeq(const char *s, const char *w, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (to_lower((unsigned char)s[i]) != to_lower((unsigned char)w[i]))
			return 0;
	return 1;
}

/* 1 if [s, s + len) is exactly the word w, ignoring case. */
static int
word_eq(const char *s, size_t len, const char *w)
{
	return len == strlen(w) && ascii_caseeq(s, w, len);
}

/* 1 if [s, s + len) holds a byte >= 0x80. */
static int
has_8bit(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

/* ---- UTF-8 (RFC 3629, Unicode table 3-7) ------------------------------- */

int
smtp_utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned char c = u[i];
		unsigned char lo = 0x80, hi = 0xBF;  /* range of the 2nd byte */
		size_t n, k;                          /* continuation bytes */

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 1;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 2;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 3;
		else
			return 0;  /* continuation, overlong C0/C1, or > U+10FFFF */
		if (c == 0xE0)
			lo = 0xA0;  /* overlong 3-byte */
		else if (c == 0xED)
			hi = 0x9F;  /* surrogates U+D800..U+DFFF */
		else if (c == 0xF0)
			lo = 0x90;  /* overlong 4-byte */
		else if (c == 0xF4)
			hi = 0x8F;  /* above U+10FFFF */
		if (len - i - 1 < n)
			return 0;   /* truncated */
		if (u[i + 1] < lo || u[i + 1] > hi)
			return 0;
		for (k = 2; k <= n; k++)
			if (u[i + k] < 0x80 || u[i + k] > 0xBF)
				return 0;
		i += n + 1;
	}
	return 1;
}

/* ---- command lines ----------------------------------------------------- */

static const struct {
	const char *name;
	enum smtp_verb verb;
} verb_table[] = {
	{ "HELO", SMTP_HELO },
	{ "EHLO", SMTP_EHLO },
	{ "MAIL", SMTP_MAIL },
	{ "RCPT", SMTP_RCPT },
	{ "DATA", SMTP_DATA },
	{ "BDAT", SMTP_BDAT },
	{ "RSET", SMTP_RSET },
	{ "NOOP", SMTP_NOOP },
	{ "QUIT", SMTP_QUIT },
	{ "VRFY", SMTP_VRFY },
	{ "EXPN", SMTP_EXPN },
	{ "HELP", SMTP_HELP },
	{ "STARTTLS", SMTP_STARTTLS },
	{ "AUTH", SMTP_AUTH },
};

#define VERB_COUNT (sizeof(verb_table) / sizeof(verb_table[0]))

static enum smtp_verb
verb_lookup(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < VERB_COUNT; i++)
		if (word_eq(s, len, verb_table[i].name))
			return verb_table[i].verb;
	return SMTP_UNKNOWN;
}

/*
 * The verb is the bytes up to the first space (or the end). The argument
 * starts after the run of spaces that follows, and loses its trailing
 * spaces. For an unknown verb the argument is computed the same way. With
 * no argument, arg points at the end of the line and arglen is 0; on -1 it
 * points at the start of the line.
 */
int
smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t i, vlen, end;

	cmd->verb = SMTP_UNKNOWN;
	cmd->arg = line;
	cmd->arglen = 0;
	if (len == 0)
		return 0;
	for (i = 0; i < len; i++)
		if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n')
			return -1;

	for (vlen = 0; vlen < len && line[vlen] != ' '; vlen++)
		;
	for (i = vlen; i < len && line[i] == ' '; i++)
		;
	for (end = len; end > i && line[end - 1] == ' '; end--)
		;
	cmd->verb = verb_lookup(line, vlen);
	cmd->arg = line + i;
	cmd->arglen = end - i;
	return 0;
}

const char *
smtp_verb_name(enum smtp_verb v)
{
	size_t i;

	for (i = 0; i < VERB_COUNT; i++)
		if (verb_table[i].verb == v)
			return verb_table[i].name;
	return "UNKNOWN";
}

int
smtp_verb_ends_group(enum smtp_verb v)
{
	switch (v) {
	case SMTP_MAIL:
	case SMTP_RCPT:
	case SMTP_RSET:
	case SMTP_BDAT:
	case SMTP_HELP:
		return 0;
	default:
		/* HELO, EHLO, DATA, NOOP, QUIT, VRFY, EXPN, STARTTLS, AUTH,
		 * unknown, and any value outside the enum. */
		return 1;
	}
}

const char *
smtp_skip_prefix(const char *arg, size_t len, const char *prefix,
                 size_t *restlen)
{
	size_t plen = strlen(prefix), i;

	if (len < plen || !ascii_caseeq(arg, prefix, plen))
		return NULL;
	for (i = plen; i < len && arg[i] == ' '; i++)
		;
	if (restlen != NULL)
		*restlen = len - i;
	return arg + i;
}

/* ---- paths: syntax (path_scan) ---------------------------------------- */

enum domain_kind { DOMAIN_NAME, DOMAIN_LITERAL };

/* Where path_scan() found the parts of a mailbox; indexes into the input. */
struct path_parts {
	size_t route_start, route_end;  /* "@a,@b:" (may be empty) */
	size_t route_maxdom;            /* longest domain in the route */
	size_t local_start, local_end;  /* as sent, quotes included */
	size_t dom_start, dom_end;      /* name, or literal with its brackets */
	enum domain_kind kind;
	size_t rest;                    /* first byte of the parameters */
};

/*
 * Dot-string = Atom *("." Atom), Atom = 1*atext (with UTF-8 bytes, checked
 * later). Scans from *i; on success *i is the first byte after it.
 */
static int
dot_string_scan(const unsigned char *s, size_t len, size_t *i)
{
	size_t j = *i;

	for (;;) {
		size_t atom = j;

		while (j < len && (is_atext(s[j]) || s[j] >= 0x80))
			j++;
		if (j == atom)
			return -1;  /* empty atom: leading, trailing, double dot */
		if (j < len && s[j] == '.') {
			j++;
			continue;
		}
		*i = j;
		return 0;
	}
}

/*
 * Quoted-string = DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE.
 * qtextSMTP is %d32-33 / %d35-91 / %d93-126 (and, RFC 6531, UTF-8);
 * quoted-pairSMTP is "\" followed by %d32-126. s[*i] is the opening quote.
 */
static int
quoted_string_scan(const unsigned char *s, size_t len, size_t *i)
{
	size_t j = *i + 1;

	while (j < len) {
		unsigned char c = s[j];

		if (c == '"') {
			*i = j + 1;
			return 0;
		}
		if (c == '\\') {
			if (j + 1 >= len || s[j + 1] < 32 || s[j + 1] > 126)
				return -1;
			j += 2;
		} else if ((c >= 32 && c <= 126) || c >= 0x80) {
			j++;
		} else {
			return -1;
		}
	}
	return -1;  /* no closing quote */
}

/*
 * Domain = sub-domain *("." sub-domain); a sub-domain is 1 to 63 octets of
 * letters, digits, '-' (and UTF-8), neither starting nor ending with '-'.
 * No empty label, so no leading, trailing or double dot.
 */
static int
domain_scan(const unsigned char *s, size_t len, size_t *i)
{
	size_t j = *i;

	for (;;) {
		size_t label = j;

		while (j < len && is_label_byte(s[j]))
			j++;
		if (j == label || j - label > 63)
			return -1;
		if (s[label] == '-' || s[j - 1] == '-')
			return -1;
		if (j < len && s[j] == '.') {
			j++;
			continue;
		}
		*i = j;
		return 0;
	}
}

/*
 * "[" dcontent "]": s[*i] is the '['. Only the shape is checked here
 * (dcontent = %d33-90 / %d94-126, at most 64 octets, which is more than any
 * IPv4 or IPv6 literal); literal_valid() checks the contents.
 */
static int
literal_scan(const unsigned char *s, size_t len, size_t *i)
{
	size_t j = *i + 1;

	while (j < len && s[j] != ']') {
		if (s[j] < 33 || s[j] > 126 || s[j] == '[' || s[j] == '\\')
			return -1;
		if (j - *i > 64)
			return -1;
		j++;
	}
	if (j >= len || j == *i + 1)
		return -1;
	*i = j + 1;
	return 0;
}

/* A-d-l = At-domain *( "," At-domain ) ":"; s[*i] is the first '@'. */
static int
route_scan(const unsigned char *s, size_t len, size_t *i, size_t *maxdom)
{
	size_t j = *i;

	*maxdom = 0;
	for (;;) {
		size_t dom;

		if (j >= len || s[j] != '@')
			return -1;
		dom = ++j;
		if (domain_scan(s, len, &j) == -1)
			return -1;
		if (j - dom > *maxdom)
			*maxdom = j - dom;
		if (j < len && s[j] == ',') {
			j++;
			continue;
		}
		if (j < len && s[j] == ':') {
			*i = j + 1;
			return 0;
		}
		return -1;
	}
}

/* Local-part "@" ( Domain / address-literal ) ">" [ SP *SP ] */
static int
path_scan(const unsigned char *s, size_t len, struct path_parts *pp)
{
	size_t i = 1;  /* s[0] == '<', checked by the caller */

	pp->route_start = pp->route_end = i;
	pp->route_maxdom = 0;
	if (i < len && s[i] == '@') {
		if (route_scan(s, len, &i, &pp->route_maxdom) == -1)
			return -1;
		pp->route_end = i;
	}

	pp->local_start = i;
	if (i < len && s[i] == '"') {
		if (quoted_string_scan(s, len, &i) == -1)
			return -1;
	} else if (dot_string_scan(s, len, &i) == -1) {
		return -1;
	}
	pp->local_end = i;

	/* The separating '@' is the first byte after the local part: a
	 * Dot-string cannot hold '@' and a quoted one ends at its quote. */
	if (i >= len || s[i] != '@')
		return -1;
	pp->dom_start = ++i;
	if (i < len && s[i] == '[') {
		pp->kind = DOMAIN_LITERAL;
		if (literal_scan(s, len, &i) == -1)
			return -1;
	} else {
		pp->kind = DOMAIN_NAME;
		if (domain_scan(s, len, &i) == -1)
			return -1;
	}
	pp->dom_end = i;

	if (i >= len || s[i] != '>')
		return -1;
	i++;
	if (i < len && s[i] != ' ')
		return -1;  /* "<a@b>SIZE=1" */
	while (i < len && s[i] == ' ')
		i++;
	pp->rest = i;
	return 0;
}

/* ---- paths: semantics (path_check) ------------------------------------ */

/*
 * "[1.2.3.4]" or "[IPv6:...]" (the tag is case-insensitive, as ABNF
 * strings are). A General-address-literal ("[tag:...]") is rejected: no
 * standardized tag other than IPv6 exists.
 */
static int
literal_valid(const char *s, size_t len)
{
	char buf[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];
	const char *c = s + 1;       /* skip '[' */
	size_t clen = len - 2;       /* and ']' */
	int af = AF_INET;

	if (clen >= 5 && ascii_caseeq(c, "IPv6:", 5)) {
		af = AF_INET6;
		c += 5;
		clen -= 5;
	} else if (memchr(c, ':', clen) != NULL) {
		return 0;  /* General-address-literal */
	}
	if (clen >= sizeof(buf))
		return 0;
	memcpy(buf, c, clen);
	buf[clen] = '\0';
	return inet_pton(af, buf, addr) == 1;
}

static enum smtp_path_status
path_check(const char *s, const struct path_parts *pp, struct smtp_path *p)
{
	size_t llen = pp->local_end - pp->local_start;
	size_t dlen = pp->dom_end - pp->dom_start;

	if (pp->kind == DOMAIN_LITERAL && !literal_valid(s + pp->dom_start, dlen))
		return SMTP_PATH_SYNTAX;
	if (!smtp_utf8_valid(s + pp->route_start, pp->route_end - pp->route_start) ||
	    !smtp_utf8_valid(s + pp->local_start, llen) ||
	    !smtp_utf8_valid(s + pp->dom_start, dlen))
		return SMTP_PATH_BAD_UTF8;
	if (llen > SMTP_LOCAL_MAX || dlen > SMTP_DOMAIN_MAX ||
	    pp->route_maxdom > SMTP_DOMAIN_MAX)
		return SMTP_PATH_TOO_LONG;
	/* "<" local "@" domain ">" */
	if (llen + dlen + 3 > SMTP_PATH_MAX)
		return SMTP_PATH_TOO_LONG;

	memcpy(p->addr, s + pp->local_start, llen);
	p->addr[llen] = '@';
	memcpy(p->addr + llen + 1, s + pp->dom_start, dlen);
	p->addr[llen + 1 + dlen] = '\0';
	p->at = llen;
	p->utf8 = has_8bit(p->addr, llen + 1 + dlen);
	return SMTP_PATH_OK;
}

static void
path_set_rest(const char *s, size_t len, size_t at, const char **rest,
              size_t *restlen)
{
	while (at < len && s[at] == ' ')
		at++;
	if (rest != NULL)
		*rest = s + at;
	if (restlen != NULL)
		*restlen = len - at;
}

/* "<>" and "<postmaster>": 1 if s is one of them, with *st set. */
static int
path_special(const char *s, size_t len, int flags, struct smtp_path *p,
             size_t *after, enum smtp_path_status *st)
{
	static const char pm[] = "postmaster>";
	size_t pmlen = sizeof(pm) - 1;

	if (len >= 2 && s[1] == '>') {
		*st = (flags & SMTP_PATH_ALLOW_NULL) ? SMTP_PATH_OK : SMTP_PATH_SYNTAX;
		p->null = *st == SMTP_PATH_OK;
		*after = 2;
		return 1;
	}
	if (len >= 1 + pmlen && ascii_caseeq(s + 1, pm, pmlen)) {
		*st = (flags & SMTP_PATH_ALLOW_POSTMASTER) ? SMTP_PATH_OK
		                                            : SMTP_PATH_SYNTAX;
		if (*st == SMTP_PATH_OK) {
			p->postmaster = 1;
			memcpy(p->addr, "postmaster", sizeof("postmaster"));
		}
		*after = 1 + pmlen;
		return 1;
	}
	return 0;
}

/*
 * On success p is filled as smtp_parse.h says and *rest / *restlen
 * (each may be NULL) get the parameters. On failure p holds no address
 * (addr is "", at 0) and *rest / *restlen are untouched.
 */
enum smtp_path_status
smtp_parse_path(const char *s, size_t len, int flags, struct smtp_path *p,
                const char **rest, size_t *restlen)
{
	struct path_parts pp;
	enum smtp_path_status st;
	size_t after;

	memset(p, 0, sizeof(*p));
	if (len == 0 || s[0] != '<')
		return SMTP_PATH_SYNTAX;

	if (path_special(s, len, flags, p, &after, &st)) {
		if (st != SMTP_PATH_OK)
			goto fail;
		if (after < len && s[after] != ' ') {
			st = SMTP_PATH_SYNTAX;
			goto fail;
		}
		path_set_rest(s, len, after, rest, restlen);
		return SMTP_PATH_OK;
	}

	if (path_scan((const unsigned char *)s, len, &pp) == -1) {
		st = SMTP_PATH_SYNTAX;
		goto fail;
	}
	st = path_check(s, &pp, p);
	if (st != SMTP_PATH_OK)
		goto fail;
	path_set_rest(s, len, pp.rest, rest, restlen);
	return SMTP_PATH_OK;

fail:
	memset(p, 0, sizeof(*p));
	return st;
}

/* ---- ESMTP parameters -------------------------------------------------- */

/* esmtp-value bytes: %d33-60 / %d62-126, and (RFC 6531) UTF-8. */
static int
is_value_byte(unsigned char c)
{
	return (c >= 33 && c <= 126 && c != '=') || c >= 0x80;
}

/*
 * The next "KEY[=VALUE]" of [s, s + len) from *pos, skipping spaces before
 * it. Returns 1 with *out filled and *pos after it, 0 at the end, -1 on a
 * syntax error (empty key or value, bad byte, bad UTF-8 in the value, or a
 * parameter not followed by a space or the end).
 */
static int
param_next(const char *s, size_t len, size_t *pos, struct smtp_param *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = *pos, start;

	while (i < len && u[i] == ' ')
		i++;
	if (i == len) {
		*pos = i;
		return 0;
	}
	start = i;
	if (!is_alpha(u[i]) && !is_digit(u[i]))
		return -1;
	while (i < len && (is_alpha(u[i]) || is_digit(u[i]) || u[i] == '-'))
		i++;
	out->key = s + start;
	out->keylen = i - start;
	out->value = NULL;
	out->valuelen = 0;
	if (i < len && u[i] == '=') {
		start = ++i;
		while (i < len && is_value_byte(u[i]))
			i++;
		if (i == start || !smtp_utf8_valid(s + start, i - start))
			return -1;
		out->value = s + start;
		out->valuelen = i - start;
	}
	if (i < len && u[i] != ' ')
		return -1;
	*pos = i;
	return 1;
}

int
smtp_parse_params(const char *s, size_t len, struct smtp_param *out,
                  size_t max)
{
	struct smtp_param prm;
	size_t pos = 0, n = 0;
	int r;

	while ((r = param_next(s, len, &pos, &prm)) == 1) {
		if (n >= max || n >= (size_t)INT_MAX)
			return -1;
		if (out != NULL)
			out[n] = prm;
		n++;
	}
	return r == -1 ? -1 : (int)n;
}

static void
err_set(char *err, size_t errlen, const char *msg)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

/* "Unsupported parameter KEY" (the key as sent, at most 64 bytes of it). */
static void
err_unsupported(char *err, size_t errlen, const struct smtp_param *prm)
{
	int n = prm->keylen > 64 ? 64 : (int)prm->keylen;

	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "Unsupported parameter %.*s", n, prm->key);
}

/*
 * First pass over the parameters: syntax and count only, so that a line
 * with a syntax error anywhere gets 501 before any 555 for its keywords.
 */
static int
params_syntax(const char *s, size_t len, char *err, size_t errlen)
{
	struct smtp_param prm;
	size_t pos = 0, n = 0;
	int r;

	while ((r = param_next(s, len, &pos, &prm)) == 1)
		n++;
	if (r == -1) {
		err_set(err, errlen, "Bad parameter syntax");
		return 501;
	}
	if (n > SMTP_PARAMS_MAX) {
		err_set(err, errlen, "Too many parameters");
		return 501;
	}
	return 0;
}

static int
mail_param_size(const struct smtp_param *prm, struct smtp_mail_params *mp,
                char *err, size_t errlen)
{
	if (mp->has_size) {
		err_set(err, errlen, "Duplicate parameter SIZE");
		return 501;
	}
	if (prm->value == NULL ||
	    util_parse_u64(prm->value, prm->valuelen, &mp->size) == -1) {
		err_set(err, errlen, "Bad SIZE value");
		return 501;
	}
	mp->has_size = 1;
	return 0;
}

/*
 * BODY is known when 8BITMIME or BINARYMIME is offered. 7BIT is then always
 * fine; 8BITMIME and BINARYMIME need their own extension offered (555
 * otherwise, like a parameter that is not offered); any other value is 501.
 */
static int
mail_param_body(const struct smtp_param *prm, unsigned exts,
                struct smtp_mail_params *mp, char *err, size_t errlen)
{
	const char *v = prm->value;
	size_t vlen = prm->valuelen;

	if (mp->body != SMTP_BODY_NONE) {
		err_set(err, errlen, "Duplicate parameter BODY");
		return 501;
	}
	if (v != NULL && word_eq(v, vlen, "7BIT")) {
		mp->body = SMTP_BODY_7BIT;
	} else if (v != NULL && word_eq(v, vlen, "8BITMIME")) {
		if (!(exts & SMTP_EXT_8BITMIME)) {
			err_set(err, errlen, "Unsupported parameter BODY=8BITMIME");
			return 555;
		}
		mp->body = SMTP_BODY_8BITMIME;
	} else if (v != NULL && word_eq(v, vlen, "BINARYMIME")) {
		if (!(exts & SMTP_EXT_BINARYMIME)) {
			err_set(err, errlen, "Unsupported parameter BODY=BINARYMIME");
			return 555;
		}
		mp->body = SMTP_BODY_BINARYMIME;
	} else {
		err_set(err, errlen, "Bad BODY value");
		return 501;
	}
	return 0;
}

static int
mail_param_smtputf8(const struct smtp_param *prm, struct smtp_mail_params *mp,
                    char *err, size_t errlen)
{
	if (mp->smtputf8) {
		err_set(err, errlen, "Duplicate parameter SMTPUTF8");
		return 501;
	}
	if (prm->value != NULL) {
		err_set(err, errlen, "SMTPUTF8 takes no value");
		return 501;
	}
	mp->smtputf8 = 1;
	return 0;
}

static int
mail_param_one(const struct smtp_param *prm, unsigned exts,
               struct smtp_mail_params *mp, char *err, size_t errlen)
{
	if (word_eq(prm->key, prm->keylen, "SIZE") && (exts & SMTP_EXT_SIZE))
		return mail_param_size(prm, mp, err, errlen);
	if (word_eq(prm->key, prm->keylen, "BODY") &&
	    (exts & (SMTP_EXT_8BITMIME | SMTP_EXT_BINARYMIME)))
		return mail_param_body(prm, exts, mp, err, errlen);
	if (word_eq(prm->key, prm->keylen, "SMTPUTF8") &&
	    (exts & SMTP_EXT_SMTPUTF8))
		return mail_param_smtputf8(prm, mp, err, errlen);
	err_unsupported(err, errlen, prm);
	return 555;
}

/*
 * *mp is reset first. Parameters are judged in order and the first error
 * wins; err (may be NULL) is "" on success. On error *mp holds whatever the
 * parameters before the bad one set; the caller must not use it.
 */
int
smtp_parse_mail_params(const char *s, size_t len, unsigned exts,
                       struct smtp_mail_params *mp, char *err, size_t errlen)
{
	struct smtp_param prm;
	size_t pos = 0;
	int rc;

	memset(mp, 0, sizeof(*mp));
	err_set(err, errlen, "");
	rc = params_syntax(s, len, err, errlen);
	if (rc != 0)
		return rc;
	while (param_next(s, len, &pos, &prm) == 1) {
		rc = mail_param_one(&prm, exts, mp, err, errlen);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int
smtp_parse_rcpt_params(const char *s, size_t len, char *err, size_t errlen)
{
	struct smtp_param prm;
	size_t pos = 0;
	int rc;

	err_set(err, errlen, "");
	rc = params_syntax(s, len, err, errlen);
	if (rc != 0)
		return rc;
	if (param_next(s, len, &pos, &prm) == 1) {
		err_unsupported(err, errlen, &prm);
		return 555;
	}
	return 0;
}

/* ---- BDAT and HELO arguments ------------------------------------------- */

/*
 * chunk-size [ SP+ "LAST" ] SP*: one or more spaces may separate the two
 * (as between a verb and its argument); trailing spaces are ignored.
 */
int
smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, int *last)
{
	size_t i = 0, sp;

	*size = 0;
	*last = 0;
	while (i < len && is_digit((unsigned char)arg[i]))
		i++;
	if (util_parse_u64(arg, i, size) == -1)
		goto fail;
	for (sp = i; i < len && arg[i] == ' '; i++)
		;
	if (i < len) {
		if (i == sp || len - i < 4 || !ascii_caseeq(arg + i, "LAST", 4))
			goto fail;
		*last = 1;
		for (i += 4; i < len && arg[i] == ' '; i++)
			;
		if (i < len)
			goto fail;
	}
	return 0;

fail:
	*size = 0;
	*last = 0;
	return -1;
}

/*
 * One token of bytes 33..126 starting at arg[0], followed only by spaces.
 * On failure out (if outlen > 0) is set to "".
 */
int
smtp_parse_helo(const char *arg, size_t len, char *out, size_t outlen)
{
	size_t n = 0, i;

	while (n < len && arg[n] >= 33 && arg[n] <= 126)
		n++;
	for (i = n; i < len && arg[i] == ' '; i++)
		;
	if (n == 0 || i < len || n > 255 || n >= outlen)
		goto fail;
	memcpy(out, arg, n);
	out[n] = '\0';
	return 0;

fail:
	if (outlen > 0)
		out[0] = '\0';
	return -1;
}
