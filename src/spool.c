/*
 * spool.c - durable message store: streaming writes on the loop, commits
 * (fdatasync, rename, directory fsync) on worker threads. See spool.h.
 *
 * Threads: the event loop owns every spool_msg until spool_msg_commit();
 * then the message sits on sp->jobs (under sp->lock), a worker owns it while
 * it writes, it sits on sp->done (under sp->lock), and the loop owns it
 * again when it drains sp->done after a byte on the notify pipe, calls the
 * completion and frees it. Nothing else is shared.
 *
 * Group commit: a worker takes every queued job at once (up to
 * SPOOL_BATCH), makes each file durable and renames it, then fsyncs the
 * queue directory once for the whole batch. Under load this turns N
 * directory fsyncs into one without delaying any single message.
 *
 * Invariant: a file appears in queue/ only complete (content, envelope,
 * trailer) and fdatasync'ed; a commit reported as successful has also had
 * its directory entry fsync'ed. A failed commit leaves no file in tmp/ or
 * queue/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "buf.h"
#include "spool.h"
#include "util.h"

#define SPOOL_BATCH 64
#define SPOOL_FLUSH (64 * 1024)

enum spool_fault { FAULT_NONE, FAULT_WRITE, FAULT_FSYNC };

enum spool_job { JOB_COMMIT, JOB_JOURNAL, JOB_REMOVE };

struct spool_msg {
	struct spool *sp;
	enum spool_job kind;
	spool_done_cb cb;    /* NULL: the spool's callback */
	void *cbarg;
	char id[SPOOL_ID_MAX + 1];
	struct buf mem;      /* content not yet written to fd */
	int fd;              /* tmp/<id>, or -1 while all in memory */
	uint64_t size;       /* content bytes so far */
	char *env;           /* serialized envelope + trailer (commit) */
	size_t envlen;
	uint64_t token;
	int result;          /* 0 or errno, set by the worker */
	struct spool_msg *merged_into; /* journal line written with another */
	struct spool_msg *next;
};

struct spool {
	struct event_base *base;
	char *dir;
	int qfd;                 /* queue/ directory, for fsync */
	int jfd;                 /* journal/ directory, for fsync */
	pthread_t *threads;
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct spool_msg *jobs, **jobs_tail;
	struct spool_msg *done, **done_tail;
	unsigned pending;        /* committed, completion not yet delivered */
	int stopping;
	int notify[2];
	struct event *ev_notify;
	spool_done_cb cb;
	void *cbarg;
	enum spool_fault fault;
};

static int
spool_path(const struct spool *sp, const char *sub, const char *id, char *out,
           size_t outlen)
{
	int n = snprintf(out, outlen, "%s/%s/%s", sp->dir, sub, id);

	if (n < 0 || (size_t)n >= outlen) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Worker: make one message durable in queue/. Returns 0 or an errno. */
static int
spool_commit_one(struct spool *sp, struct spool_msg *m)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	int err = 0;

	if (spool_path(sp, "tmp", m->id, tmp, sizeof(tmp)) == -1 ||
	    spool_path(sp, "queue", m->id, dst, sizeof(dst)) == -1)
		return ENAMETOOLONG;
	if (m->fd == -1) {
		m->fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (m->fd == -1)
			return errno;
	}
	if (util_write_all(m->fd, buf_ptr(&m->mem), buf_len(&m->mem)) == -1 ||
	    util_write_all(m->fd, m->env, m->envlen) == -1) {
		err = errno;
		goto fail;
	}
	if (sp->fault == FAULT_WRITE) {
		err = EIO;
		goto fail;
	}
	if (fdatasync(m->fd) == -1 || sp->fault == FAULT_FSYNC) {
		err = sp->fault == FAULT_FSYNC ? EIO : errno;
		goto fail;
	}
	if (close(m->fd) == -1) {
		m->fd = -1;
		err = errno;
		goto fail;
	}
	m->fd = -1;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE) == -1) {
		err = errno;
		goto fail;
	}
	return 0;
