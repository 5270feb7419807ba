"""The `cdrtrace` command. Expected failures print one line and exit 2; --json everywhere."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, NoReturn

from ..errors import CdrTraceError
from .common import _OPENED, EXIT_FAILURE

# the formats' names, without loading the parser to list them (a test holds them equal)
FORMATS = ("asterisk", "asterisk-custom", "freeswitch", "cucm", "broadworks", "kamailio",
           "kamailio-acc", "kamailio-dbtext")


class _Parser(argparse.ArgumentParser):
    """Usage errors raise, so main() reports them like any other (one line, or JSON)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class UsageError(CdrTraceError):
    """The command line does not parse."""


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--json, --db and --config, before the command or after it."""
    parser.add_argument("--json", action="store_true", default=default,
                        help="print JSON (errors too)")
    parser.add_argument("--db", default=default, help="store directory (default: $CDRTRACE_DB)")
    parser.add_argument("--config", default=default, help="cdrtrace.toml with feeds and "
                        "dialects, for ingest and feeds (default: $CDRTRACE_CONFIG, or "
                        "cdrtrace.toml in the store)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    _global_options(common, argparse.SUPPRESS)     # after the command: overrides, if given
    parser = _Parser(prog="cdrtrace", description=__doc__)
    _global_options(parser, None)
    parser.set_defaults(json=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("init", parents=[common], help="create a store")
    p.add_argument("--tz", help="the store's zone: times without an offset (trace --at) and "
                   "CDRs of feeds that name none are read in it (default UTC)")
    p.add_argument("--country-code", type=int, help="the country calling code numbers without "
                   "one belong to (default 1, NANP)")
    p.add_argument("--audit-key", help="where the audit log's key is created, outside the "
                   "store (default: beside it, STORE.audit-key)")
    p.add_argument("--audit-checkpoints", help="where `audit checkpoint` appends: a file "
                   "outside the store, or 'syslog'")
    p.add_argument("--archive", metavar="DIR", help="the store's call archive: every ingest "
                   "appends its calls there as Parquet, by day (default: none, or the first "
                   "one an ingest names)")
    p.add_argument("--retention-days", type=float, metavar="DAYS",
                   help="how long trace records are kept before purge removes them (365)")
    p.add_argument("--archive-retention-days", type=float, metavar="DAYS",
                   help="how long the archive's days are kept before purge removes them (90)")
    p.set_defaults(func=("operations", "cmd_init"))

    p = sub.add_parser("ingest", parents=[common], help="ingest CDR files ('-' for stdin)")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="files, directories, globs or '-'; gzip, bzip2, xz and zstd are read as "
                   "is; sqlite:///PATH?table=NAME reads a Kamailio acc table in SQLite")
    p.add_argument("--format", help=f"one of: {', '.join(FORMATS)}; auto; or a configured "
                   "dialect (default: the feed's, else asterisk)")
    p.add_argument("--feed", help="a feed of cdrtrace.toml: its format, zone, country code, "
                   "served lines and minimum ring time")
    p.add_argument("--force", action="store_true", help="ingest files already ingested")
    p.add_argument("--archive", metavar="DIR", help="also append every call to a Parquet "
                   "archive partitioned by day: the store's (default), or, for a store "
                   "without one, from now on its archive")
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
    p.set_defaults(func=("operations", "cmd_ingest"))

    p = sub.add_parser("trace", parents=[common], help="*57: trace the last call to LINE")
    p.add_argument("line")
    p.add_argument("--at", help="activation time, ISO-8601 (default: now); without an "
                   "offset, in the store's zone (refused where its clocks show it twice)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="if a live feed "
                   "has not caught up with the activation time, wait this long before the "
                   "trace is recorded as pending (default 0)")
    p.add_argument("--feed", help="the feed of the switch the *57 was dialled on: an "
                   "extension is traced among its calls (needed once two feeds index "
                   "extensions; an E.164 line is traced among every feed's)")
    p.set_defaults(func=("customer", "cmd_trace"))

    p = sub.add_parser("status", parents=[common], help="a customer's traces and progress")
    p.add_argument("line")
    p.add_argument("--pdf", metavar="FILE", help="also write the printable trace log")
    p.add_argument("--html", metavar="FILE", help="also write it as HTML")
    p.add_argument("--feed", help="the customer's switch's feed (needed for an extension "
                   "two feeds' switches number alike)")
    p.set_defaults(func=("customer", "cmd_status"))

    p = sub.add_parser("last-calls", parents=[common], help="analyst: a line's last calls")
    p.add_argument("line")
    p.add_argument("--analyst", required=True, help="the analyst's identity")
    p.set_defaults(func=("cic", "cmd_last_calls"))

    p = sub.add_parser("directory", parents=[common], help="the subscriber directory (enrichment)")
    p.add_argument("action", choices=["import"])
    p.add_argument("file", help="CSV or Parquet: number, name, address, served")
    p.add_argument("--operator", required=True, help="who imports it (audited)")
    p.set_defaults(func=("cic", "cmd_directory"))

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
    p.set_defaults(func=("cic", "cmd_disclose"))

    p = sub.add_parser("guide", parents=[common],
                       help="the printer-friendly guide to *57, with the carrier's settings")
    p.add_argument("--pdf", metavar="FILE")
    p.add_argument("--html", metavar="FILE")
    p.set_defaults(func=("customer", "cmd_guide"))

    p = sub.add_parser("request-action", parents=[common],
                       help="the customer asks the carrier to act against one origin")
    p.add_argument("line")
    p.add_argument("--origin", required=True, help="the customer's label: 'Caller A'")
    p.add_argument("--by", default="customer", help="who took the request (care agent)")
    p.add_argument("--feed", help="the customer's switch's feed (needed for an extension "
                   "two feeds' switches number alike)")
    p.set_defaults(func=("customer", "cmd_request_action"))

    p = sub.add_parser("case", parents=[common],
                       help="open, show or list CIC cases; the queue of requests for action")
    p.add_argument("action", choices=["open", "show", "list", "queue", "close-request", "report"])
    p.add_argument("line", nargs="?", help="open: the customer's line; show: the case id; "
                   "close-request: the request id")
    p.add_argument("--request", help="open: the request for action this case answers")
    p.add_argument("--reason", help="close-request: why no case is opened (the customer sees it)")
    p.add_argument("--out", help="report: the PDF to write (identifying; audited)")
    p.add_argument("--origin", help="open: 'Caller A' (the customer's label) or a number")
    p.add_argument("--agency")
    p.add_argument("--officer")
    p.add_argument("--case-number")
    p.add_argument("--waive", metavar="REASON", help="open: waive the threshold (threats)")
    p.add_argument("--feed", help="open: the customer's switch's feed (needed for an "
                   "extension two feeds' switches number alike, unless --request names it)")
    p.add_argument("--analyst", required=True)
    p.set_defaults(func=("cic", "cmd_case"))

    p = sub.add_parser("purge", parents=[common], help="remove trace records past retention")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="retention in days (default: the store's retention_days, 365)")
    p.add_argument("--operator", required=True)
    p.set_defaults(func=("cic", "cmd_purge"))

    p = sub.add_parser("audit", parents=[common],
                       help="verify, checkpoint or export the audit log")
    p.add_argument("action", choices=["verify", "checkpoint", "export"])
    p.add_argument("--out", help="export: JSON-lines file, private (default: standard output)")
    p.add_argument("--operator", help="export: who exports it (audited)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                   help="verify: prove the log still extends every checkpoint in FILE")
    p.add_argument("--to", help="checkpoint: append to this file, or 'syslog' (default: the "
                   "store's audit_checkpoints)")
    p.set_defaults(func=("cic", "cmd_audit"))

    p = sub.add_parser("serve", parents=[common],
                       help="the trace service: FastAGI for switches, HTTP for tools")
    p.add_argument("--http", metavar="HOST:PORT", help="the HTTP API (bearer tokens; "
                   "without TLS, loopback only unless --plain-http)")
    p.add_argument("--tls-cert", metavar="PEM", help="the HTTP API over TLS: its "
                   "certificate chain (with --tls-key; SIGHUP reads both again)")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert (mode "
                   "600, or 640 for its group)")
    p.add_argument("--plain-http", action="store_true",
                   help="serve --http without TLS on an address other than loopback (a "
                        "trusted network: bearer tokens cross it in clear text)")
    p.add_argument("--agi", metavar="HOST:PORT", help="Asterisk FastAGI (agi://HOST:PORT/trace)")
    p.add_argument("--agi-allow", action="append", metavar="CIDR",
                   help="networks FastAGI serves (FastAGI has no authentication; "
                        "default loopback only)")
    p.add_argument("--agi-key-file", metavar="FILE",
                   help="keys (one a line, up to 8, each 32 or more letters, digits, - "
                        "or _; the file mode 600), one of which each FastAGI request "
                        "must name: agi://HOST:PORT/trace?key=KEY; SIGHUP reads it again")
    p.add_argument("--workers", type=int, default=1,
                   help="service processes sharing the ports (default 1)")
    p.add_argument("--pin", action="store_true",
                   help="keep each service process on one core (worker i on the i-th core "
                        "it may use; one worker on the core it started on)")
    p.set_defaults(func=("service", "cmd_serve"))

    p = sub.add_parser("token", parents=[common], help="bearer tokens of the trace service")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("name", nargs="?", help="revoke: the token's name")
    p.add_argument("--name", dest="token_name", help="create: the token's name")
    p.add_argument("--role", help="create: switch, care, analyst, legal or operator")
    p.add_argument("--operator", help="who creates or revokes it (audited)")
    p.add_argument("--from-file", metavar="FILE", help="create: install a token another store "
                   "made (a shard's replicas share the router's), read from FILE")
    p.add_argument("--expires-days", metavar="DAYS", type=float,
                   help="create: refuse the token DAYS days from now (default: until revoked)")
    p.set_defaults(func=("service", "cmd_token"))

    p = sub.add_parser("report", parents=[common], help="CIC reports (identifying; audited)")
    p.add_argument("name", choices=["repeat-origins", "hot-origins", "timeline", "calls",
                                    "trace-table"])
    p.add_argument("--analyst", required=True)
    p.add_argument("--line", help="timeline, calls: the customer's line")
    p.add_argument("--origin", help="timeline, calls: the calling number")
    p.add_argument("--min-lines", type=int, default=2, help="hot-origins: lines at least")
    p.add_argument("--days", type=float, help="calls: only the last DAYS days")
    p.add_argument("--min-calls", type=int, default=2,
                   help="repeat-origins: traced calls at least (default 2)")
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument("--out", help="trace-table: the Parquet file to write (for Spark)")
    p.set_defaults(func=("cic", "cmd_report"))

    p = sub.add_parser("stats", parents=[common], help="per feed: records, rejects, watermark, lag")
    p.set_defaults(func=("operations", "cmd_stats"))

    p = sub.add_parser("feeds", parents=[common], help="list the configured feeds")
    p.add_argument("--detach", metavar="FEED", help="a stalled feed whose follower is gone for "
                   "good: its data is complete as ingested (traces waiting for it resolve)")
    p.add_argument("--operator", help="--detach: who says so (audited)")
    p.set_defaults(func=("operations", "cmd_feeds"))

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
    p.set_defaults(func=("operations", "cmd_synth"))

    p = sub.add_parser("demo", parents=[common], help="a day of traffic, *57 traces, reports")
    p.add_argument("--keep", metavar="DIR", help="build the demo store in DIR and keep it")
    p.set_defaults(func=("operations", "cmd_demo"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command: 0 when it did its job; 2 and one line (a JSON object under --json)
    when it could not; 70 for a fault of cdrtrace itself, never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    # numpy's OpenBLAS starts a thread per core at import that spins for about 0.1 s of
    # CPU (3% of a 4 M-record ingest's samples, on the core the commits and the identity
    # use); no command does linear algebra. Set before numpy loads; a user's value wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        args = build_parser().parse_args(argv)
        as_json = bool(args.json)
        module, name = args.func             # the command's module loads only when it runs
        _unread(args, name)
        getattr(importlib.import_module(f".{module}", __name__), name)(args)
    except CdrTraceError as exc:
        return _fail(str(exc), EXIT_FAILURE, as_json)
    except BrokenPipeError:        # the reader went away (| head): not an error
        return 0
    except OSError as exc:         # the machine refused: a full disk, a permission, a path
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return _fail(f"{exc.strerror or exc}{where}", EXIT_FAILURE, as_json)
    except KeyboardInterrupt:
        print("cdrtrace: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:   # noqa: BLE001 - a fault of ours: one line, and say so
        if type(exc).__module__.split(".")[0] == "lmdb":      # the store's engine refused
            return _fail(f"the store failed: {exc}", EXIT_FAILURE, as_json)
        return _fail(f"internal error ({type(exc).__name__}: {exc}); please report it",
                     EXIT_INTERNAL, as_json)
    finally:
        while _OPENED:
            _OPENED.pop().close()
    return 0


EXIT_INTERNAL = 70      # EX_SOFTWARE
READS_CONFIG = {"cmd_ingest", "cmd_feeds"}      # the only ones a --config's feeds serve
OWN_STORE = {"cmd_synth": "writes CDR files (--out), not a store",
             "cmd_demo": "builds a store of its own (--keep DIR keeps it)"}


def _unread(args: argparse.Namespace, name: str) -> None:
    """A global option given to a command that would not read it: a usage error, not a
    silent default (a carrier's settings in a --config that `guide` never read)."""
    if args.config and name not in READS_CONFIG:
        raise UsageError(f"--config names feeds and dialects, which only ingest and feeds "
                         f"read; `{args.command}` reads " + (
                             "none" if name in OWN_STORE else "the store's own cdrtrace.toml"))
    if args.db and name in OWN_STORE:
        raise UsageError(f"--db: `{args.command}` {OWN_STORE[name]}")


def _fail(message: str, code: int, as_json: bool) -> int:
    """Report a failure: one line, whatever the message quotes (a path with a newline)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if as_json:
        print(json.dumps({"error": message, "exit": code}))
    else:
        print(f"cdrtrace: error: {message}", file=sys.stderr)
    return code


__all__ = ["main", "build_parser"]
