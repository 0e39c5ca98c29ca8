/*
 * redis_canvas.c - Celery's canvas on the worker side (interop.md 1.4, 1.8): after a task ends,
 * what its body's embed asks for. SUCCESS: the next task of embed.chain (stored reversed: the
 * last element, sent with the rest as its chain) and each of embed.callbacks, with the result
 * prepended to their args unless immutable. FAILURE/REVOKED: each of embed.errbacks with the
 * task id prepended (Celery's old-style errback call). A member of a chord (headers.group and a
 * non-null embed.chord) then does on_chord_part_return as Celery's Redis backend does.
 *
 * DESIGN: called by redis_settle.c after the result meta is appended and before the ack, so a
 * crash in between sends the follow-ups again rather than never (the ids are the signatures'
 * own task_ids: a duplicate is skipped by the consumer's ready-result check). The chord join is
 * one MULTI/EXEC (ZADD .j, ZCOUNT, GET .t, GET .s, EXPIRE), so exactly one member, C or Python,
 * sees the count complete and sends the body.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "queue/redis_int.h"

static json_t *or_null(json_t *v)
{
	return v && !json_is_null(v) ? json_incref(v) : json_null();
}

/* Appends the LPUSH of signature sig as a new task (first, when not NULL, prepended to its args
 * unless immutable; chain, when a non-empty array, as its embed.chain). */
static bool send_sig(struct rworker *w, const json_t *sig, const json_t *first, const json_t *chain)
{
	const char *name = json_string_value(json_object_get(sig, "task"));
	json_t *opts = json_object_get(sig, "options");
	if (!name) {
		log_warn("queue", "task %s: a canvas signature without a task name is skipped", w->cur.m.id);
		return false;
	}
	const char *st = json_string_value(json_object_get(sig, "subtask_type"));
	if (st && st[0])
		log_warn("queue", "task %s: nested canvas (%s) as a follow-up is not supported; sent as a task",
			 w->cur.m.id, st);
	char id[IDS_UUID_LEN + 1], routed[64], key[CELERY_KEY_MAX];
	const char *tid = json_string_value(json_object_get(opts, "task_id"));
	if (!tid)
		ids_uuid4(id), tid = id;
	const char *queue = json_string_value(json_object_get(opts, "queue"));
	if (!queue)
		queue = json_string_value(json_object_get(opts, "routing_key"));
	if (!queue)
		queue = queue_route(name, routed, sizeof(routed));
	int prio = (int)json_integer_value(json_object_get(opts, "priority"));
	json_t *args =
		json_is_array(json_object_get(sig, "args")) ? json_copy(json_object_get(sig, "args")) : json_array();
	if (first && !json_is_true(json_object_get(sig, "immutable")))
		json_array_insert(args, 0, (json_t *)first);
	json_t *kwargs = json_object_get(sig, "kwargs");
	kwargs = json_is_object(kwargs) ? json_incref(kwargs) : json_object();
	json_t *body = json_pack("[o, o, {s:o, s:o, s:o, s:o}]", args, kwargs, "callbacks",
				 or_null(json_object_get(opts, "link")), "errbacks",
				 or_null(json_object_get(opts, "link_error")), "chain",
				 json_array_size(chain) ? json_incref((json_t *)chain) : json_null(), "chord",
				 or_null(json_object_get(opts, "chord")));
	const char *root = json_string_value(json_object_get(w->cur.m.headers, "root_id"));
	char *argsrepr = json_dumps(json_array_get(body, 0), JSON_COMPACT);
	json_t *headers = json_pack("{s:s, s:s, s:s, s:n, s:n, s:n, s:o, s:o, s:i, s:[n, n], s:s, s:s, s:s, s:s, "
				    "s:b}",
				    "lang", "c", "task", name, "id", tid, "shadow", "eta", "expires", "group",
				    or_null(json_object_get(opts, "group_id")), "group_index",
				    or_null(json_object_get(opts, "group_index")), "retries", 0, "timelimit", "root_id",
				    root ? root : w->cur.m.id, "parent_id", w->cur.m.id, "argsrepr",
				    argsrepr ? argsrepr : "[]", "kwargsrepr", "{}", "ignore_result", 0);
	static const char *const carried[] = {"soma_tenant", "soma_session", "soma_payload", "soma_max_retries"};
	for (size_t i = 0; headers && i < sizeof(carried) / sizeof(carried[0]); i++) /* who asked, for the next */
		if (json_object_get(w->cur.m.headers, carried[i]))
			json_object_set(headers, carried[i], json_object_get(w->cur.m.headers, carried[i]));
	const char *reply = json_string_value(json_object_get(opts, "reply_to"));
	json_t *props =
		json_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:i}", "correlation_id", tid, "reply_to", reply ? reply : "",
			  "delivery_mode", 2, "delivery_info", "exchange", "", "routing_key", queue, "priority",
			  prio < 0   ? 0
			  : prio > 9 ? 9
				     : prio);
	char *text = NULL;
	if (body && headers && props && celery_queue_key(queue, prio, key, sizeof(key)))
		text = celery_envelope_encode(body, headers, props);
	free(argsrepr);
	json_decref(body);
	json_decref(headers);
	json_decref(props);
	if (!text) {
		log_error("queue", "task %s: cannot build the follow-up %s", w->cur.m.id, name);
		return false;
	}
	const char *argv[] = {"LPUSH", key, text};
	size_t lens[] = {5, strlen(key), strlen(text)};
	bool ok = redis_append_argv(w->c, 3, argv, lens) == SOMA_OK;
	w->owed += ok;
	free(text);
	return ok;
}

