/*
 * call.c - one attempt of a chat completion on a libcurl easy handle (see llm_int.h): request
 * body and headers, the write/header callbacks that parse the reply as it arrives (the outcome's
 * class is call_end.c's). Runs on whichever thread drives the handle. A stream's reply ends at
 * its [DONE] (what follows is neither read nor relayed, but swallowed so the transfer can end
 * cleanly and keep its connection: at most LLM_AFTER_DONE_MS more) or at an error event (the
 * provider's failure, whatever follows).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json_out.h"
#include "core/str_copy.h"
#include "llm/chunk_scan.h"
#include "llm/llm_int.h"
#include "llm/tool_calls.h"

#define MAX_BODY    (8u << 20) /* non-streamed reply or error body */
#define MAX_CONTENT (4u << 20) /* accumulated reply text */
#define MAX_EVENT   (1u << 20) /* one SSE event */

static bool append(char **buf, size_t *len, const char *data, size_t n, size_t max)
{
	if (*len + n > max)
		return false;
	char *grown = realloc(*buf, *len + n + 1);
	if (!grown)
		return false;
	memcpy(grown + *len, data, n);
	*len += n;
	grown[*len] = '\0';
	*buf = grown;
	return true;
}

/* The chunk's fields through jansson, for what llm_chunk_scan leaves (same fields, same values).
 * Returns the parsed chunk (the caller decrefs it: out's strings point into it), NULL when the
 * text is not JSON. */
static json_t *load_chunk(const char *data, size_t len, struct llm_chunk *out)
{
	json_t *chunk = json_loadb(data, len, 0, NULL);
	memset(out, 0, sizeof(*out));
	if (!chunk)
		return NULL;
	out->model = json_string_value(json_object_get(chunk, "model"));
	json_t *usage = json_object_get(chunk, "usage");
	out->usage = json_is_object(usage);
	if (!out->usage) /* Groq: in x_groq.usage of the last chunk (chunk_scan.h) */
		usage = json_object_get(json_object_get(chunk, "x_groq"), "usage");
	if (json_is_object(usage)) {
		json_t *in = json_object_get(usage, "prompt_tokens"),
		       *done = json_object_get(usage, "completion_tokens");
		if ((out->has_in = json_is_integer(in)))
			out->in_tokens = json_integer_value(in);
		if ((out->has_out = json_is_integer(done)))
			out->out_tokens = json_integer_value(done);
	}
	json_t *choices = json_object_get(chunk, "choices");
	out->no_choices = json_is_array(choices) && json_array_size(choices) == 0;
	json_t *choice = json_array_get(choices, 0);
	json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
	out->content = json_string_value(content);
	out->content_len = json_string_length(content);
	out->finish = json_string_value(json_object_get(choice, "finish_reason"));
	return chunk;
}

/* An event with a top-level "error" ({"error":{"message":..}}, as vLLM and OpenAI send a failure
 * in mid-stream): the reply failed, whatever follows ([DONE] often does). Its message becomes
 * the detail; a relay that already passed on the reply's start gets it as it came (a retry cannot
 * follow then), one that did not gets nothing of it (the call may be retried, or answers with its
 * own error). False when data is no such event. */
static bool stream_error(struct llm_call *c, const char *data, size_t len)
{
	json_t *obj = json_loadb(data, len, 0, NULL);
	json_t *err = json_object_get(obj, "error");
	if (!err || json_is_null(err)) {
		json_decref(obj);
		return false;
	}
	const char *msg =
		json_is_string(err) ? json_string_value(err) : json_string_value(json_object_get(err, "message"));
	snprintf(c->res->detail, sizeof(c->res->detail), "the provider reported an error in its stream: %.400s",
		 msg && *msg ? msg : "(no message)");
	json_decref(obj);
	c->failed = true;
	if (c->got_token && c->cb && c->cb->on_chunk && !c->cb->on_chunk(c->cb->ctx, data, len, false))
		c->stopped = true;
	return true;
}

/* One streamed chunk: {"choices":[{"delta":{"content":".."},"finish_reason":..}], "usage":..},
 * read without a tree when it can be (chunk_scan.h) */
