#!/usr/bin/python3
"""Inbound: Postfix's smtp-source into Petrel, Postfix and Exim (issue 5).

    bench/inbound_bench.py [--messages 2000] [--size 1024] [--sessions 1,20,100]
                           [--mta petrel,postfix,exim] [--no-sync-check]
                           [--json FILE] [--timeout 300]

Each MTA queues durably (fsync before the 250 reply) and delivers nothing:
Petrel with `queue_only = yes`, Postfix with every message put on hold
(smtpd: `check_client_access static:HOLD`, cleanup fsyncs the queue file:
Postfix's default), Exim with `queue_only = true` (its default fsync of the
spool files). For each MTA and session count, a fresh instance (empty
queue) receives N messages from `smtp-source -s SESSIONS -m N -l SIZE`
(one message per connection, smtp-source's default); timed from the start
of smtp-source until it has exited and all N messages are in the queue.

CPU seconds and peak memory: the accounting of bench/peers_bench.py
(/proc, the MTA's session, sampled every 50 ms here). Before the timed runs,
one message per MTA is received under `strace -f -y` (--no-sync-check:
skipped) and the file syncs between the "354" reply and the "250" reply are
recorded: the sync-before-250 actually seen. Used by bench/compare.py
(`make bench`); run alone it prints one JSON line per run and a table.
A benchmark: it asserts nothing.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers_bench  # noqa: E402
from peers_bench import Accounting, DOMAIN  # noqa: E402
from report import md_table, plot_lines, ratio  # noqa: E402

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SAMPLE_S = 0.05     # accounting sample interval (a /proc scan costs CPU too)
UNUSED_ROUTE = 9    # no MTA delivers anything; the route is never used


# --------------------------------------------------------------------------
# The three MTAs, set up by peers_bench (its private instances), with
# delivery off for good and a count of what is in the queue.

class PetrelInbound(peers_bench.PetrelBench):
    """queue_only = yes: every message is fdatasync'ed (and its directory
    entry fsync'ed) before the 250; nothing is delivered."""

    def __init__(self):
        super().__init__(UNUSED_ROUTE)

    def queued(self):
        d = os.path.join(self.dir, "spool", "queue")
        try:
            return sum(1 for e in os.scandir(d) if not e.name.startswith("."))
        except OSError:
            return 0


POSTFIX_INBOUND = {
    # every message goes to the hold queue: written and fsync'ed by cleanup
    # like any other, then left alone (no qmgr scheduling, no defer logs)
    "smtpd_data_restrictions": "reject_unauth_pipelining, check_client_access static:HOLD",
}


class PostfixInbound(peers_bench.PostfixBench):
    def __init__(self):
        super().__init__(UNUSED_ROUTE, main_extra=POSTFIX_INBOUND)

    def queued(self):
        return sum(self._count(q) for q in ("hold", "incoming", "active", "deferred"))


class EximInbound(peers_bench.EximBench):
    """queue_only = true (in EXIM_BENCH_CONF); more simultaneous SMTP
    connections than the 100 smtp-source sessions, and a listen backlog
    as large as Petrel's and Postfix's (Exim's default is 20)."""

    def __init__(self):
        super().__init__(UNUSED_ROUTE, accept_max=300, backlog=128)

    def queued(self):
        return self._queued()

    def session_ids(self):
        return [self.peer.proc.pid] if self.peer.proc else []


MTAS = {"petrel": PetrelInbound, "postfix": PostfixInbound, "exim": EximInbound}


def session_members(sids):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                state, sid, _, _ = peers_bench._stat(d)
            except (OSError, ValueError, IndexError):
                continue
            if sid in sids and state != "Z":
                out.append(int(d))
    return out


def smtp_source(port, n, sessions, size, reuse=False):
    """reuse: -d, every message of a session down one connection (default:
    a new connection per message, QUIT after each)."""
    return [SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-l", str(size),
            *(["-d"] if reuse else []),
            "-f", f"src@source.{DOMAIN}", "-t", f"rcpt@{DOMAIN}", "-M", "source.test",
            f"127.0.0.1:{port}"]


