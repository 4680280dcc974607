/*
 * smtp_server.h - the inbound SMTP session (RFC 5321, 2920, 3030, 3207,
 * 6531, 9422). One struct session per accepted connection; the listener
 * hands over the socket, the spool calls back when a message is durable.
 */
#ifndef PETREL_SMTP_SERVER_H
#define PETREL_SMTP_SERVER_H

#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

struct event_base;
struct config;
struct listen_conf;
struct spool;
struct smtp_server;

/* A bound listener as the sessions see it. Lives as long as the server. */
struct smtp_listener {
	const struct listen_conf *conf;
	SSL_CTX *tls;               /* NULL when STARTTLS is off */
};

struct smtp_server *smtp_server_new(struct event_base *base,
                                    const struct config *cfg);
void smtp_server_set_spool(struct smtp_server *srv, struct spool *sp);
void smtp_server_free(struct smtp_server *srv);
/* SIGHUP: new relay, hostname and session-limit settings for new commands
 * (the old config must stay allocated: sessions point into it). */
void smtp_server_set_config(struct smtp_server *srv, const struct config *cfg);

/* Take a freshly accepted non-blocking socket. Closes it on failure. */
void smtp_server_accept(struct smtp_server *srv,
                        const struct smtp_listener *lst, int fd,
                        const struct sockaddr *peer, socklen_t peerlen);

/* spool_done_cb: a commit finished (token = session id). */
void smtp_server_spool_done(uint64_t token, const char *id, int err,
                            void *arg);

unsigned smtp_server_sessions(const struct smtp_server *srv);

/*
 * Shutting down: close idle sessions (421), and from now on close each
 * session as soon as its transaction is over. Returns the number of
 * sessions still in a transaction.
 */
unsigned smtp_server_drain(struct smtp_server *srv);

/* Called with the queue id of each message once it is durable (delivery). */
void smtp_server_on_queued(struct smtp_server *srv,
                           void (*fn)(void *arg, const char *id), void *arg);

#endif
