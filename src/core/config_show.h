/*
 * config_show.h - the configuration as humans and tools see it (secrets redacted).
 */
#ifndef SOMA_CORE_CONFIG_SHOW_H
#define SOMA_CORE_CONFIG_SHOW_H

#include <jansson.h>
#include <stdio.h>

/* {"key":{"value":..,"source":"default|file|env|flag","origin":..}}; caller owns the result. */
json_t *cfg_to_json(void);
/* {"key": value} with secrets redacted; caller owns the result. */
json_t *cfg_values_json(void);
/* One line per key: name = value # origin. */
void cfg_print_text(FILE *out);
/* docs/configuration.md, generated from the key table. */
void cfg_print_docs(FILE *out);

#endif
