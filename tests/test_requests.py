"""After the trace: the customer requests action once an origin reached the threshold
(or the CIC waived it); the CIC turns the request into a case or closes it; the
customer sees where it stands, and the carrier's follow-up contact, never the caller."""
from __future__ import annotations

import json
import re

import pytest

import cdrtrace
from cdrtrace import cli, testing
from conftest import cdr

LINE = "3035550110"
HARASSER, OTHER = "7205550666", "7205550777"


def calls(*specs) -> bytes:
    return b"".join(
        cdr(src=src, dst=LINE, start=f"2026-03-02 1{h}:00:00", end=f"2026-03-02 1{h}:00:20",
            answer="", disposition="NO ANSWER", uniqueid=f"u{h}") + b"\n" for h, src in specs)


@pytest.fixture
def traced(store, ingest_records):
    """Three traced calls from HARASSER, one from OTHER."""
    ingest_records(calls((0, HARASSER), (1, OTHER), (2, HARASSER), (3, HARASSER)))
    for hour in (0, 1, 2, 3):
        store.trace(LINE, at=f"2026-03-02T1{hour}:00:30Z")
    return store


def test_request_action_from_the_threshold_to_a_case(traced):
    store = traced
    status = store.status(LINE)
    assert [(p.label, p.traced_calls, p.eligible_for_action) for p in status.progress] == [
        ("Caller A", 3, True), ("Caller B", 1, False)]
    with pytest.raises(cdrtrace.CaseError, match="Caller B has 1 of 3 traced calls"):
        store.request_action(LINE, "Caller B", by="care-desk-7")
    refused = testing.audit_entries(store)[-1]                       # refusals are audited
    assert (refused["actor"], refused["action"]) == ("care-desk-7", "action_request_refused")
    with pytest.raises(cdrtrace.CaseError, match="has no traced origin 'Caller Z'"):
        store.request_action(LINE, "Caller Z")
    request = store.request_action(LINE, "caller a", by="care-desk-7")
    assert request["request_id"] == "R000001" and request["state"] == "queued"
    assert HARASSER not in json.dumps(request)
    with pytest.raises(cdrtrace.CaseError, match="already has a request waiting"):
        store.request_action(LINE, "Caller A")
    shown = store.status(LINE).progress[0].request
    assert shown["state"] == "queued" and HARASSER not in json.dumps(store.status(LINE).to_dict())
    queue = store.request_queue(analyst="ann")
    assert [(r["request_id"], r["origin"], r["label"]) for r in queue] == [
        ("R000001", "+1" + HARASSER, "Caller A")]
    case = store.open_case(LINE, "Caller A", agency="Denver PD", officer="Det. Alvarez",
                           case_number="26-1", analyst="ann", request_id="R000001")
    assert store.status(LINE).progress[0].request == {
        "request_id": "R000001", "state": "case_opened",
        "requested_at": shown["requested_at"], "case_id": case["case_id"], "reason": None}
    assert store.request_queue(analyst="ann") == []
    actions = [e["action"] for e in testing.audit_entries(store)]
    assert "action_requested" in actions and "request_settled" in actions
    assert actions.count("read_request_queue") == 2


def test_a_case_settles_only_the_request_of_its_own_line_and_origin(traced, ingest_records):
    """A case opened for a request answers that request: a request the case does not
    match (another origin, another line, none such, already settled) is refused with
    nothing done (no case opened, the request still waiting), so a customer is never
    told that action was taken against their caller when the case names another."""
    store = traced
    other_line = "3035550199"
    ingest_records(b"".join(
        cdr(src=HARASSER, dst=other_line, start=f"2026-03-02 1{h}:00:00",
            end=f"2026-03-02 1{h}:00:20", answer="", disposition="NO ANSWER",
            uniqueid=f"o{h}") + b"\n" for h in (0, 2, 3)))
    for hour in (0, 2, 3):
        store.trace(other_line, at=f"2026-03-02T1{hour}:00:30Z")
    store.request_action(LINE, "Caller A")                            # R000001
    store.request_action(other_line, "Caller A")                      # R000002: same caller
    details = {"agency": "PD", "officer": "O", "case_number": "26-7", "analyst": "ann"}
    for line, origin, request, why in (
            (LINE, "Caller B", "R000001", "R000001 is for Caller A"),        # another origin
            (LINE, "+1" + OTHER, "R000001", "R000001 is for Caller A"),      # ... by number
            (LINE, "Caller A", "R000002", "R000002 is for line +13035550199"),  # another line
            (LINE, "Caller A", "R000009", "no request R000009")):
        with pytest.raises(cdrtrace.CaseError, match=re.escape(why)):
            store.open_case(line, origin, request_id=request, waive_reason="threats", **details)
    with pytest.raises(cdrtrace.NotFoundError):
        store.open_case(LINE, "Caller A", request_id="R000009", **details)
    assert store.cases(analyst="ann") == []                            # nothing opened
    assert [r["state"] for r in store.request_queue(analyst="ann")] == ["queued", "queued"]
    case = store.open_case(LINE, "+1" + HARASSER, request_id="R000001", **details)  # by number
    assert store.status(LINE).progress[0].request["case_id"] == case["case_id"]
    with pytest.raises(cdrtrace.CaseError, match="R000001 is already case_opened"):
        store.open_case(LINE, "Caller A", request_id="R000001", **details)
    assert [c["case_id"] for c in store.cases(analyst="ann")] == [case["case_id"]]
    with pytest.raises(cdrtrace.NotFoundError, match="no request R000009"):
        store.close_request("R000009", "duplicate", analyst="ann")


