"""Peer faults on the delivery side (issue 6): Petrel delivers to a scripted
receiving server (tests/tools/peer_script.py) that misbehaves at one
chosen point, then behaves.

test_delivery.py already covers drops mid-window / mid-BDAT / mid-DATA,
421 mid-window, stalls, garbage and a reply injected before the TLS
handshake; this file covers the rest:

- more replies than commands: an extra reply inside a pipelined window, a
  reply before the greeting, after the greeting, after the EHLO reply,
  while idle, a duplicated RCPT reply;
- fewer replies than commands: a RCPT reply or an end-of-data reply that
  never comes (the connection times out);
- TLS closed without close_notify (FIN or RST) mid-transaction, right
  after an end-of-data reply, and between transactions;
- over-long replies: a line without CRLF (100 KB, and 16 MB as the
  greeting), 10,000 continuation lines;
- 421 as the greeting, to EHLO, to STARTTLS, to MAIL, to the end of data
  (BDAT LAST and "."), multi-line; 5xx and 4xx to the end of data inside a
  pipelined window;
- every reply split at every byte (slow trickle).

Invariants, asserted by settle() in every test: no "=>" line without that
message's own 2xx to its end of data (the server's end-of-data reply names
its stored message, "250 2.0.0 Ok: queued as N", and
test_delivery.check_exactly_once checks each "=>" line quotes the copy of
that very message and recipient); none lost (after the fault the server
behaves, and every recipient is received exactly once with the content
Petrel accepted, or bounced where a 5xx was given); the daemon is alive
(its process runs and `petrel status` answers).

Connection numbers are deterministic: max_connections = 1, and the faults
are scripted for connection 1 (the server's accept order), later
connections behave. Desynchronising faults "poison" their connection: from
the fault on, the server stores nothing and answers every end of data 451,
so a reply paired with the wrong command can never look like a delivery
that happened.
"""

import re
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from delivery_helpers import (log_grep, tail,  # noqa: E402
                              wait_rcpts, wait_until)
from peer_script import DUP, PeerScript, Rule  # noqa: E402
from test_delivery import (SENDER, SINK_DOMAIN, check_exactly_once,  # noqa: E402
                           inject, make_msg, make_msgs, make_petrel, preload,
                           wait_spool_empty)

BDAT_DATA = pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
# short timeouts for the tests that wait for one; a window of 2 leaves a
# backlog in the ready list while the connection waits (the queue then
# kicks the connection twice a second: that must not push the deadline)
FAST = {"reply_timeout": "1s", "data_timeout": "2s", "pipeline_window": 2}


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def peer_factory(request):
    made = []

    def make(**kw):
        s = PeerScript(**kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for i, s in enumerate(made):
            print(f"==== peer{i} ====\n{s.describe()}")
    errors = [e for s in made for e in s.errors]
    assert not errors, f"the scripted server itself failed: {errors}"


def petrel_to(factory, peer, dest=None, top=None, start=True):
    """A Petrel routing sink.example (and so SENDER's bounces) to the
    peer, over one connection at a time."""
    d = {"max_connections": 1}
    d.update(dest or {})
    return make_petrel(factory, route=f"127.0.0.1:{peer.port}", dest=d, top=top,
                       start=start)


def rss_peak_kb(p):
    for ln in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines():
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1])
    raise AssertionError("no VmHWM")


def daemon_alive(p):
    p.check_alive()
    r = p.run_cli("status", "-c", str(p.conf_path), timeout=10)
    assert r.returncode == 0 and r.stdout.strip(), \
        f"petrel status: {r.returncode} {r.stdout!r} {r.stderr!r}"


def settle(p, peer, msgs, delivered=None, bounces=0, timeout=20):
    """The invariants: wait until every expected recipient copy (and
    bounce) is at the peer and the spool is empty; every recipient
    arrived exactly once with its content and every "=>" line quotes its
    own end-of-data 2xx (check_exactly_once); exactly `bounces` bounces;
    the daemon is alive. Returns the "=>" lines."""
    want = sum(len(delivered.get(m.tid, m.rcpts)) if delivered else len(m.rcpts)
               for m in msgs) + bounces
    wait_rcpts(peer, p, want, timeout, diag=peer.describe)
    wait_spool_empty(p, timeout=timeout)
    dl = check_exactly_once(p, peer, msgs, delivered)
    got = [e for e in peer.messages() if e["mail_from"] == ""]
    assert len(got) == bounces, f"{len(got)} bounces, expected {bounces}"
    for e in got:
        assert e["rcpts"] == [SENDER], e["rcpts"]
    daemon_alive(p)
    return dl


