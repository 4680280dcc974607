/*
 * pickup.c - takes the files petrel-postdrop leaves in <spool>/maildrop/
 * into the queue (pickup.h has the directory layout and modes).
 *
 * One maildrop file, from discovery to removal:
 *
 *   maildrop/N            found by the scan (every second; names ending in
 *        |                ".tmp" are postdrop's files being written)
 *        | pickup_one     open O_NOFOLLOW, fstat (regular, bounded size,
 *        |                owner = the submitting user), trailer, envelope
 *        |                (spool_format.c), sender and recipients through
 *        |                smtp_parse_path, content streamed into a new
 *        |                spool message (CRLF lines, no NUL, else refused)
 *        v
 *   maildrop/N,ID         claimed (rename) for queue id ID, then
 *        |                spool_msg_commit_cb: the worker writes queue/ID
 *        | pickup_done
 *        v
 *   (removed)             queue/ID is durable: unlink, log "<=", and
 *                         queue_inject. A failed commit renames the file
 *                         back to N: it is tried again at the next scan.
 *
 * A file that fails a check goes to corrupt/N with a log line naming the
 * reason; nothing is ever removed without being queued or moved aside.
 *
 * Crash safety: a claimed "N,ID" found at start (pickup_open, before the
 * event loop runs, so before anything can be delivered) is removed when
 * queue/ID exists (the commit was durable, its completion was not heard)
 * and renamed back to N otherwise. So a message is queued once, except
 * after a power loss between the commit and the claim reaching the disk
 * (the claim rename is not fsync'ed: the loop never calls fsync), where it
 * may be queued twice; never lost.
 *
 * Trust: the owner of the file is the submitting user (postdrop is setgid
 * only). The envelope sender is accepted as given (as Postfix does) and
 * the log line records U=<that user>; the file's own id, time, helo,
 * client, proto and tls are ignored.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "pickup.h"
#include "queue.h"
#include "smtp_parse.h"
#include "spool.h"
#include "spool_format.h"
#include "util.h"

#define PICKUP_ENV_ROOM (64 * 1024)  /* as postdrop: envelope beyond content */
#define PICKUP_PER_SCAN 64           /* files started per scan */
#define PICKUP_INFLIGHT_MAX 256      /* commits in progress at once */
#define PICKUP_STALE_TMP 3600        /* s: a postdrop ".tmp" left by a crash */
#define PICKUP_CHUNK (64 * 1024)
#define PICKUP_NAME_MAX 200

struct inflight {
	uint64_t token;
	char name[PICKUP_NAME_MAX + 1];              /* N */
	char claimed[PICKUP_NAME_MAX + QUEUE_ID_LEN + 2]; /* N,ID */
	char *logline;                               /* "<=" line, owned */
	struct inflight *next;
};

struct pickup {
	struct event_base *base;
	const struct config *cfg;
	struct queue *q;
	struct spool *sp;
	struct event *ev;
	char dir[PATH_MAX - 512];   /* <spool>/maildrop (room for a name) */
	char corrupt[PATH_MAX - 512]; /* <spool>/corrupt */
	struct inflight *inflight;
	unsigned ninflight;
	uint64_t next_token;
};

/* ---- before privileges are dropped --------------------------------------- */

/* The daemon's uid and the maildrop group. */
static int
pickup_ids(const struct config *cfg, uid_t *uid, gid_t *gid, char *err,
           size_t errlen)
{
	struct passwd *pw;
	struct group *gr;

	if (cfg->user != NULL) {
		if ((pw = getpwnam(cfg->user)) == NULL) {
			util_errf(err, errlen, "user %s does not exist",
			    cfg->user);
			return -1;
		}
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		return 0;
	}
	*uid = geteuid();
	*gid = (gr = getgrnam("petrel")) != NULL ? gr->gr_gid : getegid();
	return 0;
}

