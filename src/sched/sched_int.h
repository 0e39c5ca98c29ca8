/*
 * sched_int.h - what the files of src/sched share: beat's schedule entries, its lock and
 * state store, and the control side's outgoing message queue.
 */
#ifndef SOMA_SCHED_SCHED_INT_H
#define SOMA_SCHED_SCHED_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "redis/conn.h"
#include "sched/cron.h"
#include "sched/sched.h"

#define BEAT_NAME_MAX	 40 /* schedule names: 1..40 of [A-Za-z0-9_-], so ids stay <= 64 */
#define BEAT_ENTRIES_MAX 256
#define BEAT_KEY_LOCK	 "soma:beat:lock"
#define BEAT_KEY_LAST	 "soma:beat:last"
#define BEAT_KEY_RAN	 "soma:beat:ran"
#define BEAT_KEY_DEF	 "soma:beat:def" /* name -> the timing its watermark was written for */
#define BEAT_NODE_MAX	 160		 /* node id: <nodename (80)>:<pid>:<32 hex> */
#define BEAT_DEF_LEN	 16		 /* hex digits of a timing's hash */

struct beat_entry {
	char name[BEAT_NAME_MAX + 1];	 /* schedule name, part of every run's task id */
	char task[129];			 /* task name, e.g. soma.noop */
	char queue[65];			 /* queue of its runs */
	char tenant[65];		 /* tenant its runs belong to */
	char cron_text[128];		 /* the cron expression as written, or "" */
	int64_t every_s;		 /* interval in seconds (due times are its multiples); 0 for cron */
	struct cron_expr cron;		 /* parsed cron_text */
	json_t *args;			 /* owned positional arguments */
	json_t *kwargs;			 /* owned keyword arguments */
	int max_retries;		 /* retries of each run */
	int64_t last_due;		 /* watermark (unix s): every due time <= it is accounted for; 0 unknown */
	int64_t last_run;		 /* due time (unix s) of the last run published; 0 none */
	char def[BEAT_DEF_LEN + 1];	 /* hash of the timing (every_s or cron text) */
	char def_seen[BEAT_DEF_LEN + 1]; /* the hash stored with the watermark; "" none */
};

/* Reads the JSON schedule file: [{name, task, every_s | cron, args?, kwargs?, queue?, tenant?,
 * max_retries?}]. *out is malloc'd (beat_entries_free). False with a sentence in why. */
bool beat_file_load(const char *path, struct beat_entry **out, int *n, char *why, size_t why_cap);
void beat_entries_free(struct beat_entry *e, int n);
/* The first due time of e strictly after `after` (unix s); -1 when there is none. */
int64_t beat_next_due(const struct beat_entry *e, int64_t after);
/* True when t is itself a due time of e. */
bool beat_is_due_time(const struct beat_entry *e, int64_t t);

/* ---- the leader lock and the last-due watermarks (beat_state.c) ---- */
struct beat_state;
/* Redis-backed when redis_url is non-empty, else a file under data_dir. Caller frees. */
struct beat_state *beat_state_new(const char *redis_url, const char *data_dir, const char *node, int ttl_ms);
void beat_state_free(struct beat_state *s);
bool beat_state_shared(const struct beat_state *s);
/* Takes or renews the lock; true while this node holds it (always for the file state). */
bool beat_state_lead(struct beat_state *s);
/* True while this node holds the lock as far as it knows (lead's last answer). */
bool beat_state_held(const struct beat_state *s);
/* True when a run may be published now: the lock is held, cannot have expired, and no write to
 * Redis failed since its last successful renewal (renews first when the lock is about to expire). */
bool beat_state_may_publish(struct beat_state *s);
/* True while the lock, as last renewed, cannot have expired yet. */
bool beat_state_lock_valid(const struct beat_state *s);
/* Releases the lock when held (clean stop: another node takes over at once). */
void beat_state_release(struct beat_state *s);
/* The holder of the lock (node id) into out, "" when none or unknown. */
void beat_state_leader(struct beat_state *s, char *out, size_t cap);
/* Loads every schedule's watermark, last run and timing hash into e[] (0 / "" for those without). */
bool beat_state_load(struct beat_state *s, struct beat_entry *e, int n);
/* Records e's watermark, last run and timing hash (def_seen), fenced by the lock: false when the lock is lost (or Redis
 * failed). */
bool beat_state_record(struct beat_state *s, const struct beat_entry *e);

/* ---- the control side (control.c, pidbox.c, cluster.c) ---- */
#define CTL_QUEUE_MAX 10000 /* outgoing messages waiting for the publisher; more are dropped */

enum ctl_kind {
	CTL_EVENT,	    /* v: an event object; published on /<db>.celeryev/<type with . for -> */
	CTL_REPLY,	    /* v: reply body {node: value}; a: reply exchange; b: routing key (oid); c: ticket */
	CTL_BROADCAST,	    /* v: a pidbox request body; published on /<db>.celery.pidbox */
	CTL_REVOKE_CHECKED, /* a: task id, b: tenant, c: "admin" or "": see sched_control_revoke_checked */
	CTL_HEARTBEAT,	    /* send a worker-heartbeat now (the `heartbeat` cast) */
};

/* Queues a message for the publisher; takes v and the strings (copies them). False (v freed)
 * when the queue is full or the control side is stopped. Any thread. */
bool ctl_enqueue(enum ctl_kind kind, json_t *v, const char *a, const char *b, const char *c);
/* A new event {type, hostname, timestamp, utcoffset, pid, clock}; caller owns. */
json_t *ctl_event_new(const char *type);
/* Lamport clock: the next value, and merging a clock seen on a received message. */
uint64_t ctl_clock_next(void);
void ctl_clock_seen(uint64_t remote);
/* Task events on or off (celery.events, enable_events / disable_events). */
void ctl_task_events_set(bool on);
bool ctl_task_events(void);
/* Tasks finished by this node (for stats and heartbeats). */
uint64_t ctl_processed(void);
/* The worker-* fields shared by online, heartbeat, offline: adds them to ev. */
void ctl_worker_fields(json_t *ev);
/* Tasks finished by this node per task name: {name: count}. Caller owns. */
json_t *ctl_totals_json(void);
/* The hooks.h sink (events.c). */
void ctl_on_task_event(const char *type, const json_t *task, const json_t *fields, void *arg);
/* Seconds since the control side started. */
double ctl_uptime_s(void);

/* The pidbox listener (pidbox.c): its own connection and thread. */
enum soma_err pidbox_start(const char *redis_url, char *why, size_t why_cap) SOMA_MUST_CHECK;
void pidbox_stop(void);
/* The reply of method for this node ({"error": ...} for a method it does not do; NULL: "hello", no
 * reply). Caller owns. */
json_t *pidbox_handle(const char *method, json_t *arguments);

/* The cluster registry (cluster.c), run by the publisher on its connection. */
void cluster_register(struct redis_conn *rc, int ttl_ms);
void cluster_unregister(struct redis_conn *rc);
void cluster_refresh(struct redis_conn *rc);
void cluster_reset(void);

#endif
