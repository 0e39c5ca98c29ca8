/*
 * gate.c - policy for HTTP requests (see gate.h): the route table, the wait for OPA, the deny.
 *
 * DESIGN: the action of a route comes from the table below (method + pattern); routes flagged
 * HTTP_ROUTE_ADMIN are admin.<area>, the area being the first path segment after /v1/ (or after
 * /v1/admin/), '-' read as '_': /v1/admin/config -> admin.config, /v1/keys -> admin.keys,
 * /v1/dead-letters/{id} -> admin.dead_letters. Routes in neither are not asked (public routes,
 * /v1/runtime-config, /v1/models, /v1/metrics/system, a task's own outcome: GET /v1/tasks/{id} and
 * /v1/celery/runs/{id}); a new route that changes or reads a tenant's data needs a rule here (or
 * asks in its handler). The lookup result is cached per io thread
 * by route pointer. A wait for OPA is a struct wait owned by the request (handler_ctx/on_abort,
 * the pattern of gateway/common.c): the policy thread posts the decision back, and on the io
 * thread an aborted wait only drops its argument.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/gate.h"
#include "policy/policy_int.h"

enum resource_kind { RES_NONE, RES_SESSION, RES_SESSIONS, RES_ATTACHMENT, RES_TASK, RES_UPLOAD, RES_PATH };

struct route_rule {
	const char *method, *pattern; /* the route */
	const char *action;	      /* what it is */
	enum resource_kind res;	      /* what the resource label says */
	bool in_handler;	      /* the handler asks, with what it reads from the body */
};

static const struct route_rule route_rules[] = {
	{"POST", "/v1/session/message", POLICY_CONVERSATION_SEND, RES_NONE, true},
	{"POST", "/v1/session/action", POLICY_CONVERSATION_SEND, RES_NONE, true},
	{"POST", "/v1/chat/completions", POLICY_LLM_INVOKE, RES_NONE, true},
	{"POST", "/v1/llm/invoke", POLICY_LLM_INVOKE, RES_NONE, true},
	{"POST", "/v1/llm/invoke/stream", POLICY_LLM_INVOKE, RES_NONE, true},
	{"POST", "/v1/tasks", POLICY_TASK_RUN, RES_NONE, true},
	{"POST", "/v1/tools/{name}/run", POLICY_TOOL_EXECUTE, RES_NONE, true}, /* the tool's name in tools_api.c */
	{"POST", "/v1/uploads", POLICY_UPLOAD_CREATE, RES_UPLOAD, false},      /* + each file's type in uploads.c */
	{"GET", "/v1/attachments/{id}", POLICY_SESSION_READ, RES_ATTACHMENT, false},
	{"GET", "/v1/sessions", POLICY_SESSION_READ, RES_SESSIONS, false},
	{"GET", "/v1/sessions/{id}", POLICY_SESSION_READ, RES_SESSION, false},
	{"GET", "/v1/sessions/{id}/history", POLICY_SESSION_READ, RES_SESSION, false},
	{"GET", "/v1/sessions/{id}/events", POLICY_SESSION_READ, RES_SESSION, false},
	{"DELETE", "/v1/sessions/{id}", POLICY_SESSION_DELETE, RES_SESSION, false},
	{"POST", "/v1/sessions/{id}/reset", POLICY_SESSION_DELETE, RES_SESSION, false},
	{"POST", "/v1/sessions/{id}/pause", POLICY_CONVERSATION_SEND, RES_SESSION, false},
	{"POST", "/v1/sessions/{id}/cancel", POLICY_CONVERSATION_SEND, RES_SESSION, false},
	{"POST", "/v1/tasks/{id}/revoke", POLICY_TASK_RUN, RES_TASK, false}, /* no task name: the action only */
	{"GET", "/v1/memory/outbox", POLICY_MEMORY_RECALL, RES_PATH, false},
};

struct route_slot {
	const struct http_route *route; /* key */
	const char *pattern;		/* the route's pattern when cached (guards against a reused pointer) */
	char method[8];			/* GET (for HEAD too), POST... */
	bool found;			/* a rule applies */
	struct route_rule rule;		/* it (admin rules point action at admin_action) */
	char admin_action[64];		/* admin.<area> */
};

static __thread struct route_slot route_cache[16];

/* admin.<area> from a pattern: "/v1/admin/config" -> "admin.config", "/v1/dead-letters/{id}" ->
 * "admin.dead_letters". */
static void admin_action(const char *pattern, char *out, size_t cap)
{
	const char *p = pattern;
	if (strncmp(p, "/v1/", 4) == 0)
		p += 4;
	else if (*p == '/')
		p++;
	if (strncmp(p, "admin/", 6) == 0 && p[6])
		p += 6;
	size_t o = (size_t)snprintf(out, cap, "admin.");
	for (; *p && *p != '/' && o + 1 < cap; p++)
		out[o++] = *p == '-' ? '_' : *p;
	out[o] = '\0';
}

