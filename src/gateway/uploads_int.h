/*
 * uploads_int.h - between uploads.c, attachments.c and blob_sweep.c.
 */
#ifndef SOMA_GATEWAY_UPLOADS_INT_H
#define SOMA_GATEWAY_UPLOADS_INT_H

/* One sweep of the upload files no attachment names (blob_sweep.c). Blocks on the store: an
 * upload pool thread only. */
void blob_sweep_run(void);

struct http_req;
/* GET /v1/attachments/{id} (attachments.c), a route handler registered by uploads.c. */
void uploads_get_attachment(struct http_req *req, void *arg);

#endif
