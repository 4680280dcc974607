/*
 * control.c - the control socket: daemon side (accept, one request, answer,
 * close) and client side (control_request). See control.h for the protocol.
 *
 * Each accepted connection gets an io (io.c) and a 10 s timeout; it may send
 * at most CONTROL_LINE_MAX octets before its newline. The answer is built in
 * a buf by the queue's admin functions and written in one go; IO_LOWAT
 * closes the connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "control.h"
#include "io.h"
#include "log.h"
#include "queue.h"
#include "smtp_server.h"
#include "util.h"

struct control {
	struct event_base *base;
	struct queue *q;
	struct smtp_server *srv;
	int fd;
	struct event *ev;
	char path[PATH_MAX];
	uid_t uid;
};

struct cconn {
	struct control *ctl;
	struct io *io;
	int done;
};

static void
cconn_io(struct io *io, enum io_event ev, void *arg)
{
	struct cconn *cc = arg;
	struct buf *in = io_in(io);
	struct buf out = { 0 };
	char line[CONTROL_LINE_MAX + 1];
	const char *nl;
	size_t len;

	switch (ev) {
	case IO_DATAIN:
		if (cc->done)
			return;
		nl = memchr(buf_ptr(in), '\n', buf_len(in));
		if (nl == NULL) {
			if (buf_len(in) > CONTROL_LINE_MAX) {
				io_printf(io, "ERR request too long\n");
				cc->done = 1;
			}
			return;
		}
		len = (size_t)(nl - buf_ptr(in));
		if (len > CONTROL_LINE_MAX)
			len = CONTROL_LINE_MAX;
		memcpy(line, buf_ptr(in), len);
		line[len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[len - 1] = '\0';
		buf_reset(in);
		cc->done = 1;
		if (queue_admin(cc->ctl->q, cc->ctl->srv, line, &out) == 0)
			io_printf(io, "OK\n");
		io_write(io, buf_ptr(&out), buf_len(&out));
		buf_free(&out);
		return;
	case IO_LOWAT:
		if (cc->done) {
			io_free(io);
			free(cc);
		}
		return;
	case IO_TIMEOUT:
	case IO_DISCONNECTED:
	case IO_ERROR:
		io_free(io);
		free(cc);
		return;
	case IO_CONNECTED:
	case IO_TLSREADY:
		return;
	}
}

static void
control_accept(evutil_socket_t fd, short what, void *arg)
{
	struct control *ctl = arg;

	for (int i = 0; i < 16; i++) {
		struct ucred cr;
		socklen_t crlen = sizeof(cr);
		struct cconn *cc;
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c == -1)
			return;
		/* The daemon's own uid now: it may have dropped privileges
		 * after the socket was made. */
		ctl->uid = geteuid();
		if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == -1 ||
		    (cr.uid != 0 && cr.uid != ctl->uid)) {
			static const char msg[] = "ERR permission denied: only root "
			    "and the petrel user may use the control socket\n";
			log_info("control: refused uid %d",
			    crlen == sizeof(cr) ? (int)cr.uid : -1);
			if (write(c, msg, sizeof(msg) - 1) < 0) {
				/* nothing more to say */
			}
			close(c);
			continue;
		}
		if ((cc = calloc(1, sizeof(*cc))) == NULL) {
			close(c);
			continue;
		}
		cc->ctl = ctl;
		if ((cc->io = io_new(ctl->base, c, cconn_io, cc)) == NULL) {
			close(c);
			free(cc);
			continue;
		}
		io_set_timeout(cc->io, 10000);
	}
}

struct control *
control_open(struct event_base *base, const char *spool_dir, struct queue *q,
             struct smtp_server *srv, char *err, size_t errlen)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	struct sockaddr_un sun;

	if (ctl == NULL) {
		util_errf(err, errlen, "out of memory");
		return NULL;
	}
	ctl->base = base;
	ctl->q = q;
	ctl->srv = srv;
	ctl->uid = geteuid();
	ctl->fd = -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if ((size_t)snprintf(ctl->path, sizeof(ctl->path), "%s/%s", spool_dir,
	    CONTROL_SOCKET) >= sizeof(sun.sun_path)) {
		util_errf(err, errlen, "control socket path too long: %s/%s",
		    spool_dir, CONTROL_SOCKET);
		goto fail;
	}
	memcpy(sun.sun_path, ctl->path, strlen(ctl->path) + 1);
	ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ctl->fd == -1) {
		util_errf(err, errlen, "control socket: %s", strerror(errno));
		goto fail;
	}
	unlink(ctl->path); /* a previous daemon's; the pid file guards */
	if (bind(ctl->fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    chmod(ctl->path, 0600) == -1 || listen(ctl->fd, 64) == -1) {
		util_errf(err, errlen, "%s: %s", ctl->path, strerror(errno));
		goto fail;
	}
	ctl->ev = event_new(base, ctl->fd, EV_READ | EV_PERSIST, control_accept,
	    ctl);
	if (ctl->ev == NULL || event_add(ctl->ev, NULL) == -1) {
		util_errf(err, errlen, "event_new failed");
		goto fail;
	}
	return ctl;
fail:
	control_close(ctl);
	return NULL;
}

void
control_close(struct control *ctl)
{
	if (ctl == NULL)
		return;
	if (ctl->ev)
		event_free(ctl->ev);
	if (ctl->fd != -1) {
		close(ctl->fd);
		unlink(ctl->path);
	}
	free(ctl);
}

int
control_request(const char *spool_dir, const char *request, struct buf *out)
{
	struct sockaddr_un sun;
	char path[PATH_MAX], tmp[4096];
	size_t skip = 0;
	ssize_t n;
	int fd, rc;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", spool_dir,
	    CONTROL_SOCKET) >= sizeof(sun.sun_path)) {
		buf_printf(out, "control socket path too long\n");
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		buf_printf(out, "socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;
		if (e == EACCES || e == EPERM)
			buf_printf(out, "permission denied: only root and the "
			    "petrel user may talk to the daemon (%s)\n", path);
		else if (e == ENOENT || e == ECONNREFUSED)
			buf_printf(out, "the daemon is not running (no %s)\n",
			    path);
		else
			buf_printf(out, "%s: %s\n", path, strerror(e));
		close(fd);
		return -1;
	}
	signal(SIGPIPE, SIG_IGN); /* a refusing daemon may close at once */
	if (dprintf(fd, "%s\n", request) < 0 && errno != EPIPE) {
		buf_printf(out, "%s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		buf_append(out, tmp, (size_t)n);
	close(fd);
	if (buf_len(out) >= 3 && memcmp(buf_ptr(out), "OK\n", 3) == 0) {
		skip = 3;
		rc = 0;
	} else if (buf_len(out) >= 4 && memcmp(buf_ptr(out), "ERR ", 4) == 0) {
		skip = 4;
		rc = 1;
	} else {
		buf_reset(out);
		buf_printf(out, "no answer from the daemon\n");
		return -1;
	}
	buf_consume(out, skip);
	return rc;
}
