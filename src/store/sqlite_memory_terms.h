/*
 * sqlite_memory_terms.h - the built-in memory's word counts (sqlite_memory_terms.c), for recall
 * (sqlite_memory_search.c). SQLite driver internal.
 */
#ifndef SOMA_STORE_SQLITE_MEMORY_TERMS_H
#define SOMA_STORE_SQLITE_MEMORY_TERMS_H

#include <stdint.h>

#include "store/store_int.h"

#define TERMS_WORD_MAX	64 /* bytes of a word, its NUL included */
#define TERMS_BATCH_MAX 32 /* words counted at once */

/* Memories of the index (all tenants) holding term (lower-cased as the tokenizer stores it),
 * from the process's cache when it still holds, else counted on c now; 0 when none or on error.
 * total: the memories in the index now; now: the wall clock (ms). Any thread. */
int64_t store_sql_memory_term_rows(struct dbconn *c, const char *term, int64_t total, int64_t now);
/* The same for terms[0 .. n) (n <= TERMS_BATCH_MAX, each shorter than TERMS_WORD_MAX, borrowed)
 * into rows[0 .. n): the words not cached are counted together, in one statement. */
void store_sql_memory_terms_rows(struct dbconn *c, const char *const terms[], int n, int64_t total, int64_t now,
				 int64_t rows[]);
/* Registers soma_hits, the FTS5 function the counting of several words uses, on db. */
enum soma_err store_sql_memory_terms_register(sqlite3 *db);
/* Forgets every count (tests). */
void store_sql_memory_terms_clear(void);

#endif
