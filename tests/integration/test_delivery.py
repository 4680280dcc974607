"""Integration tests of the delivery engine (src/queue.c, src/smtp_client.c).

Petrel receives messages over SMTP (smtplib, on loopback) and delivers them
to tests/tools/smtp_sink.py, which stores every accepted message and counts
connections, TLS handshakes and turns (replies the client waited for). Every
test checks, from both ends, that each recipient arrived exactly once with
the content intact, and that Petrel's "=>" log lines name exactly what the
sink accepted: the sink answers "250 2.0.0 Ok: queued as N" with its own
message number N, so a "=>" line whose N is not the sink's copy of that very
message means replies were matched to the wrong transaction, and a "=>" line
for a message the sink never stored means a loss reported as a delivery.

The MX test runs a private NSD (dnsserver.py) on loopback.

Helpers here, not in the shared petrel_helpers: [destination ...] sections
are written through the factory's `extra` text, and queue_only (which the
shared factory turns on for the receiving-side suites) is turned off.
"""

import hashlib
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from petrel_helpers import free_port, split_received  # noqa: E402
from delivery_helpers import (TID_RX, TS, log_deliveries, log_grep,  # noqa: E402
                              queue_held, rcpt_count, sinks, smtp_submit,
                              spool_files, wait_completed, wait_rcpts, wait_until)
from delivery_helpers import dest_section as _dest_section  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402

SINK_DOMAIN = "sink.example"
SENDER = f"sender@{SINK_DOMAIN}"   # bounces to it route to the sink as well

TOP = {"queue_only": "no", "retry_initial": "1s", "retry_max": "2s",
       "max_queue_time": "5d"}
DEST = {"tls": "may", "pipelining": "yes", "chunking": "yes",
        "pipeline_window": 8, "max_connections": 10,
        "max_messages_per_connection": 1000, "idle_timeout": "2s"}

SINK_ID_RX = re.compile(r"^250 2\.0\.0 Ok: queued as (\d+)$")


# --------------------------------------------------------------------------
# messages


@dataclass
class Msg:
    tid: str
    sender: str
    rcpts: list
    content: bytes
    qid: str = None

    @property
    def sha(self):
        return hashlib.sha256(self.content).hexdigest()


def make_msg(tag, i, rcpts, sender=SENDER, lines=12):
    """A message with a unique X-Test-Id, CRLF line endings, lines that
    start with dots (to exercise dot-stuffing on the DATA path) and random
    text. Not dot-stuffed (smtplib does it)."""
    tid = f"{tag}-{i}"
    rnd = os.urandom(lines * 24).hex()
    body = [f"Message {tid}.", ".a line starting with a dot", "..two dots",
            "."] + [rnd[k * 48:(k + 1) * 48] for k in range(lines)] + ["end."]
    content = (f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\n"
               f"Subject: delivery test {tid}\r\n"
               f"Message-ID: <{tid}.{os.getpid()}@test.example>\r\n"
               f"X-Test-Id: {tid}\r\n\r\n" + "\r\n".join(body) + "\r\n")
    return Msg(tid, sender, list(rcpts), content.encode())


def make_msgs(tag, n, nrcpt=lambda i: 1, sender=SENDER):
    return [make_msg(tag, i, [f"r{i}x{k}@{SINK_DOMAIN}" for k in range(nrcpt(i))],
                     sender=sender)
            for i in range(n)]


def inject(p, msgs, sessions=1, timeout=20):
    """Submit msgs to Petrel over `sessions` parallel smtplib connections;
    sets each Msg.qid from the "250 ... queued as ID" reply."""
    errors = []

    def run(chunk):
        try:
            smtp_submit(p.port, chunk, timeout)
        except Exception as e:  # reported by the caller
            errors.append(repr(e))

    chunks = [msgs[k::sessions] for k in range(sessions)]
    threads = [threading.Thread(target=run, args=(ch,), daemon=True)
               for ch in chunks if ch]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
        assert not t.is_alive(), "injection thread hung"
    assert not errors, f"injection failed: {errors[:3]}"
    assert all(m.qid for m in msgs)
    return msgs


# --------------------------------------------------------------------------
# daemon and sink


def dest_section(pattern, **kw):
    return _dest_section(pattern, DEST if pattern == SINK_DOMAIN else None, **kw)


def make_petrel(factory, route=None, dest=None, dests=None, top=None, start=True):
    """A Petrel with [destination sink.example] routed to `route` (and
    `dest` overrides), plus extra sections {pattern: {key: value}}."""
    t = dict(TOP)
    t.update(top or {})
    extra = ""
    if route is not None:
        extra += dest_section(SINK_DOMAIN, route=route, **(dest or {}))
    for pat, kw in (dests or {}).items():
        extra += "\n" + dest_section(pat, **kw)
    return factory(top=t, extra=extra, start=start)


def preload(p, msgs, sessions=4):
    """Queue msgs with delivery held (queue_only), then restart with
    delivery on: the whole backlog is ready when the first connection is,
    which is what measuring round trips per message needs."""
    def fill():
        inject(p, msgs, sessions=sessions)
        assert len(p.queue_ids()) == len(msgs)
    queue_held(p, fill)


@pytest.fixture
def sink_factory(tmp_path, request):
    yield from sinks(tmp_path, request)


# --------------------------------------------------------------------------
# reading results


def sink_copies(sink):
    """{X-Test-Id: [env, ...]} of what the sink accepted (env has content)."""
    out = {}
    for env in sink.messages():
        if env["mail_from"] == "":
            continue        # a bounce: it quotes the original's headers
        m = TID_RX.search(env["content"])
        tid = m.group(1).decode() if m else f"(none:{env['id']})"
        out.setdefault(tid, []).append(env)
    return out


def wait_spool_empty(p, timeout=10):
    def pred():
        p.check_alive()
        return not spool_files(p)
    wait_until(pred, timeout, "queue/ and journal/ to be empty",
               lambda: f"left: {spool_files(p)[:10]}\n" + "\n".join(p.log_lines()[-20:]))


