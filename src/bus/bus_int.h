/*
 * bus_int.h - inside the bus: the local machinery (bus.c) and the redis driver (redis.c,
 * redis_sub.c), joined by the public entry points (api.c). Nothing outside src/bus includes it.
 *
 * DESIGN: bus.c owns the process's session table (subscriber counts per io thread, the local
 * ephemeral log, the last cursor known per session) and the fan-out to io threads; it knows
 * nothing of Redis. The redis driver turns every publish into a record on its publisher queue
 * and feeds what arrives from Redis back into bus.c with bus_local_deliver(); when Redis cannot
 * be reached it hands its records to the bus_local_* publishers instead (degraded: this node's
 * streams only). api.c sends each public call to the driver while it runs, else to bus.c.
 */
#ifndef SOMA_BUS_BUS_INT_H
#define SOMA_BUS_BUS_INT_H

#include "bus/bus.h"

struct redis_conn;

/* ---- bus.c: the local machinery ---- */
void bus_local_init(int64_t resume_window_ms);
void bus_local_deinit(void);
int64_t bus_local_window_ms(void);
void bus_local_forget(const char *key);
void bus_local_publish_committed(const char *key, int64_t seq, const char *text, size_t len);
void bus_local_publish_ephemeral(const char *key, int64_t base_seq, const char *text, size_t len,
				 struct bus_cursor *out);
void bus_local_generation_begin(const char *key);
void bus_local_generation_end(const char *key);
enum soma_err bus_local_snapshot(const char *key, struct bus_cursor after, struct bus_msg ***msgs, size_t *n,
				 int64_t *published_seq) SOMA_MUST_CHECK;
/* Logs and delivers an ephemeral message whose cursor was chosen by the caller (the redis
 * driver, degraded); raises the session's known cursor to c. */
void bus_local_put(const char *key, struct bus_cursor c, const char *text, size_t len);
/* Delivers a message sequenced elsewhere (from Redis) to this process's subscribers of key, if
 * any, without logging it; raises the session's known cursor to c when the session is known. */
void bus_local_deliver(const char *key, struct bus_cursor c, const char *text, size_t len);
/* Delivers the gap marker (bus_msg_is_gap) to every subscriber of key, or of every session when
 * key is NULL: they may have missed messages and should resume by cursor. */
void bus_local_gap(const char *key);
/* Delivers the end marker (bus_msg_is_end) to every subscriber of key: the session was deleted;
 * with reset, the reset marker (bus_msg_is_reset): the session was reset. */
void bus_local_end(const char *key, bool reset);

/* ---- api.c ---- */
/* A message with refs 1 and a copy of text (NUL-terminated); NULL on OOM. */
struct bus_msg *bus_msg_new(struct bus_cursor c, const char *text, size_t len);

/* ---- redis.c: the redis driver ---- */
enum bus_rec_kind {
	BUS_REC_COMMITTED = 'c', /* a committed event: cursor "<seq>" */
	BUS_REC_EPHEMERAL = 'e', /* an ephemeral event: cursor assigned in Redis */
	BUS_REC_BEGIN = 'b',	 /* a generation of the session begins (bus_generation_begin) */
	BUS_REC_END = 'x',	 /* the session's generation ended: its deltas expire after the window
				  * once no other generation runs there */
	BUS_REC_FORGET = 'f',	 /* the session was deleted or reset: every node forgets it;
				  * num 1: deleted (its streams get the end marker),
				  * 2: reset (they get the reset marker) */
	BUS_REC_RESYNC = 'r',	 /* subscribers of the session (all, for an empty key) may have a gap;
				  * num: a committed seq published meanwhile to local streams only */
	BUS_REC_CANCEL = 'k',	 /* a cancel notice (text: its JSON, cancel.c): published on the
				  * cancel channel by itself, never in a batch of the script */
};
/* A record on the publisher's queue (redis.c), sent by bus_redis_send (redis_batch.c). */
struct bus_rec {
	enum bus_rec_kind kind; /* what it is */
	char tag[2];		/* kind as the script's one-letter string */
	char key[BUS_KEY_MAX];	/* the session's bus key ("" with a resync of all) */
	int64_t num;		/* committed: seq; ephemeral: base seq */
	char *text;		/* the record as the script takes it (owned), NULL for records without: a committed
				 * record's published frame (bus_rec_fill), else the event JSON */
	size_t len;		/* bytes of text */
	size_t off;		/* where the event JSON starts in text (0 but for a committed record) */
	int start;		/* set by bus_redis_account: e: 1 when it starts this node's generation there
				 * (no bus_generation_begin came first); x: -1 when this node runs none there */
	struct bus_rec *next;	/* queue order */
};
/* Sets r's text, len and off from the event JSON text: for a committed record its frame as the
 * script publishes it (the framing: redis.c), so that the script only appends it. False on OOM. */
bool bus_rec_fill(struct bus_rec *r, enum bus_rec_kind kind, const char *key, int64_t num, const char *text,
		  size_t len);
/* Counts the generations of recs in the floor table (b, e, x, f records) and sets their start;
 * once per batch, before it is sent, whatever becomes of it. */
