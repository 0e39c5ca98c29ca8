/*
 * test_task_outcome.c - one outcome per task in the store (store.h: outcome_of, has_outcome;
 * src/store/sqlite_chat.c, migration 0008): an EVENT_APPEND naming a task that already has its
 * outcome is refused (SOMA_ERR_CONFLICT) and stores nothing, not even a seq; two such appends in
 * one group commit (two copies of a task racing) leave exactly one; a CONTEXT read naming the task
 * says it has its outcome. The PostgreSQL driver does the same (migration postgres/0005); the e2e
 * test tests/e2e/test_task_once.py runs the conversation task on both stores.
 * Also the events' stored text: the submitting thread writes an event out but its seq
 * (store_sql_prepare), the writer appends the seq; the text (op->event_text, the stored body) must
 * be what json_out makes of the committed event.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/event.h"
#include "core/json_out.h"
#include "helpers.h"
#include "store/store.h"

static char dir[64];
static struct store *st;

static void setup(void)
{
	st = store_test_open(dir, sizeof(dir));
}

static void teardown(void)
{
	store_test_close(st, dir);
}

TestSuite(task_outcome, .init = setup, .fini = teardown, .timeout = 60);

/* An op on session s1 of tenant acme with a new event of type (MESSAGE: the user's; EVENT_APPEND:
 * an outcome of task outcome_of, or none when ""). */
static struct store_op *event_op(enum store_op_kind kind, const char *type, const char *outcome_of)
{
	struct store_op *op = store_op_new(kind, "acme");
	cr_assert_not_null(op);
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	snprintf(op->subject, sizeof(op->subject), "alice");
	snprintf(op->outcome_of, sizeof(op->outcome_of), "%s", outcome_of);
	op->event = chat_event_new("s1", strcmp(type, "user") == 0 ? "user" : "assistant", type, "hi", NULL, NULL);
	cr_assert_not_null(op->event);
	return op;
}

/* Runs op, frees it; returns its error and (when seq is not NULL) its seq. */
static enum soma_err run(struct store_op *op, int64_t *seq)
{
	enum soma_err err = store_op_wait(st, op);
	if (seq)
		*seq = op->seq;
	store_op_free(op);
	return err;
}

static int64_t count_events(const char *type)
{
	return db_query_int(dir, "SELECT count(*) FROM events WHERE type = ?", type);
}

/* CONTEXT for task: whether it has an outcome; *rows = how many context rows came back. */
static bool has_outcome(const char *task, size_t *rows)
{
	struct store_op *op = store_op_new(STORE_OP_CONTEXT, "acme");
	cr_assert_not_null(op);
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	snprintf(op->outcome_of, sizeof(op->outcome_of), "%s", task);
	op->limit = 50;
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	bool has = op->has_outcome;
	*rows = json_array_size(op->rows);
	store_op_free(op);
	return has;
}

Test(task_outcome, a_second_outcome_of_a_task_is_refused_and_stores_nothing)
{
	int64_t seq = 0;
	cr_assert_eq(run(event_op(STORE_OP_MESSAGE, "user", ""), &seq), SOMA_OK);
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "assistant.final", "task-1"), &seq), SOMA_OK);
	cr_assert_eq(seq, 2);
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "assistant.final", "task-1"), NULL), SOMA_ERR_CONFLICT);
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "assistant.error", "task-1"), NULL), SOMA_ERR_CONFLICT);
	cr_assert_eq(count_events("assistant.final"), 1);
	cr_assert_eq(count_events("assistant.error"), 0);
	/* the refused appends took no seq; events of no task and of other tasks are not limited */
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "assistant.final", "task-2"), &seq), SOMA_OK);
	cr_assert_eq(seq, 3, "a refused outcome left a gap in the session's seqs");
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "policy.denied", ""), NULL), SOMA_OK);
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "policy.denied", ""), NULL), SOMA_OK);
	cr_assert_eq(count_events("policy.denied"), 2);
}

