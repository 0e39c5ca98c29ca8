/*
 * exec.c - the store's threads: one group-commit writer and a pool of readers (see store.h).
 *
 * DESIGN: the writer takes every op queued since its last commit (up to BATCH_MAX), opens one
 * transaction, runs each op inside its own SAVEPOINT (a failing op is rolled back alone), and
 * commits once: with synchronous=FULL (SQLite) or synchronous_commit=on (PostgreSQL) that is one
 * fsync for the whole batch. The SQL of each step is the driver's (st->drv, store_int.h). Only after the
 * COMMIT returns are the ops completed, so nothing is acknowledged before it is durable.
 * Readers each own a connection and take read ops one at a time. Queues are bounded
 * (QUEUE_MAX): when full, store_submit refuses and the caller answers 503. A driver may take
 * some writes to its own threads instead (store_driver.take: PostgreSQL's message lanes), and
 * completes them with store_op_complete.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/context_cache.h"
#include "store/store_int.h"

#define BATCH_MAX 256
#define QUEUE_MAX 65536

struct store_op *store_op_new(enum store_op_kind kind, const char *tenant)
{
	/* zeroed up to the long strings at its end, which only need their first byte (a calloc of the
	 * whole op zeroed ~3 KB per op, several ops per chat message) */
	struct store_op *op = malloc(sizeof(*op));
	if (!op)
		return NULL;
	memset(op, 0, offsetof(struct store_op, task_id));
	op->task_id[0] = op->outcome_of[0] = op->cursor[0] = op->error_text[0] = op->next_cursor[0] = '\0';
	op->kind = kind;
	snprintf(op->tenant, sizeof(op->tenant), "%s", tenant ? tenant : "");
	return op;
}

void store_op_free(struct store_op *op)
{
	if (!op)
		return;
	if (op->settled) { /* it never ran: its waiter learns it did not commit */
		op->err = op->err == SOMA_OK ? SOMA_ERR_UNAVAILABLE : op->err;
		op->settled(op);
	}
	json_decref(op->event);
	json_decref(op->task);
	json_decref(op->attachments);
	json_decref(op->row);
	json_decref(op->rows);
	json_decref(op->session);
	free(op->event_text);
	free(op->event_head);
	free(op);
}

static bool is_write(enum store_op_kind k)
{
	return k != STORE_OP_EVENTS_AFTER && k != STORE_OP_CONTEXT && k != STORE_OP_SESSION_GET &&
	       k != STORE_OP_SESSIONS_LIST && k != STORE_OP_ATTACHMENT_GET && k != STORE_OP_BLOBS_UNUSED &&
	       k != STORE_OP_TASK_GET && k != STORE_OP_QUEUE_STATS && k != STORE_OP_DEAD_LIST &&
	       k != STORE_OP_AUDIT_LIST && k != STORE_OP_KEYS_LIST && k != STORE_OP_TENANTS_LIST &&
	       k != STORE_OP_OUTBOX_STATS && k != STORE_OP_OUTBOX_LIST && k != STORE_OP_MEMORY_SEARCH;
}

static void queue_init(struct op_queue *q)
{
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->ready, NULL);
	q->head = q->tail = NULL;
	q->len = 0;
	q->stopping = false;
}

/* Takes up to max ops. wait_ms < 0: blocks until there is one or the queue stops (then returns
 * NULL); otherwise waits at most wait_ms (0: not at all) and returns NULL when none came
 * (*stopping: the queue stopped). */
static struct store_op *queue_take(struct op_queue *q, size_t max, int64_t wait_ms, bool *stopping)
{
	pthread_mutex_lock(&q->lock);
	if (wait_ms < 0) {
		while (!q->head && !q->stopping)
			pthread_cond_wait(&q->ready, &q->lock);
	} else if (wait_ms > 0 && !q->head && !q->stopping) {
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, wait_ms);
		while (!q->head && !q->stopping && pthread_cond_timedwait(&q->ready, &q->lock, &until) == 0)
			;
	}
	if (stopping)
		*stopping = q->stopping;
	struct store_op *first = q->head, *last = q->head;
	size_t n = first ? 1 : 0;
	while (last && last->next && n < max) {
		last = last->next;
		n++;
	}
	if (last) {
		q->head = last->next;
		if (!q->head)
			q->tail = NULL;
		last->next = NULL;
		q->len -= n;
	}
	pthread_mutex_unlock(&q->lock);
	return first;
}

/* Each thread that waits in store_op_wait has its own wakeup, so a completed op wakes its one
 * waiter: with one condition variable for all of them, every completion woke every waiting
 * worker (32 conversation workers, the relays), and that herd's futex and mutex traffic was a
 * fifth of the server's CPU during ingest (perf). */
struct op_waiter {
	pthread_mutex_t lock; /* guards done */
	pthread_cond_t cv;    /* signalled when done */
	bool done;	      /* the op completed */
};

