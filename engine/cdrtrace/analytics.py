"""Call Identification Center reports: DuckDB over Arrow tables of trace records."""
from __future__ import annotations

import duckdb
import pyarrow as pa

TRACE_SCHEMA = pa.schema([
    ("trace_id", pa.string()), ("line", pa.string()), ("activated_us", pa.int64()),
    ("outcome", pa.string()), ("origin", pa.string()), ("call_id", pa.string()),
    ("call_start_us", pa.int64()),
])


def trace_table(records: list[dict]) -> pa.Table:
    """Trace records as an Arrow table (identifying: the origin is the caller's number)."""
    calls = [r.get("call") or {} for r in records]
    return pa.table({
        "trace_id": [r["trace_id"] for r in records],
        "line": [r["line"] for r in records],
        "activated_us": [r["activated_us"] for r in records],
        "outcome": [r["outcome"] for r in records],
        "origin": [c.get("calling") for c in calls],
        "call_id": [c.get("call_id") for c in calls],
        "call_start_us": [c.get("start_us") for c in calls],
    }, schema=TRACE_SCHEMA)


def repeat_origins(traces: pa.Table, threshold: int = 3) -> pa.Table:
    """Per (line, origin): distinct successfully traced calls, first and last, eligible."""
    con = duckdb.connect()
    con.register("traces", traces)
    return con.sql("""
        SELECT line, origin,
               count(DISTINCT call_id) AS traced_calls,
               make_timestamp(min(call_start_us)) AS first_call,
               make_timestamp(max(call_start_us)) AS last_call,
               count(DISTINCT call_id) >= ? AS eligible
        FROM traces
        WHERE outcome = 'success'
        GROUP BY line, origin
        ORDER BY traced_calls DESC, line, origin
    """, params=[threshold]).to_arrow_table()


def hot_origins(traces: pa.Table, min_lines: int = 2) -> pa.Table:
    """Origins traced by many different lines (serial harassers, robocallers), ranked."""
    con = duckdb.connect()
    con.register("traces", traces)
    return con.sql("""
        SELECT origin,
               count(DISTINCT line) AS lines,
               count(DISTINCT line || call_id) AS traced_calls,
               make_timestamp(min(call_start_us)) AS first_call,
               make_timestamp(max(call_start_us)) AS last_call
        FROM traces
        WHERE outcome = 'success'
        GROUP BY origin
        HAVING count(DISTINCT line) >= ?
        ORDER BY lines DESC, traced_calls DESC, origin
    """, params=[min_lines]).to_arrow_table()


def timeline(traces: pa.Table, line: str, origin: str) -> pa.Table:
    """One line and one origin: every traced call and every trace, in time order."""
    con = duckdb.connect()
    con.register("traces", traces)
    return con.sql("""
        SELECT make_timestamp(call_start_us) AS call_time,
               make_timestamp(activated_us) AS trace_time,
               trace_id, outcome
        FROM traces
        WHERE line = ? AND origin = ?
        ORDER BY call_start_us, activated_us, trace_id
    """, params=[line, origin]).to_arrow_table()


REPORTS = {"repeat-origins": repeat_origins, "hot-origins": hot_origins, "timeline": timeline}
