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
	const char *p = cfg_str(CFG_QUEUE_ROUTES);
	while (p && *p) {
		const char *end = strchr(p, ','), *eq = strchr(p, '=');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len && *p == ' ')
			p++, len--;
		if (eq && eq < p + len && matches(p, (size_t)(eq - p), task)) {
			size_t qlen = (size_t)(p + len - eq - 1);
			snprintf(buf, cap, "%.*s", (int)qlen, eq + 1);
			return buf;
		}
		p = end ? end + 1 : NULL;
	}
	snprintf(buf, cap, "%s", cfg_str(CFG_QUEUE_DEFAULT_QUEUE));
	return buf;
}

void queue_route_targets(void (*fn)(const char *queue, size_t len, void *arg), void *arg)
{
	const char *p = cfg_str(CFG_QUEUE_ROUTES);
	while (p && *p) {
		const char *end = strchr(p, ','), *eq = strchr(p, '=');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (eq && eq < p + len) {
			size_t qlen = (size_t)(p + len - eq - 1);
			while (qlen && eq[qlen] == ' ')
				qlen--;
			if (qlen)
				fn(eq + 1, qlen, arg);
		}
		p = end ? end + 1 : NULL;
	}
}

/* "task=N/s" pairs; a malformed pair is skipped (the config check reports nothing: documented). */
static void parse_limits_locked(void)
{
	nbuckets = 0;
	const char *p = cfg_str(CFG_QUEUE_RATE_LIMITS);
	while (p && *p && nbuckets < MAX_LIMITS) {
		const char *end = strchr(p, ',');
		char item[192];
		snprintf(item, sizeof(item), "%.*s", (int)(end ? (size_t)(end - p) : strlen(p)), p);
		char *eq = strchr(item, '='), *slash = eq ? strchr(eq, '/') : NULL;
		if (eq && slash) {
			*eq = '\0';
			double n = strtod(eq + 1, NULL);
			double unit_ms = slash[1] == 'm' ? 60000.0 : slash[1] == 'h' ? 3600000.0 : 1000.0;
			struct bucket *b = &buckets[nbuckets];
			const char *name = item;
			while (*name == ' ')
				name++;
			if (n > 0) {
				snprintf(b->task, sizeof(b->task), "%.127s", name);
				b->per_ms = n / unit_ms;
				b->burst = b->per_ms * 1000.0 < 1.0 ? 1.0 : b->per_ms * 1000.0;
				b->tokens = b->burst;
				b->last_ms = clock_wall_ms();
				nbuckets++;
			}
		}
		p = end ? end + 1 : NULL;
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
	const char *p = cfg_str(CFG_QUEUE_QUEUES);
	while (p && *p && n < max && n < 16) {
		const char *end = strchr(p, ','), *eq = strchr(p, '=');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len && *p == ' ')
			p++, len--;
		size_t nlen = eq && eq < p + len ? (size_t)(eq - p) : len;
		long conc = eq && eq < p + len ? strtol(eq + 1, NULL, 10) : 1;
		if (nlen > 0 && nlen < sizeof(names[0])) {
			snprintf(names[n], sizeof(names[n]), "%.*s", (int)nlen, p);
			out[n] = (struct queue_def){names[n], conc < 1 ? 1 : conc > 256 ? 256 : (int)conc};
			n++;
		}
		p = end ? end + 1 : NULL;
	}
	return n;
}
