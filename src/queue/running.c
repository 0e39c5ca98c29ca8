/*
 * running.c - what the rest of the process asks of the tasks running on this process's workers:
 * their time limits (the maintenance tick), their delivery tags, a session's or one task's
 * cancellation (also of a task still queued: kept until a worker here starts it; asked here or,
 * through a cancel notice on the bus, by another node's gateway), Celery's revoke with terminate
 * of a running task (queue_terminate: a cancel that ends the task REVOKED), their
 * count, what `celery inspect active` lists. Each is one walk of queue_pool_each_running (worker.c), under the pool's
 * lock.
 *
 * DESIGN: the redis driver's maintenance thread ticks the time limits (redis_restore.c); the
 * local driver has no such thread, so queue_ticker_start gives it one that only ticks them,
 * every 100 ms as the redis one does.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "queue/queue_int.h"

#define TICK_MS 100

/* Marks a task past its soft (1) or hard (2) deadline, asking it to stop (a thread cannot be killed). */
static void tick_one(struct task_ctx *t, void *arg)
{
	int64_t now_ms = *(const int64_t *)arg;
	if (t->limit_hit == 2)
		return;
	int hit = t->hard_deadline_ms && now_ms >= t->hard_deadline_ms	 ? 2
		  : t->soft_deadline_ms && now_ms >= t->soft_deadline_ms ? 1
									 : 0;
	if (hit > t->limit_hit) {
		t->limit_hit = hit;
		t->cancel = true;
	}
}

void queue_pool_tick(int64_t now_ms)
{
	queue_pool_each_running(tick_one, &now_ms);
}

static pthread_t ticker;
static atomic_bool ticker_stop;
static bool ticker_running; /* queue_start / queue_stop's thread only */

