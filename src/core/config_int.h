/*
 * config_int.h - what the configuration module's files share (src/core/config*.c only).
 *
 * DESIGN: config.c owns the values and the order of the sources; config_ini.c turns the bytes
 * of the INI file into (section, name, value, line) calls and reports the lines that are not
 * INI. Both run on the main thread during cfg_load, before any other thread exists.
 */
#ifndef SOMA_CORE_CONFIG_INT_H
#define SOMA_CORE_CONFIG_INT_H

#include <stdio.h>

#include "core/config.h"

/* Longest INI line accepted, in bytes without its newline; a longer line is an error naming
 * file:line (never cut: a cut line would set a wrong value without a word). */
#define CFG_INI_MAX_LINE 65536

/* Appends one error line (dropped once CFG_MAX_ERRORS are held). */
void cfg_error_add(struct cfg_errors *errs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Called for each `name = value` line; section is "" before the first [section]. The strings are
 * borrowed for the call only. */
typedef void (*cfg_ini_value_fn)(void *user, const char *section, const char *name, const char *value, int line);

/* Reads the INI text of f to its end: calls on_value for every setting in file order and adds an
 * error naming path:line for every line that is not a [section], a setting, a comment or blank,
 * and for every line longer than CFG_INI_MAX_LINE (whose setting is then not applied). */
void cfg_ini_parse(FILE *f, const char *path, cfg_ini_value_fn on_value, void *user, struct cfg_errors *errs);

/* Validators of the list settings (config_lists.c), named in config_keys.h. */
bool cfg_validate_routes(const char *value, char *why, size_t cap);
bool cfg_validate_queues(const char *value, char *why, size_t cap);
bool cfg_validate_rate_limits(const char *value, char *why, size_t cap);

#endif
