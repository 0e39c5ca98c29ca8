/*
 * pg_int.h - internals shared by the PostgreSQL driver files of the store (see store.h): the
 * connection with its prepared-statement cache and reconnect state, text parameters, result
 * helpers, the error mapping, and the per-op SQL entry points chained like the SQLite ones.
 *
 * DESIGN: every store thread owns one struct pgconn (the writer, each reader; the main connection
 * of the CLI, migrations and health is shared behind a lock in pg.c). A statement is a string
 * literal with $1..$n placeholders; pg_exec() prepares it once per connection, keyed by the
 * literal's address (like dbconn_stmt), and runs it with text parameters. A connection that
 * breaks is closed and every op on it fails with SOMA_ERR_UNAVAILABLE (the caller answers 503:
 * nothing acknowledged, nothing lost) until pg_conn_ready() re-establishes it, no sooner than its
 * backoff allows (100 ms doubling to 5 s). Within the writer's transaction each op runs in a
 * SAVEPOINT (exec.c), so an op's SQL error rolls back only that op; the common MESSAGE is instead
 * one statement that never reaches the writer: it is committed on one of the message lanes
 * (pg_message.c, pg_lanes.c).
 *
 * The chain of per-op functions (each file handles its kinds and hands the rest on):
 *   writes: pg_sql_write (pg_chat.c) -> pg_sql_task_write (pg_tasks.c) -> pg_sql_task_admin_write
 *           (pg_task_admin.c) -> pg_sql_identity_write (pg_identity.c) -> pg_sql_audit_write
 *           (pg_audit.c) -> pg_sql_memory_write (pg_memory.c) -> pg_sql_retention_write
 *           (pg_retention.c) -> SOMA_ERR_INVALID
 *   reads:  pg_sql_read -> pg_sql_task_admin_read -> pg_sql_identity_read -> pg_sql_audit_read ->
 *           pg_sql_memory_read -> SOMA_ERR_INVALID
 * (attachment reads are answered by pg_sql_attachment_get in pg_tasks.c, called by pg_sql_read).
 */
#ifndef SOMA_STORE_PG_INT_H
#define SOMA_STORE_PG_INT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "store/store_int.h"

#define PG_STMT_CACHE 128 /* prepared statements per connection (above the driver's statement count) */
#define PG_PARAMS_MAX 24  /* parameters of one statement */
#define PG_STMT_NAME  16  /* a prepared statement's name ("s<i>") with its NUL */
#define PG_NUM_LEN    24  /* an int64 as text, with sign and NUL */

/* One PostgreSQL connection, used by one thread at a time. */
struct pgconn {
	PGconn *conn;	  /* NULL while down */
	const char *url;  /* the store's URL (borrowed from struct pg_store) */
	const char *role; /* "writer", "reader", "main": for log lines */
	struct {
		const char *sql;  /* key: the SQL literal's address */
	} cache[PG_STMT_CACHE];	  /* statement i is prepared as "s<i>" on this connection */
	int n;			  /* used cache entries */
	int64_t retry_ms;	  /* monotonic ms before which no reconnect is attempted */
	int64_t backoff_ms;	  /* next backoff: 100 ms doubling to 5 s, reset on success */
	bool down_logged;	  /* the outage was logged (log once per outage, and its end) */
	bool resends;		  /* a message lane's: what it held goes again on a new connection */
	unsigned seen_recoveries; /* pg_exec.c's recovery count when this connection went down */
	bool retryable;		  /* the last error pg_err_map mapped was a deadlock (40P01) or a serialization
				   * failure (40001): its transaction, rolled back whole, may run again */
};

/* Text parameters of one statement: values are borrowed (they must outlive pg_exec), numbers are
 * formatted into the struct's own buffers. Start with `struct pg_params p = {0};`. */
struct pg_params {
	int n;				     /* parameters added */
	const char *v[PG_PARAMS_MAX];	     /* value of $i+1, NULL = SQL NULL */
	char num[PG_PARAMS_MAX][PG_NUM_LEN]; /* storage of formatted numbers */
};

/* Appends $n+1: a borrowed string (NULL for SQL NULL), an integer, a boolean ("t"/"f"). Past
 * PG_PARAMS_MAX the parameter is dropped and pg_exec fails with SOMA_ERR_INTERNAL. */
void pg_param_text(struct pg_params *p, const char *v);
void pg_param_int(struct pg_params *p, int64_t v);
void pg_param_bool(struct pg_params *p, bool v);

