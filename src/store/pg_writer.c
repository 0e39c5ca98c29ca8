/*
 * pg_writer.c - the exec side of the PostgreSQL driver (see pg.c, pg_int.h): the writer's, the
 * message lanes' and the readers' connections, and the batch transaction of exec.c's group-commit
 * writer.
 *
 * DESIGN: a MESSAGE that is one statement never reaches the writer: store_submit hands it to the
 * message lanes (pg_lanes.c), which commit it at once on their own connections. The writer's
 * connection runs every other write op (the relays', the workers' events and task outcomes, the
 * admin ops, a message with attachments), each in a SAVEPOINT of the batch's one transaction
 * (BEGIN goes out with the first SAVEPOINT, each RELEASE with the next one), then COMMIT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "store/pg_int.h"
#include "store/store_int.h"

enum soma_err pg_exec_open(struct store *st, int readers)
{
	struct pg_store *pg = st->pg;
	char why[512];
	if (pg_conn_open(&pg->writer, pg->url, "writer", why, sizeof(why)) != SOMA_OK) {
		log_error("store", "cannot connect the writer to PostgreSQL at %s (%s)", pg->where, why);
		return SOMA_ERR_UNAVAILABLE;
	}
	enum soma_err err = pg_lanes_start(st, (int)cfg_int(CFG_STORE_MESSAGE_CONNECTIONS), &pg->lanes);
	if (err != SOMA_OK) {
		pg_conn_close(&pg->writer);
		return err;
	}
	for (int i = 0; i < readers; i++) {
		if (pg_conn_open(&pg->readers[i], pg->url, "reader", why, sizeof(why)) != SOMA_OK) {
			log_error("store",
				  "cannot connect reader %d to PostgreSQL at %s (%s); lower store.pool_size "
				  "or raise the server's max_connections",
				  i + 1, pg->where, why);
			for (int j = 0; j < i; j++)
				pg_conn_close(&pg->readers[j]);
			pg_lanes_stop(pg->lanes);
			pg->lanes = NULL;
			pg_conn_close(&pg->writer);
			return SOMA_ERR_UNAVAILABLE;
		}
	}
	pg->upkeep = pg_upkeep_start(pg->url); /* (NULL: the inserts merge the memory index themselves) */
	return SOMA_OK;
}

void pg_exec_close(struct store *st)
{
	pg_lanes_stop(st->pg->lanes); /* their queued messages are committed first */
	st->pg->lanes = NULL;
	pg_upkeep_stop(st->pg->upkeep);
	st->pg->upkeep = NULL;
	pg_conn_close(&st->pg->writer);
	for (int i = 0; i < st->nreaders; i++)
		pg_conn_close(&st->pg->readers[i]);
}

/* A batch whose ops touch two sessions or more locks their rows first, in byte order of the id
 * (COLLATE "C"), the order a message lane takes them in (pg_fast_sort_by_session): otherwise the
 * writer (replies of X then Y) and a lane (messages of Y then X) could each hold one row and wait
 * for the other, until PostgreSQL's deadlock detector cancels one a second later. A batch of one
 * session cannot close such a cycle and sends nothing more. */
static enum soma_err lock_sessions(struct store *st)
{
	const char *first = NULL;
	bool several = false;
	for (struct store_op *op = st->batch; op && !several; op = op->next) {
		if (op->session_id[0] && !first)
			first = op->session_id;
		else if (op->session_id[0])
			several = strcmp(first, op->session_id) != 0;
	}
	if (!several)
		return SOMA_OK;
	json_t *ids = json_array();
	for (struct store_op *op = st->batch; ids && op; op = op->next) {
		if (op->session_id[0])
			json_array_append_new(ids, json_string(op->session_id));
	}
	char *list = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
	json_decref(ids);
	if (!list)
		return SOMA_ERR_NOMEM;
	struct pgconn *c = &st->pg->writer;
	enum soma_err err = pg_cmd(c, "BEGIN");
	if (err == SOMA_OK) {
		st->pg->txn_open = true;
		struct pg_params p = {0};
		pg_param_text(&p, list);
		PGresult *r =
			pg_exec(c,
				"SELECT 1 FROM sessions WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)) "
				"ORDER BY id COLLATE \"C\" FOR UPDATE",
				&p, &err);
		PQclear(r);
	}
	free(list);
	return err;
}

