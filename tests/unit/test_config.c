/*
 * test_config.c - configuration loading (src/core/config.c, config_table.c, config_show.c):
 * defaults, precedence default < file < env < --set with source and origin, every error path
 * (naming key, source and expected form), secret redaction, listen parsing, docs.
 *
 * DESIGN: every load passes an explicit environment (never the process's own) and an explicit
 * INI file made with mkstemp, or runs in a fresh temporary directory when the test is about
 * ./somaagent.ini, so the results do not depend on the machine running them.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/config_show.h"
#include "helpers.h"

#define TOKEN "tok-0123456789abcdef0123456789abcdef-SECRET"

static struct cfg_errors errs;
static char ini_path[64];
static char tmp_dir[64];
static char old_cwd[PATH_MAX];
static char *no_env[] = {NULL};

static void teardown(void)
{
	cfg_unload();
	if (ini_path[0])
		unlink(ini_path);
	ini_path[0] = '\0';
	if (tmp_dir[0]) {
		cr_assert_eq(chdir(old_cwd), 0);
		tmpdir_remove(tmp_dir);
	}
	tmp_dir[0] = '\0';
}

TestSuite(config, .fini = teardown);

/* Writes an INI file for this test; its path is ini_path. */
static const char *ini(const char *text)
{
	tmpfile_write(text, ini_path, sizeof(ini_path));
	return ini_path;
}

/* Moves into a fresh directory (undone by teardown). */
static void enter_tmp_dir(void)
{
	cr_assert_not_null(getcwd(old_cwd, sizeof(old_cwd)));
	tmpdir_make(tmp_dir, sizeof(tmp_dir));
	cr_assert_eq(chdir(tmp_dir), 0);
}

static enum soma_err load(const char *path, char **env, const char *const *sets, size_t nsets)
{
	struct cfg_load_opts o = {.config_path = path, .sets = sets, .nsets = nsets, .env = env ? env : no_env};
	return cfg_load(&o, &errs);
}

/* "path:line" of the test's INI file (static buffer). */
static const char *at_line(int line)
{
	static char buf[96];
	snprintf(buf, sizeof(buf), "%s:%d", ini_path, line);
	return buf;
}

/* All error lines, for assertion messages. */
static const char *all_errors(void)
{
	static char buf[CFG_MAX_ERRORS * (CFG_ERROR_LEN + 1) + 1];
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; i < errs.count; i++)
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s\n", errs.lines[i]);
	return errs.count ? buf : "(no error lines)";
}

/* True when one error line contains every non-NULL needle. */
static bool error_has(const char *a, const char *b, const char *c)
{
	for (int i = 0; i < errs.count; i++) {
		const char *l = errs.lines[i];
		if (strstr(l, a) && (!b || strstr(l, b)) && (!c || strstr(l, c)))
			return true;
	}
	return false;
}

#define assert_error(a, b, c)                                                                                    \
	cr_assert(error_has((a), (b), (c)), "expected an error line with \"%s\", \"%s\", \"%s\"; got:\n%s", (a), \
		  (b) ? (b) : "", (c) ? (c) : "", all_errors())

/* ---- defaults and precedence ---------------------------------------------------------------- */

Test(config, defaults_come_from_the_table)
{
	enter_tmp_dir(); /* no ./somaagent.ini here */
	cr_assert_eq(load(NULL, NULL, NULL, 0), SOMA_OK, "%s", all_errors());
	cr_assert_eq(errs.count, 0);
	cr_assert_null(cfg_file_path());
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		enum cfg_key k = (enum cfg_key)i;
		cr_assert_str_eq(cfg_str(k), cfg_def(k)->def, "key %s", cfg_def(k)->name);
		cr_assert_eq(cfg_source_of(k), CFG_SRC_DEFAULT, "key %s", cfg_def(k)->name);
		cr_assert_str_eq(cfg_origin(k), "default");
	}
	cr_assert_str_eq(cfg_str(CFG_HTTP_LISTEN), "127.0.0.1:8080");
	cr_assert_eq(cfg_int(CFG_HTTP_MAX_BODY), 1048576);
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 0);
	cr_assert(cfg_bool(CFG_LOG_ACCESS));
	cr_assert_not(cfg_bool(CFG_AUTH_REQUIRE));
	cr_assert_str_eq(cfg_str(CFG_AUTH_ADMIN_TOKEN), "");
	cr_assert_str_eq(cfg_source_name(CFG_SRC_DEFAULT), "default");
	cr_assert_str_eq(cfg_source_name(CFG_SRC_FLAG), "flag");
}

