/*
 * redis_publish.c - what the redis driver writes: task messages as Celery producers write them,
 * and result metas as Celery's Redis result backend writes them (interop.md 1.2-1.4, 1.7).
 *
 * DESIGN: our tasks travel as Celery v2 messages: args and kwargs in the body, the rest of our
 * payload (subject, scopes, event ids...) and the tenant/session in extra headers
 * (soma_tenant, soma_session, soma_payload, soma_max_retries), which Celery ignores. Options
 * (priority, expires, time limits) come from task.options. Pure builders plus one function that
 * appends to a caller's pipeline; no state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

struct redis_conn *redis_queue_connect(int timeout_ms)
{
	struct redis_conn *c = NULL;
	char why[256];
	if (redis_conn_open(cfg_str(CFG_REDIS_URL), timeout_ms, true, &c, why, sizeof(why)) != SOMA_OK)
		return NULL;
	return c;
}

void redis_meta_key(const char *task_id, char *buf, size_t cap)
{
	snprintf(buf, cap, "celery-task-meta-%s", task_id);
}

static json_t *time_or_null(int64_t ms)
{
	char buf[CELERY_TIME_LEN];
	return ms > 0 ? json_string(celery_time_format(ms, buf, sizeof(buf))) : json_null();
}

static json_t *number_or_null(const json_t *v)
{
	return json_is_number(v) && json_number_value(v) > 0 ? json_real(json_number_value(v)) : json_null();
}

char *redis_task_envelope(const json_t *task, int64_t retries, int64_t eta_ms, char key[192])
{
	static char origin[96];
	if (!origin[0]) {
		char host[64] = "host";
		gethostname(host, sizeof(host) - 1);
		snprintf(origin, sizeof(origin), "soma%d@%s", (int)getpid(), host);
	}
	const char *id = json_string_value(json_object_get(task, "id"));
	const char *queue = json_string_value(json_object_get(task, "queue"));
	json_t *payload = json_object_get(task, "payload"), *opts = json_object_get(task, "options");
	json_t *args = json_object_get(payload, "args"), *kwargs = json_object_get(payload, "kwargs");
	json_t *extra = json_is_object(payload) ? json_copy(payload) : json_object();
	json_object_del(extra, "args");
	json_object_del(extra, "kwargs");
	json_object_del(extra, "options"); /* they became headers */
	json_object_del(extra, "celery");  /* canvas: embed and group fields (tasks_canvas.c) */
	json_t *cel = json_object_get(payload, "celery"), *embed = json_object_get(cel, "embed");
	json_t *group = json_object_get(cel, "group"), *gindex = json_object_get(cel, "group_index");
	const char *root = json_string_value(json_object_get(cel, "root_id"));
	int priority = (int)json_integer_value(json_object_get(opts, "priority"));
	char *argsrepr = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	char *kwargsrepr = kwargs ? json_dumps(kwargs, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_t *body = json_pack(
		"[o, o, o]", json_is_array(args) ? json_incref(args) : json_array(),
		json_is_object(kwargs) ? json_incref(kwargs) : json_object(),
		json_is_object(embed) ? json_incref(embed)
				      : json_pack("{s:n, s:n, s:n, s:n}", "callbacks", "errbacks", "chain", "chord"));
	json_t *headers = json_pack(
		"{s:s, s:s, s:s, s:n, s:o, s:o, s:n, s:n, s:I, s:[o, o], s:s, s:n, s:s, s:s, s:s, s:b, s:s?, s:s?, "
		"s:I}",
		"lang", "c", "task", json_string_value(json_object_get(task, "name")), "id", id, "shadow", "eta",
		time_or_null(eta_ms), "expires", time_or_null(json_integer_value(json_object_get(opts, "expires_ms"))),
		"group", "group_index", "retries", (json_int_t)retries, "timelimit",
		number_or_null(json_object_get(opts, "time_limit")),
		number_or_null(json_object_get(opts, "soft_time_limit")), "root_id", id, "parent_id", "argsrepr",
		argsrepr ? argsrepr : "[]", "kwargsrepr", kwargsrepr ? kwargsrepr : "{}", "origin", origin,
		"ignore_result", 0, "soma_tenant", json_string_value(json_object_get(task, "tenant")), "soma_session",
		json_string_value(json_object_get(task, "session_id")), "soma_max_retries",
		(json_int_t)(json_object_get(task, "max_retries")
				     ? json_integer_value(json_object_get(task, "max_retries"))
				     : cfg_int(CFG_QUEUE_MAX_RETRIES)));
	if (headers && json_object_size(extra))
		json_object_set(headers, "soma_payload", extra);
	if (headers && json_is_string(group)) {
		json_object_set(headers, "group", group);
		json_object_set(headers, "group_index", json_is_integer(gindex) ? gindex : json_null());
	}
	if (headers && root)
		json_object_set_new(headers, "root_id", json_string(root));
	json_t *props = json_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:i}", "correlation_id", id, "reply_to", "",
				  "delivery_mode", 2, "delivery_info", "exchange", "", "routing_key", queue, "priority",
				  priority < 0	 ? 0
				  : priority > 9 ? 9
						 : priority);
	char *text = NULL;
	if (body && headers && props && celery_queue_key(queue, priority, key, 192))
		text = celery_envelope_encode(body, headers, props);
	free(argsrepr);
	free(kwargsrepr);
	json_decref(extra);
	json_decref(body);
	json_decref(headers);
	json_decref(props);
	return text;
}

int redis_meta_append(struct redis_conn *c, const char *task_id, const char *status, const json_t *result,
		      const char *exc_type, const char *exc_module, const char *message, const json_t *extra)
{
	bool ready = strcmp(status, "RETRY") != 0;
	char done[CELERY_TIME_LEN];
	json_t *res = exc_type ? json_pack("{s:s, s:[s], s:s}", "exc_type", exc_type, "exc_message",
					   message ? message : "", "exc_module", exc_module ? exc_module : "builtins")
			       : json_incref(result ? (json_t *)result : json_null());
	json_t *meta =
		json_pack("{s:s, s:o, s:n, s:[], s:o, s:s}", "status", status, "result", res ? res : json_null(),
			  "traceback", "children", "date_done",
			  ready ? json_string(celery_date_done(clock_wall_ms(), done, sizeof(done))) : json_null(),
			  "task_id", task_id);
	if (meta && extra)
		json_object_update(meta, (json_t *)extra);
	char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	json_decref(meta);
	if (!text)
		return 0;
	char key[128];
	redis_meta_key(task_id, key, sizeof(key));
	long long ttl = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	size_t len = strlen(text);
	enum soma_err err;
	char ttl_s[24];
	snprintf(ttl_s, sizeof(ttl_s), "%lld", ttl);
	if (ttl > 0) {
		const char *argv[] = {"SETEX", key, ttl_s, text};
		size_t lens[] = {5, strlen(key), strlen(ttl_s), len};
		err = redis_append_argv(c, 4, argv, lens);
	} else {
		const char *argv[] = {"SET", key, text};
		size_t lens[] = {3, strlen(key), len};
		err = redis_append_argv(c, 3, argv, lens);
	}
	const char *pargv[] = {"PUBLISH", key, text};
	size_t plens[] = {7, strlen(key), len};
	int n = err == SOMA_OK;
	if (n && redis_append_argv(c, 3, pargv, plens) == SOMA_OK)
		n++;
	free(text);
	return n;
}