static _Thread_local struct op_waiter this_waiter = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};

static void complete(struct store *st, struct store_op *op)
{
	if (op->settled) {
		void (*settled)(struct store_op *) = op->settled;
		op->settled = NULL;
		settled(op);
	}
	if (op->waiting) { /* the waiter owns op again once done is set: op is not touched after */
		struct op_waiter *w = op->waiter;
		pthread_mutex_lock(&w->lock);
		w->done = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->lock);
	} else if (op->done) {
		if (st->drv->finish)
			st->drv->finish(op);
		op->done(op);
	} else {
		store_op_free(op);
	}
}

void store_op_complete(struct store *st, struct store_op *op)
{
	if (op->err == SOMA_OK && op->event_text && st->commit_hook)
		st->commit_hook(op);
	complete(st, op);
}

static struct metric_family *batch_ops, *commit_seconds;

/* A reservation (or its extension) need not survive a power loss: lost, its task is queued again
 * and runs after the restart, as it would anyway once the dead process's reservation expired.
 * A batch of nothing else commits without waiting for the disk (SQLite: synchronous=NORMAL for
 * that commit; the next durable commit's fsync carries its WAL frames too). An idle worker's
 * reservation is the second commit between a message and its reply's first delta: this takes an
 * fsync off that path. */
static bool op_may_skip_sync(const struct store_op *op)
{
	return op->kind == STORE_OP_TASK_RESERVE || op->kind == STORE_OP_TASK_EXTEND;
}

/* Times a batch runs again after it crossed another transaction (store_driver.retry): PostgreSQL's
 * advice for a deadlock or serialization failure is to run the transaction again; each run
 * waits at most a deadlock_timeout (1 s) before the server breaks a new cycle. */
#define BATCH_RETRIES 3

/* Back to what an op was before it ran, for a batch that runs again: every output it may have
 * set (store.h) cleared, its inputs left alone. event_text is rebuilt by the op itself; an op
 * whose op->row is its output frees the one it may have set (TASK_REVOKE, KEY_REVOKE). */
static void op_reset(struct store_op *op)
{
	op->err = SOMA_OK;
	op->seq = 0;
	op->created = op->has_outcome = op->reply_seen = op->context_cut = op->dead = false;
	json_decref(op->rows);
	op->rows = NULL;
	json_decref(op->session);
	op->session = NULL;
	op->row_tenant[0] = '\0';
}

/* One run of the batch's transaction: begin, each op, commit. *enqueued: an op that committed
 * queued a task. */
static enum soma_err batch_txn(struct store *st, struct store_op *batch, bool *enqueued)
{
	const struct store_driver *drv = st->drv;
	*enqueued = false;
	enum soma_err txn = drv->begin(st);
	for (struct store_op *op = batch; op && txn == SOMA_OK; op = op->next) {
		bool op_enqueued = false, lost = false;
		op->err = drv->write_op(st, op, &op_enqueued, &lost);
		if (lost) {
			/* the whole transaction was rolled back under this op (SQLite: disk full, I/O error;
			 * PostgreSQL: connection lost): the ops before it are gone too, and running more
			 * would commit each on its own */
			txn = op->err == SOMA_ERR_UNAVAILABLE || op->err == SOMA_ERR_FULL ? op->err : SOMA_ERR_STORE;
			break;
		}
		if (op->err != SOMA_OK) {
			free(op->event_text);
			op->event_text = NULL;
		}
		*enqueued |= op->err == SOMA_OK && op_enqueued;
	}
	return txn == SOMA_OK ? drv->commit(st) : txn;
}

