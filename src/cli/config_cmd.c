/*
 * config_cmd.c - `somaagent config show|check|docs` and `somaagent migrate`.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/config_show.h"
#include "sched/sched.h"
#include "store/store.h"

int cmd_config(const struct cli *cli)
{
	const char *sub = cli->nargs ? cli->args[0] : "show";
	if (strcmp(sub, "docs") == 0) {
		/* the docs describe defaults: read no file, environment or flags */
		struct cfg_errors errs;
		char *empty_env[] = {NULL};
		struct cfg_load_opts opts = {.config_path = "/dev/null", .env = empty_env};
		if (cfg_load(&opts, &errs) != SOMA_OK)
			return EXIT_RUNTIME;
		cfg_print_docs(stdout);
		return EXIT_OK;
	}
	if (strcmp(sub, "show") != 0 && strcmp(sub, "check") != 0) {
		fprintf(stderr, "somaagent: unknown config command \"%s\"; use show, check or docs\n", sub);
		return EXIT_USAGE;
	}
	if (!cli_load_config(cli))
		return EXIT_USAGE;
	if (strcmp(sub, "check") == 0) {
		char why[512];
		if (!sched_beat_check(why, sizeof(why))) { /* what run would refuse at start */
			fprintf(stderr, "somaagent: %s\n", why);
			return EXIT_USAGE;
		}
		if (cfg_file_path())
			printf("configuration is valid (file %s)\n", cfg_file_path());
		else
			printf("configuration is valid\n");
		return EXIT_OK;
	}
	if (cli->json) {
		json_t *all = cfg_to_json();
		json_dumpf(all, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		fputc('\n', stdout);
		json_decref(all);
	} else {
		cfg_print_text(stdout);
	}
	return EXIT_OK;
}

int cmd_migrate(const struct cli *cli)
{
	if (!cli_load_config(cli))
		return EXIT_USAGE;
	struct store *st;
	char why[512];
	if (store_open_url(cfg_str(CFG_STORE_URL), cfg_str(CFG_DATA_DIR), &st, why, sizeof(why)) != SOMA_OK) {
		fprintf(stderr, "somaagent: %s\n", why);
		return EXIT_RUNTIME;
	}
	int applied = 0, current = 0, latest = 0;
	if (store_schema_newer(st, why, sizeof(why))) {
		store_close(st);
		fprintf(stderr, "somaagent: %s\n", why);
		return EXIT_USAGE; /* this binary cannot run on it: as a configuration error */
	}
	enum soma_err err = store_migrate(st, &applied);
	if (err == SOMA_OK)
		err = store_schema_version(st, &current, &latest);
	store_close(st);
	if (err != SOMA_OK) {
		fprintf(stderr, "somaagent: migration failed (%s)\n",
			cfg_str(CFG_STORE_URL)[0] ? "PostgreSQL at store.url" : cfg_str(CFG_DATA_DIR));
		return EXIT_RUNTIME;
	}
	printf("applied %d migration(s); schema version %d of %d\n", applied, current, latest);
	return EXIT_OK;
}
