/*
 * queue_bench.c - the enqueue side of bench/queue.sh, on the redis queue driver's own code:
 *   queue_bench publish REDIS_URL N TASK   direct publisher: N Celery v2 messages built by
 *                                          redis_task_envelope, LPUSHed in pipelined batches
 *   queue_bench relay REDIS_URL N TASK DIR  the outbox: N TASK_PUBLISH ops committed into a fresh
 *                                          store under DIR (group commit, fsync), then the relay
 *                                          publishes them to Redis; reports both rates
 * Prints one line of key=value pairs per phase.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "queue/celery_wire.h"
#include "queue/queue.h"
#include "queue/queue_int.h"
#include "redis/conn.h"
#include "store/store.h"

static double now_s(void)
{
	return (double)clock_mono_ns() / 1e9;
}

static json_t *make_task(const char *name)
{
	char id[IDS_UUID_LEN + 1];
	ids_uuid4(id);
	return json_pack("{s:s, s:s, s:s, s:s, s:{s:[], s:{}}, s:i}", "id", id, "name", name, "queue", "celery",
			 "tenant", "default", "payload", "args", "kwargs", "max_retries", 3);
}

static int publish(long n, const char *task)
{
	struct redis_conn *c = redis_queue_connect(10000);
	if (!c)
		return 1;
	double t0 = now_s();
	long sent = 0;
	while (sent < n) {
		int batch = 0;
		for (; batch < 1000 && sent + batch < n; batch++) {
			json_t *t = make_task(task);
			char key[CELERY_KEY_MAX];
			char *env = redis_task_envelope(t, 0, 0, key);
			const char *argv[] = {"LPUSH", key, env};
			size_t lens[] = {5, strlen(key), strlen(env)};
			if (redis_append_argv(c, 3, argv, lens) != SOMA_OK)
				return 1;
			free(env);
			json_decref(t);
		}
		for (int i = 0; i < batch; i++) {
			redisReply *r = redis_get_reply(c);
			if (!r || r->type == REDIS_REPLY_ERROR)
				return fprintf(stderr, "queue_bench: publish failed\n"), 1;
			freeReplyObject(r);
		}
		sent += batch;
	}
	double dt = now_s() - t0;
	printf("phase=publish tasks=%ld seconds=%.3f rate=%.0f\n", n, dt, (double)n / dt);
	redis_conn_close(c);
	return 0;
}

static void op_done(struct store_op *op)
{
	store_op_free(op);
}

static int relay(long n, const char *task, const char *dir)
{
	struct store *st;
	char why[256];
	if (store_open(dir, &st, why, sizeof(why)) != SOMA_OK || store_migrate(st, NULL) != SOMA_OK ||
	    store_exec_start(st, 2) != SOMA_OK)
		return fprintf(stderr, "queue_bench: %s\n", why), 1;
	double t0 = now_s();
	for (long i = 0; i < n; i++) {
		struct store_op *op = store_op_new(STORE_OP_TASK_PUBLISH, "default");
		op->task = make_task(task);
		op->done = op_done;
		while (store_submit(st, op) != SOMA_OK) { /* the store's queue is full: let it drain */
			struct timespec ts = {0, 200000};
			nanosleep(&ts, NULL);
		}
	}
	struct store_op *fence = store_op_new(STORE_OP_TASK_PUBLISH, "default");
	fence->task = make_task(task);
	if (store_op_wait(st, fence) != SOMA_OK)
		return fprintf(stderr, "queue_bench: commit failed\n"), 1;
	store_op_free(fence);
	double t1 = now_s();
	printf("phase=commit tasks=%ld seconds=%.3f rate=%.0f\n", n + 1, t1 - t0, (double)(n + 1) / (t1 - t0));
	if (queue_relay_start(st) != SOMA_OK)
		return fprintf(stderr, "queue_bench: relay did not start\n"), 1;
	queue_relay_wake(NULL);
	while (queue_relay_published() < n + 1) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	double t2 = now_s();
	printf("phase=relay tasks=%ld seconds=%.3f rate=%.0f\n", n + 1, t2 - t1, (double)(n + 1) / (t2 - t1));
	printf("phase=commit+relay tasks=%ld seconds=%.3f rate=%.0f\n", n + 1, t2 - t0, (double)(n + 1) / (t2 - t0));
	queue_relay_stop();
	store_exec_stop(st);
	store_close(st);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: queue_bench publish|relay REDIS_URL N TASK [DIR]\n");
		return 2;
	}
	static char *const no_env[] = {NULL};
	char set[600];
	snprintf(set, sizeof(set), "redis.url=%s", argv[2]);
	const char *sets[] = {set, "queue.driver=redis", "log.level=warn"};
	struct cfg_load_opts o = {.config_path = "/dev/null", .env = no_env, .sets = sets, .nsets = 3};
	struct cfg_errors errs;
	if (cfg_load(&o, &errs) != SOMA_OK)
		return fprintf(stderr, "queue_bench: bad config: %s\n", errs.lines[0]), 2;
	long n = strtol(argv[3], NULL, 10);
	if (strcmp(argv[1], "publish") == 0)
		return publish(n, argv[4]);
	if (strcmp(argv[1], "relay") == 0 && argc > 5)
		return relay(n, argv[4], argv[5]);
	return 2;
}
