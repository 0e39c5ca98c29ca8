/*
 * chat.c - conversation ingress: POST /v1/session/message and POST /v1/session/action.
 *
 * One transaction stores the user's event and the conversation.process task it causes (the
 * local queue lives in the same database), so a 200 means both are durable: a crash after the
 * answer still produces the reply on restart. The reply arrives on the session's event stream.
 * With the local queue and an idle conversation worker, the task is handed to that worker before
 * the transaction and woken once the transaction is submitted (queue/handoff.h: woken earlier,
 * it pre-empts this thread on a small machine and delays the commit it waits for): the worker
 * starts on the reply while the message commits,
 * and the op's settled callback tells it (on the store thread, after the user's event was
 * published) whether the message committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/event.h"
#include "core/ids.h"
#include "core/str_copy.h"
#include "core/trace.h"
#include "gateway/gateway.h"
#include "limits/limits.h"
#include "policy/gate.h"
#include "queue/handoff.h"
#include "tasks/tasks.h"

#define MAX_MESSAGE_BYTES (256 * 1024)
#define MAX_ATTACHMENTS	  32
#define RECALL_QUERY_MAX  4096 /* longest message the task carries for the recall (bytes) */

static const struct {
	const char *action, *text;
} quick_actions[] = {
	{"summarize", "Summarize the recent conversation for the operator."},
	{"next_steps", "Suggest the next three actionable steps."},
	{"status_report", "Provide a short status report of current progress."},
	{"nudge", "Please continue from where you left off."},
};

static void on_message_stored(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "session");
		return;
	}
	/* written directly: the ids need no escaping (the session id is checked by read_common, the
	 * event's and the task's are uuids made here) */
	const char *event_id = json_string_value(json_object_get(op->event, "event_id"));
	const char *task_id = json_string_value(json_object_get(op->task, "id"));
	char body[320], seq[24];
	int d = (int)sizeof(seq) - 1; /* the seq in decimal, written backwards (as %lld) */
	unsigned long long u = op->seq < 0 ? 0ULL - (unsigned long long)op->seq : (unsigned long long)op->seq;
	seq[d] = '\0';
	do
		seq[--d] = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (op->seq < 0)
		seq[--d] = '-';
	const char *pieces[] = {"{\"session_id\":\"",	  op->session_id,	  "\",\"event_id\":\"",
				event_id ? event_id : "", "\",\"seq\":",	  seq + d,
				",\"task_id\":\"",	  task_id ? task_id : "", "\"}"};
	size_t n = 0, whole = 0; /* (whole: the length untruncated; a text that does not fit is not sent) */
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		whole += strlen(pieces[i]);
		n += str_copy(body + n, sizeof(body) - n, pieces[i]);
	}
	http_respond(req, 200, "application/json", body, whole < sizeof(body) ? n : 0);
}

/* The message's transaction settled (store thread, after the commit hook published its event):
 * the worker it was handed to may publish (committed), or drops its work (failed). */
static void message_settled(struct store_op *op)
{
	struct commit_gate *gate = op->settled_arg;
	commit_gate_settle(gate, op->err == SOMA_OK, op->seq);
	commit_gate_unref(gate);
}

/* Early start (queue.early_start): hands op's task to an idle conversation worker, if one waits;
 * op then inserts the task reserved by that worker. text: the message (copied). */
static void hand_off(struct store_op *op, const char *text)
{
	if (!queue_handoff_possible())
		return; /* every worker busy (as under load): no gate, no copy of the task */
	struct commit_gate *gate = commit_gate_new();
	json_t *task = gate ? json_deep_copy(op->task) : NULL;
	json_t *more = json_pack("{s:s, s:s, s:i, s:s}", "tenant", op->tenant, "session_id", op->session_id, "attempts",
				 1, "message", text);
	int64_t visibility_ms = 0;
	if (task && more && json_object_update(task, more) == 0 &&
	    queue_handoff(task, gate, op->worker, sizeof(op->worker), &visibility_ms)) {
		op->delay_ms = visibility_ms;
		op->settled = message_settled;
		op->settled_arg = gate; /* the gateway's reference, dropped when the op settles */
		gate = NULL;
	}
	json_decref(more);
	json_decref(task);
	commit_gate_unref(gate);
}

