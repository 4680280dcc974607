"""STARTTLS (RFC 3207): the handshake, the state reset after it, logging,
command injection (CVE-2011-0411 class), and an independent client (swaks)."""

import re
import smtplib
import socket
import ssl
import subprocess

import pytest

from petrel_helpers import (HOSTNAME, client_tls_context, dot_stuff, expect,
                            expect_queued, make_message)


def test_starttls_reply_and_ehlo_after(petrel):
    with petrel.session() as c:
        r = c.cmd("STARTTLS")
        assert r.raw() == "220 2.0.0 Ready to start TLS"
        c.handshake()
        assert c.sock.version() == "TLSv1.3"
        r = c.cmd("EHLO x")
        expect(r, 250)
        assert r.lines == [f"{HOSTNAME} Hello x [127.0.0.1]", "PIPELINING",
                           "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES",
                           "CHUNKING", "SMTPUTF8",
                           "LIMITS RCPTMAX=1000 MAILMAX=1000"], r.raw()


def test_starttls_twice(petrel):
    with petrel.session() as c:
        c.starttls()
        c.ehlo()
        expect(c.cmd("STARTTLS"), 503, "5.5.1")
        c.marker()


def test_starttls_before_ehlo(petrel):
    """STARTTLS before any EHLO: either accepted (then a clean TLS session)
    or refused with 503 5.5.1; never anything else."""
    with petrel.connect() as c:
        r = c.cmd("STARTTLS")
        if r.code == 220:
            c.handshake()
            c.ehlo()
        else:
            expect(r, 503, "5.5.1")
            c.marker()


def test_starttls_disabled(petrel_factory):
    p = petrel_factory(listen={"starttls": "no"})
    with p.session() as c:
        expect(c.cmd("STARTTLS"), 502, "5.5.1")
        c.marker()


def test_ehlo_state_forgotten_after_starttls(petrel):
    with petrel.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        c.starttls()
        # no EHLO in TLS yet: MAIL is out of sequence; old transaction gone
        expect(c.mail("a@example.com"), 503, "5.5.1")
        expect(c.rcpt(), 503, "5.5.1")
        c.ehlo()
        expect(c.rcpt(), 503, "5.5.1")  # the pre-TLS MAIL is forgotten
        qid = c.send_message(make_message())
    sp = petrel.spool_msg(qid)
    assert sp.env["proto"] == "esmtps"


def test_smtplib_starttls_send_logged_esmtps(petrel):
    msg = make_message(msgid="<tls.1@test.example>")
    s = smtplib.SMTP("127.0.0.1", petrel.port, local_hostname="tls.client",
                     timeout=5)
    try:
        s.ehlo()
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=client_tls_context())
        assert code == 220
        s.ehlo()
        assert not s.has_extn("starttls")
        s.mail("tls@example.com")
        s.rcpt("r@local.example")
        code, resp = s.data(msg)
        assert code == 250
        qid = re.fullmatch(rb"2\.0\.0 Ok: queued as ([A-Za-z0-9-]+)", resp).group(1).decode()
        s.quit()
    finally:
        s.close()
    sp = petrel.spool_msg(qid)
    assert sp.body == msg
    assert sp.env["proto"] == "esmtps"
    assert re.fullmatch(r"TLS1\.3:[A-Z0-9_]+:\d+", sp.env["tls"]), sp.env["tls"]
    line = petrel.wait_log(rf" {qid} <= ")
    assert " H=tls.client [127.0.0.1]" in line, line
    assert re.search(r" P=esmtps( |$)", line), line
    m = re.search(r" X=TLS1\.3:([A-Z0-9_]+):(\d+)( |$)", line)
    assert m, line
    assert m.group(1).startswith("TLS_"), line
    assert int(m.group(2)) in (128, 256), line


def test_pipelining_in_tls(petrel):
    with petrel.session() as c:
        c.starttls()
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\nDATA\r\n")
        assert [r.code for r in c.read_replies(3)] == [250, 250, 354]
        c.send(make_message() + b".\r\nMAIL FROM:<c@example.com>\r\n"
               b"RCPT TO:<d@local.example>\r\nDATA\r\n")
        r = c.read_replies(4)
        expect_queued(r[0])
        assert [x.code for x in r[1:]] == [250, 250, 354]
        c.send(make_message() + b".\r\n")
        expect_queued(c.read_reply())
        c.marker()
    assert len(petrel.queue_files()) == 2
    assert petrel.sync_error_lines() == []


def test_many_messages_one_tls_session(petrel):
    with petrel.session() as c:
        c.starttls()
        c.ehlo()
        for i in range(25):
            c.send_message(make_message(subject=f"m{i}"))
    assert len(petrel.queue_files()) == 25


@pytest.mark.parametrize("listen", [
    pytest.param({"enforce_sync": "no"}, id="enforce_sync=no"),
    pytest.param({"sync_exempt_networks": "127.0.0.0/8"}, id="exempt"),
])
@pytest.mark.parametrize("injected", [
    b"RSET\r\n",
    b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@local.example>\r\n",
    b"HELP\r\nNOOP\r\n",
])
def test_starttls_injection_discarded(petrel_factory, listen, injected):
    p = petrel_factory(listen=listen)
    with p.session() as c:
        c.send(b"STARTTLS\r\n" + injected)
        expect(c.read_reply(), 220, "2.0.0")
        # whatever the server may have sent after the 220 in plaintext is
        # itself a bug: handshake() asserts nothing is buffered
        c.handshake()
        c.send("EHLO x\r\n")
        r = c.read_reply()
        assert r.code == 250 and r.lines[0] == f"{HOSTNAME} Hello x [127.0.0.1]", (
            f"first reply in TLS is not the EHLO reply:\n{r}")
        c.marker()
        # the injected MAIL was not executed
        expect(c.rcpt(), 503, "5.5.1")
    assert p.queue_files() == []


