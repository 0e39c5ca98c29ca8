/*
 * sqlite_wal_check.c - the SQLite driver's look at the WAL before the first open, and SQLite's
 * own log lines.
 *
 * DESIGN: the writer copies the WAL back into somaagent.db only past 4000 frames or after a
 * second of quiet (sqlite_exec.c), so after a crash the newest commits - a small install's whole
 * data - may live in somaagent.db-wal alone. SQLite reads a WAL whose 32-byte header is damaged
 * (magic, version or checksum) as an empty one: it started on the main file alone, the migrations
 * made a new empty database, its API keys were gone (so anonymous loopback access came back), and
 * the next checkpoint overwrote the WAL. store_sqlite_wal_check reads that header before SQLite
 * opens anything and refuses a non-empty WAL it would not read; the operator decides. Runs once,
 * on the thread that opens the store. store_sqlite_wal_commits walks the frames as SQLite's recovery
 * does: a WAL of frames none of which commits (a power cut during the very first, big, transaction
 * spills its pages but never commits them) holds nothing, and an empty database beside it starts
 * again; one with a valid commit frame beside a database without tables is refused (sqlite.c).
 * SQLite's log (notices such as "recovered N frames from WAL file", warnings, corruption) goes
 * to ours; its ordinary errors are the callers' to report, and
 * a full disk is sq_rollback's, once in a while (it fails every batch).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "store/store_int.h"

#define WAL_HEADER	 32
#define WAL_MAGIC_LE	 0x377f0682u /* checksums over little-endian words */
#define WAL_MAGIC_BE	 0x377f0683u /* over big-endian words */
#define WAL_VERSION	 3007000u
#define WAL_FRAME_HEADER 24

long long store_sqlite_wal_bytes(const char *path)
{
	char wal[4300];
	struct stat sb;
	snprintf(wal, sizeof(wal), "%s-wal", path);
	return stat(wal, &sb) == 0 ? (long long)sb.st_size : 0;
}

void store_sqlite_wal_refuse(const char *path, const char *reason, char *why, size_t why_cap)
{
	snprintf(why, why_cap,
		 "%s-wal (%lld bytes) may hold the data committed since the last checkpoint, but %s: starting "
		 "would begin on %s alone (data and API keys lost). Keep a copy of both files; then restore "
		 "data.dir from a backup, or, to go on with what %s holds, move %s-wal and %s-shm away and start "
		 "again",
		 path, store_sqlite_wal_bytes(path), reason, path, path, path, path);
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* SQLite's WAL checksum (walChecksumBytes): goes on from s[0], s[1] over n bytes (n % 8 == 0), in
 * the byte order the header's magic names */
static void wal_checksum(uint32_t magic, const unsigned char *p, size_t n, uint32_t s[2])
{
	for (size_t i = 0; i < n; i += 8) {
		uint32_t x0 = magic == WAL_MAGIC_BE ? be32(p + i) : le32(p + i);
		uint32_t x1 = magic == WAL_MAGIC_BE ? be32(p + i + 4) : le32(p + i + 4);
		s[0] += x0 + s[1];
		s[1] += x1 + s[0];
	}
}

/* the header's magic, version and checksum over its first 24 bytes */
static bool header_valid(const unsigned char *h)
{
	uint32_t magic = be32(h);
	if ((magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE) || be32(h + 4) != WAL_VERSION)
		return false;
	uint32_t s[2] = {0, 0};
	wal_checksum(magic, h, 24, s);
	return s[0] == be32(h + 24) && s[1] == be32(h + 28);
}

static bool read_all(int fd, unsigned char *buf, size_t n, off_t at)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = pread(fd, buf + got, n - got, at + (off_t)got);
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

bool store_sqlite_wal_commits(const char *path)
{
	char wal[4300];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	int fd = open(wal, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	unsigned char h[WAL_HEADER] = {0};
	uint32_t page = 0;
	bool commit = false;
	if (read_all(fd, h, sizeof(h), 0) && header_valid(h))
		page = be32(h + 8);
	unsigned char *frame = NULL;
	if (page >= 512 && page <= 65536 && (page & (page - 1)) == 0)
		frame = malloc(WAL_FRAME_HEADER + (size_t)page);
	/* SQLite's recovery (walIndexRecover): frames are read while each carries the header's salts
	 * and the checksum chain goes on (from the header's); the first that does not ends the log */
	uint32_t s[2] = {be32(h + 24), be32(h + 28)};
	for (off_t at = WAL_HEADER; frame && !commit; at += WAL_FRAME_HEADER + (off_t)page) {
		if (!read_all(fd, frame, WAL_FRAME_HEADER + (size_t)page, at))
			break;
		if (be32(frame) == 0 || memcmp(frame + 8, h + 16, 8) != 0)
			break;
		wal_checksum(be32(h), frame, 8, s);
		wal_checksum(be32(h), frame + WAL_FRAME_HEADER, page, s);
		if (s[0] != be32(frame + 16) || s[1] != be32(frame + 20))
			break;
		commit = be32(frame + 4) != 0; /* the database's size after a commit; 0 in the others */
	}
	free(frame);
	close(fd);
	return commit;
}

enum soma_err store_sqlite_wal_check(const char *path, char *why, size_t why_cap)
{
	char wal[4300];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	int fd = open(wal, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return SOMA_OK; /* no WAL: nothing SQLite could drop */
	unsigned char h[WAL_HEADER];
	ssize_t n = pread(fd, h, sizeof(h), 0);
	close(fd);
	if (n == 0)
		return SOMA_OK; /* an empty WAL (a checkpoint reset it, or a clean start) */
	if (n == (ssize_t)sizeof(h) && header_valid(h))
		return SOMA_OK;
	store_sqlite_wal_refuse(path, "its header is damaged, and SQLite would take it for an empty log", why, why_cap);
	return SOMA_ERR_CONFIG;
}

void store_sqlite_log(void *arg, int code, const char *msg)
{
	(void)arg;
	switch (code & 0xff) {
	case SQLITE_NOTICE:
		log_info("store", "SQLite: %s", msg);
		break;
	case SQLITE_WARNING:
		if (code != SQLITE_WARNING_AUTOINDEX) /* (a query plan's note, once per statement run) */
			log_warn("store", "SQLite: %s", msg);
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		log_warn("store", "SQLite (code %d): %s", code, msg);
		break;
	default:
		break;
	}
}