/* Validates the fields both endpoints share; answers 400 and returns false on a problem. */
static bool read_common(struct http_req *req, json_t *body, char session_id[65], const char **persona,
			json_t **attachments, json_t **metadata)
{
	json_t *sid = json_object_get(body, "session_id"), *pid = json_object_get(body, "persona_id");
	json_t *att = json_object_get(body, "attachments"), *meta = json_object_get(body, "metadata");
	if (sid && !json_is_null(sid)) {
		if (!json_is_string(sid) || !gw_valid_id(json_string_value(sid))) {
			http_respond_error(req, 400, "invalid_session_id",
					   "session_id must be 1 to 64 characters of "
					   "[A-Za-z0-9_-], or absent");
			return false;
		}
		str_copy(session_id, 65, json_string_value(sid));
	} else {
		ids_uuid7(session_id);
	}
	if (pid && !json_is_null(pid) && (!json_is_string(pid) || json_string_length(pid) > 64)) {
		http_respond_error(req, 400, "invalid_persona_id",
				   "persona_id must be a string of at most 64 characters");
		return false;
	}
	*persona = json_string_value(pid);
	if (att && !json_is_null(att)) {
		bool ok = json_is_array(att) && json_array_size(att) <= MAX_ATTACHMENTS;
		size_t i;
		json_t *v;
		json_array_foreach(att, i, v) ok = ok && json_is_string(v) && gw_valid_id(json_string_value(v));
		if (!ok) {
			http_respond_error(req, 400, "invalid_attachments",
					   "attachments must be an array of at most %d attachment ids",
					   MAX_ATTACHMENTS);
			return false;
		}
	}
	*attachments = json_is_array(att) ? att : NULL;
	if (meta && !json_is_null(meta) && !json_is_object(meta)) {
		http_respond_error(req, 400, "invalid_metadata", "metadata must be a JSON object");
		return false;
	}
	*metadata = json_is_object(meta) ? meta : NULL;
	return true;
}

/* ---- policy (issue 6): a valid message waits here for the token budget and conversation.send ---- */
struct ingest {
	json_t *body;			/* the request body (a reference) */
	json_t *extra_meta;		/* quick-action metadata; owned, or NULL */
	char *text;			/* the message; owned */
	char session_id[65];		/* given or new */
	const char *persona;		/* in body, or NULL */
	json_t *attachments, *metadata; /* in body, or NULL */
	gw_store_done_fn done;		/* answers the stored message (on_message_stored, or A2A's) */
	char task_id[IDS_UUID_LEN + 1]; /* the conversation task's id chosen by the caller, or "" */
};

static void ingest_free(void *arg)
{
	struct ingest *in = arg;
	json_decref(in->body);
	json_decref(in->extra_meta);
	free(in->text);
	free(in);
}

/* The conversation.process task of a message (owned; NULL when memory ran out or a string is not
 * UTF-8): {id, queue, name, payload:{event_id, subject, scopes, persona_id, traceparent?}, max_retries}, built
 * member by member (what json_pack built, without reading a format per message). */
static json_t *task_new(const char *task_id, json_t *event_id, const struct http_req *req, const char *persona)
{
	json_t *task = json_object(), *payload = json_object();
	bool ok =
		task && payload && json_object_set_nocheck(payload, "event_id", event_id) == 0 &&
		json_object_set_new_nocheck(payload, "subject", json_string(req->ident.subject)) == 0 &&
		json_object_set_new_nocheck(payload, "scopes", json_string(req->ident.scopes)) == 0 &&
		json_object_set_new_nocheck(payload, "persona_id", persona ? json_string(persona) : json_null()) == 0 &&
		json_object_set_new_nocheck(task, "id", json_string(task_id)) == 0 &&
		json_object_set_new_nocheck(task, "queue", json_string("conversation")) == 0 &&
		json_object_set_new_nocheck(task, "name", json_string(TASK_CONVERSATION_PROCESS)) == 0 &&
		json_object_set_nocheck(task, "payload", payload) == 0 &&
		json_object_set_new_nocheck(task, "max_retries",
					    json_integer((json_int_t)cfg_int(CFG_QUEUE_MAX_RETRIES))) == 0;
	if (ok && req->span && req->span->on) { /* the task continues the request's trace */
		char tp[TRACEPARENT_LEN + 1];
		trace_span_traceparent(req->span, tp);
		ok = json_object_set_new_nocheck(payload, "traceparent", json_string(tp)) == 0;
	}
	json_decref(payload);
	if (!ok) {
		json_decref(task);
		return NULL;
	}
	return task;
}

