/*
 * worker.c - the worker thread pools (see queue.h) over the driver chosen by queue.driver:
 * local.c (the store's tasks table) or redis_*.c (Celery messages). See queue_int.h.
 *
 * DESIGN: a pool per queue grows on demand up to its concurrency; each thread holds its own
 * driver state (opened on the thread, closed when it exits: the redis driver then gives back
 * what it prefetched). Before a task runs: the per-task rate limit (the wait holds the task, its
 * reservation kept alive); then revoked or expired -> REVOKED without running; policy (task.run).
 * A task stopped by a revoke with terminate (running.c) ends REVOKED instead of its outcome.
 * The task's lifecycle is reported through queue_emit().
 * An idle worker may be handed a chat task before its message commits (handoff.h). Each worker
 * sleeps on its own condition variable: a hand-off wakes the one worker it chose, and a commit
 * that enqueued tasks (queue_notify) one idle worker per queue; a worker that reserved a task
 * wakes one more of its queue (there may be more), so a batch of k tasks costs k + 1 reserves
 * rather than one per idle worker.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/utf8.h"
#include "queue/handoff.h"
#include "queue/hooks.h"
#include "queue/queue_int.h"
#include "queue/worker_steps.h"

#define MAX_WORKERS  256
#define IDLE_POLL_MS 1000 /* wake up even without a notify: delayed retries, expired reservations */

/* A queue's pool grows on demand: one worker at start, one more whenever all are busy, up to
 * its concurrency. An idle process keeps one thread per queue, and a busy one has them all. */
struct queue_slot {
	char name[64]; /* queue name */
	int max;       /* queue.<name>.concurrency */
	int count;     /* workers started */
	int busy;      /* workers running a task */
	/* tasks finished per second over the last minute: ring[s % 60] counts second ring_sec[...] */
	int64_t ring_sec[60];
	int ring[60];
};

#define MAX_QUEUES 16

struct worker {
	struct queue_slot *slot;  /* its queue */
	pthread_t tid;		  /* the thread */
	char queue[64];		  /* queue it serves */
	char id[64];		  /* worker id recorded on reserved tasks */
	struct task_ctx *current; /* running task (guarded by lock), or NULL */
	void *drv;		  /* driver state (the worker thread's own) */
	bool idle;		  /* waiting for a notify (lock): queue_handoff may give it a task */
	bool woken;		  /* signalled to reserve (lock): leaves its idle wait */
	json_t *handed;		  /* a task handed over by queue_handoff (lock), not yet taken */
	struct commit_gate *gate; /* the handed task's commit gate (lock) */
	pthread_cond_t cv;	  /* its idle wait: a hand-off wakes this worker only (with lock) */
};

static struct worker workers[MAX_WORKERS];
static int nworkers;
static struct store *store;
static int visibility_ms;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool stopping;
static unsigned long notify_gen;
static atomic_int idle_count; /* workers with idle set: read without the lock by queue_handoff_possible */
static struct metric_family *tasks_total, *handed_total;
static struct queue_slot slots[MAX_QUEUES];
static int nslots;
static char hostname[64] = "host";
static const struct queue_driver *drv = &queue_local_driver;
/* queue.worker_nice: a worker thread's nice is base_nice (queue_start's thread) plus the key, set
 * absolutely, since a worker that spawns another passes its own nice on */
static int base_nice, worker_nice;

struct store *queue_store(void)
{
	return store;
}

int64_t queue_visibility_ms(void)
{
	return visibility_ms;
}

bool queue_stopping(void)
{
	pthread_mutex_lock(&lock);
	bool s = stopping;
	pthread_mutex_unlock(&lock);
	return s;
}

static void *worker_main(void *arg);

