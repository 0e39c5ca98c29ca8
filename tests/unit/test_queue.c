/*
 * test_queue.c - the local task queue: the store's task ops (src/store/sqlite_tasks.c) and the
 * worker pools running handlers over them (src/queue/worker.c), on a real store in a temp dir.
 * DESIGN: tasks are enqueued as the gateway does (a MESSAGE op carrying op->task); task state is
 * read with a separate read-only connection per query (sql_int). Handlers count runs in atomics
 * indexed by the payload's "i"; every wait is bounded, so a broken worker fails a test. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/metrics.h"
#include "helpers.h"
#include "queue/queue.h"
#include "store/store_int.h"

static char dir[64];
static struct store *st;
static bool queue_up;  /* queue_start ran: teardown stops it */
static int next_event; /* makes event ids unique */

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void setup(void)
{
	st = store_test_open(dir, sizeof(dir));
	store_set_task_hook(st, queue_notify, NULL);
	queue_up = false;
}

static void teardown(void)
{
	if (queue_up)
		queue_stop(0);
	store_test_close(st, dir);
	metrics_reset();
}

TestSuite(task_ops, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(queue, .init = setup, .fini = teardown, .timeout = 60);

#define sql_int(sql, arg) db_query_int(dir, (sql), (arg)) /* first column of the first row; -1: none */

/* 1 when the result row of task id meets cond (SQL over its columns), 0 when not, -1 without row. */
static int64_t result_is(const char *id, const char *cond)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT %s FROM task_results WHERE task_id = ?", cond);
	return sql_int(sql, id);
}

/* the state of a task as QUEUED, RESERVED, DONE or DEAD; -1 when there is no such task. A task
 * that finished successfully leaves the tasks table and has a SUCCESS row in task_results. */
static const char *const state_sql =
	"SELECT v FROM (SELECT coalesce((SELECT (state = 'reserved') + 3 * (state = 'dead') FROM tasks WHERE id = ?1), "
	"(SELECT 2 FROM task_results WHERE task_id = ?1 AND status = 'SUCCESS')) AS v) WHERE v IS NOT NULL";
enum { QUEUED, RESERVED, DONE, DEAD };

/* Enqueues task id (named name, payload {"i": i}) on queue q with a message on session. */
static void enqueue(const char *tenant, const char *session, const char *id, const char *name, int i, int max_retries)
{
	struct store_op *op = store_op_new(STORE_OP_MESSAGE, tenant);
	cr_assert_not_null(op);
	snprintf(op->session_id, sizeof(op->session_id), "%s", session);
	char event_id[32];
	snprintf(event_id, sizeof(event_id), "ev-%d", next_event++);
	op->event = json_pack("{s:s, s:s}", "event_id", event_id, "type", "user_message");
	op->task = json_pack("{s:s, s:s, s:s, s:{s:i}, s:i}", "id", id, "queue", "q", "name", name, "payload", "i", i,
			     "max_retries", max_retries);
	cr_assert_eq(store_op_wait(st, op), SOMA_OK, "enqueue %s", id);
	store_op_free(op);
}

/* ---- store task ops --------------------------------------------------------------------------- */

/* TASK_RESERVE on q; the task (caller decrefs) or NULL when none is ready. */
static json_t *reserve(const char *queue, int64_t visibility_ms)
{
	return store_test_reserve(st, queue, visibility_ms);
}

static void assert_reserved(json_t *t, const char *id, int64_t attempts)
{
	store_test_assert_reserved(t, id, attempts);
}

/* TASK_RETRY (delay >= 0) or TASK_FINISH (failed when delay < 0) of task id as tenant. */
static enum soma_err task_op(enum store_op_kind kind, const char *tenant, const char *id, int64_t delay, bool *dead)
{
	struct store_op *op = store_op_new(kind, tenant);
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text), "boom %s", id);
	op->delay_ms = delay;
	op->failed = kind == STORE_OP_TASK_FINISH && delay < 0;
	if (kind == STORE_OP_TASK_FINISH && !op->failed)
		op->row = json_pack("{s:s}", "by", tenant);
	enum soma_err err = store_op_wait(st, op);
	if (dead)
		*dead = op->dead;
	store_op_free(op);
	return err;
}

