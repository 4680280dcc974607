"""A private, authoritative DNS server on loopback for tests: NSD (Debian
package nsd) with its own config, zone files, pid file and logs in a tmp
dir, listening on 127.0.0.1 at a free port (UDP and TCP).

    from dnsserver import DnsServer, unreachable_resolver

    with DnsServer(tmp_path / "dns", {"petrel-test.example": '''
    @     MX 10 mx1
    mx1   A  127.0.0.2
    '''}) as dns:
        run(["build/dnsq", "-r", dns.resolver, "mx", "petrel-test.example", "25"])

Zones are given as record text relative to their origin; SOA and NS records
are added. Names under .test, .invalid, .localhost, .onion and the like are
answered by libunbound itself (its default local zones: NXDOMAIN, the server
is never asked), so tests use zones under .example such as
"petrel-test.example".

Failure modes for tests:
  - a name outside every zone served gets REFUSED from NSD, which libunbound
    turns into SERVFAIL at once (DNS_TEMPFAIL, fast);
  - unreachable_resolver() names a loopback port where nothing listens:
    libunbound retries, then gives SERVFAIL after about 17 s (its own
    timeouts; Petrel's per-lookup cap is 30 s).

Everything is bounded: the server must answer within 10 s of start, stop()
waits at most 10 s before SIGKILL. The server is stopped by PID, never by
name.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _find(prog):
    path = shutil.which(prog) or shutil.which(
        prog, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(
            f"{prog} not found: install the Debian package nsd "
            "(apt-get install nsd)")
    return path


def free_port_udp_tcp(host="127.0.0.1"):
    """A port free for both UDP and TCP on host (a DNS server wants both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on loopback")


def unreachable_resolver():
    """"127.0.0.1@PORT" where no DNS server listens (queries time out or are
    refused by the kernel): lookups through it end in DNS_TEMPFAIL."""
    return f"127.0.0.1@{free_port_udp_tcp()}"


def _group_alive(pgid):
    """Does process group pgid have a member that is not a zombie?"""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wire_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def query(port, name, qtype=6, timeout=1.0, host="127.0.0.1"):
    """Send one UDP query (no recursion); return (rcode, aa, ancount) or
    None when nothing came back within timeout."""
    qid = int.from_bytes(os.urandom(2), "big")
    msg = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + _wire_name(name) + \
        struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, (host, port))
        try:
            data, _ = s.recvfrom(65535)
        except (socket.timeout, ConnectionRefusedError):
            return None
    if len(data) < 12:
        return None
    rid, flags, _qd, an = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        return None
    return flags & 0x0f, bool(flags & 0x0400), an


def zone_text(origin, body, serial=1):
    origin = origin.rstrip(".") + "."
    return (f"$ORIGIN {origin}\n$TTL 60\n"
            f"@ IN SOA ns.{origin} hostmaster.{origin} {serial} 3600 600 "
            "86400 60\n"
            f"@ IN NS ns.{origin}\n"
            f"ns.{origin} IN A 127.0.0.1\n"
            + "\n".join(line.strip() for line in body.strip().splitlines())
            + "\n")


class DnsServer:
    """One NSD instance. zones: {origin: record text}."""

    def __init__(self, workdir, zones):
        self.dir = Path(workdir)
        self.zones = {o.rstrip(".") + ".": b for o, b in zones.items()}
        self.port = None
        self.proc = None
        self.log = self.dir / "nsd.log"

    @property
    def resolver(self):
        """Argument for dns_new() / dnsq -r."""
        return f"127.0.0.1@{self.port}"

    def _write_config(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = [
            "server:",
            "\tip-address: 127.0.0.1",
            f"\tport: {self.port}",
            "\tdo-ip4: yes",
            "\tdo-ip6: no",
            '\tusername: ""',
            '\tchroot: ""',
            f'\tzonesdir: "{self.dir}"',
            '\tdatabase: ""',
            f'\tpidfile: "{self.dir}/nsd.pid"',
            f'\txfrdfile: "{self.dir}/xfrd.state"',
            f'\txfrdir: "{self.dir}"',
            f'\tzonelistfile: "{self.dir}/zone.list"',
            f'\tlogfile: "{self.log}"',
            "\tserver-count: 1",
            "\tverbosity: 1",
            "\thide-version: yes",
            "\treuseport: no",
            "remote-control:",
            "\tcontrol-enable: no",
        ]
        checkzone = _find("nsd-checkzone")
        for i, (origin, body) in enumerate(sorted(self.zones.items())):
            zf = self.dir / f"zone{i}.zone"
            zf.write_text(zone_text(origin, body))
            r = subprocess.run([checkzone, origin, str(zf)],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(
                    f"zone {origin} rejected by nsd-checkzone:\n"
                    f"{r.stdout}{r.stderr}\n{zf.read_text()}")
            conf += ["zone:", f'\tname: "{origin}"', f'\tzonefile: "{zf}"']
        path = self.dir / "nsd.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def start(self):
        nsd = _find("nsd")
        last = None
        for _ in range(3):  # the free port may be taken meanwhile: retry
            self.port = free_port_udp_tcp()
            conf = self._write_config()
            out = open(self.dir / "nsd.stderr", "ab")
            try:
                self.proc = subprocess.Popen(
                    [nsd, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            finally:
                out.close()
            try:
                self._wait_ready()
                return self
            except RuntimeError as e:
                last = e
                self.stop()
        raise last

    def _wait_ready(self):
        origin = sorted(self.zones)[0]
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nsd exited ({self.proc.returncode}):\n"
                                   + self.logs())
            r = query(self.port, origin, 6, timeout=0.2)
            if r is not None and r[0] == 0 and r[1]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"nsd did not answer within {START_TIMEOUT}s:\n"
                           + self.logs())

    def logs(self):
        text = ""
        for name in ("nsd.stderr", "nsd.log"):
            p = self.dir / name
            if p.exists():
                text += p.read_text(errors="replace")
        return text

    def stop(self):
        """SIGTERM by PID (nsd takes its child processes down), SIGKILL to
        the process group if it does not exit within STOP_TIMEOUT."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=STOP_TIMEOUT)
        # The main process does not wait for its server children: wait
        # until the process group (started for nsd alone) is empty.
        pgid = self.proc.pid
        deadline = time.monotonic() + STOP_TIMEOUT
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.05)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
