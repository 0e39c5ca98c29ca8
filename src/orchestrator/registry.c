/*
 * registry.c - service registry, ordered start with rollback, health aggregation (registry.h).
 */
#include "orchestrator/registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"

#define MAX_SERVICES 32

struct service {
	struct service_def def;			/* as registered */
	bool started;				/* start() succeeded and stop() not yet called */
	bool selected;				/* part of the running role */
	enum svc_status status;			/* last known health */
	char detail[256];			/* last health detail */
	int64_t since_ms;			/* when status last changed */
	struct metric_series *up;		/* soma_service_up{service} */
	struct metric_series *status_series[4]; /* soma_service_status{service, status}: ok, degraded,
						 * down, unconfigured (stopped counts as down) */
};

struct registry {
	struct service svcs[MAX_SERVICES]; /* sorted by order once started */
	size_t n;			   /* used entries */
	char version[32];		   /* reported in /v1/health */
	int64_t started_ms;		   /* wall time of registry_new */
	pthread_mutex_t lock;		   /* guards the cached body */
	char *body;			   /* cached /v1/health JSON */
	size_t body_len;		   /* its length */
	int body_status;		   /* 200 or 503 */
	const char *overall;		   /* "ok" | "degraded" | "down" */
};

const char *svc_status_name(enum svc_status s)
{
	static const char *const names[] = {"stopped", "ok", "degraded", "down", "unconfigured"};
	return names[s];
}

struct registry *registry_new(const char *version)
{
	struct registry *reg = calloc(1, sizeof(*reg));
	if (!reg)
		return NULL;
	snprintf(reg->version, sizeof(reg->version), "%s", version);
	reg->started_ms = clock_wall_ms();
	reg->overall = "down";
	pthread_mutex_init(&reg->lock, NULL);
	return reg;
}

