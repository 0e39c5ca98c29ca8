/*
 * bus.h - live events of sessions, delivered to subscribers on the io threads, with a short
 * memory of the ephemeral events (thinking, deltas) so a reconnecting stream misses nothing.
 *
 * DESIGN: every published message carries a cursor that orders it among all messages of its
 * session: a committed event has cursor "<seq>"; an ephemeral one "<seq>.<n>", where seq is
 * the last committed seq published before it and n counts up from 1. Cursors therefore sort in
 * publish order. Committed events must be published in commit order (the store's writer does
 * it); ephemeral ones by whoever produces them. Publishing posts one message per io thread that
 * has subscribers of the session (not one per subscriber); each io thread then fans it out to
 * its own subscribers, so 10,000 streams cost 2 cross-thread hand-offs per event, not 10,000.
 * Subscribers live on one io thread and are only touched there. The ephemeral log of a session
 * is bounded (BUS_LOG_MAX entries); entries of a finished generation expire resume_window_ms
 * after its end.
 *
 * Drivers: the local machinery above is the whole bus with bus.driver = local. With
 * bus.driver = redis (bus_redis_start) every publish goes through Redis instead, which assigns
 * the cursors of all nodes and keeps the ephemeral log for resume on any node; what arrives from
 * Redis is fanned out to the io threads exactly as above (src/bus/redis.c tells the design).
 * While Redis is unreachable the bus falls back to the local machinery and sends subscribers a
 * gap marker (bus_msg_is_gap) when it is back: their streams fill what they missed from the
 * store and the Redis log and carry on.
 */
#ifndef SOMA_BUS_BUS_H
#define SOMA_BUS_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct io_thread;

#define BUS_LOG_MAX 4096
#define BUS_KEY_MAX 132 /* "<tenant>/<session id>" */

/* The bus key of a session: tenant and id together, so that two tenants' sessions of the same id
 * (or a session deleted and created again by someone else) never share live events or the
 * resume log. Every bus call takes such a key. */
void bus_key(char out[BUS_KEY_MAX], const char *tenant, const char *session_id);
/* Forgets a session's resume log and cursors (the session was deleted or reset). */
void bus_forget(const char *key);
/* The session was deleted: bus_forget, and every node's streams of it get the end marker
 * (bus_msg_is_end): a session created again under that id starts over at seq 1, which an open
 * stream would take for events it has sent. */
void bus_session_deleted(const char *key);
/* The session was reset: bus_forget, and every node's streams of it get the reset marker
 * (bus_msg_is_reset), so a client showing its old events can reload them. Its seqs go on. */
void bus_session_reset(const char *key);

/* Cancel notices. A Stop, a delete or an A2A cancel is applied to this process's workers by the
 * caller (queue_cancel_*); with bus.driver = redis the reply may run on another node's worker, so
 * the caller also sends a notice that every other node with workers applies to its own (the
 * nodes that call bus_cancel_listen subscribe to the cancel channel soma:cancel:<db>; a notice
 * never comes back to the node that sent it). A notice names the tenant and the session (its
 * running replies) or the task; it is not kept: a node that does not follow the channel when it
 * is published (Redis down, not started yet) never gets it. */
typedef void (*bus_cancel_fn)(const char *tenant, const char *session_id, const char *task_id, bool keep_partial);
/* Sets the function that applies other nodes' notices (called on the bus's subscriber thread;
 * its strings are borrowed for the call). Before bus_redis_start, on a node that runs workers. */
void bus_cancel_listen(bus_cancel_fn fn);
enum bus_cancel_reach {
	BUS_CANCEL_LOCAL, /* bus.driver = local: there is no other node to tell */
	BUS_CANCEL_SENT,  /* queued for the other nodes (published by the bus's publisher thread) */
	BUS_CANCEL_DOWN,  /* queued, but Redis did not answer the last attempt: the other nodes will
			   * hear it only if it answers again before the notice goes (logged if not) */
};
/* Tells the other nodes to stop tenant's running replies of session_id (task_id NULL), or the
 * one task task_id, as queue_cancel_session / queue_cancel_task would (keep_partial: the text so
 * far is kept as the final answer). Any thread; never waits for Redis. */
enum bus_cancel_reach bus_cancel_notify(const char *tenant, const char *session_id, const char *task_id,
					bool keep_partial);

