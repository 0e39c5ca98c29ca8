/*
 * metrics_process.c - the standard process_* metrics, read from /proc/self at scrape time.
 * Names and meanings follow the Prometheus client libraries so existing dashboards work.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/metrics.h"

static double start_time_s;

static double boot_time_s(void)
{
	FILE *f = fopen("/proc/stat", "r");
	char line[256];
	double btime = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "btime %lf", &btime) == 1)
			break;
	}
	if (f)
		fclose(f);
	return btime;
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory handle itself */
}

static void collect(struct metrics_buf *out, void *arg)
{
	(void)arg;
	double ticks = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
	unsigned long utime = 0, stime = 0, vsize = 0;
	long rss = 0;
	FILE *f = fopen("/proc/self/stat", "r");
	if (f) {
		/* fields 14,15 utime stime; 23 vsize; 24 rss (after the parenthesised comm) */
		char buf[1024];
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		char *p = strrchr(buf, ')');
		if (p)
			sscanf(p + 2,
			       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %lu "
			       "%ld",
			       &utime, &stime, &vsize, &rss);
		fclose(f);
	}
	struct rlimit rl = {0};
	getrlimit(RLIMIT_NOFILE, &rl);
	metrics_buf_printf(out,
			   "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
			   "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
			   "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
			   "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %.0f\n"
			   "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
			   "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %lu\n"
			   "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
			   "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n"
			   "# HELP process_open_fds Number of open file descriptors.\n"
			   "# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
			   "# HELP process_max_fds Maximum number of open file descriptors.\n"
			   "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
			   (double)(utime + stime) / ticks, (double)rss * page, vsize, start_time_s, open_fds(),
			   (unsigned long long)rl.rlim_cur);
}

void metrics_process_register(void)
{
	unsigned long long starttime = 0;
	FILE *f = fopen("/proc/self/stat", "r");
	if (f) {
		char buf[1024];
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		char *p = strrchr(buf, ')');
		if (p)
			sscanf(p + 2,
			       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
			       &starttime);
		fclose(f);
	}
	start_time_s = boot_time_s() + (double)starttime / (double)sysconf(_SC_CLK_TCK);
	metrics_collector_add(collect, NULL);
}
