/*
 * gateway.h - what the routers of the gateway share: running a store op for a request and
 * answering on the request's io thread, reading JSON bodies, mapping errors to responses.
 */
#ifndef SOMA_GATEWAY_GATEWAY_H
#define SOMA_GATEWAY_GATEWAY_H

#include <jansson.h>
#include <stdbool.h>

#include "http/http.h"
#include "store/store.h"

#define GW_JSON_MAX_DEPTH 32

/* Runs with the finished op on the request's io thread; the op is freed after it returns. */
typedef void (*gw_store_done_fn)(struct http_req *req, struct store_op *op);

/* Submits op on behalf of req (req stays open until fn answers). If the client goes away
 * first, fn is not called. When the store is saturated, answers 503 itself. Takes op. */
void gw_store(struct http_req *req, struct store_op *op, gw_store_done_fn fn);
/* gw_store without the answer to a refusal: SOMA_OK when op was submitted, else the refusal
 * (op freed, nothing answered) for the caller to undo what it prepared, then answer with
 * gw_store_refused. Takes op. */
enum soma_err gw_store_try(struct http_req *req, struct store_op *op, gw_store_done_fn fn) SOMA_MUST_CHECK;
/* Answers a gw_store_try refusal as gw_store does (500 out of memory, 503 store_busy). */
void gw_store_refused(struct http_req *req, enum soma_err err);
/* The answer to SOMA_ERR_GONE (the store's database was removed under the server): 503
 * data_dir_removed. */
void gw_store_gone(struct http_req *req);
/* The answer to a full disk (SOMA_ERR_FULL), the same for the store, a spooled body, a blob:
 * 507 storage_full with this Retry-After (seconds) and text. */
#define GW_FULL_RETRY_AFTER "30"
#define GW_FULL_TEXT                                                                                         \
	"the disk is full (under data.dir, or the PostgreSQL server's): the request was not applied; retry " \
	"once space is freed"
/* The body as a JSON object, or NULL after answering 400 (malformed JSON, invalid UTF-8, not
 * an object, nested deeper than GW_JSON_MAX_DEPTH). Caller owns the result. */
json_t *gw_json_object(struct http_req *req);
/* Whether the text's brackets nest at most GW_JSON_MAX_DEPTH deep (strings skipped). */
bool gw_json_nesting_ok(const char *s, size_t n);
/* Answers the error of a failed store op (404 for not found, 503 + Retry-After when the
 * store is unavailable, else 500). what names the thing, e.g. "session". */
void gw_store_error(struct http_req *req, const struct store_op *op, const char *what);
/* True for ids we accept from clients: 1..64 of [A-Za-z0-9_-]. */
bool gw_valid_id(const char *s);
/* True for task ids we accept from clients (Celery's are any text): 1..255 characters of UTF-8
 * (queue/celery_wire.h CELERY_ID_MAX) without control characters; ':' '/' spaces allowed. */
bool gw_valid_task_id(const char *s);
/* Copies ?cursor= (an opaque page cursor) into op->cursor; false after answering 400. */
bool gw_cursor(struct http_req *req, struct store_op *op);
/* Answers the failure of a page op (400 invalid_cursor for SOMA_ERR_INVALID, else as
 * gw_store_error); true when it answered, false when op succeeded. */
bool gw_page_failed(struct http_req *req, const struct store_op *op, const char *what);
/* Reads ?limit= within [1, max], default def; false after answering 400. */
bool gw_limit(struct http_req *req, int64_t def, int64_t max, int64_t *out);

/* One row of a router's route table. */
struct gw_route {
	const char *method, *pattern; /* e.g. "GET", "/v1/sessions/{id}" */
	http_handler_fn fn;	      /* the handler */
	unsigned flags;		      /* HTTP_ROUTE_* */
};
/* Adds every route of a table (static storage); the first error is returned. */
enum soma_err gw_routes_add(struct http_router *r, const struct gw_route *routes, size_t n) SOMA_MUST_CHECK;

