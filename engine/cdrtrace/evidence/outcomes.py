"""Trace policy (docs/trace-rules.md): resolve *57 against the index, outcomes, announcements.

Everything in this module that reaches the customer (TraceResult, CustomerStatus, their
repr and JSON) is built without the caller's number, name or address.
"""
from __future__ import annotations

import dataclasses
import enum
import json

from ..parsing.formats import Disposition, Presentation
from ..parsing.timezones import format_utc
from ..store.lookup import STAMPED_AHEAD_US
from .pseudonyms import origin_of


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    UNTRACEABLE = "untraceable"
    NO_CALL = "no_call"
    ALREADY_TRACED = "already_traced"
    PENDING = "pending"
    FAILURE = "failure"       # the evidence could not be written (a full disk): nothing recorded


# Fixed announcement per outcome ("Outcomes and announcements"): a stable id the switch plays, and its text.
ANNOUNCEMENTS = {
    Outcome.SUCCESS: ("COT-SUCCESS", "Your call trace was successful. The call has been recorded "
                      "for the Call Identification Center. Please contact them to take action."),
    Outcome.UNTRACEABLE: ("COT-UNTRACEABLE", "Your call trace was not successful. The last call "
                          "to your line cannot be traced."),
    Outcome.NO_CALL: ("COT-NO-CALL", "Your call trace was not successful. There is no recent "
                      "incoming call to trace."),
    Outcome.ALREADY_TRACED: ("COT-ALREADY-TRACED", "The last call to your line has already been "
                             "traced. It does not need to be traced again."),
    Outcome.PENDING: ("COT-PENDING", "Your call trace request has been received and will be "
                      "completed shortly."),
    Outcome.FAILURE: ("COT-FAILURE", "Your call trace could not be completed at this time. "
                      "Please hang up and try again later."),
}



def outcome_for(entry) -> Outcome:
    """Success or untraceable for the call a trace resolved to ("Who called"; an
    unreadable record, and a call that may not have rung, fail closed, docs/trace-rules.md,
    "Imperfect data")."""
    if int(entry["flags"]) >> 4 in (Disposition.UNREADABLE, Disposition.LATE_REFUSAL,
                                    Disposition.LATE_FAILURE, Disposition.UNKNOWN,
                                    Disposition.TRANSFERRED, Disposition.CALLERS_DIFFER):
        return Outcome.UNTRACEABLE
    if int(entry["calling"]) == 0 or int(entry["presentation"]) == Presentation.UNAVAILABLE:
        return Outcome.UNTRACEABLE
    return Outcome.SUCCESS


