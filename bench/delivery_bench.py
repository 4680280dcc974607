#!/usr/bin/python3
"""Delivery benchmark: N queued messages to one destination through a delay
proxy, measured at the receiver.

    bench/delivery_bench.py [--messages 1000] [--size 1024] [--rtt-ms 50]
                            [--server chunking,data] [--json FILE]

For each receiver mode (a CHUNKING+PIPELINING server, a PIPELINING-only
"DATA" server) it:
  1. starts tests/tools/smtp_sink.py (STARTTLS, counts connections, TLS
     handshakes, resumptions, messages and turns) behind
     tests/tools/delay_proxy.py (RTT/2 added in each direction);
  2. starts Petrel with queue_only = yes, injects N messages over SMTP,
     stops it (the messages are now in the spool);
  3. restarts Petrel with delivery on and times until the sink has all N.

Figures: wall time, messages/s, connections, TLS handshakes, round trips
("turns": the server replied and then had to wait for the client) per
message overall and on warm connections, messages per connection, Petrel's
CPU seconds and peak RSS. A benchmark, not a test: it asserts nothing; the
figures go to stdout (and --json).
"""
import argparse
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from smtp_sink import SinkProcess  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402

PETREL = os.path.join(ROOT, "build", "petrel")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(path, spool, port, route_port, queue_only):
    with open(path, "w") as f:
        f.write(f"""hostname = bench.petrel.example
spool_dir = {spool}
log_file = {os.path.dirname(path)}/main.log
queue_only = {"yes" if queue_only else "no"}
[listen smtp]
address = 127.0.0.1:{port}
[destination bench.example]
route = 127.0.0.1:{route_port}
tls = may
idle_timeout = 2s
""")


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("petrel did not start")


def start_petrel(conf, port):
    p = subprocess.Popen([PETREL, "serve", "-c", conf, "-f"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def stop_petrel(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def proc_usage(pid):
    """(cpu seconds, peak RSS in KiB) of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1])
    return cpu, rss


def inject(port, n, size, sessions=4):
    body = ("x" * 76 + "\r\n") * max(1, size // 78)
    errors = []

    def worker(k):
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=30)
            for i in range(k, n, sessions):
                msg = (f"From: a@bench.example\r\nTo: r@bench.example\r\n"
                       f"Subject: bench {i}\r\nMessage-ID: <b{i}@bench>\r\n\r\n"
                       + body)
                s.sendmail("a@bench.example", [f"r{i % 7}@bench.example"], msg)
            s.quit()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"injection failed: {errors[:3]}")


def run_one(mode, n, size, rtt_ms, work, timeout=600):
    opts = {"maildir": False}
    if mode == "data":
        opts["no_chunking"] = True
    with SinkProcess(**opts) as sink, \
            DelayProxy(free_port(), sink.port, rtt_ms / 2) as proxy:
        spool = os.path.join(work, f"spool-{mode}")
        conf = os.path.join(work, f"petrel-{mode}.conf")
        port = free_port()
        write_conf(conf, spool, port, proxy.port, queue_only=True)
        p = start_petrel(conf, port)
        inject(port, n, size)
        stop_petrel(p)
        write_conf(conf, spool, port, proxy.port, queue_only=False)
        t0 = time.time()
        p = start_petrel(conf, port)
        deadline = t0 + timeout
        st = {}
        while time.time() < deadline:
            st = sink.stats() or {}
            if st.get("messages", 0) >= n:
                break
            time.sleep(0.02)
        t1 = time.time()
        cpu, rss = proc_usage(p.pid)
        stop_petrel(p)
        st = sink.stats() or st
    conns = st.get("connections", 0) or 1
    msgs = st.get("messages", 0)
    return {
        "server": "CHUNKING+PIPELINING" if mode == "chunking" else "PIPELINING (DATA)",
        "messages": msgs,
        "size": size,
        "rtt_ms": rtt_ms,
        "wall_s": round(t1 - t0, 3),
        "msgs_per_s": round(msgs / (t1 - t0), 1) if t1 > t0 else None,
        "connections": st.get("connections"),
        "tls_handshakes": st.get("tls_handshakes"),
        "tls_resumed": st.get("tls_resumed"),
        "turns": st.get("turns"),
        "turns_per_message": st.get("turns_per_message"),
        "warm_turns_per_message": st.get("warm_turns_per_message"),
        "msgs_per_connection": round(msgs / conns, 1),
        "petrel_cpu_s": round(cpu, 2),
        "petrel_peak_rss_kib": rss,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rtt-ms", type=float, default=50)
    ap.add_argument("--server", default="chunking,data")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="petrel-bench-")
    results = []
    try:
        for mode in a.server.split(","):
            r = run_one(mode, a.messages, a.size, a.rtt_ms, work, a.timeout)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        if a.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| server | msgs | RTT | wall s | msg/s | conns | TLS handshakes | "
          "resumed | round trips/msg | warm RT/msg | msgs/conn | CPU s | peak RSS KiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['server']} | {r['messages']} | {r['rtt_ms']:g} ms | {r['wall_s']} | "
              f"{r['msgs_per_s']} | {r['connections']} | {r['tls_handshakes']} | "
              f"{r['tls_resumed']} | {r['turns_per_message']} | "
              f"{r['warm_turns_per_message']} | {r['msgs_per_connection']} | "
              f"{r['petrel_cpu_s']} | {r['petrel_peak_rss_kib']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
