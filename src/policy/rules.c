/*
 * rules.c - the builtin engine: policy rules from JSON, and the decision they give.
 *
 * DESIGN: a policy file is parsed once (policy_start, main thread) into tenants sorted by name,
 * each with its lists of patterns; afterwards the rules are read-only, so any thread decides
 * without locks: a bsearch for the tenant (else the "*" entry), then at most two list scans.
 * The checks and their order are exactly those of policy/soma.rego, so the builtin engine and
 * OPA running that file give the same decision and the same reason for every input:
 *   1. no entry for the tenant and no "*"            -> tenant_not_allowed
 *   2. an admin.* action without scope admin         -> admin_scope_required
 *   3. the action matches no pattern in actions      -> action_not_allowed
 *   4. by action: llm.invoke context.model in models -> model_not_allowed
 *      upload.create context.mime in upload_types    -> upload_type_not_allowed (only when given)
 *      upload.create context.size <= upload_max_bytes -> upload_too_large (only when both given)
 *      tool.execute context.tool in tools           -> tool_not_allowed
 *      task.run context.task in tasks               -> task_not_allowed
 *      delegate context.domain in delegate_domains  -> delegate_domain_not_allowed
 *   5. otherwise                                     -> allowed
 * A missing list allows nothing (deny by default); a missing upload_max_bytes sets no limit
 * beyond uploads.max_mb.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_int.h"

struct embedded_file {
	const char *name;
	const char *text;
};
extern const struct embedded_file policy_default_files[]; /* generated from policy/default.json */

