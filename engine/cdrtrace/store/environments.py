"""The two LMDB environments of a store directory, their sub-databases and settings.

The index environment (STORE/data.mdb) is written by ingest in large transactions; the
evidence environment (STORE/evidence/data.mdb) only by traces and the Call
Identification Center, so a *57 never waits for an ingest's commit (LMDB has one writer
per environment). Opening a store writes nothing unless it is new, or older than this
release and writable (sub-databases a later release added are created then).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from ..errors import ConfigError, StoreError
from ..parsing import timezones
from . import index, private

T = TypeVar("T")
# 2: the trace evidence has its own environment. 3: each line's pseudonyms are kept in
# `by_line`, beside its traces, not in a `pseudonyms` sub-database of their own: a trace
# then changes one page of the line's instead of two (a commit of 32 traces wrote about 74
# pages, and each page apart costs the flush a write of its own: BENCHMARKS.md). The keys
# are the same (line + "o" + origin, line + "#"); a format 2 store keeps its sub-database.
FORMAT_VERSION = 3
READ_FORMATS = (2, 3)
INITIAL_MAP_SIZE = 64 << 20
INDEX_DBS = ("index", "sources", "unreadable", "identities", "activations_due", "hunts")
EVIDENCE_DBS = ("emeta", "traces", "by_line", "directory", "audit", "cases", "trace_rows",
                "trace_segments", "pending", "activations", "tokens", "requests", "outbox",
                "case_lines")
FORMAT_2_EVIDENCE_DBS = ("pseudonyms",)   # format 3 keeps them in by_line
DEFAULT_THRESHOLD = 3     # successful traces of one origin before the customer may ask for action
LATER_INDEX_DBS = ("unreadable", "identities", "activations_due", "hunts")   # absent from older stores
DEFAULTS: dict[str, Any] = {
    "threshold": DEFAULT_THRESHOLD, "zone": "UTC", "country_code": 1, "min_ring_seconds": 0.0,
    "keep": index.DEFAULT_KEEP, "retention_days": 365, "archive_dir": None,
    "archive_retention_days": 90, "activation_window_days": 1.0,
    "audit_key_file": None,        # None: a store from before keyed audit logs
    "audit_checkpoints": None}     # where `audit checkpoint` appends: a file, or "syslog"


# a new store's numeric settings: (whole numbers only, least, most, least allowed itself)
_RANGES: dict[str, tuple[bool, float, float, bool]] = {
    "threshold": (True, 1, 1000, True), "country_code": (True, 1, 999, True),
    "keep": (True, 1, 64, True),        # the native index writer's bound
    "min_ring_seconds": (False, 0, 3600, True), "retention_days": (False, 0, 36_500, False),
    "archive_retention_days": (False, 0, 36_500, False),
    "activation_window_days": (False, 0, 3650, False)}


def check_settings(settings: dict[str, Any]) -> None:
    """ConfigError, naming the setting, for a new store's setting out of its range (a
    threshold of 0 would let a customer ask for action with no trace; a keep past 64
    would make every ingest fail)."""
    for name, value in settings.items():
        if name in _RANGES:
            whole, least, most, closed = _RANGES[name]
            number = not isinstance(value, bool) and (
                isinstance(value, int) or (not whole and isinstance(value, float)))
            if not (number and math.isfinite(value) and most >= value
                    and (value >= least if closed else value > least)):
                kind = "a whole number" if whole else "a number"
                raise ConfigError(f"the store setting {name} must be {kind} "
                                  f"{'from' if closed else 'over'} {least:g} to {most:g} "
                                  f"(not {value!r})")
        elif name in ("audit_key_file", "audit_checkpoints", "archive_dir", "zone") and not (
                value is None or isinstance(value, (str, os.PathLike))):
            raise ConfigError(f"the store setting {name} must be a text (not {value!r})")


def default_key_file(store: Path) -> Path:
    """$XDG_CONFIG_HOME/cdrtrace/audit-keys/NAME-HASH.key (~/.config by default): the
    service user's, one per store path (check_key_apart: never inside the store)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    digest = hashlib.sha256(str(store.absolute()).encode()).hexdigest()[:12]
    return base / "cdrtrace" / "audit-keys" / f"{store.name}-{digest}.key"


