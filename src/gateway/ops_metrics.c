/*
 * ops_metrics.c - the gauges of /metrics an operator alerts on that no event updates: the
 * queues' figures (soma_queue_depth, soma_queue_oldest_task_age_seconds, soma_queue_reserved,
 * soma_dead_letters), this node's workers (soma_workers, soma_workers_busy), its disk
 * (soma_disk_free_bytes, soma_store_storage_full), Redis's AOF (soma_redis_aof_enabled) and
 * beat's leader (soma_beat_leader); and the open SSE streams' gauge (soma_sse_streams).
 *
 * DESIGN: collectors (metrics.h) render these at scrape time, on the scraping io thread, so
 * each reads only what is in memory already: the pools' counters, one statvfs, the store's fault
 * flag, the health poll's AOF answer, beat's snapshot. The queue figures need a store query
 * (GROUP BY over the tasks table) and, on queue.driver=redis, Redis's list lengths: a scrape
 * renders the last figures and, when they are older than QUEUE_FIGURES_TTL_MS and no refresh
 * is under way, starts one - STORE_OP_QUEUE_STATS on a store thread, then on redis the same
 * counts GET /v1/queues adds (queue_stats_async over gw_queue_names, on a results thread) -
 * so however often Prometheus scrapes, a node runs at most one such query every few seconds and
 * the io thread never waits (figures lag a scrape by at most the TTL). A failed refresh drops
 * the figures (their series vanish, rather than show numbers that no longer hold).
 * Which node reports the queues: the figures are the cluster's (the shared store, the shared
 * Redis), so every node with the gateway role reports them and none with --role worker does;
 * aggregate them with max by (queue), never sum (docs/operations.md). Workers are per node: sum.
 * On redis the oldest task's age covers the store's outbox rows (tasks not yet relayed) only:
 * Celery's messages carry no enqueue time.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/metrics.h"
#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "orchestrator/app.h"
#include "queue/queue.h"
#include "sched/sched.h"

#define QUEUE_FIGURES_TTL_MS 5000
#define LABEL_MAX	     256

static struct {
	pthread_mutex_t lock; /* guards the fields below */
	json_t *rows;	      /* last figures [{name, depth, reserved, dead, oldest_ms}], owned; NULL none */
	int64_t asked_ms;     /* clock_mono_ms of the last refresh's start */
	bool busy;	      /* a refresh is under way */
} Q = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void figures_set(json_t *rows)
{
	pthread_mutex_lock(&Q.lock);
	json_decref(Q.rows);
	Q.rows = rows;
	Q.busy = false;
	pthread_mutex_unlock(&Q.lock);
}

/* On a results thread: Redis's waiting messages added to the store's outbox rows. */
static void on_redis_counts(json_t *counts, enum soma_err err, void *arg)
{
	json_t *rows = arg;
	if (err != SOMA_OK || !counts) {
		json_decref(rows);
		figures_set(NULL);
		return;
	}
	size_t i;
	json_t *q;
	json_array_foreach(rows, i, q)
	{
		json_t *r = json_object_get(counts, json_string_value(json_object_get(q, "name")));
		json_object_set_new(q, "depth",
				    json_integer(json_integer_value(json_object_get(q, "depth")) +
						 json_integer_value(json_object_get(r, "depth"))));
		json_object_set_new(q, "reserved", json_integer(json_integer_value(json_object_get(r, "reserved"))));
	}
	figures_set(rows);
}

/* On a store thread. */
static void on_store_counts(struct store_op *op)
{
	json_t *rows = op->err == SOMA_OK ? json_deep_copy(op->rows) : NULL;
	store_op_free(op);
	if (!rows || !queue_driver_is_redis()) {
		figures_set(rows);
		return;
	}
	json_t *names = gw_queue_names(rows);
	enum soma_err err = names ? queue_stats_async(names, on_redis_counts, rows) : SOMA_ERR_NOMEM;
	json_decref(names);
	if (err != SOMA_OK) {
		json_decref(rows);
		figures_set(NULL);
	}
}

static void refresh_start(void)
{
	struct store_op *op = app.store ? store_op_new(STORE_OP_QUEUE_STATS, "") : NULL;
	if (op) {
		op->all_tenants = true;
		op->done = on_store_counts;
		if (store_submit(app.store, op) == SOMA_OK)
			return;
		store_op_free(op);
	}
	figures_set(NULL);
}

/* A label value as the text format wants it: backslash, double quote and newline escaped. */
static const char *label(const char *s, char *buf, size_t cap)
{
	size_t o = 0;
	for (; s && *s && o + 3 < cap; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n')
			buf[o++] = '\\';
		buf[o++] = *s == '\n' ? 'n' : *s;
	}
	buf[o] = '\0';
	return buf;
}

