/*
 * wal_vfs.c - a thin SQLite VFS that writes each commit's WAL frames with one system call.
 *
 * DESIGN: SQLite appends a commit to the WAL as two writes per page (a 24-byte frame header,
 * then the page), at consecutive offsets. On a virtual machine each system call costs
 * microseconds, and a busy writer spent about half its time in them. This shim wraps the
 * default VFS and gathers consecutive writes to a WAL file in a buffer, then issues them as one
 * write when:
 *   - the commit frame's page has been appended (a frame header whose "database size after
 *     commit" field is non-zero marks it), so the commit reaches the kernel inside the write
 *     call that SQLite checks, and an error (disk full) fails the COMMIT as it would without us;
 *   - the next write is not contiguous, or the buffer is full;
 *   - the WAL is read, synced, truncated, sized, controlled or closed through this handle;
 *   - the connection publishes frames (xShmBarrier on the main database file, called between
 *     the two copies of the wal-index header): a guard, the buffer is empty by then.
 * Nothing is visible to another connection, and no COMMIT returns, before its frames are in the
 * kernel, so a process that crashes loses no committed transaction, as without the shim.
 * Every other method forwards to the wrapped file. A main database handle finds its WAL handle
 * through sqlite3_database_file_object().
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* under 128 KiB: the unix VFS writes at most 0x1ffff bytes per call (larger writes fail) */
#define WAL_BUFFER_BYTES (120 * 1024)
#define WAL_FRAME_HEADER 24

struct shim_file {
	sqlite3_file base;     /* pMethods = &shim_methods */
	sqlite3_file *real;    /* the wrapped handle, in the same allocation, after this struct */
	struct shim_file *wal; /* main database file: its open WAL handle, if any */
	struct shim_file *db;  /* WAL file: the main database handle it belongs to */
	unsigned char *buf;    /* WAL file: bytes not yet written (owned) */
	size_t len;	       /* bytes in buf */
	sqlite3_int64 start;   /* file offset of buf[0] */
	int commit_page_next;  /* WAL file: the next write is the page of a commit frame */
};

static sqlite3_vfs shim_vfs;
static sqlite3_io_methods shim_methods;
static atomic_ulong wal_syncs; /* fsyncs of WAL files since start (store_vfs_wal_syncs) */

static sqlite3_file *real_of(sqlite3_file *f)
{
	return ((struct shim_file *)f)->real;
}

/* Writes what the buffer holds; the buffer is empty afterwards, whatever the outcome. */
static int flush(struct shim_file *f)
{
	if (f->len == 0)
		return SQLITE_OK;
	int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->start);
	f->len = 0;
	return rc;
}

static int shim_close(sqlite3_file *file)
{
	struct shim_file *f = (struct shim_file *)file;
	int rc = flush(f);
	if (f->db)
		f->db->wal = NULL;
	if (f->wal)
		f->wal->db = NULL;
	free(f->buf);
	f->buf = NULL;
	int rc2 = f->real->pMethods->xClose(f->real);
	return rc != SQLITE_OK ? rc : rc2;
}

static int shim_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off)
{
	int rc = flush((struct shim_file *)file);
	return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xRead(real_of(file), out, amt, off);
}

static int shim_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
	struct shim_file *f = (struct shim_file *)file;
	if (!f->buf)
		return f->real->pMethods->xWrite(f->real, data, amt, off);
	bool commit_page = f->commit_page_next;
	f->commit_page_next = amt == WAL_FRAME_HEADER && memcmp((const unsigned char *)data + 4, "\0\0\0\0", 4) != 0;
	bool contiguous = f->len > 0 && off == f->start + (sqlite3_int64)f->len;
	if ((!contiguous && f->len > 0) || f->len + (size_t)amt > WAL_BUFFER_BYTES) {
		int rc = flush(f);
		if (rc != SQLITE_OK)
			return rc;
	}
	if ((size_t)amt > WAL_BUFFER_BYTES)
		return f->real->pMethods->xWrite(f->real, data, amt, off);
	if (f->len == 0)
		f->start = off;
	memcpy(f->buf + f->len, data, (size_t)amt);
	f->len += (size_t)amt;
	return commit_page ? flush(f) : SQLITE_OK;
}

static int shim_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	int rc = flush((struct shim_file *)file);
	return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xTruncate(real_of(file), size);
}

static int shim_sync(sqlite3_file *file, int flags)
{
	if (((struct shim_file *)file)->db)
		atomic_fetch_add(&wal_syncs, 1);
	int rc = flush((struct shim_file *)file);
	return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xSync(real_of(file), flags);
}

