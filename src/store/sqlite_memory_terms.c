/*
 * sqlite_memory_terms.c - how many memories hold a word, for recall (sqlite_memory_search.c):
 * which words of a query are rare enough to search, and their BM25 idf.
 *
 * DESIGN: a count is the length of the word's row list in the FTS5 index, and reading it costs
 * as much as a search for the word: 0.4 ms for a word in 880 memories, 0.3 s in a million. So
 * answers are kept in one cache for the whole process (before, one per thread: each of the ~17
 * conversation workers counted every common word again, ~45 % of a recall's cost in
 * bench/msg_cost.sh), and a word's count is read again:
 *  - after TERMS_TTL_MS, or sooner when the index has grown by half since it was read (a count
 *    taken while the index was young made every common word look rare), as before;
 *  - but a common word (in more than a quarter of the memories, which recall leaves out) is not
 *    counted again for the growth while it is sure to be still common: memories are never
 *    deleted (no code path deletes one; the index's delete trigger serves a manual fix), so its
 *    rows can only grow, and it stays common while the index is under four times its rows. Its
 *    count is then kept TERMS_COMMON_TTL_MS. (Recall uses a common word's count only when every
 *    word of a query is common; then one word alone is searched, and its idf scales every row's
 *    score alike, so the order of the results does not depend on it.)
 * The words of a recall that are not cached are counted by one FTS5 MATCH of them all
 * ("a" OR "b" ...; a single word: count(*) of its MATCH), each row saying which of them it holds
 * (soma_hits): the same rows as fts5vocab's `doc` for each (a word of ASCII letters and digits is
 * one token of the index as it is, and a MATCH without a column filter looks in every column),
 * without fts5vocab's cost of preparing an internal statement on every lookup, and one query
 * instead of one per word. A word with other bytes may be folded by the tokenizer
 * (remove_diacritics, case), which fts5vocab's exact term lookup does not do: it is still looked
 * up there, so its count is what it always was.
 * The cache is keyed by word and cleared when another database is used (tests open several).
 * Thread-safe: one mutex, held only to copy an entry in or out (never while counting).
 */
#include "store/sqlite_memory_terms.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define TERMS_CACHE	    4096   /* entries (direct-mapped by the word's hash) */
#define TERMS_TTL_MS	    60000  /* a count is read again after this */
#define TERMS_COMMON_TTL_MS 600000 /* ... or this for a word sure to be still common */
#define TERMS_PATH_MAX	    4200   /* the database's file name kept to tell databases apart */

struct term_entry {
	char term[TERMS_WORD_MAX]; /* the word, "" = empty slot */
	int64_t rows;		   /* memories holding it */
	int64_t total;		   /* memories in the index when it was counted */
	int64_t expires_ms;	   /* when to count again */
};

