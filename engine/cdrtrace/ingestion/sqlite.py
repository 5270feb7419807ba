"""SQLite tables as a CDR source: `sqlite:///PATH/acc.db?table=acc_cdrs`.

Kamailio's db_sqlite keeps the acc module's tables in SQLite. A table is
read in rowid order, read-only, and written out in the db_text layout (a typed header
naming the columns, ':' between values, '\\' escapes) to a file in the store's private
folder, which ingest then reads like any file: by the same parser, with positions (the
record number is the row's place in rowid order), and exactly once (a table that has
only grown since is read on from where the last ingest ended; one whose rows were
deleted is read again, which the index does not count twice).

Datetimes are read as Kamailio reads them back: a column declared with DATE or TIME in
its type holding a REAL is a Julian day number as db_sqlite writes it; an INTEGER is
epoch seconds; text `YYYY-MM-DD HH:MM:SS` is UTC (SQLite's own convention).
"""
from __future__ import annotations

import calendar
import hashlib
import math
import os
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import SourceError
from ..store import private

SCHEME = "sqlite://"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ROWS_PER_FETCH = 10_000
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d$")
_ESCAPES = str.maketrans({"\\": "\\\\", ":": "\\:", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                          "\0": "\\0"})


def is_url(name: str) -> bool:
    return name.startswith(SCHEME)


def parse(url: str) -> tuple[str, str]:
    """(database file, table) of a sqlite:// URL."""
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    tables = parse_qs(parts.query).get("table", [])
    if not path or len(tables) != 1 or set(parse_qs(parts.query)) != {"table"}:
        raise SourceError(f"{url}: expected sqlite:///PATH/TO/acc.db?table=NAME")
    if not NAME.match(tables[0]):
        raise SourceError(f"{url}: {tables[0]!r} is not a table name")
    return path, tables[0]


def julian_to_epoch(day: float) -> int:
    """Epoch seconds of a Julian day number as Kamailio's db_sqlite stores a time_t: it
    writes (t - 0.5) / 86400 + 2440587.5. Rounded to the nearest second (Kamailio's own
    read truncates, and gives t - 1 when the double fell a little short of t)."""
    return round(86400.0 * (day - 2440587.5) + 0.5)


def render(url: str, folder: str | os.PathLike) -> Path:
    """The table as a db_text file in folder (private; one file per database and table,
    rewritten each time): the path to ingest."""
    path, table = parse(url)
    if not os.path.isfile(path):
        raise SourceError(f"cannot read {url}: no such database file")
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceError(f"cannot read {url}: {exc}") from None
    # a value's bytes as stored: text that is not UTF-8 (a caller's name as a phone sent
    # it) is its row's to answer for, not the table's (sqlite3 refuses the whole read)
    db.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    private.make_dir(folder)
    key = hashlib.sha256(f"{os.path.abspath(path)}\0{table}".encode()).hexdigest()[:16]
    out = Path(folder) / f"{table}-{key}.dbtext"
    try:
        columns = db.execute(f'PRAGMA table_info("{table}")').fetchall()
        if not columns:
            raise SourceError(f"cannot read {url}: the database has no table {table}")
        names = [c[1] for c in columns]
        timed = [bool(re.search("DATE|TIME", (c[2] or "").upper())) for c in columns]
        quoted = ", ".join(f'"{n}"' for n in names)
        rows = db.execute(f'SELECT {quoted} FROM "{table}" ORDER BY rowid')
        tmp = out.with_suffix(".tmp")
        with private.open_file(tmp, "w", encoding="utf-8", errors="surrogateescape",
                               newline="") as f:
            f.write(" ".join(f"{n}({_type(c[2])})"
                             for n, c in zip(names, columns, strict=True)) + "\n")
            while batch := rows.fetchmany(ROWS_PER_FETCH):
                f.writelines(":".join(_value(v, t) for v, t in zip(row, timed, strict=True)) + "\n"
                             for row in batch)
        os.replace(tmp, out)
    except sqlite3.Error as exc:
        raise SourceError(f"cannot read {url}: {exc}") from None
    finally:
        db.close()
    return out


def _type(declared: str | None) -> str:
    upper = (declared or "").upper()
    if "INT" in upper:
        return "int"
    if "DATE" in upper or "TIME" in upper:
        return "datetime"
    if any(k in upper for k in ("REAL", "FLOA", "DOUB")):
        return "double"
    return "string"


def _value(value, timed: bool) -> str:
    """A value as db_text writes it. A time that is none (a Julian day that is infinite or
    not a number, a date that does not exist) is written as it is: the parser rejects its
    row, with its place, and reads the others."""
    if value is None:
        return ""
    if timed and isinstance(value, float) and math.isfinite(value):
        return str(julian_to_epoch(value))
    if timed and isinstance(value, str) and _DATETIME.match(value):
        try:
            moment = time.strptime(value.replace("T", " "), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            moment = None           # 30 February, 25 o'clock
        if moment is not None:
            return str(calendar.timegm(moment))
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).translate(_ESCAPES)
