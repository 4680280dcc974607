/*
 * sendmail.c - the sendmail-compatible entry point (`petrel sendmail`,
 * `sendmail`, `mailq`): local submission of a message read on standard
 * input, the way scripts, cron and mail user agents expect it.
 *
 * The submission path, in order (nothing touches the spool before step 6,
 * so a refused message leaves nothing behind):
 *
 *   1 parse_args       options, then recipients (the first word that is not
 *                      an option ends the options, as with Postfix; "--"
 *                      too; an option after a recipient is refused)
 *   2 config_load      -C FILE, else $PETREL_CONFIG, else
 *                      /etc/petrel/petrel.conf if it exists, else the
 *                      embedded defaults
 *   3 sender, args     -f or login@hostname; command-line recipients
 *   4 read_message     stdin until EOF (or a "." line without -i), LF or
 *                      CRLF in, CRLF out; size, line length, NUL checked
 *   5 build_message    -t recipients from To/Cc/Bcc (or the Resent- ones),
 *                      Bcc removed, Received added, From/Date/Message-ID
 *                      added when missing
 *   6 spool_write_sync tmp/<id>, fdatasync, rename to queue/<id>, fsync of
 *                      queue/ (signals blocked meanwhile); on any failure
 *                      the temporary file is removed. Run as root with
 *                      `user` configured, the file is written with that
 *                      user's effective ids, so the daemon can read it
 *   7 log, notify      a "<=" line in the main log (P=local U=login);
 *                      "inject ID" on the control socket: a running daemon
 *                      delivers at once; without one the message waits
 *
 *   6' postdrop        a caller who may not write queue/ (neither root nor
 *                      the daemon's user: www-data, a cron job's user)
 *                      hands the same spool-format bytes (content, then
 *                      envelope and trailer) on standard input to the
 *                      setgid petrel-postdrop (next to this program, or
 *                      $PETREL_POSTDROP), which puts them in
 *                      <spool>/maildrop/. The daemon takes them from there
 *                      within a second (pickup.c), validates them, gives
 *                      them a queue id of its own and logs the "<=" line;
 *                      a stopped daemon does so at its next start. No
 *                      control request: such a caller cannot reach the
 *                      socket (root and the daemon's user only)
 *
 * Options (letters may be grouped, "-ti"; option arguments may be attached,
 * "-fme@example.com", or follow, "-f me@example.com"):
 *
 *   -bm        deliver a message read on standard input (the default)
 *   -bs        SMTP on standard input/output, relayed to the daemon's first
 *              [listen] address (the daemon must run)
 *   -bp        list the queue (the daemon's view, else the spool files);
 *              the same as invoking the program as mailq
 *   -q         ask the daemon to retry every deferred message now
 *   -t         recipients also from the To, Cc and Bcc headers (Resent-To,
 *              Resent-Cc, Resent-Bcc when present), added to those given
 *              as arguments (Postfix behaviour)
 *   -i, -oi    a line with a single "." does not end the message
 *   -f ADDR    envelope sender (also -r ADDR); "<>" for the null sender
 *   -F NAME    full name for the From: header Petrel adds (else, without
 *              -f, the first field of the passwd entry's gecos)
 *   -C FILE    configuration file
 *   -B 7BIT|8BITMIME  declare the body type (8-bit content is detected
 *              anyway)
 *   -odb, -odi background / interactive delivery: both hand the message to
 *              the daemon and return without waiting for the delivery
 *   -odq       queue only: the daemon is not told; the message is picked up
 *              at its next start
 *   -oem, -oee, -oep, -oeq, -oew  error reporting modes: accepted; errors
 *              always go to standard error with a non-zero exit status
 *   -om, -m, -n, -G, -U  accepted and ignored (no aliases, no "me too",
 *              no gateway or initial-submission distinction)
 *   -v         say what happened (queue id, daemon told or not) on stdout
 *
 * Anything else: "sendmail: unknown option -X" and EX_USAGE.
 *
 * Addresses: a bare name ("root") gets "@hostname"; every address must pass
 * smtp_parse_path (what the SMTP server accepts). Recipients are
 * deduplicated (local part exact, domain in any case). Limits come from the
 * first [listen] section: max_message_size, max_line_length and
 * max_recipients, as if the message had come in over SMTP.
 *
 * Exit status (sysexits.h): 0 queued; EX_USAGE 64 bad option or -f
 * address; EX_DATAERR 65 no recipient, too many, message too big, line too
 * long, NUL in the message; EX_NOUSER 67 malformed recipient address;
 * EX_UNAVAILABLE 69 -bs or -q without a running daemon; EX_SOFTWARE 70 the
 * daemon refused a request; EX_OSERR 71 out of memory; EX_CANTCREAT 73 the
 * spool directories cannot be created; EX_IOERR 74 reading standard input
 * or the queue failed; EX_TEMPFAIL 75 writing the spool failed (retry
 * later, also: petrel-postdrop failed or cannot be run); EX_NOPERM 77 no
 * permission on the spool; EX_CONFIG 78 bad configuration.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include "buf.h"
#include "config.h"
#include "control.h"
#include "log.h"
#include "msghdr.h"
#include "queue_list.h"
#include "sendmail.h"
#include "smtp_parse.h"
#include "spool.h"
#include "spool_format.h"
#include "util.h"

enum sm_mode { SM_DELIVER = 0, SM_SMTP, SM_LIST, SM_FLUSH };

/* Same file as main.c's DEFAULT_CONFIG for the client commands. */
#define SENDMAIL_DEFAULT_CONFIG "/etc/petrel/petrel.conf"

#define SM_ADDR_MAX (SMTP_PATH_MAX + 1)
#define SM_NAME_MAX 256

struct sendmail {
	const char *prog;          /* "sendmail" or "mailq", for messages */
	/* options */
	enum sm_mode mode;
	int extract;               /* -t */
	int ignore_dots;           /* -i, -oi */
	int verbose;               /* -v */
	int no_notify;             /* -odq */
	int body8_opt;             /* -B8BITMIME */
	const char *sender_opt;    /* -f, -r */
	const char *fullname_opt;  /* -F */
	const char *config_opt;    /* -C */
	char **args;               /* recipients on the command line */
	int nargs;

