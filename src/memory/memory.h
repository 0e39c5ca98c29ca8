/*
 * memory.h - long-term memory: remember, recall, health, with SomaBrain or the built-in store.
 *
 * DESIGN: writes never call a memory service directly. Every memory write is a row of the
 * memory outbox, committed with the event it comes from (src/store/sqlite_memory.c); the relay
 * thread (relay.c) delivers the rows to the driver in order per session, with backoff, the
 * event id as the idempotency key, and a rate limit. Recall calls the driver at once (worker
 * and pool threads only: it may block up to memory.timeout_ms). Drivers (memory_int.h):
 *   builtin    the store's own FTS5 table (the default; no other process)
 *   somabrain  HTTP to SomaBrain (/memory/remember, /memory/recall, /health) through libcurl
 * One rule gives the state (memory.c): down when SomaBrain's /health is not 2xx or unreachable,
 * or when the circuit breaker is open (consecutive failed calls); degraded when /health answers
 * but not ok && ready && memory_ok, or while the breaker probes, or within
 * memory.breaker_open_ms of a failed call; normal otherwise. Down: recall is skipped and the relay only probes;
 * degraded: recall returns fewer results and the relay drains at half rate. Every state change bumps a generation that
 * open event streams watch (a `status` event).
 */
#ifndef SOMA_MEMORY_MEMORY_H
#define SOMA_MEMORY_MEMORY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "store/store.h"

enum memory_state { MEMORY_NORMAL, MEMORY_DEGRADED, MEMORY_DOWN };

#define MEMORY_REASON_MAX 96

/* What health, metrics and replies show; a copy (memory_snapshot). */
struct memory_status {
	enum memory_state state;	/* by the one rule above */
	char reason[MEMORY_REASON_MAX]; /* "ok", "health_unreachable", "not_ready", "circuit_open", ... */
	bool probed;			/* a health result exists (else /v1/metrics/system says unknown) */
	unsigned generation;		/* bumps on every state change */
	int64_t pending;		/* outbox rows waiting (pending + sending), every tenant */
	int64_t failed;			/* outbox rows failed (waiting for an admin) */
	int64_t oldest_ms;		/* creation time of the oldest waiting row, 0 when none */
	int64_t since_ms;		/* when the state last changed */
	const char *driver;		/* "builtin" or "somabrain" (static) */
};

/* Reads memory.* and picks the driver (main thread, before the relay starts). On failure
 * writes a sentence naming the setting into why. */
enum soma_err memory_init(char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Starts the relay thread on st (the store must be running). */
enum soma_err memory_relay_start(struct store *st, char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Stops the relay: the batch in flight is settled first (rows never stay `sending`). */
void memory_relay_stop(void);
/* Wakes the relay (a memory write was committed). Any thread; cheap. */
void memory_relay_wake(void);

/* The current status (any thread; a copy under a mutex). */
void memory_snapshot(struct memory_status *out);
/* True while the state is not normal (degraded or down): input.degraded.somabrain of every policy
 * decision. Any thread; one atomic load. */
bool memory_degraded(void);
/* Only the generation: cheap enough for io-thread timers. */
unsigned memory_generation(void);
const char *memory_state_name(enum memory_state s);

/* Recall for tenant: up to top_k results ([{score, payload, source}], caller owns *results),
 * fewer when degraded, none when down (then *results is an empty array and SOMA_OK).
 * *degraded is set when the answer is partial. Blocks up to memory.timeout_ms: never call it
 * on an io thread. request_id may be NULL; traceparent is the caller's span's (SomaBrain's work
 * joins its trace), NULL for the span current on this thread (trace_current: a task's), none
 * sent when there is neither (tracing off). */
enum soma_err memory_recall(struct store *st, const char *tenant, const char *ns, const char *query, int top_k,
			    const char *session_id, const char *request_id, const char *traceparent, json_t **results,
			    bool *degraded) SOMA_MUST_CHECK;

/* Registers the memory metrics (soma_outbox_*, soma_somabrain_state, recall duration). */
void memory_metrics_register(void);

#endif
