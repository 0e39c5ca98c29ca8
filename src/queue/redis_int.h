/*
 * redis_int.h - the state of one redis-driver worker thread, shared by redis_consume.c (taking
 * messages) and redis_settle.c (recording outcomes and acking).
 *
 * DESIGN: a worker thread owns one connection. Commands whose replies nobody waits for (acks,
 * results) are appended and written out at once, and their replies are read later (`owed`),
 * before the next command whose reply matters: a result is visible in Redis as soon as the task
 * ends, without a round trip per task. Messages are taken in batches (`buf`, the prefetch): a
 * Lua script pops up to n of them band-major and records each in unacked/unacked_index in the
 * same atomic step, so no popped message is ever outside both the list and the unacked hash.
 * An idle worker waits with BLMOVE from its queue's band 0 into a key of its own (`inflight`),
 * never BRPOP: a message BRPOP took was outside both until a second command recorded it, and a
 * worker killed between the two lost it. The inflight key is the pop script's first source, and
 * it is registered (member, the time of the wait) in REDIS_INFLIGHT_INDEX, whose entries older
 * than the visibility timeout the restore sweep empties back into their band (redis_restore.c).
 */
#ifndef SOMA_QUEUE_REDIS_INT_H
#define SOMA_QUEUE_REDIS_INT_H

#include <pthread.h>

#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

#define REDIS_BANDS	      4			    /* 0, 3, 6, 9 */
#define REDIS_PREFETCH_MAX    1000		    /* messages held by one worker thread at most */
#define REDIS_INFLIGHT_INDEX  "soma-inflight-index" /* zset: member -> when its worker last waited (s) */
#define REDIS_INFLIGHT_PREFIX "soma-inflight:"	    /* + member: the list a waiting worker's BLMOVE fills */

struct rmsg {
	struct celery_msg m; /* decoded */
	char *text;	     /* the envelope as received (owned) */
	size_t len;	     /* its length */
	_Atomic bool skip;   /* done already (a ready result) or running elsewhere: ack, do not run
			      * (atomic: `inspect reserved` reads it on another thread) */
	bool locked;	     /* this worker took its run-lock */
	char owner[64];	     /* the worker id the run-lock holds (when locked; for a held message, its taker's) */
	int64_t fresh_ms;    /* when its run-lock and unacked score were set or last renewed (wall) */
	_Atomic bool gone;   /* waited in the prefetch past its claim: neither run nor acked here */
	json_t *ready;	     /* skipped for a stored result, of a canvas task: that meta (owned) */
};

struct rworker {
	char queue[64];				/* queue served */
	char id[64];				/* worker id */
	struct redis_conn *c;			/* the thread's connection */
	char keys[REDIS_BANDS][CELERY_KEY_MAX]; /* band keys, band-major */
	char inflight[CELERY_KEY_MAX + 96];	/* REDIS_INFLIGHT_PREFIX + member: what BLMOVE took */
	char member[CELERY_KEY_MAX + 80];	/* "<band 0 key>\n<worker id>" in REDIS_INFLIGHT_INDEX */
	struct rmsg buf[REDIS_PREFETCH_MAX];	/* prefetched, not run yet */
	int head, count;			/* buf[head .. head+count); moved by rw_buf_* while registered */
	pthread_mutex_t buf_lock;		/* guards head/count against `inspect reserved` (redis_reserved.c) */
	struct rmsg cur;			/* the message of the task running now */
	bool has_cur;				/* cur is set */
	int owed;				/* replies not read yet */
	bool slow;				/* the last task took long: take one at a time */
	int64_t hb_ms;				/* last heartbeat */
	int64_t started_ms;			/* when the running task was taken */
	uint64_t started_ns;			/* the same, monotonic */
	char *acks[REDIS_PREFETCH_MAX];		/* tags acked but not written yet (owned; one ZREM + HDEL for all) */
	int nacks;				/* entries in acks */
	char *locks[REDIS_PREFETCH_MAX];	/* run-locks to release with those acks (owned; one DEL) */
	int nlocks;				/* entries in locks */
	struct rw_outcome *sent;		/* outcomes written, their replies not read yet (owned) */
	int nsent, capsent;			/* entries in sent, its size */
};

/* What the follow-ups of a canvas task need (redis_canvas.c), kept with its outcome until Redis
 * has confirmed them: they are written again with it after a lost connection or a transient
 * refusal, each in an idempotent form (a follow-up is published at most once, a chord member
 * joins at most once), so "again" never means "twice". */
struct rw_canvas {
	char status[12]; /* SUCCESS, FAILURE or REVOKED (the follow-ups depend on it) */
	json_t *result;	 /* the return value, or the exception dict of a failure (owned) */
	json_t *headers; /* the message's headers: group, group_index, root_id, soma_* (owned ref.) */
	json_t *embed;	 /* its embed: chain, callbacks, errbacks, chord (owned reference) */
	bool done;	 /* Redis confirmed every follow-up */
};

/* An outcome written to Redis and not confirmed yet (redis_confirm.c): written again, with its
 * follow-ups and its ack, if the connection turns out to have been lost under it. */
struct rw_outcome {
	char id[CELERY_ID_BYTES + 1];  /* the task */
	char tag[CELERY_ID_BYTES + 1]; /* its delivery tag */
	char lock[CELERY_ID_KEY_MAX];  /* its run-lock */
	char tenant[72];	       /* its owner (headers.soma_tenant), "" for none */
	char *meta;		       /* its result meta (owned) */
	struct rw_canvas canvas;       /* its follow-ups; canvas.embed NULL when it has none */
};

/* The result of writing something whose replies were read: Redis took it, the connection was
 * lost (nothing known), or Redis refused for now (LOADING, BUSY, ...: write it again later). */
