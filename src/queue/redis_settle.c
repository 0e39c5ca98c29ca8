/*
 * redis_settle.c - the redis driver's outcomes: the result meta in Celery's Redis backend
 * format, then the ack (ZREM unacked_index, HDEL unacked), written in that order on the worker's
 * connection so the ack never precedes the effect (acks_late).
 *
 * DESIGN: SUCCESS -> meta SUCCESS + ack (only the ack when the message asks ignore_result, as
 * Celery 5.2; a canvas task keeps its meta: a redelivered copy reads it to skip the rerun). A task of a canvas (chain
 * link, callbacks, chord member) writes its follow-ups between the two, read back at once and written again until Redis
 * confirms them (redis_canvas.c, redis_confirm.c); its ack waits for them. Retryable failure ->
 * Celery's retry: the same task id republished with retries + 1 and an eta (now + exponential
 * backoff with jitter), meta RETRY, ack of this delivery; a reject (the task's own failure: bad
 * input, a policy deny) -> meta FAILURE + ack, nothing else; past max_retries (and on a permanent
 * failure) -> the dead-letter store (a 'dead' row in the SQL store, committed first: if it cannot
 * be written nothing is acked and the message comes back after the visibility timeout), meta
 * FAILURE with the exception dict, ack. Interrupted by shutdown -> the message goes back to the
 * front of its queue unacked-free, its run-lock released in the same transaction (rw_give_back). Revoked or expired ->
 * meta REVOKED + ack, not run. A copy of a canvas task whose result is stored already (redelivered after its worker
 * wrote the meta but stopped before Redis confirmed the follow-ups) is not run: its follow-ups are written again from
 * the stored result (idempotent: a no-op when they went out), then it is acked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json_py.h"
#include "core/log.h"
#include "core/utf8.h"
#include "queue/redis_int.h"

/* The follow-ups of the outcome kept at o (the last one appended), written now (its meta's
 * replies are the only ones owed), and again until Redis confirms them. False when they could
 * not be confirmed before the process stops: then its ack is not written either. */
static bool canvas_confirmed(struct rworker *w, struct rw_outcome *o)
{
	enum rw_write res = redis_canvas_write(w, o);
	w->owed = 0;
	if (res == RW_WRITTEN) {
		o->canvas.done = true;
		return true;
	}
	rw_outcomes_replay(w); /* o among them: its meta, its follow-ups, then its ack */
	return w->nsent == 0;
}

/* The follow-ups of an outcome that could not be kept (out of memory): written once. */
static void canvas_once(struct rworker *w, struct rw_outcome *o)
{
	log_error("queue", "out of memory keeping the outcome of task %s; its follow-ups are written once, not again",
		  o->id);
	if (redis_canvas_write(w, o) != RW_WRITTEN)
		log_error("queue", "the follow-ups of task %s may be lost (redis: %s)", o->id, redis_conn_error(w->c));
	w->owed = 0;
	rw_outcome_free(o);
}

/* The ack of m (and the release of its run-lock), batched with other quick tasks' acks. */
static void ack_now(struct rworker *w, struct celery_msg *m)
{
	rw_ack(w, m->delivery_tag);
	rw_unlock(w, m);
	/* A batch of quick tasks goes out together (results, then one ZREM and one HDEL for all their
	 * acks): one write instead of one per task. Anything slower than a millisecond, the last of a
	 * batch, or a full batch is written at once, so no result waits behind a long task. */
	if (clock_mono_ns() - w->started_ns > 1000000 || w->count == 0 || w->nacks >= 64)
		rw_send(w);
}

