"""A call transferred to a line (docs/trace-rules.md, "A transferred call").

Cisco UCM ends a call's record when the call is transferred and writes three: the
original call, the consultation call the transferring phone made to the target, and the
final call between the two remaining parties, whose joinOnBehalfOf is 10 (Transfer). Its
CDR guide's transfer examples set the original and the consultation calls' causes to
393216 "call split" (126 before release 5) and their termination onBehalfOf to 10; the
final call's caller is the party transferred. The guide does not say which start the final
record carries (the original call's leg persists in it) nor which global call id.

Here a harasser (HARASSER, from the network) calls the receptionist 3001 at 14:00; she
consults 3002 at 14:02 and completes the transfer at 14:03; 3002 talks to the harasser
until 14:10, hangs up and dials *57 at 14:11. 3002's earlier call, 13:30, is an innocent
caller's. Read by start alone, 3002's newest record is the consultation call: its caller
is the receptionist, a colleague who only passed the call on. Naming her is the worst
failure; such a trace names the transferred caller where the records show it, and fails
closed where they do not.
"""
from __future__ import annotations

import itertools

import pytest
from test_hunt_groups import INNOCENT, T14, call, cucm_file, ingest

import cdrtrace
from cdrtrace.parsing.formats import Disposition
from cdrtrace.parsing.parsers import get_format, make_parser, read_header
from cdrtrace.parsing.reference import CdrParser as Reference
from conftest import held_from_the_customer

HARASSER, RECEPTIONIST = "7205550199", "3001"
AT = "2026-03-02T14:11:00Z"
SPLIT = "393216"


def split(row: dict, end: int, cause: str = SPLIT) -> dict:
    """row, ended at end by a transfer: causes 'call split', termination for Transfer."""
    row.update(origCause_value=cause, destCause_value=cause, dateTimeDisconnect=str(end),
               origCallTerminationOnBehalfOf="10", destCallTerminationOnBehalfOf="10")
    return row


def transfer(final_start: int, final_id: int, *, consult_answered: bool = True,
             cause: str = SPLIT, legs: bool = False) -> tuple[dict, ...]:
    """The innocent 13:30 call to 3002, then the three records of the transfer; with legs,
    their leg identifiers as the guide's tables show them (the harasser's leg 101 and
    3002's leg 104 go on in the final record), else none (0)."""
    older = call(1, T14 - 1800, INNOCENT, "3002")
    original = split(call(10, T14, HARASSER, RECEPTIONIST), T14 + 180, cause)
    consult = split(call(11, T14 + 120, RECEPTIONIST, "3002", answered=consult_answered),
                    T14 + 120 if not consult_answered else T14 + 180, cause)
    final = call(final_id, final_start, HARASSER, "3002")
    final.update(lastRedirectDn=RECEPTIONIST, joinOnBehalfOf="10",
                 lastRedirectRedirectOnBehalfOf="10", dateTimeConnect=str(T14 + 180),
                 dateTimeDisconnect=str(T14 + 600))
    if legs:
        for row, (o, d) in ((original, (101, 102)), (consult, (103, 104)), (final, (101, 104))):
            row.update(origLegCallIdentifier=str(o), destLegIdentifier=str(d))
    return older, original, consult, final


def named(store, line: str) -> tuple[str, str, str]:
    """(outcome, the caller the CIC's record names, the call's start) of a trace at AT."""
    got = store.trace(line, at=AT)
    (record,) = store.trace_records(line, analyst="cic")
    return got.outcome.value, record["call"]["calling"], record["call"]["start"]


@pytest.fixture
def store(store_either):
    return store_either     # native and reference tracers (conftest)


@pytest.mark.parametrize("cause", [SPLIT, "126"], ids=["release-5-on", "release-4"])
def test_a_consultation_call_newest_by_start_names_nobody(store, tmp_path, cause):
    """The final record dated at the original call's origination (14:00), under its id,
    and no leg identifiers to tie it to the consultation call: 3002's newest record by
    start is the 14:02 consultation call from the receptionist. The line was joined to
    another caller when it ended, and its record does not say whom: untraceable, never
    the receptionist (nor the innocent 13:30 caller)."""
    ingest(store, tmp_path, *transfer(T14, 10, cause=cause))
    record = held_from_the_customer(store, "3002", AT, RECEPTIONIST, "2026-03-02T14:02:00Z")
    assert record["call"]["disposition"] == "transferred"
    assert "split off by a transfer" in record["reason"]
    assert INNOCENT not in repr(store.status("3002"))


