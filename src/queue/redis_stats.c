/*
 * redis_stats.c - what GET /v1/queues shows of the redis queue: per queue, the messages waiting
 * in its four priority band lists and the messages delivered but not acked (kombu's `unacked`).
 *
 * DESIGN: one pipeline: LLEN of every band key of every queue, then one Lua script that counts
 * the `unacked` entries by routing key (the last element of each kombu entry
 * `[message, exchange, routing_key]`, which is how both Celery and our workers record them).
 * Runs on a task-API results thread (results.c), never on an io thread; the cost of the script
 * grows with the number of unacked messages (the cluster's prefetch plus held etas).
 */
#include <stdio.h>
#include <string.h>

#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

#define BANDS 4

static const int band_priority[BANDS] = {0, 3, 6, 9};

static const char count_script[] =
	"local n = {} "
	"for _, v in ipairs(redis.call('HVALS', KEYS[1])) do "
	"  local rk = string.match(v, '\"([^\"]*)\"%s*%]%s*$') "
	"  if rk then n[rk] = (n[rk] or 0) + 1 end "
	"end "
	"local out = {} for k, c in pairs(n) do out[#out + 1] = k out[#out + 1] = c end return out";

/* Appends LLEN of each band of queue; returns how many were appended, or -1. */
static int append_depths(struct redis_conn *c, const char *queue)
{
	for (int b = 0; b < BANDS; b++) {
		char key[CELERY_KEY_MAX];
		if (!celery_queue_key(queue, band_priority[b], key, sizeof(key)))
			return -1;
		const char *argv[] = {"LLEN", key};
		size_t lens[] = {4, strlen(key)};
		if (redis_append_argv(c, 2, argv, lens) != SOMA_OK)
			return -1;
	}
	return BANDS;
}

json_t *redis_queue_stats(struct redis_conn *c, const json_t *names)
{
	if (redis_conn_ensure(c) != SOMA_OK)
		return NULL;
	size_t nq = json_array_size(names);
	for (size_t i = 0; i < nq; i++) {
		int k = append_depths(c, json_string_value(json_array_get(names, i)));
		if (k < 0) { /* all or nothing (conn.h) */
			redis_conn_broken(c, "a queue depth could not be asked");
			return NULL;
		}
	}
	json_t *out = json_object();
	for (size_t i = 0; i < nq; i++) {
		long long depth = 0;
		for (int b = 0; b < BANDS; b++) {
			redisReply *r = redis_get_reply(c);
			if (!r) {
				json_decref(out);
				return NULL;
			}
			depth += r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
			freeReplyObject(r);
		}
		json_object_set_new(out, json_string_value(json_array_get(names, i)),
				    json_pack("{s:I, s:i}", "depth", (json_int_t)depth, "reserved", 0));
	}
	redisReply *r = redis_cmd(c, "EVAL %s 1 unacked", count_script);
	if (!r) {
		json_decref(out);
		return NULL;
	}
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		json_t *q = json_object_get(out, r->element[i]->str);
		if (q && r->element[i + 1]->type == REDIS_REPLY_INTEGER)
			json_object_set_new(q, "reserved", json_integer(r->element[i + 1]->integer));
	}
	freeReplyObject(r);
	return out;
}
