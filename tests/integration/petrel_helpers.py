"""Helpers for Petrel's integration tests: a daemon handle, a raw SMTP client,
a spool file reader and a parser for `petrel queue` output.

Everything here is bounded in time: sockets have timeouts, subprocesses are
waited for with timeouts, readiness polling gives up after 10 s.
"""

import atexit
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILT_BIN = Path(os.environ.get("PETREL_BIN", REPO / "build" / "petrel"))


def _snapshot_binary(src):
    """Copy the daemon binary once per test run, so that a rebuild while the
    suite runs neither breaks nor mixes versions. Retries while the linker
    may be writing it; falls back to the original path."""
    if not src.exists():
        return src
    d = Path(tempfile.mkdtemp(prefix="petrel-bin-"))
    atexit.register(shutil.rmtree, d, True)
    dst = d / "petrel"
    for _ in range(20):
        try:
            shutil.copy2(src, dst)
            r = subprocess.run([str(dst), "--version"], capture_output=True, timeout=10)
            if r.returncode == 0:
                return dst
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.5)
    return src


BIN = _snapshot_binary(BUILT_BIN)
HOSTNAME = "mx.petrel.example"
GREETING = "220 mx.petrel.example ESMTP Petrel"
SOCK_TIMEOUT = 5.0
LOCAL_DOMAIN = "local.example"

LOG_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
QUEUED = re.compile(r"^Ok: queued as ([A-Za-z0-9-]+)$")


# --------------------------------------------------------------------------
# ports


def free_port(family=socket.AF_INET):
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# replies


class ProtocolError(AssertionError):
    """The server sent something that is not a well-formed SMTP reply."""


class ConnectionClosed(AssertionError):
    """The server closed the connection while a reply was expected."""


@dataclass
class Reply:
    code: int
    lines: list  # text of each line, after "NNN-" / "NNN "

    @property
    def text(self):
        return self.lines[0] if self.lines else ""

    @property
    def enh(self):
        """Enhanced status code of the first line ("2.1.0"), or None."""
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)", self.text)
        return m.group(1) if m else None

    @property
    def rest(self):
        """First line's text after the enhanced status code."""
        t = self.text
        e = self.enh
        return t[len(e):].lstrip(" ") if e else t

    def raw(self):
        out = []
        for i, ln in enumerate(self.lines):
            sep = " " if i == len(self.lines) - 1 else "-"
            out.append(f"{self.code}{sep}{ln}")
        return "\n".join(out)

    def __str__(self):
        return self.raw()

    def queue_id(self):
        m = QUEUED.match(self.rest)
        return m.group(1) if m else None


def expect(reply, code, enh=None, text=None):
    """Assert a reply's code, enhanced code and (optionally) exact text."""
    assert isinstance(reply, Reply), f"expected a reply, got {reply!r}"
    assert reply.code == code, f"expected {code} {enh or ''}, got:\n{reply}"
    if enh is not None:
        assert reply.enh == enh, f"expected {code} {enh}, got:\n{reply}"
    if text is not None:
        assert reply.rest == text, f"expected text {text!r}, got:\n{reply}"
    return reply


def expect_queued(reply):
    """Assert `250 2.0.0 Ok: queued as <ID>` and return the ID."""
    expect(reply, 250, "2.0.0")
    qid = reply.queue_id()
    assert qid, f"expected 'Ok: queued as <ID>', got:\n{reply}"
    return qid


# --------------------------------------------------------------------------
# raw SMTP client


