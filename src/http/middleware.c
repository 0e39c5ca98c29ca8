/*
 * middleware.c - the request pipeline: request id -> routing -> auth -> limits -> policy ->
 * handler, and the completion hook (access log, metrics) that runs once per response.
 *
 * DESIGN: middleware are small functions run in order; each either passes the request on
 * (HTTP_MW_NEXT) or answers it (HTTP_MW_DONE). They run on the io thread and never block:
 * auth reads the in-memory key cache. Route labels in metrics are route patterns, never raw
 * paths, so a scan of random URLs cannot explode the series count.
 */
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "http/http.h"
#include "http/local_request.h"
#include "limits/limits.h"
#include "policy/gate.h"

#define MAX_MIDDLEWARE 8

struct middleware {
	http_middleware_fn fn; /* the step */
	void *arg;	       /* its state */
};

struct http_pipeline {
	struct middleware steps[MAX_MIDDLEWARE]; /* run in order */
	size_t nsteps;				 /* used entries */
	struct http_router *router;		 /* borrowed */
	struct http_auth_opts auth;		 /* strings borrowed from the config */
};

static struct metric_family *requests_total, *request_duration;
static bool access_log_enabled = true;

void http_metrics_register(void)
{
	static const char *const labels[] = {"route", "method", "status", NULL};
	static const char *const dlabels[] = {"route", "method", NULL};
	static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					 0.1,	 0.25,	0.5,	1,     2.5,  5,	    10};
	requests_total = metrics_counter("soma_http_requests_total",
					 "HTTP requests answered, by route, method and status.", labels);
	request_duration = metrics_histogram("soma_http_request_duration_seconds",
					     "Time from the first byte of a request to its response being queued.",
					     dlabels, buckets, sizeof(buckets) / sizeof(buckets[0]));
}

/* The SERVER span of a request, child of a valid traceparent (else a new trace); named when the
 * route is known (http_pipeline_complete). Started from the request's first byte. */
static void server_span_start(struct http_req *req)
{
	struct trace_span *s = arena_alloc(req->arena, sizeof(*s));
	struct str tp = http_req_header(req, "traceparent");
	struct trace_ctx parent;
	if (!s || !trace_parse(tp.p, tp.len, &parent))
		parent.valid = false;
	if (!s || !trace_span_start(s, &parent, "HTTP", TRACE_KIND_SERVER))
		return;
	uint64_t now = clock_mono_ns();
	if (req->start_ns && req->start_ns <= now && s->start_ns > now - req->start_ns)
		s->start_ns -= now - req->start_ns;
	req->span = s;
}

void http_request_id_assign(struct http_req *req)
{
	if (req->request_id[0])
		return; /* assigned already (a request authorised before its body was read) */
	if (trace_enabled() && req->arena)
		server_span_start(req);
	struct str given = http_req_header(req, "x-request-id");
	if (given.p && ids_request_id_valid(given.p, given.len)) {
		memcpy(req->request_id, given.p, given.len);
		req->request_id[given.len] = '\0';
	} else {
		ids_uuid4(req->request_id);
	}
}

static enum http_mw_result mw_request_id(struct http_req *req, void *arg)
{
	(void)arg;
	http_request_id_assign(req);
	return HTTP_MW_NEXT;
}

/* Once-only steps a request passed already: limits and policy (an upload is authorised before its
 * body is spooled), the route and credentials (checked from the head of a request with a body). */
enum { PASSED_LIMITS = 1u << 0, PASSED_POLICY = 1u << 1, PASSED_ROUTE_AUTH = 1u << 2 };

static enum http_mw_result mw_route(struct http_req *req, void *arg)
{
	if (req->mw_passed & PASSED_ROUTE_AUTH)
		return HTTP_MW_NEXT; /* matched from the head (http_pipeline_authenticate) */
	struct http_pipeline *p = arg;
	char allow[128];
	switch (http_router_match(p->router, req, allow, sizeof(allow))) {
	case HTTP_MATCH_OK:
		return HTTP_MW_NEXT;
	case HTTP_MATCH_BAD_METHOD:
		http_resp_header(req, "Allow", allow);
		http_respond_error(req, 405, "method_not_allowed", "%.*s is not allowed here; allowed: %s",
				   (int)req->method.len, req->method.p, allow);
		return HTTP_MW_DONE;
	case HTTP_MATCH_NOT_FOUND:
		break;
	}
	http_respond_error(req, 404, "not_found", "no route for %.*s %.*s; see docs/api.md for the API",
			   (int)req->method.len, req->method.p, (int)(req->path.len > 200 ? 200 : req->path.len),
			   req->path.p);
	return HTTP_MW_DONE;
}

