"""The case report for law enforcement: what the carrier releases under a recorded legal
authority, in a form that can be authenticated later. Identifying by design: it is made
only for a case whose case number a recorded disclosure authority names, and making it
is audited. The same case gives the same bytes (apart from the printed generation time),
and each evidence record is listed with its SHA-256, so a copy can be checked against
the carrier's records (a hash-verified copy, in the manner of FRE 902(14))."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import zoneinfo

from ..parsing.formats import Disposition
from .render import Page, latin1

# what a record, read, carries beside it of what came in later (evidence.later.beside)
READ_BESIDE = ("later_call", "unreadable_nearby_now")


def record_hash(record: dict) -> str:
    """The SHA-256 of an evidence record's canonical JSON, as the store keeps it (what is
    read beside it, READ_BESIDE, is not part of it)."""
    kept = {k: v for k, v in record.items() if k not in READ_BESIDE}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


def _times(us: int | None, zone: str) -> str:
    if us is None:
        return "-"
    when = dt.datetime.fromtimestamp(us / 1e6, dt.UTC)
    local = when.astimezone(zoneinfo.ZoneInfo(zone))
    return f"{when:%Y-%m-%d %H:%M:%S} UTC / {local:%H:%M:%S %Z}"


def case_report(case: dict, authority: dict, disclosure: dict, records: list[dict],
                archived: list[dict], audit_entries: list[dict], carrier: dict, zone: str,
                generated: str, threshold: int) -> Page:
    name = carrier.get("name", "the carrier")
    page = Page(f"Case report {case['case_id']} - {name}")
    page.fields([("Case", f"{case['case_id']}: {case['agency']}, case {case['case_number']}"),
                 ("Officer", case["officer"]), ("Line (customer)", case["line"]),
                 ("Origin (caller)", case["origin"]),
                 ("Opened", f"{_times(case['opened_us'], zone)} by {case['opened_by']}"),
                 ("Generated", generated)])
    page.heading("Legal authority")
    page.fields([(k.replace("_", " ").capitalize(), str(authority.get(k, "")))
                 for k in ("kind", "reference", "agency", "officer", "case_number")]
                + [("Recorded", f"audit entry {disclosure['seq']}, {_times(disclosure['at_us'], zone)}, "
                                f"by {disclosure['actor']}")])
    page.heading("Traced calls")
    rows = []
    for r in records:
        call = r["call"]
        who = r.get("enrichment") or {}
        rows.append([r["trace_id"], _times(call["start_us"], zone)[:19], call["calling"],
                     call["presentation"], "yes" if call["answered"] else "no",
                     latin1(who.get("name", "-"))[:18]])
    page.table(["Trace", "Call (UTC)", "Calling number", "Presentation", "Answered", "Subscriber"],
               rows or [["-"] * 6], [22, 36, 32, 26, 18, 46])
    addresses = [(r["trace_id"], f"{r['enrichment']['name']}, {r['enrichment']['address']} "
                                 f"(directory import {r['enrichment'].get('directory_import')})")
                 for r in records if r.get("enrichment")]
    if addresses:
        page.heading("Subscriber of the calling number, as at each trace")
        page.fields(addresses)
    contested = [(r["trace_id"], _contesting(r["later_call"])) for r in records
                 if r.get("later_call")]
    if contested:
        page.heading("Traces contested by a call that came in later")
        page.fields(contested)
    page.heading("Timeline")
    _timeline(page, records, archived, threshold)
    if archived:
        page.heading("Every call from the origin to the line (call archive)")
        page.table(["Start", "Answered", "Disposition"],
                   [[_times(int(c["start_us"]), zone), "yes" if c["answer_us"] else "no",
                     _disposition(c["disposition"])] for c in archived[:200]], [80, 30, 70])
    page.heading("Evidence records (SHA-256 of each record's canonical JSON)")
    page.table(["Trace", "Activated", "SHA-256"],
               [[r["trace_id"], _times(r["activated_us"], zone)[:19], record_hash(r)]
                for r in records] or [["-"] * 3], [22, 36, 122])
    page.heading("Audit entries covering this disclosure")
    page.table(["Entry", "Time (UTC)", "Actor", "Action", "Entry MAC"],
               [[str(e["seq"]), _times(e["at_us"], zone)[:19], latin1(e["actor"])[:24],
                 e["action"], e["hash"][:32] + "..."] for e in audit_entries], [14, 36, 40, 40, 50])
    page.paragraph("Each record's SHA-256 is computed over its canonical JSON (keys sorted, no "
                   "spaces, UTF-8), as kept in the carrier's evidence store; the audit entries "
                   "are links of the carrier's keyed audit chain, verifiable with "
                   "'cdrtrace audit verify'.")
    return page


def _contesting(note: dict) -> str:
    """What a contested trace's note (evidence.later) says of the call that came later."""
    if "through_hunt_pilot" in note:
        return (f"a call through hunt pilot {note['through_hunt_pilot']} that began "
                f"{note['start']}, ingested later (noted {note['noted_at']}), may have rung "
                "the line between the traced call and the activation without its record "
                "naming it: the traced call may not be the one the customer traced")
    return (f"a call to the line that began {note['start']}, ingested later (feed "
            f"{note['feed']}, noted {note['noted_at']}), came between the traced call and the "
            "activation, from another caller or none known: the traced call may not be the "
            "one the customer traced")


def _disposition(code: int) -> str:
    try:
        return Disposition(int(code)).name.lower().replace("_", " ")
    except ValueError:
        return str(code)


def _timeline(page: Page, records: list[dict], archived: list[dict], threshold: int) -> None:
    """Calls (archive, gray), traced calls (black) and traces (triangles) on one time axis,
    the threshold's trace marked: a matplotlib chart, rendered reproducibly (no metadata,
    fixed fonts and size) and placed in the PDF."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.dates import DateFormatter, date2num

    def when(us: int) -> float:
        return float(date2num(dt.datetime.fromtimestamp(us / 1e6, dt.UTC)))

    if not records and not archived:
        page.paragraph("(no calls)")
        return
    with matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 7,
                                "svg.hashsalt": "cdrtrace", "path.simplify": False}):
        figure, axis = plt.subplots(figsize=(7.0, 1.6), dpi=150)
        if archived:
            axis.vlines([when(int(c["start_us"])) for c in archived], 0, 0.6, colors="0.7",
                        label="calls from the origin (archive)")
        ordered = sorted(records, key=lambda r: r["activated_us"])
        axis.vlines([when(r["call"]["start_us"]) for r in ordered], 0, 1, colors="black",
                    linewidth=1.5, label="traced calls")
        axis.scatter([when(r["activated_us"]) for r in ordered], [1.1] * len(ordered),
                     marker="v", color="black", s=18, label="traces (*57)")
        if len(ordered) >= threshold:
            t = when(ordered[threshold - 1]["activated_us"])
            axis.annotate(f"trace {threshold}: action may be requested", (t, 1.1),
                          xytext=(4, 6), textcoords="offset points")
        axis.set_ylim(0, 1.5)
        axis.set_yticks([])
        axis.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M", tz=dt.UTC))
        axis.set_xlabel("UTC")
        axis.legend(loc="upper left", fontsize=6, frameon=False, ncol=3)
        for side in ("left", "right", "top"):
            axis.spines[side].set_visible(False)
        figure.tight_layout()
        image = io.BytesIO()
        figure.savefig(image, format="png", metadata={"Software": None})
        plt.close(figure)
    image.seek(0)
    page.pdf.image(image, w=page.pdf.epw)
    page.pdf.ln(2)
    page.html.append("<p>(timeline: see the PDF)</p>")
