"""MAIL/RCPT syntax and ESMTP parameters (SIZE, BODY, SMTPUTF8), address
syntax, and what ends up in the envelope."""

import pytest

from petrel_helpers import expect, expect_queued, make_message


@pytest.mark.parametrize("line,code,enh", [
    ("MAIL FROM:<a@example.com>", 250, "2.1.0"),
    ("MAIL FROM:<>", 250, "2.1.0"),
    ("MAIL FROM: <a@example.com>", 250, "2.1.0"),  # space after colon, tolerated
    ("MAIL FROM:<a@example.com> SIZE=1000", 250, "2.1.0"),
    ("MAIL FROM:<a@example.com> SIZE=0", 250, "2.1.0"),
    ("MAIL FROM:<a@example.com> BODY=7BIT", 250, "2.1.0"),
    ("MAIL FROM:<a@example.com> BODY=8BITMIME", 250, "2.1.0"),
    ("MAIL FROM:<a@example.com> body=8bitmime", 250, "2.1.0"),
    ("MAIL FROM:<a@example.com> SMTPUTF8", 250, "2.1.0"),
    ("MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME SMTPUTF8", 250, "2.1.0"),
    ("MAIL FROM:<a@[127.0.0.1]>", 250, "2.1.0"),
    ("MAIL FROM:<a@[IPv6:2001:db8::1]>", 250, "2.1.0"),
    ('MAIL FROM:<"a b"@example.com>', 250, "2.1.0"),
    ("MAIL FROM:<@relay.example:a@example.com>", 250, "2.1.0"),
    # syntax
    ("MAIL", 501, "5.5.4"),
    ("MAIL FROM", 501, "5.5.4"),
    ("MAIL TO:<a@example.com>", 501, "5.5.4"),
    # bad addresses
    ("MAIL FROM:<a@>", 501, "5.1.7"),
    ("MAIL FROM:<@example.com>", 501, "5.1.7"),
    ("MAIL FROM:<a@@example.com>", 501, "5.1.7"),
    ("MAIL FROM:<a@example..com>", 501, "5.1.7"),
    ("MAIL FROM:<a@-example.com>", 501, "5.1.7"),
    ("MAIL FROM:<a@example.com.>", 501, "5.1.7"),
    ("MAIL FROM:<a.@example.com>", 501, "5.1.7"),
    ("MAIL FROM:<a b@example.com>", 501, "5.1.7"),
    ("MAIL FROM:<a@example.com", 501, "5.1.7"),
    ("MAIL FROM:<a@[300.0.0.1]>", 501, "5.1.7"),
    # parameters
    ("MAIL FROM:<a@example.com> FOO=bar", 555, "5.5.4"),
    ("MAIL FROM:<a@example.com> BODY=BINARYMIME", 555, "5.5.4"),
    ("MAIL FROM:<a@example.com> AUTH=<>", 555, "5.5.4"),
    ("MAIL FROM:<a@example.com> RET=FULL", 555, "5.5.4"),
    ("MAIL FROM:<a@example.com> SIZE=abc", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> SIZE=", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> SIZE=-1", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> SIZE=99999999999999999999999", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> SIZE=10 SIZE=10", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> BODY=7BIT BODY=7BIT", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> BODY=9BIT", 501, "5.5.4"),
    ("MAIL FROM:<a@example.com> SIZE=52428801", 552, "5.3.4"),
    # UTF-8
    ("MAIL FROM:<j\u00f6rg@example.com>", 553, "5.6.7"),
    ("MAIL FROM:<j\u00f6rg@example.com> SMTPUTF8", 250, "2.1.0"),
    ("MAIL FROM:<a@b\u00fccher.example> SMTPUTF8", 250, "2.1.0"),
])
def test_mail(petrel, line, code, enh):
    with petrel.session() as c:
        expect(c.cmd(line), code, enh)
        c.marker()


LONG_LOCAL = "a" * 65
LONG_LABEL = "b" * 64
LONG_DOMAIN = ".".join(["c" * 60] * 5) + ".example"  # 304 + 8 > 255


@pytest.mark.parametrize("line", [
    f"MAIL FROM:<{LONG_LOCAL}@example.com>",
    f"MAIL FROM:<a@{LONG_LABEL}.example>",
    f"MAIL FROM:<a@{LONG_DOMAIN}>",
    f"RCPT TO:<{LONG_LOCAL}@local.example>",
    f"RCPT TO:<a@{LONG_LABEL}.example>",
    f"RCPT TO:<a@{LONG_DOMAIN}>",
], ids=["mail-local65", "mail-label64", "mail-domain312",
        "rcpt-local65", "rcpt-label64", "rcpt-domain312"])