/* mkdir (if missing) path as a real directory, then owner and mode. */
static int
make_dir(const char *path, uid_t uid, gid_t gid, mode_t mode, int root,
         char *err, size_t errlen)
{
	struct stat st;

	if (mkdir(path, 0700) == -1 && errno != EEXIST)
		goto fail;
	if (lstat(path, &st) == -1)
		goto fail;
	if (!S_ISDIR(st.st_mode)) {
		util_errf(err, errlen, "%s is not a directory", path);
		return -1;
	}
	if (root && (st.st_uid != uid || st.st_gid != gid) &&
	    chown(path, uid, gid) == -1)
		goto fail;
	if ((st.st_mode & 07777) != mode && chmod(path, mode) == -1)
		goto fail;
	return 0;
fail:
	util_errf(err, errlen, "%s: %s", path, strerror(errno));
	return -1;
}

int
pickup_prepare(const struct config *cfg, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	uid_t uid;
	gid_t gid;
	int root = geteuid() == 0;

	if (pickup_ids(cfg, &uid, &gid, err, errlen) == -1)
		return -1;
	if (!root) {
		uid = geteuid();
		gid = getegid();
	}
	if (util_mkdirs(cfg->spool_dir, 0700) == -1 ||
	    stat(cfg->spool_dir, &st) == -1) {
		util_errf(err, errlen, "%s: %s", cfg->spool_dir,
		    strerror(errno));
		return -1;
	}
	/* The group may traverse the spool directory, nothing more. */
	if (root && (st.st_uid != uid || st.st_gid != gid) &&
	    chown(cfg->spool_dir, uid, gid) == -1) {
		util_errf(err, errlen, "%s: %s", cfg->spool_dir,
		    strerror(errno));
		return -1;
	}
	if ((st.st_mode & 0777) != 0710 && chmod(cfg->spool_dir, 0710) == -1) {
		util_errf(err, errlen, "%s: %s", cfg->spool_dir,
		    strerror(errno));
		return -1;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/maildrop",
	    cfg->spool_dir) >= sizeof(path)) {
		util_errf(err, errlen, "spool path too long");
		return -1;
	}
	if (make_dir(path, uid, gid, 01730, root, err, errlen) == -1)
		return -1;
	snprintf(path, sizeof(path), "%s/corrupt", cfg->spool_dir);
	return make_dir(path, uid, gid, 0700, root, err, errlen);
}

/* ---- one file ------------------------------------------------------------ */

/* dir/name into out; -1 if it does not fit (then out is ""). */
static int
join(char *out, size_t len, const char *dir, const char *name)
{
	if ((size_t)snprintf(out, len, "%s/%s", dir, name) < len)
		return 0;
	out[0] = '\0';
	return -1;
}

/* Printable login name of a uid ("uid1234" without a passwd entry). */
static void
user_name(uid_t uid, char *out, size_t len)
{
	struct passwd *pw = getpwuid(uid);

	if (pw == NULL || pw->pw_name[0] == '\0')
		snprintf(out, len, "uid%lu", (unsigned long)uid);
	else
		util_escape(out, len, pw->pw_name, strlen(pw->pw_name));
}

static int
read_at(int fd, char *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t r = pread(fd, p, n, off);

		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

/* Move maildrop/name to corrupt/ (never replacing) and say why. */
static void
pickup_reject(struct pickup *pk, const char *name, const char *why)
{
	char src[PATH_MAX], dst[PATH_MAX], user[64], shown[PICKUP_NAME_MAX];
	struct stat st;
	int r;

	if (join(src, sizeof(src), pk->dir, name) == -1 ||
	    join(dst, sizeof(dst), pk->corrupt, name) == -1)
		return;
	if (lstat(src, &st) == 0)
		user_name(st.st_uid, user, sizeof(user));
	else
		snprintf(user, sizeof(user), "?");
	util_escape(shown, sizeof(shown), name, strlen(name));
	r = renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE);
	if (r == -1 && errno == EEXIST) {
		char alt[PICKUP_NAME_MAX + 32];

		snprintf(alt, sizeof(alt), "%.*s.%llu", PICKUP_NAME_MAX, name,
		    (unsigned long long)util_now_ms());
		if (join(dst, sizeof(dst), pk->corrupt, alt) == -1)
			return;
		r = renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE);
	}
	if (r == -1) {
		log_info("pickup: maildrop/%s (U=%s): %s; cannot move it to "
		    "corrupt/: %s", shown, user, why, strerror(errno));
		return;
	}
	log_info("pickup: maildrop/%s (U=%s): %s; moved to %s", shown, user,
	    why, dst);
}