Test(config, file_overrides_default_with_path_and_line)
{
	const char *path = ini("; comment\n[http]\nio_threads = 3\n\n[log]\nlevel = debug\naccess = off\n");
	cr_assert_eq(load(path, NULL, NULL, 0), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 3);
	cr_assert_eq(cfg_source_of(CFG_HTTP_IO_THREADS), CFG_SRC_FILE);
	cr_assert_str_eq(cfg_origin(CFG_HTTP_IO_THREADS), at_line(3));
	cr_assert_str_eq(cfg_origin(CFG_LOG_LEVEL), at_line(6));
	cr_assert_str_eq(cfg_str(CFG_LOG_LEVEL), "debug");
	cr_assert_not(cfg_bool(CFG_LOG_ACCESS));
	cr_assert_str_eq(cfg_file_path(), path);
	cr_assert_eq(cfg_source_of(CFG_HTTP_LISTEN), CFG_SRC_DEFAULT, "keys absent from the file keep the default");
}

Test(config, env_overrides_file)
{
	const char *path = ini("[http]\nio_threads = 3\n");
	char *env[] = {"PATH=/usr/bin", "SOMA_HTTP_IO_THREADS=5", NULL};
	cr_assert_eq(load(path, env, NULL, 0), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 5);
	cr_assert_eq(cfg_source_of(CFG_HTTP_IO_THREADS), CFG_SRC_ENV);
	cr_assert_str_eq(cfg_origin(CFG_HTTP_IO_THREADS), "SOMA_HTTP_IO_THREADS");
}

Test(config, set_overrides_env_and_file)
{
	const char *path = ini("[http]\nio_threads = 3\n");
	char *env[] = {"SOMA_HTTP_IO_THREADS=5", NULL};
	const char *sets[] = {"http.io_threads=7"};
	cr_assert_eq(load(path, env, sets, 1), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 7);
	cr_assert_eq(cfg_source_of(CFG_HTTP_IO_THREADS), CFG_SRC_FLAG);
	cr_assert(strncmp(cfg_origin(CFG_HTTP_IO_THREADS), "--set", 5) == 0, "origin %s",
		  cfg_origin(CFG_HTTP_IO_THREADS));
	cr_assert_str_eq(cfg_source_name(cfg_source_of(CFG_HTTP_IO_THREADS)), "flag");
}

Test(config, set_overrides_default_without_file_or_env)
{
	const char *sets[] = {"log.level=warn", "http.listen=[::1]:9090", "log.level=error"};
	enter_tmp_dir();
	cr_assert_eq(load(NULL, NULL, sets, 3), SOMA_OK, "%s", all_errors());
	cr_assert_str_eq(cfg_str(CFG_LOG_LEVEL), "error", "the last --set of a key wins");
	cr_assert_str_eq(cfg_str(CFG_HTTP_LISTEN), "[::1]:9090");
}

Test(config, every_key_reads_its_env_variable)
{
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		enum cfg_key k = (enum cfg_key)i;
		const char *value = k == CFG_AUTH_ADMIN_TOKEN ? TOKEN : cfg_def(k)->def;
		char name[128], var[512];
		cfg_env_name(k, name, sizeof(name));
		snprintf(var, sizeof(var), "%s=%s", name, value);
		char *env[] = {var, NULL};
		cr_assert_eq(load(ini(""), env, NULL, 0), SOMA_OK, "%s: %s", var, all_errors());
		cr_assert_eq(cfg_source_of(k), CFG_SRC_ENV, "%s", name);
		cr_assert_str_eq(cfg_origin(k), name);
		cr_assert_str_eq(cfg_str(k), value);
		unlink(ini_path);
	}
}

