/*
 * redis_state.c - what the redis bus driver keeps: the batch script that sequences, stores and
 * publishes records in Redis; the publisher's floor table and the local delivery of records
 * Redis could not take; and the resume snapshot read from Redis (see redis.c for the design).
 *
 * DESIGN: the floor table belongs to the publisher thread (no lock): per session it knows the
 * highest cursor Redis assigned for this node (sent as the floor of the next ephemeral record,
 * and continued from while Redis is down), whether this node runs a generation there, and
 * whether a resync is owed. It is bounded (FLOOR_MAX entries; beyond, sessions simply get no
 * floor) and swept of idle entries. Snapshots run on store threads and share one connection
 * under snap_lock; each is one pipelined round trip (HGET s, LRANGE of the list).
 */
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_int.h"
#include "core/clock.h"
#include "redis/conn.h"

#define FLOOR_BUCKETS 4096
#define FLOOR_MAX     65536

/* ARGV: window_ms, live_ttl_ms, log_max, channel, key prefix, batch key, its TTL in ms, then 7 per
 * record: kind key a b c d text. c: a = seq. e: a = base seq, b.c = floor, d = 1 when this node starts a
 * generation there. b: key only (a generation begins: r counts up). f: a = 1 when the session was deleted (0: reset).
 * r: a = a committed seq this node published to its own streams only while Redis was away (-1: none), raised into the
 * session's s (so that a stream filling its gap after the resync sends it: stream_replay.c). x: key only. Returns
 * {seq, minor} per ephemeral record. The batch key makes a batch sent again (its reply was lost) run once: a batch
 * that ran stores its cursors there, and the same batch again only returns them. A session's state is
 * read once per batch and written once at its end (or before an x/f of that session), so a batch of many deltas costs a
 * handful of commands per session, not seven per delta. A c record's text is its frame, built by the publisher
 * (bus_rec_fill): it is appended as it is, and its hash is written only when it raises s. The hash's expiry is set
 * when it is created and renewed by e and b records only: a session that only commits lets it lapse after the live
 * TTL, which a stream reads as "no published seq known" (every stored row is sent: stream_replay.c), and the next c
 * record creates it again; so a committed record costs an HMGET and an HSET, not three commands and a string. */