/* Starts one more worker for q unless it has its maximum or we are stopping. Lock held. */
static enum soma_err spawn_locked(struct queue_slot *q)
{
	if (stopping || q->count >= q->max || nworkers >= MAX_WORKERS)
		return SOMA_ERR_LIMIT;
	struct worker *w = &workers[nworkers];
	memset(w, 0, sizeof(*w));
	pthread_cond_init(&w->cv, NULL);
	w->slot = q;
	snprintf(w->queue, sizeof(w->queue), "%s", q->name);
	snprintf(w->id, sizeof(w->id), "%.24s-%d-%.16s-%d", hostname, (int)getpid(), q->name, q->count);
	if (pthread_create(&w->tid, NULL, worker_main, w) != 0)
		return SOMA_ERR_INTERNAL; /* (the slot is reused: its cv is initialised again) */
	nworkers++;
	q->count++;
	return SOMA_OK;
}

/* Sets w->idle (lock held), keeping idle_count in step. */
static void set_idle_locked(struct worker *w, bool idle)
{
	if (w->idle != idle)
		atomic_fetch_add(&idle_count, idle ? 1 : -1);
	w->idle = idle;
}

/* Wakes up to max idle workers of queue (NULL: of any queue) to reserve (lock held). */
static void wake_idle_locked(const char *queue, int max)
{
	for (int i = 0; i < nworkers && max > 0; i++) {
		struct worker *w = &workers[i];
		if (!w->idle || (queue && strcmp(w->queue, queue) != 0))
			continue;
		set_idle_locked(w, false); /* the next wake picks another */
		w->woken = true;
		pthread_cond_signal(&w->cv);
		max--;
	}
}

void queue_notify(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	notify_gen++;
	for (int q = 0; q < nslots; q++)
		wake_idle_locked(slots[q].name, 1);
	pthread_mutex_unlock(&lock);
	queue_relay_wake(NULL); /* redis driver: the committed rows are the relay's to publish */
}

static void count(const char *name, const char *outcome)
{
	const char *v[] = {queue_task_label(name), outcome};
	if (tasks_total)
		metric_add(metric_series(tasks_total, v), 1);
}

/* One more task finished on q this second. Lock held. */
static void count_finished_locked(struct queue_slot *q)
{
	int64_t sec = clock_wall_ms() / 1000;
	int i = (int)(sec % 60);
	if (q->ring_sec[i] != sec) {
		q->ring_sec[i] = sec;
		q->ring[i] = 0;
	}
	q->ring[i]++;
}

/* True when it ended task REVOKED: revoked or expired, not run (signum 0), or terminated (signum). */
static bool revoked(struct worker *w, json_t *task, const char *id, const char *name, int signum)
{
	bool expired = !signum && queue_task_expired(task);
	if (!signum && !expired && !queue_is_revoked(id))
		return false;
	drv->revoke(w->drv, task, signum ? "terminated" : expired ? "expired" : "revoked");
	queue_emit_revoked(task, signum, expired);
	count(name, "revoked");
	return true;
}

/* Runs one task (gate: handed over before its message committed, else NULL); returns the next
 * task when the handler reserved it together with its ack, else NULL. */
