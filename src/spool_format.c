/*
 * spool_format.c - the on-disk format of one queued message: envelope
 * lines and the trailer, as pure functions over byte buffers (no I/O).
 *
 * Role: spool.c writes [content][envelope][trailer] and reads it back after
 * a restart; this file owns the bytes of the last two parts. The layout is
 * in spool_format.h and docs/internals/QUEUE.md.
 *
 * Invariants:
 *  - What spool_env_serialize() writes, spool_env_parse() reads back to an
 *    equal struct, and serialize refuses anything parse would refuse
 *    (a value with CR, LF or NUL, a bad id, no recipient, too many).
 *  - The parsers trust nothing: every length is explicit (no string
 *    functions on the input), numbers are decimal with no sign, no blank
 *    and no leading zero, and every addition is checked for overflow.
 *  - The trailer is accepted only as the exact last line of the file and
 *    only when content_size + env_size + trailer length == file size.
 *  - Ownership: a parsed struct spool_env owns every string (all non-NULL
 *    after a successful parse); spool_env_free() frees them and zeroes the
 *    struct. On a parse error nothing is left allocated and *e is zeroed.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool_format.h"
#include "util.h"

#define TRAILER_MAGIC "PETREL-SPOOL 1 "
#define TRAILER_MAGIC_LEN (sizeof(TRAILER_MAGIC) - 1)
#define U64_DIGITS_MAX 20

/* ------------------------------------------------------------------ */
/* Shared helpers                                                      */
/* ------------------------------------------------------------------ */

/*
 * Strict decimal: 1..20 digits, no leading zero unless the number is "0",
 * no overflow. Returns 0 and sets *v, or -1.
 */
