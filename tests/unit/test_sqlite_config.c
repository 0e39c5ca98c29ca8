/*
 * test_sqlite_config.c - SQLite's process-wide settings made by the store (src/store/sqlite.c):
 * memory statistics are off (they take a global mutex around every SQLite allocation), and the
 * store works as before with them off.
 *
 * DESIGN: Criterion runs each test in its own process, so the store's open is the first use of
 * SQLite there, as in somaagent. The statistics stay at zero only when they are off.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>

#include "helpers.h"
#include "store/store_int.h"

Test(sqlite_config, memory_statistics_are_off)
{
	char dir[64];
	struct store *st = store_test_open(dir, sizeof(dir));
	struct store_op *op = store_op_new(STORE_OP_MESSAGE, "t1");
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	op->event = json_pack("{s:s, s:s, s:s, s:s}", "event_id", "ev-1", "type", "user", "role", "user", "message",
			      "hello");
	cr_assert_eq(store_op_wait(st, op), SOMA_OK, "%s", op->error_text);
	cr_assert_eq(op->seq, 1);
	store_op_free(op);
	cr_assert_eq(sqlite3_memory_used(), 0, "SQLite counts its memory: %lld bytes (memory statistics are on)",
		     (long long)sqlite3_memory_used());
	store_test_close(st, dir);
}

/* SQLite allocates through the store's per-thread caches (sqlite_mem.c: classes of 16 bytes up to
 * 64, then four per power of two; glibc's own sizes are 8 + a multiple of 16), and the writer's
 * page cache is the store's size (sqlite_exec.c), not SQLite's default 2 MB. */
Test(sqlite_config, the_store_allocator_and_the_writer_cache_size)
{
	char dir[64];
	struct store *st = store_test_open(dir, sizeof(dir));
	void *p = sqlite3_malloc(97);
	cr_assert_not_null(p);
	cr_assert_eq(sqlite3_msize(p), 112);
	sqlite3_free(p);
	sqlite3_stmt *s; /* (the writer thread is idle: no op is queued) */
	cr_assert_eq(sqlite3_prepare_v2(st->writer.db, "PRAGMA cache_size", -1, &s, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(s, 0), -16384);
	sqlite3_finalize(s);
	store_test_close(st, dir);
}
