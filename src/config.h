/*
 * config.h - Petrel's configuration: an INI file parsed with inih on top of
 * embedded defaults, so that Petrel runs with no file at all.
 *
 * Ownership: config_load() allocates one struct config; config_free() frees
 * it and everything it points to. Nothing in it changes after loading, so
 * any component may keep borrowed pointers into it for as long as the
 * config lives (the daemon keeps one for its whole life in this version).
 */
#ifndef PETREL_CONFIG_H
#define PETREL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "cidr.h"

#define PETREL_VERSION "0.1.0"

enum bare_lf_policy { BARE_LF_REJECT = 0, BARE_LF_NORMALIZE = 1 };

/* One [listen NAME] section. */
struct listen_conf {
	char *name;                  /* section name, e.g. "smtp" */
	char *address;               /* as written, e.g. "127.0.0.1:2525" */
	struct sockaddr_storage sa;  /* parsed address */
	socklen_t salen;
	char *tls_cert;              /* NULL: self-signed one in the spool */
	char *tls_key;
	int pipelining;              /* advertise PIPELINING (default 1) */
	int chunking;                /* advertise CHUNKING (default 1) */
	int starttls;                /* offer STARTTLS (default 1) */
	int enforce_sync;            /* RFC 2920 sync enforcement (default 1) */
	struct cidr_list sync_exempt_networks;
	enum bare_lf_policy bare_lf; /* default BARE_LF_REJECT */
	uint64_t max_message_size;   /* octets, default 52428800 (50 MiB) */
	unsigned max_recipients;     /* per message, default 1000 (RCPTMAX) */
	unsigned max_messages;       /* per session, default 1000 (MAILMAX) */
	unsigned max_errors;         /* per session before 421, default 20 */
	unsigned max_line_length;    /* DATA text line incl. CRLF, default 1000;
	                                0 = unlimited */
	unsigned command_timeout;    /* seconds, default 300 (RFC 5321 4.5.3.2.7) */
	unsigned data_timeout;       /* seconds, default 180 (4.5.3.2.6) */
	unsigned greeting_delay_ms;  /* wait before the 220, default 0 */
	unsigned min_data_rate;      /* content bytes/s after data_timeout of
	                                grace, default 500, 0 = no minimum */
};

enum tls_policy { TLS_POLICY_NONE = 0, TLS_POLICY_MAY, TLS_POLICY_ENCRYPT,
                  TLS_POLICY_VERIFY };

/*
 * One [destination PATTERN] section: how to deliver to recipient domains
 * (and MX hosts) matching PATTERN: an exact domain ("example.org"), a
 * suffix ("*.example.org": any subdomain, not example.org itself), or "*"
 * (everything else; replaces the built-in defaults).
 */
struct dest_conf {
	char *pattern;               /* lower case */
	char **route;                /* "host:port" entries (host: name, IPv4,
	                                or [IPv6]); NULL/0 = MX lookup */
	size_t nroute;
	enum tls_policy tls;         /* default TLS_POLICY_MAY */
	int pipelining;              /* use PIPELINING when offered (default 1) */
	int chunking;                /* use CHUNKING when offered (default 1) */
	unsigned port;               /* port for MX hosts, default 25 */
	unsigned max_connections;    /* default 10 */
	unsigned max_messages_per_connection; /* default 1000 */
	unsigned max_connection_age; /* seconds, default 300 */
	unsigned idle_timeout;       /* seconds, default 10 */
	unsigned pipeline_window;    /* BDAT transactions in flight, default 8 */
	int chain_after_data;        /* without CHUNKING: send the next MAIL in
	                                the same write as the previous "."
	                                (RFC 2920 3.1), default 1; 0 for servers
	                                that lose it (chasquid 1.11) */
	unsigned connect_timeout;    /* seconds, default 30 */
	unsigned reply_timeout;      /* seconds, default 300 (RFC 5321 4.5.3.2) */
	unsigned data_timeout;       /* seconds for the reply to the end of
	                                data, default 600 (4.5.3.2.6) */
};

struct config {
	char *path;           /* file loaded, or NULL for embedded defaults only */
	char *hostname;       /* default: gethostname() */
	char *spool_dir;      /* default "./var/spool" */
	char *log_file;       /* "-" = standard output (default) */
	unsigned max_sessions;   /* concurrent inbound sessions, default 1000 */
	unsigned spool_workers;  /* fsync worker threads, default 2 */
	/* Per client address (src/client_limits.c); 0 = no limit. Clients in
	 * [relay] networks or client_limit_exceptions are not limited. */
	unsigned max_sessions_per_client;  /* default 50 */
	unsigned max_client_errors;        /* error replies per penalty time,
	                                      default 100 */
	unsigned client_penalty_time;      /* seconds, default 60 */
	struct cidr_list client_limit_exceptions; /* default none */
	struct listen_conf *listen; /* at least one: default 127.0.0.1:2525 */
	size_t nlisten;
	struct cidr_list relay_networks; /* default 127.0.0.0/8, ::1/128 */
	char **local_domains;  /* lower-cased, no trailing dot */
	size_t nlocal_domains;

	/* Delivery (top level). */
	char *smarthost;       /* "host:port" for every domain without a
	                          route of its own; NULL = MX lookup */
	char *dns_resolver;    /* "ADDR[@PORT]"; NULL = /etc/resolv.conf */
	char *helo_name;       /* name sent in EHLO; default: hostname */
	unsigned max_queue_time;   /* seconds, default 5d, then bounce */
	unsigned retry_initial;    /* seconds, default 60: first retry delay */
	unsigned retry_max;        /* seconds, default 3600: backoff cap */
	int queue_only;            /* accept and queue, deliver nothing
	                              (default no), like Exim's queue_only */
	char *user;                /* run as this user after binding (when
	                              started as root); NULL = stay */
	char *pid_file;            /* NULL = none */
	unsigned shutdown_timeout; /* seconds to finish transactions in flight
	                              on SIGTERM, default 30 */
	struct dest_conf dest_default; /* "*" section, or built-in defaults */
	struct dest_conf *dest;    /* other [destination] sections, in order */
	size_t ndest;
};

/*
 * Load the configuration. path == NULL: embedded defaults only.
 * On error returns -1 and writes into err a message naming the file, the
 * line and the key, e.g. "petrel.conf:12: [listen smtp] pipelining: expected
 * yes or no, got 'maybe'". On success returns 0 and *out owns a new config.
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Same, from a string (for tests); name is used in error messages. */
int config_load_string(const char *text, const char *name, struct config **out,
                       char *err, size_t errlen);

void config_free(struct config *cfg);

/*
 * The destination settings for a domain or host name (any case): an exact
 * pattern wins, then the longest matching "*.suffix", then the "*" or
 * built-in defaults. Never NULL.
 */
const struct dest_conf *config_find_dest(const struct config *cfg,
                                         const char *domain);

/* Print the effective configuration as an INI file that config_load accepts. */
void config_print(const struct config *cfg, FILE *fp);

/* Is domain (any case, optional trailing dot not allowed) a local domain? */
int config_is_local_domain(const struct config *cfg, const char *domain);

/*
 * Parse "host:port", "[v6addr]:port" or "host" (then default_port).
 * Only numeric addresses. Returns 0 or -1.
 */
int config_parse_hostport(const char *s, int default_port,
                          struct sockaddr_storage *sa, socklen_t *salen);

#endif