Test(task_ops, reserve_hides_task_until_visibility_expires)
{
	enqueue("acme", "s1", "t1", "test.task", 7, 3);
	json_t *t = reserve("q", 300);
	cr_assert_not_null(t);
	cr_assert_str_eq(json_string_value(json_object_get(t, "name")), "test.task");
	cr_assert_str_eq(json_string_value(json_object_get(t, "tenant")), "acme");
	cr_assert_str_eq(json_string_value(json_object_get(t, "session_id")), "s1");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(t, "payload"), "i")), 7);
	cr_assert_eq(json_integer_value(json_object_get(t, "max_retries")), 3);
	assert_reserved(t, "t1", 1);
	cr_assert_null(reserve("q", 300), "a reserved task was reserved again");
	cr_assert_eq(sql_int(state_sql, "t1"), RESERVED);
	sleep_ms(400);
	assert_reserved(reserve("q", 300), "t1", 2);
	cr_assert_null(reserve("q", 300));
}

Test(task_ops, a_lapsed_reservation_with_no_attempt_left_is_dead_lettered_not_reserved)
{
	enqueue("acme", "s1", "t1", "a", 0, 1); /* two runs: each ends with its worker gone */
	assert_reserved(reserve("q", 100), "t1", 1);
	sleep_ms(150);
	assert_reserved(reserve("q", 100), "t1", 2);
	sleep_ms(150);
	cr_assert_null(reserve("q", 100), "reserved a third time with max_retries 1");
	cr_assert_eq(sql_int(state_sql, "t1"), DEAD);
	cr_assert_eq(
		sql_int("SELECT attempts = 2 AND last_error LIKE '%worker stopped%' FROM tasks WHERE id = ?", "t1"), 1);
}

Test(task_ops, reserve_takes_oldest_of_its_queue)
{
	enqueue("acme", "s1", "t1", "a", 0, 3);
	sleep_ms(3);
	enqueue("acme", "s2", "t2", "a", 0, 3);
	cr_assert_null(reserve("other", 1000));
	assert_reserved(reserve("q", 1000), "t1", 1);
	assert_reserved(reserve("q", 1000), "t2", 1);
	cr_assert_null(reserve("q", 1000));
}

Test(task_ops, retry_delays_then_dead_after_max_retries)
{
	enqueue("acme", "s1", "t1", "a", 0, 1);
	assert_reserved(reserve("q", 60000), "t1", 1);
	bool dead = true;
	cr_assert_eq(task_op(STORE_OP_TASK_RETRY, "evil", "t1", 0, NULL), SOMA_ERR_NOT_FOUND, "another tenant");
	cr_assert_eq(task_op(STORE_OP_TASK_RETRY, "acme", "t1", 200, &dead), SOMA_OK);
	cr_assert_not(dead, "attempt 1 of max_retries 1 is not the last");
	cr_assert_eq(sql_int(state_sql, "t1"), QUEUED);
	cr_assert_eq(task_op(STORE_OP_TASK_RETRY, "acme", "t1", 0, NULL), SOMA_ERR_NOT_FOUND, "not reserved");
	cr_assert_null(reserve("q", 60000), "reserved before its retry delay");
	sleep_ms(300);
	assert_reserved(reserve("q", 60000), "t1", 2);
	cr_assert_eq(task_op(STORE_OP_TASK_RETRY, "acme", "t1", 0, &dead), SOMA_OK);
	cr_assert(dead, "attempts 2 > max_retries 1 must dead-letter");
	cr_assert_eq(sql_int(state_sql, "t1"), DEAD);
	cr_assert_eq(sql_int("SELECT last_error = 'boom t1' FROM tasks WHERE id = ?", "t1"), 1);
	sleep_ms(20);
	cr_assert_null(reserve("q", 60000), "a dead task was reserved");
}

