/*
 * config.c - Petrel's configuration: embedded defaults, an INI file read
 * with inih, and config_print() to write the effective configuration back.
 *
 * Tables: every key is one line in a key table (top_keys, listen_keys,
 * relay_keys, dest_keys) giving its name, its type, where it lives in the
 * struct, its range and its default written as it would be in a file. The
 * same typed code reads the defaults, reads the file, prints (config_print)
 * and frees (config_free), so the four cannot drift apart. Section kinds
 * are a table too (section_kinds[]): a new key is one table line; a new
 * section kind is one key table, one open() that returns the struct its
 * keys point into, optionally one close() for checks that need the whole
 * section, and optionally one refuse() for keys that one particular
 * section must not have.
 *
 * [destination PATTERN]: "[destination *]" fills cfg->dest_default, the
 * others are appended to cfg->dest in file order. Every destination
 * section, "*" included, starts from the built-in defaults of dest_keys:
 * a section does not inherit from "[destination *]", wherever that is in
 * the file. config_print writes "[destination *]" first, then the others
 * in order, each with all its keys (route is never allowed in "*"), so its
 * output means the same whatever order it is read in.
 *
 * Lines reach inih through our own reader (ld_read), one line per call, so
 * we know the line number of every key and see every section header (inih
 * reports neither empty sections nor names longer than 50 bytes). The
 * reader also refuses what inih would silently get wrong:
 *  - a line longer than inih's buffer (inih would cut it in two and parse
 *    the tail as a line of its own): an error;
 *  - a NUL byte: an error;
 *  - leading white space is removed, so indented keys are just keys (inih
 *    takes an indented line as the continuation of the previous value);
 *  - except that a list value (networks, domains, route) continues on the
 *    following indented lines that contain no '=' (comment and blank lines
 *    may come between): that is how config_print writes long lists. Such a
 *    line may start with '[' if its first ']' is followed by ':' (a route
 *    entry "[2001:db8::1]:25"), which no section header can be.
 *
 * Errors: the first error ends the parse. The handler or the reader records
 * "FILE:LINE: [section] key: reason" and the reader then reports end of
 * input. inih's own syntax errors come back as its return value (the first
 * bad line); whichever error has the lower line number is reported.
 *
 * Invariants of a loaded config: string keys that are set hold non-empty
 * heap strings without control characters; nlisten >= 1 and every listener
 * has a parsed address; tls_cert and tls_key are both set or both NULL;
 * local_domains are lower case, without a trailing dot; helo_name is set
 * (default: hostname); retry_initial <= retry_max; dest_default always
 * exists (pattern "*", no route) and every dest[i].pattern is unique, lower
 * case, and an exact domain or "*.domain". The struct config owns
 * everything it points to; config_free() releases it all.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define CONFIG_FILE_MAX (1024 * 1024) /* bytes; a config is a few KB */
#define ERR_MAX 512		      /* first error, before copying out */
#define WHY_MAX 400		      /* reason part of a message */
#define LABEL_MAX 320		      /* "[destination *.example.org]" */
#define HOSTNAME_MAX 253
#define DOMAIN_MAX 253
#define LABEL_LEN_MAX 63 /* one label of a domain */
#define PRINT_WRAP 76	 /* config_print wraps lists here */
#define QUOTE_MAX 64	 /* bytes of a bad value shown back */

#define DEFAULT_LISTEN_NAME "smtp"
#define DEFAULT_LISTEN_ADDRESS "127.0.0.1:2525"

enum key_type {
	KT_STRING,   /* char *: non-empty, no control characters */
	KT_HOSTNAME, /* char *: printable ASCII without spaces */
	KT_BOOL,     /* int: yes/no, true/false, 1/0 */
	KT_UINT,     /* unsigned: min..max, or 0 with KF_ZERO_OK */
	KT_SIZE,     /* uint64_t: octets, optional K, M, G (1024) suffix */
	KT_SECONDS,  /* unsigned seconds; min/max in milliseconds */
	KT_MILLIS,   /* unsigned milliseconds; min/max in milliseconds */
	KT_ENUM,     /* int (an enum): index into names */
	KT_CIDRS,    /* struct cidr_list */
	KT_DOMAINS,  /* char ** at off, size_t count at off2 */
	KT_HOSTPORT, /* char * at off, sockaddr_storage at off2, socklen_t
			at off3 */
	KT_ROUTE,    /* char *: "host:port", host a DNS name, an IPv4
			address or [IPv6 address]; port required */
	KT_ROUTES,   /* char ** at off, size_t count at off2: KT_ROUTE list */
	KT_RESOLVER, /* char *: "ADDR" or "ADDR@PORT", ADDR numeric */
};

#define KF_REQUIRED 0x1 /* must be set in every section read from a file */
#define KF_ZERO_OK 0x2	/* KT_UINT: 0 (unlimited) allowed besides min..max */

struct key {
	const char *name;
	enum key_type type;
	size_t off, off2, off3;
	uint64_t min, max;
	const char *def; /* default as written in a file; NULL: unset */
	const char *const *names; /* KT_ENUM: value names, NULL-terminated */
	unsigned flags;
};

/* clang-format off */
#define C(f) offsetof(struct config, f)
#define L(f) offsetof(struct listen_conf, f)
#define D(f) offsetof(struct dest_conf, f)
#define S(n) ((uint64_t)(n) * 1000) /* seconds, as milliseconds */
/* The common case: one field, no flags. */
#define K(name, type, off, min, max, def) \
	{ name, type, off, 0, 0, min, max, def, NULL, 0 }
/* clang-format on */

static const char *const bare_lf_names[] = {"reject", "normalize", NULL};
_Static_assert(BARE_LF_REJECT == 0 && BARE_LF_NORMALIZE == 1,
    "bare_lf_names follows enum bare_lf_policy");
_Static_assert(sizeof(enum bare_lf_policy) == sizeof(int),
    "KT_ENUM fields are stored as int");

static const char *const tls_policy_names[] = {
    "none", "may", "encrypt", "verify", NULL};
_Static_assert(TLS_POLICY_NONE == 0 && TLS_POLICY_MAY == 1 &&
		   TLS_POLICY_ENCRYPT == 2 && TLS_POLICY_VERIFY == 3,
    "tls_policy_names follows enum tls_policy");
_Static_assert(
    sizeof(enum tls_policy) == sizeof(int), "KT_ENUM fields are stored as int");

/* clang-format off */
/* Keys before any section. */
static const struct key top_keys[] = {
	K("hostname",      KT_HOSTNAME, C(hostname),      0, 0,        NULL),
	K("spool_dir",     KT_STRING,   C(spool_dir),     0, 0,        "./var/spool"),
	K("log_file",      KT_STRING,   C(log_file),      0, 0,        "-"),
	K("max_sessions",  KT_UINT,     C(max_sessions),  1, UINT_MAX, "1000"),
	K("spool_workers", KT_UINT,     C(spool_workers), 1, 64,       "2"),
	{ "max_sessions_per_client", KT_UINT, C(max_sessions_per_client), 0, 0,
	    1, UINT_MAX, "50", NULL, KF_ZERO_OK },
	{ "max_client_errors", KT_UINT, C(max_client_errors), 0, 0, 1,
	    UINT_MAX, "100", NULL, KF_ZERO_OK },
	K("client_penalty_time", KT_SECONDS, C(client_penalty_time), S(1), S(86400), "60s"),
	K("client_limit_exceptions", KT_CIDRS, C(client_limit_exceptions), 0, 0, ""),
	/* Delivery. helo_name: config_finish() copies hostname if unset. */
	K("smarthost",     KT_ROUTE,    C(smarthost),     0, 0,        NULL),
	K("dns_resolver",  KT_RESOLVER, C(dns_resolver),  0, 0,        NULL),
	K("helo_name",     KT_HOSTNAME, C(helo_name),     0, 0,        NULL),
	K("max_queue_time", KT_SECONDS, C(max_queue_time), S(1), S(UINT_MAX), "5d"),
	K("retry_initial", KT_SECONDS,  C(retry_initial), S(1), S(UINT_MAX), "60s"),
	/* retry_max >= retry_initial: checked by top_close(). */
	K("retry_max",     KT_SECONDS,  C(retry_max),     S(1), S(UINT_MAX), "1h"),
	K("queue_only",    KT_BOOL,     C(queue_only),    0, 0,        "no"),
	K("user",          KT_HOSTNAME, C(user),          0, 0,        NULL),
	K("pid_file",      KT_STRING,   C(pid_file),      0, 0,        NULL),
	K("shutdown_timeout", KT_SECONDS, C(shutdown_timeout), S(0), S(3600), "30s"),
};

