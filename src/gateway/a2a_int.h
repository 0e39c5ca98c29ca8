/*
 * a2a_int.h - what the files of the A2A front end share (a2a.c: JSON-RPC; a2a_run.c: waiting
 * for and streaming a task; a2a_objects.c: the wire objects of both spec versions; a2a_card.c:
 * the agent card; a2a_refuse.c: refusals made by shared code, and a stream's place in
 * limits.streams_per_tenant).
 *
 * DESIGN: an A2A context is a chat session of the caller's tenant (contextId = session id) and an
 * A2A task is one user message and the reply the conversation worker gives it. Nothing new is
 * stored: the task id "<session>.<seq>.<generation>" names the session, the seq of the user event
 * and the conversation task's id (the reply events' metadata.generation_id), so a task is read
 * back from the session's events alone: the user event at seq (metadata.a2a.task = generation),
 * then assistant.final (completed, or canceled when its status is "cancelled") or assistant.error
 * (failed) of that generation; before either the task is working. Everything runs on the
 * request's io thread; store reads are posted back to it.
 */
#ifndef SOMA_GATEWAY_A2A_INT_H
#define SOMA_GATEWAY_A2A_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/http.h"

#define A2A_TASK_ID_MAX 160 /* "<session 64>.<seq 20>.<uuid 36>" and the NUL, with room */

enum a2a_ver { A2A_V03, A2A_V10 }; /* spec 0.3 (slash methods) or 1.0 (PascalCase) */

enum a2a_state { A2A_SUBMITTED, A2A_WORKING, A2A_COMPLETED, A2A_CANCELED, A2A_FAILED };

/* JSON-RPC error codes (reference/interop.md §3.6). */
enum {
	A2A_PARSE_ERROR = -32700,
	A2A_INVALID_REQUEST = -32600,
	A2A_METHOD_NOT_FOUND = -32601,
	A2A_INVALID_PARAMS = -32602,
	A2A_INTERNAL = -32603,
	A2A_TASK_NOT_FOUND = -32001,
	A2A_NOT_CANCELABLE = -32002,
	A2A_PUSH_UNSUPPORTED = -32003,
	A2A_UNSUPPORTED = -32004,
	A2A_CONTENT_TYPE = -32005,
	A2A_CRED_GONE = -32000, /* ours (the server-error range): the caller's key was revoked, or its
				 * JWT expired, while its stream or blocking send ran */
	/* ours, in the implementation-defined range away from A2A's own block (-32001..): refusals
	 * by this server's policy and limits; error.data names our error code (docs/api.md) */
	A2A_POLICY_DENIED = -32050, /* policy refused conversation.send (data.reason: why) */
	A2A_LIMITED = -32051,	    /* over a limit: request rate, token budget, streams per tenant */
};

/* One task as read from the session's events. Strings are owned (free with a2a_task_clear). */
struct a2a_task {
	char id[A2A_TASK_ID_MAX];     /* the A2A task id */
	char context[65];	      /* session id */
	char gen[65];		      /* conversation task id (generation_id) */
	int64_t seq;		      /* seq of the user event */
	enum a2a_state state;	      /* as far as known */
	char *user_text, *user_msgid; /* the user's message and its messageId; NULL until read */
	char *reply;		      /* the final text (or error words); NULL while working */
	char *created;		      /* the user event's created_at, or NULL */
	char *updated;		      /* the outcome's created_at, or NULL */
};

/* "<session>.<seq>.<gen>" into t (id, context, seq, gen); false when s is not such an id. */
bool a2a_task_id_parse(const char *s, struct a2a_task *t);
void a2a_task_id_make(struct a2a_task *t);
void a2a_task_clear(struct a2a_task *t);
bool a2a_state_terminal(enum a2a_state s);
/* Applies one event (parsed JSON of a stored or live event) to t: the user event at t->seq, or an
 * outcome of t->gen. Returns true when it changed t's state to a terminal one. */
bool a2a_task_apply(struct a2a_task *t, json_t *ev);