@pytest.mark.parametrize("final_start,final_id,start", [
    (T14, 10, "2026-03-02T14:00:00Z"), (T14 + 180, 10, "2026-03-02T14:03:00Z"),
    (T14, 11, "2026-03-02T14:00:00Z"), (T14 + 180, 11, "2026-03-02T14:03:00Z")],
    ids=["original-start-own-id", "transfer-time-own-id", "original-start-consultation-id",
         "transfer-time-consultation-id"])
@pytest.mark.parametrize("consult_answered", [True, False], ids=["consultative", "blind"])
def test_the_leg_the_transfer_kept_makes_the_two_records_one_call(store, tmp_path, final_start,
                                                                    final_id, start,
                                                                    consult_answered):
    """With the leg identifiers the guide's tables show (3002's leg, 104, is the
    consultation call's called leg and the final call's), the consultation and final
    records are one call to 3002, whatever their dates and ids: the final record speaks
    for it and names the harasser (its start the call's: its own, the consultation
    being split off)."""
    ingest(store, tmp_path, *transfer(final_start, final_id, legs=True,
                                      consult_answered=consult_answered))
    assert named(store, "3002") == ("success", "+17205550199", start)
    outcome, caller, _ = named(store, RECEPTIONIST)
    assert (outcome, caller) == ("success", "+17205550199")


def test_a_blind_transfers_consultation_call_names_nobody(store, tmp_path):
    """A transfer without consultation: the consultation call never connected and lasted
    no time. It still rang 3002 (the harasser's call rang there through it)."""
    ingest(store, tmp_path, *transfer(T14, 10, consult_answered=False))
    record = held_from_the_customer(store, "3002", AT, RECEPTIONIST, "2026-03-02T14:02:00Z")
    assert record["call"]["disposition"] == "transferred"


def test_the_transferred_call_dated_at_the_transfer_is_named(store, tmp_path):
    """The final record dated at the transfer (14:03), after the consultation call."""
    ingest(store, tmp_path, *transfer(T14 + 180, 10))
    assert named(store, "3002") == ("success", "+17205550199", "2026-03-02T14:03:00Z")


@pytest.mark.parametrize("final_start", [T14, T14 + 180], ids=["original-start", "transfer-time"])
def test_a_transferred_call_under_the_consultation_calls_id_names_its_caller(store, tmp_path,
                                                                             final_start):
    """The final record under the consultation call's id: the two are one call to 3002,
    and its caller is the harasser's, whichever record began first (by start alone, the
    consultation call, earlier than the final record dated at the transfer, spoke for it:
    the receptionist was named)."""
    ingest(store, tmp_path, *transfer(final_start, 11))
    outcome, caller, _ = named(store, "3002")
    assert (outcome, caller) == ("success", "+17205550199")


@pytest.mark.parametrize("final_id", [10, 11], ids=["original-id", "consultation-id"])
def test_the_transferring_line_names_the_caller_it_passed_on(store, tmp_path, final_id):
    """3001's last incoming call is the harasser's, which she transferred: the final
    record names her as the last redirecting party, and it speaks for the call (under the
    original call's id, one call with the original record, which a transfer split off)."""
    ingest(store, tmp_path, *transfer(T14 + 180, final_id))
    assert named(store, RECEPTIONIST) == ("success", "+17205550199", "2026-03-02T14:03:00Z")


