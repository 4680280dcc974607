/*
 * postdrop.c - petrel-postdrop, the setgid helper through which a user who
 * may not write the spool (www-data, a cron job's user) submits mail.
 *
 * Installed mode 2755, group petrel (the daemon user's group). The spool
 * directory is 0710 petrel:petrel and <spool>/maildrop/ is 1730
 * petrel:petrel, so only this program's effective group can reach the
 * maildrop, may create files there but may not list or read it, and
 * (sticky bit) may not remove or rename another user's file.
 *
 * What it does, in order:
 *
 *   1 drop the group privilege at once (setegid(getgid())): everything
 *     below runs with the caller's own ids, except the three raise/lower
 *     brackets around open(2), renameat2(2) and unlink(2) of our own file
 *   2 take no configuration from the caller: arguments are refused, the
 *     environment is cleared, the file is /etc/petrel/petrel.conf when it
 *     exists, else the embedded defaults (spool_dir, max_message_size of
 *     the first listener)
 *   3 read standard input: at most max_message_size + 64 KiB (the
 *     envelope), refused beyond; the last line must be a spool trailer
 *     whose arithmetic matches (a cheap sanity check, not validation:
 *     the daemon's pickup parses and validates everything)
 *   4 maildrop/<random>.tmp, O_CREAT|O_EXCL|O_NOFOLLOW, mode 0640, written,
 *     fsync'ed, renamed to maildrop/<random> without replacing, then
 *     syncfs(2) for the rename (the directory cannot be opened to be
 *     fsync'ed: it is not readable by this group)
 *
 * The file belongs to the caller (setgid only: owner = real = effective
 * uid), which is how the daemon knows who submitted it.
 *
 * Exit status: 0 the file is in the maildrop; EX_USAGE 64 arguments given;
 * EX_TEMPFAIL 75 any other failure, with nothing left behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "spool_format.h"
#include "util.h"

#ifdef __SANITIZE_ADDRESS__
/*
 * make test-asan: LeakSanitizer cannot run in a setgid process (it is not
 * dumpable, so LSan's ptrace-like scan fails and aborts the program), and
 * petrel sendmail clears the environment before it runs this helper, so
 * ASAN_OPTIONS cannot say so. ASan and UBSan stay on.
 */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
	return "detect_leaks=0";
}
#endif

#ifndef POSTDROP_CONFIG
#define POSTDROP_CONFIG "/etc/petrel/petrel.conf"
#endif

#define POSTDROP_ENV_ROOM (64 * 1024)

static gid_t priv_gid, real_gid;

static void pd_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
pd_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "petrel-postdrop: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Group privilege only around the maildrop calls. */
static int
priv_raise(void)
{
	return setegid(priv_gid);
}

static void
priv_lower(void)
{
	if (setegid(real_gid) == -1)
		_exit(EX_TEMPFAIL); /* cannot happen: the real gid is ours */
}

/*
 * The configuration file. A test build (-DPOSTDROP_CONFIG_NEXT_TO_EXE)
 * reads petrel.conf in the directory of its own executable instead, as
 * the kernel names it (/proc/self/exe), so that a test can point a setgid
 * copy at its own spool; it is never installed.
 */
static const char *
config_path(char *buf, size_t len)
{
#ifdef POSTDROP_CONFIG_NEXT_TO_EXE
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash;

	if (n <= 0 || (size_t)n >= len - 16)
		return NULL;
	buf[n] = '\0';
	if ((slash = strrchr(buf, '/')) == NULL)
		return NULL;
	snprintf(slash + 1, len - (size_t)(slash + 1 - buf), "petrel.conf");
	return buf;
#else
	(void)buf;
	(void)len;
	return POSTDROP_CONFIG;
#endif
}

/* Read all of fd 0, at most max bytes. Returns the length, or -1. */
static ssize_t
read_input(char *p, size_t max)
{
	size_t got = 0;

	for (;;) {
		ssize_t n = read(STDIN_FILENO, p + got, max + 1 - got);

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			return (ssize_t)got;
		got += (size_t)n;
		if (got > max) {
			errno = EFBIG;
			return -1;
		}
	}
}

