"""The Call Identification Center's reports on Spark, for a carrier whose years of traces
and calls live on a cluster: the same repeat-origins and hot-origins as the DuckDB
reports (cdrtrace.reports.analytics), over an exported trace table, and the calls of a
line from the Parquet call archive. Both inputs are files any Parquet engine reads; their
layout is in docs/formats.md ("The call archive and the trace table").

    cdrtrace report trace-table --analyst ann --out traces.parquet     # on the store's host
    spark-submit --master yarn spark_reports.py repeat-origins --traces hdfs:///cic/traces.parquet
    python -m cdrtrace.reports.spark repeat-origins --traces traces.parquet   # Spark local mode

Numbers stay packed (docs/formats.md); the reports format only the rows they return, as
the DuckDB reports do. A packed number is an unsigned 64-bit value, which Spark reads as
DECIMAL(20,0): its parts are taken by decimal arithmetic, not bit shifts.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..parsing.formats import Disposition, Presentation
from . import ORIGINS, case_of

TOP, KIND_SHIFT = 1 << 56, 1 << 62


def number_text(column: str) -> str:
    """Spark SQL for a packed number's text, as the DuckDB reports' number_text macro:
    '+' and the digits for an international number, `id:` and the hash for a caller
    identity (a SIP user), the digits alone otherwise."""
    digits = f"lpad(CAST({column} % {TOP} AS STRING), CAST(floor({column} / {TOP}) % 64 AS INT), '0')"
    identity = f"concat('id:', lower(lpad(conv(CAST({column} % {TOP} AS STRING), 10, 16), 14, '0')))"
    return (f"CASE WHEN {column} = 0 THEN NULL "
            f"WHEN floor({column} / {KIND_SHIFT}) = 1 THEN concat('+', {digits}) "
            f"WHEN floor({column} / {KIND_SHIFT}) = 3 AND floor({column} / {TOP}) % 64 = 63 "
            f"THEN {identity} "
            f"ELSE {digits} END")


def origin_text(column: str) -> str:
    """Spark SQL for an origin's text, as the DuckDB reports' origin_text macro: a caller
    its switch numbers itself names its feed (and, of a feed of several tenants, its call)."""
    one_id = "lower(lpad(conv(CAST(one_id AS STRING), 10, 16), 16, '0'))"
    start = ("concat(date_format(timestamp_micros(one_start), \"yyyy-MM-dd'T'HH:mm:ss\"), "
             "CASE WHEN one_start % 1000000 = 0 THEN '' "
             "ELSE concat('.', lpad(CAST(one_start % 1000000 AS STRING), 6, '0')) END, 'Z')")
    return (f"concat({number_text(column)}, CASE scope "
            "WHEN 1 THEN concat(' (feed ', feed, ')') "
            f"WHEN 2 THEN concat(' (feed ', feed, ', call ', {one_id}, ' at ', {start}, ')') "
            "ELSE '' END)")


def _time(column: str) -> str:
    """Epoch microseconds as a timestamp without a zone (UTC), as DuckDB's make_timestamp."""
    return f"CAST(timestamp_micros({column}) AS TIMESTAMP_NTZ)"


def session(master: str = "local[2]", app: str = "cdrtrace reports") -> Any:
    """A Spark session in UTC (on a cluster, spark-submit's settings win). Its warehouse,
    which these reports never write to but Spark makes, in a folder of its own, removed
    when Python exits (before, one was left in TMPDIR for every session)."""
    import atexit
    import shutil
    import tempfile

    from pyspark.sql import SparkSession

    warehouse = tempfile.mkdtemp(prefix="cdrtrace-spark-")
    atexit.register(shutil.rmtree, warehouse, True)
    return (SparkSession.builder.master(master).appName(app)
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", warehouse)
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "8")
            .getOrCreate())


