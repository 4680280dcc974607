/*
 * util.h - small helpers with no state of their own beyond the queue id
 * counter: queue ids, time formats, log escaping, address formatting.
 */
#ifndef PETREL_UTIL_H
#define PETREL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/* Queue ids look like "1vQx2a-0000Ab-7F": base62 seconds, base62 of pid and
 * a per-process counter, two base62 digits of sub-second time. */
#define QUEUE_ID_LEN 16

/* Write a new unique queue id (QUEUE_ID_LEN chars + NUL) into out. */
void util_queue_id(char *out, size_t outlen);

uint64_t util_now_ms(void);
/* Milliseconds of CLOCK_MONOTONIC: for timeouts, deadlines and durations
 * (a step of the wall clock must not fire or stretch them). */
uint64_t util_mono_ms(void);

/* "2026-11-29 12:00:00.123" (local time) into buf (>= 24 bytes). */
void util_fmt_logtime(char *buf, size_t len, uint64_t ms);

/* A duration for people: "42s", "5m", "3h", "2d" (rounded down). */
void util_fmt_age(char *buf, size_t len, uint64_t ms);

/* RFC 5322 date-time, e.g. "Sun, 29 Nov 2026 12:00:00 +0000". */
void util_fmt_rfc5322(char *buf, size_t len, time_t t);

/*
 * Copy in[0..inlen) into out as printable ASCII for a log line: CR, LF, TAB
 * as \r \n \t, other control and non-ASCII bytes as \xHH, '"' and '\' escaped.
 * Stops at outlen-1, always NUL-terminates. Returns bytes written.
 */
size_t util_escape(char *out, size_t outlen, const char *in, size_t inlen);

/* "127.0.0.1" / "::1" and the port of an AF_INET/AF_INET6 address. */
void util_addr_str(const struct sockaddr *sa, char *ip, size_t iplen, int *port);

/*
 * Find header "name" (case-insensitive) in a message's header section
 * (content up to the first empty line, CRLF lines, folded lines unfolded
 * with their leading white space kept). Copies the trimmed value into out.
 * Returns 0 if found, -1 if not (or the header section is not in the input).
 */
int util_find_header(const char *msg, size_t len, const char *name, char *out,
                     size_t outlen);

/* write(2) all n bytes, retrying on EINTR and short writes. 0 or -1. */
int util_write_all(int fd, const void *p, size_t n);

/* mkdir -p with mode for the created directories. Returns 0 or -1. */
int util_mkdirs(const char *path, int mode);

/* snprintf into err (if not NULL and errlen > 0): the "reason" out-param
 * of the parsers. */
void util_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse a decimal uint64 from the whole string: 1 to 20 digits, no sign,
 * no overflow. Returns 0 or -1. */
int util_parse_u64(const char *s, size_t len, uint64_t *out);

#endif
