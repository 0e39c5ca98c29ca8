/*
 * test_http_write.c - how a connection sends responses and stream chunks (src/http/response.c,
 * conn.c): written to the socket at once while nothing is queued, the rest queued in order.
 *
 * DESIGN: a real server (one io thread, anonymous loopback) with test handlers, and a plain
 * blocking client socket. A slow reader (small receive buffer, not reading while the handler
 * writes megabytes) makes the direct send partial, so the rest goes through the bufferevent;
 * the client then checks every byte. A client that resets the connection mid-stream checks that
 * failed sends end the stream cleanly (on_abort once, the connection freed; ASan checks leaks).
 * Corked handlers (http_cork) check that a burst is held until http_uncork or the stream's end,
 * then sent whole and in order, also when the socket takes only part of it.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "http/http.h"

#define NFRAMES	  2000
#define FRAME_LEN 2048

static struct http_router *router;
static struct http_pipeline *pipeline;
static struct http_server *srv;
static int port;
static atomic_size_t first_queued, max_queued;
static atomic_int aborts;

/* Frame i: a deterministic FRAME_LEN-byte SSE frame (the client rebuilds it to compare). */
static void frame_text(size_t i, char *buf)
{
	int n = snprintf(buf, FRAME_LEN, "id: %zu\ndata: ", i);
	for (size_t k = (size_t)n; k < FRAME_LEN - 2; k++)
		buf[k] = (char)('a' + (i + k) % 26);
	buf[FRAME_LEN - 2] = '\n';
	buf[FRAME_LEN - 1] = '\n';
}

/* Writes NFRAMES frames at once (far more than the socket takes), then ends the stream. */
static void big(struct http_req *r, void *arg)
{
	(void)arg;
	http_stream_begin(r, 200, "text/event-stream");
	char buf[FRAME_LEN];
	for (size_t i = 0; i < NFRAMES; i++) {
		frame_text(i, buf);
		struct str parts[] = {{buf, 10}, {buf + 10, FRAME_LEN - 12}, {buf + FRAME_LEN - 2, 2}};
		size_t q = http_stream_writev(r, parts, 3);
		if (i == 0)
			atomic_store(&first_queued, q);
		if (q > atomic_load(&max_queued))
			atomic_store(&max_queued, q);
	}
	http_stream_end(r);
}

#define NCORKED 10
static atomic_size_t corked_pending[NCORKED], after_uncork; /* what the corked writes returned */

/* A corked burst of NCORKED small frames, uncorked by hand; one frame sent uncorked; then a
 * second burst that the end of the stream uncorks. */
static void corked(struct http_req *r, void *arg)
{
	(void)arg;
	http_cork(r);
	http_stream_begin(r, 200, "text/event-stream");
	char buf[32];
	for (size_t i = 0; i < NCORKED; i++) {
		int n = snprintf(buf, sizeof(buf), "data: %zu\n\n", i);
		atomic_store(&corked_pending[i], http_stream_write(r, buf, (size_t)n));
	}
	http_uncork(r);
	atomic_store(&after_uncork, http_stream_write(r, "data: after\n\n", 13));
	http_cork(r);
	http_stream_write(r, "data: x\n\n", 9);
	http_stream_write(r, "data: y\n\n", 9);
	http_stream_end(r);
}

/* The big stream written as two corked bursts of NFRAMES / 2 frames (far more than the socket
 * takes: the uncork's send is partial and the rest is queued behind it). */
static void big_corked(struct http_req *r, void *arg)
{
	(void)arg;
	char buf[FRAME_LEN];
	http_cork(r);
	http_stream_begin(r, 200, "text/event-stream");
	for (size_t i = 0; i < NFRAMES; i++) {
		if (i == NFRAMES / 2) {
			http_uncork(r);
			atomic_store(&max_queued, evbuffer_get_length(r->out));
			http_cork(r);
		}
		frame_text(i, buf);
		struct str part = {buf, FRAME_LEN};
		http_stream_writev(r, &part, 1);
	}
	http_stream_end(r);
}

