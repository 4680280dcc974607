/*
 * spool.h - the durable message store (see docs/internals/QUEUE.md).
 *
 * Layout under spool_dir:
 *   queue/<id>   one file per accepted message (spool_format.h)
 *   journal/<id> per-recipient outcomes of that message, appended
 *   tmp/<id>     being written; never read back; removed at start
 *   tls/         the self-signed certificate
 *
 * A message being received is a struct spool_msg: content is collected in
 * memory and, past SPOOL_SPILL bytes, streamed to tmp/<id> (plain write(2)
 * on the loop thread: page cache, no fsync). spool_msg_commit() hands it to
 * a worker thread, which writes the rest, the envelope and the trailer,
 * fdatasync()s the file, renames it into queue/ (never replacing a file),
 * and fsync()s queue/ once for every batch of commits it took together.
 * Only then does the event loop get the completion callback, so the server
 * says 250 only for a message that is on disk.
 *
 * Completions are matched by a token (the session id), never by a pointer:
 * a session that disappeared meanwhile is simply not found.
 */
#ifndef PETREL_SPOOL_H
#define PETREL_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "spool_format.h"

struct event_base;
struct spool;
struct spool_msg;

#define SPOOL_SPILL (128 * 1024)

/* Called on the event loop; err is 0 or an errno value. */
typedef void (*spool_done_cb)(uint64_t token, const char *id, int err,
                              void *arg);

/*
 * Create the directories (mode 0700), remove leftovers in tmp/, start the
 * worker threads. Returns NULL with a reason in err.
 */
struct spool *spool_open(struct event_base *base, const char *dir,
                         unsigned workers, spool_done_cb cb, void *cbarg,
                         char *err, size_t errlen);
/* Finish queued commits, stop the workers, free. */
void spool_close(struct spool *sp);

const char *spool_dir(const struct spool *sp);

/* Start a message with the given queue id. NULL on ENOMEM. */
struct spool_msg *spool_msg_new(struct spool *sp, const char *id);
/* Append content. Returns 0, or -1 with errno (e.g. ENOSPC); after an
 * error the message can only be aborted. */
int spool_msg_write(struct spool_msg *m, const void *p, size_t n);
uint64_t spool_msg_size(const struct spool_msg *m);
/* Throw the message away (removes its temporary file). */
void spool_msg_abort(struct spool_msg *m);
/*
 * Make the message durable in the background. Takes ownership of m (and of
 * nothing in env, which is serialized before return). The callback fires
 * exactly once with token, unless the spool is closed first. Returns 0, or
 * -1 (errno) if the envelope could not be serialized; m is freed either way.
 */
int spool_msg_commit(struct spool_msg *m, const struct spool_env *env,
                     uint64_t token);

/*
 * Append one line to journal/<id> (the per-recipient journal, see
 * docs/internals/QUEUE.md), fdatasync it (and the directory when the file
 * is new), then call cb(token, id, err, arg) on the loop. line must end
 * with '\n'. Returns 0, or -1 (ENOMEM).
 */
int spool_journal(struct spool *sp, const char *id, const char *line,
                  spool_done_cb cb, void *arg, uint64_t token);

/*
 * Remove queue/<id> and journal/<id> (a finished message), then call cb
 * (may be NULL). Returns 0 or -1.
 */
int spool_remove(struct spool *sp, const char *id, spool_done_cb cb,
                 void *arg, uint64_t token);

/*
 * Like spool_msg_commit, but the completion goes to cb/arg instead of the
 * spool's callback (for messages Petrel writes itself, e.g. bounces).
 */
int spool_msg_commit_cb(struct spool_msg *m, const struct spool_env *env,
                        spool_done_cb cb, void *arg, uint64_t token);

/*
 * Outside the daemon (petrel sendmail): write a complete message to the
 * spool synchronously with the same guarantees (tmp file, fdatasync,
 * rename without replacing, directory fsync). content: the message as it
 * will be delivered (CRLF lines). Returns 0, or -1 with a reason in err and
 * nothing left behind.
 */
int spool_write_sync(const char *spool_dir, const struct spool_env *env,
                     const char *content, size_t len, char *err,
                     size_t errlen);

/* Commits handed to workers and not yet completed (for tests / status). */
unsigned spool_pending(const struct spool *sp);

/*
 * Test hook: when the environment variable PETREL_FAULT_SPOOL is set to
 * "write" or "fsync" at spool_open(), every commit fails at that step with
 * EIO, as a broken disk would. Used by the fault tests only.
 */

#endif
