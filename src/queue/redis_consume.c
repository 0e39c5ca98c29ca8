/*
 * redis_consume.c - the redis driver's worker side: taking Celery messages exactly as kombu does
 * (interop.md 1.5-1.6), and turning them into tasks for the pool (see redis_int.h).
 *
 * DESIGN: reserve() serves, in order: the prefetched batch; a held message whose eta has come
 * (redis_restore.c holds them); a new batch popped by a Lua script (band-major RPOP of up to n
 * messages, recorded with one ZADD unacked_index + one HSET unacked in the same atomic step); and,
 * when every band is empty, BLMOVE from band 0 into the worker's inflight key for up to a second
 * with the same script sent behind it, which takes the inflight key first: one round trip
 * (redis_int.h: kombu's BRPOP left the message in no list and no hash until a second command, and
 * a kill between lost it). Each new batch is checked in one more round trip: one MGET of the
 * result metas (a ready result: a duplicate publish, ack without running; for a canvas task its
 * follow-ups are written again first, see redis_settle.c) and SET NX PX of a run-lock per (task
 * id, retries) (held: the same message runs elsewhere now). A message whose eta is in the future
 * is handed to the holder and stays unacked, as Celery holds it; its task-received goes out then,
 * with its eta (Celery 5.2 sends it on receipt), and not again when it becomes due.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/json_py.h"
#include "core/log.h"
#include "queue/hooks.h"
#include "queue/redis_int.h"

/* One RPOP with a count per band, then one ZADD and one HSET for the whole batch (variadic: a
 * command per batch, not two per message). The tag is found with a plain find of its key, then
 * read with the pattern kombu's JSON allows (spaces around the colon); when that first key is not
 * the property, the whole message is searched as before. */
static const char pop_script[] =
	"local nk = #KEYS - 2 local want = tonumber(ARGV[1]) local out = {} local z = {} local h = {} "
	"for i = 1, nk do "
	"  if #out >= want then break end "
	"  local got = redis.call('RPOP', KEYS[i], want - #out) "
	"  if got then for _, m in ipairs(got) do "
	"    local at = string.find(m, '\"delivery_tag\"', 1, true) "
	"    local tag = at and string.match(m, '^\"delivery_tag\"%s*:%s*\"([^\"]+)\"', at) "
	"    if not tag then tag = string.match(m, '\"delivery_tag\"%s*:%s*\"([^\"]+)\"') end "
	"    if tag then z[#z + 1] = ARGV[2] z[#z + 1] = tag "
	"      h[#h + 1] = tag h[#h + 1] = '[' .. m .. ', \"\", ' .. ARGV[3] .. ']' end "
	"    out[#out + 1] = m end end "
	"end "
	"if #z > 0 then redis.call('ZADD', KEYS[nk + 2], unpack(z)) redis.call('HSET', KEYS[nk + 1], unpack(h)) end "
	"return out";

void rmsg_free(struct rmsg *m)
{
	celery_msg_deinit(&m->m);
	json_decref(m->ready);
	free(m->text);
	memset(m, 0, sizeof(*m));
}

void redis_unacked_score(int64_t wall_ms, char *buf, size_t cap)
{
	snprintf(buf, cap, "%lld", (long long)((wall_ms + 999) / 1000));
}

void rw_lock_key(const struct celery_msg *m, char *buf, size_t cap)
{
	snprintf(buf, cap, "soma-run-%s-%lld", m->id, (long long)m->retries);
}

static void *rw_open(const char *queue, const char *worker_id)
{
	struct rworker *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	snprintf(w->queue, sizeof(w->queue), "%s", queue);
	snprintf(w->id, sizeof(w->id), "%s", worker_id);
	static const int bands[REDIS_BANDS] = {0, 3, 6, 9};
	for (int i = 0; i < REDIS_BANDS; i++)
		celery_queue_key(queue, bands[i], w->keys[i], sizeof(w->keys[i]));
	snprintf(w->member, sizeof(w->member), "%s\n%s", w->keys[0], w->id);
	snprintf(w->inflight, sizeof(w->inflight), REDIS_INFLIGHT_PREFIX "%s", w->member);
	w->slow = strcmp(queue, "conversation") == 0;
	if (!(w->c = redis_queue_connect(5000))) {
		free(w);
		return NULL;
	}
	rw_reserved_register(w);
	return w;
}

