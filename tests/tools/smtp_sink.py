#!/usr/bin/python3
"""smtp_sink.py — a receiving SMTP test server that counts.

Petrel's delivery engine is judged by how many round trips a message costs
(docs: DESIGN.md, "Round trips: the number that matters"). This sink is the
instrument that measures it from the receiving side. Python 3.11 standard
library only; one asyncio process; loopback addresses only.

    smtp_sink.py --listen 127.0.0.1:PORT [--listen [::1]:PORT] --stats FILE
                 [--maildir DIR] [--cert C --key K] [options]   (see --help)

Definitions (all counted per connection and summed in the stats file)
--------------------------------------------------------------------
turns
    The number of times the server had to reply before the client sent more:
    one turn is counted each time the server has written a batch of replies
    and then receives new bytes on that connection (a write -> read
    transition). The greeting is a write, so greeting -> EHLO is a turn.
    Turns are counted at the SMTP layer: inside TLS, the bytes are the
    decrypted SMTP stream, so TLS handshake records and session tickets are
    not writes or reads here (the handshake hides inside the STARTTLS turn:
    "220 Ready" -> EHLO). Round trips per message = turns / messages.
    The TCP handshake and the TLS handshake flight are not turns: a new
    connection with STARTTLS is 4 turns before the first MAIL (EHLO, STARTTLS,
    EHLO, MAIL) + TCP connect + TLS handshake = about 6 network round trips.
    Caveat: the server cannot see causality. If a client splits one pipelined
    group over two writes and the second arrives after the server answered the
    first, that counts as a turn although the client did not wait.
setup_turns
    Turns counted up to and including the one that brought the connection's
    first MAIL command. warm turns per message = (turns - setup_turns) /
    messages. The turn that brings QUIT stands in for the first MAIL's turn
    (counted in setup), so this is exactly 4 without pipelining, 2 for
    "MAIL/RCPT/DATA, then body", 1 for "body . MAIL/RCPT/DATA" chains, and
    below 1 for pipelined BDAT transactions (0 if everything, QUIT included,
    went in one write).
sync_violations
    Bytes that were already in the input buffer after a command that must end
    a pipelining group (RFC 2920: EHLO, HELO, DATA, NOOP, QUIT, VRFY, EXPN,
    STARTTLS, AUTH, HELP, unknown) was answered, i.e. the client sent ahead
    where it had to wait. Without PIPELINING advertised, any command counts.
    Input before the greeting (see --greet-delay) counts too. The sink is
    lenient (processes the input anyway) unless --enforce-sync is given.
    Plaintext sent after STARTTLS is always discarded (CVE-2011-0411 class).
messages
    Messages whose end of content was answered with 250.

Stats file
----------
JSON, replaced atomically (write FILE.tmp, rename) before every batch of
replies is sent (so a client that has received a reply can read stats that
already include it; --stats-interval relaxes this for benchmarks), after every
connection close and on SIGTERM/SIGINT before exit. Keys: connections,
connections_closed, active_connections, tls_handshakes, tls_resumed,
tls_failures, ehlo, helo, mail, rcpt_accepted, rcpt_rejected, data_cmds,
bdat_cmds, messages, messages_rejected, rset, noop, quit, turns, setup_turns,
bytes_in, bytes_out, max_messages_per_connection, sync_violations,
faults_fired, turns_per_message, warm_turns_per_message, tls_num_tickets,
per_connection (list, one dict per connection in accept order: index,
peer, messages, tls, resumed, tls_version, turns, setup_turns, mail,
rcpt_accepted, data_cmds, bdat_cmds, bytes_in, bytes_out, sync_violations,
closed, close_reason). bytes_in/bytes_out are raw TCP payload bytes (TLS
records included).
Cost: on ext4, renaming over an existing file forces writeback of the new one
(auto_da_alloc), about 0.5-3 ms per stats write here. That caps chained-DATA
runs near 1000 messages/s; benchmarks pass --stats-interval 200 (13k/s chained
DATA, 38k/s pipelined BDAT on one connection) and read the final stats after
the connection closed or the sink stopped.

Maildir
-------
Each accepted message: DIR/<n>.eml (content exactly as received, after
dot-unstuffing for DATA) and then DIR/<n>.env (JSON: id, mail_from,
mail_params, rcpts, rcpt_params, connection (1-based index), transaction
(n-th MAIL transaction begun on that connection), seq (n-th message accepted
on that connection), method ("DATA" | "BDAT"), bdat_chunks, tls,
tls_resumed, ehlo, size, sha256). Both are written tmp + rename, .env last,
before the 250 reply is sent.

Faults (--fault MODE, may be repeated; --fault-once: each fires once per run)
-----------------------------------------------------------------------------
"N-th message" below counts, per connection, the messages whose content the
client started to send (DATA answered 354, or the first BDAT chunk of a
transaction with valid recipients). Replies queued before a fault fires are
sent; then the connection is closed (FIN) and unread input is discarded.
  421-after:N     after N messages accepted on a connection, the next MAIL is
                  answered 421 4.3.0 and the connection closed.
  drop-in-data:N  close without replying once content of message N+1 has
                  started to arrive (before its end is processed).
  drop-after-dot:N  close without replying at the end (CRLF.CRLF / BDAT LAST)
                  of message N+1; the message is not stored.
  tempfail-data:N answer the end of message N+1 with 451 4.3.0.
  early-tls-reply write "250 injected\\r\\n" in plaintext right after
                  "220 Ready to start TLS", before the handshake.
  stall           send the greeting, then never reply (input is read and
                  discarded; the connection closes silently at idle timeout).
  garbage         answer EHLO/HELO with "250-<host>" and a line that is not an
                  SMTP reply, then close.

Importable API (for pytest)
---------------------------
    with SinkProcess(0, pipelining=False, fault="421-after:2") as sink:
        sink.port, sink.address, sink.cert      # cert: PEM of the server
        sink.stats()      # dict from the stats file
        sink.wait_stats(lambda s: s["connections_closed"] >= 1, timeout=5)
        sink.messages()   # list of env dicts, each with "content" (bytes)
        sink.stop()       # SIGTERM, final stats are still readable after it
Keyword options map to CLI flags: x_y=True -> --x-y, x=False -> --no-x,
x="v" -> --x v, x=[a, b] -> --x a --x b; eightbitmime=False -> --no-8bitmime.
"""

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _procutil import ToolProcess, atomic_write, parse_hostport, stop_event  # noqa: E402