/* ---- wire objects (a2a_objects.c); each returns an owned object, NULL on OOM -------------- */
json_t *a2a_task_json(enum a2a_ver v, const struct a2a_task *t);
/* The result of a send: v0.3 the Task itself, v1.0 {"task": Task}. Takes task. */
json_t *a2a_send_result(enum a2a_ver v, json_t *task);
/* Stream events: v0.3 objects with kind, v1.0 wrapped as {"task"|"statusUpdate"|"artifactUpdate"}. */
json_t *a2a_stream_task(enum a2a_ver v, const struct a2a_task *t);
json_t *a2a_status_update(enum a2a_ver v, const struct a2a_task *t, bool final);
json_t *a2a_artifact_update(enum a2a_ver v, const struct a2a_task *t, const char *text, size_t len, bool append);

/* ---- JSON-RPC answers (a2a.c); id is borrowed -------------------------------------------- */
/* {"jsonrpc":"2.0","id":id,"result":result} (takes result); error likewise with {code, message}. */
json_t *a2a_rpc_result(json_t *id, json_t *result);
json_t *a2a_rpc_error(json_t *id, int code, const char *message);
/* Answers 200 application/json with the envelope (taken). */
void a2a_respond(struct http_req *req, json_t *envelope);
/* Begins a 200 text/event-stream answer (the headers a2a-js sends). */
void a2a_sse_begin(struct http_req *req);
/* Writes one event `data: <envelope>\n\n` (taken); returns bytes still queued. */
size_t a2a_sse_write(struct http_req *req, json_t *envelope);
/* A streaming method's error: one SSE event with the JSON-RPC error, then the end. */
void a2a_sse_error(struct http_req *req, json_t *id, int code, const char *message);

/* tasks/cancel: asks tenant's task gen to stop where it runs: on this process's workers
 * (queue_cancel_task), else on another node's through a cancel notice (bus_cancel_notify: every
 * node with workers applies it, also to the task still queued). NULL when done; else why not
 * (static text: no worker of the task here, and no other node hears it). */
const char *a2a_task_cancel(const char *tenant, const char *gen);
/* POST /a2a (a2a.c). */
void a2a_post(struct http_req *req, void *arg);
/* The version and whether method is a streaming one; false when it is no A2A method. */
bool a2a_method_info(const char *method, enum a2a_ver *ver, bool *stream);

/* ---- refusals (a2a_refuse.c) ------------------------------------------------------------- */
/* The error renderer of POST /a2a (http_route_set_error_fn): a 403, 429 or 5xx answered by code
 * shared with the REST API (policy gate, limits, chat path) becomes a JSON-RPC error with the
 * request's id (an SSE event for a streaming method); error is borrowed. */
bool a2a_http_error(struct http_req *req, int status, json_t *error);
/* Takes a place of limits.streams_per_tenant for req's tenant, given back when req ends, however
 * (http_req.on_end). False after answering the refusal (a JSON-RPC error, via a2a_http_error). */
bool a2a_stream_place_take(struct http_req *req);

/* ---- runs (a2a_run.c): a task followed on the request's io thread ------------------------- */
enum a2a_mode {
	A2A_GET,	/* answer the Task as read (tasks/get) */
	A2A_CANCEL,	/* tasks/cancel: stop the generation, answer the Task canceled */
	A2A_BLOCK,	/* send: answer the Task once terminal (or at a2a.blocking_timeout_s) */
	A2A_RETURN,	/* send, non-blocking: answer the Task as stored */
	A2A_STREAM,	/* send streaming: Task, working, artifact updates, final status */
	A2A_RESUBSCRIBE /* the Task as read, then live updates until terminal */
};
/* Follows t (copied: id, context, seq, gen set) for req in mode; answers req in every case. id is
 * the JSON-RPC id (borrowed). tenant: the caller's. */
void a2a_run_start(struct http_req *req, json_t *id, enum a2a_ver v, enum a2a_mode mode, const struct a2a_task *t);

#endif
