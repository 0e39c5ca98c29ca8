/*
 * running.c - what the rest of the process asks of the tasks running on this process's workers:
 * their time limits (the maintenance tick), their delivery tags, a session's cancellation, their
 * count. Each is one walk of queue_pool_each_running (worker.c), under the pool's lock.
 */
#include <string.h>

#include "queue/queue_int.h"

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
	const char *tenant, *session_id;
	bool keep_partial;
	int n; /* tasks asked to stop */
};

static void cancel_one(struct task_ctx *t, void *arg)
{
	struct cancel_walk *walk = arg;
	if (t->session_id && t->tenant && strcmp(t->session_id, walk->session_id) == 0 &&
	    strcmp(t->tenant, walk->tenant) == 0 && !t->cancel) {
		t->keep_partial = walk->keep_partial;
		t->cancel = true;
		walk->n++;
	}
}

int queue_cancel_session(const char *tenant, const char *session_id, bool keep_partial)
{
	struct cancel_walk walk = {tenant, session_id, keep_partial, 0};
	queue_pool_each_running(cancel_one, &walk);
	return walk.n;
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
