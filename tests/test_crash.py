"""Exactly once through crashes: SIGKILL an ingest at 20 random moments, restart it each
time; the final store equals an uninterrupted run's, and resumed runs continue from the
position committed with the index (issue 5)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from test_formats import projection
from test_stream import archived

import cdrtrace
from cdrtrace import synth, testing
from cdrtrace.evidence.outcomes import Outcome
from cdrtrace.ingestion import sources

INGEST = """
import sys, cdrtrace
store = cdrtrace.open(sys.argv[1])
print("ready", file=sys.stderr, flush=True)
summary = cdrtrace.ingest(store, [sys.argv[2]], chunk_bytes=65536, batch_pairs=3000,
                          archive=sys.argv[3] if sys.argv[3:] not in ([], ["-"]) else None)
print("resumed" if summary.resumed else "fresh", summary.skipped)
"""


@pytest.mark.parametrize("archiving", [True, False], ids=["archive", "identity-beside-parse"])
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path, archiving):
    """Without an archive, a new file's identity is hashed on a thread while its first
    records are parsed; a kill before the first commit leaves a provisional source."""
    columns, _ = synth.generate(400_000, 20_000, seed=99, campaigns=5)
    path = tmp_path / "Master.csv"
    rows = synth.format_asterisk(columns, 0, len(columns["line"])).splitlines(keepends=True)
    bad = list(range(5, len(rows), 9973))              # malformed records among the good
    for i in bad:
        rows[i] = b'"not","a","cdr"\n'
    path.write_bytes(b"".join(rows))
    ident = sources.identity(str(path))[0].encode()
    archive = tmp_path / "archive" if archiving else "-"

    whole = cdrtrace.open(tmp_path / "whole", create=True)
    run_seconds = cdrtrace.ingest(whole, [str(path)], chunk_bytes=65536, batch_pairs=3000).seconds
    expected = projection(whole)
    whole.close()

    db = tmp_path / "killed"
    cdrtrace.open(db, create=True).close()
    rng = random.Random(5)
    checkpoints_seen, finished = 0, False
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", INGEST, str(db), str(path), str(archive)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # A random moment of the ingest itself, counted from when the child has imported
        # and opened the store: a moment counted from the spawn (as this test once did)
        # fell before the first commit in all 20 runs whenever the machine was busy.
        while b"ready" not in proc.stderr.readline():
            assert proc.poll() is None, proc.stderr.read()
        time.sleep(rng.uniform(0.0, run_seconds))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = cdrtrace.open(db)
        checkpoints_seen += testing.position(store, ident) is not None
        finished = finished or testing.ingested(store, ident.decode())
        store.close()
        if finished:
            break
    final = subprocess.run([sys.executable, "-c", INGEST, str(db), str(path), str(archive)],
                           capture_output=True, text=True, check=True)
    print(f"kills that left a committed position: {checkpoints_seen}")
    assert checkpoints_seen >= 1, "no kill landed between two commits"
    store = cdrtrace.open(db)
    assert projection(store) == expected
    assert testing.position(store, ident) is None                      # finished: no position left
    (feed,) = store.stats()["feeds"]                          # counted once, kills or not
    assert feed["records"] == len(rows) and feed["rejected"] == len(bad)
    again = subprocess.run([sys.executable, "-c", INGEST, str(db), str(path), str(archive)],
                           capture_output=True, text=True, check=True)
    assert final.stdout.startswith(("resumed", "fresh")) or f"[{str(path)!r}]" in final.stdout
    assert f"[{str(path)!r}]" in again.stdout                 # and the content is marked
    # the rejects file and the archive hold each record exactly once, kills or not
    rejected = [json.loads(line)["record"] for line in open(db / "rejects.jsonl")]
    assert sorted(rejected) == [i + 1 for i in bad]            # records count from 1
    if archiving:
        archived = duckdb.sql(f"SELECT count(*), count(DISTINCT record) FROM "
                              f"read_parquet('{archive}/day=*/*.parquet')").fetchall()[0]
        assert archived == (len(rows) - len(bad), len(rows) - len(bad))
    # one source for the file, however many runs were killed before their first commit
    assert [s["name"] for s in testing.sources(store)] == [str(path)]
    # and trace results: the same lines traced at the same moments answer alike
    lines = [f"+1{n}" for n in sorted(set(columns["line"].tolist()))[:150]]
    moments = ["2026-03-02T09:00:00Z", "2026-03-02T18:30:00Z", "2026-03-03T00:00:00Z"]
    answers = {}

    def answer(target, line, at):
        try:
            result = target.trace(line, at=at)
            return result.outcome, result.call_time
        except cdrtrace.TraceError:        # older than the calls held: refused alike
            return "refused", None
    for name, target in (("killed", store), ("whole", None)):
        target = target or cdrtrace.open(tmp_path / "whole")
        answers[name] = [answer(target, line, at) for line in lines for at in moments]
        target.close()
    assert answers["killed"] == answers["whole"]
    assert {o for o, _ in answers["whole"]} >= {Outcome.SUCCESS, Outcome.ALREADY_TRACED}


READER = """
import sys, random, cdrtrace
from cdrtrace.store import index
store = cdrtrace.open(sys.argv[1])
lines = [int(x) for x in sys.argv[2].split(",")]
done = 0
while done < 30000:
    with store.envs.read() as txn:
        for line in random.sample(lines, 50):
            entries = store._last_calls_raw(index.line_key(line), txn)
            assert list(entries["start_us"]) == sorted(entries["start_us"], reverse=True)
            done += 1
