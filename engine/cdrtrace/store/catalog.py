"""The catalog of what a store ingested: sources, their positions, feeds and their counters.

All of it lives in the index environment and moves in the same transactions as the
index entries it describes (exactly once):
- `sources`: 4-byte source id -> provenance (JSON); `position:<key>` -> a Position;
  `identity:<content id>` -> the source whose content was fully ingested.
- `activations_due`: feed, line, time -> a *57 the switch recorded, to be traced.
- `meta`: `feed:<name>` -> feed id; `feedstats:<id>` -> the feed's counters and watermark.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from typing import Any

from ..errors import StoreError, TraceError
from ..parsing import numbers, timezones
from . import hunts
from .environments import Environments
from .liveness import learned_delay
from .lookup import LEGS, NEVER, STAMPED_AHEAD_US, tenant_names, tenants_shared, unconnected_mark

NO_FEED = "(no feed)"       # how stats names the feed of files ingested with none named
# stats' key, by the suffix of a feed's mark (lookup.UNCONNECTED), for since when the feed
# has shown it logs what its switch may leave unlogged (None: not yet)
SHOWN_FROM = {b"": "unconnected_logged_from", LEGS: "legs_logged_from"}


def held_by(feed: dict) -> list[str]:
    """The SHOWN_FROM keys of a feed's stats that say it has shown nothing yet: its
    switch may leave calls that rang a line unlogged, and its calls' traces are held."""
    return [key for key in SHOWN_FROM.values() if key in feed and feed[key] is None]

RATE_WINDOW = 10.0       # seconds over which a feed's records/s is measured
MAX_FEEDS = 65535        # a feed id is 16 bits in every index entry


