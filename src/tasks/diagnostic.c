/*
 * diagnostic.c - the built-in tasks every worker runs, for operators and tests:
 *   soma.echo   returns {"args": [...], "kwargs": {...}}
 *   soma.sleep  sleeps `seconds` (kwargs, or the first arg; at most an hour), keeping its
 *               reservation alive and stopping early when cancelled
 *   soma.fail   fails with `message`; `retryable` true makes it a retryable failure (it is tried
 *               again with backoff and dead-lettered after max_retries), else permanent
 *   soma.noop   does nothing
 * A task's payload is {"args": [...], "kwargs": {...}}, as Celery's body carries them.
 */
#include <stdio.h>
#include <time.h>

#include "tasks/tasks.h"

static json_t *arg_or_kwarg(const struct task_ctx *t, const char *name, size_t position)
{
	json_t *v = json_object_get(json_object_get(t->payload, "kwargs"), name);
	return v ? v : json_array_get(json_object_get(t->payload, "args"), position);
}

static enum task_outcome task_echo(struct task_ctx *t)
{
	json_t *args = json_object_get(t->payload, "args"), *kwargs = json_object_get(t->payload, "kwargs");
	t->result = json_pack("{s:o, s:o}", "args", args ? json_incref(args) : json_array(), "kwargs",
			      kwargs ? json_incref(kwargs) : json_object());
	return TASK_DONE;
}

static enum task_outcome task_sleep(struct task_ctx *t)
{
	json_t *v = arg_or_kwarg(t, "seconds", 0);
	if (v && !json_is_number(v))
		return snprintf(t->error, sizeof(t->error), "soma.sleep: seconds must be a number"), TASK_FAIL;
	double seconds = v ? json_number_value(v) : 1.0;
	if (seconds < 0 || seconds > 3600)
		return snprintf(t->error, sizeof(t->error), "soma.sleep: seconds must be within 0..3600"), TASK_FAIL;
	long steps = (long)(seconds * 100.0 + 0.5);
	for (long i = 0; i < steps && !t->cancel; i++) {
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
		queue_task_heartbeat(t);
	}
	if (t->cancel && t->shutdown)
		return snprintf(t->error, sizeof(t->error), "interrupted by shutdown"), TASK_RETRY;
	t->result = json_pack("{s:f}", "slept", seconds);
	return TASK_DONE;
}

static enum task_outcome task_fail(struct task_ctx *t)
{
	const char *msg = json_string_value(arg_or_kwarg(t, "message", 0));
	snprintf(t->error, sizeof(t->error), "%s", msg ? msg : "soma.fail was asked to fail");
	return json_is_true(json_object_get(json_object_get(t->payload, "kwargs"), "retryable")) ? TASK_RETRY
												 : TASK_FAIL;
}

static enum task_outcome task_noop(struct task_ctx *t)
{
	(void)t;
	return TASK_DONE;
}

enum soma_err tasks_register_diagnostic(void)
{
	enum soma_err err = queue_task_register("soma.echo", task_echo);
	if (err == SOMA_OK)
		err = queue_task_register("soma.sleep", task_sleep);
	if (err == SOMA_OK)
		err = queue_task_register("soma.fail", task_fail);
	if (err == SOMA_OK)
		err = queue_task_register("soma.noop", task_noop);
	return err;
}
