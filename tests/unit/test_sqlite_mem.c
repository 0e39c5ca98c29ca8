/*
 * test_sqlite_mem.c - SQLite's allocator with per-thread caches (src/store/sqlite_mem.c): every
 * size gets a block at least that large and at most a quarter larger (plus the 16-byte step of
 * small sizes); a freed block is given again to the next request of its class on that thread;
 * realloc keeps the content; a block taken on one thread may be freed on another; a thread's
 * cached blocks are freed when it exits (the run under LeakSanitizer reports them otherwise);
 * SQLite runs on it. Criterion runs each test in its own process, so each installs it first.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#include "store/store_int.h"

static void install(void)
{
	cr_assert_eq(store_sqlite_mem_install(), SQLITE_OK, "installed before SQLite initialises");
	cr_assert_eq(sqlite3_initialize(), SQLITE_OK);
}

Test(sqlite_mem, every_size_gets_a_block_of_its_class)
{
	install();
	for (int n = 1; n <= 70000; n += n < 300 ? 1 : 97) {
		unsigned char *p = sqlite3_malloc(n);
		cr_assert_not_null(p, "size %d", n);
		int have = sqlite3_msize(p);
		cr_assert(have >= n && have <= n + n / 4 + 16, "size %d got %d", n, have);
		memset(p, 0xab, (size_t)have);
		sqlite3_free(p);
	}
}

Test(sqlite_mem, a_freed_block_serves_the_next_request_of_its_class)
{
	install();
	void *p = sqlite3_malloc(100);
	cr_assert_not_null(p);
	sqlite3_free(p);
	void *q = sqlite3_malloc(97); /* the same class (97..112) */
	cr_assert_eq(q, p);
	sqlite3_free(q);
	void *big = sqlite3_malloc(200000); /* above the cached sizes: not kept */
	cr_assert_not_null(big);
	cr_assert_geq(sqlite3_msize(big), 200000);
	sqlite3_free(big);
}

Test(sqlite_mem, realloc_keeps_the_content)
{
	install();
	unsigned char *p = sqlite3_malloc(40);
	cr_assert_not_null(p);
	for (int i = 0; i < 40; i++)
		p[i] = (unsigned char)i;
	unsigned char *q = sqlite3_realloc(p, 5000);
	cr_assert_not_null(q);
	for (int i = 0; i < 40; i++)
		cr_assert_eq(q[i], i);
	unsigned char *r = sqlite3_realloc(q, 4500); /* same class: the block stays */
	cr_assert_eq(r, q);
	unsigned char *s = sqlite3_realloc(r, 20); /* much smaller: a block of its own class */
	cr_assert_not_null(s);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(s[i], i);
	cr_assert_leq(sqlite3_msize(s), 32);
	sqlite3_free(s);
}

static void *churn(void *arg)
{
	void **out = arg;
	for (int round = 0; round < 50; round++) {
		void *p[64];
		for (int i = 0; i < 64; i++)
			cr_assert_not_null(p[i] = sqlite3_malloc(16 + i * 300));
		for (int i = 0; i < 64; i++)
			sqlite3_free(p[i]); /* kept in this thread's lists: freed when it exits */
	}
	*out = sqlite3_malloc(1000); /* freed by the main thread */
	return (void *)(uintptr_t)store_sqlite_mem_kept_here();
}

Test(sqlite_mem, threads_free_each_others_blocks_and_empty_their_lists_on_exit)
{
	install();
	pthread_t t[4];
	void *left[4] = {0};
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, churn, &left[i]), 0);
	uint64_t kept = 0, here = store_sqlite_mem_kept_here();
	for (int i = 0; i < 4; i++) {
		void *n = NULL;
		pthread_join(t[i], &n);
		kept += (uintptr_t)n;
		cr_assert_not_null(left[i]);
		sqlite3_free(left[i]);
	}
	cr_assert_gt(kept, 0, "the threads kept blocks");
	cr_assert_eq(store_sqlite_mem_returned(), kept, "what they kept went back to malloc when they exited");
	cr_assert_eq(store_sqlite_mem_kept_here(), here + 4, "the main thread keeps the 4 blocks it freed");
}

Test(sqlite_mem, sqlite_runs_on_it)
{
	install();
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db,
				  "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT); "
				  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
				  "INSERT INTO t SELECT i, printf('%0*d', i % 3000, i) FROM n; "
				  "CREATE INDEX tv ON t(v); DELETE FROM t WHERE k % 3 = 0;",
				  NULL, NULL, NULL),
		     SQLITE_OK, "%s", sqlite3_errmsg(db));
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*), sum(length(v)) FROM t", -1, &s, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(s, 0), 20000 - 20000 / 3);
	sqlite3_finalize(s);
	sqlite3_close(db);
}
