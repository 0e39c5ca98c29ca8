/*
 * redis_confirm.c - a worker's outcomes are kept until Redis confirms them.
 *
 * DESIGN: a worker writes the result meta and the ack of its tasks in pipelines and reads the
 * replies later (rw_drain), so a write that "succeeded" may have gone into a connection Redis
 * had already closed. The visibility restore is no safety net for that: a message taken by
 * BRPOP is recorded in `unacked` only after it arrives (as kombu does), and a connection lost in
 * between leaves no record to restore. So every outcome written stays in the worker's list
 * (rw_outcome_sent) until all replies owed have been read (rw_outcomes_confirmed). When the
 * connection turns out to be lost, the worker waits for Redis and writes every unconfirmed
 * outcome again - the same meta (SETEX + PUBLISH: idempotent), ZREM/HDEL of its tag, DEL of its
 * run-lock - until Redis confirms them or the process stops (rw_outcomes_replay). A reply that
 * says Redis cannot take the write yet (LOADING while a restarted Redis reads its data, BUSY,
 * OOM, ...: rw_reply_transient) confirms nothing either: the outcomes are written again. The follow-ups of
 * a canvas (next chain link, chord join) are not written again.
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

void rw_outcome_sent(struct rworker *w, const char *id, const char *tag, const char *lock, char *meta)
{
	if (w->nsent == w->capsent) {
		int cap = w->capsent ? w->capsent * 2 : 16;
		struct rw_outcome *grown = realloc(w->sent, (size_t)cap * sizeof(*grown));
		if (!grown) { /* out of memory: this one is not kept (the visibility restore remains) */
			free(meta);
			return;
		}
		w->sent = grown, w->capsent = cap;
	}
	struct rw_outcome *o = &w->sent[w->nsent++];
	snprintf(o->id, sizeof(o->id), "%s", id);
	snprintf(o->tag, sizeof(o->tag), "%s", tag ? tag : "");
	snprintf(o->lock, sizeof(o->lock), "%s", lock);
	o->meta = meta;
}

void rw_outcomes_confirmed(struct rworker *w)
{
	for (int i = 0; i < w->nsent; i++)
		free(w->sent[i].meta);
	w->nsent = 0;
}

/* Appends every unconfirmed outcome with its ack; returns how many replies that owes, -1 when
 * an append failed (the connection is gone again). */
static int append_all(struct rworker *w)
{
	int n = 0;
	for (int i = 0; i < w->nsent; i++) {
		struct rw_outcome *o = &w->sent[i];
		int k = redis_meta_append_text(w->c, o->id, o->meta);
		const char *z[] = {"ZREM", "unacked_index", o->tag}, *h[] = {"HDEL", "unacked", o->tag},
			   *d[] = {"DEL", o->lock};
		size_t zl[] = {4, 13, strlen(o->tag)}, hl[] = {4, 7, strlen(o->tag)}, dl[] = {3, strlen(o->lock)};
		if (k != 2 || redis_append_argv(w->c, 3, z, zl) != SOMA_OK ||
		    redis_append_argv(w->c, 3, h, hl) != SOMA_OK || redis_append_argv(w->c, 2, d, dl) != SOMA_OK)
			return -1;
		n += k + 3;
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

void rw_outcomes_replay(struct rworker *w)
{
	log_warn("queue", "the redis connection was lost under %d task outcome(s); writing them again once it is back",
		 w->nsent);
	bool said_busy = false;
	while (w->nsent > 0 && !queue_stopping()) {
		rw_wait_redis(w, w->sent[0].id);
		int n = redis_conn_ok(w->c) ? append_all(w) : -1;
		if (n < 0) {
			if (redis_conn_ok(w->c)) /* drop the partial pipeline */
				redis_conn_broken(w->c, "an outcome could not be queued for redis");
			continue;
		}
		bool ok = true, busy = false;
		for (int i = 0; ok && i < n; i++) {
			redisReply *r = redis_get_reply(w->c);
			ok = r != NULL;
			if (rw_reply_transient(r))
				busy = true; /* e.g. LOADING after a restart: not written, write it again */
			else if (r && r->type == REDIS_REPLY_ERROR)
				log_warn("queue", "redis refused an outcome written again: %s", r->str);
			freeReplyObject(r);
		}
		if (ok && !busy) {
			log_info("queue", "%d task outcome(s) written again and confirmed", w->nsent);
			rw_outcomes_confirmed(w);
		} else if (ok) {
			if (!said_busy)
				log_warn("queue", "redis cannot take writes yet (loading or busy); the outcomes wait");
			said_busy = true;
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
}