static json_t *run_task(struct worker *w, json_t *task, struct commit_gate *gate)
{
	const char *name = json_string_value(json_object_get(task, "name"));
	const char *id = json_string_value(json_object_get(task, "id")), *label = name ? name : "?";
	queue_emit_received(task, gate);
	struct task_ctx ctx = {.task = task,
			       .id = id,
			       .tenant = json_string_value(json_object_get(task, "tenant")),
			       .session_id = json_string_value(json_object_get(task, "session_id")),
			       .payload = json_object_get(task, "payload"),
			       .store = store,
			       .worker = w->id,
			       .lease_renewed_ms = clock_wall_ms(),
			       .queue = w->queue,
			       .visibility_ms = visibility_ms,
			       .store_ack = drv == &queue_local_driver,
			       .drv = w->drv,
			       .tag = json_string_value(json_object_get(task, "tag")),
			       .gate = gate};
	int64_t wait_from = clock_wall_ms(); /* the rate limit, then revoked / expired (Celery's order) */
	if (!queue_rate_wait(&ctx, name ? name : "")) {
		if (!gate || commit_gate_wait(gate, NULL) != GATE_FAILED)
			drv->requeue(w->drv, task); /* stopping: back unstarted */
		return NULL;
	}
	if (revoked(w, task, id ? id : "", label, 0))
		return NULL;
	queue_task_deadlines(&ctx, clock_wall_ms() - wait_from);
	task_handler_fn fn = queue_find_handler(name ? name : "");
	pthread_mutex_lock(&lock);
	w->current = &ctx;
	pthread_mutex_unlock(&lock);
	queue_cancel_pending_apply(&ctx); /* a tasks/cancel came while it was queued */
	uint64_t t0 = clock_mono_ns();
	enum task_outcome outcome = TASK_FAIL;
	if (!gate)
		queue_emit("started", task, NULL);
	if (fn && queue_allowed_to_run(&ctx, name))
		outcome = fn(&ctx);
	else if (!fn)
		snprintf(ctx.error, sizeof(ctx.error), "no handler for task %s on this worker", label);
	if (ctx.limit_hit && !ctx.shutdown) { /* Celery: SoftTimeLimitExceeded / TimeLimitExceeded */
		snprintf(ctx.error, sizeof(ctx.error), "%s time limit exceeded", ctx.limit_hit == 2 ? "hard" : "soft");
		outcome = TASK_FAIL;
	}
	pthread_mutex_lock(&lock);
	w->current = NULL;
	count_finished_locked(w->slot);
	pthread_mutex_unlock(&lock);
	double runtime = (double)(clock_mono_ns() - t0) / 1e9;
	if (gate && commit_gate_wait(gate, NULL) == GATE_FAILED) { /* the task never existed: nothing to settle */
		log_debug("queue", "task %s: its message did not commit; dropped", ctx.id);
		json_decref(ctx.result);
		json_decref(ctx.next_task);
		return NULL;
	}
	utf8_repair(ctx.error); /* a message cut at the buffer's end, or a task's own bytes: stored as JSON */
	int signum = queue_terminated_signum(&ctx, outcome); /* REVOKED as Celery's mark_as_revoked('terminated') */
	if (!signum || !revoked(w, task, id, label, signum)) {
		outcome = drv->settle(w->drv, &ctx, outcome);
		queue_emit_outcome(&ctx, outcome, runtime);
		count(label, outcome == TASK_RETRY ? "retry" : outcome == TASK_FAIL ? "failure" : "success");
	}
	json_decref(ctx.result);
	log_debug("queue", "task %s (%s) finished in %.1f ms", ctx.id, label, runtime * 1e3);
	return ctx.next_task;
}

/* Runs task (and what each handler hands back) with the worker counted busy. Takes task and gate. */
static void run_chain(struct worker *w, json_t *task, struct commit_gate *gate)
{
	pthread_mutex_lock(&lock);
	if (++w->slot->busy == w->slot->count)
		(void)spawn_locked(w->slot); /* everyone is busy: one more for the next task */
	else if (!gate)
		wake_idle_locked(w->queue, 1); /* reserved: one more may wait */
	pthread_mutex_unlock(&lock);
	while (task) { /* a handler may hand back the next task, reserved with its ack */
		json_t *next = run_task(w, task, gate);
		json_decref(task);
		commit_gate_unref(gate);
		gate = NULL;
		task = next;
		if (task && queue_stopping()) { /* stopping: give it back untouched */
			drv->requeue(w->drv, task);
			json_decref(task);
			task = NULL;
		}
	}
	pthread_mutex_lock(&lock);
	w->slot->busy--;
	pthread_mutex_unlock(&lock);
}

/* Waits for a notify (or IDLE_POLL_MS) as an idle worker; returns a task handed over meanwhile
 * (*gate its gate), else NULL. */
