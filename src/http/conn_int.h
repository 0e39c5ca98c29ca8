/*
 * conn_int.h - what conn.c (the connection's state machine and its output flow control) and
 * conn_read.c (reading a request's head and body) share: the connection object.
 *
 * Everything here runs on the connection's io thread.
 */
#ifndef SOMA_HTTP_CONN_INT_H
#define SOMA_HTTP_CONN_INT_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "core/arena.h"
#include "http/server_int.h"

enum conn_state { CONN_READ_HEAD, CONN_READ_BODY, CONN_READ_BODY_FILE, CONN_HANDLING, CONN_CLOSING };

struct http_conn {
	struct io_thread *thr;	       /* owning thread */
	struct bufferevent *bev;       /* the socket */
	struct event *timer;	       /* idle or request timeout */
	enum conn_state state;	       /* see conn.c's file comment */
	bool req_started;	       /* bytes of the current request have arrived */
	bool in_process;	       /* conn_process is on the stack */
	bool responded;		       /* the current request got its response */
	bool linger;		       /* after an early error: drain input briefly before closing */
	bool big_body;		       /* this request's body is over http.max_body (its route allows it) */
	bool lingering;		       /* write side shut; waiting for the client's EOF or the timer */
	bool paused;		       /* output over its bound: no new request until it drains */
	bool file_queued;	       /* a file response (an fd) waits in the output */
	bool read_closed;	       /* the client shut its side (EOF): finish what came, then close */
	size_t body_armed_at;	       /* file body: bytes received when its timer was last armed */
	size_t body_held;	       /* bytes this request reserved of srv->body_bytes (0: none) */
	struct arena arena;	       /* per-request memory */
	struct http_req req;	       /* the current request */
	struct http_conn *prev, *next; /* thread's list */
};

/* Gives back the bytes of the body budget the current request reserved (conn_read.c). */
void http_conn_body_release(struct http_conn *c);

/* (Re)starts the connection's timer: seconds from now. */
void http_conn_arm_timer(struct http_conn *c, int seconds);
/* Hands the parsed request to the pipeline (state HANDLING). */
void http_conn_dispatch(struct http_conn *c);
/* Answers a framing error (before the pipeline ran) and closes after it (lingering). */
void http_conn_fail(struct http_conn *c, int status, const char *code, const char *message);

/* conn_read.c: each consumes from in (avail bytes) and returns true when the request moved on
 * (dispatched, or its head read and its body expected); false to wait for more input (or after
 * answering an error with http_conn_fail). */
bool http_conn_read_head(struct http_conn *c, struct evbuffer *in, size_t avail);
bool http_conn_read_body(struct http_conn *c, struct evbuffer *in, size_t avail);
bool http_conn_read_body_file(struct http_conn *c, struct evbuffer *in, size_t avail);

#endif
