/*
 * a2a.c - POST /a2a: the A2A JSON-RPC endpoint, spec 0.3 and 1.0 (reference/interop.md §3).
 *
 * DESIGN: the method name tells the version: slash names (message/send, tasks/get, ...) are spec
 * 0.3, PascalCase (SendMessage, GetTask, ...) spec 1.0; both map onto the same operations and
 * differ only in the shape of what is written (a2a_objects.c). A send is a chat message: it takes
 * the path of POST /v1/session/message (gw_chat_post: the same token budget, policy
 * conversation.send and transactional outbox; their refusals, and the pipeline's request rate,
 * are written as JSON-RPC errors by a2a_refuse.c; authentication stays HTTP 401), with a
 * conversation task id chosen here and recorded in the user event's metadata.a2a, so the task can
 * be told from the session's events alone (a2a_int.h). When the message is stored, the request's
 * body is read again (it stays in the request's arena) for what to answer, and a run (a2a_run.c)
 * follows the task. A streaming call takes its place in limits.streams_per_tenant before the
 * message is stored (a2a_refuse.c), so a refused stream leaves nothing behind. JSON-RPC rules:
 * HTTP 200 for every JSON-RPC error but unparseable JSON (400, -32700, id null); the id is echoed
 * with its JSON type; streaming methods always answer text/event-stream, their errors as one
 * event. Valid JSON that jansson's strict read refuses is answered as JSON-RPC: a string with
 * \u0000 in the params is -32602 (the chat path refuses NUL), an integer beyond 64 bits -32600 (an
 * id we cannot echo exactly is answered null; a string id is echoed). Not supported: push
 * notifications (-32003), the extended card (-32007), ListTasks and continuing a task by taskId
 * (-32004).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "core/ids.h"
#include "core/json_read.h"
#include "gateway/a2a_int.h"
#include "gateway/gateway.h"
#include "queue/queue.h"

#define A2A_MAX_TEXT (256 * 1024) /* as POST /v1/session/message */

const char *a2a_task_cancel(const char *tenant, const char *gen)
{
	if (queue_cancel_task(tenant, gen) > 0)
		return NULL;
	enum bus_cancel_reach reach = bus_cancel_notify(tenant, NULL, gen, true);
	if (reach == BUS_CANCEL_SENT || (reach == BUS_CANCEL_LOCAL && queue_serves("conversation")))
		return NULL; /* (a queued task is stopped when a worker takes it) */
	return reach == BUS_CANCEL_DOWN
		       ? "the task does not run on this node, and its node cannot be told: Redis does not answer; retry"
		       : "the task does not run on this node, which runs no conversation workers and tells no other "
			 "node (bus.driver=local); send the cancel to a node with workers";
}

/* ---- answers ----------------------------------------------------------------------------- */

json_t *a2a_rpc_result(json_t *id, json_t *result)
{
	json_t *env = json_pack("{s:s, s:O}", "jsonrpc", "2.0", "id", id ? id : json_null());
	if (env)
		json_object_set_new(env, "result", result ? result : json_null());
	else
		json_decref(result);
	return env;
}

json_t *a2a_rpc_error(json_t *id, int code, const char *message)
{
	return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", "code",
			 code, "message", message);
}

void a2a_respond(struct http_req *req, json_t *envelope)
{
	if (!envelope) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	http_respond_json(req, 200, envelope);
}

void a2a_sse_begin(struct http_req *req)
{
	http_resp_header(req, "Cache-Control", "no-cache");
	http_resp_header(req, "X-Accel-Buffering", "no");
	http_stream_begin(req, 200, "text/event-stream");
	http_stream_count(req, gw_sse_gauge(GW_SSE_A2A));
}

size_t a2a_sse_write(struct http_req *req, json_t *envelope)
{
	char *text = envelope ? json_dumps(envelope, JSON_COMPACT) : NULL; /* one line: no newlines */
	json_decref(envelope);
	if (!text)
		return 0;
	struct str frame[] = {STR_LIT("data: "), {text, strlen(text)}, STR_LIT("\n\n")};
	size_t queued = http_stream_writev(req, frame, 3);
	free(text);
	return queued;
}

void a2a_sse_error(struct http_req *req, json_t *id, int code, const char *message)
{
	a2a_sse_begin(req);
	a2a_sse_write(req, a2a_rpc_error(id, code, message));
	http_stream_end(req);
}

/* ---- requests ---------------------------------------------------------------------------- */

struct call {
	json_t *id;	  /* borrowed from the body */
	json_t *params;	  /* an object (borrowed), or NULL */
	enum a2a_ver ver; /* by method name */
	bool stream;	  /* a streaming method: errors as SSE */
};