Test(config, default_ini_in_working_directory_is_read)
{
	enter_tmp_dir();
	FILE *f = fopen("somaagent.ini", "w");
	cr_assert_not_null(f);
	fputs("[data]\nmin_free_mb = 128\n", f);
	fclose(f);
	cr_assert_eq(load(NULL, NULL, NULL, 0), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_DATA_MIN_FREE_MB), 128);
	cr_assert_str_eq(cfg_origin(CFG_DATA_MIN_FREE_MB), "somaagent.ini:2");
	cr_assert_str_eq(cfg_file_path(), "somaagent.ini");
}

Test(config, reload_replaces_previous_values)
{
	const char *sets[] = {"http.io_threads=9"};
	cr_assert_eq(load(ini(""), NULL, sets, 1), SOMA_OK);
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 9);
	cr_assert_eq(load(ini_path, NULL, NULL, 0), SOMA_OK);
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 0);
	cr_assert_eq(cfg_source_of(CFG_HTTP_IO_THREADS), CFG_SRC_DEFAULT);
}

/* ---- errors --------------------------------------------------------------------------------- */

Test(config, unknown_key_in_file)
{
	const char *path = ini("[http]\nlisten_port = 80\n");
	cr_assert_eq(load(path, NULL, NULL, 0), SOMA_ERR_CONFIG);
	assert_error(at_line(2), "http.listen_port", "unknown key");
}

Test(config, key_outside_a_section)
{
	const char *path = ini("listen = 127.0.0.1:1\n");
	cr_assert_eq(load(path, NULL, NULL, 0), SOMA_ERR_CONFIG);
	assert_error(at_line(1), "listen", "[section]");
}

Test(config, syntax_error_names_the_line)
{
	const char *path = ini("[http]\nio_threads = 2\nthis line has no equals sign\n");
	cr_assert_eq(load(path, NULL, NULL, 0), SOMA_ERR_CONFIG);
	assert_error(at_line(3), "syntax error", "key = value");
}

Test(config, unreadable_config_path)
{
	cr_assert_eq(load("/nonexistent/dir/soma.ini", NULL, NULL, 0), SOMA_ERR_CONFIG);
	assert_error("--config /nonexistent/dir/soma.ini", "cannot read", NULL);
	cr_assert_null(cfg_file_path());
}

Test(config, bad_int_from_set)
{
	const char *sets[] = {"http.io_threads=four", "http.io_threads=4x", "http.max_body="};
	cr_assert_eq(load(ini(""), NULL, sets, 3), SOMA_ERR_CONFIG);
	assert_error("--set http.io_threads", "\"four\"", "expected an integer from 0 to 64");
	assert_error("--set http.io_threads", "\"4x\"", "expected an integer");
	assert_error("--set http.max_body", "expected an integer from 1024 to 2147483647", NULL);
	cr_assert_eq(errs.count, 3, "%s", all_errors());
}

Test(config, int_out_of_bounds_from_env)
{
	char *env[] = {"SOMA_HTTP_IO_THREADS=257", "SOMA_HTTP_MAX_BODY=1023", NULL};
	cr_assert_eq(load(ini(""), env, NULL, 0), SOMA_ERR_CONFIG);
	assert_error("SOMA_HTTP_IO_THREADS", "http.io_threads", "from 0 to 64");
	assert_error("SOMA_HTTP_MAX_BODY", "http.max_body", "from 1024 to 2147483647");
	cr_assert_eq(errs.count, 2, "%s", all_errors());
}

Test(config, int_bounds_are_inclusive)
{
	const char *sets[] = {"http.io_threads=64", "http.max_body=1024"};
	cr_assert_eq(load(ini(""), NULL, sets, 2), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 64);
	cr_assert_eq(cfg_int(CFG_HTTP_MAX_BODY), 1024);
}

