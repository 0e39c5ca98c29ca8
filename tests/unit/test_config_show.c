/*
 * test_config_show.c - a URL-valued setting never shows its credentials (src/core/config_show.c,
 * and the error line of config.c): config show (text and JSON), the values of the dry-run plan
 * and /v1/admin/config, and a rejected value, for every key whose value is a URL.
 *
 * DESIGN: every load passes an explicit empty environment and --set values only; the password,
 * user and query given are distinct strings, each searched for in every output.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/config_show.h"

#define PASSWORD "pw-s3cr3t-9f8e"
#define USER	 "opsuser"
#define QUERY	 "key-q5ecret-77"

static struct cfg_errors errs;
static char *no_env[] = {NULL};

static void teardown(void)
{
	cfg_unload();
}

TestSuite(config_show, .fini = teardown);

static void assert_clean(const char *text, const char *what)
{
	cr_assert_null(strstr(text, PASSWORD), "%s shows the password:\n%s", what, text);
	cr_assert_null(strstr(text, USER), "%s shows the user:\n%s", what, text);
	cr_assert_null(strstr(text, QUERY), "%s shows the query:\n%s", what, text);
}

Test(config_show, url_settings_are_shown_without_credentials)
{
	static const struct {
		const char *key, *url, *shown;
	} urls[] = {
		{"llm.base_url", "https://" USER ":" PASSWORD "@llm.example/v1?api_key=" QUERY,
		 "https://llm.example/v1"},
		{"memory.somabrain_url", "http://" USER ":" PASSWORD "@brain:9696/#" QUERY, "http://brain:9696/"},
		{"otel.endpoint", "http://" USER ":" PASSWORD "@otel:4318", "http://otel:4318"},
		{"policy.opa_url", "http://:" PASSWORD "@opa:8181/?token=" QUERY, "http://opa:8181/"},
		{"auth.jwt_jwks_url", "https://idp.example/jwks?" QUERY, "https://idp.example/jwks"},
	};
	char sets[8][512];
	const char *argv[8];
	size_t n = sizeof(urls) / sizeof(urls[0]);
	for (size_t i = 0; i < n; i++) {
		snprintf(sets[i], sizeof(sets[i]), "%s=%s", urls[i].key, urls[i].url);
		argv[i] = sets[i];
	}
	snprintf(sets[n], sizeof(sets[n]), "store.url=postgresql://" USER ":" PASSWORD "@db/soma");
	snprintf(sets[n + 1], sizeof(sets[n + 1]), "redis.url=redis://:" PASSWORD "@redis:6379/0");
	argv[n] = sets[n];
	argv[n + 1] = sets[n + 1];
	struct cfg_load_opts o = {.sets = argv, .nsets = n + 2, .env = no_env, .config_path = "/dev/null"};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
	cr_assert(strstr(cfg_str(CFG_LLM_BASE_URL), PASSWORD), "the program itself still gets the whole URL");

	json_t *all = cfg_to_json(), *values = cfg_values_json();
	char *a = json_dumps(all, 0), *v = json_dumps(values, 0);
	assert_clean(a, "config show --json");
	assert_clean(v, "the dry-run plan's config");
	for (size_t i = 0; i < n; i++) {
		json_t *entry = json_object_get(all, urls[i].key);
		cr_assert_str_eq(json_string_value(json_object_get(entry, "value")), urls[i].shown, "%s", urls[i].key);
		cr_assert_str_eq(json_string_value(json_object_get(values, urls[i].key)), urls[i].shown, "%s",
				 urls[i].key);
	}
	cr_assert_str_eq(json_string_value(json_object_get(values, "store.url")), "<redacted>");
	free(a);
	free(v);
	json_decref(all);
	json_decref(values);

	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	cr_assert_not_null(f);
	cfg_print_text(f);
	fclose(f);
	assert_clean(text, "config show");
	cr_assert_not_null(strstr(text, "https://llm.example/v1"), "%s", text);
	free(text);
}

Test(config_show, a_rejected_url_is_not_echoed_whole)
{
	const char *sets[] = {"policy.opa_url=ftp://" USER ":" PASSWORD "@opa/?" QUERY};
	struct cfg_load_opts o = {.sets = sets, .nsets = 1, .env = no_env, .config_path = "/dev/null"};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_ERR_CONFIG);
	cr_assert_eq(errs.count, 1);
	assert_clean(errs.lines[0], "the error line");
	cr_assert_not_null(strstr(errs.lines[0], "policy.opa_url"), "%s", errs.lines[0]);
}
