/*
 * log.c - the main log. Each line is formatted into one buffer and written
 * with a single write(2) on an O_APPEND descriptor, so lines never
 * interleave even if several processes share the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static int log_fd = STDOUT_FILENO;
static char *log_path;

int
log_open(const char *path)
{
	int fd;

	free(log_path);
	log_path = NULL;
	if (path == NULL || strcmp(path, "-") == 0) {
		log_fd = STDOUT_FILENO;
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	log_fd = fd;
	log_path = strdup(path);
	return 0;
}

int
log_reopen(void)
{
	int fd;

	if (log_path == NULL)
		return 0;
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	if (log_fd != STDOUT_FILENO)
		close(log_fd);
	log_fd = fd;
	return 0;
}

void
log_close(void)
{
	if (log_fd != STDOUT_FILENO)
		close(log_fd);
	log_fd = STDOUT_FILENO;
	free(log_path);
	log_path = NULL;
}

void
log_info(const char *fmt, ...)
{
	char line[2048];
	size_t n;
	int r;
	va_list ap;

	util_fmt_logtime(line, sizeof(line), util_now_ms());
	n = strlen(line);
	line[n++] = ' ';
	va_start(ap, fmt);
	r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (r < 0)
		return;
	n += (size_t)r < sizeof(line) - n - 1 ? (size_t)r : sizeof(line) - n - 2;
	line[n++] = '\n';
	while (write(log_fd, line, n) == -1 && errno == EINTR)
		;
}
