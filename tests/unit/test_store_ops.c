/*
 * test_store_ops.c - the asynchronous store ops (src/store/exec.c, sqlite_chat.c,
 * sqlite_tasks.c) on a real database in a temporary data directory.
 *
 * DESIGN: ops run on the store's writer and reader threads (store_exec_start with 2 readers);
 * the test thread waits with store_op_wait, or submits from many threads with done callbacks for
 * the group-commit test. Task state the ops do not return is read with a separate read-only
 * SQLite connection opened per query (sql_int), so the check never shares the store's snapshot.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "helpers.h"
#include "store/store.h"

static char dir[64];
static struct store *st;
static int next_event;

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void setup(void)
{
	st = store_test_open(dir, sizeof(dir));
}

static void teardown(void)
{
	store_test_close(st, dir);
}

TestSuite(store_ops, .init = setup, .fini = teardown, .timeout = 60);

/* First column of the first row of sql (one text parameter) as an integer; -1 when no row. */
static int64_t sql_int(const char *sql, const char *arg)
{
	return db_query_int(dir, sql, arg);
}

static struct store_op *op_new(enum store_op_kind kind, const char *tenant, const char *session)
{
	struct store_op *op = store_op_new(kind, tenant);
	cr_assert_not_null(op);
	snprintf(op->session_id, sizeof(op->session_id), "%s", session ? session : "");
	return op;
}

static json_t *task_new(const char *id, const char *queue, int max_retries)
{
	return json_pack("{s:s, s:s, s:s, s:{s:s}, s:i}", "id", id, "queue", queue, "name", "test.task", "payload", "k",
			 id, "max_retries", max_retries);
}

/* A MESSAGE op with a new event (event_id NULL: a fresh one); task and attachments are taken. */
static struct store_op *message_op(const char *tenant, const char *session, json_t *task, json_t *attachments,
				   const char *event_id)
{
	struct store_op *op = op_new(STORE_OP_MESSAGE, tenant, session);
	snprintf(op->subject, sizeof(op->subject), "user-of-%s", tenant);
	char id[32];
	snprintf(id, sizeof(id), "ev-%d", next_event++);
	op->event = json_pack("{s:s, s:s, s:s}", "event_id", event_id ? event_id : id, "type", "user_message", "text",
			      "hello");
	op->task = task;
	op->attachments = attachments;
	return op;
}

/* Runs a MESSAGE and returns its error; *seq (may be NULL) gets the event's seq. */
static enum soma_err message(const char *tenant, const char *session, json_t *task, json_t *attachments, int64_t *seq)
{
	struct store_op *op = message_op(tenant, session, task, attachments, NULL);
	enum soma_err err = store_op_wait(st, op);
	if (seq)
		*seq = op->seq;
	store_op_free(op);
	return err;
}

static int64_t message_ok(const char *tenant, const char *session)
{
	int64_t seq = 0;
	cr_assert_eq(message(tenant, session, NULL, NULL, &seq), SOMA_OK);
	return seq;
}

/* EVENTS_AFTER of an "acme" session; checks the rows are the n seqs from first on, each body
 * carrying its seq, and returns the session's last_seq. */
static int64_t check_events(const char *session, int64_t after, int64_t limit, int64_t first, size_t n)
{
	struct store_op *op = op_new(STORE_OP_EVENTS_AFTER, "acme", session);
	op->after_seq = after;
	op->limit = limit;
	cr_assert_eq(store_op_wait(st, op), SOMA_OK, "events of %s", session);
	cr_assert_eq(json_array_size(op->rows), n, "%zu rows, expected %zu", json_array_size(op->rows), n);
	for (size_t i = 0; i < n; i++) {
		json_t *row = json_array_get(op->rows, i);
		int64_t seq = json_integer_value(json_object_get(row, "seq"));
		cr_assert_eq(seq, first + (int64_t)i, "row %zu has seq %lld", i, (long long)seq);
		json_t *body = json_loads(json_string_value(json_object_get(row, "body")), 0, NULL);
		cr_assert_eq(json_integer_value(json_object_get(body, "seq")), seq, "body carries another seq");
		json_decref(body);
	}
	int64_t last = op->seq;
	store_op_free(op);
	return last;
}

static enum soma_err events_err(const char *tenant, const char *session)
{
	struct store_op *op = op_new(STORE_OP_EVENTS_AFTER, tenant, session);
	op->limit = 10;
	enum soma_err err = store_op_wait(st, op);
	store_op_free(op);
	return err;
}

