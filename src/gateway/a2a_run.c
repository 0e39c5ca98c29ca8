/*
 * a2a_run.c - one A2A task followed for one request: read it back, wait for its end, or stream it.
 *
 * DESIGN: a run subscribes to the session's bus key first (modes that follow the task), then reads
 * the session's events from the task's user event on (a store thread, which also takes the bus
 * snapshot of the ephemeral deltas after it, as a resuming SSE stream does; the io loop never
 * waits). Live messages that arrive meanwhile are held; when the read is back (posted to the
 * request's io thread) the rows are applied, then the snapshot's deltas and the held messages,
 * then live ones as they come. Deltas are told apart by their stream_index (one send each, so
 * the overlap of snapshot, held and live is sent once) and the outcome (assistant.final or
 * assistant.error of the task's generation) ends the run; a deleted session (end marker) ends it
 * canceled and a gap marker (Redis was away) reads again. Only messages that name the task's
 * generation are parsed. A blocking send answers at its end or at a2a.blocking_timeout_s (the
 * task as it is then); a stream ends after the final status update. Everything but the read runs
 * on the request's io thread; the client leaving frees the run (or marks it, while a read is out).
 * While a read is out, on_read owns the run's fate: the deadline and the keepalive tick only mark
 * it (late) or skip. Whatever may end the run (emit, handle, finish) says so, and its caller
 * touches the run no more: on_read's catch-up works on the snapshot detached from the run. A
 * stream gets an SSE comment (": keepalive") every stream.keepalive_s, where the session stream
 * sends its keepalive event: a2a-js (0.3 and 1.3) skips comment lines and events without data.
 * tasks/cancel stops the task's own generation only, on whichever node (a2a_task_cancel; a queued
 * one when a worker takes it). A run is as good as the caller's credential, like a session stream
 * (cred_hold.h): checked before each event, each second and when a read is back; once revoked or
 * expired the run ends with the JSON-RPC error A2A_CRED_GONE (-32000).
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "core/config.h"
#include "gateway/a2a_int.h"
#include "gateway/cred_hold.h"
#include "gateway/gateway.h"

#define A2A_READ_LIMIT 1000 /* events read after the user event: its outcome is among them */
#define A2A_HELD_MAX   4096 /* live messages held while a read is out */

struct a2a_run {
	struct http_req *req;	  /* NULL once the client left */
	struct io_thread *thread; /* the request's io thread */
	json_t *id;		  /* the JSON-RPC id; a reference */
	enum a2a_ver ver;	  /* the caller's spec version */
	enum a2a_mode mode;	  /* what the request wants */
	struct a2a_task task;	  /* the task as known so far */
	char tenant[65];	  /* the caller's tenant */
	char key[BUS_KEY_MAX];	  /* the session's bus key */
	struct bus_sub *sub;	  /* live messages, or NULL */
	json_t *held;		  /* live events parsed while a read is out */
	struct store_op *op;	  /* the read in flight */
	struct bus_msg **eph;	  /* the read's snapshot of deltas; owned */
	size_t neph;		  /* entries in eph */
	bool reading;		  /* a read is out: on_read owns the run's fate */
	bool aborted;		  /* the client left while a read was out */
	bool read_once;		  /* the first read is applied */
	bool begun;		  /* the SSE answer started */
	bool sent_chunk;	  /* an artifact chunk was sent (later ones append) */
	int64_t next_index;	  /* the next delta stream_index to send */
	bool late;		  /* the deadline passed while a read was out: on_read answers */
	struct event *timer;	  /* the blocking deadline, or NULL */
	struct event *tick;	  /* every second: the credential check, and a stream's keepalive */
	unsigned ticks;		  /* seconds since it began */
	struct cred_hold cred;	  /* the credential the request was made with (cred_hold.h) */
};

static void run_free(struct a2a_run *r)
{
	bus_unsubscribe(r->sub);
	if (r->timer)
		event_free(r->timer);
	if (r->tick)
		event_free(r->tick);
	for (size_t i = 0; i < r->neph; i++)
		bus_msg_release(r->eph[i]);
	free(r->eph);
	json_decref(r->held);
	json_decref(r->id);
	a2a_task_clear(&r->task);
	free(r);
}

