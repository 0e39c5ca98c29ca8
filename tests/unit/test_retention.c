/*
 * test_retention.c - the retention sweeper's pure parts (cutoff, summary) and its store ops on
 * SQLite (RETENTION_SESSIONS, RETENTION_AUDIT, RETENTION_DEAD): batches of at most `limit` rows,
 * oldest first, only rows older than the cutoff, and the audit trail still append-only otherwise.
 * A batch reads the tasks a session is busy with through their partial indexes, never the dead letters.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "orchestrator/retention.h"
#include "store/store.h"
#include "store/store_int.h"

static char dir[64];
static struct store *st;

static void setup(void)
{
	st = store_test_open(dir, sizeof(dir));
}

static void teardown(void)
{
	store_test_close(st, dir);
}

TestSuite(retention, .timeout = 60);

/* Runs sql on the database beside the store; returns SQLite's code (errors are the caller's to check). */
static int db_run(const char *sql)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* One retention op of kind; returns it (the caller frees it). */
static struct store_op *sweep(enum store_op_kind kind, int64_t before_ms, int64_t limit)
{
	struct store_op *op = store_op_new(kind, "");
	cr_assert_not_null(op);
	op->before_ms = before_ms;
	op->limit = limit;
	cr_assert_eq(store_op_wait(st, op), SOMA_OK, "%s", soma_err_str(op->err));
	return op;
}

Test(retention, the_cutoff_keeps_everything_at_0_and_never_goes_below_0)
{
	cr_assert_eq(retention_cutoff_ms(1700000000000, 0), 0);
	cr_assert_eq(retention_cutoff_ms(1700000000000, 60), 1700000000000 - 60000);
	cr_assert_eq(retention_cutoff_ms(1700000000000, 315360000), 1700000000000 - 315360000000LL);
	cr_assert_eq(retention_cutoff_ms(1000, 86400), 0);
	cr_assert_eq(retention_cutoff_ms(1700000000000, INT64_MAX), 0);
}

Test(retention, the_summary_names_every_kind)
{
	char out[128];
	const int64_t counts[RETENTION_KINDS] = {3, 0, 12};
	retention_summary(out, sizeof(out), counts);
	cr_assert_str_eq(out, "sessions=3 audit=0 dead_letters=12");
}

Test(retention, idle_sessions_go_oldest_first_in_batches_with_their_events, .init = setup, .fini = teardown)
{
	cr_assert_eq(db_run("INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES "
			    "('old1', 't1', 1, 100), ('old2', 't2', 1, 200), ('new', 't1', 1, 5000);"
			    "INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms) VALUES "
			    "('old1', 1, 'e1', 't1', 'user', '{}', 100), ('new', 1, 'e2', 't1', 'user', '{}', 5000);"),
		     SQLITE_OK);
	struct store_op *op = sweep(STORE_OP_RETENTION_SESSIONS, 1000, 1);
	cr_assert_eq(json_array_size(op->rows), 1);
	json_t *row = json_array_get(op->rows, 0);
	cr_assert_str_eq(json_string_value(json_object_get(row, "session_id")), "old1");
	cr_assert_str_eq(json_string_value(json_object_get(row, "tenant")), "t1");
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM events WHERE session_id = ?", "old1"), 0);
	op = sweep(STORE_OP_RETENTION_SESSIONS, 1000, 10);
	cr_assert_eq(json_array_size(op->rows), 1, "old2 only: new is younger than the cutoff");
	store_op_free(op);
	op = sweep(STORE_OP_RETENTION_SESSIONS, 1000, 10);
	cr_assert_eq(json_array_size(op->rows), 0);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sessions WHERE id <> ?", ""), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM events WHERE session_id = ?", "new"), 1);
}

Test(retention, old_audit_rows_go_and_the_trail_stays_append_only, .init = setup, .fini = teardown)
{
	cr_assert_eq(
		db_run("INSERT INTO audit(tenant, subject, action, decision, created_ms) VALUES "
		       "('t', 's', 'a1', 'done', 100), ('t', 's', 'a2', 'done', 200), ('t', 's', 'a3', 'done', 300), "
		       "('t', 's', 'new', 'done', 5000);"),
		SQLITE_OK);
	struct store_op *op = sweep(STORE_OP_RETENTION_AUDIT, 1000, 2);
	cr_assert_eq(op->seq, 2);
	store_op_free(op);
	op = sweep(STORE_OP_RETENTION_AUDIT, 1000, 2);
	cr_assert_eq(op->seq, 1);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM audit WHERE action <> ?", ""), 1);
	cr_assert_eq(db_query_int(dir, "SELECT before_ms FROM audit_retention WHERE id = 1 AND ? IS NOT NULL", ""), 0,
		     "the gate is closed again");
	cr_assert_neq(db_run("DELETE FROM audit"), SQLITE_OK, "a plain delete is still refused");
	cr_assert_neq(db_run("UPDATE audit SET action = 'x'"), SQLITE_OK);
}

