/*
 * conn.c - one client connection: the state machine that reads a request, runs the pipeline and
 * writes the response, then starts over (keep-alive, pipelining) or closes.
 *
 * States: READ_HEAD -> (READ_BODY) -> HANDLING -> READ_HEAD ... or CLOSING (flush, then free).
 * One timer per connection: while between requests it is the idle timeout (close quietly);
 * once a request's first byte arrives it is the request timeout (answer 408, close). While a
 * handler owns the request there is no timer. Everything here runs on the connection's io thread.
 *
 * Output flow control: a client may pipeline requests and never read the responses. Before a
 * new request is started, a connection whose output holds more than OUT_HIGH bytes, or any
 * file response (each holds an fd until sent), pauses: reading stops (EV_READ off) and
 * nothing more is parsed until the output has drained (on_written), so memory and fds per
 * connection stay bounded; a client that never reads meets the write timeout. A response in
 * progress (a stream, an asynchronous handler) is not paused: streams bound their own buffer.
 *
 * EOF from the client (a half-close, or it went away: the next write tells) does not drop the
 * work it asked for: reading stops, the current request and the complete ones already read
 * are answered, the output is flushed, then the connection closes. An open stream ends at once
 * (it would never finish by itself), and so does a handler that asked for it (abort_on_eof: the
 * LLM proxy, whose call or wait-list place serves the client alone). Otherwise only an error
 * (or the write timeout) frees at once. A request so left unanswered is logged as 499.
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
#include "core/metrics.h"
#include "http/conn_int.h"

#define LINGER_S 2 /* seconds to drain a client's input after an early error before closing */
/* Bytes the kernel may hold unsent per socket. Responses are written to the socket first
 * (response.c), so without a bound a slow reader's frames would pile up in the kernel's send
 * buffer (megabytes on loopback) before anything counts against stream.max_buffer. */
#define NOTSENT_LOWAT (64 * 1024)
/* Output a connection may hold before it stops taking new requests (see the file comment). */
#define OUT_HIGH (256 * 1024)

static void conn_process(struct http_conn *c);

void http_stream_count(struct http_req *req, struct metric_series *gauge)
{
	if (!gauge || req->open_gauge)
		return;
	metric_add(gauge, 1);
	req->open_gauge = gauge;
}

void http_stream_uncount(struct http_req *req)
{
	if (req->open_gauge)
		metric_add(req->open_gauge, -1);
	req->open_gauge = NULL;
}

/* A handler still holding the request (async or streaming) is told, once, that it is gone;
 * then the request's on_end runs (once, if not run by its response). */
static void abort_handler(struct http_conn *c)
{
	if (c->state != CONN_HANDLING)
		return;
	void (*abort_fn)(struct http_req *) = c->req.on_abort;
	void (*end_fn)(struct http_req *) = NULL;
	c->req.on_abort = NULL;
	if (abort_fn)
		abort_fn(&c->req);
	end_fn = c->req.on_end;
	c->req.on_end = NULL;
	http_stream_uncount(&c->req);
	if (end_fn)
		end_fn(&c->req);
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
	http_conn_body_release(c);
	free(c);
	atomic_fetch_sub(&thr->srv->nconns, 1);
}

/* Frees a connection the client left (EOF, reset, or it stopped reading). A request it left
 * unanswered still writes its access line and metrics, as 499 (nginx's "client closed request"),
 * once its handler has been told (on_abort): without it a call the provider may have served would
 * leave no trace. */
static void conn_free_client_left(struct http_conn *c)
{
	bool unanswered = c->state == CONN_HANDLING && !c->responded;
	abort_handler(c);
	if (unanswered && c->state == CONN_HANDLING && !c->responded) { /* (on_abort did not answer) */
		c->req.status = 499;
		c->responded = true;
		http_pipeline_complete(&c->req);
	}
	conn_free(c);
}

void http_conn_arm_timer(struct http_conn *c, int seconds)
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

/* True when the output is over its bound: the connection then pauses before its next request. */
static bool output_full(struct http_conn *c)
{
	size_t queued = evbuffer_get_length(bufferevent_get_output(c->bev));
	return queued > OUT_HIGH || (c->file_queued && queued > 0);
}

static void pause_reading(struct http_conn *c)
{
	c->paused = true;
	bufferevent_disable(c->bev, EV_READ);
	evtimer_del(c->timer); /* not idle: it waits for the client to read (the write timeout stays) */
}

/* The output drained: read and handle what the client pipelined meanwhile. May free c. */
static void resume(struct http_conn *c)
{
	c->paused = false;
	if (!c->read_closed)
		bufferevent_enable(c->bev, EV_READ);
	conn_process(c);
}