/* Connects c to url (connect_timeout, keepalives, synchronous_commit=on, UTC). On failure *why
 * (may be NULL) receives libpq's message; the connection stays down and retries with backoff. */
enum soma_err pg_conn_open(struct pgconn *c, const char *url, const char *role, char *why, size_t why_cap);
void pg_conn_close(struct pgconn *c);
/* SOMA_OK when c is up, reconnecting first when it is down and its backoff has passed;
 * SOMA_ERR_UNAVAILABLE otherwise. pg_exec and pg_cmd call it themselves. */
enum soma_err pg_conn_ready(struct pgconn *c);
/* SOMA_OK when c is up; else drops what is left of it and connects again at once, not after the
 * backoff (a failure schedules the next attempt as pg_conn_ready does): for a caller that found its
 * session ended by the server while it held work nothing of which was applied. */
enum soma_err pg_conn_reconnect(struct pgconn *c);
/* Before a use after idle time: finds a session the server closed meanwhile (a restart, an idle
 * timeout) with one non-blocking read instead of failing the next statement on it; the connection
 * is then dropped and the next pg_conn_ready() connects again at once. No-op while it is down. */
void pg_conn_check_idle(struct pgconn *c);
/* Whether the connection is up (no I/O). */
bool pg_conn_up(const struct pgconn *c);

/* Runs sql (a string literal with $1..$n) as a prepared statement cached on c, with p (NULL: no
 * parameters). Returns the result (COMMAND_OK or TUPLES_OK; the caller PQclear()s it), or NULL
 * with *err set by pg_err_map. A lost connection is closed here (SOMA_ERR_UNAVAILABLE). */
PGresult *pg_exec(struct pgconn *c, const char *sql, const struct pg_params *p, enum soma_err *err);
/* The name sql is prepared as on c, preparing it first when it is new on this connection (not in
 * pipeline mode); name = "" when the cache is full (run it unprepared). False with *err set when
 * the connection is down or the statement does not prepare. */
bool pg_prepared(struct pgconn *c, const char *sql, char name[PG_STMT_NAME], enum soma_err *err);
/* pg_exec for statements whose rows are not wanted; *changed (may be NULL) = rows affected. */
enum soma_err pg_run(struct pgconn *c, const char *sql, const struct pg_params *p, int64_t *changed);
/* Runs a parameterless command unprepared (BEGIN, SAVEPOINT op, COMMIT, migrations: may hold
 * several statements). */
enum soma_err pg_cmd(struct pgconn *c, const char *sql);
/* The answer to a COMMIT sent with PQsendQuery: SOMA_OK when it committed, else as pg_err_map
 * (SOMA_ERR_STORE when the transaction had failed and the COMMIT answered ROLLBACK). */
enum soma_err pg_commit_result(struct pgconn *c);
/* Maps a failed result (NULL: no result at all) to the program's error: unique violation ->
 * SOMA_ERR_CONFLICT, other integrity violations -> SOMA_ERR_INVALID, lost connection, shutdown,
 * serialization failure or deadlock -> SOMA_ERR_UNAVAILABLE (retry later), else SOMA_ERR_STORE.
 * Logs the server's message. Closes c when the connection is gone. Sets c->retryable for a
 * deadlock or serialization failure (the writer and the lanes then run the whole transaction
 * again, pg_retry and pg_lane_txn.c), clears it for any other error. */
enum soma_err pg_err_map(struct pgconn *c, const PGresult *r);

/* Column values of row i: text (NULL when SQL NULL; valid until PQclear), int64 (0 when NULL),
 * boolean ("t"). */
const char *pg_text(const PGresult *r, int row, int col);
int64_t pg_int(const PGresult *r, int row, int col);
bool pg_bool(const PGresult *r, int row, int col);

/* Reads a newest-first page cursor "<ms>:<id>" (store_int.h; defined in sqlite.c, shared by both
 * drivers). */
bool store_page_cursor(const struct store_op *op, long long *ms, char id[STORE_TASK_ID_MAX + 1]);

/* Newest-first keyset pages ("<ms>:<id>" cursors): appends the page's parameters to p - the
 * cursor's ms and id (id goes into the caller's buffer, which must outlive the query), then
 * limit + 1 (one row more than a page, to know whether another follows). False when the cursor
 * is malformed. */
bool pg_page_params(const struct store_op *op, struct pg_params *p, char id[STORE_TASK_ID_MAX + 1]);
/* After such a query: op->next_cursor from the page's last row (its ms in column ms_col, id in
 * id_col) when the query found more rows than the page holds, else "". */
