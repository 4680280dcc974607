"""Postfix's smtp-source as an independent, parallel SMTP client.

smtp-source speaks HELO and lock-step SMTP; its man page says "No SMTP
command pipelining support", so there is no pipelining mode to run. The -d
mode (many messages per connection) is the closest: it is run below."""

import shutil
import subprocess

from petrel_helpers import parse_spool_file

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def run_source(p, *args, timeout=150):
    cmd = [SMTP_SOURCE, "-f", "src@example.com", "-t", "sink@local.example",
           "-M", "source.test", *args, f"127.0.0.1:{p.port}"]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r


def check_spool(p, n, rcpts=1):
    files = p.queue_files()
    assert len(files) == n
    for f in files:
        sp = parse_spool_file(f)
        assert sp.env["sender"] == "src@example.com"
        assert sp.env["helo"] == "source.test"
        assert sp.env["proto"] == "smtp"
        assert len(sp.rcpts) == rcpts
        assert sp.body.startswith(b"From: <src@example.com>\r\n"), sp.body[:200]
        assert sp.body.endswith(b"\r\n")
    assert p.tmp_files() == []
    assert p.sync_error_lines() == []


def test_smtp_source_20_sessions_1000_messages(petrel):
    r = run_source(petrel, "-s", "20", "-m", "1000")
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    check_spool(petrel, 1000)
    received = [ln for ln in petrel.log_lines() if " <= src@example.com " in ln]
    assert len(received) == 1000


def test_smtp_source_many_messages_per_connection(petrel):
    r = run_source(petrel, "-s", "5", "-m", "300", "-d")
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    check_spool(petrel, 300)


def test_smtp_source_recipients_and_payload(petrel):
    r = run_source(petrel, "-s", "4", "-m", "40", "-r", "5", "-l", "100000")
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    check_spool(petrel, 40, rcpts=5)
    for f in petrel.queue_files()[:3]:
        assert parse_spool_file(f).content_size > 100000


def test_smtp_source_outside_client_rejected(petrel_factory):
    """An outside client relaying: the RCPT gets 550, smtp-source gives up
    (non-zero exit) and nothing is queued."""
    p = petrel_factory(relay={"networks": "10.0.0.0/8"})
    cmd = [SMTP_SOURCE, "-f", "src@example.com", "-t", "sink@other.example",
           "-M", "source.test", "-s", "2", "-m", "4", f"127.0.0.1:{p.port}"]
    r = subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert b"550" in r.stdout + r.stderr
    assert p.queue_files() == []