const char bus_redis_lua[] =
	"local window, live, logmax = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
	"local channel, prefix, bkey, out, ret, st, done = ARGV[4], ARGV[5], ARGV[6], {}, {}, {}, {}\n"
	"local prev = redis.call('GET', bkey)\n"
	"if prev then\n"
	"  for v in string.gmatch(prev, '%S+') do ret[#ret + 1] = tonumber(v) end\n"
	"  return ret\n"
	"end\n"
	"local function f(x) return string.format('%d', x) end\n"
	"local function rec(k, key, s, n, text)\n"
	"  out[#out + 1] = k .. ' ' .. #key .. ' ' .. #text .. ' ' .. f(s) .. ' ' .. f(n) .. '\\n' .. key .. text\n"
	"end\n"
	"local function get(key)\n"
	"  local e = st[key]\n"
	"  if not e then\n"
	"    local mk = prefix .. key .. ':m'\n"
	"    local m = redis.call('HMGET', mk, 's', 'n')\n"
	"    e = {s = tonumber(m[1]) or -1, n = tonumber(m[2]) or 0, mk = mk, lk = prefix .. key .. ':l', push = {},\n"
	"      dirty = false, inc = 0, ttl = not m[1]}\n"
	"    st[key] = e\n"
	"  end\n"
	"  return e\n"
	"end\n"
	"local function flush(e)\n"
	"  if e.dirty then redis.call('HSET', e.mk, 's', f(e.s), 'n', f(e.n)) end\n"
	"  if e.inc ~= 0 then redis.call('HINCRBY', e.mk, 'r', e.inc) end\n"
	"  if e.ttl and (e.dirty or e.inc ~= 0) then redis.call('PEXPIRE', e.mk, live) end\n"
	"  if #e.push > 0 then\n"
	"    redis.call('RPUSH', e.lk, unpack(e.push))\n"
	"    redis.call('LTRIM', e.lk, -logmax, -1)\n"
	"    redis.call('PEXPIRE', e.lk, live)\n"
	"  end\n"
	"  e.dirty, e.inc, e.push = false, 0, {}\n"
	"end\n"
	"for i = 8, #ARGV, 7 do\n"
	"  local k, key, a, b, c, d, text = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),\n"
	"    tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6]\n"
	"  if k == 'c' then\n"
	"    local e = get(key)\n"
	"    if a > e.s then e.s, e.n, e.dirty = a, 0, true end\n"
	"    out[#out + 1] = text\n"
	"  elseif k == 'e' then\n"
	"    local e = get(key)\n"
	"    if b > e.s or (b == e.s and c > e.n) then e.s, e.n = b, c end\n"
	"    if a > e.s then e.s, e.n = a, 0 end\n"
	"    e.n = e.n + 1\n"
	"    e.dirty, e.ttl = true, true\n"
	"    if d == 1 then e.inc = e.inc + 1 end\n"
	"    e.push[#e.push + 1] = f(e.s) .. ' ' .. f(e.n) .. ' ' .. text\n"
	"    ret[#ret + 1] = e.s\n"
	"    ret[#ret + 1] = e.n\n"
	"    done[#done + 1] = f(e.s) .. ' ' .. f(e.n)\n"
	"    rec('e', key, e.s, e.n, text)\n"
	"  elseif k == 'b' then\n"
	"    local e = get(key)\n"
	"    e.inc, e.ttl = e.inc + 1, true\n"
	"  elseif k == 'x' then\n"
	"    local e = get(key)\n"
	"    flush(e)\n"
	"    if redis.call('EXISTS', e.mk) == 1 and redis.call('HINCRBY', e.mk, 'r', -1) <= 0 then\n"
	"      redis.call('HDEL', e.mk, 'r')\n"
	"      if window > 0 then redis.call('PEXPIRE', e.lk, window) else redis.call('DEL', e.lk) end\n"
	"    end\n"
	"  elseif k == 'f' then\n"
	"    redis.call('DEL', prefix .. key .. ':m', prefix .. key .. ':l')\n"
	"    st[key] = nil\n"
	"    rec('f', key, a, 0, '')\n"
	"  elseif k == 'r' then\n"
	"    if key ~= '' and a >= 0 then\n"
	"      local e = get(key)\n"
	"      if a > e.s then e.s, e.n, e.dirty = a, 0, true end\n"
	"    end\n"
	"    rec('r', key, a, 0, '')\n"
	"  end\n"
	"end\n"
	"for _, e in pairs(st) do flush(e) end\n"
	"if #out > 0 then redis.call('PUBLISH', channel, table.concat(out)) end\n"
	"redis.call('SET', bkey, table.concat(done, ' '), 'PX', ARGV[7])\n"
	"return ret\n";
char bus_redis_lua_sha[41];

static struct bus_floor *floors[FLOOR_BUCKETS];
static size_t nfloors, nlost;
static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct redis_conn *snap;

/* ---- the floor table (publisher thread) ----------------------------------------------------------- */

static size_t bucket(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)(h % FLOOR_BUCKETS);
}

struct bus_floor *bus_floor_get(const char *key, bool create)
{
	struct bus_floor **slot = &floors[bucket(key)];
	for (struct bus_floor *f = *slot; f; f = f->next) {
		if (strcmp(f->key, key) == 0) {
			f->touched_ms = clock_wall_ms();
			return f;
		}
	}
	struct bus_floor *f = create && nfloors < FLOOR_MAX ? calloc(1, sizeof(*f)) : NULL;
	if (!f)
		return NULL;
	snprintf(f->key, sizeof(f->key), "%s", key);
	f->last = (struct bus_cursor){-1, 0};
	f->lost_seq = -1;
	f->touched_ms = clock_wall_ms();
	f->next = *slot;
	*slot = f;
	nfloors++;
	return f;
}

void bus_floor_raise(struct bus_floor *f, struct bus_cursor c)
{
	if (bus_cursor_cmp(c, f->last) > 0)
		f->last = c;
}

void bus_floor_lost(struct bus_floor *f)
{
	if (!f->lost)
		nlost++;
	f->lost = true;
}

size_t bus_floor_lost_count(void)
{
	return nlost;
}

