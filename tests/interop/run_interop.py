#!/usr/bin/python3
"""Petrel's interoperability matrix (`make interop`): writes docs/interop.md.

    run_interop.py [--messages N] [--only NAME[,NAME...]] [--out docs/interop.md]

Rows (peer and direction):
  Petrel -> aiosmtpd     aiosmtpd receives (STARTTLS; no PIPELINING/CHUNKING)
  Petrel -> Exim         exim4-daemon-light receives into a maildir
  Petrel -> OpenSMTPD    opensmtpd receives (no STARTTLS, see its notes)
                         and relays to an aiosmtpd store
  Petrel -> Postfix      private Postfix (postfix_instance.py) receives
                         with STARTTLS, PIPELINING, CHUNKING; its virtual(8)
                         agent stores each copy in a maildir
  Exim -> Petrel         Exim relays into Petrel (TLS required, two-phase
                         queue run so the messages share connections)
  Petrel -> chasquid     chasquid 1.11 receives (STARTTLS, PIPELINING),
                         chain_after_data = no (chasquid bug), stub DNS
  Postfix -> Petrel      private Postfix (postfix_instance.py) relays into
                         Petrel, smtp_tls_security_level = encrypt
  swaks -> Petrel        swaks -tls --pipeline, one process per message
  smtp-source -> Petrel  20 parallel sessions, one file N times
  smtplib -> Petrel      Python smtplib, STARTTLS, lock-step

Every row: the same N messages (every 10th has 3 recipients, every 50th has a
1 MB body; bodies contain dot-leading lines and 8-bit text), each with an
X-Test-Id header. "arrived intact" counts (message, recipient) copies that
the receiver stored exactly once with the SHA-256 of the body (line ends
normalized to LF: maildir stores LF) equal to what was sent. Each row is
bounded in time; a row that fails records the error and the matrix goes on.
Peers are private instances (tests/interop/peers.py), stopped by PID.
"""

import argparse
import hashlib
import os
import re
import smtplib
import sys
import time
import traceback
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests" / "tools"))

import peers  # noqa: E402
from petrel_helpers import Petrel, LOCAL_DOMAIN  # noqa: E402
from delivery_helpers import (dest_section, log_deliveries, queue_held,  # noqa: E402
                              completed_ids, wait_until, tail)

PEER_DOMAIN = "peer.example"
ROW_TIMEOUT = int(os.environ.get("INTEROP_ROW_TIMEOUT", "300"))


# --------------------------------------------------------------------------
# messages


