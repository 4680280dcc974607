"""peer_script.py - a scripted receiving SMTP server for fault tests.

A small SMTP server (ESMTP, PIPELINING, CHUNKING, STARTTLS, 8BITMIME,
ENHANCEDSTATUSCODES) that runs in threads of the test process, on
127.0.0.1 only, and misbehaves exactly where a test tells it to. Petrel
delivers to it; tests/integration/test_peer_faults.py uses it.

It behaves like a pipelining server: it reads what the client sent,
answers every complete command in its input, and writes the replies of one
batch with one send when its input runs dry. An accepted message is stored
(in memory) before its reply is written, and that reply names the
message's number: "250 2.0.0 Ok: queued as N", the format
tests/tools/smtp_sink.py uses, so test_delivery.check_exactly_once can
check that every "=>" line of Petrel's log quotes the end-of-data reply of
that very message. A message whose end of data gets any other reply is not
stored.

Faults are Rules, per connection (1-based, in accept order):

    PeerScript(rules={1: [Rule("MAIL", post=b"250 2.0.0 extra\\r\\n")]})

A Rule fires at the n-th occurrence of its event on the connection (with
rcpt, a regex: the n-th whose address matches - the RCPT's address, the
MAIL's sender, the accepted recipients for DATA and END). Events:
"greeting", "EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA" (the reply
to the DATA command), "END" (the reply to the end of data: "." or BDAT
LAST), "RSET", "QUIT". When it fires:

    pre     bytes written before the reply
    reply   replaces the normal reply (None: the normal reply, which for END
            stores the message; b"": no reply at all). A STARTTLS whose reply
            is replaced does not start TLS; a DATA whose reply is replaced
            reads no content
    post    bytes written after the reply; DUP: the normal reply again
    gap     seconds between the reply and `post`: the reply is written
            first, `post` is written `gap` seconds later (the client has
            acted on the reply by then)
    wait    seconds to wait, after writing what is pending, before the
            reply (the client has acted on what it got by then)
    then    None: go on. "close": close the TCP connection (FIN; over TLS
            without close_notify). "rst": close with RST (SO_LINGER 0).
            "stall": never write again, read and discard until the client
            closes. "linger": read and record (Session.after) until the
            client closes or `delay` passes, then close. "dribble": write
            `reply` one byte every `delay` seconds (instead of at once)
            until the client closes (Session.client_closed) or the
            connection's time is up
    delay   seconds to wait, after the batch is written, before `then`
    poison  from now on this connection stores nothing: every end of data
            gets "451 4.3.0" (so a reply the client pairs with the wrong
            command can never make a lost message look delivered)

Server options: chunking, pipelining, starttls (advertised or not),
trickle (seconds between single-byte sends: every reply split at every
byte), reply_gap (write each reply on its own and pause this long after
it, instead of one write per batch), reject_rcpt (regex: RCPT answered
550 5.1.1), drop_after_dot (after the reply to DATA's final ".", discard
what the client sent behind it, as chasquid 1.11 does: commands pipelined
after the end of data are lost and never answered).

Session.plain_after_starttls (and PeerScript.errors_client) records a
client that sent anything but a TLS handshake record after our 220 to
STARTTLS.

Everything is bounded: sockets poll with 0.2 s timeouts, each connection
lives at most max_conn_time seconds, at most max_conns connections are
served, and stop() joins every thread with a timeout.
"""

import atexit
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HOSTNAME = "peer.petrel.test"
DUP = object()          # Rule.post: the normal reply once more
POLL = 0.2              # socket timeout for reads (stop flag polling)
MAX_LINE = 8192         # a command line longer than this ends the session
RX_KEEP = 1 << 20       # bytes of each direction kept per session

_cert_lock = threading.Lock()
_cert = {}


def make_cert():
    """A self-signed EC certificate and key (paths), made once per process."""
    with _cert_lock:
        if not _cert:
            d = Path(tempfile.mkdtemp(prefix="peer-script-tls-"))
            atexit.register(shutil.rmtree, d, True)
            cert, key = d / "cert.pem", d / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                 "-out", str(cert), "-days", "2", "-subj", f"/CN={HOSTNAME}",
                 "-addext", f"subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1"],
                check=True, timeout=30, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _cert.update(cert=str(cert), key=str(key), dir=d)
        return _cert["cert"], _cert["key"]


