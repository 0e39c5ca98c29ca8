/*
 * redis_canvas_nested.c - a group or a chord as a follow-up (the next link of a chain, Python's
 * chain(a, group(b, c)) or chain(a, group(b, c), d), which Celery turns into a chord), applied as
 * Celery's worker applies it (group.apply_async / chord.apply_async with the result as first
 * argument): no worker runs a "celery.group" or "celery.chord" message.
 *  - group: each member (frozen by the client: task_id, group_id, group_index) is published with
 *    the result prepended; Python's GroupResult reads the members' metas.
 *  - chord: the chord size (celery-taskset-meta-<gid>.s, set before any member can join), then
 *    each header member carrying the body as its chord (options.chord, group_id, group_index);
 *    the rest of the chain goes with the body (options.chain), as Celery's chord.run does.
 * Each publish is idempotent (marker soma-once-<owner>-<which>-m<i>, redis_canvas.c), and so is
 * the size (soma-once-<owner>-<which>-size). A member may be a chain of plain tasks (its last task
 * carries the group and the chord). A group or chord inside the group is not supported: the whole
 * follow-up is refused with an error in the log and a FAILURE meta (NotImplementedError) on the
 * signature's own id and on each member's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "queue/redis_canvas_int.h"

/* KEYS: marker, .s; ARGV: marker ttl, size, expires (0: none). */
static const char size_script[] = "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end "
				  "if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) "
				  "else redis.call('SET', KEYS[2], ARGV[2]) end return 1";

/* The members of a group signature or of a chord's header (a group signature or a list). */
static json_t *members_of(const json_t *g)
{
	if (json_is_array(g))
		return (json_t *)g;
	return json_object_get(json_object_get(g, "kwargs"), "tasks");
}

/* The last task of a chain signature (it joins for the chain), or NULL when sig is not one. */
static json_t *last_of(const json_t *sig)
{
	const char *st = json_string_value(json_object_get(sig, "subtask_type"));
	json_t *tasks = json_object_get(json_object_get(sig, "kwargs"), "tasks");
	if (!st || strcmp(st, "chain") != 0 || !json_array_size(tasks))
		return NULL;
	return json_array_get(tasks, json_array_size(tasks) - 1);
}

/* The task id a client waits on for signature sig (a chain's: its last task's), or NULL. */
static const char *answer_id(const json_t *sig)
{
	const json_t *t = last_of(sig) ? last_of(sig) : sig;
	return json_string_value(json_object_get(json_object_get(t, "options"), "task_id"));
}

/* A nested shape we cannot apply (members ms, chord body or NULL): logged, and a FAILURE meta on
 * the ids a client may wait on (the signature's, each member's, the body's). Replies owed. */
static int refuse(struct rworker *w, const struct rw_outcome *o, const json_t *sig, const json_t *ms,
		  const json_t *body, const char *why)
{
	log_error("queue", "task %s: a canvas follow-up (%s) is not supported on this worker: %s", o->id,
		  json_string_value(json_object_get(sig, "subtask_type")), why);
	char msg[200];
	snprintf(msg, sizeof(msg), "not supported by the somaagent worker: %s", why);
	int n = 0;
	for (size_t i = 0; i < json_array_size(ms) + 2; i++) {
		const json_t *s = i == 0 ? sig : i == 1 ? body : json_array_get(ms, i - 2);
		const char *tid = s ? answer_id(s) : NULL;
		if (!tid)
			continue;
		int k = redis_meta_append(w->c, tid, "FAILURE", NULL, "NotImplementedError", "builtins", msg, NULL);
		if (k < 2)
			return -1;
		n += k;
	}
	return n;
}

