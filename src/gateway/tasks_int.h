/*
 * tasks_int.h - the task API's handlers shared between tasks_api.c (the route table, queues,
 * dead letters) and tasks_publish.c (sending and reading a task, and the Celery aliases).
 */
#ifndef SOMA_GATEWAY_TASKS_INT_H
#define SOMA_GATEWAY_TASKS_INT_H

#include "http/http.h"

/* POST /v1/tasks {task, args?, kwargs?, queue?, countdown?, eta?, expires?, priority?,
 * max_retries?, time_limit?, soft_time_limit?, idempotency_key?} -> 202 {task_id, status}. */
void gw_task_publish(struct http_req *req, void *arg);
/* POST /v1/celery/run {task, payload}: the original's alias (payload = kwargs, or args). */
void gw_celery_run(struct http_req *req, void *arg);
/* GET /v1/queues (queues_api.c). */
void gw_queues_get(struct http_req *req, void *arg);
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

#endif
