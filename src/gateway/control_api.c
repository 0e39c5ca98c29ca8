/*
 * control_api.c - the task controls and beat's view: POST /v1/tasks/{id}/revoke (the caller's
 * tenant), GET /v1/schedules (scope admin), and the cluster's workers that GET /v1/workers
 * serves on queue.driver=redis (gateway_workers_cluster_json).
 *
 * DESIGN: on the local queue a revoke is one store op: a queued task leaves the queue with a
 * REVOKED outcome, so it never runs. On the redis queue the control publisher (src/sched) checks
 * the task in Redis (it must be the caller's, unless the caller is an admin, as `celery control
 * revoke` may revoke anything; and not finished), broadcasts the revoke on Celery's pidbox -
 * every worker of the cluster, C or Python, skips the task - and stores a REVOKED result, so
 * GET /v1/tasks/{id} says REVOKED at once; its answer is posted back to the request's io
 * thread (no io thread waits on Redis; a client that leaves first is only marked aborted).
 * The schedules and the cluster view are snapshots kept by their threads: handlers copy memory.
 */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "core/config.h"
#include "gateway/gateway.h"
#include "queue/hooks.h"
#include "sched/sched.h"

static bool redis_driver(void)
{
	return strcmp(cfg_str(CFG_QUEUE_DRIVER), "redis") == 0;
}

/* tenant: the task's (an admin may revoke another tenant's on the redis queue), "" when unknown
 * (a task without an owner key: the audit row is the caller's) */
static void revoked(struct http_req *req, const char *id, const char *tenant, const char *status)
{
	char resource[STORE_TASK_ID_MAX + 8];
	snprintf(resource, sizeof(resource), "task:%s", id);
	audit_record_change(&req->ident, tenant, "task.revoke", resource, "done", req->request_id, NULL);
	http_respond_json(req, 202,
			  json_pack("{s:s, s:s, s:b}", "task_id", id, "status", status, "revoked",
				    strcmp(status, "REVOKED") == 0));
}

/* A finished task keeps its outcome: 409 with the status it has. */
static void finished(struct http_req *req, const struct store_op *op)
{
	const char *status = json_string_value(json_object_get(op->row, "status"));
	http_respond_error(req, 409, "task_finished", "task %s already finished (%s); there is nothing to revoke",
			   op->task_id, status ? status : "done");
}

/* Local queue: the store op did it all. */
static void on_local_revoke(struct http_req *req, struct store_op *op)
{
	const char *status = json_string_value(json_object_get(op->row, "status"));
	if (op->err == SOMA_ERR_CONFLICT) {
		finished(req, op);
	} else if (op->err != SOMA_OK) {
		gw_store_error(req, op, "task");
	} else {
		queue_revoke(op->task_id, 0); /* and a worker that checks skips it */
		revoked(req, op->task_id, op->tenant, status ? status : "REVOKED");
	}
}

/* A revoke on the redis driver, waiting for the publisher's check (see sched.h). */
struct pending_revoke {
	struct http_req *req;	  /* the waiting request (invalid once aborted) */
	struct io_thread *thread; /* its io thread */
	char task_id[STORE_TASK_ID_MAX + 1];
	char owner[STORE_ID_MAX + 1]; /* the task's tenant by Redis, or "" */
	enum soma_err err;	      /* the outcome */
	char status[32];	      /* the task's status */
	bool aborted;		      /* the client left */
};

static void on_revoke_answer(void *arg)
{
	struct pending_revoke *p = arg;
	if (!p->aborted) {
		struct http_req *req = p->req;
		req->on_abort = NULL;
		if (p->err == SOMA_OK) {
			revoked(req, p->task_id, p->owner, "REVOKED");
		} else if (p->err == SOMA_ERR_CONFLICT) {
			http_respond_error(req, 409, "task_finished",
					   "task %s already finished (%s); there is nothing to revoke", p->task_id,
					   p->status);
		} else if (p->err == SOMA_ERR_NOT_FOUND) {
			http_respond_error(req, 404, "not_found", "task %s not found", p->task_id);
		} else {
			http_resp_header(req, "Retry-After", "1");
			http_respond_error(req, 503, "redis_unavailable",
					   "Redis does not answer, so the revoke was not sent; retry in a second "
					   "(check redis.url)");
		}
	}
	free(p);
}