/* Meta + follow-ups + ack of the running message, written out now. */
static void finish(struct rworker *w, const char *status, const json_t *result, const char *exc_type,
		   const char *exc_module, const char *message)
{
	struct celery_msg *m = &w->cur.m;
	bool canvas = json_object_size(m->embed) > 0 && strcmp(status, "RETRY") != 0;
	if (canvas && celery_msg_tree(m) != SOMA_OK) { /* the follow-ups need the headers */
		log_error("queue",
			  "out of memory reading task %s for its canvas; it runs again after the visibility timeout",
			  m->id);
		return;
	}
	if (!canvas && m->ignore_result && strcmp(status, "SUCCESS") == 0) {
		ack_now(w, m); /* Celery's ignore_result: no SUCCESS meta (failures are still stored) */
		return;
	}
	if (canvas)
		rw_drain(w); /* then the meta's are the only replies owed when the follow-ups are read */
	json_t *extra = json_pack("{s:s, s:I}", "name", m->task, "retries", (json_int_t)m->retries);
	/* the result says whose it is (results.c): the owner key the relay wrote at publish may expire
	 * first; a member Celery's readers ignore, in the same SETEX (no write of its own) */
	if (extra && m->tenant && m->tenant[0])
		json_object_set_new(extra, "soma_tenant", json_string(m->tenant));
	char *text = redis_meta_text(m->id, status, result, exc_type, exc_module, message, extra);
	json_decref(extra);
	int sent = text ? redis_meta_append_text(w->c, m->id, text) : 0;
	w->owed += sent;
	if (sent == 0) { /* stopping with Redis down: no result, no ack; it waits in unacked */
		log_warn("queue",
			 "cannot write the result of task %s (redis: %s); it runs again after the "
			 "visibility timeout",
			 m->id, redis_conn_error(w->c));
		free(text);
		return;
	}
	struct rw_outcome out = {.meta = text};
	snprintf(out.id, sizeof(out.id), "%s", m->id);
	snprintf(out.tag, sizeof(out.tag), "%s", m->delivery_tag);
	snprintf(out.tenant, sizeof(out.tenant), "%s", m->tenant ? m->tenant : "");
	rw_lock_key(m, out.lock, sizeof(out.lock));
	if (canvas) {
		snprintf(out.canvas.status, sizeof(out.canvas.status), "%s", status);
		out.canvas.result =
			exc_type ? json_pack("{s:s, s:[s], s:s}", "exc_type", exc_type, "exc_message",
					     message ? message : "", "exc_module", exc_module ? exc_module : "builtins")
				 : json_incref(result ? (json_t *)result : json_null());
		out.canvas.headers = json_incref(m->headers);
		out.canvas.embed = json_incref(m->embed);
	}
	struct rw_outcome *o = rw_outcome_sent(w, &out); /* until Redis confirms it */
	if (!o && canvas) {
		canvas_once(w, &out);
	} else if (!o) {
		rw_outcome_free(&out); /* (not kept: the visibility restore remains) */
	} else if (canvas && !canvas_confirmed(w, o)) {
		return; /* stopping before Redis took them: no ack, it comes back later */
	}
	ack_now(w, m);
}

void rw_settle_ready(struct rworker *w, struct rmsg *m)
{
	const char *status = json_string_value(json_object_get(m->ready, "status"));
	if (celery_msg_tree(&m->m) != SOMA_OK) { /* the follow-ups need the headers */
		log_error("queue",
			  "out of memory reading task %s for its canvas; it comes back after the visibility timeout",
			  m->m.id);
		return;
	}
	rw_drain(w); /* no reply is owed when the follow-ups are read */
	struct rw_outcome out = {.meta = json_dumps(m->ready, JSON_COMPACT)};
	if (!out.meta)
		return;
	log_info("queue",
		 "task %s has a stored result (%s); its canvas follow-ups are written again, each at most once",
		 m->m.id, status);
	snprintf(out.id, sizeof(out.id), "%s", m->m.id);
	snprintf(out.tag, sizeof(out.tag), "%s", m->m.delivery_tag);
	snprintf(out.tenant, sizeof(out.tenant), "%s", m->m.tenant ? m->m.tenant : "");
	if (m->locked) /* (a replay releases it; one another worker holds is not ours to release) */
		rw_lock_key(&m->m, out.lock, sizeof(out.lock));
	snprintf(out.canvas.status, sizeof(out.canvas.status), "%s", status);
	json_t *result = json_object_get(m->ready, "result");
	out.canvas.result = json_incref(result ? result : json_null());
	out.canvas.headers = json_incref(m->m.headers);
	out.canvas.embed = json_incref(m->m.embed);
	struct rw_outcome *o = rw_outcome_sent(w, &out); /* rewritten (the same meta) in a replay */
	if (!o)
		canvas_once(w, &out);
	else if (!canvas_confirmed(w, o))
		return; /* stopping before Redis took them: no ack, it comes back later */
	rw_ack(w, m->m.delivery_tag);
	if (m->locked)
		rw_unlock(w, &m->m);
	rw_send(w);
}

/* The same task again, due after the backoff (LPUSH: back of the queue), with retries + 1 when
 * the retry counts (not when the store was out: ctx->outage). */
