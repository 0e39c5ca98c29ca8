/*
 * worker_steps.h - what running a task needs beside the pools' state (worker.c): the handler
 * table, the policy check before a task runs, its received event and the event after its outcome.
 */
#ifndef SOMA_QUEUE_WORKER_STEPS_H
#define SOMA_QUEUE_WORKER_STEPS_H

#include "queue/handoff.h"
#include "queue/queue.h"

/* The handler registered for a task name (queue_task_register), or NULL. */
task_handler_fn queue_find_handler(const char *name);
/* The task label of a metric: name when a handler is registered for it, else "unknown" (a name
 * comes from any tenant's POST /v1/tasks: each new one would take one of a family's capped
 * series). Static storage or name itself (borrowed). */
const char *queue_task_label(const char *name);
/* Forgets every handler (queue_stop, after the threads are joined). */
void queue_handlers_clear(void);
/* Policy (issue 6): queued work is asked again as its sender (task.run) before it runs.
 * conversation.process asks conversation.send and llm.invoke itself; any other task refused here
 * gets ctx->error and an audit row. True when it may run. */
bool queue_allowed_to_run(struct task_ctx *ctx, const char *name);
/* The task's received event; with gate (an early start, handoff.h) its received and started
 * events wait for the message's commit and are never sent when it fails (the task then never
 * existed). task and gate are borrowed; task.time_start is set (unix s, for queue_active_json).
 * The caller sends started itself only without a gate. A task marked received_sent (true: the
 * redis driver sent its received event when it held the message for its eta) gets no second one. */
void queue_emit_received(json_t *task, struct commit_gate *gate);
/* True when the task's expires (expires_ms, or payload.options.expires_ms on the local queue)
 * has passed. */
bool queue_task_expired(const json_t *task);
/* Waits for the task's rate-limit token (queue.rate_limits) holding the task: its reservation is
 * kept alive meanwhile (queue_task_heartbeat), and the wait ends early when the task is revoked
 * or expires (the caller checks for that next, after the wait, as Celery does). ctx is the
 * task's, not yet running. False when the process began to stop during the wait: the caller
 * gives the task back unstarted. Worker thread only. */
bool queue_rate_wait(struct task_ctx *ctx, const char *name);
/* Sets ctx's soft and hard deadlines as the task starts: the redis driver's (set on delivery)
 * moved on by waited_ms, the time the task then waited for its rate-limit token (a limit counts
 * the run, as Celery's does); on the local queue from payload.options time_limit and
 * soft_time_limit (seconds), which the ticker (running.c) then enforces as the redis driver's
 * maintenance thread does. */
void queue_task_deadlines(struct task_ctx *ctx, int64_t waited_ms);
/* The task event after a task's outcome was recorded (succeeded, retried, failed). */
void queue_emit_outcome(const struct task_ctx *ctx, enum task_outcome outcome, double runtime);

/* The signal of the revoke with terminate that stopped the task (queue_terminate) when it ends
 * REVOKED instead of its outcome, else 0: not at shutdown (it runs again), nor when the handler
 * acked it in its own commit of the store's queue (store_ack and TASK_ACKED: that commit finished
 * the row). On the redis driver a handler's commit of its effects (a stopped chat reply's
 * cancelled final, TASK_ACKED) is not the ack: the task still ends REVOKED. */
int queue_terminated_signum(const struct task_ctx *ctx, enum task_outcome outcome);

/* Celery's task-revoked of a task ended REVOKED: terminated with signum (the signal a revoke with
 * terminate named, 0: none, then signum is None), expired. task borrowed. */
void queue_emit_revoked(const json_t *task, int signum, bool expired);

/* The first retry delay (queue.retry_backoff_ms) queue_backoff_ms doubles from (queue_start). */
void queue_backoff_init(int base_ms);

#endif
