/*
 * test_config.c - unit tests for config.c: embedded defaults, every key's
 * good and bad values with the exact error messages (file, line, section,
 * key, what was expected, what was given), sections and their errors, the
 * line reader (indentation, list continuation lines, long lines, NUL, CRLF,
 * BOM), files, config_print round trips, local domains and host:port;
 * delivery: top-level keys (smarthost, dns_resolver, helo_name, queue and
 * retry times), [destination PATTERN] sections and config_find_dest().
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define ERRLEN 512

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

static struct config *
load_ok(const char *text)
{
	struct config *cfg = NULL;
	char err[ERRLEN] = "";

	if (config_load_string(text, "t.conf", &cfg, err, sizeof(err)) != 0)
		fail_msg("unexpected error: %s\n--- input:\n%s", err, text);
	assert_non_null(cfg);
	return cfg;
}

/* The load must fail with exactly the message want. */
static void
load_err(const char *text, const char *want)
{
	struct config *cfg = (struct config *)&cfg;
	char err[ERRLEN] = "";

	if (config_load_string(text, "t.conf", &cfg, err, sizeof(err)) != -1) {
		config_free(cfg);
		fail_msg("accepted:\n%s", text);
	}
	assert_null(cfg);
	assert_string_equal(err, want);
}

/* "[listen t]" with an address and "key = value" on line 3. */
static struct config *
listen_kv(const char *key, const char *value)
{
	char text[1024];

	snprintf(text, sizeof(text),
	    "[listen t]\naddress = 127.0.0.1:25\n%s = %s\n", key, value);
	return load_ok(text);
}

/* As listen_kv() but must fail with "t.conf:3: [listen t] key: why". */
static void
listen_kv_err(const char *key, const char *value, const char *why)
{
	char text[1024], want[1024];

	snprintf(text, sizeof(text),
	    "[listen t]\naddress = 127.0.0.1:25\n%s = %s\n", key, value);
	snprintf(want, sizeof(want), "t.conf:3: [listen t] %s: %s", key, why);
	load_err(text, want);
}

static void
top_kv_err(const char *key, const char *value, const char *why)
{
	char text[1024], want[1024];

	snprintf(text, sizeof(text), "# top\n%s = %s\n", key, value);
	snprintf(want, sizeof(want), "t.conf:2: %s: %s", key, why);
	load_err(text, want);
}

static void
relay_kv_err(const char *key, const char *value, const char *why)
{
	char text[1024], want[1024];

	snprintf(text, sizeof(text), "[relay]\n%s = %s\n", key, value);
	snprintf(want, sizeof(want), "t.conf:2: [relay] %s: %s", key, why);
	load_err(text, want);
}

/* "[destination example.org]" with "key = value" on line 2. */
static struct config *
dest_kv(const char *key, const char *value)
{
	char text[1024];

	snprintf(text, sizeof(text), "[destination example.org]\n%s = %s\n",
	    key, value);
	return load_ok(text);
}

/* As dest_kv() but must fail with "t.conf:2: [destination example.org]
 * key: why". */
static void
dest_kv_err(const char *key, const char *value, const char *why)
{
	char text[1024], want[1024];

	snprintf(text, sizeof(text), "[destination example.org]\n%s = %s\n",
	    key, value);
	snprintf(want, sizeof(want),
	    "t.conf:2: [destination example.org] %s: %s", key, why);
	load_err(text, want);
}

/* The message for a bad smarthost or route entry. */
static const char *
hostport_why(const char *value, const char *reason)
{
	static char buf[512];

	snprintf(buf, sizeof(buf),
	    "bad host:port '%s': %s (expected a host name, IPv4 address or "
	    "[IPv6 address], ':' and a port, e.g. mx.example.org:25 or "
	    "[2001:db8::1]:25)",
	    value, reason);
	return buf;
}

static int
port_of(const struct listen_conf *l)
{
	if (l->sa.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&l->sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&l->sa)->sin6_port);
}

static const char *
ip_of(const struct listen_conf *l)
{
	static char buf[INET6_ADDRSTRLEN];
	const void *a;

	if (l->sa.ss_family == AF_INET)
		a = &((const struct sockaddr_in *)&l->sa)->sin_addr;
	else
		a = &((const struct sockaddr_in6 *)&l->sa)->sin6_addr;
	assert_non_null(inet_ntop(l->sa.ss_family, a, buf, sizeof(buf)));
	return buf;
}

static const char *
cidr_at(const struct cidr_list *l, size_t i)
{
	static char buf[64];

	assert_true(i < l->n);
	cidr_format(&l->v[i], buf, sizeof(buf));
	return buf;
}

static int
match_addr(const struct cidr_list *l, const char *addr)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else {
		assert_int_equal(
		    inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	return cidr_list_match(l, (struct sockaddr *)&ss);
}

/* config_print() into a new string. */
static char *
print_str(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);

	assert_non_null(fp);
	config_print(cfg, fp);
	assert_int_equal(fclose(fp), 0);
	assert_non_null(buf);
	return buf;
}

static void
assert_str_or_null_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void
assert_cidrs_equal(const struct cidr_list *a, const struct cidr_list *b)
{
	size_t i;

	assert_int_equal(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		assert_int_equal(a->v[i].family, b->v[i].family);
		assert_int_equal(a->v[i].prefix, b->v[i].prefix);
		assert_memory_equal(a->v[i].addr, b->v[i].addr, 16);
	}
}

static void
assert_dest_equal(const struct dest_conf *x, const struct dest_conf *y)
{
	size_t i;

	assert_string_equal(x->pattern, y->pattern);
	assert_int_equal(x->nroute, y->nroute);
	for (i = 0; i < x->nroute; i++)
		assert_string_equal(x->route[i], y->route[i]);
	assert_int_equal(x->tls, y->tls);
	assert_int_equal(x->pipelining, y->pipelining);
	assert_int_equal(x->chunking, y->chunking);
	assert_int_equal(x->port, y->port);
	assert_int_equal(x->max_connections, y->max_connections);
	assert_int_equal(
	    x->max_messages_per_connection, y->max_messages_per_connection);
	assert_int_equal(x->max_connection_age, y->max_connection_age);
	assert_int_equal(x->idle_timeout, y->idle_timeout);
	assert_int_equal(x->pipeline_window, y->pipeline_window);
	assert_int_equal(x->connect_timeout, y->connect_timeout);
	assert_int_equal(x->reply_timeout, y->reply_timeout);
	assert_int_equal(x->data_timeout, y->data_timeout);
}

/* Every field except path. */
static void
assert_config_equal(const struct config *a, const struct config *b)
{
	size_t i;

	assert_string_equal(a->hostname, b->hostname);
	assert_string_equal(a->spool_dir, b->spool_dir);
	assert_string_equal(a->log_file, b->log_file);
	assert_int_equal(a->max_sessions, b->max_sessions);
	assert_int_equal(a->spool_workers, b->spool_workers);
	assert_int_equal(a->nlisten, b->nlisten);
	for (i = 0; i < a->nlisten; i++) {
		const struct listen_conf *x = &a->listen[i], *y = &b->listen[i];

		assert_string_equal(x->name, y->name);
		assert_string_equal(x->address, y->address);
		assert_int_equal(x->salen, y->salen);
		assert_memory_equal(&x->sa, &y->sa, x->salen);
		assert_str_or_null_equal(x->tls_cert, y->tls_cert);
		assert_str_or_null_equal(x->tls_key, y->tls_key);
		assert_int_equal(x->pipelining, y->pipelining);
		assert_int_equal(x->chunking, y->chunking);
		assert_int_equal(x->starttls, y->starttls);
		assert_int_equal(x->enforce_sync, y->enforce_sync);
		assert_cidrs_equal(
		    &x->sync_exempt_networks, &y->sync_exempt_networks);
		assert_int_equal(x->bare_lf, y->bare_lf);
		assert_int_equal(x->max_message_size, y->max_message_size);
		assert_int_equal(x->max_recipients, y->max_recipients);
		assert_int_equal(x->max_messages, y->max_messages);
		assert_int_equal(x->max_errors, y->max_errors);
		assert_int_equal(x->max_line_length, y->max_line_length);
		assert_int_equal(x->command_timeout, y->command_timeout);
		assert_int_equal(x->data_timeout, y->data_timeout);
		assert_int_equal(x->greeting_delay_ms, y->greeting_delay_ms);
	}
	assert_cidrs_equal(&a->relay_networks, &b->relay_networks);
	assert_int_equal(a->nlocal_domains, b->nlocal_domains);
	for (i = 0; i < a->nlocal_domains; i++)
		assert_string_equal(a->local_domains[i], b->local_domains[i]);

	assert_str_or_null_equal(a->smarthost, b->smarthost);
	assert_str_or_null_equal(a->dns_resolver, b->dns_resolver);
	assert_string_equal(a->helo_name, b->helo_name);
	assert_int_equal(a->max_queue_time, b->max_queue_time);
	assert_int_equal(a->retry_initial, b->retry_initial);
	assert_int_equal(a->retry_max, b->retry_max);
	assert_int_equal(a->queue_only, b->queue_only);
	assert_dest_equal(&a->dest_default, &b->dest_default);
	assert_int_equal(a->ndest, b->ndest);
	for (i = 0; i < a->ndest; i++)
		assert_dest_equal(&a->dest[i], &b->dest[i]);
}

/* print, load the text, compare; print again: same text. */
static void
assert_round_trip(const struct config *cfg)
{
	struct config *again;
	char *text, *text2;

	text = print_str(cfg);
	again = load_ok(text);
	assert_config_equal(cfg, again);
	text2 = print_str(again);
	assert_string_equal(text, text2);
	free(text);
	free(text2);
	config_free(again);
}

static void
assert_listener_defaults(const struct listen_conf *l)
{
	assert_null(l->tls_cert);
	assert_null(l->tls_key);
	assert_int_equal(l->pipelining, 1);
	assert_int_equal(l->chunking, 1);
	assert_int_equal(l->starttls, 1);
	assert_int_equal(l->enforce_sync, 1);
	assert_int_equal(l->sync_exempt_networks.n, 0);
	assert_int_equal(l->bare_lf, BARE_LF_REJECT);
	assert_int_equal(l->max_message_size, 52428800);
	assert_int_equal(l->max_recipients, 1000);
	assert_int_equal(l->max_messages, 1000);
	assert_int_equal(l->max_errors, 20);
	assert_int_equal(l->max_line_length, 1000);
	assert_int_equal(l->command_timeout, 300);
	assert_int_equal(l->data_timeout, 180);
	assert_int_equal(l->greeting_delay_ms, 0);
}

/* The built-in destination defaults, with pattern. */
static void
assert_dest_defaults(const struct dest_conf *d, const char *pattern)
{
	assert_string_equal(d->pattern, pattern);
	assert_null(d->route);
	assert_int_equal(d->nroute, 0);
	assert_int_equal(d->tls, TLS_POLICY_MAY);
	assert_int_equal(d->pipelining, 1);
	assert_int_equal(d->chunking, 1);
	assert_int_equal(d->port, 25);
	assert_int_equal(d->max_connections, 10);
	assert_int_equal(d->max_messages_per_connection, 1000);
	assert_int_equal(d->max_connection_age, 300);
	assert_int_equal(d->idle_timeout, 10);
	assert_int_equal(d->pipeline_window, 8);
	assert_int_equal(d->connect_timeout, 30);
	assert_int_equal(d->reply_timeout, 300);
	assert_int_equal(d->data_timeout, 600);
}

