/*
 * io.h - one connection's socket, buffers, TLS and inactivity timer.
 *
 * Sessions never call read(2), SSL_read() or event_add() themselves: io
 * reads into its input buffer and calls the session back with one event code.
 * The session consumes what it understood from io_in() and queues replies
 * with io_write()/io_printf(); io writes them out once the callback returns,
 * so all replies produced while handling one batch of input leave in one
 * write.
 *
 * Freeing: io_free() may be called from inside the callback; the io is then
 * only marked and freed when the callback returns (frame guard), so neither
 * side touches freed memory.
 *
 * STARTTLS: io_starttls() stops reading plaintext at once, drops whatever
 * plaintext input is buffered (CVE-2011-0411), lets the pending output (the
 * 220 reply) drain, then runs the handshake and reports IO_TLSREADY or
 * IO_ERROR.
 */
#ifndef PETREL_IO_H
#define PETREL_IO_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "buf.h"

struct event_base;
struct io;

enum io_event {
	IO_CONNECTED,     /* client side: the connection is established */
	IO_DATAIN,        /* new input in io_in() */
	IO_LOWAT,         /* the output buffer has drained */
	IO_TLSREADY,      /* TLS handshake finished */
	IO_TIMEOUT,       /* no input for the timeout set with io_set_timeout */
	IO_DISCONNECTED,  /* peer closed (EOF, or TLS close_notify) */
	IO_ERROR,         /* socket or TLS error; io_error() says which */
};

typedef void (*io_cb)(struct io *io, enum io_event ev, void *arg);

/* Take ownership of a connected non-blocking fd. Reading starts at once. */
struct io *io_new(struct event_base *base, int fd, io_cb cb, void *arg);
/*
 * Client side: start a non-blocking connect to sa. IO_CONNECTED follows when
 * it succeeds, IO_ERROR when it fails; the io timeout (timeout_ms) bounds
 * the attempt. Returns NULL (errno set) when the socket cannot be made.
 */
struct io *io_connect(struct event_base *base, const struct sockaddr *sa,
                      socklen_t salen, unsigned timeout_ms, io_cb cb,
                      void *arg);

/* Close the fd, free buffers and TLS state. Safe inside the callback. */
void io_free(struct io *io);

/* Input bytes not yet consumed by the session. */
struct buf *io_in(struct io *io);
size_t io_outlen(const struct io *io);

int io_write(struct io *io, const void *p, size_t n);
int io_printf(struct io *io, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Inactivity timeout in milliseconds (0 = none); restarted by each read. */
void io_set_timeout(struct io *io, unsigned ms);

/* Stop / restart reading (input stays buffered). */
void io_pause(struct io *io);
void io_resume(struct io *io);

/*
 * Read whatever the socket (or TLS layer) already holds into the input
 * buffer without waiting and without a callback. Returns the number of
 * input bytes now buffered. Used to detect a client that sent ahead.
 */
size_t io_peek(struct io *io);

/* Server-side STARTTLS, see above. Returns 0 or -1. */
int io_starttls(struct io *io, SSL_CTX *ctx);

/*
 * Client-side STARTTLS, after the server's 220: drops buffered plaintext
 * input (never taken as a reply), stops reading plaintext, then handshakes
 * with SNI servername and, when resume is not NULL, offers that session
 * (the io takes a reference). New sessions go to the TLS session cache under
 * cache_key (tls_cache_put). verify_host: when not NULL, the certificate must
 * match that name (the context decides whether it is checked at all).
 * Returns 0 or -1.
 */
int io_starttls_client(struct io *io, SSL_CTX *ctx, const char *servername,
                       const char *cache_key, const char *verify_host,
                       SSL_SESSION *resume);
/* The SSL object once TLS is up (for session caching, verification). */
SSL *io_ssl(const struct io *io);
/* 1 if the TLS handshake resumed a session. */
int io_tls_resumed(const struct io *io);

/* "TLS1.3:TLS_AES_256_GCM_SHA384:256" once TLS is up, else NULL. */
const char *io_tls_info(const struct io *io);
int io_tls_active(const struct io *io);

/* Reason for the last IO_ERROR. */
const char *io_error(const struct io *io);

int io_fd(const struct io *io);

/* Upper bound on buffered input; reading pauses above it. */
#define IO_INPUT_MAX (256 * 1024)

#endif
