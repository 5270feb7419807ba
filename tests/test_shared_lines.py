"""A line a switch numbers itself (an extension, other digits, a SIP user) is that switch's
own: two PBXs may each have an extension 2001, and their calls share one index line. Once
two feeds have indexed such lines, a *57 from one of them cannot tell whose extension
dialled it, and would name the other switch's call. It is untraceable unless the trace
names its feed, and is then resolved among that feed's calls alone (docs/trace-rules.md,
"A line a switch numbers itself"). An E.164 number names one line the world over."""
from __future__ import annotations

import json
import time

import pytest

import cdrtrace
from cdrtrace import cli
from cdrtrace.config import Feed
from cdrtrace.errors import TraceError
from cdrtrace.parsing.formats import CUCM_RELEASES
from cdrtrace.parsing.parsers import get_format
from cdrtrace.store import lookup
from conftest import cdr, cdr_file

AT = "2026-03-02T15:00:00Z"
ASTERISK = get_format("asterisk")


def call(src: str, dst: str, clock: str, uniqueid: str) -> bytes:
    """An answered Asterisk call on 2026-03-02 at clock (HH:MM), a minute long."""
    return cdr(src=src, dst=dst, start=f"2026-03-02 {clock}:00", answer=f"2026-03-02 {clock}:05",
               end=f"2026-03-02 {clock}:59", uniqueid=uniqueid)


def ingest(store, tmp_path, feed: str, *records: bytes, fmt=ASTERISK) -> None:
    path = cdr_file(tmp_path, *records, name=f"{feed}-{len(list(tmp_path.iterdir()))}.csv")
    cdrtrace.ingest(store, [path], feed=Feed(feed, fmt))


def test_an_extension_two_switches_may_have_names_no_caller(store, tmp_path):
    """East's 2001 was called at 14:00; west's 2001 was never called, and its subscriber,
    harassed through a line west leaves unlogged or not at all, dials *57. Named by its
    extension alone, the trace would name east's caller, an innocent person."""
    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    assert store.trace("2001", at="2026-03-02T14:30:00Z").outcome.value == "success"   # one switch
    ingest(store, tmp_path, "west", call("3035550177", "3001", "14:10", "w1"))
    got = store.trace("2001", at=AT)
    assert (got.outcome.value, got.call_time) == ("untraceable", None)
    assert "3035550100" not in repr(got) + repr(store.status("2001", "east"))
    record = store.trace_records("2001", analyst="cic")[-1]
    assert record["call"]["calling"] == "+13035550100"      # the CIC sees what was recorded
    assert record["call"]["line_shared"] == ["east", "west"]
    assert "2 feeds (east, west)" in record["reason"]
    assert "names its feed" in record["reason"]
    # the other switch's own extension is no better off
    assert store.trace("3001", at=AT).outcome.value == "untraceable"


def test_a_trace_that_names_its_feed_is_resolved_among_its_calls(store, tmp_path):
    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    ingest(store, tmp_path, "west", call("3035550177", "2001", "14:20", "w1"))
    east = store.trace("2001", at=AT, feed="east")
    assert (east.outcome.value, east.call_time) == ("success", "2026-03-02T14:00:00Z")
    record = store.trace_records("2001", analyst="cic")[-1]
    assert record["call"]["calling"] == "+13035550100"      # not west's newer call
    assert record["feed_named"] == store.catalog.known_feed_id("east")
    west = store.trace("2001", at=AT, feed="west")
    assert (west.outcome.value, west.call_time) == ("success", "2026-03-02T14:20:00Z")
    assert store.trace_records("2001", analyst="cic")[-1]["call"]["calling"] == "+13035550177"
    # west's call is the line's newest, yet a trace of east's 2001 named after it is
    # already traced for east's call alone
    assert store.trace("2001", at=AT, feed="east").outcome.value == "already_traced"


def test_a_feed_that_never_called_the_extension_has_no_call(store, tmp_path):
    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    ingest(store, tmp_path, "west", call("3035550177", "3001", "14:10", "w1"))
    got = store.trace("2001", at=AT, feed="west")
    assert (got.outcome.value, got.call_time) == ("no_call", None)


