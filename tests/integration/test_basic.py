"""Greeting, EHLO/HELO, the simple commands, a full multi-recipient message
through smtplib, and the CLI (check-config, --version)."""

import re
import smtplib
import socket
import subprocess
import time

import pytest

from petrel_helpers import (BIN, GREETING, HOSTNAME, REPO, SMTPConn, expect,
                            expect_queued, make_message, split_received)


def expected_ehlo(name="x", size=52428800, rcptmax=1000, mailmax=1000,
                  pipelining=True, starttls=True, chunking=True):
    lines = [f"{HOSTNAME} Hello {name} [127.0.0.1]"]
    if pipelining:
        lines.append("PIPELINING")
    lines.append(f"SIZE {size}")
    lines.append("8BITMIME")
    lines.append("ENHANCEDSTATUSCODES")
    if starttls:
        lines.append("STARTTLS")
    if chunking:
        lines.append("CHUNKING")
    lines.append("SMTPUTF8")
    lines.append(f"LIMITS RCPTMAX={rcptmax} MAILMAX={mailmax}")
    return lines


# --------------------------------------------------------------------------
# greeting, EHLO, HELO


def test_greeting_exact(petrel):
    with petrel.connect(greeting=False) as c:
        r = c.read_reply()
        assert r.raw() == GREETING


LIMITS = {"max_message_size": "123456", "max_recipients": "7",
          "max_messages": "9"}


@pytest.mark.parametrize("variant", ["all", "pipelining=no", "chunking=no",
                                     "starttls=no", "all-off"])
def test_ehlo_keywords_exact(petrel_factory, variant):
    listen = dict(LIMITS)
    flags = {"pipelining": True, "chunking": True, "starttls": True}
    if variant == "all-off":
        for k in flags:
            flags[k] = False
            listen[k] = "no"
    elif variant != "all":
        k = variant.split("=")[0]
        flags[k] = False
        listen[k] = "no"
    p = petrel_factory(listen=listen)
    with p.connect() as c:
        r = c.cmd("EHLO client.test")
        assert r.code == 250
        assert r.lines == expected_ehlo("client.test", size=123456, rcptmax=7,
                                        mailmax=9, **flags), r.raw()


def test_ehlo_size_with_unit_suffix(petrel_factory):
    p = petrel_factory(listen={"max_message_size": "1M", "max_recipients": "3",
                               "max_messages": "4"})
    with p.session() as c:
        r = c.cmd("EHLO x")
        assert r.lines == expected_ehlo(size=1048576, rcptmax=3, mailmax=4), r.raw()


def test_ehlo_defaults(petrel):
    """Defaults from the design: SIZE 50 MiB, RCPTMAX/MAILMAX 1000."""
    with petrel.connect() as c:
        r = c.cmd("EHLO x")
        assert r.lines == expected_ehlo(), r.raw()


def test_helo_exact(petrel):
    with petrel.connect() as c:
        r = c.cmd("HELO client.test")
        assert r.raw() == f"250 {HOSTNAME} Hello client.test [127.0.0.1]"


@pytest.mark.parametrize("arg", ["[127.0.0.1]", "[IPv6:::1]", "client.example.",
                                 "UPPER.Example"])
def test_ehlo_argument_forms(petrel, arg):
    with petrel.connect() as c:
        r = c.cmd(f"EHLO {arg}")
        expect(r, 250)
        assert r.lines[0] == f"{HOSTNAME} Hello {arg} [127.0.0.1]", r.raw()


@pytest.mark.parametrize("verb", ["EHLO", "HELO", "EHLO ", "HELO "])
def test_helo_ehlo_missing_argument(petrel, verb):
    with petrel.connect() as c:
        expect(c.cmd(verb), 501, "5.5.4")
        c.marker()
        # still usable
        c.ehlo()


def test_verbs_case_insensitive(petrel):
    with petrel.connect() as c:
        expect(c.cmd("ehlo x"), 250)
        expect(c.cmd("mail from:<a@example.com>"), 250, "2.1.0")
        expect(c.cmd("rcpt to:<b@local.example>"), 250, "2.1.5")
        expect(c.cmd("rset"), 250, "2.0.0")
        expect(c.cmd("noop"), 250, "2.0.0")


def test_ehlo_twice_resets_transaction(petrel):
    with petrel.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        c.ehlo()
        # the transaction is gone: RCPT needs a MAIL again
        expect(c.rcpt(), 503, "5.5.1")


# --------------------------------------------------------------------------
# simple commands


