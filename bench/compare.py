"""cdrtrace side by side with what a carrier would use instead: one command, one run, the
same generated input for everyone; a table of medians and ratios, JSON, the scaling runs
and their plot, and every PERFORMANCE.md target with its measured value.

    python -m bench.compare                  # everything (about 20 minutes with 100 M)
    python -m bench.compare --quick          # under a minute: the CI smoke run
    python -m bench.compare --no-scaling --records 2000000 --json out.json

Peers are in bench.peers. Scaling runs each ingest in a child process, sampling its peak
RSS, and writes bench/results/scaling.json; bench.plot draws bench/results/scaling.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb

import cdrtrace
from cdrtrace import synth
from cdrtrace.evidence import rows as trace_rows
from cdrtrace.parsing import numbers
from cdrtrace.reports import analytics

from . import peers, workloads

HERE = Path(__file__).parent
DATA = Path(os.environ.get("CDRTRACE_BENCH_DATA", HERE / ".data"))
RESULTS = HERE / "results"


class Table:
    """Rows grouped by what they measure; the first row of a group is cdrtrace's."""

    def __init__(self):
        self.groups: dict[str, list[dict]] = {}
        self.targets: list[dict] = []
        self.extra: dict = {}       # what one stage leaves for the next (peer stores)

    def add(self, group: str, name: str, seconds: float, per: int = 1, rate_of: int | None = None,
            **extra) -> dict:
        row = {"name": name, "seconds": seconds / per, **extra}
        if rate_of:
            row["rate"] = rate_of / seconds
        self.groups.setdefault(group, []).append(row)
        print(f"  [{group}] {name}: {_shown(row)}", file=sys.stderr, flush=True)
        return row

    def target(self, metric: str, target: str, measured: str, met: bool | None) -> None:
        self.targets.append({"metric": metric, "target": target, "measured": measured,
                             "status": {True: "met", False: "missed", None: "-"}[met]})

    def ours(self, group: str) -> dict:
        return self.groups[group][0]

    def ratio(self, group: str, peer: str) -> float:
        """How many times faster cdrtrace is than the peer (>1: cdrtrace faster)."""
        other = next(r for r in self.groups[group] if r["name"] == peer)
        return other["seconds"] / self.ours(group)["seconds"]

    def render(self) -> str:
        out = []
        for group, rows in self.groups.items():
            out.append(f"[{group}]")
            ours = rows[0]
            for row in rows:
                if row is ours:
                    ratio = ""
                elif "share_of_asterisk" in row:
                    ratio = f"  {row['share_of_asterisk']:.2f} of the Asterisk rate"
                else:
                    ratio = f"  cdrtrace is {row['seconds'] / ours['seconds']:.2f}x as fast"
                out.append(f"  {row['name']:<58}{_shown(row):>30}{ratio}")
        out.append("")
        out.append("[PERFORMANCE.md targets]")
        width = max((len(t["metric"]) for t in self.targets), default=44)
        for t in self.targets:
            out.append(f"  {t['metric']:<{width}} {t['measured']:<40} target {t['target']:<46} "
                       f"{t['status']}")
        return "\n".join(out)


def _shown(row: dict) -> str:
    if "rate" in row:
        return f"{row['rate'] / 1e6:.2f} M rec/s"
    if "p50_us" in row:
        return f"p50 {row['p50_us']:.2f} us p99 {row['p99_us']:.2f} us"
    if "p99_ms" in row:
        return f"p50 {row['p50_ms']:.1f} ms p99 {row['p99_ms']:.1f} ms"
    return f"{row['seconds']:.3f} s"


