/*
 * main.c - the somaagent command line: run, config, migrate, keys, health, backup, restore, version.
 * The only entry point of the product; every service starts through `somaagent run`.
 */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"

static void usage(FILE *out)
{
	fputs("usage: somaagent <command> [options]\n"
	      "commands:\n"
	      "  run [--role all|gateway|worker] [--dry-run]   start the services (default role: all)\n"
	      "  config show [--json] | check | docs           print or check the configuration\n"
	      "  migrate                                       apply database migrations under data.dir\n"
	      "  keys create --tenant T [--scope admin] [--name N] [--json] | list [--json] | revoke ID\n"
	      "  health [--url http://host:port[/path]]        probe /v1/health (default: http.listen); exit 0 "
	      "ok|degraded\n"
	      "  backup DEST_DIR                               copy data.dir's database and upload files "
	      "(online)\n"
	      "  restore SRC_DIR                               put a backup into an empty data.dir\n"
	      "  version                                       print the version\n"
	      "options for every command: --config FILE, --set key=value (repeatable)\n",
	      out);
}

bool cli_parse(int argc, char **argv, int first, struct cli *cli)
{
	memset(cli, 0, sizeof(*cli));
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = NULL;
		if (strcmp(a, "--config") == 0)
			slot = &cli->config_path;
		else if (strcmp(a, "--role") == 0)
			slot = &cli->role;
		else if (strcmp(a, "--tenant") == 0)
			slot = &cli->tenant;
		else if (strcmp(a, "--scope") == 0)
			slot = &cli->scope;
		else if (strcmp(a, "--name") == 0)
			slot = &cli->name;
		else if (strcmp(a, "--url") == 0)
			slot = &cli->url;
		if (slot || strcmp(a, "--set") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "somaagent: %s needs a value\n", a);
				return false;
			}
			if (slot && *slot) {
				fprintf(stderr, "somaagent: %s given twice; give it once%s\n", a,
					slot == &cli->scope ? " with every scope, e.g. --scope \"admin chat\"" : "");
				return false;
			}
			if (slot) {
				*slot = argv[++i];
			} else if (cli->nsets == CLI_MAX_SETS) {
				fprintf(stderr, "somaagent: at most %d --set options\n", CLI_MAX_SETS);
				return false;
			} else {
				cli->sets[cli->nsets++] = argv[++i];
			}
		} else if (strcmp(a, "--dry-run") == 0) {
			cli->dry_run = true;
		} else if (strcmp(a, "--json") == 0) {
			cli->json = true;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "somaagent: unknown option %s; run `somaagent help`\n", a);
			return false;
		} else if (cli->nargs == CLI_MAX_ARGS) {
			fprintf(stderr, "somaagent: too many arguments\n");
			return false;
		} else {
			cli->args[cli->nargs++] = a;
		}
	}
	return true;
}

bool cli_load_config(const struct cli *cli)
{
	struct cfg_errors errs;
	struct cfg_load_opts opts = {.config_path = cli->config_path, .sets = cli->sets, .nsets = cli->nsets};
	if (cfg_load(&opts, &errs) == SOMA_OK) {
		enum log_level level = LOG_INFO;
		(void)log_level_parse(cfg_str(CFG_LOG_LEVEL), &level);
		log_setup(level, strcmp(cfg_str(CFG_LOG_FORMAT), "text") == 0 ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON);
		return true;
	}
	for (int i = 0; i < errs.count; i++)
		fprintf(stderr, "somaagent: config error: %s\n", errs.lines[i]);
	return false;
}

int main(int argc, char **argv)
{
	/* glibc returns freed heap to the kernel eagerly (madvise on every trim), which under load
	 * costs a TLB shootdown across cores per call; keep up to 16 MiB of free heap instead, and
	 * keep allocations under 1 MiB off mmap. Measured: a quarter of the store writer's time. */
	mallopt(M_TRIM_THRESHOLD, 16 << 20);
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("somaagent %s\n", SOMA_VERSION);
		return EXIT_OK;
	}
	struct cli cli;
	if (!cli_parse(argc, argv, 2, &cli) || !cli_check(cmd, &cli))
		return EXIT_USAGE;
	int rc;
	if (strcmp(cmd, "run") == 0)
		rc = cmd_run(&cli);
	else if (strcmp(cmd, "config") == 0)
		rc = cmd_config(&cli);
	else if (strcmp(cmd, "keys") == 0)
		rc = cmd_keys(&cli);
	else if (strcmp(cmd, "migrate") == 0)
		rc = cmd_migrate(&cli);
	else if (strcmp(cmd, "health") == 0)
		rc = cmd_health(&cli);
	else if (strcmp(cmd, "backup") == 0)
		rc = cmd_backup(&cli);
	else if (strcmp(cmd, "restore") == 0)
		rc = cmd_restore(&cli);
	else {
		fprintf(stderr, "somaagent: unknown command \"%s\"\n", cmd);
		usage(stderr);
		rc = EXIT_USAGE;
	}
	cfg_unload();
	return rc;
}
