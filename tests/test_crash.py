"""Exactly once through crashes: SIGKILL an ingest at 20 random moments, restart it each
time; the final store equals an uninterrupted run's, and resumed runs continue from the
position committed with the index (issue 5)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from test_formats import projection

import cdrtrace
from cdrtrace import sources, synth

INGEST = """
import sys, cdrtrace
store = cdrtrace.open(sys.argv[1])
summary = cdrtrace.ingest(store, [sys.argv[2]], chunk_bytes=65536, batch_pairs=3000)
print("resumed" if summary.resumed else "fresh", summary.skipped)
"""


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path):
    columns, _ = synth.generate(400_000, 20_000, seed=99, campaigns=5)
    path = tmp_path / "Master.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    ident = sources.identity(str(path)).encode()

    whole = cdrtrace.open(tmp_path / "whole", create=True)
    cdrtrace.ingest(whole, [str(path)])
    expected = projection(whole)
    whole.close()

    db = tmp_path / "killed"
    cdrtrace.open(db, create=True).close()
    started = time.perf_counter()                      # how long an import takes here
    subprocess.run([sys.executable, "-c", "import cdrtrace"], check=True)
    startup = time.perf_counter() - started
    rng = random.Random(5)
    checkpoints_seen, finished = 0, False
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", INGEST, str(db), str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(startup + rng.uniform(0.0, 0.25))   # a random moment of the run
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = cdrtrace.open(db)
        checkpoints_seen += store.position(ident) is not None
        finished = finished or store.source_with_identity(ident.decode()) is not None
        store.close()
        if finished:
            break
    final = subprocess.run([sys.executable, "-c", INGEST, str(db), str(path)],
                           capture_output=True, text=True, check=True)
    print(f"kills that left a committed position: {checkpoints_seen}")
    assert checkpoints_seen >= 1, "no kill landed between two commits"
    store = cdrtrace.open(db)
    assert projection(store) == expected
    assert store.position(ident) is None                      # finished: no position left
    assert f"[{str(path)!r}]" in final.stdout                 # and the content is marked
