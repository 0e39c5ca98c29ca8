/*
 * test_bus_cancel.c - cancel notices across nodes (src/bus/cancel.c): what a node with workers
 * does with a notice received on the cancel channel (the listener gets the tenant and the session
 * or the task; malformed notices are ignored), and that without the redis driver a notice goes
 * nowhere (BUS_CANCEL_LOCAL: the caller's direct cancel is all there is). The round trip through
 * Redis between nodes is tests/e2e/test_cluster_cancel.py.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus_int.h"

static int calls;
static char got_tenant[80], got_session[80], got_task[80];
static bool got_keep;

static void on_cancel(const char *tenant, const char *session_id, const char *task_id, bool keep_partial)
{
	calls++;
	snprintf(got_tenant, sizeof(got_tenant), "%s", tenant);
	snprintf(got_session, sizeof(got_session), "%s", session_id ? session_id : "(none)");
	snprintf(got_task, sizeof(got_task), "%s", task_id ? task_id : "(none)");
	got_keep = keep_partial;
}

static void dispatch(const char *text)
{
	bus_cancel_dispatch(text, strlen(text));
}

Test(bus_cancel, another_nodes_notice_reaches_the_listener)
{
	calls = 0;
	dispatch("{\"node\":\"elsewhere\",\"tenant\":\"t1\",\"session\":\"s1\",\"keep\":true}");
	cr_assert_eq(calls, 0, "no listener yet: nothing is applied");
	bus_cancel_listen(on_cancel);
	cr_assert(bus_cancel_listening());
	dispatch("{\"node\":\"elsewhere\",\"tenant\":\"t1\",\"session\":\"s1\",\"keep\":true}");
	cr_assert_eq(calls, 1);
	cr_assert_str_eq(got_tenant, "t1");
	cr_assert_str_eq(got_session, "s1");
	cr_assert_str_eq(got_task, "(none)");
	cr_assert(got_keep);
	dispatch("{\"node\":\"elsewhere\",\"tenant\":\"t2\",\"task\":\"task-9\",\"keep\":true}");
	cr_assert_eq(calls, 2);
	cr_assert_str_eq(got_tenant, "t2");
	cr_assert_str_eq(got_session, "(none)");
	cr_assert_str_eq(got_task, "task-9");
	dispatch("{\"node\":\"elsewhere\",\"tenant\":\"t1\",\"session\":\"s2\",\"keep\":false}");
	cr_assert_eq(calls, 3);
	cr_assert_not(got_keep, "a delete's notice does not keep the partial reply");
	bus_cancel_listen(NULL);
}

Test(bus_cancel, malformed_notices_are_ignored)
{
	bus_cancel_listen(on_cancel);
	calls = 0;
	const char *bad[] = {"",
			     "not json",
			     "[]",
			     "{\"tenant\":\"t1\",\"session\":\"s1\"}",
			     "{\"node\":\"n\",\"session\":\"s1\"}",
			     "{\"node\":\"n\",\"tenant\":\"t1\"}",
			     "{\"node\":\"n\",\"tenant\":1,\"session\":\"s1\"}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		dispatch(bad[i]);
	cr_assert_eq(calls, 0);
	bus_cancel_listen(NULL);
}

Test(bus_cancel, without_the_redis_driver_nobody_else_is_told)
{
	cr_assert_eq(bus_init(1000), SOMA_OK);
	cr_assert_eq(bus_cancel_notify("t1", "s1", NULL, true), BUS_CANCEL_LOCAL);
	cr_assert_eq(bus_cancel_notify("t1", NULL, "task-1", true), BUS_CANCEL_LOCAL);
	bus_deinit();
}
