"""The last-call lookup's own cost: a store's lookup against the raw py-lmdb get it wraps,
over the same keys in the same read transaction, best of 7 (what a trace pays on top of
LMDB). `python -m bench.lookup_overhead` prints both and their difference."""
from __future__ import annotations

import random
import tempfile
import time

import cdrtrace
from cdrtrace import synth


def main() -> None:
    folder = tempfile.mkdtemp()
    columns, _ = synth.generate(200_000, 50_000, seed=3)
    with open(folder + "/m.csv", "wb") as f:
        f.write(synth.format_asterisk(columns, 0, len(columns["line"])))
    store = cdrtrace.open(folder + "/s", create=True, audit_key_file=folder + "/audit.key")
    cdrtrace.ingest(store, [folder + "/m.csv"])
    env, db = store.envs.env, store.envs.db["index"]
    with env.begin() as txn:
        keys = [bytes(k) for k, _ in txn.cursor(db)]
    random.Random(1).shuffle(keys)
    keys = (keys * 20)[:400_000]
    ours, raw = [], []
    for _ in range(7):
        with env.begin() as txn:
            started = time.perf_counter()
            for key in keys:
                store._last_calls_raw(key, txn)
            ours.append((time.perf_counter() - started) / len(keys) * 1e6)
            started = time.perf_counter()
            for key in keys:
                txn.get(key, db=db)
            raw.append((time.perf_counter() - started) / len(keys) * 1e6)
    print(f"lookup {min(ours):.3f} us  raw get {min(raw):.3f} us  "
          f"overhead {min(ours) - min(raw):.3f} us")
    # the trace path from the line as typed: normalise, a new read transaction, the get
    from cdrtrace.parsing import numbers
    from cdrtrace.store import index

    digits = [numbers.format_number(int.from_bytes(key, "big"))[2:] for key in keys[:100_000]]
    typed = [f"({d[:3]}) {d[3:6]}-{d[6:]}" for d in digits]     # as a person writes it
    raw_keys = keys[:100_000]
    as_typed, raw_txn = [], []
    for _ in range(7):
        started = time.perf_counter()
        for text in typed:
            store._last_calls_raw(index.line_key(store.line(text)))
        as_typed.append((time.perf_counter() - started) / len(typed) * 1e6)
        started = time.perf_counter()
        for key in raw_keys:
            with env.begin() as txn:
                txn.get(key, db=db)
        raw_txn.append((time.perf_counter() - started) / len(raw_keys) * 1e6)
    print(f"as typed, new read txn: {min(as_typed):.3f} us  raw get, new read txn: "
          f"{min(raw_txn):.3f} us  ratio {min(as_typed) / min(raw_txn):.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