Test(retention, only_old_dead_letters_go, .init = setup, .fini = teardown)
{
	cr_assert_eq(db_run("INSERT INTO tasks(id, queue, name, tenant, state, available_ms, created_ms, updated_ms) "
			    "VALUES ('dead-old', 'q', 'n', 't', 'dead', 1, 1, 100), "
			    "('dead-new', 'q', 'n', 't', 'dead', 1, 1, 5000), "
			    "('queued-old', 'q', 'n', 't', 'queued', 1, 1, 100);"),
		     SQLITE_OK);
	struct store_op *op = sweep(STORE_OP_RETENTION_DEAD, 1000, 500);
	cr_assert_eq(op->seq, 1);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id = ?", "dead-old"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id = ?", "dead-new"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id = ?", "queued-old"), 1);
}

Test(retention, the_sessions_have_no_index_of_their_own_for_the_sweep, .init = setup, .fini = teardown)
{
	/* the sweep walks sessions_tenant_updated (tenant, updated_ms, id); an index on updated_ms alone
	 * (migration 0014, dropped by 0015) cost every session update one more index write */
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?",
				  "sessions_updated"),
		     0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?",
				  "sessions_tenant_updated"),
		     1);
}

/* Sweeps as the sweeper does (retention.c): batches of limit, each resuming at the tenant of the last
 * row of the batch before, until one comes back short; returns the sessions deleted. */
static int64_t sweep_all(int64_t before_ms, int64_t limit, int *batches)
{
	int64_t total = 0;
	char resume[STORE_ID_MAX + 1] = "";
	for (*batches = 1;; ++*batches) {
		struct store_op *op = store_op_new(STORE_OP_RETENTION_SESSIONS, resume);
		cr_assert_not_null(op);
		op->before_ms = before_ms;
		op->limit = limit;
		cr_assert_eq(store_op_wait(st, op), SOMA_OK, "%s", soma_err_str(op->err));
		int64_t n = (int64_t)json_array_size(op->rows);
		if (n)
			snprintf(resume, sizeof(resume), "%s",
				 json_string_value(json_object_get(json_array_get(op->rows, n - 1), "tenant")));
		store_op_free(op);
		total += n;
		if (n < limit)
			return total;
	}
}

Test(retention, idle_sessions_of_every_tenant_go, .init = setup, .fini = teardown)
{
	cr_assert_eq(
		db_run("INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES "
		       "('a1', 'ta', 1, 300), ('a2', 'ta', 1, 100), ('a3', 'ta', 1, 200), ('b-new', 'tb', 1, 5000), "
		       "('c1', 'tc', 1, 50), ('c2', 'tc', 1, 60), ('d-new', 'td', 1, 5000), ('e1', 'te', 1, 1);"),
		SQLITE_OK);
	/* one batch takes the idle sessions of several tenants (each tenant's oldest first) */
	struct store_op *op = sweep(STORE_OP_RETENTION_SESSIONS, 1000, 5);
	cr_assert_eq(json_array_size(op->rows), 5);
	const char *want[] = {"a2", "a3", "a1", "c1", "c2"};
	for (size_t i = 0; i < 5; i++)
		cr_assert_str_eq(json_string_value(json_object_get(json_array_get(op->rows, i), "session_id")),
				 want[i]);
	store_op_free(op);
	/* and the batches of a sweep resume where the last one stopped until one comes back short */
	cr_assert_eq(db_run("INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES "
			    "('a4', 'ta', 1, 10), ('a5', 'ta', 1, 20), ('a6', 'ta', 1, 30), ('c3', 'tc', 1, 10);"),
		     SQLITE_OK);
	int batches;
	cr_assert_eq(sweep_all(1000, 2, &batches), 5, "a4 a5 a6 c3 e1");
	cr_assert_eq(batches, 3);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sessions WHERE id <> ?", ""), 2, "b-new and d-new stay");
}

/* Full-scan steps (SQLITE_STMTSTATUS_FULLSCAN_STEP) the writer's statements took since the last
 * call, reset. Read between ops: the writer is idle (a test store has no upkeep to run). */
