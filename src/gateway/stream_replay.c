/*
 * stream_replay.c - the replay of a stream (committed rows from the store merged with the bus's
 * snapshot of ephemeral messages) and the gap filling of a live stream: a stream never sends a
 * message before every committed event that precedes it, and never sends one twice.
 *
 * FACTS this rests on (checked in src/store, src/bus; issues 3 and 4):
 *  - Committed seqs of a session are dense: a seq is `sessions.last_seq + 1` taken in the
 *    transaction that stores the event (SQLite: the one writer; PostgreSQL: the session row's
 *    lock orders the writer, the message lanes and every node), and a failed op rolls back in its
 *    own SAVEPOINT (or its lane pipeline goes again), taking its seq with it. Seq N + 1 commits
 *    only after seq N committed. A reset deletes the events but keeps last_seq (later seqs go
 *    on: the store simply has nothing before them); a delete and re-create starts again at 1.
 *  - Publishing is not in seq order. An event is published after its commit by the thread that
 *    committed it: on PostgreSQL a user message by a lane thread, a worker's event
 *    (assistant.final, ...) by the writer, so seq N + 1 can reach the bus before seq N. With
 *    bus.driver = redis each node's publisher sends its own queue, so across nodes (a message on
 *    the gateway, the reply on the worker) Redis sees them in either order too. An ephemeral
 *    message may also come before the committed event it counts from: a worker reads base seq N
 *    from the store and its first delta gets cursor N.1 while N's publish is still on its way.
 *    SQLite with one node is in order (the writer publishes a batch before it commits the next,
 *    and a worker's reservation goes through that writer). An io thread whose queue is full
 *    loses a delivery (bus.c logs it). The gap marker (Redis was away, or a node's records
 *    reached only its own streams meanwhile) says messages may be lost with no message to show
 *    where: the stream fills from the store after sent_seq all the same (stream_resync), and
 *    again after a replay that was running when it came (its snapshot may predate the loss).
 *    A node whose committed records reached only its own streams raises the session's published
 *    seq in Redis when it is back (its resync record, src/bus/redis.c), so that fill sends them.
 *  - Ephemeral cursors of a session are assigned in one order (bus_lock, or Redis's script) and
 *    delivered in that order: an ephemeral cursor N.k is only handed out once seq N committed.
 *
 * So a live message whose seq jumps past sent_seq + 1 (committed) or sent_seq (ephemeral) is a
 * gap: it is held, and the stream resumes by cursor from the store (a refill: the same read and
 * bus snapshot as the first replay, after sent_seq) while live messages are held; then the rows
 * and snapshot go out merged in cursor order, then the held messages (a repeat is dropped by its
 * cursor; a committed event that comes late was sent from the store). The common in-order case
 * costs one comparison per message; the store is read only when a gap shows.
 */
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "gateway/stream_int.h"

#define PENDING_MAX 8192
/* The gap of a refill that no message showed (the gap marker): it neither raises `published`
 * nor the horizon, so the fill is exactly a resume from sent_seq. */
#define NO_GAP_MSG ((struct bus_cursor){-1, 0})

/* True when committed events before c were neither sent nor held: a gap to fill first. */
static bool is_gap(const struct stream *s, struct bus_cursor c)
{
	return c.minor == 0 ? c.seq > s->sent_seq + 1 : c.seq > s->sent_seq;
}

static int cmp_msg(const void *a, const void *b)
{
	return bus_cursor_cmp((*(struct bus_msg *const *)a)->cursor, (*(struct bus_msg *const *)b)->cursor);
}

void stream_hold(struct stream *s, const struct bus_msg *msg)
{
	if (s->npending == PENDING_MAX) {
		s->overflowed = true; /* the stream ends after the replay; the client resumes by cursor */
		return;
	}
	if (!s->pending && !(s->pending = malloc(PENDING_MAX * sizeof(*s->pending)))) {
		s->overflowed = true;
		return;
	}
	__atomic_add_fetch(&((struct bus_msg *)msg)->refs, 1, __ATOMIC_SEQ_CST);
	s->pending[s->npending++] = (struct bus_msg *)msg;
}

/* Resumes from the store after sent_seq: live messages are held until the rows are sent. */
static void refill(struct stream *s, struct bus_cursor gap)
{
	s->live = false;
	s->refill = true;
	s->gap = gap;
	if (!stream_read(s))
		stream_end(s); /* the store is saturated: the client resumes by its last id */
}

void stream_resync(struct stream *s)
{
	if (!s->live) { /* the replay's snapshot may predate the loss: one more once it is done */
		s->resync = true;
		return;
	}
	refill(s, NO_GAP_MSG);
}

void stream_live(struct stream *s, const struct bus_msg *msg)
{
	if (is_gap(s, msg->cursor)) {
		stream_hold(s, msg);
		refill(s, msg->cursor);
		return;
	}
	size_t queued;
	stream_send(s, msg->cursor, msg->text, msg->len, &queued);
}

/* Drops what is left of the replay's rows and snapshot. */
static void replay_clear(struct stream *s)
{
	s->req->on_drain = NULL;
	for (size_t i = s->eph_i; i < s->neph; i++)
		bus_msg_release(s->eph[i]);
	free(s->eph);
	s->eph = NULL;
	s->neph = s->eph_i = 0;
	json_decref(s->rows);
	s->rows = NULL;
}