static void set_identity(struct http_req *req, const char *tenant, const char *subject, const char *scopes)
{
	snprintf(req->ident.tenant, sizeof(req->ident.tenant), "%s", tenant);
	snprintf(req->ident.subject, sizeof(req->ident.subject), "%s", subject);
	snprintf(req->ident.scopes, sizeof(req->ident.scopes), "%s", scopes);
	req->ident.key_id[0] = '\0';
	req->ident.expires_ms = 0;
	req->authenticated = true;
}

static enum http_mw_result unauthorized(struct http_req *req, const char *message)
{
	http_resp_header(req, "WWW-Authenticate", "Bearer");
	http_respond_error(req, 401, "unauthorized", "%s", message);
	return HTTP_MW_DONE;
}

/* 401 for a JWT that was refused (RFC 6750: error="invalid_token"; OAuth clients read it). */
static enum http_mw_result invalid_token(struct http_req *req, const char *message)
{
	http_resp_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
	http_respond_error(req, 401, "unauthorized", "%s", message);
	return HTTP_MW_DONE;
}

/* A JWT (two dots) or an API key (sa01_<id>_<secret>, no dots) -> req->ident. Both checks read
 * memory only: the key cache, the JWT keys and this thread's cache of verified tokens. */
static enum http_mw_result authenticate_bearer(struct http_req *req, struct str token)
{
	if (identity_token_is_jwt(token.p, token.len)) {
		enum jwt_verdict v = jwt_auth_verify(token.p, token.len, &req->ident);
		if (v != JWT_OK)
			return invalid_token(req, jwt_verdict_message(v));
		req->authenticated = true;
		return HTTP_MW_NEXT;
	}
	switch (auth_cache_lookup(token.p, token.len, &req->ident)) {
	case AUTH_OK:
		req->authenticated = true;
		return HTTP_MW_NEXT;
	case AUTH_REVOKED:
		return unauthorized(req, "this API key has been revoked; ask an admin for a new one");
	case AUTH_INVALID:
		break;
	}
	return unauthorized(req, "invalid API key; check the token or create one with `somaagent keys create`");
}

/* The caller's credentials for a route with these flags -> req->ident, or the 401/403 answer. */
static enum http_mw_result check_credentials(struct http_req *req, struct http_pipeline *p, unsigned flags)
{
	if (flags & HTTP_ROUTE_PUBLIC)
		return HTTP_MW_NEXT;
	struct str h = http_req_header(req, "authorization");
	if (!h.p) {
		if (p->auth.anonymous_allowed && !auth_cache_keys_exist()) {
			/* loopback, no keys: the single-user default (the start-up log says so), for
			 * requests made on this machine only (local_request.h) */
			const char *why = http_req_not_local(req);
			if (why) {
				char msg[256];
				snprintf(msg, sizeof(msg),
					 "anonymous access is for requests made on this machine, and this one is not: "
					 "%s; send Authorization: Bearer <api key> (create one with `somaagent keys "
					 "create --tenant NAME`)",
					 why);
				return unauthorized(req, msg);
			}
			set_identity(req, p->auth.default_tenant, "anonymous", "admin");
			return HTTP_MW_NEXT;
		}
		return unauthorized(req, "missing credentials; send Authorization: Bearer <api key or JWT> "
					 "(create a key with `somaagent keys create --tenant NAME`)");
	}
	if (h.len < 8 || strncasecmp(h.p, "Bearer ", 7) != 0)
		return unauthorized(req, "the Authorization header must be: Bearer <api key or JWT>");
	struct str token = {h.p + 7, h.len - 7};
	size_t admin_len = strlen(p->auth.admin_token);
	if (admin_len && token.len == admin_len && CRYPTO_memcmp(token.p, p->auth.admin_token, admin_len) == 0) {
		set_identity(req, p->auth.default_tenant, "admin_token", "admin");
	} else if (authenticate_bearer(req, token) == HTTP_MW_DONE) {
		return HTTP_MW_DONE;
	}
	if ((flags & HTTP_ROUTE_ADMIN) && !identity_has_scope(&req->ident, "admin")) {
		http_respond_error(req, 403, "forbidden", "this endpoint needs credentials with scope admin");
		return HTTP_MW_DONE;
	}
	return HTTP_MW_NEXT;
}

static enum http_mw_result mw_auth(struct http_req *req, void *arg)
{
	if (req->mw_passed & PASSED_ROUTE_AUTH)
		return HTTP_MW_NEXT; /* checked from the head, req->ident set then */
	return check_credentials(req, arg, http_route_flags(req->route));
}

