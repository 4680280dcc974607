/*
 * dns.h - asynchronous MX and address lookups with libunbound, inside the
 * event loop (ub_ctx_create_event / ub_resolve_event when available, else
 * ub_fd() + ub_process() on a libevent read event). RFC 5321 5.1 and
 * RFC 7505 (null MX) decide what a delivery does with a domain.
 *
 * Results are delivered to a callback matched by a caller-chosen token;
 * the result struct is only valid during the callback (copy what you keep).
 */
#ifndef PETREL_DNS_H
#define PETREL_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct dns;

#define DNS_MAX_HOSTS 16      /* MX hosts kept per domain */
#define DNS_MAX_ADDRS 8       /* addresses kept per host */
#define DNS_NAME_MAX 255

enum dns_status {
	DNS_OK = 0,        /* hosts[] holds at least one host with an address */
	DNS_NXDOMAIN,      /* domain does not exist: permanent failure */
	DNS_NULLMX,        /* RFC 7505 null MX: permanent failure */
	DNS_NOADDR,        /* MX hosts (or the domain) have no A/AAAA record:
	                      permanent when the domain itself has none and no
	                      MX (RFC 5321 5.1), else temporary (see temporary) */
	DNS_TEMPFAIL,      /* SERVFAIL, timeout, network: retry later */
};

struct dns_host {
	char name[DNS_NAME_MAX + 1];      /* MX target, lower case, no final dot */
	unsigned pref;                     /* MX preference (0 for implicit MX) */
	struct sockaddr_storage addr[DNS_MAX_ADDRS]; /* port set to the
	                                      requested port */
	socklen_t addrlen[DNS_MAX_ADDRS];
	size_t naddr;                      /* IPv4 addresses first, then IPv6 */
};

struct dns_result {
	enum dns_status status;
	int temporary;        /* 1 if the failure may go away (retry) */
	int implicit_mx;      /* no MX record: the domain's own addresses */
	struct dns_host hosts[DNS_MAX_HOSTS]; /* by preference, equal
	                                         preferences in random order */
	size_t nhosts;
	char why[256];        /* human-readable reason on failure, for logs
	                         and bounces, e.g. "example.org: NXDOMAIN" */
};

typedef void (*dns_cb)(uint64_t token, const struct dns_result *res,
                       void *arg);

/*
 * resolver: NULL to use /etc/resolv.conf (and /etc/hosts), or
 * "ADDR[@PORT]" to send every query to that server (used by tests with a
 * DNS server on loopback). Returns NULL with a reason in err.
 */
struct dns *dns_new(struct event_base *base, const char *resolver, char *err,
                    size_t errlen);
/* Cancel outstanding queries (their callbacks never fire) and free. */
void dns_free(struct dns *d);

/*
 * Resolve the mail exchangers of domain: MX (ordered, ties shuffled),
 * then A and AAAA of each target; no MX -> the domain's A/AAAA as an
 * implicit MX; MX "." with preference 0 -> DNS_NULLMX. The callback fires
 * exactly once, always from the event loop (never inside this call).
 * Temporary failures of address lookups make the result DNS_TEMPFAIL (no
 * MX) or DNS_NOADDR with temporary = 1. Returns 0, or -1 if the query could
 * not be started.
 */
int dns_resolve_mx(struct dns *d, const char *domain, uint16_t port,
                   uint64_t token, dns_cb cb, void *arg);

/* A and AAAA of one host name (a static route given by name): one host. */
int dns_resolve_host(struct dns *d, const char *host, uint16_t port,
                     uint64_t token, dns_cb cb, void *arg);

/* Pure helpers (dns_rr.c), unit tested and fuzzed. */

/*
 * MX RDATA in wire format (RFC 1035 3.3.9: 16-bit preference, then an
 * uncompressed domain name). Writes the name in text form, lower case,
 * without the final dot ("" for the root). Returns 0 or -1 (truncated,
 * label over 63, name over 255, compression pointer, trailing bytes, a
 * label byte with no plain text form: '.', space, control, non-ASCII).
 */
int dns_parse_mx_rdata(const uint8_t *rd, size_t len, unsigned *pref,
                       char *name, size_t namelen);

/*
 * Sort hosts by preference, shuffle equal preferences with rnd() (any
 * uniform 32-bit generator; tests pass a deterministic one), and drop
 * duplicates of the same name. Returns the new count.
 */
size_t dns_order_hosts(struct dns_host *hosts, size_t n, uint32_t (*rnd)(void));

/*
 * Read a whole DNS response message (as ub_resolve_event delivers it:
 * wire format, names possibly compressed). dns_msg_mx: the MX answers into
 * hosts[] (name, preference; no addresses), *rcode the response code.
 * dns_msg_addrs: the A (qtype 1) or AAAA (qtype 28) answers appended to
 * h->addr with the given port. Both return 0, or -1 for a malformed message.
 */
int dns_msg_mx(const uint8_t *msg, size_t len, int *rcode,
               struct dns_host *hosts, size_t max, size_t *nhosts);
int dns_msg_addrs(const uint8_t *msg, size_t len, int *rcode, int qtype,
                  struct dns_host *h, uint16_t port);

#endif
