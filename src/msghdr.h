/*
 * msghdr.h - pure helpers for a message's header section (RFC 5322 section
 * 2.2, 3.4, 3.6): walking the header fields, unfolding, finding a field,
 * splitting an address list into addr-specs, and writing a display name.
 * Used by `petrel sendmail` (src/sendmail.c) for -t and for the headers it
 * adds to local submissions.
 *
 * Every function works on a byte range (pointer + length, not necessarily
 * NUL-terminated), never reads outside it, allocates nothing and keeps no
 * state: output goes into buffers owned by the caller, whose size is always
 * checked. Lines may end in CRLF or in a bare LF; a CR not followed by LF is
 * an ordinary byte.
 */
#ifndef PETREL_MSGHDR_H
#define PETREL_MSGHDR_H

#include <stddef.h>

/* One header field. Offsets are into the message given to msghdr_next(). */
struct msghdr_field {
	const char *name;    /* field name, white space before ':' excluded */
	size_t namelen;
	const char *value;   /* after ':' to the end of the field's last line,
	                        that line break excluded; folding line breaks
	                        inside are kept (see msghdr_unfold) */
	size_t valuelen;
	size_t start;        /* offset of the field's first octet */
	size_t end;          /* offset after its last line break (or len) */
};

/*
 * Next field of the header section of msg[0..len). Start with *pos = 0.
 * Returns 1 with *f filled and *pos moved past the field; 0 at the end of
 * the header section, with *pos at its end: the empty line that ends it,
 * the first line that is neither a field ("name:") nor the continuation
 * of one (a line starting with SP or HTAB), or len.
 */
int msghdr_next(const char *msg, size_t len, size_t *pos,
                struct msghdr_field *f);

/*
 * Where the header section of msg[0..len) ends: *hdr_end is the offset
 * after the last field (what msghdr_next leaves in *pos); *body is where
 * the body starts (after the empty line when there is one, else
 * *hdr_end); *blank says whether there was an empty line.
 */
void msghdr_split(const char *msg, size_t len, size_t *hdr_end, size_t *body,
                  int *blank);

/* 1 if the field's name is name (ASCII, case-insensitive), else 0. */
int msghdr_name_is(const struct msghdr_field *f, const char *name);

/*
 * The first field named name (case-insensitive) in the header section.
 * Returns 1 with *f filled, 0 if there is none.
 */
int msghdr_find(const char *msg, size_t len, const char *name,
                struct msghdr_field *f);

/*
 * Unfold a field value (RFC 5322 2.2.3): remove every line break (CRLF or
 * LF) that is followed by SP or HTAB, then trim white space at both ends.
 * Writes at most outlen - 1 octets and a NUL into out (outlen >= 1; a
 * buffer of len + 1 octets is always enough). Returns the length written.
 */
size_t msghdr_unfold(const char *v, size_t len, char *out, size_t outlen);

/*
 * Iterator over an address list (RFC 5322 3.4 address-list, unfolded):
 * mailboxes "a@b", "Name <a@b>", "a@b (comment)", "<@route:a@b>", groups
 * "Friends: a@b, c@d;" and "undisclosed-recipients:;", empty elements
 * (",,"), and, leniently, ';' as a separator outside a group (as people
 * type it) and a group whose ';' is missing at the end.
 */
struct msghdr_alist {
	const char *s;
	size_t len;
	size_t pos;
	int in_group;
};

void msghdr_alist_init(struct msghdr_alist *a, const char *s, size_t len);

/*
 * Next mailbox's addr-spec. Returns 1 and writes it NUL-terminated into out:
 * comments and folding white space removed, quoted strings and domain
 * literals kept as written, source route dropped; it may lack "@domain"
 * (a bare local name such as "root": the caller qualifies it). Returns 0
 * at the end of the list. Returns -1 for a malformed element, one whose
 * addr-spec holds a NUL, CR or LF octet, or one whose addr-spec does not
 * fit in outlen - 1 octets: out is "", and *bad and *badlen (if not NULL)
 * delimit the element as written (trimmed), inside s; the iterator has
 * moved past it, so the caller may go on.
 */
int msghdr_alist_next(struct msghdr_alist *a, char *out, size_t outlen,
                      const char **bad, size_t *badlen);

/*
 * Write a display name (e.g. "Jane Q. Doe" from -F or the passwd entry) as
 * an RFC 5322 phrase for "Name <addr>": as is when it is atoms separated by
 * single spaces; as a quoted string when it holds specials; as RFC 2047
 * encoded words (=?UTF-8?B?...?=) when it holds non-ASCII octets (invalid
 * UTF-8 octets become '?'). Control characters (CR, LF, TAB, ...) become
 * spaces and runs of white space one space, so the result can never break
 * the header line. Writes NUL-terminated into out. Returns the length, or
 * -1 if it does not fit or the name is empty after trimming (out is "").
 */
int msghdr_phrase(const char *name, size_t len, char *out, size_t outlen);

#endif
