/*
 * events.c - Celery's events as this node sends them (interop.md section 1.9): the nodename,
 * the Lamport clock, the standard and worker-* fields, and the task event sink that hooks.h
 * calls on worker threads (see sched.h).
 *
 * DESIGN: the sink runs on the worker thread that emitted, so it only counts and, when task
 * events are on, builds the event object and queues it for the publisher (control.c); it never
 * touches Redis. Field sets are Celery 5.2's; `result` and `exception` are repr strings.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "queue/hooks.h"
#include "queue/queue.h"
#include "sched/sched_int.h"

static atomic_uint_fast64_t lamport;
static atomic_uint_fast64_t processed;
static atomic_bool task_events;
static char nodename[128];
static char sw_sys[64] = "Linux";
static int utcoffset;
static pthread_once_t name_once = PTHREAD_ONCE_INIT;

#define TOTALS_MAX 64 /* task names counted for `inspect stats`; others go under "other" */
static struct {
	char name[64]; /* task name */
	uint64_t n;    /* finished */
} totals[TOTALS_MAX];
static pthread_mutex_t totals_lock = PTHREAD_MUTEX_INITIALIZER;

static void count_finished(const char *name)
{
	if (!name)
		name = "other";
	pthread_mutex_lock(&totals_lock);
	int i = 0;
	for (; i < TOTALS_MAX - 1 && totals[i].name[0] && strcmp(totals[i].name, name) != 0; i++)
		;
	if (!totals[i].name[0])
		snprintf(totals[i].name, sizeof(totals[i].name), "%s", i == TOTALS_MAX - 1 ? "other" : name);
	totals[i].n++;
	pthread_mutex_unlock(&totals_lock);
}

json_t *ctl_totals_json(void)
{
	json_t *out = json_object();
	pthread_mutex_lock(&totals_lock);
	for (int i = 0; i < TOTALS_MAX && totals[i].name[0]; i++)
		json_object_set_new(out, totals[i].name, json_integer((json_int_t)totals[i].n));
	pthread_mutex_unlock(&totals_lock);
	return out;
}

static void name_init(void)
{
	const char *cfg = cfg_str(CFG_CELERY_NODENAME);
	char host[64] = "localhost";
	gethostname(host, sizeof(host) - 1);
	snprintf(nodename, sizeof(nodename), "%s", cfg && cfg[0] ? cfg : "");
	if (!nodename[0])
		snprintf(nodename, sizeof(nodename), "soma@%s", host);
	struct utsname u;
	if (uname(&u) == 0)
		snprintf(sw_sys, sizeof(sw_sys), "%.60s", u.sysname);
	time_t t = time(NULL);
	struct tm tm;
	localtime_r(&t, &tm);
	long west = -tm.tm_gmtoff; /* Python's time.timezone // 3600: hours west of UTC, floored */
	utcoffset = (int)(west >= 0 ? west / 3600 : -((-west + 3599) / 3600));
}

const char *sched_nodename(void)
{
	pthread_once(&name_once, name_init);
	return nodename;
}

uint64_t ctl_clock_next(void)
{
	return atomic_fetch_add(&lamport, 1) + 1;
}

void ctl_clock_seen(uint64_t remote)
{
	uint_fast64_t cur = atomic_load(&lamport);
	while (remote > cur && !atomic_compare_exchange_weak(&lamport, &cur, remote))
		;
	ctl_clock_next();
}

void ctl_task_events_set(bool on)
{
	atomic_store(&task_events, on);
	queue_set_task_events(on);
}

bool ctl_task_events(void)
{
	return atomic_load(&task_events);
}

uint64_t ctl_processed(void)
{
	return atomic_load(&processed);
}

json_t *ctl_event_new(const char *type)
{
	/* first: it sets utcoffset once (pthread_once); as an argument beside utcoffset it could run
	 * after utcoffset was read (C leaves the order unspecified) and the first event said 0 */
	const char *hostname = sched_nodename();
	return json_pack("{s:s, s:s, s:f, s:i, s:i, s:I}", "type", type, "hostname", hostname, "timestamp",
			 (double)clock_wall_ms() / 1000.0, "utcoffset", utcoffset, "pid", (int)getpid(), "clock",
			 (json_int_t)ctl_clock_next());
}

void ctl_worker_fields(json_t *ev)
{
	double la[3] = {0, 0, 0};
	if (getloadavg(la, 3) != 3)
		la[0] = la[1] = la[2] = 0;
	json_t *load =
		json_pack("[f, f, f]", round(la[0] * 100) / 100, round(la[1] * 100) / 100, round(la[2] * 100) / 100);
	json_object_update_new(ev, json_pack("{s:f, s:i, s:I, s:o, s:s, s:s, s:s}", "freq",
					     (double)cfg_int(CFG_CELERY_HEARTBEAT_S), "active", queue_running(),
					     "processed", (json_int_t)ctl_processed(), "loadavg", load, "sw_ident",
					     "somaagent", "sw_ver", SOMA_VERSION, "sw_sys", sw_sys));
}