/* Gives back what the worker holds unrun (front of its queue, redelivered) and frees it. */
static void rw_close(void *wp)
{
	struct rworker *w = wp;
	rw_reserved_forget(w); /* (before its buffer is given back and freed) */
	rw_drain(w);
	rw_prefetch_check(w); /* one whose claim lapsed may run elsewhere now: not given back */
	for (int i = 0; i < w->count; i++) {
		struct rmsg *m = &w->buf[(w->head + i) % REDIS_PREFETCH_MAX];
		if (!m->gone)
			rw_give_back(w, m, "message");
		rmsg_free(m);
	}
	w->count = 0;
	if (w->has_cur)
		rmsg_free(&w->cur);
	rw_outcomes_confirmed(w); /* (stopping: what could not be confirmed waits in unacked) */
	for (int i = 0; i < w->nacks; i++)
		free(w->acks[i]);
	for (int i = 0; i < w->nlocks; i++)
		free(w->locks[i]);
	free(w->sent);
	redis_conn_close(w->c);
	pthread_mutex_destroy(&w->buf_lock); /* (rw_reserved_register made it) */
	free(w);
}

/* Decodes text into the next free slot; false (text freed, logged) when it is not a task. */
static bool push_msg(struct rworker *w, char *text, size_t len)
{
	struct rmsg *m = &w->buf[(w->head + w->count) % REDIS_PREFETCH_MAX];
	char why[256];
	if (celery_envelope_decode(text, len, &m->m, why, sizeof(why)) != SOMA_OK) {
		rw_answer_dropped(w, text, len, why); /* (logs it) */
		char tag[CELERY_ID_BYTES + 1]; /* ack it by the tag it waits under, or every sweep brings it back */
		if (celery_envelope_tag(text, len, tag, sizeof(tag)))
			rw_ack(w, tag);
		else
			log_error("queue", "the dropped message has no delivery_tag (it was never held in unacked)");
		free(text);
		return false;
	}
	m->text = text;
	m->len = len;
	m->skip = false;
	m->gone = false;
	m->fresh_ms = clock_wall_ms(); /* (its unacked score and run-lock are set from here on) */
	rw_buf_pushed(w);
	return true;
}

/* One round trip over the new messages [from, from+n): one MGET of their result metas, then a
 * SET NX PX of each run-lock. Nothing is sent unless all of it was appended (a broken connection
 * leaves every message unchecked: not skipped, not locked, run - the result write then fails and
 * the message comes back, see redis_settle.c). */
static void dedupe(struct rworker *w, int from, int n)
{
	const char *argv[REDIS_PREFETCH_MAX + 1];
	size_t lens[REDIS_PREFETCH_MAX + 1];
	char(*metas)[CELERY_ID_KEY_MAX] = malloc((size_t)n * sizeof(*metas));
	char lock_px[24];
	if (!metas)
		return; /* unchecked: run, as when Redis does not answer */
	snprintf(lock_px, sizeof(lock_px), "%lld", (long long)rw_lock_ms());
	argv[0] = "MGET", lens[0] = 4;
	for (int i = 0; i < n; i++) {
		struct rmsg *m = &w->buf[(from + i) % REDIS_PREFETCH_MAX];
		redis_meta_key(m->m.id, metas[i], sizeof(metas[i]));
		argv[i + 1] = metas[i], lens[i + 1] = strlen(metas[i]);
	}
	int sent = redis_append_argv(w->c, n + 1, argv, lens) == SOMA_OK ? n : 0;
	for (int i = 0; i < sent; i++) {
		struct rmsg *m = &w->buf[(from + i) % REDIS_PREFETCH_MAX];
		char lock[CELERY_ID_KEY_MAX];
		rw_lock_key(&m->m, lock, sizeof(lock));
		const char *s[] = {"SET", lock, w->id, "NX", "PX", lock_px};
		size_t sl[] = {3, strlen(lock), strlen(w->id), 2, 2, strlen(lock_px)};
		if (redis_append_argv(w->c, 6, s, sl) != SOMA_OK)
			sent = i;
	}
	redisReply *mget = sent > 0 ? redis_get_reply(w->c) : NULL;
	for (int i = 0; i < sent; i++) {
		struct rmsg *m = &w->buf[(from + i) % REDIS_PREFETCH_MAX];
		redisReply *meta =
			mget && mget->type == REDIS_REPLY_ARRAY && (size_t)i < mget->elements ? mget->element[i] : NULL;
		redisReply *lock = redis_get_reply(w->c);
		if (meta && meta->type == REDIS_REPLY_STRING) {
			json_t *v = json_py_load(meta->str, meta->len, 0, NULL);
			const char *st = json_string_value(json_object_get(v, "status"));
			m->skip = st && (strcmp(st, "SUCCESS") == 0 || strcmp(st, "FAILURE") == 0 ||
					 strcmp(st, "REVOKED") == 0);
			if (m->skip && json_object_size(m->m.embed) > 0)
				m->ready = json_incref(v); /* its follow-ups are written again (rw_settle_ready) */
			json_decref(v);
		}
		m->locked = lock && lock->type == REDIS_REPLY_STATUS;
		if (m->locked)
			snprintf(m->owner, sizeof(m->owner), "%s", w->id);
		if (lock && lock->type == REDIS_REPLY_NIL && !m->skip) {
			log_info("queue", "task %s (try %lld) runs on another worker now; acking this copy", m->m.id,
				 (long long)m->m.retries);
			m->skip = true;
		}
		if (m->skip)
			log_debug("queue", "task %s already has a result; duplicate acked", m->m.id);
		freeReplyObject(lock);
	}
	freeReplyObject(mget);
	free(metas);
}

