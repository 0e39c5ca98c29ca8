/*
 * control.c - the Celery control side of a node on queue.driver=redis: the outgoing message
 * queue and its publisher thread (events on celeryev, pidbox replies, revoke broadcasts, REVOKED
 * results), worker-online / heartbeat / offline (see sched.h).
 *
 * DESIGN: whatever a worker thread, the pidbox listener or an io thread wants sent to Redis is
 * queued here (bounded: CTL_QUEUE_MAX; beyond it a message is dropped and counted, never
 * waited for) and sent by the one publisher thread on its own connection; events are
 * pipelined, so a burst of task events costs one round trip. The publisher also keeps time:
 * every celery.heartbeat_s it sends worker-heartbeat and refreshes this node's entry in the
 * cluster registry (cluster.c).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/json_py.h"
#include "core/log.h"
#include "queue/celery_wire.h"
#include "queue/hooks.h"
#include "sched/sched_int.h"

struct ctl_msg {
	struct ctl_msg *next; /* queue link */
	enum ctl_kind kind;   /* what to send */
	json_t *v;	      /* owned body */
	char *a, *b, *c;      /* owned strings (see enum ctl_kind) */
	sched_revoke_fn done; /* CTL_REVOKE_CHECKED: completion */
	void *arg;	      /* its argument */
};

static struct {
	pthread_mutex_t lock;	     /* guards the queue and stop */
	pthread_cond_t cond;	     /* wakes the publisher */
	struct ctl_msg *head, *tail; /* the queue */
	int queued;		     /* its length */
	bool stop;		     /* asked to stop */
	bool running;		     /* started (main thread) */
	bool workers;		     /* this node runs workers: worker events, pidbox, registry */
	pthread_t tid;		     /* the publisher */
	struct redis_conn *rc;	     /* the publisher's connection */
	uint64_t dropped;	     /* messages dropped on a full queue or a Redis error */
	uint64_t started_ns;	     /* monotonic start */
	atomic_bool redis_up;	     /* the publisher's connection worked at the last heartbeat */
} C = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