static int64_t writer_fullscan_steps(void)
{
	int64_t n = 0;
	for (int i = 0; i < st->writer.n; i++)
		n += sqlite3_stmt_status(st->writer.cache[i].stmt, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1);
	return n;
}

Test(retention, a_batch_reads_the_busy_tasks_not_the_dead_letters, .init = setup, .fini = teardown)
{
	/* the reviewer's shape: many tenants of idle sessions, 100,000 dead letters (kept forever by
	 * default), and a few sessions a task still works for: queued, reserved, relaying (redis) */
	cr_assert_eq(
		db_run("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199) "
		       "INSERT INTO sessions(id, tenant, created_ms, updated_ms) "
		       "SELECT printf('s%03d-%s', i, k), printf('t%03d', i), 1, CASE k WHEN 'a' THEN 100 ELSE 200 END "
		       "FROM n, (SELECT 'a' AS k UNION ALL SELECT 'b');"
		       "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999) "
		       "INSERT INTO tasks(id, queue, name, tenant, session_id, state, available_ms, created_ms, "
		       "updated_ms) SELECT printf('dead%06d', i), 'q', 'n', printf('t%03d', i % 200), "
		       "printf('s%03d-b', i % 200), 'dead', 1, 1, 900 FROM n;"
		       "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 39) "
		       "INSERT INTO tasks(id, queue, name, tenant, session_id, state, available_ms, "
		       "reserved_until_ms, created_ms, updated_ms) SELECT printf('busy%02d', i), 'q', 'n', "
		       "printf('t%03d', i * 5), printf('s%03d-a', i * 5), CASE WHEN i < 20 THEN 'queued' "
		       "WHEN i < 30 THEN 'reserved' ELSE 'relaying' END, 1, 9000000000000, 1, 1 FROM n;"),
		SQLITE_OK);
	writer_fullscan_steps();
	struct store_op *op = sweep(STORE_OP_RETENTION_SESSIONS, 1000, 50);
	cr_assert_eq(json_array_size(op->rows), 50);
	store_op_free(op);
	int64_t steps = writer_fullscan_steps();
	cr_assert_lt(steps, 100000, "a batch of 50 took %lld full-scan steps: the dead letters were read",
		     (long long)steps);
	/* and the sweep still leaves every session a task works for */
	int batches;
	cr_assert_eq(sweep_all(1000, 50, &batches), 400 - 40 - 50);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sessions WHERE id <> ?", ""), 40);
	cr_assert_eq(db_query_int(dir,
				  "SELECT count(*) FROM sessions WHERE id IN (SELECT session_id FROM tasks WHERE "
				  "state <> ?)",
				  "dead"),
		     40);
}

/* DEAD_REQUEUE of tenant t1's dead letter task_id: the op's error. */
static enum soma_err requeue(const char *task_id)
{
	struct store_op *op = store_op_new(STORE_OP_DEAD_REQUEUE, "t1");
	cr_assert_not_null(op);
	snprintf(op->task_id, sizeof(op->task_id), "%s", task_id);
	enum soma_err err = store_op_wait(st, op);
	if (err == SOMA_ERR_NOT_FOUND && strcmp(task_id, "dl-gone") == 0)
		cr_assert_str_eq(op->error_text, "the session of this dead letter was deleted");
	store_op_free(op);
	return err;
}

Test(retention, a_dead_letter_of_a_deleted_session_is_not_requeued, .init = setup, .fini = teardown)
{
	/* a sweep (or DELETE) took the session: its reply's task would run for no session */
	cr_assert_eq(db_run("INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES ('kept', 't1', 1, 1);"
			    "INSERT INTO tasks(id, queue, name, tenant, session_id, state, available_ms, created_ms, "
			    "updated_ms) VALUES ('dl-gone', 'q', 'n', 't1', 'gone', 'dead', 1, 1, 1), "
			    "('dl-kept', 'q', 'n', 't1', 'kept', 'dead', 1, 1, 1), "
			    "('dl-none', 'q', 'n', 't1', NULL, 'dead', 1, 1, 1);"),
		     SQLITE_OK);
	cr_assert_eq(requeue("dl-gone"), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id = ? AND state = 'dead'", "dl-gone"), 1,
		     "the dead letter stays as it was");
	cr_assert_eq(requeue("dl-kept"), SOMA_OK);
	cr_assert_eq(requeue("dl-none"), SOMA_OK, "a task without a session (published, Celery) is requeued");
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE state = ?", "queued"), 2);
}
