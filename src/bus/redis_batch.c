/*
 * redis_batch.c - one batch of the redis bus driver's records as one EVALSHA of the batch script
 * (bus_redis_lua, redis_state.c; the design is in redis.c), and the frame of a committed record.
 *
 * DESIGN: runs on the publisher thread only (it owns the floor table and its connection). A
 * committed record's frame - "c <keylen> <textlen> <seq> 0\n<key><json>", exactly what the
 * subscribers parse (redis_sub.c) - is built when the record is queued (bus_rec_fill, on the
 * publishing thread), so the script only appends it to the published batch: a committed record
 * (one per message stored) costs the script no string building, only its session state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_int.h"
#include "redis/conn.h"

#define FIXED_ARGS 8 /* EVALSHA sha 0 window live_ttl log_max channel prefix */

bool bus_rec_fill(struct bus_rec *r, enum bus_rec_kind kind, const char *key, int64_t num, const char *text, size_t len)
{
	char head[96];
	int h = 0;
	size_t klen = strlen(key);
	if (kind == BUS_REC_COMMITTED)
		h = snprintf(head, sizeof(head), "c %zu %zu %lld 0\n", klen, len, (long long)num);
	if (h < 0 || (size_t)h >= sizeof(head))
		return false;
	r->off = h ? (size_t)h + klen : 0;
	r->len = r->off + len;
	if (!(r->text = malloc(r->len ? r->len : 1)))
		return false;
	if (h) {
		memcpy(r->text, head, (size_t)h);
		memcpy(r->text + h, key, klen);
	}
	memcpy(r->text + r->off, text, len);
	return true;
}

bool bus_redis_send(struct redis_conn *conn, const char *channel, struct bus_rec **recs, size_t n, bool resync_all,
		    int64_t window_ms, int64_t live_extra_ms, char *why, size_t cap)
{
	size_t nres = 0;
	struct bus_floor **lost = bus_floor_lost_list(&nres);
	resync_all = resync_all || nres > BUS_RESYNC_MAX; /* (then one resync of every stream) */
	size_t nr = resync_all ? 1 : nres, argc_max = FIXED_ARGS + 7 * (n + nr);
	const char **argv = calloc(argc_max, sizeof(*argv));
	size_t *lens = calloc(argc_max, sizeof(*lens));
	char(*nums)[24] = calloc(4 * (n + 3) + 3 + nr, sizeof(*nums));
	struct bus_floor **pubs = calloc(n + 1, sizeof(*pubs));
	bool ok = false;
	snprintf(why, cap, "out of memory");
	if (!argv || !lens || !nums || !pubs)
		goto out;
	int argc = 0;
	size_t ni = 0;
#define ARG(p, l) (argv[argc] = (p), lens[argc] = (l), argc++)
#define NUM(v)	  (snprintf(nums[ni], sizeof(nums[0]), "%lld", (long long)(v)), ARG(nums[ni], strlen(nums[ni])), ni++)
	ARG("EVALSHA", 7);
	ARG(bus_redis_lua_sha, 40);
	ARG("0", 1);
	NUM(window_ms);
	NUM(window_ms + live_extra_ms);
	NUM(BUS_LOG_MAX);
	ARG(channel, strlen(channel));
	ARG(BUS_REDIS_PREFIX, strlen(BUS_REDIS_PREFIX));
	static const char zero[] = "0";
	for (size_t i = 0; i < nr; i++) {
		const char *k = resync_all ? "" : lost[i]->key;
		ARG("r", 1);
		ARG(k, strlen(k));
		NUM(resync_all ? -1 : lost[i]->lost_seq); /* raises the session's published seq */
		for (int j = 0; j < 3; j++)
			ARG(zero, 1);
		ARG("", 0);
	}
	for (size_t i = 0; i < n; i++) {
		struct bus_rec *r = recs[i];
		struct bus_cursor floor = {-1, 0};
		int start = 0;
		if (r->kind == BUS_REC_EPHEMERAL && (pubs[i] = bus_floor_get(r->key, true))) {
			floor = pubs[i]->last;
			start = !pubs[i]->running;
			pubs[i]->running = true;
		} else if (r->kind == BUS_REC_END) {
			pubs[i] = bus_floor_get(r->key, false);
			start = pubs[i] && pubs[i]->running ? 0 : -1; /* -1: this node ran no generation there */
			if (pubs[i])
				pubs[i]->running = false;
		} else if (r->kind == BUS_REC_FORGET && (pubs[i] = bus_floor_get(r->key, false))) {
			pubs[i]->last = (struct bus_cursor){-1, 0}; /* a session of that id starts over */
			pubs[i]->running = false;
		}
		if (r->kind == BUS_REC_END && start < 0)
			continue;
		ARG(r->tag, 1);
		ARG(r->key, strlen(r->key));
		NUM(r->num);
		NUM(floor.seq);
		NUM(floor.minor);
		NUM(start);
		ARG(r->text ? r->text : "", r->len);
	}
#undef NUM
#undef ARG
	redisReply *reply = redis_cmd_argv(conn, argc, argv, lens);
	if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
		freeReplyObject(reply); /* Redis restarted (or flushed its scripts): send the text once */
		argv[0] = "EVAL", lens[0] = 4;
		argv[1] = bus_redis_lua, lens[1] = strlen(bus_redis_lua);
		reply = redis_cmd_argv(conn, argc, argv, lens);
	}
	if (!reply || reply->type != REDIS_REPLY_ARRAY) {
		snprintf(why, cap, "%s",
			 reply ? (reply->str ? reply->str : "unexpected reply") : redis_conn_error(conn));
		if (reply)
			freeReplyObject(reply);
		goto out;
	}
	size_t ri = 0;
	for (size_t i = 0; i < n; i++) {
		struct bus_rec *r = recs[i];
		if (r->kind == BUS_REC_EPHEMERAL && ri + 1 < reply->elements) {
			struct bus_cursor c = {reply->element[ri]->integer, reply->element[ri + 1]->integer};
			ri += 2;
			if (pubs[i])
				bus_floor_raise(pubs[i], c);
		} else if (r->kind == BUS_REC_END) {
			bus_local_generation_end(r->key); /* (for what this node logged while degraded) */
			if (pubs[i]) /* the floor guards one generation (a Redis restart in the middle) */
				pubs[i]->last = (struct bus_cursor){-1, 0};
		}
	}
	freeReplyObject(reply);
	bus_floor_resynced(lost, nres);
	ok = true;
out:
	free(lost);
	free(argv);
	free(lens);
	free(nums);
	free(pubs);
	return ok;
}