/* Sends the held messages in cursor order and goes live, or fills the first gap among them
 * (the rest stay held). */
static void send_pending(struct stream *s)
{
	if (s->npending)
		qsort(s->pending, s->npending, sizeof(*s->pending), cmp_msg);
	size_t i = 0, queued;
	for (; i < s->npending && !is_gap(s, s->pending[i]->cursor); i++) {
		struct bus_msg *m = s->pending[i];
		if (!stream_send(s, m->cursor, m->text, m->len, &queued))
			return; /* ended: the stream (and what it held) is gone */
	}
	for (size_t j = 0; j < i; j++)
		bus_msg_release(s->pending[j]);
	if (i > 0 && i < s->npending)
		memmove(s->pending, s->pending + i, (s->npending - i) * sizeof(*s->pending));
	s->npending -= i;
	if (s->npending) {
		refill(s, s->pending[0]->cursor);
		return;
	}
	s->live = true;
}

/* After the replay: send the live messages held meanwhile and go live (or end the stream when the
 * page was full or live messages were dropped: the client resumes from its last id). */
static void replay_finish(struct stream *s)
{
	replay_clear(s);
	if (s->horizon > s->sent_seq)
		s->sent_seq = s->horizon; /* the rest of them is gone (reset) or was never there */
	s->refill = false;
	if (s->truncated || s->overflowed) {
		stream_end(s);
		return;
	}
	if (s->resync) { /* the held messages wait for this read too */
		s->resync = false;
		refill(s, NO_GAP_MSG);
		return;
	}
	send_pending(s);
}

static void on_drain(struct http_req *req)
{
	struct stream *s = req->handler_ctx;
	stream_replay(s, NULL, -1);
}

/* Sends the committed rows (up to `published`) merged with the ephemeral snapshot in cursor
 * order, pausing whenever half of stream.max_buffer is queued: the rest goes when the client has
 * read it (on_drain), so a long history reaches a fast reader in one connection and a slow one
 * holds no more than the buffer. An ephemeral message past what the rows cover means committed
 * events came after the read: read again from there. */
static void replay_continue(struct stream *s)
{
	size_t soft = (size_t)cfg_int(CFG_STREAM_MAX_BUFFER) / 2, nrows = json_array_size(s->rows);
	for (;;) {
		json_t *row = s->row_i < nrows ? json_array_get(s->rows, s->row_i) : NULL;
		struct bus_cursor c = {row ? json_integer_value(json_object_get(row, "seq")) : 0, 0};
		if (row && s->published >= 0 && c.seq > s->published)
			row = NULL, s->row_i = nrows; /* not published yet: it arrives live, in order */
		bool eph_next = s->eph_i < s->neph && (!row || bus_cursor_cmp(s->eph[s->eph_i]->cursor, c) < 0) &&
				(row || !s->truncated);
		size_t queued = 0;
		bool ok;
		if (eph_next && s->eph[s->eph_i]->cursor.seq > s->horizon && is_gap(s, s->eph[s->eph_i]->cursor)) {
			struct bus_cursor gap = s->eph[s->eph_i]->cursor;
			replay_clear(s);
			refill(s, gap);
			return;
		}
		if (eph_next) {
			struct bus_msg *m = s->eph[s->eph_i++];
			ok = stream_send(s, m->cursor, m->text, m->len, &queued);
			bus_msg_release(m);
		} else if (row) {
			const char *body = json_string_value(json_object_get(row, "body"));
			s->row_i++;
			ok = stream_send(s, c, body, strlen(body), &queued);
		} else {
			replay_finish(s);
			return;
		}
		if (!ok)
			return; /* ended: the stream is gone */
		if (queued > soft) {
			s->req->on_drain = on_drain; /* continue when the client has read this */
			return;
		}
	}
}

void stream_replay(struct stream *s, json_t *rows, int64_t limit)
{
	if (!rows) { /* on_drain: go on where it paused */
		replay_continue(s);
		return;
	}
	size_t nrows = json_array_size(rows); /* (the bus snapshot was taken by on_store_done) */
	if (s->refill && s->gap.seq > s->published)
		s->published = s->gap.seq; /* it was published: it reached us */
	/* a full page means more rows may follow: send up to its last row, then end the stream so
	 * that the client resumes from there (nothing past that row may be sent, or it would skip) */
	s->truncated = nrows > 0 && (int64_t)nrows == limit;
	if (s->truncated) {
		int64_t last = json_integer_value(json_object_get(json_array_get(rows, nrows - 1), "seq"));
		s->published = s->published < 0 || last < s->published ? last : s->published;
	}
	/* every committed seq up to the session's last seq at the read is in the rows (or gone), and
	 * the rows up to `published` are sent: the stream has everything up to the lower of them */
	int64_t h = s->published >= 0 && s->published < s->store_last ? s->published : s->store_last;
	if (s->refill) { /* the store lacks what showed the gap (a session deleted and re-created) */
		int64_t floor = s->gap.minor == 0 ? s->gap.seq - 1 : s->gap.seq;
		h = floor > h ? floor : h;
	}
	s->horizon = h > s->sent_seq ? h : s->sent_seq;
	s->rows = json_incref(rows);
	s->row_i = s->eph_i = 0;
	replay_continue(s);
}
