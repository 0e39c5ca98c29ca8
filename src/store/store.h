/*
 * store.h - the durable store of somaagent: SQLite under data.dir (embedded, the default) or
 * PostgreSQL (store.url, shared by every node); the same ops and semantics on both.
 *
 * DESIGN: one database file, data.dir/somaagent.db, in WAL mode with synchronous=FULL so that
 * whatever a 2xx acknowledged survives a power cut. Schema changes are versioned migrations
 * compiled into the binary (src/store/migrations/NNNN_name.sql) and applied in order by
 * store_migrate(), each in its own transaction, recorded in schema_migrations.
 * A struct store is safe to use from several threads (SQLite serialized mode); callers on an
 * event loop must not use it (it does disk I/O) - they read caches filled by other threads.
 * Every row that belongs to a tenant is read and written with the tenant as an argument.
 */
#ifndef SOMA_STORE_STORE_H
#define SOMA_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/err.h"

struct store;

#define STORE_ID_MAX	  64
#define STORE_TASK_ID_MAX 1020 /* bytes of a task id: 255 characters of UTF-8, as queue/celery_wire.h CELERY_ID_MAX */
#define STORE_CURSOR_MAX  (21 + STORE_TASK_ID_MAX) /* a page cursor "<ms>:<id>": a task id fits (dead letters) */
#define STORE_SCOPES_MAX  128

struct store_key {
	char id[STORE_ID_MAX + 1];	   /* public key id */
	char tenant[STORE_ID_MAX + 1];	   /* owning tenant */
	char name[STORE_ID_MAX + 1];	   /* label given at creation */
	char scopes[STORE_SCOPES_MAX + 1]; /* space-separated scopes */
	unsigned char token_hash[32];	   /* SHA-256 of the token */
	int64_t created_ms;		   /* creation time, ms since epoch */
	int64_t revoked_ms;		   /* 0 while valid */
};

/* Opens the store store.url names: empty, the SQLite database data_dir/somaagent.db (created,
 * with data_dir, if needed); postgresql://..., that PostgreSQL database (unreachable at start is
 * a failure; later outages heal by themselves). On failure *why receives a sentence for the
 * operator. The caller owns *out and frees it with store_close(). */
enum soma_err store_open_url(const char *url, const char *data_dir, struct store **out, char *why,
			     size_t why_cap) SOMA_MUST_CHECK;
/* store_open_url("", data_dir, ...): the embedded SQLite database. */
enum soma_err store_open(const char *data_dir, struct store **out, char *why, size_t why_cap) SOMA_MUST_CHECK;
/* "sqlite" or "postgresql". Static storage. */
const char *store_driver_name(const struct store *st);
void store_close(struct store *st);
/* Applies pending migrations; *applied (may be NULL) receives how many ran. A database migrated
 * by a newer binary (a schema version above the highest compiled in) is refused with
 * SOMA_ERR_STORE and an error log line saying so (store_schema_newer). */
enum soma_err store_migrate(struct store *st, int *applied) SOMA_MUST_CHECK;
/* Highest applied migration version and the highest compiled in. */
enum soma_err store_schema_version(struct store *st, int *current, int *latest) SOMA_MUST_CHECK;
/* The highest SQLite migration compiled into this binary (what a restored database may have). */
int store_sqlite_schema_latest(void);
/* Whether a newer binary migrated this database; when so writes into why (a line naming the
 * versions and data.dir or the database) and returns true. False too when it cannot be read. */
bool store_schema_newer(struct store *st, char *why, size_t why_cap);
/* Cheap check that the database answers (for health); SQLite: SOMA_ERR_UNAVAILABLE (and
 * STORE_FAULT_GONE from then on) when the database file was removed or replaced under us. */
enum soma_err store_ping(struct store *st) SOMA_MUST_CHECK;
/* What keeps the store from taking writes now (health, and the answer a refused write gets):
 *   STORE_FAULT_FULL  a write batch failed because the disk is full (SOMA_ERR_FULL); until a
 *                     batch commits again, and STORE_FULL_HOLD_MS at least (writes are still tried)
 *   STORE_FAULT_GONE  SQLite: the database file under data.dir was removed or replaced while the
 *                     server ran (store_ping notices, or store_mark_gone); for good: every write is
 *                     refused with SOMA_ERR_GONE, since what it committed would be lost */
