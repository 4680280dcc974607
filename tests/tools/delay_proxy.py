#!/usr/bin/python3
"""delay_proxy.py — a TCP proxy that adds a fixed one-way delay (loopback only).

    delay_proxy.py --listen 127.0.0.1:PORT --target 127.0.0.1:PORT --delay-ms D
                   [--stats FILE] [--delay-connect] [--ready-file FILE]

Every chunk read in either direction is written to the other side D ms after
it was read: a chunk read at t goes out at t+D (asyncio loop.call_at, one
timer per direction, order preserved), so the delay adds latency, not a
throughput limit, and a request/reply round trip through the proxy costs 2*D
more. Half-close (EOF) and close are forwarded after the same delay; a reset
(connection lost with an error) is forwarded as an abortive close. Flow
control: when one side's output backs up, reading from the other side pauses.

--delay-connect also waits D before connecting to the target, so the time
from connect() to the server's greeting is 2*D as over a real network (the
client's own connect() to the proxy still completes at once).

Stats (JSON, replaced atomically on every connection close, at most every
0.5 s while bytes flow, and at exit): connections, active_connections,
connect_failures, bytes_client_to_server, bytes_server_to_client, delay_ms.

Importable:  with DelayProxy(listen_port, target_port, delay_ms) as p:
                 p.port, p.stats(), p.stop()      (listen_port 0 = free port)
"""

import argparse
import asyncio
import collections
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _procutil import ToolProcess, atomic_write, parse_hostport, stop_event  # noqa: E402


def log(msg):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} delay_proxy: {msg}\n")
    sys.stderr.flush()


class Stats:
    def __init__(self, path, delay_ms):
        self.path = path
        self.c = {"connections": 0, "active_connections": 0, "connect_failures": 0,
                  "bytes_client_to_server": 0, "bytes_server_to_client": 0,
                  "delay_ms": delay_ms}
        self.dirty = True
        self.timer = None

    def add(self, k, n=1):
        self.c[k] += n
        self.dirty = True

    def write(self):
        self.dirty = False
        if self.path:
            atomic_write(self.path, json.dumps(dict(self.c, time=time.time())).encode())

    def soon(self):
        """Write within 0.5 s (bytes are flowing; do not write per chunk)."""
        if self.timer is None and self.path:
            self.timer = asyncio.get_running_loop().call_later(0.5, self._tick)

    def _tick(self):
        self.timer = None
        if self.dirty:
            self.write()


class DelayLine:
    """Items pushed at time t are delivered at t + delay, in push order."""

    def __init__(self, loop, delay, deliver):
        self.loop = loop
        self.delay = delay
        self.deliver = deliver
        self.q = collections.deque()
        self.timer = None

    def push(self, kind, data=None):
        when = self.loop.time() + self.delay
        self.q.append((when, kind, data))
        if self.timer is None:
            self.timer = self.loop.call_at(when, self._fire)

    def _fire(self):
        self.timer = None
        now = self.loop.time()
        while self.q and self.q[0][0] <= now:
            _, kind, data = self.q.popleft()
            self.deliver(kind, data)
        if self.q:
            self.timer = self.loop.call_at(self.q[0][0], self._fire)

    def cancel(self):
        if self.timer:
            self.timer.cancel()
            self.timer = None
        self.q.clear()


class Side(asyncio.Protocol):
    """One TCP connection of a proxied pair. What it reads goes, delayed, to its peer."""

    def __init__(self, pair, name):
        self.pair = pair
        self.name = name            # "client" | "server"
        self.transport = None
        self.peer = None
        self.eof_in = False          # EOF read from this side
        self.eof_out = False         # EOF forwarded to this side
        self.gone = False
        self.line = DelayLine(pair.loop, pair.delay, self.forward)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.pair.count(self.name, len(data))
        self.line.push("data", data)

    def eof_received(self):
        self.eof_in = True
        self.line.push("eof")
        return True                  # keep our writing side open (half-close)

    def connection_lost(self, exc):
        self.gone = True
        self.line.push("reset" if exc is not None else "close")
        self.pair.side_lost()

    def pause_writing(self):
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer and self.peer.transport and not self.peer.gone:
            self.peer.transport.resume_reading()

    def forward(self, kind, data):
        """Deliver an item read on this side to the peer (runs D after the read)."""
        dst = self.peer
        if dst is None and not self.pair.settled:
            # target not connected yet; remember the side: the target's own
            # greeting can arrive here too, and must go to the client
            self.pair.early.append((self, kind, data))
            return
        if dst is None or dst.transport is None or dst.gone:
            return
        t = dst.transport
        if kind == "data":
            if not t.is_closing():
                t.write(data)
        elif kind == "eof":
            if not t.is_closing() and t.can_write_eof():
                t.write_eof()
            dst.eof_out = True
            if self.eof_in and dst.eof_in and dst.eof_out and self.eof_out:
                self.pair.close_both()
        elif kind == "reset":
            t.abort()
        elif kind == "close":
            t.close()                # flushes what was written, then FIN


