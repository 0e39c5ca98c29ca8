/*
 * tasks_publish.c - sending a task and reading one: POST /v1/tasks, GET /v1/tasks/{id}, and the
 * original's aliases POST /v1/celery/run {task, payload} and GET /v1/celery/runs/{id}.
 *
 * DESIGN: a task is one TASK_PUBLISH op (the store's outbox: the local queue's table, or the
 * rows the redis relay publishes), after policy (task.run for its name). Options ride in
 * payload.options {priority, expires_ms, time_limit, soft_time_limit}; countdown and eta become
 * the row's available_ms. An idempotency key (redis driver) is a SET NX with a TTL on Redis
 * before the publish: a key already held answers with the task id that holds it, and nothing is
 * published ("duplicate" is whether this SET set the key, not a different id: a retry carries the caller's
 * task_id too); a publish the store refuses releases the key (compare-and-delete on the task id). A caller's
 * task_id belongs to the first tenant that used it: on the redis driver it is claimed before the publish
 * (SET NX of its owner key, refused while it has a result or an owner: queue_task_id_claim_async), on the
 * local queue the tasks table's key refuses it; either way 409 task_id_taken, the same whether the id is
 * another tenant's or the caller's own (it tells no one whose). Reads on the redis
 * driver: the store first (a task still in the outbox, or a dead letter), then the task's Celery result meta on Redis;
 * neither -> PENDING, as Celery says of an id it does not know. Redis calls run on the queue's result threads
 * (queue_*_async) and the answer is posted back to the request's io thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "identity/identity.h"
#include "policy/gate.h"
#include "queue/queue.h"

/* A request waiting for a Redis answer (see store_bridge.c for the same pattern). */
struct wait {
	struct http_req *req;	  /* invalid once aborted */
	struct io_thread *thread; /* the request's io thread */
	struct store_op *op;	  /* the publish op (idempotency) or the read op (status) */
	json_t *answer;		  /* what Redis said (owned) */
	enum soma_err err;	  /* whether Redis answered */
	void (*fn)(struct wait *w);
	bool aborted; /* the client left */
};

static void on_abort(struct http_req *req)
{
	((struct wait *)req->handler_ctx)->aborted = true;
}

static void on_io(void *arg)
{
	struct wait *w = arg;
	if (!w->aborted) {
		w->req->on_abort = NULL;
		w->fn(w);
	}
	store_op_free(w->op);
	json_decref(w->answer);
	free(w);
}

static void on_redis(json_t *answer, enum soma_err err, void *arg)
{
	struct wait *w = arg;
	w->answer = json_incref(answer);
	w->err = err;
	if (http_thread_post_wait(w->thread, on_io, w) != SOMA_OK) {
		store_op_free(w->op);
		json_decref(w->answer);
		free(w);
	}
}

static struct wait *wait_new(struct http_req *req, struct store_op *op, void (*fn)(struct wait *))
{
	struct wait *w = calloc(1, sizeof(*w));
	if (!w) {
		store_op_free(op);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return NULL;
	}
	*w = (struct wait){.req = req, .thread = req->thread, .op = op, .fn = fn};
	req->handler_ctx = w;
	req->on_abort = on_abort;
	return w;
}

static void redis_busy(struct http_req *req, struct wait *w)
{
	req->on_abort = NULL;
	store_op_free(w->op);
	free(w);
	http_resp_header(req, "Retry-After", "1");
	http_respond_error(req, 503, "queue_unavailable",
			   "the task queue (redis) is busy or unreachable; retry shortly");
}

/* ---- publish ---- */

/* Whether op's task id is the one the request's body chose (POST /v1/tasks task_id): then it was
 * claimed on the redis driver, and a store conflict is that id in use. */
static bool callers_id(struct http_req *req, const char *id)
{
	json_t *b = req->body ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
	const char *tid = json_string_value(json_object_get(b, "task_id"));
	bool same = tid && id && strcmp(tid, id) == 0;
	json_decref(b);
	return same;
}

/* The idempotency key of the request (its body's), taken by task id whose publish failed:
 * released, or the client's retry would get 202 duplicate with the id of a task never stored;
 * and the claim of the caller's task id, or the retry would get 409 task_id_taken. */
