/*
 * http.h - the HTTP/1.1 server: requests, responses, routes, middleware.
 *
 * DESIGN: each io thread runs an event_base with its own listening socket (SO_REUSEPORT, so the
 * kernel spreads connections) and owns its connections outright; no other thread touches them.
 * A connection reads one request head (bounded by http.max_header -> 431) and body (bounded by
 * http.max_body, or its route's own limit (http_route_set_mem_body) -> 413, checked from
 * Content-Length before any body byte is read), then runs the
 * pipeline on the io thread: request id -> route (404/405) -> auth -> limits (429) -> policy
 * (403) -> handler. Handlers must not block; they respond before returning, or keep the request
 * and respond later from the same thread (work from other threads is posted back with
 * http_thread_post). When the response is complete the access log and metrics run, the request
 * arena is reset, and the next request on the connection (keep-alive, pipelining) is read.
 * Every 4xx/5xx carries the JSON envelope {"error":{"code","message","request_id"}}.
 * We parse HTTP ourselves on top of libevent bufferevents rather than use evhttp: evhttp 2.1
 * answers its own limit violations (oversized headers or body) with HTML pages we cannot turn
 * into our envelope or into 431, and it allocates per header; see docs/architecture.md.
 */
#ifndef SOMA_HTTP_HTTP_H
#define SOMA_HTTP_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/str.h"
#include "identity/identity.h"

#define HTTP_MAX_HEADERS      100
#define HTTP_MAX_PARAMS	      8
#define HTTP_MAX_RESP_HEADERS 16

struct http_header {
	struct str name;  /* as sent; compare case-insensitively */
	struct str value; /* trimmed of surrounding spaces */
};

struct http_route;
struct http_conn;
struct evbuffer;
struct event_base;
struct io_thread;
struct trace_span;

struct http_req {
	/* parsed request; every str points into the request arena */
	struct str method;	     /* "GET", "POST", ... */
	struct str target;	     /* raw request target */
	struct str path;	     /* target before '?' */
	struct str query;	     /* target after '?', without it */
	int minor_version;	     /* HTTP/1.x */
	struct http_header *headers; /* in arrival order */
	size_t nheaders;	     /* entries in headers */
	int64_t content_length;	     /* -1 when absent */
	const char *body;	     /* NUL-terminated copy in the arena, or NULL */
	size_t body_len;	     /* bytes in body */
	int body_fd;		     /* file-body routes: the body in a temp file, else -1 */
	char *body_path;	     /* that file's path (in the arena); unlinked once made */
	bool keep_alive;	     /* client wants the connection kept */
	bool expect_continue;	     /* Expect: 100-continue was sent */

	/* set by the pipeline */
	const struct http_route *route;	    /* matched route, or NULL */
	struct str params[HTTP_MAX_PARAMS]; /* path parameter values, route order */
	char request_id[129];		    /* echoed as X-Request-Id */
	struct identity ident;		    /* caller, once authenticated */
	bool authenticated;		    /* ident is valid */
	struct arena *arena;		    /* freed after the response */
	uint64_t start_ns;		    /* monotonic time of the first byte */
	unsigned mw_passed;		    /* once-only steps (limits, policy) already passed (middleware.c) */
	struct trace_span *span;	    /* the SERVER span (in the arena), NULL when tracing is off */

	/* response state */
	int status;					    /* 0 until responded */
	size_t resp_body_len;				    /* bytes of response body */
	const char *resp_headers[HTTP_MAX_RESP_HEADERS][2]; /* extra headers (arena) */
	size_t nresp_headers;				    /* entries in resp_headers */
	bool close_after;				    /* send Connection: close */
	struct evbuffer *out;				    /* where the response is written */
	int out_fd;					    /* the socket behind out, when write_first is set */
	bool write_first;				    /* send to out_fd while out is empty */
	bool abort_on_eof; /* EOF from the client ends the handler (on_abort): its work is for the client alone */
	bool client_eof;   /* the client closed its side (EOF) before or while this request was handled: a
			    * handler that would set abort_on_eof must not start its work (the EOF that
			    * would end it has come already) */
	bool out_file;	   /* the response queued a file by reference in out (an fd) */
	bool corked;	   /* writes go to cork_buf (http_cork) */
	struct evbuffer *cork_buf;		   /* the connection's, kept across requests */
	void (*on_response)(struct http_req *req); /* called once the response is queued */
	void *owner;				   /* the connection (or a test harness) */
	bool streaming;				   /* http_stream_begin was called */
	bool chunked;				   /* stream framed with chunked encoding */

