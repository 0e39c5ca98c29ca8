/*
 * retry.c - when a provider call is tried again, and after how long (see llm_int.h): the
 * Retry-After of an answer (delay-seconds with a fraction, an HTTP-date, or OpenAI's
 * retry-after-ms), the errors worth another attempt (only before the first token), and the
 * backoff with jitter otherwise.
 *
 * DESIGN: a call retries only within llm_config.retry_wait_ms of its first attempt: a retry that
 * would start later (the provider's Retry-After, or the backoff) is not made, and the call ends
 * with the last answer (a 429 carries its Retry-After to the caller, who passes it on). A client
 * waiting on the proxy thus gets the provider's 429 at once instead of a silent wait; the
 * conversation task (background) allows more. Our own timeout (the provider stayed silent after
 * taking the request) is not retried: the provider may have billed it, and a second wait as long
 * doubles the time to the error; the provider's own 408 (it did not take the request) is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "llm/llm_int.h"

/* The longest Retry-After kept (a day): a caller passes it on, it is never slept through. */
#define RETRY_AFTER_MAX_MS 86400000.0

/* A Retry-After value in ms (delay-seconds, possibly with a fraction, or an HTTP-date), at most a
 * day; -1 when it is neither. */
static long retry_after_value_ms(const char *v, bool millis)
{
	while (*v == ' ' || *v == '\t')
		v++;
	char *end;
	double num = strtod(v, &end);
	if (end != v && (*end == '\0' || *end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
		num = millis ? num : num * 1000.0;
	else {
		struct tm tm = {0};
		const char *rest = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		if (!rest)
			return -1;
		num = ((double)timegm(&tm) - (double)time(NULL)) * 1000.0;
		num = num < 0 ? 0 : num; /* a date already past: at once */
	}
	if (num != num || num < 0) /* NaN, or a negative delay */
		return -1;
	return num < RETRY_AFTER_MAX_MS ? (long)num : (long)RETRY_AFTER_MAX_MS;
}

void llm_call_header(struct llm_call *c, const char *line, size_t n)
{
	bool millis = n > 15 && strncasecmp(line, "retry-after-ms:", 15) == 0;
	size_t name = millis ? 15 : 12;
	if (!millis && !(n > 12 && strncasecmp(line, "retry-after:", 12) == 0))
		return;
	char value[64];
	size_t k = n - name < sizeof(value) - 1 ? n - name : sizeof(value) - 1;
	memcpy(value, line + name, k); /* the line need not end in a NUL */
	value[k] = '\0';
	long ms = retry_after_value_ms(value, millis);
	/* retry-after-ms (OpenAI's, more precise) wins over Retry-After, whichever came first */
	if (millis || c->retry_after_ms < 0 || !c->retry_after_ms_exact)
		c->retry_after_ms = ms;
	c->retry_after_ms_exact = c->retry_after_ms_exact || (millis && ms >= 0);
}

long llm_call_retry_ms(const struct llm_call *c, enum llm_error e, const struct llm_config *cfg, long *delay_ms)
{
	bool retryable = e == LLM_ERR_UNREACHABLE || e == LLM_ERR_RATE_LIMITED || e == LLM_ERR_SERVER ||
			 (e == LLM_ERR_TIMEOUT && c->status == 408);
	if (!retryable || c->got_token || c->res->attempts > cfg->max_retries)
		return -1;
	long delay = *delay_ms;
	long wait = c->retry_after_ms >= 0 ? c->retry_after_ms
					   : delay / 2 + (long)(ids_random_u32() % (uint32_t)(delay / 2 + 1));
	*delay_ms = delay * 2 > 8000 ? 8000 : delay * 2;
	uint64_t spent_ms = (clock_mono_ns() - c->started_ns) / 1000000u;
	return spent_ms + (uint64_t)wait <= (uint64_t)cfg->retry_wait_ms ? wait : -1;
}