/* [listen NAME] */
static const struct key listen_keys[] = {
	{ "address", KT_HOSTPORT, L(address), L(sa), L(salen), 0, 0, NULL, NULL,
	    KF_REQUIRED },
	K("tls_cert",             KT_STRING,  L(tls_cert),             0, 0, NULL),
	K("tls_key",              KT_STRING,  L(tls_key),              0, 0, NULL),
	K("pipelining",           KT_BOOL,    L(pipelining),           0, 0, "yes"),
	K("chunking",             KT_BOOL,    L(chunking),             0, 0, "yes"),
	K("starttls",             KT_BOOL,    L(starttls),             0, 0, "yes"),
	K("enforce_sync",         KT_BOOL,    L(enforce_sync),         0, 0, "yes"),
	K("sync_exempt_networks", KT_CIDRS,   L(sync_exempt_networks), 0, 0, ""),
	{ "bare_lf", KT_ENUM, L(bare_lf), 0, 0, 0, 0, "reject", bare_lf_names, 0 },
	K("max_message_size",     KT_SIZE,    L(max_message_size),     1, UINT64_MAX, "50M"),
	K("max_recipients",       KT_UINT,    L(max_recipients),       1, UINT_MAX, "1000"),
	K("max_messages",         KT_UINT,    L(max_messages),         1, UINT_MAX, "1000"),
	K("max_errors",           KT_UINT,    L(max_errors),           1, UINT_MAX, "20"),
	{ "max_line_length", KT_UINT, L(max_line_length), 0, 0, 80, UINT_MAX,
	    "1000", NULL, KF_ZERO_OK },
	K("command_timeout",      KT_SECONDS, L(command_timeout),      S(1), S(UINT_MAX), "300s"),
	K("data_timeout",         KT_SECONDS, L(data_timeout),         S(1), S(UINT_MAX), "180s"),
	K("greeting_delay",       KT_MILLIS,  L(greeting_delay_ms),    0, S(60), "0s"),
	{ "min_data_rate", KT_UINT, L(min_data_rate), 0, 0, 1, UINT_MAX, "500",
	    NULL, KF_ZERO_OK },
};

/* [relay] */
static const struct key relay_keys[] = {
	K("networks", KT_CIDRS, C(relay_networks), 0, 0, "127.0.0.0/8, ::1/128"),
	{ "local_domains", KT_DOMAINS, C(local_domains), C(nlocal_domains), 0,
	    0, 0, "", NULL, 0 },
};

/* [destination PATTERN]; route is refused in "*" by dest_refuse(). */
static const struct key dest_keys[] = {
	{ "route", KT_ROUTES, D(route), D(nroute), 0, 0, 0, "", NULL, 0 },
	{ "tls", KT_ENUM, D(tls), 0, 0, 0, 0, "may", tls_policy_names, 0 },
	K("pipelining",           KT_BOOL,    D(pipelining),         0, 0, "yes"),
	K("chunking",             KT_BOOL,    D(chunking),           0, 0, "yes"),
	K("port",                 KT_UINT,    D(port),               1, 65535, "25"),
	K("max_connections",      KT_UINT,    D(max_connections),    1, 1000, "10"),
	K("max_messages_per_connection", KT_UINT,
	    D(max_messages_per_connection), 1, UINT_MAX, "1000"),
	K("max_connection_age",   KT_SECONDS, D(max_connection_age), S(1), S(UINT_MAX), "300s"),
	K("idle_timeout",         KT_SECONDS, D(idle_timeout),       S(1), S(UINT_MAX), "10s"),
	K("pipeline_window",      KT_UINT,    D(pipeline_window),    1, 100, "8"),
	K("chain_after_data",     KT_BOOL,    D(chain_after_data),   0, 0, "yes"),
	K("connect_timeout",      KT_SECONDS, D(connect_timeout),    S(1), S(UINT_MAX), "30s"),
	K("reply_timeout",        KT_SECONDS, D(reply_timeout),      S(1), S(UINT_MAX), "300s"),
	K("data_timeout",         KT_SECONDS, D(data_timeout),       S(1), S(UINT_MAX), "600s"),
};

/* clang-format on */

/* A section's keys are tracked in a uint64_t bit set. */
_Static_assert(nitems(top_keys) <= 64, "too many keys for the seen set");
_Static_assert(nitems(listen_keys) <= 64, "too many keys for the seen set");
_Static_assert(nitems(relay_keys) <= 64, "too many keys for the seen set");
_Static_assert(nitems(dest_keys) <= 64, "too many keys for the seen set");

struct loader;

struct section_kind {
	const char *name;    /* "[name ...]"; NULL for the top level */
	int named;	     /* 1: "[name ARG]" with ARG required */
	const char *arg;     /* named: what ARG is, e.g. "name" */
	const char *example; /* named: an example ARG, e.g. "smtp" */
	const struct key *keys;
	size_t nkeys;
	/* Start a section; returns the struct the keys' offsets refer to, or
	 * NULL after recording an error. */
	void *(*open)(struct loader *, const char *arg);
	/* Checks at the end of a section; -1 after recording an error. */
	int (*close)(struct loader *, void *base);
	/* Why key k may not be set in this section (base), or NULL. Also
	 * keeps config_print from writing it. Optional. */
	const char *(*refuse)(const void *base, const struct key *k);
};

/* State of one parse. Lives on the stack of config_parse_text(). */
struct loader {
	struct config *cfg;
	const char *file; /* name used in messages */
	const char *text; /* input, len bytes, not necessarily NUL-terminated */
	size_t len;
	size_t pos;
	int lineno; /* line last handed to inih */

	const struct section_kind *kind; /* section being read */
	void *base;
	char label[LABEL_MAX]; /* "[listen smtp]"; "" at the top level */
	int sec_line;
	uint64_t seen;		/* keys set in this section */
	int key_line[64];	/* line of each key in seen */
	const struct key *last; /* last key set, for continuation lines */
	int cont_ok;		/* last key set is a list */
	int in_cont;		/* the line handed out is a continuation */
	int kind_line[8];	/* header line of each kind's first section */
	int star_line;		/* header line of [destination *] */
	int *dest_line;		/* header line of each cfg->dest[i] */

	int failed;
	int err_line;
	char err[ERR_MAX];
};

static int top_close(struct loader *, void *);
static void *listen_open(struct loader *, const char *);
static int listen_close(struct loader *, void *);
static void *relay_open(struct loader *, const char *);
static void *dest_open(struct loader *, const char *);
static const char *dest_refuse(const void *, const struct key *);

/* clang-format off */
static const struct section_kind section_kinds[] = {
	{ NULL, 0, NULL, NULL, top_keys, nitems(top_keys), NULL, top_close,
	    NULL },
	{ "listen", 1, "name", "smtp", listen_keys, nitems(listen_keys),
	    listen_open, listen_close, NULL },
	{ "relay", 0, NULL, NULL, relay_keys, nitems(relay_keys), relay_open,
	    NULL, NULL },
	{ "destination", 1, "pattern", "example.org", dest_keys,
	    nitems(dest_keys), dest_open, NULL, dest_refuse },
};
/* clang-format on */
_Static_assert(nitems(section_kinds) <= 8, "kind_line is too small");

#define TOP_KIND (&section_kinds[0])

/* The field of base at offset off, as a T * (CFIELD: const T *). */
#define FIELD(base, off, T) ((T *)(void *)((char *)(base) + (off)))
#define CFIELD(base, off, T)                                                   \
	((const T *)(const void *)((const char *)(base) + (off)))

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

/* Room for a value shown back in a message: QUOTE_MAX bytes, each up to
 * four characters ("\xNN"), and "...". */
struct qbuf {
	char s[QUOTE_MAX * 4 + 4];
};

/* s made safe to show: non-printable bytes as \xNN, cut after QUOTE_MAX. */
static const char *
quote(struct qbuf *q, const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len && i < QUOTE_MAX; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch >= 0x20 && ch < 0x7f)
			q->s[n++] = (char)ch;
		else
			n += (size_t)snprintf(
			    q->s + n, sizeof(q->s) - n, "\\x%02x", ch);
	}
	if (i < len) {
		memcpy(q->s + n, "...", 3);
		n += 3;
	}
	q->s[n] = '\0';
	return q->s;
}


static int
is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* Parse leading decimal digits (no sign, no space) into *v; *end after. */
static int
parse_u64(const char *s, uint64_t *v, const char **end)
{
	unsigned long long x;
	char *e;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoull(s, &e, 10);
	if (errno == ERANGE || x > UINT64_MAX)
		return -1;
	*v = x;
	*end = e;
	return 0;
}

/* "0s", "250ms", "90s", "5m", "1h", "5d": the largest unit that is exact. */
static void
fmt_duration(char *buf, size_t len, uint64_t ms)
{
	if (ms == 0)
		snprintf(buf, len, "0s");
	else if (ms % 86400000 == 0)
		snprintf(buf, len, "%" PRIu64 "d", ms / 86400000);
	else if (ms % 3600000 == 0)
		snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
	else if (ms % 60000 == 0)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, len, "%" PRIu64 "ms", ms);
}

/* ------------------------------------------------------------------ */
/* Addresses and domains                                                */