/* Appends the wait for band 0 (at most a second): ZADD of the inflight key's registration with
 * the time of the wait, then BLMOVE from band 0 into it. Returns the replies owed (2 when both
 * went into the buffer). */
static int wait_append(struct rworker *w, int64_t wait_ms)
{
	char timeout[32], now[32];
	snprintf(timeout, sizeof(timeout), "%.3f", (double)(wait_ms > 1000 ? 1000 : wait_ms) / 1000.0);
	snprintf(now, sizeof(now), "%lld", (long long)(clock_wall_ms() / 1000));
	const char *z[] = {"ZADD", REDIS_INFLIGHT_INDEX, now, w->member};
	size_t zl[] = {4, strlen(REDIS_INFLIGHT_INDEX), strlen(now), strlen(w->member)};
	const char *b[] = {"BLMOVE", w->keys[0], w->inflight, "RIGHT", "LEFT", timeout};
	size_t bl[] = {6, strlen(w->keys[0]), strlen(w->inflight), 5, 4, strlen(timeout)};
	if (redis_append_argv(w->c, 4, z, zl) != SOMA_OK)
		return 0;
	return redis_append_argv(w->c, 6, b, bl) == SOMA_OK ? 2 : 1;
}

/* Pops up to a batch (Lua, atomic with the unacked records): the inflight key first, then the
 * bands. With wait_ms > 0 the pop goes behind a wait for band 0 in the same write, so Redis runs
 * it the moment the wait returns (with a message or not): one round trip. Returns how many were
 * taken (into buf from *from); -1 when Redis did not answer. */
static int pop(struct rworker *w, int *from, int64_t wait_ms)
{
	int want = w->slow ? 1 : (int)cfg_int(CFG_QUEUE_PREFETCH);
	if (want > REDIS_PREFETCH_MAX)
		want = REDIS_PREFETCH_MAX;
	char n[16], now[32], rk[96], nkeys[8];
	snprintf(n, sizeof(n), "%d", want);
	snprintf(nkeys, sizeof(nkeys), "%d", 1 + REDIS_BANDS + 2);
	redis_unacked_score(clock_wall_ms(), now, sizeof(now));
	snprintf(rk, sizeof(rk), "\"%s\"", w->queue);
	const char *argv[4 + REDIS_BANDS + 2 + 3] = {"EVAL", pop_script, nkeys, w->inflight};
	size_t lens[4 + REDIS_BANDS + 2 + 3] = {4, sizeof(pop_script) - 1, strlen(nkeys), strlen(w->inflight)};
	int argc = 4;
	for (int i = 0; i < REDIS_BANDS; i++, argc++)
		argv[argc] = w->keys[i], lens[argc] = strlen(w->keys[i]);
	argv[argc] = "unacked", lens[argc++] = 7;
	argv[argc] = "unacked_index", lens[argc++] = 13;
	argv[argc] = n, lens[argc++] = strlen(n);
	argv[argc] = now, lens[argc++] = strlen(now);
	argv[argc] = rk, lens[argc++] = strlen(rk);
	*from = (w->head + w->count) % REDIS_PREFETCH_MAX;
	if (redis_conn_ensure(w->c) != SOMA_OK)
		return -1;
	int waits = wait_ms > 0 ? wait_append(w, wait_ms) : 0;
	if ((wait_ms > 0 && waits < 2) || redis_append_argv(w->c, argc, argv, lens) != SOMA_OK) {
		w->owed += waits; /* read (and dropped) by the next rw_drain */
		return -1;
	}
	for (int i = 0; i < waits; i++) {
		redisReply *x = redis_get_reply(w->c);
		if (!x)
			return -1;
		if (x->type == REDIS_REPLY_ERROR)
			log_warn("queue", "redis refused the wait on %s: %s (BLMOVE needs Redis 6.2)", w->queue,
				 x->str);
		freeReplyObject(x);
	}
	redisReply *r = redis_get_reply(w->c);
	if (!r)
		return -1;
	int got = 0;
	if (r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i < r->elements; i++)
			got += push_msg(w, strndup(r->element[i]->str, r->element[i]->len), r->element[i]->len);
	else if (r->type == REDIS_REPLY_ERROR)
		log_warn("queue", "redis refused the pop script: %s", r->str);
	freeReplyObject(r);
	return got;
}

