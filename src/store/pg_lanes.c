/*
 * pg_lanes.c - the message lanes of the PostgreSQL driver (see pg_int.h): the connections and
 * threads that commit MESSAGE ops (one statement each, pg_message.c) as soon as they arrive,
 * beside the group-commit writer instead of inside its batches.
 *
 * DESIGN: store_submit hands a MESSAGE to pg_lanes_take on the submitting (io) thread, which
 * builds its statement there and queues it on a lane: the lane of its session while an earlier
 * message of that session is queued or in flight (a session table by hash counts them), else the first lane
 * up and not full (lane_pick). Each lane is one connection and one thread: it takes everything queued
 * (up to GROUP_MAX), in session order, and sends it as one pipeline - BEGIN, the statements, COMMIT, Sync:
 * one round trip and one WAL flush - and once the COMMIT is answered sends what queued meanwhile,
 * then completes the committed ops while PostgreSQL runs that (lane_main). So a message that
 * finds a lane idle waits for one commit, not for a batch cycle. Guarantees:
 *  - a session's messages commit in the order they were taken (one lane, FIFO, one transaction
 *    in flight per lane), so their seqs follow it; they are published (the commit hook) in that
 *    order too, before the session can move to another lane;
 *  - nothing is completed before its COMMIT is answered;
 *  - a statement that fails aborts its pipeline: that message gets its error, the others (nothing
 *    applied to an op yet) go out again: it fails alone and leaves no gap in its session's seqs;
 *  - a lost connection: after a confirmed COMMIT its messages are in. Found lost before the
 *    COMMIT could run - its send never reached the COMMIT, or the server failed an item of the
 *    transaction (the 57P01 of pg_terminate_backend, a restart) - nothing was applied: the lane
 *    connects again at once and sends the group again (pg_lane_txn.c, a few times at most), so a
 *    message that meets a session the server just ended, before the idle read saw it, is not a
 *    503. With the COMMIT's answer lost, each message found by its event row on a new connection
 *    is in, the rest get 503 (pg_fast_find_committed); a lane that cannot reconnect at once tries
 *    again with the connection's backoff (pg_exec.c).
 * Locking: one mutex guards the queues, the counts and the session table; a lane's connection is
 * its thread's alone, and no lock is held while it waits for PostgreSQL.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/str.h"
#include "store/pg_int.h"
#include "store/store_int.h"

#define GROUP_MAX	   256	 /* messages in one lane transaction */
#define QUEUE_MAX	   65536 /* messages queued or in flight over all lanes; past it: 503 */
#define SLOTS		   4096	 /* entries of the session table (a power of two) */
#define LANE_FILL	   32	 /* messages a lane holds before the next lane is used (lane_pick) */
#define LANE_IDLE_CHECK_MS 1000	 /* an idle lane reads its session for a server-side end this often */

struct lane {
	struct pg_lanes *owner;	     /* the lanes it belongs to */
	struct pgconn c;	     /* its connection: its thread's alone once started */
	pthread_t tid;		     /* its thread */
	bool started;		     /* tid runs */
	pthread_cond_t ready;	     /* signalled when a message is queued, and on stop */
	struct pg_fast *head, *tail; /* queued messages, oldest first */
	size_t queued;		     /* how many */
	size_t busy;		     /* messages taken and not yet completed (at most two groups) */
	bool down;		     /* its connection is down: new sessions go to the other lanes */
	int64_t retry_ms;	     /* while down: when its thread tries to reconnect (monotonic ms) */
};

struct pg_lanes {
	struct store *st;     /* the store whose hooks run on commit (borrowed) */
	pthread_mutex_t lock; /* guards the lanes' queues, busy, down, retry_ms and the fields below */
	bool stopping;	      /* no message is taken; the lanes drain their queues and exit */
	size_t total;	      /* messages queued or in flight over all lanes */
	int n;		      /* lanes */
	struct lane lane[PG_LANES_MAX];
	struct {
		int lane;	/* the lane its messages go to while count > 0 */
		unsigned count; /* its messages queued or in flight */
	} slot[SLOTS];		/* sessions by hash; sessions that share an entry share a lane */
};

static unsigned session_hash(const char *id)
{
	return str_hash(id);
}

/* ---- the lanes' threads ------------------------------------------------------------------------ */

/* Hands the committed tasks of g stored claimed for the relay to it, in commit order; false when
 * none was taken (they wait for their lease; the task hook is called all the same). */
static bool hand_tasks(struct store *st, struct pg_fast **g, size_t n)
{
	bool (*hand)(json_t *, void *) = atomic_load(&st->task_relay);
	json_t *rows = hand ? json_array() : NULL;
	for (size_t i = 0; rows && i < n; i++) {
		if (g[i]->relayed && g[i]->op->err == SOMA_OK &&
		    json_array_append_new(rows, pg_fast_task_row(g[i])) != 0)
			break; /* (out of memory: the rest wait for their lease) */
	}
	if (!rows || json_array_size(rows) == 0) {
		json_decref(rows);
		return false;
	}
	return hand(rows, st->task_relay_arg);
}

