/*
 * sqlite_memory_search.c - recall in the built-in memory (see src/memory/builtin.c): SQLite FTS5
 * over the memories table, scoped to one tenant and namespace by an indexed scope token
 * (migration 0007), ranked by bm25 and recency.
 *
 * DESIGN: a recall's cost is the length of the row lists of its words, which grow with every
 * memory written. So common words are left out (found in more than a quarter of all memories;
 * their counts come from sqlite_memory_terms.c, cached for the process), at most
 * SEARCH_WORDS_USED of the rarest are searched, and only the newest SEARCH_WINDOW matches of the
 * scope are ranked.
 * The rank is BM25 (k1 1.2, b 0.75, as FTS5's bm25()), computed by our own auxiliary function
 * soma_rank: FTS5's bm25() finds each phrase's document count by running the phrase over the
 * whole index on its first row, and the scope token is in every memory of the tenant, so every
 * recall read all of them (2.8 ms at 66,000 memories, against 0.4 ms without it). soma_rank is
 * given the words' counts, which fts_words has already looked up, and leaves the scope phrase
 * (weight 0 in bm25() too) out. It also applies the recency factor and leaves out (NULL) a row
 * that cannot reach the top_k, so that row's length is never read, and only the top_k rows'
 * payloads are read afterwards (search_result). The scope token stays out of the MATCH whenever
 * checking the tenant on each row reads few rows (scoped_cheaper), as for a single tenant.
 * What still grows with the index is FTS5's work per segment (a term's seek in every segment,
 * for each word searched and each word counted): bench/recall_cost.sh measures it.
 * A recall runs on the caller's thread, on a connection of its own (store_memory_search_here), in
 * one read transaction: each statement run alone began its own, and when the index had been
 * written meanwhile (always, on a chat's path) SQLite dropped the connection's page cache at
 * each, so the pages of the index were read again by the count, the search and the payloads.
 * Within that transaction a word just counted in no memory is known to match nothing: when every
 * word searched is such a word (a query of new words), the search is not run.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json_read.h"
#include "store/sqlite_memory_terms.h"
#include "store/store_int.h"

#define SEARCH_QUERY_MAX  2048		      /* bytes of FTS5 query built from the user's text */
#define SEARCH_TERMS_MAX  32		      /* words of it */
#define SEARCH_WINDOW	  500		      /* newest matches of a scope that recall ranks (bounds its cost) */
#define SEARCH_WORDS_USED 8		      /* rarest words of the query that are searched */
#define SCOPELESS_ROWS	  (4 * SEARCH_WINDOW) /* rows of the words the scopeless form may read (below) */

/* -- soma_rank(memories_fts, counts, first [, created_ms, now_ms, k]): BM25 of the row --
 * counts is a blob of doubles, one per content phrase of the MATCH, which start at phrase
 * `first` (1 when phrase 0 is the scope token, which never scores; else 0). Same formula as FTS5's bm25() with column
 * weights (0, 1): idf = ln((N - n + 0.5) / (n + 0.5)) (1e-6 when not positive), tf = hits in the content column, D =
 * the row's tokens in all columns, avgdl = all tokens / N. With two arguments it returns -score (smaller =
 * better), as bm25() does. With five it returns recall's score, score / (1 + age / 30 days), age = now_ms -
 * created_ms (the expression recall used in SQL before, same operations, so the same double), and NULL for a row
 * that cannot be among the k best: the row's length D (a lookup of FTS5's docsize table per row, the dearest part
 * of ranking it) is read only when the row's score with the smallest length it can have (the offsets its hits cover)
 * reaches the k-th best score of the rows ranked so far. Every operation of the score is monotonic in D, so that bound
 * is never below the row's exact score: a row left out scores strictly less than k others. */
#define RANK_K1	      1.2
#define RANK_B	      0.75
#define RANK_TOP_MAX  64	   /* k up to this is pruned by (recall asks recall_top_k + 1, at most 51) */
#define RANK_MONTH_MS 2592000000.0 /* the age at which a memory's score is halved */