/* The request is answered (or its stream ended) and the run is done. */
static void run_done(struct a2a_run *r)
{
	if (r->req) {
		r->req->on_abort = NULL;
		if (r->begun)
			http_stream_end(r->req);
	}
	run_free(r);
}

static void answer(struct a2a_run *r, json_t *envelope)
{
	r->req->on_abort = NULL;
	a2a_respond(r->req, envelope);
	r->req = NULL;
	run_done(r);
}

static void answer_error(struct a2a_run *r, int code, const char *message)
{
	if (r->mode == A2A_STREAM || r->mode == A2A_RESUBSCRIBE) {
		if (r->begun) { /* inside a started stream: one error event, then the end */
			a2a_sse_write(r->req, a2a_rpc_error(r->id, code, message));
			run_done(r);
			return;
		}
		r->req->on_abort = NULL;
		a2a_sse_error(r->req, r->id, code, message);
		r->req = NULL;
		run_done(r);
		return;
	}
	answer(r, a2a_rpc_error(r->id, code, message));
}

/* False when the request's credential is gone (revoked, expired): the run was ended with the
 * error A2A_CRED_GONE (a stream's last event, a send's answer). Not while a read is out. */
static bool cred_ok(struct a2a_run *r)
{
	if (cred_hold_check(&r->cred))
		return true;
	char message[300];
	snprintf(message, sizeof(message), "credentials %s: %s",
		 strcmp(r->cred.gone, "credentials_expired") == 0 ? "expired" : "revoked", cred_hold_message(&r->cred));
	answer_error(r, A2A_CRED_GONE, message);
	return false;
}

/* Writes a stream event (taken) if the credential still holds; false when the stream was ended
 * (the credential is gone, or the reader is too slow). */
static bool emit(struct a2a_run *r, json_t *result)
{
	if (!cred_ok(r)) {
		json_decref(result);
		return false;
	}
	size_t queued = a2a_sse_write(r->req, a2a_rpc_result(r->id, result));
	if (queued > (size_t)cfg_int(CFG_STREAM_MAX_BUFFER)) {
		run_done(r);
		return false;
	}
	return true;
}

/* The task reached its end (or the deadline passed): answer, or close the stream. */
static void finish(struct a2a_run *r)
{
	if (r->mode == A2A_BLOCK && !cred_ok(r))
		return;
	if (r->mode == A2A_STREAM || r->mode == A2A_RESUBSCRIBE) {
		if (emit(r, a2a_status_update(r->ver, &r->task, true)))
			run_done(r);
		return;
	}
	answer(r, a2a_rpc_result(r->id, r->mode == A2A_GET || r->mode == A2A_CANCEL
						? a2a_task_json(r->ver, &r->task)
						: a2a_send_result(r->ver, a2a_task_json(r->ver, &r->task))));
}

/* One event of the task's generation (live, held or from the snapshot). False when the run
 * ended (freed). */
static bool handle(struct a2a_run *r, json_t *ev)
{
	const char *type = json_string_value(json_object_get(ev, "type"));
	if (type && strcmp(type, "assistant.delta") == 0) {
		json_t *meta = json_object_get(ev, "metadata");
		const char *gen = json_string_value(json_object_get(meta, "generation_id"));
		json_int_t idx = json_integer_value(json_object_get(meta, "stream_index"));
		if (!gen || strcmp(gen, r->task.gen) != 0 || idx < r->next_index)
			return true;
		r->next_index = idx + 1;
		if (r->task.state == A2A_SUBMITTED)
			r->task.state = A2A_WORKING;
		if (r->mode != A2A_STREAM && r->mode != A2A_RESUBSCRIBE)
			return true;
		json_t *msg = json_object_get(ev, "message");
		bool append = r->sent_chunk;
		r->sent_chunk = true;
		return emit(r, a2a_artifact_update(r->ver, &r->task, json_string_value(msg), json_string_length(msg),
						   append));
	}
	if (a2a_task_apply(&r->task, ev)) {
		finish(r);
		return false;
	}
	return true;
}

