/*
 * health_cmd.c - `somaagent health [--url URL]`: a probe for container health checks (the image's
 * HEALTHCHECK, a systemd or cron watchdog), so the image needs no curl.
 *
 * DESIGN: one blocking GET over a plain TCP socket with Connection: close, everything (connect,
 * send, read) within PROBE_TIMEOUT_MS, the answer read to its end (at most PROBE_MAX_ANSWER bytes).
 * libcurl is not used: it is dlopen'ed at the first provider call, and a probe must not depend on
 * it. Only http:// is taken (a probe runs beside the server, inside its container or host). With
 * no --url the target is the configured http.listen, a wildcard host (0.0.0.0, ::) probed on its
 * loopback address, path /v1/health; a --url without a path gets /v1/health too.
 * Exit 0: HTTP 200 and the body's "status" is "ok" or "degraded" (a non-critical service is
 * unwell: the process still serves, as /v1/health's 200 says); 1: anything else (503 "down", no
 * answer, an answer that is not the health JSON); 2: a usage or configuration error.
 * Main thread only; allocates nothing that outlives the call.
 */
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/config.h"

#define PROBE_TIMEOUT_MS 5000
#define PROBE_MAX_ANSWER (256 * 1024)

struct probe_url {
	char host[256]; /* name or address, without IPv6 brackets */
	char port[8];	/* decimal */
	char path[512]; /* request target, starting with / */
};

/* Splits http://host[:port][/path] (IPv6 as [addr]); false when url is not of that form. */
static bool parse_url(const char *url, struct probe_url *u)
{
	static const char scheme[] = "http://";
	if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
		return false;
	const char *h = url + sizeof(scheme) - 1, *end;
	if (*h == '[') {
		end = strchr(h, ']');
		if (!end)
			return false;
		h++;
	} else {
		end = h + strcspn(h, ":/");
	}
	size_t hlen = (size_t)(end - h);
	if (hlen == 0 || hlen >= sizeof(u->host))
		return false;
	memcpy(u->host, h, hlen);
	u->host[hlen] = '\0';
	const char *p = *end == ']' ? end + 1 : end;
	snprintf(u->port, sizeof(u->port), "80");
	if (*p == ':') {
		size_t plen = strspn(p + 1, "0123456789");
		if (plen == 0 || plen > 5)
			return false;
		long port = strtol(p + 1, NULL, 10); /* getaddrinfo would wrap 99999 into range */
		if (port < 1 || port > 65535)
			return false;
		snprintf(u->port, sizeof(u->port), "%.*s", (int)plen, p + 1);
		p += 1 + plen;
	}
	if (*p && *p != '/')
		return false;
	int n = snprintf(u->path, sizeof(u->path), "%s", *p ? p : "/v1/health");
	return n > 0 && (size_t)n < sizeof(u->path) && !strpbrk(u->path, " \r\n");
}

/* The configured http.listen as a probe target (a wildcard host becomes its loopback). */
static bool url_from_listen(struct probe_url *u)
{
	int port;
	if (!cfg_parse_listen(cfg_str(CFG_HTTP_LISTEN), u->host, sizeof(u->host), &port))
		return false;
	if (strcmp(u->host, "0.0.0.0") == 0 || u->host[0] == '\0')
		snprintf(u->host, sizeof(u->host), "127.0.0.1");
	else if (strcmp(u->host, "::") == 0)
		snprintf(u->host, sizeof(u->host), "::1");
	snprintf(u->port, sizeof(u->port), "%d", port);
	snprintf(u->path, sizeof(u->path), "/v1/health");
	return true;
}

static int ms_left(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long ms = (deadline->tv_sec - now.tv_sec) * 1000L + (deadline->tv_nsec - now.tv_nsec) / 1000000L;
	return ms > 0 ? (int)ms : 0;
}

/* Waits for events on fd within the deadline; false (errno ETIMEDOUT) when time ran out. */
static bool wait_fd(int fd, short events, const struct timespec *deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	int rc;
	do
		rc = poll(&pfd, 1, ms_left(deadline));
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		errno = ETIMEDOUT;
	return rc > 0;
}

