/*
 * handoff.h - early start of a chat reply (queue.early_start, local queue only): the message's
 * task is handed to an idle conversation worker before the message commits, with a commit gate
 * that tells the worker when (and whether) the message committed.
 *
 * DESIGN: the gateway asks queue_handoff for an idle worker of the task's queue before it submits
 * the MESSAGE op. When one is waiting, the worker takes the task in memory (no reservation round
 * trip, no wake-up of every idle worker) and the op inserts the task already reserved by that
 * worker (attempts 1, reserved_until = now + visibility timeout): no other worker takes it, and a
 * crash redelivers it after the timeout as for any reserved task. The gate is shared by the op
 * (its settled callback, on the store thread, after the commit hook published the user event)
 * and the worker; it goes pending -> committed(seq) or failed once. The worker reads the context
 * and calls the LLM at once but publishes, audits, stores and acks nothing until the gate is
 * committed; failed: it drops the reply and returns to idle.
 */
#ifndef SOMA_QUEUE_HANDOFF_H
#define SOMA_QUEUE_HANDOFF_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum gate_state {
	GATE_PENDING,	/* the message's transaction has not settled */
	GATE_COMMITTED, /* committed and its event published (seq known) */
	GATE_FAILED,	/* not committed: the task row does not exist */
};

struct commit_gate;

/* A pending gate with one reference (the caller's). NULL on OOM. */
struct commit_gate *commit_gate_new(void);
/* One more reference; returns g. */
struct commit_gate *commit_gate_ref(struct commit_gate *g);
/* Drops a reference; the last frees it. Accepts NULL. */
void commit_gate_unref(struct commit_gate *g);
/* Settles a pending gate (later calls are ignored): committed with the event's seq, or failed. */
void commit_gate_settle(struct commit_gate *g, bool committed, int64_t seq);
/* The state now, without waiting; *seq (may be NULL) gets the seq once committed. */
enum gate_state commit_gate_state(struct commit_gate *g, int64_t *seq);
/* Waits until the gate is settled; returns GATE_COMMITTED or GATE_FAILED. */
enum gate_state commit_gate_wait(struct commit_gate *g, int64_t *seq);

/* Leaves fn to run on the settling thread, under g's lock, when g commits (not when it fails):
 * fn(arg, seq) must be short and must not touch g. fn NULL removes the hook; after that returns
 * fn will not run. False (nothing left) when g is already settled. */
bool commit_gate_on_commit(struct commit_gate *g, void (*fn)(void *arg, int64_t seq), void *arg);

typedef void (*gate_fn)(void *arg);
/* Holds on_commit(arg) (may be NULL) until the commit: it runs once the gate is committed - at
 * once on this thread when it is already, else on the thread that settles it, before any waiter
 * wakes - and never when the commit fails. release(arg) (may be NULL) runs after it, or instead
 * of it, in every case (at the latest when the last reference goes). One per gate: a second call
 * while one is held runs release(arg) only. */
void commit_gate_hold(struct commit_gate *g, gate_fn on_commit, gate_fn release, void *arg);

/* Hands task (a new reference is taken; {id, name, queue, tenant, session_id, payload,
 * attempts, max_retries, message}) with gate (a reference is taken) to an idle worker of the
 * task's queue. True when one took it: worker (cap >= 64) gets its id and *visibility_ms the
 * reservation time the task must be inserted with; the caller then submits the message's op and
 * only after that calls queue_handoff_start(worker). False (nothing taken): queue.early_start is
 * off, the queue driver is not local, the process is stopping, or no worker of that queue is
 * idle - the task then goes the ordinary way. Any thread. */
bool queue_handoff(json_t *task, struct commit_gate *gate, char *worker, size_t cap, int64_t *visibility_ms);
/* Wakes the worker queue_handoff gave a task to (its id in worker). Not done by queue_handoff
 * itself: on a machine with few cores the woken worker pre-empts the thread that hands off, which
 * then submits the message's commit late - and the reply publishes nothing before that commit.
 * Call it once the op is submitted, whatever the submission's outcome (a worker not woken takes
 * its task at its next idle poll only). Any thread. */
void queue_handoff_start(const char *worker);
/* Whether queue_handoff could take a task now (early start on, local queue, some worker idle),
 * without the workers' lock: lets a caller skip building the hand-off when no worker waits, as
 * under load. A hint - queue_handoff decides. Any thread. */
bool queue_handoff_possible(void);

#endif
