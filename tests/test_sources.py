"""Sources: compressed streams, directories and globs in name order, stdin, skipping what
was already ingested (by content, not name), and --format auto."""
from __future__ import annotations

import base64
import bz2
import gzip
import json
import lzma
import re
import shutil
import subprocess
import sys
import zlib

import pytest
import zstandard
from test_formats import projection, write

import cdrtrace
from cdrtrace import config, synth, testing
from cdrtrace.errors import FormatError
from cdrtrace.parsing import numbers
from cdrtrace.parsing.parsers import detect_format

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
               ".zst": zstandard.ZstdCompressor().compress}


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    folder = tmp_path_factory.mktemp("day")
    columns, _ = synth.generate(3000, 400, seed=21)
    path = folder / "Master.csv"
    write(columns, "asterisk", path, zone="UTC")
    return columns, path


def fresh(tmp_path, name="s"):
    return cdrtrace.open(tmp_path / name, create=True)


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_sources_give_the_same_index(tmp_path, day, suffix):
    _, plain = day
    packed = tmp_path / f"Master.csv{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](plain.read_bytes()))
    a, b = fresh(tmp_path, "a"), fresh(tmp_path, "b")
    cdrtrace.ingest(a, [str(plain)])
    summary = cdrtrace.ingest(b, [str(packed)], chunk_bytes=65536)
    assert summary.bytes == plain.stat().st_size and summary.rejected == 0
    assert projection(a) == projection(b)


def test_compressed_stdin(tmp_path, day):
    _, plain = day
    db = tmp_path / "db"
    fresh(tmp_path, "db").close()
    proc = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", "-", "--db", str(db),
                           "--json"], input=gzip.compress(plain.read_bytes()),
                          capture_output=True, check=True)
    assert b'"rejected": 0' in proc.stdout and plain.read_bytes().count(b"\n") > 2000


DECODABLE = {".gz": lambda data: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data),
             ".xz": lambda data: lzma.LZMADecompressor().decompress(data),
             ".zst": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)}
