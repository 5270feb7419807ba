"""Reports: the Call Identification Center's DuckDB queries over the trace rows (and the
same reports on Spark)."""
from __future__ import annotations

import enum


def case_of(column: str, codes: type[enum.IntEnum]) -> str:
    """SQL, DuckDB's and Spark's alike, for a code column's name: 'no_answer' for
    Disposition.NO_ANSWER; a code the enum lacks is NULL."""
    return ("CASE " + column + " " + " ".join(f"WHEN {c.value} THEN '{c.name.lower()}'"
                                              for c in codes) + " END")
