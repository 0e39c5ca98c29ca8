/*
 * tasks_canvas.c - Celery's canvas through the task API (queue.driver=redis only):
 *   POST /v1/tasks/chain {tasks: [{task, args?, kwargs?, queue?}, ...]} -> 202 {task_id (the last), task_ids}
 *   POST /v1/tasks/group {tasks: [...]}                   -> 202 {group_id, task_ids}
 *   POST /v1/tasks/chord {header: [...], body: {task,...}} -> 202 {group_id, task_ids, task_id (the body)}
 *
 * DESIGN: the messages are the ones Celery's canvas sends (interop.md 1.4, 1.8), so a Python
 * worker can run any member and either side joins the chord: a chain is its first task with the
 * rest as embed.chain (reversed, each a signature with options.task_id and queue); a group is
 * its members with headers group/group_index; a chord is a group whose members carry the body
 * signature in embed.chord, the chord's size written as celery-taskset-meta-<gid>.s by the
 * relay before the members go out. Every task is asked of policy (task.run, context {task, queue}: the queue its row
 * goes to, explicit or routed) in turn, then each row goes through the store's outbox as POST /v1/tasks does; the
 * carried state (rows left, the answer) is a JSON object that rides from one step to the next (policy arg, then
 * op->session, which TASK_PUBLISH does not use).
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "policy/gate.h"
#include "queue/queue.h"

#define CANVAS_MAX 64

static void drop_state(void *arg)
{
	json_decref(arg);
}

static void publish_next(struct http_req *req, json_t *st);

static void on_published(struct http_req *req, struct store_op *op)
{
	json_t *st = op->session;
	op->session = NULL;
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "task");
		json_decref(st);
		return;
	}
	publish_next(req, st);
}

static void publish_next(struct http_req *req, json_t *st)
{
	json_t *rows = json_object_get(st, "rows");
	if (json_array_size(rows) == 0) {
		http_respond_json(req, 202, json_incref(json_object_get(st, "answer")));
		json_decref(st);
		return;
	}
	struct store_op *op = store_op_new(STORE_OP_TASK_PUBLISH, req->ident.tenant);
	if (!op) {
		json_decref(st);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->task = json_incref(json_array_get(rows, 0));
	json_array_remove(rows, 0);
	op->session = st;
	gw_store(req, op, on_published);
}

static void ask_next(struct http_req *req, void *arg)
{
	json_t *st = arg;
	size_t i = (size_t)json_integer_value(json_object_get(st, "asked"));
	json_t *names = json_object_get(st, "names");
	if (i >= json_array_size(names)) {
		publish_next(req, st);
		return;
	}
	json_object_set_new(st, "asked", json_integer((json_int_t)i + 1));
	json_t *entry = json_array_get(names, i); /* {task, queue}: the queue it is published to */
	const char *name = json_string_value(json_object_get(entry, "task"));
	char resource[160];
	snprintf(resource, sizeof(resource), "task:%s", name);
	json_t *ctx = json_pack("{s:s, s:O}", "task", name, "queue", json_object_get(entry, "queue"));
	struct policy_input in = {.action = POLICY_TASK_RUN, .resource = resource, .context = ctx};
	policy_gate_ask(req, &in, NULL, ask_next, st, drop_state);
	json_decref(ctx);
}

/* Checks one {task, args?, kwargs?, queue?}; answers 4xx and returns false when wrong. */
static bool valid_entry(struct http_req *req, json_t *e, const char *where)
{
	json_t *args = json_object_get(e, "args"), *kwargs = json_object_get(e, "kwargs"),
	       *queue = json_object_get(e, "queue");
	if (!json_is_object(e) || !gw_task_name_ok(json_string_value(json_object_get(e, "task")), 128))
		http_respond_error(req, 400, "invalid_task", "%s: each task must be {task, args?, kwargs?, queue?}",
				   where);
	else if (args && !json_is_array(args))
		http_respond_error(req, 400, "invalid_args", "%s: args must be an array", where);
	else if (kwargs && !json_is_object(kwargs))
		http_respond_error(req, 400, "invalid_kwargs", "%s: kwargs must be an object", where);
	else if (queue &&
		 (!gw_task_name_ok(json_string_value(queue), 64) || !gw_task_queue_ok(json_string_value(queue))))
		http_respond_error(req, 422, "unknown_queue", "%s: queue must be one this deployment serves", where);
	else
		return true;
	return false;
}

static bool valid_list(struct http_req *req, json_t *list, const char *where)
{
	if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > CANVAS_MAX) {
		http_respond_error(req, 400, "invalid_tasks", "%s must be an array of 1..%d tasks", where, CANVAS_MAX);
		return false;
	}
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e)
	{
		if (!valid_entry(req, e, where))
			return false;
	}
	return true;
}

static const char *entry_queue(json_t *e, char *buf, size_t cap)
{
	const char *q = json_string_value(json_object_get(e, "queue"));
	return q ? q : queue_route(json_string_value(json_object_get(e, "task")), buf, cap);
}

/* Celery's signature of entry e under id (chord_size > 0: a chord body). */
static json_t *signature(json_t *e, const char *id, int chord_size)
{
	char routed[64];
	json_t *args = json_object_get(e, "args"), *kwargs = json_object_get(e, "kwargs");
	json_t *s = json_pack("{s:O, s:o, s:o, s:{s:s, s:s}, s:n, s:b}", "task", json_object_get(e, "task"), "args",
			      args ? json_incref(args) : json_array(), "kwargs",
			      kwargs ? json_incref(kwargs) : json_object(), "options", "task_id", id, "queue",
			      entry_queue(e, routed, sizeof(routed)), "subtask_type", "immutable", 0);
	if (s && chord_size > 0)
		json_object_set_new(s, "chord_size", json_integer(chord_size));
	return s;
}

