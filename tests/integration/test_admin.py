"""Integration tests of the operator interface (issue 4): the control socket
(<spool_dir>/control.sock) and `petrel queue [--summary] | status | flush
[DOMAIN] | deliver | hold | release | remove | bounce`, SIGHUP (reload),
SIGUSR1 (log reopen), SIGTERM during deliveries, and `petrel queue` from
the spool files when the daemon is stopped.

Petrel receives messages over smtplib on loopback and delivers them to
tests/tools/smtp_sink.py through `[destination D] route = 127.0.0.1:PORT`.
A destination is "down" while nothing listens on its port (a free port that
was closed again) and comes "up" when a sink is started on that very port.

The non-root test runs the CLI as `nobody` through runuser(1); for that the
daemon's directory (config file, binary copy) lives in a mode-0755 directory
under /tmp instead of pytest's private tmp_path; the spool directory itself
is left as the daemon makes it (0700) except where the test says otherwise.
"""

import os
import re
import shutil
import signal
import smtplib
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from petrel_helpers import BIN, Petrel, free_port  # noqa: E402
from delivery_helpers import TID_RX, queue_held, sinks, spool_files, tail, wait_until  # noqa: E402
from delivery_helpers import dest_section as _dest_section  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402

SINK_DOMAIN = "sink.example"
SENDER = f"sender@{SINK_DOMAIN}"      # bounces to it route to the sink too
TOP = {"queue_only": "no", "retry_initial": "1s", "retry_max": "2s",
       "max_queue_time": "5d"}
DEST = {"tls": "may", "pipelining": "yes", "chunking": "yes",
        "idle_timeout": "2s"}

MSG_RX = re.compile(r"^(?P<id>[A-Za-z0-9-]+) +(?P<age>\d+[smhd]) +(?P<size>\d+) "
                    r"<(?P<sender>[^>]*)>(?P<held> \(held\))?$")
RCPT_RX = re.compile(r"^ {8}<(?P<rcpt>[^>]*)>(?: next retry in (?P<next>\d+[smhd]))?"
                     r"(?: \((?P<err>.*)\))?$")

EX_NOPERM = 77
EX_UNAVAILABLE = 69


# --------------------------------------------------------------------------
# small helpers


def cli(p, *args, binary=None, user=None, timeout=15, conf=None):
    """Run `petrel ARGS -c CONF`; returns (rc, stdout, stderr)."""
    cmd = [str(binary or BIN), *args, "-c", str(conf or p.conf_path)]
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    r = subprocess.run(cmd, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, cwd="/")
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"))


def cli_ok(p, *args, conf=None):
    rc, out, err = cli(p, *args, conf=conf)
    assert rc == 0, f"petrel {' '.join(args)} exited {rc}: {err}{out}"
    return out


def parse_queue(text):
    """Strict parser of `petrel queue`: {id: {"sender", "held", "size",
    "rcpts": [{"rcpt", "next", "err"}]}} in listing order."""
    lines = text.split("\n")
    assert lines[-1] == "", f"output does not end with a newline: {text!r}"
    lines = lines[:-1]
    if lines == ["Mail queue is empty"]:
        return {}
    assert lines, "empty output"
    m = re.fullmatch(r"(\d+) messages? in queue", lines[-1])
    assert m, f"last line is not 'N messages in queue': {lines[-1]!r}\n{text}"
    count = int(m.group(1))
    out, cur = {}, None
    for ln in lines[:-1]:
        if ln == "":
            cur = None
            continue
        rm = RCPT_RX.match(ln)
        if rm:
            assert cur is not None, f"recipient line outside a message: {ln!r}\n{text}"
            cur["rcpts"].append(rm.groupdict())
            continue
        mm = MSG_RX.match(ln)
        assert mm, f"unexpected `petrel queue` line: {ln!r}\n{text}"
        assert cur is None, f"message line without a blank line before it: {ln!r}"
        cur = {"sender": mm["sender"], "held": bool(mm["held"]),
               "size": int(mm["size"]), "rcpts": []}
        out[mm["id"]] = cur
    assert count == len(out), f"says {count} messages, lists {len(out)}:\n{text}"
    return out