	struct config *cfg;
	const struct listen_conf *lc;  /* the first listener: limits */
	char user[SM_NAME_MAX];    /* login name, printable */
	char gecos[SM_NAME_MAX];   /* full name from the passwd entry */
	unsigned long uid;
	char sender[SM_ADDR_MAX];  /* "" = null sender */
	int utf8;                  /* an envelope address is not ASCII */

	char **rcpt;               /* validated, qualified, deduplicated */
	size_t nrcpt, rcap;
	size_t nbad;               /* malformed recipients reported */

	struct buf msg;            /* the message as read: CRLF lines */
	int has_8bit;
	struct buf out;            /* the message as spooled */
	int su;                    /* write the spool as su_uid/su_gid */
	uid_t su_uid;
	gid_t su_gid;
	char msgid[256];           /* Message-ID for the envelope */
	char qid[QUEUE_ID_LEN + 1];
};

static void sm_err(const struct sendmail *sm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sm_err(const struct sendmail *sm, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", sm->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Printable copy of s[0..len) for a message (escapes control bytes). */
static const char *
shown(char *buf, size_t buflen, const char *s, size_t len)
{
	util_escape(buf, buflen, s, len);
	return buf;
}

/* The first line of a control answer (not NUL-terminated): length, and
 * the pointer in *p ("" for an empty answer). */
static int
first_line(const struct buf *b, const char **p)
{
	const char *nl;

	if (buf_len(b) == 0) {
		*p = "";
		return 0;
	}
	*p = buf_ptr(b);
	nl = memchr(*p, '\n', buf_len(b));
	return (int)(nl ? (size_t)(nl - *p) : buf_len(b));
}

/* ---- 1: options ---------------------------------------------------------- */

static int
opt_o(struct sendmail *sm, const char *v)
{
	static const char *const accepted[] = { "em", "ee", "ep", "eq", "ew",
		                                "db", "di", "m", NULL };

	if (strcmp(v, "i") == 0) {
		sm->ignore_dots = 1;
		return 0;
	}
	if (strcmp(v, "dq") == 0) {
		sm->no_notify = 1;
		return 0;
	}
	for (size_t i = 0; accepted[i]; i++)
		if (strcmp(v, accepted[i]) == 0)
			return 0;
	sm_err(sm, "unknown option -o%s", v);
	return -1;
}

static int
opt_b(struct sendmail *sm, const char *v)
{
	if (strcmp(v, "m") == 0)
		sm->mode = SM_DELIVER;
	else if (strcmp(v, "s") == 0)
		sm->mode = SM_SMTP;
	else if (strcmp(v, "p") == 0)
		sm->mode = SM_LIST;
	else if (strcmp(v, "d") == 0 || strcmp(v, "D") == 0) {
		sm_err(sm, "unsupported option -b%s: the daemon is started "
		    "with petrel serve", v);
		return -1;
	} else {
		sm_err(sm, "unknown option -b%s", v);
		return -1;
	}
	return 0;
}

/* Returns 0, or an exit status. */
static int
parse_args(struct sendmail *sm, int argc, char **argv)
{
	int i, dashdash = 0;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *p;

		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "--") == 0) {
			dashdash = 1;
			i++;
			break;
		}
		for (p = a + 1; *p != '\0';) {
			char c = *p++;
			const char *v;

			switch (c) {
			case 't':
				sm->extract = 1;
				continue;
			case 'i':
				sm->ignore_dots = 1;
				continue;
			case 'v':
				sm->verbose = 1;
				continue;
			case 'm': case 'n': case 'G': case 'U':
				continue;       /* accepted, ignored */
			case 'q':
				if (*p != '\0') {
					sm_err(sm, "unsupported option -q%s: "
					    "petrel serve retries the queue "
					    "itself; -q alone flushes it", p);
					return EX_USAGE;
				}
				sm->mode = SM_FLUSH;
				continue;
			case 'c':
				sm_err(sm, "unknown option -c (the "
				    "configuration file is chosen with -C "
				    "FILE)");
				return EX_USAGE;
			case 'f': case 'r': case 'F': case 'C': case 'B':
			case 'b': case 'o':
				break;
			default:
				if ((unsigned char)c < 0x20 ||
				    (unsigned char)c >= 0x7f)
					sm_err(sm, "unknown option -\\x%02x",
					    (unsigned char)c);
				else
					sm_err(sm, "unknown option -%c", c);
				return EX_USAGE;
			}
			/* Options with an argument: the rest of this word,
			 * else the next word. */
			if (*p != '\0') {
				v = p;
			} else if (i + 1 < argc) {
				v = argv[++i];
			} else {
				sm_err(sm, "option -%c needs an argument", c);
				return EX_USAGE;
			}
			p = "";
			switch (c) {
			case 'f': case 'r':
				sm->sender_opt = v;
				break;
			case 'F':
				sm->fullname_opt = v;
				break;
			case 'C':
				sm->config_opt = v;
				break;
			case 'B':
				if (strcasecmp(v, "8BITMIME") == 0)
					sm->body8_opt = 1;
				else if (strcasecmp(v, "7BIT") == 0)
					sm->body8_opt = 0;
				else {
					sm_err(sm, "-B: unknown body type '%s' "
					    "(7BIT or 8BITMIME)", v);
					return EX_USAGE;
				}
				break;
			case 'b':
				if (opt_b(sm, v) == -1)
					return EX_USAGE;
				break;
			case 'o':
				if (opt_o(sm, v) == -1)
					return EX_USAGE;
				break;
			}
		}
	}
	sm->args = argv + i;
	sm->nargs = argc - i;
	/* An option after a recipient is a mistake (or an attempt to slip an
	 * option through a recipient field): refuse it rather than mail to
	 * "-f@hostname". "<-odd@example.com>" still names such an address. */
	for (; !dashdash && i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1] != '\0') {
			char show[128];

			sm_err(sm, "option %s after a recipient: options come "
			    "first", shown(show, sizeof(show), argv[i],
			    strlen(argv[i])));
			return EX_USAGE;
		}
	return 0;
}

