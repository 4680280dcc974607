"""Installation and packaging (issue 4): scripts/install.sh, the man pages,
the systemd unit, the logrotate snippet and the example configuration.

- scripts/install.sh with DESTDIR into a tmp dir (PREFIX=/usr/local and
  PREFIX=/usr) puts every file where it belongs with the right mode, and a
  second run changes nothing (petrel.conf is never overwritten);
- the man pages render without groff warnings;
- the man pages are honest: every key that `petrel check-config` prints is
  in petrel.conf(5), in the right section, with the same default, and every
  key documented there is one that check-config knows; every command and
  option of `petrel --help` is in petrel(8);
- dist/petrel.conf.example passes check-config, also with every commented
  key uncommented, and lists every key;
- the logrotate snippet parses (logrotate -d), and rotating a running
  daemon's log with it makes the daemon reopen its log (SIGUSR1 through the
  pid_file);
- the unit passes `systemd-analyze verify`.

Tools that are missing (groff, logrotate, systemd-analyze) skip the tests
that need them. No test installs into the system itself.
"""

import gzip
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from petrel_helpers import BIN, BUILT_BIN, free_port  # noqa: E402

REPO = HERE.parents[1]
INSTALL = REPO / "scripts" / "install.sh"
MAN8 = REPO / "docs" / "man" / "petrel.8"
MAN5 = REPO / "docs" / "man" / "petrel.conf.5"
UNIT = REPO / "dist" / "petrel.service"
LOGROTATE = REPO / "dist" / "petrel.logrotate"
EXAMPLE = REPO / "dist" / "petrel.conf.example"

SECTIONS = ("top", "listen", "relay", "destination")


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def run(cmd, timeout=60, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kw)


def install(destdir, prefix=None):
    env = dict(os.environ, DESTDIR=str(destdir), BUILD=str(BUILT_BIN.parent))
    env.pop("PREFIX", None)
    if prefix is not None:
        env["PREFIX"] = prefix
    r = run([INSTALL], env=env)
    assert r.returncode == 0, f"install.sh failed:\n{r.stdout}\n{r.stderr}"
    return r


def tree(root):
    """{relative path: (kind, mode, content or link target)} of a tree."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = "/" + str(p.relative_to(root))
        st = p.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", mode, os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", mode, None)
        else:
            out[rel] = ("file", mode, p.read_bytes())
    return out


def check_config(*args):
    r = run([BIN, "check-config", *args])
    assert r.returncode == 0, f"check-config {' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


# --------------------------------------------------------------------------
# parsing check-config output and the man page


def kind_of(header):
    """'[listen smtp]' -> 'listen'; '[destination *]' -> 'destination'."""
    return header.strip("[]").split()[0]


def parse_printed(text):
    """check-config output -> {kind: [(section label, {key: value})]}."""
    out = {k: [] for k in SECTIONS}
    cur = {}
    out["top"].append(("", cur))
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or line.startswith(("\t", " ")):
            continue  # comments, list continuation lines
        if line.startswith("["):
            cur = {}
            out[kind_of(line)].append((line, cur))
            continue
        m = re.fullmatch(r"([a-z0-9_]+) =(?: (.*))?", line)
        assert m, f"unexpected check-config line: {line!r}"
        cur[m[1]] = m[2] or ""
    return out


def printed_keys(text):
    """{kind: set of keys} printed anywhere in check-config output."""
    return {k: set().union(*[set(d) for _, d in v]) if v else set()
            for k, v in parse_printed(text).items()}


def unroff(s):
    s = re.sub(r"\\f[BIRP]", "", s)
    return s.replace("\\-", "-").replace("\\&", "").replace("\\(aq", "'").strip()


def man_sections(text):
    """[(title, [lines])] of a man page, split at .SH."""
    out = []
    for line in text.splitlines():
        if line.startswith(".SH"):
            out.append((line[3:].strip().strip('"'), []))
        elif out:
            out[-1][1].append(line)
    return out


def tp_tags(lines):
    """The tag line of every .TP paragraph."""
    return [lines[i + 1] for i, ln in enumerate(lines[:-1]) if ln.startswith(".TP")]


def man_keys():
    """petrel.conf.5 -> {kind: {key: default}}; default None when the page
    gives a placeholder (no fixed default)."""
    kinds = {"TOP-LEVEL KEYS": "top", "[listen NAME] SECTIONS": "listen",
             "[relay] SECTION": "relay", "[destination PATTERN] SECTIONS": "destination"}
    out = {k: {} for k in SECTIONS}
    seen = set()
    for title, lines in man_sections(MAN5.read_text()):
        kind = kinds.get(title)
        if kind is None:
            continue
        seen.add(kind)
        for tag in tp_tags(lines):
            m = re.fullmatch(r'\.B ([a-z0-9_]+) =(?: (.*))?', tag)
            if m:
                out[kind][m[1]] = unroff(m[2] or "")
                continue
            m = re.match(r'\.BI "([a-z0-9_]+) = " ', tag)
            assert m, f"petrel.conf.5 [{title}]: key paragraph not in the form " \
                      f"'.B key = default' or '.BI \"key = \" placeholder': {tag!r}"
            out[kind][m[1]] = None
    assert seen == set(SECTIONS), f"petrel.conf.5 lacks sections: {set(SECTIONS) - seen}"
    return out


UNITS_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
UNITS_B = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def norm(value):
    """A value as comparable: durations in ms, sizes in octets, lists as
    tuples of items."""
    items = []
    for tok in re.split(r"[,\s]+", value.strip()):
        if not tok:
            continue
        m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", tok)
        if m:
            items.append(("ms", int(m[1]) * UNITS_MS[m[2]]))
            continue
        m = re.fullmatch(r"(\d+)([KMG])", tok)
        if m:
            items.append(int(m[1]) * UNITS_B[m[2]])
            continue
        items.append(int(tok) if tok.isdigit() else tok)
    return tuple(items)


# A configuration that sets every key check-config leaves out when unset.
ALL_OPTIONAL = """\
hostname = mx.petrel.example
smarthost = relay.example.net:25
dns_resolver = 127.0.0.1@53
helo_name = mx.petrel.example
user = petrel
pid_file = /run/petrel/petrel.pid