static json_t *idle_wait(struct worker *w, unsigned long gen, struct commit_gate **gate)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += IDLE_POLL_MS / 1000;
	pthread_mutex_lock(&lock);
	set_idle_locked(w, true);
	while (!stopping && gen == notify_gen && !w->handed && !w->woken) {
		if (pthread_cond_timedwait(&w->cv, &lock, &until) != 0)
			break;
	}
	set_idle_locked(w, false);
	w->woken = false;
	json_t *task = w->handed;
	*gate = w->gate;
	w->handed = NULL;
	w->gate = NULL;
	pthread_mutex_unlock(&lock);
	return task;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char thread_name[16];
	snprintf(thread_name, sizeof(thread_name), "soma-w-%.8s", w->queue);
	pthread_setname_np(pthread_self(), thread_name);
	/* lower this thread only (Linux: a thread id as PRIO_PROCESS); no privilege needed to lower */
	if (worker_nice > base_nice && setpriority(PRIO_PROCESS, (id_t)gettid(), worker_nice) != 0)
		log_warn("queue", "worker %s keeps the process's priority (setpriority: %s)", w->id, strerror(errno));
	w->drv = drv->open(w->queue, w->id);
	if (!w->drv) {
		log_error("queue", "worker %s cannot start its %s driver state", w->id, drv->name);
		return NULL;
	}
	for (;;) {
		pthread_mutex_lock(&lock);
		bool stop = stopping;
		unsigned long gen = notify_gen;
		pthread_mutex_unlock(&lock);
		if (stop)
			break;
		json_t *task = drv->reserve(w->drv);
		struct commit_gate *gate = NULL;
		if (!task && !drv->blocking)
			task = idle_wait(w, gen, &gate);
		if (task) /* a handed task whose commit then failed is dropped by run_task */
			run_chain(w, task, gate);
	}
	drv->close(w->drv);
	w->drv = NULL;
	return NULL;
}

bool queue_handoff_possible(void)
{
	return drv == &queue_local_driver && atomic_load(&idle_count) > 0 && cfg_bool(CFG_QUEUE_EARLY_START);
}

bool queue_handoff(json_t *task, struct commit_gate *gate, char *worker, size_t cap, int64_t *visibility)
{
	const char *queue = json_string_value(json_object_get(task, "queue"));
	if (!queue || drv != &queue_local_driver || !cfg_bool(CFG_QUEUE_EARLY_START))
		return false;
	bool taken = false;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nworkers && !stopping && !taken; i++) {
		struct worker *w = &workers[i];
		if (!w->idle || w->handed || strcmp(w->queue, queue) != 0)
			continue;
		w->handed = json_incref(task);
		w->gate = commit_gate_ref(gate);
		set_idle_locked(w, false); /* no second hand-off before it wakes */
		snprintf(worker, cap, "%s", w->id);
		*visibility = visibility_ms;
		taken = true; /* not woken yet: queue_handoff_start does, once the commit is submitted */
		if (handed_total)
			metric_add(metric_series(handed_total, NULL), 1);
	}
	pthread_mutex_unlock(&lock);
	return taken;
}

void queue_handoff_start(const char *worker)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nworkers; i++) {
		if (workers[i].handed && strcmp(workers[i].id, worker) == 0)
			pthread_cond_signal(&workers[i].cv); /* this worker only: the others sleep on */
	}
	pthread_mutex_unlock(&lock);
}