static int shim_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	int rc = flush((struct shim_file *)file);
	return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xFileSize(real_of(file), size);
}

static int shim_lock(sqlite3_file *file, int level)
{
	return real_of(file)->pMethods->xLock(real_of(file), level);
}

static int shim_unlock(sqlite3_file *file, int level)
{
	return real_of(file)->pMethods->xUnlock(real_of(file), level);
}

static int shim_check_reserved(sqlite3_file *file, int *out)
{
	return real_of(file)->pMethods->xCheckReservedLock(real_of(file), out);
}

static int shim_file_control(sqlite3_file *file, int op, void *arg)
{
	int rc = flush((struct shim_file *)file);
	return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xFileControl(real_of(file), op, arg);
}

static int shim_sector_size(sqlite3_file *file)
{
	return real_of(file)->pMethods->xSectorSize(real_of(file));
}

static int shim_device_characteristics(sqlite3_file *file)
{
	return real_of(file)->pMethods->xDeviceCharacteristics(real_of(file));
}

static int shim_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out)
{
	return real_of(file)->pMethods->xShmMap(real_of(file), page, size, extend, out);
}

static int shim_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
	return real_of(file)->pMethods->xShmLock(real_of(file), offset, n, flags);
}

static void shim_shm_barrier(sqlite3_file *file)
{
	struct shim_file *f = (struct shim_file *)file;
	if (f->wal)
		(void)flush(f->wal); /* a guard: the commit frame already flushed the buffer */
	f->real->pMethods->xShmBarrier(f->real);
}

static int shim_shm_unmap(sqlite3_file *file, int delete_flag)
{
	return real_of(file)->pMethods->xShmUnmap(real_of(file), delete_flag);
}

static int shim_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **out)
{
	sqlite3_file *real = real_of(file);
	*out = NULL;
	return real->pMethods->iVersion >= 3 ? real->pMethods->xFetch(real, off, amt, out) : SQLITE_OK;
}

static int shim_unfetch(sqlite3_file *file, sqlite3_int64 off, void *page)
{
	sqlite3_file *real = real_of(file);
	return real->pMethods->iVersion >= 3 ? real->pMethods->xUnfetch(real, off, page) : SQLITE_OK;
}

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
	sqlite3_vfs *real_vfs = vfs->pAppData;
	struct shim_file *f = (struct shim_file *)file;
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
	/* SQLite closes a handle whose methods are set even when the open failed */
	f->base.pMethods = f->real->pMethods ? &shim_methods : NULL;
	if (rc != SQLITE_OK || !(flags & SQLITE_OPEN_WAL))
		return rc;
	sqlite3_file *db = sqlite3_database_file_object(name);
	f->buf = malloc(WAL_BUFFER_BYTES); /* without it, writes go straight through */
	if (f->buf && db && db->pMethods == &shim_methods) {
		f->db = (struct shim_file *)db;
		f->db->wal = f;
	}
	return SQLITE_OK;
}

static void register_once(void)
{
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);
	if (!real)
		return;
	shim_methods = (sqlite3_io_methods){
		.iVersion = 3,
		.xClose = shim_close,
		.xRead = shim_read,
		.xWrite = shim_write,
		.xTruncate = shim_truncate,
		.xSync = shim_sync,
		.xFileSize = shim_file_size,
		.xLock = shim_lock,
		.xUnlock = shim_unlock,
		.xCheckReservedLock = shim_check_reserved,
		.xFileControl = shim_file_control,
		.xSectorSize = shim_sector_size,
		.xDeviceCharacteristics = shim_device_characteristics,
		.xShmMap = shim_shm_map,
		.xShmLock = shim_shm_lock,
		.xShmBarrier = shim_shm_barrier,
		.xShmUnmap = shim_shm_unmap,
		.xFetch = shim_fetch,
		.xUnfetch = shim_unfetch,
	};
	shim_vfs = *real; /* every VFS-level method (delete, access, randomness, time) is the default's */
	shim_vfs.zName = STORE_VFS_NAME;
	shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real->szOsFile;
	shim_vfs.pAppData = real;
	shim_vfs.xOpen = shim_open;
	shim_vfs.pNext = NULL;
	(void)sqlite3_vfs_register(&shim_vfs, 0);
}

const char *store_vfs(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, register_once);
	return sqlite3_vfs_find(STORE_VFS_NAME) ? STORE_VFS_NAME : NULL;
}

unsigned long store_vfs_wal_syncs(void)
{
	return atomic_load(&wal_syncs);
}