/* ---- 3: identity and addresses ------------------------------------------- */

/* Copy s into out, printable ASCII and UTF-8 only (others become '?'). */
static void
copy_printable(char *out, size_t outlen, const char *s)
{
	size_t o = 0;

	for (; *s != '\0' && o + 1 < outlen; s++)
		out[o++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
	out[o] = '\0';
}

/* Login name, uid and full name (gecos up to the first ',', with '&'
 * standing for the capitalised login name, as sendmail does). */
static void
identity(struct sendmail *sm)
{
	struct passwd *pw;
	uid_t uid = getuid();
	size_t o = 0;

	sm->uid = (unsigned long)uid;
	if ((pw = getpwuid(uid)) == NULL || pw->pw_name[0] == '\0') {
		snprintf(sm->user, sizeof(sm->user), "uid%lu", sm->uid);
		sm->gecos[0] = '\0';
		return;
	}
	copy_printable(sm->user, sizeof(sm->user), pw->pw_name);
	for (const char *g = pw->pw_gecos ? pw->pw_gecos : "";
	     *g != '\0' && *g != ',' && o + 1 < sizeof(sm->gecos); g++) {
		if (*g == '&') {
			for (const char *u = sm->user;
			     *u != '\0' && o + 1 < sizeof(sm->gecos); u++)
				sm->gecos[o++] = u == sm->user && *u >= 'a' &&
				    *u <= 'z' ? (char)(*u - 32) : *u;
			continue;
		}
		sm->gecos[o++] = *g;
	}
	sm->gecos[o] = '\0';
}

/* 1 if the addr-spec has "@domain" (an '@' outside a quoted local part). */
static int
has_domain(const char *a)
{
	int q = 0;

	for (; *a != '\0'; a++) {
		if (q && *a == '\\' && a[1] != '\0')
			a++;
		else if (*a == '"')
			q = !q;
		else if (!q && *a == '@')
			return 1;
	}
	return 0;
}

static const char *
path_why(enum smtp_path_status st)
{
	switch (st) {
	case SMTP_PATH_TOO_LONG:
		return "too long";
	case SMTP_PATH_BAD_UTF8:
		return "not valid UTF-8";
	default:
		return "syntax error";
	}
}

/*
 * Qualify an addr-spec from msghdr (a bare "root" gets "@hostname") and
 * check it as an SMTP path. On success the address (as smtp_parse_path
 * returns it) is in p->addr and 0 is returned; else -1 with a reason.
 */
static int
check_addr(const struct sendmail *sm, const char *a, struct smtp_path *p,
           const char **why)
{
	char w[SM_ADDR_MAX + SMTP_DOMAIN_MAX + 8];
	const char *rest;
	size_t restlen;
	enum smtp_path_status st;
	int n;

	if (has_domain(a))
		n = snprintf(w, sizeof(w), "<%s>", a);
	else
		n = snprintf(w, sizeof(w), "<%s@%s>", a, sm->cfg->hostname);
	if (n < 0 || (size_t)n >= sizeof(w)) {
		*why = "too long";
		return -1;
	}
	st = smtp_parse_path(w, (size_t)n, 0, p, &rest, &restlen);
	if (st != SMTP_PATH_OK || restlen != 0) {
		*why = st == SMTP_PATH_OK ? "syntax error" : path_why(st);
		return -1;
	}
	return 0;
}

/* Same address: local part exact, domain in any case. */
static int
same_addr(const char *a, const char *b)
{
	const char *x = strrchr(a, '@'), *y = strrchr(b, '@');

	if (x == NULL || y == NULL || x - a != y - b)
		return strcmp(a, b) == 0;
	return memcmp(a, b, (size_t)(x - a)) == 0 && strcasecmp(x, y) == 0;
}

/* Add a checked address. Returns 0, or -1 (ENOMEM). */
static int
rcpt_push(struct sendmail *sm, const struct smtp_path *p)
{
	char *c;

	for (size_t i = 0; i < sm->nrcpt; i++)
		if (same_addr(sm->rcpt[i], p->addr))
			return 0;
	if (sm->nrcpt == sm->rcap) {
		size_t ncap = sm->rcap ? sm->rcap * 2 : 16;
		char **nv = realloc(sm->rcpt, ncap * sizeof(*nv));

		if (nv == NULL)
			return -1;
		sm->rcpt = nv;
		sm->rcap = ncap;
	}
	if ((c = strdup(p->addr)) == NULL)
		return -1;
	sm->rcpt[sm->nrcpt++] = c;
	sm->utf8 |= p->utf8;
	return 0;
}

/*
 * Add every address of an address list (a command-line argument or an
 * unfolded header value). Malformed ones are reported naming the address
 * and where it was, and counted in nbad. Returns 0, or -1 (ENOMEM).
 */
static int
rcpt_add_list(struct sendmail *sm, const char *s, size_t len,
              const char *where)
{
	struct msghdr_alist a;
	struct smtp_path p;
	char addr[SM_ADDR_MAX], show[2 * SM_ADDR_MAX];
	const char *bad, *why;
	size_t badlen;
	int rc;

	msghdr_alist_init(&a, s, len);
	while ((rc = msghdr_alist_next(&a, addr, sizeof(addr), &bad,
	    &badlen)) != 0) {
		if (rc == -1) {
			sm_err(sm, "bad recipient address '%s' %s: %s",
			    shown(show, sizeof(show), bad, badlen), where,
			    badlen > SMTP_PATH_MAX ? "too long" :
			    "syntax error");
			sm->nbad++;
			continue;
		}
		if (check_addr(sm, addr, &p, &why) == -1) {
			sm_err(sm, "bad recipient address '%s' %s: %s",
			    shown(show, sizeof(show), addr, strlen(addr)),
			    where, why);
			sm->nbad++;
			continue;
		}
		if (rcpt_push(sm, &p) == -1)
			return -1;
	}
	return 0;
}

/* The envelope sender: -f (one address, or "<>"), else login@hostname.
 * Returns 0 or an exit status. */
static int
set_sender(struct sendmail *sm)
{
	struct msghdr_alist a;
	struct smtp_path p;
	char addr[SM_ADDR_MAX], show[2 * SM_ADDR_MAX], extra[8];
	const char *s = sm->sender_opt, *why = "syntax error";
	size_t len;

	if (s == NULL) {
		if (check_addr(sm, sm->user, &p, &why) == -1) {
			sm_err(sm, "cannot make a sender address from the "
			    "login name '%s' (%s): give one with -f",
			    sm->user, why);
			return EX_USAGE;
		}
		snprintf(sm->sender, sizeof(sm->sender), "%s", p.addr);
		sm->utf8 |= p.utf8;
		return 0;
	}
	while (*s == ' ' || *s == '\t')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len == 0 || (len == 2 && memcmp(s, "<>", 2) == 0)) {
		sm->sender[0] = '\0';
		return 0;
	}
	msghdr_alist_init(&a, s, len);
	if (msghdr_alist_next(&a, addr, sizeof(addr), NULL, NULL) == 1 &&
	    msghdr_alist_next(&a, extra, sizeof(extra), NULL, NULL) == 0 &&
	    check_addr(sm, addr, &p, &why) == 0) {
		snprintf(sm->sender, sizeof(sm->sender), "%s", p.addr);
		sm->utf8 |= p.utf8;
		return 0;
	}
	sm_err(sm, "bad sender address '%s' (-f): %s",
	    shown(show, sizeof(show), s, len), why);
	return EX_USAGE;
}

