/*
 * service.c - the policy service (see service.h): policy_start() and limits_start() at start-up,
 * both stopped at shut-down, and the health report (engine state, then what limits enforce).
 */
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "limits/limits.h"
#include "orchestrator/app.h"
#include "policy/policy.h"
#include "policy/service.h"

enum soma_err policy_service_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	enum soma_err err = limits_start_from_config();
	if (err != SOMA_OK) {
		snprintf(why, cap, "out of memory for the limits tables");
		return err;
	}
	/* a bad policy.file does not stop the process: the service runs, denies everything and says
	 * why in /v1/health (started, so that stop frees what start made) */
	policy_denied_init(app.store);
	if (policy_start(why, cap) != SOMA_OK)
		log_error("policy", "%s; every policy decision is denied until this is fixed", why);
	why[0] = '\0';
	return SOMA_OK;
}

void policy_service_stop(void *ctx)
{
	(void)ctx;
	policy_stop();
	limits_stop();
	policy_denied_init(NULL);
}

enum svc_status policy_service_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	char engine[384], limits[192];
	bool up = policy_health(engine, sizeof(engine));
	limits_describe(limits, sizeof(limits));
	snprintf(detail, cap, "%s; %s", engine, limits);
	return up ? SVC_OK : SVC_DOWN;
}
