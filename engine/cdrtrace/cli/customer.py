"""The customer's commands: trace (*57), status and request-action. Their output never
names a caller."""
from __future__ import annotations

from .common import emit, open_store


def cmd_trace(args):
    result = open_store(args, readonly_index=True).trace(args.line, at=args.at, wait=args.wait)
    emit(args, result.to_dict(),
          f"{result.trace_id}  {result.outcome.value}  [{result.announcement_id}] "
          f"{result.announcement}")


def cmd_status(args):
    status = open_store(args, readonly_index=True).status(args.line)
    lines = [f"line {status.line}: {len(status.traces)} trace(s)"]
    for t in status.traces:
        lines.append(f"  {t['trace_id']}  activated {t['activated_at']}  "
                     f"call {t['call_time'] or '-'}  {t['outcome']}")
    for p in status.progress:
        request = p.request
        lines.append(f"  {p.label}: {p.traced_calls} of {p.threshold} traced calls"
                     + ("  - you may request action" if p.eligible_for_action and not request
                        else "")
                     + (f"  - request {request['request_id']} {request['state'].replace('_', ' ')}"
                        + (f" ({request['reason']})" if request["reason"] else "")
                        if request else ""))
    if status.follow_up:
        f = status.follow_up
        lines.append("  Follow up with " + (f.get("name") or "your carrier")
                     + (f" at {f['follow_up_phone']}" if f.get("follow_up_phone") else "")
                     + (f" ({f['follow_up_hours']})" if f.get("follow_up_hours") else "")
                     + ", with the dates and times of the calls and traces above.")
    emit(args, status.to_dict(), "\n".join(lines))


def cmd_request_action(args):
    request = open_store(args).request_action(args.line, args.origin, by=args.by)
    emit(args, request, f"{request['request_id']}: your request for action against "
                        f"{request['label']} is recorded; the carrier's Call Identification "
                        "Center will follow up")
