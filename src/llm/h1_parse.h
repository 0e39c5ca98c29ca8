/*
 * h1_parse.h - an HTTP/1.1 response read incrementally: the status line, the header lines and
 * the body's framing (Content-Length, chunked, or up to the connection's close), for the
 * plain-HTTP provider client (h1_conn.h).
 *
 * DESIGN: bytes arrive in any pieces. The head is kept until its blank line (bounded by
 * H1_HEAD_MAX), then read at once: the status, each header line handed to the caller as it is
 * (Retry-After), and what the framing and keep-alive headers say. Interim 1xx heads are skipped.
 * The body is handed on as it comes, with the chunked framing taken off; a chunk's size line,
 * its CRLF and the trailers may be split anywhere. Nothing is allocated: the struct holds all.
 * One response per parser (h1_response_init for the next); bytes after a complete response are
 * not consumed (the connection is then not reused).
 */
#ifndef SOMA_LLM_H1_PARSE_H
#define SOMA_LLM_H1_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1_HEAD_MAX 16384 /* status line and headers together */

enum h1_framing {
	H1_BODY_NONE,	 /* no body (HEAD-like statuses: 204, 304) */
	H1_BODY_LENGTH,	 /* Content-Length bytes */
	H1_BODY_CHUNKED, /* Transfer-Encoding: chunked */
	H1_BODY_CLOSE,	 /* everything up to the close */
};

enum h1_result {
	H1_MORE,     /* all bytes used; the response goes on */
	H1_COMPLETE, /* the response ended (*used says where) */
	H1_BAD,	     /* not HTTP/1.x, or broken framing: the connection is unusable */
	H1_STOP,     /* a hook asked to stop */
};

struct h1_hooks {
	/* each header line of the final head, without its line end; false stops */
	bool (*on_header)(void *ctx, const char *line, size_t len);
	/* body bytes, framing removed; false stops */
	bool (*on_body)(void *ctx, const char *data, size_t len);
	void *ctx;
};

enum h1_chunk_state { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF };

struct h1_response {
	int status;		   /* once the head is read, else 0 */
	bool keep_alive;	   /* the connection may carry another request once this one is complete */
	enum h1_framing framing;   /* once the head is read */
	uint64_t left;		   /* LENGTH: bytes still to come; CHUNKED: of the current chunk */
	enum h1_chunk_state chunk; /* CHUNKED: where in the framing */
	unsigned chunk_digits;	   /* CHUNKED: hex digits of the size line so far */
	bool trailer_empty;	   /* CHUNKED: the trailer line being read is empty so far */
	bool head_done;		   /* the final head was read */
	size_t head_len;	   /* bytes in head */
	char head[H1_HEAD_MAX];	   /* the head being gathered */
};

/* Ready for a new response. */
void h1_response_init(struct h1_response *r);
/* Feeds n bytes: *used is how many were consumed (all of them unless COMPLETE, BAD or STOP). */
enum h1_result h1_response_feed(struct h1_response *r, const char *p, size_t n, const struct h1_hooks *hooks,
				size_t *used);
/* The connection closed: true when that ends this response as its framing allows (CLOSE, or a
 * response already complete), false when the response was cut. */
bool h1_response_eof_ok(const struct h1_response *r);

#endif
