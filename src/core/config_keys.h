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
X(HTTP_IO_THREADS, "http.io_threads", CFG_INT, "0", 0, 64, NULL, NULL, false, NULL, \
  "Number of event-loop threads serving HTTP; 0 means one per CPU core.") \
X(HTTP_MAX_BODY, "http.max_body", CFG_INT, "1048576", 1024, 2147483647, NULL, NULL, false, NULL, \
  "Largest request body in bytes; larger bodies get 413.") \
X(HTTP_BODY_MEMORY_MB, "http.body_memory_mb", CFG_INT, "256", 1, 1048576, NULL, NULL, false, NULL, \
  "MiB of request bodies held in memory at once, all connections together; a body that would go over it gets 503 server_busy.") \
X(HTTP_MAX_HEADER, "http.max_header", CFG_INT, "16384", 1024, 1048576, NULL, NULL, false, NULL, \
  "Largest request line plus headers in bytes; larger requests get 431.") \
X(HTTP_REQUEST_TIMEOUT_S, "http.request_timeout_s", CFG_INT, "30", 1, 3600, NULL, NULL, false, NULL, \
  "Seconds a client may take to send one whole request before it gets 408 (an upload's body: to send each 64 KiB of it).") \
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
  "Seconds in-flight work may take to finish after SIGTERM before it is cut off: one deadline shared by the HTTP drain and the running tasks.") \
X(AUTH_REQUIRE, "auth.require", CFG_BOOL, "false", 0, 0, NULL, NULL, false, NULL, \
  "Require an API key even on a loopback address with no keys created.") \
X(AUTH_DEFAULT_TENANT, "auth.default_tenant", CFG_STRING, "default", 0, 0, NULL, validate_tenant, false, NULL, \
  "Tenant of unauthenticated loopback requests and of auth.admin_token.") \
X(AUTH_ADMIN_TOKEN, "auth.admin_token", CFG_STRING, "", 0, 0, NULL, validate_admin_token, true, NULL, \
  "Bootstrap bearer token with scope admin (at least 32 characters); empty disables it.") \
X(AUTH_KEY_REFRESH_MS, "auth.key_refresh_ms", CFG_INT, "1000", 100, 60000, NULL, NULL, false, NULL, \
  "How often the key cache re-reads the key store; a revoked key stops working within this time.") \
X(AUTH_JWT_SECRET, "auth.jwt_secret", CFG_STRING, "", 0, 0, NULL, NULL, true, NULL, \
  "Shared secret of HS256 JWT bearer tokens; empty: HS256 tokens are refused.") \
X(AUTH_JWT_PUBLIC_KEY, "auth.jwt_public_key", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "PEM file with the RSA or EC public key of RS256/ES256 JWTs; empty: none.") \
X(AUTH_JWT_JWKS_URL, "auth.jwt_jwks_url", CFG_STRING, "", 0, 0, NULL, validate_url_or_empty, false, NULL, \
  "JWKS URL whose keys verify RS256/ES256 JWTs (by kid); fetched at start and refreshed.") \
X(AUTH_JWT_JWKS_REFRESH_S, "auth.jwt_jwks_refresh_s", CFG_INT, "300", 10, 86400, NULL, NULL, false, NULL, \
  "Seconds between JWKS refreshes (an unknown kid also triggers one, at most every 10 s).") \
X(AUTH_JWT_ISSUER, "auth.jwt_issuer", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "Required iss claim of JWTs; empty: not checked.") \
X(AUTH_JWT_AUDIENCE, "auth.jwt_audience", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "Required aud claim of JWTs (or one of the aud list); empty: not checked.") \
X(AUTH_JWT_LEEWAY_S, "auth.jwt_leeway_s", CFG_INT, "30", 0, 600, NULL, NULL, false, NULL, \
  "Clock skew allowed when checking exp and nbf, in seconds.") \
X(AUTH_JWT_TENANT_CLAIMS, "auth.jwt_tenant_claims", CFG_STRING, "tenant,tenant_id,org_id", 0, 0, NULL, \
  validate_nonempty, false, NULL, "Claims tried in order for the tenant of a JWT; a token without any is refused.") \
