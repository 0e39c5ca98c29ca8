/*
 * run.c - `somaagent run`: configuration -> safety checks -> services in order -> main loop ->
 * graceful shutdown.
 *
 * DESIGN: termination signals are blocked in every thread before any thread starts, and the
 * main thread takes them with sigtimedwait between its timers (health poll, key-cache refresh),
 * so no handler ever runs in the middle of other work. After the first SIGTERM/SIGINT a real
 * handler is installed: a second signal exits at once (128 + signal), even while draining.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bus/bus.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/config_show.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/otlp.h"
#include "gateway/gateway.h"
#include "identity/identity.h"
#include "llm/llm.h"
#include "orchestrator/app.h"
#include "sched/sched.h"

struct app app;

int app_grace_left_ms(void)
{
	long long grace_ms = cfg_int(CFG_SHUTDOWN_GRACE_S) * 1000;
	if (!app.stop_end_ns)
		return (int)grace_ms;
	uint64_t now = clock_mono_ns();
	return now >= app.stop_end_ns ? 0 : (int)((app.stop_end_ns - now) / 1000000);
}

static bool parse_role(const char *s, unsigned *out)
{
	if (!s || strcmp(s, "all") == 0)
		*out = ROLE_ALL;
	else if (strcmp(s, "gateway") == 0)
		*out = ROLE_GATEWAY;
	else if (strcmp(s, "worker") == 0)
		*out = ROLE_WORKER;
	else
		return false;
	return true;
}

static const char *role_name(unsigned role)
{
	return role == ROLE_ALL ? "all" : role == ROLE_GATEWAY ? "gateway" : "worker";
}

/* Counts valid keys in the store without creating anything; -1 when there is no database. */
static long count_keys(void)
{
	char path[4200], why[256];
	snprintf(path, sizeof(path), "%s/somaagent.db", cfg_str(CFG_DATA_DIR));
	if (!cfg_str(CFG_STORE_URL)[0] && access(path, F_OK) != 0)
		return -1;
	struct store *st;
	if (store_open_url(cfg_str(CFG_STORE_URL), cfg_str(CFG_DATA_DIR), &st, why, sizeof(why)) != SOMA_OK)
		return -1;
	struct store_key *keys = NULL;
	size_t n = 0;
	long valid = 0;
	if (store_key_list(st, &keys, &n) == SOMA_OK) {
		for (size_t i = 0; i < n; i++)
			valid += keys[i].revoked_ms == 0;
	}
	free(keys);
	store_close(st);
	return valid;
}

/* Decides the auth mode; false (with why) when a public address would have no credentials. */
static bool check_auth_safety(char *why, size_t cap)
{
	char host[256];
	int port;
	if (!cfg_parse_listen(cfg_str(CFG_HTTP_LISTEN), host, sizeof(host), &port))
		return false;
	bool loopback = cfg_listen_is_loopback(host), has_token = cfg_str(CFG_AUTH_ADMIN_TOKEN)[0] != '\0';
	bool jwt = cfg_str(CFG_AUTH_JWT_SECRET)[0] || cfg_str(CFG_AUTH_JWT_PUBLIC_KEY)[0] ||
		   cfg_str(CFG_AUTH_JWT_JWKS_URL)[0]; /* JWTs configured: credentials are expected */
	app.anonymous = loopback && !cfg_bool(CFG_AUTH_REQUIRE) && !has_token && !jwt;
	if (loopback || has_token || jwt || count_keys() > 0)
		return true;
	snprintf(why, cap,
		 "http.listen %s is not a loopback address and no API key exists; create one with "
		 "`somaagent keys create --tenant NAME --scope admin` (or set auth.admin_token, e.g. the "
		 "environment variable SOMA_AUTH_ADMIN_TOKEN=<32 or more random characters>, or JWTs with "
		 "auth.jwt_*), then start again",
		 cfg_str(CFG_HTTP_LISTEN));
	return false;
}

