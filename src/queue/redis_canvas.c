/*
 * redis_canvas.c - Celery's canvas on the worker side (interop.md 1.4, 1.8): after a task ends,
 * what its body's embed asks for. SUCCESS: the next task of embed.chain (stored reversed: the
 * last element, sent with the rest as its chain) and each of embed.callbacks, with the result
 * prepended to their args unless immutable. FAILURE/REVOKED: each of embed.errbacks with the
 * task id prepended (Celery's old-style errback call). A member of a chord (headers.group and a
 * non-null embed.chord) then does on_chord_part_return as Celery's Redis backend does.
 *
 * DESIGN: redis_settle.c keeps a canvas task's outcome (struct rw_canvas) until Redis confirms
 * its follow-ups, and redis_confirm.c writes them again after a lost connection or a transient
 * refusal, when Redis may have run them already with the reply lost. So each is idempotent in
 * Redis itself, in one atomic Lua step, and wire-compatible with Python workers on the same keys:
 *  - a publish (next link, callback, errback, chord body) is an LPUSH done only if its marker
 *    soma-once-<parent id>-<which> is set by the same step (SET NX EX): at most one copy of a
 *    follow-up is ever queued, whatever the consumer (a Python worker runs what it pops);
 *  - the chord join is Celery's pipeline (ZADD .j, ZCOUNT, GET .t, GET .s, EXPIRE) done only if
 *    the member's marker soma-once-<id>-join is not set yet; the step sets it to whether this
 *    join completed the chord, so a member joins once and a join replayed after the chord
 *    completed still knows to fire it (unless soma-once-<gid>-chord says it was fired: the body
 *    is published with that marker, and .j/.t/.s are deleted in the same step). A Python member
 *    joins with its plain pipeline: it adds a new member, so exactly one join - C or Python -
 *    sees the count complete, as with Celery alone.
 * The markers live as long as results (queue.result_expires_s; a day when results never
 * expire), and at least twice the visibility timeout, so a message redelivered after a crash
 * does not send its follow-ups twice either.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "queue/redis_int.h"

/* KEYS: marker, list, keys to delete; ARGV: marker ttl, message (empty: none). 1: done now, 0:
 * done before (the marker was set). */
static const char once_script[] = "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end "
				  "if ARGV[2] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[2]) end "
				  "for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end "
				  "return 1";

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

static json_t *or_null(json_t *v)
{
	return v && !json_is_null(v) ? json_incref(v) : json_null();
}

/* The markers' lifetime in seconds (see the top of the file). */
static long long marker_ttl(void)
{
	long long exp = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S), vis = queue_visibility_ms() / 1000 * 2;
	if (exp <= 0)
		exp = 86400;
	return exp > vis ? exp : vis;
}

/* The message of signature sig as a new task, child of o (first, when not NULL, prepended to its
 * args unless immutable; chain, when a non-empty array, as its embed.chain), and the list key it
 * goes to into key. The caller frees the text; NULL (logged) when sig cannot be sent. */
static char *sig_message(const struct rw_outcome *o, const json_t *sig, const json_t *first, const json_t *chain,
			 char key[CELERY_KEY_MAX])
{
	const char *name = json_string_value(json_object_get(sig, "task"));
	json_t *opts = json_object_get(sig, "options");
	if (!name) {
		log_warn("queue", "task %s: a canvas signature without a task name is skipped", o->id);
		return NULL;
	}
	const char *st = json_string_value(json_object_get(sig, "subtask_type"));
	if (st && st[0])
		log_warn("queue", "task %s: nested canvas (%s) as a follow-up is not supported; sent as a task", o->id,
			 st);
	char id[IDS_UUID_LEN + 1], routed[64];
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
	const char *root = json_string_value(json_object_get(o->canvas.headers, "root_id"));
	char *argsrepr = json_dumps(json_array_get(body, 0), JSON_COMPACT);
	json_t *headers = json_pack("{s:s, s:s, s:s, s:n, s:n, s:n, s:o, s:o, s:i, s:[n, n], s:s, s:s, s:s, s:s, "
				    "s:b}",
				    "lang", "c", "task", name, "id", tid, "shadow", "eta", "expires", "group",
				    or_null(json_object_get(opts, "group_id")), "group_index",
				    or_null(json_object_get(opts, "group_index")), "retries", 0, "timelimit", "root_id",
				    root ? root : o->id, "parent_id", o->id, "argsrepr", argsrepr ? argsrepr : "[]",
				    "kwargsrepr", "{}", "ignore_result", 0);
	static const char *const carried[] = {"soma_tenant", "soma_session", "soma_payload", "soma_max_retries"};
	for (size_t i = 0; headers && i < sizeof(carried) / sizeof(carried[0]); i++) /* who asked, for the next */
		if (json_object_get(o->canvas.headers, carried[i]))
			json_object_set(headers, carried[i], json_object_get(o->canvas.headers, carried[i]));
	const char *reply = json_string_value(json_object_get(opts, "reply_to"));
	json_t *props =
		json_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:i}", "correlation_id", tid, "reply_to", reply ? reply : "",
			  "delivery_mode", 2, "delivery_info", "exchange", "", "routing_key", queue, "priority",
			  prio < 0   ? 0
			  : prio > 9 ? 9
				     : prio);
	char *text = NULL;
	if (body && headers && props && celery_queue_key(queue, prio, key, CELERY_KEY_MAX))
		text = celery_envelope_encode(body, headers, props);
	free(argsrepr);
	json_decref(body);
	json_decref(headers);
	json_decref(props);
	if (!text)
		log_error("queue", "task %s: cannot build the follow-up %s", o->id, name);
	return text;
}

