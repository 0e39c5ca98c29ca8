/*
 * store_int.h - internals of the store: the driver table both drivers fill (SQLite: sqlite*.c,
 * PostgreSQL: pg*.c), the op queues the shared threads of exec.c run, and the SQLite driver's
 * connection with its statement cache and per-op SQL entry points.
 *
 * DESIGN: struct store holds what every driver shares (the queues, the writer and reader
 * threads, the hooks) and a pointer to its driver's table. exec.c's writer runs a batch as
 * drv->begin, drv->write_op for each op (each in its own savepoint), drv->commit; a reader runs
 * drv->read_op on its own connection. store.c dispatches the synchronous calls of store.h.
 */
#ifndef SOMA_STORE_STORE_INT_H
#define SOMA_STORE_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "store/store.h"

#define STORE_STMT_CACHE 96
/* A reservation reaches a task that has used every attempt (attempts > max_retries) only when its
 * worker stopped mid-run each time (retries and successes settle the row): a task that kills its
 * process would loop forever, so the reserve dead-letters it with this error instead. At most
 * this many such tasks are dead-lettered per reserve (the next poll goes on). */
#define STORE_TASK_EXHAUSTED_MAX 8
#define STORE_TASK_EXHAUSTED_ERROR                                                                           \
	"its worker stopped before it finished (process killed, crashed, or lost the reservation) on every " \
	"attempt; dead-lettered after max_retries"
#define STORE_MAX_READERS 64

struct store;

/* What a driver does; every function is called with the store it opened. The exec functions run
 * on the thread named in their comment; the synchronous ones on any thread (the driver locks). */
struct store_driver {
	const char *name; /* "sqlite", "postgresql" */
	/* opens the writer's and the readers' connections (and any helper thread of the driver) */
	enum soma_err (*exec_open)(struct store *st, int readers);
	void (*exec_close)(struct store *st); /* after the threads stopped */
	/* writer thread: the batch's transaction; write_op runs op in its own savepoint and rolls it
	 * back alone on error; *txn_lost when the whole transaction is gone (the batch fails) */
	enum soma_err (*begin)(struct store *st);
	enum soma_err (*write_op)(struct store *st, struct store_op *op, bool *enqueued, bool *txn_lost);
	enum soma_err (*commit)(struct store *st);
	void (*rollback)(struct store *st, enum soma_err why); /* after a failed batch: logs, rolls back */
	/* writer thread, after a failed batch's rollback (NULL: never): true when it failed only for
	 * crossing another transaction (PostgreSQL: deadlock 40P01, serialization failure 40001),
	 * nothing of it applied, so the same batch may run again */
	bool (*retry)(struct store *st);
	/* any thread, in store_submit (NULL: none): true when the driver took op to run it on its own
	 * threads (*err SOMA_OK: it completes op with store_op_complete; else op is refused and stays
	 * the caller's), false when op goes to the writer's queue as usual */
	bool (*take)(struct store *st, struct store_op *op, enum soma_err *err);
	/* any thread, in store_submit before op is queued for the writer (NULL: none): work of a
	 * write that need not wait for the writer thread, which bounds ingest */
	void (*prepare)(struct store_op *op);
	/* the thread that waits for op, once it completed (or the writer's, before op->done; NULL:
	 * none): work of a write's result that need not be done on the writer thread */
	void (*finish)(struct store_op *op);
	/* writer thread, when no op is queued (NULL: none): one short step of upkeep in its own
	 * transaction; true when there may be more, and the writer calls it again unless an op came */
	bool (*idle)(struct store *st);
	/* reader thread `reader` (0..readers-1) */
	enum soma_err (*read_op)(struct store *st, int reader, struct store_op *op);
	/* synchronous (store.h) */
	void (*close)(struct store *st);
	enum soma_err (*migrate)(struct store *st, int *applied);
	enum soma_err (*schema_version)(struct store *st, int *current, int *latest);
	enum soma_err (*ping)(struct store *st);
	enum soma_err (*data_version)(struct store *st, int64_t *version);
	enum soma_err (*key_insert)(struct store *st, const struct store_key *key);
	enum soma_err (*key_list)(struct store *st, struct store_key **keys, size_t *n);
	enum soma_err (*key_revoke)(struct store *st, const char *id);
	enum soma_err (*audit_insert_now)(struct store *st, json_t *row);
	enum soma_err (*tasks_recover)(struct store *st, int *n);
};

