/*
 * tools_int.h - what the files of src/tools share: the built-in tools' run functions, the SSRF
 * guard's checks (ssrf.c) and the HTML to text conversion (html_text.c). Unit tests include it;
 * the rest of the program uses tools.h only.
 */
#ifndef SOMA_TOOLS_TOOLS_INT_H
#define SOMA_TOOLS_TOOLS_INT_H

#include <sys/socket.h>

#include "tools/tools.h"

/* ---- built-ins (one file each) ---- */
enum soma_err tool_fetch_page(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap);
enum soma_err tool_memory_recall(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap);
enum soma_err tool_memory_remember(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap);

/* ---- the SSRF guard (ssrf.c) ----
 * An outbound fetch may reach a public unicast address only, unless its URL names an IP address
 * that tools.fetch.allowed_hosts lists (the operator's explicit choice); when that list is not
 * empty, only the hosts it names (exactly, or by a *.suffix pattern) may be fetched at all. */

/* Why the address may not be connected to: NULL for a public unicast address, else a word:
 * "loopback", "private", "link-local", "metadata", "cgnat", "multicast", "unspecified",
 * "reserved", "documentation", "broadcast", "site-local", "unique-local", "tunnel". IPv4-mapped,
 * IPv4-compatible, NAT64 and 6to4 IPv6 forms are judged by the IPv4 address they carry. */
const char *ssrf_addr_refused(const struct sockaddr *sa);
/* Whether list (tools.fetch.allowed_hosts form) names host: an exact name (case-insensitive), a
 * *.suffix pattern (sub-domains only), or the same IP address (brackets around IPv6 ignored). */
bool ssrf_host_listed(const char *list, const char *host);
/* Whether list (same form) names the address itself as an IP literal. fetch.c passes the URL's
 * host when it is a listed IP address: the address connected to must be that one. */
bool ssrf_addr_listed(const char *list, const struct sockaddr *sa);

/* The host of url as fetch_page would connect to it (libcurl's URL parser), lowercased, into host;
 * false when url is NULL, not a URL, or names no host (or libcurl is missing). Any thread. */
bool fetch_url_host(const char *url, char *host, size_t cap);

/* ---- HTML to text (html_text.c) ----
 * The text of an HTML document as a reader sees it: scripts, styles, templates and the head
 * (but its title, as the first line) dropped, block elements on lines of their own, runs of white
 * space folded. charset may be NULL (then the document's own meta, else UTF-8). Elements nested
 * deeper than 256 are left out: then *cut (if cut is not NULL) is set true, else false. Returns a
 * malloc'd NUL-terminated UTF-8 string the caller frees, or NULL on OOM. */
char *html_to_text(const char *html, size_t len, const char *charset, bool *cut);

#endif
