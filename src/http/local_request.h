/*
 * local_request.h - whether a request was made on this machine by a local client, for the
 * anonymous mode (loopback listener, no API keys: requests without credentials run as the
 * default tenant with admin scope).
 *
 * DESIGN: a loopback listener is not enough. A web page on another site can reach it from the
 * user's browser: by DNS rebinding (its own host name resolved to 127.0.0.1: the Host header
 * names that host) or by a cross-site form or fetch (the Origin header names that site), and a
 * reverse proxy on the same machine forwards other machines' clients (it adds Forwarded or
 * X-Forwarded-For). So a request is local when its Host is a loopback name or address (or
 * absent), its Origin (when sent) is a loopback origin, and it carries no forwarding header.
 */
#ifndef SOMA_HTTP_LOCAL_REQUEST_H
#define SOMA_HTTP_LOCAL_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http.h"

/* Whether host[0..n) is "localhost", an address of 127.0.0.0/8 or [::1], with an optional
 * ":port". */
bool http_host_is_loopback(const char *host, size_t n);
/* NULL when req is local (see above); else why not, in words for the client (static). */
const char *http_req_not_local(const struct http_req *req);

#endif
