/*
 * cli_args.c - the command line's options (--config, --set, --role, ...) and loading the
 * configuration they name. In the library, not in main.c, so every command and harness that
 * links libsoma finds them.
 *
 * DESIGN: cli_parse only fills `struct cli` with pointers into argv (no copies, nothing to free);
 * cli_load_config loads the configuration and sets up logging, printing every error to stderr.
 * Main thread only.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"

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