KINDS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path, day):
    """As zstd and pzstd write a large file, or files joined with cat."""
    _, plain = day
    text = plain.read_bytes()
    half = text.index(b"\n", len(text) // 2) + 1
    joined = tmp_path / "Master.csv.zst"
    joined.write_bytes(COMPRESSORS[".zst"](text[:half]) + COMPRESSORS[".zst"](text[half:]))
    a, b = fresh(tmp_path, "a"), fresh(tmp_path, "b")
    cdrtrace.ingest(a, [str(plain)])
    summary = cdrtrace.ingest(b, [str(joined)], chunk_bytes=65536)
    assert (summary.bytes, summary.rejected) == (len(text), 0)
    assert projection(a) == projection(b)


@pytest.mark.parametrize("suffix", sorted(DECODABLE))
@pytest.mark.parametrize("chunk_bytes", [65536, 1 << 22])
def test_a_compressed_file_cut_short_is_read_to_the_cut(tmp_path, day, suffix, chunk_bytes):
    """A copy cut short (a transfer or a rotation interrupted, a disk full): what it holds
    is the file's own, read as a file ending there would be, and the record the cut ends
    inside is rejected; the error says where. It was refused whole (gzip, xz), and a zstd
    file cut short was read as if it ended there, with no error at all."""
    _, plain = day
    data = COMPRESSORS[suffix](plain.read_bytes())
    cut = data[: len(data) // 2]
    prefix = DECODABLE[suffix](cut)             # all that the cut file decompresses to
    whole, _, tail = prefix.rpartition(b"\n")
    records = whole.count(b"\n") + 2           # the record the cut ends inside is one
    broken = tmp_path / f"Master.csv{suffix}"
    broken.write_bytes(cut)
    store = fresh(tmp_path)
    message = (f"cannot read {broken}: its {KINDS[suffix]} data is cut short after "
               f"{len(prefix):,} bytes of CDRs: its {records:,} record(s) to the cut were "
               "ingested")
    with pytest.raises(cdrtrace.SourceError, match=f"^{re.escape(message)}"):
        cdrtrace.ingest(store, [str(broken)], chunk_bytes=chunk_bytes)
    (reject,) = [json.loads(x) for x in (store.path / "rejects.jsonl").read_text().splitlines()]
    assert (reject["record"], reject["offset"], reject["reason"]) == (
        records, len(whole) + 1, "cut short where the source's compressed data ends")
    assert base64.b64decode(reject["raw_b64"]) == tail
    (head := tmp_path / "head.csv").write_bytes(whole + b"\n")
    alike = fresh(tmp_path, "alike")
    cdrtrace.ingest(alike, [str(head)])
    # the same index, but for the line of the record cut, held as an unreadable call there
    # where its line and time can be read from what the cut left of it
    got, expected = projection(store), projection(alike)
    assert len(expected) > 100
    assert len({line for line in {*got, *expected} if got.get(line) != expected.get(line)}) <= 1


@pytest.mark.parametrize("suffix", sorted(KINDS))
@pytest.mark.parametrize("early", [True, False])
def test_a_damaged_compressed_file_is_a_clear_error_and_nothing_of_it_is_read(tmp_path, day,
                                                                                suffix, early):
    """Damage inside the compressed data (early in gzip's, an internal error): the bytes
    before the decompressor meets it may be damaged too, unseen (gzip's damage in the middle
    shows only as its checksum at the end): nothing of the file is indexed."""
    _, plain = day
    compress = (zstandard.ZstdCompressor(write_checksum=True).compress if suffix == ".zst"
                else COMPRESSORS[suffix])
    data = bytearray(compress(plain.read_bytes()))
    at = 100 if early else len(data) // 2
    for i in range(at, at + 16):
        data[i] ^= 0x55
    broken = tmp_path / f"Master.csv{suffix}"
    broken.write_bytes(bytes(data))
    store = fresh(tmp_path)
    with pytest.raises(cdrtrace.SourceError,
                       match=f"^cannot read {re.escape(str(broken))}: corrupt {KINDS[suffix]} "
                             "data after [0-9,]+ bytes of CDRs \\("):
        cdrtrace.ingest(store, [str(broken)], chunk_bytes=65536)
    assert projection(store) == {}


def test_directories_and_globs_in_name_order(tmp_path, day):
    columns, _ = day
    n = len(columns["line"])
    folder = tmp_path / "cdr"
    folder.mkdir()
    cuts = [0, n // 3, 2 * n // 3, n]
    for i in range(3):
        (folder / f"Master-{i}.csv").write_bytes(synth.format_asterisk(columns, cuts[i], cuts[i + 1]))
    (folder / ".hidden").write_text("not a CDR")
    s = fresh(tmp_path)
    summary = cdrtrace.ingest(s, [str(folder)])
    assert (summary.sources, summary.records, summary.rejected) == (3, n, 0)
    names = [r["name"] for r in testing.sources(s)]
    assert names == [str(folder / f"Master-{i}.csv") for i in range(3)]
    g = fresh(tmp_path, "g")
    assert cdrtrace.ingest(g, [str(folder / "Master-*.csv")]).records == n
    assert projection(g) == projection(s)


def test_reingest_is_skipped_by_content_not_name(tmp_path, day):
    _, plain = day
    s = fresh(tmp_path)
    first = cdrtrace.ingest(s, [str(plain)])
    copy = tmp_path / "renamed.csv"
    shutil.copy(plain, copy)
    again = cdrtrace.ingest(s, [str(plain), str(copy)])
    assert (again.sources, again.records, again.skipped) == (0, 0, [str(plain), str(copy)])
    forced = cdrtrace.ingest(s, [str(copy)], force=True)
    assert forced.records == first.records
    grown = tmp_path / "grown.csv"
    grown.write_bytes(plain.read_bytes() + plain.read_bytes().splitlines(keepends=True)[0])
    assert cdrtrace.ingest(s, [str(grown)]).skipped == []    # new content: ingested


@pytest.mark.parametrize("fmt", ["asterisk", "asterisk-custom", "freeswitch", "cucm", "broadworks"])
def test_auto_detects_every_format(tmp_path, day, fmt):
    columns, _ = day
    path = tmp_path / f"cdr.{fmt}"
    write(columns, fmt, path, zone="UTC")
    assert detect_format(path.read_bytes()[:65536]) == fmt
    summary = cdrtrace.ingest(fresh(tmp_path), [str(path)], fmt="auto", zone="UTC")
    assert summary.rejected == 0 and summary.records == len(columns["line"])


@pytest.mark.parametrize("named, fmt", [("asterisk", "freeswitch"), ("asterisk", "cucm"),
                                         ("asterisk", "asterisk-custom"), ("cucm", "broadworks"),
                                         ("freeswitch", "asterisk")])
def test_a_file_of_another_format_than_the_one_named_is_refused_whole(tmp_path, day, named, fmt):
    """Read as the format named (a feed's, or the default asterisk), every record of
    another format's file would be rejected, and the columns of each taken for a line and
    a time to hold (the rejects fail closed): the file is refused before a record is read,
    its format named; the other sources of the run are ingested."""
    columns, plain = day
    path = tmp_path / f"cdr.{fmt}"
    write(columns, fmt, path, zone="UTC")
    s = fresh(tmp_path)
    with pytest.raises(FormatError, match=f"begins as {fmt} files do, not as {named} ones: "
                                          f"name its format \\(--format {fmt}, or auto\\)"):
        cdrtrace.ingest(s, [str(path)], fmt=named, zone="UTC", rejects_path=tmp_path / "r")
    assert s.stats()["index"]["lines"] == 0 and not (tmp_path / "r").exists()
    summary = cdrtrace.ingest(s, [str(path), str(plain)], fmt="asterisk", zone="UTC",
                              keep_going=True) if named == "asterisk" else None
    if summary is not None:
        assert [f["source"] for f in summary.failed] == [str(path)]
        assert summary.records == len(columns["line"]) and summary.rejected == 0
    assert cdrtrace.ingest(s, [str(path)], fmt="auto", zone="UTC").rejected == 0


def test_a_configured_dialect_is_read_as_configured_though_its_file_begins_as_a_format_does(
        tmp_path, day):
    """A dialect of FreeSWITCH's own 15 columns that reads a record with no end time:
    its files begin as FreeSWITCH's do, and are the operator's to name."""
    columns, _ = day
    path = tmp_path / "Master.csv"
    write(columns, "freeswitch", path, zone="UTC")
    (tmp_path / "cdrtrace.toml").write_text(
        '[dialects.fs-site]\nbase = "freeswitch"\nend_required = false\n')
    form = config.load(str(tmp_path / "cdrtrace.toml")).format("fs-site")
    assert detect_format(path.read_bytes()[:65536]) == "freeswitch" != form.name
    summary = cdrtrace.ingest(fresh(tmp_path), [str(path)], fmt=form, zone="UTC")
    assert summary.rejected == 0 and summary.records == len(columns["line"])


def test_a_crash_mid_file_does_not_mark_it_ingested(tmp_path, day, monkeypatch):
    """Only the transaction with a file's last records marks its content as ingested, so
    rerunning after a crash ingests the rest instead of skipping the file."""
    _, plain = day
    s = fresh(tmp_path)
    calls = {"n": 0}
    original = cdrtrace.store.index.write_entries

    def crash_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(cdrtrace.store.index, "write_entries", crash_on_second_batch)
    with pytest.raises(OSError, match="killed"):
        cdrtrace.ingest(s, [str(plain)], batch_pairs=500, chunk_bytes=65536)
    monkeypatch.setattr(cdrtrace.store.index, "write_entries", original)
    rerun = cdrtrace.ingest(s, [str(plain)], batch_pairs=500, chunk_bytes=65536)
    assert rerun.skipped == [] and rerun.records > 0
    whole = fresh(tmp_path, "whole")
    cdrtrace.ingest(whole, [str(plain)])
    assert projection(s) == projection(whole)
    assert cdrtrace.ingest(s, [str(plain)]).skipped == [str(plain)]


def test_a_commit_in_flight_saves_the_archive_as_it_was_when_its_batch_was_taken(tmp_path, day,
                                                                                  monkeypatch):
    """Batch ingest commits a batch on its own thread while the next is parsed and
    archived. The position that commit saves names the archive files of its own batch,
    not those written since, so a crash in the next commit and a rerun archive each call
    once (a later count would keep the next batch's files and archive it twice)."""
    import threading
    import time

    from test_stream import archived

    columns, plain = day
    s, archive = fresh(tmp_path), tmp_path / "archive"
    calls = {"n": 0}
    flushed = threading.Event()
    original = cdrtrace.store.index.write_entries
    from cdrtrace.store.archive import ArchiveWriter
    flush = ArchiveWriter.flush

    def flush_and_tell(self):
        flush(self)
        calls["flushes"] = calls.get("flushes", 0) + 1
        if calls["flushes"] == 2:
            flushed.set()        # the second batch's archive files are on disk

    def slow_then_crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            flushed.wait(10)     # commit 1 ends only after the next batch flushed its files
            time.sleep(0.05)
        if calls["n"] == 2:
            raise OSError("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(ArchiveWriter, "flush", flush_and_tell)
    monkeypatch.setattr(cdrtrace.store.index, "write_entries", slow_then_crash)
    with pytest.raises(OSError, match="killed"):
        cdrtrace.ingest(s, [str(plain)], batch_pairs=1000, chunk_bytes=65536, archive=archive)
    assert flushed.is_set()
    monkeypatch.setattr(cdrtrace.store.index, "write_entries", original)
    monkeypatch.setattr(ArchiveWriter, "flush", flush)
    cdrtrace.ingest(s, [str(plain)], archive=archive)
    total = len(columns["line"])
    assert archived(archive) == (total, total)


def test_calls_committed_from_a_file_found_damaged_later_name_no_caller(tmp_path, day,
                                                                          store_either):
    """gzip checks its checksum at its end: damage in the middle of a file larger than one
    write transaction shows once its earlier transactions are committed, and what they read
    may be damaged too, unseen (a digit of a caller's number). A trace that resolves to a
    call of such a file is untraceable, with what was found, and tells no call time; the
    same calls of a sound copy are named. Both tracers (store_either)."""
    either = store_either
    columns, plain = day
    data = bytearray(gzip.compress(plain.read_bytes()))
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0x55                          # shows only as its checksum at the end
    broken = tmp_path / "Master.csv.gz"
    broken.write_bytes(bytes(data))
    with pytest.raises(cdrtrace.SourceError, match="CRC check failed"):
        cdrtrace.ingest(either, [str(broken)], chunk_bytes=65536, batch_pairs=1000)
    sound = fresh(tmp_path, "sound")
    cdrtrace.ingest(sound, [str(plain)])
    committed = projection(either)
    assert 0 < len(committed) < len(projection(sound))
    named = [line for line in sorted(committed)[:40]
             if sound.trace(numbers.format_number(int.from_bytes(line, "big")))
             .outcome.value == "success"]
    assert len(named) > 10
    for line in named:
        text = numbers.format_number(int.from_bytes(line, "big"))
        result = either.trace(text)
        assert (result.outcome.value, result.call_time) == ("untraceable", None)
        (record,) = either.trace_records(text, analyst="cic")
        assert record["call"]["source_damaged"].startswith(f"{broken}: corrupt gzip data")
        assert "was found damaged further on" in record["reason"]
