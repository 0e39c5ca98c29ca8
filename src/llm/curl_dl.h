/*
 * curl_dl.h - libcurl, loaded when the first provider call is made.
 *
 * DESIGN: libcurl brings some thirty libraries with it (TLS, Kerberos, LDAP, ...). Linking it
 * would load them all at every start: several milliseconds and about 5 MB of resident memory
 * for processes (gateway nodes, workers without LLM work) that may never call a provider. So
 * the binary uses libcurl's headers for types only and dlopen()s libcurl.so.4 once, on first
 * use; the functions are reached through the table below.
 */
#ifndef SOMA_LLM_CURL_DL_H
#define SOMA_LLM_CURL_DL_H

#include <curl/curl.h>

struct curl_api {
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
	CURLcode (*easy_perform)(CURL *curl);
	CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *curl);
	void (*easy_reset)(CURL *curl);
	const char *(*easy_strerror)(CURLcode code);
	CURLcode (*easy_pause)(CURL *curl, int bitmask);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
	void (*slist_free_all)(struct curl_slist *list);
	CURLcode (*global_init)(long flags);
	void (*global_cleanup)(void);
	/* the multi interface, for transfers driven by an io thread's event loop (async.c) */
	CURLM *(*multi_init)(void);
	CURLMcode (*multi_cleanup)(CURLM *multi);
	CURLMcode (*multi_setopt)(CURLM *multi, CURLMoption option, ...);
	CURLMcode (*multi_add_handle)(CURLM *multi, CURL *curl);
	CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *curl);
	CURLMcode (*multi_socket_action)(CURLM *multi, curl_socket_t s, int ev_bitmask, int *running);
	CURLMcode (*multi_assign)(CURLM *multi, curl_socket_t s, void *sockp);
	CURLMsg *(*multi_info_read)(CURLM *multi, int *msgs_in_queue);
	/* parsed URLs, so a URL used by every call is parsed once (call.c's llm_setup) */
	CURLU *(*url)(void);
	CURLUcode (*url_set)(CURLU *u, CURLUPart what, const char *part, unsigned int flags);
	CURLUcode (*url_get)(CURLU *u, CURLUPart what, char **part, unsigned int flags);
	void (*url_cleanup)(CURLU *u);
	void (*str_free)(void *p); /* curl_free: what url_get returned */
};

/* Loads and initialises libcurl on the first call (thread-safe); NULL when it cannot be
 * loaded, with a reason in *why (static storage). */
const struct curl_api *curl_api_get(const char **why);
/* This thread's easy handle, reset and ready for a new transfer: kept across calls so that
 * connections to the provider are reused (no TCP/TLS handshake per request); freed when the
 * thread exits. NULL when libcurl is not loaded or on OOM. */
CURL *curl_api_thread_handle(void);
/* Releases libcurl's global state if it was loaded (process exit). */
void curl_api_release(void);

#endif
