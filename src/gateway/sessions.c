/*
 * sessions.c - session reads and control: list, get, history, events (JSON pages; the
 * ?stream=true form is in stream.c), delete, reset, pause, and cancel (stop the reply being
 * generated, keeping what was produced so far as its final answer). Every op is scoped to the caller's
 * tenant in the store: another tenant's session is simply not found (404).
 *
 * DESIGN: the reply of a session may run on this process's workers or, in a cluster
 * (bus.driver = redis), on another node's: a cancel, a delete and a reset stop this process's
 * tasks directly (queue_cancel_session) and send a cancel notice that the other nodes' workers
 * apply (bus_cancel_notify). The cancel's answer says which: "cancelled" (a reply was stopped
 * here), "cancelling" (none here; the notice went to the other nodes, which this node cannot see
 * into), "idle" (none, and no other node), or 503 bus_unavailable (none here and Redis does not
 * answer: the other nodes may not hear it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "bus/bus.h"
#include "gateway/gateway.h"
#include "queue/queue.h"

/* A JSON page of events stops growing past this many bytes (one event always fits, whatever
 * its size); the rest follows through next_cursor. Bounds the copy made for the response. */
#define EVENTS_PAGE_BUDGET (8u << 20)

static const char *row_body(const struct store_op *op, size_t i)
{
	const char *body = json_string_value(json_object_get(json_array_get(op->rows, i), "body"));
	return body ? body : "null";
}

/* {"session_id":..,"events":[<stored bodies>],"next_cursor":..} without re-encoding the events.
 * The page is malloc'd, not taken from the request arena: the arena is capped near
 * http.max_header + http.max_body, and a few long messages exceed that (a 500 for an ordinary
 * long session); http_respond copies it. with_cursor (/events) stops at EVENTS_PAGE_BUDGET and
 * gives the cursor of the last event included; /history has no cursor and returns all rows. */
static void respond_events(struct http_req *req, const struct store_op *op, bool with_cursor)
{
	size_t total = 128 + strlen(op->session_id), n = json_array_size(op->rows), take = 0;
	for (; take < n; take++) {
		size_t blen = strlen(row_body(op, take)) + 1;
		if (with_cursor && take > 0 && total + blen > EVENTS_PAGE_BUDGET)
			break;
		total += blen;
	}
	char *out = malloc(total);
	if (!out) {
		http_respond_error(req, 500, "out_of_memory", "the page is too large; ask for a smaller limit");
		return;
	}
	size_t len = (size_t)snprintf(out, total, "{\"session_id\":\"%s\",\"events\":[", op->session_id);
	for (size_t i = 0; i < take; i++) {
		const char *body = row_body(op, i);
		size_t blen = strlen(body);
		if (i)
			out[len++] = ',';
		memcpy(out + len, body, blen);
		len += blen;
	}
	bool more = take < n || (int64_t)n == op->limit;
	if (with_cursor && take > 0 && more)
		len += (size_t)snprintf(
			out + len, total - len, "],\"next_cursor\":\"%lld\"}",
			(long long)json_integer_value(json_object_get(json_array_get(op->rows, take - 1), "seq")));
	else
		len += (size_t)snprintf(out + len, total - len, "]%s}", with_cursor ? ",\"next_cursor\":null" : "");
	http_respond(req, 200, "application/json", out, len);
	free(out);
}

static void on_events(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK)
		gw_store_error(req, op, "session");
	else
		respond_events(req, op, true);
}

static void on_history(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK)
		gw_store_error(req, op, "session");
	else
		respond_events(req, op, false);
}

/* The {id} path parameter if it is an acceptable id; else answers 404 and returns NULL. */
static const char *session_param(struct http_req *req)
{
	struct str id = http_req_param(req, "id");
	if (!id.p || !gw_valid_id(id.p)) {
		http_respond_error(req, 404, "not_found", "session not found");
		return NULL;
	}
	return id.p;
}

static struct store_op *session_op(struct http_req *req, enum store_op_kind kind, const char *id)
{
	struct store_op *op = store_op_new(kind, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return NULL;
	}
	snprintf(op->session_id, sizeof(op->session_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text), "session %s not found", id);
	return op;
}

static void get_events(struct http_req *req, void *arg)
{
	(void)arg;
	const char *id = session_param(req);
	if (!id)
		return;
	struct str v;
	if (http_req_query(req, "stream", &v) && (str_eq_cstr(v, "true") || str_eq_cstr(v, "1"))) {
		gw_stream_open(req, id);
		return;
	}
	int64_t limit, after = 0;
	if (!gw_limit(req, 100, 1000, &limit))
		return;
	if (http_req_query(req, "after", &v)) {
		char *end;
		after = strtoll(v.p, &end, 10);
		if (v.len == 0 || *end || after < 0) {
			http_respond_error(req, 400, "invalid_cursor",
					   "after must be an event seq (a non-negative integer)");
			return;
		}
	}
	struct store_op *op = session_op(req, STORE_OP_EVENTS_AFTER, id);
	if (!op)
		return;
	op->after_seq = after;
	op->limit = limit;
	gw_store(req, op, on_events);
}

static void get_history(struct http_req *req, void *arg)
{
	(void)arg;
	const char *id = session_param(req);
	int64_t limit;
	if (!id || !gw_limit(req, 100, 1000, &limit))
		return;
	struct store_op *op = session_op(req, STORE_OP_EVENTS_AFTER, id);
	if (!op)
		return;
	op->after_seq = -1;
	op->limit = limit;
	gw_store(req, op, on_history);
}

