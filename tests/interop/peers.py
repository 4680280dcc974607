"""Private peer MTAs for the interop matrix, on loopback only.

Every peer lives in its own fresh directory (its spool, configuration, log,
mailbox and a self-signed certificate), listens on 127.0.0.1 on a free port,
runs in a new session (start_new_session) and is stopped by its PID: SIGTERM
to the process group that PID leads (the group only holds what it forked),
then SIGKILL after a bounded wait. Nothing here touches /etc or the system's
own MTA; the unpacked daemons come from build-interop/peers/ (made by
scripts/interop-deps.sh).

    AiosmtpdPeer(port)           stores messages itself (aiosmtpd_peer.py)
    EximPeer(petrel_port=...)    exim4-daemon-light, -C private config:
                                 receives for peer.example into a maildir and
                                 relays local.example to Petrel (TLS required)
    OpenSMTPDPeer(store)         opensmtpd in a private mount namespace (its
                                 spool path is compiled in), relays to `store`
    ChasquidPeer()               chasquid, local delivery through an MDA script,
                                 in a private mount namespace whose
                                 /etc/resolv.conf names a StubDns
    StubDns(records)             a tiny authoritative DNS responder on
                                 127.x.y.z:53 (a thread of this process)
"""

import json
from collections import Counter
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEERS = Path(os.environ.get("PETREL_INTEROP_PEERS", REPO / "build-interop" / "peers"))
PY = "/usr/bin/python3"


class PeerError(AssertionError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(d, cn, rsa=False):
    key = ["rsa:2048"] if rsa else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", *key, "-nodes",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
                    "-days", "2", "-subj", f"/CN={cn}"],
                   check=True, capture_output=True, timeout=30)
    os.chmod(d / "key.pem", 0o600)


def wait_greeting(port, proc, timeout, diag):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"exited with {proc.returncode}\n{diag()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                s.settimeout(3)
                data = s.recv(1024)
                if data.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
                last = data
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise PeerError(f"no greeting on {port} after {timeout}s: {last!r}\n{diag()}")


class Peer:
    name = "peer"

    def __init__(self, port=None, keep=False):
        self.dir = Path(tempfile.mkdtemp(prefix=f"petrel-{self.name}-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.port = port or free_port()
        self.proc = None
        self.keep = keep or bool(os.environ.get("PETREL_KEEP_PEERS"))
        self.out = self.dir / "stdout.log"

    def cmd(self):
        raise NotImplementedError

    def spawn(self, argv, env=None):
        self._outf = open(self.out, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._outf,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env or dict(os.environ, LANG="C"))

    def diag(self, n=40):
        try:
            t = self.out.read_text(errors="replace")
        except OSError:
            t = ""
        return f"--- {self.name} output (tail) ---\n" + "\n".join(t.splitlines()[-n:])

    def start(self, timeout=20):
        self.spawn(self.cmd())
        wait_greeting(self.port, self.proc, timeout, self.diag)
        return self

    def stop(self):
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)   # the group our child leads
            except ProcessLookupError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        # stragglers of the same group (forked workers) get SIGKILL
        if p is not None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *a):
        self.stop()

    # stored messages: list of (envelope_rcpts, content bytes)
    def stored(self):
        raise NotImplementedError


class AiosmtpdPeer(Peer):
    """aiosmtpd with STARTTLS; it advertises neither PIPELINING nor CHUNKING."""
    name = "aiosmtpd"

    def __init__(self, port=None, keep=False):
        super().__init__(port, keep)
        make_cert(self.dir, "aiosmtpd.peer.test")
        self.mail = self.dir / "mail"

    def cmd(self):
        return [PY, str(HERE / "aiosmtpd_peer.py"), str(self.port), str(self.mail),
                str(self.dir / "cert.pem"), str(self.dir / "key.pem")]

    def stats(self):
        try:
            return json.loads((self.mail / "stats.json").read_text())
        except (OSError, ValueError):
            return {}

    def stored(self):
        out = []
        if not self.mail.exists():
            return out
        for f in sorted(self.mail.glob("*.eml")):
            env = f.with_suffix(".env").read_text().splitlines()
            out.append((env[1:], f.read_bytes()))
        return out