struct bus_floor **bus_floor_lost_list(size_t *n)
{
	*n = 0;
	struct bus_floor **list = nlost ? malloc(nlost * sizeof(*list)) : NULL;
	for (size_t b = 0; list && b < FLOOR_BUCKETS; b++) {
		for (struct bus_floor *f = floors[b]; f && *n < nlost; f = f->next) {
			if (f->lost)
				list[(*n)++] = f;
		}
	}
	return list;
}

void bus_floor_resynced(struct bus_floor **list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (list[i]->lost)
			nlost--;
		list[i]->lost = false;
		list[i]->lost_seq = -1;
		list[i]->forget = 0;
	}
}

void bus_floor_sweep(int64_t idle_before_ms)
{
	for (size_t b = 0; b < FLOOR_BUCKETS; b++) {
		for (struct bus_floor **slot = &floors[b]; *slot;) {
			struct bus_floor *f = *slot;
			if (f->running > 0 || f->lost || f->touched_ms >= idle_before_ms) {
				slot = &f->next;
				continue;
			}
			*slot = f->next;
			free(f);
			nfloors--;
		}
	}
}

void bus_floor_clear(void)
{
	for (size_t b = 0; b < FLOOR_BUCKETS; b++) {
		while (floors[b]) {
			struct bus_floor *f = floors[b];
			floors[b] = f->next;
			free(f);
		}
	}
	nfloors = nlost = 0;
}

/* One record Redis could not take (publisher thread): this node's streams get it, the cursors
 * continued from the floor; the session is marked for a resync once Redis is back, and a forget
 * is owed to Redis and the other nodes with it (bus_redis_send sends it first). */
void bus_redis_degrade(enum bus_rec_kind kind, const char *key, int64_t num, const char *text, size_t len)
{
	bool data = kind == BUS_REC_COMMITTED || kind == BUS_REC_EPHEMERAL;
	struct bus_floor *p = bus_floor_get(key, data || kind == BUS_REC_FORGET);
	if (kind == BUS_REC_COMMITTED) {
		bus_local_publish_committed(key, num, text, len);
		if (p)
			bus_floor_raise(p, (struct bus_cursor){num, 0});
		if (p && num > p->lost_seq)
			p->lost_seq = num; /* Redis learns it with the resync: other nodes' streams fill it */
	} else if (kind == BUS_REC_EPHEMERAL && p) {
		struct bus_cursor c = num > p->last.seq ? (struct bus_cursor){num, 1}
							: (struct bus_cursor){p->last.seq, p->last.minor + 1};
		bus_floor_raise(p, c);
		bus_local_put(key, c, text, len);
	} else if (kind == BUS_REC_EPHEMERAL) {
		bus_local_publish_ephemeral(key, num, text, len, NULL); /* (floor table full) */
	} else if (kind == BUS_REC_BEGIN) {
		bus_local_generation_begin(key); /* (its end: with the x record, either way) */
	} else if (kind == BUS_REC_END) {
		bus_local_generation_end(key);
		if (p && p->running == 0) /* (counted by bus_redis_account) */
			p->last = (struct bus_cursor){-1, 0};
	} else if (kind == BUS_REC_FORGET) {
		if (p) {
			p->last = (struct bus_cursor){-1, 0}; /* a session of that id starts over */
			p->lost_seq = -1;
			p->forget = num == 1 || p->forget == 2 ? 2 : 1; /* owed: Redis keeps its state */
			bus_floor_lost(p);
		}
		if (num == 1 || num == 2) /* deleted: this node's streams end (another node's when the
					   * fill of its gap marker finds the session gone); reset: told */
			bus_local_end(key, num == 2);
	}
	if (p && data)
		bus_floor_lost(p);
}

/* ---- snapshots (store threads) ---------------------------------------------------------------------- */

enum soma_err bus_snap_open(const char *url, char *why, size_t cap)
{
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)bus_redis_lua, strlen(bus_redis_lua), md);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(bus_redis_lua_sha + 2 * i, 3, "%02x", md[i]);
	return redis_conn_open(url, 1000, true, &snap, why, cap);
}

void bus_snap_close(void)
{
	pthread_mutex_lock(&snap_lock);
	redis_conn_close(snap);
	snap = NULL;
	pthread_mutex_unlock(&snap_lock);
}