class SMTPConn:
    """A raw SMTP client on one socket. send() is one write (sendall of one
    buffer), so everything passed in one call reaches the server together."""

    def __init__(self, host="127.0.0.1", port=25, timeout=SOCK_TIMEOUT,
                 family=None):
        if family is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.transcript = []  # ("C"|"S", bytes)
        self.tls = False

    # -- low level --------------------------------------------------------

    def settimeout(self, t):
        self.timeout = t
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append(("C", data[:300]))
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        """Read more bytes into buf. Returns False at EOF."""
        if self.eof:
            return False
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            try:
                d = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                d = b""
            except ssl.SSLEOFError:
                d = b""
        finally:
            if timeout is not None:
                self.sock.settimeout(old)
        if not d:
            self.eof = True
            return False
        self.transcript.append(("S", d[:300]))
        self.buf += d
        return True

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None
                                       else self.timeout)
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(
                    f"timed out waiting for a reply line; have {self.buf[:200]!r}")
            if not self._fill(left):
                raise ConnectionClosed(
                    f"connection closed; unterminated data {self.buf[:200]!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self, timeout=None):
        """Read one (possibly multi-line) reply. Raises ConnectionClosed at
        EOF before any byte of a reply, socket.timeout after the timeout."""
        lines = []
        code = None
        while True:
            raw = self.read_line(timeout)
            try:
                s = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"reply is not UTF-8: {raw!r}")
            m = re.match(r"^([2-5]\d\d)([ -]|$)(.*)$", s)
            if not m:
                raise ProtocolError(f"malformed reply line {s!r}")
            c = int(m.group(1))
            if code is not None and c != code:
                raise ProtocolError(
                    f"reply code changed inside a multi-line reply: {s!r}")
            code = c
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines)

    def read_replies(self, n, timeout=None):
        return [self.read_reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        """Send one command line (CRLF added) and read its reply."""
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.read_reply(timeout)

    def read_all_until_closed(self, timeout=None):
        """Read replies until the server closes the connection. Returns the
        list of replies. Raises socket.timeout if it stays open."""
        replies = []
        while True:
            try:
                replies.append(self.read_reply(timeout))
            except ConnectionClosed:
                if self.buf:
                    raise ProtocolError(f"partial reply before close: {self.buf!r}")
                return replies

    def expect_closed(self, timeout=None):
        """Assert that the server closes the connection with nothing more
        said."""
        try:
            r = self.read_reply(timeout)
        except ConnectionClosed:
            assert not self.buf, f"partial data before close: {self.buf!r}"
            return
        raise AssertionError(f"expected the connection to be closed, got:\n{r}")

    def poll_reply(self, wait):
        """A reply if one arrives within `wait` seconds, else None (also None
        at EOF). Used only to avoid writing into a closed connection, never
        to assert speed."""
        if b"\r\n" not in self.buf:
            try:
                if not self._fill(wait):
                    return None
            except (socket.timeout, TimeoutError):
                return None
        return self.read_reply()

    def marker(self):
        """Prove that no reply is pending: HELP must get the very next reply
        (214), so nothing was answered twice or left unanswered."""
        r = self.cmd("HELP")
        assert r.code == 214, f"expected HELP's 214 as the next reply, got:\n{r}"
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- SMTP ---------------------------------------------------------------

    def greeting(self):
        r = self.read_reply()
        expect(r, 220)
        return r

    def ehlo(self, name="x"):
        r = self.cmd(f"EHLO {name}")
        expect(r, 250)
        return r

    def helo(self, name="x"):
        return expect(self.cmd(f"HELO {name}"), 250)

    def mail(self, sender="sender@example.com", params=""):
        p = (" " + params) if params else ""
        return self.cmd(f"MAIL FROM:<{sender}>{p}")

    def rcpt(self, rcpt="rcpt@local.example"):
        return self.cmd(f"RCPT TO:<{rcpt}>")

    def send_message(self, body, sender="sender@example.com",
                     rcpts=("rcpt@local.example",)):
        """A lock-step MAIL/RCPT/DATA transaction; `body` is already
        dot-stuffed and CRLF-terminated (without the final ".").
        Returns the queue id."""
        expect(self.mail(sender), 250, "2.1.0")
        for r in rcpts:
            expect(self.rcpt(r), 250, "2.1.5")
        expect(self.cmd("DATA"), 354)
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send(body + b".\r\n")
        return expect_queued(self.read_reply())

    def starttls(self, ctx=None):
        expect(self.cmd("STARTTLS"), 220, "2.0.0", "Ready to start TLS")
        self.handshake(ctx)

    def handshake(self, ctx=None):
        assert self.buf == b"", f"plaintext after 220 to STARTTLS: {self.buf!r}"
        if ctx is None:
            ctx = client_tls_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.sock.settimeout(self.timeout)
        self.tls = True


def client_tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ehlo_keywords(reply):
    """EHLO reply lines after the first (the keywords, as sent)."""
    return reply.lines[1:]


# --------------------------------------------------------------------------
# messages


def make_message(subject="test", body="Hello.\r\n", msgid=None,
                 sender="sender@example.com", to="rcpt@local.example",
                 extra_headers=""):
    """An RFC 5322 message with CRLF line endings (not dot-stuffed)."""
    if msgid is None:
        msgid = f"<{time.monotonic_ns()}.{os.getpid()}@test.example>"
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\n{extra_headers}\r\n{body}").encode()


def dot_stuff(data):
    """Dot-stuff CRLF content (a leading '.' on a line gets another)."""
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", data)
    return out


def split_received(content):
    """Split stored content into (Received header field, rest). The first
    header field must be "Received: from ...", possibly folded."""
    assert content.startswith(b"Received: from "), \
        f"stored content does not start with 'Received: from ': {content[:100]!r}"
    pos = 0
    while True:
        eol = content.find(b"\r\n", pos)
        assert eol >= 0, f"unterminated Received header: {content[:300]!r}"
        pos = eol + 2
        if content[pos:pos + 1] not in (b" ", b"\t"):
            break
    return content[:pos], content[pos:]


# --------------------------------------------------------------------------
# spool


@dataclass
class SpoolMsg:
    path: Path
    content: bytes
    env_raw: bytes
    env: dict          # key -> value (str) for single keys
    rcpts: list        # rcpt values in order
    content_size: int
    env_size: int

    @property
    def body(self):
        """Content without the Received header."""
        return split_received(self.content)[1]


def parse_spool_bytes(data, path=None):
    assert data.endswith(b"\n"), f"{path}: spool file does not end with LF"
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    trailer = data[start:]
    m = re.fullmatch(rb"PETREL-SPOOL 1 (\d+) (\d+)\n", trailer)
    assert m, f"{path}: bad trailer {trailer[-80:]!r}"
    csize, esize = int(m.group(1)), int(m.group(2))
    assert csize + esize + len(trailer) == len(data), (
        f"{path}: trailer sizes {csize}+{esize}+{len(trailer)} != file size "
        f"{len(data)}")
    content = data[:csize]
    env_raw = data[csize:csize + esize]
    assert env_raw.endswith(b"\n") or esize == 0, f"{path}: envelope not LF-terminated"
    env, rcpts = {}, []
    for ln in env_raw.split(b"\n")[:-1]:
        s = ln.decode("utf-8", "surrogateescape")
        k, _, v = s.partition(" ")
        assert re.fullmatch(r"[a-z0-9_-]+", k), f"{path}: bad envelope line {s!r}"
        if k == "rcpt":
            rcpts.append(v)
        else:
            assert k not in env, f"{path}: duplicate envelope key {k}"
            env[k] = v
    return SpoolMsg(Path(path) if path else None, content, env_raw, env, rcpts,
                    csize, esize)


def parse_spool_file(path):
    return parse_spool_bytes(Path(path).read_bytes(), path)


# --------------------------------------------------------------------------
# `petrel queue` output


@dataclass
class QueueEntry:
    id: str
    age: str
    size: str
    sender: str
    rcpts: list = field(default_factory=list)


def parse_queue_output(text):
    """Parse `petrel queue`: returns a list of QueueEntry ([] for an empty
    queue). Asserts the format strictly."""
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if lines == ["Mail queue is empty"]:
        return []
    # a closing summary ("2 messages in queue") is tolerated; the count in it
    # must be right
    if lines and re.fullmatch(r"\d+ messages? in queue", lines[-1]):
        summary = int(lines.pop().split()[0])
    else:
        summary = None
    entries = []
    for ln in lines:
        if ln.startswith(" " * 8) and not ln.startswith(" " * 9):
            assert entries, f"recipient line before a message line: {ln!r}"
            a = ln[8:]
            if a.startswith("<") and a.endswith(">"):
                a = a[1:-1]
            entries[-1].rcpts.append(a)
            continue
        m = re.fullmatch(r"([A-Za-z0-9-]+) +(\S+) +(\S+) +<(.*)>", ln)
        assert m, f"unexpected `petrel queue` line: {ln!r}"
        entries.append(QueueEntry(m.group(1), m.group(2), m.group(3), m.group(4)))
    if summary is not None:
        assert summary == len(entries), f"summary says {summary}, listed {len(entries)}"
    return entries


# --------------------------------------------------------------------------
# the daemon


def _ini_value(v):
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)