[listen smtp]
address = 127.0.0.1:25
tls_cert = /etc/petrel/cert.pem
tls_key = /etc/petrel/key.pem

[relay]
local_domains = example.com

[destination example.org]
route = 192.0.2.10:2525
"""


@pytest.fixture(scope="module")
def all_printed(tmp_path_factory):
    """{kind: keys} printed by check-config for the defaults, the example
    and a configuration with every optional key set."""
    conf = tmp_path_factory.mktemp("conf") / "all.conf"
    conf.write_text(ALL_OPTIONAL)
    keys = {k: set() for k in SECTIONS}
    for out in (check_config(), check_config("-c", EXAMPLE), check_config("-c", conf)):
        for k, v in printed_keys(out).items():
            keys[k] |= v
    return keys


# --------------------------------------------------------------------------
# install.sh


EXPECTED_LOCAL = {
    # path: (kind, mode)
    "/usr/local/sbin/petrel": ("file", 0o755),
    "/usr/local/sbin/sendmail": ("link", None),
    "/usr/local/bin/mailq": ("link", None),
    "/usr/local/share/man/man8/petrel.8.gz": ("file", 0o644),
    "/usr/local/share/man/man5/petrel.conf.5.gz": ("file", 0o644),
    "/etc/systemd/system/petrel.service": ("file", 0o644),
    "/etc/logrotate.d/petrel": ("file", 0o644),
    "/etc/petrel/petrel.conf.example": ("file", 0o644),
    "/etc/petrel/petrel.conf": ("file", 0o644),
    "/var/spool/petrel": ("dir", 0o710),
    "/var/spool/petrel/maildrop": ("dir", 0o1730),
    "/var/log/petrel": ("dir", 0o750),
}
# The setgid helper, when the build has it (staged 0755: the package sets
# group petrel and mode 2755).
POSTDROP_BUILT = (BUILT_BIN.parent / "petrel-postdrop").exists()
if POSTDROP_BUILT:
    EXPECTED_LOCAL["/usr/local/sbin/petrel-postdrop"] = ("file", 0o755)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    dest = tmp_path_factory.mktemp("stage") / "root"
    install(dest)
    return dest


def test_destdir_install_puts_every_file_in_place(staged):
    t = tree(staged)
    for path, (kind, mode) in EXPECTED_LOCAL.items():
        assert path in t, f"{path} not installed"
        assert t[path][0] == kind, f"{path}: {t[path][0]}, expected {kind}"
        if mode is not None:
            assert t[path][1] == mode, f"{path}: mode {t[path][1]:o}, expected {mode:o}"
    # Nothing else but the directories leading to these (mode 0755).
    extra = [p for p in t if p not in EXPECTED_LOCAL and t[p][0] != "dir"]
    assert not extra, f"unexpected files installed: {extra}"
    for p, (kind, mode, _) in t.items():
        if kind == "dir" and p not in EXPECTED_LOCAL:
            assert mode == 0o755, f"{p}: mode {mode:o}"

    assert t["/usr/local/sbin/sendmail"][2] == "petrel"
    assert t["/usr/local/bin/mailq"][2] == "../sbin/petrel"
    assert (staged / "usr/local/bin/mailq").resolve() == (staged / "usr/local/sbin/petrel")
    assert t["/usr/local/sbin/petrel"][2] == BUILT_BIN.read_bytes()
    r = run([staged / "usr/local/sbin/petrel", "--version"])
    assert r.returncode == 0 and r.stdout.startswith("petrel ")

    assert gzip.decompress(t["/usr/local/share/man/man8/petrel.8.gz"][2]) == MAN8.read_bytes()
    assert gzip.decompress(t["/usr/local/share/man/man5/petrel.conf.5.gz"][2]) == MAN5.read_bytes()
    assert t["/etc/logrotate.d/petrel"][2] == LOGROTATE.read_bytes()
    assert t["/etc/petrel/petrel.conf.example"][2] == EXAMPLE.read_bytes()
    assert t["/etc/petrel/petrel.conf"][2] == EXAMPLE.read_bytes()

    unit = t["/etc/systemd/system/petrel.service"][2].decode()
    assert "\nExecStart=/usr/local/sbin/petrel serve -c /etc/petrel/petrel.conf -f\n" in unit
    assert unit == UNIT.read_text().replace("ExecStart=/usr/sbin/petrel ",
                                            "ExecStart=/usr/local/sbin/petrel ")


def test_install_again_changes_nothing_and_keeps_petrel_conf(staged):
    before = tree(staged)
    conf = staged / "etc/petrel/petrel.conf"
    conf.write_text("; edited by the administrator\n")
    r = install(staged)
    assert "petrel.conf exists: kept" in r.stdout
    after = tree(staged)
    assert conf.read_text() == "; edited by the administrator\n"
    after["/etc/petrel/petrel.conf"] = before["/etc/petrel/petrel.conf"]
    assert after == before


def test_install_prefix_usr(tmp_path):
    install(tmp_path, prefix="/usr")
    t = tree(tmp_path)
    for path, kind, mode in [
            ("/usr/sbin/petrel", "file", 0o755),
            ("/usr/sbin/sendmail", "link", None),
            ("/usr/bin/mailq", "link", None),
            ("/usr/share/man/man8/petrel.8.gz", "file", 0o644),
            ("/usr/share/man/man5/petrel.conf.5.gz", "file", 0o644),
            ("/lib/systemd/system/petrel.service", "file", 0o644),
            ("/etc/logrotate.d/petrel", "file", 0o644),
            ("/etc/petrel/petrel.conf", "file", 0o644),
            ("/var/spool/petrel", "dir", 0o710),
            ("/var/spool/petrel/maildrop", "dir", 0o1730),
            ("/var/log/petrel", "dir", 0o750)] + (
                [("/usr/sbin/petrel-postdrop", "file", 0o755)]
                if POSTDROP_BUILT else []):
        assert path in t and t[path][0] == kind, f"{path} not installed as {kind}"
        if mode is not None:
            assert t[path][1] == mode, f"{path}: mode {t[path][1]:o}"
    assert "/etc/systemd/system/petrel.service" not in t
    assert not any(p.startswith("/usr/local") for p in t)
    unit = t["/lib/systemd/system/petrel.service"][2].decode()
    assert unit == UNIT.read_text()


def test_install_without_a_binary_fails_clearly(tmp_path):
    env = dict(os.environ, DESTDIR=str(tmp_path / "root"), BUILD=str(tmp_path / "nobuild"))
    r = run([INSTALL], env=env)
    assert r.returncode == 1
    assert "not found: build first" in r.stderr
    assert not (tmp_path / "root").exists()


def test_install_script_passes_shellcheck():
    need("shellcheck")
    r = run(["shellcheck", INSTALL])
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------
# man pages


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page):
    need("groff")
    env = dict(os.environ, LC_ALL="C.UTF-8")
    r = run(["groff", "-man", "-Tutf8", "-ww", "-z", page], env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run(["groff", "-man", "-Tutf8", "-ww", page], env=env)
    text = re.sub(r".\x08", "", r.stdout)  # overstrike bold and underline
    assert r.returncode == 0 and "\nNAME\n" in text and "\nSEE ALSO\n" in text
    assert "\\f" not in text and "\\-" not in text, "escape left in the output"


def test_every_printed_key_is_documented_with_its_default(all_printed):
    documented = man_keys()
    for kind in SECTIONS:
        missing = all_printed[kind] - set(documented[kind])
        assert not missing, f"petrel.conf.5 does not document [{kind}] keys: {sorted(missing)}"

    # Defaults: as check-config prints them with no file ([listen smtp] and
    # [destination *] hold the defaults of their kinds).
    defaults = {k: v[0][1] for k, v in parse_printed(check_config()).items() if v}
    for kind in SECTIONS:
        for key, doc in documented[kind].items():
            if doc is None or key not in defaults.get(kind, {}):
                continue
            assert norm(doc) == norm(defaults[kind][key]), \
                f"petrel.conf.5 [{kind}] {key}: documented default {doc!r}, " \
                f"check-config prints {defaults[kind][key]!r}"


def test_every_documented_key_exists(all_printed):
    for kind, keys in man_keys().items():
        unknown = set(keys) - all_printed[kind]
        assert not unknown, f"petrel.conf.5 documents [{kind}] keys that check-config " \
                            f"does not know: {sorted(unknown)}"


def test_every_command_and_option_is_in_petrel_8():
    r = run([BIN, "--help"])
    assert r.returncode == 0
    commands, options = set(), set()
    for line in r.stdout.splitlines():
        words = line.replace("usage:", "").split()
        assert words[0] == "petrel", line
        commands |= set(words[1].split("|"))
        for w in words[2:]:
            options |= {o.rstrip(".,") for o in w.strip("[]").split("|") if o.startswith("-")}
    assert {"serve", "check-config", "queue", "--version"} <= commands

    sections = dict(man_sections(MAN8.read_text()))
    tagged = set()
    for title in ("COMMANDS", "OPTIONS", "SENDMAIL INTERFACE"):
        for tag in tp_tags(sections[title]):
            tagged |= {unroff(w).strip('",') for w in tag.split()[1:]}
    missing = (commands | options) - tagged
    assert not missing, f"petrel.8 does not document: {sorted(missing)}"
    synopsis = unroff("\n".join(sections["SYNOPSIS"]))
    for c in commands:
        assert c in synopsis, f"petrel.8 SYNOPSIS lacks {c}"


# --------------------------------------------------------------------------
# example configuration


def test_example_config_passes_check_config():
    out = parse_printed(check_config("-c", EXAMPLE))
    top = out["top"][0][1]
    assert top["spool_dir"] == "/var/spool/petrel"
    assert top["log_file"] == "/var/log/petrel/main.log"
    assert top["user"] == "petrel"
    assert top["pid_file"] == "/run/petrel/petrel.pid"


def test_example_config_with_every_key_uncommented_passes(tmp_path):
    text = EXAMPLE.read_text()
    uncommented = re.sub(r"(?m)^;(?=\[|[a-z0-9_]+ = )", "", text)
    assert uncommented.count("\n[") > text.count("\n[")
    conf = tmp_path / "uncommented.conf"
    conf.write_text(uncommented)
    check_config("-c", conf)


def test_example_config_lists_every_key(all_printed):
    text = EXAMPLE.read_text()
    listed = set(re.findall(r"(?m)^;?([a-z0-9_]+) = ", text))
    every = set().union(*all_printed.values())
    assert not every - listed, f"petrel.conf.example lacks {sorted(every - listed)}"


# --------------------------------------------------------------------------
# logrotate


def test_logrotate_parses_the_snippet(tmp_path):
    need("logrotate")
    r = run(["logrotate", "-d", "-s", tmp_path / "state", LOGROTATE])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    assert "/var/log/petrel/*.log" in r.stdout + r.stderr


def _systemd_runs_petrel():
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return False
    return run(["systemctl", "-q", "is-active", "petrel.service"]).returncode == 0


def _wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_logrotate_snippet_makes_the_daemon_reopen_its_log(tmp_path):
    need("logrotate")
    if _systemd_runs_petrel():
        pytest.skip("the snippet would signal the system's petrel.service")
    logdir, rundir = tmp_path / "log", tmp_path / "run"
    logdir.mkdir()
    rundir.mkdir()
    log, pidfile = logdir / "main.log", rundir / "petrel.pid"
    conf = tmp_path / "petrel.conf"
    conf.write_text(f"hostname = mx.petrel.example\nspool_dir = {tmp_path / 'spool'}\n"
                    f"log_file = {log}\npid_file = {pidfile}\n"
                    f"[listen smtp]\naddress = 127.0.0.1:{free_port()}\n")
    snippet = LOGROTATE.read_text()
    assert "/var/log/petrel/" in snippet and "/run/petrel/petrel.pid" in snippet
    lr = tmp_path / "logrotate.conf"
    lr.write_text(snippet.replace("/var/log/petrel/", f"{logdir}/")
                  .replace("/run/petrel/petrel.pid", str(pidfile)))

    proc = subprocess.Popen([str(BIN), "serve", "-c", str(conf), "-f"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: log.exists() and " started, pid " in log.read_text()
                         and pidfile.exists()), "daemon did not start"
        assert int(pidfile.read_text()) == proc.pid
        r = run(["logrotate", "-f", "-s", tmp_path / "state", lr])
        assert r.returncode == 0, r.stdout + r.stderr
        rotated = logdir / "main.log.1"
        assert rotated.exists() and " started, pid " in rotated.read_text()
        assert _wait_for(lambda: log.exists() and "log reopened (SIGUSR1)" in log.read_text()), \
            f"no reopen in the new log; files: {sorted(p.name for p in logdir.iterdir())}"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode(errors="replace")
    assert "petrel stopped" in log.read_text()
    assert not pidfile.exists()


# --------------------------------------------------------------------------
# systemd unit


def test_systemd_unit_verifies(staged, tmp_path):
    need("systemd-analyze")
    unit = (staged / "etc/systemd/system/petrel.service").read_text()
    # Point ExecStart at the staged binary so that verify can check it; the
    # staged man pages answer the Documentation= lines.
    binary = staged / "usr/local/sbin/petrel"
    local = tmp_path / "petrel.service"
    local.write_text(unit.replace("ExecStart=/usr/local/sbin/petrel ", f"ExecStart={binary} "))
    env = dict(os.environ, MANPATH=str(staged / "usr/local/share/man"))
    r = run(["systemd-analyze", "verify", local], env=env)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_systemd_unit_settings():
    lines = [ln.strip() for ln in UNIT.read_text().splitlines()]
    settings = {}
    for ln in lines:
        if "=" in ln and not ln.startswith("#"):
            k, v = ln.split("=", 1)
            settings[k] = v
    assert settings["Type"] == "simple"
    assert settings["ExecStart"] == "/usr/sbin/petrel serve -c /etc/petrel/petrel.conf -f"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["Restart"] == "on-failure"
    assert settings["RuntimeDirectory"] == "petrel"
    for k in ("NoNewPrivileges", "PrivateTmp"):
        assert settings[k] == "yes"
    assert settings["ProtectSystem"] == "full"
    assert "CAP_NET_BIND_SERVICE" in settings["CapabilityBoundingSet"]
    # systemd must wait longer than the daemon's own shutdown_timeout.
    top = parse_printed(check_config("-c", EXAMPLE))["top"][0][1]
    assert int(settings["TimeoutStopSec"]) > norm(top["shutdown_timeout"])[0][1] / 1000
    # The pid_file of the example is where the unit's RuntimeDirectory is.
    assert top["pid_file"].startswith("/run/" + settings["RuntimeDirectory"] + "/")