MAX_LINE = 4096
# Commands that RFC 2920 says end a pipelining group (unknown ones too).
MAY_CONTINUE = {b"MAIL", b"RCPT", b"RSET", b"BDAT"}
FAULT_MODES = {"421-after": True, "drop-in-data": True, "drop-after-dot": True,
               "tempfail-data": True, "early-tls-reply": False, "stall": False,
               "garbage": False}
COUNTERS = ("connections", "connections_closed", "active_connections",
            "tls_handshakes", "tls_resumed", "tls_failures", "ehlo", "helo",
            "mail", "rcpt_accepted", "rcpt_rejected", "data_cmds", "bdat_cmds",
            "messages", "messages_rejected", "rset", "noop", "quit", "turns",
            "setup_turns", "bytes_in", "bytes_out",
            "max_messages_per_connection", "sync_violations", "faults_fired")
PER_CONN_SUMS = ("turns", "setup_turns", "bytes_in", "bytes_out",
                 "sync_violations")


def log(msg):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} smtp_sink: {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# options


def parse_fault(text):
    mode, _, n = text.partition(":")
    if mode not in FAULT_MODES:
        raise argparse.ArgumentTypeError(f"unknown fault {mode!r}; one of {', '.join(FAULT_MODES)}")
    if FAULT_MODES[mode]:
        if not n.isdigit():
            raise argparse.ArgumentTypeError(f"fault {mode} needs :N (N >= 0)")
        return mode, int(n)
    if n:
        raise argparse.ArgumentTypeError(f"fault {mode} takes no :N")
    return mode, None


def parse_limits(text):
    out = {}
    for tok in re.split(r"[\s,]+", text.strip()):
        if not tok:
            continue
        k, _, v = tok.partition("=")
        k = k.upper()
        if k not in ("RCPTMAX", "MAILMAX") or not v.isdigit() or int(v) < 1:
            raise argparse.ArgumentTypeError(f"bad LIMITS item {tok!r} (RCPTMAX=n MAILMAX=m)")
        out[k] = int(v)
    if not out:
        raise argparse.ArgumentTypeError("empty --limits")
    return out


def parse_regex(text):
    try:
        return re.compile(text, re.I)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"bad regex {text!r}: {e}")


def build_parser():
    p = argparse.ArgumentParser(
        description="Receiving SMTP test server that counts round trips (see module doc).")
    p.add_argument("--listen", action="append", type=parse_hostport, required=True,
                   help="loopback HOST:PORT or [::1]:PORT; port 0 = ephemeral (see --ready-file)")
    p.add_argument("--stats", required=True, help="JSON stats file (replaced atomically)")
    p.add_argument("--maildir", help="store accepted messages as DIR/<n>.eml + DIR/<n>.env")
    p.add_argument("--cert", help="PEM certificate (chain) for STARTTLS")
    p.add_argument("--key", help="PEM private key for STARTTLS")
    p.add_argument("--hostname", default="sink.petrel.test")
    for ext in ("pipelining", "chunking", "starttls", "8bitmime", "smtputf8", "size"):
        p.add_argument(f"--no-{ext}", action="store_true", help=f"do not advertise {ext.upper()}")
    p.add_argument("--dsn", action="store_true", help="advertise DSN and accept its parameters")
    p.add_argument("--size", type=int, default=0,
                   help="advertise SIZE N and reject bigger messages with 552 (0: SIZE without limit)")
    p.add_argument("--limits", type=parse_limits,
                   help='"RCPTMAX=n MAILMAX=m": advertise LIMITS and enforce them '
                        "(RCPT over RCPTMAX: 452 4.5.3; MAIL over MAILMAX on one connection: 421, close)")
    p.add_argument("--reject-rcpt", type=parse_regex, help="550 5.1.1 for matching recipients")
    p.add_argument("--tempfail-rcpt", type=parse_regex, help="450 4.2.0 for matching recipients")
    p.add_argument("--reject-mail", type=parse_regex, help="550 5.7.1 for matching senders")
    p.add_argument("--fault", action="append", type=parse_fault, default=[],
                   help="421-after:N | drop-in-data:N | drop-after-dot:N | tempfail-data:N | "
                        "early-tls-reply | stall | garbage (may be repeated)")
    p.add_argument("--fault-once", action="store_true",
                   help="each fault fires at most once in the life of the process")
    p.add_argument("--enforce-sync", action="store_true",
                   help="answer a synchronization violation with 554 5.5.0 and close")
    p.add_argument("--greet-delay", type=float, default=0.0, metavar="MS",
                   help="wait MS milliseconds before the greeting")
    p.add_argument("--tls-tickets", type=int, default=2,
                   help="TLS 1.3 session tickets issued per handshake (SSLContext.num_tickets)")
    p.add_argument("--tls-max", choices=("1.2", "1.3"), default="1.3",
                   help="highest TLS version offered")
    p.add_argument("--idle-timeout", type=float, default=120.0,
                   help="seconds without input before 421 4.4.2 and close")
    p.add_argument("--max-runtime", type=float, default=0.0,
                   help="exit after this many seconds (0: no limit)")
    p.add_argument("--parent-pid", type=int, default=0,
                   help="exit when this process is no longer our parent")
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="MS",
                   help="write stats at most every MS ms (0: before every reply batch)")
    p.add_argument("--ready-file",
                   help="written (JSON: pid, listen, cert, key) once the listeners accept connections")
    p.add_argument("--verbose", action="store_true", help="log commands and replies to stderr")
    return p


