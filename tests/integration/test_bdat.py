"""CHUNKING / BDAT (RFC 3030): byte-exact content, chunk boundaries anywhere,
errors that still consume the chunk, and BDAT with pipelining."""

import pytest

from petrel_helpers import expect, expect_queued, make_message


def open_txn(c, sender="sender@example.com", rcpt="rcpt@local.example"):
    c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n")
    r = c.read_replies(2)
    expect(r[0], 250, "2.1.0")
    expect(r[1], 250, "2.1.5")


def content_of(size):
    """CRLF content of exactly `size` octets, with lines that start with a
    dot and one that looks like the DATA terminator."""
    base = (b"Subject: bdat\r\n\r\n.leading dot\r\n\r\n.\r\nMAIL FROM:<x@y.example>\r\n"
            + b"".join(b"line %05d ................\r\n" % i for i in range(6000)))
    assert size <= len(base)
    out = base[:size]
    # do not end with a bare CR (that would be a bare CR at BDAT LAST)
    if out.endswith(b"\r"):
        out = out[:-1] + b"x"
    return out


def send_chunks(c, content, chunk, pipelined):
    pieces = [content[i:i + chunk] for i in range(0, len(content), chunk)] or [b""]
    wire = []
    for i, piece in enumerate(pieces):
        last = " LAST" if i == len(pieces) - 1 else ""
        wire.append(f"BDAT {len(piece)}{last}\r\n".encode() + piece)
    if pipelined:
        c.send(b"".join(wire))
        replies = c.read_replies(len(pieces))
    else:
        replies = []
        for w in wire:
            c.send(w)
            replies.append(c.read_reply())
    for piece, r in zip(pieces[:-1], replies[:-1]):
        expect(r, 250, "2.0.0", f"{len(piece)} octets received")
    return expect_queued(replies[-1])


@pytest.mark.parametrize("pipelined", [False, True], ids=["lockstep", "pipelined"])
@pytest.mark.parametrize("chunk,size", [(1, 300), (7, 1000), (1000, 5000),
                                        (65536 + 3, 120000)])
def test_chunk_sizes(petrel, chunk, size, pipelined):
    content = content_of(size)
    with petrel.session() as c:
        open_txn(c)
        qid = send_chunks(c, content, chunk, pipelined)
        c.marker()
    sp = petrel.spool_msg(qid)
    assert sp.body == content
    assert sp.env["sender"] == "sender@example.com"
    assert sp.rcpts == ["rcpt@local.example"]
    assert petrel.tmp_files() == []
    assert petrel.sync_error_lines() == []


def test_single_chunk_last(petrel):
    content = make_message(body=".a\r\n..b\r\n")
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).body == content


def test_bdat_0_last_ends_message(petrel):
    content = make_message()
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(content)}\r\n".encode() + content)
        expect(c.read_reply(), 250, "2.0.0", f"{len(content)} octets received")
        c.send(b"BDAT 0 LAST\r\n")
        qid = expect_queued(c.read_reply())
        c.marker()
    assert petrel.spool_msg(qid).body == content


def test_bdat_last_case_insensitive(petrel):
    content = make_message()
    with petrel.session() as c:
        open_txn(c)
        c.send(f"bdat {len(content)} last\r\n".encode() + content)
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).body == content


def test_chunk_holding_smuggled_commands_is_content(petrel):
    content = (b"Subject: bdat smuggle\r\n\r\nhello\r\n.\r\n"
               b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<v@local.example>\r\n"
               b"DATA\r\nevil\r\n.\r\n")
    with petrel.session() as c:
        open_txn(c, sender="legit@example.com")
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        qid = expect_queued(c.read_reply())
        c.marker()
    msgs = petrel.all_msgs()
    assert [m.env["id"] for m in msgs] == [qid]
    assert msgs[0].env["sender"] == "legit@example.com"
    assert msgs[0].body == content


def test_crlf_split_across_chunks(petrel):
    """A CR at the end of one chunk and its LF at the start of the next is
    a CRLF, not a bare CR."""
    a = b"Subject: split\r\n\r\nline\r"
    b = b"\nmore\r\n"
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(a)}\r\n".encode() + a)
        expect(c.read_reply(), 250, "2.0.0")
        c.send(f"BDAT {len(b)} LAST\r\n".encode() + b)
        qid = expect_queued(c.read_reply())
    assert petrel.spool_msg(qid).body == a + b


def test_two_transactions_pipelined(petrel):
    m1, m2 = make_message(subject="one"), make_message(subject="two")
    with petrel.session() as c:
        c.send(b"MAIL FROM:<s1@example.com>\r\nRCPT TO:<r1@local.example>\r\n"
               + f"BDAT {len(m1)} LAST\r\n".encode() + m1
               + b"MAIL FROM:<s2@example.com>\r\nRCPT TO:<r2@local.example>\r\n"
               + f"BDAT {len(m2)} LAST\r\n".encode() + m2)
        r = c.read_replies(6)
        assert [(x.code, x.enh) for x in r] == [(250, "2.1.0"), (250, "2.1.5"),
                                               (250, "2.0.0")] * 2
        q1, q2 = expect_queued(r[2]), expect_queued(r[5])
        c.marker()
    assert petrel.spool_msg(q1).body == m1
    assert petrel.spool_msg(q2).body == m2
    assert petrel.sync_error_lines() == []