fail:
	if (m->fd != -1) {
		close(m->fd);
		m->fd = -1;
	}
	unlink(tmp);
	return err ? err : EIO;
}

/*
 * Worker: append journal lines and make them durable. Every later journal
 * job of the same batch for the same message rides along: one write and
 * one fdatasync for all the recipients a transaction finished. A new
 * journal file also needs the directory fsync: it bumps *dirsync.
 */
static int
spool_journal_one(struct spool *sp, struct spool_msg *m, int *dirsync)
{
	char path[PATH_MAX];
	int fd, err = 0, created = 0;
	struct buf lines = { 0 };
	const char *data = m->env;
	size_t len = m->envlen;

	for (struct spool_msg *n = m->next; n; n = n->next) {
		if (n->kind != JOB_JOURNAL || n->merged_into ||
		    strcmp(n->id, m->id) != 0)
			continue;
		if (buf_len(&lines) == 0 &&
		    buf_append(&lines, m->env, m->envlen) == -1)
			break;
		if (buf_append(&lines, n->env, n->envlen) == -1)
			break;
		n->merged_into = m;
	}
	if (buf_len(&lines) > 0) {
		data = buf_ptr(&lines);
		len = buf_len(&lines);
	}

	if (spool_path(sp, "journal", m->id, path, sizeof(path)) == -1)
		return ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd == -1 && errno == ENOENT) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		created = 1;
	}
	if (fd == -1) {
		err = errno;
		buf_free(&lines);
		return err;
	}
	if (util_write_all(fd, data, len) == -1 || fdatasync(fd) == -1)
		err = errno;
	close(fd);
	buf_free(&lines);
	if (err == 0 && created)
		(*dirsync)++;
	return err;
}

/*
 * The message file only; its journal goes after the queue/ fsync of the
 * batch (spool_unlink_journal): a journal without its message is ignored
 * (and swept at start), but a message that survives a crash must find its
 * journal, or recipients it records as done would be delivered again.
 */
static int
spool_remove_one(struct spool *sp, struct spool_msg *m)
{
	char path[PATH_MAX];

	if (spool_path(sp, "queue", m->id, path, sizeof(path)) == 0 &&
	    unlink(path) == -1 && errno != ENOENT)
		return errno;
	return 0;
}

static void
spool_unlink_journal(struct spool *sp, struct spool_msg *m)
{
	char path[PATH_MAX];

	if (spool_path(sp, "journal", m->id, path, sizeof(path)) == 0 &&
	    unlink(path) == -1 && errno != ENOENT && m->result == 0)
		m->result = errno;
}