class Msg:
    def __init__(self, i, domain):
        self.i = i
        self.tid = f"interop-{i:05d}"
        self.sender = f"sender{i}@origin.example"
        n = 3 if i % 10 == 0 else 1
        self.rcpts = [f"u{i}r{k}@{domain}" for k in range(n)]
        if i % 50 == 7:
            line = (hashlib.sha256(str(i).encode()).hexdigest() * 2)[:76] + "\r\n"
            body = line * (1024 * 1024 // len(line))
        else:
            body = (f"Message {i}.\r\n.leading dot line\r\n..two dots\r\n"
                    f"8-bit: caf\u00e9 na\u00efve\r\n" + "x" * (i % 300) + "\r\nend\r\n")
        body_b = body.encode("utf-8")
        self.content = (f"From: <{self.sender}>\r\nTo: <{self.rcpts[0]}>\r\n"
                        f"Subject: interop {i}\r\nMessage-ID: <{self.tid}@origin.example>\r\n"
                        f"X-Test-Id: {self.tid}\r\nMIME-Version: 1.0\r\n"
                        f"Content-Type: text/plain; charset=utf-8\r\n"
                        f"Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body_b
        self.hash = body_hash_of(body_b)
        self.qid = None


def norm(b):
    return b.replace(b"\r\n", b"\n")


def body_hash_of(body):
    return hashlib.sha256(norm(body)).hexdigest()


def split_body(content):
    c = norm(content)
    i = c.find(b"\n\n")
    return (c, b"") if i < 0 else (c[:i + 1], c[i + 2:])


TID = re.compile(rb"^X-Test-Id: (\S+)$", re.M)


def check_arrivals(msgs, stored):
    """stored: list of (rcpts, content). Returns (expected copies, intact
    copies, list of problems)."""
    want = {(m.tid, r.lower()): m for m in msgs for r in m.rcpts}
    seen = Counter()
    bad = []
    for rcpts, content in stored:
        head, body = split_body(content)
        m = TID.search(head)
        if not m:
            bad.append(f"stored message without X-Test-Id: {content[:80]!r}")
            continue
        tid = m.group(1).decode()
        for r in rcpts:
            key = (tid, r.lower())
            if key not in want:
                bad.append(f"unexpected copy {key}")
                continue
            if body_hash_of(body) != want[key].hash:
                bad.append(f"{key}: body hash differs")
                continue
            seen[key] += 1
    dup = [k for k, n in seen.items() if n > 1]
    missing = [k for k in want if k not in seen]
    if dup:
        bad.append(f"{len(dup)} copies stored more than once, e.g. {dup[:3]}")
    if missing:
        bad.append(f"{len(missing)} copies missing, e.g. {missing[:3]}")
    intact = sum(1 for k, n in seen.items() if n == 1)
    return len(want), intact, bad


def submit(port, msgs, timeout=120, starttls=False):
    """Submit msgs to an SMTP server in one smtplib session (lock-step)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as c:
        c.ehlo("injector.test")
        if starttls:
            c.starttls()
            c.ehlo("injector.test")
        for m in msgs:
            refused = c.sendmail(m.sender, m.rcpts, m.content)
            assert not refused, f"refused {refused}"
    return msgs


def submit_petrel(p, msgs):
    with smtplib.SMTP("127.0.0.1", p.port, timeout=120) as c:
        c.ehlo("injector.test")
        for m in msgs:
            code, resp = c.mail(m.sender)
            assert code == 250, (code, resp)
            for r in m.rcpts:
                code, resp = c.rcpt(r)
                assert code == 250, (code, resp)
            code, resp = c.data(m.content)
            mm = re.search(rb"queued as (\S+)", resp)
            assert code == 250 and mm, (code, resp)
            m.qid = mm.group(1).decode()


# --------------------------------------------------------------------------
# rows


class Row:
    def __init__(self, peer, direction):
        self.peer = peer
        self.direction = direction
        self.sent = 0
        self.intact = 0
        self.conns = "–"
        self.tls = "–"
        self.pipelining = "–"
        self.chunking = "–"
        self.errors = []
        self.notes = []
        self.petrel_log = []      # Petrel's log lines (Petrel -> peer rows)
        self.seconds = 0.0
        self.status = "not run"


def petrel_side(p, row, expect=None):
    """Connections, TLS handshakes, pipelining and CHUNKING from Petrel's
    "=>" lines (C=conn#seq, X=TLS..., L, K), and its errors. expect:
    {"tls"|"L"|"K": bool}: what the peer offers, so what every delivery
    must (True) or must not (False) have used; a mismatch is an error."""
    d = log_deliveries(p)
    for k, want in (expect or {}).items():
        n = sum(1 for x in d if bool(x[k]) == want)
        if n != len(d):
            what = {"tls": "TLS (X=)", "L": "pipelining (L)", "K": "CHUNKING (K)"}[k]
            row.errors.append(f"{len(d) - n} of {len(d)} deliveries "
                              f"{'without' if want else 'with'} {what}, where the peer "
                              f"{'offers' if want else 'does not offer'} it")
    conns = {x["conn"] for x in d}
    row.conns = str(len(conns))
    row.tls = str(len({x["conn"] for x in d if x["tls"]}))
    row.pipelining = f"{sum(1 for x in d if x['L'])}/{len(d)} rcpt (L)"
    row.chunking = f"{sum(1 for x in d if x['K'])}/{len(d)} rcpt (K)"
    if d:
        ts = [datetime.strptime(x["line"][:23], "%Y-%m-%d %H:%M:%S.%f") for x in d]
        row.notes.append(f"Petrel's {len(d)} '=>' lines span "
                         f"{(max(ts) - min(ts)).total_seconds():.1f} s (first to last delivery)")
    for ln in p.log_lines():
        if re.search(r" (==|\*\*) |failed in state|unexpected reply|malformed reply|"
                     r"retrying without TLS|TLS error", ln):
            row.errors.append(ln.split(" ", 2)[2][:200])


def petrel_for_delivery(workdir, port, **dest):
    return Petrel(workdir, extra=dest_section(PEER_DOMAIN, route=f"127.0.0.1:{port}",
                                              tls="may", **dest))


def deliver_to(row, peer, msgs, workdir, timeout=None, expect=None, **dest):
    """Petrel -> peer: fill Petrel's queue while delivery is held, then let
    it deliver the backlog; wait for "Completed" of every message. dest:
    extra [destination] keys (e.g. chain_after_data = no); expect: see
    petrel_side()."""
    p = petrel_for_delivery(workdir, peer.port, **dest)
    try:
        queue_held(p, lambda: submit_petrel(p, msgs))
        row.sent = sum(len(m.rcpts) for m in msgs)

        def done():
            p.check_alive()
            return all(m.qid in completed_ids(p) for m in msgs)
        try:
            wait_until(done, timeout or ROW_TIMEOUT, "Completed for every message",
                       lambda: tail(p, 15))
        except AssertionError as e:
            row.errors.append(str(e).splitlines()[0])
        time.sleep(1)
        row.petrel_log = p.log_lines()
        petrel_side(p, row, expect)
        want, intact, bad = check_arrivals(msgs, peer.stored())
        row.intact = intact
        row.errors += bad
    finally:
        try:
            p.stop()
        except AssertionError as e:   # e.g. a delivery stuck at SIGTERM
            row.errors.append(str(e).splitlines()[0])


def row_aiosmtpd(msgs, work):
    row = Row("aiosmtpd 1.4.3 (python3-aiosmtpd)", "Petrel → peer")
    with peers.AiosmtpdPeer() as peer:
        deliver_to(row, peer, msgs, work / "petrel",
                   expect={"tls": True, "L": False, "K": False})
        st = peer.stats()
        row.notes.append(f"peer counted {st.get('connections')} connections, "
                         f"{st.get('tls_handshakes')} TLS handshakes; it offers "
                         "neither PIPELINING nor CHUNKING")
    return row


def row_exim_recv(msgs, work):
    row = Row("Exim 4.96 (exim4-daemon-light)", "Petrel → peer")
    with peers.EximPeer() as peer:
        deliver_to(row, peer, msgs, work / "petrel",
                   expect={"tls": True, "L": True, "K": True})
        lines = peer.log_lines()
        got = [ln for ln in lines if " <= " in ln]
        row.notes.append(f"Exim logged {len(got)} '<=' lines, "
                         f"{sum(1 for ln in got if ' X=TLS' in ln)} with TLS, "
                         f"{sum(1 for ln in got if ' K ' in ln or ln.endswith(' K'))} with K (CHUNKING), "
                         f"{sum(1 for ln in got if ' L' in ln)} with L (pipelining); "
                         f"{sum(1 for ln in lines if 'synchronization error' in ln)} sync errors")
        nq = sum(1 for ln in lines if re.search(r"SMTP connection from .* lost", ln))
        if nq:
            row.errors.append(f"{nq} connections closed by Petrel without QUIT (Exim: "
                              "'connection lost') - RFC 5321 4.1.1.10, Petrel bug")
        row.errors += [ln for ln in lines if "re-exec of exim" in ln][:5]
        row.errors += [ln for ln in lines if re.search(r"synchronization error|rejected|"
                                                        r"protocol error|TLS error", ln)][:10]
    return row


def row_opensmtpd(msgs, work):
    row = Row("OpenSMTPD 6.8.0p2 (opensmtpd)", "Petrel → peer")
    with peers.AiosmtpdPeer() as store, peers.OpenSMTPDPeer(store) as peer:
        # no STARTTLS offered (see the notes): plaintext, lock-step, DATA
        deliver_to(row, peer, msgs, work / "petrel",
                   expect={"tls": False, "L": False, "K": False})
        # OpenSMTPD relays to the store asynchronously: wait for the copies
        want = sum(len(m.rcpts) for m in msgs)
        try:
            wait_until(lambda: sum(len(r) for r, _ in peer.stored()) >= want, 120,
                       "OpenSMTPD to relay every copy to the store")
            row.errors = [e for e in row.errors if "copies missing" not in e]
            _, row.intact, bad = check_arrivals(msgs, peer.stored())
            row.errors += bad
        except AssertionError as e:
            row.errors.append(str(e).splitlines()[0])
        lines = peer.log_lines()
        row.notes.append(f"OpenSMTPD logged {sum(1 for ln in lines if 'smtp message' in ln)} "
                         f"'smtp message' lines, {sum(1 for ln in lines if 'smtp connected' in ln)} "
                         "connections; it advertises neither PIPELINING nor CHUNKING, so Petrel "
                         "must send lock-step (L must be absent)")
        row.notes.append("STARTTLS not offered: Debian 12's OpenSMTPD 6.8 fails every server-side "
                         "TLS handshake with OpenSSL 3 ('missing private key', "
                         "OpenSMTPD/OpenSMTPD#1171, #1239; fixed upstream by PR #1208, not in "
                         "6.8.0p2-4+b4). Petrel's tls = may delivers in plaintext to it.")
        nq = sum(1 for ln in lines if "disconnected reason=disconnect" in ln)
        if nq:
            row.errors.append(f"{nq} connections closed by Petrel without QUIT (OpenSMTPD: "
                              "reason=disconnect; Petrel: 'closed: shutting down') - "
                              "RFC 5321 4.1.1.10, Petrel bug")
        row.errors += [ln for ln in lines if "disconnected reason=" in ln
                       and "reason=quit" not in ln and "reason=disconnect" not in ln][:10]
    return row


def petrel_receiver(workdir):
    """A Petrel that keeps what it receives (queue_only = yes, default)."""
    p = Petrel(workdir)
    p.start()
    return p


def receiver_side(p, row, msgs):
    """What Petrel received: its spool (body hashes) and its log."""
    stored = [(m.rcpts, m.content) for m in p.all_msgs()]
    want, intact, bad = check_arrivals(msgs, stored)
    row.intact = intact
    row.errors += bad
    lines = p.log_lines()
    conn = [ln for ln in lines if "SMTP connection from" in ln]
    got = [ln for ln in lines if " <= " in ln]
    row.conns = str(len(conn))
    row.tls = f"{sum(1 for ln in got if ' X=' in ln)}/{len(got)} msgs"
    row.tls_petrel = row.tls
    protos = Counter(re.search(r" P=(\S+)", ln).group(1) for ln in got)
    row.notes.append("Petrel logged P= " + ", ".join(f"{k}×{v}" for k, v in protos.items()))
    sync = p.sync_error_lines()
    row.errors += [f"SYNC: {ln}" for ln in sync]
    row.notes.append(f"{len(sync)} synchronization errors logged by Petrel")
    for ln in lines:
        if re.search(r"rejected|too many errors|timeout in state|TLS error|connection lost", ln):
            row.errors.append(ln.split(" ", 2)[2][:200])


def row_exim_send(msgs, work):
    row = Row("Exim 4.96 (exim4-daemon-light)", "peer → Petrel")
    p = petrel_receiver(work / "petrel")
    try:
        with peers.EximPeer(petrel_port=p.port, queue_only=True) as peer:
            submit(peer.port, msgs)
            row.sent = sum(len(m.rcpts) for m in msgs)
            r = peer.queue_run(timeout=ROW_TIMEOUT)
            if r.returncode != 0:
                row.errors.append(f"exim -qqf exit {r.returncode}: {r.stderr[-300:]!r}")
            wait_until(lambda: len(p.queue_files()) >= len(msgs), 30,
                       "all messages in Petrel's spool", lambda: peer.diag(10))
            lines = peer.log_lines()
            out = [ln for ln in lines if " => " in ln or " -> " in ln]
            # continued deliveries on the same connection (exim -MC) are not
            # logged to this private mainlog; the first delivery's flags show
            # what the connection used: L = pipelining, K = CHUNKING
            first = out[0] if out else ""
            row.pipelining = "yes (Exim: L)" if re.search(r" L( |$)", first) else "no"
            row.chunking = "yes (Exim: K)" if re.search(r" K( |$)", first) else "no"
            row.notes.append(f"Exim's first delivery: `{first.split(' ', 3)[-1][:160]}`")
            row.notes.append(f"{sum(1 for ln in lines if ' == ' in ln or ' ** ' in ln)} "
                             "defers/bounces logged by Exim")
            row.errors += [ln for ln in lines if " == " in ln or " ** " in ln][:10]
            # Exim could not start a process for a delivery or a continued
            # connection (then it opens one connection per message)
            row.errors += [ln for ln in lines if "re-exec of exim" in ln][:5]
        receiver_side(p, row, msgs)
    finally:
        p.stop()
    return row


# 0 = every message of the run (the default); a smaller number limits the row
CHASQUID_MESSAGES = int(os.environ.get("INTEROP_CHASQUID_MESSAGES", "0"))


def row_chasquid(msgs, work):
    """Petrel -> chasquid (STARTTLS). Two things made this row slow, both
    worked around here: chasquid 1.11 loses commands pipelined behind the
    end of data (Petrel runs with chain_after_data = no for it, see the
    notes), and chasquid's SPF lookup of every MAIL FROM domain through the
    host's resolver (peers.ChasquidPeer answers it with a StubDns)."""
    row = Row("chasquid 1.11 (chasquid)", "Petrel → peer")
    if CHASQUID_MESSAGES:
        msgs = msgs[:CHASQUID_MESSAGES]
    users = [r.split("@")[0] for m in msgs for r in m.rcpts]
    with peers.ChasquidPeer(users) as peer:
        # chasquid's bug (below): Petrel's default configuration learns it
        # (the first connection that waits in vain for the reply to a MAIL
        # pipelined behind "." makes it stop chaining to the destination);
        # a short reply_timeout makes that first wait 5 s, not chasquid's
        # 60 s command timeout.
        deliver_to(row, peer, msgs, work / "petrel", reply_timeout="5s",
                   expect={"tls": True, "L": True, "K": False})
        learned = [ln for ln in row.petrel_log
                   if "did not answer a MAIL pipelined after the end of data" in ln]
        if len(learned) != 1:
            row.errors.append(f"Petrel logged {len(learned)} 'did not answer a MAIL "
                              "pipelined after the end of data' lines, expected 1")
        # chasquid queues, then runs the MDA: wait for every copy it accepted
        want = sum(len(m.rcpts) for m in msgs)
        try:
            wait_until(lambda: len(peer.stored()) >= want, 60,
                       "chasquid's MDA to store every copy")
        except AssertionError as e:
            row.errors.append(str(e).splitlines()[0])
        row.errors = [e for e in row.errors if "copies missing" not in e]
        _, row.intact, bad = check_arrivals(msgs, peer.stored())
        row.errors += bad
        lines = peer.log_lines()
        limited = (f"{len(msgs)} messages (INTEROP_CHASQUID_MESSAGES). "
                   if CHASQUID_MESSAGES else "")
        row.notes.append(f"{limited}chasquid advertises PIPELINING, not CHUNKING; it runs "
                         "privately (-config_dir, addresses on 127.0.0.1, users file, MDA "
                         "script storing each copy)")
        row.notes.append(f"chasquid logged {sum(1 for ln in lines if 'Queued from' in ln)} "
                         "'Queued from' lines")
        spf = sum(n for (name, t), n in peer.dns.queries.items() if t == peers.StubDns.TXT)
        row.notes.append("DNS: chasquid checks SPF on every MAIL FROM (no option turns it off): "
                         "a TXT lookup of the sender's domain through /etc/resolv.conf. With "
                         "the host's resolver some lookups hung for Go's 5 s timeout and "
                         "every connection waited with them (500 messages took 40 s, "
                         "deliveries in bursts 5 s apart); with a resolver that does not answer "
                         "(timeouts and refusals, as on an offline machine; measured once) 50 "
                         "messages took 37 s. (The row's former 20-message limit "
                         "dates from before the chain_after_data workaround below, when each "
                         "connection stalled a minute per message; chasquid itself, its "
                         "fsync'ed queue and the MDA script, takes 500 messages in a few "
                         "seconds.) chasquid therefore "
                         "runs in a private mount namespace whose /etc/resolv.conf names a "
                         "stub DNS responder on 127.x.y.z:53 (tests/interop/peers.py "
                         "StubDns) serving `origin.example TXT \"v=spf1 ip4:127.0.0.0/8 "
                         f"-all\"`: {spf} TXT lookups answered, SPF pass.")
        row.notes.append("CHASQUID BUG (not Petrel): with PIPELINING, Petrel sends the next "
                         "transaction right behind the end of data, in one write: "
                         "`end\\r\\n.\\r\\nMAIL FROM:<sender2@origin.example> SIZE=481 "
                         "BODY=8BITMIME\\r\\nRCPT TO:<u2r0@peer.example>\\r\\nDATA\\r\\n` "
                         "(plaintext wire capture, tls = none: same result). chasquid replies "
                         "250 to the first message and never processes the MAIL/RCPT/DATA that "
                         "followed the '.' (its -v 2 trace shows no `-> MAIL` after `... N bytes "
                         "of data`): it drops the input it had already buffered, and both sides "
                         "wait until chasquid's 60 s command timeout (`i/o timeout`), one "
                         "message per connection per minute. RFC 2920 3.1 allows it (\"The "
                         "actual transfer of message content is explicitly allowed to be the "
                         "first 'command' in a group\"), and 3.2 forbids a PIPELINING server "
                         "to lose the contents of its input buffer. The same Petrel against "
                         "Exim 4.96 with CHUNKING not advertised (pipelining only, so the same "
                         "grouping) delivered 3 messages on one connection (manual check).")
        row.notes.append("WORKAROUND, learned: this row runs Petrel with its default "
                         "`chain_after_data = yes` and `reply_timeout = 5s`. The first "
                         "connections stall as described; when one of them times out while the "
                         "oldest command waiting for a reply is a MAIL pipelined behind '.', "
                         "Petrel stops chaining to that destination (`learn_no_chain` in "
                         "src/smtp_client.c; log: "
                         f"`{learned[0].split(' ', 2)[-1] if learned else '(none)'}`) and "
                         "re-queues the work: every later connection waits for the reply to '.' "
                         "before the next MAIL (one extra round trip per message on such "
                         "servers). Setting `chain_after_data = no` for the destination avoids "
                         "even the first stall.")
        row.notes.append("On chasquid's timeout close over TLS Petrel logs `closed: TLS read: "
                         "...decryption failed or bad record mac`: a symptom of chasquid's "
                         "close, not analysed further")
        row.errors += [ln.split(" ", 3)[-1][:200] for ln in lines
                       if re.search(r"error|rejected|failed", ln, re.I)][:5]
    return row


# --------------------------------------------------------------------------
# peer -> Petrel rows added for Postfix, swaks, smtp-source, smtplib


def postfix_version():
    try:
        import subprocess as sp
        r = sp.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                   timeout=10, text=True)
        return r.stdout.strip() or "?"
    except Exception:  # noqa: BLE001
        return "?"


def wait_spool(p, n, timeout, diag=None):
    """Wait until Petrel's queue/ holds n messages (queue_only = yes)."""
    try:
        wait_until(lambda: len(p.queue_files()) >= n, timeout,
                   f"{n} messages in Petrel's spool", diag)
        return None
    except AssertionError as e:
        return str(e).splitlines()[0]


def row_postfix_send(msgs, work):
    from postfix_instance import PostfixInstance
    row = Row(f"Postfix {postfix_version()} (postfix)", "peer → Petrel")
    p = petrel_receiver(work / "petrel")
    try:
        pf = PostfixInstance(relayhost=("127.0.0.1", p.port), main_extra={
            "smtp_tls_security_level": "encrypt",
            "smtp_tls_loglevel": "1",
            # Postfix defaults, spelled out: pipelining when offered; the
            # Postfix SMTP client never sends BDAT (CHUNKING is smtpd-only)
            "smtp_pipelining_enable": "yes",
            "smtpd_forbid_unauth_pipelining": "no",   # the injector is lock-step anyway
        })
        with pf:
            submit(pf.port, msgs)
            row.sent = sum(len(m.rcpts) for m in msgs)
            err = wait_spool(p, len(msgs), ROW_TIMEOUT, lambda: pf.maillog_tail(15))
            if err:
                row.errors.append(err)
            try:
                pf.wait_maillog(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+.*status=sent",
                                count=len(msgs), timeout=30)
            except AssertionError as e:
                row.errors.append(str(e).splitlines()[0])
            lines = pf.maillog_lines()
            sent = [ln for ln in lines if "status=sent" in ln]
            tls = [ln for ln in lines if "TLS connection established to" in ln]
            reuse = sum(1 for ln in sent if re.search(r"conn_use=\d+", ln))
            pf_tls = len(tls)
            row.pipelining = "yes (Postfix default; not logged)"
            row.chunking = "no (Postfix client never sends BDAT)"
            row.notes.append(f"Postfix logged {len(sent)} status=sent lines "
                             f"({reuse} over a reused connection, conn_use=), "
                             f"{len(tls)} TLS connections: "
                             f"`{tls[0].split(': ', 1)[-1][:140] if tls else '-'}`")
            bad = [ln for ln in lines if re.search(r"status=(deferred|bounced)|"
                                                   r"warning:|lost connection", ln)]
            row.notes.append(f"{len(bad)} defers/bounces/warnings logged by Postfix")
            row.errors += [ln.split(": ", 1)[-1][:200] for ln in bad][:10]
        receiver_side(p, row, msgs)
        row.tls = f"{pf_tls} conns (Postfix); {row.tls_petrel}"
    finally:
        p.stop()
    return row


def row_postfix_recv(msgs, work):
    """Petrel -> Postfix: a private Postfix (postfix_instance.py, strict
    about the client: smtpd_forbid_unauth_pipelining, reject_unauth_pipelining,
    bare LF rejected) is the last hop for peer.example: its virtual(8)
    agent stores each copy in a maildir (postfix_instance mailbox_domains)."""
    from postfix_instance import PostfixInstance
    row = Row(f"Postfix {postfix_version()} (postfix)", "Petrel → peer")
    pf = PostfixInstance(relayhost=None, mailbox_domains=[PEER_DOMAIN])
    try:
        pf.start()
        deliver_to(row, SimpleNamespace(port=pf.port, stored=pf.maildir_messages), msgs,
                   work / "petrel", expect={"tls": True, "L": True, "K": True})
        # Postfix delivers asynchronously (qmgr -> virtual): wait for the copies
        want = sum(len(m.rcpts) for m in msgs)
        try:
            # (or a fatal error of a Postfix daemon: no use waiting then)
            wait_until(lambda: len(pf.maildir_messages()) >= want
                       or any(" fatal: " in ln for ln in pf.maillog_lines()), 120,
                       "Postfix to deliver every copy to its maildir",
                       lambda: pf.maillog_tail(15))
        except AssertionError as e:
            row.errors.append(str(e).splitlines()[0])
        row.errors = [e for e in row.errors if "copies missing" not in e]
        _, row.intact, bad = check_arrivals(msgs, pf.maildir_messages())
        row.errors += bad
        lines = pf.maillog_lines()
        smtpd = [ln for ln in lines if "postfix/smtpd[" in ln]
        conns = [ln for ln in smtpd if re.search(r"\]: connect from ", ln)]
        tls = [ln for ln in smtpd if "TLS connection established from" in ln]
        disc = [ln for ln in smtpd if re.search(r"\]: disconnect from ", ln)]

        def total(cmd):
            return sum(int(x) for ln in disc for x in re.findall(rf" {cmd}=(\d+)", ln))
        stored = [ln for ln in lines if "status=sent (delivered to maildir)" in ln]
        # the harness' readiness probe is one connection without EHLO
        row.notes.append(f"Postfix smtpd logged {len(conns)} connections (one is the "
                         f"harness' readiness probe), {len(tls)} TLS handshakes "
                         f"(`{tls[0].split(': ', 1)[-1][:110] if tls else '-'}`); over all "
                         f"sessions ehlo={total('ehlo')} starttls={total('starttls')} "
                         f"mail={total('mail')} rcpt={total('rcpt')} bdat={total('bdat')} "
                         f"data={total('data')} quit={total('quit')} (its `disconnect from` "
                         "summaries)")
        row.notes.append(f"Postfix's virtual(8) agent logged {len(stored)} 'delivered to "
                         "maildir' copies; Postfix 3.7 advertises PIPELINING and CHUNKING, "
                         "and runs strict about the client (smtpd_forbid_unauth_pipelining = "
                         "yes, reject_unauth_pipelining, smtpd_forbid_bare_newline = reject)")
        bad = [ln for ln in lines if re.search(
            r"improper command pipelining|unauth_pipelining|bare <LF>|warning:|fatal:|"
            r"status=(deferred|bounced)|lost connection|timeout after|reject:", ln)]
        row.notes.append(f"{len(bad)} complaints logged by Postfix (improper pipelining, "
                         "bare LF, rejects, lost connections, warnings, defers)")
        row.errors += [ln.split(": ", 1)[-1][:200] for ln in bad][:10]
        nq = [ln for ln in disc if " quit=" not in ln and " ehlo=" in ln]
        if nq:
            row.errors.append(f"{len(nq)} sessions closed by Petrel without QUIT "
                              "(Postfix's disconnect summary has no quit=) - RFC 5321 "
                              "4.1.1.10, Petrel bug")
    finally:
        # a Postfix that does not stop cleanly is a harness problem, shown
        # in the notes (PostfixInstance.stop() never raises)
        row.notes += [f"postfix_instance stop: {x[:200]}" for x in pf.stop()]
    return row


def row_smtplib(msgs, work):
    row = Row(f"Python {sys.version.split()[0]} smtplib", "peer → Petrel")
    p = petrel_receiver(work / "petrel")
    try:
        submit(p.port, msgs, starttls=True)
        row.sent = sum(len(m.rcpts) for m in msgs)
        err = wait_spool(p, len(msgs), 30, lambda: tail(p, 15))
        if err:
            row.errors.append(err)
        row.pipelining = "no (smtplib is lock-step)"
        row.chunking = "no (smtplib has no BDAT)"
        receiver_side(p, row, msgs)
        row.tls = row.tls_petrel
        row.notes.append("one session, STARTTLS, sendmail() per message (MAIL, RCPT…, "
                         "DATA lock-step)")
    finally:
        p.stop()
    return row


SWAKS_DEFAULT = "0"   # 0 = every message of the run


def swaks_one(port, m, d):
    import subprocess as sp
    f = d / f"{m.tid}.eml"
    # swaks sends the data, then "\r\n.\r\n": without the final CRLF here
    # the data would arrive with an extra empty line (a swaks convention)
    assert m.content.endswith(b"\r\n")
    f.write_bytes(m.content[:-2])
    r = sp.run(["swaks", "--server", f"127.0.0.1:{port}", "-tls", "--pipeline",
                "--helo", "swaks.test", "--from", m.sender, "--to", ",".join(m.rcpts),
                "--data", f"@{f}", "--timeout", "60", "--silent", "2"],
               capture_output=True, timeout=120, stdin=sp.DEVNULL)
    f.unlink()
    return m, r


def row_swaks(msgs, work):
    import subprocess as sp
    from concurrent.futures import ThreadPoolExecutor
    v = sp.run(["swaks", "--version"], capture_output=True, text=True, timeout=10)
    ver = (v.stdout.split()[2] if len(v.stdout.split()) > 2 else "?")
    row = Row(f"swaks {ver} (-tls --pipeline)", "peer → Petrel")
    n = int(os.environ.get("INTEROP_SWAKS_MESSAGES", SWAKS_DEFAULT))
    if n:
        msgs = msgs[:n]
    p = petrel_receiver(work / "petrel")
    d = work / "swaks"
    d.mkdir(parents=True, exist_ok=True)
    try:
        fails = []
        with ThreadPoolExecutor(max_workers=16) as ex:
            for m, r in ex.map(lambda m: swaks_one(p.port, m, d), msgs):
                if r.returncode != 0:
                    fails.append(f"{m.tid}: swaks exit {r.returncode}: "
                                 f"{r.stderr.decode(errors='replace')[-200:]!r}")
        row.sent = sum(len(m.rcpts) for m in msgs)
        row.errors += fails[:10]
        if len(fails) > 10:
            row.errors.append(f"{len(fails)} swaks processes failed")
        err = wait_spool(p, len(msgs), 30, lambda: tail(p, 15))
        if err:
            row.errors.append(err)
        row.pipelining = "yes (swaks --pipeline: MAIL+RCPT… in one write)"
        row.chunking = "no (swaks has no BDAT)"
        receiver_side(p, row, msgs)
        row.tls = row.tls_petrel
        row.notes.append(f"{len(msgs)} swaks processes (one per message, 16 at a time), "
                         "each -tls --pipeline --data @file")
    finally:
        p.stop()
    return row


def row_smtp_source(msgs, work):
    """smtp-source sends one file N times: the content is checked against
    that file (every copy the same X-Test-Id, so not check_arrivals)."""
    import subprocess as sp
    row = Row(f"smtp-source (Postfix {postfix_version()}), 20 sessions", "peer → Petrel")
    n = len(msgs)
    m = msgs[1]
    p = petrel_receiver(work / "petrel")
    try:
        f = work / "smtp-source.eml"
        # smtp-source appends CRLF to each line it reads and always sends an
        # empty line before the final "." (seen on the wire: "end\r\n\r\n.\r\n"
        # for a file ending "end" without LF): the body that arrives is the
        # file's plus one empty line
        f.write_bytes(norm(m.content)[:-1])
        want_hash = hashlib.sha256(norm(split_body(m.content)[1]) + b"\n").hexdigest()
        rcpt = "smtpsource@" + LOCAL_DOMAIN
        r = sp.run(["smtp-source", "-s", "20", "-m", str(n), "-d", "-M", "smtp-source.test",
                    "-f", m.sender, "-t", rcpt, "-F", str(f), f"127.0.0.1:{p.port}"],
                   capture_output=True, timeout=ROW_TIMEOUT, stdin=sp.DEVNULL)
        if r.returncode != 0:
            row.errors.append(f"smtp-source exit {r.returncode}: "
                              f"{r.stderr.decode(errors='replace')[-300:]!r}")
        row.sent = n
        err = wait_spool(p, n, 30, lambda: tail(p, 15))
        if err:
            row.errors.append(err)
        stored = p.all_msgs()
        ok = 0
        for sm in stored:
            _, body = split_body(sm.content)
            if body_hash_of(body) == want_hash and [x.lower() for x in sm.rcpts] == [rcpt]:
                ok += 1
            else:
                row.errors.append(f"{sm.path.name}: rcpts {sm.rcpts} or body differ")
        row.intact = min(ok, n)
        if len(stored) > n:
            row.errors.append(f"{len(stored)} messages stored for {n} sent")
        lines = p.log_lines()
        conn = [ln for ln in lines if "SMTP connection from" in ln]
        got = [ln for ln in lines if " <= " in ln]
        row.conns = str(len(conn))
        row.tls = f"{sum(1 for ln in got if ' X=' in ln)}/{len(got)} msgs"
        row.pipelining = "no (smtp-source is lock-step)"
        row.chunking = "no"
        sync = p.sync_error_lines()
        row.errors += [f"SYNC: {ln}" for ln in sync]
        row.notes.append(f"`smtp-source -s 20 -m {n} -d -F file`: the same message "
                         "(dot-leading lines, 8-bit) {n} times over 20 parallel sessions; "
                         "smtp-source speaks HELO (no STARTTLS, no PIPELINING), so plaintext lock-step; "
                         "it always sends an empty line before the final '.', so the expected "
                         "body is the file's plus one empty line".replace("{n}", str(n)))
        row.notes.append(f"{len(sync)} synchronization errors logged by Petrel")
        for ln in lines:
            if re.search(r"rejected|too many errors|timeout in state|connection lost", ln):
                row.errors.append(ln.split(" ", 2)[2][:200])
    finally:
        p.stop()
    return row


ROWS = {
    "aiosmtpd": (row_aiosmtpd, PEER_DOMAIN),
    "exim-recv": (row_exim_recv, PEER_DOMAIN),
    "opensmtpd": (row_opensmtpd, PEER_DOMAIN),
    "postfix-recv": (row_postfix_recv, PEER_DOMAIN),
    "exim-send": (row_exim_send, LOCAL_DOMAIN),
    "chasquid": (row_chasquid, PEER_DOMAIN),
    "postfix-send": (row_postfix_send, LOCAL_DOMAIN),
    "swaks": (row_swaks, LOCAL_DOMAIN),
    "smtp-source": (row_smtp_source, LOCAL_DOMAIN),
    "smtplib": (row_smtplib, LOCAL_DOMAIN),
}


# --------------------------------------------------------------------------
# table


def write_table(rows, n, out, elapsed):
    L = []
    L.append("# Interoperability matrix\n")
    L.append("Generated by `make interop` (tests/interop/run_interop.py); do not edit by hand.\n")
    L.append(f"{n} messages per row (every 10th with 3 recipients, every 50th with a 1 MB "
             "body); counts below are (message, recipient) copies. \"arrived intact\" = "
             "stored exactly once by the receiver with the same SHA-256 of the body; a row "
             "PASSes when every copy arrived intact and its errors column is 0. "
             f"Total run time {elapsed:.0f} s.\n")
    L.append("| peer | direction | sent | arrived intact | connections | TLS handshakes "
             "| pipelining | CHUNKING | errors | result |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(f"| {r.peer} | {r.direction} | {r.sent} | {r.intact} | {r.conns} | {r.tls} "
                 f"| {r.pipelining} | {r.chunking} | {len(r.errors)} | {r.status} |")
    L.append("\nThe Petrel → peer rows inject with smtplib into a Petrel whose delivery is "
             "held, then let it deliver the backlog; the smtplib row is smtplib as a sender "
             "on its own. swaks runs one process per message (16 at a time); "
             "INTEROP_SWAKS_MESSAGES and INTEROP_CHASQUID_MESSAGES can limit those two rows "
             "(default: every message). smtp-source "
             "sends one file N times (checked against that file). The interop stage of "
             "`make test` (scripts/run-tests.sh) runs this same matrix and fails on any row "
             "that does not PASS.\n")
    L.append("Petrel → peer: connections / TLS handshakes / L / K come from Petrel's `=>` "
             "log lines (C=conn#seq, X=TLS…, L, K). peer → Petrel: connections = Petrel's "
             "`SMTP connection from` lines (one is the harness' readiness probe), TLS = "
             "messages Petrel logged with X=.\n")
    L.append("\n## Notes per row\n")
    for r in rows:
        L.append(f"### {r.peer}, {r.direction} ({r.seconds:.0f} s)\n")
        for x in r.notes:
            L.append(f"- {x}")
        for x in r.errors[:8]:
            L.append(f"- error: `{x}`")
        if len(r.errors) > 8:
            L.append(f"- … {len(r.errors) - 8} more errors")
        L.append("")
    Path(out).write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=int(os.environ.get("INTEROP_MESSAGES", "500")))
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(REPO / "docs" / "interop.md"))
    a = ap.parse_args()
    only = [x for x in a.only.split(",") if x]
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="petrel-interop-"))
    rows = []
    t0 = time.monotonic()
    failed = False
    for name, (fn, domain) in ROWS.items():
        if only and name not in only:
            continue
        msgs = [Msg(i, domain) for i in range(a.messages)]
        t = time.monotonic()
        print(f"interop: {name} ...", flush=True)
        try:
            row = fn(msgs, base / name)
            # PASS: every copy arrived intact and nothing went wrong on the
            # way (no deferral, failure, TLS error, sync error or peer
            # complaint: each is an entry in row.errors)
            row.status = "PASS" if (row.intact == row.sent and row.sent
                                    and not row.errors) else "FAIL"
        except Exception as e:  # noqa: BLE001 — the matrix goes on
            row = Row(name, "?")
            row.status = "ERROR"
            row.errors.append(f"{type(e).__name__}: {str(e)[:300]}")
            traceback.print_exc()
        row.seconds = time.monotonic() - t
        failed |= row.status != "PASS"
        print(f"interop: {name}: {row.status} sent={row.sent} intact={row.intact} "
              f"conns={row.conns} tls={row.tls} L={row.pipelining} K={row.chunking} "
              f"errors={len(row.errors)} ({row.seconds:.0f}s)", flush=True)
        for x in row.errors[:5]:
            print("   ", x)
        rows.append(row)
    write_table(rows, a.messages, a.out, time.monotonic() - t0)
    if not os.environ.get("PETREL_KEEP_PEERS"):
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"interop: Petrel work directories kept in {base}")
    print(f"interop: wrote {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
