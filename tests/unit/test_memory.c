/*
 * test_memory.c - the memory outbox and the built-in memory (src/store/sqlite_memory.c) on a real
 * database, and the one rule of the memory state with its circuit breaker (src/memory/memory.c).
 *
 * DESIGN: store ops run on the store's threads (store_op_wait); outbox rows are inspected through
 * the ops themselves (CLAIM, LIST) and a read-only connection (db_query_int). The state tests
 * load the configuration with --set values (no environment) and drive memory_note_* directly,
 * as the relay and the workers do.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "helpers.h"
#include "memory/memory_int.h"
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
	store_memory_search_here_close(); /* this thread's recall connection (the test thread does not exit) */
	store_test_close(st, dir);
}

TestSuite(memory, .init = setup, .fini = teardown, .timeout = 60);

static enum soma_err run(struct store_op *op)
{
	return store_op_wait(st, op);
}

static void remember(const char *tenant, const char *key, const char *session, const char *content)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_REMEMBER, tenant);
	op->row = json_pack("{s:s, s:s, s:s, s:{s:s}}", "key", key, "namespace", "wm", "session_id", session, "value",
			    "content", content);
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
}

/* Claims up to limit rows; returns their keys joined by ',' into out. */
static size_t claim(int64_t limit, bool reclaim, char *out, size_t cap, int64_t *reclaimed)
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_CLAIM, "");
	op->limit = limit;
	op->flag = reclaim;
	cr_assert_eq(run(op), SOMA_OK);
	size_t n = json_array_size(op->rows), len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "," : "",
					json_string_value(json_object_get(json_array_get(op->rows, i), "key")));
	if (reclaimed)
		*reclaimed = op->seq;
	store_op_free(op);
	return n;
}

static int64_t row_id(const char *key)
{
	return db_query_int(dir, "SELECT id FROM memory_outbox WHERE key = ?", key);
}

static void settle(const char *key, const char *result, int64_t delay_ms)
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_SETTLE, "");
	op->row = json_pack("[{s:I, s:s, s:s, s:I}]", "id", (json_int_t)row_id(key), "result", result, "error", "boom",
			    "delay_ms", (json_int_t)delay_ms);
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
}

/* The events every memory test writes, as acme in session s1: a user message "remember the
 * otters" (ev-user), a cancelled and a completed reply, a message of "evil" on acme's session
 * (fails: not found), then remember k1 twice (first_text, then "b"). Each test checks its sink. */
static void write_memory_candidates(const char *first_text)
{
	struct store_op *op = store_op_new(STORE_OP_MESSAGE, "acme");
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	op->event = json_pack("{s:s, s:s, s:s, s:s}", "event_id", "ev-user", "type", "user", "role", "user", "message",
			      "remember the otters");
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
	const char *status[] = {"cancelled", "completed"};
	for (int i = 0; i < 2; i++) {
		op = store_op_new(STORE_OP_EVENT_APPEND, "acme");
		snprintf(op->session_id, sizeof(op->session_id), "s1");
		op->event = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "event_id", status[i], "type", "assistant.final",
				      "role", "assistant", "message", "ok", "metadata", "status", status[i]);
		cr_assert_eq(run(op), SOMA_OK);
		store_op_free(op);
	}
	op = store_op_new(STORE_OP_MESSAGE, "evil");
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	op->event = json_pack("{s:s, s:s, s:s}", "event_id", "ev-evil", "type", "user", "message", "x");
	cr_assert_eq(run(op), SOMA_ERR_NOT_FOUND);
	store_op_free(op);
	remember("acme", "k1", "", first_text);
	remember("acme", "k1", "", "b");
}

/* a cancelled reply is not a memory, a completed one is; a failed event leaves no outbox row
 * behind; the same key twice (a replayed request) is one row */
Test(memory, events_write_their_outbox_row_in_the_same_transaction)
{
	write_memory_candidates("a");
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "ev-user"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "cancelled"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "completed"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "ev-evil"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "k1"), 1);
}

