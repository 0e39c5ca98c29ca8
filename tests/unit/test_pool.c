/*
 * test_pool.c - the thread pool for blocking work (src/core/pool.c).
 *
 * DESIGN: jobs that must stay running while the test looks at the pool wait on a gate (a
 * mutex + condition the test opens); every wait on another thread is bounded, so a broken
 * pool fails the test instead of hanging it.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "core/pool.h"

#define NJOBS 10000

static _Atomic int runs[NJOBS];
static _Atomic int started, finished;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Waits up to 5 s for *counter to reach want. */
static bool wait_for(_Atomic int *counter, int want)
{
	for (int i = 0; i < 5000 && atomic_load(counter) < want; i++)
		sleep_ms(1);
	return atomic_load(counter) >= want;
}

static void count_job(void *arg)
{
	atomic_fetch_add(&runs[(long)arg], 1);
	atomic_fetch_add(&finished, 1);
}

static void gated_job(void *arg)
{
	(void)arg;
	atomic_fetch_add(&started, 1);
	pthread_mutex_lock(&gate_lock);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	atomic_fetch_add(&finished, 1);
}

static void open_gate(void)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = true;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_lock);
}

Test(pool, every_job_runs_exactly_once)
{
	struct pool *p = pool_new(4, 256);
	cr_assert_not_null(p);
	for (long i = 0; i < NJOBS; i++) {
		enum soma_err err;
		int tries = 0;
		/* the queue is smaller than the job count: a full queue refuses, so wait and retry */
		while ((err = pool_submit(p, count_job, (void *)i)) == SOMA_ERR_UNAVAILABLE && tries++ < 5000)
			sleep_ms(1);
		cr_assert_eq(err, SOMA_OK, "job %ld refused", i);
	}
	pool_free(p);
	cr_assert_eq(atomic_load(&finished), NJOBS);
	for (int i = 0; i < NJOBS; i++)
		cr_assert_eq(atomic_load(&runs[i]), 1, "job %d ran %d times", i, atomic_load(&runs[i]));
}

Test(pool, full_queue_refuses_and_does_not_run_the_job)
{
	struct pool *p = pool_new(2, 3);
	cr_assert_not_null(p);
	cr_assert_eq(pool_load(p), 0);
	cr_assert_eq(pool_submit(p, gated_job, NULL), SOMA_OK);
	cr_assert_eq(pool_submit(p, gated_job, NULL), SOMA_OK);
	cr_assert(wait_for(&started, 2), "the two threads did not start their jobs");
	cr_assert_eq(pool_load(p), 2, "two running, none queued");
	for (long i = 0; i < 3; i++)
		cr_assert_eq(pool_submit(p, count_job, (void *)i), SOMA_OK, "queued job %ld", i);
	cr_assert_eq(pool_load(p), 5);
	cr_assert_eq(pool_submit(p, count_job, (void *)3), SOMA_ERR_UNAVAILABLE);
	cr_assert_eq(pool_submit(p, count_job, (void *)4), SOMA_ERR_UNAVAILABLE);
	cr_assert_eq(pool_load(p), 5, "a refused job was counted");
	open_gate();
	cr_assert(wait_for(&finished, 5));
	for (int i = 0; i < 100 && pool_load(p) > 0; i++)
		sleep_ms(1);
	cr_assert_eq(pool_load(p), 0);
	/* room again once the queue drained */
	cr_assert_eq(pool_submit(p, count_job, (void *)5), SOMA_OK);
	pool_free(p);
	cr_assert_eq(atomic_load(&runs[3]), 0, "a refused job ran");
	cr_assert_eq(atomic_load(&runs[4]), 0, "a refused job ran");
	cr_assert_eq(atomic_load(&runs[5]), 1);
	cr_assert_eq(atomic_load(&finished), 6);
}

static void slow_job(void *arg)
{
	sleep_ms(20);
	count_job(arg);
}

Test(pool, free_waits_for_running_and_queued_jobs)
{
	struct pool *p = pool_new(2, 16);
	cr_assert_not_null(p);
	for (long i = 0; i < 10; i++)
		cr_assert_eq(pool_submit(p, slow_job, (void *)i), SOMA_OK);
	pool_free(p); /* 10 jobs of 20 ms on 2 threads: ~100 ms of work still ahead */
	cr_assert_eq(atomic_load(&finished), 10, "pool_free returned before its jobs ran");
	for (int i = 0; i < 10; i++)
		cr_assert_eq(atomic_load(&runs[i]), 1);
}

static void *free_thread(void *arg)
{
	pool_free(arg);
	return NULL;
}

static _Atomic int submit_during_free = -1;

static void submit_after_gate(void *arg)
{
	gated_job(NULL);
	submit_during_free = pool_submit(arg, count_job, (void *)0);
}

Test(pool, submit_while_stopping_is_refused)
{
	struct pool *p = pool_new(1, 4);
	cr_assert_not_null(p);
	cr_assert_eq(pool_submit(p, submit_after_gate, p), SOMA_OK);
	cr_assert(wait_for(&started, 1));
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, free_thread, p), 0);
	sleep_ms(100); /* pool_free marks the pool stopping, then waits for the gated job */
	open_gate();
	pthread_join(t, NULL);
	cr_assert_eq(submit_during_free, SOMA_ERR_UNAVAILABLE);
	cr_assert_eq(atomic_load(&runs[0]), 0, "a job refused while stopping ran");
}

static int order[64];
static _Atomic int order_len;

static void record_job(void *arg)
{
	order[atomic_fetch_add(&order_len, 1)] = (int)(long)arg;
}

Test(pool, one_thread_runs_jobs_in_fifo_order)
{
	struct pool *p = pool_new(1, 64);
	cr_assert_not_null(p);
	cr_assert_eq(pool_submit(p, gated_job, NULL), SOMA_OK);
	cr_assert(wait_for(&started, 1));
	/* the ring wraps: fill, drain and fill again in two rounds */
	for (long i = 0; i < 40; i++)
		cr_assert_eq(pool_submit(p, record_job, (void *)i), SOMA_OK);
	open_gate();
	cr_assert(wait_for(&order_len, 40));
	for (long i = 40; i < 64; i++)
		cr_assert_eq(pool_submit(p, record_job, (void *)i), SOMA_OK);
	pool_free(p);
	cr_assert_eq(atomic_load(&order_len), 64);
	for (int i = 0; i < 64; i++)
		cr_assert_eq(order[i], i, "job %d ran at position %d", order[i], i);
}

Test(pool, load_counts_running_and_waiting)
{
	struct pool *p = pool_new(3, 10);
	cr_assert_not_null(p);
	for (int i = 0; i < 7; i++)
		cr_assert_eq(pool_submit(p, gated_job, NULL), SOMA_OK);
	cr_assert(wait_for(&started, 3));
	cr_assert_eq(pool_load(p), 7, "3 running + 4 waiting");
	open_gate();
	cr_assert(wait_for(&finished, 7));
	for (int i = 0; i < 1000 && pool_load(p) > 0; i++)
		sleep_ms(1);
	cr_assert_eq(pool_load(p), 0);
	pool_free(p);
}

Test(pool, free_accepts_null)
{
	pool_free(NULL);
}
