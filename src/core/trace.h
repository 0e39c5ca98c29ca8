/*
 * trace.h - W3C trace context (traceparent) and spans.
 *
 * DESIGN: a span is a plain record in the caller's storage (the request arena, a worker's stack):
 * trace_span_start fills it, trace_span_end copies it into the exporter's queue (otlp.c) and the
 * caller's copy may then be dropped. When no exporter runs (otel.endpoint empty) trace_span_start
 * returns false at once and nothing else happens: callers test span->on (or the return value) and
 * skip all tracing work, so a process without otel.endpoint pays one branch per would-be span.
 * Ids come from a per-thread xorshift generator seeded from getrandom(2) (ids need to be unique,
 * not secret) and are never all zero. Each thread has one "current" span (trace_current), set by
 * code that runs a unit of work (a task) so that the calls it makes (the LLM client) become its
 * children without passing the span down through every layer. Wire format: interop.md section 6.
 */
#ifndef SOMA_CORE_TRACE_H
#define SOMA_CORE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACEPARENT_LEN	   55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_ID_HEX	   32
#define TRACE_SPAN_HEX	   16
#define TRACE_MAX_ATTRS	   6
#define TRACE_ATTR_LEN	   128 /* longest string attribute value kept, NUL included */
#define TRACE_NAME_LEN	   96  /* longest span name kept, NUL included */
#define TRACE_FLAG_SAMPLED 0x01

enum trace_kind {
	TRACE_KIND_INTERNAL = 1,
	TRACE_KIND_SERVER = 2,
	TRACE_KIND_CLIENT = 3,
	TRACE_KIND_PRODUCER = 4,
	TRACE_KIND_CONSUMER = 5,
};

enum trace_status { TRACE_STATUS_UNSET = 0, TRACE_STATUS_OK = 1, TRACE_STATUS_ERROR = 2 };

/* A remote or local parent: what a traceparent header carries. */
struct trace_ctx {
	uint8_t trace_id[16]; /* never all zero when valid */
	uint8_t span_id[8];   /* the parent's span id; never all zero when valid */
	uint8_t flags;	      /* trace-flags, only the sampled bit kept */
	bool valid;	      /* false: no parent (a new trace starts) */
};

struct trace_attr {
	const char *key;	  /* static string */
	bool is_int;		  /* which value is set */
	int64_t num;		  /* is_int */
	char str[TRACE_ATTR_LEN]; /* !is_int; cut to fit */
};

struct trace_span {
	bool on;				  /* started (tracing enabled); the rest is valid only then */
	bool has_parent;			  /* parent_id is set */
	uint8_t trace_id[16];			  /* the trace */
	uint8_t span_id[8];			  /* this span */
	uint8_t parent_id[8];			  /* its parent, when has_parent */
	uint8_t flags;				  /* trace-flags sent on */
	enum trace_kind kind;			  /* OTLP SpanKind */
	enum trace_status status;		  /* OTLP status code */
	uint64_t start_ns, end_ns;		  /* Unix epoch nanoseconds */
	char name[TRACE_NAME_LEN];		  /* e.g. "POST /v1/session/message"; cut to fit */
	struct trace_attr attrs[TRACE_MAX_ATTRS]; /* attributes (later ones past the cap are dropped) */
	size_t nattrs;				  /* used entries */
};

/* True when spans are recorded (the exporter runs). Any thread. */
bool trace_enabled(void);
/* Turns recording on or off (otlp_start / otlp_stop). */
void trace_set_enabled(bool on);

/* Parses a traceparent header value (interop.md 6.2): version 00 exactly 55 characters, a higher
 * version (not ff) its first 55 when followed by the end or '-'; lowercase hex only; all-zero ids
 * and version ff are invalid. Returns false (out->valid false) for anything invalid. */
bool trace_parse(const char *s, size_t len, struct trace_ctx *out);
/* Writes "00-<trace>-<span>-<flags>" + NUL into out (TRACEPARENT_LEN + 1 bytes). */
void trace_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags, char out[TRACEPARENT_LEN + 1]);
/* Writes n bytes as 2n lowercase hex digits + NUL into out. */
void trace_hex(const uint8_t *bytes, size_t n, char *out);
/* Fills out with n random bytes from this thread's generator, never all zero. */
void trace_random_id(uint8_t *out, size_t n);
/* Wall-clock time in Unix nanoseconds. */
uint64_t trace_now_ns(void);

/* Starts span s: a child of parent when parent is valid (same trace, parent's span id as
 * parent_id), else the root of a new trace. name is copied (cut to fit). Returns false, with
 * s->on false and nothing else written, when tracing is disabled. */
bool trace_span_start(struct trace_span *s, const struct trace_ctx *parent, const char *name, enum trace_kind kind);
/* Starts s as a child of the span running on this thread (trace_current), or a new trace. */
bool trace_span_start_child(struct trace_span *s, const char *name, enum trace_kind kind);
/* Attributes (no-ops on a span that is not on, or past TRACE_MAX_ATTRS). key must be static. */
void trace_span_attr_str(struct trace_span *s, const char *key, const char *value);
void trace_span_attr_int(struct trace_span *s, const char *key, int64_t value);
/* The traceparent that makes a callee a child of s (s must be on). */
void trace_span_traceparent(const struct trace_span *s, char out[TRACEPARENT_LEN + 1]);
/* Ends s (end time now) and hands a copy to the exporter; s->on becomes false. No-op when off. */
void trace_span_end(struct trace_span *s);

/* This thread's current span (borrowed), or NULL; set by the code that owns the span, cleared
 * (NULL) before the span ends. */
void trace_current_set(struct trace_span *s);
struct trace_span *trace_current(void);

#endif
