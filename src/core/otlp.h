/*
 * otlp.h - export of finished spans to an OpenTelemetry collector, OTLP/HTTP with JSON bodies.
 *
 * DESIGN: spans are copied into one bounded ring (otel.queue_size records) under a mutex; when it
 * is full the span is dropped and counted (soma_trace_spans_dropped_total): a slow or dead
 * collector costs spans, never a request's time. One background thread takes up to
 * otel.batch_size spans at a time (when that many wait, else every second), encodes them as an
 * ExportTraceServiceRequest (otlp_encode, interop.md 6.1) and POSTs it to <otel.endpoint>/v1/traces
 * with libcurl (loaded on first use, llm/curl_dl.h), each request bounded by otel.timeout_ms.
 * 429, 502, 503, 504 and transport errors are retried with backoff (Retry-After when sent, else
 * 1, 2, 4 s with jitter, at most OTLP_MAX_ATTEMPTS tries); any other answer ends the batch (200:
 * exported; 400 and the rest: failed, never retried). otlp_stop sends what is queued in one last
 * attempt per batch, the whole flush within one bound (at most otel.timeout_ms) and up to the
 * first failed batch, and joins the thread. Metrics: exported, failed and
 * dropped span counters and export attempts by result.
 */
#ifndef SOMA_CORE_OTLP_H
#define SOMA_CORE_OTLP_H

#include <stddef.h>

#include "core/err.h"
#include "core/trace.h"

#define OTLP_MAX_ATTEMPTS 4 /* tries of one batch while the collector answers 429/502/503/504 */

/* Starts the exporter when otel.endpoint is set (and turns span recording on); does nothing when
 * it is empty. Call once, on the main thread, after the metrics registry exists. */
enum soma_err otlp_start(void) SOMA_MUST_CHECK;
/* Turns recording off, flushes the queue once and joins the thread. The request in flight and the
 * whole flush end within min(bound_ms, otel.timeout_ms) from the call (plus libcurl's reaction
 * time); the flush stops at its first failed batch. Safe when otlp_start did nothing. */
void otlp_stop(long bound_ms);
/* Queues a copy of a finished span (trace_span_end calls it). Never blocks: a full queue drops
 * the span and counts it. Any thread. */
void otlp_enqueue(const struct trace_span *s);

/* The export URL of a base endpoint: base + "v1/traces" (with one '/' between). Writes into out;
 * false when it does not fit. */
bool otlp_traces_url(const char *base, char *out, size_t cap);
/* spans[0..n) as an ExportTraceServiceRequest in OTLP JSON (one resource with service.name, one
 * scope "somaagent"). Returns malloc'd text (caller frees), its length in *len; NULL on OOM. */
char *otlp_encode(const struct trace_span *spans, size_t n, const char *service_name, size_t *len);

#endif
