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
 */
#ifndef SOMA_QUEUE_REDIS_INT_H
#define SOMA_QUEUE_REDIS_INT_H

#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

#define REDIS_BANDS	   4	/* 0, 3, 6, 9 */
#define REDIS_PREFETCH_MAX 1000 /* messages held by one worker thread at most */

struct rmsg {
	struct celery_msg m; /* decoded */
	char *text;	     /* the envelope as received (owned) */
	size_t len;	     /* its length */
	bool skip;	     /* done already (a ready result) or running elsewhere: ack, do not run */
};

struct rworker {
	char queue[64];				/* queue served */
	char id[64];				/* worker id */
	struct redis_conn *c;			/* the thread's connection */
	char keys[REDIS_BANDS][CELERY_KEY_MAX]; /* band keys, band-major */
	struct rmsg buf[REDIS_PREFETCH_MAX];	/* prefetched, not run yet */
	int head, count;			/* buf[head .. head+count) */
	struct rmsg cur;			/* the message of the task running now */
	bool has_cur;				/* cur is set */
	int owed;				/* replies not read yet */
	bool slow;				/* the last task took long: take one at a time */
	int64_t hb_ms;				/* last heartbeat */
	int64_t started_ms;			/* when the running task was taken */
};

/* Reads every reply still owed on w's connection (errors are logged). */
void rw_drain(struct rworker *w);
/* Writes out what was appended (replies are read later by rw_drain). */
void rw_send(struct rworker *w);
/* Appends the ack of tag: ZREM unacked_index, HDEL unacked. */
void rw_ack(struct rworker *w, const char *tag);
/* Frees a message. */
void rmsg_free(struct rmsg *m);
/* The run-lock key of a message into buf. */
void rw_lock_key(const struct celery_msg *m, char *buf, size_t cap);

#endif