/* Appends the once step: marker, then (text not NULL) the LPUSH of text to list, and the DEL of
 * del[0..ndel). False when it could not be appended. */
static bool append_once(struct rworker *w, const char *marker, const char *list, const char *text,
			const char *const *del, int ndel)
{
	char nk[16], ttl[24];
	snprintf(nk, sizeof(nk), "%d", 2 + ndel);
	snprintf(ttl, sizeof(ttl), "%lld", marker_ttl());
	const char *argv[10] = {"EVAL", once_script, nk, marker, list};
	size_t lens[10] = {4, sizeof(once_script) - 1, strlen(nk), strlen(marker), strlen(list)};
	int argc = 5;
	for (int i = 0; i < ndel && i < 3; i++, argc++)
		argv[argc] = del[i], lens[argc] = strlen(del[i]);
	argv[argc] = ttl, lens[argc++] = strlen(ttl);
	argv[argc] = text ? text : "", lens[argc++] = text ? strlen(text) : 0;
	return redis_append_argv(w->c, argc, argv, lens) == SOMA_OK;
}

/* Appends the once-publish of sig under marker soma-once-<owner>-<which>. Returns the replies it
 * owes (0: sig cannot be sent, logged), -1 when the append failed. */
static int send_once(struct rworker *w, const struct rw_outcome *o, const char *owner, const char *which,
		     const json_t *sig, const json_t *first, const json_t *chain)
{
	char key[CELERY_KEY_MAX], marker[200];
	char *text = sig_message(o, sig, first, chain, key);
	if (!text)
		return 0;
	snprintf(marker, sizeof(marker), "soma-once-%s-%s", owner, which);
	bool ok = append_once(w, marker, key, text, NULL, 0);
	free(text);
	return ok ? 1 : -1;
}

/* Appends the once-publish of each of sigs (markers <which>-0, -1, ...), as send_once. */
static int send_each(struct rworker *w, const struct rw_outcome *o, const char *owner, const char *which,
		     const json_t *sigs, const json_t *first)
{
	int n = 0;
	for (size_t i = 0; i < json_array_size(sigs); i++) {
		char tag[32];
		snprintf(tag, sizeof(tag), "%s-%zu", which, i);
		int k = send_once(w, o, owner, tag, json_array_get(sigs, i), first, NULL);
		if (k < 0)
			return -1;
		n += k;
	}
	return n;
}

/* Reads n replies; the worst of them counts (what names them in logs). */
static enum rw_write read_replies(struct rworker *w, int n, const char *what)
{
	enum rw_write res = RW_WRITTEN;
	for (int i = 0; i < n; i++) {
		redisReply *r = redis_get_reply(w->c);
		enum rw_write k = rw_reply_class(r, what);
		freeReplyObject(r);
		if (k == RW_LOST)
			return RW_LOST;
		if (k == RW_LATER)
			res = RW_LATER;
	}
	return res;
}

/* The chord keys of group gid into j, t, s and its fired marker into f (160 bytes each). */
static void chord_keys(const char *gid, char j[160], char t[160], char s[160], char f[160])
{
	snprintf(j, 160, "celery-taskset-meta-%s.j", gid);
	snprintf(t, 160, "celery-taskset-meta-%s.t", gid);
	snprintf(s, 160, "celery-taskset-meta-%s.s", gid);
	snprintf(f, 160, "soma-once-%s-chord", gid);
}

/* The body of a complete chord: sent with the results in order, or failed with ChordError (its
 * meta and its link_error), then .j/.t/.s deleted, all once (the fired marker). */
