/*
 * pg_lane_txn.c - one transaction of a message lane (pg_lanes.c): a group of MESSAGE statements
 * (pg_message.c) sent as one pipeline - BEGIN, the statements, COMMIT, Sync - on the lane's
 * connection, its results read, and the group sent again until every message is settled.
 *
 * DESIGN: nothing of an op is changed until pg_fast_apply, so a group whose transaction did not
 * commit is sent again as it was: without a message whose statement failed (it alone gets its
 * error, and its session's seqs keep no gap), and on a new connection, connected at once
 * (pg_conn_reconnect), when the old one was lost with the transaction known not applied: its send
 * never reached the COMMIT, or the server failed an item of it (the 57P01 of pg_terminate_backend,
 * a restart's; an ERROR aborts a transaction, so its COMMIT cannot commit). A message that meets a
 * session the server just ended - before the lane's idle read saw it - is then committed on the
 * next one instead of answered 503. Up to RESEND_MAX times a group; a server that cannot be
 * reached at once gets 503 for the rest. With the COMMIT sent and its answer lost, or its send
 * failed once the COMMIT was queued, whether it committed is unknown: each message is found by its
 * event row on a new connection or is a 503
 * (pg_fast_find_committed; a client's retry of a committed one would store it twice).
 * A message that fails for a deadlock or a serialization failure (40P01, 40001: it crossed another
 * transaction, not a fault of its own) does not get its error: the transaction is rolled back and
 * the whole group goes again, up to CROSSED_MAX times a group, as PostgreSQL advises.
 * A lane's connection is its thread's alone; nothing here takes a lock.
 */
#include <string.h>

#include "store/pg_int.h"

#define RESEND_MAX  3 /* times a group goes again after its connection was lost unapplied */
#define CROSSED_MAX 3 /* times a group goes again after a deadlock or serialization failure */

/* Settles every unsettled message of g with err. */
static void settle_all(struct pg_fast **g, size_t n, enum soma_err err)
{
	for (size_t i = 0; i < n; i++) {
		if (!g[i]->done) {
			g[i]->done = true;
			g[i]->err = err;
		}
	}
}

