"""The trace rules (docs/trace-rules.md, docs/formats.md), checked over generated traffic
of five kinds of switch against a model written from their text, not from the code.

Two lines are called by callers who present their number, restrict it, or deliver none,
with the outcomes each switch writes: Asterisk `cdr_csv`, FreeSWITCH `mod_cdr_csv` (both
legs), Cisco UCM and BroadWorks, whose records do not log alerting, and Kamailio's
`acc_cdrs` with `rang`, which do. Some calls are forwarded from one line to the other.
Some begin in the same second as the call before (whole-second CDR times), from another
caller or from the same one. The calls are written in any order (a FreeSWITCH call's
legs together, each other switch's records shuffled), in one file or in two with traces
made before the second is read (each trace judged on the calls read by then), each read
whole or a few records a read, into a store that keeps four calls a line or two; its
index written and its traces recorded in C, or either by the reference. The model:

- a call that rang the line was received (R3): answered, unanswered or cancelled while
  ringing, and where the record logs alerting, any call that alerted the line (a user
  who declined or rejected it ringing); a call that never alerted it was not (a busy or
  failed Asterisk call within its first second, a Kamailio refusal with `rang` empty);
  an Asterisk refusal a second or more after its start may have rung: received, and
  `untraceable` if named (a late refusal); so may a failure a second or more long, in
  any of the four, whose cause does not say it reached no phone (a late failure; a
  Kamailio failure decided by `rang`);
- a forwarded call is a call to the dialled line and to the line that rang (R2), traced
  once from each;
- a CUCM feed may leave a call that rang unanswered unlogged until a record shows a call
  its caller cleared before it connected, and a FreeSWITCH feed may write A legs alone
  until it shows two different legs of a call: a call from before the first such is
  `untraceable`; so is an unanswered FreeSWITCH `NORMAL_CLEARING` a second or more
  long (it may have rung);
- a CUCM call to a hunt pilot whose record names no member (the pilot in
  finalCalledPartyNumber) may have rung any line of its feed: a call no newer than one
  that may have rung, and that began before the activation, is `untraceable` (one of its
  instant too, from its caller even: the record names no line that has it as its call);
- the index holds a line's newest `keep` received calls, and every call of the keep-th's
  instant; a trace names the newest of them that began before its activation (R1):
  `untraceable` if its caller delivered no number (R4, however withheld its display: a
  restricted number is traced, R5), `already_traced` if a trace named it before,
  `success` otherwise; with none, `no_call`, or refused where the line holds `keep`
  calls, all begun after it (older ones are no longer held);
- calls of that instant from two callers are `untraceable` (neither can be named); one
  caller's are one call, named by a record that surely rang where one does (a late
  refusal beside a call that rang is not untraceable);
- a customer's status counts, by origin, the calls traced with success (R8), and names
  no caller (R7)."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_formats import cucm_file

import cdrtrace
from cdrtrace.errors import TraceError
from conftest import cdr

LINES = ("3035550110", "3035550111")
T0 = 1772445600                       # 2026-03-02 10:00:00 UTC


class Switch:
    fmt = ""
    together = False    # whether a call's records are written one after the other
    callers: tuple = ()
    ends: tuple = ()

    @classmethod
    def write(cls, folder, records: list) -> str:
        (folder / "cdr.log").write_bytes(b"\n".join(records) + b"\n")
        return str(folder / "cdr.log")

    @classmethod
    def held(cls, made: list[tuple], call: tuple, minute: int) -> bool:
        """Whether a later call, before a *57 at minute:30, may be missing from the
        switch's records (docs/trace-rules.md, "A switch that leaves unanswered calls
        unlogged"): not for this switch."""
        return False

    @classmethod
    def lines_of(cls, call: tuple) -> set:
        """The lines a call rang that its records name: the dialled line, and the one
        it was forwarded to."""
        return {call[1], other(call[1])} if call[2] else {call[1]}

    @classmethod
    def records(cls, *call) -> list[bytes]:
        return [cls.record(*call)]


