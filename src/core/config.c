/*
 * config.c - loading configuration values from their sources (see config.h for the rules; the
 * INI format is config_ini.c's).
 */
#include "core/config.h"
#include "core/config_int.h"
#include "core/url_shown.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

struct cfg_value {
	char *str;	     /* the value as text; owned */
	long long num;	     /* parsed CFG_INT */
	bool b;		     /* parsed CFG_BOOL */
	enum cfg_source src; /* which source set it */
	char origin[160];    /* where exactly: file:line, variable, flag */
};

static struct cfg_value values[CFG_KEY_COUNT];
static char file_path[1024];
static bool file_used;

void cfg_error_add(struct cfg_errors *errs, const char *fmt, ...)
{
	if (errs->count >= CFG_MAX_ERRORS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errs->lines[errs->count++], CFG_ERROR_LEN, fmt, ap);
	va_end(ap);
}

static void expected_form(const struct cfg_key_def *d, char *why, size_t cap)
{
	switch (d->type) {
	case CFG_INT:
		snprintf(why, cap, "expected an integer from %lld to %lld", d->min, d->max);
		break;
	case CFG_BOOL:
		snprintf(why, cap, "expected true or false");
		break;
	case CFG_ENUM:
		snprintf(why, cap, "expected one of %s", d->choices);
		break;
	case CFG_STRING:
		snprintf(why, cap, "expected a string");
		break;
	}
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return *out = true, true;
		if (strcasecmp(s, no[i]) == 0)
			return *out = false, true;
	}
	return false;
}

static bool parse_int(const char *s, long long *out)
{
	if (!*s)
		return false;
	errno = 0;
	char *end;
	long long n = strtoll(s, &end, 10);
	if (errno || *end)
		return false;
	*out = n;
	return true;
}

static bool enum_has(const char *choices, const char *s)
{
	size_t n = strlen(s);
	for (const char *p = choices; p && *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return true;
		p = bar ? bar + 1 : NULL;
	}
	return false;
}

/* Checks raw against the key's type; on success stores it with its source. */
static bool set_value(enum cfg_key key, const char *raw, enum cfg_source src, const char *origin,
		      struct cfg_errors *errs)
{
	const struct cfg_key_def *d = cfg_def(key);
	char why[256] = "";
	long long num = 0;
	bool b = false, ok = true;
	switch (d->type) {
	case CFG_INT:
		ok = parse_int(raw, &num) && num >= d->min && num <= d->max;
		break;
	case CFG_BOOL:
		ok = parse_bool(raw, &b);
		break;
	case CFG_ENUM:
		ok = enum_has(d->choices, raw);
		break;
	case CFG_STRING:
		ok = !d->validate || d->validate(raw, why, sizeof(why));
		break;
	}
	if (!ok) {
		if (!why[0])
			expected_form(d, why, sizeof(why));
		char shown[512];
		const char *echo = raw;
		if (d->secret) {
			echo = "<redacted>";
		} else if (cfg_is_url(key)) {
			url_shown(raw, shown, sizeof(shown)); /* a URL may hold a password: never echoed */
			echo = shown;
		}
		cfg_error_add(errs, "%s: %s = \"%s\" is not valid: %s", origin, d->name, echo, why);
		return false;
	}
	char *copy = strdup(raw);
	if (!copy) {
		cfg_error_add(errs, "%s: %s: out of memory", origin, d->name);
		return false;
	}
	free(values[key].str);
	values[key] = (struct cfg_value){.str = copy, .num = num, .b = b, .src = src};
	snprintf(values[key].origin, sizeof(values[key].origin), "%s", origin);
	return true;
}

/* ---- INI file ------------------------------------------------------------------------------ */

static void ini_on_value(void *user, const char *section, const char *name, const char *value, int line)
{
	struct cfg_errors *errs = user;
	char full[256], origin[1100];
	snprintf(full, sizeof(full), "%s.%s", section, name);
	snprintf(origin, sizeof(origin), "%s:%d", file_path, line);
	enum cfg_key key;
	if (!section[0]) {
		cfg_error_add(errs, "%s: key \"%s\" is outside a [section]; expected e.g. [http] then listen = ...",
			      origin, name);
	} else if (!cfg_find(full, &key)) {
		cfg_error_add(errs, "%s: unknown key \"%s\"; run `somaagent config show` for the valid keys", origin,
			      full);
	} else {
		set_value(key, value, CFG_SRC_FILE, origin, errs);
	}
}

