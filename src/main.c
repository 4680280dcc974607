/*
 * main.c - the `petrel` command: subcommand dispatch and the daemon's
 * start-up and shut-down (config, log, spool, queue, listeners, control
 * socket, event loop, signals).
 *
 *   petrel serve [-c FILE] [-f]      run the daemon (-f: stay in foreground)
 *   petrel check-config [-c FILE]    validate and print the configuration
 *   petrel queue [--summary] [-c FILE]  list the queue (daemon, else spool)
 *   petrel status | flush [DOMAIN] | deliver ID | hold ID | release ID |
 *          remove ID | bounce ID     [-c FILE]  (talk to the daemon)
 *   petrel --version
 *
 * Without -c, Petrel runs on its embedded defaults (config.h).
 *
 * Signals: SIGTERM/SIGINT stop (listeners close, the spool finishes every
 * commit in progress, connections are closed and their work re-queued);
 * SIGUSR1 reopens the log file (logrotate); SIGHUP reloads the
 * configuration file: a bad file is reported and the old one kept.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "control.h"
#include "dns.h"
#include "listener.h"
#include "log.h"
#include "pickup.h"
#include "queue.h"
#include "queue_list.h"
#include "sendmail.h"
#include "smtp_client.h"
#include "smtp_server.h"
#include "spool.h"
#include "tls.h"
#include "util.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: petrel serve [-c FILE] [-f]\n"
	    "       petrel check-config [-c FILE]\n"
	    "       petrel queue [--summary] [-c FILE]\n"
	    "       petrel status [-c FILE]\n"
	    "       petrel flush [DOMAIN] [-c FILE]\n"
	    "       petrel deliver|hold|release|remove|bounce ID [-c FILE]\n"
	    "       petrel sendmail [OPTIONS] [RECIPIENT...]\n"
	    "       petrel --version\n");
}

/* Parse "-c FILE", "-f", "--summary" and at most one positional argument. */
static int
parse_opts(int argc, char **argv, const char **cfgpath, int *foreground,
           int allow_f, const char **pos, int *summary)
{
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			*cfgpath = argv[++i];
		} else if (allow_f && strcmp(argv[i], "-f") == 0) {
			*foreground = 1;
		} else if (summary && strcmp(argv[i], "--summary") == 0) {
			*summary = 1;
		} else if (pos && *pos == NULL && argv[i][0] != '-') {
			*pos = argv[i];
		} else {
			fprintf(stderr, "petrel %s: unknown argument '%s'\n",
			    argv[1], argv[i]);
			usage(stderr);
			return -1;
		}
	}
	return 0;
}

/*
 * The commands that talk to an installed daemon (queue, status, flush, ...)
 * read /etc/petrel/petrel.conf when no -c is given and that file exists;
 * `petrel serve` without -c always runs on the embedded defaults.
 */
#define DEFAULT_CONFIG "/etc/petrel/petrel.conf"

static const char *
client_config(const char *path)
{
	if (path == NULL && access(DEFAULT_CONFIG, R_OK) == 0)
		return DEFAULT_CONFIG;
	return path;
}

static struct config *
load_config(const char *path)
{
	struct config *cfg;
	char err[1024];

	if (config_load(path, &cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "petrel: %s\n", err);
		return NULL;
	}
	return cfg;
}

/* ---- the daemon ---------------------------------------------------------- */

struct daemon {
	struct event_base *base;
	const char *cfgpath;
	struct config *cfg;        /* current */
	struct config **retired;   /* replaced by SIGHUP, freed at exit */
	size_t nretired;
	struct queue *q;
	struct smtp_server *srv;
	struct spool *sp;
	struct listeners *ls;
	struct event *ev_drain;
	uint64_t drain_deadline;
};

