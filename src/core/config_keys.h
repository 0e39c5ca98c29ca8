/*
 * config_keys.h - THE table of configuration keys. Every key of somaagent is declared here, once.
 *
 * X(ID, name, type, default, min, max, choices, validator, secret, alias_env, doc)
 *   name       "section.key"; its environment variable is SOMA_SECTION_KEY
 *   type       CFG_STRING | CFG_INT | CFG_BOOL | CFG_ENUM
 *   default    the default as a string (parsed like any other source)
 *   min, max   bounds for CFG_INT
 *   choices    "a|b|c" for CFG_ENUM, else NULL
 *   validator  extra check for CFG_STRING (a function in config_table.c), else NULL
 *   secret     true: value is redacted in every output
 *   alias_env  a well-known environment name read at the same level (SOMA_* wins), else NULL
 *   doc        one line for `config show` and docs/configuration.md
 *
 * Everything else - parsing, precedence, errors, `config show`, the docs - is driven by this list.
 */
/* clang-format off */
#define CFG_KEYS(X) \
X(HTTP_LISTEN, "http.listen", CFG_STRING, "127.0.0.1:8080", 0, 0, NULL, validate_listen, false, NULL, \
  "Address the HTTP server listens on, as host:port (IPv6 as [addr]:port).") \
X(HTTP_IO_THREADS, "http.io_threads", CFG_INT, "0", 0, 256, NULL, NULL, false, NULL, \
  "Number of event-loop threads serving HTTP; 0 means one per CPU core.") \
X(HTTP_MAX_BODY, "http.max_body", CFG_INT, "1048576", 1024, 2147483647, NULL, NULL, false, NULL, \
  "Largest request body in bytes; larger bodies get 413.") \
X(HTTP_MAX_HEADER, "http.max_header", CFG_INT, "16384", 1024, 1048576, NULL, NULL, false, NULL, \
  "Largest request line plus headers in bytes; larger requests get 431.") \
X(HTTP_REQUEST_TIMEOUT_S, "http.request_timeout_s", CFG_INT, "30", 1, 3600, NULL, NULL, false, NULL, \
  "Seconds a client may take to send one whole request before it gets 408.") \
X(HTTP_IDLE_TIMEOUT_S, "http.idle_timeout_s", CFG_INT, "75", 1, 3600, NULL, NULL, false, NULL, \
  "Seconds an idle keep-alive connection is kept open.") \
X(HTTP_MAX_CONNECTIONS, "http.max_connections", CFG_INT, "100000", 1, 10000000, NULL, NULL, false, NULL, \
  "Open client connections per process; further connections are refused until some close.") \
X(DATA_DIR, "data.dir", CFG_STRING, "./data", 0, 0, NULL, validate_nonempty, false, NULL, \
  "Directory for the embedded database and stored files; created if missing.") \
X(DATA_MIN_FREE_MB, "data.min_free_mb", CFG_INT, "64", 0, 1073741824, NULL, NULL, false, NULL, \
  "Free space under data.dir below which the disk service reports degraded.") \
X(LOG_LEVEL, "log.level", CFG_ENUM, "info", 0, 0, "debug|info|warn|error", NULL, false, NULL, \
  "Lowest level of log lines written to stderr.") \
X(LOG_FORMAT, "log.format", CFG_ENUM, "json", 0, 0, "json|text", NULL, false, NULL, \
  "Log line format: json (one object per line) or text (for humans).") \
X(LOG_ACCESS, "log.access", CFG_BOOL, "true", 0, 0, NULL, NULL, false, NULL, \
  "Write one access-log line per HTTP request.") \
X(SHUTDOWN_GRACE_S, "shutdown.grace_s", CFG_INT, "10", 0, 3600, NULL, NULL, false, NULL, \
  "Seconds in-flight work may take to finish after SIGTERM before it is cut off.") \
X(AUTH_REQUIRE, "auth.require", CFG_BOOL, "false", 0, 0, NULL, NULL, false, NULL, \
  "Require an API key even on a loopback address with no keys created.") \
X(AUTH_DEFAULT_TENANT, "auth.default_tenant", CFG_STRING, "default", 0, 0, NULL, validate_tenant, false, NULL, \
  "Tenant of unauthenticated loopback requests and of auth.admin_token.") \
X(AUTH_ADMIN_TOKEN, "auth.admin_token", CFG_STRING, "", 0, 0, NULL, validate_admin_token, true, NULL, \
  "Bootstrap bearer token with scope admin (at least 32 characters); empty disables it.") \
X(AUTH_KEY_REFRESH_MS, "auth.key_refresh_ms", CFG_INT, "1000", 100, 60000, NULL, NULL, false, NULL, \
  "How often the key cache re-reads the key store; a revoked key stops working within this time.") \
X(HEALTH_INTERVAL_MS, "health.interval_ms", CFG_INT, "1000", 100, 60000, NULL, NULL, false, NULL, \
  "How often services' health is polled for /v1/health and soma_service_up.")
/* clang-format on */