	/* asynchronous handlers: a handler that returns without responding keeps the request and
	 * must respond (or end its stream) later on the same io thread; if the client goes away
	 * first, on_abort runs (on that thread) and the request must not be touched afterwards */
	void (*on_abort)(struct http_req *req); /* set by a handler that keeps the request */
	void (*on_drain)(struct http_req *req); /* streaming: queued output (a write returned > 0) all sent */
	void *handler_ctx;			/* the handler's state for on_abort */
	struct io_thread *thread;		/* io thread that owns the request */
	/* called once when the request is over, however: its response queued, its stream ended, or
	 * the client gone while it was handled (after on_abort). For what a handler holds for the
	 * request's whole life across code that may answer or drop it (an A2A stream's place in
	 * limits.streams_per_tenant, taken before the chat path). req is still readable then. */
	void (*on_end)(struct http_req *req);
	struct metric_series *open_gauge; /* http_stream_count's gauge, released when the request is over */
};

/* ---- request accessors --------------------------------------------------------------------- */

/* Value of the first header with this name (case-insensitive), or STR_NULL. */
struct str http_req_header(const struct http_req *req, const char *name);
/* Path parameter by its name in the route pattern ({id}); percent-decoded into the arena. */
struct str http_req_param(const struct http_req *req, const char *name);
/* Query parameter, percent-decoded into the arena; false when absent. */
bool http_req_query(const struct http_req *req, const char *name, struct str *out);

/* ---- responses (io thread of the request) --------------------------------------------------- */

/* Whether the client has closed its side: client_eof, or else an EOF already waiting on the socket
 * (a peek, one syscall: the read callback that would see it may not have run yet, as for a request
 * pipelined just before the client's close). For handlers about to start work for the client
 * alone (a provider call, a stream): when true they answer 400 client_closed instead. Sets
 * client_eof when it finds the EOF. Io thread only. */
bool http_client_gone(struct http_req *req);