static void family(struct metrics_buf *out, const char *name, const char *help)
{
	metrics_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

static void collect_queues(struct metrics_buf *out, void *arg)
{
	(void)arg;
	int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
	pthread_mutex_lock(&Q.lock);
	bool start = !Q.busy && (Q.asked_ms == 0 || now - Q.asked_ms >= QUEUE_FIGURES_TTL_MS);
	if (start)
		Q.busy = true, Q.asked_ms = now;
	static const struct {
		const char *name, *key, *help;
	} figures[] = {
		{"soma_queue_depth", "depth",
		 "Tasks waiting in the queue, due now (cluster-wide; reported by gateways)."},
		{"soma_queue_oldest_task_age_seconds", "oldest_ms",
		 "Age of the queue's oldest task waiting since it was due (cluster-wide; 0 when none)."},
		{"soma_queue_reserved", "reserved", "Tasks of the queue reserved by a worker, not yet acknowledged."},
		{"soma_dead_letters", "dead", "Dead-lettered tasks of the queue now (GET /v1/dead-letters)."},
	};
	int64_t wall = clock_wall_ms();
	for (size_t f = 0; Q.rows && f < sizeof(figures) / sizeof(figures[0]); f++) {
		family(out, figures[f].name, figures[f].help);
		size_t i;
		json_t *q;
		json_array_foreach(Q.rows, i, q)
		{
			char buf[LABEL_MAX];
			double v = (double)json_integer_value(json_object_get(q, figures[f].key));
			if (strcmp(figures[f].key, "oldest_ms") == 0)
				v = v > 0 && wall > v ? (double)(wall - (int64_t)v) / 1000.0 : 0;
			metrics_buf_printf(out, "%s{queue=\"%s\"} %.17g\n", figures[f].name,
					   label(json_string_value(json_object_get(q, "name")), buf, sizeof(buf)), v);
		}
	}
	pthread_mutex_unlock(&Q.lock);
	if (start)
		refresh_start();
}

static void collect_workers(struct metrics_buf *out)
{
	json_t *pools = queue_pools_json();
	const char *name;
	json_t *pool;
	static const struct {
		const char *name, *key, *help;
	} figures[] = {
		{"soma_workers", "concurrency", "Worker threads this node may run for the queue (its concurrency)."},
		{"soma_workers_busy", "busy", "Workers of this node running a task of the queue now."},
	};
	for (size_t f = 0; json_object_size(pools) && f < 2; f++) {
		family(out, figures[f].name, figures[f].help);
		json_object_foreach(pools, name, pool)
		{
			char buf[LABEL_MAX];
			metrics_buf_printf(out, "%s{queue=\"%s\"} %lld\n", figures[f].name,
					   label(name, buf, sizeof(buf)),
					   (long long)json_integer_value(json_object_get(pool, figures[f].key)));
		}
	}
	json_decref(pools);
}

static void collect_node(struct metrics_buf *out, void *arg)
{
	(void)arg;
	collect_workers(out);
	struct statvfs vfs;
	if (statvfs(cfg_str(CFG_DATA_DIR), &vfs) == 0) {
		family(out, "soma_disk_free_bytes", "Bytes free for this process on data.dir's filesystem.");
		metrics_buf_printf(out, "soma_disk_free_bytes %.17g\n", (double)vfs.f_bavail * (double)vfs.f_frsize);
		family(out, "soma_disk_size_bytes", "Size in bytes of data.dir's filesystem.");
		metrics_buf_printf(out, "soma_disk_size_bytes %.17g\n", (double)vfs.f_blocks * (double)vfs.f_frsize);
	}
	if (app.store) {
		family(out, "soma_store_storage_full", "1 while the store's writes fail because the disk is full.");
		metrics_buf_printf(out, "soma_store_storage_full %d\n", store_fault(app.store) == STORE_FAULT_FULL);
	}
	int aof = queue_driver_is_redis() ? queue_broker_aof() : -1;
	if (aof >= 0) {
		family(out, "soma_redis_aof_enabled",
		       "1 when Redis (redis.url) writes an append-only file; 0: a Redis restart loses its tasks.");
		metrics_buf_printf(out, "soma_redis_aof_enabled %d\n", aof);
	}
	int leader = sched_beat_leader();
	if (leader >= 0) {
		family(out, "soma_beat_leader", "1 on the node that holds beat's leader lock (runs the schedules).");
		metrics_buf_printf(out, "soma_beat_leader %d\n", leader);
	}
}

struct metric_series *gw_sse_gauge(enum gw_sse_kind kind)
{
	static const char *const labels[] = {"kind", NULL};
	static const char *const names[] = {"events", "a2a", "proxy"};
	struct metric_family *f =
		metrics_gauge("soma_sse_streams", "Server-Sent Events streams open now, by kind.", labels);
	const char *v[] = {names[(unsigned)kind < 3 ? kind : 0]};
	return f ? metric_series(f, v) : NULL;
}

void gw_ops_metrics_register(void)
{
	for (int k = GW_SSE_EVENTS; k <= GW_SSE_PROXY; k++)
		(void)gw_sse_gauge((enum gw_sse_kind)k);
	metrics_collector_add(collect_node, NULL);
	if (app.role & ROLE_GATEWAY)
		metrics_collector_add(collect_queues, NULL);
}