static void load_file(const char *explicit_path, struct cfg_errors *errs)
{
	const char *path = explicit_path;
	if (!path) {
		if (access("somaagent.ini", F_OK) != 0)
			return;
		path = "somaagent.ini";
	}
	snprintf(file_path, sizeof(file_path), "%s", path);
	FILE *f = fopen(path, "r");
	if (!f) {
		cfg_error_add(errs, "--config %s: cannot read the file (%s); check the path and its permissions", path,
			      strerror(errno));
		return;
	}
	file_used = true;
	cfg_ini_parse(f, path, ini_on_value, errs, errs);
	fclose(f);
}

/* ---- environment and flags ------------------------------------------------------------------ */

static const char *env_lookup(char *const *env, const char *name)
{
	size_t n = strlen(name);
	for (char *const *e = env; e && *e; e++) {
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	}
	return NULL;
}

static bool env_http_proxy; /* see cfg_env_http_proxy */

bool cfg_env_http_proxy(void)
{
	return env_http_proxy;
}

/* ---- Kubernetes service links --------------------------------------------------------------
 * Kubernetes gives every pod, for every Service in its namespace, variables named after the
 * Service (upper case, - as _): <NAME>_SERVICE_HOST=10.0.0.11, <NAME>_SERVICE_PORT=6379,
 * <NAME>_SERVICE_PORT_<PORTNAME>=6379, <NAME>_PORT=tcp://10.0.0.11:6379, and per port
 * <NAME>_PORT_6379_TCP=tcp://10.0.0.11:6379 with _PROTO=tcp, _PORT=6379, _ADDR=10.0.0.11. A Service
 * named soma-gateway thus yields SOMA_GATEWAY_SERVICE_HOST. Those are not typos, so they are
 * skipped; a name is taken for one only when its value has the form Kubernetes gives it, so a
 * typo such as SOMA_HTTP_PORT=8080 is still refused. */

static bool all_digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

static bool ip_address(const char *s)
{
	return *s && strspn(s, "0123456789abcdefABCDEF.:") == strlen(s);
}

static bool proto_url(const char *s)
{
	return strncmp(s, "tcp://", 6) == 0 || strncmp(s, "udp://", 6) == 0 || strncmp(s, "sctp://", 7) == 0;
}

/* Whether tail (what follows the Service's name, from its _) and value are one of the forms. */
static bool service_link_tail(const char *tail, const char *value)
{
	static const char *const protos[] = {"TCP", "UDP", "SCTP"};
	if (strcmp(tail, "_SERVICE_HOST") == 0)
		return ip_address(value);
	if (strcmp(tail, "_SERVICE_PORT") == 0 || (strncmp(tail, "_SERVICE_PORT_", 14) == 0 && tail[14]))
		return all_digits(value);
	if (strcmp(tail, "_PORT") == 0)
		return proto_url(value);
	if (strncmp(tail, "_PORT_", 6) != 0)
		return false;
	const char *p = tail + 6;
	size_t digits = strspn(p, "0123456789");
	if (!digits || p[digits] != '_')
		return false;
	p += digits + 1;
	size_t len = 0;
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]) && !len; i++) {
		size_t n = strlen(protos[i]);
		len = strncmp(p, protos[i], n) == 0 && (p[n] == '\0' || p[n] == '_') ? n : 0;
	}
	if (!len)
		return false;
	p += len;
	if (!*p)
		return proto_url(value);
	if (strcmp(p, "_PROTO") == 0)
		return strcmp(value, "tcp") == 0 || strcmp(value, "udp") == 0 || strcmp(value, "sctp") == 0;
	if (strcmp(p, "_PORT") == 0)
		return all_digits(value);
	return strcmp(p, "_ADDR") == 0 && ip_address(value);
}

/* name: a whole SOMA_* variable name. The Service's name is at least "SOMA". */
static bool service_link(const char *name, const char *value)
{
	for (const char *p = strchr(name + 4, '_'); p; p = strchr(p + 1, '_')) {
		if (service_link_tail(p, value))
			return true;
	}
	return false;
}

