"""The pure-Python twin's reading of a record's end: dispositions by switch vocabulary
(Asterisk's words, FreeSWITCH's cause names, Q.850 causes), and whether a call that was
refused or failed may have rung the line first (a late refusal or failure)."""
from __future__ import annotations

from .formats import LATE_REFUSAL_US, Disposition

DISPOSITIONS = {
    b"ANSWERED": Disposition.ANSWERED,
    b"NO ANSWER": Disposition.NO_ANSWER,
    b"CANCEL": Disposition.CANCELLED,
    b"BUSY": Disposition.BUSY,
    b"FAILED": Disposition.FAILED,
    b"CONGESTION": Disposition.CONGESTION,
    b"UNKNOWN": Disposition.UNKNOWN,
}


Q850_NAMES = {b"ORIGINATOR_CANCEL": Disposition.CANCELLED, b"NO_ANSWER": Disposition.NO_ANSWER,
              b"NO_USER_RESPONSE": Disposition.NO_ANSWER,
              # it rang: another phone of the group (or device of the line) answered, or
              # picked the call up
              b"LOSE_RACE": Disposition.ANSWERED_ELSEWHERE,
              b"PICKED_OFF": Disposition.ANSWERED_ELSEWHERE,
              # unanswered: its own ring time (leg_timeout) ran out, as NO_ANSWER is the call's
              b"ALLOTTED_TIMEOUT": Disposition.NO_ANSWER,
              b"USER_BUSY": Disposition.BUSY,
              b"CALL_REJECTED": Disposition.REJECTED,
              b"UNALLOCATED_NUMBER": Disposition.UNALLOCATED}


# the dispositions of a call that rang the line and was not answered there
RANG_UNANSWERED = (Disposition.NO_ANSWER, Disposition.CANCELLED, Disposition.ANSWERED_ELSEWHERE)


def may_have_rung(logs_alerting: bool, untimed: bool, start: int, end: int) -> bool:
    """A record that shows neither that the line alerted nor that it did not, of a call
    that ended a second or more after it began (or a second or more before: clocks apart),
    or whose record tells no time it lasted (untimed: its end empty, or no end and no
    duration in the layout, as a Kamailio transaction row's one time): the line may have
    rung. Less is a whole-second end in the start's second: it did not."""
    return not logs_alerting and (untimed or abs(end - start) >= LATE_REFUSAL_US)


def late_refusal(disp: Disposition, logs_alerting: bool, untimed: bool, start: int,
                 end: int) -> bool:
    """A busy or rejected call that may have rung (may_have_rung: logs_alerting false is
    no such column, or early media without ringing): the line's user may have refused it
    while it rang, so it may have been received (docs/formats.md)."""
    return (disp in (Disposition.BUSY, Disposition.REJECTED)
            and may_have_rung(logs_alerting, untimed, start, end))


def late_failure(disp: Disposition, reached_none: bool, logs_alerting: bool, untimed: bool,
                 start: int, end: int) -> bool:
    """A call that failed, for a cause that does not say it reached no phone, and may have
    rung (may_have_rung): a phone or proxy that gives up on a ringing call may end it with
    a timeout (408, Q.850 102) or whatever reply its software is set to send (a 5xx, a
    302 to a forwarding target), so it may have been received (docs/trace-rules.md)."""
    return (disp in (Disposition.FAILED, Disposition.CONGESTION) and not reached_none
            and may_have_rung(logs_alerting, untimed, start, end))


# Q.850 causes of a call that reached no phone of the line: no route to the destination,
# subscriber absent, number changed, destination out of order, invalid number format,
# incompatible destination (unallocated, 1, has its own disposition)
CAUSES_REACHING_NO_PHONE = frozenset((3, 20, 22, 27, 28, 88))
# FreeSWITCH's names of those causes, its own USER_NOT_REGISTERED, and PROGRESS_TIMEOUT (no
# ringing nor progress before its timeout)
NAMES_REACHING_NO_PHONE = frozenset((
    b"PROGRESS_TIMEOUT", b"USER_NOT_REGISTERED", b"SUBSCRIBER_ABSENT", b"NO_ROUTE_DESTINATION",
    b"NO_ROUTE_TRANSIT_NET", b"NUMBER_CHANGED", b"INVALID_NUMBER_FORMAT",
    b"DESTINATION_OUT_OF_ORDER", b"INCOMPATIBLE_DESTINATION"))


def q850_name_disposition(name: bytes, answered: bool, alerted: bool):
    if not 0 < len(name) <= 48 or not all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"
                                          for c in name):
        return None
    if answered:
        return Disposition.ANSWERED
    if name == b"NORMAL_CLEARING":
        return Disposition.CANCELLED if alerted else Disposition.UNKNOWN
    return Q850_NAMES.get(name, Disposition.FAILED)


def cause_disposition(cause: int) -> Disposition:
    # 26, non-selected user clearing: it rang, another phone was given the call
    return {18: Disposition.NO_ANSWER, 19: Disposition.NO_ANSWER,
            26: Disposition.ANSWERED_ELSEWHERE, 17: Disposition.BUSY,
            21: Disposition.REJECTED, 1: Disposition.UNALLOCATED}.get(cause, Disposition.FAILED)
