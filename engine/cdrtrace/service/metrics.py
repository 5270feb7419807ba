"""The traces' metrics, counted for less: traces by outcome and way in
(`cdrtrace_traces_total`) and their durable latency (`cdrtrace_trace_seconds`).

prometheus_client's Counter and Histogram take a lock per value and go through a few
Python layers for each increment: about 4 us a trace on the event loop, the service's
busiest thread (BENCHMARKS.md). Here each trace is one bucket search and a few integer
additions under one lock, and the families are built when /metrics is read, exposed
exactly as prometheus_client's own Counter and Histogram expose them (their samples,
labels, bucket bounds and `_created` times; tests/test_service.py compares the two).

The C exchanges (cdrtrace.service._agi) count the traces they answer themselves, with
the same buckets, and are read only when /metrics is (add_source): a trace they log and
count never comes back to the event loop once answered.
"""
from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..api import shared_commits
from ..evidence.outcomes import Outcome
from ..store.catalog import held_by

BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .5, 1, 5)
OUTCOMES = tuple(Outcome)              # a C exchange counts an outcome by its place here
OUTCOME_INDEX = {outcome: i for i, outcome in enumerate(OUTCOMES)}
WORKERS_DIR = "CDRTRACE_METRICS_DIR"   # --workers: where each worker writes its counts
PERIOD = 1.0                  # seconds between a worker's writes of its counts
# what a source gives: ([count per outcome], [since when per outcome], [count per bucket,
# the last past every bound], the latencies' sum, since when), as _agi.Server.metrics
Counted = tuple[list[int], list[float], list[int], float, float]


