/*
 * fuzz_config.c - libFuzzer harness: arbitrary bytes as the INI file given to --config.
 * Invariants: no crash or leak; either the load succeeds or every error line is non-empty.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[] = "/tmp/soma-fuzz-config-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		unlink(path);
		return 0;
	}
	close(fd);
	char *env[] = {NULL};
	struct cfg_load_opts opts = {.config_path = path, .env = env};
	struct cfg_errors errs;
	if (cfg_load(&opts, &errs) != SOMA_OK) {
		for (int i = 0; i < errs.count; i++) {
			if (!errs.lines[i][0])
				abort();
		}
	}
	cfg_unload();
	unlink(path);
	return 0;
}