static void attach(const char *tenant, const char *id)
{
	struct store_op *put = op_new(STORE_OP_ATTACHMENT_PUT, tenant, NULL);
	put->row = json_pack("[{s:s, s:s, s:s, s:i, s:s}]", "id", id, "filename", "a.txt", "mime", "text/plain", "size",
			     3, "sha256", "00");
	cr_assert_eq(store_op_wait(st, put), SOMA_OK);
	store_op_free(put);
	cr_assert_eq(sql_int("SELECT count(*) FROM attachments WHERE id = ?", id), 1, "attachment %s not stored", id);
}

static enum soma_err simple(enum store_op_kind kind, const char *tenant, const char *session, bool flag)
{
	struct store_op *op = op_new(kind, tenant, session);
	op->flag = flag;
	enum soma_err err = store_op_wait(st, op);
	store_op_free(op);
	return err;
}

/* SESSION_GET; returns the session object (caller decrefs) or NULL when not found. */
static json_t *session_get(const char *tenant, const char *session)
{
	struct store_op *op = op_new(STORE_OP_SESSION_GET, tenant, session);
	enum soma_err err = store_op_wait(st, op);
	cr_assert(err == SOMA_OK || err == SOMA_ERR_NOT_FOUND, "session get: %s", soma_err_str(err));
	json_t *s = json_incref(op->session);
	store_op_free(op);
	return s;
}

/* ---- sessions and events ------------------------------------------------------------------- */

Test(store_ops, message_creates_session_and_numbers_events)
{
	struct store_op *op = message_op("acme", "s1", NULL, NULL, NULL);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	cr_assert(op->created);
	cr_assert_eq(op->seq, 1);
	json_t *stored = json_loads(op->event_text, 0, NULL);
	cr_assert_not_null(stored);
	cr_assert_eq(json_integer_value(json_object_get(stored, "seq")), 1);
	cr_assert_str_eq(json_string_value(json_object_get(stored, "session_id")), "s1");
	cr_assert_not_null(json_object_get(stored, "created_at"));
	json_decref(stored);
	store_op_free(op);
	op = message_op("acme", "s1", NULL, NULL, NULL);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	cr_assert_not(op->created);
	cr_assert_eq(op->seq, 2);
	store_op_free(op);
	cr_assert_eq(message_ok("acme", "s1"), 3);
	cr_assert_eq(message_ok("acme", "s2"), 1, "seq is per session");
	json_t *s = session_get("acme", "s1");
	cr_assert_not_null(s);
	cr_assert_eq(json_integer_value(json_object_get(s, "last_seq")), 3);
	cr_assert_str_eq(json_string_value(json_object_get(s, "tenant")), "acme");
	cr_assert_str_eq(json_string_value(json_object_get(s, "subject")), "user-of-acme");
	cr_assert(json_is_false(json_object_get(s, "paused")));
	json_decref(s);
}

