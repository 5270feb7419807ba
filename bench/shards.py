"""Shards over Kafka (docs/operations.md, "Shards and replicas"), two measurements:

1. A replica's ingest from a topic keyed by line: reading only its shard's partitions
   (assigned) against reading every partition and dropping the other shard's lines, the
   peer a carrier gets when producers do not partition by shard. Both consume the same
   records from librdkafka's mock cluster (in this process), into fresh stores.
2. A trace asked of the shard that holds the line against the same trace asked of
   another shard's service, which forwards it: two `cdrtrace serve` processes, loopback
   clients from bench/load.c over HTTP, each line traced once.
3. Evidence shared by two replicas of a shard (evidence.replication): traces through the
   Python API with the outbox against the same traces without it (fresh copies of one
   store), and how long each answered trace takes to reach the other replica, whose
   replicator runs as `cdrtrace serve` runs it (a thread; the mock cluster in process).

    python -m bench.shards [--records N] [--traces N]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import zlib

import cdrtrace
from cdrtrace import synth, testing
from cdrtrace.ingestion import kafka
from cdrtrace.ingestion.live import StreamOptions

from .service import load_generator, make_store, over_the_wire, start

EAST, WEST = ["+12", "+13", "+14", "+15"], ["+16", "+17", "+18", "+19"]
IDLE = 0.3                       # seconds of idle before a consumer stops (not counted)


def _cluster():
    """A one-broker mock cluster living with a producer: (bootstrap address, producer)."""
    import confluent_kafka

    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    logger = logging.getLogger("bench.shards.rdkafka")
    logger.addHandler(Capture())
    logger.setLevel(logging.DEBUG)
    producer = confluent_kafka.Producer({"test.mock.num.brokers": 1, "logger": logger,
                                         "linger.ms": 20, "batch.num.messages": 10000})
    deadline = time.monotonic() + 10
    while not any("replaced with" in m for m in seen):
        producer.poll(0.05)
        if time.monotonic() > deadline:
            raise SystemExit("the mock Kafka cluster did not start")
    return re.search(r"replaced with (\S+)", next(m for m in seen if "replaced with" in m)
                     ).group(1), producer


def shard_config(folder: str, name: str, prefixes: list[str], partitions=(), lag=None,
                 peers: str = "") -> None:
    with open(os.path.join(folder, "cdrtrace.toml"), "w") as f:
        f.write(f'[shard]\nname = "{name}"\nprefixes = {json.dumps(prefixes)}\n'
                + (f"partitions = {json.dumps(list(partitions))}\n" if partitions else "")
                + (f"max_lag_seconds = {lag}\n" if lag else "") + peers)


def ingest_per_replica(records: int, folder: str) -> list[dict]:
    address, producer = _cluster()
    columns, _ = synth.generate(records, records // 2, seed=16)
    rows = synth.format_asterisk(columns, 0, len(columns["line"])).splitlines(keepends=True)
    topic = "cdr"
    started = time.perf_counter()
    for i, row in enumerate(rows):
        # keyed by the dialled line; a copy to each shard of a line the call rang (R2)
        involved = ["+1" + str(int(columns[c][i])) for c in ("line", "final", "redirecting")
                    if int(columns[c][i])]
        shards = {0 if any(line.startswith(p) for p in EAST) else 1 for line in involved}
        for shard in shards:
            while True:
                try:
                    producer.produce(topic, row, key=involved[0], partition=shard * 2
                                     + zlib.crc32(involved[0].encode()) % 2)
                    break
                except BufferError:
                    producer.poll(0.05)
    if producer.flush(60):
        raise SystemExit("the mock cluster did not take every record")
    print(f"  produced {len(rows):,} records in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    import confluent_kafka

    probe = confluent_kafka.Consumer({"bootstrap.servers": address, "group.id": "bench-probe"})
    for partition in range(4):           # the mock broker keeps about 5 MB per partition
        low, _ = probe.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition),
                                             timeout=10)
        if low > 0:
            raise SystemExit(f"the mock cluster dropped the first {low:,} records of "
                             f"partition {partition}: use fewer --records")
    probe.close()
    out = []
    indexes = []
    for mode, partitions in (("its 2 partitions", "0,1"),
                             ("all 4 partitions, filtered by prefix", "0,1,2,3")):
        runs = []
        for _ in range(3):                   # fresh stores; the median run
            db = os.path.join(folder, f"east-{len(out)}-{len(runs)}")
            cdrtrace.open(db, create=True).close()
            shard_config(db, "east", EAST)
            store = cdrtrace.open(db)
            started = time.perf_counter()      # partitions assigned: no group to join
            summary = kafka.consume(
                store, f"kafka://{address}/{topic}?group=b-{len(out)}-{len(runs)}"
                f"&partitions={partitions}", "asterisk", options=StreamOptions(idle_exit_s=IDLE))
            seconds = time.perf_counter() - started - IDLE
            index = [(k, [(int(e["start_us"]), int(e["calling"]), int(e["call_id"])) for e in v])
                     for k, v in testing.index_items(store)]
            store.close()
            runs.append({"replica reads": mode, "records read": summary.records,
                         "lines": len(index), "seconds": round(seconds, 3),
                         "records_per_second": round(summary.records / seconds)})
        indexes.append(index)
        out.append(sorted(runs, key=lambda r: r["seconds"])[1])
        print(out[-1], flush=True)
    if indexes[0] != indexes[1]:
        raise SystemExit("the two ways of reading gave different indexes")
    return out


def routed_traces(traces: int, folder: str) -> list[dict]:
    os.makedirs(os.path.join(folder, "west"))
    west_db, all_lines, _ = make_store(os.path.join(folder, "west"))
    lines = [x for x in all_lines if any(("+1" + x).startswith(p) for p in WEST)]
    random.Random(16).shuffle(lines)
    shard_config(west_db, "west", WEST)
    west = cdrtrace.open(west_db)
    router = west.tokens.create("router-east", "switch")
    switch = west.tokens.create("switch-west", "switch")
    west.close()
    token_file = os.path.join(folder, "west.token")
    with open(token_file, "w") as f:
        f.write(router)
    east_db = os.path.join(folder, "east-store")
    cdrtrace.open(east_db, create=True).close()
    exe = load_generator(folder)
    west_proc, west_port, _ = start(west_db, group=True)
    shard_config(east_db, "east", EAST, peers=(
        f'[shard.peers.west]\nprefixes = {json.dumps(WEST)}\n'
        f'replicas = ["http://127.0.0.1:{west_port}"]\ntoken_file = "{token_file}"\n'))
    east = cdrtrace.open(east_db)
    east_switch = east.tokens.create("switch-east", "switch")
    east.close()
    east_proc, east_port, _ = start(east_db, group=True)
    out, dealt = [], 0
    try:
        for clients in (1, 16):
            count = traces if clients == 1 else traces * 2
            for path, port, token in (("asked of west (holds the line)", west_port, switch),
                                      ("asked of east (forwards to west)", east_port,
                                       east_switch)):
                row = over_the_wire(exe, "http", port, clients, count,
                                    lines[dealt:dealt + count], token, west_proc.pid, folder)
                dealt += count
                row["path"] = path
                out.append(row)
                print(row, flush=True)
    finally:
        for proc in (east_proc, west_proc):
            proc.terminate()
            proc.wait(30)
    return out


def replicated_traces(traces: int, folder: str) -> list[dict]:
    """Durable traces/s of one client with and without the evidence outbox, and the delay
    until the other replica holds each answered trace (p50, p99)."""
    import numpy as np

    from cdrtrace.service.server import _replicate

    address, _producer = _cluster()
    topic = "cdrtrace-evidence-east"
    while not _producer.list_topics(topic, timeout=5).topics[topic].partitions:
        pass
    os.makedirs(os.path.join(folder, "replicas"))
    base, lines, _ = make_store(os.path.join(folder, "replicas"))
    lines = [x for x in lines if any(("+1" + x).startswith(p) for p in EAST)][:traces]
    dbs = {}
    key = os.path.join(folder, "evidence.key")
    with open(key, "w") as f:
        f.write("0123456789abcdef" * 4)
    os.chmod(key, 0o600)
    for name, replica in (("plain", None), ("a", 0), ("b", 1)):
        dbs[name] = os.path.join(folder, f"replica-{name}")
        shutil.copytree(base, dbs[name])
        shard_config(dbs[name], "east", EAST, peers="" if replica is None else (
            f'replica = {replica}\nreplicas = 2\n'
            f'evidence = "kafka://{address}/{topic}"\nevidence_key_file = "{key}"\n'))
    out = []
    plain = cdrtrace.open(dbs["plain"])
    started = time.perf_counter()
    for line in lines:
        plain.trace(line)
    seconds = time.perf_counter() - started
    plain.close()
    out.append({"path": "trace, no evidence shared",
                "traces_per_second": round(len(lines) / seconds)})
    a, b = cdrtrace.open(dbs["a"]), cdrtrace.open(dbs["b"])
    half = len(lines) // 2                 # the outbox alone: no replicator running yet
    started = time.perf_counter()
    early = [int(a.trace(line).trace_id[1:]) for line in lines[:half]]
    out.append({"path": "trace, outbox written, not yet sent",
                "traces_per_second": round(half / (time.perf_counter() - started))})
    lines = lines[half:]
    running = [_replicate(a), _replicate(b)]
    arrived: dict[int, float] = {}
    watching = threading.Event()

    def watch() -> None:                   # when the other replica holds each trace
        while not watching.is_set():
            with b.envs.eread() as txn:
                now = time.perf_counter()
                for key in txn.cursor(b.envs.db["traces"]).iternext(values=False):
                    arrived.setdefault(int.from_bytes(key, "big"), now)
            time.sleep(0.0005)
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    answered = [(int(a.trace(line).trace_id[1:]), time.perf_counter()) for line in lines]
    seconds = time.perf_counter() - started
    deadline = time.monotonic() + 60
    while not all(n in arrived for n, _ in answered + [(n, 0) for n in early]):
        if time.monotonic() > deadline:
            raise SystemExit("a trace did not reach the other replica in 60 s")
        time.sleep(0.01)
    watching.set()
    watcher.join()
    delays = [arrived[n] - at for n, at in answered]
    for done, thread in running:
        done.set()
        thread.join(15)
    a.close()
    b.close()
    ms = np.array(delays) * 1000          # answer -> held by the other replica
    out.append({"path": "trace, evidence shared (outbox)",
                "traces_per_second": round(len(lines) / seconds),
                "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p99_ms": round(float(np.percentile(ms, 99)), 1)})
    print(out, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=40_000,
                        help="records produced (the mock broker keeps about 5 MB a partition)")
    parser.add_argument("--traces", type=int, default=1000, help="traces at 1 client (x2 at 16)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="cdrtrace-shards-")
    try:
        ingest = ingest_per_replica(args.records, folder)
        routed = routed_traces(args.traces, folder)
        shared = replicated_traces(args.traces, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\nreplica of shard east reads              records read  lines held  seconds    rec/s")
    for r in ingest:
        print(f"{r['replica reads']:<40} {r['records read']:>12,} {r['lines']:>11,} "
              f"{r['seconds']:>8} {r['records_per_second']:>8,}")
    print(f"  the same index either way; its own partitions hold it "
          f"{ingest[1]['seconds'] / ingest[0]['seconds']:.2f}x sooner")
    print("\ntrace                                 clients  traces/s   p50 ms   p99 ms")
    for r in routed:
        print(f"{r['path']:<38} {r['clients']:>7} {r['traces_per_second']:>9,} "
              f"{r['p50_ms']:>8} {r['p99_ms']:>8}")
    print("\nevidence of a shard's replicas           traces/s   until the other replica holds it")
    for r in shared:
        print(f"{r['path']:<40} {r['traces_per_second']:>8,}"
              + (f"   p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
                 if "p50_ms" in r else ""))
    rate = [r["traces_per_second"] for r in shared]
    print(f"  traces/s with the outbox alone {rate[1] / rate[0]:.2f}x, while both replicators "
          f"run in this process {rate[2] / rate[0]:.2f}x")


if __name__ == "__main__":
    main()