Test(memory, claim_keeps_the_order_of_each_session)
{
	remember("acme", "a1", "sa", "one");
	remember("acme", "a2", "sa", "two");
	remember("acme", "b1", "sb", "three");
	char keys[256];
	cr_assert_eq(claim(10, false, keys, sizeof(keys), NULL), 3);
	cr_assert_str_eq(keys, "a1,a2,b1");
	cr_assert_eq(claim(10, false, keys, sizeof(keys), NULL), 0, "sending rows are not claimed twice");
	settle("a1", "retry", 60000); /* a1 waits a minute: a2 must wait behind it */
	settle("a2", "release", 0);
	settle("b1", "delivered", 0);
	cr_assert_eq(claim(10, false, keys, sizeof(keys), NULL), 0, "a2 was claimed before a1: %s", keys);
	cr_assert_eq(db_query_int(dir, "SELECT attempts FROM memory_outbox WHERE key = ?", "a1"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key = ?", "b1"), 0);
}

Test(memory, failed_rows_admin_retry_and_drop_and_reclaim)
{
	remember("acme", "p1", "sp", "poison");
	remember("acme", "p2", "sp", "fine");
	char keys[256];
	cr_assert_eq(claim(1, false, keys, sizeof(keys), NULL), 1);
	settle("p1", "failed", 0);
	cr_assert_eq(claim(10, false, keys, sizeof(keys), NULL), 1, "a failed row blocked its session");
	cr_assert_str_eq(keys, "p2");
	/* p2 is sending: a new start takes it back */
	int64_t reclaimed = 0;
	cr_assert_eq(claim(0, true, keys, sizeof(keys), &reclaimed), 0, "limit 0 only takes rows back");
	cr_assert_eq(reclaimed, 1);
	cr_assert_eq(claim(10, false, keys, sizeof(keys), NULL), 1);
	cr_assert_str_eq(keys, "p2");
	settle("p2", "delivered", 0);
	/* retry and drop: the tenant's own rows, or any with all_tenants */
	char id[32];
	snprintf(id, sizeof(id), "%lld", (long long)row_id("p1"));
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_RETRY, "other");
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	cr_assert_eq(run(op), SOMA_ERR_NOT_FOUND);
	store_op_free(op);
	op = store_op_new(STORE_OP_OUTBOX_RETRY, "other");
	op->all_tenants = true;
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT attempts FROM memory_outbox WHERE key = ?", "p1"), 0);
	op = store_op_new(STORE_OP_OUTBOX_RETRY, "acme"); /* pending now: not a failed row */
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	cr_assert_eq(run(op), SOMA_ERR_NOT_FOUND);
	store_op_free(op);
	op = store_op_new(STORE_OP_OUTBOX_DROP, "acme");
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
	op = store_op_new(STORE_OP_OUTBOX_DROP, "acme");
	snprintf(op->task_id, sizeof(op->task_id), "not-a-number");
	cr_assert_eq(run(op), SOMA_ERR_NOT_FOUND);
	store_op_free(op);
	op = store_op_new(STORE_OP_OUTBOX_STATS, "");
	op->all_tenants = true;
	cr_assert_eq(run(op), SOMA_OK);
	cr_assert_eq(json_integer_value(json_object_get(op->session, "pending")), 0);
	cr_assert_eq(json_integer_value(json_object_get(op->session, "failed")), 0);
	store_op_free(op);
}

static void put(const char *tenant, const char *key, const char *content)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	op->row = json_pack("[{s:s, s:s, s:s, s:s, s:{s:s}}]", "key", key, "tenant", tenant, "namespace", "wm",
			    "session_id", "", "payload", "content", content);
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
}

static json_t *search(const char *tenant, const char *query, int top_k)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_SEARCH, tenant);
	op->row = json_pack("{s:s, s:s, s:i}", "query", query, "namespace", "wm", "top_k", top_k);
	cr_assert_eq(run(op), SOMA_OK, "query %s", query);
	json_t *rows = json_incref(op->rows);
	store_op_free(op);
	return rows;
}