static int print_plan(unsigned role)
{
	json_t *plan =
		json_pack("{s:s, s:s, s:s, s:o, s:s, s:o}", "version", SOMA_VERSION, "role", role_name(role), "listen",
			  cfg_str(CFG_HTTP_LISTEN), "services", registry_plan_json(app.registry, role), "auth",
			  app.anonymous ? "anonymous on loopback until a key exists" : "api keys required", "config",
			  cfg_values_json());
	json_dumpf(plan, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(plan);
	return EXIT_OK;
}

static struct timespec first_signal; /* when shutdown began (CLOCK_MONOTONIC) */
static bool hup_stops;		     /* SIGHUP stops the run (not ignored when it started: nohup) */

static void on_second_signal(int sig)
{
	/* async-signal-safe: no stdio, no locks; the line has the fields of every log line. A repeat
	 * within a second is the same stop delivered twice (make forwards the SIGTERM its process
	 * group got, `timeout` signals both the child and its group), not a user's second ask. */
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if ((now.tv_sec - first_signal.tv_sec) * 1000000000L + (now.tv_nsec - first_signal.tv_nsec) < 1000000000L)
		return;
	static const char head[] = "{\"ts\":\"";
	static const char tail[] = "\",\"level\":\"warn\",\"msg\":\"second signal: exiting at once\","
				   "\"service\":\"orchestrator\"}\n";
	char line[sizeof(head) + CLOCK_RFC3339_LEN + sizeof(tail)];
	size_t n = sizeof(head) - 1;
	memcpy(line, head, n);
	clock_rfc3339_now_signal_safe(line + n);
	n += CLOCK_RFC3339_TEXT;
	memcpy(line + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
	_exit(128 + sig);
}

static void arm_second_signal(const sigset_t *set)
{
	struct sigaction sa = {.sa_handler = on_second_signal};
	sigemptyset(&sa.sa_mask);
	clock_gettime(CLOCK_MONOTONIC, &first_signal);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (hup_stops)
		sigaction(SIGHUP, &sa, NULL);
	pthread_sigmask(SIG_UNBLOCK, set, NULL);
}

/* Runs timers until a termination signal arrives; returns the signal. */
static int main_loop(const sigset_t *set)
{
	const uint64_t health_ns = (uint64_t)cfg_int(CFG_HEALTH_INTERVAL_MS) * 1000000ull;
	const uint64_t keys_ns = (uint64_t)cfg_int(CFG_AUTH_KEY_REFRESH_MS) * 1000000ull;
	uint64_t next_health = clock_mono_ns() + health_ns, next_keys = clock_mono_ns() + keys_ns;
	for (;;) {
		uint64_t now = clock_mono_ns(), next = next_health < next_keys ? next_health : next_keys;
		uint64_t wait = next > now ? next - now : 0;
		struct timespec ts = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig > 0)
			return sig;
		now = clock_mono_ns();
		if (now >= next_keys) {
			if ((app.role & ROLE_ALL) && auth_cache_refresh() != SOMA_OK)
				log_warn("auth", "cannot refresh API keys from the store; serving the last known keys");
			next_keys = now + keys_ns;
		}
		if (now >= next_health) {
			bus_sweep();
			gateway_upload_sweep_tick();
			registry_poll(app.registry);
			next_health = now + health_ns;
		}
	}
}

/* File descriptors the process needs besides client connections: store, queue, bus, logs,
 * eventfds, worker pipes, outbound HTTP. A rough bound, for the warning below only. */
#define FD_RESERVE 128

/* Raises the soft open-files limit to the hard one (the soft default, often 1024, is far below
 * what a gateway needs, and only the hard limit is the operator's choice), then warns when
 * http.max_connections cannot be reached within it: past that point accept() fails with EMFILE
 * and new connections wait in the backlog (http/server.c) instead of being refused. */
static void raise_open_files(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit want = {rl.rlim_max, rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl.rlim_cur = rl.rlim_max;
	}
	long long max_conns = cfg_int(CFG_HTTP_MAX_CONNECTIONS);
	if (rl.rlim_cur == RLIM_INFINITY || (long long)rl.rlim_cur - FD_RESERVE >= max_conns)
		return;
	long long usable = (long long)rl.rlim_cur > FD_RESERVE ? (long long)rl.rlim_cur - FD_RESERVE : 0;
	/* a warning when the operator asked for more; with the default (100000) a note: most
	 * deployments never come near either number */
	enum log_level level = cfg_source_of(CFG_HTTP_MAX_CONNECTIONS) == CFG_SRC_DEFAULT ? LOG_INFO : LOG_WARN;
	log_emit(level, "orchestrator", NULL, 0,
		 "http.max_connections = %lld but the open-files limit is %llu (about %lld connections after "
		 "the store, queue and log files); beyond that new connections wait until some close: raise "
		 "the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower http.max_connections",
		 max_conns, (unsigned long long)rl.rlim_cur, usable);
}

static void register_build_info(void)
{
	static const char *const labels[] = {"version", NULL};
	struct metric_family *f = metrics_gauge("soma_build_info", "Build information; the value is always 1.", labels);
	const char *v[] = {SOMA_VERSION};
	if (f)
		metric_set(metric_series(f, v), 1);
	metrics_process_register();
	llm_metrics_register(); /* every soma_llm_* series from the start: rate() begins at 0 */
}

int cmd_run(const struct cli *cli)
{
	unsigned role;
	if (!parse_role(cli->role, &role)) {
		fprintf(stderr, "somaagent: --role %s: expected all, gateway or worker\n", cli->role);
		return EXIT_USAGE;
	}
	if (!cli_load_config(cli))
		return EXIT_USAGE;
	char why[1024];
	app.role = role;
	if (!check_auth_safety(why, sizeof(why))) {
		fprintf(stderr, "somaagent: %s\n", why);
		return EXIT_USAGE;
	}
	app.registry = registry_new(SOMA_VERSION);
	if (!app.registry || services_register() != SOMA_OK) {
		fprintf(stderr, "somaagent: cannot set up the service registry\n");
		registry_free(app.registry);
		return EXIT_RUNTIME;
	}
	if (cli->dry_run) {
		if (!sched_beat_check(why, sizeof(why))) { /* what the beat service would refuse at start */
			fprintf(stderr, "somaagent: %s\n", why);
			registry_free(app.registry);
			return EXIT_USAGE;
		}
		int rc = print_plan(role);
		registry_free(app.registry);
		return rc;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	struct sigaction hup;
	sigaction(SIGHUP, NULL, &hup);
	hup_stops = hup.sa_handler != SIG_IGN; /* (under nohup the terminal's hangup is not ours) */
	if (hup_stops)
		sigaddset(&set, SIGHUP); /* a closed terminal or ssh session: a graceful stop too */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_open_files();
	register_build_info();
	if (llm_global_init() != SOMA_OK) {
		fprintf(stderr, "somaagent: cannot initialise libcurl\n");
		registry_free(app.registry);
		return EXIT_RUNTIME;
	}
	if (otlp_start() != SOMA_OK) {
		registry_free(app.registry);
		llm_global_deinit();
		return EXIT_RUNTIME;
	}
	uint64_t t0 = clock_mono_ns();
	enum soma_err err = registry_start(app.registry, role, why, sizeof(why));
	if (err != SOMA_OK) {
		fprintf(stderr, "somaagent: %s\n", why);
		otlp_stop((long)cfg_int(CFG_OTEL_TIMEOUT_MS));
		registry_free(app.registry);
		metrics_reset();
		llm_global_deinit();
		return app.start_unfixable || err == SOMA_ERR_CONFIG ? EXIT_USAGE
								     : EXIT_RUNTIME; /* (the operator must act first) */
	}
	log_info("orchestrator", "somaagent %s ready in %.1f ms: role %s, http://%s, status %s", SOMA_VERSION,
		 (double)(clock_mono_ns() - t0) / 1e6, role_name(role), cfg_str(CFG_HTTP_LISTEN),
		 registry_overall(app.registry));
	if (app.anonymous && !auth_cache_keys_exist())
		log_warn("auth",
			 "no API keys exist: requests without credentials run as tenant \"%s\" (loopback only); "
			 "create a key with `somaagent keys create --tenant NAME` to require keys",
			 cfg_str(CFG_AUTH_DEFAULT_TENANT));
	int sig = main_loop(&set);
	log_info("orchestrator",
		 "received %s; shutting down (shutdown.grace_s = %lld); send it again (a second later) to exit at once",
		 sig == SIGTERM	 ? "SIGTERM"
		 : sig == SIGHUP ? "SIGHUP"
				 : "SIGINT",
		 cfg_int(CFG_SHUTDOWN_GRACE_S));
	arm_second_signal(&set);
	app.stop_end_ns = clock_mono_ns() + (uint64_t)cfg_int(CFG_SHUTDOWN_GRACE_S) * 1000000000u;
	registry_stop(app.registry);
	/* after the services: the spans of the last requests and tasks go out too, in what the grace
	 * left (at least 1 s, so a grace used up by the stops still sends them to a live collector) */
	int left = app_grace_left_ms();
	otlp_stop(left > 1000 ? left : 1000);
	services_free();
	registry_free(app.registry);
	metrics_reset();
	llm_global_deinit();
	log_info("orchestrator", "shutdown complete");
	return EXIT_OK;
}