static void
assert_defaults(const struct config *cfg)
{
	const struct listen_conf *l;

	assert_non_null(cfg->hostname);
	assert_true(cfg->hostname[0] != '\0');
	assert_string_equal(cfg->spool_dir, "./var/spool");
	assert_string_equal(cfg->log_file, "-");
	assert_int_equal(cfg->max_sessions, 1000);
	assert_int_equal(cfg->spool_workers, 2);

	assert_int_equal(cfg->nlisten, 1);
	l = &cfg->listen[0];
	assert_string_equal(l->name, "smtp");
	assert_string_equal(l->address, "127.0.0.1:2525");
	assert_int_equal(l->sa.ss_family, AF_INET);
	assert_int_equal(l->salen, sizeof(struct sockaddr_in));
	assert_string_equal(ip_of(l), "127.0.0.1");
	assert_int_equal(port_of(l), 2525);
	assert_listener_defaults(l);

	assert_int_equal(cfg->relay_networks.n, 2);
	assert_string_equal(cidr_at(&cfg->relay_networks, 0), "127.0.0.0/8");
	assert_string_equal(cidr_at(&cfg->relay_networks, 1), "::1/128");
	assert_int_equal(cfg->nlocal_domains, 0);
	assert_null(cfg->local_domains);

	assert_null(cfg->smarthost);
	assert_null(cfg->dns_resolver);
	assert_non_null(cfg->helo_name);
	assert_string_equal(cfg->helo_name, cfg->hostname);
	assert_ptr_not_equal(cfg->helo_name, cfg->hostname); /* own copy */
	assert_int_equal(cfg->max_queue_time, 5 * 86400);
	assert_int_equal(cfg->retry_initial, 60);
	assert_int_equal(cfg->retry_max, 3600);
	assert_int_equal(cfg->queue_only, 0);
	assert_dest_defaults(&cfg->dest_default, "*");
	assert_int_equal(cfg->ndest, 0);
	assert_null(cfg->dest);
	assert_ptr_equal(
	    config_find_dest(cfg, "example.org"), &cfg->dest_default);
}

/* ------------------------------------------------------------------ */
/* Defaults                                                             */

static void
test_defaults_no_file(void **state)
{
	struct config *cfg = NULL;
	char err[ERRLEN] = "";

	assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), 0);
	assert_non_null(cfg);
	assert_null(cfg->path);
	assert_defaults(cfg);
	config_free(cfg);
}

static void
test_defaults_empty_text(void **state)
{
	struct config *cfg;

	cfg = load_ok("");
	assert_defaults(cfg);
	config_free(cfg);
	cfg = load_ok("; only comments\n# and blank lines\n\n   \n");
	assert_defaults(cfg);
	config_free(cfg);
}

static void
test_default_hostname(void **state)
{
	struct config *cfg;
	char host[256];
	size_t i;
	int ok;

	memset(host, 0, sizeof(host));
	assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
	ok = host[0] != '\0';
	for (i = 0; host[i] != '\0'; i++)
		if (host[i] <= ' ' || host[i] >= 0x7f)
			ok = 0;
	cfg = load_ok("");
	assert_string_equal(cfg->hostname, ok ? host : "localhost");
	config_free(cfg);
}

static void
test_default_listener(void **state)
{
	struct config *cfg;

	/* Only when there is no [listen] section. */
	cfg = load_ok("hostname = mx.example\n[relay]\n");
	assert_int_equal(cfg->nlisten, 1);
	assert_string_equal(cfg->listen[0].name, "smtp");
	assert_string_equal(cfg->listen[0].address, "127.0.0.1:2525");
	config_free(cfg);

	cfg = load_ok("[listen submission]\naddress = 0.0.0.0:587\n");
	assert_int_equal(cfg->nlisten, 1);
	assert_string_equal(cfg->listen[0].name, "submission");
	assert_string_equal(ip_of(&cfg->listen[0]), "0.0.0.0");
	assert_int_equal(port_of(&cfg->listen[0]), 587);
	assert_listener_defaults(&cfg->listen[0]);
	config_free(cfg);
}

static void
test_several_listeners(void **state)
{
	struct config *cfg;

	cfg = load_ok("[listen a]\naddress = 127.0.0.1:25\npipelining = no\n"
		      "[relay]\n[listen b]\naddress = [::1]:2525\n"
		      "[listen c.d-e_f]\naddress = 192.0.2.1:26\n");
	assert_int_equal(cfg->nlisten, 3);
	assert_string_equal(cfg->listen[0].name, "a");
	assert_int_equal(cfg->listen[0].pipelining, 0);
	assert_string_equal(cfg->listen[1].name, "b");
	assert_int_equal(cfg->listen[1].pipelining, 1);
	assert_int_equal(cfg->listen[1].sa.ss_family, AF_INET6);
	assert_string_equal(cfg->listen[2].name, "c.d-e_f");
	assert_int_equal(port_of(&cfg->listen[2]), 26);
	config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* Top-level keys                                                       */

static void
test_top_keys(void **state)
{
	struct config *cfg;

	cfg = load_ok(
	    "hostname = MX1.example.com\nspool_dir = /var/spool/"
	    "petrel\nlog_file = /var/log/petrel main.log\nmax_sessions = 1\n"
	    "spool_workers = 64\n");
	assert_string_equal(cfg->hostname, "MX1.example.com");
	assert_string_equal(cfg->spool_dir, "/var/spool/petrel");
	assert_string_equal(cfg->log_file, "/var/log/petrel main.log");
	assert_int_equal(cfg->max_sessions, 1);
	assert_int_equal(cfg->spool_workers, 64);
	config_free(cfg);

	cfg = load_ok("max_sessions = 4294967295\nspool_workers = 1\n"
		      "hostname = [192.0.2.1]\n");
	assert_int_equal(cfg->max_sessions, UINT_MAX);
	assert_int_equal(cfg->spool_workers, 1);
	assert_string_equal(cfg->hostname, "[192.0.2.1]");
	config_free(cfg);
}

static void
test_top_keys_bad(void **state)
{
	top_kv_err("hostname", "mx example",
	    "expected a host name "
	    "(printable ASCII without spaces), got 'mx example'");
	top_kv_err("hostname", "",
	    "expected a host name (printable ASCII without spaces), got ''");
	top_kv_err("hostname", "m\xc3\xa9l.example",
	    "expected a host name "
	    "(printable ASCII without spaces), got 'm\\xc3\\xa9l.example'");
	top_kv_err("spool_dir", "",
	    "expected a non-empty value without control characters, got ''");
	top_kv_err("log_file", "a\001b",
	    "expected a non-empty value "
	    "without control characters, got 'a\\x01b'");
	/* "key =;x" would print as "key = ;x", a comment. */
	load_err("log_file =;x\n", "t.conf:1: log_file: a value cannot start "
				   "with ';' (it would be read back as a "
				   "comment), got ';x'");
	load_err("hostname =;\n", "t.conf:1: hostname: a value cannot start "
				  "with ';' (it would be read back as a "
				  "comment), got ';'");
	top_kv_err("max_sessions", "0", "expected an integer >= 1, got '0'");
	top_kv_err("max_sessions", "-1", "expected an integer >= 1, got '-1'");
	top_kv_err("max_sessions", "+5", "expected an integer >= 1, got '+5'");
	top_kv_err("max_sessions", "4294967296",
	    "expected an integer >= 1, got '4294967296'");
	top_kv_err("max_sessions", "99999999999999999999999",
	    "expected an integer >= 1, got '99999999999999999999999'");
	top_kv_err(
	    "max_sessions", "10x", "expected an integer >= 1, got '10x'");
	top_kv_err(
	    "max_sessions", "1 0", "expected an integer >= 1, got '1 0'");
	top_kv_err(
	    "max_sessions", "0x10", "expected an integer >= 1, got '0x10'");
	top_kv_err(
	    "spool_workers", "0", "expected an integer from 1 to 64, got '0'");
	top_kv_err("spool_workers", "65",
	    "expected an integer from 1 to 64, got '65'");
}

/* ------------------------------------------------------------------ */
/* [listen] keys                                                        */

static void
test_listen_bools(void **state)
{
	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
	    {"pipelining", offsetof(struct listen_conf, pipelining)},
	    {"chunking", offsetof(struct listen_conf, chunking)},
	    {"starttls", offsetof(struct listen_conf, starttls)},
	    {"enforce_sync", offsetof(struct listen_conf, enforce_sync)},
	};
	static const struct {
		const char *text;
		int value;
	} values[] = {
	    {"yes", 1},
	    {"no", 0},
	    {"true", 1},
	    {"false", 0},
	    {"1", 1},
	    {"0", 0},
	    {"YES", 1},
	    {"No", 0},
	};
	struct config *cfg;
	size_t i, j;
	char why[256];

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		for (j = 0; j < sizeof(values) / sizeof(values[0]); j++) {
			cfg = listen_kv(keys[i].key, values[j].text);
			assert_int_equal(
			    *(int *)(void *)((char *)&cfg->listen[0] +
					     keys[i].off),
			    values[j].value);
			config_free(cfg);
		}
		listen_kv_err(
		    keys[i].key, "maybe", "expected yes or no, got 'maybe'");
		listen_kv_err(
		    keys[i].key, "on", "expected yes or no, got 'on'");
		listen_kv_err(keys[i].key, "2", "expected yes or no, got '2'");
		snprintf(why, sizeof(why), "expected yes or no, got ''");
		listen_kv_err(keys[i].key, "", why);
	}
}

static void
test_listen_bool_message_example(void **state)
{
	/* The example of config.h, to the byte. */
	load_err("# petrel\n\n[listen smtp]\naddress = 0.0.0.0:25\n\n\n\n\n\n\n"
		 "\npipelining = maybe\n",
	    "t.conf:12: [listen smtp] pipelining: expected yes or no, got "
	    "'maybe'");
}

static void
test_listen_bare_lf(void **state)
{
	struct config *cfg;

	cfg = listen_kv("bare_lf", "normalize");
	assert_int_equal(cfg->listen[0].bare_lf, BARE_LF_NORMALIZE);
	config_free(cfg);
	cfg = listen_kv("bare_lf", "reject");
	assert_int_equal(cfg->listen[0].bare_lf, BARE_LF_REJECT);
	config_free(cfg);
	listen_kv_err(
	    "bare_lf", "accept", "expected reject or normalize, got 'accept'");
	listen_kv_err(
	    "bare_lf", "Reject", "expected reject or normalize, got 'Reject'");
	listen_kv_err(
	    "bare_lf", "yes", "expected reject or normalize, got 'yes'");
}

static void
test_listen_counts(void **state)
{
	static const char *const keys[] = {
	    "max_recipients",
	    "max_messages",
	    "max_errors",
	};
	struct config *cfg;
	size_t i;

	cfg = listen_kv("max_recipients", "1");
	assert_int_equal(cfg->listen[0].max_recipients, 1);
	config_free(cfg);
	cfg = listen_kv("max_messages", "4294967295");
	assert_int_equal(cfg->listen[0].max_messages, UINT_MAX);
	config_free(cfg);
	cfg = listen_kv("max_errors", "007");
	assert_int_equal(cfg->listen[0].max_errors, 7);
	config_free(cfg);

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		listen_kv_err(
		    keys[i], "0", "expected an integer >= 1, got '0'");
		listen_kv_err(keys[i], "4294967296",
		    "expected an integer >= 1, got '4294967296'");
		listen_kv_err(
		    keys[i], "-3", "expected an integer >= 1, got '-3'");
		listen_kv_err(
		    keys[i], "many", "expected an integer >= 1, got 'many'");
		listen_kv_err(keys[i], "", "expected an integer >= 1, got ''");
	}
}