Test(config, bad_bool_from_file)
{
	const char *path = ini("[log]\naccess = maybe\n");
	cr_assert_eq(load(path, NULL, NULL, 0), SOMA_ERR_CONFIG);
	assert_error(at_line(2), "log.access", "expected true or false");
}

Test(config, bool_spellings)
{
	static const char *const words[] = {"true", "1", "yes", "on", "TRUE", "false", "0", "no", "off", "Off"};
	for (size_t i = 0; i < 10; i++) {
		char set[64];
		snprintf(set, sizeof(set), "auth.require=%s", words[i]);
		const char *sets[] = {set};
		cr_assert_eq(load(ini(""), NULL, sets, 1), SOMA_OK, "%s", set);
		cr_assert_eq(cfg_bool(CFG_AUTH_REQUIRE), i < 5, "%s", set);
		unlink(ini_path);
	}
}

Test(config, bad_enum)
{
	char *env[] = {"SOMA_LOG_LEVEL=loud", "SOMA_LOG_FORMAT=jso", NULL};
	cr_assert_eq(load(ini(""), env, NULL, 0), SOMA_ERR_CONFIG);
	assert_error("SOMA_LOG_LEVEL", "log.level", "expected one of debug|info|warn|error");
	assert_error("SOMA_LOG_FORMAT", "\"jso\"", "expected one of json|text"); /* a prefix is no choice */
}

Test(config, bad_listen_uses_the_validator_sentence)
{
	const char *sets[] = {"http.listen=localhost"};
	cr_assert_eq(load(ini(""), NULL, sets, 1), SOMA_ERR_CONFIG);
	assert_error("--set http.listen", "\"localhost\"", "expected host:port");
}

Test(config, unknown_soma_env_variable)
{
	char *env[] = {"HOME=/root", "SOMA_HTTP_LISTN=127.0.0.1:1", "SOMAX=1", NULL};
	cr_assert_eq(load(ini(""), env, NULL, 0), SOMA_ERR_CONFIG);
	assert_error("SOMA_HTTP_LISTN", "unknown environment variable", "SOMA_HTTP_LISTEN");
	cr_assert_eq(errs.count, 1, "only SOMA_* names are checked: %s", all_errors());
}

Test(config, set_without_equals_or_key)
{
	const char *sets[] = {"http.listen", "=5"};
	cr_assert_eq(load(ini(""), NULL, sets, 2), SOMA_ERR_CONFIG);
	assert_error("--set http.listen", "expected key=value", NULL);
	assert_error("--set =5", "expected key=value", NULL);
}

Test(config, set_unknown_key)
{
	const char *sets[] = {"http.nope=1"};
	cr_assert_eq(load(ini(""), NULL, sets, 1), SOMA_ERR_CONFIG);
	assert_error("--set http.nope", "unknown key", "config show");
}

Test(config, every_problem_is_reported_at_once)
{
	const char *path = ini("[http]\nbogus = 1\nio_threads = -1\n");
	char *env[] = {"SOMA_LOG_FORMAT=xml", NULL};
	const char *sets[] = {"auth.require=perhaps"};
	cr_assert_eq(load(path, env, sets, 1), SOMA_ERR_CONFIG);
	cr_assert_eq(errs.count, 4, "%s", all_errors());
}

Test(config, rejected_value_is_not_stored)
{
	const char *path = ini("[http]\nio_threads = 4\n");
	char *env[] = {"SOMA_HTTP_IO_THREADS=999", NULL};
	cr_assert_eq(load(path, env, NULL, 0), SOMA_ERR_CONFIG);
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 4);
	cr_assert_eq(cfg_source_of(CFG_HTTP_IO_THREADS), CFG_SRC_FILE);
}

/* ---- secrets -------------------------------------------------------------------------------- */

