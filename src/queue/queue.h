/*
 * queue.h - tasks and the workers that run them.
 *
 * DESIGN: a task is published in the same transaction as the state change that causes it (the
 * local driver keeps tasks in the store's tasks table, so "publish" is a row inserted by the
 * store op that also inserts the user's event). Workers are thread pools, one per queue; each
 * reserves a task with a visibility timeout, runs its handler, and acks only after the task's
 * effects are committed: a handler that commits its own effects passes the task id to that
 * store op (the ack rides in the same transaction), others return TASK_DONE and the worker
 * finishes the task. Retryable failures go back to the queue with exponential backoff and
 * jitter; after max_retries the task is dead-lettered, as is a permanent failure (TASK_FAIL); a
 * task whose answer is a failure of the caller's making (TASK_REJECT) only ends as FAILURE. A task reserved by a
 * process that died is reserved again when its visibility timeout expires.
 */
#ifndef SOMA_QUEUE_QUEUE_H
#define SOMA_QUEUE_QUEUE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"
#include "store/store.h"

enum task_outcome {
	TASK_DONE,   /* finish the task (unless the handler already acked it) */
	TASK_ACKED,  /* the handler committed its effects together with the ack */
	TASK_RETRY,  /* retryable failure: back to the queue after a backoff */
	TASK_FAIL,   /* permanent failure: finish as FAILURE and keep it as a dead letter (the operator's
		      * to look at: a bug, a dependency down past max_retries) */
	TASK_REJECT, /* the task's own answer is a failure (bad input, refused by policy, a tool's error):
		      * finish as FAILURE with ctx->error, no dead letter, no retry */
};

struct commit_gate;

struct task_ctx {
	json_t *task;		   /* borrowed: {id, name, tenant, session_id?, payload, attempts, max_retries} */
	const char *id;		   /* task id (in task) */
	const char *tenant;	   /* task tenant (in task) */
	const char *session_id;	   /* session, or NULL */
	json_t *payload;	   /* borrowed */
	struct store *store;	   /* for the handler's own ops */
	char error[512];	   /* failure text for RETRY / FAIL */
	json_t *result;		   /* owned by the worker once set: SUCCESS result */
	_Atomic bool cancel;	   /* stop: the session was deleted, or the process is stopping; set by
				    * other threads (shutdown, keep_partial first), read by the handler */
	_Atomic bool shutdown;	   /* the stop is a shutdown: requeue rather than finish */
	_Atomic bool keep_partial; /* the stop is the user's: keep what was produced so far */
	_Atomic int terminated;	   /* a revoke with terminate stopped it (queue_terminate): the signal
				    * number it named, 0 none; the task then ends REVOKED, not with its outcome */
	const char *worker;	   /* id of the worker running it (its reservation) */
	int64_t lease_renewed_ms;  /* when the reservation was last extended */
	const char *queue;	   /* the queue it came from */
	int64_t visibility_ms;	   /* the queue's reservation time */
	json_t *next_task;	   /* set by a handler that reserved the worker's next task with its ack;
				    * owned by the worker once set */
	bool store_ack;		   /* the task is a row of the store's queue: a handler may ack it in
				    * its own commit (task_id on EVENT_APPEND); false on the redis driver */
	void *drv;		   /* the driver state of the worker running it */
	const char *tag;	   /* redis driver: the message's delivery tag */
	int64_t soft_deadline_ms;  /* soft time limit (wall ms, 0 none): cancel, then FAILURE */
	int64_t hard_deadline_ms;  /* hard time limit (wall ms, 0 none): FAILURE, the run is abandoned */
	_Atomic int limit_hit;	   /* 1 soft, 2 hard time limit passed (set by the maintenance tick) */
	struct commit_gate *gate;  /* handed over before its message committed (handoff.h): nothing may
				    * be published or stored before the gate says committed; else NULL */
	bool outage;		   /* set by a handler with TASK_RETRY when the store did not answer
				    * (SOMA_ERR_UNAVAILABLE): the retry does not use up max_retries, so
				    * an outage of PostgreSQL longer than the backoffs dead-letters nothing */
};

typedef enum task_outcome (*task_handler_fn)(struct task_ctx *ctx);

struct queue_def {
	const char *name; /* queue name, e.g. "conversation" */
	int concurrency;  /* worker threads */
};