# The part of a private Exim's configuration that every use shares (the
# interop peer below, bench/peers_bench.py): its own binary, spool, logs
# and loopback port, no lookups of the client. Fill in PRIMARY_HOSTNAME.
EXIM_BASE_CONF = """\
exim_path = {bin}
keep_environment =
exim_user = mail
exim_group = mail
never_users =
trusted_users = root:mail
primary_hostname = PRIMARY_HOSTNAME
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
host_lookup =
rfc1413_hosts =
"""

EXIM_CONF = EXIM_BASE_CONF.replace("PRIMARY_HOSTNAME", "exim.peer.test") + """\
message_size_limit = 60M
tls_advertise_hosts = *
tls_certificate = {dir}/cert.pem
tls_privatekey = {dir}/key.pem
pipelining_advertise_hosts = *
chunking_advertise_hosts = *
smtp_accept_max = 200
smtp_accept_queue_per_connection = 0
smtp_accept_max_per_connection = 10000
smtp_enforce_sync = true
queue_only = {queue_only}
queue_run_max = 1
remote_max_parallel = 1
log_selector = +smtp_connection +tls_cipher +pipelining +smtp_protocol_error +smtp_syntax_error
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl
acl_rcpt:
  accept
acl_data:
  accept

begin routers
to_petrel:
  driver = manualroute
  domains = local.example
  route_list = * 127.0.0.1
  transport = to_petrel
  self = send
local:
  driver = accept
  domains = peer.example
  transport = maildir

begin transports
maildir:
  driver = appendfile
  directory = {dir}/mail
  maildir_format
  user = mail
  group = mail
  mode = 0644
  envelope_to_add
to_petrel:
  driver = smtp
  port = {petrel_port}
  hosts_require_tls = *
  tls_verify_hosts =
  tls_try_verify_hosts =
  hosts_try_chunking = *
  connection_max_messages = 10000
  max_rcpt = 100

begin retry
* * F,10m,2s

begin rewrite
"""


class EximPeer(Peer):
    """exim4-daemon-light 4.96 unpacked in build-interop/peers/exim, run
    (as a copy of its binary in the peer's directory) with -C."""
    name = "exim"

    def __init__(self, port=None, petrel_port=1, queue_only=False, keep=False):
        unpacked = PEERS / "exim" / "usr" / "sbin" / "exim4"
        if not os.access(unpacked, os.X_OK):
            raise PeerError(f"{unpacked} missing: run scripts/interop-deps.sh")
        super().__init__(port, keep)
        # Exim re-executes exim_path after dropping to the mail user (for
        # each delivery, -Mc): a copy in the peer's own 0755 directory, since
        # the work tree may sit below a directory the mail user cannot enter
        # (a CI clone in a 0700 directory: "re-exec of exim ... failed:
        # Permission denied", nothing delivered)
        self.bin = self.dir / "exim4"
        shutil.copy2(unpacked, self.bin)
        os.chmod(self.bin, 0o755)
        make_cert(self.dir, "exim.peer.test")
        shutil.chown(self.dir / "key.pem", "mail", "mail")
        for sub in ("spool", "log", "mail"):
            (self.dir / sub).mkdir()
            shutil.chown(self.dir / sub, "mail", "mail")
        self.conf = self.dir / "exim.conf"
        self.conf.write_text(EXIM_CONF.format(bin=self.bin, dir=self.dir, port=self.port,
                                              petrel_port=petrel_port,
                                              queue_only="true" if queue_only else "false"))
        self.mainlog = self.dir / "log" / "mainlog"

    def exim(self, *args, timeout=120, input=None):
        return subprocess.run([str(self.bin), "-C", str(self.conf), *args],
                              capture_output=True, timeout=timeout, input=input)

    def cmd(self):
        return [str(self.bin), "-C", str(self.conf), "-bdf"]

    def diag(self, n=40):
        try:
            t = self.mainlog.read_text(errors="replace")
            p = (self.dir / "log" / "paniclog").read_text(errors="replace") \
                if (self.dir / "log" / "paniclog").exists() else ""
        except OSError:
            t = p = ""
        return super().diag(n) + "\n--- exim mainlog ---\n" + \
            "\n".join(t.splitlines()[-n:]) + "\n--- paniclog ---\n" + p

    def log_lines(self):
        try:
            return self.mainlog.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def queue_run(self, timeout=600):
        """Two-phase queue run (-qqf): the messages for one host go down
        one connection."""
        return self.exim("-qqf", timeout=timeout)

    def stored(self):
        out = []
        for f in sorted((self.dir / "mail" / "new").glob("*")) if (self.dir / "mail" / "new").exists() else []:
            data = f.read_bytes()
            m = re.match(rb"Envelope-to: ([^\n]*)\n", data)
            rcpts = [a.strip() for a in m.group(1).decode().split(",")] if m else []
            # maildir files hold LF line ends; the interop check compares
            # after normalizing line ends (and strips Exim's added headers)
            out.append((rcpts, data))
        return out