void pg_page_next(struct store_op *op, const PGresult *r, int ms_col, int id_col);

/* ---- per-op SQL (writes run inside the writer's transaction and the op's savepoint) ---- */
/* A session's updated_ms as an event appended at NOW_MS (SQL: a bigint parameter) leaves it: moved
 * to NOW_MS only when it is more than PG_TOUCH_MS older, never back. A session's updated_at is so
 * the time of its latest event to within PG_TOUCH_MS (GET /v1/sessions lists by it, newest first),
 * and a busy session's seq bumps leave every indexed column as it was: PostgreSQL updates the row
 * in place (HOT) instead of adding entries to its indexes (sessions_tenant_updated indexes
 * updated_ms). Same-run A/B (bench/ingest_pg.sh): the message statement ~10 % cheaper, WAL records
 * per message 16.0 -> 14.2, buffers 38.7 -> 33.8. */
#define PG_TOUCH_MS "1000"
#define PG_TOUCHED(COL, NOW_MS) \
	"CASE WHEN " COL " >= " NOW_MS "::bigint - " PG_TOUCH_MS " THEN " COL " ELSE " NOW_MS "::bigint END"
/* pg_chat.c */
enum soma_err pg_sql_write(struct pgconn *c, struct store_op *op, bool *enqueued);
enum soma_err pg_sql_read(struct pgconn *c, struct store_op *op);
/* 1 when the session exists for tenant, 0 when absent, -1 when it belongs to another tenant;
 * lock: its row stays locked until the transaction ends (FOR UPDATE). */
int pg_session_owner(struct pgconn *c, const char *id, const char *tenant, bool lock, enum soma_err *err);
/* pg_chat_files.c. SOMA_ERR_NOT_FOUND (op->error_text) unless every attachment op names is the
 * tenant's. */
enum soma_err pg_attachments_owned(struct pgconn *c, struct store_op *op);
/* Binds the message's attachments that have no session yet (uploaded without one, or before
 * their session existed) to its session, so deleting the session deletes them; one bound to
 * another session of the tenant stays that session's. And notes that the session names each
 * (attachment_refs), one round trip an attachment: deleting the session an attachment is bound
 * to keeps it while another session still names it (pg_session_delete). */
enum soma_err pg_attachments_bind(struct pgconn *c, struct store_op *op);
/* As sqlite_chat.c: a reset deletes the events and queued tasks, a delete also the attachments
 * no other session of the tenant names (those another one names are handed to it) and the
 * session; both drop the session's references.
 * A delete locks its session row, then its files (see pg_chat_files.c). */
enum soma_err pg_session_delete(struct pgconn *c, struct store_op *op, bool reset);
/* A MESSAGE as one statement (pg_message.c), for the message lanes (pg_lanes.c): the session
 * upserted (created, or its seq bumped when it is the tenant's), the event, its memory outbox row
 * and its task inserted, all using the seq the upsert returns. Nothing of op is changed until
 * pg_fast_apply: a transaction that failed is sent again as it was. */
struct pg_fast {
	struct store_op *op;	/* the MESSAGE (borrowed) */
	struct pg_params p;	/* pg_fast_sql's parameters; some point into this struct */
	char *head, *tail;	/* the event's JSON before and after its seq (owned) */
	const char *sql;	/* pg_fast_sql, or pg_fast_direct_sql (memory.driver=builtin) */
	char *memory, *payload; /* the memory outbox body (direct: the memory's value), the task payload
				   (owned, may be NULL) */
	char *content;		/* direct: the text the memory is found by (owned, may be NULL) */
	struct pg_fast *next;	/* a lane's queue (pg_lanes.c) */
	unsigned slot;		/* its session's entry in the lanes' session table (pg_lanes.c) */
	bool done;		/* settled: err (and on SOMA_OK the result below) is final */
	enum soma_err err;	/* the outcome */
	bool found, created;	/* the statement returned the session's row; it was new */
	int64_t seq;		/* the event's seq */
	bool relayed;		/* its task is stored claimed for the relay, handed to it after the COMMIT */
	int64_t available_ms;	/* its task's available_ms (its eta; now when it has none) */
};
extern const char *const pg_fast_sql, *const pg_fast_direct_sql;

