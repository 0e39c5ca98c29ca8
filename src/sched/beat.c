/*
 * beat.c - beat's thread: leadership, publishing due runs through the store, and the snapshot
 * GET /v1/schedules serves (see sched.h for the design).
 *
 * DESIGN: one thread ticks every BEAT_TICK_MS. A tick takes or renews the lock; the leader
 * publishes, for each schedule, every due time after its watermark up to now, each as task
 * `beat-<name>-<due>`: first it asks the store whether that id exists (a run the previous leader
 * published but did not record), then publishes (a duplicate id is a conflict, also fine), then
 * moves the watermark (fenced by the lock). After a time with no leader it publishes the newest
 * due time and at most beat.max_catchup before it (older ones are skipped). A schedule whose
 * timing differs from the one its watermark was written for starts from now. Once a write to
 * Redis fails, nothing more is published until the lock's renewal succeeds again (a leader cut
 * off from Redis stops at once instead of publishing until its lock expires). A follower reads
 * the watermarks for the snapshot.
 * The snapshot (a JSON value) is rebuilt each tick under `lock`; readers copy it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "sched/sched_int.h"

#define BEAT_TICK_MS 250

static struct {
	pthread_t tid;		  /* beat's thread */
	bool running;		  /* started (main thread) */
	pthread_mutex_t lock;	  /* guards stop and status */
	pthread_cond_t cond;	  /* wakes the thread to stop */
	bool stop;		  /* asked to stop */
	json_t *status;		  /* the snapshot */
	struct beat_entry *e;	  /* schedules (beat's thread) */
	int n;			  /* number of schedules */
	struct store *st;	  /* where runs are published */
	bool lead;		  /* this node may lead */
	struct beat_state *bs;	  /* lock and watermarks */
	char node[BEAT_NODE_MAX]; /* this node's id: nodename:pid:token, the lock's value */
	bool leader;		  /* holding the lock now */
	int64_t max_catchup;	  /* beat.max_catchup */
	bool paused;		  /* publishing paused: the lock is not confirmed */
} B = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static char *iso_or_null(int64_t unix_s, char *buf, size_t cap)
{
	return unix_s > 0 ? clock_rfc3339(unix_s * 1000, buf, cap) : NULL;
}

static void build_status(const char *leader_id)
{
	json_t *list = json_array();
	int64_t now = clock_wall_ms() / 1000;
	for (int i = 0; i < B.n; i++) {
		const struct beat_entry *e = &B.e[i];
		char last[CLOCK_RFC3339_LEN + 1], next[CLOCK_RFC3339_LEN + 1];
		int64_t from = e->last_due > 0 && e->last_due > now - 86400 ? e->last_due : now;
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:O, s:O, s:s?, s:s?}", "name", e->name, "task", e->task,
				      "queue", e->queue, "tenant", e->tenant, "args", e->args, "kwargs", e->kwargs,
				      "last_run_at", iso_or_null(e->last_run, last, sizeof(last)), "next_run_at",
				      iso_or_null(beat_next_due(e, from), next, sizeof(next)));
		if (e->every_s)
			json_object_set_new(o, "every_s", json_integer(e->every_s));
		else
			json_object_set_new(o, "cron", json_string(e->cron_text));
		json_array_append_new(list, o);
	}
	json_t *st =
		json_pack("{s:o, s:s?, s:s, s:b, s:s}", "schedules", list, "leader", leader_id[0] ? leader_id : NULL,
			  "node", B.node, "is_leader", B.leader, "lock", beat_state_shared(B.bs) ? "redis" : "local");
	pthread_mutex_lock(&B.lock);
	json_decref(B.status);
	B.status = st;
	pthread_mutex_unlock(&B.lock);
}