def wait_arrived(sink, p, n_rcpts, timeout=30):
    """Wait until the sink holds n_rcpts recipient copies in total."""
    wait_rcpts(sink, p, n_rcpts, timeout)


def check_exactly_once(p, sink, msgs, delivered=None):
    """Every expected recipient of every message arrived exactly once, with
    the content Petrel received (after its Received: header), and Petrel
    logged exactly one "=>" per recipient whose sink message number is the
    sink's copy of that very message to that recipient. `delivered` maps
    tid -> recipients expected (default: all). Returns the "=>" lines.
    Waits first until every message is logged Completed (the sink stores a
    message before it replies, so it can hold it before Petrel logs it)."""
    wait_completed(p, msgs)
    copies = sink_copies(sink)
    by_sink_id = {e["id"]: e for envs in copies.values() for e in envs}
    by_qid = {m.qid: m for m in msgs}
    problems = []
    for m in msgs:
        want = sorted(delivered.get(m.tid, m.rcpts) if delivered else m.rcpts)
        got = []
        for env in copies.get(m.tid, []):
            got += env["rcpts"]
            _, rest = split_received(env["content"])
            if rest != m.content:
                problems.append(f"{m.tid}: content differs (sink #{env['id']}, "
                                f"sha256 {hashlib.sha256(rest).hexdigest()[:12]} "
                                f"!= {m.sha[:12]})")
            if env["mail_from"] != m.sender:
                problems.append(f"{m.tid}: MAIL FROM {env['mail_from']!r}")
        if sorted(got) != want:
            problems.append(f"{m.tid} ({m.qid}): sink recipients {sorted(got)} != {want}")
    unknown = set(copies) - {m.tid for m in msgs}
    if unknown:
        problems.append(f"unexpected messages at the sink: {sorted(unknown)[:5]}")

    dl = [d for d in log_deliveries(p) if d["id"] in by_qid]
    seen = {}
    for d in dl:
        key = (d["id"], d["rcpt"])
        seen[key] = seen.get(key, 0) + 1
        sm = SINK_ID_RX.match(d["reply"])
        if not sm:
            problems.append(f"'=>' with a reply the sink never gives: {d['line']}")
            continue
        env = by_sink_id.get(int(sm.group(1)))
        m = by_qid[d["id"]]
        if env is None or TID_RX.search(env["content"]).group(1).decode() != m.tid \
                or d["rcpt"] not in env["rcpts"]:
            problems.append(f"'=>' names sink message {sm.group(1)}, which is not "
                            f"{m.tid} to {d['rcpt']}: {d['line']}")
    for m in msgs:
        want = delivered.get(m.tid, m.rcpts) if delivered else m.rcpts
        for r in want:
            if seen.get((m.qid, r), 0) != 1:
                problems.append(f"{m.qid} {r}: {seen.get((m.qid, r), 0)} '=>' lines")
    extra = [k for k in seen if k[1] not in
             (delivered.get(by_qid[k[0]].tid, by_qid[k[0]].rcpts) if delivered
              else by_qid[k[0]].rcpts)]
    if extra:
        problems.append(f"'=>' for recipients that must not be delivered: {extra[:5]}")
    assert not problems, "\n".join(problems[:20]) + \
        f"\n({len(problems)} problems)\nlog tail:\n" + "\n".join(p.log_lines()[-30:])
    return dl


def stats_summary(s):
    keys = ("connections", "tls_handshakes", "tls_resumed", "messages", "turns",
            "setup_turns", "turns_per_message", "warm_turns_per_message",
            "sync_violations", "data_cmds", "bdat_cmds", "rset", "faults_fired")
    return {k: s.get(k) for k in keys}


def deliver_backlog(p, sink, msgs, n_rcpts=None, timeout=30, wait_closed=True):
    """preload(msgs); wait until n_rcpts (default: every recipient) copies
    are at the sink, the spool is empty and (wait_closed) the sink saw every
    connection close; check_exactly_once. Returns ("=>" lines, sink stats,
    stats_summary of them)."""
    preload(p, msgs)
    wait_arrived(sink, p, sum(len(m.rcpts) for m in msgs) if n_rcpts is None else n_rcpts,
                 timeout=timeout)
    wait_spool_empty(p)
    if wait_closed:
        sink.wait_closed(timeout=10)
    dl = check_exactly_once(p, sink, msgs)
    st = sink.stats()
    return dl, st, stats_summary(st)


# --------------------------------------------------------------------------
# 1. basic


def test_basic_one_connection_one_handshake(petrel_factory, sink_factory):
    sink = sink_factory()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    msgs = make_msgs("basic", 20, nrcpt=lambda i: 3 if i % 4 == 0 else 1)
    inject(p, msgs)
    nr = sum(len(m.rcpts) for m in msgs)
    wait_arrived(sink, p, nr)
    wait_spool_empty(p)
    dl = check_exactly_once(p, sink, msgs)
    assert len(dl) == nr == 30
    st = sink.stats()
    assert st["connections"] == 1, stats_summary(st)
    assert st["tls_handshakes"] == 1, stats_summary(st)
    assert st["messages"] == 20, stats_summary(st)
    # RSET only after a failed transaction: none here
    assert st["rset"] == 0 and st["sync_violations"] == 0, stats_summary(st)
    assert {d["conn"] for d in dl} == {"1"}, sorted({d["conn"] for d in dl})
    # one transaction per message, numbered 1..20 on the connection
    seqs = {d["id"]: int(d["seq"]) for d in dl}
    assert sorted(seqs.values()) == list(range(1, 21)), sorted(seqs.values())
    for d in dl:
        assert d["tls"] and d["tls"].startswith("TLS1.3:"), d["line"]
        assert d["L"] and d["K"], f"expected pipelined BDAT ('L K'): {d['line']}"
        assert d["port"] == str(sink.port)
    for env in sink.messages():
        assert env["tls"] and env["method"] == "BDAT", env