enum rw_write { RW_WRITTEN, RW_LOST, RW_LATER };

/* Keeps outcome *o (moved: its members now belong to w) until Redis confirms it; returns where it
 * is kept, or NULL when out of memory (then the caller still owns o's members: rw_outcome_free). */
struct rw_outcome *rw_outcome_sent(struct rworker *w, struct rw_outcome *o);
/* Frees what o owns (not o itself). */
void rw_outcome_free(struct rw_outcome *o);
/* Every reply owed was read: the recorded outcomes are in Redis; forgets them. */
void rw_outcomes_confirmed(struct rworker *w);
/* The connection was lost with outcomes unconfirmed: waits for Redis, writes them, their
 * follow-ups and their acks again (all idempotent) until Redis confirms them or the process
 * stops. */
void rw_outcomes_replay(struct rworker *w);
/* How a reply read back counts (NULL: the connection is lost); another error is logged with
 * what, and counts as written (writing it again would not change the answer). */
enum rw_write rw_reply_class(const redisReply *r, const char *what);
/* Waits until w's connection is up (or the process stops); task_id names what waits, for logs. */
void rw_wait_redis(struct rworker *w, const char *task_id);

/* Appends the recorded acks and run-lock releases (ZREM, HDEL, DEL; replies owed) and forgets them. */
void rw_acks_append(struct rworker *w);
/* Appends the pending acks, then reads every reply still owed on w's connection (errors are
 * logged). */
void rw_drain(struct rworker *w);
/* Whether r is an error Redis gives for a write it cannot take yet (LOADING after a restart,
 * BUSY, OOM, READONLY ...): the write did not happen and is to be made again. */
bool rw_reply_transient(const redisReply *r);
/* Appends the pending acks and writes out what was appended (replies are read later). */
void rw_send(struct rworker *w);
/* Records the ack of tag; the acks of a batch go out as one ZREM unacked_index and one HDEL
 * unacked, after the results appended before them (rw_send, rw_drain). */
void rw_ack(struct rworker *w, const char *tag);
/* Records the release of m's run-lock, written with the acks (one DEL for the batch): a
 * requeued dead letter runs again under the same (id, retries). */
void rw_unlock(struct rworker *w, const struct celery_msg *m);
/* Writes the follow-ups of outcome o (redis_canvas.c): SUCCESS: the next link of embed.chain
 * and each of embed.callbacks; FAILURE/REVOKED: each of embed.errbacks (FAILURE: and the FAILURE
 * meta of every later chain link, joining its chord for one in a chord's header); for a chord
 * member the chord join and, when it completes the chord, the chord's body. Reads, before their replies,
 * the w->owed replies appended before (its result meta). Every step is idempotent (see the file),
 * so o may be written again until this returns RW_WRITTEN. o is borrowed. */
enum rw_write redis_canvas_write(struct rworker *w, struct rw_outcome *o);
/* Acks m, a copy of a canvas task whose result is stored already (m->ready), after writing its
 * follow-ups again from that result (redis_settle.c): each is idempotent, so for a copy whose
 * follow-ups went out this changes nothing, and for one whose worker stopped before Redis took
 * them it sends them. Not acked when they could not be written before the process stops. */
void rw_settle_ready(struct rworker *w, struct rmsg *m);
/* Frees a message. */
void rmsg_free(struct rmsg *m);
/* The unacked_index score of a message taken at wall_ms into buf: kombu's time() in seconds,
 * rounded up to a whole second. A whole number is kept as an integer in a small sorted set
 * (listpack), where a fractional one is parsed with strtod at every insert's scan (8 us per
 * ZADD of a 128-entry index); a restore may come at most a second later than kombu's. */
void redis_unacked_score(int64_t wall_ms, char *buf, size_t cap);
/* The run-lock key of a message into buf. */
void rw_lock_key(const struct celery_msg *m, char *buf, size_t cap);
/* The life of a run-lock (ms): the visibility timeout less 2 s, at least a second. */
int64_t rw_lock_ms(void);
/* When a prefetched message has waited half a run-lock's life, checks every such message of w's
 * buffer in one round trip (redis_prefetch.c): still w's (extended) or `gone`. */
void rw_prefetch_check(struct rworker *w);
/* Appends the renewal of the claims (run-lock, unacked score) of w's prefetched messages whose
 * run-locks surely still hold w's id (replies owed), at a heartbeat of the task before them. */
void rw_prefetch_keep(struct rworker *w, int64_t now);
/* Gives m back to the front of w's queue (redis_restore_one) with the release of its run-lock
 * when it holds one: the next taker runs it instead of acking it as running elsewhere. what
 * names the message for the warning when Redis does not take it. m is borrowed. */
/* `inspect reserved` (redis_reserved.c): w's buffer is registered once w is open and forgotten
 * before it is freed (its buf_lock, made by register, is destroyed with it); the worker thread
 * moves its bounds under buf_lock with rw_buf_pushed (count + 1, after the new last slot is
 * filled) and rw_buf_popped (head + 1, count - 1, before the first slot is emptied or moved), so
 * queue_reserved_json reads filled slots only. */
void rw_reserved_register(struct rworker *w);
void rw_reserved_forget(struct rworker *w);
void rw_buf_pushed(struct rworker *w);
void rw_buf_popped(struct rworker *w);
/* Logs a message dropped as unreadable (why); when only its task id is too long for this worker
 * (over CELERY_ID_MAX characters), appends a FAILURE meta under that id (w->owed counts its replies), so
 * that the caller's get() raises instead of waiting forever. text is borrowed. */
void rw_answer_dropped(struct rworker *w, const char *text, size_t len, const char *why);
void rw_give_back(struct rworker *w, const struct rmsg *m, const char *what);

#endif
