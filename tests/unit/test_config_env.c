/*
 * test_config_env.c - unknown SOMA_* environment variables (src/core/config.c, load_env): a typo
 * stops start-up, the service-link variables Kubernetes sets for every Service (a Service named
 * soma-gateway yields SOMA_GATEWAY_SERVICE_HOST and friends) do not.
 *
 * DESIGN: every load passes an explicit environment, never the process's own, and no INI file
 * (an empty one made with mkstemp).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "helpers.h"

static struct cfg_errors errs;
static char ini_path[64];

static void teardown(void)
{
	cfg_unload();
	if (ini_path[0])
		unlink(ini_path);
	ini_path[0] = '\0';
}

TestSuite(config_env, .fini = teardown);

static enum soma_err load(char **env)
{
	tmpfile_write("", ini_path, sizeof(ini_path));
	struct cfg_load_opts o = {.config_path = ini_path, .env = env};
	return cfg_load(&o, &errs);
}

static const char *all_errors(void)
{
	static char buf[CFG_MAX_ERRORS * (CFG_ERROR_LEN + 1) + 1];
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; i < errs.count; i++)
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s\n", errs.lines[i]);
	return errs.count ? buf : "(no error lines)";
}

/* True when an error line names the variable var (followed by its ':'). */
static bool refused(const char *var)
{
	char head[128];
	snprintf(head, sizeof(head), "%s: unknown environment variable", var);
	for (int i = 0; i < errs.count; i++) {
		if (strncmp(errs.lines[i], head, strlen(head)) == 0)
			return true;
	}
	return false;
}

Test(config_env, kubernetes_service_links_are_not_typos)
{
	/* what a pod sees for Services soma-gateway (port 8080, unnamed), soma (named port http) and
	 * soma-redis (ports 6379/TCP and 9121/UDP) */
	char *env[] = {"SOMA_GATEWAY_SERVICE_HOST=10.96.12.7",
		       "SOMA_GATEWAY_SERVICE_PORT=8080",
		       "SOMA_GATEWAY_PORT=tcp://10.96.12.7:8080",
		       "SOMA_GATEWAY_PORT_8080_TCP=tcp://10.96.12.7:8080",
		       "SOMA_GATEWAY_PORT_8080_TCP_PROTO=tcp",
		       "SOMA_GATEWAY_PORT_8080_TCP_PORT=8080",
		       "SOMA_GATEWAY_PORT_8080_TCP_ADDR=10.96.12.7",
		       "SOMA_SERVICE_HOST=fd00::12",
		       "SOMA_SERVICE_PORT=80",
		       "SOMA_SERVICE_PORT_HTTP=80",
		       "SOMA_PORT=tcp://[fd00::12]:80",
		       "SOMA_PORT_80_TCP=tcp://[fd00::12]:80",
		       "SOMA_REDIS_PORT_9121_UDP=udp://10.96.0.9:9121",
		       "SOMA_REDIS_PORT_9121_UDP_PROTO=udp",
		       "SOMA_REDIS_PORT_6379_SCTP_ADDR=10.96.0.9",
		       "SOMA_HTTP_IO_THREADS=2",
		       NULL};
	cr_assert_eq(load(env), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 2, "a real key beside them still applies");
}

Test(config_env, typos_are_still_refused)
{
	char *env[] = {"SOMA_HTTP_LISTN=127.0.0.1:1",		  /* a misspelt key */
		       "SOMA_HTTP_PORT=8080",			  /* _PORT, but Kubernetes' value is tcp://.. */
		       "SOMA_GATEWAY_SERVICE_HOST=gateway.local", /* not an address */
		       "SOMA_GATEWAY_SERVICE_PORT=http",	  /* not a number */
		       "SOMA_X_PORT_80_HTTP=tcp://10.0.0.1:80",	  /* no such protocol */
		       "SOMA_X_PORT_80_TCP_HOST=10.0.0.1",	  /* no such suffix */
		       "SOMA_X_PORT_TCP=tcp://10.0.0.1:80",	  /* no port number */
		       "SOMA_SERVICE_PORT_=80",			  /* empty port name */
		       NULL};
	cr_assert_eq(load(env), SOMA_ERR_CONFIG);
	for (char **e = env; *e; e++) {
		char var[64];
		snprintf(var, sizeof(var), "%.*s", (int)(strchr(*e, '=') - *e), *e);
		cr_assert(refused(var), "%s should be refused; got:\n%s", var, all_errors());
	}
	cr_assert_eq(errs.count, 8, "%s", all_errors());
}
