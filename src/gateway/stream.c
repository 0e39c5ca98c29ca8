/*
 * stream.c - GET /v1/sessions/{id}/events?stream=true: the session's events as Server-Sent
 * Events, resumable without gap or repeat.
 *
 * DESIGN: the stream subscribes to the bus first (live messages are held in `pending` while the
 * replay is prepared), then reads the committed events after the client's cursor from the store
 * (a store thread; the io loop never waits), then takes the bus snapshot: the ephemeral
 * messages (thinking, deltas) after the cursor and the last committed seq published so far.
 * Committed rows up to that seq and the ephemeral ones are merged in cursor order and sent;
 * rows past it, and everything later, arrive live. A message is written only if its cursor is
 * past the last one sent, so the overlap between replay and live is sent once. Committed events
 * may reach the bus out of seq order: a live message that shows a gap (committed events before
 * it not sent) is held and the gap filled from the store by the same replay
 * (stream_replay.c tells why and how). Frames are `id: <cursor>` + `data: <event>`;
 * keepalives carry no id. A reader too slow to keep up (more than stream.max_buffer queued) is
 * disconnected and resumes from its last id.
 * A stream is as good as the credential that opened it (cred_hold.c): it remembers the API key id (or the
 * JWT's exp + leeway) and, on its own io thread, before it delivers a live message or a replayed
 * page and on every tick, checks that the key was not revoked (one atomic load of the auth
 * cache's revocation counter while nothing was revoked) and that the JWT has not expired; a
 * stream opened anonymously (loopback, no keys: src/http/middleware.c) is gone once the first
 * key exists (one atomic load), as anonymous requests then get 401. When
 * the credential is gone the stream sends an unnumbered `error` event and ends, like a deleted
 * session's stream: a revocation made by this node (DELETE /v1/keys) acts before the admin's
 * answer, so no event published after it reaches the stream; another node's reaches this one
 * with the key cache's refresh (auth.key_refresh_ms). Nothing is posted across threads.
 * A deleted session's stream ends with `id: 0` (session_deleted); a reset session's gets an
 * unnumbered `session.reset` event and goes on (session_reset), so a client can reload.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "gateway/stream_int.h"
#include "limits/limits.h"
#include "memory/memory.h"

/* The stream's session id (the part of its bus key after the tenant). */
static const char *session_of(const struct stream *s)
{
	return s->key + s->session_at;
}

void stream_free(struct stream *s)
{
	if (s->counted) {
		char tenant[BUS_KEY_MAX];
		snprintf(tenant, sizeof(tenant), "%.*s", (int)s->session_at - 1, s->key);
		limits_stream_release(tenant);
	}
	bus_unsubscribe(s->sub);
	for (size_t i = s->eph_i; i < s->neph; i++)
		bus_msg_release(s->eph[i]);
	free(s->eph);
	json_decref(s->rows);
	for (size_t i = 0; i < s->npending; i++)
		bus_msg_release(s->pending[i]);
	free(s->pending);
	if (s->tick)
		event_free(s->tick);
	free(s);
}

void stream_end(struct stream *s)
{
	struct http_req *req = s->req;
	req->on_abort = NULL;
	req->on_drain = NULL;
	if (s->waiting) { /* a store read holds s: on_rows frees it */
		s->aborted = true;
		bus_unsubscribe(s->sub);
		s->sub = NULL;
		if (s->tick)
			event_free(s->tick);
		s->tick = NULL;
		s->req = NULL;
	} else {
		stream_free(s);
	}
	http_stream_end(req);
}

bool stream_send(struct stream *s, struct bus_cursor c, const char *text, size_t len, size_t *queued_out)
{
	*queued_out = 0;
	if (bus_cursor_cmp(c, s->last) <= 0)
		return true;
	char head[64];
	int n = snprintf(head, sizeof(head), "id: ");
	bus_cursor_format(c, head + n, sizeof(head) - (size_t)n);
	n = (int)strlen(head);
	n += snprintf(head + n, sizeof(head) - (size_t)n, "\ndata: ");
	struct str frame[] = {{head, (size_t)n}, {text, len}, STR_LIT("\n\n")};
	size_t queued = http_stream_writev(s->req, frame, 3);
	*queued_out = queued;
	s->last = c;
	if (c.minor == 0 && c.seq > s->sent_seq)
		s->sent_seq = c.seq;
	if (queued > (size_t)cfg_int(CFG_STREAM_MAX_BUFFER)) {
		stream_end(s);
		return false;
	}
	return true;
}

