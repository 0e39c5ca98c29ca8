/*
 * test_tools_schema.c - the tool registry (src/tools/registry.c) and the argument check
 * (src/tools/schema.c): built-in schemas parse, required, types, maxLength, bounds, unknown names,
 * tools.enabled hides tools, the listings' shapes.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "tools/tools.h"

static char *no_env[] = {NULL};
static struct cfg_errors errs;

static void load(const char *set)
{
	const char *sets[] = {set};
	struct cfg_load_opts o = {.sets = sets, .nsets = set ? 1 : 0, .env = no_env};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK);
}

static bool check(const char *tool, const char *args, char *why)
{
	json_t *a = json_loads(args, 0, NULL);
	cr_assert_not_null(a, "bad test JSON %s", args);
	bool ok = tools_args_check(tools_find(tool), a, why, 256);
	json_decref(a);
	return ok;
}

Test(tools, builtins_listed_with_valid_schemas)
{
	load(NULL);
	cr_assert_eq(tools_count(), 4);
	for (size_t i = 0; i < tools_count(); i++)
		cr_assert(json_is_object(tools_schema(tools_at(i))), "%s", tools_at(i)->name);
	json_t *l = tools_list_json(), *o = tools_openai_json();
	cr_assert_eq(json_array_size(l), 4);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(l, 0), "name")), "fetch_page");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(o, 3), "type")), "function");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(o, 3), "function"), "name")),
			 "echo");
	json_decref(l);
	json_decref(o);
	cr_assert_null(tools_find("nope"));
	cr_assert_null(tools_find(NULL));
	cfg_unload();
}

Test(tools, enabled_list_hides_the_others)
{
	load("tools.enabled=echo,memory_recall");
	cr_assert_eq(tools_count(), 2);
	cr_assert_null(tools_find("fetch_page"));
	cr_assert_not_null(tools_find("echo"));
	cr_assert_str_eq(tools_at(0)->name, "memory_recall");
	cfg_unload();
	const char *sets[] = {"tools.enabled=echo,shell"};
	struct cfg_load_opts o = {.sets = sets, .nsets = 1, .env = no_env};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_ERR_CONFIG);
	cfg_unload();
}

Test(tools, args_checked_against_the_schema)
{
	char why[256];
	load(NULL);
	cr_assert(check("echo", "{\"text\":\"hi\"}", why), "%s", why);
	cr_assert_not(check("echo", "{}", why));
	cr_assert_str_eq(why, "args.text is required");
	cr_assert_not(check("echo", "{\"text\":5}", why));
	cr_assert_str_eq(why, "args.text must be a string, not integer");
	cr_assert_not(check("echo", "{\"text\":\"x\",\"more\":1}", why));
	cr_assert_not_null(strstr(why, "args.more is not a parameter"));
	cr_assert(check("fetch_page", "{\"url\":\"http://a\",\"max_chars\":10}", why), "%s", why);
	cr_assert_not(check("fetch_page", "{\"url\":\"http://a\",\"max_chars\":\"10\"}", why));
	cr_assert_str_eq(why, "args.max_chars must be an integer, not string");
	cr_assert_not(check("fetch_page", "{\"url\":\"http://a\",\"max_chars\":0}", why));
	cr_assert_not_null(strstr(why, "args.max_chars must be within 1..1e+06"), "%s", why);
	cr_assert_not(check("fetch_page", "{\"url\":\"http://a\",\"max_chars\":1.5}", why));
	cr_assert_not(check("memory_recall", "{\"query\":\"\"}", why));
	cr_assert_not_null(strstr(why, "at least 1"));
	cr_assert_not(check("echo", "[1]", why));
	cr_assert_str_eq(why, "args must be an object, not array");
	cfg_unload();
}

Test(tools, max_length_counts_characters)
{
	char why[256], args[2200 * 2 + 40];
	load(NULL);
	size_t n = (size_t)snprintf(args, sizeof(args), "{\"url\":\"");
	for (int i = 0; i < 2048; i++) /* 2048 two-byte characters: at the limit */
		n += (size_t)snprintf(args + n, sizeof(args) - n, "\xc3\xa9");
	snprintf(args + n, sizeof(args) - n, "\"}");
	cr_assert(check("fetch_page", args, why), "%s", why);
	snprintf(args + n, sizeof(args) - n, "x\"}");
	cr_assert_not(check("fetch_page", args, why));
	cr_assert_str_eq(why, "args.url is longer than 2048 characters (it has 2049)");
	cfg_unload();
}
