/*
 * uploads_int.h - between uploads.c and blob_sweep.c.
 */
#ifndef SOMA_GATEWAY_UPLOADS_INT_H
#define SOMA_GATEWAY_UPLOADS_INT_H

/* One sweep of the upload files no attachment names (blob_sweep.c). Blocks on the store: an
 * upload pool thread only. */
void blob_sweep_run(void);

#endif