@dataclass
class Rule:
    on: str
    n: int = 1
    rcpt: str = None
    pre: bytes = b""
    reply: bytes = None
    post: object = b""
    gap: float = 0.0
    wait: float = 0.0
    then: str = None
    delay: float = 0.0
    poison: bool = False

    def __post_init__(self):
        assert self.on in ("greeting", "EHLO", "HELO", "STARTTLS", "MAIL", "RCPT",
                           "DATA", "END", "RSET", "QUIT"), self.on
        assert self.then in (None, "close", "rst", "stall", "linger", "dribble"), self.then


class _Stop(Exception):
    """End of the session (client gone, fault action done, deadline)."""


class Session:
    """One connection. Attributes read by tests: index, tls, rx, tx (bytes
    received / sent, decrypted, first RX_KEEP of each), fired (rules that
    fired), after (bytes received during a "linger"), client_closed (the
    client closed the connection while we lingered, stalled or dribbled),
    plain_verbs (the commands received before TLS), end (why the session
    ended)."""

    def __init__(self, peer, sock, index):
        self.peer = peer
        self.sock = sock
        self.index = index
        self.tls = False
        self.buf = b""
        self.out = []
        self.rx = bytearray()
        self.tx = bytearray()
        self.counts = {}
        self.rules = list(peer.rules_for(index))
        self.fired = []
        self.poisoned = False
        self.after = b""
        self.plain_after_starttls = None
        self.plain_verbs = []
        self.client_closed = False
        self.end = None
        self.deadline = time.monotonic() + peer.max_conn_time
        self.tx_reset()
        sock.settimeout(POLL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- transport ----------------------------------------------------------

    def _check_time(self):
        if self.peer.stopping.is_set():
            raise _Stop("server stopping")
        if time.monotonic() > self.deadline:
            raise _Stop("connection time limit")

    def recv_some(self, until=None):
        """Bytes from the client; b"" at EOF or error; None if `until`
        (monotonic time) passed first."""
        while True:
            self._check_time()
            if until is not None and time.monotonic() > until:
                return None
            try:
                d = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError):
                return b""
            if len(self.rx) < RX_KEEP:
                self.rx += d[:RX_KEEP - len(self.rx)]
            return d

    def fill(self):
        """Write pending replies (the input ran dry), then read more."""
        self.flush()
        d = self.recv_some()
        if not d:
            raise _Stop("client closed")
        self.buf += d

    def flush(self):
        if not self.out:
            return
        data = b"".join(self.out)
        self.out = []
        if len(self.tx) < RX_KEEP:
            self.tx += data[:RX_KEEP - len(self.tx)]
        self.sock.settimeout(10)
        try:
            if self.peer.trickle:
                for i in range(len(data)):
                    self._check_time()
                    self.sock.sendall(data[i:i + 1])
                    time.sleep(self.peer.trickle)
            else:
                self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            raise _Stop("client gone while writing")
        finally:
            try:
                self.sock.settimeout(POLL)
            except OSError:
                pass

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line.rstrip(b"\r\n")
            if len(self.buf) > MAX_LINE:
                raise _Stop("command line too long")
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def close(self, rst=False):
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            # Python's SSLSocket.close() sends no close_notify: over TLS
            # this is the "closed without close_notify" case.
            self.sock.close()
        except OSError:
            pass

    # -- replies and faults --------------------------------------------------

    def reply(self, event, normal, addrs=()):
        """Queue the reply to `event`, applying a Rule. normal: bytes, or a
        callable giving them (called only if the normal reply is used; for
        END it stores the message). addrs: the addresses a Rule's `rcpt`
        is matched against. Returns True if the normal reply was used
        (and, for END, the message stored)."""
        rule = None
        for i, r in enumerate(self.rules):
            if r.on != event or (r.rcpt is not None and
                                 not any(re.search(r.rcpt, a) for a in addrs)):
                continue
            k = self.counts[i] = self.counts.get(i, 0) + 1
            if k == r.n and rule is None:
                rule = r
        if event == "END" and self.poisoned and rule is None:
            self.out.append(b"451 4.3.0 Not stored: this connection is desynchronised\r\n")
            return False
        if rule is None:
            self.out.append(normal() if callable(normal) else normal)
            self.after_reply()
            return True
        self.fired.append(rule)
        self.peer.note_fired(self, rule)
        used = rule.reply is None
        if rule.wait:
            self.flush()
            self.pause(rule.wait)
        if rule.pre:
            self.out.append(rule.pre)
        if used:
            text = normal() if callable(normal) else normal
            self.out.append(text)
        elif rule.then != "dribble":
            self.out.append(rule.reply)
        if rule.post is not DUP and rule.post and rule.gap:
            self.flush()
            self.pause(rule.gap)
        if rule.post is DUP:
            self.out.append(text if used else (normal() if callable(normal) else normal))
        elif rule.post:
            self.out.append(rule.post)
        if rule.poison:
            self.poisoned = True
        if rule.then is not None:
            self.flush()
            if rule.then != "linger":
                self.pause(rule.delay)
            self._then(rule)
        self.after_reply()
        return used

    def after_reply(self):
        """A server that writes each reply on its own (reply_gap > 0)."""
        if self.peer.reply_gap:
            self.flush()
            self.pause(self.peer.reply_gap)

    def pause(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_time()
            time.sleep(0.02)

    def _then(self, rule):
        if rule.then == "dribble":
            self.sock.settimeout(0.01)
            for b in rule.reply:
                try:
                    self.sock.sendall(bytes([b]))
                    if self.sock.recv(4096) == b"":
                        break
                except (socket.timeout, ssl.SSLWantReadError):
                    pass
                except (OSError, ssl.SSLError):
                    break
                self.pause(rule.delay)
            else:
                raise _Stop("fault: dribble, all written")
            self.client_closed = True
            raise _Stop("fault: dribble, client closed")
        if rule.then in ("close", "rst"):
            self.close(rst=rule.then == "rst")
            raise _Stop(f"fault: {rule.then}")
        if rule.then == "stall":
            while True:
                d = self.recv_some()
                if not d:
                    self.client_closed = True
                    raise _Stop("fault: stall, client closed")
        if rule.then == "linger":
            until = time.monotonic() + (rule.delay or 1.0)
            while True:
                d = self.recv_some(until)
                if d is None:
                    raise _Stop("fault: linger over")
                if not d:
                    self.client_closed = True
                    raise _Stop("fault: linger, client closed")
                self.after += d

    # -- the SMTP dialogue ----------------------------------------------------

    def tx_reset(self):
        self.mail_from = None
        self.rcpts = []
        self.chunks = []

    def ehlo_text(self):
        kws = ["8BITMIME", "SIZE 50000000", "ENHANCEDSTATUSCODES"]
        if self.peer.pipelining:
            kws.append("PIPELINING")
        if self.peer.chunking:
            kws.append("CHUNKING")
        if self.peer.starttls and not self.tls:
            kws.append("STARTTLS")
        lines = [HOSTNAME] + kws
        return "".join(f"250{'-' if i < len(lines) - 1 else ' '}{ln}\r\n"
                       for i, ln in enumerate(lines)).encode()

    def check_handshake_start(self):
        """The client's first bytes after our 220 must be a TLS handshake
        record (0x16). Anything else (an SMTP command sent in plaintext)
        is recorded in .plain_after_starttls and ends the session."""
        until = time.monotonic() + 5
        while time.monotonic() < until:
            self._check_time()
            try:
                d = self.sock.recv(16, socket.MSG_PEEK)
            except socket.timeout:
                continue
            except OSError:
                raise _Stop("client gone after STARTTLS")
            if not d:
                raise _Stop("client closed after STARTTLS")
            if d[0] != 0x16:
                self.plain_after_starttls = d
                self.peer.errors_client.append(
                    f"conn {self.index}: plaintext after 220 to STARTTLS: {d!r}")
                raise _Stop("plaintext instead of a TLS handshake")
            return
        raise _Stop("no TLS handshake after STARTTLS")

    def store(self, method):
        def do():
            n = self.peer.store({
                "mail_from": self.mail_from, "rcpts": list(self.rcpts),
                "content": b"".join(self.chunks), "connection": self.index,
                "method": method, "tls": self.tls})
            return f"250 2.0.0 Ok: queued as {n}\r\n".encode()
        return do

    def serve(self):
        self.reply("greeting", f"220 {HOSTNAME} ESMTP scripted peer\r\n".encode())
        for _ in range(100000):
            line = self.read_line()
            verb = line.split(b" ", 1)[0].upper()
            if not self.tls:
                self.plain_verbs.append(verb[:16])
            arg = line[len(verb) + 1:] if b" " in line else b""
            if verb == b"EHLO":
                self.tx_reset()
                self.reply("EHLO", self.ehlo_text())
            elif verb == b"HELO":
                self.tx_reset()
                self.reply("HELO", f"250 {HOSTNAME}\r\n".encode())
            elif verb == b"STARTTLS" and self.peer.starttls and not self.tls:
                if self.reply("STARTTLS", b"220 2.0.0 Ready to start TLS\r\n"):
                    self.flush()
                    self.buf = b""   # plaintext after STARTTLS is never a command
                    self.check_handshake_start()
                    try:
                        self.sock.settimeout(10)
                        self.sock = self.peer.ssl_ctx.wrap_socket(self.sock, server_side=True)
                        self.sock.settimeout(POLL)
                    except (OSError, ssl.SSLError) as e:
                        raise _Stop(f"TLS handshake failed: {e}")
                    self.tls = True
                    self.tx_reset()
            elif verb == b"MAIL":
                m = re.match(rb"(?i)FROM:<([^>]*)>", arg)
                if self.mail_from is not None:
                    self.reply("MAIL", b"503 5.5.1 Nested MAIL command\r\n")
                elif not m:
                    self.reply("MAIL", b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
                else:
                    self.mail_from = m.group(1).decode("utf-8", "replace")
                    self.reply("MAIL", b"250 2.1.0 Ok\r\n", [self.mail_from])
            elif verb == b"RCPT":
                m = re.match(rb"(?i)TO:<([^>]*)>", arg)
                if self.mail_from is None:
                    self.reply("RCPT", b"503 5.5.1 Need MAIL command\r\n")
                elif not m:
                    self.reply("RCPT", b"501 5.5.4 Syntax: RCPT TO:<address>\r\n")
                else:
                    a = m.group(1).decode("utf-8", "replace")
                    if self.peer.reject_rcpt and re.search(self.peer.reject_rcpt, a):
                        self.reply("RCPT", b"550 5.1.1 No such user\r\n", [a])
                    else:
                        self.rcpts.append(a)
                        self.reply("RCPT", b"250 2.1.5 Ok\r\n", [a])
            elif verb == b"DATA":
                if self.mail_from is None:
                    self.reply("DATA", b"503 5.5.1 Need MAIL command\r\n")
                elif not self.rcpts:
                    self.reply("DATA", b"554 5.5.1 No valid recipients\r\n")
                elif self.reply("DATA", b"354 End data with <CR><LF>.<CR><LF>\r\n",
                                self.rcpts):
                    self.read_data()
                    self.reply("END", self.store("DATA"), self.rcpts)
                    if self.peer.drop_after_dot:
                        self.flush()
                        self.buf = b""  # chasquid 1.11: input after "." lost
                    self.tx_reset()
            elif verb == b"BDAT" and self.peer.chunking:
                m = re.fullmatch(rb"(\d{1,9})( +LAST)?", arg.strip(), re.I)
                if not m:
                    self.out.append(b"501 5.5.4 Syntax: BDAT size [LAST]\r\n")
                    continue
                data = self.read_exact(int(m.group(1)))
                last = bool(m.group(2))
                if self.mail_from is None:
                    self.out.append(b"503 5.5.1 Need MAIL command\r\n")
                elif not self.rcpts:
                    self.out.append(b"554 5.5.1 No valid recipients\r\n")
                elif not last:
                    self.chunks.append(data)
                    self.out.append(f"250 2.0.0 {len(data)} octets received\r\n".encode())
                else:
                    self.chunks.append(data)
                    self.reply("END", self.store("BDAT"), self.rcpts)
                if last or self.mail_from is None or not self.rcpts:
                    self.tx_reset()
            elif verb == b"RSET":
                self.tx_reset()
                self.reply("RSET", b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                self.out.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                self.reply("QUIT", b"221 2.0.0 Bye\r\n")
                self.flush()
                self.close()
                raise _Stop("quit")
            else:
                self.out.append(b"502 5.5.2 Command not recognised\r\n")
        raise _Stop("command limit")

    def read_data(self):
        lines = []
        for _ in range(10_000_000):
            i = self.buf.find(b"\r\n")
            if i < 0:
                if len(self.buf) > MAX_LINE * 8:
                    raise _Stop("content line too long")
                self.fill()
                continue
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            if line == b".":
                self.chunks = [b"".join(lines)]
                return
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line + b"\r\n")
        raise _Stop("content too long")

    def run(self):
        try:
            self.serve()
        except _Stop as e:
            self.end = str(e)
        except Exception as e:  # a bug here must show in the test output
            self.end = f"server error: {e!r}"
            self.peer.errors.append(f"conn {self.index}: {e!r}")
        finally:
            self.close()


class PeerScript:
    """The server: PeerScript(rules={1: [Rule(...)]}, ...).start();
    .port; .messages() (dicts like smtp_sink's: id, mail_from, rcpts,
    content, connection, method, tls); .sessions; .fired (list of
    (connection index, Rule)); .stop()."""

    def __init__(self, rules=None, chunking=True, pipelining=True, starttls=True,
                 trickle=0.0, reply_gap=0.0, reject_rcpt=None, max_conns=200,
                 max_conn_time=40.0, drop_after_dot=False):
        self.rules = rules or {}
        self.drop_after_dot = drop_after_dot
        self.chunking = chunking
        self.pipelining = pipelining
        self.starttls = starttls
        self.trickle = trickle
        self.reply_gap = reply_gap
        self.reject_rcpt = reject_rcpt
        self.max_conns = max_conns
        self.max_conn_time = max_conn_time
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._messages = []
        self.sessions = []
        self.fired = []
        self.errors = []          # bugs of this server
        self.errors_client = []   # protocol violations by the client
        self.threads = []
        self.ssl_ctx = None
        self.lsock = None
        self.port = None

    def rules_for(self, index):
        r = self.rules(index) if callable(self.rules) else self.rules.get(index, [])
        return r or []

    def note_fired(self, session, rule):
        with self.lock:
            self.fired.append((session.index, rule))

    def store(self, env):
        with self.lock:
            n = len(self._messages) + 1
            env["id"] = n
            self._messages.append(env)
            return n

    def messages(self):
        with self.lock:
            return [dict(m) for m in self._messages]

    def start(self):
        if self.starttls:
            cert, key = make_cert()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.ssl_ctx = ctx
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.settimeout(POLL)
        self.lsock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept, name="peer-accept", daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _accept(self):
        while not self.stopping.is_set() and len(self.sessions) < self.max_conns:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sess = Session(self, c, len(self.sessions) + 1)
            self.sessions.append(sess)
            t = threading.Thread(target=sess.run, name=f"peer-conn-{sess.index}",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stopping.set()
        for t in list(self.threads):
            t.join(5)
        try:
            self.lsock.close()
        except OSError:
            pass

    def describe(self):
        """Each session's transcript (for a failing test's output)."""
        out = []
        for s in self.sessions:
            out.append(f"--- connection {s.index} (tls={s.tls}, end={s.end}, "
                       f"fired={[(r.on, r.n) for r in s.fired]}) ---")
            out.append("C: " + repr(bytes(s.rx[:1500])))
            out.append("S: " + repr(bytes(s.tx[:1500])))
        if self.errors:
            out.append("server errors: " + "; ".join(self.errors))
        if self.errors_client:
            out.append("client violations: " + "; ".join(self.errors_client))
        return "\n".join(out)
