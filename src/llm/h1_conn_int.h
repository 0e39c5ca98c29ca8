/*
 * h1_conn_int.h - the state of h1_conn.c's connections, pools and transfers (see h1_conn.h and
 * h1_conn.c's design comment), apart so that file stays readable. Only h1_conn.c includes it.
 */
#ifndef SOMA_LLM_H1_CONN_INT_H
#define SOMA_LLM_H1_CONN_INT_H

#include <event2/event.h>
#include <stdint.h>

#include "llm/h1_conn.h"
#include "llm/h1_parse.h"

struct conn {
	struct h1_pool *pool; /* owner */
	int fd;		      /* the socket; owned */
	struct event *rev;    /* persistent read watch; owned */
	struct event *wev;    /* write watch while connecting or writing; owned */
	struct h1_xfer *xfer; /* the transfer it carries, NULL when idle */
	struct sockaddr_storage addr;
	socklen_t addr_len;
	bool connecting;   /* connect() has not completed */
	struct conn *next; /* in the pool's idle list */
};

struct h1_pool {
	struct event_base *base; /* the loop (borrowed) */
	struct conn *idle;	 /* kept connections, most recent first */
	int nidle;		 /* entries in idle */
};

struct h1_xfer {
	struct h1_pool *pool;
	struct conn *conn;	    /* the connection carrying it, NULL before one is opened */
	struct h1_target target;    /* where to (copied) */
	struct h1_xfer_hooks hooks; /* the caller's */
	struct event *timer;	    /* timeouts, and the end of a transfer that failed at start */
	char *req;		    /* the request; owned */
	size_t req_len, sent;	    /* bytes of req, bytes written */
	int connect_timeout_s, idle_timeout_s;
	uint64_t last_io_ns;	 /* when the last byte came (CLOCK_MONOTONIC: a clock step moves no timeout) */
	bool reused;		 /* the connection came from the pool */
	bool got_bytes;		 /* a byte of the answer arrived */
	bool status_told;	 /* hooks.on_status was called */
	bool busy;		 /* a hook is running */
	bool cancelled;		 /* h1_xfer_cancel came while busy */
	enum h1_end failed;	 /* the end to report from the timer (fail_later) */
	bool failing;		 /* failed is set */
	bool over;		 /* hooks.body_over said so: the timer ends the transfer */
	bool paused;		 /* h1_xfer_pause: the connection's read watch is off */
	char why[256];		 /* failed's sentence */
	struct h1_response resp; /* the answer being read */
};

#endif
