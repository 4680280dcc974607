/*
 * log.h - the main log: one line per event, "YYYY-MM-DD HH:MM:SS.mmm " then
 * the text. Lines of a session start with its id ("s12") or, once a message
 * has one, its queue id, so one grep finds a whole conversation.
 * Called from the event loop thread only.
 */
#ifndef PETREL_LOG_H
#define PETREL_LOG_H

/* "-" = standard output. Returns 0 or -1 (errno set). */
int log_open(const char *path);
/* Reopen the file (after rotation). */
int log_reopen(void);
void log_close(void);

/* One log line; a newline is added. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