static bool on_event(void *ctx, const char *data, size_t len)
{
	struct llm_call *c = ctx;
	if (c->finished)
		return true; /* after [DONE] the reply is over: what a provider sends after it is not passed on */
	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		c->done = c->finished = true;
		return true;
	}
	size_t lead = 0;
	while (lead < len && (data[lead] == ' ' || data[lead] == '\t'))
		lead++;
	if (lead == len || (data[lead] != '{' && data[lead] != '['))
		return true; /* not JSON (a provider's "ping"): ignored, not relayed - OpenAI's SDKs would fail on it */
	unsigned peek = llm_chunk_peek(data, len);
	if ((peek & LLM_PEEK_ERROR) && stream_error(c, data, len))
		return false; /* the reply is over: the transfer stops */
	/* a relay (the proxy: chunks passed on, no deltas wanted) needs of a chunk only its usage and
	 * whether it finishes the reply: only a chunk with usage is read (chunk_scan.h, peek) */
	if (!(c->cb && c->cb->on_chunk && !c->cb->on_delta))
		peek = LLM_PEEK_USAGE;
	if (!(peek & LLM_PEEK_USAGE)) {
		if (!c->cb->on_chunk(c->cb->ctx, data, len, false))
			return !(c->stopped = true);
		c->got_token = true;
		c->done = c->done || (peek & LLM_PEEK_FINISH);
		return true;
	}
	char buf[2048];
	struct llm_chunk f;
	json_t *chunk = NULL;
	bool read = llm_chunk_scan(data, len, buf, sizeof(buf), &f) || (chunk = load_chunk(data, len, &f));
	/* relayed as it came, read or not; the reading is done once, here, for both */
	if (c->cb && c->cb->on_chunk) {
		if (!c->cb->on_chunk(c->cb->ctx, data, len, read && f.no_choices && f.usage)) {
			json_decref(chunk);
			return !(c->stopped = true);
		}
		/* the caller has it: a retry would relay the reply's start twice (tool calls have no
		 * content, and a role chunk comes before any) */
		c->got_token = true;
	}
	if (!read)
		return true; /* not valid JSON: nothing to read in it */
	if (f.model)
		str_copy(c->res->model, sizeof(c->res->model), f.model);
	if (f.has_in)
		c->res->input_tokens = f.in_tokens;
	if (f.has_out)
		c->res->output_tokens = f.out_tokens;
	bool keep = true;
	if (f.content && *f.content) {
		c->got_token = true;
		if (!append(&c->res->content, &c->res->content_len, f.content, f.content_len, MAX_CONTENT))
			keep = !(c->overflow = true);
		else if (c->cb && c->cb->on_delta && !c->cb->on_delta(c->cb->ctx, f.content, f.content_len))
			keep = !(c->stopped = true);
	}
	if (c->req->tool_calls && llm_tool_calls_in(data, len)) { /* tool_calls.h */
		c->got_token = true;				  /* a retry would gather the calls twice */
		if (!llm_tool_calls_feed(c->res, data, len))
			keep = !(c->overflow = true);
	}
	if (f.finish) {
		str_copy(c->res->finish_reason, sizeof(c->res->finish_reason), f.finish);
		c->done = true;
	}
	json_decref(chunk);
	return keep;
}

/* A relay's plain events (llm_callbacks.on_events): those at the start of a read that need no
 * reading - no usage (a finish is noted by the peek) - are passed on as one piece, as they came,
 * where each would otherwise be parsed, copied and written as a frame of its own. Returns the
 * bytes taken; the rest (an event of another form, a usage chunk, [DONE], a cut event) is the
 * parser's. False in *ok when the caller stopped. */
static size_t pass_plain_events(struct llm_call *c, const char *b, size_t n, bool *ok)
{
	*ok = true;
	if (!sse_parser_at_event_start(&c->sse, b, n))
		return 0;
	size_t at = 0, count = 0;
	bool finish = false;
	for (;; count++) {
		const char *data;
		size_t len, k = sse_plain_event(b + at, n - at, c->sse.max, &data, &len);
		if (k == 0)
			break;
		unsigned peek = llm_chunk_peek(data, len);
		if (peek & (LLM_PEEK_USAGE | LLM_PEEK_ERROR))
			break;
		finish = finish || (peek & LLM_PEEK_FINISH);
		at += k;
	}
	if (at == 0)
		return 0;
	if (!c->cb->on_events(c->cb->ctx, b, at, count)) {
		c->stopped = true;
		*ok = false;
		return at;
	}
	c->got_token = true; /* relayed: a retry would relay the reply's start twice */
	c->done = c->done || finish;
	return at;
}

