/*
 * memory_int.h - internals of src/memory: the driver interface, the state machine's inputs and
 * the relay's view of the settings.
 *
 * DESIGN: a driver is three blocking calls. Each returns a memory_call that classifies the
 * outcome once, so every caller applies the same rule: OK; REJECTED (SomaBrain answered 4xx
 * other than 401/403/404/405/408/429: this write is wrong, retrying cannot help soon, the
 * service is fine); UNAVAILABLE (transport error, timeout, 408, 429, and 401/403/404/405: a
 * wrong API key or URL, the setup's fault, not the row's; the service is in trouble; feeds the
 * breaker); SERVER_ERROR (5xx: the same for the breaker and the state, but SomaBrain answered
 * and a request it always fails may be the cause: the relay lets such a row spend attempts when
 * its own failure opened the breaker); NOT_READY (health only: 2xx without ok && ready && memory_ok). Drivers do not
 * touch the state: their callers report each outcome (memory_note_call / memory_note_health).
 */
#ifndef SOMA_MEMORY_MEMORY_INT_H
#define SOMA_MEMORY_MEMORY_INT_H

#include "memory/memory.h"

enum memory_call {
	MEMORY_CALL_OK,		  /* done */
	MEMORY_CALL_REJECTED,	  /* 4xx: this request is wrong; the service is fine */
	MEMORY_CALL_UNAVAILABLE,  /* transport, timeout, 408, 429, 401/403/404/405: the service is in trouble */
	MEMORY_CALL_SERVER_ERROR, /* 5xx: as UNAVAILABLE, but the request itself may be the cause */
	MEMORY_CALL_NOT_READY,	  /* health: 2xx without ok && ready && memory_ok */
	MEMORY_CALL_SKIPPED,	  /* relay: not attempted (breaker open, earlier row of the session failed) */
};

/* One outbox row on its way (borrowed from the claim's JSON). */
struct memory_item {
	const char *key;	/* idempotency key (event id) */
	const char *tenant;	/* whose memory */
	const char *ns;		/* namespace */
	const char *session_id; /* may be "" */
	json_t *value;		/* the value object */
	json_t *tags;		/* array or NULL */
};

struct memory_driver {
	const char *name; /* "builtin" | "somabrain" */
	/* Stores items[0..n) (in order); results[i] is each one's outcome and err (cap bytes each) a
	 * sentence on failure. */
	void (*remember)(struct store *st, const struct memory_item *items, size_t n, enum memory_call *results,
			 char (*err)[160]);
	/* Recall; *out receives [{score, payload, source}] (caller owns). */
	enum memory_call (*recall)(struct store *st, const char *tenant, const char *ns, const char *query, int top_k,
				   const char *session_id, const char *request_id, const char *traceparent,
				   json_t **out, bool *degraded, char *err, size_t cap);
	/* SomaBrain's /health by the one rule; detail says why when not OK. */
	enum memory_call (*health)(char *detail, size_t cap);
};

extern const struct memory_driver memory_builtin_driver;
extern const struct memory_driver memory_somabrain_driver;

/* Settings read once by memory_init (immutable afterwards). */
struct memory_settings {
	const struct memory_driver *driver; /* chosen by memory.driver */
	char url[512];			    /* memory.somabrain_url without a trailing '/' */
	char api_key[512];		    /* memory.somabrain_api_key */
	char ns[64];			    /* memory.namespace */
	int timeout_ms;			    /* memory.timeout_ms */
	int max_attempts;		    /* memory.max_attempts */
	int recall_top_k;		    /* memory.recall_top_k */
	int rate_per_s;			    /* memory.relay_rate_per_s */
	int backoff_ms;			    /* memory.retry_backoff_ms: first retry delay */
	int breaker_failures;		    /* memory.breaker_failures: consecutive failures that open it */
	int breaker_open_ms;		    /* memory.breaker_open_ms: fail fast this long, then probe */
	int health_interval_ms;		    /* memory.health_interval_ms */
};

extern struct memory_settings memory_cfg;

/* State machine inputs (memory.c): a health probe's outcome, a call's outcome. Relay and
 * worker threads. */
void memory_note_health(enum memory_call r, const char *detail);
/* True when this call answered 5xx (SERVER_ERROR) and opened the breaker (or, as the probe,
 * opened it again) while /health answered: nothing else showed an outage, so the call's own
 * request may be the cause. */
bool memory_note_call(enum memory_call r, const char *what);
/* True when calls should be attempted (breaker closed, or half-open and this caller probes). */
bool memory_breaker_allows(void);
/* The relay's latest outbox counts. */
void memory_note_outbox(int64_t pending, int64_t failed, int64_t oldest_ms);
/* Counts a settled row in soma_outbox_delivered_total{sink,result}. */
void memory_count_delivery(const char *result, double n);

#endif
