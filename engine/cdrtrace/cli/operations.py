"""Commands that build and run a store: init, ingest (batch and live), stats, feeds,
synth, demo."""
from __future__ import annotations

import os
import sys

from ..errors import CdrTraceError
from ..store.catalog import NO_FEED, held_by
from .common import emit, load_config, open_store, progress_bar


def cmd_init(args):
    from ..parsing import timezones

    settings = {}
    if args.tz is not None:
        timezones.get_zone(args.tz)
        settings["zone"] = args.tz
    if args.country_code is not None:
        if not 1 <= args.country_code <= 999:
            raise CdrTraceError(f"--country-code must be a country calling code, 1 to 999 "
                                f"(not {args.country_code})")
        settings["country_code"] = args.country_code
    if args.audit_key is not None:
        settings["audit_key_file"] = args.audit_key
    if args.audit_checkpoints is not None:
        settings["audit_checkpoints"] = args.audit_checkpoints
    for name in ("retention_days", "archive_retention_days"):   # ranges: check_settings
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.archive is not None:      # refused before a store is made for it
        from ..store.environments import archive_folder

        archive_folder(args.archive)
    store = open_store(args, create=True, **settings)
    if args.archive is not None:      # an existing store without one takes it; another: refused
        store.envs.adopt_archive(args.archive)
    fixed = ("zone", "country_code", "retention_days", "archive_retention_days")
    differ = {k: store.config[k] for k, v in settings.items()
              if k in fixed and store.config[k] != v}
    if differ:      # an existing store keeps the settings it was created with
        raise CdrTraceError(f"{store.path} already exists with " + ", ".join(
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in differ.items())
            + "; a store's zone, country code and retention are set when it is created")
    emit(args, {"store": str(store.path), "config": store.config},
          f"store ready at {store.path}")


def cmd_ingest(args):
    store = open_store(args)
    cfg = load_config(args, store)
    feed = cfg.feed(args.feed) if args.feed else None
    fmt = args.format
    if fmt is not None and fmt != "auto":
        fmt = cfg.format(fmt) if fmt in cfg.dialects else fmt
    from ..ingestion import kafka

    streaming = [name for name in args.sources if kafka.is_kafka(name)]
    if args.follow or streaming:
        return _stream(args, store, fmt, feed)
    from ..ingestion.batch import ingest as run_ingest

    show = progress_bar()
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
    if summary.contested:
        text += (f"\n{summary.contested:,} successful trace(s) contested: a call read now began "
                 "between the call each named and its *57 (`later_call` in its record)")
    if summary.rejects_path:
        text += f"\nrejected records written to {summary.rejects_path}"
    for name in summary.skipped:
        text += f"\nskipped {name}: already ingested (--force to ingest it again)"
    for other in summary.no_calls:
        text += f"\nnot ingested {other['source']}: {other['reason']}"
    for failed in summary.failed:
        text += f"\ncould not read {failed['source']}: {failed['reason']}"
    name = feed.name if feed is not None else NO_FEED
    for held in (_held(f) for f in store.stats()["feeds"] if f["feed"] == name):
        text += "".join(f"\nfeed {name}:{said}" for said in held)
    emit(args, summary.to_dict(), text)
    if summary.failed:     # every other source was ingested; the exit status says not all
        raise CdrTraceError(f"{len(summary.failed)} of {summary.sources + len(summary.failed)} "
                            "source(s) could not be read (named above)")


def set_from_a_thread(event):
    """A signal handler that sets event from a thread of its own. A handler runs in the
    main thread, which may hold the event's lock when the signal comes (inside
    event.wait: a follower between polls); Event.set takes that lock, so called there it
    waited for itself forever, and `ingest --follow` never stopped on SIGTERM. The
    thread waits until the main thread lets go of the lock."""
    import threading

    def handler(signum, frame):
        threading.Thread(target=event.set, name="cdrtrace-stop", daemon=True).start()
    return handler


def _stream(args, store, fmt, feed):
    """ingest --follow FILE | --follow - | kafka://...: run until SIGTERM/SIGINT (or
    --until-idle), logging one line per interval to stderr."""
    import logging
    import signal
    import threading

    from ..ingestion import following, kafka, sqlite
    from ..ingestion import live as stream

    if len(args.sources) != 1:
        raise CdrTraceError("a streaming ingest takes one source: --follow FILE, --follow - "
                            "or kafka://BROKERS/TOPIC?group=NAME")
    if fmt == "auto":
        raise CdrTraceError("a streaming ingest needs --format or --feed (auto reads a whole file)")
    name = args.sources[0]
    if sqlite.is_url(name):
        raise CdrTraceError(f"{name}: an SQLite table is not followed; ingest it again (without "
                            "--follow) to read the rows added since, exactly once")
    options = stream.StreamOptions(
        batch_records=args.batch_records, batch_ms=args.batch_ms,
        cdr_delay_s=args.cdr_delay,
        log_every_s=args.log_every, idle_exit_s=args.until_idle,
        archive_every_s=args.archive_every)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s cdrtrace %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, set_from_a_thread(stop))
    # the format, zone and country resolve as in a batch ingest (ingest.feed_settings)
    common = dict(fmt=fmt, zone=args.tz, country_code=args.country_code, feed=feed,
                  options=options, stop=stop, rejects_path=args.rejects)
    if kafka.is_kafka(name):
        summary = kafka.consume(store, name, **common, archive=args.archive)
    elif name == "-":
        summary = following.stream_stdin(store, **common, archive=args.archive)
    else:
        summary = following.follow(store, name, **common, archive=args.archive)
    emit(args, summary.to_dict(),
          f"records {summary.records:,}  indexed {summary.indexed:,}  rejected {summary.rejected:,}  "
          f"commits {summary.commits:,}  pending traces resolved {summary.resolved:,}  "
          f"seconds {summary.seconds:.2f}")


