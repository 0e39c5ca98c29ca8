/*
 * store_bridge.c - gw_store: runs a store op on behalf of a request (see gateway.h).
 *
 * DESIGN: gw_store keeps the request open while its op runs on a store thread; completion is
 * posted back to the request's io thread. If the client leaves first, on_abort marks the
 * pending call so the completion only frees it: nothing touches a closed request.
 * It is a file of its own so that the fuzz harness of the API (tests/fuzz/fuzz_api.c) can link
 * every handler with its own gw_store and gateway_store in place of these.
 */
#include <stdlib.h>

#include "gateway/gateway.h"
#include "orchestrator/app.h"

struct pending {
	struct http_req *req;	  /* the waiting request (invalid once aborted) */
	struct io_thread *thread; /* its io thread (the request may be gone: never read req here) */
	struct store_op *op;	  /* the op being run */
	gw_store_done_fn fn;	  /* answer builder */
	bool aborted;		  /* the client left */
};

struct store *gateway_store(void)
{
	return app.store;
}

static void on_io_thread(void *arg)
{
	struct pending *p = arg;
	if (!p->aborted) {
		p->req->on_abort = NULL;
		p->fn(p->req, p->op);
	}
	store_op_free(p->op);
	free(p);
}

static void on_store_done(struct store_op *op)
{
	struct pending *p = op->arg;
	enum soma_err err = http_thread_post_wait(p->thread, on_io_thread, p);
	if (err != SOMA_OK) { /* the io thread stopped: the request was aborted with it */
		store_op_free(p->op);
		free(p);
	}
}

static void on_abort(struct http_req *req)
{
	struct pending *p = req->handler_ctx;
	p->aborted = true;
}

enum soma_err gw_store_try(struct http_req *req, struct store_op *op, gw_store_done_fn fn)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p) {
		store_op_free(op);
		return SOMA_ERR_NOMEM;
	}
	*p = (struct pending){req, req->thread, op, fn, false};
	op->done = on_store_done;
	op->arg = p;
	enum soma_err err = store_submit(app.store, op);
	if (err != SOMA_OK) {
		free(p);
		store_op_free(op);
		return err == SOMA_ERR_GONE ? err : SOMA_ERR_UNAVAILABLE;
	}
	req->handler_ctx = p;
	req->on_abort = on_abort;
	return SOMA_OK;
}

void gw_store_refused(struct http_req *req, enum soma_err err)
{
	if (err == SOMA_ERR_NOMEM) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	if (err == SOMA_ERR_GONE) {
		gw_store_gone(req);
		return;
	}
	http_resp_header(req, "Retry-After", "1");
	http_respond_error(req, 503, "store_busy", "the store is saturated or stopping; retry in a second");
}

void gw_store(struct http_req *req, struct store_op *op, gw_store_done_fn fn)
{
	enum soma_err err = gw_store_try(req, op, fn);
	if (err != SOMA_OK)
		gw_store_refused(req, err);
}
