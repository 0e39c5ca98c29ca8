/*
 * tasks_api.c - the task API over the queue this process runs: POST /v1/tasks and
 * GET /v1/tasks/{id} (the caller's tenant), and for operators (scope admin) GET /v1/queues, GET /v1/workers, and the
 * dead letters: GET /v1/dead-letters, POST /v1/dead-letters/{id}/requeue,
 * DELETE /v1/dead-letters/{id}.
 *
 * DESIGN: counts and task rows come from the store (so they are the same on every node that
 * shares it); consumers, busy workers and the finished-per-minute rate come from this process's
 * worker pools (queue_pools_json), and say so with `"scope": "this node"`.
 */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "gateway/gateway.h"
#include "policy/gate.h"
#include "queue/queue.h"

#define DEAD_PAGE_DEFAULT 50
#define DEAD_PAGE_MAX	  500

static struct store_op *task_op(struct http_req *req, enum store_op_kind kind, bool all_tenants)
{
	const char *id = http_req_param(req, "id").p;
	if (!id || !gw_valid_id(id)) {
		http_respond_error(req, 404, "not_found", "no such task: ids are 1 to 64 of A-Z a-z 0-9 _ -");
		return NULL;
	}
	struct store_op *op = store_op_new(kind, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return NULL;
	}
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text),
		 kind == STORE_OP_TASK_GET ? "task %s not found" : "no dead letter %s", id);
	op->all_tenants = all_tenants;
	return op;
}

/* Task names: 1..128 of letters, digits, '.', '_', '-' (Celery names are dotted paths). */
static bool valid_task_name(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9') ||
		      s[n] == '.' || s[n] == '_' || s[n] == '-'))
			return false;
	return n > 0 && n <= 128;
}

static void on_published(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK)
		gw_store_error(req, op, "task");
	else
		http_respond_json(
			req, 202,
			json_pack("{s:O, s:s}", "task_id", json_object_get(op->task, "id"), "status", "PENDING"));
}

/* POST /v1/tasks {task, args?, kwargs?, queue?, countdown?, max_retries?}. The fields of the
 * full engine that this queue does not implement yet are refused rather than ignored. */
/* ---- policy (issue 6): task.run for this task name before it is published ---- */
static void publish_allowed(struct http_req *req, void *arg)
{
	gw_store(req, arg, on_published);
}

static void drop_op(void *arg)
{
	store_op_free(arg);
}

static void ask_task_run(struct http_req *req, struct store_op *op, const char *task, const char *queue)
{
	char resource[160];
	snprintf(resource, sizeof(resource), "task:%s", task);
	json_t *ctx = json_pack("{s:s, s:s}", "task", task, "queue", queue);
	struct policy_input in = {.action = POLICY_TASK_RUN, .resource = resource, .context = ctx};
	policy_gate_ask(req, &in, NULL, publish_allowed, op, drop_op);
	json_decref(ctx);
}

static void publish_task(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	static const char *const unsupported[] = {"eta", "expires", "priority", "idempotency_key"};
	json_t *name = json_object_get(body, "task"), *args = json_object_get(body, "args"),
	       *kwargs = json_object_get(body, "kwargs"), *queue = json_object_get(body, "queue"),
	       *countdown = json_object_get(body, "countdown"), *retries = json_object_get(body, "max_retries");
	const char *qname = queue ? json_string_value(queue) : "celery";
	for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		if (json_object_get(body, unsupported[i])) {
			http_respond_error(req, 422, "unsupported_field",
					   "%s is not supported by this queue yet; send the task without it",
					   unsupported[i]);
			return (void)json_decref(body);
		}
	}
	if (!json_is_string(name) || !valid_task_name(json_string_value(name)))
		http_respond_error(req, 400, "invalid_task",
				   "task must be a task name such as \"soma.echo\" (letters, digits, . _ -)");
	else if (args && !json_is_array(args))
		http_respond_error(req, 400, "invalid_args", "args must be an array");
	else if (kwargs && !json_is_object(kwargs))
		http_respond_error(req, 400, "invalid_kwargs", "kwargs must be an object");
	else if (!qname || (strcmp(qname, "celery") != 0 && strcmp(qname, "conversation") != 0))
		http_respond_error(req, 422, "unknown_queue",
				   "queue must be one this deployment serves: celery or conversation");
	else if (countdown && (!json_is_number(countdown) || json_number_value(countdown) < 0 ||
			       json_number_value(countdown) > 31536000))
		http_respond_error(req, 400, "invalid_countdown",
				   "countdown must be a number of seconds within 0..31536000");
	else if (retries &&
		 (!json_is_integer(retries) || json_integer_value(retries) < 0 || json_integer_value(retries) > 100))
		http_respond_error(req, 400, "invalid_max_retries", "max_retries must be an integer within 0..100");
	else {
		struct store_op *op = store_op_new(STORE_OP_TASK_PUBLISH, req->ident.tenant);
		char id[IDS_UUID_LEN + 1];
		ids_uuid7(id); /* time-ordered: the tasks table grows at its end */
		int64_t due = clock_wall_ms() + (int64_t)(countdown ? json_number_value(countdown) * 1000.0 : 0);
		if (op)
			op->task = json_pack(
				"{s:s, s:s, s:O, s:{s:o, s:o, s:s, s:s}, s:I, s:I}", "id", id, "queue", qname, "name",
				name, "payload", "args", args ? json_incref(args) : json_array(), "kwargs",
				kwargs ? json_incref(kwargs) : json_object(), "subject", req->ident.subject, "scopes",
				req->ident.scopes, "max_retries",
				(json_int_t)(retries ? json_integer_value(retries) : cfg_int(CFG_QUEUE_MAX_RETRIES)),
				"available_ms", (json_int_t)due);
		if (!op || !op->task) {
			store_op_free(op);
			http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		} else {
			ask_task_run(req, op, json_string_value(name), qname);
		}
	}
	json_decref(body);
}

