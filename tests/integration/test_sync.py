"""SMTP command synchronization (RFC 2920 section 3.1, Exim's
"SMTP synchronization error"): flagged exactly where a client must wait,
never for a compliant pipelining client, relaxable per listener/network."""

import time

import pytest

from petrel_helpers import (HOSTNAME, dot_stuff, expect, expect_queued,
                            make_message)

SYNC_TEXT = "SMTP synchronization error"


def assert_sync_error(c, allowed_before=(), forbidden_codes=()):
    """Read every reply until the server closes. The last one must be
    `554 5.5.0 SMTP synchronization error`; before it at most one reply,
    whose code is in allowed_before. Returns the replies."""
    replies = c.read_all_until_closed()
    assert replies, "connection closed without a reply"
    last = replies[-1]
    expect(last, 554, "5.5.0")
    assert SYNC_TEXT in last.text, last.raw()
    before = replies[:-1]
    assert len(before) <= 1, "\n".join(r.raw() for r in replies)
    for r in before:
        assert r.code in allowed_before, (
            "unexpected reply before the 554:\n" + "\n".join(x.raw() for x in replies))
    for r in replies:
        assert r.code not in forbidden_codes, "\n".join(x.raw() for x in replies)
    return replies


def assert_sync_logged(p, first_bytes):
    line = p.wait_log(SYNC_TEXT)
    assert "127.0.0.1" in line, line
    assert any(fb in line for fb in first_bytes), (
        f"log line does not show the input ({first_bytes}): {line}")
    return line


def assert_no_sync_error(p):
    assert p.sync_error_lines() == [], p.sync_error_lines()


# --------------------------------------------------------------------------
# errors


def test_input_before_greeting(petrel_factory):
    p = petrel_factory(listen={"greeting_delay": "300ms"})
    c = p.connect(greeting=False)
    c.send("EHLO x\r\n")
    replies = c.read_all_until_closed()
    codes = [r.code for r in replies]
    # at most the greeting, then the 554; the EHLO must not be answered
    assert codes in ([554], [220, 554]), "\n".join(r.raw() for r in replies)
    expect(replies[-1], 554, "5.5.0")
    assert SYNC_TEXT in replies[-1].text
    assert_sync_logged(p, ["EHLO x"])


def test_greeting_delay_compliant_client(petrel_factory):
    """A client that waits for the delayed greeting is never flagged."""
    p = petrel_factory(listen={"greeting_delay": "300ms"})
    with p.connect() as c:
        c.ehlo()
        c.send_message(make_message())
    assert_no_sync_error(p)
    assert len(p.queue_files()) == 1


# command -> (line, codes its own reply may have if answered before the 554)
ENDERS = {
    "EHLO": ("EHLO y", (250,)),
    "HELO": ("HELO y", (250,)),
    "NOOP": ("NOOP", (250,)),
    "QUIT": ("QUIT", (221,)),
    "VRFY": ("VRFY someone", (252,)),
    "EXPN": ("EXPN list", (502,)),
    "STARTTLS": ("STARTTLS", ()),   # never a 220: the client would start TLS
    "AUTH": ("AUTH PLAIN AGFiYwBkZWY=", (500, 502, 503, 504)),
    "unknown": ("FOO bar", (500,)),
}
TRAILING = "MAIL FROM:<late@example.com>\r\n"


@pytest.mark.parametrize("name", list(ENDERS))
def test_input_behind_group_ending_command(petrel, name):
    line, allowed = ENDERS[name]
    c = petrel.session()
    c.send(line + "\r\n" + TRAILING)
    # the trailing MAIL is never executed: no 250 2.1.0
    replies = assert_sync_error(c, allowed_before=allowed)
    assert all(not (r.code == 250 and r.enh == "2.1.0") for r in replies)
    assert_sync_logged(petrel, ["MAIL FROM:", line.split()[0]])
    c.close()


def test_input_behind_ehlo_as_first_command(petrel):
    c = petrel.connect()
    c.send("EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\n")
    replies = assert_sync_error(c, allowed_before=(250,))
    assert all(r.enh not in ("2.1.0", "2.1.5") for r in replies)
    c.close()


