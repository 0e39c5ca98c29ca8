/*
 * queues_api.c - GET /v1/queues (scope admin): every queue's depth, delayed, reserved and dead
 * messages, its consumers, busy workers and finished-per-second over the last minute.
 *
 * DESIGN: the store's counts come first (the queue table on queue.driver=local; on redis the
 * outbox rows not yet relayed, the dead letters). On queue.driver=local that is all there is, with
 * this process's pools: `"scope": "this node"`. On redis the messages live in Redis, so a job on a
 * task-API results thread (queue_stats_async) adds each queue's band lists (depth) and its
 * entries in kombu's `unacked` (reserved), and the pools come from every node's heartbeat (the
 * cluster view): `"scope": "cluster"`. The answer is posted back to the request's io thread; a
 * client that left meanwhile only marks the wait aborted.
 */
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "queue/queue.h"
#include "sched/sched.h"

struct queues_wait {
	struct http_req *req;	  /* invalid once aborted */
	struct io_thread *thread; /* the request's io thread */
	json_t *queues;		  /* the answer being built: [{name, ...}] (owned) */
	json_t *redis;		  /* {name: {depth, reserved}} from Redis, NULL when it did not answer */
	bool aborted;		  /* the client left */
};

static json_t *zero_row(const char *name)
{
	return json_pack("{s:s, s:i, s:i, s:i, s:i}", "name", name, "depth", 0, "delayed", 0, "reserved", 0, "dead", 0);
}

/* Adds pools' consumers, busy and finished_1m into the rows (a missing queue gets a zero row). */
static void add_pools(json_t *queues, json_t *pools)
{
	const char *name;
	json_t *pool;
	json_object_foreach(pools, name, pool)
	{
		json_t *row = NULL, *q;
		size_t i;
		json_array_foreach(queues, i, q)
		{
			if (strcmp(json_string_value(json_object_get(q, "name")), name) == 0)
				row = q;
		}
		if (!row) {
			row = zero_row(name);
			json_array_append_new(queues, row);
		}
		const char *keys[] = {"consumers", "busy", "finished_1m"};
		for (int k = 0; k < 3; k++)
			json_object_set_new(row, keys[k],
					    json_integer(json_integer_value(json_object_get(row, keys[k])) +
							 json_integer_value(json_object_get(pool, keys[k]))));
	}
}

/* consumers/busy default to 0, finished_1m becomes rate_1m (per second). */
static void finish_rows(json_t *queues)
{
	size_t i;
	json_t *q;
	json_array_foreach(queues, i, q)
	{
		json_object_set_new(q, "consumers", json_integer(json_integer_value(json_object_get(q, "consumers"))));
		json_object_set_new(q, "busy", json_integer(json_integer_value(json_object_get(q, "busy"))));
		json_object_set_new(q, "rate_1m",
				    json_real((double)json_integer_value(json_object_get(q, "finished_1m")) / 60.0));
		json_object_del(q, "finished_1m");
		json_object_del(q, "oldest_ms"); /* the store's, for soma_queue_oldest_task_age_seconds */
	}
}

static void on_abort(struct http_req *req)
{
	((struct queues_wait *)req->handler_ctx)->aborted = true;
}

static void free_wait(struct queues_wait *w)
{
	json_decref(w->queues);
	json_decref(w->redis);
	free(w);
}