X(POLICY_ENGINE, "policy.engine", CFG_ENUM, "builtin", 0, 0, "builtin|opa", NULL, false, NULL, \
  "Who decides: builtin (rules from policy.file) or opa (POST policy.opa_url/v1/data/soma/allow).") \
X(POLICY_FILE, "policy.file", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "JSON rules of the builtin engine; empty: the rules compiled in (policy/default.json).") \
X(POLICY_OPA_URL, "policy.opa_url", CFG_STRING, "", 0, 0, NULL, validate_url_or_empty, false, NULL, \
  "Root URL of the OPA server when policy.engine = opa, e.g. http://127.0.0.1:8181.") \
X(POLICY_OPA_TIMEOUT_MS, "policy.opa_timeout_ms", CFG_INT, "200", 10, 60000, NULL, NULL, false, NULL, \
  "Time allowed for one OPA decision; slower is a deny.") \
X(POLICY_CACHE_TTL_MS, "policy.cache_ttl_ms", CFG_INT, "1000", 0, 3600000, NULL, NULL, false, NULL, \
  "How long a decision is reused for the same input; 0: never.") \
X(LIMITS_REQUESTS_PER_S, "limits.requests_per_s", CFG_INT, "0", 0, 10000000, NULL, NULL, false, NULL, \
  "Requests per second per tenant (token bucket; 429 + Retry-After beyond); 0: unlimited.") \
X(LIMITS_REQUESTS_BURST, "limits.requests_burst", CFG_INT, "0", 0, 10000000, NULL, NULL, false, NULL, \
  "Bucket size of limits.requests_per_s; 0: twice the rate.") \
X(LIMITS_LLM_TOKENS_PER_DAY, "limits.llm_tokens_per_day", CFG_INT, "0", 0, 9000000000000000000, NULL, NULL, false, \
  NULL, "LLM tokens (input + output) per tenant per UTC day; 0: unlimited.") \
X(LIMITS_STREAMS_PER_TENANT, "limits.streams_per_tenant", CFG_INT, "0", 0, 10000000, NULL, NULL, false, NULL, \
  "Event streams a tenant may hold open at once; 0: unlimited.") \
X(HEALTH_INTERVAL_MS, "health.interval_ms", CFG_INT, "1000", 100, 60000, NULL, NULL, false, NULL, \
  "How often services' health is polled for /v1/health and soma_service_up.") \
X(LLM_PROVIDER, "llm.provider", CFG_ENUM, "groq", 0, 0, "groq|openai|custom", NULL, false, NULL, \
  "Provider preset: groq and openai fill in llm.base_url, the key variable and a default model.") \
X(LLM_BASE_URL, "llm.base_url", CFG_STRING, "", 0, 0, NULL, validate_url_or_empty, false, NULL, \
  "OpenAI-compatible API root, e.g. https://api.groq.com/openai/v1; empty: the provider's. " \
  "http:// to an IP address or localhost (a local Ollama or vLLM) is called without libcurl.") \
X(LLM_API_KEY, "llm.api_key", CFG_STRING, "", 0, 0, NULL, NULL, true, NULL, \
  "API key of the provider; empty: llm.groq_api_key or llm.openai_api_key by provider.") \
X(LLM_GROQ_API_KEY, "llm.groq_api_key", CFG_STRING, "", 0, 0, NULL, NULL, true, "GROQ_API_KEY", \
  "Groq API key (provider groq).") \
X(LLM_OPENAI_API_KEY, "llm.openai_api_key", CFG_STRING, "", 0, 0, NULL, NULL, true, "OPENAI_API_KEY", \
  "OpenAI API key (provider openai).") \
X(LLM_MODEL, "llm.model", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "Model name; empty: llama-3.1-8b-instant (groq), gpt-4o-mini (openai).") \
X(LLM_CONNECT_TIMEOUT_S, "llm.connect_timeout_s", CFG_INT, "10", 1, 300, NULL, NULL, false, NULL, \
  "Seconds to connect to the provider.") \
X(LLM_TIMEOUT_S, "llm.timeout_s", CFG_INT, "60", 1, 3600, NULL, NULL, false, NULL, \
  "Seconds the provider may stay silent before the call fails.") \