def parse_summary(text):
    """`petrel queue --summary` -> (header columns, {key: [T, b5, ..., 1280+]})."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    hdr = lines[0].split()
    assert hdr == ["destination", "T", "5", "10", "20", "40", "80", "160", "320",
                   "640", "1280", "1280+"], f"bad summary header {lines[0]!r}"
    rows = {}
    for ln in lines[1:]:
        f = ln.split()
        assert len(f) == 12 and all(x.isdigit() for x in f[1:]), f"bad row {ln!r}"
        rows[f[0]] = [int(x) for x in f[1:]]
    assert "TOTAL" in rows, text
    for k, v in rows.items():
        assert v[0] == sum(v[1:]), f"{k}: T={v[0]} != sum of buckets {v[1:]}"
    assert rows["TOTAL"][0] == sum(v[0] for k, v in rows.items() if k != "TOTAL"), text
    return rows


def make_content(tid, rcpt, sender=SENDER):
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: admin test {tid}\r\n"
            f"Message-ID: <{tid}.{os.getpid()}@test.example>\r\n"
            f"X-Test-Id: {tid}\r\n\r\nBody of {tid}.\r\n").encode()


def inject(p, specs):
    """specs: [(tid, [rcpts])] or [(tid, [rcpts], sender)]. Returns
    {tid: qid}, one SMTP session."""
    out = {}
    with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as c:
        c.ehlo("injector.test")
        for spec in specs:
            tid, rcpts = spec[0], spec[1]
            sender = spec[2] if len(spec) > 2 else SENDER
            code, resp = c.mail(sender)
            assert code == 250, (code, resp)
            for r in rcpts:
                code, resp = c.rcpt(r)
                assert code == 250, (r, code, resp)
            code, resp = c.data(make_content(tid, rcpts[0], sender))
            m = re.search(rb"queued as (\S+)", resp)
            assert code == 250 and m, (code, resp)
            out[tid] = m.group(1).decode()
    return out


def tids_at(sink):
    """{X-Test-Id: count} of the non-bounce messages the sink accepted."""
    out = {}
    for env in sink.messages():
        if env["mail_from"] == "":
            continue
        m = TID_RX.search(env["content"])
        t = m.group(1).decode() if m else "?"
        out[t] = out.get(t, 0) + 1
    return out


def bounces_at(sink):
    return [e for e in sink.messages() if e["mail_from"] == ""]


def dest_section(pattern, **kw):
    return _dest_section(pattern, DEST, **kw)


def make_petrel(factory, routes, top=None, start=True, dest=None):
    """routes: {pattern: port}. Every destination gets DEST (+ dest)."""
    t = dict(TOP)
    t.update(top or {})
    extra = "\n".join(dest_section(pat, route=f"127.0.0.1:{port}", **(dest or {}))
                      for pat, port in routes.items())
    return factory(top=t, extra=extra, start=start)


def preload(p, specs):
    """Queue specs with delivery off (queue_only), then restart with
    delivery on: every message is ready at the first attempt."""
    return queue_held(p, lambda: inject(p, specs))


def wait_deferred(p, qid, rcpt, timeout=10):
    return p.wait_log(rf" {re.escape(qid)} == {re.escape(rcpt)} ", timeout)


def wait_completed(p, qid, timeout=10):
    return p.wait_log(rf" {re.escape(qid)} Completed$", timeout)


@pytest.fixture
def sink_factory(tmp_path, request):
    yield from sinks(tmp_path, request, log_tail=2000)


# --------------------------------------------------------------------------
# 1. a deferred message in `petrel queue` and `petrel queue --summary`


def test_deferred_listed_with_error_and_retry(petrel_factory):
    dead = free_port()
    # A long retry so that "next retry in" is still in the future when we look.
    p = make_petrel(petrel_factory, {"dead.example": dead},
                    top={"retry_initial": "30s", "retry_max": "60s"})
    rcpt = "bob@dead.example"
    qid = inject(p, [("t1", [rcpt, "carol@dead.example"])])["t1"]
    wait_deferred(p, qid, rcpt)
    wait_deferred(p, qid, "carol@dead.example")

    q = parse_queue(cli_ok(p, "queue"))
    assert list(q) == [qid], q
    e = q[qid]
    assert e["sender"] == SENDER and not e["held"], e
    assert [r["rcpt"] for r in e["rcpts"]] == [rcpt, "carol@dead.example"], e
    for r in e["rcpts"]:
        assert r["next"] and re.fullmatch(r"(\d+)s", r["next"]), \
            f"no 'next retry in Ns' for a deferred recipient: {r}"
        assert 0 < int(r["next"][:-1]) <= 30, r
        assert r["err"], f"no last error for a deferred recipient: {r}"
        # the error is the connection failure to the closed port
        assert re.search(r"refused|connect", r["err"], re.I), r

    # --summary counts deliveries (one per message and destination), like
    # qshape counts messages: the 2-recipient message is 1 in column "5"
    rows = parse_summary(cli_ok(p, "queue", "--summary"))
    assert set(rows) == {"route:dead.example", "TOTAL"}, rows
    assert rows["route:dead.example"][:2] == [1, 1], f"1 delivery < 5 min old: {rows}"
    assert rows["TOTAL"] == rows["route:dead.example"], rows

    st = cli_ok(p, "status")
    assert re.search(r"^queue: 1 messages, 2 recipients pending$", st, re.M), st
    assert re.search(r"^route:dead\.example: 0 ready, 1 deferred, 0 connections, "
                     r"backing off \d+s \(.+\)$", st, re.M), st


# --------------------------------------------------------------------------
# 2. hold / release, hold survives kill -9


def test_hold_release_survives_restart(petrel_factory, sink_factory):
    port = free_port()
    p = make_petrel(petrel_factory, {SINK_DOMAIN: port}, dest={"idle_timeout": "1s"})
    ids = inject(p, [("held", [f"a@{SINK_DOMAIN}"]), ("free", [f"b@{SINK_DOMAIN}"])])
    a, b = ids["held"], ids["free"]
    wait_deferred(p, a, f"a@{SINK_DOMAIN}")

    out = cli_ok(p, "hold", a)
    assert a in out, out
    # kill -9 once the hold is in the journal (an acknowledged hold that is
    # not yet there: test_admin_ack_durable)
    jf = p.spool / "journal" / a
    wait_until(lambda: jf.exists() and re.search(r"^H ", jf.read_text(), re.M), 5,
               f"an H line in journal/{a}")
    p.kill9()
    p.start()
    p.wait_log(rf" {re.escape(a)} held by the administrator$", 1)
    q = parse_queue(cli_ok(p, "queue"))
    assert q[a]["held"], f"hold lost across kill -9:\n{q}"
    assert not q[b]["held"], q

    rc, out, err = cli(p, "deliver", a)
    assert rc == 1 and "held" in err, (rc, out, err)
    rc, out, err = cli(p, "hold", "NOSUCHID-000000-00")
    assert rc == 1 and "no such message" in err, (rc, out, err)

    # the destination comes up: b is delivered, a is not
    sink = sink_factory(port)
    wait_until(lambda: "free" in tids_at(sink), 10, "b at the sink", lambda: tail(p))
    time.sleep(3)        # retry_max 2s: a would have been retried by now
    assert "held" not in tids_at(sink), "a held message was delivered"
    q = parse_queue(cli_ok(p, "queue"))
    assert list(q) == [a] and q[a]["held"], q
    # After the idle connection closed, a held message alone must not make
    # the destination reconnect again and again.
    n0 = sink.stats()["connections"]
    time.sleep(3)
    n1 = sink.stats()["connections"]
    assert n1 - n0 <= 0, (f"{n1 - n0} connections opened in 3s with only a held "
                          f"message in the queue\n{tail(p, 20)}")

    out = cli_ok(p, "release", a)
    assert a in out
    p.wait_log(rf" {re.escape(a)} released by the administrator$")
    wait_until(lambda: "held" in tids_at(sink), 10, "a at the sink after release",
               lambda: tail(p))
    wait_completed(p, a)
    assert tids_at(sink) == {"held": 1, "free": 1}, tids_at(sink)
    wait_until(lambda: not spool_files(p), 5, "an empty spool", lambda: str(spool_files(p)))


# --------------------------------------------------------------------------
# 3. remove


def test_remove(petrel_factory, sink_factory):
    port = free_port()
    p = make_petrel(petrel_factory, {SINK_DOMAIN: port})
    ids = inject(p, [("gone", [f"x@{SINK_DOMAIN}", f"y@{SINK_DOMAIN}"])])
    qid = ids["gone"]
    wait_deferred(p, qid, f"x@{SINK_DOMAIN}")
    assert spool_files(p, qid), "no spool files before the removal?"

    out = cli_ok(p, "remove", qid)
    assert qid in out, out
    p.wait_log(rf" {re.escape(qid)} removed by the administrator$")
    assert qid not in parse_queue(cli_ok(p, "queue"))
    wait_until(lambda: not spool_files(p, qid), 5, "queue/ and journal/ files gone",
               lambda: str(spool_files(p)))
    rc, out, err = cli(p, "remove", qid)
    assert rc == 1 and "no such message" in err, (rc, out, err)

    # the destination (also the sender's: a bounce would go there) comes up
    sink = sink_factory(port)
    ctl = inject(p, [("control", [f"z@{SINK_DOMAIN}"])])["control"]
    wait_completed(p, ctl)
    time.sleep(2.5)
    assert tids_at(sink) == {"control": 1}, tids_at(sink)
    assert not bounces_at(sink), "a removed message generated a bounce"
    assert not [ln for ln in p.log_lines() if f"R={qid}" in ln or
                re.search(rf" {re.escape(qid)} (=>|\*\*) ", ln)], tail(p)
    # journaled: a restart does not bring it back
    p.restart()
    assert qid not in parse_queue(cli_ok(p, "queue"))
    assert not spool_files(p), spool_files(p)


def test_admin_ack_durable(petrel_factory):
    """An acknowledged hold or remove ("ID held", "ID removed", exit 0) is
    journaled: kill -9 right after the answer, restart, and it is still in
    effect. The window is short, so a few rounds each (stops at the first
    loss)."""
    p = petrel_factory()              # queue_only: nothing moves by itself
    losses = []
    for cmd in ("hold", "remove"):
        for i in range(10):
            qid = inject(p, [(f"{cmd}{i}", ["r@local.example"])])[f"{cmd}{i}"]
            p.wait_log(rf" {re.escape(qid)} <= ")
            out = cli_ok(p, cmd, qid)
            assert qid in out, out
            p.kill9()
            jf = p.spool / "journal" / qid
            journal = jf.read_text() if jf.exists() else None
            p.start()
            q = parse_queue(cli_ok(p, "queue"))
            if (cmd == "hold" and not q[qid]["held"]) or (cmd == "remove" and qid in q):
                losses.append(f"round {i}: '{out.strip()}' acknowledged, lost after "
                              f"kill -9 (journal/{qid} then: {journal!r})")
                break
            if cmd == "hold":
                cli_ok(p, "remove", qid)
    assert not losses, "\n".join(losses)


# --------------------------------------------------------------------------
# 4. bounce


def test_bounce(petrel_factory, sink_factory):
    sink = sink_factory()
    dead = free_port()
    p = make_petrel(petrel_factory, {"dead.example": dead, SINK_DOMAIN: sink.port})
    rcpt = "bob@dead.example"
    qid = inject(p, [("bounced", [rcpt])])["bounced"]
    wait_deferred(p, qid, rcpt)

    out = cli_ok(p, "bounce", qid)
    assert qid in out, out
    p.wait_log(rf" {re.escape(qid)} \*\* {re.escape(rcpt)}: returned to sender by "
               r"the administrator$")
    wait_until(lambda: bounces_at(sink), 10, "a bounce at the sink", lambda: tail(p))
    bs = bounces_at(sink)
    assert len(bs) == 1, bs
    b = bs[0]
    assert b["rcpts"] == [SENDER], b["rcpts"]
    c = b["content"].decode("utf-8", "replace")
    assert re.search(r"^Content-Type: multipart/report; report-type=delivery-status;",
                     c, re.M), c[:800]
    assert rcpt in c, c[:1500]
    assert re.search(r"^Action: failed", c, re.M), c[:2000]
    wait_completed(p, qid)
    wait_until(lambda: not spool_files(p), 10, "an empty spool (original and bounce)",
               lambda: str(spool_files(p)))
    assert parse_queue(cli_ok(p, "queue")) == {}
    assert tids_at(sink) == {}, "the original was delivered after all"


# --------------------------------------------------------------------------
# 5. flush [DOMAIN]


def test_flush_and_flush_domain(petrel_factory, sink_factory):
    pa, pb = free_port(), free_port()
    p = make_petrel(petrel_factory, {SINK_DOMAIN: pa, "other.example": pb},
                    top={"retry_initial": "60s", "retry_max": "120s"}, start=False)
    ids = preload(p, [("a1", [f"a1@{SINK_DOMAIN}"]), ("a2", [f"a2@{SINK_DOMAIN}"]),
                      ("b1", ["b1@other.example"])])
    for t, r in (("a1", f"a1@{SINK_DOMAIN}"), ("a2", f"a2@{SINK_DOMAIN}"),
                 ("b1", "b1@other.example")):
        wait_deferred(p, ids[t], r)
    sa, sb = sink_factory(pa), sink_factory(pb)
    time.sleep(1.0)
    assert tids_at(sa) == {} and tids_at(sb) == {}, "retried before retry_initial"

    out = cli_ok(p, "flush", SINK_DOMAIN)
    assert re.search(r"\b2 deliveries scheduled now", out), out
    p.wait_log(rf"flush of {re.escape(SINK_DOMAIN)} requested: 2 deliveries released$")
    wait_until(lambda: tids_at(sa) == {"a1": 1, "a2": 1}, 10,
               "a1, a2 after flush sink.example", lambda: tail(p))
    time.sleep(1.5)
    assert tids_at(sb) == {}, "flush sink.example released other.example"
    q = parse_queue(cli_ok(p, "queue"))
    assert list(q) == [ids["b1"]], q

    out = cli_ok(p, "flush")
    assert re.search(r"\b1 delivery scheduled now", out), out
    p.wait_log(r"flush requested: 1 deliveries released$")
    wait_until(lambda: tids_at(sb) == {"b1": 1}, 10, "b1 after flush", lambda: tail(p))
    wait_completed(p, ids["b1"])
    assert tids_at(sa) == {"a1": 1, "a2": 1}, tids_at(sa)
    out = cli_ok(p, "flush")
    assert re.search(r"\b0 deliveries scheduled now", out), out


# --------------------------------------------------------------------------
# 6. deliver ID


def test_deliver_one(petrel_factory, sink_factory):
    port = free_port()
    p = make_petrel(petrel_factory, {SINK_DOMAIN: port},
                    top={"retry_initial": "60s", "retry_max": "120s"}, start=False)
    ids = preload(p, [("d1", [f"d1@{SINK_DOMAIN}"]), ("d2", [f"d2@{SINK_DOMAIN}"])])
    wait_deferred(p, ids["d1"], f"d1@{SINK_DOMAIN}")
    wait_deferred(p, ids["d2"], f"d2@{SINK_DOMAIN}")
    sink = sink_factory(port)
    time.sleep(1.0)
    assert tids_at(sink) == {}

    out = cli_ok(p, "deliver", ids["d1"])
    assert re.search(rf"{re.escape(ids['d1'])}: 1 delivery scheduled now", out), out
    wait_until(lambda: "d1" in tids_at(sink), 10, "d1 after deliver", lambda: tail(p))
    wait_completed(p, ids["d1"])
    time.sleep(1.5)
    assert tids_at(sink) == {"d1": 1}, f"deliver d1 also delivered: {tids_at(sink)}"
    q = parse_queue(cli_ok(p, "queue"))
    assert list(q) == [ids["d2"]], q
    rc, out, err = cli(p, "deliver", "NOSUCHID-000000-00")
    assert rc == 1 and "no such message" in err, (rc, out, err)
    cli_ok(p, "deliver", ids["d2"])
    wait_completed(p, ids["d2"])
    assert tids_at(sink) == {"d1": 1, "d2": 1}


# --------------------------------------------------------------------------
# 7. status with an open (idle) outbound TLS connection


def test_status_open_connection(petrel_factory, sink_factory):
    sink = sink_factory()
    p = make_petrel(petrel_factory, {SINK_DOMAIN: sink.port},
                    dest={"tls": "encrypt", "idle_timeout": "5s"})
    ids = inject(p, [("s1", [f"s1@{SINK_DOMAIN}"]), ("s2", [f"s2@{SINK_DOMAIN}"])])
    for q in ids.values():
        wait_completed(p, q)
    st = cli_ok(p, "status")
    lines = st.splitlines()
    assert re.fullmatch(r"petrel \S+, pid %d, up \d+s" % p.proc.pid, lines[0]), st
    assert "sessions in: 0" in lines, st
    assert "connections out: 1" in lines, st
    assert "queue: 0 messages, 0 recipients pending" in lines, st
    assert "last minute: 2 messages received, 2 recipients delivered" in lines, st
    assert f"route:{SINK_DOMAIN}: 0 ready, 0 deferred, 1 connections" in lines, st
    conn = [ln for ln in lines if ln.startswith("    C=")]
    assert len(conn) == 1, st
    assert re.fullmatch(
        rf"    C=\d+ H=\S+ \[127\.0\.0\.1\]:{sink.port} READY TLS1\.[23]:\S+ L K, "
        r"2 messages, 0 in flight, \d+s old", conn[0]), conn[0]
    assert sink.stats()["active_connections"] == 1


# --------------------------------------------------------------------------
# 8. non-root user: exit 77, "permission denied"


@pytest.fixture
def world_dir():
    d = Path(tempfile.mkdtemp(prefix="petrel-admin-nonroot-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _nonroot_setup(world_dir):
    bindir = world_dir / "bin"
    bindir.mkdir(mode=0o755)
    binary = bindir / "petrel"
    shutil.copy2(BIN, binary)
    os.chmod(binary, 0o755)
    p = Petrel(world_dir / "petrel")
    os.chmod(p.dir, 0o755)
    os.chmod(p.conf_path, 0o644)
    return p, binary


def test_nonroot_permission_denied(world_dir):
    p, binary = _nonroot_setup(world_dir)
    try:
        p.start()
        qid = inject(p, [("np", ["r@local.example"])])["np"]
        sock = p.spool / "control.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600, oct(os.stat(sock).st_mode)
        # The spool as the test harness leaves it (0755: petrel_helpers makes
        # spool/ while seeding spool/tls), then as the daemon makes it (0700).
        for mode in (None, 0o700):
            if mode is not None:
                os.chmod(p.spool, mode)
            for args in (("status",), ("queue",), ("queue", "--summary"), ("flush",),
                         ("hold", qid), ("remove", qid)):
                rc, out, err = cli(p, *args, binary=binary, user="nobody")
                assert rc == EX_NOPERM and "permission denied" in err, (
                    f"petrel {' '.join(args)} as nobody (spool mode "
                    f"{oct(stat.S_IMODE(os.stat(p.spool).st_mode))}): rc {rc}\n"
                    f"stdout {out!r}\nstderr {err!r}")
                assert qid not in out, out
        q = parse_queue(cli_ok(p, "queue"))
        assert qid in q and not q[qid]["held"], q
    finally:
        p.cleanup()


def test_nonroot_refused_by_daemon(world_dir):
    """The daemon's own check (SO_PEERCRED), reached by making the socket
    connectable (0666) for the test: the CLI must still say "permission
    denied" and exit 77 (and never act)."""
    p, binary = _nonroot_setup(world_dir)
    try:
        p.start()
        qid = inject(p, [("np", ["r@local.example"])])["np"]
        os.chmod(p.spool, 0o711)
        os.chmod(p.spool / "control.sock", 0o666)
        results = []
        for args in (("hold", qid), ("status",), ("queue",), ("flush",), ("hold", qid)):
            rc, out, err = cli(p, *args, binary=binary, user="nobody")
            results.append((" ".join(args), rc, err.strip()))
        p.wait_log(r"control: refused uid 65534$")
        q = parse_queue(cli_ok(p, "queue"))
        assert not q[qid]["held"], "nobody held a message"
        bad = [r for r in results if r[1] != EX_NOPERM or "permission denied" not in r[2]]
        assert not bad, ("refused by the daemon (log: 'control: refused uid "
                         "65534'), the CLI as nobody gave (command, exit, stderr):\n"
                         + "\n".join(map(repr, results)))
    finally:
        p.cleanup()


