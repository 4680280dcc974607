"""_procutil.py — process plumbing shared by the test tools (smtp_sink.py,
delay_proxy.py): loopback address parsing, atomic writes, the asyncio stop
logic (SIGTERM/SIGINT, --max-runtime, --parent-pid) and the pytest-side
subprocess wrapper (start, wait for the ready file, stop). Standard library
only; not a tool of its own.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def parse_hostport(text):
    """"127.0.0.1:25" / "[::1]:25" -> (host, port); loopback only."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad address {text!r} (HOST:PORT or [V6]:PORT)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r}: give a literal IP address")
    if not ip.is_loopback:
        raise argparse.ArgumentTypeError(f"{host}: loopback addresses only")
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {port}")
    return host, port


def atomic_write(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def stop_event(loop, opts):
    """An asyncio.Event set on SIGTERM/SIGINT, after opts.max_runtime seconds
    (if > 0) or once opts.parent_pid (if set) is no longer our parent.
    Returns (event, why): why[0] is the first reason given."""
    stop = asyncio.Event()
    why = []

    def request_stop(reason):
        if not why:
            why.append(reason)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, request_stop, "SIGINT")
    if opts.max_runtime > 0:
        loop.call_later(opts.max_runtime, request_stop, "max runtime")

    def watch_parent():
        if os.getppid() != opts.parent_pid:
            request_stop("parent exited")
        else:
            loop.call_later(1.0, watch_parent)

    if opts.parent_pid:
        watch_parent()
    return stop, why


# --------------------------------------------------------------------------
# pytest side


def wait_ready(proc, ready_file, logpath, timeout=10.0):
    """Wait for the tool to write its ready file (JSON); returns its content.
    If the process exits or the time runs out: kill it, raise RuntimeError
    with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(ready_file):
            with open(ready_file) as f:
                return json.load(f)
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    rc = proc.poll()
    if rc is None:
        proc.kill()
        proc.wait(5)
    with open(logpath, errors="replace") as f:
        raise RuntimeError(f"{os.path.basename(proc.args[1])} did not start "
                           f"(exit {rc}):\n{f.read()}")


def stop_proc(proc, timeout=5.0):
    """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class ToolProcess:
    """Base of the pytest wrappers: a tool script run as a subprocess, with a
    work directory (own temporary one unless workdir is given) holding its
    stats, ready and log files; a context manager. Subclasses set self.args
    and implement start() with self.spawn()."""

    def init_dir(self, workdir, prefix, stats, ready, logname):
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix=prefix)
        os.makedirs(self.dir, exist_ok=True)
        self.stats_path = os.path.join(self.dir, stats)
        self.ready_path = os.path.join(self.dir, ready)
        self.log_path = os.path.join(self.dir, logname)
        self.proc = None

    def base_args(self, script):
        return [sys.executable, script, "--stats", self.stats_path,
                "--ready-file", self.ready_path, "--parent-pid", str(os.getpid())]

    def clear_files(self):
        for p in (self.ready_path, self.stats_path):
            if os.path.exists(p):
                os.unlink(p)

    def spawn(self):
        """Start the process once; returns the ready file's content."""
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf)
        return wait_ready(self.proc, self.ready_path, self.log_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self):
        """SIGTERM, wait; returns the exit status. Stats stay readable."""
        if self.proc is None:
            return None
        return stop_proc(self.proc)

    def stats(self):
        with open(self.stats_path) as f:
            return json.load(f)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
