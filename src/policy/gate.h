/*
 * gate.h - policy for HTTP requests: which action a route is, asking without blocking the io
 * loop, and what a deny answers.
 *
 * DESIGN: routes whose action needs nothing from the body (session reads and deletes, admin
 * routes, the size of an upload) are asked by the pipeline's policy step (src/http/middleware.c)
 * through policy_gate_route(); handlers whose decision needs the body (the model of an LLM call,
 * the task's name, the message's session) call policy_gate_ask() once they have parsed it.
 * A decision that is known at once (builtin, cached) continues inline; one that needs OPA is
 * asked on a policy thread and the request continues on its io thread when the answer is posted
 * back (http_thread_post_wait). If the client leaves meanwhile, the continuation never runs and
 * its argument is dropped. Everything here runs on the request's io thread.
 * A deny: 403 {"error":{"code":"policy_denied","message":"<reason>: <words>","request_id",
 * "reason":"<reason>"}}, a policy.denied event on the session when there is one, an audit row,
 * and the decision metric (counted by the engine).
 */
#ifndef SOMA_POLICY_GATE_H
#define SOMA_POLICY_GATE_H

#include "http/http.h"
#include "policy/policy.h"

enum policy_gate_result {
	POLICY_GATE_PASS,     /* allowed (or not a policy route): go on */
	POLICY_GATE_DEFER,    /* before the body: cannot tell without OPA; ask again after it */
	POLICY_GATE_ANSWERED, /* denied and answered, or waiting for OPA (resume runs on allow) */
};

/* Runs on the request's io thread with the request allowed; arg is the caller's. */
typedef void (*policy_cont_fn)(struct http_req *req, void *arg);
/* Frees arg when the continuation will not run (deny, client gone). May be NULL. */
typedef void (*policy_drop_fn)(void *arg);

/* The pipeline's policy step for the matched route. before_body: the request's body is not read
 * yet (an upload being authorised before it is spooled): no waiting then, DEFER instead. When
 * OPA must be asked, resume(req, arg) runs later if it allows. */
enum policy_gate_result policy_gate_route(struct http_req *req, bool before_body, policy_cont_fn resume, void *arg);

/* Asks for in (tenant, subject and scopes default to req's identity when NULL). On allow
 * cont(req, arg) runs - before this returns, or later on the io thread; on deny the request is
 * answered as above and drop(arg) runs. session_id (may be NULL) receives the policy.denied event. */
void policy_gate_ask(struct http_req *req, struct policy_input *in, const char *session_id, policy_cont_fn cont,
		     void *arg, policy_drop_fn drop);

/* The consequences of a deny for req (audit, event on session_id if any) and the 403. */
void policy_gate_deny(struct http_req *req, const struct policy_input *in, const struct policy_decision *d,
		      const char *session_id);
/* Only the 403 envelope (for a deny whose audit and event were done on another thread). */
void policy_gate_respond(struct http_req *req, const struct policy_decision *d);

#endif
