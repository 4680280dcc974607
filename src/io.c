/*
 * io.c - connection I/O: non-blocking socket, input/output buffers, TLS via
 * OpenSSL called directly on the fd, inactivity timer, and the callback into
 * the session (see io.h for the contract).
 *
 * TLS states:
 *
 *   TLS_NONE --io_starttls()--> TLS_PENDING --output drained--> TLS_HANDSHAKE
 *                                (no reads)    (tls_begin)          |
 *                                                 SSL_do_handshake ok |
 *                                                                     v
 *                                                               TLS_ACTIVE
 *
 * Event interest is recomputed in one place, io_update(), from the state:
 * reading while not paused and below IO_INPUT_MAX (or whatever the handshake
 * or a TLS read/write wants), writing while output is queued.
 *
 * Frame guard: every callback into the session goes through io_dispatch(),
 * which counts the depth; io_free() inside a callback only marks the io dead
 * and the outermost io_dispatch() frees it. io_dispatch() returns 1 when the
 * io is gone, and every caller returns at once in that case.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "io.h"
#include "tls.h"

enum tls_state { TLS_NONE, TLS_PENDING, TLS_HANDSHAKE, TLS_ACTIVE };

struct io {
	int fd;
	struct event_base *base;
	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_timer;
	int reading;        /* ev_read added */
	int writing;        /* ev_write added */
	struct buf in;
	struct buf out;
	io_cb cb;
	void *arg;
	unsigned timeout_ms;
	int paused;
	int eof;
	int depth;          /* callback frames in progress */
	int dead;
	enum tls_state tls;
	SSL_CTX *tls_ctx;
	SSL *ssl;
	int hs_want_write;  /* handshake wants the socket writable */
	int rd_want_write;  /* SSL_read returned WANT_WRITE */
	int wr_want_read;   /* SSL_write returned WANT_READ */
	int connecting;     /* client: connect() in progress */
	int client;         /* client side TLS */
	char *sni;
	char *cache_key;
	char *verify_host;
	SSL_SESSION *resume;
	char tls_info[128];
	char err[256];
};

static void io_on_read(evutil_socket_t, short, void *);
static void io_on_write(evutil_socket_t, short, void *);
static void io_on_timer(evutil_socket_t, short, void *);
static int io_after(struct io *io);

static void
io_real_free(struct io *io)
{
	event_free(io->ev_read);
	event_free(io->ev_write);
	event_free(io->ev_timer);
	if (io->ssl) {
		if (io->tls == TLS_ACTIVE)
			SSL_shutdown(io->ssl); /* best effort close_notify */
		SSL_free(io->ssl);
	}
	close(io->fd);
	free(io->sni);
	free(io->cache_key);
	free(io->verify_host);
	if (io->resume)
		SSL_SESSION_free(io->resume);
	buf_free(&io->in);
	buf_free(&io->out);
	free(io);
}

/* Call the session. Returns 1 if the io was freed meanwhile. */
static int
io_dispatch(struct io *io, enum io_event ev)
{
	io->depth++;
	io->cb(io, ev, io->arg);
	io->depth--;
	if (io->dead) {
		if (io->depth == 0)
			io_real_free(io);
		return 1;
	}
	return 0;
}

/* Idle connections keep no large buffers (memory per idle session). */
static void
io_trim(struct io *io)
{
	if (buf_len(&io->in) == 0 && io->in.cap > 4096)
		buf_free(&io->in);
	if (buf_len(&io->out) == 0 && io->out.cap > 4096)
		buf_free(&io->out);
}

static void
io_update(struct io *io)
{
	int want_read, want_write;

	if (io->dead)
		return;
	io_trim(io);
	if (io->connecting) {
		want_read = 0;
		want_write = 1;
	} else if (io->tls == TLS_HANDSHAKE) {
		want_read = !io->hs_want_write;
		want_write = io->hs_want_write;
	} else {
		want_read = !io->eof && !io->paused && io->tls != TLS_PENDING &&
		    buf_len(&io->in) < IO_INPUT_MAX;
		want_write = buf_len(&io->out) > 0 && !io->wr_want_read;
		if (io->rd_want_write)
			want_write = 1;
		if (io->wr_want_read && !io->eof)
			want_read = 1;
	}
	if (want_read && !io->reading) {
		event_add(io->ev_read, NULL);
		io->reading = 1;
	} else if (!want_read && io->reading) {
		event_del(io->ev_read);
		io->reading = 0;
	}
	if (want_write && !io->writing) {
		event_add(io->ev_write, NULL);
		io->writing = 1;
	} else if (!want_write && io->writing) {
		event_del(io->ev_write);
		io->writing = 0;
	}
}