static int
parse_u64(const char *p, size_t n, uint64_t *v)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0 || n > U64_DIGITS_MAX)
		return -1;
	if (p[0] == '0' && n > 1)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned d;

		if (p[i] < '0' || p[i] > '9')
			return -1;
		d = (unsigned)(p[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*v = x;
	return 0;
}

static int
id_valid(const char *id, size_t n)
{
	size_t i;

	if (n == 0 || n > SPOOL_ID_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* Serialize                                                           */
/* ------------------------------------------------------------------ */

/* The string fields in file order; rcpt lines follow them. */
enum { F_SENDER, F_HELO, F_CLIENT, F_PROTO, F_TLS, F_MSGID, F_NSTR };

static const char *
str_or_empty(const char *s)
{
	return s != NULL ? s : "";
}

/* A value is storable when it has no CR and no LF (a C string has no NUL). */
static int
value_ok(const char *v)
{
	return strpbrk(v, "\r\n") == NULL;
}

/* Adds "key value\n" to the buffer (if buf) and its length to *len. */
static int
put_line(char *buf, size_t *len, const char *key, const char *val)
{
	size_t kl = strlen(key), vl = strlen(val);
	size_t need = kl + 1 + vl + 1;

	if (vl > SIZE_MAX - kl - 2 || *len > SIZE_MAX - need)
		return -1;
	if (buf != NULL) {
		char *p = buf + *len;

		memcpy(p, key, kl);
		p[kl] = ' ';
		memcpy(p + kl + 1, val, vl);
		p[kl + 1 + vl] = '\n';
	}
	*len += need;
	return 0;
}

/*
 * Writes (when buf is not NULL) or measures the envelope lines. The caller
 * has validated every value. Returns -1 only on size_t overflow.
 */
static int
env_lines(const struct spool_env *e, char *buf, size_t *len)
{
	char num[U64_DIGITS_MAX + 1];
	const char *v[F_NSTR];
	size_t i;

	v[F_SENDER] = str_or_empty(e->sender);
	v[F_HELO] = str_or_empty(e->helo);
	v[F_CLIENT] = str_or_empty(e->client);
	v[F_PROTO] = str_or_empty(e->proto);
	v[F_TLS] = str_or_empty(e->tls);
	v[F_MSGID] = str_or_empty(e->msgid);
	snprintf(num, sizeof(num), "%" PRIu64, e->time_ms);

	*len = 0;
	if (put_line(buf, len, "id", e->id) == -1 ||
	    put_line(buf, len, "time", num) == -1 ||
	    put_line(buf, len, "sender", v[F_SENDER]) == -1 ||
	    put_line(buf, len, "helo", v[F_HELO]) == -1 ||
	    put_line(buf, len, "client", v[F_CLIENT]) == -1 ||
	    put_line(buf, len, "proto", v[F_PROTO]) == -1 ||
	    put_line(buf, len, "tls", v[F_TLS]) == -1 ||
	    put_line(buf, len, "body", e->body_8bit ? "8bitmime" : "7bit") ==
		-1 ||
	    put_line(buf, len, "smtputf8", e->smtputf8 ? "1" : "0") == -1 ||
	    put_line(buf, len, "msgid", v[F_MSGID]) == -1)
		return -1;
	for (i = 0; i < e->nrcpt; i++)
		if (put_line(buf, len, "rcpt", str_or_empty(e->rcpt[i])) == -1)
			return -1;
	return 0;
}

int
spool_env_serialize(const struct spool_env *e, uint64_t content_size,
    char **out, size_t *outlen)
{
	const char *strs[F_NSTR];
	char trailer[SPOOL_TRAILER_MAX + 1];
	size_t envlen, written, i;
	char *buf = NULL;
	int tl;

	*out = NULL;
	*outlen = 0;

	if (!id_valid(e->id, strnlen(e->id, sizeof(e->id))))
		return -1;
	if (e->nrcpt == 0 || e->nrcpt > SPOOL_MAX_RCPTS || e->rcpt == NULL)
		return -1;
	strs[F_SENDER] = str_or_empty(e->sender);
	strs[F_HELO] = str_or_empty(e->helo);
	strs[F_CLIENT] = str_or_empty(e->client);
	strs[F_PROTO] = str_or_empty(e->proto);
	strs[F_TLS] = str_or_empty(e->tls);
	strs[F_MSGID] = str_or_empty(e->msgid);
	for (i = 0; i < F_NSTR; i++)
		if (!value_ok(strs[i]))
			return -1;
	for (i = 0; i < e->nrcpt; i++)
		if (!value_ok(str_or_empty(e->rcpt[i])))
			return -1;

	if (env_lines(e, NULL, &envlen) == -1)
		return -1;
	tl = snprintf(trailer, sizeof(trailer),
	    TRAILER_MAGIC "%" PRIu64 " %zu\n", content_size, envlen);
	if (tl < 0 || (size_t)tl >= sizeof(trailer))
		return -1; /* cannot happen: at most 57 octets */
	if (envlen > SIZE_MAX - (size_t)tl)
		return -1;

	buf = malloc(envlen + (size_t)tl);
	if (buf == NULL)
		return -1;
	if (env_lines(e, buf, &written) == -1 || written != envlen)
		goto fail; /* cannot happen: same input, same length */
	memcpy(buf + envlen, trailer, (size_t)tl);

	*out = buf;
	*outlen = envlen + (size_t)tl;
	return 0;
fail:
	free(buf);
	return -1;
}

/* ------------------------------------------------------------------ */
/* Trailer                                                             */
/* ------------------------------------------------------------------ */

int
spool_trailer_parse(const char *tail, size_t tlen, uint64_t file_size,
    uint64_t *content_size, uint64_t *env_size)
{
	const char *line, *p, *sp, *end;
	uint64_t csize, esize, total;
	size_t llen, i;

	if (tail == NULL || tlen == 0 || tlen > file_size)
		return -1;
	/* A trailer is never longer than this; look at no more. */
	if (tlen > SPOOL_TRAILER_MAX) {
		tail += tlen - SPOOL_TRAILER_MAX;
		tlen = SPOOL_TRAILER_MAX;
	}
	if (tail[tlen - 1] != '\n')
		return -1;

	/* The last line starts after the previous '\n', or at the tail. */
	i = tlen - 1;
	while (i > 0 && tail[i - 1] != '\n')
		i--;
	line = tail + i;
	llen = tlen - i; /* including the final '\n' */
	/*
	 * A line that starts at the tail's first byte when the tail was cut
	 * from a longer file is SPOOL_TRAILER_MAX octets long, more than the
	 * longest trailer (15 + 20 + 1 + 20 + 1 = 57), so it fails below.
	 */

	if (llen < TRAILER_MAGIC_LEN + 4 ||
	    memcmp(line, TRAILER_MAGIC, TRAILER_MAGIC_LEN) != 0)
		return -1;
	p = line + TRAILER_MAGIC_LEN;
	end = line + llen - 1; /* at the '\n' */
	sp = memchr(p, ' ', (size_t)(end - p));
	if (sp == NULL)
		return -1;
	if (parse_u64(p, (size_t)(sp - p), &csize) == -1 ||
	    parse_u64(sp + 1, (size_t)(end - sp - 1), &esize) == -1)
		return -1;

	if (csize > UINT64_MAX - esize)
		return -1;
	total = csize + esize;
	if (total > UINT64_MAX - llen)
		return -1;
	total += llen;
	if (total != file_size)
		return -1;

	*content_size = csize;
	*env_size = esize;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Envelope parse                                                      */
/* ------------------------------------------------------------------ */

enum {
	K_ID,
	K_TIME,
	K_SENDER,
	K_HELO,
	K_CLIENT,
	K_PROTO,
	K_TLS,
	K_BODY,
	K_SMTPUTF8,
	K_MSGID,
	K_RCPT,
	K_UNKNOWN
};

static const char *const env_keys[] = {
    [K_ID] = "id",
    [K_TIME] = "time",
    [K_SENDER] = "sender",
    [K_HELO] = "helo",
    [K_CLIENT] = "client",
    [K_PROTO] = "proto",
    [K_TLS] = "tls",
    [K_BODY] = "body",
    [K_SMTPUTF8] = "smtputf8",
    [K_MSGID] = "msgid",
    [K_RCPT] = "rcpt",
};

static int
key_lookup(const char *k, size_t n)
{
	int i;

	for (i = 0; i < K_UNKNOWN; i++)
		if (strlen(env_keys[i]) == n && memcmp(env_keys[i], k, n) == 0)
			return i;
	return K_UNKNOWN;
}


static char *
dup_value(const char *v, size_t n)
{
	char *s = malloc(n + 1);

	if (s != NULL) {
		memcpy(s, v, n);
		s[n] = '\0';
	}
	return s;
}

/* The owned string slot for a string key, or NULL. */
static char **
str_slot(struct spool_env *e, int key)
{
	switch (key) {
	case K_SENDER:
		return &e->sender;
	case K_HELO:
		return &e->helo;
	case K_CLIENT:
		return &e->client;
	case K_PROTO:
		return &e->proto;
	case K_TLS:
		return &e->tls;
	case K_MSGID:
		return &e->msgid;
	default:
		return NULL;
	}
}

static int
add_rcpt(struct spool_env *e, size_t *cap, const char *v, size_t n)
{
	char *s;

	if (e->nrcpt == *cap) {
		size_t ncap = *cap ? *cap * 2 : 8;
		char **r;

		if (ncap > SPOOL_MAX_RCPTS)
			ncap = SPOOL_MAX_RCPTS;
		r = realloc(e->rcpt, ncap * sizeof(*r));
		if (r == NULL)
			return -1;
		e->rcpt = r;
		*cap = ncap;
	}
	if ((s = dup_value(v, n)) == NULL)
		return -1;
	e->rcpt[e->nrcpt++] = s;
	return 0;
}

int
spool_env_parse(
    const char *buf, size_t len, struct spool_env *e, char *err, size_t errlen)
{
	struct spool_env t;
	unsigned seen = 0; /* bit per singleton key */
	size_t off = 0, lineno = 0, cap = 0;
	static const int required[] = {K_ID, K_TIME, K_SENDER};
	size_t i;

	memset(&t, 0, sizeof(t));
	util_errf(err, errlen, "no error");

	while (off < len) {
		const char *line = buf + off, *nl, *sp, *val;
		size_t llen, klen, vlen;
		int key;
		char **slot;
		uint64_t tm;

		lineno++;
		nl = memchr(line, '\n', len - off);
		if (nl == NULL) {
			util_errf(
			    err, errlen, "line %zu: no newline at end", lineno);
			goto fail;
		}
		llen = (size_t)(nl - line);
		off += llen + 1;
		if (memchr(line, '\0', llen) != NULL) {
			util_errf(err, errlen, "line %zu: NUL byte", lineno);
			goto fail;
		}
		if (memchr(line, '\r', llen) != NULL) {
			util_errf(err, errlen, "line %zu: CR byte", lineno);
			goto fail;
		}
		sp = memchr(line, ' ', llen);
		if (sp != NULL) {
			klen = (size_t)(sp - line);
			val = sp + 1;
			vlen = llen - klen - 1;
		} else {
			klen = llen;
			val = line + llen;
			vlen = 0;
		}
		if (klen == 0) {
			util_errf(err, errlen, "line %zu: empty key", lineno);
			goto fail;
		}

		key = key_lookup(line, klen);
		if (key == K_UNKNOWN)
			continue;
		if (key != K_RCPT) {
			if (seen & (1u << key)) {
				util_errf(err, errlen, "line %zu: duplicate %s",
				    lineno, env_keys[key]);
				goto fail;
			}
			seen |= 1u << key;
		}

		switch (key) {
		case K_ID:
			if (!id_valid(val, vlen)) {
				util_errf(err, errlen, "line %zu: bad id value",
				    lineno);
				goto fail;
			}
			memcpy(t.id, val, vlen);
			t.id[vlen] = '\0';
			break;
		case K_TIME:
			if (parse_u64(val, vlen, &tm) == -1) {
				util_errf(err, errlen, "line %zu: bad time value",
				    lineno);
				goto fail;
			}
			t.time_ms = tm;
			break;
		case K_BODY:
			if (vlen == 4 && memcmp(val, "7bit", 4) == 0)
				t.body_8bit = 0;
			else if (vlen == 8 && memcmp(val, "8bitmime", 8) == 0)
				t.body_8bit = 1;
			else {
				util_errf(err, errlen, "line %zu: bad body value",
				    lineno);
				goto fail;
			}
			break;
		case K_SMTPUTF8:
			if (vlen != 1 || (val[0] != '0' && val[0] != '1')) {
				util_errf(err, errlen,
				    "line %zu: bad smtputf8 value", lineno);
				goto fail;
			}
			t.smtputf8 = val[0] == '1';
			break;
		case K_RCPT:
			if (t.nrcpt >= SPOOL_MAX_RCPTS) {
				util_errf(err, errlen,
				    "line %zu: more than %d recipients", lineno,
				    SPOOL_MAX_RCPTS);
				goto fail;
			}
			if (add_rcpt(&t, &cap, val, vlen) == -1)
				goto nomem;
			break;
		default:
			slot = str_slot(&t, key);
			if (slot == NULL) {
				util_errf(err, errlen, "line %zu: internal error",
				    lineno);
				goto fail; /* cannot happen */
			}
			if ((*slot = dup_value(val, vlen)) == NULL)
				goto nomem;
			break;
		}
	}

	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		if (!(seen & (1u << required[i]))) {
			util_errf(err, errlen,
			    "line %zu: end of envelope, "
			    "missing %s",
			    lineno + 1, env_keys[required[i]]);
			goto fail;
		}
	}
	if (t.nrcpt == 0) {
		util_errf(err, errlen, "line %zu: end of envelope, missing rcpt",
		    lineno + 1);
		goto fail;
	}
	/* Absent optional strings read as "", so no field is ever NULL. */
	for (i = K_SENDER; i <= K_MSGID; i++) {
		char **slot = str_slot(&t, (int)i);

		if (slot != NULL && *slot == NULL &&
		    (*slot = dup_value("", 0)) == NULL)
			goto nomem;
	}

	*e = t;
	return 0;
nomem:
	util_errf(err, errlen, "line %zu: out of memory", lineno);
fail:
	spool_env_free(&t);
	memset(e, 0, sizeof(*e));
	return -1;
}

void
spool_env_free(struct spool_env *e)
{
	size_t i;

	if (e == NULL)
		return;
	free(e->sender);
	free(e->helo);
	free(e->client);
	free(e->proto);
	free(e->tls);
	free(e->msgid);
	if (e->rcpt != NULL) {
		for (i = 0; i < e->nrcpt; i++)
			free(e->rcpt[i]);
		free(e->rcpt);
	}
	memset(e, 0, sizeof(*e));
}

int
spool_journal_parse(const char *line, size_t len, char *kind, uint64_t *idx,
                    const char **why, size_t *whylen)
{
	const char *p, *end;
	uint64_t ms;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	*why = NULL;
	*whylen = 0;
	if (len < 3 || line[1] != ' ' || memchr("DFHUX", line[0], 5) == NULL)
		return -1;
	*kind = line[0];
	p = line + 2;
	end = line + len;
	{
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *e1 = sp ? sp : end;
		if (util_parse_u64(p, (size_t)(e1 - p), idx) == -1 || sp == NULL)
			return -1;
		p = sp + 1;
	}
	{
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *e2 = sp ? sp : end;
		if (util_parse_u64(p, (size_t)(e2 - p), &ms) == -1)
			return -1;
		if (sp != NULL) {
			*why = sp + 1;
			*whylen = (size_t)(end - sp - 1);
		}
	}
	return 0;
}