static void fail(struct http_req *req, const struct call *c, int code, const char *message)
{
	if (c->stream)
		a2a_sse_error(req, c->id, code, message);
	else
		a2a_respond(req, a2a_rpc_error(c->id, code, message));
}

/* The message's text: its text parts joined by newlines (malloc'd), or NULL after answering. */
static char *message_text(struct http_req *req, const struct call *c, json_t *msg)
{
	json_t *parts = json_object_get(msg, "parts");
	const char *role = json_string_value(json_object_get(msg, "role"));
	const char *mid = json_string_value(json_object_get(msg, "messageId"));
	if (!json_is_object(msg) || !role || (strcmp(role, "user") != 0 && strcmp(role, "ROLE_USER") != 0) || !mid ||
	    !mid[0] || !json_is_array(parts) || json_array_size(parts) == 0) {
		fail(req, c, A2A_INVALID_PARAMS,
		     "params.message must be a user message with a messageId and at least one text part");
		return NULL;
	}
	size_t total = 0, i;
	json_t *p;
	json_array_foreach(parts, i, p)
	{
		const char *kind = json_string_value(json_object_get(p, "kind"));
		if (!json_is_string(json_object_get(p, "text")) || (kind && strcmp(kind, "text") != 0)) {
			fail(req, c, A2A_CONTENT_TYPE, "this agent reads text parts only");
			return NULL;
		}
		total += json_string_length(json_object_get(p, "text")) + 1;
	}
	if (total > A2A_MAX_TEXT) {
		fail(req, c, A2A_INVALID_PARAMS, "the message is longer than 262144 bytes");
		return NULL;
	}
	char *text = calloc(1, total + 1);
	size_t n = 0;
	json_array_foreach(parts, i, p)
	{
		json_t *t = json_object_get(p, "text");
		if (!text)
			continue;
		if (n)
			text[n++] = '\n';
		memcpy(text + n, json_string_value(t), json_string_length(t));
		n += json_string_length(t);
	}
	size_t lead = 0;
	while (text && lead < n && strchr(" \t\r\n", text[lead]))
		lead++;
	if (!text || lead == n) {
		free(text);
		fail(req, c, text ? A2A_INVALID_PARAMS : A2A_INTERNAL,
		     text ? "the message has no text" : "the server is out of memory");
		return NULL;
	}
	return text;
}

/* What to do once the message is stored: the body is read again for the call. */
static bool read_call(struct http_req *req, json_t **body, struct call *c);

static void on_sent(struct http_req *req, struct store_op *op)
{
	json_t *body = NULL;
	struct call c = {0};
	if (!read_call(req, &body, &c)) { /* it was read before: cannot happen */
		http_respond_error(req, 500, "internal", "the request changed");
		return;
	}
	if (op->err == SOMA_ERR_NOT_FOUND) { /* the session id is another tenant's */
		fail(req, &c, A2A_INVALID_PARAMS,
		     "contextId names a conversation that is not yours; omit it for a new one");
		json_decref(body);
		return;
	}
	if (op->err != SOMA_OK) {
		fail(req, &c, A2A_INTERNAL,
		     op->err == SOMA_ERR_UNAVAILABLE ? "the store is busy; retry in a second"
						     : "the message was not stored");
		json_decref(body);
		return;
	}
	json_t *conf = json_object_get(c.params, "configuration");
	bool blocking = c.ver == A2A_V03 ? !json_is_false(json_object_get(conf, "blocking"))
					 : !json_is_true(json_object_get(conf, "returnImmediately"));
	struct a2a_task t = {.seq = op->seq, .state = A2A_SUBMITTED};
	snprintf(t.context, sizeof(t.context), "%s", op->session_id);
	snprintf(t.gen, sizeof(t.gen), "%s", json_string_value(json_object_get(op->task, "id")));
	a2a_task_id_make(&t);
	a2a_run_start(req, c.id, c.ver, c.stream ? A2A_STREAM : blocking ? A2A_BLOCK : A2A_RETURN, &t);
	json_decref(body);
}

