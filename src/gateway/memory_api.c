/*
 * memory_api.c - the memory endpoints (CONTRACTS.md §3 "Memory"):
 *   POST   /v1/memory/remember          {namespace?, key?, value:{}, tags?, session_id?}
 *                                       -> {key, status:"queued"} (an outbox row, committed)
 *   POST   /v1/memory/recall            {query, top_k?, namespace?, session_id?}
 *                                       -> {results:[{score, payload, source}], degraded, state}
 *   GET    /v1/memory/outbox            ?limit&cursor&state -> {pending, failed, oldest_age_s,
 *                                       items, next_cursor} (the caller's tenant; admin: all)
 *   POST   /v1/memory/outbox/{id}/retry admin: a failed row back to pending, attempts reset
 *   DELETE /v1/memory/outbox/{id}       admin: a failed or pending row dropped (both audited)
 *
 * DESIGN: nothing here blocks the io thread. A remember is a store write op (the row is
 * durable before the 200; the relay delivers it and is woken after the commit). A recall may
 * call SomaBrain, so it runs on a small pool (memory_recall blocks up to memory.timeout_ms)
 * and its result is posted back to the request's io thread; if the client left meanwhile the
 * result is only freed. Policy: memory.write and memory.recall are asked once the body is
 * parsed (policy_gate_ask), with input.degraded.somabrain set from the memory state.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "core/pool.h"
#include "core/trace.h"
#include "gateway/gateway.h"
#include "memory/memory.h"
#include "policy/gate.h"

#define POOL_THREADS   4
#define POOL_QUEUE     256
#define QUERY_MAX      4096
#define KEY_MAX	       200
#define TOP_K_MAX      50
#define OUTBOX_DEFAULT 50
#define OUTBOX_MAX     500

struct recall_job {
	struct http_req *req;	  /* valid on the io thread while !aborted */
	struct io_thread *thread; /* the request's io thread */
	bool aborted;		  /* the client left (io thread only) */
	char tenant[STORE_ID_MAX + 1], ns[64], session_id[STORE_ID_MAX + 1], request_id[129];
	char traceparent[TRACEPARENT_LEN + 1]; /* the request's span's, "" when tracing is off */
	char *query;			       /* owned */
	int top_k;			       /* asked */
	json_t *results;		       /* pool side: owned */
	bool degraded;			       /* pool side */
	enum soma_err err;
};

static struct pool *recall_pool;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static void job_free(struct recall_job *j)
{
	if (!j)
		return;
	free(j->query);
	json_decref(j->results);
	free(j);
}

static void job_drop(void *arg)
{
	job_free(arg);
}

void gateway_memory_stop(void)
{
	pthread_mutex_lock(&pool_lock);
	pool_free(recall_pool);
	recall_pool = NULL;
	pthread_mutex_unlock(&pool_lock);
}

static bool valid_ns(const char *s)
{
	size_t n = strlen(s);
	if (!n || n >= 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(gw_valid_id((char[]){s[i], '\0'}) || s[i] == '.'))
			return false;
	return true;
}

/* A memory key: 1 to KEY_MAX of [A-Za-z0-9._:/-]. The key travels to SomaBrain and into logs
 * and the outbox listing; a key with control characters, spaces or quotes once reached an
 * outgoing header (CR LF made a second X-Tenant-ID), so only this set is taken. '/' stays: the
 * original system's keys were tenant/namespace/session/... paths. */
static bool valid_key(const char *s, size_t n)
{
	if (!n || n > KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == ':' || c == '/' || c == '-'))
			return false;
	}
	return true;
}

/* True when every tag is a string (SomaBrain and the outbox listing expect strings). */
static bool tags_are_strings(json_t *tags)
{
	size_t i;
	json_t *t;
	json_array_foreach(tags, i, t)
	{
		if (!json_is_string(t))
			return false;
	}
	return true;
}

/* namespace field: absent -> "" (the default), else a valid name; false after answering 400. */
static bool take_ns(struct http_req *req, json_t *body, const char **out)
{
	json_t *ns = json_object_get(body, "namespace");
	*out = "";
	if (!ns || json_is_null(ns))
		return true;
	if (!json_is_string(ns) || !valid_ns(json_string_value(ns))) {
		http_respond_error(req, 400, "invalid_namespace", "namespace must be 1 to 63 of [A-Za-z0-9._-]");
		return false;
	}
	*out = json_string_value(ns);
	return true;
}