static void
io_set_ssl_error(struct io *io, const char *what)
{
	unsigned long e = ERR_get_error();
	char tmp[200];

	if (e) {
		ERR_error_string_n(e, tmp, sizeof(tmp));
		snprintf(io->err, sizeof(io->err), "%s: %s", what, tmp);
	} else if (errno) {
		snprintf(io->err, sizeof(io->err), "%s: %s", what, strerror(errno));
	} else {
		snprintf(io->err, sizeof(io->err), "%s: unexpected EOF", what);
	}
	ERR_clear_error();
}

/*
 * Read what is available into io->in. Returns the number of bytes read
 * (>= 0), or -1 on error (io->err set). Sets io->eof on EOF.
 */
static ssize_t
io_read_some(struct io *io)
{
	ssize_t total = 0;

	while (!io->eof && buf_len(&io->in) < IO_INPUT_MAX) {
		ssize_t n;

		if (buf_reserve(&io->in, 16384) == -1) {
			snprintf(io->err, sizeof(io->err), "out of memory");
			return -1;
		}
		if (io->tls == TLS_ACTIVE) {
			int r;

			io->rd_want_write = 0;
			ERR_clear_error();
			r = SSL_read(io->ssl, buf_tail(&io->in),
			    (int)buf_room(&io->in));
			if (r > 0) {
				n = r;
			} else {
				int e = SSL_get_error(io->ssl, r);
				if (e == SSL_ERROR_WANT_READ)
					break;
				if (e == SSL_ERROR_WANT_WRITE) {
					io->rd_want_write = 1;
					break;
				}
				if (e == SSL_ERROR_ZERO_RETURN ||
				    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 &&
				     errno == 0)) {
					io->eof = 1;
					break;
				}
				if (e == SSL_ERROR_SSL &&
				    ERR_GET_REASON(ERR_peek_error()) ==
				        SSL_R_UNEXPECTED_EOF_WHILE_READING) {
					/* closed without close_notify */
					ERR_clear_error();
					io->eof = 1;
					break;
				}
				io_set_ssl_error(io, "TLS read");
				return -1;
			}
		} else {
			n = read(io->fd, buf_tail(&io->in), buf_room(&io->in));
			if (n == 0) {
				io->eof = 1;
				break;
			}
			if (n == -1) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				snprintf(io->err, sizeof(io->err), "read: %s",
				    strerror(errno));
				return -1;
			}
		}
		buf_commit(&io->in, (size_t)n);
		total += n;
	}
	return total;
}

/* Write queued output. Returns 0 or -1 (io->err set). */
static int
io_write_some(struct io *io)
{
	while (buf_len(&io->out) > 0) {
		ssize_t n;

		if (io->tls == TLS_ACTIVE) {
			int r;

			io->wr_want_read = 0;
			ERR_clear_error();
			r = SSL_write(io->ssl, buf_ptr(&io->out),
			    (int)(buf_len(&io->out) > (1 << 30) ? (1 << 30)
			                                       : buf_len(&io->out)));
			if (r > 0) {
				n = r;
			} else {
				int e = SSL_get_error(io->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE)
					return 0;
				if (e == SSL_ERROR_WANT_READ) {
					io->wr_want_read = 1;
					return 0;
				}
				io_set_ssl_error(io, "TLS write");
				return -1;
			}
		} else {
			n = write(io->fd, buf_ptr(&io->out), buf_len(&io->out));
			if (n == -1) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return 0;
				snprintf(io->err, sizeof(io->err), "write: %s",
				    strerror(errno));
				return -1;
			}
		}
		buf_consume(&io->out, (size_t)n);
	}
	return 0;
}

static void
io_fill_tls_info(struct io *io)
{
	const char *v = SSL_get_version(io->ssl);
	const SSL_CIPHER *c = SSL_get_current_cipher(io->ssl);
	char ver[32];
	size_t j = 0;

	/* "TLSv1.3" -> "TLS1.3", as Exim writes it. */
	for (size_t i = 0; v[i] && j + 1 < sizeof(ver); i++)
		if (v[i] != 'v')
			ver[j++] = v[i];
	ver[j] = '\0';
	snprintf(io->tls_info, sizeof(io->tls_info), "%s:%s:%d", ver,
	    c ? SSL_CIPHER_get_name(c) : "unknown",
	    c ? SSL_CIPHER_get_bits(c, NULL) : 0);
}

/* Drive the handshake. Returns 1 if the io was freed. */
static int
io_handshake(struct io *io)
{
	int r, e;

	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(io->ssl);
	if (r == 1) {
		io->tls = TLS_ACTIVE;
		io->hs_want_write = 0;
		io_fill_tls_info(io);
		if (io_dispatch(io, IO_TLSREADY))
			return 1;
		/* Records may already sit inside OpenSSL: look at once. */
		event_active(io->ev_read, EV_READ, 0);
		return io_after(io);
	}
	e = SSL_get_error(io->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		io->hs_want_write = 0;
	} else if (e == SSL_ERROR_WANT_WRITE) {
		io->hs_want_write = 1;
	} else {
		io_set_ssl_error(io, "TLS handshake");
		return io_dispatch(io, IO_ERROR);
	}
	io_update(io);
	return 0;
}

