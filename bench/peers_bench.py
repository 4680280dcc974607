"""The three MTAs of bench/compare.py, each driven the same way:

    m = PetrelBench(route_port)     # or PostfixBench, EximBench
    m.setup()                       # started, delivery held; SMTP on m.port
    inject(m.port, n, size)         # N messages over SMTP (4 sessions)
    m.wait_queued(n)                # all N in the queue
    m.release(acct)                 # delivery released (timing starts before)
    acct.sample(m.session_ids())    # while waiting for the sink
    m.finish(acct); m.stop()

Everything runs on 127.0.0.1 in private directories; each MTA is stopped
by its own PID / process group (never by name). Settings: docs/bench/SETTINGS.md.

Accounting
----------
CPU: every MTA process of the delivery phase runs in one session (Petrel:
started with setsid; Postfix: its master is a session leader and restarted
for the delivery phase; Exim: the queue runner is started with setsid).
Accounting.sample() reads /proc/PID/stat of every member of that session:
its own CPU time (the larger of utime+stime, 10 ms ticks, and the sum of
/proc/PID/task/*/schedstat, ns, live threads) plus cutime+cstime (children
the process reaped, so short-lived workers are counted by whoever waited
for them). CPU seconds =
the sum over the processes alive at the last sample (taken right after the
sink has N) minus what each had at release. Exim's queue runner is our own
child: its exact rusage (os.wait4, all descendants it reaped) replaces the
sampled figure. Peak RSS: the largest VmHWM of any one process of the
session (for Exim also the runner's ru_maxrss), and the largest sum of Pss
(/proc/PID/smaps_rollup: shared pages divided among their users) over the
session's processes seen in one sample (sampled every ~10 ms).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))

PETREL = os.path.join(ROOT, "build", "petrel")
TICK = os.sysconf("SC_CLK_TCK")
DOMAIN = "bench.example"

from peers import EXIM_BASE_CONF  # noqa: E402  (tests/interop/peers.py)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_greeting(port, timeout=20, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no greeting on port {port}")


# The injector of bench/delivery_bench.py (same domain, same messages).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from delivery_bench import inject  # noqa: E402,F401


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        head, rest = f.read().rsplit(")", 1)
    fl = rest.split()
    # fl[0] state, [3] session, [11..14] utime stime cutime cstime, [19] starttime
    own = max((int(fl[11]) + int(fl[12])) / TICK, _task_ns(pid) / 1e9)
    reaped = (int(fl[13]) + int(fl[14])) / TICK
    return fl[0], int(fl[3]), own + reaped, int(fl[19])


def _task_ns(pid):
    """CPU time of the live threads of PID in ns (schedstat: ns resolution,
    where utime/stime count 10 ms ticks)."""
    ns = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return ns


def _mem(pid):
    """(VmHWM, Pss) in KiB: Pss splits shared pages (libraries, shared
    memory) between the processes mapping them, so it can be summed."""
    hwm = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return hwm, pss


class Accounting:
    def __init__(self):
        self.base = {}          # (pid, start) -> CPU seconds at release
        self.last = {}          # (pid, start) -> CPU seconds at the latest sample
        self.seen = set()
        self.peak_hwm_kib = 0
        self.peak_total_rss_kib = 0
        self.exact_cpu = None   # from wait4, when we own the root

    def _scan(self, sids):
        out = {}
        total = 0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                state, sid, ticks, start = _stat(d)
                if sid not in sids or state == "Z":
                    continue
                hwm, rss = _mem(d)
            except (OSError, ValueError, IndexError):
                continue
            out[(int(d), start)] = ticks
            self.peak_hwm_kib = max(self.peak_hwm_kib, hwm)
            total += rss
        self.peak_total_rss_kib = max(self.peak_total_rss_kib, total)
        return out

    def begin(self, sids):
        self.base = self._scan(set(sids))

    def sample(self, sids):
        self.last = self._scan(set(sids))
        self.seen.update(self.last)

    def cpu_s(self):
        if self.exact_cpu is not None:
            return self.exact_cpu
        return sum(t - self.base.get(k, 0) for k, t in self.last.items())


# --------------------------------------------------------------------------
class PetrelBench:
    name = "petrel"

    def __init__(self, route_port):
        self.dir = tempfile.mkdtemp(prefix="petrel-cmp-")
        self.conf = os.path.join(self.dir, "petrel.conf")
        self.port = free_port()
        self.route_port = route_port
        self.proc = None

    def write_conf(self, queue_only):
        with open(self.conf, "w") as f:
            f.write(f"""hostname = bench.petrel.example