def test_address_too_long(petrel, line):
    """RFC 5321 4.5.3.1: local part <= 64, label <= 63, domain <= 255."""
    with petrel.session() as c:
        if line.startswith("RCPT"):
            expect(c.mail("a@example.com"), 250, "2.1.0")
        r = c.cmd(line)
        assert r.code in (501, 553), r.raw()
        assert r.enh is not None and r.enh.startswith("5.1."), r.raw()
        c.marker()


def test_mail_invalid_utf8_with_smtputf8(petrel):
    with petrel.session() as c:
        r = c.cmd(b"MAIL FROM:<j\xc3\x28rg@example.com> SMTPUTF8")
        expect(r, 501, "5.1.7")


def test_mail_size_over_configured_max(petrel_factory):
    p = petrel_factory(listen={"max_message_size": "10000"})
    with p.session() as c:
        expect(c.mail("a@example.com", "SIZE=10001"), 552, "5.3.4")
        expect(c.mail("a@example.com", "SIZE=10000"), 250, "2.1.0")


@pytest.mark.parametrize("line,code,enh", [
    ("RCPT TO:<b@local.example>", 250, "2.1.5"),
    ("RCPT TO: <b@local.example>", 250, "2.1.5"),
    ("RCPT TO:<postmaster>", 250, "2.1.5"),
    ("RCPT TO:<Postmaster>", 250, "2.1.5"),
    ("RCPT TO:<b@[127.0.0.1]>", 250, "2.1.5"),
    ("RCPT", 501, "5.5.4"),
    ("RCPT TO", 501, "5.5.4"),
    ("RCPT FROM:<b@local.example>", 501, "5.5.4"),
    ("RCPT TO:<>", 501, "5.1.3"),
    ("RCPT TO:<b@>", 501, "5.1.3"),
    ("RCPT TO:<b@@local.example>", 501, "5.1.3"),
    ("RCPT TO:<b@local..example>", 501, "5.1.3"),
    ("RCPT TO:<b>", 501, "5.1.3"),
    ("RCPT TO:<b@local.example> NOTIFY=NEVER", 555, "5.5.4"),
    ("RCPT TO:<b@local.example> ORCPT=rfc822;b@local.example", 555, "5.5.4"),
    ("RCPT TO:<b@local.example> FOO", 555, "5.5.4"),
    ("RCPT TO:<j\u00f6rg@local.example>", 553, "5.6.7"),
])
def test_rcpt(petrel, line, code, enh):
    with petrel.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.cmd(line), code, enh)
        c.marker()


def test_utf8_addresses_need_smtputf8_on_mail(petrel):
    with petrel.session() as c:
        expect(c.mail("a@example.com", "SMTPUTF8"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<j\u00f6rg@local.example>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send("Subject: \u00fcmlaut\r\n\r\nbody\r\n.\r\n")
        qid = expect_queued(c.read_reply())
    sp = petrel.spool_msg(qid)
    assert sp.env["smtputf8"] == "1"
    assert sp.rcpts == ["j\u00f6rg@local.example"]


@pytest.mark.parametrize("params,body", [("", "7bit"), ("BODY=7BIT", "7bit"),
                                         ("BODY=8BITMIME", "8bitmime")])
def test_body_param_in_envelope(petrel, params, body):
    with petrel.session() as c:
        expect(c.mail("a@example.com", params), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    sp = petrel.spool_msg(qid)
    assert sp.env["body"] == body
    assert sp.env["smtputf8"] == "0"


def test_sender_stored_as_given(petrel):
    with petrel.session() as c:
        expect(c.cmd('MAIL FROM:<"quoted sender"@Example.COM>'), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).env["sender"] == '"quoted sender"@Example.COM'


def test_binarymime_not_offered(petrel):
    with petrel.session() as c:
        expect(c.mail("a@example.com", "BODY=BINARYMIME"), 555, "5.5.4")
        expect(c.mail("a@example.com", "BODY=8BITMIME"), 250, "2.1.0")


def test_mail_params_after_helo(petrel):
    """After HELO no extension was offered: ESMTP parameters are refused."""
    with petrel.connect() as c:
        c.helo()
        r = c.mail("a@example.com", "SIZE=100")
        expect(r, 555, "5.5.4")
        expect(c.mail("a@example.com"), 250, "2.1.0")