/* Shutting down: done when nothing is in flight, or at shutdown_timeout. */
static void
on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *dm = arg;
	unsigned in = smtp_server_drain(dm->srv);
	unsigned out = queue_busy(dm->q);
	unsigned sp = spool_pending(dm->sp);

	if ((in == 0 && out == 0 && sp == 0) || util_now_ms() >= dm->drain_deadline) {
		if (in || out || sp)
			log_info("shutdown_timeout reached: %u inbound sessions "
			    "and %u outbound transactions/connections cut short "
			    "(the queue keeps the mail)", in, out);
		event_base_loopexit(dm->base, NULL);
	}
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *dm = arg;

	if (sig == SIGUSR1) {
		if (log_reopen() == -1)
			fprintf(stderr, "petrel: reopening the log: %s\n",
			    strerror(errno));
		log_info("log reopened (SIGUSR1)");
		return;
	}
	if (sig == SIGHUP) {
		struct config *ncfg;
		char err[1024];

		if (dm->cfgpath == NULL) {
			log_info("SIGHUP: running on embedded defaults, nothing "
			    "to reload");
			return;
		}
		if (config_load(dm->cfgpath, &ncfg, err, sizeof(err)) == -1) {
			log_info("SIGHUP: configuration not reloaded, keeping the "
			    "old one: %s", err);
			return;
		}
		/* Listeners, spool and log keep their settings until a
		 * restart; delivery settings take effect now. The old config
		 * stays allocated: live sessions and connections point into
		 * it. */
		{
			struct config **nv = realloc(dm->retired,
			    (dm->nretired + 1) * sizeof(*nv));
			if (nv == NULL) {
				config_free(ncfg);
				log_info("SIGHUP: out of memory, keeping the old "
				    "configuration");
				return;
			}
			dm->retired = nv;
			dm->retired[dm->nretired++] = dm->cfg;
		}
		dm->cfg = ncfg;
		queue_reconfigure(dm->q, ncfg);
		smtp_server_set_config(dm->srv, ncfg);
		log_info("SIGHUP: configuration %s reloaded (listener, spool and "
		    "log changes need a restart)", dm->cfgpath);
		return;
	}
	if (dm->ev_drain) {
		log_info("received signal %d again, stopping now", (int)sig);
		event_base_loopexit(dm->base, NULL);
		return;
	}
	log_info("received signal %d, shutting down (finishing transactions "
	    "for up to %us)", (int)sig, dm->cfg->shutdown_timeout);
	listeners_close(dm->ls); /* stop accepting */
	dm->ls = NULL;
	queue_drain(dm->q);
	dm->drain_deadline = util_now_ms() +
	    (uint64_t)dm->cfg->shutdown_timeout * 1000;
	dm->ev_drain = event_new(dm->base, -1, EV_PERSIST, on_drain_tick, dm);
	if (dm->ev_drain == NULL) {
		event_base_loopexit(dm->base, NULL);
		return;
	}
	{
		struct timeval tv = { 0, 100000 };
		event_add(dm->ev_drain, &tv);
	}
	on_drain_tick(-1, 0, dm);
}

