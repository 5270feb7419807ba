"""The trace service benchmark's C tools (bench/load.c, the clients; bench/floor.c, the
wire exchange without a trace): they build without a warning, and the floor speaks the
same exchange as the service, so that its figures are a floor for the service's."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cdrtrace.service import agi

BENCH = Path(__file__).resolve().parent.parent / "bench"


def build(tmp_path: Path, name: str) -> str:
    exe = tmp_path / name
    done = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-Werror",
                           "-o", str(exe), str(BENCH / f"{name}.c")], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return str(exe)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def floor(tmp_path):
    exe = build(tmp_path, "floor")
    running = []

    def start(mode: str) -> int:
        port = free_port()
        proc = subprocess.Popen([exe, mode, str(port)], stdout=subprocess.PIPE, text=True)
        running.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return port
    yield start
    for proc in running:
        proc.terminate()
        proc.wait(10)


def test_the_floor_sets_what_the_service_sets_over_fastagi(floor):
    # the same three SET VARIABLE commands, each answered before the next: the same round trips
    variables = agi.dial("127.0.0.1", floor("agi"), "+13035550110", "2026-03-03T12:00:00Z")
    assert sorted(variables) == ["COT_ANNOUNCEMENT", "COT_OUTCOME", "COT_TRACE_ID"]
    assert variables["COT_OUTCOME"] == "success"


def test_the_floor_answers_a_trace_request_over_http_keep_alive(floor):
    port = floor("http")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for line in ("+13035550110", "+13035550111"):      # one connection, two requests
            r = client.post("/v1/trace", json={"line": line}, headers={"Authorization": "Bearer x"})
            assert r.status_code == 200 and r.json()["outcome"] == "success"


@pytest.mark.parametrize("mode", ["agi", "http"])
def test_the_load_generator_drives_the_floor(tmp_path, floor, mode):
    load = build(tmp_path, "load")
    lines = tmp_path / "lines"
    lines.write_text("".join(f"+1303555{i:04d}\n" for i in range(50)))
    done = subprocess.run([load, mode, str(floor(mode)), "8", "200", str(lines),
                           "2026-03-03T12:00:00Z", "token"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["traces"] == 200 and result["success"] == 200
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_the_service_benchmark_traces_each_line_once(tmp_path):
    """bench.service deals each run distinct lines: a run given fewer lines than traces
    stops (load.c would go round them again, and most traces would be already_traced),
    and its largest --traces finds lines enough for every run over the wire."""
    from bench import service
    from cdrtrace import synth

    with pytest.raises(SystemExit, match="8 traces need 8 lines"):
        service.over_the_wire("load", "http", 1, 1, 8, ["+13035550110"] * 7, "-", 1,
                              str(tmp_path))
    columns, _ = synth.generate(*service.STORE, seed=9)      # make_store's calls
    assert len(set(columns["line"].tolist())) >= 18 * service.MAX_TRACES


def test_the_service_benchmark_times_the_durable_commit_alone(tmp_path, capsys):
    """bench.service's commit floor: LMDB commits of a group commit's records, timed one
    by one, with the p99 of two in a row (what a trace arriving during a commit waits
    for), printed beside the goals."""
    import lmdb

    from bench import service

    row = service.commit_floor(str(tmp_path), commits=40, records=4)
    assert row["path"] == "commit floor" and row["commits"] == 40 and row["records"] == 4
    assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["two_p99_ms"]
    env = lmdb.open(str(tmp_path / "commit-floor"), readonly=True)
    try:
        assert env.stat()["entries"] == 20_000 + 40 * 4      # each commit durable, kept
    finally:
        env.close()
    wire = {"path": "fastagi", "clients": 64, "commit": "group", "traces_per_second": 9000,
            "p50_ms": 3.0, "p99_ms": 4.0, "server_cpu_us": 60, "traces": 10}
    service.report([wire, row])
    out = capsys.readouterr().out
    assert "fastagi  p99 <= 5 ms" in out
    assert (f"the durable commit alone (4 records, 40 commits): p50 {row['p50_ms']} ms, "
            f"p99 {row['p99_ms']} ms") in out
    assert f"p99 {row['two_p99_ms']} ms" in out


def test_the_service_benchmark_says_how_many_rounds_met_each_goal(capsys):
    """bench.service --rounds: each round's goals, then per path how many rounds met
    p99 <= 5 ms and 5x one commit per trace (a p99 of exactly 5 ms meets it)."""
    from bench import service

    def row(path, commit, rate, p99, n):
        return {"path": path, "clients": 64, "commit": commit, "traces_per_second": rate,
                "p50_ms": 3.0, "p99_ms": p99, "server_cpu_us": 60, "traces": 10, "round": n}
    results = [row("fastagi", "group", 10_000, 4.5, 1), row("fastagi", "one per trace", 1_000, 40, 1),
               row("fastagi", "group", 10_000, 5.0, 2), row("fastagi", "one per trace", 2_500, 40, 2),
               row("fastagi", "group", 10_000, 6.1, 3), row("fastagi", "one per trace", 1_000, 40, 3),
               row("http", "group", 9_000, 5.2, 1), row("http", "group", 9_000, 4.9, 3),
               row("python", "group", 6_000, 9.0, 1), row("python", "one per trace", 1_000, 60, 1)]
    service.report(results)
    out = capsys.readouterr().out
    assert out.count("--- round ") == 3 and "--- round 3 of 3" in out
    assert "issue 13's goals at 64 clients, over 3 rounds" in out
    assert "fastagi  p99 <= 5 ms                  met in 2 of 3: p99 4.5, 5.0, 6.1 ms" in out
    assert "fastagi  >= 5x one commit per trace   met in 2 of 3: 10.0x, 4.0x, 10.0x" in out
    assert "http     p99 <= 5 ms                  met in 1 of 2: p99 5.2, 4.9 ms" in out
    summary = out.split("over 3 rounds")[1]
    assert "http     >= 5x" not in summary                            # no baseline measured
    assert "python   >= 5x one commit per trace   met in 1 of 1: 6.0x" in summary
    assert "python   p99" not in summary                              # the wire's goal alone
    service.report([{**r, "round": 1} for r in results[:2]])          # one round: as before
    out = capsys.readouterr().out
    assert "--- round" not in out and "over 1 rounds" not in out
    assert "fastagi  p99 <= 5 ms                  p99    4.5 ms  met" in out


def test_the_service_benchmark_reads_the_commits_a_run_made(tmp_path, capsys):
    """bench.service reads the service's commits before and after each run (/metrics):
    traces one after the other commit alone, one commit each; the report prints how many
    traces a commit carried and the run's time over its commits."""
    from test_service import Service

    import cdrtrace
    from bench import service
    from conftest import cdr, cdr_file

    store = cdrtrace.open(tmp_path / "s", create=True)
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr())])
    running = Service(store)
    try:
        before = service.commits(running.ports["http"])
        for _ in range(3):
            store.trace("3035550110", at="2026-03-03T00:00:00Z")
        after = service.commits(running.ports["http"])
    finally:
        running.stop()
        store.close()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3)
    row = {"path": "http", "clients": 64, "commit": "group", "traces_per_second": 9000,
           "p50_ms": 3.0, "p99_ms": 4.0, "server_cpu_us": 60, "traces": 10,
           "traces_per_commit": 31.5, "ms_per_commit": 1.42}
    python = {"path": "python", "clients": 64, "traces": 10, "p50_ms": 4.0, "p99_ms": 8.0}
    service.report([row, {**python, "commit": "group", "traces_per_second": 9900},
                    {**python, "commit": "one per trace", "traces_per_second": 2000}])
    out = capsys.readouterr().out
    assert "group/one  a commit: traces, ms" in out and "  31.5, 1.42" in out
    assert "python   >= 5x one commit per trace      4.9x      missed" in out   # 4.95x
    assert "python   p99" not in out                     # the p99's goal is the wire's alone
    assert "mean latency is 64 over the rate: http 7.11 ms;" in out