Test(store_ops, message_on_another_tenants_session_is_not_found)
{
	cr_assert_eq(message_ok("acme", "s1"), 1);
	cr_assert_eq(message("evil", "s1", task_new("t-evil", "q", 3), NULL, NULL), SOMA_ERR_NOT_FOUND);
	cr_assert_null(session_get("evil", "s1"));
	cr_assert_eq(check_events("s1", 0, 100, 1, 1), 1);
	cr_assert_eq(events_err("evil", "s1"), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(sql_int("SELECT count(*) FROM tasks WHERE id = ?", "t-evil"), 0, "the task was stored");
	cr_assert_eq(message_ok("acme", "s1"), 2, "the refused message took a seq");
}

Test(store_ops, message_with_unknown_attachment_stores_nothing)
{
	attach("other", "att-other");
	cr_assert_eq(message("acme", "s1", task_new("t1", "q", 3), json_pack("[s]", "att-missing"), NULL),
		     SOMA_ERR_NOT_FOUND);
	cr_assert_eq(message("acme", "s1", task_new("t2", "q", 3), json_pack("[s]", "att-other"), NULL),
		     SOMA_ERR_NOT_FOUND, "another tenant's attachment was accepted");
	cr_assert_null(session_get("acme", "s1"), "the session was created");
	cr_assert_eq(sql_int("SELECT count(*) FROM events", NULL), 0);
	cr_assert_eq(sql_int("SELECT count(*) FROM tasks", NULL), 0);
	attach("acme", "att-1");
	int64_t seq;
	cr_assert_eq(message("acme", "s1", NULL, json_pack("[s]", "att-1"), &seq), SOMA_OK);
	cr_assert_eq(seq, 1);
	struct store_op *get = op_new(STORE_OP_ATTACHMENT_GET, "acme", NULL);
	snprintf(get->task_id, sizeof(get->task_id), "att-1");
	cr_assert_eq(store_op_wait(st, get), SOMA_OK);
	cr_assert_str_eq(json_string_value(json_object_get(get->row, "filename")), "a.txt");
	store_op_free(get);
	get = op_new(STORE_OP_ATTACHMENT_GET, "acme", NULL);
	snprintf(get->task_id, sizeof(get->task_id), "att-other");
	cr_assert_eq(store_op_wait(st, get), SOMA_ERR_NOT_FOUND);
	store_op_free(get);
}

Test(store_ops, events_after_and_limit)
{
	for (int i = 1; i <= 10; i++)
		cr_assert_eq(message_ok("acme", "s1"), i);
	cr_assert_eq(check_events("s1", 3, 4, 4, 4), 10, "op->seq is the session's last_seq");
	check_events("s1", 8, 10, 9, 2);
	check_events("s1", 0, 100, 1, 10);
	check_events("s1", 10, 100, 0, 0);
	check_events("s1", -1, 3, 8, 3); /* the last 3, oldest first */
	check_events("s1", -1, 50, 1, 10);
	cr_assert_eq(events_err("acme", "nope"), SOMA_ERR_NOT_FOUND);
}

Test(store_ops, reads_see_later_commits)
{
	/* every read must see what was committed before it was submitted, whichever reader runs it */
	for (int i = 1; i <= 12; i++) {
		cr_assert_eq(message_ok("acme", "s1"), i);
		cr_assert_eq(check_events("s1", 0, 100, 1, (size_t)i), i, "round %d: stale EVENTS_AFTER", i);
		json_t *s = session_get("acme", "s1");
		cr_assert_eq(json_integer_value(json_object_get(s, "last_seq")), i, "round %d: stale SESSION_GET", i);
		json_decref(s);
	}
}

static json_t *list_page(const char *tenant, const char *cursor, int64_t limit, char next[STORE_CURSOR_MAX + 1])
{
	struct store_op *op = op_new(STORE_OP_SESSIONS_LIST, tenant, NULL);
	op->limit = limit;
	snprintf(op->cursor, sizeof(op->cursor), "%s", cursor);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	snprintf(next, STORE_CURSOR_MAX + 1, "%s", op->next_cursor);
	json_t *rows = json_incref(op->rows);
	store_op_free(op);
	return rows;
}

/* Checks the session ids of a page, given as "s5,s4"; releases rows. */
static void assert_page(json_t *rows, const char *want)
{
	char ids[256] = "";
	size_t len = 0;
	for (size_t i = 0; i < json_array_size(rows); i++)
		len += (size_t)snprintf(ids + len, sizeof(ids) - len, "%s%s", i ? "," : "",
					json_string_value(json_object_get(json_array_get(rows, i), "session_id")));
	json_decref(rows);
	cr_assert_str_eq(ids, want);
}

Test(store_ops, sessions_list_newest_first_with_cursor)
{
	const char *ids[] = {"s1", "s2", "s3", "s4", "s5"};
	for (int i = 0; i < 5; i++) {
		message_ok("acme", ids[i]);
		sleep_ms(3); /* distinct updated_ms */
	}
	message_ok("other", "x1");
	char next[STORE_CURSOR_MAX + 1], cur[STORE_CURSOR_MAX + 1];
	assert_page(list_page("acme", "", 2, next), "s5,s4");
	cr_assert_neq(next[0], '\0');
	memcpy(cur, next, sizeof(cur));
	assert_page(list_page("acme", cur, 2, next), "s3,s2");
	memcpy(cur, next, sizeof(cur));
	assert_page(list_page("acme", cur, 2, next), "s1");
	cr_assert_str_eq(next, "", "no next page after the last");
	assert_page(list_page("acme", "", 5, next), "s5,s4,s3,s2,s1");
	cr_assert_str_eq(next, "", "a page that holds everything has no next page");
	message_ok("acme", "s1"); /* activity moves s1 to the front */
	assert_page(list_page("acme", "", 10, next), "s1,s5,s4,s3,s2");
	assert_page(list_page("other", "", 10, next), "x1");
	struct store_op *op = op_new(STORE_OP_SESSIONS_LIST, "acme", NULL);
	op->limit = 2;
	snprintf(op->cursor, sizeof(op->cursor), "garbage");
	cr_assert_eq(store_op_wait(st, op), SOMA_ERR_INVALID);
	store_op_free(op);
}

Test(store_ops, delete_removes_events_and_queued_tasks)
{
	int64_t seq;
	cr_assert_eq(message("acme", "s1", task_new("t1", "q", 3), NULL, &seq), SOMA_OK);
	cr_assert_eq(message("acme", "s1", task_new("t2", "q", 3), NULL, &seq), SOMA_OK);
	cr_assert_eq(message("acme", "s2", task_new("t3", "q", 3), NULL, &seq), SOMA_OK);
	cr_assert_eq(simple(STORE_OP_SESSION_DELETE, "evil", "s1", false), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(sql_int("SELECT count(*) FROM events WHERE session_id = ?", "s1"), 2);
	cr_assert_eq(simple(STORE_OP_SESSION_DELETE, "acme", "s1", false), SOMA_OK);
	cr_assert_null(session_get("acme", "s1"));
	cr_assert_eq(sql_int("SELECT count(*) FROM events WHERE session_id = ?", "s1"), 0);
	cr_assert_eq(sql_int("SELECT count(*) FROM tasks WHERE session_id = ?", "s1"), 0);
	cr_assert_eq(sql_int("SELECT count(*) FROM tasks WHERE session_id = ?", "s2"), 1, "s2 was touched");
	cr_assert_eq(simple(STORE_OP_SESSION_DELETE, "acme", "s1", false), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(message_ok("acme", "s1"), 1, "a new session of the same id starts again at 1");
}

Test(store_ops, reset_keeps_session_and_last_seq)
{
	cr_assert_eq(message("acme", "s1", task_new("t1", "q", 3), NULL, NULL), SOMA_OK);
	cr_assert_eq(message_ok("acme", "s1"), 2);
	cr_assert_eq(simple(STORE_OP_SESSION_RESET, "evil", "s1", false), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(simple(STORE_OP_SESSION_RESET, "acme", "s1", false), SOMA_OK);
	json_t *s = session_get("acme", "s1");
	cr_assert_not_null(s, "reset deleted the session");
	cr_assert_eq(json_integer_value(json_object_get(s, "last_seq")), 2);
	json_decref(s);
	check_events("s1", 0, 100, 0, 0);
	cr_assert_eq(sql_int("SELECT count(*) FROM tasks WHERE session_id = ?", "s1"), 0);
	cr_assert_eq(message_ok("acme", "s1"), 3, "seqs are never reused after a reset");
}

Test(store_ops, pause_flag)
{
	message_ok("acme", "s1");
	cr_assert_eq(simple(STORE_OP_SESSION_PAUSE, "acme", "s1", true), SOMA_OK);
	json_t *s = session_get("acme", "s1");
	cr_assert(json_is_true(json_object_get(s, "paused")));
	json_decref(s);
	cr_assert_eq(simple(STORE_OP_SESSION_PAUSE, "acme", "s1", false), SOMA_OK);
	s = session_get("acme", "s1");
	cr_assert(json_is_false(json_object_get(s, "paused")));
	json_decref(s);
	cr_assert_eq(simple(STORE_OP_SESSION_PAUSE, "evil", "s1", true), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(simple(STORE_OP_SESSION_PAUSE, "acme", "nope", true), SOMA_ERR_NOT_FOUND);
}

Test(store_ops, writes_after_another_connection_committed)
{
	/* `somaagent keys create` commits from another connection while the server runs */
	cr_assert_eq(message_ok("acme", "s1"), 1);
	cr_assert_eq(message_ok("acme", "s1"), 2);
	struct store_key k = {.id = "k1", .tenant = "acme", .name = "test", .scopes = "read", .created_ms = 1};
	cr_assert_eq(store_key_insert(st, &k), SOMA_OK);
	cr_assert_eq(message_ok("acme", "s1"), 3);
}

/* ---- group commit -------------------------------------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int completed;

static void done_signal(struct store_op *op)
{
	(void)op; /* the test keeps the op and frees it */
	pthread_mutex_lock(&mu);
	completed++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void wait_completed(int n)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&mu);
	while (completed < n && pthread_cond_timedwait(&cv, &mu, &until) == 0)
		;
	int got = completed;
	pthread_mutex_unlock(&mu);
	cr_assert_eq(got, n, "%d of %d ops completed", got, n);
}

Test(store_ops, failed_op_rolls_back_alone)
{
	/* the same event_id twice: the second op fails alone (its savepoint) and leaves no gap */
	struct store_op *ops[3];
	for (int i = 0; i < 3; i++) {
		ops[i] = message_op("acme", "s1", NULL, NULL, NULL);
		ops[i]->done = done_signal;
	}
	json_object_set(ops[1]->event, "event_id", json_object_get(ops[0]->event, "event_id"));
	for (int i = 0; i < 3; i++)
		cr_assert_eq(store_submit(st, ops[i]), SOMA_OK);
	wait_completed(3);
	cr_assert_eq(ops[0]->err, SOMA_OK);
	cr_assert_eq(ops[1]->err, SOMA_ERR_CONFLICT);
	cr_assert_null(ops[1]->event_text);
	cr_assert_eq(ops[2]->err, SOMA_OK);
	cr_assert_eq(ops[0]->seq, 1);
	cr_assert_eq(ops[2]->seq, 2, "the failed op left a gap");
	for (int i = 0; i < 3; i++)
		store_op_free(ops[i]);
}

#define NTHR  8
#define PER   200
#define NSESS 4

static int nseq[NSESS], errors, hook_calls;
static unsigned char seen[NSESS][NTHR * PER + 2], hooked[NSESS][NTHR * PER + 2];
static int64_t hook_last[NSESS];
static bool hook_out_of_order, done_before_hook, submit_failed;

static void commit_hook(const struct store_op *op)
{
	int s = op->session_id[1] - '0';
	pthread_mutex_lock(&mu);
	hook_out_of_order |= op->seq <= hook_last[s] || op->seq > NTHR * PER;
	hook_last[s] = op->seq;
	if (!hook_out_of_order)
		hooked[s][op->seq] = 1;
	hook_calls++;
	pthread_mutex_unlock(&mu);
}

static void done_record(struct store_op *op)
{
	int s = op->session_id[1] - '0';
	pthread_mutex_lock(&mu);
	if (op->err != SOMA_OK || op->seq < 1 || op->seq > NTHR * PER) {
		errors++;
	} else {
		seen[s][op->seq]++;
		nseq[s]++;
		done_before_hook |= !hooked[s][op->seq];
	}
	completed++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	store_op_free(op);
}

static void *submitter(void *arg)
{
	int t = (int)(long)arg;
	for (int j = 0; j < PER; j++) {
		char session[8], id[32];
		snprintf(session, sizeof(session), "c%d", (t + j) % NSESS);
		snprintf(id, sizeof(id), "t%d-%d", t, j);
		struct store_op *op = message_op("acme", session, NULL, NULL, id);
		op->done = done_record;
		if (store_submit(st, op) != SOMA_OK) {
			submit_failed = true;
			store_op_free(op);
		}
	}
	return NULL;
}

Test(store_ops, concurrent_messages_get_distinct_gap_free_seqs)
{
	store_set_commit_hook(st, commit_hook);
	pthread_t tids[NTHR];
	for (long t = 0; t < NTHR; t++)
		cr_assert_eq(pthread_create(&tids[t], NULL, submitter, (void *)t), 0);
	for (int t = 0; t < NTHR; t++)
		pthread_join(tids[t], NULL);
	cr_assert_not(submit_failed);
	wait_completed(NTHR * PER);
	cr_assert_eq(errors, 0);
	cr_assert_eq(hook_calls, NTHR * PER);
	cr_assert_not(hook_out_of_order, "the commit hook saw a session's seqs out of order");
	cr_assert_not(done_before_hook, "an op completed before the commit hook saw it");
	for (int s = 0; s < NSESS; s++) {
		cr_assert_eq(nseq[s], NTHR * PER / NSESS);
		for (int q = 1; q <= nseq[s]; q++)
			cr_assert_eq(seen[s][q], 1, "session c%d: seq %d given %d times", s, q, seen[s][q]);
	}
}
