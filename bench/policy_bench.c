/*
 * policy_bench.c - what one builtin policy decision costs on the request path: the median of
 * 21 rounds of 200,000 policy_decide_now() calls for the input a chat message asks with
 * (conversation.send, an API key's identity), on the compiled-in rules. Run by bench/auth.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/config.h"
#include "policy/policy.h"

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(void)
{
	static char *const no_env[] = {NULL};
	struct cfg_load_opts o = {.config_path = "/dev/null", .env = no_env};
	struct cfg_errors errs;
	char why[256];
	if (cfg_load(&o, &errs) != SOMA_OK || policy_start(why, sizeof(why)) != SOMA_OK) {
		fprintf(stderr, "policy_bench: cannot start the policy engine\n");
		return 1;
	}
	struct policy_input in = {.tenant = "acme",
				  .subject = "key:0123456789abcdef",
				  .scopes = "",
				  .action = POLICY_CONVERSATION_SEND,
				  .resource = "session:0190c0de-0000-7000-8000-000000000000"};
	struct policy_decision d;
	double rounds[21];
	for (int r = 0; r < 21; r++) {
		double t0 = now_ns();
		for (int i = 0; i < 200000; i++)
			if (!policy_decide_now(&in, &d) || !d.allow)
				return fprintf(stderr, "policy_bench: the decision was not an allow (%s)\n", d.reason), 1;
		rounds[r] = (now_ns() - t0) / 200000.0;
	}
	qsort(rounds, 21, sizeof(rounds[0]), cmp);
	printf("%.3f\n", rounds[10] / 1000.0); /* microseconds per decision, median round */
	policy_stop();
	return 0;
}