/* The batch's transaction costs one round trip per op beyond the op's own statements: BEGIN goes
 * out with the first op's SAVEPOINT, and each op's RELEASE with the next op's SAVEPOINT (COMMIT
 * releases the last). */
enum soma_err pg_begin(struct store *st)
{
	st->pg->txn_open = false; /* sent with the first SAVEPOINT */
	st->pg->release_pending = false;
	st->pg->durable = false;
	st->pg->plain_scans = false;
	st->pg->writer.retryable = false;
	pg_conn_check_idle(&st->pg->writer); /* a session the server ended meanwhile fails no op */
	return lock_sessions(st);
}

/* The redis queue relay's bookkeeping: a claim (queued -> relaying) and the delete of rows already
 * pushed to Redis. A batch of only these commits without waiting for its WAL flush
 * (synchronous_commit off for that transaction), which would otherwise be one more flush per
 * relay cycle, taken from the flushes the messages wait for (-c20 ingest: median ratio to pgbench
 * 0.47 durable, 0.84 without; docs/performance.md). Nothing acknowledged depends on them: WAL is
 * flushed in order, so any later durable commit carries them, and a crash of PostgreSQL loses at
 * most the last few hundred ms of them (wal_writer_delay). What that costs: a lost claim puts its
 * rows back to queued, a lost delete leaves them relaying until the lease (30 s) passes; either
 * way those tasks are published to Redis again - as a crash of this process between LPUSH and the
 * delete already does. A copy is harmless for each kind:
 *  - conversation.process: its reply is keyed on the task id in the store (events.outcome_of,
 *    src/tasks/conversation.c): a copy that finds the outcome stops before it publishes, asks the
 *    LLM or stores anything; a copy racing the first run has its commit refused.
 *  - tasks our workers run (soma.* and whatever POST /v1/tasks sends them): a copy is skipped
 *    while the first run's result meta or run-lock exists (redis_consume.c); the copy comes within
 *    the lease, long before the result expires. A requeued dead letter is the exception: its relay
 *    deletes the old result meta first, so its copy runs again (soma.* tasks are idempotent).
 *  - tasks Python Celery workers run: they do not look at our run-lock or results, so a copy runs
 *    again - Celery's own contract with acks_late (at-least-once; a task must be idempotent), the
 *    same as a redelivery after a visibility timeout.
 * (It was reverted once, in db041d8, when a crash made a conversation reply twice; the store-side
 * dedupe of the reply is what makes it safe: test_postgres_lanes.py crashes PostgreSQL right
 * behind the relay, test_task_once.py delivers a copy after the result meta is gone.) */
static bool replayable(enum store_op_kind kind)
{
	return kind == STORE_OP_TASK_RELAY_CLAIM || kind == STORE_OP_TASK_RELAY_DONE;
}

/* The relay's queries take their rows through the tasks table's partial indexes, in index order
 * (FOR UPDATE SKIP LOCKED ... LIMIT; the delete by primary key). Each task row is inserted,
 * updated and deleted, so between autovacuum runs these indexes fill with dead entries (~60,000
 * after 10 s at 3,000 messages/s). On the table's stale row counts the planner picks bitmap
 * scans, which visit every dead entry on every claim and never mark one dead: perf showed the
 * writer's backend taking as much CPU as the message lane's (heap_hot_search_buffer,
 * tbm_iterate), a claim took 72 ms. A plain index scan marks dead entries as it passes
 * (kill_prior_tuple), so the next claim skips them: 5.6 ms, then 67 buffers instead of 1,588.
 * So bitmap scans are off while the relay's ops run (SET LOCAL before their savepoint, so it
 * holds whatever the op's outcome; back to the default before the next op). */
