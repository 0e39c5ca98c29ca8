/*
 * redis_canvas_chord.c - the chord join of a task outcome (redis_canvas.c) and the firing of a
 * complete chord's body, as Celery's Redis backend does (on_chord_part_return): the member is
 * added to celery-taskset-meta-<gid>.j; the join that completes it (.s members, plus .t) sends the
 * body with the results in order, or fails it with ChordError when a member failed. Both steps
 * are idempotent (markers soma-once-<member>-join and soma-once-<gid>-chord; see redis_canvas.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/json_py.h"
#include "core/log.h"
#include "queue/redis_canvas_int.h"

/* KEYS: .j, .t, .s, the member's join marker, the chord's fired marker; ARGV: score, member,
 * expires (0: none), the size when .s is absent (-1: unknown), marker ttl. {0}: nothing to fire;
 * {1, members in score order}: this member's join completed the chord, not fired yet. */
static const char join_script[] =
	"local st = redis.call('GET', KEYS[4]) "
	"if not st then "
	"  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) "
	"  local n = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') "
	"  local diff = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 "
	"  local size = tonumber(redis.call('GET', KEYS[3]) or ARGV[4]) or -1 "
	"  if tonumber(ARGV[3]) > 0 then for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end end "
	"  st = (size >= 0 and n == size + diff) and '2' or '1' "
	"  redis.call('SET', KEYS[4], st, 'EX', ARGV[5]) "
	"end "
	"if st ~= '2' or redis.call('EXISTS', KEYS[5]) == 1 then return {0} end "
	"return {1, redis.call('ZRANGE', KEYS[1], 0, -1)}";

/* The chord keys of group gid into j, t, s and its fired marker into f (CELERY_ID_KEY_MAX bytes each). */
static void chord_keys(const char *gid, char j[CELERY_ID_KEY_MAX], char t[CELERY_ID_KEY_MAX], char s[CELERY_ID_KEY_MAX],
		       char f[CELERY_ID_KEY_MAX])
{
	snprintf(j, CELERY_ID_KEY_MAX, "celery-taskset-meta-%s.j", gid);
	snprintf(t, CELERY_ID_KEY_MAX, "celery-taskset-meta-%s.t", gid);
	snprintf(s, CELERY_ID_KEY_MAX, "celery-taskset-meta-%s.s", gid);
	snprintf(f, CELERY_ID_KEY_MAX, "soma-once-%s-chord", gid);
}

/* Celery's "Dependency <id> raised <repr of the member's exception>" (backends/redis.py
 * on_chord_part_return): the exception rebuilt from its meta, exc_type(*exc_message), as Python
 * prints it (Exception('m5')). Into buf (cap bytes). */
static void chord_error_text(const char *id, const json_t *result, char *buf, size_t cap)
{
	int w = snprintf(buf, cap, "Dependency %s raised ", id);
	size_t at = w < 0 ? 0 : (size_t)w < cap ? (size_t)w : cap - 1;
	json_py_exc_repr(json_string_value(json_object_get(result, "exc_type")), json_object_get(result, "exc_message"),
			 buf + at, cap - at);
}

/* The body of a complete chord: sent with the results in order, or failed with ChordError (its
 * meta and its link_error), then .j/.t/.s deleted, all once (the fired marker). */