static void
test_listen_max_line_length(void **state)
{
	struct config *cfg;

	cfg = listen_kv("max_line_length", "0");
	assert_int_equal(cfg->listen[0].max_line_length, 0);
	config_free(cfg);
	cfg = listen_kv("max_line_length", "80");
	assert_int_equal(cfg->listen[0].max_line_length, 80);
	config_free(cfg);
	cfg = listen_kv("max_line_length", "65536");
	assert_int_equal(cfg->listen[0].max_line_length, 65536);
	config_free(cfg);
	listen_kv_err("max_line_length", "79",
	    "expected 0 (unlimited) or an integer >= 80, got '79'");
	listen_kv_err("max_line_length", "1",
	    "expected 0 (unlimited) or an integer >= 80, got '1'");
	listen_kv_err("max_line_length", "1K",
	    "expected 0 (unlimited) or an integer >= 80, got '1K'");
}

static void
test_listen_max_message_size(void **state)
{
	static const struct {
		const char *text;
		uint64_t value;
	} good[] = {
	    {"1", 1},
	    {"1000", 1000},
	    {"1K", 1024},
	    {"1k", 1024},
	    {"50M", 52428800},
	    {"2G", 2147483648ULL},
	    {"16g", 17179869184ULL},
	    {"18446744073709551615", UINT64_MAX},
	    {"17179869183G", 17179869183ULL << 30},
	};
	static const char *const bad[] = {
	    "0",
	    "0K",
	    "-1",
	    "+1",
	    "1.5M",
	    "1KB",
	    "1 M",
	    "M",
	    "1T",
	    "18446744073709551616",
	    "17179869184G",
	    "",
	};
	struct config *cfg;
	char why[256];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cfg = listen_kv("max_message_size", good[i].text);
		assert_int_equal(
		    cfg->listen[0].max_message_size, good[i].value);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(why, sizeof(why),
		    "expected a size >= 1 (bytes, or "
		    "with a suffix K, M or G, e.g. 50M), got '%s'",
		    bad[i]);
		listen_kv_err("max_message_size", bad[i], why);
	}
}

static void
test_listen_timeouts(void **state)
{
	static const char *const keys[] = {"command_timeout", "data_timeout"};
	static const struct {
		const char *text;
		unsigned value;
	} good[] = {
	    {"1", 1},
	    {"1s", 1},
	    {"300", 300},
	    {"2m", 120},
	    {"1h", 3600},
	    {"1000ms", 1},
	    {"60000ms", 60},
	    {"1d", 86400},
	    {"4294967295s", UINT_MAX},
	};
	static const char *const bad[] = {
	    "0",
	    "0s",
	    "999ms",
	    "1w",
	    "1D",
	    "1 s",
	    "-1",
	    "s",
	    "",
	    "1.5s",
	    "1S",
	    "4294967296s",
	    "99999999999999999999h",
	};
	struct config *cfg;
	char why[256];
	size_t i, j;

	for (i = 0; i < 2; i++) {
		for (j = 0; j < sizeof(good) / sizeof(good[0]); j++) {
			cfg = listen_kv(keys[i], good[j].text);
			assert_int_equal(i == 0 ? cfg->listen[0].command_timeout
						: cfg->listen[0].data_timeout,
			    good[j].value);
			config_free(cfg);
		}
		for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			snprintf(why, sizeof(why),
			    "expected a duration >= 1s "
			    "(a number with unit ms, s, m, h or d, e.g. 30s), "
			    "got '%s'",
			    bad[j]);
			listen_kv_err(keys[i], bad[j], why);
		}
		listen_kv_err(keys[i], "1500ms",
		    "expected a whole number of seconds, got '1500ms'");
	}
}

static void
test_listen_greeting_delay(void **state)
{
	static const struct {
		const char *text;
		unsigned value;
	} good[] = {
	    {"0", 0},
	    {"0ms", 0},
	    {"1500ms", 1500},
	    {"2", 2000},
	    {"60s", 60000},
	    {"1m", 60000},
	    {"60000ms", 60000},
	};
	static const char *const bad[] = {
	    "61s",
	    "60001ms",
	    "2m",
	    "1h",
	    "1d",
	    "-1",
	    "fast",
	    "",
	};
	struct config *cfg;
	char why[256];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cfg = listen_kv("greeting_delay", good[i].text);
		assert_int_equal(
		    cfg->listen[0].greeting_delay_ms, good[i].value);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(why, sizeof(why),
		    "expected a duration from 0s to 1m "
		    "(a number with unit ms, s, m, h or d, e.g. 30s), got "
		    "'%s'",
		    bad[i]);
		listen_kv_err("greeting_delay", bad[i], why);
	}
	/* The key is greeting_delay, not the field name. */
	load_err("[listen t]\naddress = 127.0.0.1:25\ngreeting_delay_ms = 5\n",
	    "t.conf:3: [listen t] greeting_delay_ms: unknown key");
}

static void
test_listen_address(void **state)
{
	static const char *const bad[] = {
	    "127.0.0.1",
	    "127.0.0.1:",
	    ":25",
	    "mx.example.com:25",
	    "[::1]",
	    "[::1]25",
	    "::1:25",
	    "::1",
	    "127.0.0.1:0",
	    "127.0.0.1:65536",
	    "127.0.0.1:+25",
	    "127.0.0.1:025x",
	    "[127.0.0.1]:25",
	    "256.0.0.1:25",
	    "[fe80::1%eth0]:25",
	    "127.0.0.1:25 ",
	    "127.0.0.1:123456",
	    "[::1]:",
	    "",
	};
	struct config *cfg;
	const struct sockaddr_in6 *sin6;
	char text[256], want[512];
	size_t i;

	cfg = load_ok("[listen v6]\naddress = [2001:db8::25]:587\n");
	assert_string_equal(cfg->listen[0].address, "[2001:db8::25]:587");
	assert_int_equal(cfg->listen[0].sa.ss_family, AF_INET6);
	assert_int_equal(cfg->listen[0].salen, sizeof(struct sockaddr_in6));
	sin6 = (const struct sockaddr_in6 *)&cfg->listen[0].sa;
	assert_int_equal(ntohs(sin6->sin6_port), 587);
	assert_string_equal(ip_of(&cfg->listen[0]), "2001:db8::25");
	config_free(cfg);

	cfg = load_ok("[listen any6]\naddress = [::]:65535\n");
	assert_string_equal(ip_of(&cfg->listen[0]), "::");
	assert_int_equal(port_of(&cfg->listen[0]), 65535);
	config_free(cfg);

	cfg = load_ok("[listen any]\naddress = 0.0.0.0:1\n");
	assert_int_equal(cfg->listen[0].sa.ss_family, AF_INET);
	assert_int_equal(cfg->listen[0].salen, sizeof(struct sockaddr_in));
	assert_int_equal(port_of(&cfg->listen[0]), 1);
	config_free(cfg);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(
		    text, sizeof(text), "[listen t]\naddress = %s\n", bad[i]);
		/* inih strips the trailing blank of "127.0.0.1:25 ". */
		if (strcmp(bad[i], "127.0.0.1:25 ") == 0)
			continue;
		snprintf(want, sizeof(want),
		    "t.conf:2: [listen t] address: "
		    "expected a numeric address and port, e.g. 192.0.2.1:25 or "
		    "[2001:db8::1]:25 (port 1 to 65535), got '%s'",
		    bad[i]);
		load_err(text, want);
	}
}

static void
test_listen_address_required(void **state)
{
	load_err("hostname = a\n[listen x]\npipelining = no\n",
	    "t.conf:2: [listen x] address: required in this section");
	/* An empty section, then another one. */
	load_err("[listen x]\n[relay]\n",
	    "t.conf:1: [listen x] address: required in this section");
	/* At the end of the input. */
	load_err("[relay]\n\n[listen last]\n",
	    "t.conf:3: [listen last] address: required in this section");
}

static void
test_listen_tls(void **state)
{
	struct config *cfg;

	cfg = load_ok("[listen t]\naddress = 127.0.0.1:465\n"
		      "tls_cert = /etc/petrel/cert.pem\ntls_key = key.pem\n");
	assert_string_equal(cfg->listen[0].tls_cert, "/etc/petrel/cert.pem");
	assert_string_equal(cfg->listen[0].tls_key, "key.pem");
	config_free(cfg);

	/* Files are not opened by config. */
	cfg = load_ok(
	    "[listen t]\naddress = 127.0.0.1:465\n"
	    "tls_cert = /nonexistent/cert.pem\ntls_key = /nonexistent/k\n");
	config_free(cfg);

	load_err("[listen t]\naddress = 127.0.0.1:465\ntls_cert = c.pem\n",
	    "t.conf:1: [listen t] tls_key: required when tls_cert is set");
	load_err("[listen t]\naddress = 127.0.0.1:465\ntls_key = k.pem\n"
		 "[relay]\n",
	    "t.conf:1: [listen t] tls_cert: required when tls_key is set");
	listen_kv_err("tls_cert", "",
	    "expected a non-empty value without control characters, got ''");
}

static void
test_listen_sync_exempt(void **state)
{
	struct config *cfg;

	cfg = listen_kv("sync_exempt_networks", "192.0.2.0/24, 2001:db8::/32");
	assert_int_equal(cfg->listen[0].sync_exempt_networks.n, 2);
	assert_string_equal(
	    cidr_at(&cfg->listen[0].sync_exempt_networks, 0), "192.0.2.0/24");
	assert_string_equal(
	    cidr_at(&cfg->listen[0].sync_exempt_networks, 1), "2001:db8::/32");
	assert_true(
	    match_addr(&cfg->listen[0].sync_exempt_networks, "192.0.2.9"));
	assert_false(
	    match_addr(&cfg->listen[0].sync_exempt_networks, "198.51.100.1"));
	config_free(cfg);

	cfg = listen_kv("sync_exempt_networks", "");
	assert_int_equal(cfg->listen[0].sync_exempt_networks.n, 0);
	config_free(cfg);

	listen_kv_err("sync_exempt_networks", "192.0.2.0/24 192.0.2.0/40",
	    "bad network '192.0.2.0/40' (expected address/prefix, e.g. "
	    "192.0.2.0/24 or 2001:db8::/32)");
}

/* ------------------------------------------------------------------ */
/* [relay]                                                              */

