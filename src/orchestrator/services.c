/*
 * services.c - the services of the foundation and their lifecycles:
 *   store   (10, critical)  (services_store.c) opens the database, applies migrations, starts the
 *                           group-commit writer and readers; committed events go on the bus
 *   bus     (15, critical)  live events and the resume log of ephemeral events (not critical with
 *                           bus.driver = redis: degraded to this node's events while Redis is down);
 *                           cancel notices between nodes (a node with workers applies others');
 *                           degraded on a --role gateway/worker node with bus.driver = local
 *   auth    (20, critical)  loads the API-key cache (refreshed by the main loop) and the JWT keys
 *                           (PEM file; JWKS fetched by its own thread)
 *   disk    (30)            free space under data.dir; degraded below data.min_free_mb
 *   policy  (35)            the policy engine (builtin rules or OPA) and the per-tenant limits;
 *                           down when OPA does not answer (decisions are then denied)
 *   memory  (40)            long-term memory: the outbox relay thread and the SomaBrain state
 *                           (down, still counting the outbox, on somabrain without a URL)
 *                           (degraded while SomaBrain is degraded or down; never critical)
 *   llm     (50)            the language model settings; unconfigured without a key
 *   celery  (55)            Celery's view of the node on queue.driver=redis (src/sched): events on
 *                           celeryev, the pidbox, revoke broadcasts, the cluster's workers
 *   workers (60, critical)  task worker pools (role worker); stop = finish or requeue
 *   beat    (70, critical)  periodic tasks of beat.schedule_file, one leader across nodes
 *   retention (80)          the retention sweeper (retention.c), on gateway nodes, only when a
 *                           retention.* setting is not 0
 *   http    (90, critical)  listeners, io threads, routes; stop = graceful drain
 * Later subsystems add theirs here with their order and roles.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "audit/audit.h"
#include "bus/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "core/url_shown.h"
#include "gateway/gateway.h"
#include "identity/identity.h"
#include "llm/llm.h"
#include "memory/memory.h"
#include "orchestrator/app.h"
#include "orchestrator/retention.h"
#include "orchestrator/services_int.h"
#include "policy/service.h"
#include "queue/queue.h"
#include "sched/sched.h"
#include "tasks/tasks.h"

static enum svc_status llm_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	struct llm_config c;
	llm_config_from_settings(&c);
	if (!c.api_key[0]) {
		snprintf(detail, cap,
			 "no API key: set llm.api_key, or GROQ_API_KEY / OPENAI_API_KEY for the %s provider",
			 cfg_str(CFG_LLM_PROVIDER));
		return SVC_UNCONFIGURED;
	}
	if (!c.model[0]) {
		snprintf(detail, cap, "no model: set llm.model (provider %s has no default)",
			 cfg_str(CFG_LLM_PROVIDER));
		return SVC_UNCONFIGURED;
	}
	char where[sizeof(c.base_url)];
	url_shown(c.base_url, where, sizeof(where));
	snprintf(detail, cap, "%s at %s", c.model, where);
	return SVC_OK;
}

/* ---- memory (src/memory) ---- */
/* memory.driver=somabrain without a URL starts too (down, reason unconfigured): its relay keeps
 * publishing the outbox's counts and the state, so health and metrics show the writes waiting. */
static enum soma_err memory_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	enum soma_err err = memory_init(why, cap);
	bool unconfigured = err == SOMA_ERR_CONFIG;
	if (err != SOMA_OK && !unconfigured)
		return err;
	if (unconfigured)
		log_warn("memory", "%s; writes wait in the outbox", why);
	memory_metrics_register();
	return memory_relay_start(app.store, why, cap);
}

static void memory_stop(void *ctx)
{
	(void)ctx;
	memory_relay_stop();
}

static enum svc_status memory_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	struct memory_status s;
	memory_snapshot(&s);
	if (s.state == MEMORY_DOWN && strcmp(s.reason, "unconfigured") == 0) {
		snprintf(detail, cap,
			 "memory.driver is somabrain but memory.somabrain_url is empty; set it or use "
			 "memory.driver=builtin; outbox %lld pending",
			 (long long)s.pending);
		return SVC_DOWN;
	}
	snprintf(detail, cap, "%s %s (%s); outbox %lld pending, %lld failed", s.driver, memory_state_name(s.state),
		 s.reason, (long long)s.pending, (long long)s.failed);
	return s.state == MEMORY_NORMAL && s.failed == 0 ? SVC_OK : SVC_DEGRADED;
}

