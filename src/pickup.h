/*
 * pickup.h - the maildrop: local submissions from users who may not write
 * the spool (through petrel-postdrop, src/postdrop.c), taken into the
 * queue by the daemon. docs/internals/QUEUE.md, "The maildrop".
 *
 *   <spool_dir>/            0710 daemon user, petrel group (traversable by
 *                           the group, nothing more)
 *   <spool_dir>/maildrop/   1730 daemon user, petrel group: the setgid
 *                           postdrop creates files, cannot list or read
 *   <spool_dir>/corrupt/    0700: maildrop files the daemon refused
 *
 * A maildrop file is a complete spool file (spool_format.h) owned by the
 * submitting user. The daemon trusts nothing in it: it parses and checks
 * the envelope and the content, gives the message a fresh queue id and
 * commits it through the normal spool path; only once queue/<id> is
 * durable is the maildrop file removed.
 */
#ifndef PETREL_PICKUP_H
#define PETREL_PICKUP_H

#include <stddef.h>

struct config;
struct event_base;
struct queue;
struct spool;
struct pickup;

/*
 * Before privileges are dropped: create maildrop/ (mode 1730, owner the
 * configured user, group that user's primary group, or the group "petrel"
 * when no user is configured) and corrupt/, and make the spool directory
 * traversable by that group (0710). Does nothing to owners when not root.
 * Returns 0, or -1 with a reason in err.
 */
int pickup_prepare(const struct config *cfg, char *err, size_t errlen);

/*
 * After queue_load(): settle what a previous run left half done, take
 * what waits in maildrop/, then scan it every second. cfg, q and sp are
 * borrowed and must outlive the pickup (close it before the queue and the
 * spool). Returns NULL with a reason in err.
 */
struct pickup *pickup_open(struct event_base *base, const struct config *cfg,
                           struct queue *q, struct spool *sp, char *err,
                           size_t errlen);

/* Scan maildrop/ now (e.g. for a "pickup" control command). */
void pickup_scan(struct pickup *pk);

/*
 * Stop. Commits still in progress are not waited for: their maildrop
 * files stay claimed and the next start settles them (pickup_open).
 */
void pickup_close(struct pickup *pk);

#endif