/* The index's row count and average row length, read once per query (each read is a lookup of
 * FTS5's averages record), and each content phrase's idf from them (a log per phrase, not per
 * phrase and row), and the k best scores so far: the query's aux data. NULL on error. */
struct rank_stats {
	double rows;			   /* N */
	double avgdl;			   /* tokens per row, all columns */
	double idf[SEARCH_WORDS_USED + 1]; /* by phrase (from `first` on) */
	double best[RANK_TOP_MAX];	   /* the k best final scores so far, a min-heap (best[0] the k-th) */
	int nbest;			   /* entries of best */
	sqlite3_int64 last;		   /* the rowid added to best last (a row evaluated twice counts once) */
};

static const struct rank_stats *rank_stats(const Fts5ExtensionApi *api, Fts5Context *fts, const double *counts,
					   int ncounts, int first, int nphrase)
{
	struct rank_stats *rs = api->xGetAuxdata(fts, 0);
	if (rs)
		return rs;
	sqlite3_int64 nrow = 0, total = 0;
	if (api->xRowCount(fts, &nrow) != SQLITE_OK || api->xColumnTotalSize(fts, -1, &total) != SQLITE_OK ||
	    !(rs = calloc(1, sizeof(*rs))))
		return NULL;
	rs->rows = nrow > 0 ? (double)nrow : 1.0;
	rs->avgdl = total > 0 ? (double)total / rs->rows : 1.0;
	for (int p = first; p < nphrase; p++) {
		double hits = p - first < ncounts && counts ? counts[p - first] : 0.0;
		double idf = log((rs->rows - hits + 0.5) / (hits + 0.5));
		rs->idf[p] = idf > 0 ? idf : 1e-6;
	}
	if (api->xSetAuxdata(fts, rs, free) != SQLITE_OK)
		return NULL; /* (FTS5 has freed it) */
	return rs;
}

/* BM25 of a row of ntok tokens with freq[p] content hits of each phrase. */
static double bm25(const struct rank_stats *rs, const double *freq, int first, int nphrase, double ntok)
{
	double score = 0.0;
	for (int p = first; p < nphrase; p++)
		score += rs->idf[p] * (freq[p] * (RANK_K1 + 1.0)) /
			 (freq[p] + RANK_K1 * (1.0 - RANK_B + RANK_B * ntok / rs->avgdl));
	return score;
}

/* Keeps score among the k best of rs (a min-heap of at most k). */
static void best_add(struct rank_stats *rs, int k, double score)
{
	int i;
	if (rs->nbest < k) {
		for (i = rs->nbest++; i > 0 && rs->best[(i - 1) / 2] > score; i = (i - 1) / 2)
			rs->best[i] = rs->best[(i - 1) / 2];
		rs->best[i] = score;
		return;
	}
	if (score <= rs->best[0])
		return;
	for (i = 0;;) { /* the k-th best goes, score sifts down from the top */
		int c = 2 * i + 1;
		if (c >= k)
			break;
		if (c + 1 < k && rs->best[c + 1] < rs->best[c])
			c++;
		if (rs->best[c] >= score)
			break;
		rs->best[i] = rs->best[c];
		i = c;
	}
	rs->best[i] = score;
}

