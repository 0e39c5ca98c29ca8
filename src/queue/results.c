/*
 * results.c - the task API's reads and writes on Redis (redis driver): a task's status from its
 * Celery result meta, and idempotency keys.
 *
 * DESIGN: io threads never block, so each call is a job on a bounded queue served by
 * RESULT_THREADS threads, each with its own connection; the job's done() runs on that thread
 * (the gateway posts its answer back to the request's io thread). A task is shown to the tenant
 * recorded in the result meta itself (soma_tenant, written by our worker) or else in
 * soma-task-owner-<id> (written by the relay at publish, and by the worker on its rare canvas paths
 * beside the result meta with the meta's lifetime); a result with no owner key (sent by a Python
 * producer) is shown only to callers allowed unowned tasks (an admin, the default tenant: who
 * ran them before tenants existed), never to another tenant, and a task with neither an owner
 * nor a meta is PENDING, as Celery reports an unknown id.
 *
 * A caller's task id (POST /v1/tasks task_id) is claimed before its publish: SET NX of its owner
 * key, refused while the id has a result meta (a task that ran, ours or a Python producer's) or
 * an owner (another tenant's task, or the caller's own); a publish that fails releases it. The
 * relay never moves an owner key to another tenant (relay.c), so an id stays its first tenant's.
 * An idempotency key answers whether this SET NX set it (fresh) or who holds it: a retry that
 * carries the same task id is still a duplicate.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json_py.h"
#include "core/log.h"
#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

#define RESULT_THREADS 2
#define RESULT_QUEUE   4096

struct job {
	char task_id[CELERY_ID_BYTES + 1]; /* the task */
	char tenant[72];		   /* the caller's tenant */
	char key[200];			   /* idempotency key ("" for a status read) */
	int ttl_s;			   /* idempotency key lifetime */
	bool release;			   /* delete the key if it still holds task_id (fn NULL) */
	bool claim;			   /* a task id claim (key ""), or its release when release is set */
	bool unowned_ok;		   /* the caller may read a result that has no owner */
	json_t *queues;			   /* queue names, for a stats read (owned), else NULL */
	queue_status_fn fn;		   /* completion */
	void *arg;			   /* its argument */
	struct job *next;		   /* queue link */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static struct job *head, *tail;
static int queued;
static bool running, stop;
static pthread_t tids[RESULT_THREADS];

static enum soma_err submit(struct job *j)
{
	pthread_mutex_lock(&lock);
	if (!running || stop || queued >= RESULT_QUEUE) {
		pthread_mutex_unlock(&lock);
		json_decref(j->queues);
		free(j);
		return SOMA_ERR_UNAVAILABLE;
	}
	if (tail)
		tail->next = j;
	else
		head = j;
	tail = j;
	queued++;
	pthread_cond_signal(&ready);
	pthread_mutex_unlock(&lock);
	return SOMA_OK;
}

static struct job *new_job(const char *task_id, const char *tenant, queue_status_fn fn, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j) {
		snprintf(j->task_id, sizeof(j->task_id), "%s", task_id);
		snprintf(j->tenant, sizeof(j->tenant), "%s", tenant);
		j->fn = fn, j->arg = arg;
	}
	return j;
}

enum soma_err queue_status_async(const char *task_id, const char *tenant, bool unowned_ok, queue_status_fn done,
				 void *arg)
{
	struct job *j = new_job(task_id, tenant, done, arg);
	if (j)
		j->unowned_ok = unowned_ok;
	return j ? submit(j) : SOMA_ERR_NOMEM;
}

enum soma_err queue_idempotency_async(const char *tenant, const char *key, const char *task_id, int ttl_s,
				      queue_status_fn done, void *arg)
{
	struct job *j = new_job(task_id, tenant, done, arg);
	if (!j)
		return SOMA_ERR_NOMEM;
	snprintf(j->key, sizeof(j->key), "%s", key);
	j->ttl_s = ttl_s;
	return submit(j);
}

enum soma_err queue_idempotency_release_async(const char *tenant, const char *key, const char *task_id)
{
	struct job *j = new_job(task_id, tenant, NULL, NULL);
	if (!j)
		return SOMA_ERR_NOMEM;
	snprintf(j->key, sizeof(j->key), "%s", key);
	j->release = true;
	return submit(j);
}

enum soma_err queue_task_id_claim_async(const char *tenant, const char *task_id, int ttl_s, queue_status_fn done,
					void *arg)
{
	struct job *j = new_job(task_id, tenant, done, arg);
	if (!j)
		return SOMA_ERR_NOMEM;
	j->claim = true;
	j->ttl_s = ttl_s;
	return submit(j);
}