/* ---- 4: reading the message ---------------------------------------------- */

enum { LINE_MORE = 0, LINE_END = 1, LINE_ERROR = 2 };

struct reader {
	uint64_t max_size;
	unsigned max_line;
	size_t lineno;
	int status;                /* exit status after LINE_ERROR */
};

static void
too_big(struct sendmail *sm, struct reader *r)
{
	sm_err(sm, "message too big: over %llu octets "
	    "(max_message_size of [listen %s])",
	    (unsigned long long)r->max_size, sm->lc->name);
	r->status = EX_DATAERR;
}

/* Append one segment (a line without its line break) and CRLF. */
static int
put_line(struct sendmail *sm, struct reader *r, const char *s, size_t n)
{
	if (memchr(s, '\0', n) != NULL) {
		sm_err(sm, "line %zu of the message contains a NUL character",
		    r->lineno);
		r->status = EX_DATAERR;
		return LINE_ERROR;
	}
	if (r->max_line > 0 && n + 2 > r->max_line) {
		sm_err(sm, "line %zu of the message is longer than %u octets "
		    "(max_line_length of [listen %s])", r->lineno,
		    r->max_line - 2, sm->lc->name);
		r->status = EX_DATAERR;
		return LINE_ERROR;
	}
	for (size_t i = 0; i < n && !sm->has_8bit; i++)
		if ((unsigned char)s[i] >= 0x80)
			sm->has_8bit = 1;
	if (buf_append(&sm->msg, s, n) == -1 ||
	    buf_append(&sm->msg, "\r\n", 2) == -1) {
		sm_err(sm, "out of memory");
		r->status = EX_OSERR;
		return LINE_ERROR;
	}
	if (buf_len(&sm->msg) > r->max_size) {
		too_big(sm, r);
		return LINE_ERROR;
	}
	return LINE_MORE;
}

/*
 * One input line, its LF removed. A CR before the LF goes with it; a bare
 * CR elsewhere also ends a line (as the server's bare_lf = normalize does),
 * so the spool holds CRLF line endings only.
 */
static int
take_line(struct sendmail *sm, struct reader *r, const char *s, size_t n)
{
	const char *cr;
	int rc;

	r->lineno++;
	if (n > 0 && s[n - 1] == '\r')
		n--;
	/* A leading mbox "From " line is not part of the message. */
	if (r->lineno == 1 && n >= 5 && memcmp(s, "From ", 5) == 0)
		return LINE_MORE;
	if (!sm->ignore_dots && n == 1 && s[0] == '.')
		return LINE_END;
	while ((cr = memchr(s, '\r', n)) != NULL) {
		size_t k = (size_t)(cr - s);

		if ((rc = put_line(sm, r, s, k)) != LINE_MORE)
			return rc;
		s += k + 1;
		n -= k + 1;
	}
	return put_line(sm, r, s, n);
}

/* Read standard input into sm->msg. Returns 0 or an exit status. */
static int
read_message(struct sendmail *sm)
{
	struct reader r = { 0 };
	struct buf pend = { 0 };
	char chunk[65536];
	size_t seen = 0;           /* octets of pend known to hold no LF */
	int rc = LINE_MORE;

	r.max_size = sm->lc->max_message_size;
	r.max_line = sm->lc->max_line_length;
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
		const char *nl;

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			sm_err(sm, "reading the message: %s", strerror(errno));
			buf_free(&pend);
			return EX_IOERR;
		}
		if (n == 0)
			break;
		if (buf_append(&pend, chunk, (size_t)n) == -1) {
			sm_err(sm, "out of memory");
			buf_free(&pend);
			return EX_OSERR;
		}
		/* Only the new bytes are searched for the LF: a long line
		 * arriving in many reads costs linear time. */
		while ((nl = memchr(buf_ptr(&pend) + seen, '\n',
		    buf_len(&pend) - seen)) != NULL) {
			size_t k = (size_t)(nl - buf_ptr(&pend));

			rc = take_line(sm, &r, buf_ptr(&pend), k);
			buf_consume(&pend, k + 1);
			seen = 0;
			if (rc != LINE_MORE)
				goto done;
		}
		seen = buf_len(&pend);
		/* A line without its LF yet: once it is complete, it adds at
		 * least its length (a CR before the LF goes, a CRLF comes),
		 * so this bounds the memory by max_message_size. */
		if (buf_len(&sm->msg) + buf_len(&pend) > r.max_size + 1) {
			too_big(sm, &r);
			rc = LINE_ERROR;
			goto done;
		}
	}
	if (buf_len(&pend) > 0)
		rc = take_line(sm, &r, buf_ptr(&pend), buf_len(&pend));
