"""cdrtrace.toml: the carrier's feeds (one per switch) and configured CSV dialects.

    [feeds.denver-pbx]
    format = "asterisk"              # a built-in format or a [dialects.NAME]
    zone = "America/Denver"
    country_code = 1
    served = ["+1303", "+1720"]      # only these lines are indexed (optional)
    min_ring_seconds = 0
    cdr_delay_seconds = 2            # live feeds: how late the switch writes a CDR
    [feeds.denver-pbx.hunt_groups]   # Cisco UCM: each hunt pilot's members, the phones it rings
    "2000" = ["3001", "3002"]

    [dialects.acme]                  # a switch that needs configuration, not code
    base = "asterisk"                # optional: start from a built-in format
    columns = ["id", "from", "to", "begin", "connect", "finish", "status", "privacy"]
    header = false                   # true: the first line names the columns
    delimiter = ";"
    quote = '"'
    time = "local"                   # local (YYYY-MM-DD HH:MM:SS) | epoch | compact
    [dialects.acme.fields]           # canonical field -> column
    calling = "from"
    called = "to"
    start = "begin"
    answer = "connect"
    end = "finish"
    disposition = "status"
    presentation = "privacy"
    callid = "id"
    [dialects.acme.dispositions]     # value -> answered, no_answer, cancelled, busy, ...
    OK = "answered"
    [dialects.acme.presentations]    # value -> allowed, restricted, unavailable
    hidden = "restricted"

    [shard]                          # a store that holds one shard of the carrier's lines
    name = "east"
    prefixes = ["+1303", "+1720"]    # only these lines are indexed, from every feed
    partitions = [0, 1]              # Kafka: the CDR topics' partitions this shard reads
    max_lag_seconds = 30             # further behind than this: not ready, no traces
    replica = 0                      # this store is replica 0 of the shard's 2, sharing
    replicas = 2                     # trace evidence with the other on a Kafka topic
    evidence = "kafka://10.0.9.1:9092/cdrtrace-evidence-east"
    evidence_key_file = "/etc/cdrtrace/east-evidence.key"   # the same key on each replica
    [shard.peers.west]               # another shard: the service forwards its lines' traces
    prefixes = ["+1415"]
    replicas = ["http://10.0.2.1:8080", "http://10.0.2.2:8080"]
    token_file = "/etc/cdrtrace/west.token"   # a switch token of west's replicas
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from . import shard_config
from .errors import CdrTraceError, ConfigError
from .evidence.outcomes import ANNOUNCEMENTS
from .parsing import timezones
from .parsing.formats import (
    DK_VOCABULARY,
    FORMATS,
    MAX_COLUMNS,
    PK_VOCABULARY,
    ROLES,
    TIME_COMPACT,
    TIME_EPOCH,
    TIME_LOCAL,
    Disposition,
    Format,
    Presentation,
)
from .parsing.parsers import normalize_number
from .shard_config import Peer, Shard, both_served, check_table  # noqa: F401  (config's names)

TIMES = {"local": TIME_LOCAL, "epoch": TIME_EPOCH, "compact": TIME_COMPACT}
FEED_KEYS = {"format", "zone", "country_code", "served", "min_ring_seconds", "cdr_delay_seconds",
             "hunt_groups"}
DIALECT_KEYS = {"base", "columns", "header", "delimiter", "quote", "time", "fields",
                "dispositions", "presentations", "min_columns", "end_required",
                "lenient_quotes"}
NUMBER, TEXT_LIST, TEXT_TABLE = "a number", "a list of text", "a table of text values"
TYPES: dict[str, Any] = {  # what each key's value must be, checked before it is used
    "format": str, "zone": str, "country_code": int,   # served: checked with its prefixes
    "min_ring_seconds": NUMBER, "cdr_delay_seconds": NUMBER, "base": str,
    "columns": TEXT_LIST, "header": bool, "delimiter": str, "quote": str, "time": str,
    "fields": TEXT_TABLE, "dispositions": TEXT_TABLE, "presentations": TEXT_TABLE,
    "min_columns": int, "end_required": bool, "lenient_quotes": bool}
TYPE_NAMES: dict[Any, str] = {str: "text", int: "a whole number", bool: "true or false"}


def _check_types(path, where: str, spec: dict) -> None:
    for key, value in spec.items():
        if key not in TYPES:
            continue
        want = TYPES[key]
        if want == NUMBER:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif want == TEXT_LIST:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif want == TEXT_TABLE:
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        elif want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, want)
        if not ok:
            raise ConfigError(f"{path}: {where}: {key} must be "
                              f"{TYPE_NAMES.get(want, want)} (not {value!r})")


@dataclasses.dataclass(frozen=True)
class Feed:
    """One switch's CDR stream and how to read it."""

    name: str
    format: Format
    zone: str = "UTC"
    country_code: int = 1
    served: tuple[str, ...] = ()
    min_ring_seconds: float = 0.0
    cdr_delay_seconds: float | None = None   # how late the switch writes a CDR (live feeds)
    # each hunt pilot's members, as configured: the lines its calls may ring unnamed
    # (store.hunts); a pilot not listed may ring any line of the feed
    hunt_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def describe(self) -> dict:
        return {"feed": self.name, "format": self.format.name, "zone": self.zone,
                "country_code": self.country_code, "served": list(self.served),
                "min_ring_seconds": self.min_ring_seconds,
                "cdr_delay_seconds": self.cdr_delay_seconds,
                "hunt_groups": {pilot: list(members) for pilot, members in self.hunt_groups}}