SMTPD_CONF = """\
pki opensmtpd.peer.test cert "{dir}/cert.pem"
pki opensmtpd.peer.test key "{dir}/key.pem"
queue ttl 1h
listen on 127.0.0.1 port {port} {tls}hostname opensmtpd.peer.test
action "relay" relay host smtp://127.0.0.1:{store_port}
match from any for any action "relay"
"""


class OpenSMTPDPeer(Peer):
    """OpenSMTPD 6.8 from build-interop/peers/opensmtpd. Its spool path
    (/var/spool/smtpd) is compiled in, so it runs in a private mount
    namespace (unshare -m) where DIR/var-spool, DIR/var-lib and DIR/run are
    bind-mounted on /var/spool, /var/lib and /run (its compiled-in spool,
    chroot and control socket): the system's directories are never written. It relays everything to a
    store (an AiosmtpdPeer on another port) where the content is checked."""
    name = "opensmtpd"

    def __init__(self, store, port=None, keep=False, tls=False):
        """tls=False by default: Debian 12's OpenSMTPD 6.8 (built against
        OpenSSL 3) fails every server-side TLS handshake ("rsa routines::
        missing private key" in its privsep key process), so STARTTLS is
        not offered; tls=True reproduces that."""
        self.root = PEERS / "opensmtpd"
        self.bin = self.root / "usr" / "sbin" / "smtpd"
        if not os.access(self.bin, os.X_OK):
            raise PeerError(f"{self.bin} missing: run scripts/interop-deps.sh")
        super().__init__(port, keep)
        self.store = store
        # RSA: with an EC key OpenSMTPD 6.8 + OpenSSL 3 fails the handshake
        # ("tlsv1 alert internal error"; its privsep key engine is RSA-only)
        make_cert(self.dir, "opensmtpd.peer.test", rsa=True)
        os.chmod(self.dir / "cert.pem", 0o644)
        (self.dir / "var-spool" / "smtpd").mkdir(parents=True)
        os.chmod(self.dir / "var-spool" / "smtpd", 0o711)
        (self.dir / "var-lib" / "opensmtpd" / "empty").mkdir(parents=True)  # chroot
        (self.dir / "run").mkdir()                             # smtpd.sock
        self.conf = self.dir / "smtpd.conf"
        self.conf.write_text(SMTPD_CONF.format(dir=self.dir, port=self.port,
                                               store_port=store.port,
                                               tls="tls pki opensmtpd.peer.test " if tls else ""))
        os.chmod(self.conf, 0o644)

    def cmd(self):
        inner = (f"mount --make-rprivate / && mount --bind {self.dir}/var-spool /var/spool && "
                 f"mount --bind {self.dir}/var-lib /var/lib && mount --bind {self.dir}/run /run && "
                 f"exec {self.bin} -d -v -f {self.conf}")
        return ["unshare", "-m", "sh", "-c", inner]

    def log_lines(self):
        try:
            return self.out.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stored(self):
        return self.store.stored()