def test_a_split_record_is_read_alike_by_the_native_parser_and_its_reference(tmp_path):
    """Both parsers read a split cause, on either side, as a transferred call that rang
    the line (received), connected or not, and keep its connect time."""
    rows = []
    for i, (orig, dest, connected) in enumerate([(SPLIT, SPLIT, True), ("16", SPLIT, False),
                                                 (SPLIT, "0", False), ("126", "126", True),
                                                 ("16", "16", True)]):
        row = call(20 + i, T14 + 60 * i, HARASSER, "3002", answered=connected)
        row.update(origCause_value=orig, destCause_value=dest)
        rows.append(row)
    data = open(cucm_file(tmp_path, "cdr_split", *rows), "rb").read()
    form = get_format("cucm")
    header, skip = read_header(form, data)
    both = []
    for parser in (make_parser(form, header=header), Reference(form.dialect(header))):
        cols, bad, _ = parser.feed(data[skip:], True)
        assert bad == []
        both.append(cols)
    assert list(both[0]["call_id"]) == list(both[1]["call_id"])
    for cols in both:
        got = [(int(cols["disposition"][i]), bool(cols["received"][i]),
                int(cols["answer_us"][i]) // 10**6) for i in range(1, 6)]
        assert got == [(Disposition.TRANSFERRED, True, T14 + 5),
                       (Disposition.TRANSFERRED, True, 0),
                       (Disposition.TRANSFERRED, True, 0),
                       (Disposition.TRANSFERRED, True, T14 + 180 + 5),
                       (Disposition.ANSWERED, True, T14 + 240 + 5)]


def test_the_leg_a_transfer_kept_is_read_alike_by_the_native_parser_and_its_reference(tmp_path):
    """A record split off by a transfer, or joined to the line by one (joinOnBehalfOf set),
    is a call of its called party's leg (destLegIdentifier), whatever its global call id:
    the consultation call and the final one are one call. A record neither split nor
    joined keeps its global id, and so does one whose leg is not written (0)."""
    consult = split(call(11, T14, RECEPTIONIST, "3002"), T14 + 60)
    final = call(10, T14 - 60, HARASSER, "3002")
    final["joinOnBehalfOf"] = "10"
    plain, unwritten = call(12, T14 + 120, HARASSER, "3002"), split(call(13, T14, INNOCENT, "3002"),
                                                                     T14 + 60)
    for row, leg in ((consult, "104"), (final, "104"), (plain, "104"), (unwritten, "0")):
        row["destLegIdentifier"] = leg
    data = open(cucm_file(tmp_path, "cdr_legs", consult, final, plain, unwritten), "rb").read()
    form = get_format("cucm")
    header, skip = read_header(form, data)
    both = [parser.feed(data[skip:], True)[0] for parser in (make_parser(form, header=header),
                                                             Reference(form.dialect(header)))]
    assert list(both[0]["call_id"]) == list(both[1]["call_id"])
    ids = [int(i) for i in both[0]["call_id"][1:]]
    assert ids[0] == ids[1] and len(set(ids)) == 3


def test_a_hunt_call_split_off_by_a_transfer_still_holds_the_members_lines(store, tmp_path):
    """A call through hunt pilot 2000 (its record naming the pilot alone) that a member
    answered and then transferred ends with the split cause: it may still have rung
    3002, whose older call is the innocent one. 3002's trace names nobody."""
    hunt = split(call(5, T14, HARASSER, "2000", "2000", hunt_pilot="2000", pattern="7"),
                 T14 + 180)
    ingest(store, tmp_path, call(1, T14 - 1800, INNOCENT, "3002"), hunt)
    record = held_from_the_customer(store, "3002", AT, INNOCENT, "2026-03-02T13:30:00Z")
    assert record["call"]["hunt_unnamed"]["pilot"] == "2000"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_which_leg_speaks_for_a_call_does_not_turn_on_the_order_they_came_in(tmp_path, order):
    """Three records of one call id to 3005, read one file at a time in every order: one a
    transfer split off (from 7205550111, 14:00), two not (from 7205550122 at 14:05, and
    from 7205550111 at 14:03). The legs not split off speak, the earliest of them (the
    14:03 call), whichever came first (a rule that weighed the callers too named
    7205550122 in some orders); they name two callers, so the call is neither's
    (callers_differ), in every order. Without the 14:05 leg, the 14:03 call names its
    caller."""
    rows = [split(call(30, T14, "7205550111", "3005"), T14 + 60),
            call(30, T14 + 300, "7205550122", "3005"), call(30, T14 + 180, "7205550111", "3005")]
    for legs in (order, [k for k in order if k != 1]):
        s = cdrtrace.open(tmp_path / f"store-{len(legs)}", create=True)
        try:
            for k in legs:
                cdrtrace.ingest(s, [cucm_file(tmp_path, f"cdr_leg{k}", rows[k])], fmt="cucm")
            if len(legs) == 3:
                record = held_from_the_customer(s, "3005", AT, "7205550122", "2026-03-02T14:03:00Z")
                assert record["call"]["disposition"] == "callers_differ"
            else:
                assert named(s, "3005") == ("success", "+17205550111", "2026-03-02T14:03:00Z")
        finally:
            s.close()
