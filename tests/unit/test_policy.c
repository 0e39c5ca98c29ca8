/*
 * test_policy.c - the builtin policy rules (src/policy/rules.c): the shared decision table
 * (tests/e2e/policy_table.json, which the fake OPA also answers), patterns, the compiled-in
 * defaults, tenants without an entry, and the errors of a rule file. The engine around the rules
 * (OPA, cache, start-up, metric) is in test_policy_engine.c.
 *
 * DESIGN: the rules are pure data and a pure function: each test parses its own and decides.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "policy/policy_int.h"

#ifndef SOMA_SOURCE_ROOT
#define SOMA_SOURCE_ROOT "."
#endif

static void quiet(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);
}

TestSuite(policy, .init = quiet);

static struct policy_rules *parse(const char *text)
{
	struct policy_rules *r = NULL;
	char why[512];
	cr_assert_eq(policy_rules_parse(text, strlen(text), &r, why, sizeof(why)), SOMA_OK, "%s", why);
	return r;
}

static void decide(const struct policy_rules *r, const char *tenant, const char *scopes, const char *action,
		   json_t *ctx, bool allow, const char *reason)
{
	struct policy_input in = {.tenant = tenant, .scopes = scopes, .action = action, .context = ctx};
	struct policy_decision d;
	policy_rules_decide(r, &in, &d);
	cr_assert_eq(d.allow, allow, "%s %s: got %s (%s)", tenant, action, d.allow ? "allow" : "deny", d.reason);
	cr_assert_str_eq(d.reason, reason, "%s %s", tenant, action);
	cr_assert_str_eq(d.engine, "builtin");
	json_decref(ctx);
}

Test(policy, glob)
{
	cr_assert(policy_glob("*", ""));
	cr_assert(policy_glob("*", "anything at all"));
	cr_assert(policy_glob("image/*", "image/png"));
	cr_assert_not(policy_glob("image/*", "text/plain"));
	cr_assert(policy_glob("*/*", "application/pdf"));
	cr_assert(policy_glob("*.example.org", "a.b.example.org"));
	cr_assert_not(policy_glob("*.example.org", "example.org"));
	cr_assert(policy_glob("calc*", "calc"));
	cr_assert(policy_glob("a*b*c", "aXXbYYc"));
	cr_assert_not(policy_glob("a*b*c", "aXXbYY"));
	cr_assert(policy_glob("admin.*", "admin.keys"));
	cr_assert_not(policy_glob("admin.*", "administer"));
	cr_assert(policy_glob("exact", "exact"));
	cr_assert_not(policy_glob("exact", "exactly"));
	cr_assert_not(policy_glob("", "x"));
}

/* ---- the shared decision table ------------------------------------------------------------------ */

/* A concrete value for a table pattern: "<any>" -> NULL (dropped), {"$gt": n} -> n + 1,
 * {"$lte": n} -> n, objects by their members. Caller owns the result. */
static json_t *concrete(json_t *v)
{
	if (json_is_string(v) && strcmp(json_string_value(v), "<any>") == 0)
		return NULL;
	json_t *gt = json_object_get(v, "$gt"), *lte = json_object_get(v, "$lte");
	if (gt)
		return json_integer(json_integer_value(gt) + 1);
	if (lte)
		return json_incref(lte);
	if (!json_is_object(v))
		return json_incref(v);
	json_t *out = json_object();
	const char *k;
	json_t *m;
	json_object_foreach(v, k, m)
	{
		json_t *c = concrete(m);
		if (c)
			json_object_set_new(out, k, c);
	}
	return out;
}

static json_t *load_table(void)
{
	json_error_t err;
	json_t *t = json_load_file(SOMA_SOURCE_ROOT "/tests/e2e/policy_table.json", 0, &err);
	cr_assert_not_null(t, "tests/e2e/policy_table.json: %s (line %d)", err.text, err.line);
	return t;
}

Test(policy, decision_table_on_the_builtin_engine)
{
	json_t *table = load_table();
	char *rules_text = json_dumps(json_object_get(table, "policy"), 0);
	struct policy_rules *r = parse(rules_text);
	free(rules_text);
	size_t i, n = 0;
	json_t *c;
	json_array_foreach(json_object_get(table, "cases"), i, c)
	{
		json_t *in = concrete(json_object_get(c, "input"));
		char scopes[256] = "";
		size_t j;
		json_t *s;
		json_array_foreach(json_object_get(in, "scopes"), j, s)
		{
			size_t len = strlen(scopes);
			snprintf(scopes + len, sizeof(scopes) - len, "%s%s", len ? " " : "", json_string_value(s));
		}
		struct policy_input pin = {
			.tenant = json_string_value(json_object_get(in, "tenant")),
			.subject = json_string_value(json_object_get(in, "subject")),
			.persona_id = json_string_value(json_object_get(in, "persona_id")),
			.scopes = scopes,
			.action = json_string_value(json_object_get(in, "action")),
			.resource = json_string_value(json_object_get(in, "resource")),
			.context = json_object_get(in, "context"),
			.somabrain_degraded =
				json_is_true(json_object_get(json_object_get(in, "degraded"), "somabrain")),
		};
		struct policy_decision d;
		policy_rules_decide(r, &pin, &d);
		json_t *want = json_object_get(c, "expect");
		const char *name = json_string_value(json_object_get(c, "name"));
		cr_expect_eq(d.allow, json_is_true(json_object_get(want, "allow")), "case \"%s\": got %s (%s)", name,
			     d.allow ? "allow" : "deny", d.reason);
		cr_expect_str_eq(d.reason, json_string_value(json_object_get(want, "reason")), "case \"%s\"", name);
		json_decref(in);
		n++;
	}
	cr_assert(n >= 40, "the table has only %zu cases", n);
	policy_rules_free(r);
	json_decref(table);
}