/* Completes the ops of a settled group (lock not held): their outcomes, the tasks the relay
 * claimed handed to it, the task hook when one committed a task some worker or relay must
 * reserve, then each op's commit hook and completion, in order. */
static void group_complete(struct store *st, struct pg_fast **g, size_t n)
{
	bool tasks = false, relayed = false;
	for (size_t i = 0; i < n; i++) {
		pg_fast_apply(g[i]);
		bool task = g[i]->op->err == SOMA_OK && g[i]->op->task;
		/* a task handed to its worker already (queue/handoff.h) wakes nobody: it is reserved */
		tasks |= task && !g[i]->op->worker[0] && !g[i]->relayed;
		relayed |= task && g[i]->relayed;
	}
	if (relayed && !hand_tasks(st, g, n))
		tasks = true;
	if (tasks && st->task_hook)
		st->task_hook(st->task_hook_arg);
	for (size_t i = 0; i < n; i++) {
		store_op_complete(st, g[i]->op); /* the op is its done()'s from here */
		g[i]->op = NULL;
	}
}

/* While the lane is idle: waits for a message, but only until its reconnect is due when it is
 * down, and at most LANE_IDLE_CHECK_MS when it is up; then, still idle, an up lane reads its
 * session for an end the server sent meanwhile (pg_terminate_backend, a restart), so one that had
 * no traffic is not found lost by its next message (a 503), and either tries to be up. Called and
 * returns with the lock held. */
static void lane_wait(struct pg_lanes *L, struct lane *ln)
{
	struct timespec ts; /* the lanes' condition variables use CLOCK_MONOTONIC, as pg_exec.c's retry_ms */
	if (ln->down) {
		ts = (struct timespec){(time_t)(ln->retry_ms / 1000), (long)(ln->retry_ms % 1000) * 1000000L};
	} else {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += LANE_IDLE_CHECK_MS / 1000;
	}
	int rc = pthread_cond_timedwait(&ln->ready, &L->lock, &ts);
	if (rc != ETIMEDOUT || ln->head || L->stopping)
		return;
	bool was_down = ln->down;
	pthread_mutex_unlock(&L->lock);
	if (!was_down)
		pg_conn_check_idle(&ln->c);
	bool up = pg_conn_ready(&ln->c) == SOMA_OK;
	int64_t retry = ln->c.retry_ms;
	pthread_mutex_lock(&L->lock);
	ln->down = !up;
	ln->retry_ms = retry;
}

/* Takes up to GROUP_MAX queued messages into g, marks them in flight. Lock held. */
static size_t lane_take(struct lane *ln, struct pg_fast **g)
{
	size_t n = 0;
	while (ln->head && n < GROUP_MAX) {
		g[n++] = ln->head;
		ln->head = ln->head->next;
	}
	if (!ln->head)
		ln->tail = NULL;
	ln->queued -= n;
	ln->busy += n;
	return n;
}

/* Completes a settled group and frees it (lock not held); then, with the lock, lets its sessions
 * move to other lanes. */
static void group_release(struct pg_lanes *L, struct lane *ln, struct pg_fast **g, size_t n)
{
	unsigned slots[GROUP_MAX];
	for (size_t i = 0; i < n; i++)
		slots[i] = g[i]->slot;
	group_complete(L->st, g, n);
	for (size_t i = 0; i < n; i++)
		pg_fast_free(g[i]);
	pthread_mutex_lock(&L->lock);
	for (size_t i = 0; i < n; i++) /* published: the session may move to another lane */
		L->slot[slots[i]].count--;
	L->total -= n;
	ln->busy -= n;
	pthread_mutex_unlock(&L->lock);
}

/* The lane's loop. A settled group is completed (commit hooks, replies) after the next group's
 * transaction is sent, so PostgreSQL runs that one meanwhile instead of idling (~1/3 of the lane
 * backend's time at wrk -c20): groups complete in the order they committed, one transaction is in
 * flight, a session keeps its lane until its group completed. The next group is taken only while
 * the connection is up. */
static void *lane_main(void *arg)
{
	struct lane *ln = arg;
	struct pg_lanes *L = ln->owner;
	struct pg_fast *buf[2][GROUP_MAX], **g = buf[0], **prev = buf[1];
	size_t n_prev = 0;
	pthread_setname_np(pthread_self(), "soma-pg-lane");
	pthread_mutex_lock(&L->lock);
	for (;;) {
		if (!ln->head && !n_prev) {
			if (L->stopping)
				break;
			lane_wait(L, ln);
			continue;
		}
		size_t n = n_prev && !pg_conn_up(&ln->c) ? 0 : pg_fast_sort_by_session(g, lane_take(ln, g));
		pthread_mutex_unlock(&L->lock);
		enum pg_sent sent = n ? pg_lane_send(&ln->c, g, n) : PG_SENT_NONE;
		if (n_prev)
			group_release(L, ln, prev, n_prev);
		pg_lane_run(&ln->c, g, n, sent);
		bool down = !pg_conn_up(&ln->c);
		struct pg_fast **t = prev;
		prev = g;
		g = t;
		n_prev = n;
		pthread_mutex_lock(&L->lock);
		ln->down = down;
		ln->retry_ms = ln->c.retry_ms;
	}
	pthread_mutex_unlock(&L->lock);
	return NULL;
}

