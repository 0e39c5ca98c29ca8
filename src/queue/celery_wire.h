/*
 * celery_wire.h - Celery protocol v2 on kombu's Redis transport, as bytes: the envelope that is
 * LPUSHed, the priority band keys, the ISO-8601 times of headers and results.
 *
 * DESIGN: pure functions, no I/O and no global state, so the Redis queue driver, the Celery
 * event publisher and the pidbox share one encoder and one decoder, and the fuzz harness can
 * drive the decoder alone. The encoder writes what kombu 5.x writes (base64 body, a UUID4
 * delivery_tag); the decoder accepts whatever a conforming producer may send: base64 or raw
 * bodies, kombu >= 5.3's {"__type__", "__value__"} objects, protocol v1 bodies (task and id in
 * the body). Wire reference: docs in shared/reference/interop.md section 1.
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

/* Returns the envelope as compact JSON text: body serialized compactly, then standard base64
 * with padding; headers and properties copied (borrowed inputs), with content-type
 * application/json, content-encoding utf-8, properties.body_encoding "base64" and a fresh UUID4
 * properties.delivery_tag unless properties has one. The caller frees the text with free().
 * NULL on OOM. */
char *celery_envelope_encode(const json_t *body, const json_t *headers, const json_t *properties);

/* A decoded message. Every json_t is owned by the struct (celery_msg_deinit). */
struct celery_msg {
	json_t *envelope;	  /* the whole envelope as received (body still encoded) */
	json_t *headers;	  /* borrowed from envelope, or built for protocol v1 */
	json_t *properties;	  /* borrowed from envelope ({} when absent) */
	json_t *args;		  /* positional arguments (array) */
	json_t *kwargs;		  /* keyword arguments (object) */
	json_t *embed;		  /* callbacks/errbacks/chain/chord (object, {} when null) */
	const char *task;	  /* headers.task (borrowed) */
	const char *id;		  /* headers.id (borrowed) */
	const char *delivery_tag; /* properties.delivery_tag, or "" (borrowed) */
	int priority;		  /* properties.priority clamped to 0..9 */
	int64_t retries;	  /* headers.retries */
	int64_t eta_ms;		  /* headers.eta as wall ms, 0 when none */
	int64_t expires_ms;	  /* headers.expires as wall ms, 0 when none */
	double time_limit;	  /* headers.timelimit[0] (hard), 0 = none */
	double soft_time_limit;	  /* headers.timelimit[1] (soft), 0 = none */
	const char *routing_key;  /* properties.delivery_info.routing_key, or NULL (borrowed) */
	const char *exchange;	  /* properties.delivery_info.exchange, or "" (borrowed) */
	json_t *v1_headers;	  /* owned headers object built for a protocol v1 message */
};

/* Decodes one envelope (len bytes of JSON). On failure why receives a sentence and *out is
 * left empty (safe to deinit). Caller deinits *out. */
enum soma_err celery_envelope_decode(const char *text, size_t len, struct celery_msg *out, char *why,
				     size_t why_cap) SOMA_MUST_CHECK;
void celery_msg_deinit(struct celery_msg *m);

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
