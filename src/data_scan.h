/*
 * data_scan.h - the message content scanner, a pure byte-level state machine.
 *
 * DATA mode (RFC 5321 4.1.1.4, 4.5.2): finds the end of data, which is only
 * ever CR LF "." CR LF (the first CR LF being the end of the last line, or the
 * start of the content), removes dot-stuffing, and flags bare CR, bare LF and
 * NUL bytes. A bare CR or LF never starts a line: "\n.\n", "\r.\r",
 * "\r\n.\n", "\n.\r\n" and every other variant are content, never an end
 * (this is what closes SMTP smuggling).
 *
 * BDAT mode (RFC 3030): no terminator and no dot handling; only the bare
 * CR/LF and NUL checks and normalization, with state carried across chunks.
 *
 * With normalize set, a bare CR or bare LF is written out as CR LF (so the
 * output can be up to twice the input); otherwise it is copied as is and
 * flagged, and the caller rejects the message.
 *
 *      LINESTART --'.'--> DOT --CR--> DOT_CR --LF--> DONE
 *         ^  |             |            \--other--> (bare CR) TEXT
 *         |  |             \--other: output it (unstuffed) --> TEXT
 *         |  \--CR--> CR --LF--> LINESTART
 *         |              \--other--> (bare CR) TEXT
 *         \------------- TEXT --CR--> CR ;  TEXT/LINESTART --LF--> (bare LF) TEXT
 */
#ifndef PETREL_DATA_SCAN_H
#define PETREL_DATA_SCAN_H

#include <stddef.h>
#include <stdint.h>

#define DATA_SCAN_BARE_LF   0x01  /* a LF not preceded by CR */
#define DATA_SCAN_BARE_CR   0x02  /* a CR not followed by LF */
#define DATA_SCAN_NUL       0x04  /* a NUL byte */
#define DATA_SCAN_LONG_LINE 0x08  /* a line longer than max_line (incl. CRLF) */
#define DATA_SCAN_8BIT      0x10  /* a byte >= 0x80 */

/* Extra output room beyond 2 * inlen that one data_scan() call may need. */
#define DATA_SCAN_OUT_SLACK 2

enum data_scan_state {
	DS_LINESTART = 0,
	DS_DOT,
	DS_DOT_CR,
	DS_TEXT,
	DS_CR,
	DS_DONE,
};

struct data_scan {
	enum data_scan_state state;
	int bdat;              /* BDAT mode: no terminator, no dot handling */
	int normalize;         /* bare CR / bare LF -> CR LF in the output */
	unsigned max_line;     /* 0 = no limit */
	uint64_t line_len;     /* octets in the current line so far */
	unsigned flags;        /* DATA_SCAN_* seen so far */
	uint64_t out_total;    /* content octets written so far */
};

/* Start a message (DATA) or a BDAT transaction. */
void data_scan_init(struct data_scan *s, int bdat, int normalize,
                    unsigned max_line);

/*
 * Consume up to inlen bytes. Writes content to out, which must have room for
 * 2 * inlen + DATA_SCAN_OUT_SLACK bytes (bytes held back from the previous
 * call, such as a "." or CR at line start, are written with this call's
 * output); *outlen receives the number written. Returns the number of
 * input bytes consumed: all of them, except in DATA mode when the terminator
 * is reached, in which case it returns the count up to and including the
 * terminator's final LF and the state becomes DS_DONE (the terminator itself
 * is not written; the CR LF that ends the last line is). Once DS_DONE,
 * consumes nothing.
 */
size_t data_scan(struct data_scan *s, const char *in, size_t inlen, char *out,
                 size_t *outlen);

/* 1 once the DATA terminator has been consumed. */
int data_scan_done(const struct data_scan *s);

/*
 * End of a BDAT LAST transaction: a CR still pending at the very end is a
 * bare CR (flagged; written as CR LF when normalizing, else as CR). Writes
 * at most 2 bytes to out; returns the number written.
 */
size_t data_scan_finish(struct data_scan *s, char *out);

#endif
