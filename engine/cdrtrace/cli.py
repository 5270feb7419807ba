"""The `cdrtrace` command. Expected failures print one line and exit 2; --json everywhere."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import CdrTraceError
from .ingestion.batch import ingest as run_ingest
from .parsing.formats import FORMATS
from .parsing.timezones import format_utc

EXIT_FAILURE = 2


_OPENED: list = []   # stores a command opened; main() closes them


def _store(args, create=False, readonly_index=False, **settings):
    """The store; readonly_index for commands that only read the index (trace, status,
    last-calls, stats): they open it without a write transaction, never waiting for an
    ingest's commit."""
    from .api import Store

    path = args.db or os.environ.get("CDRTRACE_DB")
    if not path:
        raise CdrTraceError("no store given: use --db PATH or set CDRTRACE_DB")
    store = Store(path, create=create, readonly_index=readonly_index, **settings)
    _OPENED.append(store)
    return store


def _emit(args, payload, text: str) -> None:
    print(json.dumps(payload, indent=1) if args.json else text)


def _progress_bar():
    if not sys.stderr.isatty():
        return None

    def show(done: int, size: int | None) -> None:
        if size:
            sys.stderr.write(f"\r  {done / size:6.1%}  {done / 1e6:,.0f} of {size / 1e6:,.0f} MB")
        else:
            sys.stderr.write(f"\r  {done / 1e6:,.0f} MB")
        sys.stderr.flush()

    return show


def cmd_init(args):
    from .parsing import timezones

    settings = {}
    if args.tz is not None:
        timezones.get_zone(args.tz)
        settings["zone"] = args.tz
    if args.country_code is not None:
        if not 1 <= args.country_code <= 999:
            raise CdrTraceError(f"--country-code must be a country calling code, 1 to 999 "
                                f"(not {args.country_code})")
        settings["country_code"] = args.country_code
    store = _store(args, create=True, **settings)
    differ = {k: store.config[k] for k, v in settings.items() if store.config[k] != v}
    if differ:      # an existing store keeps the settings it was created with
        raise CdrTraceError(f"{store.path} already exists with " + ", ".join(
            f"{k} {v}" for k, v in differ.items()) + "; a store's zone and country code are "
            "set when it is created")
    _emit(args, {"store": str(store.path), "config": store.config},
          f"store ready at {store.path}")


def _config(args, store=None):
    from . import config

    return config.load(config.find(args.config, store.path if store else None))


def cmd_ingest(args):
    store = _store(args)
    cfg = _config(args, store)
    feed = cfg.feed(args.feed) if args.feed else None
    fmt = args.format
    if fmt is not None and fmt != "auto":
        fmt = cfg.format(fmt) if fmt in cfg.dialects else fmt
    from .ingestion import kafka

    streaming = [name for name in args.sources if kafka.is_kafka(name)]
    if args.follow or streaming:
        return _stream(args, store, fmt, feed)
    show = _progress_bar()
    summary = run_ingest(store, args.sources, fmt=fmt, zone=args.tz,
                         country_code=args.country_code, rejects_path=args.rejects,
                         progress=show, force=args.force, feed=feed, archive=args.archive,
                         keep_going=len(args.sources) > 1)   # one source: its error alone
    if show:
        sys.stderr.write("\n")
    text = (f"records {summary.records:,}  indexed {summary.indexed:,}  "
            f"rejected {summary.rejected:,}  bytes {summary.bytes:,}  "
            f"seconds {summary.seconds:.2f}  records/s {summary.records_per_second:,.0f}")
    if summary.unreadable:
        text += (f"\n{summary.unreadable:,} (line, call) pair(s) held as unreadable calls: a "
                 "trace reaching one answers untraceable (the rejects fail closed)")
    if summary.switch_traces:
        text += f"\n{summary.switch_traces:,} trace(s) the switch recorded (*57, malicious call id) run"
    if summary.rejects_path:
        text += f"\nrejected records written to {summary.rejects_path}"
    for name in summary.skipped:
        text += f"\nskipped {name}: already ingested (--force to ingest it again)"
    for failed in summary.failed:
        text += f"\ncould not read {failed['source']}: {failed['reason']}"
    _emit(args, summary.to_dict(), text)
    if summary.failed:     # every other source was ingested; the exit status says not all
        raise CdrTraceError(f"{len(summary.failed)} of {summary.sources + len(summary.failed)} "
                            "source(s) could not be read (named above)")