static bool plain_scans(enum store_op_kind kind)
{
	return kind == STORE_OP_TASK_RELAY_CLAIM || kind == STORE_OP_TASK_RELAY_DONE;
}

/* Opens op's savepoint: BEGIN before the first, the previous op's RELEASE, the scan setting. */
static enum soma_err savepoint(struct pg_store *pg, enum store_op_kind kind)
{
	bool plain = plain_scans(kind);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "%s%s%sSAVEPOINT op", !pg->txn_open ? "BEGIN; " : "",
		 pg->release_pending ? "RELEASE SAVEPOINT op; " : "",
		 plain == pg->plain_scans ? ""
		 : plain		  ? "SET LOCAL enable_bitmapscan = off; "
					  : "SET LOCAL enable_bitmapscan TO DEFAULT; ");
	enum soma_err err = pg_cmd(&pg->writer, cmd);
	if (err == SOMA_OK) {
		pg->txn_open = true;
		pg->release_pending = false;
		pg->plain_scans = plain;
	}
	return err;
}

enum soma_err pg_write_op(struct store *st, struct store_op *op, bool *enqueued, bool *txn_lost)
{
	struct pg_store *pg = st->pg;
	struct pgconn *c = &pg->writer;
	enum soma_err err = savepoint(pg, op->kind);
	if (err != SOMA_OK) {
		*txn_lost = true;
		return err;
	}
	pg->durable |= !replayable(op->kind);
	err = pg_sql_write(c, op, enqueued);
	/* a deadlock or serialization failure: the ops before hold the locks the other transaction
	 * waits for, so the op alone would meet it again; the whole batch is rolled back and runs
	 * again (exec.c, pg_retry) */
	if (err != SOMA_OK && c->retryable) {
		*txn_lost = true;
		return SOMA_ERR_UNAVAILABLE;
	}
	if (err != SOMA_OK && (!pg_conn_up(c) || pg_cmd(c, "ROLLBACK TO SAVEPOINT op") != SOMA_OK)) {
		*txn_lost = true;
		return pg_conn_up(c) ? err : SOMA_ERR_UNAVAILABLE;
	}
	pg->release_pending = true;
	return err;
}

/* COMMIT that answers ROLLBACK (the transaction had failed) is SOMA_ERR_STORE (pg_cmd); exec.c
 * then fails every op of the batch and calls pg_rollback. */
enum soma_err pg_commit(struct store *st)
{
	struct pg_store *pg = st->pg;
	if (!pg->txn_open)
		return SOMA_OK; /* no op got as far as its SAVEPOINT */
	pg->txn_open = pg->release_pending = false;
	return pg_cmd(&pg->writer, pg->durable ? "COMMIT" : "SET LOCAL synchronous_commit TO off; COMMIT");
}

void pg_rollback(struct store *st, enum soma_err why)
{
	struct pgconn *c = &st->pg->writer;
	if (why != SOMA_ERR_UNAVAILABLE && why != SOMA_ERR_FULL) /* (pg_err_map logs a full disk) */
		log_error("store", "PostgreSQL commit failed (%s); the requests of this batch were not acknowledged",
			  soma_err_str(why));
	if (st->pg->txn_open && pg_conn_up(c))
		(void)pg_cmd(c, "ROLLBACK");
	st->pg->txn_open = st->pg->release_pending = false;
}

bool pg_retry(struct store *st)
{
	return st->pg->writer.retryable && pg_conn_up(&st->pg->writer);
}

enum soma_err pg_read_op(struct store *st, int reader, struct store_op *op)
{
	struct pgconn *c = &st->pg->readers[reader];
	pg_conn_check_idle(c); /* a read changes nothing: never fail one on a session already gone */
	return pg_sql_read(c, op);
}
