"""DNS lookups of src/dns.c through build/dnsq against a real DNS server.

A private NSD (tests/integration/dnsserver.py) serves the zone
petrel-test.example on 127.0.0.1; dnsq forwards every query to it
(dns_new(base, "127.0.0.1@PORT")). Covered: MX preference order with
shuffled ties, A then AAAA addresses with the port, implicit MX, null MX
(alone and mixed), NXDOMAIN, MX targets without addresses or whose lookups
fail, DNS_MAX_HOSTS / DNS_MAX_ADDRS caps, CNAME, host lookups and the IP
literal short-cut, SERVFAIL and an unreachable resolver (DNS_TEMPFAIL), and
cancellation by dns_free() with lookups outstanding, and the per-lookup
timer (with dnsq_t2, whose timer is 2 s instead of 30 s) against servers
that never answer.

dnsq prints "STATUS temporary=T implicit=I", then one line per host
"PREF NAME ADDR:PORT ...", then "why: ..." and "elapsed_ms=N".
"""

import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dnsserver import DnsServer, unreachable_resolver  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DNSQ = Path(os.environ.get("PETREL_DNSQ", REPO / "build" / "dnsq"))
# The same program built with -DDNS_JOB_TIMEOUT=2, to reach dns.c's timer.
DNSQ_T2 = Path(os.environ.get("PETREL_DNSQ_T2", REPO / "build" / "dnsq_t2"))
Z = "petrel-test.example"
RUN_TIMEOUT = 60

ZONE = """
@            MX 10 mx1
@            MX 20 mx2
@            MX 20 mx3
@            MX 30 mx4
mx1          A    127.0.0.2
mx1          AAAA ::1
mx2          A    127.0.0.3
mx3          A    127.0.0.4
mx4          A    127.0.0.6
implicit     A    127.0.0.5
implicit     AAAA ::1
v6only       AAAA ::1
nullmx       MX 0 .
nullmix      MX 0 .
nullmix      MX 10 mx1
dotpref      MX 10 .
dangling     MX 10 nowhere
partial      MX 10 nowhere
partial      MX 20 mx2
failing      MX 10 mx.unserved.example.
failmix      MX 10 mx.unserved.example.
failmix      MX 20 mx3
txtonly      TXT "no mail here"
alias        CNAME mx1
mxalias      CNAME @
""" + "".join(f"many MX {i} h{i:02d}\nh{i:02d} A 127.0.1.{i}\n"
              for i in range(1, 21)) \
    + "".join(f"wide A 127.0.2.{i}\n" for i in range(1, 11)) \
    + "wide AAAA ::1\n"


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    if not DNSQ.exists():
        pytest.skip(f"{DNSQ} is missing: the build does not make dnsq "
                    "(tests/tools/dnsq.c) yet")
    with DnsServer(tmp_path_factory.mktemp("dns"), {Z: ZONE}) as server:
        yield server


class Result:
    def __init__(self, out):
        lines = out.splitlines()
        assert lines, "dnsq printed nothing"
        head = lines[0].split()
        assert len(head) == 3, out
        self.status = head[0]
        self.temporary = int(head[1].removeprefix("temporary="))
        self.implicit = int(head[2].removeprefix("implicit="))
        self.hosts = []  # (pref, name, [addr, ...])
        self.why = ""
        self.elapsed_ms = None
        for ln in lines[1:]:
            if ln.startswith("why: "):
                self.why = ln[5:]
            elif ln.startswith("elapsed_ms="):
                self.elapsed_ms = int(ln[len("elapsed_ms="):])
            else:
                f = ln.split()
                self.hosts.append((int(f[0]), f[1], f[2:]))
        self.text = out

    @property
    def names(self):
        return [h[1] for h in self.hosts]


