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
 * A word is counted by an FTS5 MATCH of the quoted word: the same rows as fts5vocab's `doc` for
 * that term (a word of ASCII letters and digits is one token of the index as it is), without
 * fts5vocab's cost of preparing an internal statement on every lookup. A word with other bytes
 * may be folded by the tokenizer (remove_diacritics, case), which fts5vocab's exact term lookup
 * does not do: it is still looked up there, so its count is what it always was.
 * Recall also counts a scope token (the memories of a tenant's namespace) to choose its query's
 * form; it is cached as a word is.
 * The cache holds sets of two entries chosen by the word's hash; a new count replaces an empty or
 * expired entry of its set, else the one of fewer rows, so a rare word never pushes out a count
 * that is dear to read again (with one entry per hash, a scope token's count, which reads the
 * scope's whole row list, was pushed out by rare words and read again every few recalls).
 * The cache is keyed by word and cleared when another database is used (tests open several).
 * Thread-safe: one mutex, held only to copy an entry in or out (never while counting).
 */
#include "store/sqlite_memory_terms.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/str.h"

#define TERMS_CACHE	    4096   /* entries: sets of two, chosen by the word's hash */
#define TERMS_TTL_MS	    60000  /* a count is read again after this */
#define TERMS_COMMON_TTL_MS 600000 /* ... or this for a word sure to be still common */
#define TERMS_PATH_MAX	    4200   /* the database's file name kept to tell databases apart */

struct term_entry {
	char term[TERMS_KEY_MAX]; /* the word, "" = empty slot */
	int64_t rows;		  /* memories holding it */
	int64_t total;		  /* memories in the index when it was counted */
	int64_t expires_ms;	  /* when to count again */
};

static struct term_entry cache[TERMS_CACHE];
static char cache_db[TERMS_PATH_MAX]; /* the database the entries are of */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* Whether e answers for term now, the index holding total memories. */
static bool entry_fresh(const struct term_entry *e, const char *term, int64_t total, int64_t now)
{
	if (e->expires_ms <= now || strcmp(e->term, term) != 0)
		return false;
	return total <= e->total + e->total / 2 + 64 || e->rows * 4 > total;
}

/* Memories holding term in the index, read now (0 when none or on error). *exact: whether it is
 * the count of the rows a MATCH of the quoted term finds in c's read transaction (an ASCII term
 * counted without error; a term of other bytes is counted by its exact token, not as a MATCH
 * folds it). */
static int64_t term_count(struct dbconn *c, const char *term, bool *exact)
{
	bool ascii = true;
	*exact = false;
	for (const unsigned char *p = (const unsigned char *)term; *p && ascii; p++)
		ascii = *p < 0x80;
	sqlite3_stmt *s = dbconn_stmt(c, ascii ? "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?"
					       : "SELECT doc FROM memories_vocab WHERE term = ?");
	if (!s)
		return 0;
	char quoted[TERMS_KEY_MAX + 2]; /* (bound, not copied: lives until the reset) */
	snprintf(quoted, sizeof(quoted), "\"%s\"", term);
	bind_text(s, 1, ascii ? quoted : term);
	int rc = sqlite3_step(s);
	int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	*exact = ascii && rc == SQLITE_ROW;
	sqlite3_reset(s);
	return n;
}

/* The entry of term among the two of its set, or NULL; cache_lock held. */
static struct term_entry *entry_find(size_t set, const char *term)
{
	for (size_t i = 0; i < 2; i++)
		if (strcmp(cache[set + i].term, term) == 0)
			return &cache[set + i];
	return NULL;
}

/* Where a new count of term goes in its set: its own entry, else an empty or expired one, else
 * the one of fewer rows (the cheaper to count again: a common word's or a scope token's count
 * reads a long row list, so a rare word does not push it out). cache_lock held. */
static struct term_entry *entry_slot(size_t set, const char *term, int64_t now)
{
	struct term_entry *e = entry_find(set, term), *a = &cache[set], *b = &cache[set + 1];
	if (e)
		return e;
	if (!a->term[0] || a->expires_ms <= now)
		return a;
	if (!b->term[0] || b->expires_ms <= now)
		return b;
	return a->rows <= b->rows ? a : b;
}

int64_t store_sql_memory_term_rows(struct dbconn *c, const char *term, int64_t total, int64_t now)
{
	bool exact;
	return store_sql_memory_term_rows_exact(c, term, total, now, &exact);
}

int64_t store_sql_memory_term_rows_exact(struct dbconn *c, const char *term, int64_t total, int64_t now, bool *exact)
{
	size_t len = strlen(term);
	*exact = false;
	if (len >= TERMS_KEY_MAX)
		return term_count(c, term, exact); /* (never so: recall keeps words and scope tokens shorter) */
	const char *db = sqlite3_db_filename(c->db, "main");
	db = db ? db : "";
	size_t set = str_hash(term) % (TERMS_CACHE / 2) * 2;
	pthread_mutex_lock(&cache_lock);
	if (strcmp(cache_db, db) != 0) { /* another database: nothing cached holds for it */
		memset(cache, 0, sizeof(cache));
		snprintf(cache_db, sizeof(cache_db), "%s", db);
	}
	const struct term_entry *e = entry_find(set, term);
	bool fresh = e && entry_fresh(e, term, total, now);
	int64_t rows = e ? e->rows : 0;
	pthread_mutex_unlock(&cache_lock);
	if (fresh)
		return rows;
	rows = term_count(c, term, exact);
	pthread_mutex_lock(&cache_lock);
	if (strcmp(cache_db, db) == 0) {
		struct term_entry *w = entry_slot(set, term, now);
		memcpy(w->term, term, len + 1);
		w->rows = rows;
		w->total = total;
		w->expires_ms = now + (rows * 4 > total ? TERMS_COMMON_TTL_MS : TERMS_TTL_MS);
	}
	pthread_mutex_unlock(&cache_lock);
	return rows;
}

void store_sql_memory_terms_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	memset(cache, 0, sizeof(cache));
	cache_db[0] = '\0';
	pthread_mutex_unlock(&cache_lock);
}