/* "<addr>" through the SMTP path parser. Returns 0 or -1. */
static int
check_path(const char *a, int flags, int *utf8)
{
	char w[SMTP_PATH_MAX + 4];
	struct smtp_path p;
	const char *rest;
	size_t restlen;
	int n = snprintf(w, sizeof(w), "<%s>", a);

	if (n < 0 || (size_t)n >= sizeof(w))
		return -1;
	if (smtp_parse_path(w, (size_t)n, flags, &p, &rest, &restlen) !=
	    SMTP_PATH_OK || restlen != 0 || strcmp(p.addr, a) != 0)
		return -1;
	*utf8 |= p.utf8;
	return 0;
}

/*
 * Content checks while copying: CRLF line ends only, no NUL. *prev is the
 * byte before p (0 at the start). Sets *has8 for a byte >= 0x80.
 */
static const char *
check_chunk(const char *p, size_t n, char *prev, int *has8)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (c == '\0')
			return "NUL in the content";
		if (c == '\n' && *prev != '\r')
			return "bare LF in the content";
		if (*prev == '\r' && c != '\n')
			return "bare CR in the content";
		if ((unsigned char)c >= 0x80)
			*has8 = 1;
		*prev = c;
	}
	return NULL;
}

static void pickup_done(uint64_t token, const char *id, int err, void *arg);

/*
 * Take maildrop/name into the spool. Returns 0 (committed, rejected, or
 * gone meanwhile), or -1 for a passing failure (retried at the next scan).
 */
