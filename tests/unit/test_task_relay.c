/*
 * test_task_relay.c - the store ops of the redis queue's outbox (src/store/sqlite_task_relay.c):
 * RELAY_CLAIM, RELAY_DONE and DEAD_ADD, with the dead-letter ops they share with the local queue
 * (DEAD_LIST, DEAD_REQUEUE), on a real store in a temporary directory. The semantics written in
 * store.h are what a PostgreSQL driver must do too; these tests state them as behaviour.
 * A claim reads the queued and relaying rows through their partial indexes, never the dead letters.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
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

TestSuite(task_relay, .init = setup, .fini = teardown, .timeout = 60);

static void publish(const char *tenant, const char *id, int64_t available_ms)
{
	struct store_op *op = store_op_new(STORE_OP_TASK_PUBLISH, tenant);
	op->task = json_pack("{s:s, s:s, s:s, s:{s:[i], s:{}}, s:i, s:I}", "id", id, "queue", "celery", "name",
			     "soma.echo", "payload", "args", 1, "kwargs", "max_retries", 2, "available_ms",
			     (json_int_t)available_ms);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
}

/* Claims up to limit rows with a lease of lease_ms; returns the rows (caller decrefs). */
static json_t *claim(int limit, int64_t lease_ms)
{
	struct store_op *op = store_op_new(STORE_OP_TASK_RELAY_CLAIM, "");
	op->limit = limit;
	op->delay_ms = lease_ms;
	op->all_tenants = true;
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	json_t *rows = json_incref(op->rows);
	store_op_free(op);
	return rows;
}

static void done(json_t *ids)
{
	struct store_op *op = store_op_new(STORE_OP_TASK_RELAY_DONE, "");
	op->row = ids;
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
}

Test(task_relay, claim_takes_queued_rows_once_until_the_lease_passes)
{
	publish("acme", "t1", 1);
	publish("beta", "t2", 4102444800000LL); /* a far eta is published at once: the worker holds it */
	json_t *rows = claim(1, 60000);
	cr_assert_eq(json_array_size(rows), 1);
	json_t *r = json_array_get(rows, 0);
	cr_assert_str_eq(json_string_value(json_object_get(r, "id")), "t1"); /* oldest first */
	cr_assert_str_eq(json_string_value(json_object_get(r, "tenant")), "acme");
	cr_assert_str_eq(json_string_value(json_object_get(r, "queue")), "celery");
	cr_assert_str_eq(json_string_value(json_object_get(r, "name")), "soma.echo");
	cr_assert_eq(json_integer_value(json_array_get(json_object_get(json_object_get(r, "payload"), "args"), 0)), 1);
	cr_assert_eq(json_integer_value(json_object_get(r, "max_retries")), 2);
	cr_assert_eq(json_integer_value(json_object_get(r, "attempts")), 0);
	cr_assert(json_is_false(json_object_get(r, "requeued")));
	json_decref(rows);
	rows = claim(10, 60000); /* t1 is leased: only t2 */
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "t2");
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(rows, 0), "available_ms")), 4102444800000LL);
	json_decref(rows);
	rows = claim(10, 60000);
	cr_assert_eq(json_array_size(rows), 0);
	json_decref(rows);
	/* a relay that died: a lease of 0 has passed at once, so the rows are claimed again */
	publish("acme", "t3", 1);
	json_decref(claim(10, -1));
	rows = claim(10, 60000);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "t3");
	json_decref(rows);
	done(json_pack("[s, s, s]", "t1", "t2", "t3"));
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id LIKE ?", "t%"), 0);
}

/* Runs sql on the store's database from a connection of the test's own. */
static void db_exec(const char *sql)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	sqlite3_close(db);
}

