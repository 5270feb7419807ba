"""The store: two LMDB environments in one directory, so a trace never waits for ingest.

The index environment (data.mdb): meta (settings, counters, feed statistics, live-feed
heartbeats), index (line -> last calls), sources (source id -> provenance, positions).
Ingest writes it in large transactions.

The evidence environment (evidence/data.mdb): emeta (its counters and the audit head),
traces (trace number -> evidence record, JSON), by_line (line + "t" + trace number ->
"", and line + "c" + call id -> trace id: a call is traced once per line), trace_rows
and trace_segments (report rows), pending (pending traces), directory, audit, cases.
A trace reads the index in a read transaction (never blocked) and commits its evidence
here, where only traces and the Call Identification Center write: LMDB's single writer
per environment is never held by an ingest when a *57 arrives.
"""
from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

import lmdb
import numpy as np

from . import archive, audit, directory, index, numbers, salvage, timezones, trace_rows
from .errors import AccessError, NumberError, StoreError, TraceError
from .formats import Disposition, Presentation
from .parse import normalize_number
from .trace import DEFAULT_THRESHOLD, CustomerStatus, Outcome, TraceResult, customer_status, origin_labels, outcome_for

_frombuffer = np.frombuffer
FORMAT_VERSION = 2        # 2: the trace evidence has its own environment
LIVE_TIMEOUT = 10.0      # seconds without a heartbeat after which a live feed counts as gone
PENDING_POLL = 0.005     # how often a waiting trace looks at the watermark again
RATE_WINDOW = 10.0       # seconds over which a feed's records/s is measured
UNREADABLE_WINDOW_US = 3600 * 1_000_000   # unreadable records noted from this long before a traced call
INITIAL_MAP_SIZE = 64 << 20
_INDEX_DBS = ("index", "sources", "unreadable", "identities", "activations_due")
_EVIDENCE_DBS = ("emeta", "traces", "by_line", "directory", "audit", "cases", "trace_rows",
                 "trace_segments", "pending", "activations")
AUTHORITY_KINDS = ("subpoena", "court_order", "law_enforcement_request")
AUTHORITY_FIELDS = ("kind", "reference", "agency", "officer", "case_number")
_TRACE, _CALL = b"t", b"c"
DEFAULTS = {"threshold": DEFAULT_THRESHOLD, "zone": "UTC", "country_code": 1,
            "min_ring_seconds": 0.0, "keep": index.DEFAULT_KEEP, "retention_days": 365,
            "archive_dir": None, "archive_retention_days": 90}


def _u64(value: int) -> bytes:
    return int(value).to_bytes(8, "big")


def open(path: str | os.PathLike, create: bool = False, readonly_index: bool = False,  # noqa: A001
         **settings) -> Store:
    """Open the store at path (a directory); create it if asked. settings apply at creation.
    readonly_index: for processes that only trace and read (they never wait for ingest);
    such a store cannot ingest."""
    return Store(path, create=create, readonly_index=readonly_index, **settings)