extern const struct store_driver store_sqlite_driver; /* sqlite.c */
extern const struct store_driver store_pg_driver;     /* pg.c */
/* Fills st for the driver (st is zeroed, drv set by the caller); *why for the operator. */
enum soma_err store_sqlite_open(struct store *st, const char *data_dir, char *why, size_t why_cap);
enum soma_err store_pg_open(struct store *st, const char *url, char *why, size_t why_cap);
/* mkdir -p dir (mode 0700); SOMA_ERR_IO with errno set on failure. */
enum soma_err store_mkdir_p(const char *dir);

/* One SQLite connection and its prepared statements, keyed by the address of the SQL text
 * (every statement is a string literal, so the address is stable). Used by one thread. */
struct dbconn {
	sqlite3 *db; /* the connection */
	struct {
		const char *sql;    /* key: the literal's address */
		sqlite3_stmt *stmt; /* prepared once, reset on reuse */
	} cache[STORE_STMT_CACHE];
	int n; /* used entries */
};

struct op_queue {
	pthread_mutex_t lock;	      /* guards the fields below */
	pthread_cond_t ready;	      /* signalled on push and on stop */
	struct store_op *head, *tail; /* FIFO */
	size_t len;		      /* queued ops */
	bool stopping;		      /* drain, then exit */
};

struct pg_store;

struct store {
	const struct store_driver *drv;			     /* the driver's table */
	struct pg_store *pg;				     /* PostgreSQL driver state (pg.c); NULL on SQLite */
	struct dbconn main;				     /* CLI, migrations, keys, ping (serialized mode) */
	char path[4200];				     /* database file */
	bool exec_running;				     /* writer and readers started */
	struct dbconn writer;				     /* the writer thread's connection */
	pthread_t writer_tid;				     /* the group-commit writer */
	struct op_queue wq;				     /* write ops */
	int nreaders;					     /* reader threads */
	struct dbconn readers[STORE_MAX_READERS];	     /* one connection each */
	pthread_t reader_tids[STORE_MAX_READERS];	     /* reader threads */
	struct op_queue rq;				     /* read ops */
	void (*task_hook)(void *arg);			     /* after a commit that enqueued tasks */
	void *task_hook_arg;				     /* its argument */
	bool (*_Atomic task_relay)(json_t *rows, void *arg); /* takes lane-committed tasks (store.h), or NULL */
	void *task_relay_arg;				     /* its argument */
	int64_t task_relay_lease_ms;			     /* their lease */
	void (*commit_hook)(const struct store_op *op);	     /* publishes committed events */
	int wal_last_frames;				     /* WAL frame count after the last commit (metrics) */
	bool batch_needs_sync;	    /* writer: this batch holds an op whose commit must be durable */
	struct store_op *batch;	    /* writer: the batch being run (its ops, for the driver's begin) */
	bool writer_sync_normal;    /* writer (SQLite): synchronous=NORMAL is set now */
	struct dbconn checkpointer; /* the checkpoint thread's connection */
	pthread_t checkpoint_tid;   /* copies the WAL back into the database, off the commit path */
	pthread_mutex_t ckpt_lock;  /* guards ckpt_wanted */
	pthread_cond_t ckpt_cv;	    /* signalled when the WAL passes the threshold */
	bool ckpt_wanted;	    /* a checkpoint is due */
	bool ckpt_stop;		    /* the thread should exit */
	struct ctx_cache *ctx;	    /* SQLite: contexts kept in memory (context_cache.h); NULL on PG */
	bool no_late_copies;	    /* store_set_no_late_copies: the cache may answer has_outcome */
	_Atomic bool fault_full;    /* the last write batch failed for a full disk (store_fault) */
	_Atomic int64_t full_at_ms; /* when a batch last failed so (wall ms; 0: never) */
	_Atomic bool fault_gone;    /* the database file was removed under us (store_fault) */
	int64_t wal_commit_ms;	    /* SQLite writer: when the last commit added WAL frames (0: none since
				       the last checkpoint); read by the checkpoint thread under ckpt_lock */