Test(memory, builtin_search_is_ranked_and_tenant_scoped)
{
	put("acme", "k1", "the otters of monterey bay hold hands while sleeping");
	put("acme", "k2", "monterey is in california");
	put("acme", "k2", "a replay of k2 is ignored");
	put("beta", "k3", "beta otters sleeping secret");
	json_t *r = search("acme", "sleeping otters", 5);
	cr_assert_eq(json_array_size(r), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(r, 0), "key")), "k1");
	json_decref(r);
	r = search("acme", "Monterey otters", 5);
	cr_assert_eq(json_array_size(r), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(r, 0), "key")), "k1", "more words match");
	json_decref(r);
	r = search("beta", "otters", 5);
	cr_assert_eq(json_array_size(r), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(r, 0), "key")), "k3");
	json_decref(r);
	/* FTS5 syntax in the user's text is only words; nothing in it is an operator */
	const char *odd[] = {"\"unbalanced", "otters AND (", "NEAR(otters", "*", "", "-- ;drop", "ötter ✓"};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		json_decref(search("acme", odd[i], 3));
	r = search("acme", "a replay", 5);
	cr_assert_eq(json_array_size(r), 0, "the replayed value replaced the first");
	json_decref(r);
}

/* A recall takes one of two forms by the words' counts (sqlite_memory_search.c): rare words are
 * matched in the whole index and the rows checked for the scope; a word with more rows than
 * SCOPELESS_ROWS (2,000) goes through the scope token. Both find the scope's rows only. */
Test(memory, builtin_search_is_scoped_in_both_forms)
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	op->row = json_array();
	char key[32];
	for (int i = 0; i < 2100; i++) {
		snprintf(key, sizeof(key), "b%d", i);
		json_array_append_new(op->row, json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "key", key, "tenant", "beta",
							 "namespace", "wm", "session_id", "", "payload", "content",
							 i % 700 ? "otters everywhere" : "otters and kelp"));
	}
	cr_assert_eq(run(op), SOMA_OK);
	store_op_free(op);
	put("acme", "a1", "otters in the kelp");
	put("acme", "a2", "more otters");
	json_t *r = search("acme", "otters", 5); /* 2,102 rows: through the scope token */
	cr_assert_eq(json_array_size(r), 2);
	for (size_t i = 0; i < 2; i++)
		cr_assert_eq(json_string_value(json_object_get(json_array_get(r, i), "key"))[0], 'a');
	json_decref(r);
	r = search("acme", "kelp", 5); /* 4 rows in all: matched everywhere, then the scope's kept */
	cr_assert_eq(json_array_size(r), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(r, 0), "key")), "a1");
	json_decref(r);
	r = search("beta", "kelp", 5);
	cr_assert_eq(json_array_size(r), 3, "beta's three kelp rows (b0, b700, b1400)");
	json_decref(r);
}

/* The recall's rank (soma_rank, sqlite_memory_search.c) is FTS5's bm25() with column weights
 * (0, 1), given the words' document counts instead of counting them on every recall: with exact
 * counts both give the same score for every row. */
Test(memory, soma_rank_scores_as_bm25_does)
{
	const char *texts[] = {"otters sleep", "sea otters sleep holding hands in the kelp", "otters otters otters",
			       "kelp forests", "the kelp and the otters and the sea",	     "nothing to see"};
	char key[16];
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		snprintf(key, sizeof(key), "k%zu", i);
		put(i % 2 ? "acme" : "beta", key, texts[i]);
	}
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", dir);
	sqlite3 *db;
	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(store_sql_memory_rank_register(db), SOMA_OK);
	double counts[2] = {(double)db_query_int(dir, "SELECT doc FROM memories_vocab WHERE term = ?", "kelp"),
			    (double)db_query_int(dir, "SELECT doc FROM memories_vocab WHERE term = ?", "otters")};
	cr_assert_eq(counts[0], 3);
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_prepare_v2(db,
					"SELECT rowid, bm25(memories_fts, 0.0, 1.0), soma_rank(memories_fts, ?2) FROM "
					"memories_fts WHERE memories_fts MATCH ?1",
					-1, &s, NULL),
		     SQLITE_OK, "%s", sqlite3_errmsg(db));
	sqlite3_bind_text(s, 1, "scope : \"s61636d65n776d\" AND content : (\"kelp\" OR \"otters\")", -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, counts, sizeof(counts), SQLITE_STATIC);
	int rows = 0;
	while (sqlite3_step(s) == SQLITE_ROW) {
		double bm25 = sqlite3_column_double(s, 1), ours = sqlite3_column_double(s, 2);
		cr_assert(bm25 < 0 && ours < 0, "row %lld: a match scores", (long long)sqlite3_column_int64(s, 0));
		cr_assert(bm25 - ours < 1e-9 && ours - bm25 < 1e-9, "row %lld: bm25 %.12f, soma_rank %.12f",
			  (long long)sqlite3_column_int64(s, 0), bm25, ours);
		rows++;
	}
	cr_assert_eq(rows, 2, "acme's two rows with kelp or otters (k1, k3)");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

