/*
 * tasks_body.c - the checks of a POST /v1/tasks body (and of the canvas's task and queue names):
 * split from tasks_publish.c, which sends what passes.
 *
 * DESIGN: pure checks on the io thread, no I/O: each wrong field answers its own 400 or 422 code
 * (docs/api.md) before policy is asked or anything is published. Times (countdown, eta, expires)
 * become wall-clock milliseconds here.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "queue/celery_wire.h"
#include "queue/queue.h"

/* Task names: 1..128 of letters, digits, '.', '_', '-' (Celery names are dotted paths). */
bool gw_task_name_ok(const char *s, size_t max)
{
	size_t n = 0;
	for (; s && s[n]; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9') ||
		      s[n] == '.' || s[n] == '_' || s[n] == '-' || s[n] == ':'))
			return false;
	return n > 0 && n <= max;
}

/* A queue this deployment knows: one its workers serve or a target of queue.routes. */
struct route_match {
	const char *queue; /* looked for */
	bool found;	   /* it is a target */
};

static void match_target(const char *queue, size_t len, void *arg)
{
	struct route_match *m = arg;
	m->found = m->found || (strlen(m->queue) == len && memcmp(m->queue, queue, len) == 0);
}

bool gw_task_queue_ok(const char *q)
{
	struct queue_def defs[16];
	int n = queue_defs_from_config(defs, 16);
	for (int i = 0; i < n; i++)
		if (strcmp(defs[i].name, q) == 0)
			return true;
	struct route_match m = {q, false};
	queue_route_targets(match_target, &m);
	return m.found;
}

static bool positive_seconds(json_t *v, double max)
{
	return !v || (json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) <= max);
}

/* A time given as an ISO-8601 string or as seconds from now; *ms 0 when absent. */
static bool when(json_t *v, int64_t *ms)
{
	*ms = 0;
	if (!v || json_is_null(v))
		return true;
	if (json_is_string(v))
		return celery_time_parse(json_string_value(v), ms);
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 31536000)
		return false;
	*ms = clock_wall_ms() + (int64_t)(json_number_value(v) * 1000.0);
	return true;
}

bool gw_task_body_valid(struct http_req *req, json_t *b, int64_t *eta, int64_t *expires)
{
	json_t *name = json_object_get(b, "task"), *args = json_object_get(b, "args"),
	       *kwargs = json_object_get(b, "kwargs"), *queue = json_object_get(b, "queue"),
	       *countdown = json_object_get(b, "countdown"), *retries = json_object_get(b, "max_retries"),
	       *prio = json_object_get(b, "priority"), *key = json_object_get(b, "idempotency_key"),
	       *tid = json_object_get(b, "task_id");
	const char *err = NULL, *code = NULL;
	int status = 400;
	if (!json_is_string(name) || !gw_task_name_ok(json_string_value(name), 128))
		code = "invalid_task",
		err = "task must be a task name such as \"soma.echo\" (letters, digits, . _ - :)";
	else if (tid && (!json_is_string(tid) || json_string_length(tid) != strlen(json_string_value(tid)) ||
			 !gw_valid_task_id(json_string_value(tid))))
		code = "invalid_task_id",
		err = "task_id must be 1 to 255 characters without control characters (Celery's ids are any text)";
	else if (args && !json_is_array(args))
		code = "invalid_args", err = "args must be an array";
	else if (kwargs && !json_is_object(kwargs))
		code = "invalid_kwargs", err = "kwargs must be an object";
	else if (queue &&
		 (!gw_task_name_ok(json_string_value(queue), 64) || !gw_task_queue_ok(json_string_value(queue))))
		status = 422, code = "unknown_queue",
		err = "queue must be one this deployment serves (conversation, celery, queue.queues) or a queue.routes "
		      "target";
	else if (!positive_seconds(countdown, 31536000))
		code = "invalid_countdown", err = "countdown must be a number of seconds within 0..31536000";
	else if (!when(json_object_get(b, "eta"), eta))
		code = "invalid_eta", err = "eta must be an ISO-8601 time (2030-01-01T00:00:00Z) or seconds from now";
	else if (!when(json_object_get(b, "expires"), expires))
		code = "invalid_expires", err = "expires must be an ISO-8601 time or seconds from now";
	else if (retries &&
		 (!json_is_integer(retries) || json_integer_value(retries) < 0 || json_integer_value(retries) > 100))
		code = "invalid_max_retries", err = "max_retries must be an integer within 0..100";
	else if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > 9))
		code = "invalid_priority", err = "priority must be an integer within 0..9 (0 is served first)";
	else if (!positive_seconds(json_object_get(b, "time_limit"), 86400) ||
		 !positive_seconds(json_object_get(b, "soft_time_limit"), 86400))
		code = "invalid_time_limit", err = "time_limit and soft_time_limit must be seconds within 0..86400";
	else if (key && (!json_is_string(key) || json_string_length(key) == 0 || json_string_length(key) > 128))
		code = "invalid_idempotency_key", err = "idempotency_key must be a string of 1..128 characters";
	else if (key && !queue_driver_is_redis())
		status = 422, code = "unsupported_field",
		err = "idempotency_key needs queue.driver=redis; send the task without it";
	if (code)
		http_respond_error(req, status, code, "%s", err);
	return code == NULL;
}