/* ---- rules: the defaults, tenants, errors ---------------------------------------------------------- */

Test(policy, compiled_in_defaults_keep_every_feature_for_a_normal_tenant)
{
	struct policy_rules *r = NULL;
	char why[256];
	cr_assert_eq(policy_rules_default(&r, why, sizeof(why)), SOMA_OK, "%s", why);
	const char *t = "any-tenant";
	decide(r, t, "", "conversation.send", json_pack("{s:i}", "message_length", 5), true, "allowed");
	decide(r, t, "", "llm.invoke", json_pack("{s:s, s:b}", "model", "llama-3.3-70b", "stream", 1), true, "allowed");
	decide(r, t, "", "upload.create", json_pack("{s:s, s:i}", "mime", "application/pdf", "size", 25 << 20), true,
	       "allowed");
	decide(r, t, "", "session.read", NULL, true, "allowed");
	decide(r, t, "", "session.delete", NULL, true, "allowed");
	decide(r, t, "", "task.run", json_pack("{s:s}", "task", "soma.echo"), true, "allowed");
	decide(r, t, "", "memory.write", NULL, true, "allowed");
	decide(r, t, "", "memory.recall", NULL, true, "allowed");
	decide(r, t, "", "tool.execute", json_pack("{s:s}", "tool", "search"), true, "allowed");
	decide(r, t, "admin", "admin.config", NULL, true, "allowed");
	decide(r, t, "read write", "admin.config", NULL, false, "admin_scope_required");
	decide(r, t, "", "delegate", json_pack("{s:s}", "domain", "agents.example.com"), false,
	       "delegate_domain_not_allowed");
	decide(r, t, "admin", "self.destruct", NULL, false, "action_not_allowed");
	policy_rules_free(r);
}

Test(policy, a_tenant_without_an_entry_and_no_star_is_denied)
{
	struct policy_rules *r = parse("{\"soma_policy\": {\"tenants\": {\"acme\": {\"actions\": [\"*\"]}}}}");
	decide(r, "acme", "", "session.read", NULL, true, "allowed");
	decide(r, "other", "", "session.read", NULL, false, "tenant_not_allowed");
	decide(r, "", "", "session.read", NULL, false, "tenant_not_allowed");
	policy_rules_free(r);
	r = parse("{\"soma_policy\": {\"tenants\": {}}}");
	decide(r, "acme", "", "session.read", NULL, false, "tenant_not_allowed");
	policy_rules_free(r);
}

Test(policy, missing_lists_allow_nothing)
{
	struct policy_rules *r =
		parse("{\"_c\": 1, \"soma_policy\": {\"_c\": 2, \"tenants\": {\"*\": {\"_why\": \"x\", \"actions\": "
		      "[\"llm.invoke\", \"upload.create\", \"task.run\", \"tool.execute\"]}}}}");
	decide(r, "t", "", "llm.invoke", json_pack("{s:s}", "model", "m"), false, "model_not_allowed");
	decide(r, "t", "", "task.run", json_pack("{s:s}", "task", "soma.echo"), false, "task_not_allowed");
	decide(r, "t", "", "tool.execute", json_pack("{s:s}", "tool", "x"), false, "tool_not_allowed");
	decide(r, "t", "", "upload.create", json_pack("{s:s}", "mime", "image/png"), false, "upload_type_not_allowed");
	/* no type yet and no size limit: nothing to refuse */
	decide(r, "t", "", "upload.create", json_pack("{s:i}", "size", 1 << 30), true, "allowed");
	policy_rules_free(r);
}

static void parse_fails(const char *text, const char *why_part)
{
	struct policy_rules *r = (struct policy_rules *)1;
	char why[512] = "";
	cr_assert_eq(policy_rules_parse(text, strlen(text), &r, why, sizeof(why)), SOMA_ERR_CONFIG, "%s", text);
	cr_assert_null(r);
	cr_assert(strstr(why, why_part), "why \"%s\" lacks \"%s\"", why, why_part);
}

Test(policy, rule_file_errors_say_what_and_where)
{
	parse_fails("{", "not valid JSON");
	parse_fails("[1]", "JSON object");
	parse_fails("{}", "soma_policy");
	parse_fails("{\"tenants\": {}}", "unknown top-level key \"tenants\"");
	parse_fails("{\"soma_policy\": {\"tenant\": {}}}", "soma_policy.tenant");
	parse_fails("{\"soma_policy\": {\"tenants\": []}}", "soma_policy");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": 1}}}", "tenants.a must be an object");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"model\": []}}}}", "unknown key \"model\"");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"actions\": \"x\"}}}}", "tenants.a.actions");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"models\": [1]}}}}", "tenants.a.models[0]");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"b\": {\"tools\": [\"\"]}}}}", "tenants.b.tools[0]");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"upload_max_bytes\": -1}}}}", "upload_max_bytes");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"upload_max_bytes\": 1.5}}}}", "upload_max_bytes");
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"actions\": [], \"actions\": []}}}}", "not valid JSON");
	/* the second tenant fails after the first parsed: both are freed (ASan checks) */
	parse_fails("{\"soma_policy\": {\"tenants\": {\"a\": {\"actions\": [\"x\"]}, \"b\": {\"x\": 1}}}}",
		    "tenants.b");
}