class StubDns:
    """A tiny authoritative DNS responder for peers that resolve through
    /etc/resolv.conf (chasquid: its SPF check looks up the TXT record of
    every MAIL FROM domain). resolv.conf cannot name a port, so it listens
    on UDP port 53 of a random 127.x.y.z (not 127.0.0.1: nothing else in
    the tree uses these). records: {(name, qtype): [rdata bytes]}; a known
    name without that type gets NOERROR/no answer, an unknown name
    NXDOMAIN; every answer is immediate. A thread of this process, stopped
    with stop(); `queries` counts what it answered."""

    TXT, A = 16, 1

    def __init__(self, records):
        self.records = {(n.lower().rstrip("."), t): v for (n, t), v in records.items()}
        self.names = {n for n, _ in self.records}
        self.queries = Counter()
        self.sock = None
        self.addr = None
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def txt(text):
        b = text.encode()
        return b"".join(bytes([len(b[i:i + 255])]) + b[i:i + 255] for i in range(0, len(b), 255))

    def start(self):
        last = None
        for _ in range(50):
            addr = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((addr, 53))
            except OSError as e:
                s.close()
                last = e
                continue
            self.sock, self.addr = s, addr
            break
        else:
            raise PeerError(f"StubDns: no free 127.x.y.z:53 ({last})")
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="stub-dns")
        self._thread.start()
        return self

    def _answer(self, q):
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack(">HHH", q[:6])
        if flags & 0x8000 or qd != 1:
            return None
        i, labels = 12, []
        while i < len(q) and q[i]:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        i += 1
        if i + 4 > len(q):
            return None
        qtype, _qclass = struct.unpack(">HH", q[i:i + 4])
        question = q[12:i + 4]
        name = ".".join(labels).lower()
        self.queries[(name, qtype)] += 1
        rdatas = self.records.get((name, qtype), [])
        rcode = 0 if name in self.names else 3
        # QR, AA, RD copied, RA (Go's resolver calls an answer without AA
        # and RA a lame referral)
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        out = struct.pack(">HHHHHH", qid, rflags, 1, len(rdatas), 0, 0) + question
        for rd in rdatas:
            out += struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rd)) + rd
        return out

    def _serve(self):
        while not self._stop.is_set():
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                a = self._answer(q)
            except Exception:  # noqa: BLE001 — a bad query gets no answer
                a = None
            if a:
                try:
                    self.sock.sendto(a, peer)
                except OSError:
                    pass

    def resolv_conf(self):
        return f"nameserver {self.addr}\noptions timeout:1 attempts:1\n"

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self.sock:
            self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


CHASQUID_CONF = """\
hostname: "chasquid.peer.test"
max_data_size_mb: 60
smtp_address: "127.0.0.1:{port}"
submission_address: "127.0.0.1:{sub_port}"
submission_over_tls_address: "127.0.0.1:{subtls_port}"
mail_delivery_agent_bin: "{dir}/mda.sh"
mail_delivery_agent_args: "%from%"
mail_delivery_agent_args: "%to%"
data_dir: "{dir}/data"
mail_log_path: "{dir}/mail.log"
"""

CHASQUID_MDA = """\
#!/bin/sh
# chasquid's MDA: store stdin as MAIL/<n>.eml with the recipient in <n>.rcpt
set -e
f=$(mktemp "{dir}/mail/m.XXXXXXXX")
cat > "$f"
printf '%s\\n' "$2" > "$f.rcpt"
mv "$f" "$f.eml"
"""