def parse_sessions(spec):
    """"1,20x5,100,20d" -> [(1, False, None), (20, False, 5), (100, False, None),
    (20, True, None)]: a trailing d means one connection per session
    (smtp-source -d); xR, R repetitions of that row instead of --repeat."""
    out = []
    for s in spec.split(","):
        s = s.strip()
        if not s:
            continue
        s, _, reps = s.partition("x")
        out.append((int(s.rstrip("d")), s.endswith("d"), int(reps) if reps else None))
    return out


# --------------------------------------------------------------------------
def run_one(mta, n, sessions, size, reuse=False, timeout=300, perf=None):
    """perf: a file name; the MTA's processes run under `perf record -g`
    (writing that file) while smtp-source runs."""
    m = MTAS[mta]()
    out = tempfile.TemporaryFile()
    rec = None
    try:
        m.setup()
        sids = m.session_ids()
        if perf:
            pids = ",".join(str(p) for p in session_members(sids))
            argv = ["perf", "record", "-g", "-F", "2000", "-o", perf, "-p", pids]
            rec = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(1.0)     # attached
        acct = Accounting()
        acct.begin(sids)
        load1 = os.getloadavg()[0]
        t0 = time.monotonic()
        src = subprocess.Popen(smtp_source(m.port, n, sessions, size, reuse),
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        next_sample = 0
        queued = 0
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_sample:
                    acct.sample(sids)
                    next_sample = now + SAMPLE_S
                if src.poll() is None:
                    try:          # returns as soon as smtp-source exits
                        src.wait(max(0.001, next_sample - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
                    continue
                queued = m.queued()
                if queued >= n:
                    break
                time.sleep(0.002)
        finally:
            if src.poll() is None:       # timed out: stop our smtp-source
                src.kill()
            src.wait(10)
        t1 = time.monotonic()
        if rec is not None:
            rec.send_signal(signal.SIGINT)
            rec.wait(60)
        # CPU: one more sample once the workers of the last sessions have
        # exited and been reaped (their time moves to the parent's cutime)
        time.sleep(0.3)
        acct.sample(sids)
        out.seek(0)
        src_out = out.read().decode(errors="replace").strip()
        version = m.version()
    finally:
        out.close()
        if rec is not None and rec.poll() is None:
            os.killpg(rec.pid, signal.SIGKILL)
            rec.wait(10)
        m.stop()
    wall = t1 - t0
    return {
        "mta": mta, "version": version, "sessions": sessions,
        "connections": "per session (-d)" if reuse else "per message",
        "sent": n, "messages": queued, "size": size,
        "wall_s": round(wall, 3),
        "msgs_per_s": round(queued / wall, 1) if wall > 0 else None,
        "cpu_s": round(acct.cpu_s(), 3),
        "cpu_ms_per_msg": round(1000 * acct.cpu_s() / queued, 3) if queued else None,
        "peak_rss_kib": acct.peak_hwm_kib,
        "peak_total_rss_kib": acct.peak_total_rss_kib,
        "processes_seen": len(acct.seen),
        "smtp_source_exit": src.returncode,
        "smtp_source_output": src_out[-300:],
        "complete": queued >= n and src.returncode == 0,
        "load1": round(load1, 1),
    }


# --------------------------------------------------------------------------
# Sync before 250, seen with strace

SYSCALLS = "fsync,fdatasync,sync_file_range,syncfs,rename,renameat,renameat2,write,writev,sendto,sendmsg"
_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")


def _short(args, top):
    """fd and path arguments with the instance directory and AT_FDCWD cut
    off, queue ids replaced by ID (Petrel and Exim: xxxxxx-xxxxxx-xx,
    Postfix: hex)."""
    a = re.sub(r"AT_FDCWD<[^>]*>, ", "", args).replace(top + "/", "").replace(top, ".")
    a = re.sub(r"/+", "/", a).replace(" >", ">")
    a = re.sub(r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\b", "ID", a)
    return re.sub(r"\b[0-9A-F]{10,}\b", "ID", a)


def parse_strace(text, top):
    """Events in order of completion: ("sync"|"rename"|"reply", name, args).
    A reply is a write of an SMTP reply line (3 digits and a space or -)."""
    pending = {}
    events = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid, rest = m.group(1), m.group(3)
        r = _RESUMED.match(rest)
        if r:
            name, args = r.group(1), pending.pop((pid, r.group(1)), "") + r.group(2)
        else:
            c = _CALL.match(rest)
            if not c:
                continue
            name, args = c.group(1), c.group(2)
            if "<unfinished ...>" in args:
                pending[(pid, name)] = args.replace("<unfinished ...>", "")
                continue
        if name in ("fsync", "fdatasync", "sync_file_range", "syncfs"):
            events.append(("sync", name, _short(args.split(")")[0], top)))
        elif name.startswith("rename"):
            events.append(("rename", name, _short(args.rsplit(")", 1)[0], top).strip()))
        else:
            s = re.search(r'"((?:\\.|[^"\\])*)"', args)
            if s and re.match(r"\d\d\d[ -]", s.group(1)):
                events.append(("reply", name, _short(s.group(1).replace("\\r\\n", " ").strip()[:60], top)))
    return events


def sync_before_250(events):
    """The syncs and renames between the last 354 reply and the 250 after it."""
    start = None
    for i, e in enumerate(events):
        if e[0] == "reply" and e[2].startswith("354"):
            start = i
    if start is None:
        return None, []
    for j in range(start + 1, len(events)):
        if events[j][0] == "reply":
            return events[j][2], events[start + 1:j]
    return None, events[start + 1:]


def sync_check(mta, size=1024, timeout=30):
    """One message into a fresh instance under strace; returns a dict."""
    if not shutil.which("strace"):
        return {"mta": mta, "error": "strace not installed"}
    m = MTAS[mta]()
    log = tempfile.NamedTemporaryFile(prefix="petrel-strace-", suffix=".txt", delete=False)
    log.close()
    st = None
    try:
        m.setup()
        top = str(getattr(m, "dir", None) or getattr(getattr(m, "pf", None), "dir", None)
                  or m.peer.dir)
        pids = session_members(m.session_ids())
        argv = ["strace", "-f", "-tt", "-y", "-qq", "-s", "80", "-o", log.name,
                "-e", "trace=" + SYSCALLS]
        for p in pids:
            argv += ["-p", str(p)]
        st = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1.0)                 # attached
        subprocess.run(smtp_source(m.port, 1, 1, size), capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while m.queued() < 1 and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        if st is not None:
            st.send_signal(signal.SIGINT)      # detach
            try:
                st.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(st.pid, signal.SIGKILL)
                st.wait(5)
        m.stop()
    with open(log.name, errors="replace") as f:
        text = f.read()
    os.unlink(log.name)
    reply, between = sync_before_250(parse_strace(text, top))
    syncs = [e for e in between if e[0] == "sync"]
    return {"mta": mta, "reply": reply,
            "sequence": [f"{name}({args})" for _, name, args in between],
            "syncs_before_250": len(syncs),
            "verified": bool(reply and reply.startswith("250") and syncs)}


# --------------------------------------------------------------------------
COLS = [("mta", "MTA"), ("sessions", "sessions"), ("connections", "connections"),
        ("messages", "queued"), ("wall_s", "wall s"), ("msgs_per_s", "msg/s"),
        ("msgs_per_s_range", "msg/s range"), ("runs", "runs"), ("cpu_s", "CPU s"),
        ("cpu_ms_per_msg", "CPU ms/msg"), ("peak_rss_kib", "peak RSS KiB (largest proc)"),
        ("peak_total_rss_kib", "peak Pss KiB (all procs)")]


def markdown(results, checks):
    """The inbound sections of results.md (a list of lines)."""
    out = md_table(COLS, results)
    out += ["", "### Ratios Petrel / peer (inbound)", "",
            "Same session count. msg/s: above 1 means Petrel accepts faster; CPU s, CPU ms/msg, "
            "memory: below 1 means Petrel uses less.", "",
            "| peer | sessions | connections | msg/s | CPU s | CPU ms/msg | peak RSS (largest) "
            "| peak Pss (all) |", "|" + "---|" * 8]
    by = {(r["mta"], r["sessions"], r["connections"]): r for r in results}
    for r in results:
        p = by.get(("petrel", r["sessions"], r["connections"]))
        if r["mta"] == "petrel" or not p:
            continue
        out.append("| " + " | ".join([
            r["mta"], str(r["sessions"]), r["connections"],
            ratio(p["msgs_per_s"], r["msgs_per_s"]),
            ratio(p["cpu_s"], r["cpu_s"]), ratio(p["cpu_ms_per_msg"], r["cpu_ms_per_msg"]),
            ratio(p["peak_rss_kib"], r["peak_rss_kib"]),
            ratio(p["peak_total_rss_kib"], r["peak_total_rss_kib"])]) + " |")
    bad = [r for r in results if not r.get("complete")]
    if bad:
        out += ["", "**Incomplete inbound runs**: " + "; ".join(
            f"{r['mta']} {r['sessions']} sessions ({r['connections']}): "
            f"{r['messages']} of {r['sent']} queued, "
            f"smtp-source exit {r['smtp_source_exit']} ({r['smtp_source_output'][-120:]!r})"
            for r in bad)]
    if checks:
        out += ["", "### Sync before 250 (seen in this run)", "",
                "One message per MTA received under `strace -f -y -e trace=" + SYSCALLS +
                "`; the file syncs and renames between the 354 reply to DATA and the "
                "reply to the end of data, in order of completion (paths relative to the "
                "instance's directory, queue ids as ID):", ""]
        for c in checks:
            if c.get("error"):
                out.append(f"- {c['mta']}: not checked ({c['error']})")
                continue
            seq = " → ".join(f"`{re.sub(r' +[)]$', ')', s)}`" for s in c["sequence"]) or "(none)"
            out.append(f"- {c['mta']}: {seq} → reply `{c['reply']}`"
                       + ("" if c["verified"] else " — **no sync seen before the 250**"))
    return out


def plot(outdir, results):
    """Inbound msg/s against sessions, one line per MTA (connection per
    message rows)."""
    if not results:
        return None
    series = [(mta, "lw 2", [(r["sessions"], r["msgs_per_s"]) for r in results
                             if r["mta"] == mta and r["msgs_per_s"]
                             and r["connections"] == "per message"]) for mta in MTAS]
    return plot_lines(
        os.path.join(outdir, "inbound_msgs_per_s_vs_sessions.png"),
        f"Inbound: smtp-source, {results[0]['size']} B payload, one message per connection, "
        "fsync before 250", "parallel SMTP sessions", "messages accepted per second", series,
        "set logscale x\nset xtics (1, 2, 5, 10, 20, 50, 100)\nset yrange [0:*]\n"
        "set key top left")


def summarize(runs, mtas):
    """One row per MTA, session count and connection mode: the run with the
    median msg/s (all its figures from that one run), with the range of
    msg/s over the repetitions."""
    groups = {}
    for r in runs:
        groups.setdefault((r["mta"], r["sessions"], r["connections"]), []).append(r)
    out = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["msgs_per_s"] or 0)
        row = dict(rs[(len(rs) - 1) // 2])
        row["runs"] = len(rs)
        row["msgs_per_s_min"], row["msgs_per_s_max"] = rs[0]["msgs_per_s"], rs[-1]["msgs_per_s"]
        row["msgs_per_s_range"] = (f"{rs[0]['msgs_per_s']:g}–{rs[-1]['msgs_per_s']:g}"
                                   if len(rs) > 1 else "–")
        row["complete"] = all(r["complete"] for r in rs)
        out.append(row)
    order = {m: i for i, m in enumerate(mtas)}
    return sorted(out, key=lambda r: (order.get(r["mta"], 99), r["connections"] != "per message",
                                      r["sessions"]))


def run_all(mtas, n, sessions, size, timeout, sync=True, errors=None, n_single=None,
            repeat=3, long_s=10):
    """Every MTA and session count (parse_sessions), `repeat` times, the
    MTAs interleaved (rotated each repetition) so that a burst of load on
    the shared machine does not land on one MTA's runs only; an MTA whose
    run took more than long_s seconds is not repeated at that session
    count (Exim with few sessions: its time is set by a fixed pause, see
    results.md). n_single: N for the 1-session runs (default n). Returns
    (summary rows, every run, sync checks). Failures go to `errors` (one
    MTA failing must not hide the others)."""
    runs, checks = [], []
    errors = [] if errors is None else errors
    if sync:
        for mta in mtas:
            try:
                c = sync_check(mta)
            except Exception as e:
                c = {"mta": mta, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            checks.append(c)
            print(json.dumps(c), flush=True)
    for s, reuse, reps in sessions:
        done = set()
        for rep in range(reps or repeat):
            k = rep % len(mtas)
            for mta in mtas[k:] + mtas[:k]:
                if mta in done:
                    continue
                try:
                    r = run_one(mta, n_single if s == 1 and n_single else n, s, size, reuse,
                                timeout)
                except Exception as e:
                    msg = (f"inbound {mta} {s} sessions{' -d' if reuse else ''}: "
                           f"{type(e).__name__}: {str(e)[:2000]}")
                    print(msg, file=sys.stderr, flush=True)
                    errors.append(msg.splitlines()[0])
                    done.add(mta)
                    continue
                r["repetition"] = rep
                runs.append(r)
                print(json.dumps(r), flush=True)
                if r["wall_s"] > long_s:
                    done.add(mta)
    return summarize(runs, mtas), runs, checks


PERF_SYMBOLS = ("__x64_sys_openat", "__ext4_new_inode", "recently_deleted",
                "__x64_sys_fdatasync", "__x64_sys_fsync", "__x64_sys_renameat2",
                "__x64_sys_rename", "lock_two_directories", "rwsem_spin_on_owner",
                "vfs_write", "vfs_read", "__x64_sys_epoll_wait", "tcp_sendmsg",
                "__x64_sys_accept4", "__x64_sys_close")


def perf_summary(path):
    """Shares of the MTA's CPU samples: by binary, and under the system
    calls and kernel functions that mattered for receiving (children
    included)."""
    def report(*args):
        r = subprocess.run(["perf", "report", "-i", path, "--stdio", "-g", "none", *args],
                           capture_output=True, text=True, timeout=300)
        return [ln for ln in r.stdout.splitlines() if "%" in ln and not ln.startswith("#")]
    lines = ["by binary:"] + [ln.rstrip() for ln in report("--no-children", "--sort", "dso")[:6]]
    lines.append("under (children):")
    for ln in report("--children", "--sort", "sym"):
        if any(ln.rstrip().endswith(sym) for sym in PERF_SYMBOLS):
            lines.append(ln.rstrip())
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024, help="smtp-source -l (payload bytes)")
    ap.add_argument("--messages-single", type=int, default=100,
                    help="N for the 1-session runs (Exim: ~0.2 s per connection)")
    ap.add_argument("--sessions", default="1,20x5,100,20dx1",
                    help="parallel sessions; a trailing d: one connection per session; "
                         "xR: R repetitions of that row")
    ap.add_argument("--mta", default="petrel,postfix,exim")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-sync-check", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--perf", metavar="DIR",
                    help="profile instead: one run per MTA and session count under "
                         "perf record -g, data in DIR, a summary printed")
    a = ap.parse_args()
    errors = []
    if a.perf:
        os.makedirs(a.perf, exist_ok=True)
        for mta in a.mta.split(","):
            for s, reuse, _ in parse_sessions(a.sessions):
                data = os.path.join(a.perf, f"{mta}-{s}{'d' if reuse else ''}.perf.data")
                r = run_one(mta, a.messages_single if s == 1 else a.messages, s, a.size,
                            reuse, a.timeout, perf=data)
                print(f"== {mta}, {s} sessions ({r['connections']}): {r['msgs_per_s']} msg/s "
                      f"under perf, CPU {r['cpu_ms_per_msg']} ms/msg; {data}")
                print("\n".join(perf_summary(data)), flush=True)
        return 0
    results, runs, checks = run_all(a.mta.split(","), a.messages, parse_sessions(a.sessions),
                                    a.size, a.timeout, not a.no_sync_check, errors,
                                    a.messages_single, a.repeat)
    print("\n".join(markdown(results, checks)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"inbound": results, "inbound_runs": runs, "sync_checks": checks,
                       "errors": errors}, f, indent=1)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
