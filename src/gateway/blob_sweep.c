/*
 * blob_sweep.c - removes the stored files of uploads that no attachment names any more.
 *
 * DESIGN: uploads are stored once per content at data.dir/blobs/<aa>/<sha256> (uploads.c), and
 * several attachments - of any session or tenant - may name one file. Deleting a session deletes
 * its attachment rows in the store; the files are removed here, later: every
 * uploads.sweep_interval_s the main thread's tick (gateway_upload_sweep_tick) queues one sweep on
 * the upload pool, which walks the blob directories and asks the store, 256 names at a time
 * (STORE_OP_BLOBS_UNUSED, one indexed statement), which files no attachment row names. Such a
 * file is removed once it was last written or reused (its mtime) uploads.orphan_grace_s ago:
 * an upload writes (or, for content already there, touches) its file before it commits its
 * attachment row, so a file whose row is still on its way is young and stays. The file's mtime
 * is read again right before it is removed, so only an upload that touched it within those
 * microseconds could lose it. Temp files left by a crash mid-write (.tmp-*) older than the grace
 * go too. A sweep that fails (store busy) leaves everything for the next. The retention sweeper
 * (src/orchestrator/retention.c) runs one at once on its own thread after deleting sessions
 * (gateway_blob_sweep_now); two sweeps at once only try to remove a file twice.
 */
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "gateway/uploads_int.h"

#define SWEEP_BATCH 256 /* file names asked of the store at once */

struct sweep {
	char root[4200]; /* data.dir/blobs */
	time_t cutoff;	 /* a file last written at or before this may go */
	json_t *batch;	 /* sha256 names waiting to be asked about */
	size_t removed;	 /* files removed */
	uint64_t bytes;	 /* their size */
	bool failed;	 /* the store did not answer: stop */
};

static bool all_hex(const char *s, size_t n)
{
	return strlen(s) == n && strspn(s, "0123456789abcdef") == n;
}

/* Removes path if it is still an old regular file. */
static void remove_if_old(struct sweep *sw, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_mtime > sw->cutoff)
		return;
	if (unlink(path) == 0) {
		sw->removed++;
		sw->bytes += (uint64_t)st.st_size;
	}
}

/* Asks the store which names of the batch no attachment names, and removes those files. */
static void flush_batch(struct sweep *sw)
{
	if (json_array_size(sw->batch) == 0 || sw->failed)
		return;
	struct store_op *op = store_op_new(STORE_OP_BLOBS_UNUSED, "");
	if (!op) {
		sw->failed = true;
		return;
	}
	op->rows = sw->batch;
	sw->batch = json_array();
	if (store_op_wait(gateway_store(), op) != SOMA_OK || !sw->batch) {
		sw->failed = true;
	} else {
		size_t i;
		json_t *sha;
		json_array_foreach(op->rows, i, sha)
		{
			const char *s = json_string_value(sha);
			char path[4400];
			if (s && all_hex(s, 64)) {
				snprintf(path, sizeof(path), "%s/%.2s/%s", sw->root, s, s);
				remove_if_old(sw, path);
			}
		}
	}
	store_op_free(op);
}

/* One blobs/<aa> directory. */
static void sweep_dir(struct sweep *sw, const char *name)
{
	char dir[4300];
	snprintf(dir, sizeof(dir), "%s/%s", sw->root, name);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while (!sw->failed && (e = readdir(d))) {
		char path[4600];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (strncmp(e->d_name, ".tmp-", 5) == 0) {
			remove_if_old(sw, path); /* a write cut by a crash */
			continue;
		}
		struct stat st;
		if (!all_hex(e->d_name, 64) || strncmp(e->d_name, name, 2) != 0 || stat(path, &st) != 0 ||
		    !S_ISREG(st.st_mode) || st.st_mtime > sw->cutoff)
			continue;
		json_array_append_new(sw->batch, json_string(e->d_name));
		if (json_array_size(sw->batch) >= SWEEP_BATCH)
			flush_batch(sw);
	}
	closedir(d);
}

void blob_sweep_run(void)
{
	struct sweep sw = {.cutoff = time(NULL) - (time_t)cfg_int(CFG_UPLOADS_ORPHAN_GRACE_S), .batch = json_array()};
	snprintf(sw.root, sizeof(sw.root), "%s/blobs", cfg_str(CFG_DATA_DIR));
	DIR *top = sw.batch ? opendir(sw.root) : NULL;
	if (top) {
		struct dirent *e;
		while (!sw.failed && (e = readdir(top))) {
			if (all_hex(e->d_name, 2))
				sweep_dir(&sw, e->d_name);
		}
		closedir(top);
		flush_batch(&sw);
	}
	json_decref(sw.batch);
	if (sw.failed)
		log_warn("uploads", "the sweep of unused upload files stopped: the store did not answer; it runs again "
				    "in uploads.sweep_interval_s");
	else if (sw.removed)
		log_info("uploads", "removed %zu upload file(s) no attachment names any more (%llu bytes)", sw.removed,
			 (unsigned long long)sw.bytes);
}

void gateway_blob_sweep_now(void)
{
	blob_sweep_run();
}