static void run_batch(struct store *st, struct store_op *batch)
{
	const struct store_driver *drv = st->drv;
	bool enqueued = false;
	uint64_t t0 = clock_mono_ns();
	size_t nops = 0;
	st->batch_needs_sync = false;
	for (struct store_op *op = batch; op; op = op->next) {
		nops++;
		st->batch_needs_sync |= !op_may_skip_sync(op);
	}
	st->batch = batch;
	enum soma_err txn = batch_txn(st, batch, &enqueued);
	for (int again = 1; txn != SOMA_OK && drv->retry && drv->retry(st); again++) {
		drv->rollback(st, txn); /* nothing of it applied: it runs again as it was */
		if (again > BATCH_RETRIES) {
			log_warn("store",
				 "a batch of %zu writes crossed other transactions %d times; its requests are "
				 "answered 503",
				 nops, again);
			break;
		}
		for (struct store_op *op = batch; op; op = op->next)
			op_reset(op);
		txn = batch_txn(st, batch, &enqueued);
	}
	/* a full disk is a state (store_fault: health, 507 answers) until a batch commits again */
	bool full = txn == SOMA_ERR_FULL;
	for (struct store_op *op = batch; op && !full; op = op->next)
		full = op->err == SOMA_ERR_FULL;
	if (txn == SOMA_OK || full)
		atomic_store(&st->fault_full, full);
	if (full)
		atomic_store(&st->full_at_ms, clock_wall_ms());
	metric_observe(metric_series(batch_ops, NULL), (double)nops);
	metric_observe(metric_series(commit_seconds, NULL), (double)(clock_mono_ns() - t0) / 1e9);
	if (txn != SOMA_OK) {
		drv->rollback(st, txn);
		enqueued = false;
		for (struct store_op *op = batch; op; op = op->next) {
			op->err = txn;
			free(op->event_text);
			op->event_text = NULL;
		}
	}
	for (struct store_op *op = batch; st->commit_hook && op; op = op->next) {
		if (op->err == SOMA_OK && op->event_text)
			st->commit_hook(op);
	}
	for (struct store_op *op = batch; st->ctx && op; op = op->next)
		ctx_cache_note(st->ctx, op); /* before any op completes: a worker sees its message */
	if (enqueued && st->task_hook)
		st->task_hook(st->task_hook_arg);
	while (batch) {
		struct store_op *next = batch->next;
		batch->next = NULL;
		complete(st, batch);
		batch = next;
	}
}

/* The driver's idle steps (SQLite: merging the memory index's segments, sqlite_exec.c) run while
 * no op is queued, one short step at a time, the queue looked at again after each, so an op that
 * arrives waits for one step at most. When does a step run:
 *   - once the writer has had nothing to do for IDLE_AFTER_MS: then steps run back to back until
 *     an op comes or there is nothing left to do;
 *   - between ops that follow each other closely, at most one step every BUSY_STEP_EVERY_MS, so
 *     upkeep goes on under steady traffic, yet an op finds a step in its way rarely (under 1 % of
 *     the time for ~1 ms steps): the commit a message's 200 and its reply's first delta wait for
 *     is not held up by upkeep at p99.
 * Under saturating load the queue is never empty and no step runs at all. */
#define IDLE_AFTER_MS	   50
#define BUSY_STEP_EVERY_MS 200

static void *writer_main(void *arg)
{
	struct store *st = arg;
	bool idle_work = st->drv->idle != NULL, idling = false, stopping = false;
	uint64_t last_step_ns = clock_mono_ns();
	pthread_setname_np(pthread_self(), "soma-writer");
	for (;;) {
		int64_t wait_ms = -1; /* nothing to do between ops: sleep until one comes */
		if (idle_work)
			wait_ms = idling || clock_mono_ns() - last_step_ns >= BUSY_STEP_EVERY_MS * 1000000ull
					  ? 0
					  : IDLE_AFTER_MS;
		struct store_op *batch = queue_take(&st->wq, BATCH_MAX, wait_ms, &stopping);
		if (batch) {
			run_batch(st, batch);
			idle_work = st->drv->idle != NULL;
			idling = false;
		} else if (stopping) {
			break; /* (the queue is empty: the ops queued before the stop ran) */
		} else {
			idle_work = st->drv->idle(st);
			last_step_ns = clock_mono_ns();
			idling = idle_work && (idling || wait_ms == IDLE_AFTER_MS);
		}
	}
	return NULL;
}

struct reader_arg {
	struct store *st; /* owner */
	int index;	  /* which connection */
};

static void *reader_main(void *arg)
{
	struct store *st = ((struct reader_arg *)arg)->st;
	int index = ((struct reader_arg *)arg)->index;
	free(arg);
	pthread_setname_np(pthread_self(), "soma-reader");
	struct store_op *op;
	while ((op = queue_take(&st->rq, 1, -1, NULL))) {
		bool context = op->kind == STORE_OP_CONTEXT && st->ctx;
		uint64_t mark = context ? ctx_cache_mark(st->ctx, op->tenant, op->session_id) : 0;
		op->err = st->drv->read_op(st, index, op);
		if (context && op->err == SOMA_OK && !op->context_cut)
			ctx_cache_fill(st->ctx, mark, op->tenant, op->session_id, op->limit, op->rows, op->seq);
		complete(st, op);
	}
	return NULL;
}