static void on_written(struct bufferevent *bev, void *arg)
{
	struct http_conn *c = arg;
	(void)bev;
	c->file_queued = false; /* the output is empty */
	if (c->state == CONN_CLOSING && !c->lingering)
		finish_closing(c);
	else if (c->state == CONN_HANDLING && c->req.streaming && c->req.on_drain)
		c->req.on_drain(&c->req); /* may end the stream: c is not touched after this */
	else if (c->paused)
		resume(c);
}

/* Marks the connection for closing once its output is flushed (on_written frees it then).
 * Never frees: the caller frees at once when nothing is queued (see close_now_if_flushed). */
static void conn_close_after_flush(struct http_conn *c)
{
	abort_handler(c);
	if (c->body_held && !c->req.body) { /* a body cut short (408, 503...) will never be read: its
					     * bytes so far and its share of http.body_memory_mb go now */
		struct evbuffer *in = bufferevent_get_input(c->bev);
		evbuffer_drain(in, evbuffer_get_length(in));
		http_conn_body_release(c);
	}
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
	http_conn_body_release(c); /* the arena holding the body is reset below */
	c->body_armed_at = 0;
	arena_reset(&c->arena);
	if (c->big_body) { /* a route's larger body (conn_read.c): back to http.max_body */
		const struct http_server_opts *o = &c->thr->srv->opts;
		c->arena.limit = o->max_header + o->max_body + 65536;
		bufferevent_setwatermark(c->bev, EV_READ, 0, o->max_header + o->max_body + 1);
		c->big_body = false;
	}
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
	c->req.client_eof = c->read_closed; /* a request read after the client's EOF */
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
	if (req->out_file)
		c->file_queued = evbuffer_get_length(bufferevent_get_output(c->bev)) > 0;
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
void http_conn_fail(struct http_conn *c, int status, const char *code, const char *message)
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

void http_conn_dispatch(struct http_conn *c)
{
	evtimer_del(c->timer);
	c->state = CONN_HANDLING;
	c->req.on_response = on_response;
	if (c->thr->draining)
		c->req.close_after = true;
	http_pipeline_run(c->thr->srv->pipeline, &c->req);
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
			if (c->thr->draining || c->read_closed) {
				conn_close_after_flush(c);
				break;
			}
			http_conn_arm_timer(c, o->idle_timeout_s);
			break;
		}
		bool reading =
			c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY || c->state == CONN_READ_BODY_FILE;
		if (reading && !c->req_started && output_full(c)) {
			pause_reading(c); /* on_written resumes once the client has read its responses */
			break;
		}
		if (reading && !c->req_started) {
			c->req_started = true;
			c->req.start_ns = clock_mono_ns();
			http_conn_arm_timer(c, o->request_timeout_s);
		}
		if (c->state == CONN_READ_HEAD)
			progress = http_conn_read_head(c, in, avail);
		else if (c->state == CONN_READ_BODY)
			progress = http_conn_read_body(c, in, avail);
		else if (c->state == CONN_READ_BODY_FILE)
			progress = http_conn_read_body_file(c, in, avail);
		/* after a synchronous response the state is READ_HEAD again (or CLOSING) */
		progress = progress && (c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY ||
					c->state == CONN_READ_BODY_FILE);
	}
	c->in_process = false;
	bool reading = c->state == CONN_READ_HEAD || c->state == CONN_READ_BODY || c->state == CONN_READ_BODY_FILE;
	if (reading && c->read_closed && !c->paused)
		conn_close_after_flush(c); /* what is left of the input can never complete */
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
	/* a half-close comes from reading; an EOF on the write side (a write that wrote nothing, as
	 * sendfile of a file that shrank) leaves a connection that can neither read nor write */
	bool eof =
		(what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT));
	if (!eof || (c->state == CONN_HANDLING && (c->req.streaming || c->req.abort_on_eof))) {
		conn_free_client_left(
			c); /* an error, the write timeout, a stream's reader or a paid call's client gone */
		return;
	}
	c->read_closed = true; /* half-closed (or gone): still deliver what it asked for */
	c->req.client_eof = true;
	c->linger = false; /* it closed its side already: nothing to wait for */
	bufferevent_disable(c->bev, EV_READ);
	if (c->state == CONN_HANDLING || c->paused)
		return; /* on_response, or on_written, goes on with the buffered requests */
	if (c->state == CONN_CLOSING)
		close_now_if_flushed(c);
	else
		conn_process(c); /* complete requests still in the input, then close (may free c) */
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
	http_conn_fail(c, 408, "request_timeout", "the request did not arrive within http.request_timeout_s seconds");
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
	http_conn_arm_timer(c, o->idle_timeout_s);
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