static int
io_tls_begin(struct io *io)
{
	io->ssl = SSL_new(io->tls_ctx);
	if (io->ssl == NULL || SSL_set_fd(io->ssl, io->fd) != 1) {
		io_set_ssl_error(io, "TLS setup");
		return io_dispatch(io, IO_ERROR);
	}
	if (io->client) {
		if (io->sni)
			SSL_set_tlsext_host_name(io->ssl, io->sni);
		if (io->resume)
			SSL_set_session(io->ssl, io->resume);
		SSL_set_app_data(io->ssl, io->cache_key);
		if (io->verify_host)
			tls_client_verify_host(io->ssl, io->verify_host);
		SSL_set_connect_state(io->ssl);
	} else {
		SSL_set_accept_state(io->ssl);
	}
	io->tls = TLS_HANDSHAKE;
	return io_handshake(io);
}

/*
 * After a callback: flush output, report drain, start a pending handshake,
 * recompute interest. Returns 1 if the io was freed.
 */
static int
io_after(struct io *io)
{
	for (;;) {
		if (io->tls == TLS_HANDSHAKE)
			break;
		if (buf_len(&io->out) > 0) {
			if (io_write_some(io) == -1)
				return io_dispatch(io, IO_ERROR);
			if (buf_len(&io->out) > 0)
				break;
			if (io->tls == TLS_PENDING)
				return io_tls_begin(io);
			if (io_dispatch(io, IO_LOWAT))
				return 1;
			continue; /* LOWAT may have queued more */
		}
		if (io->tls == TLS_PENDING)
			return io_tls_begin(io);
		break;
	}
	io_update(io);
	return 0;
}

static void
io_arm_timer(struct io *io)
{
	struct timeval tv;

	if (io->timeout_ms == 0)
		return;
	tv.tv_sec = io->timeout_ms / 1000;
	tv.tv_usec = (io->timeout_ms % 1000) * 1000;
	evtimer_add(io->ev_timer, &tv);
}

static void
io_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;
	ssize_t n;

	if (io->tls == TLS_HANDSHAKE) {
		io_handshake(io);
		return;
	}
	if (io->tls == TLS_PENDING)
		return;
	if (io->wr_want_read) {
		io->wr_want_read = 0;
		if (io_after(io))
			return;
	}
	if (io->paused && !io->rd_want_write) {
		io_update(io);
		return;
	}
	n = io_read_some(io);
	if (n == -1) {
		io_dispatch(io, IO_ERROR);
		return;
	}
	if (n > 0) {
		io_arm_timer(io);
		if (io_dispatch(io, IO_DATAIN))
			return;
	}
	if (io->eof) {
		/* Replies to what came before the EOF leave first: a client
		 * may half-close after QUIT and still read the 221. */
		if (io_after(io))
			return;
		if (io_dispatch(io, IO_DISCONNECTED))
			return;
	}
	io_after(io);
}

static void
io_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;

	if (io->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		io->connecting = 0;
		if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			snprintf(io->err, sizeof(io->err), "connect: %s",
			    strerror(err));
			io_dispatch(io, IO_ERROR);
			return;
		}
		io_arm_timer(io);
		if (io_dispatch(io, IO_CONNECTED))
			return;
		io_after(io);
		return;
	}
	if (io->tls == TLS_HANDSHAKE) {
		io_handshake(io);
		return;
	}
	if (io->rd_want_write) {
		io->rd_want_write = 0;
		io_on_read(fd, EV_READ, arg);
		return;
	}
	io_after(io);
}

static void
io_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;

	if (io_dispatch(io, IO_TIMEOUT))
		return;
	io_after(io);
}

struct io *
io_new(struct event_base *base, int fd, io_cb cb, void *arg)
{
	struct io *io = calloc(1, sizeof(*io));

	if (io == NULL)
		return NULL;
	io->fd = fd;
	io->base = base;
	io->cb = cb;
	io->arg = arg;
	io->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, io_on_read, io);
	io->ev_write = event_new(base, fd, EV_WRITE | EV_PERSIST, io_on_write, io);
	io->ev_timer = evtimer_new(base, io_on_timer, io);
	if (!io->ev_read || !io->ev_write || !io->ev_timer) {
		if (io->ev_read)
			event_free(io->ev_read);
		if (io->ev_write)
			event_free(io->ev_write);
		if (io->ev_timer)
			event_free(io->ev_timer);
		free(io);
		return NULL;
	}
	io_update(io);
	return io;
}

