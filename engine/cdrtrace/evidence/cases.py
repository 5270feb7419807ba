"""Cases: a customer's request for action against one origin, opened by the CIC once the
line has traced it the threshold number of times (or sooner, waived for threatening
calls), with the law-enforcement agency, officer and case number it goes to.

`cases` (evidence environment): 8-byte case number -> the case (JSON).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..errors import AccessError, CaseError, UnknownCaseError
from ..parsing import numbers, timezones
from ..store import index, lookup
from ..store.environments import Environments
from . import pseudonyms
from .audit import AuditLog
from .outcomes import traced_for
from .requests import case_line_key, numbered, of_line
from .traces import Tracer

CASE_FIELDS = ("agency", "officer", "case_number")


class Cases:
    """The cases of one store."""

    def __init__(self, envs: Environments, tracer: Tracer, audit: AuditLog,
                 line: Callable[[str], int]):
        self.envs, self.tracer, self.audit, self.line = envs, tracer, audit, line
        self.db = envs.db

    def origin(self, packed_line: int, origin: str, line_number: int | None,
               feed: int | None = None) -> str:
        """An origin named by the customer's label ('Caller A') or by number -> the origin
        (pseudonyms.origin_key). line_number: the origin's packed number when it was given
        as a number. One a switch numbers itself (an extension) is the origin of the
        line's traces (of the customer of feed, where the case has one) that named it:
        refused where none did, or where two or more feeds' callers wrote it alike."""
        label = str(origin).strip()
        key = index.line_key(packed_line)
        if label.lower().startswith("caller "):
            labels = self.tracer.labels(key, self.tracer.records(key))
            for number, name in labels.items():
                if name.lower() == label.lower():
                    return number
            raise CaseError(f"line {numbers.format_number(packed_line)} has no origin {label!r} "
                            f"(its origins: {', '.join(labels.values()) or 'none'})")
        if line_number is None:
            raise CaseError(f"not an origin: {origin!r}")
        text = numbers.format_number(line_number)
        if not lookup.local_line(line_number):
            return text
        records = [r for r in self.tracer.records(key) if of_case({"feed": feed}, r)]
        found = {o for r in records
                 if (o := pseudonyms.origin_of(r)) is not None and pseudonyms.caller_of(o)[0] == text}
        if len(found) == 1:
            return found.pop()
        labels = self.tracer.labels(key, records)
        raise CaseError(
            f"line {numbers.format_number(packed_line)} has "
            + (f"traces of {len(found)} callers written {text} (on different feeds' switches, "
               f"or from a switch of several tenants): name the origin by its label "
               f"({', '.join(sorted(labels.get(o, o) for o in found))})" if found
               else f"no traced call from {text}, which its switch numbers itself: name the "
               "origin by its label"))

    def open(self, packed_line: int, origin: str, origin_packed: int | None, *, agency: str,
             officer: str, case_number: str, analyst: str, waive_reason: str | None = None,
             settling: Callable[..., Any] | None = None, feed: int | None = None) -> dict:
        """Open a case for a line and an origin (its label, or its number packed);
        settling(txn, who=, case=), in the same transaction, settles the request it answers
        (and, refusing it, opens nothing). feed: on a line its switch numbers itself, the
        feed of the switch whose customer the case is for (its traces alone are the case's)."""
        who = self.audit.actor(analyst, "opening a case")
        given = {"agency": agency, "officer": officer, "case_number": case_number}
        for name, value in {**given, "waive_reason": waive_reason}.items():
            if value is not None and not isinstance(value, str):
                raise CaseError(f"a case's {name} is text (not {value!r})")
        missing = [n for n in CASE_FIELDS if not given[n] or not str(given[n]).strip()]
        if missing:
            raise CaseError(f"a case needs {', '.join(missing)}")
        line_text = numbers.format_number(packed_line)
        origin_number = self.origin(packed_line, origin, origin_packed, feed)

        def work(txn: Any) -> dict:
            cursor = txn.cursor(self.db["cases"])
            seq = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
            case = {"case_id": f"C{seq:06d}", "line": line_text, "origin": origin_number,
                    "agency": agency.strip(), "officer": officer.strip(),
                    "case_number": case_number.strip(), "opened_by": who,
                    "opened_us": time.time_ns() // 1000,
                    "waiver": ({"reason": waive_reason.strip(), "by": who}
                               if waive_reason and waive_reason.strip() else None),
                    "feed": feed}
            cursor.put(seq.to_bytes(8, "big"), json.dumps(case).encode(), append=True)
            txn.put(case_line_key(line_text, b"C", seq.to_bytes(8, "big")), b"",
                    db=self.db["case_lines"])
            self.audit.add(txn, who, "case_open", case_id=case["case_id"], line=line_text,
                           origin=origin_number, waived=case["waiver"] is not None)
            if settling is not None:
                settling(txn, who=who, case=case)
            return case
        return self.envs.ewrite(work)

    def all(self) -> list[dict]:
        """Every case (unaudited: the callers audit)."""
        with self.envs.eread() as txn:
            return [json.loads(v) for _, v in txn.cursor(self.db["cases"])]

    def of_line(self, line_text: str) -> list[dict]:
        """A line's cases, through case_lines (unaudited: the callers audit)."""
        with self.envs.eread() as txn:
            return of_line(txn, self.db["case_lines"], line_text, b"C", self.db["cases"])

    def one(self, case_id: str) -> dict:
        """The case with this id, read by its key (UnknownCaseError: none)."""
        key = numbered(case_id, "C")
        with self.envs.eread() as txn:
            value = None if key is None else txn.get(key, db=self.db["cases"])
        if value is None:
            raise UnknownCaseError(f"no case {case_id}")
        return json.loads(value)

    def listed(self, analyst: str) -> list[dict]:
        who = self.audit.actor(analyst, "listing cases")
        cases = self.all()
        self.audit.add_now(who, "case_list", cases=len(cases))
        return cases

    def read(self, case_id: str, analyst: str) -> dict:
        """A case and its timeline: every trace between its line and origin, in order."""
        who = self.audit.actor(analyst, "reading a case")
        case = self.one(case_id)
        records = self.tracer.records(index.line_key(self.line(case["line"])))
        timeline = sorted(
            ({"trace_id": r["trace_id"], "outcome": r["outcome"],
              "call_time": timezones.format_utc(r["call"]["start_us"]),
              "trace_time": timezones.format_utc(r["activated_us"])}
             for r in records if r["call"] and pseudonyms.origin_of(r) == case["origin"]
             and of_case(case, r)),
            key=lambda t: (t["call_time"], t["trace_time"], t["trace_id"]))
        self.audit.add_now(who, "case_read", case_id=case_id)
        return {**case, "timeline": timeline}

    def released(self, case_id: str) -> tuple[dict, list[dict], list[dict]]:
        """A case whose case number a recorded disclosure authority names: the case, the
        audit entries of its releases, and those that made the release (releases and the
        case's opening). A case without one has no report (AccessError)."""
        case = self.one(case_id)

        def release(e: dict) -> bool:
            return e["action"] == "disclosure" and str(
                e["details"].get("authority", {}).get("case_number")) == case["case_number"]
        log = self.audit.matching(lambda e: release(e) or (
            e["action"] == "case_open" and e["details"].get("case_id") == case_id))
        releases = [e for e in log if release(e)]
        if not releases:
            raise AccessError(f"case {case_id} has no recorded legal authority: release its "
                              f"records under one first (cdrtrace disclose ... --case-number "
                              f"{case['case_number']})")
        return case, releases, log

    def archived_calls(self, case: dict, records: list[dict],
                       calls: Callable[[int, int, int | None], list[dict]]) -> list[dict]:
        """The archived calls a case's report lists: from its origin to its line, read by
        calls(line, caller, feed) (Disclosure.case_calls). Those of the origin's feed, for
        a caller its switch numbers itself (else of the case's); for one of a feed of
        several tenants, those of its traced calls (records) alone."""
        caller, feed, one_call = pseudonyms.caller_of(case["origin"])
        found = calls(self.line(case["line"]), self.line(caller),
                      case.get("feed") if feed is None else feed)
        if one_call:
            starts = {r["call"]["start_us"] for r in records}
            found = [c for c in found if c["start_us"] in starts]
        return found

    def traced_calls(self, case: dict) -> list[dict]:
        """The evidence records of the case's line whose traced call came from its origin."""
        key = index.line_key(self.line(case["line"]))
        return [r for r in self.tracer.records(key)
                if r["call"] and pseudonyms.origin_of(r) == case["origin"]
                and r["outcome"] == "success" and of_case(case, r)]


def of_case(case: dict, record: dict) -> bool:
    """Whether a trace of the case's line is the case's: made for the customer of its
    feed (outcomes.traced_for), where it has one (an extension switches number alike)."""
    return case.get("feed") is None or traced_for(record) == case["feed"]