/* Refuses to start when the pid file names a live process. */
static int
pidfile_write(const char *path, char *err, size_t errlen)
{
	FILE *fp;
	long pid;

	if ((fp = fopen(path, "r")) != NULL) {
		if (fscanf(fp, "%ld", &pid) == 1 && pid > 0 && pid != getpid() &&
		    kill((pid_t)pid, 0) == 0) {
			fclose(fp);
			util_errf(err, errlen, "already running (pid %ld in %s)",
			    pid, path);
			return -1;
		}
		fclose(fp);
	}
	if ((fp = fopen(path, "w")) == NULL) {
		util_errf(err, errlen, "pid_file %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(fp, "%ld\n", (long)getpid());
	if (fclose(fp) != 0) {
		util_errf(err, errlen, "pid_file %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static void
chown_tree(const char *dir, uid_t uid, gid_t gid, int depth)
{
	struct dirent *de;
	DIR *d;

	if (chown(dir, uid, gid) == -1 || depth == 0)
		return;
	if ((d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		/* pickup_prepare() owns maildrop/; its files keep the
		 * submitting users as owners. */
		if (depth == 2 && strcmp(de->d_name, "maildrop") == 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir,
		    de->d_name) >= sizeof(path))
			continue;
		chown_tree(path, uid, gid, depth - 1);
	}
	closedir(d);
}

/*
 * Started as root with `user` set: hand the spool and the log to that user
 * (spool mode 0700) and become it. The listeners are already bound.
 */
static int
drop_privileges(const struct config *cfg, char *err, size_t errlen)
{
	struct passwd *pw;

	if (cfg->user == NULL)
		return 0;
	if (geteuid() != 0) {
		log_info("user = %s ignored: not started as root", cfg->user);
		return 0;
	}
	if ((pw = getpwnam(cfg->user)) == NULL) {
		util_errf(err, errlen, "user %s does not exist (make install "
		    "creates the petrel user)", cfg->user);
		return -1;
	}
	chown_tree(cfg->spool_dir, pw->pw_uid, pw->pw_gid, 2);
	chmod(cfg->spool_dir, 0710); /* the petrel group reaches maildrop/ */
	if (strcmp(cfg->log_file, "-") != 0 &&
	    chown(cfg->log_file, pw->pw_uid, pw->pw_gid) == -1)
		log_info("log_file %s: chown: %s", cfg->log_file, strerror(errno));
	if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1) {
		util_errf(err, errlen, "cannot become user %s: %s", cfg->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		util_errf(err, errlen, "privileges could not be dropped");
		return -1;
	}
	log_info("running as user %s (uid %d)", pw->pw_name, (int)pw->pw_uid);
	return 0;
}

static void
on_queued(void *arg, const char *id)
{
	queue_inject(arg, id);
}

static int
cmd_serve(const char *cfgpath, int foreground)
{
	struct config *cfg = load_config(cfgpath);
	struct event_base *base = NULL;
	struct smtp_server *srv = NULL;
	struct spool *sp = NULL;
	struct listeners *ls = NULL;
	struct control *ctl = NULL;
	struct dns *dns = NULL;
	struct queue *q = NULL;
	struct pickup *pk = NULL;
	struct event *ev_sig[4] = { NULL };
	static const int sigs[4] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	struct daemon dm = { 0 };
	char err[1024];
	int rc = 1, pidfile_written = 0;

	if (cfg == NULL)
		return 78; /* EX_CONFIG */
	if (log_open(cfg->log_file) == -1) {
		fprintf(stderr, "petrel: log_file %s: %s\n", cfg->log_file,
		    strerror(errno));
		goto done;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL) {
		fprintf(stderr, "petrel: cannot create event loop\n");
		goto done;
	}
	if ((srv = smtp_server_new(base, cfg)) == NULL)
		goto done;
	sp = spool_open(base, cfg->spool_dir, cfg->spool_workers,
	    smtp_server_spool_done, srv, err, sizeof(err));
	if (sp == NULL) {
		fprintf(stderr, "petrel: spool: %s\n", err);
		goto done;
	}
	smtp_server_set_spool(srv, sp);
	if ((dns = dns_new(base, cfg->dns_resolver, err, sizeof(err))) == NULL)
		log_info("DNS unavailable (%s): MX deliveries will be deferred",
		    err);
	if ((q = queue_new(base, cfg, sp, dns)) == NULL) {
		fprintf(stderr, "petrel: cannot create the queue\n");
		goto done;
	}
	smtp_server_on_queued(srv, on_queued, q);
	if ((ls = listeners_open(base, cfg, srv, err, sizeof(err))) == NULL) {
		fprintf(stderr, "petrel: %s\n", err);
		goto done;
	}
	if ((ctl = control_open(base, cfg->spool_dir, q, srv, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "petrel: %s\n", err);
		goto done;
	}
	if (!foreground && daemon(1, strcmp(cfg->log_file, "-") == 0) == -1) {
		fprintf(stderr, "petrel: daemon: %s\n", strerror(errno));
		goto done;
	}
	if (cfg->pid_file) {
		if (pidfile_write(cfg->pid_file, err, sizeof(err)) == -1) {
			fprintf(stderr, "petrel: %s\n", err);
			log_info("not starting: %s", err);
			goto done;
		}
		pidfile_written = 1;
	}
	if (pickup_prepare(cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "petrel: maildrop: %s\n", err);
		log_info("not starting: maildrop: %s", err);
		goto done;
	}
	if (drop_privileges(cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "petrel: %s\n", err);
		log_info("not starting: %s", err);
		goto done;
	}
	dm.base = base;
	dm.cfgpath = cfgpath;
	dm.cfg = cfg;
	dm.q = q;
	dm.srv = srv;
	dm.sp = sp;
	dm.ls = ls;
	for (size_t i = 0; i < 4; i++) {
		ev_sig[i] = evsignal_new(base, sigs[i], on_signal, &dm);
		if (ev_sig[i])
			evsignal_add(ev_sig[i], NULL);
	}
	log_info("petrel %s started, pid %d, spool %s, %s configuration%s",
	    PETREL_VERSION, (int)getpid(), cfg->spool_dir,
	    cfg->path ? cfg->path : "embedded",
	    cfg->queue_only ? ", queue_only" : "");
	queue_load(q);
	if ((pk = pickup_open(base, cfg, q, sp, err, sizeof(err))) == NULL)
		log_info("maildrop: %s: local users other than root and the "
		    "daemon's user cannot submit mail", err);
	event_base_dispatch(base);
	rc = 0;
done:
	pickup_close(pk);
	control_close(ctl);
	listeners_close(dm.base ? dm.ls : ls);
	if (dm.ev_drain)
		event_free(dm.ev_drain);
	if (pidfile_written)
		unlink(cfg->pid_file);
	smtp_server_free(srv);
	queue_free(q);
	dns_free(dns);
	mta_tls_cleanup();
	tls_cache_clear();
	spool_close(sp); /* finishes commits in progress: nothing lost */
	for (size_t i = 0; i < 4; i++)
		if (ev_sig[i])
			event_free(ev_sig[i]);
	if (base)
		event_base_free(base);
	if (rc == 0)
		log_info("petrel stopped");
	log_close();
	for (size_t i = 0; i < dm.nretired; i++)
		config_free(dm.retired[i]);
	free(dm.retired);
	config_free(dm.cfg ? dm.cfg : cfg);
	return rc;
}

/* ---- talking to the daemon --------------------------------------------- */

static int
cmd_admin(const char *cfgpath, const char *request, int offline_queue)
{
	struct config *cfg = load_config(client_config(cfgpath));
	struct buf out = { 0 };
	int r;

	if (cfg == NULL)
		return 78;
	r = control_request(cfg->spool_dir, request, &out);
	if (r == -1 && offline_queue && strstr(buf_ptr(&out), "not running")) {
		/* No daemon: read the spool files directly. */
		buf_free(&out);
		r = queue_list(cfg->spool_dir, stdout);
		config_free(cfg);
		return r == 0 ? 0 : 1;
	}
	if (r == 0)
		fwrite(buf_ptr(&out), 1, buf_len(&out), stdout);
	else
		fprintf(stderr, "petrel: %.*s", (int)buf_len(&out), buf_ptr(&out));
	if (r != 0 && buf_len(&out) > 0 &&
	    memmem(buf_ptr(&out), buf_len(&out), "permission denied", 17))
		r = -2;
	buf_free(&out);
	config_free(cfg);
	/* sysexits: EX_NOPERM 77, EX_UNAVAILABLE 69 */
	return r == 0 ? 0 : r == 1 ? 1 : r == -2 ? 77 : 69;
}

int
main(int argc, char **argv)
{
	static const char *idcmds[] = { "deliver", "hold", "release", "remove",
	                                "bounce" };
	const char *cfgpath = NULL, *pos = NULL;
	int foreground = 0, summary = 0;
	char req[CONTROL_LINE_MAX];
	const char *prog = strrchr(argv[0], '/');

	/* Installed as sendmail / mailq (symlinks): the sendmail interface. */
	prog = prog != NULL ? prog + 1 : argv[0];
	if (strcmp(prog, "sendmail") == 0)
		return sendmail_main(argc, argv, SENDMAIL_MODE_SENDMAIL);
	if (strcmp(prog, "mailq") == 0)
		return sendmail_main(argc, argv, SENDMAIL_MODE_MAILQ);
	if (argc < 2) {
		usage(stderr);
		return 64;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("petrel %s (%s)\n", PETREL_VERSION,
		    OpenSSL_version(OPENSSL_VERSION));
		return 0;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "sendmail") == 0)
		return sendmail_main(argc - 1, argv + 1, SENDMAIL_MODE_SENDMAIL);
	if (strcmp(argv[1], "serve") == 0) {
		if (parse_opts(argc, argv, &cfgpath, &foreground, 1, NULL,
		    NULL) == -1)
			return 64;
		return cmd_serve(cfgpath, foreground);
	}
	if (strcmp(argv[1], "check-config") == 0) {
		struct config *cfg;
		if (parse_opts(argc, argv, &cfgpath, &foreground, 0, NULL,
		    NULL) == -1)
			return 64;
		if ((cfg = load_config(cfgpath)) == NULL)
			return 78; /* EX_CONFIG */
		config_print(cfg, stdout);
		fprintf(stderr, "petrel: configuration %s is valid\n",
		    cfgpath ? cfgpath : "(embedded defaults)");
		config_free(cfg);
		return 0;
	}
	if (strcmp(argv[1], "queue") == 0) {
		if (parse_opts(argc, argv, &cfgpath, &foreground, 0, NULL,
		    &summary) == -1)
			return 64;
		return cmd_admin(cfgpath, summary ? "summary" : "queue", !summary);
	}
	if (strcmp(argv[1], "status") == 0 || strcmp(argv[1], "flush") == 0) {
		int flush = argv[1][0] == 'f';
		if (parse_opts(argc, argv, &cfgpath, &foreground, 0,
		    flush ? &pos : NULL, NULL) == -1)
			return 64;
		snprintf(req, sizeof(req), "%s%s%s", argv[1], pos ? " " : "",
		    pos ? pos : "");
		return cmd_admin(cfgpath, req, 0);
	}
	for (size_t i = 0; i < sizeof(idcmds) / sizeof(idcmds[0]); i++) {
		if (strcmp(argv[1], idcmds[i]) != 0)
			continue;
		if (parse_opts(argc, argv, &cfgpath, &foreground, 0, &pos,
		    NULL) == -1)
			return 64;
		if (pos == NULL) {
			fprintf(stderr, "petrel %s: a queue id is required\n",
			    argv[1]);
			return 64;
		}
		snprintf(req, sizeof(req), "%s %s", argv[1], pos);
		return cmd_admin(cfgpath, req, 0);
	}
	fprintf(stderr, "petrel: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 64;
}
