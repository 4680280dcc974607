"""The measuring instruments measure right: tests/tools/smtp_sink.py (an SMTP
sink that counts turns, TLS handshakes/resumptions, messages, and injects
faults) and tests/tools/delay_proxy.py (fixed one-way delay), driven by
smtplib and raw sockets. No Petrel daemon is involved."""

import hashlib
import signal
import smtplib
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from delay_proxy import DelayProxy  # noqa: E402
from smtp_sink import SinkProcess  # noqa: E402

TEST_LIMIT = 10  # seconds per test
HOST = "sink.petrel.test"


class TooSlow(Exception):
    pass


@pytest.fixture(autouse=True)
def _ten_seconds():
    def on_alarm(signum, frame):
        raise TooSlow(f"test exceeded {TEST_LIMIT}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def sink_factory(tmp_path):
    made = []

    def make(**kw):
        s = SinkProcess(0, workdir=str(tmp_path / f"sink{len(made)}"), **kw)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def sink(sink_factory):
    return sink_factory()


# --------------------------------------------------------------------------
# a small raw client


class Raw:
    def __init__(self, addr, timeout=5.0, family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.buf = b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError(f"connection closed; unparsed {self.buf!r}")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln.decode()

    def reply(self):
        """One (multi-line) reply -> (code, [texts])."""
        texts = []
        while True:
            ln = self.line()
            assert len(ln) >= 3 and ln[:3].isdigit() and ln[3:4] in ("-", " ", ""), ln
            texts.append(ln[4:])
            if ln[3:4] != "-":
                return int(ln[:3]), texts

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def codes(self, n):
        return [c for c, _ in self.replies(n)]

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def read_until_eof(self):
        """All bytes until the server closes (EOF or reset)."""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                self.buf += d
        except ConnectionResetError:
            pass
        out, self.buf = self.buf, b""
        return out

    def silent_for(self, seconds):
        """True if nothing arrives (and the connection stays open) for `seconds`."""
        self.sock.settimeout(seconds)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(5.0)
        self.buf += d
        return False

    def starttls(self, ctx, **kw):
        assert self.buf == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1", **kw)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def session(sink, ehlo="client.test"):
    r = Raw(sink.address)
    assert r.reply()[0] == 220
    code, _ = r.cmd(f"EHLO {ehlo}")
    assert code == 250
    return r


def client_ctx(sink, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(sink.cert)       # the sink's generated self-signed cert
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def stuff(content):
    """Dot-stuff and terminate content for DATA."""
    lines = content.split(b"\r\n")
    out = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)
    if not content.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


def txn(i, rcpts=1):
    s = f"MAIL FROM:<s{i}@example.com>\r\n"
    for j in range(rcpts):
        s += f"RCPT TO:<r{i}.{j}@example.net>\r\n"
    return s


def msg(i, size=0):
    body = f"Subject: message {i}\r\n\r\nbody of {i}\r\n".encode()
    if size:
        body += b"x" * (size - len(body) - 2) + b"\r\n"
    return body


def summary(s):
    return {k: v for k, v in s.items() if k != "per_connection"}


# --------------------------------------------------------------------------
# turns: the number that matters


def test_non_pipelined_three_messages(sink):
    s = smtplib.SMTP("127.0.0.1", sink.port, timeout=5)
    s.ehlo("client.test")
    for i in range(3):
        s.sendmail(f"s{i}@example.com", [f"r{i}@example.net"], msg(i))
    s.quit()
    st = sink.wait_closed(1)
    # greeting->EHLO, then per message MAIL, RCPT, DATA, body, then QUIT
    assert st["turns"] == 1 + 3 * 4 + 1, summary(st)
    assert 4 <= st["turns"] / st["messages"] <= 5
    assert st["setup_turns"] == 2                     # EHLO, first MAIL
    assert st["warm_turns_per_message"] == 4.0
    for k, v in dict(connections=1, ehlo=1, mail=3, rcpt_accepted=3, rcpt_rejected=0,
                     data_cmds=3, bdat_cmds=0, messages=3, quit=1, rset=0,
                     max_messages_per_connection=3, sync_violations=0,
                     tls_handshakes=0).items():
        assert st[k] == v, (k, summary(st))
    pc = st["per_connection"]
    assert len(pc) == 1 and pc[0]["messages"] == 3 and pc[0]["turns"] == 14
    assert pc[0]["tls"] is False and pc[0]["resumed"] is False and pc[0]["closed"]
    assert st["bytes_in"] > 0 and st["bytes_out"] > 0


def test_pipelined_body_dot_next_transaction(sink):
    """body + "." + next MAIL/RCPT/DATA in one write: one turn per message."""
    n = 5
    with session(sink) as r:
        r.send(txn(0) + "DATA\r\n")
        assert r.codes(3) == [250, 250, 354]
        for i in range(n):
            nxt = txn(i + 1) + "DATA\r\n" if i + 1 < n else "QUIT\r\n"
            r.send(stuff(msg(i)) + nxt.encode())
            want = [250, 250, 250, 354] if i + 1 < n else [250, 221]
            assert r.codes(len(want)) == want
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["messages"] == n
    assert st["turns"] == n + 2, summary(st)          # + EHLO, + first MAIL group
    assert st["warm_turns_per_message"] == 1.0
    assert st["sync_violations"] == 0
    assert [m["content"] for m in sink.messages()] == [msg(i) for i in range(n)]


def test_pipelined_then_body_two_turns(sink):
    """MAIL/RCPT/DATA pipelined, then body (Exim, KumoMTA): two turns per message."""
    n = 4
    with session(sink) as r:
        for i in range(n):
            r.send(txn(i, rcpts=2) + "DATA\r\n")
            assert r.codes(4) == [250, 250, 250, 354]
            r.send(stuff(msg(i)))
            assert r.reply()[0] == 250
        assert r.cmd("QUIT")[0] == 221
    st = sink.wait_closed(1)
    assert st["turns"] == 1 + 2 * n + 1
    assert st["warm_turns_per_message"] == 2.0
    assert st["rcpt_accepted"] == 2 * n and st["sync_violations"] == 0


def test_bdat_pipelined_transactions_in_one_write(sink):
    n = 6
    contents = [msg(i) + b"binary \x00\xff and a fake end\r\n.\r\nand bare\nLF\r\n." for i in range(n)]
    with session(sink) as r:
        out = b""
        for i, c in enumerate(contents):
            out += txn(i).encode() + f"BDAT {len(c)} LAST\r\n".encode() + c
        r.send(out + b"QUIT\r\n")
        codes = r.codes(3 * n + 1)
        assert codes == [250, 250, 250] * n + [221]
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["messages"] == n and st["bdat_cmds"] == n and st["data_cmds"] == 0
    assert st["turns"] == 2 < st["messages"], summary(st)   # EHLO, the one big write
    assert st["warm_turns_per_message"] == 0.0
    msgs = sink.messages()
    assert [m["content"] for m in msgs] == contents
    for i, m in enumerate(msgs):
        assert m["method"] == "BDAT" and m["bdat_chunks"] == 1
        assert m["transaction"] == i + 1 and m["seq"] == i + 1 and m["connection"] == 1
        assert m["sha256"] == hashlib.sha256(contents[i]).hexdigest()


def test_bdat_chunks_split_at_odd_places(sink):
    content = bytes(range(256)) * 40 + b"\r\n.\r\n"
    chunks = [content[:1000], content[1000:1001], content[1001:7000], content[7000:]]
    stream = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
    for i, c in enumerate(chunks):
        stream += f"BDAT {len(c)}\r\n".encode() + c
    stream += b"BDAT 0 LAST\r\n"
    with session(sink) as r:
        for k in range(0, len(stream), 333):       # odd TCP write boundaries
            r.send(stream[k:k + 333])
            time.sleep(0.001)
        replies = r.replies(2 + len(chunks) + 1)
        assert [c for c, _ in replies] == [250] * 7
        assert replies[2][1][0].startswith("2.0.0 1000 octets")
        r.cmd("QUIT")
    m, = sink.messages()
    assert m["content"] == content and m["bdat_chunks"] == 5 and m["size"] == len(content)
    assert sink.stats()["bdat_cmds"] == 5


def test_data_dot_unstuffing_and_sha256(sink):
    content = (b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
               b"bare\nLF then \n.\n not an end\r\nbare CR \r. x\r\n\r\nlast line")
    with session(sink) as r:
        r.send(txn(0) + "DATA\r\n")
        assert r.codes(3) == [250, 250, 354]
        wire = stuff(content)
        assert wire.count(b"\r\n.\r\n") == 1                  # only the real end
        for k in range(0, len(wire), 7):                       # split mid-terminator too
            r.send(wire[k:k + 7])
        assert r.reply()[0] == 250
        r.send(txn(1) + "DATA\r\n")
        assert r.codes(3) == [250, 250, 354]
        r.send(b".\r\n")                                       # empty message
        assert r.reply()[0] == 250
    msgs = sink.messages()
    assert msgs[0]["content"] == content + b"\r\n"
    assert msgs[0]["sha256"] == hashlib.sha256(content + b"\r\n").hexdigest()
    assert msgs[0]["method"] == "DATA" and msgs[0]["tls"] is False
    assert msgs[0]["mail_from"] == "s0@example.com" and msgs[0]["rcpts"] == ["r0.0@example.net"]
    assert msgs[1]["content"] == b"" and msgs[1]["size"] == 0
    assert msgs[1]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert msgs[1]["transaction"] == 2


# --------------------------------------------------------------------------
# TLS


def test_starttls_with_smtplib(sink):
    s = smtplib.SMTP("127.0.0.1", sink.port, timeout=5)
    s.ehlo("client.test")
    assert s.has_extn("starttls")
    s.starttls(context=client_ctx(sink))        # verifies the generated certificate
    s.ehlo("client.test")
    assert not s.has_extn("starttls")
    s.sendmail("a@example.com", ["b@example.net"], msg(1))
    s.quit()
    st = sink.wait_closed(1)
    assert st["tls_handshakes"] == 1 and st["tls_resumed"] == 0 and st["tls_failures"] == 0
    assert st["tls_num_tickets"] == 2
    pc = st["per_connection"][0]
    assert pc["tls"] and not pc["resumed"] and pc["tls_version"] == "TLSv1.3"
    assert pc["setup_turns"] == 4                       # EHLO, STARTTLS, EHLO, MAIL
    m, = sink.messages()
    assert m["tls"] is True and m["content"] == msg(1)


class _SessionContext:
    """smtplib.starttls() has no session argument: hand it one."""

    def __init__(self, ctx, sess):
        self.ctx, self.sess = ctx, sess

    def wrap_socket(self, sock, server_hostname=None):
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname, session=self.sess)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.3", "tls1.2"])
def test_tls_session_resumption(sink, version):
    ctx = client_ctx(sink, max_version=version)
    s = smtplib.SMTP("127.0.0.1", sink.port, timeout=5)
    s.ehlo()
    s.starttls(context=ctx)
    # TLS 1.3 tickets arrive after the handshake: a session taken right after
    # it has no ticket and cannot resume; read something (the EHLO reply) first.
    too_early = s.sock.session
    s.ehlo()
    sess = s.sock.session
    assert sess is not None and sess.has_ticket
    assert too_early.has_ticket == (version == ssl.TLSVersion.TLSv1_2)
    assert not s.sock.session_reused
    s.quit()

    s = smtplib.SMTP("127.0.0.1", sink.port, timeout=5)
    s.ehlo()
    s.starttls(context=_SessionContext(ctx, sess))
    s.ehlo()
    assert s.sock.session_reused
    s.sendmail("a@example.com", ["b@example.net"], msg(1))
    s.quit()
    if version == ssl.TLSVersion.TLSv1_3:
        # no false positive: offering the ticketless session is a full handshake
        s = smtplib.SMTP("127.0.0.1", sink.port, timeout=5)
        s.ehlo()
        s.starttls(context=_SessionContext(ctx, too_early))
        s.ehlo()
        assert not s.sock.session_reused
        s.quit()
    n = 3 if version == ssl.TLSVersion.TLSv1_3 else 2
    st = sink.wait_closed(n)
    assert st["tls_handshakes"] == n and st["tls_resumed"] == 1, summary(st)
    pcs = st["per_connection"]
    assert [p["resumed"] for p in pcs] == [False, True, False][:n]
    want = "TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
    assert [p["tls_version"] for p in pcs] == [want] * n
    assert sink.messages()[0]["tls_resumed"] is True


def test_starttls_discards_pipelined_plaintext(sink):
    with session(sink) as r:
        r.send("STARTTLS\r\nNOOP\r\n")          # NOOP must not survive into TLS
        assert r.reply()[0] == 220
        r.starttls(client_ctx(sink))
        code, lines = r.cmd("EHLO again.test")
        assert code == 250 and "STARTTLS" not in lines
        assert r.cmd("NOOP")[0] == 250            # this is the reply to *this* NOOP
        assert r.silent_for(0.2)
    st = sink.wait_closed(1)
    assert st["sync_violations"] == 1 and st["noop"] == 1 and st["tls_handshakes"] == 1


# --------------------------------------------------------------------------
# faults


def test_fault_421_after(sink_factory):
    sink = sink_factory(fault="421-after:2")
    with session(sink) as r:
        for i in range(2):
            r.send(txn(i) + "DATA\r\n")
            assert r.codes(3) == [250, 250, 354]
            r.send(stuff(msg(i)))
            assert r.reply()[0] == 250
        r.send(txn(2) + "DATA\r\n")
        code, texts = r.reply()
        assert (code, texts[0][:5]) == (421, "4.3.0")
        assert r.read_until_eof() == b""          # RCPT and DATA were discarded
    st = sink.wait_closed(1)
    assert st["messages"] == 2 and st["faults_fired"] == 1 and st["rcpt_accepted"] == 2
    assert st["per_connection"][0]["close_reason"] == "fault 421-after"


def test_fault_drop_in_data(sink_factory):
    sink = sink_factory(fault="drop-in-data:1")
    with session(sink) as r:
        r.send(txn(0) + "DATA\r\n")
        assert r.codes(3) == [250, 250, 354]
        r.send(stuff(msg(0)))
        assert r.reply()[0] == 250
        r.send(txn(1) + "DATA\r\n")
        assert r.codes(3) == [250, 250, 354]
        r.send(b"Subject: half a message\r\n")
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["messages"] == 1 and st["faults_fired"] == 1
    assert len(sink.messages()) == 1


def test_fault_drop_in_bdat(sink_factory):
    sink = sink_factory(fault="drop-in-data:0")
    with session(sink) as r:
        r.send(txn(0) + "BDAT 100 LAST\r\n" + "x" * 40)
        assert r.codes(2) == [250, 250]            # MAIL, RCPT; never the BDAT
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["messages"] == 0 and st["bdat_cmds"] == 1 and sink.messages() == []


@pytest.mark.parametrize("method", ["DATA", "BDAT"])
def test_fault_drop_after_dot(sink_factory, method):
    sink = sink_factory(fault="drop-after-dot:0")
    with session(sink) as r:
        if method == "DATA":
            r.send(txn(0) + "DATA\r\n")
            assert r.codes(3) == [250, 250, 354]
            r.send(stuff(msg(0)))
        else:
            r.send(txn(0).encode() + f"BDAT {len(msg(0))} LAST\r\n".encode() + msg(0))
            assert r.codes(2) == [250, 250]
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["messages"] == 0 and st["faults_fired"] == 1 and sink.messages() == []


def test_fault_tempfail_data(sink_factory):
    sink = sink_factory(fault="tempfail-data:1")
    with session(sink) as r:
        got = []
        for i in range(3):
            r.send(txn(i) + "DATA\r\n")
            assert r.codes(3) == [250, 250, 354]
            r.send(stuff(msg(i)))
            code, texts = r.reply()
            got.append((code, texts[0][:5]))
        assert got[1] == (451, "4.3.0") and got[0][0] == got[2][0] == 250
        assert r.cmd("QUIT")[0] == 221
    st = sink.wait_closed(1)
    assert st["messages"] == 2 and st["messages_rejected"] == 1
    assert [m["content"] for m in sink.messages()] == [msg(0), msg(2)]


def test_fault_early_tls_reply(sink_factory):
    sink = sink_factory(fault="early-tls-reply")
    with session(sink) as r:
        r.send("STARTTLS\r\n")
        while b"250 injected\r\n" not in r.buf:
            r._fill()
        assert r.buf == b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n"
        r.buf = b""                                 # a correct client ignores it
        r.starttls(client_ctx(sink))
        assert r.cmd("EHLO x")[0] == 250
        assert r.cmd("QUIT")[0] == 221
    st = sink.wait_closed(1)
    assert st["tls_handshakes"] == 1 and st["faults_fired"] == 1


def test_fault_stall(sink_factory):
    sink = sink_factory(fault="stall")
    with Raw(sink.address) as r:
        assert r.reply()[0] == 220
        r.send("EHLO x\r\n")
        assert r.silent_for(0.5)
        r.send("NOOP\r\n")
        assert r.silent_for(0.2)
    st = sink.wait_closed(1)
    assert st["turns"] == 1 and st["ehlo"] == 0 and st["bytes_in"] == len("EHLO x\r\nNOOP\r\n")


def test_fault_garbage(sink_factory):
    sink = sink_factory(fault="garbage")
    with Raw(sink.address) as r:
        assert r.reply()[0] == 220
        r.send("EHLO x\r\n")
        got = r.read_until_eof()
        first, second = got.split(b"\r\n")[:2]
        assert first == b"250-" + HOST.encode()
        assert not second[:3].isdigit()             # not an SMTP reply line
    sink.wait_closed(1)


def test_fault_once(sink_factory):
    sink = sink_factory(fault="stall", fault_once=True)
    with Raw(sink.address) as r:
        assert r.reply()[0] == 220
        r.send("EHLO x\r\n")
        assert r.silent_for(0.3)
    with session(sink) as r:                        # second connection is normal
        assert r.cmd("QUIT")[0] == 221
    st = sink.wait_closed(2)
    assert st["faults_fired"] == 1 and st["ehlo"] == 1


# --------------------------------------------------------------------------
# options


def test_ehlo_keywords_follow_options(sink_factory):
    s1 = sink_factory()
    with Raw(s1.address) as r:
        r.reply()
        code, lines = r.cmd("EHLO x")
    assert lines == [f"{HOST} greets x", "PIPELINING", "SIZE", "8BITMIME",
                     "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "STARTTLS"]
    s2 = sink_factory(pipelining=False, chunking=False, starttls=False, eightbitmime=False,
                      smtputf8=False, size=5000, limits="RCPTMAX=7 MAILMAX=9",
                      hostname="other.test", dsn=True)
    with Raw(s2.address) as r:
        assert r.reply()[1] == ["other.test ESMTP petrel smtp_sink"]
        code, lines = r.cmd("EHLO x")
        assert lines == ["other.test greets x", "SIZE 5000", "ENHANCEDSTATUSCODES", "DSN",
                         "LIMITS RCPTMAX=7 MAILMAX=9"]
        assert r.cmd("MAIL FROM:<a@x> BODY=8BITMIME")[0] == 555
        assert r.cmd("MAIL FROM:<a@x> SMTPUTF8")[0] == 555
        assert r.cmd("STARTTLS")[0] == 502
        assert r.cmd("MAIL FROM:<a@x> RET=HDRS ENVID=e1")[0] == 250
        assert r.cmd("RCPT TO:<b@y> NOTIFY=NEVER")[0] == 250
        assert r.cmd("BDAT 3 LAST")[0] == 502


def test_size_limit(sink_factory):
    sink = sink_factory(size=1000)
    with session(sink) as r:
        code, t = r.cmd("MAIL FROM:<a@x> SIZE=1001")
        assert (code, t[0][:5]) == (552, "5.3.4")
        r.send("MAIL FROM:<a@x> SIZE=900\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        assert r.codes(3) == [250, 250, 354]
        r.send(stuff(msg(0, size=1500)))
        assert r.reply()[0] == 552
        c = msg(1, size=1000)
        r.send(txn(1).encode() + f"BDAT {len(c)} LAST\r\n".encode() + c)
        assert r.codes(3) == [250, 250, 250]
    assert [m["size"] for m in sink.messages()] == [1000]


def test_limits_rcptmax_and_mailmax(sink_factory):
    sink = sink_factory(limits="RCPTMAX=2 MAILMAX=2")
    with session(sink) as r:
        r.send(txn(0, rcpts=3) + "DATA\r\n")
        (c1, _), (c2, _), (c3, _), (c4, t4), (c5, _) = r.replies(5)
        assert [c1, c2, c3, c4, c5] == [250, 250, 250, 452, 354] and t4[0][:5] == "4.5.3"
        r.send(stuff(msg(0)))
        assert r.reply()[0] == 250
        assert r.cmd("MAIL FROM:<a@x>")[0] == 250
        assert r.cmd("RSET")[0] == 250
        assert r.cmd("MAIL FROM:<a@x>")[0] == 421       # third MAIL on the connection
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["rcpt_accepted"] == 2 and st["rcpt_rejected"] == 1 and st["messages"] == 1
    assert sink.messages()[0]["rcpts"] == ["r0.0@example.net", "r0.1@example.net"]


def test_reject_and_tempfail_patterns(sink_factory):
    sink = sink_factory(reject_rcpt="^bad@", tempfail_rcpt="^later@", reject_mail="^spam@")
    with session(sink) as r:
        code, t = r.cmd("MAIL FROM:<spam@x>")
        assert (code, t[0][:5]) == (550, "5.7.1")
        r.send("MAIL FROM:<ok@x>\r\nRCPT TO:<bad@y>\r\nRCPT TO:<later@y>\r\n"
               "RCPT TO:<good@y>\r\nDATA\r\n")
        rs = r.replies(5)
        assert [(c, t[0][:5]) for c, t in rs[:4]] == [(250, "2.1.0"), (550, "5.1.1"),
                                                      (450, "4.2.0"), (250, "2.1.5")]
        assert rs[4][0] == 354
        r.send(stuff(msg(0)))
        assert r.reply()[0] == 250
    assert sink.messages()[0]["rcpts"] == ["good@y"]
    st = sink.stats()
    assert st["rcpt_accepted"] == 1 and st["rcpt_rejected"] == 2


def test_sync_violations_counted(sink_factory):
    lenient = sink_factory(pipelining=False)
    with session(lenient) as r:
        r.send("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n")      # sent ahead: no PIPELINING
        assert r.codes(2) == [250, 250]
        r.send("DATA\r\nSubject: early body\r\n\r\nx\r\n.\r\n")   # body before 354
        assert r.codes(2) == [354, 250]
    assert lenient.wait_closed(1)["sync_violations"] == 2

    strict = sink_factory(enforce_sync=True)
    with session(strict) as r:
        r.send("NOOP\r\nNOOP\r\n")
        code, t = r.reply()
        assert code == 250
        code, t = r.reply()
        assert (code, t[0][:5]) == (554, "5.5.0")
        assert r.read_until_eof() == b""


def test_greeting_delay_catches_early_talkers(sink_factory):
    sink = sink_factory(greet_delay=200)
    with Raw(sink.address) as r:
        r.send("EHLO early\r\n")
        assert r.reply()[0] == 220
        assert r.reply()[0] == 250
    assert sink.wait_closed(1)["sync_violations"] == 1


def test_ipv6_listener(sink_factory):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    sink = sink_factory(listen6=0)
    with Raw(("::1", sink.port6), family=socket.AF_INET6) as r:
        assert r.reply()[0] == 220
        assert r.cmd("QUIT")[0] == 221
    st = sink.wait_closed(1)
    assert st["per_connection"][0]["peer"].startswith("[::1]:")


def test_stats_written_on_sigterm(sink):
    r = session(sink)
    assert sink.stats()["connections_closed"] == 0
    assert sink.stop() == 0
    st = sink.stats()
    assert st["stopped"] == "SIGTERM" and st["connections_closed"] == 1
    assert st["per_connection"][0]["close_reason"].startswith("sink stopped")
    assert st["ehlo"] == 1 and st["turns"] == 1
    r.close()


# --------------------------------------------------------------------------
# delay proxy


D_MS = 100


def timed_noop(r):
    t0 = time.monotonic()
    assert r.cmd("NOOP")[0] == 250
    return time.monotonic() - t0


def test_delay_proxy_adds_two_delays_per_round_trip(sink, tmp_path):
    d = D_MS / 1000
    with Raw(sink.address) as r:
        r.reply()
        direct = min(timed_noop(r) for _ in range(3))
    with DelayProxy(0, sink.port, D_MS, workdir=str(tmp_path / "p")) as p:
        t0 = time.monotonic()
        with Raw(p.address) as r:
            assert r.reply()[0] == 220
            greet = time.monotonic() - t0
            rtts = [timed_noop(r) for _ in range(5)]
        assert greet >= d
        assert all(x >= 2 * d for x in rtts), rtts
        assert min(rtts) <= 2 * d + 0.050, rtts
        assert direct < 0.050
    # --delay-connect: the TCP handshake costs a round trip too
    with DelayProxy(0, sink.port, D_MS, delay_connect=True, workdir=str(tmp_path / "q")) as p:
        t0 = time.monotonic()
        with Raw(p.address) as r:
            assert r.reply()[0] == 220
            assert time.monotonic() - t0 >= 2 * d


def test_delay_proxy_does_not_limit_throughput(sink, tmp_path):
    d = D_MS / 1000
    n, gap = 20, 0.005
    with DelayProxy(0, sink.port, D_MS, workdir=str(tmp_path / "p")) as p:
        with Raw(p.address) as r:
            r.reply()
            t0 = time.monotonic()
            for _ in range(n):                  # RSET may be pipelined anywhere
                r.send("RSET\r\n")
                time.sleep(gap)
            sending = time.monotonic() - t0
            assert r.codes(n) == [250] * n
            elapsed = time.monotonic() - t0
    # the last RSET went out at `sending`; its reply is 2*d later. Serialised
    # per-chunk delays would take >= n * d = 2 s instead.
    assert 2 * d <= elapsed < sending + 2 * d + 0.15, (elapsed, sending)


def test_delay_proxy_half_close_and_stats(sink, tmp_path):
    d = D_MS / 1000
    with DelayProxy(0, sink.port, D_MS, workdir=str(tmp_path / "p")) as p:
        with Raw(p.address) as r:
            greeting = r.line() + "\r\n"
            r.send("NOOP\r\n")
            r.sock.shutdown(socket.SHUT_WR)         # half-close travels to the sink ...
            t0 = time.monotonic()
            rest = r.read_until_eof()               # ... which answers and closes
            waited = time.monotonic() - t0
        assert rest == b"250 2.0.0 Ok\r\n"
        assert waited >= 2 * d
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            ps = p.stats()
            if ps["connections"] == 1 and ps["active_connections"] == 0:
                break
            time.sleep(0.02)
    assert ps["connections"] == 1 and ps["active_connections"] == 0
    assert ps["bytes_client_to_server"] == len("NOOP\r\n")
    assert ps["bytes_server_to_client"] == len(greeting) + len(rest)
    st = sink.wait_closed(1)
    assert st["per_connection"][0]["close_reason"] == "client eof"


def test_turns_predict_elapsed_time_through_proxy(sink, tmp_path):
    """With a one-way delay D, elapsed ~ D * (1 + 2 * turns): the instruments agree."""
    d_ms = 30
    d = d_ms / 1000
    with DelayProxy(0, sink.port, d_ms, workdir=str(tmp_path / "p")) as p:
        t0 = time.monotonic()
        with Raw(p.address) as r:
            assert r.reply()[0] == 220
            assert r.cmd("EHLO x")[0] == 250
            r.send(txn(0) + "DATA\r\n")
            assert r.codes(3) == [250, 250, 354]
            for i in range(4):
                nxt = txn(i + 1) + "DATA\r\n" if i < 3 else "QUIT\r\n"
                r.send(stuff(msg(i)) + nxt.encode())
                r.codes(4 if i < 3 else 2)
            elapsed = time.monotonic() - t0
    st = sink.wait_closed(1)
    assert st["turns"] == 6 and st["messages"] == 4
    expect = d * (1 + 2 * st["turns"])
    assert expect <= elapsed < expect + 0.15, (elapsed, expect)


def test_protocol_errors_and_idle_timeout(sink_factory):
    sink = sink_factory(idle_timeout=0.5)
    with Raw(sink.address) as r:
        assert r.reply()[0] == 220
        assert r.cmd("MAIL FROM:<a@x>")[0] == 503           # before EHLO
        assert r.cmd("HELO old.test")[0] == 250
        assert r.cmd("MAIL FROM:<a@x> SIZE=10")[0] == 555     # parameters need EHLO
        assert r.cmd("RCPT TO:<b@y>")[0] == 503
        assert r.cmd("DATA")[0] == 503
        r.send("NOOP\n")                                     # bare LF
        assert r.reply()[0] == 500
        assert r.cmd("FROB")[0] == 500
        r.send("BDAT 5 LAST\r\nhello")                      # no transaction: data skipped
        assert r.reply()[0] == 503
        assert r.cmd("MAIL FROM:<a@x>")[0] == 250
        assert r.cmd("DATA")[0] == 554                       # no valid recipients
        code, t = r.reply()                                  # then silence ...
        assert (code, t[0][:5]) == (421, "4.4.2")            # ... until the idle timeout
        assert r.read_until_eof() == b""
    st = sink.wait_closed(1)
    assert st["per_connection"][0]["close_reason"] == "timeout"
    assert st["helo"] == 1 and st["messages"] == 0