static struct term_entry cache[TERMS_CACHE];
static char cache_db[TERMS_PATH_MAX]; /* the database the entries are of */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t term_hash(const char *term)
{
	uint32_t h = 2166136261u;
	for (const char *p = term; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

/* Whether e answers for term now, the index holding total memories. */
static bool entry_fresh(const struct term_entry *e, const char *term, int64_t total, int64_t now)
{
	if (e->expires_ms <= now || strcmp(e->term, term) != 0)
		return false;
	return total <= e->total + e->total / 2 + 64 || e->rows * 4 > total;
}

/* soma_hits(memories_fts): the phrases of the MATCH the row holds, as bits (phrase i: 1 << i). */
static void soma_hits(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx, int nval,
		      sqlite3_value **vals)
{
	(void)nval, (void)vals;
	int n = api->xPhraseCount(fts);
	int64_t bits = 0;
	for (int i = 0; i < n && i < TERMS_BATCH_MAX; i++) {
		Fts5PhraseIter it;
		int col = -1, off = -1;
		if (api->xPhraseFirst(fts, i, &it, &col, &off) == SQLITE_OK && col >= 0)
			bits |= (int64_t)1 << i;
	}
	sqlite3_result_int64(ctx, bits);
}

enum soma_err store_sql_memory_terms_register(sqlite3 *db)
{
	fts5_api *api = NULL;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &s, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	sqlite3_bind_pointer(s, 1, (void *)&api, "fts5_api_ptr", NULL);
	sqlite3_step(s);
	sqlite3_finalize(s);
	if (!api || api->xCreateFunction(api, "soma_hits", NULL, soma_hits, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	return SOMA_OK;
}

/* One statement's single integer answer for the text arg; 0 on error. */
static int64_t count_one(struct dbconn *c, const char *sql, const char *arg)
{
	sqlite3_stmt *s = dbconn_stmt(c, sql);
	if (!s)
		return 0;
	bind_text(s, 1, arg);
	int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	sqlite3_reset(s);
	return n;
}

/* rows[i] for the words of want (bits of terms' indexes), read from the index now: a word with a
 * byte >= 0x80 by fts5vocab; the others by one MATCH of them all ("a" OR "b" ...: one query, not
 * one each), each row telling which of them it holds (soma_hits); a single one by count(*). */
static void terms_count(struct dbconn *c, const char *const terms[], int n, int64_t want, int64_t rows[])
{
	char query[TERMS_BATCH_MAX * (TERMS_WORD_MAX + 6)];
	int idx[TERMS_BATCH_MAX], nq = 0;
	size_t len = 0;
	for (int i = 0; i < n; i++) {
		if (!(want >> i & 1))
			continue;
		bool ascii = true;
		for (const unsigned char *p = (const unsigned char *)terms[i]; *p && ascii; p++)
			ascii = *p < 0x80;
		rows[i] = 0;
		if (!ascii) {
			rows[i] = count_one(c, "SELECT doc FROM memories_vocab WHERE term = ?", terms[i]);
			continue;
		}
		len += (size_t)snprintf(query + len, sizeof(query) - len, "%s\"%s\"", nq ? " OR " : "", terms[i]);
		idx[nq++] = i;
	}
	if (nq == 1)
		rows[idx[0]] = count_one(c, "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", query);
	if (nq < 2)
		return;
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT soma_hits(memories_fts) FROM memories_fts WHERE memories_fts MATCH ?");
	if (!s)
		return;
	bind_text(s, 1, query);
	while (sqlite3_step(s) == SQLITE_ROW) {
		int64_t bits = sqlite3_column_int64(s, 0);
		for (int q = 0; q < nq; q++)
			rows[idx[q]] += bits >> q & 1;
	}
	sqlite3_reset(s);
}

void store_sql_memory_terms_rows(struct dbconn *c, const char *const terms[], int n, int64_t total, int64_t now,
				 int64_t rows[])
{
	const char *db = sqlite3_db_filename(c->db, "main");
	db = db ? db : "";
	int64_t missed = 0;
	pthread_mutex_lock(&cache_lock);
	if (strcmp(cache_db, db) != 0) { /* another database: nothing cached holds for it */
		memset(cache, 0, sizeof(cache));
		snprintf(cache_db, sizeof(cache_db), "%s", db);
	}
	for (int i = 0; i < n; i++) {
		const struct term_entry *e = &cache[term_hash(terms[i]) % TERMS_CACHE];
		if (entry_fresh(e, terms[i], total, now))
			rows[i] = e->rows;
		else
			missed |= (int64_t)1 << i;
	}
	pthread_mutex_unlock(&cache_lock);
	if (!missed)
		return;
	terms_count(c, terms, n, missed, rows);
	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < n && strcmp(cache_db, db) == 0; i++) {
		struct term_entry *e = &cache[term_hash(terms[i]) % TERMS_CACHE];
		size_t len = strlen(terms[i]);
		if (!(missed >> i & 1) || len >= sizeof(e->term))
			continue;
		memcpy(e->term, terms[i], len + 1);
		e->rows = rows[i];
		e->total = total;
		e->expires_ms = now + (rows[i] * 4 > total ? TERMS_COMMON_TTL_MS : TERMS_TTL_MS);
	}
	pthread_mutex_unlock(&cache_lock);
}

int64_t store_sql_memory_term_rows(struct dbconn *c, const char *term, int64_t total, int64_t now)
{
	int64_t rows = 0;
	store_sql_memory_terms_rows(c, &term, 1, total, now, &rows);
	return rows;
}

void store_sql_memory_terms_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	memset(cache, 0, sizeof(cache));
	cache_db[0] = '\0';
	pthread_mutex_unlock(&cache_lock);
}
