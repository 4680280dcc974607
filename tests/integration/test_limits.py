"""Per-listener and global limits: recipients, messages per session, errors,
timeouts, concurrent sessions, command line length."""

import socket
import time

import pytest

from petrel_helpers import ConnectionClosed, expect, expect_queued, make_message


def test_max_recipients(petrel_factory):
    p = petrel_factory(listen={"max_recipients": "5"})
    rcpts = [f"r{i}@local.example" for i in range(13)]
    with p.session() as c:
        expect(c.mail(), 250, "2.1.0")
        replies = [c.rcpt(r) for r in rcpts]
        for r in replies[:5]:
            expect(r, 250, "2.1.5")
        for r in replies[5:10]:
            expect(r, 452, "4.5.3")
        for r in replies[10:]:
            expect(r, 552, "5.5.3")
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert p.spool_msg(qid).rcpts == rcpts[:5]


def test_max_recipients_pipelined(petrel_factory):
    p = petrel_factory(listen={"max_recipients": "3"})
    with p.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\n" +
               "".join(f"RCPT TO:<r{i}@local.example>\r\n" for i in range(8)) +
               "DATA\r\n")
        r = c.read_replies(10)
        assert [(x.code, x.enh) for x in r[:9]] == (
            [(250, "2.1.0")] + [(250, "2.1.5")] * 3 + [(452, "4.5.3")] * 3
            + [(552, "5.5.3")] * 2), "\n".join(x.raw() for x in r)
        expect(r[9], 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert p.spool_msg(qid).rcpts == [f"r{i}@local.example" for i in range(3)]


def test_max_recipients_per_transaction(petrel_factory):
    """The count starts again with each transaction."""
    p = petrel_factory(listen={"max_recipients": "2"})
    with p.session() as c:
        for _ in range(3):
            expect(c.mail(), 250, "2.1.0")
            expect(c.rcpt("a@local.example"), 250, "2.1.5")
            expect(c.rcpt("b@local.example"), 250, "2.1.5")
            expect(c.rcpt("c@local.example"), 452, "4.5.3")
            expect(c.cmd("RSET"), 250)


def test_max_messages(petrel_factory):
    p = petrel_factory(listen={"max_messages": "3"})
    with p.session() as c:
        for _ in range(3):
            c.send_message(make_message())
        r = c.mail()
        assert 400 <= r.code < 500, r.raw()
    assert len(p.queue_files()) == 3
    # a new session may send again
    with p.session() as c:
        c.send_message(make_message())
    assert len(p.queue_files()) == 4


def test_max_messages_counts_mail_commands(petrel_factory):
    """The (max_messages+1)-th MAIL gets a 4xx even if earlier ones were
    reset without a message."""
    p = petrel_factory(listen={"max_messages": "2"})
    with p.session() as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.cmd("RSET"), 250)
        expect(c.mail(), 250, "2.1.0")
        expect(c.cmd("RSET"), 250)
        r = c.mail()
        assert 400 <= r.code < 500, r.raw()


def _count_until_421(c, bad_line, max_errors):
    """Send bad_line one at a time; return the error replies seen before a
    421, and the 421."""
    errors = []
    for _ in range(max_errors):
        r = c.cmd(bad_line)
        if r.code == 421:
            return errors, r
        errors.append(r)
    # the 421 may already be on its way (sent right after the last error)
    r = c.poll_reply(0.5)
    if r is None:
        try:
            c.send(bad_line + "\r\n")
        except OSError:
            pass
        r = c.read_reply()
    return errors, r


@pytest.mark.parametrize("bad", ["FOO", "MAIL FROM:<bad@@x>", "RCPT TO:<a@b.example>"])
def test_max_errors(petrel_factory, bad):
    p = petrel_factory(listen={"max_errors": "3"})
    c = p.session()
    errors, r = _count_until_421(c, bad, 3)
    assert len(errors) == 3, "\n".join(e.raw() for e in errors)
    assert all(e.code >= 400 for e in errors)
    expect(r, 421, "4.7.0")
    c.expect_closed()
    c.close()


def test_max_errors_good_commands_do_not_count(petrel_factory):
    p = petrel_factory(listen={"max_errors": "3"})
    with p.session() as c:
        for _ in range(2):
            expect(c.cmd("FOO"), 500, "5.5.2")
        for _ in range(10):
            expect(c.cmd("NOOP"), 250)
        c.send_message(make_message())


def test_command_timeout(petrel_factory):
    p = petrel_factory(listen={"command_timeout": "2s"})
    c = p.session(timeout=8)
    t0 = time.monotonic()
    r = c.read_reply()
    elapsed = time.monotonic() - t0
    expect(r, 421, "4.4.2")
    c.expect_closed()
    assert elapsed >= 1.5, f"timed out after {elapsed:.2f}s, before command_timeout"
    c.close()


def test_command_timeout_reset_by_activity(petrel_factory):
    p = petrel_factory(listen={"command_timeout": "2s"})
    with p.session(timeout=8) as c:
        for _ in range(4):
            time.sleep(0.8)
            expect(c.cmd("NOOP"), 250)
        c.send_message(make_message())