def conn_of(dl, msg):
    """Petrel's connection numbers of a message's "=>" lines."""
    return {d["conn"] for d in dl if d["id"] == msg.qid}


def closed_line(p, conn):
    ls = log_grep(p, rf" C={conn} H=\S+ \[[^\]]+\]:\d+ (closed|failed)")
    assert ls, f"no close line for C={conn}\n" + tail(p)
    return ls[0]


def fired(peer, n=1):
    assert len(peer.fired) >= n, f"the fault did not fire: {peer.fired}\n{peer.describe()}"


def client_closed(peer, i=0):
    """Petrel closed connection i+1 (the server saw its EOF while it
    stalled, lingered or dribbled)."""
    wait_until(lambda: peer.sessions[i].client_closed, 3,
               f"Petrel to close connection {i + 1}")


def no_client_violation(peer):
    assert not peer.errors_client, peer.errors_client


# --------------------------------------------------------------------------
# 1. more replies than commands


@BDAT_DATA
def test_extra_reply_in_window(petrel_factory, peer_factory, chunking):
    """An extra "250" after the reply to the first MAIL, sent with the
    replies of the whole pipelined group. Paired by counting, it would
    shift every later reply by one: the RCPT's 250 taken for the end of
    data (a delivery reported without its own 2xx), a 250 taken for DATA's
    354. Petrel must see that the batch holds more replies than it sent
    commands, close, and deliver everything later."""
    peer = peer_factory(chunking=chunking,
                        rules={1: [Rule("MAIL", post=b"250 2.0.0 Ok\r\n", poison=True)]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("extra", 4, nrcpt=lambda i: 2 if i == 1 else 1)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert "1" not in {d["conn"] for d in dl}, \
        "a delivery reported on the desynchronised connection"
    line = closed_line(p, 1)
    assert "protocol error" in line, line
    no_client_violation(peer)


@pytest.mark.parametrize("where", ["before-greeting", "as-greeting-delayed",
                                   "after-greeting", "after-greeting-delayed",
                                   "after-ehlo"])
def test_unsolicited_reply_opening(petrel_factory, peer_factory, where):
    """A reply nobody asked for during the opening: before the 220 (same
    write), or 0.3 s before it (a 250 is no greeting, and a 220 no reply to
    EHLO), right after it (same write), 0.3 s after it (Petrel has sent
    EHLO by then, so counting pairs it with EHLO and every later reply is
    one off, and a 250 ends up as the reply to DATA), or after the EHLO
    reply (same write: Petrel must not take it as the reply to STARTTLS
    and go on in plaintext). Except in the after-greeting-delayed case,
    where the unsolicited 250 is all Petrel can take for the EHLO reply
    (without STARTTLS in it), no MAIL may go out in plaintext."""
    extra = b"250 2.0.0 unsolicited\r\n"
    rule = {"before-greeting": Rule("greeting", pre=extra, poison=True),
            "as-greeting-delayed": Rule("greeting", reply=extra, gap=0.3, poison=True,
                                        post=b"220 peer.petrel.test ESMTP\r\n"),
            "after-greeting": Rule("greeting", post=extra, poison=True),
            "after-greeting-delayed": Rule("greeting", post=extra, gap=0.3, poison=True),
            "after-ehlo": Rule("EHLO", post=extra, poison=True)}[where]
    # delayed: a server that writes each reply on its own, so that no
    # reply of the shifted sequence shares a read with the next one
    peer = peer_factory(rules={1: [rule]},
                        reply_gap=0.1 if where.endswith("delayed") else 0)
    p = petrel_to(petrel_factory, peer)
    msgs = make_msgs("unsol", 2)
    inject(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert "1" not in {d["conn"] for d in dl}
    assert all(d["tls"] for d in dl), [d["line"] for d in dl]
    closed_line(p, 1)
    no_client_violation(peer)
    if where != "after-greeting-delayed":
        for sess in peer.sessions:
            assert b"MAIL" not in sess.plain_verbs, \
                f"MAIL in plaintext on connection {sess.index}: {sess.plain_verbs}"


def test_extra_reply_lockstep(petrel_factory, peer_factory):
    """Without PIPELINING: an extra 250 0.2 s after the reply to MAIL, and
    the RCPT's own reply 0.2 s after that. Counting pairs the extra 250
    with RCPT and the RCPT's 250 with DATA: a 2xx can never answer DATA
    (354 or a failure, RFC 5321 4.3.2), so Petrel must close there instead
    of reporting a delivery for content it never sent."""
    peer = peer_factory(pipelining=False, chunking=False,
                        rules={1: [Rule("MAIL", post=b"250 2.0.0 Ok\r\n", gap=0.2,
                                        poison=True),
                                   Rule("RCPT", wait=0.2)]})
    p = petrel_to(petrel_factory, peer)
    msgs = make_msgs("extralock", 2)
    inject(p, msgs)
    dl = settle(p, peer, msgs)
    assert len(peer.fired) == 2
    assert "1" not in {d["conn"] for d in dl}
    assert "protocol error" in closed_line(p, 1)


@BDAT_DATA
def test_duplicate_rcpt_reply(petrel_factory, peer_factory, chunking):
    """The first RCPT answered twice."""
    peer = peer_factory(chunking=chunking,
                        rules={1: [Rule("RCPT", post=DUP, poison=True)]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("duprcpt", 3, nrcpt=lambda i: 2)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert "1" not in {d["conn"] for d in dl}
    assert "protocol error" in closed_line(p, 1)


def test_unsolicited_reply_while_idle(petrel_factory, peer_factory):
    """After the last end-of-data reply, with nothing in flight, the server
    sends a reply 0.3 s later: the connection is closed, and mail that
    arrives afterwards goes over a new one."""
    peer = peer_factory(rules={1: [Rule("END", n=2, post=b"250 2.0.0 hello?\r\n", gap=0.3)]})
    p = petrel_to(petrel_factory, peer, start=False)
    first = make_msgs("idle", 2)
    preload(p, first)
    wait_rcpts(peer, p, 2, 10)
    p.wait_log(r" C=1 .*closed: protocol error", timeout=5)
    later = [make_msg("idle", i, [f"late{i}@{SINK_DOMAIN}"]) for i in (2, 3)]
    inject(p, later)
    dl = settle(p, peer, first + later)
    fired(peer)
    assert all(conn_of(dl, m) == {"1"} for m in first)
    assert all(conn_of(dl, m) == {"2"} for m in later)


# --------------------------------------------------------------------------
# 2. fewer replies than commands


def test_missing_rcpt_reply(petrel_factory, peer_factory):
    """The first RCPT gets no reply and the server falls silent: Petrel
    times out and delivers everything over the next connection."""
    peer = peer_factory(rules={1: [Rule("RCPT", reply=b"", then="stall")]})
    p = petrel_to(petrel_factory, peer, dest=FAST, start=False)
    msgs = make_msgs("norcpt", 3)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert {d["conn"] for d in dl} == {"2"}
    assert "timeout" in closed_line(p, 1)
    client_closed(peer)


@BDAT_DATA
def test_missing_final_reply(petrel_factory, peer_factory, chunking):
    """The second message's end of data gets no reply (it is not stored)
    and the server falls silent: the first message was delivered with its
    own 250 on connection 1, the rest time out (data_timeout) and go over
    connection 2."""
    peer = peer_factory(chunking=chunking,
                        rules={1: [Rule("END", n=2, reply=b"", then="stall")]})
    p = petrel_to(petrel_factory, peer, dest=FAST, start=False)
    msgs = make_msgs("nofinal", 4)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert len([m for m in msgs if conn_of(dl, m) == {"1"}]) == 1
    assert len([m for m in msgs if conn_of(dl, m) == {"2"}]) == 3
    assert "timeout" in closed_line(p, 1)


@pytest.mark.parametrize("event", ["greeting", "MAIL"])
def test_reply_dribbled_forever(petrel_factory, peer_factory, event):
    """A reply that never completes: one byte every 0.2 s, as the greeting
    or to MAIL. Every byte is activity, but no reply: the timeout counts
    from the last complete reply (reply_timeout 1 s, data_timeout 2 s), so
    the connection is closed within seconds, not after the 400 s the line
    limit would take."""
    code = b"220" if event == "greeting" else b"250"
    peer = peer_factory(rules={1: [Rule(event, reply=code + b" " + b"x" * 2000,
                                        then="dribble", delay=0.2)]})
    p = petrel_to(petrel_factory, peer, dest=FAST, start=False)
    msgs = make_msgs("dribble", 3)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert "1" not in {d["conn"] for d in dl}
    line = closed_line(p, 1)
    assert "timeout" in line, line
    t0 = log_grep(p, r" C=1 connecting to ")[0][:23]
    took = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + \
        float(line[19:23]) - time.mktime(time.strptime(t0[:19], "%Y-%m-%d %H:%M:%S")) \
        - float(t0[19:23])
    assert took < 4, f"connection 1 lasted {took:.1f}s"
    client_closed(peer)


# --------------------------------------------------------------------------
# 3. TLS closed without close_notify


@pytest.mark.parametrize("how", ["fin-after-rcpt", "rst-after-mail", "fin-after-end"])
def test_tls_closed_without_close_notify(petrel_factory, peer_factory, how):
    """Mid-transaction, over TLS, right after a reply: the TCP connection
    closes (FIN) or resets (RST) with no TLS close_notify. fin-after-end:
    the close follows the second end-of-data reply, so messages 1 and 2 are
    delivered on connection 1 (their 250s came before the FIN) and the
    rest on connection 2."""
    rule = {"fin-after-rcpt": Rule("RCPT", then="close"),
            "rst-after-mail": Rule("MAIL", then="rst"),
            "fin-after-end": Rule("END", n=2, then="close")}[how]
    peer = peer_factory(rules={1: [rule]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("tlsclose", 5)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert peer.sessions[0].tls
    on1 = {m.tid for m in msgs if conn_of(dl, m) == {"1"}}
    assert len(on1) == (2 if how == "fin-after-end" else 0), on1
    closed_line(p, 1)


@pytest.mark.parametrize("how", ["close", "rst"])
def test_tls_closed_while_idle(petrel_factory, peer_factory, how):
    """Between transactions: 0.5 s after the last end-of-data reply the
    server drops the TLS connection without close_notify. Later mail goes
    over a new connection."""
    peer = peer_factory(rules={1: [Rule("END", n=2, then=how, delay=0.5)]})
    p = petrel_to(petrel_factory, peer, start=False)
    first = make_msgs("tlsidle", 2)
    preload(p, first)
    p.wait_log(r" C=1 .*closed", timeout=10)
    later = [make_msg("tlsidle", i, [f"late{i}@{SINK_DOMAIN}"]) for i in (2, 3)]
    inject(p, later)
    dl = settle(p, peer, first + later)
    fired(peer)
    assert all(conn_of(dl, m) == {"1"} for m in first)
    assert all(conn_of(dl, m) == {"2"} for m in later)
    assert all(d["tls"] for d in dl)


# --------------------------------------------------------------------------
# 4. over-long replies


LONG = {"line": lambda code: code + b" " + b"x" * 100_000,
        "huge": lambda code: code + b" " + b"x" * 16_000_000,
        "lines": lambda code: (code + b"-continued\r\n") * 10_000 + code + b" end\r\n"}


@pytest.mark.parametrize("event,kind", [("greeting", "huge"), ("MAIL", "line"),
                                        ("EHLO", "lines"), ("RCPT", "lines")])
def test_overlong_reply(petrel_factory, peer_factory, event, kind):
    """A reply line without CRLF (100 KB; 16 MB as the greeting) or 10,000
    continuation lines: Petrel drops the connection without buffering it
    (its peak memory grows by less than 8 MB), the message waits, and is
    delivered over the next connection."""
    code = b"220" if event == "greeting" else b"250"
    peer = peer_factory(rules={1: [Rule(event, reply=LONG[kind](code), then="stall")]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("long", 2)
    preload(p, msgs)
    before = rss_peak_kb(p)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert {d["conn"] for d in dl} == {"2"}
    assert "malformed reply" in closed_line(p, 1)
    grew = rss_peak_kb(p) - before
    assert grew < 8 * 1024, f"peak RSS grew by {grew} KB"


# --------------------------------------------------------------------------
# 5. 421 variants


@pytest.mark.parametrize("event", ["greeting", "EHLO", "STARTTLS"])
def test_421_opening(petrel_factory, peer_factory, event):
    """421 as the greeting, to EHLO, to STARTTLS. The server keeps the
    connection open for a second: Petrel must close it without another
    command (QUIT at most) - no HELO after a 421 to EHLO, no plaintext
    MAIL after a 421 to STARTTLS - and deliver over the next connection
    (after the destination's backoff)."""
    text = b"421 4.3.2 Service shutting down, closing channel\r\n"
    peer = peer_factory(rules={1: [Rule(event, reply=text, then="linger", delay=1.0)]})
    p = petrel_to(petrel_factory, peer)
    msgs = make_msgs("o421", 2)
    inject(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    s1 = peer.sessions[0]
    assert s1.after in (b"", b"QUIT\r\n"), f"sent after the 421: {s1.after!r}"
    client_closed(peer)
    assert "1" not in {d["conn"] for d in dl}
    assert "421 4.3.2 Service shutting down" in closed_line(p, 1)
    assert all(d["tls"] for d in dl)


def test_421_to_mail_lockstep(petrel_factory, peer_factory):
    """421 to the first MAIL of a server without PIPELINING: Petrel sends
    nothing more and closes; the mail goes over the next connection."""
    peer = peer_factory(pipelining=False, chunking=False,
                        rules={1: [Rule("MAIL", reply=b"421 4.3.2 Too busy\r\n",
                                        then="linger", delay=1.0)]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("m421", 3)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    s1 = peer.sessions[0]
    assert s1.after in (b"", b"QUIT\r\n"), f"sent after the 421: {s1.after!r}"
    client_closed(peer)
    assert {d["conn"] for d in dl} == {"2"}
    assert not log_grep(p, r" == "), "a 421 is no reason to defer"


@BDAT_DATA
def test_421_to_end_of_data(petrel_factory, peer_factory, chunking):
    """421 to the second message's BDAT LAST / final dot (not stored): the
    first is delivered on connection 1, the rest on connection 2."""
    peer = peer_factory(chunking=chunking,
                        rules={1: [Rule("END", n=2, reply=b"421 4.3.0 Closing now\r\n",
                                        then="close")]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("e421", 4)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert len([m for m in msgs if conn_of(dl, m) == {"1"}]) == 1
    assert len([m for m in msgs if conn_of(dl, m) == {"2"}]) == 3
    assert "421 4.3.0 Closing now" in closed_line(p, 1)


def test_421_multiline(petrel_factory, peer_factory):
    """A three-line 421 to the second RCPT of the two-recipient message:
    the whole text is logged; that message (and whatever came after it in
    the window) goes over connection 2."""
    text = (b"421-4.3.2 System shutting down\r\n421-4.3.2 for maintenance\r\n"
            b"421 4.3.2 Try again later\r\n")
    peer = peer_factory(rules={1: [Rule("RCPT", rcpt="^r0x1@", reply=text, then="close")]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("ml421", 3, nrcpt=lambda i: 2 if i == 0 else 1)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert conn_of(dl, msgs[0]) == {"2"}
    assert "421 4.3.2 System shutting down / for maintenance / Try again later" \
        in closed_line(p, 1)


def test_421_unasked_after_replies(petrel_factory, peer_factory):
    """All three transactions of the window answered, then, in the same
    write, a 421 nobody asked for (RFC 5321 3.8 allows it) and the close:
    a surplus reply, but no desynchronisation. The three 250s count (no
    re-sending, no duplicates), and the connection ends with the 421."""
    peer = peer_factory(rules={1: [Rule("END", n=3, post=b"421 4.3.2 Shutting down\r\n",
                                        then="close")]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = make_msgs("u421", 3)
    preload(p, msgs)
    dl = settle(p, peer, msgs)
    fired(peer)
    assert {d["conn"] for d in dl} == {"1"}
    assert "421 4.3.2 Shutting down" in closed_line(p, 1)


# --------------------------------------------------------------------------
# 6. 5xx and 4xx to the end of data inside a pipelined window


@BDAT_DATA
def test_5xx_4xx_after_end_of_data(petrel_factory, peer_factory, chunking):
    """Five messages in one window; RCPTs to bad* get 550. Message 1
    (good + bad recipient) gets 451 to its end of data, message 2 (two
    recipients) gets 554. Then: bad1 bounced (its RCPT 550), good1 deferred and delivered on
    retry, message 2 bounced with 5.6.0, the others delivered at once -
    one bounce per message with failures."""
    peer = peer_factory(chunking=chunking, reject_rcpt="^bad",
                        rules={1: [Rule("END", rcpt="^good1@",
                                        reply=b"451 4.3.0 Try later\r\n"),
                                   Rule("END", rcpt="^a2@",
                                        reply=b"554 5.6.0 Content rejected\r\n")]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = [make_msg("x45", 0, [f"a0@{SINK_DOMAIN}"]),
            make_msg("x45", 1, [f"good1@{SINK_DOMAIN}", f"bad1@{SINK_DOMAIN}"]),
            make_msg("x45", 2, [f"a2@{SINK_DOMAIN}", f"b2@{SINK_DOMAIN}"]),
            make_msg("x45", 3, [f"a3@{SINK_DOMAIN}"]),
            make_msg("x45", 4, [f"a4@{SINK_DOMAIN}"])]
    preload(p, msgs)
    dl = settle(p, peer, msgs, delivered={"x45-1": [f"good1@{SINK_DOMAIN}"], "x45-2": []},
                bounces=2)
    assert len(peer.fired) == 2
    m1, m2 = msgs[1].qid, msgs[2].qid
    deferred = log_grep(p, r" == ")
    assert len(deferred) == 1 and f"{m1} == good1@" in deferred[0] \
        and "451 4.3.0 Try later" in deferred[0], deferred
    failed = log_grep(p, r" \*\* ")
    assert len(failed) == 3, failed
    assert any(f"{m1} ** bad1@" in f and "550 5.1.1" in f for f in failed), failed
    for r in ("a2", "b2"):
        assert any(f"{m2} ** {r}@" in f and "554 5.6.0 Content rejected" in f
                   for f in failed), failed
    for m in (msgs[0], msgs[3], msgs[4]):
        assert conn_of(dl, m) == {"1"}
    bounces = {e["content"].decode("utf-8", "replace") for e in peer.messages()
               if e["mail_from"] == ""}
    b1 = [b for b in bounces if f"X-Petrel-Queue-ID: {m1}" in b]
    b2 = [b for b in bounces if f"X-Petrel-Queue-ID: {m2}" in b]
    assert len(b1) == 1 and len(b2) == 1
    assert "Final-Recipient: rfc822; bad1@" in b1[0] and "good1@" not in \
        b1[0].split("message/delivery-status")[1].split("text/rfc822-headers")[0]
    assert len(re.findall(r"^Status: 5\.6\.0\r$", b2[0], re.M)) == 2, b2[0]


# --------------------------------------------------------------------------
# 7. every reply split at every byte


@pytest.mark.parametrize("chunking,tls", [(True, True), (False, False)],
                         ids=["bdat-tls", "data-plain"])
def test_reply_trickled_byte_by_byte(petrel_factory, peer_factory, chunking, tls):
    """Every byte the server writes goes in its own TCP segment (over TLS:
    its own TLS record), 2 ms apart: multi-line replies (EHLO, a
    three-line MAIL reply, a multi-line RCPT refusal) split inside the
    code, between CR and LF, everywhere. Parsed right: exactly-once
    delivery, the right verdicts."""
    ml = b"250-2.1.0 Sender\r\n250-2.1.0 looks\r\n250 2.1.0 fine\r\n"
    peer = peer_factory(chunking=chunking, starttls=tls, trickle=0.002,
                        reject_rcpt="^bad",
                        rules={1: [Rule("MAIL", n=2, reply=ml)]})
    p = petrel_to(petrel_factory, peer, start=False)
    msgs = [make_msg("trickle", 0, [f"t0@{SINK_DOMAIN}"]),
            make_msg("trickle", 1, [f"t1@{SINK_DOMAIN}", f"bad1@{SINK_DOMAIN}"]),
            make_msg("trickle", 2, [f"t2@{SINK_DOMAIN}"])]
    preload(p, msgs)
    dl = settle(p, peer, msgs, delivered={"trickle-1": [f"t1@{SINK_DOMAIN}"]},
                bounces=1)
    fired(peer)
    assert all(conn_of(dl, m) == {"1"} for m in msgs)
    assert all(bool(d["tls"]) == tls for d in dl)
    assert not log_grep(p, r"malformed|protocol error|timeout"), tail(p)


# --------------------------------------------------------------------------
# a server that loses commands pipelined behind the end of data (chasquid)


def test_server_losing_commands_after_dot_is_learned(petrel_factory, peer_factory):
    """Like chasquid 1.11: the server answers the final "." and discards
    the MAIL/RCPT/DATA Petrel pipelined right behind it. Connection 1 times
    out waiting for that MAIL's reply; Petrel then stops chaining to the
    destination (logged once), and every later connection waits for the
    reply to "." before the next MAIL, so the server loses nothing more:
    everything is delivered exactly once, with at most one timeout."""
    peer = peer_factory(chunking=False, drop_after_dot=True)
    p = petrel_to(petrel_factory, peer, dest=FAST, start=False)
    msgs = make_msgs("dropdot", 6)
    preload(p, msgs)
    dl = settle(p, peer, msgs, timeout=30)
    learned = log_grep(p, r"did not answer a MAIL pipelined after the end of data")
    assert len(learned) == 1, tail(p)
    assert "timeout" in closed_line(p, 1)
    timeouts = log_grep(p, r"closed: timeout")
    assert len(timeouts) == 1, "\n".join(timeouts)
    assert all(d["L"] for d in dl)        # still pipelining MAIL/RCPT/DATA


def test_server_failing_every_session_is_not_redialled_in_a_loop(petrel_factory,
                                                                 peer_factory):
    """The server greets, then answers EHLO with 421 on every connection,
    while 200 messages wait (a backlog that asks for all max_connections).
    Petrel never gets a connection ready, so it opens one at a time and
    backs off after each failure (retry_initial 1s, retry_max 2s here):
    a handful of connections in 4 s, not hundreds; the messages stay
    queued and are deferred (so max_queue_time applies)."""
    text = b"421 4.3.2 Service not available, closing channel\r\n"
    peer = peer_factory(rules=lambda i: [Rule("EHLO", reply=text, then="close")])
    p = petrel_to(petrel_factory, peer, dest={"max_connections": 10}, start=False)
    msgs = make_msgs("storm", 200)
    preload(p, msgs)
    time.sleep(4)
    n = len(peer.sessions)
    assert 1 <= n <= 6, f"{n} connections in 4 s"
    assert len(p.queue_ids()) == 200
    assert log_grep(p, r"retry in \d+s"), tail(p)
    daemon_alive(p)


def test_reject_and_drop_after_dot_is_not_learned_as_losing_commands(
        petrel_factory, peer_factory):
    """A content filter answers the first "." with 550 and drops the
    connection at once (Exim's drop ACL does): the chained MAIL behind it is
    unanswered, but only because the server left. Petrel bounces that
    message, delivers the rest, and does not stop chaining to the
    destination (that is for servers that sit on lost commands)."""
    peer = peer_factory(chunking=False, rules={1: [
        Rule("END", reply=b"550 5.7.1 Content rejected\r\n", then="close")]})
    p = petrel_to(petrel_factory, peer, dest=FAST, start=False)
    msgs = make_msgs("dropacl", 4)
    preload(p, msgs)
    rej = wait_until(lambda: log_grep(p, r" \*\* .*550 5\.7\.1"), 10,
                     "the 550 in the log", lambda: tail(p))
    qid = rej[0].split()[2]
    first = next(m for m in msgs if m.qid == qid)
    settle(p, peer, msgs, delivered={first.tid: []}, bounces=1, timeout=30)
    assert not log_grep(p, r"did not answer a MAIL pipelined"), tail(p)
