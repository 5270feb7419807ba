"""What the store's disk allows a trace's flush, measured with plain files, no LMDB.

    python -m bench.disk [--commits N] [--dir DIR] [--json FILE]

A group commit of 32 traces writes about 46 pages apart in the evidence file, flushes
them, then writes and flushes the meta page (BENCHMARKS.md, "a ninth session"). Two
designs would take that flush off a trace's way, and this measures what each could
gain on the disk at hand before any is built:

- *two writers*: the same commit made by one thread, then by two threads at once, each
  on its own file (two environments or two processes taking commits in turn). If the
  disk overlapped their flushes, two would make more commits a second than one.
- *a log in front*: a trace answered once an append to a log file is flushed, its
  pages written later. The log's flush alone, then beside a second thread that flushes
  pages the way they would still have to be flushed: a commit's worth at a time, or
  in batches as a checkpoint or the kernel's write-back flushes them.

And what a group commit can save at all: commits of a trace's pages apart (about 1.4,
two thirds of them its line's entries) up to a 128-trace commit's, and the line through
them, a flush's fixed cost and its cost a page. Sharing a commit saves the fixed cost
only: where a page costs tens of microseconds, a trace's own pages bound the durable
traces a second however many share a commit (BENCHMARKS.md, "a nineteenth session").

The files are made in DIR (default: a temporary folder in TMPDIR), on the disk to
measure, and removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

PAGE = 4096
FILE_PAGES = 16_384                    # 64 MB, as an evidence file of a few months
COMMIT_PAGES = 46                      # a 32-trace commit's pages apart
LOG_BYTES = 8192                       # a commit's records appended to a log
LOG_EVERY = 0.0015                     # about one commit's cycle at 64 clients
BESIDE = ((46, 0.002), (460, 0.02), (4600, 0.2))   # pages flushed, every so many seconds
TRACE_PAGES = COMMIT_PAGES / 32        # a trace's share of a commit's pages apart
SIZES = (2, 12, 46, 92, 184)           # the pages of a commit of 1, 8, 32, 64, 128 traces


def quantiles(took: list[float]) -> dict:
    """p50 and p99 of durations in seconds, in ms (bench.service's too)."""
    took = sorted(took)
    return {"p50_ms": round(took[len(took) // 2] * 1000, 2),
            "p99_ms": round(took[int(len(took) * 0.99)] * 1000, 2)}


def data_file(path: str) -> int:
    """A file of FILE_PAGES written and flushed, so that later writes overwrite blocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = os.urandom(1 << 20)
    for at in range(0, FILE_PAGES * PAGE, len(chunk)):
        os.pwrite(fd, chunk, at)
    os.fsync(fd)
    return fd


def commit(fd: int, rnd: random.Random, pages: int, page: bytes) -> float:
    """LMDB's way: the pages at random places, a flush, the meta page, a flush."""
    started = time.perf_counter()
    for _ in range(pages):
        os.pwrite(fd, page, rnd.randrange(2, FILE_PAGES) * PAGE)
    os.fdatasync(fd)
    os.pwrite(fd, page, 0)
    os.fdatasync(fd)
    return time.perf_counter() - started


def writers(fds: list[int], commits: int, page: bytes) -> dict:
    """`commits` commits on each of len(fds) threads at once: their latency and the
    commits a second of all of them together."""
    took: list[float] = []

    def run(fd: int) -> None:
        rnd, mine = random.Random(fd), []
        for _ in range(commits):
            mine.append(commit(fd, rnd, COMMIT_PAGES, page))
        took.extend(mine)

    threads = [threading.Thread(target=run, args=(fd,)) for fd in fds]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"path": f"{len(fds)} writer" + "s" * (len(fds) > 1), **quantiles(took),
            "n": len(took), "commits_per_second": round(len(took) / wall)}


def log_beside(log: int, data: int, appends: int, pages: int, every: float,
               page: bytes) -> dict:
    """`appends` appends of LOG_BYTES to log, each flushed, LOG_EVERY apart, while a
    thread flushes `pages` pages of data every `every` seconds (none if pages is 0)."""
    stop, flushes = threading.Event(), []

    def behind() -> None:
        rnd = random.Random(7)
        while not stop.is_set():
            flushes.append(commit(data, rnd, pages, page))
            stop.wait(every)

    thread = threading.Thread(target=behind) if pages else None
    if thread:
        thread.start()
    took, at, record = [], 0, page * (LOG_BYTES // PAGE)
    try:
        for _ in range(appends):
            started = time.perf_counter()
            os.pwrite(log, record, at)
            os.fdatasync(log)
            took.append(time.perf_counter() - started)
            at = (at + LOG_BYTES) % (FILE_PAGES * PAGE)
            time.sleep(LOG_EVERY)
    finally:
        stop.set()
        if thread:
            thread.join()
    row = {"path": "log", "beside_pages": pages, "beside_every_s": every if pages else None,
           **quantiles(took), "n": len(took)}
    if flushes:
        row["beside_p50_ms"] = quantiles(flushes)["p50_ms"]
    return row


def by_size(fd: int, commits: int, page: bytes) -> list[dict]:
    """`commits` commits of each size in SIZES, in turn (the disk's phases fall on all
    alike); a row for each, then the least-squares line through their medians (one
    commit the disk held up for 70 ms moves a mean of a few, not a median). A line that
    does not rise with the pages (a disk whose phases swamped them) bounds nothing: its
    traces_per_second_bound is None."""
    rnd, took = random.Random(11), {n: [] for n in SIZES}
    for _ in range(commits):
        for n in SIZES:
            took[n].append(commit(fd, rnd, n, page))
    rows = [{"path": "by size", "pages": n, **quantiles(took[n]), "n": commits} for n in SIZES]
    medians = [statistics.median(took[n]) for n in SIZES]
    mx, my = sum(SIZES) / len(SIZES), sum(medians) / len(medians)
    slope = (sum((x - mx) * (y - my) for x, y in zip(SIZES, medians, strict=True))
             / sum((x - mx) ** 2 for x in SIZES))
    page_us = round(slope * 1e6, 1)
    rows.append({"path": "fit", "fixed_ms": round((my - slope * mx) * 1000, 3),
                 "page_us": page_us,
                 "traces_per_second_bound": round(1e6 / (page_us * TRACE_PAGES)) if page_us > 0
                 else None})
    return rows


def measure(folder: str, commits: int) -> list[dict]:
    page = os.urandom(PAGE)
    fds = [data_file(os.path.join(folder, name)) for name in ("a", "b")]
    try:
        rows = [writers(fds[:1], commits, page), writers(fds, commits, page)]
        log_beside(fds[1], fds[0], commits, 0, 0.0, page)       # warming up: not kept
        for pages, every in ((0, 0.0), *BESIDE):
            rows.append(log_beside(fds[1], fds[0], commits * 6, pages, every, page))
        return rows + by_size(fds[0], commits, page)
    finally:
        for fd in fds:
            os.close(fd)


def filesystem(path: str, mounts_file: str = "/proc/self/mounts") -> str:
    """The type of the file system path is on (its mount's, from the mounts table), or ""
    where that cannot be read."""
    where, kind = "", ""
    real = os.path.realpath(path)
    try:
        with open(mounts_file) as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(where):
                    where, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def in_memory(path: str, instead: str = "give --dir a folder on the store's disk",
              mounts_file: str = "/proc/self/mounts") -> str | None:
    """A warning when path is on a file system in memory, whose flushes say nothing of a
    disk's; None otherwise."""
    kind = filesystem(path, mounts_file)
    if kind in ("tmpfs", "ramfs"):
        return f"warning: {path} is on {kind}, in memory: its flushes say nothing of a disk's; {instead}"
    return None


def positive(text: str) -> int:
    """--commits: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.disk", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=positive, default=300, help="commits a writer "
                        "makes (the log makes six times as many appends); default 300")
    parser.add_argument("--dir", help="where the files are made: on the disk to measure")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    try:
        folder = tempfile.mkdtemp(prefix="cdrtrace-disk-", dir=args.dir)
        if warning := in_memory(folder):
            print(warning, file=sys.stderr)
        try:
            rows = measure(folder, args.commits)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    except OSError as exc:
        parser.exit(1, f"bench.disk: cannot measure in {args.dir or tempfile.gettempdir()}: "
                       f"{exc.strerror or exc}\n")
    for r in rows:
        if r["path"] == "log":
            beside = (f"beside {r['beside_pages']} pages every {r['beside_every_s']} s "
                      f"(their flush p50 {r['beside_p50_ms']} ms)" if r["beside_pages"]
                      else "alone")
            print(f"log append of {LOG_BYTES} B, flushed, {beside}: "
                  f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        elif r["path"] == "by size":
            print(f"a commit of {r['pages']} pages apart and the meta page: "
                  f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        elif r["path"] == "fit" and r["traces_per_second_bound"] is None:
            print(f"a commit's time did not rise with its pages ({r['page_us']} us a page "
                  "apart): the disk's phases swamped them, so no bound; measure again, with "
                  "more --commits")
        elif r["path"] == "fit":
            print(f"a commit costs {r['fixed_ms']} ms and {r['page_us']} us a page apart: a "
                  f"trace's {TRACE_PAGES:.2f} pages allow at most "
                  f"{r['traces_per_second_bound']:,} durable traces/s, however many share "
                  "a commit")
        else:
            print(f"{r['path']}, a commit of {COMMIT_PAGES} pages apart and the meta page: "
                  f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"{r['commits_per_second']} commits/s")
    one, two = rows[0]["commits_per_second"], rows[1]["commits_per_second"]
    print(f"two writers make {two / one:.2f}x the commits a second of one")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return rows


if __name__ == "__main__":
    main()