	/* writer (SQLite, sqlite_exec.c sq_idle): the memory index may have segments to merge */
	_Atomic bool fts_merge_wanted;
	bool fts_usermerge_set; /* this run set the index's usermerge */
};

/* Completes an op a driver took (store_driver.take) once its transaction is settled: the commit
 * hook when it committed an event (op->err SOMA_OK and op->event_text), then its waiter or done()
 * (which owns op from then on: op must not be touched after). Any store thread. */
void store_op_complete(struct store *st, struct store_op *op);

/* Binds a borrowed string that outlives the statement's step (every caller's strings do). */
static inline void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* Opens a connection to path with WAL, synchronous=FULL, foreign keys, busy timeout. */
/* The VFS every connection opens with: the default one, writing each WAL commit with one
 * system call (wal_vfs.c). NULL (SQLite's default VFS) if it could not be registered. */
#define STORE_VFS_NAME "soma-wal"
const char *store_vfs(void);
/* The WAL at start (sqlite_wal_check.c). A crash leaves what was committed since the last
 * checkpoint in path-wal alone; SQLite takes a WAL whose header is damaged for an empty one, and
 * so started on an empty database. store_sqlite_wal_check refuses a non-empty WAL whose header is
 * not valid (SOMA_ERR_CONFIG, *why saying which files and what to do); store_sqlite_wal_refuse
 * writes that sentence for another reason; store_sqlite_wal_bytes is the WAL's size (0: none). */
enum soma_err store_sqlite_wal_check(const char *path, char *why, size_t why_cap);
void store_sqlite_wal_refuse(const char *path, const char *reason, char *why, size_t why_cap);
long long store_sqlite_wal_bytes(const char *path);
/* true when path's WAL holds at least one frame SQLite's recovery would read as a commit (valid
 * header, salts and checksum chain up to it, a nonzero commit size); false without one */
bool store_sqlite_wal_commits(const char *path);
/* SQLite's log (SQLITE_CONFIG_LOG): its notices (WAL frames recovered) and warnings go to ours. */
void store_sqlite_log(void *arg, int code, const char *msg);
/* Installs SQLite's allocator with per-thread caches (sqlite_mem.c); call before SQLite
 * initialises. Returns sqlite3_config's result: not SQLITE_OK when SQLite keeps its own. */
int store_sqlite_mem_install(void);
/* Tests: blocks the calling thread keeps in its lists; blocks exited threads gave back. */
uint64_t store_sqlite_mem_kept_here(void);
uint64_t store_sqlite_mem_returned(void);
/* How many times a WAL file was synced through that VFS since start (tests: which commits wait
 * for the disk). */
unsigned long store_vfs_wal_syncs(void);

enum soma_err dbconn_open(struct dbconn *c, const char *path, int flags) SOMA_MUST_CHECK;
void dbconn_close(struct dbconn *c);
/* The cached statement for sql (a string literal), reset and unbound; NULL on error. */
sqlite3_stmt *dbconn_stmt(struct dbconn *c, const char *sql);
/* Resets every cached statement. Must run after each op or batch: a statement left stepped
 * but not reset keeps a read transaction open, which pins an old WAL snapshot and stops
 * checkpoints (the WAL then grows without bound). */
