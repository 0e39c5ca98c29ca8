/*
 * registry.c - the built-in tools by name, which of them tools.enabled leaves on, their listings,
 * and running one (see tools.h). The echo tool lives here too: it has no other dependency.
 *
 * DESIGN: builtins[] is the one table of tools. Their schemas are parsed once (pthread_once) and
 * kept for the process's life. Whether a tool is enabled is read from tools.enabled on each
 * lookup (a short list scan): the configuration is immutable after load, so the answer is stable,
 * and a test that reloads the configuration sees its new value.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "policy/policy.h"
#include "tools/tools_int.h"

static enum soma_err tool_echo(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap)
{
	(void)ctx;
	json_t *out = json_pack("{s:O}", "text", json_object_get(args, "text"));
	*result = out ? json_dumps(out, JSON_COMPACT) : NULL;
	json_decref(out);
	if (!*result) {
		snprintf(err, cap, "the server ran out of memory; retry later");
		return SOMA_ERR_NOMEM;
	}
	return SOMA_OK;
}

static const struct tool_def builtins[] = {
	{"fetch_page",
	 "Fetch a web page (http or https) and return its text: HTML is converted to plain text, other text "
	 "types are returned as they are. Private and internal addresses are refused unless the operator "
	 "allowed them.",
	 "{\"type\":\"object\",\"properties\":{"
	 "\"url\":{\"type\":\"string\",\"maxLength\":2048,\"description\":\"The http:// or https:// URL to fetch.\"},"
	 "\"max_chars\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000000,"
	 "\"description\":\"Longest text to return, in characters (default 20000); the rest is cut.\"}},"
	 "\"required\":[\"url\"],\"additionalProperties\":false}",
	 tool_fetch_page},
	{"memory_recall", "Search this tenant's long-term memory and return the closest memories, best first.",
	 "{\"type\":\"object\",\"properties\":{"
	 "\"query\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":4096,\"description\":\"What to look for.\"},"
	 "\"top_k\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":50,"
	 "\"description\":\"How many memories to return (default memory.recall_top_k).\"}},"
	 "\"required\":[\"query\"],\"additionalProperties\":false}",
	 tool_memory_recall},
	{"memory_remember", "Store a piece of text in this tenant's long-term memory, to be recalled later.",
	 "{\"type\":\"object\",\"properties\":{"
	 "\"key\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200,"
	 "\"description\":\"A stable key ([A-Za-z0-9._:/-]); the first write with a key is kept: a later "
	 "write with the same key is ignored. Default: a new key.\"},"
	 "\"text\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100000,\"description\":\"What to remember.\"}},"
	 "\"required\":[\"text\"],\"additionalProperties\":false}",
	 tool_memory_remember},
	{"echo", "Return the text it is given (for tests and diagnostics).",
	 "{\"type\":\"object\",\"properties\":{"
	 "\"text\":{\"type\":\"string\",\"maxLength\":100000,\"description\":\"The text to return.\"}},"
	 "\"required\":[\"text\"],\"additionalProperties\":false}",
	 tool_echo},
};
#define NBUILTIN (sizeof(builtins) / sizeof(builtins[0]))

static json_t *schemas[NBUILTIN];
static pthread_once_t schemas_once = PTHREAD_ONCE_INIT;

static void parse_schemas(void)
{
	for (size_t i = 0; i < NBUILTIN; i++)
		schemas[i] = json_loads(builtins[i].parameters, 0, NULL);
}

json_t *tools_schema(const struct tool_def *t)
{
	pthread_once(&schemas_once, parse_schemas);
	if (!t || t < builtins || t >= builtins + NBUILTIN)
		return NULL;
	return schemas[t - builtins];
}

static bool in_list(const char *list, const char *name)
{
	struct cfg_pair p;
	for (const char *it = list; cfg_list_next(&it, &p);)
		if (p.ilen == strlen(name) && memcmp(p.item, name, p.ilen) == 0)
			return true;
	return false;
}

static bool enabled(const struct tool_def *t)
{
	const char *list = cfg_str(CFG_TOOLS_ENABLED);
	return !list || !*list || in_list(list, t->name);
}

const struct tool_def *tools_find(const char *name)
{
	for (size_t i = 0; name && i < NBUILTIN; i++)
		if (strcmp(builtins[i].name, name) == 0)
			return enabled(&builtins[i]) ? &builtins[i] : NULL;
	return NULL;
}

size_t tools_count(void)
{
	size_t n = 0;
	for (size_t i = 0; i < NBUILTIN; i++)
		n += enabled(&builtins[i]);
	return n;
}

const struct tool_def *tools_at(size_t i)
{
	for (size_t k = 0; k < NBUILTIN; k++)
		if (enabled(&builtins[k]) && i-- == 0)
			return &builtins[k];
	return NULL;
}

static json_t *entry(const struct tool_def *t)
{
	return json_pack("{s:s, s:s, s:O}", "name", t->name, "description", t->description, "parameters",
			 tools_schema(t));
}

json_t *tools_list_json(void)
{
	json_t *list = json_array();
	for (size_t i = 0; list && i < tools_count(); i++)
		if (json_array_append_new(list, entry(tools_at(i))) != 0) {
			json_decref(list);
			return NULL;
		}
	return list;
}

json_t *tools_openai_json(void)
{
	json_t *list = json_array();
	for (size_t i = 0; list && i < tools_count(); i++)
		if (json_array_append_new(
			    list, json_pack("{s:s, s:o}", "type", "function", "function", entry(tools_at(i)))) != 0) {
			json_decref(list);
			return NULL;
		}
	return list;
}

enum soma_err tools_run(const struct tool_def *t, const struct tool_ctx *ctx, json_t *args, char **result, char *err,
			size_t cap)
{
	*result = NULL;
	json_t *empty = args ? NULL : json_object();
	enum soma_err e = SOMA_ERR_INVALID;
	if (tools_args_check(t, args ? args : empty, err, cap))
		e = t->run(ctx, args ? args : empty, result, err, cap);
	json_decref(empty);
	if (e != SOMA_OK) {
		free(*result);
		*result = NULL;
	}
	return e;
}

json_t *tools_policy_context(const struct tool_def *t, const json_t *args)
{
	json_t *empty = args ? NULL : json_object();
	json_t *ctx = json_pack("{s:s, s:O}", "tool", t->name, "args", args ? args : empty);
	json_decref(empty);
	char host[256];
	if (ctx && strcmp(t->name, "fetch_page") == 0 &&
	    fetch_url_host(json_string_value(json_object_get(args, "url")), host, sizeof(host)))
		json_object_set_new(ctx, "host", json_string(host));
	return ctx;
}

json_t *tools_policy_input(const struct tool_def *t, const json_t *args, char resource[TOOLS_POLICY_RESOURCE_MAX],
			   struct policy_input *in)
{
	snprintf(resource, TOOLS_POLICY_RESOURCE_MAX, "tool:%s", t->name);
	json_t *ctx = tools_policy_context(t, args);
	in->action = POLICY_TOOL_EXECUTE;
	in->resource = resource;
	in->context = ctx;
	return ctx;
}

bool tools_validate_enabled(const char *value, char *why, size_t cap)
{
	struct cfg_pair p;
	for (const char *it = value; cfg_list_next(&it, &p);) {
		bool known = false;
		for (size_t i = 0; i < NBUILTIN && !known; i++)
			known = p.ilen == strlen(builtins[i].name) && memcmp(p.item, builtins[i].name, p.ilen) == 0;
		if (!known) {
			snprintf(why, cap,
				 "unknown tool \"%.*s\" (known: fetch_page, memory_recall, memory_remember, echo)",
				 (int)p.ilen, p.item);
			return false;
		}
	}
	return true;
}

bool tools_validate_hosts(const char *value, char *why, size_t cap)
{
	struct cfg_pair p;
	for (const char *it = value; cfg_list_next(&it, &p);) {
		bool ok = p.ilen > 0 && p.ilen < 256;
		for (size_t i = 0; ok && i < p.ilen; i++) {
			char c = p.item[i];
			ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			     c == '-' || c == ':' || c == '[' || c == ']' || (c == '*' && i == 0);
		}
		if (ok && p.item[0] == '*')
			ok = p.ilen > 2 && p.item[1] == '.';
		if (!ok) {
			snprintf(why, cap,
				 "\"%.*s\" is not a host: give host names (example.com), patterns (*.example.com) or "
				 "IP addresses (127.0.0.1, [::1]), comma-separated",
				 (int)p.ilen, p.item);
			return false;
		}
	}
	return true;
}
