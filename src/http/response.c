/*
 * response.c - request accessors and response writing (see http.h).
 *
 * DESIGN: a response is formatted into one contiguous block (status line, headers, body) and
 * appended to req->out with a single evbuffer_add, then req->on_response tells the owner
 * (the connection, or a test harness) that it is queued. Heads are written by head.c.
 *
 * Write first: when req->write_first is set and nothing is queued in req->out, a response or
 * stream chunk is sent to the socket at once (one sendmsg, non-blocking, no SIGPIPE) and only
 * what the socket did not take is appended to req->out. The common case then costs one syscall
 * and no change of the bufferevent's write interest (two epoll_ctl calls and an epoll_wait
 * per frame otherwise). Order is kept because nothing is sent directly while bytes are queued.
 * A failed send (EPIPE, ECONNRESET...) queues the bytes instead: the bufferevent's own write
 * then meets the same error and the connection closes through its usual error path.
 *
 * Cork: between http_cork and http_uncork every write is copied into req->cork_buf (the socket
 * and req->out untouched: appending to req->out would turn on the bufferevent's write interest,
 * an epoll_ctl); http_uncork then sends the whole burst as above, in one sendmsg, so a proxy's
 * frames of one upstream read leave as one packet without waiting for the loop's next turn.
 * A response or the end of a stream uncorks before on_response (the owner may reset or free the
 * connection then), so nothing corked outlives its request.
 *
 * Errors: http_respond_error(_json) ask the matched route's renderer first (a route that speaks
 * its own protocol, like A2A's JSON-RPC, answers the shared code's refusals in it), else write
 * our envelope. A response or a stream's end runs the request's on_end once, before on_response
 * (conn.c runs it for a request the client left).
 */
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/json_out.h"
#include "core/log.h"
#include "http/head.h"
#include "http/http.h"
#include "http/router_int.h"

