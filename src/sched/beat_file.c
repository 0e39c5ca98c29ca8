/*
 * beat_file.c - beat's schedule file: parsing and validation of the entries, and their due
 * times (see sched_int.h).
 *
 * DESIGN: every field is checked at start so that a bad file stops the process with the entry
 * and the field at fault, instead of a schedule that silently never runs. Interval due times are
 * the multiples of every_s since the Unix epoch, so every node computes the same due times (and
 * therefore the same task ids) without talking to the others.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "queue/queue.h"
#include "sched/sched_int.h"

static bool valid_name(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9') ||
		      s[n] == '_' || s[n] == '-'))
			return false;
	return n > 0 && n <= BEAT_NAME_MAX;
}

/* Copies an optional string field (default def) of at most cap-1 bytes; false when it is not. */
static bool copy_str(json_t *o, const char *key, const char *def, char *dst, size_t cap)
{
	json_t *v = json_object_get(o, key);
	const char *s = v ? json_string_value(v) : def;
	if (!s || !s[0] || strlen(s) >= cap)
		return false;
	memcpy(dst, s, strlen(s) + 1);
	return true;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ull;
	return h;
}

/* The hash of e's timing (its due times), kept with its watermark to recognise an edit. */
static void timing_hash(struct beat_entry *e)
{
	uint64_t h = 0xcbf29ce484222325ull;
	if (e->every_s) {
		h = fnv1a(h, "every", 5);
		h = fnv1a(h, &e->every_s, sizeof(e->every_s));
	} else {
		const struct cron_expr *c = &e->cron;
		bool any[2] = {c->dom_any, c->dow_any};
		h = fnv1a(h, "cron", 4);
		h = fnv1a(h, &c->minute, sizeof(c->minute));
		h = fnv1a(h, &c->hour, sizeof(c->hour));
		h = fnv1a(h, &c->dom, sizeof(c->dom));
		h = fnv1a(h, &c->month, sizeof(c->month));
		h = fnv1a(h, &c->dow, sizeof(c->dow));
		h = fnv1a(h, any, sizeof(any));
	}
	snprintf(e->def, sizeof(e->def), "%016llx", (unsigned long long)h);
}

static bool parse_entry(json_t *o, struct beat_entry *e, char *why, size_t cap)
{
	json_t *every = json_object_get(o, "every_s"), *cron = json_object_get(o, "cron");
	json_t *args = json_object_get(o, "args"), *kwargs = json_object_get(o, "kwargs");
	json_t *retries = json_object_get(o, "max_retries");
	const char *bad = NULL;
	char route[STORE_ID_MAX + 1]; /* the task's queue by queue.routes, when the entry names none */
	if (!json_is_object(o))
		bad = "is not an object";
	else if (!copy_str(o, "name", NULL, e->name, sizeof(e->name)) || !valid_name(e->name))
		bad = "needs a name of 1 to 40 of A-Z a-z 0-9 _ -";
	else if (!copy_str(o, "task", NULL, e->task, sizeof(e->task)))
		bad = "needs a task name (e.g. \"soma.noop\")";
	else if (!copy_str(o, "queue", queue_route(e->task, route, sizeof(route)), e->queue, sizeof(e->queue)))
		bad = "has a queue that is not a name of 1 to 64 bytes";
	else if (!copy_str(o, "tenant", cfg_str(CFG_AUTH_DEFAULT_TENANT), e->tenant, sizeof(e->tenant)))
		bad = "has a tenant that is not a name of 1 to 64 bytes";
	else if (!every == !cron)
		bad = "needs exactly one of every_s (seconds) and cron (\"m h dom mon dow\")";
	else if (every &&
		 (!json_is_integer(every) || json_integer_value(every) < 1 || json_integer_value(every) > 31536000))
		bad = "has an every_s that is not an integer within 1..31536000";
	else if (args && !json_is_array(args))
		bad = "has args that are not an array";
	else if (kwargs && !json_is_object(kwargs))
		bad = "has kwargs that are not an object";
	else if (retries &&
		 (!json_is_integer(retries) || json_integer_value(retries) < 0 || json_integer_value(retries) > 100))
		bad = "has a max_retries that is not an integer within 0..100";
	if (bad) {
		snprintf(why, cap, "%s", bad);
		return false;
	}
	if (cron) {
		char cwhy[200];
		if (!copy_str(o, "cron", NULL, e->cron_text, sizeof(e->cron_text)) ||
		    !cron_parse(e->cron_text, &e->cron, cwhy, sizeof(cwhy))) {
			snprintf(why, cap, "has a bad cron: %s", json_is_string(cron) ? cwhy : "not a string");
			return false;
		}
		if (cron_next(&e->cron, clock_wall_ms() / 1000) < 0) {
			snprintf(why, cap, "has a cron \"%.64s\" that never fires (no such day in the next five years)",
				 e->cron_text);
			return false;
		}
	}
	e->every_s = every ? json_integer_value(every) : 0;
	timing_hash(e);
	e->args = args ? json_incref(args) : json_array();
	e->kwargs = kwargs ? json_incref(kwargs) : json_object();
	e->max_retries = retries ? (int)json_integer_value(retries) : (int)cfg_int(CFG_QUEUE_MAX_RETRIES);
	return true;
}