Test(task_ops, finish_records_outcome)
{
	enqueue("acme", "s1", "t1", "a", 0, 3);
	enqueue("acme", "s1", "t2", "a", 0, 3);
	assert_reserved(reserve("q", 300), "t1", 1);
	assert_reserved(reserve("q", 300), "t2", 1);
	cr_assert_eq(task_op(STORE_OP_TASK_FINISH, "acme", "t1", 0, NULL), SOMA_OK);
	cr_assert_eq(task_op(STORE_OP_TASK_FINISH, "acme", "t2", -1, NULL), SOMA_OK);
	cr_assert_eq(sql_int(state_sql, "t1"), DONE);
	cr_assert_eq(sql_int(state_sql, "t2"), DEAD);
	cr_assert_eq(result_is("t1", "status = 'SUCCESS' AND result->>'by' = 'acme' AND tenant = 'acme'"), 1);
	cr_assert_eq(result_is("t2", "status = 'FAILURE' AND error = 'boom t2'"), 1);
	sleep_ms(400);
	cr_assert_null(reserve("q", 300), "a finished task came back after its visibility timeout");
}

Test(task_ops, finish_of_unknown_task_is_not_found)
{
	cr_assert_eq(task_op(STORE_OP_TASK_FINISH, "acme", "no-such-task", 0, NULL), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(sql_int("SELECT count(*) FROM task_results", NULL), 0, "a result for no task");
}

Test(task_ops, finish_by_another_tenant_changes_nothing)
{
	enqueue("acme", "s1", "t1", "a", 0, 3);
	assert_reserved(reserve("q", 60000), "t1", 1);
	cr_assert_eq(task_op(STORE_OP_TASK_FINISH, "acme", "t1", 0, NULL), SOMA_OK);
	(void)task_op(STORE_OP_TASK_FINISH, "evil", "t1", -1, NULL);
	cr_assert_eq(sql_int(state_sql, "t1"), DONE);
	cr_assert_eq(result_is("t1", "tenant = 'acme' AND status = 'SUCCESS'"), 1,
		     "tenant evil replaced tenant acme's task result");
}

Test(task_ops, recover_requeues_reserved_tasks)
{
	enqueue("acme", "s1", "t1", "a", 0, 3);
	assert_reserved(reserve("q", 60000), "t1", 1);
	enqueue("acme", "s1", "t2", "a", 0, 3);
	assert_reserved(reserve("q", 60000), "t2", 1);
	cr_assert_eq(task_op(STORE_OP_TASK_FINISH, "acme", "t2", 0, NULL), SOMA_OK);
	enqueue("acme", "s1", "t3", "a", 0, 3);
	int n = -1;
	cr_assert_eq(store_tasks_recover(st, &n), SOMA_OK);
	cr_assert_eq(n, 1, "only the reserved task is an orphan");
	cr_assert_eq(sql_int(state_sql, "t1"), QUEUED);
	cr_assert_eq(sql_int(state_sql, "t2"), DONE);
	/* both t1 (again, attempt 2) and t3 are ready now, in either order */
	json_t *a = reserve("q", 60000), *b = reserve("q", 60000);
	cr_assert(a && b && !reserve("q", 60000));
	bool a_first = strcmp(json_string_value(json_object_get(a, "id")), "t1") == 0;
	assert_reserved(a_first ? a : b, "t1", 2);
	assert_reserved(a_first ? b : a, "t3", 1);
}

static enum soma_err append(const char *tenant, const char *session, const char *task_id, int64_t *seq)
{
	struct store_op *op = store_op_new(STORE_OP_EVENT_APPEND, tenant);
	snprintf(op->session_id, sizeof(op->session_id), "%s", session);
	snprintf(op->task_id, sizeof(op->task_id), "%s", task_id);
	char event_id[32];
	snprintf(event_id, sizeof(event_id), "ev-%d", next_event++);
	op->event = json_pack("{s:s, s:s}", "event_id", event_id, "type", "assistant_message");
	enum soma_err err = store_op_wait(st, op);
	*seq = op->seq;
	store_op_free(op);
	return err;
}

Test(task_ops, event_append_finishes_task_in_the_same_commit)
{
	enqueue("acme", "s1", "t1", "a", 0, 3);
	assert_reserved(reserve("q", 60000), "t1", 1);
	int64_t seq = 0;
	cr_assert_eq(append("evil", "s1", "t1", &seq), SOMA_ERR_NOT_FOUND);
	cr_assert_eq(sql_int(state_sql, "t1"), RESERVED, "a refused append finished the task");
	cr_assert_eq(append("acme", "s1", "t1", &seq), SOMA_OK);
	cr_assert_eq(seq, 2);
	cr_assert_eq(sql_int(state_sql, "t1"), DONE);
}

/* ---- workers ---------------------------------------------------------------------------------- */

#define NT 32

static _Atomic int runs[NT], cancelled[NT], shut[NT], started[NT], total;
static _Atomic bool bad_ctx;
static int64_t run_ms[NT][4];

static int task_index(struct task_ctx *ctx)
{
	int i = (int)json_integer_value(json_object_get(ctx->payload, "i"));
	if (i < 0 || i >= NT || !ctx->id || strcmp(ctx->tenant, "acme") != 0 || !ctx->session_id || !ctx->store ||
	    strcmp(json_string_value(json_object_get(ctx->task, "id")), ctx->id) != 0)
		bad_ctx = true;
	return i >= 0 && i < NT ? i : 0;
}

static int count_run(struct task_ctx *ctx)
{
	int i = task_index(ctx);
	int n = atomic_fetch_add(&runs[i], 1);
	if (n < 4)
		run_ms[i][n] = clock_wall_ms();
	atomic_fetch_add(&total, 1);
	return n + 1;
}

/* "done" succeeds with a result, "retry2" retries twice then succeeds, "retry" always retries,
 * "fail" fails for good. */
static enum task_outcome h_simple(struct task_ctx *ctx)
{
	const char *name = json_string_value(json_object_get(ctx->task, "name"));
	int n = count_run(ctx);
	snprintf(ctx->error, sizeof(ctx->error), "%s", strcmp(name, "fail") == 0 ? "permanent" : "still failing");
	if (strcmp(name, "done") == 0)
		ctx->result = json_pack("{s:s}", "answer", ctx->id);
	if (strcmp(name, "fail") == 0)
		return TASK_FAIL;
	return strcmp(name, "retry") == 0 || (strcmp(name, "retry2") == 0 && n <= 2) ? TASK_RETRY : TASK_DONE;
}

static enum task_outcome h_acked(struct task_ctx *ctx)
{
	count_run(ctx);
	int64_t seq;
	return append(ctx->tenant, ctx->session_id, ctx->id, &seq) == SOMA_OK ? TASK_ACKED : TASK_RETRY;
}

/* "wait" waits for cancel (giving up after 10 s) as a generation does, and asks for a requeue on
 * shutdown as the conversation handler does; "quick" works 100 ms unless cancelled. */
static enum task_outcome h_wait(struct task_ctx *ctx)
{
	int i = task_index(ctx);
	int limit = strcmp(json_string_value(json_object_get(ctx->task, "name")), "quick") == 0 ? 100 : 10000;
	count_run(ctx);
	atomic_store(&started[i], 1);
	for (int waited = 0; waited < limit && !ctx->cancel; waited += 5)
		sleep_ms(5);
	atomic_store(&cancelled[i], ctx->cancel);
	atomic_store(&shut[i], ctx->shutdown);
	snprintf(ctx->error, sizeof(ctx->error), "interrupted");
	return ctx->shutdown ? TASK_RETRY : TASK_DONE;
}

static void start(int concurrency)
{
	static const char *const names[] = {"done", "retry2", "retry", "fail", "acked", "wait", "quick"};
	for (int i = 0; i < 7; i++)
		cr_assert_eq(queue_task_register(names[i], i < 4 ? h_simple : i == 4 ? h_acked : h_wait), SOMA_OK);
	struct queue_def q = {"q", concurrency};
	cr_assert_eq(queue_start(st, &q, 1, 5, 10), SOMA_OK);
	queue_up = true;
}

/* Waits up to 10 s for *v to reach want. */
static bool wait_for(_Atomic int *v, int want)
{
	for (int i = 0; i < 2000 && atomic_load(v) < want; i++)
		sleep_ms(5);
	return atomic_load(v) >= want;
}

/* Waits up to 10 s for task id to reach state. */
static bool wait_state(const char *id, int64_t state)
{
	for (int i = 0; i < 1000 && sql_int(state_sql, id) != state; i++)
		sleep_ms(10);
	return sql_int(state_sql, id) == state;
}

/* Waits up to 5 s for a task's outcome counter to be want (counted just after the commit). */
static bool tasks_metric_is(const char *name, const char *outcome, double want)
{
	static const char *const labels[] = {"task", "outcome", NULL};
	const char *values[] = {name, outcome};
	struct metric_series *s = metric_series(metrics_counter("soma_tasks_total", "", labels), values);
	for (int i = 0; i < 500 && metric_value(s) < want; i++)
		sleep_ms(10);
	return metric_value(s) == want;
}

Test(queue, handler_runs_once_per_task)
{
	start(4);
	char id[16];
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "t%d", i);
		enqueue("acme", i % 2 ? "s1" : "s2", id, "done", i, 3);
	}
	cr_assert(wait_for(&total, 20), "%d of 20 tasks ran", atomic_load(&total));
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "t%d", i);
		cr_assert(wait_state(id, DONE), "task %s not done", id);
	}
	sleep_ms(300);
	cr_assert_eq(atomic_load(&total), 20, "a task ran twice");
	for (int i = 0; i < 20; i++)
		cr_assert_eq(atomic_load(&runs[i]), 1, "task %d ran %d times", i, atomic_load(&runs[i]));
	cr_assert_not(bad_ctx, "the handler got a wrong task_ctx");
	cr_assert_eq(result_is("t3", "result->>'answer' = 't3'"), 1, "ctx->result was not stored");
	cr_assert_eq(queue_running(), 0);
	cr_assert(tasks_metric_is("done", "success", 20));
}