# --------------------------------------------------------------------------
# 2. many messages


@pytest.mark.parametrize("mode", ["live", "backlog"])
def test_thousand_messages_streamed(petrel_factory, sink_factory, mode):
    """live: delivery runs while 8 parallel sessions inject; backlog: the
    1000 messages are queued first (queue_only), then Petrel restarts and
    finds them all ready."""
    sink = sink_factory(stats_interval=200)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}", start=False)
    msgs = make_msgs("many", 1000)
    t0 = time.monotonic()
    if mode == "live":
        p.start()
        inject(p, msgs, sessions=8)
    else:
        preload(p, msgs, sessions=8)
    t_inj = time.monotonic() - t0
    t1 = time.monotonic()
    wait_arrived(sink, p, 1000, timeout=60)
    t_dlv = time.monotonic() - t1
    wait_spool_empty(p, timeout=20)
    sink.wait_closed(timeout=10)          # idle_timeout 2s: QUIT on each
    dl = check_exactly_once(p, sink, msgs)
    st = sink.stats()
    summary = stats_summary(st) | {"inject_s": round(t_inj, 1),
                                   "deliver_s": round(t_dlv, 1)}
    print(f"1000 messages ({mode}): {summary}")
    assert st["messages"] == 1000, summary
    assert 1 <= st["connections"] <= 10, summary
    assert st["tls_handshakes"] == st["connections"], summary
    assert st["rset"] == 0 and st["sync_violations"] == 0, summary
    assert st["turns"] / st["messages"] < 0.5, \
        f"turns per message {st['turns'] / st['messages']:.3f} not well below 1: {summary}"
    per = st["per_connection"]
    assert sum(c["messages"] for c in per) == 1000
    # Petrel's connection numbers map one to one onto the sink's connections,
    # and each message's position on its connection agrees on both sides.
    by_sink_id = {e["id"]: e for e in sink.messages()}
    mapping = {}
    for d in dl:
        env = by_sink_id[int(SINK_ID_RX.match(d["reply"]).group(1))]
        mapping.setdefault(d["conn"], set()).add(env["connection"])
        assert int(d["seq"]) == env["seq"], f"seq {d['seq']} vs sink seq {env['seq']}"
    assert all(len(v) == 1 for v in mapping.values()), mapping
    assert len({next(iter(v)) for v in mapping.values()}) == len(mapping), mapping
    for c in per:
        n_log = sum(1 for d in dl if mapping.get(d["conn"]) == {c["index"]})
        assert n_log == c["messages"], (c["index"], n_log, c["messages"])
    for d in dl:
        assert d["L"] and d["K"] and d["tls"], d["line"]


# --------------------------------------------------------------------------
# 3., 4. without CHUNKING, without PIPELINING


def test_no_chunking_one_turn_per_message(petrel_factory, sink_factory):
    sink = sink_factory(chunking=False)
    # one connection, so that all 30 messages ride one warm connection (with
    # more, Petrel spreads a backlog over parallel connections)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dest={"max_connections": 1}, start=False)
    msgs = make_msgs("nochunk", 30, nrcpt=lambda i: 2 if i % 3 == 0 else 1)
    dl, st, s = deliver_backlog(p, sink, msgs)
    assert st["connections"] == 1, s
    assert st["bdat_cmds"] == 0 and st["data_cmds"] == 30, s
    assert st["sync_violations"] == 0, s
    assert st["warm_turns_per_message"] <= 1.1, \
        f"warm turns per message {st['warm_turns_per_message']:.3f} > 1.1: {s}"
    for d in dl:
        assert d["L"] and not d["K"], f"expected 'L' without 'K': {d['line']}"
    assert all(e["method"] == "DATA" for e in sink.messages())


def test_no_pipelining_no_chunking_lockstep(petrel_factory, sink_factory):
    sink = sink_factory(chunking=False, pipelining=False)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}", start=False)
    msgs = make_msgs("lockstep", 10, nrcpt=lambda i: 2 if i % 2 else 1)
    dl, st, s = deliver_backlog(p, sink, msgs)
    # without PIPELINING any byte sent ahead of a reply is a violation
    assert st["sync_violations"] == 0, s
    assert st["data_cmds"] == 10 and st["bdat_cmds"] == 0, s
    # MAIL, RCPT per recipient, DATA, content: 3 + recipients per message
    want = sum(3 + len(m.rcpts) for m in msgs) / len(msgs)
    assert abs(st["warm_turns_per_message"] - want) <= 0.11, (want, s)
    for d in dl:
        assert not d["L"] and not d["K"], f"'L'/'K' in lock-step: {d['line']}"


def test_data_backlog_parallel_connections(petrel_factory, sink_factory):
    """DATA (no CHUNKING) with a backlog and the default 10 connections:
    Petrel spreads the messages over parallel connections, each chaining
    "content . MAIL RCPT DATA"."""
    sink = sink_factory(chunking=False)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}", start=False)
    msgs = make_msgs("databacklog", 100, nrcpt=lambda i: 2 if i % 3 == 0 else 1)
    dl, st, s = deliver_backlog(p, sink, msgs)
    assert 1 <= st["connections"] <= 10 and st["tls_handshakes"] == st["connections"], s
    assert st["data_cmds"] == 100 and st["sync_violations"] == 0 and st["rset"] == 0, s
    assert all(d["L"] and not d["K"] for d in dl)


# --------------------------------------------------------------------------
# 5. per-recipient rejects and the bounce