def test_content_behind_data_before_354(petrel):
    c = petrel.session()
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    c.send(b"DATA\r\n" + make_message() + b".\r\n")
    # DATA must not be answered with 354 (the content would then be taken)
    assert_sync_error(c, allowed_before=(), forbidden_codes=(354, 250))
    assert_sync_logged(petrel, ["From: <", "DATA"])
    c.close()
    assert petrel.queue_files() == []
    assert petrel.tmp_files() == []


def test_whole_transaction_in_one_write(petrel):
    """MAIL, RCPT, DATA and the content in one write: DATA ends the group."""
    c = petrel.session()
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n"
           + make_message() + b".\r\nQUIT\r\n")
    replies = c.read_all_until_closed()
    codes = [r.code for r in replies]
    assert codes == [250, 250, 554], "\n".join(r.raw() for r in replies)
    expect(replies[2], 554, "5.5.0")
    c.close()
    assert petrel.queue_files() == []


@pytest.mark.parametrize("mode", ["pipelining=no", "after HELO"])
@pytest.mark.parametrize("group", [
    "MAIL FROM:<a@example.com>\r\nRCPT TO:<c@local.example>\r\n",
    "RSET\r\nMAIL FROM:<a@example.com>\r\n",
    "MAIL FROM:<a@example.com>\r\nRCPT TO:<c@local.example>\r\nDATA\r\n",
])
def test_no_pipelining_advertised_any_input_ahead(petrel_factory, mode, group):
    if mode == "pipelining=no":
        p = petrel_factory(listen={"pipelining": "no"})
        c = p.session()
    else:
        p = petrel_factory()
        c = p.connect()
        c.helo()
    c.send(group)
    # at most the first command may have been answered; never the second
    replies = assert_sync_error(c, allowed_before=(250,))
    assert all(r.enh != "2.1.5" and r.code != 354 for r in replies)
    first = group.split("\r\n")[0]
    second = group.split("\r\n")[1]
    assert_sync_logged(p, [first[:10], second[:10]])
    c.close()


def test_pipelining_no_lock_step_is_fine(petrel_factory):
    p = petrel_factory(listen={"pipelining": "no"})
    with p.connect() as c:
        r = c.ehlo()
        assert "PIPELINING" not in r.lines
        for _ in range(3):
            c.send_message(make_message())
        # a command split over two writes is not "input ahead"
        c.send("NO")
        time.sleep(0.05)
        c.send("OP\r\n")
        expect(c.read_reply(), 250, "2.0.0")
        expect(c.cmd("QUIT"), 221)
    assert_no_sync_error(p)
    assert len(p.queue_files()) == 3


def test_bdat_chunk_is_not_input_ahead(petrel_factory):
    """Without PIPELINING, the chunk that follows BDAT is part of the BDAT
    command, not input sent ahead of a reply. (After HELO, BDAT is not
    available at all: CHUNKING is an EHLO extension.)"""
    p = petrel_factory(listen={"pipelining": "no"})
    c = p.session()
    content = make_message()
    with c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        qid = expect_queued(c.read_reply())
        c.marker()
    assert p.spool_msg(qid).body == content
    assert_no_sync_error(p)