spool_dir = {self.dir}/spool
log_file = {self.dir}/main.log
queue_only = {"yes" if queue_only else "no"}
[listen smtp]
address = 127.0.0.1:{self.port}
[destination {DOMAIN}]
route = 127.0.0.1:{self.route_port}
tls = may
idle_timeout = 2s
""")

    def start(self):
        self.proc = subprocess.Popen([PETREL, "serve", "-c", self.conf, "-f"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def setup(self):
        self.write_conf(True)
        self.start()
        wait_greeting(self.port, proc=self.proc)

    def _stop_proc(self):
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def wait_queued(self, n):
        self._stop_proc()     # SMTP replies were 250: all N are in the spool

    def release(self, acct):
        self.write_conf(False)
        acct.begin([])
        self.start()          # delivery starts with the daemon

    def session_ids(self):
        return [self.proc.pid] if self.proc else []

    def stalled(self):
        return False

    def notes(self):
        return ""

    def finish(self, acct):
        pass

    def stop(self):
        self._stop_proc()
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self):
        r = subprocess.run([PETREL, "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.split("(")[0].replace("petrel", "").strip()


# --------------------------------------------------------------------------
POSTFIX_BEST = {
    # TLS on the client side, as for the other two (opportunistic)
    "smtp_tls_security_level": "may",
    "smtp_tls_loglevel": "0",
    "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
    # connection cache: keep connections to this destination open and reuse
    # them for the next message, TLS included (through tlsproxy)
    "smtp_connection_cache_on_demand": "yes",
    "smtp_connection_cache_destinations": "$relayhost",
    "smtp_tls_connection_reuse": os.environ.get("PETREL_BENCH_PF_TLS_REUSE", "yes"),
    "smtp_connection_reuse_count_limit": "0",
    "smtp_connection_reuse_time_limit": "300s",
    # no artificial throttling of the flush
    "in_flow_delay": "0",
}


def _postfix_instance_class():
    from postfix_instance import PostfixInstance

    class BenchPostfix(PostfixInstance):
        def _write_config(self):
            super()._write_config()
            with open(self.etc / "master.cf", "a") as f:
                # tlsproxy: TLS connection reuse; pickup: postqueue -f
                # checks that the mail system is up through public/pickup
                f.write("tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
                        "pickup    fifo  n       -       n       60      1       pickup\n")
    return BenchPostfix


class PostfixBench:
    name = "postfix"

    def __init__(self, route_port, main_extra=None):
        """main_extra: main.cf settings instead of the outbound ones (the
        best client settings, delivery held by defer_transports)."""
        cls = _postfix_instance_class()
        extra = main_extra if main_extra is not None else dict(
            POSTFIX_BEST, defer_transports="smtp",
            minimal_backoff_time="3600s", maximal_backoff_time="3600s")
        self.pf = cls(relayhost=("127.0.0.1", route_port), main_extra=extra)
        self.port = self.pf.port

    def setup(self):
        self.pf.start()

    def _count(self, q):
        d = self.pf.queue / q
        return sum(len(fs) for _, _, fs in os.walk(d)) if d.exists() else 0

    def wait_queued(self, n, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            if self._count("deferred") >= n and self._count("active") == 0 \
                    and self._count("incoming") == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"postfix: {self._count('deferred')} of {n} deferred\n"
                               + self.pf.maillog_tail())
        # delivery phase in a fresh master (like Petrel's restart): the
        # smtpd/cleanup processes of the injection are not counted
        old = self.pf.master_pid
        self.pf.postfix("stop")
        end = time.time() + 20
        while os.path.exists(f"/proc/{old}") and time.time() < end:
            time.sleep(0.05)
        self.pf.postconf("-e", "defer_transports =")
        # the deferred messages wait for their next retry (an hour away,
        # minimal_backoff_time): the new master leaves them alone until
        # `postqueue -f`
        self.pf.postfix("start")
        self.pf.master_pid = int((self.pf.queue / "pid" / "master.pid").read_text().split()[0])
        self.pf.wait_ready(20)
        time.sleep(1.5)       # qmgr's startup queue scan is over
        if self._count("deferred") < n:
            raise RuntimeError("postfix: messages left the deferred queue before the flush")

    def release(self, acct):
        acct.begin(self.session_ids())
        self.pf._run(["/usr/sbin/postqueue", "-c", str(self.pf.etc), "-f"], what="postqueue -f")

    def session_ids(self):
        return [self.pf.master_pid] if self.pf.master_pid else []

    def stalled(self):
        return (self._count("active") == 0 and self._count("incoming") == 0
                and self._count("deferred") > 0)

    def notes(self):
        bad = [ln.split("status=deferred", 1)[1].strip()
               for ln in self.pf.maillog_lines()
               if "status=deferred" in ln and "deferred transport" not in ln]
        if not bad:
            return ""
        return f"{len(bad)} delivery attempts deferred, e.g. {bad[0][:120]}"

    def finish(self, acct):
        pass

    def stop(self):
        self.pf.stop()

    def version(self):
        r = subprocess.run(["postconf", "-d", "-h", "mail_version"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip()


# --------------------------------------------------------------------------
EXIM_BENCH_CONF = EXIM_BASE_CONF.replace("PRIMARY_HOSTNAME", "exim.bench.test") + """\
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
# delivery held while the messages are received; a queue run releases them
queue_only = true
# one delivery process at a time inside the queue run (the run itself
# delivers one host's messages down one connection, see SETTINGS.md)
remote_max_parallel = 1
queue_run_max = 1
smtp_accept_max = {accept_max}
smtp_connect_backlog = {backlog}
smtp_accept_queue_per_connection = 0
log_selector = +smtp_connection +tls_cipher +millisec +deliver_time

