/*
 * tools_api.c - the tools endpoints (CONTRACTS.md §3 "Tools and agents"):
 *   GET  /v1/tools             -> {tools:[{name, description, parameters}], count} (enabled tools)
 *   POST /v1/tools/{name}/run  {args} -> 202 {task_id, status:"PENDING"}; the outcome is read at
 *                              GET /v1/tasks/{task_id} (the tool's result, or its error)
 *
 * DESIGN: a run is a task (soma.tool {tool, args}, src/tasks/tool.c) so that it runs on the workers
 * of either queue driver, never on an io thread, and its status and result come from the task
 * API, scoped to the tenant like every task. Before anything is published, on the io thread: an
 * unknown or disabled tool is 404, arguments that do not fit the tool's schema are 400 with the
 * reason, then policy tool.execute is asked (tools_policy_input: resource "tool:<name>", context
 * {tool, args, host?}; the worker and the model's tool calls ask with the same); a deny is
 * the gate's 403. The op is built and stored by the task API's own path (tasks_publish.c).
 */
#include <stdio.h>

#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "policy/gate.h"
#include "tasks/tasks.h"
#include "tools/tools.h"

static void list(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *tools = tools_list_json();
	if (!tools) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	http_respond_json(req, 200,
			  json_pack("{s:o, s:I}", "tools", tools, "count", (json_int_t)json_array_size(tools)));
}

static void run_allowed(struct http_req *req, void *arg)
{
	gw_task_op_publish(req, arg);
}

static void drop_op(void *arg)
{
	store_op_free(arg);
}

static void run(struct http_req *req, void *arg)
{
	(void)arg;
	struct str p = http_req_param(req, "name");
	char name[64], why[TOOL_ERROR_MAX];
	snprintf(name, sizeof(name), "%.*s", (int)(p.len < sizeof(name) ? p.len : 0), p.p ? p.p : "");
	const struct tool_def *tool = tools_find(name);
	if (!tool) {
		http_respond_error(req, 404, "unknown_tool",
				   "no tool named \"%.*s\" is enabled here; GET /v1/tools lists them",
				   (int)(p.len < 64 ? p.len : 64), p.p ? p.p : "");
		return;
	}
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *args = json_object_get(body, "args");
	if (args && json_is_null(args))
		args = NULL;
	json_t *given = args ? json_incref(args) : json_object();
	if (!tools_args_check(tool, given, why, sizeof(why))) {
		http_respond_error(req, 400, "invalid_args", "%s", why);
	} else {
		json_t *kwargs = json_pack("{s:s, s:O}", "tool", tool->name, "args", given), *none = json_array();
		struct store_op *op = kwargs && none ? gw_task_op_new(req, TASK_TOOL_RUN, none, kwargs) : NULL;
		json_decref(kwargs);
		json_decref(none);
		if (!op) {
			http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		} else {
			char resource[TOOLS_POLICY_RESOURCE_MAX];
			struct policy_input in = {0}; /* the request's identity (policy_gate_ask) */
			json_t *ctx = tools_policy_input(tool, given, resource, &in);
			policy_gate_ask(req, &in, NULL, run_allowed, op, drop_op);
			json_decref(ctx);
		}
	}
	json_decref(given);
	json_decref(body);
}

enum soma_err gateway_tools_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"GET", "/v1/tools", list, 0},
		{"POST", "/v1/tools/{name}/run", run, 0},
	};
	return gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
}