enum soma_err store_exec_start(struct store *st, int readers)
{
	if (readers < 1 || readers > STORE_MAX_READERS)
		return SOMA_ERR_INVALID;
	queue_init(&st->wq);
	queue_init(&st->rq);
	static const double ops_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
	static const double sec_buckets[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5};
	batch_ops = metrics_histogram("soma_store_batch_ops", "Operations grouped into one store commit.", NULL,
				      ops_buckets, sizeof(ops_buckets) / sizeof(ops_buckets[0]));
	commit_seconds = metrics_histogram("soma_store_batch_seconds", "Time to run and commit one batch.", NULL,
					   sec_buckets, sizeof(sec_buckets) / sizeof(sec_buckets[0]));
	enum soma_err err = st->drv->exec_open(st, readers);
	if (err != SOMA_OK)
		return err;
	st->nreaders = readers;
	if (pthread_create(&st->writer_tid, NULL, writer_main, st) != 0)
		return SOMA_ERR_INTERNAL;
	st->exec_running = true;
	for (int i = 0; i < readers; i++) {
		struct reader_arg *ra = malloc(sizeof(*ra));
		if (!ra)
			return SOMA_ERR_NOMEM;
		*ra = (struct reader_arg){st, i};
		if (pthread_create(&st->reader_tids[i], NULL, reader_main, ra) != 0) {
			free(ra);
			return SOMA_ERR_INTERNAL;
		}
	}
	return SOMA_OK;
}

static void queue_stop(struct op_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->ready);
	pthread_mutex_unlock(&q->lock);
}

void store_exec_stop(struct store *st)
{
	if (!st->exec_running)
		return;
	queue_stop(&st->wq);
	queue_stop(&st->rq);
	pthread_join(st->writer_tid, NULL);
	for (int i = 0; i < st->nreaders; i++) {
		if (st->reader_tids[i])
			pthread_join(st->reader_tids[i], NULL);
	}
	st->drv->exec_close(st);
	st->exec_running = false;
}

enum soma_err store_submit(struct store *st, struct store_op *op)
{
	struct op_queue *q = is_write(op->kind) ? &st->wq : &st->rq;
	if (!st->exec_running)
		return SOMA_ERR_UNAVAILABLE;
	/* the database file is gone (store_fault): a write would be acknowledged, then lost */
	if (q == &st->wq && atomic_load(&st->fault_gone))
		return SOMA_ERR_GONE;
	if (op->kind == STORE_OP_CONTEXT && (!op->outcome_of[0] || st->no_late_copies) &&
	    ctx_cache_get(st->ctx, op->tenant, op->session_id, op->limit, op->reply_to, op->reply_absent, &op->rows,
			  &op->seq, &op->reply_seen)) {
		op->err = SOMA_OK; /* answered from memory (context_cache.h): done before we return */
		complete(st, op);
		return SOMA_OK;
	}
	enum soma_err taken;
	if (st->drv->take && st->drv->take(st, op, &taken))
		return taken; /* the driver runs it on its own threads (PostgreSQL's message lanes) */
	if (st->drv->prepare && q == &st->wq)
		st->drv->prepare(op); /* on the caller's thread, not the writer's */
	pthread_mutex_lock(&q->lock);
	if (q->len >= QUEUE_MAX || q->stopping) {
		pthread_mutex_unlock(&q->lock);
		return SOMA_ERR_UNAVAILABLE;
	}
	op->next = NULL;
	if (q->tail)
		q->tail->next = op;
	else
		q->head = op;
	q->tail = op;
	q->len++;
	pthread_cond_signal(&q->ready);
	pthread_mutex_unlock(&q->lock);
	return SOMA_OK;
}

enum soma_err store_op_wait(struct store *st, struct store_op *op)
{
	struct op_waiter *w = &this_waiter;
	w->done = false; /* (no op of this thread is in flight: it waits for each) */
	op->waiter = w;
	op->waiting = 1;
	enum soma_err err = store_submit(st, op);
	if (err != SOMA_OK) {
		op->waiting = 0;
		op->waiter = NULL;
		return op->err = err;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->done)
		pthread_cond_wait(&w->cv, &w->lock);
	pthread_mutex_unlock(&w->lock);
	op->waiting = 0;
	op->waiter = NULL;
	if (st->drv->finish)
		st->drv->finish(op); /* on this thread, not the writer's */
	return op->err;
}

void store_set_commit_hook(struct store *st, void (*hook)(const struct store_op *op))
{
	st->commit_hook = hook;
}

void store_set_no_late_copies(struct store *st, bool none)
{
	st->no_late_copies = none;
}

void store_set_task_hook(struct store *st, void (*hook)(void *arg), void *arg)
{
	st->task_hook = hook;
	st->task_hook_arg = arg;
}

void store_set_task_relay(struct store *st, bool (*hand)(json_t *rows, void *arg), void *arg, int64_t lease_ms)
{
	if (hand) { /* (turned off, they stay as they were for a lane that read hand just before) */
		st->task_relay_arg = arg;
		st->task_relay_lease_ms = lease_ms;
	}
	atomic_store(&st->task_relay, hand); /* after its argument: a lane that sees it sees them */
}

bool store_task_take_handoff(struct store_op *op, int64_t now)
{
	if (!op->task || !op->worker[0])
		return false;
	json_object_set_new(op->task, "worker", json_string(op->worker));
	json_object_set_new(op->task, "reserved_until_ms", json_integer(now + op->delay_ms));
	return true;
}