/* A pg_fast for op (malloc'd; completes op->event with its session_id, created_at and a
 * placeholder seq; relay_lease_ms > 0: its task is stored claimed for the relay for that long,
 * store_set_task_relay), or NULL when op is not one (attachments, an event the statement cannot hold)
 * or on OOM: it then runs on the writer as pg_sql_write. */
struct pg_fast *pg_fast_new(struct store_op *op, int64_t relay_lease_ms);
/* The task row of a committed f whose task is relayed (f->relayed), as TASK_RELAY_CLAIM returns
 * one (a new object, the caller's; NULL on OOM). */
json_t *pg_fast_task_row(const struct pg_fast *f);
/* After its transaction committed (or failed: f->err): fills op (err; on success seq, event,
 * event_text, created) from f. */
void pg_fast_apply(struct pg_fast *f);
void pg_fast_free(struct pg_fast *f);
/* Orders a lane's group by session id (byte order), each session's messages kept in their order;
 * returns n. Every transaction that updates several sessions rows - a lane's group, the writer's
 * batch (pg_begin) - takes them in this order, so two of them never wait on each other in a
 * cycle (a lane holding Y waiting for X while the writer's reply of X waits for Y: PostgreSQL's
 * deadlock detector cancelled one after a second, a 503 or a reply rolled back). */
size_t pg_fast_sort_by_session(struct pg_fast **g, size_t n);
/* After a lane lost its connection with the COMMIT's answer unread (whether it committed is not
 * known), connects c again (waiting out its first backoff) and settles as committed, with their
 * seq, the messages of g whose event rows are there; the others stay unsettled. */
void pg_fast_find_committed(struct pgconn *c, struct pg_fast **g, size_t n);

/* pg_lane_txn.c: one transaction of a message lane on its connection c (the lane thread's).
 * pg_lane_send sends g's unsettled messages as one pipeline (g in session order); pg_lane_run then
 * settles every one of them (pg_fast.done, err): committed, failed alone, or 503 when the server
 * cannot be reached or whether they committed is unknown. A group lost before anything of it
 * was applied goes again on a new connection, connected at once. */
enum pg_sent {
	PG_SENT_NONE, /* nothing: there were none, or they are all settled (an error) */
	PG_SENT_OK,   /* sent as one pipeline: pg_lane_run reads it */
	PG_SENT_LOST  /* the connection was found lost before the COMMIT was sent: they wait for a new one */
};
enum pg_sent pg_lane_send(struct pgconn *c, struct pg_fast **g, size_t n);
void pg_lane_run(struct pgconn *c, struct pg_fast **g, size_t n, enum pg_sent s);

/* pg_lanes.c: the message lanes. Each lane is a connection and its thread; a message goes to
 * its session's lane while an earlier one of that session is queued or in flight there (so a
 * session's messages commit in order), else to the least busy lane. A lane sends what is queued
 * as one transaction (BEGIN, statements, COMMIT, Sync: one round trip) and completes the ops
 * when the COMMIT is answered. */
#define PG_LANES_MAX 64 /* at most this many lanes (store.pg_lanes) */
struct pg_lanes;
/* Opens n lanes' connections and starts their threads; *out is freed by pg_lanes_stop. */
enum soma_err pg_lanes_start(struct store *st, int n, struct pg_lanes **out);
/* Stops taking messages, lets every lane finish its queue, joins the threads, closes the
 * connections and frees lanes (NULL: nothing). */
void pg_lanes_stop(struct pg_lanes *lanes);
/* store_driver.take (store_int.h): takes a MESSAGE that can run as one statement into its lane
 * (true, *err = SOMA_OK: completed later on the lane's thread; or SOMA_ERR_UNAVAILABLE when
 * stopping or full, op untouched by the lanes and still the caller's); false when op is for the
 * writer. */
