/*
 * test_attach_migrate.c - a database of schema 12 (no attachment_refs) is migrated by 0013: its
 * backfill fills a row per (tenant, attachment, session) its events name, only for attachments of
 * the event's tenant, and its plan scans the events once and looks each named id up by the
 * attachments' primary key (the plan SQLite picked by itself, the attachments of the tenant per
 * event then json_each per attachment, took 9 minutes on a million events inside the start's
 * transaction). The plan is read with EXPLAIN QUERY PLAN of the statement the binary embeds: no
 * timing. The old schema is made from a migrated store by dropping the table and forgetting 0013.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "store/store.h"

struct embedded_file {
	const char *name;
	const char *text;
};
extern const struct embedded_file store_migrations[]; /* generated from src/store/migrations */

static char dir[64];

static sqlite3 *db_open(void)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	return db;
}

static void db_exec(const char *sql)
{
	sqlite3 *db = db_open();
	char *err = NULL;
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s", err ? err : "?");
	sqlite3_close(db);
}

/* The backfill statement of 0013 (malloc'd; the caller frees). */
static char *backfill_sql(void)
{
	for (const struct embedded_file *m = store_migrations; m->name; m++) {
		if (strtol(m->name, NULL, 10) != 13)
			continue;
		const char *start = strstr(m->text, "INSERT OR IGNORE INTO attachment_refs");
		cr_assert_not_null(start, "0013 has no backfill");
		const char *end = strchr(start, ';');
		cr_assert_not_null(end);
		return strndup(start, (size_t)(end - start));
	}
	cr_assert_fail("no migration 0013");
	return NULL;
}

static const char old_rows[] =
	"INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES "
	"('s1', 't1', 1, 1), ('s2', 't1', 1, 1), ('s3', 't2', 1, 1);"
	"INSERT INTO attachments(id, tenant, session_id, filename, mime, size, sha256, created_ms) VALUES "
	"('a1', 't1', 's1', 'f', 'text/plain', 1, 'h1', 1), ('a2', 't1', 's1', 'f', 'text/plain', 1, 'h2', 1), "
	"('a3', 't2', 's3', 'f', 'text/plain', 1, 'h3', 1);"
	"INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms) VALUES "
	"('s1', 1, 'e1', 't1', 'user', '{\"type\":\"user\",\"attachments\":[\"a1\"]}', 1), "
	"('s1', 2, 'e2', 't1', 'assistant.final', '{\"type\":\"assistant.final\",\"attachments\":[]}', 1), "
	"('s2', 1, 'e3', 't1', 'user', '{\"type\":\"user\",\"attachments\":[\"a1\",\"a2\",\"zz\"]}', 1), "
	"('s2', 2, 'e4', 't1', 'user', '{\"type\":\"user\",\"attachments\":[\"a2\"]}', 1), "
	"('s3', 1, 'e5', 't2', 'user', '{\"type\":\"user\",\"attachments\":[\"a1\",\"a3\"]}', 1);";

Test(attach_migrate, the_backfill_names_each_attachment_once_per_session_and_looks_ids_up_by_key, .timeout = 60)
{
	struct store *st = store_test_open(dir, sizeof(dir));
	store_close(st);
	db_exec("DROP TABLE attachment_refs; DELETE FROM schema_migrations WHERE version >= 13;");
	db_exec(old_rows);

	char why[256] = "";
	int applied = -1;
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_migrate(st, &applied), SOMA_OK);
	cr_assert_eq(applied, 4, "applied %d migrations (0013 to 0016)", applied);
	store_close(st);

	/* s1: a1; s2: a1, a2 (zz is no attachment); s3: a3 only (a1 is of another tenant) */
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM attachment_refs WHERE tenant <> ?", ""), 4);
	cr_assert_eq(
		db_query_int(dir, "SELECT count(*) FROM attachment_refs WHERE tenant = 't1' AND session_id = ?", "s2"),
		2);
	cr_assert_eq(db_query_int(dir,
				  "SELECT count(*) FROM attachment_refs WHERE tenant = 't1' AND session_id = ? "
				  "AND attachment_id = 'a1'",
				  "s1"),
		     1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM attachment_refs WHERE tenant = 't2' AND attachment_id = ?",
				  "a3"),
		     1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM attachment_refs WHERE attachment_id = 'a1' AND tenant = ?",
				  "t2"),
		     0);

	/* the plan: events scanned once, json_each per event, then the attachments' primary key */
	char *sql = backfill_sql(), plan[1024] = "";
	char *explain = NULL;
	cr_assert(asprintf(&explain, "EXPLAIN QUERY PLAN %s", sql) > 0);
	sqlite3 *db = db_open();
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db, explain, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	size_t len = 0;
	while (sqlite3_step(s) == SQLITE_ROW && len < sizeof(plan))
		len += (size_t)snprintf(plan + len, sizeof(plan) - len, "%s|", (const char *)sqlite3_column_text(s, 3));
	sqlite3_finalize(s);
	sqlite3_close(db);
	free(explain);
	free(sql);
	const char *scan_e = strstr(plan, "SCAN e|"), *search_a = strstr(plan, "SEARCH a USING INDEX ");
	cr_assert(scan_e && search_a && strstr(search_a, "(id=?)|") && strstr(plan, "SCAN j"), "plan: %s", plan);
	cr_assert(scan_e < strstr(plan, "SCAN j") && strstr(plan, "SCAN j") < search_a, "plan: %s", plan);
	cr_assert_null(strstr(plan, "attachments_tenant"), "plan: %s", plan);
	tmpdir_remove(dir);
}
