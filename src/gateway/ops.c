/*
 * ops.c - operations routes: /v1/health, /metrics, /v1/admin/config, /v1/runtime-config.
 *
 * DESIGN: /v1/health serves the body the registry renders on the main thread every
 * health.interval_ms (a copy under a mutex; no service is called on the io thread).
 * /metrics renders the registry at scrape time. Both are public so that load balancers,
 * Kubernetes probes and Prometheus need no key; everything else needs credentials.
 */
#include <stdlib.h>

#include "core/config.h"
#include "core/config_show.h"
#include "core/metrics.h"
#include "orchestrator/app.h"

static void health(struct http_req *req, void *arg)
{
	(void)arg;
	int status = 503;
	size_t len = 0;
	char *body = registry_health_copy(app.registry, req->arena, &status, &len);
	if (!body) {
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "starting", "the service is starting; retry in a second");
		return;
	}
	http_resp_header(req, "Cache-Control", "no-store");
	http_respond(req, status, "application/json", body, len);
}

static void metrics(struct http_req *req, void *arg)
{
	(void)arg;
	char *text;
	size_t len;
	if (metrics_render(&text, &len) != SOMA_OK) {
		http_respond_error(req, 500, "out_of_memory", "cannot render metrics; the server is out of memory");
		return;
	}
	http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
}

static void admin_config(struct http_req *req, void *arg)
{
	(void)arg;
	http_respond_json(req, 200, json_pack("{s:o, s:s?}", "config", cfg_to_json(), "file", cfg_file_path()));
}

static void runtime_config(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = json_pack(
		"{s:s, s:{s:b, s:s}, s:{s:I, s:I}, s:{s:s}, s:{s:I, s:I, s:s}, s:{s:I, s:i}}", "version", SOMA_VERSION,
		"auth", "required", !app.anonymous || auth_cache_valid_keys() > 0, "tenant", req->ident.tenant,
		"limits", "max_body", (json_int_t)cfg_int(CFG_HTTP_MAX_BODY), "request_timeout_s",
		(json_int_t)cfg_int(CFG_HTTP_REQUEST_TIMEOUT_S), "role", "name",
		app.role == ROLE_ALL	   ? "all"
		: app.role == ROLE_GATEWAY ? "gateway"
					   : "worker",
		"uploads", "max_mb", (json_int_t)cfg_int(CFG_UPLOADS_MAX_MB), "max_files",
		(json_int_t)cfg_int(CFG_UPLOADS_MAX_FILES), "allowed_types", cfg_str(CFG_UPLOADS_ALLOWED_TYPES),
		"stream", "keepalive_s", (json_int_t)cfg_int(CFG_STREAM_KEEPALIVE_S), "retry_ms", 2000);
	http_respond_json(req, 200, body);
}

enum soma_err gateway_ops_routes(struct http_router *r)
{
	enum soma_err err = http_route_add(r, "GET", "/v1/health", health, NULL, HTTP_ROUTE_PUBLIC);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/metrics", metrics, NULL, HTTP_ROUTE_PUBLIC);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/admin/config", admin_config, NULL, HTTP_ROUTE_ADMIN);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/runtime-config", runtime_config, NULL, 0);
	return err;
}