/* ---- limits and policy (issue 6) ------------------------------------------------------------
 * Both run once per request: an upload is authorised before its body is spooled
 * (http_pipeline_authorize) and the pipeline runs again once the body is there; req->mw_passed
 * remembers what was already passed. The policy step can wait for OPA without blocking: it then
 * answers DONE and the pipeline resumes after it on the io thread if the decision allows. */

static void run_steps(struct http_pipeline *p, struct http_req *req, size_t first);

/* The body is not read yet: the request is being authorised ahead of a spooled upload. */
static bool before_body(const struct http_req *req)
{
	return req->content_length > 0 && !req->body && req->body_fd < 0;
}

static enum http_mw_result mw_limits(struct http_req *req, void *arg)
{
	(void)arg;
	if (!req->authenticated || (req->mw_passed & PASSED_LIMITS) ||
	    (http_route_flags(req->route) & HTTP_ROUTE_PUBLIC))
		return HTTP_MW_NEXT;
	req->mw_passed |= PASSED_LIMITS;
	return limits_http_request(req) ? HTTP_MW_NEXT : HTTP_MW_DONE;
}

static enum http_mw_result mw_policy(struct http_req *req, void *arg);

/* OPA allowed a request that mw_policy left waiting: the steps after it, then the handler. */
static void policy_resume(struct http_req *req, void *arg)
{
	struct http_pipeline *p = arg;
	size_t i = 0;
	while (i < p->nsteps && p->steps[i].fn != mw_policy)
		i++;
	req->mw_passed |= PASSED_POLICY;
	run_steps(p, req, i + 1);
}

static enum http_mw_result mw_policy(struct http_req *req, void *arg)
{
	if (req->mw_passed & PASSED_POLICY)
		return HTTP_MW_NEXT;
	bool early = before_body(req);
	switch (policy_gate_route(req, early, policy_resume, arg)) {
	case POLICY_GATE_PASS:
		if (early)
			req->mw_passed |= PASSED_POLICY;
		return HTTP_MW_NEXT;
	case POLICY_GATE_DEFER: /* asked again once the body is read */
		return HTTP_MW_NEXT;
	case POLICY_GATE_ANSWERED:
		break;
	}
	return HTTP_MW_DONE;
}

struct http_pipeline *http_pipeline_new(struct http_router *router, const struct http_auth_opts *auth)
{
	struct http_pipeline *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->router = router;
	p->auth = *auth;
	if (!p->auth.admin_token)
		p->auth.admin_token = "";
	p->steps[p->nsteps++] = (struct middleware){mw_request_id, p};
	p->steps[p->nsteps++] = (struct middleware){mw_route, p};
	p->steps[p->nsteps++] = (struct middleware){mw_auth, p};
	p->steps[p->nsteps++] = (struct middleware){mw_limits, p};
	p->steps[p->nsteps++] = (struct middleware){mw_policy, p};
	return p;
}

void http_pipeline_free(struct http_pipeline *p)
{
	free(p);
}

const struct http_route *http_pipeline_peek_route(struct http_pipeline *p, struct http_req *req)
{
	char allow[128];
	enum http_match m = http_router_match(p->router, req, allow, sizeof(allow));
	const struct http_route *rt = m == HTTP_MATCH_OK ? req->route : NULL;
	req->route = NULL;
	return rt;
}

bool http_pipeline_authorize(struct http_pipeline *p, struct http_req *req)
{
	for (size_t i = 0; i < p->nsteps; i++) {
		if (p->steps[i].fn(req, p->steps[i].arg) == HTTP_MW_DONE)
			return false;
	}
	req->route = NULL; /* matched again when the pipeline runs */
	return true;
}

bool http_pipeline_authenticate(struct http_pipeline *p, struct http_req *req)
{
	http_request_id_assign(req);
	char allow[128];
	/* an unknown path or method is checked like a private route: answering 404/405 here would
	 * close connections that are fine today (and tested), and passing it unauthenticated would
	 * let anyone park a body on any unknown path */
	bool matched = http_router_match(p->router, req, allow, sizeof(allow)) == HTTP_MATCH_OK;
	unsigned flags = matched ? http_route_flags(req->route) : 0;
	if (check_credentials(req, p, flags) != HTTP_MW_NEXT)
		return false;
	/* a matched route and its credentials hold for the pipeline that runs once the body is there
	 * (not matched and checked again: ~3k instructions a request); an unknown route is matched
	 * again there, to answer its 404/405 */
	if (matched)
		req->mw_passed |= PASSED_ROUTE_AUTH;
	else
		req->route = NULL;
	return true;
}

