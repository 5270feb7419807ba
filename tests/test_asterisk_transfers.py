"""A call transferred to a line through Asterisk 12 and later (docs/trace-rules.md, "A
transferred call").

Asterisk's CDR engine (main/cdr.c since 12) writes a record per pair of channels that
were bridged. An attended transfer made with the feature code (FreePBX's *2) leaves
three: the caller's call to the receptionist; the consultation call, in which a Local
channel the receptionist's phone requested rings the target (the Local channel's caller
is the receptionist's, and a channel requested by another takes its linkedid); and the
call between the caller and the target once the receptionist hangs up, a record of the
caller's channel (party A, never the dialled one) begun at the transfer, its dst and
lastapp copied from the caller's record before and its dstchannel the target's phone.
Channels that share a bridge take its oldest linkedid. With the linkedid column
(cdr_adaptive_odbc, FreePBX's database table, newcdrcolumns), all three records are
one call: on the target's line its consultation leg began first and named the
receptionist. Without it (cdr_csv's 18 columns), each record has its party A's uniqueid.

Here a harasser calls the receptionist 3001 at 14:00; she consults 3002 at 14:02 and
completes the transfer at 14:03; 3002 talks to the harasser until 14:10 and dials *57 at
14:11. 3002's earlier call, 13:30, is an innocent caller's.
"""
from __future__ import annotations

import itertools

import pytest

import cdrtrace
from conftest import cdr, cdr_file, held_from_the_customer

HARASSER, RECEPTIONIST, INNOCENT = "7205550199", "3001", "7205550100"
AT = "2026-03-02T14:11:00Z"
L1 = "1772460000.2"          # the caller's channel's uniqueid, the call's linkedid


def records(columns: int = 21) -> list[bytes]:
    """The innocent 13:30 call to 3002, then the transfer's three records."""
    older = cdr(columns, src=INNOCENT, clid=f'"" <{INNOCENT}>', dst="3002",
                channel="PJSIP/trunk-00000000", dstchannel="PJSIP/3002-00000001",
                start="2026-03-02 13:30:00", answer="2026-03-02 13:30:04",
                end="2026-03-02 13:31:00", uniqueid="1772458200.0", linkedid="1772458200.0")
    original = cdr(columns, src=HARASSER, clid=f'"" <{HARASSER}>', dst=RECEPTIONIST,
                   channel="PJSIP/trunk-00000002", dstchannel="PJSIP/3001-00000003",
                   lastdata="PJSIP/3001,20", start="2026-03-02 14:00:00",
                   answer="2026-03-02 14:00:05", end="2026-03-02 14:03:00", uniqueid=L1,
                   linkedid=L1)
    consult = cdr(columns, src=RECEPTIONIST, clid=f'"Reception" <{RECEPTIONIST}>', dst="3002",
                  dcontext="from-internal-xfer", channel="Local/3002@from-internal-xfer-00000001;2",
                  dstchannel="PJSIP/3002-00000005", lastdata="PJSIP/3002,20",
                  start="2026-03-02 14:02:00", answer="2026-03-02 14:02:04",
                  end="2026-03-02 14:03:00", uniqueid="1772460120.5", linkedid=L1)
    final = cdr(columns, src=HARASSER, clid=f'"" <{HARASSER}>', dst=RECEPTIONIST,
                channel="PJSIP/trunk-00000002", dstchannel="PJSIP/3002-00000005",
                lastdata="PJSIP/3001,20", start="2026-03-02 14:03:00",
                answer="2026-03-02 14:03:00", end="2026-03-02 14:10:00", uniqueid=L1,
                linkedid=L1)
    return [older, original, consult, final]


def transferring_phone(columns: int = 21) -> bytes:
    """The record the receptionist's own channel may leave (main/cdr.c: bridged with the
    Local channel of her consultation, both channels dialled, hers the older, so party A):
    its caller the number dialled (app_dial stores it on the dialled channel), 3001."""
    return cdr(columns, src=RECEPTIONIST, clid=f'"Reception" <{RECEPTIONIST}>', dst=RECEPTIONIST,
               channel="PJSIP/3001-00000003",
               dstchannel="Local/3002@from-internal-xfer-00000001;1", lastapp="AppDial",
               lastdata="(Outgoing Line)", start="2026-03-02 14:02:00",
               answer="2026-03-02 14:02:00", end="2026-03-02 14:03:00",
               uniqueid="1772460000.3", linkedid=L1)