def test_a_case_without_a_waiver_leaves_the_threshold_as_it_was(traced):
    """Only a case that waives the threshold (threatening calls), saying why, makes an
    origin under it eligible; a case opened without a waiver, or with a blank reason,
    does not."""
    store = traced
    store.open_case(LINE, "Caller B", agency="PD", officer="O", case_number="1", analyst="ann")
    store.open_case(LINE, "Caller B", agency="PD", officer="O", case_number="2", analyst="ann",
                    waive_reason="  ")
    caller_b = store.status(LINE).progress[1]
    assert (caller_b.traced_calls, caller_b.waived, caller_b.eligible_for_action) == (
        1, False, False)
    with pytest.raises(cdrtrace.CaseError, match="Caller B has 1 of 3 traced calls"):
        store.request_action(LINE, "Caller B")


def test_a_waiver_allows_a_request_before_the_threshold_and_a_request_can_be_closed(traced):
    store = traced
    store.open_case(LINE, "Caller B", agency="PD", officer="O", case_number="1", analyst="ann",
                    waive_reason="threatened violence")
    assert store.request_action(LINE, "Caller B")["state"] == "queued"
    with pytest.raises(cdrtrace.CaseError, match="settle a request with a case or with a reason"):
        store.close_request("R000001", "  ", analyst="ann")
    closed = store.close_request("R000001", "the calls stopped; no report filed", analyst="ann")
    assert closed["state"] == "closed"
    assert store.status(LINE).progress[1].request["reason"] == "the calls stopped; no report filed"
    with pytest.raises(cdrtrace.CaseError, match="already closed"):
        store.close_request("R000001", "again", analyst="ann")
    with pytest.raises(cdrtrace.AccessError):
        store.request_queue(analyst="")
    assert testing.audit_entries(store)[-1]["action"] == "read_request_queue_refused"


def test_the_follow_up_contact_shows_once_an_origin_is_eligible(traced):
    store = traced
    assert store.status(LINE).follow_up is None                     # no [carrier] yet
    path = store.path
    store.close()
    (path / "cdrtrace.toml").write_text(
        '[carrier]\nname = "Front Range Telephone"\nfollow_up_phone = "1-800-555-0199"\n'
        'follow_up_hours = "Mon-Fri 8am-5pm MT"\nlaw_enforcement_phone = "1-800-555-0142"\n')
    with cdrtrace.open(path) as reopened:
        follow = reopened.status(LINE).follow_up
        assert follow == {"name": "Front Range Telephone", "follow_up_phone": "1-800-555-0199",
                          "follow_up_hours": "Mon-Fri 8am-5pm MT"}
    assert cli.main(["status", LINE, "--db", str(path)]) == 0


def test_a_customers_progress_follows_the_pseudonyms_and_the_threshold(store, tmp_path):
    """Each origin's progress comes in the order its pseudonym was given (Caller A first,
    though its number sorts after Caller B's), with its first and last traced calls; the
    carrier's follow-up contact shows only once an origin reached the threshold, however
    the store's [carrier] is set."""
    path = store.path
    store.close()
    (path / "cdrtrace.toml").write_text(
        '[carrier]\nname = "Front Range Telephone"\nfollow_up_phone = "1-800-555-0199"\n')
    with cdrtrace.open(path) as reopened:
        first, later = OTHER, HARASSER                  # Caller A's number is the larger
        assert int(first) > int(later)
        (tmp_path / "a.csv").write_bytes(calls((0, first), (1, later), (2, first)))
        cdrtrace.ingest(reopened, [str(tmp_path / "a.csv")])
        for hour in (0, 1, 2):
            assert reopened.trace(LINE, at=f"2026-03-02T1{hour}:00:30Z").successful
        status = reopened.status(LINE)
        assert [(p.label, p.traced_calls, p.first_call, p.last_call)
                for p in status.progress] == [
            ("Caller A", 2, "2026-03-02T10:00:00Z", "2026-03-02T12:00:00Z"),
            ("Caller B", 1, "2026-03-02T11:00:00Z", "2026-03-02T11:00:00Z")]
        assert status.follow_up is None and not status.eligible_for_action
        (tmp_path / "b.csv").write_bytes(calls((3, first)))
        cdrtrace.ingest(reopened, [str(tmp_path / "b.csv")])
        assert reopened.trace(LINE, at="2026-03-02T13:00:30Z").successful
        status = reopened.status(LINE)
        assert status.progress[0].traced_calls == 3 and status.eligible_for_action
        assert status.follow_up == {"name": "Front Range Telephone",
                                    "follow_up_phone": "1-800-555-0199"}


