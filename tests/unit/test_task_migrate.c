/*
 * test_task_migrate.c - a database of the previous schema (migrations up to 0008: the local
 * queue's indexes tasks_ready and tasks_expiry over every row, state a key column) is migrated by
 * 0009 to partial indexes (queued rows only, reserved rows only), and its tasks are reserved as
 * before: the queued one first, then a reservation that ran out, never a live one; attempts count
 * up. The old schema is made from a migrated store by putting the old indexes back and forgetting
 * 0009, as a binary before 0009 left it.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "store/store.h"

static char dir[64];
static struct store *st;

static void db_exec(const char *sql)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	char *err = NULL;
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s", err ? err : "?");
	sqlite3_close(db);
}

static json_t *reserve(void)
{
	return store_test_reserve(st, "celery", 60000);
}

Test(task_migrate, a_database_of_the_old_schema_migrates_and_its_tasks_are_reserved_as_before, .timeout = 60)
{
	st = store_test_open(dir, sizeof(dir));
	store_close(st);
	db_exec("DROP INDEX tasks_ready; DROP INDEX tasks_expiry;"
		"CREATE INDEX tasks_ready ON tasks(queue, state, available_ms);"
		"CREATE INDEX tasks_expiry ON tasks(queue, state, reserved_until_ms);"
		"DROP INDEX task_results_completed; ALTER TABLE task_results DROP COLUMN name;" /* 0012 undone */
		"ALTER TABLE task_results DROP COLUMN retries; ALTER TABLE task_results DROP COLUMN started_ms;"
		"DROP TABLE attachment_refs;"			    /* 0013 undone */
		"DELETE FROM schema_migrations WHERE version >= 9;" /* and those after it: applied again */
		"INSERT INTO tasks(id, queue, name, tenant, state, attempts, available_ms, reserved_until_ms, "
		"worker, created_ms, updated_ms) VALUES "
		"('live', 'celery', 't', 'acme', 'reserved', 1, 1, 9000000000000, 'w0', 1, 1), "
		"('expired', 'celery', 't', 'acme', 'reserved', 1, 1, 2, 'w0', 1, 1), "
		"('queued', 'celery', 't', 'acme', 'queued', 0, 5, 0, '', 1, 1);"
		"UPDATE tasks SET payload = '{\"k\": [1, \"v\"]}' WHERE id = 'queued';");

	char why[256] = "";
	int applied = -1;
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_migrate(st, &applied), SOMA_OK);
	cr_assert_eq(applied, 8, "applied %d migrations (0009 to 0016)", applied);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sqlite_master WHERE name = ? AND sql LIKE '%WHERE state%'",
				  "tasks_ready"),
		     1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sqlite_master WHERE name = ? AND sql LIKE '%WHERE state%'",
				  "tasks_expiry"),
		     1);
	cr_assert_eq(store_exec_start(st, 1), SOMA_OK);

	json_t *queued = reserve(); /* its payload parsed (sqlite_tasks.c, store_sql_finish) */
	cr_assert_not_null(queued);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(json_object_get(queued, "payload"), "k"), 1)),
			 "v");
	cr_assert_null(json_object_get(queued, "payload_text"));
	store_test_assert_reserved(queued, "queued", 1);
	store_test_assert_reserved(reserve(), "expired", 2);
	json_t *none = reserve();
	cr_assert_null(none, "a live reservation was taken: %s", json_string_value(json_object_get(none, "id")));
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE state = 'reserved' AND worker = ?", "w1"), 2);
	store_test_close(st, dir);
}