def _stream(args, store, fmt, feed):
    """ingest --follow FILE | --follow - | kafka://...: run until SIGTERM/SIGINT (or
    --until-idle), logging one line per interval to stderr."""
    import logging
    import signal
    import threading

    from .ingestion import kafka
    from .ingestion import live as stream

    if len(args.sources) != 1:
        raise CdrTraceError("a streaming ingest takes one source: --follow FILE, --follow - "
                            "or kafka://BROKERS/TOPIC?group=NAME")
    if fmt == "auto":
        raise CdrTraceError("a streaming ingest needs --format or --feed (auto reads a whole file)")
    name = args.sources[0]
    options = stream.StreamOptions(
        batch_records=args.batch_records, batch_ms=args.batch_ms,
        cdr_delay_s=args.cdr_delay,
        log_every_s=args.log_every, idle_exit_s=args.until_idle,
        archive_every_s=args.archive_every)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s cdrtrace %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # the format, zone and country resolve as in a batch ingest (ingest.feed_settings)
    common = dict(fmt=fmt, zone=args.tz, country_code=args.country_code, feed=feed,
                  options=options, stop=stop, rejects_path=args.rejects)
    if kafka.is_kafka(name):
        summary = kafka.consume(store, name, **common, archive=args.archive)
    elif name == "-":
        summary = stream.stream_stdin(store, **common, archive=args.archive)
    else:
        summary = stream.follow(store, name, **common, archive=args.archive)
    _emit(args, summary.to_dict(),
          f"records {summary.records:,}  indexed {summary.indexed:,}  rejected {summary.rejected:,}  "
          f"commits {summary.commits:,}  pending traces resolved {summary.resolved:,}  "
          f"seconds {summary.seconds:.2f}")


def cmd_trace(args):
    result = _store(args, readonly_index=True).trace(args.line, at=args.at, wait=args.wait)
    _emit(args, result.to_dict(),
          f"{result.trace_id}  {result.outcome.value}  [{result.announcement_id}] "
          f"{result.announcement}")


def cmd_status(args):
    status = _store(args, readonly_index=True).status(args.line)
    lines = [f"line {status.line}: {len(status.traces)} trace(s)"]
    for t in status.traces:
        lines.append(f"  {t['trace_id']}  activated {t['activated_at']}  "
                     f"call {t['call_time'] or '-'}  {t['outcome']}")
    for p in status.progress:
        lines.append(f"  {p.label}: {p.traced_calls} of {p.threshold} traced calls"
                     + ("  - you may request action" if p.eligible_for_action else ""))
    _emit(args, status.to_dict(), "\n".join(lines))


def cmd_last_calls(args):
    calls = _store(args, readonly_index=True).last_calls(args.line, analyst=args.analyst)
    rows = [f"{c['start']}  {c['calling'] or '(none)':>16}  {c['presentation']:<11} "
            f"{c['disposition']:<10} {c['indexed_as']}" for c in calls]
    _emit(args, calls, "\n".join(rows) or "no calls held for this line")


def cmd_stats(args):
    stats = _store(args, readonly_index=True).stats()
    lines = [f"{f['feed']:<20} {'live' if f['live'] else 'idle'}  records {f['records']:,}  "
             f"records/s {f['records_per_second'] if f['records_per_second'] is not None else '-'}  "
             f"rejected {f['rejected']:,}  "
             f"watermark {f['watermark'] or '-'}  lag {f['lag_seconds'] if f['lag_seconds'] is not None else '-'} s"
             for f in stats["feeds"]]
    lines.append(f"index: {stats['index']['lines']:,} lines, {stats['index']['bytes']:,} bytes")
    _emit(args, stats, "\n".join(lines))