static void run_steps(struct http_pipeline *p, struct http_req *req, size_t first)
{
	for (size_t i = first; i < p->nsteps; i++) {
		if (p->steps[i].fn(req, p->steps[i].arg) == HTTP_MW_DONE)
			return;
	}
	http_route_invoke(req->route, req);
}

void http_pipeline_run(struct http_pipeline *p, struct http_req *req)
{
	run_steps(p, req, 0);
}

void http_access_log_enable(bool on)
{
	access_log_enabled = on;
}

/* The series of one (route, method, status), cached per io thread so that the request path takes
 * no lock once a combination has been seen. route and method are stable pointers (a route's
 * pattern, a method label literal); the metrics generation invalidates the cache on reset. */
struct series_pair {
	const char *route, *method;	/* key (pointer identity) */
	int status;			/* key */
	unsigned gen;			/* metrics generation the pointers belong to */
	struct metric_series *count;	/* soma_http_requests_total */
	struct metric_series *duration; /* soma_http_request_duration_seconds */
};

#define SERIES_CACHE 64

static __thread struct series_pair series_cache[SERIES_CACHE];

static struct series_pair *series_for(const char *route, const char *method, int status, const char *status_text)
{
	size_t slot =
		(((uintptr_t)route >> 4) ^ ((uintptr_t)method >> 3) ^ (uintptr_t)status * 2654435761u) % SERIES_CACHE;
	struct series_pair *sp = &series_cache[slot];
	unsigned gen = metrics_generation();
	if (sp->route == route && sp->method == method && sp->status == status && sp->gen == gen && sp->count)
		return sp;
	const char *cv[] = {route, method, status_text}, *dv[] = {route, method};
	*sp = (struct series_pair){
		route, method, status, gen, metric_series(requests_total, cv), metric_series(request_duration, dv)};
	return sp;
}

/* A bounded label set: the standard methods, else "other" (a garbage method is not a label). */
static const char *method_label(struct str m)
{
	static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (str_eq_cstr(m, known[i]))
			return known[i];
	}
	return "other";
}

/* Names, marks and ends the SERVER span; writes its trace id (hex) into trace_id. */
static void server_span_end(struct http_req *req, const char *method, char trace_id[TRACE_ID_HEX + 1])
{
	struct trace_span *s = req->span;
	const char *m = strcmp(method, "other") == 0 ? "HTTP" : method;
	const char *route = req->route ? http_route_pattern(req->route) : NULL;
	snprintf(s->name, sizeof(s->name), "%s%s%s", m, route ? " " : "", route ? route : "");
	trace_span_attr_str(s, "http.request.method", method == m ? method : "_OTHER");
	if (route)
		trace_span_attr_str(s, "http.route", route);
	trace_span_attr_int(s, "http.response.status_code", req->status);
	if (req->status >= 500)
		s->status = TRACE_STATUS_ERROR;
	trace_hex(s->trace_id, 16, trace_id);
	trace_span_end(s);
}

void http_pipeline_complete(struct http_req *req)
{
	double secs = (double)(clock_mono_ns() - req->start_ns) / 1e9;
	char status[8];
	const char *method = method_label(req->method);
	snprintf(status, sizeof(status), "%d", req->status);
	const char *route = req->route ? http_route_pattern(req->route) : "unmatched";
	char trace_id[TRACE_ID_HEX + 1] = "";
	if (req->span && req->span->on)
		server_span_end(req, method, trace_id);
	if (requests_total) {
		struct series_pair *sp = series_for(route, method, req->status, status);
		metric_add(sp->count, 1);
		metric_observe(sp->duration, secs);
	}
	if (!access_log_enabled || !log_enabled(LOG_INFO))
		return;
	char path[256], raw_method[16];
	snprintf(raw_method, sizeof(raw_method), "%.*s", (int)(req->method.len < 15 ? req->method.len : 15),
		 req->method.p ? req->method.p : "");
	snprintf(path, sizeof(path), "%.*s", (int)(req->path.len < 255 ? req->path.len : 255), req->path.p);
	struct log_field f[] = {
		LOG_STR("request_id", req->request_id),
		LOG_STR("trace_id", trace_id[0] ? trace_id : NULL),
		LOG_STR("method", raw_method),
		LOG_STR("path", path),
		LOG_STR("route", route),
		LOG_INT("status", req->status),
		LOG_DBL("duration_ms", secs * 1000.0),
		LOG_INT("bytes", (long long)req->resp_body_len),
		LOG_STR("tenant", req->authenticated ? req->ident.tenant : NULL),
		LOG_STR("subject", req->authenticated ? req->ident.subject : NULL),
	};
	log_emit(LOG_INFO, "http", f, sizeof(f) / sizeof(f[0]), "%s %s %d", raw_method, path, req->status);
}