/* The last line of the input is a trailer that matches its length. */
static int
sane(const char *p, size_t len)
{
	size_t tlen = len < SPOOL_TRAILER_MAX ? len : SPOOL_TRAILER_MAX;
	uint64_t csize, esize;

	return spool_trailer_parse(p + len - tlen, tlen, len, &csize,
	    &esize) == 0 ? 0 : -1;
}

/* Make sure fds 0-2 are open, so no file we open becomes one of them. */
static void
std_fds(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) == -1 &&
		    open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
			_exit(EX_TEMPFAIL);
}

int
main(int argc, char **argv)
{
	struct config *cfg = NULL;
	char cpath[PATH_MAX], tmp[PATH_MAX], dst[PATH_MAX], name[33];
	char err[1024], *in = NULL;
	unsigned char rnd[16];
	const char *cp;
	size_t max;
	ssize_t len;
	int fd = -1, created = 0;

	priv_gid = getegid();
	real_gid = getgid();
	if (setegid(real_gid) == -1)
		return EX_TEMPFAIL;
	std_fds();
	/* An interrupt must not leave a file behind: nothing kills us
	 * between open and rename (SIGKILL aside: pickup removes a ".tmp"
	 * older than an hour). */
	{
		sigset_t block;

		sigemptyset(&block);
		sigaddset(&block, SIGINT);
		sigaddset(&block, SIGTERM);
		sigaddset(&block, SIGHUP);
		sigaddset(&block, SIGQUIT);
		sigaddset(&block, SIGPIPE);
		sigaddset(&block, SIGTSTP);
		sigprocmask(SIG_BLOCK, &block, NULL);
	}
	clearenv();
	umask(027);
	(void)argv;
	if (argc > 1) {
		pd_err("takes no arguments (the message comes on standard "
		    "input, the configuration is %s)", POSTDROP_CONFIG);
		return EX_USAGE;
	}
	cp = config_path(cpath, sizeof(cpath));
	if (cp != NULL && access(cp, F_OK) == -1 && errno == ENOENT)
		cp = NULL;
	if (config_load(cp, &cfg, err, sizeof(err)) == -1) {
		pd_err("%s", err);
		return EX_TEMPFAIL;
	}
	max = (size_t)cfg->listen[0].max_message_size + POSTDROP_ENV_ROOM;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/maildrop/", cfg->spool_dir)
	    >= sizeof(tmp) - 40 || (in = malloc(max + 1)) == NULL) {
		pd_err("spool path too long or out of memory");
		goto fail;
	}
	if ((len = read_input(in, max)) == -1) {
		pd_err("reading the message: %s", errno == EFBIG ?
		    "too big" : strerror(errno));
		goto fail;
	}
	if (len == 0 || sane(in, (size_t)len) == -1) {
		pd_err("the input is not a spool file");
		goto fail;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		pd_err("getrandom: %s", strerror(errno));
		goto fail;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(name + 2 * i, 3, "%02x", rnd[i]);
	if ((size_t)snprintf(dst, sizeof(dst), "%s/maildrop/%s", cfg->spool_dir,
	    name) >= sizeof(dst) || (size_t)snprintf(tmp, sizeof(tmp),
	    "%s/maildrop/%s.tmp", cfg->spool_dir, name) >= sizeof(tmp))
		goto fail; /* cannot happen: checked above */

	if (priv_raise() == -1) {
		pd_err("setegid: %s", strerror(errno));
		goto fail;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0640);
	priv_lower();
	if (fd == -1) {
		pd_err("%s: %s", tmp, strerror(errno));
		goto fail;
	}
	created = 1;
	if (util_write_all(fd, in, (size_t)len) == -1 || fsync(fd) == -1) {
		pd_err("writing %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (priv_raise() == -1)
		goto fail;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE) == -1) {
		int e = errno;

		priv_lower();
		pd_err("%s: %s", dst, strerror(e));
		goto fail;
	}
	priv_lower();
	created = 2;
	if (syncfs(fd) == -1) {
		pd_err("syncfs %s: %s", dst, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		pd_err("closing %s: %s", dst, strerror(errno));
		goto fail;
	}
	free(in);
	config_free(cfg);
	return 0;
fail:
	if (fd != -1)
		close(fd);
	if (created && priv_raise() == 0) {
		unlink(created == 2 ? dst : tmp);
		priv_lower();
	}
	free(in);
	config_free(cfg);
	return EX_TEMPFAIL;
}