void bus_redis_account(struct bus_rec **recs, size_t n);
/* Sends recs (and the forgets and resyncs the floor table owes) as one EVALSHA of the batch script
 * on c, channel the bus channel, under a batch id of its own: sent again (on a new connection)
 * until Redis answers or retry_until_ms (wall clock) has passed, and run by Redis at most once.
 * True when Redis ran it (its cursors noted in the floor table), else false with the reason in
 * why. */
bool bus_redis_send(struct redis_conn *c, const char *channel, struct bus_rec **recs, size_t n, bool resync_all,
		    int64_t window_ms, int64_t live_extra_ms, int64_t retry_until_ms, char *why, size_t cap);
/* Queues a record for the publisher thread (copying text). False when the driver does not run
 * (the caller publishes locally); true when queued or dropped because the queue is full (the
 * streams then get a gap marker once Redis is reachable again). Never waits for Redis. */
bool bus_redis_enqueue(enum bus_rec_kind kind, const char *key, int64_t num, const char *text, size_t len);
bool bus_redis_running(void);
void bus_redis_stop(void);
enum soma_err bus_redis_snapshot(const char *key, struct bus_cursor after, struct bus_msg ***msgs, size_t *n,
				 int64_t *published_seq) SOMA_MUST_CHECK;
bool bus_redis_status(char *detail, size_t cap);

/* ---- redis_state.c: the script, the floor table, snapshots ---- */
#define BUS_REDIS_PREFIX "soma:bus:" /* keys <prefix><bus key>:m (hash) and :l (ephemeral list) */
#define BUS_RESYNC_MAX	 256	     /* more lost sessions than this: one resync of every stream */
extern const char bus_redis_lua[];   /* the batch script (framing and keys: redis.c) */
extern char bus_redis_lua_sha[41];   /* its SHA1, set by bus_snap_open */

/* What the publisher thread knows of a session it published to (its thread only). */
struct bus_floor {
	char key[BUS_KEY_MAX];	/* the session's bus key */
	struct bus_cursor last; /* highest cursor seen assigned: the floor of the next one */
	int running;		/* generations this node runs there (their ends are owed to Redis) */
	bool lost;		/* records went local-only: a resync is owed once Redis is back */
	int forget;		/* a forget went local-only: owed with the resync (1: reset, 2: deleted) */
	int64_t lost_seq;	/* highest committed seq that went local-only (-1: none): the resync
				 * raises the session's published seq in Redis to it */
	int64_t touched_ms;	/* last use (wall clock), for the sweep */
	struct bus_floor *next; /* bucket chain */
};
/* The entry of key, created when asked (NULL when the table is full or on OOM). */
struct bus_floor *bus_floor_get(const char *key, bool create);
void bus_floor_raise(struct bus_floor *f, struct bus_cursor c);
void bus_floor_lost(struct bus_floor *f);
size_t bus_floor_lost_count(void);
/* The entries owing a resync (and maybe a forget: caller frees the array, not the entries); *n. */
struct bus_floor **bus_floor_lost_list(size_t *n);
/* The resyncs (and owed forgets) of these entries went out. */
void bus_floor_resynced(struct bus_floor **list, size_t n);
/* Drops entries neither running nor lost, untouched since idle_before_ms. */
void bus_floor_sweep(int64_t idle_before_ms);
void bus_floor_clear(void);
/* Delivers one record locally that Redis could not take (publisher thread; see redis.c). */
void bus_redis_degrade(enum bus_rec_kind kind, const char *key, int64_t num, const char *text, size_t len);
/* The snapshot connection (lazy: Redis down is not an error). */
enum soma_err bus_snap_open(const char *url, char *why, size_t cap) SOMA_MUST_CHECK;
void bus_snap_close(void);
/* True while the publisher's last attempt failed and the subscriber (if any) is not subscribed
 * either (snapshots then skip Redis). */
bool bus_redis_down(void);

/* ---- cancel.c: cancel notices across nodes ---- */
#define BUS_CANCEL_PREFIX "soma:cancel:" /* the cancel channel: <prefix><db> */
/* Whether bus_cancel_listen set a function (the node subscribes to the cancel channel). */
bool bus_cancel_listening(void);
/* PUBLISHes one notice (publisher thread, its connection): once more on a new connection when
 * the first attempt fails; logs a notice that cannot go. */
void bus_cancel_send(struct redis_conn *c, const char *channel, const char *text, size_t len);
/* Applies a notice received on the cancel channel (subscriber thread); ignores this node's own
 * and malformed ones. */
void bus_cancel_dispatch(const char *payload, size_t len);

/* ---- redis_sub.c: the subscriber thread of the redis driver ---- */
/* Connects, subscribes to channel (the bus's; "" for none: the node serves no streams) and
 * cancel_channel ("" for none), and starts the thread; waits up to wait_ms for the first
 * subscription (Redis down is not an error: the thread keeps trying). */
enum soma_err bus_sub_start(const char *url, const char *channel, const char *cancel_channel, int wait_ms, char *why,
			    size_t cap) SOMA_MUST_CHECK;
void bus_sub_stop(void);
/* True while subscribed; otherwise the last error in why. received: messages taken from Redis. */
bool bus_sub_state(char *why, size_t cap, long long *received);
/* Delivers the records of one published batch (the framing is described in redis.c). Returns
 * false when the payload is malformed (what came before the fault is delivered). */
bool bus_redis_dispatch(const char *payload, size_t len);

#endif