done:
	buf_free(&pend);
	return rc == LINE_ERROR ? r.status : 0;
}

/* ---- 5: headers ---------------------------------------------------------- */

static int
is_resent_rcpt(const struct msghdr_field *f)
{
	return msghdr_name_is(f, "Resent-To") ||
	    msghdr_name_is(f, "Resent-Cc") || msghdr_name_is(f, "Resent-Bcc");
}

static int
is_rcpt(const struct msghdr_field *f)
{
	return msghdr_name_is(f, "To") || msghdr_name_is(f, "Cc") ||
	    msghdr_name_is(f, "Bcc");
}

/* -t: recipients from To/Cc/Bcc, or from the Resent- fields when the
 * message has any (it is being resent). Returns 0, or -1 (ENOMEM). */
static int
extract_rcpts(struct sendmail *sm, const char *m, size_t len)
{
	struct msghdr_field f;
	size_t pos = 0;
	int resent = 0;

	while (msghdr_next(m, len, &pos, &f) == 1)
		resent |= is_resent_rcpt(&f);
	pos = 0;
	while (msghdr_next(m, len, &pos, &f) == 1) {
		char where[80], *v;
		size_t n;
		int rc;

		if (resent ? !is_resent_rcpt(&f) : !is_rcpt(&f))
			continue;
		if ((v = malloc(f.valuelen + 1)) == NULL)
			return -1;
		n = msghdr_unfold(f.value, f.valuelen, v, f.valuelen + 1);
		snprintf(where, sizeof(where), "in the %.*s: header",
		    (int)f.namelen, f.name);
		rc = rcpt_add_list(sm, v, n, where);
		free(v);
		if (rc == -1)
			return -1;
	}
	return 0;
}

/* The Message-ID value for the envelope (one token, at most 255). */
static void
set_msgid(struct sendmail *sm, const struct msghdr_field *f)
{
	char *p;

	msghdr_unfold(f->value, f->valuelen, sm->msgid, sizeof(sm->msgid));
	for (p = sm->msgid; *p != '\0'; p++)
		if (*p == '\r' || *p == '\n' || *p == ' ' || *p == '\t')
			*p = '_';
}

/*
 * The spooled message: Received, the header fields as written (without
 * Bcc and Resent-Bcc), From/Date/Message-ID when missing, the empty line,
 * the body. Returns 0 or -1 (ENOMEM).
 */
static int
build_message(struct sendmail *sm)
{
	const char *m = buf_len(&sm->msg) ? buf_ptr(&sm->msg) : "";
	size_t len = buf_len(&sm->msg), pos = 0, hend, body;
	struct msghdr_field f;
	char date[64], phrase[512];
	int blank, have_from = 0, have_date = 0, have_msgid = 0, rc = 0;
	const char *name;

	util_fmt_rfc5322(date, sizeof(date), time(NULL));
	rc |= buf_printf(&sm->out,
	    "Received: from %s (uid %lu)\r\n"
	    "\tby %s (Petrel) with local id %s%s%s%s; %s\r\n",
	    sm->user, sm->uid, sm->cfg->hostname, sm->qid,
	    sm->nrcpt == 1 ? "\r\n\tfor <" : "",
	    sm->nrcpt == 1 ? sm->rcpt[0] : "", sm->nrcpt == 1 ? ">" : "", date);
	while (msghdr_next(m, len, &pos, &f) == 1) {
		if (msghdr_name_is(&f, "Bcc") ||
		    msghdr_name_is(&f, "Resent-Bcc"))
			continue;
		have_from |= msghdr_name_is(&f, "From");
		have_date |= msghdr_name_is(&f, "Date");
		if (msghdr_name_is(&f, "Message-ID") && !have_msgid) {
			have_msgid = 1;
			set_msgid(sm, &f);
		}
		rc |= buf_append(&sm->out, m + f.start, f.end - f.start);
		/* The last field ends with CRLF: read_message wrote every
		 * line so. */
	}
	if (!have_from) {
		const char *addr = sm->sender[0] ? sm->sender : NULL;
		char self[SM_ADDR_MAX + SMTP_DOMAIN_MAX + 2];

		name = sm->fullname_opt;
		if (name == NULL && sm->sender_opt == NULL)
			name = sm->gecos;
		if (addr == NULL) {
			snprintf(self, sizeof(self), "%s@%s", sm->user,
			    sm->cfg->hostname);
			addr = self;
		}
		if (name != NULL && msghdr_phrase(name, strlen(name), phrase,
		    sizeof(phrase)) > 0)
			rc |= buf_printf(&sm->out, "From: %s <%s>\r\n", phrase,
			    addr);
		else
			rc |= buf_printf(&sm->out, "From: %s\r\n", addr);
	}
	if (!have_date)
		rc |= buf_printf(&sm->out, "Date: %s\r\n", date);
	if (!have_msgid) {
		snprintf(sm->msgid, sizeof(sm->msgid), "<%s@%s>", sm->qid,
		    sm->cfg->hostname);
		rc |= buf_printf(&sm->out, "Message-ID: %s\r\n", sm->msgid);
	}
	msghdr_split(m, len, &hend, &body, &blank);
	rc |= buf_append(&sm->out, "\r\n", 2);
	rc |= buf_append(&sm->out, m + body, len - body);
	return rc == 0 ? 0 : -1;
}

/* ---- 6, 7: spool and daemon ---------------------------------------------- */

/*
 * Run as root with `user` set, the daemon owns the spool as that user and
 * could not read a file root wrote there (mode 0600). So the spool file is
 * written with that user's effective ids (spool_it), and root's come back
 * afterwards for the control socket (which serves root) and the log.
 * Returns 0 or an exit status; sm->su says whether there is a user to act as.
 */
static int
spool_user(struct sendmail *sm)
{
	const char *u = sm->cfg->user;
	struct passwd *pw;

	if (u == NULL || geteuid() != 0)
		return 0;
	if ((pw = getpwnam(u)) == NULL) {
		sm_err(sm, "user %s (the configuration's user) does not exist",
		    u);
		return EX_CONFIG;
	}
	if (pw->pw_uid == 0)
		return 0;
	sm->su = 1;
	sm->su_uid = pw->pw_uid;
	sm->su_gid = pw->pw_gid;
	return 0;
}