class ChasquidPeer(Peer):
    """chasquid 1.11 from build-interop/peers/chasquid, -config_dir DIR/etc.
    Every address listens on 127.0.0.1 (free ports; the default "systemd"
    would need socket activation). It accepts mail for peer.example for the
    users listed in DIR/etc/domains/peer.example/users (plain passwords,
    never used) and hands each copy to DIR/mda.sh, which stores it.

    DNS: chasquid checks SPF on every MAIL FROM (no option turns it off),
    a TXT lookup of the sender's domain through /etc/resolv.conf. Against
    the host's resolver some of these lookups hang for Go's 5 s timeout,
    and chasquid's concurrent lookups of one name wait together: every
    connection stalls for 5 s at a time (measured: 500 messages in 40 s,
    deliveries in bursts 5 s apart; with a resolver that does not answer,
    50 messages took 37 s). So chasquid runs in a private mount namespace
    (unshare -m) where DIR/resolv.conf, naming a StubDns, is bind-mounted
    on /etc/resolv.conf; the host's file is never written. spf: {domain:
    TXT record} the stub serves (default: origin.example, the matrix's
    sender domain, "v=spf1 ip4:127.0.0.0/8 -all", so SPF passes); every
    other name is NXDOMAIN at once."""
    name = "chasquid"

    def __init__(self, users, port=None, keep=False, spf=None):
        self.bin = PEERS / "chasquid" / "usr" / "bin" / "chasquid"
        if not os.access(self.bin, os.X_OK):
            raise PeerError(f"{self.bin} missing: run scripts/interop-deps.sh")
        super().__init__(port, keep)
        if spf is None:
            spf = {"origin.example": "v=spf1 ip4:127.0.0.0/8 -all"}
        self.dns = StubDns({(d, StubDns.TXT): [StubDns.txt(t)] for d, t in spf.items()})
        etc = self.dir / "etc"
        cert = etc / "certs" / "chasquid.peer.test"
        cert.mkdir(parents=True)
        make_cert(cert, "chasquid.peer.test")
        os.rename(cert / "cert.pem", cert / "fullchain.pem")
        os.rename(cert / "key.pem", cert / "privkey.pem")
        dom = etc / "domains" / "peer.example"
        dom.mkdir(parents=True)
        (dom / "users").write_text("".join(
            f'users: {{ key: "{u}" value: {{ plain: {{ password: "x" }} }} }}\n'
            for u in sorted(set(users))))
        (self.dir / "mail").mkdir()
        (self.dir / "data").mkdir()
        mda = self.dir / "mda.sh"
        mda.write_text(CHASQUID_MDA.format(dir=self.dir))
        os.chmod(mda, 0o755)
        (etc / "chasquid.conf").write_text(CHASQUID_CONF.format(
            port=self.port, sub_port=free_port(), subtls_port=free_port(), dir=self.dir))
        self.etc = etc

    def cmd(self):
        inner = (f"mount --make-rprivate / && mount --bind {self.dir}/resolv.conf /etc/resolv.conf"
                 f" && exec {self.bin} -config_dir {self.etc} -logtime {self.verbose}")
        return ["unshare", "-m", "sh", "-c", inner]

    verbose = os.environ.get("INTEROP_CHASQUID_V", "")   # e.g. "-v=2": protocol trace

    def start(self, timeout=20):
        if not os.path.exists("/etc/resolv.conf"):
            raise PeerError("/etc/resolv.conf missing: chasquid's private one is "
                            "bind-mounted over it")
        self.dns.start()
        (self.dir / "resolv.conf").write_text(self.dns.resolv_conf())
        return super().start(timeout)

    def stop(self):
        super().stop()
        self.dns.stop()

    def log_lines(self):
        out = []
        for f in (self.dir / "mail.log", self.out):
            try:
                out += f.read_text(errors="replace").splitlines()
            except OSError:
                pass
        return out

    def stored(self):
        out = []
        for f in sorted((self.dir / "mail").glob("*.eml")):
            rc = Path(str(f)[:-4] + ".rcpt").read_text().split()
            out.append((rc, f.read_bytes()))
        return out
