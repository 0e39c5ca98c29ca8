/*
 * test_memory_rank.c - recall's rank with its cut (soma_rank's five-argument form,
 * src/store/sqlite_memory_search.c): a row that cannot be among the k best is left out (NULL)
 * without reading its length, and what is left gives the same k best, with the same scores, as
 * ranking every row.
 *
 * DESIGN: memories are written through STORE_OP_MEMORY_PUT on a real store; the rank is run on a
 * read-only connection of the test's own, as a recall runs it (rowid order, newest first), beside
 * the plain BM25 form on the same rows.
 */
#include <criterion/criterion.h>
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
	store_memory_search_here_close();
	store_test_close(st, dir);
}

TestSuite(memory_rank, .init = setup, .fini = teardown, .timeout = 60);

/* 120 memories of acme, of one to three of the words otter, kelp, bay among filler words of
 * varied lengths: scores of many values, and ties. */
static void fill(void)
{
	static const char *const words[] = {"otter", "kelp", "bay"};
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	op->row = json_array();
	for (int i = 0; i < 120; i++) {
		char key[16], text[256];
		size_t n = 0;
		for (int w = 0; w < 3; w++)
			if ((i >> w) % 3 == 0 || w == i % 3)
				n += (size_t)snprintf(text + n, sizeof(text) - n, "%s ", words[w]);
		for (int f = 0; f < i % 7; f++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "filler%d ", f);
		snprintf(key, sizeof(key), "k%d", i);
		json_array_append_new(op->row,
				      json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "key", key, "tenant", "acme",
						"namespace", "wm", "session_id", "", "payload", "content", text));
	}
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
}

static int by_score(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x < y) - (x > y); /* best first */
}

Test(memory_rank, rows_that_cannot_rank_are_left_out_and_the_best_stay)
{
	fill();
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(store_sql_memory_rank_register(db), SOMA_OK);
	sqlite3_stmt *s;
	cr_assert_eq(
		sqlite3_prepare_v2(db,
				   "SELECT m.id, soma_rank(memories_fts, ?2, 0), soma_rank(memories_fts, ?2, 0, "
				   "m.created_ms, ?3, ?4), m.created_ms FROM memories_fts JOIN memories m ON m.id = "
				   "memories_fts.rowid WHERE memories_fts MATCH ?1 ORDER BY memories_fts.rowid DESC",
				   -1, &s, NULL),
		SQLITE_OK, "%s", sqlite3_errmsg(db));
	const double counts[2] = {60.0, 70.0}; /* (any counts: both forms are given the same) */
	const int64_t now = (int64_t)1795888717922;
	for (int k = 1; k <= 5; k += 2) {
		sqlite3_bind_text(s, 1, "content : (\"otter\" OR \"bay\")", -1, SQLITE_STATIC);
		sqlite3_bind_blob(s, 2, counts, sizeof(counts), SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, now);
		sqlite3_bind_int(s, 4, k);
		double all[200], kept[200];
		int nall = 0, nkept = 0, left_out = 0;
		while (sqlite3_step(s) == SQLITE_ROW && nall < 200) {
			double exact = -sqlite3_column_double(s, 1) /
				       (1.0 + (double)(now - sqlite3_column_int64(s, 3)) / 2592000000.0);
			all[nall++] = exact;
			if (sqlite3_column_type(s, 2) == SQLITE_NULL) {
				left_out++;
				continue;
			}
			cr_assert(sqlite3_column_double(s, 2) == exact, "row %lld: %.17g, exactly %.17g",
				  (long long)sqlite3_column_int64(s, 0), sqlite3_column_double(s, 2), exact);
			kept[nkept++] = exact;
		}
		sqlite3_reset(s);
		cr_assert_gt(nall, 50);
		cr_assert_gt(left_out, 0, "k %d: no row of %d was left out", k, nall);
		qsort(all, (size_t)nall, sizeof(double), by_score);
		qsort(kept, (size_t)nkept, sizeof(double), by_score);
		cr_assert_geq(nkept, k);
		for (int i = 0; i < k; i++)
			cr_assert(kept[i] == all[i], "k %d: the %d-th best is %.17g, of all rows %.17g", k, i, kept[i],
				  all[i]);
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
}

static json_t *search(const char *query, int top_k)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_SEARCH, "acme");
	op->row = json_pack("{s:s, s:s, s:i}", "query", query, "namespace", "wm", "top_k", top_k);
	cr_assert_eq(store_memory_search_here(st, op), SOMA_OK, "query %s", query);
	json_t *rows = json_incref(op->rows);
	store_op_free(op);
	return rows;
}