X(LLM_MAX_RETRIES, "llm.max_retries", CFG_INT, "3", 0, 20, NULL, NULL, false, NULL, \
  "Retries on 429, 408, 409, 5xx and connect errors, only before the first token; a provider that stayed " \
  "silent for llm.timeout_s is not asked again (it may have billed the call).") \
X(LLM_BACKOFF_MS, "llm.backoff_ms", CFG_INT, "500", 1, 60000, NULL, NULL, false, NULL, \
  "First retry delay (doubles, with jitter, capped at 8 s); Retry-After wins when sent.") \
X(LLM_RETRY_WAIT_S, "llm.retry_wait_s", CFG_INT, "5", 0, 300, NULL, NULL, false, NULL, \
  "Seconds a proxied call (/v1/chat/completions, /v1/llm/invoke) may spend retrying: a retry that would " \
  "start later (a longer Retry-After) is not made, and a 429 goes to the client at once with the " \
  "provider's Retry-After and words. Conversation replies run in the background and retry for up to 120 s.") \
X(LLM_CONTEXT_EVENTS, "llm.context_events", CFG_INT, "50", 1, 1000, NULL, NULL, false, NULL, \
  "Recent session events given to the model as context.") \
X(LLM_MAX_CONTEXT_TOKENS, "llm.max_context_tokens", CFG_INT, "8000", 100, 10000000, NULL, NULL, false, NULL, \
  "Context budget (estimated at 4 characters a token); the oldest events are dropped first.") \
X(LLM_ATTACHMENT_MAX_BYTES, "llm.attachment_max_bytes", CFG_INT, "32768", 0, 1048576, NULL, NULL, false, NULL, \
  "Text of a message's attached files given to the model, in bytes per message; never more than half " \
  "of the context budget the system prompt and the newest message leave (the rest is cut, and the cut " \
  "marked); other files are named only. Counts against llm.max_context_tokens.") \
X(LLM_TOOLS, "llm.tools", CFG_BOOL, "true", 0, 0, NULL, NULL, false, NULL, \
  "Conversation replies may call the enabled tools (tools.enabled): the request offers them " \
  "(tool_choice auto), each call the model makes is run (policy tool.execute asked) and its result " \
  "given back to the model, shown in the session as tool.start and tool.result events.") \
X(LLM_MAX_TOOL_ROUNDS, "llm.max_tool_rounds", CFG_INT, "4", 1, 32, NULL, NULL, false, NULL, \
  "Rounds of tool calls one reply may make (llm.tools): after the last round the model is called " \
  "once more without tools, so the reply ends with text.") \
X(LLM_MAX_TOOL_RESULT_CHARS, "llm.max_tool_result_chars", CFG_INT, "16000", 1000, 1000000, NULL, NULL, false, \
  NULL, \
  "Longest result of one tool call given to the model and kept in its tool.result event (and longest " \
  "arguments shown in tool.start), in bytes of JSON text: a longer one is cut, marked truncated. The tool " \
  "rounds' messages count against llm.max_context_tokens: results that no longer fit are left out.") \
X(LLM_SYSTEM_PROMPT, "llm.system_prompt", CFG_STRING, "You are SomaAgent, a helpful assistant.", 0, 0, NULL, \
  NULL, false, NULL, "System message that starts every conversation.") \
X(LLM_PROXY_CONCURRENCY, "llm.proxy_concurrency", CFG_INT, "32", 1, 1024, NULL, NULL, false, NULL, \
  "Provider calls in flight at once for /v1/chat/completions and /v1/llm/invoke.") \
X(LLM_MAX_REQUEST_MB, "llm.max_request_mb", CFG_INT, "20", 1, 256, NULL, NULL, false, NULL, \
  "Largest POST /v1/chat/completions body in MiB (its base64 images count), held in memory while the " \
  "call runs; other routes keep http.max_body.") \
X(LLM_PROXY_STALL_S, "llm.proxy_stall_s", CFG_INT, "30", 1, 3600, NULL, NULL, false, NULL, \
  "Seconds a streamed LLM proxy reply waits, its provider call paused, for a client that reads none of " \
  "the more than stream.max_buffer bytes waiting for it; then the call stops (llm_client_too_slow).") \
