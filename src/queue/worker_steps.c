/*
 * worker_steps.c - the handler table, the policy check before a task runs, its received event
 * (held behind the commit gate of an early start), the wait for its rate-limit token, whether a
 * terminated task ends REVOKED, the event after its outcome (see worker_steps.h) and the retry
 * backoff. The table is filled before the pools start and cleared after they stopped, so the
 * worker threads read it without a lock; the rest is called on the worker thread running the task.
 */
#include "queue/worker_steps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json_py.h"
#include "core/utf8.h"
#include "policy/policy.h"
#include "queue/hooks.h"
#include "queue/queue_int.h"

#define MAX_HANDLERS 32

static int backoff_base_ms = 2; /* queue_backoff_init */

void queue_backoff_init(int base_ms)
{
	backoff_base_ms = base_ms > 1 ? base_ms : 2;
}

int64_t queue_backoff_ms(int64_t attempts)
{
	int64_t cap = backoff_base_ms;
	for (int64_t i = 1; i < attempts && cap < 300000; i++)
		cap *= 2;
	if (cap > 300000)
		cap = 300000;
	return cap / 2 + (int64_t)(ids_random_u32() % (uint32_t)(cap / 2 + 1));
}

bool queue_commit_retry_wait(struct task_ctx *t, enum soma_err err, int64_t started_ms, int *pause_ms)
{
	if ((err != SOMA_ERR_FULL && err != SOMA_ERR_STORE) || (t && (t->cancel || t->shutdown)))
		return false;
	*pause_ms = *pause_ms ? (*pause_ms * 2 > 2000 ? 2000 : *pause_ms * 2) : 100;
	if (clock_wall_ms() + *pause_ms - started_ms > QUEUE_COMMIT_RETRY_MS)
		return false;
	for (int slept = 0; slept < *pause_ms; slept += 100) { /* a stop is seen within 100 ms */
		if (t && (t->cancel || t->shutdown))
			return false;
		nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
	}
	return true;
}

struct handler {
	char name[64];	    /* task name */
	task_handler_fn fn; /* implementation */
};

static struct handler handlers[MAX_HANDLERS];
static int nhandlers;

enum soma_err queue_task_register(const char *name, task_handler_fn fn)
{
	if (nhandlers == MAX_HANDLERS || strlen(name) >= sizeof(handlers[0].name))
		return SOMA_ERR_LIMIT;
	snprintf(handlers[nhandlers].name, sizeof(handlers[nhandlers].name), "%s", name);
	handlers[nhandlers++].fn = fn;
	return SOMA_OK;
}

task_handler_fn queue_find_handler(const char *name)
{
	for (int i = 0; i < nhandlers; i++) {
		if (strcmp(handlers[i].name, name) == 0)
			return handlers[i].fn;
	}
	return NULL;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct handler *)a)->name, ((const struct handler *)b)->name);
}

json_t *queue_task_names(void)
{
	struct handler sorted[MAX_HANDLERS];
	memcpy(sorted, handlers, sizeof(handlers[0]) * (size_t)nhandlers);
	qsort(sorted, (size_t)nhandlers, sizeof(sorted[0]), by_name);
	json_t *out = json_array();
	for (int i = 0; i < nhandlers; i++)
		json_array_append_new(out, json_string(sorted[i].name));
	return out;
}

const char *queue_task_label(const char *name)
{
	return name && queue_find_handler(name) ? name : "unknown";
}

void queue_handlers_clear(void)
{
	nhandlers = 0;
}

bool queue_allowed_to_run(struct task_ctx *ctx, const char *name)
{
	if (strcmp(name, "conversation.process") == 0)
		return true;
	char resource[96];
	snprintf(resource, sizeof(resource), "task:%s", name);
	json_t *pctx = json_pack("{s:s, s:s, s:b}", "task", name, "queue", ctx->queue, "queued", 1);
	struct policy_input in = {.tenant = ctx->tenant,
				  .subject = json_string_value(json_object_get(ctx->payload, "subject")),
				  .scopes = json_string_value(json_object_get(ctx->payload, "scopes")),
				  .action = POLICY_TASK_RUN,
				  .resource = resource,
				  .context = pctx};
	struct policy_decision d;
	policy_decide(&in, &d);
	json_decref(pctx);
	if (d.allow)
		return true;
	policy_denied_audit(&in, NULL, &d, NULL);
	snprintf(ctx->error, sizeof(ctx->error), "policy denied task.run for %s: %s", name, d.reason);
	return false;
}

int queue_terminated_signum(const struct task_ctx *ctx, enum task_outcome outcome)
{
	if (ctx->shutdown || (outcome == TASK_ACKED && ctx->store_ack))
		return 0;
	return ctx->terminated;
}

void queue_emit_revoked(const json_t *task, int signum, bool expired)
{
	json_t *f = json_pack("{s:b, s:o, s:b}", "terminated", signum != 0, "signum",
			      signum ? json_integer(signum) : json_null(), "expired", expired);
	queue_emit("revoked", task, f);
	json_decref(f);
}