static const struct route_slot *rule_for(const struct http_req *req)
{
	const struct http_route *rt = req->route;
	const char *pattern = http_route_pattern(rt);
	char method[8];
	snprintf(method, sizeof(method), "%.*s", (int)(req->method.len < 7 ? req->method.len : 7), req->method.p);
	if (strcmp(method, "HEAD") == 0)
		snprintf(method, sizeof(method), "GET");
	struct route_slot *s = &route_cache[((uintptr_t)rt >> 4) % 16];
	if (s->route == rt && s->pattern == pattern && strcmp(s->method, method) == 0)
		return s;
	*s = (struct route_slot){.route = rt, .pattern = pattern};
	snprintf(s->method, sizeof(s->method), "%s", method);
	for (size_t i = 0; i < sizeof(route_rules) / sizeof(route_rules[0]); i++) {
		if (strcmp(route_rules[i].method, method) == 0 && strcmp(route_rules[i].pattern, pattern) == 0) {
			s->rule = route_rules[i];
			s->found = true;
		}
	}
	if (!s->found && (http_route_flags(rt) & HTTP_ROUTE_ADMIN)) {
		admin_action(pattern, s->admin_action, sizeof(s->admin_action));
		s->rule = (struct route_rule){method, pattern, s->admin_action, RES_PATH, false};
		s->found = true;
	}
	return s;
}

/* ---- the 403 -------------------------------------------------------------------------------------- */

void policy_gate_respond(struct http_req *req, const struct policy_decision *d)
{
	char buf[200], message[512];
	snprintf(message, sizeof(message), "%s: %s", d->reason, policy_decision_words(d, buf, sizeof(buf)));
	http_respond_error_json(req, 403,
				json_pack("{s:s, s:s, s:s, s:s}", "code", "policy_denied", "message", message,
					  "request_id", req->request_id, "reason", d->reason));
}

void policy_gate_deny(struct http_req *req, const struct policy_input *in, const struct policy_decision *d,
		      const char *session_id)
{
	policy_denied_audit(in, req->ident.key_id, d, req->request_id);
	if (session_id && session_id[0])
		policy_denied_append(in->tenant, session_id, policy_denied_event(session_id, in, d));
	policy_gate_respond(req, d);
}

/* ---- waiting for OPA ------------------------------------------------------------------------------- */

struct wait {
	struct http_req *req;	  /* valid while !aborted, on its io thread */
	struct io_thread *thread; /* the request's io thread */
	_Atomic bool aborted;	  /* the client left (set on the io thread; policy threads read it) */
	policy_cont_fn cont;	  /* on allow */
	void *arg;		  /* cont's / drop's argument */
	policy_drop_fn drop;	  /* when cont will not run */
	struct policy_decision d; /* the answer, once posted */
	/* copies of the input for a deny's audit row and event */
	char tenant[65], subject[65], scopes[129], action[64], resource[256], persona[65], session[65];
	bool has_persona; /* persona is set */
};

static void finish_wait(struct wait *w, bool run)
{
	if (run && w->d.allow) {
		w->cont(w->req, w->arg);
	} else {
		if (run) {
			struct policy_input in = {w->tenant, w->subject, w->has_persona ? w->persona : NULL,
						  w->scopes, w->action,	 w->resource,
						  NULL,	     false};
			policy_gate_deny(w->req, &in, &w->d, w->session);
		}
		if (w->drop)
			w->drop(w->arg);
	}
	free(w);
}

static void on_io_thread(void *arg)
{
	struct wait *w = arg;
	bool aborted = atomic_load(&w->aborted);
	if (!aborted) {
		w->req->on_abort = NULL;
		w->req->handler_ctx = NULL;
	}
	finish_wait(w, !aborted);
}

static void on_decided(void *arg, const struct policy_decision *d)
{
	struct wait *w = arg;
	w->d = *d;
	if (http_thread_post_wait(w->thread, on_io_thread, w) != SOMA_OK)
		finish_wait(w, false); /* the io thread stopped: the request was aborted with it */
}

static void on_abort(struct http_req *req)
{
	atomic_store(&((struct wait *)req->handler_ctx)->aborted, true);
}

