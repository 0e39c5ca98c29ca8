/*
 * config.h - the one configuration of the process.
 *
 * DESIGN: keys are declared once in config_keys.h. cfg_load() fills every key from its sources,
 * lowest to highest: built-in default < INI file (--config FILE, else ./somaagent.ini if present)
 * < environment (SOMA_SECTION_KEY, and well-known aliases such as GROQ_API_KEY) < --set key=value.
 * Each value remembers its source and origin (file:line, variable name, or flag) so errors and
 * `config show` can say where it came from. Loading happens on the main thread before any other
 * thread starts; afterwards the values are read-only and safe to read from every thread.
 * This module is the only place in the program that reads the environment.
 */
#ifndef SOMA_CORE_CONFIG_H
#define SOMA_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config_keys.h"
#include "core/err.h"

enum cfg_type { CFG_STRING, CFG_INT, CFG_BOOL, CFG_ENUM };
enum cfg_source { CFG_SRC_DEFAULT, CFG_SRC_FILE, CFG_SRC_ENV, CFG_SRC_FLAG };

enum cfg_key {
#define CFG_ENUM_ID(id, ...) CFG_##id,
	CFG_KEYS(CFG_ENUM_ID)
#undef CFG_ENUM_ID
		CFG_KEY_COUNT
};

typedef bool (*cfg_validate_fn)(const char *value, char *why, size_t why_cap);

struct cfg_key_def {
	const char *name;	  /* "section.key" */
	enum cfg_type type;	  /* how the value is parsed */
	const char *def;	  /* default, as a string */
	long long min, max;	  /* bounds for CFG_INT */
	const char *choices;	  /* "a|b|c" for CFG_ENUM */
	cfg_validate_fn validate; /* extra check for CFG_STRING, or NULL */
	bool secret;		  /* redacted in every output */
	const char *alias_env;	  /* well-known environment alias, or NULL */
	const char *doc;	  /* one line of documentation */
};

#define CFG_MAX_ERRORS 16
#define CFG_ERROR_LEN  512

struct cfg_errors {
	int count;				   /* number of lines filled */
	char lines[CFG_MAX_ERRORS][CFG_ERROR_LEN]; /* one human line each */
};

struct cfg_load_opts {
	const char *config_path; /* --config FILE, or NULL to try ./somaagent.ini */
	const char *const *sets; /* --set key=value strings; may be NULL */
	size_t nsets;		 /* number of entries in sets */
	char *const *env;	 /* environment to read; NULL means the process environment */
};

/* The definition of a key (static storage). */
const struct cfg_key_def *cfg_def(enum cfg_key key);
/* Whether the key's value is a URL (its validator checks for one: llm.base_url, store.url, ...).
 * Such a value is shown only through url_shown(): without user, password, query or fragment. */
bool cfg_is_url(enum cfg_key key);
/* Finds a key by "section.key"; returns false when there is none. */
bool cfg_find(const char *name, enum cfg_key *out);
/* Environment variable name of a key, e.g. SOMA_HTTP_LISTEN, written into out. */
void cfg_env_name(enum cfg_key key, char *out, size_t cap);

/* One item of a comma-separated list setting (queue.routes, queue.queues, queue.rate_limits),
 * spaces around ',' and '=' trimmed. The spans are borrowed from the setting's string. */
struct cfg_pair {
	const char *item; /* the whole item */
	size_t ilen;	  /* its length */
	const char *key;  /* before '=' (the whole item when there is none) */
	size_t klen;	  /* its length */
	const char *val;  /* after '=' */
	size_t vlen;	  /* its length (0 without '=') */
	bool has_eq;	  /* the item holds '=' */
};
/* Reads the item at *p into out and moves *p past it; false at the end of the list. The list
 * settings are validated at load, so each item of a loaded value is well formed. */
bool cfg_list_next(const char **p, struct cfg_pair *out);

/* Loads every key from its sources. On SOMA_ERR_CONFIG, errs holds one line per problem
 * naming the key, the source and the expected form. Replaces any previous load. */
enum soma_err cfg_load(const struct cfg_load_opts *opts, struct cfg_errors *errs) SOMA_MUST_CHECK;
/* Frees loaded values (for tests and clean exit). */
void cfg_unload(void);

/* Typed reads of a loaded key. Strings are owned by the config module. */
const char *cfg_str(enum cfg_key key);
long long cfg_int(enum cfg_key key);
bool cfg_bool(enum cfg_key key);
enum cfg_source cfg_source_of(enum cfg_key key);
/* Where the value came from: "default", "somaagent.ini:12", "SOMA_HTTP_LISTEN", "--set". */
const char *cfg_origin(enum cfg_key key);
const char *cfg_source_name(enum cfg_source src);
/* Path of the INI file that was read, or NULL. */
const char *cfg_file_path(void);
/* Whether the environment read by the last cfg_load names a proxy that libcurl would use for an
 * http:// URL (http_proxy, all_proxy or ALL_PROXY set and not empty). The LLM client then sends
 * plain-HTTP provider calls through libcurl, which honours it (and no_proxy), rather than
 * connecting directly (src/llm/h1_conn.h). */
bool cfg_env_http_proxy(void);

/* Parses "host:port" / "[v6]:port"; host gets the bare address. False when malformed. */
bool cfg_parse_listen(const char *value, char *host, size_t host_cap, int *port);
/* True when the listen host is a loopback address (127.0.0.0/8, ::1, localhost). */
bool cfg_listen_is_loopback(const char *host);

#endif
