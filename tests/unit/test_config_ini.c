/*
 * test_config_ini.c - the INI file format (src/core/config_ini.c) as cfg_load reads it: lines of
 * any length up to CFG_INI_MAX_LINE arrive whole, a longer one is an error naming file:line, the
 * inline-comment rule, indented lines, every syntax error reported, BOM, CRLF and NUL bytes.
 *
 * DESIGN: every load passes an empty environment and an INI file made with mkstemp, written with
 * an explicit length so a test can hold a NUL byte.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/config_int.h"
#include "helpers.h"

static struct cfg_errors errs;
static char ini_path[64];
static char *no_env[] = {NULL};

static void teardown(void)
{
	cfg_unload();
	if (ini_path[0])
		unlink(ini_path);
	ini_path[0] = '\0';
}

TestSuite(config_ini, .fini = teardown);

/* Writes len bytes of text as this test's INI file and loads it. */
static enum soma_err load_bytes(const char *text, size_t len)
{
	snprintf(ini_path, sizeof(ini_path), "/tmp/soma-unit-XXXXXX");
	int fd = mkstemp(ini_path);
	cr_assert(fd >= 0, "mkstemp failed");
	cr_assert_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	struct cfg_load_opts o = {.config_path = ini_path, .env = no_env};
	return cfg_load(&o, &errs);
}

static enum soma_err load(const char *text)
{
	return load_bytes(text, strlen(text));
}

/* "path:line" of the test's INI file (static buffer). */
static const char *at_line(int line)
{
	static char buf[96];
	snprintf(buf, sizeof(buf), "%s:%d", ini_path, line);
	return buf;
}

static const char *all_errors(void)
{
	static char buf[CFG_MAX_ERRORS * (CFG_ERROR_LEN + 1) + 1];
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; i < errs.count; i++)
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s\n", errs.lines[i]);
	return errs.count ? buf : "(no error lines)";
}

/* True when an error line starts with "path:line:" and contains needle. */
static bool error_at(int line, const char *needle)
{
	char head[112];
	snprintf(head, sizeof(head), "%s:", at_line(line));
	for (int i = 0; i < errs.count; i++) {
		if (strncmp(errs.lines[i], head, strlen(head)) == 0 && strstr(errs.lines[i], needle))
			return true;
	}
	return false;
}

/* A prompt of len bytes with spaces every 7 bytes, so that any cut would leave a piece starting
 * with a space (the old reader took such a piece for a continuation and kept only it). */
static char *prompt_of(size_t len)
{
	char *p = malloc(len + 1);
	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = i % 7 == 6 ? ' ' : (char)('a' + i % 26);
	p[len - 1] = 'Z';
	p[len] = '\0';
	return p;
}

/* "[llm]\nsystem_prompt = <prompt>\n[http]\nio_threads = 3\n"; caller frees. */
static char *file_with_prompt(const char *prompt)
{
	size_t cap = strlen(prompt) + 128;
	char *text = malloc(cap);
	cr_assert_not_null(text);
	snprintf(text, cap, "[llm]\nsystem_prompt = %s\n[http]\nio_threads = 3\n", prompt);
	return text;
}

Test(config_ini, long_lines_arrive_whole_with_their_line)
{
	const size_t lens[] = {183, 199, 200, 260, 4096, CFG_INI_MAX_LINE - strlen("system_prompt = ")};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		char *prompt = prompt_of(lens[i]), *text = file_with_prompt(prompt);
		cr_assert_eq(load(text), SOMA_OK, "length %zu: %s", lens[i], all_errors());
		cr_assert_str_eq(cfg_str(CFG_LLM_SYSTEM_PROMPT), prompt, "length %zu", lens[i]);
		cr_assert_str_eq(cfg_origin(CFG_LLM_SYSTEM_PROMPT), at_line(2), "length %zu", lens[i]);
		cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 3);
		cr_assert_str_eq(cfg_origin(CFG_HTTP_IO_THREADS), at_line(4), "length %zu", lens[i]);
		free(text);
		free(prompt);
		teardown();
	}
}