/* A port: 1 to 5 digits, 1..65535. */
static int
parse_port(const char *s, int *port)
{
	uint64_t v;
	const char *end;

	if (strlen(s) > 5 || parse_u64(s, &v, &end) == -1 || *end != '\0' ||
	    v < 1 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/*
 * "a.b.c.d:port", "[v6]:port", "a.b.c.d" or "[v6]" (the last two take
 * default_port, which must then be 1..65535: pass -1 to require a port).
 * An IPv6 address must be in brackets, so "::1:25" is never ambiguous.
 * sa and salen may be NULL to only check the syntax.
 */
int
config_parse_hostport(const char *s, int default_port,
    struct sockaddr_storage *sa, socklen_t *salen)
{
	char host[INET6_ADDRSTRLEN + 1];
	struct sockaddr_storage ss;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const char *hend, *rest, *colon;
	size_t hlen;
	int family, port;

	if (s == NULL)
		return -1;
	if (s[0] == '[') {
		hend = strchr(s, ']');
		if (hend == NULL)
			return -1;
		family = AF_INET6;
		hlen = (size_t)(hend - (s + 1));
		rest = hend + 1;
		s++;
	} else {
		colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL)
			return -1; /* bare IPv6, or garbage */
		family = AF_INET;
		hlen = colon != NULL ? (size_t)(colon - s) : strlen(s);
		rest = s + hlen;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';

	if (*rest == '\0') {
		if (default_port < 1 || default_port > 65535)
			return -1;
		port = default_port;
	} else if (*rest != ':' || parse_port(rest + 1, &port) == -1)
		return -1;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
			return -1;
		memcpy(&ss, &sin, sizeof(sin));
		if (salen != NULL)
			*salen = sizeof(sin);
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
			return -1;
		memcpy(&ss, &sin6, sizeof(sin6));
		if (salen != NULL)
			*salen = sizeof(sin6);
	}
	if (sa != NULL)
		*sa = ss;
	return 0;
}

/* What is wrong with the domain d (len bytes), or NULL if nothing. */
static const char *
domain_problem(const char *d, size_t len)
{
	const char *reason = NULL;
	size_t i, label = 0;

	if (len == 0)
		reason = "empty";
	else if (len > DOMAIN_MAX)
		reason = "longer than 253 characters";
	for (i = 0; reason == NULL && i < len; i++) {
		unsigned char ch = (unsigned char)d[i];

		if (ch == '.') {
			if (label == 0)
				reason = i + 1 == len ? "trailing dot"
						      : "empty label";
			else if (i + 1 == len)
				reason = "trailing dot";
			label = 0;
		} else if ((ch >= 'a' && ch <= 'z') ||
			   (ch >= 'A' && ch <= 'Z') ||
			   (ch >= '0' && ch <= '9') || ch == '-') {
			if (++label > LABEL_LEN_MAX)
				reason = "label longer than 63 characters";
		} else
			reason =
			    "only letters, digits, '-' and '.' are allowed";
	}
	return reason;
}

/* Check one domain of a local_domains list; reason into why. */
static int
domain_check(const char *d, size_t len, char *why, size_t whylen)
{
	struct qbuf q;
	const char *reason = domain_problem(d, len);

	if (reason == NULL)
		return 0;
	snprintf(why, whylen,
	    "bad domain '%s': %s (expected a domain like example.com)",
	    quote(&q, d, len), reason);
	return -1;
}

/* Is the last label of host (len bytes) all digits, like an IPv4 address? */
static int
ends_numeric(const char *host, size_t len)
{
	size_t i = len;

	while (i > 0 && host[i - 1] >= '0' && host[i - 1] <= '9')
		i--;
	return i < len && (i == 0 || host[i - 1] == '.');
}

/*
 * What is wrong with a route entry s (len bytes): "host:port", host a DNS
 * name (checked as a domain), an IPv4 address or an IPv6 address in
 * brackets, port 1..65535 and required. NULL if nothing.
 */
static const char *
route_problem(const char *s, size_t len)
{
	char addr[INET6_ADDRSTRLEN + 1], pbuf[8];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *hend, *colon, *reason;
	size_t hlen, plen;
	int port;

	if (len == 0)
		return "empty";
	if (s[0] == '[') {
		hend = memchr(s, ']', len);
		if (hend == NULL)
			return "missing ']'";
		hlen = (size_t)(hend - (s + 1));
		if (hlen == 0 || hlen >= sizeof(addr))
			return "bad IPv6 address";
		memcpy(addr, s + 1, hlen);
		addr[hlen] = '\0';
		if (inet_pton(AF_INET6, addr, bin) != 1)
			return "bad IPv6 address";
		colon = hend + 1;
		if (colon == s + len)
			return "missing port";
		if (*colon != ':')
			return "expected ':' and a port after ']'";
	} else {
		colon = memchr(s, ':', len);
		if (colon == NULL)
			return "missing port";
		hlen = (size_t)(colon - s);
		if (memchr(colon + 1, ':', len - hlen - 1) != NULL)
			return "too many ':' (an IPv6 address must be in "
			       "brackets)";
		if (hlen == 0)
			return "missing host";
		if (ends_numeric(s, hlen)) {
			if (hlen >= sizeof(addr))
				return "bad IPv4 address";
			memcpy(addr, s, hlen);
			addr[hlen] = '\0';
			if (inet_pton(AF_INET, addr, bin) != 1)
				return "bad IPv4 address";
		} else if ((reason = domain_problem(s, hlen)) != NULL)
			return reason;
	}
	plen = len - (size_t)(colon + 1 - s);
	if (plen == 0)
		return "missing port";
	if (plen >= sizeof(pbuf))
		return "bad port (expected 1 to 65535)";
	memcpy(pbuf, colon + 1, plen);
	pbuf[plen] = '\0';
	if (parse_port(pbuf, &port) == -1)
		return "bad port (expected 1 to 65535)";
	return NULL;
}

/* Check one route entry (or the smarthost); reason into why. */
static int
route_check(const char *s, size_t len, char *why, size_t whylen)
{
	struct qbuf q;
	const char *reason = route_problem(s, len);

	if (reason == NULL)
		return 0;
	snprintf(why, whylen,
	    "bad host:port '%s': %s (expected a host name, IPv4 address or "
	    "[IPv6 address], ':' and a port, e.g. mx.example.org:25 or "
	    "[2001:db8::1]:25)",
	    quote(&q, s, len), reason);
	return -1;
}

/* Check a dns_resolver value: "ADDR" or "ADDR@PORT", ADDR numeric. */
static int
resolver_check(const char *s, char *why, size_t whylen)
{
	struct qbuf q;
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *at, *reason = NULL;
	size_t alen;
	int port;

	at = strchr(s, '@');
	alen = at != NULL ? (size_t)(at - s) : strlen(s);
	if (alen == 0)
		reason = "missing address";
	else if (alen >= sizeof(addr))
		reason = "not a numeric IPv4 or IPv6 address";
	else {
		memcpy(addr, s, alen);
		addr[alen] = '\0';
		if (inet_pton(AF_INET, addr, bin) != 1 &&
		    inet_pton(AF_INET6, addr, bin) != 1)
			reason = "not a numeric IPv4 or IPv6 address";
		else if (at != NULL && parse_port(at + 1, &port) == -1)
			reason = "bad port (expected 1 to 65535)";
	}
	if (reason == NULL)
		return 0;
	snprintf(why, whylen,
	    "bad resolver '%s': %s (expected a numeric address and an "
	    "optional @port, e.g. 127.0.0.1, ::1 or 192.0.2.53@5353)",
	    quote(&q, s, strlen(s)), reason);
	return -1;
}

static int
is_list_sep(char ch)
{
	return ch == ',' || ch == ' ' || ch == '\t';
}

/* Free n strings of v and v. */
static void
strv_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/*
 * Parse a list into a new array (*vp, *np): domains (lower-cased) or, with
 * routes, route entries (as written). On error nothing is left allocated.
 */
static int
strv_parse(
    const char *s, int routes, char ***vp, size_t *np, char *why, size_t whylen)
{
	char **v = NULL, **nv, *d;
	const char *start;
	size_t n = 0, len, i;

	while (*s != '\0') {
		while (is_list_sep(*s))
			s++;
		if (*s == '\0')
			break;
		start = s;
		while (*s != '\0' && !is_list_sep(*s))
			s++;
		len = (size_t)(s - start);
		if ((routes ? route_check(start, len, why, whylen)
			    : domain_check(start, len, why, whylen)) == -1)
			goto fail;
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (nv == NULL)
			goto nomem;
		v = nv;
		d = malloc(len + 1);
		if (d == NULL)
			goto nomem;
		for (i = 0; i < len; i++)
			d[i] = (!routes && start[i] >= 'A' && start[i] <= 'Z')
				   ? (char)(start[i] - 'A' + 'a')
				   : start[i];
		d[len] = '\0';
		v[n++] = d;
	}
	*vp = v;
	*np = n;
	return 0;

nomem:
	snprintf(why, whylen, "out of memory");
fail:
	strv_free(v, n);
	return -1;
}

/* ------------------------------------------------------------------ */
/* Typed values                                                         */

static const char *
uint_expected(const struct key *k, char *buf, size_t len)
{
	if (k->flags & KF_ZERO_OK)
		snprintf(buf, len, "0 (unlimited) or an integer >= %" PRIu64,
		    k->min);
	else if (k->max == UINT_MAX)
		snprintf(buf, len, "an integer >= %" PRIu64, k->min);
	else
		snprintf(buf, len, "an integer from %" PRIu64 " to %" PRIu64,
		    k->min, k->max);
	return buf;
}

static int
set_string(const struct key *k, void *base, const char *value, char *why,
    size_t whylen)
{
	struct qbuf q;
	char **field = FIELD(base, k->off, char *);
	char *dup;
	size_t i, len = strlen(value);

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)value[i];

		if (k->type == KT_HOSTNAME ? (ch <= 0x20 || ch >= 0x7f)
					   : (ch < 0x20 || ch == 0x7f))
			break;
	}
	if (len == 0 || i < len ||
	    (k->type == KT_HOSTNAME && len > HOSTNAME_MAX)) {
		snprintf(why, whylen, "expected %s, got '%s'",
		    k->type == KT_HOSTNAME
			? "a host name (printable ASCII without spaces)"
			: "a non-empty value without control characters",
		    quote(&q, value, len));
		return -1;
	}
	/* "key =;x" gives ";x", but config_print's "key = ;x" a comment. */
	if (value[0] == ';') {
		snprintf(why, whylen,
		    "a value cannot start with ';' (it would be read back as a "
		    "comment), got '%s'",
		    quote(&q, value, len));
		return -1;
	}
	dup = strdup(value);
	if (dup == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	free(*field);
	*field = dup;
	return 0;
}