struct bus_cursor {
	int64_t seq;   /* last committed seq at or before the message */
	int64_t minor; /* 0 for a committed event, n >= 1 for the n-th ephemeral after seq */
};

/* A published message; reference-counted, immutable once published. */
struct bus_msg {
	struct bus_cursor cursor; /* position in the session */
	char *text;		  /* the event JSON; owned */
	size_t len;		  /* bytes of text */
	int refs;		  /* atomic reference count */
};

struct bus_sub;
/* Called on the subscriber's io thread for each message; msg is borrowed (copy what you keep). */
typedef void (*bus_deliver_fn)(void *ctx, const struct bus_msg *msg);

/* Sets up the bus for io threads given by http_thread_post targets. */
enum soma_err bus_init(int64_t resume_window_ms) SOMA_MUST_CHECK;
/* Stops the redis driver (if it runs) and forgets everything. */
void bus_deinit(void);
/* Starts the redis driver after bus_init: publishes go through Redis at url; with `subscribe`
 * (the node serves streams) this node also receives every node's messages. A Redis that does
 * not answer is not an error (the bus runs degraded and reconnects by itself); a bad URL is
 * (SOMA_ERR_CONFIG, with a sentence in why). */
enum soma_err bus_redis_start(const char *url, bool subscribe, char *why, size_t cap) SOMA_MUST_CHECK;
/* Health: true when ok; detail describes the driver, or why it is degraded. Any thread. */
bool bus_status(char *detail, size_t cap);

/* Subscribes on the calling io thread (thr must be the caller's). NULL on OOM. */
struct bus_sub *bus_subscribe(const char *session_id, struct io_thread *thr, bus_deliver_fn fn, void *ctx);
/* Unsubscribes (on the same io thread); no delivery happens after it returns. Accepts NULL. */
void bus_unsubscribe(struct bus_sub *sub);

/* Publishes a committed event (any thread, in commit order). */
void bus_publish_committed(const char *session_id, int64_t seq, const char *text, size_t len);
/* Publishes an ephemeral event of a generation; base_seq is the last seq the producer knows
 * was committed. Writes the cursor it got into *out (may be NULL); with the redis driver the
 * cursor is assigned later, in Redis, and *out is {-1, 0}. */
void bus_publish_ephemeral(const char *session_id, int64_t base_seq, const char *text, size_t len,
			   struct bus_cursor *out);
/* A reply of the session begins publishing ephemeral entries; each begin is matched by one
 * bus_generation_end. */
void bus_generation_begin(const char *session_id);
/* Marks a generation of the session finished: its ephemeral entries expire after the resume
 * window, once no other generation of the session runs. */
void bus_generation_end(const char *session_id);

/* Drops expired resume entries and forgets sessions nobody follows (main thread, every second). */
void bus_sweep(void);
/* Snapshot for a resuming stream (may ask Redis: call it from a store or pool thread, never
 * from an io thread): the ephemeral messages after `after` (referenced; release
 * each with bus_msg_release, free the array with free) and the last committed seq published
 * (-1 when none since start). */
enum soma_err bus_snapshot(const char *session_id, struct bus_cursor after, struct bus_msg ***msgs, size_t *n,
			   int64_t *published_seq) SOMA_MUST_CHECK;
void bus_msg_release(struct bus_msg *msg);
/* The gap marker: delivered (cursor {-1, -1}, empty text) when the subscriber may have missed
 * messages (Redis was unreachable); a stream fills the gap from the store and goes on. */
bool bus_msg_is_gap(const struct bus_msg *msg);
/* The end marker: delivered (cursor {-2, -2}, empty text) when the session was deleted; its
 * streams end (src/gateway/stream.c tells how the client comes back). */
bool bus_msg_is_end(const struct bus_msg *msg);
/* The reset marker (bus_session_reset): the session's events were removed; it goes on. */
bool bus_msg_is_reset(const struct bus_msg *msg);

/* Cursor text "<seq>" or "<seq>.<minor>" into out (>= 48 bytes); parse is the reverse. */
void bus_cursor_format(struct bus_cursor c, char *out, size_t cap);
bool bus_cursor_parse(const char *s, size_t len, struct bus_cursor *out);
int bus_cursor_cmp(struct bus_cursor a, struct bus_cursor b);
/* Number of subscribers in the process (metrics). */
long bus_subscribers(void);

#endif