/* A task's commit (its reply, its outcome) that failed for a full disk or a failed store
 * (SOMA_ERR_FULL, SOMA_ERR_STORE) is tried again in the process for up to QUEUE_COMMIT_RETRY_MS,
 * what it commits kept in memory, rather than left to the visibility timeout: the task ran again
 * minutes later, its reply out of order and its LLM paid twice. queue_commit_retry_wait: whether
 * to try again after err, started_ms (clock_wall_ms at the first failure) and *pause_ms (0 at
 * first; doubles, at most 2 s) - it sleeps that pause first; false (no sleep) once the time is
 * up, err is another error, or t is cancelled. Worker thread. */
#define QUEUE_COMMIT_RETRY_MS 30000
bool queue_commit_retry_wait(struct task_ctx *t, enum soma_err err, int64_t started_ms, int *pause_ms);
/* Registers a task handler by name (before queue_start). */
enum soma_err queue_task_register(const char *name, task_handler_fn fn) SOMA_MUST_CHECK;
/* The names of the registered task handlers, sorted (Celery's `inspect registered`). Caller owns. */
json_t *queue_task_names(void);
/* Starts the worker pools of the given queues over the store, with the driver named by
 * queue.driver (local: the store's tasks table; redis: Celery messages on redis.url). */
enum soma_err queue_start(struct store *st, const struct queue_def *queues, int nqueues, int visibility_s,
			  int backoff_ms) SOMA_MUST_CHECK;
/* Stops taking tasks, lets running ones finish up to grace_ms (then asks them to cancel; an
 * unfinished task reappears after its visibility timeout), and joins the threads. */
void queue_stop(int grace_ms);
/* Wakes idle workers (store commit hook after tasks were enqueued). */
void queue_notify(void *arg);
/* Keeps a long task's reservation alive: extends it when a third of the visibility timeout has
 * passed since the last extension (asynchronous, cheap to call often). Without it a task that
 * runs longer than the timeout would be reserved, and run, a second time. Task thread only. */
void queue_task_heartbeat(struct task_ctx *ctx);
/* Asks the running tasks of a session on this process's workers to stop: the session was
 * deleted (keep_partial false), or the user pressed stop (keep_partial: the reply so far is kept
 * as the final answer). Returns how many running tasks were asked. Another node's workers are
 * reached by a cancel notice (bus_cancel_notify, which the gateway sends too; a node with
 * workers applies the others' notices with this and queue_cancel_task). */
int queue_cancel_session(const char *tenant, const char *session_id, bool keep_partial);
/* Appends to out (a JSON array, the caller's) the session id of every task running on this
 * process's workers that has one (a session's id is unique across tenants). The retention sweep
 * leaves those sessions: on queue.driver=redis a running reply has no row in the store. */
void queue_running_sessions(json_t *out);
/* Asks tenant's task task_id to stop as the user's stop does (keep_partial): returns 1 when it
 * runs on this process's workers, else 0 - then the cancel is kept (10 minutes) and a worker of
 * this process that starts the task stops it at once (one still queued). Another node's workers
 * see it through a cancel notice (bus_cancel_notify), which their node applies with this call:
 * the same 10 minutes there. */
int queue_cancel_task(const char *tenant, const char *task_id);
/* Celery's revoke with terminate (`control revoke --terminate`, `control terminate`), for the
 * pidbox: asks the task task_id running on this process's workers, whatever its tenant, to stop
 * as a user's stop does (a thread cannot be killed: its handler sees cancel), and to end REVOKED
 * as Celery's worker ends a terminated task (TaskRevokedError('terminated'), task-revoked with
 * terminated, signum). Returns 1 when it runs here, else 0 (a queued one is kept from running by
 * its revoke, queue_revoke). */
int queue_terminate(const char *task_id, int signum);
/* Whether this process runs workers of the named queue. */
bool queue_serves(const char *queue);
/* This process's worker pools: {queue: {consumers, busy, concurrency, finished_1m}}. Caller owns. */
json_t *queue_pools_json(void);
/* This process's workers: [{id, queue, state: busy|idle, task_id?, task?}]. Caller owns. */
json_t *queue_workers_json(void);
/* The tasks running now as Celery 5.2's `inspect active` lists them (Request.info(safe)): id, name,
 * args/kwargs (with safe: their reprs), type, hostname, time_start (unix s, when the worker took
 * the task; null if unknown), acknowledged, delivery_info, worker_pid. Caller owns. */
json_t *queue_active_json(const char *hostname, bool safe);
/* The messages this process holds for their eta (redis driver), as Celery 5.2's `inspect
 * scheduled` lists them: [{eta, priority, request: Request.info}]. Caller owns; [] when none. */
json_t *queue_scheduled_json(const char *hostname);
/* The messages this process's worker threads hold prefetched behind the task each runs (redis
 * driver; delivered, not started), as Celery 5.2's `inspect reserved` lists them: Request.info()
 * with time_start and worker_pid null, acknowledged false. Caller owns; [] when none. */