double ctl_uptime_s(void)
{
	return C.started_ns ? (double)(clock_mono_ns() - C.started_ns) / 1e9 : 0;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void msg_free(struct ctl_msg *m)
{
	if (m->done) /* never sent (stopping): its caller still gets an answer */
		m->done(SOMA_ERR_UNAVAILABLE, "", "", m->arg);
	json_decref(m->v);
	free(m->a);
	free(m->b);
	free(m->c);
	free(m);
}

/* Appends m to the queue; false (m freed) when full or stopped. */
static bool push(struct ctl_msg *m)
{
	pthread_mutex_lock(&C.lock);
	bool ok = m && C.running && !C.stop && C.queued < CTL_QUEUE_MAX;
	if (ok) {
		if (C.tail)
			C.tail->next = m;
		else
			C.head = m;
		C.tail = m;
		C.queued++;
		pthread_cond_signal(&C.cond);
	} else {
		C.dropped++;
	}
	pthread_mutex_unlock(&C.lock);
	if (!ok && m) {
		m->done = NULL; /* refused: the caller answers itself */
		msg_free(m);
	}
	return ok;
}

bool ctl_enqueue(enum ctl_kind kind, json_t *v, const char *a, const char *b, const char *c)
{
	struct ctl_msg *m = calloc(1, sizeof(*m));
	if (!m) {
		json_decref(v);
		return false;
	}
	*m = (struct ctl_msg){.kind = kind, .v = v, .a = dup_or_null(a), .b = dup_or_null(b), .c = dup_or_null(c)};
	return push(m);
}

/* Envelope properties of a transient message on exchange/routing_key. */
static json_t *props(const char *exchange, const char *routing_key)
{
	return json_pack("{s:i, s:{s:s, s:s}, s:i}", "delivery_mode", 1, "delivery_info", "exchange", exchange,
			 "routing_key", routing_key, "priority", 0);
}

static void command_failed(const char *what)
{
	pthread_mutex_lock(&C.lock);
	bool first = C.dropped++ % 1000 == 0;
	pthread_mutex_unlock(&C.lock);
	if (first)
		log_warn("celery", "cannot %s on redis (%s); dropping it (Celery's tools miss it)", what,
			 redis_conn_error(C.rc));
}

/* Appends PUBLISH of event ev (pipelined); false when nothing was appended. */
static bool append_event(json_t *ev)
{
	char rk[64], channel[96];
	snprintf(rk, sizeof(rk), "%s", json_string_value(json_object_get(ev, "type")));
	for (char *p = rk; *p; p++)
		*p = *p == '-' ? '.' : *p;
	snprintf(channel, sizeof(channel), "/%d.celeryev/%s", redis_conn_db(C.rc), rk);
	json_t *h = json_pack("{s:s}", "hostname", sched_nodename()), *p = props("celeryev", rk);
	char *env = celery_envelope_encode(ev, h, p);
	json_decref(h);
	json_decref(p);
	if (!env)
		return false;
	const char *argv[] = {"PUBLISH", channel, env};
	size_t lens[] = {7, strlen(channel), strlen(env)};
	bool ok = redis_append_argv(C.rc, 3, argv, lens) == SOMA_OK;
	free(env);
	return ok;
}

/* Sends the events of list in one pipeline; frees nothing. */
static void send_events(struct ctl_msg *list)
{
	int n = 0;
	if (redis_conn_ensure(C.rc) != SOMA_OK)
		return; /* Redis down: events are not kept (Celery does not keep them either) */
	for (struct ctl_msg *m = list; m; m = m->next)
		if (m->kind == CTL_EVENT && append_event(m->v))
			n++;
	for (int i = 0; i < n; i++) {
		redisReply *r = redis_get_reply(C.rc);
		if (!r)
			command_failed("publish an event");
		else
			freeReplyObject(r);
	}
}

/* LPUSHes a pidbox reply to the client's reply queue, found through the binding (none: drop). */
static void send_reply(struct ctl_msg *m)
{
	char key[300], sep_rk[200];
	snprintf(key, sizeof(key), "_kombu.binding.%s", m->a ? m->a : "reply.celery.pidbox");
	redisReply *r = redis_cmd(C.rc, "SMEMBERS %s", key);
	if (!r) {
		command_failed("read a reply binding");
		return;
	}
	snprintf(sep_rk, sizeof(sep_rk), "%s" CELERY_SEP, m->b ? m->b : "");
	const char *queue = NULL;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && !queue; i++) {
		const char *mem = r->element[i]->str;
		const char *last = mem && strncmp(mem, sep_rk, strlen(sep_rk)) == 0 ? strrchr(mem, '\x16') : NULL;
		queue = last && last[1] ? last + 1 : NULL;
	}
	if (queue) {
		json_t *h = json_pack("{s:s?, s:I}", "ticket", m->c, "clock", (json_int_t)ctl_clock_next());
		json_t *p = props(m->a ? m->a : "reply.celery.pidbox", m->b ? m->b : "");
		char *env = celery_envelope_encode(m->v, h, p);
		redisReply *pr = env ? redis_cmd(C.rc, "LPUSH %s %s", queue, env) : NULL;
		if (!pr)
			command_failed("push a pidbox reply");
		else
			freeReplyObject(pr);
		free(env);
		json_decref(h);
		json_decref(p);
	}
	freeReplyObject(r);
}

static void send_broadcast(struct ctl_msg *m)
{
	char channel[64];
	snprintf(channel, sizeof(channel), "/%d.celery.pidbox", redis_conn_db(C.rc));
	json_t *h = json_pack("{s:I, s:f}", "clock", (json_int_t)ctl_clock_next(), "expires",
			      (double)clock_wall_ms() / 1000.0 + 10.0);
	json_t *p = props("celery.pidbox", "");
	char *env = celery_envelope_encode(m->v, h, p);
	redisReply *r = env ? redis_cmd(C.rc, "PUBLISH %s %s", channel, env) : NULL;
	if (!r)
		command_failed("broadcast a revoke");
	else
		freeReplyObject(r);
	free(env);
	json_decref(h);
	json_decref(p);
}

