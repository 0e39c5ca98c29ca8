/*
 * cluster.c - the cluster's workers for GET /v1/workers on queue.driver=redis (see sched.h).
 *
 * DESIGN: at every heartbeat a node that runs workers writes its entry, soma:node:<nodename>
 * (JSON: its workers and counters), with an expiry of three heartbeats, and scores itself in the
 * sorted set soma:nodes by time. Every node (gateways too) reads the live entries back at its own
 * heartbeat into a cached snapshot, so the HTTP handler copies memory and never waits on Redis.
 * A node that died disappears when its entry expires. Publisher thread only, except the copy.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "queue/queue.h"
#include "sched/sched_int.h"

#define NODES_KEY  "soma:nodes"
#define NODES_MAX  256
#define NODE_STALE 60000 /* ms: members older than this are pruned from soma:nodes */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *snapshot; /* [node entry], guarded by lock */

void cluster_register(struct redis_conn *rc, int ttl_ms)
{
	char key[200], at[CLOCK_RFC3339_LEN + 1];
	int64_t now = clock_wall_ms();
	snprintf(key, sizeof(key), "soma:node:%s", sched_nodename());
	json_t *entry = json_pack("{s:s, s:i, s:s}", "node", sched_nodename(), "pid", (int)getpid(),
				  "last_heartbeat_at", clock_rfc3339(now, at, sizeof(at)));
	ctl_worker_fields(entry);
	json_object_set_new(entry, "workers", queue_workers_json());
	json_object_set_new(entry, "queues", queue_pools_json());
	char *text = json_dumps(entry, JSON_COMPACT);
	json_decref(entry);
	if (!text)
		return;
	redisReply *r = redis_cmd(rc, "SET %s %s PX %d", key, text, ttl_ms);
	if (r)
		freeReplyObject(r);
	r = r ? redis_cmd(rc, "ZADD %s %lld %s", NODES_KEY, (long long)now, sched_nodename()) : NULL;
	if (r)
		freeReplyObject(r);
	free(text);
}

void cluster_unregister(struct redis_conn *rc)
{
	redisReply *r = redis_cmd(rc, "DEL soma:node:%s", sched_nodename());
	if (r)
		freeReplyObject(r);
	r = r ? redis_cmd(rc, "ZREM %s %s", NODES_KEY, sched_nodename()) : NULL;
	if (r)
		freeReplyObject(r);
}

void cluster_refresh(struct redis_conn *rc)
{
	long long stale = (long long)(clock_wall_ms() - NODE_STALE);
	redisReply *r = redis_cmd(rc, "ZREMRANGEBYSCORE %s -inf %lld", NODES_KEY, stale);
	if (r)
		freeReplyObject(r);
	r = r ? redis_cmd(rc, "ZRANGE %s 0 %d", NODES_KEY, NODES_MAX - 1) : NULL;
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		if (r)
			freeReplyObject(r);
		return; /* keep the last snapshot while Redis is away */
	}
	json_t *nodes = json_array();
	for (size_t i = 0; i < r->elements; i++) {
		if (!r->element[i]->str)
			continue;
		redisReply *e = redis_cmd(rc, "GET soma:node:%s", r->element[i]->str);
		json_t *v = e && e->type == REDIS_REPLY_STRING ? json_loadb(e->str, e->len, 0, NULL) : NULL;
		if (json_is_object(v))
			json_array_append_new(nodes, v);
		else
			json_decref(v);
		if (e)
			freeReplyObject(e);
	}
	freeReplyObject(r);
	pthread_mutex_lock(&lock);
	json_decref(snapshot);
	snapshot = nodes;
	pthread_mutex_unlock(&lock);
}

void cluster_reset(void)
{
	pthread_mutex_lock(&lock);
	json_decref(snapshot);
	snapshot = NULL;
	pthread_mutex_unlock(&lock);
}

json_t *sched_cluster_workers_json(void)
{
	pthread_mutex_lock(&lock);
	json_t *out = snapshot ? json_deep_copy(snapshot) : json_array();
	pthread_mutex_unlock(&lock);
	return out;
}
