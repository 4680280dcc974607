/*
 * main.c - the `petrel` command: subcommand dispatch and the daemon's
 * start-up and shut-down (config, log, spool, listeners, event loop,
 * signals).
 *
 *   petrel serve [-c FILE] [-f]     run the daemon (-f: stay in foreground)
 *   petrel check-config [-c FILE]   validate and print the configuration
 *   petrel queue [-c FILE]          list the spool (daemon not needed)
 *   petrel --version
 *
 * Without -c, Petrel runs on its embedded defaults (config.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "dns.h"
#include "listener.h"
#include "log.h"
#include "queue.h"
#include "queue_list.h"
#include "smtp_client.h"
#include "smtp_server.h"
#include "spool.h"
#include "tls.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: petrel serve [-c FILE] [-f]\n"
	    "       petrel check-config [-c FILE]\n"
	    "       petrel queue [-c FILE]\n"
	    "       petrel --version\n");
}

/* Parse "-c FILE" and "-f" after the subcommand. */
static int
parse_opts(int argc, char **argv, const char **cfgpath, int *foreground,
           int allow_f)
{
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			*cfgpath = argv[++i];
		} else if (allow_f && strcmp(argv[i], "-f") == 0) {
			*foreground = 1;
		} else {
			fprintf(stderr, "petrel %s: unknown argument '%s'\n",
			    argv[1], argv[i]);
			usage(stderr);
			return -1;
		}
	}
	return 0;
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

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct event_base *base = arg;

	log_info("received signal %d, shutting down", (int)sig);
	event_base_loopexit(base, NULL);
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
	struct dns *dns = NULL;
	struct queue *q = NULL;
	struct event *ev_term = NULL, *ev_int = NULL;
	char err[1024];
	int rc = 1;

	if (cfg == NULL)
		return 1;
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
	if (!foreground && daemon(1, strcmp(cfg->log_file, "-") == 0) == -1) {
		fprintf(stderr, "petrel: daemon: %s\n", strerror(errno));
		goto done;
	}
	ev_term = evsignal_new(base, SIGTERM, on_signal, base);
	ev_int = evsignal_new(base, SIGINT, on_signal, base);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	log_info("petrel %s started, pid %d, spool %s, %s configuration",
	    PETREL_VERSION, (int)getpid(), cfg->spool_dir,
	    cfg->path ? cfg->path : "embedded");
	queue_load(q);
	event_base_dispatch(base);
	rc = 0;
done:
	listeners_close(ls);
	smtp_server_free(srv);
	queue_free(q);
	dns_free(dns);
	mta_tls_cleanup();
	tls_cache_clear();
	spool_close(sp); /* finishes commits in progress: nothing lost */
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	if (base)
		event_base_free(base);
	if (rc == 0)
		log_info("petrel stopped");
	log_close();
	config_free(cfg);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *cfgpath = NULL;
	int foreground = 0;

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
	if (strcmp(argv[1], "serve") == 0) {
		if (parse_opts(argc, argv, &cfgpath, &foreground, 1) == -1)
			return 64;
		return cmd_serve(cfgpath, foreground);
	}
	if (strcmp(argv[1], "check-config") == 0) {
		struct config *cfg;
		if (parse_opts(argc, argv, &cfgpath, &foreground, 0) == -1)
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
		struct config *cfg;
		int r;
		if (parse_opts(argc, argv, &cfgpath, &foreground, 0) == -1)
			return 64;
		if ((cfg = load_config(cfgpath)) == NULL)
			return 78;
		r = queue_list(cfg->spool_dir, stdout);
		config_free(cfg);
		return r == 0 ? 0 : 1;
	}
	fprintf(stderr, "petrel: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 64;
}
