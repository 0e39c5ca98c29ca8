/*
 * pidbox_methods.c - the remote-control methods this node answers (see sched.h), with the reply
 * shapes of Celery 5.2's worker (celery/worker/control.py): ping, stats, active, active_queues,
 * registered, revoked, conf, scheduled, reserved, report; the controls revoke (with terminate:
 * a running task here is asked to stop and ends REVOKED), terminate, enable_events,
 * disable_events, heartbeat, query_task (the running and the reserved tasks). Any other method (shutdown,
 * pool_grow, rate_limit, ...) is not done: a call gets {"error": "... not supported by this
 * node ..."} (kombu's reply to a failed method), a cast is logged; this node is managed by its
 * own configuration and signals. "hello" (mingle) returns NULL: no reply, as before.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "queue/hooks.h"
#include "queue/queue.h"
#include "redis/conn.h"
#include "sched/sched_int.h"
#include "tasks/tasks.h"

static json_t *ok(const char *text)
{
	return json_pack("{s:s}", "ok", text);
}

/* The broker as Celery 5.2's worker reports it (kombu's Connection.info() without the
 * password): the host, port, user and db (virtual_host) of redis.url; the rest is what this
 * node's connections do (no heartbeat, no TLS, one URL, 2 s to connect). */
static json_t *broker_info(void)
{
	struct redis_url u;
	char why[128], db[16];
	if (!redis_url_parse(cfg_str(CFG_REDIS_URL), &u, why, sizeof(why)))
		memset(&u, 0, sizeof(u));
	snprintf(db, sizeof(db), "%d", u.db);
	json_t *out =
		json_pack("{s:[], s:i, s:s, s:f, s:s, s:b, s:n, s:i, s:b, s:s, s:{}, s:n, s:s, s:s}", "alternates",
			  "connect_timeout", 2, "failover_strategy", "round-robin", "heartbeat", 0.0, "hostname",
			  u.host, "insist", 0, "login_method", "port", u.port, "ssl", 0, "transport", "redis",
			  "transport_options", "uri_prefix", "virtual_host", db, "userid", u.user);
	if (!u.user[0])
		json_object_set_new(out, "userid", json_null());
	memset(u.password, 0, sizeof(u.password));
	return out;
}