struct io *
io_connect(struct event_base *base, const struct sockaddr *sa, socklen_t salen,
           unsigned timeout_ms, io_cb cb, void *arg)
{
	struct io *io;
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);

	if (fd == -1)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, sa, salen) == -1 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	if ((io = io_new(base, fd, cb, arg)) == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	io->connecting = 1;
	io->timeout_ms = timeout_ms;
	io_arm_timer(io);
	io_update(io);
	return io;
}

void
io_free(struct io *io)
{
	if (io == NULL || io->dead)
		return;
	io->dead = 1;
	if (io->depth == 0)
		io_real_free(io);
	else {
		/* Stop all events now; memory goes when the frame unwinds. */
		event_del(io->ev_read);
		event_del(io->ev_write);
		event_del(io->ev_timer);
	}
}

struct buf *
io_in(struct io *io)
{
	return &io->in;
}

size_t
io_outlen(const struct io *io)
{
	return buf_len(&io->out);
}

int
io_write(struct io *io, const void *p, size_t n)
{
	if (buf_append(&io->out, p, n) == -1)
		return -1;
	if (io->depth == 0)
		io_update(io); /* outside a callback: let the loop write */
	return 0;
}

int
io_printf(struct io *io, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = buf_vprintf(&io->out, fmt, ap);
	va_end(ap);
	if (r == 0 && io->depth == 0)
		io_update(io);
	return r;
}

void
io_set_timeout(struct io *io, unsigned ms)
{
	io->timeout_ms = ms;
	if (ms == 0)
		evtimer_del(io->ev_timer);
	else
		io_arm_timer(io);
}

void
io_pause(struct io *io)
{
	io->paused = 1;
	if (io->depth == 0)
		io_update(io);
}

void
io_resume(struct io *io)
{
	io->paused = 0;
	if (io->tls == TLS_ACTIVE && SSL_pending(io->ssl) > 0)
		event_active(io->ev_read, EV_READ, 0);
	if (io->depth == 0)
		io_update(io);
}

size_t
io_peek(struct io *io)
{
	if (io->tls == TLS_NONE || io->tls == TLS_ACTIVE)
		(void)io_read_some(io); /* errors surface on the next event */
	return buf_len(&io->in);
}

/*
 * Outside an io callback (depth 0: a timer, a spool completion), start the
 * handshake from the next turn of the loop rather than here: io_after()
 * may report an error or the drain to the owner, which may free itself
 * while its caller is still running (a session answering STARTTLS from
 * its spool completion). Inside a callback, io_after() runs on return.
 */
static void
io_begin_soon(struct io *io)
{
	if (io->depth == 0)
		event_active(io->ev_write, EV_WRITE, 0);
}

int
io_starttls(struct io *io, SSL_CTX *ctx)
{
	if (io->tls != TLS_NONE || ctx == NULL)
		return -1;
	buf_reset(&io->in); /* never execute plaintext sent after STARTTLS */
	io->tls_ctx = ctx;
	io->tls = TLS_PENDING;
	io_begin_soon(io);
	return 0;
}

int
io_starttls_client(struct io *io, SSL_CTX *ctx, const char *servername,
                   const char *cache_key, const char *verify_host,
                   SSL_SESSION *resume)
{
	if (io->tls != TLS_NONE || ctx == NULL)
		return -1;
	buf_reset(&io->in); /* plaintext before the handshake is never a reply */
	io->client = 1;
	free(io->sni);
	io->sni = servername ? strdup(servername) : NULL;
	free(io->cache_key);
	io->cache_key = cache_key ? strdup(cache_key) : NULL;
	free(io->verify_host);
	io->verify_host = verify_host ? strdup(verify_host) : NULL;
	if (resume && SSL_SESSION_up_ref(resume) == 1)
		io->resume = resume;
	io->tls_ctx = ctx;
	io->tls = TLS_PENDING;
	io_begin_soon(io);
	return 0;
}

SSL *
io_ssl(const struct io *io)
{
	return io->tls == TLS_ACTIVE ? io->ssl : NULL;
}

int
io_tls_resumed(const struct io *io)
{
	return io->tls == TLS_ACTIVE && SSL_session_reused(io->ssl);
}

const char *
io_tls_info(const struct io *io)
{
	return io->tls == TLS_ACTIVE ? io->tls_info : NULL;
}

int
io_tls_active(const struct io *io)
{
	return io->tls == TLS_ACTIVE;
}

const char *
io_error(const struct io *io)
{
	return io->err[0] ? io->err : "unknown error";
}

int
io_fd(const struct io *io)
{
	return io->fd;
}