def test_rset_noop_exact(petrel):
    with petrel.session() as c:
        r = c.cmd("RSET")
        assert r.raw() == "250 2.0.0 Ok"
        r = c.cmd("NOOP")
        assert r.raw() == "250 2.0.0 Ok"
        r = c.cmd("NOOP with an argument")
        expect(r, 250, "2.0.0")


def test_rset_clears_transaction(petrel):
    with petrel.session() as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        expect(c.cmd("RSET"), 250, "2.0.0")
        expect(c.cmd("DATA"), 503, "5.5.1")
        expect(c.rcpt(), 503, "5.5.1")
        expect(c.mail(), 250, "2.1.0")
    assert petrel.queue_files() == []


def test_quit(petrel):
    with petrel.session() as c:
        r = c.cmd("QUIT")
        assert r.raw() == "221 2.0.0 Bye"
        c.expect_closed()


def test_quit_before_helo(petrel):
    with petrel.connect() as c:
        expect(c.cmd("QUIT"), 221, "2.0.0")
        c.expect_closed()


def test_vrfy(petrel):
    with petrel.session() as c:
        expect(c.cmd("VRFY someone"), 252, "2.5.2")


def test_help(petrel):
    with petrel.session() as c:
        expect(c.cmd("HELP"), 214, "2.0.0")


def test_expn(petrel):
    with petrel.session() as c:
        expect(c.cmd("EXPN list"), 502, "5.5.1")


@pytest.mark.parametrize("line", ["FOO", "MAILX FROM:<a@b.example>", "XYZZY 1 2",
                                  "", "HELOX x"])
def test_unknown_command(petrel, line):
    with petrel.session() as c:
        expect(c.cmd(line), 500, "5.5.2")
        c.marker()


def test_mail_before_helo(petrel):
    with petrel.connect() as c:
        expect(c.mail("a@example.com"), 503, "5.5.1")
        c.marker()


def test_rcpt_before_mail(petrel):
    with petrel.session() as c:
        expect(c.rcpt(), 503, "5.5.1")


def test_nested_mail(petrel):
    with petrel.session() as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.mail(), 503, "5.5.1")


def test_data_without_mail(petrel):
    with petrel.session() as c:
        expect(c.cmd("DATA"), 503, "5.5.1")
        c.marker()


def test_data_without_accepted_rcpt(petrel):
    with petrel.session() as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.cmd("DATA"), 554, "5.5.1")
        c.marker()
    assert petrel.queue_files() == []


