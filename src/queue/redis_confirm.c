/*
 * redis_confirm.c - a worker's outcomes are kept until Redis confirms them.
 *
 * DESIGN: a worker writes the result meta and the ack of its tasks in pipelines and reads the
 * replies later (rw_drain), so a write that "succeeded" may have gone into a connection Redis
 * had already closed. The visibility restore is not relied on for that (kombu's own consumers
 * record a message taken by BRPOP in `unacked` only after it arrives, so a connection lost in
 * between leaves no record to restore). So every outcome written stays in the worker's list
 * (rw_outcome_sent) until all replies owed have been read (rw_outcomes_confirmed). When the
 * connection turns out to be lost, the worker waits for Redis and writes every unconfirmed
 * outcome again - the same meta (SETEX + PUBLISH, and its owner key: idempotent), ZREM/HDEL of its tag, DEL of its
 * run-lock - until Redis confirms them or the process stops (rw_outcomes_replay). A reply that
 * says Redis cannot take the write yet (LOADING while a restarted Redis reads its data, BUSY,
 * OOM, ...: rw_reply_transient) confirms nothing either: the outcomes are written again.
 *
 * The follow-ups of a canvas task (next chain link, callbacks, errbacks, chord join and body;
 * redis_canvas.c) are part of its outcome: written after its meta, read back at once, and written
 * again with it until Redis confirms them. Its ack waits for them (a replay holds back the ack of
 * an outcome whose follow-ups are not confirmed, writes them, then writes the acks in one more
 * round). Writing them again is safe because each is idempotent in Redis itself: a publish is
 * guarded by a marker set in the same Lua step, the chord join by a per-member marker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "queue/redis_int.h"

void rw_wait_redis(struct rworker *w, const char *task_id)
{
	bool said = false;
	while (redis_conn_ensure(w->c) != SOMA_OK && !queue_stopping()) {
		if (!said)
			log_warn("queue", "redis is down; the outcome of task %s waits for it (%s)", task_id,
				 redis_conn_error(w->c));
		said = true;
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (said && redis_conn_ok(w->c))
		log_info("queue", "redis is back; writing the outcome of task %s", task_id);
}

struct rw_outcome *rw_outcome_sent(struct rworker *w, struct rw_outcome *o)
{
	if (w->nsent == w->capsent) {
		int cap = w->capsent ? w->capsent * 2 : 16;
		struct rw_outcome *grown = realloc(w->sent, (size_t)cap * sizeof(*grown));
		if (!grown) /* out of memory: not kept (the caller decides; the visibility restore remains) */
			return NULL;
		w->sent = grown, w->capsent = cap;
	}
	struct rw_outcome *kept = &w->sent[w->nsent++];
	*kept = *o;
	memset(o, 0, sizeof(*o));
	return kept;
}

void rw_outcome_free(struct rw_outcome *o)
{
	free(o->meta);
	json_decref(o->canvas.result);
	json_decref(o->canvas.headers);
	json_decref(o->canvas.embed);
	memset(o, 0, sizeof(*o));
}

void rw_outcomes_confirmed(struct rworker *w)
{
	for (int i = 0; i < w->nsent; i++)
		rw_outcome_free(&w->sent[i]);
	w->nsent = 0;
}

static bool canvas_pending(const struct rw_outcome *o)
{
	return o->canvas.embed && !o->canvas.done;
}

/* Appends every unconfirmed outcome with its ack (held back while its follow-ups are not
 * confirmed: *held counts those); returns how many replies that owes, -1 when an append failed
 * (the connection is gone again). */
static int append_all(struct rworker *w, int *held)
{
	int n = 0;
	*held = 0;
	for (int i = 0; i < w->nsent; i++) {
		struct rw_outcome *o = &w->sent[i];
		int k = redis_meta_append_text(w->c, o->id, o->meta); /* (its soma_tenant: the owner) */
		if (k < 2)
			return -1;
		n += k;
		if (canvas_pending(o)) {
			(*held)++;
			continue;
		}
		const char *z[] = {"ZREM", "unacked_index", o->tag}, *h[] = {"HDEL", "unacked", o->tag},
			   *d[] = {"DEL", o->lock};
		size_t zl[] = {4, 13, strlen(o->tag)}, hl[] = {4, 7, strlen(o->tag)}, dl[] = {3, strlen(o->lock)};
		if (redis_append_argv(w->c, 3, z, zl) != SOMA_OK || redis_append_argv(w->c, 3, h, hl) != SOMA_OK ||
		    redis_append_argv(w->c, 2, d, dl) != SOMA_OK)
			return -1;
		n += 3;
	}
	return n;
}

bool rw_reply_transient(const redisReply *r)
{
	static const char *const later[] = {"LOADING", "BUSY",	   "MASTERDOWN", "TRYAGAIN",
					    "OOM",     "READONLY", "CLUSTERDOWN"};
	if (!r || r->type != REDIS_REPLY_ERROR || !r->str)
		return false;
	for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
		if (strncmp(r->str, later[i], strlen(later[i])) == 0)
			return true;
	return false;
}

enum rw_write rw_reply_class(const redisReply *r, const char *what)
{
	if (!r)
		return RW_LOST;
	if (rw_reply_transient(r))
		return RW_LATER; /* e.g. LOADING after a restart: not written, write it again */
	if (r->type == REDIS_REPLY_ERROR)
		log_warn("queue", "redis refused %s: %s", what, r->str);
	return RW_WRITTEN;
}

/* The worse of two results: lost before later before written. */
static enum rw_write worse(enum rw_write a, enum rw_write b)
{
	return a == RW_LOST || b == RW_LOST ? RW_LOST : a == RW_LATER || b == RW_LATER ? RW_LATER : RW_WRITTEN;
}

/* One round: every outcome, then the follow-ups not confirmed yet. *held: acks held back. */
static enum rw_write write_all(struct rworker *w, int *held)
{
	int n = append_all(w, held);
	if (n < 0) {
		if (redis_conn_ok(w->c)) /* drop the partial pipeline */
			redis_conn_broken(w->c, "an outcome could not be queued for redis");
		return RW_LOST;
	}
	enum rw_write res = RW_WRITTEN;
	for (int i = 0; i < n && res != RW_LOST; i++) {
		redisReply *r = redis_get_reply(w->c);
		res = worse(res, rw_reply_class(r, "an outcome written again"));
		freeReplyObject(r);
	}
	for (int i = 0; i < w->nsent && res == RW_WRITTEN; i++) {
		struct rw_outcome *o = &w->sent[i];
		if (!canvas_pending(o))
			continue;
		w->owed = 0;
		res = redis_canvas_write(w, o);
		o->canvas.done = res == RW_WRITTEN;
	}
	return res;
}

void rw_outcomes_replay(struct rworker *w)
{
	log_warn("queue", "the redis connection was lost under %d task outcome(s); writing them again once it is back",
		 w->nsent);
	bool said_busy = false;
	while (w->nsent > 0 && !queue_stopping()) {
		rw_wait_redis(w, w->sent[0].id);
		int held = 0;
		enum rw_write res = redis_conn_ok(w->c) ? write_all(w, &held) : RW_LOST;
		if (res == RW_WRITTEN && held == 0) {
			log_info("queue", "%d task outcome(s) written again and confirmed", w->nsent);
			rw_outcomes_confirmed(w);
		} else if (res == RW_LATER) {
			if (!said_busy)
				log_warn("queue", "redis cannot take writes yet (loading or busy); the outcomes wait");
			said_busy = true;
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
		} /* lost: wait for Redis again; written with acks held back: once more, with the acks */
	}
	w->owed = 0;
}
