/*
 * ops.c - operations routes: /v1/health, /metrics, /v1/admin/config, /v1/runtime-config.
 *
 * DESIGN: /v1/health serves the body the registry renders on the main thread every
 * health.interval_ms (a copy under a mutex; no service is called on the io thread).
 * /metrics renders the registry at scrape time. Both are public so that load balancers,
 * Kubernetes probes and Prometheus need no key; everything else needs credentials.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/config_show.h"
#include "core/metrics.h"
#include "gateway/gateway.h"
#include "memory/memory.h"
#include "orchestrator/app.h"

/* ---- memory (issue 5): components.memory_outbox in /v1/health, and /v1/metrics/system ---- */
/* ok: nothing waits (or only fresh rows while memory is normal); buffering: writes wait and are
 * being delivered; degraded: memory is down (writes wait) or rows failed (an admin must act). */
static const char *outbox_status(const struct memory_status *m, double oldest_s)
{
	if (m->failed > 0 || (m->pending > 0 && m->state == MEMORY_DOWN))
		return "degraded";
	if (m->pending == 0 || (m->state == MEMORY_NORMAL && oldest_s < 10))
		return "ok";
	return "buffering";
}

/* The cached health body with components.memory_outbox added (in the request's arena). */
static char *with_components(struct http_req *req, char *body, size_t *len)
{
	struct memory_status m;
	memory_snapshot(&m);
	double oldest_s = m.oldest_ms ? (double)(clock_wall_ms() - m.oldest_ms) / 1000.0 : 0.0;
	if (*len < 2 || body[*len - 1] != '}')
		return body;
	char *out = arena_printf(req->arena,
				 "%.*s,\"components\":{\"memory_outbox\":{\"status\":\"%s\",\"pending\":%lld,"
				 "\"failed\":%lld,\"oldest_age_s\":%.3f,\"somabrain_state\":\"%s\"}}}",
				 (int)(*len - 1), body, outbox_status(&m, oldest_s), (long long)m.pending,
				 (long long)m.failed, oldest_s, memory_state_name(m.state));
	if (!out)
		return body;
	*len = strlen(out);
	return out;
}

/* CPU percent of this process over the interval since the previous call (at least 1 s apart). */
static double cpu_percent(void)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static double last_cpu, last_wall, value;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
		     ru.ru_stime.tv_usec / 1e6;
	double wall = (double)clock_mono_ns() / 1e9;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_mutex_lock(&lock);
	if (wall - last_wall >= 1.0) {
		if (last_wall > 0)
			value = 100.0 * (cpu - last_cpu) / (wall - last_wall) / (double)(cores > 0 ? cores : 1);
		last_cpu = cpu, last_wall = wall;
	}
	double v = value;
	pthread_mutex_unlock(&lock);
	return v;
}

static void metrics_system(struct http_req *req, void *arg)
{
	(void)arg;
	struct memory_status m;
	memory_snapshot(&m);
	struct sysinfo si;
	struct statvfs sv;
	double mem = sysinfo(&si) == 0 && si.totalram
			     ? 100.0 * (1.0 - (double)(si.freeram + si.bufferram) / (double)si.totalram)
			     : 0.0;
	double disk = statvfs(cfg_str(CFG_DATA_DIR), &sv) == 0 && sv.f_blocks
			      ? 100.0 * (1.0 - (double)sv.f_bavail / (double)sv.f_blocks)
			      : 0.0;
	long rss_pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%*d %ld", &rss_pages) != 1)
			rss_pages = 0;
		fclose(f);
	}
	/* the original's rule: a backlog is buffering; else a memory state other than normal is
	 * degraded; unknown until SomaBrain's /health has answered once */
	const char *sb = m.pending > 0		    ? "buffering"
			 : !m.probed		    ? "unknown"
			 : m.state != MEMORY_NORMAL ? "degraded"
						    : "healthy";
	char ts[40];
	http_respond_json(
		req, 200,
		json_pack("{s:s, s:s, s:{s:f}, s:{s:f, s:I}, s:{s:f}, s:{s:{s:s}, s:{s:s, s:I, s:I, s:s, s:s}}}",
			  "status", registry_overall(app.registry), "timestamp",
			  clock_rfc3339(clock_wall_ms(), ts, sizeof(ts)), "cpu", "percent", cpu_percent(), "memory",
			  "percent", mem, "rss_bytes", (json_int_t)rss_pages * (json_int_t)sysconf(_SC_PAGESIZE),
			  "disk", "percent", disk, "components", "gateway", "status", "healthy", "somabrain", "status",
			  sb, "backlog", (json_int_t)m.pending, "failed", (json_int_t)m.failed, "state",
			  memory_state_name(m.state), "reason", m.reason));
}

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
	body = with_components(req, body, &len); /* memory (issue 5) */
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
		"auth", "required", !app.anonymous || auth_cache_keys_exist(), "tenant", req->ident.tenant, "limits",
		"max_body", (json_int_t)cfg_int(CFG_HTTP_MAX_BODY), "request_timeout_s",
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
	gw_ops_metrics_register();
	enum soma_err err = http_route_add(r, "GET", "/v1/health", health, NULL, HTTP_ROUTE_PUBLIC);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/metrics", metrics, NULL, HTTP_ROUTE_PUBLIC);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/admin/config", admin_config, NULL, HTTP_ROUTE_ADMIN);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/runtime-config", runtime_config, NULL, 0);
	if (err == SOMA_OK) /* memory (issue 5) */
		err = http_route_add(r, "GET", "/v1/metrics/system", metrics_system, NULL, 0);
	return err;
}
