/*
 * registry.h - the service registry: every part of somaagent that starts and stops is a service.
 *
 * DESIGN: services are registered with a name, a start order, a critical flag and the roles
 * they run in. registry_start() starts the selected services in ascending order; when a
 * critical service fails, the ones already started are stopped in reverse order and the cause
 * is returned; a non-critical failure is recorded (status down, process degraded) and start-up
 * goes on. Health is polled on the main thread (registry_poll) and the /v1/health body is
 * rendered then and cached, so the io threads only copy a string. Registry functions other than
 * registry_health_copy() are for the main thread.
 */
#ifndef SOMA_ORCHESTRATOR_REGISTRY_H
#define SOMA_ORCHESTRATOR_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/err.h"

enum svc_status { SVC_STOPPED, SVC_OK, SVC_DEGRADED, SVC_DOWN, SVC_UNCONFIGURED };

enum role { ROLE_GATEWAY = 1 << 0, ROLE_WORKER = 1 << 1, ROLE_ALL = ROLE_GATEWAY | ROLE_WORKER };

struct service_def {
	const char *name; /* unique, e.g. "store" */
	int order;	  /* ascending start order */
	bool critical;	  /* failure to start (or down) stops the process / makes it down */
	unsigned roles;	  /* enum role mask the service runs in */
	/* Starts the service; on failure writes a sentence for the operator into why. */
	enum soma_err (*start)(void *ctx, char *why, size_t why_cap);
	/* Stops a started service; must not fail. May be NULL. */
	void (*stop)(void *ctx);
	/* Current health with a short detail; NULL means "ok while started". Main thread. */
	enum svc_status (*health)(void *ctx, char *detail, size_t detail_cap);
	void *ctx; /* passed to the callbacks */
};

struct registry;

/* The registry owns nothing but its bookkeeping; free with registry_free(). */
struct registry *registry_new(const char *version);
void registry_free(struct registry *reg);
/* SOMA_ERR_CONFLICT for a duplicate name, SOMA_ERR_LIMIT when full. */
enum soma_err registry_add(struct registry *reg, const struct service_def *def) SOMA_MUST_CHECK;
/* Starts the services of role in order. On a critical failure returns the error and writes
 * "service NAME failed to start: WHY" into why, after stopping what was started. */
enum soma_err registry_start(struct registry *reg, unsigned role, char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Stops started services in reverse order (logging each). */
void registry_stop(struct registry *reg);
/* Polls every started service's health and refreshes the cached /v1/health body. */
void registry_poll(struct registry *reg);
/* Copies the cached /v1/health body into arena and gives its HTTP status. Any thread.
 * NULL before the first poll or when the arena is full. */
char *registry_health_copy(struct registry *reg, struct arena *arena, int *http_status, size_t *len);
/* Overall status: "ok", "degraded" or "down". */
const char *registry_overall(struct registry *reg);
/* [{name, order, critical}] of the services role would start, in start order; caller owns it. */
json_t *registry_plan_json(struct registry *reg, unsigned role);
const char *svc_status_name(enum svc_status s);

#endif
