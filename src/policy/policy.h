/*
 * policy.h - who may do what: the decision asked before every action that matters.
 *
 * DESIGN: one interface, two engines with the same rules (CONTRACTS.md §6, docs/security.md):
 *   builtin  rules from a JSON file (policy.file, else policy/default.json compiled in), per
 *            tenant with a "*" default: allowed actions, models, tools, tasks, delegate domains,
 *            upload types and the largest upload. Deny by default; admin.* also needs scope admin.
 *            Decided inline in a few microseconds: rules are immutable after start, read
 *            without locks from any thread.
 *   opa      POST {policy.opa_url}/v1/data/soma/allow {"input": ...}; `true`/`false` or
 *            {allow, reason}. Undefined, non-2xx, timeout and transport errors are denies
 *            (fail closed) whose reason says which. Decisions are cached policy.cache_ttl_ms,
 *            keyed by the exact input. The HTTP call blocks, so it never runs on an io thread:
 *            io threads call policy_decide_now() (builtin, cached, or an engine that is down)
 *            and, when that cannot answer, policy_ask(), whose callback runs on a policy thread
 *            (src/policy/gate.c posts it back to the request's thread). Worker and pool threads
 *            may call policy_decide(), which blocks up to policy.opa_timeout_ms. An unreachable
 *            OPA, or three timeouts in a row (one slow decision does not), opens a circuit
 *            breaker (src/policy/breaker.c): for a second every
 *            decision that is not cached is denied at once with that reason (the message says
 *            the policy engine is unavailable), then one goes to OPA; an answer (or a healthy
 *            OPA in the health probe) closes it. Fail closed, but never a queue of waits.
 * input.degraded.somabrain is true on every decision while the memory service is not normal.
 * Every final decision counts in soma_policy_decisions_total{engine,action,decision}.
 * Before policy_start() (unit tests, CLI commands) decisions use the compiled-in rules; if
 * policy_start() failed (unreadable policy.file, opa without a URL) every decision is a deny
 * with reason policy_unavailable until it succeeds.
 */
#ifndef SOMA_POLICY_POLICY_H
#define SOMA_POLICY_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

/* The actions of CONTRACTS.md §6; admin actions are "admin.<area>" (admin.config, admin.keys...). */
#define POLICY_CONVERSATION_SEND "conversation.send"
#define POLICY_LLM_INVOKE	 "llm.invoke"
#define POLICY_UPLOAD_CREATE	 "upload.create"
#define POLICY_SESSION_READ	 "session.read"
#define POLICY_SESSION_DELETE	 "session.delete"
#define POLICY_TASK_RUN		 "task.run"
#define POLICY_MEMORY_WRITE	 "memory.write"	 /* context: {namespace?, ...} */
#define POLICY_MEMORY_RECALL	 "memory.recall" /* context: {namespace?, query?} */
#define POLICY_TOOL_EXECUTE	 "tool.execute"	 /* context: {tool} (required) */
#define POLICY_DELEGATE		 "delegate"	 /* context: {domain} (required) */

#define POLICY_REASON_MAX 96

/* What a decision is about. Every string is borrowed for the duration of the call. */
struct policy_input {
	const char *tenant;	 /* required */
	const char *subject;	 /* "key:<id>", "anonymous", ...; NULL: "" */
	const char *persona_id;	 /* NULL: JSON null */
	const char *scopes;	 /* space-separated; NULL: none */
	const char *action;	 /* one of the actions above */
	const char *resource;	 /* a label for audit and OPA ("session:<id>", "model:<name>"); NULL: "" */
	json_t *context;	 /* borrowed object (model, mime, size, tool, task, domain...); NULL: {} */
	bool somabrain_degraded; /* input.degraded.somabrain */
};

struct policy_decision {
	bool allow;			/* the answer */
	char reason[POLICY_REASON_MAX]; /* code ("allowed", "model_not_allowed", "opa_timeout") or OPA's words */
	const char *engine;		/* "builtin" or "opa" (static) */
	bool unavailable;		/* denied at once by the circuit breaker: OPA failed just before */
};

/* Reads policy.* and starts the configured engine (main thread, before io threads). On
 * failure writes a sentence naming the setting into why; decisions are then denied. */
enum soma_err policy_start(char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Stops the policy threads (their callbacks run first) and frees the rules. */
void policy_stop(void);
/* "builtin" or "opa": the engine decisions come from now. */
const char *policy_engine_name(void);

/* Decides without waiting when possible (builtin, a cached OPA answer, an engine that is down):
 * true with *out filled. False when OPA must be asked. Any thread. */
bool policy_decide_now(const struct policy_input *in, struct policy_decision *out);
/* Decides, asking OPA when needed: blocks up to policy.opa_timeout_ms. Never on an io thread. */
void policy_decide(const struct policy_input *in, struct policy_decision *out);

/* Runs on a policy thread with the decision (valid during the call only). */
typedef void (*policy_done_fn)(void *arg, const struct policy_decision *d);
/* Asks on the policy threads (the input is copied). SOMA_ERR_UNAVAILABLE when they are saturated
 * or stopping: then done is never called and the caller still owns arg. gone (may be NULL; must
 * stay valid until done runs) is read when a thread takes the job: true, the client left, and
 * OPA is not asked (done gets a deny "client_gone", not counted). A job that waited longer than
 * policy.opa_timeout_ms for a thread is denied (opa_timeout) without asking OPA; one that waited
 * less is given what is left of the timeout. */
enum soma_err policy_ask(const struct policy_input *in, policy_done_fn done, void *arg,
			 const _Atomic bool *gone) SOMA_MUST_CHECK;

/* The input as CONTRACTS.md §6 sends it: {"tenant",...,"degraded":{"somabrain":b}}. Caller owns. */
json_t *policy_input_json(const struct policy_input *in);
/* A sentence for the client about a deny reason: what was refused and what to do. Static or
 * written into buf. */
const char *policy_reason_words(const char *reason, char *buf, size_t cap);
/* The same for a decision: a deny of the circuit breaker says the policy engine is unavailable. */
const char *policy_decision_words(const struct policy_decision *d, char *buf, size_t cap);

/* ---- the consequences of a deny (gateway, workers) ------------------------------------------ */

/* A policy.denied event (role system; metadata {action, reason}) for session_id. Caller owns. */
json_t *policy_denied_event(const char *session_id, const struct policy_input *in, const struct policy_decision *d);
struct store;
/* Where policy.denied events are appended (the process's store; policy service start). Without
 * it (unit tests, CLI) events are dropped. */
void policy_denied_init(struct store *st);
/* Appends ev (taken) to the session through the store, without waiting, so stream subscribers
 * see it; a session that does not exist simply gets nothing. Any thread. */
void policy_denied_append(const char *tenant, const char *session_id, json_t *ev);
/* The audit row "policy.denied:<action>" for the input's identity. Any thread. */
void policy_denied_audit(const struct policy_input *in, const char *key_id, const struct policy_decision *d,
			 const char *request_id);

/* ---- the policy service (/v1/health) --------------------------------------------------------- */

/* "ok": builtin rules loaded, or OPA answered its last probe; "down": the engine is not loaded or
 * OPA is unreachable (decisions are denied). detail says which and what to check. Main thread;
 * never blocks (OPA is probed on a policy thread). */
bool policy_health(char *detail, size_t cap);

#endif