@dataclasses.dataclass(frozen=True)
class TraceResult:
    """What the customer and the switch learn from a trace: never the caller's identity."""

    trace_id: str
    line: str
    outcome: Outcome
    activated_at: str
    call_time: str | None
    text: str | None = None     # the carrier's own wording of the announcement, if any

    @property
    def announcement_id(self) -> str:
        return ANNOUNCEMENTS[self.outcome][0]

    @property
    def announcement(self) -> str:
        return self.text or ANNOUNCEMENTS[self.outcome][1]

    @property
    def successful(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def to_dict(self) -> dict:
        return {"trace_id": self.trace_id, "line": self.line, "outcome": self.outcome.value,
                "announcement_id": self.announcement_id, "announcement": self.announcement,
                "activated_at": self.activated_at, "call_time": self.call_time}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclasses.dataclass(frozen=True)
class OriginProgress:
    label: str
    traced_calls: int
    threshold: int
    first_call: str
    last_call: str
    waived: bool = False     # the CIC waived the threshold (threatening calls)
    request: dict | None = None   # the customer's request for action: id, state, times

    @property
    def eligible_for_action(self) -> bool:
        return self.waived or self.traced_calls >= self.threshold

    def counted(self, unit: str = " traced calls") -> str:
        """The traced calls as the customer reads them: "1 of 3 traced calls" up to the
        threshold, "4 traced calls (3 needed)" past it (not "4 of 3")."""
        if self.traced_calls > self.threshold:
            return f"{self.traced_calls}{unit} ({self.threshold} needed)"
        return f"{self.traced_calls} of {self.threshold}{unit}"

    def to_dict(self) -> dict:
        return {"origin": self.label, "traced_calls": self.traced_calls,
                "threshold": self.threshold, "threshold_waived": self.waived,
                "eligible_for_action": self.eligible_for_action,
                "first_call": self.first_call, "last_call": self.last_call,
                "request": self.request}


@dataclasses.dataclass(frozen=True)
class CustomerStatus:
    """A customer's view of their line: their traces and progress per pseudonymous origin."""

    line: str
    traces: tuple[dict, ...]
    progress: tuple[OriginProgress, ...]
    follow_up: dict | None = None   # the carrier's contact, once an origin is eligible

    @property
    def eligible_for_action(self) -> bool:
        return any(p.eligible_for_action for p in self.progress)

    def to_dict(self) -> dict:
        return {"line": self.line, "traces": list(self.traces),
                "progress": [p.to_dict() for p in self.progress],
                "eligible_for_action": self.eligible_for_action, "follow_up": self.follow_up}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def call_time(call: dict | None) -> str | None:
    """The time of a trace's call as its customer is told it: none where there is no call,
    where the call is stamped after the trace was made (its feed's times are wrong), or
    where a call's time in a repeated hour leaves the last call unknown, or where a later
    call may be missing from a switch that may leave calls that rang a line unlogged, or
    where the call was split off by a transfer (the line may have been joined to another
    caller after it), or where its records name two callers (a transfer may have joined
    one to it)."""
    if call is None or any(k in call for k in _NO_CALL_TIME) \
            or call.get("disposition") in ("transferred", "callers_differ"):
        return None
    return call["start"]


_NO_CALL_TIME = ("stamped_ahead", "stamped_after_activation", "folded", "activation_folded",
                 "unconnected_unlogged", "legs_unlogged", "line_shared", "tenants_shared",
                 "hunt_unnamed", "caller_is_line", "source_damaged")


def customer_status(line: str, records: list[dict], threshold: int, labels: dict[str, str],
                    waived: set | frozenset = frozenset(), requests: dict | None = None,
                    follow_up: dict | None = None) -> CustomerStatus:
    """Build the customer's view from the line's trace records (in trace order) and its
    origins' pseudonyms (evidence.pseudonyms)."""
    traces = tuple({
        "trace_id": r["trace_id"],
        "activated_at": format_utc(r["activated_us"]),
        "call_time": None if "later_call" in r else call_time(r.get("call")),
        "outcome": r["outcome"],
    } for r in records)
    per_origin: dict[str, dict[tuple[str, int], int]] = {}
    for r in records:
        # a call: its id and start (ids recur); not one a call that came in later showed
        # was not the last (evidence.later)
        if r["outcome"] == Outcome.SUCCESS.value and "later_call" not in r:
            call = r["call"]["call_id"], r["call"]["start_us"]
            per_origin.setdefault(str(origin_of(r)), {})[call] = r["call"]["start_us"]
    order = list(labels)
    requests = requests or {}
    progress = tuple(
        OriginProgress(labels[origin], len(calls), threshold, format_utc(min(calls.values())),
                       format_utc(max(calls.values())), origin in waived,
                       _customer_view(requests.get(origin)))
        for origin, calls in sorted(per_origin.items(), key=lambda oc: order.index(oc[0])))
    eligible = any(p.eligible_for_action for p in progress)
    return CustomerStatus(line, traces, progress, follow_up if eligible else None)


def _customer_view(request: dict | None) -> dict | None:
    """A request as its customer sees it: where it stands, never the caller."""
    if request is None:
        return None
    return {"request_id": request["request_id"], "state": request["state"],
            "requested_at": format_utc(request["requested_us"]),
            "case_id": request["case_id"], "reason": request["reason"]}


def traced_for(record: dict) -> int | None:
    """The feed whose switch's customer a trace was made for: the feed it named; else its
    call's, unless that call was found on a line several feeds' switches number alike
    (line_shared: whose customer dialled is not known); None where nothing says."""
    if record.get("feed_named") is not None:
        return record["feed_named"]
    call = record.get("call")
    return call["feed"] if call is not None and "line_shared" not in call else None


def untraceable_reason(call: dict) -> str | None:
    """Why a call a trace resolved to cannot be traced, where the rules fail closed
    (docs/trace-rules.md, "Imperfect data"), for the evidence; None otherwise."""
    if "source_damaged" in call:
        return ("the CDR file this call was read from was found damaged further on, after "
                f"this call was indexed ({call['source_damaged']}): compressed data is checked "
                "at its end, so the bytes this call was read from may be damaged too, a digit "
                "of its caller's number among them, so none is named")
    if "caller_is_line" in call:
        return ("the last call to this line names the line itself as its caller: a record of "
                "the line's own phone (Asterisk writes a phone that transferred a call, "
                "bridged to its consultation call, as a call of its own, its caller the number "
                "dialled), or a caller who sent the line's own number; it names no one else, "
                "so none is named")
    if "line_shared" in call:
        return (f"this line is not an E.164 number but one a switch numbers itself (an "
                f"extension, other digits or a SIP user), and {len(call['line_shared'])} feeds "
                f"({', '.join(call['line_shared'])}) have indexed calls to such lines: each "
                "switch may have this line, the records cannot tell which switch's line dialled "
                "*57, and the last call to another's would be named, so none is named. A trace "
                "that names its feed (HTTP 'feed', FastAGI's second argument, `cdrtrace trace "
                "--feed`) is resolved among that feed's calls")
    if "tenants_shared" in call:
        return (f"this line is not an E.164 number but one a switch numbers itself (an "
                f"extension, other digits or a SIP user), and the records of feed "
                f"{call['tenants_shared']} name two or more tenants for such lines (BroadWorks "
                "groups, FreeSWITCH or Kamailio domains, or the column a dialect names its "
                "tenant by): "
                "the switch hosts several customers' PBXs, each may have this line, the "
                "records cannot tell which one's line dialled *57, and the last call to "
                "another's would be named, so none is named. Give each tenant's records a "
                "feed of their own")
    if "stamped_ahead" in call:
        return (f"the newest call to this line is stamped {call['start']}, more than "
                f"{STAMPED_AHEAD_US // 60_000_000} minutes after the trace was made: its feed's "
                "time zone or its switch's clock is wrong, so no call's time on this line can "
                "be trusted, and none is named")
    if "stamped_after_activation" in call:
        return (f"a call to this line stamped {call['start']}, after the activation, was "
                "already recorded when the trace was made, so it had begun by then: its "
                "switch's clock runs ahead of the service's, and it may be the call that rang "
                "the line before the *57, so the last call is not known, and none is named")
    if "folded" in call:
        return (f"{len(call['folded'])} call(s) to this line began, as recorded, in the hour "
                "that the end of daylight saving repeats, where a local time names two instants "
                "an hour apart; read at the later one, the last call before the activation would "
                "not be the one these records name, so none is named")
    if "activation_folded" in call:
        return (f"the switch recorded this *57 at a local time of the hour that the end of "
                "daylight saving repeats, which names two instants an hour apart; "
                f"{len(call['activation_folded'])} call(s) to this line began between them, "
                "and read at the later one, the last call before the activation would be one "
                "of them, so none is named")
    if "tied_with" in call:
        return (f"{len(call['tied_with']) + 1} calls from different callers began at "
                f"{call['start']} on this line; the records cannot tell which was the last, so "
                "none is named")
    if "within_a_second" in call:
        return (f"this call began at {call['start']}, and a call from another caller began "
                f"at {call['within_a_second'][0]['start']}, less than a second before, as its "
                "switch writes times, in whole seconds: it may have begun up to a second later, "
                "after this one, so the records cannot tell which was the last, and none is "
                "named")
    if "tie_not_held" in call:
        return (f"the index holds {call['tie_not_held']} calls to this line, as many as a "
                f"line holds, and the oldest of them began at {call['start']}, as this call "
                "did: calls of that instant beyond them are no longer held, another caller's "
                "among them may have been the last, and the records held cannot tell, so none "
                "is named")
    if call["disposition"] == "unreadable":
        return (f"the last call to this line is a CDR record that could not be read (record at "
                f"byte {call['offset']} of {call['source']}); only its line and time are known, "
                "so it cannot be traced")
    if call["disposition"] == "late_refusal":
        return ("the last call to this line ended busy or rejected a second or more after it "
                "began, and its CDR does not log whether the line rang first: its user may have "
                "refused it while it rang, so it is the last call, and it cannot be traced")
    if call["disposition"] == "late_failure":
        return ("the last call to this line failed a second or more after it began, for a "
                "cause that does not say it reached no phone, and its CDR does not log whether "
                "the line rang first: a phone or proxy that gives up on a ringing call may end "
                "it so (a timeout, or the reply it is set to send), so it is the last call, and "
                "it cannot be traced")
    if call["disposition"] == "transferred":
        return ("the last call to this line was split off by a transfer or a conference (its "
                "CDR's cause says so): the line's phone was then joined to another caller (one "
                "transferred to it), or passed its own caller on, and this record tells neither "
                "which nor whom the line was left with, so the last call is not known, and none "
                "is named")
    if call["disposition"] == "callers_differ":
        return ("the last call to this line has records (one call id) that name different "
                "callers: a transfer may have joined another caller to the line's call (the "
                "transferring phone's consultation call and the caller it passed on are then "
                "one call, as an Asterisk 12+ linkedid makes them), and the records do not tell "
                "whom the line was left with, so none is named")
    if call["disposition"] == "unknown":
        return ("the last call to this line ended unanswered a second or more after it began, "
                "and its CDR does not tell whether the line rang first: it may have rung, so it "
                "is the last call, and it cannot be traced")
    if "unconnected_unlogged" in call:
        shown = call["unconnected_unlogged"]
        return ("this line's last recorded call is from a feed that "
                + ("has not shown a record of a call that never connected" if shown is None else
                   f"first showed a record of a call that never connected at {shown}, after "
                   "this call")
                + ". Its switch may write none, and then none of a call that rang the line "
                "unanswered (Cisco UCM while its 'CDR Log Calls with Zero Duration Flag' "
                "service parameter is off, its default; Kamailio's acc table without "
                "failed_transaction_flag, read without its missed_calls table): a later call "
                "may be missing, so the last call is not known, and none is named")
    if "hunt_unnamed" in call and "trimmed_to" in call["hunt_unnamed"]:
        return ("this line's last recorded call is from a feed whose calls through a hunt "
                "pilot ring phones their CDRs do not name, and a purge removed the note of "
                f"those calls up to {call['hunt_unnamed']['trimmed_to']}, after this call: one "
                "may have rung this line since, so the last call is not known, and none is named")
    if "hunt_unnamed" in call:
        hunt = call["hunt_unnamed"]
        through = (f"hunt pilot, queue or ring group {hunt['pilot']}" if hunt["pilot"]
                   else "a queue reached at no number")
        return (f"a call through {through} began at "
                f"{hunt['start']}, after this line's last recorded call and before the "
                "activation" + (f" (its CDR names {hunt['named']} too)" if hunt.get("named") else "")
                + ". Its CDR names at most one of the phones it rang (Cisco UCM: the pilot "
                "and at most the member that answered, with 'Show Line Group Member DN in "
                "finalCalledPartyNumber CDR Field' off, its default; Asterisk up to 11: one "
                "record of a Dial to several phones, or of a call to a Queue), and this line "
                "may be one of them (the Dial names it, or the feed's configuration lists no "
                "members for the pilot, or lists this line): the last call is not known, and "
                "none is named")
    if "legs_unlogged" in call:
        shown = call["legs_unlogged"]
        return ("this line's last recorded call is from a FreeSWITCH feed that "
                + ("has not shown two legs of a call" if shown is None else
                   f"first showed two legs of a call at {shown}, after this call")
                + ". Its switch may write each call's A leg alone (mod_cdr_csv's 'legs' "
                "parameter set to 'a' in cdr_csv.conf.xml, as shipped; or a template without "
                "${bleg_uuid}, whose legs cannot be joined), which names the number dialled and "
                "not the phones the call rang (a ring group's, a forwarded call's target, a "
                "queue's agent): a later call that rang this line may be missing, so the last "
                "call is not known, and none is named")
    return None
