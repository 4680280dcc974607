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
    ChasquidPeer()               chasquid, local delivery through an MDA script
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
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


EXIM_CONF = """\
exim_path = {bin}
keep_environment =
exim_user = mail
exim_group = mail
never_users =
trusted_users = root:mail
primary_hostname = exim.peer.test
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
host_lookup =
rfc1413_hosts =
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
    """exim4-daemon-light 4.96 run from build-interop/peers/exim with -C."""
    name = "exim"

    def __init__(self, port=None, petrel_port=1, queue_only=False, keep=False):
        super().__init__(port, keep)
        self.bin = PEERS / "exim" / "usr" / "sbin" / "exim4"
        if not os.access(self.bin, os.X_OK):
            raise PeerError(f"{self.bin} missing: run scripts/interop-deps.sh")
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
        super().__init__(port, keep)
        self.root = PEERS / "opensmtpd"
        self.bin = self.root / "usr" / "sbin" / "smtpd"
        if not os.access(self.bin, os.X_OK):
            raise PeerError(f"{self.bin} missing: run scripts/interop-deps.sh")
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
    never used) and hands each copy to DIR/mda.sh, which stores it."""
    name = "chasquid"

    def __init__(self, users, port=None, keep=False):
        super().__init__(port, keep)
        self.bin = PEERS / "chasquid" / "usr" / "bin" / "chasquid"
        if not os.access(self.bin, os.X_OK):
            raise PeerError(f"{self.bin} missing: run scripts/interop-deps.sh")
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
        return [str(self.bin), "-config_dir", str(self.etc), "-logtime"]

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
