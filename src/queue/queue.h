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
 * jitter; after max_retries the task is dead-lettered. A task reserved by a process that died
 * is reserved again when its visibility timeout expires.
 */
#ifndef SOMA_QUEUE_QUEUE_H
#define SOMA_QUEUE_QUEUE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"
#include "store/store.h"

enum task_outcome {
	TASK_DONE,  /* finish the task (unless the handler already acked it) */
	TASK_ACKED, /* the handler committed its effects together with the ack */
	TASK_RETRY, /* retryable failure: back to the queue after a backoff */
	TASK_FAIL,  /* permanent failure: finish as FAILURE */
};

struct task_ctx {
	json_t *task;		    /* borrowed: {id, name, tenant, session_id?, payload, attempts, max_retries} */
	const char *id;		    /* task id (in task) */
	const char *tenant;	    /* task tenant (in task) */
	const char *session_id;	    /* session, or NULL */
	json_t *payload;	    /* borrowed */
	struct store *store;	    /* for the handler's own ops */
	char error[512];	    /* failure text for RETRY / FAIL */
	json_t *result;		    /* owned by the worker once set: SUCCESS result */
	volatile bool cancel;	    /* stop: the session was deleted, or the process is stopping */
	volatile bool shutdown;	    /* the stop is a shutdown: requeue rather than finish */
	volatile bool keep_partial; /* the stop is the user's: keep what was produced so far */
	const char *worker;	    /* id of the worker running it (its reservation) */
	int64_t lease_renewed_ms;   /* when the reservation was last extended */
	const char *queue;	    /* the queue it came from */
	int64_t visibility_ms;	    /* the queue's reservation time */
	json_t *next_task;	    /* set by a handler that reserved the worker's next task with its ack;
				     * owned by the worker once set */
};

typedef enum task_outcome (*task_handler_fn)(struct task_ctx *ctx);

struct queue_def {
	const char *name; /* queue name, e.g. "conversation" */
	int concurrency;  /* worker threads */
};

/* Registers a task handler by name (before queue_start). */
enum soma_err queue_task_register(const char *name, task_handler_fn fn) SOMA_MUST_CHECK;
/* Starts the worker pools of the given queues over the store. */
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
/* Asks the running tasks of a session to stop: the session was deleted (keep_partial false),
 * or the user pressed stop (keep_partial: the reply so far is kept as the final answer).
 * Returns how many running tasks were asked. */
int queue_cancel_session(const char *tenant, const char *session_id, bool keep_partial);
/* This process's worker pools: {queue: {consumers, busy, concurrency, finished_1m}}. Caller owns. */
json_t *queue_pools_json(void);
/* This process's workers: [{id, queue, state: busy|idle, task_id?, task?}]. Caller owns. */
json_t *queue_workers_json(void);
/* Tasks running now (health, metrics). */
int queue_running(void);

#endif