static int
pickup_one(struct pickup *pk, const char *name)
{
	const struct listen_conf *lc = &pk->cfg->listen[0];
	uint64_t limit = lc->max_message_size + PICKUP_ENV_ROOM;
	unsigned maxr = lc->max_recipients;
	char path[PATH_MAX], claimed[PATH_MAX], tail[SPOOL_TRAILER_MAX];
	char envparse_err[256], why[400], user[64], qid[QUEUE_ID_LEN + 1];
	char *envbuf = NULL, *chunk = NULL, prev = 0;
	const char *bad = NULL;
	struct spool_env env;
	struct spool_msg *m = NULL;
	struct inflight *in = NULL;
	uint64_t csize, esize, off;
	struct stat st;
	size_t tlen;
	int fd, utf8 = 0, has8 = 0, rc = -1;

	memset(&env, 0, sizeof(env));
	if (join(path, sizeof(path), pk->dir, name) == -1)
		return -1;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		if (errno == ELOOP) {
			pickup_reject(pk, name, "a symbolic link");
			return 0;
		}
		log_info("pickup: maildrop/%s: %s", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		log_info("pickup: maildrop/%s: %s", name, strerror(errno));
		goto out;
	}
	user_name(st.st_uid, user, sizeof(user));
	if (!S_ISREG(st.st_mode)) {
		bad = "not a regular file";
		goto reject;
	}
	if (st.st_nlink != 1) {
		bad = "has other links";
		goto reject;
	}
	if ((uint64_t)st.st_size > limit) {
		snprintf(why, sizeof(why), "too big (%llu octets, at most %llu)",
		    (unsigned long long)st.st_size, (unsigned long long)limit);
		bad = why;
		goto reject;
	}
	tlen = (size_t)st.st_size < sizeof(tail) ? (size_t)st.st_size :
	    sizeof(tail);
	if (read_at(fd, tail, tlen, st.st_size - (off_t)tlen) == -1 ||
	    spool_trailer_parse(tail, tlen, (uint64_t)st.st_size, &csize,
	    &esize) == -1) {
		bad = "no valid spool trailer";
		goto reject;
	}
	if ((envbuf = malloc(esize + 1)) == NULL)
		goto out;
	if (read_at(fd, envbuf, esize, (off_t)csize) == -1) {
		bad = "cannot read the envelope";
		goto reject;
	}
	if (spool_env_parse(envbuf, esize, &env, envparse_err,
	    sizeof(envparse_err)) == -1) {
		snprintf(why, sizeof(why), "envelope: %s", envparse_err);
		bad = why;
		goto reject;
	}
	if (check_path(env.sender, SMTP_PATH_ALLOW_NULL, &utf8) == -1 &&
	    env.sender[0] != '\0') {
		bad = "malformed sender address";
		goto reject;
	}
	if (maxr == 0 || maxr > SPOOL_MAX_RCPTS)
		maxr = SPOOL_MAX_RCPTS;
	if (env.nrcpt == 0 || env.nrcpt > maxr) {
		snprintf(why, sizeof(why), "%zu recipients (1 to %u)",
		    env.nrcpt, maxr);
		bad = why;
		goto reject;
	}
	for (size_t i = 0; i < env.nrcpt; i++)
		if (check_path(env.rcpt[i], SMTP_PATH_ALLOW_POSTMASTER,
		    &utf8) == -1) {
			bad = "malformed recipient address";
			goto reject;
		}

	/* The content, checked while it is copied into the spool. */
	util_queue_id(qid, sizeof(qid));
	if ((m = spool_msg_new(pk->sp, qid)) == NULL ||
	    (chunk = malloc(PICKUP_CHUNK)) == NULL)
		goto out;
	for (off = 0; off < csize;) {
		size_t n = csize - off < PICKUP_CHUNK ? (size_t)(csize - off) :
		    PICKUP_CHUNK;

		if (read_at(fd, chunk, n, (off_t)off) == -1) {
			bad = "cannot read the content";
			goto reject;
		}
		if ((bad = check_chunk(chunk, n, &prev, &has8)) != NULL)
			goto reject;
		if (spool_msg_write(m, chunk, n) == -1) {
			log_info("pickup: maildrop/%s: spool: %s", name,
			    strerror(errno));
			goto out;
		}
		off += n;
	}
	if (csize > 0 && prev != '\n') {
		bad = "the content does not end with CRLF";
		goto reject;
	}

	/* Claim the file for qid, then commit. */
	if ((in = calloc(1, sizeof(*in))) == NULL)
		goto out;
	snprintf(in->name, sizeof(in->name), "%s", name);
	snprintf(in->claimed, sizeof(in->claimed), "%s,%s", name, qid);
	if (join(claimed, sizeof(claimed), pk->dir, in->claimed) == -1)
		goto out;
	if (renameat2(AT_FDCWD, path, AT_FDCWD, claimed,
	    RENAME_NOREPLACE) == -1) {
		log_info("pickup: maildrop/%s: claiming it: %s", name,
		    strerror(errno));
		goto out;
	}
	{
		char msgid[600];

		util_escape(msgid, sizeof(msgid), env.msgid ? env.msgid : "",
		    env.msgid ? strlen(env.msgid) : 0);
		if (asprintf(&in->logline, "%s <= %s U=%s P=local S=%llu "
		    "id=%s maildrop=%s", qid, env.sender[0] ? env.sender :
		    "<>", user, (unsigned long long)csize,
		    msgid[0] ? msgid : "(none)", name) == -1)
			in->logline = NULL;
	}
	/* The file's own id, time, helo, client, proto and tls are not
	 * trusted: ours replace them. */
	snprintf(env.id, sizeof(env.id), "%s", qid);
	env.time_ms = util_now_ms();
	free(env.helo);
	free(env.client);
	free(env.proto);
	free(env.tls);
	env.helo = strdup(pk->cfg->hostname);
	env.client = strdup("127.0.0.1");
	env.proto = strdup("local");
	env.tls = strdup("");
	env.body_8bit = env.body_8bit || has8;
	env.smtputf8 = env.smtputf8 || utf8;
	in->token = ++pk->next_token;
	if (env.helo == NULL || env.client == NULL || env.proto == NULL ||
	    env.tls == NULL || spool_msg_commit_cb(m, &env, pickup_done, pk,
	    in->token) == -1) {
		m = NULL;       /* freed by the commit either way */
		log_info("pickup: maildrop/%s: cannot queue it: %s", name,
		    strerror(errno));
		if (renameat2(AT_FDCWD, claimed, AT_FDCWD, path,
		    RENAME_NOREPLACE) == -1)
			log_info("pickup: maildrop/%s: %s", in->claimed,
			    strerror(errno));
		goto out;
	}
	m = NULL;
	in->next = pk->inflight;
	pk->inflight = in;
	pk->ninflight++;
	in = NULL;
	rc = 0;
	goto out;

reject:
	close(fd);
	fd = -1;
	pickup_reject(pk, name, bad);
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	spool_msg_abort(m);
	if (in != NULL) {
		free(in->logline);
		free(in);
	}
	free(chunk);
	free(envbuf);
	spool_env_free(&env);
	return rc;
}

