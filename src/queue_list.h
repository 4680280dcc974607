/*
 * queue_list.h - read the spool directory without the daemon: used by
 * `petrel queue` to list messages, and by tests.
 */
#ifndef PETREL_QUEUE_LIST_H
#define PETREL_QUEUE_LIST_H

#include <stdio.h>

#include "spool_format.h"

/*
 * Read queue/<id> under spool_dir: trailer, then envelope. On success fills
 * *env (free with spool_env_free) and *file_size and returns 0; on error
 * returns -1 with a reason in err.
 */
int queue_read_envelope(const char *spool_dir, const char *id,
                        struct spool_env *env, uint64_t *file_size,
                        char *err, size_t errlen);

/*
 * Print the queue, oldest first: "<id> <age> <size> <<sender>>" then one
 * line per recipient indented by 8 spaces; "Mail queue is empty" when
 * empty. Unreadable files are reported on stderr and counted. Returns the
 * number of unreadable files (0 = all fine), or -1 if the directory cannot
 * be read.
 */
int queue_list(const char *spool_dir, FILE *out);

#endif
