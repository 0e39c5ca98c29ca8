/*
 * routes.c - where a task goes and how fast it may run: the driver choice (queue.driver), the
 * routing table (queue.routes) and per-task rate limits (queue.rate_limits).
 *
 * DESIGN: the tables are parsed from the config on first use and never change afterwards
 * (config is fixed at start). A rate limit is a token bucket per task name per process, like
 * Celery's per-worker rate_limit: a worker thread that finds the bucket empty takes the token
 * that is due next and waits for it holding the task, its reservation kept alive meanwhile
 * (queue_rate_wait, worker_steps.c). Thread-safe.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "queue/queue_int.h"

#define MAX_LIMITS 32

struct bucket {
	char task[128];	 /* task name */
	double per_ms;	 /* tokens per ms */
	double tokens;	 /* available now (at most 1 burst = rate per second, at least 1) */
	double burst;	 /* bucket size */
	int64_t last_ms; /* last refill */
};

static struct bucket buckets[MAX_LIMITS];
static int nbuckets = -1; /* -1: not parsed yet */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

bool queue_driver_is_redis(void)
{
	return strcmp(cfg_str(CFG_QUEUE_DRIVER), "redis") == 0;
}

/* Does pattern (ending in * for a prefix) match task? */
static bool matches(const char *pattern, size_t plen, const char *task)
{
	if (plen > 0 && pattern[plen - 1] == '*')
		return strncmp(pattern, task, plen - 1) == 0;
	return strlen(task) == plen && strncmp(pattern, task, plen) == 0;
}

const char *queue_route(const char *task, char *buf, size_t cap)
{
	if (strcmp(task, "conversation.process") == 0)
		return snprintf(buf, cap, "conversation"), buf;
	struct cfg_pair it;
	for (const char *p = cfg_str(CFG_QUEUE_ROUTES); cfg_list_next(&p, &it);) {
		if (it.has_eq && it.vlen && matches(it.key, it.klen, task)) {
			snprintf(buf, cap, "%.*s", (int)it.vlen, it.val);
			return buf;
		}
	}
	snprintf(buf, cap, "%s", cfg_str(CFG_QUEUE_DEFAULT_QUEUE));
	return buf;
}

void queue_route_targets(void (*fn)(const char *queue, size_t len, void *arg), void *arg)
{
	struct cfg_pair it;
	for (const char *p = cfg_str(CFG_QUEUE_ROUTES); cfg_list_next(&p, &it);)
		if (it.has_eq && it.vlen)
			fn(it.val, it.vlen, arg);
}

/* "task=N/s|m|h" pairs, checked when the config was loaded (cfg_validate_rate_limits). */
static void parse_limits_locked(void)
{
	nbuckets = 0;
	struct cfg_pair it;
	for (const char *p = cfg_str(CFG_QUEUE_RATE_LIMITS); nbuckets < MAX_LIMITS && cfg_list_next(&p, &it);) {
		const char *slash = it.has_eq ? memchr(it.val, '/', it.vlen) : NULL;
		if (!slash || it.klen == 0)
			continue;
		char num[32];
		snprintf(num, sizeof(num), "%.*s", (int)(slash - it.val), it.val);
		double n = strtod(num, NULL);
		double unit_ms = slash[1] == 'm' ? 60000.0 : slash[1] == 'h' ? 3600000.0 : 1000.0;
		struct bucket *b = &buckets[nbuckets];
		if (n > 0) {
			snprintf(b->task, sizeof(b->task), "%.*s", (int)(it.klen > 127 ? 127 : it.klen), it.key);
			b->per_ms = n / unit_ms;
			b->burst = b->per_ms * 1000.0 < 1.0 ? 1.0 : b->per_ms * 1000.0;
			b->tokens = b->burst;
			b->last_ms = clock_wall_ms();
			nbuckets++;
		}
	}
}

int64_t queue_rate_take(const char *task)
{
	pthread_mutex_lock(&lock);
	if (nbuckets < 0)
		parse_limits_locked();
	struct bucket *b = NULL;
	for (int i = 0; i < nbuckets && !b; i++)
		if (strcmp(buckets[i].task, task) == 0)
			b = &buckets[i];
	int64_t wait_ms = 0;
	if (b) {
		int64_t now = clock_wall_ms();
		b->tokens += (double)(now - b->last_ms) * b->per_ms;
		b->last_ms = now;
		if (b->tokens > b->burst)
			b->tokens = b->burst;
		b->tokens -= 1.0; /* taken now; a negative balance is the wait of this caller */
		if (b->tokens < 0)
			wait_ms = (int64_t)(-b->tokens / b->per_ms) + 1;
	}
	pthread_mutex_unlock(&lock);
	return wait_ms;
}

int queue_defs_from_config(struct queue_def *out, int max)
{
	static char names[16][64];
	int n = 0;
	if (max < 2)
		return 0;
	out[n++] = (struct queue_def){"conversation", (int)cfg_int(CFG_QUEUE_CONVERSATION_CONCURRENCY)};
	out[n++] = (struct queue_def){"celery", (int)cfg_int(CFG_QUEUE_CELERY_CONCURRENCY)};
	struct cfg_pair it;
	for (const char *p = cfg_str(CFG_QUEUE_QUEUES); n < max && n < 16 && cfg_list_next(&p, &it);) {
		long conc = it.has_eq ? strtol(it.val, NULL, 10) : 1;
		if (it.klen > 0 && it.klen < sizeof(names[0])) {
			snprintf(names[n], sizeof(names[n]), "%.*s", (int)it.klen, it.key);
			out[n] = (struct queue_def){names[n], conc < 1 ? 1 : conc > 256 ? 256 : (int)conc};
			n++;
		}
	}
	return n;
}