static bool republish(struct rworker *w, int64_t delay_ms, bool counted)
{
	struct celery_msg *m = &w->cur.m;
	if (celery_msg_tree(m) != SOMA_OK)
		return false;
	json_t *env = json_copy(m->envelope);
	json_t *headers = json_copy(json_object_get(env, "headers"));
	json_t *props = json_deep_copy(json_object_get(env, "properties"));
	char eta[CELERY_TIME_LEN], key[CELERY_KEY_MAX];
	json_object_set_new(headers, "retries", json_integer(m->retries + (counted ? 1 : 0)));
	json_object_set_new(headers, "eta",
			    json_string(celery_time_format(clock_wall_ms() + delay_ms, eta, sizeof(eta))));
	json_object_del(headers, "redelivered");
	json_object_del(json_object_get(props, "delivery_info"), "redelivered");
	json_object_del(props, "delivery_tag");
	char *text = NULL;
	if (env && headers && props &&
	    celery_queue_key(m->routing_key ? m->routing_key : w->queue, m->priority, key, sizeof(key))) {
		char tag[IDS_UUID_LEN + 1];
		ids_uuid4(tag);
		json_object_set_new(props, "delivery_tag", json_string(tag));
		json_object_set(env, "headers", headers);
		json_object_set(env, "properties", props);
		text = json_dumps(env, JSON_COMPACT);
	}
	json_decref(headers);
	json_decref(props);
	json_decref(env);
	if (!text)
		return false;
	const char *argv[] = {"LPUSH", key, text};
	size_t lens[] = {5, strlen(key), strlen(text)};
	bool ok = redis_append_argv(w->c, 3, argv, lens) == SOMA_OK;
	w->owed += ok;
	free(text);
	return ok;
}

/* The payload of m's dead letter: the task's (args, kwargs, soma_payload), and what a requeue
 * publishes again from payload.options and payload.celery (redis_task_envelope): its priority,
 * expiry and time limits, and its canvas (embed: the rest of its chain, its callbacks and
 * errbacks, its chord; group, group_index, root_id). Without them a requeued chain link ran
 * alone and its chain never continued. Caller owns the result (NULL: out of memory). */
static json_t *dead_payload(struct celery_msg *m, const json_t *payload)
{
	json_t *p = json_is_object(payload) ? json_copy((json_t *)payload) : json_object();
	json_t *opts = json_pack("{s:I}", "priority", (json_int_t)m->priority);
	if (!p || !opts) {
		json_decref(p);
		json_decref(opts);
		return NULL;
	}
	if (m->expires_ms)
		json_object_set_new(opts, "expires_ms", json_integer(m->expires_ms));
	if (m->time_limit > 0)
		json_object_set_new(opts, "time_limit", json_real(m->time_limit));
	if (m->soft_time_limit > 0)
		json_object_set_new(opts, "soft_time_limit", json_real(m->soft_time_limit));
	json_object_set_new(p, "options", opts);
	json_t *cel = celery_msg_tree(m) == SOMA_OK ? json_object() : NULL; /* (the headers need the tree) */
	json_t *group = json_object_get(m->headers, "group"), *index = json_object_get(m->headers, "group_index");
	json_t *root = json_object_get(m->headers, "root_id");
	if (cel && json_object_size(m->embed) > 0)
		json_object_set(cel, "embed", m->embed);
	if (cel && json_is_string(group))
		json_object_set(cel, "group", group);
	if (cel && json_is_string(group) && json_is_integer(index))
		json_object_set(cel, "group_index", index);
	if (cel && json_is_string(root))
		json_object_set(cel, "root_id", root);
	if (json_object_size(cel) > 0)
		json_object_set(p, "celery", cel);
	json_decref(cel);
	return p;
}

/* The dead-letter row, committed before the ack. */
static bool dead_letter(struct rworker *w, struct task_ctx *ctx)
{
	struct store_op *op = store_op_new(STORE_OP_TASK_DEAD_ADD, ctx->tenant ? ctx->tenant : "");
	if (!op)
		return false;
	json_t *t = ctx->task, *payload = dead_payload(&w->cur.m, json_object_get(t, "payload"));
	op->task = !payload ? NULL
			    : json_pack("{s:s, s:s, s:s, s:O?, s:o, s:O, s:I, s:s}", "id", ctx->id, "queue", w->queue,
					"name", w->cur.m.task, "session_id", json_object_get(t, "session_id"),
					"payload", payload, "max_retries", json_object_get(t, "max_retries"),
					"attempts", (json_int_t)(w->cur.m.retries + 1), "error", ctx->error);
	enum soma_err err = op->task ? store_op_wait(queue_store(), op) : SOMA_ERR_NOMEM;
	store_op_free(op);
	if (err != SOMA_OK)
		log_error("queue",
			  "cannot store the dead letter of task %s (%s); it is not acked and comes back "
			  "after the visibility timeout",
			  ctx->id, soma_err_str(err));
	return err == SOMA_OK;
}