def check_key_apart(store: Path, key: str | os.PathLike) -> None:
    """A new store's audit key must live outside its directory: a copy of the store (a
    backup, a restore) would otherwise carry the key its log is checked with, and whoever
    can rewrite the store's files could re-sign the log. StoreError, before the key is
    made, where it would not be (a service user whose home is the store directory puts
    the default key file there)."""
    inside, where = os.path.realpath(store), os.path.realpath(key)
    if os.path.commonpath([inside, where]) == inside:
        raise StoreError(
            f"the audit key would be made at {key}, inside the store {store}: it must live "
            "apart from the store, or a copy of the store carries the key that checks its "
            "log. Name a key file outside it (init --audit-key FILE, or the setting "
            "audit_key_file), or give the service user a home outside the store")


def _archive_path(folder: str | os.PathLike) -> str:
    """A call archive's path as given, absolute; StoreError for an empty one."""
    if not str(folder).strip():
        raise StoreError("the call archive needs a folder's path (it was empty)")
    return os.path.abspath(folder)


def archive_folder(folder: str | os.PathLike) -> str:
    """A call archive's folder, made if it is not there (0700), as an absolute path; a
    path that is empty or cannot be a folder is refused (StoreError), not recorded and
    found out at the first write."""
    wanted = _archive_path(folder)
    try:
        private.make_dir(wanted)
    except OSError as exc:
        raise StoreError(f"the call archive cannot be the folder {wanted}: "
                         f"{exc.strerror or exc}") from None
    if not os.path.isdir(wanted):
        raise StoreError(f"the call archive cannot be {wanted}: it is not a folder")
    return wanted