static bool handle_text(struct a2a_run *r, const char *text, size_t len)
{
	json_t *ev = json_loadb(text, len, 0, NULL);
	bool go = !ev || handle(r, ev);
	json_decref(ev);
	return go;
}

static bool start_read(struct a2a_run *r);

static void on_live(void *ctx, const struct bus_msg *msg)
{
	struct a2a_run *r = ctx;
	/* the credential is gone: nothing more reaches it (on_read ends a run that is reading) */
	if (r->reading ? !cred_hold_check(&r->cred) : !cred_ok(r))
		return;
	if (bus_msg_is_end(msg)) { /* the session was deleted: its task with it */
		if (r->reading) {
			r->task.state = A2A_CANCELED; /* seen when the read is back */
			return;
		}
		r->task.state = A2A_CANCELED;
		finish(r);
		return;
	}
	if (bus_msg_is_gap(msg)) { /* missed messages: read the task again */
		if (!r->reading && !start_read(r))
			answer_error(r, A2A_INTERNAL, "the store is saturated; retry");
		return;
	}
	if (!memmem(msg->text, msg->len, r->task.gen, strlen(r->task.gen)))
		return; /* another reply's */
	if (r->reading) {
		json_t *ev = json_array_size(r->held) < A2A_HELD_MAX ? json_loadb(msg->text, msg->len, 0, NULL) : NULL;
		if (ev)
			json_array_append_new(r->held, ev);
		return;
	}
	(void)handle_text(r, msg->text, msg->len);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct a2a_run *r = arg;
	if (r->reading) { /* (a gap's re-read) on_read owns the run: it answers */
		r->late = true;
		return;
	}
	finish(r); /* the task as it is: working */
}

/* Every second (a stream, a blocking send): the credential check, and a stream's keepalive (an SSE
 * comment) every stream.keepalive_s; skipped while a read is out (on_read owns the run). */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct a2a_run *r = arg;
	if (r->reading || !r->req || !cred_ok(r))
		return;
	if (r->begun && ++r->ticks % (unsigned)cfg_int(CFG_STREAM_KEEPALIVE_S) == 0 &&
	    http_stream_write(r->req, ": keepalive\n\n", sizeof(": keepalive\n\n") - 1) >
		    (size_t)cfg_int(CFG_STREAM_MAX_BUFFER))
		run_done(r);
}

static void start_tick(struct a2a_run *r)
{
	struct timeval one_s = {1, 0};
	const struct timeval *common = event_base_init_common_timeout(http_thread_base(r->thread), &one_s);
	r->tick = event_new(http_thread_base(r->thread), -1, EV_PERSIST, on_tick, r);
	if (r->tick)
		event_add(r->tick, common ? common : &one_s);
}

/* The first read is back: what the mode answers before following live events. False when the
 * run ended. */
static bool first_answer(struct a2a_run *r)
{
	const char *why;
	if (!r->task.user_text) {
		answer_error(r, A2A_TASK_NOT_FOUND, "task not found");
		return false;
	}
	switch (r->mode) {
	case A2A_GET:
	case A2A_RETURN:
		finish(r);
		return false;
	case A2A_CANCEL:
		if (a2a_state_terminal(r->task.state)) {
			answer_error(r, A2A_NOT_CANCELABLE, "the task has ended; it cannot be canceled");
		} else if ((why = a2a_task_cancel(r->tenant, r->task.gen))) {
			answer_error(r, A2A_NOT_CANCELABLE, why);
		} else {
			r->task.state = A2A_CANCELED; /* its reply so far is stored as the final event */
			finish(r);
		}
		return false;
	case A2A_BLOCK: {
		if (a2a_state_terminal(r->task.state))
			break;
		struct timeval tv = {cfg_int(CFG_A2A_BLOCKING_TIMEOUT_S), 0};
		r->timer = event_new(http_thread_base(r->thread), -1, 0, on_deadline, r);
		if (r->timer)
			event_add(r->timer, &tv);
		start_tick(r);
		return true;
	}
	case A2A_STREAM:
	case A2A_RESUBSCRIBE: {
		struct a2a_task shown = r->task; /* a send's stream starts at submitted */
		if (r->mode == A2A_STREAM)
			shown.state = A2A_SUBMITTED, shown.reply = NULL, shown.updated = NULL;
		a2a_sse_begin(r->req);
		r->begun = true;
		start_tick(r);
		if (!emit(r, a2a_stream_task(r->ver, &shown)))
			return false;
		if (r->mode == A2A_RESUBSCRIBE && a2a_state_terminal(r->task.state)) {
			run_done(r);
			return false;
		}
		shown.state = A2A_WORKING;
		return emit(r, a2a_status_update(r->ver, &shown, false));
	}
	}
	finish(r);
	return false;
}

