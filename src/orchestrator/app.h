/*
 * app.h - the one struct app: what the running process is made of.
 *
 * DESIGN: filled by `somaagent run` on the main thread before any other thread starts; after
 * that, io threads only read the pointers (the objects they point to have their own rules).
 */
#ifndef SOMA_ORCHESTRATOR_APP_H
#define SOMA_ORCHESTRATOR_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "http/http.h"
#include "orchestrator/registry.h"
#include "store/store.h"

struct app {
	unsigned role;			/* enum role mask of this process */
	struct registry *registry;	/* every service */
	struct store *store;		/* durable store (service "store") */
	struct http_router *router;	/* routes (service "http") */
	struct http_pipeline *pipeline; /* middleware chain */
	struct http_server *server;	/* listeners and io threads */
	bool anonymous;			/* loopback with no keys: unauthenticated = default tenant */
	uint64_t stop_end_ns;		/* SIGTERM's time + shutdown.grace_s (monotonic); 0 before */
	bool start_unfixable;		/* a start refused for what a restart cannot fix: exit 2 */
};

extern struct app app;

/* Milliseconds of shutdown.grace_s left for the stop under way: every stop (HTTP drain, running
 * tasks) shares the one grace counted from the signal, instead of each taking all of it. */
int app_grace_left_ms(void);
/* Takes data.dir's lock for this run (data_lock.c): SOMA_ERR_CONFLICT, with why saying which
 * process holds it, when another somaagent runs on the directory. */
enum soma_err data_dir_lock(const char *dir, char *why, size_t cap) SOMA_MUST_CHECK;
/* Lets the lock go (the store stopped). */
void data_dir_unlock(void);
/* True when the lock file taken was removed since (data.dir deleted under the running server). */
bool data_dir_lock_lost(void);
/* Registers the services of the process (store, auth, disk, http) with app.registry. */
enum soma_err services_register(void) SOMA_MUST_CHECK;
/* Frees what the services keep until every service has stopped (the HTTP server's memory). */
void services_free(void);
/* Adds the operations routes (/v1/health, /metrics, /v1/admin/config, /v1/runtime-config). */
enum soma_err gateway_ops_routes(struct http_router *r) SOMA_MUST_CHECK;

#endif
