"""A private Postfix instance for interoperability tests, on loopback only.

    with PostfixInstance(relayhost=("127.0.0.1", sink_port),
                         access={"bad@peer.example": "REJECT no such user"}) as pf:
        pf.port                      # smtpd (STARTTLS offered) on 127.0.0.1
        pf.maillog_lines()           # Postfix's own log (postlogd)
        pf.wait_maillog(r"status=sent", count=5)

How it runs without touching the system's Postfix
-------------------------------------------------
Everything lives in one fresh directory (tempfile.mkdtemp under /tmp, not
pytest's tmp_path: Postfix's UNIX sockets live under queue_directory and
sun_path is 108 bytes; and /tmp/pytest-of-root is mode 0700):

    DIR/etc/main.cf, master.cf   config_directory (postfix -c DIR/etc)
    DIR/etc/cert.pem, key.pem    self-signed (openssl req), for STARTTLS
    DIR/etc/access               texthash: recipient access map (optional)
    DIR/queue                    queue_directory (pid/master.pid in it)
    DIR/data                     data_directory (master.lock, tls caches)
    DIR/maillog                  maillog_file, written by postlogd

The instance is started with `postfix -c DIR/etc start` with MAIL_CONFIG set
in the environment as well. /etc/postfix is never written: Postfix checks
`alternate_config_directories` in the default main.cf only for a non-root
caller that names a non-default directory (mail_conf_suck()); the tests run
as root, so no entry is needed (on Debian 12 /etc/postfix/main.cf does not
even exist when Postfix is installed unconfigured). The default
meta_directory (/etc/postfix: postfix-files, dynamicmaps.cf) is only read.

master.cf runs every service unchrooted (chroot would need a copy of /etc
files under the queue directory), has only the services a relay needs, and
an smtpd on 127.0.0.1:PORT (a free unprivileged port). main.cf: mail_owner
= postfix, inet_interfaces = loopback-only (IPv4 only), mynetworks =
127.0.0.0/8, smtpd_relay_restrictions = permit_mynetworks, reject, no local
delivery (mydestination empty), everything relayed to relayhost =
[127.0.0.1]:SINKPORT without TLS, no DNS (bracketed relayhost, no peer name
lookup), smtpd_tls_security_level = may, smtpd_tls_loglevel = 1, no
throttling that would make tests slow (in_flow_delay, error sleep), and
strict checks on the client (smtpd_forbid_unauth_pipelining,
reject_unauth_pipelining, smtpd_forbid_bare_newline without exclusions).

Final delivery (optional, mailbox_domains=[...]): Postfix then also acts
as the last hop for those domains, the way a mail server people run does.
Its own virtual(8) delivery agent stores every (message, recipient) copy
as one file in the maildir DIR/mailbox/<domain>/ (texthash map
"@domain domain/", uid/gid of nobody/nogroup), with the Delivered-To:
header naming the recipient; maildir_messages() reads them back. Other
domains still go to relayhost (relayhost may be None when nothing is
relayed).

start() fails (PostfixError, never a skip) with Postfix's own output and
the maillog tail if the instance cannot start or does not greet within the
time limit. stop() runs `postfix -c DIR/etc stop`, waits for the master
PID to exit, then SIGKILLs whatever is left of the master's process group
(the master is a session leader: its children share its process group) and
removes the directory (unless keep=True or PETREL_KEEP_POSTFIX is set).
Every subprocess call here has a timeout.
"""

import os
import pty
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
HOSTNAME = "pf.petrel.test"
CMD_TIMEOUT = 30


