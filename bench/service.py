"""The trace service under load: durable traces/s and p50/p99 latency at 1, 8 and 64
concurrent loopback clients over FastAGI, over HTTP and through the Python API, with
group commit and, in the same run, one commit per trace (CDRTRACE_GROUP_COMMIT=0).

    python -m bench.service [--traces N] [--rounds N] [--workers N] [--tls] [--json FILE]

The service runs as `cdrtrace serve` in its own process (as in production), on a fresh
copy of the same store for each way of committing. Its clients are bench/load.c (built
here with the C compiler the native extension needs), so that they take as little of
the shared cores as possible: FastAGI opens a connection per trace as Asterisk does,
HTTP keeps one connection per client. Every answer is a durable trace (its evidence
flushed first). The Python API's clients are threads in this process. Also printed: the
service's CPU per trace (all its processes and threads, from /proc).

In the same run, the same clients drive bench/floor.c: a responder in C that speaks only
the wire exchange of a trace and does no trace (no lookup, no evidence, no commit). Its
rate and latency are the floor no implementation of the service can beat on this
machine: what the loopback exchange alone costs the shared cores.

With --tls, HTTP at 64 clients once more, over TLS (`serve --tls-cert`, a certificate
made here with the openssl command; load.c built with OpenSSL, each connection's
handshake made before the clock starts): uvicorn then serves every request, as the C
exchange reads plain HTTP only.

Last, the durable commit alone on the store's file system (commit_floor): LMDB commits of
as many records as a commit carries at 64 clients, timed one by one. A trace waits for
the commit under way and then for its own, so the p99 of two commits back to back is
part of any trace's p99 here, whatever the service does around them.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx

import cdrtrace
from cdrtrace import synth
from cdrtrace.parsing import numbers

from . import disk

CONCURRENCY = (1, 8, 64)
AT = "2026-03-03T12:00:00Z"
MAX_TRACES = 3000
COMMIT_RECORDS = 32     # records a commit carries at 64 clients (BENCHMARKS.md: 31-32)
# calls and lines of the store: 57,226 lines receive calls, and each run traces each line
# once, 18 x --traces of them over the wire (1 + 4 + 4 a way in), so up to MAX_TRACES
STORE = (200_000, 100_000)


def make_store(folder: str) -> tuple[str, list[str], str]:
    db = os.path.join(folder, "store")
    columns, _ = synth.generate(*STORE, seed=9)
    source = os.path.join(folder, "m.csv")
    with open(source, "wb") as f:
        f.write(synth.format_asterisk(columns, 0, len(columns["line"])))
    store = cdrtrace.open(db, create=True, audit_key_file=os.path.join(folder, "audit.key"))
    cdrtrace.ingest(store, [source])
    token = store.tokens.create("bench", "switch")
    lines = sorted({numbers.format_number(int(x)) for x in columns["line"]})   # E.164, as typed
    store.close()
    return db, lines, token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db: str, group: bool, workers: int = 1, pin: bool = False,
          agi_listener: str = "native", http_listener: str = "native",
          tls: tuple[str, str] | None = None) -> tuple[subprocess.Popen, int, int]:
    """`cdrtrace serve` on db, once it answers; tls: (certificate, key) to serve HTTPS."""
    http, agi = free_port(), free_port()
    env = {**os.environ, "CDRTRACE_GROUP_COMMIT": "1" if group else "0",
           "CDRTRACE_AGI": agi_listener, "CDRTRACE_HTTP": http_listener}
    proc = subprocess.Popen([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", db,
                             "--http", f"127.0.0.1:{http}", "--agi", f"127.0.0.1:{agi}",
                             "--workers", str(workers)] + (["--pin"] if pin else [])
                            + (["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else []),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{http}/healthz"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, verify=False).status_code == 200:
                return proc, http, agi
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the service did not start")


HERE = os.path.dirname(os.path.abspath(__file__))


def build(folder: str, name: str, tls: bool = False) -> str:
    """bench/NAME.c, built (warnings are errors, as for the extension); tls: with
    OpenSSL (-DLOAD_TLS), as NAME-tls."""
    exe = os.path.join(folder, name + ("-tls" if tls else ""))
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe,
                    os.path.join(HERE, f"{name}.c")]
                   + (["-DLOAD_TLS", "-lssl", "-lcrypto"] if tls else []), check=True)
    return exe


def certificate(folder: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def tls_rows(args, folder: str, pristine: str, lines: list[str], token: str,
             exe: str) -> list[dict]:
    """HTTP at 64 clients over TLS, on a fresh copy of the store (group commit)."""
    db = os.path.join(folder, "serving-tls")
    shutil.rmtree(db, ignore_errors=True)
    shutil.copytree(pristine, db)
    proc, http, _ = start(db, True, args.workers, args.pin, tls=certificate(folder))
    try:
        count = args.traces * 4
        row = over_the_wire(exe, "https", http, 64, count, lines[:count], token, proc.pid,
                            folder)
    finally:
        proc.terminate()
        proc.wait(30)
    row["commit"] = "group"
    print(row, flush=True)
    return [row]


def load_generator(folder: str) -> str:
    """bench/load.c, the clients."""
    return build(folder, "load")


def floor_rows(folder: str, load: str, lines: list[str], count: int) -> list[dict]:
    """The same clients against bench/floor.c (the wire exchange, no trace): FastAGI and
    HTTP at each concurrency."""
    exe, rows = build(folder, "floor"), []
    for kind in ("fastagi", "http"):
        port = free_port()
        proc = subprocess.Popen([exe, "agi" if kind == "fastagi" else "http", str(port)],
                                stdout=subprocess.PIPE, text=True)
        try:
            if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                raise SystemExit("the floor responder did not start")
            for clients in CONCURRENCY:
                n = count * (1 if clients == 1 else 4)
                row = over_the_wire(load, kind, port, clients, n, lines[:n], "-", proc.pid,
                                    folder)
                row["commit"] = "floor (no trace)"
                rows.append(row)
                print(row, flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


def commit_floor(folder: str, commits: int = 2000, records: int = COMMIT_RECORDS) -> dict:
    """Durable LMDB commits alone, in folder: `commits` commits of `records` new 1 KB
    records each, at random keys of a database holding 20,000 (a page or more a record,
    as the traces of a group commit dirty the evidence's pages: about 60 writes, one
    flush, the meta page's synchronous write). Their p50/p99, and the p99 of two in a
    row: what a trace that arrives during a commit waits for before its own answer can
    go."""
    import lmdb

    env = lmdb.open(os.path.join(folder, "commit-floor"), map_size=1 << 30)
    rnd, value = random.Random(5), bytes(1000)
    try:
        with env.begin(write=True) as txn:
            for _ in range(20_000):
                txn.put(rnd.randbytes(8), value)
        took = []
        for _ in range(commits):
            txn = env.begin(write=True)
            for _ in range(records):
                txn.put(rnd.randbytes(8), value)
            started = time.perf_counter()
            txn.commit()
            took.append(time.perf_counter() - started)
    finally:
        env.close()
    two = [a + b for a, b in zip(took, took[1:], strict=False)]
    return {"path": "commit floor", "records": records, "commits": commits,
            **disk.quantiles(took), "two_p99_ms": disk.quantiles(two)["p99_ms"]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the --workers), from /proc."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def commits(http_port: int) -> tuple[float, float]:
    """The service's shared commits so far, and the traces they carried (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    values = dict(line.split(" ", 1) for line in text.splitlines()
                  if line.startswith(("cdrtrace_trace_commits_total ",
                                      "cdrtrace_traces_committed_total ")))
    return (float(values["cdrtrace_trace_commits_total"]),
            float(values["cdrtrace_traces_committed_total"]))