static void *tick_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-q-tick");
	while (!atomic_load(&ticker_stop)) {
		queue_pool_tick(clock_wall_ms());
		struct timespec ts = {0, TICK_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

enum soma_err queue_ticker_start(void)
{
	atomic_store(&ticker_stop, false);
	if (pthread_create(&ticker, NULL, tick_main, NULL) != 0) {
		log_error("queue", "cannot start the time-limit thread of the local queue");
		return SOMA_ERR_INTERNAL;
	}
	ticker_running = true;
	return SOMA_OK;
}

void queue_ticker_stop(void)
{
	if (!ticker_running)
		return;
	atomic_store(&ticker_stop, true);
	pthread_join(ticker, NULL);
	ticker_running = false;
}

struct tags_walk {
	void (*fn)(const char *tag, void *arg);
	void *arg;
};

static void tag_one(struct task_ctx *t, void *arg)
{
	struct tags_walk *walk = arg;
	if (t->tag)
		walk->fn(t->tag, walk->arg);
}

void queue_pool_running_tags(void (*fn)(const char *tag, void *arg), void *arg)
{
	struct tags_walk walk = {fn, arg};
	queue_pool_each_running(tag_one, &walk);
}

struct cancel_walk {
	const char *tenant, *session_id, *task_id; /* a session's tasks, or the one task_id */
	bool keep_partial;
	int n; /* tasks asked to stop */
};

static void cancel_one(struct task_ctx *t, void *arg)
{
	struct cancel_walk *walk = arg;
	const char *have = walk->task_id ? t->id : t->session_id,
		   *want = walk->task_id ? walk->task_id : walk->session_id;
	if (have && t->tenant && strcmp(have, want) == 0 && strcmp(t->tenant, walk->tenant) == 0 && !t->cancel) {
		t->keep_partial = walk->keep_partial;
		t->cancel = true;
		walk->n++;
	}
}

int queue_cancel_session(const char *tenant, const char *session_id, bool keep_partial)
{
	struct cancel_walk walk = {tenant, session_id, NULL, keep_partial, 0};
	queue_pool_each_running(cancel_one, &walk);
	return walk.n;
}

struct terminate_walk {
	const char *task_id; /* the running task to stop */
	int signum;	     /* the signal the revoke named */
	int n;		     /* tasks asked to stop */
};

static void terminate_one(struct task_ctx *t, void *arg)
{
	struct terminate_walk *walk = arg;
	if (!t->id || strcmp(t->id, walk->task_id) != 0)
		return;
	if (!t->terminated) { /* (a second terminate finds it stopping: the first signal stays) */
		t->terminated = walk->signum > 0 ? walk->signum : 15;
		t->keep_partial = true;
		t->cancel = true;
	}
	walk->n++;
}

int queue_terminate(const char *task_id, int signum)
{
	struct terminate_walk walk = {task_id, signum, 0};
	if (task_id)
		queue_pool_each_running(terminate_one, &walk);
	return walk.n;
}

static void session_of(struct task_ctx *t, void *arg)
{
	if (t->session_id && t->session_id[0])
		json_array_append_new(arg, json_string(t->session_id));
}

void queue_running_sessions(json_t *out)
{
	queue_pool_each_running(session_of, out);
}

/* Cancels asked for tasks that were not running here (still queued): a worker of this process
 * that starts one stops it at once (queue_cancel_pending_apply). A small table; entries expire. */
#define PENDING_MAX    64
#define PENDING_TTL_MS (10 * 60 * 1000)
static struct {
	char tenant[65], id[CELERY_ID_BYTES + 1];
	int64_t until_ms; /* 0: a free slot */
} pending[PENDING_MAX];
static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int npending; /* slots in use (a task start reads it without the lock) */

/* Removes (take) or adds the entry of tenant's task_id; true when it was there. */
static bool pending_edit(const char *tenant, const char *task_id, bool take)
{
	int64_t now = clock_wall_ms();
	int free_slot = -1, oldest = 0;
	bool found = false;
	pthread_mutex_lock(&pending_lock);
	for (int i = 0; i < PENDING_MAX; i++) {
		if (pending[i].until_ms && pending[i].until_ms <= now) { /* expired */
			pending[i].until_ms = 0;
			atomic_fetch_sub(&npending, 1);
		}
		if (!pending[i].until_ms) {
			free_slot = free_slot < 0 ? i : free_slot;
			continue;
		}
		if (pending[i].until_ms < pending[oldest].until_ms || !pending[oldest].until_ms)
			oldest = i;
		if (!found && strcmp(pending[i].id, task_id) == 0 && strcmp(pending[i].tenant, tenant) == 0) {
			found = true;
			pending[i].until_ms = 0;
			atomic_fetch_sub(&npending, 1);
			free_slot = i;
		}
	}
	if (!take) { /* (the oldest entry makes room when the table is full) */
		int i = free_slot >= 0 ? free_slot : oldest;
		if (!pending[i].until_ms)
			atomic_fetch_add(&npending, 1);
		snprintf(pending[i].tenant, sizeof(pending[i].tenant), "%s", tenant);
		snprintf(pending[i].id, sizeof(pending[i].id), "%s", task_id);
		pending[i].until_ms = now + PENDING_TTL_MS;
	}
	pthread_mutex_unlock(&pending_lock);
	return found;
}

int queue_cancel_task(const char *tenant, const char *task_id)
{
	/* recorded first, then the walk: a worker sets its current task, then looks here (worker.c),
	 * so a task starting meanwhile is found by one or the other */
	(void)pending_edit(tenant, task_id, false);
	struct cancel_walk walk = {tenant, NULL, task_id, true, 0};
	queue_pool_each_running(cancel_one, &walk);
	if (walk.n)
		(void)pending_edit(tenant, task_id, true);
	return walk.n;
}

void queue_cancel_pending_apply(struct task_ctx *t)
{
	if (atomic_load(&npending) == 0 || !t->id || !t->tenant || !pending_edit(t->tenant, t->id, true))
		return;
	t->keep_partial = true;
	t->cancel = true;
}

bool queue_serves(const char *queue)
{
	json_t *pools = queue_pools_json();
	json_int_t n = json_integer_value(json_object_get(json_object_get(pools, queue), "consumers"));
	json_decref(pools);
	return n > 0;
}

static void count_one(struct task_ctx *t, void *arg)
{
	(void)t;
	(*(int *)arg)++;
}

int queue_running(void)
{
	int n = 0;
	queue_pool_each_running(count_one, &n);
	return n;
}

struct active_walk {
	json_t *out;
	const char *hostname;
	bool safe;
};

/* args or kwargs of a running task: the value (a copy), or with safe its repr as sent
 * (argsrepr / kwargsrepr from the message headers), else its JSON text. */
static json_t *active_arg(const struct task_ctx *t, const char *key, const char *repr_key, bool safe, bool array)
{
	json_t *v = json_object_get(t->payload, key), *repr = json_object_get(t->task, repr_key);
	if (!safe)
		return (array ? json_is_array(v) : json_is_object(v)) ? json_deep_copy(v)
		       : array					      ? json_array()
								      : json_object();
	if (json_is_string(repr)) /* (a copy: no reference taken on another thread's task) */
		return json_string(json_string_value(repr));
	char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_t *out = json_string(text ? text : (array ? "()" : "{}"));
	free(text);
	return out;
}

/* One running task as Celery 5.2's Request.info(safe) describes it (worker/request.py). */
static void active_one(struct task_ctx *t, void *arg)
{
	struct active_walk *walk = arg;
	json_t *name = json_object_get(t->task, "name"), *start = json_object_get(t->task, "time_start");
	json_array_append_new(
		walk->out, json_pack("{s:s, s:O?, s:o, s:o, s:O?, s:s, s:O?, s:b, s:{s:s, s:s?, s:i, s:b}, s:i}", "id",
				     t->id, "name", name, "args", active_arg(t, "args", "argsrepr", walk->safe, true),
				     "kwargs", active_arg(t, "kwargs", "kwargsrepr", walk->safe, false), "type", name,
				     "hostname", walk->hostname, "time_start", json_is_number(start) ? start : NULL,
				     "acknowledged", 1, "delivery_info", "exchange", "", "routing_key", t->queue,
				     "priority", 0, "redelivered", 0, "worker_pid", (int)getpid()));
}

json_t *queue_active_json(const char *hostname, bool safe)
{
	struct active_walk walk = {json_array(), hostname, safe};
	if (walk.out)
		queue_pool_each_running(active_one, &walk);
	return walk.out;
}
