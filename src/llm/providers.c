/*
 * providers.c - the effective LLM settings from the configuration: provider presets (groq,
 * openai) fill in the base URL, the key and a default model unless set explicitly.
 */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/str_copy.h"
#include "llm/llm.h"

void llm_config_from_settings(struct llm_config *out)
{
	const char *provider = cfg_str(CFG_LLM_PROVIDER);
	const char *base = cfg_str(CFG_LLM_BASE_URL), *key = cfg_str(CFG_LLM_API_KEY), *model = cfg_str(CFG_LLM_MODEL);
	memset(out, 0, sizeof(*out));
	if (strcmp(provider, "groq") == 0) {
		base = base[0] ? base : "https://api.groq.com/openai/v1";
		key = key[0] ? key : cfg_str(CFG_LLM_GROQ_API_KEY);
		model = model[0] ? model : "llama-3.1-8b-instant";
	} else if (strcmp(provider, "openai") == 0) {
		base = base[0] ? base : "https://api.openai.com/v1";
		key = key[0] ? key : cfg_str(CFG_LLM_OPENAI_API_KEY);
		model = model[0] ? model : "gpt-4o-mini";
	}
	str_copy(out->base_url, sizeof(out->base_url), base);
	size_t n = strlen(out->base_url);
	while (n > 0 && out->base_url[n - 1] == '/')
		out->base_url[--n] = '\0';
	str_copy(out->api_key, sizeof(out->api_key), key);
	str_copy(out->model, sizeof(out->model), model);
	out->connect_timeout_s = (int)cfg_int(CFG_LLM_CONNECT_TIMEOUT_S);
	out->timeout_s = (int)cfg_int(CFG_LLM_TIMEOUT_S);
	out->max_retries = (int)cfg_int(CFG_LLM_MAX_RETRIES);
	out->backoff_ms = (int)cfg_int(CFG_LLM_BACKOFF_MS);
	out->retry_wait_ms = (int)cfg_int(CFG_LLM_RETRY_WAIT_S) * 1000;
	out->env_proxy = cfg_env_http_proxy();
}