Test(config, secret_is_redacted_in_json_and_text)
{
	const char *sets[] = {"auth.admin_token=" TOKEN};
	cr_assert_eq(load(ini(""), NULL, sets, 1), SOMA_OK, "%s", all_errors());
	cr_assert_str_eq(cfg_str(CFG_AUTH_ADMIN_TOKEN), TOKEN, "the program itself still sees the token");

	json_t *full = cfg_to_json(), *values = cfg_values_json();
	char *a = json_dumps(full, JSON_COMPACT), *b = json_dumps(values, JSON_COMPACT);
	cr_assert_null(strstr(a, "SECRET"), "cfg_to_json leaks the token: %s", a);
	cr_assert_null(strstr(b, "SECRET"), "cfg_values_json leaks the token: %s", b);
	json_t *entry = json_object_get(full, "auth.admin_token");
	cr_assert_str_eq(json_string_value(json_object_get(entry, "value")), "<redacted>");
	cr_assert_str_eq(json_string_value(json_object_get(entry, "source")), "flag");
	cr_assert_str_eq(json_string_value(json_object_get(values, "auth.admin_token")), "<redacted>");
	free(a);
	free(b);
	json_decref(full);
	json_decref(values);

	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	cfg_print_text(out);
	fclose(out);
	cr_assert_null(strstr(text, "SECRET"), "cfg_print_text leaks the token: %s", text);
	cr_assert_not_null(strstr(text, "<redacted>"));
	free(text);
}

Test(config, json_has_typed_values_source_and_origin)
{
	const char *path = ini("[http]\nmax_body = 2048\n");
	cr_assert_eq(load(path, NULL, NULL, 0), SOMA_OK, "%s", all_errors());
	json_t *full = cfg_to_json();
	cr_assert_eq(json_object_size(full), CFG_KEY_COUNT);
	json_t *e = json_object_get(full, "http.max_body");
	cr_assert(json_is_integer(json_object_get(e, "value")));
	cr_assert_eq(json_integer_value(json_object_get(e, "value")), 2048);
	cr_assert_str_eq(json_string_value(json_object_get(e, "source")), "file");
	cr_assert_str_eq(json_string_value(json_object_get(e, "origin")), at_line(2));
	e = json_object_get(full, "log.access");
	cr_assert(json_is_true(json_object_get(e, "value")));
	cr_assert_str_eq(json_string_value(json_object_get(e, "origin")), "default");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(full, "auth.admin_token"), "value")), "",
			 "an empty secret is shown as empty");
	json_decref(full);
}

Test(config, secret_is_redacted_in_error_lines)
{
	const char *path = ini("[auth]\nadmin_token = tooshortSECRET\n");
	char *env[] = {"SOMA_AUTH_ADMIN_TOKEN=short SECRET", NULL};
	cr_assert_eq(load(path, env, NULL, 0), SOMA_ERR_CONFIG);
	assert_error(at_line(2), "auth.admin_token", "<redacted>");
	assert_error("SOMA_AUTH_ADMIN_TOKEN", "<redacted>", "32 to 256 characters");
	cr_assert_null(strstr(all_errors(), "SECRET"), "error lines leak the token: %s", all_errors());
}

/* ---- listen addresses, env names, docs -------------------------------------------------------- */

Test(config, parse_listen_accepts)
{
	char host[64];
	int port = 0;
	cr_assert(cfg_parse_listen("127.0.0.1:8080", host, sizeof(host), &port));
	cr_assert_str_eq(host, "127.0.0.1");
	cr_assert_eq(port, 8080);
	cr_assert(cfg_parse_listen("[::1]:9090", host, sizeof(host), &port));
	cr_assert_str_eq(host, "::1");
	cr_assert_eq(port, 9090);
	cr_assert(cfg_parse_listen("0.0.0.0:1", host, sizeof(host), &port));
	cr_assert_eq(port, 1);
	cr_assert(cfg_parse_listen("localhost:65535", host, sizeof(host), &port));
	cr_assert_str_eq(host, "localhost");
	cr_assert_eq(port, 65535);
}

