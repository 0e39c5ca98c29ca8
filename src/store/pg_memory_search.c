/*
 * pg_memory_search.c - recall in the built-in memory on PostgreSQL (see src/memory/builtin.c, and
 * sqlite_memory_search.c for SQLite's FTS5): full-text search over a tsvector column, scoped to
 * one tenant and namespace, ranked by ts_rank_cd and recency.
 *
 * DESIGN: memories.tsv (migration postgres/0002) is a generated column: to_tsvector('english',
 * content) - stemmed, stop words left out - plus one scope lexeme, 's' || md5 of the tenant and
 * namespace, so one GIN index answers "these words, in this scope" as an intersection of posting
 * lists (the scope plays the part of SQLite's scope token of migration 0007). A recall:
 *   1. takes the first SEARCH_TERMS_MAX words of the user's text (the same word rule as SQLite's
 *      tokenizer: letters, digits, non-ASCII bytes), so its cost is bounded whatever the text;
 *   2. turns them into an OR query on the server: to_tsvector normalizes them exactly as the
 *      stored text was, and its lexemes are joined with | (a memory matching more of the words
 *      ranks higher; one matching any word is found). Text of stop words only gives no query and
 *      no result (never "every memory of the scope");
 *   3. ranks only the newest SEARCH_WINDOW matches of the scope (bounded cost, as on SQLite), by
 *      ts_rank_cd shrunk by age: a memory a month old counts half as much as one of today.
 * The tenant and namespace are checked again on the row itself: the md5 scope only narrows the
 * index scan, isolation never rests on it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/pg_int.h"

#define SEARCH_TERMS_MAX 32   /* words of the user's text searched */
#define SEARCH_WORD_MAX	 64   /* bytes of one word (longer ones are left out, as on SQLite) */
#define SEARCH_TEXT_MAX	 2048 /* bytes of the words joined by spaces */
#define SEARCH_WINDOW	 500  /* newest matches of a scope that recall ranks */

static bool word_byte(unsigned char b)
{
	return b >= 0x80 || (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z');
}

/* The first SEARCH_TERMS_MAX words of text, space-separated, into out; "" when there is none.
 * A word is a run of letters, digits and non-ASCII bytes (so a UTF-8 character is never cut). */
static void search_words(const char *text, char *out, size_t cap)
{
	size_t n = 0;
	int words = 0;
	out[0] = '\0';
	for (const unsigned char *p = (const unsigned char *)text; *p && words < SEARCH_TERMS_MAX;) {
		while (*p && !word_byte(*p))
			p++;
		const unsigned char *w = p;
		while (word_byte(*p))
			p++;
		size_t len = (size_t)(p - w);
		if (!len || len >= SEARCH_WORD_MAX || n + len + 2 > cap)
			continue;
		if (n)
			out[n++] = ' ';
		memcpy(out + n, w, len);
		n += len;
		out[n] = '\0';
		words++;
	}
}

/* $1 words, $2 tenant, $3 namespace, $4 now (ms), $5 top_k, $6 window. The words' lexemes as
 * text ('a' 'b') become the query 'a' | 'b' (the tsvector's text form quotes lexemes as tsquery
 * input does); none -> NULL, which matches nothing. */
static const char *const search_sql =
	"WITH q AS (SELECT CASE WHEN t = '' THEN NULL ELSE t::tsquery END AS words, "
	"('s' || md5(length($2::text)::text || ':' || $2::text || $3::text))::tsquery AS scope "
	"FROM (SELECT replace(strip(to_tsvector('english', $1::text))::text, ''' ''', ''' | ''') AS t) x) "
	"SELECT ts_rank_cd(f.tsv, q.words)::float8 / (1.0::float8 + ($4::bigint - f.created_ms)::float8 / "
	"2592000000.0::float8) AS score, f.payload, f.key FROM q, LATERAL (SELECT m.id, m.tsv, m.created_ms, "
	"m.payload, m.key FROM memories m WHERE q.words IS NOT NULL AND m.tsv @@ (q.scope && q.words) AND "
	"m.tenant = $2 AND m.namespace = $3 ORDER BY m.id DESC LIMIT $6) f ORDER BY score DESC, f.id DESC LIMIT $5";

enum soma_err pg_sql_memory_search(struct pgconn *c, struct store_op *op)
{
	char words[SEARCH_TEXT_MAX];
	const char *ns = json_string_value(json_object_get(op->row, "namespace"));
	const char *query = json_string_value(json_object_get(op->row, "query"));
	ns = ns && ns[0] ? ns : "wm";
	search_words(query ? query : "", words, sizeof(words));
	op->rows = json_array();
	if (!op->rows)
		return SOMA_ERR_NOMEM;
	if (!words[0])
		return SOMA_OK;
	struct pg_params p = {0};
	pg_param_text(&p, words);
	pg_param_text(&p, op->tenant);
	pg_param_text(&p, ns);
	pg_param_int(&p, clock_wall_ms());
	pg_param_int(&p, json_integer_value(json_object_get(op->row, "top_k")));
	pg_param_int(&p, SEARCH_WINDOW);
	enum soma_err err;
	PGresult *r = pg_exec(c, search_sql, &p, &err);
	if (!r)
		return err;
	for (int i = 0; i < PQntuples(r); i++) {
		json_t *payload = json_loads(pg_text(r, i, 1), JSON_DECODE_ANY, NULL);
		const char *rank = pg_text(r, i, 0);
		double score = rank ? strtod(rank, NULL) : 0.0;
		json_array_append_new(op->rows,
				      json_pack("{s:f, s:o, s:s, s:s}", "score", isfinite(score) ? score : 0.0,
						"payload", payload ? payload : json_object(), "source", "builtin",
						"key", pg_text(r, i, 2)));
	}
	PQclear(r);
	return SOMA_OK;
}