# --------------------------------------------------------------------------
# shared state


class Stats:
    def __init__(self, path, interval_ms):
        self.path = path
        self.interval = interval_ms / 1000.0
        self.c = {k: 0 for k in COUNTERS}
        self.conns = []          # per-connection dicts
        self.extra = {}
        self.dirty = True
        self.last = 0.0
        self.timer = None

    def add(self, key, n=1):
        self.c[key] += n
        self.dirty = True

    def snapshot(self):
        d = dict(self.c)
        for k in PER_CONN_SUMS:
            d[k] = sum(x[k] for x in self.conns if x[k] is not None)
        # a connection that has not sent MAIL yet: all its turns are setup
        d["setup_turns"] = sum(x["turns"] if x["setup_turns"] is None else x["setup_turns"]
                               for x in self.conns)
        d["max_messages_per_connection"] = max((x["messages"] for x in self.conns), default=0)
        d["active_connections"] = d["connections"] - d["connections_closed"]
        d["turns_per_message"] = (d["turns"] / d["messages"]) if d["messages"] else None
        d["warm_turns_per_message"] = ((d["turns"] - d["setup_turns"]) / d["messages"]
                                       if d["messages"] else None)
        d.update(self.extra)
        d["per_connection"] = self.conns
        d["time"] = time.time()
        return d

    def write(self, force=False):
        if not (self.dirty or force):
            return
        now = time.monotonic()
        if not force and self.interval and now - self.last < self.interval:
            if self.timer is None:
                loop = asyncio.get_running_loop()
                self.timer = loop.call_later(self.interval - (now - self.last), self._deferred)
            return
        self.dirty = False
        self.last = now
        atomic_write(self.path, json.dumps(self.snapshot(), indent=1).encode())

    def _deferred(self):
        self.timer = None
        self.write()


class Sink:
    def __init__(self, opts):
        self.o = opts
        self.stats = Stats(opts.stats, opts.stats_interval)
        self.ssl_ctx = None
        self.active = set()
        self.msg_seq = 0
        self.fired = set()
        self.tmpdir = None
        self.cert = opts.cert
        self.key = opts.key

    def fault(self, mode):
        """The fault's N if `mode` is configured and may still fire, else None/False."""
        for m, n in self.o.fault:
            if m == mode and not (self.o.fault_once and m in self.fired):
                return n if n is not None else True
        return None

    def fire(self, mode):
        self.fired.add(mode)
        self.stats.add("faults_fired")
        log(f"fault {mode} fired")

    def setup_tls(self):
        if self.o.no_starttls:
            return
        if not self.cert:
            self.tmpdir = tempfile.mkdtemp(prefix="smtp-sink-tls-")
            self.cert = os.path.join(self.tmpdir, "cert.pem")
            self.key = os.path.join(self.tmpdir, "key.pem")
            h = self.o.hostname
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key,
                 "-out", self.cert, "-days", "2", "-subj", f"/CN={h}",
                 "-addext", f"subjectAltName=DNS:{h},IP:127.0.0.1,IP:::1"],
                check=True, timeout=30, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        # Python server contexts issue 2 TLS 1.3 tickets per handshake by
        # default (num_tickets); TLS 1.2 uses RFC 5077 tickets. Both resume
        # across connections because all connections share this one context.
        ctx.num_tickets = self.o.tls_tickets
        if self.o.tls_max == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ssl_ctx = ctx
        self.stats.extra["tls_num_tickets"] = ctx.num_tickets

    def store(self, conn, content):
        self.msg_seq += 1
        n = self.msg_seq
        if self.o.maildir:
            d = self.o.maildir
            env = {
                "id": n, "mail_from": conn.mail_from, "mail_params": conn.mail_params,
                "rcpts": [r for r, _ in conn.rcpts], "rcpt_params": [p for _, p in conn.rcpts],
                "connection": conn.info["index"], "transaction": conn.tx_no,
                "seq": conn.info["messages"] + 1, "method": conn.method,
                "bdat_chunks": conn.bdat_chunks, "tls": conn.sslobj is not None,
                "tls_resumed": conn.info["resumed"], "ehlo": conn.ehlo_name,
                "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                "time": time.time(),
            }
            atomic_write(os.path.join(d, f"{n}.eml"), content)
            atomic_write(os.path.join(d, f"{n}.env"), json.dumps(env, indent=1).encode())
        return n


def text(b):
    return b.decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------
# one connection