enum task_outcome redis_settle(void *wp, struct task_ctx *ctx, enum task_outcome outcome);
enum task_outcome redis_settle(void *wp, struct task_ctx *ctx, enum task_outcome outcome)
{
	struct rworker *w = wp;
	if (!w->has_cur)
		return outcome;
	struct celery_msg *m = &w->cur.m;
	w->slow = strcmp(w->queue, "conversation") == 0 || clock_wall_ms() - w->started_ms > 50;
	rw_wait_redis(w, m->id); /* the outcome of a task that ran must reach Redis (redis_confirm.c) */
	if (outcome == TASK_RETRY && ctx->shutdown) {
		rw_drain(w);
		rw_give_back(w, &w->cur, "task");
		return outcome;
	}
	int64_t max = json_integer_value(json_object_get(ctx->task, "max_retries"));
	if (outcome == TASK_RETRY && (m->retries < max || ctx->outage)) {
		int64_t delay = queue_backoff_ms(ctx->outage ? 2 : m->retries + 1);
		if (republish(w, delay, !ctx->outage))
			finish(w, "RETRY", NULL, "Retry", "celery.exceptions", ctx->error);
		return TASK_RETRY; /* not republished: not acked either, it comes back after the timeout */
	}
	if (outcome == TASK_RETRY) {
		char why[sizeof(ctx->error)];
		snprintf(why, sizeof(why), "%.400s (gave up after %lld retries)", ctx->error, (long long)m->retries);
		snprintf(ctx->error, sizeof(ctx->error), "%s", why);
		utf8_repair(ctx->error); /* "%.400s" may cut inside a character */
		outcome = TASK_FAIL;
	}
	if (outcome == TASK_REJECT) { /* the task's answer: FAILURE, not the operator's dead letter */
		log_info("queue", "task %s (%s) failed: %s", ctx->id, m->task, ctx->error);
		finish(w, "FAILURE", NULL, "Exception", "builtins", ctx->error);
		return TASK_FAIL;
	}
	if (outcome != TASK_FAIL) {
		finish(w, "SUCCESS", ctx->result, NULL, NULL, NULL);
		return outcome;
	}
	if (!dead_letter(w, ctx))
		return outcome;
	log_error("queue", "task %s (%s) dead-lettered: %s", ctx->id, m->task, ctx->error);
	const char *type = ctx->limit_hit == 2 ? "TimeLimitExceeded"
			   : ctx->limit_hit    ? "SoftTimeLimitExceeded"
					       : "Exception";
	finish(w, "FAILURE", NULL, type, ctx->limit_hit ? "billiard.exceptions" : "builtins", ctx->error);
	return outcome;
}

void redis_revoke(void *wp, json_t *task, const char *why);
void redis_revoke(void *wp, json_t *task, const char *why)
{
	struct rworker *w = wp;
	(void)task;
	if (w->has_cur)
		finish(w, "REVOKED", NULL, "TaskRevokedError", "celery.exceptions", why);
}

void rw_answer_dropped(struct rworker *w, const char *text, size_t len, const char *why)
{
	log_error("queue", "dropping a message on %s that is not a Celery task: %s", w->queue, why);
	json_t *env = json_py_load(text, len, 0, NULL);
	json_t *id = json_object_get(json_object_get(env, "headers"), "id");
	if (!json_is_string(id))
		id = json_object_get(json_object_get(env, "properties"), "correlation_id");
	if (json_is_string(id) && json_string_length(id) > 0 && !celery_id_ok(json_string_value(id)) &&
	    !json_py_has_nul(id)) {
		size_t chars = 0;
		for (const char *p = json_string_value(id); *p; p++)
			chars += ((unsigned char)*p & 0xC0) != 0x80;
		char msg[160];
		snprintf(msg, sizeof(msg), "task id of %zu characters: this worker runs tasks whose id has at most %d",
			 chars, CELERY_ID_MAX);
		w->owed += redis_meta_append(w->c, json_string_value(id), "FAILURE", NULL, "ValueError", "builtins",
					     msg, NULL);
		log_info("queue", "wrote a FAILURE result for the dropped message's long task id (%s)", msg);
	}
	json_decref(env);
}