bool llm_call_body(struct llm_call *c, const char *data, size_t n)
{
	if (c->finished)
		return true; /* bytes after [DONE]: not read, not relayed; swallowed (the connection stays) */
	if (c->status == 200 && c->req->stream && !c->not_sse) {
		if (c->cb && c->cb->on_events && c->cb->on_chunk && !c->cb->on_delta) {
			bool ok;
			size_t used = pass_plain_events(c, data, n, &ok);
			if (!ok)
				return false;
			data += used;
			n -= used;
		}
		enum soma_err err = sse_parser_feed(&c->sse, data, n, on_event, c);
		if (err == SOMA_ERR_LIMIT)
			c->overflow = true;
		/* [DONE]: the reply is whole and the call ends now, not when the provider ends its body.
		 * The transfer goes on a moment for the framing's end, to keep its connection (async.c
		 * drains it, the blocking client's progress callback bounds it; a direct transfer:
		 * h1_xfer_hooks.body_over) */
		if (err == SOMA_OK && c->finished) {
			c->finished_ns = clock_mono_ns();
			if (c->on_finished)
				c->on_finished(c->cb->ctx);
		}
		return err == SOMA_OK;
	}
	if (!append(&c->body, &c->body_len, data, n, MAX_BODY)) {
		c->overflow = true;
		return false;
	}
	return true;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	const struct curl_api *curl = curl_api_get(NULL); /* loaded: we are inside a transfer */
	struct llm_call *c = ctx;
	size_t n = size * nmemb;
	if (!c)
		return n; /* a transfer drained after its call ended at [DONE] (async.c) */
	if (c->paused && !c->finished)
		return CURL_WRITEFUNC_PAUSE; /* kept by libcurl, given again after curl_easy_pause */
	if (!c->status)
		curl->easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
	return llm_call_body(c, ptr, n) ? n : 0;
}

void llm_call_head(struct llm_call *c, const char *line, size_t n)
{
	if (n >= 5 && memcmp(line, "HTTP/", 5) == 0)
		c->not_sse = false; /* a new head (libcurl gives each response's lines) */
	else if (n > 13 && strncasecmp(line, "content-type:", 13) == 0) {
		const char *v = line + 13, *end = line + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		c->not_sse = !(end - v >= 17 && strncasecmp(v, "text/event-stream", 17) == 0);
	}
	llm_call_header(c, line, n);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ctx)
{
	if (ctx) /* NULL: a transfer drained after its call ended (async.c) */
		llm_call_head(ctx, buf, size * nitems);
	return size * nitems;
}

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct llm_call *c = ctx;
	if (c->finished) /* the reply is whole: the framing's end is waited for a moment only */
		return clock_mono_ns() - c->finished_ns > (uint64_t)LLM_AFTER_DONE_MS * 1000000u;
	return c->cb && c->cb->should_cancel && c->cb->should_cancel(c->cb->ctx);
}

enum soma_err llm_call_begin(const struct llm_config *cfg, struct llm_result *res)
{
	memset(res, 0, sizeof(*res));
	res->input_tokens = res->output_tokens = -1;
	res->retry_after_ms = -1;
	if (!cfg->api_key[0]) {
		res->error = LLM_ERR_UNCONFIGURED;
		return SOMA_ERR_UNAVAILABLE;
	}
	const char *why = NULL;
	if (!curl_api_get(&why)) {
		res->error = LLM_ERR_UNREACHABLE;
		snprintf(res->detail, sizeof(res->detail), "%s", why);
		return SOMA_ERR_INTERNAL;
	}
	return SOMA_OK;
}

/* The request body, written around json_out's text of the messages: the bytes json_out gives for
 * the object {model, messages, stream, stream_options?, temperature?, max_tokens?} (as built
 * with jansson before), without building that object around the borrowed messages. A
 * temperature jansson cannot hold (not finite) is left out, as json_object_set_new left it. */