static void on_read(void *arg)
{
	struct a2a_run *r = arg;
	struct store_op *op = r->op;
	r->op = NULL;
	r->reading = false;
	if (r->aborted) {
		store_op_free(op);
		run_free(r);
		return;
	}
	if (!cred_hold_check(&r->cred)) { /* gone while we read: nothing of it is sent */
		store_op_free(op);
		(void)cred_ok(r);
		return;
	}
	if (op->err != SOMA_OK) {
		bool missing = op->err == SOMA_ERR_NOT_FOUND;
		store_op_free(op);
		answer_error(r, missing ? A2A_TASK_NOT_FOUND : A2A_INTERNAL,
			     missing ? "task not found" : "the store is unavailable; retry");
		return;
	}
	/* the deltas are followed from the snapshot and live messages, not applied with the rows:
	 * a terminal row is held back until they are sent */
	json_t *outcome = NULL;
	bool deleted = r->task.state == A2A_CANCELED && !r->task.reply; /* an end marker came */
	if (deleted)
		r->task.state = A2A_SUBMITTED;
	size_t i;
	json_t *row;
	json_array_foreach(op->rows, i, row)
	{
		const char *body = json_string_value(json_object_get(row, "body"));
		json_t *ev = body ? json_loads(body, 0, NULL) : NULL;
		const char *type = json_string_value(json_object_get(ev, "type"));
		if (ev && !json_object_get(ev, "seq"))
			json_object_set(ev, "seq", json_object_get(row, "seq"));
		if (type && (strcmp(type, "assistant.final") == 0 || strcmp(type, "assistant.error") == 0) &&
		    !outcome) {
			const char *gen =
				json_string_value(json_object_get(json_object_get(ev, "metadata"), "generation_id"));
			if (gen && strcmp(gen, r->task.gen) == 0) {
				outcome = ev;
				continue;
			}
		}
		if (ev)
			(void)a2a_task_apply(&r->task, ev);
		json_decref(ev);
	}
	store_op_free(op);
	bool first = !r->read_once;
	r->read_once = true;
	if (outcome && r->task.state == A2A_SUBMITTED)
		r->task.state = A2A_WORKING;
	if (first &&
	    (r->mode == A2A_GET || r->mode == A2A_CANCEL || r->mode == A2A_RETURN || r->mode == A2A_RESUBSCRIBE) &&
	    outcome) {
		(void)a2a_task_apply(&r->task, outcome); /* the task as stored, answered at once */
		json_decref(outcome);
		outcome = NULL;
	}
	if (first && !first_answer(r)) {
		json_decref(outcome);
		return;
	}
	/* the catch-up: any handle may end (free) the run, so the snapshot and the held messages
	 * are detached from it first and nothing of the run is touched once go is false; the
	 * snapshot is spent either way (a later read takes a new one) */
	bool go = true;
	struct bus_msg **eph = r->eph;
	size_t neph = r->neph;
	json_t *held = r->held;
	r->eph = NULL, r->neph = 0;
	r->held = json_array();
	char gen[sizeof(r->task.gen)];
	memcpy(gen, r->task.gen, sizeof(gen));
	for (size_t k = 0; k < neph; k++) {
		if (go && memmem(eph[k]->text, eph[k]->len, gen, strlen(gen)))
			go = handle_text(r, eph[k]->text, eph[k]->len);
		bus_msg_release(eph[k]);
	}
	free(eph);
	json_array_foreach(held, i, row) if (go) go = handle(r, row);
	json_decref(held);
	if (go && outcome)
		go = handle(r, outcome);
	json_decref(outcome);
	if (!go)
		return;
	if (deleted)
		r->task.state = A2A_CANCELED;
	if (deleted || r->late) /* ended while the read was out, or the deadline passed */
		finish(r);
}