static void
test_relay_networks(void **state)
{
	struct config *cfg;

	/* Present: replaces the default. */
	cfg = load_ok("[relay]\nnetworks = 10.0.0.0/8\n");
	assert_int_equal(cfg->relay_networks.n, 1);
	assert_string_equal(cidr_at(&cfg->relay_networks, 0), "10.0.0.0/8");
	assert_true(match_addr(&cfg->relay_networks, "10.1.1.1"));
	assert_true(match_addr(&cfg->relay_networks, "::ffff:10.1.1.1"));
	assert_false(match_addr(&cfg->relay_networks, "127.0.0.1"));
	config_free(cfg);

	/* Empty: nobody relays. */
	cfg = load_ok("[relay]\nnetworks =\n");
	assert_int_equal(cfg->relay_networks.n, 0);
	assert_false(match_addr(&cfg->relay_networks, "127.0.0.1"));
	config_free(cfg);

	/* [relay] without the key: default kept. */
	cfg = load_ok("[relay]\nlocal_domains = example.com\n");
	assert_int_equal(cfg->relay_networks.n, 2);
	assert_true(match_addr(&cfg->relay_networks, "127.0.0.1"));
	assert_true(match_addr(&cfg->relay_networks, "::1"));
	config_free(cfg);

	/* Host bits are cleared. */
	cfg = load_ok("[relay]\nnetworks = 192.0.2.77/24 2001:db8::1/64\n");
	assert_string_equal(cidr_at(&cfg->relay_networks, 0), "192.0.2.0/24");
	assert_string_equal(cidr_at(&cfg->relay_networks, 1), "2001:db8::/64");
	config_free(cfg);

	relay_kv_err("networks", "10.0.0.0/33",
	    "bad network '10.0.0.0/33' "
	    "(expected address/prefix, e.g. 192.0.2.0/24 or 2001:db8::/32)");
	relay_kv_err("networks", "10.0.0.0/8, localhost",
	    "bad network "
	    "'localhost' (expected address/prefix, e.g. 192.0.2.0/24 or "
	    "2001:db8::/32)");
	relay_kv_err("networks", "10.0.0.0/8; x",
	    "bad network '10.0.0.0/8;' "
	    "(expected address/prefix, e.g. 192.0.2.0/24 or 2001:db8::/32)");
}

static void
test_relay_local_domains(void **state)
{
	struct config *cfg;

	cfg = load_ok("[relay]\nlocal_domains = Example.COM, mail.example.org"
		      "\tx-1.example\n");
	assert_int_equal(cfg->nlocal_domains, 3);
	assert_string_equal(cfg->local_domains[0], "example.com");
	assert_string_equal(cfg->local_domains[1], "mail.example.org");
	assert_string_equal(cfg->local_domains[2], "x-1.example");
	config_free(cfg);

	cfg = load_ok("[relay]\nlocal_domains =\n");
	assert_int_equal(cfg->nlocal_domains, 0);
	config_free(cfg);

	relay_kv_err("local_domains", "example.com.",
	    "bad domain 'example.com.': trailing dot (expected a domain like "
	    "example.com)");
	relay_kv_err("local_domains", "a.example, b..example",
	    "bad domain "
	    "'b..example': empty label (expected a domain like example.com)");
	relay_kv_err("local_domains", ".example",
	    "bad domain '.example': "
	    "empty label (expected a domain like example.com)");
	relay_kv_err("local_domains", ".",
	    "bad domain '.': trailing dot "
	    "(expected a domain like example.com)");
	relay_kv_err("local_domains", "a_b.example",
	    "bad domain "
	    "'a_b.example': only letters, digits, '-' and '.' are allowed "
	    "(expected a domain like example.com)");
	relay_kv_err("local_domains", "user@example.com",
	    "bad domain "
	    "'user@example.com': only letters, digits, '-' and '.' are allowed"
	    " (expected a domain like example.com)");
	relay_kv_err("local_domains",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaa.example",
	    "bad domain 'aaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...': label longer "
	    "than 63 characters (expected a domain like example.com)");
}

static void
test_is_local_domain(void **state)
{
	struct config *cfg;

	cfg =
	    load_ok("[relay]\nlocal_domains = example.com, Mail.Example.Org\n");
	assert_true(config_is_local_domain(cfg, "example.com"));
	assert_true(config_is_local_domain(cfg, "EXAMPLE.Com"));
	assert_true(config_is_local_domain(cfg, "mail.example.org"));
	assert_false(config_is_local_domain(cfg, "example.org"));
	assert_false(config_is_local_domain(cfg, "sub.example.com"));
	assert_false(config_is_local_domain(cfg, "example.com."));
	assert_false(config_is_local_domain(cfg, "xexample.com"));
	assert_false(config_is_local_domain(cfg, ""));
	assert_false(config_is_local_domain(cfg, NULL));
	assert_false(config_is_local_domain(NULL, "example.com"));
	config_free(cfg);

	cfg = load_ok("");
	assert_false(config_is_local_domain(cfg, "localhost"));
	config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* Sections and syntax                                                  */

static void
test_sections_bad(void **state)
{
	load_err("[listen]\naddress = 127.0.0.1:25\n",
	    "t.conf:1: [listen]: a name is required, e.g. [listen smtp]");
	load_err("[listen   ]\n",
	    "t.conf:1: [listen]: a name is required, e.g. [listen smtp]");
	load_err("[listen smtp]\naddress = 127.0.0.1:25\n\n"
		 "[listen smtp]\naddress = 127.0.0.1:26\n",
	    "t.conf:4: [listen smtp]: duplicate listener name");
	load_err("[listen a b]\n",
	    "t.conf:1: [listen a b]: bad name "
	    "(expected letters, digits, '-', '_' or '.')");
	load_err("[listen a/b]\n",
	    "t.conf:1: [listen a/b]: bad name "
	    "(expected letters, digits, '-', '_' or '.')");
	load_err("[bogus]\n", "t.conf:1: unknown section [bogus] (expected "
			      "[listen NAME], [relay] or [destination "
			      "PATTERN])");
	load_err("hostname = a\n[destinations example.org]\n",
	    "t.conf:2: unknown section [destinations] (expected [listen NAME], "
	    "[relay] or [destination PATTERN])");
	load_err("[Destination *]\n", "t.conf:1: unknown section [Destination] "
				      "(section names are lower case: "
				      "[destination])");
	load_err("[Relay]\n", "t.conf:1: unknown section [Relay] (section "
			      "names are lower case: [relay])");
	load_err("[relay]\nnetworks = ::1\n[relay]\n",
	    "t.conf:3: [relay]: duplicate section (first at line 1)");
	load_err("[relay x]\n", "t.conf:1: [relay x]: [relay] takes no name");
	load_err("[]\n", "t.conf:1: unknown section [] (expected "
			 "[listen NAME], [relay] or [destination PATTERN])");
	load_err("[relay\n", "t.conf:1: syntax error: expected ']' at the "
			     "end of the section header");
	load_err("[relay] x\n", "t.conf:1: syntax error: unexpected text "
				"after ']': 'x'");
}

static void
test_sections_good(void **state)
{
	struct config *cfg;

	/* Blanks inside the brackets and a comment after them. */
	cfg = load_ok("[ listen  mx ] ; the MX\naddress = 127.0.0.1:25\n"
		      "[relay] # relay\n");
	assert_string_equal(cfg->listen[0].name, "mx");
	config_free(cfg);
	/* An empty [relay] is fine. */
	cfg = load_ok("[relay]\n");
	assert_int_equal(cfg->relay_networks.n, 2);
	config_free(cfg);
}

static void
test_unknown_and_duplicate_keys(void **state)
{
	load_err("hostname = a\nbogus = 1\n", "t.conf:2: bogus: unknown key");
	load_err("[listen x]\naddress = 127.0.0.1:25\nbogus = 1\n",
	    "t.conf:3: [listen x] bogus: unknown key");
	load_err(
	    "[relay]\nbogus = 1\n", "t.conf:2: [relay] bogus: unknown key");
	load_err("Hostname = a\n", "t.conf:1: Hostname: unknown key (keys are "
				   "lower case: hostname)");
	load_err("[listen x]\nAddress = 127.0.0.1:25\n",
	    "t.conf:2: [listen x] "
	    "Address: unknown key (keys are lower case: address)");
	load_err("networks = 10.0.0.0/8\n", "t.conf:1: networks: unknown key "
					    "here (it belongs in [relay])");
	load_err("[relay]\nspool_workers = 3\n",
	    "t.conf:2: [relay] "
	    "spool_workers: unknown key here (it belongs at the top, before "
	    "any section)");
	load_err("[relay]\npipelining = no\n",
	    "t.conf:2: [relay] pipelining: unknown key here (it belongs in "
	    "[listen NAME] or in [destination PATTERN])");
	load_err("[relay]\nbare_lf = reject\n",
	    "t.conf:2: [relay] bare_lf: "
	    "unknown key here (it belongs in [listen NAME])");
	load_err("port = 25\n", "t.conf:1: port: unknown key here (it belongs "
				"in [destination PATTERN])");
	load_err("[listen a]\naddress = 127.0.0.1:25\nroute = a.example:25\n",
	    "t.conf:3: [listen a] route: unknown key here (it belongs in "
	    "[destination PATTERN])");
	load_err("[destination a.example]\naddress = 127.0.0.1:25\n",
	    "t.conf:2: [destination a.example] address: unknown key here (it "
	    "belongs in [listen NAME])");
	load_err("[destination a.example]\nsmarthost = a.example:25\n",
	    "t.conf:2: [destination a.example] smarthost: unknown key here (it "
	    "belongs at the top, before any section)");
	load_err("[destination a.example]\nPort = 25\n",
	    "t.conf:2: [destination a.example] Port: unknown key (keys are "
	    "lower case: port)");
	load_err("[destination a.example]\nport = 25\nport = 26\n",
	    "t.conf:3: [destination a.example] port: duplicate key (already "
	    "set "
	    "in this section)");
	load_err("spool_dir = a\nspool_dir = b\n",
	    "t.conf:2: spool_dir: duplicate key (already set in this section)");
	load_err("[listen x]\naddress = 127.0.0.1:25\naddress = 127.0.0.1:26\n",
	    "t.conf:3: [listen x] address: duplicate key (already set in this "
	    "section)");
	load_err("[relay]\nnetworks = ::1\nlocal_domains = a\nnetworks = ::2\n",
	    "t.conf:4: [relay] networks: duplicate key (already set in this "
	    "section)");
	/* The same key in two listeners is not a duplicate. */
	config_free(load_ok("[listen a]\naddress = 127.0.0.1:25\n"
			    "[listen b]\naddress = 127.0.0.1:26\n"));
	/* A control character in a key is shown escaped. */
	load_err("bo\x7fgus = 1\n", "t.conf:1: bo\\x7fgus: unknown key");
}

static void
test_syntax_errors(void **state)
{
	load_err("hostname = a\n\nfoo\n", "t.conf:3: syntax error: expected "
					  "'key = value' or '[section]'");
	load_err("= x\n", "t.conf:1: syntax error: expected 'key = value' or "
			  "'[section]'");
	load_err("[relay]\n; ok\n  # ok\n: x\n",
	    "t.conf:4: syntax error: expected 'key = value' or '[section]'");
	/* The first error wins, whatever its kind. */
	load_err("foo\nbogus = 1\n", "t.conf:1: syntax error: expected "
				     "'key = value' or '[section]'");
	load_err("bogus = 1\nfoo\n", "t.conf:1: bogus: unknown key");
	/* An unindented line after a list is a line of its own. */
	load_err("[relay]\nnetworks = 10.0.0.0/8,\n::1\n",
	    "t.conf:3: syntax error: expected 'key = value' or '[section]'");
}

static void
test_line_reader(void **state)
{
	struct config *cfg;
	char text[512];

	/* Indented keys are keys; inline ';' comments; CRLF; ':' form. */
	cfg = load_ok("\xef\xbb\xbfhostname = mx.example ; comment\r\n"
		      "[listen a]\r\n    address = 127.0.0.1:25\r\n"
		      "\tpipelining = no\r\n    max_errors: 5\r\n"
		      "\t; indented comment\r\n");
	assert_string_equal(cfg->hostname, "mx.example");
	assert_int_equal(cfg->listen[0].pipelining, 0);
	assert_int_equal(cfg->listen[0].max_errors, 5);
	config_free(cfg);

	/* Lists continue on indented lines. */
	cfg = load_ok("[relay]\nnetworks = 10.0.0.0/8,\n"
		      "    192.168.0.0/16 ; office\n\n    # home\n"
		      "\t::1/128 fe80::/10\nlocal_domains = a.example\n"
		      "  b.example,\n  C.example\n");
	assert_int_equal(cfg->relay_networks.n, 4);
	assert_string_equal(cidr_at(&cfg->relay_networks, 1), "192.168.0.0/16");
	assert_string_equal(cidr_at(&cfg->relay_networks, 3), "fe80::/10");
	assert_int_equal(cfg->nlocal_domains, 3);
	assert_string_equal(cfg->local_domains[2], "c.example");
	config_free(cfg);

	/* Errors on continuation lines name their own line. */
	load_err("[relay]\nnetworks = 10.0.0.0/8,\n  ::1/128,\n  ::1/129\n",
	    "t.conf:4: [relay] networks: bad network '::1/129' (expected "
	    "address/prefix, e.g. 192.0.2.0/24 or 2001:db8::/32)");
	/* Only lists continue: an indented line after another key. */
	load_err("[listen a]\naddress = 127.0.0.1:25\n  more\n",
	    "t.conf:3: syntax error: expected 'key = value' or '[section]'");
	/* An indented line with '=' after a list is a key. */
	cfg = load_ok("[relay]\nnetworks = ::1\n  local_domains = x.example\n");
	assert_int_equal(cfg->relay_networks.n, 1);
	assert_int_equal(cfg->nlocal_domains, 1);
	config_free(cfg);

	/* Lines up to inih's buffer are fine, longer ones an error. */
	snprintf(text, sizeof(text), "log_file = /%0*d\n", 197 - 12, 0);
	cfg = load_ok(text);
	assert_int_equal(strlen(cfg->log_file), 197 - 11);
	config_free(cfg);
	snprintf(text, sizeof(text), "\n\tlog_file = /%0*d\n", 197 - 11, 0);
	load_err(text, "t.conf:2: line too long (more than 197 characters "
		       "after indentation)");
}

static char *
write_tmp(const char *data, size_t len)
{
	char *path = strdup("/tmp/test_config.XXXXXX");
	int fd;

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return path;
}

static void
test_load_file(void **state)
{
	static const char good[] = "hostname = file.example\n"
				   "[listen a]\naddress = [::1]:2525\n";
	static const char nul[] = "hostname = a\n[relay]\nnetworks = ::1\0x\n";
	struct config *cfg = NULL;
	char err[ERRLEN], want[ERRLEN], *path;

	path = write_tmp(good, sizeof(good) - 1);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->path, path);
	assert_string_equal(cfg->hostname, "file.example");
	assert_int_equal(cfg->listen[0].sa.ss_family, AF_INET6);
	config_free(cfg);
	unlink(path);
	free(path);

	/* Messages name the file as given. */
	path = write_tmp("\n[listen a]\npipelining = maybe\n", 32);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	snprintf(want, sizeof(want),
	    "%s:3: [listen a] pipelining: expected yes or no, got 'maybe'",
	    path);
	assert_string_equal(err, want);
	unlink(path);
	free(path);

	/* A NUL byte is an error, not the end of the file. */
	path = write_tmp(nul, sizeof(nul) - 1);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:3: NUL byte in line", path);
	assert_string_equal(err, want);
	unlink(path);
	free(path);

	/* Without a final newline. */
	path = write_tmp("max_sessions = 7", 16);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg->max_sessions, 7);
	config_free(cfg);
	unlink(path);
	free(path);
}

