/*
 * services_store.c - the store service (registered in services.c): opens the database of
 * store.url or data.dir (SQLite: one run per data.dir, locked), refuses a schema a newer binary
 * migrated (exit 2), applies migrations, requeues tasks the previous run left reserved, starts the
 * store's threads; committed events go on the bus. Health: down when the database does not answer
 * or data.dir was removed under the server, degraded while the disk is full.
 */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "bus/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "orchestrator/app.h"
#include "orchestrator/services_int.h"
#include "queue/queue.h"

/* Writer thread, in commit order: every committed event goes live. */
static void publish_committed(const struct store_op *op)
{
	char key[BUS_KEY_MAX];
	bus_key(key, op->tenant, op->session_id);
	bus_publish_committed(key, op->seq, op->event_text, strlen(op->event_text));
}

enum soma_err store_svc_start(void *ctx, char *why, size_t cap)
{
	(void)ctx;
	enum soma_err err = store_open_url(cfg_str(CFG_STORE_URL), cfg_str(CFG_DATA_DIR), &app.store, why, cap);
	if (err != SOMA_OK)
		return err;
	if (!cfg_str(CFG_STORE_URL)[0]) { /* SQLite: one run per data.dir, before anything touches it */
		err = data_dir_lock(cfg_str(CFG_DATA_DIR), why, cap);
		if (err != SOMA_OK) {
			store_close(app.store);
			app.store = NULL;
			return err;
		}
	}
	/* a database a newer binary migrated (a rollback): refused before anything writes to it, with
	 * exit 2, so a supervisor does not restart this binary on it again and again */
	if (store_schema_newer(app.store, why, cap)) {
		app.start_unfixable = true;
		store_close(app.store);
		app.store = NULL;
		return SOMA_ERR_STORE;
	}
	int applied = 0;
	err = store_migrate(app.store, &applied);
	if (err != SOMA_OK) {
		snprintf(why, cap,
			 "database migration failed (the log line above says why): the database (%s) may be from a "
			 "newer version, or the store's role may not create tables",
			 cfg_str(CFG_STORE_URL)[0] ? "PostgreSQL at store.url" : cfg_str(CFG_DATA_DIR));
		store_close(app.store);
		app.store = NULL;
		return err;
	}
	if (applied)
		log_info("store", "applied %d migration(s)", applied);
	int recovered = 0;
	if ((err = store_tasks_recover(app.store, &recovered)) == SOMA_OK && recovered)
		log_info("store", "requeued %d task(s) left reserved by the previous run", recovered);
	store_set_commit_hook(app.store, publish_committed);
	store_set_task_hook(app.store, queue_notify, NULL);
	store_set_no_late_copies(app.store, strcmp(cfg_str(CFG_QUEUE_DRIVER), "local") == 0);
	/* SQLite: two readers (WAL readers are cheap; more only contend); PostgreSQL: store.pool_size */
	if (err == SOMA_OK)
		err = store_exec_start(app.store, cfg_str(CFG_STORE_URL)[0] ? (int)cfg_int(CFG_STORE_POOL_SIZE) : 2);
	if (err == SOMA_OK)
		audit_init(app.store);
	if (err != SOMA_OK) {
		snprintf(why, cap, "cannot start the store's threads (%s)",
			 cfg_str(CFG_STORE_URL)[0] ? "PostgreSQL at store.url" : cfg_str(CFG_DATA_DIR));
		store_close(app.store);
		app.store = NULL;
	}
	return err;
}

void store_svc_stop(void *ctx)
{
	(void)ctx;
	audit_init(NULL);
	store_close(app.store);
	data_dir_unlock();
	app.store = NULL;
}

/* down for good once data.dir's database or lock file was removed under us: writes are refused
 * (503 data_dir_removed) rather than acknowledged into files that die with the process; degraded
 * while the disk is full (writes answered 507 until a commit succeeds) */
enum svc_status store_svc_health(void *ctx, char *detail, size_t cap)
{
	(void)ctx;
	static bool gone_logged;
	if (data_dir_lock_lost())
		store_mark_gone(app.store);
	enum soma_err ping = store_ping(app.store);
	if (store_fault(app.store) == STORE_FAULT_GONE) {
		snprintf(detail, cap,
			 "data.dir %s was removed or replaced while the server ran: writes are refused; restore it "
			 "and restart (what this run stored since is lost with the process)",
			 cfg_str(CFG_DATA_DIR));
		if (!gone_logged)
			log_error("store", "%s", detail);
		gone_logged = true;
		return SVC_DOWN;
	}
	if (store_fault(app.store) == STORE_FAULT_FULL) {
		snprintf(detail, cap, "%s: writes failing: disk full", store_driver_name(app.store));
		return SVC_DEGRADED;
	}
	if (ping != SOMA_OK) {
		snprintf(detail, cap, "%s database does not answer", store_driver_name(app.store));
		return SVC_DOWN;
	}
	snprintf(detail, cap, "%s", store_driver_name(app.store));
	return SVC_OK;
}