static void send_each(struct rworker *w, json_t *sigs, const json_t *first)
{
	size_t i;
	json_t *s;
	json_array_foreach(sigs, i, s)
	{
		send_sig(w, s, first, NULL);
	}
}

/* The body of a complete chord: sent with the results in order, or failed with ChordError. */
static void chord_fire(struct rworker *w, const json_t *body, redisReply *members)
{
	json_t *results = json_array();
	const char *bad = NULL;
	json_t *all = json_array();
	for (size_t i = 0; members && i < members->elements; i++) {
		json_t *m = json_loadb(members->element[i]->str, members->element[i]->len, 0, NULL);
		const char *st = json_string_value(json_array_get(m, 2));
		if (st && strcmp(st, "SUCCESS") != 0 && !bad)
			bad = json_string_value(json_array_get(m, 1));
		json_array_append(results, json_array_get(m, 3) ? json_array_get(m, 3) : json_null());
		json_array_append_new(all, m);
	}
	if (!bad) {
		send_sig(w, body, results, NULL);
	} else {
		const char *bid = json_string_value(json_object_get(json_object_get(body, "options"), "task_id"));
		char why[256];
		snprintf(why, sizeof(why), "Dependency %.80s raised an error", bad);
		if (bid)
			w->owed += redis_meta_append(w->c, bid, "FAILURE", NULL, "ChordError", "celery.exceptions", why,
						     NULL);
		json_t *first = json_string(bid ? bid : "");
		send_each(w, json_object_get(json_object_get(body, "options"), "link_error"), first);
		json_decref(first);
	}
	json_decref(all);
	json_decref(results);
}

static void append_cmd(struct rworker *w, int argc, const char **argv)
{
	size_t lens[8];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	if (redis_append_argv(w->c, argc, argv, lens) == SOMA_OK)
		w->owed++;
}

