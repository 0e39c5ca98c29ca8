/*
 * exec.c - the store's threads: one group-commit writer and a pool of readers (see store.h).
 *
 * DESIGN: the writer takes every op queued since its last commit (up to BATCH_MAX), opens one
 * transaction, runs each op inside its own SAVEPOINT (a failing op is rolled back alone), and
 * commits once: with synchronous=FULL that is one fsync for the whole batch. Only after the
 * COMMIT returns are the ops completed, so nothing is acknowledged before it is durable.
 * Readers each own a connection and take read ops one at a time. Queues are bounded
 * (QUEUE_MAX): when full, store_submit refuses and the caller answers 503.
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store_int.h"

#define BATCH_MAX 256
#define QUEUE_MAX 65536

struct store_op *store_op_new(enum store_op_kind kind, const char *tenant)
{
	struct store_op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->kind = kind;
	snprintf(op->tenant, sizeof(op->tenant), "%s", tenant ? tenant : "");
	return op;
}

void store_op_free(struct store_op *op)
{
	if (!op)
		return;
	json_decref(op->event);
	json_decref(op->task);
	json_decref(op->attachments);
	json_decref(op->row);
	json_decref(op->rows);
	json_decref(op->session);
	free(op->event_text);
	free(op);
}

static bool is_write(enum store_op_kind k)
{
	return k != STORE_OP_EVENTS_AFTER && k != STORE_OP_CONTEXT && k != STORE_OP_SESSION_GET &&
	       k != STORE_OP_SESSIONS_LIST && k != STORE_OP_ATTACHMENT_GET && k != STORE_OP_TASK_GET &&
	       k != STORE_OP_QUEUE_STATS && k != STORE_OP_DEAD_LIST && k != STORE_OP_AUDIT_LIST &&
	       k != STORE_OP_KEYS_LIST && k != STORE_OP_TENANTS_LIST && k != STORE_OP_OUTBOX_STATS &&
	       k != STORE_OP_OUTBOX_LIST && k != STORE_OP_MEMORY_SEARCH;
}

static void queue_init(struct op_queue *q)
{
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->ready, NULL);
	q->head = q->tail = NULL;
	q->len = 0;
	q->stopping = false;
}

/* Takes up to max ops; blocks until there is one or the queue stops (then returns NULL). */
static struct store_op *queue_take(struct op_queue *q, size_t max)
{
	pthread_mutex_lock(&q->lock);
	while (!q->head && !q->stopping)
		pthread_cond_wait(&q->ready, &q->lock);
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

static void complete(struct store *st, struct store_op *op)
{
	if (op->waiting) {
		pthread_mutex_lock(&st->wait_lock);
		op->waiting = 2;
		pthread_cond_broadcast(&st->wait_cv);
		pthread_mutex_unlock(&st->wait_lock);
	} else if (op->done) {
		op->done(op);
	} else {
		store_op_free(op);
	}
}

static struct metric_family *batch_ops, *commit_seconds, *wal_frames;

/* SQLite calls this after each commit with the WAL's frame count: frames written per batch is
 * the number that bounds ingest throughput (each frame is a page write). */
#define CHECKPOINT_FRAMES 4000 /* ~16 MB of WAL: then copy it back into the database */

/* SQLite calls this after each commit with the WAL's frame count: frames written per batch is
 * the number that bounds ingest throughput (each frame is a page write). A registered hook
 * replaces SQLite's auto-checkpoint, so this also asks the checkpoint thread to run: it copies
 * the WAL into the database concurrently (PASSIVE), so commits never wait for it, and the
 * next commit after a complete checkpoint starts the WAL over instead of growing it. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
	(void)db, (void)name;
	struct store *st = arg;
	int written = frames >= st->wal_last_frames ? frames - st->wal_last_frames : frames;
	st->wal_last_frames = frames;
	if (wal_frames)
		metric_observe(metric_series(wal_frames, NULL), written);
	if (frames >= CHECKPOINT_FRAMES) {
		pthread_mutex_lock(&st->ckpt_lock);
		st->ckpt_wanted = true;
		pthread_cond_signal(&st->ckpt_cv);
		pthread_mutex_unlock(&st->ckpt_lock);
	}
	return SQLITE_OK;
}

static void *checkpoint_main(void *arg)
{
	struct store *st = arg;
	pthread_setname_np(pthread_self(), "soma-checkpoint");
	pthread_mutex_lock(&st->ckpt_lock);
	for (;;) {
		while (!st->ckpt_wanted && !st->ckpt_stop)
			pthread_cond_wait(&st->ckpt_cv, &st->ckpt_lock);
		if (st->ckpt_stop)
			break;
		st->ckpt_wanted = false;
		pthread_mutex_unlock(&st->ckpt_lock);
		int log_frames = 0, done = 0;
		int rc = sqlite3_wal_checkpoint_v2(st->checkpointer.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
						   &done);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			log_warn("store", "WAL checkpoint failed: %s", sqlite3_errmsg(st->checkpointer.db));
		pthread_mutex_lock(&st->ckpt_lock);
	}
	pthread_mutex_unlock(&st->ckpt_lock);
	return NULL;
}

static void run_batch(struct store *st, struct store_op *batch)
{
	struct dbconn *c = &st->writer;
	bool enqueued = false;
	uint64_t t0 = clock_mono_ns();
	size_t nops = 0;
	for (struct store_op *op = batch; op; op = op->next)
		nops++;
	enum soma_err txn = dbconn_exec(c, "BEGIN IMMEDIATE");
	for (struct store_op *op = batch; op && txn == SOMA_OK; op = op->next) {
		if (dbconn_exec(c, "SAVEPOINT op") != SOMA_OK) {
			op->err = SOMA_ERR_STORE;
			continue;
		}
		bool op_enqueued = false;
		op->err = store_sql_write(c, op, &op_enqueued);
		dbconn_release(c);
		if (op->err != SOMA_OK && sqlite3_get_autocommit(c->db)) {
			/* SQLite rolled the whole transaction back (disk full, I/O error): the ops before
			 * this one are gone too, and running more would commit each on its own */
			txn = SOMA_ERR_STORE;
			break;
		}
		if (op->err != SOMA_OK) {
			(void)dbconn_exec(c, "ROLLBACK TO op");
			free(op->event_text);
			op->event_text = NULL;
		}
		enqueued |= op->err == SOMA_OK && op_enqueued;
		(void)dbconn_exec(c, "RELEASE op");
	}
	if (txn == SOMA_OK)
		txn = dbconn_exec(c, "COMMIT");
	metric_observe(metric_series(batch_ops, NULL), (double)nops);
	metric_observe(metric_series(commit_seconds, NULL), (double)(clock_mono_ns() - t0) / 1e9);
	if (txn != SOMA_OK) {
		log_error("store", "commit failed: %s; %s", sqlite3_errmsg(c->db),
			  "the requests of this batch were not acknowledged; check disk space under data.dir");
		(void)dbconn_exec(c, "ROLLBACK");
		enqueued = false;
		for (struct store_op *op = batch; op; op = op->next)
			op->err = SOMA_ERR_STORE;
	}
	for (struct store_op *op = batch; st->commit_hook && op; op = op->next) {
		if (op->err == SOMA_OK && op->event_text)
			st->commit_hook(op);
	}
	if (enqueued && st->task_hook)
		st->task_hook(st->task_hook_arg);
	while (batch) {
		struct store_op *next = batch->next;
		batch->next = NULL;
		complete(st, batch);
		batch = next;
	}
}