print("ok", done)
"""


def test_readers_run_beside_the_writer_and_a_second_writer_is_refused(tmp_path):
    columns, _ = synth.generate(300_000, 20_000, seed=7)
    path = tmp_path / "Master.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    db = tmp_path / "store"
    cdrtrace.open(db, create=True).close()
    lines = ",".join(str(cdrtrace.parsing.numbers.normalize(str(n))) for n in set(columns["line"][:2000]))
    writer = subprocess.Popen([sys.executable, "-c", INGEST, str(db), str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(db), lines],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0 and out.startswith("ok"), err


def test_a_second_writer_is_refused_clearly(tmp_path):
    db = tmp_path / "store"
    store = cdrtrace.open(db, create=True)
    src = tmp_path / "m.csv"
    columns = synth.generate(100, 20, seed=1)[0]
    src.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    with store.envs.writer("ingest"):            # a long write holds the store
        second = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", str(src),
                                 "--db", str(db)], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        assert second.returncode == 2
        assert second.stderr == (f"cdrtrace: error: {db} is being written by ingest "
                                 f"(pid {os.getpid()}); one writer at a time\n")
        assert store.trace("3035550110", at="2026-03-03T00:00:00Z")   # traces still work
    assert cdrtrace.ingest(store, [str(src)]).records > 0              # released


def followed_before(db, path, proc, timeout: float = 60.0) -> None:
    """Wait until the follower proc, or one before it, has committed which file it reads."""
    key = b"follow:" + os.path.abspath(path).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store = cdrtrace.open(db)
        try:
            if store.catalog.position(key) is not None:
                return
        finally:
            store.close()
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError(f"no follower noted {path} in {timeout} s")


def test_sigkill_a_follower_while_the_switch_writes_and_rotates(tmp_path):
    """A follower killed at random moments while the file grows and rotates, restarted
    each time: the store ends equal to one batch ingest of everything written."""
    columns, _ = synth.generate(40_000, 5_000, seed=7)
    data = synth.format_asterisk(columns, 0, len(columns["line"]))
    cut = data.index(b"\n", len(data) // 2) + 1
    halves = (data[:cut], data[cut:])
    path = tmp_path / "Master.csv"
    db = tmp_path / "killed"
    cdrtrace.open(db, create=True).close()
    archive = tmp_path / "archive"
    follow = [sys.executable, "-m", "cdrtrace.cli", "ingest", "--follow", str(path), "--db", str(db),
              "--batch-records", "2000", "--batch-ms", "5", "--log-every", "3600",
              "--archive", str(archive), "--archive-every", "0.3"]
    rng = random.Random(11)
    step = 1 << 20
    for gen, half in enumerate(halves):
        if gen == 1:
            os.rename(path, tmp_path / "Master.csv.1")       # the switch rotates
        written = 0
        while written < len(half):
            proc = subprocess.Popen(follow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(rng.randint(1, 4)):                # the switch writes meanwhile,
                piece = half[written:written + rng.randint(1, step)]   # cutting records anywhere
                with open(path, "ab") as f:
                    f.write(piece)
                written += len(piece)
                time.sleep(rng.uniform(0.0, 0.1))
            if gen == 0:
                # a follower has noted which file it follows before the switch rotates it:
                # one that never ran before the rotation cannot know the old file (on a
                # loaded machine, each may be killed before it has started)
                followed_before(db, path, proc)
            time.sleep(rng.uniform(0.2, 0.6))
            proc.kill()
            proc.wait()
    final = subprocess.run([*follow, "--until-idle", "0.5", "--json"], capture_output=True,
                           text=True, check=True)
    assert '"records"' in final.stdout
    (tmp_path / "all.csv").write_bytes(data)
    whole = cdrtrace.open(tmp_path / "whole", create=True)
    cdrtrace.ingest(whole, [str(tmp_path / "all.csv")])
    store = cdrtrace.open(db)
    assert projection(store) == projection(whole)
    (feed,) = store.stats()["feeds"]
    assert feed["records"] == len(columns["line"]) and feed["rejected"] == 0
    assert archived(archive) == (len(columns["line"]), len(columns["line"]))   # each call once
    store.close()
    whole.close()
