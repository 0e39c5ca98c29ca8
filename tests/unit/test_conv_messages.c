/*
 * test_conv_messages.c - the provider's messages from the stored turns (conv_build_messages,
 * src/tasks/conversation_prep.c: the window found first, the turns appended oldest first) are
 * those the builder of commit c0993bb gave (each turn inserted at the front; ref_build, kept
 * here, with the newest turn's cut now marked): for random turns under budgets from tiny (the
 * newest turn cut, the system prompt alone over the budget) to large, with and without a system
 * prompt.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/json_out.h"
#include "tasks/conversation_int.h"

#define MARK "\n[Cut: only the first %zu of %zu characters of this message are included (llm.max_context_tokens)]"

static json_t *ref_build(json_t *rows, size_t reserved)
{
	int64_t budget = cfg_int(CFG_LLM_MAX_CONTEXT_TOKENS) * 4;
	const char *system = cfg_str(CFG_LLM_SYSTEM_PROMPT);
	json_t *turns = json_array();
	budget -= (int64_t)strlen(system) + (int64_t)reserved;
	bool newest = true;
	for (size_t i = 0; i < json_array_size(rows); i++) {
		json_t *row = json_array_get(rows, i);
		const char *role = json_string_value(json_object_get(row, "role"));
		const char *msg = json_string_value(json_object_get(row, "content"));
		size_t len = json_string_length(json_object_get(row, "content"));
		bool fits = (int64_t)len <= budget;
		if (!fits && !newest)
			break;
		if (fits) {
			json_array_insert(turns, 0, row);
		} else { /* the newest turn cut, the cut marked within the budget (after commit c0993bb) */
			char mark[160];
			int room = (int)budget - snprintf(NULL, 0, MARK, len, len);
			size_t keep = conv_utf8_prefix(msg, len, room > 1024 ? (size_t)room : 1024);
			snprintf(mark, sizeof(mark), MARK, keep, len);
			json_array_insert_new(turns, 0,
					      json_pack("{s:s, s:s%+}", "role", role, "content", msg, keep, mark));
			len = keep + strlen(mark);
		}
		budget -= (int64_t)len;
		newest = false;
	}
	if (system[0])
		json_array_insert_new(turns, 0, json_pack("{s:s, s:s}", "role", "system", "content", system));
	return turns;
}

static void load(const char *tokens, const char *prompt)
{
	static char *const no_env[] = {NULL};
	char t[64], p[2200];
	snprintf(t, sizeof(t), "llm.max_context_tokens=%s", tokens);
	snprintf(p, sizeof(p), "llm.system_prompt=%s", prompt);
	const char *sets[] = {t, p};
	struct cfg_load_opts o = {.sets = sets, .nsets = 2, .env = no_env};
	struct cfg_errors errs = {0};
	cfg_unload();
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
}

Test(conv_messages, the_window_of_the_old_builder)
{
	static const char *const tokens[] = {"100", "150", "300", "1000", "100000"};
	char long_prompt[2001];
	memset(long_prompt, 'p', 2000);
	long_prompt[2000] = '\0';
	const char *const prompts[] = {"", "Be brief.", long_prompt};
	srand(20261128);
	for (size_t t = 0; t < sizeof(tokens) / sizeof(tokens[0]); t++)
		for (size_t p = 0; p < sizeof(prompts) / sizeof(prompts[0]); p++) {
			load(tokens[t], prompts[p]);
			for (int round = 0; round < 50; round++) {
				json_t *rows = json_array();
				for (int i = rand() % 30; i > 0; i--) {
					size_t len = (size_t)(rand() % 4 == 0 ? rand() % 3000 : rand() % 200);
					char *text = malloc(len + 1);
					for (size_t c = 0; c < len; c++) /* some 2-byte characters to cut inside */
						text[c] = c % 7 == 5 && c + 1 < len			 ? '\xc3'
							  : c % 7 == 6 && c > 0 && text[c - 1] == '\xc3' ? '\xa9'
													 : 'a';
					text[len] = '\0';
					json_array_append_new(rows,
							      json_pack("{s:s, s:s}", "role",
									i % 2 ? "user" : "assistant", "content", text));
					free(text);
				}
				size_t reserved = round % 2 ? 0 : (size_t)(rand() % 1500); /* recalled memories */
				json_t *want = ref_build(rows, reserved),
				       *got = conv_build_messages(rows, reserved, NULL, NULL);
				size_t total = reserved;
				for (size_t i = 0; i < json_array_size(got); i++)
					total += json_string_length(json_object_get(json_array_get(got, i), "content"));
				cr_assert(json_array_size(got) <= 2 + (prompts[p][0] != '\0') ||
						  (int64_t)total <= cfg_int(CFG_LLM_MAX_CONTEXT_TOKENS) * 4,
					  "older turns and the memories over the budget");
				char *w = json_out(want, 0, NULL), *g = json_out(got, 0, NULL);
				cr_assert(w && g && strcmp(w, g) == 0, "tokens %s prompt %zu round %d: other messages",
					  tokens[t], p, round);
				free(w);
				free(g);
				json_decref(want);
				json_decref(got);
				json_decref(rows);
			}
		}
	cfg_unload();
}
