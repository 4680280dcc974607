/*
 * sendmail.h - the sendmail-compatible command line: `petrel sendmail`, and
 * the same program invoked as `sendmail` or `mailq` (symlinks installed by
 * `make install`). Reads a message on standard input and writes it to the
 * spool durably (spool_write_sync), then tells a running daemon to take it
 * at once; without a daemon, the message waits in the spool for the next
 * start. Also -bs (SMTP on standard input and output, relayed to the
 * daemon's first listener), -bp / mailq (list the queue) and -q (flush).
 * The options and exit codes are described at the top of sendmail.c.
 */
#ifndef PETREL_SENDMAIL_H
#define PETREL_SENDMAIL_H

#define SENDMAIL_MODE_SENDMAIL 0   /* sendmail, petrel sendmail */
#define SENDMAIL_MODE_MAILQ 1      /* mailq: same as sendmail -bp */

/*
 * Run the command. argv[0] is the program name (used in no message: they
 * all start with "sendmail:" or "mailq:"); options and recipients follow.
 * Returns the exit status (0, or a sysexits.h code).
 */
int sendmail_main(int argc, char **argv, int mode);

#endif
