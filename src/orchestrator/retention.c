/*
 * retention.c - the retention sweeper: deletes sessions idle longer than retention.sessions_idle_s,
 * audit rows older than retention.audit_s and dead letters older than retention.dead_letters_s
 * (0 keeps each forever), every retention.sweep_interval_s.
 *
 * DESIGN: one thread of its own (not beat: beat runs the users' tasks), started by the
 * "retention" service on nodes with the gateway role only when some retention.* setting is not 0.
 * A sweep submits batches (store.h, RETENTION_*: RETENTION_SESSIONS sessions or RETENTION_BATCH
 * rows, one transaction each) until one comes back short, RETENTION_PAUSE_MS apart, so the store's
 * writer is held only for one batch at a time and the chat ops queued meanwhile commit between
 * them (bench/retention_sweep.py measures the POSTs during a sweep of 10,000 sessions). A session is deleted as DELETE
 * /v1/sessions/{id} deletes it (the store path, then here what the gateway does after it: a reply
 * running for it is stopped on every node, its open streams end), and, when sessions went, the
 * files no attachment names any more are swept at once (blob_sweep.c, with uploads.orphan_grace_s).
 * Its long-term memories stay: they are the tenant's, not the session's. The age of a session is
 * checked in the transaction that deletes it, so one that a message reached meanwhile stays, and
 * so is its reply still to come: a session with a task row queued, reserved or relaying is not
 * taken (the store), nor one whose reply runs on this node's workers (queue_running_sessions, for
 * queue.driver=redis, where a published task has no row; a reply running on another node is not
 * seen: docs/operations.md, Retention).
 * Several nodes (PostgreSQL) may sweep at once: every batch takes its rows FOR UPDATE SKIP LOCKED
 * and re-checks their age, so the deletes are idempotent and cheap to race (pg_retention.c); no
 * lock to lose when a node dies, and each node logs and counts only what it deleted.
 * A sweep that deleted something logs the counts at info, adds them to
 * soma_retention_deleted_total{kind} and appends one audit row (subject "system:retention").
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "audit/audit.h"
#include "bus/bus.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "gateway/gateway.h"
#include "orchestrator/app.h"
#include "orchestrator/retention.h"
#include "queue/queue.h"

static struct {
	pthread_t thread;				/* the sweeper */
	bool started;					/* thread runs */
	pthread_mutex_t lock;				/* guards stopping */
	pthread_cond_t wake;				/* signalled on stop */
	bool stopping;					/* stop asked */
	struct metric_series *deleted[RETENTION_KINDS]; /* soma_retention_deleted_total{kind} */
	_Atomic int64_t last_ms;			/* when the last sweep ended (0: none yet) */
	_Atomic bool last_failed;			/* the last sweep stopped on a store error */
} rt = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static bool stopping(void)
{
	pthread_mutex_lock(&rt.lock);
	bool s = rt.stopping;
	pthread_mutex_unlock(&rt.lock);
	return s;
}

static void nap_ms(long ms)
{
	struct timespec ts = {0, ms * 1000000L};
	nanosleep(&ts, NULL);
}

/* What DELETE /v1/sessions/{id} does after its commit (gateway/sessions.c): a reply running for
 * the session stops (here or on another node) and its open streams end. */
static void session_gone(const char *tenant, const char *session_id)
{
	char key[BUS_KEY_MAX];
	(void)queue_cancel_session(tenant, session_id, false);
	(void)bus_cancel_notify(tenant, session_id, NULL, false);
	bus_key(key, tenant, session_id);
	bus_session_deleted(key);
}

/* Runs batches of kind until one comes back short; false when the store failed. */
static bool sweep_kind(enum store_op_kind kind, int64_t before_ms, int64_t limit, int64_t *deleted)
{
	char resume[STORE_ID_MAX + 1] = ""; /* sessions: the tenant the batch before stopped at */
	while (!stopping()) {
		struct store_op *op = store_op_new(kind, resume);
		if (!op)
			return false;
		op->before_ms = before_ms;
		op->limit = limit;
		if (kind == STORE_OP_RETENTION_SESSIONS && (op->row = json_array()))
			queue_running_sessions(op->row); /* replies running here: left (store.h) */
		if (store_op_wait(app.store, op) != SOMA_OK) {
			log_warn("retention",
				 "a retention batch failed (%s); the sweep stops and runs again in "
				 "retention.sweep_interval_s",
				 soma_err_str(op->err));
			store_op_free(op);
			return false;
		}
		int64_t n = op->seq;
		if (kind == STORE_OP_RETENTION_SESSIONS) {
			size_t i;
			json_t *row;
			n = (int64_t)json_array_size(op->rows);
			json_array_foreach(op->rows, i, row)
			{
				session_gone(json_string_value(json_object_get(row, "tenant")),
					     json_string_value(json_object_get(row, "session_id")));
			}
			if (n) /* the next batch resumes at the tenant this one stopped at (store.h) */
				snprintf(resume, sizeof(resume), "%s",
					 json_string_value(json_object_get(json_array_get(op->rows, n - 1), "tenant")));
		}
		store_op_free(op);
		*deleted += n;
		if (n < limit)
			return true;
		nap_ms(RETENTION_PAUSE_MS);
	}
	return true;
}