bool policy_glob(const char *p, const char *s)
{
	const char *star = NULL, *resume = NULL;
	while (*s) {
		if (*p == '*') {
			star = p++;
			resume = s;
		} else if (*p == *s) {
			p++;
			s++;
		} else if (star) {
			p = star + 1;
			s = ++resume;
		} else {
			return false;
		}
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

static bool list_match(const struct policy_list *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++) {
		if (policy_glob(l->items[i], s))
			return true;
	}
	return false;
}

static bool scope_has(const char *scopes, const char *want)
{
	size_t n = strlen(want);
	for (const char *p = scopes ? scopes : ""; *p;) {
		while (*p == ' ')
			p++;
		size_t len = strcspn(p, " ");
		if (len == n && strncmp(p, want, n) == 0)
			return true;
		p += len;
	}
	return false;
}

static int cmp_tenant(const void *a, const void *b)
{
	return strcmp(((const struct policy_tenant *)a)->name, ((const struct policy_tenant *)b)->name);
}

static const struct policy_tenant *find_tenant(const struct policy_rules *r, const char *tenant)
{
	struct policy_tenant key = {.name = (char *)tenant};
	const struct policy_tenant *t = r->n ? bsearch(&key, r->tenants, r->n, sizeof(key), cmp_tenant) : NULL;
	return t ? t : r->fallback;
}

/* A context string as soma.rego reads it: the value when it is a string, else "". */
static const char *ctx_str(json_t *ctx, const char *key)
{
	json_t *v = json_object_get(ctx, key);
	return json_is_string(v) ? json_string_value(v) : "";
}

/* Step 4: what the action's own rule refuses, or NULL. */
static const char *action_problem(const struct policy_tenant *t, const struct policy_input *in)
{
	const char *a = in->action;
	json_t *ctx = in->context;
	if (strcmp(a, POLICY_LLM_INVOKE) == 0)
		return list_match(&t->models, ctx_str(ctx, "model")) ? NULL : "model_not_allowed";
	if (strcmp(a, POLICY_UPLOAD_CREATE) == 0) {
		json_t *mime = json_object_get(ctx, "mime"), *size = json_object_get(ctx, "size");
		if (json_is_string(mime) && !list_match(&t->upload_types, json_string_value(mime)))
			return "upload_type_not_allowed";
		if (json_is_number(size) && t->upload_max_bytes >= 0 &&
		    json_number_value(size) > (double)t->upload_max_bytes)
			return "upload_too_large";
		return NULL;
	}
	if (strcmp(a, POLICY_TOOL_EXECUTE) == 0)
		return list_match(&t->tools, ctx_str(ctx, "tool")) ? NULL : "tool_not_allowed";
	if (strcmp(a, POLICY_TASK_RUN) == 0) /* a revoke names no task (task:<id>): the action only */
		return !json_is_string(json_object_get(ctx, "task")) || list_match(&t->tasks, ctx_str(ctx, "task"))
			       ? NULL
			       : "task_not_allowed";
	if (strcmp(a, POLICY_DELEGATE) == 0)
		return list_match(&t->domains, ctx_str(ctx, "domain")) ? NULL : "delegate_domain_not_allowed";
	return NULL;
}

void policy_rules_decide(const struct policy_rules *r, const struct policy_input *in, struct policy_decision *out)
{
	const struct policy_tenant *t = find_tenant(r, in->tenant ? in->tenant : "");
	const char *action = in->action ? in->action : "";
	const char *why;
	if (!t)
		why = "tenant_not_allowed";
	else if (strncmp(action, "admin.", 6) == 0 && !scope_has(in->scopes, "admin"))
		why = "admin_scope_required";
	else if (!list_match(&t->actions, action))
		why = "action_not_allowed";
	else
		why = action_problem(t, in);
	policy_decision_set(out, why == NULL, why ? why : "allowed", "builtin");
}

/* ---- parsing ---------------------------------------------------------------------------------- */

static void list_free(struct policy_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
}

static void tenant_free(struct policy_tenant *t)
{
	free(t->name);
	list_free(&t->actions);
	list_free(&t->models);
	list_free(&t->tools);
	list_free(&t->tasks);
	list_free(&t->domains);
	list_free(&t->upload_types);
}

void policy_rules_free(struct policy_rules *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		tenant_free(&r->tenants[i]);
	free(r->tenants);
	free(r);
}

static bool parse_list(json_t *v, struct policy_list *l, const char *tenant, const char *key, char *why, size_t cap)
{
	if (!json_is_array(v) || json_array_size(v) > 4096) {
		snprintf(why, cap, "tenants.%s.%s must be an array of at most 4096 strings", tenant, key);
		return false;
	}
	l->items = calloc(json_array_size(v) + 1, sizeof(char *));
	if (!l->items) {
		snprintf(why, cap, "out of memory");
		return false;
	}
	size_t i;
	json_t *item;
	json_array_foreach(v, i, item)
	{
		if (!json_is_string(item) || json_string_length(item) == 0 || json_string_length(item) > 255 ||
		    strlen(json_string_value(item)) != json_string_length(item)) {
			snprintf(why, cap, "tenants.%s.%s[%zu] must be a non-empty string of at most 255 bytes", tenant,
				 key, i);
			return false;
		}
		if (!(l->items[l->n] = strdup(json_string_value(item)))) {
			snprintf(why, cap, "out of memory");
			return false;
		}
		l->n++;
	}
	return true;
}

static bool parse_tenant(const char *name, json_t *obj, struct policy_tenant *t, char *why, size_t cap)
{
	t->upload_max_bytes = -1;
	if (!(t->name = strdup(name)))
		return snprintf(why, cap, "out of memory"), false;
	if (!json_is_object(obj))
		return snprintf(why, cap, "tenants.%s must be an object", name), false;
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		struct policy_list *l = strcmp(key, "actions") == 0	       ? &t->actions
					: strcmp(key, "models") == 0	       ? &t->models
					: strcmp(key, "tools") == 0	       ? &t->tools
					: strcmp(key, "tasks") == 0	       ? &t->tasks
					: strcmp(key, "delegate_domains") == 0 ? &t->domains
					: strcmp(key, "upload_types") == 0     ? &t->upload_types
									       : NULL;
		if (l) {
			if (l->items) /* JSON_REJECT_DUPLICATES makes this unreachable; keep it safe anyway */
				return snprintf(why, cap, "tenants.%s.%s is given twice", name, key), false;
			if (!parse_list(v, l, name, key, why, cap))
				return false;
		} else if (strcmp(key, "upload_max_bytes") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return snprintf(why, cap, "tenants.%s.upload_max_bytes must be a non-negative integer",
						name),
				       false;
			t->upload_max_bytes = json_integer_value(v);
		} else if (key[0] != '_') {
			snprintf(why, cap,
				 "tenants.%s has an unknown key \"%s\" (known: actions, models, tools, tasks, "
				 "delegate_domains, upload_types, upload_max_bytes; keys starting with _ are comments)",
				 name, key);
			return false;
		}
	}
	return true;
}