/* The session was deleted. A session created again under its id starts over at seq 1, below
 * what the stream has sent, so the stream ends rather than follow the new one as if it were
 * the old: first an `id: 0` line with no data (the SSE parser sets the last event id and
 * dispatches nothing), so a browser's automatic reconnect sends Last-Event-ID 0 and gets the
 * new session from its first event, or 404 while there is none. Before the stream began (its
 * first read in flight) it answers 404 when that read is back. */
static void session_deleted(struct stream *s)
{
	if (!s->begun) {
		s->deleted = true;
		return;
	}
	static const char frame[] = "id: 0\n\n";
	http_stream_write(s->req, frame, sizeof(frame) - 1);
	stream_end(s);
}

/* The session was reset: an unnumbered `session.reset` event (the client's last id stays good:
 * the session's seqs go on), so a client showing the old events knows to reload them. A stream
 * that has not begun sends nothing: its first read sees the store before or after the reset. */
static void session_reset(struct stream *s)
{
	if (!s->begun)
		return;
	char frame[160];
	int n = snprintf(frame, sizeof(frame),
			 "data: {\"type\":\"session.reset\",\"session_id\":\"%s\",\"version\":\"sa01-v1\"}\n\n",
			 session_of(s));
	if (n > 0 && (size_t)n < sizeof(frame) &&
	    http_stream_write(s->req, frame, (size_t)n) > (size_t)cfg_int(CFG_STREAM_MAX_BUFFER))
		stream_end(s);
}

/* True while the credential that opened the stream is still good (io thread). Once false it
 * stays false: s->cred.gone names why. */
static bool credentials_hold(struct stream *s)
{
	return cred_hold_check(&s->cred);
}

/* The credential is gone (credentials_hold was false) on a stream that began: an unnumbered
 * `error` event (the client's last id stays the last event it got, so it resumes there with new
 * credentials), then the end. */
static void credentials_gone(struct stream *s)
{
	char frame[512];
	int n = snprintf(frame, sizeof(frame),
			 "data: {\"type\":\"error\",\"session_id\":\"%s\",\"error\":{\"code\":\"%s\","
			 "\"message\":\"%s\",\"request_id\":\"%s\"},\"version\":\"sa01-v1\"}\n\n",
			 session_of(s), s->cred.gone, cred_hold_message(&s->cred), s->req->request_id);
	if (n > 0 && (size_t)n < sizeof(frame))
		http_stream_write(s->req, frame, (size_t)n);
	stream_end(s);
}

static void on_live(void *ctx, const struct bus_msg *msg)
{
	struct stream *s = ctx;
	if (!credentials_hold(s)) { /* nothing more reaches it */
		if (s->begun)
			credentials_gone(s);
		return; /* before it began: on_rows answers 401 */
	}
	if (bus_msg_is_gap(msg)) { /* messages may have been lost (Redis was away): fill from the store */
		stream_resync(s);
		return;
	}
	if (bus_msg_is_end(msg)) {
		session_deleted(s);
		return;
	}
	if (bus_msg_is_reset(msg)) {
		session_reset(s);
		return;
	}
	if (s->live)
		stream_live(s, msg);
	else
		stream_hold(s, msg);
}

static void send_keepalive(struct stream *s)
{
	char frame[160];
	int n = snprintf(frame, sizeof(frame), "data: {\"type\":\"system.keepalive\",\"session_id\":\"%s\"}\n\n",
			 session_of(s));
	if (http_stream_write(s->req, frame, (size_t)n) > (size_t)cfg_int(CFG_STREAM_MAX_BUFFER))
		stream_end(s);
}

/* memory (issue 5): when the memory state changed, one unnumbered `status` event (like the
 * keepalive, it is not part of the session and has no id); the UI refreshes its banner. */