enum store_fault { STORE_FAULT_NONE, STORE_FAULT_FULL, STORE_FAULT_GONE };
#define STORE_FULL_HOLD_MS 10000 /* FULL lasts at least this long after the last such failure */
enum store_fault store_fault(struct store *st);
/* Sets STORE_FAULT_GONE (the caller found data.dir removed: its lock file went). Any thread. */
void store_mark_gone(struct store *st);
/* A number that changes whenever another connection commits (PRAGMA data_version). */
enum soma_err store_data_version(struct store *st, int64_t *version) SOMA_MUST_CHECK;

/* Keys. store_key_insert creates the tenant when it does not exist. */
enum soma_err store_key_insert(struct store *st, const struct store_key *key) SOMA_MUST_CHECK;
/* All keys, revoked ones included, oldest first. *keys is malloc'd; the caller frees it. */
enum soma_err store_key_list(struct store *st, struct store_key **keys, size_t *n) SOMA_MUST_CHECK;
/* Marks a key revoked; SOMA_ERR_NOT_FOUND when no valid key has this id. */
enum soma_err store_key_revoke(struct store *st, const char *id) SOMA_MUST_CHECK;

/* ---- asynchronous operations (chat, sessions, tasks) ---------------------------------------
 *
 * DESIGN: these run on the store's own threads, never on the caller's: writes on one writer
 * thread that groups the transactions of concurrent callers into one commit (one fsync for many
 * requests: durability without giving up throughput), each op in its own SAVEPOINT so one
 * failing op does not undo the others; reads on a small pool of reader connections (WAL lets
 * them run beside the writer). The caller fills a struct store_op, submits it, and its done()
 * runs on a store thread once the op's transaction is committed (or failed); done() owns the op
 * and frees it with store_op_free(). store_op_wait() is the synchronous form for worker threads.
 * Every op carries the tenant and only ever touches that tenant's rows.
 */