char *llm_request_body(const struct llm_config *cfg, const struct llm_request *req)
{
	if (req->body)
		return strdup(req->body);
	const char *model = req->model && *req->model ? req->model : cfg->model;
	size_t model_len = 0, msgs_len = 0, temp_len = 0;
	char *m = json_out_string(model, strlen(model), &model_len);
	char *msgs = json_out(req->messages, 1, &msgs_len);
	json_t *t = req->temperature >= 0 ? json_real(req->temperature) : NULL;
	char *temp = t ? json_out(t, 1, &temp_len) : NULL;
	json_decref(t);
	char tokens[24] = "";
	if (req->max_tokens > 0)
		snprintf(tokens, sizeof(tokens), "%lld", (long long)req->max_tokens);
	const char *pieces[] = {"{\"model\":",
				m,
				",\"messages\":",
				msgs,
				req->stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"
					    : ",\"stream\":false",
				temp ? ",\"temperature\":" : "",
				temp ? temp : "",
				tokens[0] ? ",\"max_tokens\":" : "",
				tokens,
				req->extra && *req->extra ? "," : "",
				req->extra ? req->extra : "",
				"}"};
	char *text = NULL;
	if (m && msgs && (!t || temp)) {
		size_t total = 0, at = 0;
		for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
			total += strlen(pieces[i]);
		text = total <= JSON_OUT_MAX ? malloc(total + 1) : NULL;
		for (size_t i = 0; text && i < sizeof(pieces) / sizeof(pieces[0]); i++) {
			size_t k = strlen(pieces[i]);
			memcpy(text + at, pieces[i], k);
			at += k;
		}
		if (text)
			text[at] = '\0';
	}
	free(m);
	free(msgs);
	free(temp);
	return text;
}

/* The options that are the same for every attempt with these settings. */
static void set_fixed(CURL *h, const struct llm_setup *s)
{
	const struct curl_api *curl = curl_api_get(NULL);
	if (s->url)
		curl->easy_setopt(h, CURLOPT_CURLU, s->url);
	else
		curl->easy_setopt(h, CURLOPT_URL, s->url_text);
	curl->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl->easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)s->cfg.connect_timeout_s);
	curl->easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl->easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)s->cfg.timeout_s);
	curl->easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
}

bool llm_call_reset(struct llm_call *c)
{
	if (sse_parser_init(&c->sse, MAX_EVENT) != SOMA_OK)
		return false;
	c->curl = NULL;
	c->headers = NULL;
	c->status = 0;
	c->retry_after_ms = -1;
	c->retry_after_ms_exact = false;
	c->done = c->overflow = false; /* an attempt's own: a retry's cut stream is not an earlier [DONE]'s */
	c->failed = c->not_sse = c->unsent = false;
	c->res->detail[0] = '\0';
	c->res->err_type[0] = c->res->err_param[0] = c->res->err_code[0] = '\0';
	return true;
}

bool llm_call_prepare(struct llm_call *c, const struct llm_setup *setup, bool fresh, const char *body, CURL *h)
{
	const struct curl_api *curl = curl_api_get(NULL); /* the caller checked that it loaded */
	bool stream = c->req->stream;
	/* the setup's constant list unless this call adds its own header */
	struct curl_slist *own =
		c->req->traceparent ? llm_build_headers(&setup->cfg, stream, c->req->traceparent) : NULL;
	if ((c->req->traceparent && !own) || !llm_call_reset(c)) {
		curl->slist_free_all(own);
		return false;
	}
	c->curl = h;
	c->headers = own;
	if (fresh)
		set_fixed(h, setup);
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, own ? own : setup->headers[stream]);
	curl->easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl->easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl->easy_setopt(h, CURLOPT_HEADERDATA, c);
	/* the blocking client's transfer is bounded after [DONE] by the progress callback */
	bool polled = (c->cb && c->cb->should_cancel) || !c->on_finished;
	if (polled) {
		curl->easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl->easy_setopt(h, CURLOPT_XFERINFODATA, c);
	}
	curl->easy_setopt(h, CURLOPT_NOPROGRESS, polled ? 0L : 1L);
	return true;
}