def over_the_wire(exe: str, kind: str, port: int, clients: int, count: int, lines: list[str],
                  token: str, server: int, folder: str, metrics: int | None = None) -> dict:
    """count traces (of the lines given, each once) from `clients` C clients; the rate,
    latencies, outcomes and the server's CPU; given the service's plain HTTP port
    (metrics), its commits in the run too: how many traces a commit carried, and the run's
    time over its commits (at 64 clients the committer is never idle: what a commit's
    cycle took, its work, flush and answers)."""
    if len(lines) < count:      # load.c would go round the lines again: already traced
        raise SystemExit(f"{count} traces need {count} lines, and only {len(lines)} are left")
    todo = os.path.join(folder, "todo")
    with open(todo, "w") as f:
        f.write("\n".join(lines[:count]) + "\n")
    before = cpu_seconds(server)
    committed = commits(metrics) if metrics else None
    done = subprocess.run([exe, "agi" if kind == "fastagi" else kind, str(port), str(clients),
                           str(count), todo, AT, token], capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise SystemExit(f"the load generator failed: {done.stderr.strip()}")
    r = json.loads(done.stdout)
    row = {"path": kind, "clients": clients, "traces": count,
           "traces_per_second": round(count / r["seconds"]),
           "p50_ms": round(r["p50_ms"], 2), "p99_ms": round(r["p99_ms"], 2),
           "max_ms": round(r["max_ms"], 2),
           "server_cpu_us": round((cpu_seconds(server) - before) / count * 1e6),
           "outcomes": {k: r[k] for k in ("success", "untraceable", "no_call",
                                          "already_traced") if r[k]}}
    if committed is not None:
        after = commits(metrics)
        made, carried = after[0] - committed[0], after[1] - committed[1]
        if made:
            row["traces_per_commit"] = round(carried / made, 1)
            row["ms_per_commit"] = round(r["seconds"] / made * 1000, 2)
    return row


def measure(kind: str, clients: int, count: int, lines: list[str], target) -> dict:
    """count traces (of the lines given, each once) by `clients` threads; their
    latencies and the rate."""
    todo = lines[:count]
    per_client = [todo[i::clients] for i in range(clients)]

    def client(mine: list[str]) -> list[float]:
        session = target("session")
        took = []
        for line in mine:
            t = time.perf_counter()
            outcome = target(session, line)
            took.append(time.perf_counter() - t)
            assert outcome in ("success", "untraceable", "no_call", "already_traced"), outcome
        return took

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = [x for part in pool.map(client, per_client) for x in part]
    seconds = time.perf_counter() - started
    return {"path": kind, "clients": clients, "traces": count,
            "traces_per_second": round(count / seconds), **disk.quantiles(latencies)}


def run(args) -> list[dict]:
    """Every round's rows (each with its "round", from 1), on one store made once."""
    folder = tempfile.mkdtemp(prefix="cdrtrace-service-")
    if warning := disk.in_memory(folder, "set TMPDIR to a folder on the store's disk"):
        print(warning, file=sys.stderr)
    results: list[dict] = []
    try:
        pristine, lines, token = make_store(folder)
        # a carrier's *57s come from lines far apart, each with a per-line page of its
        # own in the commit; in order, a commit's 32 lines would share one or two, and
        # its cycle would be a third shorter (BENCHMARKS.md, "a seventeenth session")
        random.Random(9).shuffle(lines)
        exe = load_generator(folder)
        tls_exe = build(folder, "load", tls=True) if args.tls else None
        for n in range(1, args.rounds + 1):
            rows = one_round(args, folder, pristine, lines, token, exe)
            if tls_exe is not None:
                rows += tls_rows(args, folder, pristine, lines, token, tls_exe)
            for row in rows:
                row["round"] = n
            results += rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def one_round(args, folder: str, pristine: str, lines: list[str], token: str,
              exe: str) -> list[dict]:
    """One run of every measure, each on a fresh copy of the store made."""
    results = []
    db = os.path.join(folder, "serving")
    for group in (True, False):
        shutil.rmtree(db, ignore_errors=True)
        shutil.copytree(pristine, db)              # the same store, the same lines
        proc, http, agi = start(db, group, args.workers, args.pin, args.agi_listener,
                               args.http_listener)
        dealt = 0                                  # each line is traced once
        try:
            for kind, port in (("fastagi", agi), ("http", http)):
                for clients in CONCURRENCY:
                    count = args.traces * (1 if clients == 1 else 4)
                    row = over_the_wire(exe, kind, port, clients, count,
                                        lines[dealt:dealt + count], token, proc.pid, folder,
                                        metrics=http)
                    dealt += count
                    row["commit"] = "group" if group else "one per trace"
                    results.append(row)
                    print(row, flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    results += floor_rows(folder, exe, lines, args.traces)
    results.append(commit_floor(folder))
    print(results[-1], flush=True)
    for group in (True, False) if not args.service_only else ():   # the Python API
        shutil.rmtree(db, ignore_errors=True)
        shutil.copytree(pristine, db)
        os.environ["CDRTRACE_GROUP_COMMIT"] = "1" if group else "0"
        store = cdrtrace.open(db)
        dealt = 0

        def in_process(session, line=None, store=store):
            return None if session == "session" else store.trace(line, at=AT).outcome.value
        for clients in CONCURRENCY:
            count = args.traces * (1 if clients == 1 else 2)
            row = measure("python", clients, count, lines[dealt:dealt + count], in_process)
            dealt += count
            row["commit"] = "group" if group else "one per trace"
            results.append(row)
            print(row, flush=True)
        store.close()
    return results


def report(results: list[dict]) -> None:
    """Each round's table and goals; past one round, how many rounds met each goal."""
    rounds = sorted({r.get("round", 1) for r in results})
    for n in rounds:
        if len(rounds) > 1:
            print(f"\n--- round {n} of {len(rounds)}")
        report_round([r for r in results if r.get("round", 1) == n])
    if len(rounds) > 1:
        print(f"\nissue 13's goals at 64 clients, over {len(rounds)} rounds")
        for path in ("fastagi", "http", "python"):      # p99's goal is the wire's alone
            p99s, ratios = [], []
            for n in rounds:
                by = {(r["path"], r["clients"], r["commit"]): r for r in results
                      if r.get("round", 1) == n and "clients" in r}
                r, one = by.get((path, 64, "group")), by.get((path, 64, "one per trace"))
                if r is not None:
                    p99s.append(r["p99_ms"])
                    if one is not None:
                        ratios.append(r["traces_per_second"] / one["traces_per_second"])
            if p99s and path != "python":
                print(f"{path:<8} p99 <= 5 ms                  met in {sum(p <= 5 for p in p99s)} "
                      f"of {len(p99s)}: p99 " + ", ".join(f"{p}" for p in p99s) + " ms")
            if ratios:
                print(f"{path:<8} >= 5x one commit per trace   met in {sum(x >= 5 for x in ratios)} "
                      f"of {len(ratios)}: " + ", ".join(times(x) for x in ratios))


def report_round(results: list[dict]) -> None:
    print("\npath     clients  commit            traces/s    p50 ms   p99 ms  CPU us   group/one"
          "  a commit: traces, ms")
    by = {(r["path"], r["clients"], r["commit"]): r for r in results if "clients" in r}
    for r in results:
        if r.get("commit") != "group":
            continue
        one = by.get((r["path"], r["clients"], "one per trace"))
        floor = by.get((r["path"], r["clients"], "floor (no trace)"))
        ratio = times(r["traces_per_second"] / one["traces_per_second"]) if one else "-"
        for row in (r, one, floor):
            if row:
                print(f"{row['path']:<8} {row['clients']:>7}  {row['commit']:<16} "
                      f"{row['traces_per_second']:>9,} {row['p50_ms']:>8} {row['p99_ms']:>8} "
                      f"{row.get('server_cpu_us', '-'):>7}"
                      + (f"   {ratio:<9}" if row is r else "")
                      + (f"  {row['traces_per_commit']:>6}, {row['ms_per_commit']}"
                         if row is r and "ms_per_commit" in row else ""))
    print("\nissue 13's goals at 64 clients        measured                floor (no trace)")
    for path in ("fastagi", "http", "python"):      # p99's goal is the wire's alone
        r, one = by.get((path, 64, "group")), by.get((path, 64, "one per trace"))
        floor = by.get((path, 64, "floor (no trace)"))
        if r is None:
            continue
        fl = f"p99 {floor['p99_ms']} ms" if floor else "-"
        if path != "python":
            print(f"{path:<8} p99 <= 5 ms                  p99 {r['p99_ms']:>6} ms  "
                  f"{'met' if r['p99_ms'] <= 5 else 'missed':<7} {fl}")
        if one:
            x = r["traces_per_second"] / one["traces_per_second"]
            fl = (f"{floor['traces_per_second'] / one['traces_per_second']:.1f}x"
                  if floor else "-")
            print(f"{path:<8} >= 5x one commit per trace   {times(x):>7}      "
                  f"{'met' if x >= 5 else 'missed':<7} {fl}")
    waits = [f"{path} {64000 / r['traces_per_second']:.2f} ms" for path in ("fastagi", "http")
             if (r := by.get((path, 64, "group")))]
    if waits:
        print("the 64 clients each wait for their answer, so their mean latency is 64 over the "
              f"rate: {', '.join(waits)}; here the p99 has been about 1.6 times that mean, so "
              "5 ms wants about 20,000 traces/s (BENCHMARKS.md)")
    tls, plain = by.get(("https", 64, "group")), by.get(("http", 64, "group"))
    if tls and plain:
        print(f"\nover TLS (uvicorn serves every request) at 64 clients: "
              f"{tls['traces_per_second']:,}/s, p50 {tls['p50_ms']} ms, p99 {tls['p99_ms']} ms, "
              f"CPU {tls['server_cpu_us']} us; "
              f"{tls['traces_per_second'] / plain['traces_per_second']:.2f}x plain HTTP's rate")
    for c in (r for r in results if r["path"] == "commit floor"):
        print(f"\nthe durable commit alone ({c['records']} records, {c['commits']:,} commits): "
              f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms; two in a row, as a trace that "
              f"arrives during a commit waits: p99 {c['two_p99_ms']} ms")


def times(ratio: float) -> str:
    """A ratio to one decimal, cut rather than rounded: 4.95 is "4.9x", below the goal's
    5x as the goal says (rounded, it printed "5.0x ... missed")."""
    return f"{math.floor(ratio * 10) / 10:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=1000,
                        help=f"traces per run at 1 client (4x that at 8 and 64; at most {MAX_TRACES:,})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything this many times on the one store made, and "
                             "say how many rounds met each goal (the p99 follows the disk's "
                             "flushes, which vary from run to run)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--workers", type=int, default=1, help="cdrtrace serve --workers")
    parser.add_argument("--service-only", action="store_true", help="skip the Python API")
    parser.add_argument("--pin", action="store_true", help="cdrtrace serve --pin")
    parser.add_argument("--tls", action="store_true",
                        help="also HTTP at 64 clients over TLS (needs OpenSSL's headers and "
                             "the openssl command)")
    parser.add_argument("--agi-listener", choices=("native", "python"), default="native",
                        help="the FastAGI listener (CDRTRACE_AGI): the C exchange, or the "
                             "Python reference")
    parser.add_argument("--http-listener", choices=("native", "python"), default="native",
                        help="the HTTP listener (CDRTRACE_HTTP): switch traces exchanged in C, "
                             "or all by uvicorn")
    args = parser.parse_args()
    if not 1 <= args.traces <= MAX_TRACES:
        parser.error(f"--traces must be 1 to {MAX_TRACES}")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    results = run(args)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