static bool take_session(struct http_req *req, json_t *body, const char **out)
{
	json_t *sid = json_object_get(body, "session_id");
	*out = NULL;
	if (!sid || json_is_null(sid))
		return true;
	if (!json_is_string(sid) || !gw_valid_id(json_string_value(sid))) {
		http_respond_error(req, 400, "invalid_session_id", "session_id must be 1 to 64 of [A-Za-z0-9_-]");
		return false;
	}
	*out = json_string_value(sid);
	return true;
}

static void policy_in(struct http_req *req, struct policy_input *in, const char *action, json_t *ctx)
{
	struct memory_status s;
	memory_snapshot(&s);
	*in = (struct policy_input){
		.action = action, .resource = "memory", .context = ctx, .somabrain_degraded = s.state != MEMORY_NORMAL};
	(void)req;
}

/* ---- remember ---- */

static void on_remembered(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "memory");
		return;
	}
	memory_relay_wake();
	http_respond_json(req, 200,
			  json_pack("{s:O, s:s}", "key", json_object_get(op->row, "key"), "status", "queued"));
}

static void remember_allowed(struct http_req *req, void *arg)
{
	gw_store(req, arg, on_remembered);
}

static void drop_op(void *arg)
{
	store_op_free(arg);
}

static void remember(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *value = json_object_get(body, "value"), *key = json_object_get(body, "key"),
	       *tags = json_object_get(body, "tags");
	const char *ns, *sid;
	char gen[IDS_UUID_LEN + 1] = "";
	if (!json_is_object(value)) {
		http_respond_error(req, 400, "invalid_value", "value must be a JSON object (what to remember)");
	} else if (key && !(json_is_string(key) && json_string_length(key) > 0 && json_string_length(key) <= KEY_MAX)) {
		http_respond_error(req, 400, "invalid_key", "key must be a string of 1 to %d bytes", KEY_MAX);
	} else if (key && !valid_key(json_string_value(key), json_string_length(key))) {
		http_respond_error(req, 422, "invalid_key", "key must be 1 to %d of [A-Za-z0-9._:/-]", KEY_MAX);
	} else if (tags && !json_is_array(tags)) {
		http_respond_error(req, 400, "invalid_tags", "tags must be an array of strings");
	} else if (tags && !tags_are_strings(tags)) {
		http_respond_error(req, 422, "invalid_tags", "tags must be an array of strings; found another value");
	} else if (take_ns(req, body, &ns) && take_session(req, body, &sid)) {
		struct store_op *op = store_op_new(STORE_OP_MEMORY_REMEMBER, req->ident.tenant);
		if (!key)
			ids_uuid7(gen);
		if (!op ||
		    !(op->row = json_pack("{s:s, s:s, s:s?, s:O, s:O?}", "key", key ? json_string_value(key) : gen,
					  "namespace", ns, "session_id", sid, "value", value, "tags", tags))) {
			store_op_free(op);
			http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		} else {
			struct policy_input in;
			json_t *ctx = json_pack("{s:s}", "namespace", ns);
			policy_in(req, &in, POLICY_MEMORY_WRITE, ctx);
			policy_gate_ask(req, &in, sid, remember_allowed, op, drop_op);
			json_decref(ctx);
		}
	}
	json_decref(body);
}

/* ---- recall ---- */

static void on_recalled(void *arg)
{
	struct recall_job *j = arg;
	if (!j->aborted) {
		struct http_req *req = j->req;
		req->on_abort = NULL;
		struct memory_status s;
		memory_snapshot(&s);
		if (j->err != SOMA_OK)
			http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		else
			http_respond_json(req, 200,
					  json_pack("{s:O, s:b, s:s, s:s}", "results", j->results, "degraded",
						    j->degraded, "state", memory_state_name(s.state), "reason",
						    s.reason));
	}
	job_free(j);
}

static void recall_run(void *arg)
{
	struct recall_job *j = arg;
	j->err = memory_recall(gateway_store(), j->tenant, j->ns, j->query, j->top_k, j->session_id, j->request_id,
			       j->traceparent, &j->results, &j->degraded);
	if (http_thread_post_wait(j->thread, on_recalled, j) != SOMA_OK)
		job_free(j); /* the io thread stopped: the request went with it */
}