static void load_config(const char *driver)
{
	static char *const no_env[] = {NULL};
	char d[64];
	snprintf(d, sizeof(d), "memory.driver=%s", driver);
	const char *sets[] = {d, "memory.somabrain_url=http://127.0.0.1:1", "memory.breaker_failures=2",
			      "memory.breaker_open_ms=200"};
	struct cfg_load_opts o = {.sets = sets, .nsets = 4, .env = no_env};
	struct cfg_errors errs = {0};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
	char why[256];
	cr_assert_eq(memory_init(why, sizeof(why)), SOMA_OK, "%s", why);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

Test(memory, one_rule_and_the_breaker)
{
	load_config("somabrain");
	struct memory_status s;
	memory_snapshot(&s);
	cr_assert_eq(s.probed, false, "no probe yet: unknown");
	memory_note_health(MEMORY_CALL_OK, "ok");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_NORMAL);
	unsigned gen = s.generation;
	memory_note_health(MEMORY_CALL_NOT_READY, "not_ready");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_DEGRADED);
	cr_assert_str_eq(s.reason, "not_ready");
	cr_assert_neq(memory_generation(), gen);
	memory_note_health(MEMORY_CALL_UNAVAILABLE, "health_unreachable");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_DOWN);
	memory_note_health(MEMORY_CALL_OK, "ok");
	/* two failed calls open the breaker: down, calls fail fast */
	memory_note_call(MEMORY_CALL_UNAVAILABLE, "remember_failure");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_DEGRADED);
	cr_assert_str_eq(s.reason, "remember_failure");
	memory_note_call(MEMORY_CALL_UNAVAILABLE, "remember_failure");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_DOWN);
	cr_assert_str_eq(s.reason, "circuit_open");
	cr_assert_eq(memory_breaker_allows(), false);
	json_t *res = NULL;
	bool degraded = false;
	cr_assert_eq(memory_recall(st, "acme", "", "q", 3, NULL, NULL, NULL, &res, &degraded), SOMA_OK);
	cr_assert_eq(json_array_size(res), 0, "no recall while down");
	cr_assert(degraded);
	json_decref(res);
	/* after the open period one probe goes through; its failure opens the breaker again */
	sleep_ms(250);
	cr_assert_eq(memory_breaker_allows(), true);
	cr_assert_eq(memory_breaker_allows(), false, "only one probe at a time");
	memory_note_call(MEMORY_CALL_UNAVAILABLE, "remember_failure");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_DOWN);
	/* a healthy /health does not close it; a probe call that works does */
	sleep_ms(250);
	memory_note_health(MEMORY_CALL_OK, "ok");
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_DEGRADED);
	cr_assert_str_eq(s.reason, "circuit_half_open");
	cr_assert_eq(memory_breaker_allows(), true);
	memory_note_call(MEMORY_CALL_OK, "");
	sleep_ms(250);
	memory_note_outbox(0, 0, 0);
	memory_snapshot(&s);
	cr_assert_eq(s.state, MEMORY_NORMAL, "state %d (%s)", s.state, s.reason);
	cfg_unload();
}

/* Which failure is a row's own (relay.c spends an attempt for it): a 5xx that opens the
 * breaker, or reopens it as the probe, while /health answers; never a 429 or transport error,
 * nor a failure while the breaker is already open or /health is unreachable. */