bool beat_file_load(const char *path, struct beat_entry **out, int *n, char *why, size_t why_cap)
{
	*out = NULL;
	*n = 0;
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(why, why_cap, "beat.schedule_file %s: %s (line %d)", path, jerr.text, jerr.line);
		return false;
	}
	json_t *list = json_is_object(root) ? json_object_get(root, "schedules") : root;
	size_t count = json_array_size(list);
	if (!json_is_array(list) || count > BEAT_ENTRIES_MAX) {
		snprintf(why, why_cap, "beat.schedule_file %s: expected a JSON array of at most %d schedules", path,
			 BEAT_ENTRIES_MAX);
		json_decref(root);
		return false;
	}
	struct beat_entry *e = calloc(count ? count : 1, sizeof(*e));
	bool ok = e != NULL;
	for (size_t i = 0; ok && i < count; i++) {
		char ewhy[256];
		if (!(ok = parse_entry(json_array_get(list, i), &e[i], ewhy, sizeof(ewhy)))) {
			if (valid_name(e[i].name)) /* named by its name; by its position when it has none */
				snprintf(why, why_cap, "beat.schedule_file %s: schedule \"%s\" %s", path, e[i].name,
					 ewhy);
			else
				snprintf(why, why_cap, "beat.schedule_file %s: schedule %zu %s", path, i + 1, ewhy);
		}
		for (size_t j = 0; ok && j < i; j++) {
			if (strcmp(e[j].name, e[i].name) == 0) {
				snprintf(why, why_cap, "beat.schedule_file %s: two schedules are named %s", path,
					 e[i].name);
				ok = false;
			}
		}
		*n = (int)i + 1;
	}
	json_decref(root);
	if (!ok) {
		if (!e)
			snprintf(why, why_cap, "out of memory");
		beat_entries_free(e, *n);
		*n = 0;
		return false;
	}
	*out = e;
	*n = (int)count;
	return true;
}

bool sched_beat_check(char *why, size_t why_cap)
{
	const char *path = cfg_str(CFG_BEAT_SCHEDULE_FILE);
	struct beat_entry *e = NULL;
	int n = 0;
	if (!cfg_bool(CFG_BEAT_ENABLED) || !path[0])
		return true;
	if (!beat_file_load(path, &e, &n, why, why_cap))
		return false;
	beat_entries_free(e, n);
	return true;
}

void beat_entries_free(struct beat_entry *e, int n)
{
	for (int i = 0; e && i < n; i++) {
		json_decref(e[i].args);
		json_decref(e[i].kwargs);
	}
	free(e);
}

int64_t beat_next_due(const struct beat_entry *e, int64_t after)
{
	if (e->every_s > 0)
		return (after / e->every_s + 1) * e->every_s;
	return cron_next(&e->cron, after);
}

bool beat_is_due_time(const struct beat_entry *e, int64_t t)
{
	return t > 0 && beat_next_due(e, t - 1) == t;
}