_tls_cache = {"dir": None}


class Petrel:
    """One daemon in its own directory with its own config, spool and port."""

    def __init__(self, workdir, top=None, listen=None, relay=None,
                 extra="", port=None, host="127.0.0.1", spool_dir=None,
                 seed_tls=True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.port = port or free_port(fam)
        self.spool = Path(spool_dir) if spool_dir else self.dir / "spool"
        self.log_path = self.dir / "main.log"
        self.conf_path = self.dir / "petrel.conf"
        # The receiving-side suites look at the spool: nothing is delivered
        # unless a test turns queue_only off (delivery tests do).
        self.top = {"hostname": HOSTNAME, "spool_dir": str(self.spool),
                    "log_file": str(self.log_path), "queue_only": "yes"}
        addr = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.listen = {"address": addr, "greeting_delay": "0"}
        self.relay = {"networks": "127.0.0.0/8, ::1/128",
                      "local_domains": LOCAL_DOMAIN}
        for d, o in ((self.top, top), (self.listen, listen), (self.relay, relay)):
            for k, v in (o or {}).items():
                if v is None:
                    d.pop(k, None)
                else:
                    d[k] = _ini_value(v)
        self.spool = Path(self.top["spool_dir"])
        self.log_path = Path(self.top["log_file"]) if "log_file" in self.top else None
        self.extra = extra
        # Seed spool/tls with a self-signed pair the daemon made earlier in
        # this run (saves a key generation per test); tests of the
        # generation itself pass seed_tls=False.
        self.seed_tls = seed_tls
        self.proc = None
        self.expect_running = False
        self.starts = 0
        self.write_config()

    # -- config -------------------------------------------------------------

    def config_text(self):
        out = [f"{k} = {v}" for k, v in self.top.items()]
        out.append("")
        out.append("[listen smtp]")
        out += [f"{k} = {v}" for k, v in self.listen.items()]
        out.append("")
        out.append("[relay]")
        out += [f"{k} = {v}" for k, v in self.relay.items()]
        out.append("")
        if self.extra:
            out.append(self.extra)
        return "\n".join(out) + "\n"

    def write_config(self):
        self.conf_path.write_text(self.config_text())

    # -- process ------------------------------------------------------------

    def start(self, wait=True):
        assert BIN.exists(), f"{BIN} does not exist: build Petrel first (meson setup build; ninja -C build)"
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        tls = self.spool / "tls"
        if self.seed_tls and _tls_cache["dir"] and not tls.exists():
            tls.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(_tls_cache["dir"], tls)
        self.stdout_path = self.dir / f"stdout.{self.starts}"
        self.stderr_path = self.dir / f"stderr.{self.starts}"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(BIN), "serve", "-c", str(self.conf_path), "-f"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=str(self.dir))
        self.expect_running = True
        if wait:
            self.wait_ready()
            self._fill_tls_cache()
        return self

    def _fill_tls_cache(self):
        tls = self.spool / "tls"
        if _tls_cache["dir"] is None and (tls / "cert.pem").exists() \
                and (tls / "key.pem").exists():
            d = Path(tempfile.mkdtemp(prefix="petrel-tls-"))
            atexit.register(shutil.rmtree, d, True)
            dst = d / "tls"
            dst.mkdir()
            for name in ("cert.pem", "key.pem"):
                shutil.copy2(tls / name, dst / name)
            _tls_cache["dir"] = dst

    def diag(self):
        out = []
        for p in (getattr(self, "stderr_path", None), self.log_path):
            if p and Path(p).exists():
                t = Path(p).read_bytes()[-3000:].decode("utf-8", "replace")
                out.append(f"--- {p.name} (tail) ---\n{t}")
        return "\n".join(out)

    def wait_ready(self, timeout=10.0):
        """Poll-connect until a 220 greeting arrives, then QUIT."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.expect_running = False
                raise AssertionError(
                    f"petrel exited with {rc} during start-up\n{self.diag()}")
            try:
                c = SMTPConn(self.host, self.port, timeout=3)
            except OSError as e:
                last = e
                time.sleep(0.05)
                continue
            try:
                r = c.read_reply()
                if r.code == 220:
                    try:
                        c.send(b"QUIT\r\n")
                        c.read_all_until_closed(timeout=3)
                    except (OSError, AssertionError):
                        pass
                    return
                last = r
            except (OSError, AssertionError) as e:
                last = e
            finally:
                c.close()
            time.sleep(0.05)
        raise AssertionError(f"petrel not ready after {timeout}s: {last}\n{self.diag()}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.expect_running and self.proc is not None:
            rc = self.proc.poll()
            if rc is not None:
                self.expect_running = False
                raise AssertionError(
                    f"petrel died unexpectedly (exit status {rc})\n{self.diag()}")

    def stop(self, timeout=10.0):
        """SIGTERM and wait. Returns the exit status. Raises if the daemon had
        already died or does not stop in time."""
        self.check_alive()
        self.expect_running = False
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"petrel did not exit within {timeout}s of SIGTERM")

    def kill9(self):
        self.check_alive()
        self.expect_running = False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self):
        if self.running():
            self.stop()
        return self.start()

    def cleanup(self):
        """Fixture teardown: stop the daemon; complain if it had died."""
        died = None
        if self.expect_running and self.proc is not None and self.proc.poll() is not None:
            died = self.proc.returncode
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                died = "hung on SIGTERM"
        self.expect_running = False
        return died

    # -- clients ------------------------------------------------------------

    def connect(self, greeting=True, timeout=SOCK_TIMEOUT):
        c = SMTPConn(self.host, self.port, timeout=timeout)
        if greeting:
            c.greeting()
        return c

    def session(self, ehlo="x", timeout=SOCK_TIMEOUT):
        c = self.connect(timeout=timeout)
        c.ehlo(ehlo)
        return c

    # -- files --------------------------------------------------------------

    @property
    def queue_dir(self):
        return self.spool / "queue"

    @property
    def tmp_dir(self):
        return self.spool / "tmp"

    def queue_files(self):
        d = self.queue_dir
        if not d.exists():
            return []
        return sorted(p for p in d.iterdir() if not p.name.startswith("."))

    def queue_ids(self):
        return [p.name for p in self.queue_files()]

    def tmp_files(self):
        d = self.tmp_dir
        if not d.exists():
            return []
        return sorted(d.iterdir())

    def spool_msg(self, qid):
        return parse_spool_file(self.queue_dir / qid)

    def all_msgs(self):
        return [parse_spool_file(p) for p in self.queue_files()]

    def log_text(self):
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def log_lines(self):
        return self.log_text().splitlines()

    def wait_log(self, pattern, timeout=5.0):
        """Wait until a log line matches the regex; returns the line. (The
        log may be written a moment after the reply.)"""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for ln in self.log_lines():
                if rx.search(ln):
                    return ln
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line matches {pattern!r}; log tail:\n"
                    + "\n".join(self.log_lines()[-30:]))
            time.sleep(0.05)

    def sync_error_lines(self):
        return [ln for ln in self.log_lines() if "synchronization error" in ln]

    # -- CLI ----------------------------------------------------------------

    def run_cli(self, *args, timeout=20):
        return subprocess.run([str(BIN), *args], capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def queue_cmd(self):
        r = self.run_cli("queue", "-c", str(self.conf_path))
        assert r.returncode == 0, (f"petrel queue exited {r.returncode}: "
                                   f"{r.stderr.decode(errors='replace')}")
        return parse_queue_output(r.stdout.decode("utf-8", "replace"))
