/*
 * sqlite_exec.c - the SQLite driver's side of the store's threads (exec.c): the writer's and the
 * readers' connections, the batch transaction, and the checkpoint thread.
 *
 * DESIGN: the writer opens BEGIN IMMEDIATE, runs each op inside SAVEPOINT op (ROLLBACK TO op on
 * error, then RELEASE op) and commits once; with synchronous=FULL that is one fsync per batch.
 * Every cached statement is reset after each op: a statement left stepped keeps a read
 * transaction open, which pins an old WAL snapshot and stops checkpoints. The WAL hook replaces
 * SQLite's auto-checkpoint with a thread of its own that copies the WAL back concurrently.
 * While no op is queued the writer merges the memory index (sq_idle): each batch's memories rows
 * are a new FTS5 segment, and a recall reads each of its words in every segment.
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/context_cache.h"
#include "store/store_int.h"

static struct metric_family *wal_frames;

#define CHECKPOINT_FRAMES  4000	   /* ~16 MB of WAL: then copy it back into the database */
#define CHECKPOINT_IDLE_MS 1000	   /* or once the writer was still this long after adding frames */
#define FULL_LOG_EVERY_MS  10000   /* a full disk is logged once per this, with a count */
#define WRITER_CACHE_KIB   "16384" /* the writer connection's page cache, at most (KiB) */
/* leaf pages one idle merge step writes, about: ~1 ms a step on a 50k-memory index (a step
 * ends at a word's end, so one very common word's doclist can make a step longer) */
#define MERGE_PAGES "4"

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
	/* (the lock is the checkpoint thread's, which sleeps in a wait nearly always: uncontended) */
	pthread_mutex_lock(&st->ckpt_lock);
	bool was_quiet = !st->wal_commit_ms; /* the thread waits without a timeout: wake it */
	st->wal_commit_ms = clock_wall_ms();
	if (frames >= CHECKPOINT_FRAMES)
		st->ckpt_wanted = true;
	if (was_quiet || st->ckpt_wanted)
		pthread_cond_signal(&st->ckpt_cv);
	pthread_mutex_unlock(&st->ckpt_lock);
	return SQLITE_OK;
}

/* Checkpoint thread, ckpt_lock held: waits until a checkpoint is wanted or due. A WAL under
 * CHECKPOINT_FRAMES was only copied back at a clean shutdown: a quiet install kept all its data
 * in the WAL alone, which a crash and a damaged WAL header then lost whole. So once the writer has
 * added frames and then been still for CHECKPOINT_IDLE_MS, a PASSIVE checkpoint copies them back;
 * under load a commit comes sooner, and this never runs. */
static void checkpoint_wait(struct store *st)
{
	while (!st->ckpt_wanted && !st->ckpt_stop) {
		if (!st->wal_commit_ms) {
			pthread_cond_wait(&st->ckpt_cv, &st->ckpt_lock);
			continue;
		}
		int64_t due = st->wal_commit_ms + CHECKPOINT_IDLE_MS, now = clock_wall_ms();
		if (now >= due) {
			st->ckpt_wanted = true;
			break;
		}
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, due - now);
		(void)pthread_cond_timedwait(&st->ckpt_cv, &st->ckpt_lock, &until);
	}
	st->wal_commit_ms = 0; /* (a commit during the checkpoint sets it again) */
}