class Asterisk(Switch):
    """cdr_csv, whose records do not log alerting: a busy call's times tell whether it
    may have rung."""
    fmt = "asterisk"
    # (src, clid, userfield, delivers a number)
    callers = (("7205550101", '"Pat" <7205550101>', "", True),
               ("7205550102", '"Sam" <7205550102>', "prohib_passed_screen", True),  # restricted
               ("anonymous", '"Anonymous" <anonymous>', "", False),
               ("7205550103", '"Lee" <7205550103>', "unavailable", False))
    # (disposition, seconds to its end, answered, received, named as a late refusal)
    ends = (("ANSWERED", 60, True, True, False), ("NO ANSWER", 20, False, True, False),
            ("CANCEL", 9, False, True, False), ("BUSY", 0, False, False, False),
            ("BUSY", 8, False, True, True), ("FAILED", 0, False, False, False),
            ("CONGESTION", 0, False, False, False),
            ("FAILED", 7, False, True, True), ("CONGESTION", 5, False, True, True))

    @classmethod
    def record(cls, minute: int, line: str, forwarded: bool, caller: int, end: int,
               ident: int) -> bytes:
        src, clid, userfield, _ = cls.callers[caller]
        disposition, seconds, answered, _, _ = cls.ends[end]
        rang = other(line) if forwarded else line
        return cdr(src=src, clid=clid, userfield=userfield, dst=line,
                   dstchannel=f"PJSIP/{rang}-0000001b", start=clock(minute),
                   answer=clock(minute, 5) if answered else "", end=clock(minute, seconds),
                   disposition=disposition, uniqueid=f"1772445600.{ident}")


class Kamailio(Switch):
    """acc_cdrs as the shipped configuration logs them, `rang` set once the line alerted:
    every refusal tells whether it rang."""
    fmt = "kamailio"
    # (src_user, pai, privacy, delivers a number)
    callers = (("7205550101", "", "", True), ("anonymous", "7205550102", "id", True),
               ("anonymous", "", "", False), ("7205550103", "", "", True))
    # (sip code and reason, rang, seconds to its end, answered, received, late refusal)
    ends = (("200|OK", "1", 60, True, True, False),
            ("487|Request Terminated", "1", 9, False, True, False),
            ("487|Request Terminated", "", 1, False, False, False),
            ("480|Temporarily Unavailable", "1", 20, False, True, False),
            ("480|Temporarily Unavailable", "", 0, False, False, False),
            ("408|Request Timeout", "1", 30, False, True, False),
            ("603|Decline", "1", 4, False, True, False),
            ("486|Busy Here", "", 0, False, False, False),
            ("486|Busy Here", "1", 6, False, True, False),
            ("404|Not Found", "", 0, False, False, False),
            ("503|Service Unavailable", "1", 20, False, True, False),   # it rang: traced
            ("503|Service Unavailable", "", 25, False, False, False),
            ("302|Moved Temporarily", "", 0, False, False, False))

    @classmethod
    def record(cls, minute: int, line: str, forwarded: bool, caller: int, end: int,
               ident: int) -> bytes:
        src, pai, privacy, _ = cls.callers[caller]
        code, rang, seconds, answered, _, _ = cls.ends[end]
        start = T0 + 60 * minute
        finish = start + seconds
        confirmed = start + 5 if answered else finish
        return "|".join([
            str(confirmed), str(finish), f"{finish - confirmed if answered else 0}.000000",
            f"call-{ident}@192.0.2.1", f"{start}.000000", src, pai, privacy, line,
            other(line) if forwarded else line, line if forwarded else "", code,
            rang]).encode()


class Cucm(Switch):
    """Cisco UCM, which logs no alerting, and writes a call that never connected only with
    its Zero Duration flag on: its feed is held until a record shows a call its caller
    cleared before it connected (origCause 16, destCause 0), and trusted from that call's
    start on."""
    fmt = "cucm"
    # (callingPartyNumber, delivers a number)
    callers = (("7205550101", True), ("7205550102", True), ("", False), ("7205550103", True))
    # (connected, origCause, destCause, seconds to its end, answered, shows the flag,
    #  received, late refusal)
    ends = ((True, 16, 16, 60, True, False, True, False),
            (False, 0, 19, 20, False, False, True, False),       # no answer
            (False, 0, 18, 20, False, False, True, False),
            (False, 16, 0, 9, False, True, True, False),         # the caller cleared, ringing
            (False, 0, 26, 15, False, False, True, False),       # answered elsewhere
            (False, 0, 17, 0, False, False, False, False),       # busy at once
            (False, 0, 17, 8, False, False, True, True),         # busy after it may have rung
            (False, 0, 21, 0, False, False, False, False),
            (False, 0, 21, 6, False, False, True, True),
            (False, 0, 1, 0, False, False, False, False),        # unallocated
            (False, 0, 102, 30, False, False, True, True),       # a late failure (a 408)
            (False, 0, 27, 30, False, False, False, False))      # out of order: no phone

    @classmethod
    def record(cls, minute: int, line: str, forwarded: bool, caller: int, end: int,
               ident: int) -> dict:
        connected, orig, dest, seconds, *_ = cls.ends[end]
        start = T0 + 60 * minute
        return {"globalCallID_callManagerId": 1, "globalCallID_callId": ident + 1,
                "dateTimeOrigination": start, "dateTimeConnect": start + 5 if connected else 0,
                "dateTimeDisconnect": start + seconds,
                "callingPartyNumber": cls.callers[caller][0], "originalCalledPartyNumber": line,
                "finalCalledPartyNumber": other(line) if forwarded else line,
                "lastRedirectDn": line if forwarded else "", "origCause_value": orig,
                "destCause_value": dest, "duration": 55 if connected else 0}

    @classmethod
    def write(cls, folder, records: list) -> str:
        return cucm_file(folder, records)

    @classmethod
    def held(cls, made: list[tuple], call: tuple, minute: int) -> bool:
        shown = [c[0] for c in made if cls.ends[c[4]][5]]
        return not shown or min(shown) > call[0]