Test(queue, retry_twice_then_done_runs_three_times)
{
	start(2);
	enqueue("acme", "s1", "t1", "retry2", 1, 5);
	cr_assert(wait_state("t1", DONE));
	cr_assert_eq(atomic_load(&runs[1]), 3);
	/* backoff 10 ms with full jitter in [cap/2, cap]: at least 5 ms, then 10 ms */
	cr_assert_geq(run_ms[1][1] - run_ms[1][0], 5);
	cr_assert_geq(run_ms[1][2] - run_ms[1][1], 10);
	cr_assert(tasks_metric_is("retry2", "retry", 2));
	cr_assert(tasks_metric_is("retry2", "success", 1));
}

Test(queue, retries_exhausted_is_dead)
{
	start(2);
	enqueue("acme", "s1", "t1", "retry", 2, 2);
	cr_assert(wait_state("t1", DEAD));
	cr_assert_eq(atomic_load(&runs[2]), 3, "max_retries 2 means 3 runs");
	sleep_ms(1200); /* longer than a worker's idle poll */
	cr_assert_eq(atomic_load(&runs[2]), 3, "a dead task ran again");
	cr_assert_eq(sql_int("SELECT last_error = 'still failing' FROM tasks WHERE id = ?", "t1"), 1);
	cr_assert(tasks_metric_is("retry", "retry", 2));
	cr_assert(tasks_metric_is("retry", "failure", 1));
}