static enum rw_write chord_fire(struct rworker *w, const struct rw_outcome *o, const char *gid, const json_t *body,
				const redisReply *members)
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
	char j[160], t[160], s[160], fired[160], key[CELERY_KEY_MAX];
	chord_keys(gid, j, t, s, fired);
	const char *const del[] = {j, t, s};
	int n = 0;
	bool ok = true;
	if (!bad) {
		char *text = sig_message(o, body, results, NULL, key);
		ok = append_once(w, fired, text ? key : fired, text, del, 3);
		n += ok;
		free(text);
	} else {
		json_t *opts = json_object_get(body, "options");
		const char *bid = json_string_value(json_object_get(opts, "task_id"));
		char why[256];
		snprintf(why, sizeof(why), "Dependency %.80s raised an error", bad);
		int k = bid ? redis_meta_append(w->c, bid, "FAILURE", NULL, "ChordError", "celery.exceptions", why,
						NULL)
			    : 2;
		int own = bid && k == 2 ? redis_owner_append(w->c, bid, o->tenant) : 0; /* the body is the tenant's */
		k = own < 0 ? -1 : k;
		json_t *first = json_string(bid ? bid : "");
		int e = k == 2 ? send_each(w, o, gid, "chord-eb", json_object_get(opts, "link_error"), first) : -1;
		json_decref(first);
		ok = k == 2 && e >= 0 && append_once(w, fired, fired, NULL, del, 3);
		n += (bid ? 2 + (own > 0 ? own : 0) : 0) + (e > 0 ? e : 0) + 1;
	}
	json_decref(all);
	json_decref(results);
	if (!ok) {
		redis_conn_broken(w->c, "a chord body could not be queued for redis");
		return RW_LOST;
	}
	return read_replies(w, n, "a chord body");
}

/* Appends the join of o's chord (group gid, body: the chord signature). False when it could not
 * be appended. */
static bool append_join(struct rworker *w, const struct rw_outcome *o, const char *gid, const json_t *body)
{
	char j[160], t[160], s[160], fired[160], joined[200], score[32], exp[24], size[24], ttl[24];
	chord_keys(gid, j, t, s, fired);
	snprintf(joined, sizeof(joined), "soma-once-%s-join", o->id);
	json_t *gi = json_object_get(o->canvas.headers, "group_index");
	if (json_is_integer(gi))
		snprintf(score, sizeof(score), "%lld", (long long)json_integer_value(gi));
	else
		snprintf(score, sizeof(score), "+inf");
	long long expires = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	json_t *cs = json_object_get(body, "chord_size");
	snprintf(exp, sizeof(exp), "%lld", expires > 0 ? expires : 0);
	snprintf(size, sizeof(size), "%lld", json_is_integer(cs) ? (long long)json_integer_value(cs) : -1LL);
	snprintf(ttl, sizeof(ttl), "%lld", marker_ttl());
	json_t *member = json_pack("[i, s, s, O]", 1, o->id, o->canvas.status,
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

/* Appends the publishes o's outcome asks for; returns the replies owed, -1 on a failed append. */
static int append_sends(struct rworker *w, const struct rw_outcome *o)
{
	const struct rw_canvas *cv = &o->canvas;
	json_t *chain = json_object_get(cv->embed, "chain"), *cbs = json_object_get(cv->embed, "callbacks");
	json_t *ebs = json_object_get(cv->embed, "errbacks");
	const json_t *result = cv->result ? cv->result : json_null();
	int n = 0, k = 0;
	if (strcmp(cv->status, "SUCCESS") == 0) {
		if (json_array_size(chain)) {
			json_t *rest = json_copy(chain);
			json_t *next = json_incref(json_array_get(rest, json_array_size(rest) - 1));
			json_array_remove(rest, json_array_size(rest) - 1);
			k = send_once(w, o, o->id, "chain", next, result, rest);
			json_decref(next);
			json_decref(rest);
			if (k < 0)
				return -1;
			n += k;
		}
		k = send_each(w, o, o->id, "cb", cbs, result);
	} else if (json_array_size(ebs)) {
		json_t *id = json_string(o->id);
		k = send_each(w, o, o->id, "eb", ebs, id);
		json_decref(id);
	}
	return k < 0 ? -1 : n + k;
}

enum rw_write redis_canvas_write(struct rworker *w, struct rw_outcome *o)
{
	const struct rw_canvas *cv = &o->canvas;
	json_t *chord = json_object_get(cv->embed, "chord");
	const char *gid = json_string_value(json_object_get(cv->headers, "group"));
	bool join = gid && json_is_object(chord);
	int owed = w->owed;
	w->owed = 0;
	int n = append_sends(w, o);
	if (n < 0 || (join && !append_join(w, o, gid, chord))) {
		if (redis_conn_ok(w->c)) /* drop the partial pipeline */
			redis_conn_broken(w->c, "a canvas follow-up could not be queued for redis");
		return RW_LOST;
	}
	enum rw_write res = read_replies(w, owed + n, "a task outcome or a canvas follow-up");
	if (res == RW_LOST || !join)
		return res;
	redisReply *r = redis_get_reply(w->c);
	enum rw_write k = rw_reply_class(r, "a chord join");
	if (k == RW_WRITTEN && res == RW_WRITTEN && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1 &&
	    r->element[1]->type == REDIS_REPLY_ARRAY)
		k = chord_fire(w, o, gid, chord, r->element[1]);
	else if (k == RW_WRITTEN && r->type != REDIS_REPLY_ARRAY)
		log_warn("queue", "task %s: the chord join of group %s failed", o->id, gid);
	freeReplyObject(r);
	return k == RW_LOST || res == RW_LOST ? RW_LOST : k == RW_LATER ? RW_LATER : res;
}
