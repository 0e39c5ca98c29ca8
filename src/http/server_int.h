/*
 * server_int.h - what server.c and conn.c share: the io thread and the connection entry points.
 */
#ifndef SOMA_HTTP_SERVER_INT_H
#define SOMA_HTTP_SERVER_INT_H

#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdatomic.h>

#include "http/http.h"

#define POST_QUEUE_CAP 65536

struct post_item {
	http_thread_fn fn; /* to run on the io thread */
	void *arg;	   /* its argument */
};

struct http_conn;

struct io_thread {
	struct http_server *srv;	       /* owner */
	int index;			       /* 0..n-1 */
	pthread_t tid;			       /* running thread */
	bool running;			       /* tid is valid */
	struct event_base *base;	       /* this thread's loop; touched only by this thread */
	struct evconnlistener *listener;       /* this thread's SO_REUSEPORT socket */
	int wake_fd;			       /* eventfd written by http_thread_post */
	struct event *wake_ev;		       /* reads wake_fd */
	pthread_mutex_t post_lock;	       /* guards the ring below */
	struct post_item ring[POST_QUEUE_CAP]; /* posted work */
	size_t ring_head, ring_count;	       /* ring position and fill */
	struct http_conn *conns;	       /* open connections (intrusive list) */
	struct event *accept_retry_ev;	       /* re-enables the listener after an accept error */
	uint64_t accept_logged_ns;	       /* when an accept failure was last logged (0: never) */
	unsigned long accept_failures;	       /* accept failures since that line */
	bool draining;			       /* shutdown began: answer, then close */
	bool stopped;			       /* the loop has exited: posts are refused (post_lock) */
};

struct http_server {
	struct http_server_opts opts;	/* copied at creation */
	struct http_pipeline *pipeline; /* borrowed */
	struct io_thread *threads;	/* opts.io_threads entries */
	_Atomic long nconns;		/* open connections, all threads */
	_Atomic size_t body_bytes;	/* bytes of in-memory request bodies reserved (opts.body_memory) */
};

/* Takes ownership of an accepted socket. */
void http_conn_accept(struct io_thread *thr, int fd);
/* Closes connections that are between requests (used when draining). */
void http_conn_close_idle(struct io_thread *thr);
/* Closes every connection at once. */
void http_conn_close_all(struct io_thread *thr);

#endif