def cmd_feeds(args):
    store = None
    if args.db or os.environ.get("CDRTRACE_DB"):
        store = _store(args, readonly_index=True)
    cfg = _config(args, store)
    rows = [feed.describe() for feed in cfg.feeds.values()]
    if store is not None:
        for row in rows:
            row["feed_id"] = store.catalog.known_feed_id(row["feed"])   # None: nothing ingested
    text = "\n".join(
        f"{r['feed']:<20} {r['format']:<16} {r['zone']:<20} +{r['country_code']:<4} "
        f"served {','.join(r['served']) or 'all'}  min ring {r['min_ring_seconds']:g} s"
        for r in rows) or f"no feeds configured ({cfg.path or 'no cdrtrace.toml found'})"
    _emit(args, rows, text)


def cmd_directory(args):
    rows = _store(args).import_directory(args.file, operator=args.operator)
    _emit(args, {"rows": rows, "file": args.file}, f"directory replaced: {rows:,} subscribers")


def cmd_disclose(args):
    authority = {"kind": args.kind, "reference": args.reference, "agency": args.agency,
                 "officer": args.officer, "case_number": args.case_number}
    records = _store(args).disclose(authority, analyst=args.analyst, trace_ids=args.trace,
                                    line=args.line)
    text = "\n".join(
        f"{r['trace_id']}  line {r['line']}  call {format_utc(r['call']['start_us'])}  "
        f"from {r['call']['calling']} ({r['call']['presentation']})"
        + (f"  {r['enrichment']['name']}, {r['enrichment']['address']}" if r["enrichment"] else "")
        for r in records) or "no successful traces to disclose"
    _emit(args, records, text)


def cmd_case(args):
    store = _store(args)
    if args.action == "open":
        if not args.line or not args.origin:
            raise CdrTraceError("case open needs LINE and --origin")
        case = store.open_case(args.line, args.origin, agency=args.agency, officer=args.officer,
                               case_number=args.case_number, analyst=args.analyst,
                               waive_reason=args.waive)
        _emit(args, case, f"{case['case_id']} opened: line {case['line']}, origin "
                          f"{case['origin']}, {case['agency']} case {case['case_number']}"
                          + ("  (threshold waived)" if case["waiver"] else ""))
    elif args.action == "show":
        if not args.line:
            raise CdrTraceError("case show needs the case id")
        case = store.case(args.line, analyst=args.analyst)
        text = (f"{case['case_id']}: line {case['line']}, origin {case['origin']}, "
                f"{case['agency']} case {case['case_number']} (officer {case['officer']})")
        for t in case["timeline"]:
            text += f"\n  call {t['call_time']}  traced {t['trace_time']}  {t['trace_id']}  {t['outcome']}"
        _emit(args, case, text)
    else:
        cases = store.cases(analyst=args.analyst)
        _emit(args, cases, "\n".join(
            f"{c['case_id']}  {c['line']}  {c['origin']}  {c['agency']}  {c['case_number']}"
            + ("  waived" if c["waiver"] else "") for c in cases) or "no cases")


def cmd_purge(args):
    result = _store(args).purge(operator=args.operator, older_than_days=args.older_than)
    _emit(args, result, f"purged {result['traces']:,} trace records activated before "
                        f"{result['before']}")


def cmd_audit(args):
    store = _store(args)
    if args.action == "verify":
        count = store.audit_verify()
        _emit(args, {"entries": count, "verified": True},
              f"audit log verified: {count:,} entries, chain intact")
        return
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in store.audit_entries())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(lines)
    else:
        sys.stdout.write(lines)


def cmd_report(args):
    from .reports import analytics

    store = _store(args)
    if args.name == "calls":
        if not args.line:
            raise CdrTraceError("the calls report needs --line")
        result = store.archived_calls(args.line, analyst=args.analyst, origin=args.origin,
                                      days=args.days)
        return _print_table(args, result)
    table = (store.trace_columns(analyst=args.analyst) if args.name == "timeline" else
             store.trace_columns(analyst=args.analyst, columns=analytics.REPEAT_COLUMNS))
    if args.name == "repeat-origins":
        result = analytics.repeat_origins(table, store.config["threshold"], args.min_calls)
    elif args.name == "hot-origins":
        result = analytics.hot_origins(table, args.min_lines)
    else:
        if not args.line or not args.origin:
            raise CdrTraceError("the timeline report needs --line and --origin")
        result = analytics.timeline(table, store.line(args.line), store.line(args.origin),
                                    store.config["archive_dir"])
    _print_table(args, result)