/* Pops a batch; when empty, waits for band 0 up to wait_ms and pops again, behind the wait. */
static int fetch(struct rworker *w, int64_t wait_ms)
{
	rw_drain(w);
	int from, got = pop(w, &from, 0);
	if (got == 0 && wait_ms > 0)
		got = pop(w, &from, wait_ms);
	if (got < 0) { /* Redis is down: the connection backs off; do not spin */
		struct timespec ts = {0, 200 * 1000000L};
		nanosleep(&ts, NULL);
		return 0;
	}
	if (got)
		dedupe(w, from, got);
	return got;
}

/* The task as the pool knows it; Celery's args/kwargs become payload.args/kwargs. */
static json_t *task_json(struct rworker *w, const struct celery_msg *m)
{
	json_t *payload = m->payload ? json_copy(m->payload) : json_object();
	json_object_set(payload, "args", m->args);
	json_object_set(payload, "kwargs", m->kwargs);
	if (m->traceparent) /* the header (ours, or a Celery producer's) continues its trace */
		json_object_set_new(payload, "traceparent", json_string(m->traceparent));
	const char *tenant = m->tenant;
	int64_t now = clock_wall_ms();
	json_t *t = json_pack("{s:s, s:s, s:s, s:s?, s:o, s:I, s:I, s:s, s:s}", "id", m->id, "name", m->task, "tenant",
			      tenant && tenant[0] ? tenant : cfg_str(CFG_AUTH_DEFAULT_TENANT), "session_id", m->session,
			      "payload", payload, "attempts", (json_int_t)(m->retries + 1), "max_retries",
			      (json_int_t)(m->has_max_retries ? m->max_retries : cfg_int(CFG_QUEUE_MAX_RETRIES)),
			      "queue", w->queue, "tag", m->delivery_tag);
	if (t && m->expires_ms)
		json_object_set_new(t, "expires_ms", json_integer(m->expires_ms));
	const char *const ek[] = {"argsrepr", "kwargsrepr", "root_id", "parent_id", "eta", "expires", "shadow"};
	const char *const ev[] = {m->argsrepr, m->kwargsrepr,	m->root_id, m->parent_id,
				  m->eta_text, m->expires_text, m->shadow}; /* inspect active, task-received: as sent */
	for (size_t i = 0; t && (i < 2 || queue_task_events()) && i < sizeof(ek) / sizeof(ek[0]); i++)
		if (ev[i])
			json_object_set_new_nocheck(t, ek[i], json_string_nocheck(ev[i]));
	if (t && m->time_limit > 0)
		json_object_set_new(t, "hard_deadline_ms", json_integer(now + (int64_t)(m->time_limit * 1000.0)));
	if (t && m->soft_time_limit > 0)
		json_object_set_new(t, "soft_deadline_ms", json_integer(now + (int64_t)(m->soft_time_limit * 1000.0)));
	return t;
}

