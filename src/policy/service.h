/*
 * service.h - the `policy` service of the registry (src/orchestrator/services.c): starts the
 * policy engine and the limits, reports the engine's state in /v1/health.
 *
 * DESIGN: non-critical. An OPA that does not answer makes the service down and /v1/health
 * degraded, never down (the node keeps serving what policy allows: nothing, when OPA is the
 * engine - fail closed). A policy that cannot be loaded (an unreadable policy.file, opa without
 * a URL) does not fail the start: the service runs, reports down with the reason, and every
 * decision is denied until it is fixed.
 */
#ifndef SOMA_POLICY_SERVICE_H
#define SOMA_POLICY_SERVICE_H

#include <stddef.h>

#include "orchestrator/registry.h"

enum soma_err policy_service_start(void *ctx, char *why, size_t why_cap);
void policy_service_stop(void *ctx);
enum svc_status policy_service_health(void *ctx, char *detail, size_t detail_cap);

#endif