def test_command_timeout_in_transaction(petrel_factory):
    p = petrel_factory(listen={"command_timeout": "2s"})
    c = p.session(timeout=8)
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()
    c.close()
    assert p.queue_files() == []


def test_data_timeout(petrel_factory):
    p = petrel_factory(listen={"data_timeout": "2s", "command_timeout": "30s"})
    c = p.session(timeout=8)
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: partial\r\n\r\nsome text\r\n")
    t0 = time.monotonic()
    r = c.read_reply()
    elapsed = time.monotonic() - t0
    expect(r, 421, "4.4.2")
    c.expect_closed()
    c.close()
    assert elapsed >= 1.5, f"timed out after {elapsed:.2f}s"
    assert p.queue_files() == []
    assert p.tmp_files() == []


def test_data_timeout_bdat(petrel_factory):
    p = petrel_factory(listen={"data_timeout": "2s", "command_timeout": "30s"})
    c = p.session(timeout=8)
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    c.send(b"BDAT 100 LAST\r\nonly part of the chunk")
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()
    c.close()
    assert p.queue_files() == []
    assert p.tmp_files() == []


def connect_admitted(p, timeout=5.0):
    """Connect until the server greets with 220 (a slot may take a moment
    to be freed after a client leaves); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        d = p.connect(greeting=False)
        try:
            r = d.read_reply()
            if r.code == 220:
                return d
        except (ConnectionClosed, OSError) as e:
            r = e
        d.close()
        assert time.monotonic() < deadline, f"not admitted: {r}"
        time.sleep(0.1)


def test_max_sessions(petrel_factory):
    p = petrel_factory(top={"max_sessions": "2"})
    a = connect_admitted(p)
    b = connect_admitted(p)
    c = p.connect(greeting=False)
    replies = c.read_all_until_closed()
    assert len(replies) == 1, "\n".join(r.raw() for r in replies)
    expect(replies[0], 421, "4.7.0")
    c.close()
    # the two sessions work
    a.ehlo()
    b.ehlo()
    a.send_message(make_message())
    # after one leaves, a new session is admitted (allow the server a moment
    # to notice the close)
    expect(b.cmd("QUIT"), 221)
    b.expect_closed()
    b.close()
    d = connect_admitted(p)
    d.ehlo()
    d.close()
    a.close()


def test_max_sessions_abrupt_close_frees_slot(petrel_factory):
    p = petrel_factory(top={"max_sessions": "1"})
    for _ in range(5):
        s = connect_admitted(p)
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    d = connect_admitted(p)
    d.ehlo()
    d.close()


def test_many_concurrent_sessions(petrel):
    conns = [petrel.connect() for _ in range(50)]
    for c in conns:
        c.send("EHLO x\r\n")
    for c in conns:
        expect(c.read_reply(), 250)
    for i, c in enumerate(conns):
        c.send_message(make_message(subject=f"c{i}"))
        c.close()
    assert len(petrel.queue_files()) == 50


def test_client_disconnect_mid_data_leaves_nothing(petrel):
    c = petrel.session()
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: cut\r\n\r\n" + b"x" * 100000)
    c.close()
    # the daemon notices the close; then tmp/ must be empty
    deadline = time.monotonic() + 5
    while petrel.tmp_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert petrel.tmp_files() == []
    assert petrel.queue_files() == []
    with petrel.session() as c2:
        c2.marker()


def test_command_timeout_partial_line(petrel_factory):
    """A client that sends half a command and goes quiet is timed out too."""
    p = petrel_factory(listen={"command_timeout": "2s"})
    c = p.session(timeout=8)
    c.send("NOO")
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()
    c.close()


def _wait_tmp_empty(p, timeout=5.0):
    deadline = time.monotonic() + timeout
    while p.tmp_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.tmp_files() == []


@pytest.mark.parametrize("where", ["mid-chunk", "between-chunks"])
def test_client_disconnect_mid_bdat_leaves_nothing(petrel, where):
    c = petrel.session()
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    chunk = (b"q" * 98 + b"\r\n") * 500
    c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
    expect(c.read_reply(), 250, "2.0.0")
    if where == "mid-chunk":
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk[:1000])
    c.close()
    _wait_tmp_empty(petrel)
    assert petrel.queue_files() == []
    with petrel.session() as c2:
        c2.marker()


def test_sync_error_mid_bdat_leaves_nothing(petrel):
    c = petrel.session()
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    chunk = b"Subject: x\r\n\r\n" + (b"q" * 98 + b"\r\n") * 100
    c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
    expect(c.read_reply(), 250, "2.0.0")
    c.send("NOOP\r\nBDAT 5 LAST\r\nabcde")
    replies = c.read_all_until_closed()
    expect(replies[-1], 554, "5.5.0")
    c.close()
    _wait_tmp_empty(petrel)
    assert petrel.queue_files() == []


def test_command_timeout_between_bdat_chunks(petrel_factory):
    p = petrel_factory(listen={"command_timeout": "2s", "data_timeout": "2s"})
    c = p.session(timeout=8)
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    chunk = b"Subject: x\r\n\r\nfirst chunk\r\n"
    c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
    expect(c.read_reply(), 250, "2.0.0")
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()
    c.close()
    _wait_tmp_empty(p)
    assert p.queue_files() == []