def test_an_e164_line_is_traced_among_every_feeds_calls(store, tmp_path):
    """A number the world over: a call to it through either switch rang it."""
    ingest(store, tmp_path, "east", call("7205550100", "3035550110", "14:00", "e1"),
           call("3035550100", "2001", "14:01", "e2"))
    ingest(store, tmp_path, "west", call("7205550177", "3035550110", "14:30", "w1"),
           call("3035550177", "2001", "14:31", "w2"))
    got = store.trace("3035550110", at=AT)
    assert (got.outcome.value, got.call_time) == ("success", "2026-03-02T14:30:00Z")
    named = store.trace("+13035550110", at="2026-03-02T15:10:00Z", feed="east")
    assert (named.outcome.value, named.call_time) == ("already_traced", "2026-03-02T14:30:00Z")


def test_a_feed_of_e164_lines_alone_shares_no_extension(store, tmp_path, capsys):
    # the PBX's file, committed a call at a time: a call to a DID, then one to 2001
    path = cdr_file(tmp_path, call("7205550100", "3035550111", "13:00", "p0"),
                    call("3035550100", "2001", "14:00", "p1"), name="pbx.csv")
    cdrtrace.ingest(store, [path], feed=Feed("pbx", ASTERISK), chunk_bytes=64, batch_pairs=1)
    ingest(store, tmp_path, "trunk", call("7205550177", "3035550110", "14:20", "t1"))
    # named, the trunk's feed holds no call to an extension 2001 of its own
    assert store.trace("2001", at=AT, feed="trunk").outcome.value == "no_call"
    assert store.trace("2001", at=AT).outcome.value == "success"
    with store.envs.read() as txn:
        assert lookup.local_feeds(txn, store.envs.db["meta"]) == [
            store.catalog.known_feed_id("pbx")]
    assert {f["feed"]: f["local_lines"] for f in store.stats()["feeds"]} == {
        "pbx": True, "trunk": False}
    store.close()
    assert cli.main(["--db", str(store.path), "stats"]) == 0
    assert "EXTENSIONS SHARED" not in capsys.readouterr().out


def test_a_named_feeds_calls_pushed_out_by_anothers_are_refused(store, tmp_path):
    """The index keeps a line's newest calls (4): west's four pushed east's out."""
    ingest(store, tmp_path, "east", call("3035550100", "2001", "13:00", "e1"))
    ingest(store, tmp_path, "west", *(call(f"30355501{i}0", "2001", f"14:{i}0", f"w{i}")
                                      for i in range(4)))
    with pytest.raises(TraceError, match="none before the activation is feed .*older calls "
                                         "are no longer held"):
        store.trace("2001", at=AT, feed="east")
    got = store.trace("2001", at=AT, feed="west")
    assert (got.outcome.value, got.call_time) == ("success", "2026-03-02T14:30:00Z")


def test_a_feed_no_call_came_from_is_refused(store, tmp_path):
    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    with pytest.raises(TraceError, match="no feed named 'esat'"):
        store.trace("2001", at=AT, feed="esat")
    assert store.trace_records("2001", analyst="cic") == []     # nothing written


