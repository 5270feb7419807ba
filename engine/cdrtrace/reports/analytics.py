"""Call Identification Center reports: DuckDB over Arrow tables of trace rows.

The rows (cdrtrace.trace_rows) carry numbers packed as integers; DuckDB groups on those
and formats only the rows a report returns. A report takes the rows as an Arrow table
(Store.trace_table) or as numpy column views (Store.trace_columns, which DuckDB scans in
place); both give the same result as a pyarrow.Table.
"""
from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable

import duckdb
import pyarrow as pa

from ..parsing import numbers, timezones
from ..parsing.formats import Disposition, Presentation
from ..store import archive
from . import ORIGINS, case_of

_MASK = (1 << 56) - 1
_IDENTITY = (numbers.OTHER << 62) | (numbers.IDENTITY_LENGTH << 56)   # an identity's, bar its hash
_MACROS = f"""
CREATE MACRO number_text(x) AS CASE
    WHEN x = 0 THEN NULL
    WHEN (x >> 62) = 1 THEN '+' || lpad(CAST(x & {_MASK}::UBIGINT AS VARCHAR),
                                        CAST((x >> 56) & 63 AS INTEGER), '0')
    WHEN (x >> 62) = 3 AND ((x >> 56) & 63) = 63 THEN 'id:' || printf('%014x', x & {_MASK}::UBIGINT)
    ELSE lpad(CAST(x & {_MASK}::UBIGINT AS VARCHAR), CAST((x >> 56) & 63 AS INTEGER), '0')
END;
CREATE MACRO utc_text(us) AS strftime(make_timestamp(us), '%Y-%m-%dT%H:%M:%S')
    || CASE WHEN us % 1000000 = 0 THEN '' ELSE '.' || lpad(CAST(us % 1000000 AS VARCHAR), 6, '0')
       END || 'Z';
CREATE MACRO origin_text(x, scope, feed, one_id, one_start) AS number_text(x) || CASE scope
    WHEN 1 THEN ' (feed ' || feed || ')'
    WHEN 2 THEN ' (feed ' || feed || ', call ' || printf('%016x', one_id) || ' at '
                || utc_text(one_start) || ')'
    ELSE '' END;
CREATE MACRO outcome_text(o) AS CASE o WHEN 1 THEN 'success' WHEN 2 THEN 'untraceable'
    WHEN 3 THEN 'no_call' WHEN 4 THEN 'already_traced' WHEN 6 THEN 'contested'
    ELSE 'pending' END;
CREATE MACRO disposition_text(d) AS {case_of("d", Disposition)};
CREATE MACRO presentation_text(p) AS {case_of("p", Presentation)};
"""


REPEAT_COLUMNS = ("line", "origin", "call_id", "call_start_us", "outcome", "origin_scope",
                  "origin_feed")


def _connect(table, name: str = "traces"):
    con = duckdb.connect()
    con.execute(_MACROS)
    con.register(name, table)
    return con


def repeat_origins(traces: pa.Table, threshold: int = 3, min_calls: int = 2) -> pa.Table:
    """Per (line, origin) traced at least min_calls times: distinct successfully traced
    calls (a call: its id and start, as a switch reuses ids), first and last call,
    eligible (at least threshold)."""
    return _connect(traces).sql(f"""
        WITH grouped AS (
            SELECT line, origin, scope, feed, one_id, one_start,
                   count(DISTINCT (call_id, call_start_us)) AS traced_calls,
                   min(call_start_us) AS first_us, max(call_start_us) AS last_us
            FROM ({ORIGINS}) GROUP BY line, origin, scope, feed, one_id, one_start
            HAVING count(DISTINCT (call_id, call_start_us)) >= $min_calls)
        SELECT number_text(line) AS line, origin_text(origin, scope, feed, one_id, one_start) AS origin,
               traced_calls,
               make_timestamp(first_us) AS first_call, make_timestamp(last_us) AS last_call,
               traced_calls >= $threshold AS eligible
        FROM grouped
        ORDER BY traced_calls DESC, line, origin
    """, params={"threshold": threshold, "min_calls": min_calls}).to_arrow_table()


def hot_origins(traces: pa.Table, min_lines: int = 2) -> pa.Table:
    """Origins traced by many different lines (serial harassers, robocallers), ranked."""
    return _connect(traces).sql(f"""
        WITH grouped AS (
            SELECT origin, scope, feed, one_id, one_start, count(DISTINCT line) AS lines,
                   count(DISTINCT (line, call_id, call_start_us)) AS traced_calls,
                   min(call_start_us) AS first_us, max(call_start_us) AS last_us
            FROM ({ORIGINS}) GROUP BY origin, scope, feed, one_id, one_start
            HAVING count(DISTINCT line) >= ?)
        SELECT origin_text(origin, scope, feed, one_id, one_start) AS origin, lines, traced_calls,
               make_timestamp(first_us) AS first_call, make_timestamp(last_us) AS last_call
        FROM grouped
        ORDER BY lines DESC, traced_calls DESC, origin
    """, params=[min_lines]).to_arrow_table()