void dbconn_release(struct dbconn *c);
/* Runs sql (no results) on the connection. */
/* Reads a newest-first page cursor "<ms>:<id>" (the last row served) into *ms and id; without a
 * cursor, a position after every row (INT64_MAX, "\x7f": ids are ASCII). False when malformed. */
bool store_page_cursor(const struct store_op *op, long long *ms, char id[STORE_TASK_ID_MAX + 1]);

enum soma_err dbconn_exec(struct dbconn *c, const char *sql);

/* The SQLite driver's synchronous functions (store.h's, on st->main), for its driver table. */
void sqlite_close(struct store *st);
enum soma_err sqlite_migrate(struct store *st, int *applied);
enum soma_err sqlite_schema_version(struct store *st, int *current, int *latest);
enum soma_err sqlite_ping(struct store *st);
enum soma_err sqlite_data_version(struct store *st, int64_t *version);
enum soma_err sqlite_key_insert(struct store *st, const struct store_key *key);
enum soma_err sqlite_key_list(struct store *st, struct store_key **keys, size_t *n);
enum soma_err sqlite_key_revoke(struct store *st, const char *id);
enum soma_err sqlite_audit_insert_now(struct store *st, json_t *row);
enum soma_err sqlite_tasks_recover(struct store *st, int *n);

/* Per-op SQL. Write ops run inside the writer's transaction and savepoint; *enqueued is set
 * when the op queued a task. */
enum soma_err store_sql_write(struct dbconn *c, struct store_op *op, bool *enqueued);
/* The SQLite driver's prepare (sqlite_chat.c): a new event's text but for its seq. */
void store_sql_prepare(struct store_op *op);
/* The SQLite driver's finish (sqlite_tasks.c): a reserved task's payload parsed from its text. */
void store_sql_finish(struct store_op *op);
enum soma_err store_sql_read(struct dbconn *c, struct store_op *op);
/* Task and attachment ops (sqlite_tasks.c), dispatched from the two above. */
enum soma_err store_sql_task_write(struct dbconn *c, struct store_op *op, bool *enqueued);
/* The task API's ops (sqlite_task_admin.c). */
enum soma_err store_sql_task_admin_read(struct dbconn *c, struct store_op *op);
enum soma_err store_sql_task_admin_write(struct dbconn *c, struct store_op *op, bool *enqueued);
/* The audit trail's ops (sqlite_audit.c). */
enum soma_err store_sql_audit_read(struct dbconn *c, struct store_op *op);
enum soma_err store_sql_audit_write(struct dbconn *c, struct store_op *op);
/* The identity ops (sqlite_identity.c): keys and tenants; other kinds go on to the audit's. */
enum soma_err store_sql_identity_read(struct dbconn *c, struct store_op *op);
enum soma_err store_sql_identity_write(struct dbconn *c, struct store_op *op);
/* Recall in the built-in memory (sqlite_memory_search.c): a MEMORY read op's search. */
enum soma_err store_sql_memory_search(struct dbconn *c, struct store_op *op);
/* Registers the recall's FTS5 rank function (soma_rank) on a connection; every connection. */
enum soma_err store_sql_memory_rank_register(sqlite3 *db);
/* The memory ops (sqlite_memory.c), at the end of the chain (after the audit's). */
enum soma_err store_sql_memory_read(struct dbconn *c, struct store_op *op);
enum soma_err store_sql_memory_write(struct dbconn *c, struct store_op *op);
/* The writer's batch and its memories rows (sqlite_memory.c): ops queue the rows, the writer
 * inserts them before COMMIT (flush, which empties the queue either way), and a rolled-back op
 * cuts the queue back to the mark taken before it ran. Writer thread only. */
size_t store_sql_memory_pending(void);
void store_sql_memory_pending_cut(size_t mark);
enum soma_err store_sql_memory_flush(struct dbconn *c);
/* True when memories rows were inserted (so FTS5 wrote a segment) since the last call. */
bool store_sql_memory_written(void);
/* The outbox row of a committed event when it is a memory (a user turn or a completed reply);
 * runs in the transaction that inserts the event. SOMA_OK without a row for other events. */