class Pair:
    def __init__(self, proxy):
        self.proxy = proxy
        self.loop = proxy.loop
        self.delay = proxy.delay
        self.client = None          # set by Proxy.new_client
        self.server = None
        self.lost = 0
        self.settled = False         # connect to the target finished (either way)
        self.early = []              # (side, kind, data) due before the target was connected

    def count(self, name, n):
        st = self.proxy.stats
        st.add("bytes_client_to_server" if name == "client" else "bytes_server_to_client", n)
        st.soon()

    def side_lost(self):
        self.lost += 1
        if self.lost == (2 if self.server is not None else 1):
            self.proxy.pair_done(self)

    def close_both(self):
        for s in (self.client, self.server):
            if s is not None and s.transport is not None and not s.gone:
                s.transport.close()

    async def connect(self):
        p = self.proxy
        try:
            if p.opts.delay_connect:
                await asyncio.sleep(self.delay)
            host, port = p.opts.target
            self.server = Side(self, "server")
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self.server, host, port), 10)
        except (OSError, asyncio.TimeoutError) as e:
            log(f"connect to target failed: {e}")
            self.server = None
            self.settled = True
            p.stats.add("connect_failures")
            if not self.client.gone:
                self.client.transport.abort()
            else:
                p.pair_done(self)
            return
        self.client.peer = self.server
        self.server.peer = self.client
        self.settled = True
        for side, kind, data in self.early:
            side.forward(kind, data)
        self.early = []
        if self.client.gone:
            self.server.transport.close()
            return
        self.client.transport.resume_reading()


class ClientSide(Side):
    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()    # until the target is connected
        self.pair.proxy.stats.add("connections")
        self.pair.proxy.stats.add("active_connections")
        self.pair.proxy.stats.soon()
        self.pair.proxy.pairs.add(self.pair)
        self.pair.task = self.pair.loop.create_task(self.pair.connect())


class Proxy:
    def __init__(self, opts, loop):
        self.opts = opts
        self.loop = loop
        self.delay = opts.delay_ms / 1000.0
        self.stats = Stats(opts.stats, opts.delay_ms)
        self.pairs = set()

    def new_client(self):
        pair = Pair(self)
        pair.client = ClientSide(pair, "client")
        return pair.client

    def pair_done(self, pair):
        if pair in self.pairs:
            self.pairs.discard(pair)
            self.stats.add("active_connections", -1)
            self.stats.write()


async def amain(opts):
    loop = asyncio.get_running_loop()
    proxy = Proxy(opts, loop)
    host, port = opts.listen
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = await loop.create_server(proxy.new_client, host, port, family=fam,
                                      reuse_address=True, backlog=512)
    bound = server.sockets[0].getsockname()[1]
    proxy.stats.c["listen"] = [host, bound]
    proxy.stats.write()
    if opts.ready_file:
        atomic_write(opts.ready_file, json.dumps({"pid": os.getpid(), "listen": [host, bound]}).encode())
    log(f"{host}:{bound} -> {opts.target[0]}:{opts.target[1]} delay {opts.delay_ms} ms each way")
    stop, why = stop_event(loop, opts)
    await stop.wait()
    server.close()
    for pair in list(proxy.pairs):
        for s in (pair.client, pair.server):
            if s is not None:
                s.line.cancel()
                if s.transport is not None and not s.gone:
                    s.transport.abort()
    await asyncio.sleep(0.02)
    proxy.stats.c["stopped"] = why[0]
    proxy.stats.write()
    log(f"stopped ({why[0]})")


def build_parser():
    p = argparse.ArgumentParser(description="TCP proxy adding a fixed one-way delay (see module doc).")
    p.add_argument("--listen", type=parse_hostport, required=True, help="loopback HOST:PORT (0: free port)")
    p.add_argument("--target", type=parse_hostport, required=True, help="loopback HOST:PORT")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay in milliseconds")
    p.add_argument("--stats", help="JSON stats file")
    p.add_argument("--delay-connect", action="store_true",
                   help="also wait the delay before connecting to the target")
    p.add_argument("--ready-file", help="written (JSON: pid, listen) once listening")
    p.add_argument("--max-runtime", type=float, default=0.0,
                   help="exit after this many seconds (0: no limit)")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process is no longer our parent")
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if opts.delay_ms < 0:
        build_parser().error("--delay-ms must be >= 0")
    asyncio.run(amain(opts))
    return 0


# --------------------------------------------------------------------------
# pytest API


class DelayProxy(ToolProcess):
    """Runs delay_proxy.py as a subprocess; a context manager.

    DelayProxy(listen_port, target_port, delay_ms, host="127.0.0.1",
               target_host="127.0.0.1", delay_connect=False, workdir=None)
    """

    SCRIPT = os.path.abspath(__file__)

    def __init__(self, listen_port, target_port, delay_ms, host="127.0.0.1",
                 target_host="127.0.0.1", delay_connect=False, workdir=None,
                 max_runtime=3600):
        self.init_dir(workdir, "delay-proxy-", "proxy-stats.json", "proxy-ready.json", "proxy.log")
        self.delay_ms = delay_ms

        def hp(h, p):
            return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"

        self.args = self.base_args(self.SCRIPT) + [
            "--listen", hp(host, listen_port), "--target", hp(target_host, target_port),
            "--delay-ms", str(delay_ms), "--max-runtime", str(max_runtime)]
        if delay_connect:
            self.args.append("--delay-connect")

    def start(self):
        self.clear_files()
        ready = self.spawn()
        self.host, self.port = ready["listen"]
        self.address = (self.host, self.port)
        return self


if __name__ == "__main__":
    sys.exit(main())