/* The next message to run from the batch, acking duplicates and holding future etas. */
static bool next_from_batch(struct rworker *w)
{
	while (w->count > 0) {
		rw_prefetch_check(w); /* (after a long task: the rest of the batch may be another's now) */
		struct rmsg *m = &w->buf[w->head];
		rw_buf_popped(w);
		if (m->gone) {
			rmsg_free(m); /* not ours any more: another worker's, or the sweep's to restore */
		} else if (m->skip && m->ready) {
			rw_settle_ready(w, m);
			rmsg_free(m);
		} else if (m->skip) {
			rw_ack(w, m->m.delivery_tag);
			if (m->locked)
				rw_unlock(w, &m->m);
			rmsg_free(m);
		} else if (m->m.eta_ms > clock_wall_ms() + 5) {
			if (queue_task_events()) { /* Celery 5.2: on receipt, with its eta; not again when due */
				json_t *t = task_json(w, &m->m);
				queue_emit("received", t, NULL);
				json_decref(t);
			}
			char lock[CELERY_ID_KEY_MAX];
			rw_lock_key(&m->m, lock, sizeof(lock));
			redis_hold(w->queue, m->m.delivery_tag, m->text, m->len, m->m.eta_ms, m->locked ? lock : NULL,
				   m->owner);
			m->text = NULL;
			rmsg_free(m);
		} else {
			w->cur = *m;
			w->has_cur = true;
			memset(m, 0, sizeof(*m));
			return true;
		}
	}
	return false;
}

static json_t *rw_reserve(void *wp)
{
	struct rworker *w = wp;
	if (w->has_cur)
		rmsg_free(&w->cur), w->has_cur = false;
	w->hb_ms = w->started_ms = clock_wall_ms();
	w->started_ns = clock_mono_ns();
	for (int round = 0; round < 2; round++) {
		if (next_from_batch(w))
			return task_json(w, &w->cur.m);
		char *text;
		size_t len;
		char tag[CELERY_ID_BYTES + 1], owner[64];
		int64_t next_due;
		if (redis_hold_take(w->queue, &text, &len, tag, owner, &next_due)) {
			char why[256];
			struct rmsg *m = &w->cur;
			if (celery_envelope_decode(text, len, &m->m, why, sizeof(why)) != SOMA_OK) {
				free(text);
				continue;
			}
			m->text = text, m->len = len, w->has_cur = true;
			m->locked = owner[0] != '\0'; /* (taken by whichever worker popped it) */
			memcpy(m->owner, owner, sizeof(m->owner));
			json_t *t = task_json(w, &m->m);
			if (t) /* its task-received went out when it was held */
				json_object_set_new_nocheck(t, "received_sent", json_true());
			return t;
		}
		if (queue_stopping())
			return NULL;
		int64_t wait = next_due - clock_wall_ms();
		if (fetch(w, round == 0 ? (wait < 1000 ? (wait < 10 ? 10 : wait) : 1000) : 0) == 0)
			return NULL;
	}
	return NULL;
}

/* Keeps the running message's unacked entry fresh (ZADD XX: no sweep restores it) and its
 * run-lock held, every third of the visibility timeout; and those of the prefetched ones. */
static void rw_heartbeat(void *wp, struct task_ctx *ctx)
{
	struct rworker *w = wp;
	int64_t now = clock_wall_ms();
	(void)ctx;
	if (!w->has_cur || now - w->hb_ms < queue_visibility_ms() / 3)
		return;
	w->hb_ms = now;
	char score[32], lock[CELERY_ID_KEY_MAX], px[24];
	redis_unacked_score(now, score, sizeof(score));
	rw_lock_key(&w->cur.m, lock, sizeof(lock));
	snprintf(px, sizeof(px), "%lld", (long long)queue_visibility_ms());
	const char *z[] = {"ZADD", "unacked_index", "XX", score, w->cur.m.delivery_tag}, *p[] = {"PEXPIRE", lock, px};
	size_t zl[] = {4, 13, 2, strlen(score), strlen(w->cur.m.delivery_tag)}, pl[] = {7, strlen(lock), strlen(px)};
	if (redis_append_argv(w->c, 5, z, zl) == SOMA_OK)
		w->owed++;
	if (redis_append_argv(w->c, 3, p, pl) == SOMA_OK)
		w->owed++;
	rw_prefetch_keep(w, now); /* and the claims of the messages waiting behind it */
	rw_send(w);
}

/* The redis driver; settle, requeue and revoke are in redis_settle.c. */
enum task_outcome redis_settle(void *w, struct task_ctx *ctx, enum task_outcome outcome);
void redis_requeue(void *w, json_t *task);
void redis_revoke(void *w, json_t *task, const char *why);

const struct queue_driver queue_redis_driver = {
	.name = "redis",
	.blocking = true,
	.open = rw_open,
	.close = rw_close,
	.reserve = rw_reserve,
	.settle = redis_settle,
	.heartbeat = rw_heartbeat,
	.requeue = redis_requeue,
	.revoke = redis_revoke,
};