static void
test_missing_file(void **state)
{
	struct config *cfg = NULL;
	char err[ERRLEN], want[ERRLEN];

	assert_int_equal(
	    config_load("/nonexistent/petrel.conf", &cfg, err, sizeof(err)),
	    -1);
	assert_null(cfg);
	snprintf(want, sizeof(want),
	    "/nonexistent/petrel.conf: cannot open: %s", strerror(ENOENT));
	assert_string_equal(err, want);

	assert_int_equal(config_load("/", &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "/: cannot read: %s", strerror(EISDIR));
	assert_string_equal(err, want);
}

static void
test_err_buffer(void **state)
{
	struct config *cfg = NULL;
	char small[16];

	/* No error buffer, or a small one: no crash, truncated message. */
	assert_int_equal(
	    config_load_string("bogus = 1\n", "t.conf", &cfg, NULL, 0), -1);
	assert_int_equal(config_load_string("bogus = 1\n", "t.conf", &cfg,
			     small, sizeof(small)),
	    -1);
	assert_string_equal(small, "t.conf:1: bogus");
	assert_int_equal(
	    config_load_string(NULL, "t.conf", &cfg, small, sizeof(small)), -1);
	assert_null(cfg);
	assert_int_equal(
	    config_load_string("", NULL, NULL, small, sizeof(small)), -1);
	/* A NULL name still gives a usable message. */
	assert_int_equal(
	    config_load_string("x\n", NULL, &cfg, small, sizeof(small)), -1);
	assert_string_equal(small, "(string):1: syn");
}

/* ------------------------------------------------------------------ */
/* config_print                                                         */

static void
test_print_defaults(void **state)
{
	struct config *cfg;
	char *text;

	cfg = load_ok("hostname = mx.example\n");
	text = print_str(cfg);
	assert_non_null(strstr(text, "\nhostname = mx.example\n"));
	assert_non_null(strstr(text, "\n[listen smtp]\naddress = "
				     "127.0.0.1:2525\n"));
	assert_non_null(strstr(text, "\nmax_message_size = 52428800\n"));
	assert_non_null(strstr(text, "\ncommand_timeout = 5m\n"));
	assert_non_null(strstr(text, "\ndata_timeout = 3m\n"));
	assert_non_null(strstr(text, "\ngreeting_delay = 0s\n"));
	assert_non_null(strstr(text, "\nbare_lf = reject\n"));
	assert_non_null(strstr(text, "\nsync_exempt_networks =\n"));
	assert_non_null(strstr(text, "\n[relay]\nnetworks = 127.0.0.0/8, "
				     "::1/128\n"));
	assert_null(strstr(text, "tls_cert"));
	free(text);
	assert_round_trip(cfg);
	config_free(cfg);

	cfg = NULL;
	assert_int_equal(config_load(NULL, &cfg, NULL, 0), 0);
	assert_round_trip(cfg);
	config_free(cfg);
}

static void
test_print_round_trip(void **state)
{
	struct config *cfg;
	char text[4096];
	size_t n;
	int i;

	n = (size_t)snprintf(text, sizeof(text),
	    "hostname = mx1.example.net\nspool_dir = /var/spool/petrel\n"
	    "log_file = /var/log/petrel/main.log\nmax_sessions = 5\n"
	    "spool_workers = 64\nsmarthost = [2001:db8::25]:2525\n"
	    "dns_resolver = ::1@5353\nhelo_name = helo.example.net\n"
	    "max_queue_time = 36h\nretry_initial = 90s\nretry_max = 2d\n"
	    "queue_only = yes\n"
	    "[listen mx]\naddress = 0.0.0.0:25\n"
	    "tls_cert = /etc/petrel/cert.pem\ntls_key = /etc/petrel/key.pem\n"
	    "pipelining = no\nchunking = false\nstarttls = 0\n"
	    "enforce_sync = no\n"
	    "sync_exempt_networks = 192.0.2.0/24, 2001:db8::/32\n"
	    "bare_lf = normalize\nmax_message_size = 1G\nmax_recipients = 1\n"
	    "max_messages = 4294967295\nmax_errors = 3\nmax_line_length = 0\n"
	    "command_timeout = 1h\ndata_timeout = 61\ngreeting_delay = 1500ms\n"
	    "[listen v6]\naddress = [2001:db8::1]:587\n"
	    "max_message_size = 1000\ngreeting_delay = 7s\n"
	    "[destination *.Example.net]\nroute = mx1.example.net:25, "
	    "192.0.2.25:2525\n\t[2001:db8::26]:26\ntls = verify\n"
	    "pipelining = no\nchunking = no\nport = 2525\n"
	    "max_connections = 1000\nmax_messages_per_connection = 1\n"
	    "max_connection_age = 1d\nidle_timeout = 90s\n"
	    "pipeline_window = 100\nconnect_timeout = 1\n"
	    "reply_timeout = 4294967295\ndata_timeout = 25h\n"
	    "[destination *]\ntls = encrypt\nport = 587\n"
	    "[destination example.net]\ntls = none\n[relay]\n"
	    "local_domains = Example.COM, b.example\nnetworks = ");
	/* A list longer than one line: printed over several. */
	for (i = 0; i < 60; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		    "%s10.%d.0.0/16", i % 8 == 0 ? ",\n\t" : ", ", i);
	snprintf(text + n, sizeof(text) - n, "\n");

	cfg = load_ok(text);
	assert_int_equal(cfg->relay_networks.n, 60);
	assert_int_equal(cfg->listen[0].data_timeout, 61);
	assert_int_equal(cfg->listen[0].greeting_delay_ms, 1500);
	assert_int_equal(cfg->listen[0].max_message_size, 1073741824);
	assert_int_equal(cfg->max_queue_time, 36 * 3600);
	assert_int_equal(cfg->queue_only, 1);
	assert_int_equal(cfg->ndest, 2);
	assert_int_equal(cfg->dest[0].nroute, 3);
	assert_int_equal(cfg->dest[0].reply_timeout, UINT_MAX);
	assert_int_equal(cfg->dest_default.port, 587);
	assert_round_trip(cfg);
	config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* Delivery: top-level keys                                             */

static void
test_delivery_top_keys(void **state)
{
	struct config *cfg;

	cfg =
	    load_ok("hostname = mx.example\nsmarthost = MX.Example.org:587\n"
		    "dns_resolver = 192.0.2.53@5353\nhelo_name = out.example\n"
		    "max_queue_time = 2d\nretry_initial = 30s\n"
		    "retry_max = 2h\n");
	assert_string_equal(cfg->smarthost, "MX.Example.org:587"); /* as is */
	assert_string_equal(cfg->dns_resolver, "192.0.2.53@5353");
	assert_string_equal(cfg->helo_name, "out.example");
	assert_string_equal(cfg->hostname, "mx.example");
	assert_int_equal(cfg->max_queue_time, 2 * 86400);
	assert_int_equal(cfg->retry_initial, 30);
	assert_int_equal(cfg->retry_max, 7200);
	config_free(cfg);

	/* helo_name defaults to the host name, as set in the file. */
	cfg = load_ok("hostname = [192.0.2.1]\n");
	assert_string_equal(cfg->helo_name, "[192.0.2.1]");
	config_free(cfg);
	cfg = load_ok("helo_name = helo.example\n");
	assert_string_equal(cfg->helo_name, "helo.example");
	assert_string_not_equal(cfg->hostname, "helo.example");
	config_free(cfg);

	top_kv_err("queue_only", "maybe", "expected yes or no, got 'maybe'");
	top_kv_err("helo_name", "out example",
	    "expected a host name "
	    "(printable ASCII without spaces), got 'out example'");
	top_kv_err("helo_name", "",
	    "expected a host name (printable ASCII without spaces), got ''");
}

static void
test_smarthost(void **state)
{
	static const char *const good[] = {
	    "mx.example.org:25",
	    "127.0.0.1:2525",
	    "[::1]:25",
	    "[2001:db8::1]:65535",
	    "localhost:1",
	    "mx-1.EXAMPLE.org:00025",
	    "0.0.0.0:25",
	    "[::ffff:192.0.2.1]:25",
	};
	static const struct {
		const char *value, *reason;
	} bad[] = {
	    {"mx.example.org", "missing port"},
	    {"mx.example.org:", "missing port"},
	    {"mx.example.org:0", "bad port (expected 1 to 65535)"},
	    {"mx.example.org:65536", "bad port (expected 1 to 65535)"},
	    {"mx.example.org:123456", "bad port (expected 1 to 65535)"},
	    {"mx.example.org:+25", "bad port (expected 1 to 65535)"},
	    {"host:25x", "bad port (expected 1 to 65535)"},
	    {"[::1", "missing ']'"},
	    {"[::1]", "missing port"},
	    {"[::1]25", "expected ':' and a port after ']'"},
	    {"[::1]:", "missing port"},
	    {"[]:25", "bad IPv6 address"},
	    {"[192.0.2.1]:25", "bad IPv6 address"},
	    {"[fe80::1%eth0]:25", "bad IPv6 address"},
	    {"::1:25", "too many ':' (an IPv6 address must be in brackets)"},
	    {"a:25:26", "too many ':' (an IPv6 address must be in brackets)"},
	    {":25", "missing host"},
	    {"256.0.0.1:25", "bad IPv4 address"},
	    {"192.0.2:25", "bad IPv4 address"},
	    {"12345:25", "bad IPv4 address"},
	    {"mx..example:25", "empty label"},
	    {"mx.example.:25", "trailing dot"},
	    {"mx_1.example:25",
		"only letters, digits, '-' and '.' are allowed"},
	    {"user@mx.example:25",
		"only letters, digits, '-' and '.' are allowed"},
	    {"a b:25", "only letters, digits, '-' and '.' are allowed"},
	    {"", "empty"},
	};
	struct config *cfg;
	char text[256];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), "smarthost = %s\n", good[i]);
		cfg = load_ok(text);
		assert_string_equal(cfg->smarthost, good[i]);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		top_kv_err("smarthost", bad[i].value,
		    hostport_why(bad[i].value, bad[i].reason));
}

