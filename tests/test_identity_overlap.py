"""A new file's identity hashed on a thread while its first records are parsed: content the
store knows is still skipped or resumed, leaving nothing behind, and a run killed before
its first commit leaves a provisional source that the rerun reuses."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from test_formats import projection

import cdrtrace
from cdrtrace import synth, testing
from cdrtrace.ingestion import batch, sources

# the child dies (SIGKILL, nothing cleaned up) where its Nth commit would begin
KILLED_AT_COMMIT = """
import os, signal, sys, cdrtrace
from cdrtrace.ingestion import batch
flush, left = batch._flush_before_commit, int(sys.argv[3])
def flush_or_die(*args):
    global left
    left -= 1
    if not left:
        os.kill(os.getpid(), signal.SIGKILL)
    flush(*args)
batch._flush_before_commit = flush_or_die
archive = sys.argv[4] if len(sys.argv) > 4 else None
cdrtrace.ingest(cdrtrace.open(sys.argv[1]), [sys.argv[2]], chunk_bytes=65536, batch_pairs=3000,
                archive=archive)
"""


@pytest.fixture(scope="module")
def cdrs(tmp_path_factory):
    """Asterisk records with a malformed one every 97th: rejects to take back or keep."""
    folder = tmp_path_factory.mktemp("overlap")
    columns, _ = synth.generate(20_000, 2_000, seed=31)
    rows = synth.format_asterisk(columns, 0, len(columns["line"])).splitlines(keepends=True)
    bad = list(range(3, len(rows), 97))
    for i in bad:
        rows[i] = b'"not","a","cdr"\n'
    path = folder / "Master.csv"
    path.write_bytes(b"".join(rows))
    return path, len(rows), bad


@pytest.fixture
def hashed_beside(monkeypatch):
    """How many identities were hashed on a thread beside the parse."""
    made = []

    class Counted(sources.IdentityThread):
        def __init__(self, name):
            made.append(name)
            super().__init__(name)
    monkeypatch.setattr(batch, "IdentityThread", Counted)
    return made


def rejected_records(store_path) -> list[tuple[int | None, int]]:
    with open(store_path / "rejects.jsonl", encoding="utf-8") as f:
        return sorted((json.loads(line)["source_id"], json.loads(line)["record"]) for line in f)


def entry_sources(store) -> set[int]:
    return {int(e["source"]) for _, entries in testing.index_items(store) for e in entries}


def kill_at_commit(db, path, commit: int, archive=None) -> None:
    args = [sys.executable, "-c", KILLED_AT_COMMIT, str(db), str(path), str(commit)]
    proc = subprocess.run(args + ([str(archive)] if archive else []), capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()


def killed_store(tmp_path, path, *kills: tuple[int, object]):
    """A fresh store after runs of path killed where each (commit, archive) says; opened."""
    db = tmp_path / "s"
    cdrtrace.open(db, create=True).close()
    for commit, archive in kills:
        kill_at_commit(db, path, commit, archive)
    return db, cdrtrace.open(db)


def assert_one_source(store, db, source: int, bad: list[int]) -> None:
    """The file is one source: every index entry is its, and each reject is held once."""
    assert [s["source"] for s in testing.sources(store)] == [source]
    assert entry_sources(store) == {source}
    assert rejected_records(db) == [(source, i + 1) for i in bad]


def test_a_copy_of_ingested_content_is_skipped_and_leaves_nothing(tmp_path, cdrs, hashed_beside):
    path, n, bad = cdrs
    store = cdrtrace.open(tmp_path / "s", create=True)
    first = cdrtrace.ingest(store, [str(path)], batch_pairs=3000)
    assert (first.records, first.rejected) == (n, len(bad))
    before = (testing.sources(store), rejected_records(tmp_path / "s"), projection(store))
    for pairs in (3000, 1 << 20):        # known at a mid-file commit, and at the end
        copy = tmp_path / f"copy-{pairs}.csv"
        shutil.copy(path, copy)
        again = cdrtrace.ingest(store, [str(copy)], batch_pairs=pairs)
        assert (again.sources, again.records, again.rejected, again.skipped) == (0, 0, 0, [str(copy)])
        assert (testing.sources(store), rejected_records(tmp_path / "s"), projection(store)) == before
    assert len(hashed_beside) == 3      # each copy was parsed while it was hashed


def test_a_run_killed_before_its_first_commit_is_rerun_under_the_same_source(tmp_path, cdrs,
                                                                            hashed_beside):
    path, n, bad = cdrs
    db, store = killed_store(tmp_path, path, (1, None))
    (provisional,) = testing.sources(store)
    assert provisional["identity"] is None              # registered before it was hashed
    summary = cdrtrace.ingest(store, [str(path)], batch_pairs=3000)
    assert (summary.records, summary.rejected) == (n, len(bad))
    assert_one_source(store, db, provisional["source"], bad)
    assert testing.sources(store)[0]["identity"] == sources.identity(str(path))[0]
    whole = cdrtrace.open(tmp_path / "whole", create=True)
    cdrtrace.ingest(whole, [str(path)])
    assert projection(store) == projection(whole)
    assert len(hashed_beside) == 2      # the rerun, then the whole store's


def test_content_interrupted_by_an_archiving_run_is_found_and_its_source_reused(tmp_path, cdrs,
                                                                               hashed_beside):
    """The killed run archived, so it hashed first and registered the identity. Its archive
    became the store's, so the rerun, naming none, archives too: it hashes first as well,
    finds the unfinished source by its identity, goes again, and the archive holds each
    call once."""
    import pyarrow.parquet as pq

    from cdrtrace.store import archive

    path, n, bad = cdrs
    db, store = killed_store(tmp_path, path, (1, tmp_path / "archive"))
    (unfinished,) = testing.sources(store)
    assert unfinished["identity"] == sources.identity(str(path))[0]
    summary = cdrtrace.ingest(store, [str(path)], batch_pairs=3000)
    assert (summary.records, summary.rejected) == (n, len(bad))
    assert_one_source(store, db, unfinished["source"], bad)
    assert len(hashed_beside) == 0
    files = archive.day_files(tmp_path / "archive")
    assert sum(pq.read_metadata(f).num_rows for f in files) == n - len(bad)


def test_a_run_killed_after_its_first_commit_resumes_from_its_position(tmp_path, cdrs,
                                                                       hashed_beside):
    """The first commit saved a position keyed by the identity; the rerun, hashing beside
    the parse, finds it before its own first commit and resumes the source from there."""
    path, n, bad = cdrs
    db, store = killed_store(tmp_path, path, (3, None))
    (killed,) = testing.sources(store)
    assert testing.position(store, sources.identity(str(path))[0].encode()) is not None
    summary = cdrtrace.ingest(store, [str(path)], batch_pairs=3000)
    assert summary.resumed == [str(path)] and summary.records < n
    assert testing.ingested(store, sources.identity(str(path))[0])
    assert_one_source(store, db, killed["source"], bad)
    whole = cdrtrace.open(tmp_path / "whole", create=True)
    cdrtrace.ingest(whole, [str(path)])
    assert projection(store) == projection(whole)
    assert len(hashed_beside) == 2      # the rerun, then the whole store's


def test_a_provisional_source_taken_over_by_an_archiving_run_is_resumed_not_taken_back(
        tmp_path, cdrs, hashed_beside):
    """Killed before its first commit (provisional), rerun with an archive (the ordinary
    path reuses the provisional source) and killed after a commit, then rerun without
    one: the last run must resume that source, not take it back as provisional."""
    path, n, bad = cdrs
    db, store = killed_store(tmp_path, path, (1, None), (3, tmp_path / "archive"))
    (killed,) = testing.sources(store)
    summary = cdrtrace.ingest(store, [str(path)], batch_pairs=3000)
    assert summary.resumed == [str(path)]
    assert testing.ingested(store, sources.identity(str(path))[0])
    assert_one_source(store, db, killed["source"], bad)
