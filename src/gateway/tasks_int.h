/*
 * tasks_int.h - the task API's handlers shared between tasks_api.c (the route table, queues,
 * dead letters), tasks_publish.c (sending and reading a task, and the Celery aliases) and
 * tasks_body.c (the checks of a body).
 */
#ifndef SOMA_GATEWAY_TASKS_INT_H
#define SOMA_GATEWAY_TASKS_INT_H

#include "http/http.h"
#include "store/store.h"

/* POST /v1/tasks {task, args?, kwargs?, queue?, countdown?, eta?, expires?, priority?,
 * max_retries?, time_limit?, soft_time_limit?, idempotency_key?} -> 202 {task_id, status}. */
void gw_task_publish(struct http_req *req, void *arg);
/* The TASK_PUBLISH op of task name (args an array, kwargs an object; both borrowed) for req's
 * identity, on the queue queue.routes gives it, due now: what POST /v1/tasks would store for the
 * same body, with request_id in the payload. NULL on OOM. The caller owns the op (store_op_free,
 * or gives it to gw_task_op_publish). Other routers (tools_api.c) publish through these two. */
struct store_op *gw_task_op_new(struct http_req *req, const char *name, json_t *args, json_t *kwargs);
/* Stores op (taken) and answers 202 {task_id, status:"PENDING"} once it is committed. */
void gw_task_op_publish(struct http_req *req, struct store_op *op);
/* POST /v1/celery/run {task, payload}: the original's alias (payload = kwargs, or args). */
void gw_celery_run(struct http_req *req, void *arg);
/* GET /v1/queues (queues_api.c). */
void gw_queues_get(struct http_req *req, void *arg);
/* Adds a zero row to queues (a JSON array of {name, ...}) for every queue there is that it lacks:
 * every node's and this node's pools, queue.default_queue and the targets of queue.routes (a
 * queue no node serves still fills up); returns their names (a new array, the caller's). Any
 * thread (queues_api.c, and the queue figures of /metrics: ops_metrics.c). */
json_t *gw_queue_names(json_t *queues);
/* GET /v1/tasks/{id} and GET /v1/celery/runs/{id}. */
void gw_task_get(struct http_req *req, void *arg);

/* POST /v1/tasks/chain, /group, /chord: Celery's canvas on queue.driver=redis (tasks_canvas.c). */
void gw_task_chain(struct http_req *req, void *arg);
void gw_task_group(struct http_req *req, void *arg);
void gw_task_chord(struct http_req *req, void *arg);
/* A task or queue name: 1..max of letters, digits, . _ - : */
bool gw_task_name_ok(const char *s, size_t max);
/* A queue this deployment knows: one its workers serve or a target of queue.routes. */
bool gw_task_queue_ok(const char *q);
/* Checks a POST /v1/tasks body b (borrowed): false after answering 4xx for the first wrong field;
 * true with *eta and *expires the due and expiry times in wall-clock ms (0 when absent)
 * (tasks_body.c). */
bool gw_task_body_valid(struct http_req *req, json_t *b, int64_t *eta, int64_t *expires);

#endif