static int
set_number(const struct key *k, void *base, const char *value, char *why,
    size_t whylen)
{
	struct qbuf q;
	char exp[128], lo[32], hi[32];
	const char *end;
	uint64_t v, mult = 1;

	if (parse_u64(value, &v, &end) == -1)
		goto bad;
	switch (k->type) {
	case KT_UINT:
		if (*end != '\0' || v > k->max ||
		    (v < k->min && !(v == 0 && (k->flags & KF_ZERO_OK))))
			goto bad;
		*FIELD(base, k->off, unsigned) = (unsigned)v;
		return 0;
	case KT_SIZE:
		if (*end == 'K' || *end == 'k')
			mult = 1024;
		else if (*end == 'M' || *end == 'm')
			mult = 1024 * 1024;
		else if (*end == 'G' || *end == 'g')
			mult = 1024 * 1024 * 1024;
		if (mult != 1)
			end++;
		if (*end != '\0' || v > UINT64_MAX / mult)
			goto bad;
		v *= mult;
		if (v < k->min || v > k->max)
			goto bad;
		*FIELD(base, k->off, uint64_t) = v;
		return 0;
	case KT_SECONDS:
	case KT_MILLIS:
		if (strcmp(end, "ms") == 0)
			mult = 1;
		else if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
			mult = 1000;
		else if (strcmp(end, "m") == 0)
			mult = 60 * 1000;
		else if (strcmp(end, "h") == 0)
			mult = 3600 * 1000;
		else if (strcmp(end, "d") == 0)
			mult = 86400 * 1000;
		else
			goto bad;
		if (v > UINT64_MAX / mult)
			goto bad;
		v *= mult;
		if (v < k->min || v > k->max)
			goto bad;
		if (k->type == KT_SECONDS) {
			if (v % 1000 != 0) {
				snprintf(why, whylen,
				    "expected a whole number "
				    "of seconds, got '%s'",
				    quote(&q, value, strlen(value)));
				return -1;
			}
			*FIELD(base, k->off, unsigned) = (unsigned)(v / 1000);
		} else
			*FIELD(base, k->off, unsigned) = (unsigned)v;
		return 0;
	default:
		break;
	}
	/* NOTREACHED: set_value() dispatches only numeric types here. */
	snprintf(why, whylen, "internal error: key type %d", (int)k->type);
	return -1;

bad:
	switch (k->type) {
	case KT_UINT:
		uint_expected(k, exp, sizeof(exp));
		break;
	case KT_SIZE:
		snprintf(exp, sizeof(exp),
		    "a size >= %" PRIu64 " (bytes, or "
		    "with a suffix K, M or G, e.g. 50M)",
		    k->min);
		break;
	default:
		fmt_duration(lo, sizeof(lo), k->min);
		fmt_duration(hi, sizeof(hi), k->max);
		if (k->max >= S(UINT_MAX))
			snprintf(exp, sizeof(exp), "a duration >= %s", lo);
		else
			snprintf(exp, sizeof(exp), "a duration from %s to %s",
			    lo, hi);
		/* Unit list appended below. */
		snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp),
		    " (a number with unit ms, s, m, h or d, e.g. 30s)");
		break;
	}
	snprintf(why, whylen, "expected %s, got '%s'", exp,
	    quote(&q, value, strlen(value)));
	return -1;
}

static int
set_choice(const struct key *k, void *base, const char *value, char *why,
    size_t whylen)
{
	struct qbuf q;
	char exp[128];
	size_t i, n, used = 0;

	if (k->type == KT_BOOL) {
		if (strcasecmp(value, "yes") == 0 ||
		    strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0) {
			*FIELD(base, k->off, int) = 1;
			return 0;
		}
		if (strcasecmp(value, "no") == 0 ||
		    strcasecmp(value, "false") == 0 ||
		    strcmp(value, "0") == 0) {
			*FIELD(base, k->off, int) = 0;
			return 0;
		}
		snprintf(why, whylen, "expected yes or no, got '%s'",
		    quote(&q, value, strlen(value)));
		return -1;
	}
	for (n = 0; k->names[n] != NULL; n++)
		if (strcmp(value, k->names[n]) == 0) {
			*FIELD(base, k->off, int) = (int)n;
			return 0;
		}
	exp[0] = '\0';
	for (i = 0; i < n && used < sizeof(exp); i++)
		used += (size_t)snprintf(exp + used, sizeof(exp) - used, "%s%s",
		    i == 0	 ? ""
		    : i + 1 == n ? " or "
				 : ", ",
		    k->names[i]);
	snprintf(why, whylen, "expected %s, got '%s'", exp,
	    quote(&q, value, strlen(value)));
	return -1;
}

/*
 * Set key k of the struct at base from value, replacing what was there;
 * with append (a continuation line), add to the list instead. On error the
 * field is unchanged and why says what was expected and what was given.
 */
static int
set_value(const struct key *k, void *base, const char *value, int append,
    char *why, size_t whylen)
{
	struct qbuf q;
	struct cidr_list tmp = {NULL, 0}, *cl;
	struct sockaddr_storage ss;
	socklen_t sslen;
	char cerr[160], **v, **nv, *dup;
	size_t n, *np;
	int bad;

	switch (k->type) {
	case KT_STRING:
	case KT_HOSTNAME:
		return set_string(k, base, value, why, whylen);
	case KT_BOOL:
	case KT_ENUM:
		return set_choice(k, base, value, why, whylen);
	case KT_UINT:
	case KT_SIZE:
	case KT_SECONDS:
	case KT_MILLIS:
		return set_number(k, base, value, why, whylen);
	case KT_CIDRS:
		cl = FIELD(base, k->off, struct cidr_list);
		if (cidr_list_parse(
			value, append ? cl : &tmp, cerr, sizeof(cerr)) == -1) {
			cidr_list_free(&tmp);
			snprintf(why, whylen,
			    "%s (expected address/prefix, "
			    "e.g. 192.0.2.0/24 or 2001:db8::/32)",
			    cerr);
			return -1;
		}
		if (!append) {
			cidr_list_free(cl);
			*cl = tmp;
		}
		return 0;
	case KT_DOMAINS:
	case KT_ROUTES:
		if (strv_parse(
			value, k->type == KT_ROUTES, &v, &n, why, whylen) == -1)
			return -1;
		np = FIELD(base, k->off2, size_t);
		if (!append) {
			strv_free(*FIELD(base, k->off, char **), *np);
			*FIELD(base, k->off, char **) = NULL;
			*np = 0;
		}
		if (n == 0) {
			free(v);
			return 0;
		}
		nv = realloc(
		    *FIELD(base, k->off, char **), (*np + n) * sizeof(*nv));
		if (nv == NULL) {
			strv_free(v, n);
			snprintf(why, whylen, "out of memory");
			return -1;
		}
		memcpy(nv + *np, v, n * sizeof(*nv));
		free(v);
		*FIELD(base, k->off, char **) = nv;
		*np += n;
		return 0;
	case KT_HOSTPORT:
		if (config_parse_hostport(value, -1, &ss, &sslen) == -1) {
			snprintf(why, whylen,
			    "expected a numeric address and "
			    "port, e.g. 192.0.2.1:25 or [2001:db8::1]:25 (port "
			    "1 to 65535), got '%s'",
			    quote(&q, value, strlen(value)));
			return -1;
		}
		dup = strdup(value);
		if (dup == NULL) {
			snprintf(why, whylen, "out of memory");
			return -1;
		}
		free(*FIELD(base, k->off, char *));
		*FIELD(base, k->off, char *) = dup;
		*FIELD(base, k->off2, struct sockaddr_storage) = ss;
		*FIELD(base, k->off3, socklen_t) = sslen;
		return 0;
	case KT_ROUTE:
	case KT_RESOLVER:
		bad = k->type == KT_ROUTE
			  ? route_check(value, strlen(value), why, whylen)
			  : resolver_check(value, why, whylen);
		if (bad == -1)
			return -1;
		dup = strdup(value);
		if (dup == NULL) {
			snprintf(why, whylen, "out of memory");
			return -1;
		}
		free(*FIELD(base, k->off, char *));
		*FIELD(base, k->off, char *) = dup;
		return 0;
	}
	snprintf(why, whylen, "internal error: key type %d", (int)k->type);
	return -1;
}