class Conn(asyncio.Protocol):
    def __init__(self, sink):
        self.sink = sink
        self.o = sink.o
        self.st = sink.stats
        self.transport = None
        self.buf = bytearray()
        self.pos = 0
        self.out = []
        self.replied = False      # a reply batch was written since the last input
        self.greeted = False
        self.closing = False
        self.mode = "cmd"         # cmd | data | bdat | stall
        self.sslobj = None
        self.tls_in = self.tls_out = None
        self.handshaking = False
        self.ehlo_name = None
        self.esmtp = False
        self.mail_count = 0
        self.content_no = 0       # messages whose content started on this connection
        self.tx_no = 0
        self.last_input = time.monotonic()
        self.idle_timer = None
        self.reset_tx()

    # ---- lifecycle

    def connection_made(self, transport):
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.sink.active.add(self)
        self.st.add("connections")
        peer = transport.get_extra_info("peername")
        if peer:
            peer = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        self.info = {
            "index": self.st.c["connections"], "peer": peer,
            "messages": 0, "tls": False, "resumed": False, "tls_version": None,
            "turns": 0, "setup_turns": None, "mail": 0, "rcpt_accepted": 0,
            "data_cmds": 0, "bdat_cmds": 0, "bytes_in": 0, "bytes_out": 0,
            "sync_violations": 0, "closed": False, "close_reason": None,
            "opened": time.time(), "closed_at": None,
        }
        self.st.conns.append(self.info)
        self.stall = bool(self.sink.fault("stall"))
        if self.stall:
            self.sink.fire("stall")
        self.idle_timer = self.loop.call_later(self.o.idle_timeout, self.check_idle)
        if self.o.greet_delay > 0:
            self.loop.call_later(self.o.greet_delay / 1000.0, self.greet)
        else:
            self.greet()

    def greet(self):
        if self.closing:
            return
        self.greeted = True
        self.reply(220, f"{self.o.hostname} ESMTP petrel smtp_sink")
        self.flush()
        if self.buf:              # input that arrived before the greeting
            self.violation()
            self.process()
            self.flush()

    def check_idle(self):
        self.idle_timer = None
        if self.closing:
            return
        idle = time.monotonic() - self.last_input
        if idle < self.o.idle_timeout:
            self.idle_timer = self.loop.call_later(self.o.idle_timeout - idle, self.check_idle)
            return
        if not self.stall:
            self.reply(421, "4.4.2 Idle timeout, closing connection")
        self.close("timeout")

    def connection_lost(self, exc):
        self.closing = True
        if self.idle_timer:
            self.idle_timer.cancel()
        self.sink.active.discard(self)
        self.info["closed"] = True
        self.info["closed_at"] = time.time()
        if self.info["close_reason"] is None:
            self.info["close_reason"] = "client" if exc is None else f"error: {exc}"
        self.st.add("connections_closed")
        self.st.write(force=True)
        if self.o.verbose:
            log(f"#{self.info['index']} closed ({self.info['close_reason']})")

    def close(self, reason):
        """Send what is queued, then close (FIN); further input is ignored."""
        if self.info["close_reason"] is None:
            self.info["close_reason"] = reason
        self.flush()
        self.closing = True
        if self.sslobj is not None and reason == "quit":
            try:
                self.sslobj.unwrap()       # queue close_notify
            except (ssl.SSLError, OSError):
                pass
            self.tls_flush()
        self.transport.close()

    def eof_received(self):
        if self.sslobj is not None:
            self.tls_in.write_eof()
            self.data_received(b"", raw_eof=True)
        if not self.closing:
            self.close("client eof")
        return False

    # ---- input

    def data_received(self, data, raw_eof=False):
        if data:
            self.info["bytes_in"] += len(data)
            self.last_input = time.monotonic()
        if self.closing:
            return
        if self.sslobj is None:
            self.app_data(data)
            return
        if data:
            self.tls_in.write(data)
        if self.handshaking:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self.tls_flush()
                return
            except (ssl.SSLError, OSError) as e:
                self.tls_flush()
                self.st.add("tls_failures")
                log(f"#{self.info['index']} TLS handshake failed: {e}")
                self.closing = True
                self.info["close_reason"] = f"tls handshake failed: {e}"
                self.transport.close()
                return
            self.handshaking = False
            self.tls_flush()
            resumed = bool(self.sslobj.session_reused)
            self.st.add("tls_handshakes")
            self.info["tls"] = True
            self.info["tls_version"] = self.sslobj.version()
            if resumed:
                self.st.add("tls_resumed")
                self.info["resumed"] = True
            if self.o.verbose:
                log(f"#{self.info['index']} TLS {self.sslobj.version()} "
                    f"{self.sslobj.cipher()[0]} resumed={resumed}")
        chunks, eof = [], False
        while True:
            try:
                d = self.sslobj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                eof = True
                break
            except (ssl.SSLError, OSError) as e:
                log(f"#{self.info['index']} TLS error: {e}")
                self.closing = True
                self.info["close_reason"] = f"tls error: {e}"
                self.transport.close()
                return
            if not d:
                eof = True
                break
            chunks.append(d)
        self.tls_flush()
        if chunks:
            self.app_data(b"".join(chunks))
        if eof and not self.closing and not raw_eof:
            self.close("client close_notify")

    def app_data(self, data):
        """Bytes of the SMTP stream (plaintext or decrypted)."""
        if not data:
            return
        if self.replied:
            self.info["turns"] += 1
            self.replied = False
        self.st.dirty = True
        if self.stall:
            return
        self.buf += data
        if not self.greeted:
            return
        self.process()
        self.flush()

    # ---- output

    def reply(self, code, txt, more=None):
        lines = [txt] + list(more or [])
        for i, ln in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            self.out.append(f"{code}{sep}{ln}\r\n".encode())

    def flush(self):
        if not self.out or self.transport is None or self.transport.is_closing():
            self.out.clear()
            return
        data = b"".join(self.out)
        self.out.clear()
        if self.o.verbose:
            for ln in data.decode("utf-8", "replace").splitlines():
                log(f"#{self.info['index']} > {ln}")
        self.st.write()          # stats include everything this batch answers
        self.send(data)
        self.replied = True

    def send(self, data):
        if self.sslobj is not None:
            self.sslobj.write(data)
            self.tls_flush()
        else:
            self.info["bytes_out"] += len(data)
            self.transport.write(data)

    def tls_flush(self):
        out = self.tls_out.read()
        if out and not self.transport.is_closing():
            self.info["bytes_out"] += len(out)
            self.transport.write(out)

    # ---- the command loop

    def violation(self):
        self.info["sync_violations"] += 1
        self.st.dirty = True
        if self.o.verbose:
            log(f"#{self.info['index']} synchronization violation")
        if self.o.enforce_sync:
            self.reply(554, "5.5.0 SMTP synchronization error")
            self.close("sync violation")
            return True
        return False

    def pending(self):
        return len(self.buf) - self.pos

    def process(self):
        try:
            while not self.closing and (self.pos < len(self.buf) or
                                        (self.mode == "bdat" and self.bdat_left == 0)):
                if self.mode == "data":
                    if not self.data_content():
                        break
                elif self.mode == "bdat":
                    if not self.bdat_content():
                        break
                else:
                    if not self.one_command():
                        break
        finally:
            if self.pos:
                del self.buf[:self.pos]
                self.pos = 0

    def one_command(self):
        buf = self.buf
        nl = buf.find(b"\n", self.pos)
        if nl < 0:
            if self.pending() > MAX_LINE:
                self.reply(500, "5.5.2 Line too long")
                self.close("line too long")
            return False
        bare = nl == self.pos or buf[nl - 1] != 0x0D
        line = bytes(buf[self.pos:nl if bare else nl - 1])
        self.pos = nl + 1
        if self.o.verbose:
            log(f"#{self.info['index']} < {text(line)}")
        if bare:
            self.reply(500, "5.5.2 Bare LF in command line; use CRLF")
            return True
        if len(line) > MAX_LINE:
            self.reply(500, "5.5.2 Line too long")
            return True
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        handler = getattr(self, "cmd_" + verb.decode("ascii", "replace"), None)
        if handler is None or not verb.isalpha():
            self.reply(500, "5.5.2 Command unrecognized")
        else:
            handler(arg.strip())
        if self.closing:
            return False
        if verb == b"STARTTLS" or self.mode == "bdat":
            return True          # BDAT: sync is checked once its chunk is read
        ends_group = verb not in MAY_CONTINUE or self.o.no_pipelining
        if ends_group and self.pending() > 0 and self.violation():
            return False
        return True

    # ---- transaction state

    def reset_tx(self):
        self.mail_from = None
        self.mail_params = []
        self.rcpts = []            # (address, params)
        self.smtputf8 = False
        self.method = None
        self.content = bytearray()
        self.tx_error = None       # (code, text) once the BDAT transaction failed
        self.bdat_chunks = 0
        self.declared_size = None

    # ---- commands

    def ehlo_reply(self):
        o = self.o
        kw = []
        if not o.no_pipelining:
            kw.append("PIPELINING")
        if not o.no_size:
            kw.append(f"SIZE {o.size}" if o.size else "SIZE")
        if not o.no_8bitmime:
            kw.append("8BITMIME")
        kw.append("ENHANCEDSTATUSCODES")
        if not o.no_chunking:
            kw.append("CHUNKING")
        if not o.no_smtputf8:
            kw.append("SMTPUTF8")
        if o.dsn:
            kw.append("DSN")
        if not o.no_starttls and self.sslobj is None and self.sink.ssl_ctx is not None:
            kw.append("STARTTLS")
        if o.limits:
            kw.append("LIMITS " + " ".join(f"{k}={v}" for k, v in o.limits.items()))
        return kw

    def greeting_cmd(self, arg, esmtp):
        self.st.add("ehlo" if esmtp else "helo")
        if not arg:
            self.reply(501, "5.5.4 Syntax: EHLO hostname")
            return
        if self.sink.fault("garbage"):
            self.sink.fire("garbage")
            self.out.append(f"250-{self.o.hostname}\r\n".encode() + b"XYZZY this is not an SMTP reply\r\n")
            self.close("fault garbage")
            return
        self.reset_tx()
        self.ehlo_name = text(arg)
        self.esmtp = esmtp
        if esmtp:
            self.reply(250, f"{self.o.hostname} greets {self.ehlo_name}", self.ehlo_reply())
        else:
            self.reply(250, f"{self.o.hostname} greets {self.ehlo_name}")

    def cmd_EHLO(self, arg):
        self.greeting_cmd(arg, True)

    def cmd_HELO(self, arg):
        self.greeting_cmd(arg, False)

    def check_params(self, params, allowed):
        """-> (code, text) of the first problem, or None."""
        for p in params:
            k, _, v = p.partition("=")
            k = k.upper()
            if not self.esmtp:
                return 555, "5.5.4 Parameters need EHLO"
            if k not in allowed:
                return 555, f"5.5.4 Unsupported parameter {k}"
            ok = allowed[k](v)
            if ok is not True:
                return ok
        return None

    def cmd_MAIL(self, arg):
        o = self.o
        self.st.add("mail")
        self.info["mail"] += 1
        self.mail_count += 1
        if self.info["setup_turns"] is None:
            self.info["setup_turns"] = self.info["turns"]
        n = self.sink.fault("421-after")
        if n is not None and self.info["messages"] >= n:
            self.sink.fire("421-after")
            self.reply(421, "4.3.0 Fault injected: closing connection")
            self.close("fault 421-after")
            return
        if o.limits and "MAILMAX" in o.limits and self.mail_count > o.limits["MAILMAX"]:
            self.reply(421, "4.7.0 Too many transactions on this connection (MAILMAX)")
            self.close("mailmax")
            return
        if self.ehlo_name is None:
            self.reply(503, "5.5.1 Send EHLO first")
            return
        if self.mail_from is not None:
            self.reply(503, "5.5.1 Nested MAIL command")
            return
        m = re.fullmatch(rb"(?i)FROM:\s*<([^<>]*)>(.*)", arg)
        if not m:
            self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
            return
        addr = text(m.group(1))
        params = text(m.group(2)).split()

        def size_ok(v):
            if not v.isdigit():
                return 501, "5.5.4 Bad SIZE parameter"
            if o.size and int(v) > o.size:
                return 552, "5.3.4 Message size exceeds fixed maximum message size"
            return True

        def body_ok(v):
            v = v.upper()
            if v == "7BIT" or (v == "8BITMIME" and not o.no_8bitmime):
                return True
            return 555, f"5.5.4 Unsupported BODY={v}"

        def flag_ok(v):
            return True if not v else (501, "5.5.4 SMTPUTF8 takes no value")

        def any_ok(v):
            return True

        allowed = {"BODY": body_ok}
        if not o.no_size:
            allowed["SIZE"] = size_ok
        if not o.no_smtputf8:
            allowed["SMTPUTF8"] = flag_ok
        if o.dsn:
            allowed["RET"] = any_ok
            allowed["ENVID"] = any_ok
        err = self.check_params(params, allowed)
        if err:
            self.reply(*err)
            return
        utf8 = any(p.upper() == "SMTPUTF8" for p in params)
        if not utf8 and not m.group(1).isascii():
            self.reply(553, "5.6.7 Non-ASCII address needs SMTPUTF8")
            return
        if o.reject_mail and o.reject_mail.search(addr):
            self.reply(550, "5.7.1 Sender rejected")
            return
        self.mail_from = addr
        self.mail_params = params
        self.smtputf8 = utf8
        self.tx_no += 1
        self.reply(250, "2.1.0 Ok")

    def cmd_RCPT(self, arg):
        o = self.o
        ok = False
        try:
            if self.mail_from is None:
                self.reply(503, "5.5.1 Need MAIL first")
                return
            m = re.fullmatch(rb"(?i)TO:\s*<([^<>]+)>(.*)", arg)
            if not m:
                self.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
                return
            addr = text(m.group(1))
            params = text(m.group(2)).split()
            allowed = {"NOTIFY": lambda v: True, "ORCPT": lambda v: True} if o.dsn else {}
            err = self.check_params(params, allowed)
            if err:
                self.reply(*err)
                return
            if not self.smtputf8 and not m.group(1).isascii():
                self.reply(553, "5.6.7 Non-ASCII address needs SMTPUTF8")
                return
            if o.limits and "RCPTMAX" in o.limits and len(self.rcpts) >= o.limits["RCPTMAX"]:
                self.reply(452, "4.5.3 Too many recipients")
                return
            if o.reject_rcpt and o.reject_rcpt.search(addr):
                self.reply(550, "5.1.1 Recipient rejected")
                return
            if o.tempfail_rcpt and o.tempfail_rcpt.search(addr):
                self.reply(450, "4.2.0 Recipient temporarily unavailable")
                return
            self.rcpts.append((addr, params))
            self.reply(250, "2.1.5 Ok")
            ok = True
        finally:
            self.st.add("rcpt_accepted" if ok else "rcpt_rejected")
            if ok:
                self.info["rcpt_accepted"] += 1

    def cmd_DATA(self, arg):
        self.st.add("data_cmds")
        self.info["data_cmds"] += 1
        if arg:
            self.reply(501, "5.5.4 DATA takes no argument")
        elif self.mail_from is None:
            self.reply(503, "5.5.1 Need MAIL first")
        elif self.method == "BDAT":
            self.reply(503, "5.5.1 DATA after BDAT")
        elif not self.rcpts:
            self.reply(554, "5.5.1 No valid recipients")
        else:
            self.reply(354, "End data with <CR><LF>.<CR><LF>")
            self.method = "DATA"
            self.mode = "data"
            self.at_line_start = True
            self.content_no += 1

    def cmd_BDAT(self, arg):
        self.st.add("bdat_cmds")
        self.info["bdat_cmds"] += 1
        if self.o.no_chunking:
            self.reply(502, "5.5.1 CHUNKING not offered")
            return
        m = re.fullmatch(rb"(?i)(\d{1,15})(\s+LAST)?", arg)
        if not m:
            # cannot know how many bytes follow: the stream is lost
            self.reply(501, "5.5.4 Syntax: BDAT size [LAST]")
            self.close("bad BDAT")
            return
        self.bdat_size = self.bdat_left = int(m.group(1))
        self.bdat_last = m.group(2) is not None
        self.bdat_fail = None
        self.mode = "bdat"
        if self.mail_from is None:
            self.bdat_fail = (503, "5.5.1 Need MAIL first")
        elif self.method == "DATA":
            self.bdat_fail = (503, "5.5.1 BDAT after DATA")
        elif not self.rcpts:
            self.bdat_fail = (554, "5.5.1 No valid recipients")
        elif self.tx_error:
            self.bdat_fail = self.tx_error
        elif self.method is None:
            self.method = "BDAT"
            self.content_no += 1

    def cmd_RSET(self, arg):
        self.st.add("rset")
        self.reset_tx()
        self.reply(250, "2.0.0 Ok")

    def cmd_NOOP(self, arg):
        self.st.add("noop")
        self.reply(250, "2.0.0 Ok")

    def cmd_QUIT(self, arg):
        self.st.add("quit")
        self.reply(221, "2.0.0 Bye")
        self.close("quit")

    def cmd_VRFY(self, arg):
        self.reply(252, "2.5.0 Cannot VRFY user, but will accept message")

    def cmd_EXPN(self, arg):
        self.reply(502, "5.5.1 EXPN not implemented")

    def cmd_HELP(self, arg):
        self.reply(214, "2.0.0 smtp_sink: see its source")

    def cmd_STARTTLS(self, arg):
        if self.sink.ssl_ctx is None or self.o.no_starttls:
            self.reply(502, "5.5.1 STARTTLS not offered")
            return
        if self.sslobj is not None:
            self.reply(503, "5.5.1 TLS already active")
            return
        if arg:
            self.reply(501, "5.5.4 STARTTLS takes no argument")
            return
        self.reply(220, "2.0.0 Ready to start TLS")
        if self.sink.fault("early-tls-reply"):
            self.sink.fire("early-tls-reply")
            self.out.append(b"250 injected\r\n")
        if self.pending() > 0:
            # plaintext sent after STARTTLS: discard it (CVE-2011-0411 class)
            if self.violation():
                return
        self.pos = len(self.buf)
        self.flush()                 # plaintext, before the handshake
        self.tls_in = ssl.MemoryBIO()
        self.tls_out = ssl.MemoryBIO()
        self.sslobj = self.sink.ssl_ctx.wrap_bio(self.tls_in, self.tls_out, server_side=True)
        self.handshaking = True
        self.ehlo_name = None
        self.esmtp = False
        self.reset_tx()

    # ---- message content

    def drop_in_data(self):
        n = self.sink.fault("drop-in-data")
        if n is not None and self.content_no == n + 1:
            self.sink.fire("drop-in-data")
            self.close("fault drop-in-data")
            return True
        return False

    def data_content(self):
        """Consume DATA content; True when the end was reached."""
        if self.pending() > 0 and self.drop_in_data():
            return False
        buf = self.buf
        pos = self.pos
        end = len(buf)
        done = False
        while pos < end:
            if self.at_line_start:
                rest = end - pos
                if buf[pos] == 0x2E:          # "."
                    if rest < 3:
                        if buf[pos:end] == b".\r\n"[:rest]:
                            break           # need more to decide
                    if buf[pos:pos + 3] == b".\r\n":
                        pos += 3
                        done = True
                        break
                    pos += 1                # dot-unstuffing
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                stop = end - 1 if buf[end - 1] == 0x0D else end
                self.content += buf[pos:stop]
                self.at_line_start = False
                pos = stop
                break
            self.content += buf[pos:nl + 2]
            pos = nl + 2
            self.at_line_start = True
        self.pos = pos
        if not done:
            return False
        self.mode = "cmd"
        self.end_of_message()
        if self.o.no_pipelining and not self.closing and self.pending() > 0:
            if self.violation():
                return False
        return not self.closing

    def bdat_content(self):
        if not self.bdat_fail and self.drop_in_data():
            return False
        take = min(self.bdat_left, self.pending())
        if not self.bdat_fail:
            self.content += self.buf[self.pos:self.pos + take]
        self.pos += take
        self.bdat_left -= take
        if self.bdat_left:
            return False
        self.mode = "cmd"
        if self.bdat_fail:
            self.reply(*self.bdat_fail)
            if self.bdat_last and self.mail_from is not None:
                self.reset_tx()
        else:
            self.bdat_chunks += 1
            if self.o.size and len(self.content) > self.o.size and not self.bdat_last:
                self.tx_error = (552, "5.3.4 Message size exceeds fixed maximum message size")
                self.content = bytearray()
                self.reply(*self.tx_error)
            elif self.bdat_last:
                self.end_of_message()
            else:
                self.reply(250, f"2.0.0 {self.bdat_size} octets received")
        if self.o.no_pipelining and not self.closing and self.pending() > 0:
            if self.violation():
                return False
        return not self.closing

    def end_of_message(self):
        n = self.content_no
        k = self.sink.fault("drop-after-dot")
        if k is not None and n == k + 1:
            self.sink.fire("drop-after-dot")
            self.reset_tx()
            self.close("fault drop-after-dot")
            return
        k = self.sink.fault("tempfail-data")
        if k is not None and n == k + 1:
            self.sink.fire("tempfail-data")
            self.st.add("messages_rejected")
            self.reply(451, "4.3.0 Fault injected: try again later")
            self.reset_tx()
            return
        content = bytes(self.content)
        if self.o.size and len(content) > self.o.size:
            self.st.add("messages_rejected")
            self.reply(552, "5.3.4 Message size exceeds fixed maximum message size")
            self.reset_tx()
            return
        mid = self.sink.store(self, content)
        self.info["messages"] += 1
        self.st.add("messages")
        self.reply(250, f"2.0.0 Ok: queued as {mid}")
        self.reset_tx()


