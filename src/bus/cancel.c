/*
 * cancel.c - cancel notices across nodes (bus.h): a Stop, a delete or an A2A cancel made on one
 * node reaches the workers of every other node.
 *
 * DESIGN: a notice is a small JSON object {"node", "tenant", "session"|"task", "keep"}. The
 * caller's thread only queues it as a record on the redis driver's publisher queue (never waits
 * for Redis); the publisher thread PUBLISHes it on the cancel channel soma:cancel:<db>, apart
 * from the script's batches (a notice has no cursor and is not kept). The nodes that run workers
 * subscribe to that channel with the bus's subscriber thread (redis_sub.c), which hands each
 * notice here; the listener set by bus_cancel_listen applies it to that node's workers
 * (queue_cancel_session / queue_cancel_task, which keeps the cancel of a task not started yet).
 * "node" is a random id of this process: the sender has applied the cancel to its own workers
 * already, and a second application would only leave a stale pending cancel there. Not a
 * guarantee of delivery: a notice published while a node's subscription is down is lost to it
 * (logged on the sender when Redis did not take it).
 */
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_int.h"
#include "core/ids.h"
#include "core/log.h"
#include "redis/conn.h"

static _Atomic(bus_cancel_fn) listener; /* set before the subscriber starts */
static char node_id[17];		/* this process's id, set once by the first notify */
static atomic_bool node_set;

static const char *this_node(void)
{
	if (!atomic_load(&node_set)) { /* (two first callers write the same kind of value: harmless) */
		char id[17];
		if (ids_random_hex(id, 16) != SOMA_OK)
			snprintf(id, sizeof(id), "%08x%08x", ids_random_u32(), ids_random_u32());
		memcpy(node_id, id, sizeof(id));
		atomic_store(&node_set, true);
	}
	return node_id;
}

void bus_cancel_listen(bus_cancel_fn fn)
{
	(void)this_node(); /* (set before the subscriber thread compares it) */
	atomic_store(&listener, fn);
}

bool bus_cancel_listening(void)
{
	return atomic_load(&listener) != NULL;
}

enum bus_cancel_reach bus_cancel_notify(const char *tenant, const char *session_id, const char *task_id,
					bool keep_partial)
{
	if (!bus_redis_running())
		return BUS_CANCEL_LOCAL;
	json_t *n = json_pack("{s:s, s:s, s:s, s:b}", "node", this_node(), "tenant", tenant,
			      task_id ? "task" : "session", task_id ? task_id : session_id, "keep", keep_partial);
	char *text = n ? json_dumps(n, JSON_COMPACT) : NULL;
	json_decref(n);
	bool queued = text && bus_redis_enqueue(BUS_REC_CANCEL, "", 0, text, strlen(text));
	if (!queued)
		log_warn("bus", "a cancel notice (%s %s) could not be queued: the other nodes' workers go on",
			 task_id ? "task" : "session", task_id ? task_id : session_id);
	free(text);
	return queued && !bus_redis_down() ? BUS_CANCEL_SENT : BUS_CANCEL_DOWN;
}

void bus_cancel_send(struct redis_conn *c, const char *channel, const char *text, size_t len)
{
	redisReply *r = redis_cmd(c, "PUBLISH %s %b", channel, text, len);
	if (!r && redis_conn_reconnect(c) == SOMA_OK)
		r = redis_cmd(c, "PUBLISH %s %b", channel, text, len);
	if (!r || r->type == REDIS_REPLY_ERROR)
		log_warn("bus",
			 "a cancel notice could not reach the other nodes (%s): a reply running on another node's "
			 "worker goes on; stop it again once Redis answers (check redis.url): %.*s",
			 r ? r->str : redis_conn_error(c), (int)(len > 300 ? 300 : len), text);
	if (r)
		freeReplyObject(r);
}

void bus_cancel_dispatch(const char *payload, size_t len)
{
	bus_cancel_fn fn = atomic_load(&listener);
	json_t *n = json_loadb(payload, len, 0, NULL);
	const char *node = json_string_value(json_object_get(n, "node")),
		   *tenant = json_string_value(json_object_get(n, "tenant")),
		   *session = json_string_value(json_object_get(n, "session")),
		   *task = json_string_value(json_object_get(n, "task"));
	if (!node || !tenant || !(session || task))
		log_warn("bus", "malformed cancel notice ignored (%zu bytes)", len);
	else if (fn && strcmp(node, this_node()) != 0)
		fn(tenant, task ? NULL : session, task, json_is_true(json_object_get(n, "keep")));
	json_decref(n);
}
