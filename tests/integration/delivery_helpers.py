"""Helpers shared by the delivery-side integration tests (test_delivery,
test_peers_delivery, test_admin, test_crash, test_sendmail, test_postdrop):
polling, Petrel configurations with [destination] routes to
tests/tools/smtp_sink.py, SMTP injection, reading Petrel's log ("=>" and
"Completed" lines) and what the sink stored.
"""

import re
import smtplib
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from smtp_sink import SinkProcess  # noqa: E402

TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
# a "=>" (delivered) line of Petrel's log, every field
DLV_RX = re.compile(
    rf"^{TS} (?P<id>\S+) => (?P<rcpt>\S+) H=(?P<host>\S+) \[(?P<ip>[^\]]+)\]:"
    r"(?P<port>\d+) C=(?P<conn>\d+)#(?P<seq>\d+)(?: X=(?P<tls>\S+))?"
    r"(?P<L> L)?(?P<K> K)? C=\"(?P<reply>[^\"]*)\" QT=\d+ms DT=\d+ms$")
TID_RX = re.compile(rb"^X-Test-Id: (\S+)\r$", re.M)


# --------------------------------------------------------------------------
# waiting


def wait_until(pred, timeout, what, diag=None):
    """Poll pred() every 50 ms; return its (truthy) value or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            extra = ("\n" + diag()) if diag else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(0.05)


def tail(p, n=30):
    """The last n lines of Petrel's log, one string."""
    return "\n".join(p.log_lines()[-n:])


# --------------------------------------------------------------------------
# configuration and injection


def dest_section(pattern, defaults=None, **kw):
    """A [destination PATTERN] section: defaults, then kw; None values are
    left out."""
    conf = dict(defaults or {})
    conf.update(kw)
    return "\n".join([f"[destination {pattern}]"] +
                     [f"{k} = {v}" for k, v in conf.items() if v is not None]) + "\n"


def smtp_submit(port, msgs, timeout):
    """Submit msgs (objects with .sender, .rcpts, .content) in one smtplib
    session; sets each .qid from the "250 ... queued as ID" reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as c:
        c.ehlo("injector.test")
        for m in msgs:
            code, resp = c.mail(m.sender)
            assert code == 250, f"MAIL: {code} {resp!r}"
            for r in m.rcpts:
                code, resp = c.rcpt(r)
                assert code == 250, f"RCPT {r}: {code} {resp!r}"
            code, resp = c.data(m.content)
            mm = re.search(rb"queued as (\S+)", resp)
            assert code == 250 and mm, f"DATA: {code} {resp!r}"
            m.qid = mm.group(1).decode()
    return msgs


def queue_held(p, fill):
    """Start p with delivery held (queue_only), call fill(), stop, restart
    with delivery on: the whole backlog is ready at the first attempt.
    Returns what fill() returned."""
    p.top["queue_only"] = "yes"
    p.write_config()
    p.start()
    out = fill()
    p.stop()
    p.top["queue_only"] = "no"
    p.write_config()
    p.start()
    return out


# --------------------------------------------------------------------------
# sinks


def sinks(tmp_path, request, log_tail=3000, stats=True):
    """Generator behind a sink_factory fixture: make(port=0, **opts) starts
    a SinkProcess in tmp_path/sinkN; all are stopped at the end and their
    stats and log tail printed if the test failed."""
    made = []

    def make(port=0, **opts):
        s = SinkProcess(port, workdir=str(tmp_path / f"sink{len(made)}"), **opts)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for i, s in enumerate(made):
            if not stats:
                print(f"---- sink{i} log ----\n{s.log()[-log_tail:]}")
                continue
            try:
                st = {k: v for k, v in s.stats().items() if k != "per_connection"}
            except OSError:
                st = None
            print(f"==== sink{i} stats ====\n{st}\n---- sink{i} log ----\n{s.log()[-log_tail:]}")


def one_sink(tmp_path, name="sink", request=None, label=None):
    """Generator behind a single-sink fixture (SinkProcess in tmp_path/name);
    with request, prints its log tail if the test failed."""
    s = SinkProcess(0, workdir=str(tmp_path / name))
    s.start()
    yield s
    s.stop()
    rep = getattr(request.node, "rep_call", None) if request is not None else None
    if rep is not None and rep.failed:
        print(f"==== {label or name} log ====\n{s.log()[-3000:]}")


@pytest.fixture
def sink(tmp_path):
    yield from one_sink(tmp_path)


def rcpt_count(sink):
    """Recipient copies the sink holds in total."""
    return sum(len(e["rcpts"]) for e in sink.messages())


def wait_rcpts(sink, p, n_rcpts, timeout, where="at the sink", lines=25, diag=None):
    """Wait until the sink holds n_rcpts recipient copies (a crashed daemon
    fails at once)."""
    def pred():
        p.check_alive()
        return rcpt_count(sink) >= n_rcpts
    wait_until(pred, timeout, f"{n_rcpts} recipients {where}",
               lambda: f"have {rcpt_count(sink)}\n" + tail(p, lines)
               + (("\n" + diag()) if diag else ""))


def spool_files(p, qid=None):
    """Files left in queue/ and journal/ (only those of qid if given)."""
    out = []
    for sub in ("queue", "journal"):
        d = p.spool / sub
        if d.exists():
            out += [f"{sub}/{f.name}" for f in d.iterdir()
                    if not f.name.startswith(".") and (qid is None or f.name == qid)]
    return out


# --------------------------------------------------------------------------
# Petrel's log


def log_deliveries(p):
    """Every "=>" line of the log, parsed by DLV_RX (+ "line")."""
    out = []
    for ln in p.log_lines():
        if " => " in ln:
            m = DLV_RX.match(ln)
            assert m, f"malformed delivery line: {ln!r}"
            out.append(m.groupdict() | {"line": ln})
    return out


def log_grep(p, rx):
    r = re.compile(rx)
    return [ln for ln in p.log_lines() if r.search(ln)]


def completed_ids(p):
    return {ln.split()[2] for ln in log_grep(p, r" Completed$")}


def wait_completed(p, msgs, timeout=10, check_alive=False):
    """Wait for a "Completed" line for every message (by .qid)."""
    def pred():
        if check_alive:
            p.check_alive()
        return all(m.qid in completed_ids(p) for m in msgs)
    wait_until(pred, timeout, "'Completed' for every message",
               lambda: "missing: " + str([m.qid for m in msgs
                                          if m.qid not in completed_ids(p)][:5])
               + "\n" + tail(p, 25))