static bool send_status_if_changed(struct stream *s)
{
	if (memory_generation() == s->memory_gen)
		return true;
	struct memory_status st;
	memory_snapshot(&st);
	s->memory_gen = st.generation;
	char frame[400];
	int n = snprintf(frame, sizeof(frame),
			 "data: {\"type\":\"status\",\"session_id\":\"%s\",\"metadata\":{\"somabrain_state\":\"%s\","
			 "\"somabrain_reason\":\"%s\"},\"version\":\"sa01-v1\"}\n\n",
			 session_of(s), memory_state_name(st.state), st.reason);
	if (n > 0 && (size_t)n < sizeof(frame) &&
	    http_stream_write(s->req, frame, (size_t)n) > (size_t)cfg_int(CFG_STREAM_MAX_BUFFER)) {
		stream_end(s); /* frees s */
		return false;
	}
	return true;
}

/* One timer per stream (a common timeout: O(1) per stream), every second: the memory status
 * when it changed, and the keepalive every stream.keepalive_s. One event, not two: at 10,000
 * streams each timer is ~150 bytes of the 64 MB budget. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct stream *s = arg;
	if (!credentials_hold(s)) {
		credentials_gone(s);
		return;
	}
	if (send_status_if_changed(s) && ++s->ticks % (unsigned)cfg_int(CFG_STREAM_KEEPALIVE_S) == 0)
		send_keepalive(s); /* may end (free) the stream: nothing follows */
}

/* Where the stream starts: the client's cursor, or the present when it gave none. A cursor past
 * the session's end (from a deleted session of the same id, say) would hide every new event:
 * the present too. */
static struct bus_cursor start_cursor(const struct stream *s, const struct store_op *op)
{
	return !s->has_cursor || s->last.seq > op->seq ? (struct bus_cursor){op->seq, 0} : s->last;
}

/* The store answered (on the io thread): start the stream (or go on after a gap), or answer the
 * error. */
static void on_rows(void *arg)
{
	struct stream *s = arg;
	struct store_op *op = s->op;
	s->op = NULL;
	s->waiting = false;
	if (s->aborted) { /* the client left (or the stream was ended) while we read */
		store_op_free(op);
		stream_free(s);
		return;
	}
	struct http_req *req = s->req;
	if (!credentials_hold(s)) { /* revoked or expired while we read: nothing of it is sent */
		store_op_free(op);
		if (s->begun) {
			credentials_gone(s);
			return;
		}
		req->on_abort = NULL;
		http_resp_header(req, "WWW-Authenticate", "Bearer");
		http_respond_error(req, 401, s->cred.gone, "%s", cred_hold_message(&s->cred));
		stream_free(s);
		return;
	}
	if (op->err != SOMA_OK && s->refill) {
		store_op_free(op);
		stream_end(s); /* the client resumes from its last id */
		return;
	}
	if (op->err == SOMA_OK && s->deleted && !s->refill) { /* deleted while we read: as if after */
		op->err = SOMA_ERR_NOT_FOUND;
		snprintf(op->error_text, sizeof(op->error_text), "session %s not found", session_of(s));
	}
	if (op->err != SOMA_OK) {
		req->on_abort = NULL;
		stream_free(s);
		gw_store_error(req, op, "session");
		store_op_free(op);
		return;
	}
	s->store_last = op->seq;
	if (!s->refill) {
		s->last = start_cursor(s, op);
		s->sent_seq = s->last.seq;
		s->begun = true;
		http_stream_begin(req, 200, "text/event-stream");
		http_stream_count(req, gw_sse_gauge(GW_SSE_EVENTS));
		http_stream_write(req, "retry: 2000\n\n", strlen("retry: 2000\n\n"));
		struct timeval one_s = {1, 0};
		const struct timeval *common = event_base_init_common_timeout(http_thread_base(req->thread), &one_s);
		s->memory_gen = memory_generation();
		s->tick = event_new(http_thread_base(req->thread), -1, EV_PERSIST, on_tick, s);
		if (s->tick)
			event_add(s->tick, common ? common : &one_s);
	}
	stream_replay(s, op->rows, op->limit);
	store_op_free(op);
}

