"""`cdrtrace demo`: a day of switch traffic, *57 traces played as a switch would, reports.

The switch writes its CDR file as calls end; cdrtrace ingests each piece as it appears,
and each planted victim dials *57 a few seconds after a harassing call ends.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import synth
from .api import Store
from .ingestion.batch import ingest
from .parsing.timezones import format_utc
from .reports import analytics
from .service import agi

CALLS, LINES, CAMPAIGNS, SEED = 120_000, 30_000, 5, 57


def run(json_output: bool = False, keep: str | None = None) -> dict:
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cdrtrace-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _run(folder, json_output)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _other_outcomes(columns, events):
    """Traces that end otherwise: a repeated *57, an unavailable caller, a line never alerted."""
    extra = [(events[0][0] + 20, events[0][1])]          # dialled again: already traced
    line, start, end = columns["line"], columns["start"], columns["end"]
    received = columns["disposition"] <= 2               # answered, no answer, cancel
    for i in np.flatnonzero((columns["presentation"] == 2) & received):
        later = (line == line[i]) & (start > start[i]) & (start <= end[i] + 30)
        if not later.any():
            extra.append((int(end[i]) + 8, f"+1{int(line[i])}"))   # untraceable
            break
    alerted = np.unique(line[received])
    never = np.setdiff1d(np.unique(line), alerted)
    if len(never):
        extra.append((int(end[-1]) - 60, f"+1{int(never[0])}"))    # no call to trace
    return extra


def _run(folder: Path, json_output: bool) -> dict:
    say = (lambda *a: None) if json_output else print
    columns, truth = synth.generate(CALLS, LINES, seed=SEED, campaigns=CAMPAIGNS)
    store = Store(folder / "store", create=True, audit_key_file=str(folder / "audit.key"))
    victims: dict = {}
    events = []
    for campaign in truth["campaigns"]:
        victim = campaign["victim"]
        victims.setdefault(victim, 0)
        victims[victim] += 1
        events += [(call["trace_at_s"], victim) for call in campaign["calls"]]
    events += _other_outcomes(columns, events)
    events.sort()

    say(f"cdrtrace demo: one day of Asterisk CDRs ({len(columns['line']):,} calls to "
        f"{LINES:,} lines), {len(truth['campaigns'])} planted harassment campaigns "
        f"against {len(victims)} customers.\n")
    say("*57 traces, played as the switch would (CDRs ingested as calls end):")
    listener, agi_port = _fastagi(store)
    ends = columns["end"]
    written = 0
    totals = {"records": 0, "indexed": 0, "rejected": 0, "seconds": 0.0}
    traces = []
    for n, (at, victim) in enumerate(events + [(int(ends[-1]) + 1, None)]):
        upto = int(np.searchsorted(ends, at, side="right"))
        if upto > written:
            piece = folder / f"Master-{n:04d}.csv"
            piece.write_bytes(synth.format_asterisk(columns, written, upto))
            summary = ingest(store, [str(piece)])
            for key in ("records", "indexed", "rejected"):
                totals[key] += getattr(summary, key)
            totals["seconds"] += summary.seconds
            piece.unlink()
            written = upto
        if victim is None:
            break
        if n == 0:      # the first *57 goes the way Asterisk sends it: FastAGI
            variables = agi.dial("127.0.0.1", agi_port, victim, format_utc(at * 1_000_000))
            traces.append({"via": "fastagi", "outcome": variables["COT_OUTCOME"],
                           "announcement_id": variables["COT_ANNOUNCEMENT"],
                           "trace_id": variables["COT_TRACE_ID"]})
            say(f"  {format_utc(at * 1_000_000)}  {victim} dials *57 (Asterisk, FastAGI) -> "
                f"COT_OUTCOME={variables['COT_OUTCOME']} [{variables['COT_ANNOUNCEMENT']}] "
                f"{variables['COT_TRACE_ID']}")
            continue
        result = store.trace(victim, at=at * 1_000_000)
        traces.append(result.to_dict())
        say(f"  {format_utc(at * 1_000_000)}  {victim} dials *57  ->  "
            f"[{result.announcement_id}] {result.announcement.split('. ')[0]}.")

    say(f"\ningested {totals['records']:,} records ({totals['indexed']:,} index entries, "
        f"{totals['rejected']} rejected) in {totals['seconds']:.2f} s")
    say("\nWhat each customer sees (no caller identity):")
    statuses = []
    for victim in victims:
        status = store.status(victim)
        statuses.append(status.to_dict())
        progress = "; ".join(
            f"{p.label}: {p.counted()}"
            + (", may request action" if p.eligible_for_action else "")
            for p in status.progress)
        say(f"  {victim}: {len(status.traces)} traces; {progress}")

    table = analytics.repeat_origins(
        store.trace_columns(analyst="demo analyst", columns=analytics.REPEAT_COLUMNS),
        store.config["threshold"])
    say("\nCall Identification Center, repeat origins (analyst view, identifying):")
    say(f"  {'line':<14} {'origin':<14} {'traced':>6}  {'first call':<20} {'last call':<20} eligible")
    for row in table.to_pylist():
        say(f"  {row['line']:<14} {row['origin']:<14} {row['traced_calls']:>6}  "
            f"{row['first_call']:%Y-%m-%d %H:%M:%S}  {row['last_call']:%Y-%m-%d %H:%M:%S}  "
            f"{'yes' if row['eligible'] else 'no'}")
    report = {"ingest": totals, "traces": traces, "status": statuses,
              "repeat_origins": [{**r, "first_call": str(r["first_call"]),
                                  "last_call": str(r["last_call"])} for r in table.to_pylist()]}
    if json_output:
        print(json.dumps(report, indent=1))
    listener()
    store.close()
    return report


def _fastagi(store: Store) -> tuple:
    """`cdrtrace serve --agi` in a thread on a loopback port: (stop, port)."""
    import asyncio
    import threading

    from .service.server import serve

    started, handle = threading.Event(), dict[str, Any]()

    def ready(ports: dict, stop: asyncio.Event) -> None:
        handle.update(port=ports["agi"], stop=stop, loop=asyncio.get_running_loop())
        started.set()
    thread = threading.Thread(target=asyncio.run, daemon=True,
                              args=(serve(store, None, "127.0.0.1:0", ready=ready),))
    thread.start()
    started.wait(10)

    def stop() -> None:
        handle["loop"].call_soon_threadsafe(handle["stop"].set)
        thread.join(10)
    return stop, handle["port"]


