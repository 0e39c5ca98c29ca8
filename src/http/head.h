/*
 * head.h - a response head written piece by piece into the caller's fixed buffer (head.c), for
 * response.c: snprintf's format parsing cost ~2,000 instructions per response.
 *
 * DESIGN: pieces that do not fit are left out (two bytes stay for the blank line), so a head is
 * never longer than its buffer. Any thread; the Date line is cached per thread, rebuilt once a
 * second.
 */
#ifndef SOMA_HTTP_HEAD_H
#define SOMA_HTTP_HEAD_H

#include <stddef.h>

#include "http/http.h"

struct http_head {
	char *p;	/* the buffer */
	size_t cap, at; /* its size (2 kept for the blank line), bytes written */
};

void http_head_put(struct http_head *h, const char *s, size_t n);
void http_head_cstr(struct http_head *h, const char *s);
void http_head_uint(struct http_head *h, size_t v);
/* "HTTP/1.1 <status> <text>", Date and Content-Type lines. */
void http_head_start(struct http_head *h, int status, const char *content_type);
/* The handler's own headers (req->resp_headers) and the blank line; returns the head's length. */
size_t http_head_end(const struct http_req *req, struct http_head *h);

#endif