static enum soma_err workers_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	struct queue_def queues[16];
	int nqueues = queue_defs_from_config(queues, 16);
	enum soma_err err = tasks_register_all();
	if (err == SOMA_OK)
		err = queue_start(app.store, queues, nqueues, (int)cfg_int(CFG_QUEUE_VISIBILITY_TIMEOUT_S),
				  (int)cfg_int(CFG_QUEUE_RETRY_BACKOFF_MS));
	if (err != SOMA_OK)
		snprintf(why, cap, "cannot start the worker threads");
	return err;
}

static void workers_stop(void *ctx)
{
	(void)ctx;
	queue_stop(app_grace_left_ms()); /* what the HTTP drain left of the grace */
}

static enum svc_status workers_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	snprintf(detail, cap, "%d task(s) running", queue_running());
	return SVC_OK;
}

/* redis queue: the outbox relay and the task API's reads (queue.driver = redis only) */
static enum soma_err queue_svc_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	if (!queue_driver_is_redis())
		return SOMA_OK;
	enum soma_err err = queue_relay_start(app.store);
	if (err == SOMA_OK)
		err = queue_results_start();
	if (err != SOMA_OK)
		snprintf(why, cap, "cannot start the redis queue relay; check redis.url");
	return err;
}

static void queue_svc_stop(void *ctx)
{
	(void)ctx;
	queue_results_stop();
	queue_relay_stop();
	queue_broker_close();
}

/* redis: down while the broker does not answer (tasks are taken but none runs), as the store */
static enum svc_status queue_svc_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	if (!queue_driver_is_redis()) {
		snprintf(detail, cap, "local (in the store)");
		return SVC_OK;
	}
	return queue_broker_status(detail, cap) ? SVC_OK : SVC_DOWN;
}

/* ---- celery and beat (src/sched) ---- */
static enum soma_err celery_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	return sched_control_start((app.role & ROLE_WORKER) != 0, why, cap);
}

static void celery_stop(void *ctx)
{
	(void)ctx;
	sched_control_stop();
}

static enum svc_status celery_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	if (!sched_control_running()) {
		snprintf(detail, cap, "queue.driver is local: no Celery events or remote control");
		return SVC_UNCONFIGURED;
	}
	return sched_control_describe(detail, cap) ? SVC_OK : SVC_DEGRADED;
}

static enum soma_err beat_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	return sched_beat_start(app.store, (app.role & ROLE_WORKER) != 0, why, cap);
}

static void beat_stop(void *ctx)
{
	(void)ctx;
	sched_beat_stop();
}

static enum svc_status beat_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	if (!sched_beat_describe(detail, cap)) {
		snprintf(detail, cap, "no schedules (set beat.schedule_file)");
		return SVC_UNCONFIGURED;
	}
	return SVC_OK;
}

static enum soma_err auth_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	enum soma_err err = auth_cache_init(app.store);
	if (err != SOMA_OK) {
		snprintf(why, cap, "cannot read API keys from the store");
		return err;
	}
	struct jwt_config jwt = {.secret = cfg_str(CFG_AUTH_JWT_SECRET),
				 .public_key_path = cfg_str(CFG_AUTH_JWT_PUBLIC_KEY),
				 .jwks_url = cfg_str(CFG_AUTH_JWT_JWKS_URL),
				 .jwks_refresh_s = (int)cfg_int(CFG_AUTH_JWT_JWKS_REFRESH_S),
				 .jwks_wait_ms = 5000,
				 .issuer = cfg_str(CFG_AUTH_JWT_ISSUER),
				 .audience = cfg_str(CFG_AUTH_JWT_AUDIENCE),
				 .leeway_s = (int)cfg_int(CFG_AUTH_JWT_LEEWAY_S),
				 .tenant_claims = cfg_str(CFG_AUTH_JWT_TENANT_CLAIMS)};
	if ((err = jwt_auth_init(&jwt, why, cap)) != SOMA_OK)
		auth_cache_deinit();
	return err;
}

static void auth_stop(void *ctx)
{
	(void)ctx;
	jwt_auth_deinit();
	auth_cache_deinit();
}

