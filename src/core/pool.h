/*
 * pool.h - a fixed pool of threads for blocking work started by io threads (an LLM call for
 * /v1/chat/completions, say), so that no event loop ever waits.
 *
 * DESIGN: a bounded FIFO of jobs under a mutex; N threads take jobs and run them. When the
 * queue is full pool_submit refuses (the caller answers 503) instead of queueing without bound.
 * pool_free stops taking jobs, lets queued and running ones finish, and joins the threads.
 */
#ifndef SOMA_CORE_POOL_H
#define SOMA_CORE_POOL_H

#include <stddef.h>

#include "core/err.h"

struct pool;
typedef void (*pool_job_fn)(void *arg);

/* A pool of up to nthreads threads (started on demand, as jobs arrive) with room for
 * queue_cap waiting jobs. NULL on failure. */
struct pool *pool_new(int nthreads, size_t queue_cap);
/* Queues fn(arg); SOMA_ERR_UNAVAILABLE when full or stopping, SOMA_ERR_NOMEM when the pool has no
 * thread and none could be started (then fn is not called). */
enum soma_err pool_submit(struct pool *p, pool_job_fn fn, void *arg) SOMA_MUST_CHECK;
/* Jobs waiting plus running. */
size_t pool_load(struct pool *p);
/* Finishes queued and running jobs, joins the threads, frees the pool. Accepts NULL. */
void pool_free(struct pool *p);

#endif
