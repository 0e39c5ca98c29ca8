/*
 * data_lock.c - one `somaagent run` per data.dir on the embedded store.
 *
 * DESIGN: SQLite's data.dir belongs to one process (its start requeues the tasks the previous run
 * left reserved, and its context cache assumes every event is its own). A second run on the same
 * directory - an accidental second `make run` - requeued the first one's running tasks before it
 * failed on the port, and on a free port both ran them. The run takes an exclusive flock on
 * data.dir/somaagent.lock (with its pid in it, for the message) before anything touches the
 * database; the kernel drops it when the process exits, however it exits. CLI commands (keys,
 * migrate) do not take it: they are short and the store serialises their writes.
 * A lock file removed under the running server (rm -rf data.dir) locks nothing any more: a
 * second run started beside it. data_dir_lock_lost tells, for the store's health (services.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "orchestrator/app.h"

static int lock_fd = -1;

enum soma_err data_dir_lock(const char *dir, char *why, size_t cap)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/somaagent.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(why, cap, "cannot open %s: %s", path, strerror(errno));
		return SOMA_ERR_IO;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK) { /* a filesystem without locks: run as before, said once */
			log_warn("store", "cannot lock %s (%s): nothing stops a second somaagent run on this data.dir",
				 path, strerror(errno));
			close(fd);
			return SOMA_OK;
		}
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		snprintf(why, cap,
			 "data.dir %s is in use by another somaagent (pid %s): stop it first, or give this one a "
			 "data.dir of its own",
			 dir, pid[0] ? pid : "unknown");
		close(fd);
		return SOMA_ERR_CONFLICT;
	}
	char pid[32];
	int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
		/* the lock holds all the same; only the message of a second run loses the pid */
	}
	lock_fd = fd;
	return SOMA_OK;
}

bool data_dir_lock_lost(void)
{
	struct stat held;
	return lock_fd >= 0 && fstat(lock_fd, &held) == 0 && held.st_nlink == 0;
}

void data_dir_unlock(void)
{
	if (lock_fd >= 0)
		close(lock_fd); /* (the file stays: removing it would race a run taking it) */
	lock_fd = -1;
}