# --------------------------------------------------------------------------
# 9. SIGHUP


def test_sighup_bad_then_good_config(petrel_factory, sink_factory):
    sa, sb = sink_factory(), sink_factory()
    p = make_petrel(petrel_factory, {SINK_DOMAIN: sa.port}, dest={"idle_timeout": "1s"})
    good_a = p.config_text()
    # the CLI reads -c FILE too (for spool_dir): give it a copy of a good one
    cconf = p.dir / "cli.conf"
    cconf.write_text(good_a)
    q1 = inject(p, [("h1", [f"h1@{SINK_DOMAIN}"])])["h1"]
    wait_completed(p, q1)

    # broken: an unknown key, in a file that would also move the route to B
    p.extra = dest_section(SINK_DOMAIN, route=f"127.0.0.1:{sb.port}",
                           idle_timeout="1s") + "no_such_setting_xyz = 1\n"
    p.write_config()
    rc, _, _ = cli(p, "check-config")
    assert rc != 0, "the broken file passes check-config: test bug"
    os.kill(p.proc.pid, signal.SIGHUP)
    p.wait_log(r"SIGHUP: configuration not reloaded, keeping the old one: .+")
    assert p.running()
    cli_ok(p, "status", conf=cconf)
    q2 = inject(p, [("h2", [f"h2@{SINK_DOMAIN}"])])["h2"]
    wait_completed(p, q2)
    assert tids_at(sa) == {"h1": 1, "h2": 1} and tids_at(sb) == {}, \
        (tids_at(sa), tids_at(sb))

    # good: only the route changes (to B); wait until A's idle connection
    # has closed so that no open connection is in the way
    sa.wait_closed(timeout=10)
    p.extra = dest_section(SINK_DOMAIN, route=f"127.0.0.1:{sb.port}", idle_timeout="1s")
    p.write_config()
    assert p.config_text() != good_a
    cli_ok(p, "check-config")
    os.kill(p.proc.pid, signal.SIGHUP)
    p.wait_log(r"SIGHUP: configuration \S+ reloaded")
    q3 = inject(p, [("h3", [f"h3@{SINK_DOMAIN}"])])["h3"]
    wait_completed(p, q3)
    assert tids_at(sb) == {"h3": 1}, (
        f"after SIGHUP with route = 127.0.0.1:{sb.port}, a new message went to "
        f"A={tids_at(sa)} / B={tids_at(sb)}\n" + tail(p, 8))


