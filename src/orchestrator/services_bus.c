/*
 * services_bus.c - the bus service of the foundation (see services.c for the list): live events
 * and the resume log (src/bus), and cancel notices between nodes on bus.driver = redis.
 *
 * DESIGN: started and stopped by the registry on the main thread; bus_svc_health runs on the thread
 * that answers /v1/health. A node split by --role (gateway or worker) on bus.driver = local sees
 * only its own process's events, so a gateway's streams never show a reply made on a worker node
 * (history has it): such a node warns at start and its bus is degraded, naming bus.driver=redis.
 */
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "orchestrator/app.h"
#include "orchestrator/services_int.h"
#include "queue/queue.h"

bool bus_redis_driver(void)
{
	return strcmp(cfg_str(CFG_BUS_DRIVER), "redis") == 0;
}

/* A split node (--role gateway or worker) on the local bus sees only this process's events: a
 * gateway's streams would never show a reply made on a worker node. Said at start and in health. */
#define BUS_SPLIT_ADVICE                                                                                      \
	"bus.driver=local on a --role %s node: streams see only this process's events; set bus.driver=redis " \
	"so streams see other nodes' events"

static bool bus_split_local(void)
{
	return !bus_redis_driver() && (app.role & ROLE_ALL) != ROLE_ALL;
}

/* Another node's Stop, delete or A2A cancel (a notice on the bus): this node's workers apply it
 * (a task not started yet is stopped when one of them takes it). */
static void apply_cancel(const char *tenant, const char *session_id, const char *task_id, bool keep_partial)
{
	if (task_id)
		(void)queue_cancel_task(tenant, task_id);
	else
		(void)queue_cancel_session(tenant, session_id, keep_partial);
}

enum soma_err bus_svc_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	enum soma_err err = bus_init(cfg_int(CFG_STREAM_RESUME_WINDOW_S) * 1000);
	if (err != SOMA_OK)
		snprintf(why, cap, "cannot set up the event bus");
	else if (bus_redis_driver() && (app.role & ROLE_WORKER)) /* (before the subscriber starts) */
		bus_cancel_listen(apply_cancel);
	if (err == SOMA_OK && bus_redis_driver()) /* (Redis down is not an error: degraded, reconnecting) */
		err = bus_redis_start(cfg_str(CFG_REDIS_URL), (app.role & ROLE_GATEWAY) != 0, why, cap);
	if (err == SOMA_OK && bus_split_local())
		log_warn("bus", BUS_SPLIT_ADVICE, (app.role & ROLE_GATEWAY) ? "gateway" : "worker");
	return err;
}

void bus_svc_stop(void *ctx)
{
	(void)ctx;
	bus_deinit();
}

enum svc_status bus_svc_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	if (bus_split_local()) {
		snprintf(detail, cap, BUS_SPLIT_ADVICE, (app.role & ROLE_GATEWAY) ? "gateway" : "worker");
		return SVC_DEGRADED;
	}
	return bus_status(detail, cap) ? SVC_OK : SVC_DEGRADED;
}
