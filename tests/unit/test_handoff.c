/*
 * test_handoff.c - the early start of a chat reply (src/queue/handoff.h): the commit gate
 * (src/queue/gate.c), and the store's side of a hand-off on a real SQLite store in a temp dir: a
 * MESSAGE op with a worker inserts its task already reserved by it, and the op's settled callback
 * runs once, committed or not (src/store/exec.c, sqlite_chat.c, sqlite_tasks.c).
 * DESIGN: every wait is bounded by Criterion's timeout, so a gate that never settles fails a test.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>

#include "helpers.h"
#include "queue/handoff.h"
#include "store/store_int.h"

/* ---- the gate ---------------------------------------------------------------------------------- */

Test(gate, settles_once_and_keeps_the_first_outcome)
{
	struct commit_gate *g = commit_gate_new();
	cr_assert_not_null(g);
	int64_t seq = -1;
	cr_assert_eq(commit_gate_state(g, &seq), GATE_PENDING);
	commit_gate_settle(g, true, 7);
	commit_gate_settle(g, false, 9); /* ignored */
	cr_assert_eq(commit_gate_wait(g, &seq), GATE_COMMITTED);
	cr_assert_eq(seq, 7);
	commit_gate_unref(g);
	commit_gate_unref(NULL);
}

static void *settle_later(void *arg)
{
	struct timespec ts = {0, 20 * 1000000L};
	nanosleep(&ts, NULL);
	commit_gate_settle(arg, false, 0);
	commit_gate_unref(arg); /* this thread's reference */
	return NULL;
}

Test(gate, a_waiter_learns_of_a_failure_from_another_thread, .timeout = 10)
{
	struct commit_gate *g = commit_gate_new();
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, settle_later, commit_gate_ref(g)), 0);
	cr_assert_eq(commit_gate_wait(g, NULL), GATE_FAILED);
	pthread_join(t, NULL);
	commit_gate_unref(g); /* the last reference: freed (ASan says if not) */
}

/* The worker's hook (the reply's thinking event, published as the message commits) runs once,
 * on the settling thread, before a waiter returns - and never on a failure, after its removal,
 * or when left on a gate already settled. */
static int64_t hook_seq[2];
static int hook_calls;

static void hook(void *arg, int64_t seq)
{
	hook_seq[hook_calls++ % 2] = seq + *(int64_t *)arg;
}

Test(gate, the_commit_hook_runs_once_at_the_commit_only)
{
	int64_t add = 100;
	struct commit_gate *g = commit_gate_new();
	cr_assert(commit_gate_on_commit(g, hook, &add));
	commit_gate_settle(g, true, 7);
	cr_assert_eq(hook_calls, 1);
	cr_assert_eq(hook_seq[0], 107);
	commit_gate_settle(g, true, 8); /* ignored: settled once */
	cr_assert_eq(hook_calls, 1);
	cr_assert_not(commit_gate_on_commit(g, hook, &add), "a settled gate takes no hook");
	cr_assert_eq(hook_calls, 1);
	commit_gate_unref(g);

	g = commit_gate_new(); /* failed: the hook does not run */
	cr_assert(commit_gate_on_commit(g, hook, &add));
	commit_gate_settle(g, false, 0);
	cr_assert_eq(hook_calls, 1);
	commit_gate_unref(g);

	g = commit_gate_new(); /* removed before the commit */
	cr_assert(commit_gate_on_commit(g, hook, &add));
	cr_assert(commit_gate_on_commit(g, NULL, NULL));
	commit_gate_settle(g, true, 9);
	cr_assert_eq(hook_calls, 1);
	commit_gate_unref(g);
}

/* ---- the store's side ------------------------------------------------------------------------- */

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

TestSuite(handoff_store, .init = setup, .fini = teardown, .timeout = 30);

struct seen {
	int calls;	   /* settled ran this often */
	enum soma_err err; /* with this error */
	int64_t seq;	   /* and this seq */
};

static void on_settled(struct store_op *op)
{
	struct seen *s = op->settled_arg;
	s->calls++;
	s->err = op->err;
	s->seq = op->seq;
}

/* A MESSAGE op for session "s1" with task id, handed to worker (NULL: not handed). */
static struct store_op *message(const char *id, const char *worker, struct seen *seen)
{
	static int n;
	struct store_op *op = store_op_new(STORE_OP_MESSAGE, "t1");
	char event_id[32];
	snprintf(event_id, sizeof(event_id), "ev-%d", n++);
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	op->event = json_pack("{s:s, s:s}", "event_id", event_id, "type", "user_message"); /* no memory row */
	op->task = json_pack("{s:s, s:s, s:s, s:{}, s:i}", "id", id, "queue", "conversation", "name",
			     "conversation.process", "payload", "max_retries", 3);
	if (worker) {
		snprintf(op->worker, sizeof(op->worker), "%s", worker);
		op->delay_ms = 60000;
	}
	op->settled = on_settled;
	op->settled_arg = seen;
	return op;
}

Test(handoff_store, a_handed_task_is_inserted_reserved_by_its_worker)
{
	struct seen seen = {0};
	struct store_op *op = message("task-1", "worker-a", &seen);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	cr_assert_eq(seen.calls, 1);
	cr_assert_eq(seen.err, SOMA_OK);
	cr_assert_eq(seen.seq, op->seq);
	store_op_free(op); /* settled does not run again */
	cr_assert_eq(seen.calls, 1);
	cr_assert_eq(db_query_int(dir,
				  "SELECT state = 'reserved' AND worker = 'worker-a' AND attempts = 1 AND "
				  "reserved_until_ms > strftime('%s', 'now') * 1000 FROM tasks WHERE id = ?",
				  "task-1"),
		     1);
	/* a reservation does not hand it to anyone else */
	struct store_op *r = store_op_new(STORE_OP_TASK_RESERVE, "");
	snprintf(r->queue, sizeof(r->queue), "conversation");
	snprintf(r->worker, sizeof(r->worker), "worker-b");
	r->delay_ms = 60000;
	cr_assert_eq(store_op_wait(st, r), SOMA_ERR_NOT_FOUND);
	store_op_free(r);
}

Test(handoff_store, a_task_not_handed_is_queued)
{
	struct seen seen = {0};
	struct store_op *op = message("task-2", NULL, &seen);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir,
				  "SELECT state = 'queued' AND worker = '' AND attempts = 0 FROM tasks WHERE id = ?",
				  "task-2"),
		     1);
}

Test(handoff_store, a_message_that_does_not_commit_settles_as_failed)
{
	struct seen seen = {0};
	struct store_op *op = message("task-3", "worker-a", &seen);
	op->attachments = json_pack("[s]", "no-such-attachment"); /* fails inside the transaction */
	cr_assert_neq(store_op_wait(st, op), SOMA_OK);
	cr_assert_eq(seen.calls, 1);
	cr_assert_neq(seen.err, SOMA_OK);
	store_op_free(op);
	cr_assert_eq(db_query_int(dir, "SELECT count(*) FROM tasks WHERE id = ?", "task-3"), 0);
}

Test(handoff_store, an_op_freed_unrun_settles_as_failed)
{
	struct seen seen = {0};
	struct store_op *op = message("task-4", "worker-a", &seen);
	store_op_free(op); /* e.g. the store refused it: the gateway frees it */
	cr_assert_eq(seen.calls, 1);
	cr_assert_eq(seen.err, SOMA_ERR_UNAVAILABLE);
}
