/*
 * head.c - response heads written piece by piece (see head.h).
 */
#include "http/head.h"

#include <string.h>
#include <time.h>

#include "core/str.h"

static __thread time_t date_sec;
static __thread char date_buf[40];

static const char *http_date(void)
{
	time_t now = time(NULL);
	if (now != date_sec) {
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(date_buf, sizeof(date_buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		date_sec = now;
	}
	return date_buf;
}

void http_head_put(struct http_head *h, const char *s, size_t n)
{
	if (h->at + n + 2 > h->cap)
		return;
	memcpy(h->p + h->at, s, n);
	h->at += n;
}

void http_head_cstr(struct http_head *h, const char *s)
{
	http_head_put(h, s, strlen(s));
}

void http_head_uint(struct http_head *h, size_t v)
{
	char digits[20];
	size_t n = str_u64_dec(digits, v);
	http_head_put(h, digits, n);
}

/* "HTTP/1.1 <status> <text>\r\nDate: <date>\r\nContent-Type: <type>\r\n" */
void http_head_start(struct http_head *h, int status, const char *content_type)
{
	http_head_cstr(h, "HTTP/1.1 ");
	http_head_uint(h, (size_t)status);
	http_head_put(h, " ", 1);
	http_head_cstr(h, http_status_text(status));
	http_head_cstr(h, "\r\nDate: ");
	http_head_cstr(h, http_date());
	http_head_cstr(h, "\r\nContent-Type: ");
	http_head_cstr(h, content_type);
	http_head_put(h, "\r\n", 2);
}

/* The handler's own headers and the blank line; returns the head's length. */
size_t http_head_end(const struct http_req *req, struct http_head *h)
{
	for (size_t i = 0; i < req->nresp_headers; i++) {
		size_t k = strlen(req->resp_headers[i][0]), v = strlen(req->resp_headers[i][1]);
		if (h->at + k + v + 4 + 2 > h->cap)
			break;
		http_head_put(h, req->resp_headers[i][0], k);
		http_head_put(h, ": ", 2);
		http_head_put(h, req->resp_headers[i][1], v);
		http_head_put(h, "\r\n", 2);
	}
	memcpy(h->p + h->at, "\r\n", 2);
	return h->at + 2;
}
