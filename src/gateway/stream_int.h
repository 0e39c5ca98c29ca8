/*
 * stream_int.h - inside the event stream (GET /v1/sessions/{id}/events?stream=true): the
 * connection side (stream.c) and the replay and gap filling (stream_replay.c). Nothing else
 * includes it.
 */
#ifndef SOMA_GATEWAY_STREAM_INT_H
#define SOMA_GATEWAY_STREAM_INT_H

#include "bus/bus.h"
#include "gateway/cred_hold.h"
#include "gateway/gateway.h"
#include "identity/identity.h"

struct stream {
	struct http_req *req;	  /* the open request */
	char key[BUS_KEY_MAX];	  /* bus key "<tenant>/<session id>": whose events (the only copy of both) */
	unsigned char session_at; /* where the session id starts in key */
	struct bus_sub *sub;	  /* live subscription */
	struct bus_cursor last;	  /* last cursor sent (or the starting point) */
	int64_t sent_seq;	  /* every committed seq up to this one was sent (or precedes the start,
				   * or no longer exists): the next live committed event must be sent_seq + 1 */
	bool has_cursor;	  /* the client gave one (else: start at the present) */
	bool refill;		  /* the read in flight fills a gap of a stream already open */
	bool live;		  /* no replay running: write live messages directly */
	struct bus_msg **pending; /* live messages held during a replay (referenced) */
	size_t npending;	  /* held messages */
	struct event *tick;	  /* every second: the memory status, and a keepalive each keepalive_s */
	unsigned ticks;		  /* seconds since the stream began */
	struct io_thread *thread; /* the request's io thread */
	struct store_op *op;	  /* the replay read while waiting */
	bool waiting;		  /* the replay read is running */
	bool aborted;		  /* the client left (or we ended the stream) during the read */
	bool overflowed;	  /* live messages were dropped while replaying */
	bool resync;		  /* the bus lost messages during the replay: fill from the store again */
	json_t *rows;		  /* replay: committed rows still to send (owned) */
	size_t row_i;		  /* replay: next row */
	struct bus_msg **eph;	  /* replay: ephemeral snapshot (referenced) */
	size_t neph, eph_i;	  /* replay: its size and next entry */
	int64_t published;	  /* replay: rows past this seq arrive live instead */
	int64_t store_last;	  /* replay: the session's last seq when the rows were read */
	struct bus_cursor gap;	  /* refill: the message that showed the gap */
	int64_t horizon;	  /* replay: committed seqs up to here are in the rows (or gone) */
	bool truncated;		  /* replay: the page was full; end after it */
	unsigned memory_gen;	  /* memory state generation last told (a `status` event on change) */
	bool counted;		  /* holds one of the tenant's streams: released when freed */
	bool begun;		  /* the 200 and its head went out */
	bool deleted;		  /* the session was deleted before the stream began: 404 */
	struct cred_hold cred;	  /* the credential it was opened with (cred_hold.h) */
};

/* ---- stream.c ---- */
void stream_free(struct stream *s);
/* Ends the stream from our side (slow reader, shutdown, store error): the client resumes from its
 * last id. During a store read the stream is freed when the read answers. */
void stream_end(struct stream *s);
/* Writes one frame if its cursor is past the last one sent; *queued gets the bytes waiting for
 * the client. False when the stream had to be ended (s is gone). */
bool stream_send(struct stream *s, struct bus_cursor c, const char *text, size_t len, size_t *queued);
/* Submits the read of the committed events after s->sent_seq (the replay); false when the store
 * refused it. */
bool stream_read(struct stream *s);

/* ---- stream_replay.c ---- */
/* Sends the rows read (the store's answer, borrowed) merged with the bus snapshot, then the live
 * messages held meanwhile, and goes live; or fills the next gap. limit: the page size asked. */
void stream_replay(struct stream *s, json_t *rows, int64_t limit);
/* A live message while the stream is live (not replaying): sent, dropped as a repeat, or - when
 * committed events before it are missing - held while the gap is filled from the store. */
void stream_live(struct stream *s, const struct bus_msg *msg);
/* Holds a live message during a replay (a reference is taken). */
void stream_hold(struct stream *s, const struct bus_msg *msg);
/* The bus may have lost messages (the gap marker: Redis was away): fills from the store after
 * sent_seq and carries on, now or, during a replay, once it is done. */
void stream_resync(struct stream *s);

#endif
