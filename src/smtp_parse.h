/*
 * smtp_parse.h - pure parsers for SMTP command lines (RFC 5321 section 4.1),
 * reverse/forward paths, ESMTP parameters (MAIL/RCPT), BDAT arguments and
 * HELO/EHLO arguments. Shared by the server and, later, the client.
 *
 * Every function works on a byte range (pointer + length, not necessarily
 * NUL-terminated), allocates nothing, and never reads outside the range.
 * Output pointers point into the caller's input and stay valid as long as it.
 */
#ifndef PETREL_SMTP_PARSE_H
#define PETREL_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
	SMTP_UNKNOWN = 0,
	SMTP_HELO,
	SMTP_EHLO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_EXPN,
	SMTP_HELP,
	SMTP_STARTTLS,
	SMTP_AUTH,
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;   /* after the verb and the spaces that follow it */
	size_t arglen;     /* trailing spaces removed; 0 if no argument */
};

/*
 * Parse one command line (without its CRLF). The verb is matched
 * case-insensitively and must be followed by a space or the end of the line
 * ("MAILX" is SMTP_UNKNOWN). Returns 0, or -1 when the line holds a NUL, CR
 * or LF byte (cmd->verb is then SMTP_UNKNOWN).
 */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

/* Name of a verb, upper case ("MAIL"); "UNKNOWN" for SMTP_UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb v);

/*
 * RFC 2920 section 3.1 (+ RFC 3207, RFC 4954): 1 if the command must be the
 * last of a pipelined group (EHLO, HELO, DATA, NOOP, QUIT, VRFY, EXPN,
 * STARTTLS, AUTH, and unknown commands), 0 if it may stand anywhere (MAIL,
 * RCPT, RSET, BDAT, HELP).
 */
int smtp_verb_ends_group(enum smtp_verb v);

/*
 * "FROM:" / "TO:" prefix. Matches case-insensitively at the start of arg,
 * skips spaces after the colon (a common client deviation, accepted), and
 * returns a pointer to the rest (the path), or NULL when the prefix is absent.
 */
const char *smtp_skip_prefix(const char *arg, size_t len, const char *prefix,
                             size_t *restlen);

#define SMTP_LOCAL_MAX 64     /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255   /* 4.5.3.1.2 */
#define SMTP_PATH_MAX 256     /* 4.5.3.1.3, including the angle brackets */

/* Flags for smtp_parse_path(). */
#define SMTP_PATH_ALLOW_NULL 0x1        /* "<>" is accepted (MAIL) */
#define SMTP_PATH_ALLOW_POSTMASTER 0x2  /* "<postmaster>" accepted (RCPT) */

enum smtp_path_status {
	SMTP_PATH_OK = 0,
	SMTP_PATH_SYNTAX,     /* not a valid path: 501 5.1.3 (RCPT) / 5.1.7 (MAIL) */
	SMTP_PATH_TOO_LONG,   /* local part, domain or path over its limit */
	SMTP_PATH_BAD_UTF8,   /* non-ASCII bytes that are not valid UTF-8 */
};

struct smtp_path {
	int null;                       /* "<>" */
	int postmaster;                 /* "<postmaster>" without a domain */
	int utf8;                       /* holds non-ASCII (valid UTF-8) bytes */
	char addr[SMTP_PATH_MAX + 1];   /* "local@domain", NUL-terminated, source
	                                   route removed, quoting kept as sent;
	                                   "" for <>, "postmaster" for <postmaster> */
	size_t at;                      /* index of the '@' that separates the
	                                   domain, or 0 for null/postmaster */
};

/*
 * Parse a path "<...>" at the start of s (RFC 5321 4.1.2: Reverse-path,
 * Forward-path, with an optional A-d-l source route "@a,@b:" that is
 * dropped). Local part: Dot-string or Quoted-string. Domain: dot-separated
 * labels (letters, digits, hyphen; no leading/trailing hyphen; no trailing
 * dot) or an address literal "[1.2.3.4]" / "[IPv6:...]". Non-ASCII bytes are
 * allowed when they form valid UTF-8 (the caller decides whether SMTPUTF8 was
 * given). *rest / *restlen receive what follows the closing '>' (parameters),
 * with leading spaces skipped.
 */
enum smtp_path_status smtp_parse_path(const char *s, size_t len, int flags,
                                      struct smtp_path *p, const char **rest,
                                      size_t *restlen);

/* One ESMTP parameter "KEY" or "KEY=VALUE" (RFC 5321 4.1.2 esmtp-param). */
struct smtp_param {
	const char *key;
	size_t keylen;
	const char *value;   /* NULL when there is no '=' */
	size_t valuelen;
};

#define SMTP_PARAMS_MAX 16

/*
 * Split parameters separated by one or more spaces. Keys: letters, digits
 * and '-', starting with a letter or digit. Values: printable ASCII except
 * '=' and space (UTF-8 is allowed too, RFC 6531). Returns the number of
 * parameters, or -1 on a syntax error or more than max parameters.
 */
int smtp_parse_params(const char *s, size_t len, struct smtp_param *out,
                      size_t max);

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME,
                 SMTP_BODY_BINARYMIME };

struct smtp_mail_params {
	int has_size;
	uint64_t size;        /* SIZE= (RFC 1870) */
	enum smtp_body body;  /* BODY= (RFC 6152) */
	int smtputf8;         /* SMTPUTF8 (RFC 6531) */
};

/* Extensions the caller currently offers, for smtp_parse_mail_params(). */
#define SMTP_EXT_SIZE 0x1
#define SMTP_EXT_8BITMIME 0x2
#define SMTP_EXT_SMTPUTF8 0x4
#define SMTP_EXT_BINARYMIME 0x8

/*
 * Interpret MAIL parameters. Returns 0 on success; otherwise the SMTP reply
 * code to send (501 for bad syntax or a bad value or a duplicate, 555 for an
 * unknown or not offered parameter) with a human-readable reason in err
 * (e.g. "Unsupported parameter FOO", "Bad SIZE value").
 */
int smtp_parse_mail_params(const char *s, size_t len, unsigned exts,
                           struct smtp_mail_params *mp, char *err,
                           size_t errlen);

/*
 * RCPT parameters: none is supported in this version, so any parameter gives
 * 555 and syntax errors 501. Returns 0 or the reply code, reason in err.
 */
int smtp_parse_rcpt_params(const char *s, size_t len, char *err, size_t errlen);

/*
 * "BDAT <chunk-size> [LAST]" argument (RFC 3030). chunk-size is 1 to 20
 * digits and must fit in uint64_t. Returns 0 or -1.
 */
int smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, int *last);

/*
 * HELO/EHLO argument: one token of printable ASCII (a domain or an address
 * literal; not validated further, as most MTAs do), at most 255 octets,
 * nothing after it. Copies it NUL-terminated into out. Returns 0 or -1.
 */
int smtp_parse_helo(const char *arg, size_t len, char *out, size_t outlen);

/* 1 if [s, s+len) is valid UTF-8 (no overlongs, no surrogates). */
int smtp_utf8_valid(const char *s, size_t len);

#endif