X(QUEUE_CONVERSATION_CONCURRENCY, "queue.conversation.concurrency", CFG_INT, "32", 1, 256, NULL, NULL, false, \
  NULL, "Worker threads of the conversation queue.") \
X(QUEUE_CELERY_CONCURRENCY, "queue.celery.concurrency", CFG_INT, "4", 1, 256, NULL, NULL, false, NULL, \
  "Worker threads of the celery queue (tasks sent with POST /v1/tasks, Celery's default queue).") \
X(QUEUE_VISIBILITY_TIMEOUT_S, "queue.visibility_timeout_s", CFG_INT, "300", 5, 86400, NULL, NULL, false, NULL, \
  "Seconds a reserved task stays invisible; a task whose worker died runs again after it.") \
X(QUEUE_MAX_RETRIES, "queue.max_retries", CFG_INT, "3", 0, 100, NULL, NULL, false, NULL, \
  "Retries of a task before it is dead-lettered.") \
X(QUEUE_RETRY_BACKOFF_MS, "queue.retry_backoff_ms", CFG_INT, "1000", 1, 3600000, NULL, NULL, false, NULL, \
  "First retry delay of a task (doubles per attempt, with jitter, capped at 5 min).") \
X(QUEUE_EARLY_START, "queue.early_start", CFG_BOOL, "true", 0, 0, NULL, NULL, false, NULL, \
  "Local queue: a chat message goes straight to an idle conversation worker, which reads the context and calls the LLM while the message commits; nothing is published before the commit.") \
X(QUEUE_WORKER_NICE, "queue.worker_nice", CFG_INT, "5", 0, 19, NULL, NULL, false, NULL, \
  "Nice increment of the worker threads over the rest of the process, so the io threads and the store writer run first when a woken worker would pre-empt them (0: same priority).") \
X(STORE_URL, "store.url", CFG_STRING, "", 0, 0, NULL, validate_store_url, true, "DATABASE_URL", \
  "PostgreSQL URL (postgresql://user:pass@host:port/db) shared by every node; empty: SQLite under data.dir.") \
X(STORE_POOL_SIZE, "store.pool_size", CFG_INT, "4", 1, 64, NULL, NULL, false, NULL, \
  "Reader connections of the store (PostgreSQL and SQLite); writes go through one group-commit writer.") \
X(STORE_MESSAGE_CONNECTIONS, "store.message_connections", CFG_INT, "4", 1, 64, NULL, NULL, false, NULL, \
  "PostgreSQL: connections (each with a thread) that commit chat messages as they arrive; the first takes up to 32 in flight, the next ones the overflow and a lost connection's share.") \
X(REDIS_URL, "redis.url", CFG_STRING, "", 0, 0, NULL, validate_redis_url, true, "REDIS_URL", \
  "Redis URL (redis://[:password@]host:port/db) of the redis queue and bus drivers.") \
X(QUEUE_DRIVER, "queue.driver", CFG_ENUM, "local", 0, 0, "local|redis", NULL, false, NULL, \
  "Task queue: local (in the embedded store, one process) or redis (Celery protocol v2, many nodes).") \
X(QUEUE_DEFAULT_QUEUE, "queue.default_queue", CFG_STRING, "celery", 0, 0, NULL, validate_nonempty, false, NULL, \
  "Queue of tasks sent without a queue and not matched by queue.routes (Celery's default is celery).") \
X(QUEUE_ROUTES, "queue.routes", CFG_STRING, "", 0, 0, NULL, cfg_validate_routes, false, NULL, \
  "Routing table: comma-separated task=queue pairs; a task pattern may end in * (soma.*=ops).") \
X(QUEUE_RESULT_EXPIRES_S, "queue.result_expires_s", CFG_INT, "86400", 0, 31536000, NULL, NULL, false, NULL, \
  "Seconds task results are kept (Celery's result_expires); 0 keeps them forever.") \
X(QUEUE_QUEUES, "queue.queues", CFG_STRING, "", 0, 0, NULL, cfg_validate_queues, false, NULL, \
  "More queues this worker consumes beside conversation and celery: comma-separated name=concurrency (1..256) pairs.") \