/* Publisher thread: hand the outcome to the request's io thread. */
static void on_revoke_done(enum soma_err err, const char *status, const char *owner, void *arg)
{
	struct pending_revoke *p = arg;
	p->err = err;
	snprintf(p->owner, sizeof(p->owner), "%s", owner);
	snprintf(p->status, sizeof(p->status), "%s", status);
	if (http_thread_post_wait(p->thread, on_revoke_answer, p) != SOMA_OK)
		free(p); /* the io thread stopped: the request went with it */
}

static void on_revoke_abort(struct http_req *req)
{
	struct pending_revoke *p = req->handler_ctx;
	p->aborted = true;
}

/* mine: the caller may revoke it whoever Redis says owns it (an admin, or a tenant whose task
 * the store still holds). */
static void revoke_redis(struct http_req *req, const char *id, bool mine)
{
	struct pending_revoke *p = calloc(1, sizeof(*p));
	if (!p) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	p->req = req;
	p->thread = req->thread;
	snprintf(p->task_id, sizeof(p->task_id), "%s", id);
	req->handler_ctx = p;
	req->on_abort = on_revoke_abort;
	if (sched_control_revoke_checked(id, req->ident.tenant, mine, on_revoke_done, p) != SOMA_OK) {
		req->on_abort = NULL;
		free(p);
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "control_unavailable",
				   "the revoke could not be queued for Redis (the control publisher is busy or "
				   "stopped); retry in a second");
	}
}

/* Redis driver, a tenant's revoke: its task may still be in the store (the outbox row the relay
 * has not published yet, so Redis has no owner key for it: a revoke right after the 202), then it
 * is the tenant's; else Redis's owner key says (sched_control_revoke_checked). */
static void on_redis_revoke_lookup(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK && op->err != SOMA_ERR_NOT_FOUND) {
		gw_store_error(req, op, "task");
		return;
	}
	revoke_redis(req, op->task_id, op->err == SOMA_OK);
}

static void revoke_task(struct http_req *req, void *arg)
{
	(void)arg;
	const char *id = http_req_param(req, "id").p;
	if (!id || !gw_valid_task_id(id)) {
		http_respond_error(req, 404, "not_found", "no such task: task ids are 1 to 255 characters");
		return;
	}
	bool admin = identity_has_scope(&req->ident, "admin");
	if (redis_driver() && admin) {
		revoke_redis(req, id, true);
		return;
	}
	struct store_op *op =
		store_op_new(redis_driver() ? STORE_OP_TASK_GET : STORE_OP_TASK_REVOKE, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text), "task %s not found", id);
	gw_store(req, op, redis_driver() ? on_redis_revoke_lookup : on_local_revoke);
}

static void list_schedules(struct http_req *req, void *arg)
{
	(void)arg;
	http_respond_json(req, 200, sched_beat_status_json());
}

json_t *gateway_workers_cluster_json(void)
{
	json_t *nodes = sched_cluster_workers_json(), *workers = json_array(), *node;
	size_t i;
	json_array_foreach(nodes, i, node)
	{
		size_t j;
		json_t *w;
		json_array_foreach(json_object_get(node, "workers"), j, w)
		{
			json_t *copy = json_deep_copy(w);
			json_object_set(copy, "node", json_object_get(node, "node"));
			json_array_append_new(workers, copy);
		}
		json_object_del(node, "workers");
	}
	return json_pack("{s:o, s:o, s:s}", "workers", workers, "nodes", nodes, "scope", "cluster");
}

enum soma_err gateway_control_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"POST", "/v1/tasks/{id}/revoke", revoke_task, 0},
		{"GET", "/v1/schedules", list_schedules, HTTP_ROUTE_ADMIN},
	};
	return gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
}