static int
is_list(const struct key *k)
{
	return k->type == KT_CIDRS || k->type == KT_DOMAINS ||
	       k->type == KT_ROUTES;
}

/* Free what the keys of one struct own; fields are left empty. */
static void
keys_free(const struct key *keys, size_t nkeys, void *base)
{
	const struct key *k;
	size_t i;

	for (i = 0; i < nkeys; i++) {
		k = &keys[i];
		switch (k->type) {
		case KT_STRING:
		case KT_HOSTNAME:
		case KT_HOSTPORT:
		case KT_ROUTE:
		case KT_RESOLVER:
			free(*FIELD(base, k->off, char *));
			*FIELD(base, k->off, char *) = NULL;
			break;
		case KT_CIDRS:
			cidr_list_free(FIELD(base, k->off, struct cidr_list));
			break;
		case KT_DOMAINS:
		case KT_ROUTES:
			strv_free(*FIELD(base, k->off, char **),
			    *FIELD(base, k->off2, size_t));
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->off2, size_t) = 0;
			break;
		default:
			break;
		}
	}
}

/* Apply the table's defaults to base. Fails only when out of memory. */
static int
keys_defaults(
    const struct key *keys, size_t nkeys, void *base, char *why, size_t whylen)
{
	size_t i;

	for (i = 0; i < nkeys; i++)
		if (keys[i].def != NULL &&
		    set_value(&keys[i], base, keys[i].def, 0, why, whylen) ==
			-1)
			return -1;
	return 0;
}

