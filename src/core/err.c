/*
 * err.c - lookups into the error table of err.h.
 */
#include "core/err.h"

struct err_info {
	int status;	  /* HTTP status that fits the error */
	const char *code; /* snake_case name for JSON envelopes */
	const char *text; /* default human text */
};

static const struct err_info err_table[SOMA_ERR_COUNT] = {
#define SOMA_ERR_ROW(name, status, code, text) [name] = {status, code, text},
	SOMA_ERR_TABLE(SOMA_ERR_ROW)
#undef SOMA_ERR_ROW
};

static const struct err_info *info(enum soma_err err)
{
	if ((unsigned)err >= SOMA_ERR_COUNT)
		return &err_table[SOMA_ERR_INTERNAL];
	return &err_table[err];
}

const char *soma_err_str(enum soma_err err)
{
	return info(err)->text;
}
const char *soma_err_code(enum soma_err err)
{
	return info(err)->code;
}
int soma_err_http_status(enum soma_err err)
{
	return info(err)->status;
}