enum soma_err store_sql_memory_event(struct dbconn *c, const char *tenant, const char *session_id, json_t *event);
enum soma_err store_sql_attachment_get(struct dbconn *c, struct store_op *op);
/* MESSAGE (sqlite_chat.c): every id of op->attachments must be an attachment of op->tenant (else
 * SOMA_ERR_NOT_FOUND naming it in op->error_text); then, once the message is stored, those that
 * have no session yet are bound to op->session_id, and each is noted as named by it
 * (attachment_refs: deleting the session an attachment is bound to deletes it only when no other
 * session of the tenant names it). */
enum soma_err store_sql_attachments_owned(struct dbconn *c, struct store_op *op);
enum soma_err store_sql_attachments_bind(struct dbconn *c, struct store_op *op);
enum soma_err store_sql_blobs_unused(struct dbconn *c, struct store_op *op);
/* The sessions a reply is still to come for: those of a task row queued, reserved, or (on
 * queue.driver=redis) relaying in the outbox. RETENTION_SESSIONS never takes such a session; on
 * SQLite it reads them once per batch with this statement (the batch is one writer transaction
 * there: nothing changes during it), whose every arm is a scan of the state's own partial index
 * (tasks_ready, tasks_expiry, tasks_relaying), so it costs the busy tasks, never the dead letters
 * a tasks table keeps (state IN (...) would match none of them and scan the table). PostgreSQL
 * asks per tenant's statement instead (pg_retention.c: other nodes commit during a batch). */
#define RETENTION_BUSY_SESSIONS                                                                       \
	"SELECT session_id FROM tasks WHERE state = 'queued' AND session_id IS NOT NULL UNION ALL "   \
	"SELECT session_id FROM tasks WHERE state = 'reserved' AND session_id IS NOT NULL UNION ALL " \
	"SELECT session_id FROM tasks WHERE state = 'relaying' AND session_id IS NOT NULL"
/* SESSION_DELETE (reset false) or SESSION_RESET of op->tenant's op->session_id (sqlite_chat.c);
 * the retention sweep deletes with it too. */
enum soma_err store_sql_session_delete(struct dbconn *c, struct store_op *op, bool reset);
/* How a driver reads for store_retention_walk: the first tenant having sessions from after (at:
 * or at it) into next ("" when none is left), and up to limit idle sessions of tenant, oldest
 * first, appended to found as {tenant, session_id}, arg being the driver's own (what to leave). */
struct retention_walk {
	enum soma_err (*next_tenant)(void *conn, const char *after, bool at, char *next, size_t size);
	enum soma_err (*idle_of_tenant)(void *conn, const struct store_op *op, void *arg, const char *tenant,
					int64_t limit, json_t *found);
	void *arg;
};
/* The idle sessions one RETENTION_SESSIONS batch takes, into found (retention_walk.c). */
enum soma_err store_retention_walk(void *conn, const struct store_op *op, const struct retention_walk *walk,
				   json_t *found);
/* The retention ops (sqlite_retention.c), at the end of the write chain (after the memory's). */
enum soma_err store_sql_retention_write(struct dbconn *c, struct store_op *op);
/* The redis queue relay's ops (sqlite_task_relay.c): RELAY_CLAIM, RELAY_DONE, DEAD_ADD. */
enum soma_err store_sql_task_relay_write(struct dbconn *c, struct store_op *op);
/* A MESSAGE whose task was handed to a worker before the commit (op->worker set; queue/handoff.h):
 * marks op->task reserved by that worker until now + op->delay_ms, so both drivers insert it so.
 * Returns whether it was handed (then no worker needs waking for it). */
bool store_task_take_handoff(struct store_op *op, int64_t now);
/* Inserts the task described by op->task for op->tenant (used by MESSAGE). */
enum soma_err store_sql_task_insert(struct dbconn *c, const char *tenant, const char *session_id, json_t *task);

#endif
