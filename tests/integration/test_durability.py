"""Durability: a 250 means the message is on disk (survives kill -9); the
spool is rebuilt on restart; a full disk gives 452 4.3.1 and leaves no
partial file; `petrel queue` lists the spool with the daemon stopped."""

import os
import re
import subprocess
import pytest

from petrel_helpers import (dot_stuff, expect, expect_queued, make_message,
                            parse_spool_file)


def send_one(p, sender="s@example.com", rcpts=("r@local.example",), msg=None):
    msg = msg or make_message()
    with p.session() as c:
        qid = c.send_message(dot_stuff(msg), sender=sender, rcpts=rcpts)
    return qid, msg


# --------------------------------------------------------------------------
# petrel queue


def test_queue_empty(petrel):
    assert petrel.queue_cmd() == []
    r = petrel.run_cli("queue", "-c", str(petrel.conf_path))
    assert r.stdout.decode().strip() == "Mail queue is empty"


def test_queue_listing_format(petrel):
    q1, _ = send_one(petrel, "alice@example.com", ("a@local.example", "b@local.example"))
    with petrel.session() as c:
        expect(c.cmd("MAIL FROM:<>"), 250)
        expect(c.rcpt("postmaster"), 250)
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        q2 = expect_queued(c.read_reply())
    r = petrel.run_cli("queue", "-c", str(petrel.conf_path))
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    # exact layout: ID at column 0, recipients indented by exactly 8 spaces
    assert re.search(rf"(?m)^{q1} +\S+ +\S+ +<alice@example\.com>\n"
                     r" {8}<?a@local\.example>?\n {8}<?b@local\.example>?$", text), text
    assert re.search(rf"(?m)^{q2} +\S+ +\S+ +<>\n {{8}}<?postmaster(@\S+)?>?$", text), text
    entries = {e.id: e for e in petrel.queue_cmd()}
    assert set(entries) == {q1, q2}
    assert entries[q1].sender == "alice@example.com"
    assert entries[q1].rcpts == ["a@local.example", "b@local.example"]
    assert entries[q2].sender == ""


def test_queue_works_with_daemon_stopped(petrel):
    qid, _ = send_one(petrel)
    petrel.stop()
    assert [e.id for e in petrel.queue_cmd()] == [qid]


# --------------------------------------------------------------------------
# kill -9


def test_kill9_after_250(petrel):
    qid, msg = send_one(petrel, "durable@example.com", ("x@local.example", "y@local.example"))
    petrel.kill9()
    # on disk, complete, parseable
    sp = petrel.spool_msg(qid)
    assert sp.body == msg
    assert sp.env["id"] == qid
    assert sp.env["sender"] == "durable@example.com"
    assert sp.rcpts == ["x@local.example", "y@local.example"]
    assert petrel.tmp_files() == []
    entries = petrel.queue_cmd()
    assert [(e.id, e.sender, e.rcpts) for e in entries] == [
        (qid, "durable@example.com", ["x@local.example", "y@local.example"])]
    # restart: still there, and a new message is accepted
    petrel.start()
    assert [e.id for e in petrel.queue_cmd()] == [qid]
    qid2, _ = send_one(petrel)
    assert qid2 != qid
    assert sorted(e.id for e in petrel.queue_cmd()) == sorted([qid, qid2])
    assert petrel.spool_msg(qid).body == msg


def test_kill9_after_pipelined_burst(petrel):
    """Every message that got its 250 survives, also when the 250s came in a
    pipelined burst right before the kill."""
    n = 20
    ids = []
    with petrel.session() as c:
        c.send("MAIL FROM:<b@example.com>\r\nRCPT TO:<r@local.example>\r\nDATA\r\n")
        assert [r.code for r in c.read_replies(3)] == [250, 250, 354]
        for i in range(n):
            tail = (b"MAIL FROM:<b@example.com>\r\nRCPT TO:<r@local.example>\r\nDATA\r\n"
                    if i + 1 < n else b"")
            c.send(make_message(subject=f"burst {i}") + b".\r\n" + tail)
            r = c.read_replies(4 if tail else 1)
            ids.append(expect_queued(r[0]))
        petrel.kill9()
    assert sorted(ids) == petrel.queue_ids()
    for qid in ids:
        parse_spool_file(petrel.queue_dir / qid)
    assert sorted(e.id for e in petrel.queue_cmd()) == sorted(ids)


def test_kill9_mid_data_leaves_no_message(petrel):
    c = petrel.session()
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: partial\r\n\r\n" + b"x" * 200000 + b"\r\n")
    petrel.kill9()
    c.close()
    assert petrel.queue_files() == []
    assert petrel.queue_cmd() == []
    petrel.start()
    assert petrel.queue_cmd() == []
    # no transaction in progress after the restart: tmp/ is empty
    assert petrel.tmp_files() == []
    send_one(petrel)
    assert len(petrel.queue_cmd()) == 1


def test_sigterm_restart_keeps_queue(petrel):
    ids = [send_one(petrel)[0] for _ in range(3)]
    assert petrel.stop() == 0
    petrel.start()
    assert sorted(e.id for e in petrel.queue_cmd()) == sorted(ids)