void registry_free(struct registry *reg)
{
	if (!reg)
		return;
	free(reg->body);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

enum soma_err registry_add(struct registry *reg, const struct service_def *def)
{
	for (size_t i = 0; i < reg->n; i++) {
		if (strcmp(reg->svcs[i].def.name, def->name) == 0)
			return SOMA_ERR_CONFLICT;
	}
	if (reg->n == MAX_SERVICES)
		return SOMA_ERR_LIMIT;
	/* insertion sort by order keeps registration order among equal orders */
	size_t at = reg->n;
	while (at > 0 && reg->svcs[at - 1].def.order > def->order) {
		reg->svcs[at] = reg->svcs[at - 1];
		at--;
	}
	reg->svcs[at] = (struct service){.def = *def, .status = SVC_STOPPED, .since_ms = clock_wall_ms()};
	reg->n++;
	return SOMA_OK;
}

/* soma_service_status{service, status}: 1 on the current status, 0 on the others, so an alert
 * can say "degraded for 15 minutes" (soma_service_up is 1 for degraded). */
static void set_status_series(struct service *s, enum svc_status st)
{
	static const enum svc_status shown[4] = {SVC_OK, SVC_DEGRADED, SVC_DOWN, SVC_UNCONFIGURED};
	if (!s->status_series[0]) {
		static const char *const labels[] = {"service", "status", NULL};
		struct metric_family *f =
			metrics_gauge("soma_service_status",
				      "1 for the service's current status (ok, degraded, down, unconfigured).", labels);
		for (int i = 0; f && i < 4; i++) {
			const char *v[] = {s->def.name, svc_status_name(shown[i])};
			s->status_series[i] = metric_series(f, v);
		}
	}
	enum svc_status now = st == SVC_STOPPED ? SVC_DOWN : st;
	for (int i = 0; i < 4; i++)
		if (s->status_series[i])
			metric_set(s->status_series[i], shown[i] == now ? 1 : 0);
}

static void set_status(struct service *s, enum svc_status st, const char *detail)
{
	if (s->status != st)
		s->since_ms = clock_wall_ms();
	s->status = st;
	snprintf(s->detail, sizeof(s->detail), "%s", detail);
	if (!s->up) {
		static const char *const labels[] = {"service", NULL};
		struct metric_family *f = metrics_gauge(
			"soma_service_up", "1 when the service is started and healthy or degraded, else 0.", labels);
		const char *v[] = {s->def.name};
		s->up = f ? metric_series(f, v) : NULL;
	}
	metric_set(s->up, (st == SVC_OK || st == SVC_DEGRADED || st == SVC_UNCONFIGURED) ? 1 : 0);
	set_status_series(s, st);
}

static void stop_started(struct registry *reg, size_t upto)
{
	for (size_t i = upto; i-- > 0;) {
		struct service *s = &reg->svcs[i];
		if (!s->started)
			continue;
		log_info("orchestrator", "stopping service %s", s->def.name);
		if (s->def.stop)
			s->def.stop(s->def.ctx);
		s->started = false;
		set_status(s, SVC_STOPPED, "stopped");
		log_info("orchestrator", "service %s stopped", s->def.name);
	}
}

static void refresh_body(struct registry *reg);

enum soma_err registry_start(struct registry *reg, unsigned role, char *why, size_t why_cap)
{
	for (size_t i = 0; i < reg->n; i++) {
		struct service *s = &reg->svcs[i];
		s->selected = (s->def.roles & role) != 0;
		if (!s->selected)
			continue;
		char reason[512] = "";
		uint64_t t0 = clock_mono_ns();
		enum soma_err err = s->def.start ? s->def.start(s->def.ctx, reason, sizeof(reason)) : SOMA_OK;
		if (err == SOMA_OK) {
			s->started = true;
			set_status(s, SVC_OK, "started");
			log_info("orchestrator", "service %s started in %.1f ms", s->def.name,
				 (double)(clock_mono_ns() - t0) / 1e6);
			refresh_body(reg); /* /v1/health tells the truth while the rest starts (503 until ready) */
			continue;
		}
		if (!reason[0])
			snprintf(reason, sizeof(reason), "%s", soma_err_str(err));
		set_status(s, SVC_DOWN, reason);
		if (!s->def.critical) {
			log_warn("orchestrator", "non-critical service %s failed to start: %s; continuing degraded",
				 s->def.name, reason);
			continue;
		}
		snprintf(why, why_cap, "critical service %s failed to start: %s", s->def.name, reason);
		log_error("orchestrator", "%s; stopping the services already started in reverse order", why);
		stop_started(reg, i);
		return err;
	}
	registry_poll(reg);
	return SOMA_OK;
}

void registry_stop(struct registry *reg)
{
	stop_started(reg, reg->n);
}

static json_t *render(struct registry *reg, int *http_status)
{
	bool down = false, degraded = false;
	char since[CLOCK_RFC3339_LEN + 1];
	json_t *services = json_object();
	for (size_t i = 0; i < reg->n; i++) {
		struct service *s = &reg->svcs[i];
		if (!s->selected)
			continue;
		bool bad = s->status == SVC_DOWN || s->status == SVC_STOPPED;
		down |= s->def.critical && bad;
		degraded |= s->status != SVC_OK;
		json_object_set_new(services, s->def.name,
				    json_pack("{s:s, s:b, s:s, s:s}", "status", svc_status_name(s->status), "critical",
					      s->def.critical, "detail", s->detail, "since",
					      clock_rfc3339(s->since_ms, since, sizeof(since))));
	}
	reg->overall = down ? "down" : degraded ? "degraded" : "ok";
	*http_status = down ? 503 : 200;
	return json_pack("{s:s, s:s, s:I, s:o}", "status", reg->overall, "version", reg->version, "uptime_s",
			 (json_int_t)((clock_wall_ms() - reg->started_ms) / 1000), "services", services);
}

/* Renders the cached /v1/health body from the statuses known now. */
static void refresh_body(struct registry *reg)
{
	int status;
	json_t *root = render(reg, &status);
	char *body = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!body)
		return;
	pthread_mutex_lock(&reg->lock);
	free(reg->body);
	reg->body = body;
	reg->body_len = strlen(body);
	reg->body_status = status;
	pthread_mutex_unlock(&reg->lock);
}

void registry_poll(struct registry *reg)
{
	for (size_t i = 0; i < reg->n; i++) {
		struct service *s = &reg->svcs[i];
		if (!s->started || !s->def.health)
			continue;
		char detail[256] = "";
		enum svc_status st = s->def.health(s->def.ctx, detail, sizeof(detail));
		if (st != s->status)
			log_emit(st == SVC_OK ? LOG_INFO : LOG_WARN, "orchestrator", NULL, 0,
				 "service %s is now %s%s%s", s->def.name, svc_status_name(st), detail[0] ? ": " : "",
				 detail);
		set_status(s, st, detail[0] ? detail : svc_status_name(st));
	}
	refresh_body(reg);
}

char *registry_health_copy(struct registry *reg, struct arena *arena, int *http_status, size_t *len)
{
	pthread_mutex_lock(&reg->lock);
	char *copy = NULL;
	if (reg->body && (copy = arena_alloc(arena, reg->body_len + 1))) {
		memcpy(copy, reg->body, reg->body_len + 1);
		*len = reg->body_len;
		*http_status = reg->body_status;
	}
	pthread_mutex_unlock(&reg->lock);
	return copy;
}

const char *registry_overall(struct registry *reg)
{
	return reg->overall;
}

json_t *registry_plan_json(struct registry *reg, unsigned role)
{
	json_t *list = json_array();
	for (size_t i = 0; i < reg->n; i++) {
		const struct service_def *d = &reg->svcs[i].def;
		if (d->roles & role)
			json_array_append_new(list, json_pack("{s:s, s:i, s:b}", "name", d->name, "order", d->order,
							      "critical", d->critical));
	}
	return list;
}