def test_starttls_injection_with_sync_enforced(petrel):
    c = petrel.session()
    c.send("STARTTLS\r\nRSET\r\n")
    replies = c.read_all_until_closed()
    assert [r.code for r in replies] == [554], "\n".join(r.raw() for r in replies)
    expect(replies[0], 554, "5.5.0")
    petrel.wait_log("SMTP synchronization error")
    c.close()


def test_tls_garbage_handshake_logged(petrel):
    with petrel.session() as c:
        expect(c.cmd("STARTTLS"), 220, "2.0.0")
        c.send(b"this is not a TLS ClientHello\r\n" * 4)
        try:
            while c._fill(5):
                pass
        except (socket.timeout, TimeoutError, OSError):
            pass
    petrel.wait_log("TLS error")
    # the daemon is still serving
    with petrel.session() as c2:
        c2.marker()


def test_tls_client_disconnects_mid_handshake(petrel):
    for _ in range(3):
        with petrel.session() as c:
            expect(c.cmd("STARTTLS"), 220, "2.0.0")
            c.send(b"\x16\x03\x01\x00")  # the start of a record, then close
    with petrel.session() as c:
        c.starttls()
        c.ehlo()
        c.send_message(make_message())


def test_configured_certificate_is_used(petrel_factory, tmp_path):
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2",
                        "-subj", "/CN=configured.petrel.test"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    p = petrel_factory(listen={"tls_cert": str(cert), "tls_key": str(key)})
    with p.session() as c:
        c.starttls()
        der = c.sock.getpeercert(binary_form=True)
    assert der == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_self_signed_cert_kept_across_restart(petrel_factory):
    petrel = petrel_factory(seed_tls=False)
    before = (petrel.spool / "tls" / "cert.pem").read_bytes()
    with petrel.session() as c:
        c.starttls()
        der1 = c.sock.getpeercert(binary_form=True)
    petrel.restart()
    assert (petrel.spool / "tls" / "cert.pem").read_bytes() == before
    with petrel.session() as c:
        c.starttls()
        assert c.sock.getpeercert(binary_form=True) == der1
    assert der1 == ssl.PEM_cert_to_DER_cert(before.decode())


def test_swaks_tls(petrel):
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(petrel.port), "--tls",
         "--ehlo", "swaks.test", "--from", "sw@example.com",
         "--to", "r@local.example", "--timeout", "5"],
        capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, out
    assert "TLS started" in out or "TLSv1.3" in out, out
    msgs = petrel.all_msgs()
    assert len(msgs) == 1
    assert msgs[0].env["proto"] == "esmtps"
    line = petrel.wait_log(rf" {msgs[0].env['id']} <= ")
    assert re.search(r" P=esmtps .*X=TLS1\.3:", line) or (
        " P=esmtps" in line and " X=TLS1.3:" in line), line


def test_tls_large_message(petrel):
    """A multi-megabyte message over TLS arrives byte-exact (TLS records
    and the server's buffers split it at arbitrary points)."""
    lines = [(b"%06d " % i) + b"t" * 70 + b"\r\n" for i in range(30000)]
    lines[5] = b"." + lines[5]
    content = b"Subject: tls large\r\n\r\n" + b"".join(lines)
    with petrel.session(timeout=15) as c:
        c.starttls()
        c.ehlo()
        qid = c.send_message(dot_stuff(content))
    assert petrel.spool_msg(qid).body == content


def test_tls_pipelined_burst_spans_records(petrel):
    """MAIL + 400 RCPT + DATA in one TLS write (more than one TLS record):
    every command is answered, none is left waiting inside the TLS layer."""
    rcpts = [f"recipient-number-{i:04d}@local.example" for i in range(400)]
    with petrel.session() as c:
        c.starttls()
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\n"
               + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n")
        r = c.read_replies(402)
        expect(r[0], 250, "2.1.0")
        assert all(x.code == 250 and x.enh == "2.1.5" for x in r[1:401])
        expect(r[401], 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert petrel.spool_msg(qid).rcpts == rcpts


def test_tls_bdat_stream(petrel):
    content = b"Subject: tls bdat\r\n\r\n" + (b"b" * 998 + b"\r\n") * 100
    chunks = [content[i:i + 20000] for i in range(0, len(content), 20000)]
    with petrel.session() as c:
        c.starttls()
        c.ehlo()
        wire = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\n"
        for i, ch in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            wire += f"BDAT {len(ch)}{last}\r\n".encode() + ch
        c.send(wire)
        r = c.read_replies(2 + len(chunks))
        assert [x.code for x in r] == [250] * (2 + len(chunks))
        qid = expect_queued(r[-1])
        c.marker()
    assert petrel.spool_msg(qid).body == content


def test_tls_idle_timeout(petrel_factory):
    p = petrel_factory(listen={"command_timeout": "2s"})
    c = p.session(timeout=8)
    c.starttls()
    c.ehlo()
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()
    c.close()
