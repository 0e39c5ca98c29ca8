/*
 * sse.h - incremental parser of a Server-Sent Events stream (WHATWG HTML 9.2), for reading
 * OpenAI-compatible streamed completions.
 *
 * DESIGN: bytes arrive in arbitrary pieces (mid-line, mid-UTF-8 sequence); the parser keeps the
 * incomplete line and only interprets whole lines, so a split anywhere is harmless. Lines end
 * in CRLF, LF or CR. "data:" values of one event are joined with "\n"; an empty line dispatches
 * the event. Comments and other fields are ignored. Lines and events are bounded (max_line);
 * exceeding the bound is an error, not growth.
 */
#ifndef SOMA_LLM_SSE_H
#define SOMA_LLM_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

#define SSE_INITIAL_CAP 4096 /* first allocation of line and data (at first use); they grow up to max */

struct sse_parser {
	char *line;	 /* partial line; owned */
	size_t line_len; /* bytes in line */
	char *data;	 /* data of the event being read; owned */
	size_t data_len; /* bytes in data */
	size_t line_cap; /* allocated bytes of line */
	size_t data_cap; /* allocated bytes of data */
	size_t max;	 /* bound for line and data */
	bool last_cr;	 /* previous byte was CR (so a following LF is not a second line end) */
	bool has_data;	 /* a data field was seen in this event */
	size_t fed;	 /* bytes seen so far (a leading UTF-8 BOM is skipped) */
};

/* Called per dispatched event with its data (NUL-terminated, borrowed); return false to stop. */
typedef bool (*sse_event_fn)(void *ctx, const char *data, size_t len);

enum soma_err sse_parser_init(struct sse_parser *p, size_t max) SOMA_MUST_CHECK;
void sse_parser_deinit(struct sse_parser *p);
/* Feeds bytes. SOMA_ERR_LIMIT when a line or event exceeds max, SOMA_ERR_NOMEM when growing fails;
 * returns SOMA_OK, or SOMA_ERR_CONFLICT when fn asked to stop. */
enum soma_err sse_parser_feed(struct sse_parser *p, const char *bytes, size_t n, sse_event_fn fn, void *ctx);

/* For a caller that can pass whole events on without reading them (a relay): whether bytes[0..n)
 * begin where a new event would, with no line or event of earlier feeds partly read. The stream's
 * first bytes qualify when they cannot begin a BOM (the parser then knows none comes). */
bool sse_parser_at_event_start(struct sse_parser *p, const char *bytes, size_t n);
/* The length of the plain event that b[0..n) begins with: "data: " and a value that starts with
 * '{' and holds no CR or LF, then "\n\n", whole in b, its line within max (what the parser would
 * give fn as the value, unchanged); 0 when b does not begin with one. *data and *len: its value. */
size_t sse_plain_event(const char *b, size_t n, size_t max, const char **data, size_t *len);

#endif