/* The outbox row of entry e under id; celery (taken) holds embed/group/group_index/root_id. */
static json_t *row(struct http_req *req, json_t *e, const char *id, json_t *celery)
{
	char routed[64];
	json_t *args = json_object_get(e, "args"), *kwargs = json_object_get(e, "kwargs");
	return json_pack("{s:s, s:s, s:O, s:{s:o, s:o, s:s, s:s, s:{s:i}, s:o}, s:I, s:I}", "id", id, "queue",
			 entry_queue(e, routed, sizeof(routed)), "name", json_object_get(e, "task"), "payload", "args",
			 args ? json_incref(args) : json_array(), "kwargs",
			 kwargs ? json_incref(kwargs) : json_object(), "subject", req->ident.subject, "scopes",
			 req->ident.scopes, "options", "priority", 0, "celery", celery, "max_retries",
			 (json_int_t)cfg_int(CFG_QUEUE_MAX_RETRIES), "available_ms", (json_int_t)clock_wall_ms());
}

static json_t *embed(json_t *chain, json_t *chord)
{
	return json_pack("{s:n, s:n, s:o, s:o}", "callbacks", "errbacks", "chain", chain ? chain : json_null(), "chord",
			 chord ? chord : json_null());
}

/* What task.run is asked about for entry e: {task, queue} (the queue its row goes to). */
static json_t *asked_entry(json_t *e)
{
	char routed[64];
	return json_pack("{s:O, s:s}", "task", json_object_get(e, "task"), "queue",
			 entry_queue(e, routed, sizeof(routed)));
}

enum kind { CHAIN, GROUP, CHORD };

static void canvas(struct http_req *req, enum kind kind)
{
	if (!queue_driver_is_redis()) {
		http_respond_error(req, 422, "unsupported", "canvas needs queue.driver=redis");
		return;
	}
	json_t *b = gw_json_object(req);
	if (!b)
		return;
	json_t *list = json_object_get(b, kind == CHORD ? "header" : "tasks"), *body = json_object_get(b, "body");
	if (!valid_list(req, list, kind == CHORD ? "header" : "tasks") ||
	    (kind == CHORD && !valid_entry(req, body, "body"))) {
		json_decref(b);
		return;
	}
	size_t n = json_array_size(list);
	char ids[CANVAS_MAX][IDS_UUID_LEN + 1], gid[IDS_UUID_LEN + 1], bid[IDS_UUID_LEN + 1];
	for (size_t i = 0; i < n; i++)
		ids_uuid4(ids[i]);
	ids_uuid4(gid);
	ids_uuid4(bid);
	json_t *rows = json_array(), *names = json_array(), *task_ids = json_array(), *answer = NULL;
	for (size_t i = 0; i < n; i++) {
		json_array_append_new(task_ids, json_string(ids[i]));
		json_array_append_new(names, asked_entry(json_array_get(list, i)));
	}
	if (kind == CHAIN) {
		json_t *rest = json_array();
		for (size_t i = n; i-- > 1;)
			json_array_append_new(rest, signature(json_array_get(list, i), ids[i], 0));
		json_t *owned = json_deep_copy(task_ids);
		json_array_remove(owned, 0);
		json_array_append_new(rows, row(req, json_array_get(list, 0), ids[0],
						json_pack("{s:o, s:s, s:o}", "embed", embed(rest, NULL), "root_id",
							  ids[0], "owned", owned)));
		answer = json_pack("{s:s, s:O, s:s}", "task_id", ids[n - 1], "task_ids", task_ids, "status", "PENDING");
	} else {
		json_t *bsig = kind == CHORD ? signature(body, bid, (int)n) : NULL;
		for (size_t i = 0; i < n; i++) {
			json_t *cel =
				json_pack("{s:o, s:s, s:i}", "embed", embed(NULL, bsig ? json_incref(bsig) : NULL),
					  "group", gid, "group_index", (int)i);
			if (bsig)
				json_object_set_new(cel, "chord_size", json_integer((json_int_t)n));
			if (bsig && i == 0)
				json_object_set_new(cel, "owned", json_pack("[s]", bid));
			json_array_append_new(rows, row(req, json_array_get(list, i), ids[i], cel));
		}
		json_decref(bsig);
		answer = json_pack("{s:s, s:O, s:s}", "group_id", gid, "task_ids", task_ids, "status", "PENDING");
		if (kind == CHORD) {
			json_object_set_new(answer, "task_id", json_string(bid));
			json_array_append_new(names, asked_entry(body));
		}
	}
	json_decref(task_ids);
	json_decref(b);
	json_t *st = json_pack("{s:o, s:o, s:o, s:i}", "rows", rows, "names", names, "answer", answer, "asked", 0);
	if (!st) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	ask_next(req, st);
}

void gw_task_chain(struct http_req *req, void *arg)
{
	(void)arg;
	canvas(req, CHAIN);
}

void gw_task_group(struct http_req *req, void *arg)
{
	(void)arg;
	canvas(req, GROUP);
}

void gw_task_chord(struct http_req *req, void *arg)
{
	(void)arg;
	canvas(req, CHORD);
}
