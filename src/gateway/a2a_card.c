/*
 * a2a_card.c - the A2A agent card: GET /.well-known/agent-card.json and /.well-known/agent.json.
 *
 * DESIGN: one hybrid card that both generations of clients read (reference/interop.md §3.1): the
 * spec 1.0 `supportedInterfaces` (JSON-RPC at <origin>/a2a, protocolVersion "1.0"), which
 * @a2a-js/sdk 1.x reads first, and the spec 0.3 fields `protocolVersion`, `url` and
 * `preferredTransport`, which 0.3 clients read (and 1.x clients with legacyCompat, given the card
 * without supportedInterfaces). The endpoint answers both versions by method name (a2a.c). The
 * origin is a2a.public_url when set (a proxy in front), else http://<Host of the request>. The
 * card is public, like any discovery document: /a2a itself needs the caller's credentials.
 */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "gateway/a2a_int.h"
#include "gateway/gateway.h"

/* A Host header we can put in a URL: host, [v6] or host:port characters only. */
static bool host_ok(struct str h)
{
	if (h.len == 0 || h.len > 255)
		return false;
	for (size_t i = 0; i < h.len; i++) {
		char c = h.p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '-' || c == ':' || c == '[' || c == ']' || c == '_'))
			return false;
	}
	return true;
}

/* The endpoint URL <origin>/a2a into out. */
static void endpoint_url(const struct http_req *req, char *out, size_t cap)
{
	const char *pub = cfg_str(CFG_A2A_PUBLIC_URL);
	if (pub[0]) {
		size_t n = strlen(pub);
		while (n > 0 && pub[n - 1] == '/')
			n--;
		snprintf(out, cap, "%.*s/a2a", (int)n, pub);
		return;
	}
	struct str host = http_req_header(req, "host");
	if (host_ok(host))
		snprintf(out, cap, "http://%.*s/a2a", (int)host.len, host.p);
	else
		snprintf(out, cap, "http://%s/a2a", cfg_str(CFG_HTTP_LISTEN));
}

static void card(struct http_req *req, void *arg)
{
	(void)arg;
	char url[512];
	endpoint_url(req, url, sizeof(url));
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:s, s:s}],"
			      " s:{s:b, s:b, s:b}, s:[s], s:[s],"
			      " s:[{s:s, s:s, s:s, s:[s, s], s:[s], s:[s], s:[s]}]}",
			      "name", cfg_str(CFG_A2A_NAME), "description", cfg_str(CFG_A2A_DESCRIPTION), "version",
			      SOMA_VERSION, "protocolVersion", "0.3.0", "url", url, "preferredTransport", "JSONRPC",
			      "supportedInterfaces", "url", url, "protocolBinding", "JSONRPC", "protocolVersion", "1.0",
			      "capabilities", "streaming", 1, "pushNotifications", 0, "stateTransitionHistory", 0,
			      "defaultInputModes", "text/plain", "defaultOutputModes", "text/plain", "skills", "id",
			      "chat", "name", "Chat", "description",
			      "Converse with the agent: each message gets a reply that uses the conversation so far.",
			      "tags", "chat", "conversation", "examples", "Summarize what we discussed.", "inputModes",
			      "text/plain", "outputModes", "text/plain");
	if (!c) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	json_object_set_new(json_object_get(c, "capabilities"), "extendedAgentCard", json_false());
	http_respond_json(req, 200, c);
}

enum soma_err gateway_a2a_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"GET", "/.well-known/agent-card.json", card, HTTP_ROUTE_PUBLIC},
		{"GET", "/.well-known/agent.json", card, HTTP_ROUTE_PUBLIC},
		{"POST", "/a2a", a2a_post, 0},
	};
	enum soma_err err = gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
	if (err == SOMA_OK) /* refusals by shared code (policy, limits) as JSON-RPC errors */
		err = http_route_set_error_fn(r, "POST", "/a2a", a2a_http_error);
	return err;
}