Test(task_relay, dead_letters_are_listed_and_requeued_rows_are_marked)
{
	/* the dead letter's session exists (a requeue of one deleted since is refused) */
	db_exec("INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES ('s1', 'acme', 1, 1)");
	struct store_op *op = store_op_new(STORE_OP_TASK_DEAD_ADD, "acme");
	op->task = json_pack("{s:s, s:s, s:s, s:s, s:{s:[], s:{}}, s:i, s:i, s:s}", "id", "d1", "queue", "celery",
			     "name", "soma.fail", "session_id", "s1", "payload", "args", "kwargs", "max_retries", 2,
			     "attempts", 3, "error", "poison");
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
	json_t *rows = claim(10, 60000);
	cr_assert_eq(json_array_size(rows), 0, "a dead letter is not published");
	json_decref(rows);
	op = store_op_new(STORE_OP_DEAD_LIST, "acme");
	op->limit = 10;
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	cr_assert_eq(json_array_size(op->rows), 1);
	json_t *d = json_array_get(op->rows, 0);
	cr_assert_str_eq(json_string_value(json_object_get(d, "error")), "poison");
	cr_assert_eq(json_integer_value(json_object_get(d, "retries")), 2);
	cr_assert_str_eq(json_string_value(json_object_get(d, "session_id")), "s1");
	store_op_free(op);
	struct timespec ts = {0, 5 * 1000000L};
	nanosleep(&ts, NULL); /* the requeue is a later millisecond than the insert */
	op = store_op_new(STORE_OP_DEAD_REQUEUE, "acme");
	snprintf(op->task_id, sizeof(op->task_id), "d1");
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
	rows = claim(10, 60000);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert(json_is_true(json_object_get(json_array_get(rows, 0), "requeued")));
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(rows, 0), "attempts")), 0);
	json_decref(rows);
	/* DEAD_ADD of an id that exists replaces that row */
	op = store_op_new(STORE_OP_TASK_DEAD_ADD, "acme");
	op->task = json_pack("{s:s, s:s, s:s, s:{}, s:i, s:i, s:s}", "id", "d1", "queue", "celery", "name", "soma.fail",
			     "payload", "max_retries", 2, "attempts", 3, "error", "again");
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id = ? AND state = 'dead'", "d1"), 1);
}

Test(task_relay, a_claim_deletes_the_previous_batch_first_in_its_transaction)
{
	publish("acme", "p1", 1);
	publish("acme", "p2", 1);
	publish("acme", "p3", 1);
	json_t *rows = claim(2, 60000);
	cr_assert_eq(json_array_size(rows), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "p1");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 1), "id")), "p2");
	json_decref(rows);
	struct store_op *op = store_op_new(STORE_OP_TASK_RELAY_CLAIM, "");
	op->limit = 10;
	op->delay_ms = 60000;
	op->all_tenants = true;
	op->row = json_pack("[s, s, s]", "p1", "p2", "p3"); /* p3 is still queued: not deleted */
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	cr_assert_eq(json_array_size(op->rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(op->rows, 0), "id")), "p3");
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id LIKE ?", "p%"), 1);
	/* a RELAY_DONE list that is not all strings changes nothing */
	op = store_op_new(STORE_OP_TASK_RELAY_DONE, "");
	op->row = json_pack("[s, i]", "p3", 7);
	cr_assert_neq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
	done(json_pack("[s]", "p3"));
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id LIKE ?", "p%"), 0);
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

Test(task_relay, a_claim_reads_the_queued_and_relaying_rows_not_the_dead_letters)
{
	/* dead letters are kept forever by default (retention.dead_letters_s=0); the live rows come
	 * after them, ids out of alphabetical order: the claim goes by commit order (rowid), not by id */
	db_exec("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999) "
		"INSERT INTO tasks(id, queue, name, tenant, state, available_ms, created_ms, "
		"updated_ms) SELECT printf('dead%06d', i), 'q', 'n', 't', 'dead', 1, 1, 1 FROM n;"
		"INSERT INTO tasks(id, queue, name, tenant, state, available_ms, reserved_until_ms, "
		"created_ms, updated_ms) VALUES ('q3', 'q', 'n', 't', 'queued', 1, 0, 1, 1), "
		"('r-expired', 'q', 'n', 't', 'relaying', 1, 1, 1, 1), "
		"('r-leased', 'q', 'n', 't', 'relaying', 1, 9000000000000, 1, 1), "
		"('q1', 'q', 'n', 't', 'queued', 1, 0, 1, 1), "
		"('q2', 'q', 'n', 't', 'queued', 9000000000000, 0, 1, 1);");
	json_t *rows = claim(1, 60000);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "q3");
	json_decref(rows);
	writer_fullscan_steps();
	rows = claim(2, 60000);
	int64_t steps = writer_fullscan_steps();
	cr_assert_lt(steps, 1000, "a claim of 2 took %lld full-scan steps: the dead letters were read",
		     (long long)steps);
	cr_assert_eq(json_array_size(rows), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "r-expired");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 1), "id")), "q1");
	json_decref(rows);
	rows = claim(10, 60000); /* q2's eta is no reason to wait: the worker holds it */
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "q2");
	json_decref(rows);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE state = ?", "relaying"), 5);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE state = ?", "dead"), 100000);
}
