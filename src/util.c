/*
 * util.c - queue ids, time formats, log escaping, address formatting.
 * The queue id counter is the only state; it is touched only by the event
 * loop thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "util.h"

static const char b62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static void
b62_put(char *out, uint64_t v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		out[i] = b62[v % 62];
		v /= 62;
	}
}

void
util_queue_id(char *out, size_t outlen)
{
	static uint32_t counter;
	static uint32_t salt;
	struct timeval tv;
	uint64_t mid;

	if (outlen < QUEUE_ID_LEN + 1) {
		if (outlen)
			out[0] = '\0';
		return;
	}
	gettimeofday(&tv, NULL);
	if (salt == 0)
		salt = (uint32_t)getpid() ^ (uint32_t)tv.tv_usec << 8;
	counter++;
	/* 62^6 = 56.8e9: pid-salt in the high part, the counter below. */
	mid = ((uint64_t)(salt & 0x3fff) << 21) | (counter & 0x1fffff);
	b62_put(out, (uint64_t)tv.tv_sec, 6);
	out[6] = '-';
	b62_put(out + 7, mid, 6);
	out[13] = '-';
	b62_put(out + 14, (uint64_t)tv.tv_usec / 260, 2);
	out[16] = '\0';
}

uint64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
util_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
util_fmt_logtime(char *buf, size_t len, uint64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char tmp[32];

	localtime_r(&t, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03u", tmp, (unsigned)(ms % 1000));
}

void
util_fmt_rfc5322(char *buf, size_t len, time_t t)
{
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

size_t
util_escape(char *out, size_t outlen, const char *in, size_t inlen)
{
	size_t o = 0;

	if (outlen == 0)
		return 0;
	for (size_t i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];
		char tmp[5];
		size_t n;

		if (c == '\r')
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\r");
		else if (c == '\n')
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\n");
		else if (c == '\t')
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\t");
		else if (c == '"' || c == '\\')
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", c);
		else {
			tmp[0] = (char)c;
			n = 1;
		}
		if (o + n >= outlen)
			break;
		memcpy(out + o, tmp, n);
		o += n;
	}
	out[o] = '\0';
	return o;
}

void
util_addr_str(const struct sockaddr *sa, char *ip, size_t iplen, int *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
		if (port)
			*port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], ip,
			    (socklen_t)iplen);
		else
			inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
		if (port)
			*port = ntohs(s6->sin6_port);
	} else {
		snprintf(ip, iplen, "unknown");
		if (port)
			*port = 0;
	}
}

int
util_find_header(const char *msg, size_t len, const char *name, char *out,
                 size_t outlen)
{
	size_t nlen = strlen(name), pos = 0;

	while (pos < len) {
		const char *line = msg + pos;
		const char *eol = memchr(line, '\n', len - pos);
		size_t llen;

		if (eol == NULL)
			return -1;
		llen = (size_t)(eol - line);
		if (llen == 0 || (llen == 1 && line[0] == '\r'))
			return -1; /* end of headers */
		if (llen > nlen && line[nlen] == ':' &&
		    strncasecmp(line, name, nlen) == 0) {
			/* Value: rest of the line plus continuation lines. */
			size_t o = 0, p = nlen + 1;
			const char *cur = line;
			size_t clen = llen;
			for (;;) {
				for (; p < clen; p++) {
					char c = cur[p];
					if (c == '\r')
						continue;
					if (o == 0 && (c == ' ' || c == '\t'))
						continue;
					if (o + 1 < outlen)
						out[o++] = c;
				}
				pos += clen + 1;
				if (pos >= len || (msg[pos] != ' ' && msg[pos] != '\t'))
					break;
				cur = msg + pos;
				eol = memchr(cur, '\n', len - pos);
				if (eol == NULL)
					break;
				clen = (size_t)(eol - cur);
				p = 0;
			}
			while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '\t'))
				o--;
			if (outlen)
				out[o < outlen ? o : outlen - 1] = '\0';
			return 0;
		}
		pos += llen + 1;
	}
	return -1;
}

int
util_mkdirs(const char *path, int mode)
{
	char tmp[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (tmp[i] == '/' || tmp[i] == '\0') {
			char save = tmp[i];
			tmp[i] = '\0';
			if (mkdir(tmp, (mode_t)mode) == -1 && errno != EEXIST)
				return -1;
			tmp[i] = save;
		}
	}
	return 0;
}

int
util_parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned d;
		if (s[i] < '0' || s[i] > '9')
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

void
util_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int
util_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

void
util_fmt_age(char *buf, size_t len, uint64_t ms)
{
	uint64_t s = ms / 1000;

	if (s < 60)
		snprintf(buf, len, "%llus", (unsigned long long)s);
	else if (s < 3600)
		snprintf(buf, len, "%llum", (unsigned long long)(s / 60));
	else if (s < 86400)
		snprintf(buf, len, "%lluh", (unsigned long long)(s / 3600));
	else
		snprintf(buf, len, "%llud", (unsigned long long)(s / 86400));
}