X(QUEUE_RATE_LIMITS, "queue.rate_limits", CFG_STRING, "", 0, 0, NULL, cfg_validate_rate_limits, false, NULL, \
  "Per-task rate limits per worker process, like Celery's rate_limit: comma-separated task=N/s|N/m|N/h.") \
X(QUEUE_PREFETCH, "queue.prefetch", CFG_INT, "64", 1, 1000, NULL, NULL, false, NULL, \
  "Redis driver: messages a worker thread takes at once (conversation takes one at a time).") \
X(BUS_DRIVER, "bus.driver", CFG_ENUM, "local", 0, 0, "local|redis", NULL, false, NULL, \
  "Live events: local (one process) or redis (streams on any node see events from every node).") \
X(STREAM_KEEPALIVE_S, "stream.keepalive_s", CFG_INT, "10", 1, 300, NULL, NULL, false, NULL, \
  "Seconds between keepalive events on an idle event stream.") \
X(STREAM_RESUME_WINDOW_S, "stream.resume_window_s", CFG_INT, "60", 0, 3600, NULL, NULL, false, NULL, \
  "Seconds the deltas of a finished reply stay available to reconnecting streams.") \
X(STREAM_MAX_BUFFER, "stream.max_buffer", CFG_INT, "1048576", 4096, 1073741824, NULL, NULL, false, NULL, \
  "Bytes queued for a slow stream reader before its stream is closed (it resumes on reconnect); a streamed " \
  "LLM proxy reply this far behind pauses its provider call until the client has read them (see " \
  "llm.proxy_stall_s).") \
X(A2A_NAME, "a2a.name", CFG_STRING, "SomaAgent01", 0, 0, NULL, validate_nonempty_text, false, NULL, \
  "Agent name in the A2A agent card (/.well-known/agent-card.json).") \
X(A2A_DESCRIPTION, "a2a.description", CFG_STRING, "A self-hosted conversational agent: send it a message and it replies.", 0, 0, NULL, validate_nonempty_text, false, NULL, \
  "Agent description in the A2A agent card.") \
X(A2A_PUBLIC_URL, "a2a.public_url", CFG_STRING, "", 0, 0, NULL, validate_url_or_empty, false, NULL, \
  "Origin the A2A card advertises (e.g. https://agent.example.com, behind a proxy); empty: http://<the request's Host>.") \
X(A2A_BLOCKING_TIMEOUT_S, "a2a.blocking_timeout_s", CFG_INT, "120", 1, 3600, NULL, NULL, false, NULL, \
  "Seconds a blocking A2A message/send waits for the reply before answering the task as still working.") \
X(TOOLS_ENABLED, "tools.enabled", CFG_STRING, "", 0, 0, NULL, tools_validate_enabled, false, NULL, \
  "Tools callers may list and run (comma-separated: fetch_page, memory_recall, memory_remember, echo); empty: all of them.") \
X(TOOLS_FETCH_ALLOWED_HOSTS, "tools.fetch.allowed_hosts", CFG_STRING, "", 0, 0, NULL, tools_validate_hosts, false, NULL, \
  "Hosts fetch_page may read (comma-separated names, *.suffix patterns or IP addresses); empty: any public host. A URL naming a listed IP address reaches it even if private or loopback (names never do).") \
X(TOOLS_FETCH_MAX_BYTES, "tools.fetch.max_bytes", CFG_INT, "2097152", 1024, 104857600, NULL, NULL, false, NULL, \
  "Largest page fetch_page reads, in bytes after decompression; a larger page fails the run.") \
X(TOOLS_FETCH_TIMEOUT_S, "tools.fetch.timeout_s", CFG_INT, "15", 1, 300, NULL, NULL, false, NULL, \
  "Seconds one fetch_page run may take, redirects included.") \
X(TOOLS_FETCH_MAX_REDIRECTS, "tools.fetch.max_redirects", CFG_INT, "5", 0, 20, NULL, NULL, false, NULL, \
  "Redirects fetch_page follows (each target checked again by the SSRF guard).") \
X(UPLOADS_MAX_MB, "uploads.max_mb", CFG_INT, "25", 1, 4096, NULL, NULL, false, NULL, \
  "Largest uploaded file in MiB.") \
