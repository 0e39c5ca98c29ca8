/*
 * url_shown.h - a URL as logs and the public /v1/health may show it.
 *
 * DESIGN: operators write credentials into URLs (https://user:secret@opa.internal, a JWKS or LLM
 * URL with ?key=...). Wherever such a URL is shown - a health detail anyone can read, a log line
 * - it goes through url_shown: the scheme, host, port and path stay (enough to tell which service
 * is meant), the user and password before the host and the query and fragment go. Any thread; no
 * state.
 */
#ifndef SOMA_CORE_URL_SHOWN_H
#define SOMA_CORE_URL_SHOWN_H

#include <stddef.h>

/* Writes url without user, password, query or fragment into out (cap > 0; cut to fit). */
void url_shown(const char *url, char *out, size_t cap);

#endif
