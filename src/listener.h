/*
 * listener.h - the bound SMTP listening sockets, one per [listen NAME]
 * section, each with its own TLS context; accepted sockets go to the
 * SMTP server.
 */
#ifndef PETREL_LISTENER_H
#define PETREL_LISTENER_H

#include <stddef.h>

struct event_base;
struct config;
struct smtp_server;
struct listeners;

/*
 * Bind every listener of cfg and create its TLS context (self-signed
 * certificate from <spool>/tls when none is configured). Accepting starts
 * with the event loop. Returns NULL with a reason in err.
 */
struct listeners *listeners_open(struct event_base *base,
                                 const struct config *cfg,
                                 struct smtp_server *srv, char *err,
                                 size_t errlen);
/* Stop accepting (sessions already accepted go on). */
void listeners_close(struct listeners *ls);

#endif