# --------------------------------------------------------------------------
# 10. SIGUSR1


def test_sigusr1_reopens_log(petrel_factory):
    p = petrel_factory()
    inject(p, [("before", ["r@local.example"])])
    p.wait_log(r" <= ")
    old = p.log_path.with_name("main.log.1")
    os.rename(p.log_path, old)
    os.kill(p.proc.pid, signal.SIGUSR1)
    wait_until(lambda: p.log_path.exists(), 5, "a new main.log")
    p.wait_log(r"log reopened \(SIGUSR1\)$")
    qid = inject(p, [("after", ["r@local.example"])])["after"]
    p.wait_log(rf" {re.escape(qid)} <= ")
    oldtext = old.read_text()
    assert qid not in oldtext, "written to the moved-away file"
    assert "SIGUSR1" not in oldtext
    assert " <= " in oldtext


# --------------------------------------------------------------------------
# 11. SIGTERM during deliveries loses nothing


def test_sigterm_during_delivery_loses_nothing(petrel_factory, sink_factory, tmp_path):
    n = 30
    sink = sink_factory()
    proxy = DelayProxy(0, sink.port, 100, workdir=str(tmp_path / "proxy"))
    proxy.start()
    try:
        p = make_petrel(petrel_factory, {SINK_DOMAIN: proxy.port}, start=False,
                        dest={"pipeline_window": 8, "chunking": "no"})
        specs = [(f"m{i}", [f"m{i}@{SINK_DOMAIN}"]) for i in range(n)]
        ids = preload(p, specs)
        wait_until(lambda: len(tids_at(sink)) >= 3, 15, "3 messages at the sink",
                   lambda: tail(p))
        rc = p.stop()
        assert rc == 0, rc
        before = tids_at(sink)
        assert len(before) < n, "everything delivered before SIGTERM: test too slow"
        p.wait_log(r"petrel stopped$")
        left = spool_files(p)
        p.start()
        wait_until(lambda: len(tids_at(sink)) == n, 40, f"{n} messages at the sink",
                   lambda: f"{len(tids_at(sink))} there\n" + tail(p))
        for t in ids:
            wait_completed(p, ids[t], timeout=10)
        got = tids_at(sink)
        dups = {t: c for t, c in got.items() if c > 1}
        print(f"SIGTERM after {len(before)}/{n} delivered; {len(left)} spool files "
              f"left; duplicates: {dups or 'none'}")
        assert set(got) == {t for t, _ in specs}, got
        if dups:
            pytest.fail(f"duplicates after SIGTERM (nothing lost): {dups}")
        assert not spool_files(p)
    finally:
        proxy.stop()


