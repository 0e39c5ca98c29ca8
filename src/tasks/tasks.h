/*
 * tasks.h - the task implementations and their registration with the queue.
 */
#ifndef SOMA_TASKS_TASKS_H
#define SOMA_TASKS_TASKS_H

#include "queue/queue.h"

#define TASK_CONVERSATION_PROCESS "conversation.process"

enum task_outcome task_conversation_process(struct task_ctx *t);
#define TASK_TOOL_RUN "soma.tool"

/* soma.tool {tool, args}: one tool of src/tools/tools.h for the task's tenant (tool.c). */
enum task_outcome task_tool_run(struct task_ctx *t);
/* soma.echo, soma.sleep, soma.fail, soma.noop (diagnostic.c). */
enum soma_err tasks_register_diagnostic(void) SOMA_MUST_CHECK;
/* Registers every task this binary implements. */
enum soma_err tasks_register_all(void) SOMA_MUST_CHECK;

#endif