static void on_store_done(struct store_op *op)
{
	struct stream *s = op->arg;
	/* the bus snapshot, after the rows were read: here on the store thread, since with the redis
	 * bus it asks Redis and an io thread never waits (on_rows only reads what it finds); s->last
	 * does not change while the read runs (nothing is sent) */
	s->published = -1;
	if (op->err == SOMA_OK && bus_snapshot(s->key, s->refill ? s->last : start_cursor(s, op), &s->eph, &s->neph,
					       &s->published) != SOMA_OK)
		s->neph = 0, s->eph = NULL;
	enum soma_err err = http_thread_post_wait(s->thread, on_rows, s);
	if (err != SOMA_OK) { /* the io thread stopped, aborting the stream with it */
		s->op = NULL;
		store_op_free(op);
		stream_free(s);
	}
}

bool stream_read(struct stream *s)
{
	char tenant[BUS_KEY_MAX];
	snprintf(tenant, sizeof(tenant), "%.*s", (int)s->session_at - 1, s->key);
	struct store_op *op = store_op_new(STORE_OP_EVENTS_AFTER, tenant);
	if (!op)
		return false;
	snprintf(op->session_id, sizeof(op->session_id), "%s", session_of(s));
	snprintf(op->error_text, sizeof(op->error_text), "session %s not found", session_of(s));
	op->after_seq = s->sent_seq;
	op->limit = s->has_cursor || s->refill ? 10000 : 0;
	op->done = on_store_done;
	op->arg = s;
	s->op = op;
	s->waiting = true;
	if (store_submit(gateway_store(), op) != SOMA_OK) {
		s->op = NULL;
		s->waiting = false;
		store_op_free(op);
		return false;
	}
	return true;
}

static void on_abort(struct http_req *req)
{
	struct stream *s = req->handler_ctx;
	if (s->waiting) {
		s->aborted = true; /* on_rows frees it when the store answers */
		bus_unsubscribe(s->sub);
		s->sub = NULL;
		if (s->tick) /* (a refill: the stream had begun) */
			event_free(s->tick);
		s->tick = NULL;
		return;
	}
	stream_free(s);
}

static void on_head_checked(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "session");
		return;
	}
	http_resp_header(req, "Cache-Control", "no-cache");
	http_respond(req, 200, "text/event-stream", NULL, 0);
}

void gw_stream_open(struct http_req *req, const char *session_id)
{
	if (str_eq_cstr(req->method, "HEAD")) { /* the headers a stream would have, no body */
		struct store_op *check = store_op_new(STORE_OP_SESSION_GET, req->ident.tenant);
		if (!check) {
			http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
			return;
		}
		snprintf(check->session_id, sizeof(check->session_id), "%s", session_id);
		snprintf(check->error_text, sizeof(check->error_text), "session %s not found", session_id);
		gw_store(req, check, on_head_checked);
		return;
	}
	if (http_client_gone(req)) { /* the reader closed its side first: a stream for no one (a slot held) */
		http_respond_error(req, 400, "client_closed",
				   "the client closed its side of the connection; "
				   "an event stream needs it open");
		return;
	}
	struct stream *s = calloc(1, sizeof(*s));
	if (!s) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	struct str last = http_req_header(req, "last-event-id"), after;
	if (!last.p && http_req_query(req, "after", &after))
		last = after;
	if (last.p && !bus_cursor_parse(last.p, last.len, &s->last)) {
		free(s);
		http_respond_error(req, 400, "invalid_cursor",
				   "Last-Event-ID / after must be an event id of this stream");
		return;
	}
	if (!limits_http_stream(req)) { /* limits (issue 6): 429 beyond limits.streams_per_tenant */
		free(s);
		return;
	}
	s->counted = true;
	s->has_cursor = last.p != NULL;
	s->sent_seq = s->has_cursor ? s->last.seq : 0;
	s->req = req;
	s->thread = req->thread;
	bus_key(s->key, req->ident.tenant, session_id);
	s->session_at = (unsigned char)(strlen(req->ident.tenant) + 1);
	cred_hold_init(&s->cred, &req->ident);
	s->sub = bus_subscribe(s->key, req->thread, on_live, s);
	if (!s->sub || !stream_read(s)) {
		stream_free(s);
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "store_busy", "the server is saturated; retry in a second");
		return;
	}
	req->handler_ctx = s;
	req->on_abort = on_abort;
	req->abort_on_eof = true; /* a reader that left (EOF) before the stream began is gone */
}