class PostfixError(AssertionError):
    """Postfix could not be set up, started or stopped."""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pgrp_members(pgid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] = state, [1] = ppid, [2] = pgrp
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d))
    return out


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen}  inet  n       -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    def __init__(self, relayhost, port=None, access=None, main_extra=None,
                 keep=None, mailbox_domains=None):
        """relayhost: (host, port) every message is relayed to (None: no
        relayhost). access: {recipient: action} for check_recipient_access
        texthash:. main_extra: {param: value} added to / overriding
        main.cf. mailbox_domains: domains delivered by Postfix itself into
        DIR/mailbox/<domain>/ (maildir, see maildir_messages())."""
        self.dir = Path(tempfile.mkdtemp(prefix="petrel-pf-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.queue = self.dir / "queue"
        self.data = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.port = port or _free_port()
        self.relayhost = relayhost
        self.access = access
        self.main_extra = main_extra or {}
        self.mailbox_domains = list(mailbox_domains or [])
        self.mailbox = self.dir / "mailbox"
        self.keep = keep if keep is not None else bool(os.environ.get("PETREL_KEEP_POSTFIX"))
        self.started = False
        self.master_pid = None
        self.outputs = []   # (command, returncode, output) of postfix commands
        self.env = dict(os.environ, MAIL_CONFIG=str(self.etc), LANG="C")
        try:
            for prog in (POSTFIX, POSTCONF):
                if not os.access(prog, os.X_OK):
                    raise PostfixError(f"{prog} not found: install Postfix "
                                       "(scripts/deps.sh does)")
            self._write_config()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    # -- configuration -------------------------------------------------------

    def main_cf(self):
        cf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": HOSTNAME,
            "mydomain": "petrel.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": (f"[{self.relayhost[0]}]:{self.relayhost[1]}"
                          if self.relayhost else ""),
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(self.etc / "cert.pem"),
            "smtpd_tls_key_file": str(self.etc / "key.pem"),
            "smtpd_tls_loglevel": "1",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.dir),
            "in_flow_delay": "0",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
            "message_size_limit": "52428800",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0",
            "notify_classes": "",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_client_recipient_rate_limit": "0",
            "smtpd_timeout": "30s",
            "smtp_connect_timeout": "5s",
            # strict about the client under test (Petrel), loopback included:
            # hang up on commands sent ahead where RFC 2920 says wait, and
            # reject bare LF in message content
            "smtpd_forbid_unauth_pipelining": "yes",
            "smtpd_data_restrictions": "reject_unauth_pipelining",
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
        }
        if self.access:
            cf["smtpd_recipient_restrictions"] = \
                f"check_recipient_access texthash:{self.etc / 'access'}"
        if self.mailbox_domains:
            nobody = pwd.getpwnam("nobody")
            cf.update({
                "virtual_mailbox_domains": ", ".join(self.mailbox_domains),
                "virtual_mailbox_base": str(self.mailbox),
                "virtual_mailbox_maps": f"texthash:{self.etc / 'vmailbox'}",
                "virtual_uid_maps": f"static:{nobody.pw_uid}",
                "virtual_gid_maps": f"static:{nobody.pw_gid}",
                "virtual_transport": "virtual",
                # per maildir file; must not be below message_size_limit
                "virtual_mailbox_limit": "0",
            })
        cf.update(self.main_extra)
        return "".join(f"{k} = {v}\n" for k, v in cf.items())

    def _write_config(self):
        self.etc.mkdir()
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        if self.access:
            (self.etc / "access").write_text(
                "".join(f"{k} {v}\n" for k, v in self.access.items()))
        if self.mailbox_domains:
            # "@domain domain/": every user of the domain, one maildir
            # (the trailing slash) per domain under virtual_mailbox_base
            (self.etc / "vmailbox").write_text(
                "".join(f"@{d} {d}/\n" for d in self.mailbox_domains))
            with open(self.etc / "master.cf", "a") as f:
                f.write("virtual   unix  -       n       n       -       -       virtual\n")
            self.mailbox.mkdir(mode=0o755)
            shutil.chown(self.mailbox, "nobody", "nogroup")
        self._run(["openssl", "req", "-x509", "-newkey", "ec",
                   "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                   "-keyout", str(self.etc / "key.pem"),
                   "-out", str(self.etc / "cert.pem"), "-days", "2",
                   "-subj", f"/CN={HOSTNAME}"], what="openssl req")
        os.chmod(self.etc / "key.pem", 0o600)
        self.queue.mkdir(mode=0o755)
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, "postfix", "postfix")

    # -- commands ------------------------------------------------------------

    def _run(self, cmd, what=None, check=True, timeout=CMD_TIMEOUT):
        """Run a command; its stderr is a pseudo-terminal, because Postfix
        commands write their diagnostics to stderr only when it is a tty
        (otherwise to syslog, which does not exist here, or to maillog_file,
        which early fatal errors never reach)."""
        master, slave = pty.openpty()
        chunks = []

        def reader():
            while True:
                try:
                    d = os.read(master, 4096)
                except OSError:     # EIO: every writer closed the slave side
                    return
                if not d:
                    return
                chunks.append(d)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=slave, timeout=timeout, env=self.env)
            rc, stdout = r.returncode, r.stdout
        except subprocess.TimeoutExpired as e:
            rc, stdout = "timeout", e.stdout or b""
        finally:
            os.close(slave)
            t.join(5)
            os.close(master)
        out = (stdout + b"".join(chunks)).decode(errors="replace").replace("\r\n", "\n")
        self.outputs.append((cmd, rc, out))
        if rc == "timeout":
            raise PostfixError(f"{what or cmd[0]} timed out after {timeout}s:\n"
                               f"{out}\n{self.maillog_tail()}")
        if check and rc != 0:
            raise PostfixError(f"{what or ' '.join(cmd)} failed (exit {rc}):\n"
                               f"{out}\n{self.maillog_tail()}")
        return out

    def postfix(self, *args, check=True, timeout=CMD_TIMEOUT):
        return self._run([POSTFIX, "-c", str(self.etc), *args],
                         what=f"postfix -c {self.etc} {' '.join(args)}",
                         check=check, timeout=timeout)

    def postconf(self, *args):
        return self._run([POSTCONF, "-c", str(self.etc), *args])

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout=20):
        self.started = True     # from here on, stop() has work to do
        self.postfix("check")
        self.postfix("start")
        pidfile = self.queue / "pid" / "master.pid"
        try:
            self.master_pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError) as e:
            raise PostfixError(f"no master PID after start ({e}):\n"
                               f"{self.outputs_text()}\n{self.maillog_tail()}")
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not _alive(self.master_pid):
                raise PostfixError(f"postfix master {self.master_pid} exited:\n"
                                   f"{self.outputs_text()}\n{self.maillog_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as s:
                    s.settimeout(3)
                    data = b""
                    while b"\r\n" not in data:
                        d = s.recv(1024)
                        if not d:
                            break
                        data += d
                    if data.startswith(b"220 "):
                        s.sendall(b"QUIT\r\n")
                        return
                    last = data
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise PostfixError(f"postfix smtpd on 127.0.0.1:{self.port} not ready "
                           f"after {timeout}s: {last!r}\n{self.outputs_text()}\n"
                           f"{self.maillog_tail()}")

    def stop(self):
        """Stop the instance; returns a list of problems (empty if clean).
        Never raises: it runs in teardown."""
        problems = []
        if not self.started:
            self._remove()
            return problems
        self.started = False
        if self.master_pid is None:
            try:
                self.master_pid = int((self.queue / "pid" / "master.pid")
                                      .read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        try:
            self.postfix("stop", check=False, timeout=20)
        except PostfixError as e:
            problems.append(str(e))
        pid = self.master_pid
        if pid is not None:
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                problems.append(f"postfix master {pid} still running after stop")
            # the master's children share its process group (master is a
            # session leader); the master sends them SIGTERM as it exits and
            # they go a moment later. Kill leftovers by that group id only.
            deadline = time.monotonic() + 10
            while _pgrp_members(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = _pgrp_members(pid)
            if left:
                problems.append(f"postfix processes left after stop: {left}")
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 5
                while _pgrp_members(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        self._remove()
        return problems

    def _remove(self):
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    # -- logs ----------------------------------------------------------------

    def maillog_text(self):
        try:
            return self.maillog.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def maillog_lines(self):
        return self.maillog_text().splitlines()

    def maillog_tail(self, n=40):
        return "--- postfix maillog (tail) ---\n" + "\n".join(self.maillog_lines()[-n:])

    def outputs_text(self):
        return "\n".join(f"$ {' '.join(map(str, c))}  -> {rc}\n{o}"
                         for c, rc, o in self.outputs)

    def grep(self, rx):
        r = re.compile(rx)
        return [ln for ln in self.maillog_lines() if r.search(ln)]

    def wait_maillog(self, rx, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.grep(rx)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"postfix maillog: {len(got)} lines match {rx!r}, want {count}\n"
                    + self.maillog_tail())
            time.sleep(0.1)

    # -- final delivery (mailbox_domains) ------------------------------------

    def maildir_messages(self, domain=None):
        """The copies Postfix delivered into its maildirs: a list of
        (recipients, content bytes), one per file, the recipient taken
        from the Delivered-To: header virtual(8) prepends (LF line ends,
        as Postfix stores them)."""
        out = []
        for d in ([domain] if domain else self.mailbox_domains):
            new = self.mailbox / d / "new"
            if not new.is_dir():
                continue
            for f in sorted(new.iterdir()):
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                head = data.split(b"\n\n", 1)[0]
                m = re.search(rb"^Delivered-To: (\S+)$", head, re.M)
                out.append(([m.group(1).decode()] if m else [], data))
        return out
