/*
 * queue_int.h - internals of the queue: the driver interface under the worker pools, and what
 * the Redis driver's files share.
 *
 * DESIGN: worker.c owns the thread pools (growth, the running task, cancel, metrics, policy);
 * a driver owns where tasks come from and how their outcome is recorded. The local driver
 * (local.c) reserves rows of the store's tasks table; the redis driver (redis_*.c) pops Celery
 * messages. Each worker thread holds its own driver state (a Redis connection, prefetched
 * messages, acks not yet flushed); nothing in it is touched by another thread except through
 * the functions that say so. A task is handed to the pool as the JSON object handlers know:
 * {id, name, tenant, session_id?, payload, attempts, max_retries, queue}.
 */
#ifndef SOMA_QUEUE_QUEUE_INT_H
#define SOMA_QUEUE_QUEUE_INT_H

#include "queue/celery_wire.h"
#include "queue/queue.h"

struct queue_driver {
	const char *name; /* "local" | "redis" */
	bool blocking;	  /* reserve waits by itself (else the pool waits for queue_notify) */
	/* the worker thread's state for queue (NULL: cannot start it). */
	void *(*open)(const char *queue, const char *worker_id);
	/* flushes what the worker owes and gives back what it holds unrun; frees the state */
	void (*close)(void *w);
	/* the next task of the worker's queue, or NULL (after waiting up to ~1 s if blocking) */
	json_t *(*reserve)(void *w);
	/* records the outcome; returns the outcome as it ended (a retry past max_retries, a reject: FAIL) */
	enum task_outcome (*settle)(void *w, struct task_ctx *ctx, enum task_outcome outcome);
	/* keeps a long task's reservation alive (throttled by the driver) */
	void (*heartbeat)(void *w, struct task_ctx *ctx);
	/* gives back a reserved task unstarted (the process is stopping) */
	void (*requeue)(void *w, json_t *task);
	/* skips a task without running it, as REVOKED (revoked or expired) */
	void (*revoke)(void *w, json_t *task, const char *why);
};

extern const struct queue_driver queue_local_driver;
extern const struct queue_driver queue_redis_driver;

/* Exponential backoff with full jitter for the attempt-th try: uniform in [cap/2, cap] where
 * cap = queue.retry_backoff_ms * 2^(attempt-1), at most 5 minutes. */
int64_t queue_backoff_ms(int64_t attempt);
/* The store the pools run over (local driver, dead letters of the redis driver). */
struct store *queue_store(void);
/* The visibility timeout in ms. */
int64_t queue_visibility_ms(void);
/* True once queue_stop has begun. */
bool queue_stopping(void);

/* Takes the next token of the task's rate limit (queue.rate_limits, routes.c) and returns the ms
 * until it is due (0: now; no limit for task: 0). The token is the caller's even if it then
 * does not run the task (Celery too spends it on a task revoked while it waited). */
int64_t queue_rate_take(const char *task);

/* ---- redis driver, shared by its files ---- */
struct redis_conn;

/* Starts the redis driver's process-wide part (maintenance thread: visibility restore, held
 * eta messages, time limits). Called by queue_start before the pools. */
enum soma_err redis_queue_init(void) SOMA_MUST_CHECK;
void redis_queue_deinit(void);
/* Opens a connection to redis.url (lazy: Redis down is not an error). NULL on a bad URL. */
struct redis_conn *redis_queue_connect(int timeout_ms);

/* Builds a Celery v2 envelope (text, caller frees) for task {id, name, queue, tenant,
 * session_id?, payload {args?, kwargs?, options?{priority, expires_ms, time_limit,
 * soft_time_limit}, ...}, max_retries?} (a relay row as it is: other members are not read), with
 * retries and eta_ms (0: none). *key receives the list key (band) it goes to. */
char *redis_task_envelope(const json_t *task, int64_t retries, int64_t eta_ms, char key[192]);
/* The result meta of a task as Celery's Redis backend writes it: {status, result, traceback,
 * children, date_done, task_id, <extra's keys>} (Celery 5.2's key order; extra must not repeat
 * those keys); the arguments are those of redis_meta_append. Caller frees; NULL on OOM. */
