/*
 * celery_wire.h - Celery protocol v2 on kombu's Redis transport, as bytes: the envelope that is
 * LPUSHed, the priority band keys, the ISO-8601 times of headers and results.
 *
 * DESIGN: pure functions, no I/O and no global state, so the Redis queue driver, the Celery
 * event publisher and the pidbox share one encoder and one decoder, and the fuzz harness can
 * drive the decoder alone. The encoder writes what kombu 5.x writes (base64 body, a UUID4
 * delivery_tag); the decoder accepts whatever a conforming producer may send: base64 or raw
 * bodies, kombu >= 5.3's {"__type__", "__value__"} objects, protocol v1 bodies (task and id in
 * the body), and JSON as Python's json.dumps writes it: \u0000 is kept in args, kwargs and the
 * embed (a name or id holding it is refused), a lone surrogate escape is read as U+FFFD
 * (core/json_py.h). Wire reference: docs in shared/reference/interop.md section 1.
 */
#ifndef SOMA_QUEUE_CELERY_WIRE_H
#define SOMA_QUEUE_CELERY_WIRE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define CELERY_SEP		"\x06\x16" /* kombu's default priority separator */
#define CELERY_KEY_MAX		192	   /* queue name + separator + band */
#define CELERY_TIME_LEN		32	   /* "2026-11-27T10:56:49.461034Z" + NUL, with room */
#define CELERY_DEFAULT_EXCHANGE ""
/* Task ids (and group ids, delivery tags): Celery takes any string; we run those of 1 to
 * CELERY_ID_MAX characters (code points), so at most CELERY_ID_BYTES bytes of UTF-8. A longer id
 * gets a FAILURE result naming the limit (redis_settle.c). CELERY_ID_KEY_MAX holds a Redis key
 * built around one id (celery-task-meta-<id>, soma-run-<id>-<retries>, soma-once-<id>-...). */
#define CELERY_ID_MAX	  255
#define CELERY_ID_BYTES	  (4 * CELERY_ID_MAX)
#define CELERY_ID_KEY_MAX (CELERY_ID_BYTES + 96)

/* True when id is a task id we run: 1 to CELERY_ID_MAX characters of UTF-8 (not counting
 * continuation bytes), CELERY_ID_BYTES bytes at most. */
bool celery_id_ok(const char *id);

/* Returns the envelope as compact JSON text: body serialized compactly, then standard base64
 * with padding; headers and properties copied (borrowed inputs), with content-type
 * application/json, content-encoding utf-8, properties.body_encoding "base64" and a fresh UUID4
 * properties.delivery_tag unless properties has one. The caller frees the text with free().
 * NULL on OOM. */
char *celery_envelope_encode(const json_t *body, const json_t *headers, const json_t *properties);

/* A decoded message. Every json_t is owned by the struct (celery_msg_deinit). The fast reader
 * (celery_scan.c) leaves envelope, headers and properties NULL until celery_msg_tree asks for
 * them; every other field is set by both readers alike. */
struct celery_msg {
	const char *text;	  /* the envelope text (borrowed: must outlive the struct) */
	size_t len;		  /* its length */
	json_t *envelope;	  /* the whole envelope as received (body still encoded), or NULL */
	json_t *headers;	  /* borrowed from envelope, or built for protocol v1, or NULL */
	json_t *properties;	  /* borrowed from envelope ({} when absent), or NULL */
	json_t *args;		  /* positional arguments (array) */
	json_t *kwargs;		  /* keyword arguments (object) */
	json_t *embed;		  /* callbacks/errbacks/chain/chord (object), NULL when none is set */
	json_t *payload;	  /* headers.soma_payload (object), or NULL */
	const char *task;	  /* headers.task (borrowed) */
	const char *id;		  /* headers.id (borrowed) */
	const char *delivery_tag; /* properties.delivery_tag, or "" (borrowed) */
	const char *tenant;	  /* headers.soma_tenant when a string, or NULL (borrowed) */
	const char *session;	  /* headers.soma_session when a string, or NULL (borrowed) */
	const char *traceparent;  /* headers.traceparent when a string, or NULL (borrowed) */
	/* for the task-received event, as sent (Celery 5.2 reads them from the headers too): each
	 * header when a string without U+0000, else NULL (borrowed) */
	const char *root_id;	  /* headers.root_id */
	const char *parent_id;	  /* headers.parent_id */
	const char *argsrepr;	  /* headers.argsrepr */
	const char *kwargsrepr;	  /* headers.kwargsrepr */
	const char *shadow;	  /* headers.shadow (the name Celery's events and inspect show) */
	const char *eta_text;	  /* headers.eta (ISO-8601 text, parsed or not) */
	const char *expires_text; /* headers.expires */
	bool has_max_retries;	  /* headers.soma_max_retries is an integer */
	int64_t max_retries;	  /* its value */
	int priority;		  /* properties.priority clamped to 0..9 */
	int64_t retries;	  /* headers.retries */
	bool ignore_result;	  /* headers.ignore_result is true: no SUCCESS meta (Celery 5.2) */
	int64_t eta_ms;		  /* headers.eta as wall ms, 0 when none */
	int64_t expires_ms;	  /* headers.expires as wall ms, 0 when none */
	double time_limit;	  /* headers.timelimit[0] (hard), 0 = none */
	double soft_time_limit;	  /* headers.timelimit[1] (soft), 0 = none */
	const char *routing_key;  /* properties.delivery_info.routing_key, or NULL (borrowed) */
	const char *exchange;	  /* properties.delivery_info.exchange, or "" (borrowed) */
	json_t *v1_headers;	  /* owned headers object built for a protocol v1 message */
	char *strs;		  /* the fast reader's unescaped strings (owned) */
};