enum soma_err queue_start(struct store *st, const struct queue_def *queues, int nqueues, int visibility_s,
			  int backoff_ms)
{
	static const char *const labels[] = {"task", "outcome", NULL};
	tasks_total = metrics_counter("soma_tasks_total", "Tasks run by this process's workers, by outcome.", labels);
	handed_total = metrics_counter("soma_tasks_handed_total",
				       "Chat tasks handed to an idle worker before their message committed.", NULL);
	store = st;
	visibility_ms = visibility_s * 1000;
	queue_backoff_init(backoff_ms);
	stopping = false;
	errno = 0;
	base_nice = getpriority(PRIO_PROCESS, (id_t)gettid());
	if (errno != 0)
		base_nice = 0;
	worker_nice = base_nice + (int)cfg_int(CFG_QUEUE_WORKER_NICE);
	if (worker_nice > 19)
		worker_nice = 19;
	gethostname(hostname, sizeof(hostname) - 1);
	drv = queue_driver_is_redis() ? &queue_redis_driver : &queue_local_driver;
	enum soma_err err = drv == &queue_redis_driver ? redis_queue_init() : queue_ticker_start();
	if (err != SOMA_OK)
		return err;
	pthread_mutex_lock(&lock);
	nslots = 0;
	for (int q = 0; q < nqueues && q < MAX_QUEUES && err == SOMA_OK; q++) {
		struct queue_slot *slot = &slots[nslots++];
		*slot = (struct queue_slot){.max = queues[q].concurrency};
		snprintf(slot->name, sizeof(slot->name), "%s", queues[q].name);
		err = spawn_locked(slot);
	}
	pthread_mutex_unlock(&lock);
	if (err != SOMA_OK) {
		queue_stop(0);
		return SOMA_ERR_INTERNAL;
	}
	return SOMA_OK;
}

void queue_stop(int grace_ms)
{
	pthread_mutex_lock(&lock);
	stopping = true;
	wake_idle_locked(NULL, nworkers);
	pthread_mutex_unlock(&lock);
	/* running tasks get the grace period, then are asked to cancel; an unfinished task is not
	 * acked, so it runs again after its visibility timeout */
	for (int waited = 0; waited < grace_ms && queue_running() > 0; waited += 20) {
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nworkers; i++) {
		if (workers[i].current) {
			workers[i].current->shutdown = true;
			workers[i].current->cancel = true;
		}
	}
	int n = nworkers; /* no worker is started once stopping is set */
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < n; i++)
		pthread_join(workers[i].tid, NULL);
	/* under the lock: the tick, the Celery event thread and a hand-off still walk the pools
	 * (queue_pool_each_running, ...): they see none before a condition variable is destroyed */
	pthread_mutex_lock(&lock);
	nworkers = 0;
	atomic_store(&idle_count, 0); /* every worker left idle_wait; a fresh start counts anew */
	nslots = 0;
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < n; i++)
		pthread_cond_destroy(&workers[i].cv);
	queue_handlers_clear();
	if (drv == &queue_redis_driver)
		redis_queue_deinit();
	queue_ticker_stop(); /* (the local driver's; nothing to stop on redis) */
}

void queue_task_heartbeat(struct task_ctx *ctx)
{
	if (ctx->drv)
		drv->heartbeat(ctx->drv, ctx);
}

void queue_pool_each_running(void (*fn)(struct task_ctx *t, void *arg), void *arg)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nworkers; i++)
		if (workers[i].current)
			fn(workers[i].current, arg);
	pthread_mutex_unlock(&lock);
}

json_t *queue_pools_json(void)
{
	json_t *out = json_object();
	int64_t now = clock_wall_ms() / 1000;
	pthread_mutex_lock(&lock);
	for (int q = 0; q < nslots; q++) {
		int done = 0;
		for (int i = 0; i < 60; i++)
			done += slots[q].ring_sec[i] > now - 60 ? slots[q].ring[i] : 0;
		json_object_set_new(out, slots[q].name,
				    json_pack("{s:i, s:i, s:i, s:i}", "consumers", slots[q].count, "busy",
					      slots[q].busy, "concurrency", slots[q].max, "finished_1m", done));
	}
	pthread_mutex_unlock(&lock);
	return out;
}

json_t *queue_workers_json(void)
{
	json_t *out = json_array();
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nworkers; i++) {
		const struct task_ctx *t = workers[i].current;
		json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s?, s:s?}", "id", workers[i].id, "queue",
						     workers[i].queue, "state", t ? "busy" : "idle", "task_id",
						     t ? t->id : NULL, "task",
						     t ? json_string_value(json_object_get(t->task, "name")) : NULL));
	}
	pthread_mutex_unlock(&lock);
	return out;
}
