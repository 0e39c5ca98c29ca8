/*
 * gate.c - the commit gate of an early-started chat reply (see handoff.h).
 *
 * DESIGN: a mutex, a condition variable and a reference count. The store thread settles the gate
 * once (after the commit hook published the user's event); the worker thread waits on it before
 * its first publication. Whoever drops the last reference frees it, so neither side depends on
 * the other finishing first. Two callbacks may wait on the commit, both run by the settling
 * thread under the gate's lock:
 * - what must not be seen before the commit (the task's Celery events) is held by the worker
 *   (commit_gate_hold): it runs before the state changes and the waiters wake, so it precedes
 *   everything they do after their wait; its release runs in every case;
 * - the reply's first publication (assistant.thinking) is left by the conversation
 *   (commit_gate_on_commit): it runs the moment the gate commits, instead of on the worker,
 *   which is then waiting for its provider; the conversation can take it back.
 */
#include <pthread.h>
#include <stdlib.h>

#include "queue/handoff.h"

struct commit_gate {
	pthread_mutex_t lock;			   /* guards the fields below */
	pthread_cond_t cv;			   /* broadcast when settled */
	int refs;				   /* references held */
	enum gate_state state;			   /* pending until settled */
	int64_t seq;				   /* the committed event's seq */
	gate_fn held_run;			   /* commit_gate_hold's: runs at the commit, or NULL */
	gate_fn held_release;			   /* releases held_arg (NULL: nothing to release) */
	void *held_arg;				   /* their argument */
	void (*on_commit)(void *arg, int64_t seq); /* commit_gate_on_commit's hook, or NULL */
	void *on_commit_arg;			   /* its argument */
};

/* Runs (if committed) and releases what commit_gate_hold holds; lock held. */
static void held_settle_locked(struct commit_gate *g, bool committed)
{
	if (committed && g->held_run)
		g->held_run(g->held_arg);
	if (g->held_release)
		g->held_release(g->held_arg);
	g->held_run = g->held_release = NULL;
	g->held_arg = NULL;
}

struct commit_gate *commit_gate_new(void)
{
	struct commit_gate *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->refs = 1;
	g->state = GATE_PENDING;
	return g;
}

struct commit_gate *commit_gate_ref(struct commit_gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->refs++;
	pthread_mutex_unlock(&g->lock);
	return g;
}

void commit_gate_unref(struct commit_gate *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	bool last = --g->refs == 0;
	pthread_mutex_unlock(&g->lock);
	if (!last)
		return;
	held_settle_locked(g, false); /* never settled: the commit did not happen */
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cv);
	free(g);
}

void commit_gate_settle(struct commit_gate *g, bool committed, int64_t seq)
{
	pthread_mutex_lock(&g->lock);
	if (g->state == GATE_PENDING) {
		held_settle_locked(g, committed);
		g->state = committed ? GATE_COMMITTED : GATE_FAILED;
		g->seq = seq;
		if (committed && g->on_commit) /* under the lock: the waiter sees what it did */
			g->on_commit(g->on_commit_arg, seq);
		g->on_commit = NULL;
		pthread_cond_broadcast(&g->cv);
	}
	pthread_mutex_unlock(&g->lock);
}
enum gate_state commit_gate_state(struct commit_gate *g, int64_t *seq)
{
	pthread_mutex_lock(&g->lock);
	enum gate_state s = g->state;
	if (seq)
		*seq = g->seq;
	pthread_mutex_unlock(&g->lock);
	return s;
}

enum gate_state commit_gate_wait(struct commit_gate *g, int64_t *seq)
{
	pthread_mutex_lock(&g->lock);
	while (g->state == GATE_PENDING)
		pthread_cond_wait(&g->cv, &g->lock);
	enum gate_state s = g->state;
	if (seq)
		*seq = g->seq;
	pthread_mutex_unlock(&g->lock);
	return s;
}

bool commit_gate_on_commit(struct commit_gate *g, void (*fn)(void *arg, int64_t seq), void *arg)
{
	pthread_mutex_lock(&g->lock);
	bool pending = g->state == GATE_PENDING;
	g->on_commit = pending ? fn : NULL;
	g->on_commit_arg = pending ? arg : NULL;
	pthread_mutex_unlock(&g->lock);
	return pending;
}

void commit_gate_hold(struct commit_gate *g, gate_fn on_commit, gate_fn release, void *arg)
{
	pthread_mutex_lock(&g->lock);
	if (g->state == GATE_PENDING && !g->held_run && !g->held_release) {
		g->held_run = on_commit;
		g->held_release = release;
		g->held_arg = arg;
		pthread_mutex_unlock(&g->lock);
		return;
	}
	bool committed = g->state == GATE_COMMITTED;
	pthread_mutex_unlock(&g->lock);
	if (committed && on_commit) /* settled already: now, on this thread */
		on_commit(arg);
	if (release)
		release(arg);
}