static void
test_dns_resolver(void **state)
{
	static const char *const good[] = {
	    "127.0.0.1",
	    "::1",
	    "192.0.2.53@5353",
	    "2001:db8::53@53",
	    "::1@1",
	    "10.0.0.1@65535",
	};
	static const struct {
		const char *value, *reason;
	} bad[] = {
	    {"localhost", "not a numeric IPv4 or IPv6 address"},
	    {"[::1]", "not a numeric IPv4 or IPv6 address"},
	    {"[::1]@53", "not a numeric IPv4 or IPv6 address"},
	    {"256.1.1.1", "not a numeric IPv4 or IPv6 address"},
	    {"127.0.0.1:53", "not a numeric IPv4 or IPv6 address"},
	    {"127.0.0.1@", "bad port (expected 1 to 65535)"},
	    {"127.0.0.1@0", "bad port (expected 1 to 65535)"},
	    {"127.0.0.1@65536", "bad port (expected 1 to 65535)"},
	    {"127.0.0.1@53x", "bad port (expected 1 to 65535)"},
	    {"127.0.0.1@53@53", "bad port (expected 1 to 65535)"},
	    {"@53", "missing address"},
	    {"", "missing address"},
	};
	struct config *cfg;
	char text[256], why[512];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), "dns_resolver = %s\n", good[i]);
		cfg = load_ok(text);
		assert_string_equal(cfg->dns_resolver, good[i]);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(why, sizeof(why),
		    "bad resolver '%s': %s (expected a numeric address and an "
		    "optional @port, e.g. 127.0.0.1, ::1 or 192.0.2.53@5353)",
		    bad[i].value, bad[i].reason);
		top_kv_err("dns_resolver", bad[i].value, why);
	}
}

static void
test_durations_days(void **state)
{
	static const struct {
		const char *text;
		unsigned value;
	} good[] = {
	    {"5d", 5 * 86400},
	    {"1d", 86400},
	    {"36h", 36 * 3600},
	    {"90m", 5400},
	    {"1", 1},
	    {"49710d", 49710U * 86400U},
	    {"4294967295", UINT_MAX},
	};
	static const char *const bad[] = {
	    "0",
	    "0d",
	    "1w",
	    "1D",
	    "5 d",
	    "-1d",
	    "1.5d",
	    "d",
	    "49711d",
	    "",
	};
	static const char *const keys[] = {
	    "max_queue_time",
	    "retry_initial",
	};
	struct config *cfg;
	char text[256], why[256];
	size_t i, j;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		for (j = 0; j < sizeof(good) / sizeof(good[0]); j++) {
			/* retry_max must stay >= retry_initial. */
			snprintf(text, sizeof(text),
			    "%s = %s\nretry_max = 4294967295s\n", keys[i],
			    good[j].text);
			cfg = load_ok(text);
			assert_int_equal(
			    i == 0 ? cfg->max_queue_time : cfg->retry_initial,
			    good[j].value);
			config_free(cfg);
		}
		for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			snprintf(why, sizeof(why),
			    "expected a duration >= 1s (a number with unit ms, "
			    "s, m, h or d, e.g. 30s), got '%s'",
			    bad[j]);
			top_kv_err(keys[i], bad[j], why);
		}
	}
	/* A listener's timeout takes days too. */
	cfg = listen_kv("command_timeout", "2d");
	assert_int_equal(cfg->listen[0].command_timeout, 2 * 86400);
	config_free(cfg);
}

static void
test_retry_times(void **state)
{
	struct config *cfg;

	cfg = load_ok("retry_initial = 5m\nretry_max = 5m\n");
	assert_int_equal(cfg->retry_initial, 300);
	assert_int_equal(cfg->retry_max, 300);
	config_free(cfg);
	cfg = load_ok("retry_max = 60s\n"); /* = the default retry_initial */
	assert_int_equal(cfg->retry_max, 60);
	config_free(cfg);
	cfg = load_ok("retry_initial = 1h\n"); /* = the default retry_max */
	assert_int_equal(cfg->retry_initial, 3600);
	config_free(cfg);

	/* The message names retry_max on its own line. */
	load_err("retry_initial = 2m\nretry_max = 90s\n",
	    "t.conf:2: retry_max: expected a duration >= retry_initial (2m), "
	    "got 90s");
	load_err("# x\nretry_max = 30s\nretry_initial = 1m\n[relay]\n",
	    "t.conf:2: retry_max: expected a duration >= retry_initial (1m), "
	    "got 30s");
	load_err("retry_max = 59s\n", "t.conf:1: retry_max: expected a "
				      "duration >= retry_initial (1m), got "
				      "59s");
	/* Only retry_initial set: its line, naming retry_max's default. */
	load_err("hostname = a\nretry_initial = 2h\n\n[listen x]\n",
	    "t.conf:2: retry_initial: expected a duration <= retry_max (1h, "
	    "its default; set retry_max too), got 2h");
	top_kv_err("retry_max", "0",
	    "expected a duration >= 1s (a number with unit ms, s, m, h or d, "
	    "e.g. 30s), got '0'");
}

/* ------------------------------------------------------------------ */
/* [destination PATTERN]                                                */

static void
test_dest_sections(void **state)
{
	struct config *cfg;

	/* No key: the built-in defaults. */
	cfg = load_ok("[destination example.org]\n");
	assert_int_equal(cfg->ndest, 1);
	assert_dest_defaults(&cfg->dest[0], "example.org");
	assert_dest_defaults(&cfg->dest_default, "*");
	config_free(cfg);

	/* Patterns lower-cased, file order, "*" apart. */
	cfg = load_ok("[destination B.Example]\n[destination *.Example.COM]\n"
		      "[ destination  * ]\nport = 2525\ntls = none\n"
		      "[destination x-1.example]\n");
	assert_int_equal(cfg->ndest, 3);
	assert_string_equal(cfg->dest[0].pattern, "b.example");
	assert_string_equal(cfg->dest[1].pattern, "*.example.com");
	assert_string_equal(cfg->dest[2].pattern, "x-1.example");
	assert_string_equal(cfg->dest_default.pattern, "*");
	assert_int_equal(cfg->dest_default.port, 2525);
	assert_int_equal(cfg->dest_default.tls, TLS_POLICY_NONE);
	/* No inheritance from "*", before or after it. */
	assert_dest_defaults(&cfg->dest[0], "b.example");
	assert_dest_defaults(&cfg->dest[2], "x-1.example");
	config_free(cfg);

	/* The same domain as exact and as suffix: two sections. */
	cfg = load_ok("[destination example.org]\n"
		      "[destination *.example.org]\n");
	assert_int_equal(cfg->ndest, 2);
	config_free(cfg);
}

static void
test_dest_sections_bad(void **state)
{
	static const struct {
		const char *pattern, *reason;
	} bad[] = {
	    {"exa_mple.org", "only letters, digits, '-' and '.' are allowed"},
	    {"*example.org", "only letters, digits, '-' and '.' are allowed"},
	    {"a.*.example", "only letters, digits, '-' and '.' are allowed"},
	    {"**", "only letters, digits, '-' and '.' are allowed"},
	    {"*.*", "only letters, digits, '-' and '.' are allowed"},
	    {"*.*.example", "only letters, digits, '-' and '.' are allowed"},
	    {"a b.example", "only letters, digits, '-' and '.' are allowed"},
	    {"*.", "empty"},
	    {"example.org.", "trailing dot"},
	    {"*.example.org.", "trailing dot"},
	    {".example.org", "empty label"},
	    {"*..example.org", "empty label"},
	    {"a..b", "empty label"},
	};
	char text[256], want[512];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "\n[destination %s]\nport = 25\n",
		    bad[i].pattern);
		snprintf(want, sizeof(want),
		    "t.conf:2: [destination %s]: bad pattern: %s (expected a "
		    "domain, *.domain or *, e.g. example.org or "
		    "*.example.org)",
		    bad[i].pattern, bad[i].reason);
		load_err(text, want);
	}
	load_err("[destination]\n", "t.conf:1: [destination]: a pattern is "
				    "required, e.g. [destination example.org]");
	load_err("[destination  ]\n", "t.conf:1: [destination]: a pattern is "
				      "required, e.g. [destination "
				      "example.org]");
	/* Duplicates name both lines, whatever the case. */
	load_err("[destination example.org]\nport = 26\n\n"
		 "[destination Example.ORG]\n",
	    "t.conf:4: [destination Example.ORG]: duplicate section (first at "
	    "line 1)");
	load_err("[destination a.example]\n[destination *.example.org]\n"
		 "[relay]\n[destination *.EXAMPLE.org]\n",
	    "t.conf:4: [destination *.EXAMPLE.org]: duplicate section (first "
	    "at "
	    "line 2)");
	load_err("[destination *]\nport = 26\n[destination *]\n",
	    "t.conf:3: [destination *]: duplicate section (first at line 1)");
	/* route in "*": use smarthost. */
	load_err("[destination *]\nport = 26\nroute = mx.example.org:25\n",
	    "t.conf:3: [destination *] route: not allowed in [destination *] "
	    "(set smarthost at the top, before any section, instead)");
	load_err("[destination *]\nroute =\n",
	    "t.conf:2: [destination *] route: not allowed in [destination *] "
	    "(set smarthost at the top, before any section, instead)");
	/* A bad pattern is shown escaped. */
	load_err("[destination a\x01.example]\n",
	    "t.conf:1: [destination a\\x01.example]: bad pattern: only "
	    "letters, "
	    "digits, '-' and '.' are allowed (expected a domain, *.domain or "
	    "*, e.g. example.org or *.example.org)");
}

