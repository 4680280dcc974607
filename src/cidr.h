/*
 * cidr.h - CIDR network lists ("127.0.0.0/8, ::1/128") and matching of a
 * socket address against them. Pure functions; IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) match IPv4 networks.
 */
#ifndef PETREL_CIDR_H
#define PETREL_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	int family;        /* AF_INET or AF_INET6 */
	uint8_t addr[16];  /* network address, host bits cleared */
	unsigned prefix;   /* 0..32 or 0..128 */
};

struct cidr_list {
	struct cidr *v;    /* owned, free with cidr_list_free() */
	size_t n;
};

/* Parse one "a.b.c.d/n", "x::y/n" or a bare address (full length prefix). */
int cidr_parse(const char *s, struct cidr *out);

/*
 * Parse a list separated by commas and/or white space. An empty string gives
 * an empty list. On error returns -1 and names the bad entry in err.
 * Appends to *list (which must be initialised, e.g. zeroed).
 */
int cidr_list_parse(const char *s, struct cidr_list *list, char *err, size_t errlen);

/* 1 if sa (AF_INET or AF_INET6) is inside any network of the list. */
int cidr_list_match(const struct cidr_list *list, const struct sockaddr *sa);

/* Format one entry as "addr/prefix" into buf. */
void cidr_format(const struct cidr *c, char *buf, size_t len);

void cidr_list_free(struct cidr_list *list);

#endif
