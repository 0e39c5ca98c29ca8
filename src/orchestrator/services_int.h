/*
 * services_int.h - services of the foundation defined outside services.c (registered there, in
 * services_register); each is a service_def's start/stop/health trio (registry.h).
 */
#ifndef SOMA_ORCHESTRATOR_SERVICES_INT_H
#define SOMA_ORCHESTRATOR_SERVICES_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "orchestrator/registry.h"

/* bus.driver = redis (the bus is then not critical: degraded to this node's events while Redis is down) */
bool bus_redis_driver(void);
/* the bus service (services_bus.c): why receives a message of at most cap bytes on failure */
enum soma_err bus_svc_start(void *ctx, char *why, size_t cap);
void bus_svc_stop(void *ctx);
enum svc_status bus_svc_health(void *ctx, char *detail, size_t cap);

/* the store service (services_store.c) */
enum soma_err store_svc_start(void *ctx, char *why, size_t cap);
void store_svc_stop(void *ctx);
enum svc_status store_svc_health(void *ctx, char *detail, size_t cap);

#endif