static void sweep(void)
{
	int64_t now = clock_wall_ms(), counts[RETENTION_KINDS] = {0};
	const int64_t keep[RETENTION_KINDS] = {cfg_int(CFG_RETENTION_SESSIONS_IDLE_S), cfg_int(CFG_RETENTION_AUDIT_S),
					       cfg_int(CFG_RETENTION_DEAD_LETTERS_S)};
	const enum store_op_kind kinds[RETENTION_KINDS] = {STORE_OP_RETENTION_SESSIONS, STORE_OP_RETENTION_AUDIT,
							   STORE_OP_RETENTION_DEAD};
	bool ok = true;
	for (int k = 0; k < RETENTION_KINDS && ok; k++) {
		if (keep[k] > 0)
			ok = sweep_kind(kinds[k], retention_cutoff_ms(now, keep[k]),
					k == 0 ? RETENTION_SESSIONS : RETENTION_BATCH, &counts[k]);
	}
	if (counts[0] > 0) /* their files no attachment names any more */
		gateway_blob_sweep_now();
	atomic_store(&rt.last_failed, !ok);
	atomic_store(&rt.last_ms, clock_wall_ms());
	if (!counts[0] && !counts[1] && !counts[2])
		return;
	char detail[160];
	retention_summary(detail, sizeof(detail), counts);
	for (int k = 0; k < RETENTION_KINDS; k++)
		metric_add(rt.deleted[k], (double)counts[k]);
	log_info("retention", "retention sweep deleted %s in %.1f ms", detail, (double)(clock_wall_ms() - now));
	struct audit_entry e = {.tenant = "system",
				.subject = "system:retention",
				.action = "retention.sweep",
				.decision = "done",
				.detail = detail};
	audit_record(&e);
}

static void *sweeper(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&rt.lock);
	while (!rt.stopping) {
		struct timespec until =
			clock_deadline_in(CLOCK_REALTIME, cfg_int(CFG_RETENTION_SWEEP_INTERVAL_S) * 1000);
		while (!rt.stopping && pthread_cond_timedwait(&rt.wake, &rt.lock, &until) == 0)
			;
		if (rt.stopping)
			break;
		pthread_mutex_unlock(&rt.lock);
		sweep();
		pthread_mutex_lock(&rt.lock);
	}
	pthread_mutex_unlock(&rt.lock);
	return NULL;
}

enum soma_err retention_svc_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	static const char *const labels[] = {"kind", NULL};
	struct metric_family *f =
		metrics_counter("soma_retention_deleted_total", "Rows the retention sweeper deleted, by kind.", labels);
	for (int k = 0; k < RETENTION_KINDS; k++) {
		const char *v[] = {retention_kind_name(k)};
		rt.deleted[k] = f ? metric_series(f, v) : NULL;
	}
	rt.stopping = false;
	if (pthread_create(&rt.thread, NULL, sweeper, NULL) != 0) {
		snprintf(why, cap, "cannot start the retention sweeper thread");
		return SOMA_ERR_NOMEM;
	}
	rt.started = true;
	log_info("retention",
		 "retention: sessions idle %llds, audit %llds, dead letters %llds (0 keeps forever); "
		 "sweeping every %llds",
		 cfg_int(CFG_RETENTION_SESSIONS_IDLE_S), cfg_int(CFG_RETENTION_AUDIT_S),
		 cfg_int(CFG_RETENTION_DEAD_LETTERS_S), cfg_int(CFG_RETENTION_SWEEP_INTERVAL_S));
	return SOMA_OK;
}

void retention_svc_stop(void *ctx)
{
	(void)ctx;
	if (!rt.started)
		return;
	pthread_mutex_lock(&rt.lock);
	rt.stopping = true;
	pthread_cond_broadcast(&rt.wake);
	pthread_mutex_unlock(&rt.lock);
	pthread_join(rt.thread, NULL);
	rt.started = false;
}

enum svc_status retention_svc_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	if (atomic_load(&rt.last_failed)) {
		snprintf(detail, cap, "the last retention sweep failed (store error); it runs again in %llds",
			 cfg_int(CFG_RETENTION_SWEEP_INTERVAL_S));
		return SVC_DEGRADED;
	}
	snprintf(detail, cap, "sweeping every %llds", cfg_int(CFG_RETENTION_SWEEP_INTERVAL_S));
	return SVC_OK;
}