@dataclasses.dataclass(frozen=True)
class ArchiveMark:
    """Where a source's Parquet archive is complete: its calls up to `record` (the record
    starting at byte `offset`) are in its first `files` archive files. offset is None
    for a Kafka partition new to the store until its first message arrives."""
    offset: int | None
    record: int
    files: int


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a source's committed records end: the next byte to read (`offset`) and the
    number of the last record committed, with what else identifies the place."""
    source: int
    offset: int
    record: int
    archive: ArchiveMark | None = None     # None: no archive, or nothing to read again
    file: tuple[int, int] | None = None    # a followed file's (device, inode)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, value: bytes) -> Position:
        d = json.loads(value)
        archive = d.get("archive")
        if "archive_files" in d:         # written by batch ingest before Position existed
            archive = {"offset": d["offset"], "record": d["record"], "files": d["archive_files"]}
        file = d.get("file") or ((d["dev"], d["ino"]) if "dev" in d else None)
        return cls(d["source"], d["offset"], d["record"],
                   ArchiveMark(**archive) if archive else None,
                   (int(file[0]), int(file[1])) if file else None)


class Catalog:
    """Sources, positions and feeds of one store (its index environment)."""

    def __init__(self, envs: Environments):
        self.envs = envs
        self.db = envs.db
        self._names: dict[int, str] = {}   # source id -> name: set once, never changed

    # ------------------------------------------------------------ sources

    def register_source(self, name: str, size: int | None, identity: str | None = None,
                        fmt: str | None = None, path: str | None = None) -> int:
        """A new source id. Its content counts as ingested only once mark_ingested runs in
        the transaction that commits its last records (a crash before that re-ingests).
        path: the file's, registered before its identity is known (provisional_source)."""
        record = {"name": name, "size": size, "format": fmt, "identity": identity,
                  "ingested_at": time.time()}

        def work(txn: Any) -> int:
            source = self.envs.next_counter(txn, b"next_source")
            txn.put(source.to_bytes(4, "big"), json.dumps(record).encode(), db=self.db["sources"])
            if path is not None:
                txn.put(b"pending:" + path.encode(), source.to_bytes(4, "big"), db=self.db["sources"])
            return source
        return self.envs.write(work)

    def provisional_source(self, path: str, size: int | None) -> int | None:
        """The source registered for the file at path, of this size, before its identity
        was known, if its ingest was killed before its first commit (after that commit a
        position keyed by the identity resumes it): a rerun reuses its id."""
        with self.envs.read() as txn:
            source = txn.get(b"pending:" + path.encode(), db=self.db["sources"])
            record = txn.get(source, db=self.db["sources"]) if source else None
            if record is None:
                return None
            record = json.loads(record)
            if record.get("size") != size or record.get("records") is not None:
                return None
            return int.from_bytes(source, "big")

    def clear_pending(self, txn: Any, path: str) -> None:
        """Inside the first commit of a source registered before its identity was known:
        from now on its position, keyed by the identity, is what a rerun resumes."""
        txn.delete(b"pending:" + path.encode(), db=self.db["sources"])

    def forget_source(self, source: int, path: str) -> None:
        """Take back a source registered before its identity was known, the identity
        having shown its content in the store already; nothing of it was committed."""
        def work(txn: Any) -> None:
            txn.delete(source.to_bytes(4, "big"), db=self.db["sources"])
            txn.delete(b"pending:" + path.encode(), db=self.db["sources"])
        self.envs.write(work)

    def mark_ingested(self, txn: Any, source: int, identity: str | None, *,
                      size: int | None = None, records: int | None = None,
                      archive_files: int = 0, path: str | None = None) -> None:
        """Inside the final write transaction of a source: its content is now in the store.
        A file's record keeps its path, size, identity and record count, so the same file
        grown by the switch later is read on from where this ingest ended."""
        if identity:
            txn.put(b"identity:" + identity.encode(), source.to_bytes(4, "big"),
                    db=self.db["sources"])
            txn.delete(b"position:" + identity.encode(), db=self.db["sources"])
        key = source.to_bytes(4, "big")
        known = txn.get(key, db=self.db["sources"])
        if path is not None:
            self.clear_pending(txn, path)
        if known is not None and path is not None:
            txn.put(key, json.dumps({**json.loads(known), "identity": identity, "size": size,
                                     "records": records, "archive_files": archive_files,
                                     "path": path}).encode(), db=self.db["sources"])

    def ingested_versions(self, path: str) -> list[dict]:
        """The files ingested from this path, each as it was then: source id, size,
        identity, records, archive files (the candidates a grown file extends)."""
        with self.envs.read() as txn:
            found = []
            for key, value in txn.cursor(self.db["sources"]):
                if len(key) == 4:
                    record = json.loads(value)
                    if record.get("path") == path and record.get("records") is not None:
                        found.append({"source": int.from_bytes(key, "big"), **record})
            return found

    def source_with_identity(self, identity: str | None) -> dict | None:
        """The source already ingested with this content identity, if any."""
        if not identity:
            return None
        with self.envs.read() as txn:
            source = txn.get(b"identity:" + identity.encode(), db=self.db["sources"])
            return json.loads(txn.get(source, db=self.db["sources"])) if source else None

    def unfinished_source(self, identity: str) -> int | None:
        """A source registered for this content whose ingest was killed before its first
        commit (no position, not marked ingested): a rerun reuses its id."""
        with self.envs.read() as txn:
            if txn.get(b"identity:" + identity.encode(), db=self.db["sources"]):
                return None
            if txn.get(b"position:" + identity.encode(), db=self.db["sources"]):
                return None
            for key, value in txn.cursor(self.db["sources"]):
                if len(key) == 4 and json.loads(value).get("identity") == identity:
                    return int.from_bytes(key, "big")
        return None

    def source_label(self, source: int) -> str | None:
        """The name a source was registered under."""
        with self.envs.read() as txn:
            return self.source_name(txn, source)

    def source_name(self, txn: Any, source: int) -> str | None:
        """The name a source was registered under (in the caller's read transaction); a
        trace names its call's source, so names are kept once read (ids are never reused)."""
        name = self._names.get(source)
        if name is None:
            value = txn.get(int(source).to_bytes(4, "big"), db=self.db["sources"])
            if not value:
                return None
            name = self._names.setdefault(int(source), json.loads(value)["name"])
        return name

    def sources(self) -> list[dict]:
        """Every registered source: id, name, size, format, content identity."""
        with self.envs.read() as txn:
            return [{"source": int.from_bytes(k, "big"), **json.loads(v)}
                    for k, v in txn.cursor(self.db["sources"]) if len(k) == 4]

    # ------------------------------------------------------------ positions

    def position(self, key: bytes) -> Position | None:
        """Where an interrupted source stopped, or None."""
        with self.envs.read() as txn:
            value = txn.get(b"position:" + key, db=self.db["sources"])
        return Position.from_json(value) if value else None

    def positions(self, prefix: bytes = b"") -> dict[bytes, Position]:
        """Every saved position whose key starts with prefix."""
        found = {}
        with self.envs.read() as txn:
            cursor = txn.cursor(self.db["sources"])
            start = b"position:" + prefix
            if cursor.set_range(start):
                for key, value in cursor:
                    if not key.startswith(start):
                        break
                    found[bytes(key[9:])] = Position.from_json(value)
        return found

    def save_position(self, txn: Any, key: bytes, position: Position) -> None:
        """Inside an index commit: the source is committed up to the position (exactly once)."""
        txn.put(b"position:" + key, position.to_json(), db=self.db["sources"])

    def clear_position(self, txn: Any, key: bytes) -> None:
        """Inside the commit that finishes a source: nothing of it is left to resume."""
        txn.delete(b"position:" + key, db=self.db["sources"])

    def queue_activations(self, txn: Any, feed: int, source: int,
                          activations: Iterable[tuple[int, int, int, int]],
                          zone: str | None = None) -> None:
        """Inside an ingest's commit: (line, time, record, offset) of each *57 the switch
        recorded in the committed records, to be traced once their calls are in the index
        (evidence.activations). Keyed by feed, line and time: a replay adds none. zone:
        where the switch wrote its times as local times, their zone (None: instants)."""
        for line, at_us, record, offset in activations:
            txn.put(feed.to_bytes(2, "big") + line.to_bytes(8, "big") + at_us.to_bytes(8, "big"),
                    json.dumps({"source": source, "record": record, "offset": offset,
                                "zone": zone}).encode(),
                    db=self.db["activations_due"])

    # ------------------------------------------------------------ feeds

    def feed_id(self, name: str) -> int:
        """The store's number for a feed (1, 2, ...), kept with every call it ingests;
        allocated on first use, so only writers (ingest) call this."""
        key = b"feed:" + name.encode()
        with self.envs.read() as txn:
            known = txn.get(key, db=self.db["meta"])
        if known:
            return int(known)

        def work(txn: Any) -> int:
            existing = txn.get(key, db=self.db["meta"])
            if existing:
                return int(existing)
            number = self.envs.next_counter(txn, b"next_feed")
            if number > MAX_FEEDS:
                raise StoreError(f"a store holds at most {MAX_FEEDS} feeds")
            txn.put(key, str(number).encode(), db=self.db["meta"])
            return number
        return self.envs.write(work)

    def known_feed_id(self, name: str) -> int | None:
        """The feed's number if it ever ingested anything; None otherwise (writes nothing)."""
        with self.envs.read() as txn:
            known = txn.get(b"feed:" + name.encode(), db=self.db["meta"])
        return int(known) if known else None

    def named_feed(self, name: str | None) -> int | None:
        """The number of the feed a trace names (None: none named), whose calls alone an
        extension is traced among; a name no feed has ingested under is refused (a
        misspelt name would find no call)."""
        if name is None:
            return None
        number = self.known_feed_id(name) if name != NO_FEED else 0
        if number is None:
            raise TraceError(f"no feed named {name!r} has ingested calls into this store")
        return number

    def feed_names(self, txn: Any) -> dict[int, str]:
        names = {0: NO_FEED}
        for key, value in txn.cursor(self.db["meta"]):
            if key.startswith(b"feed:"):
                names[int(value)] = key[5:].decode()
        return names

    def names_of(self, txn: Any, feeds: list[int]) -> list[str]:
        """Feeds' names, read by txn as index.native_txn gives it (its range)."""
        names = {int(value): key[5:].decode()
                 for key, value in txn.range(b"feed:", b"feed;", db=self.db["meta"])}
        return [NO_FEED if f == 0 else names.get(f, str(f)) for f in feeds]

    def count_feed(self, txn: Any, feed: int, records: int, rejected: int,
                   newest: int | None) -> None:
        """Inside an index commit: the feed's counters and watermark move with its data."""
        key = f"feedstats:{feed}".encode()
        stats = json.loads(txn.get(key, b"{}", db=self.db["meta"]))
        now_us = time.time_ns() // 1000
        stats["records"] = stats.get("records", 0) + records
        stats["rejected"] = stats.get("rejected", 0) + rejected
        if newest is not None:
            stats["watermark_us"] = max(stats.get("watermark_us", newest), newest)
        # records/s over the last RATE_WINDOW seconds of commits
        start, counted = stats.get("window", (now_us, 0))
        counted += records
        if now_us - start >= RATE_WINDOW * 1e6:
            stats["records_per_second"] = round(counted / ((now_us - start) / 1e6))
            start, counted = now_us, 0
        stats["window"] = (start, counted)
        stats["last_commit_us"] = now_us
        txn.put(key, json.dumps(stats).encode(), db=self.db["meta"])

    def feed_stats(self, txn: Any, live: dict[int, dict], now_us: int,
                   local: list[int]) -> list[dict]:
        """Per feed: records, records/s, rejects, watermark (newest call start, or for a
        live feed idle at its end, the moment it was idle minus its CDR delay), its lag;
        live, or stalled (live: the attached feeds, Liveness.attached); for a switch that
        may leave unanswered calls unlogged (CUCM, Kamailio's transaction rows), since when
        it has shown it logs them (unconnected_logged_from; None: not yet, lookup.UNCONNECTED);
        for FreeSWITCH, which may write A legs alone, since when it has shown two legs of a
        call (legs_logged_from);
        for a switch a follower saw hold its records back, how long (learned_delay_seconds:
        traces wait that long for it, ingestion.live); whether it indexed lines its switch
        numbers itself (local_lines: extensions, which another switch may have too; local:
        those feeds, Lookup.local_feeds); whether its records name several tenants for
        such lines (tenants_shared: a switch hosting several customers' PBXs, lookup.
        TENANTS: traces of its extensions are untraceable; tenants: two of them, the least
        by their hash, named as its records wrote them); for a feed with calls through
        hunt pilots, the pilots it lists no members for (hunt_pilots_unlisted, store.hunts)."""
        names, hunted = self.feed_names(txn), set(hunts.noted_feeds(txn, self.db["meta"]))
        feeds = []
        for key, value in txn.cursor(self.db["meta"]):
            if not key.startswith(b"feedstats:"):
                continue
            number, stats = int(key[10:]), json.loads(value)
            mark = live[number]["watermark_us"] if number in live else stats.get("watermark_us")
            start, counted = stats.get("window", (now_us, 0))
            rate = stats.get("records_per_second")
            if rate is None and now_us - start >= 1e6:
                rate = round(counted / ((now_us - start) / 1e6))
            attached = live.get(number)
            feeds.append({
                "feed": names.get(number, str(number)), "feed_id": number,
                "live": attached is not None and not attached["stalled"],
                "stalled": attached is not None and attached["stalled"],
                "source": attached["source"] if attached else None,
                "records": stats["records"], "records_per_second": rate,
                "rejected": stats["rejected"],
                "watermark": timezones.format_utc(mark) if mark else None,
                "lag_seconds": round((now_us - mark) / 1e6, 1) if mark else None,
                "ahead_of_clock": bool(mark) and mark - now_us > STAMPED_AHEAD_US,
                "local_lines": number in local,
                "tenants_shared": tenants_shared(txn, self.db["meta"], number),
                "tenants": tenant_names(txn, self.db["meta"], number),
                "last_commit": timezones.format_utc(stats["last_commit_us"])})
            if number in hunted:
                feeds[-1]["hunt_pilots_unlisted"] = [
                    numbers.format_number(p) for p in hunts.unlisted(txn, self.db["meta"], number)]
            held, _ = learned_delay(txn, self.db["meta"], number, now_us)
            if held:
                feeds[-1]["learned_delay_seconds"] = round(held / 1e6, 1)
            for suffix, name in SHOWN_FROM.items():
                since = unconnected_mark(txn, self.db["meta"], number, suffix)
                if since is not None:    # a switch that may leave calls that rang unlogged
                    feeds[-1][name] = None if since == NEVER else timezones.format_utc(since)
        return sorted(feeds, key=lambda f: f["feed_id"])