class CucmHunt(Cucm):
    """The same cluster, where a call marked forwarded goes to hunt pilot 2000 instead,
    whose record names only the pilot ('Show Line Group Member DN in finalCalledPartyNumber
    CDR Field' off; huntPilotDN once answered, pattern usage 7): it rang a member's
    phone, either line, unnamed. No member is listed, so such a call that may have rung
    holds every line whose last call is older (docs/trace-rules.md, "A call to a hunt
    group")."""

    @classmethod
    def record(cls, minute: int, line: str, forwarded: bool, caller: int, end: int,
               ident: int) -> dict:
        row = super().record(minute, line, False, caller, end, ident)
        if forwarded:
            row.update(originalCalledPartyNumber="2000", finalCalledPartyNumber="2000",
                       calledPartyPatternUsage=7, huntPilotDN="2000" if cls.ends[end][0] else "")
        return row

    @classmethod
    def lines_of(cls, call: tuple) -> set:
        return set() if call[2] else {call[1]}

    @classmethod
    def held(cls, made: list[tuple], call: tuple, minute: int) -> bool:
        # from the call's instant on: one of its instant, even from its caller, names no
        # line that has it as its call (the pilot's record names no member)
        return super().held(made, call, minute) or any(
            c[2] and cls.ends[c[4]][-2] and call[0] <= c[0] <= minute for c in made)


class BroadWorks(Switch):
    """BroadWorks terminating records: the user whose line rang (userNumber), the number
    dialled, and for a forwarded call the line that forwarded it."""
    fmt = "broadworks"
    # (callingNumber, callingPresentationIndicator, delivers a number)
    callers = (("+17205550101", "Public", True), ("+17205550102", "Private", True),
               ("", "Public", False), ("+17205550103", "Public", True))
    # (answerIndicator, terminationCause, seconds to its end, answered, received,
    #  late refusal)
    ends = (("Yes", "016", 60, True, True, False),
            ("No", "016", 20, False, True, False),           # rang unanswered
            ("No", "019", 20, False, True, False),
            ("No", "018", 20, False, True, False),
            ("No", "026", 15, False, True, False),           # answered elsewhere
            ("Yes-PostRedirection", "016", 30, False, True, False),
            ("No", "017", 0, False, False, False),           # busy at once
            ("No", "017", 7, False, True, True),             # busy after it may have rung
            ("No", "021", 0, False, False, False),
            ("No", "021", 5, False, True, True),
            ("No", "001", 0, False, False, False),           # unallocated
            ("No", "102", 30, False, True, True),            # a late failure (a 408)
            ("No", "027", 30, False, False, False))          # out of order: no phone

    @classmethod
    def record(cls, minute: int, line: str, forwarded: bool, caller: int, end: int,
               ident: int) -> bytes:
        from cdrtrace.synth.writers import BROADWORKS_FIELDS

        number, presentation, _ = cls.callers[caller]
        indicator, cause, seconds, answered, *_ = cls.ends[end]
        start = 60 * minute

        def compact(second: int) -> str:
            return clock(0, second).replace("-", "").replace(" ", "").replace(":", "") + ".000"
        values = {
            "recordId": f"{ident + 1:04d}", "serviceProvider": "sp1", "type": "Normal",
            "userNumber": "+1" + (other(line) if forwarded else line), "groupNumber": "grp1",
            "direction": "Terminating", "callingNumber": number,
            "callingPresentationIndicator": presentation, "calledNumber": line,
            "startTime": compact(start), "userTimeZone": "1-000000",
            "answerIndicator": indicator, "answerTime": compact(start + 5) if answered else "",
            "releaseTime": compact(start + seconds), "terminationCause": cause,
            "originalCalledNumber": line if forwarded else "",
            "redirectingNumber": line if forwarded else "", "chargeIndicator": "y"}
        return ",".join(values.get(name, "") for name in BROADWORKS_FIELDS).encode()