def test_data_after_only_rejected_rcpt(petrel):
    with petrel.session() as c:
        expect(c.mail(), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<bad@@x>"), 501, "5.1.3")
        expect(c.cmd("DATA"), 554, "5.5.1")


@pytest.mark.parametrize("length", [2100, 5000, 100000])
def test_command_line_too_long(petrel, length):
    """A command line over 2048 octets gets exactly one 500 5.5.6 and the
    connection stays usable (the tail is not parsed as a command)."""
    with petrel.session() as c:
        line = "NOOP " + "A" * length
        r = c.cmd(line)
        expect(r, 500, "5.5.6")
        c.marker()
        c.send_message(make_message())
    assert len(petrel.queue_files()) == 1


def test_command_line_within_limit(petrel):
    with petrel.session() as c:
        expect(c.cmd("NOOP " + "A" * 1000), 250, "2.0.0")


# --------------------------------------------------------------------------
# a full message


def test_smtplib_multi_recipient_lands_in_spool(petrel):
    rcpts = ["one@local.example", "two@local.example", "three@elsewhere.example"]
    msg = make_message(subject="multi",
                       body="Line one.\r\n.starts with a dot\r\n..two dots\r\nlast\r\n",
                       msgid="<multi.1@test.example>")
    s = smtplib.SMTP("127.0.0.1", petrel.port, local_hostname="client.test",
                     timeout=5)
    try:
        code, resp = s.ehlo("client.test")
        assert code == 250
        assert s.has_extn("pipelining") and s.has_extn("size")
        code, resp = s.mail("alice@example.com")
        assert (code, resp) == (250, b"2.1.0 Ok")
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert (code, resp) == (250, b"2.1.5 Ok")
        code, resp = s.data(msg)
        assert code == 250, resp
        m = re.fullmatch(rb"2\.0\.0 Ok: queued as ([A-Za-z0-9-]+)", resp)
        assert m, resp
        qid = m.group(1).decode()
        code, _ = s.quit()
        assert code == 221
    finally:
        s.close()

    assert petrel.queue_ids() == [qid]
    sp = petrel.spool_msg(qid)
    hdr, rest = split_received(sp.content)
    assert rest == msg  # smtplib dot-stuffs; the spool holds it unstuffed
    assert b"\n" not in hdr.replace(b"\r\n", b"")
    assert sp.env["id"] == qid
    assert sp.env["sender"] == "alice@example.com"
    assert sp.env["helo"] == "client.test"
    assert sp.env["client"] == "127.0.0.1"
    assert sp.env["proto"] == "esmtp"
    assert sp.env["tls"] == ""
    assert sp.env["body"] == "7bit"
    assert sp.env["smtputf8"] == "0"
    assert sp.env["msgid"].strip("<>") == "multi.1@test.example"
    assert sp.rcpts == rcpts
    now_ms = time.time() * 1000
    assert abs(int(sp.env["time"]) - now_ms) < 120_000
    assert list(sp.env) == ["id", "time", "sender", "helo", "client", "proto",
                            "tls", "body", "smtputf8", "msgid"]
    assert petrel.tmp_files() == []

    line = petrel.wait_log(rf"^\S+ \S+ {qid} <= ")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", line), line
    assert re.search(rf" {qid} <= alice@example\.com H=client\.test \[127\.0\.0\.1\]",
                     line), line
    assert re.search(r" P=esmtp( |$)", line), line
    assert " X=" not in line, line
    m = re.search(r" S=(\d+)( |$)", line)
    assert m, line
    assert int(m.group(1)) in (sp.content_size, len(msg)), line
    assert re.search(r" id=<?multi\.1@test\.example>?( |$)", line), line


def test_smtplib_sendmail_two_messages_one_connection(petrel):
    s = smtplib.SMTP("127.0.0.1", petrel.port, local_hostname="c.test", timeout=5)
    try:
        for i in range(2):
            refused = s.sendmail(f"s{i}@example.com", [f"r{i}@local.example"],
                                 make_message(subject=f"n{i}"))
            assert refused == {}
        s.quit()
    finally:
        s.close()
    msgs = petrel.all_msgs()
    assert sorted(m.env["sender"] for m in msgs) == ["s0@example.com", "s1@example.com"]
    for m in msgs:
        i = m.env["sender"][1]
        assert m.rcpts == [f"r{i}@local.example"]
        assert f"Subject: n{i}\r\n".encode() in m.body


def test_helo_session_proto_smtp(petrel):
    with petrel.connect() as c:
        c.helo("old.client")
        qid = c.send_message(make_message())
    sp = petrel.spool_msg(qid)
    assert sp.env["proto"] == "smtp"
    assert sp.env["helo"] == "old.client"
    line = petrel.wait_log(rf" {qid} <= ")
    assert re.search(r" P=smtp( |$)", line), line


def test_null_sender(petrel):
    with petrel.session() as c:
        expect(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).env["sender"] == ""


def test_queue_id_unique(petrel):
    ids = []
    with petrel.session() as c:
        for i in range(20):
            ids.append(c.send_message(make_message()))
    assert len(set(ids)) == 20
    assert sorted(ids) == petrel.queue_ids()


def test_connection_logged(petrel):
    with petrel.connect() as c:
        port = c.sock.getsockname()[1]
        c.cmd("QUIT")
    petrel.wait_log(rf"SMTP connection from \[127\.0\.0\.1\]:{port}( |$)")


def test_spool_tmp_empty_and_tls_cert_created(petrel_factory):
    petrel = petrel_factory(seed_tls=False)
    assert (petrel.spool / "tmp").is_dir()
    assert (petrel.spool / "queue").is_dir()
    assert petrel.tmp_files() == []
    cert = petrel.spool / "tls" / "cert.pem"
    key = petrel.spool / "tls" / "key.pem"
    assert cert.exists() and key.exists()
    r = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr


def test_sigterm_exits_cleanly(petrel):
    rc = petrel.stop()
    assert rc == 0
    with pytest.raises(OSError):
        SMTPConn("127.0.0.1", petrel.port, timeout=2)


# --------------------------------------------------------------------------
# CLI


def meson_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    return m.group(1)


def test_version():
    r = subprocess.run([str(BIN), "--version"], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    out = (r.stdout + r.stderr).decode()
    assert meson_version() in out, out
    assert "petrel" in out.lower(), out


def test_check_config_good(petrel_factory):
    p = petrel_factory(start=False, listen={"max_recipients": "77",
                                            "pipelining": "no"})
    r = p.run_cli("check-config", "-c", str(p.conf_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert HOSTNAME in out
    assert str(p.port) in out
    assert re.search(r"(?m)^\s*max_recipients\s*=\s*77\s*$", out), out
    assert re.search(r"(?m)^\s*pipelining\s*=\s*(no|false|0|off)\s*$", out), out
    # the effective config is itself a config that loads
    again = p.dir / "effective.conf"
    again.write_bytes(r.stdout)
    r2 = p.run_cli("check-config", "-c", str(again))
    assert r2.returncode == 0, r2.stderr

    def settings(b):
        return [ln.strip() for ln in b.decode().splitlines()
                if ln.strip() and not ln.lstrip().startswith(("#", ";"))]
    assert settings(r2.stdout) == settings(r.stdout)


def _bad_config(p, section_line, bad):
    """Insert `bad` right after the line `section_line`; return its line
    number (1-based)."""
    lines = p.config_text().split("\n")
    idx = lines.index(section_line) + 1
    lines.insert(idx, bad)
    p.conf_path.write_text("\n".join(lines))
    return idx + 1


@pytest.mark.parametrize("section,bad,key", [
    ("[listen smtp]", "pipelining = maybe", "pipelining"),
    ("[listen smtp]", "frobnicate = 1", "frobnicate"),
    ("[listen smtp]", "max_recipients = lots", "max_recipients"),
    ("[listen smtp]", "bare_lf = sometimes", "bare_lf"),
    ("[listen smtp]", "command_timeout = soon", "command_timeout"),
    ("[relay]", "networks = 10.0.0.0/99", "networks"),
    ("[listen smtp]", "sync_exempt_networks = not-an-address", "sync_exempt_networks"),
])
def test_check_config_bad(petrel_factory, section, bad, key):
    p = petrel_factory(start=False)
    line = _bad_config(p, section, bad)
    r = p.run_cli("check-config", "-c", str(p.conf_path))
    assert r.returncode != 0
    err = r.stderr.decode()
    assert re.search(rf"petrel\.conf:{line}\b", err), err
    assert key in err, err


def test_check_config_bad_top_level(petrel_factory):
    p = petrel_factory(start=False)
    text = p.config_text()
    p.conf_path.write_text("max_sessions = many\n" + text)
    r = p.run_cli("check-config", "-c", str(p.conf_path))
    assert r.returncode != 0
    err = r.stderr.decode()
    assert re.search(r"petrel\.conf:1\b", err), err
    assert "max_sessions" in err, err


def test_check_config_missing_file(tmp_path):
    r = subprocess.run([str(BIN), "check-config", "-c", str(tmp_path / "nope.conf")],
                       capture_output=True, timeout=10)
    assert r.returncode != 0
    assert r.stderr.strip()


def test_serve_with_bad_config_fails(petrel_factory):
    p = petrel_factory(start=False, listen={"pipelining": "maybe"})
    r = subprocess.run([str(BIN), "serve", "-c", str(p.conf_path), "-f"],
                       capture_output=True, timeout=10)
    assert r.returncode != 0
    assert b"pipelining" in r.stderr


def test_listen_address_in_use_fails(petrel, petrel_factory):
    p2 = petrel_factory(start=False, port=petrel.port)
    r = subprocess.run([str(BIN), "serve", "-c", str(p2.conf_path), "-f"],
                       capture_output=True, timeout=10)
    assert r.returncode != 0
    # the first daemon is unharmed
    with petrel.connect() as c:
        c.ehlo()


def test_quit_after_client_half_close(petrel):
    """A client that sends QUIT and shuts down its sending side still gets
    the 221."""
    with petrel.session() as c:
        c.send("QUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        expect(c.read_reply(), 221, "2.0.0")
        c.expect_closed()


def test_nul_in_command_line(petrel):
    with petrel.session() as c:
        r = c.cmd(b"NOOP\x00x")
        assert 500 <= r.code < 600, r.raw()
        c.marker()


def test_clients_vanishing_during_greeting_delay(petrel_factory):
    p = petrel_factory(listen={"greeting_delay": "200ms"})
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.close()
    with p.connect() as c:
        c.ehlo()
        c.send_message(make_message())
    p.check_alive()


def test_envelope_layout(petrel):
    with petrel.session() as c:
        qid = c.send_message(make_message(), rcpts=["a@local.example", "b@local.example"])
    sp = petrel.spool_msg(qid)
    keys = [ln.split(b" ", 1)[0] for ln in sp.env_raw.split(b"\n")[:-1]]
    assert keys == [b"id", b"time", b"sender", b"helo", b"client", b"proto", b"tls",
                    b"body", b"smtputf8", b"msgid", b"rcpt", b"rcpt"], keys
    assert (petrel.queue_dir / qid).stat().st_size == (
        sp.content_size + sp.env_size + len(f"PETREL-SPOOL 1 {sp.content_size} {sp.env_size}\n"))