/* Stores ARGV[1] (EX ARGV[2] when > 0) at KEYS[1] and publishes it, unless the result there is
 * final (SUCCESS, FAILURE, REVOKED, or not a JSON meta); 1 when stored. A RETRY (or STARTED) meta
 * is replaced: with SET NX the revoke of a task waiting for its retry was not stored at all and
 * lived only in the memory of the workers running then, so the retry ran after their restart. */
static const char revoke_script[] = "local cur = redis.call('GET', KEYS[1]) "
				    "if cur then "
				    "  local ok, v = pcall(cjson.decode, cur) "
				    "  if not ok or type(v) ~= 'table' then return 0 end "
				    "  local s = v['status'] "
				    "  if s == 'SUCCESS' or s == 'FAILURE' or s == 'REVOKED' then return 0 end "
				    "end "
				    "if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
				    "else redis.call('SET', KEYS[1], ARGV[1]) end "
				    "redis.call('PUBLISH', KEYS[1], ARGV[1]) " /* wakes AsyncResult.get() waiters */
				    "return 1";

/* A REVOKED result as Celery's worker stores one, unless the task has a final result by then. */
static void store_revoked(const char *id, const char *key)
{
	char done[CELERY_TIME_LEN];
	json_t *meta = json_pack("{s:s, s:{s:s, s:[s], s:s}, s:n, s:[], s:s, s:s}", "status", "REVOKED", "result",
				 "exc_type", "TaskRevokedError", "exc_message", "revoked", "exc_module",
				 "celery.exceptions", "traceback", "children", "date_done",
				 celery_date_done(clock_wall_ms(), done, sizeof(done)), "task_id", id);
	char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	long long ttl = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	redisReply *r = text ? redis_cmd(C.rc, "EVAL %s 1 %s %s %lld", revoke_script, key, text, ttl) : NULL;
	if (r && r->type == REDIS_REPLY_ERROR)
		log_warn("celery", "cannot store the REVOKED result of task %s: %s", id, r->str);
	if (r)
		freeReplyObject(r);
	free(text);
	json_decref(meta);
}

static void revoke_checked(struct ctl_msg *m)
{
	char meta_key[CELERY_ID_KEY_MAX], owner_key[CELERY_ID_KEY_MAX], status[32] = "", owner_tenant[128] = "";
	snprintf(meta_key, sizeof(meta_key), "celery-task-meta-%s", m->a);
	snprintf(owner_key, sizeof(owner_key), "soma-task-owner-%s", m->a);
	redisReply *r = redis_cmd(C.rc, "MGET %s %s", meta_key, owner_key);
	enum soma_err err = SOMA_OK;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		err = SOMA_ERR_UNAVAILABLE;
	} else {
		redisReply *meta = r->element[0], *owner = r->element[1];
		json_t *mv = meta->type == REDIS_REPLY_STRING ? json_py_load(meta->str, meta->len, 0, NULL) : NULL;
		snprintf(status, sizeof(status), "%s", json_string_value(json_object_get(mv, "status")) ?: "");
		/* whose: the result's own soma_tenant (our worker writes it: a task retrying past the
		 * publish's owner key), else the owner key, as results.c reads it */
		const char *of = json_string_value(json_object_get(mv, "soma_tenant"));
		if (of && strlen(of) < sizeof(owner_tenant))
			snprintf(owner_tenant, sizeof(owner_tenant), "%s", of);
		else if (owner->type == REDIS_REPLY_STRING && owner->len < sizeof(owner_tenant))
			snprintf(owner_tenant, sizeof(owner_tenant), "%.*s", (int)owner->len, owner->str);
		json_decref(mv);
		/* mine (an admin, or the store holds the tenant's task): any id; a tenant: its own only - not an id
		 * without an owner (a Python producer's task, a beat run not yet due: a REVOKED result stored for it
		 * ahead would cancel another tenant's or the operator's task) */
		bool mine = (m->c && m->c[0]) || (owner_tenant[0] && strcmp(owner_tenant, m->b) == 0);
		if (!mine)
			err = SOMA_ERR_NOT_FOUND;
		else if (!strcmp(status, "SUCCESS") || !strcmp(status, "FAILURE") || !strcmp(status, "REVOKED"))
			err = SOMA_ERR_CONFLICT;
	}
	if (r)
		freeReplyObject(r);
	if (err == SOMA_OK) {
		json_t *body =
			json_pack("{s:s, s:{s:s, s:b, s:s}, s:n, s:n, s:n}", "method", "revoke", "arguments", "task_id",
				  m->a, "terminate", 0, "signal", "SIGTERM", "destination", "pattern", "matcher");
		struct ctl_msg bm = {.kind = CTL_BROADCAST, .v = body};
		send_broadcast(&bm);
		json_decref(body);
		store_revoked(m->a, meta_key);
		queue_revoke(m->a, 0); /* only once allowed: another tenant's task is not touched here either */
		snprintf(status, sizeof(status), "REVOKED");
	}
	m->done(err, status, owner_tenant, m->arg);
	m->done = NULL;
}