/* Route tables of the routers. */
enum soma_err gateway_chat_routes(struct http_router *r) SOMA_MUST_CHECK;
enum soma_err gateway_session_routes(struct http_router *r) SOMA_MUST_CHECK;
/* The path of POST /v1/session/message for another front end (A2A): body {session_id?,
 * persona_id?, metadata?} (borrowed) is read as that route reads it, text (non-empty, copied) is
 * the message; the token budget and policy conversation.send are asked as there (a refusal is
 * answered there: 400, 403, 429). task_id: the conversation task's id (a uuid), or NULL for a new
 * one. Once the message and its task are stored, done(req, op) runs with op->err,
 * op->session_id, op->seq (the user event's) and op->task. */
void gw_chat_post(struct http_req *req, json_t *body, const char *text, const char *task_id, gw_store_done_fn done);
/* GET /v1/sessions/{id}/events?stream=true: the SSE stream (stream.c). */
void gw_stream_open(struct http_req *req, const char *session_id);

/* LLM endpoints (llm_proxy.c): their limit of provider calls in flight, set with the http service. */
enum soma_err gateway_llm_start(int concurrency) SOMA_MUST_CHECK;
void gateway_llm_stop(void);
enum soma_err gateway_llm_routes(struct http_router *r) SOMA_MUST_CHECK;

/* Uploads and attachments (uploads.c), with their pool. */
enum soma_err gateway_upload_start(int threads) SOMA_MUST_CHECK;
void gateway_upload_stop(void);
/* Queues a sweep of upload files no attachment names when uploads.sweep_interval_s has passed
 * (blob_sweep.c). Main thread, on its timer tick. */
void gateway_upload_sweep_tick(void);
/* Runs that sweep now on the calling thread (it blocks on the store and the disk: not an io
 * thread); the retention sweeper calls it after deleting sessions. */
void gateway_blob_sweep_now(void);
enum soma_err gateway_upload_routes(struct http_router *r) SOMA_MUST_CHECK;
/* The web UI (web.c): /, /ops and /assets/{name}, public, from files embedded at build time. */
enum soma_err gateway_web_routes(struct http_router *r) SOMA_MUST_CHECK;

/* A2A (a2a_card.c, a2a.c): the agent card and the JSON-RPC endpoint POST /a2a. */
enum soma_err gateway_a2a_routes(struct http_router *r) SOMA_MUST_CHECK;

/* The task API: tasks, queues, workers, dead letters (tasks_api.c). */
enum soma_err gateway_task_routes(struct http_router *r) SOMA_MUST_CHECK;

/* Task controls and beat (control_api.c): POST /v1/tasks/{id}/revoke, GET /v1/schedules. */
enum soma_err gateway_control_routes(struct http_router *r) SOMA_MUST_CHECK;
/* GET /v1/workers on queue.driver=redis: {workers, nodes, scope: "cluster"}. Caller owns. */
json_t *gateway_workers_cluster_json(void);

/* The admin API of identities: /v1/keys, /v1/tenants (admin.c). */
enum soma_err gateway_admin_routes(struct http_router *r) SOMA_MUST_CHECK;

/* GET /v1/admin/audit (audit_api.c). */
enum soma_err gateway_audit_routes(struct http_router *r) SOMA_MUST_CHECK;

/* The memory endpoints (memory_api.c): /v1/memory/remember, /recall, /outbox; the recall
 * pool is started on first use and stopped by gateway_memory_stop (after the io threads). */
enum soma_err gateway_memory_routes(struct http_router *r) SOMA_MUST_CHECK;
/* GET /v1/tools, POST /v1/tools/{name}/run (tools_api.c). */
enum soma_err gateway_tools_routes(struct http_router *r) SOMA_MUST_CHECK;
void gateway_memory_stop(void);

/* The store of the running process (set by the orchestrator). */
struct store *gateway_store(void);

/* ---- ops_metrics.c: the gauges of /metrics computed at scrape time ---- */
enum gw_sse_kind { GW_SSE_EVENTS, GW_SSE_A2A, GW_SSE_PROXY };
/* soma_sse_streams{kind}'s series (for http_stream_count); process-long, NULL on OOM. */
struct metric_series *gw_sse_gauge(enum gw_sse_kind kind);
/* Adds the collectors of the queue, worker, disk, Redis AOF and beat gauges, and the stream
 * gauges' series (gateway_ops_routes, once; app.role set). */
void gw_ops_metrics_register(void);

#endif
