/*
 * conn_read.c - reading one request off a connection (see conn_int.h): its head (parsed,
 * routed when it has a body, authenticated before a body is accepted), then its body into the
 * arena or, for file-body routes, spooled into a nameless temp file.
 *
 * DESIGN: each reader consumes what it can from the bufferevent's input and either dispatches
 * the request (state HANDLING), moves to the body state, or answers a framing error with
 * http_conn_fail. conn.c's conn_process calls them in a loop; they never free the connection.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "http/conn_int.h"

#define BODY_PROGRESS (64 * 1024) /* file body bytes that restart the request timeout (read_body_file) */

/* Answers a spool failure (errno err): a full disk asks for free space; any other cause is named
 * (a permission, a missing directory...) and logged with its errno. */
static void spool_failed(struct http_conn *c, int err, const char *doing)
{
	if (err == ENOSPC) {
		http_conn_fail(c, 500, "spool_failed",
			       "cannot store the request body on disk; check free space under data.dir");
		return;
	}
	char msg[256];
	snprintf(msg, sizeof(msg), "cannot store the request body on disk (%s: %s); check data.dir/tmp", doing,
		 strerror(err));
	log_error("http", "spooling a request body failed under %s: %s (errno %d)", c->thr->srv->opts.tmp_dir,
		  strerror(err), err);
	http_conn_fail(c, 500, "spool_failed", msg);
}

static bool open_body_file(struct http_conn *c)
{
	c->req.body_path = arena_printf(&c->arena, "%s/body-XXXXXX", c->thr->srv->opts.tmp_dir);
	c->req.body_fd = c->req.body_path ? mkostemp(c->req.body_path, O_CLOEXEC) : -1;
	if (c->req.body_fd >= 0) {
		/* nameless from the start: nothing is left behind by a crash, and none is seen after the
		 * response (which may reach the client before the request's clean-up runs) */
		unlink(c->req.body_path);
		return true;
	}
	spool_failed(c, c->req.body_path ? errno : ENOMEM, "creating a temp file");
	return false;
}

/* Spools the body into its temp file; dispatches once all of it is there. */
bool http_conn_read_body_file(struct http_conn *c, struct evbuffer *in, size_t avail)
{
	size_t need = (size_t)c->req.content_length - c->req.body_len;
	size_t n = avail < need ? avail : need;
	while (n > 0) {
		int w = evbuffer_write_atmost(in, c->req.body_fd, (ev_ssize_t)n);
		if (w <= 0) {
			spool_failed(c, w < 0 ? errno : EIO, "writing");
			return false;
		}
		c->req.body_len += (size_t)w;
		n -= (size_t)w;
	}
	if (c->req.body_len < (size_t)c->req.content_length) {
		/* a large upload may take longer than http.request_timeout_s in all: its timer starts
		 * again each time BODY_PROGRESS more bytes came, so only a client that sends less than
		 * that per timeout gets 408 (a slow-body connection cannot be held for nothing) */
		if (c->req.body_len - c->body_armed_at >= BODY_PROGRESS) {
			c->body_armed_at = c->req.body_len;
			http_conn_arm_timer(c, c->thr->srv->opts.request_timeout_s);
		}
		return false;
	}
	lseek(c->req.body_fd, 0, SEEK_SET);
	http_conn_dispatch(c);
	return true;
}

/* Reserves the body's bytes of the process-wide budget (http.body_memory_mb): they are held in
 * the input buffer, then the arena, until the request is done. False (answered 503, the body left
 * unread) when they do not fit. */
static bool body_reserve(struct http_conn *c, size_t len)
{
	struct http_server *srv = c->thr->srv;
	size_t cap = srv->opts.body_memory;
	if (cap && len > cap) { /* it would never fit: not worth a retry */
		http_conn_fail(c, 413, "body_too_large", "the request body exceeds http.body_memory_mb");
		return false;
	}
	size_t was = atomic_fetch_add(&srv->body_bytes, len);
	c->body_held = len;
	if (!cap || was + len <= cap)
		return true;
	http_conn_body_release(c);
	http_resp_header(&c->req, "Retry-After", "1");
	http_conn_fail(
		c, 503, "server_busy",
		"too many request bodies are held in memory at once; retry shortly (or raise http.body_memory_mb)");
	return false;
}

void http_conn_body_release(struct http_conn *c)
{
	if (c->body_held)
		atomic_fetch_sub(&c->thr->srv->body_bytes, c->body_held);
	c->body_held = 0;
}

