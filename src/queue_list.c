/*
 * queue_list.c - list the spool from its files alone (no daemon needed),
 * using the pure parsers of spool_format.c on each file's trailer and
 * envelope.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_list.h"
#include "util.h"

int
queue_read_envelope(const char *spool_dir, const char *id,
                    struct spool_env *env, uint64_t *file_size, char *err,
                    size_t errlen)
{
	char path[PATH_MAX], tail[SPOOL_TRAILER_MAX];
	uint64_t csize, esize;
	struct stat st;
	size_t tlen;
	char *ebuf = NULL;
	int fd, rc = -1;

	snprintf(path, sizeof(path), "%s/queue/%s", spool_dir, id);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto done;
	}
	tlen = st.st_size < SPOOL_TRAILER_MAX ? (size_t)st.st_size
	                                      : SPOOL_TRAILER_MAX;
	if (pread(fd, tail, tlen, st.st_size - (off_t)tlen) != (ssize_t)tlen ||
	    spool_trailer_parse(tail, tlen, (uint64_t)st.st_size, &csize,
	        &esize) == -1) {
		snprintf(err, errlen, "%s: bad or missing trailer", path);
		goto done;
	}
	if (esize > 64 * 1024 * 1024 || (ebuf = malloc(esize + 1)) == NULL) {
		snprintf(err, errlen, "%s: envelope too large", path);
		goto done;
	}
	if (pread(fd, ebuf, esize, (off_t)csize) != (ssize_t)esize) {
		snprintf(err, errlen, "%s: short read", path);
		goto done;
	}
	if (spool_env_parse(ebuf, esize, env, err, errlen) == -1)
		goto done;
	env->content_size = csize;
	if (file_size)
		*file_size = (uint64_t)st.st_size;
	rc = 0;
done:
	free(ebuf);
	close(fd);
	return rc;
}

struct qentry {
	struct spool_env env;
	unsigned char *done;  /* per recipient: final in the journal */
	int held;
	int removed;
};

/* Apply journal/<id> (see docs/internals/QUEUE.md) to e. */
static void
qentry_journal(const char *spool_dir, struct qentry *e)
{
	char path[PATH_MAX], line[1200];
	FILE *fp;

	e->done = calloc(e->env.nrcpt ? e->env.nrcpt : 1, 1);
	snprintf(path, sizeof(path), "%s/journal/%s", spool_dir, e->env.id);
	if (e->done == NULL || (fp = fopen(path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), fp)) {
		const char *why;
		size_t whylen;
		uint64_t r;
		char kind;

		if (spool_journal_parse(line, strlen(line), &kind, &r, &why,
		    &whylen) == -1)
			continue;
		if (kind == 'H' || kind == 'U')
			e->held = kind == 'H';
		else if (kind == 'X')
			e->removed = 1;
		else if (r < e->env.nrcpt)
			e->done[r] = 1;
	}
	fclose(fp);
}

static int
qentry_cmp(const void *a, const void *b)
{
	const struct qentry *x = a, *y = b;

	if (x->env.time_ms != y->env.time_ms)
		return x->env.time_ms < y->env.time_ms ? -1 : 1;
	return strcmp(x->env.id, y->env.id);
}

int
queue_list(const char *spool_dir, FILE *out)
{
	char path[PATH_MAX], err[256];
	struct qentry *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int bad = 0;
	uint64_t now = util_now_ms();
	DIR *d;

	snprintf(path, sizeof(path), "%s/queue", spool_dir);
	if ((d = opendir(path)) == NULL) {
		fprintf(stderr, "petrel: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct qentry *nv = realloc(v, ncap * sizeof(*nv));
			if (nv == NULL)
				break;
			v = nv;
			cap = ncap;
		}
		memset(&v[n], 0, sizeof(v[n]));
		if (queue_read_envelope(spool_dir, de->d_name, &v[n].env, NULL,
		    err, sizeof(err)) == -1) {
			fprintf(stderr, "petrel: %s\n", err);
			bad++;
			continue;
		}
		qentry_journal(spool_dir, &v[n]);
		if (v[n].removed) {
			spool_env_free(&v[n].env);
			free(v[n].done);
			continue;
		}
		n++;
	}
	closedir(d);
	if (n > 1)    /* v is NULL when the queue is empty (C11 7.22.5) */
		qsort(v, n, sizeof(*v), qentry_cmp);
	if (n == 0)
		fprintf(out, "Mail queue is empty\n");
	for (size_t i = 0; i < n; i++) {
		const struct spool_env *e = &v[i].env;
		char age[32];

		util_fmt_age(age, sizeof(age), now > e->time_ms ? now - e->time_ms : 0);
		fprintf(out, "%s %5s %8llu <%s>%s\n", e->id, age,
		    (unsigned long long)e->content_size, e->sender,
		    v[i].held ? " (held)" : "");
		for (size_t r = 0; r < e->nrcpt; r++)
			if (v[i].done == NULL || !v[i].done[r])
				fprintf(out, "        <%s>\n", e->rcpt[r]);
		fprintf(out, "\n");
		spool_env_free(&v[i].env);
		free(v[i].done);
	}
	if (n > 0)
		fprintf(out, "%zu message%s in queue\n", n, n == 1 ? "" : "s");
	free(v);
	return bad;
}
