/*
 * cli_check.c - which words and options each command takes: a word or an option the command
 * does not use is refused (exit 2) instead of being ignored, so `run worker` does not start
 * role all and `keys revoke A B` does not revoke A alone.
 *
 * DESIGN: one table row per command (and subcommand): how many positional words it takes and
 * which options apply. An unknown command or subcommand is left to the command itself, which
 * names the valid ones. Main thread only, before the configuration is loaded.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

enum { OPT_ROLE = 1, OPT_DRY_RUN = 2, OPT_JSON = 4, OPT_TENANT = 8, OPT_SCOPE = 16, OPT_NAME = 32, OPT_URL = 64 };

struct cmd_shape {
	const char *cmd;   /* command */
	const char *sub;   /* subcommand (args[0]), or NULL when the command takes none */
	size_t max_words;  /* positional words, the subcommand included */
	unsigned opts;	   /* OPT_* that apply */
	const char *usage; /* what is expected, for the message */
};

static const struct cmd_shape shapes[] = {
	{"run", NULL, 0, OPT_ROLE | OPT_DRY_RUN, "run [--role all|gateway|worker] [--dry-run]"},
	{"migrate", NULL, 0, 0, "migrate"},
	{"health", NULL, 0, OPT_URL, "health [--url http://host:port[/path]]"},
	{"backup", NULL, 1, 0, "backup DEST_DIR"},
	{"restore", NULL, 1, 0, "restore SRC_DIR"},
	{"config", "show", 1, OPT_JSON, "config show [--json]"},
	{"config", "check", 1, 0, "config check"},
	{"config", "docs", 1, 0, "config docs"},
	{"keys", "create", 1, OPT_TENANT | OPT_SCOPE | OPT_NAME | OPT_JSON,
	 "keys create --tenant T [--scope S] [--name N] [--json]"},
	{"keys", "list", 1, OPT_JSON, "keys list [--json]"},
	{"keys", "revoke", 2, 0, "keys revoke ID"},
};

static const struct cmd_shape *find_shape(const char *cmd, const struct cli *cli)
{
	const char *sub = cli->nargs ? cli->args[0] : NULL;
	if (strcmp(cmd, "config") == 0 && !sub)
		sub = "show";
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		const struct cmd_shape *s = &shapes[i];
		if (strcmp(s->cmd, cmd) == 0 && (!s->sub || (sub && strcmp(s->sub, sub) == 0)))
			return s;
	}
	return NULL;
}

bool cli_check(const char *cmd, const struct cli *cli)
{
	const struct cmd_shape *s = find_shape(cmd, cli);
	if (!s)
		return true;
	if (cli->nargs > s->max_words) {
		fprintf(stderr, "somaagent: unexpected argument \"%s\"; expected: somaagent %s\n",
			cli->args[s->max_words], s->usage);
		return false;
	}
	struct {
		unsigned bit;	  /* OPT_* */
		bool given;	  /* on the command line */
		const char *name; /* as typed */
	} given[] = {
		{OPT_ROLE, cli->role != NULL, "--role"},
		{OPT_DRY_RUN, cli->dry_run, "--dry-run"},
		{OPT_JSON, cli->json, "--json"},
		{OPT_TENANT, cli->tenant != NULL, "--tenant"},
		{OPT_SCOPE, cli->scope != NULL, "--scope"},
		{OPT_NAME, cli->name != NULL, "--name"},
		{OPT_URL, cli->url != NULL, "--url"},
	};
	for (size_t i = 0; i < sizeof(given) / sizeof(given[0]); i++) {
		if (given[i].given && !(s->opts & given[i].bit)) {
			fprintf(stderr, "somaagent: option %s does not apply here; expected: somaagent %s\n",
				given[i].name, s->usage);
			return false;
		}
	}
	return true;
}