/* Whether row i of rows has the score of a neighbour (rows of one score come in any order). */
static bool tied(json_t *rows, size_t i)
{
	double s = json_real_value(json_object_get(json_array_get(rows, i), "score"));
	for (size_t j = i ? i - 1 : 0; j <= i + 1 && j < json_array_size(rows); j++) {
		double o = json_real_value(json_object_get(json_array_get(rows, j), "score"));
		if (j != i && o - s < 1e-6 * s && s - o < 1e-6 * s)
			return true;
	}
	return false;
}

/* A recall of k finds the first k of a recall of 50 (the cut does not change which rows win). */
Test(memory_rank, a_short_recall_is_the_head_of_a_long_one)
{
	fill();
	const char *queries[] = {"otter", "kelp bay", "otter kelp bay", "the bay of otters", "filler3 kelp"};
	for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
		json_t *all = search(queries[q], 50);
		for (int k = 1; k <= 4; k++) {
			json_t *head = search(queries[q], k);
			cr_assert_eq(json_array_size(head),
				     (size_t)k < json_array_size(all) ? (size_t)k : json_array_size(all));
			for (size_t i = 0; i < json_array_size(head); i++) {
				json_t *a = json_array_get(all, i), *h = json_array_get(head, i);
				double sa = json_real_value(json_object_get(a, "score")),
				       sh = json_real_value(json_object_get(h, "score"));
				cr_assert(sa - sh < 1e-6 * sa && sh - sa < 1e-6 * sa, "%s: score %zu", queries[q], i);
				if (!tied(all, i))
					cr_assert_str_eq(json_string_value(json_object_get(h, "key")),
							 json_string_value(json_object_get(a, "key")), "%s: row %zu",
							 queries[q], i);
			}
			json_decref(head);
		}
		json_decref(all);
	}
}

/* Memories of acme in this order (ids ascending: the later, the newer). */
static void put(const char *const *keys, const char *const *texts, int n)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	op->row = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(op->row,
				      json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "key", keys[i], "tenant", "acme",
						"namespace", "wm", "session_id", "", "payload", "content", texts[i]));
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
}

/* Words of the query that the tokenizer folds into one token (recall keeps words apart by their
 * bytes; unicode61 remove_diacritics 2 folds case and accents): "cafe", "café" and "cafè" are
 * three phrases hitting the one token "cafe", so a row has more hits than tokens and its hit count
 * is no lower bound of its length. The cut must not leave out the short row, the best, behind a
 * longer, newer one. */
Test(memory_rank, words_one_token_apart_do_not_cut_the_best_row)
{
	/* the short row is the best match (fewest tokens), the longer one newer: ranked first */
	static const char *const keys[] = {"short", "long"};
	static const char *const texts[] = {"cafe", "cafe filler"};
	put(keys, texts, 2);
	const char *query = "cafe caf\xc3\xa9 caf\xc3\xa8"; /* cafe café cafè: one token */
	json_t *all = search(query, 10);
	cr_assert_eq(json_array_size(all), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(all, 0), "key")), "short");
	json_t *one = search(query, 1);
	cr_assert_eq(json_array_size(one), 1, "top 1 of %s: %zu rows", query, json_array_size(one));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(one, 0), "key")), "short",
			 "top 1 is the best of all");
	json_decref(one);
	json_decref(all);
}

/* A recall whose words are in no memory skips its search only on counts read in its own read
 * transaction: a word cached as found in none, then written, is found at once (the cached count
 * of 0 does not hide it), with or without a word that is still in none, and words of other bytes
 * (counted by exact token, not as the search folds them) are still searched. */
Test(memory_rank, a_word_counted_in_none_then_written_is_found)
{
	json_t *none = search("zebra", 4);
	cr_assert_eq(json_array_size(none), 0);
	json_decref(none);
	static const char *const keys[] = {"z", "c"};
	static const char *const texts[] = {"a zebra", "un caf\xc3\xa9"};
	put(keys, texts, 2);
	const char *queries[] = {"zebra", "zebra quagga", "CAFE"};
	const char *want[] = {"z", "z", "c"};
	for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
		json_t *rows = search(queries[q], 4);
		cr_assert_eq(json_array_size(rows), 1, "%s: %zu rows", queries[q], json_array_size(rows));
		cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "key")), want[q]);
		json_decref(rows);
	}
}