/*
 * Create tmp/ and queue/ when missing (the daemon may never have run), for
 * the spool user when there is one, as the daemon itself would at start.
 */
static int
make_dirs(struct sendmail *sm)
{
	static const char *const sub[] = { "tmp", "queue" };
	char path[PATH_MAX];
	struct stat st;

	for (size_t i = 0; i < 2; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s",
		    sm->cfg->spool_dir, sub[i]) >= sizeof(path)) {
			sm_err(sm, "spool path too long: %s",
			    sm->cfg->spool_dir);
			return EX_CANTCREAT;
		}
		if (stat(path, &st) == 0) {
			if (!S_ISDIR(st.st_mode)) {
				sm_err(sm, "%s is not a directory", path);
				return EX_CANTCREAT;
			}
			goto check;
		}
		if (util_mkdirs(path, 0700) == -1) {
			int e = errno;

			sm_err(sm, "cannot create %s: %s", path, strerror(e));
			return e == EACCES || e == EPERM || e == EROFS ?
			    EX_NOPERM : EX_CANTCREAT;
		}
		if (sm->su && (chown(sm->cfg->spool_dir, sm->su_uid,
		    sm->su_gid) == -1 || chown(path, sm->su_uid,
		    sm->su_gid) == -1)) {
			sm_err(sm, "cannot hand %s to user %s: %s", path,
			    sm->cfg->user, strerror(errno));
			return EX_NOPERM;
		}
check:
		if (!sm->su && access(path, W_OK | X_OK) == -1) {
			sm_err(sm, "no permission to write the spool (%s): "
			    "only root and the petrel user may submit mail",
			    path);
			return EX_NOPERM;
		}
	}
	return 0;
}

/* The main log line, as the server writes for SMTP arrivals (best effort:
 * a log we may not write is not a reason to fail a queued message). */
static void
log_arrival(struct sendmail *sm)
{
	const char *lf = sm->cfg->log_file;

	if (lf == NULL || strcmp(lf, "-") == 0 || log_open(lf) == -1)
		return;
	log_info("%s <= %s U=%s P=local S=%zu id=%s", sm->qid,
	    sm->sender[0] ? sm->sender : "<>", sm->user, buf_len(&sm->out),
	    sm->msgid[0] ? sm->msgid : "(none)");
	log_close();
}

/* Write the message durably; signals that would kill us are blocked
 * meanwhile, so an interrupt cannot leave a temporary file behind.
 * Returns 0 or an exit status. */
static void
fill_env(struct sendmail *sm, struct spool_env *env)
{
	memset(env, 0, sizeof(*env));
	snprintf(env->id, sizeof(env->id), "%s", sm->qid);
	env->time_ms = util_now_ms();
	env->sender = sm->sender;
	env->helo = sm->cfg->hostname;
	env->client = "127.0.0.1";
	env->proto = "local";
	env->tls = "";
	env->body_8bit = sm->has_8bit || sm->body8_opt;
	env->smtputf8 = sm->utf8;
	env->msgid = sm->msgid;
	env->rcpt = sm->rcpt;
	env->nrcpt = sm->nrcpt;
}

static void
fatal_signals(sigset_t *block)
{
	sigemptyset(block);
	sigaddset(block, SIGINT);
	sigaddset(block, SIGTERM);
	sigaddset(block, SIGHUP);
	sigaddset(block, SIGQUIT);
	sigaddset(block, SIGPIPE);
	sigaddset(block, SIGTSTP);
}

static int
spool_it(struct sendmail *sm)
{
	struct spool_env env;
	sigset_t block, old;
	gid_t gid = getegid();
	char err[512];
	int rc;

	fill_env(sm, &env);
	fatal_signals(&block);
	if (sm->su && (setegid(sm->su_gid) == -1 ||
	    seteuid(sm->su_uid) == -1)) {
		sm_err(sm, "cannot act as user %s: %s", sm->cfg->user,
		    strerror(errno));
		if (setegid(gid) == -1) {
			/* still root's uid: nothing was written */
		}
		return EX_OSERR;
	}
	sigprocmask(SIG_BLOCK, &block, &old);
	rc = spool_write_sync(sm->cfg->spool_dir, &env, buf_ptr(&sm->out),
	    buf_len(&sm->out), err, sizeof(err));
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (rc == 0)
		log_arrival(sm);   /* as the spool user: a log it creates
		                      stays the daemon's */
	if (sm->su && (seteuid(0) == -1 || setegid(gid) == -1)) {
		/* cannot happen: the saved set-user-ID is root's */
		sm_err(sm, "warning: cannot get root's ids back: %s",
		    strerror(errno));
	}
	if (rc == -1) {
		sm_err(sm, "cannot queue the message: %s", err);
		return EX_TEMPFAIL;
	}
	return 0;
}

/*
 * May this caller write queue/ and tmp/ itself? Root and the spool user
 * may; so may anyone the directories let in (a daemon run without `user`).
 * A spool that does not exist yet is make_dirs's business, as before.
 */
static int
need_postdrop(const struct sendmail *sm)
{
	static const char *const sub[] = { "queue", "tmp" };
	char path[PATH_MAX];

	if (sm->su || geteuid() == 0)
		return 0;
	for (size_t i = 0; i < 2; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s",
		    sm->cfg->spool_dir, sub[i]) >= sizeof(path))
			return 0;       /* make_dirs reports it */
		if (access(path, W_OK | X_OK) == -1)
			return errno != ENOENT;
	}
	return 0;
}

/* $PETREL_POSTDROP, else petrel-postdrop next to this executable. */
static int
postdrop_path(char *buf, size_t len)
{
	const char *e = getenv("PETREL_POSTDROP");
	char *slash;
	ssize_t n;

	if (e != NULL && e[0] != '\0')
		return (size_t)snprintf(buf, len, "%s", e) < len ? 0 : -1;
	n = readlink("/proc/self/exe", buf, len);
	if (n <= 0 || (size_t)n >= len)
		return -1;
	buf[n] = '\0';
	if ((slash = strrchr(buf, '/')) == NULL ||
	    (size_t)(slash - buf) + sizeof("/petrel-postdrop") > len)
		return -1;
	memcpy(slash, "/petrel-postdrop", sizeof("/petrel-postdrop"));
	return 0;
}