static void *checkpoint_main(void *arg)
{
	struct store *st = arg;
	pthread_setname_np(pthread_self(), "soma-checkpoint");
	pthread_mutex_lock(&st->ckpt_lock);
	for (;;) {
		checkpoint_wait(st);
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

static enum soma_err sq_exec_open(struct store *st, int readers)
{
	/* the writer's page cache holds the pages it writes again and again (the b-trees' right
	 * edges, each live session's events, the indexes): at SQLite's default 2 MB it read about
	 * four pages per chat message back through the VFS (one pread each) during a 600-session
	 * ingest (SQLITE_DBSTATUS_CACHE_MISS). 16 MiB reads 0.02 a message and 64 MiB none, but 64
	 * MiB cost 60 MB more RSS once the database outgrew it, for no measurable rate (gateway-only
	 * ingest, 70k messages: RSS 19 / 37 / 96 MB at 2 / 16 / 64 MiB) */
	if (dbconn_open(&st->writer, st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK ||
	    dbconn_exec(&st->writer, "PRAGMA cache_size=-" WRITER_CACHE_KIB) != SOMA_OK)
		return SOMA_ERR_STORE;
	static const double frame_buckets[] = {1, 4, 16, 64, 256, 1024, 4096};
	wal_frames = metrics_histogram("soma_store_wal_frames", "Pages written to the WAL per commit.", NULL,
				       frame_buckets, sizeof(frame_buckets) / sizeof(frame_buckets[0]));
	pthread_mutex_init(&st->ckpt_lock, NULL);
	pthread_cond_init(&st->ckpt_cv, NULL);
	st->ckpt_wanted = st->ckpt_stop = false;
	st->fts_merge_wanted = true; /* an index written by an earlier run may have segments to merge */
	st->fts_usermerge_set = false;
	if (dbconn_open(&st->checkpointer, st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK ||
	    pthread_create(&st->checkpoint_tid, NULL, checkpoint_main, st) != 0)
		return SOMA_ERR_STORE;
	sqlite3_wal_hook(st->writer.db, on_wal_commit, st);
	for (int i = 0; i < readers; i++) {
		if (dbconn_open(&st->readers[i], st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK)
			return SOMA_ERR_STORE;
	}
	/* one process owns data.dir, so its writer sees every event: contexts can be kept
	 * (context_cache.h); without the cache (OOM) every context is read */
	st->ctx = ctx_cache_new();
	return SOMA_OK;
}

static void sq_exec_close(struct store *st)
{
	pthread_mutex_lock(&st->ckpt_lock);
	st->ckpt_stop = true;
	pthread_cond_signal(&st->ckpt_cv);
	pthread_mutex_unlock(&st->ckpt_lock);
	pthread_join(st->checkpoint_tid, NULL);
	dbconn_close(&st->checkpointer);
	dbconn_close(&st->writer);
	for (int i = 0; i < st->nreaders; i++)
		dbconn_close(&st->readers[i]);
	ctx_cache_free(st->ctx);
	st->ctx = NULL;
}

/* Runs a statement without results from the connection's cache: the savepoint statements of
 * every op were parsed again on each run through sqlite3_exec (~2% of the server's CPU during
 * ingest, on the one writer thread); so were each batch's BEGIN and COMMIT. */
static enum soma_err cached_exec(struct dbconn *c, const char *sql)
{
	sqlite3_stmt *s = dbconn_stmt(c, sql);
	if (!s)
		return SOMA_ERR_STORE;
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* err, or SOMA_ERR_FULL when the connection's last error was a full disk (SQLITE_FULL) */
static enum soma_err full_or(struct dbconn *c, enum soma_err err)
{
	return err != SOMA_OK && (sqlite3_extended_errcode(c->db) & 0xff) == SQLITE_FULL ? SOMA_ERR_FULL : err;
}

static enum soma_err sq_begin(struct store *st)
{
	store_sql_memory_pending_cut(0); /* (empty already: a batch ends in flush or a lost txn) */
	/* a batch of reservations only commits without an fsync (exec.c, op_may_skip_sync); the
	 * setting is per connection and changed outside a transaction */
	bool normal = !st->batch_needs_sync;
	if (normal != st->writer_sync_normal) {
		if (cached_exec(&st->writer, normal ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL") !=
		    SOMA_OK)
			return SOMA_ERR_STORE;
		st->writer_sync_normal = normal;
	}
	return cached_exec(&st->writer, "BEGIN IMMEDIATE");
}

static enum soma_err sq_write_op(struct store *st, struct store_op *op, bool *enqueued, bool *txn_lost)
{
	struct dbconn *c = &st->writer;
	if (cached_exec(c, "SAVEPOINT op") != SOMA_OK)
		return SOMA_ERR_STORE;
	size_t mark = store_sql_memory_pending(); /* the op's memories rows wait for the commit */
	enum soma_err err = full_or(c, store_sql_write(c, op, enqueued));
	dbconn_release(c);
	/* an op that reports success may still have had a statement fail under it: when SQLite rolled
	 * the whole transaction back, the ops after this one would each commit alone */
	if (sqlite3_get_autocommit(c->db)) {
		err = err == SOMA_OK ? SOMA_ERR_STORE : err;
		*txn_lost = true; /* SQLite rolled the whole transaction back (disk full, I/O error) */
		store_sql_memory_pending_cut(0);
		return err;
	}
	if (err != SOMA_OK) {
		store_sql_memory_pending_cut(mark);
		(void)cached_exec(c, "ROLLBACK TO op");
	}
	(void)cached_exec(c, "RELEASE op");
	return err;
}

/* The batch's memories rows go in first, outside any op's savepoint (sqlite_memory.c): FTS5
 * indexes them as one segment. If that fails, the batch fails as a failed COMMIT would. */
static enum soma_err sq_commit(struct store *st)
{
	enum soma_err err = full_or(&st->writer, store_sql_memory_flush(&st->writer));
	dbconn_release(&st->writer);
	if (err != SOMA_OK)
		return err;
	err = full_or(&st->writer, cached_exec(&st->writer, "COMMIT"));
	if (store_sql_memory_written() && err == SOMA_OK)
		st->fts_merge_wanted = true;
	return err;
}

/* One step of merging the memory index's FTS5 segments, while the writer has nothing queued
 * (exec.c): a recall reads each word's doclist in every segment, so its cost grew with the
 * segments that batches leave (3 at 1k memories, 17 at 10k); merged they cost about half.
 * FTS5's own automerge merges only once a level holds 4 segments; 'merge' with a positive page
 * budget merges a level holding `usermerge` segments, set to 2 (its least) here: a level is
 * merged as soon as it has two, so an index ends with about one segment per level, and each row
 * is rewritten about once per level as with automerge (a negative budget would merge all
 * segments into one, rewriting the whole index after every batch). Each step is its own short
 * transaction, at synchronous=NORMAL: a step lost to a power cut loses only the reordering, and
 * the next durable commit's fsync carries its WAL frames. A step that merged nothing ends the
 * run until memories are written again. Returns true when there may be more to merge. */
static bool sq_idle(struct store *st)
{
	if (!st->fts_merge_wanted)
		return false;
	struct dbconn *c = &st->writer;
	sqlite3_int64 before = sqlite3_total_changes64(c->db);
	st->batch_needs_sync = false;
	enum soma_err err = sq_begin(st);
	if (err == SOMA_OK && !st->fts_usermerge_set)
		err = cached_exec(c, "INSERT INTO memories_fts(memories_fts, rank) VALUES ('usermerge', 2)");
	if (err == SOMA_OK)
		err = cached_exec(c, "INSERT INTO memories_fts(memories_fts, rank) VALUES ('merge', " MERGE_PAGES ")");
	if (err == SOMA_OK)
		err = cached_exec(c, "COMMIT");
	if (err != SOMA_OK) {
		log_warn("store", "merging the memory index failed: %s; %s", sqlite3_errmsg(c->db),
			 "recalls stay correct but slower; it is tried again after the next memory is written "
			 "(check disk space under data.dir)");
		if (!sqlite3_get_autocommit(c->db))
			(void)dbconn_exec(c, "ROLLBACK");
		st->fts_merge_wanted = false;
		return false;
	}
	/* the INSERTs count one change each; a step that merged also wrote the index's rows */
	sqlite3_int64 changes = sqlite3_total_changes64(c->db) - before - (st->fts_usermerge_set ? 1 : 2);
	st->fts_usermerge_set = true;
	st->fts_merge_wanted = changes > 0;
	return st->fts_merge_wanted;
}

/* A full disk fails every batch until space is freed: one line per FULL_LOG_EVERY_MS, with the
 * count of the batches since the last (writer thread only: the statics are its own). */
static void sq_rollback(struct store *st, enum soma_err why)
{
	static int64_t full_logged_ms;
	static long full_quiet;
	if (why != SOMA_ERR_FULL) {
		log_error("store", "commit failed: %s; %s", sqlite3_errmsg(st->writer.db),
			  "the requests of this batch were not acknowledged (answered 500); see the error above");
	} else if (clock_wall_ms() - full_logged_ms >= FULL_LOG_EVERY_MS) {
		log_error("store",
			  "the disk under data.dir %s is full (%s): writes are refused with 507 storage_full, %ld "
			  "more batch(es) since the last such line; free space there",
			  st->path, sqlite3_errmsg(st->writer.db), full_quiet);
		full_logged_ms = clock_wall_ms();
		full_quiet = 0;
	} else {
		full_quiet++;
	}
	if (!sqlite3_get_autocommit(st->writer.db))
		(void)dbconn_exec(&st->writer, "ROLLBACK");
}

static enum soma_err sq_read_op(struct store *st, int reader, struct store_op *op)
{
	struct dbconn *c = &st->readers[reader];
	enum soma_err err = store_sql_read(c, op);
	dbconn_release(c);
	return err;
}

/* the driver table; its synchronous part is in sqlite.c */
const struct store_driver store_sqlite_driver = {
	.name = "sqlite",
	.exec_open = sq_exec_open,
	.exec_close = sq_exec_close,
	.begin = sq_begin,
	.write_op = sq_write_op,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.read_op = sq_read_op,
	.idle = sq_idle,
	.prepare = store_sql_prepare,
	.finish = store_sql_finish,
	.close = sqlite_close,
	.migrate = sqlite_migrate,
	.schema_version = sqlite_schema_version,
	.ping = sqlite_ping,
	.data_version = sqlite_data_version,
	.key_insert = sqlite_key_insert,
	.key_list = sqlite_key_list,
	.key_revoke = sqlite_key_revoke,
	.audit_insert_now = sqlite_audit_insert_now,
	.tasks_recover = sqlite_tasks_recover,
};
