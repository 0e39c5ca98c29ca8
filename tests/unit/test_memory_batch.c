/*
 * test_memory_batch.c - the built-in memory's rows written at the end of the writer's batch
 * (src/store/sqlite_memory.c, store_sql_memory_flush, called by sqlite_exec.c before COMMIT).
 *
 * DESIGN: ops are submitted together (store_submit) so the writer takes them as one batch, as
 * under load; the assertions hold however the writer groups them: every acknowledged memory is
 * stored and indexed, in the order of its op, a failed op leaves none, a replayed key keeps the
 * first row, and the relay's MEMORY_PUT (inserted at once, not queued) keeps its order too.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>

#include "core/config.h"
#include "helpers.h"
#include "store/store.h"

static char dir[64];
static struct store *st;

static void setup(void)
{
	static char *const no_env[] = {NULL};
	const char *sets[] = {"memory.driver=builtin"};
	struct cfg_load_opts o = {.sets = sets, .nsets = 1, .env = no_env};
	struct cfg_errors errs = {0};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
	st = store_test_open(dir, sizeof(dir));
}

static void teardown(void)
{
	store_test_close(st, dir);
	cfg_unload();
}

TestSuite(memory_batch, .init = setup, .fini = teardown, .timeout = 60);

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int done;
} w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void op_done(struct store_op *op)
{
	(void)op;
	pthread_mutex_lock(&w.lock);
	w.done++;
	pthread_cond_broadcast(&w.cv);
	pthread_mutex_unlock(&w.lock);
}

/* Submits ops[0..n) at once and waits for all of them. */
static void run_together(struct store_op **ops, int n)
{
	w.done = 0;
	for (int i = 0; i < n; i++) {
		ops[i]->done = op_done;
		cr_assert_eq(store_submit(st, ops[i]), SOMA_OK);
	}
	pthread_mutex_lock(&w.lock);
	while (w.done < n)
		pthread_cond_wait(&w.cv, &w.lock);
	pthread_mutex_unlock(&w.lock);
}

static struct store_op *message(const char *tenant, const char *session, const char *id, const char *text)
{
	struct store_op *op = store_op_new(STORE_OP_MESSAGE, tenant);
	snprintf(op->session_id, sizeof(op->session_id), "%s", session);
	op->event = json_pack("{s:s, s:s, s:s, s:s}", "event_id", id, "type", "user", "role", "user", "message", text);
	return op;
}

Test(memory_batch, rows_of_a_batch_are_stored_in_order_and_indexed)
{
	enum { N = 120 };
	struct store_op *ops[N + 3];
	char id[32], text[64];
	ops[0] = message("acme", "s-own", "first", "the first otter");
	ops[0]->task = json_pack("{s:s, s:s, s:s}", "id", "task-1", "queue", "q", "name", "conversation.process");
	run_together(ops, 1);
	cr_assert_eq(ops[0]->err, SOMA_OK);
	store_op_free(ops[0]);
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "m%03d", i);
		snprintf(text, sizeof(text), "otter number %d", i);
		ops[i] = message("acme", i % 2 ? "s-a" : "s-b", id, text);
	}
	ops[N] = message("evil", "s-own", "evil", "otter of another tenant"); /* fails: not its session */
	ops[N + 1] = message("acme", "s-a", "m000", "otter replayed");	      /* its event id is taken */
	/* fails after its memory was queued (its task id is taken): the memory goes with it */
	ops[N + 2] = message("acme", "s-a", "late", "otter with a taken task");
	ops[N + 2]->task = json_pack("{s:s, s:s, s:s}", "id", "task-1", "queue", "q", "name", "conversation.process");
	run_together(ops, N + 3);
	for (int i = 0; i < N; i++)
		cr_assert_eq(ops[i]->err, SOMA_OK, "op %d", i);
	cr_assert_eq(ops[N]->err, SOMA_ERR_NOT_FOUND);
	cr_assert_neq(ops[N + 1]->err, SOMA_OK);
	cr_assert_eq(ops[N + 2]->err, SOMA_ERR_CONFLICT);
	for (int i = 0; i < N + 3; i++)
		store_op_free(ops[i]);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE tenant = ?", "acme"), N + 1);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ?", "evil"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE content = ?", "otter replayed"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE key = ?", "late"), 0);
	/* in the order of the ops: ids grow with the message number */
	cr_assert_eq(db_query_int(dir,
				  "SELECT count(*) FROM memories a JOIN memories b ON a.key < b.key AND "
				  "a.id > b.id WHERE a.key LIKE ?",
				  "m%"),
		     0);
	/* every row is in the full-text index, once */
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", "otter"), N + 1);
}

Test(memory_batch, a_relay_put_of_many_rows_stores_them_all_first_key_wins)
{
	enum { N = 1500 }; /* more than the batch queue holds (1024): a put is not queued */
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	op->row = json_array();
	char key[32];
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%05d", i);
		json_array_append_new(op->row, json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "key", key, "tenant", "acme",
							 "namespace", "wm", "session_id", "", "payload", "content",
							 "kelp forest"));
	}
	json_array_append_new(op->row,
			      json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "key", "k00000", "tenant", "acme", "namespace",
					"wm", "session_id", "", "payload", "content", "replayed"));
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE tenant = ?", "acme"), N);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories WHERE content = ?", "replayed"), 0);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", "kelp"), N);
}