/*
 * 6': the spool file's bytes on petrel-postdrop's standard input; its
 * exit status decides. Signals that would kill us are blocked meanwhile
 * (postdrop blocks its own). Returns 0 or an exit status.
 */
static int
postdrop_it(struct sendmail *sm)
{
	char prog[PATH_MAX], *envbuf = NULL;
	char *const argv[] = { (char *)"petrel-postdrop", NULL };
	char *const envp[] = { NULL };
	struct sigaction ign, oldpipe;
	struct spool_env env;
	sigset_t block, old;
	size_t envlen;
	int p[2], status, werr = 0, rc = EX_TEMPFAIL;
	pid_t pid;

	if (postdrop_path(prog, sizeof(prog)) == -1) {
		sm_err(sm, "cannot find petrel-postdrop (the program through "
		    "which users other than root and %s submit mail)",
		    sm->cfg->user ? sm->cfg->user : "the daemon's user");
		return EX_TEMPFAIL;
	}
	fill_env(sm, &env);
	if (spool_env_serialize(&env, buf_len(&sm->out), &envbuf,
	    &envlen) == -1) {
		sm_err(sm, "cannot queue the message: bad envelope");
		return EX_TEMPFAIL;
	}
	if (buf_append(&sm->out, envbuf, envlen) == -1) {
		free(envbuf);
		sm_err(sm, "out of memory");
		return EX_OSERR;
	}
	free(envbuf);
	if (pipe2(p, O_CLOEXEC) == -1) {
		sm_err(sm, "pipe: %s", strerror(errno));
		return EX_OSERR;
	}
	fatal_signals(&block);
	sigprocmask(SIG_BLOCK, &block, &old);
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &oldpipe);
	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1) {
		sm_err(sm, "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		rc = EX_OSERR;
		goto out;
	}
	if (pid == 0) {
		/* Default dispositions and mask for the helper. */
		signal(SIGPIPE, SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (dup2(p[0], STDIN_FILENO) == -1)
			_exit(EX_OSERR);
		execve(prog, argv, envp);
		fprintf(stderr, "%s: cannot run %s: %s\n", sm->prog, prog,
		    strerror(errno));
		_exit(126);
	}
	close(p[0]);
	if (util_write_all(p[1], buf_ptr(&sm->out), buf_len(&sm->out)) == -1)
		werr = errno;
	close(p[1]);
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR) {
			status = -1;
			break;
		}
	if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    werr == 0) {
		rc = 0;
		if (sm->verbose)
			printf("%s: handed to the maildrop (local id %s); the "
			    "daemon queues it under an id of its own\n",
			    sm->prog, sm->qid);
	} else if (status != -1 && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 126) {
		rc = EX_TEMPFAIL;       /* the child said why */
	} else {
		sm_err(sm, "cannot queue the message: %s %s%s%s", prog,
		    status != -1 && WIFEXITED(status) ? "failed" : "died",
		    werr ? ": " : "", werr ? strerror(werr) : "");
		rc = EX_TEMPFAIL;
	}
out:
	sigaction(SIGPIPE, &oldpipe, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void
notify(struct sendmail *sm)
{
	struct buf ans = { 0 };
	const char *line;
	char req[64];
	int rc, n;

	if (sm->no_notify) {
		if (sm->verbose)
			printf("%s: queued as %s (-odq: the daemon takes it at "
			    "its next start)\n", sm->prog, sm->qid);
		return;
	}
	snprintf(req, sizeof(req), "inject %s", sm->qid);
	rc = control_request(sm->cfg->spool_dir, req, &ans);
	n = first_line(&ans, &line);
	if (rc == 0 && sm->verbose)
		printf("%s: queued as %s, handed to the daemon\n", sm->prog,
		    sm->qid);
	else if (rc == 1)
		sm_err(sm, "warning: queued as %s, but the daemon said: %.*s",
		    sm->qid, n, line);
	else if (rc == -1 && sm->verbose)
		printf("%s: queued as %s; %.*s: it waits in the spool\n",
		    sm->prog, sm->qid, n, line);
	buf_free(&ans);
}

/* -bm: the whole submission. Returns the exit status. */
static int
sm_deliver(struct sendmail *sm)
{
	unsigned maxr = sm->lc->max_recipients;
	int rc;

	identity(sm);
	if ((rc = set_sender(sm)) != 0)
		return rc;
	for (int i = 0; i < sm->nargs; i++)
		if (rcpt_add_list(sm, sm->args[i], strlen(sm->args[i]),
		    "on the command line") == -1)
			goto nomem;
	if (sm->nbad > 0)
		return EX_NOUSER;
	if (!sm->extract && sm->nrcpt == 0) {
		sm_err(sm, "no recipients: give them as arguments or use -t "
		    "to read them from the To, Cc and Bcc headers");
		return EX_DATAERR;
	}
	if ((rc = read_message(sm)) != 0)
		return rc;
	if (sm->extract && buf_len(&sm->msg) > 0 &&
	    extract_rcpts(sm, buf_ptr(&sm->msg), buf_len(&sm->msg)) == -1)
		goto nomem;
	if (sm->nbad > 0)
		return EX_NOUSER;
	if (sm->nrcpt == 0) {
		sm_err(sm, "no recipients: none on the command line and none "
		    "in the To, Cc or Bcc headers");
		return EX_DATAERR;
	}
	if (maxr == 0 || maxr > SPOOL_MAX_RCPTS)
		maxr = SPOOL_MAX_RCPTS;
	if (sm->nrcpt > maxr) {
		sm_err(sm, "too many recipients: %zu (at most %u: "
		    "max_recipients of [listen %s])", sm->nrcpt, maxr,
		    sm->lc->name);
		return EX_DATAERR;
	}
	util_queue_id(sm->qid, sizeof(sm->qid));
	if (build_message(sm) == -1)
		goto nomem;
	if ((rc = spool_user(sm)) != 0)
		return rc;
	if (need_postdrop(sm))
		return postdrop_it(sm);
	if ((rc = make_dirs(sm)) != 0 || (rc = spool_it(sm)) != 0)
		return rc;
	notify(sm);
	return 0;
nomem:
	sm_err(sm, "out of memory");
	return EX_OSERR;
}

/* ---- -bs, -bp, -q -------------------------------------------------------- */

/* -bs: relay standard input/output to the daemon's first listener until
 * the daemon closes the connection. */
static int
sm_smtp(struct sendmail *sm)
{
	struct sockaddr_storage sa = sm->lc->sa;
	struct pollfd pfd[2];
	char chunk[16384];
	int fd, in_open = 1, rc = 0;

	/* A wildcard listener is reached on the loopback address. */
	if (sa.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
		if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
			s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (sa.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
		if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
			s6->sin6_addr = in6addr_loopback;
	}
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sm->lc->salen) == -1) {
		sm_err(sm, "cannot reach the daemon at %s ([listen %s]): %s; "
		    "is petrel serve running?", sm->lc->address, sm->lc->name,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return EX_UNAVAILABLE;
	}
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		ssize_t n;
		int np = 0;

		pfd[np].fd = fd;
		pfd[np++].events = POLLIN;
		if (in_open) {
			pfd[np].fd = STDIN_FILENO;
			pfd[np++].events = POLLIN;
		}
		if (poll(pfd, (nfds_t)np, -1) == -1) {
			if (errno == EINTR)
				continue;
			rc = EX_OSERR;
			break;
		}
		if (pfd[0].revents) {
			n = read(fd, chunk, sizeof(chunk));
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				break;          /* the daemon closed: done */
			if (util_write_all(STDOUT_FILENO, chunk, (size_t)n) == -1) {
				rc = EX_IOERR;
				break;
			}
		}
		if (np > 1 && pfd[1].revents) {
			n = read(STDIN_FILENO, chunk, sizeof(chunk));
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0) {
				/* End of our input: let the daemon see it,
				 * and read what it still says. */
				in_open = 0;
				shutdown(fd, SHUT_WR);
			} else if (util_write_all(fd, chunk, (size_t)n) == -1) {
				break;          /* the daemon closed */
			}
		}
	}
	close(fd);
	return rc;
}

