/*
 * a2a_objects.c - A2A tasks read from session events, and the wire objects of both spec versions.
 *
 * DESIGN: one struct a2a_task (a2a_int.h) is filled from the session's events (a2a_task_apply)
 * and written in the shape the caller's method asked for: spec 0.3 objects carry `kind` and
 * lower-case enums ("completed", role "agent", parts {kind:"text", text}); spec 1.0 (ProtoJSON)
 * has no `kind`, enums TASK_STATE_* and ROLE_*, parts {text}, and stream events wrapped as
 * {"task"|"statusUpdate"|"artifactUpdate": ...}. The reply is one artifact "reply" with one text
 * part; the user's message is the task's history. Pure functions, any thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "gateway/a2a_int.h"
#include "gateway/gateway.h"

bool a2a_task_id_parse(const char *s, struct a2a_task *t)
{
	const char *dot1 = s ? strchr(s, '.') : NULL;
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2 || strlen(s) >= A2A_TASK_ID_MAX || dot1 == s || (size_t)(dot1 - s) > 64)
		return false;
	memset(t, 0, sizeof(*t));
	snprintf(t->context, sizeof(t->context), "%.*s", (int)(dot1 - s), s);
	int64_t seq = 0;
	for (const char *p = dot1 + 1; p < dot2; p++) {
		if (*p < '0' || *p > '9' || seq > INT64_MAX / 10 - 10)
			return false;
		seq = seq * 10 + (*p - '0');
	}
	snprintf(t->gen, sizeof(t->gen), "%s", dot2 + 1);
	if (dot2 == dot1 + 1 || seq < 1 || !gw_valid_id(t->context) || !gw_valid_id(t->gen))
		return false;
	t->seq = seq;
	snprintf(t->id, sizeof(t->id), "%s", s);
	return true;
}

void a2a_task_id_make(struct a2a_task *t)
{
	snprintf(t->id, sizeof(t->id), "%s.%lld.%s", t->context, (long long)t->seq, t->gen);
}

void a2a_task_clear(struct a2a_task *t)
{
	free(t->user_text);
	free(t->user_msgid);
	free(t->reply);
	free(t->created);
	free(t->updated);
	t->user_text = t->user_msgid = t->reply = t->created = t->updated = NULL;
}

bool a2a_state_terminal(enum a2a_state s)
{
	return s == A2A_COMPLETED || s == A2A_CANCELED || s == A2A_FAILED;
}

static char *dup_of(json_t *v)
{
	const char *s = json_string_value(v);
	return s ? strdup(s) : NULL;
}

bool a2a_task_apply(struct a2a_task *t, json_t *ev)
{
	const char *type = json_string_value(json_object_get(ev, "type"));
	json_t *meta = json_object_get(ev, "metadata");
	if (!type || a2a_state_terminal(t->state))
		return false;
	if (strcmp(type, "user") == 0) {
		json_t *a2a = json_object_get(meta, "a2a");
		const char *gen = json_string_value(json_object_get(a2a, "task"));
		if (json_integer_value(json_object_get(ev, "seq")) != t->seq || !gen || strcmp(gen, t->gen) != 0)
			return false;
		free(t->user_text), free(t->user_msgid), free(t->created);
		t->user_text = dup_of(json_object_get(ev, "message"));
		t->user_msgid = dup_of(json_object_get(a2a, "message_id"));
		t->created = dup_of(json_object_get(ev, "created_at"));
		return false;
	}
	const char *gen = json_string_value(json_object_get(meta, "generation_id"));
	if (!gen || strcmp(gen, t->gen) != 0)
		return false;
	if (strcmp(type, "assistant.final") == 0) {
		const char *status = json_string_value(json_object_get(meta, "status"));
		t->state = status && strcmp(status, "cancelled") == 0 ? A2A_CANCELED : A2A_COMPLETED;
	} else if (strcmp(type, "assistant.error") == 0) {
		t->state = A2A_FAILED;
	} else {
		if (t->state == A2A_SUBMITTED) /* thinking, deltas: the reply is being made */
			t->state = A2A_WORKING;
		return false;
	}
	free(t->reply), free(t->updated);
	t->reply = dup_of(json_object_get(ev, "message"));
	t->updated = dup_of(json_object_get(ev, "created_at"));
	return true;
}

/* ---- wire objects ------------------------------------------------------------------------ */

static const char *state_name(enum a2a_ver v, enum a2a_state s)
{
	static const char *v03[] = {"submitted", "working", "completed", "canceled", "failed"};
	static const char *v10[] = {"TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED",
				    "TASK_STATE_CANCELED", "TASK_STATE_FAILED"};
	return v == A2A_V03 ? v03[s] : v10[s];
}

