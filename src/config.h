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
};

struct config {
	char *path;           /* file loaded, or NULL for embedded defaults only */
	char *hostname;       /* default: gethostname() */
	char *spool_dir;      /* default "./var/spool" */
	char *log_file;       /* "-" = standard output (default) */
	unsigned max_sessions;   /* concurrent inbound sessions, default 1000 */
	unsigned spool_workers;  /* fsync worker threads, default 2 */
	struct listen_conf *listen; /* at least one: default 127.0.0.1:2525 */
	size_t nlisten;
	struct cidr_list relay_networks; /* default 127.0.0.0/8, ::1/128 */
	char **local_domains;  /* lower-cased, no trailing dot */
	size_t nlocal_domains;
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