/* Sends g's unsettled messages as one pipeline. */
enum pg_sent pg_lane_send(struct pgconn *c, struct pg_fast **g, size_t n)
{
	size_t left = 0;
	const char *sql = NULL; /* prepared: the first message's (all have the same but in a test) */
	for (size_t i = 0; i < n; i++) {
		if (!g[i]->done && !left++)
			sql = g[i]->sql;
	}
	if (!left)
		return PG_SENT_NONE;
	enum soma_err err;
	char name[PG_STMT_NAME];
	bool was_up = pg_conn_up(c);
	if (!pg_prepared(c, sql, name, &err)) {
		if (was_up && !pg_conn_up(c)) /* (the server ended the session: its 57P01 was unread) */
			return PG_SENT_LOST;
		settle_all(g, n, err);
		return PG_SENT_NONE;
	}
	bool ok = PQenterPipelineMode(c->conn) && PQsendQueryParams(c->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
	for (size_t i = 0; ok && i < n; i++) {
		struct pg_fast *f = g[i];
		if (f->done)
			continue;
		ok = name[0] && f->sql == sql ? PQsendQueryPrepared(c->conn, name, f->p.n, f->p.v, NULL, NULL, 0)
					      : PQsendQueryParams(c->conn, f->sql, f->p.n, NULL, f->p.v, NULL, NULL, 0);
	}
	bool committing = ok; /* from here the COMMIT may reach the server: a loss leaves it unknown */
	ok = ok && PQsendQueryParams(c->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(c->conn);
	if (!ok) {
		err = pg_err_map(c, NULL);
		if (!committing && !pg_conn_up(c))
			return PG_SENT_LOST; /* no COMMIT: the server cannot have applied any of it */
		if (pg_conn_up(c))	     /* not lost (out of memory?): start again from a clean session */
			pg_conn_close(c);
		/* the COMMIT's bytes may have gone out before the send failed (libpq flushes a pipeline's
		 * buffer as it grows, and the Sync's flush may fail part way) and a COMMIT runs without its
		 * Sync: unknown, as a lost COMMIT answer (group_read): each is found by its row or is a 503 */
		if (committing)
			pg_fast_find_committed(c, g, n);
		settle_all(g, n, committing ? SOMA_ERR_UNAVAILABLE : err);
		return PG_SENT_NONE;
	}
	return PG_SENT_OK;
}

/* r is an error the server sent (not one of libpq's for a lost connection): the transaction it
 * answers an item of cannot commit. */
static bool server_failed(const PGresult *r)
{
	return r && PQresultStatus(r) == PGRES_FATAL_ERROR && PQresultErrorField(r, PG_DIAG_SQLSTATE);
}

/* One result of the pipeline (then the NULL that ends it); NULL when the connection failed. */
static PGresult *pipe_result(struct pgconn *c)
{
	PGresult *r = PQgetResult(c->conn);
	if (!r)
		return NULL;
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_PIPELINE_SYNC && PQgetResult(c->conn) != NULL) { /* never more than one result */
		PQclear(r);
		return NULL;
	}
	return r;
}

/* The statements' results of pg_lane_send: each message's row, or the first that failed (into
 * *failed, *failed_err); *aborted set when the server failed one. False when the connection was
 * lost. */
static bool read_statements(struct pgconn *c, struct pg_fast **g, size_t n, struct pg_fast **failed,
			    enum soma_err *failed_err, bool *aborted)
{
	for (size_t i = 0; i < n; i++) {
		struct pg_fast *f = g[i];
		if (f->done)
			continue;
		PGresult *r = pipe_result(c);
		ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
		if (st == PGRES_TUPLES_OK) {
			f->found = PQntuples(r) == 1;
			f->seq = f->found ? pg_int(r, 0, 0) : 0;
			f->created = f->found && pg_bool(r, 0, 1);
		} else if (st != PGRES_PIPELINE_ABORTED) {
			*aborted |= server_failed(r);
			enum soma_err e = pg_err_map(c, r);
			if (!r || !pg_conn_up(c)) {
				PQclear(r);
				return false;
			}
			if (!*failed) {
				*failed = f;
				*failed_err = e;
			}
		}
		PQclear(r);
	}
	return true;
}

/* Reads the results of pg_lane_send: settles every message when the transaction committed, or only
 * the one that failed (the others are sent again). True when the connection was lost with the
 * transaction known not committed (the server failed an item of it, or the ROLLBACK after a
 * failed message): the messages not settled go again on a new connection. */
static bool group_read(struct pgconn *c, struct pg_fast **g, size_t n, int *crossed)
{
	struct pg_fast *failed = NULL;
	enum soma_err failed_err = SOMA_OK, commit_err = SOMA_ERR_STORE;
	PGresult *r = pipe_result(c);	    /* BEGIN */
	bool lost = false, aborted = false; /* aborted: the server failed an item: it cannot commit */
	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
		aborted = server_failed(r);
		failed_err = pg_err_map(c, r);
		lost = !r || !pg_conn_up(c);
	}
	PQclear(r);
	lost = lost || !read_statements(c, g, n, &failed, &failed_err, &aborted);
	bool again = !lost && failed && c->retryable && (*crossed)++ < CROSSED_MAX; /* (pg_err_map's) */
	if (!lost) {
		r = pipe_result(c); /* COMMIT */
		if (r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0)
			commit_err = SOMA_OK;
		else if (r && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
			aborted |= server_failed(r);
			commit_err = pg_err_map(c, r);
		}
		lost = !r || !pg_conn_up(c);
		PQclear(r);
	}
	if (!lost) {
		r = PQgetResult(c->conn); /* the Sync */
		lost = !r || PQresultStatus(r) != PGRES_PIPELINE_SYNC || !PQexitPipelineMode(c->conn);
		PQclear(r);
	}
	/* after a confirmed COMMIT all are in; not committed: all go again but one that failed for
	 * itself; unknown: each is found by its row or is a 503 */
	if (lost) {
		if (pg_conn_up(c))
			pg_conn_close(c);
		if (commit_err != SOMA_OK && aborted) {
			if (failed) {
				failed->done = true;
				failed->err = failed_err;
			}
			return true;
		}
		if (commit_err != SOMA_OK)
			pg_fast_find_committed(c, g, n);
		settle_all(g, n, commit_err == SOMA_OK ? SOMA_OK : SOMA_ERR_UNAVAILABLE);
		return false;
	}
	if (commit_err == SOMA_OK) {
		settle_all(g, n, SOMA_OK);
		return false;
	}
	if (!failed) { /* BEGIN or COMMIT failed: every message shares it */
		settle_all(g, n, failed_err != SOMA_OK ? failed_err : commit_err);
		(void)pg_cmd(c, "ROLLBACK");
		return false;
	}
	if (!again) { /* else it goes out again with the others */
		failed->done = true;
		failed->err = failed_err;
	}
	if (pg_cmd(c, "ROLLBACK") == SOMA_OK) /* the others go out again */
		return false;
	if (!pg_conn_up(c)) /* on a new connection: the failed transaction died with the old one */
		return true;
	settle_all(g, n, SOMA_ERR_UNAVAILABLE);
	return false;
}

/* Settles every message of g (new: none settled) once pg_lane_send sent it (s: what it returned):
 * one transaction, sent again without any message that failed, and again on a new connection
 * (connected at once) when the old one was lost before anything of it was applied, up to
 * RESEND_MAX times; then, or when the server cannot be reached, the rest get 503. */
void pg_lane_run(struct pgconn *c, struct pg_fast **g, size_t n, enum pg_sent s)
{
	int resent = 0, crossed = 0;
	while (s != PG_SENT_NONE) {
		if (s == PG_SENT_OK) {
			s = group_read(c, g, n, &crossed) ? PG_SENT_LOST : pg_lane_send(c, g, n);
		} else if (resent++ == RESEND_MAX || pg_conn_reconnect(c) != SOMA_OK) {
			settle_all(g, n, SOMA_ERR_UNAVAILABLE);
			return;
		} else {
			s = pg_lane_send(c, g, n);
		}
	}
}
