/*
 * test_memory_merge.c - the writer merges the memory index's FTS5 segments while it is idle
 * (sqlite_exec.c, sq_idle): the segment count falls, recalls find the same rows in the same order
 * with the same scores, and a write that arrives while merging is served between two steps.
 *
 * DESIGN: the index's segments are made by the test's own connection while the store is idle, one
 * small transaction each with FTS5's automerge off, as batches of an earlier run would leave
 * them (the writer merges only after memories it wrote itself, or after a start); recalls are
 * run, the store is opened again (its writer starts merging), and recalls are run again after the
 * writer reports (st->fts_merge_wanted) that a step merged nothing. The rows are dated
 * in 1970, so the recency factor of their scores moves by ~1e-9 between the two recalls.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "store/store.h"
#include "store/store_int.h"

#define ROWS	   20000
#define ROWS_A_TXN 100

static char dir[64];
static struct store *st;

static void teardown(void)
{
	store_memory_search_here_close();
	if (st)
		store_test_close(st, dir);
}

TestSuite(memory_merge, .fini = teardown, .timeout = 120);

/* The test's own connection to the store's database (the caller closes it). */
static sqlite3 *db_open(int flags)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK, "%s", path);
	return db;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s: %s", sql, err ? err : "");
}

/* ROWS memories of acme, ROWS_A_TXN a transaction, of words of a small vocabulary (many share
 * words: doclists of many rows, scores of many values, ties). */
static void fill_segments(void)
{
	static const char *const words[] = {"otter", "kelp", "bay", "tide", "reef", "gull", "dune", "cove", "surf"};
	sqlite3 *db = db_open(SQLITE_OPEN_READWRITE);
	exec_ok(db, "INSERT INTO memories_fts(memories_fts, rank) VALUES ('automerge', 0)");
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db,
					"INSERT INTO memories(tenant, namespace, key, content, payload, created_ms) "
					"VALUES ('acme', 'wm', ?1, ?2, json_object('content', ?2), ?3)",
					-1, &s, NULL),
		     SQLITE_OK, "%s", sqlite3_errmsg(db));
	for (int i = 0; i < ROWS; i++) {
		if (i % ROWS_A_TXN == 0)
			exec_ok(db, "BEGIN");
		char key[16], text[256];
		size_t n = 0;
		for (int w = 0; w < 9; w++)
			if ((i * 7 + w * 3) % (w + 2) == 0)
				n += (size_t)snprintf(text + n, sizeof(text) - n, "%s ", words[w]);
		for (int f = 0; f < i % 5; f++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "filler%d ", (i + f) % 40);
		snprintf(key, sizeof(key), "k%d", i);
		sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(s, 2, text, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 3, 1000 + i);
		cr_assert_eq(sqlite3_step(s), SQLITE_DONE, "%s", sqlite3_errmsg(db));
		sqlite3_reset(s);
		if (i % ROWS_A_TXN == ROWS_A_TXN - 1)
			exec_ok(db, "COMMIT");
	}
	sqlite3_finalize(s);
	exec_ok(db, "INSERT INTO memories_fts(memories_fts, rank) VALUES ('automerge', 4)");
	sqlite3_close(db);
}

static int64_t segments(void)
{
	return db_query_int(dir, "SELECT count(DISTINCT id >> 37) FROM memories_fts_data WHERE id >= 1 << 37", NULL);
}

/* The index's rows, as a number that any merge step changes (it writes a new segment's rows). */
static int64_t index_rows(sqlite3 *db)
{
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) * 1000000000 + sum(length(block)) FROM memories_fts_data",
					-1, &s, NULL),
		     SQLITE_OK);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static const char *const queries[] = {"otter", "kelp bay", "tide reef gull", "filler7 cove", "surf dune otter"};
#define NQ (sizeof(queries) / sizeof(queries[0]))

static json_t *search(const char *query)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_SEARCH, "acme");
	op->row = json_pack("{s:s, s:s, s:i}", "query", query, "namespace", "wm", "top_k", 50);
	cr_assert_eq(store_memory_search_here(st, op), SOMA_OK, "query %s", query);
	json_t *rows = json_incref(op->rows);
	store_op_free(op);
	return rows;
}

/* A write op for the writer's queue that changes nothing: retry of an outbox row that is not. */
static enum soma_err write_nothing(void)
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_RETRY, "acme");
	snprintf(op->task_id, sizeof(op->task_id), "999999");
	enum soma_err err = store_op_wait(st, op);
	store_op_free(op);
	return err;
}

Test(memory_merge, idle_merging_leaves_fewer_segments_and_the_same_recalls)
{
	st = store_test_open(dir, sizeof(dir));
	while (atomic_load(&st->fts_merge_wanted))
		usleep(1000); /* (its first steps find the empty index has nothing to merge) */
	fill_segments();      /* behind the idle writer's back: it merges after memories it wrote */
	int64_t before_segments = segments();
	cr_assert_geq(before_segments, 8, "the test needs an index of many segments: %lld", (long long)before_segments);
	json_t *before[NQ];
	for (size_t q = 0; q < NQ; q++) {
		before[q] = search(queries[q]);
		cr_assert_gt(json_array_size(before[q]), 3, "%s finds rows", queries[q]);
	}
	cr_assert_eq(segments(), before_segments, "nothing merged before the restart");

	store_memory_search_here_close();
	store_close(st);
	char why[256] = "";
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_exec_start(st, 2), SOMA_OK); /* its writer starts merging: nothing is queued */
	sqlite3 *db = db_open(SQLITE_OPEN_READONLY);
	int64_t unmerged = index_rows(db), served_while_merging = 0;
	while (atomic_load(&st->fts_merge_wanted)) {
		/* an op that arrives once merging began waits for one step, not for the whole merge */
		bool began = index_rows(db) != unmerged;
		cr_assert_eq(write_nothing(), SOMA_ERR_NOT_FOUND);
		served_while_merging += began && atomic_load(&st->fts_merge_wanted);
	}
	sqlite3_close(db);
	cr_assert_gt(served_while_merging, 0, "no op was served between two merge steps");
	int64_t after_segments = segments();
	cr_assert_lt(after_segments, before_segments / 2, "segments: %lld before, %lld after idle merging",
		     (long long)before_segments, (long long)after_segments);

	for (size_t q = 0; q < NQ; q++) {
		json_t *after = search(queries[q]);
		cr_assert_eq(json_array_size(after), json_array_size(before[q]), "%s: row count", queries[q]);
		for (size_t i = 0; i < json_array_size(after); i++) {
			json_t *a = json_array_get(after, i), *b = json_array_get(before[q], i);
			cr_assert_str_eq(json_string_value(json_object_get(a, "key")),
					 json_string_value(json_object_get(b, "key")), "%s: row %zu", queries[q], i);
			double sa = json_real_value(json_object_get(a, "score")),
			       sb = json_real_value(json_object_get(b, "score"));
			cr_assert(sa - sb < 1e-7 * sb && sb - sa < 1e-7 * sb, "%s: row %zu: score %.17g, before %.17g",
				  queries[q], i, sa, sb);
		}
		json_decref(after);
		json_decref(before[q]);
	}
	cr_assert_eq(write_nothing(), SOMA_ERR_NOT_FOUND); /* the writer still serves ops */
}