static void on_session(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "session");
		return;
	}
	http_respond_json(req, 200, json_incref(op->session));
}

static void get_session(struct http_req *req, void *arg)
{
	(void)arg;
	const char *id = session_param(req);
	struct store_op *op = id ? session_op(req, STORE_OP_SESSION_GET, id) : NULL;
	if (op)
		gw_store(req, op, on_session);
}

static void on_list(struct http_req *req, struct store_op *op)
{
	if (op->err == SOMA_ERR_INVALID) {
		http_respond_error(req, 400, "invalid_cursor", "cursor is not one this server gave out");
		return;
	}
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "sessions");
		return;
	}
	http_respond_json(req, 200,
			  json_pack("{s:O, s:s?}", "sessions", op->rows, "next_cursor",
				    op->next_cursor[0] ? op->next_cursor : NULL));
}

static void list_sessions(struct http_req *req, void *arg)
{
	(void)arg;
	int64_t limit;
	if (!gw_limit(req, 50, 200, &limit))
		return;
	struct store_op *op = store_op_new(STORE_OP_SESSIONS_LIST, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	struct str cursor;
	if (http_req_query(req, "cursor", &cursor)) {
		if (cursor.len >= sizeof(op->cursor)) {
			store_op_free(op);
			http_respond_error(req, 400, "invalid_cursor", "cursor is not one this server gave out");
			return;
		}
		snprintf(op->cursor, sizeof(op->cursor), "%s", cursor.p);
	}
	op->limit = limit;
	gw_store(req, op, on_list);
}

static void on_control(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "session");
		return;
	}
	if (op->kind != STORE_OP_SESSION_PAUSE) {
		char key[BUS_KEY_MAX], resource[STORE_ID_MAX + 16];
		snprintf(resource, sizeof(resource), "session:%s", op->session_id);
		audit_record_identity(&req->ident,
				      op->kind == STORE_OP_SESSION_DELETE ? "session.delete" : "session.reset",
				      resource, "done", req->request_id, NULL);
		(void)queue_cancel_session(op->tenant, op->session_id, false);	  /* stop a reply being generated, */
		(void)bus_cancel_notify(op->tenant, op->session_id, NULL, false); /* here or on another node */
		bus_key(key, op->tenant, op->session_id);
		if (op->kind == STORE_OP_SESSION_DELETE) /* its open streams end (see stream.c) */
			bus_session_deleted(key);
		else /* its deltas must not replay into whatever comes next; its streams are told */
			bus_session_reset(key);
	}
	const char *what = op->kind == STORE_OP_SESSION_DELETE	? "deleted"
			   : op->kind == STORE_OP_SESSION_RESET ? "reset"
								: (op->flag ? "paused" : "resumed");
	http_respond_json(req, 200, json_pack("{s:s, s:s}", "session_id", op->session_id, "status", what));
}

static void control(struct http_req *req, enum store_op_kind kind)
{
	const char *id = session_param(req);
	struct store_op *op = id ? session_op(req, kind, id) : NULL;
	if (op)
		gw_store(req, op, on_control);
}

static void delete_session(struct http_req *req, void *arg)
{
	(void)arg, control(req, STORE_OP_SESSION_DELETE);
}
static void reset_session(struct http_req *req, void *arg)
{
	(void)arg, control(req, STORE_OP_SESSION_RESET);
}

static void pause_session(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *paused = json_object_get(body, "paused");
	const char *id = json_is_boolean(paused) ? session_param(req) : NULL;
	if (!json_is_boolean(paused))
		http_respond_error(req, 400, "invalid_paused", "the body must be {\"paused\": true|false}");
	struct store_op *op = id ? session_op(req, STORE_OP_SESSION_PAUSE, id) : NULL;
	if (op) {
		op->flag = json_is_true(paused);
		gw_store(req, op, on_control);
	}
	json_decref(body);
}

static void on_cancel(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "session");
		return;
	}
	/* the session is the caller's: stop its running replies, on this node's workers and others' */
	int n = queue_cancel_session(op->tenant, op->session_id, true);
	enum bus_cancel_reach reach = bus_cancel_notify(op->tenant, op->session_id, NULL, true);
	if (!n && reach == BUS_CANCEL_DOWN) {
		http_respond_error(req, 503, "bus_unavailable",
				   "Redis does not answer: a reply running on another node cannot be told to stop; "
				   "retry once it answers (check redis.url)");
		return;
	}
	const char *status = n ? "cancelled" : reach == BUS_CANCEL_SENT ? "cancelling" : "idle";
	http_respond_json(req, 200, json_pack("{s:s, s:s}", "session_id", op->session_id, "status", status));
}

static void cancel_generation(struct http_req *req, void *arg)
{
	(void)arg;
	const char *id = session_param(req);
	struct store_op *op = id ? session_op(req, STORE_OP_SESSION_GET, id) : NULL;
	if (op)
		gw_store(req, op, on_cancel);
}

enum soma_err gateway_session_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"GET", "/v1/sessions", list_sessions, 0},
		{"GET", "/v1/sessions/{id}", get_session, 0},
		{"DELETE", "/v1/sessions/{id}", delete_session, 0},
		{"GET", "/v1/sessions/{id}/history", get_history, 0},
		{"GET", "/v1/sessions/{id}/events", get_events, 0},
		{"POST", "/v1/sessions/{id}/reset", reset_session, 0},
		{"POST", "/v1/sessions/{id}/pause", pause_session, 0},
		{"POST", "/v1/sessions/{id}/cancel", cancel_generation, 0},
	};
	return gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
}
