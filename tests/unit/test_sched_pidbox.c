/*
 * test_sched_pidbox.c - the remote-control methods (src/sched/pidbox_methods.c) without Redis:
 * the reply shapes Celery's `inspect` and `control` read, revoke into the revoked set, the event
 * switches, and unknown methods answered "not supported" (hello: no reply).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "queue/hooks.h"
#include "queue/worker_steps.h"
#include "sched/sched_int.h"
#include "tasks/tasks.h"

static void setup(void)
{
	struct cfg_errors errs;
	char *const no_env[] = {NULL};
	const char *sets[] = {"celery.nodename=soma@unit", "redis.url=redis://u:pw@h.example:6390/4"};
	struct cfg_load_opts o = {.config_path = "/dev/null", .sets = sets, .nsets = 2, .env = no_env};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK);
}

static void teardown(void)
{
	cfg_unload();
}

TestSuite(pidbox, .init = setup, .fini = teardown);

static bool has_string(json_t *list, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach(list, i, v) if (json_is_string(v) && strcmp(json_string_value(v), s) == 0) return true;
	return false;
}

Test(pidbox, ping_stats_registered_conf)
{
	json_t *r = pidbox_handle("ping", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(r, "ok")), "pong");
	json_decref(r);
	r = pidbox_handle("stats", NULL);
	cr_assert(json_integer_value(json_object_get(r, "pid")) > 0);
	cr_assert(json_is_object(json_object_get(r, "total")) && json_is_object(json_object_get(r, "pool")));
	cr_assert(json_is_string(json_object_get(r, "clock")), "Celery sends the clock as a string");
	json_t *b = json_object_get(r, "broker");
	cr_assert_str_eq(json_string_value(json_object_get(b, "hostname")), "h.example");
	cr_assert_eq(json_integer_value(json_object_get(b, "port")), 6390);
	cr_assert_str_eq(json_string_value(json_object_get(b, "virtual_host")), "4");
	cr_assert_str_eq(json_string_value(json_object_get(b, "userid")), "u");
	char *text = json_dumps(r, 0);
	cr_assert(!strstr(text, "pw"), "never the password: %s", text);
	free(text);
	json_decref(r);
	cr_assert_eq(tasks_register_all(), SOMA_OK);
	r = pidbox_handle("registered", NULL);
	cr_assert(has_string(r, "soma.echo") && has_string(r, "conversation.process") && has_string(r, "soma.tool"));
	for (size_t i = 1; i < json_array_size(r); i++)
		cr_assert(strcmp(json_string_value(json_array_get(r, i - 1)), json_string_value(json_array_get(r, i))) <
				  0,
			  "sorted");
	json_decref(r);
	queue_handlers_clear();
	r = pidbox_handle("conf", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(r, "task_default_queue")), "celery");
	json_decref(r);
	r = pidbox_handle("active", NULL);
	cr_assert(json_is_array(r) && json_array_size(r) == 0, "no workers run here");
	json_decref(r);
	cr_assert_str_eq(sched_nodename(), "soma@unit");
}

Test(pidbox, revoke_and_revoked)
{
	json_t *args = json_pack("{s:[s, s]}", "task_id", "id-1", "id-2");
	json_t *r = pidbox_handle("revoke", args);
	cr_assert_str_eq(json_string_value(json_object_get(r, "ok")), "tasks {'id-1', 'id-2'} flagged as revoked");
	json_decref(r);
	json_decref(args);
	/* with terminate, Celery's answer names the tasks stopped here: none runs in this test */
	args = json_pack("{s:[s], s:b, s:s}", "task_id", "id-2", "terminate", 1, "signal", "SIGKILL");
	r = pidbox_handle("revoke", args);
	cr_assert_str_eq(json_string_value(json_object_get(r, "ok")), "terminate: tasks unknown");
	json_decref(r);
	json_decref(args);
	args = json_pack("{s:[s], s:s}", "task_id", "id-5", "signal", "term"); /* Celery: upper case only */
	r = pidbox_handle("terminate", args);
	cr_assert(json_is_string(json_object_get(r, "error")));
	json_decref(r);
	json_decref(args);
	cr_assert(!queue_is_revoked("id-5"), "a terminate refused flags nothing");
	args = json_pack("{s:s}", "task_id", "id-3");
	json_decref(pidbox_handle("revoke", args));
	json_decref(args);
	cr_assert(queue_is_revoked("id-1") && queue_is_revoked("id-3") && !queue_is_revoked("id-4"));
	r = pidbox_handle("revoked", NULL);
	cr_assert(has_string(r, "id-1") && has_string(r, "id-2") && has_string(r, "id-3"));
	json_decref(r);
	args = json_object();
	r = pidbox_handle("revoke", args);
	cr_assert(json_is_string(json_object_get(r, "error")));
	json_decref(r);
	json_decref(args);
}

Test(pidbox, event_switches_and_unknown_methods)
{
	ctl_task_events_set(false);
	json_t *r = pidbox_handle("enable_events", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(r, "ok")), "task events enabled");
	cr_assert(ctl_task_events());
	json_decref(r);
	r = pidbox_handle("disable_events", NULL);
	cr_assert(!ctl_task_events());
	json_decref(r);
	const char *unsupported[] = {"shutdown", "pool_grow", "rate_limit", "add_consumer"};
	for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		r = pidbox_handle(unsupported[i], NULL);
		cr_assert(strstr(json_string_value(json_object_get(r, "error")), "not supported by this node"));
		json_decref(r);
	}
	cr_assert_null(pidbox_handle("hello", NULL)); /* mingle: no reply */
	r = pidbox_handle("heartbeat", NULL);
	cr_assert(json_is_null(r));
	json_decref(r);
}

Test(pidbox, events_and_clock)
{
	uint64_t c1 = ctl_clock_next();
	ctl_clock_seen(c1 + 100);
	cr_assert(ctl_clock_next() > c1 + 100, "a remote clock moves ours past it");
	json_t *ev = ctl_event_new("worker-heartbeat");
	ctl_worker_fields(ev);
	const char *keys[] = {"type",	"hostname",  "timestamp", "utcoffset", "pid",	 "clock", "freq",
			      "active", "processed", "loadavg",	  "sw_ident",  "sw_ver", "sw_sys"};
	cr_assert_eq(json_object_size(ev), sizeof(keys) / sizeof(keys[0]));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cr_assert(json_object_get(ev, keys[i]), "missing %s", keys[i]);
	cr_assert_eq(json_array_size(json_object_get(ev, "loadavg")), 3);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "hostname")), "soma@unit");
	json_decref(ev);
}

/* The first event of the process carries the zone's offset: ctl_event_new read utcoffset beside
 * the call that sets it (sched_nodename's pthread_once), in an order C leaves open, and GCC read
 * it first, so the first event said 0 (ThreadSanitizer: ctl_event_new against name_init). Each
 * Criterion test is a process of its own: nothing has called sched_nodename before this one. */
Test(pidbox, first_event_has_the_utcoffset)
{
	setenv("TZ", "UTC+5", 1); /* POSIX: 5 hours west of UTC, no daylight saving */
	tzset();
	json_t *ev = ctl_event_new("worker-online");
	cr_assert_eq(json_integer_value(json_object_get(ev, "utcoffset")), 5);
	json_decref(ev);
}