enum soma_err queue_task_id_release_async(const char *tenant, const char *task_id)
{
	struct job *j = new_job(task_id, tenant, NULL, NULL);
	if (!j)
		return SOMA_ERR_NOMEM;
	j->claim = j->release = true;
	return submit(j);
}

enum soma_err queue_stats_async(const json_t *queues, queue_status_fn done, void *arg)
{
	struct job *j = new_job("", "", done, arg);
	if (!j)
		return SOMA_ERR_NOMEM;
	if (!(j->queues = json_deep_copy(queues))) {
		free(j);
		return SOMA_ERR_NOMEM;
	}
	return submit(j);
}

/* Celery's meta as GET /v1/tasks shows a task. */
static json_t *row_from_meta(const char *id, json_t *meta)
{
	const char *status = json_string_value(json_object_get(meta, "status"));
	json_t *res = json_object_get(meta, "result");
	bool ok = status && strcmp(status, "SUCCESS") == 0;
	char *error = NULL;
	if (!ok && json_is_object(res)) {
		const char *type = json_string_value(json_object_get(res, "exc_type"));
		json_t *msg = json_object_get(res, "exc_message");
		char *text = json_dumps(json_is_array(msg) && json_array_size(msg) == 1 ? json_array_get(msg, 0) : msg,
					JSON_ENCODE_ANY | JSON_COMPACT);
		const char *plain = json_string_value(json_is_array(msg) ? json_array_get(msg, 0) : msg);
		size_t cap = 600;
		if ((error = malloc(cap)))
			snprintf(error, cap, "%s: %s", type ? type : "Exception", plain ? plain : text ? text : "");
		free(text);
	}
	char done[CLOCK_RFC3339_LEN + 1];
	int64_t done_ms = 0;
	const char *dd = json_string_value(json_object_get(meta, "date_done"));
	bool has_done = dd && celery_time_parse(dd, &done_ms);
	json_t *row = json_pack("{s:s, s:O?, s:s, s:O, s:s?, s:I, s:n, s:s?, s:b}", "task_id", id, "task",
				json_object_get(meta, "name"), "status", status ? status : "PENDING", "result",
				ok ? res : json_null(), "error", error, "retries",
				(json_int_t)json_integer_value(json_object_get(meta, "retries")), "started_at",
				"completed_at", has_done ? clock_rfc3339(done_ms, done, sizeof(done)) : NULL,
				"dead_letter", 0);
	free(error);
	return row;
}

static void run_status(struct redis_conn *c, struct job *j)
{
	char meta_key[CELERY_ID_KEY_MAX], owner_key[CELERY_ID_KEY_MAX];
	redis_meta_key(j->task_id, meta_key, sizeof(meta_key));
	snprintf(owner_key, sizeof(owner_key), "soma-task-owner-%s", j->task_id);
	redisReply *r = redis_cmd(c, "MGET %s %s", meta_key, owner_key);
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		freeReplyObject(r);
		j->fn(NULL, SOMA_ERR_UNAVAILABLE, j->arg);
		return;
	}
	redisReply *meta = r->element[0], *owner_at = r->element[1];
	json_t *m = meta->type == REDIS_REPLY_STRING ? json_py_load(meta->str, meta->len, 0, NULL) : NULL;
	/* whose: the result's own soma_tenant (our worker writes it), else the owner key */
	const char *owner = json_string_value(json_object_get(m, "soma_tenant"));
	if (!owner && owner_at->type == REDIS_REPLY_STRING)
		owner = owner_at->str;
	bool theirs = owner && strcmp(owner, j->tenant) != 0;
	bool unowned = !owner && meta->type == REDIS_REPLY_STRING;
	if (theirs || (unowned && !j->unowned_ok)) {
		json_decref(m);
		freeReplyObject(r);
		j->fn(NULL, SOMA_ERR_NOT_FOUND, j->arg);
		return;
	}
	json_t *row = m ? row_from_meta(j->task_id, m) : NULL;
	json_decref(m);
	freeReplyObject(r);
	j->fn(row, SOMA_OK, j->arg);
	json_decref(row);
}

