/*
 * beat_state.c - beat's leader lock and the schedules' last-due watermarks (see sched_int.h).
 *
 * DESIGN: with Redis, the lock is the key soma:beat:lock holding the leader's node id with an
 * expiry (SET NX PX); the leader renews it with a compare-and-expire script, and writes the
 * watermarks (hash soma:beat:last, name -> unix s) with a script that checks the lock first, so
 * a leader that lost the lock (paused past the expiry, say) can no longer move the watermarks
 * it no longer owns. A renewal that fails on the wire keeps the leader only until the lock, as
 * last renewed, may have expired (lock_valid_until), and publishes nothing meanwhile: after a
 * failed write (renewal or watermark) `confirmed` is false until a renewal succeeds. The lock's
 * value is the node id with a random token, so two replicas with the same nodename and pid
 * never both own it. The hash soma:beat:def keeps each schedule's timing next to its watermark,
 * so an edited schedule is recognised. Without Redis the process leads alone and
 * the watermarks live in data.dir/beat-state.json (written to a temporary file, then renamed).
 * Used by beat's thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "sched/sched_int.h"

#define RENEW_LUA \
	"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
#define RELEASE_LUA "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
#define RECORD_LUA                                                                           \
	"if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "                        \
	"local cur = tonumber(redis.call('hget', KEYS[2], ARGV[2]) or '0') "                 \
	"if tonumber(ARGV[3]) > cur then redis.call('hset', KEYS[2], ARGV[2], ARGV[3]) end " \
	"local ran = tonumber(redis.call('hget', KEYS[3], ARGV[2]) or '0') "                 \
	"if tonumber(ARGV[4]) > ran then redis.call('hset', KEYS[3], ARGV[2], ARGV[4]) end " \
	"redis.call('hset', KEYS[4], ARGV[2], ARGV[5]) return 1"

struct beat_state {
	struct redis_conn *rc;	  /* NULL: file state */
	char path[4200];	  /* beat-state.json (file state) */
	char node[BEAT_NODE_MAX]; /* this node's id, the lock's value */
	int ttl_ms;		  /* lock expiry */
	bool held;		  /* we held the lock at the last check */
	bool confirmed;		  /* no write to Redis failed since the last successful renewal */
	uint64_t valid_until_ns;  /* monotonic time until which the lock cannot have expired */
	json_t *file;		  /* file state: {name: watermark} */
};

struct beat_state *beat_state_new(const char *redis_url, const char *data_dir, const char *node, int ttl_ms)
{
	struct beat_state *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->node, sizeof(s->node), "%s", node);
	s->ttl_ms = ttl_ms;
	if (redis_url && redis_url[0]) {
		char why[256];
		if (redis_conn_open(redis_url, 2000, true, &s->rc, why, sizeof(why)) != SOMA_OK) {
			log_error("beat", "%s", why);
			free(s);
			return NULL;
		}
		return s;
	}
	snprintf(s->path, sizeof(s->path), "%s/beat-state.json", data_dir);
	s->file = json_load_file(s->path, 0, NULL);
	if (!json_is_object(s->file)) {
		json_decref(s->file);
		s->file = json_object();
	}
	return s;
}

void beat_state_free(struct beat_state *s)
{
	if (!s)
		return;
	redis_conn_close(s->rc);
	json_decref(s->file);
	free(s);
}

bool beat_state_shared(const struct beat_state *s)
{
	return s->rc != NULL;
}

static long long int_reply(redisReply *r, long long def)
{
	long long v = def;
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r && r->type == REDIS_REPLY_STATUS)
		v = strcmp(r->str, "OK") == 0 ? 1 : def;
	else if (r && r->type == REDIS_REPLY_NIL)
		v = 0;
	if (r)
		freeReplyObject(r);
	return v;
}

bool beat_state_lead(struct beat_state *s)
{
	if (!s->rc)
		return s->held = true;
	uint64_t t0 = clock_mono_ns();
	long long got;
	if (s->held)
		got = int_reply(redis_cmd(s->rc, "EVAL %s 1 %s %s %d", RENEW_LUA, BEAT_KEY_LOCK, s->node, s->ttl_ms),
				-1);
	else
		got = int_reply(redis_cmd(s->rc, "SET %s %s NX PX %d", BEAT_KEY_LOCK, s->node, s->ttl_ms), -1);
	if (got == 1) {
		/* the expiry counts from when Redis ran the command, which is after t0 */
		s->valid_until_ns = t0 + (uint64_t)s->ttl_ms * 1000000ull;
		s->held = s->confirmed = true;
	} else if (got == 0) {
		s->held = false;
	} else {
		s->confirmed = false; /* Redis does not answer: publish nothing until a renewal succeeds */
		if (s->held && !beat_state_lock_valid(s))
			s->held = false; /* and the lock may have expired: step down */
	}
	return s->held;
}

bool beat_state_held(const struct beat_state *s)
{
	return s->held;
}