static void send_worker_event(const char *type)
{
	json_t *ev = ctl_event_new(type);
	if (!ev)
		return;
	ctl_worker_fields(ev);
	struct ctl_msg m = {.kind = CTL_EVENT, .v = ev};
	send_events(&m);
	json_decref(ev);
}

static void heartbeat(void)
{
	if (C.workers) {
		send_worker_event("worker-heartbeat");
		cluster_register(C.rc, (int)cfg_int(CFG_CELERY_HEARTBEAT_S) * 3000);
	}
	cluster_refresh(C.rc);
	atomic_store(&C.redis_up, redis_conn_ok(C.rc));
}

static void send_list(struct ctl_msg *list, bool *beat_now)
{
	send_events(list);
	for (struct ctl_msg *m = list; m; m = m->next) {
		if (m->kind == CTL_REPLY)
			send_reply(m);
		else if (m->kind == CTL_BROADCAST)
			send_broadcast(m);
		else if (m->kind == CTL_REVOKE_CHECKED)
			revoke_checked(m);
		else if (m->kind == CTL_HEARTBEAT)
			*beat_now = true;
	}
}

static void *publisher_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-celeryev");
	const uint64_t freq_ns = (uint64_t)cfg_int(CFG_CELERY_HEARTBEAT_S) * 1000000000ull;
	if (C.workers)
		send_worker_event("worker-online");
	/* the first heartbeat (and registry entry) shortly after start, once the workers (the next
	 * service) run, so the entry lists them */
	uint64_t next_beat = clock_mono_ns() + 500000000ull;
	for (;;) {
		uint64_t now = clock_mono_ns(), wait = next_beat > now ? next_beat - now : 0;
		/* (rounded up to a whole millisecond: woken early, the loop would spin until next_beat) */
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, (int64_t)((wait + 999999) / 1000000));
		pthread_mutex_lock(&C.lock);
		while (!C.head && !C.stop && wait > 0)
			if (pthread_cond_timedwait(&C.cond, &C.lock, &until) != 0)
				break;
		struct ctl_msg *list = C.head;
		C.head = C.tail = NULL;
		C.queued = 0;
		bool stop = C.stop;
		pthread_mutex_unlock(&C.lock);
		bool beat_now = false;
		send_list(list, &beat_now);
		while (list) {
			struct ctl_msg *next = list->next;
			msg_free(list);
			list = next;
		}
		if (beat_now || clock_mono_ns() >= next_beat) {
			heartbeat();
			next_beat = clock_mono_ns() + freq_ns;
		}
		if (stop)
			break;
	}
	if (C.workers) {
		send_worker_event("worker-offline");
		cluster_unregister(C.rc);
	}
	return NULL;
}