class FreeSwitch(Switch):
    """mod_cdr_csv's example template, both legs of each call written (an A leg naming
    its B leg's uuid), no alerting logged. A feed is held until it shows two legs of a
    call that differ (here, a forwarded call's numbers), and trusted from that call on.
    The legs of a call are written together, when it ends."""
    fmt = "freeswitch"
    together = True
    callers = (("7205550101", True), ("7205550102", True), ("anonymous", False),
               ("7205550103", True))
    # (hangup_cause, seconds to its end, answered, received, untraceable if named)
    ends = (("NORMAL_CLEARING", 60, True, True, False),
            ("ORIGINATOR_CANCEL", 9, False, True, False),
            ("NO_ANSWER", 20, False, True, False),
            ("NO_USER_RESPONSE", 20, False, True, False),
            ("USER_BUSY", 0, False, False, False),
            ("USER_BUSY", 8, False, True, True),              # a late refusal
            ("CALL_REJECTED", 6, False, True, True),
            ("NORMAL_CLEARING", 12, False, True, True),       # unanswered: it may have rung
            ("NORMAL_CLEARING", 0, False, False, False),      # over within its first second
            ("UNALLOCATED_NUMBER", 0, False, False, False),
            ("RECOVERY_ON_TIMER_EXPIRE", 30, False, True, True),   # a late failure (a 408)
            ("PROGRESS_TIMEOUT", 30, False, False, False))         # nothing heard: no phone

    @classmethod
    def records(cls, minute: int, line: str, forwarded: bool, caller: int, end: int,
                ident: int) -> list[bytes]:
        number, _ = cls.callers[caller]
        cause, seconds, answered, *_ = cls.ends[end]

        def leg(uuid: str, bleg: str, destination: str) -> bytes:
            return b",".join(b'"' + f.encode() + b'"' for f in (
                "Caller", number, destination, "public", clock(minute),
                clock(minute, 5) if answered else "", clock(minute, seconds), str(seconds),
                str(seconds - 5) if answered else "0", cause, uuid, bleg, "", "PCMU", "PCMU"))
        return [leg(f"a-{ident}", f"b-{ident}", line),
                leg(f"b-{ident}", "", other(line) if forwarded else line)]

    @classmethod
    def held(cls, made: list[tuple], call: tuple, minute: int) -> bool:
        shown = [c[0] for c in made if c[2]]
        return not shown or min(shown) > call[0]


def other(line: str) -> str:
    return LINES[1 - LINES.index(line)]


def clock(minute: int, second: int = 0) -> str:
    minute, second = minute + second // 60, second % 60
    return f"2026-03-02 {10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}"


# (dialled line, forwarded, caller, end, minutes after the call before: 0 begins it at the
# same instant, as whole-second CDR times tie two calls, and whether such a call is from
# the caller before: one call's records, as a ring group's phones each have one)
calls = st.lists(st.tuples(st.sampled_from(LINES), st.booleans(), st.integers(0, 3),
                           st.integers(0, 99), st.sampled_from((2, 0, 2)), st.booleans()),
                 min_size=1, max_size=24)
# (line, minute; whether the *57 is made instead half a minute after call minute % len(calls)
# began, to resolve to an instant several calls may share; whether it is made before the
# second file is read)
traces = st.lists(st.tuples(st.sampled_from(LINES), st.integers(0, 34), st.booleans(),
                            st.booleans()), min_size=1, max_size=10)