static json_t *stats(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	json_t *pools = queue_pools_json(), *pool;
	const char *name;
	json_int_t conc = 0;
	json_object_foreach(pools, name, pool) conc += json_integer_value(json_object_get(pool, "concurrency"));
	json_decref(pools);
	char clock[32];
	snprintf(clock, sizeof(clock), "%llu", (unsigned long long)ctl_clock_next());
	/* Celery's prefetch_count: the multiplier times the concurrency (a worker here pops up to
	 * queue.prefetch messages at a time) */
	json_int_t prefetch = (json_int_t)cfg_int(CFG_QUEUE_PREFETCH) * conc;
	return json_pack("{s:o, s:s, s:i, s:I, s:{s:I, s:[i], s:s}, s:I, "
			 "s:{s:f, s:f, s:I}, s:o, s:I}",
			 "broker", broker_info(), "clock", clock, "pid", (int)getpid(), "uptime",
			 (json_int_t)ctl_uptime_s(), "pool", "max-concurrency", conc, "processes", (int)getpid(),
			 "implementation", "somaagent:threads", "prefetch_count", prefetch, "rusage", "utime",
			 (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, "stime",
			 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, "maxrss", (json_int_t)ru.ru_maxrss,
			 "total", ctl_totals_json(), "processed", (json_int_t)ctl_processed());
}

static json_t *active_queues(void)
{
	json_t *pools = queue_pools_json(), *out = json_array(), *pool;
	const char *name;
	json_object_foreach(pools, name, pool)
	{
		json_array_append_new(
			out,
			json_pack("{s:s, s:{s:s, s:s, s:n, s:b, s:b, s:b, s:n, s:b}, s:s, s:n, s:n, s:n, s:b, "
				  "s:b, s:b, s:b, s:n, s:[], s:b, s:n, s:n, s:n, s:n, s:n}",
				  "name", name, "exchange", "name", name, "type", "direct", "arguments", "durable", 1,
				  "passive", 0, "auto_delete", 0, "delivery_mode", "no_declare", 0, "routing_key", name,
				  "queue_arguments", "binding_arguments", "consumer_arguments", "durable", 1,
				  "exclusive", 0, "auto_delete", 0, "no_ack", 0, "alias", "bindings", "no_declare", 0,
				  "expires", "message_ttl", "max_length", "max_length_bytes", "max_priority"));
	}
	json_decref(pools);
	return out;
}

static json_t *conf(void)
{
	return json_pack("{s:s, s:s, s:b, s:I, s:s, s:b, s:s}", "broker_transport", "redis", "task_default_queue",
			 cfg_str(CFG_QUEUE_DEFAULT_QUEUE), "worker_send_task_events", ctl_task_events(),
			 "result_expires", (json_int_t)cfg_int(CFG_QUEUE_RESULT_EXPIRES_S), "result_backend", "redis",
			 "enable_utc", 1, "timezone", "UTC");
}

/* Celery's signals.signum for a revoke's signal: a number as it is, an upper-case name with or
 * without SIG, none: SIGTERM; 0 when it is none of those (Celery raises: an error reply). */
static int signum_of(const json_t *v)
{
	static const struct {
		const char *name; /* without SIG */
		int num;	  /* its number */
	} names[] = {{"HUP", SIGHUP},	{"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ABRT", SIGABRT}, {"KILL", SIGKILL},
		     {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}};
	const char *s = json_string_value(v);
	if (!v || json_is_null(v) || json_is_false(v) || (s && !s[0]) ||
	    (json_is_integer(v) && json_integer_value(v) == 0))
		return SIGTERM; /* Celery: signal or TERM_SIGNAME */
	if (json_is_integer(v))
		return json_integer_value(v) > 0 && json_integer_value(v) < 65 ? (int)json_integer_value(v) : 0;
	if (s && strncmp(s, "SIG", 3) == 0)
		s += 3;
	for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].num;
	return 0;
}

/* Celery 5.3's revoke(task_id, terminate, signal): every id is flagged revoked (a queued one never
 * runs); with terminate, those running here are stopped (queue_terminate: a thread is asked to
 * stop, it cannot be killed) and end REVOKED, and the reply names them as Celery's
 * "terminate: <ids>", or "terminate: tasks unknown" when none runs here. */
static json_t *revoke_tasks(json_t *args, bool terminate)
{
	json_t *ids = json_object_get(args, "task_id"), *one = NULL;
	int signum = terminate ? signum_of(json_object_get(args, "signal")) : 0;
	if (terminate && !signum)
		return json_pack("{s:s}", "error", "TypeError('signal name must be uppercase string.')");
	json_t *list = json_is_array(ids) ? json_incref(ids) : json_is_string(ids) ? json_pack("[O]", ids) : NULL;
	if (!list)
		return json_pack("{s:s}", "error", "revoke needs task_id (a string or a list)");
	char text[512], stopped[512];
	size_t pos = (size_t)snprintf(text, sizeof(text), "tasks {"), spos = 0;
	size_t i;
	json_array_foreach(list, i, one)
	{
		const char *id = json_string_value(one);
		if (!id)
			continue;
		queue_revoke(id, 0);
		if (pos < sizeof(text))
			pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s'%s'", i ? ", " : "", id);
		if (!terminate || queue_terminate(id, signum) == 0)
			continue;
		log_info("celery", "terminating task %s (signal %d): asked to stop, it ends REVOKED", id, signum);
		if (spos < sizeof(stopped))
			spos += (size_t)snprintf(stopped + spos, sizeof(stopped) - spos, "%s%s",
						 spos ? ", " : "terminate: ", id);
	}
	if (pos < sizeof(text))
		snprintf(text + pos, sizeof(text) - pos, "} flagged as revoked");
	json_decref(list);
	if (terminate)
		return ok(spos ? stopped : "terminate: tasks unknown");
	return ok(text);
}