@pytest.fixture
def store(store_either):
    return store_either     # native and reference tracers (conftest)


def test_the_targets_trace_never_names_the_receptionist(store, tmp_path):
    """On 3002 the consultation and the final record are one call (one linkedid) whose
    records name two callers: the records disagree on who called the line, and none is
    named (the build before named the receptionist, the consultation leg beginning first).
    The CIC's record keeps the call, with the reason."""
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records())])
    record = held_from_the_customer(store, "3002", AT, HARASSER, "2026-03-02T14:02:00Z")
    assert record["call"]["disposition"] == "callers_differ"
    assert "name different callers" in record["reason"]
    assert INNOCENT not in repr(store.status("3002"))


def test_the_receptionists_trace_names_her_caller(store, tmp_path):
    """On 3001 the original and the final record name one caller: one call, the harasser's,
    begun at 14:00 (the final record's dst is the number the harasser dialled)."""
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records())])
    got = store.trace(RECEPTIONIST, at=AT)
    (record,) = store.trace_records(RECEPTIONIST, analyst="cic")
    assert (got.outcome.value, record["call"]["calling"], record["call"]["start"]) == \
        ("success", "+17205550199", "2026-03-02T14:00:00Z")


def test_without_linkedids_the_transferred_caller_is_named(store, tmp_path):
    """cdr_csv's 18 columns: each record is its party A's uniqueid, so the consultation and
    the final record are two calls to 3002, and the newest, begun at the transfer, names
    the harasser."""
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records(18))])
    got = store.trace("3002", at=AT)
    (record,) = store.trace_records("3002", analyst="cic")
    assert (got.outcome.value, record["call"]["calling"], record["call"]["start"]) == \
        ("success", "+17205550199", "2026-03-02T14:03:00Z")


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("files", [1, 3], ids=["one-file", "a-file-each"])
def test_any_order_of_the_records_fails_closed_alike(tmp_path, order, files):
    """The records in any order, in one file or a file each (each file a batch merged into
    what the ones before stored): 3002's call is neither caller's."""
    older, *transfer = records()
    ordered = [transfer[i] for i in order]
    batches = [ordered] if files == 1 else [[r] for r in ordered]
    with cdrtrace.open(tmp_path / "s", create=True) as store:
        cdrtrace.ingest(store, [cdr_file(tmp_path, older, name="older.csv")])
        for n, batch in enumerate(batches):
            cdrtrace.ingest(store, [cdr_file(tmp_path, *batch, name=f"part-{n}.csv")])
        calls = store.last_calls("3002", analyst="cic")
        assert [(c["start"], c["disposition"]) for c in calls] == [
            ("2026-03-02T14:02:00Z", "callers_differ"), ("2026-03-02T13:30:00Z", "answered")]
        assert store.trace("3002", at=AT).outcome.value == "untraceable"


def test_a_trace_made_before_the_final_record_came_in_is_contested_by_it(tmp_path):
    """A file read late: 3002 is traced at 14:11 with the consultation call alone in (its
    records name the receptionist: the trace names her), then the final record comes in,
    a leg of the call named from another caller. A trace made now would name nobody, so
    the success is noted (later_call) and counts toward nothing; a trace made again is
    untraceable. A record of the call named from its own caller contests nothing."""
    older, original, consult, final = records()
    with cdrtrace.open(tmp_path / "s", create=True) as store:
        cdrtrace.ingest(store, [cdr_file(tmp_path, older, original, consult, name="a.csv")])
        got = store.trace("3002", at=AT)
        (record,) = store.trace_records("3002", analyst="cic")
        assert (got.outcome.value, record["call"]["calling"]) == ("success", RECEPTIONIST)
        again = cdr(21, src=RECEPTIONIST, clid='"Reception" <3001>', dst="3002",
                    channel="Local/3002@from-internal-xfer-00000009;2",
                    dstchannel="PJSIP/3002-00000009", start="2026-03-02 14:02:30",
                    answer="2026-03-02 14:02:34", end="2026-03-02 14:02:50",
                    uniqueid="1772460150.9", linkedid=L1)
        cdrtrace.ingest(store, [cdr_file(tmp_path, again, name="b.csv")])
        (record,) = store.trace_records("3002", analyst="cic")
        assert "later_call" not in record
        cdrtrace.ingest(store, [cdr_file(tmp_path, final, name="c.csv")])
        (record,) = store.trace_records("3002", analyst="cic")
        assert record["later_call"]["disposition"] in ("answered", "callers_differ")
        assert not store.status("3002").progress
        assert store.trace("3002", at=AT).outcome.value == "untraceable"