def dnsq(*args, resolver=None, expect_rc=0):
    cmd = [str(DNSQ)]
    if resolver is not None:
        cmd += ["-r", resolver]
    cmd += [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    assert r.returncode == expect_rc, \
        f"{cmd}: rc={r.returncode}\n{r.stdout}{r.stderr}"
    return r


def mx(dns, domain, port=25):
    return Result(dnsq("mx", domain, port, resolver=dns.resolver).stdout)


def host(dns, name, port=25):
    return Result(dnsq("host", name, port, resolver=dns.resolver).stdout)


def test_mx_preference_order_and_shuffled_ties(dns):
    orders = set()
    for _ in range(20):
        r = mx(dns, Z)
        assert (r.status, r.temporary, r.implicit) == ("OK", 0, 0), r.text
        prefs = [h[0] for h in r.hosts]
        assert prefs == [10, 20, 20, 30], r.text
        assert r.names[0] == f"mx1.{Z}"
        assert sorted(r.names[1:3]) == [f"mx2.{Z}", f"mx3.{Z}"]
        assert r.names[3] == f"mx4.{Z}"
        orders.add(tuple(r.names[1:3]))
    assert len(orders) == 2, f"tie order never changed in 20 runs: {orders}"


def test_mx_addresses_ipv4_first_with_port(dns):
    r = mx(dns, Z, 2525)
    assert r.hosts[0] == (10, f"mx1.{Z}", ["127.0.0.2:2525", "[::1]:2525"])
    by_name = {h[1]: h for h in r.hosts}
    assert by_name[f"mx2.{Z}"][2] == ["127.0.0.3:2525"]
    assert by_name[f"mx3.{Z}"][2] == ["127.0.0.4:2525"]
    assert r.why == ""


def test_domain_case_and_final_dot(dns):
    r = mx(dns, Z.upper() + ".")
    assert r.status == "OK"
    assert r.names[0] == f"mx1.{Z}"


def test_implicit_mx(dns):
    r = mx(dns, f"implicit.{Z}")
    assert (r.status, r.temporary, r.implicit) == ("OK", 0, 1), r.text
    assert r.hosts == [(0, f"implicit.{Z}", ["127.0.0.5:25", "[::1]:25"])]


def test_implicit_mx_ipv6_only(dns):
    r = mx(dns, f"v6only.{Z}", 587)
    assert (r.status, r.implicit) == ("OK", 1), r.text
    assert r.hosts == [(0, f"v6only.{Z}", ["[::1]:587"])]


def test_null_mx(dns):
    r = mx(dns, f"nullmx.{Z}")
    assert (r.status, r.temporary, r.implicit) == ("NULLMX", 0, 0), r.text
    assert r.hosts == []
    assert r.why.startswith(f"nullmx.{Z}: null MX")


def test_null_mx_mixed_with_real_mx_is_ignored(dns):
    r = mx(dns, f"nullmix.{Z}")
    assert r.status == "OK", r.text
    assert r.hosts == [(10, f"mx1.{Z}", ["127.0.0.2:25", "[::1]:25"])]


def test_root_target_with_nonzero_preference(dns):
    # Not RFC 7505's form (preference 0): no usable host, permanent.
    r = mx(dns, f"dotpref.{Z}")
    assert (r.status, r.temporary) == ("NOADDR", 0), r.text


def test_nxdomain(dns):
    r = mx(dns, f"nope.{Z}")
    assert (r.status, r.temporary, r.implicit) == ("NXDOMAIN", 0, 0), r.text
    assert r.why == f"nope.{Z}: NXDOMAIN"


def test_mx_target_without_address(dns):
    r = mx(dns, f"dangling.{Z}")
    assert (r.status, r.temporary, r.implicit) == ("NOADDR", 0, 0), r.text
    assert r.hosts == []


def test_host_without_address_is_dropped(dns):
    r = mx(dns, f"partial.{Z}")
    assert r.status == "OK", r.text
    assert r.hosts == [(20, f"mx2.{Z}", ["127.0.0.3:25"])]


def test_mx_target_lookup_fails_temporarily(dns):
    # mx.unserved.example is outside the served zone: REFUSED -> SERVFAIL.
    r = mx(dns, f"failing.{Z}")
    assert (r.status, r.temporary) == ("NOADDR", 1), r.text
    r = mx(dns, f"failmix.{Z}")
    assert r.status == "OK", r.text
    assert r.hosts == [(20, f"mx3.{Z}", ["127.0.0.4:25"])]


def test_no_mx_no_address_is_permanent(dns):
    r = mx(dns, f"txtonly.{Z}")
    assert (r.status, r.temporary) == ("NOADDR", 0), r.text


def test_at_most_max_hosts_by_preference(dns):
    r = mx(dns, f"many.{Z}")
    assert r.status == "OK", r.text
    assert [h[0] for h in r.hosts] == list(range(1, 17))  # DNS_MAX_HOSTS
    assert r.hosts[0] == (1, f"h01.{Z}", ["127.0.1.1:25"])


def test_at_most_max_addrs_ipv4_first(dns):
    r = host(dns, f"wide.{Z}")
    assert r.status == "OK", r.text
    addrs = r.hosts[0][2]
    assert len(addrs) == 8  # DNS_MAX_ADDRS
    assert all(a.startswith("127.0.2.") for a in addrs), addrs


def test_cname_followed(dns):
    r = host(dns, f"alias.{Z}")
    assert r.status == "OK", r.text
    assert r.hosts == [(0, f"alias.{Z}", ["127.0.0.2:25", "[::1]:25"])]
    r = mx(dns, f"mxalias.{Z}")
    assert r.status == "OK", r.text
    assert [h[0] for h in r.hosts] == [10, 20, 20, 30]


def test_host_lookup(dns):
    r = host(dns, f"mx1.{Z}", 465)
    assert (r.status, r.temporary, r.implicit) == ("OK", 0, 0), r.text
    assert r.hosts == [(0, f"mx1.{Z}", ["127.0.0.2:465", "[::1]:465"])]


def test_host_nxdomain_and_noaddr(dns):
    r = host(dns, f"nope.{Z}")
    assert (r.status, r.temporary) == ("NXDOMAIN", 0), r.text
    r = host(dns, f"txtonly.{Z}")
    assert (r.status, r.temporary) == ("NOADDR", 0), r.text


def test_ip_literal_needs_no_dns():
    if not DNSQ.exists():
        pytest.skip(f"{DNSQ} is missing")
    dead = unreachable_resolver()
    r = Result(dnsq("host", "127.0.0.1", 25, resolver=dead).stdout)
    assert r.status == "OK", r.text
    assert r.hosts == [(0, "127.0.0.1", ["127.0.0.1:25"])]
    assert r.elapsed_ms < 1000
    r = Result(dnsq("host", "::1", 2525, resolver=dead).stdout)
    assert r.hosts == [(0, "::1", ["[::1]:2525"])]
    assert r.elapsed_ms < 1000


def test_servfail_is_tempfail(dns):
    r = mx(dns, "unserved.example")
    assert (r.status, r.temporary) == ("TEMPFAIL", 1), r.text
    r = host(dns, "mx.unserved.example")
    assert (r.status, r.temporary) == ("TEMPFAIL", 1), r.text


def test_unreachable_resolver_is_bounded_tempfail():
    if not DNSQ.exists():
        pytest.skip(f"{DNSQ} is missing")
    r = Result(dnsq("mx", Z, 25, resolver=unreachable_resolver()).stdout)
    assert (r.status, r.temporary) == ("TEMPFAIL", 1), r.text
    assert r.elapsed_ms <= 31000, r.text  # libunbound's own retries, or 30 s


def test_dns_free_cancels_outstanding_lookup():
    if not DNSQ.exists():
        pytest.skip(f"{DNSQ} is missing")
    # The MX query cannot be answered: it is outstanding at dns_free().
    r = dnsq("-c", 200, "mx", Z, 25, resolver=unreachable_resolver())
    assert r.stdout.strip() == "cancelled", r.stdout + r.stderr


def test_dns_free_at_any_moment(dns):
    # Cancel at various points of MX then A/AAAA: never a late callback.
    for ms in range(0, 8):
        r = dnsq("-c", ms, "mx", Z, 25, resolver=dns.resolver)
        first = r.stdout.splitlines()[0]
        assert first in ("cancelled", "OK temporary=0 implicit=0"), r.stdout


def test_bad_arguments():
    if not DNSQ.exists():
        pytest.skip(f"{DNSQ} is missing")
    r = dnsq("mx", "bad..name", 25, resolver="127.0.0.1@53", expect_rc=2)
    assert "could not start" in r.stdout
    r = dnsq("mx", Z, 25, resolver="not an address", expect_rc=2)
    assert "resolver" in r.stderr


class PartialServer:
    """UDP DNS responder on loopback that answers MX queries (one MX,
    "mx.<qname>", preference 10) when answer_mx is set and never answers
    anything else: lookups hang until a timer ends them."""

    def __init__(self, answer_mx):
        self.answer_mx = answer_mx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def resolver(self):
        return f"127.0.0.1@{self.port}"

    def _serve(self):
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            if len(data) < 12 or not self.answer_mx:
                continue
            off = 12
            labels = []
            while off < len(data) and data[off] != 0:
                n = data[off]
                labels.append(data[off + 1:off + 1 + n])
                off += 1 + n
            off += 1
            if off + 4 > len(data):
                continue
            qtype = struct.unpack(">H", data[off:off + 2])[0]
            if qtype != 15:
                continue
            question = data[12:off + 4]
            target = b"\x02mx" + b"".join(
                bytes([len(x)]) + x for x in labels) + b"\0"
            rdata = struct.pack(">H", 10) + target
            reply = data[:2] + struct.pack(">HHHHH", 0x8580, 1, 1, 0, 0) \
                + question + struct.pack(">HHHIH", 0xc00c, 15, 1, 60,
                                         len(rdata)) + rdata
            self.sock.sendto(reply, peer)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


def dnsq_t2(*args):
    if not DNSQ_T2.exists():
        pytest.skip(f"{DNSQ_T2} is missing: the build does not make dnsq_t2 "
                    "(tests/tools/dnsq.c with -DDNS_JOB_TIMEOUT=2) yet")
    r = subprocess.run([str(DNSQ_T2)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, f"{args}: rc={r.returncode}\n{r.stdout}{r.stderr}"
    return Result(r.stdout)


def test_timer_ends_unanswered_mx_lookup():
    with PartialServer(answer_mx=False) as srv:
        r = dnsq_t2("-r", srv.resolver, "mx", Z, 25)
    assert (r.status, r.temporary) == ("TEMPFAIL", 1), r.text
    assert r.why == f"{Z}: MX lookup timeout"
    assert 1900 <= r.elapsed_ms < 5000, r.text


def test_timer_ends_unanswered_address_lookups():
    with PartialServer(answer_mx=True) as srv:
        r = dnsq_t2("-r", srv.resolver, "mx", Z, 25)
    assert (r.status, r.temporary) == ("NOADDR", 1), r.text
    assert r.hosts == []
    assert 1900 <= r.elapsed_ms < 5000, r.text