X(UPLOADS_MAX_FILES, "uploads.max_files", CFG_INT, "10", 1, 1000, NULL, NULL, false, NULL, \
  "Files per upload request.") \
X(UPLOADS_ALLOWED_TYPES, "uploads.allowed_types", CFG_STRING, "*/*", 0, 0, NULL, NULL, false, NULL, \
  "Comma-separated content types accepted (detected from the bytes), e.g. image/*,application/pdf.") \
X(UPLOADS_SWEEP_INTERVAL_S, "uploads.sweep_interval_s", CFG_INT, "600", 1, 86400, NULL, NULL, false, NULL, \
  "How often stored files that no attachment names any more (their session deleted) are removed from data.dir.") \
X(UPLOADS_ORPHAN_GRACE_S, "uploads.orphan_grace_s", CFG_INT, "3600", 0, 31536000, NULL, NULL, false, NULL, \
  "A stored file no attachment names is removed once it was last written or reused this long ago.") \
X(RETENTION_SESSIONS_IDLE_S, "retention.sessions_idle_s", CFG_INT, "0", 0, 315360000, NULL, NULL, false, NULL, \
  "A session whose last event is older than this is deleted as DELETE /v1/sessions/{id} deletes it (its long-term memories stay); 0 keeps sessions forever.") \
X(RETENTION_AUDIT_S, "retention.audit_s", CFG_INT, "0", 0, 315360000, NULL, NULL, false, NULL, \
  "Audit rows older than this are deleted; 0 keeps them forever.") \
X(RETENTION_DEAD_LETTERS_S, "retention.dead_letters_s", CFG_INT, "0", 0, 315360000, NULL, NULL, false, NULL, \
  "Dead-lettered tasks that died longer ago than this are deleted; 0 keeps them forever.") \
X(RETENTION_SWEEP_INTERVAL_S, "retention.sweep_interval_s", CFG_INT, "300", 1, 86400, NULL, NULL, false, NULL, \
  "How often the retention sweeper runs (in batches of a few hundred rows per transaction).") \
X(BEAT_ENABLED, "beat.enabled", CFG_BOOL, "true", 0, 0, NULL, NULL, false, NULL, \
  "Run the schedules of beat.schedule_file (one leader across the nodes that run workers).") \
X(BEAT_SCHEDULE_FILE, "beat.schedule_file", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "JSON file of periodic tasks: [{name, task, every_s | cron, args, kwargs, queue, tenant}]; empty: no beat.") \
X(BEAT_LOCK_TTL_MS, "beat.lock_ttl_ms", CFG_INT, "10000", 1000, 600000, NULL, NULL, false, NULL, \
  "Expiry of beat's leader lock in Redis: a dead leader is replaced within this time.") \
X(BEAT_MAX_CATCHUP, "beat.max_catchup", CFG_INT, "100", 0, 100000, NULL, NULL, false, NULL, \
  "Late runs per schedule published after a time with no leader, besides the newest due run (always published); older missed runs are skipped.") \
X(CELERY_NODENAME, "celery.nodename", CFG_STRING, "", 0, 0, NULL, NULL, false, NULL, \
  "This node's name for Celery's tools (celery inspect, Flower); empty: soma@<hostname>.") \
X(CELERY_EVENTS, "celery.events", CFG_BOOL, "false", 0, 0, NULL, NULL, false, NULL, \
  "Send task events on celeryev (like celery worker -E); worker heartbeats are always sent.") \
X(CELERY_HEARTBEAT_S, "celery.heartbeat_s", CFG_INT, "2", 1, 60, NULL, NULL, false, NULL, \
  "Seconds between worker-heartbeat events (Flower thinks a worker gone after two missed).") \
X(MEMORY_DRIVER, "memory.driver", CFG_ENUM, "builtin", 0, 0, "builtin|somabrain", NULL, false, NULL, \
  "Long-term memory: builtin (full-text search in the store) or somabrain (memory.somabrain_url).") \
X(MEMORY_SOMABRAIN_URL, "memory.somabrain_url", CFG_STRING, "", 0, 0, NULL, validate_url_or_empty, false, NULL, \
  "Base URL of SomaBrain, e.g. http://127.0.0.1:9696 (needed with memory.driver=somabrain).") \
