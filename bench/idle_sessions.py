#!/usr/bin/python3
"""Memory per idle inbound session.

    bench/idle_sessions.py [--sessions 2000] [--tls]

Starts Petrel (embedded defaults plus a private spool and port), opens N
connections that each read the greeting and send EHLO (and optionally do
STARTTLS and EHLO again), then reads Petrel's resident memory (VmRSS) and
reports (RSS with N sessions - RSS before) / N. A measurement, not a test.
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETREL = os.path.join(ROOT, "build", "petrel")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--tls", action="store_true")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.sessions + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    work = tempfile.mkdtemp(prefix="petrel-idle-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = os.path.join(work, "petrel.conf")
    with open(conf, "w") as f:
        f.write(f"hostname = idle.petrel.example\nspool_dir = {work}/spool\n"
                f"log_file = {work}/main.log\nmax_sessions = {a.sessions + 10}\n"
                f"queue_only = yes\n[listen smtp]\naddress = 127.0.0.1:{port}\n")
    # the daemon needs as many descriptors as sessions
    p = subprocess.Popen(["bash", "-c", f"ulimit -n {want}; exec {PETREL} serve -c {conf} -f"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socks = []
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        before = rss_kib(p.pid)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for i in range(a.sessions):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.recv(200)
            s.sendall(b"EHLO idle.example\r\n")
            s.recv(1000)
            if a.tls:
                s.sendall(b"STARTTLS\r\n")
                s.recv(200)
                s = ctx.wrap_socket(s, server_hostname="idle.petrel.example")
                s.sendall(b"EHLO idle.example\r\n")
                s.recv(1000)
            socks.append(s)
        time.sleep(0.5)
        after = rss_kib(p.pid)
        per = (after - before) / a.sessions
        print(f"sessions={a.sessions} tls={a.tls} rss_before_kib={before} "
              f"rss_after_kib={after} per_session_kib={per:.1f}")
    finally:
        for s in socks:
            s.close()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