Test(config_ini, a_line_over_the_limit_is_an_error_naming_file_and_line)
{
	char *prompt = prompt_of(CFG_INI_MAX_LINE), *text = file_with_prompt(prompt);
	cr_assert_eq(load(text), SOMA_ERR_CONFIG);
	cr_assert_eq(errs.count, 1, "%s", all_errors());
	cr_assert(error_at(2, "longer than 65536 bytes"), "%s", all_errors());
	cr_assert_str_eq(cfg_str(CFG_LLM_SYSTEM_PROMPT), cfg_def(CFG_LLM_SYSTEM_PROMPT)->def,
			 "no piece of the line is applied");
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 3, "the lines after it are read");
	cr_assert_str_eq(cfg_origin(CFG_HTTP_IO_THREADS), at_line(4));
	free(text);
	free(prompt);
}

Test(config_ini, semicolon_after_a_space_starts_a_comment)
{
	cr_assert_eq(load("[llm]\nsystem_prompt = Be brief ; no chit-chat\nmodel = a;b\n"), SOMA_OK, "%s",
		     all_errors());
	cr_assert_str_eq(cfg_str(CFG_LLM_SYSTEM_PROMPT), "Be brief");
	cr_assert_str_eq(cfg_str(CFG_LLM_MODEL), "a;b", "a ; inside a word is part of the value");
	teardown();
	cr_assert_eq(load("[llm]\nsystem_prompt =\t; only a comment\nmodel = x # not a comment\n"), SOMA_OK);
	cr_assert_str_eq(cfg_str(CFG_LLM_SYSTEM_PROMPT), "");
	cr_assert_str_eq(cfg_str(CFG_LLM_MODEL), "x # not a comment");
}

Test(config_ini, an_indented_line_is_not_a_continuation)
{
	cr_assert_eq(load("[llm]\n  system_prompt = one\n\tmodel = m\n"), SOMA_OK, "%s", all_errors());
	cr_assert_str_eq(cfg_str(CFG_LLM_SYSTEM_PROMPT), "one");
	cr_assert_str_eq(cfg_str(CFG_LLM_MODEL), "m");
	cr_assert_str_eq(cfg_origin(CFG_LLM_MODEL), at_line(3));
	teardown();
	cr_assert_eq(load("[llm]\nsystem_prompt = one\n  two\n"), SOMA_ERR_CONFIG);
	cr_assert(error_at(3, "syntax error"), "%s", all_errors());
}

Test(config_ini, every_syntax_error_is_reported_with_its_line)
{
	cr_assert_eq(load("[http]\nnot ini\nio_threads = 2\n= 5\n[unclosed\n[log] junk\n[ ]\n"), SOMA_ERR_CONFIG);
	for (int line = 4; line <= 7; line++)
		cr_assert(error_at(line, "syntax error"), "line %d: %s", line, all_errors());
	cr_assert(error_at(2, "syntax error"), "%s", all_errors());
	cr_assert_eq(errs.count, 5, "%s", all_errors());
}

Test(config_ini, sections_comments_bom_crlf_and_no_final_newline)
{
	const char *text = "\xEF\xBB\xBF; top\r\n# also a comment\r\n[ http ] ; the server\r\nio_threads = 3\r\n"
			   "[log]\r\nlevel: debug\r\n[llm]\r\nmodel = last";
	cr_assert_eq(load(text), SOMA_OK, "%s", all_errors());
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 3);
	cr_assert_str_eq(cfg_str(CFG_LOG_LEVEL), "debug", "name: value, as inih read it");
	cr_assert_str_eq(cfg_str(CFG_LLM_MODEL), "last");
	cr_assert_str_eq(cfg_origin(CFG_LLM_MODEL), at_line(8));
}

Test(config_ini, a_nul_byte_is_an_error)
{
	static const char text[] = "[llm]\nmodel = a\0b\n[http]\nio_threads = 3\n";
	cr_assert_eq(load_bytes(text, sizeof(text) - 1), SOMA_ERR_CONFIG);
	cr_assert(error_at(2, "NUL"), "%s", all_errors());
	cr_assert_str_eq(cfg_str(CFG_LLM_MODEL), "", "the line is not applied");
	cr_assert_eq(cfg_int(CFG_HTTP_IO_THREADS), 3);
}
