/*
 * curl_dl.c - see curl_dl.h.
 */
#include "llm/curl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

static struct curl_api api;
static const char *failure = "libcurl was not loaded";
static bool loaded;
static void *handle;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Looks a symbol up into *slot; false when it is missing. */
static bool bind_sym(void **slot, const char *name)
{
	*slot = dlsym(handle, name);
	return *slot != NULL;
}

static pthread_key_t handle_key;

static void free_handle(void *h)
{
	api.easy_cleanup(h);
}

static void load(void)
{
	handle = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		failure = "cannot load libcurl.so.4; install Debian's libcurl4 (scripts/deps.sh does)";
		return;
	}
	bool ok = bind_sym((void **)&api.easy_init, "curl_easy_init") &&
		  bind_sym((void **)&api.easy_setopt, "curl_easy_setopt") &&
		  bind_sym((void **)&api.easy_perform, "curl_easy_perform") &&
		  bind_sym((void **)&api.easy_getinfo, "curl_easy_getinfo") &&
		  bind_sym((void **)&api.easy_cleanup, "curl_easy_cleanup") &&
		  bind_sym((void **)&api.easy_reset, "curl_easy_reset") &&
		  bind_sym((void **)&api.easy_pause, "curl_easy_pause") &&
		  bind_sym((void **)&api.easy_strerror, "curl_easy_strerror") &&
		  bind_sym((void **)&api.slist_append, "curl_slist_append") &&
		  bind_sym((void **)&api.slist_free_all, "curl_slist_free_all") &&
		  bind_sym((void **)&api.global_init, "curl_global_init") &&
		  bind_sym((void **)&api.global_cleanup, "curl_global_cleanup") &&
		  bind_sym((void **)&api.multi_init, "curl_multi_init") &&
		  bind_sym((void **)&api.multi_cleanup, "curl_multi_cleanup") &&
		  bind_sym((void **)&api.multi_setopt, "curl_multi_setopt") &&
		  bind_sym((void **)&api.multi_add_handle, "curl_multi_add_handle") &&
		  bind_sym((void **)&api.multi_remove_handle, "curl_multi_remove_handle") &&
		  bind_sym((void **)&api.multi_socket_action, "curl_multi_socket_action") &&
		  bind_sym((void **)&api.multi_assign, "curl_multi_assign") &&
		  bind_sym((void **)&api.multi_info_read, "curl_multi_info_read") &&
		  bind_sym((void **)&api.url, "curl_url") && bind_sym((void **)&api.url_set, "curl_url_set") &&
		  bind_sym((void **)&api.url_get, "curl_url_get") &&
		  bind_sym((void **)&api.url_cleanup, "curl_url_cleanup") &&
		  bind_sym((void **)&api.str_free, "curl_free");
	if (!ok) {
		failure = "libcurl.so.4 lacks a function somaagent needs; upgrade libcurl4";
		return;
	}
	if (pthread_key_create(&handle_key, free_handle) != 0) {
		failure = "cannot create a thread key for libcurl handles";
		return;
	}
	if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		failure = "libcurl could not initialise (curl_global_init failed)";
		return;
	}
	loaded = true;
}

const struct curl_api *curl_api_get(const char **why)
{
	pthread_once(&once, load);
	if (!loaded && why)
		*why = failure;
	return loaded ? &api : NULL;
}

CURL *curl_api_thread_handle(void)
{
	if (!curl_api_get(NULL))
		return NULL;
	CURL *h = pthread_getspecific(handle_key);
	if (h) {
		api.easy_reset(h); /* options go, the connection cache stays */
		return h;
	}
	h = api.easy_init();
	if (h && pthread_setspecific(handle_key, h) != 0) {
		api.easy_cleanup(h);
		h = NULL;
	}
	return h;
}

void curl_api_release(void)
{
	if (loaded)
		api.global_cleanup();
	/* the library stays mapped: threads that used it may still have atexit handlers in it */
}
