"""Streaming: append-to-visible latency at 50 K records/s offered (target p99 <= 100 ms)
beside a Python tail + py-lmdb follower, follower memory over the run, and the sustained
streaming (catch-up) rate beside batch ingest. The full run: python -m bench.streaming.

    CDRTRACE_BENCH_STREAM_SECONDS (default 10), CDRTRACE_BENCH_STREAM_RATE (default 50000)
"""
from __future__ import annotations

import os

from . import streaming
from .conftest import RECORDS, record

SECONDS = float(os.environ.get("CDRTRACE_BENCH_STREAM_SECONDS", 10))
RATE = int(os.environ.get("CDRTRACE_BENCH_STREAM_RATE", 50_000))


def test_append_to_visible_latency(tmp_path):
    lines = streaming.traffic(min(RATE * 10, 1_000_000))
    for kind in ("cdrtrace", "python-tail-lmdb"):
        r = streaming.latency(kind, lines, RATE, SECONDS, 50.0, tmp_path)
        assert r["lost"] == 0
        record("stream latency p99", kind, r["p99_ms"] / 1000, p50_ms=round(r["p50_ms"], 1),
               anon_rss_mb=f"{r['rss_anon_mb_after_2s']}->{r['rss_anon_mb_end']}")


def test_sustained_streaming_rate(tmp_path):
    s = streaming.sustained(min(RECORDS, 2_000_000), tmp_path)
    record("sustained", "cdrtrace", 1 / s["follow_records_per_s"], rate=s["follow_records_per_s"])
    record("sustained", "batch ingest of the same file", 1 / s["batch_records_per_s"],
           rate=s["batch_records_per_s"])