def timeline(traces: pa.Table, line: int, origin: int, archive_root=None) -> pa.Table:
    """One line and one origin (packed numbers): every trace and, when a call archive is
    kept, every call, in time order. Columns: time, event ('call' or 'trace'), trace_id,
    outcome (a trace's outcome or a call's disposition), call_time, and origin: the origin
    a trace counted toward (evidence.pseudonyms), or a call's caller in its feed where its
    switch numbers it (two feeds' 1002s are two callers, the rows say whose each is)."""
    con = _connect(traces)
    calls = "SELECT NULL::BIGINT AS t, NULL AS event, NULL AS trace_id, NULL AS outcome, " \
            "NULL::BIGINT AS call_us, NULL AS origin WHERE false"
    files = archive.day_files(archive_root) if archive_root is not None else []
    if files:
        calls = """
            SELECT start_us AS t, 'call' AS event, NULL AS trace_id,
                   disposition_text(disposition) AS outcome, start_us AS call_us,
                   origin_text(calling, CASE WHEN (calling >> 62) = 1 THEN 0 ELSE 1 END,
                               feed, 0, 0) AS origin
            FROM read_parquet($files, hive_partitioning = true)
            WHERE (called = $line OR redirecting = $line OR final = $line)
              AND calling = $origin AND received"""
    return con.sql(f"""
        SELECT make_timestamp(t) AS time, event, trace_id, outcome,
               make_timestamp(call_us) AS call_time, origin
        FROM (
            SELECT activated_us AS t, 'trace' AS event,
                   'T' || lpad(CAST(trace AS VARCHAR), 8, '0') AS trace_id,
                   outcome_text(outcome) AS outcome, call_start_us AS call_us,
                   origin_text(origin, origin_scope, origin_feed, call_id, call_start_us) AS origin
            FROM traces WHERE line = $line::UBIGINT AND origin = $origin::UBIGINT
            UNION ALL {calls})
        ORDER BY t, event
    """, params={"line": line, "origin": origin, **({"files": files} if files else {})}
                   ).to_arrow_table()


def named(report: pa.Table, text_of: Callable[[int], str | None]) -> pa.Table:
    """A report with each caller identity (a SIP user: packed as a hash, which number_text
    writes `id:` and 14 hex digits) written by its text, as the evidence records name it:
    text_of(its packed number), None where the store keeps no text for it."""
    import pyarrow.compute as pc

    for name in ("line", "origin", "calling"):
        if name not in report.column_names:
            continue
        column = report.column(name).combine_chunks()
        marked = pc.fill_null(pc.starts_with(column, "id:"), False)
        if not pc.any(marked).as_py():
            continue
        # only the rows naming an identity become Python strings, to be rewritten
        texts = []
        for value in pc.filter(column, marked).to_pylist():
            text = text_of(_IDENTITY | int(value[3:17], 16))
            texts.append(value if text is None else text + value[17:])
        report = report.set_column(report.column_names.index(name), name,
                                   pc.replace_with_mask(column, marked, pa.array(texts, column.type)))
    return report


def calls(archived: pa.Table) -> pa.Table:
    """A line's archived calls (store.archive.calls: packed numbers, codes) as the calls
    report gives them: the caller's number as text, the presentation and disposition by
    name ('restricted', 'no_answer')."""
    return _connect(archived, "calls").sql("""
        SELECT "start", answer, "end", number_text(calling) AS calling,
               presentation_text(presentation) AS presentation,
               disposition_text(disposition) AS disposition, received, feed, record
        FROM calls
    """).to_arrow_table()


def plain_rows(table: pa.Table) -> list[dict]:
    """A report's rows as JSON-ready values: a time as ISO-8601 UTC text, as in every other
    answer ("2026-03-02T14:03:00Z": the reports' times are UTC without a zone, as DuckDB's
    make_timestamp gives them; str() wrote "2026-03-02 14:03:00"), anything else not JSON
    as text."""
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def _plain(value: object) -> object:
    if isinstance(value, (int, float, bool, str, type(None))):
        return value
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        seconds = calendar.timegm(value.timetuple())
        return timezones.format_utc(seconds * 1_000_000 + value.microsecond)
    return str(value)
