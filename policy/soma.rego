# soma.rego - SomaAgent01's builtin policy rules, stated in Rego for operators who run OPA
# (policy.engine = opa). It gives the same decision, with the same reason, as the builtin engine
# (src/policy/rules.c) for every input; tests/e2e/policy_table.json is the decision table both are
# held to.
#
# Run it with the rules as data (the JSON of policy/default.json or your policy.file, whose
# top-level key "soma_policy" becomes data.soma_policy):
#
#     opa run --server --addr 127.0.0.1:8181 policy/soma.rego policy/default.json
#     somaagent run --set policy.engine=opa --set policy.opa_url=http://127.0.0.1:8181
#
# somaagent asks POST /v1/data/soma/allow with {"input": <input>} and reads "result": here an
# object {"allow": bool, "reason": string}; a bare boolean is accepted too. No result (an
# undefined decision), a non-2xx answer or no answer within policy.opa_timeout_ms is a deny.
#
# The input (CONTRACTS.md section 6):
#   tenant      string   the caller's tenant (from its API key or JWT)
#   subject     string   who: "key:<id>", "jwt:<sub>", "admin_token", "anonymous"
#   persona_id  string | null
#   scopes      [string] the credential's scopes, e.g. ["admin"]
#   action      string   conversation.send, llm.invoke, upload.create, session.read,
#                        session.delete, task.run, memory.write, memory.recall, tool.execute,
#                        delegate, or admin.<area> (admin.config, admin.keys, admin.audit, ...)
#   resource    string   a label: "session:<id>", "model:<name>", "task:<name>", "upload", a path
#   context     object   what the action's rule reads, by action:
#                          llm.invoke     {model, stream}
#                          upload.create  {size} before the body is read (the whole request),
#                                         {mime, size} for each file once its type is detected
#                          task.run       {task, queue}; {} for POST /v1/tasks/{id}/revoke
#                          tool.execute   {tool}
#                          delegate       {domain}
#                          conversation.send {message_length} at the gateway, {queued: true}
#                                         when a worker asks again before calling the model
#   degraded    {"somabrain": bool}
#
# The data (docs/security.md, Policy): data.soma_policy.tenants maps a tenant id, or "*" for every
# tenant without its own entry, to lists of patterns (exact strings, or with "*" matching any run
# of characters; the same glob here as in the builtin engine, so avoid ? [ ] { } in patterns):
#   actions, models, tools, tasks, delegate_domains, upload_types, and upload_max_bytes (a number).
# A missing list allows nothing. Keys starting with "_" are comments.

package soma

import rego.v1

default allow := {"allow": false, "reason": "tenant_not_allowed"}

allow := decision

tenants := object.get(data, ["soma_policy", "tenants"], {})

# The caller's rules: its own entry, else the "*" entry; undefined when neither exists.
rules := r if {
	r := tenants[input.tenant]
} else := r if {
	r := tenants["*"]
}

matches(patterns, value) if {
	some p in patterns
	glob.match(p, null, value)
}

listed(key, value) if matches(object.get(rules, key, []), value)

# A string from the context, or "" (as the builtin engine reads it).
ctx(key) := s if {
	s := input.context[key]
	is_string(s)
} else := ""

# What the action's own rule refuses, in the builtin engine's order.
problem := "model_not_allowed" if {
	input.action == "llm.invoke"
	not listed("models", ctx("model"))
} else := "upload_type_not_allowed" if {
	input.action == "upload.create"
	is_string(input.context.mime)
	not listed("upload_types", input.context.mime)
} else := "upload_too_large" if {
	input.action == "upload.create"
	is_number(input.context.size)
	is_number(rules.upload_max_bytes)
	input.context.size > rules.upload_max_bytes
} else := "tool_not_allowed" if {
	input.action == "tool.execute"
	not listed("tools", ctx("tool"))
} else := "task_not_allowed" if {
	input.action == "task.run"
	is_string(input.context.task) # a revoke names no task (resource task:<id>): the action only
	not listed("tasks", ctx("task"))
} else := "delegate_domain_not_allowed" if {
	input.action == "delegate"
	not listed("delegate_domains", ctx("domain"))
}

decision := {"allow": false, "reason": "tenant_not_allowed"} if {
	not rules
} else := {"allow": false, "reason": "admin_scope_required"} if {
	startswith(input.action, "admin.")
	not "admin" in input.scopes
} else := {"allow": false, "reason": "action_not_allowed"} if {
	not listed("actions", input.action)
} else := {"allow": false, "reason": reason} if {
	reason := problem
} else := {"allow": true, "reason": "allowed"}
