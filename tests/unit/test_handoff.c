/*
 * test_handoff.c - the early start of a chat reply (src/queue/handoff.h): the commit gate
 * (src/queue/gate.c), and the store's side of a hand-off on a real SQLite store in a temp dir: a
 * MESSAGE op with a worker inserts its task already reserved by it, and the op's settled callback
 * runs once, committed or not (src/store/exec.c, sqlite_chat.c, sqlite_tasks.c); and a handed
 * task's Celery events (received, started), held by the gate until the commit and never sent when
 * it fails (src/queue/worker.c, worker_steps.c), seen through the queue's event sink.
 * DESIGN: every wait is bounded by Criterion's timeout, so a gate that never settles fails a test.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "helpers.h"
#include "queue/handoff.h"
#include "queue/hooks.h"
#include "queue/queue.h"
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

static int held_runs, held_releases;

static void held_run(void *arg)
{
	cr_assert_eq(arg, &held_runs);
	held_runs++;
}

static void held_release(void *arg)
{
	cr_assert_eq(arg, &held_runs);
	held_releases++;
}

Test(gate, what_waits_for_the_commit_runs_at_the_commit_and_never_on_failure)
{
	held_runs = held_releases = 0;
	struct commit_gate *g = commit_gate_new();
	commit_gate_hold(g, held_run, held_release, &held_runs);
	cr_assert_eq(held_runs + held_releases, 0, "ran before the gate settled");
	commit_gate_settle(g, false, 0);
	cr_assert_eq(held_runs, 0, "ran although the commit failed");
	cr_assert_eq(held_releases, 1);
	commit_gate_hold(g, held_run, held_release, &held_runs); /* settled failed: released only */
	cr_assert_eq(held_runs, 0);
	cr_assert_eq(held_releases, 2);
	commit_gate_unref(g);

	g = commit_gate_new();
	commit_gate_hold(g, held_run, held_release, &held_runs);
	commit_gate_settle(g, true, 3);
	cr_assert_eq(held_runs, 1);
	cr_assert_eq(held_releases, 3);
	commit_gate_hold(g, held_run, held_release, &held_runs); /* committed already: at once */
	cr_assert_eq(held_runs, 2);
	cr_assert_eq(held_releases, 4);
	commit_gate_unref(g);

	g = commit_gate_new(); /* never settled: released with the last reference, not run */
	commit_gate_hold(g, held_run, held_release, &held_runs);
	commit_gate_unref(g);
	cr_assert_eq(held_runs, 2);
	cr_assert_eq(held_releases, 5);
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

/* ---- a handed task's Celery events (the workers of the local queue) -------------------------- */

#define EVENTS_MAX 64
static struct {
	char type[16]; /* received, started, succeeded, ... */
	char id[32];   /* the task's id */
} events[EVENTS_MAX];
static int nevents;
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int handler_runs;

static void sink(const char *type, const json_t *task, const json_t *fields, void *arg)
{
	(void)fields, (void)arg;
	pthread_mutex_lock(&events_lock);
	if (nevents < EVENTS_MAX) {
		snprintf(events[nevents].type, sizeof(events[nevents].type), "%s", type);
		snprintf(events[nevents].id, sizeof(events[nevents].id), "%s",
			 json_string_value(json_object_get(task, "id")));
		nevents++;
	}
	pthread_mutex_unlock(&events_lock);
}

/* The types of the events of task id, in order, joined by spaces. */
static void events_of(const char *id, char *out, size_t cap)
{
	out[0] = 0;
	pthread_mutex_lock(&events_lock);
	for (int i = 0; i < nevents; i++)
		if (strcmp(events[i].id, id) == 0)
			snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? " " : "", events[i].type);
	pthread_mutex_unlock(&events_lock);
}

static enum task_outcome h_quick(struct task_ctx *ctx)
{
	(void)ctx;
	atomic_fetch_add(&handler_runs, 1);
	return TASK_DONE;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void workers_setup(void)
{
	static char *const no_env[] = {NULL};
	struct cfg_load_opts o = {.env = no_env}; /* the defaults: queue.early_start on, the local queue */
	struct cfg_errors errs = {0};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
	setup();
	nevents = 0;
	atomic_store(&handler_runs, 0);
	queue_set_event_sink(sink, NULL);
	cr_assert_eq(queue_task_register("quick", h_quick), SOMA_OK);
	struct queue_def q = {"q", 1};
	cr_assert_eq(queue_start(st, &q, 1, 5, 10), SOMA_OK);
}

static void workers_teardown(void)
{
	queue_stop(0);
	queue_set_event_sink(NULL, NULL);
	teardown();
	cfg_unload();
}

TestSuite(handoff_events, .init = workers_setup, .fini = workers_teardown, .timeout = 30);

/* Hands task id to the idle worker with gate (waits for the worker to be idle). */
static void hand(const char *id, struct commit_gate *gate)
{
	json_t *task = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{}, s:i, s:i}", "id", id, "name", "quick", "queue", "q",
				 "tenant", "t1", "session_id", "s1", "payload", "attempts", 1, "max_retries", 3);
	char worker[64];
	int64_t visibility = 0;
	bool taken = false;
	for (int i = 0; i < 2000 && !taken; i++, sleep_ms(5))
		taken = queue_handoff(task, gate, worker, sizeof(worker), &visibility);
	json_decref(task);
	cr_assert(taken, "no worker took the hand-off");
	queue_handoff_start(worker); /* as the gateway does once the message's op is submitted */
}

/* Hands task id over, checks that its handler ran with no event sent, settles the gate as
 * committed or not, waits for the worker to finish, and writes the task's events into seen. */
static void run_handed(const char *id, bool committed, char *seen, size_t cap)
{
	struct commit_gate *gate = commit_gate_new();
	hand(id, gate);
	for (int i = 0; i < 2000 && atomic_load(&handler_runs) < 1; i++)
		sleep_ms(5);
	cr_assert_eq(atomic_load(&handler_runs), 1, "the handed task did not run before its commit");
	events_of(id, seen, cap);
	cr_assert_str_empty(seen, "events before the commit: %s", seen);
	commit_gate_settle(gate, committed, 1);
	commit_gate_unref(gate);
	for (int i = 0; i < 2000 && queue_running() > 0; i++)
		sleep_ms(5);
	sleep_ms(50);
	events_of(id, seen, cap);
}

Test(handoff_events, a_handed_task_whose_message_did_not_commit_sends_no_event)
{
	char seen[128];
	run_handed("doomed", false, seen, sizeof(seen));
	cr_assert_str_empty(seen, "a task that never existed has events (a received with no end): %s", seen);
}

Test(handoff_events, a_handed_task_is_received_and_started_at_its_commit)
{
	char seen[128];
	run_handed("kept", true, seen, sizeof(seen));
	cr_assert(strncmp(seen, "received started", 16) == 0, "events of the committed task: %s", seen);
}
