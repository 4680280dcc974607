/*
 * buf.h - a growable byte buffer with a consumed prefix, used for the io
 * layer's input and output and for building replies.
 *
 * Invariant: start <= end <= cap; the live bytes are data[start..end).
 * Appending compacts (moves the live bytes to the front) before growing, so a
 * buffer that is drained as fast as it is filled never grows. Growth is
 * bounded by the callers (io keeps input below its limit).
 */
#ifndef PETREL_BUF_H
#define PETREL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t start;
	size_t end;
	size_t cap;
};

static inline size_t buf_len(const struct buf *b) { return b->end - b->start; }
static inline char *buf_ptr(const struct buf *b) { return b->data + b->start; }

/* Make room for at least n more bytes after end. Returns 0 or -1 (ENOMEM). */
int buf_reserve(struct buf *b, size_t n);
/* Pointer to the free space after the live bytes (call buf_reserve first). */
static inline char *buf_tail(struct buf *b) { return b->data + b->end; }
static inline size_t buf_room(const struct buf *b) { return b->cap - b->end; }
/* Mark n bytes written at buf_tail() as live. */
static inline void buf_commit(struct buf *b, size_t n) { b->end += n; }

int buf_append(struct buf *b, const void *p, size_t n);
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Drop n bytes from the front (n <= buf_len). */
void buf_consume(struct buf *b, size_t n);
/* Drop everything, keep the allocation. */
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
