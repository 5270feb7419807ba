"""The customer's commands: trace (*57) and status. Their output never names a caller."""
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
        lines.append(f"  {p.label}: {p.traced_calls} of {p.threshold} traced calls"
                     + ("  - you may request action" if p.eligible_for_action else ""))
    emit(args, status.to_dict(), "\n".join(lines))