static json_t *text_parts(enum a2a_ver v, const char *text, size_t len)
{
	json_t *part = json_object();
	if (v == A2A_V03)
		json_object_set_new(part, "kind", json_string("text"));
	json_object_set_new(part, "text", json_stringn(text ? text : "", text ? len : 0));
	json_t *parts = json_array();
	json_array_append_new(parts, part);
	return parts;
}

static json_t *message_json(enum a2a_ver v, const struct a2a_task *t, bool agent, const char *text,
			    const char *message_id)
{
	json_t *m = json_object();
	if (v == A2A_V03)
		json_object_set_new(m, "kind", json_string("message"));
	json_object_set_new(
		m, "role",
		json_string(v == A2A_V03 ? (agent ? "agent" : "user") : (agent ? "ROLE_AGENT" : "ROLE_USER")));
	json_object_set_new(m, "parts", text_parts(v, text, text ? strlen(text) : 0));
	json_object_set_new(m, "messageId", json_string(message_id));
	json_object_set_new(m, "taskId", json_string(t->id));
	json_object_set_new(m, "contextId", json_string(t->context));
	return m;
}

static json_t *status_json(enum a2a_ver v, const struct a2a_task *t)
{
	char now[32];
	const char *when =
		t->updated ? t->updated : (t->created ? t->created : clock_rfc3339(clock_wall_ms(), now, 32));
	json_t *st = json_pack("{s:s, s:s}", "state", state_name(v, t->state), "timestamp", when);
	if (a2a_state_terminal(t->state) && t->reply) {
		char mid[A2A_TASK_ID_MAX + 8];
		snprintf(mid, sizeof(mid), "%s.reply", t->id);
		json_object_set_new(st, "message", message_json(v, t, true, t->reply, mid));
	}
	return st;
}

static json_t *reply_artifact(enum a2a_ver v, const char *text, size_t len)
{
	json_t *a = json_pack("{s:s, s:s}", "artifactId", "reply", "name", "reply");
	json_object_set_new(a, "parts", text_parts(v, text, len));
	return a;
}

json_t *a2a_task_json(enum a2a_ver v, const struct a2a_task *t)
{
	json_t *task = json_pack("{s:s, s:s}", "id", t->id, "contextId", t->context);
	if (!task)
		return NULL;
	json_object_set_new(task, "status", status_json(v, t));
	if (t->state == A2A_COMPLETED || (t->state == A2A_CANCELED && t->reply && t->reply[0])) {
		json_t *arts = json_array();
		json_array_append_new(arts, reply_artifact(v, t->reply, t->reply ? strlen(t->reply) : 0));
		json_object_set_new(task, "artifacts", arts);
	}
	if (t->user_text) {
		json_t *hist = json_array();
		json_array_append_new(hist,
				      message_json(v, t, false, t->user_text, t->user_msgid ? t->user_msgid : t->gen));
		json_object_set_new(task, "history", hist);
	}
	if (v == A2A_V03)
		json_object_set_new(task, "kind", json_string("task"));
	return task;
}

static json_t *wrap(enum a2a_ver v, const char *name, json_t *obj)
{
	if (v == A2A_V03 || !obj)
		return obj;
	json_t *w = json_object();
	json_object_set_new(w, name, obj);
	return w;
}

json_t *a2a_send_result(enum a2a_ver v, json_t *task)
{
	return wrap(v, "task", task);
}

json_t *a2a_stream_task(enum a2a_ver v, const struct a2a_task *t)
{
	return wrap(v, "task", a2a_task_json(v, t));
}

json_t *a2a_status_update(enum a2a_ver v, const struct a2a_task *t, bool final)
{
	json_t *u = json_pack("{s:s, s:s}", "taskId", t->id, "contextId", t->context);
	if (!u)
		return NULL;
	json_object_set_new(u, "status", status_json(v, t));
	if (v == A2A_V03) {
		json_object_set_new(u, "kind", json_string("status-update"));
		json_object_set_new(u, "final", json_boolean(final));
	}
	return wrap(v, "statusUpdate", u);
}

json_t *a2a_artifact_update(enum a2a_ver v, const struct a2a_task *t, const char *text, size_t len, bool append)
{
	json_t *u = json_pack("{s:s, s:s, s:b}", "taskId", t->id, "contextId", t->context, "append", append);
	if (!u)
		return NULL;
	json_object_set_new(u, "artifact", reply_artifact(v, text, len));
	if (v == A2A_V03)
		json_object_set_new(u, "kind", json_string("artifact-update"));
	return wrap(v, "artifactUpdate", u);
}
