/*
 * keys_cmd.c - `somaagent keys create|list|revoke`: API keys in the store under data.dir.
 * The token is printed once, on creation; only its hash is kept. --json gives a key in the
 * shape of the admin API's (store_key_row_json: scopes as an array, status).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/config.h"
#include "identity/identity.h"

static int keys_create(const struct cli *cli, struct store *st)
{
	char scopes[STORE_SCOPES_MAX + 1], why[256];
	if (!cli->tenant) {
		fprintf(stderr, "somaagent: keys create needs --tenant NAME\n");
		return EXIT_USAGE;
	}
	const struct cfg_key_def *tenant_def = cfg_def(CFG_AUTH_DEFAULT_TENANT);
	if (!tenant_def->validate(cli->tenant, why, sizeof(why))) {
		fprintf(stderr, "somaagent: --tenant %s: %s\n", cli->tenant, why);
		return EXIT_USAGE;
	}
	if (!identity_scopes_normalize(cli->scope, scopes, sizeof(scopes))) {
		fprintf(stderr, "somaagent: --scope: expected scope names such as admin, separated by commas\n");
		return EXIT_USAGE;
	}
	if (cli->name && strlen(cli->name) > STORE_ID_MAX) {
		fprintf(stderr, "somaagent: --name: at most %d characters\n", STORE_ID_MAX);
		return EXIT_USAGE;
	}
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key key;
	if (identity_key_create(st, cli->tenant, scopes, cli->name, token, &key) != SOMA_OK) {
		fprintf(stderr, "somaagent: cannot store the key under %s\n", cfg_str(CFG_DATA_DIR));
		return EXIT_RUNTIME;
	}
	char resource[STORE_ID_MAX + 8];
	snprintf(resource, sizeof(resource), "key:%s", key.id);
	struct audit_entry e = {.tenant = key.tenant,
				.subject = "cli",
				.action = "key.create",
				.resource = resource,
				.decision = "done",
				.detail = key.scopes[0] ? key.scopes : NULL};
	if (audit_record_now(st, &e) != SOMA_OK)
		fprintf(stderr, "somaagent: warning: the key was created but its audit row could not be written\n");
	if (cli->json) {
		/* the shape of POST /v1/keys: the key's row as GET /v1/keys gives it, and the token */
		json_t *o = store_key_row_json(key.id, key.tenant, key.name, key.scopes, key.created_ms, 0);
		if (!o || json_object_set_new(o, "token", json_string(token)) != 0) {
			json_decref(o);
			fprintf(stderr, "somaagent: out of memory\n");
			return EXIT_RUNTIME;
		}
		json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		printf("%s\n", token);
		fprintf(stderr, "created key %s for tenant %s%s%s; the token above is shown only once\n", key.id,
			key.tenant, key.scopes[0] ? " with scopes " : "", key.scopes);
	}
	return EXIT_OK;
}

static int keys_list(const struct cli *cli, struct store *st)
{
	struct store_key *keys;
	size_t n;
	if (store_key_list(st, &keys, &n) != SOMA_OK) {
		fprintf(stderr, "somaagent: cannot read keys under %s\n", cfg_str(CFG_DATA_DIR));
		return EXIT_RUNTIME;
	}
	json_t *arr = json_array();
	char created[CLOCK_RFC3339_LEN + 1];
	if (!cli->json)
		printf("%-16s  %-20s  %-16s  %-24s  %s\n", "ID", "TENANT", "SCOPES", "CREATED", "STATUS");
	for (size_t i = 0; i < n; i++) {
		const struct store_key *k = &keys[i];
		clock_rfc3339(k->created_ms, created, sizeof(created));
		if (cli->json) /* as GET /v1/keys gives them */
			json_array_append_new(arr, store_key_row_json(k->id, k->tenant, k->name, k->scopes,
								      k->created_ms, k->revoked_ms));
		else
			printf("%-16s  %-20s  %-16s  %-24s  %s\n", k->id, k->tenant, k->scopes[0] ? k->scopes : "-",
			       created, k->revoked_ms ? "revoked" : "active");
	}
	if (cli->json) {
		json_dumpf(arr, stdout, JSON_COMPACT);
		fputc('\n', stdout);
	}
	json_decref(arr);
	free(keys);
	return EXIT_OK;
}

static int keys_revoke(const struct cli *cli, struct store *st)
{
	if (cli->nargs < 2) {
		fprintf(stderr, "somaagent: keys revoke needs the key id (see `somaagent keys list`)\n");
		return EXIT_USAGE;
	}
	char tenant[STORE_ID_MAX + 1] = "";
	struct store_key *keys = NULL;
	size_t n = 0;
	if (store_key_list(st, &keys, &n) == SOMA_OK) /* the key's tenant, for the audit row */
		for (size_t i = 0; i < n; i++)
			if (strcmp(keys[i].id, cli->args[1]) == 0)
				snprintf(tenant, sizeof(tenant), "%s", keys[i].tenant);
	free(keys);
	enum soma_err err = store_key_revoke(st, cli->args[1]);
	if (err == SOMA_ERR_NOT_FOUND) {
		fprintf(stderr, "somaagent: no active key with id %s\n", cli->args[1]);
		return EXIT_RUNTIME;
	}
	if (err != SOMA_OK) {
		fprintf(stderr, "somaagent: cannot revoke key %s\n", cli->args[1]);
		return EXIT_RUNTIME;
	}
	char resource[STORE_ID_MAX + 8];
	snprintf(resource, sizeof(resource), "key:%s", cli->args[1]);
	struct audit_entry e = {
		.tenant = tenant, .subject = "cli", .action = "key.revoke", .resource = resource, .decision = "done"};
	if (audit_record_now(st, &e) != SOMA_OK)
		fprintf(stderr, "somaagent: warning: the key was revoked but its audit row could not be written\n");
	printf("revoked key %s\n", cli->args[1]);
	return EXIT_OK;
}

int cmd_keys(const struct cli *cli)
{
	const char *sub = cli->nargs ? cli->args[0] : "";
	int (*fn)(const struct cli *, struct store *) = NULL;
	if (strcmp(sub, "create") == 0)
		fn = keys_create;
	else if (strcmp(sub, "list") == 0)
		fn = keys_list;
	else if (strcmp(sub, "revoke") == 0)
		fn = keys_revoke;
	if (!fn) {
		fprintf(stderr, "somaagent: keys needs create, list or revoke\n");
		return EXIT_USAGE;
	}
	if (!cli_load_config(cli))
		return EXIT_USAGE;
	struct store *st;
	char why[512];
	if (store_open_url(cfg_str(CFG_STORE_URL), cfg_str(CFG_DATA_DIR), &st, why, sizeof(why)) != SOMA_OK) {
		fprintf(stderr, "somaagent: %s\n", why);
		return EXIT_RUNTIME;
	}
	int rc = EXIT_RUNTIME;
	if (store_schema_newer(st, why, sizeof(why))) { /* this binary cannot run on it (exit 2) */
		fprintf(stderr, "somaagent: %s\n", why);
		rc = EXIT_USAGE;
	} else if (store_migrate(st, NULL) == SOMA_OK)
		rc = fn(cli, st);
	else
		fprintf(stderr, "somaagent: cannot prepare the database (%s)\n",
			cfg_str(CFG_STORE_URL)[0] ? "PostgreSQL at store.url" : cfg_str(CFG_DATA_DIR));
	store_close(st);
	return rc;
}
