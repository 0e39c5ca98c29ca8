/*
 * test_registry.c - the service registry (src/orchestrator/registry.c): start order, roles,
 * rollback after a critical failure, degraded mode, health aggregation and the plan.
 *
 * DESIGN: fake services append "start:NAME" / "stop:NAME" to one call log, so a test can
 * assert the exact order in which the registry drove them.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "orchestrator/registry.h"

struct fake {
	const char *name;      /* service name */
	enum soma_err fail;    /* what start() returns */
	const char *reason;    /* why start() gives when failing, or NULL */
	enum svc_status state; /* what health() reports */
	const char *detail;    /* health detail, or NULL */
	int polls;	       /* health() calls */
};

static char calls[64][48];
static int ncalls;
static struct registry *reg;
static struct arena arena;
static char why[512];

static void record(const char *verb, const char *name)
{
	cr_assert_lt(ncalls, 64);
	snprintf(calls[ncalls++], sizeof(calls[0]), "%s:%s", verb, name);
}

static enum soma_err fake_start(void *ctx, char *out, size_t cap)
{
	struct fake *f = ctx;
	record("start", f->name);
	if (f->fail != SOMA_OK && f->reason)
		snprintf(out, cap, "%s", f->reason);
	return f->fail;
}

static void fake_stop(void *ctx)
{
	record("stop", ((struct fake *)ctx)->name);
}

static enum svc_status fake_health(void *ctx, char *detail, size_t cap)
{
	struct fake *f = ctx;
	f->polls++;
	if (f->detail)
		snprintf(detail, cap, "%s", f->detail);
	return f->state;
}

static void setup(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT); /* keep the expected failures out of the output */
	reg = registry_new("1.2.3-test");
	cr_assert_not_null(reg);
	arena_init(&arena, 4096, 1 << 16);
	ncalls = 0;
	why[0] = '\0';
}

static void teardown(void)
{
	registry_free(reg);
	arena_deinit(&arena);
	metrics_reset();
}

TestSuite(registry, .init = setup, .fini = teardown);

static void add(struct fake *f, int order, bool critical, unsigned roles)
{
	struct service_def d = {.name = f->name,
				.order = order,
				.critical = critical,
				.roles = roles,
				.start = fake_start,
				.stop = fake_stop,
				.health = fake_health,
				.ctx = f};
	cr_assert_eq(registry_add(reg, &d), SOMA_OK, "add %s", f->name);
}

static void assert_calls(const char *const *want, int n)
{
	char got[1024] = "";
	size_t used = 0;
	for (int i = 0; i < ncalls; i++)
		used += (size_t)snprintf(got + used, sizeof(got) - used, "%s ", calls[i]);
	cr_assert_eq(ncalls, n, "calls: %s", got);
	for (int i = 0; i < n; i++)
		cr_assert_str_eq(calls[i], want[i], "call %d; calls: %s", i, got);
}

/* Parses the cached /v1/health body; the caller json_decref's it. */
static json_t *health(int *status)
{
	size_t len = 0;
	char *body = registry_health_copy(reg, &arena, status, &len);
	cr_assert_not_null(body, "no cached health body");
	cr_assert_eq(strlen(body), len);
	json_t *root = json_loads(body, 0, NULL);
	cr_assert_not_null(root, "health body is not JSON: %s", body);
	return root;
}

static const char *svc_field(json_t *root, const char *svc, const char *field)
{
	return json_string_value(json_object_get(json_object_get(json_object_get(root, "services"), svc), field));
}

Test(registry, starts_by_order_not_registration)
{
	struct fake c = {.name = "c", .state = SVC_OK}, a = {.name = "a", .state = SVC_OK},
		    b = {.name = "b", .state = SVC_OK};
	add(&c, 30, true, ROLE_ALL);
	add(&a, 10, true, ROLE_ALL);
	add(&b, 20, false, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK, "%s", why);
	const char *want[] = {"start:a", "start:b", "start:c"};
	assert_calls(want, 3);
	cr_assert_str_eq(registry_overall(reg), "ok");
}

