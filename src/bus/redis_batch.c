/*
 * redis_batch.c - one batch of the redis bus driver's records as one EVALSHA of the batch script
 * (bus_redis_lua, redis_state.c; the design is in redis.c), and the frame of a committed record.
 *
 * DESIGN: runs on the publisher thread only (it owns the floor table and its connection). A
 * committed record's frame - "c <keylen> <textlen> <seq> 0\n<key><json>", exactly what the
 * subscribers parse (redis_sub.c) - is built when the record is queued (bus_rec_fill, on the
 * publishing thread), so the script only appends it to the published batch: a committed record
 * (one per message stored) costs the script no string building, only its session state.
 * A batch is built once and sent again as it is while Redis does not answer (up to the caller's
 * deadline), under a batch key of its own (soma:bus:batch:<process>:<n>) that the script checks
 * and sets: a batch that ran but whose reply was lost runs again as a no-op returning the cursors
 * it got the first time, so a retry never publishes or logs anything twice. The generation count
 * of the floor table is kept by bus_redis_account before a batch goes, whatever becomes of it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/bus_int.h"
#include "core/clock.h"
#include "core/ids.h"
#include "redis/conn.h"

#define FIXED_ARGS	 10    /* EVALSHA sha 0 window live_ttl log_max channel prefix batch_key its_ttl */
#define BATCH_KEY_TTL_MS 30000 /* a batch key outlives every retry of its batch */
#define RETRY_PAUSE_MS	 50

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

/* The batch id: this process's random part, a counter (publisher thread only). */
static char node_id[17];
static unsigned long long batch_no;

static void next_batch_key(char *out, size_t cap)
{
	if (!node_id[0] && ids_random_hex(node_id, 16) != SOMA_OK)
		snprintf(node_id, sizeof(node_id), "%08x%08x", ids_random_u32(), ids_random_u32());
	snprintf(out, cap, "%sbatch:%s:%llu", BUS_REDIS_PREFIX, node_id, ++batch_no);
}

void bus_redis_account(struct bus_rec **recs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct bus_rec *r = recs[i];
		bool create = r->kind == BUS_REC_BEGIN || r->kind == BUS_REC_EPHEMERAL;
		struct bus_floor *f = bus_floor_get(r->key, create);
		r->start = 0;
		if (r->kind == BUS_REC_BEGIN && f) {
			f->running++;
		} else if (r->kind == BUS_REC_EPHEMERAL && f && f->running == 0) {
			f->running = 1; /* a publisher without bus_generation_begin: its first delta starts one */
			r->start = 1;
		} else if (r->kind == BUS_REC_END) {
			r->start = f && f->running > 0 ? 0 : -1; /* -1: this node ran no generation there */
			if (f && f->running > 0)
				f->running--;
		} else if (r->kind == BUS_REC_FORGET && f) {
			f->last = (struct bus_cursor){-1, 0}; /* a session of that id starts over */
			f->running = 0;
		}
	}
}

/* Runs the batch once; the reply when Redis ran it (an array), else NULL with why set, and
 * *refused when Redis answered with an error that a retry would only repeat (READONLY, OOM,
 * MISCONF, a script error; not LOADING or BUSY, which pass). */
static redisReply *run_once(struct redis_conn *conn, int argc, const char **argv, size_t *lens, char *why, size_t cap,
			    bool *refused)
{
	argv[0] = "EVALSHA", lens[0] = 7;
	argv[1] = bus_redis_lua_sha, lens[1] = 40;
	redisReply *reply = redis_cmd_argv(conn, argc, argv, lens);
	if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
		freeReplyObject(reply); /* Redis restarted (or flushed its scripts): send the text once */
		argv[0] = "EVAL", lens[0] = 4;
		argv[1] = bus_redis_lua, lens[1] = strlen(bus_redis_lua);
		reply = redis_cmd_argv(conn, argc, argv, lens);
	}
	if (reply && reply->type == REDIS_REPLY_ARRAY)
		return reply;
	*refused = reply && !(reply->type == REDIS_REPLY_ERROR && reply->str &&
			      (strncmp(reply->str, "LOADING", 7) == 0 || strncmp(reply->str, "BUSY", 4) == 0));
	snprintf(why, cap, "%s", reply ? (reply->str ? reply->str : "unexpected reply") : redis_conn_error(conn));
	if (reply)
		freeReplyObject(reply);
	return NULL;
}