/* The commit of a claimed file finished (on the loop). */
static void
pickup_done(uint64_t token, const char *id, int err, void *arg)
{
	struct pickup *pk = arg;
	struct inflight **pp, *in;
	char path[PATH_MAX], back[PATH_MAX];

	for (pp = &pk->inflight; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->token == token)
			break;
	if ((in = *pp) == NULL)
		return; /* cannot happen: every commit is recorded */
	*pp = in->next;
	pk->ninflight--;
	snprintf(path, sizeof(path), "%s/%s", pk->dir, in->claimed);
	if (err == 0) {
		if (unlink(path) == -1)
			log_info("%s pickup: removing maildrop/%s: %s", id,
			    in->claimed, strerror(errno));
		if (in->logline)
			log_info("%s", in->logline);
		queue_inject(pk->q, id);
	} else {
		snprintf(back, sizeof(back), "%s/%s", pk->dir, in->name);
		log_info("pickup: maildrop/%s: cannot queue it: %s; tried "
		    "again later", in->name, strerror(err));
		if (renameat2(AT_FDCWD, path, AT_FDCWD, back,
		    RENAME_NOREPLACE) == -1)
			log_info("pickup: maildrop/%s: %s", in->claimed,
			    strerror(errno));
	}
	free(in->logline);
	free(in);
}

/* ---- scanning ------------------------------------------------------------ */

static int
ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A postdrop ".tmp" file older than an hour was left by a crash. */
static void
pickup_stale_tmp(struct pickup *pk, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", pk->dir, name);
	if (lstat(path, &st) == 0 &&
	    st.st_mtime + PICKUP_STALE_TMP < time(NULL) && unlink(path) == 0)
		log_info("pickup: removed maildrop/%s (unfinished, older than "
		    "%ds)", name, PICKUP_STALE_TMP);
}

void
pickup_scan(struct pickup *pk)
{
	struct dirent *de;
	unsigned started = 0;
	DIR *d;

	if (queue_draining(pk->q))
		return;
	if ((d = opendir(pk->dir)) == NULL) {
		log_info("pickup: %s: %s", pk->dir, strerror(errno));
		return;
	}
	while ((de = readdir(d)) != NULL && started < PICKUP_PER_SCAN &&
	    pk->ninflight < PICKUP_INFLIGHT_MAX) {
		const char *n = de->d_name;

		if (n[0] == '.' || strchr(n, ',') != NULL)
			continue;       /* ".", "..", and claimed files */
		if (ends_with(n, ".tmp")) {
			pickup_stale_tmp(pk, n);
			continue;
		}
		if (strlen(n) > PICKUP_NAME_MAX) {
			pickup_reject(pk, n, "name too long");
			continue;
		}
		pickup_one(pk, n);
		started++;
	}
	closedir(d);
}

