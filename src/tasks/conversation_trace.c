/*
 * conversation_trace.c - the spans of conversation.process: a CONSUMER span per run of the task,
 * continuing the trace of the request that caused it (the traceparent in its payload, put there by
 * the gateway; on the redis queue it travels as the message's traceparent header), and a CLIENT
 * span per LLM call, whose id goes to the provider in the call's traceparent header.
 *
 * DESIGN: the task's span is this worker thread's current span (trace_current) while the task
 * runs, so the LLM call finds its parent without it being passed through the generation code.
 * With tracing off every function here returns after one branch. Worker thread of the task.
 */
#include <string.h>

#include "tasks/conversation_int.h"
#include "tasks/tasks.h"

enum task_outcome task_conversation_process(struct task_ctx *t)
{
	struct trace_span span;
	struct trace_ctx parent = {.valid = false};
	if (trace_enabled()) {
		const char *tp = json_string_value(json_object_get(t->payload, "traceparent"));
		if (tp)
			(void)trace_parse(tp, strlen(tp), &parent); /* invalid: a new trace */
	}
	if (!trace_span_start(&span, &parent, TASK_CONVERSATION_PROCESS, TRACE_KIND_CONSUMER))
		return conv_process(t);
	trace_span_attr_str(&span, "messaging.operation.type", "process");
	trace_span_attr_str(&span, "messaging.destination.name", t->queue ? t->queue : "conversation");
	trace_span_attr_str(&span, "messaging.message.id", t->id);
	struct trace_span *outer = trace_current();
	trace_current_set(&span);
	enum task_outcome outcome = conv_process(t);
	trace_current_set(outer);
	if (outcome == TASK_RETRY || outcome == TASK_FAIL) {
		span.status = TRACE_STATUS_ERROR;
		trace_span_attr_str(&span, "error.type", outcome == TASK_RETRY ? "retry" : "failure");
	}
	trace_span_end(&span);
	return outcome;
}

const char *conv_llm_span_start(struct trace_span *span, const struct llm_config *cfg, char tp[TRACEPARENT_LEN + 1])
{
	char name[TRACE_NAME_LEN];
	if (!trace_enabled()) {
		span->on = false;
		return NULL;
	}
	snprintf(name, sizeof(name), "chat %.80s", cfg->model);
	if (!trace_span_start_child(span, name, TRACE_KIND_CLIENT))
		return NULL;
	trace_span_attr_str(span, "gen_ai.operation.name", "chat");
	trace_span_attr_str(span, "gen_ai.request.model", cfg->model);
	trace_span_traceparent(span, tp);
	return tp;
}

void conv_llm_span_end(struct trace_span *span, const struct llm_result *res)
{
	if (!span->on)
		return;
	if (res->http_status)
		trace_span_attr_int(span, "http.response.status_code", res->http_status);
	if (res->error != LLM_OK) {
		span->status = TRACE_STATUS_ERROR;
		trace_span_attr_str(span, "error.type", llm_error_code(res->error));
	}
	trace_span_end(span);
}