static enum rw_write chord_fire(struct rworker *w, const struct rw_outcome *o, const char *gid, const json_t *body,
				const redisReply *members)
{
	json_t *results = json_array();
	const char *bad = NULL;
	const json_t *bad_result = NULL;
	json_t *all = json_array();
	for (size_t i = 0; members && i < members->elements; i++) {
		json_t *m = json_py_load(members->element[i]->str, members->element[i]->len, 0, NULL);
		const char *st = json_string_value(json_array_get(m, 2));
		if (st && strcmp(st, "SUCCESS") != 0 && !bad) {
			bad = json_string_value(json_array_get(m, 1));
			bad_result = json_array_get(m, 3); /* (alive with all) */
		}
		json_array_append(results, json_array_get(m, 3) ? json_array_get(m, 3) : json_null());
		json_array_append_new(all, m);
	}
	char j[CELERY_ID_KEY_MAX], t[CELERY_ID_KEY_MAX], s[CELERY_ID_KEY_MAX], fired[CELERY_ID_KEY_MAX],
		key[CELERY_KEY_MAX];
	chord_keys(gid, j, t, s, fired);
	const char *const del[] = {j, t, s};
	int n = 0;
	bool ok = true;
	if (!bad) {
		char *text = rc_sig_message(o, body, results, NULL, key);
		ok = rc_append_once(w, fired, text ? key : fired, text, del, 3);
		n += ok;
		free(text);
	} else {
		json_t *opts = json_object_get(body, "options");
		const char *bid = json_string_value(json_object_get(opts, "task_id"));
		json_t *tasks = json_object_get(json_object_get(body, "kwargs"), "tasks");
		if (!bid && json_array_size(tasks)) /* a chain as the body: its last task answers for it */
			bid = json_string_value(json_object_get(
				json_object_get(json_array_get(tasks, json_array_size(tasks) - 1), "options"),
				"task_id"));
		char why[1024];
		chord_error_text(bad ? bad : "", bad_result, why, sizeof(why));
		int k = bid ? redis_meta_append(w->c, bid, "FAILURE", NULL, "ChordError", "celery.exceptions", why,
						NULL)
			    : 2;
		int own = bid && k == 2 ? redis_owner_append(w->c, bid, o->tenant) : 0; /* the body is the tenant's */
		k = own < 0 ? -1 : k;
		json_t *first = json_string(bid ? bid : "");
		int e = k == 2 ? rc_send_each(w, o, gid, "chord-eb", json_object_get(opts, "link_error"), first) : -1;
		json_decref(first);
		ok = k == 2 && e >= 0 && rc_append_once(w, fired, fired, NULL, del, 3);
		n += (bid ? 2 + (own > 0 ? own : 0) : 0) + (e > 0 ? e : 0) + 1;
	}
	json_decref(all);
	json_decref(results);
	if (!ok) {
		redis_conn_broken(w->c, "a chord body could not be queued for redis");
		return RW_LOST;
	}
	return rc_read_replies(w, n, "a chord body");
}

bool rc_append_join(struct rworker *w, const struct rw_outcome *o, const struct rc_join *jn)
{
	char j[CELERY_ID_KEY_MAX], t[CELERY_ID_KEY_MAX], s[CELERY_ID_KEY_MAX], fired[CELERY_ID_KEY_MAX],
		joined[CELERY_ID_KEY_MAX], score[32], exp[24], size[24], ttl[24];
	chord_keys(jn->gid, j, t, s, fired);
	snprintf(joined, sizeof(joined), "soma-once-%s-join", jn->id);
	if (json_is_integer(jn->index))
		snprintf(score, sizeof(score), "%lld", (long long)json_integer_value(jn->index));
	else
		snprintf(score, sizeof(score), "+inf");
	long long expires = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	json_t *cs = json_object_get(jn->body, "chord_size");
	snprintf(exp, sizeof(exp), "%lld", expires > 0 ? expires : 0);
	snprintf(size, sizeof(size), "%lld", json_is_integer(cs) ? (long long)json_integer_value(cs) : -1LL);
	snprintf(ttl, sizeof(ttl), "%lld", rc_marker_ttl());
	json_t *member = json_pack("[i, s, s, O]", 1, jn->id, o->canvas.status,
				   o->canvas.result ? o->canvas.result : json_null());
	char *enc = member ? json_dumps(member, JSON_COMPACT) : NULL;
	json_decref(member);
	if (!enc)
		return false;
	const char *argv[] = {"EVAL", join_script, "5", j, t, s, joined, fired, score, enc, exp, size, ttl};
	size_t lens[13] = {4, sizeof(join_script) - 1, 1};
	for (int i = 3; i < 13; i++)
		lens[i] = strlen(argv[i]);
	bool ok = redis_append_argv(w->c, 13, argv, lens) == SOMA_OK;
	free(enc);
	return ok;
}

enum rw_write rc_join_finish(struct rworker *w, const struct rw_outcome *o, const struct rc_join *j,
			     const redisReply *r, bool fire)
{
	enum rw_write k = rw_reply_class(r, "a chord join");
	if (k == RW_WRITTEN && fire && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1 &&
	    r->element[1]->type == REDIS_REPLY_ARRAY)
		return chord_fire(w, o, j->gid, j->body, r->element[1]);
	if (k == RW_WRITTEN && r->type != REDIS_REPLY_ARRAY)
		log_warn("queue", "task %s: the chord join of group %s failed", j->id, j->gid);
	return k;
}