static json_t *tenants_of(json_t *root, char *why, size_t cap)
{
	json_t *top = json_object_get(root, "soma_policy");
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		if (strcmp(key, "soma_policy") != 0 && key[0] != '_') {
			snprintf(why, cap, "unknown top-level key \"%s\"; the rules go under \"soma_policy\"", key);
			return NULL;
		}
	}
	json_object_foreach(top, key, v)
	{
		if (strcmp(key, "tenants") != 0 && key[0] != '_') {
			snprintf(why, cap, "unknown key soma_policy.%s; the rules go under soma_policy.tenants", key);
			return NULL;
		}
	}
	json_t *tenants = json_object_get(top, "tenants");
	if (!json_is_object(tenants))
		snprintf(why, cap, "the file must be {\"soma_policy\": {\"tenants\": {\"<tenant or *>\": {...}}}}");
	return json_is_object(tenants) ? tenants : NULL;
}

enum soma_err policy_rules_parse(const char *text, size_t len, struct policy_rules **out, char *why, size_t cap)
{
	*out = NULL;
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(why, cap, "not valid JSON (line %d, column %d: %s)", jerr.line, jerr.column, jerr.text);
		return SOMA_ERR_CONFIG;
	}
	struct policy_rules *r = NULL;
	json_t *tenants = json_is_object(root) ? tenants_of(root, why, cap) : NULL;
	bool ok = tenants != NULL;
	if (!json_is_object(root))
		snprintf(why, cap, "the file must hold a JSON object");
	if (ok) {
		r = calloc(1, sizeof(*r));
		if (r)
			r->tenants = calloc(json_object_size(tenants) + 1, sizeof(*r->tenants));
		if (!r || !r->tenants) {
			snprintf(why, cap, "out of memory");
			ok = false;
		}
	}
	if (ok) {
		const char *name;
		json_t *v;
		json_object_foreach(tenants, name, v)
		{
			ok = parse_tenant(name, v, &r->tenants[r->n], why, cap);
			r->n++; /* counted even when it failed: freed with the rest */
			if (!ok)
				break;
		}
	}
	json_decref(root);
	if (!ok) {
		policy_rules_free(r);
		return SOMA_ERR_CONFIG;
	}
	qsort(r->tenants, r->n, sizeof(*r->tenants), cmp_tenant);
	struct policy_tenant key = {.name = "*"};
	r->fallback = r->n ? bsearch(&key, r->tenants, r->n, sizeof(key), cmp_tenant) : NULL;
	*out = r;
	return SOMA_OK;
}

enum soma_err policy_rules_default(struct policy_rules **out, char *why, size_t cap)
{
	for (const struct embedded_file *f = policy_default_files; f->name; f++) {
		if (strcmp(f->name, "default.json") == 0)
			return policy_rules_parse(f->text, strlen(f->text), out, why, cap);
	}
	snprintf(why, cap, "policy/default.json is not compiled in");
	*out = NULL;
	return SOMA_ERR_CONFIG;
}
