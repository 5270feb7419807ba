"""The Call Identification Center's commands: identifying, each needs an analyst or
operator identity and is audited."""
from __future__ import annotations

import json
import os
import sys

from ..errors import CdrTraceError
from ..parsing.timezones import format_utc
from ..store import private
from .common import emit, open_store


def cmd_last_calls(args):
    calls = open_store(args, readonly_index=True).last_calls(args.line, analyst=args.analyst)
    rows = [f"{c['start']}  {c['calling'] or '(none)':>16}  {c['presentation']:<11} "
            f"{c['disposition']:<10} {c['indexed_as']}" for c in calls]
    emit(args, calls, "\n".join(rows) or "no calls held for this line")


def cmd_directory(args):
    rows = open_store(args).import_directory(args.file, operator=args.operator)
    emit(args, {"rows": rows, "file": args.file}, f"directory replaced: {rows:,} subscribers")


def cmd_disclose(args):
    authority = {"kind": args.kind, "reference": args.reference, "agency": args.agency,
                 "officer": args.officer, "case_number": args.case_number}
    records = open_store(args).disclose(authority, analyst=args.analyst, trace_ids=args.trace,
                                    line=args.line)
    text = "\n".join(
        f"{r['trace_id']}  line {r['line']}  call {format_utc(r['call']['start_us'])}  "
        f"from {r['call']['calling']} ({r['call']['presentation']})"
        + (f"  {r['enrichment']['name']}, {r['enrichment']['address']}" if r["enrichment"] else "")
        for r in records) or "no successful traces to disclose"
    emit(args, records, text)


def cmd_case(args):
    store = open_store(args)
    if args.action == "open":
        if not args.line or not args.origin:
            raise CdrTraceError("case open needs LINE and --origin")
        case = store.open_case(args.line, args.origin, agency=args.agency, officer=args.officer,
                               case_number=args.case_number, analyst=args.analyst,
                               waive_reason=args.waive, request_id=args.request, feed=args.feed)
        emit(args, case, f"{case['case_id']} opened: line {case['line']}, origin "
                          f"{case['origin']}, {case['agency']} case {case['case_number']}"
                          + ("  (threshold waived)" if case["waiver"] else ""))
    elif args.action == "report":
        if not args.line or not args.out:
            raise CdrTraceError("case report needs the case id and --out FILE.pdf")
        pdf = store.case_report(args.line, analyst=args.analyst)
        try:
            with private.open_file(args.out, "wb") as f:
                f.write(pdf)
        except CdrTraceError:
            raise                   # a file it must not write: says why
        except OSError as exc:
            raise CdrTraceError(f"cannot write {args.out}: {exc.strerror}") from None
        emit(args, {"case_id": args.line, "out": args.out},
             f"case report {args.line} written to {args.out} (private; audited)")
    elif args.action == "queue":
        queued, whose = store.request_queue(analyst=args.analyst), _switch_of(store)
        emit(args, queued, "\n".join(
            f"{r['request_id']}  {r['line']}{whose(r)}  {r['label']} = {r['origin']}  requested "
            f"{format_utc(r['requested_us'])} by {r['requested_by']}" for r in queued)
            or "no requests waiting")
    elif args.action == "close-request":
        if not args.line or not args.reason:
            raise CdrTraceError("case close-request needs the request id and --reason")
        request = store.close_request(args.line, args.reason, analyst=args.analyst)
        emit(args, request, f"{request['request_id']} closed: {request['reason']}")
    elif args.action == "show":
        if not args.line:
            raise CdrTraceError("case show needs the case id")
        case = store.case(args.line, analyst=args.analyst)
        text = (f"{case['case_id']}: line {case['line']}{_switch_of(store)(case)}, origin {case['origin']}, "
                f"{case['agency']} case {case['case_number']} (officer {case['officer']})")
        for t in case["timeline"]:
            text += f"\n  call {t['call_time']}  traced {t['trace_time']}  {t['trace_id']}  {t['outcome']}"
        emit(args, case, text)
    else:
        cases, whose = store.cases(analyst=args.analyst), _switch_of(store)
        emit(args, cases, "\n".join(
            f"{c['case_id']}  {c['line']}{whose(c)}  {c['origin']}  {c['agency']}  {c['case_number']}"
            + ("  waived" if c["waiver"] else "") for c in cases) or "no cases")


def _switch_of(store):
    """How a request or case of an extension switches number alike names whose it is, by
    its feed's name (" of feed east"); nothing for one of an E.164 line."""
    with store.envs.read() as txn:
        names = store.catalog.feed_names(txn)
    return lambda item: "" if item.get("feed") is None else \
        f" of feed {names.get(item['feed'], item['feed'])}"


def cmd_purge(args):
    result = open_store(args).purge(operator=args.operator, older_than_days=args.older_than)
    emit(args, result, f"purged {result['traces']:,} trace records activated before "
                        f"{result['before']}")