class Store:
    """A cdrtrace store. Safe to share between threads of one process."""

    def __init__(self, path: str | os.PathLike, create: bool = False,
                 readonly_index: bool = False, **settings):
        self.path = Path(path)
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown store settings: {', '.join(sorted(unknown))}")
        exists = (self.path / "data.mdb").exists()
        if not exists and not create:
            raise StoreError(f"no cdrtrace store at {self.path} (create one with `cdrtrace init`)")
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            # No writemap: its commit syncs the whole map, which costs a durable trace
            # ~150 us at p50, and LMDB forbids mixing it between processes.
            self.env = lmdb.open(str(self.path), max_dbs=len(_INDEX_DBS) + 3,
                                 map_size=INITIAL_MAP_SIZE, subdir=True, create=create,
                                 readonly=readonly_index and not create)
        except lmdb.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self.eenv = None
        if readonly_index and not create:
            # trace and status only read the index: opening it read-only needs no write
            # transaction, so it never waits for an ingest's commit
            try:
                self.db = {name: self.env.open_db(name.encode(), create=False)
                           for name in ("meta", "index", "sources")}
            except lmdb.NotFoundError:
                self.env.close()
                raise StoreError(f"{self.path} is not a cdrtrace store of format "
                                 f"{FORMAT_VERSION}") from None
            with self.env.begin() as txn:
                version = txn.get(b"version", db=self.db["meta"])
                config = txn.get(b"config", db=self.db["meta"])
            if version is None or int(version) != FORMAT_VERSION:
                self.env.close()
                raise StoreError(f"{self.path} has store format "
                                 f"{int(version) if version else 'unknown'}; this cdrtrace reads "
                                 f"format {FORMAT_VERSION}")
            self.config = {**DEFAULTS, **json.loads(config)}
            for name in ("unreadable", "identities"):
                try:      # added in a later release: created by the first writable open
                    self.db[name] = self.env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    self.db[name] = None
        else:
            self._open_index(create, settings)
        self._index_db = self.db["index"]
        try:
            self.eenv = lmdb.open(str(self.path / "evidence"), max_dbs=len(_EVIDENCE_DBS) + 2,
                                  map_size=INITIAL_MAP_SIZE, subdir=True, create=True)
        except lmdb.Error as exc:
            self.env.close()
            raise StoreError(f"cannot open the evidence of store {self.path}: {exc}") from None
        with self.eenv.begin(write=True) as txn:
            for name in _EVIDENCE_DBS:
                self.db[name] = self.eenv.open_db(name.encode(), txn=txn, create=True)

    # ------------------------------------------------------------ plumbing

    def _open_index(self, create: bool, settings: dict) -> None:
        """Open (or create) the index environment's sub-databases in a write transaction."""
        with self.env.begin(write=True) as txn:
            try:
                meta_db = self.env.open_db(b"meta", txn=txn, create=create)
            except lmdb.NotFoundError:
                self.env.close()
                raise StoreError(f"{self.path} is not a cdrtrace store") from None
            # sub-databases added by later releases are created on first open
            self.db = {name: self.env.open_db(name.encode(), txn=txn, create=True)
                       for name in _INDEX_DBS}
            self.db["meta"] = meta_db
            meta = self.db["meta"]
            version = txn.get(b"version", db=meta)
            if version is None:
                if not create:
                    raise StoreError(f"{self.path} is not a cdrtrace store")
                txn.put(b"version", str(FORMAT_VERSION).encode(), db=meta)
                config = {**DEFAULTS, **settings}
                timezones.get_zone(config["zone"])
                txn.put(b"config", json.dumps(config).encode(), db=meta)
            elif int(version) != FORMAT_VERSION:
                self.env.close()
                raise StoreError(f"{self.path} has store format {int(version)}; "
                                 f"this cdrtrace reads format {FORMAT_VERSION}")
            self.config = {**DEFAULTS, **json.loads(txn.get(b"config", db=meta))}

    def close(self) -> None:
        if self.eenv is not None:
            self.eenv.close()
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, work, env=None):
        """Run work(txn) in one durable write transaction of the index environment (or
        env), growing the map when full."""
        env = env or self.env
        while True:
            try:
                with env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                env.set_mapsize(0)

    def read(self, env=None):
        """A read transaction of the index environment (or env): a consistent snapshot."""
        env = env or self.env
        try:
            return env.begin()
        except lmdb.MapResizedError:
            env.set_mapsize(0)
            return env.begin()

    def ewrite(self, work):
        """Run work(txn) in one durable write transaction of the evidence environment."""
        return self.write(work, self.eenv)

    def eread(self):
        """A read transaction of the evidence environment."""
        return self.read(self.eenv)

    def _next(self, txn, counter: bytes, db: str = "meta") -> int:
        value = int(txn.get(counter, b"0", db=self.db[db])) + 1
        txn.put(counter, str(value).encode(), db=self.db[db])
        return value

    def line(self, text: str) -> int:
        """A line as its packed number; NumberError if it is not a telephone line."""
        packed = normalize_number(str(text), self.config["country_code"])
        if packed == 0:
            raise NumberError(f"not a telephone line: {text!r}")
        return packed

    def register_source(self, name: str, size: int | None, identity: str | None = None,
                        fmt: str | None = None) -> int:
        """A new source id. Its content counts as ingested only once mark_ingested runs in
        the transaction that commits its last records (a crash before that re-ingests)."""
        def work(txn):
            source = self._next(txn, b"next_source")
            txn.put(source.to_bytes(4, "big"), json.dumps(
                {"name": name, "size": size, "format": fmt, "identity": identity,
                 "ingested_at": time.time()}).encode(), db=self.db["sources"])
            return source
        return self.write(work)

    def count_feed(self, txn, feed: int, records: int, rejected: int, newest: int | None) -> None:
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

    def stats(self, now_us: int | None = None) -> dict:
        """Per feed: records, records/s, rejects, watermark (newest call start, or for a live
        feed idle at its end, the moment it was idle minus its CDR delay) and its lag; the
        index."""
        now_us = now_us or time.time_ns() // 1000
        feeds = []
        with self.read() as txn:
            live = self.live_feeds(txn, now_us)
            names = {0: "(no feed)"}
            for key, value in txn.cursor(self.db["meta"]):
                if key.startswith(b"feed:"):
                    names[int(value)] = key[5:].decode()
            for key, value in txn.cursor(self.db["meta"]):
                if key.startswith(b"feedstats:"):
                    number, stats = int(key[10:]), json.loads(value)
                    mark = live[number]["watermark_us"] if number in live else stats.get("watermark_us")
                    start, counted = stats.get("window", (now_us, 0))
                    rate = stats.get("records_per_second")
                    if rate is None and now_us - start >= 1e6:
                        rate = round(counted / ((now_us - start) / 1e6))
                    feeds.append({
                        "feed": names.get(number, str(number)), "feed_id": number,
                        "live": number in live, "source": live[number]["source"] if number in live else None,
                        "records": stats["records"], "records_per_second": rate,
                        "rejected": stats["rejected"],
                        "watermark": timezones.format_utc(mark) if mark else None,
                        "lag_seconds": round((now_us - mark) / 1e6, 1) if mark else None,
                        "last_commit": timezones.format_utc(stats["last_commit_us"])})
        return {"feeds": sorted(feeds, key=lambda f: f["feed_id"]), "index": self.index_stat()}

    def position(self, key: bytes) -> dict | None:
        """Where an interrupted source stopped: {source, offset, record}, or None."""
        with self.read() as txn:
            value = txn.get(b"position:" + key, db=self.db["sources"])
        return json.loads(value) if value else None

    def save_position(self, txn, key: bytes, source: int, offset: int, record: int,
                      **extra) -> None:
        """Inside an index commit: the source is committed up to offset (exactly once).
        extra: what else identifies the position (a followed file's device and inode)."""
        txn.put(b"position:" + key, json.dumps(
            {"source": source, "offset": offset, "record": record, **extra}).encode(),
            db=self.db["sources"])

    def clear_position(self, txn, key: bytes) -> None:
        """Inside the commit that finishes a source: nothing of it is left to resume."""
        txn.delete(b"position:" + key, db=self.db["sources"])

    def mark_ingested(self, txn, source: int, identity: str | None) -> None:
        """Inside the final write transaction of a source: its content is now in the store."""
        if identity:
            txn.put(b"identity:" + identity.encode(), source.to_bytes(4, "big"),
                    db=self.db["sources"])
            txn.delete(b"position:" + identity.encode(), db=self.db["sources"])

    @contextlib.contextmanager
    def writer(self, what: str = "ingest"):
        """Hold the store's writer lock for a long write (an ingest): a second writer is
        refused with a clear error instead of waiting on LMDB's lock. Readers never wait."""
        path = self.path / "writer.lock"
        handle = builtins.open(path, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise StoreError(f"{self.path} is being written by {holder}; "
                                 "one writer at a time") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{what} (pid {os.getpid()})")
            handle.flush()
            yield
        finally:
            handle.close()   # closing releases the lock

    def feed_id(self, name: str) -> int:
        """The store's number for a feed (1, 2, ...), kept with every call it ingests."""
        key = b"feed:" + name.encode()
        with self.read() as txn:
            known = txn.get(key, db=self.db["meta"])
        if known:
            return int(known)

        def work(txn):
            existing = txn.get(key, db=self.db["meta"])
            if existing:
                return int(existing)
            number = self._next(txn, b"next_feed")
            if number > 65535:
                raise StoreError("a store holds at most 65535 feeds")
            txn.put(key, str(number).encode(), db=self.db["meta"])
            return number
        return self.write(work)

    def source_with_identity(self, identity: str | None) -> dict | None:
        """The source already ingested with this content identity, if any."""
        if not identity:
            return None
        with self.read() as txn:
            source = txn.get(b"identity:" + identity.encode(), db=self.db["sources"])
            return json.loads(txn.get(source, db=self.db["sources"])) if source else None

    def unfinished_source(self, identity: str) -> int | None:
        """A source registered for this content whose ingest was killed before its first
        commit (no position, not marked ingested): a rerun reuses its id."""
        with self.read() as txn:
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
        with self.read() as txn:
            return self.source_name(txn, source)

    def source_name(self, txn, source: int) -> str | None:
        value = txn.get(int(source).to_bytes(4, "big"), db=self.db["sources"])
        return json.loads(value)["name"] if value else None

    # ------------------------------------------------------------ index

    def index_stat(self) -> dict:
        with self.read() as txn:
            stat = txn.stat(self.db["index"])
        return {"lines": stat["entries"],
                "bytes": (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"])
                * stat["psize"]}

    def last_calls_raw(self, line_key: bytes, txn=None) -> np.ndarray:
        """The index entries of a line (ENTRY_DTYPE, newest first): the trace lookup path.

        Pass a read transaction to look up many lines in one snapshot (and save its cost).
        """
        if txn is None:
            with self.read() as txn:
                value = txn.get(line_key, db=self._index_db)
        else:
            value = txn.get(line_key, db=self._index_db)
        return _frombuffer(value, index.ENTRY_DTYPE) if value else index.EMPTY

    def last_calls(self, line: str, analyst: str) -> list[dict]:
        """The analyst's view of a line's last calls, with numbers; audited."""
        actor = _identity(analyst, "reading caller numbers")
        key = index.line_key(self.line(line))

        with self.read() as txn:
            calls = [self._call_view(txn, e) for e in self.last_calls_raw(key, txn)]
        self.ewrite(lambda txn: self._audit(txn, actor, "read_last_calls", line=numbers.format_number(
            int.from_bytes(key, "big")), calls=len(calls)))
        return calls

    # ------------------------------------------------------------ directory, audit, disclosure

    def _audit(self, txn, actor: str, action: str, **details) -> dict:
        return audit.append(txn, self.db["audit"], self.db["emeta"], actor, action, **details)

    def _directory_import(self, txn) -> int | None:
        value = txn.get(b"directory_import", db=self.db["emeta"])
        return int(value) if value else None

    def import_directory(self, path: str | os.PathLike, operator: str) -> int:
        """Replace the subscriber directory with a CSV or Parquet file; returns its rows."""
        actor = _identity(operator, "importing the directory", "operator")
        pairs = directory.entries(directory.read(path), self.config["country_code"], str(path))

        def work(txn):
            txn.drop(self.db["directory"], delete=False)
            txn.cursor(self.db["directory"]).putmulti(pairs, append=True)
            number = self._next(txn, b"directory_import", "emeta")
            self._audit(txn, actor, "directory_import", file=str(path), rows=len(pairs),
                        import_number=number)
            return len(pairs)
        return self.ewrite(work)

    def disclose(self, authority: dict, *, analyst: str, trace_ids=None,
                 line: str | None = None) -> list[dict]:
        """Release trace records (numbers, enrichment) under a recorded legal authority.

        authority: kind (subpoena, court_order, law_enforcement_request), reference,
        agency, officer, case_number. Anything missing: refused, and the refusal audited."""
        actor = _identity(analyst, "a disclosure")
        authority = {k: (str(v).strip() if v is not None else "") for k, v in
                     (authority or {}).items()}
        missing = [f for f in AUTHORITY_FIELDS if not authority.get(f)]
        problem = None
        if missing:
            problem = f"the legal authority lacks {', '.join(missing)}"
        elif authority["kind"] not in AUTHORITY_KINDS:
            problem = (f"the legal authority's kind must be one of {', '.join(AUTHORITY_KINDS)}, "
                       f"not {authority['kind']!r}")
        elif not trace_ids and line is None:
            problem = "name the trace ids or the line to disclose"
        if problem:
            self.ewrite(lambda txn: self._audit(txn, actor, "disclosure_refused", reason=problem,
                                               authority=authority))
            raise AccessError(f"disclosure refused: {problem}")
        records = self._trace_records(line) if line is not None else self._trace_records()
        if trace_ids:
            wanted = set(trace_ids)
            records = [r for r in records if r["trace_id"] in wanted]
            unknown = wanted - {r["trace_id"] for r in records}
            if unknown:
                self.ewrite(lambda txn: self._audit(txn, actor, "disclosure_refused",
                                                   reason="unknown trace ids",
                                                   trace_ids=sorted(unknown), authority=authority))
                raise AccessError(f"disclosure refused: no trace {', '.join(sorted(unknown))}")
        records = [r for r in records if r["outcome"] == Outcome.SUCCESS.value]
        self.ewrite(lambda txn: self._audit(txn, actor, "disclosure", authority=authority,
                                           trace_ids=[r["trace_id"] for r in records]))
        return records

    def purge(self, *, operator: str, older_than_days: float | None = None,
              now_us: int | None = None) -> dict:
        """Remove trace records activated before the retention period (the store's
        retention_days unless given), with their per-line entries; audited."""
        actor = _identity(operator, "a purge", "operator")
        days = self.config["retention_days"] if older_than_days is None else older_than_days
        if days < 0:
            raise TraceError("the retention period cannot be negative")
        cutoff = (now_us or time.time_ns() // 1000) - int(days * 86400 * 1_000_000)

        def work(txn):
            removed = set()
            cursor = txn.cursor(self.db["traces"])
            for key, value in list(cursor):
                if json.loads(value)["activated_us"] < cutoff:
                    removed.add(key)
                    txn.delete(key, db=self.db["traces"])
            for db in (self.db["trace_rows"], self.db["trace_segments"]):
                trace_rows.rewrite(txn, db, lambda rows: rows["activated_us"] >= cutoff)
            if removed:
                ids = {f"T{int.from_bytes(k, 'big'):08d}".encode() for k in removed}
                for key, value in list(txn.cursor(self.db["by_line"])):
                    if (key[8:9] == _TRACE and key[9:] in removed) or (
                            key[8:9] == _CALL and value in ids):
                        txn.delete(key, db=self.db["by_line"])
                for key, _ in list(txn.cursor(self.db["pending"])):   # never resolved
                    if key[8:] in removed:
                        txn.delete(key, db=self.db["pending"])
            archive_days = 0
            if self.config["archive_dir"]:
                keep_days = self.config["archive_retention_days"]
                archive_days = archive.purge(self.config["archive_dir"], (
                    now_us or time.time_ns() // 1000) - int(keep_days * 86400 * 1_000_000))
            self._audit(txn, actor, "purge", retention_days=days,
                        before=timezones.format_utc(cutoff), traces=len(removed),
                        archive_days=archive_days)
            return {"traces": len(removed), "before": timezones.format_utc(cutoff),
                    "archive_days": archive_days}
        return self.ewrite(work)

    def archived_calls(self, line: str, *, analyst: str, origin: str | None = None,
                       days: float | None = None, now_us: int | None = None):
        """Every archived call to a line (from one origin, in the last days); audited."""
        actor = _identity(analyst, "reading the call archive")
        if not self.config["archive_dir"]:
            raise StoreError("this store keeps no call archive (set archive_dir)")
        since = None
        if days is not None:
            since = (now_us or time.time_ns() // 1000) - int(days * 86400 * 1_000_000)
        table = archive.calls(self.config["archive_dir"], self.line(line),
                              self.line(origin) if origin else None, since)
        self.ewrite(lambda txn: self._audit(txn, actor, "read_archive", line=line, origin=origin,
                                           calls=table.num_rows))
        return table

    # ------------------------------------------------------------ cases (R8, R9)

    def _origin(self, line: str, origin: str) -> str:
        """An origin named by the customer's label ('Caller A') or by number -> E.164 text."""
        label = str(origin).strip()
        if label.lower().startswith("caller "):
            records = self._trace_records(line)
            order = []
            for r in records:
                if r["outcome"] == Outcome.SUCCESS.value and r["call"]["calling"] not in order:
                    order.append(r["call"]["calling"])
            labels = origin_labels(len(order))
            for name, number in zip(labels, order, strict=True):
                if name.lower() == label.lower():
                    return number
            raise TraceError(f"line {line} has no origin {label!r} "
                             f"(its origins: {', '.join(labels) or 'none'})")
        return numbers.format_number(self.line(label))

    def open_case(self, line: str, origin: str, *, agency: str, officer: str, case_number: str,
                  analyst: str, waive_reason: str | None = None) -> dict:
        """Open a case for a line and an origin; waive_reason lets the customer request
        action before the threshold (threatening calls)."""
        actor = _identity(analyst, "opening a case")
        missing = [n for n, v in (("agency", agency), ("officer", officer),
                                  ("case_number", case_number)) if not v or not str(v).strip()]
        if missing:
            raise TraceError(f"a case needs {', '.join(missing)}")
        line_text = numbers.format_number(self.line(line))
        number = self._origin(line, origin)

        def work(txn):
            cursor = txn.cursor(self.db["cases"])
            seq = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
            case = {"case_id": f"C{seq:06d}", "line": line_text, "origin": number,
                    "agency": agency.strip(), "officer": officer.strip(),
                    "case_number": case_number.strip(), "opened_by": actor,
                    "opened_us": time.time_ns() // 1000,
                    "waiver": ({"reason": waive_reason.strip(), "by": actor}
                               if waive_reason and waive_reason.strip() else None)}
            cursor.put(seq.to_bytes(8, "big"), json.dumps(case).encode(), append=True)
            self._audit(txn, actor, "case_open", case_id=case["case_id"], line=line_text,
                        origin=number, waived=case["waiver"] is not None)
            return case
        return self.ewrite(work)

    def _cases(self, line: str | None = None) -> list[dict]:
        with self.eread() as txn:
            cases = [json.loads(v) for _, v in txn.cursor(self.db["cases"])]
        if line is not None:
            line_text = numbers.format_number(self.line(line))
            cases = [c for c in cases if c["line"] == line_text]
        return cases

    def cases(self, *, analyst: str) -> list[dict]:
        actor = _identity(analyst, "listing cases")
        cases = self._cases()
        self.ewrite(lambda txn: self._audit(txn, actor, "case_list", cases=len(cases)))
        return cases

    def case(self, case_id: str, *, analyst: str) -> dict:
        """A case and its timeline: every trace between its line and origin, in order."""
        actor = _identity(analyst, "reading a case")
        found = [c for c in self._cases() if c["case_id"] == case_id]
        if not found:
            raise TraceError(f"no case {case_id}")
        case = found[0]
        timeline = sorted(
            ({"trace_id": r["trace_id"], "outcome": r["outcome"],
              "call_time": timezones.format_utc(r["call"]["start_us"]),
              "trace_time": timezones.format_utc(r["activated_us"])}
             for r in self._trace_records(case["line"])
             if r["call"] and r["call"]["calling"] == case["origin"]),
            key=lambda t: (t["call_time"], t["trace_time"], t["trace_id"]))
        self.ewrite(lambda txn: self._audit(txn, actor, "case_read", case_id=case_id))
        return {**case, "timeline": timeline}

    def report_rows(self, *, analyst: str) -> np.ndarray:
        """Every trace as packed rows (trace_rows.ROW_DTYPE), identifying: audited."""
        actor = _identity(analyst, "reading trace records")
        self.ewrite(lambda txn: trace_rows.compact(txn, self.db["trace_rows"],
                                                  self.db["trace_segments"], self.db["emeta"]))
        with self.eenv.begin(buffers=True) as txn:   # views into the map: one copy in all
            rows = trace_rows.read_all(txn, self.db["trace_rows"], self.db["trace_segments"])
        self.ewrite(lambda txn: self._audit(txn, actor, "read_trace_table", traces=len(rows)))
        return rows

    def trace_table(self, *, analyst: str, columns=trace_rows.FIELDS):
        """Every trace as an Arrow table of packed numbers (identifying: audited);
        columns narrows it to what a report reads."""
        return trace_rows.to_arrow(self.report_rows(analyst=analyst), columns)

    def trace_columns(self, *, analyst: str, columns=trace_rows.FIELDS) -> dict:
        """The same as numpy views over one copy of the rows: what reports hand DuckDB."""
        return trace_rows.columns_of(self.report_rows(analyst=analyst), columns)

    def audit_verify(self) -> int:
        """Check the audit chain; the number of entries, or AuditError saying where."""
        with self.eread() as txn:
            return audit.verify(txn, self.db["audit"], self.db["emeta"])

    def audit_entries(self) -> list[dict]:
        with self.eread() as txn:
            return [entry for _, entry in audit.entries(txn, self.db["audit"])]

    def _caller_text(self, txn, packed: int) -> str | None:
        """A caller as written for the CIC: its number, or its identity's text."""
        text = numbers.format_number(packed) or None
        if text and text.startswith("id:") and self.db.get("identities") is not None:
            stored = txn.get(packed.to_bytes(8, "big"), db=self.db["identities"])
            if stored is not None:
                return stored.decode()
        return text

    def _call_view(self, txn, e) -> dict:
        flags = int(e["flags"])
        return {
            "start": timezones.format_utc(int(e["start_us"])),
            "start_us": int(e["start_us"]),
            "calling": self._caller_text(txn, int(e["calling"])),
            "presentation": Presentation(int(e["presentation"])).name.lower(),
            "answered": bool(flags & index.ANSWERED),
            "forwarded": bool(flags & index.FORWARDED),
            "indexed_as": index.ROLE_NAMES[(flags >> 2) & 3],
            "disposition": Disposition(flags >> 4).name.lower(),
            "call_id": f"{int(e['call_id']):016x}",
            "feed": int(e["feed"]),
            "source": self.source_name(txn, int(e["source"])),
            "offset": int(e["offset"]),
        }

    # ------------------------------------------------------------ trace

    def _at_us(self, at: str | int | None) -> int:
        if at is None:
            return time.time_ns() // 1000
        if isinstance(at, int):
            return at
        return timezones.parse_instant(at, self.config["zone"])

    def trace(self, line: str, at: str | int | None = None, wait: float = 0.0) -> TraceResult:
        """*57: trace the last received call to line before `at` (default now).

        A trace record is committed durably before this returns, whatever the outcome.
        While a live feed that may carry the line's calls has not caught up with `at`
        (TRACE_RULES 2a), this waits up to `wait` seconds for it; if it is still behind,
        the trace is recorded as pending and resolves by the normal rules once the feed
        passes `at` (resolve_pending, run by the live ingest and by status).
        """
        packed = self.line(line)
        key = index.line_key(packed)
        at_us = self._at_us(at)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            behind = self._behind(packed, at_us)
            if not behind or time.monotonic() >= deadline:
                break
            time.sleep(min(PENDING_POLL, max(0.0, deadline - time.monotonic())))

        def work(txn):
            with self.read() as index_txn:   # a snapshot of the index: never waits for ingest
                if behind and self._behind(packed, at_us, index_txn):
                    return self._record_trace(txn, index_txn, key, packed, at_us, pending=True)
                return self._record_trace(txn, index_txn, key, packed, at_us)

        return self._result(self.ewrite(work))

    @staticmethod
    def _result(record: dict) -> TraceResult:
        return TraceResult(record["trace_id"], record["line"], Outcome(record["outcome"]),
                           timezones.format_utc(record["activated_us"]),
                           timezones.format_utc(record["call"]["start_us"])
                           if record["call"] else None)

    def _resolve(self, txn, index_txn, key: bytes, at_us: int):
        """The normal rules (R1-R5): (outcome, the call's view, its entry, earlier trace id)."""
        keep = self.config["keep"]
        entries = self.last_calls_raw(key, index_txn)
        before = entries[entries["start_us"] < at_us]      # started before the activation
        if len(before) == 0:
            if len(entries) >= keep:
                raise TraceError(
                    f"the index holds the last {keep} calls of "
                    f"{numbers.format_number(int.from_bytes(key, 'big'))} and all began after "
                    f"{timezones.format_utc(at_us)}; older calls are no longer held")
            return Outcome.NO_CALL, None, None, None
        e = before[0]
        outcome = outcome_for(e)
        original = None
        if outcome is Outcome.SUCCESS:
            original = txn.get(key + _CALL + _u64(int(e["call_id"])), db=self.db["by_line"])
            if original is not None:
                outcome = Outcome.ALREADY_TRACED
        return outcome, self._call_view(index_txn, e), e, original

    def _unreadable_nearby(self, index_txn, feed: int | None, call_us: int, at_us: int) -> dict:
        """Unreadable records (with or without a line) of the call's feed, or of every feed
        when there is no call, from an hour before the traced call to the activation: the
        CIC's measure of how far the data around this trace can be trusted."""
        since = call_us - UNREADABLE_WINDOW_US
        found = {"from": timezones.format_utc(since), "to": timezones.format_utc(at_us),
                 "records": 0, "without_line": 0}
        db = self.db.get("unreadable")
        if db is None:
            return found
        cursor = index_txn.cursor(db)
        start = max(since, 0).to_bytes(8, "big")
        f = feed if feed is not None else 0
        while f <= 0xFFFF and cursor.set_range(f.to_bytes(2, "big") + start):
            at = int.from_bytes(cursor.key()[:2], "big")
            if at != f:             # nothing of feed f from `since` on: the next feed that has any
                if feed is not None:
                    break
                f = at
                continue
            for k, v in cursor:
                if int.from_bytes(k[:2], "big") != f or int.from_bytes(k[2:10], "big") >= at_us:
                    break
                found["records"] += 1
                found["without_line"] += not json.loads(v)["line_found"]
            if feed is not None:
                break
            f += 1
        return found

    def _enrichment(self, txn, calling: int) -> dict | None:
        """R6: a served caller's directory entry, as it is now (snapshotted as evidence)."""
        entry = txn.get(_u64(calling), db=self.db["directory"])
        if entry is None or not json.loads(entry)["served"]:
            return None
        enrichment = json.loads(entry)
        enrichment["directory_import"] = self._directory_import(txn)
        return enrichment

    def _record_trace(self, txn, index_txn, key: bytes, packed: int, at_us: int,
                      pending: bool = False, number: int | None = None,
                      activated_by: dict | None = None) -> dict:
        """Resolve and write one trace's evidence record and report row. A pending trace
        is written with no call; resolving it later (number given) rewrites both."""
        if pending:
            outcome, call, e, original = Outcome.PENDING, None, None, None
        else:
            outcome, call, e, original = self._resolve(txn, index_txn, key, at_us)
        cursor = txn.cursor(self.db["traces"])
        resolving = number is not None
        if not resolving:
            number = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
        trace_id = f"T{number:08d}"
        enrichment = self._enrichment(txn, int(e["calling"])) if outcome is Outcome.SUCCESS else None
        record = {
            "trace_id": trace_id, "line": numbers.format_number(packed),
            "activated_us": at_us, "traced_at_us": time.time_ns() // 1000,
            "outcome": outcome.value, "call": call, "enrichment": enrichment,
            "original_trace": original.decode() if original else None,
        }
        if activated_by is not None:
            record["activated_by"] = activated_by
        if call is not None and call["disposition"] == "unreadable":
            record["reason"] = (f"the last call to this line is a CDR record that could not be read "
                                f"(record at byte {call['offset']} of {call['source']}); only its "
                                f"line and time are known, so it cannot be traced")
            db = self.db.get("unreadable")
            logged = None if db is None else index_txn.get(
                salvage.log_key(int(e["feed"]), int(e["start_us"]), int(e["call_id"])), db=db)
            if logged is not None:
                record["unreadable"] = json.loads(logged)
        if not pending:
            record["unreadable_nearby"] = self._unreadable_nearby(
                index_txn, int(e["feed"]) if e is not None else None,
                int(e["start_us"]) if e is not None else at_us, at_us)
        row = np.zeros(1, trace_rows.ROW_DTYPE)
        row["trace"], row["line"], row["activated_us"] = number, packed, at_us
        row["outcome"] = trace_rows.OUTCOME_CODES[outcome.value]
        if call is not None:
            row["origin"], row["call_id"] = int(e["calling"]), int(e["call_id"])
            row["call_start_us"], row["presentation"] = int(e["start_us"]), int(e["presentation"])
            row["enriched"] = enrichment is not None
        if pending:
            txn.put(_u64(at_us) + _u64(number), key, db=self.db["pending"])
        if outcome is Outcome.SUCCESS:
            txn.put(key + _CALL + _u64(int(e["call_id"])), trace_id.encode(), db=self.db["by_line"])
        if resolving:   # a pending trace resolved: same id, its record completed
            earlier = json.loads(txn.get(_u64(number), db=self.db["traces"]))
            record["traced_at_us"] = earlier["traced_at_us"]
            record["resolved_at_us"] = time.time_ns() // 1000
            txn.put(_u64(number), json.dumps(record).encode(), db=self.db["traces"])
            trace_rows.replace(txn, self.db["trace_rows"], self.db["trace_segments"], row)
            return record
        cursor.put(_u64(number), json.dumps(record).encode(), append=True)
        trace_rows.append(txn, self.db["trace_rows"], row)
        txn.put(key + _TRACE + _u64(number), b"", db=self.db["by_line"])
        return record

    # ------------------------------------------------------------ traces a switch recorded

    @staticmethod
    def queue_activations(txn, db, feed: int, source: int, activations) -> None:
        """Inside an ingest's commit: the *57s (and malicious call ids) the switch recorded
        in the committed records (TRACE_RULES 3b), to be traced once their calls are in
        the index (run_activations). Keyed by feed, line and time: a replay adds none."""
        for line, at_us, record, offset in activations:
            txn.put(feed.to_bytes(2, "big") + _u64(line) + _u64(at_us),
                    json.dumps({"source": source, "record": record, "offset": offset}).encode(),
                    db=db)

    def run_activations(self) -> list[TraceResult]:
        """Trace every queued switch activation by the normal rules, once: each commits
        with its key in the evidence, so a crash between the two steps neither loses nor
        doubles one."""
        with self.read() as txn:
            due = [(bytes(k), json.loads(v)) for k, v in txn.cursor(self.db["activations_due"])]
        results = []
        for key, where in due:
            feed, line, at_us = (int.from_bytes(key[:2], "big"), int.from_bytes(key[2:10], "big"),
                                 int.from_bytes(key[10:], "big"))

            def work(txn, key=key, where=where, feed=feed, line=line, at_us=at_us):
                if txn.get(key, db=self.db["activations"]) is not None:
                    return None
                by = {"switch_record": True, "feed": feed, **where}
                with self.read() as index_txn:
                    by["source"] = self.source_name(index_txn, where["source"])
                    try:
                        record = self._record_trace(txn, index_txn, index.line_key(line), line,
                                                    at_us, activated_by=by)
                    except TraceError as exc:     # its call is no longer held
                        record = None
                        by["error"] = str(exc)
                txn.put(key, json.dumps({"trace_id": record["trace_id"] if record else None,
                                         **by}).encode(), db=self.db["activations"])
                return record
            record = self.ewrite(work)
            if record is not None:
                results.append(self._result(record))
        def done(txn):
            for key, _ in due:
                txn.delete(key, db=self.db["activations_due"])
        if due:
            self.write(done)
        return results

    # ------------------------------------------------------------ live feeds

    def heartbeat(self, txn, feed: int, *, idle_seen_us: int | None, delay_us: int,
                  served=(), source: str = "") -> None:
        """Inside a live ingest's commit: the feed is attached. Its watermark is the newest
        call start ingested or, once its source was seen idle at its end, that moment
        minus the feed's CDR delay, whichever is later (TRACE_RULES 2a)."""
        key = f"live:{feed}".encode()
        old = json.loads(txn.get(key, b"{}", db=self.db["meta"]))
        idle = max(idle_seen_us or 0, old.get("idle_seen_us", 0) if old.get("pid") == os.getpid() else 0)
        txn.put(key, json.dumps({
            "pid": os.getpid(), "heartbeat_us": time.time_ns() // 1000, "idle_seen_us": idle,
            "delay_us": delay_us, "served": list(served), "source": source}).encode(),
            db=self.db["meta"])

    def detach(self, txn, feed: int) -> None:
        """Inside the live ingest's last commit: the feed is no longer live (its data is
        complete as ingested; traces no longer wait for it)."""
        txn.delete(f"live:{feed}".encode(), db=self.db["meta"])

    def live_feeds(self, txn=None, now_us: int | None = None) -> dict:
        """feed id -> {watermark_us, served, heartbeat_us, ...} for feeds whose live ingest
        has heart-beaten within LIVE_TIMEOUT (a crashed follower stops counting)."""
        if txn is None:
            with self.read() as txn:
                return self.live_feeds(txn, now_us)
        now_us = now_us or time.time_ns() // 1000
        feeds = {}
        cursor = txn.cursor(self.db["meta"])
        if cursor.set_range(b"live:"):
            for key, value in cursor:
                if not key.startswith(b"live:"):
                    break
                live = json.loads(value)
                if now_us - live["heartbeat_us"] > LIVE_TIMEOUT * 1e6:
                    continue
                feed = int(key[5:])
                stats = json.loads(txn.get(f"feedstats:{feed}".encode(), b"{}", db=self.db["meta"]))
                live["watermark_us"] = max(stats.get("watermark_us", 0),
                                           live["idle_seen_us"] - live["delay_us"] if live["idle_seen_us"] else 0)
                feeds[feed] = live
        return feeds

    def _behind(self, packed: int, at_us: int, txn=None) -> bool:
        """Is a live feed that may carry calls to this line behind at_us?"""
        for live in self.live_feeds(txn).values():
            if live["served"] and not index.served_mask(np.array([packed], np.uint64), live["served"])[0]:
                continue
            if live["watermark_us"] < at_us:
                return True
        return False

    def resolve_pending(self) -> list[TraceResult]:
        """Resolve every pending trace whose live feeds have passed its activation time (or
        are no longer live), by the normal rules; their outcomes then show in status."""
        if not self._has_pending():
            return []

        def work(txn):
            done = []
            with self.read() as index_txn:
                for k, key in list(txn.cursor(self.db["pending"])):
                    at_us, number = int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")
                    packed = int.from_bytes(key, "big")
                    if self._behind(packed, at_us, index_txn):
                        continue
                    done.append(self._resolve_one(txn, index_txn, k, bytes(key), packed, at_us,
                                                  number))
            return done
        return [self._result(r) for r in self.ewrite(work)]

    def _resolve_one(self, txn, index_txn, k, key, packed, at_us, number) -> dict:
        """One pending trace, by the normal rules, in the evidence transaction."""
        try:
            record = self._record_trace(txn, index_txn, key, packed, at_us, number=number)
        except TraceError as exc:   # the call was pushed out of the index meanwhile
            record = json.loads(txn.get(_u64(number), db=self.db["traces"]))
            record["error"] = str(exc)
            txn.put(_u64(number), json.dumps(record).encode(), db=self.db["traces"])
        txn.delete(k, db=self.db["pending"])
        return record

    def trace_records(self, line: str | None = None, *, analyst: str) -> list[dict]:
        """Full trace records (numbers, enrichment): for the Call Identification Center.
        The read is audited under the analyst's identity."""
        actor = _identity(analyst, "reading trace records")
        records = self._trace_records(line)
        self.ewrite(lambda txn: self._audit(txn, actor, "read_trace_records", line=line,
                                           traces=len(records)))
        return records

    def _has_pending(self) -> bool:
        with self.eread() as txn:
            return txn.stat(self.db["pending"])["entries"] > 0

    def _trace_records(self, line: str | None = None) -> list[dict]:
        with self.eread() as txn:
            if line is None:
                return [json.loads(v) for _, v in txn.cursor(self.db["traces"])]
            prefix = index.line_key(self.line(line)) + _TRACE
            cursor = txn.cursor(self.db["by_line"])
            records = []
            if cursor.set_range(prefix):
                for k, _ in cursor:
                    if not k.startswith(prefix):
                        break
                    records.append(json.loads(txn.get(k[9:], db=self.db["traces"])))
            return records

    def status(self, line: str) -> CustomerStatus:
        """The customer's view: their traces and progress per pseudonymous origin."""
        if self._has_pending():
            self.resolve_pending()
        records = self._trace_records(line)
        waived = {c["origin"] for c in self._cases(line) if c["waiver"]}
        return customer_status(numbers.format_number(self.line(line)), records,
                               self.config["threshold"], waived)


def _identity(who: str | None, what: str, role: str = "analyst") -> str:
    if not who or not str(who).strip():
        raise AccessError(f"{what} needs an {role} identity")
    return str(who).strip()


__all__ = ["Store", "open", "StoreError", "NumberError", "TraceError", "AccessError"]