def test_a_pending_trace_that_named_its_feed_resolves_among_its_calls(store, tmp_path):
    from cdrtrace import testing

    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    ingest(store, tmp_path, "west", call("3035550177", "2001", "14:20", "w1"))
    testing.pretend_live_feed(store, store.catalog.known_feed_id("west"))   # behind the activation
    assert store.trace("2001", feed="east").outcome.value == "pending"
    testing.pretend_live_feed(store, store.catalog.known_feed_id("west"),
                              idle_seen_us=time.time_ns() // 1000)   # caught up
    (resolved,) = store.resolve_pending()
    assert (resolved.outcome.value, resolved.call_time) == ("success", "2026-03-02T14:00:00Z")


def _cucm(call_id: str, caller: str, start: int, connect: int, *, called: str = "2001",
          comment: str = "") -> dict:
    row = dict.fromkeys(CUCM_RELEASES[129], "0")
    row.update(huntPilotDN="", globalCallID_callManagerId="1", globalCallID_callId=call_id,
               callingPartyNumber=caller, originalCalledPartyNumber=called,
               finalCalledPartyNumber=called, dateTimeOrigination=str(start),
               dateTimeConnect=str(connect), dateTimeDisconnect=str(start + 100),
               origCause_value="16", destCause_value="16" if connect else "0",
               lastRedirectDn="", comment=comment)
    return row


def test_a_malicious_call_id_the_switch_recorded_names_its_own_feeds_call(store, tmp_path):
    """CUCM's MCID on its 2001 names the call it flagged, not the Asterisk PBX's newer call
    to its own 2001: the activation came from CUCM's feed, whose calls it is resolved among."""
    ingest(store, tmp_path, "pbx", call("3035550177", "2001", "13:50", "p1"))
    off_hook = _cucm("1", "2002", 1772459000, 0, called="")    # shows the Zero Duration flag
    flagged = _cucm("2", "7205550199", 1772459880, 1772459885, comment="callFlag=MALICIOUS")
    names = CUCM_RELEASES[129]
    path = tmp_path / "cdr_mcid"
    path.write_text("\n".join([",".join(names)] + [",".join(r[n] for n in names)
                                                    for r in (off_hook, flagged)]) + "\n")
    cdrtrace.ingest(store, [str(path)], feed=Feed("cucm", get_format("cucm")))
    (record,) = store.trace_records("2001", analyst="cic")
    assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550199")


# ------------------------------------------------------------------ through the service

@pytest.fixture
def two_pbxs(store, tmp_path):
    """East's 2001 called at 14:00, west's at 14:20: the line's newest call is west's."""
    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    ingest(store, tmp_path, "west", call("3035550177", "2001", "14:20", "w1"))
    return store


@pytest.mark.parametrize("listener", ["native", "python"])
def test_a_switch_names_its_feed_over_http(two_pbxs, monkeypatch, listener):
    import httpx
    from test_service import Service
    from test_service import call as http

    monkeypatch.setenv("CDRTRACE_HTTP", listener)
    running = Service(two_pbxs)
    try:
        token = two_pbxs.tokens.create("east-pbx", "switch")
        plain = http(running, "POST", "/v1/trace", token, json={"line": "2001", "at": AT}).json()
        assert (plain["outcome"], plain["call_time"]) == ("untraceable", None)
        named = http(running, "POST", "/v1/trace", token,
                     json={"line": "2001", "at": AT, "feed": "east"}).json()
        assert (named["outcome"], named["call_time"]) == ("success", "2026-03-02T14:00:00Z")
        assert "3035550100" not in str(named) and "3035550177" not in str(named)
        wrong = http(running, "POST", "/v1/trace", token,
                     json={"line": "2001", "at": AT, "feed": "esat"})
        assert wrong.status_code == 400 and "no feed named 'esat'" in wrong.json()["error"]
        assert http(running, "POST", "/v1/trace", token,
                    json={"line": "2001", "at": AT, "feed": 7}).status_code == 422
        # a body the hot path does not read (UTF-16 JSON) goes the usual way, feed and all
        usual = httpx.post(running.url + "/v1/trace", timeout=10, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            content=json.dumps({"line": "2001", "at": AT, "feed": "east"}).encode("utf-16"))
        assert (usual.status_code, usual.json()["outcome"]) == (200, "already_traced")
        text = http(running, "POST", "/v1/trace/text",
                    data={"line": "2001", "at": AT, "feed": "west", "token": token})
        assert text.text == "COT-SUCCESS"
        (*_, last) = two_pbxs.trace_records("2001", analyst="cic")
        assert last["call"]["calling"] == "+13035550177"
        care = two_pbxs.tokens.create("care-1", "care")
        mine = http(running, "GET", "/v1/status/2001?feed=west", care).json()
        assert [t["call_time"] for t in mine["traces"]] == ["2026-03-02T14:20:00Z"]
        unnamed = http(running, "GET", "/v1/status/2001", care)
        assert unnamed.status_code == 400 and "name the customer's feed" in unnamed.text
        assert http(running, "GET", "/v1/status/2001/log?format=html&feed=west",
                    care).status_code == 200
        assert http(running, "GET", "/v1/status/2001/log?format=html", care).status_code == 400
        # (labels are the line's: west's first caller is "Caller B", after east's)
        asked = http(running, "POST", "/v1/request-action", care, json={
            "line": "2001", "origin": mine["progress"][0]["origin"], "feed": "west"})
        assert asked.status_code == 400 and "1 of 3 traced calls" in asked.text
        analyst = two_pbxs.tokens.create("cic-1", "analyst")
        case = {"line": "2001", "origin": mine["progress"][0]["origin"], "agency": "PD",
                "officer": "Ruiz", "case_number": "W-1", "waive": "threats"}
        unnamed = http(running, "POST", "/v1/cases", analyst, json=case)
        assert unnamed.status_code == 400 and "name the customer's feed" in unnamed.text
        assert http(running, "POST", "/v1/cases", analyst, json=case | {"feed": "west"}).json()[
            "feed"] == two_pbxs.catalog.known_feed_id("west")
        assert http(running, "GET", "/v1/status/2001?feed=west", care).json()["progress"][0][
            "eligible_for_action"]
    finally:
        running.stop()


@pytest.mark.parametrize("listener", ["native", "python"])
def test_a_dialplan_names_its_feed_in_fastagi_second_argument(two_pbxs, monkeypatch, listener):
    from test_service import Service, agi, asterisk

    monkeypatch.setenv("CDRTRACE_AGI", listener)
    running = Service(two_pbxs)
    try:
        commands, _ = agi(running, asterisk("2001", agi_arg_1=AT))
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "untraceable"'
        commands, _ = agi(running, asterisk("2001", agi_arg_1=AT, agi_arg_2="east"))
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "success"'
        assert all("3035550100" not in c for c in commands)
        assert two_pbxs.trace_records("2001", analyst="cic")[-1]["call"]["start"] == \
            "2026-03-02T14:00:00Z"
        # AGI(agi://.../trace,,west): no time (the channel's), a feed
        commands, _ = agi(running, asterisk("2001", agi_arg_1="", agi_arg_2="west"))
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "success"'
        assert two_pbxs.trace_records("2001", analyst="cic")[-1]["call"]["start"] == \
            "2026-03-02T14:20:00Z"
        commands, _ = agi(running, asterisk("2001", agi_arg_1=AT, agi_arg_2="esat"))
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "failure"'
    finally:
        running.stop()


def test_the_cli_names_a_feed(two_pbxs, capsys):
    two_pbxs.close()
    db = str(two_pbxs.path)
    assert cli.main(["--db", db, "trace", "2001", "--at", AT, "--feed", "west", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["outcome"], got["call_time"]) == ("success", "2026-03-02T14:20:00Z")
    assert cli.main(["--db", db, "trace", "2001", "--at", AT]) == 0
    assert "untraceable" in capsys.readouterr().out
    assert cli.main(["--db", db, "status", "2001", "--feed", "west", "--json"]) == 0
    assert [t["call_time"] for t in json.loads(capsys.readouterr().out)["traces"]] == [
        "2026-03-02T14:20:00Z"]
    assert cli.main(["--db", db, "status", "2001"]) != 0
    assert "name the customer's feed" in capsys.readouterr().err
    assert cli.main(["--db", db, "request-action", "2001", "--origin", "Caller A",
                     "--feed", "west"]) != 0
    assert "1 of 3 traced calls" in capsys.readouterr().err
    assert cli.main(["--db", db, "case", "open", "2001", "--origin", "Caller A", "--agency",
                     "PD", "--officer", "Ruiz", "--case-number", "W-1", "--waive", "threats",
                     "--analyst", "cic", "--feed", "west"]) == 0
    assert "threshold waived" in capsys.readouterr().out
    assert cli.main(["--db", db, "request-action", "2001", "--origin", "Caller A",
                     "--feed", "west"]) == 0                       # waived for west
    assert "R000001: your request for action against Caller A is recorded" in capsys.readouterr().out
    for action in ("queue", "list"):           # the CIC reads whose 2001 it is
        assert cli.main(["--db", db, "case", action, "--analyst", "cic"]) == 0
        assert "2001 of feed west  " in capsys.readouterr().out
    assert cli.main(["--db", db, "case", "show", "C000001", "--analyst", "cic"]) == 0
    assert "line 2001 of feed west, origin" in capsys.readouterr().out
    assert cli.main(["--db", db, "stats"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in shown if "EXTENSIONS SHARED WITH 1 OTHER FEED(S): a "
            "trace of one names its feed" in line] == ["east", "west"]


def test_a_store_indexed_before_the_note_fails_closed_read_only_and_notes_at_an_ingest(store,
                                                                                      tmp_path):
    ingest(store, tmp_path, "east", call("3035550100", "2001", "14:00", "e1"))
    ingest(store, tmp_path, "west", call("3035550177", "3001", "14:10", "w1"))
    ingest(store, tmp_path, "trunk", call("7205550177", "3035550110", "14:20", "t1"))
    store.envs.write(lambda txn: txn.delete(lookup.LOCAL_FEEDS, db=store.envs.db["meta"]))
    store.close()                                  # as a release before the note left it
    with cdrtrace.open(store.path, readonly_index=True) as reader:   # a reader writes nothing
        # but holds what it found (serve and trace open so): east's 2001 is no one's to name
        got = reader.trace("2001", at=AT)
        assert (got.outcome.value, got.call_time) == ("untraceable", None)
        assert reader.trace_records("2001", analyst="cic")[-1]["call"]["line_shared"] == [
            "east", "west"]
        assert [f["feed"] for f in reader.stats()["feeds"] if f["local_lines"]] == ["east", "west"]
        with reader.envs.read() as txn:
            assert txn.get(lookup.LOCAL_FEEDS, db=reader.envs.db["meta"]) is None
    with cdrtrace.open(store.path) as opened:
        with opened.envs.read() as txn:
            assert lookup.local_feeds(txn, opened.envs.db["meta"]) == [
                opened.catalog.known_feed_id(name) for name in ("east", "west")]
        got = opened.trace("2001", at=AT)
        assert (got.outcome.value, got.call_time) == ("untraceable", None)


def test_each_switchs_customer_sees_and_counts_only_their_own_traces(store, tmp_path):
    """East's 2001 and west's 2001 are two customers. The same caller rang each: east's
    twice, west's once. Counted on one line, three traced calls would let east's customer
    request action after two (R8), and each would read the other's traces."""
    harasser = "7205550199"
    ingest(store, tmp_path, "east", call(harasser, "2001", "10:00", "e1"),
           call(harasser, "2001", "11:00", "e2"))
    ingest(store, tmp_path, "west", call(harasser, "2001", "12:00", "w1"))
    for at, feed in (("10:30", "east"), ("11:30", "east"), ("12:30", "west"), ("12:40", None),
                     ("09:00", "west")):       # the last, before any call: no call, west's
        store.trace("2001", at=f"2026-03-02T{at}:00Z", feed=feed)
    east, west = store.status("2001", "east"), store.status("2001", "west")
    assert [t["activated_at"] for t in east.traces] == ["2026-03-02T10:30:00Z",
                                                        "2026-03-02T11:30:00Z"]
    assert [(p.traced_calls, p.eligible_for_action) for p in east.progress] == [(2, False)]
    assert [(t["activated_at"], t["outcome"]) for t in west.traces] == [
        ("2026-03-02T12:30:00Z", "success"), ("2026-03-02T09:00:00Z", "no_call")]
    assert [p.traced_calls for p in west.progress] == [1]
    with pytest.raises(TraceError, match="feeds east, west number alike: name the customer's"):
        store.status("2001")
    with pytest.raises(cdrtrace.CaseError, match="2 of 3 traced calls"):
        store.request_action("2001", east.progress[0].label, feed="east")
    assert harasser not in repr(east) + repr(west)
    # an E.164 line's traces are all its customer's, feed or none
    assert store.status("3035550110").traces == ()


CASE = {"agency": "Metro PD", "officer": "Det. Ruiz", "analyst": "cic"}


def test_each_switchs_customer_has_their_own_requests_waivers_and_cases(store, tmp_path):
    """One caller rang east's 2001 and west's 2001 once each. The CIC waived the
    threshold for east's customer (threats) and east asked for action. West's customer
    was waived nothing, has no request to see, may ask once waived in turn, and each
    case holds its own customer's traces alone."""
    harasser = "7205550199"
    ingest(store, tmp_path, "east", call(harasser, "2001", "10:00", "e1"))
    ingest(store, tmp_path, "west", call(harasser, "2001", "11:00", "w1"))
    store.trace("2001", at="2026-03-02T10:30:00Z", feed="east")
    store.trace("2001", at="2026-03-02T11:30:00Z", feed="west")
    label = store.status("2001", "east").progress[0].label
    with pytest.raises(TraceError, match="feeds east, west number alike: name the customer's"):
        store.open_case("2001", label, case_number="W-0", waive_reason="threats", **CASE)
    waiver = store.open_case("2001", label, case_number="W-1", waive_reason="threats",
                             feed="east", **CASE)
    assert store.status("2001", "east").progress[0].eligible_for_action
    assert not store.status("2001", "west").progress[0].eligible_for_action
    with pytest.raises(cdrtrace.CaseError, match="1 of 3 traced calls"):
        store.request_action("2001", label, feed="west")
    east_request = store.request_action("2001", label, feed="east")
    assert store.status("2001", "east").progress[0].request["state"] == "queued"
    assert store.status("2001", "west").progress[0].request is None
    store.open_case("2001", label, case_number="W-2", waive_reason="threats", feed="west", **CASE)
    west_request = store.request_action("2001", label, feed="west")     # east's is no bar
    with pytest.raises(cdrtrace.CaseError, match="another switch's customer's"):
        store.open_case("2001", label, case_number="X-1", feed="east",
                        request_id=west_request["request_id"], **CASE)
    case = store.open_case("2001", label, case_number="E-1", request_id=east_request["request_id"],
                           **CASE)                                   # the request's feed
    assert store.status("2001", "east").progress[0].request["state"] == "case_opened"
    assert store.status("2001", "west").progress[0].request["state"] == "queued"
    assert [t["call_time"] for t in store.case(case["case_id"], analyst="cic")["timeline"]] == [
        "2026-03-02T10:00:00Z"]
    assert [t["call_time"] for t in store.case(waiver["case_id"], analyst="cic")["timeline"]] == [
        "2026-03-02T10:00:00Z"]


def test_a_request_and_a_case_made_before_the_line_was_shared_stay_their_customers(store,
                                                                                  tmp_path):
    """Made while only east indexed extensions, with no feed named, they are east's
    customer's: west's 2001, indexed later, is waived nothing and sees no request. An
    E.164 line's requests and cases name no feed, shared or not."""
    harasser = "7205550199"
    ingest(store, tmp_path, "east", call(harasser, "2001", "10:00", "e1"),
           call(harasser, "3035550110", "10:05", "e2"))
    store.trace("2001", at="2026-03-02T10:30:00Z")
    label = store.status("2001").progress[0].label
    store.open_case("2001", label, case_number="W-1", waive_reason="threats", **CASE)
    store.request_action("2001", label)
    ingest(store, tmp_path, "west", call(harasser, "2001", "11:00", "w1"))
    store.trace("2001", at="2026-03-02T11:30:00Z", feed="west")
    west = store.status("2001", "west").progress[0]
    assert (west.eligible_for_action, west.request) == (False, None)
    assert store.status("2001", "east").progress[0].request["state"] == "queued"
    store.trace("3035550110", at="2026-03-02T11:30:00Z")          # no feed: an E.164 line
    e164 = store.status("3035550110").progress[0].label
    store.open_case("3035550110", e164, case_number="W-3", waive_reason="threats", **CASE)
    assert store.request_action("3035550110", e164)["state"] == "queued"


def test_a_case_report_holds_its_own_customers_archived_calls(tmp_path):
    """The report's calls from the archive, between the case's line and origin, are its
    customer's switch's: the other switch's 2001 was another person's line."""
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    harasser = "7205550199"
    ingest(store, tmp_path, "east", call(harasser, "2001", "10:00", "e1"))
    ingest(store, tmp_path, "west", call(harasser, "2001", "11:00", "w1"),
           call(harasser, "2001", "12:00", "w2"))
    store.trace("2001", at="2026-03-02T10:30:00Z", feed="east")
    case = store.open_case("2001", "Caller A", case_number="E-1", feed="east", **CASE)
    store.disclose({"kind": "subpoena", "reference": "S-1", "agency": "Metro PD",
                    "officer": "Det. Ruiz", "case_number": "E-1"}, analyst="cic", line="2001")
    seen = []
    real = store._disclosure.case_calls
    store._disclosure.case_calls = lambda *a: seen.append(real(*a)) or seen[-1]
    store.case_report(case["case_id"], analyst="cic")
    assert [c["start_us"] for c in seen[-1]] == [1772445600000000]     # east's, 10:00 UTC
    assert len(real(store.line("2001"), store.line(harasser))) == 3  # the line's, all feeds
    store.close()