Test(queue, fail_and_unknown_task_are_dead_at_once)
{
	start(2);
	enqueue("acme", "s1", "t1", "fail", 3, 5);
	enqueue("acme", "s1", "t2", "nobody-handles-this", 4, 5);
	cr_assert(wait_state("t1", DEAD));
	cr_assert(wait_state("t2", DEAD));
	cr_assert_eq(atomic_load(&runs[3]), 1);
	cr_assert_eq(result_is("t1", "status = 'FAILURE' AND error = 'permanent'"), 1);
	cr_assert_eq(result_is("t2", "error LIKE '%no handler%'"), 1);
	cr_assert(tasks_metric_is("unknown", "failure", 1));		 /* a name without a handler is no label: */
	cr_assert(tasks_metric_is("nobody-handles-this", "failure", 0)); /* any tenant could fill the cap */
}

Test(queue, acked_handler_commits_its_own_ack)
{
	start(1);
	enqueue("acme", "s1", "t1", "acked", 5, 3);
	cr_assert(wait_state("t1", DONE));
	cr_assert_eq(atomic_load(&runs[5]), 1);
	cr_assert_eq(sql_int("SELECT max(seq) FROM events WHERE session_id = ?", "s1"), 2);
}

Test(queue, cancel_session_cancels_only_its_running_task)
{
	start(2);
	enqueue("acme", "sa", "ta", "wait", 6, 3);
	enqueue("acme", "sb", "tb", "wait", 7, 3);
	cr_assert(wait_for(&started[6], 1) && wait_for(&started[7], 1));
	cr_assert_eq(queue_running(), 2);
	cr_assert_eq(queue_cancel_session("evil", "sa", false), 0); /* same session id, another tenant */
	cr_assert_eq(queue_cancel_session("acme", "nope", false), 0);
	sleep_ms(50);
	cr_assert_eq(atomic_load(&runs[6]) + atomic_load(&runs[7]), 2);
	cr_assert_eq(sql_int(state_sql, "ta"), RESERVED, "cancelled by another tenant or session");
	cr_assert_eq(queue_cancel_session("acme", "sa", false), 1);
	cr_assert(wait_state("ta", DONE));
	cr_assert_eq(atomic_load(&cancelled[6]), 1);
	cr_assert_eq(atomic_load(&shut[6]), 0, "a session cancel is not a shutdown");
	cr_assert_eq(sql_int(state_sql, "tb"), RESERVED, "the other session's task was cancelled");
	cr_assert_eq(queue_cancel_session("acme", "sb", false), 1);
	cr_assert(wait_state("tb", DONE));
	cr_assert_eq(atomic_load(&cancelled[7]), 1);
}