json_t *queue_reserved_json(const char *hostname);
/* Tasks running now (health, metrics). */
int queue_running(void);
/* The queues this worker serves: conversation, celery, then queue.queues (name=concurrency
 * pairs). Names live in static storage. Returns how many were written into out (max >= 2). */
int queue_defs_from_config(struct queue_def *out, int max);
/* The driver the pools run ("local" or "redis"), from queue.driver. */
bool queue_driver_is_redis(void);
/* Calls fn with each target queue of queue.routes (not NUL-terminated: len bytes). */
void queue_route_targets(void (*fn)(const char *queue, size_t len, void *arg), void *arg);
/* The queue a task goes to: queue.routes (task=queue, patterns ending in *), else
 * queue.default_queue; conversation.process always goes to conversation. Writes into buf. */
const char *queue_route(const char *task, char *buf, size_t cap);

/* ---- redis driver: the relay that publishes committed task rows (the outbox) ---- */
/* Starts the relay thread (nodes that commit tasks: role gateway or all). */
enum soma_err queue_relay_start(struct store *st) SOMA_MUST_CHECK;
void queue_relay_stop(void);
/* Wakes the relay (store task hook). */
void queue_relay_wake(void *arg);
/* Rows published by the relay since start (tests, metrics). */
long long queue_relay_published(void);
/* Whether Redis (redis.url) answers a PING now: true with "redis at host:port; ..." in detail,
 * false with why and what to do. Blocks up to a second; one thread only (the health poller). */
bool queue_broker_status(char *detail, size_t cap);
/* soma_redis_aof_enabled: whether Redis writes an append-only file, as queue_broker_status found
 * it (asked once per process): 1, 0, or -1 not known (not the redis driver, Redis not reached
 * yet). Any thread. */
int queue_broker_aof(void);
/* Closes queue_broker_status's connection (after the last poll). */
void queue_broker_close(void);

/* ---- redis driver: reads for the task API, answered on a thread of their own ---- */
/* done runs on that thread; row is the task as GET /v1/tasks shows it, or NULL when Redis has
 * no result (PENDING) - err says whether Redis answered (SOMA_OK) - and is freed after done.
 * *forbidden when the task belongs to another tenant. */
typedef void (*queue_status_fn)(json_t *row, enum soma_err err, void *arg);
/* err SOMA_ERR_NOT_FOUND when the task is another tenant's, or has a result but no owner (a task
 * a Python producer sent, or one whose owner is gone) and unowned_ok is false. */
enum soma_err queue_status_async(const char *task_id, const char *tenant, bool unowned_ok, queue_status_fn done,
				 void *arg) SOMA_MUST_CHECK;
/* SET NX of an idempotency key (tenant, key) -> task_id with ttl_s: done gets {task_id, fresh}:
 * fresh true when this call set the key (task_id), false with the task id that held it; NULL on
 * error. */
enum soma_err queue_idempotency_async(const char *tenant, const char *key, const char *task_id, int ttl_s,
				      queue_status_fn done, void *arg) SOMA_MUST_CHECK;
/* Deletes the idempotency key (tenant, key) if it still holds task_id, whose publish failed (so
 * the client's retry publishes instead of answering duplicate); on a result thread, nothing to
 * wait for. SOMA_OK when queued. */
enum soma_err queue_idempotency_release_async(const char *tenant, const char *key, const char *task_id) SOMA_MUST_CHECK;
/* Claims a caller-chosen task id for tenant (SET NX of soma-task-owner-<id>, ttl_s) unless the id
 * has a result or an owner (another tenant's, or tenant's own): done gets JSON true when claimed,
 * false when the id is in use, NULL on error. Strings copied. */
enum soma_err queue_task_id_claim_async(const char *tenant, const char *task_id, int ttl_s, queue_status_fn done,
					void *arg) SOMA_MUST_CHECK;
/* Releases a claim whose publish failed (deletes the owner key if it still names tenant); on a
 * result thread, nothing to wait for. SOMA_OK when queued. */
enum soma_err queue_task_id_release_async(const char *tenant, const char *task_id) SOMA_MUST_CHECK;
/* Per queue in queues (a JSON array of names; copied): done gets {name: {depth, reserved}} - the
 * messages waiting in Redis and those delivered but not acked - or NULL when Redis is down. */
enum soma_err queue_stats_async(const json_t *queues, queue_status_fn done, void *arg) SOMA_MUST_CHECK;
enum soma_err queue_results_start(void) SOMA_MUST_CHECK;
void queue_results_stop(void);

#endif
