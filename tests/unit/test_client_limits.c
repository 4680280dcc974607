/*
 * test_client_limits.c - unit tests for client_limits.c: the per-address
 * session limit, the error window and its penalty, expiry of entries, the
 * bound on the table, and "0 = no limit".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "client_limits.h"

static const struct client_limits LIM = {
	.max_sessions = 3, .max_errors = 5, .window_ms = 60000,
};

static void
test_session_limit(void **state)
{
	struct client_table *t = client_table_new();
	unsigned info;

	for (int i = 0; i < 3; i++)
		assert_int_equal(client_admit(t, "192.0.2.1", 1000, &LIM, &info),
		    CLIENT_OK);
	assert_int_equal(client_admit(t, "192.0.2.1", 1000, &LIM, &info),
	    CLIENT_TOO_MANY_SESSIONS);
	assert_int_equal(info, 3);
	/* another address is not affected */
	assert_int_equal(client_admit(t, "192.0.2.2", 1000, &LIM, &info),
	    CLIENT_OK);
	/* a session ends: one more may come */
	client_release(t, "192.0.2.1", 2000, &LIM);
	assert_int_equal(client_admit(t, "192.0.2.1", 2000, &LIM, &info),
	    CLIENT_OK);
	assert_int_equal(client_admit(t, "192.0.2.1", 2000, &LIM, &info),
	    CLIENT_TOO_MANY_SESSIONS);
	client_table_free(t);
}

static void
test_error_penalty(void **state)
{
	struct client_table *t = client_table_new();
	unsigned info;
	int started = 0;

	assert_int_equal(client_admit(t, "2001:db8::1", 0, &LIM, &info),
	    CLIENT_OK);
	for (int i = 0; i < 4; i++)
		started += client_error(t, "2001:db8::1", 100 + i, &LIM);
	assert_int_equal(started, 0);
	/* the fifth error within the window starts the penalty, once */
	assert_int_equal(client_error(t, "2001:db8::1", 200, &LIM), 1);
	assert_int_equal(client_error(t, "2001:db8::1", 201, &LIM), 0);
	client_release(t, "2001:db8::1", 300, &LIM);
	assert_int_equal(client_admit(t, "2001:db8::1", 300, &LIM, &info),
	    CLIENT_BLOCKED);
	assert_int_equal(info, 60);     /* seconds left, rounded up */
	assert_int_equal(client_admit(t, "2001:db8::1", 59300, &LIM, &info),
	    CLIENT_BLOCKED);
	assert_int_equal(info, 1);
	/* penalty over */
	assert_int_equal(client_admit(t, "2001:db8::1", 60200, &LIM, &info),
	    CLIENT_OK);
	client_table_free(t);
}

static void
test_errors_outside_window_forgotten(void **state)
{
	struct client_table *t = client_table_new();
	unsigned info;

	assert_int_equal(client_admit(t, "192.0.2.9", 0, &LIM, &info),
	    CLIENT_OK);
	/* 4 errors per window, over 5 windows: never 5 in one */
	for (int w = 0; w < 5; w++)
		for (int i = 0; i < 4; i++)
			assert_int_equal(client_error(t, "192.0.2.9",
			    (uint64_t)w * 60000 + (uint64_t)i, &LIM), 0);
	client_release(t, "192.0.2.9", 300000, &LIM);
	assert_int_equal(client_admit(t, "192.0.2.9", 300000, &LIM, &info),
	    CLIENT_OK);
	client_table_free(t);
}

static void
test_entries_expire(void **state)
{
	struct client_table *t = client_table_new();
	unsigned info;
	char ip[32];

	for (int i = 0; i < 100; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256, i % 256);
		assert_int_equal(client_admit(t, ip, 0, &LIM, &info), CLIENT_OK);
		if (i % 2)
			client_error(t, ip, 10, &LIM);
		client_release(t, ip, 20, &LIM);
	}
	/* the 50 without errors are gone with their session; the 50 with
	 * an error stay for their window */
	assert_int_equal(client_table_size(t), 50);
	/* after the window, a session that comes and goes leaves nothing */
	for (int i = 0; i < 100; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256, i % 256);
		assert_int_equal(client_admit(t, ip, 120000, &LIM, &info),
		    CLIENT_OK);
		client_release(t, ip, 120000, &LIM);
	}
	assert_int_equal(client_table_size(t), 0);
	client_table_free(t);
}

static void
test_table_bounded(void **state)
{
	struct client_table *t = client_table_new();
	unsigned info;
	char ip[32];
	int untracked = 0;

	/* CLIENTS_MAX + 100 addresses, each with a session still open */
	for (int i = 0; i < CLIENTS_MAX + 100; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255,
		    (i >> 8) & 255, i & 255);
		enum client_verdict v = client_admit(t, ip, 0, &LIM, &info);
		assert_true(v == CLIENT_OK || v == CLIENT_UNTRACKED);
		untracked += v == CLIENT_UNTRACKED;
	}
	assert_int_equal(client_table_size(t), CLIENTS_MAX);
	assert_int_equal(untracked, 100);
	client_table_free(t);
}

static void
test_zero_means_no_limit(void **state)
{
	struct client_limits none = { 0, 0, 60000 };
	struct client_table *t = client_table_new();
	unsigned info;

	for (int i = 0; i < 1000; i++)
		assert_int_equal(client_admit(t, "192.0.2.7", 0, &none, &info),
		    CLIENT_OK);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(client_error(t, "192.0.2.7", 1, &none), 0);
	client_table_free(t);
}

static void
test_key(void **state)
{
	char k[64];

	client_key("192.0.2.1", k, sizeof(k));
	assert_string_equal(k, "192.0.2.1");
	client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", k, sizeof(k));
	assert_string_equal(k, "2001:db8:1:2::/64");
	client_key("2001:db8:1:2::1", k, sizeof(k));
	assert_string_equal(k, "2001:db8:1:2::/64");
	client_key("::ffff:192.0.2.7", k, sizeof(k));
	assert_string_equal(k, "192.0.2.7");
	client_key("::1", k, sizeof(k));
	assert_string_equal(k, "::/64");
	client_key("not an address", k, sizeof(k));
	assert_string_equal(k, "not an address");
}

static void
test_penalty_lifted_when_limit_off(void **state)
{
	struct client_table *t = client_table_new();
	struct client_limits off = LIM;
	unsigned info;

	assert_int_equal(client_admit(t, "192.0.2.3", 0, &LIM, &info), CLIENT_OK);
	for (int i = 0; i < 5; i++)
		client_error(t, "192.0.2.3", 10, &LIM);
	assert_int_equal(client_admit(t, "192.0.2.3", 20, &LIM, &info),
	    CLIENT_BLOCKED);
	off.max_errors = 0;     /* SIGHUP: max_client_errors = 0 */
	assert_int_equal(client_admit(t, "192.0.2.3", 20, &off, &info),
	    CLIENT_OK);
	client_table_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_session_limit),
	    cmocka_unit_test(test_error_penalty),
	    cmocka_unit_test(test_errors_outside_window_forgotten),
	    cmocka_unit_test(test_entries_expire),
	    cmocka_unit_test(test_table_bounded),
	    cmocka_unit_test(test_zero_means_no_limit),
	    cmocka_unit_test(test_key),
	    cmocka_unit_test(test_penalty_lifted_when_limit_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