def test_rcpt_rejects_bounce(petrel_factory, sink_factory):
    sink = sink_factory(reject_rcpt="^<?bad")
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    mixed = make_msg("rej", 0, [f"good0@{SINK_DOMAIN}", f"bad0@{SINK_DOMAIN}",
                                f"good1@{SINK_DOMAIN}"])
    allbad = make_msg("rej", 1, [f"bad1@{SINK_DOMAIN}", f"bad2@{SINK_DOMAIN}"])
    fine = make_msg("rej", 2, [f"good2@{SINK_DOMAIN}"])
    msgs = [mixed, allbad, fine]
    inject(p, msgs)
    # 3 good recipients + 2 bounces (one per message with failures)
    wait_arrived(sink, p, 3 + 2)
    wait_spool_empty(p)
    check_exactly_once(p, sink, msgs, delivered={
        "rej-0": [f"good0@{SINK_DOMAIN}", f"good1@{SINK_DOMAIN}"], "rej-1": []})
    fails = log_grep(p, r" \*\* ")
    for m, r in ((mixed, "bad0"), (allbad, "bad1"), (allbad, "bad2")):
        hit = [ln for ln in fails if f"{m.qid} ** {r}@{SINK_DOMAIN}" in ln]
        assert len(hit) == 1 and "550 5.1.1" in hit[0], (r, fails)
    assert len(fails) == 3, fails

    bounces = [e for e in sink.messages() if e["mail_from"] == ""]
    assert len(bounces) == 2, [(e["mail_from"], e["rcpts"]) for e in sink.messages()]
    for orig, bad in ((mixed, ["bad0"]), (allbad, ["bad1", "bad2"])):
        line = log_grep(p, rf"<= <> R={re.escape(orig.qid)} bounce for {re.escape(SENDER)}$")
        assert len(line) == 1, log_grep(p, "bounce")
        bid = line[0].split()[2]
        b = [e for e in bounces if f"X-Petrel-Queue-ID: {orig.qid}".encode() in e["content"]]
        assert len(b) == 1, f"no bounce naming {orig.qid} at the sink"
        b = b[0]
        assert b["rcpts"] == [SENDER], b["rcpts"]
        c = b["content"].decode("utf-8", "replace")
        assert re.search(r"^Content-Type: multipart/report; report-type=delivery-status;", c, re.M), c[:800]
        assert re.search(r"^From: .*MAILER-DAEMON@", c, re.M), c[:800]
        for r in bad:
            assert re.search(rf"^Final-Recipient: rfc822; {r}@{SINK_DOMAIN}\r$", c, re.M), c
        assert len(re.findall(r"^Final-Recipient:", c, re.M)) == len(bad), c
        assert len(re.findall(r"^Status: 5\.1\.1\r$", c, re.M)) == len(bad), c
        assert len(re.findall(r"^Action: failed\r$", c, re.M)) == len(bad), c
        assert f"X-Test-Id: {orig.tid}" in c       # the original's headers
        assert "good" not in c.split("message/delivery-status")[1].split("text/rfc822-headers")[0]
        # the bounce itself was delivered and completed
        assert log_grep(p, rf"^{TS} {re.escape(bid)} => {re.escape(SENDER)} ")
        assert log_grep(p, rf"^{TS} {re.escape(bid)} Completed$")


# --------------------------------------------------------------------------
# 6. temporary failure, then success


def test_tempfail_then_retry(petrel_factory, sink_factory):
    sink1 = sink_factory(tempfail_rcpt="^<?later")
    port = sink1.port
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{port}")
    m = make_msg("temp", 0, [f"later@{SINK_DOMAIN}"])
    inject(p, [m])
    line = p.wait_log(rf"{re.escape(m.qid)} == later@{SINK_DOMAIN} ", timeout=10)
    assert "450 4.2.0" in line and re.search(r"; retry in \d+s$", line), line
    assert m.qid in p.queue_ids()
    assert not log_deliveries(p)
    assert sink1.stats()["messages"] == 0
    sink1.stop()
    t0 = time.monotonic()
    sink2 = sink_factory(port=port)
    wait_arrived(sink2, p, 1, timeout=10)
    took = time.monotonic() - t0
    assert took < 6, f"retry took {took:.1f}s with retry_initial=1s, retry_max=2s"
    wait_spool_empty(p)
    check_exactly_once(p, sink2, [m])
    time.sleep(2.5)   # nothing more arrives (no second attempt)
    assert rcpt_count(sink2) == 1 and sink1.stats()["messages"] == 0


# --------------------------------------------------------------------------
# 7. 421 with transactions in flight


def test_421_mid_window(petrel_factory, sink_factory):
    # One connection at a time with a window of 8: when the sink answers the
    # 4th MAIL with 421 and closes, transactions 5..8 are in flight on it.
    sink = sink_factory(fault="421-after:3")
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dest={"max_connections": 1}, start=False)
    msgs = make_msgs("f421", 20)
    _, st, s = deliver_backlog(p, sink, msgs, 20, timeout=45, wait_closed=False)
    assert st["messages"] == 20 and st["connections"] == 7, s
    assert st["faults_fired"] == 6, s
    assert [c["messages"] for c in st["per_connection"]] == [3] * 6 + [2], \
        st["per_connection"]
    # the faulted connections carried a 4th MAIL (pipelined past the 421)
    assert all(c["mail"] >= 4 for c in st["per_connection"][:6]), st["per_connection"]
    # a 421 is not a connection failure: no destination backoff
    assert not log_grep(p, r" == "), log_grep(p, r" == ")


# --------------------------------------------------------------------------
# 8. connection dropped during message content / after the end of data


@pytest.mark.parametrize("fault", ["drop-in-data:2", "drop-after-dot:2"])
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_drop_in_content(petrel_factory, sink_factory, chunking, fault):
    # Every connection: 2 messages accepted, then the sink closes without a
    # reply while (drop-in-data) or just after (drop-after-dot) the third
    # message's content arrives; that message is not stored. Petrel must
    # neither log it delivered nor lose it.
    sink = sink_factory(fault=fault, chunking=None if chunking else False)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dest={"max_connections": 1}, start=False)
    msgs = make_msgs("drop", 8)
    _, st, s = deliver_backlog(p, sink, msgs, 8, timeout=45, wait_closed=False)
    assert st["faults_fired"] == 3, s
    assert [c["messages"] for c in st["per_connection"]] == [2, 2, 2, 2], \
        st["per_connection"]
    want = "BDAT" if chunking else "DATA"
    assert {e["method"] for e in sink.messages()} == {want}