void rw_give_back(struct rworker *w, const struct rmsg *m, const char *what)
{
	char lock[CELERY_ID_KEY_MAX];
	rw_lock_key(&m->m, lock, sizeof(lock));
	if (redis_restore_one(w->c, m->m.delivery_tag, m->text, m->len, w->queue, m->locked ? lock : NULL, m->owner) !=
	    SOMA_OK)
		log_warn("queue", "cannot give back %s %s at shutdown; it is restored after the visibility timeout",
			 what, m->m.id);
}

void redis_requeue(void *wp, json_t *task);
void redis_requeue(void *wp, json_t *task)
{
	struct rworker *w = wp;
	(void)task;
	rw_drain(w);
	if (w->has_cur)
		rw_give_back(w, &w->cur, "task");
}

/* ---- acks: recorded per task, written for a batch (moved here from redis_consume.c) ---- */

/* ZREM unacked_index t1..tn, HDEL unacked t1..tn, DEL lock1..lockn for what was recorded. */
void rw_acks_append(struct rworker *w)
{
	const char *argv[REDIS_PREFETCH_MAX + 2];
	size_t lens[REDIS_PREFETCH_MAX + 2];
	if (w->nacks > 0) {
		for (int i = 0; i < w->nacks; i++)
			argv[i + 2] = w->acks[i], lens[i + 2] = strlen(w->acks[i]);
		argv[0] = "ZREM", lens[0] = 4, argv[1] = "unacked_index", lens[1] = 13;
		if (redis_append_argv(w->c, w->nacks + 2, argv, lens) == SOMA_OK)
			w->owed++;
		argv[0] = "HDEL", argv[1] = "unacked", lens[1] = 7;
		if (redis_append_argv(w->c, w->nacks + 2, argv, lens) == SOMA_OK)
			w->owed++;
		for (int i = 0; i < w->nacks; i++)
			free(w->acks[i]), w->acks[i] = NULL;
		w->nacks = 0;
	}
	if (w->nlocks > 0) {
		for (int i = 0; i < w->nlocks; i++)
			argv[i + 1] = w->locks[i], lens[i + 1] = strlen(w->locks[i]);
		argv[0] = "DEL", lens[0] = 3;
		if (redis_append_argv(w->c, w->nlocks + 1, argv, lens) == SOMA_OK)
			w->owed++;
		for (int i = 0; i < w->nlocks; i++)
			free(w->locks[i]), w->locks[i] = NULL;
		w->nlocks = 0;
	}
}

void rw_unlock(struct rworker *w, const struct celery_msg *m)
{
	if (w->nlocks == REDIS_PREFETCH_MAX)
		rw_acks_append(w);
	char lock[CELERY_ID_KEY_MAX];
	rw_lock_key(m, lock, sizeof(lock));
	if ((w->locks[w->nlocks] = strdup(lock))) /* (out of memory: the lock lapses on its own) */
		w->nlocks++;
}

void rw_drain(struct rworker *w)
{
	rw_acks_append(w);
	bool ok = redis_conn_ok(w->c), busy = false;
	for (; ok && w->owed > 0; w->owed--) {
		redisReply *r = redis_get_reply(w->c);
		if (!r) {
			ok = false;
			break;
		}
		if (rw_reply_transient(r))
			busy = true; /* e.g. LOADING just after a restart: that write did not happen */
		else if (r->type == REDIS_REPLY_ERROR)
			log_warn("queue", "redis refused an ack or result write: %s", r->str);
		freeReplyObject(r);
	}
	w->owed = 0;
	if (ok && !busy)
		rw_outcomes_confirmed(w);
	else if (w->nsent > 0) /* outcomes lost with the connection, or refused for now: write them again */
		rw_outcomes_replay(w);
	/* (other lost acks are of duplicates: restored later, seen done, acked again) */
}

void rw_send(struct rworker *w)
{
	rw_acks_append(w);
	redisContext *ctx = redis_conn_ctx(w->c);
	int done = 0;
	while (ctx && !done) {
		if (redisBufferWrite(ctx, &done) != REDIS_OK) {
			redis_conn_broken(w->c, ctx->errstr[0] ? ctx->errstr : "write failed");
			w->owed = 0;
			return;
		}
	}
}

void rw_ack(struct rworker *w, const char *tag)
{
	if (!tag || !tag[0] || strlen(tag) > CELERY_ID_BYTES)
		return;
	if (w->nacks == REDIS_PREFETCH_MAX)
		rw_acks_append(w);
	if ((w->acks[w->nacks] = strdup(tag))) /* (out of memory: restored after the visibility timeout) */
		w->nacks++;
}