/* redis_meta_append with the meta already as text (borrowed). */
int redis_meta_append_text(struct redis_conn *c, const char *task_id, const char *text);
/* Appends SETEX soma-task-owner-<id> tenant with the result meta's lifetime (SET when
 * queue.result_expires_s is 0): written beside the meta, so the owner lives as long as the result
 * (the relay's owner key counts from publish; a task that ran longer would lose its owner and be
 * shown to other tenants). tenant borrowed; NULL or "" (a task sent by Python: no owner) writes
 * nothing. Returns the replies owed: 1, 0 (nothing written), -1 when it could not be appended. */
int redis_owner_append(struct redis_conn *c, const char *task_id, const char *tenant);
char *redis_meta_text(const char *task_id, const char *status, const json_t *result, const char *exc_type,
		      const char *exc_module, const char *message, const json_t *extra);
/* Appends the result meta of a task to the pipeline of c: SETEX celery-task-meta-<id> (SET
 * when queue.result_expires_s is 0) and PUBLISH on the channel of that name (Celery wraps the
 * two in MULTI/EXEC; nothing depends on it, and a batch of results costs half the commands). status SUCCESS, FAILURE,
 * RETRY, REVOKED; result borrowed; with exc_type the result is the exception dict {exc_type, exc_message: [message],
 * exc_module}; extra (borrowed, may be NULL) is merged into the meta. Returns how many commands were appended (their
 * replies are the caller's to read). */
int redis_meta_append(struct redis_conn *c, const char *task_id, const char *status, const json_t *result,
		      const char *exc_type, const char *exc_module, const char *message, const json_t *extra);
/* The result meta key of a task into buf. */
void redis_meta_key(const char *task_id, char *buf, size_t cap);
/* {name: {depth, reserved}} for each name of the array names (redis_stats.c); NULL when Redis
 * does not answer. The caller owns the result. */
json_t *redis_queue_stats(struct redis_conn *c, const json_t *names);

/* Held messages (eta in the future): kept unacked by this process until due. */
struct redis_held;
/* Registers the visibility restore and the sweep of one process (redis_restore.c). */
void redis_restore_sweep(struct redis_conn *c, int64_t visibility_ms);
/* Pushes envelope text back to the front of its queue as a restore does (redelivered flags),
 * removes its unacked entry and, when lock is not NULL, deletes that run-lock if it still holds
 * owner (a lock left behind made the next taker ack the message as running elsewhere: lost), all
 * in one MULTI/EXEC. */
enum soma_err redis_restore_one(struct redis_conn *c, const char *tag, const char *envelope, size_t len,
				const char *queue, const char *lock, const char *owner) SOMA_MUST_CHECK;

/* Hands a message whose eta is in the future to the holder (takes text); the other strings are
 * borrowed. lock and owner: its run-lock and the worker id it holds, released when the message is
 * given back at stop (NULL when it holds none). */
void redis_hold(const char *queue, const char *tag, char *text, size_t len, int64_t due_ms, const char *lock,
		const char *owner);
/* The next due held message of queue (caller frees *text), or false; *next_ms receives the
 * earliest due time of the queue's held messages (INT64_MAX when none); owner receives the worker
 * id its run-lock holds ("" when none). */
bool redis_hold_take(const char *queue, char **text, size_t *len, char tag[CELERY_ID_BYTES + 1], char owner[64],
		     int64_t *next_ms);

/* Time limits and running tags of this process's tasks, for the maintenance thread. */
void queue_pool_tick(int64_t now_ms);
/* The local driver's thread that ticks the time limits (queue_pool_tick; the redis driver's
 * maintenance thread does it there). Started by queue_start, stopped by queue_stop after the
 * workers were joined; stop without a start does nothing. */
enum soma_err queue_ticker_start(void) SOMA_MUST_CHECK;
void queue_ticker_stop(void);
/* Calls fn for the delivery tag of every task running now (lock held: fn must not block). */
void queue_pool_running_tags(void (*fn)(const char *tag, void *arg), void *arg);
/* Calls fn(t, arg) for every task running on this process's workers, under the pool's lock:
 * fn must be short, must not block and must not call into the pool (running.c's walks). */
void queue_pool_each_running(void (*fn)(struct task_ctx *t, void *arg), void *arg);
/* A task starting (its worker's current task set): stops it at once when queue_cancel_task
 * asked for it while it was queued. */
void queue_cancel_pending_apply(struct task_ctx *t);

#endif