def test_the_index_call_named_now_neither_callers_contradicts_the_trace(tmp_path):
    """The check of a trace made while the final record's commit was written (not queued
    by that commit) reads the line's index: the call named is there once, now
    callers_differ, under the caller named (its earliest leg's). It contradicts the trace;
    the same call answered by one caller does not."""
    from cdrtrace.evidence import later
    from cdrtrace.store import index

    older, original, consult, final = records()
    with cdrtrace.open(tmp_path / "s", create=True) as store:
        cdrtrace.ingest(store, [cdr_file(tmp_path, older, original, consult, name="a.csv")])
        store.trace("3002", at=AT)
        (record,) = store.trace_records("3002", analyst="cic")
        key = index.line_key(store.line("3002"))
        tracer = store._tracer
        with store.envs.read() as txn:
            (named,) = [e for e in tracer.lookup.last_calls(key, txn)
                        if f"{int(e['call_id']):016x}" == record["call"]["call_id"]]
            assert not later.contradicts(tracer, txn, key, record, named)
        cdrtrace.ingest(store, [cdr_file(tmp_path, final, name="c.csv")])
        with store.envs.read() as txn:
            (named,) = [e for e in tracer.lookup.last_calls(key, txn)
                        if f"{int(e['call_id']):016x}" == record["call"]["call_id"]]
            assert int(named["flags"]) >> 4 == 15 and \
                tracer.lookup.caller_text(txn, int(named["calling"])) == RECEPTIONIST
            assert later.contradicts(tracer, txn, key, record, named)


def test_the_transferring_phones_own_record_names_nobody_else(store, tmp_path):
    """With the receptionist's own channel's record too (under the caller's linkedid, its
    caller her own number, 3001): on her line it is her phone's, not a call from another
    caller, so her line's call still names the caller; on 3002 the call's records still
    name two callers."""
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records(), transferring_phone())])
    got = store.trace(RECEPTIONIST, at=AT)
    (record,) = store.trace_records(RECEPTIONIST, analyst="cic")
    assert (got.outcome.value, record["call"]["calling"], record["call"]["start"]) == \
        ("success", "+17205550199", "2026-03-02T14:00:00Z")
    record = held_from_the_customer(store, "3002", AT, HARASSER, "2026-03-02T14:02:00Z")
    assert record["call"]["disposition"] == "callers_differ"


def test_the_transferring_phones_record_read_later_contests_nothing(tmp_path):
    """The receptionist's trace, made with the caller's records in, names the caller; her
    own channel's record of the transfer, read later (a leg of that call whose caller is
    her line), contests nothing."""
    older, original, consult, final = records()
    with cdrtrace.open(tmp_path / "s", create=True) as store:
        cdrtrace.ingest(store, [cdr_file(tmp_path, older, original, consult, final, name="a.csv")])
        assert store.trace(RECEPTIONIST, at=AT).outcome.value == "success"
        cdrtrace.ingest(store, [cdr_file(tmp_path, transferring_phone(), name="b.csv")])
        (record,) = store.trace_records(RECEPTIONIST, analyst="cic")
        assert "later_call" not in record
        assert [p.traced_calls for p in store.status(RECEPTIONIST).progress] == [1]


def test_a_call_whose_caller_is_the_line_itself_names_no_one(store, tmp_path):
    """cdr_csv's 18 columns: the receptionist's channel's record is a call of its own
    (its uniqueid), begun at 14:02, from her own number. Her trace at 14:11 resolves to it:
    it names the line itself, no one else, so it is untraceable, with the reason, and the
    customer is told no call time (the build before: a success naming her own number)."""
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records(18), transferring_phone(18))])
    record = held_from_the_customer(store, RECEPTIONIST, AT, HARASSER, "2026-03-02T14:02:00Z")
    assert record["call"]["caller_is_line"] is True
    assert "names the line itself as its caller" in record["reason"]