def test_the_disk_benchmark_measures_each_design_and_leaves_nothing(tmp_path, capsys):
    """bench.disk makes its commits on one file and on two at once, then the log's flushes
    alone and beside each load of pages, prints a line for each, and removes its files."""
    from bench import disk

    rows = disk.main(["--commits", "4", "--dir", str(tmp_path), "--json",
                      str(tmp_path / "rows.json")])
    assert [r["path"] for r in rows] == ["1 writer", "2 writers", "log", "log", "log", "log",
                                         *["by size"] * len(disk.SIZES), "fit"]
    assert [r["n"] for r in rows[:-1]] == [4, 8, 24, 24, 24, 24, *[4] * len(disk.SIZES)]
    assert [r["beside_pages"] for r in rows[2:6]] == [0] + [p for p, _ in disk.BESIDE]
    assert "beside_p50_ms" not in rows[2] and all("beside_p50_ms" in r for r in rows[3:6])
    assert [r["pages"] for r in rows[6:-1]] == list(disk.SIZES)
    fit = rows[-1]       # a real disk's times: its sign is the disk's, not asserted here
    assert isinstance(fit["page_us"], float) and (
        fit["traces_per_second_bound"] is None) == (fit["page_us"] <= 0)
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]
    out = capsys.readouterr().out
    assert out.count("\n") == 7 + len(disk.SIZES) + 1 and "two writers make " in out
    assert (f"us a page apart: a trace's {disk.TRACE_PAGES:.2f} pages allow at most " in out
            or "did not rise with its pages" in out)


def test_the_disk_benchmark_fits_a_commits_fixed_cost_and_its_cost_a_page(monkeypatch):
    """The line through the sizes' median times: here commits that take 0.2 ms and 30 us
    a page, whose trace's 1.44 pages allow 1 / (30 us x 1.44) traces/s; one commit of a
    size the disk held up for 70 ms does not move it (a mean would)."""
    from bench import disk

    held = iter(range(10_000))
    monkeypatch.setattr(disk, "commit", lambda fd, rnd, pages, page: 0.0002 + 30e-6 * pages
                        + (0.07 if pages == disk.SIZES[1] and next(held) == 0 else 0.0))
    rows = disk.by_size(-1, 3, b"")
    assert [(r["pages"], r["p50_ms"], r["n"]) for r in rows[:-1]] == [
        (n, round((0.2 + 0.03 * n), 2), 3) for n in disk.SIZES]
    assert rows[-1] == {"path": "fit", "fixed_ms": 0.2, "page_us": 30.0,
                        "traces_per_second_bound": round(1 / (30e-6 * 46 / 32))}