def median_time(fn, rounds: int, setup=None):
    """(median seconds, last result) over rounds; setup() runs untimed before each."""
    times, result = [], None
    for _ in range(rounds):
        args = setup() if setup else ()
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def input_file(records: int, lines: int, seed: int = 2026) -> Path:
    """Generated Asterisk input, cached under bench/.data (never committed)."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"asterisk-{records}-{lines}.csv"
    if not path.exists():
        partial = path.with_suffix(".partial")
        synth.write(partial, records, lines, seed=seed)
        Path(f"{partial}.truth.json").rename(f"{path}.truth.json")
        partial.rename(path)
    return path


def count_records(path: Path) -> int:
    """Records in a generated file (synth writes no newline inside a field)."""
    count = 0
    with open(path, "rb") as f:
        while block := f.read(64 << 20):
            count += block.count(b"\n")
    return count


# ------------------------------------------------------------------ the comparison

def run_parse(t: Table, path: Path, n: int, rounds: int) -> None:
    g = "parse, Asterisk CSV, 1 core"
    sec, got = median_time(lambda: workloads.parse_file(path), rounds)
    assert got == n, (got, n)
    t.add(g, "cdrtrace", sec, rate_of=n)
    sec, got = median_time(lambda: peers.parse_pyarrow(path), rounds)
    t.add(g, "pyarrow read_csv, 4 typed columns, 1 thread", sec, rate_of=n)
    data = path.read_bytes()
    sec, _ = median_time(lambda: peers.parse_python_csv(data), 1)
    t.add(g, "python csv module", sec, rate_of=n)
    rate = t.ours(g)["rate"]
    vs = t.ratio(g, "pyarrow read_csv, 4 typed columns, 1 thread")
    t.target("parse only, one core", ">= 6 M rec/s and >= 1.5x pyarrow",
             f"{rate / 1e6:.2f} M rec/s, {vs:.2f}x pyarrow", rate >= 6e6 and vs >= 1.5)


def run_ingest(t: Table, path: Path, n: int, rounds: int, work: Path) -> cdrtrace.Store:
    g = "ingest end to end, fresh store"
    stores = iter(range(1000))

    def fresh():
        return (cdrtrace.open(work / f"fresh-{next(stores)}", create=True),)

    def ours(store):
        summary = cdrtrace.ingest(store, [str(path)])
        stat = store.stats()["index"]
        store.close()
        return summary, stat
    sec, (summary, stat) = median_time(ours, rounds, fresh)
    assert summary.records == n and summary.rejected == 0
    t.add(g, "cdrtrace (committed)", sec, rate_of=n,
          index_bytes_per_line=round(stat["bytes"] / stat["lines"]), lines=stat["lines"])
    sec, _ = median_time(lambda: peers.ingest_duckdb(path, 1), rounds)
    t.add(g, "duckdb read_csv > arg_max > Arrow, 1 thread (unpersisted)", sec, rate_of=n)
    dbs = iter(range(1000))
    sec, _ = median_time(lambda d: peers.ingest_pyarrow_numpy_lmdb(path, d), rounds,
                         lambda: (work / f"pal-{next(dbs)}",))
    t.add(g, "pyarrow read_csv + numpy + py-lmdb putmulti", sec, rate_of=n)
    sec, last = median_time(lambda: peers.ingest_python_csv_dict(path), 1)
    t.add(g, "python csv + dict (unpersisted)", sec, rate_of=n)
    sqlite_db = work / "upsert.sqlite"
    sec, _ = median_time(lambda: peers.ingest_sqlite_upsert(path, sqlite_db), 1)
    t.add(g, "python csv + SQLite UPSERT, one transaction", sec, rate_of=n)
    rate = t.ours(g)["rate"]
    duck = t.ratio(g, "duckdb read_csv > arg_max > Arrow, 1 thread (unpersisted)")
    script = t.ratio(g, "python csv + dict (unpersisted)")
    t.target("ingest end to end, fresh store, committed", ">= 3 M rec/s; >= 2x DuckDB; >= 8x csv+dict",
             f"{rate / 1e6:.2f} M rec/s; {duck:.2f}x; {script:.1f}x",
             rate >= 3e6 and duck >= 2 and script >= 8)
    t.target("index size", "<= 200 bytes per line",
             f"{t.ours(g)['index_bytes_per_line']} bytes per line", t.ours(g)["index_bytes_per_line"] <= 200)

    g = "ingest, store already holds every line (steady state)"
    store = cdrtrace.open(work / "steady", create=True)
    cdrtrace.ingest(store, [str(path)])
    sec, summary = median_time(lambda: cdrtrace.ingest(store, [str(path)], force=True), rounds)
    assert summary.records == n and not summary.skipped
    t.add(g, "cdrtrace", sec, rate_of=n)
    rate = t.ours(g)["rate"]
    t.target("ingest, steady state", ">= 1.5 M rec/s", f"{rate / 1e6:.2f} M rec/s", rate >= 1.5e6)
    fresh = t.ours("ingest end to end, fresh store")["rate"]
    t.target("steady-state re-ingest vs fresh (issue 14)", ">= 0.8x fresh",
             f"{rate / fresh:.2f}x ({rate / 1e6:.2f} vs {fresh / 1e6:.2f} M rec/s)", rate / fresh >= 0.8)
    t.extra.update(last=last, sqlite=sqlite_db)
    return store


def run_lookup(t: Table, store: cdrtrace.Store, lookups: int) -> list[bytes]:
    g = "lookup of a line's last calls"
    with store.envs.read() as txn:
        keys = [bytes(k) for k, _ in txn.cursor(store.envs.db["index"])]
    random.Random(1).shuffle(keys)
    keys = (keys * (lookups // len(keys) + 1))[:lookups]
    with store.envs.read() as txn:
        p50, p99, mean = workloads.per_op(lambda k: store._last_calls_raw(k, txn), keys)
        t.add(g, "cdrtrace", mean / 1e6, p50_us=p50, p99_us=p99, mean_us=mean)
        db = store.envs.db["index"]
        p50, p99, mean = workloads.per_op(lambda k: txn.get(k, db=db), keys)
        t.add(g, "raw py-lmdb get", mean / 1e6, p50_us=p50, p99_us=p99, mean_us=mean)
    texts = [numbers.format_number(int.from_bytes(k, "big"))[2:] for k in keys]   # as written
    select = peers.sqlite_lookup(t.extra["sqlite"])
    p50, p99, mean = workloads.per_op(select, texts)
    t.add(g, "SQLite point SELECT", mean / 1e6, p50_us=p50, p99_us=p99, mean_us=mean)
    last = t.extra["last"]
    p50, p99, mean = workloads.per_op(last.get, texts)
    t.add(g, "python dict (in memory, unpersisted)", mean / 1e6, p50_us=p50, p99_us=p99,
          mean_us=mean)
    ours = t.ours(g)
    raw = next(r for r in t.groups[g] if r["name"] == "raw py-lmdb get")
    within = ours["mean_us"] / raw["mean_us"]
    t.target("lookup", "p50 <= 1.5 us, p99 <= 3 us, <= 1.5x raw get",
             f"p50 {ours['p50_us']:.2f} us, p99 {ours['p99_us']:.2f} us, {within:.2f}x",
             ours["p50_us"] <= 1.5 and ours["p99_us"] <= 3 and within <= 1.5)
    # the trace path from the line as a person types it: normalise, a new read txn, the get
    from cdrtrace.store import index

    typed = [f"({d[:3]}) {d[3:6]}-{d[6:]}" for d in texts[:100_000]]
    p50, p99, mean = workloads.per_op(
        lambda text: store._last_calls_raw(index.line_key(store.line(text))), typed)
    t.add(g, "cdrtrace, from the line as typed, new read txn", mean / 1e6, p50_us=p50,
          p99_us=p99, mean_us=mean)
    env = store.envs.env

    def raw_get(key):
        with env.begin() as txn:
            return txn.get(key, db=db)
    p50, p99, mean_raw = workloads.per_op(raw_get, keys[:100_000])
    t.add(g, "raw py-lmdb get, new read txn", mean_raw / 1e6, p50_us=p50, p99_us=p99,
          mean_us=mean_raw)
    t.target("trace-path lookup from the line as typed (issue 14)",
             "<= 1.5x raw get in a new read txn", f"{mean / mean_raw:.2f}x",
             mean / mean_raw <= 1.5)
    return keys


def run_trace(t: Table, store: cdrtrace.Store, keys: list[bytes], traces: int, work: Path) -> None:
    g = "durable trace"
    lines = [numbers.format_number(int.from_bytes(k, "big")) for k in keys[:traces]]
    at = "2026-03-03T00:00:00Z"
    p50, p99, mean = workloads.per_op(lambda line: store.trace(line, at=at), lines)
    t.add(g, "cdrtrace trace()", mean / 1e6, p50_us=p50, p99_us=p99, mean_us=mean)
    env = lmdb.open(str(work / "bare"), map_size=1 << 30, sync=True)
    value = b"x" * 400

    def commit(key):
        with env.begin(write=True) as txn:
            txn.put(key, value)
    p50, p99, mean = workloads.per_op(commit, [i.to_bytes(8, "big") for i in range(traces)])
    env.close()
    t.add(g, "bare durable LMDB commit", mean / 1e6, p50_us=p50, p99_us=p99, mean_us=mean)
    ours, bare = t.groups[g]
    t.target("trace() durable", "p50 <= 0.5 ms, p99 <= 2 ms, <= 2x bare commit",
             f"p50 {ours['p50_us'] / 1000:.3f} ms, p99 {ours['p99_us'] / 1000:.3f} ms, "
             f"{ours['p50_us'] / bare['p50_us']:.2f}x",
             ours["p50_us"] <= 500 and ours["p99_us"] <= 2000 and ours["p50_us"] <= 2 * bare["p50_us"])


def run_analytics(t: Table, traces: int, rounds: int, work: Path) -> None:
    g = f"repeat-origins over {traces:,} trace records"
    rows = workloads.synthetic_traces(traces)
    store = cdrtrace.open(work / "traces", create=True)
    store.envs.ewrite(lambda txn: trace_rows.bulk_load(txn, store.envs.db["trace_rows"], rows))
    store.report_rows(analyst="bench")            # compaction: once per segment, not timed
    ready = trace_rows.to_arrow(rows, analytics.REPEAT_COLUMNS)
    expected = analytics.repeat_origins(ready).num_rows
    sec, got = median_time(lambda: analytics.repeat_origins(
        store.trace_columns(analyst="bench", columns=analytics.REPEAT_COLUMNS)), rounds)
    assert got.num_rows == expected
    t.add(g, "cdrtrace, from the store", sec)
    sec, _ = median_time(lambda: analytics.repeat_origins(ready), rounds)
    t.add(g, "duckdb on a ready Arrow table", sec)
    import pandas as pd  # a test dependency, for this peer

    frame = ready.to_pandas()
    assert isinstance(frame, pd.DataFrame)

    sec, got = median_time(lambda: workloads.pandas_repeat_origins(frame), max(1, rounds - 1))
    assert len(got) == expected
    t.add(g, "pandas group-by on a ready frame", sec)
    store.close()
    slower = 1 / t.ratio(g, "duckdb on a ready Arrow table")
    t.target("repeat-origin report from the store", "<= 1.3x DuckDB on ready Arrow",
             f"{slower:.2f}x ({traces:,} traces)", slower <= 1.3)


def run_formats(t: Table, calls: int, rounds: int) -> None:
    g = "parse by format"
    columns, _ = synth.generate(calls, max(calls // 2, 1), seed=2026)
    n = len(columns["line"])
    worst = None
    for fmt, write in workloads.FORMAT_WRITERS.items():
        run = workloads.format_parser(fmt, write(columns, n))
        sec, got = median_time(run, rounds)
        assert got == n, (fmt, got, n)
        row = t.add(g, f"cdrtrace {fmt}", sec, rate_of=n)
        share = row["rate"] / t.ours(g)["rate"]
        row["share_of_asterisk"] = round(share, 2)
        if worst is None or share < worst[1]:
            worst = (fmt, share)
    t.target("other formats", ">= 0.5 of the Asterisk parse rate",
             f"lowest: {worst[0]} {worst[1]:.2f}", worst[1] >= 0.5)


def run_memory(t: Table, path: Path, n: int, work: Path) -> None:
    peak = ingest_child(path, work / "memory-store")
    t.add("peak memory of an ingest", "cdrtrace ingest (child process)", peak["seconds"],
          rate_of=n, peak_rss_mb=peak["peak_rss_mb"], anon_mb=peak["anon_mb"])
    t.target(f"memory ({n:,} records)", "peak RSS <= 300 MB",
             f"{peak['peak_rss_mb']} MB ({peak['anon_mb']} MB anonymous)", peak["peak_rss_mb"] <= 300)


def run_streaming(t: Table, seconds: float, work: Path) -> None:
    from . import streaming

    g = "streaming: append-to-visible latency at 50 K rec/s offered"
    lines = streaming.traffic(500_000)
    for kind, name in (("cdrtrace", "cdrtrace ingest --follow"),
                       ("python-tail-lmdb", "python tail + csv + py-lmdb, same batching")):
        r = streaming.latency(kind, lines, 50_000, seconds, 50.0, work)
        t.add(g, name, r["p99_ms"] / 1000, p50_ms=r["p50_ms"], p99_ms=r["p99_ms"],
              lost=r["lost"], anon_rss_mb=f"{r['rss_anon_mb_after_2s']} -> {r['rss_anon_mb_end']}")
    ours = t.ours(g)
    t.target("streaming append-to-visible (issue 5)", "p99 <= 100 ms at 50 K rec/s",
             f"p99 {ours['p99_ms']:.1f} ms", ours["p99_ms"] <= 100 and ours["lost"] == 0)


# ------------------------------------------------------------------ issue 14's goals

def run_whole_process(t: Table, path: Path, n: int, rounds: int, work: Path) -> None:
    """`cdrtrace ingest` as a whole process (interpreter, imports, a fresh store) against
    DuckDB read_csv > arg_max > Arrow on one thread, also a whole process; and the CPU
    the ingest used (it may use both cores)."""
    import resource

    g = "ingest as a whole process, fresh store"
    warm(path)     # both read it from the page cache: the first round would otherwise pay
                   # the disk for one of them
    walls, cpus = [], []
    for i in range(rounds):
        store = work / f"whole-{i}"
        subprocess.run([sys.executable, "-m", "cdrtrace.cli", "init", "--db", str(store)],
                       check=True, capture_output=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", str(path), "--db",
                        str(store)], check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        shutil.rmtree(store, ignore_errors=True)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    t.add(g, "cdrtrace ingest (process)", wall, rate_of=n, cpu_seconds=round(cpu, 3))
    duck = [sys.executable, "-c", "import sys; from bench import peers; "
            "peers.ingest_duckdb(sys.argv[1], 1)", str(path)]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(duck, check=True, capture_output=True, cwd=HERE.parent)
        times.append(time.perf_counter() - started)
    t.add(g, "duckdb read_csv > arg_max > Arrow, 1 thread (process, unpersisted)",
          statistics.median(times), rate_of=n)
    vs = t.ratio(g, "duckdb read_csv > arg_max > Arrow, 1 thread (process, unpersisted)")
    t.target("cdrtrace ingest whole process vs DuckDB, 1 thread (issue 14)", ">= 2x",
             f"{vs:.2f}x", vs >= 2)
    t.target("the same per core used (issue 14)", ">= 3 M rec/s of CPU time",
             f"{n / cpu / 1e6:.2f} M rec/s ({cpu:.2f} s CPU in {wall:.2f} s)", n / cpu >= 3e6)


def warm(path: Path) -> None:
    """Read a file once so that a timed run reads it from the page cache, not the disk
    (another run's inputs may have pushed it out: 130 MB/s from this machine's disk)."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def run_lines_scaling(t: Table, records: int, work: Path, rounds: int = 3) -> None:
    """The same records over 10 K and over `records` distinct lines: the rate kept, and
    the peak anonymous memory of each (child processes, alternating, the median of
    `rounds` each: one child run swings with the machine)."""
    paths = input_file(records, 10_000), input_file(records, records)
    for path in paths:
        warm(path)
    runs: tuple[list[dict], list[dict]] = ([], [])
    for _ in range(rounds):
        for path, got in zip(paths, runs, strict=True):
            got.append(ingest_child(path, work / "lines-store"))
    # the median round's rate, and the worst memory of any round
    few, many = ({**sorted(got, key=lambda run: run["rate"])[len(got) // 2],
                  "anon_mb": max(run["anon_mb"] for run in got)} for got in runs)
    g = f"ingest of {records:,} records by distinct lines (child process)"
    for lines, run in (("10 K", few), (f"{records:,}", many)):
        t.add(g, f"cdrtrace ingest, {lines} lines", run["seconds"], rate_of=records,
              anon_mb=run["anon_mb"], peak_rss_mb=run["peak_rss_mb"])
    kept = many["rate"] / few["rate"]
    t.target(f"rate at {records:,} lines / at 10 K lines (issue 14)", ">= 0.8", f"{kept:.2f}",
             kept >= 0.8)
    worst = max(few["anon_mb"], many["anon_mb"])
    t.target("peak anonymous memory of an ingest (issue 14)", "<= 300 MB",
             f"{few['anon_mb']} MB (10 K lines), {many['anon_mb']} MB ({records:,} lines)",
             worst <= 300)


def run_startup(t: Table) -> None:
    """`import cdrtrace` and `cdrtrace --help`, whole processes, best of 5."""
    g = "start-up"
    for name, argv in (("import cdrtrace", [sys.executable, "-c", "import cdrtrace"]),
                       ("cdrtrace --help", [sys.executable, "-m", "cdrtrace.cli", "--help"]),
                       ("python alone", [sys.executable, "-c", "pass"])):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        t.add(g, name, min(times))
    rows = {r["name"]: r["seconds"] for r in t.groups[g]}
    worst = max(rows["import cdrtrace"], rows["cdrtrace --help"])
    t.target("import cdrtrace / cdrtrace --help, whole process (issue 14)", "<= 100 ms",
             f"{rows['import cdrtrace'] * 1000:.0f} ms / {rows['cdrtrace --help'] * 1000:.0f} ms "
             f"(python alone {rows['python alone'] * 1000:.0f} ms)", worst <= 0.1)


# ------------------------------------------------------------------ scaling

def ingest_child(path: Path, store: Path) -> dict:
    """Ingest path into a fresh store in a child process; its rate, peak RSS, store size."""
    shutil.rmtree(store, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "cdrtrace.cli", "init", "--db", str(store)],
                   check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "cdrtrace.cli", "ingest", str(path), "--db",
                             str(store), "--json"], stdout=subprocess.PIPE, text=True)
    peak = {"VmHWM": 0, "RssAnon": 0}
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in peak:
                        peak[key] = max(peak[key], int(value.split()[0]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"ingest of {path} failed ({proc.returncode})")
    summary = json.loads(out)
    data = store / "data.mdb"
    result = {"records": summary["records"], "seconds": summary["seconds"],
              "rate": summary["records_per_second"], "peak_rss_mb": peak["VmHWM"] // 1024,
              "anon_mb": peak["RssAnon"] // 1024,
              "store_mb": round(os.stat(data).st_blocks * 512 / 2**20, 1)}
    with cdrtrace.open(store) as s:
        stat = s.stats()["index"]
    result["lines"] = stat["lines"]
    result["index_bytes_per_line"] = round(stat["bytes"] / max(stat["lines"], 1))
    shutil.rmtree(store, ignore_errors=True)
    return result


def run_scaling(records_sizes, lines_sizes, lines_fixed: int, records_fixed: int, work: Path,
                keep_data: bool, t: Table | None = None) -> dict:
    """Ingest rate, store size and peak RSS across input sizes and distinct lines."""
    runs = {"by_records": [], "by_lines": []}
    grid = [("by_records", r, lines_fixed) for r in records_sizes]
    grid += [("by_lines", records_fixed, lines) for lines in lines_sizes]
    done = {}
    for axis, records, lines in grid:
        if (records, lines) not in done:
            print(f"  [scaling] {records:,} records, {lines:,} lines ...", file=sys.stderr, flush=True)
            path = input_file(records, lines)
            if records < 50_000_000:     # the 100 M input (27 GB) cannot stay in memory
                warm(path)
            done[(records, lines)] = {"records_asked": records, "lines_asked": lines,
                                      **ingest_child(path, work / "scaling-store")}
            if not keep_data and records >= 50_000_000:
                path.unlink()                    # tens of GB: regenerate rather than keep
            print(f"  [scaling] {done[(records, lines)]}", file=sys.stderr, flush=True)
        runs[axis].append(done[(records, lines)])
    if t is not None and len(runs["by_records"]) >= 2:
        first, last = runs["by_records"][0], runs["by_records"][-1]
        kept = last["rate"] / first["rate"]
        t.target(f"growth: rate at {last['records']:,} vs {first['records']:,} records",
                 "within 20% (>= 0.80)", f"{kept:.2f}", kept >= 0.8)
        worst = max(r["peak_rss_mb"] for r in runs["by_records"] + runs["by_lines"])
        t.target("memory, any input size (scaling runs)", "peak RSS <= 300 MB",
                 f"max {worst} MB", worst <= 300)
    return runs


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "cdrtrace": cdrtrace.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().upper()
        scale = {"K": 1_000, "M": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("KM")) * scale))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: under a minute")
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--lines", type=int, help="distinct called lines (default records / 2)")
    ap.add_argument("--traces", type=int, default=10_000_000, help="trace records for the report")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--scaling-records", default="1M,10M,100M")
    ap.add_argument("--scaling-lines", default="10K,1M,10M")
    ap.add_argument("--keep-data", action="store_true", help="keep the 100 M input (27 GB)")
    ap.add_argument("--stream-seconds", type=float, default=10.0)
    ap.add_argument("--json", help="write the results here (default bench/results/compare.json; "
                    "--quick: not written unless given)")
    args = ap.parse_args(argv)
    if args.quick:
        args.records, args.traces, args.rounds = 100_000, 200_000, 1
        args.stream_seconds, args.no_scaling = 2.0, True
    lines = args.lines or max(args.records // 2, 1)
    t = Table()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cdrtrace-compare-") as tmp:
        work = Path(tmp)
        path = input_file(args.records, lines)
        n = count_records(path)
        run_parse(t, path, n, args.rounds)
        store = run_ingest(t, path, n, args.rounds, work)
        keys = run_lookup(t, store, 20_000 if args.quick else 200_000)
        run_trace(t, store, keys, 100 if args.quick else 300, work)
        store.close()
        run_analytics(t, args.traces, args.rounds, work)
        run_formats(t, 50_000 if args.quick else 500_000, args.rounds if args.quick else 5)
        run_memory(t, path, n, work)
        run_whole_process(t, path, n, args.rounds, work)
        run_lines_scaling(t, 200_000 if args.quick else 4_000_000, work, 1 if args.quick else 3)
        run_startup(t)
        run_streaming(t, args.stream_seconds, work)
        scaling = None
        if not args.no_scaling:
            scaling = run_scaling(_sizes(args.scaling_records), _sizes(args.scaling_lines),
                                  1_000_000, 10_000_000, work, args.keep_data, t)
    result = {"machine": machine(), "records": n, "lines": lines, "traces": args.traces,
              "quick": args.quick, "seconds": round(time.perf_counter() - started, 1),
              "groups": t.groups, "targets": t.targets}
    print(f"cdrtrace side by side: {n:,} records, {lines:,} lines, medians of {args.rounds} "
          f"round(s); {result['machine']['cpu']}, {result['machine']['cores']} cores")
    print(t.render())
    out = args.json or (None if args.quick else str(RESULTS / "compare.json"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, default=str))
        print(f"results: {out}")
    if scaling is not None:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "scaling.json").write_text(json.dumps({"machine": result["machine"], **scaling},
                                                         indent=1))
        from . import plot

        print(f"plot: {plot.draw(RESULTS / 'scaling.json', RESULTS / 'scaling.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
