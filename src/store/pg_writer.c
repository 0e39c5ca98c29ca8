/*
 * pg_writer.c - the exec side of the PostgreSQL driver (see pg.c, pg_int.h): the writer's and
 * the readers' connections and the batch transaction of exec.c's group-commit writer.
 *
 * DESIGN: the writer's connection runs the batch's ops other than messages, each in a SAVEPOINT
 * of one transaction (BEGIN goes out with the first SAVEPOINT, each RELEASE with the next one);
 * the messages wait for the commit and go out as pipelines on their own connections (pg_batch.c).
 * At the commit the pipelines are sent first; the relays' ops of the batch (runs_later) then run
 * on the writer while the messages are executed; then the writer's COMMIT is sent, and only then
 * are the answers read (nothing the writer waits for can wait for the writer: no deadlock).
 */
#include <stdlib.h>

#include "core/log.h"
#include "store/pg_int.h"
#include "store/store_int.h"

#define PG_FAST_DEF 2 /* connections the writer pipelines messages on (4 measured no better on 2 cores) */

enum soma_err pg_exec_open(struct store *st, int readers)
{
	struct pg_store *pg = st->pg;
	char why[512];
	if (pg_conn_open(&pg->writer, pg->url, "writer", why, sizeof(why)) != SOMA_OK) {
		log_error("store", "cannot connect the writer to PostgreSQL at %s (%s)", pg->where, why);
		return SOMA_ERR_UNAVAILABLE;
	}
	pg->batch.nfast = PG_FAST_DEF;
	for (int i = 0; i < pg->batch.nfast; i++) {
		if (pg_conn_open(&pg->batch.fast[i], pg->url, "writer", why, sizeof(why)) != SOMA_OK) {
			log_error("store", "cannot connect the writer to PostgreSQL at %s (%s)", pg->where, why);
			for (int j = 0; j < i; j++)
				pg_conn_close(&pg->batch.fast[j]);
			pg_conn_close(&pg->writer);
			return SOMA_ERR_UNAVAILABLE;
		}
	}
	for (int i = 0; i < readers; i++) {
		if (pg_conn_open(&pg->readers[i], pg->url, "reader", why, sizeof(why)) != SOMA_OK) {
			log_error("store",
				  "cannot connect reader %d to PostgreSQL at %s (%s); lower store.pool_size "
				  "or raise the server's max_connections",
				  i + 1, pg->where, why);
			for (int j = 0; j < i; j++)
				pg_conn_close(&pg->readers[j]);
			for (int j = 0; j < pg->batch.nfast; j++)
				pg_conn_close(&pg->batch.fast[j]);
			pg_conn_close(&pg->writer);
			return SOMA_ERR_UNAVAILABLE;
		}
	}
	return SOMA_OK;
}

void pg_exec_close(struct store *st)
{
	pg_conn_close(&st->pg->writer);
	for (int i = 0; i < st->pg->batch.nfast; i++)
		pg_conn_close(&st->pg->batch.fast[i]);
	pg_batch_free(&st->pg->batch);
	for (int i = 0; i < st->nreaders; i++)
		pg_conn_close(&st->pg->readers[i]);
}

/* The transaction of the other ops costs one round trip per op beyond the op's own statements:
 * BEGIN goes out with the first op's SAVEPOINT, and each op's RELEASE with the next op's SAVEPOINT
 * (COMMIT releases the last). */
enum soma_err pg_begin(struct store *st)
{
	st->pg->txn_open = false; /* sent with the first SAVEPOINT */
	pg_batch_clear(&st->pg->batch);
	return SOMA_OK;
}

/* The relays' ops (task outbox -> Redis, memory outbox -> its sink) touch no session or event and
 * never wait for a row a message's pipeline holds (their claims skip locked rows; the rest take
 * rows they claimed): they run on the writer after the batch's pipelines are sent, so their
 * round trips overlap the messages' statements instead of delaying them. */
static bool runs_later(enum store_op_kind kind)
{
	return kind == STORE_OP_TASK_RELAY_CLAIM || kind == STORE_OP_TASK_RELAY_DONE || kind == STORE_OP_OUTBOX_CLAIM ||
	       kind == STORE_OP_OUTBOX_SETTLE || kind == STORE_OP_MEMORY_PUT;
}