# --------------------------------------------------------------------------
# 9. TLS required, not offered


def test_tls_required_not_offered(petrel_factory, sink_factory):
    sink = sink_factory(starttls=False)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dest={"tls": "encrypt"})
    m = make_msg("notls", 0, [f"secret@{SINK_DOMAIN}"])
    inject(p, [m])
    line = p.wait_log(rf"{re.escape(m.qid)} (==|\*\*) secret@{SINK_DOMAIN} ", timeout=10)
    assert "TLS" in line, line
    assert " == " in line, f"TLS missing must be temporary: {line}"
    time.sleep(2.5)  # a retry or two
    st = sink.stats()
    assert st["connections"] >= 1, stats_summary(st)
    assert st["mail"] == 0 and st["messages"] == 0 and st["bytes_in"] > 0, \
        f"sent MAIL in plaintext: {stats_summary(st)}"
    assert sink.messages() == []
    assert m.qid in p.queue_ids()
    assert not log_deliveries(p)
    assert log_grep(p, r"failed in state EHLO: TLS required")


# --------------------------------------------------------------------------
# 10. reply injected before the TLS handshake


def test_early_reply_before_tls(petrel_factory, sink_factory):
    sink = sink_factory(fault="early-tls-reply")
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    msgs = make_msgs("early", 3)
    inject(p, msgs)
    # Observed outcome: Petrel discards the plaintext "250 injected" that
    # arrived with "220 Ready to start TLS" (io.c resets its input buffer
    # when STARTTLS begins), completes the handshake and delivers over TLS.
    # Had it taken "250 injected" as the reply to the EHLO after STARTTLS,
    # every later reply would be off by one; the sink-number check in
    # check_exactly_once would catch "=>" lines for the wrong message, and
    # a plaintext MAIL would show as a sink message with tls false.
    wait_arrived(sink, p, 3, timeout=15)
    wait_spool_empty(p)
    dl = check_exactly_once(p, sink, msgs)
    st = sink.stats()
    assert st["faults_fired"] >= 1 and st["tls_handshakes"] >= 1, stats_summary(st)
    assert st["tls_failures"] == 0, stats_summary(st)
    assert all(e["tls"] for e in sink.messages())
    assert all(d["tls"] for d in dl)
    assert not log_grep(p, r"injected")


# --------------------------------------------------------------------------
# 11. TLS session resumption


def test_tls_session_resumed(petrel_factory, sink_factory):
    sink = sink_factory()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    a = make_msgs("burst1", 3)
    inject(p, a)
    wait_arrived(sink, p, 3)
    sink.wait_closed(1, timeout=8)        # idle_timeout 2s: QUIT
    b = [make_msg("burst2", i, [f"s{i}@{SINK_DOMAIN}"]) for i in range(3)]
    inject(p, b)
    wait_arrived(sink, p, 6)
    wait_spool_empty(p)
    check_exactly_once(p, sink, a + b)
    st = sink.stats()
    per = st["per_connection"]
    assert st["connections"] == 2, stats_summary(st)
    assert per[0]["close_reason"] == "quit", per[0]
    assert per[0]["tls"] and not per[0]["resumed"], per[0]
    assert per[1]["tls"] and per[1]["resumed"], f"second connection not resumed: {per[1]}"
    assert st["tls_resumed"] == 1, stats_summary(st)
    assert {e["connection"] for e in sink.messages() if e["tls_resumed"]} == {2}


# --------------------------------------------------------------------------
# 12. a new arrival joins the open connection


def test_new_arrival_reuses_connection(petrel_factory, sink_factory):
    sink = sink_factory()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    m1 = make_msg("reuse", 1, [f"a@{SINK_DOMAIN}"])
    m2 = make_msg("reuse", 2, [f"b@{SINK_DOMAIN}"])
    inject(p, [m1])
    wait_arrived(sink, p, 1)
    time.sleep(0.5)
    inject(p, [m2])
    wait_arrived(sink, p, 2)
    dl = check_exactly_once(p, sink, [m1, m2])
    cs = {d["id"]: f"C={d['conn']}#{d['seq']}" for d in dl}
    assert cs == {m1.qid: "C=1#1", m2.qid: "C=1#2"}, cs
    st = sink.stats()
    assert st["connections"] == 1 and st["tls_handshakes"] == 1, stats_summary(st)


# --------------------------------------------------------------------------
# 13. static route failover


def test_static_route_failover(petrel_factory, sink_factory):
    sink = sink_factory()
    dead = free_port()
    p = make_petrel(petrel_factory,
                    route=f"127.0.0.1:{dead}, 127.0.0.1:{sink.port}")
    msgs = make_msgs("failover", 3)
    inject(p, msgs)
    wait_arrived(sink, p, 3)
    wait_spool_empty(p)
    dl = check_exactly_once(p, sink, msgs)
    assert {d["port"] for d in dl} == {str(sink.port)}
    assert log_grep(p, rf"\[127\.0\.0\.1\]:{dead}\b.*(refused|failed)"), \
        "\n".join(p.log_lines())


# --------------------------------------------------------------------------
# 14. durability across kill -9


def test_restart_durability(petrel_factory, sink_factory):
    port = free_port()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{port}")
    msgs = make_msgs("durable", 5)
    inject(p, msgs)
    p.wait_log(r" == .*retry in", timeout=10)
    assert sorted(p.queue_ids()) == sorted(m.qid for m in msgs)
    p.kill9()
    sink = sink_factory(port=port)
    p.start()
    wait_arrived(sink, p, 5, timeout=15)
    wait_spool_empty(p)
    check_exactly_once(p, sink, msgs)
    time.sleep(1)
    assert len(sink.messages()) == 5


