"""Parse rate of every format, side by side with Asterisk in the same run, on the same
generated calls (PERFORMANCE.md: none below 50% of the Asterisk rate)."""
from __future__ import annotations

import os

import pytest

from cdrtrace import parse, synth

from .conftest import record

CALLS = int(os.environ.get("CDRTRACE_BENCH_FORMAT_RECORDS", 500_000))
CHUNK = 16 << 20


@pytest.fixture(scope="module")
def calls():
    columns, _ = synth.generate(CALLS, CALLS // 2, seed=2026)
    return columns


WRITERS = {
    "asterisk": lambda c, n: synth.format_asterisk(c, 0, n),
    "asterisk-custom": lambda c, n: synth.format_asterisk_custom(c, 0, n),
    "freeswitch": lambda c, n: synth.format_freeswitch(c, 0, n),
    "cucm": lambda c, n: synth.cucm_header() + synth.format_cucm(c, 0, n),
    "broadworks": lambda c, n: synth.broadworks_header() + synth.format_broadworks(c, 0, n),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_parse_rate(benchmark, calls, fmt):
    n = len(calls["line"])
    data = WRITERS[fmt](calls, n)
    header, skip = parse.read_header(parse.get_format(fmt), data[:65536])
    view = memoryview(data)

    def run():
        parser = parse.make_parser(fmt, header=header, start_offset=skip)
        count, pos = 0, skip
        while pos < len(data):
            end = min(len(data), pos + CHUNK)
            cols, bad, used = parser.feed(view[pos:end], end == len(data))
            count += len(cols["start_us"]) + len(bad)
            pos += used if end < len(data) else end - pos
        return count

    benchmark.group = "parse by format"
    assert benchmark.pedantic(run, rounds=5, iterations=1) == n
    median = benchmark.stats.stats.median
    record("parse by format", "cdrtrace" if fmt == "asterisk" else f"cdrtrace {fmt}",
           median, rate=n / median, bytes_per_record=round(len(data) / n))
