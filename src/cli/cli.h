/*
 * cli.h - command-line parsing shared by the subcommands, and the subcommands themselves.
 *
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (one line naming the
 * argument or key at fault).
 */
#ifndef SOMA_CLI_CLI_H
#define SOMA_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>

#define CLI_MAX_SETS 64
#define CLI_MAX_ARGS 16

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

struct cli {
	const char *config_path;	/* --config FILE */
	const char *sets[CLI_MAX_SETS]; /* --set key=value, in order */
	size_t nsets;			/* used entries */
	const char *role;		/* --role */
	bool dry_run;			/* --dry-run */
	bool json;			/* --json */
	const char *tenant;		/* --tenant */
	const char *scope;		/* --scope (space or comma separated) */
	const char *name;		/* --name */
	const char *url;		/* --url (health) */
	const char *args[CLI_MAX_ARGS]; /* positional arguments after the command */
	size_t nargs;			/* used entries */
};

/* Parses argv[first..argc) into cli; on a usage error prints one line and returns false. */
bool cli_parse(int argc, char **argv, int first, struct cli *cli);
/* Checks that cmd takes the words and options of cli (cli_check.c); on a word or an option it
 * does not use prints one line saying what is expected and returns false. */
bool cli_check(const char *cmd, const struct cli *cli);
/* Loads the configuration from cli (file, env, --set); prints each error line; true when valid. */
bool cli_load_config(const struct cli *cli);

int cmd_run(const struct cli *cli);
int cmd_config(const struct cli *cli);
int cmd_keys(const struct cli *cli);
int cmd_migrate(const struct cli *cli);
/* `health [--url URL]` (health_cmd.c): 0 when /v1/health answers 200 ok or degraded, else 1. */
int cmd_health(const struct cli *cli);
/* `backup DEST_DIR` (backup_cmd.c): a consistent copy of the embedded store, online or not. */
int cmd_backup(const struct cli *cli);
/* `restore SRC_DIR` (restore_cmd.c): a backup into an empty data.dir. */
int cmd_restore(const struct cli *cli);

#endif