# --------------------------------------------------------------------------
# 15. MX routing through a real DNS server


MX_ZONE = "petrel-dlv.example"
MX_ZONE_TEXT = """
@        MX 10 mx1
@        MX 20 mx2
mx1      A  127.0.0.2
mx2      A  127.0.0.1
nullmx   MX 0 .
"""


def test_mx_failover_nullmx_nxdomain(petrel_factory, sink_factory, tmp_path):
    try:
        from dnsserver import DnsServer
    except ImportError as e:
        pytest.skip(f"tests/integration/dnsserver.py not importable: {e}")
    if not (shutil.which("nsd") or os.path.exists("/usr/sbin/nsd")):
        pytest.skip("nsd is not installed (dnsserver.py needs it)")
    sink = sink_factory()
    with DnsServer(tmp_path / "dns", {MX_ZONE: MX_ZONE_TEXT}) as dns:
        p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                        top={"dns_resolver": dns.resolver},
                        dests={"*": {"port": sink.port}})
        ok = make_msg("mx", 0, [f"user@{MX_ZONE}"])
        null = make_msg("mx", 1, [f"user@nullmx.{MX_ZONE}"])
        nx = make_msg("mx", 2, [f"user@nosuch.{MX_ZONE}"])
        msgs = [ok, null, nx]
        inject(p, msgs)
        # ok: 1 copy; null and nx: one bounce each to SENDER at the sink
        wait_arrived(sink, p, 3, timeout=30)
        wait_spool_empty(p)
    check_exactly_once(p, sink, msgs, delivered={"mx-1": [], "mx-2": []})
    d = [x for x in log_deliveries(p) if x["id"] == ok.qid]
    assert d[0]["host"] == f"mx2.{MX_ZONE}" and d[0]["ip"] == "127.0.0.1", d[0]["line"]
    assert log_grep(p, rf"\[127\.0\.0\.2\]:{sink.port}"), "mx1 was not tried first"
    for m, what in ((null, "null MX"), (nx, "NXDOMAIN")):
        f = log_grep(p, rf"{re.escape(m.qid)} \*\* {re.escape(m.rcpts[0])}")
        assert len(f) == 1, (what, log_grep(p, re.escape(m.qid)))
        assert re.search(r": 5\d\d 5\.\d+\.\d+ \S", f[0]), (what, f[0])
        assert not log_grep(p, rf"{re.escape(m.qid)} == "), f"{what} was deferred, not failed"
    bounces = [e for e in sink.messages() if e["mail_from"] == ""]
    assert len(bounces) == 2
    text = b"".join(e["content"] for e in bounces).decode()
    assert f"Final-Recipient: rfc822; user@nullmx.{MX_ZONE}" in text
    assert f"Final-Recipient: rfc822; user@nosuch.{MX_ZONE}" in text


# --------------------------------------------------------------------------
# More failure handling and limits


def test_tempfail_at_end_of_data(petrel_factory, sink_factory):
    # The sink answers the end of the 2nd message with 451 (once in its
    # life). That message is deferred, the others are not disturbed, and the
    # retry delivers it once.
    sink = sink_factory(fault="tempfail-data:1", fault_once=True)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dest={"max_connections": 1}, start=False)
    msgs = make_msgs("t451", 5)
    preload(p, msgs)
    wait_arrived(sink, p, 5, timeout=15)
    wait_spool_empty(p)
    check_exactly_once(p, sink, msgs)
    deferred = log_grep(p, r" == ")
    assert len(deferred) == 1 and "451 4.3.0" in deferred[0], deferred
    assert re.search(r"; retry in [12]s$", deferred[0]), deferred[0]
    st = sink.stats()
    assert st["faults_fired"] == 1 and st["messages_rejected"] == 1, stats_summary(st)


def test_mail_from_rejected_bounce(petrel_factory, sink_factory):
    # MAIL FROM refused with 550 5.7.1: every recipient fails with that
    # reply (not with the 503s a pipelining server gives the RCPTs and
    # BDAT that follow a refused MAIL), and the bounce says 5.7.1.
    blocked = f"blocked@{SINK_DOMAIN}"
    sink = sink_factory(reject_mail="^blocked@")
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    m = make_msg("rejmail", 0, [f"x1@{SINK_DOMAIN}", f"x2@{SINK_DOMAIN}"], sender=blocked)
    ok = make_msg("rejmail", 1, [f"x3@{SINK_DOMAIN}"])
    inject(p, [m, ok])
    wait_arrived(sink, p, 2, timeout=15)          # ok + the bounce
    wait_spool_empty(p)
    check_exactly_once(p, sink, [m, ok], delivered={"rejmail-0": []})
    fails = log_grep(p, rf"{re.escape(m.qid)} \*\* ")
    assert len(fails) == 2, fails
    for f in fails:
        assert f.endswith(": 550 5.7.1 Sender rejected"), \
            f"failure reason is not the MAIL reply: {f}"
    b = [e for e in sink.messages() if e["mail_from"] == ""]
    assert len(b) == 1 and b[0]["rcpts"] == [blocked]
    c = b[0]["content"].decode()
    assert len(re.findall(r"^Status: 5\.7\.1\r$", c, re.M)) == 2, c


def test_size_limit_refused_before_sending(petrel_factory, sink_factory):
    # The sink advertises SIZE 4000: a bigger message is failed by Petrel
    # without being sent (552 5.3.4), bounced; a small one is delivered.
    sink = sink_factory(size=4000)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    big = make_msg("size", 0, [f"big@{SINK_DOMAIN}"], lines=200)
    small = make_msg("size", 1, [f"small@{SINK_DOMAIN}"])
    assert len(big.content) > 8000 and len(small.content) < 2000
    inject(p, [big, small])
    wait_arrived(sink, p, 2, timeout=15)          # small + bounce
    wait_spool_empty(p)
    check_exactly_once(p, sink, [big, small], delivered={"size-0": []})
    f = log_grep(p, rf"{re.escape(big.qid)} \*\* big@")
    assert len(f) == 1 and "552 5.3.4" in f[0], f
    st = sink.stats()
    assert st["messages_rejected"] == 0 and st["mail"] == 2, stats_summary(st)
    b = [e for e in sink.messages() if e["mail_from"] == ""]
    assert len(b) == 1 and b"Status: 5.3.4" in b[0]["content"]


