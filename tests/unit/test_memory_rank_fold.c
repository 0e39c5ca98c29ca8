/*
 * test_memory_rank_fold.c - recall's cut (soma_rank, src/store/sqlite_memory_search.c) when
 * several words of the query are one token to the tokenizer.
 *
 * DESIGN: recall keeps words apart by their bytes (only ASCII is lower-cased), while the
 * index's tokenizer (unicode61 remove_diacritics 2) folds case and accents: "cafe", "café" and
 * "cafè" are three phrases of the MATCH that all hit the one token "cafe". A row then has more
 * hits than tokens, so its hit count is no lower bound of its length; the cut must not use it as
 * one, or a short row, the best, is left out behind a longer, newer one.
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

TestSuite(memory_rank_fold, .init = setup, .fini = teardown, .timeout = 60);

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

static json_t *search(const char *query, int top_k)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_SEARCH, "acme");
	op->row = json_pack("{s:s, s:s, s:i}", "query", query, "namespace", "wm", "top_k", top_k);
	cr_assert_eq(store_memory_search_here(st, op), SOMA_OK, "query %s", query);
	json_t *rows = json_incref(op->rows);
	store_op_free(op);
	return rows;
}

Test(memory_rank_fold, words_one_token_apart_do_not_cut_the_best_row)
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
