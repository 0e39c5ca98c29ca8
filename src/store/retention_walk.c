/*
 * retention_walk.c - which idle sessions one RETENTION_SESSIONS batch takes, the same on both
 * drivers (sqlite_retention.c, pg_retention.c): tenant by tenant in their sort order, starting at
 * op->tenant (the tenant where the batch before stopped: a sweep walks every tenant once), the
 * oldest idle sessions of each, until op->limit are found or no tenant is left.
 *
 * DESIGN: the driver gives the two reads as functions (struct retention_walk): the next tenant
 * (one seek in sessions_tenant_updated) and a tenant's idle sessions (a range read of that index,
 * leaving the busy ones); the walk itself, with its resume rule, is written once, here.
 */
#include <string.h>

#include "store/store_int.h"

enum soma_err store_retention_walk(void *conn, const struct store_op *op, const struct retention_walk *walk,
				   json_t *found)
{
	char tenant[STORE_ID_MAX + 1];
	enum soma_err err = walk->next_tenant(conn, op->tenant, true, tenant, sizeof(tenant));
	while (err == SOMA_OK && tenant[0] && (int64_t)json_array_size(found) < op->limit) {
		err = walk->idle_of_tenant(conn, op, walk->arg, tenant, op->limit - (int64_t)json_array_size(found),
					   found);
		if (err == SOMA_OK && (int64_t)json_array_size(found) < op->limit) {
			char after[STORE_ID_MAX + 1];
			memcpy(after, tenant, sizeof(after));
			err = walk->next_tenant(conn, after, false, tenant, sizeof(tenant));
		}
	}
	return err;
}