enum soma_err sched_control_start(bool workers, char *why, size_t why_cap)
{
	if (strcmp(cfg_str(CFG_QUEUE_DRIVER), "redis") != 0)
		return SOMA_OK;
	enum soma_err err = redis_conn_open(cfg_str(CFG_REDIS_URL), 2000, true, &C.rc, why, why_cap);
	if (err != SOMA_OK)
		return err;
	C.workers = workers;
	C.stop = false;
	C.started_ns = clock_mono_ns();
	atomic_store(&C.redis_up, true);
	ctl_task_events_set(cfg_bool(CFG_CELERY_EVENTS));
	if (workers && (err = pidbox_start(cfg_str(CFG_REDIS_URL), why, why_cap)) != SOMA_OK) {
		redis_conn_close(C.rc);
		C.rc = NULL;
		return err;
	}
	C.running = true;
	if (pthread_create(&C.tid, NULL, publisher_main, NULL) != 0) {
		C.running = false;
		pidbox_stop();
		redis_conn_close(C.rc);
		C.rc = NULL;
		snprintf(why, why_cap, "cannot start the celery event publisher thread");
		return SOMA_ERR_INTERNAL;
	}
	if (workers)
		queue_set_event_sink(ctl_on_task_event, NULL);
	log_info("celery", "node %s: %s; task events %s", sched_nodename(),
		 workers ? "worker events on celeryev, answering the pidbox" : "revokes and the cluster view only",
		 ctl_task_events() ? "on" : "off (celery.events, or `celery control enable_events`)");
	return SOMA_OK;
}

void sched_control_stop(void)
{
	if (!C.running)
		return;
	if (C.workers)
		queue_set_event_sink(NULL, NULL);
	pidbox_stop();
	pthread_mutex_lock(&C.lock);
	C.stop = true;
	pthread_cond_signal(&C.cond);
	pthread_mutex_unlock(&C.lock);
	pthread_join(C.tid, NULL);
	C.running = false;
	redis_conn_close(C.rc);
	C.rc = NULL;
	cluster_reset();
}

bool sched_control_running(void)
{
	return C.running;
}

bool sched_control_describe(char *out, size_t cap)
{
	pthread_mutex_lock(&C.lock);
	unsigned long long dropped = (unsigned long long)C.dropped;
	pthread_mutex_unlock(&C.lock);
	bool up = atomic_load(&C.redis_up);
	snprintf(out, cap, "node %s; %s; task events %s; %llu message(s) dropped", sched_nodename(),
		 up ? "redis ok" : "redis does not answer: events and pidbox replies are dropped (check redis.url)",
		 ctl_task_events() ? "on" : "off", dropped);
	return up;
}

enum soma_err sched_control_revoke(const char *task_id)
{
	queue_revoke(task_id, 0);
	if (!C.running)
		return SOMA_OK;
	json_t *body = json_pack("{s:s, s:{s:s, s:b, s:s}, s:n, s:n, s:n}", "method", "revoke", "arguments", "task_id",
				 task_id, "terminate", 0, "signal", "SIGTERM", "destination", "pattern", "matcher");
	return ctl_enqueue(CTL_BROADCAST, body, NULL, NULL, NULL) ? SOMA_OK : SOMA_ERR_UNAVAILABLE;
}

enum soma_err sched_control_revoke_checked(const char *task_id, const char *tenant, bool mine, sched_revoke_fn done,
					   void *arg)
{
	struct ctl_msg *m = calloc(1, sizeof(*m));
	if (!m)
		return SOMA_ERR_NOMEM;
	*m = (struct ctl_msg){.kind = CTL_REVOKE_CHECKED,
			      .a = strdup(task_id),
			      .b = strdup(tenant),
			      .c = strdup(mine ? "mine" : ""),
			      .done = done,
			      .arg = arg};
	if (!m->a || !m->b || !m->c) {
		m->done = NULL;
		msg_free(m);
		return SOMA_ERR_NOMEM;
	}
	return push(m) ? SOMA_OK : SOMA_ERR_UNAVAILABLE;
}
