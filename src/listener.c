/*
 * listener.c - listening sockets. Each accept readiness event accepts up to
 * ACCEPT_BATCH connections, sets them non-blocking with TCP_NODELAY (replies
 * are written once per batch, so Nagle would only add delay), and hands them
 * to smtp_server_accept(), which enforces max_sessions.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "smtp_server.h"
#include "tls.h"

#define ACCEPT_BATCH 64

struct listener {
	struct smtp_listener sl;
	struct smtp_server *srv;
	int fd;
	struct event *ev;
};

struct listeners {
	struct listener *v;
	size_t n;
};

static void
listener_on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int one = 1;
		int c = accept4(fd, (struct sockaddr *)&ss, &sl,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c == -1) {
			if (errno == EMFILE || errno == ENFILE)
				log_info("listener %s: accept: %s",
				    l->sl.conf->name, strerror(errno));
			return;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		smtp_server_accept(l->srv, &l->sl, c, (struct sockaddr *)&ss, sl);
	}
}

static int
listener_bind(struct listener *l, char *err, size_t errlen)
{
	const struct listen_conf *lc = l->sl.conf;
	int one = 1;

	l->fd = socket(lc->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (l->fd == -1) {
		snprintf(err, errlen, "[listen %s] %s: socket: %s", lc->name,
		    lc->address, strerror(errno));
		return -1;
	}
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lc->sa.ss_family == AF_INET6)
		setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(l->fd, (const struct sockaddr *)&lc->sa, lc->salen) == -1 ||
	    listen(l->fd, 1024) == -1) {
		snprintf(err, errlen, "[listen %s] %s: %s", lc->name,
		    lc->address, strerror(errno));
		return -1;
	}
	return 0;
}

struct listeners *
listeners_open(struct event_base *base, const struct config *cfg,
               struct smtp_server *srv, char *err, size_t errlen)
{
	struct listeners *ls = calloc(1, sizeof(*ls));
	char dir[4096], cert[4200], key[4200];

	if (ls == NULL || (ls->v = calloc(cfg->nlisten, sizeof(*ls->v))) == NULL) {
		free(ls);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(dir, sizeof(dir), "%s/tls", cfg->spool_dir);
	for (size_t i = 0; i < cfg->nlisten; i++) {
		const struct listen_conf *lc = &cfg->listen[i];
		struct listener *l = &ls->v[i];
		char terr[512];

		l->fd = -1;
		l->sl.conf = lc;
		l->srv = srv;
		ls->n++;
		if (lc->starttls) {
			const char *c = lc->tls_cert, *k = lc->tls_key;
			if (c == NULL) {
				if (tls_ensure_selfsigned(dir, cfg->hostname, terr,
				    sizeof(terr)) == -1) {
					snprintf(err, errlen, "[listen %s] self-signed "
					    "certificate: %s", lc->name, terr);
					goto fail;
				}
				snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
				snprintf(key, sizeof(key), "%s/key.pem", dir);
				c = cert;
				k = key;
			}
			l->sl.tls = tls_server_ctx(c, k, terr, sizeof(terr));
			if (l->sl.tls == NULL) {
				snprintf(err, errlen, "[listen %s] TLS: %s",
				    lc->name, terr);
				goto fail;
			}
		}
		if (listener_bind(l, err, errlen) == -1)
			goto fail;
		l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST,
		    listener_on_accept, l);
		if (l->ev == NULL || event_add(l->ev, NULL) == -1) {
			snprintf(err, errlen, "event_new failed");
			goto fail;
		}
		log_info("listening on %s (%s)%s", lc->address, lc->name,
		    l->sl.tls ? " with STARTTLS" : "");
	}
	return ls;
fail:
	listeners_close(ls);
	return NULL;
}

void
listeners_close(struct listeners *ls)
{
	if (ls == NULL)
		return;
	for (size_t i = 0; i < ls->n; i++) {
		struct listener *l = &ls->v[i];
		if (l->ev)
			event_free(l->ev);
		if (l->fd != -1)
			close(l->fd);
		/* SSL_CTX is reference counted: live sessions keep theirs. */
		SSL_CTX_free(l->sl.tls);
	}
	free(ls->v);
	free(ls);
}