static void release_key(struct http_req *req, const char *id, bool claimed)
{
	json_t *b = req->body ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
	const char *key = json_string_value(json_object_get(b, "idempotency_key"));
	if (key && id && queue_idempotency_release_async(req->ident.tenant, key, id) != SOMA_OK)
		log_warn("gateway",
			 "cannot release the idempotency key of task %s (the task API's redis queue is full)", id);
	json_decref(b);
	if (claimed && queue_driver_is_redis() && callers_id(req, id) &&
	    queue_task_id_release_async(req->ident.tenant, id) != SOMA_OK)
		log_warn("gateway", "cannot release the claim of task id %s (the task API's redis queue is full)", id);
}

/* The same answer whoever holds the id (another tenant, or the caller's own task): no tenant
 * learns that another uses an id. */
static void respond_taken(struct http_req *req)
{
	http_respond_error(req, 409, "task_id_taken", "this task id is in use; choose another");
}

static void on_published(struct http_req *req, struct store_op *op)
{
	const char *id = json_string_value(json_object_get(op->task, "id")); /* (the body lives until the answer) */
	if (op->err != SOMA_OK)
		release_key(req, id, true);
	if (op->err == SOMA_ERR_CONFLICT && callers_id(req, id))
		respond_taken(req);
	else if (op->err != SOMA_OK)
		gw_store_error(req, op, "task");
	else
		http_respond_json(
			req, 202,
			json_pack("{s:O, s:s}", "task_id", json_object_get(op->task, "id"), "status", "PENDING"));
}

static void publish_now(struct wait *w)
{
	char id[STORE_TASK_ID_MAX + 1];
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(w->op->task, "id")));
	enum soma_err err = gw_store_try(w->req, w->op, on_published);
	w->op = NULL;
	if (err != SOMA_OK) { /* the store refused it at once (saturated, stopping) */
		release_key(w->req, id, true);
		gw_store_refused(w->req, err);
	}
}

static void after_claim(struct wait *w)
{
	const char *id = json_string_value(json_object_get(w->op->task, "id"));
	if (w->err != SOMA_OK || !json_is_boolean(w->answer)) {
		release_key(w->req, id, false); /* the idempotency key only: the claim is not ours */
		http_resp_header(w->req, "Retry-After", "1");
		http_respond_error(w->req, 503, "queue_unavailable",
				   "the task id could not be checked (redis unreachable); retry shortly");
	} else if (!json_is_true(w->answer)) {
		release_key(w->req, id, false);
		respond_taken(w->req);
	} else {
		publish_now(w);
	}
}

/* Claims the caller's task id (redis driver); the op goes to a new wait (w's is freed after it). */
static void claim_id(struct http_req *req, struct store_op *op)
{
	json_int_t at = json_integer_value(json_object_get(op->task, "available_ms"));
	long long expires = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S), now = clock_wall_ms();
	/* as long as the relay's owner key: the result's lifetime plus the wait for its eta */
	long long ttl = (expires > 0 ? expires : 31536000LL) + (at > now ? (at - now) / 1000 + 1 : 0);
	char id[STORE_TASK_ID_MAX + 1];
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(op->task, "id")));
	struct wait *w = wait_new(req, op, after_claim);
	if (w && queue_task_id_claim_async(req->ident.tenant, id, ttl < 0x7fffffff ? (int)ttl : 0x7fffffff, on_redis,
					   w) != SOMA_OK) {
		release_key(req, id, false);
		redis_busy(req, w);
	}
}

static void after_idempotency(struct wait *w)
{
	const char *holder = json_string_value(json_object_get(w->answer, "task_id"));
	if (w->err != SOMA_OK || !holder) {
		http_resp_header(w->req, "Retry-After", "1");
		http_respond_error(w->req, 503, "queue_unavailable",
				   "the idempotency key could not be checked (redis unreachable); retry shortly");
	} else if (!json_is_true(json_object_get(w->answer, "fresh"))) {
		http_respond_json(w->req, 202,
				  json_pack("{s:s, s:s, s:b}", "task_id", holder, "status", "PENDING", "duplicate", 1));
	} else if (json_is_true(json_object_get(w->op->task, "soma_claim"))) {
		json_object_del(w->op->task, "soma_claim");
		claim_id(w->req, w->op);
		w->op = NULL;
	} else {
		publish_now(w);
	}
}

static void publish_allowed(struct http_req *req, void *arg)
{
	struct store_op *op = arg;
	json_t *key = json_object_get(op->task, "idempotency_key");
	bool claim = json_is_true(json_object_get(op->task, "soma_claim"));
	if (!key) {
		json_object_del(op->task, "soma_claim");
		if (claim)
			claim_id(req, op);
		else
			gw_store(req, op, on_published);
		return;
	}
	char k[200];
	snprintf(k, sizeof(k), "%s", json_string_value(key));
	json_object_del(op->task, "idempotency_key");
	struct wait *w = wait_new(req, op, after_idempotency);
	long long ttl = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	if (w && queue_idempotency_async(req->ident.tenant, k, json_string_value(json_object_get(op->task, "id")),
					 ttl > 0 ? (int)ttl : 86400, on_redis, w) != SOMA_OK)
		redis_busy(req, w);
}