static void on_recall_abort(struct http_req *req)
{
	((struct recall_job *)req->handler_ctx)->aborted = true;
}

static void recall_allowed(struct http_req *req, void *arg)
{
	struct recall_job *j = arg;
	pthread_mutex_lock(&pool_lock);
	if (!recall_pool)
		recall_pool = pool_new(POOL_THREADS, POOL_QUEUE);
	enum soma_err err = recall_pool ? pool_submit(recall_pool, recall_run, j) : SOMA_ERR_NOMEM;
	pthread_mutex_unlock(&pool_lock);
	if (err != SOMA_OK) {
		job_free(j);
		http_resp_header(req, "Retry-After", "1");
		if (err == SOMA_ERR_NOMEM) /* no pool, or no thread could be started for it */
			http_respond_error(req, 503, "out_of_memory",
					   "no memory recall thread could be started (out of memory or threads); "
					   "retry later");
		else
			http_respond_error(req, 503, "memory_busy",
					   "too many memory recalls at once; retry in a second");
		return;
	}
	req->handler_ctx = j;
	req->on_abort = on_recall_abort;
}

static void recall(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *query = json_object_get(body, "query"), *top_k = json_object_get(body, "top_k");
	const char *ns, *sid;
	if (!json_is_string(query) || json_string_length(query) == 0 || json_string_length(query) > QUERY_MAX) {
		http_respond_error(req, 400, "invalid_query", "query must be a non-empty string of at most %d bytes",
				   QUERY_MAX);
	} else if (top_k && !(json_is_integer(top_k) && json_integer_value(top_k) >= 1 &&
			      json_integer_value(top_k) <= TOP_K_MAX)) {
		http_respond_error(req, 422, "invalid_top_k", "top_k must be an integer from 1 to %d", TOP_K_MAX);
	} else if (take_ns(req, body, &ns) && take_session(req, body, &sid)) {
		struct recall_job *j = calloc(1, sizeof(*j));
		if (!j || !(j->query = strdup(json_string_value(query)))) {
			free(j);
			http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
			json_decref(body);
			return;
		}
		j->req = req;
		j->thread = req->thread;
		j->top_k = top_k				  ? (int)json_integer_value(top_k)
			   : cfg_int(CFG_MEMORY_RECALL_TOP_K) > 0 ? (int)cfg_int(CFG_MEMORY_RECALL_TOP_K)
								  : 3;
		snprintf(j->tenant, sizeof(j->tenant), "%s", req->ident.tenant);
		snprintf(j->ns, sizeof(j->ns), "%s", ns);
		snprintf(j->session_id, sizeof(j->session_id), "%s", sid ? sid : "");
		snprintf(j->request_id, sizeof(j->request_id), "%s", req->request_id);
		if (req->span && req->span->on) /* SomaBrain's recall joins the request's trace */
			trace_span_traceparent(req->span, j->traceparent);
		struct policy_input in;
		json_t *ctx = json_pack("{s:s, s:s}", "namespace", ns, "query", j->query);
		policy_in(req, &in, POLICY_MEMORY_RECALL, ctx);
		policy_gate_ask(req, &in, sid, recall_allowed, j, job_drop);
		json_decref(ctx);
	}
	json_decref(body);
}

/* ---- the outbox ---- */

static json_t *item_json(json_t *row)
{
	char created[40], next[40];
	return json_pack(
		"{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:s, s:s, s:O}", "id", json_object_get(row, "id"), "key",
		json_object_get(row, "key"), "tenant", json_object_get(row, "tenant"), "session_id",
		json_object_get(row, "session_id"), "namespace", json_object_get(row, "namespace"), "state",
		json_object_get(row, "state"), "attempts", json_object_get(row, "attempts"), "last_error",
		json_object_get(row, "last_error"), "created_at",
		clock_rfc3339(json_integer_value(json_object_get(row, "created_ms")), created, sizeof(created)),
		"next_attempt_at",
		clock_rfc3339(json_integer_value(json_object_get(row, "available_ms")), next, sizeof(next)), "value",
		json_object_get(json_object_get(row, "body"), "value"));
}