/* Adds a response header; name and value are copied into the arena. */
void http_resp_header(struct http_req *req, const char *name, const char *value);
/* Sends a complete response. body may be NULL when len is 0. */
void http_respond(struct http_req *req, int status, const char *content_type, const void *body, size_t len);
/* Sends body as JSON; takes ownership of body (json_decref'd here). */
void http_respond_json(struct http_req *req, int status, json_t *body);
/* Sends the JSON error envelope with code and a formatted message. */
void http_respond_error(struct http_req *req, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Sends the error envelope {"error": error}; takes error ({code, message, request_id, ...}).
 * When the matched route has an error renderer (http_route_set_error_fn) it is asked first. */
void http_respond_error_json(struct http_req *req, int status, json_t *error);
/* Sends the first len bytes of fd as the body (sendfile); takes ownership of fd. */
void http_respond_file(struct http_req *req, int status, const char *content_type, int fd, size_t len);
/* Starts a streamed response (no Content-Length: chunked on HTTP/1.1, close-delimited on 1.0)
 * with the given status and content type; extra headers added before are sent too. */
void http_stream_begin(struct http_req *req, int status, const char *content_type);
/* Counts the stream in gauge (soma_sse_streams{kind}): +1 now, -1 once when the request is over,
 * however it ends (its end, the client gone). gauge is a process-long series (metrics.h); NULL
 * is ignored. Call after http_stream_begin, at most once per request. */
struct metric_series;
void http_stream_count(struct http_req *req, struct metric_series *gauge);
/* The http layer's own (response.c, conn.c): releases what http_stream_count took, once. */
void http_stream_uncount(struct http_req *req);
/* Appends data to a started stream. Returns the bytes still waiting to be sent to the client,
 * so a producer can tell a slow reader (and end the stream) instead of buffering without bound.
 * With write_first the data usually goes to the socket at once and 0 is returned. */
size_t http_stream_write(struct http_req *req, const void *data, size_t len);
/* Appends several pieces as one chunk (one SSE frame = one chunk). Returns the bytes queued. */
size_t http_stream_writev(struct http_req *req, const struct str *parts, size_t nparts);
/* Ends the stream; the request is complete (access log, metrics) and must not be used again. */
void http_stream_end(struct http_req *req);
/* Cork: what is written to req from now on is gathered (copied into req->cork_buf, NULL until
 * the first cork, freed with the connection) instead of sent, until http_uncork sends all of it
 * in one write (first, when nothing is queued). For a burst of small writes (the SSE frames of
 * one upstream read) that should leave as one packet. A response or stream end uncorks itself. */
void http_cork(struct http_req *req);
void http_uncork(struct http_req *req);
/* Reason phrase of a status code. */
const char *http_status_text(int status);

/* ---- parser (exposed for tests and fuzzing) --------------------------------------------------- */

enum http_parse_status {
	HTTP_PARSE_OK,
	HTTP_PARSE_BAD_REQUEST,	     /* 400 */
	HTTP_PARSE_TOO_MANY_HEADERS, /* 431 */
	HTTP_PARSE_BAD_VERSION,	     /* 505 */
	HTTP_PARSE_NO_LENGTH,	     /* 411: chunked request bodies are not accepted */
};

/* Parses a complete request head (request line + headers, ending in an empty line) held in
 * head[0..len) into req; strings in req point into head, which must outlive req. On failure
 * *why is a static sentence for the client. */
enum http_parse_status http_parse_head(char *head, size_t len, struct http_req *req, struct arena *arena,
				       const char **why);

/* ---- routes -------------------------------------------------------------------------------- */

typedef void (*http_handler_fn)(struct http_req *req, void *arg);

enum http_route_flags {
	HTTP_ROUTE_PUBLIC = 1 << 0, /* no credentials needed (health, metrics) */
	HTTP_ROUTE_ADMIN = 1 << 1,  /* scope admin needed */
};

struct http_router;

/* The router owns its routes; free with http_router_free(). */
struct http_router *http_router_new(void);
void http_router_free(struct http_router *r);
/* Adds METHOD pattern, e.g. ("GET", "/v1/sessions/{id}/events"). Patterns are segments of
 * literals and {name} parameters. SOMA_ERR_INVALID for malformed patterns or duplicates. */
enum soma_err http_route_add(struct http_router *r, const char *method, const char *pattern, http_handler_fn handler,
			     void *arg, unsigned flags) SOMA_MUST_CHECK;

enum http_match { HTTP_MATCH_OK, HTTP_MATCH_NOT_FOUND, HTTP_MATCH_BAD_METHOD };
/* Matches req's method and path; fills req->route and req->params. On HTTP_MATCH_BAD_METHOD,
 * allow receives the permitted methods ("GET, HEAD"). */
enum http_match http_router_match(const struct http_router *r, struct http_req *req, char *allow, size_t allow_cap);
/* Makes an existing route receive its body in a temp file (req->body_fd) instead of memory,
 * up to max bytes (uploads). */
enum soma_err http_route_set_file_body(struct http_router *r, const char *method, const char *pattern,
				       size_t max) SOMA_MUST_CHECK;
size_t http_route_file_body(const struct http_route *route);
/* Lets an existing route's body in memory be up to max bytes instead of http.max_body (a chat
 * completion's base64 images); key (static) is the setting, named by the 413 beyond it. */
enum soma_err http_route_set_mem_body(struct http_router *r, const char *method, const char *pattern, size_t max,
				      const char *key) SOMA_MUST_CHECK;
/* The route's own in-memory body limit (0: http.max_body), its setting in *key. */
size_t http_route_mem_body(const struct http_route *route, const char **key);
/* How a route answers errors in its own protocol (A2A: JSON-RPC error objects): called by
 * http_respond_error(_json) for a request matched to the route, with error borrowed; returns true
 * when it answered req, false for the plain envelope. */
typedef bool (*http_error_fn)(struct http_req *req, int status, json_t *error);
enum soma_err http_route_set_error_fn(struct http_router *r, const char *method, const char *pattern,
				      http_error_fn fn) SOMA_MUST_CHECK;
/* Accessors of a matched route. */
const char *http_route_pattern(const struct http_route *route);
unsigned http_route_flags(const struct http_route *route);
void http_route_invoke(const struct http_route *route, struct http_req *req);

/* ---- pipeline (middleware) ------------------------------------------------------------------ */

enum http_mw_result { HTTP_MW_NEXT, HTTP_MW_DONE };
typedef enum http_mw_result (*http_middleware_fn)(struct http_req *req, void *arg);

struct http_pipeline;

/* Builds the standard pipeline: request id, routing, auth; then the route's handler.
 * opts come from the configuration; the router is borrowed. */
struct http_auth_opts {
	bool anonymous_allowed; /* loopback with no keys: unauthenticated requests run as default */
	const char *default_tenant;
	const char *admin_token; /* bootstrap token, or "" */
};
/* The route a request will match (without running anything), or NULL. */
const struct http_route *http_pipeline_peek_route(struct http_pipeline *p, struct http_req *req);
struct http_pipeline *http_pipeline_new(struct http_router *router, const struct http_auth_opts *auth);
void http_pipeline_free(struct http_pipeline *p);
/* Runs the middleware (request id, routing, auth) without the handler, for a request whose body
 * is not read yet: true when it may proceed, false when it was answered (401, 403, 404...). */
bool http_pipeline_authorize(struct http_pipeline *p, struct http_req *req);
/* Only the first steps (request id, routing, auth) for a request whose body is not read yet, so
 * that an unknown route or a caller without valid credentials is answered before its body is
 * buffered: true when it may proceed, false when it was answered (401, 403, 404, 405). */
bool http_pipeline_authenticate(struct http_pipeline *p, struct http_req *req);
/* Runs the pipeline on a parsed request. */
void http_pipeline_run(struct http_pipeline *p, struct http_req *req);
/* Completion hook: access log + metrics. Called by the connection once the response is queued. */
void http_pipeline_complete(struct http_req *req);
/* Sets req->request_id from a valid X-Request-Id header, else a new UUID. */
void http_request_id_assign(struct http_req *req);
/* Registers the HTTP metrics families (call once at start-up). */
void http_metrics_register(void);
/* Turns the per-request access log line on or off (log.access). */
void http_access_log_enable(bool on);

/* ---- server -------------------------------------------------------------------------------- */

struct http_server_opts {
	char host[256];	       /* listen address */
	int port;	       /* listen port */
	int io_threads;	       /* event-loop threads (>= 1) */
	size_t max_body;       /* bytes */
	size_t body_memory;    /* bytes of request bodies held in memory, all connections (0: no bound) */
	size_t max_header;     /* bytes */
	int request_timeout_s; /* whole request must arrive within this */
	int idle_timeout_s;    /* keep-alive idle limit */
	long max_connections;  /* open connections per process */
	char tmp_dir[512];     /* where file bodies are spooled */
};

struct http_server;

/* Binds the listening sockets (failing with a sentence in why when the address is in use or not
 * available) and prepares the threads. The pipeline is borrowed. */
enum soma_err http_server_new(const struct http_server_opts *opts, struct http_pipeline *pipeline,
			      struct http_server **out, char *why, size_t why_cap) SOMA_MUST_CHECK;
/* Starts the io threads. */
enum soma_err http_server_start(struct http_server *srv) SOMA_MUST_CHECK;
/* Graceful part of shutdown: stop accepting, close idle connections, let requests in flight
 * finish; waits up to grace_ms for all connections to end. Returns how many were still open. */
size_t http_server_drain(struct http_server *srv, int grace_ms);
/* Stops the io threads, closing the connections still open (handlers get on_abort); from then on
 * http_thread_post refuses with SOMA_ERR_UNAVAILABLE, and the memory stays valid for threads
 * that still hold io_thread pointers (store and pool completions). Accepts NULL. */
void http_server_stop(struct http_server *srv);
/* Stops (if needed) and frees everything; call once no other thread can post. Accepts NULL. */
void http_server_free(struct http_server *srv);
/* Open connections right now (any thread). */
size_t http_server_connections(const struct http_server *srv);

/* The event_base of an io thread, for timers of requests it owns (that thread only). */
struct event_base *http_thread_base(struct io_thread *thr);
/* Runs fn(arg) on the io thread (any thread may call). SOMA_ERR_LIMIT when its queue is full
 * (retry shortly), SOMA_ERR_UNAVAILABLE once the thread has stopped (do not retry: free what
 * the callback would have freed). */
typedef void (*http_thread_fn)(void *arg);
enum soma_err http_thread_post(struct io_thread *thr, http_thread_fn fn, void *arg) SOMA_MUST_CHECK;
/* For store and pool threads handing a result back: like http_thread_post, but waits (1 ms at a
 * time) while the queue is full. SOMA_ERR_UNAVAILABLE only once the thread has stopped; then
 * fn will never run, and the caller frees what fn would have freed. */
enum soma_err http_thread_post_wait(struct io_thread *thr, http_thread_fn fn, void *arg) SOMA_MUST_CHECK;

#endif