static void soma_rank(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx, int nval,
		      sqlite3_value **vals)
{
	int nphrase = api->xPhraseCount(fts), ninst = 0, ntok = 0;
	const double *counts = nval > 0 ? sqlite3_value_blob(vals[0]) : NULL;
	int ncounts = nval > 0 ? sqlite3_value_bytes(vals[0]) / (int)sizeof(double) : 0;
	int first = nval > 1 ? sqlite3_value_int(vals[1]) : 1; /* first content phrase */
	bool final = nval >= 5;
	double age = final ? (double)(sqlite3_value_int64(vals[3]) - sqlite3_value_int64(vals[2])) / RANK_MONTH_MS : 0;
	int k = final ? sqlite3_value_int(vals[4]) : 0;
	double freq[SEARCH_WORDS_USED + 1] = {0}, hits = 0.0; /* hits: content tokens hit, a lower bound of D */
	int last_off = -1;
	struct rank_stats *rs = NULL;
	if (nphrase > SEARCH_WORDS_USED + 1 || first < 0 || first > 1 ||
	    !(rs = (struct rank_stats *)rank_stats(api, fts, counts, ncounts, first, nphrase)) ||
	    api->xInstCount(fts, &ninst) != SQLITE_OK) {
		sqlite3_result_error(ctx, "soma_rank: cannot read the row's statistics", -1);
		return;
	}
	for (int i = 0; i < ninst; i++) {
		int phrase, col, off;
		if (api->xInst(fts, i, &phrase, &col, &off) != SQLITE_OK || col != 1 || phrase < 0 || phrase >= nphrase)
			continue;
		freq[phrase] += 1.0;
		if (off > last_off) /* phrases folded to one token (café, cafe) hit one offset: counted once */
			hits += 1.0, last_off = off;
	}
	bool prune = final && k > 0 && k <= RANK_TOP_MAX && rs->nbest == k && 1.0 + age > 0.0;
	if (prune && bm25(rs, freq, first, nphrase, hits) / (1.0 + age) < rs->best[0]) {
		sqlite3_result_null(ctx); /* (hits <= the row's tokens: the bound is at least its score) */
		return;
	}
	if (api->xColumnSize(fts, -1, &ntok) != SQLITE_OK) {
		sqlite3_result_error(ctx, "soma_rank: cannot read the row's statistics", -1);
		return;
	}
	double score = bm25(rs, freq, first, nphrase, (double)ntok);
	if (!final) {
		sqlite3_result_double(ctx, -score);
		return;
	}
	score = score / (1.0 + age);
	sqlite3_int64 rowid = api->xRowid(fts);
	if (k > 0 && k <= RANK_TOP_MAX && (rs->nbest == 0 || rowid != rs->last))
		best_add(rs, k, score), rs->last = rowid;
	sqlite3_result_double(ctx, score);
}

