"""The trace service under load: durable traces/s and p50/p99 latency at 1, 8 and 64
concurrent loopback clients over FastAGI, over HTTP and through the Python API, with
group commit and, in the same run, one commit per trace (CDRTRACE_GROUP_COMMIT=0).

    python -m bench.service [--traces N] [--json FILE]

The service runs as `cdrtrace serve` in its own process (as in production); clients are
threads here: FastAGI opens a connection per trace as Asterisk does, HTTP keeps one
connection per client. Every answer is a durable trace (its evidence flushed first).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
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

CONCURRENCY = (1, 8, 64)
AT = "2026-03-03T12:00:00Z"


def make_store(folder: str) -> tuple[str, list[str], str]:
    db = os.path.join(folder, "store")
    columns, _ = synth.generate(100_000, 50_000, seed=9)
    source = os.path.join(folder, "m.csv")
    with open(source, "wb") as f:
        f.write(synth.format_asterisk(columns, 0, len(columns["line"])))
    store = cdrtrace.open(db, create=True, audit_key_file=os.path.join(folder, "audit.key"))
    cdrtrace.ingest(store, [source])
    token = store.tokens.create("bench", "switch")
    lines = sorted({numbers.format_number(int(x))[2:] for x in columns["line"]})
    store.close()
    return db, lines, token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db: str, group: bool, workers: int = 1) -> tuple[subprocess.Popen, int, int]:
    http, agi = free_port(), free_port()
    env = {**os.environ, "CDRTRACE_GROUP_COMMIT": "1" if group else "0"}
    proc = subprocess.Popen([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", db,
                             "--http", f"127.0.0.1:{http}", "--agi", f"127.0.0.1:{agi}",
                             "--workers", str(workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=1).status_code == 200:
                return proc, http, agi
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the service did not start")


def agi_trace(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        stream = sock.makefile("rwb")
        stream.write(f"agi_network: yes\nagi_network_script: trace\nagi_callerid: {line}\n"
                     f"agi_arg_1: {AT}\n\n".encode())
        stream.flush()
        outcome = ""
        for _ in range(3):
            command = stream.readline().decode()
            if not command:
                break
            if "COT_OUTCOME" in command:
                outcome = command.split('"')[1]
            stream.write(b"200 result=1\n")
            stream.flush()
        return outcome


def measure(kind: str, clients: int, count: int, lines: list[str], target) -> dict:
    """count traces by `clients` threads; their latencies and the rate."""
    rng = random.Random(clients)
    todo = [rng.choice(lines) for _ in range(count)]
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
        latencies = sorted(x for part in pool.map(client, per_client) for x in part)
    seconds = time.perf_counter() - started
    return {"path": kind, "clients": clients, "traces": count,
            "traces_per_second": round(count / seconds),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}


def run(args) -> list[dict]:
    folder = tempfile.mkdtemp(prefix="cdrtrace-service-")
    results = []
    try:
        db, lines, token = make_store(folder)
        for group in (True, False):
            proc, http, agi = start(db, group, args.workers)
            try:
                headers = {"Authorization": f"Bearer {token}"}

                def over_http(session, line=None, http=http, headers=headers):
                    if session == "session":   # TCP_NODELAY, as curl sets it (no 40 ms stalls)
                        transport = httpx.HTTPTransport(socket_options=[
                            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
                        return httpx.Client(base_url=f"http://127.0.0.1:{http}", headers=headers,
                                            timeout=30, transport=transport)
                    return session.post("/v1/trace", json={"line": line, "at": AT}).json()["outcome"]

                def over_agi(session, line=None, agi=agi):
                    return None if session == "session" else agi_trace(agi, line)

                for kind, target in (("fastagi", over_agi), ("http", over_http)):
                    for clients in CONCURRENCY:
                        row = measure(kind, clients, args.traces * (1 if clients == 1 else 2),
                                      lines, target)
                        row["commit"] = "group" if group else "one per trace"
                        results.append(row)
                        print(row, flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
        for group in (True, False) if not args.service_only else ():   # the Python API
            os.environ["CDRTRACE_GROUP_COMMIT"] = "1" if group else "0"
            store = cdrtrace.open(db)

            def in_process(session, line=None, store=store):
                return None if session == "session" else store.trace(line, at=AT).outcome.value
            for clients in CONCURRENCY:
                row = measure("python", clients, args.traces * (1 if clients == 1 else 2),
                              lines, in_process)
                row["commit"] = "group" if group else "one per trace"
                results.append(row)
                print(row, flush=True)
            store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def report(results: list[dict]) -> None:
    print("\npath     clients  commit           traces/s    p50 ms   p99 ms   group/one")
    by = {(r["path"], r["clients"], r["commit"]): r for r in results}
    for r in results:
        if r["commit"] != "group":
            continue
        one = by.get((r["path"], r["clients"], "one per trace"))
        ratio = f"{r['traces_per_second'] / one['traces_per_second']:.1f}x" if one else "-"
        for row in (r, one):
            if row:
                print(f"{row['path']:<8} {row['clients']:>7}  {row['commit']:<15} "
                      f"{row['traces_per_second']:>9,} {row['p50_ms']:>8} {row['p99_ms']:>8}"
                      + (f"   {ratio}" if row is r else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=1000, help="traces per run at 1 client")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--workers", type=int, default=1, help="cdrtrace serve --workers")
    parser.add_argument("--service-only", action="store_true", help="skip the Python API")
    args = parser.parse_args()
    results = run(args)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
