/*
 * test_policy_engine.c - the policy engine around the rules (src/policy): OPA answers and
 * transport failures (fail closed), the decision cache, the input's shape (CONTRACTS.md §6), the
 * engine's start-up from the configuration and its failures, asynchronous asks, the decision
 * metric and the words and event of a deny.
 *
 * DESIGN: Criterion runs each test in its own process, so the engine's process-wide state starts
 * afresh in every test. OPA transport tests use loopback only: a closed port (unreachable) and a
 * listening socket that never answers (timeout).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "policy/policy_int.h"

static void quiet(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);
}

TestSuite(policy_engine, .init = quiet);

/* ---- OPA answers ------------------------------------------------------------------------------------- */

static void opa_answer(long status, const char *body, bool allow, const char *reason)
{
	struct policy_decision d;
	policy_opa_parse(status, body, body ? strlen(body) : 0, &d);
	cr_assert_eq(d.allow, allow, "%ld %s: got %s (%s)", status, body ? body : "", d.allow ? "allow" : "deny",
		     d.reason);
	cr_assert_str_eq(d.reason, reason, "%ld %s", status, body ? body : "");
	cr_assert_str_eq(d.engine, "opa");
}

Test(policy_engine, opa_answers_and_fail_closed_readings)
{
	opa_answer(200, "{\"result\": true}", true, "allowed");
	opa_answer(200, "{\"result\": false}", false, "denied");
	opa_answer(200, "{\"result\": {\"allow\": true, \"reason\": \"ok by rule 7\"}}", true, "ok by rule 7");
	opa_answer(200, "{\"result\": {\"allow\": false, \"reason\": \"model_not_allowed\"}}", false,
		   "model_not_allowed");
	opa_answer(200, "{\"result\": {\"allow\": false}}", false, "denied");
	opa_answer(200, "{\"decision_id\": \"x\"}", false, "opa_undefined");
	opa_answer(200, "{}", false, "opa_undefined");
	opa_answer(200, "{\"result\": \"yes\"}", false, "opa_bad_result");
	opa_answer(200, "{\"result\": {\"allow\": \"true\"}}", false, "opa_bad_result");
	opa_answer(200, "{\"result\": null}", false, "opa_bad_result");
	opa_answer(200, "not json", false, "opa_bad_result");
	opa_answer(200, "", false, "opa_bad_result");
	opa_answer(200, NULL, false, "opa_bad_result");
	opa_answer(500, "{\"code\": \"internal_error\"}", false, "opa_error");
	opa_answer(404, "{\"result\": true}", false, "opa_error");
	opa_answer(302, "", false, "opa_error");
	/* reasons from OPA are cut and cleaned before they reach a response or a log */
	struct policy_decision d;
	const char *ctl = "{\"result\": {\"allow\": false, \"reason\": \"bad\\nline\\u0001\"}}";
	policy_opa_parse(200, ctl, strlen(ctl), &d);
	cr_assert_str_eq(d.reason, "bad_line_");
	char long_reason[600];
	snprintf(long_reason, sizeof(long_reason), "{\"result\": {\"allow\": false, \"reason\": \"%0300d\"}}", 0);
	policy_opa_parse(200, long_reason, strlen(long_reason), &d);
	cr_assert_eq(strlen(d.reason), POLICY_REASON_MAX - 1);
}

Test(policy_engine, opa_unreachable_is_a_deny)
{
	struct policy_decision d;
	char detail[512];
	enum policy_opa_link l =
		policy_opa_decide("http://127.0.0.1:1", 500, "{\"input\":{}}", &d, detail, sizeof(detail));
	cr_assert_eq(l, OPA_LINK_DOWN);
	cr_assert_not(d.allow);
	cr_assert_str_eq(d.reason, "opa_unreachable");
	cr_assert(strstr(detail, "127.0.0.1:1"), "%s", detail);
	cr_assert_not(policy_opa_probe("http://127.0.0.1:1", 500, detail, sizeof(detail)));
	cr_assert(strstr(detail, "unreachable"), "%s", detail);
}

