"""The carrier's subscriber directory (enrichment): number -> name, address, served.

Imported in bulk from CSV or Parquet (columns number, name, address, served), replacing
the previous import in one transaction. A successful trace snapshots the caller's entry
into its evidence record when the caller is served by this carrier, so later directory
changes never rewrite evidence.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from ..errors import DirectoryError
from ..parsing.numbers import typed
from ..parsing.parsers import normalize_number
from ..store.environments import Environments
from .audit import AuditLog

COLUMNS = ("number", "name", "address", "served")
TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "false", "no", "n", "f", ""}


def read(path: str | os.PathLike) -> pa.Table:
    import pyarrow as pa  # here: a store that never imports a directory never loads Arrow
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        else:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in COLUMNS}))
        names = table.column_names      # decoded here: a header not UTF-8 raises now
    except FileNotFoundError:
        raise DirectoryError(f"cannot read {path}: no such file") from None
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise DirectoryError(f"cannot read {path}: {_where(path, exc)}") from None
    missing = [c for c in ("number", "name", "address") if c not in names]
    if missing:
        raise DirectoryError(f"{path} lacks the column(s) {', '.join(missing)} "
                             f"(expected {', '.join(COLUMNS)})")
    return table


def _where(path: Path, exc: Exception) -> str:
    """What is wrong with a CSV directory the reader refused, with the row it is in where
    the reader's words do not say (text that is not UTF-8, as a Latin-1 export gives, in
    its header too; a row of another field count), not the row's text: names, addresses."""
    try:
        data = b"" if path.suffix.lower() == ".parquet" else path.read_bytes()
    except OSError:
        data = b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return f"row {line} (byte {bad.start}) is not UTF-8 text: save the directory as UTF-8"
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        width = len(next(rows, []))
        for row in rows:
            if row and len(row) != width:
                return f"row {rows.line_num} has {len(row)} field(s), not {width}"
    except csv.Error:
        pass
    return str(exc)


def _texts(table: pa.Table, column: str, source: str) -> list:
    """A column's values as text; DirectoryError for a column that holds none (a Parquet
    file's lists or structs, or bytes that are not UTF-8, with the first such row)."""
    import pyarrow as pa

    try:
        return table.column(column).cast(pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    kind = table.schema.field(column).type
    for row, value in enumerate(table.column(column).to_pylist(), start=2):
        if isinstance(value, bytes) and not _utf8(value):
            raise DirectoryError(f"{source} row {row}: its {column} is not UTF-8 text")
    raise DirectoryError(f"{source}: its column {column} holds {kind}, not text")


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def entries(table: pa.Table, country_code: int, source: str = "directory"):
    """(key, value) pairs sorted by key, or DirectoryError naming the first bad row."""
    numbers, names, addresses = (_texts(table, c, source) for c in ("number", "name", "address"))
    served = (_texts(table, "served", source) if "served" in table.column_names
              else ["true"] * len(numbers))
    pairs: dict[bytes, tuple[int, str, bytes]] = {}
    for row, (number, name, address, flag) in enumerate(
            zip(numbers, names, addresses, served, strict=True), start=2):
        packed = normalize_number(typed(number or ""), country_code)
        if packed == 0:
            raise DirectoryError(f"{source} row {row}: not a telephone number: {number!r}")
        flag = (flag or "").strip().lower()
        if flag not in TRUE | FALSE:
            raise DirectoryError(f"{source} row {row}: served must be true or false, not {flag!r}")
        key, value = packed.to_bytes(8, "big"), json.dumps(
            {"name": name or "", "address": address or "", "served": flag in TRUE}).encode()
        if key in pairs and pairs[key][2] != value:
            # a number reassigned and its old row kept, or one written two ways: whose
            # name and address a trace of its calls would snapshot cannot be told
            first, written, _ = pairs[key]
            raise DirectoryError(
                f"{source} rows {first} and {row}: one number ({written!r}, {number!r}) with "
                "two different subscribers; keep one row for it")
        pairs.setdefault(key, (row, number, value))
    return sorted((key, value) for key, (_, _, value) in pairs.items())


def import_file(envs: Environments, audit: AuditLog, path: str | os.PathLike, operator: str) -> int:
    """Replace the subscriber directory with a CSV or Parquet file; returns its rows."""
    who = audit.actor(operator, "importing the directory", "operator")
    pairs = entries(read(path), envs.config["country_code"], str(path))
    db = envs.db["directory"]

    def work(txn: Any) -> int:
        txn.drop(db, delete=False)
        txn.cursor(db).putmulti(pairs, append=True)
        number = envs.next_counter(txn, b"directory_import", "emeta")
        audit.add(txn, who, "directory_import", file=str(path), rows=len(pairs),
                  import_number=number)
        return len(pairs)
    return envs.ewrite(work)
