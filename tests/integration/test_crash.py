"""Crash tests: nothing Petrel acknowledged is ever lost, whatever moment it
is killed at (kill -9, then an immediate restart on the same spool).

Petrel's promises (docs/internals/QUEUE.md, DELIVERY.md):
  - a 250 is sent only after the message file is fdatasync'ed in queue/ and
    queue/ itself fsync'ed: an acknowledged message survives any crash;
  - queue/ never holds a partial file; tmp/ is emptied at every start;
  - each recipient's final outcome is appended to journal/<id> and
    fdatasync'ed: a recipient whose journal line is written is never
    delivered again; the only duplicates possible are transactions in flight
    at the crash (the remote 250 arrived, or was about to, and the journal
    line was not yet written).

test_random_kills_lose_nothing checks all of this from the outside while
2-4 smtplib clients inject and Petrel delivers to tests/tools/smtp_sink.py,
and Petrel is killed at random moments (fixed seed, printed; override with
PETREL_CRASH_SEED). What the test knows and how it uses it:

  incarnation   Petrel run number (0 = first start, k = after the k-th
                kill). The sink numbers its connections in accept order
                and records each stored copy's connection; right after kill k
                (Petrel dead) the sink's connection count B_k is read: copies
                on connections <= B_k were made by incarnations <= k. This is
                exact: a connection only carries a message after the sink
                greeted it, and the sink writes its stats (which count the
                connection) before the greeting.
  log epochs    the log is append-only, one write(2) per line, so after a
                kill it is final for that incarnation: its size then splits
                the log into epochs, one per incarnation.
  journal       a sampler thread reads journal/ every few ms and records when
                it first saw "D <index>" for a message. kill -9 does not lose
                a completed write(2), so a recipient seen journaled at time t
                must have no copy made by an incarnation started after t.
  Completed     logged only once the message's removal from queue/ is
                durable (directory fsync'ed; a message whose last delivery
                completes it writes no journal line, the removal is the
                record): no copy and no "=>" in any later incarnation. A
                kill between that fsync and the log line leaves a message
                with no Completed line: allowed only if every recipient
                has its "=>" (counted as completed_unlogged).
  duplicates    (message, recipient) pairs stored more than once. Each pair
                of consecutive copies must come from different incarnations
                (a duplicate needs a kill in between: the first copy was in
                flight at that kill). The "=>" line names the sink's message
                number, so each first copy is one of two kinds: no "=>" (the
                sink's 250 had not reached Petrel: in the pipeline window, at
                most max_connections x pipeline_window transactions x 3
                recipients per kill) or "=>" logged but the journal line or
                the removal not yet durable (the log line comes first):
                then the "=>" must be recent at the kill (LAG_MAX).
  spool         at every kill (Petrel dead, spool frozen) every queue/ file
                parses, journal lines are whole and in range, and every
                message acknowledged so far is in queue/ or at the sink for
                all its recipients; the sampler parses every file that ever
                appears in queue/; tmp/ files left by a kill are gone after
                the restart; after the final drain queue/, journal/ and tmp/
                are empty.

test_kill_after_250_destination_down: kill -9 right after the 250 while
the destination is down; restart with it up: delivered exactly once.
test_kill_while_streaming_large_message: kill -9 while a 5 MB message is
streaming to the sink; restart: delivered, never lost (see its docstring).
"""

import hashlib
import json
import os
import random
import re
import signal
import smtplib
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from petrel_helpers import free_port, parse_spool_bytes, split_received  # noqa: E402
from delivery_helpers import TID_RX, TS, sinks, wait_until  # noqa: E402
from delivery_helpers import dest_section as _dest_section  # noqa: E402

SEED = int(os.environ.get("PETREL_CRASH_SEED", "20261129"))
SINK_DOMAIN = "sink.example"
SENDER = f"crash@{SINK_DOMAIN}"      # a bounce would land at the sink: seen
TOP = {"queue_only": "no", "retry_initial": "1s", "retry_max": "1s"}
# Stated explicitly (pipeline_window is the default) because the bound on
# duplicates is computed from them: at most MAX_CONN * WINDOW transactions
# of at most MAX_RCPTS recipients each are in flight at a kill.
WINDOW = 8
MAX_CONN = 2
MAX_RCPTS = 3
CLIENTS = 3
KILLS = 12
KILL_GAP = (0.2, 0.7)
# A recipient logged "=>" and delivered again after a kill had its journal
# line unwritten at the kill; the journal write takes milliseconds (about
# 10 ms median, 170 ms worst seen here under this load), so a "=>" older than
# this at the kill means the journal line was never written.
LAG_MAX = 1.0

DLV_RX = re.compile(rf"^{TS} (\S+) => (\S+) .* C=\"250 2\.0\.0 Ok: queued as (\d+)\"")
COMPLETED_RX = re.compile(rf"^{TS} (\S+) Completed$")
JOURNAL_RX = re.compile(r"^([DF]) (\d+) (\d+)(?: .*)?$")


# --------------------------------------------------------------------------
# fixtures and small helpers


