"""Relay control: a client outside [relay] networks may only send to
local_domains (and <postmaster>); the classic relay-attack address shapes."""

import socket

import pytest

from petrel_helpers import Petrel, expect, expect_queued, make_message

OUTSIDE = {"networks": "10.0.0.0/8"}


@pytest.fixture
def outside(petrel_factory):
    """A daemon for which 127.0.0.1 is an outside client."""
    return petrel_factory(relay=OUTSIDE)


def test_outside_local_domain_accepted(outside):
    with outside.session() as c:
        qid = c.send_message(make_message(), rcpts=["user@local.example"])
    assert outside.spool_msg(qid).rcpts == ["user@local.example"]


def test_outside_other_domain_denied_and_logged(outside):
    with outside.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.rcpt("user@other.example"), 550, "5.7.1")
        c.marker()
    line = outside.wait_log("relaying denied")
    assert "user@other.example" in line or "127.0.0.1" in line, line
    assert outside.queue_files() == []


def test_outside_mixed_recipients(outside):
    with outside.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.rcpt("one@local.example"), 250, "2.1.5")
        expect(c.rcpt("two@other.example"), 550, "5.7.1")
        expect(c.rcpt("three@local.example"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert outside.spool_msg(qid).rcpts == ["one@local.example", "three@local.example"]


@pytest.mark.parametrize("addr,code,enh", [
    ("user%other.example@local.example", 250, "2.1.5"),
    ("@local.example:user@other.example", 550, "5.7.1"),
    ("@a.example,@local.example:user@other.example", 550, "5.7.1"),
    ("other.example!user@local.example", 250, "2.1.5"),
    ('"user@other.example"@local.example', 250, "2.1.5"),
    ("user@local.example.", 501, "5.1.3"),
    ("user@[127.0.0.1]", 550, "5.7.1"),
    ("user@[IPv6:::1]", 550, "5.7.1"),
    ("USER@LOCAL.EXAMPLE", 250, "2.1.5"),
    ("user@Local.Example", 250, "2.1.5"),
    ("user@sub.local.example", 550, "5.7.1"),
    ("user@local.example.other.example", 550, "5.7.1"),
    ("user@notlocal.example", 550, "5.7.1"),
    ("user@other.example@local.example", 501, "5.1.3"),
    ("postmaster", 250, "2.1.5"),
    ("postmaster@local.example", 250, "2.1.5"),
    ("postmaster@other.example", 550, "5.7.1"),
])
def test_relay_attack_shapes(outside, addr, code, enh):
    with outside.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.cmd(f"RCPT TO:<{addr}>"), code, enh)
        if code == 250:
            expect(c.cmd("DATA"), 354)
            c.send(make_message() + b".\r\n")
            qid = expect_queued(c.read_reply())
        c.marker()
    if code == 250:
        rcpts = outside.spool_msg(qid).rcpts
        assert len(rcpts) == 1
        # accepted as the local address it is, never rewritten to a remote
        # one; <postmaster> is qualified with the first local domain
        # (RFC 5321 4.1.1.3, 2.3.5)
        want = "postmaster@local.example" if addr == "postmaster" else addr
        assert rcpts[0] == want, rcpts
    else:
        assert outside.queue_files() == []


def test_inside_client_may_relay(petrel):
    with petrel.session() as c:
        qid = c.send_message(make_message(), rcpts=["user@other.example",
                                                    "u@local.example"])
    assert petrel.spool_msg(qid).rcpts == ["user@other.example", "u@local.example"]
    assert "relaying denied" not in petrel.log_text()


def test_source_route_dropped_for_inside_client(petrel):
    with petrel.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<@relay.example:user@other.example>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send(make_message() + b".\r\n")
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).rcpts == ["user@other.example"]


def test_empty_networks_everyone_outside(petrel_factory):
    p = petrel_factory(relay={"networks": ""})
    with p.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.rcpt("x@other.example"), 550, "5.7.1")
        expect(c.rcpt("x@local.example"), 250, "2.1.5")


def test_several_local_domains(petrel_factory):
    p = petrel_factory(relay={"networks": "10.0.0.0/8",
                              "local_domains": "local.example, second.example"})
    with p.session() as c:
        expect(c.mail("a@example.com"), 250, "2.1.0")
        expect(c.rcpt("x@local.example"), 250, "2.1.5")
        expect(c.rcpt("x@second.example"), 250, "2.1.5")
        expect(c.rcpt("x@third.example"), 550, "5.7.1")


def _ipv6_available():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_available(), reason="no ::1")
@pytest.mark.parametrize("networks,allowed", [("::1/128", True),
                                              ("127.0.0.0/8", False)])
def test_ipv6_client(tmp_path, networks, allowed):
    p = Petrel(tmp_path / "v6", host="::1", relay={"networks": networks})
    try:
        p.start()
        with p.session() as c:
            r = c.cmd("EHLO x")
            assert r.lines[0].endswith("[::1]") or r.lines[0].endswith("[IPv6:::1]"), r.raw()
            expect(c.mail("a@example.com"), 250, "2.1.0")
            r = c.rcpt("x@other.example")
            if allowed:
                expect(r, 250, "2.1.5")
            else:
                expect(r, 550, "5.7.1")
    finally:
        died = p.cleanup()
    assert died is None, p.diag()
