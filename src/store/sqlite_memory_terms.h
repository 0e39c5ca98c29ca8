/*
 * sqlite_memory_terms.h - the built-in memory's word counts (sqlite_memory_terms.c), for recall
 * (sqlite_memory_search.c). SQLite driver internal.
 */
#ifndef SOMA_STORE_SQLITE_MEMORY_TERMS_H
#define SOMA_STORE_SQLITE_MEMORY_TERMS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store_int.h"

#define TERMS_WORD_MAX 64  /* bytes of a word, its NUL included */
#define TERMS_KEY_MAX  192 /* bytes of a term the cache keeps (a word, or a scope token of the index), NUL included */

/* Memories of the index (all tenants) holding term (lower-cased as the tokenizer stores it; a
 * word or a scope token, shorter than TERMS_KEY_MAX),
 * from the process's cache when it still holds, else counted on c now; 0 when none or on error.
 * total: the memories in the index now; now: the wall clock (ms). Any thread. */
int64_t store_sql_memory_term_rows(struct dbconn *c, const char *term, int64_t total, int64_t now);
/* The same, and *exact: whether the count was read now on c (not from the cache), from an ASCII
 * term, without error: then it is the number of rows a MATCH of the quoted term finds in c's
 * current read transaction (recall uses it to skip a search that cannot find anything). */
int64_t store_sql_memory_term_rows_exact(struct dbconn *c, const char *term, int64_t total, int64_t now, bool *exact);
/* Forgets every count (tests). */
void store_sql_memory_terms_clear(void);

#endif
