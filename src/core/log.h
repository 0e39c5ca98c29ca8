/*
 * log.h - structured logs: one JSON object per line on stderr.
 *
 * DESIGN: each call formats the whole line into a stack buffer and hands it to the kernel with
 * a single write(2), so lines from different threads never interleave and no lock is taken.
 * Fields: ts (RFC 3339, ms), level, msg, service, then the caller's context fields
 * (request_id, tenant, ...). log_setup() runs once at start-up before any thread exists.
 * Lines longer than LOG_LINE_MAX are truncated and marked "truncated":true.
 */
#ifndef SOMA_CORE_LOG_H
#define SOMA_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

enum log_field_kind { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_DBL };

struct log_field {
	const char *key;	  /* field name; static string */
	enum log_field_kind kind; /* which of the values below is set */
	const char *str;	  /* LOG_FIELD_STR; NULL fields are skipped */
	long long num;		  /* LOG_FIELD_INT */
	double dbl;		  /* LOG_FIELD_DBL */
};

#define LOG_STR(k, v) ((struct log_field){.key = (k), .kind = LOG_FIELD_STR, .str = (v)})
#define LOG_INT(k, v) ((struct log_field){.key = (k), .kind = LOG_FIELD_INT, .num = (v)})
#define LOG_DBL(k, v) ((struct log_field){.key = (k), .kind = LOG_FIELD_DBL, .dbl = (v)})

#define LOG_LINE_MAX 8192

/* Sets the minimum level and the format. Call before starting threads. */
void log_setup(enum log_level min_level, enum log_format format);
/* Parses "debug|info|warn|error"; returns false for anything else. */
bool log_level_parse(const char *s, enum log_level *out);
/* True when a line at this level would be written. */
bool log_enabled(enum log_level level);
/* Writes one line; fields may be NULL when n == 0. */
void log_emit(enum log_level level, const char *service, const struct log_field *fields, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

#define log_debug(svc, ...) log_emit(LOG_DEBUG, svc, NULL, 0, __VA_ARGS__)
#define log_info(svc, ...)  log_emit(LOG_INFO, svc, NULL, 0, __VA_ARGS__)
#define log_warn(svc, ...)  log_emit(LOG_WARN, svc, NULL, 0, __VA_ARGS__)
#define log_error(svc, ...) log_emit(LOG_ERROR, svc, NULL, 0, __VA_ARGS__)

/* Appends s as a JSON string body (no quotes) into buf at *pos, escaping as needed and never
 * writing past cap-1. Shared with other JSON-ish writers. Returns false when truncated. */
bool log_json_escape(char *buf, size_t cap, size_t *pos, const char *s, size_t len);

#endif
