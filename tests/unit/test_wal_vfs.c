/*
 * test_wal_vfs.c - the WAL-coalescing VFS (src/store/wal_vfs.c) keeps SQLite's guarantees:
 * commits larger than its buffer, readers on other connections, a writer that dies without
 * closing, and a database that passes integrity_check afterwards.
 *
 * DESIGN: real SQLite files in a temporary directory, opened through store_vfs() as the store
 * does (WAL, synchronous=NORMAL, so only the shim's writes carry a commit to the kernel). The
 * crash case forks a child that commits and _exit()s with the database open; the parent then
 * opens the files and must find every committed row.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "store/store_int.h"

static char dir[64], path[128];

static void setup(void)
{
	tmpdir_make(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/t.db", dir);
}

static void teardown(void)
{
	tmpdir_remove(dir);
}

TestSuite(wal_vfs, .init = setup, .fini = teardown);

static sqlite3 *open_db(void)
{
	const char *vfs = store_vfs();
	cr_assert_str_eq(vfs ? vfs : "(none)", STORE_VFS_NAME, "the shim did not register");
	sqlite3 *db;
	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL),
		     SQLITE_OK);
	return db;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	sqlite3_finalize(s);
	return v;
}

/* Inserts n rows of about 1 KiB each in one transaction. */
static void insert_rows(sqlite3 *db, int first, int n)
{
	cr_assert_eq(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db, "INSERT INTO t(id, body) VALUES (?, randomblob(1000))", -1, &s, NULL),
		     SQLITE_OK);
	for (int i = first; i < first + n; i++) {
		sqlite3_bind_int(s, 1, i);
		cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	cr_assert_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
}

Test(wal_vfs, commits_bigger_than_the_buffer_are_seen_whole_by_other_connections)
{
	sqlite3 *w = open_db(), *r = open_db();
	cr_assert_eq(sqlite3_exec(w, "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)", NULL, NULL, NULL), SQLITE_OK);
	/* 2000 rows of 1 KiB: about 500 pages, several buffer flushes in one commit */
	for (int round = 0; round < 5; round++) {
		insert_rows(w, round * 2000, 2000);
		cr_assert_eq(query_int(r, "SELECT count(*) FROM t"), (round + 1) * 2000);
	}
	/* small commits too: each one must be visible at once */
	for (int i = 0; i < 50; i++) {
		insert_rows(w, 100000 + i, 1);
		cr_assert_eq(query_int(r, "SELECT count(*) FROM t"), 10000 + i + 1);
	}
	cr_assert_eq(sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL), SQLITE_OK);
	insert_rows(w, 200000, 10); /* the WAL starts again from its beginning */
	cr_assert_eq(query_int(r, "SELECT count(*) FROM t"), 10060);
	sqlite3_close(r);
	sqlite3_close(w);
	sqlite3 *again = open_db();
	cr_assert_eq(query_int(again, "SELECT count(*) FROM t"), 10060);
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(again, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(s, 0), "ok");
	sqlite3_finalize(s);
	sqlite3_close(again);
}

Test(wal_vfs, a_writer_that_dies_without_closing_loses_no_commit)
{
	sqlite3 *db = open_db();
	cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)", NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(db);
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		sqlite3 *child = open_db();
		for (int i = 0; i < 20; i++)
			insert_rows(child, i * 300, 300);
		_exit(0); /* no close, no checkpoint: only what reached the kernel survives */
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed");
	db = open_db();
	cr_assert_eq(query_int(db, "SELECT count(*) FROM t"), 6000);
	cr_assert_eq(query_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'"), 1);
	sqlite3_close(db);
}
