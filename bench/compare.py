#!/usr/bin/python3
"""Outbound delivery: Petrel side by side with Postfix and Exim (issue 5).

    bench/compare.py [--messages 500] [--size 1024] [--rtt 0,10,50]
                     [--mta petrel,postfix,exim] [--data-rtt 10]
                     [--out docs/bench] [--json FILE] [--timeout 600]

For each MTA and each RTT: tests/tools/smtp_sink.py (STARTTLS, CHUNKING,
PIPELINING) behind tests/tools/delay_proxy.py (RTT/2 each way); N messages
queued in the MTA while delivery is held; delivery released; timed until
the sink has N messages. With --data-rtt MS one more run per MTA goes to a
sink without CHUNKING (PIPELINING + DATA only). Settings of each MTA:
docs/bench/SETTINGS.md. Writes OUT/results.md, OUT/results.json and, if
gnuplot is installed, OUT/msgs_per_s_vs_rtt.png.

CPU seconds and peak memory are taken from /proc for the MTA's own
processes during the delivery phase only (see peers_bench.py, "Accounting").
A benchmark: it asserts nothing.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from smtp_sink import SinkProcess  # noqa: E402
import peers_bench  # noqa: E402


MTAS = {"petrel": peers_bench.PetrelBench,
        "postfix": peers_bench.PostfixBench,
        "exim": peers_bench.EximBench}


def run_one(mta, n, size, rtt_ms, mode, timeout):
    opts = {"maildir": False, "stats_interval": 20}
    if mode == "data":
        opts["no_chunking"] = True
    if os.environ.get("PETREL_BENCH_SINK_DIR"):   # debugging: verbose sink log kept there
        opts["verbose"] = True
        opts["workdir"] = tempfile.mkdtemp(dir=os.environ["PETREL_BENCH_SINK_DIR"])
    with SinkProcess(**opts) as sink, \
            peers_bench.FixedDelayProxy(peers_bench.free_port(), sink.port, rtt_ms / 2) as proxy:
        m = MTAS[mta](proxy.port)
        try:
            m.setup()
            peers_bench.inject(m.port, n, size)
            m.wait_queued(n)
            acct = peers_bench.Accounting()
            t0 = time.monotonic()
            m.release(acct)
            deadline = t0 + timeout
            st = {}
            stalled_since = None
            while time.monotonic() < deadline:
                acct.sample(m.session_ids())
                st = sink.stats() or {}
                if st.get("messages", 0) >= n:
                    break
                # the MTA has nothing more in hand (e.g. Postfix: the rest
                # deferred until a retry an hour away): stop after 3 s
                if m.stalled():
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > 3:
                        break
                else:
                    stalled_since = None
                time.sleep(0.01)
            t1 = time.monotonic()
            acct.sample(m.session_ids())
            m.finish(acct)     # Exim: the queue runner's own rusage
            notes = m.notes()
        finally:
            m.stop()
        time.sleep(0.1)
        try:
            st = sink.stats() or st
        except (OSError, ValueError):
            pass
    msgs = st.get("messages", 0)
    conns = st.get("connections", 0) or 1
    wall = t1 - t0
    return {
        "mta": mta, "version": m.version(),
        "server": "CHUNKING+PIPELINING" if mode == "chunking" else "PIPELINING (DATA)",
        "messages": msgs, "size": size, "rtt_ms": rtt_ms,
        "wall_s": round(wall, 3),
        "msgs_per_s": round(msgs / wall, 1) if wall > 0 else None,
        "connections": st.get("connections"),
        "tls_handshakes": st.get("tls_handshakes"),
        "tls_resumed": st.get("tls_resumed"),
        "turns_per_message": st.get("turns_per_message"),
        "warm_turns_per_message": st.get("warm_turns_per_message"),
        "msgs_per_connection": round(msgs / conns, 1),
        "max_msgs_per_connection": st.get("max_messages_per_connection"),
        "cpu_s": round(acct.cpu_s(), 3),
        "peak_rss_kib": acct.peak_hwm_kib,
        "peak_total_rss_kib": acct.peak_total_rss_kib,
        "processes_seen": len(acct.seen),
        "complete": msgs >= n,
        "notes": notes,
    }


def fmt(v):
    return "–" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def ratio(a, b, better_low=False):
    if a in (None, 0) or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"


def write_markdown(path, results, args):
    cols = [("mta", "MTA"), ("server", "server"), ("rtt_ms", "RTT ms"),
            ("messages", "msgs"), ("wall_s", "wall s"), ("msgs_per_s", "msg/s"),
            ("connections", "conns"), ("tls_handshakes", "TLS hs"),
            ("tls_resumed", "resumed"), ("turns_per_message", "RT/msg"),
            ("warm_turns_per_message", "warm RT/msg"),
            ("msgs_per_connection", "msgs/conn"), ("cpu_s", "CPU s"),
            ("peak_rss_kib", "peak RSS KiB (largest proc)"),
            ("peak_total_rss_kib", "peak Pss KiB (all procs)")]
    out = ["# Outbound delivery: Petrel, Postfix, Exim", "",
           f"Generated by `bench/compare.py --messages {args.messages} --size {args.size} "
           f"--rtt {args.rtt} --mta {args.mta} --data-rtt {args.data_rtt}` on "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, host `{os.uname().nodename}`, "
           f"{os.cpu_count()} CPUs, loopback only.", "",
           "N messages of the given size to one destination, queued while delivery was held, "
           "then released; timed until the receiving sink (tests/tools/smtp_sink.py, STARTTLS) "
           "had all N. The sink sits behind tests/tools/delay_proxy.py adding RTT/2 each way. "
           "Settings of each MTA: [SETTINGS.md](SETTINGS.md). RT/msg = the sink's turns per "
           "message (a turn: the server replied, then had to wait for the client); warm RT/msg "
           "excludes connection setup. CPU s: user+system seconds of the MTA's processes during "
           "the delivery phase; peak RSS: see SETTINGS.md, \"Accounting\".", "",
           "## Figures", "",
           "| " + " | ".join(h for _, h in cols) + " |",
           "|" + "---|" * len(cols)]
    for r in results:
        out.append("| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |")
    out += ["", "## Ratios Petrel / peer", "",
            "Same server and RTT. msg/s: above 1 means Petrel is faster. wall s, conns, TLS hs, "
            "RT/msg, CPU s, RSS: below 1 means Petrel uses less.", "",
            "| peer | server | RTT ms | wall s | msg/s | conns | TLS hs | RT/msg | CPU s | "
            "peak RSS (largest) | peak Pss (all) |", "|" + "---|" * 11]
    by = {(r["mta"], r["server"], r["rtt_ms"]): r for r in results}
    for r in results:
        if r["mta"] == "petrel":
            continue
        p = by.get(("petrel", r["server"], r["rtt_ms"]))
        if not p:
            continue
        out.append("| " + " | ".join([
            r["mta"], r["server"], fmt(r["rtt_ms"]),
            ratio(p["wall_s"], r["wall_s"]), ratio(p["msgs_per_s"], r["msgs_per_s"]),
            ratio(p["connections"], r["connections"]),
            ratio(p["tls_handshakes"], r["tls_handshakes"]),
            ratio(p["turns_per_message"], r["turns_per_message"]),
            ratio(p["cpu_s"], r["cpu_s"]),
            ratio(p["peak_rss_kib"], r["peak_rss_kib"]),
            ratio(p["peak_total_rss_kib"], r["peak_total_rss_kib"])]) + " |")
    incomplete = [r for r in results if not r.get("complete")]
    if incomplete:
        out += ["", "**Incomplete runs** (sink had fewer than N messages at the time limit): "
                + ", ".join(f"{r['mta']} {r['server']} {r['rtt_ms']} ms" for r in incomplete)]
    errors = getattr(args, "errors", [])
    if errors:
        out += ["", "## Runs that failed", ""] + [f"- {e}" for e in errors]
    out += ["", "## Reading these figures", "",
            "- One run per row, not averaged; 2 CPUs shared by the MTA, the sink, the proxy and "
            "the sampler. The sink writes its stats at most every 20 ms and is polled every "
            "10 ms: wall times below ~0.3 s carry up to ~30 ms of error (Petrel at RTT 0).",
            "- Postfix 3.7's SMTP client has no CHUNKING (BDAT): it sends DATA to both servers, "
            "so its two server rows differ by noise only. It delivers over up to 20 parallel "
            "connections (default concurrency) and reuses cached TLS connections through "
            "tlsproxy, with an RSET before each reused transaction (about 3 round trips per "
            "message).",
            "- Exim delivers one message at a time down one connection (two-phase queue run, "
            "continued deliveries, one TLS handshake kept by its proxy process); about one "
            "round trip per message with BDAT, two with DATA; each message is handed to a new "
            "exim process (continued delivery), which likely accounts for much of its CPU "
            "time (not profiled).",
            "- Petrel opens a few parallel connections and chains pipelined BDAT transactions "
            "(below one round trip per message on a warm connection).",
            "- The delay proxy is tests/tools/delay_proxy.py with a race fixed (SETTINGS.md); "
            "without the fix Postfix's runs did not complete."]
    versions = sorted({(r["mta"], r["version"]) for r in results})
    out += ["", "Versions: " + ", ".join(f"{a} {b}" for a, b in versions), ""]
    with open(path, "w") as f:
        f.write("\n".join(out))


def plot(outdir, results):
    gp = shutil.which("gnuplot")
    if not gp:
        print("gnuplot not installed: no plot", file=sys.stderr)
        return None
    work = tempfile.mkdtemp(prefix="petrel-plot-")
    series = []
    for mta in MTAS:
        rows = sorted((r["rtt_ms"], r["msgs_per_s"]) for r in results
                      if r["mta"] == mta and r["server"] == "CHUNKING+PIPELINING"
                      and r["msgs_per_s"])
        if rows:
            dat = os.path.join(work, f"{mta}.dat")
            with open(dat, "w") as f:
                f.writelines(f"{a} {b}\n" for a, b in rows)
            series.append(f"'{dat}' using 1:2 with linespoints lw 2 title '{mta}'")
    if not series:
        return None
    png = os.path.join(outdir, "msgs_per_s_vs_rtt.png")
    n = results[0]["messages"]
    script = (f"set terminal png size 800,500\nset output '{png}'\n"
              f"set title 'Outbound: {n} x {results[0]['size']} B messages, one destination, STARTTLS'\n"
              "set xlabel 'round trip time (ms)'\nset ylabel 'messages per second'\n"
              "set logscale y\nset grid\nset key top right\n"
              "plot " + ", ".join(series) + "\n")
    subprocess.run([gp], input=script.encode(), check=True, timeout=60)
    shutil.rmtree(work, ignore_errors=True)
    return png


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rtt", default="0,10,50", help="RTTs in ms, comma separated")
    ap.add_argument("--mta", default="petrel,postfix,exim")
    ap.add_argument("--data-rtt", default="10",
                    help="RTT (ms) of the extra run to a server without CHUNKING; '' for none")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--from-json", help="only rewrite results.md and the plot from a results.json")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            d = json.load(f)
        a.errors = d.get("errors", [])
        write_markdown(os.path.join(a.out, "results.md"), d["results"], a)
        plot(a.out, d["results"])
        return 0
    runs = [(float(r), "chunking") for r in a.rtt.split(",") if r]
    if a.data_rtt:
        runs.append((float(a.data_rtt), "data"))
    results, a.errors = [], []
    for mta in a.mta.split(","):
        for rtt, mode in runs:
            try:
                r = run_one(mta, a.messages, a.size, rtt, mode, a.timeout)
            except Exception as e:  # one MTA failing must not hide the others
                msg = f"{mta} {mode} {rtt:g} ms: {type(e).__name__}: {str(e)[:2000]}"
                print(msg, file=sys.stderr, flush=True)
                a.errors.append(msg.splitlines()[0])
                continue
            results.append(r)
            print(json.dumps(r), flush=True)
    os.makedirs(a.out, exist_ok=True)
    write_markdown(os.path.join(a.out, "results.md"), results, a)
    with open(a.json or os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"results": results, "errors": a.errors}, f, indent=1)
    if results:
        png = plot(a.out, results)
        if png:
            print(f"plot: {png}")
    print(f"table: {os.path.join(a.out, 'results.md')}")
    return 1 if a.errors else 0


if __name__ == "__main__":
    sys.exit(main())