def test_rcptmax_splits_transactions(petrel_factory, sink_factory):
    # LIMITS RCPTMAX=2: Petrel never sends a 3rd RCPT in one transaction;
    # the rest go in further transactions, each recipient exactly once, and
    # promptly: nothing was refused, so nothing may wait for a retry (which
    # is 30 s away here).
    sink = sink_factory(limits="RCPTMAX=2")
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    top={"retry_initial": "30s", "retry_max": "1h"})
    msgs = [make_msg("rcptmax", 0, [f"a{k}@{SINK_DOMAIN}" for k in range(5)]),
            make_msg("rcptmax", 1, [f"b{k}@{SINK_DOMAIN}" for k in range(7)]),
            make_msg("rcptmax", 2, [f"c{k}@{SINK_DOMAIN}" for k in range(14)])]
    inject(p, msgs)
    wait_arrived(sink, p, 26, timeout=10)
    wait_spool_empty(p)
    check_exactly_once(p, sink, msgs)
    st = sink.stats()
    assert st["rcpt_rejected"] == 0, stats_summary(st)
    sizes = sorted(len(e["rcpts"]) for e in sink.messages())
    assert max(sizes) == 2 and st["messages"] == 3 + 4 + 7, sizes
    assert not log_grep(p, r" == "), log_grep(p, r" == ")


@pytest.mark.parametrize("limit", ["max_messages_per_connection", "MAILMAX"])
def test_messages_per_connection_limit(petrel_factory, sink_factory, limit):
    # Petrel's own max_messages_per_connection = 4, or the server's LIMITS
    # MAILMAX=4 (the sink answers a 5th MAIL with 421): either way each
    # connection carries 4 messages and ends with QUIT.
    if limit == "MAILMAX":
        sink = sink_factory(limits="MAILMAX=4")
        dest = {"max_connections": 1}
    else:
        sink = sink_factory()
        dest = {"max_connections": 1, "max_messages_per_connection": 4}
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}", dest=dest,
                    start=False)
    msgs = make_msgs("permconn", 10)
    deliver_backlog(p, sink, msgs, 10, timeout=20)
    per = sink.stats()["per_connection"]
    assert [c["messages"] for c in per] == [4, 4, 2], per
    assert [c["mail"] for c in per] == [4, 4, 2], per
    assert all(c["close_reason"] == "quit" for c in per), per


@pytest.mark.parametrize("fault", ["stall", "garbage"])
def test_unusable_server_keeps_message(petrel_factory, sink_factory, fault):
    # stall: greeting, then silence (reply_timeout 2s); garbage: a
    # malformed EHLO reply. The message is deferred, never logged
    # delivered, and stays in the queue.
    sink = sink_factory(fault=fault)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dest={"reply_timeout": "2s"})
    m = make_msg(fault, 0, [f"u@{SINK_DOMAIN}"])
    inject(p, [m])
    line = p.wait_log(rf"{re.escape(m.qid)} == u@{SINK_DOMAIN} ", timeout=10)
    assert ("timeout" if fault == "stall" else "malformed") in line, line
    assert not log_deliveries(p)
    assert m.qid in p.queue_ids()
    st = sink.stats()
    assert st["mail"] == 0 and st["messages"] == 0, stats_summary(st)


def test_max_queue_time_bounce(petrel_factory, sink_factory):
    # A destination that never answers: after max_queue_time the recipient
    # fails ("**") and the sender (routed to the sink) gets a bounce.
    sink = sink_factory()
    dead = free_port()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    top={"max_queue_time": "2s"},
                    dests={"dead.example": {"route": f"127.0.0.1:{dead}"}})
    m = make_msg("expire", 0, ["nobody@dead.example"])
    inject(p, [m])
    wait_arrived(sink, p, 1, timeout=15)
    wait_spool_empty(p)
    f = log_grep(p, rf"{re.escape(m.qid)} \*\* nobody@dead\.example")
    assert len(f) == 1 and "retry timeout exceeded" in f[0], f
    assert log_grep(p, rf"{re.escape(m.qid)} == nobody@dead\.example"), "never deferred first"
    b = sink.messages()
    assert len(b) == 1 and b[0]["mail_from"] == "" and b[0]["rcpts"] == [SENDER]
    assert b"Final-Recipient: rfc822; nobody@dead.example" in b[0]["content"]
    assert not log_deliveries(p) or all(d["id"] != m.qid for d in log_deliveries(p))


# --------------------------------------------------------------------------
# Routing variants, large content, the journal across a restart


def test_smarthost(petrel_factory, sink_factory):
    # Top-level smarthost: domains without a route of their own go there.
    sink = sink_factory()
    p = make_petrel(petrel_factory, top={"smarthost": f"127.0.0.1:{sink.port}"})
    msgs = [make_msg("smart", 0, ["x@elsewhere.example", "y@other.example"]),
            make_msg("smart", 1, ["z@third.example"])]
    inject(p, msgs)
    wait_arrived(sink, p, 3)
    wait_spool_empty(p)
    dl = check_exactly_once(p, sink, msgs)
    assert {d["port"] for d in dl} == {str(sink.port)}
    assert log_grep(p, rf"connecting to 127\.0\.0\.1 \[127\.0\.0\.1\]:{sink.port} for smarthost:")
    # one destination (the smarthost): one connection for all three domains
    assert sink.stats()["connections"] == 1