def repeat_origins(spark: Any, traces: str, threshold: int = 3, min_calls: int = 2) -> Any:
    """Per (line, origin) traced at least min_calls times: distinct successfully traced
    calls, first and last call, eligible (at least threshold). A Spark DataFrame."""
    spark.read.parquet(traces).createOrReplaceTempView("traces")
    return spark.sql(f"""
        WITH grouped AS (
            SELECT line, origin, scope, feed, one_id, one_start,
                   count(DISTINCT call_id, call_start_us) AS traced_calls,
                   min(call_start_us) AS first_us, max(call_start_us) AS last_us
            FROM ({ORIGINS}) GROUP BY line, origin, scope, feed, one_id, one_start
            HAVING count(DISTINCT call_id, call_start_us) >= {int(min_calls)})
        SELECT {number_text('line')} AS line, {origin_text('origin')} AS origin, traced_calls,
               {_time('first_us')} AS first_call, {_time('last_us')} AS last_call,
               traced_calls >= {int(threshold)} AS eligible
        FROM grouped
        ORDER BY traced_calls DESC, line, origin
    """)


def hot_origins(spark: Any, traces: str, min_lines: int = 2) -> Any:
    """Origins traced by many different lines, ranked. A Spark DataFrame."""
    spark.read.parquet(traces).createOrReplaceTempView("traces")
    return spark.sql(f"""
        WITH grouped AS (
            SELECT origin, scope, feed, one_id, one_start, count(DISTINCT line) AS lines,
                   count(DISTINCT line, call_id, call_start_us) AS traced_calls,
                   min(call_start_us) AS first_us, max(call_start_us) AS last_us
            FROM ({ORIGINS}) GROUP BY origin, scope, feed, one_id, one_start
            HAVING count(DISTINCT line) >= {int(min_lines)})
        SELECT {origin_text('origin')} AS origin, lines, traced_calls,
               {_time('first_us')} AS first_call, {_time('last_us')} AS last_call
        FROM grouped
        ORDER BY lines DESC, traced_calls DESC, origin
    """)


def calls(spark: Any, archive: str, line: int, origin: int | None = None) -> Any:
    """Every archived call to a packed line (as dialled, redirecting or final), optionally
    from one packed origin, oldest first: the archive's day=YYYY-MM-DD folders. The rows
    of Store.archived_calls: the caller as text, presentation and disposition by name."""
    where = f"(called = {int(line)} OR redirecting = {int(line)} OR final = {int(line)})"
    if origin is not None:
        where += f" AND calling = {int(origin)}"
    spark.read.option("basePath", archive).parquet(f"{archive}/day=*").createOrReplaceTempView(
        "calls")
    return spark.sql(f"""
        SELECT {_time('start_us')} AS start, {_time('NULLIF(answer_us, 0)')} AS answer,
               {_time('end_us')} AS `end`, {number_text('calling')} AS calling,
               {case_of('presentation', Presentation)} AS presentation,
               {case_of('disposition', Disposition)} AS disposition, received, feed, record
        FROM calls WHERE {where}
        ORDER BY start_us, record
    """)


def main(argv: list[str] | None = None) -> int:
    """The Spark job: a report as JSON lines on standard output."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", choices=["repeat-origins", "hot-origins"])
    ap.add_argument("--traces", required=True, help="the exported trace table (Parquet)")
    ap.add_argument("--threshold", type=int, default=3)
    ap.add_argument("--min-calls", type=int, default=2)
    ap.add_argument("--min-lines", type=int, default=2)
    ap.add_argument("--master", default="local[2]", help="ignored under spark-submit")
    args = ap.parse_args(argv)
    spark = session(args.master)
    try:
        frame = (repeat_origins(spark, args.traces, args.threshold, args.min_calls)
                 if args.report == "repeat-origins"
                 else hot_origins(spark, args.traces, args.min_lines))
        for row in frame.toLocalIterator():
            sys.stdout.write(json.dumps(row.asDict(), default=str) + "\n")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