static void on_outbox(struct http_req *req, struct store_op *op)
{
	if (gw_page_failed(req, op, "memory outbox"))
		return;
	json_t *items = json_array();
	for (size_t i = 0; i < json_array_size(op->rows); i++)
		json_array_append_new(items, item_json(json_array_get(op->rows, i)));
	int64_t oldest = json_integer_value(json_object_get(op->session, "oldest_ms"));
	int64_t pending = json_integer_value(json_object_get(op->session, "pending")) +
			  json_integer_value(json_object_get(op->session, "sending"));
	struct memory_status s;
	memory_snapshot(&s);
	http_respond_json(req, 200,
			  json_pack("{s:I, s:I, s:f, s:o, s:s?, s:s, s:s, s:s}", "pending", (json_int_t)pending,
				    "failed",
				    json_object_get(op->session, "failed")
					    ? (json_int_t)json_integer_value(json_object_get(op->session, "failed"))
					    : (json_int_t)0,
				    "oldest_age_s", oldest ? (double)(clock_wall_ms() - oldest) / 1000.0 : 0.0, "items",
				    items, "next_cursor", op->next_cursor[0] ? op->next_cursor : NULL, "state",
				    memory_state_name(s.state), "reason", s.reason, "driver", s.driver));
}

static void outbox_list(struct http_req *req, void *arg)
{
	(void)arg;
	int64_t limit;
	struct str state = STR_NULL;
	if (!gw_limit(req, OUTBOX_DEFAULT, OUTBOX_MAX, &limit))
		return;
	http_req_query(req, "state", &state);
	if (state.p && !str_eq_cstr(state, "pending") && !str_eq_cstr(state, "sending") &&
	    !str_eq_cstr(state, "failed")) {
		http_respond_error(req, 400, "invalid_state", "state must be pending, sending or failed");
		return;
	}
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_LIST, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->limit = limit;
	op->all_tenants = identity_has_scope(&req->ident, "admin");
	if (!gw_cursor(req, op)) {
		store_op_free(op);
		return;
	}
	snprintf(op->queue, sizeof(op->queue), "%.*s", state.p ? (int)state.len : 0, state.p ? state.p : "");
	gw_store(req, op, on_outbox);
}

static void on_outbox_change(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "memory outbox item");
		return;
	}
	bool drop = op->kind == STORE_OP_OUTBOX_DROP;
	char resource[STORE_ID_MAX + 16];
	snprintf(resource, sizeof(resource), "memory_outbox:%.64s", op->task_id);
	audit_record_change(&req->ident, op->row_tenant,
			    drop ? "admin.memory_outbox.drop" : "admin.memory_outbox.retry", resource, "done",
			    req->request_id, NULL);
	if (!drop)
		memory_relay_wake();
	http_respond_json(req, 200, json_pack("{s:s, s:s}", "id", op->task_id, "state", drop ? "dropped" : "pending"));
}

static void outbox_change(struct http_req *req, enum store_op_kind kind)
{
	struct str id = http_req_param(req, "id");
	struct store_op *op = store_op_new(kind, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->all_tenants = true; /* admin scope (route flag): an operator's action on any tenant's row */
	snprintf(op->task_id, sizeof(op->task_id), "%.*s", (int)id.len, id.p);
	snprintf(op->error_text, sizeof(op->error_text), "memory outbox item %.64s not found%s", op->task_id,
		 kind == STORE_OP_OUTBOX_RETRY ? " among the failed ones" : " (or it is being sent)");
	gw_store(req, op, on_outbox_change);
}

static void outbox_retry(struct http_req *req, void *arg)
{
	(void)arg;
	outbox_change(req, STORE_OP_OUTBOX_RETRY);
}

static void outbox_drop(struct http_req *req, void *arg)
{
	(void)arg;
	outbox_change(req, STORE_OP_OUTBOX_DROP);
}

enum soma_err gateway_memory_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"POST", "/v1/memory/remember", remember, 0},
		{"POST", "/v1/memory/recall", recall, 0},
		{"GET", "/v1/memory/outbox", outbox_list, 0},
		{"POST", "/v1/memory/outbox/{id}/retry", outbox_retry, HTTP_ROUTE_ADMIN},
		{"DELETE", "/v1/memory/outbox/{id}", outbox_drop, HTTP_ROUTE_ADMIN},
	};
	return gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
}