STALLED = ("  STALLED: its follower stopped; traces of its lines wait until one runs "
           "again (or: cdrtrace feeds --detach FEED --operator NAME, if it is gone for good)")
AHEAD = ("  AHEAD OF THE CLOCK: its zone (--tz) or its switch's clock is wrong, and its "
         "lines' traces are untraceable")
UNLOGGED = ("  NO UNANSWERED CALL LOGGED YET: its calls are untraceable until it logs one (CUCM: "
            "set the cluster's CDR Log Calls with Zero Duration Flag to True; Kamailio's acc "
            "table: set failed_transaction_flag, or ingest missed_calls into the feed too)")


NO_LEGS = ("  NO CALL'S TWO LEGS LOGGED YET: its calls are untraceable until it logs one "
           "(FreeSWITCH: set mod_cdr_csv's legs to ab in cdr_csv.conf.xml, with ${bleg_uuid} "
           "in its template)")


def _held(feed: dict) -> list[str]:
    """What a feed waits for before its calls are named (stats' UNLOGGED, NO_LEGS)."""
    said = {"unconnected_logged_from": UNLOGGED, "legs_logged_from": NO_LEGS}
    return [said[key] for key in held_by(feed)]


def _unconnected(feed: dict) -> str:
    """What stats says of a switch that may leave calls that rang a line unlogged (CUCM,
    Kamailio's transaction rows; FreeSWITCH's A legs alone)."""
    said = ""
    if "unconnected_logged_from" in feed:
        since = feed["unconnected_logged_from"]
        said += UNLOGGED if since is None else f"  unanswered calls logged from {since}"
    if "legs_logged_from" in feed:
        since = feed["legs_logged_from"]
        said += NO_LEGS if since is None else f"  both legs of calls logged from {since}"
    return said


def cmd_stats(args):
    stats = open_store(args, readonly_index=True).stats()
    shared = sum(f["local_lines"] for f in stats["feeds"])
    lines = [f"{f['feed']:<20} {'live' if f['live'] else 'idle'}  records {f['records']:,}  "
             f"records/s {f['records_per_second'] if f['records_per_second'] is not None else '-'}  "
             f"rejected {f['rejected']:,}  "
             f"watermark {f['watermark'] or '-'}  lag {f['lag_seconds'] if f['lag_seconds'] is not None else '-'} s"
             + (STALLED if f["stalled"] else "")
             + (AHEAD if f["ahead_of_clock"] else "") + _unconnected(f)
             + (f"  EXTENSIONS SHARED WITH {shared - 1} OTHER FEED(S): a trace of one names "
                "its feed" if f["local_lines"] and shared > 1 else "")
             + (f"  SEVERAL TENANTS' EXTENSIONS (among them {', '.join(f['tenants'])}): its records name "
                "two or more tenants for lines its switch numbers itself, and traces of such "
                "lines are untraceable (give each tenant's records a feed of their own)"
                if f["tenants_shared"] else "")
             + (f"  holds records back: traces wait {f['learned_delay_seconds']} s"
                if "learned_delay_seconds" in f else "")
             + (f"  HUNT PILOTS WITH NO MEMBERS LISTED ({', '.join(f['hunt_pilots_unlisted'])}): "
                "their calls hold every line of the feed (list each pilot's members in "
                "the feed's hunt_groups)" if f.get("hunt_pilots_unlisted") else "")
             for f in stats["feeds"]]
    lines.append(f"index: {stats['index']['lines']:,} lines, {stats['index']['bytes']:,} bytes")
    emit(args, stats, "\n".join(lines))


def cmd_feeds(args):
    if args.detach:
        resolved = open_store(args).detach_feed(args.detach, operator=args.operator)
        emit(args, {"feed": args.detach, "detached": True, "resolved": resolved},
             f"{args.detach}: detached; {resolved} pending trace{'s' * (resolved != 1)} resolved")
        return
    store = None
    if args.db or os.environ.get("CDRTRACE_DB"):
        store = open_store(args, readonly_index=True)
    cfg = load_config(args, store)
    rows = [feed.describe() for feed in cfg.feeds.values()]
    if store is not None:
        for row in rows:
            row["feed_id"] = store.catalog.known_feed_id(row["feed"])   # None: nothing ingested
    text = "\n".join(
        f"{r['feed']:<20} {r['format']:<16} {r['zone']:<20} +{r['country_code']:<4} "
        f"served {','.join(r['served']) or 'all'}  min ring {r['min_ring_seconds']:g} s"
        for r in rows) or f"no feeds configured ({cfg.path or 'no cdrtrace.toml found'})"
    emit(args, rows, text)


def cmd_synth(args):
    from .. import synth

    truth = synth.write(args.out, args.calls, args.lines, seed=args.seed, fmt=args.format,
                        zone=args.tz, start=args.start, days=args.days,
                        campaigns=args.campaigns, legs=args.legs, unreadable=args.unreadable)
    summary = {"out": args.out, "truth": args.out + ".truth.json", "calls": truth["calls"],
               "campaigns": len(truth["campaigns"])}
    emit(args, summary, f"wrote {truth['calls']:,} calls to {args.out} "
                         f"({len(truth['campaigns'])} planted campaigns in {summary['truth']})")


def cmd_demo(args):
    from .. import demo

    demo.run(json_output=args.json, keep=args.keep)