/* SOMA_OK when the run exists afterwards (published now or before). */
static enum soma_err publish_run(const struct beat_entry *e, int64_t due)
{
	char id[STORE_ID_MAX + 1];
	snprintf(id, sizeof(id), "beat-%s-%lld", e->name, (long long)due);
	struct store_op *op = store_op_new(STORE_OP_TASK_GET, e->tenant);
	if (!op)
		return SOMA_ERR_NOMEM;
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	enum soma_err err = store_op_wait(B.st, op);
	store_op_free(op);
	if (err == SOMA_OK)
		return SOMA_OK; /* the previous leader published it and died before recording it */
	if (err != SOMA_ERR_NOT_FOUND)
		return err;
	char at[CLOCK_RFC3339_LEN + 1];
	if (!(op = store_op_new(STORE_OP_TASK_PUBLISH, e->tenant)))
		return SOMA_ERR_NOMEM;
	op->task = json_pack("{s:s, s:s, s:s, s:{s:O, s:O, s:s, s:s, s:{s:s, s:s}}, s:i, s:I}", "id", id, "queue",
			     e->queue, "name", e->task, "payload", "args", e->args, "kwargs", e->kwargs, "subject",
			     "beat", "scopes", "", "beat", "schedule", e->name, "due_at",
			     clock_rfc3339(due * 1000, at, sizeof(at)), "max_retries", e->max_retries, "available_ms",
			     (json_int_t)clock_wall_ms());
	err = op->task ? store_op_wait(B.st, op) : SOMA_ERR_NOMEM;
	store_op_free(op);
	if (err == SOMA_ERR_CONFLICT)
		err = SOMA_OK;
	if (err == SOMA_OK)
		log_info("beat", "published %s (%s, due %s)", id, e->task, at);
	return err;
}

/* The first due time of e to publish now: the newest due time (<= now) and at most
 * beat.max_catchup before it; older missed ones are skipped (logged). -1 when none is due. */
static int64_t first_to_publish(const struct beat_entry *e, int64_t now)
{
	int64_t total = 0, due = beat_next_due(e, e->last_due);
	for (int64_t t = due; t > 0 && t <= now; t = beat_next_due(e, t))
		total++;
	if (total == 0)
		return -1;
	int64_t skip = total - 1 > B.max_catchup ? total - 1 - B.max_catchup : 0;
	for (int64_t i = 0; i < skip; i++)
		due = beat_next_due(e, due);
	if (skip > 0)
		log_warn("beat",
			 "schedule %s missed %lld runs; publishing the newest %lld, skipping %lld older "
			 "(beat.max_catchup)",
			 e->name, (long long)total, (long long)(total - skip), (long long)skip);
	return due;
}

/* Publishes e's runs due up to now; false when this node must stop publishing for this tick
 * (the lock was lost, or a write to Redis failed and the lock is not confirmed yet). */
static bool run_due(struct beat_entry *e, int64_t now)
{
	if (e->last_due <= 0 || strcmp(e->def, e->def_seen) != 0) {
		/* never seen, or its timing was edited since the watermark was written: runs start after
		 * now (nothing from before beat knew this definition) */
		if (e->last_due > 0)
			log_info("beat", "schedule %s changed since its last run; it starts from now", e->name);
		e->last_due = now;
		memcpy(e->def_seen, e->def, sizeof(e->def_seen));
		return beat_state_record(B.bs, e) || beat_state_may_publish(B.bs);
	}
	for (int64_t due = first_to_publish(e, now); due > 0 && due <= now; due = beat_next_due(e, due)) {
		if (!beat_state_may_publish(B.bs))
			return false;
		enum soma_err err = publish_run(e, due);
		if (err != SOMA_OK) {
			log_warn("beat", "cannot publish schedule %s's run due at %lld (%s); retrying", e->name,
				 (long long)due, soma_err_str(err));
			return true;
		}
		int64_t before = e->last_due, before_run = e->last_run;
		e->last_due = e->last_run = due;
		if (!beat_state_record(B.bs, e)) {
			e->last_due = before;
			e->last_run = before_run;
			return false; /* recorded again (or found in the store) once the lock is confirmed */
		}
	}
	return true;
}

static void tick(void)
{
	bool was = B.leader;
	B.leader = B.lead && beat_state_lead(B.bs);
	if (B.leader && !was) {
		log_info("beat", "this node (%s) leads beat: %d schedule(s)", B.node, B.n);
		if (!beat_state_load(B.bs, B.e, B.n))
			B.leader = false; /* cannot read the watermarks: try again next tick */
	} else if (!B.leader && was) {
		log_warn("beat", "this node (%s) no longer leads beat", B.node);
	}
	if (!B.leader)
		beat_state_load(B.bs, B.e, B.n); /* follow the leader's progress for the snapshot */
	int64_t now = clock_wall_ms() / 1000;
	bool paused = false;
	for (int i = 0; B.leader && !paused && i < B.n; i++)
		paused = !run_due(&B.e[i], now);
	if (paused && !beat_state_held(B.bs)) {
		B.leader = false;
		log_warn("beat", "this node (%s) lost beat's lock while publishing; another node leads", B.node);
	} else if (paused && !B.paused) {
		log_warn("beat", "this node (%s) cannot confirm beat's lock in Redis; not publishing until it can",
			 B.node);
	}
	B.paused = paused;
	char leader_id[BEAT_NODE_MAX];
	beat_state_leader(B.bs, leader_id, sizeof(leader_id));
	build_status(leader_id);
}

