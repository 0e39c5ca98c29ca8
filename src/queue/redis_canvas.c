/*
 * redis_canvas.c - Celery's canvas on the worker side (interop.md 1.4, 1.8): after a task ends,
 * what its body's embed asks for. SUCCESS: the next task of embed.chain (stored reversed: the
 * last element, sent with the rest as its chain) and each of embed.callbacks, with the result
 * prepended to their args unless immutable (a group or chord as the next link:
 * redis_canvas_nested.c). FAILURE/REVOKED: each of embed.errbacks with the task id prepended
 * (Celery's old-style errback call); on FAILURE also, as Celery's mark_as_failure, the same
 * FAILURE meta for every later link of embed.chain that has a task id, and the chord join of
 * such a link that is a chord member. A member of a chord (headers.group and a non-null
 * embed.chord) then does on_chord_part_return as Celery's Redis backend does
 * (redis_canvas_chord.c).
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
#include "queue/redis_canvas_int.h"

/* KEYS: marker, list, keys to delete; ARGV: marker ttl, message (empty: none). 1: done now, 0:
 * done before (the marker was set). */
static const char once_script[] = "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end "
				  "if ARGV[2] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[2]) end "
				  "for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end "
				  "return 1";

static json_t *or_null(json_t *v)
{
	return v && !json_is_null(v) ? json_incref(v) : json_null();
}

long long rc_marker_ttl(void)
{
	long long exp = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S), vis = queue_visibility_ms() / 1000 * 2;
	if (exp <= 0)
		exp = 86400;
	return exp > vis ? exp : vis;
}

/* rc_sig_message for a plain task signature. */
static char *task_message(const struct rw_outcome *o, const json_t *sig, const json_t *first, const json_t *chain,
			  char key[CELERY_KEY_MAX])
{
	const char *name = json_string_value(json_object_get(sig, "task"));
	json_t *opts = json_object_get(sig, "options");
	if (!name) {
		log_warn("queue", "task %s: a canvas signature without a task name is skipped", o->id);
		return NULL;
	}
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

char *rc_sig_message(const struct rw_outcome *o, const json_t *sig, const json_t *first, const json_t *chain,
		     char key[CELERY_KEY_MAX])
{
	if (!json_array_size(chain))
		chain = json_object_get(json_object_get(sig, "options"), "chain"); /* a chord body's rest */
	const char *st = json_string_value(json_object_get(sig, "subtask_type"));
	if (!st || strcmp(st, "chain") != 0)
		return task_message(o, sig, first, chain, key);
	/* a chain (a chord's body): its first task, with its other tasks, then chain, to run after
	 * (embed.chain is reversed: the last element runs next) */
	json_t *tasks = json_object_get(json_object_get(sig, "kwargs"), "tasks");
	json_t *rest = json_is_array(chain) ? json_copy((json_t *)chain) : json_array();
	for (size_t i = json_array_size(tasks); rest && i > 1; i--)
		json_array_append(rest, json_array_get(tasks, i - 1));
	char *text = NULL;
	if (json_array_size(tasks) && rest)
		text = rc_sig_message(o, json_array_get(tasks, 0), first, rest, key);
	else
		log_warn("queue", "task %s: an empty chain as a follow-up is skipped", o->id);
	json_decref(rest);
	return text;
}

bool rc_append_once(struct rworker *w, const char *marker, const char *list, const char *text, const char *const *del,
		    int ndel)
{
	char nk[16], ttl[24];
	snprintf(nk, sizeof(nk), "%d", 2 + ndel);
	snprintf(ttl, sizeof(ttl), "%lld", rc_marker_ttl());
	const char *argv[10] = {"EVAL", once_script, nk, marker, list};
	size_t lens[10] = {4, sizeof(once_script) - 1, strlen(nk), strlen(marker), strlen(list)};
	int argc = 5;
	for (int i = 0; i < ndel && i < 3; i++, argc++)
		argv[argc] = del[i], lens[argc] = strlen(del[i]);
	argv[argc] = ttl, lens[argc++] = strlen(ttl);
	argv[argc] = text ? text : "", lens[argc++] = text ? strlen(text) : 0;
	return redis_append_argv(w->c, argc, argv, lens) == SOMA_OK;
}

int rc_send_once(struct rworker *w, const struct rw_outcome *o, const char *owner, const char *which, const json_t *sig,
		 const json_t *first, const json_t *chain)
{
	const char *st = json_string_value(json_object_get(sig, "subtask_type"));
	if (st && (strcmp(st, "group") == 0 || strcmp(st, "chord") == 0)) {
		char tag[CELERY_ID_KEY_MAX];
		snprintf(tag, sizeof(tag), "%s-%s", owner, which);
		return rc_send_nested(w, o, tag, sig, first, chain);
	}
	char key[CELERY_KEY_MAX], marker[CELERY_ID_KEY_MAX + 64];
	char *text = rc_sig_message(o, sig, first, chain, key);
	if (!text)
		return 0;
	snprintf(marker, sizeof(marker), "soma-once-%s-%s", owner, which);
	bool ok = rc_append_once(w, marker, key, text, NULL, 0);
	free(text);
	return ok ? 1 : -1;
}

int rc_send_each(struct rworker *w, const struct rw_outcome *o, const char *owner, const char *which,
		 const json_t *sigs, const json_t *first)
{
	int n = 0;
	for (size_t i = 0; i < json_array_size(sigs); i++) {
		char tag[32];
		snprintf(tag, sizeof(tag), "%s-%zu", which, i);
		int k = rc_send_once(w, o, owner, tag, json_array_get(sigs, i), first, NULL);
		if (k < 0)
			return -1;
		n += k;
	}
	return n;
}

enum rw_write rc_read_replies(struct rworker *w, int n, const char *what)
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

#define RC_JOINS_MAX 8 /* chord joins one outcome owes at most (its own, failed chain links') */

/* A failed task's later chain links, as Celery's mark_as_failure: each that has a task id gets the
 * same FAILURE meta (its result would never come: a client waiting on the chain's last id would
 * wait forever), and each that is a chord member (options.chord: the last link of a chain in a
 * chord's header) joins its chord as failed, so the body fails at once instead of stalling.
 * Appends the metas, adds the joins to js (*nj); returns the replies owed, -1 on a failed append. */
static int fail_chain(struct rworker *w, const struct rw_outcome *o, const json_t *chain, struct rc_join *js, int *nj)
{
	int n = 0;
	for (size_t i = 0; i < json_array_size(chain); i++) {
		json_t *opts = json_object_get(json_array_get(chain, i), "options");
		const char *tid = json_string_value(json_object_get(opts, "task_id"));
		if (!tid)
			continue; /* a complex element without an id of its own, skipped as Celery does */
		int k = redis_meta_append(w->c, tid, "FAILURE", o->canvas.result, NULL, NULL, NULL, NULL);
		int own = k == 2 ? redis_owner_append(w->c, tid, o->tenant) : -1; /* the link is the tenant's */
		if (own < 0)
			return -1;
		n += k + own;
		const char *gid = json_string_value(json_object_get(opts, "group_id"));
		json_t *body = json_object_get(opts, "chord");
		if (gid && json_is_object(body) && *nj < RC_JOINS_MAX)
			js[(*nj)++] = (struct rc_join){tid, gid, body, json_object_get(opts, "group_index")};
	}
	return n;
}

/* Appends the publishes o's outcome asks for, and the metas of failed chain links; adds the
 * chord joins owed to js (*nj). Returns the replies owed, -1 on a failed append. */
static int append_sends(struct rworker *w, const struct rw_outcome *o, struct rc_join *js, int *nj)
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
			k = rc_send_once(w, o, o->id, "chain", next, result, rest);
			json_decref(next);
			json_decref(rest);
			if (k < 0)
				return -1;
			n += k;
		}
		k = rc_send_each(w, o, o->id, "cb", cbs, result);
	} else {
		if (strcmp(cv->status, "FAILURE") == 0 && (n = fail_chain(w, o, chain, js, nj)) < 0)
			return -1;
		json_t *id = json_string(o->id);
		k = json_array_size(ebs) ? rc_send_each(w, o, o->id, "eb", ebs, id) : 0;
		json_decref(id);
	}
	return k < 0 ? -1 : n + k;
}

