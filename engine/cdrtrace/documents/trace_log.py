"""The customer's trace log: a page the customer can hand to the police. Built from the
customer's view (CustomerStatus) and the carrier's settings only: no caller's number,
name or address can be in it."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from .render import Page

POLICE_FIELDS = ["Officer's name", "Agency (complete name)", "Agency phone", "Agency fax",
                 "Case number"]


def _local(text: str | None, zone: str) -> str:
    """An ISO UTC time as the customer's local date and time."""
    if not text:
        return "-"
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def customer_log(status: Any, carrier: dict, zone: str, generated: str) -> Page:
    """The log of a line's traces: contacts, traces, progress per origin, blanks."""
    name = carrier.get("name", "Your telephone carrier")
    page = Page(f"Call trace log - {name}")
    page.fields([("Line", status.line), ("Generated", _local(generated, zone)),
                 ("Times shown in", zone)])
    contacts = [("Call Identification Center", carrier["follow_up_phone"] + (
        f" ({carrier['follow_up_hours']})" if carrier.get("follow_up_hours") else ""))
        ] if carrier.get("follow_up_phone") else []
    if carrier.get("law_enforcement_phone"):
        contacts.append(("Law Enforcement Support", carrier["law_enforcement_phone"]
                         + " (for the police)"))
    if contacts:
        page.heading("Contacts")
        page.fields(contacts)
    page.heading("Traces")
    page.table(["Trace id", "Trace activated", "Call traced", "Outcome"],
               [[t["trace_id"], _local(t["activated_at"], zone), _local(t["call_time"], zone),
                 t["outcome"].replace("_", " ")] for t in status.traces] or [["-", "-", "-", "-"]],
               [30, 58, 58, 34])
    if status.progress:
        page.heading("Progress per caller")
        rows = []
        for p in status.progress:
            request = p.request
            rows.append([p.label, p.counted(""),
                         "yes" if p.eligible_for_action else "no",
                         f"{request['request_id']} {request['state'].replace('_', ' ')}"
                         if request else "-"])
        page.table(["Caller", "Traced calls", "May request action", "Request"], rows,
                   [40, 35, 45, 60])
    page.paragraph("The caller's identity is kept by the carrier and released only to law "
                   "enforcement under a subpoena, court order or law-enforcement request. "
                   "Give this page to the police officer; the officer contacts the carrier's "
                   "Law Enforcement Support with the trace ids above.")
    page.heading("For your police report")
    page.blanks(POLICE_FIELDS)
    return page


def guide(carrier: dict) -> Page:
    """What *57 does and does not do, with the carrier's settings filled in."""
    name = carrier.get("name", "your telephone carrier")
    code = carrier.get("star_code", "*57")
    page = Page(f"Call Trace ({code}): how it works")
    page.paragraph(f"If you receive a harassing or threatening call, hang up and dial {code} "
                   "right away. Call Trace identifies the last call that rang your line, "
                   "answered or not, even from a private number, and keeps it as evidence. "
                   "You will hear whether the trace was successful.")
    page.heading("What Call Trace does not do")
    page.paragraph("It does not tell you who called. It cannot trace a call whose number did "
                   "not reach the network (shown as unavailable), and it traces only the "
                   "last call before you dialled.")
    page.heading("After the trace")
    follow = carrier.get("follow_up_phone", "the number on your bill")
    page.paragraph(f"Once calls from the same number have been traced three times, you may "
                   f"ask {name} to take action. Call {follow}"
                   + (f" ({carrier['follow_up_hours']})" if carrier.get("follow_up_hours") else "")
                   + " with the dates and times of the calls and traces.")
    page.paragraph("You may also contact your local law enforcement. Note the officer's name, "
                   "the agency's complete name, phone and fax, and the case number. The police "
                   f"contact {name}'s Law Enforcement Support Team"
                   + (f" at {carrier['law_enforcement_phone']}"
                      if carrier.get("law_enforcement_phone") else "")
                   + "; the caller's identity is released only to them.")
    page.heading("For your records")
    page.blanks(["Date and time of the call", "Date and time of the trace"] + POLICE_FIELDS)
    return page
