#!/usr/bin/python3
"""A receiving aiosmtpd server for the interop matrix (python3-aiosmtpd).

    aiosmtpd_peer.py PORT DIR CERT KEY

Listens on 127.0.0.1:PORT, offers STARTTLS (CERT/KEY), stores each accepted
message as DIR/NNNNNN.eml (content as received, CRLF) with the envelope in
DIR/NNNNNN.env (MAIL FROM line, then one RCPT per line), and counts
connections / TLS handshakes in DIR/stats.json (rewritten on every event).
"""
import json
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

port, out, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.makedirs(out, exist_ok=True)
lock = threading.Lock()
stats = {"connections": 0, "tls_handshakes": 0, "messages": 0, "ehlo": 0}


def bump(k):
    with lock:
        stats[k] += 1
        tmp = os.path.join(out, "stats.json.tmp")
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, os.path.join(out, "stats.json"))


class CountingSMTP(SMTP):
    def connection_made(self, transport):
        first = self.transport is None
        super().connection_made(transport)
        if first:
            bump("connections")
        else:           # aiosmtpd calls it again after the STARTTLS handshake
            bump("tls_handshakes")


class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        bump("ehlo")
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        with lock:
            n = stats["messages"]
        base = os.path.join(out, f"{n:06d}")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".env", "w") as f:
            f.write(envelope.mail_from + "\n" + "".join(r + "\n" for r in envelope.rcpt_tos))
        os.replace(base + ".eml.tmp", base + ".eml")
        bump("messages")
        return "250 2.0.0 OK stored"


class C(Controller):
    def factory(self):
        return CountingSMTP(self.handler, tls_context=ctx, require_starttls=False,
                            decode_data=False, data_size_limit=60 * 1024 * 1024,
                            hostname="aiosmtpd.peer.test")


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = C(Handler(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
try:
    threading.Event().wait()
except KeyboardInterrupt:
    pass
finally:
    c.stop()