static void load_env(char *const *env, struct cfg_errors *errs)
{
	/* the variables libcurl reads for an http:// URL (HTTP_PROXY it ignores: "httpoxy") */
	const char *proxies[] = {"http_proxy", "all_proxy", "ALL_PROXY"};
	env_http_proxy = false;
	for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++) {
		const char *v = env_lookup(env, proxies[i]);
		env_http_proxy = env_http_proxy || (v && *v);
	}
	char name[128];
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		const struct cfg_key_def *d = cfg_def((enum cfg_key)i);
		cfg_env_name((enum cfg_key)i, name, sizeof(name));
		const char *v = env_lookup(env, name);
		const char *origin = name;
		if (!v && d->alias_env) {
			v = env_lookup(env, d->alias_env);
			origin = d->alias_env;
		}
		if (v)
			set_value((enum cfg_key)i, v, CFG_SRC_ENV, origin, errs);
	}
	/* a SOMA_ variable that names no key is almost always a typo: say so (not Kubernetes' own) */
	for (char *const *e = env; e && *e; e++) {
		if (strncmp(*e, "SOMA_", 5) != 0)
			continue;
		const char *eq = strchr(*e, '=');
		size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
		bool known = false;
		for (int i = 0; i < CFG_KEY_COUNT && !known; i++) {
			cfg_env_name((enum cfg_key)i, name, sizeof(name));
			known = strlen(name) == n && strncmp(name, *e, n) == 0;
		}
		char whole[256];
		if (!known && n < sizeof(whole)) {
			memcpy(whole, *e, n);
			whole[n] = '\0';
			known = service_link(whole, eq ? eq + 1 : "");
		}
		if (!known)
			cfg_error_add(errs,
				      "%.*s: unknown environment variable; SOMA_* variables must name a key, "
				      "e.g. SOMA_HTTP_LISTEN for http.listen",
				      (int)(n > 100 ? 100 : n), *e);
	}
}

static void load_flags(const char *const *sets, size_t nsets, struct cfg_errors *errs)
{
	for (size_t i = 0; i < nsets; i++) {
		const char *eq = strchr(sets[i], '=');
		char name[256], origin[300];
		if (!eq || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof(name)) {
			cfg_error_add(errs, "--set %s: expected key=value, e.g. --set http.listen=127.0.0.1:9090",
				      sets[i]);
			continue;
		}
		memcpy(name, sets[i], (size_t)(eq - sets[i]));
		name[eq - sets[i]] = '\0';
		snprintf(origin, sizeof(origin), "--set %s", name);
		enum cfg_key key;
		if (!cfg_find(name, &key))
			cfg_error_add(errs,
				      "--set %s: unknown key \"%s\"; run `somaagent config show` for the valid keys",
				      name, name);
		else
			set_value(key, eq + 1, CFG_SRC_FLAG, origin, errs);
	}
}

enum soma_err cfg_load(const struct cfg_load_opts *opts, struct cfg_errors *errs)
{
	errs->count = 0;
	cfg_unload();
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		if (!set_value((enum cfg_key)i, cfg_def((enum cfg_key)i)->def, CFG_SRC_DEFAULT, "default", errs))
			return SOMA_ERR_CONFIG; /* a broken default is a programmer error, reported anyway */
	}
	load_file(opts->config_path, errs);
	load_env(opts->env ? opts->env : environ, errs);
	load_flags(opts->sets, opts->nsets, errs);
	return errs->count ? SOMA_ERR_CONFIG : SOMA_OK;
}

void cfg_unload(void)
{
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		free(values[i].str);
		values[i] = (struct cfg_value){0};
	}
	file_path[0] = '\0';
	file_used = false;
}

const char *cfg_str(enum cfg_key key)
{
	return values[key].str ? values[key].str : "";
}
long long cfg_int(enum cfg_key key)
{
	return values[key].num;
}
bool cfg_bool(enum cfg_key key)
{
	return values[key].b;
}
enum cfg_source cfg_source_of(enum cfg_key key)
{
	return values[key].src;
}
const char *cfg_origin(enum cfg_key key)
{
	return values[key].origin;
}
const char *cfg_file_path(void)
{
	return file_used ? file_path : NULL;
}

const char *cfg_source_name(enum cfg_source src)
{
	static const char *const names[] = {"default", "file", "env", "flag"};
	return names[src];
}