/* Waits for OPA; false (nothing kept) when it cannot be asked. */
static bool start_wait(struct http_req *req, const struct policy_input *in, const char *session_id, policy_cont_fn cont,
		       void *arg, policy_drop_fn drop)
{
	struct wait *w = calloc(1, sizeof(*w));
	if (!w)
		return false;
	*w = (struct wait){.req = req, .thread = req->thread, .cont = cont, .arg = arg, .drop = drop};
	snprintf(w->tenant, sizeof(w->tenant), "%s", in->tenant ? in->tenant : "");
	snprintf(w->subject, sizeof(w->subject), "%s", in->subject ? in->subject : "");
	snprintf(w->scopes, sizeof(w->scopes), "%s", in->scopes ? in->scopes : "");
	snprintf(w->action, sizeof(w->action), "%s", in->action ? in->action : "");
	snprintf(w->resource, sizeof(w->resource), "%s", in->resource ? in->resource : "");
	snprintf(w->session, sizeof(w->session), "%s", session_id ? session_id : "");
	w->has_persona = in->persona_id != NULL;
	snprintf(w->persona, sizeof(w->persona), "%s", in->persona_id ? in->persona_id : "");
	req->handler_ctx = w;
	req->on_abort = on_abort;
	if (policy_ask(in, on_decided, w, &w->aborted) == SOMA_OK)
		return true;
	req->handler_ctx = NULL;
	req->on_abort = NULL;
	free(w);
	return false;
}

static void fill_identity(const struct http_req *req, struct policy_input *in)
{
	if (!in->tenant)
		in->tenant = req->ident.tenant;
	if (!in->subject)
		in->subject = req->ident.subject;
	if (!in->scopes)
		in->scopes = req->ident.scopes;
}

/* Decides now or starts waiting; true when cont will run or has run or the request is answered. */
static enum policy_gate_result ask(struct http_req *req, struct policy_input *in, const char *session_id,
				   policy_cont_fn cont, void *arg, policy_drop_fn drop, bool inline_allow)
{
	fill_identity(req, in);
	struct policy_decision d;
	if (policy_decide_now(in, &d)) {
		if (d.allow) {
			if (inline_allow)
				cont(req, arg);
			return POLICY_GATE_PASS;
		}
	} else if (start_wait(req, in, session_id, cont, arg, drop)) {
		return POLICY_GATE_ANSWERED;
	} else {
		policy_decision_set(&d, false, "opa_overloaded", "opa");
		policy_count(in->action, &d);
	}
	policy_gate_deny(req, in, &d, session_id);
	if (drop)
		drop(arg);
	return POLICY_GATE_ANSWERED;
}

void policy_gate_ask(struct http_req *req, struct policy_input *in, const char *session_id, policy_cont_fn cont,
		     void *arg, policy_drop_fn drop)
{
	(void)ask(req, in, session_id, cont, arg, drop, true);
}

enum policy_gate_result policy_gate_route(struct http_req *req, bool before_body, policy_cont_fn resume, void *arg)
{
	if (!req->route || (http_route_flags(req->route) & HTTP_ROUTE_PUBLIC))
		return POLICY_GATE_PASS;
	const struct route_slot *s = rule_for(req);
	if (!s->found || s->rule.in_handler)
		return POLICY_GATE_PASS;
	char resource[256] = "";
	const char *session = NULL;
	struct str id = s->rule.res == RES_SESSION || s->rule.res == RES_ATTACHMENT || s->rule.res == RES_TASK
				? http_req_param(req, "id")
				: STR_NULL;
	if (id.p && id.len <= 64 && s->rule.res == RES_SESSION)
		session = id.p;
	json_t *ctx = NULL;
	switch (s->rule.res) {
	case RES_SESSION:
	case RES_ATTACHMENT:
	case RES_TASK:
		snprintf(resource, sizeof(resource), "%s:%.*s",
			 s->rule.res == RES_SESSION ? "session"
			 : s->rule.res == RES_TASK  ? "task"
						    : "attachment",
			 (int)(id.len > 64 ? 64 : id.len), id.p ? id.p : "");
		break;
	case RES_SESSIONS:
		snprintf(resource, sizeof(resource), "sessions");
		break;
	case RES_UPLOAD:
		snprintf(resource, sizeof(resource), "upload");
		if (req->content_length >= 0)
			ctx = json_pack("{s:I}", "size", (json_int_t)req->content_length);
		break;
	case RES_PATH:
	case RES_NONE:
		snprintf(resource, sizeof(resource), "%.*s", (int)(req->path.len > 200 ? 200 : req->path.len),
			 req->path.p);
		break;
	}
	struct policy_input in = {.action = s->rule.action, .resource = resource, .context = ctx};
	enum policy_gate_result r;
	if (before_body) {
		fill_identity(req, &in);
		struct policy_decision d;
		r = POLICY_GATE_DEFER;
		if (policy_decide_now(&in, &d)) {
			r = d.allow ? POLICY_GATE_PASS : POLICY_GATE_ANSWERED;
			if (!d.allow)
				policy_gate_deny(req, &in, &d, session);
		}
	} else {
		r = ask(req, &in, session, resume, arg, NULL, false);
	}
	json_decref(ctx);
	return r;
}
