"""Petrel's delivery engine against real peers: Postfix 3.7's smtp-sink and a
private Postfix smtpd (postfix_instance.py), on loopback only.

test_delivery.py judges delivery against the project's own Python sink; the
peers here are independent implementations, so a misreading of the protocol
that both sides of the project share cannot pass unnoticed.

1. smtp-sink (-d: one dump file per transaction). smtp-sink 3.7 offers
   PIPELINING (its -p option turns it off; -P is the PIX greeting, not
   pipelining) and has no CHUNKING/BDAT support at all (neither in its EHLO
   reply nor in its man page), so Petrel must use DATA: no "K" in its log.
   Each run goes through a recording TCP proxy (below) that keeps the byte
   chunks each side sent, in causal order, so the test sees from the wire
   whether commands were really sent ahead (with PIPELINING) or strictly in
   lock-step (without it); the "L" flag in Petrel's log must agree.
2. Postfix smtpd with STARTTLS, CHUNKING and PIPELINING as the receiver; it
   relays everything to tests/tools/smtp_sink.py (no TLS), where the
   content is checked. Postfix's own log (maillog_file) counts the TLS
   handshakes and sums up each connection ("disconnect from ... mail=N
   bdat=N").
3. The same with a recipient access map that rejects bad@peer.example:
   Petrel logs "**", delivers the other recipients, and sends an RFC 3464
   bounce (multipart/report) to the sender, whose domain is routed to the
   final sink. Run live and with a backlog (several transactions in
   flight when a recipient, or every recipient, of one is refused).
4. Postfix hiding CHUNKING and/or PIPELINING (smtpd_discard_ehlo_keywords):
   Petrel falls back to DATA / lock-step, and a Postfix that hangs up on
   improper pipelining (smtpd_forbid_unauth_pipelining) sees none.

Postfix runs strict (postfix_instance.py): improper pipelining is a
disconnect, bare LF in content a reject; the tests assert smtpd logged no
complaint about Petrel, and that each "=>" line quotes the Postfix queue id
that Postfix itself logged as carrying that very recipient.

No test here skips: if smtp-sink or Postfix is missing or cannot start, the
test fails with the output (scripts/deps.sh installs Postfix).
"""

import email
import email.policy
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from petrel_helpers import free_port  # noqa: E402
from postfix_instance import PostfixInstance  # noqa: E402
from delivery_helpers import (TS, dest_section, log_deliveries, one_sink,  # noqa: E402
                              queue_held, smtp_submit, wait_rcpts, wait_until)
from delivery_helpers import log_grep as grep  # noqa: E402
from delivery_helpers import wait_completed as _wait_completed  # noqa: E402

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
PEER = "peer.example"           # the destination under test
SENDER_DOMAIN = "sender.example"  # routed to a receiver we read (bounces)
SENDER = f"alice@{SENDER_DOMAIN}"
MAX_CONNECTIONS = 4

TOP = {"queue_only": "no", "retry_initial": "1s", "retry_max": "2s"}

FAIL_RX = re.compile(rf"^{TS} (?P<id>\S+) \*\* (?P<rcpt>\S+) (?P<rest>.*)$")
CLOSED_RX = re.compile(rf"^{TS} C=(?P<conn>\d+) H=\S+ \[[^\]]*\]:(?P<port>\d+) "
                       r"closed(?:: (?P<why>.*))? \((?P<n>\d+) messages\)$")
TID_RX = re.compile(rb"^X-Test-Id: (\S+?)\r?$", re.M)


# --------------------------------------------------------------------------
# small helpers


@dataclass
class Msg:
    tid: str
    rcpts: list
    content: bytes
    sender: str = SENDER
    qid: str = None

    @property
    def body(self):
        return self.content.split(b"\r\n\r\n", 1)[1]