enum soma_err store_sql_memory_rank_register(sqlite3 *db)
{
	fts5_api *api = NULL;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &s, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	sqlite3_bind_pointer(s, 1, (void *)&api, "fts5_api_ptr", NULL);
	sqlite3_step(s);
	sqlite3_finalize(s);
	if (!api || api->xCreateFunction(api, "soma_rank", NULL, soma_rank, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	return SOMA_OK;
}

struct word {
	char text[TERMS_WORD_MAX]; /* lower-cased as the tokenizer stores it (ASCII; other bytes as they are) */
	int64_t rows;		   /* rows holding it */
	bool exact;		   /* rows is what a MATCH of it finds in this read transaction */
};

static int by_rows(const void *a, const void *b)
{
	int64_t x = ((const struct word *)a)->rows, y = ((const struct word *)b)->rows;
	return (x > y) - (x < y);
}

/* The words part of an FTS5 query from free text: `content : ("word" OR ...)`. A recall's cost
 * is the length of its words' row lists, so words found in more than a quarter of all memories
 * (the, is, hello: they tell nothing apart) are left out unless nothing else is left, and at most
 * SEARCH_WORDS_USED of the rarest words are kept; counts[i] receives word i's rows, *rows
 * their sum and *total the memories of the index (all scopes). BM25 ranks the rows that match more of them higher.
 * Returns the words kept; 0 (and out empty) when the text has no word. */
static int fts_words(struct dbconn *c, const char *text, char *out, size_t cap, double counts[SEARCH_WORDS_USED],
		     int64_t *rows, int64_t *total_out, bool *none)
{
	struct word words[SEARCH_TERMS_MAX];
	int nw = 0;
	out[0] = '\0';
	for (const unsigned char *p = (const unsigned char *)text; *p && nw < SEARCH_TERMS_MAX;) {
		while (*p && !(*p >= 0x80 || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
			p++;
		const unsigned char *w = p;
		while (*p >= 0x80 || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))
			p++;
		size_t len = (size_t)(p - w);
		if (!len || len >= sizeof(words[0].text))
			continue;
		for (size_t i = 0; i < len; i++)
			words[nw].text[i] = (char)(w[i] < 0x80 && w[i] >= 'A' && w[i] <= 'Z' ? w[i] | 0x20 : w[i]);
		words[nw].text[len] = '\0';
		bool seen = false;
		for (int i = 0; i < nw && !seen; i++)
			seen = strcmp(words[i].text, words[nw].text) == 0;
		if (!seen)
			words[nw++].rows = 0;
	}
	if (!nw)
		return 0;
	sqlite3_stmt *m = dbconn_stmt(c, "SELECT max(id) FROM memories");
	int64_t total = m && sqlite3_step(m) == SQLITE_ROW ? sqlite3_column_int64(m, 0) : 0;
	if (m)
		sqlite3_reset(m);
	*total_out = total;
	int64_t now = clock_wall_ms();
	for (int i = 0; i < nw; i++)
		words[i].rows = store_sql_memory_term_rows_exact(c, words[i].text, total, now, &words[i].exact);
	qsort(words, (size_t)nw, sizeof(words[0]), by_rows);
	int keep = 0;
	while (keep < nw && keep < SEARCH_WORDS_USED && (keep == 0 || words[keep].rows * 4 <= total || total < 64))
		keep++;
	size_t n = (size_t)snprintf(out, cap, "content : (");
	*rows = 0;
	*none = true;
	for (int i = 0; i < keep && n < cap; i++) {
		*none = *none && words[i].exact && words[i].rows == 0;
		n += (size_t)snprintf(out + n, cap - n, "%s\"%s\"", i ? " OR " : "", words[i].text);
		counts[i] = (double)words[i].rows;
		*rows += words[i].rows;
	}
	if (n + 2 > cap) {
		out[0] = '\0'; /* does not fit: no recall rather than a cut query */
		return 0;
	}
	snprintf(out + n, cap - n, ")");
	return keep;
}

/* The scope token "s<hex tenant>n<hex namespace>" (how migration 0007 indexes a tenant's
 * namespace) into out; false when it does not fit. */
static bool scope_token(const char *tenant, const char *ns, char *out, size_t cap)
{
	size_t n = (size_t)snprintf(out, cap, "s");
	for (const unsigned char *p = (const unsigned char *)tenant; *p && n < cap; p++)
		n += (size_t)snprintf(out + n, cap - n, "%02x", *p);
	n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "n");
	for (const unsigned char *p = (const unsigned char *)ns; *p && n < cap; p++)
		n += (size_t)snprintf(out + n, cap - n, "%02x", *p);
	return n < cap;
}

/* `scope : "<scope token>" AND <words>`. Empty when it does not fit. */
static void fts_scoped(const char *tenant, const char *ns, const char *words, char *out, size_t cap)
{
	char token[SEARCH_QUERY_MAX];
	if (!scope_token(tenant, ns, token, sizeof(token)) ||
	    (size_t)snprintf(out, cap, "scope : \"%s\" AND %s", token, words) >= cap)
		out[0] = '\0';
}

/* Whether the scoped form is the cheaper for words of `rows` rows in an index of `total`: the
 * scopeless form reads about SEARCH_WINDOW * total / (the scope's memories) rows of the words
 * (all of them when fewer) before it has its window, so it is the cheaper up to SCOPELESS_ROWS
 * of them, whatever the words' own rows: a scope that holds most of the index (one tenant) never
 * pays the scope token's row list (FTS5 steps through it between the words' rows, and it is one
 * more phrase to seek in every segment: ~0.6M instructions per recall at 10,000 memories). The
 * scope's memories are the count of its token (sqlite_memory_terms.c, cached like a word's). */
static bool scoped_cheaper(struct dbconn *c, const char *tenant, const char *ns, int64_t rows, int64_t total)
{
	char token[TERMS_KEY_MAX];
	if (rows <= SCOPELESS_ROWS)
		return false;
	if (!scope_token(tenant, ns, token, sizeof(token)))
		return true;
	int64_t mine = store_sql_memory_term_rows(c, token, total, clock_wall_ms());
	return mine <= 0 || (double)SEARCH_WINDOW * (double)total > (double)SCOPELESS_ROWS * (double)mine;
}

/* The newest SEARCH_WINDOW matches of the scope, then ranked: soma_rank gives BM25 of the content
 * column shrunk by age (a memory a month old counts half as much as one of today), or NULL for a
 * row that cannot be among the top_k (its length is then not read). Two forms, the same rows and
 * scores, chosen by cost: when the words are rare in the whole index (at most SCOPELESS_ROWS rows,
 * from their counts), their matches are read in rowid order and the tenant and namespace checked
 * on each row until SEARCH_WINDOW of the scope's are found: a few rows. Otherwise the scope token
 * joins the MATCH (the index walks its rowids backwards and stops), whose row list holds every
 * memory of the scope, so it is the dearer form when the words are rare. Either way the tenant and
 * namespace are checked on the row itself (the scope token names them alone: checking them before
 * or after the window keeps the same rows). ?7 = the words' counts, ?8 = soma_rank's first
 * content phrase (the scope token is phrase 0 of the scoped form). Only the top_k rows' payload
 * and key are read (search_payload), not those of every row ranked. */
static const char *const search_ranked =
	"SELECT f.id, f.s FROM (SELECT m.id, soma_rank(memories_fts, ?7, ?8, m.created_ms, ?4, ?5) AS s FROM "
	"memories_fts JOIN memories m ON m.id = memories_fts.rowid WHERE memories_fts MATCH ?1 AND m.tenant = ?2 "
	"AND m.namespace = ?3 ORDER BY memories_fts.rowid DESC LIMIT ?6) f WHERE f.s IS NOT NULL "
	"ORDER BY f.s DESC LIMIT ?5";
static const char *const search_payload = "SELECT payload, key FROM memories WHERE id = ?";

/* The result {score, payload, source, key} of memory id (json_pack: twice the cost); NULL on
 * error or OOM. */
static json_t *search_result(struct dbconn *c, int64_t id, double score)
{
	sqlite3_stmt *s = dbconn_stmt(c, search_payload);
	if (!s)
		return NULL;
	sqlite3_bind_int64(s, 1, id);
	json_t *row = NULL;
	if (sqlite3_step(s) == SQLITE_ROW && (row = json_object())) {
		const char *text = (const char *)sqlite3_column_text(s, 0);
		json_t *payload = json_read(text, (size_t)sqlite3_column_bytes(s, 0), JSON_DECODE_ANY, NULL);
		json_object_set_new_nocheck(row, "score", json_real(isfinite(score) ? score : 0.0));
		json_object_set_new_nocheck(row, "payload", payload ? payload : json_object());
		json_object_set_new_nocheck(row, "source", json_string_nocheck("builtin"));
		json_object_set_new_nocheck(row, "key", json_string((const char *)sqlite3_column_text(s, 1)));
	}
	sqlite3_reset(s);
	return row;
}

enum soma_err store_sql_memory_search(struct dbconn *c, struct store_op *op)
{
	char words[SEARCH_QUERY_MAX], scoped[SEARCH_QUERY_MAX + 128];
	double counts[SEARCH_WORDS_USED];
	int64_t rows = 0, total = 0;
	const char *ns = json_string_value(json_object_get(op->row, "namespace"));
	ns = ns && ns[0] ? ns : "wm";
	bool none = false; /* every word searched was just counted in this transaction: in no memory */
	int nwords = fts_words(c, json_string_value(json_object_get(op->row, "query")) ?: "", words, sizeof(words),
			       counts, &rows, &total, &none);
	op->rows = json_array();
	if (!nwords || (none && !sqlite3_get_autocommit(c->db))) /* (the search would find no row) */
		return SOMA_OK;
	bool scope = scoped_cheaper(c, op->tenant, ns, rows, total);
	if (scope)
		fts_scoped(op->tenant, ns, words, scoped, sizeof(scoped));
	sqlite3_stmt *s = dbconn_stmt(c, search_ranked);
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, scope ? scoped : words);
	bind_text(s, 2, op->tenant);
	bind_text(s, 3, ns);
	sqlite3_bind_int64(s, 6, SEARCH_WINDOW);
	sqlite3_bind_int64(s, 4, clock_wall_ms());
	sqlite3_bind_int64(s, 5, json_integer_value(json_object_get(op->row, "top_k")));
	sqlite3_bind_blob(s, 7, counts, nwords * (int)sizeof(double), SQLITE_TRANSIENT);
	sqlite3_bind_int(s, 8, scope ? 1 : 0);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		json_t *row = search_result(c, sqlite3_column_int64(s, 0), sqlite3_column_double(s, 1));
		if (!row) {
			rc = SQLITE_ERROR;
			break;
		}
		json_array_append_new(op->rows, row);
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* ---- the search on the caller's thread (store_memory_search_here) ----
 * A recall is on the path of every chat reply: run on a reader thread it cost two thread
 * switches (the reader's wake-up, then the caller's), each tens to hundreds of microseconds on a
 * busy two-core machine. The caller's thread keeps its own read connection instead, opened on
 * first use and closed when the thread exits (or by store_memory_search_here_close). */
struct here_conn {
	struct dbconn c;	/* this thread's connection */
	const struct store *st; /* the store it was opened for */
	char path[4200];	/* that store's database file */
};

static pthread_key_t here_key;
static pthread_once_t here_once = PTHREAD_ONCE_INIT;

static void here_free(void *arg)
{
	struct here_conn *h = arg;
	dbconn_close(&h->c);
	free(h);
}

static void here_key_init(void)
{
	(void)pthread_key_create(&here_key, here_free);
}

void store_memory_search_here_close(void)
{
	pthread_once(&here_once, here_key_init);
	struct here_conn *h = pthread_getspecific(here_key);
	if (h)
		here_free(h);
	pthread_setspecific(here_key, NULL);
}

/* This thread's connection to st's database (opened now if needed), NULL when it cannot open. */
static struct dbconn *here_conn(struct store *st)
{
	pthread_once(&here_once, here_key_init);
	struct here_conn *h = pthread_getspecific(here_key);
	if (h && (h->st != st || strcmp(h->path, st->path) != 0)) /* another store since */
		store_memory_search_here_close(), h = NULL;
	if (h)
		return &h->c;
	if (!(h = calloc(1, sizeof(*h))))
		return NULL;
	if (dbconn_open(&h->c, st->path, SQLITE_OPEN_NOMUTEX) != SOMA_OK) {
		here_free(h);
		return NULL;
	}
	h->st = st;
	snprintf(h->path, sizeof(h->path), "%s", st->path);
	if (pthread_setspecific(here_key, h) != 0) {
		here_free(h);
		return NULL;
	}
	return &h->c;
}

enum soma_err store_memory_search_here(struct store *st, struct store_op *op)
{
	bool here = op->kind == STORE_OP_MEMORY_SEARCH && st->drv == &store_sqlite_driver && st->exec_running;
	struct dbconn *c = here ? here_conn(st) : NULL;
	if (!c) /* PostgreSQL (its connections are its lanes'), a stopped store, no connection */
		return store_op_wait(st, op);
	sqlite3_stmt *begin = dbconn_stmt(c, "BEGIN"), *end = NULL;
	bool txn = begin && sqlite3_step(begin) == SQLITE_DONE;
	op->err = store_sql_memory_search(c, op);
	dbconn_release(c); /* (the statements' resets, then the end of the read transaction) */
	if (txn && (!(end = dbconn_stmt(c, "COMMIT")) || sqlite3_step(end) != SQLITE_DONE))
		(void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	dbconn_release(c); /* no WAL snapshot stays pinned */
	return op->err;
}