/* A loopback listener that accepts connections (the kernel's backlog) but never answers. */
static int silent_listener(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 8) == 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

Test(policy_engine, opa_that_does_not_answer_in_time_is_a_deny)
{
	int port, fd = silent_listener(&port);
	char url[64], detail[512];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	struct policy_decision d;
	enum policy_opa_link l = policy_opa_decide(url, 150, "{\"input\":{}}", &d, detail, sizeof(detail));
	cr_assert_eq(l, OPA_LINK_DOWN);
	cr_assert_str_eq(d.reason, "opa_timeout");
	cr_assert(strstr(detail, "150 ms"), "%s", detail);
	close(fd);
}

/* ---- the cache ----------------------------------------------------------------------------------------- */

Test(policy_engine, cache_keeps_decisions_for_their_ttl_only)
{
	cr_assert_null(policy_cache_new(16, 0), "ttl 0 caches nothing");
	struct policy_decision d, got;
	cr_assert_not(policy_cache_get(NULL, "k", 0, &got));
	policy_cache_put(NULL, "k", 0, &d); /* no cache: nothing happens */
	struct policy_cache *c = policy_cache_new(64, 1000);
	cr_assert_not_null(c);
	policy_decision_set(&d, false, "model_not_allowed", "opa");
	policy_cache_put(c, "{\"input\":1}", 5000, &d);
	cr_assert(policy_cache_get(c, "{\"input\":1}", 5999, &got));
	cr_assert_str_eq(got.reason, "model_not_allowed");
	cr_assert_not(got.allow);
	cr_assert_not(policy_cache_get(c, "{\"input\":1}", 6000, &got), "expired");
	cr_assert_not(policy_cache_get(c, "{\"input\":2}", 5000, &got), "another input");
	policy_decision_set(&d, true, "allowed", "opa");
	policy_cache_put(c, "{\"input\":1}", 7000, &d); /* replaced */
	cr_assert(policy_cache_get(c, "{\"input\":1}", 7001, &got) && got.allow);
	policy_cache_free(c);
	/* one slot: a second input evicts the first, and never answers for it */
	c = policy_cache_new(1, 1000);
	policy_cache_put(c, "a", 0, &d);
	policy_cache_put(c, "b", 0, &d);
	cr_assert_not(policy_cache_get(c, "a", 1, &got));
	cr_assert(policy_cache_get(c, "b", 1, &got));
	policy_cache_free(c);
}

/* ---- the input, the engine state, the metric --------------------------------------------------------- */

Test(policy_engine, input_has_the_shape_of_contracts_section_6)
{
	json_t *ctx = json_pack("{s:s}", "model", "m");
	struct policy_input in = {.tenant = "acme",
				  .subject = "key:abc",
				  .scopes = " admin  read ",
				  .action = "llm.invoke",
				  .resource = "model:m",
				  .context = ctx};
	json_t *j = policy_input_json(&in);
	json_t *want = json_pack("{s:s, s:s, s:n, s:[s, s], s:s, s:s, s:{s:s}, s:{s:b}}", "tenant", "acme", "subject",
				 "key:abc", "persona_id", "scopes", "admin", "read", "action", "llm.invoke", "resource",
				 "model:m", "context", "model", "m", "degraded", "somabrain", 0);
	cr_assert(json_equal(j, want), "%s", json_dumps(j, 0));
	json_decref(j);
	json_decref(want);
	struct policy_input bare = {
		.tenant = "t", .persona_id = "p1", .action = "session.read", .somabrain_degraded = true};
	j = policy_input_json(&bare);
	want = json_pack("{s:s, s:s, s:s, s:[], s:s, s:s, s:{}, s:{s:b}}", "tenant", "t", "subject", "", "persona_id",
			 "p1", "scopes", "action", "session.read", "resource", "", "context", "degraded", "somabrain",
			 1);
	cr_assert(json_equal(j, want), "%s", json_dumps(j, 0));
	json_decref(j);
	json_decref(want);
	json_decref(ctx);
}