static void
test_dest_route(void **state)
{
	static const struct {
		const char *value, *entry, *reason;
	} bad[] = {
	    {"mx.example.org", "mx.example.org", "missing port"},
	    {"mx.example.org:25, mx2.example.org", "mx2.example.org",
		"missing port"},
	    {"a.example:25 a.example:0", "a.example:0",
		"bad port (expected 1 to 65535)"},
	    {"[::1", "[::1", "missing ']'"},
	    {"host:25x", "host:25x", "bad port (expected 1 to 65535)"},
	    {"a.example:25;b.example:25", "a.example:25;b.example:25",
		"too many ':' (an IPv6 address must be in brackets)"},
	    {"a.example:25;", "a.example:25;",
		"bad port (expected 1 to 65535)"},
	};
	struct config *cfg;
	size_t i;

	cfg = dest_kv("route", "mx.example.org:25, 127.0.0.1:2525 [::1]:25,"
			       "\tMX2.Example.org:587");
	assert_int_equal(cfg->dest[0].nroute, 4);
	assert_string_equal(cfg->dest[0].route[0], "mx.example.org:25");
	assert_string_equal(cfg->dest[0].route[1], "127.0.0.1:2525");
	assert_string_equal(cfg->dest[0].route[2], "[::1]:25");
	assert_string_equal(cfg->dest[0].route[3], "MX2.Example.org:587");
	config_free(cfg);

	/* Empty: MX lookup, as with no route. */
	cfg = dest_kv("route", "");
	assert_int_equal(cfg->dest[0].nroute, 0);
	assert_null(cfg->dest[0].route);
	config_free(cfg);

	/* Continuation lines, errors on their own line. */
	cfg = load_ok("[destination *.example.org]\nroute = a.example:25,\n"
		      "    b.example:26 ; second\n\t[2001:db8::1]:27\n"
		      "port = 2525\n");
	assert_int_equal(cfg->dest[0].nroute, 3);
	assert_string_equal(cfg->dest[0].route[2], "[2001:db8::1]:27");
	assert_int_equal(cfg->dest[0].port, 2525);
	config_free(cfg);
	/* An indented "[v6]:port" continues the list; a header does not. */
	cfg = load_ok("[destination x.example]\nroute = a.example:25\n"
		      "  [::1]:25 [::2]:26\n  [destination y.example]\n"
		      "route =\n\t[::3]:27 ; c\n [relay] ; c\n");
	assert_int_equal(cfg->ndest, 2);
	assert_int_equal(cfg->dest[0].nroute, 3);
	assert_string_equal(cfg->dest[0].route[1], "[::1]:25");
	assert_string_equal(cfg->dest[0].route[2], "[::2]:26");
	assert_int_equal(cfg->dest[1].nroute, 1);
	assert_string_equal(cfg->dest[1].route[0], "[::3]:27");
	config_free(cfg);
	load_err("[destination x.example]\nroute = a.example:25\n  [::1]\n",
	    "t.conf:3: unknown section [::1] (expected [listen NAME], [relay] "
	    "or [destination PATTERN])");
	load_err("[destination x.example]\nport = 25\n  [::1]:25\n",
	    "t.conf:3: syntax error: unexpected text after ']': ':25'");
	load_err("[destination x.example]\nroute = a.example:25,\n"
		 "  b.example\n",
	    "t.conf:3: [destination x.example] route: bad host:port "
	    "'b.example': missing port (expected a host name, IPv4 address or "
	    "[IPv6 address], ':' and a port, e.g. mx.example.org:25 or "
	    "[2001:db8::1]:25)");

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		dest_kv_err("route", bad[i].value,
		    hostport_why(bad[i].entry, bad[i].reason));
}

static void
test_dest_keys(void **state)
{
	static const struct {
		const char *key;
		size_t off;
	} bools[] = {
	    {"pipelining", offsetof(struct dest_conf, pipelining)},
	    {"chunking", offsetof(struct dest_conf, chunking)},
	};
	static const struct {
		const char *key;
		size_t off;
		unsigned min, max; /* max 0: UINT_MAX, unbounded message */
	} uints[] = {
	    {"port", offsetof(struct dest_conf, port), 1, 65535},
	    {"max_connections", offsetof(struct dest_conf, max_connections), 1,
		1000},
	    {"max_messages_per_connection",
		offsetof(struct dest_conf, max_messages_per_connection), 1, 0},
	    {"pipeline_window", offsetof(struct dest_conf, pipeline_window), 1,
		100},
	};
	static const struct {
		const char *key;
		size_t off;
	} secs[] = {
	    {"max_connection_age",
		offsetof(struct dest_conf, max_connection_age)},
	    {"idle_timeout", offsetof(struct dest_conf, idle_timeout)},
	    {"connect_timeout", offsetof(struct dest_conf, connect_timeout)},
	    {"reply_timeout", offsetof(struct dest_conf, reply_timeout)},
	    {"data_timeout", offsetof(struct dest_conf, data_timeout)},
	};
	static const char *const tls[] = {"none", "may", "encrypt", "verify"};
	struct config *cfg;
	char val[64], why[256];
	size_t i;
	unsigned max;

#define DFIELD(cfg, off, T) (*(T *)(void *)((char *)&(cfg)->dest[0] + (off)))
	for (i = 0; i < 4; i++) {
		cfg = dest_kv("tls", tls[i]);
		assert_int_equal(cfg->dest[0].tls, (int)i);
		config_free(cfg);
	}
	assert_int_equal(TLS_POLICY_VERIFY, 3);
	dest_kv_err(
	    "tls", "yes", "expected none, may, encrypt or verify, got 'yes'");
	dest_kv_err("tls", "Verify",
	    "expected none, may, encrypt or verify, got 'Verify'");
	dest_kv_err("tls", "", "expected none, may, encrypt or verify, got ''");

	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		cfg = dest_kv(bools[i].key, "no");
		assert_int_equal(DFIELD(cfg, bools[i].off, int), 0);
		config_free(cfg);
		cfg = dest_kv(bools[i].key, "yes");
		assert_int_equal(DFIELD(cfg, bools[i].off, int), 1);
		config_free(cfg);
		dest_kv_err(
		    bools[i].key, "maybe", "expected yes or no, got 'maybe'");
	}

	for (i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
		max = uints[i].max != 0 ? uints[i].max : UINT_MAX;
		snprintf(val, sizeof(val), "%u", uints[i].min);
		cfg = dest_kv(uints[i].key, val);
		assert_int_equal(
		    DFIELD(cfg, uints[i].off, unsigned), uints[i].min);
		config_free(cfg);
		snprintf(val, sizeof(val), "%u", max);
		cfg = dest_kv(uints[i].key, val);
		assert_int_equal(DFIELD(cfg, uints[i].off, unsigned), max);
		config_free(cfg);

		if (uints[i].max != 0)
			snprintf(why, sizeof(why),
			    "expected an integer from %u to %u, got '0'",
			    uints[i].min, uints[i].max);
		else
			snprintf(why, sizeof(why),
			    "expected an integer >= 1, got '0'");
		dest_kv_err(uints[i].key, "0", why);
		snprintf(val, sizeof(val), "%llu", (unsigned long long)max + 1);
		if (uints[i].max != 0)
			snprintf(why, sizeof(why),
			    "expected an integer from %u to %u, got '%s'",
			    uints[i].min, uints[i].max, val);
		else
			snprintf(why, sizeof(why),
			    "expected an integer >= 1, got '%s'", val);
		dest_kv_err(uints[i].key, val, why);
	}

	for (i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
		cfg = dest_kv(secs[i].key, "1");
		assert_int_equal(DFIELD(cfg, secs[i].off, unsigned), 1);
		config_free(cfg);
		cfg = dest_kv(secs[i].key, "2m");
		assert_int_equal(DFIELD(cfg, secs[i].off, unsigned), 120);
		config_free(cfg);
		cfg = dest_kv(secs[i].key, "1d");
		assert_int_equal(DFIELD(cfg, secs[i].off, unsigned), 86400);
		config_free(cfg);
		dest_kv_err(secs[i].key, "0",
		    "expected a duration >= 1s (a number with unit ms, s, m, h "
		    "or d, e.g. 30s), got '0'");
		dest_kv_err(secs[i].key, "soon",
		    "expected a duration >= 1s (a number with unit ms, s, m, h "
		    "or d, e.g. 30s), got 'soon'");
		dest_kv_err(secs[i].key, "1500ms",
		    "expected a whole number of seconds, got '1500ms'");
	}
#undef DFIELD

	/* Every key in "*" except route. */
	cfg = load_ok("[destination *]\ntls = verify\npipelining = no\n"
		      "chunking = no\nport = 587\nmax_connections = 1000\n"
		      "max_messages_per_connection = 1\n"
		      "max_connection_age = 1h\nidle_timeout = 1s\n"
		      "pipeline_window = 100\nconnect_timeout = 5s\n"
		      "reply_timeout = 1m\ndata_timeout = 20m\n");
	assert_int_equal(cfg->ndest, 0);
	assert_int_equal(cfg->dest_default.tls, TLS_POLICY_VERIFY);
	assert_int_equal(cfg->dest_default.pipelining, 0);
	assert_int_equal(cfg->dest_default.chunking, 0);
	assert_int_equal(cfg->dest_default.port, 587);
	assert_int_equal(cfg->dest_default.max_connections, 1000);
	assert_int_equal(cfg->dest_default.max_messages_per_connection, 1);
	assert_int_equal(cfg->dest_default.max_connection_age, 3600);
	assert_int_equal(cfg->dest_default.idle_timeout, 1);
	assert_int_equal(cfg->dest_default.pipeline_window, 100);
	assert_int_equal(cfg->dest_default.connect_timeout, 5);
	assert_int_equal(cfg->dest_default.reply_timeout, 60);
	assert_int_equal(cfg->dest_default.data_timeout, 1200);
	config_free(cfg);

	/* Errors in "*" are labelled like any section. */
	load_err("[destination *]\nport = 0\n",
	    "t.conf:2: [destination *] port: expected an integer from 1 to "
	    "65535, got '0'");
}

/* ------------------------------------------------------------------ */
/* config_find_dest                                                     */

