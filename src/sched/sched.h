/*
 * sched.h - beat (the scheduler of periodic tasks) and Celery's remote view of this process:
 * events on `celeryev`, the pidbox (`celery inspect` / `celery control`), revokes, and the
 * cluster's workers.
 *
 * DESIGN: beat reads its schedules from beat.schedule_file at start. Every node that runs
 * workers competes for one leader lock in Redis (SET NX PX, renewed by compare-and-expire);
 * only the leader publishes, through the store (the transactional outbox), each run under a
 * deterministic task id `beat-<name>-<due unix s>`, and records the schedule's last due time in
 * Redis fenced by the lock. A node that takes over continues from the recorded last due time:
 * runs missed while nobody led are published (up to beat.max_catchup each), and a run that the
 * dead leader published but did not record is found in the store by its id and not published
 * again. Without redis.url the one process is the leader and keeps the last due times in
 * data.dir/beat-state.json. Beat's thread owns all of this; the HTTP side reads a snapshot.
 *
 * The control side (queue.driver=redis only) has two threads: a publisher that owns a bounded
 * queue of outgoing messages (events, pidbox replies, revoke broadcasts) so a worker thread that
 * emits an event never waits on Redis, and a pidbox listener subscribed to `/<db>.celery.pidbox`.
 */
#ifndef SOMA_SCHED_SCHED_H
#define SOMA_SCHED_SCHED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "store/store.h"

/* Loads the schedules and starts beat's thread over st. lead: this node may become the
 * leader (it runs workers); otherwise it only follows the leader's state for GET
 * /v1/schedules. SOMA_OK without doing anything when beat is disabled or has no file. */
enum soma_err sched_beat_start(struct store *st, bool lead, char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Loads and validates beat.schedule_file as sched_beat_start does, and frees it (for `config
 * check` and `run --dry-run`): false with the same message in why when run would refuse it; true
 * when beat is disabled or has no file. */
bool sched_beat_check(char *why, size_t why_cap);
void sched_beat_stop(void);
/* {schedules:[{name, task, queue, every_s|cron, args, kwargs, last_run_at, next_run_at}],
 *  leader, node, is_leader, lock} as of beat's last tick. Any thread; caller owns. */
json_t *sched_beat_status_json(void);
/* soma_beat_leader: 1 while this node holds beat's lock, 0 while it follows, -1 when beat does
 * not run here (disabled, no schedule file, or not started). Any thread. */
int sched_beat_leader(void);
/* Health line: false when beat is not configured. */
bool sched_beat_describe(char *out, size_t cap);

/* Starts the Celery control side on queue.driver=redis: the publisher and (with workers) the
 * pidbox listener, worker-online, heartbeats and the task event sink. workers: this node runs
 * workers. */
enum soma_err sched_control_start(bool workers, char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Sends worker-offline (when online), stops the threads, removes the sink. */
void sched_control_stop(void);
bool sched_control_running(void);
/* Health line of the control side into out; false while Redis does not answer. Any thread. */
bool sched_control_describe(char *out, size_t cap);
/* Broadcasts a pidbox `revoke` of task_id to every worker of the cluster (Python ones too) and
 * marks it revoked here; non-blocking (queued to the publisher). */
enum soma_err sched_control_revoke(const char *task_id) SOMA_MUST_CHECK;
/* The outcome of a checked revoke: SOMA_OK (broadcast, REVOKED stored), SOMA_ERR_NOT_FOUND
 * (another tenant's task), SOMA_ERR_CONFLICT (finished: status is its state), or
 * SOMA_ERR_UNAVAILABLE (Redis does not answer); owner: the task's tenant by its owner key, "" when
 * it has none (both borrowed for the call). Runs on the publisher thread. */
typedef void (*sched_revoke_fn)(enum soma_err err, const char *status, const char *owner, void *arg);
/* The task API's revoke on queue.driver=redis, done by the publisher thread: the task must be
 * tenant's (its owner key soma-task-owner-<id>, written by the relay; a task without one - sent
 * by a Python producer, a beat run - only an admin may revoke; mine: the caller may revoke any id, as
 * an admin, or a tenant whose task the store still holds, not relayed yet) and not finished (its
 * result meta); then the revoke is broadcast and a REVOKED result stored, so GET /v1/tasks/{id}
 * says REVOKED at once. SOMA_ERR_UNAVAILABLE when it cannot be queued (done is then not called). */
enum soma_err sched_control_revoke_checked(const char *task_id, const char *tenant, bool mine, sched_revoke_fn done,
					   void *arg) SOMA_MUST_CHECK;
/* Every node's workers as of the last heartbeats seen: [{node, pid, active, processed, loadavg,
 * last_heartbeat_at, workers:[...]}]. Any thread; caller owns. */
json_t *sched_cluster_workers_json(void);
/* This node's Celery nodename, e.g. soma@host. */
const char *sched_nodename(void);

#endif