/* -bp: the daemon's listing, else the spool files. */
static int
sm_list(struct sendmail *sm)
{
	struct buf ans = { 0 };
	char path[PATH_MAX];
	struct stat st;
	int r;

	if (control_request(sm->cfg->spool_dir, "queue", &ans) == 0) {
		fwrite(buf_ptr(&ans), 1, buf_len(&ans), stdout);
		buf_free(&ans);
		return 0;
	}
	buf_free(&ans);
	snprintf(path, sizeof(path), "%s/queue", sm->cfg->spool_dir);
	if (stat(path, &st) == -1 && errno == ENOENT) {
		printf("Mail queue is empty\n");
		return 0;
	}
	r = queue_list(sm->cfg->spool_dir, stdout);
	if (r == -1)
		return errno == EACCES ? EX_NOPERM : EX_IOERR;
	return r == 0 ? 0 : EX_IOERR;
}

/* -q: ask the daemon to retry the whole queue now. */
static int
sm_flush(struct sendmail *sm)
{
	struct buf ans = { 0 };
	const char *line;
	int rc = control_request(sm->cfg->spool_dir, "flush", &ans);
	int n = first_line(&ans, &line);

	if (rc == 0)
		fwrite(buf_ptr(&ans), 1, buf_len(&ans), stdout);
	else if (rc == 1)
		sm_err(sm, "the daemon refused to flush the queue: %.*s", n,
		    line);
	else
		sm_err(sm, "cannot flush the queue: %.*s", n, line);
	buf_free(&ans);
	return rc == 0 ? 0 : rc == 1 ? EX_SOFTWARE : EX_UNAVAILABLE;
}

/* ---- entry point --------------------------------------------------------- */

int
sendmail_main(int argc, char **argv, int mode)
{
	struct sendmail sm;
	const char *cfgpath;
	char err[1024];
	int rc;

	memset(&sm, 0, sizeof(sm));
	sm.prog = mode == SENDMAIL_MODE_MAILQ ? "mailq" : "sendmail";
	sm.mode = mode == SENDMAIL_MODE_MAILQ ? SM_LIST : SM_DELIVER;
	if ((rc = parse_args(&sm, argc, argv)) != 0)
		return rc;
	/* As the other client commands (main.c): the installed file when
	 * nothing names one; the daemon's own default is the embedded one. */
	cfgpath = sm.config_opt;
	if (cfgpath == NULL && getenv("PETREL_CONFIG") != NULL &&
	    getenv("PETREL_CONFIG")[0] != '\0')
		cfgpath = getenv("PETREL_CONFIG");
	if (cfgpath == NULL && access(SENDMAIL_DEFAULT_CONFIG, R_OK) == 0)
		cfgpath = SENDMAIL_DEFAULT_CONFIG;
	if (config_load(cfgpath, &sm.cfg, err, sizeof(err)) == -1) {
		sm_err(&sm, "%s", err);
		return EX_CONFIG;
	}
	/* config_load guarantees at least one listener. */
	sm.lc = &sm.cfg->listen[0];
	switch (sm.mode) {
	case SM_SMTP:
		rc = sm_smtp(&sm);
		break;
	case SM_LIST:
		rc = sm_list(&sm);
		break;
	case SM_FLUSH:
		rc = sm_flush(&sm);
		break;
	case SM_DELIVER:
	default:
		rc = sm_deliver(&sm);
		break;
	}
	if (fflush(stdout) == EOF && rc == 0)
		rc = EX_IOERR;
	for (size_t i = 0; i < sm.nrcpt; i++)
		free(sm.rcpt[i]);
	free(sm.rcpt);
	buf_free(&sm.msg);
	buf_free(&sm.out);
	config_free(sm.cfg);
	return rc;
}