static void send_message(struct http_req *req, const struct call *c)
{
	json_t *msg = json_object_get(c->params, "message");
	json_t *conf = json_object_get(c->params, "configuration");
	const char *ctx = json_string_value(json_object_get(msg, "contextId"));
	if (json_object_get(conf, "pushNotificationConfig") || json_object_get(conf, "taskPushNotificationConfig")) {
		fail(req, c, A2A_PUSH_UNSUPPORTED, "push notifications are not supported");
		return;
	}
	if (json_object_get(msg, "taskId")) {
		fail(req, c, A2A_UNSUPPORTED,
		     "each message starts a new task; send it without taskId (its contextId continues the "
		     "conversation)");
		return;
	}
	if (json_object_get(msg, "contextId") && (!ctx || !gw_valid_id(ctx))) {
		fail(req, c, A2A_INVALID_PARAMS, "contextId must be 1 to 64 characters of [A-Za-z0-9_-]");
		return;
	}
	char *text = message_text(req, c, msg);
	if (!text)
		return;
	if (c->stream && !a2a_stream_place_take(req)) { /* answered */
		free(text);
		return;
	}
	char gen[IDS_UUID_LEN + 1];
	ids_uuid7(gen);
	json_t *body = json_pack("{s:{s:{s:s, s:s}}}", "metadata", "a2a", "task", gen, "message_id",
				 json_string_value(json_object_get(msg, "messageId")));
	if (body && ctx)
		json_object_set_new(body, "session_id", json_string(ctx));
	if (!body)
		fail(req, c, A2A_INTERNAL, "the server is out of memory");
	else
		gw_chat_post(req, body, text, gen, on_sent);
	json_decref(body);
	free(text);
}

/* tasks/get, tasks/cancel, tasks/resubscribe and their 1.0 names: params {id}. */
static void follow(struct http_req *req, const struct call *c, enum a2a_mode mode)
{
	const char *id = json_string_value(json_object_get(c->params, "id"));
	struct a2a_task t;
	if (!id || !id[0]) {
		fail(req, c, A2A_INVALID_PARAMS, "params.id must be a task id");
		return;
	}
	if (!a2a_task_id_parse(id, &t)) {
		fail(req, c, A2A_TASK_NOT_FOUND, "task not found");
		return;
	}
	if (mode == A2A_RESUBSCRIBE && !a2a_stream_place_take(req))
		return; /* answered */
	a2a_run_start(req, c->id, c->ver, mode, &t);
}

enum op { OP_SEND, OP_STREAM, OP_GET, OP_CANCEL, OP_SUBSCRIBE, OP_PUSH, OP_CARD, OP_LIST };

static const struct {
	const char *name;
	enum a2a_ver ver;
	enum op op;
} methods[] = {
	{"message/send", A2A_V03, OP_SEND},
	{"message/stream", A2A_V03, OP_STREAM},
	{"tasks/get", A2A_V03, OP_GET},
	{"tasks/cancel", A2A_V03, OP_CANCEL},
	{"tasks/resubscribe", A2A_V03, OP_SUBSCRIBE},
	{"tasks/pushNotificationConfig/set", A2A_V03, OP_PUSH},
	{"tasks/pushNotificationConfig/get", A2A_V03, OP_PUSH},
	{"tasks/pushNotificationConfig/list", A2A_V03, OP_PUSH},
	{"tasks/pushNotificationConfig/delete", A2A_V03, OP_PUSH},
	{"agent/getAuthenticatedExtendedCard", A2A_V03, OP_CARD},
	{"SendMessage", A2A_V10, OP_SEND},
	{"SendStreamingMessage", A2A_V10, OP_STREAM},
	{"GetTask", A2A_V10, OP_GET},
	{"CancelTask", A2A_V10, OP_CANCEL},
	{"SubscribeToTask", A2A_V10, OP_SUBSCRIBE},
	{"CreateTaskPushNotificationConfig", A2A_V10, OP_PUSH},
	{"GetTaskPushNotificationConfig", A2A_V10, OP_PUSH},
	{"ListTaskPushNotificationConfigs", A2A_V10, OP_PUSH},
	{"DeleteTaskPushNotificationConfig", A2A_V10, OP_PUSH},
	{"GetExtendedAgentCard", A2A_V10, OP_CARD},
	{"ListTasks", A2A_V10, OP_LIST},
};

static int method_of(const char *name)
{
	for (size_t i = 0; name && i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(methods[i].name, name) == 0)
			return (int)i;
	return -1;
}

bool a2a_method_info(const char *method, enum a2a_ver *ver, bool *stream)
{
	int m = method_of(method);
	if (m < 0)
		return false;
	*ver = methods[m].ver;
	*stream = methods[m].op == OP_STREAM || methods[m].op == OP_SUBSCRIBE;
	return true;
}

/* Whether a string anywhere in v holds a NUL (\u0000). */
static bool has_nul(json_t *v, int depth)
{
	if (json_is_string(v))
		return memchr(json_string_value(v), '\0', json_string_length(v)) != NULL;
	const char *key;
	size_t i;
	json_t *m;
	if (depth > 64)
		return false;
	if (json_is_object(v))
		json_object_foreach(v, key, m) if (has_nul(m, depth + 1)) return true;
	if (json_is_array(v))
		json_array_foreach(v, i, m) if (has_nul(m, depth + 1)) return true;
	return false;
}