static void ingest_allowed(struct http_req *req, void *arg)
{
	struct ingest *in = arg;
	json_t *meta = in->metadata ? json_deep_copy(in->metadata) : json_object();
	if (in->extra_meta)
		json_object_update(meta, in->extra_meta);
	json_t *event = chat_event_new(in->session_id, "user", "user", in->text, in->persona, meta);
	if (in->attachments)
		json_object_set(event, "attachments", in->attachments);
	char task_id[IDS_UUID_LEN + 1];
	if (in->task_id[0])
		str_copy(task_id, sizeof(task_id), in->task_id);
	else
		ids_uuid7(task_id);
	struct store_op *op = store_op_new(STORE_OP_MESSAGE, req->ident.tenant);
	if (!op || !event) {
		json_decref(event);
		store_op_free(op);
		ingest_free(in);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	str_copy(op->session_id, sizeof(op->session_id), in->session_id);
	str_copy(op->subject, sizeof(op->subject), req->ident.subject);
	op->event = event;
	op->attachments = in->attachments ? json_incref(in->attachments) : NULL;
	/* subject, scopes and persona ride along so the worker asks policy as the same caller */
	op->task = task_new(task_id, json_object_get(event, "event_id"), req, in->persona);
	/* the worker recalls memories for the message while it reads the context (issue 5); a long
	 * message is not copied: the worker then takes it from the context */
	if (op->task && cfg_int(CFG_MEMORY_RECALL_TOP_K) > 0 && strlen(in->text) <= RECALL_QUERY_MAX)
		json_object_set_new(json_object_get(op->task, "payload"), "recall_query", json_string(in->text));
	/* not with attachments: their ownership is checked by the transaction, and a message refused
	 * there must not have reached the provider (an early start calls it before the commit) */
	if (op->task && !op->attachments)
		hand_off(op, in->text);
	gw_store_done_fn done = in->done;
	ingest_free(in);
	char worker[sizeof(op->worker)];
	str_copy(worker, sizeof(worker), op->worker); /* op may be gone once submitted */
	gw_store(req, op, done);
	if (worker[0]) /* woken after the commit is submitted: it would pre-empt this thread before */
		queue_handoff_start(worker);
}

static void ingest(struct http_req *req, json_t *body, const char *text, json_t *extra_meta, gw_store_done_fn done,
		   const char *task_id)
{
	struct ingest *in = calloc(1, sizeof(*in));
	if (in)
		*in = (struct ingest){
			.body = json_incref(body), .extra_meta = extra_meta, .text = strdup(text), .done = done};
	if (in && task_id)
		str_copy(in->task_id, sizeof(in->task_id), task_id);
	if (!in || !in->text) {
		in ? ingest_free(in) : json_decref(extra_meta);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	if (!read_common(req, body, in->session_id, &in->persona, &in->attachments, &in->metadata) ||
	    !limits_http_tokens(req)) {
		ingest_free(in);
		return;
	}
	char resource[80];
	size_t n = str_copy(resource, sizeof(resource), "session:");
	str_copy(resource + n, sizeof(resource) - n, in->session_id);
	json_t *ctx = json_object(); /* {message_length}, as json_pack built it */
	if (json_object_set_new_nocheck(ctx, "message_length", json_integer((json_int_t)strlen(in->text))) != 0) {
		json_decref(ctx);
		ctx = NULL;
	}
	struct policy_input pin = {
		.persona_id = in->persona, .action = POLICY_CONVERSATION_SEND, .resource = resource, .context = ctx};
	policy_gate_ask(req, &pin, in->session_id, ingest_allowed, in, ingest_free);
	json_decref(ctx);
}

static void post_message(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *msg = json_object_get(body, "message");
	const char *text = json_string_value(msg);
	size_t len = json_string_length(msg);
	size_t lead = 0;
	while (text && lead < len &&
	       (text[lead] == ' ' || text[lead] == '\n' || text[lead] == '\t' || text[lead] == '\r'))
		lead++;
	if (!json_is_string(msg) || lead == len) {
		http_respond_error(req, 400, "invalid_message", "message must be a non-empty string");
	} else if (len > MAX_MESSAGE_BYTES || memchr(text, '\0', len)) {
		http_respond_error(req, 400, "invalid_message", "message must be text of at most %d bytes",
				   MAX_MESSAGE_BYTES);
	} else {
		ingest(req, body, text, NULL, on_message_stored, NULL);
	}
	json_decref(body);
}

static void post_action(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	const char *action = json_string_value(json_object_get(body, "action"));
	const char *text = NULL;
	for (size_t i = 0; action && i < sizeof(quick_actions) / sizeof(quick_actions[0]); i++) {
		if (strcmp(action, quick_actions[i].action) == 0)
			text = quick_actions[i].text;
	}
	if (!text)
		http_respond_error(req, 400, "unknown_action",
				   "action must be one of summarize, next_steps, status_report, nudge");
	else
		ingest(req, body, text, json_pack("{s:s, s:s}", "source", "quick_action", "action", action),
		       on_message_stored, NULL);
	json_decref(body);
}

void gw_chat_post(struct http_req *req, json_t *body, const char *text, const char *task_id, gw_store_done_fn done)
{
	ingest(req, body, text, NULL, done, task_id);
}

enum soma_err gateway_chat_routes(struct http_router *r)
{
	enum soma_err err = http_route_add(r, "POST", "/v1/session/message", post_message, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "POST", "/v1/session/action", post_action, NULL, 0);
	return err;
}