def make_msg(tag, i, rcpts, size=0):
    """CRLF message with a unique X-Test-Id, lines starting with dots (dot
    stuffing through a foreign implementation) and random text; `size`
    pads the body with 76-character lines up to about that many bytes."""
    tid = f"{tag}-{i}-{os.getpid()}"
    rnd = os.urandom(12 * 24).hex()
    lines = [f"Message {tid}.", ".a line starting with a dot", "..two dots", ".",
             " leading space", ""] + [rnd[k * 48:(k + 1) * 48] for k in range(12)]
    if size:
        pad = os.urandom(size // 2).hex()
        lines += [pad[k:k + 76] for k in range(0, len(pad), 76)]
    lines.append("end.")
    content = (f"From: <{SENDER}>\r\nTo: <{rcpts[0]}>\r\n"
               f"Subject: peer test {tid}\r\n"
               f"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
               f"Message-ID: <{tid}@test.example>\r\n"
               f"X-Test-Id: {tid}\r\n\r\n" + "\r\n".join(lines) + "\r\n")
    return Msg(tid, list(rcpts), content.encode())


def inject(port, msgs, timeout=30):
    """Submit msgs to Petrel in one smtplib session; records queue ids."""
    return smtp_submit(port, msgs, timeout)


def submit(p, msgs, mode):
    """live: Petrel delivers while the messages arrive one by one. backlog:
    they are queued with delivery held (queue_only), then Petrel restarts
    with delivery on and finds them all ready at once, so several
    transactions are in flight on a connection (and the content end and
    the next MAIL can share a write)."""
    if mode == "live":
        p.start()
        return inject(p.port, msgs)

    def fill():
        inject(p.port, msgs)
        assert len(p.queue_ids()) == len(msgs)
    queue_held(p, fill)
    return msgs


def make_petrel(factory, peer_port, sender_port, **peer_opts):
    opts = {"route": f"127.0.0.1:{peer_port}", "tls": "may",
            "pipelining": "yes", "chunking": "yes",
            "max_connections": MAX_CONNECTIONS, "idle_timeout": "2s"}
    opts.update(peer_opts)
    extra = dest_section(PEER, **opts) + "\n" + dest_section(
        SENDER_DOMAIN, route=f"127.0.0.1:{sender_port}", tls="none",
        idle_timeout="2s")
    return factory(top=dict(TOP), extra=extra, start=False)


def deliveries(p):
    return log_deliveries(p)


def wait_completed(p, msgs, timeout=30):
    _wait_completed(p, msgs, timeout, check_alive=True)


def wait_closed(p, conns, timeout=10):
    """Wait for a 'closed' line for every connection in conns (the idle
    timeout is 2 s); returns {conn: (n messages, reason)}."""
    def closed():
        got = {}
        for ln in p.log_lines():
            m = CLOSED_RX.match(ln.strip()) if " closed" in ln else None
            if m:
                got[m.group("conn")] = (int(m.group("n")), m.group("why"))
        return got if set(conns) <= set(got) else None
    return wait_until(closed, timeout, f"Petrel to close connections {sorted(conns)}",
                      lambda: "\n".join(grep(p, r" closed")[-10:]))


def connecting(p, port):
    return grep(p, rf"C=\d+ connecting to \S+ \[127\.0\.0\.1\]:{port} ")


def opened_conns(p, port):
    return {re.search(r" C=(\d+) connecting", ln).group(1) for ln in connecting(p, port)}


def check_log_clean(p):
    bad = grep(p, r" (\*\*|==) ") + grep(p, r"unexpected reply|malformed reply|failed in state")
    assert not bad, "unexpected failures in Petrel's log:\n" + "\n".join(bad[:10])


# --------------------------------------------------------------------------
# a recording TCP proxy (loopback), to see pipelining on the wire


class RecordingProxy:
    """Forwards 127.0.0.1:self.port to 127.0.0.1:target_port and records,
    per connection, the chunks read from each side ("C" client, "S" server)
    in the order the proxy read them. A server chunk is recorded before it
    is forwarded, so a client chunk recorded after it may depend on it and
    one recorded before it cannot: the order is causal."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.conns = []          # list of event lists
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.socks = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping.is_set():
            try:
                cs, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                ss = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                cs.close()
                continue
            events = []
            with self.lock:
                self.conns.append(events)
                self.socks += [cs, ss]
            for src, dst, tag in ((cs, ss, "C"), (ss, cs, "S")):
                t = threading.Thread(target=self._pump, args=(src, dst, tag, events),
                                     daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, tag, events):
        src.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                d = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            with self.lock:
                events.append((tag, d))
            try:
                dst.sendall(d)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.stopping.set()
        self.lsock.close()
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            s.close()
        assert not [t for t in self.threads if t.is_alive()], "proxy threads hung"


def wire_commands(events):
    """The client's commands on one connection, from the recorded chunks:
    a list of (chunk index, line, replies the client had received before
    that chunk). The end of message content (".") counts as a command: it
    gets a reply of its own. Plaintext SMTP only."""
    out, replies, sbuf, cbuf, in_data = [], 0, b"", b"", False
    for idx, (tag, d) in enumerate(events):
        if tag == "S":
            sbuf += d
            while b"\r\n" in sbuf:
                line, sbuf = sbuf.split(b"\r\n", 1)
                if re.match(rb"^\d{3}( |$)", line):
                    replies += 1
            continue
        cbuf += d
        while b"\r\n" in cbuf:
            line, cbuf = cbuf.split(b"\r\n", 1)
            if in_data:
                if line == b".":
                    in_data = False
                    out.append((idx, line, replies))
                continue
            out.append((idx, line, replies))
            if line.upper() == b"DATA":
                in_data = True
    return out


def sent_ahead(cmds):
    """Commands sent before the reply to every earlier command (and the
    greeting) had arrived: the k-th command (0-based) needs k+1 replies."""
    return [(k, line) for k, (_, line, seen) in enumerate(cmds) if seen < k + 1]


# --------------------------------------------------------------------------
# Postfix smtp-sink


class PostfixSmtpSink:
    """smtp-sink -d DIR/%M. ...: one dump file per transaction."""

    def __init__(self, workdir, pipelining=True):
        self.dir = Path(workdir)
        self.dump = self.dir / "dump"
        self.dump.mkdir(parents=True)
        self.port = free_port()
        self.out_path = self.dir / "smtp-sink.out"
        self.args = [SMTP_SINK, "-c", "-d", f"{self.dump}/%M.", "-u", "root",
                     "-h", "sink.peer.example"]
        if not pipelining:
            self.args.append("-p")
        self.args += [f"127.0.0.1:{self.port}", "100"]
        self.proc = None

    def start(self, timeout=10):
        assert os.path.exists(SMTP_SINK), f"{SMTP_SINK} missing (scripts/deps.sh installs postfix)"
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"smtp-sink exited {self.proc.returncode}: "
                                     f"{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(2)
                    g = s.recv(512)
                    if g.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return self
                    last = g
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"smtp-sink not ready: {last!r} {self.output()}")

    def output(self):
        try:
            return self.out_path.read_bytes()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def dumps(self):
        return sorted(self.dump.iterdir())


def parse_dump(data):
    """One smtp-sink dump file (LF line ends, dot-unstuffed): X-* records,
    smtp-sink's three-line Received, then the content as received, then an
    empty line. Returns (records {name: [values]}, content without
    Petrel's Received header, as LF text)."""
    lines = data.split(b"\n")
    rec, i = {}, 0
    while not lines[i].startswith(b"Received: "):
        k, _, v = lines[i].partition(b": ")
        assert k.startswith(b"X-"), f"unexpected smtp-sink record {lines[i]!r}"
        rec.setdefault(k.decode(), []).append(v.decode())
        i += 1
    assert lines[i + 1].startswith(b"\tby ") and b"(smtp-sink)" in lines[i + 1], lines[i:i + 3]
    i += 3                                              # smtp-sink's Received
    assert lines[i].startswith(b"Received: from "), \
        f"no Petrel Received header: {lines[i]!r}"
    i += 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    rest = b"\n".join(lines[i:])
    assert rest.endswith(b"\n\n"), f"dump does not end with the empty line: {rest[-50:]!r}"
    return rec, rest[:-1]


@pytest.fixture
def smtp_sink_factory(tmp_path, request):
    made = []

    def make(**kw):
        s = PostfixSmtpSink(tmp_path / f"smtp-sink{len(made)}", **kw)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for s in made:
            print(f"==== smtp-sink {s.args} ====\n{s.output()}")


@pytest.fixture
def proxy_factory():
    made = []

    def make(target):
        p = RecordingProxy(target)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.mark.parametrize("pipelining,mode", [(True, "live"), (True, "backlog"),
                                             (False, "live")],
                         ids=["pipelining-live", "pipelining-backlog", "lockstep-live"])
def test_smtp_sink_100_messages(petrel_factory, smtp_sink_factory, proxy_factory,
                                pipelining, mode):
    sink = smtp_sink_factory(pipelining=pipelining)
    proxy = proxy_factory(sink.port)
    # bounces (none expected) would go to the same sink and be counted
    p = make_petrel(petrel_factory, proxy.port, proxy.port)
    msgs = [make_msg("sink", i, [f"rcpt@{PEER}"]) for i in range(100)]
    submit(p, msgs, mode)
    wait_completed(p, msgs)

    dl = deliveries(p)
    assert len(dl) == 100, f"{len(dl)} '=>' lines"
    assert {d["id"] for d in dl} == {m.qid for m in msgs}
    check_log_clean(p)
    conns = {d["conn"] for d in dl}
    opened = opened_conns(p, proxy.port)
    closed = wait_closed(p, opened)
    assert conns <= opened and sum(closed[c][0] for c in opened) == 100, closed
    assert all(closed[c][1] is None for c in opened), f"not idle closes: {closed}"
    for d in dl:
        assert d["port"] == str(proxy.port), d["line"]
        assert d["tls"] is None, f"smtp-sink offers no STARTTLS: {d['line']}"
        assert not d["K"], f"smtp-sink 3.7 has no CHUNKING, yet 'K': {d['line']}"
        if pipelining:
            assert d["L"], f"smtp-sink offers PIPELINING, yet no 'L': {d['line']}"
        else:
            assert not d["L"], f"PIPELINING not offered (-p), yet 'L': {d['line']}"
    assert 1 <= len(opened) <= MAX_CONNECTIONS, sorted(opened)

    # every message arrived exactly once, intact
    def all_dumped():
        files = sink.dumps()
        return files if len(files) >= 100 else None
    files = wait_until(all_dumped, 5, "100 dump files",
                       lambda: f"have {len(sink.dumps())}")
    by_tid = {}
    for f in files:
        rec, content = parse_dump(f.read_bytes())
        m = TID_RX.search(content)
        assert m, f"{f.name}: no X-Test-Id"
        by_tid.setdefault(m.group(1).decode(), []).append((f, rec, content))
    problems = []
    for m in msgs:
        copies = by_tid.pop(m.tid, [])
        if len(copies) != 1:
            problems.append(f"{m.tid}: {len(copies)} copies")
            continue
        f, rec, content = copies[0]
        if content != m.content.replace(b"\r\n", b"\n"):
            problems.append(f"{m.tid} ({f.name}): content differs")
        if rec.get("X-Rcpt-Args", [""])[0].split()[:1] != [f"<rcpt@{PEER}>"] \
                or len(rec["X-Rcpt-Args"]) != 1:
            problems.append(f"{m.tid}: recipients {rec.get('X-Rcpt-Args')}")
        if rec.get("X-Mail-Args", [""])[0].split()[:1] != [f"<{SENDER}>"]:
            problems.append(f"{m.tid}: MAIL args {rec.get('X-Mail-Args')}")
        if rec.get("X-Client-Proto") != ["ESMTP"]:
            problems.append(f"{m.tid}: protocol {rec.get('X-Client-Proto')}")
    if by_tid:
        problems.append(f"unexpected dumps: {sorted(by_tid)[:5]}")
    assert not problems, "\n".join(problems[:20])
    assert len(files) == 100

    # the wire agrees with the log
    assert len(proxy.conns) == len(opened), (len(proxy.conns), sorted(opened))
    for ev in proxy.conns:
        cl = b"".join(d for t, d in ev if t == "C")
        assert cl.endswith(b"QUIT\r\n"), f"connection did not end with QUIT: {cl[-60:]!r}"
    cmds_per_conn = [wire_commands(ev) for ev in proxy.conns]
    ahead = [sent_ahead(c) for c in cmds_per_conn]
    n_data = sum(1 for c in cmds_per_conn for _, ln, _ in c if ln.upper() == b"DATA")
    n_bdat = sum(1 for c in cmds_per_conn for _, ln, _ in c if ln.upper().startswith(b"BDAT"))
    assert n_data == 100 and n_bdat == 0, (n_data, n_bdat)
    if pipelining:
        # MAIL, RCPT and DATA went out together at least for most messages
        n_ahead = sum(len(a) for a in ahead)
        assert n_ahead >= 200, f"only {n_ahead} commands sent ahead of replies"
        illegal = [b for c in cmds_per_conn for b in check_ahead_legal(c)]
        assert not illegal, f"sent ahead after a group-ending command: {illegal[:5]}"
    else:
        flat = [(k, ln) for a in ahead for k, ln in a]
        assert not flat, f"commands sent ahead without PIPELINING: {flat[:5]}"
    print(f"smtp-sink pipelining={pipelining} {mode}: {len(opened)} connection(s), "
          f"messages per connection {sorted(closed[c][0] for c in opened)}, "
          f"commands sent ahead {sum(len(a) for a in ahead)}")


def check_ahead_legal(cmds):
    """RFC 2920: a command sent ahead of a reply must follow only commands
    that may stand anywhere in a group (MAIL, RCPT, RSET, BDAT) or the end
    of content; EHLO, DATA, QUIT, STARTTLS... end a group."""
    bad = []
    for k, (_, line, seen) in enumerate(cmds):
        if seen < k + 1 and k > 0:
            prev = cmds[k - 1][1].upper()
            if not re.match(rb"(MAIL|RCPT|RSET|BDAT|\.$)", prev):
                bad.append((prev, line))
    return bad


# --------------------------------------------------------------------------
# Postfix smtpd


@pytest.fixture
def postfix_factory(request):
    made = []

    def make(relay_port, **kw):
        pf = PostfixInstance(("127.0.0.1", relay_port), **kw)
        made.append(pf)
        pf.start()          # raises PostfixError with Postfix's output
        return pf

    yield make
    problems = []
    rep = getattr(request.node, "rep_call", None)
    for pf in made:
        if rep is not None and rep.failed:
            print(f"==== postfix {pf.dir} ====\n{pf.maillog_tail(60)}")
        problems += pf.stop()
    if problems:
        pytest.fail("postfix did not stop cleanly:\n" + "\n".join(problems))


@pytest.fixture
def final_sink(tmp_path, request):
    yield from one_sink(tmp_path, "final-sink", request, label="final sink")


def wait_final(sink, p, n_rcpts, pf, timeout=30):
    wait_rcpts(sink, p, n_rcpts, timeout, "at the final sink", 15, lambda: pf.maillog_tail(15))


def check_final_copies(sink, msgs, expect_rcpts):
    """Each message reached the final sink with exactly the expected
    recipients, once each, its body (sha256) intact and our headers kept.
    Returns the bounces (null sender) separately."""
    copies, bounces = {}, []
    for env in sink.messages():
        if env["mail_from"] == "":
            bounces.append(env)
            continue
        head, _, body = env["content"].partition(b"\r\n\r\n")
        m = TID_RX.search(head)
        assert m, f"final sink #{env['id']}: no X-Test-Id header"
        copies.setdefault(m.group(1).decode(), []).append((env, head, body))
    problems = []
    for m in msgs:
        got = []
        for env, head, body in copies.pop(m.tid, []):
            got += env["rcpts"]
            if hashlib.sha256(body).hexdigest() != hashlib.sha256(m.body).hexdigest():
                problems.append(f"{m.tid}: body sha256 differs ({len(body)} vs "
                                f"{len(m.body)} bytes)")
            if f"Subject: peer test {m.tid}".encode() not in head:
                problems.append(f"{m.tid}: Subject lost")
            if env["mail_from"] != m.sender:
                problems.append(f"{m.tid}: MAIL FROM {env['mail_from']!r}")
        want = expect_rcpts(m)
        if sorted(got) != sorted(want):
            problems.append(f"{m.tid} ({m.qid}): recipients {sorted(got)} != {sorted(want)}")
    if copies:
        problems.append(f"unexpected messages: {sorted(copies)[:5]}")
    assert not problems, "\n".join(problems[:20])
    return bounces


def check_replies_match_postfix(dl, pf, timeout=10):
    """Each "=>" line quotes Postfix's "250 2.0.0 Ok: N bytes queued as
    QID" (BDAT; "Ok: queued as QID" after DATA); Postfix's own log must
    show QID relayed to that very recipient (replies matched to the wrong
    transaction would name another QID), and all recipients of one Petrel
    message share one QID. Postfix logs "status=sent" through postlogd,
    a moment after the final sink has the message: wait for the lines."""
    def check():
        sent = {}
        for ln in pf.grep(r"status=sent"):
            m = re.search(r": ([0-9A-F]+): to=<([^>]+)>", ln)
            if m:
                sent.setdefault(m.group(1), set()).add(m.group(2))
        qid_of = {}
        problems = []
        for d in dl:
            m = re.match(r"250 2\.0\.0 Ok: (?:(\d+) bytes )?queued as ([0-9A-F]+)$",
                         d["reply"])
            if not m or bool(m.group(1)) != bool(d["K"]):
                problems.append(f"not Postfix's {'BDAT' if d['K'] else 'DATA'} reply: "
                                f"{d['line']}")
                continue
            if d["rcpt"] not in sent.get(m.group(2), ()):
                problems.append(f"Postfix queue id {m.group(2)} did not carry "
                                f"{d['rcpt']}: {d['line']}")
            if qid_of.setdefault(d["id"], m.group(2)) != m.group(2):
                problems.append(f"{d['id']}: two Postfix queue ids")
        if len(set(qid_of.values())) != len(qid_of):
            problems.append("Postfix queue ids reused")
        return problems

    deadline = time.monotonic() + timeout
    while True:
        problems = check()
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not problems, "\n".join(problems[:10]) + "\n" + "\n".join(
        ln for ln in pf.maillog_lines() if any(
            q in ln for q in re.findall(r"queued as ([0-9A-F]+)", "\n".join(problems[:3]))))


def postfix_sessions(pf):
    """Postfix smtpd's summary of each TLS session ("disconnect from ...
    ehlo=2 starttls=1 mail=N rcpt=N bdat=N quit=1 commands=N"), as dicts of
    the counters (a "rcpt=2/3" counter is kept as the string)."""
    out = []
    for ln in pf.grep(r"smtpd\[\d+\]: disconnect from .* starttls="):
        d = {}
        for k, v in re.findall(r" (\w+)=(\S+)", ln.split("disconnect from", 1)[1]):
            d[k] = v
        d["line"] = ln
        out.append(d)
    return out


def tls_established(pf):
    return pf.grep(r"smtpd\[\d+\]: (Anonymous|Untrusted|Trusted|Verified) TLS "
                   r"connection established from")


def check_postfix_side(p, pf, conns_expected):
    """One TLS handshake per Petrel connection; Postfix saw pipelining it
    accepts and BDAT, and nothing it complains about."""
    deadline = time.monotonic() + 5     # postlogd writes asynchronously
    while len(tls_established(pf)) < conns_expected and time.monotonic() < deadline:
        time.sleep(0.1)
    hs = tls_established(pf)
    assert len(hs) == conns_expected, \
        f"{len(hs)} TLS handshakes for {conns_expected} Petrel connections:\n" + "\n".join(hs)
    # smtpd's view of the client only (cleanup/qmgr may warn about this
    # machine's clock, which is no business of Petrel's)
    complaints = pf.grep(r"smtpd\[\d+\]: .*(improper command pipelining|lost connection|"
                         r"timeout after|too many errors|warning:|SSL_accept error|"
                         r"synchronization|bare <LF>|Improper use of SMTP|"
                         r"Unknown command|rejected:(?!.*no such user))")
    # and the relay onward to the final sink went smoothly
    relay = pf.grep(r"status=(deferred|bounced)")
    assert not relay, "Postfix could not relay:\n" + "\n".join(relay[:5])
    assert not complaints, "Postfix complains:\n" + "\n".join(complaints[:10])
    return hs


@pytest.mark.parametrize("mode", ["live", "backlog"])
def test_postfix_starttls_50_messages(petrel_factory, postfix_factory, final_sink, mode):
    pf = postfix_factory(final_sink.port)
    p = make_petrel(petrel_factory, pf.port, final_sink.port)
    msgs = []
    for i in range(50):
        nr = 3 if i % 4 == 0 else 1
        size = 1024 * 1024 if i % 10 == 5 else 0
        msgs.append(make_msg("pf", i, [f"u{i}-{k}@{PEER}" for k in range(nr)], size=size))
    n_rcpts = sum(len(m.rcpts) for m in msgs)
    assert sum(1 for m in msgs if len(m.content) > 1_000_000) == 5
    submit(p, msgs, mode)
    wait_completed(p, msgs)
    wait_final(final_sink, p, n_rcpts, pf)
    pf.wait_maillog(r"status=sent", count=n_rcpts)
    check_log_clean(p)

    dl = deliveries(p)
    assert len(dl) == n_rcpts == 76, len(dl)
    seen = {}
    for d in dl:
        seen[(d["id"], d["rcpt"])] = seen.get((d["id"], d["rcpt"]), 0) + 1
        assert d["port"] == str(pf.port), d["line"]
        assert d["tls"] and d["tls"].startswith("TLS1."), f"no X=TLS1.x: {d['line']}"
        assert d["L"], f"Postfix offers PIPELINING, yet no 'L': {d['line']}"
        assert d["K"], f"Postfix 3.7 offers CHUNKING, yet no 'K': {d['line']}"
    assert sorted(seen.values()) == [1] * n_rcpts
    check_replies_match_postfix(dl, pf)
    assert set(seen) == {(m.qid, r) for m in msgs for r in m.rcpts}

    check_final_copies(final_sink, msgs, lambda m: m.rcpts)

    conns = {d["conn"] for d in dl}
    opened = opened_conns(p, pf.port)
    closed = wait_closed(p, opened)
    n_conn = len(opened)
    # a connection opened for a backlog that the others drained before it
    # was ready carries nothing (seen in backlog mode); it still costs a
    # handshake and must end cleanly
    empty = sorted(opened - conns)
    assert conns <= opened and all(closed[c][0] == 0 for c in empty), (conns, closed)
    assert 1 <= n_conn <= MAX_CONNECTIONS, sorted(opened)
    assert all(closed[c][1] is None for c in opened), f"not idle closes: {closed}"
    # Postfix's side: one handshake per connection, one session summary
    # per connection, the sums match, BDAT and no DATA
    hs = check_postfix_side(p, pf, n_conn)
    sess = wait_until(lambda: (lambda s: s if len(s) >= n_conn else None)(postfix_sessions(pf)),
                      10, "Postfix's disconnect lines")
    assert len(sess) == n_conn, [s["line"] for s in sess]
    for s in sess:
        assert s.get("starttls") == "1" and s.get("ehlo") == "2", s["line"]
        assert s.get("quit") == "1", f"Petrel did not QUIT: {s['line']}"
        assert "rset" not in s, f"RSET without a failed transaction: {s['line']}"
        assert "data" not in s, f"DATA although CHUNKING is offered: {s['line']}"
        if "mail" in s:
            assert s.get("bdat"), f"expected BDAT: {s['line']}"
    assert sum(1 for s in sess if "mail" not in s) == len(empty), [s["line"] for s in sess]
    assert sum(int(s.get("mail", 0)) for s in sess) == 50
    assert sum(int(s.get("rcpt", 0)) for s in sess) == n_rcpts
    assert sum(closed[c][0] for c in opened) == 50, closed
    print(f"postfix {mode}: {n_conn} Petrel connection(s) ({len(empty)} unused), "
          f"{len(hs)} TLS handshake(s), sessions: "
          + "; ".join(f"mail={s.get('mail', 0)} bdat={s.get('bdat', 0)}" for s in sess)
          + f"; {hs[0].split(': ', 2)[-1]}")


@pytest.mark.parametrize("mode", ["live", "backlog"])
def test_postfix_rejects_recipient_bounce(petrel_factory, postfix_factory, final_sink,
                                          mode):
    pf = postfix_factory(final_sink.port,
                         access={f"bad@{PEER}": "REJECT no such user"})
    p = make_petrel(petrel_factory, pf.port, final_sink.port)
    bad = f"bad@{PEER}"
    msgs = [make_msg("rej", 0, [f"good0@{PEER}", bad]),
            make_msg("rej", 1, [bad]),                      # no valid recipient
            make_msg("rej", 2, [f"good2@{PEER}", bad, f"good2b@{PEER}"]),
            make_msg("rej", 3, [f"good3@{PEER}"])]
    good = lambda m: [r for r in m.rcpts if r != bad]  # noqa: E731
    submit(p, msgs, mode)
    wait_completed(p, msgs)
    n_good = sum(len(good(m)) for m in msgs)
    bounced = [m for m in msgs if bad in m.rcpts]
    # good copies via Postfix, bounces from Petrel directly
    wait_final(final_sink, p, n_good + len(bounced), pf)
    # the sink stores a bounce before it replies, Petrel logs after: wait
    # for Petrel to log every bounce delivered and completed
    wait_until(lambda: len(grep(p, rf" => {re.escape(SENDER)} .*\]:{final_sink.port} ")) >=
               len(bounced) and len(grep(p, r" Completed$")) >= len(msgs) + len(bounced),
               10, "the bounces logged delivered", lambda: "\n".join(p.log_lines()[-15:]))

    fails = [FAIL_RX.match(ln) for ln in p.log_lines() if " ** " in ln]
    assert sorted((f["id"], f["rcpt"]) for f in fails) == \
        sorted((m.qid, bad) for m in bounced), "\n".join(f.group(0) for f in fails)
    for f in fails:
        assert "554 5.7.1" in f["rest"] and "no such user" in f["rest"], f.group(0)
    assert not grep(p, r" == "), grep(p, r" == ")
    all_dl = deliveries(p)
    dl = [d for d in all_dl if d["port"] == str(pf.port)]
    bounce_dl = [d for d in all_dl if d["port"] == str(final_sink.port)]
    assert len(dl) + len(bounce_dl) == len(all_dl)
    assert sorted(d["rcpt"] for d in bounce_dl) == [SENDER] * len(bounced), bounce_dl
    assert sorted((d["id"], d["rcpt"]) for d in dl) == \
        sorted((m.qid, r) for m in msgs for r in good(m))
    for d in dl:
        assert d["tls"] and d["L"] and d["K"], d["line"]
    check_replies_match_postfix(dl, pf)
    rejects = pf.grep(r"reject: RCPT from .*<bad@peer\.example>: Recipient address "
                      r"rejected: no such user")
    assert len(rejects) == len(bounced), "\n".join(rejects)

    bounces = check_final_copies(final_sink, msgs, good)
    bounce_lines = grep(p, r" <= <> R=\S+ bounce for ")
    assert len(bounce_lines) == len(bounced), bounce_lines
    by_orig = {}
    for env in bounces:
        assert env["rcpts"] == [SENDER], env["rcpts"]
        msg = email.message_from_bytes(env["content"], policy=email.policy.compat32)
        assert msg.get_content_type() == "multipart/report", msg.get_content_type()
        assert msg.get_param("report-type") == "delivery-status"
        parts = msg.get_payload()
        types = [pt.get_content_type() for pt in parts]
        assert types[:2] == ["text/plain", "message/delivery-status"], types
        assert types[2] in ("text/rfc822-headers", "message/rfc822"), types
        ds = parts[1].as_string() if not parts[1].is_multipart() else \
            "\n".join(str(x) for x in parts[1].get_payload())
        assert re.search(r"Final-Recipient: rfc822; ?bad@peer\.example", ds), ds
        assert "Action: failed" in ds and "Status: 5.7.1" in ds, ds
        assert re.search(r"Diagnostic-Code: smtp; ?554 5\.7\.1", ds), ds
        assert "good" not in ds, f"a delivered recipient is in the bounce:\n{ds}"
        orig = parts[2].as_string()
        t = re.search(r"X-Test-Id: (\S+)", orig)
        assert t, orig
        by_orig.setdefault(t.group(1), []).append(env)
    assert sorted(by_orig) == sorted(m.tid for m in bounced), sorted(by_orig)
    assert all(len(v) == 1 for v in by_orig.values())

    opened = opened_conns(p, pf.port)
    closed = wait_closed(p, opened)
    assert {d["conn"] for d in dl} <= opened
    assert all(closed[c][1] is None for c in opened), f"not idle closes: {closed}"
    hs = check_postfix_side(p, pf, len(opened))
    sess = wait_until(lambda: (lambda s: s if len(s) >= len(opened) else None)(
        postfix_sessions(pf)), 10, "Postfix's disconnect lines")
    assert sum(int(s.get("mail", 0)) for s in sess) == len(msgs), [s["line"] for s in sess]
    print(f"postfix rejects {mode}: {len(opened)} connection(s), {len(hs)} TLS "
          f"handshake(s), sessions: " + "; ".join(s["line"].split("] ", 1)[1] for s in sess))


@pytest.mark.parametrize("discard", ["chunking", "pipelining", "pipelining, chunking"])
def test_postfix_without_extensions(petrel_factory, postfix_factory, final_sink, discard):
    """Postfix hides extensions (smtpd_discard_ehlo_keywords); Petrel must
    fall back (DATA without CHUNKING, lock-step without PIPELINING) and,
    with a backlog ready, still satisfy a Postfix that hangs up on
    improper pipelining (smtpd_forbid_unauth_pipelining): without
    CHUNKING, content end and the next MAIL/RCPT/DATA may share a write
    (RFC 2920), a DATA must not be followed by content before 354."""
    pf = postfix_factory(final_sink.port,
                         main_extra={"smtpd_discard_ehlo_keywords": discard})
    p = make_petrel(petrel_factory, pf.port, final_sink.port)
    msgs = [make_msg("ext", i, [f"x{i}-{k}@{PEER}" for k in range(3 if i % 5 == 0 else 1)],
                     size=(300 * 1024 if i == 7 else 0)) for i in range(30)]
    n_rcpts = sum(len(m.rcpts) for m in msgs)
    submit(p, msgs, "backlog")
    wait_completed(p, msgs)
    wait_final(final_sink, p, n_rcpts, pf)
    pf.wait_maillog(r"status=sent", count=n_rcpts)
    check_log_clean(p)
    dl = deliveries(p)
    assert sorted((d["id"], d["rcpt"]) for d in dl) == \
        sorted((m.qid, r) for m in msgs for r in m.rcpts)
    pipelining, chunking = "pipelining" not in discard, "chunking" not in discard
    for d in dl:
        assert d["tls"] and d["tls"].startswith("TLS1."), d["line"]
        assert bool(d["L"]) == pipelining, f"'L' must be {pipelining}: {d['line']}"
        assert bool(d["K"]) == chunking, f"'K' must be {chunking}: {d['line']}"
    check_replies_match_postfix(dl, pf)
    check_final_copies(final_sink, msgs, lambda m: m.rcpts)
    opened = opened_conns(p, pf.port)
    closed = wait_closed(p, opened)
    assert all(closed[c][1] is None for c in opened), f"not idle closes: {closed}"
    hs = check_postfix_side(p, pf, len(opened))
    sess = wait_until(lambda: (lambda s: s if len(s) >= len(opened) else None)(
        postfix_sessions(pf)), 10, "Postfix's disconnect lines")
    assert len(sess) == len(opened)
    used = [s for s in sess if "mail" in s]
    assert sum(int(s["mail"]) for s in used) == len(msgs)
    for s in used:
        assert s.get("quit") == "1" and "rset" not in s, s["line"]
        if chunking:
            assert s.get("bdat") and "data" not in s, s["line"]
        else:
            assert s.get("data") == s["mail"] and "bdat" not in s, s["line"]
    print(f"postfix without {discard}: {len(opened)} connection(s), {len(hs)} TLS "
          f"handshake(s), sessions: " + "; ".join(s["line"].split("] ", 1)[1] for s in sess))