@dataclasses.dataclass(frozen=True)
class Config:
    path: Path | None
    feeds: dict[str, Feed]
    dialects: dict[str, Format]
    roles: dict[str, tuple[str, ...]] | None = None   # role -> OS users and @groups
    carrier: dict[str, Any] | None = None              # the carrier's name, contacts, texts
    shard: Shard | None = None                         # the lines this store holds

    def feed(self, name: str) -> Feed:
        try:
            return self.feeds[name]
        except KeyError:
            where = self.path or "cdrtrace.toml"
            known = ", ".join(self.feeds) or "none"
            raise ConfigError(f"no feed {name!r} in {where} (feeds: {known})") from None

    def format(self, name: str) -> Format:
        return self.dialects.get(name) or FORMATS[name]


def find(explicit: str | None = None, store_path: str | os.PathLike | None = None) -> Path | None:
    """The config file: explicit, $CDRTRACE_CONFIG, or cdrtrace.toml in the store."""
    if explicit or os.environ.get("CDRTRACE_CONFIG"):
        path = Path(explicit or os.environ["CDRTRACE_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"no config file at {path}")
        return path
    if store_path is not None and (Path(store_path) / "cdrtrace.toml").is_file():
        return Path(store_path) / "cdrtrace.toml"
    return None


def load(path: str | os.PathLike | None) -> Config:
    """Read and check a cdrtrace.toml; an absent file is an empty configuration."""
    if path is None:
        return Config(None, {}, {})
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(raw) - {"feeds", "dialects", "roles", "carrier", "shard"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    for section in ("dialects", "feeds"):
        if not isinstance(raw.get(section, {}), dict) or not all(
                isinstance(spec, dict) for spec in raw.get(section, {}).values()):
            raise ConfigError(f"{path}: {section} must be tables ([{section}.NAME])")
    dialects = {name: _dialect(path, name, spec) for name, spec in raw.get("dialects", {}).items()}
    feeds = {name: _feed(path, name, spec, dialects) for name, spec in raw.get("feeds", {}).items()}
    return Config(path, feeds, dialects, _roles(path, raw["roles"]) if "roles" in raw else None,
                  _carrier(path, raw["carrier"]) if "carrier" in raw else None,
                  shard_config.shard(path, raw["shard"]) if "shard" in raw else None)


CARRIER_KEYS = ("name", "follow_up_phone", "follow_up_hours", "law_enforcement_phone",
                "star_code", "announcements")


def _carrier(path, spec: Any) -> dict[str, Any]:
    """[carrier]: the name and contacts the customer is given once they may act."""
    check_table(path, "carrier", spec, CARRIER_KEYS)
    texts = spec.get("announcements", {})
    known = {entry[0] for entry in ANNOUNCEMENTS.values()}
    if not isinstance(texts, dict) or not all(
            isinstance(v, str) and v.strip() and len(v) <= 500 for v in texts.values()):
        raise ConfigError(f"{path}: carrier.announcements must map announcement ids to text")
    if set(texts) - known:
        raise ConfigError(f"{path}: carrier.announcements: unknown id(s) "
                          f"{', '.join(sorted(set(texts) - known))} (ids: {', '.join(sorted(known))})")
    for key, value in spec.items():
        if key != "announcements" and (not isinstance(value, str) or not value.strip()
                                       or len(value) > 200):
            raise ConfigError(f"{path}: carrier.{key} must be text (1 to 200 characters)")
    found: dict[str, Any] = {k: spec[k].strip() for k in CARRIER_KEYS
                             if k in spec and k != "announcements"}
    if texts:
        found["announcements"] = {k: v.strip() for k, v in texts.items()}
    return found


ROLE_NAMES = ("analyst", "legal", "operator")


def _roles(path, spec: Any) -> dict[str, tuple[str, ...]]:
    """[roles]: which operating-system users (and @groups) may act in each role."""
    check_table(path, "roles", spec, ROLE_NAMES, noun="role")
    for role, members in spec.items():
        if not isinstance(members, list) or not all(isinstance(m, str) and m.strip()
                                                    for m in members):
            raise ConfigError(f"{path}: roles.{role} must be a list of user names and "
                              "@group names")
    return {role: tuple(m.strip() for m in spec.get(role, [])) for role in ROLE_NAMES}


def _check_keys(path, where: str, spec: dict, allowed: set) -> None:
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown key(s) {', '.join(sorted(unknown))}")
    _check_types(path, where, spec)


def _feed(path, name: str, spec: dict, dialects: dict) -> Feed:
    where = f"feeds.{name}"
    _check_keys(path, where, spec, FEED_KEYS)
    fmt_name = spec.get("format", "asterisk")
    fmt = dialects.get(fmt_name) or FORMATS.get(fmt_name)
    if fmt is None:
        known = ", ".join([*FORMATS, *dialects])
        raise ConfigError(f"{path}: {where}: unknown format {fmt_name!r} (known: {known})")
    zone = spec.get("zone", "UTC")
    try:
        timezones.get_zone(zone)
    except CdrTraceError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None
    served = spec.get("served", [])
    if not shard_config.prefixes_ok(served):
        raise ConfigError(f"{path}: {where}: served must be a list of number prefixes "
                          "such as \"+1303\"")
    country_code = spec.get("country_code", 1)
    ring = spec.get("min_ring_seconds", 0)
    if not isinstance(country_code, int) or not 1 <= country_code <= 999:
        raise ConfigError(f"{path}: {where}: country_code must be 1 to 999")
    if not isinstance(ring, (int, float)) or ring < 0:
        raise ConfigError(f"{path}: {where}: min_ring_seconds must be a number >= 0")
    delay = spec.get("cdr_delay_seconds")
    if delay is not None and (not isinstance(delay, (int, float)) or isinstance(delay, bool)
                              or delay < 0):
        raise ConfigError(f"{path}: {where}: cdr_delay_seconds must be a number >= 0")
    return Feed(name, fmt, zone, country_code, tuple(served), float(ring),
                None if delay is None else float(delay),
                _hunt_groups(path, where, spec.get("hunt_groups", {}), country_code))


def _hunt_groups(path, where: str, spec: Any, country_code: int) -> tuple:
    """[feeds.NAME.hunt_groups]: each hunt pilot's members, numbers the feed's switch
    writes (docs/trace-rules.md, "A call to a hunt group")."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: {where}: hunt_groups must be a table of hunt pilots, "
                          "each a list of its members' numbers (\"2000\" = [\"3001\", \"3002\"])")
    groups = []
    for pilot, members in spec.items():
        if (not isinstance(members, list) or not members
                or not all(isinstance(m, str) for m in members)):
            raise ConfigError(f"{path}: {where}.hunt_groups: {pilot!r} must be a non-empty "
                              f"list of its members' numbers (not {members!r})")
        bad = [n for n in (pilot, *members) if not normalize_number(n, country_code)]
        if bad:
            raise ConfigError(f"{path}: {where}.hunt_groups: {', '.join(map(repr, bad))} "
                              "is not a number a line can have")
        groups.append((pilot, tuple(members)))
    return tuple(groups)


def _dialect(path, name: str, spec: dict) -> Format:
    where = f"dialects.{name}"
    _check_keys(path, where, spec, DIALECT_KEYS)
    if name in FORMATS:
        raise ConfigError(f"{path}: {where}: {name!r} is a built-in format; choose another name")
    base = FORMATS.get(spec.get("base", ""))
    if "base" in spec and base is None:
        raise ConfigError(f"{path}: {where}: unknown base format {spec['base']!r}")
    fields = spec.get("fields", {})
    bad = set(fields) - set(ROLES)
    if bad:
        raise ConfigError(f"{path}: {where}.fields: unknown field(s) {', '.join(sorted(bad))} "
                          f"(fields: {', '.join(ROLES)})")
    roles = {**(base.roles if base else {}), **fields}
    for needed in ("calling", "called", "start"):
        if needed not in roles:
            raise ConfigError(f"{path}: {where}.fields: needs {needed}")
    header = spec.get("header", base.columns is None if base else False)
    columns = spec.get("columns", base.columns if base else None)
    if not header and not columns:
        raise ConfigError(f"{path}: {where}: give columns, or header = true")
    time = spec.get("time")
    if time is not None and time not in TIMES:
        raise ConfigError(f"{path}: {where}: time must be one of {', '.join(TIMES)}")
    for key in ("delimiter", "quote"):
        if key in spec and (not isinstance(spec[key], str) or len(spec[key].encode()) != 1):
            raise ConfigError(f"{path}: {where}: {key} must be one character")
    dispositions = _vocabulary(path, f"{where}.dispositions", spec.get("dispositions", {}),
                               Disposition)
    presentations = _vocabulary(path, f"{where}.presentations", spec.get("presentations", {}),
                                Presentation)
    if not 0 <= spec.get("min_columns", 0) <= MAX_COLUMNS or len(columns or ()) > MAX_COLUMNS:
        raise ConfigError(f"{path}: {where}: a record has at most {MAX_COLUMNS} columns")
    if not dispositions and not base and "disposition" in roles:
        raise ConfigError(f"{path}: {where}: a disposition column needs a dispositions table")
    template = base or Format(name, roles, TIME_LOCAL, DK_VOCABULARY)
    for role, table, own in (("disposition", dispositions, template.disp_kind != DK_VOCABULARY),
                             ("presentation", presentations, template.pres_kind != PK_VOCABULARY)):
        if table and base and own and roles.get(role) == base.roles.get(role):
            raise ConfigError(
                f"{path}: {where}.{role}s: {template.name} reads its {role}s itself, and a "
                f"table would replace that reading, not add to it (every value it leaves out "
                f"unread): give one only with a {role} column of the dialect's own "
                f"(fields.{role}), naming each value that column holds")
    return dataclasses.replace(
        template, name=name, roles=roles,
        columns=None if header else tuple(columns or ()),
        header_lines=1 if header else 0,
        # a base format's own column list keeps its minimum; new columns are all required
        min_cols=spec.get("min_columns", template.min_cols
                          if columns is not None and tuple(columns) == template.columns else 0),
        time_kind=TIMES[time] if time else template.time_kind,
        disp_kind=DK_VOCABULARY if dispositions else template.disp_kind,
        pres_kind=PK_VOCABULARY if presentations else template.pres_kind,
        delimiter=spec.get("delimiter", template.delimiter),
        quote=spec.get("quote", template.quote),
        end_required=spec.get("end_required", template.end_required),
        lenient_quotes=spec.get("lenient_quotes", template.lenient_quotes),
        # a tenant column the dialect names is read whatever it holds (its base's, such as
        # FreeSWITCH's context, counts only domain names)
        tenant_domains=template.tenant_domains and "tenant" not in fields,
        # a base's own value table (Kamailio's SIP codes) is kept; the dialect's adds to it
        dispositions={**template.dispositions, **dispositions},
        presentations={**template.presentations, **presentations},
        required=tuple(r for r in ("calling", "called", "start") if r in roles))


def _vocabulary(path, where: str, table: dict, kind) -> dict:
    out = {}
    # a late refusal or failure is the parser's reading of a busy, rejected or failed value's
    # times, not a value's; transferred, of CUCM's split causes; callers_differ, the index's
    names = {m.name.lower(): m for m in kind
             if m not in (Disposition.LATE_REFUSAL, Disposition.LATE_FAILURE,
                          Disposition.TRANSFERRED, Disposition.CALLERS_DIFFER)}
    for value, meaning in table.items():
        if not isinstance(meaning, str) or meaning.lower() not in names:
            raise ConfigError(f"{path}: {where}: {value!r} = {meaning!r}: must be one of "
                              f"{', '.join(names)}")
        out[value] = names[meaning.lower()]
    return out
