"""Shared helpers: Asterisk cdr_csv lines built field by field, and fresh stores."""
from __future__ import annotations

import pytest

import cdrtrace
from cdrtrace.parsing.formats import COLUMN_NAMES

FIELDS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
          "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
          "uniqueid", "userfield", "peeraccount", "linkedid", "sequence")
UNQUOTED = {"duration", "billsec", "sequence"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """Two worker processes for `-n auto` (pyproject.toml's default), whatever the cores:
    the slow tests wait on sockets, a Kafka broker, a Kamailio and child processes more
    than they compute, so two share two cores well (the suite ran in 4.6-4.8 min against
    8.5 in one process), and more would crowd the tests that time out a peer."""
    return 2


@pytest.fixture(autouse=True, scope="session")
def _audit_keys_in_a_scratch_home(tmp_path_factory):
    """Stores' audit keys go to the service user's configuration folder: for the tests, a
    scratch one (subprocesses inherit it), never the developer's home."""
    import os

    saved = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if saved is None:
        del os.environ["XDG_CONFIG_HOME"]
    else:
        os.environ["XDG_CONFIG_HOME"] = saved


def q(value: str | bytes) -> bytes:
    if isinstance(value, str):
        value = value.encode("latin-1")
    return b'"' + value.replace(b'"', b'""') + b'"'


def cdr(columns: int = 18, **values) -> bytes:
    """One Asterisk cdr_csv record (no line end) with sensible defaults."""
    v = {
        "accountcode": "", "src": "3035550142", "dst": "3035550110", "dcontext": "from-pstn",
        "clid": '"Pat Doe" <3035550142>', "channel": "PJSIP/trunk-0000001a",
        "dstchannel": None, "lastapp": "Dial",
        "lastdata": "PJSIP/1001,30,tT", "start": "2026-03-02 14:03:11",
        "answer": "2026-03-02 14:03:15", "end": "2026-03-02 14:04:20", "duration": "69",
        "billsec": "65", "disposition": "ANSWERED", "amaflags": "DOCUMENTATION",
        "uniqueid": None, "userfield": "", "peeraccount": "", "linkedid": "", "sequence": "7",
    }
    v.update(values)
    if v["dstchannel"] is None:   # the dialled line rang: not a forward
        v["dstchannel"] = f"PJSIP/{v['dst']}-0000001b"
    if v["uniqueid"] is None:
        v["uniqueid"] = f"{v['start']}|{v['src']}|{v['dst']}|{v['disposition']}"
    if v["disposition"] != "ANSWERED" and "answer" not in values:
        v["answer"] = ""
    out = []
    for name in FIELDS[:columns]:
        value = v[name]
        if isinstance(value, bytes):
            out.append(value)
        elif name in UNQUOTED or (name == "answer" and value == ""):
            out.append(value.encode())
        else:
            out.append(q(value))
    return b",".join(out)


def parse_all(data: bytes, chunks=None, parser=None):
    """Parse data in the given chunk sizes (None: all at once); return (rows, rejects)."""
    p = parser
    sizes = list(chunks or [len(data)])
    carry, pos, rows, rejects = b"", 0, [], []
    while True:
        size = sizes.pop(0) if sizes else len(data)
        block = data[pos:pos + size]
        pos += len(block)
        final = pos >= len(data)
        cols, bad, consumed = p.feed(carry + block, final)
        carry = (carry + block)[consumed:]
        rows += [dict(zip(COLUMN_NAMES, values, strict=True))
                 for values in zip(*(cols[n].tolist() for n in COLUMN_NAMES), strict=True)]
        rejects += bad
        if final:
            assert carry == b"" or not carry.strip(b"\r\n"), carry
            return rows, rejects


def cdr_file(tmp_path, *records: bytes, name="Master.csv", end=b"\n") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(r + end for r in records))
    return str(path)


def held_from_the_customer(store, line: str, at: str, caller: str, start: str) -> dict:
    """A trace that fails closed: `untraceable`, with no call time and nothing of the
    caller for the customer, while the CIC's record keeps the call that was recorded (its
    start). Returns that record."""
    result = store.trace(line, at=at)
    assert (result.outcome.value, result.call_time) == ("untraceable", None)
    assert caller not in repr(result) and caller not in repr(store.status(line))
    (record,) = store.trace_records(line, analyst="cic")
    assert record["call"]["start"] == start
    return record


# Both legs of a FreeSWITCH call (mod_cdr_csv with `legs` = `ab`) on 2023-01-01, before
# the tests' calls: a DID's A leg whose bleg_uuid is the B leg to the phone it rang. A
# FreeSWITCH feed is trusted from the first call it shows two legs of (tests/
# test_freeswitch_legs.py); tests of other rules ingest this first, into the same feed.
FS_TWO_LEGS = (
    b'"Legs","7205559901","3035559901","public","2023-01-01 00:00:00","2023-01-01 00:00:04",'
    b'"2023-01-01 00:01:00","60","56","NORMAL_CLEARING","legs-a","legs-b","","PCMU","PCMU"\n'
    b'"Legs","7205559901","2999","default","2023-01-01 00:00:01","2023-01-01 00:00:04",'
    b'"2023-01-01 00:01:00","59","56","NORMAL_CLEARING","legs-b","","","PCMU","PCMU"\n')


def show_freeswitch_legs(store, tmp_path, **kwargs) -> None:
    """Ingest FS_TWO_LEGS into the store (kwargs: its feed): FreeSWITCH calls after them
    are no longer held for want of the feed showing it writes B legs."""
    path = tmp_path / "two-legs.csv"
    path.write_bytes(FS_TWO_LEGS)
    cdrtrace.ingest(store, [str(path)], fmt="freeswitch", **kwargs)


@pytest.fixture(params=["native", "reference"])
def store_either(request, tmp_path):
    """A store whose traces are made as the service makes them (in C where it can, which
    leaves those a hunt note holds to its reference), or by the reference alone (py-lmdb's
    own calls)."""
    s = cdrtrace.open(tmp_path / "store", create=True)
    if request.param == "reference":
        s._tracer.native = False
    yield s
    s.close()


@pytest.fixture
def store(tmp_path):
    s = cdrtrace.open(tmp_path / "store", create=True)
    yield s
    s.close()


@pytest.fixture
def ingest_records(store, tmp_path):
    counter = iter(range(10_000))

    def run(*records: bytes, **kwargs):
        path = cdr_file(tmp_path, *records, name=f"cdr-{next(counter)}.csv")
        return cdrtrace.ingest(store, [path], **kwargs)

    return run


def refusal(raw: bytes, status: int) -> str:
    """A whole HTTP answer (read until the connection closed) the connection gave itself:
    the status given, closing, `{"error": ...}` as JSON like every route's; the error."""
    import json

    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    assert lines[0].startswith(f"http/1.1 {status} "), raw[:200]
    assert "content-type: application/json" in lines and "connection: close" in lines, lines
    assert f"content-length: {len(body)}" in lines, (lines, body)
    answer = json.loads(body)
    assert list(answer) == ["error"] and answer["error"], answer
    return answer["error"]


def read_to_end(sock) -> bytes:
    """Everything a socket gets until its peer closes."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got