/* On the io thread: Redis's counts added, then the cluster's pools. */
static void answer_redis(void *arg)
{
	struct queues_wait *w = arg;
	if (w->aborted) {
		free_wait(w);
		return;
	}
	w->req->on_abort = NULL;
	if (!w->redis) {
		http_resp_header(w->req, "Retry-After", "1");
		http_respond_error(w->req, 503, "queue_unavailable",
				   "the queue's counts (redis) are unreachable; retry shortly");
		free_wait(w);
		return;
	}
	size_t i;
	json_t *q, *node;
	json_array_foreach(w->queues, i, q)
	{
		json_t *r = json_object_get(w->redis, json_string_value(json_object_get(q, "name")));
		json_object_set_new(q, "depth",
				    json_integer(json_integer_value(json_object_get(q, "depth")) +
						 json_integer_value(json_object_get(r, "depth"))));
		json_object_set(q, "reserved", json_object_get(r, "reserved"));
	}
	json_t *nodes = sched_cluster_workers_json();
	json_array_foreach(nodes, i, node)
	{
		add_pools(w->queues, json_object_get(node, "queues"));
	}
	json_decref(nodes);
	finish_rows(w->queues);
	http_respond_json(w->req, 200, json_pack("{s:O, s:s}", "queues", w->queues, "scope", "cluster"));
	free_wait(w);
}

/* On a results thread. */
static void on_redis_counts(json_t *counts, enum soma_err err, void *arg)
{
	struct queues_wait *w = arg;
	w->redis = err == SOMA_OK ? json_incref(counts) : NULL;
	if (http_thread_post_wait(w->thread, answer_redis, w) != SOMA_OK)
		free_wait(w);
}

/* A zero row for name (len bytes) unless queues has one. */
static void add_queue(json_t *queues, const char *name, size_t len)
{
	size_t i;
	json_t *q;
	json_array_foreach(queues, i, q)
	{
		const char *have = json_string_value(json_object_get(q, "name"));
		if (have && strlen(have) == len && memcmp(have, name, len) == 0)
			return;
	}
	char buf[STORE_ID_MAX + 1];
	if (len > 0 && len < sizeof(buf)) {
		memcpy(buf, name, len);
		buf[len] = '\0';
		json_array_append_new(queues, zero_row(buf));
	}
}

static void add_route_target(const char *queue, size_t len, void *queues)
{
	add_queue(queues, queue, len);
}

json_t *gw_queue_names(json_t *queues)
{
	json_t *names = json_array(), *q, *node, *pool;
	size_t i;
	const char *name;
	json_t *nodes = sched_cluster_workers_json();
	json_array_foreach(nodes, i, node)
	{
		json_object_foreach(json_object_get(node, "queues"), name, pool)
		{
			add_queue(queues, name, strlen(name));
		}
	}
	json_decref(nodes);
	json_t *mine = queue_pools_json(); /* this node's, in case its first heartbeat is still to come */
	json_object_foreach(mine, name, pool)
	{
		add_queue(queues, name, strlen(name));
	}
	json_decref(mine);
	const char *def = cfg_str(CFG_QUEUE_DEFAULT_QUEUE);
	add_queue(queues, def, strlen(def));
	queue_route_targets(add_route_target, queues);
	json_array_foreach(queues, i, q)
	{
		json_array_append(names, json_object_get(q, "name"));
	}
	return names;
}

static void on_store_counts(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "queue");
		return;
	}
	json_t *queues = json_deep_copy(op->rows);
	if (!queue_driver_is_redis()) {
		json_t *pools = queue_pools_json();
		add_pools(queues, pools);
		json_decref(pools);
		finish_rows(queues);
		http_respond_json(req, 200, json_pack("{s:o, s:s}", "queues", queues, "scope", "this node"));
		return;
	}
	struct queues_wait *w = calloc(1, sizeof(*w));
	json_t *names = gw_queue_names(queues);
	if (!w || !names) {
		free(w);
		json_decref(names);
		json_decref(queues);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	*w = (struct queues_wait){.req = req, .thread = req->thread, .queues = queues};
	req->handler_ctx = w;
	req->on_abort = on_abort;
	enum soma_err err = queue_stats_async(names, on_redis_counts, w);
	json_decref(names);
	if (err != SOMA_OK) {
		req->on_abort = NULL;
		free_wait(w);
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "queue_unavailable",
				   "the task queue (redis) is busy or unreachable; retry shortly");
	}
}

void gw_queues_get(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = store_op_new(STORE_OP_QUEUE_STATS, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->all_tenants = true;
	gw_store(req, op, on_store_counts);
}
