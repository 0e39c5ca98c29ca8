/*
 * policy_int.h - inside src/policy: the builtin rules, the OPA client and the decision cache.
 *
 * DESIGN: policy.c owns the process's engine state and is the only caller of these in the
 * program; the unit tests call them directly (tests/unit/test_policy.c) to check the rules
 * against the shared decision table and the OPA answer parsing without a server.
 */
#ifndef SOMA_POLICY_POLICY_INT_H
#define SOMA_POLICY_POLICY_INT_H

#include <stdint.h>

#include "policy/policy.h"

/* ---- builtin rules (rules.c) ---------------------------------------------------------------- */

struct policy_list {
	char **items; /* patterns: exact, or with '*' matching any run of characters; owned */
	size_t n;     /* entries */
};

struct policy_tenant {
	char *name;			 /* tenant id, or "*" for everyone else; owned */
	struct policy_list actions;	 /* allowed actions ("admin.*" grants every admin action) */
	struct policy_list models;	 /* llm.invoke: context.model */
	struct policy_list tools;	 /* tool.execute: context.tool */
	struct policy_list tasks;	 /* task.run: context.task */
	struct policy_list domains;	 /* delegate: context.domain (delegate_domains) */
	struct policy_list upload_types; /* upload.create: context.mime */
	int64_t upload_max_bytes;	 /* upload.create: context.size above it is refused; < 0: none */
};

struct policy_rules {
	struct policy_tenant *tenants;	      /* sorted by name (bsearch); owned */
	size_t n;			      /* entries */
	const struct policy_tenant *fallback; /* the "*" entry, or NULL */
};

/* Parses a policy file ({"soma_policy": {"tenants": {...}}}, see policy/default.json). Unknown keys
 * are errors (a typo must not silently deny or allow), except keys starting with '_' (comments).
 * On failure writes what is wrong, and where, into why. The caller frees *out. */
enum soma_err policy_rules_parse(const char *text, size_t len, struct policy_rules **out, char *why,
				 size_t cap) SOMA_MUST_CHECK;
/* The rules compiled into the binary (policy/default.json). The caller frees *out. */
enum soma_err policy_rules_default(struct policy_rules **out, char *why, size_t cap) SOMA_MUST_CHECK;
void policy_rules_free(struct policy_rules *r);
/* The builtin decision (the same as policy/soma.rego). */
void policy_rules_decide(const struct policy_rules *r, const struct policy_input *in, struct policy_decision *out);
/* True when s matches pattern ('*' matches any run, including an empty one). */
bool policy_glob(const char *pattern, const char *s);

/* ---- OPA (opa.c) ------------------------------------------------------------------------------ */

/* Outcome of one transport attempt, for the health report. */
enum policy_opa_link { OPA_LINK_OK, OPA_LINK_DOWN };

/* POSTs input_json ({"input":...}) to base_url/v1/data/soma/allow with a deadline of timeout_ms and
 * fills *out (fail closed); detail says what happened on the wire (for logs). Blocking; the
 * calling thread's curl handle is used. */
enum policy_opa_link policy_opa_decide(const char *base_url, long timeout_ms, const char *input_json,
				       struct policy_decision *out, char *detail, size_t cap);
/* Interprets an answer: status and body of the HTTP response. */
void policy_opa_parse(long status, const char *body, size_t len, struct policy_decision *out);
/* GET base_url/health; true when it answered 200. detail says what happened. Blocking. */
bool policy_opa_probe(const char *base_url, long timeout_ms, char *detail, size_t cap);

/* ---- the OPA circuit breaker (breaker.c) ------------------------------------------------------- */

/* Closes it and forgets; window_ms: how long a failure keeps it open; probe_max_ms: how long a
 * half-open probe may stay out before another is let through. Times are monotonic ms. */
void policy_breaker_reset(int64_t window_ms, int64_t probe_max_ms);
/* True when a decision must be denied now without going to OPA (open, or half-open with the probe
 * out); reason gets what opened it. Any thread (io threads too): no lock while closed. */
bool policy_breaker_refuses(int64_t now_ms, char *reason, size_t cap);
/* Before a call to OPA: true when it may go (closed, or it is the half-open probe: *probe set);
 * false with the reason otherwise. */
bool policy_breaker_admit(int64_t now_ms, bool *probe, char *reason, size_t cap);
/* OPA's health probe answered: closes it (the timeout count stays). */
void policy_breaker_success(void);
/* OPA answered a decision: closes it and starts the timeout count over. */
void policy_breaker_answered(void);
/* OPA timed out or could not be reached (reason): opens it for the window from now_ms, at once
 * for opa_unreachable or while open or half-open; a timeout while closed only when it is the
 * third in a row (no answer in between). */
void policy_breaker_failure(int64_t now_ms, const char *reason);
/* A call that says nothing about OPA (a budget cut short by the queue): gives back the probe. */
void policy_breaker_release(void);
/* True while open or half-open, with the reason that opened it (health). */
bool policy_breaker_open(char *reason, size_t cap);

/* ---- decision cache (cache.c) ------------------------------------------------------------------ */

struct policy_cache;

/* A cache of slots decisions kept ttl_ms each; NULL when ttl_ms is 0 (nothing is cached) or on OOM. */
struct policy_cache *policy_cache_new(size_t slots, int64_t ttl_ms);
void policy_cache_free(struct policy_cache *c);
/* The decision cached for key (the input JSON) if it has not expired at now_ms. Any thread. */
bool policy_cache_get(struct policy_cache *c, const char *key, int64_t now_ms, struct policy_decision *out);
/* Remembers d for key until now_ms + ttl; evicts whatever shared its slot. Any thread. */
void policy_cache_put(struct policy_cache *c, const char *key, int64_t now_ms, const struct policy_decision *d);

/* ---- helpers shared by the engines (policy.c) ------------------------------------------------- */

/* Counts a final decision in soma_policy_decisions_total (the engines do; the gate for the denies
 * it makes itself when the policy threads are saturated). */
void policy_count(const char *action, const struct policy_decision *d);
/* Fills a decision. reason is cut to POLICY_REASON_MAX - 1 bytes; control characters become '_'. */
void policy_decision_set(struct policy_decision *d, bool allow, const char *reason, const char *engine);

#endif