def _print_table(args, result):
    if args.csv:
        import pyarrow.csv as pacsv

        buffer = __import__("io").BytesIO()
        pacsv.write_csv(result, buffer)
        sys.stdout.write(buffer.getvalue().decode())
        return
    rows = [{k: (str(v) if not isinstance(v, (int, float, bool, str, type(None))) else v)
             for k, v in row.items()} for row in result.to_pylist()]
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in result.column_names}
    text = "  ".join(c.ljust(widths[c]) for c in result.column_names)
    for r in rows:
        text += "\n" + "  ".join(str(r[c]).ljust(widths[c]) for c in result.column_names)
    _emit(args, rows, text)


def cmd_synth(args):
    from . import synth

    truth = synth.write(args.out, args.calls, args.lines, seed=args.seed, fmt=args.format,
                        zone=args.tz, start=args.start, days=args.days,
                        campaigns=args.campaigns, legs=args.legs, unreadable=args.unreadable)
    summary = {"out": args.out, "truth": args.out + ".truth.json", "calls": truth["calls"],
               "campaigns": len(truth["campaigns"])}
    _emit(args, summary, f"wrote {truth['calls']:,} calls to {args.out} "
                         f"({len(truth['campaigns'])} planted campaigns in {summary['truth']})")


def cmd_demo(args):
    from . import demo

    demo.run(json_output=args.json, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--db", help="store directory (default: $CDRTRACE_DB)")
    common.add_argument("--config", help="cdrtrace.toml with feeds and dialects "
                        "(default: $CDRTRACE_CONFIG, or cdrtrace.toml in the store)")
    parser = argparse.ArgumentParser(prog="cdrtrace", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", parents=[common], help="create a store")
    p.add_argument("--tz", help="the store's zone: times without an offset (trace --at) and "
                   "CDRs of feeds that name none are read in it (default UTC)")
    p.add_argument("--country-code", type=int, help="the country calling code numbers without "
                   "one belong to (default 1, NANP)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("ingest", parents=[common], help="ingest CDR files ('-' for stdin)")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="files, directories, globs or '-'; gzip, bzip2, xz and zstd are read as is")
    p.add_argument("--format", help=f"one of: {', '.join(FORMATS)}; auto; or a configured "
                   "dialect (default: the feed's, else asterisk)")
    p.add_argument("--feed", help="a feed of cdrtrace.toml: its format, zone, country code, "
                   "served lines and minimum ring time")
    p.add_argument("--force", action="store_true", help="ingest files already ingested")
    p.add_argument("--archive", metavar="DIR", help="also append every call to a Parquet "
                   "archive partitioned by day (default: the store's archive_dir)")
    p.add_argument("--tz", help="IANA zone of the switch's local times (default: the store's)")
    p.add_argument("--country-code", type=int, help="country code for national numbers")
    p.add_argument("--rejects", help="JSON-lines file for malformed records")
    live = p.add_argument_group("streaming (--follow FILE, --follow -, kafka://BROKERS/TOPIC?group=NAME)")
    live.add_argument("--follow", action="store_true", help="follow the file as the switch "
                      "appends to it, through rotation and truncation ('-': stream stdin)")
    live.add_argument("--batch-records", type=int, default=200_000, metavar="N",
                      help="commit a micro-batch at N records (default 200000) ...")
    live.add_argument("--batch-ms", type=float, default=50.0, metavar="T",
                      help="... or when its oldest record is T ms old (default 50)")
    live.add_argument("--cdr-delay", type=float, metavar="SECONDS", help="how late the switch "
                      "writes a call's CDR (default: the feed's, else 2)")
    live.add_argument("--log-every", type=float, default=10.0, metavar="SECONDS",
                      help="one log line per interval (default 10)")
    live.add_argument("--until-idle", type=float, metavar="SECONDS",
                      help="stop once the source has had nothing new for SECONDS")
    live.add_argument("--archive-every", type=float, default=60.0, metavar="SECONDS",
                      help="with an archive: write its Parquet files at most this often "
                      "(default 60)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("trace", parents=[common], help="*57: trace the last call to LINE")
    p.add_argument("line")
    p.add_argument("--at", help="activation time, ISO-8601 (default: now)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="if a live feed "
                   "has not caught up with the activation time, wait this long before the "
                   "trace is recorded as pending (default 0)")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("status", parents=[common], help="a customer's traces and progress")
    p.add_argument("line")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("last-calls", parents=[common], help="analyst: a line's last calls")
    p.add_argument("line")
    p.add_argument("--analyst", required=True, help="the analyst's identity")
    p.set_defaults(func=cmd_last_calls)

    p = sub.add_parser("directory", parents=[common], help="the subscriber directory (R6)")
    p.add_argument("action", choices=["import"])
    p.add_argument("file", help="CSV or Parquet: number, name, address, served")
    p.add_argument("--operator", required=True, help="who imports it (audited)")
    p.set_defaults(func=cmd_directory)

    p = sub.add_parser("disclose", parents=[common],
                       help="release trace records under a legal authority (audited)")
    p.add_argument("--trace", action="append", help="a trace id (repeatable)")
    p.add_argument("--line", help="every successful trace of this line")
    p.add_argument("--kind", help="subpoena, court_order or law_enforcement_request")
    p.add_argument("--reference", help="the authority's reference")
    p.add_argument("--agency")
    p.add_argument("--officer")
    p.add_argument("--case-number")
    p.add_argument("--analyst", required=True)
    p.set_defaults(func=cmd_disclose)

    p = sub.add_parser("case", parents=[common], help="open, show or list CIC cases")
    p.add_argument("action", choices=["open", "show", "list"])
    p.add_argument("line", nargs="?", help="open: the customer's line; show: the case id")
    p.add_argument("--origin", help="open: 'Caller A' (the customer's label) or a number")
    p.add_argument("--agency")
    p.add_argument("--officer")
    p.add_argument("--case-number")
    p.add_argument("--waive", metavar="REASON", help="open: waive the threshold (threats)")
    p.add_argument("--analyst", required=True)
    p.set_defaults(func=cmd_case)

    p = sub.add_parser("purge", parents=[common], help="remove trace records past retention")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="retention in days (default: the store's retention_days, 365)")
    p.add_argument("--operator", required=True)
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("audit", parents=[common], help="verify or export the audit log")
    p.add_argument("action", choices=["verify", "export"])
    p.add_argument("--out", help="export: JSON-lines file (default: standard output)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", parents=[common], help="CIC reports (identifying; audited)")
    p.add_argument("name", choices=["repeat-origins", "hot-origins", "timeline", "calls"])
    p.add_argument("--analyst", required=True)
    p.add_argument("--line", help="timeline, calls: the customer's line")
    p.add_argument("--origin", help="timeline, calls: the calling number")
    p.add_argument("--min-lines", type=int, default=2, help="hot-origins: lines at least")
    p.add_argument("--days", type=float, help="calls: only the last DAYS days")
    p.add_argument("--min-calls", type=int, default=2,
                   help="repeat-origins: traced calls at least (default 2)")
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("stats", parents=[common], help="per feed: records, rejects, watermark, lag")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("feeds", parents=[common], help="list the configured feeds")
    p.set_defaults(func=cmd_feeds)

    p = sub.add_parser("synth", parents=[common], help="generate realistic CDR traffic")
    p.add_argument("--format", default="asterisk", help=f"one of: {', '.join(FORMATS)}")
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--lines", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tz", default="UTC")
    p.add_argument("--start", default="2026-03-02", help="first day (YYYY-MM-DD)")
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--campaigns", type=int, help="planted harassment campaigns")
    p.add_argument("--legs", type=float, default=0.0, help="asterisk: this fraction of answered "
                   "calls also gets an unanswered ring-group leg (same uniqueid)")
    p.add_argument("--unreadable", type=float, default=0.0, help="asterisk: this fraction of "
                   "records gets a disposition no parser knows (they must fail closed)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("demo", parents=[common], help="a day of traffic, *57 traces, reports")
    p.add_argument("--keep", metavar="DIR", help="build the demo store in DIR and keep it")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CdrTraceError as exc:
        print(f"cdrtrace: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("cdrtrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        while _OPENED:
            _OPENED.pop().close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