Test(registry, equal_orders_keep_registration_order)
{
	struct fake x = {.name = "x"}, y = {.name = "y"}, z = {.name = "z"};
	add(&x, 5, true, ROLE_ALL);
	add(&y, 5, true, ROLE_ALL);
	add(&z, 1, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	const char *want[] = {"start:z", "start:x", "start:y"};
	assert_calls(want, 3);
}

Test(registry, stop_is_reverse_order_and_once)
{
	struct fake a = {.name = "a"}, b = {.name = "b"}, c = {.name = "c"};
	add(&b, 2, true, ROLE_ALL);
	add(&c, 3, false, ROLE_ALL);
	add(&a, 1, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	registry_stop(reg);
	registry_stop(reg); /* nothing left to stop */
	const char *want[] = {"start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"};
	assert_calls(want, 6);
}

Test(registry, roles_filter_what_starts)
{
	struct fake gw = {.name = "gw", .state = SVC_OK}, wk = {.name = "wk"}, both = {.name = "both", .state = SVC_OK};
	add(&gw, 1, true, ROLE_GATEWAY);
	add(&wk, 2, true, ROLE_WORKER);
	add(&both, 3, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_GATEWAY, why, sizeof(why)), SOMA_OK);
	const char *want[] = {"start:gw", "start:both"};
	assert_calls(want, 2);
	int status;
	json_t *root = health(&status);
	cr_assert_null(json_object_get(json_object_get(root, "services"), "wk"), "unselected services are not shown");
	cr_assert_eq(status, 200);
	json_decref(root);
}

Test(registry, duplicate_name_conflicts)
{
	struct fake a = {.name = "store"}, b = {.name = "store"};
	add(&a, 1, true, ROLE_ALL);
	struct service_def d = {.name = b.name, .order = 2, .roles = ROLE_ALL, .start = fake_start, .ctx = &b};
	cr_assert_eq(registry_add(reg, &d), SOMA_ERR_CONFLICT);
	json_t *plan = registry_plan_json(reg, ROLE_ALL);
	cr_assert_eq(json_array_size(plan), 1);
	json_decref(plan);
}

Test(registry, full_registry_is_a_limit)
{
	static struct fake f[40];
	static char names[40][8];
	enum soma_err err = SOMA_OK;
	int added = 0;
	for (int i = 0; i < 40 && err == SOMA_OK; i++) {
		snprintf(names[i], sizeof(names[i]), "s%d", i);
		f[i] = (struct fake){.name = names[i]};
		struct service_def d = {.name = names[i], .order = i, .roles = ROLE_ALL, .ctx = &f[i]};
		err = registry_add(reg, &d);
		added += err == SOMA_OK;
	}
	cr_assert_eq(err, SOMA_ERR_LIMIT);
	cr_assert_eq(added, 32);
}

Test(registry, critical_failure_rolls_back_in_reverse)
{
	struct fake a = {.name = "a"}, b = {.name = "b"}, d = {.name = "d"};
	struct fake c = {.name = "c", .fail = SOMA_ERR_IO, .reason = "disk full on /data"};
	add(&a, 10, true, ROLE_ALL);
	add(&b, 20, false, ROLE_ALL);
	add(&c, 30, true, ROLE_ALL);
	add(&d, 40, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_ERR_IO);
	const char *want[] = {"start:a", "start:b", "start:c", "stop:b", "stop:a"};
	assert_calls(want, 5);
	cr_assert_not_null(strstr(why, "service c failed to start: disk full on /data"), "why: %s", why);
	registry_stop(reg);
	assert_calls(want, 5); /* everything was already stopped */
}

Test(registry, critical_failure_without_reason_uses_error_text)
{
	struct fake a = {.name = "a"}, s = {.name = "store", .fail = SOMA_ERR_STORE};
	add(&a, 1, true, ROLE_ALL);
	add(&s, 2, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_ERR_STORE);
	cr_assert_not_null(strstr(why, "service store failed to start"), "why: %s", why);
	cr_assert_not_null(strstr(why, soma_err_str(SOMA_ERR_STORE)), "why: %s", why);
}

Test(registry, non_critical_failure_degrades)
{
	struct fake a = {.name = "a", .state = SVC_OK}, c = {.name = "c", .state = SVC_OK};
	struct fake b = {.name = "b", .fail = SOMA_ERR_UNAVAILABLE, .reason = "redis unreachable", .state = SVC_OK};
	add(&a, 1, true, ROLE_ALL);
	add(&b, 2, false, ROLE_ALL);
	add(&c, 3, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	const char *want[] = {"start:a", "start:b", "start:c"};
	assert_calls(want, 3);
	cr_assert_str_eq(registry_overall(reg), "degraded");
	cr_assert_eq(b.polls, 0, "a service that did not start is not polled");
	int status = 0;
	json_t *root = health(&status);
	cr_assert_eq(status, 200);
	cr_assert_str_eq(json_string_value(json_object_get(root, "status")), "degraded");
	cr_assert_str_eq(svc_field(root, "b", "status"), "down");
	cr_assert_str_eq(svc_field(root, "b", "detail"), "redis unreachable");
	cr_assert_str_eq(svc_field(root, "a", "status"), "ok");
	json_decref(root);
	registry_stop(reg);
	const char *after[] = {"start:a", "start:b", "start:c", "stop:c", "stop:a"};
	assert_calls(after, 5);
}

Test(registry, critical_health_down_makes_overall_down)
{
	struct fake a = {.name = "a", .state = SVC_OK}, s = {.name = "store", .state = SVC_OK};
	add(&a, 1, false, ROLE_ALL);
	add(&s, 2, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	int status = 0;
	json_t *root = health(&status);
	cr_assert_eq(status, 200);
	cr_assert_str_eq(json_string_value(json_object_get(root, "status")), "ok");
	json_decref(root);

	s.state = SVC_DOWN;
	s.detail = "database locked";
	registry_poll(reg);
	cr_assert_str_eq(registry_overall(reg), "down");
	root = health(&status);
	cr_assert_eq(status, 503);
	cr_assert_str_eq(json_string_value(json_object_get(root, "status")), "down");
	cr_assert_str_eq(svc_field(root, "store", "status"), "down");
	cr_assert_str_eq(svc_field(root, "store", "detail"), "database locked");
	cr_assert(
		json_is_true(json_object_get(json_object_get(json_object_get(root, "services"), "store"), "critical")));
	json_decref(root);

	s.state = SVC_OK;
	s.detail = NULL;
	registry_poll(reg);
	cr_assert_str_eq(registry_overall(reg), "ok", "recovery is seen on the next poll");
}

Test(registry, degraded_or_non_critical_down_is_200)
{
	struct fake a = {.name = "a", .state = SVC_DEGRADED}, b = {.name = "b", .state = SVC_DOWN};
	add(&a, 1, true, ROLE_ALL);
	add(&b, 2, false, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	int status = 0;
	json_t *root = health(&status);
	cr_assert_eq(status, 200);
	cr_assert_str_eq(json_string_value(json_object_get(root, "status")), "degraded");
	cr_assert_str_eq(svc_field(root, "a", "status"), "degraded");
	cr_assert_str_eq(svc_field(root, "a", "detail"), "degraded", "without detail the status name is used");
	json_decref(root);
}

Test(registry, health_body_fields)
{
	struct fake a = {.name = "a", .state = SVC_OK};
	add(&a, 1, true, ROLE_ALL);
	int status = 0;
	size_t len = 0;
	cr_assert_null(registry_health_copy(reg, &arena, &status, &len), "no body before the first poll");
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	json_t *root = health(&status);
	cr_assert_str_eq(json_string_value(json_object_get(root, "version")), "1.2.3-test");
	cr_assert(json_is_integer(json_object_get(root, "uptime_s")));
	const char *since = svc_field(root, "a", "since");
	cr_assert_not_null(since);
	cr_assert_eq(strlen(since), 24, "RFC 3339 with ms: %s", since);
	cr_assert_eq(since[23], 'Z');
	json_decref(root);
	struct arena tiny;
	arena_init(&tiny, 16, 16);
	cr_assert_null(registry_health_copy(reg, &tiny, &status, &len), "a full arena gives NULL");
	arena_deinit(&tiny);
}

Test(registry, stopped_critical_service_is_down)
{
	struct fake a = {.name = "a", .state = SVC_OK};
	add(&a, 1, true, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	registry_stop(reg);
	registry_poll(reg);
	cr_assert_str_eq(registry_overall(reg), "down");
}

Test(registry, plan_lists_order_and_fields)
{
	struct fake c = {.name = "http"}, a = {.name = "store"}, b = {.name = "worker"};
	add(&c, 30, true, ROLE_GATEWAY);
	add(&a, 10, true, ROLE_ALL);
	add(&b, 20, false, ROLE_WORKER);
	json_t *plan = registry_plan_json(reg, ROLE_ALL);
	char *s = json_dumps(plan, JSON_COMPACT | JSON_SORT_KEYS);
	cr_assert_str_eq(s, "[{\"critical\":true,\"name\":\"store\",\"order\":10},"
			    "{\"critical\":false,\"name\":\"worker\",\"order\":20},"
			    "{\"critical\":true,\"name\":\"http\",\"order\":30}]");
	free(s);
	json_decref(plan);
	plan = registry_plan_json(reg, ROLE_GATEWAY);
	cr_assert_eq(json_array_size(plan), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(plan, 1), "name")), "http");
	json_decref(plan);
	cr_assert_eq(ncalls, 0, "planning starts nothing");
}

Test(registry, service_up_gauge)
{
	struct fake a = {.name = "a", .state = SVC_OK};
	struct fake b = {.name = "b", .fail = SOMA_ERR_IO, .state = SVC_OK};
	add(&a, 1, true, ROLE_ALL);
	add(&b, 2, false, ROLE_ALL);
	cr_assert_eq(registry_start(reg, ROLE_ALL, why, sizeof(why)), SOMA_OK);
	char *text = NULL;
	size_t len = 0;
	cr_assert_eq(metrics_render(&text, &len), SOMA_OK);
	cr_assert_not_null(strstr(text, "soma_service_up{service=\"a\"} 1\n"), "%s", text);
	cr_assert_not_null(strstr(text, "soma_service_up{service=\"b\"} 0\n"), "%s", text);
	free(text);
}

Test(registry, status_names)
{
	cr_assert_str_eq(svc_status_name(SVC_STOPPED), "stopped");
	cr_assert_str_eq(svc_status_name(SVC_OK), "ok");
	cr_assert_str_eq(svc_status_name(SVC_DEGRADED), "degraded");
	cr_assert_str_eq(svc_status_name(SVC_DOWN), "down");
	cr_assert_str_eq(svc_status_name(SVC_UNCONFIGURED), "unconfigured");
	registry_free(NULL);
}