# --------------------------------------------------------------------------
# errors


def test_bdat_without_mail_consumes_chunk(petrel):
    chunk = b"HELP\r\nQUIT\r\n"
    with petrel.session() as c:
        c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        expect(c.read_reply(), 503, "5.5.1")
        c.marker()  # the chunk's HELP/QUIT were not executed
    assert petrel.queue_files() == []


def test_bdat_without_rcpt_consumes_chunk(petrel):
    chunk = b"QUIT\r\n"
    with petrel.session() as c:
        expect(c.mail(), 250, "2.1.0")
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        expect(c.read_reply(), 503, "5.5.1")
        c.marker()
    assert petrel.queue_files() == []


def test_bdat_without_mail_pipelined_then_valid(petrel):
    junk = b"x" * 100
    content = make_message()
    with petrel.session() as c:
        c.send(f"BDAT {len(junk)} LAST\r\n".encode() + junk
               + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@local.example>\r\n"
               + f"BDAT {len(content)} LAST\r\n".encode() + content)
        r = c.read_replies(4)
        expect(r[0], 503, "5.5.1")
        expect(r[1], 250, "2.1.0")
        expect(r[2], 250, "2.1.5")
        qid = expect_queued(r[3])
    assert petrel.spool_msg(qid).body == content


def test_data_after_bdat(petrel):
    chunk = b"Subject: x\r\n\r\n"
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        expect(c.read_reply(), 250, "2.0.0")
        expect(c.cmd("DATA"), 503, "5.5.1")
        c.marker()
    assert petrel.queue_files() == []


def test_rset_discards_bdat_transaction(petrel):
    """RSET in the middle of a BDAT transaction discards it."""
    chunk = b"Subject: x\r\n\r\npartial\r\n"
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        expect(c.read_reply(), 250, "2.0.0")
        expect(c.cmd("RSET"), 250, "2.0.0")
        c.send(b"BDAT 3 LAST\r\nabc")
        expect(c.read_reply(), 503, "5.5.1")
        c.marker()
    assert petrel.queue_files() == []
    assert petrel.tmp_files() == []


def test_chunking_disabled(petrel_factory):
    p = petrel_factory(listen={"chunking": "no"})
    with p.session() as c:
        r = c.cmd("EHLO x")
        assert "CHUNKING" not in r.lines
        open_txn(c)
        c.send(b"BDAT 4 LAST\r\n")
        expect(c.read_reply(), 502, "5.5.1")
    assert p.queue_files() == []


def test_bdat_after_helo_not_available(petrel):
    """CHUNKING is an EHLO extension: after HELO, BDAT is not offered."""
    with petrel.connect() as c:
        c.helo()
        expect(c.mail(), 250, "2.1.0")
        expect(c.rcpt(), 250, "2.1.5")
        c.send(b"BDAT 4 LAST\r\n")
        expect(c.read_reply(), 502, "5.5.1")


@pytest.mark.parametrize("arg", ["", "abc", "-1", "10 FIRST", "1 LAST extra",
                                 "99999999999999999999999"])
def test_bdat_bad_argument(petrel, arg):
    with petrel.session() as c:
        open_txn(c)
        r = c.cmd(f"BDAT {arg}".rstrip())
        expect(r, 501, "5.5.4")
        c.marker()


def test_bdat_bare_lf_rejected(petrel):
    chunk = b"Subject: x\r\n\r\nbare\nlf\r\n"
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        expect(c.read_reply(), 550, "5.6.0")
        c.marker()
    assert petrel.queue_files() == []
    assert petrel.tmp_files() == []


def test_bdat_bare_lf_normalized(petrel_factory):
    p = petrel_factory(listen={"bare_lf": "normalize"})
    chunk = b"Subject: x\r\n\r\nbare\nlf\rcr\r\n"
    with p.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        qid = expect_queued(c.read_reply())
    assert p.spool_msg(qid).body == b"Subject: x\r\n\r\nbare\r\nlf\r\ncr\r\n"


def test_bdat_nul_rejected(petrel):
    chunk = b"Subject: x\r\n\r\nnul\x00\r\n"
    with petrel.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        expect(c.read_reply(), 550, "5.6.0")
        c.marker()
    assert petrel.queue_files() == []


def test_bdat_over_max_size(petrel_factory):
    p = petrel_factory(listen={"max_message_size": "10000"})
    chunk = (b"z" * 98 + b"\r\n") * 200
    with p.session() as c:
        open_txn(c)
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        expect(c.read_reply(), 552, "5.3.4")
        c.marker()
        # still usable
        open_txn(c)
        small = make_message()
        c.send(f"BDAT {len(small)} LAST\r\n".encode() + small)
        qid = expect_queued(c.read_reply())
    assert [x.name for x in p.queue_files()] == [qid]
    assert p.tmp_files() == []