# --------------------------------------------------------------------------
# 12. `petrel queue` with the daemon stopped


def test_queue_offline_lists_spool(petrel_factory, sink_factory):
    sink = sink_factory(tempfail_rcpt="^<?later@")
    p = make_petrel(petrel_factory, {SINK_DOMAIN: sink.port},
                    top={"retry_initial": "60s", "retry_max": "120s"})
    ids = inject(p, [("o1", [f"now@{SINK_DOMAIN}", f"later@{SINK_DOMAIN}"]),
                     ("o2", [f"later@{SINK_DOMAIN}"], "other@sender.example")])
    p.wait_log(rf" {re.escape(ids['o1'])} => now@{re.escape(SINK_DOMAIN)} ")
    wait_deferred(p, ids["o1"], f"later@{SINK_DOMAIN}")
    wait_deferred(p, ids["o2"], f"later@{SINK_DOMAIN}")
    cli_ok(p, "hold", ids["o2"])
    online = parse_queue(cli_ok(p, "queue"))
    assert [r["rcpt"] for r in online[ids["o1"]]["rcpts"]] == [f"later@{SINK_DOMAIN}"]
    assert online[ids["o2"]]["held"]
    p.stop()

    rc, out, err = cli(p, "status")
    assert rc == EX_UNAVAILABLE and "not running" in err, (rc, out, err)
    rc, out, err = cli(p, "queue")
    assert rc == 0, (rc, out, err)
    offline = parse_queue(out)
    assert list(offline) == list(online), (out, online)
    problems = []
    for qid, e in online.items():
        o = offline[qid]
        if o["sender"] != e["sender"] or o["size"] != e["size"]:
            problems.append(f"{qid}: sender/size {o} vs {e}")
        if [r["rcpt"] for r in o["rcpts"]] != [r["rcpt"] for r in e["rcpts"]]:
            problems.append(f"{qid}: offline lists {[r['rcpt'] for r in o['rcpts']]}, "
                            f"the daemon listed {[r['rcpt'] for r in e['rcpts']]} "
                            f"(pending recipients)")
        if o["held"] != e["held"]:
            problems.append(f"{qid}: held offline={o['held']} daemon={e['held']}")
    assert not problems, "\n".join(problems) + "\noffline output:\n" + out