/* Appends the once-set of the chord size of gid to n. False when it could not be appended. */
static bool append_size(struct rworker *w, const char *which, const char *gid, size_t n)
{
	char marker[CELERY_ID_KEY_MAX + 64], skey[CELERY_ID_KEY_MAX], ttl[24], size[24], exp[24];
	snprintf(marker, sizeof(marker), "soma-once-%s-size", which);
	snprintf(skey, sizeof(skey), "celery-taskset-meta-%s.s", gid);
	long long expires = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	snprintf(ttl, sizeof(ttl), "%lld", rc_marker_ttl());
	snprintf(size, sizeof(size), "%zu", n);
	snprintf(exp, sizeof(exp), "%lld", expires > 0 ? expires : 0);
	const char *argv[] = {"EVAL", size_script, "2", marker, skey, ttl, size, exp};
	size_t lens[8] = {4, sizeof(size_script) - 1};
	for (int i = 2; i < 8; i++)
		lens[i] = strlen(argv[i]);
	return redis_append_argv(w->c, 8, argv, lens) == SOMA_OK;
}

int rc_send_nested(struct rworker *w, const struct rw_outcome *o, const char *which, const json_t *sig,
		   const json_t *first, const json_t *chain)
{
	bool chord = strcmp(json_string_value(json_object_get(sig, "subtask_type")), "chord") == 0;
	json_t *kw = json_object_get(sig, "kwargs");
	const json_t *header = chord ? json_object_get(kw, "header") : sig;
	json_t *ms = members_of(header), *body = chord ? json_object_get(kw, "body") : NULL;
	const char *gid = json_string_value(json_object_get(json_object_get(header, "options"), "task_id"));
	if (!gid)
		gid = json_string_value(json_object_get(json_object_get(json_array_get(ms, 0), "options"), "group_id"));
	if (!json_array_size(ms) || !gid)
		return refuse(w, o, sig, ms, body, "an empty group or one without a group id");
	if (chord && !json_is_object(body))
		return refuse(w, o, sig, ms, NULL, "a chord without a body");
	for (size_t i = 0; i < json_array_size(ms); i++) {
		const json_t *m = json_array_get(ms, i);
		const char *st = json_string_value(json_object_get(m, "subtask_type"));
		bool chain_ok = st && strcmp(st, "chain") == 0 && last_of(m) &&
				!json_string_value(json_object_get(last_of(m), "subtask_type"));
		if (st && st[0] && !chain_ok)
			return refuse(w, o, sig, ms, body, "a group or chord inside the group");
	}
	if (json_is_true(json_object_get(sig, "immutable")))
		first = NULL;
	json_t *b = NULL;
	if (chord) {
		b = json_deep_copy(body);
		if (json_array_size(chain))
			json_object_set(json_object_get(b, "options"), "chain", (json_t *)chain);
	}
	int n = 0;
	if (chord && !append_size(w, which, gid, json_array_size(ms)))
		n = -1;
	else if (chord)
		n = 1;
	for (size_t i = 0; n >= 0 && i < json_array_size(ms); i++) {
		json_t *m = json_deep_copy(json_array_get(ms, i));
		json_t *target = last_of(m) ? last_of(m) : m, *opts = json_object_get(target, "options");
		if (!json_is_object(opts))
			json_object_set_new(target, "options", opts = json_object());
		if (!json_object_get(opts, "group_id") || chord)
			json_object_set_new(opts, "group_id", json_string(gid));
		if (!json_is_integer(json_object_get(opts, "group_index")) || chord)
			json_object_set_new(opts, "group_index", json_integer((json_int_t)i));
		if (chord)
			json_object_set(opts, "chord", b);
		char key[CELERY_KEY_MAX], marker[CELERY_ID_KEY_MAX + 64];
		char *text = rc_sig_message(o, m, first, chord ? NULL : chain, key);
		snprintf(marker, sizeof(marker), "soma-once-%s-m%zu", which, i);
		if (text)
			n = rc_append_once(w, marker, key, text, NULL, 0) ? n + 1 : -1;
		free(text);
		json_decref(m);
	}
	json_decref(b);
	return n;
}
