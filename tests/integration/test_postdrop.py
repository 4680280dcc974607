"""Local submission by users who may not write the spool (issue 4: "from a
script, as cron or a web application would", "whether or not the daemon
runs"): `sendmail -t` run as `nobody` goes through the setgid
petrel-postdrop into <spool>/maildrop/, and the daemon's pickup (pickup.c)
queues it.

Set-up, as root: a throwaway system user and group (the daemon's `user`,
removed at teardown); a directory readable by everyone holding a copy of
the petrel binary, the test build of petrel-postdrop (which reads
petrel.conf next to itself instead of /etc/petrel/petrel.conf) installed
setgid to that group, mode 2755, and that petrel.conf; the daemon's spool
under it. Submissions run as nobody:nogroup with no supplementary group.

Checked: the modes (spool 0710, maildrop 1730, queue/ 0700, maildrop files
0640 owned by the submitter); delivery to the sink with the daemon running;
a file waiting in maildrop/ while the daemon is stopped, delivered at the
next start; malformed files moved to corrupt/ with a log line; claims a
previous run left half done; postdrop's refusals (arguments, too big,
garbage) leave nothing behind; nobody cannot read queue/ or maildrop/.

Needs root, useradd/userdel, and the test build of petrel-postdrop:
PETREL_POSTDROP_TEST_BIN, else build/petrel-postdrop-test.
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from petrel_helpers import BIN, BUILT_BIN, HOSTNAME, Petrel  # noqa: E402
from delivery_helpers import sink, wait_until  # noqa: E402,F401  (sink: a fixture)

POSTDROP = Path(os.environ.get("PETREL_POSTDROP_TEST_BIN")
                or BUILT_BIN.parent / "petrel-postdrop-test")
SYSUSER = "petrelpdtest"
SINK_DOMAIN = "sink.example"
EX_USAGE, EX_TEMPFAIL = 64, 75


def _why_skip():
    if os.geteuid() != 0:
        return "needs root (a system user, a setgid program)"
    if not POSTDROP.exists():
        return f"{POSTDROP} not built"
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        return "useradd/userdel missing"
    try:
        pwd.getpwnam("nobody")
        grp.getgrnam("nogroup")
    except KeyError:
        return "no nobody:nogroup"
    return None


_why = _why_skip()
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")

NOBODY = pwd.getpwnam("nobody") if _why is None else None


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def sysuser():
    """(name, uid, gid) of a system user with its own group, made for this
    module and removed afterwards."""
    subprocess.run(["userdel", SYSUSER], capture_output=True)
    subprocess.run(["groupdel", SYSUSER], capture_output=True)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", SYSUSER], check=True,
                   capture_output=True)
    pw = pwd.getpwnam(SYSUSER)
    yield SYSUSER, pw.pw_uid, pw.pw_gid
    subprocess.run(["userdel", SYSUSER], capture_output=True)
    subprocess.run(["groupdel", SYSUSER], capture_output=True)


class Site:
    """A world-readable directory with petrel, petrel-postdrop (setgid) and
    petrel.conf, and a daemon whose spool is below it."""

    def __init__(self, root, daemon):
        self.root = root
        self.p = daemon
        self.bin = root / "petrel"
        self.postdrop = root / "petrel-postdrop"

    @property
    def maildrop(self):
        return self.p.spool / "maildrop"

    @property
    def corrupt(self):
        return self.p.spool / "corrupt"

    def sync_conf(self):
        shutil.copy(self.p.conf_path, self.root / "petrel.conf")
        os.chmod(self.root / "petrel.conf", 0o644)

    def as_nobody(self, cmd, data=b"", env=None, groups=()):
        return subprocess.run([str(c) for c in cmd], input=data,
                              capture_output=True, timeout=30, cwd="/",
                              user=NOBODY.pw_uid, group=NOBODY.pw_gid,
                              extra_groups=list(groups), env=env or {})

    def sendmail(self, *args, data=b"", env=None):
        if isinstance(data, str):
            data = data.encode()
        return self.as_nobody([self.bin, "sendmail", "-C", self.p.conf_path,
                               *args], data=data, env=env)

    def maildrop_files(self):
        return sorted(os.listdir(self.maildrop))


@pytest.fixture
def site(sysuser, tmp_path):
    name, uid, gid = sysuser
    root = Path(tempfile.mkdtemp(prefix="petrel-postdrop-", dir="/tmp"))
    os.chmod(root, 0o755)
    made = []

    def make(start=True, queue_only="no", sink=None, listen=None):
        shutil.copy2(BIN, root / "petrel")
        shutil.copy2(POSTDROP, root / "petrel-postdrop")
        os.chown(root / "petrel-postdrop", 0, gid)
        os.chmod(root / "petrel-postdrop", 0o2755)
        extra = ""
        if sink is not None:
            extra = (f"[destination {SINK_DOMAIN}]\nroute = 127.0.0.1:{sink.port}\n"
                     "tls = none\nidle_timeout = 2s\n")
        w = root / "w"
        w.mkdir(mode=0o755)
        p = Petrel(w, top={"user": name, "queue_only": queue_only,
                           "retry_initial": "1s", "retry_max": "2s",
                           "log_file": str(tmp_path / "main.log")},
                   listen=listen, extra=extra)
        os.chmod(p.conf_path, 0o644)
        s = Site(root, p)
        s.sync_conf()
        made.append(p)
        if start:
            p.start()
        return s

    yield make
    for p in made:
        p.cleanup()
    shutil.rmtree(root, ignore_errors=True)


def ok(r):
    assert r.returncode == 0, (f"exit {r.returncode}\nstdout: {r.stdout!r}\n"
                               f"stderr: {r.stderr!r}")
    return r


def spool_bytes(content, sender="x@example.com", rcpts=("a@example.com",),
                envlines=None):
    """A spool file (spool_format.h) as sendmail would hand to postdrop."""
    if envlines is None:
        envlines = [f"id 1xAAAA-AAAAAA-AA", "time 1700000000000",
                    f"sender {sender}", "helo h", "client 127.0.0.1",
                    "proto local", "tls ", "body 7bit", "smtputf8 0",
                    "msgid <m@x>"] + [f"rcpt {r}" for r in rcpts]
    env = ("\n".join(envlines) + "\n").encode()
    return (content + env +
            f"PETREL-SPOOL 1 {len(content)} {len(env)}\n".encode())


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


MSG = (f"To: Jane <a@{SINK_DOMAIN}>\nBcc: b@{SINK_DOMAIN}\nSubject: cron\n\n"
       "from a script\n")


# --------------------------------------------------------------------------
# tests


def test_directories_and_modes(site, sysuser):
    name, uid, gid = sysuser
    s = site(queue_only="yes")
    for path, want in ((s.p.spool, 0o710), (s.maildrop, 0o1730),
                       (s.corrupt, 0o700), (s.p.spool / "queue", 0o700),
                       (s.p.spool / "tmp", 0o700)):
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode), path
        assert mode(path) == want, f"{path}: {mode(path):o}, expected {want:o}"
        assert (st.st_uid, st.st_gid) == (uid, gid), f"{path}: {st.st_uid}:{st.st_gid}"


def test_nobody_sendmail_t_delivered_while_daemon_runs(site, sink):
    s = site(sink=sink)
    r = ok(s.sendmail("-t", data=MSG))
    assert r.stdout == b"" and r.stderr == b""
    wait_until(lambda: len(sink.messages()) == 1, 15, "delivery to the sink")
    env = sink.messages()[0]
    assert env["mail_from"] == f"nobody@{HOSTNAME}"
    assert sorted(env["rcpts"]) == [f"a@{SINK_DOMAIN}", f"b@{SINK_DOMAIN}"]
    c = env["content"]
    assert c.startswith(f"Received: from nobody (uid {NOBODY.pw_uid})".encode())
    assert b"\r\nBcc:" not in c and c.endswith(b"\r\n\r\nfrom a script\r\n")
    log = s.p.log_text()
    assert re.search(rf"\S+ <= nobody@{re.escape(HOSTNAME)} U=nobody P=local "
                     r"S=\d+ id=<[^>]+> maildrop=[0-9a-f]{32}$", log, re.M), log
    wait_until(lambda: s.maildrop_files() == [] and s.p.queue_ids() == [], 10,
               "maildrop/ and queue/ to empty")


def test_waits_in_maildrop_while_stopped_then_delivered(site, sink):
    s = site(sink=sink)
    s.p.stop()
    r = ok(s.sendmail("-v", "-f", f"cron@{SINK_DOMAIN}", f"a@{SINK_DOMAIN}",
                      data="Subject: later\n\nwaiting\n"))
    assert b"handed to the maildrop" in r.stdout
    files = s.maildrop_files()
    assert len(files) == 1 and re.fullmatch(r"[0-9a-f]{32}", files[0]), files
    st = os.lstat(s.maildrop / files[0])
    gid = os.lstat(s.maildrop).st_gid
    assert (st.st_uid, st.st_gid, mode(s.maildrop / files[0])) == \
        (NOBODY.pw_uid, gid, 0o640)
    assert s.p.queue_ids() == []
    s.p.start()
    wait_until(lambda: len(sink.messages()) == 1, 15, "delivery after the start")
    assert sink.messages()[0]["mail_from"] == f"cron@{SINK_DOMAIN}"
    assert s.maildrop_files() == []
    # The file's owner, not anything in it, names the user.
    assert re.search(rf" <= cron@{SINK_DOMAIN} U=nobody P=local ", s.p.log_text())


def test_malformed_files_go_to_corrupt(site):
    s = site(queue_only="yes")
    good_content = b"Subject: x\r\n\r\nbody\r\n"
    bad = {
        "garbage": b"not a spool file at all\n",
        "norcpt": spool_bytes(good_content, rcpts=()),
        "barelf": spool_bytes(b"Subject: x\n\nbody\r\n"),
        "badrcpt": spool_bytes(good_content, rcpts=("not an address",)),
        "nul": spool_bytes(b"Subject: x\r\n\r\nb\x00dy\r\n"),
    }
    for n, data in bad.items():
        path = s.maildrop / n
        path.write_bytes(data)
        os.chown(path, NOBODY.pw_uid, -1)
    wait_until(lambda: sorted(os.listdir(s.corrupt)) == sorted(bad), 10,
               "every bad file in corrupt/")
    assert s.maildrop_files() == [] and s.p.queue_ids() == []
    for n, data in bad.items():
        assert (s.corrupt / n).read_bytes() == data
    log = s.p.log_text()
    for n, why in (("garbage", "no valid spool trailer"),
                   ("norcpt", "envelope:"), ("barelf", "bare LF"),
                   ("badrcpt", "malformed recipient"), ("nul", "NUL")):
        assert re.search(rf"pickup: maildrop/{n} \(U=nobody\): .*{why}.*; "
                         rf"moved to {re.escape(str(s.corrupt / n))}$", log, re.M), (n, log)
    # A good one still goes through.
    (s.maildrop / "good").write_bytes(spool_bytes(good_content))
    wait_until(lambda: len(s.p.queue_ids()) == 1, 10, "the good file queued")
    assert s.maildrop_files() == []


def test_claims_left_by_a_previous_run_are_settled(site):
    s = site(queue_only="yes")
    ok(s.sendmail("-f", "s@example.com", "a@example.com", data="x\n"))
    wait_until(lambda: len(s.p.queue_ids()) == 1, 10, "the message queued")
    (qid,) = s.p.queue_ids()
    s.p.stop()
    content = b"Subject: y\r\n\r\ny\r\n"
    # Committed before the stop (queue/<qid> exists): removed.
    (s.maildrop / f"done,{qid}").write_bytes(spool_bytes(content))
    # Claimed, never committed: taken again.
    (s.maildrop / "again,1xZZZZ-ZZZZZZ-ZZ").write_bytes(spool_bytes(content))
    s.p.start()
    wait_until(lambda: s.maildrop_files() == [] and len(s.p.queue_ids()) == 2, 10,
               "maildrop/ settled")
    assert f"{qid} pickup: maildrop/done,{qid} was queued before the last stop" \
        in s.p.log_text()


def test_postdrop_refusals_leave_nothing(site):
    s = site(queue_only="yes", listen={"max_message_size": "10K"})
    # Arguments (a config path above all) are refused.
    r = s.as_nobody([s.postdrop, "-C", "/tmp/evil.conf"],
                    data=spool_bytes(b"x\r\n"))
    assert r.returncode == EX_USAGE and b"takes no arguments" in r.stderr
    # Not a spool file.
    r = s.as_nobody([s.postdrop], data=b"hello\n")
    assert r.returncode == EX_TEMPFAIL, r
    # Over max_message_size + 64 KiB.
    big = spool_bytes(b"x" * (10 * 1024 + 64 * 1024) + b"\r\n")
    r = s.as_nobody([s.postdrop], data=big)
    assert r.returncode == EX_TEMPFAIL and b"too big" in r.stderr, r
    r = s.sendmail("a@example.com", data="y" * 20000 + "\n")
    assert r.returncode != 0
    assert s.maildrop_files() == [] and s.p.queue_ids() == []
    assert os.listdir(s.corrupt) == []
    # The caller's environment does not choose the configuration.
    r = s.as_nobody([s.postdrop], data=spool_bytes(b"Subject: z\r\n\r\nz\r\n"),
                    env={"PETREL_CONFIG": "/nonexistent"})
    assert r.returncode == 0, r
    wait_until(lambda: len(s.p.queue_ids()) == 1, 10, "the message queued")


def test_postdrop_missing_maildrop_fails_cleanly(site):
    s = site(start=False)
    r = s.sendmail("a@example.com", data="x\n")
    # The spool does not exist yet: not postdrop's case (make_dirs, as before).
    assert r.returncode != 0
    s.p.start()
    s.p.stop()
    shutil.rmtree(s.maildrop)
    r = s.sendmail("a@example.com", data="x\n")
    assert r.returncode == EX_TEMPFAIL and b"petrel-postdrop" in r.stderr, r


def test_nobody_cannot_read_the_spool(site, sysuser):
    name, uid, gid = sysuser
    s = site(queue_only="yes")
    s.p.stop()
    ok(s.sendmail("a@example.com", data="secret\n"))
    (f,) = s.maildrop_files()
    probe = ("import os, sys\n"
             "for p in sys.argv[1:]:\n"
             "    try:\n"
             "        os.listdir(p) if not p.endswith('F') else open(p[:-1]).read()\n"
             "        print('OPEN', p)\n"
             "    except PermissionError:\n"
             "        print('DENIED', p)\n")
    targets = [s.p.spool / "queue", s.maildrop, str(s.maildrop / f) + "F"]
    r = s.as_nobody([sys.executable, "-c", probe, *targets])
    assert r.stdout.decode().split() == sum((["DENIED", str(t)] for t in targets), []), r
    # Even with the petrel group (postdrop's effective group), maildrop/
    # cannot be listed, and queue/ not entered.
    r = s.as_nobody([sys.executable, "-c", probe, s.p.spool / "queue", s.maildrop],
                    groups=[gid])
    assert r.stdout.decode().split() == ["DENIED", str(s.p.spool / "queue"),
                                         "DENIED", str(s.maildrop)], r