begin acl
acl_rcpt:
  accept

begin routers
bench:
  driver = manualroute
  domains = {domain}
  route_list = * 127.0.0.1
  transport = bench_smtp
  self = send

begin transports
bench_smtp:
  driver = smtp
  port = {route_port}
  hosts_try_chunking = *
  tls_verify_hosts =
  tls_try_verify_hosts =
  tls_verify_certificates =
  connection_max_messages = 0
  max_rcpt = 100

begin retry
* * F,10m,2s

begin rewrite
"""


class EximBench:
    name = "exim"

    def __init__(self, route_port, accept_max=100, backlog=20):
        """accept_max, backlog: smtp_accept_max and smtp_connect_backlog
        (20 is Exim's default backlog; the inbound bench raises both)."""
        from peers import EximPeer
        self.peer = EximPeer()
        self.peer.conf.write_text(EXIM_BENCH_CONF.format(
            bin=self.peer.bin, dir=self.peer.dir, port=self.peer.port,
            route_port=route_port, domain=DOMAIN, accept_max=accept_max,
            backlog=backlog))
        self.port = self.peer.port
        self.runner = None

    def setup(self):
        self.peer.start()

    def _queued(self):
        d = self.peer.dir / "spool" / "input"
        return len(list(d.glob("*-H"))) if d.exists() else 0

    def wait_queued(self, n, timeout=60):
        end = time.time() + timeout
        while self._queued() < n and time.time() < end:
            time.sleep(0.1)
        if self._queued() < n:
            raise RuntimeError(f"exim: {self._queued()} of {n} queued\n" + self.peer.diag())
        # the listening daemon plays no part in delivery: stop it (by its
        # process group) so that nothing but the queue run delivers
        p = self.peer.proc
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
        self.peer.proc = None

    def release(self, acct):
        acct.begin([])
        # two-phase queue run, forced: the first phase routes every message,
        # the second delivers them host by host, one connection per host
        # (continued deliveries; TLS kept by Exim's TLS proxy process)
        self.runner = subprocess.Popen(
            [str(self.peer.bin), "-C", str(self.peer.conf), "-qqf"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def session_ids(self):
        return [self.runner.pid] if self.runner else []

    def stalled(self):
        """The queue run is over (checked without reaping: finish() wants
        the runner's rusage from wait4)."""
        if self.runner is None or self.runner.returncode is not None:
            return self.runner is not None
        try:
            r = os.waitid(os.P_PID, self.runner.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return r is not None

    def notes(self):
        """Deferrals and failures from Exim's mainlog (why a run stopped
        short of N)."""
        bad = [ln for ln in self.peer.log_lines() if " == " in ln or " ** " in ln]
        if not bad:
            return ""
        return f"{len(bad)} delivery attempts deferred or failed, e.g. {bad[0][:160]}"

    def finish(self, acct, timeout=60):
        r = self.runner
        end = time.time() + timeout
        while time.time() < end:
            pid, status, ru = os.wait4(r.pid, os.WNOHANG)
            if pid:
                r.returncode = os.waitstatus_to_exitcode(status)
                acct.exact_cpu = ru.ru_utime + ru.ru_stime
                acct.peak_hwm_kib = max(acct.peak_hwm_kib, ru.ru_maxrss)
                return
            acct.sample(self.session_ids())
            time.sleep(0.01)

    def stop(self):
        r = self.runner
        if r is not None and r.returncode is None:
            try:
                os.killpg(r.pid, signal.SIGTERM)
                r.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(r.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.peer.stop()

    def version(self):
        r = self.peer.exim("-bV", timeout=10)
        m = re.search(rb"Exim version (\S+)", r.stdout)
        return m.group(1).decode() if m else "?"


# --------------------------------------------------------------------------
# The delay proxy. (This file used to carry a patched copy: the race it fixed,
# a target greeting replayed back to the target, is fixed in
# tests/tools/delay_proxy.py itself.)

def FixedDelayProxy(*args, **kw):
    """The project's DelayProxy (kept under this name for bench/compare.py)."""
    from delay_proxy import DelayProxy
    return DelayProxy(*args, **kw)