static void load_config(const char *const *sets, size_t n)
{
	static char *const no_env[] = {NULL};
	struct cfg_errors errs;
	struct cfg_load_opts o = {.config_path = NULL, .sets = sets, .nsets = n, .env = no_env};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
}

static struct policy_decision ask_now(const char *tenant, const char *scopes, const char *action)
{
	struct policy_input in = {.tenant = tenant, .scopes = scopes, .action = action};
	struct policy_decision d;
	cr_assert(policy_decide_now(&in, &d), "builtin answers at once");
	return d;
}

Test(policy_engine, before_start_the_compiled_in_rules_decide)
{
	cr_assert(ask_now("t", "", "session.read").allow);
	cr_assert_str_eq(ask_now("t", "", "admin.config").reason, "admin_scope_required");
	cr_assert_str_eq(policy_engine_name(), "builtin");
}

Test(policy_engine, a_policy_file_that_cannot_be_read_denies_everything)
{
	const char *sets[] = {"policy.file=/nonexistent/policy.json"};
	load_config(sets, 1);
	char why[512], detail[512];
	cr_assert_eq(policy_start(why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert(strstr(why, "/nonexistent/policy.json") && strstr(why, "policy.file"), "%s", why);
	struct policy_decision d = ask_now("t", "admin", "session.read");
	cr_assert_not(d.allow);
	cr_assert_str_eq(d.reason, "policy_unavailable");
	cr_assert_not(policy_health(detail, sizeof(detail)));
	cr_assert(strstr(detail, "denied"), "%s", detail);
	policy_stop();
	cfg_unload();
}

Test(policy_engine, a_policy_file_replaces_the_defaults)
{
	char path[64];
	snprintf(path, sizeof(path), "/tmp/soma-policy-XXXXXX");
	int fd = mkstemp(path);
	const char *text = "{\"soma_policy\": {\"tenants\": {\"*\": {\"actions\": [\"session.read\"]}}}}";
	cr_assert(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	char set[128];
	snprintf(set, sizeof(set), "policy.file=%s", path);
	const char *sets[] = {set};
	load_config(sets, 1);
	char why[512], detail[512];
	cr_assert_eq(policy_start(why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert(ask_now("t", "", "session.read").allow);
	cr_assert_str_eq(ask_now("t", "", "conversation.send").reason, "action_not_allowed");
	cr_assert(policy_health(detail, sizeof(detail)));
	cr_assert(strstr(detail, path), "%s", detail);
	policy_stop();
	unlink(path);
	cfg_unload();
}

Test(policy_engine, bad_rules_in_the_file_are_named)
{
	char path[64];
	snprintf(path, sizeof(path), "/tmp/soma-policy-XXXXXX");
	int fd = mkstemp(path);
	const char *text = "{\"soma_policy\": {\"tenants\": {\"*\": {\"action\": []}}}}";
	cr_assert(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	char set[128], why[512];
	snprintf(set, sizeof(set), "policy.file=%s", path);
	const char *sets[] = {set};
	load_config(sets, 1);
	cr_assert_eq(policy_start(why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert(strstr(why, path) && strstr(why, "unknown key \"action\""), "%s", why);
	policy_stop();
	unlink(path);
	cfg_unload();
}

Test(policy_engine, opa_without_a_url_denies_everything)
{
	const char *sets[] = {"policy.engine=opa"};
	load_config(sets, 1);
	char why[512];
	cr_assert_eq(policy_start(why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert(strstr(why, "policy.opa_url"), "%s", why);
	cr_assert_str_eq(ask_now("t", "", "session.read").reason, "policy_unavailable");
	policy_stop();
	cfg_unload();
}

static void on_asked(void *arg, const struct policy_decision *d)
{
	*(struct policy_decision *)arg = *d;
}

Test(policy_engine, opa_engine_fails_closed_when_unreachable)
{
	const char *sets[] = {"policy.engine=opa", "policy.opa_url=http://127.0.0.1:1/", "policy.opa_timeout_ms=300"};
	load_config(sets, 3);
	char why[512], detail[512];
	cr_assert_eq(policy_start(why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_str_eq(policy_engine_name(), "opa");
	cr_assert(policy_health(detail, sizeof(detail)), "not checked yet counts as up");
	struct policy_input in = {.tenant = "t", .action = "session.read"};
	struct policy_decision d;
	cr_assert_not(policy_decide_now(&in, &d), "nothing cached: OPA must be asked");
	policy_decide(&in, &d);
	cr_assert_not(d.allow);
	cr_assert_str_eq(d.reason, "opa_unreachable");
	cr_assert_not(d.unavailable, "this one went to OPA");
	/* not cached, but the circuit breaker is open now: the next decision is denied at once */
	cr_assert(policy_decide_now(&in, &d), "the breaker answers at once");
	cr_assert(!d.allow && d.unavailable);
	cr_assert_str_eq(d.reason, "opa_unreachable");
	char words[200];
	cr_assert(strstr(policy_decision_words(&d, words, sizeof(words)), "policy engine is unavailable"));
	cr_assert_not(policy_health(detail, sizeof(detail)));
	cr_assert(strstr(detail, "circuit open (opa_unreachable)"), "%s", detail);
	struct policy_decision asked = {.allow = true};
	cr_assert_eq(policy_ask(&in, on_asked, &asked, NULL), SOMA_OK);
	policy_stop(); /* runs the queued ask (and the probe the health call queued) first */
	cr_assert_not(asked.allow);
	cr_assert_str_eq(asked.reason, "opa_unreachable");
	cr_assert_not(policy_health(detail, sizeof(detail)), "stopped");
	cr_assert_eq(policy_ask(&in, on_asked, &asked, NULL), SOMA_ERR_UNAVAILABLE);
	cfg_unload();
}

Test(policy_engine, the_builtin_engine_is_not_asked_asynchronously)
{
	struct policy_input in = {.tenant = "t", .action = "session.read"};
	struct policy_decision d;
	cr_assert_eq(policy_ask(&in, on_asked, &d, NULL), SOMA_ERR_UNAVAILABLE);
}

Test(policy_engine, decisions_are_counted_by_engine_action_and_decision)
{
	(void)ask_now("t", "", "session.read");
	(void)ask_now("t", "", "session.read");
	(void)ask_now("t", "", "admin.keys");
	char *text;
	size_t len;
	cr_assert_eq(metrics_render(&text, &len), SOMA_OK);
	cr_assert(
		strstr(text,
		       "soma_policy_decisions_total{engine=\"builtin\",action=\"session.read\",decision=\"allow\"} 2"),
		"%s", text);
	cr_assert(strstr(text,
			 "soma_policy_decisions_total{engine=\"builtin\",action=\"admin.keys\",decision=\"deny\"} 1"),
		  "%s", text);
	free(text);
}

Test(policy_engine, reason_words_tell_what_to_do)
{
	char buf[160];
	cr_assert(strstr(policy_reason_words("model_not_allowed", buf, sizeof(buf)), "model"));
	cr_assert(strstr(policy_reason_words("opa_timeout", buf, sizeof(buf)), "policy.opa_timeout_ms"));
	const char *w = policy_reason_words("over_quota_by_rule_9", buf, sizeof(buf));
	cr_assert(strstr(w, "over_quota_by_rule_9"), "%s", w);
	struct policy_input in = {.tenant = "t", .action = "llm.invoke"};
	struct policy_decision d;
	policy_decision_set(&d, false, "model_not_allowed", "builtin");
	json_t *ev = policy_denied_event("s1", &in, &d);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), "policy.denied");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "role")), "system");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "session_id")), "s1");
	json_t *meta = json_object_get(ev, "metadata");
	cr_assert_eq(json_object_size(meta), 2);
	cr_assert_str_eq(json_string_value(json_object_get(meta, "action")), "llm.invoke");
	cr_assert_str_eq(json_string_value(json_object_get(meta, "reason")), "model_not_allowed");
	json_decref(ev);
}

Test(policy_engine, the_breaker_opens_on_failure_lets_one_probe_through_and_closes_on_an_answer)
{
	char why[32];
	bool probe;
	policy_breaker_reset(1000, 3000);
	cr_assert_not(policy_breaker_refuses(10, why, sizeof(why)), "closed");
	cr_assert(policy_breaker_admit(10, &probe, why, sizeof(why)) && !probe);
	for (int i = 0; i < 3; i++)
		policy_breaker_failure(100, "opa_timeout");
	cr_assert(policy_breaker_refuses(500, why, sizeof(why)));
	cr_assert_str_eq(why, "opa_timeout");
	cr_assert_not(policy_breaker_admit(1099, &probe, why, sizeof(why)), "open for the window");
	cr_assert_not(policy_breaker_refuses(1100, why, sizeof(why)), "half-open: the probe may go");
	cr_assert(policy_breaker_admit(1100, &probe, why, sizeof(why)) && probe, "one probe");
	cr_assert_not(policy_breaker_admit(1101, &probe, why, sizeof(why)), "only one");
	cr_assert(policy_breaker_refuses(1101, why, sizeof(why)));
	cr_assert(policy_breaker_admit(4100, &probe, why, sizeof(why)) && probe, "a lost probe is given up");
	policy_breaker_release();
	cr_assert(policy_breaker_admit(4101, &probe, why, sizeof(why)) && probe, "a released probe is free again");
	policy_breaker_failure(4200, "opa_unreachable");
	cr_assert_not(policy_breaker_admit(5199, &probe, why, sizeof(why)), "the probe failed: open again");
	cr_assert(policy_breaker_open(why, sizeof(why)));
	cr_assert_str_eq(why, "opa_unreachable");
	policy_breaker_success();
	cr_assert_not(policy_breaker_open(why, sizeof(why)));
	cr_assert_not(policy_breaker_refuses(4300, why, sizeof(why)), "an answer closes it");
}

Test(policy_engine, one_timeout_does_not_open_the_breaker_three_in_a_row_do_unreachable_at_once)
{
	char why[32];
	policy_breaker_reset(1000, 3000);
	policy_breaker_failure(100, "opa_timeout"); /* one slow evaluation of a healthy OPA */
	cr_assert_not(policy_breaker_refuses(150, why, sizeof(why)), "one timeout leaves it closed");
	cr_assert_not(policy_breaker_open(why, sizeof(why)));
	policy_breaker_failure(200, "opa_timeout");
	policy_breaker_answered(); /* an answer in between: the count starts over */
	policy_breaker_failure(300, "opa_timeout");
	policy_breaker_failure(400, "opa_timeout");
	cr_assert_not(policy_breaker_refuses(450, why, sizeof(why)), "two in a row after an answer: closed");
	policy_breaker_failure(500, "opa_timeout");
	cr_assert(policy_breaker_refuses(550, why, sizeof(why)), "the third timeout in a row opens it");
	cr_assert_str_eq(why, "opa_timeout");
	policy_breaker_answered();
	cr_assert_not(policy_breaker_refuses(600, why, sizeof(why)));
	policy_breaker_failure(700, "opa_timeout"); /* closed by an answer: the count starts over */
	cr_assert_not(policy_breaker_refuses(750, why, sizeof(why)));
	policy_breaker_failure(800, "opa_unreachable"); /* refused: certain, opens at once */
	cr_assert(policy_breaker_refuses(850, why, sizeof(why)));
	cr_assert_str_eq(why, "opa_unreachable");
	policy_breaker_answered();
	for (int i = 0; i < 3; i++)
		policy_breaker_failure(900, "opa_timeout");
	policy_breaker_success(); /* the health probe answered, decisions still hang */
	cr_assert_not(policy_breaker_refuses(950, why, sizeof(why)), "the health probe closes it");
	policy_breaker_failure(1000, "opa_timeout");
	cr_assert(policy_breaker_refuses(1050, why, sizeof(why)), "the next timeout opens it again at once");
	policy_breaker_answered();
}
