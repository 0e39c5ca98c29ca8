/*
 * err.h - the one error enum of the whole program.
 *
 * DESIGN: every fallible function returns enum soma_err (SOMA_OK == 0) and hands its results back
 * through out-parameters. The table below is the single place that maps a code to its HTTP status,
 * its stable snake_case name (used as "code" in JSON error envelopes) and a default message. Codes
 * are never renumbered; add new ones at the end.
 */
#ifndef SOMA_CORE_ERR_H
#define SOMA_CORE_ERR_H

#define SOMA_ERR_TABLE(X)                                                                   \
	X(SOMA_OK, 200, "ok", "success")                                                    \
	X(SOMA_ERR_NOMEM, 500, "out_of_memory", "the server ran out of memory")             \
	X(SOMA_ERR_INVALID, 400, "invalid_request", "the request is malformed")             \
	X(SOMA_ERR_NOT_FOUND, 404, "not_found", "no such resource")                         \
	X(SOMA_ERR_CONFIG, 500, "config_error", "the configuration is invalid")             \
	X(SOMA_ERR_IO, 500, "io_error", "an input/output operation failed")                 \
	X(SOMA_ERR_STORE, 500, "store_error", "the data store failed")                      \
	X(SOMA_ERR_LIMIT, 413, "limit_exceeded", "a size limit was exceeded")               \
	X(SOMA_ERR_UNAUTHORIZED, 401, "unauthorized", "missing or invalid credentials")     \
	X(SOMA_ERR_FORBIDDEN, 403, "forbidden", "the credentials do not allow this action") \
	X(SOMA_ERR_CONFLICT, 409, "conflict", "the resource already exists or changed")     \
	X(SOMA_ERR_UNAVAILABLE, 503, "unavailable", "a dependency is unavailable")          \
	X(SOMA_ERR_INTERNAL, 500, "internal_error", "an internal error occurred")           \
	X(SOMA_ERR_FULL, 507, "storage_full", "the disk is full")                           \
	X(SOMA_ERR_GONE, 503, "data_dir_removed", "the database was removed under the server")

enum soma_err {
#define SOMA_ERR_ENUM(name, status, code, text) name,
	SOMA_ERR_TABLE(SOMA_ERR_ENUM)
#undef SOMA_ERR_ENUM
		SOMA_ERR_COUNT
};

#define SOMA_MUST_CHECK __attribute__((warn_unused_result))

/* Default human text of an error code. Static storage; never NULL. */
const char *soma_err_str(enum soma_err err);
/* Stable snake_case name used as the "code" of JSON errors. Static storage. */
const char *soma_err_code(enum soma_err err);
/* HTTP status that fits the error. */
int soma_err_http_status(enum soma_err err);

#endif