struct str http_req_header(const struct http_req *req, const char *name)
{
	for (size_t i = 0; i < req->nheaders; i++) {
		if (str_ieq_cstr(req->headers[i].name, name))
			return req->headers[i].value;
	}
	return STR_NULL;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s into the arena ('+' is a space in queries only). "%00" stays as it is: callers
 * use the value as a C string, and an id cut at a NUL would name another resource. */
static struct str decode(struct arena *a, struct str s, bool plus_is_space)
{
	char *out = arena_alloc(a, s.len + 1);
	if (!out)
		return STR_NULL;
	size_t o = 0;
	for (size_t i = 0; i < s.len; i++) {
		int hi, lo;
		if (s.p[i] == '%' && i + 2 < s.len && (hi = hexval(s.p[i + 1])) >= 0 &&
		    (lo = hexval(s.p[i + 2])) >= 0 && (hi | lo) != 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = (plus_is_space && s.p[i] == '+') ? ' ' : s.p[i];
		}
	}
	out[o] = '\0';
	return (struct str){out, o};
}

struct str http_req_param(const struct http_req *req, const char *name)
{
	if (!req->route)
		return STR_NULL;
	int idx = http_route_param_index(req->route, name);
	if (idx < 0)
		return STR_NULL;
	return decode(req->arena, req->params[idx], false);
}

bool http_req_query(const struct http_req *req, const char *name, struct str *out)
{
	size_t n = strlen(name);
	const char *p = req->query.p, *end = req->query.p + req->query.len;
	while (p && p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		const char *kend = eq ? eq : stop;
		if ((size_t)(kend - p) == n && memcmp(p, name, n) == 0) {
			struct str raw = eq ? (struct str){eq + 1, (size_t)(stop - eq - 1)} : (struct str){stop, 0};
			*out = decode(req->arena, raw, true);
			return out->p != NULL;
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

void http_resp_header(struct http_req *req, const char *name, const char *value)
{
	if (req->nresp_headers >= HTTP_MAX_RESP_HEADERS)
		return;
	const char *n = arena_strndup(req->arena, name, strlen(name));
	const char *v = arena_strndup(req->arena, value, strlen(value));
	if (!n || !v)
		return;
	req->resp_headers[req->nresp_headers][0] = n;
	req->resp_headers[req->nresp_headers][1] = v;
	req->nresp_headers++;
}

#define OUT_MAX_IOV 16 /* pieces one output call sends at most (chunk head + 14 parts + tail) */

/* Sends iov[0..n) to the client: directly while nothing is queued (see the file comment), the
 * rest appended to req->out. Does not take ownership of the pieces (they are copied or sent). */
static void out_add(struct http_req *req, const struct iovec *iov, size_t n)
{
	size_t sent = 0;
	if (req->corked) { /* the pieces copied into one reserved extent: one buffer operation, not n */
		size_t total = 0, at = 0;
		for (size_t i = 0; i < n; i++)
			total += iov[i].iov_len;
		struct evbuffer_iovec space;
		if (evbuffer_reserve_space(req->cork_buf, (ev_ssize_t)total, &space, 1) == 1 &&
		    space.iov_len >= total) {
			for (size_t i = 0; i < n; i++) {
				memcpy((char *)space.iov_base + at, iov[i].iov_base, iov[i].iov_len);
				at += iov[i].iov_len;
			}
			space.iov_len = total;
			if (evbuffer_commit_space(req->cork_buf, &space, 1) == 0)
				return;
		}
		for (size_t i = 0; i < n; i++) /* could not reserve (out of memory): one by one */
			evbuffer_add(req->cork_buf, iov[i].iov_base, iov[i].iov_len);
		return;
	}
	if (req->write_first && evbuffer_get_length(req->out) == 0) {
		struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
		ssize_t w = sendmsg(req->out_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		sent = w > 0 ? (size_t)w : 0; /* errors: queue it all, the bufferevent reports them */
	}
	for (size_t i = 0; i < n; i++) {
		if (sent >= iov[i].iov_len) {
			sent -= iov[i].iov_len;
			continue;
		}
		evbuffer_add(req->out, (const char *)iov[i].iov_base + sent, iov[i].iov_len - sent);
		sent = 0;
	}
}

/* The request is over (answered, or its stream ended): its on_end runs once. */
static void end_hook(struct http_req *req)
{
	void (*fn)(struct http_req *) = req->on_end;
	req->on_end = NULL;
	http_stream_uncount(req);
	if (fn)
		fn(req);
}

static void out_add1(struct http_req *req, const void *data, size_t len)
{
	struct iovec iov = {(void *)data, len};
	out_add(req, &iov, 1);
}

/* Bytes written but not yet handed to the socket (queued, or corked). */
static size_t pending(const struct http_req *req)
{
	return evbuffer_get_length(req->out) + (req->corked ? evbuffer_get_length(req->cork_buf) : 0);
}

void http_cork(struct http_req *req)
{
	if (req->corked)
		return;
	if (!req->cork_buf)
		req->cork_buf = evbuffer_new();
	req->corked = req->cork_buf != NULL; /* out of memory: writes go out one by one as before */
}

void http_uncork(struct http_req *req)
{
	if (!req->corked)
		return;
	req->corked = false;
	struct evbuffer *b = req->cork_buf;
	if (evbuffer_get_length(b) == 0)
		return;
	if (req->write_first && evbuffer_get_length(req->out) == 0) {
		struct evbuffer_iovec v[OUT_MAX_IOV];
		struct iovec iov[OUT_MAX_IOV];
		int n = evbuffer_peek(b, -1, NULL, v, OUT_MAX_IOV);
		n = n < OUT_MAX_IOV ? n : OUT_MAX_IOV;
		for (int i = 0; i < n; i++)
			iov[i] = (struct iovec){v[i].iov_base, v[i].iov_len};
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(req->out_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) /* errors: queue it all, the bufferevent reports them (see the file comment) */
			evbuffer_drain(b, (size_t)w);
	}
	if (evbuffer_get_length(b))
		evbuffer_add_buffer(req->out, b); /* moves the chains, in order */
}

/* Appends the handler's extra headers and the blank line that ends the head to hdr[0..used);
 * returns the new length. Headers that do not fit are dropped (the head stays well-formed). */
/* Writes the whole response: headers, then the body from memory or, when fd >= 0, from the
 * file (by reference: evbuffer_add_file uses sendfile). Takes ownership of fd. */
static void respond(struct http_req *req, int status, const char *content_type, const void *body, size_t len, int fd)
{
	req->on_abort = NULL;
	if (req->status) {
		log_error("http", "response sent twice for request %s (programming error)", req->request_id);
		if (fd >= 0)
			close(fd);
		return;
	}
	http_uncork(req); /* what was corked goes first; the file below is queued by reference */
	req->status = status;
	req->resp_body_len = len;
	bool head = str_eq_cstr(req->method, "HEAD");
	char hdr[2048];
	struct http_head h = {hdr, sizeof(hdr), 0};
	http_head_start(&h, status, content_type ? content_type : "text/plain");
	http_head_cstr(&h, "Content-Length: ");
	http_head_uint(&h, len);
	http_head_cstr(&h, "\r\nX-Request-Id: ");
	http_head_cstr(&h, req->request_id);
	http_head_put(&h, "\r\n", 2);
	if (req->close_after || !req->keep_alive)
		http_head_cstr(&h, "Connection: close\r\n");
	else if (req->minor_version == 0) /* HTTP/1.0 closes unless the response says otherwise */
		http_head_cstr(&h, "Connection: keep-alive\r\n");
	size_t used = http_head_end(req, &h);
	if (fd >= 0) {
		out_add1(req, hdr, used);
		if (!head && len && evbuffer_add_file(req->out, fd, 0, (ev_off_t)len) == 0) {
			fd = -1;	      /* the evbuffer owns and closes it */
			req->out_file = true; /* an fd held until sent: the owner bounds these (conn.c) */
		}
		if (fd >= 0)
			close(fd);
	} else if (!head && len <= sizeof(hdr) - used) {
		if (len)
			memcpy(hdr + used, body, len);
		out_add1(req, hdr, used + len);
	} else {
		struct iovec iov[2] = {{hdr, used}, {(void *)body, !head ? len : 0}};
		out_add(req, iov, 2);
	}
	end_hook(req);
	if (req->on_response)
		req->on_response(req);
}

void http_respond(struct http_req *req, int status, const char *content_type, const void *body, size_t len)
{
	respond(req, status, content_type, body, len, -1);
}

void http_respond_file(struct http_req *req, int status, const char *content_type, int fd, size_t len)
{
	respond(req, status, content_type, NULL, len, fd);
}

void http_stream_begin(struct http_req *req, int status, const char *content_type)
{
	if (req->status)
		return;
	req->status = status;
	req->streaming = true;
	req->chunked = req->minor_version >= 1;
	if (!req->chunked)
		req->close_after = true;
	char hdr[2048];
	struct http_head h = {hdr, sizeof(hdr), 0};
	http_head_start(&h, status, content_type);
	http_head_cstr(&h, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nX-Request-Id: ");
	http_head_cstr(&h, req->request_id);
	http_head_put(&h, "\r\n", 2);
	http_head_cstr(&h, req->chunked ? "Transfer-Encoding: chunked\r\n" : "Connection: close\r\n");
	size_t used = http_head_end(req, &h);
	out_add1(req, hdr, used);
}

size_t http_stream_write(struct http_req *req, const void *data, size_t len)
{
	struct str part = {data, len};
	return http_stream_writev(req, &part, 1);
}

/* Writes "<total in lower-case hex>\r\n" (a chunked-encoding size line) into line, which holds at
 * least 2 * sizeof(size_t) + 3 bytes; returns its length. By hand: snprintf's "%zx" cost ~700
 * instructions per streamed chunk. */
static size_t chunk_size_line(char *line, size_t total)
{
	char digits[2 * sizeof(size_t)];
	size_t n = 0;
	do {
		digits[n++] = "0123456789abcdef"[total & 0xf];
		total >>= 4;
	} while (total);
	for (size_t i = 0; i < n; i++)
		line[i] = digits[n - 1 - i];
	line[n] = '\r';
	line[n + 1] = '\n';
	return n + 2;
}

size_t http_stream_writev(struct http_req *req, const struct str *parts, size_t nparts)
{
	size_t total = 0;
	for (size_t i = 0; i < nparts; i++)
		total += parts[i].len;
	if (!req->streaming || total == 0)
		return pending(req);
	struct evbuffer_iovec space; /* corked: the frame written straight into the cork buffer */
	size_t need = total + 2 * sizeof(size_t) + 4;
	if (req->corked && evbuffer_reserve_space(req->cork_buf, (ev_ssize_t)need, &space, 1) == 1 &&
	    space.iov_len >= need) {
		char *o = space.iov_base;
		o += req->chunked ? chunk_size_line(o, total) : 0;
		for (size_t i = 0; i < nparts; i++) {
			memcpy(o, parts[i].p, parts[i].len);
			o += parts[i].len;
		}
		if (req->chunked)
			*o++ = '\r', *o++ = '\n';
		space.iov_len = (size_t)(o - (char *)space.iov_base);
		if (evbuffer_commit_space(req->cork_buf, &space, 1) == 0)
			return pending(req);
	}
	char size_line[24];
	int m = (int)chunk_size_line(size_line, total);
	if (nparts > OUT_MAX_IOV - 2) { /* more pieces than any caller sends: all queued */
		struct evbuffer *q = req->corked ? req->cork_buf : req->out;
		if (req->chunked)
			evbuffer_add(q, size_line, (size_t)m);
		for (size_t i = 0; i < nparts; i++)
			evbuffer_add(q, parts[i].p, parts[i].len);
		if (req->chunked)
			evbuffer_add(q, "\r\n", 2);
		return pending(req);
	}
	struct iovec iov[OUT_MAX_IOV];
	size_t n = 0;
	if (req->chunked)
		iov[n++] = (struct iovec){size_line, (size_t)m};
	for (size_t i = 0; i < nparts; i++)
		iov[n++] = (struct iovec){(void *)parts[i].p, parts[i].len};
	if (req->chunked)
		iov[n++] = (struct iovec){(void *)"\r\n", 2};
	out_add(req, iov, n);
	return pending(req);
}

void http_stream_end(struct http_req *req)
{
	if (!req->streaming)
		return;
	if (req->chunked)
		out_add1(req, "0\r\n\r\n", 5);
	http_uncork(req); /* the last frames and the end leave together */
	req->streaming = false;
	req->on_abort = NULL;
	req->on_drain = NULL;
	end_hook(req);
	if (req->on_response)
		req->on_response(req);
}

void http_respond_json(struct http_req *req, int status, json_t *body)
{
	size_t len = 0;
	char *text = json_out(body, 0, &len);
	json_decref(body);
	if (!text) {
		static const char oom[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";
		http_respond(req, 500, "application/json", oom, sizeof(oom) - 1);
		return;
	}
	http_respond(req, status, "application/json", text, len);
	free(text);
}

void http_respond_error(struct http_req *req, int status, const char *code, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	http_respond_error_json(
		req, status,
		json_pack("{s:s, s:s, s:s}", "code", code, "message", message, "request_id", req->request_id));
}

void http_respond_error_json(struct http_req *req, int status, json_t *error)
{
	http_error_fn fn = req->route ? http_route_error_fn(req->route) : NULL;
	if (error && fn && !req->streaming && fn(req, status, error)) {
		json_decref(error);
		return;
	}
	json_t *body = error ? json_object() : NULL;
	if (body)
		json_object_set_new(body, "error", error);
	else
		json_decref(error);
	http_respond_json(req, status, body);
}