static void
test_find_dest(void **state)
{
	static const struct {
		const char *name;
		int port; /* which section: its port */
	} cases[] = {
	    {"example.org", 1},
	    {"EXAMPLE.Org", 1},
	    {"example.org.", 1},
	    {"x.example.org", 2},
	    {"X.Example.ORG.", 2},
	    {"b.example.org", 2},
	    {"x.b.example.org", 3},
	    {"y.x.b.example.org", 3},
	    {"a.b.example.org", 4},
	    {"A.B.EXAMPLE.ORG.", 4},
	    {"z.a.b.example.org", 3},
	    {"badexample.org", 2500},
	    {"example.org.uk", 2500},
	    {".example.org", 2500},
	    {"org", 2500},
	    {"other.net", 2500},
	    {"example.org..", 2500},
	    {"", 2500},
	    {".", 2500},
	};
	/* Suffixes in either order, the exact one after a suffix. */
	static const char *const texts[] = {
	    "[destination *]\nport = 2500\n"
	    "[destination example.org]\nport = 1\n"
	    "[destination *.example.org]\nport = 2\n"
	    "[destination *.b.example.org]\nport = 3\n"
	    "[destination a.b.example.org]\nport = 4\n",
	    "[destination *.B.example.org]\nport = 3\n"
	    "[destination a.b.example.org]\nport = 4\n"
	    "[destination *.example.org]\nport = 2\n"
	    "[destination example.org]\nport = 1\n"
	    "[destination *]\nport = 2500\n",
	};
	struct config *cfg;
	const struct dest_conf *d;
	size_t i, t;

	for (t = 0; t < 2; t++) {
		cfg = load_ok(texts[t]);
		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			d = config_find_dest(cfg, cases[i].name);
			assert_non_null(d);
			if (d->port != (unsigned)cases[i].port)
				fail_msg("%s: port %u, want %d", cases[i].name,
				    d->port, cases[i].port);
		}
		assert_ptr_equal(
		    config_find_dest(cfg, "other.net"), &cfg->dest_default);
		assert_ptr_equal(
		    config_find_dest(cfg, NULL), &cfg->dest_default);
		config_free(cfg);
	}

	/* Without "*": the built-in defaults. */
	cfg = load_ok("[destination *.example.org]\nport = 2\n");
	d = config_find_dest(cfg, "example.org");
	assert_ptr_equal(d, &cfg->dest_default);
	assert_dest_defaults(d, "*");
	assert_int_equal(config_find_dest(cfg, "mx.Example.org")->port, 2);
	config_free(cfg);
}

static void
test_find_dest_null(void **state)
{
	struct config *cfg;
	const struct dest_conf *d;

	/* Never NULL; agrees with the table's defaults. */
	d = config_find_dest(NULL, "example.org");
	assert_non_null(d);
	assert_dest_defaults(d, "*");
	cfg = load_ok("");
	assert_dest_equal(d, &cfg->dest_default);
	assert_dest_equal(config_find_dest(NULL, NULL), &cfg->dest_default);
	config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* config_print with delivery settings                                  */

static void
test_print_delivery(void **state)
{
	struct config *cfg;
	char *text, *star, *dest;
	char buf[1024], text2[2048], host[200];
	size_t i;

	cfg = load_ok("hostname = mx.example\n");
	text = print_str(cfg);
	assert_non_null(strstr(text, "\nhelo_name = mx.example\n"));
	assert_non_null(strstr(text, "\nmax_queue_time = 5d\n"
				     "retry_initial = 1m\nretry_max = 1h\n"));
	assert_null(strstr(text, "smarthost"));
	assert_null(strstr(text, "dns_resolver"));
	/* "[destination *]" with the defaults, after [relay], no route. */
	star = strstr(text, "\n[destination *]\n");
	assert_non_null(star);
	assert_true(star > strstr(text, "\n[relay]\n"));
	assert_string_equal(star,
	    "\n[destination *]\ntls = may\npipelining = yes\nchunking = yes\n"
	    "port = 25\nmax_connections = 10\n"
	    "max_messages_per_connection = 1000\nmax_connection_age = 5m\n"
	    "idle_timeout = 10s\npipeline_window = 8\n"
	    "chain_after_data = yes\nconnect_timeout = 30s\n"
	    "reply_timeout = 5m\ndata_timeout = 10m\n");
	assert_non_null(strstr(text, "\n# Every [destination] section starts "
				     "from the built-in defaults,\n"));
	free(text);
	config_free(cfg);

	/* "*" first, then the others in file order. */
	cfg = load_ok("[destination b.example]\nroute = mx.b.example:25\n"
		      "[destination *]\ntls = encrypt\n"
		      "[destination *.a.example]\n");
	text = print_str(cfg);
	star = strstr(text, "\n[destination *]\ntls = encrypt\n");
	dest = strstr(text, "\n[destination b.example]\nroute = "
			    "mx.b.example:25\ntls = may\n");
	assert_non_null(star);
	assert_non_null(dest);
	assert_true(star < dest);
	assert_true(dest < strstr(text, "\n[destination *.a.example]\n"
					"route =\ntls = may\n"));
	free(text);
	assert_round_trip(cfg);
	config_free(cfg);

	/* Long lists wrap; an IPv6 entry may start a continuation line. */
	cfg = load_ok("[destination x.example]\nroute = "
		      "[2001:db8:1111:2222:3333:4444:5555:6666]:25, "
		      "[2001:db8:1111:2222:3333:4444:5555:7777]:25, "
		      "[2001:db8:1111:2222:3333:4444:5555:8888]:25\n");
	text = print_str(cfg);
	assert_non_null(strstr(text, ",\n\t[2001:db8:1111:2222:3333:4444:5555:"
				     "7777]:25"));
	free(text);
	assert_round_trip(cfg);
	config_free(cfg);

	/* A domain as long as a line may be: printed alone on its line. */
	memset(buf, 0, sizeof(buf));
	for (i = 0; i < 197; i++)
		buf[i] = i % 64 == 63 ? '.' : 'a';
	snprintf(buf + 197, sizeof(buf) - 197, "\n  y.example\n");
	snprintf(text2, sizeof(text2),
	    "[relay]\nlocal_domains = x.example\n  %s", buf);
	cfg = load_ok(text2);
	assert_int_equal(cfg->nlocal_domains, 3);
	assert_int_equal(strlen(cfg->local_domains[1]), 197);
	text = print_str(cfg);
	buf[197] = '\0';
	snprintf(text2, sizeof(text2),
	    "\nlocal_domains = x.example,\n\t%s\n\ty.example\n", buf);
	assert_non_null(strstr(text, text2));
	free(text);
	assert_round_trip(cfg);
	config_free(cfg);

	/* A host name too long to follow "route =" goes on the next line. */
	memset(host, 'a', 60);
	memcpy(host + 60, ".", 1);
	memset(host + 61, 'b', 60);
	memcpy(host + 121, ".example:25", 12);
	snprintf(buf, sizeof(buf),
	    "[destination x.example]\nroute = %s\n  %s\n", host, host);
	cfg = load_ok(buf);
	assert_int_equal(cfg->dest[0].nroute, 2);
	text = print_str(cfg);
	snprintf(buf, sizeof(buf), "\nroute =\n\t%s\n\t%s\n", host, host);
	assert_non_null(strstr(text, buf));
	free(text);
	assert_round_trip(cfg);
	config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* config_parse_hostport                                                */

static void
test_parse_hostport(void **state)
{
	struct sockaddr_storage ss;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	char buf[INET6_ADDRSTRLEN];
	socklen_t len;

	assert_int_equal(
	    config_parse_hostport("192.0.2.1:2525", 25, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_int_equal(ntohs(sin->sin_port), 2525);
	inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.1");

	assert_int_equal(config_parse_hostport("192.0.2.1", 25, &ss, &len), 0);
	assert_int_equal(ntohs(sin->sin_port), 25);

	assert_int_equal(
	    config_parse_hostport("[2001:db8::7]:587", 25, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(sin6->sin6_port), 587);
	inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
	assert_string_equal(buf, "2001:db8::7");

	assert_int_equal(config_parse_hostport("[::1]", 25, &ss, &len), 0);
	assert_int_equal(ntohs(sin6->sin6_port), 25);

	/* Without a usable default port, the port is required. */
	assert_int_equal(config_parse_hostport("192.0.2.1", -1, &ss, &len), -1);
	assert_int_equal(config_parse_hostport("192.0.2.1", 0, &ss, &len), -1);
	assert_int_equal(config_parse_hostport("[::1]", 65536, &ss, &len), -1);
	/* Unbracketed IPv6 is ambiguous: refused. */
	assert_int_equal(config_parse_hostport("::1", 25, &ss, &len), -1);
	assert_int_equal(
	    config_parse_hostport("2001:db8::1:25", 25, &ss, &len), -1);
	assert_int_equal(
	    config_parse_hostport("mx.example:25", 25, &ss, &len), -1);
	assert_int_equal(config_parse_hostport("", 25, &ss, &len), -1);
	assert_int_equal(config_parse_hostport(NULL, 25, &ss, &len), -1);
	assert_int_equal(config_parse_hostport("[::1]:x", 25, &ss, &len), -1);
	assert_int_equal(config_parse_hostport("[::1", 25, &ss, &len), -1);
	assert_int_equal(
	    config_parse_hostport("1.2.3.4:99999", 25, &ss, &len), -1);
	/* Syntax check only. */
	assert_int_equal(
	    config_parse_hostport("1.2.3.4:25", -1, NULL, NULL), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_no_file),
	    cmocka_unit_test(test_defaults_empty_text),
	    cmocka_unit_test(test_default_hostname),
	    cmocka_unit_test(test_default_listener),
	    cmocka_unit_test(test_several_listeners),
	    cmocka_unit_test(test_top_keys),
	    cmocka_unit_test(test_top_keys_bad),
	    cmocka_unit_test(test_listen_bools),
	    cmocka_unit_test(test_listen_bool_message_example),
	    cmocka_unit_test(test_listen_bare_lf),
	    cmocka_unit_test(test_listen_counts),
	    cmocka_unit_test(test_listen_max_line_length),
	    cmocka_unit_test(test_listen_max_message_size),
	    cmocka_unit_test(test_listen_timeouts),
	    cmocka_unit_test(test_listen_greeting_delay),
	    cmocka_unit_test(test_listen_address),
	    cmocka_unit_test(test_listen_address_required),
	    cmocka_unit_test(test_listen_tls),
	    cmocka_unit_test(test_listen_sync_exempt),
	    cmocka_unit_test(test_relay_networks),
	    cmocka_unit_test(test_relay_local_domains),
	    cmocka_unit_test(test_is_local_domain),
	    cmocka_unit_test(test_sections_bad),
	    cmocka_unit_test(test_sections_good),
	    cmocka_unit_test(test_unknown_and_duplicate_keys),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_line_reader),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_err_buffer),
	    cmocka_unit_test(test_print_defaults),
	    cmocka_unit_test(test_print_round_trip),
	    cmocka_unit_test(test_parse_hostport),
	    cmocka_unit_test(test_delivery_top_keys),
	    cmocka_unit_test(test_smarthost),
	    cmocka_unit_test(test_dns_resolver),
	    cmocka_unit_test(test_durations_days),
	    cmocka_unit_test(test_retry_times),
	    cmocka_unit_test(test_dest_sections),
	    cmocka_unit_test(test_dest_sections_bad),
	    cmocka_unit_test(test_dest_route),
	    cmocka_unit_test(test_dest_keys),
	    cmocka_unit_test(test_find_dest),
	    cmocka_unit_test(test_find_dest_null),
	    cmocka_unit_test(test_print_delivery),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