bool http_conn_read_head(struct http_conn *c, struct evbuffer *in, size_t avail)
{
	const struct http_server_opts *o = &c->thr->srv->opts;
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos < 0) {
		if (avail > o->max_header)
			http_conn_fail(c, 431, "headers_too_large",
				       "the request line and headers exceed http.max_header bytes");
		return false;
	}
	size_t head_len = (size_t)end.pos + 4;
	if (head_len > o->max_header) {
		http_conn_fail(c, 431, "headers_too_large",
			       "the request line and headers exceed http.max_header bytes");
		return false;
	}
	char *head = arena_alloc(&c->arena, head_len + 1);
	if (!head) {
		http_conn_fail(c, 500, "out_of_memory", "the server is out of memory; retry later");
		return false;
	}
	evbuffer_remove(in, head, head_len);
	head[head_len] = '\0';
	const char *why;
	switch (http_parse_head(head, head_len, &c->req, &c->arena, &why)) {
	case HTTP_PARSE_OK:
		break;
	case HTTP_PARSE_TOO_MANY_HEADERS:
		http_conn_fail(c, 431, "headers_too_large", why);
		return false;
	case HTTP_PARSE_BAD_VERSION:
		http_conn_fail(c, 505, "http_version_not_supported", why);
		return false;
	case HTTP_PARSE_NO_LENGTH:
		http_conn_fail(c, 411, "length_required", why);
		return false;
	case HTTP_PARSE_BAD_REQUEST:
		http_conn_fail(c, 400, "bad_request", why);
		return false;
	}
	/* only a request with a body needs its route now (for its body limit and spooling); the
	 * others are routed once, by the pipeline */
	const struct http_route *rt =
		c->req.content_length > 0 ? http_pipeline_peek_route(c->thr->srv->pipeline, &c->req) : NULL;
	size_t file_max = rt ? http_route_file_body(rt) : 0;
	const char *mem_key = NULL;
	size_t mem_max = rt ? http_route_mem_body(rt, &mem_key) : 0;
	if (!mem_max)
		mem_max = o->max_body;
	if (c->req.content_length > 0 && (size_t)c->req.content_length > (file_max ? file_max : mem_max)) {
		char too_big[160] = "the upload exceeds uploads.max_mb x uploads.max_files";
		if (!file_max)
			snprintf(too_big, sizeof(too_big), "the request body exceeds %s (%zu bytes)",
				 mem_key ? mem_key : "http.max_body", mem_max);
		http_conn_fail(c, 413, "body_too_large", too_big);
		return false;
	}
	if (c->req.content_length > 0) {
		/* a body costs memory (up to http.max_body) or disk: only a caller with valid credentials
		 * for an existing route may send one (a spooled upload also passes limits and policy).
		 * If this answers, the body stays unread, so the connection closes (lingering) after */
		c->req.close_after = true;
		c->linger = true;
		struct http_pipeline *p = c->thr->srv->pipeline;
		if (!(file_max ? http_pipeline_authorize(p, &c->req) : http_pipeline_authenticate(p, &c->req)))
			return false;
		c->req.close_after = false;
		c->linger = false;
	}
	if (!file_max && c->req.content_length > 0 && (size_t)c->req.content_length > o->max_body) {
		/* this route's larger body, for a caller with valid credentials: the arena and the read watermark grow
		 * for this request (reset_request puts them back) */
		c->arena.limit = o->max_header + (size_t)c->req.content_length + 65536;
		bufferevent_setwatermark(c->bev, EV_READ, 0, o->max_header + (size_t)c->req.content_length + 1);
		c->big_body = true;
	}
	if (c->req.content_length > 0) {
		if (file_max ? !open_body_file(c) : !body_reserve(c, (size_t)c->req.content_length))
			return false;
		if (c->req.expect_continue)
			bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		c->state = file_max ? CONN_READ_BODY_FILE : CONN_READ_BODY;
		return true;
	}
	http_conn_dispatch(c);
	return true;
}

bool http_conn_read_body(struct http_conn *c, struct evbuffer *in, size_t avail)
{
	size_t need = (size_t)c->req.content_length;
	if (avail < need)
		return false;
	char *body = arena_alloc(&c->arena, need + 1);
	if (!body) {
		http_conn_fail(c, 500, "out_of_memory", "the server is out of memory; retry later");
		return false;
	}
	evbuffer_remove(in, body, need);
	body[need] = '\0';
	c->req.body = body;
	c->req.body_len = need;
	http_conn_dispatch(c);
	return true;
}

bool http_client_gone(struct http_req *req)
{
	if (req->client_eof)
		return true;
	char byte;
	if (req->out_fd >= 0 && recv(req->out_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
		req->client_eof = true; /* an orderly EOF (0); data, EAGAIN or an error: not known gone */
	return req->client_eof;
}
