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


if __name__ == "__main__":
    main()