enum store_op_kind {
	STORE_OP_MESSAGE,	 /* w: create session if new, append event, enqueue task */
	STORE_OP_EVENT_APPEND,	 /* w: append event; with task_id, finish it in the same commit, and with queue
				  * and worker also reserve that worker's next task (into session) */
	STORE_OP_EVENTS_AFTER,	 /* r: events with seq > after_seq (< 0: the last `limit`), oldest first */
	STORE_OP_CONTEXT,	 /* r: the last `limit` turns (user, assistant.final) as rows */
	STORE_OP_SESSION_GET,	 /* r: one session */
	STORE_OP_SESSIONS_LIST,	 /* r: sessions newest first, cursor-paginated */
	STORE_OP_SESSION_DELETE, /* w: session, events, pending tasks, attachment rows no other session names */
	STORE_OP_SESSION_RESET,	 /* w: events and pending tasks; the session stays */
	STORE_OP_SESSION_PAUSE,	 /* w: paused = flag */
	STORE_OP_TASK_RESERVE,	 /* w: reserve the next ready task of queue (visibility timeout) into
				  * session; a task with no attempt left is dead-lettered instead
				  * (SOMA_OK with session NULL when that was all) */
	STORE_OP_TASK_RETRY,	 /* w: back to queued after delay_ms, or dead after max_retries */
	STORE_OP_TASK_FINISH,	 /* w: done (with result row) */
	STORE_OP_TASK_EXTEND,	 /* w: extend a reservation by delay_ms (held by worker) */
	STORE_OP_ATTACHMENT_PUT, /* w: attachment metadata rows (op->row is an array) */
	STORE_OP_ATTACHMENT_GET, /* r: attachment metadata row, id in op->task_id */
	STORE_OP_BLOBS_UNUSED,	 /* r: of the sha256 strings in op->rows, those no attachment row names (rows) */
	/* the task API (sqlite_task_admin.c); with `all_tenants` an operator's view of every tenant */
	STORE_OP_TASK_GET,     /* r: one task's state and outcome, id in task_id (into row) */
	STORE_OP_QUEUE_STATS,  /* r: per queue: queued, delayed, reserved, dead, oldest_ms (rows) */
	STORE_OP_DEAD_LIST,    /* r: dead letters, newest first, cursor-paginated (rows) */
	STORE_OP_DEAD_REQUEUE, /* w: a dead letter back to queued with fresh attempts */
	STORE_OP_DEAD_DELETE,  /* w: a dead letter dropped */
	STORE_OP_TASK_PUBLISH, /* w: enqueue op->task {id, queue, name, payload, max_retries, available_ms?} */
	STORE_OP_TASK_REVOKE,  /* w: a queued task task_id -> REVOKED (result row; it never runs); op->row
				* {task_id, status}: REVOKED, or the status it keeps when it already runs
				* (STARTED) or ended (SOMA_ERR_CONFLICT); SOMA_ERR_NOT_FOUND */
	/* the audit trail (sqlite_audit.c) */
	STORE_OP_AUDIT_APPEND, /* w: one row, op->row {tenant, subject, key_id?, action, resource?, decision, ...} */
	STORE_OP_AUDIT_LIST,   /* r: rows newest first (all tenants with all_tenants, else op->tenant's) */
	/* identity: API keys and tenants for the admin API (sqlite_identity.c); a key or tenant id in
	 * task_id. KEY_INSERT/KEY_REVOKE leave the key's row in op->row: {id, tenant, name, scopes,
	 * token_hash (hex), created_ms, revoked_ms} */
	STORE_OP_KEY_INSERT,	/* w: key op->row (as above); creates its tenant when new */
	STORE_OP_KEY_REVOKE,	/* w: revoke key task_id; SOMA_ERR_NOT_FOUND unless it is active */
	STORE_OP_KEYS_LIST,	/* r: keys newest first, cursor-paginated; all_tenants or op->tenant's (rows) */
	STORE_OP_TENANT_CREATE, /* w: tenant task_id named op->row {name}; SOMA_ERR_CONFLICT if it exists */
	STORE_OP_TENANTS_LIST,	/* r: tenants by id, cursor-paginated, with their active key counts (rows) */
	/* memory (sqlite_memory.c): the memory outbox and the built-in memory; an outbox row id in
	 * task_id; all_tenants for the relay and admins */
	STORE_OP_MEMORY_REMEMBER, /* w: an outbox row from op->row {key, namespace, session_id?, value, tags?} */
	STORE_OP_OUTBOX_CLAIM,	  /* w: up to `limit` ready rows -> sending, in order per session (rows);
				   * flag: first put every `sending` row back (rows of a dead process; how
				   * many in seq); limit 0: only that */
	STORE_OP_OUTBOX_SETTLE,	  /* w: op->row [{id, result: delivered|retry|failed|release, error?, delay_ms?}] */
	STORE_OP_OUTBOX_STATS,	  /* r: {pending, sending, failed, oldest_ms} (into session) */
	STORE_OP_OUTBOX_LIST,	  /* r: rows oldest first, cursor-paginated; queue = state filter or "" (rows),
				   * and their tenant's (or all tenants') counts as STATS does */
	STORE_OP_OUTBOX_RETRY,	  /* w: a failed row back to pending with fresh attempts; NOT_FOUND otherwise */
	STORE_OP_OUTBOX_DROP,	  /* w: a failed or pending row deleted; NOT_FOUND otherwise */
	STORE_OP_MEMORY_PUT,	  /* w: built-in memory: op->row [{key, tenant, namespace, session_id, content,
				   * payload}] stored once per (tenant, namespace, key) */
	STORE_OP_MEMORY_SEARCH,	  /* r: built-in recall: op->row {query, namespace, top_k}, op->tenant only;
				   * rows [{score, payload, source, key}] best first */
	/* redis queue relay (sqlite_task_relay.c): with queue.driver=redis the tasks table is the
	 * outbox of task messages; every tenant's rows (the relay is internal) */
	STORE_OP_TASK_RELAY_CLAIM, /* w: up to `limit` rows in state 'queued' (any queue, tenant, available_ms)
				    * or 'relaying' with reserved_until_ms <= now (a dead relay's claim), oldest
				    * created first -> state 'relaying', reserved_until_ms = now + delay_ms, nothing
				    * else changed; rows [{id, queue, name, tenant, session_id?, payload, attempts,
				    * max_retries, available_ms, requeued: updated_ms > created_ms}] */
	STORE_OP_TASK_RELAY_DONE,  /* w: op->row = [task id...]: those rows in state 'relaying' deleted */
	STORE_OP_TASK_DEAD_ADD,	   /* w: a dead letter of the redis driver for op->tenant: op->task {id, queue,
				    * name, session_id?, payload, max_retries, attempts, error}; inserted (or
				    * replacing the row of that id) in state 'dead', created_ms = updated_ms = now */
	/* retention (sqlite_retention.c, pg_retention.c; src/orchestrator/retention.c): every tenant's
	 * rows, at most `limit` per op (one transaction each: the writer is never held long) */
	STORE_OP_RETENTION_SESSIONS, /* w: sessions whose updated_ms (their last event) < before_ms,
				      * tenant by tenant in their order from op->tenant on ("": the first;
				      * the sweep passes the tenant of the last row of its batch before),
				      * each tenant's oldest first, each deleted as SESSION_DELETE deletes
				      * it; the age is checked in
				      * this transaction, so a session a message reached meanwhile stays, and
				      * one with a task queued, reserved or relaying (its reply still to
				      * come) is not taken, however old, nor one whose id is in row (a JSON
				      * array of session ids, may be NULL: replies running on this node); rows
				      * [{tenant, session_id}] of those deleted */
	STORE_OP_RETENTION_AUDIT,    /* w: audit rows with created_ms < before_ms deleted; seq = how many */
	STORE_OP_RETENTION_DEAD,     /* w: dead letters with updated_ms (when they died) < before_ms deleted;
				      * seq = how many */
};

