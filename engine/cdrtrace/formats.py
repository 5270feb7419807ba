"""The canonical call record every switch format is parsed into, and the format registry."""
from __future__ import annotations

import enum

import numpy as np
import pyarrow as pa


class Presentation(enum.IntEnum):
    ALLOWED = 0
    RESTRICTED = 1    # number present, display withheld: traceable (R5)
    UNAVAILABLE = 2   # no number reached the switch: untraceable (R4)


class Disposition(enum.IntEnum):
    ANSWERED = 1
    NO_ANSWER = 2
    CANCELLED = 3     # the caller hung up while it rang
    BUSY = 4
    FAILED = 5
    CONGESTION = 6
    REJECTED = 7
    UNALLOCATED = 8
    UNKNOWN = 9


RECEIVED_DISPOSITIONS = frozenset({Disposition.ANSWERED, Disposition.NO_ANSWER, Disposition.CANCELLED})

# name, numpy dtype: one canonical columnar record for every format.
COLUMNS = (
    ("start_us", np.int64),       # UTC microseconds
    ("answer_us", np.int64),      # 0 when not answered
    ("end_us", np.int64),
    ("calling", np.uint64),       # packed number (cdrtrace.numbers), 0 = none delivered
    ("presentation", np.uint8),   # Presentation
    ("called", np.uint64),        # the dialled line
    ("redirecting", np.uint64),   # redirecting / original-called line, 0 = none
    ("final", np.uint64),         # the line that finally rang when it differs, 0 = same
    ("disposition", np.uint8),    # Disposition
    ("received", np.bool_),       # the line was alerted (rule R3)
    ("call_id", np.uint64),       # hash of the switch's call id, or of the record
    ("feed", np.uint16),          # feed (switch) id
    ("offset", np.int64),         # byte offset of the record in its source
    ("record", np.int64),         # record number in its source, from 1
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
ARROW_SCHEMA = pa.schema([(name, pa.from_numpy_dtype(np.dtype(dtype))) for name, dtype in COLUMNS])

FORMATS = ("asterisk",)


class CallBatch:
    """A batch of canonical call records: numpy columns, viewable as Arrow without a copy."""

    __slots__ = ("columns", "source")

    def __init__(self, columns: dict[str, np.ndarray], source: int = 0):
        self.columns = columns
        self.source = source

    def __len__(self) -> int:
        return len(self.columns["start_us"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def to_arrow(self) -> pa.RecordBatch:
        """Zero-copy: each Arrow buffer is the numpy array's memory."""
        return pa.RecordBatch.from_arrays(
            [pa.array(self.columns[name]) for name in COLUMN_NAMES], schema=ARROW_SCHEMA)