def test_helo_lock_step_is_fine(petrel):
    with petrel.connect() as c:
        c.helo()
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt("a@local.example"), 250, "2.1.5")
        expect(c.rcpt("b@local.example"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        # content in several writes after the 354
        msg = make_message()
        c.send(msg[:10])
        c.send(msg[10:] + b".\r\n")
        expect_queued(c.read_reply())
        expect(c.cmd("RSET"), 250)
        expect(c.cmd("NOOP"), 250)
        expect(c.cmd("QUIT"), 221)
        c.expect_closed()
    assert_no_sync_error(petrel)
    assert len(petrel.queue_files()) == 1


# --------------------------------------------------------------------------
# legal pipelining: never flagged


def test_legal_mail_rcpts_data(petrel):
    with petrel.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\n" +
               "".join(f"RCPT TO:<r{i}@local.example>\r\n" for i in range(5)) +
               "DATA\r\n")
        r = c.read_replies(7)
        assert [x.code for x in r] == [250] * 6 + [354]
        c.send(make_message() + b".\r\n")
        expect_queued(c.read_reply())
        c.marker()
    assert_no_sync_error(petrel)


def test_legal_content_right_after_354(petrel):
    with petrel.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n")
        assert [x.code for x in c.read_replies(3)] == [250, 250, 354]
        c.send(make_message() + b".\r\n")
        expect_queued(c.read_reply())
        c.marker()
    assert_no_sync_error(petrel)


@pytest.mark.parametrize("tail,codes", [
    ("MAIL FROM:<n@example.com>\r\n", [250]),
    ("MAIL FROM:<n@example.com>\r\nRCPT TO:<m@local.example>\r\n", [250, 250]),
    ("MAIL FROM:<n@example.com>\r\nRCPT TO:<m@local.example>\r\nDATA\r\n",
     [250, 250, 354]),
    ("RSET\r\n", [250]),
    ("QUIT\r\n", [221]),
])
def test_legal_dot_followed_by_next_group(petrel, tail, codes):
    with petrel.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n")
        assert [x.code for x in c.read_replies(3)] == [250, 250, 354]
        c.send(make_message() + b".\r\n" + tail.encode())
        r = c.read_replies(1 + len(codes))
        expect_queued(r[0])
        assert [x.code for x in r[1:]] == codes
        if codes[-1] == 354:
            c.send(make_message() + b".\r\n")
            expect_queued(c.read_reply())
        if codes[-1] == 221:
            c.expect_closed()
        else:
            c.marker()
    assert_no_sync_error(petrel)


def test_legal_rset_mail_rcpt_data(petrel):
    with petrel.session() as c:
        c.send("RSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n")
        assert [x.code for x in c.read_replies(4)] == [250, 250, 250, 354]
        c.send(make_message() + b".\r\n")
        expect_queued(c.read_reply())
        c.marker()
    assert_no_sync_error(petrel)


def test_legal_bdat_stream_two_transactions(petrel):
    m1 = b"Subject: one\r\n\r\nfirst part|"
    m1b = b"second part\r\n"
    m2 = b"Subject: two\r\n\r\nbody two\r\n"
    with petrel.session() as c:
        c.send(b"MAIL FROM:<s1@example.com>\r\nRCPT TO:<r1@local.example>\r\n"
               + f"BDAT {len(m1)}\r\n".encode() + m1
               + f"BDAT {len(m1b)} LAST\r\n".encode() + m1b
               + b"MAIL FROM:<s2@example.com>\r\nRCPT TO:<r2@local.example>\r\n"
               + f"BDAT {len(m2)} LAST\r\n".encode() + m2
               + b"QUIT\r\n")
        r = c.read_replies(8)
        expect(r[0], 250, "2.1.0")
        expect(r[1], 250, "2.1.5")
        expect(r[2], 250, "2.0.0", f"{len(m1)} octets received")
        q1 = expect_queued(r[3])
        expect(r[4], 250, "2.1.0")
        expect(r[5], 250, "2.1.5")
        q2 = expect_queued(r[6])
        expect(r[7], 221, "2.0.0")
        c.expect_closed()
    assert petrel.spool_msg(q1).body == m1 + m1b
    assert petrel.spool_msg(q2).body == m2
    assert_no_sync_error(petrel)


def test_legal_partial_command_writes(petrel):
    with petrel.session() as c:
        c.send("EH")
        time.sleep(0.05)
        c.send("LO x\r")
        time.sleep(0.05)
        c.send("\n")
        expect(c.read_reply(), 250)
        c.marker()
    assert_no_sync_error(petrel)


# --------------------------------------------------------------------------
# relaxed: enforce_sync = no, or the client in sync_exempt_networks

RELAXED = [
    pytest.param({"enforce_sync": "no"}, id="enforce_sync=no"),
    pytest.param({"sync_exempt_networks": "127.0.0.0/8"}, id="exempt"),
    pytest.param({"sync_exempt_networks": "10.0.0.0/8, 127.0.0.1/32, ::1/128"},
                 id="exempt-list"),
]

RELAXED_ENDERS = {
    "EHLO": ("EHLO y", 250),
    "HELO": ("HELO y", 250),
    "NOOP": ("NOOP", 250),
    "VRFY": ("VRFY someone", 252),
    "EXPN": ("EXPN list", 502),
    "unknown": ("FOO bar", 500),
}


@pytest.mark.parametrize("listen", RELAXED)
@pytest.mark.parametrize("name", list(RELAXED_ENDERS))
def test_relaxed_group_ending_then_more(petrel_factory, listen, name):
    p = petrel_factory(listen=listen)
    line, code = RELAXED_ENDERS[name]
    with p.session() as c:
        c.send(line + "\r\nHELP\r\n")
        r = c.read_replies(2)
        assert r[0].code == code, r[0].raw()
        assert r[1].code == 214, r[1].raw()
        c.marker()
    assert_no_sync_error(p)


@pytest.mark.parametrize("listen", RELAXED)
def test_relaxed_auth_then_more(petrel_factory, listen):
    p = petrel_factory(listen=listen)
    with p.session() as c:
        c.send("AUTH PLAIN AGFiYwBkZWY=\r\nHELP\r\n")
        r = c.read_replies(2)
        assert r[0].code // 100 == 5, r[0].raw()
        assert r[1].code == 214, r[1].raw()
    assert_no_sync_error(p)


@pytest.mark.parametrize("listen", RELAXED)
def test_relaxed_quit_then_more(petrel_factory, listen):
    p = petrel_factory(listen=listen)
    with p.session() as c:
        c.send("QUIT\r\nNOOP\r\n")
        replies = c.read_all_until_closed()
        assert [r.code for r in replies] == [221]
    assert_no_sync_error(p)


@pytest.mark.parametrize("listen", RELAXED)
def test_relaxed_whole_transaction_one_write(petrel_factory, listen):
    p = petrel_factory(listen=listen)
    msg = make_message(body=".dot\r\n")
    with p.session() as c:
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n"
               + dot_stuff(msg) + b".\r\nQUIT\r\n")
        r = c.read_replies(5)
        assert [x.code for x in r] == [250, 250, 354, 250, 221]
        qid = expect_queued(r[3])
        c.expect_closed()
    assert p.spool_msg(qid).body == msg
    assert_no_sync_error(p)