static void *
spool_worker(void *arg)
{
	struct spool *sp = arg;

	pthread_mutex_lock(&sp->lock);
	for (;;) {
		struct spool_msg *batch, **tail, *m;
		int n = 0, ok = 0, jsync = 0, removed = 0;

		while (sp->jobs == NULL && !sp->stopping)
			pthread_cond_wait(&sp->cond, &sp->lock);
		if (sp->jobs == NULL)
			break;
		batch = sp->jobs;
		tail = &sp->jobs;
		for (m = sp->jobs; m && n < SPOOL_BATCH; m = m->next, n++)
			tail = &m->next;
		sp->jobs = *tail;
		*tail = NULL;
		if (sp->jobs == NULL)
			sp->jobs_tail = &sp->jobs;
		pthread_mutex_unlock(&sp->lock);

		for (m = batch; m; m = m->next) {
			switch (m->kind) {
			case JOB_COMMIT:
				if ((m->result = spool_commit_one(sp, m)) == 0)
					ok++;
				break;
			case JOB_JOURNAL:
				if (m->merged_into == NULL)
					m->result = spool_journal_one(sp, m, &jsync);
				break;
			case JOB_REMOVE:
				m->result = spool_remove_one(sp, m);
				removed++;
				break;
			}
		}
		for (m = batch; m; m = m->next)
			if (m->merged_into)
				m->result = m->merged_into->result;
		if (jsync > 0 && fsync(sp->jfd) == -1) {
			int e = errno;
			for (m = batch; m; m = m->next)
				if (m->kind == JOB_JOURNAL && m->result == 0)
					m->result = e;
		}
		/* One queue/ fsync makes the batch's renames and unlinks
		 * durable: a removal is the only record that a message whose
		 * last recipients completed it without a journal line is done
		 * (queue.c journal_delivered). A failure leaves the message to
		 * be delivered again after a crash, nothing worse. */
		if ((ok > 0 || removed > 0) && fsync(sp->qfd) == -1) {
			/* Not durable: take the renamed files back. */
			int e = errno;
			for (m = batch; m; m = m->next) {
				char dst[PATH_MAX];
				if (m->kind == JOB_REMOVE && m->result == 0)
					m->result = e;
				if (m->kind != JOB_COMMIT)
					continue;
				if (m->result == 0 &&
				    spool_path(sp, "queue", m->id, dst,
				        sizeof(dst)) == 0)
					unlink(dst);
				if (m->result == 0)
					m->result = e;
			}
		}
		for (m = batch; m; m = m->next)
			if (m->kind == JOB_REMOVE && m->result == 0)
				spool_unlink_journal(sp, m);

		pthread_mutex_lock(&sp->lock);
		*sp->done_tail = batch;
		for (m = batch; m->next; m = m->next)
			;
		sp->done_tail = &m->next;
		while (write(sp->notify[1], "x", 1) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&sp->lock);
	return NULL;
}

static void
spool_msg_free(struct spool_msg *m)
{
	buf_free(&m->mem);
	free(m->env);
	free(m);
}

/* Loop: deliver completions. */
static void
spool_on_notify(evutil_socket_t fd, short what, void *arg)
{
	struct spool *sp = arg;
	struct spool_msg *list, *m;
	char drain[256];

	while (read(fd, drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&sp->lock);
	list = sp->done;
	sp->done = NULL;
	sp->done_tail = &sp->done;
	pthread_mutex_unlock(&sp->lock);
	while ((m = list) != NULL) {
		list = m->next;
		sp->pending--;
		if (m->cb)
			m->cb(m->token, m->id, m->result, m->cbarg);
		else if (m->kind == JOB_COMMIT)
			sp->cb(m->token, m->id, m->result, sp->cbarg);
		spool_msg_free(m);
	}
}

static int
spool_clean_tmp(struct spool *sp, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tmp", sp->dir);
	if ((d = opendir(path)) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	return 0;
}

struct spool *
spool_open(struct event_base *base, const char *dir, unsigned workers,
           spool_done_cb cb, void *cbarg, char *err, size_t errlen)
{
	static const char *subdirs[] = { "queue", "journal", "tmp", "tls" };
	struct spool *sp = calloc(1, sizeof(*sp));
	char path[PATH_MAX];
	const char *fault = getenv("PETREL_FAULT_SPOOL");

	if (sp == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	sp->base = base;
	sp->qfd = -1;
	sp->jfd = -1;
	sp->notify[0] = sp->notify[1] = -1;
	sp->jobs_tail = &sp->jobs;
	sp->done_tail = &sp->done;
	sp->cb = cb;
	sp->cbarg = cbarg;
	if (fault && strcmp(fault, "write") == 0)
		sp->fault = FAULT_WRITE;
	else if (fault && strcmp(fault, "fsync") == 0)
		sp->fault = FAULT_FSYNC;
	if ((sp->dir = strdup(dir)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (util_mkdirs(dir, 0700) == -1) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
	}
	if (spool_clean_tmp(sp, err, errlen) == -1)
		goto fail;
	snprintf(path, sizeof(path), "%s/queue", dir);
	if ((sp->qfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/journal", dir);
	if ((sp->jfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (pipe2(sp->notify, O_NONBLOCK | O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	sp->ev_notify = event_new(base, sp->notify[0], EV_READ | EV_PERSIST,
	    spool_on_notify, sp);
	if (sp->ev_notify == NULL || event_add(sp->ev_notify, NULL) == -1) {
		snprintf(err, errlen, "event_new failed");
		goto fail;
	}
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->cond, NULL);
	if (workers == 0)
		workers = 1;
	sp->threads = calloc(workers, sizeof(*sp->threads));
	if (sp->threads == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < workers; i++) {
		int e = pthread_create(&sp->threads[i], NULL, spool_worker, sp);
		if (e != 0) {
			snprintf(err, errlen, "pthread_create: %s", strerror(e));
			goto fail;
		}
		sp->nthreads++;
	}
	return sp;
fail:
	spool_close(sp);
	return NULL;
}

void
spool_close(struct spool *sp)
{
	if (sp == NULL)
		return;
	if (sp->nthreads > 0) {
		pthread_mutex_lock(&sp->lock);
		sp->stopping = 1;
		pthread_cond_broadcast(&sp->cond);
		pthread_mutex_unlock(&sp->lock);
		for (unsigned i = 0; i < sp->nthreads; i++)
			pthread_join(sp->threads[i], NULL);
	}
	/* Completions nobody will hear about: the files are in queue/. */
	while (sp->done) {
		struct spool_msg *m = sp->done;
		sp->done = m->next;
		spool_msg_free(m);
	}
	free(sp->threads);
	if (sp->ev_notify)
		event_free(sp->ev_notify);
	if (sp->notify[0] != -1)
		close(sp->notify[0]);
	if (sp->notify[1] != -1)
		close(sp->notify[1]);
	if (sp->qfd != -1)
		close(sp->qfd);
	if (sp->jfd != -1)
		close(sp->jfd);
	free(sp->dir);
	free(sp);
}

const char *
spool_dir(const struct spool *sp)
{
	return sp->dir;
}

struct spool_msg *
spool_msg_new(struct spool *sp, const char *id)
{
	struct spool_msg *m = calloc(1, sizeof(*m));
	size_t len = strlen(id);

	if (m == NULL)
		return NULL;
	if (len == 0 || len > SPOOL_ID_MAX) {
		free(m);
		errno = EINVAL;
		return NULL;
	}
	memcpy(m->id, id, len + 1);
	m->sp = sp;
	m->fd = -1;
	return m;
}

static int
spool_msg_spill(struct spool_msg *m)
{
	char tmp[PATH_MAX];

	if (m->fd == -1) {
		if (spool_path(m->sp, "tmp", m->id, tmp, sizeof(tmp)) == -1)
			return -1;
		m->fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (m->fd == -1)
			return -1;
	}
	if (util_write_all(m->fd, buf_ptr(&m->mem), buf_len(&m->mem)) == -1)
		return -1;
	buf_reset(&m->mem);
	return 0;
}

int
spool_msg_write(struct spool_msg *m, const void *p, size_t n)
{
	if (buf_append(&m->mem, p, n) == -1) {
		errno = ENOMEM;
		return -1;
	}
	m->size += n;
	if ((m->fd == -1 && buf_len(&m->mem) > SPOOL_SPILL) ||
	    (m->fd != -1 && buf_len(&m->mem) >= SPOOL_FLUSH))
		return spool_msg_spill(m);
	return 0;
}

uint64_t
spool_msg_size(const struct spool_msg *m)
{
	return m->size;
}

void
spool_msg_abort(struct spool_msg *m)
{
	char tmp[PATH_MAX];

	if (m == NULL)
		return;
	if (m->fd != -1) {
		close(m->fd);
		if (spool_path(m->sp, "tmp", m->id, tmp, sizeof(tmp)) == 0)
			unlink(tmp);
	}
	spool_msg_free(m);
}

static void
spool_enqueue(struct spool *sp, struct spool_msg *m)
{
	m->next = NULL;
	sp->pending++;
	pthread_mutex_lock(&sp->lock);
	*sp->jobs_tail = m;
	sp->jobs_tail = &m->next;
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->lock);
}

int
spool_msg_commit_cb(struct spool_msg *m, const struct spool_env *env,
                    spool_done_cb cb, void *arg, uint64_t token)
{
	m->cb = cb;
	m->cbarg = arg;
	return spool_msg_commit(m, env, token);
}

int
spool_journal(struct spool *sp, const char *id, const char *line,
              spool_done_cb cb, void *arg, uint64_t token)
{
	struct spool_msg *m = spool_msg_new(sp, id);

	if (m == NULL)
		return -1;
	m->kind = JOB_JOURNAL;
	m->cb = cb;
	m->cbarg = arg;
	m->token = token;
	if ((m->env = strdup(line)) == NULL) {
		spool_msg_free(m);
		return -1;
	}
	m->envlen = strlen(line);
	spool_enqueue(sp, m);
	return 0;
}

int
spool_remove(struct spool *sp, const char *id, spool_done_cb cb, void *arg,
             uint64_t token)
{
	struct spool_msg *m = spool_msg_new(sp, id);

	if (m == NULL)
		return -1;
	m->kind = JOB_REMOVE;
	m->cb = cb;
	m->cbarg = arg;
	m->token = token;
	spool_enqueue(sp, m);
	return 0;
}

int
spool_msg_commit(struct spool_msg *m, const struct spool_env *env,
                 uint64_t token)
{
	struct spool *sp = m->sp;

	if (spool_env_serialize(env, m->size, &m->env, &m->envlen) == -1) {
		spool_msg_abort(m);
		errno = EINVAL;
		return -1;
	}
	m->token = token;
	m->next = NULL;
	sp->pending++;
	pthread_mutex_lock(&sp->lock);
	*sp->jobs_tail = m;
	sp->jobs_tail = &m->next;
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->lock);
	return 0;
}

unsigned
spool_pending(const struct spool *sp)
{
	return sp->pending;
}

int
spool_write_sync(const char *dir, const struct spool_env *env,
                 const char *content, size_t len, char *err, size_t errlen)
{
	char tmp[PATH_MAX], dst[PATH_MAX], qdir[PATH_MAX], *envbuf = NULL;
	size_t envlen;
	int fd = -1, dfd = -1;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, env->id) >=
	    sizeof(tmp) ||
	    (size_t)snprintf(dst, sizeof(dst), "%s/queue/%s", dir, env->id) >=
	    sizeof(dst) ||
	    (size_t)snprintf(qdir, sizeof(qdir), "%s/queue", dir) >= sizeof(qdir)) {
		util_errf(err, errlen, "spool path too long");
		return -1;
	}
	if (spool_env_serialize(env, len, &envbuf, &envlen) == -1) {
		util_errf(err, errlen, "bad envelope (address with control "
		    "characters?)");
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1) {
		util_errf(err, errlen, "%s: %s", tmp, strerror(errno));
		free(envbuf);
		return -1;
	}
	if (util_write_all(fd, content, len) == -1 ||
	    util_write_all(fd, envbuf, envlen) == -1 || fdatasync(fd) == -1) {
		util_errf(err, errlen, "writing %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		util_errf(err, errlen, "writing %s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE) == -1) {
		util_errf(err, errlen, "%s: %s", dst, strerror(errno));
		goto fail;
	}
	if ((dfd = open(qdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(dfd) == -1) {
		util_errf(err, errlen, "%s: %s", qdir, strerror(errno));
		unlink(dst);
		if (dfd != -1)
			close(dfd);
		free(envbuf);
		return -1;
	}
	close(dfd);
	free(envbuf);
	return 0;
fail:
	if (fd != -1)
		close(fd);
	unlink(tmp);
	free(envbuf);
	return -1;
}