bool pg_lanes_take(struct store *st, struct store_op *op, enum soma_err *err);
/* pg_tasks.c: the local queue and attachment rows */
enum soma_err pg_sql_task_write(struct pgconn *c, struct store_op *op, bool *enqueued);
enum soma_err pg_sql_attachment_get(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_blobs_unused(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_task_insert(struct pgconn *c, const char *tenant, const char *session_id, json_t *task);
/* pg_task_relay.c: the redis queue's outbox (TASK_RELAY_CLAIM/DONE, TASK_DEAD_ADD) and TASK_REVOKE */
enum soma_err pg_sql_task_relay_write(struct pgconn *c, struct store_op *op);
/* pg_task_admin.c: the task API (TASK_GET, QUEUE_STATS, DEAD_*, TASK_PUBLISH) */
enum soma_err pg_sql_task_admin_read(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_task_admin_write(struct pgconn *c, struct store_op *op, bool *enqueued);
/* pg_identity.c: KEY_INSERT, KEY_REVOKE, KEYS_LIST, TENANT_CREATE, TENANTS_LIST */
enum soma_err pg_sql_identity_read(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_identity_write(struct pgconn *c, struct store_op *op);
/* pg_audit.c: AUDIT_APPEND, AUDIT_LIST; pg_audit_insert_now runs on the main connection */
enum soma_err pg_sql_audit_read(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_audit_write(struct pgconn *c, struct store_op *op);
enum soma_err pg_audit_insert_now(struct pgconn *c, json_t *row);
/* pg_memory.c: the memory outbox and built-in memory ops, and the outbox row of a committed
 * event (runs in the transaction that inserts the event; SOMA_OK without a row for others) */
enum soma_err pg_sql_memory_read(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_memory_write(struct pgconn *c, struct store_op *op);
enum soma_err pg_sql_memory_event(struct pgconn *c, const char *tenant, const char *session_id, json_t *event);
/* pg_retention.c: the RETENTION_* ops (end of the write chain) */
enum soma_err pg_sql_retention_write(struct pgconn *c, struct store_op *op);
/* memory.driver=builtin: memory writes go straight into `memories` in their event's transaction
 * (pg_memory.c), not through the outbox. */
bool pg_memory_direct(void);
/* ns, or memory.namespace when ns is NULL or "" (borrowed; valid while the config is). */
const char *pg_memory_ns(const char *ns);
/* The memories row of a memory's value: *payload the value as JSON and *content the text it is
 * found by, both malloc'ed (the caller frees); false (both NULL) when value is NULL, on OOM, or
 * for a string that is not UTF-8. */
bool pg_memory_value_row(const json_t *value, char **payload, char **content);
/* The same for an outbox body ({value, tags}) as text; false also for bad JSON. */
bool pg_memory_direct_row(const char *body, char **payload, char **content);
/* pg_memory_search.c: MEMORY_SEARCH (tsvector) */
enum soma_err pg_sql_memory_search(struct pgconn *c, struct store_op *op);

/* The driver's state (pg.c): one per store, freed by its close. */
struct pg_store {
	char url[2048];				  /* store.url (secret: never logged) */
	char where[512];			  /* user@host:port/db, for messages */
	pthread_mutex_t main_lock;		  /* guards main */
	struct pgconn main;			  /* CLI, migrations, keys, health */
	struct pgconn writer;			  /* the writer thread's */
	struct pgconn readers[STORE_MAX_READERS]; /* one per reader thread */
	bool txn_open;				  /* writer: the batch's BEGIN was sent */
	bool release_pending;			  /* writer: the last op's savepoint is still open */
	bool durable;				  /* writer: an op of the batch needs its commit flushed */
	bool plain_scans;			  /* writer: enable_bitmapscan is off in the transaction */
	struct pg_lanes *lanes;			  /* the messages' connections and threads (pg_lanes.c) */
	struct pg_upkeep *upkeep;		  /* the background upkeep (pg_upkeep.c), or NULL */
};

/* pg_upkeep.c: a thread with its own connection that merges the memory index's pending list in
 * the background, so that no message's insert has to. Started by pg_exec_open (NULL: not
 * started, out of memory or threads; the inserts then merge the list themselves), stopped by
 * pg_exec_close. pg_upkeep_rows_added (any thread, after the commit or the statement) counts memories
 * rows inserted, by the lanes and by the memory ops alike. */
struct pg_upkeep *pg_upkeep_start(const char *url);
void pg_upkeep_stop(struct pg_upkeep *u);
void pg_upkeep_rows_added(long n);

/* The exec side (pg_writer.c): the store_driver entries of the same names in store_int.h. */
enum soma_err pg_exec_open(struct store *st, int readers);
void pg_exec_close(struct store *st);
enum soma_err pg_begin(struct store *st);
enum soma_err pg_write_op(struct store *st, struct store_op *op, bool *enqueued, bool *txn_lost);
enum soma_err pg_commit(struct store *st);
void pg_rollback(struct store *st, enum soma_err why);
/* After pg_rollback: the batch failed for a deadlock or serialization failure (pg_err_map). */
bool pg_retry(struct store *st);
enum soma_err pg_read_op(struct store *st, int reader, struct store_op *op);

#endif