Test(config, parse_listen_rejects)
{
	static const char *const bad[] = {
		"127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:80a", "127.0.0.1:abc", "127.0.0.1",   "127.0.0.1:",
		":8080",       "::1:8080",	  "[::1]8080",	   "[::1]",	    "[]:8080",	   "[::1:8080",
		"host:-1",     "host:+80",	  "host:123456",   "host: 80",	    "host:080000", "",
	};
	char host[64];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int port = -7;
		cr_assert_not(cfg_parse_listen(bad[i], host, sizeof(host), &port), "\"%s\" was accepted", bad[i]);
	}
	char tiny[4];
	int port;
	cr_assert_not(cfg_parse_listen("127.0.0.1:80", tiny, sizeof(tiny), &port), "host longer than the buffer");
}

Test(config, listen_is_loopback)
{
	static const char *const yes[] = {"127.0.0.1", "127.8.9.10", "::1", "localhost"};
	static const char *const no[] = {"0.0.0.0", "::", "10.0.0.1", "1270.0.0.1", "localhost.example.com"};
	for (size_t i = 0; i < 4; i++)
		cr_assert(cfg_listen_is_loopback(yes[i]), "%s", yes[i]);
	for (size_t i = 0; i < 5; i++)
		cr_assert_not(cfg_listen_is_loopback(no[i]), "%s", no[i]);
}

Test(config, hostname_starting_with_127_is_not_loopback)
{
	/* http.listen goes through getaddrinfo, so a name like this may resolve to a public address,
	 * yet it would switch on anonymous access (run.c check_auth_safety) */
	cr_assert_not(cfg_listen_is_loopback("127.example.com"));
}

Test(config, env_name_and_find)
{
	char name[64];
	cfg_env_name(CFG_HTTP_LISTEN, name, sizeof(name));
	cr_assert_str_eq(name, "SOMA_HTTP_LISTEN");
	cfg_env_name(CFG_DATA_MIN_FREE_MB, name, sizeof(name));
	cr_assert_str_eq(name, "SOMA_DATA_MIN_FREE_MB");
	cfg_env_name(CFG_AUTH_ADMIN_TOKEN, name, sizeof(name));
	cr_assert_str_eq(name, "SOMA_AUTH_ADMIN_TOKEN");
	char small[8];
	cfg_env_name(CFG_HTTP_LISTEN, small, sizeof(small));
	cr_assert_str_eq(small, "SOMA_HT", "truncated to the buffer, NUL-terminated");
	enum cfg_key k;
	cr_assert(cfg_find("http.listen", &k));
	cr_assert_eq(k, CFG_HTTP_LISTEN);
	cr_assert_not(cfg_find("http", &k));
	cr_assert_not(cfg_find("HTTP.LISTEN", &k));
	cr_assert(cfg_def(CFG_AUTH_ADMIN_TOKEN)->secret);
	cr_assert_null(cfg_def(CFG_HTTP_LISTEN)->alias_env);
}

Test(config, docs_list_every_key)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	cfg_print_docs(out);
	fclose(out);
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		enum cfg_key k = (enum cfg_key)i;
		char want[160], env[128];
		snprintf(want, sizeof(want), "| `%s` |", cfg_def(k)->name);
		cr_assert_not_null(strstr(text, want), "docs lack %s", cfg_def(k)->name);
		cfg_env_name(k, env, sizeof(env));
		snprintf(want, sizeof(want), "`%s`", env);
		cr_assert_not_null(strstr(text, want), "docs lack %s", env);
		cr_assert_not_null(strstr(text, cfg_def(k)->doc), "docs lack the doc line of %s", cfg_def(k)->name);
	}
	cr_assert_not_null(strstr(text, "integer 0..64"));
	cr_assert_not_null(strstr(text, "debug\\|info\\|warn\\|error"), "enum choices, pipes escaped for the table");
	cr_assert_not_null(strstr(text, "(secret: redacted in output)"));
	free(text);
}