struct store_op {
	enum store_op_kind kind;
	/* inputs */
	char tenant[STORE_ID_MAX + 1];	   /* every op: whose rows */
	char subject[STORE_ID_MAX + 1];	   /* MESSAGE: who created the session */
	char session_id[STORE_ID_MAX + 1]; /* session ops */
	char reply_to[STORE_ID_MAX + 1];   /* CONTEXT, EVENT_APPEND: event id of the user message the task
					    * answers, or "": when that event no longer exists in the
					    * session (a reset erased it) the op is SOMA_ERR_NOT_FOUND and
					    * nothing is stored */
	char queue[STORE_ID_MAX + 1];	   /* TASK_RESERVE */
	char worker[STORE_ID_MAX + 1];	   /* TASK_RESERVE: reserving worker */
	json_t *event;			   /* MESSAGE/EVENT_APPEND: owned; seq, created_at added */
	json_t *task;			   /* MESSAGE, TASK_PUBLISH: owned {id, queue, name, payload, max_retries} */
	json_t *attachments;		   /* MESSAGE: owned array of ids that must be the tenant's */
	json_t *row;			   /* ATTACHMENT_PUT input / *_GET output; owned */
	int64_t after_seq;		   /* EVENTS_AFTER */
	int64_t before_ms;		   /* RETENTION_*: rows older than this (ms since epoch) go */
	int64_t limit;			   /* EVENTS_AFTER, SESSIONS_LIST, DEAD_LIST, RETENTION_* */
	bool flag;			   /* SESSION_PAUSE: paused */
	int64_t delay_ms;		   /* TASK_RETRY: backoff; TASK_RESERVE: visibility timeout */
	bool failed;			   /* TASK_FINISH: FAILURE rather than SUCCESS (a dead letter) */
	bool rejected;	  /* TASK_FINISH with failed: a final FAILURE that is no dead letter (TASK_REJECT) */
	bool revoked;	  /* TASK_FINISH: REVOKED (revoked or expired before it ran; the
			   * reason in error_text): it leaves the queue, no dead letter */
	bool all_tenants; /* QUEUE_STATS, DEAD_*: every tenant's rows (admin callers only) */
	char row_tenant[STORE_ID_MAX + 1]; /* output of DEAD_REQUEUE/DEAD_DELETE, OUTBOX_RETRY/OUTBOX_DROP:
					    * the tenant of the row changed (with all_tenants, maybe not
					    * op->tenant) */
	/* outputs */
	enum soma_err err; /* SOMA_OK, SOMA_ERR_NOT_FOUND, ... */
	int64_t seq;	   /* appended event's seq; MESSAGE/EVENTS: session last_seq */
	char *event_text;  /* appended event as stored (JSON); owned */
	char *event_head;  /* SQLite: the event's text without its seq, made before the op is
			    * queued (store_sql_prepare); owned */
	json_t *rows;	   /* EVENTS_AFTER: [{seq, body: event JSON text}]; SESSIONS_LIST: [session];
			    * CONTEXT: [{role, content, id, attachments?: a user turn's
			    * attachment ids}] newest first, ending at reply_to; owned */
	json_t *session;   /* SESSION_GET: object; TASK_RESERVE: the task; owned */
	bool created;	   /* MESSAGE: the session was new */
	bool has_outcome;  /* CONTEXT: an event is the outcome of task outcome_of already */
	bool reply_probe;  /* CONTEXT: reply_to is only looked for (reply_seen), not required: an
			    * early start reads before its message commits */
	bool reply_absent; /* CONTEXT input: reply_to was not committed when the read was asked
			    * (an early start): a cached context without it is whole */
	bool reply_seen;   /* CONTEXT: the read saw the message reply_to */
	bool context_cut;  /* CONTEXT: turns committed after reply_to were left out (the rows
			    * end at the message the task answers) */
	bool dead;	   /* TASK_RETRY: moved to dead-letter */
	/* completion */
	void (*done)(struct store_op *op); /* runs on a store thread; owns op */
	/* optional: runs once on the store thread as the op's transaction settled, after the commit
	 * hook and before done (op->err says how), or from store_op_free when the op never ran (err
	 * set to SOMA_ERR_UNAVAILABLE); must neither free nor keep op */
	void (*settled)(struct store_op *op);
	void *settled_arg;     /* settled's context */
	void *arg;	       /* caller's context */
	struct store_op *next; /* queue link (store internal) */
	/* synchronous waiting (store_op_wait) */
	int waiting;  /* internal */
	void *waiter; /* internal: the waiting thread's wakeup (exec.c) */
	/* strings long enough that zeroing them costs: store_op_new zeroes the struct up to here and
	 * only the first byte of each of these (they are read as NUL-terminated text only) */
	char task_id[STORE_TASK_ID_MAX + 1];	/* task ops; EVENT_APPEND: task to finish, or "" */
	char outcome_of[STORE_TASK_ID_MAX + 1]; /* EVENT_APPEND: the task whose outcome the event is, or "":
						 * a second outcome of one task is SOMA_ERR_CONFLICT (nothing
						 * stored); CONTEXT: a task whose outcome is looked for (has_outcome) */
	char cursor[STORE_CURSOR_MAX + 1];	/* SESSIONS_LIST, DEAD_LIST: opaque cursor from the last page */
	char error_text[512];			/* TASK_RETRY / TASK_FINISH failure text */
	char next_cursor[STORE_CURSOR_MAX + 1]; /* SESSIONS_LIST, DEAD_LIST: cursor of the next page, "" at the end */
};

