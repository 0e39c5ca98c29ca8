/*
 * server.c - listening sockets, io threads, cross-thread posting and graceful drain.
 *
 * DESIGN: one SO_REUSEPORT listening socket per io thread lets the kernel balance new
 * connections across threads with no shared accept lock. Because SO_REUSEPORT would also let a
 * second process share our port silently, start-up first binds a plain probe socket: if that
 * fails the address is in use and we refuse to start. Other threads talk to an io thread only
 * through http_thread_post (a bounded ring + eventfd wake-up).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "http/server_int.h"

#define ACCEPT_RETRY_MS 200 /* a listener that failed to accept rests this long */
#define ACCEPT_LOG_S	10  /* at most one accept-failure log line per thread this often */

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%d", port);
	int rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0 || !res)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int open_listener(const struct sockaddr_storage *ss, socklen_t len, bool reuseport)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 4096) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	http_conn_accept(arg, fd);
}

/* A listener that failed to accept is re-enabled from here, ACCEPT_RETRY_MS later. */
static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct io_thread *thr = arg;
	if (thr->listener && !thr->draining)
		evconnlistener_enable(thr->listener);
}

/* libevent calls this for every accept error it does not retry itself (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM...). The connection stays in the kernel's backlog, so the socket stays readable: left
 * enabled, the listener would fire again at once, forever (a full core and a flood of log
 * lines). So stop listening for ACCEPT_RETRY_MS and try again; connections wait in the backlog
 * meanwhile, and the ones we have are served. One log line per ACCEPT_LOG_S, with a count. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct io_thread *thr = arg;
	int err = errno;
	evconnlistener_disable(l);
	struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
	evtimer_add(thr->accept_retry_ev, &tv);
	thr->accept_failures++;
	uint64_t now = clock_mono_ns();
	if (thr->accept_logged_ns && now - thr->accept_logged_ns < (uint64_t)ACCEPT_LOG_S * 1000000000ULL)
		return;
	log_warn("http",
		 "accept failed: %s (%lu time(s) since the last report); new connections wait until some "
		 "close; raise the open-files limit (ulimit -n) or lower http.max_connections",
		 strerror(err), thr->accept_failures);
	thr->accept_logged_ns = now;
	thr->accept_failures = 0;
}

/* Takes the oldest posted item; false when there is none. stop: mark the thread stopped first,
 * so that no post can slip in after the ring was found empty. */
static bool take_post(struct io_thread *thr, bool stop, struct post_item *out)
{
	pthread_mutex_lock(&thr->post_lock);
	thr->stopped |= stop;
	bool any = thr->ring_count > 0;
	if (any) {
		*out = thr->ring[thr->ring_head];
		thr->ring_head = (thr->ring_head + 1) % POST_QUEUE_CAP;
		thr->ring_count--;
	}
	pthread_mutex_unlock(&thr->post_lock);
	return any;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct io_thread *thr = arg;
	uint64_t n;
	ssize_t r = read(fd, &n, sizeof(n));
	(void)r;
	struct post_item it;
	while (take_post(thr, false, &it))
		it.fn(it.arg);
}

enum soma_err http_thread_post_wait(struct io_thread *thr, http_thread_fn fn, void *arg)
{
	enum soma_err err;
	while ((err = http_thread_post(thr, fn, arg)) == SOMA_ERR_LIMIT) {
		struct timespec ts = {0, 1000000L}; /* the ring is large: let the io thread drain it */
		nanosleep(&ts, NULL);
	}
	return err;
}

struct event_base *http_thread_base(struct io_thread *thr)
{
	return thr->base;
}

enum soma_err http_thread_post(struct io_thread *thr, http_thread_fn fn, void *arg)
{
	pthread_mutex_lock(&thr->post_lock);
	if (thr->stopped) {
		pthread_mutex_unlock(&thr->post_lock);
		return SOMA_ERR_UNAVAILABLE;
	}
	if (thr->ring_count == POST_QUEUE_CAP) {
		pthread_mutex_unlock(&thr->post_lock);
		return SOMA_ERR_LIMIT;
	}
	thr->ring[(thr->ring_head + thr->ring_count) % POST_QUEUE_CAP] = (struct post_item){fn, arg};
	thr->ring_count++;
	pthread_mutex_unlock(&thr->post_lock);
	uint64_t one = 1;
	ssize_t w = write(thr->wake_fd, &one, sizeof(one));
	(void)w;
	return SOMA_OK;
}

static enum soma_err thread_init(struct io_thread *thr, int fd)
{
	thr->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	thr->base = event_base_new();
	if (thr->wake_fd < 0 || !thr->base) {
		close(fd);
		return SOMA_ERR_IO;
	}
	thr->wake_ev = event_new(thr->base, thr->wake_fd, EV_READ | EV_PERSIST, on_wake, thr);
	thr->listener = evconnlistener_new(thr->base, on_accept, thr, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!thr->wake_ev || !thr->listener) {
		if (!thr->listener)
			close(fd);
		return SOMA_ERR_IO;
	}
	evconnlistener_set_error_cb(thr->listener, on_accept_error);
	event_add(thr->wake_ev, NULL);
	thr->accept_retry_ev = evtimer_new(thr->base, on_accept_retry, thr);
	if (!thr->accept_retry_ev)
		return SOMA_ERR_IO;
	return SOMA_OK;
}