enum rw_write redis_canvas_write(struct rworker *w, struct rw_outcome *o)
{
	const struct rw_canvas *cv = &o->canvas;
	struct rc_join js[RC_JOINS_MAX];
	int nj = 0;
	json_t *chord = json_object_get(cv->embed, "chord");
	const char *gid = json_string_value(json_object_get(cv->headers, "group"));
	if (gid && json_is_object(chord))
		js[nj++] = (struct rc_join){o->id, gid, chord, json_object_get(cv->headers, "group_index")};
	int owed = w->owed;
	w->owed = 0;
	int n = append_sends(w, o, js, &nj);
	bool ok = n >= 0;
	for (int i = 0; ok && i < nj; i++)
		ok = rc_append_join(w, o, &js[i]);
	if (!ok) {
		if (redis_conn_ok(w->c)) /* drop the partial pipeline */
			redis_conn_broken(w->c, "a canvas follow-up could not be queued for redis");
		return RW_LOST;
	}
	enum rw_write res = rc_read_replies(w, owed + n, "a task outcome or a canvas follow-up");
	redisReply *rs[RC_JOINS_MAX] = {0};
	for (int i = 0; res != RW_LOST && i < nj; i++) /* every join's reply before any body is fired */
		if (!(rs[i] = redis_get_reply(w->c)))
			res = RW_LOST;
	for (int i = 0; i < nj; i++) {
		enum rw_write k = res == RW_LOST ? RW_LOST : rc_join_finish(w, o, &js[i], rs[i], res == RW_WRITTEN);
		freeReplyObject(rs[i]);
		if (k == RW_LOST || (k == RW_LATER && res == RW_WRITTEN))
			res = k;
	}
	return res;
}