def cmd_audit(args):
    store = open_store(args)
    if args.action == "verify":
        points = [point for path in args.checkpoint for point in _checkpoints(path)]
        count = store.audit_verify(checkpoints=points)
        emit(args, {"entries": count, "verified": True, "checkpoints": len(points)},
              f"audit log verified: {count:,} entries, chain intact"
              + (f", extends all {len(points)} checkpoints" if points else ""))
        return
    if args.action == "checkpoint":
        target = args.to or store.config["audit_checkpoints"]
        if not target:
            raise CdrTraceError("name where checkpoints go: --to FILE (outside the store) or "
                                "--to syslog, or set audit_checkpoints at init")
        point = store.audit_checkpoint()
        line = json.dumps(point, sort_keys=True)
        if target == "syslog":
            import syslog

            syslog.openlog("cdrtrace", 0, syslog.LOG_AUTH)
            syslog.syslog(syslog.LOG_NOTICE, f"audit checkpoint {line}")
        else:
            try:
                with open(target, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise CdrTraceError(f"cannot append to {target}: {exc.strerror}") from None
        emit(args, point, f"audit checkpoint: entry {point['seq']}, {point['hash']} -> {target}")
        return
    lines = "".join(json.dumps(e, sort_keys=True) + "\n"
                    for e in store.audit_export(operator=args.operator))
    if args.out:
        try:
            with private.open_file(args.out, "w", encoding="utf-8") as f:
                f.write(lines)
        except CdrTraceError:
            raise                   # a file it must not write: says why
        except OSError as exc:
            raise CdrTraceError(f"cannot write {args.out}: {exc.strerror}") from None
    else:
        sys.stdout.write(lines)


def cmd_report(args):
    from ..reports import analytics

    store = open_store(args)
    if args.name == "trace-table":
        return _export_trace_table(args, store)
    if args.name == "calls":
        if not args.line:
            raise CdrTraceError("the calls report needs --line")
        result = store.archived_calls(args.line, analyst=args.analyst, origin=args.origin,
                                      days=args.days)
        return _print_table(args, result)
    if args.name == "timeline":
        if not args.line or not args.origin:
            raise CdrTraceError("the timeline report needs --line and --origin")
        return _print_table(args, store.timeline(args.line, args.origin, analyst=args.analyst))
    table = store.trace_columns(analyst=args.analyst, columns=analytics.REPEAT_COLUMNS)
    if args.name == "repeat-origins":
        result = store.named(analytics.repeat_origins(table, store.config["threshold"],
                                                      args.min_calls))
    else:
        result = store.named(analytics.hot_origins(table, args.min_lines))
    _print_table(args, result)


def _export_trace_table(args, store):
    """Every trace as Parquet (packed numbers; identifying, audited), for Spark or any
    Parquet engine: docs/formats.md, "The call archive and the trace table"."""
    if not args.out:
        raise CdrTraceError("the trace-table export needs --out FILE.parquet")
    import pyarrow.parquet as pq

    table = store.trace_table(analyst=args.analyst)
    try:
        with private.open_file(args.out, "wb") as sink:     # private before the first byte
            pq.write_table(table, sink, compression="zstd")
    except CdrTraceError:
        raise                   # a file it must not write: says why
    except OSError as exc:
        raise CdrTraceError(f"cannot write {args.out}: {exc.strerror}") from None
    emit(args, {"traces": table.num_rows, "out": args.out},
         f"{table.num_rows:,} traces written to {args.out}")


def _print_table(args, result):
    if args.csv:
        import pyarrow.csv as pacsv

        buffer = __import__("io").BytesIO()
        pacsv.write_csv(result, buffer)
        sys.stdout.write(buffer.getvalue().decode())
        return
    from ..reports.analytics import plain_rows

    rows = plain_rows(result)
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in result.column_names}
    text = "  ".join(c.ljust(widths[c]) for c in result.column_names)
    for r in rows:
        text += "\n" + "  ".join(str(r[c]).ljust(widths[c]) for c in result.column_names)
    emit(args, rows, text)


def _checkpoints(path: str) -> list[dict]:
    """The checkpoints a file (or a syslog extract) holds, one JSON object per line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CdrTraceError(f"cannot read checkpoints {path}: {exc}") from None
    points = []
    for n, line in enumerate(lines, 1):
        text = line[line.find("{"):] if "{" in line else ""
        try:
            point = json.loads(text)
        except ValueError:
            raise CdrTraceError(f"{path} line {n}: not a checkpoint") from None
        points.append(point)
    if not points:      # emptied, or the wrong file: it proves nothing, and must not pass
        raise CdrTraceError(f"{path} holds no checkpoint: the log cannot be proved against it")
    return points
