/*
 * conn.c - one client connection: the state machine that reads a request, runs the pipeline and
 * writes the response, then starts over (keep-alive, pipelining) or closes.
 *
 * States: READ_HEAD -> (READ_BODY) -> HANDLING -> READ_HEAD ... or CLOSING (flush, then free).
 * One timer per connection: while between requests it is the idle timeout (close quietly);
 * once a request's first byte arrives it is the request timeout (answer 408, close). While a
 * handler owns the request there is no timer. Everything here runs on the connection's io thread.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ids.h"
#include "http/server_int.h"

#define LINGER_S      2		  /* seconds to drain a client's input after an early error before closing */
#define BODY_PROGRESS (64 * 1024) /* file body bytes that restart the request timeout (read_body_file) */
/* Bytes the kernel may hold unsent per socket. Responses are written to the socket first
 * (response.c), so without a bound a slow reader's frames would pile up in the kernel's send
 * buffer (megabytes on loopback) before anything counts against stream.max_buffer. */
#define NOTSENT_LOWAT (64 * 1024)

enum conn_state { CONN_READ_HEAD, CONN_READ_BODY, CONN_READ_BODY_FILE, CONN_HANDLING, CONN_CLOSING };

struct http_conn {
	struct io_thread *thr;	       /* owning thread */
	struct bufferevent *bev;       /* the socket */
	struct event *timer;	       /* idle or request timeout */
	enum conn_state state;	       /* see the file comment */
	bool req_started;	       /* bytes of the current request have arrived */
	bool in_process;	       /* conn_process is on the stack */
	bool responded;		       /* the current request got its response */
	bool linger;		       /* after an early error: drain input briefly before closing */
	bool lingering;		       /* write side shut; waiting for the client's EOF or the timer */
	size_t body_armed_at;	       /* file body: bytes received when its timer was last armed */
	struct arena arena;	       /* per-request memory */
	struct http_req req;	       /* the current request */
	struct http_conn *prev, *next; /* thread's list */
};

static void conn_process(struct http_conn *c);

/* A handler still holding the request (async or streaming) is told, once, that it is gone. */
static void abort_handler(struct http_conn *c)
{
	if (c->state != CONN_HANDLING || !c->req.on_abort)
		return;
	void (*abort_fn)(struct http_req *) = c->req.on_abort;
	c->req.on_abort = NULL;
	abort_fn(&c->req);
}

/* Closes the temp file of a file body (the handler dup'd the fd if it still needs it); its name
 * was removed when it was made. */
static void drop_body_file(struct http_conn *c)
{
	if (c->req.body_fd < 0)
		return;
	close(c->req.body_fd);
	c->req.body_fd = -1;
}