/* Whether ids (Celery's variadic "ids": a list, or one id as a string) names id. */
static bool names_id(const json_t *ids, const char *id)
{
	if (json_is_string(ids))
		return strcmp(id, json_string_value(ids)) == 0;
	for (size_t k = 0; json_is_array(ids) && k < json_array_size(ids); k++)
		if (json_is_string(json_array_get(ids, k)) &&
		    strcmp(id, json_string_value(json_array_get(ids, k))) == 0)
			return true;
	return false;
}

/* Adds to out, as [state, info], each Request.info() of list (owned, released) that ids names
 * and out does not hold yet. */
static void query_add(json_t *out, json_t *list, const json_t *ids, const char *state)
{
	json_t *info;
	size_t i;
	json_array_foreach(list, i, info)
	{
		const char *id = json_string_value(json_object_get(info, "id"));
		if (id && !json_object_get(out, id) && names_id(ids, id))
			json_object_set_new(out, id, json_pack("[s, O]", state, info));
	}
	json_decref(list);
}

/* Celery 5.2's query_task(ids): {id: [state, Request.info()]} of the requests this node holds
 * with those ids: running ("active") or prefetched behind a running task ("reserved", as
 * `inspect reserved` lists them); an id it does not hold is left out. Celery's "ready" (a
 * request done but not yet forgotten) has no counterpart here: a finished task is forgotten. */
static json_t *query_task(json_t *args)
{
	json_t *ids = json_object_get(args, "ids"), *out = json_object();
	if (!out)
		return NULL;
	query_add(out, queue_active_json(sched_nodename(), false), ids, "active");
	query_add(out, queue_reserved_json(sched_nodename()), ids, "reserved");
	return out;
}

json_t *pidbox_handle(const char *method, json_t *arguments)
{
	if (strcmp(method, "ping") == 0)
		return ok("pong");
	if (strcmp(method, "stats") == 0)
		return stats();
	if (strcmp(method, "active") == 0) /* Celery: active(state, safe=False) */
		return queue_active_json(sched_nodename(), json_is_true(json_object_get(arguments, "safe")));
	if (strcmp(method, "active_queues") == 0)
		return active_queues();
	if (strcmp(method, "registered") == 0)
		return queue_task_names();
	if (strcmp(method, "revoked") == 0)
		return queue_revoked_json();
	if (strcmp(method, "conf") == 0)
		return conf();
	if (strcmp(method, "scheduled") == 0)
		return queue_scheduled_json(sched_nodename());
	if (strcmp(method, "reserved") == 0) /* the prefetched messages waiting behind a running task */
		return queue_reserved_json(sched_nodename());
	if (strcmp(method, "report") == 0)
		return ok("somaagent " SOMA_VERSION " (C worker; Celery protocol v2)");
	if (strcmp(method, "revoke") == 0)
		return revoke_tasks(arguments, json_is_true(json_object_get(arguments, "terminate")));
	if (strcmp(method, "terminate") == 0) /* Celery: revoke(task_id, terminate=True, signal) */
		return revoke_tasks(arguments, true);
	if (strcmp(method, "enable_events") == 0 || strcmp(method, "disable_events") == 0) {
		bool on = method[0] == 'e';
		if (on != ctl_task_events())
			log_info("celery", "task events %s by remote control", on ? "enabled" : "disabled");
		ctl_task_events_set(on);
		return ok(on ? "task events enabled" : "task events disabled");
	}
	if (strcmp(method, "heartbeat") == 0) {
		ctl_enqueue(CTL_HEARTBEAT, NULL, NULL, NULL, NULL);
		return json_null();
	}
	if (strcmp(method, "query_task") == 0)
		return query_task(arguments);
	if (strcmp(method, "hello") == 0) /* a Python worker's mingle: an error reply is logged as a failure there */
		return NULL;
	/* as kombu answers a method that fails ({"error": repr(exc)}): the CLI then prints ERROR and
	 * the reason instead of "No nodes replied", which reads as a dead node */
	char why[160];
	snprintf(why, sizeof(why), "%.64s is not supported by this node (somaagent: managed by its configuration)",
		 method);
	return json_pack("{s:s}", "error", why);
}