Test(queue, stop_cancels_running_task_after_grace)
{
	start(1);
	enqueue("acme", "s1", "t1", "wait", 8, 3);
	cr_assert(wait_for(&started[8], 1));
	cr_assert_eq(queue_running(), 1);
	uint64_t t0 = clock_mono_ns();
	queue_stop(200);
	queue_up = false;
	double waited_ms = (double)(clock_mono_ns() - t0) / 1e6;
	cr_assert_geq(waited_ms, 190, "cancelled after %.0f ms, before the 200 ms grace", waited_ms);
	cr_assert_eq(atomic_load(&cancelled[8]), 1);
	cr_assert_eq(atomic_load(&shut[8]), 1, "a stop must say it is a shutdown");
	cr_assert_eq(queue_running(), 0);
}

Test(queue, stop_lets_a_task_finish_within_grace)
{
	start(1);
	enqueue("acme", "s1", "t1", "quick", 9, 3);
	cr_assert(wait_for(&started[9], 1));
	queue_stop(5000);
	queue_up = false;
	cr_assert_eq(atomic_load(&cancelled[9]), 0, "cancelled although it finished within the grace");
	cr_assert_eq(sql_int(state_sql, "t1"), DONE);
}

Test(queue, shutdown_requeue_does_not_dead_letter)
{
	/* "shutdown: requeue rather than finish" (queue.h): a task interrupted by a stop on its last
	 * allowed attempt must come back after the restart, not be dead-lettered */
	start(1);
	enqueue("acme", "s1", "t1", "wait", 10, 0);
	cr_assert(wait_for(&started[10], 1));
	queue_stop(0);
	queue_up = false;
	cr_assert_eq(atomic_load(&shut[10]), 1);
	cr_assert_eq(sql_int(state_sql, "t1"), QUEUED, "interrupted by shutdown, the task was dead-lettered");
}

/* reservations alone commit without an fsync (exec.c, op_may_skip_sync); a message or a finish syncs */
Test(task_ops, a_reservation_commits_without_waiting_for_the_disk)
{
	unsigned long before = store_vfs_wal_syncs(), after_message;
	enqueue("acme", "s1", "t1", "test.task", 7, 3);
	cr_assert_gt(after_message = store_vfs_wal_syncs(), before, "the message's commit did not sync the WAL");
	assert_reserved(reserve("q", 60000), "t1", 1);
	cr_assert_eq(store_vfs_wal_syncs(), after_message, "the reservation's commit synced the WAL");
	cr_assert_eq(task_op(STORE_OP_TASK_FINISH, "acme", "t1", 0, NULL), SOMA_OK);
	cr_assert_gt(store_vfs_wal_syncs(), after_message, "the finish's commit did not sync the WAL");
}