static void conn_free(struct http_conn *c)
{
	struct io_thread *thr = c->thr;
	abort_handler(c);
	drop_body_file(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		thr->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	event_free(c->timer);
	if (c->req.cork_buf)
		evbuffer_free(c->req.cork_buf);
	bufferevent_free(c->bev);
	arena_deinit(&c->arena);
	free(c);
	atomic_fetch_sub(&thr->srv->nconns, 1);
}

static void arm_timer(struct http_conn *c, int seconds)
{
	struct timeval tv = {seconds, 0};
	evtimer_add(c->timer, &tv);
}

/* Once the last response is out: free the connection, or, after an early error (413 before
 * the body, 431, 408...), shut our side and keep reading and discarding for a moment so the
 * client - likely still sending - reads the response instead of a connection reset. */
static void finish_closing(struct http_conn *c)
{
	if (!c->linger) {
		conn_free(c);
		return;
	}
	c->lingering = true;
	shutdown(bufferevent_getfd(c->bev), SHUT_WR);
	struct timeval tv = {LINGER_S, 0};
	evtimer_add(c->timer, &tv);
}

static void on_written(struct bufferevent *bev, void *arg)
{
	struct http_conn *c = arg;
	(void)bev;
	if (c->state == CONN_CLOSING && !c->lingering)
		finish_closing(c);
	else if (c->state == CONN_HANDLING && c->req.streaming && c->req.on_drain)
		c->req.on_drain(&c->req); /* may end the stream: c is not touched after this */
}

/* Marks the connection for closing once its output is flushed (on_written frees it then).
 * Never frees: the caller frees at once when nothing is queued (see close_now_if_flushed). */
static void conn_close_after_flush(struct http_conn *c)
{
	abort_handler(c);
	c->state = CONN_CLOSING;
	evtimer_del(c->timer);
	if (!c->linger)
		bufferevent_disable(c->bev, EV_READ);
}

/* Frees a closing connection whose output is already empty; true when it did. */
static bool close_now_if_flushed(struct http_conn *c)
{
	if (c->state != CONN_CLOSING || c->lingering || evbuffer_get_length(bufferevent_get_output(c->bev)) != 0)
		return false;
	finish_closing(c);
	return true;
}

static void on_response(struct http_req *req);

static void reset_request(struct http_conn *c)
{
	drop_body_file(c);
	c->body_armed_at = 0;
	arena_reset(&c->arena);
	struct evbuffer *cork = c->req.cork_buf; /* empty: a response uncorks (response.c) */
	memset(&c->req, 0, sizeof(c->req));
	c->req.cork_buf = cork;
	c->req.body_fd = -1;
	c->req.arena = &c->arena;
	c->req.out = bufferevent_get_output(c->bev);
	c->req.out_fd = bufferevent_getfd(c->bev);
	c->req.write_first = true; /* see response.c: on_written only fires for queued output */
	c->req.owner = c;
	c->req.thread = c->thr;
	c->req.on_response = on_response;
	c->req.content_length = -1;
	c->req.keep_alive = true;
	c->req_started = false;
	c->responded = false;
	c->linger = false;
	c->state = CONN_READ_HEAD;
}

static void on_response(struct http_req *req)
{
	struct http_conn *c = req->owner;
	http_pipeline_complete(req);
	c->responded = true;
	if (req->close_after || !req->keep_alive || c->thr->draining) {
		conn_close_after_flush(c);
		if (!c->in_process)
			close_now_if_flushed(c);
		return;
	}
	reset_request(c);
	if (!c->in_process)
		conn_process(c); /* an asynchronous response: pick up pipelined input now */
}

/* Answers a framing error (before the pipeline ran) and closes. */
static void fail(struct http_conn *c, int status, const char *code, const char *message)
{
	if (!c->req.request_id[0])
		http_request_id_assign(&c->req); /* the client's X-Request-Id when the head parsed */
	if (!c->req.start_ns)
		c->req.start_ns = clock_mono_ns();
	c->req.close_after = true;
	c->linger = true;
	c->state = CONN_HANDLING;
	evtimer_del(c->timer);
	http_respond_error(&c->req, status, code, "%s", message);
}

static void dispatch(struct http_conn *c)
{
	evtimer_del(c->timer);
	c->state = CONN_HANDLING;
	c->req.on_response = on_response;
	if (c->thr->draining)
		c->req.close_after = true;
	http_pipeline_run(c->thr->srv->pipeline, &c->req);
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
	fail(c, 500, "spool_failed", "cannot store the request body on disk; check free space under data.dir");
	return false;
}

/* Spools the body into its temp file; dispatches once all of it is there. */
static bool read_body_file(struct http_conn *c, struct evbuffer *in, size_t avail)
{
	size_t need = (size_t)c->req.content_length - c->req.body_len;
	size_t n = avail < need ? avail : need;
	while (n > 0) {
		int w = evbuffer_write_atmost(in, c->req.body_fd, (ev_ssize_t)n);
		if (w <= 0) {
			fail(c, 500, "spool_failed",
			     "cannot store the request body on disk; check free space under data.dir");
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
			arm_timer(c, c->thr->srv->opts.request_timeout_s);
		}
		return false;
	}
	lseek(c->req.body_fd, 0, SEEK_SET);
	dispatch(c);
	return true;
}

static bool read_head(struct http_conn *c, struct evbuffer *in, size_t avail)
{
	const struct http_server_opts *o = &c->thr->srv->opts;
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos < 0) {
		if (avail > o->max_header)
			fail(c, 431, "headers_too_large", "the request line and headers exceed http.max_header bytes");
		return false;
	}
	size_t head_len = (size_t)end.pos + 4;
	if (head_len > o->max_header) {
		fail(c, 431, "headers_too_large", "the request line and headers exceed http.max_header bytes");
		return false;
	}
	char *head = arena_alloc(&c->arena, head_len + 1);
	if (!head) {
		fail(c, 500, "out_of_memory", "the server is out of memory; retry later");
		return false;
	}
	evbuffer_remove(in, head, head_len);
	head[head_len] = '\0';
	const char *why;
	switch (http_parse_head(head, head_len, &c->req, &c->arena, &why)) {
	case HTTP_PARSE_OK:
		break;
	case HTTP_PARSE_TOO_MANY_HEADERS:
		fail(c, 431, "headers_too_large", why);
		return false;
	case HTTP_PARSE_BAD_VERSION:
		fail(c, 505, "http_version_not_supported", why);
		return false;
	case HTTP_PARSE_NO_LENGTH:
		fail(c, 411, "length_required", why);
		return false;
	case HTTP_PARSE_BAD_REQUEST:
		fail(c, 400, "bad_request", why);
		return false;
	}
	/* only a request with a body needs its route now (for its body limit and spooling); the
	 * others are routed once, by the pipeline */
	const struct http_route *rt =
		c->req.content_length > 0 ? http_pipeline_peek_route(c->thr->srv->pipeline, &c->req) : NULL;
	size_t file_max = rt ? http_route_file_body(rt) : 0;
	if (c->req.content_length > 0 && (size_t)c->req.content_length > (file_max ? file_max : o->max_body)) {
		fail(c, 413, "body_too_large",
		     file_max ? "the upload exceeds uploads.max_mb x uploads.max_files"
			      : "the request body exceeds http.max_body bytes");
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
	if (c->req.content_length > 0) {
		if (file_max && !open_body_file(c))
			return false;
		if (c->req.expect_continue)
			bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		c->state = file_max ? CONN_READ_BODY_FILE : CONN_READ_BODY;
		return true;
	}
	dispatch(c);
	return true;
}

static bool read_body(struct http_conn *c, struct evbuffer *in, size_t avail)
{
	size_t need = (size_t)c->req.content_length;
	if (avail < need)
		return false;
	char *body = arena_alloc(&c->arena, need + 1);
	if (!body) {
		fail(c, 500, "out_of_memory", "the server is out of memory; retry later");
		return false;
	}
	evbuffer_remove(in, body, need);
	body[need] = '\0';
	c->req.body = body;
	c->req.body_len = need;
	dispatch(c);
	return true;
}

/* Reads and handles as many complete requests as the input holds. */
static void conn_process(struct http_conn *c)
{
	const struct http_server_opts *o = &c->thr->srv->opts;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	c->in_process = true;
	bool progress = true;
	while (progress) {
		size_t avail = evbuffer_get_length(in);
		progress = false;
		if (c->state == CONN_READ_HEAD && avail == 0) {
			if (c->thr->draining) {
				conn_close_after_flush(c);
				break;
			}
			arm_timer(c, o->idle_timeout_s);
			break;
		}
		bool reading =
			c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY || c->state == CONN_READ_BODY_FILE;
		if (reading && !c->req_started) {
			c->req_started = true;
			c->req.start_ns = clock_mono_ns();
			arm_timer(c, o->request_timeout_s);
		}
		if (c->state == CONN_READ_HEAD)
			progress = read_head(c, in, avail);
		else if (c->state == CONN_READ_BODY)
			progress = read_body(c, in, avail);
		else if (c->state == CONN_READ_BODY_FILE)
			progress = read_body_file(c, in, avail);
		/* after a synchronous response the state is READ_HEAD again (or CLOSING) */
		progress = progress && (c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY ||
					c->state == CONN_READ_BODY_FILE);
	}
	c->in_process = false;
	close_now_if_flushed(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct http_conn *c = arg;
	if (c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY || c->state == CONN_READ_BODY_FILE)
		conn_process(c);
	else if (c->state == CONN_CLOSING) /* lingering: discard what the client still sends */
		evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct http_conn *c = arg;
	if (c->lingering) {
		conn_free(c); /* the client saw our close (EOF) or went away */
		return;
	}
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
		c->linger = false;	   /* it closed its side already: nothing to wait for */
		conn_close_after_flush(c); /* client half-closed: still deliver what it asked for */
		return;
	}
	conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct http_conn *c = arg;
	if (c->lingering) {
		conn_free(c);
		return;
	}
	if (c->state == CONN_HANDLING || c->state == CONN_CLOSING)
		return;
	if (!c->req_started) {
		conn_close_after_flush(c); /* idle keep-alive connection */
		close_now_if_flushed(c);
		return;
	}
	fail(c, 408, "request_timeout", "the request did not arrive within http.request_timeout_s seconds");
}

void http_conn_accept(struct io_thread *thr, int fd)
{
	const struct http_server_opts *o = &thr->srv->opts;
	if (thr->draining || atomic_load(&thr->srv->nconns) >= o->max_connections) {
		close(fd);
		return;
	}
	struct http_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	int one = 1, lowat = NOTSENT_LOWAT;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
	c->thr = thr;
	c->bev = bufferevent_socket_new(thr->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(thr->base, on_timer, c);
	if (!c->bev || !c->timer) {
		if (c->bev)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer)
			event_free(c->timer);
		free(c);
		return;
	}
	atomic_fetch_add(&thr->srv->nconns, 1);
	c->next = thr->conns;
	if (thr->conns)
		thr->conns->prev = c;
	thr->conns = c;
	/* 1 KB chunks: a stream keeps its request (and so this chunk) for as long as it is open */
	arena_init(&c->arena, 1024, o->max_header + o->max_body + 65536);
	c->req.body_fd = -1; /* before reset_request, which closes a spool file it finds */
	reset_request(c);
	struct timeval wtv = {o->request_timeout_s, 0};
	bufferevent_set_timeouts(c->bev, NULL, &wtv);
	bufferevent_setwatermark(c->bev, EV_READ, 0, o->max_header + o->max_body + 1);
	bufferevent_setcb(c->bev, on_read, on_written, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	arm_timer(c, o->idle_timeout_s);
}

void http_conn_close_idle(struct io_thread *thr)
{
	struct http_conn *c = thr->conns;
	while (c) {
		struct http_conn *next = c->next;
		bool idle = c->state == CONN_READ_HEAD && !c->req_started &&
			    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
		if (idle) {
			conn_close_after_flush(c);
			close_now_if_flushed(c);
		} else if (c->state == CONN_HANDLING && c->req.streaming) {
			/* streams never end by themselves: end them now; clients resume elsewhere */
			conn_free(c);
		}
		c = next;
	}
}

void http_conn_close_all(struct io_thread *thr)
{
	while (thr->conns)
		conn_free(thr->conns);
}
