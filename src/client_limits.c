/*
 * client_limits.c - per-address session and error accounting (see
 * client_limits.h). A chained hash table keyed by the address string;
 * expired entries are dropped when their bucket is walked, and the whole
 * table is swept once before it would grow past CLIENTS_MAX.
 */
#include "client_limits.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096

struct client {
	struct client *next;
	unsigned sessions;
	unsigned errors;         /* in the window starting at window_start */
	uint64_t window_start;
	uint64_t blocked_until;  /* ms; 0 = not blocked */
	char ip[64];
};

struct client_table {
	struct client *b[NBUCKETS];
	size_t n;
	uint64_t last_sweep;     /* ms: the full table is swept at most once
	                            a second */
};

/*
 * The key of an address: IPv4 as it is; IPv6 by its /64 (one site or one
 * customer line usually has a whole /64, and rotating addresses within it
 * must not escape the limits); IPv4-mapped IPv6 as the IPv4 address.
 */
void
client_key(const char *ip, char *out, size_t outlen)
{
	struct in6_addr a;
	char net[INET6_ADDRSTRLEN];

	if (strchr(ip, ':') == NULL || inet_pton(AF_INET6, ip, &a) != 1) {
		snprintf(out, outlen, "%s", ip);
		return;
	}
	if (IN6_IS_ADDR_V4MAPPED(&a)) {
		inet_ntop(AF_INET, &a.s6_addr[12], out, (socklen_t)outlen);
		return;
	}
	memset(&a.s6_addr[8], 0, 8);
	if (inet_ntop(AF_INET6, &a, net, sizeof(net)) == NULL)
		snprintf(out, outlen, "%s", ip);
	else
		snprintf(out, outlen, "%s/64", net);
}

static unsigned
hash_ip(const char *ip)
{
	uint32_t h = 2166136261u;   /* FNV-1a */

	for (; *ip; ip++) {
		h ^= (unsigned char)*ip;
		h *= 16777619u;
	}
	return h % NBUCKETS;
}

/* Nothing left to remember: no session, window and penalty over. */
static int
expired(const struct client *c, uint64_t now, const struct client_limits *lim)
{
	return c->sessions == 0 && now >= c->blocked_until &&
	    (c->errors == 0 || now >= c->window_start + lim->window_ms);
}

/* Walk bucket h, dropping expired entries; return the entry of ip. */
static struct client *
bucket_find(struct client_table *t, unsigned h, const char *ip, uint64_t now,
            const struct client_limits *lim)
{
	struct client **pp = &t->b[h], *found = NULL;

	while (*pp) {
		struct client *c = *pp;
		if (expired(c, now, lim)) {
			*pp = c->next;
			free(c);
			t->n--;
			continue;
		}
		if (strcmp(c->ip, ip) == 0)
			found = c;
		pp = &c->next;
	}
	return found;
}

static void
sweep(struct client_table *t, uint64_t now, const struct client_limits *lim)
{
	for (unsigned h = 0; h < NBUCKETS; h++)
		(void)bucket_find(t, h, "", now, lim);
}

struct client_table *
client_table_new(void)
{
	return calloc(1, sizeof(struct client_table));
}

void
client_table_free(struct client_table *t)
{
	if (t == NULL)
		return;
	for (unsigned h = 0; h < NBUCKETS; h++)
		while (t->b[h]) {
			struct client *c = t->b[h];
			t->b[h] = c->next;
			free(c);
		}
	free(t);
}

size_t
client_table_size(const struct client_table *t)
{
	return t->n;
}

enum client_verdict
client_admit(struct client_table *t, const char *ip, uint64_t now,
             const struct client_limits *lim, unsigned *info)
{
	unsigned h = hash_ip(ip);
	struct client *c = bucket_find(t, h, ip, now, lim);

	*info = 0;
	if (c != NULL) {
		if (now < c->blocked_until && lim->max_errors > 0) {
			uint64_t left = c->blocked_until - now;
			*info = (unsigned)((left + 999) / 1000);
			return CLIENT_BLOCKED;
		}
		if (lim->max_sessions && c->sessions >= lim->max_sessions) {
			*info = c->sessions;
			return CLIENT_TOO_MANY_SESSIONS;
		}
		c->sessions++;
		return CLIENT_OK;
	}
	if (strlen(ip) >= sizeof(c->ip))
		return CLIENT_UNTRACKED;
	if (t->n >= CLIENTS_MAX) {
		if (now - t->last_sweep < 1000)
			return CLIENT_UNTRACKED;
		t->last_sweep = now;
		sweep(t, now, lim);
		if (t->n >= CLIENTS_MAX)
			return CLIENT_UNTRACKED;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return CLIENT_UNTRACKED;
	memcpy(c->ip, ip, strlen(ip) + 1);
	c->sessions = 1;
	c->window_start = now;
	c->next = t->b[h];
	t->b[h] = c;
	t->n++;
	return CLIENT_OK;
}

void
client_release(struct client_table *t, const char *ip, uint64_t now,
               const struct client_limits *lim)
{
	unsigned h = hash_ip(ip);
	struct client *c = bucket_find(t, h, ip, now, lim);

	if (c == NULL || c->sessions == 0)
		return;
	if (--c->sessions == 0 && expired(c, now, lim))
		(void)bucket_find(t, h, ip, now, lim);  /* drops it */
}

int
client_error(struct client_table *t, const char *ip, uint64_t now,
             const struct client_limits *lim)
{
	struct client *c;

	if (lim->max_errors == 0)
		return 0;
	c = bucket_find(t, hash_ip(ip), ip, now, lim);
	if (c == NULL)
		return 0;
	if (now >= c->window_start + lim->window_ms) {
		c->window_start = now;
		c->errors = 0;
	}
	if (++c->errors < lim->max_errors || now < c->blocked_until)
		return 0;
	c->blocked_until = now + lim->window_ms;
	/* The penalty starts a new window: errors of sessions still open
	 * during it count towards the next one. */
	c->window_start = now;
	c->errors = 0;
	return 1;
}
