/*
 * tools.h - the tools an agent (or an API client) may run: a registry by name, each tool with a
 * description and a JSON Schema of its arguments, and one way to run it.
 *
 * DESIGN: the built-in tools are one static table (registry.c); tools.enabled (a list, empty =
 * all) hides the others from every caller: tools_find() does not return a disabled tool and the
 * listings leave it out. Two callers use the same functions:
 *   - the HTTP API (gateway/tools_api.c): GET /v1/tools lists tools_list_json(); POST
 *     /v1/tools/{name}/run checks tools_find() and tools_args_check() on the io thread (404 and 400
 *     before anything is published), asks policy tool.execute, and publishes the task soma.tool
 *     {tool, args}, whose handler (tasks/tool.c) calls tools_run() on a worker thread;
 *   - the conversation task (function calling): tools_openai_json() is the "tools" array of an
 *     OpenAI chat request; for each tool call of the reply it asks policy tool.execute itself
 *     with tools_policy_input() (as tasks/tool.c and the API do), then calls tools_run() with the
 *     call's parsed arguments and gives the result text (or the error message) back to the model
 *     as the tool message.
 * A run blocks (network, SomaBrain, the store): worker and pool threads only, never an io thread.
 * The memory tools ask policy memory.recall / memory.write themselves (as the memory API does),
 * with the identity in the context. fetch_page goes through the SSRF guard (fetch.c, ssrf.c).
 * The registry is immutable after the configuration is loaded: any thread reads it without locks.
 */
#ifndef SOMA_TOOLS_TOOLS_H
#define SOMA_TOOLS_TOOLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct store;

/* Longest error message a tool writes (what the user or the model reads). */
#define TOOL_ERROR_MAX 512

/* Who runs a tool and for what. Every pointer is borrowed for the duration of the run. */
struct tool_ctx {
	const char *tenant;	/* required: every read and write is this tenant's */
	const char *session_id; /* the conversation it runs for, or NULL (API runs) */
	const char *request_id; /* for logs and SomaBrain's X-Request-ID, or NULL */
	const char *subject;	/* the caller's identity for policy ("key:<id>"), or NULL ("") */
	const char *scopes;	/* space-separated scopes for policy, or NULL */
	const char *persona_id; /* for policy, or NULL */
	struct store *store;	/* the process's store (memory tools) */
	/* true asks a running tool to stop (the conversation's task was stopped or its session
	 * deleted), or NULL: never. fetch_page polls it while it waits for the network (about once a
	 * second at worst) and ends with SOMA_ERR_UNAVAILABLE, err "stopped"; the other tools
	 * finish (they are short). A caller that set it discards the run's outcome. */
	const _Atomic bool *cancel;
};

/* Runs the tool with args (an object already checked against its schema; borrowed). On SOMA_OK
 * *result is a malloc'd NUL-terminated JSON text (an object) the caller frees with free(). On an
 * error *result stays NULL and err (cap TOOL_ERROR_MAX) holds a sentence for the user or the
 * model: what went wrong and what to do. SOMA_ERR_FORBIDDEN: policy or the SSRF guard refused;
 * SOMA_ERR_INVALID: bad input found while running; SOMA_ERR_LIMIT: a size limit;
 * SOMA_ERR_UNAVAILABLE: a remote end failed (worth retrying later), or ctx->cancel stopped the run. */
typedef enum soma_err (*tool_run_fn)(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap);

struct tool_def {
	const char *name;	 /* [a-z_]+, unique, e.g. "fetch_page" */
	const char *description; /* one or two sentences for the model and the listing */
	const char *parameters;	 /* JSON Schema text of the arguments (type object) */
	tool_run_fn run;	 /* the implementation */
};

/* The enabled tool named name, or NULL when there is none or tools.enabled leaves it out.
 * Static storage. name may be NULL (then NULL). Any thread. */
const struct tool_def *tools_find(const char *name);
/* The enabled tools in table order: tools_at(0 .. tools_count()-1). Static storage. */
size_t tools_count(void);
const struct tool_def *tools_at(size_t i);
/* The tool's parameters as a JSON value (borrowed: parsed once, lives as long as the process;
 * never modify it). NULL only if the built-in text were invalid (a unit test checks each). */
json_t *tools_schema(const struct tool_def *t);

/* [{name, description, parameters}] of the enabled tools (GET /v1/tools). Caller owns. */
json_t *tools_list_json(void);
/* [{type:"function", function:{name, description, parameters}}] of the enabled tools: the
 * "tools" of an OpenAI-compatible chat request. Caller owns. */
json_t *tools_openai_json(void);

/* Checks args against the tool's schema (the subset the built-ins use: type object, required,
 * properties with type string|integer|number|boolean|object|array, maxLength, minLength, minimum, maximum,
 * additionalProperties false). false with a sentence in why ("args.url is required", ...) when
 * they do not fit; NULL args is taken as {}. */
bool tools_args_check(const struct tool_def *t, const json_t *args, char *why, size_t cap);
/* tools_args_check, then t->run (see tool_run_fn for *result and err). A schema failure returns
 * SOMA_ERR_INVALID with the reason in err. Blocks: worker and pool threads only. */
enum soma_err tools_run(const struct tool_def *t, const struct tool_ctx *ctx, json_t *args, char **result, char *err,
			size_t cap) SOMA_MUST_CHECK;

/* The context of policy tool.execute for a run of t with args (checked against its schema; NULL
 * is {}): {tool: name, args: args as given} and, for fetch_page, host: the URL's host name as
 * fetched, lowercased (an IPv6 address in brackets; absent when the URL has none). Caller owns;
 * NULL on OOM. Callers use tools_policy_input(), which sets it with the action and resource. */
json_t *tools_policy_context(const struct tool_def *t, const json_t *args);

#define TOOLS_POLICY_RESOURCE_MAX 96 /* "tool:<name>" and the NUL */
struct policy_input;
/* The one way every caller asks tool.execute for a run of t with args (the tools API, the
 * soma.tool task, the model's tool calls): sets in's action (tool.execute), resource
 * ("tool:<name>", written into resource, which must outlive in) and context
 * (tools_policy_context); the identity fields stay as the caller set them. Returns the context,
 * owned by the caller (json_decref once decided; in->context borrows it); NULL on OOM, then
 * in->context is NULL too. */
json_t *tools_policy_input(const struct tool_def *t, const json_t *args, char resource[TOOLS_POLICY_RESOURCE_MAX],
			   struct policy_input *in);

/* Validator of tools.enabled (config_keys.h): a comma-separated list of known tool names. */
bool tools_validate_enabled(const char *value, char *why, size_t cap);
/* Validator of tools.fetch.allowed_hosts: host names, *.suffix patterns or IP addresses. */
bool tools_validate_hosts(const char *value, char *why, size_t cap);

#endif
