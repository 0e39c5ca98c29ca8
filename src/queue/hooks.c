/*
 * hooks.c - the task event sink and the revoked-task set (see hooks.h). The set is an open-
 * addressing hash table of fixed size; when it is full the entry that expires first is replaced.
 */
#include "queue/hooks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/str.h"
#include "queue/celery_wire.h"

#define REVOKED_SLOTS	  32768 /* power of two; at most REVOKED_MAX used so probes stay short */
#define REVOKED_MAX	  20000
#define REVOKE_DEFAULT_MS (24LL * 3600 * 1000)

struct revoked {
	char *id;	  /* task id (owned; at most CELERY_ID_BYTES), NULL = free */
	int64_t until_ms; /* expiry (wall clock) */
};

static queue_event_fn sink;
static void *sink_arg;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct revoked *table; /* allocated on the first revoke */
static int used;

static atomic_bool task_events; /* the sink sends Celery's task events (queue_task_events) */

void queue_set_task_events(bool on)
{
	atomic_store(&task_events, on);
}

bool queue_task_events(void)
{
	return atomic_load_explicit(&task_events, memory_order_relaxed);
}

void queue_set_event_sink(queue_event_fn fn, void *arg)
{
	sink_arg = arg;
	sink = fn;
}

void queue_emit(const char *type, const json_t *task, const json_t *fields)
{
	queue_event_fn fn = sink;
	if (fn)
		fn(type, task, fields, sink_arg);
}

/* Rebuilds the table without expired entries; when every entry is live, those that expire
 * first make room. Lock held. */
static void sweep_locked(int64_t now)
{
	struct revoked *old = table;
	struct revoked *fresh = calloc(REVOKED_SLOTS, sizeof(*fresh));
	if (!fresh)
		return;
	int live = 0;
	int64_t drop_until = now, min_until = INT64_MAX;
	for (int i = 0; i < REVOKED_SLOTS; i++) {
		if (old[i].id && old[i].until_ms > now) {
			live++;
			min_until = old[i].until_ms < min_until ? old[i].until_ms : min_until;
		}
	}
	if (live >= REVOKED_MAX)
		drop_until = min_until;
	used = 0;
	for (int i = 0; i < REVOKED_SLOTS; i++) {
		if (!old[i].id || old[i].until_ms <= drop_until) {
			free(old[i].id);
			continue;
		}
		uint32_t j = str_hash(old[i].id) & (REVOKED_SLOTS - 1);
		while (fresh[j].id)
			j = (j + 1) & (REVOKED_SLOTS - 1);
		fresh[j] = old[i];
		used++;
	}
	table = fresh;
	free(old);
}

void queue_revoke(const char *task_id, int64_t until_ms)
{
	if (!task_id || !task_id[0] || strlen(task_id) > CELERY_ID_BYTES)
		return;
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&lock);
	if (!table && !(table = calloc(REVOKED_SLOTS, sizeof(*table)))) {
		pthread_mutex_unlock(&lock);
		return;
	}
	if (used >= REVOKED_MAX)
		sweep_locked(now);
	uint32_t j = str_hash(task_id) & (REVOKED_SLOTS - 1);
	while (table[j].id && strcmp(table[j].id, task_id) != 0)
		j = (j + 1) & (REVOKED_SLOTS - 1);
	if (!table[j].id) {
		if (!(table[j].id = strdup(task_id))) {
			pthread_mutex_unlock(&lock);
			return;
		}
		used++;
	}
	table[j].until_ms = until_ms > 0 ? until_ms : now + REVOKE_DEFAULT_MS;
	pthread_mutex_unlock(&lock);
}

bool queue_is_revoked(const char *task_id)
{
	if (!table || !task_id) /* the common case: nothing was ever revoked */
		return false;
	bool hit = false;
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&lock);
	uint32_t j = str_hash(task_id) & (REVOKED_SLOTS - 1);
	for (; table[j].id; j = (j + 1) & (REVOKED_SLOTS - 1)) {
		if (strcmp(table[j].id, task_id) == 0) {
			hit = table[j].until_ms > now;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	return hit;
}

json_t *queue_revoked_json(void)
{
	json_t *out = json_array();
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&lock);
	for (int i = 0; out && table && i < REVOKED_SLOTS; i++)
		if (table[i].id && table[i].until_ms > now)
			json_array_append_new(out, json_string(table[i].id));
	pthread_mutex_unlock(&lock);
	return out;
}
