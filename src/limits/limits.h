/*
 * limits.h - per-tenant quotas: the request rate (a token bucket), LLM tokens per UTC day and
 * event streams open at once. Beyond any of them the answer is 429 with Retry-After.
 *
 * DESIGN: the counters live behind a driver (struct limits_driver) so that where they are kept can
 * change without touching the callers: the in-process driver (local.c: sharded hash table, one
 * mutex per shard, nothing allocated per request) now, a Redis driver later so that limits hold
 * across nodes (the distributed-engine issue implements the same five functions). The process
 * has one active driver, set by limits_start() on the main thread before io threads start and
 * cleared by limits_stop() after they are gone; until then every limit is off (0 = unlimited is
 * also each setting's default). The caller's cost is one shard lock per check (< 1 us).
 * Public routes (/v1/health, /metrics, the web UI) are never limited: the pipeline only asks for
 * authenticated requests. Token usage is counted from the usage the provider reports for replies
 * and proxy calls, after the call; a call that starts under the budget may end over it, and the
 * next one is refused until 00:00 UTC.
 */
#ifndef SOMA_LIMITS_LIMITS_H
#define SOMA_LIMITS_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct limits_opts {
	double requests_per_s;	    /* refill rate of each tenant's bucket; 0: unlimited */
	double requests_burst;	    /* bucket size; 0: twice the rate */
	int64_t llm_tokens_per_day; /* input + output tokens per tenant per UTC day; 0: unlimited */
	int64_t streams_per_tenant; /* event streams open at once per tenant; 0: unlimited */
};

/* Where the counters live. Every function may be called from any thread at once. */
struct limits_driver {
	const char *name; /* "local", "redis" */
	/* Takes one request from tenant's bucket (rate, burst) at now_ns; false with *retry_s (> 0) when
	 * the bucket is empty. */
	bool (*request_take)(void *ctx, const char *tenant, double rate, double burst, uint64_t now_ns,
			     double *retry_s);
	/* Tokens tenant used on UTC day `day` (days since the epoch). */
	int64_t (*tokens_used)(void *ctx, const char *tenant, int64_t day);
	/* Adds n tokens to tenant's count of day. */
	void (*tokens_add)(void *ctx, const char *tenant, int64_t day, int64_t n);
	/* Counts one more open stream unless tenant already has max; false then. */
	bool (*stream_acquire)(void *ctx, const char *tenant, int64_t max);
	/* One stream fewer. */
	void (*stream_release)(void *ctx, const char *tenant);
	/* Frees ctx. */
	void (*free)(void *ctx);
	void *ctx; /* the driver's state */
};

/* The in-process driver. The caller owns it (limits_start takes it). NULL on OOM. */
struct limits_driver *limits_local_new(void);

/* ---- the bucket and the day (pure; the drivers use them, the tests check them) ------------------ */

struct limits_bucket {
	double tokens;	  /* requests that may be made now */
	uint64_t last_ns; /* when tokens was computed (monotonic) */
	bool primed;	  /* starts full on first use */
};

/* Refills b at rate per second up to burst, then takes one; false with *retry_s = time until one
 * token is there again. */
bool limits_bucket_take(struct limits_bucket *b, double rate, double burst, uint64_t now_ns, double *retry_s);
/* UTC day number (days since the epoch) of a wall-clock time in ms. */
int64_t limits_utc_day(int64_t now_ms);
/* Seconds from now_ms to the next 00:00 UTC, rounded up (1..86400). */
int64_t limits_seconds_to_midnight(int64_t now_ms);
/* Retry-After for a wait of s seconds: rounded up, at least 1. */
int64_t limits_retry_after(double s);

/* ---- the process's limits --------------------------------------------------------------------- */

/* Starts enforcing o with driver (taken; freed by limits_stop). Main thread. */
enum soma_err limits_start(const struct limits_opts *o, struct limits_driver *driver) SOMA_MUST_CHECK;
/* limits.* from the configuration with the in-process driver. */
enum soma_err limits_start_from_config(void) SOMA_MUST_CHECK;
void limits_stop(void);
/* A sentence about what is enforced (health detail). */
void limits_describe(char *out, size_t cap);

/* One request of tenant; false with *retry_after_s when over limits.requests_per_s. */
bool limits_request(const char *tenant, int64_t *retry_after_s);
/* False with *retry_after_s (to 00:00 UTC) when tenant has used limits.llm_tokens_per_day today. */
bool limits_tokens_available(const char *tenant, int64_t *retry_after_s);
/* Counts n tokens (input + output) for tenant today; n <= 0 is ignored. */
void limits_tokens_add(const char *tenant, int64_t n);
/* One more event stream for tenant; false when it holds limits.streams_per_tenant already. Every
 * true must be paired with one limits_stream_release(). */
bool limits_stream_acquire(const char *tenant);
void limits_stream_release(const char *tenant);

/* ---- HTTP answers (io thread of the request) ---------------------------------------------------- */

struct http_req;
/* The pipeline's rate step: true to go on; false after answering 429 rate_limited + Retry-After. */
bool limits_http_request(struct http_req *req);
/* Before an LLM call (llm.invoke, conversation.send): false after answering 429
 * llm_budget_exceeded with Retry-After = seconds to 00:00 UTC. */
bool limits_http_tokens(struct http_req *req);
/* Before opening an event stream: false after answering 429 too_many_streams. On true the caller
 * holds a stream of req's tenant and releases it with limits_stream_release(). */
bool limits_http_stream(struct http_req *req);

#endif