static void *writer_main(void *arg)
{
	struct store *st = arg;
	struct store_op *batch;
	pthread_setname_np(pthread_self(), "soma-writer");
	while ((batch = queue_take(&st->wq, BATCH_MAX)))
		run_batch(st, batch);
	return NULL;
}

struct reader_arg {
	struct store *st; /* owner */
	int index;	  /* which connection */
};

static void *reader_main(void *arg)
{
	struct store *st = ((struct reader_arg *)arg)->st;
	struct dbconn *c = &st->readers[((struct reader_arg *)arg)->index];
	free(arg);
	pthread_setname_np(pthread_self(), "soma-reader");
	struct store_op *op;
	while ((op = queue_take(&st->rq, 1))) {
		op->err = store_sql_read(c, op);
		dbconn_release(c);
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
	pthread_mutex_init(&st->wait_lock, NULL);
	pthread_cond_init(&st->wait_cv, NULL);
	if (dbconn_open(&st->writer, st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK)
		return SOMA_ERR_STORE;
	static const double ops_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
	static const double sec_buckets[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5};
	static const double frame_buckets[] = {1, 4, 16, 64, 256, 1024, 4096};
	batch_ops = metrics_histogram("soma_store_batch_ops", "Operations grouped into one store commit.", NULL,
				      ops_buckets, sizeof(ops_buckets) / sizeof(ops_buckets[0]));
	commit_seconds = metrics_histogram("soma_store_batch_seconds", "Time to run and commit one batch.", NULL,
					   sec_buckets, sizeof(sec_buckets) / sizeof(sec_buckets[0]));
	wal_frames = metrics_histogram("soma_store_wal_frames", "Pages written to the WAL per commit.", NULL,
				       frame_buckets, sizeof(frame_buckets) / sizeof(frame_buckets[0]));
	pthread_mutex_init(&st->ckpt_lock, NULL);
	pthread_cond_init(&st->ckpt_cv, NULL);
	st->ckpt_wanted = st->ckpt_stop = false;
	if (dbconn_open(&st->checkpointer, st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK ||
	    pthread_create(&st->checkpoint_tid, NULL, checkpoint_main, st) != 0)
		return SOMA_ERR_STORE;
	sqlite3_wal_hook(st->writer.db, on_wal_commit, st);
	for (int i = 0; i < readers; i++) {
		if (dbconn_open(&st->readers[i], st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK)
			return SOMA_ERR_STORE;
		st->nreaders = i + 1;
	}
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
	pthread_mutex_lock(&st->ckpt_lock);
	st->ckpt_stop = true;
	pthread_cond_signal(&st->ckpt_cv);
	pthread_mutex_unlock(&st->ckpt_lock);
	pthread_join(st->checkpoint_tid, NULL);
	dbconn_close(&st->checkpointer);
	dbconn_close(&st->writer);
	for (int i = 0; i < st->nreaders; i++)
		dbconn_close(&st->readers[i]);
	st->exec_running = false;
}

enum soma_err store_submit(struct store *st, struct store_op *op)
{
	struct op_queue *q = is_write(op->kind) ? &st->wq : &st->rq;
	if (!st->exec_running)
		return SOMA_ERR_UNAVAILABLE;
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
	op->waiting = 1;
	enum soma_err err = store_submit(st, op);
	if (err != SOMA_OK) {
		op->waiting = 0;
		return op->err = err;
	}
	pthread_mutex_lock(&st->wait_lock);
	while (op->waiting != 2)
		pthread_cond_wait(&st->wait_cv, &st->wait_lock);
	pthread_mutex_unlock(&st->wait_lock);
	op->waiting = 0;
	return op->err;
}

void store_set_commit_hook(struct store *st, void (*hook)(const struct store_op *op))
{
	st->commit_hook = hook;
}

void store_set_task_hook(struct store *st, void (*hook)(void *arg), void *arg)
{
	st->task_hook = hook;
	st->task_hook_arg = arg;
}