static enum svc_status auth_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	if (auth_cache_refresh() != SOMA_OK) {
		snprintf(detail, cap, "cannot refresh API keys; serving the last known keys");
		return SVC_DEGRADED;
	}
	size_t keys = auth_cache_valid_keys();
	char jwt[400];
	bool jwt_ok = jwt_auth_describe(jwt, sizeof(jwt));
	if (app.anonymous && !auth_cache_keys_exist())
		snprintf(detail, cap, "no API keys: loopback requests run as tenant %s",
			 cfg_str(CFG_AUTH_DEFAULT_TENANT));
	else
		snprintf(detail, cap, "%zu API key(s); %s", keys, jwt);
	return jwt_ok ? SVC_OK : SVC_DEGRADED;
}

static enum svc_status disk_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	struct statvfs sv;
	if (statvfs(cfg_str(CFG_DATA_DIR), &sv) != 0) {
		snprintf(detail, cap, "cannot stat %s: %s", cfg_str(CFG_DATA_DIR), strerror(errno));
		return SVC_DEGRADED;
	}
	unsigned long long free_mb = (unsigned long long)sv.f_bavail * sv.f_frsize / (1024 * 1024);
	snprintf(detail, cap, "%llu MB free under %s", free_mb, cfg_str(CFG_DATA_DIR));
	if (free_mb < (unsigned long long)cfg_int(CFG_DATA_MIN_FREE_MB)) {
		snprintf(detail, cap, "only %llu MB free under %s (data.min_free_mb = %lld); free space", free_mb,
			 cfg_str(CFG_DATA_DIR), cfg_int(CFG_DATA_MIN_FREE_MB));
		return SVC_DEGRADED;
	}
	return SVC_OK;
}

static enum soma_err http_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	struct http_server_opts o = {0};
	if (!cfg_parse_listen(cfg_str(CFG_HTTP_LISTEN), o.host, sizeof(o.host), &o.port))
		return SOMA_ERR_CONFIG;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	o.io_threads = cfg_int(CFG_HTTP_IO_THREADS) ? (int)cfg_int(CFG_HTTP_IO_THREADS) : (int)(cores > 0 ? cores : 1);
	o.max_body = (size_t)cfg_int(CFG_HTTP_MAX_BODY);
	o.body_memory = (size_t)cfg_int(CFG_HTTP_BODY_MEMORY_MB) * 1024 * 1024;
	o.max_header = (size_t)cfg_int(CFG_HTTP_MAX_HEADER);
	o.request_timeout_s = (int)cfg_int(CFG_HTTP_REQUEST_TIMEOUT_S);
	o.idle_timeout_s = (int)cfg_int(CFG_HTTP_IDLE_TIMEOUT_S);
	o.max_connections = (long)cfg_int(CFG_HTTP_MAX_CONNECTIONS);
	snprintf(o.tmp_dir, sizeof(o.tmp_dir), "%s/tmp", cfg_str(CFG_DATA_DIR));
	if (mkdir(o.tmp_dir, 0700) != 0 && errno != EEXIST) {
		snprintf(why, cap, "cannot create %s (%s); check data.dir", o.tmp_dir, strerror(errno));
		return SOMA_ERR_IO;
	}
	enum soma_err err = SOMA_ERR_NOMEM;
	struct http_auth_opts auth = {.anonymous_allowed = app.anonymous,
				      .default_tenant = cfg_str(CFG_AUTH_DEFAULT_TENANT),
				      .admin_token = cfg_str(CFG_AUTH_ADMIN_TOKEN)};
	http_metrics_register();
	http_access_log_enable(cfg_bool(CFG_LOG_ACCESS));
	app.router = http_router_new();
	if (!app.router || (err = gateway_ops_routes(app.router)) != SOMA_OK)
		goto fail;
	if ((app.role & ROLE_GATEWAY) &&
	    ((err = gateway_chat_routes(app.router)) != SOMA_OK ||
	     (err = gateway_session_routes(app.router)) != SOMA_OK ||
	     (err = gateway_a2a_routes(app.router)) != SOMA_OK || (err = gateway_task_routes(app.router)) != SOMA_OK ||
	     (err = gateway_control_routes(app.router)) != SOMA_OK ||
	     (err = gateway_admin_routes(app.router)) != SOMA_OK ||
	     (err = gateway_audit_routes(app.router)) != SOMA_OK || (err = gateway_llm_routes(app.router)) != SOMA_OK ||
	     (err = gateway_llm_start((int)cfg_int(CFG_LLM_PROXY_CONCURRENCY))) != SOMA_OK ||
	     (err = gateway_upload_routes(app.router)) != SOMA_OK || (err = gateway_upload_start(2)) != SOMA_OK ||
	     (err = gateway_memory_routes(app.router)) != SOMA_OK ||
	     (err = gateway_tools_routes(app.router)) != SOMA_OK || (err = gateway_web_routes(app.router)) != SOMA_OK))
		goto fail;
	err = SOMA_ERR_NOMEM;
	if (!(app.pipeline = http_pipeline_new(app.router, &auth)))
		goto fail;
	if ((err = http_server_new(&o, app.pipeline, &app.server, why, cap)) != SOMA_OK)
		goto fail;
	if ((err = http_server_start(app.server)) != SOMA_OK)
		goto fail;
	log_info("http", "listening on http://%s:%d with %d io thread(s)", o.host, o.port, o.io_threads);
	return SOMA_OK;
