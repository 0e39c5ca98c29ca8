/*
 * redis_prefetch.c - the redis driver's prefetched messages (struct rworker.buf) that waited long
 * enough for their claim on them to lapse: checked again, in one round trip, before one of them
 * runs or is held for its eta.
 *
 * DESIGN: a batch is recorded in unacked_index with the time of its pop, and each of its messages
 * gets a run-lock for visibility - 2 s (dedupe in redis_consume.c). Nobody refreshes either while
 * the messages wait behind a long task, so after the visibility timeout a sweep restores them and
 * another worker runs them; the buffer's copies then ran a second time. So a message that has
 * waited half its run-lock's life (rmsg.fresh_ms) is checked, with every other such message of
 * the buffer, by one script each: when its unacked entry is still there and its run-lock still
 * holds this worker's id, nobody else can run it (another taker needs the lock), and the script
 * extends the lock and refreshes the entry's score in the same step; otherwise the message is
 * `gone`: dropped from the buffer, neither run nor acked (an ack by its tag would remove another
 * taker's entry). A message whose lock lapsed before anyone restored it is dropped too: it still
 * has its unacked entry, and a sweep brings it back. While the task before them heartbeats, the
 * same script keeps the buffer's claims fresh (rw_prefetch_keep), so a long task that heartbeats
 * loses none of them to the sweep. Runs on the worker's thread only.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "queue/redis_int.h"

/* KEYS: unacked, unacked_index, the run-lock; ARGV: tag, worker id, lock ms, score. 1: still
 * ours (extended, refreshed), 0: gone. */
static const char keep_script[] =
	"if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 or redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end "
	"redis.call('PEXPIRE', KEYS[3], ARGV[3]) "
	"redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[1]) "
	"return 1";

int64_t rw_lock_ms(void)
{
	int64_t px = queue_visibility_ms() - 2000;
	return px < 1000 ? 1000 : px;
}

/* Whether m is to be checked before it runs: waiting, not done, claimed longer ago than half its
 * run-lock's life. */
static bool stale(const struct rmsg *m, int64_t now)
{
	return !m->skip && !m->gone && now - m->fresh_ms >= rw_lock_ms() / 2;
}

/* Appends the keep script of m; true when appended. */
static bool append_keep(struct rworker *w, const struct rmsg *m, const char *px, const char *score)
{
	char lock[CELERY_ID_KEY_MAX];
	rw_lock_key(&m->m, lock, sizeof(lock));
	const char *argv[] = {"EVAL", keep_script,	 "3",	"unacked", "unacked_index",
			      lock,   m->m.delivery_tag, w->id, px,	   score};
	size_t lens[] = {4,
			 sizeof(keep_script) - 1,
			 1,
			 7,
			 13,
			 strlen(lock),
			 strlen(m->m.delivery_tag),
			 strlen(w->id),
			 strlen(px),
			 strlen(score)};
	return redis_append_argv(w->c, 10, argv, lens) == SOMA_OK;
}

void rw_prefetch_keep(struct rworker *w, int64_t now)
{
	char px[24], score[32];
	snprintf(px, sizeof(px), "%lld", (long long)rw_lock_ms());
	redis_unacked_score(now, score, sizeof(score));
	for (int i = 0; i < w->count; i++) {
		struct rmsg *m = &w->buf[(w->head + i) % REDIS_PREFETCH_MAX];
		/* its lock surely still holds w's id (a second to spare): the script extends it */
		if (m->skip || m->gone || !m->locked || now - m->fresh_ms >= rw_lock_ms() - 1000)
			continue;
		if (append_keep(w, m, px, score)) {
			w->owed++;
			m->fresh_ms = now;
		}
	}
}

void rw_prefetch_check(struct rworker *w)
{
	int64_t now = clock_wall_ms();
	bool any = false;
	for (int i = 0; i < w->count && !any; i++)
		any = stale(&w->buf[(w->head + i) % REDIS_PREFETCH_MAX], now);
	if (!any)
		return;
	rw_drain(w); /* no reply owed: the next ones are the scripts' */
	char px[24], score[32];
	snprintf(px, sizeof(px), "%lld", (long long)rw_lock_ms());
	redis_unacked_score(now, score, sizeof(score));
	int sent[REDIS_PREFETCH_MAX], nsent = 0, kept = 0;
	for (int i = 0; i < w->count; i++) {
		int at = (w->head + i) % REDIS_PREFETCH_MAX;
		if (!stale(&w->buf[at], now))
			continue;
		w->buf[at].gone = true; /* until Redis says it is still ours */
		if (append_keep(w, &w->buf[at], px, score))
			sent[nsent++] = at;
	}
	for (int k = 0; k < nsent; k++) {
		redisReply *r = redis_get_reply(w->c);
		if (!r)
			break; /* the connection is lost: the rest stay gone (a sweep brings them back) */
		struct rmsg *m = &w->buf[sent[k]];
		if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
			m->gone = false;
			m->fresh_ms = now;
			kept++;
		}
		freeReplyObject(r);
	}
	if (kept < nsent)
		log_info("queue",
			 "%d prefetched message(s) on %s waited past their run-lock and are not run here (restored "
			 "to the queue, or left to the visibility restore); %d kept",
			 nsent - kept, w->queue, kept);
}