static void
pickup_on_timer(evutil_socket_t fd, short what, void *arg)
{
	pickup_scan(arg);
}

/*
 * At start: "N,ID" files are claims whose completion was not heard.
 * queue/ID exists: the message is queued, the file goes. Else the commit
 * did not happen: back to N.
 */
static void
pickup_settle(struct pickup *pk)
{
	struct dirent *de;
	DIR *d;

	if ((d = opendir(pk->dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX], other[PATH_MAX];
		const char *comma = strrchr(de->d_name, ',');
		struct stat st;

		if (de->d_name[0] == '.' || comma == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", pk->dir, de->d_name);
		snprintf(other, sizeof(other), "%s/queue/%s",
		    pk->cfg->spool_dir, comma + 1);
		if (comma[1] != '\0' && strchr(comma + 1, '/') == NULL &&
		    stat(other, &st) == 0) {
			if (unlink(path) == 0)
				log_info("%s pickup: maildrop/%s was queued "
				    "before the last stop: removed", comma + 1,
				    de->d_name);
			continue;
		}
		snprintf(other, sizeof(other), "%s/%.*s", pk->dir,
		    (int)(comma - de->d_name), de->d_name);
		if (renameat2(AT_FDCWD, path, AT_FDCWD, other,
		    RENAME_NOREPLACE) == -1)
			log_info("pickup: maildrop/%s: %s", de->d_name,
			    strerror(errno));
	}
	closedir(d);
}

struct pickup *
pickup_open(struct event_base *base, const struct config *cfg,
            struct queue *q, struct spool *sp, char *err, size_t errlen)
{
	struct pickup *pk = calloc(1, sizeof(*pk));
	struct timeval tv = { 1, 0 };
	struct stat st;

	if (pk == NULL) {
		util_errf(err, errlen, "out of memory");
		return NULL;
	}
	pk->base = base;
	pk->cfg = cfg;
	pk->q = q;
	pk->sp = sp;
	if ((size_t)snprintf(pk->dir, sizeof(pk->dir), "%s/maildrop",
	    cfg->spool_dir) >= sizeof(pk->dir) ||
	    (size_t)snprintf(pk->corrupt, sizeof(pk->corrupt), "%s/corrupt",
	    cfg->spool_dir) >= sizeof(pk->corrupt)) {
		util_errf(err, errlen, "spool path too long");
		goto fail;
	}
	/* drop_privileges() sets the spool directory to 0700: the petrel
	 * group must still traverse it to reach maildrop/. */
	if (stat(cfg->spool_dir, &st) == 0 && st.st_uid == geteuid() &&
	    (st.st_mode & 0010) == 0)
		chmod(cfg->spool_dir, (st.st_mode & 0700) | 0010);
	if (lstat(pk->dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		util_errf(err, errlen, "%s: %s", pk->dir, errno ? strerror(errno)
		    : "not a directory");
		goto fail;
	}
	if (mkdir(pk->corrupt, 0700) == -1 && errno != EEXIST) {
		util_errf(err, errlen, "%s: %s", pk->corrupt, strerror(errno));
		goto fail;
	}
	pk->ev = event_new(base, -1, EV_PERSIST, pickup_on_timer, pk);
	if (pk->ev == NULL || event_add(pk->ev, &tv) == -1) {
		util_errf(err, errlen, "cannot start the maildrop timer");
		goto fail;
	}
	pickup_settle(pk);
	pickup_scan(pk);
	return pk;
fail:
	pickup_close(pk);
	return NULL;
}

void
pickup_close(struct pickup *pk)
{
	struct inflight *in;

	if (pk == NULL)
		return;
	if (pk->ev)
		event_free(pk->ev);
	while ((in = pk->inflight) != NULL) {
		pk->inflight = in->next;
		free(in->logline);
		free(in);
	}
	free(pk);
}