/* Deletes KEYS[1] when it holds ARGV[1]. */
static const char release_script[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

static void run_idempotency(struct redis_conn *c, struct job *j)
{
	char key[340], ttl[16];
	/* the tenant's length first: tenant "a-b" with key "x" and tenant "a" with key "b-x" differ */
	snprintf(key, sizeof(key), "soma-idem-%zu-%s-%s", strlen(j->tenant), j->tenant, j->key);
	snprintf(ttl, sizeof(ttl), "%d", j->ttl_s > 0 ? j->ttl_s : 86400);
	if (j->release) {
		redisReply *d = redis_cmd(c, "EVAL %s 1 %s %s", release_script, key, j->task_id);
		if (!d || d->type == REDIS_REPLY_ERROR)
			log_warn(
				"queue",
				"cannot release the idempotency key of task %s, never stored (redis: %s); a retry with "
				"that key answers duplicate until it expires",
				j->task_id, d ? d->str : redis_conn_error(c));
		freeReplyObject(d);
		return;
	}
	/* NX GET answers nil exactly when this SET set the key: whether the request is the first,
	 * not whether the ids differ (a retry with the caller's task_id carries the same id) */
	redisReply *r = redis_cmd(c, "SET %s %s NX EX %s GET", key, j->task_id, ttl);
	json_t *out = NULL;
	if (r && r->type == REDIS_REPLY_NIL)
		out = json_pack("{s:s, s:b}", "task_id", j->task_id, "fresh", 1); /* it was free: ours now */
	else if (r && r->type == REDIS_REPLY_STRING)
		out = json_pack("{s:s%, s:b}", "task_id", r->str, r->len, "fresh", 0);
	freeReplyObject(r);
	j->fn(out, out ? SOMA_OK : SOMA_ERR_UNAVAILABLE, j->arg);
	json_decref(out);
}

/* Claims KEYS[1] (the owner key) for ARGV[1] (the tenant) for ARGV[2] seconds unless the id has a
 * result meta (KEYS[2]) or an owner already: 1 when claimed. */
static const char claim_script[] = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end "
				   "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end "
				   "return 0";

static void run_claim(struct redis_conn *c, struct job *j)
{
	char meta_key[CELERY_ID_KEY_MAX], owner_key[CELERY_ID_KEY_MAX];
	redis_meta_key(j->task_id, meta_key, sizeof(meta_key));
	snprintf(owner_key, sizeof(owner_key), "soma-task-owner-%s", j->task_id);
	if (j->release) { /* the publish failed: the id is free again (if the claim is still ours) */
		redisReply *d = redis_cmd(c, "EVAL %s 1 %s %s", release_script, owner_key, j->tenant);
		if (!d || d->type == REDIS_REPLY_ERROR)
			log_warn("queue",
				 "cannot release the claim of task id %s, never stored (redis: %s); the tenant's retry "
				 "with that id answers 409 task_id_taken until it expires",
				 j->task_id, d ? d->str : redis_conn_error(c));
		freeReplyObject(d);
		return;
	}
	redisReply *r = redis_cmd(c, "EVAL %s 2 %s %s %s %d", claim_script, owner_key, meta_key, j->tenant,
				  j->ttl_s > 0 ? j->ttl_s : 86400);
	json_t *out = r && r->type == REDIS_REPLY_INTEGER ? json_boolean(r->integer == 1) : NULL;
	if (r && r->type == REDIS_REPLY_ERROR)
		log_warn("queue", "cannot claim task id %s (redis: %s)", j->task_id, r->str);
	freeReplyObject(r);
	j->fn(out, out ? SOMA_OK : SOMA_ERR_UNAVAILABLE, j->arg);
	json_decref(out);
}

static void *serve(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-q-results");
	struct redis_conn *c = redis_queue_connect(2000);
	for (;;) {
		pthread_mutex_lock(&lock);
		while (!head && !stop)
			pthread_cond_wait(&ready, &lock);
		struct job *j = head;
		if (j) {
			head = j->next;
			tail = head ? tail : NULL;
			queued--;
		}
		pthread_mutex_unlock(&lock);
		if (!j)
			break;
		if (!c) {
			if (j->fn)
				j->fn(NULL, SOMA_ERR_UNAVAILABLE, j->arg);
		} else if (j->queues) {
			json_t *stats = redis_queue_stats(c, j->queues);
			j->fn(stats, stats ? SOMA_OK : SOMA_ERR_UNAVAILABLE, j->arg);
			json_decref(stats);
		} else if (j->claim)
			run_claim(c, j);
		else if (j->key[0])
			run_idempotency(c, j);
		else
			run_status(c, j);
		json_decref(j->queues);
		free(j);
	}
	redis_conn_close(c);
	return NULL;
}

enum soma_err queue_results_start(void)
{
	pthread_mutex_lock(&lock);
	stop = false;
	running = true;
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < RESULT_THREADS; i++)
		if (pthread_create(&tids[i], NULL, serve, NULL) != 0)
			return SOMA_ERR_INTERNAL;
	return SOMA_OK;
}

/* Answers what is queued (each done() runs), then stops. */
void queue_results_stop(void)
{
	pthread_mutex_lock(&lock);
	if (!running) {
		pthread_mutex_unlock(&lock);
		return;
	}
	stop = true;
	pthread_cond_broadcast(&ready);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < RESULT_THREADS; i++)
		pthread_join(tids[i], NULL);
	pthread_mutex_lock(&lock);
	running = false;
	pthread_mutex_unlock(&lock);
	log_debug("queue", "task API reads on redis stopped");
}