/* A corked request answered with a whole response: the response uncorks. */
static void corked_respond(struct http_req *r, void *arg)
{
	(void)arg;
	http_cork(r);
	http_respond(r, 200, "text/plain", "plain\n", 6);
}

static void small(struct http_req *r, void *arg)
{
	(void)arg;
	http_respond(r, 200, "text/plain", "small\n", 6);
}

static void head(struct http_req *r, void *arg)
{
	(void)arg;
	http_stream_begin(r, 200, "text/event-stream");
	http_stream_write(r, "x", 1);
	http_stream_end(r);
}

struct ticker {
	struct http_req *req;
	struct event *ev;
};

static void tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct ticker *t = arg;
	http_stream_write(t->req, "data: tick\n\n", 12);
}

static void ticks_abort(struct http_req *r)
{
	struct ticker *t = r->handler_ctx;
	event_free(t->ev);
	free(t);
	atomic_fetch_add(&aborts, 1);
}

/* A stream that never ends: a frame every millisecond until the client goes away. */
static void ticks(struct http_req *r, void *arg)
{
	(void)arg;
	struct ticker *t = calloc(1, sizeof(*t));
	cr_assert_not_null(t);
	t->req = r;
	t->ev = event_new(http_thread_base(r->thread), -1, EV_PERSIST, tick, t);
	cr_assert_not_null(t->ev);
	r->handler_ctx = t;
	r->on_abort = ticks_abort;
	http_stream_begin(r, 200, "text/event-stream");
	http_stream_write(r, "data: first\n\n", 13);
	struct timeval tv = {0, 1000};
	event_add(t->ev, &tv);
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void setup(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);
	http_access_log_enable(false);
	atomic_store(&first_queued, (size_t)-1);
	atomic_store(&max_queued, 0);
	atomic_store(&aborts, 0);
	port = free_port();
	struct http_server_opts opts = {.host = "127.0.0.1", .port = port, .io_threads = 1};
	opts.max_body = opts.max_header = 4096;
	opts.request_timeout_s = opts.idle_timeout_s = 30;
	opts.max_connections = 16;
	snprintf(opts.tmp_dir, sizeof(opts.tmp_dir), "/tmp");
	struct http_auth_opts auth = {.anonymous_allowed = true, .default_tenant = "default", .admin_token = ""};
	char why[256] = "";
	router = http_router_new();
	cr_assert_not_null(router);
	cr_assert_eq(http_route_add(router, "GET", "/big", big, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/small", small, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/head", head, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/ticks", ticks, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/corked", corked, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/big-corked", big_corked, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/corked-respond", corked_respond, NULL, HTTP_ROUTE_PUBLIC),
		     SOMA_OK);
	pipeline = http_pipeline_new(router, &auth);
	cr_assert_not_null(pipeline);
	cr_assert_eq(http_server_new(&opts, pipeline, &srv, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(http_server_start(srv), SOMA_OK);
}

static void teardown(void)
{
	http_server_free(srv);
	http_pipeline_free(pipeline);
	http_router_free(router);
}

TestSuite(http_write, .init = setup, .fini = teardown);

/* A connected client socket; rcvbuf > 0 sets a small receive buffer (a slow reader). */
static int client(int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(fd >= 0);
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s", strerror(errno));
	return fd;
}

static void send_all(int fd, const char *text)
{
	size_t len = strlen(text);
	cr_assert(send(fd, text, len, MSG_NOSIGNAL) == (ssize_t)len);
}

/* Reads until the connection closes; returns the bytes (malloc'd, NUL-terminated) in *len. */
static char *read_to_eof(int fd, size_t *len)
{
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap);
	cr_assert_not_null(buf);
	for (;;) {
		if (cap - n < 65536) {
			cap *= 2;
			buf = realloc(buf, cap);
			cr_assert_not_null(buf);
		}
		ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
		cr_assert(r >= 0, "recv: %s", strerror(errno));
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Checks one chunked SSE response of NFRAMES frames starting at p; returns where it ends. */
static const char *check_big(const char *p, const char *end)
{
	const char *body = strstr(p, "\r\n\r\n");
	cr_assert_not_null(body, "no end of the response head");
	cr_assert(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0, "status line: %.40s", p);
	p = body + 4;
	char want[FRAME_LEN], size_line[24];
	int sl = snprintf(size_line, sizeof(size_line), "%x\r\n", FRAME_LEN);
	for (size_t i = 0; i < NFRAMES; i++) {
		frame_text(i, want);
		cr_assert((size_t)(end - p) >= (size_t)sl + FRAME_LEN + 2, "the stream stops after %zu frames", i);
		cr_assert(memcmp(p, size_line, (size_t)sl) == 0, "frame %zu: bad chunk size line", i);
		p += sl;
		cr_assert(memcmp(p, want, FRAME_LEN) == 0, "frame %zu differs (lost, reordered or corrupt bytes)", i);
		p += FRAME_LEN;
		cr_assert(memcmp(p, "\r\n", 2) == 0, "frame %zu: chunk not closed", i);
		p += 2;
	}
	cr_assert((size_t)(end - p) >= 5 && memcmp(p, "0\r\n\r\n", 5) == 0, "no last chunk");
	return p + 5;
}

/* GETs path in version on a connection with rcvbuf (0: the default); the whole answer (caller frees). */
static char *get_all(const char *path, const char *version, int rcvbuf, size_t *len)
{
	int fd = client(rcvbuf);
	char req[128];
	snprintf(req, sizeof(req), "GET %s %s\r\nHost: t\r\nConnection: close\r\n\r\n", path, version);
	send_all(fd, req);
	char *all = read_to_eof(fd, len);
	close(fd);
	return all;
}

/* GETs path on a connection with rcvbuf (0: the default) and checks the whole big stream came. */
static void get_big(const char *path, int rcvbuf)
{
	size_t len;
	char *all = get_all(path, "HTTP/1.1", rcvbuf, &len);
	check_big(all, all + len);
	free(all);
}

Test(http_write, first_frame_goes_straight_to_the_socket)
{
	get_big("/big", 0);
	cr_assert_eq(atomic_load(&first_queued), 0, "the first frame was queued (%zu bytes waiting), not sent",
		     atomic_load(&first_queued));
}

Test(http_write, slow_reader_gets_every_byte_in_order_then_a_pipelined_response)
{
	int fd = client(4096);
	/* two requests at once: the second is answered after the 4 MB stream, behind its queue */
	send_all(fd, "GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	usleep(200000); /* not reading yet: the socket fills and the rest must be queued */
	size_t len;
	char *all = read_to_eof(fd, &len);
	close(fd);
	const char *p = check_big(all, all + len);
	cr_assert(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0, "the pipelined response does not follow the stream");
	const char *body = strstr(p, "\r\n\r\n");
	cr_assert(body && strcmp(body + 4, "small\n") == 0, "pipelined response body: %s", body ? body + 4 : "(none)");
	free(all);
	cr_assert_gt(atomic_load(&max_queued), 0, "the socket took everything: the queued path was not exercised");
}

Test(http_write, client_reset_mid_stream_ends_the_stream_cleanly)
{
	int fd = client(0);
	send_all(fd, "GET /ticks HTTP/1.1\r\nHost: t\r\n\r\n");
	char buf[4096];
	size_t got = 0;
	while (got < 2000) { /* the head and some frames, written directly */
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		cr_assert(r > 0);
		got += (size_t)r;
	}
	struct linger lg = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd); /* reset: the next send fails with ECONNRESET or EPIPE */
	for (int i = 0; i < 10000 && (atomic_load(&aborts) == 0 || http_server_connections(srv) > 0); i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&aborts), 1, "the handler was not told the client went away");
	cr_assert_eq(http_server_connections(srv), 0, "the connection was not freed");
	/* the server still answers */
	int fd2 = client(0);
	send_all(fd2, "GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	size_t len;
	char *all = read_to_eof(fd2, &len);
	close(fd2);
	cr_assert(strstr(all, "\r\n\r\nsmall\n") != NULL, "no answer after the reset: %s", all);
	free(all);
}

Test(http_write, a_corked_burst_is_held_until_uncorked_then_sent_whole)
{
	int fd = client(0);
	/* three requests on one connection: the corked stream, a corked whole response, and a
	 * corked stream again (the connection keeps its cork buffer between requests) */
	send_all(fd, "GET /corked HTTP/1.1\r\nHost: t\r\n\r\nGET /corked-respond HTTP/1.1\r\nHost: t\r\n\r\n"
		     "GET /corked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	size_t len;
	char *all = read_to_eof(fd, &len);
	close(fd);
	const char *p = all;
	for (int k = 0; k < 3; k++) {
		const char *body = strstr(p, "\r\n\r\n");
		cr_assert_not_null(body, "response %d: no head in %s", k, p);
		cr_assert(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0, "response %d: %.40s", k, p);
		p = body + 4;
		if (k == 1) {
			cr_assert(strncmp(p, "plain\n", 6) == 0, "corked whole response body: %.20s", p);
			p += 6;
			continue;
		}
		char frame[32], want[64];
		for (size_t i = 0; i < NCORKED; i++) {
			int f = snprintf(frame, sizeof(frame), "data: %zu\n\n", i);
			int n = snprintf(want, sizeof(want), "%x\r\n%s\r\n", (unsigned)f, frame);
			cr_assert(strncmp(p, want, (size_t)n) == 0, "response %d, frame %zu: %.30s", k, i, p);
			p += n;
		}
		static const char rest[] = "d\r\ndata: after\n\n\r\n9\r\ndata: x\n\n\r\n9\r\ndata: y\n\n\r\n0\r\n\r\n";
		cr_assert(strncmp(p, rest, sizeof(rest) - 1) == 0, "response %d after the burst: %.60s", k, p);
		p += sizeof(rest) - 1;
	}
	cr_assert_eq(p, all + len, "bytes after the last response: %s", p);
	free(all);
	/* held, not sent: each corked write reported everything corked so far as pending */
	size_t prev = 0;
	for (size_t i = 0; i < NCORKED; i++) {
		size_t q = atomic_load(&corked_pending[i]);
		cr_assert_gt(q, prev, "corked write %zu reported %zu bytes pending (sent instead of held?)", i, q);
		prev = q;
	}
	cr_assert_eq(atomic_load(&after_uncork), 0,
		     "after the uncork a write was queued (%zu bytes): the burst "
		     "did not go to the socket",
		     atomic_load(&after_uncork));
}

Test(http_write, a_corked_burst_larger_than_the_socket_is_sent_in_order)
{
	get_big("/big-corked", 4096);
	cr_assert_gt(atomic_load(&max_queued), 0, "the socket took the whole burst: the partial path was not run");
}

/* The stream's head, byte for byte as the snprintf that built it until 2026-11-29 wrote it. */
static void check_head(const char *version, const char *framing, const char *body)
{
	size_t len;
	char *all = get_all("/head", version, 0, &len);
	char date[64] = "", id[128] = "";
	int used = 0;
	cr_assert_eq(sscanf(all,
			    "HTTP/1.1 200 OK\r\nDate: %63[^\r]\r\nContent-Type: text/event-stream\r\n"
			    "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nX-Request-Id: %127[^\r]\r\n%n",
			    date, id, &used),
		     2, "head: %s", all);
	cr_assert_gt(used, 0, "head: %s", all);
	cr_assert_eq(strlen(date), 29, "Date: %s", date); /* "Sun, 29 Nov 2026 01:30:00 GMT" */
	cr_assert(strcmp(date + 25, " GMT") == 0, "Date: %s", date);
	cr_assert_gt(strlen(id), 0);
	char rest[256];
	snprintf(rest, sizeof(rest), "%s\r\n%s", framing, body);
	cr_assert_str_eq(all + used, rest);
	free(all);
}

Test(http_write, a_stream_head_has_its_status_date_type_id_and_framing)
{
	check_head("HTTP/1.1", "Transfer-Encoding: chunked\r\n", "1\r\nx\r\n0\r\n\r\n");
	check_head("HTTP/1.0", "Connection: close\r\n", "x");
}