# --------------------------------------------------------------------------
# main


async def amain(opts):
    sink = Sink(opts)
    loop = asyncio.get_running_loop()
    if opts.maildir:
        os.makedirs(opts.maildir, exist_ok=True)
    sink.setup_tls()
    servers, bound = [], []
    for host, port in opts.listen:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        srv = await loop.create_server(lambda: Conn(sink), host, port, family=fam,
                                       reuse_address=True, backlog=512)
        servers.append(srv)
        bound.append([host, srv.sockets[0].getsockname()[1]])
    sink.stats.extra["listen"] = bound
    sink.stats.extra["pid"] = os.getpid()
    sink.stats.write(force=True)
    if opts.ready_file:
        atomic_write(opts.ready_file, json.dumps(
            {"pid": os.getpid(), "listen": bound, "cert": sink.cert, "key": sink.key}).encode())
    log("listening on " + ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bound))

    stop, why = stop_event(loop, opts)
    await stop.wait()
    for s in servers:
        s.close()
    for c in list(sink.active):
        if c.info["close_reason"] is None:
            c.info["close_reason"] = f"sink stopped ({why[0]})"
        c.closing = True
        c.transport.abort()
    for _ in range(20):
        if not sink.active:
            break
        await asyncio.sleep(0.01)
    sink.stats.extra["stopped"] = why[0]
    sink.stats.write(force=True)
    if sink.tmpdir:
        shutil.rmtree(sink.tmpdir, ignore_errors=True)
    log(f"stopped ({why[0]})")


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if bool(opts.cert) != bool(opts.key):
        build_parser().error("--cert and --key go together")
    if opts.size < 0:
        build_parser().error("--size must be >= 0")
    asyncio.run(amain(opts))
    return 0


