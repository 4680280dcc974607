"""DATA content: dot-unstuffing, the end-of-data rule (only CRLF.CRLF) and
SMTP smuggling, bare CR/LF policy, NUL, line length and message size."""

import pytest

from petrel_helpers import dot_stuff, expect, expect_queued, make_message

EVIL = "evil@evil.example"


def open_data(c, sender="sender@example.com", rcpt="rcpt@local.example"):
    c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
    r = c.read_replies(3)
    expect(r[0], 250, "2.1.0")
    expect(r[1], 250, "2.1.5")
    expect(r[2], 354)


def assert_nothing_stored(p):
    assert p.queue_files() == []
    assert p.tmp_files() == []


# --------------------------------------------------------------------------
# dot-stuffing


@pytest.mark.parametrize("content", [
    b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n..x\r\nx.\r\n .\r\n\r\n.\r\nend\r\n",
    b".first line starts with a dot\r\nSubject: x\r\n\r\nbody\r\n",
    b"Subject: x\r\n\r\n" + b"line .\r\n" * 100 + b".\r\n",
    b"Subject: no body\r\n",
])
def test_dot_unstuffing_stored_exactly(petrel, content):
    with petrel.session() as c:
        open_data(c)
        c.send(dot_stuff(content) + b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert petrel.spool_msg(qid).body == content
    assert petrel.tmp_files() == []


def test_empty_content(petrel):
    with petrel.session() as c:
        open_data(c)
        c.send(b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert petrel.spool_msg(qid).body == b""


def test_8bit_content_stored_exactly(petrel):
    content = "Subject: caf\u00e9\r\n\r\n\u00fcber \u2603 \xff\r\n".encode("utf-8") + b"\xfe\x80\r\n"
    with petrel.session() as c:
        expect(c.mail("a@example.com", "BODY=8BITMIME"), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(content + b".\r\n")
        qid = expect_queued(c.read_reply())
    sp = petrel.spool_msg(qid)
    assert sp.body == content
    assert sp.env["body"] == "8bitmime"


@pytest.mark.parametrize("header", ["Message-ID", "Message-Id", "message-id"])
def test_msgid_extracted(petrel, header):
    content = (f"From: <a@example.com>\r\n{header}: <abc.{header}@x.example>\r\n"
               f"Subject: m\r\n\r\nbody\r\n").encode()
    with petrel.session() as c:
        open_data(c)
        c.send(content + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).env["msgid"].strip("<>") == f"abc.{header}@x.example"


def test_no_msgid(petrel):
    with petrel.session() as c:
        open_data(c)
        c.send(b"Subject: none\r\n\r\nbody\r\n.\r\n")
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).env["msgid"] == ""


# --------------------------------------------------------------------------
# SMTP smuggling

VARIANTS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF..LF": b"\n..\n",
    "CRLF.CRCRLF": b"\r\n.\r\r\n",
    "CRLF.LFCRLF": b"\r\n.\n\r\n",
}

SMUGGLED_CMDS = (f"MAIL FROM:<{EVIL}>\r\nRCPT TO:<victim@local.example>\r\nDATA\r\n").encode()
SMUGGLED_BODY = (f"From: <{EVIL}>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n").encode()
SMUGGLED = SMUGGLED_CMDS + SMUGGLED_BODY


@pytest.mark.parametrize("split", ["one-write", "split", "bytewise"])
@pytest.mark.parametrize("bare_lf", ["reject", "normalize"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_smuggling_variant(petrel_factory, variant, bare_lf, split):
    p = petrel_factory(listen={"bare_lf": bare_lf})
    v = VARIANTS[variant]
    head = b"From: <legit@example.com>\r\nSubject: legit\r\n\r\nhello" + v
    tail = SMUGGLED + b".\r\n"  # the real CRLF.CRLF
    with p.session() as c:
        open_data(c, sender="legit@example.com")
        if split == "split":
            c.send(head)
            c.send(tail)
        elif split == "bytewise":
            data = head + tail
            for i in range(len(data)):
                c.send(data[i:i + 1])
        else:
            c.send(head + tail)
        r = c.read_reply()
        # exactly one reply for the whole thing
        c.marker()
        if bare_lf == "reject":
            expect(r, 550, "5.6.0")
        else:
            qid = expect_queued(r)
    msgs = p.all_msgs()
    for m in msgs:
        assert m.env["sender"] != EVIL, "the smuggled message was queued"
    assert p.tmp_files() == []
    if bare_lf == "reject":
        assert msgs == []
    else:
        assert [m.env["id"] for m in msgs] == [qid]
        m = msgs[0]
        assert m.env["sender"] == "legit@example.com"
        assert m.rcpts == ["rcpt@local.example"]
        body = m.body
        # normalized: every CR and LF is part of a CRLF pair
        assert body.count(b"\r") == body.count(b"\n") == body.count(b"\r\n"), body
        assert body.startswith(b"From: <legit@example.com>\r\nSubject: legit\r\n\r\nhello")
        assert f"MAIL FROM:<{EVIL}>\r\n".encode() in body
        assert body.endswith(b"smuggled body\r\n")


def test_real_end_then_evil_is_a_separate_command(petrel):
    """Control: with a real CRLF.CRLF the next MAIL is a command (pipelined
    after end of data), proving the smuggling tests can tell the difference."""
    with petrel.session() as c:
        open_data(c, sender="legit@example.com")
        c.send(b"Subject: legit\r\n\r\nhello\r\n.\r\n" + SMUGGLED_CMDS)
        r = c.read_replies(4)
        expect_queued(r[0])
        assert [x.code for x in r[1:4]] == [250, 250, 354]
        c.send(SMUGGLED_BODY + b".\r\n")
        expect_queued(c.read_reply())
        c.marker()
    assert sorted(m.env["sender"] for m in petrel.all_msgs()) == [EVIL, "legit@example.com"]


# --------------------------------------------------------------------------
# bare CR / bare LF / NUL

BARE = [
    (b"Subject: x\r\n\r\nline1\nline2\r\n", b"Subject: x\r\n\r\nline1\r\nline2\r\n"),
    (b"Subject: x\r\n\r\na\rb\r\n", b"Subject: x\r\n\r\na\r\nb\r\n"),
    (b"Subject: x\r\n\r\na\r\r\n", b"Subject: x\r\n\r\na\r\n\r\n"),
    (b"Subject: x\n\nunix lines\r\n", b"Subject: x\r\n\r\nunix lines\r\n"),
    (b"\nSubject: x\r\n", b"\r\nSubject: x\r\n"),
]


@pytest.mark.parametrize("raw,normalized", BARE)
def test_bare_cr_lf_rejected(petrel, raw, normalized):
    with petrel.session() as c:
        open_data(c)
        c.send(raw + b".\r\n")
        expect(c.read_reply(), 550, "5.6.0")
        c.marker()
        # the session goes on
        c.send_message(make_message())
    assert len(petrel.queue_files()) == 1
    assert petrel.tmp_files() == []


@pytest.mark.parametrize("raw,normalized", BARE)
def test_bare_cr_lf_normalized(petrel_factory, raw, normalized):
    p = petrel_factory(listen={"bare_lf": "normalize"})
    with p.session() as c:
        open_data(c)
        c.send(raw + b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert p.spool_msg(qid).body == normalized


@pytest.mark.parametrize("bare_lf", ["reject", "normalize"])
@pytest.mark.parametrize("where", ["body", "header", "start"])
def test_nul_rejected(petrel_factory, bare_lf, where):
    p = petrel_factory(listen={"bare_lf": bare_lf})
    content = {"body": b"Subject: x\r\n\r\nnul\x00here\r\n",
               "header": b"Subject: x\x00y\r\n\r\nbody\r\n",
               "start": b"\x00Subject: x\r\n\r\nbody\r\n"}[where]
    with p.session() as c:
        open_data(c)
        c.send(content + b".\r\n")
        expect(c.read_reply(), 550, "5.6.0")
        c.marker()
    assert_nothing_stored(p)


# --------------------------------------------------------------------------
# line length


@pytest.mark.parametrize("n,ok", [(98, True), (99, False), (500, False)])
def test_line_length_limit(petrel_factory, n, ok):
    """max_line_length counts the line including its CRLF."""
    p = petrel_factory(listen={"max_line_length": "100"})
    content = b"Subject: x\r\n\r\n" + b"y" * n + b"\r\nshort\r\n"
    with p.session() as c:
        open_data(c)
        c.send(content + b".\r\n")
        r = c.read_reply()
        c.marker()
    if ok:
        assert p.spool_msg(expect_queued(r)).body == content
    else:
        expect(r, 552, "5.6.0")
        assert_nothing_stored(p)


def test_line_length_default_1000(petrel):
    with petrel.session() as c:
        open_data(c)
        c.send(b"Subject: x\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")
        expect_queued(c.read_reply())
        open_data(c)
        c.send(b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\n")
        expect(c.read_reply(), 552, "5.6.0")
        c.marker()
    assert len(petrel.queue_files()) == 1


def test_line_length_unlimited(petrel_factory):
    p = petrel_factory(listen={"max_line_length": "0"})
    content = b"Subject: x\r\n\r\n" + b"y" * 20000 + b"\r\n"
    with p.session() as c:
        open_data(c)
        c.send(content + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert p.spool_msg(qid).body == content


# --------------------------------------------------------------------------
# size


@pytest.mark.parametrize("size", [20000, 300000])
def test_message_over_max_size(petrel_factory, size):
    p = petrel_factory(listen={"max_message_size": "10000"})
    with p.session() as c:
        open_data(c)
        c.send(b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * (size // 80) + b".\r\n")
        expect(c.read_reply(), 552, "5.3.4")
        c.marker()
        assert_nothing_stored(p)
        # the session is still good for a message within the limit
        content = b"Subject: small\r\n\r\n" + (b"z" * 78 + b"\r\n") * 50
        qid = c.send_message(content)
    assert p.spool_msg(qid).body == content


def test_large_message_stored_exactly(petrel):
    lines = [(b"%06d " % i) + b"x" * 70 + b"\r\n" for i in range(40000)]
    lines[100] = b"." + lines[100]
    content = b"Subject: large\r\n\r\n" + b"".join(lines)
    with petrel.session() as c:
        open_data(c)
        c.send(dot_stuff(content) + b".\r\n")
        qid = expect_queued(c.read_reply())
    sp = petrel.spool_msg(qid)
    assert sp.body == content
    assert petrel.tmp_files() == []