/* Python's repr, near enough for humans (Flower shows it): strings quoted, the rest as JSON. */
static json_t *repr(const json_t *v)
{
	if (!v || json_is_null(v))
		return json_string("None");
	if (json_is_string(v)) {
		char buf[1024];
		snprintf(buf, sizeof(buf), "'%s'", json_string_value(v));
		return json_string(buf);
	}
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	json_t *out = json_string(s ? s : "?");
	free(s);
	return out;
}

/* A field of the task as the worker holds it: task.key, else task.payload.key. */
static const json_t *task_field(const json_t *task, const char *key)
{
	json_t *v = json_object_get(task, key);
	return v ? v : json_object_get(json_object_get(task, "payload"), key);
}

static void add_received_fields(json_t *ev, const json_t *task)
{
	const json_t *id = json_object_get(task, "id"), *root = json_object_get(task, "root_id");
	const json_t *argsrepr = json_object_get(task, "argsrepr"), *kwrepr = json_object_get(task, "kwargsrepr");
	const json_t *retries = json_object_get(task, "retries");
	json_int_t attempts = json_integer_value(json_object_get(task, "attempts"));
	const json_t *shadow = json_object_get(task, "shadow"); /* Celery's Request.name when sent */
	json_object_set_new(
		ev, "name",
		json_incref((json_t *)(json_string_length(shadow) ? shadow : json_object_get(task, "name"))));
	json_object_set_new(ev, "args",
			    json_is_string(argsrepr) ? json_incref((json_t *)argsrepr)
						     : repr(task_field(task, "args")));
	json_object_set_new(ev, "kwargs",
			    json_is_string(kwrepr) ? json_incref((json_t *)kwrepr) : repr(task_field(task, "kwargs")));
	json_object_set_new(ev, "root_id", json_incref((json_t *)(json_is_string(root) ? root : id)));
	json_object_set(ev, "parent_id", json_object_get(task, "parent_id") ?: json_null());
	json_object_set_new(ev, "retries",
			    json_integer(retries	? json_integer_value(retries)
					 : attempts > 0 ? attempts - 1
							: 0));
	json_object_set(ev, "eta", json_object_get(task, "eta") ?: json_null());
	json_object_set(ev, "expires", json_object_get(task, "expires") ?: json_null());
}

/* The hooks.h sink, on the worker thread that emitted: counts, and queues the event. */
void ctl_on_task_event(const char *type, const json_t *task, const json_t *fields, void *arg)
{
	(void)arg;
	if (strcmp(type, "succeeded") == 0 || strcmp(type, "failed") == 0) {
		atomic_fetch_add(&processed, 1);
		count_finished(json_string_value(json_object_get(task, "name")));
	}
	if (!ctl_task_events())
		return;
	char name[48];
	snprintf(name, sizeof(name), "task-%s", type);
	json_t *ev = ctl_event_new(name);
	if (!ev)
		return;
	json_object_set(ev, "uuid", json_object_get(task, "id") ?: json_null());
	if (strcmp(type, "received") == 0) {
		add_received_fields(ev, task);
	} else if (strcmp(type, "succeeded") == 0) {
		json_t *rt = json_object_get(fields, "runtime");
		json_object_set_new(ev, "result", repr(json_object_get(fields, "result")));
		json_object_set_new(ev, "runtime", json_real(rt ? json_number_value(rt) : 0.0));
	} else if (strcmp(type, "failed") == 0 || strcmp(type, "retried") == 0) {
		json_t *exc = json_object_get(fields, "exception"), *tb = json_object_get(fields, "traceback");
		json_object_set_new(ev, "exception", json_is_string(exc) ? json_incref(exc) : repr(exc));
		json_object_set_new(ev, "traceback", json_string(json_is_string(tb) ? json_string_value(tb) : ""));
	} else if (strcmp(type, "revoked") == 0) {
		json_t *sig = json_object_get(fields, "signum");
		json_object_set_new(ev, "terminated",
				    json_boolean(json_is_true(json_object_get(fields, "terminated"))));
		json_object_set(ev, "signum",
				json_is_integer(sig) ? sig : json_null()); /* Celery: None unless killed */
		json_object_set_new(ev, "expired", json_boolean(json_is_true(json_object_get(fields, "expired"))));
	} else if (strcmp(type, "rejected") == 0) {
		json_object_set_new(ev, "requeue", json_boolean(json_is_true(json_object_get(fields, "requeue"))));
	}
	ctl_enqueue(CTL_EVENT, ev, NULL, NULL, NULL);
}