/* Runs op on the writer in a savepoint of the batch's transaction (opened by the first). */
static enum soma_err writer_run(struct pg_store *pg, struct store_op *op, bool *enqueued, bool *txn_lost)
{
	struct pgconn *c = &pg->writer;
	enum soma_err err = pg_cmd(c, !pg->txn_open	    ? "BEGIN; SAVEPOINT op"
				      : pg->release_pending ? "RELEASE SAVEPOINT op; SAVEPOINT op"
							    : "SAVEPOINT op");
	if (err != SOMA_OK) {
		*txn_lost = true;
		return err;
	}
	pg->txn_open = true;
	pg->release_pending = false;
	err = pg_sql_write(c, op, enqueued);
	if (err != SOMA_OK && (!pg_conn_up(c) || pg_cmd(c, "ROLLBACK TO SAVEPOINT op") != SOMA_OK)) {
		*txn_lost = true;
		return pg_conn_up(c) ? err : SOMA_ERR_UNAVAILABLE;
	}
	pg->release_pending = true;
	return err;
}

enum soma_err pg_write_op(struct store *st, struct store_op *op, bool *enqueued, bool *txn_lost)
{
	struct pg_store *pg = st->pg;
	struct pg_fast *f = op->kind == STORE_OP_MESSAGE ? pg_fast_new(op) : NULL;
	if (f && pg_batch_add(&pg->batch, f)) {
		*enqueued = op->task != NULL; /* settled at the commit */
		return SOMA_OK;
	}
	pg_fast_free(f);
	if (!pg_batch_other(&pg->batch, op))
		return SOMA_ERR_NOMEM; /* not run: its outcome could not be settled at the commit */
	if (runs_later(op->kind)) {
		if (pg_batch_later(&pg->batch, op))
			return SOMA_OK; /* its outcome is set by pg_commit */
		pg->batch.nother--;	/* (it was the last one added) */
		return SOMA_ERR_NOMEM;
	}
	return writer_run(pg, op, enqueued, txn_lost);
}

/* The ops runs_later() kept: their outcomes into op->err. false when the writer's transaction
 * was lost under one of them (every other op of the batch then fails: their work is gone). */
static bool run_later(struct pg_store *pg)
{
	for (size_t i = 0; i < pg->batch.nlater; i++) {
		struct store_op *op = pg->batch.later[i];
		bool enqueued = false, lost = false;
		op->err = writer_run(pg, op, &enqueued, &lost);
		if (lost) {
			pg_batch_fail_others(&pg->batch, op->err == SOMA_ERR_UNAVAILABLE ? op->err : SOMA_ERR_STORE);
			return false;
		}
	}
	return true;
}

/* The other ops' COMMIT goes out first and is answered last: the messages' pipelines run while
 * it is flushed (nothing of theirs waits for the writer, which waits for nothing: no deadlock).
 * Each op's outcome is its own err: a failed COMMIT fails the other ops, not the messages, which
 * committed on their own connections. */
enum soma_err pg_commit(struct store *st)
{
	struct pg_store *pg = st->pg;
	struct pgconn *c = &pg->writer;
	enum soma_err err = SOMA_OK;
	bool sent = false;
	pg_batch_start(&pg->batch); /* the messages' pipelines are on their way */
	if (!run_later(pg)) {
		pg->txn_open = pg->release_pending = false;
		if (pg_conn_up(c))
			(void)pg_cmd(c, "ROLLBACK");
		pg_batch_run(&pg->batch);
		return SOMA_OK;
	}
	pg->release_pending = false;
	if (pg->txn_open) {
		pg->txn_open = false;
		sent = pg_conn_up(c) && PQsendQuery(c->conn, "COMMIT");
		if (!sent)
			err = pg_err_map(c, NULL);
	}
	pg_batch_run(&pg->batch);
	if (sent)
		err = pg_commit_result(c);
	if (err != SOMA_OK) {
		if (err != SOMA_ERR_UNAVAILABLE)
			log_error("store",
				  "PostgreSQL commit failed (%s); the requests of this batch other than its "
				  "messages were not acknowledged",
				  soma_err_str(err));
		pg_batch_fail_others(&pg->batch, err);
		if (!sent && pg_conn_up(c)) /* an answered COMMIT ended the transaction either way */
			(void)pg_cmd(c, "ROLLBACK");
	}
	return SOMA_OK;
}

void pg_rollback(struct store *st, enum soma_err why)
{
	struct pgconn *c = &st->pg->writer;
	if (why != SOMA_ERR_UNAVAILABLE)
		log_error("store", "PostgreSQL commit failed (%s); the requests of this batch were not acknowledged",
			  soma_err_str(why));
	if (st->pg->txn_open && pg_conn_up(c))
		(void)pg_cmd(c, "ROLLBACK");
	st->pg->txn_open = st->pg->release_pending = false;
	pg_batch_clear(&st->pg->batch);
}

enum soma_err pg_read_op(struct store *st, int reader, struct store_op *op)
{
	return pg_sql_read(&st->pg->readers[reader], op);
}