static const struct key *
key_find(const struct key *keys, size_t nkeys, const char *name, int icase)
{
	size_t i;

	for (i = 0; i < nkeys; i++)
		if ((icase ? strcasecmp(keys[i].name, name)
			   : strcmp(keys[i].name, name)) == 0)
			return &keys[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The loader: inih reader and handler                                  */

static void ld_error(struct loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record "FILE:LINE: message" unless an error is already recorded. */
static void
ld_error(struct loader *ld, int line, const char *fmt, ...)
{
	char msg[ERR_MAX - 128]; /* room for "FILE:LINE: " */
	va_list ap;

	if (ld->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->failed = 1;
	ld->err_line = line;
	snprintf(ld->err, sizeof(ld->err), "%s:%d: %s", ld->file, line, msg);
}

/* Record "FILE:LINE: [section] key: why" (no "[section] " at top level). */
static void
ld_key_error(struct loader *ld, int line, const char *key, const char *why)
{
	ld_error(ld, line, "%s%s%s: %s", ld->label, ld->label[0] ? " " : "",
	    key, why);
}

/* End of the current section: required keys, then the kind's checks. */
static int
ld_close(struct loader *ld)
{
	const struct section_kind *kind = ld->kind;
	size_t i;

	for (i = 0; i < kind->nkeys; i++)
		if ((kind->keys[i].flags & KF_REQUIRED) &&
		    !(ld->seen & ((uint64_t)1 << i))) {
			ld_key_error(ld, ld->sec_line, kind->keys[i].name,
			    "required in this section");
			return -1;
		}
	if (kind->close != NULL && kind->close(ld, ld->base) == -1)
		return -1;
	return 0;
}

/* "[relay]", or "[listen NAME]" for a named kind, into buf. */
static const char *
kind_label(const struct section_kind *kind, char *buf, size_t len)
{
	size_t i, n;

	n = (size_t)snprintf(
	    buf, len, "[%s%s", kind->name, kind->named ? " " : "");
	for (i = 0; kind->named && kind->arg[i] != '\0' && n + 2 < len; i++)
		buf[n++] = (char)(kind->arg[i] >= 'a' && kind->arg[i] <= 'z'
				      ? kind->arg[i] - 'a' + 'A'
				      : kind->arg[i]);
	if (n + 1 < len)
		buf[n++] = ']';
	buf[n < len ? n : len - 1] = '\0';
	return buf;
}

/* "[listen NAME], [relay] or [destination PATTERN]" into buf. */
static const char *
kinds_list(char *buf, size_t len)
{
	size_t i, used = 0;
	char label[64];

	buf[0] = '\0';
	for (i = 1; i < nitems(section_kinds) && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
		    i == 1			     ? ""
		    : i + 1 == nitems(section_kinds) ? " or "
						     : ", ",
		    kind_label(&section_kinds[i], label, sizeof(label)));
	return buf;
}

/*
 * A section header line (body starts with '['). Closes the section being
 * read and opens the new one. Returns -1 after recording an error.
 */
static int
ld_section(struct loader *ld, const char *body, size_t len)
{
	struct qbuf q;
	const struct section_kind *kind = NULL;
	char buf[LABEL_MAX * 2], kinds[128], *p, *end, *kname, *arg;
	size_t i;
	void *base;

	if (ld_close(ld) == -1)
		return -1;
	if (len >= sizeof(buf)) {
		ld_error(ld, ld->lineno, "section header too long");
		return -1;
	}
	memcpy(buf, body, len);
	buf[len] = '\0';

	end = strchr(buf, ']');
	if (end == NULL) {
		ld_error(ld, ld->lineno,
		    "syntax error: expected ']' at the "
		    "end of the section header");
		return -1;
	}
	*end = '\0';
	for (p = end + 1; is_blank(*p); p++)
		;
	if (*p != '\0' && *p != ';' && *p != '#') {
		ld_error(ld, ld->lineno,
		    "syntax error: unexpected text after ']': '%s'",
		    quote(&q, p, strlen(p)));
		return -1;
	}

	/* "[ kind  arg ]" -> kind, arg */
	for (kname = buf + 1; is_blank(*kname); kname++)
		;
	for (arg = kname; *arg != '\0' && !is_blank(*arg); arg++)
		;
	if (*arg != '\0')
		*arg++ = '\0';
	while (is_blank(*arg))
		arg++;
	for (p = arg + strlen(arg); p > arg && is_blank(p[-1]); p--)
		;
	*p = '\0';

	for (i = 1; i < nitems(section_kinds); i++)
		if (strcmp(section_kinds[i].name, kname) == 0)
			kind = &section_kinds[i];
	if (kind == NULL) {
		for (i = 1; i < nitems(section_kinds); i++)
			if (strcasecmp(section_kinds[i].name, kname) == 0)
				break;
		if (i < nitems(section_kinds))
			ld_error(ld, ld->lineno,
			    "unknown section [%s] "
			    "(section names are lower case: [%s])",
			    quote(&q, kname, strlen(kname)),
			    section_kinds[i].name);
		else
			ld_error(ld, ld->lineno,
			    "unknown section [%s] (expected %s)",
			    quote(&q, kname, strlen(kname)),
			    kinds_list(kinds, sizeof(kinds)));
		return -1;
	}
	if (kind->named && *arg == '\0') {
		ld_error(ld, ld->lineno, "[%s]: a %s is required, e.g. [%s %s]",
		    kind->name, kind->arg, kind->name, kind->example);
		return -1;
	}
	if (!kind->named && *arg != '\0') {
		ld_error(ld, ld->lineno, "[%s %s]: [%s] takes no name",
		    kind->name, quote(&q, arg, strlen(arg)), kind->name);
		return -1;
	}
	if (!kind->named && ld->kind_line[kind - section_kinds] != 0) {
		ld_error(ld, ld->lineno,
		    "[%s]: duplicate section (first at line %d)", kind->name,
		    ld->kind_line[kind - section_kinds]);
		return -1;
	}
	if (kind->named)
		snprintf(
		    ld->label, sizeof(ld->label), "[%s %s]", kind->name, arg);
	else
		snprintf(ld->label, sizeof(ld->label), "[%s]", kind->name);
	ld->sec_line = ld->lineno;
	base = kind->open(ld, arg);
	if (base == NULL)
		return -1;
	if (ld->kind_line[kind - section_kinds] == 0)
		ld->kind_line[kind - section_kinds] = ld->lineno;
	ld->kind = kind;
	ld->base = base;
	ld->seen = 0;
	memset(ld->key_line, 0, sizeof(ld->key_line));
	ld->last = NULL;
	return 0;
}

/* Copy [" "] body "\n" into inih's buffer (the caller checked the size). */
static char *
ld_out(char *str, const char *body, size_t len, int indent)
{
	size_t n = 0;

	if (indent)
		str[n++] = ' ';
	memcpy(str + n, body, len);
	n += len;
	str[n++] = '\n';
	str[n] = '\0';
	return str;
}

/* Length of a continuation line without its "; comment" (as inih does). */
static size_t
strip_inline_comment(const char *s, size_t len)
{
	size_t i;

	for (i = 1; i < len; i++)
		if (s[i] == ';' && is_blank(s[i - 1]))
			return i;
	return len;
}

/* Could this line (body, after indentation) be a section header? Not a
 * "[v6addr]:port" route entry: ':' after ']' is never valid in a header. */
static int
is_header(const char *body, size_t len)
{
	const char *end;

	if (len == 0 || body[0] != '[')
		return 0;
	end = memchr(body, ']', len);
	return end == NULL || end + 1 == body + len || end[1] != ':';
}

/*
 * inih's reader: hand out the next line, one line per call, so that
 * ld->lineno is the line inih is working on while it calls the handler.
 * See the comment at the top of the file for what is changed or refused.
 */
static char *
ld_read(char *str, int num, void *stream)
{
	struct loader *ld = stream;
	const char *line, *nl, *body;
	size_t linelen, indent, bodylen;

	ld->in_cont = 0;
	if (ld->failed || ld->pos >= ld->len || num < 8)
		return NULL;
	line = ld->text + ld->pos;
	nl = memchr(line, '\n', ld->len - ld->pos);
	linelen = nl != NULL ? (size_t)(nl - line) : ld->len - ld->pos;
	ld->pos += linelen + (nl != NULL ? 1 : 0);
	ld->lineno++;

	if (memchr(line, '\0', linelen) != NULL) {
		ld_error(ld, ld->lineno, "NUL byte in line");
		return NULL;
	}
	if (linelen > 0 && line[linelen - 1] == '\r')
		linelen--;
	if (ld->lineno == 1 && linelen >= 3 &&
	    memcmp(line, "\xef\xbb\xbf", 3) == 0) {
		line += 3;
		linelen -= 3;
	}
	for (indent = 0; indent < linelen && is_blank(line[indent]); indent++)
		;
	body = line + indent;
	bodylen = linelen - indent;
	/* inih's buffer must hold ' ', the line, '\n' and NUL. */
	if (bodylen > (size_t)num - 3) {
		ld_error(ld, ld->lineno,
		    "line too long (more than %d characters after indentation)",
		    num - 3);
		return NULL;
	}

	if (bodylen == 0 || body[0] == ';' || body[0] == '#')
		return ld_out(str, body, bodylen, 0); /* inih skips it */
	if (indent > 0 && ld->cont_ok && !is_header(body, bodylen) &&
	    memchr(body, '=', bodylen) == NULL) {
		/* Continuation of a list: inih passes it to the handler
		 * under the previous key, because it is indented. */
		ld->in_cont = 1;
		return ld_out(
		    str, body, strip_inline_comment(body, bodylen), 1);
	}
	ld->cont_ok = 0;
	if (body[0] == '[' && ld_section(ld, body, bodylen) == -1)
		return NULL;
	return ld_out(str, body, bodylen, 0);
}

static const char syntax_error[] =
    "syntax error: expected 'key = value' or '[section]'";

/* Tell where a key that is unknown here belongs, if anywhere. */
static void
ld_unknown_key(struct loader *ld, const char *name)
{
	struct qbuf q;
	char why[WHY_MAX], label[64];
	const struct section_kind *where[nitems(section_kinds)];
	const struct key *k;
	size_t i, n = 0, used;

	k = key_find(ld->kind->keys, ld->kind->nkeys, name, 1);
	if (k != NULL) {
		snprintf(why, sizeof(why),
		    "unknown key (keys are lower case: %s)", k->name);
		goto out;
	}
	for (i = 0; i < nitems(section_kinds); i++)
		if (&section_kinds[i] != ld->kind &&
		    key_find(section_kinds[i].keys, section_kinds[i].nkeys,
			name, 0) != NULL)
			where[n++] = &section_kinds[i];
	if (n == 0) {
		snprintf(why, sizeof(why), "unknown key");
		goto out;
	}
	/* "unknown key here (it belongs in [listen NAME] or in [...])" */
	used =
	    (size_t)snprintf(why, sizeof(why), "unknown key here (it belongs ");
	for (i = 0; i < n && used < sizeof(why); i++) {
		const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";

		if (where[i]->name == NULL) {
			used += (size_t)snprintf(why + used, sizeof(why) - used,
			    "%sat the top, before any section", sep);
			continue;
		}
		used += (size_t)snprintf(why + used, sizeof(why) - used,
		    "%sin %s", sep, kind_label(where[i], label, sizeof(label)));
	}
	if (used < sizeof(why))
		snprintf(why + used, sizeof(why) - used, ")");
out:
	ld_key_error(ld, ld->lineno, quote(&q, name, strlen(name)), why);
}

/* inih's handler: one "name = value" (or a continuation line). */
static int
ld_handler(void *user, const char *section, const char *name, const char *value)
{
	struct loader *ld = user;
	const struct key *k;
	const char *refused;
	char why[WHY_MAX];
	size_t i;

	if (ld->failed)
		return 0;
	if (name == NULL)
		return 1; /* a new section, if inih was built to report it */
	if (value == NULL || name[0] == '\0') {
		ld_error(ld, ld->lineno, "%s", syntax_error);
		return 0;
	}
	if (ld->in_cont) {
		k = ld->last;
		if (k == NULL || strcmp(name, k->name) != 0) {
			/* inih without multi-line support: not ours. */
			ld_error(ld, ld->lineno, "%s", syntax_error);
			return 0;
		}
		if (set_value(k, ld->base, value, 1, why, sizeof(why)) == -1) {
			ld_key_error(ld, ld->lineno, k->name, why);
			return 0;
		}
	} else {
		k = key_find(ld->kind->keys, ld->kind->nkeys, name, 0);
		if (k == NULL) {
			ld_unknown_key(ld, name);
			return 0;
		}
		i = (size_t)(k - ld->kind->keys);
		if (ld->seen & ((uint64_t)1 << i)) {
			ld_key_error(ld, ld->lineno, k->name,
			    "duplicate key (already set in this section)");
			return 0;
		}
		if (ld->kind->refuse != NULL &&
		    (refused = ld->kind->refuse(ld->base, k)) != NULL) {
			ld_key_error(ld, ld->lineno, k->name, refused);
			return 0;
		}
		ld->seen |= (uint64_t)1 << i;
		ld->key_line[i] = ld->lineno;
		if (set_value(k, ld->base, value, 0, why, sizeof(why)) == -1) {
			ld_key_error(ld, ld->lineno, k->name, why);
			return 0;
		}
		ld->last = k;
	}
	ld->cont_ok = is_list(k);
	return 1;
}

/* ------------------------------------------------------------------ */
/* Section kinds                                                        */

/* Index of key name in keys (the name must be there). */
static size_t
key_index(const struct key *keys, size_t nkeys, const char *name)
{
	const struct key *k = key_find(keys, nkeys, name, 0);

	return k != NULL ? (size_t)(k - keys) : 0;
}

/* End of the top level: retry_max >= retry_initial. */
static int
top_close(struct loader *ld, void *base)
{
	const struct config *cfg = base;
	char why[WHY_MAX], lo[32], hi[32];
	size_t imax = key_index(top_keys, nitems(top_keys), "retry_max");
	size_t iinit = key_index(top_keys, nitems(top_keys), "retry_initial");

	if (cfg->retry_max >= cfg->retry_initial)
		return 0;
	fmt_duration(lo, sizeof(lo), (uint64_t)cfg->retry_initial * 1000);
	fmt_duration(hi, sizeof(hi), (uint64_t)cfg->retry_max * 1000);
	if (ld->seen & ((uint64_t)1 << imax)) {
		snprintf(why, sizeof(why),
		    "expected a duration >= retry_initial (%s), got %s", lo,
		    hi);
		ld_key_error(ld, ld->key_line[imax], "retry_max", why);
	} else {
		snprintf(why, sizeof(why),
		    "expected a duration <= retry_max (%s, its default; set "
		    "retry_max too), got %s",
		    hi, lo);
		ld_key_error(ld, ld->key_line[iinit], "retry_initial", why);
	}
	return -1;
}

static void
listen_free(struct listen_conf *l)
{
	keys_free(listen_keys, nitems(listen_keys), l);
	free(l->name);
	l->name = NULL;
}

/* Append a listener named name with all defaults; NULL when out of memory. */
static struct listen_conf *
listen_add(struct config *cfg, const char *name, char *why, size_t whylen)
{
	struct listen_conf *v, *l;

	v = realloc(cfg->listen, (cfg->nlisten + 1) * sizeof(*v));
	if (v == NULL)
		goto nomem;
	cfg->listen = v;
	l = &cfg->listen[cfg->nlisten];
	memset(l, 0, sizeof(*l));
	cfg->nlisten++; /* from here on config_free() frees it */
	l->name = strdup(name);
	if (l->name == NULL)
		goto nomem;
	if (keys_defaults(listen_keys, nitems(listen_keys), l, why, whylen) ==
	    -1)
		return NULL;
	return l;

nomem:
	snprintf(why, whylen, "out of memory");
	return NULL;
}

static void *
listen_open(struct loader *ld, const char *arg)
{
	struct qbuf q;
	struct listen_conf *l;
	char why[WHY_MAX];
	size_t i;

	for (i = 0; arg[i] != '\0'; i++) {
		char ch = arg[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			(ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
			ch == '.')) {
			ld_error(ld, ld->lineno,
			    "[listen %s]: bad name "
			    "(expected letters, digits, '-', '_' or '.')",
			    quote(&q, arg, strlen(arg)));
			return NULL;
		}
	}
	for (i = 0; i < ld->cfg->nlisten; i++)
		if (strcmp(ld->cfg->listen[i].name, arg) == 0) {
			ld_error(ld, ld->lineno,
			    "[listen %s]: duplicate listener name", arg);
			return NULL;
		}
	l = listen_add(ld->cfg, arg, why, sizeof(why));
	if (l == NULL) {
		ld_error(ld, ld->lineno, "[listen %s]: %s", arg, why);
		return NULL;
	}
	return l;
}

static int
listen_close(struct loader *ld, void *base)
{
	struct listen_conf *l = base;

	if (l->tls_cert != NULL && l->tls_key == NULL) {
		ld_key_error(ld, ld->sec_line, "tls_key",
		    "required when tls_cert is set");
		return -1;
	}
	if (l->tls_key != NULL && l->tls_cert == NULL) {
		ld_key_error(ld, ld->sec_line, "tls_cert",
		    "required when tls_key is set");
		return -1;
	}
	return 0;
}

static void *
relay_open(struct loader *ld, const char *arg)
{
	return ld->cfg; /* the relay keys live in struct config */
}

static void
dest_free(struct dest_conf *d)
{
	keys_free(dest_keys, nitems(dest_keys), d);
	free(d->pattern);
	d->pattern = NULL;
}

/* d (zeroed) gets pattern and the built-in defaults; -1 when out of
 * memory (config_free() then frees what d holds). */
static int
dest_init(struct dest_conf *d, const char *pattern, char *why, size_t whylen)
{
	d->pattern = strdup(pattern);
	if (d->pattern == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	return keys_defaults(dest_keys, nitems(dest_keys), d, why, whylen);
}

/*
 * [destination PATTERN]: "*", "*.domain" or "domain", lower-cased. "*"
 * is cfg->dest_default, which still holds the built-in defaults since it
 * can appear only once; the others are new entries of cfg->dest.
 */
static void *
dest_open(struct loader *ld, const char *arg)
{
	struct qbuf q;
	struct config *cfg = ld->cfg;
	struct dest_conf *v, *d;
	char pattern[DOMAIN_MAX + 3], why[WHY_MAX];
	const char *dom, *reason;
	size_t i, len;
	int *lines;

	if (strcmp(arg, "*") == 0) {
		if (ld->star_line != 0) {
			ld_error(ld, ld->lineno,
			    "[destination *]: duplicate section (first at "
			    "line %d)",
			    ld->star_line);
			return NULL;
		}
		ld->star_line = ld->lineno;
		return &cfg->dest_default;
	}
	dom = strncmp(arg, "*.", 2) == 0 ? arg + 2 : arg;
	len = strlen(arg);
	reason = domain_problem(dom, strlen(dom));
	if (reason != NULL) {
		ld_error(ld, ld->lineno,
		    "[destination %s]: bad pattern: %s (expected a domain, "
		    "*.domain or *, e.g. example.org or *.example.org)",
		    quote(&q, arg, len), reason);
		return NULL;
	}
	for (i = 0; i <= len; i++) /* with the NUL; len <= DOMAIN_MAX + 2 */
		pattern[i] = (arg[i] >= 'A' && arg[i] <= 'Z')
				 ? (char)(arg[i] - 'A' + 'a')
				 : arg[i];
	for (i = 0; i < cfg->ndest; i++)
		if (strcmp(cfg->dest[i].pattern, pattern) == 0) {
			ld_error(ld, ld->lineno,
			    "[destination %s]: duplicate section (first at "
			    "line %d)",
			    arg, ld->dest_line[i]);
			return NULL;
		}

	lines = realloc(ld->dest_line, (cfg->ndest + 1) * sizeof(*lines));
	if (lines == NULL)
		goto nomem;
	ld->dest_line = lines;
	v = realloc(cfg->dest, (cfg->ndest + 1) * sizeof(*v));
	if (v == NULL)
		goto nomem;
	cfg->dest = v;
	d = &cfg->dest[cfg->ndest];
	memset(d, 0, sizeof(*d));
	lines[cfg->ndest] = ld->lineno;
	cfg->ndest++; /* from here on config_free() frees it */
	if (dest_init(d, pattern, why, sizeof(why)) == -1) {
		ld_error(ld, ld->lineno, "[destination %s]: %s", arg, why);
		return NULL;
	}
	return d;

nomem:
	ld_error(ld, ld->lineno, "[destination %s]: out of memory", arg);
	return NULL;
}

static const char *
dest_refuse(const void *base, const struct key *k)
{
	const struct dest_conf *d = base;

	if (strcmp(d->pattern, "*") == 0 && strcmp(k->name, "route") == 0)
		return "not allowed in [destination *] (set smarthost at the "
		       "top, before any section, instead)";
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Loading                                                              */

/* A config holding the embedded defaults, except the listener, the host
 * name and the HELO name (config_finish() adds those). */
static struct config *
config_new(const char *file, char *err, size_t errlen)
{
	struct config *cfg;
	char why[WHY_MAX];

	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		util_errf(err, errlen, "%s: out of memory", file);
		return NULL;
	}
	if (keys_defaults(top_keys, nitems(top_keys), cfg, why, sizeof(why)) ==
		-1 ||
	    keys_defaults(
		relay_keys, nitems(relay_keys), cfg, why, sizeof(why)) == -1 ||
	    dest_init(&cfg->dest_default, "*", why, sizeof(why)) == -1) {
		util_errf(err, errlen, "%s: %s", file, why);
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* Defaults that depend on the rest: the listener, the host name and the
 * HELO name (the host name). */
static int
config_finish(struct config *cfg, const char *file, char *err, size_t errlen)
{
	const struct key *k;
	struct listen_conf *l;
	char why[WHY_MAX], host[HOSTNAME_MAX + 2];

	if (cfg->nlisten == 0) {
		k = key_find(listen_keys, nitems(listen_keys), "address", 0);
		l = listen_add(cfg, DEFAULT_LISTEN_NAME, why, sizeof(why));
		if (l == NULL || set_value(k, l, DEFAULT_LISTEN_ADDRESS, 0, why,
				     sizeof(why)) == -1) {
			util_errf(
			    err, errlen, "%s: default listener: %s", file, why);
			return -1;
		}
	}
	if (cfg->hostname == NULL) {
		k = key_find(top_keys, nitems(top_keys), "hostname", 0);
		memset(host, 0, sizeof(host));
		if (gethostname(host, sizeof(host) - 1) == -1 ||
		    set_value(k, cfg, host, 0, why, sizeof(why)) == -1) {
			/* An unusable system host name: fall back. */
			if (set_value(k, cfg, "localhost", 0, why,
				sizeof(why)) == -1) {
				util_errf(
				    err, errlen, "%s: hostname: %s", file, why);
				return -1;
			}
		}
	}
	if (cfg->helo_name == NULL) {
		k = key_find(top_keys, nitems(top_keys), "helo_name", 0);
		if (set_value(k, cfg, cfg->hostname, 0, why, sizeof(why)) ==
		    -1) {
			util_errf(err, errlen, "%s: helo_name: %s", file, why);
			return -1;
		}
	}
	return 0;
}

static int
config_parse_text(struct config *cfg, const char *file, const char *text,
    size_t len, char *err, size_t errlen)
{
	struct loader ld;
	int ret;

	memset(&ld, 0, sizeof(ld));
	ld.cfg = cfg;
	ld.file = file;
	ld.text = text;
	ld.len = len;
	ld.kind = TOP_KIND;
	ld.base = cfg;
	ld.sec_line = 1;

	ret = ini_parse_stream(ld_read, &ld, ld_handler, &ld);
	if (!ld.failed && ret == 0)
		ld_close(&ld);
	free(ld.dest_line);
	if (ret == -2) {
		util_errf(err, errlen, "%s: out of memory", file);
		return -1;
	}
	if (ld.failed && (ret <= 0 || ld.err_line <= ret)) {
		util_errf(err, errlen, "%s", ld.err);
		return -1;
	}
	if (ret != 0) {
		util_errf(err, errlen, "%s:%d: %s", file, ret, syntax_error);
		return -1;
	}
	return 0;
}

/* Read a whole file into a new NUL-terminated buffer. */
static int
read_file(const char *path, char **bufp, size_t *lenp, char *err, size_t errlen)
{
	FILE *fp;
	char *buf = NULL;
	size_t len = 0, n;

	fp = fopen(path, "r");
	if (fp == NULL) {
		util_errf(
		    err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	buf = malloc(CONFIG_FILE_MAX + 1);
	if (buf == NULL) {
		util_errf(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	while ((n = fread(buf + len, 1, CONFIG_FILE_MAX + 1 - len, fp)) > 0) {
		len += n;
		if (len > CONFIG_FILE_MAX) {
			util_errf(err, errlen,
			    "%s: file too large (more than %d bytes)", path,
			    CONFIG_FILE_MAX);
			goto fail;
		}
	}
	if (ferror(fp)) {
		util_errf(
		    err, errlen, "%s: cannot read: %s", path, strerror(errno));
		goto fail;
	}
	fclose(fp);
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	return 0;

fail:
	free(buf);
	fclose(fp);
	return -1;
}

static int
config_load_buf(const char *path, const char *file, const char *text,
    size_t len, struct config **out, char *err, size_t errlen)
{
	struct config *cfg;

	if (out == NULL) {
		util_errf(err, errlen, "%s: no place for the result", file);
		return -1;
	}
	*out = NULL;
	cfg = config_new(file, err, errlen);
	if (cfg == NULL)
		return -1;
	if (path != NULL) {
		cfg->path = strdup(path);
		if (cfg->path == NULL) {
			util_errf(err, errlen, "%s: out of memory", file);
			goto fail;
		}
	}
	if (text != NULL &&
	    config_parse_text(cfg, file, text, len, err, errlen) == -1)
		goto fail;
	if (config_finish(cfg, file, err, errlen) == -1)
		goto fail;
	*out = cfg;
	return 0;

fail:
	config_free(cfg);
	return -1;
}

int
config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int ret;

	if (path == NULL)
		return config_load_buf(
		    NULL, "(defaults)", NULL, 0, out, err, errlen);
	if (out != NULL)
		*out = NULL;
	if (read_file(path, &buf, &len, err, errlen) == -1)
		return -1;
	ret = config_load_buf(path, path, buf, len, out, err, errlen);
	free(buf);
	return ret;
}

int
config_load_string(const char *text, const char *name, struct config **out,
    char *err, size_t errlen)
{
	if (name == NULL)
		name = "(string)";
	if (text == NULL) {
		if (out != NULL)
			*out = NULL;
		util_errf(err, errlen, "%s: no text", name);
		return -1;
	}
	return config_load_buf(
	    NULL, name, text, strlen(text), out, err, errlen);
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	keys_free(top_keys, nitems(top_keys), cfg);
	for (i = 0; i < cfg->nlisten; i++)
		listen_free(&cfg->listen[i]);
	free(cfg->listen);
	keys_free(relay_keys, nitems(relay_keys), cfg);
	dest_free(&cfg->dest_default);
	for (i = 0; i < cfg->ndest; i++)
		dest_free(&cfg->dest[i]);
	free(cfg->dest);
	free(cfg->path);
	free(cfg);
}

/* ------------------------------------------------------------------ */
/* Printing                                                             */

/*
 * One item of a list value; wraps with ",\n\t" (a continuation line). A
 * first item too long for the key's line starts on the next one. A line
 * longer than PRINT_WRAP holds one long item, perhaps as long as the
 * reader allows: no comma after it (blanks separate items too).
 */
static void
print_item(FILE *fp, size_t *col, int *first, const char *item)
{
	size_t len = strlen(item);

	if (*first && *col + 1 + len > PRINT_WRAP) {
		fprintf(fp, "\n\t%s", item);
		*col = 8 + len;
	} else if (*first) {
		fprintf(fp, " %s", item);
		*col += 1 + len;
	} else if (*col + 2 + len > PRINT_WRAP) {
		fprintf(fp, "%s\n\t%s", *col > PRINT_WRAP ? "" : ",", item);
		*col = 8 + len;
	} else {
		fprintf(fp, ", %s", item);
		*col += 2 + len;
	}
	*first = 0;
}

static void
print_key(FILE *fp, const struct key *k, const void *base)
{
	const struct cidr_list *cl;
	char buf[64];
	const char **v;
	size_t i, n, col;
	int first = 1;

	switch (k->type) {
	case KT_STRING:
	case KT_HOSTNAME:
	case KT_HOSTPORT:
	case KT_ROUTE:
	case KT_RESOLVER:
		if (*CFIELD(base, k->off, char *) != NULL)
			fprintf(fp, "%s = %s\n", k->name,
			    *CFIELD(base, k->off, char *));
		break;
	case KT_BOOL:
		fprintf(fp, "%s = %s\n", k->name,
		    *CFIELD(base, k->off, int) ? "yes" : "no");
		break;
	case KT_ENUM:
		fprintf(fp, "%s = %s\n", k->name,
		    k->names[*CFIELD(base, k->off, int)]);
		break;
	case KT_UINT:
		fprintf(
		    fp, "%s = %u\n", k->name, *CFIELD(base, k->off, unsigned));
		break;
	case KT_SIZE:
		fprintf(fp, "%s = %" PRIu64 "\n", k->name,
		    *CFIELD(base, k->off, uint64_t));
		break;
	case KT_SECONDS:
	case KT_MILLIS:
		fmt_duration(buf, sizeof(buf),
		    (uint64_t)*CFIELD(base, k->off, unsigned) *
			(k->type == KT_SECONDS ? 1000 : 1));
		fprintf(fp, "%s = %s\n", k->name, buf);
		break;
	case KT_CIDRS:
		cl = CFIELD(base, k->off, struct cidr_list);
		fprintf(fp, "%s =", k->name);
		col = strlen(k->name) + 2;
		for (i = 0; i < cl->n; i++) {
			cidr_format(&cl->v[i], buf, sizeof(buf));
			print_item(fp, &col, &first, buf);
		}
		fprintf(fp, "\n");
		break;
	case KT_DOMAINS:
	case KT_ROUTES:
		v = *CFIELD(base, k->off, char **);
		n = *CFIELD(base, k->off2, size_t);
		fprintf(fp, "%s =", k->name);
		col = strlen(k->name) + 2;
		for (i = 0; i < n; i++)
			print_item(fp, &col, &first, v[i]);
		fprintf(fp, "\n");
		break;
	}
}

static void
print_dest(FILE *fp, const struct dest_conf *d)
{
	size_t i;

	fprintf(fp, "\n[destination %s]\n", d->pattern);
	for (i = 0; i < nitems(dest_keys); i++)
		if (dest_refuse(d, &dest_keys[i]) == NULL)
			print_key(fp, &dest_keys[i], d);
}

void
config_print(const struct config *cfg, FILE *fp)
{
	size_t i, j;

	if (cfg == NULL || fp == NULL)
		return;
	fprintf(fp, "# Petrel %s: effective configuration\n", PETREL_VERSION);
	for (i = 0; i < nitems(top_keys); i++)
		print_key(fp, &top_keys[i], cfg);
	for (i = 0; i < cfg->nlisten; i++) {
		fprintf(fp, "\n[listen %s]\n", cfg->listen[i].name);
		for (j = 0; j < nitems(listen_keys); j++)
			print_key(fp, &listen_keys[j], &cfg->listen[i]);
	}
	fprintf(fp, "\n[relay]\n");
	for (i = 0; i < nitems(relay_keys); i++)
		print_key(fp, &relay_keys[i], cfg);
	fprintf(fp, "\n# Every [destination] section starts from the built-in "
		    "defaults,\n# not from [destination *]; the most specific "
		    "pattern applies.\n");
	print_dest(fp, &cfg->dest_default);
	for (i = 0; i < cfg->ndest; i++)
		print_dest(fp, &cfg->dest[i]);
}

int
config_is_local_domain(const struct config *cfg, const char *domain)
{
	size_t i;

	if (cfg == NULL || domain == NULL)
		return 0;
	for (i = 0; i < cfg->nlocal_domains; i++)
		if (strcasecmp(cfg->local_domains[i], domain) == 0)
			return 1;
	return 0;
}

/*
 * The built-in [destination *], for config_find_dest(NULL, ...) only: a
 * loaded config has its own (from dest_keys, the single source of the
 * defaults; test_find_dest_null checks that the two agree).
 */
static const struct dest_conf builtin_dest = {
    .pattern = "*",
    .tls = TLS_POLICY_MAY,
    .pipelining = 1,
    .chunking = 1,
    .port = 25,
    .max_connections = 10,
    .max_messages_per_connection = 1000,
    .max_connection_age = 300,
    .idle_timeout = 10,
    .pipeline_window = 8,
    .connect_timeout = 30,
    .reply_timeout = 300,
    .data_timeout = 600,
};

/*
 * Patterns are lower case without a trailing dot; domain is any case and
 * may end with one dot. "*.example.org" matches a.example.org and
 * a.b.example.org, but not example.org nor badexample.org.
 */
const struct dest_conf *
config_find_dest(const struct config *cfg, const char *domain)
{
	const struct dest_conf *best = NULL;
	const char *p;
	size_t i, len, plen, blen = 0;

	if (cfg == NULL)
		return &builtin_dest;
	if (domain == NULL)
		return &cfg->dest_default;
	len = strlen(domain);
	if (len > 0 && domain[len - 1] == '.')
		len--;
	if (len == 0)
		return &cfg->dest_default;
	for (i = 0; i < cfg->ndest; i++) {
		p = cfg->dest[i].pattern;
		plen = strlen(p);
		if (p[0] != '*') {
			if (plen == len && strncasecmp(p, domain, len) == 0)
				return &cfg->dest[i]; /* exact: done */
			continue;
		}
		/* "*.suffix": at least one character and a dot before it. */
		p += 2;
		plen -= 2;
		if (len >= plen + 2 && domain[len - plen - 1] == '.' &&
		    strncasecmp(domain + len - plen, p, plen) == 0 &&
		    (best == NULL || plen > blen)) {
			best = &cfg->dest[i];
			blen = plen;
		}
	}
	return best != NULL ? best : &cfg->dest_default;
}