fail:
	http_server_free(app.server);
	gateway_llm_stop();
	gateway_upload_stop();
	http_pipeline_free(app.pipeline);
	http_router_free(app.router);
	app.server = NULL;
	app.pipeline = NULL;
	app.router = NULL;
	return err;
}

static void http_stop(void *ctx)
{
	(void)ctx;
	size_t left = http_server_drain(app.server, app_grace_left_ms());
	if (left)
		log_warn("http", "%zu connection(s) still busy after shutdown.grace_s; closing them", left);
	/* stop the io threads (their requests are aborted), then the pools (their jobs see the aborts
	 * and their posts are refused); the server's memory is freed in services_free(), after the
	 * store, whose late completions may still try to post */
	http_server_stop(app.server);
	gateway_llm_stop();
	gateway_upload_stop();
	gateway_memory_stop(); /* its recall pool (also when the memory service did not start) */
}

void services_free(void)
{
	http_server_free(app.server);
	http_pipeline_free(app.pipeline);
	http_router_free(app.router);
	app.server = NULL;
	app.pipeline = NULL;
	app.router = NULL;
}

static enum svc_status http_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	snprintf(detail, cap, "%zu open connection(s)", http_server_connections(app.server));
	return SVC_OK;
}

enum soma_err services_register(void)
{
	const struct service_def defs[] = {
		{"store", 10, true, ROLE_ALL, store_svc_start, store_svc_stop, store_svc_health, NULL},
		/* the redis bus is not critical: without Redis, streams still get this node's events */
		{"bus", 15, !bus_redis_driver(), ROLE_ALL, bus_svc_start, bus_svc_stop, bus_svc_health, NULL},
		{"auth", 20, true, ROLE_ALL, auth_start, auth_stop, auth_health, NULL},
		{"disk", 30, false, ROLE_ALL, NULL, NULL, disk_health, NULL},
		{"policy", 35, false, ROLE_ALL, policy_service_start, policy_service_stop, policy_service_health, NULL},
		{"memory", 40, false, ROLE_ALL, memory_start, memory_stop, memory_health, NULL},
		{"llm", 50, false, ROLE_WORKER, NULL, NULL, llm_health, NULL},
		{"queue", 55, true, ROLE_ALL, queue_svc_start, queue_svc_stop, queue_svc_health, NULL},
		{"celery", 56, false, ROLE_ALL, celery_start, celery_stop, celery_health, NULL},
		{"workers", 60, true, ROLE_WORKER, workers_start, workers_stop, workers_health, NULL},
		{"beat", 70, true, ROLE_ALL, beat_start, beat_stop, beat_health, NULL},
		{"retention", 80, false, ROLE_GATEWAY, retention_svc_start, retention_svc_stop, retention_svc_health,
		 NULL},
		{"http", 90, true, ROLE_ALL, http_start, http_stop, http_health, NULL},
	};
	/* celery and beat exist only when configured: the embedded default lists neither */
	bool celery = strcmp(cfg_str(CFG_QUEUE_DRIVER), "redis") == 0;
	bool beat = cfg_bool(CFG_BEAT_ENABLED) && cfg_str(CFG_BEAT_SCHEDULE_FILE)[0];
	for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
		if ((!celery && strcmp(defs[i].name, "celery") == 0) || (!beat && strcmp(defs[i].name, "beat") == 0) ||
		    (!retention_configured() && strcmp(defs[i].name, "retention") == 0))
			continue;
		enum soma_err err = registry_add(app.registry, &defs[i]);
		if (err != SOMA_OK)
			return err;
	}
	return SOMA_OK;
}
