"""Shards and replicas (docs/operations.md, "Shards and replicas"): a store that holds one
shard of the carrier's lines indexes only those, reads only its shard's Kafka partitions,
and answers no trace while it is too far behind; replicas of a shard that consume the same
partitions, killed and restarted at random, end with the same index."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import zlib

import pytest
from test_kafka import cluster  # noqa: F401 - the mock Kafka cluster fixture
from test_stream import index_snapshot

import cdrtrace
from cdrtrace import config, testing
from cdrtrace.errors import ConfigError, NotReadyError
from cdrtrace.parsing.numbers import format_number
from conftest import cdr

SHARDS = {"east": ("+1303", (0, 1)), "west": ("+1720", (2, 3))}   # prefix, partitions


def shard_store(path, name: str, lag: float | None = None, zone: str = "UTC") -> str:
    prefix, partitions = SHARDS[name]
    cdrtrace.open(path, create=True, zone=zone).close()
    (path / "cdrtrace.toml").write_text(
        f'[shard]\nname = "{name}"\nprefixes = ["{prefix}"]\n'
        f'partitions = [{", ".join(map(str, partitions))}]\n'
        + (f"max_lag_seconds = {lag}\n" if lag else ""))
    return str(path)


def call(i: int) -> tuple[tuple[str, ...], bytes]:
    """Call i: to one of 40 lines in Denver (303, east) or 40 in Boulder (720, west); every
    tenth Boulder call is forwarded to a Denver line, which rang (the lines it involves,
    and the record)."""
    line = f"{'303' if i % 2 else '720'}555{(i // 2) % 40:04d}"
    minute, second = divmod(i, 60)
    start = f"2026-03-02 {10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}"
    forwarded_to = f"303555{(i * 7) % 40:04d}" if i % 20 == 10 else None
    record = cdr(src=f"212555{i:04d}", dst=line, start=start, answer="", end=start,
                 disposition="NO ANSWER", uniqueid=f"u{i}",
                 dstchannel=f"PJSIP/{forwarded_to}-{i:04x}" if forwarded_to else None) + b"\n"
    return (line, forwarded_to) if forwarded_to else (line,), record


def partitions_of(lines: tuple[str, ...]) -> set[int]:
    """Producers key by the dialled line and keep each shard's lines in its partitions; a
    call that also rang a line of another shard (forwarded) goes to that shard too."""
    shards = {"east" if line.startswith("303") else "west" for line in lines}
    return {SHARDS[shard][1][zlib.crc32(lines[0].encode()) % 2] for shard in shards}


def test_the_shard_table_is_checked(tmp_path):
    path = tmp_path / "cdrtrace.toml"
    for text, message in (
            ('[shard]\nname = "e"\nprefixes = []\n', "non-empty list of number prefixes"),
            ('[shard]\nname = "e"\nprefixes = ["+1-303"]\n', "number prefixes"),
            ('[shard]\nname = "e"\nprefixes = ["+1303"]\npartitions = [1, 1]\n', "distinct"),
            ('[shard]\nname = "e"\nprefixes = ["+1303"]\nmax_lag_seconds = 0\n', "> 0"),
            ('[shard]\nprefixes = ["+1303"]\n', "shard.name"),
            ('[shard]\nname = "e"\nprefixes = ["+1303"]\nreplication = 2\n', "unknown key")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            config.load(path)
    path.write_text('[shard]\nname = "east"\nprefixes = ["+1303", "+1720"]\npartitions = [3, 1]\n')
    assert config.load(path).shard == config.Shard("east", ("+1303", "+1720"), (1, 3), None)


def test_a_feed_and_a_shard_admit_the_lines_both_admit():
    both = config.both_served
    assert both((), ("+1303",)) == ("+1303",)                 # a feed of every line
    assert both(("+1303555",), ()) == ("+1303555",)          # a store of every line
    assert both(("+1303", "+1720"), ("+1303555", "+1415")) == ("+1303555",)
    assert both(("+1",), ("+1303", "+1720")) == ("+1303", "+1720")
    assert both(("+1415",), ("+1303",)) == ()                 # nothing in common


def test_a_shard_indexes_only_its_lines_from_every_feed(tmp_path):
    store = cdrtrace.open(shard_store(tmp_path / "east", "east"))
    records = [call(i)[1] for i in range(40)]
    (tmp_path / "all.csv").write_bytes(b"".join(records))
    summary = cdrtrace.ingest(store, [str(tmp_path / "all.csv")])
    # the 20 calls dialled to 303 lines, and the 2 Boulder calls forwarded to a 303 line
    # (calls 10 and 30), indexed under the 303 line that rang; nothing under a 720 line
    assert summary.records == 40 and summary.indexed == 22
    lines = {format_number(int.from_bytes(k, "big"))
             for k, _ in testing.index_items(store)}
    assert lines and all(line.startswith("+1303") for line in lines)
    store.close()
    (tmp_path / "east" / "cdrtrace.toml").write_text(
        '[shard]\nname = "east"\nprefixes = ["+1303"]\n'
        '[feeds.boulder]\nformat = "asterisk"\nserved = ["+1720"]\n')
    store = cdrtrace.open(tmp_path / "east")
    with pytest.raises(ConfigError, match="serves no line of shard east"):
        cdrtrace.ingest(store, [str(tmp_path / "all.csv")], feed=config.load(
            tmp_path / "east" / "cdrtrace.toml").feed("boulder"), force=True)
    store.close()


def test_a_replica_too_far_behind_answers_no_trace(tmp_path):
    store = cdrtrace.open(shard_store(tmp_path / "east", "east", lag=30))
    (line,), record = call(1)
    (tmp_path / "one.csv").write_bytes(record)
    cdrtrace.ingest(store, [str(tmp_path / "one.csv")])
    with pytest.raises(NotReadyError, match="no live feed is consuming"):
        store.trace(line, at="2026-03-02T11:00:00Z")
    now_us = time.time_ns() // 1000
    testing.pretend_live_feed(store, 1, idle_seen_us=now_us - 60_000_000)    # a minute behind
    with pytest.raises(NotReadyError, match="behind its feeds"):
        store.trace(line, at="2026-03-02T11:00:00Z")
    assert store.trace_records(analyst="ann") == []                 # nothing was recorded
    testing.pretend_live_feed(store, 1, idle_seen_us=now_us)          # caught up
    assert store.trace(line, at="2026-03-02T11:00:00Z").outcome.value == "success"
    store.close()


def test_replicas_of_a_shard_killed_at_random_end_with_the_same_index(cluster, tmp_path):  # noqa: F811
    address, producer = cluster
    topic = "cdr-shards"
    rng = random.Random(16)
    calls = [call(i) for i in range(1200)]
    replicas = {(name, n): shard_store(tmp_path / f"{name}-{n}", name)
                for name in SHARDS for n in (1, 2)}

    def produce(part):
        for lines, record in part:
            for partition in partitions_of(lines):
                producer.produce(topic, record, key=lines[0], partition=partition)
        assert producer.flush(10) == 0

    def start(replica):
        name, n = replica
        return subprocess.Popen(
            [sys.executable, "-m", "cdrtrace.cli", "ingest", "--db", replicas[replica],
             f"kafka://{address}/{topic}?group={name}-{n}", "--format", "asterisk",
             "--until-idle", "1.5", "--batch-ms", "10"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    produce(calls[:400])
    running = {r: start(r) for r in replicas}
    produce(calls[400:800])
    for k, victim in enumerate(rng.sample(sorted(replicas), 2)):   # SIGKILL mid-stream
        time.sleep(rng.uniform(0.1, 0.6))
        running[victim].send_signal(signal.SIGKILL)
        running[victim].wait(10)
        produce(calls[800 + 100 * k:900 + 100 * k])
        running[victim] = start(victim)                   # and restart
    produce(calls[1000:])

    def finish():
        for replica, proc in running.items():
            _, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, (replica, err[-2000:])
    finish()
    running = {r: start(r) for r in replicas}             # later: each catches up once more
    finish()

    # what the rules say: the last calls of every line, as one store of every line holds
    everything = cdrtrace.open(tmp_path / "all", create=True)
    (tmp_path / "all.csv").write_bytes(b"".join(record for _, record in calls))
    cdrtrace.ingest(everything, [str(tmp_path / "all.csv")])
    expected = index_snapshot(everything)
    everything.close()
    for name, (prefix, _) in SHARDS.items():
        one, two = (cdrtrace.open(replicas[(name, n)]) for n in (1, 2))
        mine = {k: v for k, v in expected.items()
                if format_number(int.from_bytes(k, "big")).startswith(prefix)}
        assert len(mine) == 40
        assert index_snapshot(one) == index_snapshot(two) == mine
        for replica in (one, two):                        # it read its partitions only
            read = {int(k.rsplit(b"/", 1)[1]) for k in testing.positions(replica, b"kafka:")}
            assert read == set(SHARDS[name][1])
        for line in sorted({lines[0] for lines, _ in calls
                            if ("+1" + lines[0]).startswith(prefix)})[:10]:
            a, b = (s.trace(line, at="2026-03-02T11:00:00Z") for s in (one, two))
            assert (a.outcome, a.call_time) == (b.outcome, b.call_time)
            assert a.outcome.value == "success"
        one.close()
        two.close()


@pytest.mark.parametrize("behind, why", [
    (29.0, None), (30.0, None),
    (31.0, "shard east: 31.0 s behind its feeds (bound 30 s)"),
    (45.5, "shard east: 45.5 s behind its feeds (bound 30 s)")])
def test_a_replica_is_stale_past_its_bound_and_not_before(tmp_path, behind, why):
    """max_lag_seconds: a replica whose slowest live feed is further behind than the
    bound answers no trace (saying how far); at the bound or nearer, it answers."""
    from types import SimpleNamespace

    store = cdrtrace.open(shard_store(tmp_path / "east", "east", lag=30))
    now = time.time_ns() // 1000               # the feeds' heartbeats are the clock's
    testing.pretend_live_feed(store, 1, idle_seen_us=now)                      # caught up
    testing.pretend_live_feed(store, 2, idle_seen_us=now - int(behind * 1e6))  # the slowest
    shard = SimpleNamespace(name="east", max_lag_seconds=30)
    assert store.liveness.stale(shard, now_us=now) == why
    store.close()


def test_the_service_of_a_stale_replica_is_not_ready_and_traces_nothing(tmp_path):
    import httpx
    from test_service import Service

    store = cdrtrace.open(shard_store(tmp_path / "east", "east", lag=30))
    token = store.tokens.create("switch-1", "switch")
    running = Service(store)
    try:
        ready = httpx.get(running.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and "no live feed" in ready.json()["error"]
        traced = httpx.post(running.url + "/v1/trace", json={"line": "3035550001"}, timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
        assert traced.status_code == 503 and "no live feed" in traced.json()["error"]
        testing.pretend_live_feed(store, 1, idle_seen_us=time.time_ns() // 1000)
        assert httpx.get(running.url + "/readyz", timeout=10).status_code == 200
    finally:
        running.stop()
    assert store.trace_records(analyst="ann") == []
    store.close()


def test_the_service_forwards_a_trace_to_a_ready_replica_of_the_shard_that_holds_the_line(
        tmp_path):
    import httpx
    from test_service import Service, agi, asterisk

    west_line, west_call = "7205550001", cdr(src="2125550101", dst="7205550001",
                                              start="2026-03-02 10:00:00", answer="",
                                              end="2026-03-02 10:00:20", disposition="NO ANSWER")
    (tmp_path / "west.csv").write_bytes(west_call + b"\n")
    west = {}
    for replica in ("a", "b"):                 # a: too far behind (no live feed); b: ready
        store = cdrtrace.open(shard_store(tmp_path / f"west-{replica}", "west",
                                          lag=30 if replica == "a" else None))
        cdrtrace.ingest(store, [str(tmp_path / "west.csv")])
        west[replica] = store
    router_token = west["a"].tokens.create("router-east", "switch")
    (tmp_path / "west.token").write_text(router_token + "\n")
    installed = subprocess.run(      # the same router token on the other replica, from a file
        [sys.executable, "-m", "cdrtrace.cli", "token", "create", "--db", str(tmp_path / "west-b"),
         "--name", "router-east", "--role", "switch", "--from-file", str(tmp_path / "west.token")],
        capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and router_token not in installed.stdout, installed.stderr
    services = {replica: Service(store) for replica, store in west.items()}
    shard_store(tmp_path / "east", "east", zone="America/Denver")    # west's is UTC
    with open(tmp_path / "east" / "cdrtrace.toml", "a") as f:
        f.write('[shard.peers.west]\nprefixes = ["+1720"]\n'
                f'replicas = ["{services["a"].url}", "{services["b"].url}"]\n'
                f'token_file = "{tmp_path / "west.token"}"\n')
    east = cdrtrace.open(tmp_path / "east")
    switch = east.tokens.create("switch-1", "switch")
    front = Service(east)
    try:
        with pytest.raises(cdrtrace.WrongShardError, match="shard west holds it"):
            east.trace(west_line, at="2026-03-02T11:00:00Z")
        answer = httpx.post(front.url + "/v1/trace", timeout=20,
                            json={"line": west_line, "at": "2026-03-02T11:00:00Z"},
                            headers={"Authorization": f"Bearer {switch}"})
        assert answer.status_code == 200 and answer.json()["outcome"] == "success"
        assert "2125550101" not in answer.text                      # never the caller
        held = west["b"].trace_records(analyst="ann")               # the evidence is b's
        assert [r["trace_id"] for r in held] == [answer.json()["trace_id"]]
        assert held[0]["requested_by"] == "token:router-east"
        assert held[0]["call"]["calling"] == "+12125550101"
        assert west["a"].trace_records(analyst="ann") == east.trace_records(analyst="ann") == []
        commands, _ = agi(front, asterisk(callerid=west_line, agi_arg_1="2026-03-02T11:00:00Z"))
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "already_traced"'   # b named it before
        # a time without an offset is east's, 04:00 in Denver: 11:00 UTC, forwarded as
        # such (read in west's zone, 04:00 UTC, it came before the call: no_call)
        local = httpx.post(front.url + "/v1/trace", timeout=20,
                           json={"line": west_line, "at": "2026-03-02T04:00:00"},
                           headers={"Authorization": f"Bearer {switch}"})
        assert local.json()["outcome"] == "already_traced", local.text
        assert west["b"].trace_records(analyst="ann")[-1]["activated_us"] == 1772449200 * 10**6
        named = httpx.post(front.url + "/v1/trace", timeout=20,   # the feed goes with it
                           json={"line": west_line, "at": "2026-03-02T11:00:00Z", "feed": "pbx-9"},
                           headers={"Authorization": f"Bearer {switch}"})
        assert named.status_code == 400 and "no feed named 'pbx-9'" in named.text, named.text
        # a trace forwarded once is not forwarded again; a line no shard holds is refused
        for url, line in ((services["b"].url, "3035550001"), (front.url, west_line)):
            refused = httpx.post(url + "/v1/trace", json={"line": line}, timeout=10,
                                 headers={"Authorization": f"Bearer {router_token if url != front.url else switch}",
                                          "X-Cdrtrace-Forwarded": "1"})
            assert refused.status_code == 421, refused.text
        refused = httpx.post(front.url + "/v1/trace", json={"line": "2125550199"}, timeout=10,
                             headers={"Authorization": f"Bearer {switch}"})
        assert refused.status_code == 421 and "no shard of the map holds it" in refused.text
        services["b"].stop()                                       # no ready replica left
        down = httpx.post(front.url + "/v1/trace", json={"line": west_line}, timeout=20,
                          headers={"Authorization": f"Bearer {switch}"})
        assert down.status_code == 503 and "no replica of shard west answered" in down.text
    finally:
        front.stop()
        services["a"].stop()
        if services["b"].thread.is_alive():
            services["b"].stop()
        for store in (east, *west.values()):
            store.close()


def test_the_service_forwards_over_tls_to_a_replica_whose_certificate_it_trusts(
        tmp_path, monkeypatch):
    """A peer shard's replica served with --tls-cert is reached at its https:// address,
    its certificate checked against the authority SSL_CERT_FILE names; one the router does
    not trust answers nothing."""
    import httpx
    from test_service import TLS, Service

    west_line = "7205550001"
    (tmp_path / "west.csv").write_bytes(cdr(
        src="2125550101", dst=west_line, start="2026-03-02 10:00:00", answer="",
        end="2026-03-02 10:00:20", disposition="NO ANSWER") + b"\n")
    west = cdrtrace.open(shard_store(tmp_path / "west", "west"))
    cdrtrace.ingest(west, [str(tmp_path / "west.csv")])
    (tmp_path / "west.token").write_text(west.tokens.create("router-east", "switch") + "\n")
    replica = Service(west, tls=TLS)
    assert replica.url.startswith("https://127.0.0.1:")
    shard_store(tmp_path / "east", "east")
    with open(tmp_path / "east" / "cdrtrace.toml", "a") as f:
        f.write(f'[shard.peers.west]\nprefixes = ["+1720"]\nreplicas = ["{replica.url}"]\n'
                f'token_file = "{tmp_path / "west.token"}"\n')
    east = cdrtrace.open(tmp_path / "east")
    switch = {"Authorization": f"Bearer {east.tokens.create('switch-1', 'switch')}"}
    front = Service(east)
    try:
        body = {"line": west_line, "at": "2026-03-02T11:00:00Z"}
        untrusted = httpx.post(front.url + "/v1/trace", json=body, headers=switch, timeout=20)
        assert untrusted.status_code == 503 and "CERTIFICATE_VERIFY_FAILED" in untrusted.text
        monkeypatch.setenv("SSL_CERT_FILE", TLS[0])
        answer = httpx.post(front.url + "/v1/trace", json=body, headers=switch, timeout=20)
        assert answer.status_code == 200 and answer.json()["outcome"] == "success"
        held = west.trace_records(analyst="ann")                   # the evidence is west's
        assert [r["trace_id"] for r in held] == [answer.json()["trace_id"]]
    finally:
        front.stop()
        replica.stop()
        east.close()
        west.close()