Test(memory, a_5xx_that_opens_the_breaker_is_the_calls_own)
{
	load_config("somabrain");
	memory_note_health(MEMORY_CALL_OK, "ok");
	cr_assert_eq(memory_note_call(MEMORY_CALL_SERVER_ERROR, "remember_failure"), false, "closed: no outage");
	cr_assert_eq(memory_note_call(MEMORY_CALL_SERVER_ERROR, "remember_failure"), true, "opened it");
	cr_assert_eq(memory_note_call(MEMORY_CALL_SERVER_ERROR, "remember_failure"), false, "already open");
	sleep_ms(250);
	cr_assert_eq(memory_breaker_allows(), true);
	cr_assert_eq(memory_note_call(MEMORY_CALL_SERVER_ERROR, "remember_failure"), true, "the probe reopened it");
	sleep_ms(250);
	cr_assert_eq(memory_breaker_allows(), true);
	cr_assert_eq(memory_note_call(MEMORY_CALL_UNAVAILABLE, "remember_failure"), false, "a 429 is an outage");
	sleep_ms(250);
	memory_note_health(MEMORY_CALL_UNAVAILABLE, "health_unreachable");
	cr_assert_eq(memory_breaker_allows(), true);
	cr_assert_eq(memory_note_call(MEMORY_CALL_SERVER_ERROR, "remember_failure"), false, "/health is down too");
	cfg_unload();
}

Test(memory, builtin_recall_through_the_interface)
{
	load_config("builtin");
	put("acme", "k1", "penguins live in antarctica");
	json_t *res = NULL;
	bool degraded = true;
	cr_assert_eq(memory_recall(st, "acme", "", "where do penguins live", 3, NULL, NULL, NULL, &res, &degraded),
		     SOMA_OK);
	cr_assert_eq(json_array_size(res), 1);
	cr_assert_eq(degraded, false);
	json_decref(res);
	cr_assert_eq(memory_recall(st, "beta", "", "penguins", 3, NULL, NULL, NULL, &res, &degraded), SOMA_OK);
	cr_assert_eq(json_array_size(res), 0, "another tenant's memory");
	json_decref(res);
	/* the recall ran on this thread's own connection (store_memory_search_here), kept between
	 * recalls: it sees what was committed after it opened, and a recall from another store
	 * (another database file) gets a connection to that one */
	put("acme", "k2", "penguins cannot fly");
	cr_assert_eq(memory_recall(st, "acme", "", "penguins", 3, NULL, NULL, NULL, &res, &degraded), SOMA_OK);
	cr_assert_eq(json_array_size(res), 2, "the kept connection reads the newest commit");
	json_decref(res);
	char dir2[256];
	struct store *st2 = store_test_open(dir2, sizeof(dir2));
	cr_assert_eq(memory_recall(st2, "acme", "", "penguins", 3, NULL, NULL, NULL, &res, &degraded), SOMA_OK);
	cr_assert_eq(json_array_size(res), 0, "another store: its own (empty) memories");
	json_decref(res);
	store_memory_search_here_close();
	store_test_close(st2, dir2);
	cr_assert_eq(memory_recall(st, "acme", "", "penguins", 3, NULL, NULL, NULL, &res, &degraded), SOMA_OK);
	cr_assert_eq(json_array_size(res), 2, "back on the first store");
	json_decref(res);
	cfg_unload();
}

/* memory.driver=builtin: a memory is its memories row, written in its event's transaction (or the
 * remember's), found by a recall at once; the outbox stays empty. */
Test(memory, builtin_writes_the_memory_row_in_the_event_transaction)
{
	load_config("builtin");
	write_memory_candidates("kelp forests");
	const char *q = "SELECT count(*) FROM memories WHERE key = ? AND namespace = 'wm' AND session_id = 's1' AND "
			"tenant = 'acme' AND content = 'remember the otters'";
	cr_assert_eq(db_query_int(dir, q, "ev-user"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ?", "cancelled"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ?", "completed"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ?", "ev-evil"), 0);
	/* a replayed remember is one row, the first one */
	cr_assert_eq(
		db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ? AND content = 'kelp forests'", "k1"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ?", "k1"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memory_outbox WHERE key != ?", ""), 0);
	json_t *res = NULL;
	bool degraded = true;
	cr_assert_eq(memory_recall(st, "acme", "", "otters", 3, NULL, NULL, NULL, &res, &degraded), SOMA_OK);
	cr_assert_eq(json_array_size(res), 1, "the message is found without a relay");
	json_decref(res);
	cfg_unload();
}