/* Connects to one of u's addresses without blocking past the deadline; -1 with why. */
static int connect_to(const struct probe_url *u, const struct timespec *deadline, char *why, size_t cap)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
	int rc = getaddrinfo(u->host, u->port, &hints, &res);
	if (rc != 0) {
		snprintf(why, cap, "cannot resolve the host (%s)", gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	snprintf(why, cap, "no address");
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		int err = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
		if (err == EINPROGRESS) {
			socklen_t len = sizeof(err);
			if (!wait_fd(fd, POLLOUT, deadline))
				err = errno;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
				err = errno;
		}
		if (err != 0) {
			snprintf(why, cap, "cannot connect (%s)", strerror(err));
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

/* Sends the GET and reads the whole answer into buf (NUL-terminated); false with why. */
static bool exchange(int fd, const struct probe_url *u, char *buf, size_t cap, size_t *got,
		     const struct timespec *deadline, char *why, size_t why_cap)
{
	char req[1024];
	bool v6 = strchr(u->host, ':') != NULL;
	int n = snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: somaagent-health\r\n"
			 "Connection: close\r\n\r\n",
			 u->path, v6 ? "[" : "", u->host, v6 ? "]" : "", u->port);
	for (size_t off = 0; off < (size_t)n;) {
		ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == EINTR) && wait_fd(fd, POLLOUT, deadline))
			continue;
		if (w < 0) {
			snprintf(why, why_cap, "cannot send the request (%s)", strerror(errno));
			return false;
		}
		off += (size_t)w;
	}
	*got = 0;
	for (;;) {
		ssize_t r = recv(fd, buf + *got, cap - 1 - *got, 0);
		if (r < 0 && (errno == EAGAIN || errno == EINTR) && wait_fd(fd, POLLIN, deadline))
			continue;
		if (r < 0) {
			snprintf(why, why_cap, "no answer (%s)", strerror(errno));
			return false;
		}
		if (r == 0)
			break;
		*got += (size_t)r;
		if (*got == cap - 1) {
			snprintf(why, why_cap, "answer longer than %d bytes", PROBE_MAX_ANSWER);
			return false;
		}
	}
	buf[*got] = '\0';
	return true;
}

/* Reads "HTTP/1.x NNN" and the body's "status"; the exit code with a one-line verdict. */
static int judge(const char *ans, size_t len, char *verdict, size_t cap)
{
	int status = 0;
	const char *body = strstr(ans, "\r\n\r\n");
	if (sscanf(ans, "HTTP/1.%*1[01] %3d", &status) != 1 || !body) {
		snprintf(verdict, cap, "not an HTTP answer");
		return EXIT_RUNTIME;
	}
	body += 4;
	json_t *root = json_loadb(body, len - (size_t)(body - ans), 0, NULL);
	const char *st = json_string_value(json_object_get(root, "status"));
	int rc = EXIT_RUNTIME;
	if (!st)
		snprintf(verdict, cap, "HTTP %d without the health JSON's status", status);
	else if (status == 200 && (strcmp(st, "ok") == 0 || strcmp(st, "degraded") == 0))
		rc = EXIT_OK;
	if (st)
		snprintf(verdict, cap, "HTTP %d, status %.40s", status, st);
	json_decref(root);
	return rc;
}

int cmd_health(const struct cli *cli)
{
	struct probe_url u;
	if (cli->url) {
		if (!parse_url(cli->url, &u)) {
			fprintf(stderr, "somaagent: --url %s: expected http://host[:port][/path]\n", cli->url);
			return EXIT_USAGE;
		}
	} else if (!cli_load_config(cli) || !url_from_listen(&u)) {
		return EXIT_USAGE;
	}
	char shown[900], why[256];
	bool v6 = strchr(u.host, ':') != NULL;
	snprintf(shown, sizeof(shown), "http://%s%s%s:%s%s", v6 ? "[" : "", u.host, v6 ? "]" : "", u.port, u.path);
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += PROBE_TIMEOUT_MS / 1000;
	int fd = connect_to(&u, &deadline, why, sizeof(why));
	if (fd < 0) {
		fprintf(stderr, "somaagent: health %s: %s\n", shown, why);
		return EXIT_RUNTIME;
	}
	static char ans[PROBE_MAX_ANSWER];
	size_t got = 0;
	bool ok = exchange(fd, &u, ans, sizeof(ans), &got, &deadline, why, sizeof(why));
	close(fd);
	if (!ok) {
		fprintf(stderr, "somaagent: health %s: %s\n", shown, why);
		return EXIT_RUNTIME;
	}
	int rc = judge(ans, got, why, sizeof(why));
	fprintf(rc == EXIT_OK ? stdout : stderr, "%s%s: %s\n", rc == EXIT_OK ? "" : "somaagent: health ", shown, why);
	return rc;
}