def test_the_disk_benchmark_gives_no_bound_when_its_times_do_not_rise_with_the_pages(
        monkeypatch, tmp_path, capsys):
    """Commits whose times fall as their pages grow (a disk's phases over a few commits)
    fit a line that bounds nothing: no bound, and the line says so and what to do."""
    from bench import disk

    monkeypatch.setattr(disk, "commit", lambda fd, rnd, pages, page: 0.01 - 30e-6 * pages)
    fit = disk.by_size(-1, 3, b"")[-1]
    assert fit["page_us"] == -30.0 and fit["traces_per_second_bound"] is None
    writers = [{"path": path, "p50_ms": 1.0, "p99_ms": 2.0, "commits_per_second": rate}
               for path, rate in (("1 writer", 500), ("2 writers", 550))]
    monkeypatch.setattr(disk, "measure", lambda folder, commits: [*writers, fit])
    disk.main(["--commits", "3", "--dir", str(tmp_path)])
    assert "did not rise with its pages (-30.0 us a page apart): the disk's phases swamped " \
        "them, so no bound; measure again, with more --commits" in capsys.readouterr().out


@pytest.mark.parametrize("args, says", [
    (["--commits", "0"], "--commits: '0' is not a whole number of at least 1"),
    (["--commits", "many"], "--commits: 'many' is not a whole number of at least 1"),
    (["--dir", "/nonexistent/folder"], "cannot measure in /nonexistent/folder: No such file"),
])
def test_the_disk_benchmark_refuses_what_it_cannot_measure(args, says, capsys):
    from bench import disk

    with pytest.raises(SystemExit) as stopped:
        disk.main(args)
    assert stopped.value.code in (1, 2) and says in capsys.readouterr().err


def test_the_benchmarks_say_when_their_folder_is_in_memory(tmp_path):
    """A flush on tmpfs costs nothing: bench.disk and bench.service warn that their figures
    then say nothing of a disk. The folder's mount is the longest mount point above it."""
    from bench import disk

    mounts = tmp_path / "mounts"        # the paths are made up: none is looked up on disk
    mounts.write_text("/dev/vda / ext4 rw 0 0\n/dev/vdb /zz-run/store xfs rw 0 0\n"
                      "tmpfs /zz-run tmpfs rw 0 0\ntmpfs /zz-srv/my\\040disk tmpfs rw 0 0\n")
    assert [disk.filesystem(p, str(mounts)) for p in (
        "/zz-run/x", "/zz-run/store/s", "/zz-running", "/zz-srv/my disk/a", "/", "/zz-srv/my")] == [
        "tmpfs", "xfs", "ext4", "tmpfs", "ext4", "ext4"]
    said = disk.in_memory("/zz-run/x", "set TMPDIR elsewhere", str(mounts))
    assert said == ("warning: /zz-run/x is on tmpfs, in memory: its flushes say nothing of a "
                    "disk's; set TMPDIR elsewhere")
    assert disk.in_memory("/zz-run/store/s", mounts_file=str(mounts)) is None
    assert disk.filesystem("/", str(tmp_path / "none")) == ""


def test_the_later_calls_benchmark_runs_both_sides_and_says_the_ratio():
    """bench.later_calls: the next day's ingest with the check and without it, and the
    first check alone; then another switch's file of the same day read late, a tenth of
    its calls ring groups (no time asserted: a benchmark's figures are its own)."""
    done = subprocess.run([sys.executable, "-m", "bench.later_calls", "--calls", "20000",
                           "--lines", "2000", "--traced", "100", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120,
                          cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr
    assert "100 lines traced of 2,000" in done.stdout and "ratio" in done.stdout
    assert "us a trace" in done.stdout
    late = subprocess.run([sys.executable, "-m", "bench.later_calls", "--calls", "20000",
                           "--lines", "2000", "--traced", "100", "--rounds", "1", "--late",
                           "--groups", "0.1"], capture_output=True, text=True, timeout=120,
                          cwd=BENCH.parent)
    assert late.returncode == 0, late.stderr
    assert "of the same day (10% ring groups)" in late.stdout and "ratio" in late.stdout


def test_the_hunt_traces_benchmark_runs_both_sides_and_says_the_ratio():
    """bench.hunt_traces: the same traces with and without ring groups in the day (no time
    asserted: a benchmark's figures are its own)."""
    done = subprocess.run([sys.executable, "-m", "bench.hunt_traces", "--calls", "20000",
                           "--traces", "50"], capture_output=True, text=True, timeout=120,
                          cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr
    assert "ms a trace without ring groups" in done.stdout and "ratio" in done.stdout