def test_request_action_from_the_command_line(traced, capsys):
    db = str(traced.path)
    traced.close()
    assert cli.main(["request-action", LINE, "--origin", "Caller B", "--db", db]) == 2
    assert "Caller B has 1 of 3 traced calls" in capsys.readouterr().err
    assert cli.main(["request-action", LINE, "--origin", "Caller A", "--db", db, "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["request_id"] == "R000001" and HARASSER not in out
    assert cli.main(["case", "queue", "--analyst", "ann", "--db", db]) == 0
    assert HARASSER in capsys.readouterr().out                      # the CIC sees the number
    assert cli.main(["case", "close-request", "R000001", "--reason", "duplicate",
                     "--analyst", "ann", "--db", db]) == 0
    assert cli.main(["status", LINE, "--db", db]) == 0
    assert "request R000001 closed (duplicate)" in capsys.readouterr().out


def test_the_case_view_gives_the_law_enforcement_contact(traced):
    store = traced
    case = store.open_case(LINE, "Caller A", agency="PD", officer="O", case_number="1",
                           analyst="ann")
    assert "law_enforcement_support" not in store.case(case["case_id"], analyst="ann")
    path = store.path
    store.close()
    (path / "cdrtrace.toml").write_text('[carrier]\nlaw_enforcement_phone = "1-800-555-0142"\n')
    with cdrtrace.open(path) as reopened:
        shown = reopened.case(case["case_id"], analyst="ann")
        assert shown["law_enforcement_support"] == "1-800-555-0142"


def test_the_carrier_words_its_own_announcements(traced):
    store = traced
    path = store.path
    store.close()
    (path / "cdrtrace.toml").write_text(
        '[carrier]\nname = "Front Range Telephone"\n[carrier.announcements]\n'
        '"COT-ALREADY-TRACED" = "That call was already traced. Thank you."\n')
    with cdrtrace.open(path) as reopened:
        result = reopened.trace(LINE, at="2026-03-02T13:00:30Z")
        assert result.announcement_id == "COT-ALREADY-TRACED"
        assert result.announcement == "That call was already traced. Thank you."
        assert json.loads(result.to_json())["announcement"] == result.announcement
    (path / "cdrtrace.toml").write_text('[carrier.announcements]\n"COT-LOUD" = "x"\n')
    with pytest.raises(cdrtrace.ConfigError, match="unknown id"):
        cdrtrace.open(path)


def test_a_case_or_request_is_found_by_its_id_as_written(traced):
    """Ids are read by their key: C000001 and R000001 as the store writes them; the same
    number written otherwise names nothing."""
    store = traced
    store.request_action(LINE, "Caller A")
    case = store.open_case(LINE, "Caller A", agency="PD", officer="O", case_number="1",
                           analyst="ann")
    assert case["case_id"] == "C000001" and store.case("C000001", analyst="ann")["case_id"] == "C000001"
    for odd in ("C1", "c000001", "C0000001", "C000001 ", "C00000١", "R000001", ""):
        with pytest.raises(cdrtrace.UnknownCaseError):
            store.case(odd, analyst="ann")
    for odd in ("R1", "r000001", "R0000001", "C000001", "R-00001"):
        with pytest.raises(cdrtrace.UnknownRequestError):
            store.close_request(odd, "duplicate", analyst="ann")
    assert store.close_request("R000001", "duplicate", analyst="ann")["state"] == "closed"


def test_status_reads_the_lines_own_cases_and_requests_not_the_stores(traced, monkeypatch):
    """A status (and a request for action, which reads it) finds the line's waivers and
    requests through a per-line index: with thousands of cases on other lines it took
    30 ms, parsing every one. A store made before the index has it rebuilt at open."""
    store = traced
    store.open_case(LINE, "Caller B", agency="PD", officer="O", case_number="1", analyst="ann",
                    waive_reason="threats")
    store.request_action(LINE, "Caller A")
    store.open_case("3035550199", OTHER, agency="PD", officer="O", case_number="2",
                    analyst="ann", waive_reason="threats")           # another line's
    expected = store.status(LINE).to_dict()
    assert [p["request"]["request_id"] if p["request"] else None for p in expected["progress"]] \
        == ["R000001", None]
    assert [p["eligible_for_action"] for p in expected["progress"]] == [True, True]   # B waived
    from cdrtrace.evidence import cases, requests

    def whole(*args, **kwargs):
        raise AssertionError("every case or request of the store was read")
    with monkeypatch.context() as m:
        m.setattr(cases.Cases, "all", whole)
        m.setattr(requests.Requests, "all", whole)
        assert store.status(LINE).to_dict() == expected
        with pytest.raises(cdrtrace.CaseError, match="already has a request waiting"):
            store.request_action(LINE, "Caller A")
    path = store.path
    store.envs.ewrite(lambda txn: txn.drop(store.envs.db["case_lines"], delete=False))
    store.close()
    with cdrtrace.open(path) as reopened:                              # rebuilt at open
        monkeypatch.setattr(cases.Cases, "all", whole)
        monkeypatch.setattr(requests.Requests, "all", whole)
        assert reopened.status(LINE).to_dict() == expected