enum soma_err http_server_new(const struct http_server_opts *opts, struct http_pipeline *pipeline,
			      struct http_server **out, char *why, size_t why_cap)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	if (resolve(opts->host, opts->port, &ss, &sslen) != 0) {
		snprintf(why, why_cap, "cannot resolve http.listen host \"%s\"; use an IP address such as 127.0.0.1",
			 opts->host);
		return SOMA_ERR_CONFIG;
	}
	int probe = open_listener(&ss, sslen, false);
	if (probe < 0) {
		snprintf(why, why_cap, "cannot listen on %s:%d (%s); %s", opts->host, opts->port, strerror(errno),
			 errno == EADDRINUSE ? "another process holds the port: stop it or set http.listen"
					     : "check http.listen");
		return SOMA_ERR_IO;
	}
	close(probe);
	struct http_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return SOMA_ERR_NOMEM;
	srv->opts = *opts;
	srv->pipeline = pipeline;
	srv->threads = calloc((size_t)opts->io_threads, sizeof(*srv->threads));
	if (!srv->threads) {
		free(srv);
		return SOMA_ERR_NOMEM;
	}
	for (int i = 0; i < opts->io_threads; i++) {
		srv->threads[i].wake_fd = -1;
		pthread_mutex_init(&srv->threads[i].post_lock, NULL);
	}
	for (int i = 0; i < opts->io_threads; i++) {
		struct io_thread *thr = &srv->threads[i];
		thr->srv = srv;
		thr->index = i;
		int fd = open_listener(&ss, sslen, true);
		if (fd < 0 || thread_init(thr, fd) != SOMA_OK) {
			snprintf(why, why_cap, "cannot listen on %s:%d (%s); check http.listen", opts->host, opts->port,
				 strerror(errno));
			http_server_free(srv);
			return SOMA_ERR_IO;
		}
	}
	*out = srv;
	return SOMA_OK;
}

static void *thread_main(void *arg)
{
	struct io_thread *thr = arg;
	pthread_setname_np(pthread_self(), "soma-io");
	event_base_dispatch(thr->base);
	return NULL;
}

enum soma_err http_server_start(struct http_server *srv)
{
	for (int i = 0; i < srv->opts.io_threads; i++) {
		struct io_thread *thr = &srv->threads[i];
		if (pthread_create(&thr->tid, NULL, thread_main, thr) != 0)
			return SOMA_ERR_INTERNAL;
		thr->running = true;
	}
	return SOMA_OK;
}

size_t http_server_connections(const struct http_server *srv)
{
	return (size_t)atomic_load(&srv->nconns);
}

static void begin_drain(void *arg)
{
	struct io_thread *thr = arg;
	thr->draining = true;
	if (thr->accept_retry_ev)
		evtimer_del(thr->accept_retry_ev);
	/* close the listening socket (not just stop accepting) so that new connections are refused
	 * at once instead of waiting in the kernel's backlog until we exit */
	if (thr->listener) {
		evconnlistener_free(thr->listener);
		thr->listener = NULL;
	}
	http_conn_close_idle(thr);
}

size_t http_server_drain(struct http_server *srv, int grace_ms)
{
	for (int i = 0; i < srv->opts.io_threads; i++) {
		if (!srv->threads[i].running ||
		    http_thread_post(&srv->threads[i], begin_drain, &srv->threads[i]) != SOMA_OK)
			begin_drain(&srv->threads[i]);
	}
	struct timespec step = {0, 10 * 1000000};
	for (int waited = 0; waited < grace_ms && http_server_connections(srv) > 0; waited += 10)
		nanosleep(&step, NULL);
	return http_server_connections(srv);
}

static void stop_thread(void *arg)
{
	struct io_thread *thr = arg;
	http_conn_close_all(thr);
	event_base_loopbreak(thr->base);
}

/* Runs what was posted to a stopped thread, on the caller's thread: every posted callback
 * checks whether its request was aborted (they all were, by close_all) and only frees. */
static void drain_posts(struct io_thread *thr)
{
	struct post_item it;
	while (take_post(thr, true, &it))
		it.fn(it.arg);
}

void http_server_stop(struct http_server *srv)
{
	if (!srv)
		return;
	for (int i = 0; i < srv->opts.io_threads; i++) {
		struct io_thread *thr = &srv->threads[i];
		if (thr->running && http_thread_post(thr, stop_thread, thr) == SOMA_OK)
			pthread_join(thr->tid, NULL);
		else if (thr->running)
			pthread_cancel(thr->tid), pthread_join(thr->tid, NULL);
		thr->running = false;
		if (thr->base)
			http_conn_close_all(thr);
		drain_posts(thr);
	}
}

void http_server_free(struct http_server *srv)
{
	if (!srv)
		return;
	http_server_stop(srv);
	for (int i = 0; i < srv->opts.io_threads; i++) {
		struct io_thread *thr = &srv->threads[i];
		if (thr->listener)
			evconnlistener_free(thr->listener);
		if (thr->wake_ev)
			event_free(thr->wake_ev);
		if (thr->accept_retry_ev)
			event_free(thr->accept_retry_ev);
		if (thr->base)
			event_base_free(thr->base);
		if (thr->wake_fd >= 0)
			close(thr->wake_fd);
		pthread_mutex_destroy(&thr->post_lock);
	}
	free(srv->threads);
	free(srv);
}
