/*
 * control.h - the daemon's UNIX control socket (<spool_dir>/control.sock)
 * and its client side, used by `petrel queue`, `petrel flush`, ...,
 * `sendmail -q` and by `petrel sendmail` to announce a message it spooled.
 *
 * Protocol: the client connects, sends one request line (at most
 * CONTROL_LINE_MAX octets, "\n"-terminated): a command word and arguments
 * separated by single spaces. The daemon answers with text and closes the
 * connection. The first line of the answer is "OK" or "ERR <reason>";
 * the rest is the command's output for a person to read.
 *
 * Commands: queue, summary, status, flush [DOMAIN], deliver ID, hold ID,
 * release ID, remove ID, bounce ID, inject ID.
 *
 * Access: the socket is mode 0600 and owned by the daemon's user, in the
 * spool directory (mode 0700); the daemon also checks the peer's uid
 * (SO_PEERCRED): only root and the daemon's own user are served.
 */
#ifndef PETREL_CONTROL_H
#define PETREL_CONTROL_H

#include <stddef.h>

#include "buf.h"

#define CONTROL_SOCKET "control.sock"
#define CONTROL_LINE_MAX 1024

struct event_base;
struct control;
struct queue;
struct smtp_server;

/* Daemon side: listen on <spool_dir>/control.sock. NULL with err set. */
struct control *control_open(struct event_base *base, const char *spool_dir,
                             struct queue *q, struct smtp_server *srv,
                             char *err, size_t errlen);
void control_close(struct control *c);

/*
 * Client side: send one request and read the whole answer into out
 * (without the status line). Returns 0 for "OK"; 1 for "ERR" (the reason
 * in out); -1 when the daemon cannot be reached (reason in out, e.g.
 * "permission denied" or "daemon not running").
 */
int control_request(const char *spool_dir, const char *request,
                    struct buf *out);

#endif