@pytest.fixture
def sink_factory(tmp_path, request):
    yield from sinks(tmp_path, request, stats=False)


def dest_section(route, **kw):
    return _dest_section("sink.example", {"route": route, "idle_timeout": "1s"}, **kw)


def make_petrel(factory, route, **dest):
    return factory(top=dict(TOP), extra=dest_section(route, **dest))


def listdir(d):
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("."))
    except FileNotFoundError:
        return []


def spool_left(p):
    return {sub: listdir(p.spool / sub) for sub in ("queue", "journal", "tmp")}


@dataclass
class Msg:
    tid: str
    rcpts: list
    content: bytes
    qid: str = None
    acked_at: float = None
    outcome: str = "pending"

    @property
    def sha(self):
        return hashlib.sha256(self.content).hexdigest()


def make_msg(tid, rcpts, size=0):
    """A message with a unique X-Test-Id, Message-ID and body marker; lines
    starting with a dot exercise dot-stuffing both ways. size > 0 pads it to
    about that many bytes."""
    marker = f"MARKER-{tid}-{os.urandom(8).hex()}"
    head = (f"From: <{SENDER}>\r\nTo: <{rcpts[0]}>\r\nSubject: crash {tid}\r\n"
            f"Message-ID: <{tid}.{os.getpid()}.{SEED}@crash.test>\r\n"
            f"X-Test-Id: {tid}\r\n\r\n")
    body = [marker, ".a line starting with a dot", "..", "."]
    n = len(head) + sum(len(b) + 2 for b in body)
    rnd = os.urandom(64).hex()
    k = 0
    while n < size:
        ln = ("." if k % 3 == 0 else "") + (rnd * 2)[k % 64:k % 64 + 1 + k % 97]
        body.append(ln)
        n += len(ln) + 2
        k += 1
    body.append(f"end {marker}")
    return Msg(tid, list(rcpts), (head + "\r\n".join(body) + "\r\n").encode())


def submit(port, msg, timeout=30):
    """One message over a fresh smtplib session; returns the queue id."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as c:
        c.ehlo("crash.test")
        code, resp = c.mail(SENDER)
        assert code == 250, (code, resp)
        for r in msg.rcpts:
            code, resp = c.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = c.data(msg.content)
        m = re.search(rb"queued as (\S+)$", resp)
        assert code == 250 and m, (code, resp)
    msg.qid = m.group(1).decode()
    msg.acked_at = time.time()
    return msg.qid


class SinkReader:
    """Incremental reader of the sink's maildir (the .env is renamed into
    place after the .eml, so a listed .env has its content)."""

    def __init__(self, sink):
        self.dir = sink.maildir
        self.copies = {}      # sink id -> env (with "content", "tid")

    def refresh(self):
        for n in listdir(self.dir):
            if not n.endswith(".env") or not n[:-4].isdigit():
                continue
            i = int(n[:-4])
            if i in self.copies:
                continue
            with open(os.path.join(self.dir, n)) as f:
                env = json.load(f)
            with open(os.path.join(self.dir, f"{i}.eml"), "rb") as f:
                env["content"] = f.read()
            m = TID_RX.search(env["content"])
            env["tid"] = m.group(1).decode() if m else None
            self.copies[i] = env
        return self.copies

    def pairs(self):
        """{(tid, rcpt): [sink ids, in storing order]}"""
        out = {}
        for i in sorted(self.copies):
            env = self.copies[i]
            for r in env["rcpts"]:
                out.setdefault((env["tid"], r), []).append(i)
        return out


def pct(values, q):
    """q-quantile of sorted seconds, in ms ("-" if none)."""
    if not values:
        return "-"
    return f"{values[min(len(values) - 1, int(len(values) * q))] * 1000:.0f}"


def log_time(line):
    """A log line's timestamp (local time, ms) as Unix seconds."""
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000


def log_epochs(p, offsets):
    """Log lines with their epoch (incarnation): offsets[k] is the log size
    right after the k-th kill."""
    data = p.log_path.read_bytes() if p.log_path.exists() else b""
    out, pos = [], 0
    for raw in data.split(b"\n"):
        e = next((k for k, off in enumerate(offsets) if pos < off), len(offsets))
        if raw:
            out.append((e, raw.decode("utf-8", "replace")))
        pos += len(raw) + 1
    return out


