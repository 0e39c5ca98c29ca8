/*
 * retry.c - when a provider call is tried again, and after how long (see llm_int.h): the
 * Retry-After of an answer (delay-seconds with a fraction, an HTTP-date, or OpenAI's
 * retry-after-ms), the errors worth another attempt (only before the first token), and the
 * backoff with jitter otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/ids.h"
#include "llm/llm_int.h"

/* A Retry-After value in ms (delay-seconds, possibly with a fraction, or an HTTP-date), -1 when
 * it is neither or is over an hour away. */
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
	return num >= 0 && num < 3600000.0 ? (long)num : -1;
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

bool llm_call_may_retry(const struct llm_call *c, enum llm_error e, int max_retries)
{
	bool retryable =
		e == LLM_ERR_UNREACHABLE || e == LLM_ERR_RATE_LIMITED || e == LLM_ERR_SERVER || e == LLM_ERR_TIMEOUT;
	return retryable && !c->got_token && c->res->attempts <= max_retries;
}

long llm_call_backoff_ms(const struct llm_call *c, long *delay_ms)
{
	long delay = *delay_ms;
	long wait = c->retry_after_ms >= 0 ? c->retry_after_ms
					   : delay / 2 + (long)(ids_random_u32() % (uint32_t)(delay / 2 + 1));
	*delay_ms = delay * 2 > 8000 ? 8000 : delay * 2;
	return wait > 60000 ? 60000 : wait;
}
