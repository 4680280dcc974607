/*
 * test_config.c - unit tests for config.c: embedded defaults, every key's
 * good and bad values with the exact error messages (file, line, section,
 * key, what was expected, what was given), sections and their errors, the
 * line reader (indentation, list continuation lines, long lines, NUL, CRLF,
 * BOM), files, config_print round trips, local domains and host:port.
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
	    {"4294967295s", UINT_MAX},
	};
	static const char *const bad[] = {
	    "0",
	    "0s",
	    "999ms",
	    "1d",
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
			    "(a number with unit ms, s, m or h, e.g. 30s), got "
			    "'%s'",
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
		    "(a number with unit ms, s, m or h, e.g. 30s), got '%s'",
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
			      "[listen NAME] or [relay])");
	load_err("hostname = a\n[destination example.org]\n",
	    "t.conf:2: "
	    "unknown section [destination] (expected [listen NAME] or "
	    "[relay])");
	load_err("[Relay]\n", "t.conf:1: unknown section [Relay] (section "
			      "names are lower case: [relay])");
	load_err("[relay]\nnetworks = ::1\n[relay]\n",
	    "t.conf:3: [relay]: duplicate section (first at line 1)");
	load_err("[relay x]\n", "t.conf:1: [relay x]: [relay] takes no name");
	load_err("[]\n", "t.conf:1: unknown section [] (expected "
			 "[listen NAME] or [relay])");
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
	    "t.conf:2: [relay] pipelining: "
	    "unknown key here (it belongs in [listen NAME])");
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
	    "spool_workers = 64\n[listen mx]\naddress = 0.0.0.0:25\n"
	    "tls_cert = /etc/petrel/cert.pem\ntls_key = /etc/petrel/key.pem\n"
	    "pipelining = no\nchunking = false\nstarttls = 0\n"
	    "enforce_sync = no\n"
	    "sync_exempt_networks = 192.0.2.0/24, 2001:db8::/32\n"
	    "bare_lf = normalize\nmax_message_size = 1G\nmax_recipients = 1\n"
	    "max_messages = 4294967295\nmax_errors = 3\nmax_line_length = 0\n"
	    "command_timeout = 1h\ndata_timeout = 61\ngreeting_delay = 1500ms\n"
	    "[listen v6]\naddress = [2001:db8::1]:587\n"
	    "max_message_size = 1000\ngreeting_delay = 7s\n[relay]\n"
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
