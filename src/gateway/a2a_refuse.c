/*
 * a2a_refuse.c - how A2A answers what code shared with the REST API refuses, and an A2A stream's
 * place in limits.streams_per_tenant.
 *
 * DESIGN: a send takes the chat path (policy conversation.send, the token budget) after the
 * pipeline's request-rate step; those answer with our HTTP error envelope (403/429), which an A2A
 * client reads as a bare transport failure. POST /a2a therefore has an error renderer
 * (http_route_set_error_fn): a 403, 429 or 5xx for it is written as a JSON-RPC error instead, HTTP
 * 200 like every other JSON-RPC error, with the id of the request (its body is read again: the
 * rate step runs before the handler) and, for a streaming method, as one SSE event. The code is
 * A2A_POLICY_DENIED (403), A2A_LIMITED (429) or -32603 (5xx), the message our words; error.data
 * keeps our error code, the request id, the policy's reason and Retry-After's seconds: an object
 * for spec 0.3, a list with one google.rpc.ErrorInfo for spec 1.0 (whose error.data is a list of
 * typed details). 400s and 401s stay HTTP: a client that cannot authenticate or frame a request
 * is told at the transport level, as the spec's bindings do.
 * A stream (message/stream, SendStreamingMessage, tasks/resubscribe) takes a place before anything
 * is stored, like GET /v1/sessions/{id}/events?stream=true, and gives it back in the request's
 * on_end: once, whichever way the request ends (answered by an error, the stream's end after the
 * final status, the credential gone, a slow reader cut, the client gone). Io thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/a2a_int.h"
#include "limits/limits.h"

/* The seconds of a Retry-After set on req's response, or -1. */
static long long retry_after_of(const struct http_req *req)
{
	for (size_t i = 0; i < req->nresp_headers; i++) {
		if (strcasecmp(req->resp_headers[i][0], "Retry-After") == 0)
			return strtoll(req->resp_headers[i][1], NULL, 10);
	}
	return -1;
}

/* error.data: our code, request id, reason and retry (v0.3: an object; v1.0: [ErrorInfo]). */
static json_t *data_of(enum a2a_ver v, const struct http_req *req, json_t *error)
{
	const char *code = json_string_value(json_object_get(error, "code"));
	const char *reason = json_string_value(json_object_get(error, "reason"));
	long long retry = retry_after_of(req);
	json_t *d = json_pack("{s:s, s:s}", "code", code ? code : "error", "request_id", req->request_id);
	if (d && reason)
		json_object_set_new(d, "reason", json_string(reason));
	if (d && retry >= 0)
		json_object_set_new(d, "retry_after_s",
				    v == A2A_V03 ? json_integer(retry) : json_sprintf("%lld", retry));
	if (!d || v == A2A_V03)
		return d;
	char upper[64];
	size_t n = 0;
	for (const char *p = code ? code : "error"; *p && n + 1 < sizeof(upper); p++)
		upper[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
	upper[n] = '\0';
	return json_pack("[{s:s, s:s, s:s, s:o}]", "@type", "type.googleapis.com/google.rpc.ErrorInfo", "reason", upper,
			 "domain", "somaagent", "metadata", d);
}

bool a2a_http_error(struct http_req *req, int status, json_t *error)
{
	if (status != 403 && status != 429 && status < 500)
		return false;
	json_t *body = req->body ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
	json_t *id = json_object_get(body, "id");
	if (!json_is_string(id) && !json_is_integer(id) && !json_is_real(id))
		id = NULL;
	enum a2a_ver ver = A2A_V03;
	bool stream = false;
	(void)a2a_method_info(json_string_value(json_object_get(body, "method")), &ver, &stream);
	const char *message = json_string_value(json_object_get(error, "message"));
	int code = status == 403 ? A2A_POLICY_DENIED : status == 429 ? A2A_LIMITED : A2A_INTERNAL;
	json_t *env = a2a_rpc_error(id, code, message ? message : "refused");
	json_t *data = env ? data_of(ver, req, error) : NULL;
	json_decref(body);
	if (!data) {
		json_decref(env);
		return false;
	}
	json_object_set_new(json_object_get(env, "error"), "data", data);
	if (!stream) {
		http_respond_json(req, 200, env);
		return true;
	}
	a2a_sse_begin(req);
	a2a_sse_write(req, env);
	http_stream_end(req);
	return true;
}

static void place_give_back(struct http_req *req)
{
	limits_stream_release(req->ident.tenant);
}

bool a2a_stream_place_take(struct http_req *req)
{
	if (!limits_http_stream(req)) /* answered: too_many_streams, as a JSON-RPC error */
		return false;
	req->on_end = place_give_back;
	return true;
}