/* Parses a list entry "<seq> <minor> <json>"; NULL when malformed or not after `after`. */
static struct bus_msg *entry_msg(const redisReply *e, struct bus_cursor after)
{
	if (e->type != REDIS_REPLY_STRING)
		return NULL;
	char *end;
	struct bus_cursor c;
	c.seq = strtoll(e->str, &end, 10);
	if (*end != ' ')
		return NULL;
	c.minor = strtoll(end + 1, &end, 10);
	if (*end != ' ' || c.seq < 0 || c.minor < 1 || bus_cursor_cmp(c, after) <= 0)
		return NULL;
	size_t at = (size_t)(end + 1 - e->str);
	return bus_msg_new(c, e->str + at, e->len - at);
}

static int cmp_msg(const void *a, const void *b)
{
	return bus_cursor_cmp((*(struct bus_msg *const *)a)->cursor, (*(struct bus_msg *const *)b)->cursor);
}

/* Adds the ephemerals of list (after `after`) to *msgs, sorts, drops duplicate cursors. */
static enum soma_err merge(const redisReply *list, struct bus_cursor after, struct bus_msg ***msgs, size_t *n)
{
	struct bus_msg **all = malloc((*n + list->elements + 1) * sizeof(*all));
	if (!all)
		return SOMA_ERR_NOMEM;
	if (*n)
		memcpy(all, *msgs, *n * sizeof(*all));
	size_t k = *n;
	for (size_t i = 0; i < list->elements; i++) {
		struct bus_msg *m = entry_msg(list->element[i], after);
		if (m)
			all[k++] = m;
	}
	qsort(all, k, sizeof(*all), cmp_msg);
	size_t out = 0;
	for (size_t i = 0; i < k; i++) {
		if (out > 0 && bus_cursor_cmp(all[out - 1]->cursor, all[i]->cursor) == 0)
			bus_msg_release(all[i]); /* delivered locally and stored in Redis: once */
		else
			all[out++] = all[i];
	}
	free(*msgs);
	*msgs = all;
	*n = out;
	return SOMA_OK;
}

enum soma_err bus_redis_snapshot(const char *key, struct bus_cursor after, struct bus_msg ***msgs, size_t *n,
				 int64_t *published_seq)
{
	enum soma_err err = bus_local_snapshot(key, after, msgs, n, published_seq);
	if (err != SOMA_OK || bus_redis_down())
		return err; /* Redis down: what this node delivered itself is all there is */
	char mk[BUS_KEY_MAX + 16], lk[BUS_KEY_MAX + 16];
	snprintf(mk, sizeof(mk), "%s%s:m", BUS_REDIS_PREFIX, key);
	snprintf(lk, sizeof(lk), "%s%s:l", BUS_REDIS_PREFIX, key);
	const char *hget[] = {"HGET", mk, "s"}, *lrange[] = {"LRANGE", lk, "0", "-1"};
	redisReply *s = NULL, *list = NULL;
	pthread_mutex_lock(&snap_lock);
	/* A connection left idle across a Redis restart is found dead by its first round trip: then
	 * one more, on a new connection at once, instead of a resume without Redis's part. */
	for (int attempt = 0; snap && attempt < 2; attempt++) {
		bool was_up = redis_conn_ok(snap);
		if ((attempt == 0 ? redis_conn_ensure(snap) : redis_conn_reconnect(snap)) != SOMA_OK ||
		    redis_append_argv(snap, 3, hget, NULL) != SOMA_OK ||
		    redis_append_argv(snap, 4, lrange, NULL) != SOMA_OK)
			break;
		s = redis_get_reply(snap); /* s first: the list then holds every ephemeral sequenced before it */
		list = redis_get_reply(snap);
		if (s || !was_up)
			break; /* answered, or a new connection failed: Redis is down */
		if (list)
			freeReplyObject(list);
		list = NULL;
	}
	pthread_mutex_unlock(&snap_lock);
	if (s && s->type == REDIS_REPLY_STRING) {
		int64_t seq = strtoll(s->str, NULL, 10);
		if (seq > *published_seq)
			*published_seq = seq;
	}
	if (list && list->type == REDIS_REPLY_ARRAY && list->elements > 0)
		(void)merge(list, after, msgs, n); /* (out of memory: the local part stands alone) */
	if (s)
		freeReplyObject(s);
	if (list)
		freeReplyObject(list);
	return err;
}
