/*
 * tasks_api.c - the task API over the queue this process runs: POST /v1/tasks and
 * GET /v1/tasks/{id} (the caller's tenant; tasks_publish.c, with the Celery aliases), and for operators (scope admin)
 * GET /v1/queues (queues_api.c), GET /v1/workers, and the dead letters: GET /v1/dead-letters, POST
 * /v1/dead-letters/{id}/requeue, DELETE /v1/dead-letters/{id}.
 *
 * DESIGN: task rows and dead letters come from the store (so they are the same on every node
 * that shares it); /v1/workers on the local queue shows this process's pools, on redis every
 * node's heartbeat (the cluster view).
 */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "gateway/gateway.h"
#include "gateway/tasks_int.h"
#include "policy/gate.h"
#include "queue/queue.h"

#define DEAD_PAGE_DEFAULT 50
#define DEAD_PAGE_MAX	  500

static struct store_op *task_op(struct http_req *req, enum store_op_kind kind, bool all_tenants)
{
	const char *id = http_req_param(req, "id").p;
	if (!id || !gw_valid_task_id(id)) {
		http_respond_error(req, 404, "not_found", "no such task: task ids are 1 to 255 characters");
		return NULL;
	}
	struct store_op *op = store_op_new(kind, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return NULL;
	}
	snprintf(op->task_id, sizeof(op->task_id), "%s", id);
	snprintf(op->error_text, sizeof(op->error_text),
		 kind == STORE_OP_TASK_GET ? "task %s not found" : "no dead letter %s", id);
	op->all_tenants = all_tenants;
	return op;
}

static void get_workers(struct http_req *req, void *arg)
{
	(void)arg;
	if (strcmp(cfg_str(CFG_QUEUE_DRIVER), "redis") == 0) /* every node's, from their heartbeats */
		http_respond_json(req, 200, gateway_workers_cluster_json());
	else
		http_respond_json(req, 200,
				  json_pack("{s:o, s:s}", "workers", queue_workers_json(), "scope", "this node"));
}

static void on_dead_list(struct http_req *req, struct store_op *op)
{
	if (gw_page_failed(req, op, "dead letter"))
		return;
	http_respond_json(req, 200,
			  json_pack("{s:O, s:s?}", "items", op->rows, "next_cursor",
				    op->next_cursor[0] ? op->next_cursor : NULL));
}

static void list_dead(struct http_req *req, void *arg)
{
	(void)arg;
	int64_t limit;
	if (!gw_limit(req, DEAD_PAGE_DEFAULT, DEAD_PAGE_MAX, &limit))
		return;
	struct store_op *op = store_op_new(STORE_OP_DEAD_LIST, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	op->all_tenants = true;
	op->limit = limit;
	if (!gw_cursor(req, op)) {
		store_op_free(op);
		return;
	}
	gw_store(req, op, on_dead_list);
}

static void on_dead_change(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "dead letter");
		return;
	}
	char resource[STORE_TASK_ID_MAX + 8];
	snprintf(resource, sizeof(resource), "task:%s", op->task_id);
	audit_record_change(&req->ident, op->row_tenant,
			    op->kind == STORE_OP_DEAD_REQUEUE ? "admin.dead_letter.requeue"
							      : "admin.dead_letter.delete",
			    resource, "done", req->request_id, NULL);
	http_respond_json(req, 200,
			  json_pack("{s:s, s:s}", "task_id", op->task_id, "status",
				    op->kind == STORE_OP_DEAD_REQUEUE ? "requeued" : "deleted"));
}

static void requeue_dead(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = task_op(req, STORE_OP_DEAD_REQUEUE, true);
	if (op)
		gw_store(req, op, on_dead_change);
}

static void delete_dead(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = task_op(req, STORE_OP_DEAD_DELETE, true);
	if (op)
		gw_store(req, op, on_dead_change);
}

enum soma_err gateway_task_routes(struct http_router *r)
{
	static const struct gw_route routes[] = {
		{"POST", "/v1/tasks", gw_task_publish, 0},
		{"POST", "/v1/tasks/chain", gw_task_chain, 0},
		{"POST", "/v1/tasks/group", gw_task_group, 0},
		{"POST", "/v1/tasks/chord", gw_task_chord, 0},
		{"GET", "/v1/tasks/{id}", gw_task_get, 0},
		{"POST", "/v1/celery/run", gw_celery_run, 0},
		{"GET", "/v1/celery/runs/{id}", gw_task_get, 0},
		{"GET", "/v1/queues", gw_queues_get, HTTP_ROUTE_ADMIN},
		{"GET", "/v1/workers", get_workers, HTTP_ROUTE_ADMIN},
		{"GET", "/v1/dead-letters", list_dead, HTTP_ROUTE_ADMIN},
		{"POST", "/v1/dead-letters/{id}/requeue", requeue_dead, HTTP_ROUTE_ADMIN},
		{"DELETE", "/v1/dead-letters/{id}", delete_dead, HTTP_ROUTE_ADMIN},
	};
	return gw_routes_add(r, routes, sizeof(routes) / sizeof(routes[0]));
}