Test(task_outcome, the_context_read_says_whether_the_task_has_its_outcome)
{
	size_t rows = 0;
	cr_assert_eq(run(event_op(STORE_OP_MESSAGE, "user", ""), NULL), SOMA_OK);
	cr_assert_not(has_outcome("task-1", &rows));
	cr_assert_eq(rows, 1, "the context of a task without an outcome is read as before");
	cr_assert_not(has_outcome("", &rows));
	cr_assert_eq(run(event_op(STORE_OP_EVENT_APPEND, "assistant.final", "task-1"), NULL), SOMA_OK);
	cr_assert(has_outcome("task-1", &rows));
	cr_assert_not(has_outcome("task-2", &rows));
	cr_assert_eq(rows, 2);
	cr_assert_not(has_outcome("", &rows), "no task named: no outcome");
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int completed, ok, conflict;

static void done_count(struct store_op *op)
{
	pthread_mutex_lock(&mu);
	ok += op->err == SOMA_OK;
	conflict += op->err == SOMA_ERR_CONFLICT;
	completed++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	store_op_free(op);
}

Test(task_outcome, racing_outcomes_of_one_task_leave_one)
{
	cr_assert_eq(run(event_op(STORE_OP_MESSAGE, "user", ""), NULL), SOMA_OK);
	enum { N = 6 }; /* submitted at once: most land in one group commit */
	for (int i = 0; i < N; i++) {
		struct store_op *op =
			event_op(STORE_OP_EVENT_APPEND, i % 2 ? "assistant.error" : "assistant.final", "t");
		op->done = done_count;
		cr_assert_eq(store_submit(st, op), SOMA_OK);
	}
	pthread_mutex_lock(&mu);
	while (completed < N)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	cr_assert_eq(ok, 1);
	cr_assert_eq(conflict, N - 1);
	cr_assert_eq(count_events("assistant.final") + count_events("assistant.error"), 1);
	cr_assert_eq(db_query_int(dir, "SELECT last_seq FROM sessions WHERE id = ?", "s1"), 2);
}

/* Runs op; checks that its text and stored body are the committed event written out; frees it. */
static void check_text(struct store_op *op)
{
	json_object_del(op->event, "created_at"); /* the store sets it */
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	char *want = json_out(op->event, 0, NULL);
	cr_assert_not_null(want);
	cr_assert_str_eq(op->event_text, want);
	cr_assert_not_null(json_object_get(op->event, "created_at"));
	cr_assert_eq(json_integer_value(json_object_get(op->event, "seq")), op->seq);
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE session_id = 's1' AND seq = %lld AND body = ?",
		 (long long)op->seq);
	cr_assert_eq(db_query_int(dir, sql, want), 1, "the stored body is the text");
	free(want);
	store_op_free(op);
}

Test(task_outcome, the_text_of_a_message_and_of_a_reply_is_the_committed_event_written_out)
{
	check_text(event_op(STORE_OP_MESSAGE, "user", ""));
	check_text(event_op(STORE_OP_EVENT_APPEND, "assistant.final", "task-1"));
	struct store_op *op = event_op(STORE_OP_MESSAGE, "user", "");
	json_object_set_new(op->event, "message", json_string("quotes \" and a\nnewline"));
	check_text(op);
	cr_assert_eq(db_query_int(dir, "SELECT last_seq FROM sessions WHERE id = ?", "s1"), 3);
}

/* CONTEXT: whether the read saw the message reply_to; with reply_probe (an early start's read)
 * never a refusal, without it a missing message is SOMA_ERR_NOT_FOUND (a reset erased it). */
Test(task_outcome, an_early_read_says_whether_it_saw_the_message)
{
	struct store_op *msg = event_op(STORE_OP_MESSAGE, "user", "");
	char id[sizeof(msg->reply_to)];
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(msg->event, "event_id")));
	cr_assert(id[0]);
	cr_assert_eq(run(msg, NULL), SOMA_OK);
	const char *ids[] = {id, "no-such-event"};
	for (int i = 0; i < 2; i++) {
		for (int probe = 0; probe < 2; probe++) {
			struct store_op *op = store_op_new(STORE_OP_CONTEXT, "acme");
			snprintf(op->session_id, sizeof(op->session_id), "s1");
			snprintf(op->outcome_of, sizeof(op->outcome_of), "task-9"); /* a database read */
			snprintf(op->reply_to, sizeof(op->reply_to), "%s", ids[i]);
			op->reply_probe = probe;
			op->limit = 50;
			enum soma_err err = store_op_wait(st, op);
			if (probe) {
				cr_assert_eq(err, SOMA_OK);
				cr_assert_eq(op->reply_seen, i == 0, "%s", ids[i]);
				cr_assert_eq(json_array_size(op->rows), 1);
			} else {
				cr_assert_eq(err, i == 0 ? SOMA_OK : SOMA_ERR_NOT_FOUND, "%s", ids[i]);
				cr_assert_eq(op->reply_seen, i == 0, "%s", ids[i]);
			}
			store_op_free(op);
		}
	}
}
