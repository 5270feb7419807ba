"""The customer's commands: trace (*57), status and request-action. Their output never
names a caller."""
from __future__ import annotations

import os

from ..errors import CdrTraceError
from ..store import private
from .common import emit, open_store


def cmd_trace(args):
    result = open_store(args, readonly_index=True).trace(args.line, at=args.at, wait=args.wait,
                                                         feed=args.feed)
    emit(args, result.to_dict(),
          f"{result.trace_id}  {result.outcome.value}  [{result.announcement_id}] "
          f"{result.announcement}")


def cmd_status(args):
    store = open_store(args, readonly_index=True)
    status = store.status(args.line, args.feed)
    lines = [f"line {status.line}: {len(status.traces)} trace(s)"]
    for t in status.traces:
        lines.append(f"  {t['trace_id']}  activated {t['activated_at']}  "
                     f"call {t['call_time'] or '-'}  {t['outcome']}")
    for p in status.progress:
        request = p.request
        lines.append(f"  {p.label}: {p.counted()}"
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
    if args.pdf or args.html:
        import time

        from ..documents.trace_log import customer_log
        from ..parsing.timezones import format_utc

        page = customer_log(status, store.carrier, store.config["zone"],
                            format_utc(time.time_ns() // 1000))
        _write(args.pdf, page.pdf_bytes(), personal=True)
        _write(args.html, page.html_text().encode(), personal=True)
    emit(args, status.to_dict(), "\n".join(lines))


def _write(path: str | None, data: bytes, personal: bool = False) -> None:
    """A document to path. A customer's trace log (personal: the line and the dates of
    its calls) is written as callers' data is (store.private.open_file): never through a
    link another user planted, nor into their file; the public guide as any file."""
    if path:
        try:
            with private.open_file(path, "wb") if personal else open(path, "wb") as f:
                f.write(data)
        except CdrTraceError:
            raise                   # a file it must not write: says why
        except OSError as exc:
            raise CdrTraceError(f"cannot write {path}: {exc.strerror}") from None


def cmd_guide(args):
    from ..documents.trace_log import guide

    if not args.pdf and not args.html:
        raise CdrTraceError("guide needs --pdf FILE or --html FILE")
    carrier = open_store(args, readonly_index=True).carrier if (
        args.db or os.environ.get("CDRTRACE_DB")) else {}
    page = guide(carrier)
    _write(args.pdf, page.pdf_bytes())
    _write(args.html, page.html_text().encode())
    emit(args, {"pdf": args.pdf, "html": args.html}, "guide written")


def cmd_request_action(args):
    request = open_store(args).request_action(args.line, args.origin, by=args.by,
                                              feed=args.feed)
    emit(args, request, f"{request['request_id']}: your request for action against "
                        f"{request['label']} is recorded; the carrier's Call Identification "
                        "Center will follow up")