@pytest.mark.parametrize("listen", RELAXED)
def test_relaxed_input_before_greeting(petrel_factory, listen):
    p = petrel_factory(listen=dict(listen, greeting_delay="300ms"))
    with p.connect(greeting=False) as c:
        c.send("EHLO x\r\n")
        r = c.read_replies(2)
        assert r[0].raw().startswith("220 "), r[0].raw()
        assert r[1].code == 250 and r[1].text.startswith(HOSTNAME), r[1].raw()
        c.marker()
    assert_no_sync_error(p)


@pytest.mark.parametrize("listen", RELAXED)
def test_relaxed_pipelining_not_advertised(petrel_factory, listen):
    p = petrel_factory(listen=dict(listen, pipelining="no"))
    with p.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<c@local.example>\r\n")
        r = c.read_replies(2)
        expect(r[0], 250, "2.1.0")
        expect(r[1], 250, "2.1.5")
        c.marker()
    assert_no_sync_error(p)


def test_exempt_networks_not_matching_still_enforced(petrel_factory):
    p = petrel_factory(listen={"sync_exempt_networks": "10.0.0.0/8, ::1/128"})
    c = p.session()
    c.send("NOOP\r\n" + TRAILING)
    assert_sync_error(c, allowed_before=(250,))
    c.close()


def test_enforce_sync_yes_explicit(petrel_factory):
    p = petrel_factory(listen={"enforce_sync": "yes"})
    c = p.session()
    c.send("NOOP\r\n" + TRAILING)
    assert_sync_error(c, allowed_before=(250,))
    c.close()
