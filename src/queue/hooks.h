/*
 * hooks.h - what the task workers tell the rest of the process, and what they ask it.
 *
 * DESIGN: the workers (of any queue driver) report each task's life - received, started,
 * succeeded, failed, retried, revoked, rejected - through queue_emit(); whoever wants those
 * events (the Celery event publisher on `celeryev`, metrics) installs the one sink. Without a
 * sink an event costs a pointer check. Before running a task a worker asks queue_is_revoked():
 * revokes arrive from the task API and from Celery's remote control (`control revoke`), and are
 * kept in a bounded in-memory set like Celery's (up to 20,000, each until it expires).
 * Thread-safe; the sink runs on the worker thread that emitted, so it must not block for long.
 */
#ifndef SOMA_QUEUE_HOOKS_H
#define SOMA_QUEUE_HOOKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* type: Celery's event name without the "task-" prefix (received, started, succeeded, failed,
 * retried, revoked, rejected); task: the task as the worker holds it ({id, name, ...}, borrowed);
 * fields: the event's own fields (borrowed; e.g. {runtime, result} or {exception, traceback}). */
typedef void (*queue_event_fn)(const char *type, const json_t *task, const json_t *fields, void *arg);

/* Installs the sink (NULL removes it). Call before the workers start or after they stop. */
void queue_set_event_sink(queue_event_fn fn, void *arg);
/* Whether the sink sends Celery's task events (celery.events, `control enable_events`): only then
 * do the workers copy into the task what those events repeat from the message (root_id,
 * parent_id, argsrepr, ...), off the hot path otherwise. Any thread. */
void queue_set_task_events(bool on);
bool queue_task_events(void);
/* Reports an event; fields may be NULL. Takes no ownership. */
void queue_emit(const char *type, const json_t *task, const json_t *fields);

/* Marks task_id revoked until until_ms (wall clock ms; 0: for a day). */
void queue_revoke(const char *task_id, int64_t until_ms);
/* True when task_id was revoked and the revoke has not expired. */
bool queue_is_revoked(const char *task_id);
/* The revoked ids still in force (for `inspect revoked`). Caller owns. */
json_t *queue_revoked_json(void);

#endif
