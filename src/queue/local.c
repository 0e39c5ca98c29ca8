/*
 * local.c - the local queue driver: tasks are rows of the store's tasks table (see queue.h).
 *
 * DESIGN: reserve = STORE_OP_TASK_RESERVE with the visibility timeout; the outcome is
 * STORE_OP_TASK_FINISH (SUCCESS, FAILURE as a dead letter, or REVOKED for a task skipped as
 * revoked or expired), STORE_OP_TASK_RETRY (backoff, dead after max_retries). A reject
 * (TASK_REJECT) is a FAILURE without a dead letter (FINISH with failed and rejected: the row
 * leaves the queue table in the same commit); the heartbeat is STORE_OP_TASK_EXTEND. A handler
 * may ack in its own commit (store_ack). The state of a worker is only its queue name and worker
 * id; the pool waits for queue_notify between empty reserves (blocking = false).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/utf8.h"
#include "queue/queue_int.h"

struct local_worker {
	char queue[64]; /* the queue it serves */
	char id[64];	/* worker id recorded on reserved tasks */
	bool failing;	/* the last reserve failed (logged once per outage, not on every poll) */
};

static void *local_open(const char *queue, const char *worker_id)
{
	struct local_worker *w = calloc(1, sizeof(*w));
	if (w) {
		snprintf(w->queue, sizeof(w->queue), "%s", queue);
		snprintf(w->id, sizeof(w->id), "%s", worker_id);
	}
	return w;
}

static void local_close(void *w)
{
	free(w);
}

static enum task_outcome local_settle(void *wp, struct task_ctx *ctx, enum task_outcome outcome)
{
	(void)wp;
	struct store_op *op = NULL;
	if (outcome == TASK_RETRY) {
		op = store_op_new(STORE_OP_TASK_RETRY, ctx->tenant);
		if (op && ctx->shutdown) {
			op->flag = true; /* interrupted, not failed: requeue at once without using an attempt */
		} else if (op && ctx->outage) {
			op->flag = true; /* the store did not answer: again later, without using an attempt */
			op->delay_ms = queue_backoff_ms(2);
		} else if (op) {
			op->delay_ms = queue_backoff_ms(json_integer_value(json_object_get(ctx->task, "attempts")));
		}
	} else if (outcome != TASK_ACKED) {
		op = store_op_new(STORE_OP_TASK_FINISH, ctx->tenant);
		if (op) {
			op->failed = outcome == TASK_FAIL || outcome == TASK_REJECT;
			op->rejected = outcome == TASK_REJECT;
			op->row = ctx->result;
			ctx->result = NULL;
		}
	}
	if (!op)
		return outcome;
	snprintf(op->task_id, sizeof(op->task_id), "%s", ctx->id);
	snprintf(op->error_text, sizeof(op->error_text), "%s", ctx->error);
	utf8_repair(op->error_text); /* (a shorter buffer may cut inside a character) */
	/* a full disk: tried again for a while (queue_commit_retry_wait), else the task would wait
	 * for the visibility timeout to run again */
	int64_t started = clock_wall_ms();
	int pause = 0;
	while (store_op_wait(queue_store(), op) != SOMA_OK && queue_commit_retry_wait(ctx, op->err, started, &pause))
		op->dead = false;
	if (op->err != SOMA_OK)
		log_warn("queue",
			 "could not record the outcome of task %s (%s); it runs again after the visibility timeout",
			 ctx->id, soma_err_str(op->err));
	else if (op->dead)
		log_error("queue", "task %s dead-lettered after %lld attempts: %s", ctx->id,
			  (long long)json_integer_value(json_object_get(ctx->task, "attempts")), ctx->error);
	if (op->dead)
		outcome = TASK_FAIL;
	store_op_free(op);
	return outcome == TASK_REJECT ? TASK_FAIL : outcome;
}

/* Puts a reserved task back at once without using an attempt (the process is stopping). */
static void local_requeue(void *wp, json_t *task)
{
	struct task_ctx ctx = {.task = task,
			       .id = json_string_value(json_object_get(task, "id")),
			       .tenant = json_string_value(json_object_get(task, "tenant")),
			       .shutdown = true};
	snprintf(ctx.error, sizeof(ctx.error), "returned unstarted at shutdown");
	local_settle(wp, &ctx, TASK_RETRY);
}

/* A revoked or expired task leaves the queue as REVOKED, as a revoke of a queued one does: not a
 * FAILURE, not a dead letter (docs/api.md). */
static void local_revoke(void *wp, json_t *task, const char *why)
{
	(void)wp;
	const char *id = json_string_value(json_object_get(task, "id"));
	struct store_op *op = store_op_new(STORE_OP_TASK_FINISH, json_string_value(json_object_get(task, "tenant")));
	if (!op || !id) {
		store_op_free(op);
		return;
	}
	op->revoked = true;
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text), "%s", why);
	if (store_op_wait(queue_store(), op) != SOMA_OK)
		log_warn("queue",
			 "could not record task %s as REVOKED (%s); it is skipped again after the visibility timeout",
			 id, soma_err_str(op->err));
	store_op_free(op);
}

/* Reserves the next ready task of the worker's queue, or returns NULL when there is none. */
static json_t *local_reserve(void *wp)
{
	struct local_worker *w = wp;
	struct store_op *op = store_op_new(STORE_OP_TASK_RESERVE, "");
	if (!op)
		return NULL;
	snprintf(op->queue, sizeof(op->queue), "%s", w->queue);
	snprintf(op->worker, sizeof(op->worker), "%s", w->id);
	op->delay_ms = queue_visibility_ms();
	json_t *task = NULL;
	enum soma_err err = store_op_wait(queue_store(), op);
	if (err == SOMA_OK) {
		task = op->session;
		op->session = NULL;
	}
	if (err != SOMA_OK && err != SOMA_ERR_NOT_FOUND) {
		if (!w->failing)
			log_warn("queue", "cannot reserve from queue %s: %s; retrying until the store answers",
				 w->queue, soma_err_str(err));
		w->failing = true;
	} else if (w->failing) {
		log_info("queue", "reserving from queue %s again", w->queue);
		w->failing = false;
	}
	store_op_free(op);
	return task;
}

static void local_heartbeat(void *wp, struct task_ctx *ctx)
{
	(void)wp;
	int64_t now = clock_wall_ms();
	if (now - ctx->lease_renewed_ms < queue_visibility_ms() / 3)
		return;
	struct store_op *op = store_op_new(STORE_OP_TASK_EXTEND, ctx->tenant);
	if (!op)
		return;
	snprintf(op->task_id, sizeof(op->task_id), "%s", ctx->id);
	snprintf(op->worker, sizeof(op->worker), "%s", ctx->worker);
	op->delay_ms = queue_visibility_ms();
	op->done = store_op_free; /* fire and forget: a late extension is retried at the next beat */
	if (store_submit(queue_store(), op) == SOMA_OK)
		ctx->lease_renewed_ms = now;
	else
		store_op_free(op);
}

const struct queue_driver queue_local_driver = {
	.name = "local",
	.blocking = false,
	.open = local_open,
	.close = local_close,
	.reserve = local_reserve,
	.settle = local_settle,
	.heartbeat = local_heartbeat,
	.requeue = local_requeue,
	.revoke = local_revoke,
};