def test_sigterm_with_open_session(petrel_factory):
    """SIGTERM while a client is connected and mid-transaction: the daemon
    waits up to shutdown_timeout for the transaction, then still exits; the
    accepted message stays, nothing partial is left."""
    petrel = petrel_factory(top={"shutdown_timeout": "1s"})
    qid, _ = send_one(petrel)
    c = petrel.session()
    expect(c.mail(), 250, "2.1.0")
    expect(c.rcpt(), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: partial\r\n\r\nhalf")
    petrel.stop()
    c.close()
    assert petrel.queue_ids() == [qid]
    assert petrel.tmp_files() == []


# --------------------------------------------------------------------------
# disk full


@pytest.fixture
def tiny_spool(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "tinyspool"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    yield mnt
    # the daemon is stopped by then (petrel_factory's teardown runs first:
    # this fixture was set up before it)
    r = subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def _big(n):
    line = b"y" * 98 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (n // 100)


@pytest.mark.parametrize("mode", ["DATA", "BDAT"])
def test_disk_full(tiny_spool, petrel_factory, mode):
    p = petrel_factory(top={"spool_dir": str(tiny_spool)})
    with p.session(timeout=10) as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        big = _big(2_000_000)
        if mode == "DATA":
            expect(c.cmd("DATA"), 354)
            c.send(big + b".\r\n")
        else:
            c.send(f"BDAT {len(big)} LAST\r\n".encode() + big)
        expect(c.read_reply(), 452, "4.3.1")
        assert p.queue_files() == []
        assert p.tmp_files() == []
        c.marker()
        # space is back: a small message goes through on the same session
        qid = c.send_message(make_message())
    assert p.queue_ids() == [qid]
    assert p.tmp_files() == []
    assert [e.id for e in p.queue_cmd()] == [qid]


def test_disk_full_chunks_spread(tiny_spool, petrel_factory):
    """Disk fills up in the middle of a multi-chunk BDAT transaction."""
    p = petrel_factory(top={"spool_dir": str(tiny_spool)})
    chunk = (b"z" * 98 + b"\r\n") * 3000  # 300 kB
    with p.session(timeout=10) as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        replies = []
        for i in range(6):
            last = " LAST" if i == 5 else ""
            c.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            replies.append(c.read_reply())
            if replies[-1].code != 250:
                break
        expect(replies[-1], 452, "4.3.1")
        assert all(r.code == 250 for r in replies[:-1])
        assert p.queue_files() == []
        expect(c.cmd("RSET"), 250, "2.0.0")
        assert p.tmp_files() == []
        qid = c.send_message(make_message())
    assert p.queue_ids() == [qid]


def test_queue_does_not_list_message_in_progress(petrel):
    with petrel.session() as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(b"Subject: in progress\r\n\r\n" + (b"p" * 98 + b"\r\n") * 500)
        assert petrel.queue_cmd() == []
        c.send(b".\r\n")
        qid = expect_queued(c.read_reply())
    assert [e.id for e in petrel.queue_cmd()] == [qid]


def test_disk_full_delivery_goes_on(tiny_spool, petrel_factory, tmp_path):
    """The spool's file system is full: receiving refuses with 452, but mail
    already queued is still delivered (and removed, which frees space);
    once space is back the server accepts again by itself, no restart."""
    from delivery_helpers import SinkProcess, wait_until  # noqa: E402
    sink = SinkProcess(0, workdir=str(tmp_path / "sink"))
    sink.start()
    try:
        route = f"[destination sink.example]\nroute = 127.0.0.1:{sink.port}\ntls = may\n"
        p = petrel_factory(top={"spool_dir": str(tiny_spool), "retry_initial": "1s",
                                "retry_max": "2s"}, extra=route)
        qids = []
        with p.session() as c:
            for i in range(5):
                qids.append(c.send_message(make_message(subject=f"queued {i}"),
                                           rcpts=[f"r{i}@sink.example"]))
        p.stop()
        # fill the file system to the last block
        filler = tiny_spool / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        p.top["queue_only"] = "no"
        p.write_config()
        p.start()
        with p.session(timeout=10) as c:   # receiving: full
            expect(c.mail(), 250, "2.1.0")
            expect(c.rcpt("x@sink.example"), 250, "2.1.5")
            expect(c.cmd("DATA"), 354)
            c.send(_big(200_000) + b".\r\n")
            expect(c.read_reply(), 452, "4.3.1")
        # delivering: goes on
        wait_until(lambda: len(sink.messages()) >= 5, 20, "5 messages at the sink",
                   lambda: "\n".join(p.log_lines()[-20:]))
        wait_until(lambda: p.queue_files() == [], 10, "the queue to empty")
        got = sorted(r for m in sink.messages() for r in m["rcpts"])
        assert got == [f"r{i}@sink.example" for i in range(5)]
        # space is back: accepted and delivered, same daemon
        filler.unlink()
        with p.session(timeout=10) as c:
            c.send_message(make_message(subject="after"), rcpts=["late@sink.example"])
        wait_until(lambda: len(sink.messages()) >= 6, 20, "the 6th message at the sink")
        assert p.tmp_files() == []
        p.check_alive()
    finally:
        sink.stop()