X(MEMORY_SOMABRAIN_API_KEY, "memory.somabrain_api_key", CFG_STRING, "", 0, 0, NULL, NULL, true, NULL, \
  "Bearer token sent to SomaBrain (empty: no Authorization header).") \
X(MEMORY_NAMESPACE, "memory.namespace", CFG_STRING, "wm", 0, 0, NULL, validate_nonempty, false, NULL, \
  "Memory namespace of conversation turns and of requests that name none.") \
X(MEMORY_TIMEOUT_MS, "memory.timeout_ms", CFG_INT, "2000", 10, 60000, NULL, NULL, false, NULL, \
  "Time limit of one SomaBrain call (connect included).") \
X(MEMORY_MAX_ATTEMPTS, "memory.max_attempts", CFG_INT, "8", 1, 1000, NULL, NULL, false, NULL, \
  "Delivery attempts of a memory write before it is marked failed (an admin may retry it); failures during an outage (breaker open, /health down, 429, timeouts) do not count, but a 5xx that opens the breaker by itself does (one row SomaBrain always fails cannot wait for ever); keep it >= memory.breaker_failures.") \
X(MEMORY_RETRY_BACKOFF_MS, "memory.retry_backoff_ms", CFG_INT, "1000", 1, 3600000, NULL, NULL, false, NULL, \
  "First retry delay of a memory write (doubles per attempt, capped at 60 s).") \
X(MEMORY_RECALL_TOP_K, "memory.recall_top_k", CFG_INT, "3", 0, 50, NULL, NULL, false, NULL, \
  "Memories added to the LLM context per turn (half when degraded, none when down; 0: no recall).") \
X(MEMORY_RELAY_RATE_PER_S, "memory.relay_rate_per_s", CFG_INT, "2000", 1, 1000000, NULL, NULL, false, NULL, \
  "Most memory writes delivered per second (a long backlog drains without flattening SomaBrain).") \
X(MEMORY_BREAKER_FAILURES, "memory.breaker_failures", CFG_INT, "3", 1, 1000, NULL, NULL, false, NULL, \
  "Consecutive failed SomaBrain calls that open the circuit breaker (calls then fail fast).") \
X(MEMORY_BREAKER_OPEN_MS, "memory.breaker_open_ms", CFG_INT, "15000", 100, 3600000, NULL, NULL, false, NULL, \
  "How long the breaker stays open before one probe may close it (and a failed call keeps memory degraded).") \
X(MEMORY_HEALTH_INTERVAL_MS, "memory.health_interval_ms", CFG_INT, "2000", 100, 600000, NULL, NULL, false, NULL, \
  "Interval of SomaBrain /health probes.") \
X(OTEL_ENDPOINT, "otel.endpoint", CFG_STRING, "", 0, 0, NULL, validate_url_or_empty, false, "OTEL_EXPORTER_OTLP_ENDPOINT", \
  "Base URL of an OTLP/HTTP collector (spans are POSTed as JSON to <url>/v1/traces), e.g. http://127.0.0.1:4318; empty: no traces.") \
X(OTEL_SERVICE_NAME, "otel.service_name", CFG_STRING, "somaagent", 0, 0, NULL, validate_nonempty, false, NULL, \
  "The service.name resource attribute of exported spans.") \
X(OTEL_QUEUE_SIZE, "otel.queue_size", CFG_INT, "2048", 16, 1000000, NULL, NULL, false, NULL, \
  "Finished spans held for export; when the collector falls behind, further spans are dropped (soma_trace_spans_dropped_total).") \
X(OTEL_BATCH_SIZE, "otel.batch_size", CFG_INT, "512", 1, 100000, NULL, NULL, false, NULL, \
  "Most spans per export request; a batch is sent when full or after 1 s.") \
X(OTEL_TIMEOUT_MS, "otel.timeout_ms", CFG_INT, "5000", 100, 60000, NULL, NULL, false, NULL, \
  "Time allowed for one export request (connect included); also bounds the whole flush at shutdown, which stops at the first failed batch and keeps to what shutdown.grace_s left (at least 1 s).")
/* clang-format on */