# --------------------------------------------------------------------------
# pytest API


def options_to_args(options):
    args = []
    for k, v in options.items():
        name = k.replace("_", "-").replace("eightbitmime", "8bitmime")
        if v is None:
            continue
        if v is True:
            args.append("--" + name)
        elif v is False:
            args.append("--no-" + name)
        elif isinstance(v, (list, tuple)):
            for x in v:
                args += ["--" + name, str(x)]
        else:
            args += ["--" + name, str(v)]
    return args


class SinkProcess(ToolProcess):
    """Runs smtp_sink.py as a subprocess; a context manager.

    SinkProcess(port=0, host="127.0.0.1", listen6=None, workdir=None,
                maildir=True, **options)
    port 0 picks a free port (read it from .port). listen6: also listen on
    [::1] (port number, or 0 for a free one). options: see options_to_args.
    """

    SCRIPT = os.path.abspath(__file__)

    def __init__(self, port=0, host="127.0.0.1", listen6=None, workdir=None,
                 maildir=True, **options):
        self.init_dir(workdir, "smtp-sink-", "stats.json", "ready.json", "sink.log")
        self.maildir = os.path.join(self.dir, "maildir") if maildir is True else (maildir or None)
        options.setdefault("max_runtime", 3600)
        self.args = self.base_args(self.SCRIPT) + ["--listen", f"{host}:{port}"]
        if listen6 is not None:
            self.args += ["--listen", f"[::1]:{listen6}"]
        if self.maildir:
            self.args += ["--maildir", self.maildir]
        self.args += options_to_args(options)
        self.ready = None

    def start(self):
        self.clear_files()
        for attempt in (1, 2):
            try:
                self.ready = self.spawn()
                break
            except RuntimeError:
                # killed by a signal before it was ready (not by its own error,
                # which exits >= 0): something else on the machine; try once more
                if attempt == 2 or (self.proc.returncode or 0) >= 0:
                    raise
        self.listen = [tuple(x) for x in self.ready["listen"]]
        self.host, self.port = self.listen[0]
        self.address = (self.host, self.port)
        self.port6 = next((p for h, p in self.listen if ":" in h), None)
        self.cert = self.ready.get("cert")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_stats(self, pred, timeout=5.0):
        """Poll the stats until pred(stats) is true; returns them (or raises)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"stats condition not met in {timeout}s: "
                                   f"{json.dumps({k: v for k, v in s.items() if k != 'per_connection'})}")
            time.sleep(0.01)

    def wait_closed(self, n=None, timeout=5.0):
        """Wait until n connections (default: all opened so far) are closed."""
        def done(s):
            return s["connections_closed"] >= (s["connections"] if n is None else n)
        return self.wait_stats(done, timeout)

    def messages(self):
        """Accepted messages, in order: env dicts with "content" (bytes) added."""
        if not self.maildir or not os.path.isdir(self.maildir):
            return []
        ids = sorted(int(f[:-4]) for f in os.listdir(self.maildir)
                     if f.endswith(".env") and f[:-4].isdigit())
        out = []
        for i in ids:
            with open(os.path.join(self.maildir, f"{i}.env")) as f:
                env = json.load(f)
            with open(os.path.join(self.maildir, f"{i}.eml"), "rb") as f:
                env["content"] = f.read()
            out.append(env)
        return out


if __name__ == "__main__":
    sys.exit(main())