static void on_task(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK)
		gw_store_error(req, op, "task");
	else
		http_respond_json(req, 200, json_incref(op->row));
}

static void get_task(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = task_op(req, STORE_OP_TASK_GET, false);
	if (op)
		gw_store(req, op, on_task);
}

/* Store counts joined with this node's pools; a configured queue with no rows shows zeros. */
static void on_queue_stats(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "queue");
		return;
	}
	json_t *pools = queue_pools_json(), *queues = json_array();
	size_t i;
	json_t *row;
	json_array_foreach(op->rows, i, row)
	{
		json_t *pool = json_object_get(pools, json_string_value(json_object_get(row, "name")));
		json_t *q = json_deep_copy(row);
		json_object_set_new(q, "consumers",
				    json_integer(json_integer_value(json_object_get(pool, "consumers"))));
		json_object_set_new(q, "busy", json_integer(json_integer_value(json_object_get(pool, "busy"))));
		json_object_set_new(q, "rate_1m",
				    json_real((double)json_integer_value(json_object_get(pool, "finished_1m")) / 60.0));
		json_array_append_new(queues, q);
		json_object_del(pools, json_string_value(json_object_get(row, "name")));
	}
	const char *name;
	json_t *pool;
	json_object_foreach(pools, name, pool)
	{
		json_array_append_new(
			queues,
			json_pack("{s:s, s:i, s:i, s:i, s:i, s:O, s:O, s:f}", "name", name, "depth", 0, "delayed", 0,
				  "reserved", 0, "dead", 0, "consumers", json_object_get(pool, "consumers"), "busy",
				  json_object_get(pool, "busy"), "rate_1m",
				  (double)json_integer_value(json_object_get(pool, "finished_1m")) / 60.0));
	}
	json_decref(pools);
	http_respond_json(req, 200, json_pack("{s:o, s:s}", "queues", queues, "scope", "this node"));
}

static void get_queues(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = store_op_new(STORE_OP_QUEUE_STATS, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->all_tenants = true;
	gw_store(req, op, on_queue_stats);
}

static void get_workers(struct http_req *req, void *arg)
{
	(void)arg;
	if (strcmp(cfg_str(CFG_QUEUE_DRIVER), "redis") == 0) /* every node's, from their heartbeats */
		http_respond_json(req, 200, gateway_workers_cluster_json());
	else
		http_respond_json(req, 200,
				  json_pack("{s:o, s:s}", "workers", queue_workers_json(), "scope", "this node"));
}

static void on_dead_list(struct http_req *req, struct store_op *op)
{
	if (gw_page_failed(req, op, "dead letter"))
		return;
	http_respond_json(req, 200,
			  json_pack("{s:O, s:s?}", "items", op->rows, "next_cursor",
				    op->next_cursor[0] ? op->next_cursor : NULL));
}

static void list_dead(struct http_req *req, void *arg)
{
	(void)arg;
	int64_t limit;
	if (!gw_limit(req, DEAD_PAGE_DEFAULT, DEAD_PAGE_MAX, &limit))
		return;
	struct store_op *op = store_op_new(STORE_OP_DEAD_LIST, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->all_tenants = true;
	op->limit = limit;
	if (!gw_cursor(req, op)) {
		store_op_free(op);
		return;
	}
	gw_store(req, op, on_dead_list);
}

static void on_dead_change(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "dead letter");
		return;
	}
	char resource[STORE_ID_MAX + 8];
	snprintf(resource, sizeof(resource), "task:%s", op->task_id);
	audit_record_identity(&req->ident,
			      op->kind == STORE_OP_DEAD_REQUEUE ? "admin.dead_letter.requeue"
								: "admin.dead_letter.delete",
			      resource, "done", req->request_id, NULL);
	http_respond_json(req, 200,
			  json_pack("{s:s, s:s}", "task_id", op->task_id, "status",
				    op->kind == STORE_OP_DEAD_REQUEUE ? "requeued" : "deleted"));
}

static void requeue_dead(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = task_op(req, STORE_OP_DEAD_REQUEUE, true);
	if (op)
		gw_store(req, op, on_dead_change);
}

static void delete_dead(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = task_op(req, STORE_OP_DEAD_DELETE, true);
	if (op)
		gw_store(req, op, on_dead_change);
}

enum soma_err gateway_task_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"POST", "/v1/tasks", publish_task, 0},
		{"GET", "/v1/tasks/{id}", get_task, 0},
		{"GET", "/v1/queues", get_queues, HTTP_ROUTE_ADMIN},
		{"GET", "/v1/workers", get_workers, HTTP_ROUTE_ADMIN},
		{"GET", "/v1/dead-letters", list_dead, HTTP_ROUTE_ADMIN},
		{"POST", "/v1/dead-letters/{id}/requeue", requeue_dead, HTTP_ROUTE_ADMIN},
		{"DELETE", "/v1/dead-letters/{id}", delete_dead, HTTP_ROUTE_ADMIN},
	};
	return gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
}