/* Celery's on_chord_part_return for the Redis backend (zset .j, sizes .s and .t). */
static void chord_part(struct rworker *w, const char *gid, const json_t *body, const char *status, const json_t *result)
{
	struct celery_msg *m = &w->cur.m;
	char j[160], t[160], s[160], score[32], ttl[24];
	snprintf(j, sizeof(j), "celery-taskset-meta-%s.j", gid);
	snprintf(t, sizeof(t), "celery-taskset-meta-%s.t", gid);
	snprintf(s, sizeof(s), "celery-taskset-meta-%s.s", gid);
	json_t *gi = json_object_get(m->headers, "group_index");
	if (json_is_integer(gi))
		snprintf(score, sizeof(score), "%lld", (long long)json_integer_value(gi));
	else
		snprintf(score, sizeof(score), "+inf");
	long long exp = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	snprintf(ttl, sizeof(ttl), "%lld", exp);
	json_t *member = json_pack("[i, s, s, O]", 1, m->id, status, result ? result : json_null());
	char *enc = member ? json_dumps(member, JSON_COMPACT) : NULL;
	json_decref(member);
	if (!enc)
		return;
	rw_drain(w); /* the meta (and earlier acks) first; then the replies here are ours */
	const char *multi[] = {"MULTI"}, *zadd[] = {"ZADD", j, score, enc}, *zc[] = {"ZCOUNT", j, "-inf", "+inf"};
	const char *gt[] = {"GET", t}, *gs[] = {"GET", s}, *exec[] = {"EXEC"};
	append_cmd(w, 1, multi);
	append_cmd(w, 4, zadd);
	append_cmd(w, 4, zc);
	append_cmd(w, 2, gt);
	append_cmd(w, 2, gs);
	int queued = 4;
	if (exp > 0) {
		const char *e1[] = {"EXPIRE", j, ttl}, *e2[] = {"EXPIRE", t, ttl}, *e3[] = {"EXPIRE", s, ttl};
		append_cmd(w, 3, e1);
		append_cmd(w, 3, e2);
		append_cmd(w, 3, e3);
		queued += 3;
	}
	append_cmd(w, 1, exec);
	free(enc);
	/* MULTI's +OK and each +QUEUED, then EXEC's array */
	redisReply *r = NULL;
	for (int i = 0; i < queued + 2 && w->owed > 0; i++, w->owed--) {
		freeReplyObject(r);
		if (!(r = redis_get_reply(w->c))) {
			w->owed = 0;
			return;
		}
	}
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 4) {
		log_warn("queue", "task %s: the chord join of group %s failed", m->id, gid);
		freeReplyObject(r);
		return;
	}
	long long count = r->element[1]->integer, diff = 0, size = -1;
	if (r->element[2]->type == REDIS_REPLY_STRING)
		diff = strtoll(r->element[2]->str, NULL, 10);
	if (r->element[3]->type == REDIS_REPLY_STRING)
		size = strtoll(r->element[3]->str, NULL, 10);
	else if (json_is_integer(json_object_get(body, "chord_size")))
		size = json_integer_value(json_object_get(body, "chord_size"));
	freeReplyObject(r);
	if (size < 0 || count != size + diff)
		return;
	const char *zr[] = {"ZRANGE", j, "0", "-1"};
	size_t zl[] = {6, strlen(j), 1, 2};
	r = redis_cmd_argv(w->c, 4, zr, zl);
	if (r && r->type == REDIS_REPLY_ARRAY) {
		chord_fire(w, body, r);
		const char *del[] = {"DEL", j, t, s};
		append_cmd(w, 4, del);
	} else {
		log_warn("queue", "task %s: cannot read the chord results of group %s", m->id, gid);
	}
	freeReplyObject(r);
}

void redis_canvas_after(struct rworker *w, const char *status, const json_t *result)
{
	if (strcmp(status, "RETRY") == 0 || !json_object_size(w->cur.m.embed))
		return;
	json_t *embed = w->cur.m.embed;
	json_t *chain = json_object_get(embed, "chain"), *cbs = json_object_get(embed, "callbacks");
	json_t *ebs = json_object_get(embed, "errbacks"), *chord = json_object_get(embed, "chord");
	const char *gid = json_string_value(json_object_get(w->cur.m.headers, "group"));
	bool ok = strcmp(status, "SUCCESS") == 0;
	if (ok && json_array_size(chain)) {
		json_t *rest = json_copy(chain);
		json_t *next = json_incref(json_array_get(rest, json_array_size(rest) - 1));
		json_array_remove(rest, json_array_size(rest) - 1);
		send_sig(w, next, result ? result : json_null(), rest);
		json_decref(next);
		json_decref(rest);
	}
	if (ok && json_array_size(cbs))
		send_each(w, cbs, result ? result : json_null());
	if (!ok && json_array_size(ebs)) {
		json_t *id = json_string(w->cur.m.id);
		send_each(w, ebs, id);
		json_decref(id);
	}
	if (gid && json_is_object(chord))
		chord_part(w, gid, chord, status, result);
}