static void *beat_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-beat");
	for (;;) {
		tick();
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, BEAT_TICK_MS);
		pthread_mutex_lock(&B.lock);
		if (!B.stop)
			pthread_cond_timedwait(&B.cond, &B.lock, &until);
		bool stop = B.stop;
		pthread_mutex_unlock(&B.lock);
		if (stop)
			break;
	}
	beat_state_release(B.bs);
	return NULL;
}

enum soma_err sched_beat_start(struct store *st, bool lead, char *why, size_t why_cap)
{
	const char *path = cfg_str(CFG_BEAT_SCHEDULE_FILE);
	if (!cfg_bool(CFG_BEAT_ENABLED) || !path[0])
		return SOMA_OK;
	if (!beat_file_load(path, &B.e, &B.n, why, why_cap))
		return SOMA_ERR_CONFIG;
	/* the token tells apart replicas with the same nodename and pid (PID 1 in containers) */
	char token[33];
	if (ids_random_hex(token, 32) != SOMA_OK) {
		snprintf(why, why_cap, "cannot read random bytes for beat's lock");
		beat_entries_free(B.e, B.n);
		B.e = NULL, B.n = 0;
		return SOMA_ERR_INTERNAL;
	}
	snprintf(B.node, sizeof(B.node), "%.80s:%d:%s", sched_nodename(), (int)getpid(), token);
	B.st = st;
	B.lead = lead;
	B.leader = false;
	B.stop = false;
	B.max_catchup = cfg_int(CFG_BEAT_MAX_CATCHUP);
	B.bs = beat_state_new(cfg_str(CFG_REDIS_URL), cfg_str(CFG_DATA_DIR), B.node,
			      (int)cfg_int(CFG_BEAT_LOCK_TTL_MS));
	if (B.bs) /* GET /v1/schedules lists the schedules from the start, not from beat's first tick */
		build_status("");
	if (!B.bs || pthread_create(&B.tid, NULL, beat_main, NULL) != 0) {
		snprintf(why, why_cap, "cannot start beat (check redis.url)");
		beat_state_free(B.bs);
		beat_entries_free(B.e, B.n);
		json_decref(B.status);
		B.bs = NULL, B.e = NULL, B.n = 0, B.status = NULL;
		return SOMA_ERR_INTERNAL;
	}
	B.running = true;
	log_info("beat", "%d schedule(s) from %s; %s", B.n, path,
		 !lead			   ? "following (this node runs no workers)"
		 : beat_state_shared(B.bs) ? "competing for the leader lock in Redis"
					   : "leading (local: the one process)");
	return SOMA_OK;
}

void sched_beat_stop(void)
{
	if (!B.running)
		return;
	pthread_mutex_lock(&B.lock);
	B.stop = true;
	pthread_cond_broadcast(&B.cond);
	pthread_mutex_unlock(&B.lock);
	pthread_join(B.tid, NULL);
	beat_state_free(B.bs);
	beat_entries_free(B.e, B.n);
	json_decref(B.status);
	B.bs = NULL, B.e = NULL, B.n = 0, B.status = NULL;
	B.running = false;
}

json_t *sched_beat_status_json(void)
{
	pthread_mutex_lock(&B.lock);
	json_t *out = B.status ? json_deep_copy(B.status) : NULL;
	pthread_mutex_unlock(&B.lock);
	if (!out)
		out = json_pack("{s:[], s:n, s:n, s:b, s:s}", "schedules", "leader", "node", "is_leader", 0, "lock",
				B.running ? "starting" : "off");
	return out;
}

bool sched_beat_describe(char *out, size_t cap)
{
	if (!B.running)
		return false;
	pthread_mutex_lock(&B.lock);
	json_t *leader = json_object_get(B.status, "leader");
	snprintf(out, cap, "%d schedule(s); %s; leader %s", B.n,
		 json_is_true(json_object_get(B.status, "is_leader")) ? "leading" : "following",
		 json_is_string(leader) ? json_string_value(leader) : "none yet");
	pthread_mutex_unlock(&B.lock);
	return true;
}

int sched_beat_leader(void)
{
	if (!B.running)
		return -1;
	pthread_mutex_lock(&B.lock);
	int leading = B.status && json_is_true(json_object_get(B.status, "is_leader"));
	pthread_mutex_unlock(&B.lock);
	return leading;
}
