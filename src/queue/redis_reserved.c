/*
 * redis_reserved.c - what `celery inspect reserved` lists on the redis driver: the messages each
 * worker thread holds prefetched (struct rworker.buf) behind the task it runs, delivered to this
 * node and not started (Celery 5.2: reserved_requests less active_requests).
 *
 * DESIGN: a worker thread owns its buffer; another thread may only read the part between head
 * and head + count, under the worker's own buf_lock. The worker thread moves those bounds under it
 * (rw_buf_pushed after a slot is filled, rw_buf_popped before the slot is emptied or moved), and
 * forgets its buffer here before freeing it, so a reader sees only filled slots, whose decoded
 * message does not change while listed. The list of buffers has a lock of this file, taken only
 * to register, forget and list; a worker's buf_lock is taken twice per message, by that worker
 * alone but for a rare `inspect reserved` (one lock for all workers had them contend on every
 * message). Lock order: the list's, then a buffer's. Messages to skip (a duplicate, or one whose
 * claim lapsed) and those waiting for their eta (`inspect scheduled` lists them once held) are
 * left out.
 */
#include <pthread.h>

#include "core/clock.h"
#include "queue/redis_int.h"

#define RESERVED_WORKERS_MAX 256 /* as worker.c's MAX_WORKERS */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct rworker *listed[RESERVED_WORKERS_MAX]; /* registered buffers (lock); NULL: free slot */

void rw_reserved_register(struct rworker *w)
{
	pthread_mutex_init(&w->buf_lock, NULL);
	pthread_mutex_lock(&lock);
	for (int i = 0; i < RESERVED_WORKERS_MAX; i++) {
		if (!listed[i]) {
			listed[i] = w;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

void rw_reserved_forget(struct rworker *w)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < RESERVED_WORKERS_MAX; i++)
		if (listed[i] == w)
			listed[i] = NULL;
	pthread_mutex_unlock(&lock); /* no lister reads w after this: each reads it under the list's lock */
}

void rw_buf_pushed(struct rworker *w)
{
	pthread_mutex_lock(&w->buf_lock);
	w->count++;
	pthread_mutex_unlock(&w->buf_lock);
}

void rw_buf_popped(struct rworker *w)
{
	pthread_mutex_lock(&w->buf_lock);
	w->head = (w->head + 1) % REDIS_PREFETCH_MAX;
	w->count--;
	pthread_mutex_unlock(&w->buf_lock);
}

/* One prefetched message as Celery 5.2's Request.info() (not started: no time_start, no pid). */
static json_t *reserved_one(const struct rworker *w, const struct celery_msg *m, const char *hostname)
{
	return json_pack("{s:s, s:s, s:o, s:o, s:s, s:s, s:n, s:b, s:{s:s, s:s, s:i, s:b}, s:n}", "id", m->id, "name",
			 m->task, "args", m->args ? json_deep_copy(m->args) : json_array(), "kwargs",
			 m->kwargs ? json_deep_copy(m->kwargs) : json_object(), "type", m->task, "hostname", hostname,
			 "time_start", "acknowledged", 0, "delivery_info", "exchange", m->exchange ? m->exchange : "",
			 "routing_key", m->routing_key ? m->routing_key : w->queue, "priority", m->priority,
			 "redelivered", 0, "worker_pid");
}

json_t *queue_reserved_json(const char *hostname)
{
	json_t *out = json_array();
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&lock);
	for (int i = 0; out && i < RESERVED_WORKERS_MAX; i++) {
		struct rworker *w = listed[i];
		if (!w)
			continue;
		pthread_mutex_lock(&w->buf_lock);
		for (int k = 0; k < w->count; k++) {
			const struct rmsg *m = &w->buf[(w->head + k) % REDIS_PREFETCH_MAX];
			if (m->skip || m->gone || m->m.eta_ms > now || !m->m.id || !m->m.task)
				continue;
			json_t *one = reserved_one(w, &m->m, hostname);
			if (one)
				json_array_append_new(out, one);
		}
		pthread_mutex_unlock(&w->buf_lock);
	}
	pthread_mutex_unlock(&lock);
	return out;
}
