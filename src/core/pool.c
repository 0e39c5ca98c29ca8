/*
 * pool.c - see pool.h.
 */
#include "core/pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct job {
	pool_job_fn fn; /* work */
	void *arg;	/* its argument */
};

struct pool {
	pthread_mutex_t lock;  /* guards everything below */
	pthread_cond_t ready;  /* a job was queued, or stopping */
	struct job *ring;      /* queued jobs */
	size_t cap, head, len; /* ring geometry */
	size_t running;	       /* jobs being run */
	int idle;	       /* threads waiting for a job */
	int max_threads;       /* threads are started on demand, up to this */
	bool stopping;	       /* no new jobs; exit when empty */
	int nthreads;	       /* started threads */
	pthread_t *tids;       /* their ids */
};

static void *pool_main(void *arg)
{
	struct pool *p = arg;
	pthread_setname_np(pthread_self(), "soma-pool");
	pthread_mutex_lock(&p->lock);
	for (;;) {
		p->idle++;
		while (p->len == 0 && !p->stopping)
			pthread_cond_wait(&p->ready, &p->lock);
		p->idle--;
		if (p->len == 0)
			break;
		struct job j = p->ring[p->head];
		p->head = (p->head + 1) % p->cap;
		p->len--;
		p->running++;
		pthread_mutex_unlock(&p->lock);
		j.fn(j.arg);
		pthread_mutex_lock(&p->lock);
		p->running--;
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct pool *pool_new(int nthreads, size_t queue_cap)
{
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ring = calloc(queue_cap, sizeof(*p->ring));
	p->tids = calloc((size_t)nthreads, sizeof(*p->tids));
	p->cap = queue_cap;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->ready, NULL);
	if (!p->ring || !p->tids) {
		pool_free(p);
		return NULL;
	}
	p->max_threads = nthreads; /* started on demand by pool_submit: an idle pool costs nothing */
	return p;
}

enum soma_err pool_submit(struct pool *p, pool_job_fn fn, void *arg)
{
	pthread_mutex_lock(&p->lock);
	if (p->stopping || p->len == p->cap) {
		pthread_mutex_unlock(&p->lock);
		return SOMA_ERR_UNAVAILABLE;
	}
	/* a thread for this job unless an idle one will take it */
	if (p->idle <= (int)p->len && p->nthreads < p->max_threads &&
	    pthread_create(&p->tids[p->nthreads], NULL, pool_main, p) == 0)
		p->nthreads++;
	if (p->nthreads == 0) { /* no thread could be started (pthread_create: out of memory or threads) */
		pthread_mutex_unlock(&p->lock);
		return SOMA_ERR_NOMEM;
	}
	p->ring[(p->head + p->len) % p->cap] = (struct job){fn, arg};
	p->len++;
	pthread_cond_signal(&p->ready);
	pthread_mutex_unlock(&p->lock);
	return SOMA_OK;
}

size_t pool_load(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	size_t n = p->len + p->running;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void pool_free(struct pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->ready);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&p->lock);
	int n = p->nthreads; /* no more are started once stopping is set */
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < n; i++)
		pthread_join(p->tids[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->ready);
	free(p->ring);
	free(p->tids);
	free(p);
}