def expected(switch, made: list[tuple], line: str, minute: int, keep: int, traced: set) -> str:
    """The outcome by the rules; 'refused' for a trace the store refuses. made: (minute,
    dialled line, forwarded, caller, end) of every call, the caller and end indices into
    the switch's tables. traced: (line, minute, caller) of each call a trace named."""
    received = sorted((c for c in made if switch.ends[c[4]][-2] and line in switch.lines_of(c)),
                      reverse=True)
    # the newest `keep`, and every call of the keep-th's instant
    held = [c for c in received if len(received) <= keep or c[0] >= received[keep - 1][0]]
    candidates = [c for c in held if c[0] <= minute]      # begun at :00, *57 at :30
    if not candidates:
        return "refused" if len(held) >= keep else "no_call"
    tied = [c for c in candidates if c[0] == candidates[0][0]]
    if len({c[3] for c in tied}) > 1:
        return "untraceable"               # two callers at the same instant: neither named
    # one caller's calls of an instant are one call, named by a record that surely rang
    newest = ([c for c in tied if not switch.ends[c[4]][-1]] or tied)[0]
    if (switch.ends[newest[4]][-1] or not switch.callers[newest[3]][-1]
            or switch.held(made, newest, minute)):
        return "untraceable"
    if (line, newest[0], newest[3]) in traced:
        return "already_traced"
    traced.add((line, newest[0], newest[3]))
    return "success"


def contested(switch, made: list[tuple], line: str, minute: int, caller: int, at: int) -> bool:
    """Whether a success no longer counts toward action: a call received on the line,
    from another number or none, began between the call it named (its instant included)
    and its activation. Such a call read only after the trace showed the named call was
    not the last; one read before it would have been named (or left the trace
    untraceable), so this holds for no trace made on every call."""
    number = switch.callers[caller][0]
    return any(switch.ends[c[4]][-2] and line in switch.lines_of(c) and minute <= c[0] <= at
               and switch.callers[c[3]][0] != number for c in made)


@pytest.mark.parametrize("switch", [Asterisk, Kamailio, Cucm, CucmHunt, BroadWorks, FreeSwitch],
                         ids=lambda s: s.__name__.lower())
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=calls, traces=traces, batch=st.integers(1, 5), shuffle=st.randoms(use_true_random=False),
       keep=st.sampled_from((4, 2)), chunk=st.sampled_from((4 << 20, 256, 1024)),
       split=st.integers(0, 24), native=st.sampled_from(("all", "index", "none")))
def test_a_trace_names_the_call_the_rules_name(tmp_path_factory, switch, calls, traces, batch,
                                              shuffle, keep, chunk, split, native):
    folder = tmp_path_factory.mktemp("rules")
    saved = os.environ.get("CDRTRACE_INDEX_WRITER")
    if native == "none":     # the index written through py-lmdb, traces by the reference
        os.environ["CDRTRACE_INDEX_WRITER"] = "python"
    store = cdrtrace.open(folder / "store", create=True, keep=keep)    # the default, and fewer
    if native == "index":
        store._tracer.native = False    # the index written in C, traces by the reference
    try:
        made, minute = [], 0
        for line, forwarded, caller, end, gap, again in calls:
            minute += gap if made else 0
            caller = made[-1][3] if made and not gap and again else caller % len(switch.callers)
            made.append((minute, line, forwarded, caller, end % len(switch.ends)))
        order = list(range(len(made)))
        shuffle.shuffle(order)                       # calls in any order, and their records
        first = split % (len(made) + 1)              # the calls of a first file, traces, the rest
        traced: set = set()
        activated: dict = {}                         # each call traced -> its trace's minute
        for n, part in enumerate((order[:first], order[first:])):
            if part:
                records = [r for i in part for r in switch.records(*made[i], i)]
                if not switch.together:
                    shuffle.shuffle(records)
                (folder / f"part{n}").mkdir()
                cdrtrace.ingest(store, [switch.write(folder / f"part{n}", records)],
                                fmt=switch.fmt, batch_pairs=batch,
                                chunk_bytes=chunk)   # a whole file at once, or a few records a batch
            read = [made[i] for i in order[:first]] if n == 0 else made
            for line, minute, after_a_call, early in traces:
                if early != (n == 0):
                    continue
                minute = made[minute % len(made)][0] if after_a_call else minute
                at = clock(minute, 30).replace(" ", "T") + "Z"
                named = set(traced)
                want = expected(switch, read, line, minute, keep, traced)
                activated.update(dict.fromkeys(traced - named, minute))
                if want == "refused":
                    with pytest.raises(TraceError, match="no longer held"):
                        store.trace(line, at=at)
                    continue
                got = store.trace(line, at=at)
                assert got.outcome.value == want, (line, at, n)
        store.note_later_calls()     # as the next ingest does: every trace checked once
        for line in LINES:
            counts: dict[str, int] = {}
            for traced_line, call_minute, caller in traced:
                if traced_line == line and not contested(switch, made, traced_line, call_minute,
                                                         caller, activated[traced_line, call_minute, caller]):
                    number = switch.callers[caller][0]
                    counts[number] = counts.get(number, 0) + 1
            progress = store.status(line).progress
            assert sorted(p.traced_calls for p in progress) == sorted(counts.values()), line
            assert not any(number in repr(progress) for number in counts)   # R7
    finally:
        store.close()
        if saved is None:
            os.environ.pop("CDRTRACE_INDEX_WRITER", None)
        else:
            os.environ["CDRTRACE_INDEX_WRITER"] = saved