class Environments:
    """A store directory's environments: `db` maps every sub-database name to its handle
    (None for one an older, read-only opened store lacks); `config` holds its settings."""

    def __init__(self, path: str | os.PathLike, create: bool = False,
                 readonly_index: bool = False, settings: dict[str, Any] | None = None):
        self.path = Path(path)
        # Held by the index's write transactions and by every resize of its map in this
        # process: the native index writer runs LMDB with the GIL released, unseen by
        # py-lmdb's own guard, so a reader thread's set_mapsize must not remap under it.
        # (The evidence environment has none: a trace never waits for an ingest.)
        self.resizing = threading.RLock()
        settings = settings or {}
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown store settings: {', '.join(sorted(unknown))}")
        if not (self.path / "data.mdb").exists() and not create:
            raise StoreError(f"no cdrtrace store at {self.path} (create one with `cdrtrace init`)")
        if create and not (self.path / "data.mdb").exists():
            check_settings(settings)    # a new store's: refused before anything is made
            if settings.get("archive_dir"):
                settings = {**settings, "archive_dir": archive_folder(settings["archive_dir"])}
        if create:
            private.make_dir(self.path)
            if not (self.path / "data.mdb").exists():
                os.chmod(self.path, private.DIR_MODE)   # a new store in a folder given to it
        self.readonly_index = readonly_index and not create
        try:
            # No writemap: its commit syncs the whole map, which costs a durable trace
            # ~150 us at p50, and LMDB forbids mixing it between processes.
            self.env = lmdb.open(str(self.path), max_dbs=len(INDEX_DBS) + 3,
                                 map_size=INITIAL_MAP_SIZE, subdir=True, create=create,
                                 readonly=self.readonly_index, mode=private.FILE_MODE)
        except lmdb.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self.db: dict[str, Any] = {}
        self.on_reopen: list[Callable[[], None]] = []   # parts that cache a handle refresh it
        try:
            self.config = self._open_index(create, settings)
            # a cdrtrace store: refused if others can read it, before its evidence opens
            private.check(self.path, [self.path, self.path / "data.mdb", self.path / "evidence",
                                      self.path / "evidence" / "data.mdb"])
        except BaseException:
            self.env.close()
            raise
        try:
            private.make_dir(self.path / "evidence")
            self.eenv = self._open_evidence()
        except (lmdb.Error, OSError) as exc:
            self.env.close()
            raise StoreError(f"cannot open the evidence of store {self.path}: {exc}") from None
        self._open_evidence_dbs()
        self.clear_stale_readers()

    def clear_stale_readers(self) -> int:
        """Free the read slots of processes that died inside a read transaction (killed,
        a fault), and say how many. LMDB frees them by itself only when no process has
        the store open; until then the pages of the snapshot they read cannot be reused,
        and the store's files grow with every write. Done at each open, and by
        `cdrtrace serve` every minute."""
        return self.env.reader_check() + self.eenv.reader_check()

    def _open_evidence(self) -> Any:
        names = EVIDENCE_DBS + FORMAT_2_EVIDENCE_DBS
        return lmdb.open(str(self.path / "evidence"), max_dbs=len(names) + 2,
                         map_size=INITIAL_MAP_SIZE, subdir=True, create=True,
                         mode=private.FILE_MODE)

    def _reopen(self, env: Any) -> Any:
        """An environment LMDB declared unusable after a failed write (MDB_PANIC: a full
        disk, an I/O error) is closed and opened again; what was committed is intact.
        The sub-database handles are replaced in place (every part shares `db`)."""
        with self._guard(env):
            env.close()
        evidence = env is self.eenv
        if evidence:
            self.eenv = self._open_evidence()
            self._open_evidence_dbs()
        else:
            self.env = lmdb.open(str(self.path), max_dbs=len(INDEX_DBS) + 3,
                                 map_size=INITIAL_MAP_SIZE, subdir=True,
                                 readonly=self.readonly_index, mode=private.FILE_MODE)
            self.db["meta"] = self.env.open_db(b"meta", create=False)
            self._open_dbs(self.env, INDEX_DBS, LATER_INDEX_DBS, create=True)
        for refresh in self.on_reopen:
            refresh()
        return self.eenv if evidence else self.env

    def _open_evidence_dbs(self) -> None:
        """The evidence's sub-databases, as the store's format lays them out."""
        if self.format == 2:
            self._open_dbs(self.eenv, EVIDENCE_DBS + FORMAT_2_EVIDENCE_DBS, (), create=True)
        else:
            self._open_dbs(self.eenv, EVIDENCE_DBS, (), create=True)
            self.db["pseudonyms"] = self.db["by_line"]

    def _open_dbs(self, env: Any, names: tuple[str, ...], optional: tuple[str, ...],
                  create: bool) -> None:
        """Open the sub-databases. A writable environment opens them in one write
        transaction that writes nothing unless one is missing (LMDB commits a clean
        transaction without writing); a read-only one cannot create them."""
        if env.flags()["readonly"]:
            for name in names:
                try:
                    self.db[name] = env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    if name not in optional:
                        raise StoreError(f"{self.path} is not a cdrtrace store of format "
                                         f"{self.format}") from None
                    self.db[name] = None    # added by a later release: the first writable open makes it
            return
        with env.begin(write=True) as txn:
            for name in names:
                self.db[name] = env.open_db(name.encode(), txn=txn, create=create)

    def _open_index(self, create: bool, settings: dict[str, Any]) -> dict[str, Any]:
        """The index environment's sub-databases and the store's settings; a new store
        gets its format version and settings."""
        try:
            self.db["meta"] = self.env.open_db(b"meta", create=False)
        except lmdb.NotFoundError:
            self.db["meta"] = None
        stored = None
        if self.db["meta"] is not None:
            with self.env.begin() as txn:
                stored = (txn.get(b"version", db=self.db["meta"]), txn.get(b"config", db=self.db["meta"]))
        if stored is None or stored[0] is None:
            if not create:
                raise StoreError(f"{self.path} is not a cdrtrace store")
            config = {**DEFAULTS, **settings}
            timezones.get_zone(config["zone"])
            config["archive_dir"] = config["archive_dir"] or None    # checked, made: __init__
            # the audit key lives outside the store directory, with the service user's
            # configuration unless named
            config["audit_key_file"] = str(Path(config["audit_key_file"]
                                                or default_key_file(self.path)).absolute())
            check_key_apart(self.path, config["audit_key_file"])
            private.create_secret(config["audit_key_file"])
            with self.env.begin(write=True) as txn:
                self.db["meta"] = self.env.open_db(b"meta", txn=txn, create=True)
                txn.put(b"version", str(FORMAT_VERSION).encode(), db=self.db["meta"])
                txn.put(b"config", json.dumps(config).encode(), db=self.db["meta"])
            stored = (str(FORMAT_VERSION).encode(), json.dumps(config).encode())
        version, config_json = stored
        if version is None or config_json is None:
            raise StoreError(f"{self.path} is not a cdrtrace store")
        if int(version) not in READ_FORMATS:
            raise StoreError(f"{self.path} has store format {int(version)}; this cdrtrace "
                             f"reads formats {', '.join(map(str, READ_FORMATS))}")
        self.format = int(version)
        self._open_dbs(self.env, INDEX_DBS, LATER_INDEX_DBS, create=True)
        return {**DEFAULTS, **json.loads(config_json)}

    def archive_dir(self) -> str | None:
        """The store's call archive: the setting as stored now, so that a process open
        before an ingest named the archive (adopt_archive) finds it too."""
        if self.config["archive_dir"] is None:
            with self.env.begin() as txn:
                stored = txn.get(b"config", db=self.db["meta"])
            self.config["archive_dir"] = json.loads(stored).get("archive_dir") if stored else None
        return self.config["archive_dir"]

    def adopt_archive(self, folder: str | os.PathLike) -> str:
        """The call archive an ingest names: the store's own (the same folder), or, for a
        store without one, recorded as its archive (reports, the timeline, case reports and
        purge's retention all read the store's). Another folder than the store's is
        refused, and nothing made there. A new archive's folder is made before it is
        recorded (archive_folder)."""
        wanted = _archive_path(folder)

        def work(txn: Any) -> str:
            config = json.loads(txn.get(b"config", db=self.db["meta"]))
            current = config.get("archive_dir")
            if current is None:
                config["archive_dir"] = archive_folder(wanted)
                txn.put(b"config", json.dumps(config).encode(), db=self.db["meta"])
                return wanted
            if os.path.realpath(current) != os.path.realpath(wanted):
                raise StoreError(
                    f"this store's call archive is {current}, not {wanted}: one store keeps "
                    "one archive (its reports and its retention read that one)")
            return current
        self.config["archive_dir"] = self.write(work)
        return self.config["archive_dir"]

    def close(self) -> None:
        self.eenv.close()
        self.env.close()

    def write(self, work: Callable[[Any], T], env: Any = None) -> T:
        """Run work(txn) in one durable write transaction of the index environment (or
        env), growing the map when full."""
        env = env or self.env
        reopened = False
        while True:
            guard = self._guard(env)
            try:
                with guard, env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                with guard:
                    env.set_mapsize(env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                with guard:
                    env.set_mapsize(0)
            except lmdb.PanicError:
                if reopened:
                    raise
                env, reopened = self._reopen(env), True

    def _guard(self, env: Any) -> Any:
        """The resize lock for the index's environment; nothing for the evidence's."""
        return self.resizing if env is self.env else contextlib.nullcontext()

    def reserve(self, pairs: int) -> None:
        """Grow the index's map ahead of a write of this many (line, call) pairs, so the
        write does not fill it, abort and run again: room for every pair as a new line and
        for the transaction's copy of each page it touches (at most the index as it is)."""
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        need = 2 * used + 2 * pairs * (index.ENTRY_DTYPE.itemsize + 16)
        if need > info["map_size"]:
            size = info["map_size"]
            while size < need:
                size *= 2
            with self._guard(self.env):
                self.env.set_mapsize(size)

    def index_bytes(self) -> int:
        """The size of the last-call index, in bytes of pages."""
        with self.read() as txn:
            stat = txn.stat(self.db["index"])
        return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]

    def read(self, env: Any = None) -> Any:
        """A read transaction of the index environment (or env): a consistent snapshot."""
        env = env or self.env
        try:
            return env.begin()
        except lmdb.MapResizedError:
            with self._guard(env):
                env.set_mapsize(0)
            return env.begin()
        except lmdb.PanicError:
            return self._reopen(env).begin()

    def ewrite(self, work: Callable[[Any], T]) -> T:
        """Run work(txn) in one durable write transaction of the evidence environment."""
        return self.write(work, self.eenv)

    def eread(self) -> Any:
        """A read transaction of the evidence environment."""
        return self.read(self.eenv)

    def next_counter(self, txn: Any, counter: bytes, db: str = "meta") -> int:
        """Inside a write transaction: the counter's next value (1, 2, ...), kept."""
        value = int(txn.get(counter, b"0", db=self.db[db])) + 1
        txn.put(counter, str(value).encode(), db=self.db[db])
        return value

    @contextlib.contextmanager
    def writer(self, what: str = "ingest") -> Iterator[None]:
        """Hold the store's writer lock for a long write (an ingest): a second writer is
        refused with a clear error instead of waiting on LMDB's lock. Readers never wait."""
        handle = private.open_file(self.path / "writer.lock", "a+")
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
