"""RFC 2920 command pipelining as a client uses it: whole groups in one write,
replies in order and exactly one per command."""

import subprocess

import pytest

from petrel_helpers import (dot_stuff, expect, expect_queued, make_message)


def test_mail_50_rcpt_data_one_write(petrel):
    rcpts = [f"user{i}@local.example" for i in range(50)]
    with petrel.session() as c:
        group = "MAIL FROM:<bulk@example.com>\r\n" + "".join(
            f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n"
        c.send(group)
        replies = c.read_replies(52)
        expect(replies[0], 250, "2.1.0")
        for r in replies[1:51]:
            expect(r, 250, "2.1.5")
        expect(replies[51], 354)
        msg = make_message(subject="fifty")
        c.send(msg + b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    sp = petrel.spool_msg(qid)
    assert sp.rcpts == rcpts
    assert sp.body == msg
    assert petrel.sync_error_lines() == []


def test_replies_in_order_with_mixed_results(petrel_factory):
    """Accepted and rejected RCPTs in one group: each reply in its place."""
    p = petrel_factory(relay={"networks": "10.0.0.0/8"})
    with p.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\n"
               "RCPT TO:<ok1@local.example>\r\n"
               "RCPT TO:<x@other.example>\r\n"
               "RCPT TO:<bad@@syntax>\r\n"
               "RCPT TO:<ok2@local.example>\r\n"
               "DATA\r\n")
        r = c.read_replies(6)
        expect(r[0], 250, "2.1.0")
        expect(r[1], 250, "2.1.5")
        expect(r[2], 550, "5.7.1")
        expect(r[3], 501, "5.1.3")
        expect(r[4], 250, "2.1.5")
        expect(r[5], 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert p.spool_msg(qid).rcpts == ["ok1@local.example", "ok2@local.example"]


def test_pipelined_group_with_failed_mail(petrel):
    """A rejected MAIL: the RCPTs behind it get 503 and DATA 503, in order."""
    with petrel.session() as c:
        c.send("MAIL FROM:<bad@@x>\r\nRCPT TO:<a@local.example>\r\nDATA\r\n")
        r = c.read_replies(3)
        expect(r[0], 501, "5.1.7")
        expect(r[1], 503, "5.5.1")
        expect(r[2], 503, "5.5.1")
        c.marker()
    assert petrel.queue_files() == []


def test_body_dot_and_next_transaction_one_write(petrel):
    m1 = make_message(subject="first")
    m2 = make_message(subject="second")
    with petrel.session() as c:
        c.send("MAIL FROM:<s1@example.com>\r\nRCPT TO:<r1@local.example>\r\nDATA\r\n")
        r = c.read_replies(3)
        expect(r[0], 250, "2.1.0")
        expect(r[1], 250, "2.1.5")
        expect(r[2], 354)
        c.send(m1 + b".\r\nMAIL FROM:<s2@example.com>\r\n"
               b"RCPT TO:<r2@local.example>\r\nDATA\r\n")
        r = c.read_replies(4)
        q1 = expect_queued(r[0])
        expect(r[1], 250, "2.1.0")
        expect(r[2], 250, "2.1.5")
        expect(r[3], 354)
        c.send(m2 + b".\r\nQUIT\r\n")
        r = c.read_replies(2)
        q2 = expect_queued(r[0])
        expect(r[1], 221, "2.0.0")
        c.expect_closed()
    assert q1 != q2
    s1, s2 = petrel.spool_msg(q1), petrel.spool_msg(q2)
    assert (s1.env["sender"], s1.rcpts, s1.body) == ("s1@example.com", ["r1@local.example"], m1)
    assert (s2.env["sender"], s2.rcpts, s2.body) == ("s2@example.com", ["r2@local.example"], m2)
    assert petrel.sync_error_lines() == []


def test_chained_transactions_one_write_per_message(petrel):
    """Ten messages, each costing one write (body + '.' + next group) after
    the first group: replies in order, all ten stored correctly."""
    n = 10
    msgs = [make_message(subject=f"chain {i}", body=f".dot {i}\r\nline\r\n")
            for i in range(n)]
    ids = []
    with petrel.session() as c:
        c.send("MAIL FROM:<s0@example.com>\r\nRCPT TO:<r0@local.example>\r\nDATA\r\n")
        r = c.read_replies(3)
        assert [x.code for x in r] == [250, 250, 354]
        for i in range(n):
            tail = (f"MAIL FROM:<s{i + 1}@example.com>\r\n"
                    f"RCPT TO:<r{i + 1}@local.example>\r\nDATA\r\n"
                    if i + 1 < n else "QUIT\r\n")
            c.send(dot_stuff(msgs[i]) + b".\r\n" + tail.encode())
            r = c.read_replies(4 if i + 1 < n else 2)
            ids.append(expect_queued(r[0]))
            if i + 1 < n:
                expect(r[1], 250, "2.1.0")
                expect(r[2], 250, "2.1.5")
                expect(r[3], 354)
            else:
                expect(r[1], 221, "2.0.0")
        c.expect_closed()
    assert sorted(ids) == petrel.queue_ids()
    for i, qid in enumerate(ids):
        sp = petrel.spool_msg(qid)
        assert sp.env["sender"] == f"s{i}@example.com"
        assert sp.rcpts == [f"r{i}@local.example"]
        assert sp.body == msgs[i]
    assert petrel.sync_error_lines() == []


def test_rset_mail_rcpt_data_one_write(petrel):
    """The Postfix connection-cache shape: RSET probe pipelined with MAIL."""
    with petrel.session() as c:
        c.send("RSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\n"
               "RCPT TO:<c@local.example>\r\nDATA\r\n")
        r = c.read_replies(5)
        assert [(x.code, x.enh) for x in r[:4]] == [
            (250, "2.0.0"), (250, "2.1.0"), (250, "2.1.5"), (250, "2.1.5")]
        expect(r[4], 354)
        c.send(make_message() + b".\r\n")
        expect_queued(c.read_reply())
        c.marker()
    assert petrel.sync_error_lines() == []


def test_content_in_many_small_writes(petrel):
    """Content split at awkward points (inside CRLF, inside CRLF.CRLF) is
    reassembled exactly."""
    msg = make_message(body="a\r\n.b\r\n\r\n..\r\nend\r\n")
    wire = dot_stuff(msg) + b".\r\n"
    with petrel.session() as c:
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n")
        assert [x.code for x in c.read_replies(3)] == [250, 250, 354]
        for i in range(0, len(wire), 3):
            c.send(wire[i:i + 3])
        qid = expect_queued(c.read_reply())
        c.marker()
    assert petrel.spool_msg(qid).body == msg


@pytest.mark.parametrize("extra", [[], ["--tls"]])
def test_swaks_pipeline(petrel, extra):
    body = "Subject: swaks pipelined\r\n\r\nhello from swaks\r\n"
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(petrel.port),
         "--pipeline", "--ehlo", "swaks.test", "--from", "sw@example.com",
         "--to", "a@local.example,b@local.example", "--data", body,
         "--timeout", "5", *extra],
        capture_output=True, timeout=30)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    msgs = petrel.all_msgs()
    assert len(msgs) == 1
    assert msgs[0].env["sender"] == "sw@example.com"
    assert msgs[0].rcpts == ["a@local.example", "b@local.example"]
    assert b"hello from swaks\r\n" in msgs[0].body
    assert petrel.sync_error_lines() == []
    if extra:
        assert msgs[0].env["proto"] == "esmtps"


def test_thousand_rcpts_one_write(petrel):
    """The largest group RCPTMAX allows, in one write: 1002 replies in
    order, even though the input and the replies span many buffers."""
    rcpts = [f"rcpt-{i:04d}@local.example" for i in range(1000)]
    with petrel.session(timeout=15) as c:
        c.send("MAIL FROM:<big@example.com>\r\n"
               + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n")
        r = c.read_replies(1002)
        expect(r[0], 250, "2.1.0")
        bad = [(i, x.raw()) for i, x in enumerate(r[1:1001]) if (x.code, x.enh) != (250, "2.1.5")]
        assert bad == []
        expect(r[1001], 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert petrel.spool_msg(qid).rcpts == rcpts
    assert petrel.sync_error_lines() == []