def test_the_model_reads_the_rules():
    """The model itself, on cases the rules spell out."""
    answered, busy_at_once, late_busy, anonymous = (0, 0), (0, 3), (0, 4), (2, 0)
    one = [(0, LINES[0], False, *answered)]
    assert expected(Asterisk, one, LINES[0], 0, 4, set()) == "success"
    assert expected(Asterisk, one, LINES[1], 0, 4, set()) == "no_call"
    forwarded = [(0, LINES[0], True, *answered)]
    assert [expected(Asterisk, forwarded, line, 3, 4, set()) for line in LINES] == [
        "success", "success"]
    masked = one + [(2, LINES[0], False, *busy_at_once)]
    assert expected(Asterisk, masked, LINES[0], 3, 4, set()) == "success"          # never rang
    for later in (late_busy, anonymous):
        assert expected(Asterisk, one + [(2, LINES[0], False, *later)], LINES[0], 3, 4,
                        set()) == "untraceable"
    full = [(2 * i, LINES[0], False, *answered) for i in range(1, 5)]
    assert expected(Asterisk, full, LINES[0], 1, 4, set()) == "refused"
    traced: set = set()
    assert [expected(Asterisk, one, LINES[0], 5, 4, traced) for _ in range(2)] == [
        "success", "already_traced"]
    # CUCM: a call to the hunt pilot that rang holds the line's older call; one busy at
    # once (it rang nothing) or begun after the *57 does not (the feed trusted from 0)
    cleared, busy = 3, 5
    trusted = [(0, LINES[1], False, 0, cleared), (2, LINES[0], False, *answered)]
    for hunt, minute, want in (((4, LINES[1], True, 0, cleared), 5, "untraceable"),
                               ((4, LINES[1], True, 0, busy), 5, "success"),
                               ((6, LINES[1], True, 0, cleared), 5, "success")):
        assert expected(CucmHunt, trusted + [hunt], LINES[0], minute, 4, set()) == want
    assert expected(CucmHunt, trusted + [(4, LINES[1], True, 0, cleared)], LINES[1], 5, 4,
                    set()) == "untraceable"           # its own last call is older
    # Kamailio: a busy that rang (a user who rejected the ringing call) masks, at once not
    for end, want in ((8, "success"), (7, "no_call")):
        assert expected(Kamailio, [(2, LINES[0], False, 0, end)], LINES[0], 3, 4, set()) == want
    # one instant: two callers name neither; one caller's records are one call, named by
    # the one that rang (a late refusal beside it), traced once
    tie = [(2, LINES[0], False, 0, 0), (2, LINES[0], False, 1, 0)]
    assert expected(Asterisk, tie, LINES[0], 3, 4, set()) == "untraceable"
    assert expected(Asterisk, tie[:1] + [(2, LINES[0], False, 1, 3)], LINES[0], 3, 4,
                    set()) == "success"                       # the other never rang
    traced = set()
    same = [(2, LINES[0], False, 0, 4), (2, LINES[0], False, 0, 1)]
    assert [expected(Asterisk, same, LINES[0], 3, 4, traced) for _ in range(2)] == [
        "success", "already_traced"]
    assert expected(Asterisk, same[:1], LINES[0], 3, 4, set()) == "untraceable"
    # the keep-th's instant is held whole: a trace resolving to it sees both callers
    later = [(m, LINES[0], False, 0, 0) for m in (4, 6, 8)]
    assert expected(Asterisk, tie + later, LINES[0], 3, 4, set()) == "untraceable"
    assert expected(Asterisk, tie + later + [(10, LINES[0], False, 0, 0)], LINES[0], 3, 4,
                    set()) == "refused"
    # a hunt call of the instant holds the line, even from its caller
    hunted = trusted + [(4, LINES[0], False, 0, 0), (4, LINES[1], True, 0, cleared)]
    assert expected(CucmHunt, hunted, LINES[0], 5, 4, set()) == "untraceable"
    assert expected(Kamailio, [(2, LINES[0], False, 1, 0)], LINES[0], 3, 4, set()) == "success"
