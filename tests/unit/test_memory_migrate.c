/*
 * test_memory_migrate.c - a database of the previous schema (migrations up to 0009: the memory
 * outbox unique on (tenant, key)) is migrated by 0010 to UNIQUE (tenant, namespace, key): its
 * rows keep their ids, states and order, the AUTOINCREMENT counter goes on from where it was (a
 * delivered row's id is not handed out again), and one key may then wait in two namespaces. The
 * old schema is made from a migrated store by rebuilding the table as 0006 and 0007 left it and
 * forgetting 0010, as a binary before 0010 left it.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "store/store.h"

static char dir[64];

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

/* Three rows as 0009 kept them; the one with id 9 was delivered (deleted), so the counter is at 9. */
static const char old_rows[] =
	"INSERT INTO memory_outbox(id, key, tenant, session_id, namespace, body, state, attempts, available_ms, "
	"claimed_ms, last_error, created_ms, updated_ms) VALUES "
	"(5, 'k1', 'acme', 's1', 'a', '{}', 'pending', 1, 5, 0, '', 1, 1), "
	"(7, 'k2', 'acme', 's1', '', '{}', 'failed', 1, 5, 0, 'HTTP 400', 1, 1), "
	"(9, 'k3', 'acme', 's1', 'b', '{}', 'pending', 1, 5, 0, '', 1, 1);"
	"DELETE FROM memory_outbox WHERE id = 9;";

Test(memory_migrate, the_outbox_becomes_unique_per_namespace_and_keeps_its_rows, .timeout = 60)
{
	struct store *st = store_test_open(dir, sizeof(dir));
	store_close(st);
	db_exec("DROP TABLE memory_outbox;"
		"CREATE TABLE memory_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, "
		"tenant TEXT NOT NULL, session_id TEXT NOT NULL DEFAULT '', namespace TEXT NOT NULL DEFAULT '', "
		"body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, "
		"available_ms INTEGER NOT NULL, claimed_ms INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL "
		"DEFAULT '', created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, UNIQUE (tenant, key));"
		"CREATE INDEX memory_outbox_ready ON memory_outbox(state, available_ms, id);"
		"CREATE INDEX memory_outbox_session ON memory_outbox(tenant, session_id, id);"
		"CREATE INDEX memory_outbox_tenant ON memory_outbox(tenant, id);"
		"DROP INDEX task_results_completed; ALTER TABLE task_results DROP COLUMN name;" /* 0012 undone */
		"ALTER TABLE task_results DROP COLUMN retries; ALTER TABLE task_results DROP COLUMN started_ms;"
		"DROP TABLE attachment_refs;"			       /* 0013 undone */
		"DELETE FROM schema_migrations WHERE version >= 10;"); /* and those after it: applied again */
	db_exec(old_rows);
	cr_assert_eq(db_query_int(dir, "SELECT seq FROM sqlite_sequence WHERE name = ?", "memory_outbox"), 9);

	char why[256] = "";
	int applied = -1;
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_migrate(st, &applied), SOMA_OK);
	cr_assert_eq(applied, 7, "applied %d migrations (0010 to 0016)", applied);
	store_close(st);

	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key <> ?", ""), 2);
	cr_assert_eq(db_query_int(dir, "SELECT id FROM memory_outbox WHERE key = ?", "k1"), 5);
	cr_assert_eq(db_query_int(dir, "SELECT id FROM memory_outbox WHERE key = ? AND state = 'failed'", "k2"), 7);
	cr_assert_eq(db_query_int(dir, "SELECT seq FROM sqlite_sequence WHERE name = ?", "memory_outbox"), 9);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM sqlite_master WHERE name LIKE ?", "memory_outbox%"), 4,
		     "the table and its three indexes");
	/* one key in another namespace is another row; in the same namespace it is not written twice */
	db_exec("INSERT INTO memory_outbox(key, tenant, namespace, body, available_ms, created_ms, updated_ms) "
		"VALUES ('k1', 'acme', 'b', '{}', 1, 1, 1), ('k1', 'acme', 'a', '{}', 1, 1, 1) "
		"ON CONFLICT(tenant, namespace, key) DO NOTHING");
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "k1"), 2);
	cr_assert_eq(db_query_int(dir, "SELECT id FROM memory_outbox WHERE key = ? AND namespace = 'b'", "k1"), 10,
		     "ids go on after the highest ever handed out");
	tmpdir_remove(dir);
}