bool beat_state_may_publish(struct beat_state *s)
{
	if (!s->rc)
		return true;
	if (!s->confirmed)
		return false; /* the next tick's renewal must succeed first */
	if (!beat_state_lock_valid(s))
		beat_state_lead(s);
	return s->held && s->confirmed && beat_state_lock_valid(s);
}

bool beat_state_lock_valid(const struct beat_state *s)
{
	if (!s->rc)
		return true;
	/* a margin of a tenth of the expiry for clock rate differences and the publish itself */
	return s->held && clock_mono_ns() + (uint64_t)s->ttl_ms * 100000ull < s->valid_until_ns;
}

void beat_state_release(struct beat_state *s)
{
	if (s->rc && s->held)
		int_reply(redis_cmd(s->rc, "EVAL %s 1 %s %s", RELEASE_LUA, BEAT_KEY_LOCK, s->node), 0);
	s->held = false;
}

void beat_state_leader(struct beat_state *s, char *out, size_t cap)
{
	out[0] = '\0';
	if (!s->rc) {
		snprintf(out, cap, "%s", s->node);
		return;
	}
	redisReply *r = redis_cmd(s->rc, "GET %s", BEAT_KEY_LOCK);
	if (r && r->type == REDIS_REPLY_STRING)
		snprintf(out, cap, "%s", r->str);
	if (r)
		freeReplyObject(r);
}

enum field { F_DUE, F_RAN, F_DEF };

static void set_field(struct beat_entry *e, enum field f, const char *v)
{
	if (f == F_DEF)
		snprintf(e->def_seen, sizeof(e->def_seen), "%s", v ? v : "");
	else
		*(f == F_RAN ? &e->last_run : &e->last_due) = v ? strtoll(v, NULL, 10) : 0;
}

/* HGETALL key into the entries' field f; false on a Redis error. */
static bool load_hash(struct beat_state *s, const char *key, struct beat_entry *e, int n, enum field f)
{
	redisReply *r = redis_cmd(s->rc, "HGETALL %s", key);
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		if (r)
			freeReplyObject(r);
		return false;
	}
	for (int i = 0; i < n; i++) {
		const char *v = NULL;
		for (size_t j = 0; j + 1 < r->elements; j += 2)
			if (r->element[j]->str && strcmp(r->element[j]->str, e[i].name) == 0 && r->element[j + 1]->str)
				v = r->element[j + 1]->str;
		set_field(&e[i], f, v);
	}
	freeReplyObject(r);
	return true;
}

bool beat_state_load(struct beat_state *s, struct beat_entry *e, int n)
{
	if (!s->rc) {
		for (int i = 0; i < n; i++) {
			char ran[BEAT_NAME_MAX + 8], def[BEAT_NAME_MAX + 8];
			snprintf(ran, sizeof(ran), "%s@ran", e[i].name); /* '@' is not allowed in names */
			snprintf(def, sizeof(def), "%s@def", e[i].name);
			e[i].last_due = json_integer_value(json_object_get(s->file, e[i].name));
			e[i].last_run = json_integer_value(json_object_get(s->file, ran));
			set_field(&e[i], F_DEF, json_string_value(json_object_get(s->file, def)));
		}
		return true;
	}
	return load_hash(s, BEAT_KEY_LAST, e, n, F_DUE) && load_hash(s, BEAT_KEY_RAN, e, n, F_RAN) &&
	       load_hash(s, BEAT_KEY_DEF, e, n, F_DEF);
}

static bool file_save(struct beat_state *s)
{
	char tmp[4300];
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
	if (json_dump_file(s->file, tmp, JSON_COMPACT) != 0 || rename(tmp, s->path) != 0) {
		log_warn("beat", "cannot write %s; after a restart runs since the last write may repeat", s->path);
		return false;
	}
	return true;
}

bool beat_state_record(struct beat_state *s, const struct beat_entry *e)
{
	if (!s->rc) {
		char ran[BEAT_NAME_MAX + 8], def[BEAT_NAME_MAX + 8];
		snprintf(ran, sizeof(ran), "%s@ran", e->name);
		snprintf(def, sizeof(def), "%s@def", e->name);
		json_object_set_new(s->file, e->name, json_integer(e->last_due));
		json_object_set_new(s->file, ran, json_integer(e->last_run));
		json_object_set_new(s->file, def, json_string(e->def_seen));
		file_save(s);
		return true;
	}
	char due[32], run[32];
	snprintf(due, sizeof(due), "%lld", (long long)e->last_due);
	snprintf(run, sizeof(run), "%lld", (long long)e->last_run);
	long long ok =
		int_reply(redis_cmd(s->rc, "EVAL %s 4 %s %s %s %s %s %s %s %s %s", RECORD_LUA, BEAT_KEY_LOCK,
				    BEAT_KEY_LAST, BEAT_KEY_RAN, BEAT_KEY_DEF, s->node, e->name, due, run, e->def_seen),
			  -1);
	if (ok == 0)
		s->held = false;
	else if (ok != 1)
		s->confirmed = false; /* not known to be written: publish nothing until a renewal succeeds */
	return ok == 1;
}
