/*
 * llm_ask.h - a POST /v1/chat/completions body read from its text, without a JSON tree, and the
 * provider's body written around the client's own text (module-internal: llm_proxy.c).
 *
 * DESIGN: the proxy checks a few members (messages, model, temperature, max_tokens, stream) and
 * passes the rest on; building a jansson tree of the body, then writing the messages out again,
 * was a fifth of a proxied call's instructions. llm_ask_read checks the text (core/json_scan.h:
 * what it passes, jansson reads), walks the outer object and each message, and keeps spans into
 * the body; llm_ask_upstream writes the provider's body from those spans. Whatever this cannot
 * read as the tree path would (not JSON, nested too deep, an escaped or repeated key at the top
 * or in a message, a value longer than its buffer), and every body that fails a check, it leaves
 * to the tree path, which answers: so bad bodies get the same answers either way. A key repeated
 * deeper (inside a content part or a tool's schema) in a body that passes is passed on for the
 * provider to judge (the tree path would refuse it).
 */
#ifndef SOMA_GATEWAY_LLM_ASK_H
#define SOMA_GATEWAY_LLM_ASK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/json_scan.h"
#include "http/http.h"

#define LLM_ASK_MAX_MEMBERS 64 /* outer members read from the text (more: the tree path) */

struct llm_ask {
	struct jspan messages, model, temperature, max_tokens; /* spans into the body (p NULL: absent) */
	struct jspan extra[LLM_ASK_MAX_MEMBERS][2];	       /* members passed on: key (inside its quotes), value */
	int nextra;					       /* entries in extra */
	char model_text[128];				       /* model unescaped, "" when absent or null */
	char persona_id[128];				       /* persona_id unescaped when a string, else "" */
	bool has_persona;				       /* persona_id is a string ("" included) */
	bool stream, include_usage;			       /* what the client asked */
	double temperature_value;			       /* < 0: not given */
	int64_t max_tokens_value;			       /* <= 0: not given */
};

enum llm_ask_result {
	LLM_ASK_OK,	  /* *ask is filled */
	LLM_ASK_USE_TREE, /* read it with gw_json_object and the tree checks (which answer a bad one) */
};

enum job_shape { SHAPE_OPENAI, SHAPE_INVOKE }; /* OpenAI's shapes, or /v1/llm/invoke's */

/* What a request asks, read from its tree or (chat completions) its text. */
struct job_ask {
	const char *model;		     /* "" or NULL: the configured one */
	double temperature;		     /* < 0: not given */
	int64_t max_tokens;		     /* <= 0: not given */
	bool stream, include_usage;	     /* what the client asked */
	const char *persona_id, *session_id; /* policy input, NULL: none */
	json_t *messages;		     /* tree: borrowed */
	json_t *forward;		     /* tree, OpenAI shape: the body whose other members are passed on */
	const struct llm_ask *text;	     /* text: the provider's body is written from it */
};

/* Checks the token budget and the policy for ask, then runs the provider call (or queues it for a
 * slot) and answers req in shape (llm_proxy.c); answers the failures itself. */
void llm_job_start(struct http_req *req, const struct job_ask *ask, enum job_shape shape);

/* Reads req's body into *ask (spans borrowed from req->body); answers nothing. */
enum llm_ask_result llm_ask_read(struct http_req *req, struct llm_ask *ask);
/* The provider's body: model (the asked one, else default_model), messages, stream (with usage
 * asked when streamed), temperature, max_tokens and the passed-on members, each as the client
 * wrote it. Owned by the caller (free); NULL on OOM. */
char *llm_ask_upstream(const struct llm_ask *ask, const char *default_model);

#endif