static void drop_op(void *arg)
{
	store_op_free(arg);
}

struct store_op *gw_task_op_new(struct http_req *req, const char *name, json_t *args, json_t *kwargs)
{
	char routed[64], id[IDS_UUID_LEN + 1];
	const char *qname = queue_route(name, routed, sizeof(routed));
	struct store_op *op = store_op_new(STORE_OP_TASK_PUBLISH, req->ident.tenant);
	ids_uuid7(id);
	if (op)
		op->task =
			json_pack("{s:s, s:s, s:s, s:{s:O, s:O, s:s, s:s, s:s, s:{s:i}}, s:I, s:I}", "id", id, "queue",
				  qname, "name", name, "payload", "args", args, "kwargs", kwargs, "subject",
				  req->ident.subject, "scopes", req->ident.scopes, "request_id", req->request_id,
				  "options", "priority", 0, "max_retries", (json_int_t)cfg_int(CFG_QUEUE_MAX_RETRIES),
				  "available_ms", (json_int_t)clock_wall_ms());
	if (op && !op->task) {
		store_op_free(op);
		op = NULL;
	}
	return op;
}

void gw_task_op_publish(struct http_req *req, struct store_op *op)
{
	gw_store(req, op, on_published);
}

static void publish_body(struct http_req *req, json_t *b)
{
	int64_t eta, expires;
	if (!gw_task_body_valid(req, b, &eta, &expires))
		return;
	json_t *name = json_object_get(b, "task"), *args = json_object_get(b, "args"),
	       *kwargs = json_object_get(b, "kwargs"), *countdown = json_object_get(b, "countdown"),
	       *retries = json_object_get(b, "max_retries");
	char routed[64];
	const char *qname = json_string_value(json_object_get(b, "queue"));
	if (!qname)
		qname = queue_route(json_string_value(name), routed, sizeof(routed));
	int64_t due = countdown ? clock_wall_ms() + (int64_t)(json_number_value(countdown) * 1000.0) : eta;
	json_t *opts = json_pack("{s:I}", "priority", (json_int_t)json_integer_value(json_object_get(b, "priority")));
	if (expires)
		json_object_set_new(opts, "expires_ms", json_integer(expires));
	if (json_object_get(b, "time_limit"))
		json_object_set(opts, "time_limit", json_object_get(b, "time_limit"));
	if (json_object_get(b, "soft_time_limit"))
		json_object_set(opts, "soft_time_limit", json_object_get(b, "soft_time_limit"));
	struct store_op *op = store_op_new(STORE_OP_TASK_PUBLISH, req->ident.tenant);
	char uuid[IDS_UUID_LEN + 1];
	ids_uuid7(uuid); /* time-ordered: the tasks table grows at its end */
	const char *id = json_string_value(json_object_get(b, "task_id")); /* the caller's choice, checked */
	if (op)
		op->task = json_pack(
			"{s:s, s:s, s:O, s:{s:o, s:o, s:s, s:s, s:O}, s:I, s:I}", "id", id ? id : uuid, "queue", qname,
			"name", name, "payload", "args", args ? json_incref(args) : json_array(), "kwargs",
			kwargs ? json_incref(kwargs) : json_object(), "subject", req->ident.subject, "scopes",
			req->ident.scopes, "options", opts, "max_retries",
			(json_int_t)(retries ? json_integer_value(retries) : cfg_int(CFG_QUEUE_MAX_RETRIES)),
			"available_ms", (json_int_t)(due ? due : clock_wall_ms()));
	json_decref(opts);
	if (!op || !op->task) {
		store_op_free(op);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	if (json_object_get(b, "idempotency_key"))
		json_object_set(op->task, "idempotency_key", json_object_get(b, "idempotency_key"));
	if (id && queue_driver_is_redis()) /* claimed before the publish (publish_allowed); removed there */
		json_object_set_new(op->task, "soma_claim", json_true());
	char resource[160];
	snprintf(resource, sizeof(resource), "task:%s", json_string_value(name));
	json_t *ctx = json_pack("{s:O, s:s}", "task", name, "queue", qname);
	struct policy_input in = {.action = POLICY_TASK_RUN, .resource = resource, .context = ctx};
	policy_gate_ask(req, &in, NULL, publish_allowed, op, drop_op);
	json_decref(ctx);
}

void gw_task_publish(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (body)
		publish_body(req, body);
	json_decref(body);
}

/* POST /v1/celery/run {task, payload}: the payload is the task's one positional argument ({} when
 * absent), as the original sent it (send_task(task, args=[payload])): its tasks take one dict. */
void gw_celery_run(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *payload = json_object_get(body, "payload");
	json_t *arg0 = payload && !json_is_null(payload) ? json_incref(payload) : json_object();
	json_t *b = json_pack("{s:O?, s:[o]}", "task", json_object_get(body, "task"), "args", arg0);
	if (!b) {
		json_decref(body);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	publish_body(req, b);
	json_decref(b);
	json_decref(body);
}

/* ---- read ---- */

/* The store read again after Redis said FAILURE: the dead-letter row (committed before the
 * FAILURE meta, redis_settle.c) when there is one, else what Redis said (kept in op->task). */
static void on_failure_checked(struct http_req *req, struct store_op *op)
{
	if (op->err == SOMA_OK)
		http_respond_json(req, 200, json_incref(op->row));
	else if (op->err == SOMA_ERR_NOT_FOUND)
		http_respond_json(req, 200, json_incref(op->task));
	else
		gw_store_error(req, op, "task");
}

static void after_meta(struct wait *w)
{
	const char *status = json_string_value(json_object_get(w->answer, "status"));
	if (w->err == SOMA_OK && status && strcmp(status, "FAILURE") == 0) {
		/* the store was read before Redis: a task dead-lettered in between is found now */
		struct store_op *again = store_op_new(STORE_OP_TASK_GET, w->op->tenant);
		if (!again)
			return http_respond_error(w->req, 500, "out_of_memory",
						  "the server is out of memory; retry later");
		snprintf(again->task_id, sizeof(again->task_id), "%s", w->op->task_id);
		snprintf(again->error_text, sizeof(again->error_text), "%s", w->op->error_text);
		again->task = json_incref(w->answer);
		return gw_store(w->req, again, on_failure_checked);
	}
	if (w->err == SOMA_ERR_NOT_FOUND) {
		http_respond_error(w->req, 404, "not_found", "task %s not found", w->op->task_id);
	} else if (w->err != SOMA_OK) {
		http_resp_header(w->req, "Retry-After", "1");
		http_respond_error(w->req, 503, "queue_unavailable",
				   "the task results (redis) are unreachable; retry shortly");
	} else if (w->answer) {
		http_respond_json(w->req, 200, json_incref(w->answer));
	} else {
		http_respond_json(w->req, 200,
				  json_pack("{s:s, s:n, s:s, s:n, s:n, s:i, s:n, s:n, s:b}", "task_id", w->op->task_id,
					    "task", "status", "PENDING", "result", "error", "retries", 0, "started_at",
					    "completed_at", "dead_letter", 0));
	}
}

static void on_task(struct http_req *req, struct store_op *op)
{
	if (op->err == SOMA_OK) {
		http_respond_json(req, 200, json_incref(op->row));
	} else if (op->err == SOMA_ERR_NOT_FOUND && queue_driver_is_redis()) {
		struct store_op *keep = store_op_new(STORE_OP_TASK_GET, op->tenant);
		if (!keep)
			return http_respond_error(req, 500, "out_of_memory",
						  "the server is out of memory; retry later");
		snprintf(keep->task_id, sizeof(keep->task_id), "%s", op->task_id);
		struct wait *w = wait_new(req, keep, after_meta);
		/* a result with no owner: the operator's and the default tenant's (Python producers), no one else's */
		bool unowned_ok = identity_has_scope(&req->ident, "admin") ||
				  strcmp(req->ident.tenant, cfg_str(CFG_AUTH_DEFAULT_TENANT)) == 0;
		if (w && queue_status_async(op->task_id, op->tenant, unowned_ok, on_redis, w) != SOMA_OK)
			redis_busy(req, w);
	} else {
		gw_store_error(req, op, "task");
	}
}

void gw_task_get(struct http_req *req, void *arg)
{
	(void)arg;
	const char *id = http_req_param(req, "id").p;
	if (!id || !gw_valid_task_id(id)) {
		http_respond_error(req, 404, "not_found", "no such task: task ids are 1 to 255 characters");
		return;
	}
	struct store_op *op = store_op_new(STORE_OP_TASK_GET, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text), "task %s not found", id);
	gw_store(req, op, on_task);
}