class TraceMetrics:
    """A registry collector: observe(via, outcome, seconds) for each trace answered."""

    def __init__(self, buckets: Sequence[float] = BUCKETS):
        self.bounds = [float(b) for b in buckets] + [float("inf")]
        self.lock = threading.Lock()          # route handlers run on worker threads too
        self.counts: dict[tuple[str, str], list] = {}     # (outcome, via) -> [n, created]
        self.latency: dict[str, list] = {}    # via -> [per-bucket counts, sum, created]
        self.sources: list[tuple[str, Callable[[], Counted | None]]] = []

    def add_source(self, via: str, source: Callable[[], Counted | None]) -> None:
        """Counts kept elsewhere (a C exchange's, with BUCKETS' bounds), added to via's
        each time /metrics is read: source() gives them, or None (nothing any more)."""
        with self.lock:
            self.sources.append((via, source))

    def observe(self, via: str, outcome: str, seconds: float) -> None:
        bucket = bisect.bisect_left(self.bounds, seconds)   # the first bound >= seconds
        with self.lock:
            count = self.counts.get((outcome, via))
            if count is None:
                count = self.counts[(outcome, via)] = [0, time.time()]
            count[0] += 1
            series = self.latency.get(via)
            if series is None:
                series = self.latency[via] = [[0] * len(self.bounds), 0.0, time.time()]
            series[0][bucket] += 1
            series[1] += seconds

    def _add(self, counts: dict, latency: dict, via: str, counted: Counted) -> None:
        per_outcome, since, per_bucket, total, timed = counted
        for outcome, n, first in zip(OUTCOMES, per_outcome, since, strict=False):
            if n:
                count = counts.setdefault((outcome.value, via), [0, first])
                count[0] += n
                count[1] = min(count[1], first)
        if timed:
            series = latency.setdefault(via, [[0] * len(self.bounds), 0.0, timed])
            for i in range(len(self.bounds)):
                series[0][i] += per_bucket[i]
            series[1] += total
            series[2] = min(series[2], timed)

    def collect(self) -> Iterator[Any]:
        with self.lock:
            counts = {k: list(v) for k, v in self.counts.items()}
            latency = {k: [list(v[0]), v[1], v[2]] for k, v in self.latency.items()}
            sources = list(self.sources)
        for via, source in sources:
            counted = source()
            if counted is not None:
                self._add(counts, latency, via, counted)
        traces = CounterMetricFamily("cdrtrace_traces", "Traces by outcome",
                                     labels=["outcome", "via"])
        for (outcome, via), (n, created) in counts.items():
            traces.add_metric([outcome, via], n, created=created)
        yield traces
        seconds = HistogramMetricFamily("cdrtrace_trace_seconds", "Trace latency, durable",
                                        labels=["via"])
        for via, (per_bucket, total, created) in latency.items():
            cumulative, buckets = 0, []
            for bound, n in zip(self.bounds, per_bucket, strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            seconds.add_metric([via], buckets, total)
            seconds.add_sample("cdrtrace_trace_seconds_created", {"via": via}, created)
        yield seconds


class Refusals:
    """Prometheus: connections and requests the service refused or cut off, by listener
    (`via`: agi, http) and reason (`cdrtrace_refused_total`). An attack (a flood, peers
    trickling their bytes, guessed tokens or keys) shows here, not only in the log.

    The reasons: `not_allowed` (a FastAGI peer outside --agi-allow), `full` (past a
    listener's bound on connections), `slow` and `silent` (a request not whole in time),
    `malformed` (a FastAGI exchange outside the protocol), `not_served` (a FastAGI
    script other than trace), `wrong_key` (--agi-key-file), `unauthorized` and
    `forbidden` (HTTP 401, 403), `too_large` (HTTP head or body past its bound),
    `handshake` (a TLS handshake that did not end in time, or failed), `unanswered` (no
    answer in time: a fault of the service's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], list] = {}     # (via, reason) -> [n, created]

    def count(self, via: str, reason: str) -> None:
        with self.lock:
            count = self.counts.get((via, reason))
            if count is None:
                count = self.counts[(via, reason)] = [0, time.time()]
            count[0] += 1

    def collect(self) -> Iterator[Any]:
        refused = CounterMetricFamily(
            "cdrtrace_refused", "Connections and requests refused or cut off, by reason",
            labels=["via", "reason"])
        with self.lock:
            counts = sorted((k, list(v)) for k, v in self.counts.items())
        for (via, reason), (n, created) in counts:
            refused.add_metric([via, reason], n, created=created)
        yield refused


class SharedCommits:
    """Prometheus: the evidence commits traces shared, and the traces they carried."""

    def __init__(self, store: Any):
        self.store = store

    def collect(self) -> Any:
        traces, commits = shared_commits(self.store)
        yield CounterMetricFamily("cdrtrace_trace_commits", "Durable evidence commits of traces",
                                  value=commits)
        yield CounterMetricFamily("cdrtrace_traces_committed",
                                  "Traces those commits carried (over commits: traces a commit)",
                                  value=traces)


class TokenExpiry:
    """Prometheus: when each token given a life (token create --expires-days) is refused
    from, in Unix seconds, by name and role; revoked ones left out. An alert some days
    before a switch's token ends keeps *57 working behind it. Read from the store at each
    scrape (the same in every worker)."""

    def __init__(self, store: Any):
        self.store = store

    def collect(self) -> Any:
        family = GaugeMetricFamily("cdrtrace_token_expiry_timestamp_seconds",
                                   "When a token given a life is refused from (Unix time)",
                                   labels=["token", "role"])
        for token in self.store.tokens.listed():
            if token["expires_us"] is not None and token["revoked_us"] is None:
                family.add_metric([token["name"], token["role"]], token["expires_us"] / 1e6)
        yield family


class FeedMetrics:
    """Prometheus, per feed, read from the store at each scrape: records and rejects, the
    watermark's lag, and two states worth an alert. Stalled: its follower stopped or
    died, and its lines' traces pend. Held: its switch may leave calls that rang a line
    unlogged (Cisco UCM without its Zero Duration flag, Kamailio's acc table alone,
    FreeSWITCH writing A legs alone) and the feed has shown no record that it logs them,
    so every trace that resolves to one of its calls is untraceable."""

    GAUGES = (("cdrtrace_feed_records", "Records ingested per feed"),
              ("cdrtrace_feed_rejected", "Records rejected per feed"),
              ("cdrtrace_feed_lag_seconds", "Feed watermark lag"),
              ("cdrtrace_feed_stalled", "1: its follower stopped, traces pend"),
              ("cdrtrace_feed_held", "1: its switch may leave calls unlogged and it has shown "
                                     "none logged: its calls' traces are untraceable"))

    def __init__(self, store: Any):
        self.store = store

    def collect(self) -> Any:
        records, rejects, lag, stalled, held = (GaugeMetricFamily(name, text, labels=["feed"])
                                                for name, text in self.GAUGES)
        for feed in self.store.stats()["feeds"]:
            name = [feed["feed"]]
            records.add_metric(name, feed["records"])
            rejects.add_metric(name, feed["rejected"])
            if feed["lag_seconds"] is not None:
                lag.add_metric(name, feed["lag_seconds"])
            stalled.add_metric(name, int(feed["stalled"]))
            held.add_metric(name, int(bool(held_by(feed))))
        yield from (records, rejects, lag, stalled, held)


def counted(registry: Any, collectors: Sequence[Any]) -> Workers | None:
    """Register the service's own counts: as they are, or, in a worker of `serve
    --workers` (WORKERS_DIR set), as every worker's sum (Workers, returned)."""
    folder = os.environ.get(WORKERS_DIR)
    if not folder:
        for collector in collectors:
            registry.register(collector)
        return None
    registry.register(workers := Workers(folder, collectors))
    return workers


class Workers:
    """`serve --workers`: the counts of every worker process as one service's. Each worker
    writes what its collectors count to a file of its own in a folder the supervisor made
    (write(), every PERIOD seconds); /metrics, whichever worker answers it, sums every
    worker's last file, its own included. So each worker answers the same, and never
    less than before (a file's counts only grow): Prometheus, reaching a worker at random
    through the shared port, would otherwise read counts going up and down (resets, to
    it), each a part of the service's."""

    def __init__(self, folder: str, collectors: Sequence[Any], name: str | None = None):
        self.folder, self.collectors = folder, list(collectors)
        # a name no other worker has had (a pid can come again: its file's counts stay)
        name = name or f"{os.getpid()}-{time.time_ns()}"
        self.path = os.path.join(folder, f"worker-{name}.json")
        self.supervisor = os.getppid()
        self.write()

    def write(self) -> None:
        families = [[family.name, family.documentation, family.type,
                     [[sample.name, sample.labels, sample.value] for sample in family.samples]]
                    for collector in self.collectors for family in collector.collect()]
        temporary = self.path + ".new"
        with open(temporary, "wb") as out:
            out.write(orjson.dumps(families))     # on the event loop: a tenth of json's time
        os.replace(temporary, self.path)          # read whole, the last or the one before

    def leave(self) -> None:
        """On stopping. While the supervisor that made the folder runs, nothing: a worker
        it starts again adds this one's counts on, and it removes the folder once every
        worker has stopped. A worker whose supervisor was killed (the kernel's SIGTERM,
        server.PR_SET_PDEATHSIG) is the last to know of the folder: it removes its file,
        those of workers no longer running, and the folder once it is empty (the last
        worker to stop, whichever it is). Before, each such stop left a folder in TMPDIR."""
        if os.getppid() == self.supervisor:
            return
        with contextlib.suppress(OSError):
            for name in os.listdir(self.folder):
                path = os.path.join(self.folder, name)
                if path.startswith(self.path) or not _running(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
            os.rmdir(self.folder)        # fails while a worker still running has a file

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, tuple[str, str, dict]] = {}
        for name in sorted(os.listdir(self.folder)):
            if not (name.startswith("worker-") and name.endswith(".json")):
                continue
            with open(os.path.join(self.folder, name), "rb") as f:
                families = orjson.loads(f.read())
            for family, documentation, kind, samples in families:
                values = merged.setdefault(family, (documentation, kind, {}))[2]
                for sample, labels, value in samples:
                    key = (sample, tuple(sorted(labels.items())))
                    if sample.endswith("_created"):         # the first worker's
                        values[key] = min(values.get(key, value), value)
                    else:
                        values[key] = values.get(key, 0) + value
        for family, (documentation, kind, values) in merged.items():
            metric = Metric(family, documentation, kind)
            for (sample, labels), value in values.items():
                metric.add_sample(sample, dict(labels), value)
            yield metric


def _running(name: str) -> bool:
    """Whether the worker that wrote a file (worker-PID-TIME.json, .new while written)
    still runs; any other file is kept."""
    pid = name.removeprefix("worker-").split("-")[0]
    if not (name.startswith("worker-") and pid.isdigit()):
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's: running
        pass
    return True