class SpoolSampler(threading.Thread):
    """Watches queue/ and journal/ while Petrel runs: parses every file that
    ever appears in queue/ (no partial file may ever be visible there) and
    records when each journal line was first seen."""

    def __init__(self, spool):
        super().__init__(daemon=True)
        self.q = spool / "queue"
        self.j = spool / "journal"
        self.stop_evt = threading.Event()
        self.parsed = {}          # qid -> rcpts
        self.bad = []             # (name, error)
        self.vanished = 0         # listed, then gone before it could be read
        self.jsize = {}
        self.jseen = {}           # (qid, index) -> (kind, first seen time)
        self.jbad = []
        self.rounds = 0

    def scan(self):
        for n in listdir(self.q):
            if n in self.parsed:
                continue
            try:
                data = (self.q / n).read_bytes()
            except FileNotFoundError:
                self.vanished += 1
                continue
            try:
                sp = parse_spool_bytes(data, self.q / n)
                assert sp.env.get("id") == n, f"envelope id {sp.env.get('id')!r}"
                self.parsed[n] = sp.rcpts
            except AssertionError as e:
                self.bad.append((n, str(e)[:300]))
                self.parsed[n] = None
        for n in listdir(self.j):
            try:
                st = os.stat(self.j / n)
                if self.jsize.get(n) == st.st_size:
                    continue
                data = (self.j / n).read_bytes()
            except FileNotFoundError:
                continue
            now = time.time()
            self.jsize[n] = len(data)
            # only complete lines: a line being appended is not yet a promise
            for ln in data.decode("utf-8", "replace").split("\n")[:-1]:
                m = JOURNAL_RX.match(ln)
                if not m:
                    self.jbad.append((n, ln))
                    continue
                self.jseen.setdefault((n, int(m.group(2))), (m.group(1), now))

    def run(self):
        while not self.stop_evt.is_set():
            try:
                self.scan()
            except Exception as e:  # reported, never silently lost
                self.bad.append(("(sampler)", repr(e)))
            self.rounds += 1
            time.sleep(0.005)

    def stop(self):
        self.stop_evt.set()
        self.join(10)
        self.scan()


