/*
 * router_int.h - router internals shared with response.c.
 */
#ifndef SOMA_HTTP_ROUTER_INT_H
#define SOMA_HTTP_ROUTER_INT_H

#include "http/http.h"

/* Index of parameter {name} in the route's pattern, or -1. */
int http_route_param_index(const struct http_route *route, const char *name);

/* The route's error renderer, or NULL. */
http_error_fn http_route_error_fn(const struct http_route *route);

#endif