/* Decodes one envelope (len bytes of JSON; text is borrowed by *out and must outlive it): the
 * fast reader (celery_envelope_scan), else the jansson reader (celery_envelope_decode_tree).
 * On failure why receives a sentence and *out is left empty (safe to deinit). Caller deinits
 * *out. */
enum soma_err celery_envelope_decode(const char *text, size_t len, struct celery_msg *out, char *why,
				     size_t why_cap) SOMA_MUST_CHECK;
/* The jansson reader: parses the whole envelope into a tree (envelope, headers, properties set).
 * Same contract as celery_envelope_decode; it is the reference reading, and the one that says
 * why a message is refused. */
enum soma_err celery_envelope_decode_tree(const char *text, size_t len, struct celery_msg *out, char *why,
					  size_t why_cap) SOMA_MUST_CHECK;
/* The fast reader (celery_scan.c): the fields straight from the text, no tree. True when it read
 * the message exactly as the jansson reader would; false (*out left empty) when the message is
 * malformed or uses anything it leaves to the jansson reader (see celery_scan.c). */
bool celery_envelope_scan(const char *text, size_t len, struct celery_msg *out);
/* The delivery tag of an envelope as the pop script of redis_consume.c finds it (the raw text of
 * the first "delivery_tag" : "..." member, escapes left as they are): the key under which the
 * message waits in unacked, found even when the text is not a message we can read (so it is
 * acked, not redelivered forever). Written to buf (NUL-terminated); returns its length, 0 when
 * there is none or it does not fit in cap. */
size_t celery_envelope_tag(const char *text, size_t len, char *buf, size_t cap);
/* Makes sure envelope, headers and properties are set (the jansson tree of m->text, parsed once,
 * headers untyped as the jansson reader does); for the rare paths that need the whole message
 * (a retry's republish, canvas follow-ups). SOMA_ERR_NOMEM when it cannot. */
enum soma_err celery_msg_tree(struct celery_msg *m) SOMA_MUST_CHECK;
void celery_msg_deinit(struct celery_msg *m);
/* A header, property or canvas id of m that our code uses as a C string holds U+0000
 * (celery_names.c): the jansson reader refuses such a message. */
bool celery_names_hold_nul(const struct celery_msg *m);
/* embed when it asks for anything (an object with a member other than null), else NULL; takes
 * embed, returns the value to keep. */
json_t *celery_embed_or_null(json_t *embed);

/* Replaces, recursively, every object that has exactly the keys __type__ and __value__ with its
 * plain JSON value (datetimes, decimals, UUIDs, bytes: the __value__ text). Returns v (new
 * reference semantics: takes v, returns the value to use in its place). */
json_t *celery_json_untype(json_t *v);

/* The band (0, 3, 6 or 9) of a priority: the largest step <= priority (clamped to 0..9). */
int celery_priority_band(int priority);
/* Writes the list key of queue at priority into buf ("celery", "celery\x06\x163"). Returns its
 * length, or 0 when it does not fit. */
size_t celery_queue_key(const char *queue, int priority, char *buf, size_t cap);
/* The queue name of a list key (its length, the key up to the separator). */
size_t celery_key_queue_len(const char *key, size_t len);

/* Parses an ISO-8601 time: "YYYY-MM-DD[T ]HH:MM[:SS[.frac]][Z|+HH:MM|-HH:MM]"; a time without an
 * offset is taken as UTC (Celery's naive UTC). False when malformed. */
bool celery_time_parse(const char *s, int64_t *ms);
/* "2026-11-27T10:56:49.461000Z" for wall_ms. Returns out. */
char *celery_time_format(int64_t wall_ms, char *out, size_t cap);
/* Celery 5.2's date_done: naive UTC "2026-11-27T10:56:49.461000". Returns out. */
char *celery_date_done(int64_t wall_ms, char *out, size_t cap);

#endif