/* The body refused by the strict read, read again as the valid JSON it may be: with NUL in
 * strings, and (*big) with integers beyond 64 bits as reals. NULL: it is not JSON. */
static json_t *read_lenient(struct http_req *req, bool *big)
{
	json_t *v = json_loadb(req->body, req->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	*big = !v;
	if (!v)
		v = json_loadb(req->body, req->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
			       NULL);
	return v;
}

/* Parses the body into *body (owned) and c; answers and returns false when it is not a valid
 * JSON-RPC request (or the method is unknown). */
static bool read_call(struct http_req *req, json_t **body, struct call *c)
{
	json_t *v = NULL;
	json_error_t jerr;
	bool nesting = req->body && req->body_len && gw_json_nesting_ok(req->body, req->body_len), big = false;
	if (nesting && !(v = json_read(req->body, req->body_len, JSON_DECODE_ANY, &jerr))) {
		if (json_read_out_of_memory(&jerr)) {
			http_resp_header(req, "Retry-After", "1");
			http_respond_error(req, 503, "out_of_memory",
					   "the server ran out of memory reading the body; retry later");
			return false;
		}
		if (req->body_len <= JSON_READ_JANSSON_MAX) /* (jansson is trusted with that much: json_read.h) */
			v = read_lenient(req, &big);
	}
	if (!v) {
		http_respond_json(req, 400, a2a_rpc_error(NULL, A2A_PARSE_ERROR, "Parse error: the body is not JSON"));
		return false;
	}
	*body = v;
	if (big) { /* every number was read as a real: only a string id is known exactly */
		json_t *id = json_object_get(v, "id");
		a2a_respond(req, a2a_rpc_error(json_is_string(id) ? id : NULL, A2A_INVALID_REQUEST,
					       "Invalid Request: an integer does not fit in 64 bits (an id must "
					       "be a string or an integer from -2^63 to 2^63-1)"));
		return false;
	}
	json_t *id = json_object_get(v, "id");
	bool id_ok = !id || json_is_string(id) || json_is_integer(id) || json_is_real(id) || json_is_null(id);
	c->id = id_ok ? id : NULL;
	const char *method = json_string_value(json_object_get(v, "method"));
	if (method && strlen(method) != json_string_length(json_object_get(v, "method")))
		method = "\n"; /* (no method has a NUL) */
	if (!json_is_object(v) || !id_ok || !json_is_string(json_object_get(v, "jsonrpc")) ||
	    strcmp(json_string_value(json_object_get(v, "jsonrpc")), "2.0") != 0 || !method) {
		a2a_respond(req,
			    a2a_rpc_error(c->id, A2A_INVALID_REQUEST,
					  "Invalid Request: a JSON-RPC 2.0 object with jsonrpc \"2.0\", a method and a "
					  "string or number id"));
		return false;
	}
	int m = method_of(method);
	if (m < 0) {
		a2a_respond(req, a2a_rpc_error(c->id, A2A_METHOD_NOT_FOUND, "Method not found"));
		return false;
	}
	c->ver = methods[m].ver;
	c->stream = methods[m].op == OP_STREAM || methods[m].op == OP_SUBSCRIBE;
	c->params = json_object_get(v, "params");
	if (!json_is_object(c->params)) {
		fail(req, c, A2A_INVALID_PARAMS, "params must be an object");
		return false;
	}
	if (has_nul(c->params, 0)) {
		fail(req, c, A2A_INVALID_PARAMS,
		     "a string in params holds a NUL character (\\u0000); send text without it");
		return false;
	}
	return true;
}

void a2a_post(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = NULL;
	struct call c = {0};
	if (!read_call(req, &body, &c)) {
		json_decref(body);
		return;
	}
	switch (methods[method_of(json_string_value(json_object_get(body, "method")))].op) {
	case OP_SEND:
	case OP_STREAM:
		send_message(req, &c);
		break;
	case OP_GET:
		follow(req, &c, A2A_GET);
		break;
	case OP_CANCEL:
		follow(req, &c, A2A_CANCEL);
		break;
	case OP_SUBSCRIBE:
		follow(req, &c, A2A_RESUBSCRIBE);
		break;
	case OP_PUSH:
		fail(req, &c, A2A_PUSH_UNSUPPORTED, "push notifications are not supported");
		break;
	case OP_CARD:
		fail(req, &c, -32007, "there is no authenticated extended agent card");
		break;
	case OP_LIST:
		fail(req, &c, A2A_UNSUPPORTED, "ListTasks is not supported");
		break;
	}
	json_decref(body);
}