bool bus_redis_send(struct redis_conn *conn, const char *channel, struct bus_rec **recs, size_t n, bool resync_all,
		    int64_t window_ms, int64_t live_extra_ms, int64_t retry_until_ms, char *why, size_t cap)
{
	size_t nres = 0;
	struct bus_floor **lost = bus_floor_lost_list(&nres);
	resync_all = resync_all || nres > BUS_RESYNC_MAX; /* (then one resync of every stream) */
	size_t nr = resync_all ? 1 : nres, argc_max = FIXED_ARGS + 7 * (n + nr + nres);
	const char **argv = calloc(argc_max, sizeof(*argv));
	size_t *lens = calloc(argc_max, sizeof(*lens));
	char(*nums)[24] = calloc(4 * (n + 3) + 3 + nr + nres, sizeof(*nums));
	struct bus_floor **pubs = calloc(n + 1, sizeof(*pubs));
	char bkey[64];
	bool ok = false;
	snprintf(why, cap, "out of memory");
	if (!argv || !lens || !nums || !pubs)
		goto out;
	next_batch_key(bkey, sizeof(bkey));
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
	ARG(bkey, strlen(bkey));
	NUM(BATCH_KEY_TTL_MS);
	static const char zero[] = "0";
	for (size_t i = 0; i < nres; i++) { /* forgets that went local-only: before anything newer */
		if (!lost[i]->forget)
			continue;
		ARG("f", 1);
		ARG(lost[i]->key, strlen(lost[i]->key));
		ARG(lost[i]->forget == 2 ? "1" : "0", 1); /* deleted: every node's streams end */
		for (int j = 0; j < 3; j++)
			ARG(zero, 1);
		ARG("", 0);
	}
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
		if (r->kind == BUS_REC_END && r->start < 0)
			continue;
		if (r->kind == BUS_REC_EPHEMERAL && (pubs[i] = bus_floor_get(r->key, true)))
			floor = pubs[i]->last;
		else if (r->kind == BUS_REC_END)
			pubs[i] = bus_floor_get(r->key, false);
		ARG(r->tag, 1);
		ARG(r->key, strlen(r->key));
		NUM(r->num);
		NUM(floor.seq);
		NUM(floor.minor);
		NUM(r->start);
		ARG(r->text ? r->text : "", r->len);
	}
#undef NUM
#undef ARG
	/* Sent again while the deadline allows: the connection died under it (CLIENT KILL, a proxy),
	 * Redis restarted or did not answer in time. The batch key makes Redis run it once. A batch
	 * Redis refused (it answered) degrades at once: its streams are not held for the deadline. */
	redisReply *reply;
	bool refused = false;
	while (!(reply = run_once(conn, argc, argv, lens, why, cap, &refused)) && !refused &&
	       clock_wall_ms() < retry_until_ms) {
		nanosleep(&(struct timespec){0, RETRY_PAUSE_MS * 1000000L}, NULL);
		if (redis_conn_reconnect(conn) != SOMA_OK) /* (at once, not after the connection's backoff) */
			continue;			   /* not back yet */
	}
	if (!reply)
		goto out;
	size_t ri = 0;
	for (size_t i = 0; i < n; i++) {
		struct bus_rec *r = recs[i];
		if (r->kind == BUS_REC_EPHEMERAL && ri + 1 < reply->elements) {
			struct bus_cursor c = {reply->element[ri]->integer, reply->element[ri + 1]->integer};
			ri += 2;
			if (pubs[i])
				bus_floor_raise(pubs[i], c);
		} else if (r->kind == BUS_REC_END) {
			bus_local_generation_end(r->key);     /* (for what this node logged while degraded) */
			if (pubs[i] && pubs[i]->running == 0) /* the floor guards the session's generations
							       * (a Redis restart in the middle) */
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
