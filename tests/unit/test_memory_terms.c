/*
 * test_memory_terms.c - the built-in memory's word counts (src/store/sqlite_memory_terms.c): what
 * they count, when a cached count is read again, and that the cache is the process's.
 *
 * DESIGN: memories are written through STORE_OP_MEMORY_PUT on a real store; counts are asked on
 * a connection of the test's own (as a recall's is), with the index's total and the clock given
 * by the test, so the cache's rules are driven without waiting.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/str.h"
#include "helpers.h"
#include "store/sqlite_memory_terms.h"
#include "store/store.h"
#include "store/store_int.h"

static char dir[64];
static struct store *st;
static struct dbconn conn;

static void setup(void)
{
	st = store_test_open(dir, sizeof(dir));
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	cr_assert_eq(dbconn_open(&conn, path, SQLITE_OPEN_NOMUTEX), SOMA_OK);
	store_sql_memory_terms_clear();
}

static void teardown(void)
{
	dbconn_close(&conn);
	store_test_close(st, dir);
}

TestSuite(memory_terms, .init = setup, .fini = teardown, .timeout = 60);

/* n memories of tenant acme holding content, keys prefix0 .. prefix<n-1>. */
static void put_many(const char *prefix, int n, const char *content)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	op->row = json_array();
	char key[64];
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s%d", prefix, i);
		json_array_append_new(op->row,
				      json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "key", key, "tenant", "acme",
						"namespace", "wm", "session_id", "", "payload", "content", content));
	}
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
}

static int64_t rows(const char *term, int64_t total, int64_t now)
{
	int64_t n = store_sql_memory_term_rows(&conn, term, total, now);
	dbconn_release(&conn);
	return n;
}

static int64_t vocab_doc(const char *term)
{
	int64_t n = db_query_int(dir, "SELECT doc FROM memories_vocab WHERE term = ?", term);
	return n < 0 ? 0 : n;
}

/* The count of a word is fts5vocab's `doc` for it (what recall used before), for plain words
 * and for words the tokenizer folds (not in the index as written: 0) or keeps (as written). */
Test(memory_terms, counts_are_the_index_rows_of_the_word)
{
	put_many("a", 3, "Otters sleep in the kelp");
	put_many("b", 2, "kelp forests of the Ötter bay 日本語");
	put_many("c", 1, "nothing here");
	const char *terms[] = {"otters", "kelp", "the", "bay", "zzz", "ötter", "otter", "日本語", "s61636d65n776d"};
	const int64_t want[] = {3, 5, 5, 2, 0, 0, 2, 2, 6};
	for (size_t i = 0; i < sizeof(terms) / sizeof(terms[0]); i++) {
		cr_assert_eq(vocab_doc(terms[i]), want[i], "fts5vocab: %s", terms[i]);
		cr_assert_eq(rows(terms[i], 6, 1000), want[i], "%s", terms[i]);
	}
}

/* A rare word is counted again after the TTL or once the index has grown by half; a common one
 * (in more than a quarter of the memories) is kept while it must still be common. */
Test(memory_terms, a_count_is_read_again_when_it_may_have_changed)
{
	put_many("a", 100, "otters everywhere");
	put_many("k", 10, "kelp");
	cr_assert_eq(rows("otters", 110, 1000), 100);
	cr_assert_eq(rows("kelp", 110, 1000), 10);
	put_many("b", 90, "otters again");
	put_many("l", 20, "kelp"); /* 220 memories: otters 190, kelp 30 */
	cr_assert_eq(rows("kelp", 220, 2000), 10, "the index has not grown by half since (110 + 55 + 64)");
	cr_assert_eq(rows("otters", 220, 2000), 100);
	cr_assert_eq(rows("kelp", 240, 2000), 30, "grown by half: counted again");
	cr_assert_eq(rows("otters", 240, 2000), 100, "100 of 240 is still common: kept");
	cr_assert_eq(rows("otters", 399, 2000), 100, "100 rows can only have grown: still common under 400");
	cr_assert_eq(rows("otters", 400, 2000), 190, "at 400 it may not be: counted again");
	put_many("c", 5, "otters kelp");
	cr_assert_eq(rows("kelp", 240, 1000 + 60000), 30, "a rare word is kept a minute");
	cr_assert_eq(rows("kelp", 240, 2000 + 60000), 35, "then counted again");
	cr_assert_eq(rows("otters", 400, 2000 + 60000), 190, "a common word is kept ten minutes");
	cr_assert_eq(rows("otters", 400, 2000 + 600000), 195, "then counted again");
}

struct other_thread {
	const char *term;
	int64_t got;
};

static void *count_there(void *arg)
{
	struct other_thread *o = arg;
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	struct dbconn c;
	cr_assert_eq(dbconn_open(&c, path, SQLITE_OPEN_NOMUTEX), SOMA_OK);
	o->got = store_sql_memory_term_rows(&c, o->term, 10, 1000);
	dbconn_close(&c);
	return NULL;
}

/* One thread's count serves every thread (each conversation worker counted for itself before). */
Test(memory_terms, the_cache_serves_every_thread)
{
	put_many("a", 2, "otters");
	cr_assert_eq(rows("otters", 10, 1000), 2);
	put_many("b", 2, "otters");
	struct other_thread o = {"otters", -1};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, count_there, &o), 0);
	pthread_join(t, NULL);
	cr_assert_eq(o.got, 2, "the first thread's count, not a new one (4)");
}

/* Counts of another database never answer for this one (tests open several in one process). */
Test(memory_terms, another_database_is_counted_afresh)
{
	put_many("a", 3, "otters");
	cr_assert_eq(rows("otters", 10, 1000), 3);
	char dir2[64];
	struct store *st2 = store_test_open(dir2, sizeof(dir2));
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir2);
	struct dbconn c2;
	cr_assert_eq(dbconn_open(&c2, path, SQLITE_OPEN_NOMUTEX), SOMA_OK);
	cr_assert_eq(store_sql_memory_term_rows(&c2, "otters", 10, 1000), 0);
	dbconn_close(&c2);
	cr_assert_eq(rows("otters", 10, 1000), 3, "and back: this one's own count");
	store_test_close(st2, dir2);
}

/* Words of the cache entry of `of` (str_hash % 4096): of its set now (str_hash % (4096 / 2)), of its
 * one entry before, into out. */
static void same_set(const char *of, char out[][16], int n)
{
	size_t want = str_hash(of) % 4096;
	for (int i = 0, k = 0; k < n; i++) {
		snprintf(out[k], 16, "rare%d", i);
		if (str_hash(out[k]) % 4096 == want)
			k++;
	}
}

/* A count that is dear to read again (a common word's, a scope token's) is not pushed out by rare
 * words of its cache set: the rarer entry of the set goes. */
Test(memory_terms, rare_words_do_not_push_out_a_common_count)
{
	put_many("a", 100, "otters everywhere");
	char rare[2][16];
	same_set("otters", rare, 2);
	cr_assert_eq(rows("otters", 100, 1000), 100);
	put_many("b", 10, "otters again"); /* a fresh count would be 110 */
	cr_assert_eq(rows(rare[0], 100, 1000), 0);
	cr_assert_eq(rows(rare[1], 100, 1000), 0);
	cr_assert_eq(rows(rare[0], 100, 1000), 0);
	cr_assert_eq(rows("otters", 100, 1000), 100, "still cached after %s and %s", rare[0], rare[1]);
}