static void on_store_done(struct store_op *op)
{
	struct a2a_run *r = op->arg;
	int64_t published = -1;
	if (op->err == SOMA_OK && r->sub &&
	    bus_snapshot(r->key, (struct bus_cursor){r->task.seq, 0}, &r->eph, &r->neph, &published) != SOMA_OK)
		r->eph = NULL, r->neph = 0;
	if (http_thread_post_wait(r->thread, on_read, r) != SOMA_OK) { /* the io thread stopped */
		store_op_free(op);
		r->op = NULL;
		run_free(r);
	}
}

static bool start_read(struct a2a_run *r)
{
	struct store_op *op = store_op_new(STORE_OP_EVENTS_AFTER, r->tenant);
	if (!op)
		return false;
	snprintf(op->session_id, sizeof(op->session_id), "%s", r->task.context);
	op->after_seq = r->task.seq - 1;
	op->limit = A2A_READ_LIMIT;
	op->done = on_store_done;
	op->arg = r;
	r->op = op;
	r->reading = true;
	if (store_submit(gateway_store(), op) != SOMA_OK) {
		r->op = NULL;
		r->reading = false;
		store_op_free(op);
		return false;
	}
	return true;
}

static void on_abort(struct http_req *req)
{
	struct a2a_run *r = req->handler_ctx;
	r->req = NULL;
	if (r->reading) { /* on_read frees it */
		r->aborted = true;
		bus_unsubscribe(r->sub);
		r->sub = NULL;
		return;
	}
	run_free(r);
}

void a2a_run_start(struct http_req *req, json_t *id, enum a2a_ver v, enum a2a_mode mode, const struct a2a_task *t)
{
	struct a2a_run *r = calloc(1, sizeof(*r));
	if (!r) {
		a2a_respond(req, a2a_rpc_error(id, A2A_INTERNAL, "the server is out of memory"));
		return;
	}
	*r = (struct a2a_run){.req = req, .thread = req->thread, .id = json_incref(id), .ver = v, .mode = mode};
	snprintf(r->task.id, sizeof(r->task.id), "%s", t->id);
	snprintf(r->task.context, sizeof(r->task.context), "%s", t->context);
	snprintf(r->task.gen, sizeof(r->task.gen), "%s", t->gen);
	r->task.seq = t->seq;
	snprintf(r->tenant, sizeof(r->tenant), "%s", req->ident.tenant);
	bus_key(r->key, r->tenant, r->task.context);
	cred_hold_init(&r->cred, &req->ident);
	r->held = json_array();
	bool follow = mode == A2A_BLOCK || mode == A2A_STREAM || mode == A2A_RESUBSCRIBE;
	if (follow)
		r->sub = bus_subscribe(r->key, req->thread, on_live, r);
	if (!r->held || (follow && !r->sub) || !start_read(r)) {
		req = r->req;
		r->req = NULL;
		if (mode == A2A_STREAM || mode == A2A_RESUBSCRIBE)
			a2a_sse_error(req, id, A2A_INTERNAL, "the server is saturated; retry in a second");
		else
			a2a_respond(req, a2a_rpc_error(id, A2A_INTERNAL, "the server is saturated; retry in a second"));
		run_free(r);
		return;
	}
	req->handler_ctx = r;
	req->on_abort = on_abort;
}