class Clients:
    """CLIENTS smtplib sessions sending messages with 1-3 recipients as fast
    as Petrel takes them; a session that loses its connection reconnects and
    goes on with the next message (the one whose 250 never came is not
    acknowledged, and is not sent again)."""

    def __init__(self, port, n, seed):
        self.port = port
        self.msgs = []
        self.lock = threading.Lock()
        self.stop_evt = threading.Event()
        self.reconnects = 0
        self.errors = []           # unexpected exceptions (test bugs)
        self.threads = [threading.Thread(target=self.run, args=(i, random.Random(seed * 100 + i)),
                                         daemon=True) for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_evt.set()
        for t in self.threads:
            t.join(15)
            assert not t.is_alive(), "client thread hung"
        assert not self.errors, self.errors[:3]

    def run(self, idx, rng):
        conn, seq = None, 0
        try:
            while not self.stop_evt.is_set():
                if conn is None:
                    try:
                        conn = smtplib.SMTP("127.0.0.1", self.port, timeout=5)
                        conn.ehlo(f"client{idx}.crash.test")
                    except (OSError, smtplib.SMTPException):
                        if conn is not None:
                            conn.close()
                        conn = None
                        time.sleep(0.02)
                        continue
                    with self.lock:
                        self.reconnects += 1
                tid = f"c{idx}-{seq}"
                seq += 1
                rcpts = [f"{tid}.r{k}@{SINK_DOMAIN}" for k in range(rng.randint(1, MAX_RCPTS))]
                m = make_msg(tid, rcpts)
                with self.lock:
                    self.msgs.append(m)
                try:
                    code, resp = conn.mail(SENDER)
                    if code != 250:
                        raise smtplib.SMTPResponseException(code, b"MAIL " + resp)
                    for r in rcpts:
                        code, resp = conn.rcpt(r)
                        if code != 250:
                            raise smtplib.SMTPResponseException(code, b"RCPT " + resp)
                    code, resp = conn.data(m.content)
                    mm = re.search(rb"queued as (\S+)$", resp)
                    if code == 250 and mm:
                        m.qid = mm.group(1).decode()
                        m.acked_at = time.time()
                        m.outcome = "acked"
                        continue
                    raise smtplib.SMTPResponseException(code, b"DATA " + resp)
                except smtplib.SMTPResponseException as e:
                    m.outcome = f"reply {e.smtp_code} {e.smtp_error[:80]!r}"
                except (OSError, smtplib.SMTPException) as e:
                    m.outcome = f"lost: {type(e).__name__}"
                conn.close()
                conn = None
        except Exception as e:
            self.errors.append(repr(e))
        finally:
            if conn is not None:
                try:
                    conn.quit()
                except (OSError, smtplib.SMTPException):
                    conn.close()


# --------------------------------------------------------------------------
# 1. random kills under load


def check_frozen_spool(p, acked, reader, tmp_before):
    """Petrel is dead: everything in queue/ parses, journal lines are
    well formed and in range, and every message acknowledged so far is
    either still in queue/ or already at the sink for all its recipients."""
    problems = []
    q = set(listdir(p.queue_dir))
    rcpts_of = {}
    for n in q:
        try:
            sp = parse_spool_bytes((p.queue_dir / n).read_bytes(), p.queue_dir / n)
            rcpts_of[n] = sp.rcpts
        except AssertionError as e:
            problems.append(f"queue/{n} does not parse after kill -9: {e}")
    for n in listdir(p.spool / "journal"):
        text = (p.spool / "journal" / n).read_text("utf-8", "replace")
        if text and not text.endswith("\n"):
            problems.append(f"journal/{n}: partial line {text[-60:]!r}")
        for ln in text.split("\n")[:-1]:
            m = JOURNAL_RX.match(ln)
            if not m or (n in rcpts_of and int(m.group(2)) >= len(rcpts_of[n])):
                problems.append(f"journal/{n}: bad line {ln!r}")
    reader.refresh()
    have = reader.pairs()
    for m in acked:
        if m.qid not in q and any((m.tid, r) not in have for r in m.rcpts):
            problems.append(f"{m.tid} ({m.qid}) acknowledged, not in queue/ and not "
                            f"delivered to {[r for r in m.rcpts if (m.tid, r) not in have]}")
        elif m.qid in rcpts_of and rcpts_of[m.qid] != m.rcpts:
            problems.append(f"queue/{m.qid}: recipients {rcpts_of[m.qid]} != {m.rcpts}")
    tmp_before.update(listdir(p.tmp_dir))
    return problems


def test_random_kills_lose_nothing(petrel_factory, sink_factory):
    rng = random.Random(SEED)
    print(f"\ncrash test seed {SEED} (set PETREL_CRASH_SEED to change)")
    sink = sink_factory()
    p = make_petrel(petrel_factory, f"127.0.0.1:{sink.port}",
                    pipeline_window=WINDOW, max_connections=MAX_CONN)
    reader = SinkReader(sink)
    sampler = SpoolSampler(p.spool)
    sampler.start()
    clients = Clients(p.port, CLIENTS, SEED)
    t0 = time.monotonic()
    clients.start()

    kills = []        # per kill: dict(time, restart, conn_bound, log_off, acked)
    frozen_problems = []
    tmp_leftover = []
    try:
        for k in range(KILLS):
            time.sleep(rng.uniform(*KILL_GAP))
            p.kill9()
            t_kill = time.time()
            log_off = p.log_path.stat().st_size
            # the sink's connection count after the kill: every connection
            # that carried mail for the dead incarnation is counted
            conn_bound = sink.stats()["connections"]
            with clients.lock:
                acked = [m for m in clients.msgs if m.qid]
            tmp_before = set()
            frozen_problems += [f"kill {k + 1}: {x}" for x in
                                check_frozen_spool(p, acked, reader, tmp_before)]
            t_restart = time.time()
            p.start()
            left = tmp_before & set(listdir(p.tmp_dir))
            if left:
                tmp_leftover.append((k + 1, sorted(left)))
            kills.append({"time": t_kill, "restart": t_restart, "conn_bound": conn_bound,
                          "log_off": log_off, "acked": len(acked),
                          "queue": sum(1 for _ in listdir(p.queue_dir))})
        time.sleep(0.5)
    finally:
        clients.stop()
    t_send = time.monotonic() - t0

    # ---- drain: queue/ and journal/ empty, the sink's count steady
    def drained():
        p.check_alive()
        left = spool_left(p)
        if left["queue"] or left["journal"]:
            return False
        n = len(reader.refresh())
        if drained.last != n:
            drained.last, drained.since = n, time.monotonic()
            return False
        return time.monotonic() - drained.since > 1.0
    drained.last, drained.since = None, None
    wait_until(drained, 60, "Petrel to drain its queue",
               lambda: f"left: {spool_left(p)}\n" + "\n".join(p.log_lines()[-20:]))
    sampler.stop()
    copies = reader.refresh()
    pairs = reader.pairs()
    msgs = clients.msgs
    by_tid = {m.tid: m for m in msgs}
    acked = [m for m in msgs if m.qid]
    by_qid = {m.qid: m for m in acked}
    problems = list(frozen_problems)
    # queue id -> test id also for messages whose 250 was lost at a kill
    # (their recipients carry the test id)
    tid_of_qid = {q: r[0].rsplit(".r", 1)[0] for q, r in sampler.parsed.items() if r}
    tid_of_qid.update({m.qid: m.tid for m in acked})

    # incarnation of each copy, from its sink connection number
    bounds = [kd["conn_bound"] for kd in kills]

    def incarnation(sink_id):
        c = copies[sink_id]["connection"]
        return next((k for k, b in enumerate(bounds) if c <= b), len(bounds))

    starts = [0.0] + [kd["restart"] for kd in kills]   # incarnation start times
    bound = MAX_CONN * WINDOW * MAX_RCPTS

    # ---- no acknowledged message is lost; queue ids are unique
    assert len(by_qid) == len(acked), "two acknowledged messages share a queue id"
    lost = [(m.tid, m.qid, r) for m in acked for r in m.rcpts if (m.tid, r) not in pairs]
    # ---- every copy is a message we sent, intact, to one of its recipients
    for i, env in sorted(copies.items()):
        m = by_tid.get(env["tid"])
        if env["mail_from"] == "" or m is None:
            problems.append(f"sink #{i}: unexpected message (bounce?) from "
                            f"<{env['mail_from']}> to {env['rcpts']}")
            continue
        if split_received(env["content"])[1] != m.content:
            problems.append(f"sink #{i}: {m.tid} content differs from what was sent")
        if env["mail_from"] != SENDER or not set(env["rcpts"]) <= set(m.rcpts):
            problems.append(f"sink #{i}: {m.tid} envelope {env['mail_from']} {env['rcpts']}")
    dups = {pair: ids for pair, ids in pairs.items() if len(ids) > 1}
    # ---- the journal: a recipient seen journaled is never delivered again
    journal_seen = 0
    for (qid, idx), (kind, t_seen) in sampler.jseen.items():
        m = by_qid.get(qid) or by_tid.get(tid_of_qid.get(qid))
        if m is None:
            problems.append(f"{qid}: journal of a message the test cannot place")
            continue
        if kind != "D":
            problems.append(f"{qid}: journal says recipient {idx} failed")
            continue
        journal_seen += 1
        later = [i for i in pairs.get((m.tid, m.rcpts[idx]), [])
                 if starts[incarnation(i)] > t_seen]
        if later:
            problems.append(f"{qid} {m.rcpts[idx]}: journaled (seen {t_seen:.3f}) and "
                            f"delivered again afterwards: sink {later}")
    # ---- the log: "=>" names the right sink copy; nothing after Completed
    lines = log_epochs(p, [kd["log_off"] for kd in kills])
    completed, dlv_count, dlv_first, dlv_by_sid = {}, {}, {}, {}
    for e, ln in lines:
        if " cannot be loaded: " in ln or "journal write failed" in ln:
            problems.append(f"epoch {e}: {ln}")
        mc = COMPLETED_RX.match(ln)
        if mc:
            completed.setdefault(mc.group(1), e)
        if " => " not in ln:
            continue
        md = DLV_RX.match(ln)
        if not md:
            problems.append(f"malformed '=>' line: {ln}")
            continue
        qid, r, sid = md.group(1), md.group(2), int(md.group(3))
        dlv_count[(qid, r)] = dlv_count.get((qid, r), 0) + 1
        dlv_by_sid[(sid, r)] = (e, log_time(ln))
        dlv_first.setdefault((qid, r), (e, log_time(ln)))
        env = copies.get(sid)
        if env is None or r not in env["rcpts"] or \
                (qid in tid_of_qid and env["tid"] != tid_of_qid[qid]):
            problems.append(f"'=>' names sink #{sid}, which is not {qid} to {r}: {ln}")
        elif incarnation(sid) != e:
            problems.append(f"'=>' in epoch {e} names sink #{sid} from incarnation "
                            f"{incarnation(sid)}: {ln}")
        if qid in completed and completed[qid] < e:
            problems.append(f"{qid}: delivered in epoch {e} after Completed in "
                            f"epoch {completed[qid]}: {ln}")
    for qid, e in completed.items():
        m = by_qid.get(qid) or by_tid.get(tid_of_qid.get(qid))
        if m is None:
            continue
        for r in m.rcpts:
            later = [i for i in pairs.get((m.tid, r), []) if incarnation(i) > e]
            if later:
                problems.append(f"{qid} {r}: Completed in epoch {e}, delivered again "
                                f"by a later incarnation: sink {later}")
    unlogged = [m for m in acked if m.qid not in completed]
    missing_done = [m.qid for m in unlogged
                    if not all((m.qid, r) in dlv_first for r in m.rcpts)]
    if missing_done:
        problems.append(f"{len(missing_done)} acknowledged messages never logged "
                        f"Completed nor '=>' for every recipient: {missing_done[:5]}")
    logged_twice = sum(1 for n in dlv_count.values() if n > 1)
    # ---- duplicates: only across a kill, and only what was in flight there.
    # A copy made by incarnation a and made again later was in flight at
    # kill a+1 in one of two ways:
    #  - window: Petrel never logged "=>" for that very copy (the "=>" line
    #    names the sink's message number): the sink's 250 had not reached
    #    it. At most MAX_CONN connections x WINDOW transactions x MAX_RCPTS.
    #  - journal lag: "=>" was logged, the journal line not yet written (the
    #    log line comes first, then the fdatasync'ed append by a worker). Not
    #    bounded by the window (the slot is free once the reply is in), but
    #    bounded in time: the "=>" must be recent at the kill.
    per_kill = [0] * len(kills)
    win_msgs = [set() for _ in kills]
    win_pairs = [0] * len(kills)
    gaps = []
    for (tid, r), ids in sorted(dups.items()):
        inc = [incarnation(i) for i in ids]
        for sid, a, b in zip(ids, inc, inc[1:]):
            if not a < b:
                problems.append(f"{tid} {r}: copies {ids} in incarnations {inc}: "
                                "delivered twice without a kill in between")
                continue
            per_kill[a] += 1
            logged = dlv_by_sid.get((sid, r))
            if logged is None:
                win_msgs[a].add(tid)
                win_pairs[a] += 1
            else:
                gap = kills[a]["time"] - logged[1]
                gaps.append(gap)
                if gap > LAG_MAX:
                    problems.append(f"{tid} {r}: '=>' logged {gap:.3f}s before kill {a + 1} "
                                    f"and delivered again: neither journal line nor "
                                    f"removal made durable")
    for k in range(len(kills)):
        if len(win_msgs[k]) > MAX_CONN * WINDOW or win_pairs[k] > bound:
            problems.append(f"kill {k + 1}: {len(win_msgs[k])} messages ({win_pairs[k]} "
                            f"recipients) redelivered without a '=>': more than "
                            f"{MAX_CONN} x {WINDOW} transactions can be in flight")
    # journal lag seen from outside: "=>" line to the sampler's first sight
    lags = sorted(sampler.jseen[(q, tidx)][1] - t
                  for (q, r), (e, t) in dlv_first.items() if q in by_qid
                  for tidx in [by_qid[q].rcpts.index(r)] if (q, tidx) in sampler.jseen)
    # ---- spool files
    if sampler.bad:
        problems.append(f"unparseable files seen in queue/: {sampler.bad[:5]}")
    if sampler.jbad:
        problems.append(f"malformed journal lines: {sampler.jbad[:5]}")
    if tmp_leftover:
        problems.append(f"tmp/ files left from before a kill after the restart: {tmp_leftover[:3]}")
    left = spool_left(p)
    if any(left.values()):
        problems.append(f"spool not empty after the drain: {left}")

    unacked_delivered = sum(1 for m in msgs if not m.qid and (m.tid, m.rcpts[0]) in pairs)
    outcomes = {}
    for m in msgs:
        if not m.qid:
            k = m.outcome.split(":")[0]
            outcomes[k] = outcomes.get(k, 0) + 1
    n_pairs = sum(len(m.rcpts) for m in acked)
    print(f"crash summary: seed={SEED} sent={len(msgs)} acknowledged={len(acked)} "
          f"({n_pairs} recipients) kills_survived={len(kills)} losses={len(lost)} "
          f"duplicates={len(dups)} (per kill {per_kill}; in the window "
          f"{sum(win_pairs)}, at most {max(win_pairs, default=0)} recipients of "
          f"{max(map(len, win_msgs), default=0)} messages per kill, bound {bound} of "
          f"{MAX_CONN * WINDOW}; "
          f"journal lag {len(gaps)}, '=>' at most {max(gaps, default=0) * 1000:.0f} ms "
          f"before the kill; '=>' logged twice: {logged_twice}) "
          f"journal_lag_ms(p50/p99/max)={pct(lags, .5)}/{pct(lags, .99)}/{pct(lags, 1)} "
          f"sink_copies={len(copies)} completed_unlogged={len(unlogged)} "
          f"unacked_but_delivered={unacked_delivered} not_acked={outcomes} "
          f"journal_lines_watched={journal_seen} queue_files_parsed={len(sampler.parsed)} "
          f"sink_connections={sink.stats()['connections']} reconnects={clients.reconnects} "
          f"send_s={t_send:.1f}")
    print("kills: " + ", ".join(f"{k + 1}:acked={kd['acked']},queued={kd['queue']}"
                                for k, kd in enumerate(kills)))
    assert len(kills) >= 8
    assert len(acked) >= 100, f"too little traffic to prove anything: {len(acked)} acknowledged"
    # every 250 is a reply Petrel gave on purpose: no explicit refusal either
    refused = [m.outcome for m in msgs if m.outcome.startswith("reply")]
    assert not refused, f"Petrel refused messages: {refused[:5]}"
    assert not lost, f"{len(lost)} acknowledged (message, recipient) pairs lost: {lost[:10]}"
    assert sum(win_pairs) <= len(kills) * bound
    assert not problems, "\n".join(problems[:25]) + f"\n({len(problems)} problems)"


# --------------------------------------------------------------------------
# 2. kill -9 right after the 250, destination down


def test_kill_after_250_destination_down(petrel_factory, sink_factory):
    dead = free_port()
    p = make_petrel(petrel_factory, f"127.0.0.1:{dead}")
    m = make_msg("down-0", [f"a@{SINK_DOMAIN}", f"b@{SINK_DOMAIN}"])
    submit(p.port, m)
    p.kill9()
    sp = parse_spool_bytes((p.queue_dir / m.qid).read_bytes(), m.qid)
    assert sp.rcpts == m.rcpts and split_received(sp.content)[1] == m.content
    assert listdir(p.queue_dir) == [m.qid] and listdir(p.tmp_dir) == []
    assert listdir(p.spool / "journal") == [], "journal written for an undelivered message"
    sink = sink_factory(port=dead)
    p.start()
    reader = SinkReader(sink)
    wait_until(lambda: (p.check_alive() or True) and not any(spool_left(p).values())
               and len(reader.refresh()) >= 1, 20, "delivery after the restart",
               lambda: f"left: {spool_left(p)}\n" + "\n".join(p.log_lines()[-20:]))
    time.sleep(1.0)      # a second copy would have to come from nowhere, but look
    copies = reader.refresh()
    assert len(copies) == 1, [(e["id"], e["rcpts"]) for e in copies.values()]
    env = next(iter(copies.values()))
    assert sorted(env["rcpts"]) == sorted(m.rcpts)
    assert split_received(env["content"])[1] == m.content
    dl = [ln for ln in p.log_lines() if f"{m.qid} => " in ln]
    assert len(dl) == 2, dl
    assert len([ln for ln in p.log_lines() if ln.endswith(f"{m.qid} Completed")]) == 1


# --------------------------------------------------------------------------
# 3. kill -9 while a 5 MB message streams to the sink


class ThrottleProxy:
    """TCP relay on loopback (threads) in front of the sink. It forwards the
    client->server direction at `rate` bytes/s (None: unthrottled) and counts
    the bytes, so that the test knows the content is streaming. cut_upstream()
    stops forwarding and resets the connection to the sink, as if the network
    died with the host: nothing Petrel wrote afterwards reaches the sink."""

    def __init__(self, target_port, rate):
        self.target = target_port
        self.rate = rate
        self.c2s = 0            # client->server bytes of the current connection
        self.connections = 0
        self.cut = False
        self.cut_done = threading.Event()
        self.socks = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.closed = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                c.close()
                continue
            for x in (c, s):
                x.settimeout(60)
            self.socks += [c, s]
            self.connections += 1
            self.c2s = 0
            threading.Thread(target=self.pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(s, c, False), daemon=True).start()

    def cut_upstream(self, timeout=5):
        self.cut = True
        assert self.cut_done.wait(timeout), "the relay did not cut"

    def pump(self, src, dst, up):
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if up and self.rate:
                    time.sleep(len(data) / self.rate)
                if up and self.cut:
                    dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
                    dst.close()          # RST: the sink discards the partial content
                    self.cut_done.set()
                    return
                dst.sendall(data)
                if up:
                    self.c2s += len(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        for x in [self.ls] + self.socks:
            try:
                x.close()
            except OSError:
                pass


@pytest.mark.parametrize("mode", ["cut", "drain"])
def test_kill_while_streaming_large_message(petrel_factory, sink_factory, mode):
    """kill -9 while a 5 MB message streams to the sink (through a relay
    throttled to 1 MB/s, killed after 1.5 MB went through).
    cut: the relay drops the upstream connection at the kill (host and
    network gone together): the sink never has the whole content, so the
    message is delivered exactly once, after the restart.
    drain: the relay goes on forwarding what the kernel still holds for the
    dead process (a kill -9 does not discard a socket's send buffer, and
    loopback buffers hold megabytes): the first copy may then complete at the
    sink after the kill; that is the one duplicate the design allows, so
    1 or 2 copies, never 0."""
    sink = sink_factory()
    proxy = ThrottleProxy(sink.port, rate=1_000_000)
    try:
        p = make_petrel(petrel_factory, f"127.0.0.1:{proxy.port}")
        m = make_msg(f"big-{mode}", [f"big@{SINK_DOMAIN}", f"big2@{SINK_DOMAIN}"],
                     size=5_000_000)
        assert len(m.content) >= 5_000_000
        submit(p.port, m)
        wait_until(lambda: (p.check_alive() or True) and proxy.c2s > 1_500_000, 30,
                   "the content to be streaming to the sink",
                   lambda: f"proxy: {proxy.connections} conns, {proxy.c2s} bytes\n"
                   + "\n".join(p.log_lines()[-20:]))
        if mode == "cut":
            proxy.cut_upstream()
        streamed = proxy.c2s
        p.kill9()
        log_off = p.log_path.stat().st_size
        assert not [ln for ln in p.log_lines() if f"{m.qid} => " in ln], \
            "a recipient logged delivered while its content was still streaming"
        sp = parse_spool_bytes((p.queue_dir / m.qid).read_bytes(), m.qid)
        assert split_received(sp.content)[1] == m.content and sp.rcpts == m.rcpts
        assert listdir(p.tmp_dir) == [] and listdir(p.spool / "journal") == []
        reader = SinkReader(sink)
        if mode == "cut":
            time.sleep(0.3)
            assert reader.refresh() == {}, "the sink stored a message cut at the kill"
        proxy.rate, proxy.cut = None, False
        p.start()
        wait_until(lambda: (p.check_alive() or True) and not any(spool_left(p).values())
                   and len(reader.refresh()) >= 1, 30, "delivery after the restart",
                   lambda: f"left: {spool_left(p)}\n" + "\n".join(p.log_lines()[-20:]))
        time.sleep(0.5)
        copies = reader.refresh()
        want = (1,) if mode == "cut" else (1, 2)
        assert len(copies) in want, [(e["id"], e["connection"], e["rcpts"])
                                     for e in copies.values()]
        for env in copies.values():
            assert sorted(env["rcpts"]) == sorted(m.rcpts)
            assert split_received(env["content"])[1] == m.content, "content differs"
        # the copy made after the restart rides a connection of its own
        assert max(e["connection"] for e in copies.values()) >= 2
        # "=>" only after the restart, one per recipient
        after = p.log_path.read_bytes()[log_off:].decode("utf-8", "replace")
        assert len(re.findall(rf"{re.escape(m.qid)} => ", after)) == 2, after[-2000:]
        assert len([ln for ln in p.log_lines() if f"{m.qid} => " in ln]) == 2
        print(f"\nlarge message ({mode}): {len(m.content)} bytes, killed after "
              f"{streamed} bytes relayed, {len(copies)} copies at the sink "
              f"(connections {sorted(e['connection'] for e in copies.values())})")
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# 4. kill -9 during the start-up scan of a spool full of finished messages


def stopped(pid, tid):
    """Whether thread tid of pid is in the stopped state."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:
        return True


def clone_spool_file(data, new_id):
    """A copy of a spool file (QUEUE.md format) under another queue id."""
    sp = parse_spool_bytes(data)
    env = re.sub(rb"(?m)^id .*$", b"id " + new_id.encode(), sp.env_raw, count=1)
    return sp.content + env + f"PETREL-SPOOL 1 {len(sp.content)} {len(env)}\n".encode()


class JournalLost(AssertionError):
    """The failure test_kill_during_startup_scan_keeps_journal looks for."""


# Regression test: queue_load() used to unlink the journal of a message it had
# just finalized, before the worker removed the message file (fixed).
def test_kill_during_startup_scan_keeps_journal(petrel_factory, sink_factory):
    """A crash after "Completed" but before the spool files are removed
    leaves queue/<id> and journal/<id> with every recipient done (the random
    test produces dozens of these). The next start must finish them without
    delivering anything, even if it is killed itself in the middle of that.
    Here: N such messages (clones of a file Petrel wrote, each with a journal
    line "D 0"); start; once the start-up scan logs its first "removing stale
    journal", sample the spool with Petrel frozen (SIGSTOP, SIGCONT): killing
    a frozen process is a kill -9 at that very moment, so the kill goes where
    a message file has lost its journal, if that ever happens (in a correct
    Petrel it never does: the message file is always removed first). Then:
    no message file may be without its journal, and the next start delivers
    nothing. The window is a race (milliseconds), so up to ATTEMPTS runs."""
    n, attempts = 4000, 4
    sink = sink_factory()
    reader = SinkReader(sink)
    tpl = petrel_factory(top=dict(TOP, queue_only="yes"),
                         extra=dest_section(f"127.0.0.1:{sink.port}"))
    m = make_msg("scan-0", [f"done@{SINK_DOMAIN}"])
    submit(tpl.port, m)
    tpl.stop()
    template = (tpl.queue_dir / m.qid).read_bytes()
    report = []
    for attempt in range(attempts):
        p = petrel_factory(top=dict(TOP), extra=dest_section(f"127.0.0.1:{sink.port}"),
                           start=False)
        jdir = p.spool / "journal"
        for d in (p.queue_dir, jdir):
            d.mkdir(parents=True, exist_ok=True)
        now = int(time.time() * 1000)
        for i in range(n):
            qid = f"{m.qid[:7]}a{attempt}s{i:06d}"
            (p.queue_dir / qid).write_bytes(clone_spool_file(template, qid))
            (jdir / qid).write_text(f"D 0 {now}\n")
        p.start(wait=False)
        pid = p.proc.pid
        deadline = time.monotonic() + 20
        while not p.log_path.exists():
            assert time.monotonic() < deadline, "no log"
        with open(p.log_path, "rb") as lf:
            seen = b""
            while b"removing stale journal" not in seen and b"queue loaded" not in seen:
                assert time.monotonic() < deadline and p.proc.poll() is None, \
                    "the start-up scan never ended\n" + p.diag()
                seen = seen[-100:] + lf.read()
        samples = 0
        while p.proc.poll() is None:
            os.kill(pid, signal.SIGSTOP)
            t_stop = time.monotonic()
            while not all(stopped(pid, t) for t in listdir(f"/proc/{pid}/task")):
                assert time.monotonic() - t_stop < 5, "SIGSTOP did not stop petrel"
            samples += 1
            q, j = set(listdir(p.queue_dir)), set(listdir(jdir))
            if q - j or not q or time.monotonic() > deadline:
                break
            os.kill(pid, signal.SIGCONT)
        p.kill9()
        q, j = set(listdir(p.queue_dir)), set(listdir(jdir))
        orphans = sorted(q - j)
        report.append(f"attempt {attempt + 1}: {samples} samples, killed with {len(q)} of "
                      f"{n} finished messages in queue/, {len(orphans)} without a journal")
        p.start()
        wait_until(lambda: (p.check_alive() or True) and not any(spool_left(p).values()),
                   30, "the finished messages to be removed",
                   lambda: f"left: {[len(v) for v in spool_left(p).values()]}")
        time.sleep(0.5)
        again = reader.refresh()
        print("\n" + report[-1])
        if orphans or again:
            raise JournalLost(
                f"{len(orphans)} message files lost their journal at the kill "
                f"(e.g. {orphans[:3]}); {len(again)} recipients delivered again "
                "although their journal said delivered")
        p.stop()
