"""Reports: the Call Identification Center's DuckDB queries over the trace rows (and the
same reports on Spark)."""
from __future__ import annotations

import enum


def case_of(column: str, codes: type[enum.IntEnum]) -> str:
    """SQL, DuckDB's and Spark's alike, for a code column's name: 'no_answer' for
    Disposition.NO_ANSWER; a code the enum lacks is NULL."""
    return ("CASE " + column + " " + " ".join(f"WHEN {c.value} THEN '{c.name.lower()}'"
                                              for c in codes) + " END")


# SQL, DuckDB's and Spark's alike: the successful traces, each keyed by the origin its trace
# counted (evidence.pseudonyms): the packed caller, and for a caller its switch numbers
# itself its feed (and for one of a feed of several tenants, the call itself), so that two
# switches' 1002s are two origins
ORIGINS = """
    SELECT line, origin, call_id, call_start_us, origin_scope AS scope,
           CASE WHEN origin_scope = 0 THEN 0 ELSE origin_feed END AS feed,
           CASE WHEN origin_scope = 2 THEN call_id ELSE 0 END AS one_id,
           CASE WHEN origin_scope = 2 THEN call_start_us ELSE 0 END AS one_start
    FROM traces WHERE outcome = 1"""
