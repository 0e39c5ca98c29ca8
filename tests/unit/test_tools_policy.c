/*
 * test_tools_policy.c - tools_policy_input (src/tools/registry.c): the one builder of the policy
 * input tool.execute that the tools API, the soma.tool task and the model's tool calls share:
 * action, resource "tool:<name>", context {tool, args, host?}, the caller's identity untouched.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "core/config.h"
#include "policy/policy.h"
#include "tools/tools.h"

static char *no_env[] = {NULL};
static struct cfg_errors errs;

static void setup(void)
{
	struct cfg_load_opts o = {.env = no_env};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK);
}

TestSuite(tools_policy, .init = setup);

Test(tools_policy, fetch_page_gets_tool_args_and_the_lowercased_host)
{
	json_t *args = json_pack("{s:s}", "url", "https://Docs.Example.COM:8443/a?b=c");
	char resource[TOOLS_POLICY_RESOURCE_MAX];
	struct policy_input in = {.tenant = "t1", .subject = "key:k", .scopes = "read"};
	json_t *ctx = tools_policy_input(tools_find("fetch_page"), args, resource, &in);
	cr_assert_not_null(ctx);
	cr_assert_str_eq(in.action, POLICY_TOOL_EXECUTE);
	cr_assert_str_eq(in.resource, "tool:fetch_page");
	cr_assert_eq(in.context, ctx);
	json_t *want = json_pack("{s:s, s:O, s:s}", "tool", "fetch_page", "args", args, "host", "docs.example.com");
	cr_assert(json_equal(ctx, want), "context %s", json_dumps(ctx, JSON_COMPACT));
	/* the caller's identity is left as it was */
	cr_assert_str_eq(in.tenant, "t1");
	cr_assert_str_eq(in.subject, "key:k");
	cr_assert_str_eq(in.scopes, "read");
	/* what the engine (or OPA) sees: input.context.host */
	json_t *sent = policy_input_json(&in);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(sent, "context"), "host")),
			 "docs.example.com");
	cr_assert_str_eq(json_string_value(json_object_get(sent, "resource")), "tool:fetch_page");
	json_decref(sent);
	json_decref(want);
	json_decref(ctx);
	json_decref(args);
}

Test(tools_policy, other_tools_and_no_args)
{
	char resource[TOOLS_POLICY_RESOURCE_MAX];
	struct policy_input in = {0};
	json_t *ctx = tools_policy_input(tools_find("echo"), NULL, resource, &in);
	json_t *want = json_pack("{s:s, s:{}}", "tool", "echo", "args");
	cr_assert(json_equal(ctx, want), "context %s", json_dumps(ctx, JSON_COMPACT));
	cr_assert_str_eq(in.resource, "tool:echo");
	json_decref(ctx);
	json_decref(want);
	/* a fetch_page URL without a host: no host member */
	json_t *args = json_pack("{s:s}", "url", "not a url");
	ctx = tools_policy_input(tools_find("fetch_page"), args, resource, &in);
	cr_assert_null(json_object_get(ctx, "host"));
	cr_assert(json_equal(json_object_get(ctx, "args"), args));
	json_decref(ctx);
	json_decref(args);
}
