/*
 * test_llm_body.c - the provider request body written around the messages' text
 * (llm_request_body, src/llm/call.c) has the bytes of the body built as a jansson object and
 * written by json_out, as before (ref_body, kept here): for streamed and whole replies, with and
 * without a temperature (finite or not) and max_tokens, the config's model or the request's,
 * messages with escapes and UTF-8, and NULL where the old one failed.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "llm/llm_int.h"

/* the body builder of commit c0993bb, unchanged but for its name */
static char *ref_body(const struct llm_config *cfg, const struct llm_request *req)
{
	json_t *body = json_pack("{s:s, s:O, s:b}", "model", req->model && *req->model ? req->model : cfg->model,
				 "messages", req->messages, "stream", req->stream);
	if (!body)
		return NULL;
	if (req->stream)
		json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
	if (req->temperature >= 0)
		json_object_set_new(body, "temperature", json_real(req->temperature));
	if (req->max_tokens > 0)
		json_object_set_new(body, "max_tokens", json_integer(req->max_tokens));
	char *text = json_out(body, 0, NULL);
	json_decref(body);
	return text;
}

static void same(const struct llm_config *cfg, const struct llm_request *req, const char *what)
{
	char *want = ref_body(cfg, req), *got = llm_request_body(cfg, req);
	if (!want)
		cr_assert_null(got, "%s: a body where the old builder failed: %s", what, got);
	else {
		cr_assert_not_null(got, "%s: no body", what);
		cr_assert_str_eq(got, want, "%s", what);
	}
	free(want);
	free(got);
}

Test(llm_body, same_bytes_as_the_jansson_object)
{
	struct llm_config cfg = {.model = "cfg-model"};
	json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":"
				  "\"h\\u00e9 \\\"quoted\\\" \\\\ \\n\\t\\u0001 \\ud83d\\ude00\"},{\"content\":\"x\","
				  "\"role\":\"assistant\",\"n\":[1,2.5,true,null]}]",
				  0, NULL);
	cr_assert_not_null(msgs);
	static const double temps[] = {-1, 0, 0.7, 1, 1.5, 2, 1e-7};
	static const int64_t maxes[] = {0, 1, 256, 9007199254740993LL};
	static const char *const models[] = {NULL, "", "req-model", "m\xc3\xa9\"x"};
	for (int stream = 0; stream < 2; stream++)
		for (size_t t = 0; t < sizeof(temps) / sizeof(temps[0]); t++)
			for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++)
				for (size_t k = 0; k < sizeof(models) / sizeof(models[0]); k++) {
					struct llm_request req = {.messages = msgs,
								  .model = models[k],
								  .temperature = temps[t],
								  .max_tokens = maxes[m],
								  .stream = stream};
					char what[96];
					snprintf(what, sizeof(what), "stream %d temperature %g max %lld model %zu",
						 stream, temps[t], (long long)maxes[m], k);
					same(&cfg, &req, what);
				}
	json_t *empty = json_array();
	same(&cfg, &(struct llm_request){.messages = empty, .temperature = -1, .stream = true}, "no messages");
	json_decref(empty);
	json_decref(msgs);
}

Test(llm_body, fails_or_leaves_out_where_the_old_builder_did)
{
	struct llm_config cfg = {.model = "cfg-model"};
	json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
	same(&cfg, &(struct llm_request){.messages = NULL, .temperature = -1, .stream = true}, "NULL messages");
	same(&cfg, &(struct llm_request){.messages = msgs, .model = "bad \xff utf-8", .temperature = -1},
	     "a model that is not UTF-8");
	same(&cfg, &(struct llm_request){.messages = msgs, .temperature = INFINITY, .stream = true},
	     "an infinite temperature");
	same(&cfg, &(struct llm_request){.messages = msgs, .temperature = NAN, .max_tokens = 5}, "a NaN temperature");
	json_t *bad = json_array();
	json_array_append_new(bad, json_stringn_nocheck("\xc3", 1));
	same(&cfg, &(struct llm_request){.messages = bad, .temperature = -1, .stream = true},
	     "messages that are not UTF-8");
	json_decref(bad);
	json_decref(msgs);
}

/* A proxied request's other members: forwarded as written, the call's and the platform's own
 * left out, appended to the body (llm_forwarded_members, src/llm/forward.c). */
Test(llm_body, forwarded_members_end_the_body)
{
	json_t *client = json_loads("{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\",\"function\":"
				    "{\"name\":\"f\\u00e9\"}}],\"stream\":true,\"top_p\":0.5,\"persona_id\":\"p\","
				    "\"session_id\":\"s\",\"stop\":null,\"stream_options\":{\"include_usage\":false},"
				    "\"temperature\":1,\"max_tokens\":3}",
				    0, NULL);
	cr_assert_not_null(client);
	char *extra = llm_forwarded_members(client);
	cr_assert_str_eq(extra, "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\xc3\xa9\"}}],"
				"\"top_p\":0.5,\"stop\":null");
	struct llm_config cfg = {.model = "cfg-model"};
	json_t *messages = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
	struct llm_request req = {.messages = messages, .temperature = -1, .stream = true, .extra = extra};
	char *body = llm_request_body(&cfg, &req);
	json_error_t err;
	json_t *sent = json_loads(body, 0, &err);
	cr_assert_not_null(sent, "not JSON: %s (%s)", body, err.text);
	cr_assert_eq(json_real_value(json_object_get(sent, "top_p")), 0.5);
	cr_assert(json_is_null(json_object_get(sent, "stop")));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(sent, "tools"), 0), "type")),
			 "function");
	cr_assert(json_is_true(json_object_get(json_object_get(sent, "stream_options"), "include_usage")),
		  "usage is always asked of the provider (the client's wish is applied on the way back)");
	cr_assert_null(json_object_get(sent, "persona_id"));
	free(body);
	json_decref(sent);

	json_t *plain = json_loads("{\"messages\":[],\"model\":\"x\"}", 0, NULL);
	char *none = llm_forwarded_members(plain);
	cr_assert_str_eq(none, "");
	req.extra = none;
	body = llm_request_body(&cfg, &req);
	req.extra = NULL;
	char *without = llm_request_body(&cfg, &req);
	cr_assert_str_eq(body, without, "nothing to forward: the same body");
	free(body);
	free(without);
	free(none);
	free(extra);
	json_decref(plain);
	json_decref(messages);
	json_decref(client);
}