/* Appends an audit row (see src/audit/audit.h) on the main connection, at once: for the CLI,
 * whose store runs no threads. Main thread only. */
enum soma_err store_audit_insert_now(struct store *st, json_t *row) SOMA_MUST_CHECK;

/* A key as the admin API shows it: {id, tenant, name, scopes:[...], created_at, revoked_at, status};
 * never the token or its hash. Caller owns the result (NULL on OOM). */
json_t *store_key_row_json(const char *id, const char *tenant, const char *name, const char *scopes, int64_t created_ms,
			   int64_t revoked_ms);

/* Embedded store: puts tasks left reserved by a previous process back in the queue (one process
 * owns a data.dir, so they are orphans). *n receives how many. Main thread, at start. On
 * PostgreSQL other live nodes may hold reservations: nothing is requeued (*n = 0) and a dead
 * node's tasks come back when their visibility timeout passes. */
enum soma_err store_tasks_recover(struct store *st, int *n) SOMA_MUST_CHECK;

/* Allocates a zeroed op of the given kind for tenant. NULL on OOM. */
struct store_op *store_op_new(enum store_op_kind kind, const char *tenant);
/* Frees an op and everything it owns. Accepts NULL. */
void store_op_free(struct store_op *op);
/* Starts the store's writer and reader threads. */
enum soma_err store_exec_start(struct store *st, int readers) SOMA_MUST_CHECK;
/* Finishes queued ops, then stops the threads. */
void store_exec_stop(struct store *st);
/* Queues op; op->done runs later on a store thread. SOMA_ERR_UNAVAILABLE when the queue is
 * full or stopping (the op is not taken: the caller still owns it). A STORE_OP_CONTEXT that the
 * SQLite store's context cache answers completes (done runs) on the caller's thread before
 * store_submit returns. */
