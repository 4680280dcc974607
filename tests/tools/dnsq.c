/*
 * dnsq.c - command-line driver for src/dns.c, used by the integration
 * tests (tests/integration/test_dns.py) and by hand.
 *
 *   dnsq [-r ADDR[@PORT]] [-c MS] mx DOMAIN PORT
 *   dnsq [-r ADDR[@PORT]] [-c MS] host NAME PORT
 *
 * Runs one lookup in a fresh event base and prints the result:
 *
 *   STATUS temporary=T implicit=I        OK NXDOMAIN NULLMX NOADDR TEMPFAIL
 *   PREF NAME ADDR:PORT [ADDR:PORT...]   one line per host, in order;
 *                                        IPv6 as [ADDR]:PORT
 *   why: TEXT                            only when why is not empty
 *   elapsed_ms=N
 *
 * -c MS: cancel test. After MS milliseconds, if the callback has not fired,
 * dns_free() the resolver with the lookup outstanding, keep the loop
 * running for 500 ms more, print "cancelled" and exit 0; a callback after
 * dns_free() prints "callback after dns_free" and exits 1.
 *
 * Exit status: 0 when a result (or the cancellation) was printed, 1 on a
 * broken promise of dns.h, 2 on usage or setup errors.
 */
#include <sys/time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "dns.h"

#define DNSQ_TOKEN 0x50455452454cULL /* any value; checked on the way back */

struct dnsq {
	struct event_base *base;
	struct dns *dns;
	int called;	/* callbacks seen */
	int freed;	/* dns_free() done */
	int in_resolve; /* inside dns_resolve_*() */
	int bad;	/* a promise of dns.h was broken */
	struct timespec t0;
};

static const char *
status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "OK";
	case DNS_NXDOMAIN:
		return "NXDOMAIN";
	case DNS_NULLMX:
		return "NULLMX";
	case DNS_NOADDR:
		return "NOADDR";
	case DNS_TEMPFAIL:
		return "TEMPFAIL";
	}
	return "UNKNOWN";
}

static long
elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)(t.tv_sec - t0->tv_sec) * 1000 +
	       (long)(t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void
print_addr(const struct sockaddr_storage *ss)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		printf(" %s:%u", ip, (unsigned)ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		printf(" [%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
	} else {
		printf(" ?family=%d", (int)ss->ss_family);
	}
}

static void
on_result(uint64_t token, const struct dns_result *res, void *arg)
{
	struct dnsq *q = arg;
	size_t i, j;

	q->called++;
	if (q->freed) {
		printf("callback after dns_free\n");
		q->bad = 1;
		return;
	}
	if (q->in_resolve) {
		printf("callback inside dns_resolve\n");
		q->bad = 1;
	}
	if (token != DNSQ_TOKEN || q->called > 1) {
		printf("bad token or second callback\n");
		q->bad = 1;
	}
	printf("%s temporary=%d implicit=%d\n", status_name(res->status),
	    res->temporary, res->implicit_mx);
	for (i = 0; i < res->nhosts; i++) {
		printf("%u %s", res->hosts[i].pref, res->hosts[i].name);
		for (j = 0; j < res->hosts[i].naddr; j++)
			print_addr(&res->hosts[i].addr[j]);
		printf("\n");
	}
	if (res->why[0] != '\0')
		printf("why: %s\n", res->why);
	printf("elapsed_ms=%ld\n", elapsed_ms(&q->t0));
	event_base_loopbreak(q->base);
}

static void
on_cancel(evutil_socket_t fd, short what, void *arg)
{
	struct dnsq *q = arg;

	if (q->called)
		return;
	dns_free(q->dns);
	q->dns = NULL;
	q->freed = 1;
	event_base_loopbreak(q->base);
}

static void
on_stop(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static int
parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	*out = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || *out > max)
		return -1;
	return 0;
}

static _Noreturn void
usage(void)
{
	fprintf(stderr,
	    "usage: dnsq [-r ADDR[@PORT]] [-c MS] mx DOMAIN PORT\n"
	    "       dnsq [-r ADDR[@PORT]] [-c MS] host NAME PORT\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct dnsq q;
	const char *resolver = NULL;
	unsigned long port, cancel_ms = 0;
	int i = 1, r, cancel = 0;
	char err[256];
	struct event *ev_cancel = NULL, *ev_stop = NULL;

	memset(&q, 0, sizeof(q));
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
			resolver = argv[i + 1];
		} else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			if (parse_uint(argv[i + 1], 600000, &cancel_ms) == -1)
				usage();
			cancel = 1;
		} else {
			usage();
		}
		i += 2;
	}
	if (argc - i != 3 || parse_uint(argv[i + 2], 65535, &port) == -1 ||
	    (strcmp(argv[i], "mx") != 0 && strcmp(argv[i], "host") != 0))
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((q.base = event_base_new()) == NULL) {
		fprintf(stderr, "dnsq: event_base_new failed\n");
		return 2;
	}
	if ((q.dns = dns_new(q.base, resolver, err, sizeof(err))) == NULL) {
		fprintf(stderr, "dnsq: %s\n", err);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &q.t0);
	q.in_resolve = 1;
	if (strcmp(argv[i], "mx") == 0)
		r = dns_resolve_mx(q.dns, argv[i + 1], (uint16_t)port,
		    DNSQ_TOKEN, on_result, &q);
	else
		r = dns_resolve_host(q.dns, argv[i + 1], (uint16_t)port,
		    DNSQ_TOKEN, on_result, &q);
	q.in_resolve = 0;
	if (r == -1) {
		printf("could not start the lookup\n");
		dns_free(q.dns);
		event_base_free(q.base);
		return 2;
	}
	if (cancel) {
		struct timeval tv = {(time_t)(cancel_ms / 1000),
		    (suseconds_t)(cancel_ms % 1000) * 1000};

		ev_cancel = evtimer_new(q.base, on_cancel, &q);
		if (ev_cancel == NULL || evtimer_add(ev_cancel, &tv) == -1)
			return 2;
	}
	event_base_dispatch(q.base);
	if (q.freed) {
		struct timeval tv = {0, 500000};

		/* Anything libunbound left in the loop must stay silent. */
		ev_stop = evtimer_new(q.base, on_stop, q.base);
		if (ev_stop == NULL || evtimer_add(ev_stop, &tv) == -1)
			return 2;
		event_base_dispatch(q.base);
		if (!q.bad)
			printf("cancelled\n");
	}
	if (ev_cancel != NULL)
		event_free(ev_cancel);
	if (ev_stop != NULL)
		event_free(ev_stop);
	dns_free(q.dns);
	event_base_free(q.base);
	return q.bad ? 1 : 0;
}