/* ---- taking messages --------------------------------------------------------------------------- */

/* The first lane that is up and holds fewer than LANE_FILL messages; else the least busy lane
 * that is up (any lane when all are down). Filling the first lane before using the next keeps
 * the transactions few and large: on the shared 2-core machine (wrk -c20, three same-run
 * comparisons at load 5-7) one lane gave 1.18-1.40x the requests/s of two lanes used evenly and
 * 1.32-1.78x of four, each extra concurrent commit costing PostgreSQL CPU and one more WAL
 * flush. The other lanes take the overflow and a down lane's new sessions. Lock held. */
static int lane_pick(struct pg_lanes *L)
{
	int best = 0;
	size_t best_load = SIZE_MAX;
	for (int i = 0; i < L->n; i++) {
		struct lane *ln = &L->lane[i];
		size_t load = ln->queued + ln->busy;
		if (!ln->down && load < LANE_FILL)
			return i;
		load += ln->down ? QUEUE_MAX : 0;
		if (load < best_load) {
			best = i;
			best_load = load;
		}
	}
	return best;
}

bool pg_lanes_take(struct store *st, struct store_op *op, enum soma_err *err)
{
	struct pg_lanes *L = st->pg ? st->pg->lanes : NULL;
	if (!L || op->kind != STORE_OP_MESSAGE)
		return false;
	/* the JSON work, on the caller's thread; the task claimed for the relay when it takes it */
	struct pg_fast *f = pg_fast_new(op, atomic_load(&st->task_relay) ? st->task_relay_lease_ms : 0);
	if (!f)
		return false;
	f->slot = session_hash(op->session_id) & (SLOTS - 1);
	pthread_mutex_lock(&L->lock);
	if (L->stopping || L->total >= QUEUE_MAX) {
		pthread_mutex_unlock(&L->lock);
		pg_fast_free(f);
		*err = SOMA_ERR_UNAVAILABLE;
		return true;
	}
	if (L->slot[f->slot].count++ == 0)
		L->slot[f->slot].lane = lane_pick(L);
	struct lane *ln = &L->lane[L->slot[f->slot].lane];
	f->next = NULL;
	if (ln->tail)
		ln->tail->next = f;
	else
		ln->head = f;
	ln->tail = f;
	ln->queued++;
	L->total++;
	pthread_cond_signal(&ln->ready);
	pthread_mutex_unlock(&L->lock);
	*err = SOMA_OK;
	return true;
}

/* ---- start and stop ---------------------------------------------------------------------------- */

void pg_lanes_stop(struct pg_lanes *L)
{
	if (!L)
		return;
	pthread_mutex_lock(&L->lock);
	L->stopping = true;
	for (int i = 0; i < L->n; i++)
		pthread_cond_broadcast(&L->lane[i].ready);
	pthread_mutex_unlock(&L->lock);
	for (int i = 0; i < L->n; i++) {
		if (L->lane[i].started)
			pthread_join(L->lane[i].tid, NULL);
	}
	for (int i = 0; i < L->n; i++) {
		pg_conn_close(&L->lane[i].c);
		pthread_cond_destroy(&L->lane[i].ready);
	}
	pthread_mutex_destroy(&L->lock);
	free(L);
}

enum soma_err pg_lanes_start(struct store *st, int n, struct pg_lanes **out)
{
	*out = NULL;
	if (n < 1 || n > PG_LANES_MAX)
		return SOMA_ERR_INVALID;
	struct pg_lanes *L = calloc(1, sizeof(*L));
	if (!L)
		return SOMA_ERR_NOMEM;
	L->st = st;
	L->n = n;
	pthread_mutex_init(&L->lock, NULL);
	pthread_condattr_t attr; /* lane_wait waits until a monotonic time (pg_exec.c's clock) */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	for (int i = 0; i < n; i++) {
		L->lane[i].owner = L;
		pthread_cond_init(&L->lane[i].ready, &attr);
	}
	pthread_condattr_destroy(&attr);
	enum soma_err err = SOMA_OK;
	char why[512];
	for (int i = 0; i < n && err == SOMA_OK; i++) {
		err = pg_conn_open(&L->lane[i].c, st->pg->url, "message lane", why, sizeof(why));
		L->lane[i].c.resends = true; /* (after the open: it clears the struct) */
		if (err != SOMA_OK)
			log_error("store",
				  "cannot connect message lane %d to PostgreSQL at %s (%s); lower "
				  "store.message_connections or raise the server's max_connections",
				  i + 1, st->pg->where, why);
	}
	for (int i = 0; i < n && err == SOMA_OK; i++) {
		if (pthread_create(&L->lane[i].tid, NULL, lane_main, &L->lane[i]) != 0)
			err = SOMA_ERR_INTERNAL;
		else
			L->lane[i].started = true;
	}
	if (err != SOMA_OK) {
		pg_lanes_stop(L);
		return err;
	}
	*out = L;
	return SOMA_OK;
}