enum soma_err store_submit(struct store *st, struct store_op *op) SOMA_MUST_CHECK;
/* Runs op and waits for it (worker threads only; never on an io thread). Returns op->err. */
enum soma_err store_op_wait(struct store *st, struct store_op *op) SOMA_MUST_CHECK;
/* Runs a STORE_OP_MEMORY_SEARCH op (op stays the caller's) on the calling thread and returns its
 * error: SQLite on a read connection this thread keeps (opened on first use, closed when the
 * thread exits or by store_memory_search_here_close), sparing the two thread switches of a
 * reader; any other op or driver goes through store_op_wait. Blocks: worker and pool threads. */
enum soma_err store_memory_search_here(struct store *st, struct store_op *op) SOMA_MUST_CHECK;
/* Closes the calling thread's search connection, if any (threads that do not exit: tests). */
void store_memory_search_here_close(void);
/* Called after each committed batch that enqueued tasks (the local queue wakes workers). */
void store_set_task_hook(struct store *st, void (*hook)(void *arg), void *arg);
/* The redis queue's relay takes the tasks of MESSAGE ops that PostgreSQL's message lanes commit
 * without claiming them: with a hand function set, such a task is stored already claimed
 * ('relaying', its lease lease_ms from the statement) and, after its COMMIT, handed over on the
 * lane's thread: rows is a new JSON array of task rows as TASK_RELAY_CLAIM returns them, the
 * callee's (also when it returns false: it cannot take them, and they are published when their
 * lease passes, by any node's relay). Set once before requests arrive; NULL turns it off. */
void store_set_task_relay(struct store *st, bool (*hand)(json_t *rows, void *arg), void *arg, int64_t lease_ms);
/* Says no copy of a task can be delivered after its outcome committed (the local queue: a
 * finished task leaves the tasks table in its outcome's transaction). Only then may a context
 * kept in memory answer a CONTEXT op that asks for a task's outcome (outcome_of): the cache
 * does not know outcomes committed before it was filled. Off by default: such ops read the
 * database (with the redis queue, the relay can publish a task again after its reply). */
void store_set_no_late_copies(struct store *st, bool none);
/* Called on the writer thread, in commit order, for every op that appended an event, after the
 * commit and before the op completes: the one place committed events are published live. */
void store_set_commit_hook(struct store *st, void (*hook)(const struct store_op *op));

/* The file of an attachment's bytes: data.dir/blobs/<first 2 hex>/<sha256> (content-addressed;
 * written by the uploads, read by the attachment download and the conversation's context). Writes
 * at most cap bytes into out. */
void store_blob_path(char *out, size_t cap, const char *sha256);

#endif