def test_ipv6_static_route(petrel_factory, sink_factory):
    sink = sink_factory(listen6=0)
    p = make_petrel(petrel_factory, route=f"[::1]:{sink.port6}")
    msgs = make_msgs("v6", 2)
    inject(p, msgs)
    wait_arrived(sink, p, 2)
    wait_spool_empty(p)
    dl = check_exactly_once(p, sink, msgs)
    assert {(d["ip"], d["port"]) for d in dl} == {("::1", str(sink.port6))}, dl[0]["line"]
    assert all(e["tls"] for e in sink.messages())


def big_content(tag, i, size):
    """A message of about `size` bytes whose lines have every length from
    1 to 97 and half of them start with a dot, so that the spool reader's
    64 KiB boundaries fall on every position of a line, a CR/LF pair and a
    leading dot (which DATA must stuff) at one place or another."""
    tid = f"{tag}-{i}"
    head = (f"From: <{SENDER}>\r\nTo: <big@{SINK_DOMAIN}>\r\nSubject: big {tid}\r\n"
            f"Message-ID: <{tid}.{os.getpid()}@test.example>\r\nX-Test-Id: {tid}\r\n\r\n")
    rnd = os.urandom(64).hex()
    lines, n, k = [], len(head), 0
    while n < size:
        ln = ("." if k % 2 == 0 else "") + (rnd * 2)[k % 64:k % 64 + (k % 97)]
        lines.append(ln)
        n += len(ln) + 2
        k += 1
    return Msg(tid, SENDER, [f"big{i}@{SINK_DOMAIN}"],
               (head + "\r\n".join(lines) + "\r\n").encode())


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_large_messages_streamed(petrel_factory, sink_factory, chunking):
    sink = sink_factory(chunking=None if chunking else False)
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}")
    msgs = [big_content("big", 0, 3_000_000), big_content("big", 1, 700_001),
            make_msg("big", 2, [f"small@{SINK_DOMAIN}"])]
    inject(p, msgs)
    wait_arrived(sink, p, 3, timeout=30)
    wait_spool_empty(p)
    check_exactly_once(p, sink, msgs)
    assert {e["method"] for e in sink.messages()} == {"BDAT" if chunking else "DATA"}
    # (a message that arrives while a connection streams may open a second)
    assert sink.stats()["connections"] <= 3


def test_journal_prevents_redelivery_after_crash(petrel_factory, sink_factory):
    # One message, two destinations: sink.example is up, late.example is
    # down. After the sink.example recipient is delivered and journaled,
    # kill -9; bring late.example up; restart: only late.example's
    # recipient is delivered, the other is not sent again.
    sink = sink_factory()
    late_port = free_port()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{sink.port}",
                    dests={"late.example": {"route": f"127.0.0.1:{late_port}"}})
    m = make_msg("journal", 0, [f"now@{SINK_DOMAIN}", "later@late.example"])
    inject(p, [m])
    wait_arrived(sink, p, 1)
    p.wait_log(rf"{re.escape(m.qid)} == later@late\.example ", timeout=10)
    jpath = p.spool / "journal" / m.qid
    wait_until(lambda: jpath.exists() and jpath.read_text().startswith("D 0 "), 5,
               "the journal to record recipient 0 as delivered")
    p.kill9()
    assert m.qid in p.queue_ids()
    late = sink_factory(port=late_port)
    p.start()
    wait_arrived(late, p, 1, timeout=15)
    wait_spool_empty(p)
    time.sleep(0.5)
    assert [e["rcpts"] for e in sink.messages()] == [[f"now@{SINK_DOMAIN}"]], \
        "the recipient delivered before the crash was delivered again"
    assert [e["rcpts"] for e in late.messages()] == [["later@late.example"]]
    for s in (sink, late):
        env = s.messages()[0]
        assert split_received(env["content"])[1] == m.content
    assert log_grep(p, rf"{re.escape(m.qid)} Completed$")


# --------------------------------------------------------------------------
# 17. connection ramp-up: one probe, then parallel


def test_parallel_connects_once_one_is_ready(petrel_factory, sink_factory, tmp_path):
    """With a backlog, once one connection to the destination got through
    its opening (greeting, EHLO, STARTTLS, EHLO), Petrel opens the others
    the backlog needs in parallel: all max_connections are connecting
    before the first message is delivered (opened one after another, each
    waiting for the previous to be ready, only 2 would be)."""
    sink = sink_factory()
    proxy = DelayProxy(0, sink.port, 100, workdir=str(tmp_path / "proxy"))
    proxy.start()
    try:
        p = make_petrel(petrel_factory, route=f"127.0.0.1:{proxy.port}", start=False,
                        dest={"max_connections": 4, "pipeline_window": 8})
        msgs = make_msgs("ramp", 120)
        preload(p, msgs)
        wait_arrived(sink, p, 120, timeout=60)
        lines = p.log_lines()
        first = next(i for i, ln in enumerate(lines) if " => " in ln)
        opened = [ln for ln in lines[:first] if re.search(r"C=\d+ connecting to ", ln)]
        assert len(opened) == 4, "\n".join(lines[:first + 1])
        wait_spool_empty(p)
        check_exactly_once(p, sink, msgs)
    finally:
        proxy.stop()


def test_unreachable_destination_one_attempt_at_a_time(petrel_factory, sink_factory):
    """A destination that never answered gets one connection attempt at a
    time, not max_connections in parallel, whatever the backlog."""
    dead = free_port()
    p = make_petrel(petrel_factory, route=f"127.0.0.1:{dead}", start=False,
                    top={"retry_initial": "60s", "retry_max": "60s"},
                    dest={"max_connections": 10})
    msgs = make_msgs("dead", 40)
    preload(p, msgs)
    p.wait_log(r"connection failed")
    time.sleep(0.5)
    assert len(log_grep(p, r"C=\d+ connecting to ")) == 1, tail(p)
    assert len(p.queue_ids()) == 40
