/*
 * spool_format.h - the on-disk format of one queued message, as pure
 * functions (serialize, parse). docs/internals/QUEUE.md describes it.
 *
 * A spool file is:
 *
 *     [content: exactly content_size octets, CRLF lines, not dot-stuffed]
 *     [envelope: env_size octets of "key value\n" lines]
 *     [trailer: one line "PETREL-SPOOL 1 <content_size> <env_size>\n"]
 *
 * Content comes first so that a message can be streamed to disk while it
 * arrives, with no copy; the envelope is only known at the end of DATA.
 * A reader takes the last line (at most SPOOL_TRAILER_MAX octets), checks
 * that content_size + env_size + trailer length equals the file size, then
 * parses the envelope. Envelope keys, in this order:
 *
 *     id <queue id>
 *     time <unix time in milliseconds>
 *     sender <address, empty for the null sender>
 *     helo <HELO/EHLO argument>
 *     client <client IP address>
 *     proto <smtp|esmtp|esmtps|...>
 *     tls <protocol:cipher:bits, empty without TLS>
 *     body <7bit|8bitmime>
 *     smtputf8 <0|1>
 *     msgid <Message-ID header value, may be empty>
 *     rcpt <address>          (one line per recipient, at least one)
 *
 * Values may hold any byte except NUL, CR and LF. Unknown keys are ignored
 * (so a newer writer's extra fields do not break an older reader); missing
 * required keys (id, time, sender, at least one rcpt) are an error.
 */
#ifndef PETREL_SPOOL_FORMAT_H
#define PETREL_SPOOL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_ID_MAX 32
#define SPOOL_TRAILER_MAX 64
#define SPOOL_MAX_RCPTS 100000

struct spool_env {
	char id[SPOOL_ID_MAX + 1];
	uint64_t time_ms;
	char *sender;     /* "" for <> ; all strings owned, NUL-terminated */
	char *helo;
	char *client;
	char *proto;
	char *tls;
	int body_8bit;    /* body 8bitmime */
	int smtputf8;
	char *msgid;
	char **rcpt;
	size_t nrcpt;
	uint64_t content_size;  /* from the trailer, set by the reader */
};

/*
 * Serialize e (all string fields may be NULL meaning "") as envelope lines
 * followed by the trailer line for content_size. Returns a malloc'ed buffer
 * in *out (caller frees) and its length. Returns -1 if a value holds NUL, CR
 * or LF, or the id is empty or too long, or there is no recipient.
 */
int spool_env_serialize(const struct spool_env *e, uint64_t content_size,
                        char **out, size_t *outlen);

/*
 * Parse the trailer from the last bytes of a file (tail = the last tlen
 * bytes, tlen <= SPOOL_TRAILER_MAX, or the whole file if shorter), given the
 * file's total size. Checks the arithmetic. On success sets *content_size
 * and *env_size and returns 0; -1 otherwise.
 */
int spool_trailer_parse(const char *tail, size_t tlen, uint64_t file_size,
                        uint64_t *content_size, uint64_t *env_size);

/*
 * Parse envelope lines (exactly what spool_env_serialize wrote before the
 * trailer). On success fills *e (caller frees with spool_env_free) and
 * returns 0; on error returns -1, frees what it allocated, and writes a
 * reason naming the line into err.
 */
int spool_env_parse(const char *buf, size_t len, struct spool_env *e,
                    char *err, size_t errlen);

void spool_env_free(struct spool_env *e);

/*
 * One line of journal/<id> (docs/internals/QUEUE.md): "D idx ms",
 * "F idx ms reason", "H 0 ms", "U 0 ms", "X 0 ms". len excludes or
 * includes the final '\n'. Fills *kind, *idx and, for F, the reason
 * (pointer into line, *whylen octets, no newline; NULL/0 otherwise).
 * Returns 0, or -1 for an unknown kind or a malformed line (a torn last
 * line after a crash is one: callers skip it).
 */
int spool_journal_parse(const char *line, size_t len, char *kind,
                        uint64_t *idx, const char **why, size_t *whylen);

#endif