void queue_emit_outcome(const struct task_ctx *ctx, enum task_outcome outcome, double runtime)
{
	json_t *f = NULL;
	if (outcome == TASK_RETRY || outcome == TASK_FAIL) {
		/* Celery's safe_repr of the exception (Exception('m')), and as the traceback the text we
		 * have: a C task has no Python frames */
		int hit = ctx->limit_hit;
		const char *type = hit == 2 ? "TimeLimitExceeded" : hit ? "SoftTimeLimitExceeded" : "Exception";
		char exc[sizeof(ctx->error) + 160], tb[sizeof(ctx->error) + 64];
		json_t *msg = json_string_nocheck(ctx->error);
		json_py_exc_repr(type, msg, exc, sizeof(exc));
		json_decref(msg);
		snprintf(tb, sizeof(tb), "%s: %s\n", type, ctx->error);
		utf8_repair(exc); /* (a cut message, repaired as where it is stored) */
		utf8_repair(tb);
		f = json_pack("{s:s, s:s}", "exception", exc, "traceback", tb);
	} else {
		f = json_pack("{s:f, s:O?}", "runtime", runtime, "result", ctx->result);
	}
	queue_emit(outcome == TASK_RETRY ? "retried" : outcome == TASK_FAIL ? "failed" : "succeeded", ctx->task, f);
	json_decref(f);
}

static void emit_received_started(void *task)
{
	queue_emit("received", task, NULL);
	queue_emit("started", task, NULL);
}

static void emit_started(void *task)
{
	queue_emit("started", task, NULL);
}

static void release_task(void *task)
{
	json_decref(task);
}

void queue_emit_received(json_t *task, struct commit_gate *gate)
{
	/* `inspect active`'s time_start (queue_active_json): set before another thread sees the task */
	json_object_set_new_nocheck(task, "time_start", json_real((double)clock_wall_ms() / 1000.0));
	bool sent = json_is_true(json_object_get(task, "received_sent")); /* on receipt (an eta: held) */
	if (gate)
		commit_gate_hold(gate, sent ? emit_started : emit_received_started, release_task, json_incref(task));
	else if (!sent)
		queue_emit("received", task, NULL);
}

bool queue_task_expired(const json_t *task)
{
	int64_t expires = json_integer_value(json_object_get(task, "expires_ms"));
	if (!expires) /* local queue: the option as POST /v1/tasks stored it */
		expires = json_integer_value(
			json_object_get(json_object_get(json_object_get(task, "payload"), "options"), "expires_ms"));
	return expires > 0 && clock_wall_ms() >= expires;
}

bool queue_rate_wait(struct task_ctx *ctx, const char *name)
{
	int64_t wait_ms = queue_rate_take(name);
	if (wait_ms <= 0)
		return true;
	uint64_t until = clock_mono_ns() + (uint64_t)wait_ms * 1000000u;
	for (;;) {
		if (queue_stopping())
			return false;
		/* revoked or expired meanwhile: no use waiting on, the caller skips it now */
		if (queue_is_revoked(ctx->id) || queue_task_expired(ctx->task))
			return true;
		/* the task stays reserved while it waits: without this a wait past the visibility
		 * timeout had it reserved, and run, a second time */
		queue_task_heartbeat(ctx);
		uint64_t now = clock_mono_ns();
		if (now >= until)
			return true;
		uint64_t step_ns = until - now > 100000000u ? 100000000u : until - now;
		struct timespec ts = {0, (long)step_ns};
		nanosleep(&ts, NULL);
	}
}

void queue_task_deadlines(struct task_ctx *ctx, int64_t waited_ms)
{
	ctx->soft_deadline_ms = json_integer_value(json_object_get(ctx->task, "soft_deadline_ms"));
	ctx->hard_deadline_ms = json_integer_value(json_object_get(ctx->task, "hard_deadline_ms"));
	if (ctx->soft_deadline_ms || ctx->hard_deadline_ms) { /* redis: set on delivery, before the wait */
		ctx->soft_deadline_ms += ctx->soft_deadline_ms ? waited_ms : 0;
		ctx->hard_deadline_ms += ctx->hard_deadline_ms ? waited_ms : 0;
		return;
	}
	if (!ctx->store_ack) /* the local queue's row: the options as POST /v1/tasks stored them */
		return;
	json_t *opts = json_object_get(ctx->payload, "options");
	double hard = json_number_value(json_object_get(opts, "time_limit"));
	double soft = json_number_value(json_object_get(opts, "soft_time_limit"));
	int64_t now = clock_wall_ms();
	if (hard > 0)
		ctx->hard_deadline_ms = now + (int64_t)(hard * 1000.0);
	if (soft > 0)
		ctx->soft_deadline_ms = now + (int64_t)(soft * 1000.0);
}
