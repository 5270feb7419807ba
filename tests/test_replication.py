"""Trace evidence shared by the replicas of a shard over a Kafka topic (librdkafka's mock
cluster; docs/operations.md, "Shards and replicas"): ids never collide, a call traced on
one replica is `already_traced` on the other, nothing is lost when a replica stops before
sending, and nothing is applied twice."""
from __future__ import annotations

import base64
import json
import logging
import os
import time

import pytest
from test_kafka import cluster  # noqa: F401 - the mock Kafka cluster fixture

import cdrtrace
from cdrtrace import config
from cdrtrace.errors import ConfigError
from cdrtrace.evidence import replication
from cdrtrace.evidence.replication import Replicator
from conftest import cdr

AT = "2026-03-02T12:00:00Z"
CALLS = [("3035550001", "2125550101", "10:00:00"), ("3035550002", "2125550101", "10:05:00"),
         ("3035550003", "2125550101", "10:10:00"), ("3035550004", "2125550104", "10:15:00")]


@pytest.fixture
def topic(cluster):  # noqa: F811
    """A fresh evidence topic on the mock cluster (4 partitions): (its URL, the address)."""
    address, producer = cluster
    name = f"evidence-{time.monotonic_ns()}"
    deadline = time.monotonic() + 10          # the mock cluster creates a topic asked for
    while not producer.list_topics(name, timeout=5).topics[name].partitions:
        assert time.monotonic() < deadline, f"no topic {name}"
    return f"kafka://{address}/{name}", address


def evidence_key(folder, text: str = "k" * 64):
    """The shard's evidence key file (mode 600), made once per folder."""
    path = folder / "evidence.key"
    if not path.exists():
        path.write_text(text + "\n")
        path.chmod(0o600)
    return path


def replica(path, number: int, url: str, calls_file, key=None) -> cdrtrace.Store:
    cdrtrace.open(path, create=True).close()
    key = key or evidence_key(path.parent)
    (path / "cdrtrace.toml").write_text(
        f'[shard]\nname = "east"\nprefixes = ["+1303"]\nreplica = {number}\nreplicas = 2\n'
        f'evidence = "{url}"\nevidence_key_file = "{key}"\n')
    store = cdrtrace.open(path)
    cdrtrace.ingest(store, [str(calls_file)])
    return store


@pytest.fixture
def calls_file(tmp_path):
    path = tmp_path / "calls.csv"
    path.write_bytes(b"".join(
        cdr(src=caller, dst=line, start=f"2026-03-02 {t}", answer="", end=f"2026-03-02 {t}",
            disposition="NO ANSWER", uniqueid=f"u{i}") + b"\n"
        for i, (line, caller, t) in enumerate(CALLS)))
    return path


def settle(*replicators: Replicator, timeout: float = 20) -> None:
    """Rounds on every replicator until their outboxes are empty and every replica holds
    every trace any of them answered."""
    deadline = time.monotonic() + timeout
    while True:
        for r in replicators:
            r.step()
        ids = [{e[0] for e in evidence(r.store)} for r in replicators]
        if all(outbox_size(r.store) == 0 for r in replicators) and all(i == ids[0] for i in ids):
            return
        assert time.monotonic() < deadline, f"the replicas did not settle: {ids}"


def outbox_size(store) -> int:
    with store.envs.eread() as txn:
        return txn.stat(store.envs.db["outbox"])["entries"]


def outbox_event(store) -> bytes:
    """The first event waiting in a replica's outbox (the line's key taken off)."""
    with store.envs.eread() as txn:
        return bytes(next(iter(txn.cursor(store.envs.db["outbox"])))[1])[8:]


def evidence(store) -> list[tuple]:
    return sorted((r["trace_id"], r["line"], r["outcome"], (r["call"] or {}).get("calling"),
                   r["original_trace"]) for r in store.trace_records(analyst="ann"))


def test_replicas_share_their_traces_and_never_name_a_call_twice(topic, tmp_path, calls_file):
    url, _ = topic
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    ra, rb = Replicator(a, url), Replicator(b, url)
    try:
        first = a.trace("3035550001", at=AT)
        assert first.outcome.value == "success" and int(first.trace_id[1:]) % 2 == 0
        settle(ra, rb)
        again = b.trace("3035550001", at=AT)            # the failover replica knows the call
        assert again.outcome.value == "already_traced"
        second = b.trace("3035550002", at=AT)
        assert second.outcome.value == "success" and int(second.trace_id[1:]) % 2 == 1
        third = a.trace("3035550003", at=AT)
        settle(ra, rb)
        assert len({first.trace_id, again.trace_id, second.trace_id, third.trace_id}) == 4
        assert evidence(a) == evidence(b)                # the same records on both
        assert [e[4] for e in evidence(b) if e[0] == again.trace_id] == [first.trace_id]
        rows_a, rows_b = (s.report_rows(analyst="ann") for s in (a, b))
        assert sorted(rows_a.tolist()) == sorted(rows_b.tolist())
        for line in ("3035550001", "3035550002", "3035550003"):   # the customer's view too
            assert a.status(line).to_dict() == b.status(line).to_dict()
        assert a.trace("3035550002", at=AT).outcome.value == "already_traced"
    finally:
        ra.close()
        rb.close()
        a.close()
        b.close()


def test_a_replica_that_stops_before_sending_sends_when_it_starts_again(topic, tmp_path,
                                                                          calls_file):
    """The outbox commits with the trace: what a stopped replica had not sent is sent by
    its next replicator; and a restarted replicator applies nothing twice (its offsets
    commit with what it applied)."""
    url, _ = topic
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    traced = a.trace("3035550004", at=AT)              # no replicator running
    a.close()
    a = cdrtrace.open(tmp_path / "a")                  # started again
    assert outbox_size(a) == 1
    ra, rb = Replicator(a, url), Replicator(b, url)
    settle(ra, rb)
    assert [e[0] for e in evidence(b)] == [traced.trace_id]
    rb.close()
    rb = Replicator(b, url)                            # restarted: from its saved offsets
    rb.connect()
    assert rb.consumer.consume(10, timeout=2.0) == []  # nothing read again
    c = replica(tmp_path / "c", 1, url, calls_file)    # a new replica reads from the start
    rc = Replicator(c, url)
    settle(ra, rb, rc)
    assert rb.applied == 0 and rc.applied == 1 and evidence(c) == evidence(b)
    rc.close()
    c.close()
    ra.close()
    rb.close()
    a.close()
    b.close()


def test_a_record_sent_twice_is_applied_once(topic, tmp_path, calls_file):
    url, _ = topic
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    a.trace("3035550001", at=AT)
    event = json.loads(outbox_event(a))
    applied = [b.envs.ewrite(lambda txn: replication.apply(txn, b.envs.db, event))
               for _ in range(2)]
    assert applied == [True, False]
    assert len(b.trace_records(analyst="ann")) == 1 and len(b.report_rows(analyst="ann")) == 1
    assert b.trace("3035550001", at=AT).outcome.value == "already_traced"
    a.close()
    b.close()


def test_a_record_of_a_call_that_reused_an_id_replaces_the_older_calls_mark(topic, tmp_path,
                                                                           calls_file, caplog):
    """A switch reused a call id three days later (CUCM's are unique only for some days).
    Replica b traced the older call; a traced the new one. Applied on b, a's record is
    the new call's mark there (no clash: two calls), and b's next trace of the new call
    is already_traced after a's."""
    url, _ = topic
    reused = tmp_path / "reused.csv"
    reused.write_bytes(b"".join(
        cdr(src=caller, dst="3035550009", start=f"2026-03-0{day} 10:00:00", answer="",
            end=f"2026-03-0{day} 10:00:00", disposition="NO ANSWER", uniqueid="r1") + b"\n"
        for caller, day in (("2125550109", 2), ("2125550108", 5))))
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    for store in (a, b):
        cdrtrace.ingest(store, [str(reused)])
    assert b.trace("3035550009", at="2026-03-03T10:00:00Z").successful      # the older call
    newer = a.trace("3035550009", at="2026-03-05T11:00:00Z")
    assert newer.successful
    event = json.loads(outbox_event(a))
    with caplog.at_level(logging.WARNING, logger="cdrtrace"):
        assert b.envs.ewrite(lambda txn: replication.apply(txn, b.envs.db, event))
    assert not any("both named one call" in r.getMessage() for r in caplog.records)
    again = b.trace("3035550009", at="2026-03-05T11:00:00Z")
    assert again.outcome.value == "already_traced"
    (record,) = [r for r in b.trace_records("3035550009", analyst="ann")
                 if r["trace_id"] == again.trace_id]
    assert record["original_trace"] == newer.trace_id
    a.close()
    b.close()


def traced_by_each(tmp_path, url: str, calls_file, first: str, second: str) -> tuple:
    """Two replicas and their replicators: each ingested calls from first (at 10:00) and
    second (at 10:30) to 3035550009; replica a traced the first, then b, having heard of
    it, the second."""
    more = tmp_path / "more.csv"
    more.write_bytes(b"".join(
        cdr(src=caller, dst="3035550009", clid=f'"" <{caller}>', start=f"2026-03-02 {t}",
            answer="", end=f"2026-03-02 {t}", disposition="NO ANSWER", uniqueid=f"m{t}") + b"\n"
        for caller, t in ((first, "10:00:00"), (second, "10:30:00"))))
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    for store in (a, b):
        cdrtrace.ingest(store, [str(more)])
    ra, rb = Replicator(a, url), Replicator(b, url)
    try:
        assert a.trace("3035550009", at="2026-03-02T10:10:00Z").successful
        settle(ra, rb)
        assert b.trace("3035550009", at="2026-03-02T10:40:00Z").successful
        settle(ra, rb)
    except BaseException:
        for held in (ra, rb, a, b):
            held.close()
        raise
    return a, b, ra, rb


def test_replicas_give_an_origin_one_label_and_keep_the_first_trace_of_a_call(
        topic, tmp_path, calls_file, caplog):
    """Caller A on one replica is Caller A on the other, whichever replica traced the
    next origin. Two replicas that both named one call before either heard of the other
    (a failover in between) each keep the trace they made first: its next trace of the
    call is already_traced after that one, and the clash is logged."""
    url, _ = topic
    a, b, ra, rb = traced_by_each(tmp_path, url, calls_file, "2125550109", "2125550108")
    try:
        for store in (a, b):
            assert [p.label for p in store.status("3035550009").progress] == [
                "Caller A", "Caller B"]
        assert a.status("3035550009").to_dict() == b.status("3035550009").to_dict()
        first_a, first_b = (s.trace("3035550001", at=AT) for s in (a, b))   # unheard
        assert first_a.successful and first_b.successful
        with caplog.at_level(logging.WARNING, logger="cdrtrace"):
            settle(ra, rb)
        assert sum("both named one call as traced" in r.getMessage()
                   for r in caplog.records) == 2
        for store, first in ((a, first_a), (b, first_b)):
            again = store.trace("3035550001", at=AT)
            assert again.outcome.value == "already_traced"
            record = [r for r in store.trace_records("3035550001", analyst="ann")
                      if r["trace_id"] == again.trace_id][0]
            assert record["original_trace"] == first.trace_id
    finally:
        ra.close()
        rb.close()
        a.close()
        b.close()


def test_a_pending_record_is_replaced_once_it_resolves(topic, tmp_path, calls_file):
    """A trace answered `pending` (its feed behind) is sent again when it resolves: the
    other replica replaces the record and its report row, and never goes back."""
    from cdrtrace.evidence import rows as trace_rows

    url, _ = topic
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    a.trace("3035550001", at=AT)
    resolved = json.loads(outbox_event(a))
    pending = json.loads(json.dumps(resolved))
    pending["record"].update(outcome="pending", call=None)
    pending["row"] = base64.b64encode(trace_rows.pack(
        pending["number"], int.from_bytes(bytes.fromhex(pending["line"]), "big"), "pending",
        pending["record"]["activated_us"])).decode()
    order = [pending, pending, resolved, pending]      # a pending one sent twice, too
    applied = [b.envs.ewrite(lambda txn, e=e: replication.apply(txn, b.envs.db, e))
               for e in order]
    assert applied == [True, False, True, False]
    (record,) = b.trace_records(analyst="ann")
    assert record["outcome"] == "success" and record["call"]["calling"] == "+12125550101"
    rows = b.report_rows(analyst="ann")
    assert len(rows) == 1 and rows["outcome"][0] == trace_rows.OUTCOME_CODES["success"]
    assert b.trace("3035550001", at=AT).outcome.value == "already_traced"
    a.close()
    b.close()


def test_serve_runs_the_replicator(topic, tmp_path, calls_file):
    """`cdrtrace serve` on a replica that shares evidence runs a replicator thread, and
    sends the last traces' evidence before it exits."""
    from cdrtrace.service import server

    url, _ = topic
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    running = [server._replicate(s) for s in (a, b)]
    try:
        traced = a.trace("3035550001", at=AT)
        deadline = time.monotonic() + 20
        while not any(r["trace_id"] == traced.trace_id for r in b.trace_records(analyst="ann")):
            assert time.monotonic() < deadline, "the trace did not reach the other replica"
            time.sleep(0.05)
    finally:
        for done, thread in running:
            done.set()
            thread.join(15)
            assert not thread.is_alive()
    assert outbox_size(a) == 0
    a.close()
    b.close()


def test_records_not_signed_with_the_shards_key_are_not_applied(topic, tmp_path, calls_file,
                                                               cluster):  # noqa: F811
    """Write access to the topic is not a way to forge evidence: a record without the
    signature, or signed with another key, is refused (and logged)."""
    url, _ = topic
    _, producer = cluster
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    traced = a.trace("3035550001", at=AT)
    forged = json.loads(outbox_event(a))
    forged["number"], forged["record"]["trace_id"] = 1001, "T00001001"
    forged["record"]["call"]["calling"] = "+19995550000"        # an innocent caller named
    body = json.dumps(forged).encode()
    topic_name = url.rsplit("/", 1)[1]
    producer.produce(topic_name, body)                           # unsigned
    producer.produce(topic_name, body, headers=[(replication.SIGNATURE,
                                                 replication.sign(b"x" * 64, body))])
    assert producer.flush(10) == 0
    ra, rb = Replicator(a, url), Replicator(b, url)
    settle(ra, rb)
    assert rb.refused == 2 and ra.refused == 2
    assert [e[0] for e in evidence(b)] == [traced.trace_id]     # only the signed record
    for r in (ra, rb):
        r.close()
    a.close()
    b.close()


def test_a_replica_sharing_evidence_needs_a_private_key_file(tmp_path, calls_file):
    (tmp_path / "loose").mkdir()
    loose = evidence_key(tmp_path / "loose")
    loose.chmod(0o644)
    store = replica(tmp_path / "a", 0, "kafka://127.0.0.1:1/t", calls_file, key=loose)
    with pytest.raises(ConfigError, match="readable by other users"):
        Replicator(store, store.shard.evidence)
    short = tmp_path / "short.key"
    short.write_text("abc")
    short.chmod(0o600)
    (tmp_path / "a" / "cdrtrace.toml").write_text(
        (tmp_path / "a" / "cdrtrace.toml").read_text().replace(str(loose), str(short)))
    store.close()
    store = cdrtrace.open(tmp_path / "a")
    with pytest.raises(ConfigError, match="shorter than 32"):
        Replicator(store, store.shard.evidence)
    store.close()


@pytest.mark.parametrize("shard,message", [
    ("replica = 2\nreplicas = 2\n", "shard.replica must be this replica's number"),
    ("replica = -1\n", "shard.replica must be"),
    ('evidence = "http://broker/topic"\n', "expected kafka://BROKER"),
    ('evidence = "kafka://broker"\n', "expected kafka://BROKER"),
    ('evidence = "kafka://broker/t"\n', "needs shard.evidence_key_file"),
])
def test_the_replica_settings_are_checked(tmp_path, shard, message):
    path = tmp_path / "cdrtrace.toml"
    path.write_text('[shard]\nname = "east"\nprefixes = ["+1303"]\n' + shard)
    with pytest.raises(ConfigError, match=message):
        config.load(path)


def test_trace_numbers_stay_in_the_replicas_residue_class():
    assert [replication.next_number(last, 1, 3) for last in (0, 1, 2, 3, 4)] == [1, 4, 4, 4, 7]
    assert [replication.next_number(last, 0, 2) for last in (0, 1, 2)] == [2, 2, 4]
    assert [replication.next_number(last, 0, 1) for last in (0, 7)] == [1, 8]


def test_replicas_killed_while_tracing_lose_no_trace_and_answer_no_call_twice(topic, tmp_path,
                                                                               calls_file):
    """Two `cdrtrace serve` replicas under traces; one SIGKILLed right after answering and
    started again. Every answered trace ends on both replicas, and tracing every line
    again on the other replica names no call a second time."""
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    url, _ = topic
    lines = [f"30355{m:05d}" for m in range(40)]
    calls_file.write_bytes(b"".join(
        cdr(src=f"212555{m:04d}", dst=line, start="2026-03-02 10:00:00", answer="",
            end="2026-03-02 10:00:20", disposition="NO ANSWER", uniqueid=f"k{m}") + b"\n"
        for m, line in enumerate(lines)))
    tokens = {}
    for name, number in (("a", 0), ("b", 1)):
        store = replica(tmp_path / name, number, url, calls_file)
        tokens[name] = store.tokens.create("pbx", "switch")
        store.close()

    def start(name):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "cdrtrace.cli", "serve", "--db",
                                 str(tmp_path / name), "--http", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                              headers={"Authorization": f"Bearer {tokens[name]}"})
        deadline = time.monotonic() + 20
        while True:
            try:
                client.get("/healthz")
                return proc, client
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)

    running = {name: start(name) for name in ("a", "b")}
    answered = []
    try:
        for m, line in enumerate(lines):
            name = "ab"[m % 2]
            answer = running[name][1].post("/v1/trace", json={"line": line, "at": AT})
            assert answer.status_code == 200 and answer.json()["outcome"] == "success"
            answered.append(answer.json()["trace_id"])
            if m in (7, 22):                       # killed at once after answering
                proc, client = running[name]
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                client.close()
                running[name] = start(name)
        deadline = time.monotonic() + 30
        while True:                                # every answer reaches both replicas
            held = [{r["trace_id"] for r in cdrtrace_records(tmp_path / n)} for n in "ab"]
            if all(set(answered) <= h for h in held):
                break
            assert time.monotonic() < deadline, (len(answered), [len(h) for h in held])
            time.sleep(0.2)
        for m, line in enumerate(lines):           # the other replica knows every call
            other = running["ba"[m % 2]][1]
            assert other.post("/v1/trace", json={"line": line, "at": AT}).json()["outcome"] \
                == "already_traced"
    finally:
        for proc, client in running.values():
            client.close()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    assert len(set(answered)) == len(lines)


def cdrtrace_records(path) -> list[dict]:
    """Trace records of a store a service holds open in another process (read only)."""
    store = cdrtrace.open(path)
    try:
        return store.trace_records(analyst="ann")
    finally:
        store.close()


def test_replicas_label_an_extension_callers_origin_alike(topic, tmp_path, calls_file):
    """An extension's origin is scoped to its feed (evidence.pseudonyms): the replica that
    applies the trace labels that origin, not the extension's bare text."""
    url, _ = topic
    a, b, ra, rb = traced_by_each(tmp_path, url, calls_file, "4417", "2125550108")
    try:
        for store in (a, b):
            assert [(p.label, p.traced_calls) for p in store.status("3035550009").progress] == [
                ("Caller A", 1), ("Caller B", 1)]
            first = store.trace_records("3035550009", analyst="ann")[0]
            assert first["origin"].startswith("4417 (feed ")
    finally:
        ra.close()
        rb.close()
        a.close()
        b.close()


LATE_CALLS = {   # the late call to 3035550001: its own record, or a ring group's naming another
    "direct": cdr(src="2125550177", dst="3035550001", start="2026-03-02 11:00:00", uniqueid="x1"),
    "group": cdr(src="2125550177", dst="3035550050", start="2026-03-02 11:00:00", uniqueid="x1",
                 dstchannel="PJSIP/3035550098-00000001", lastdata="PJSIP/3035550001&PJSIP/3035550098,20",
                 disposition="NO ANSWER", answer=""),
}


@pytest.mark.parametrize("late_call", LATE_CALLS)
def test_another_replicas_trace_applied_late_is_checked_against_calls_read_before_it(
        topic, tmp_path, calls_file, late_call):
    """Replica a traces 3035550001 (its 10:00 call, from 2125550101) as trace 2; replica b
    has made traces 1 and 3 and checked them. A call to 3035550001 at 11:00 from another
    caller (its own record, or a ring group's that dialled it and names another phone), in
    a file read by both before a's record reaches b, came before the *57 at 12:00: a notes
    its trace as contested as it reads the call (docs/trace-rules.md, "A call that comes in
    after the trace"), and b at its next ingest once the record came."""
    url, _ = topic
    a = replica(tmp_path / "a", 0, url, calls_file)
    b = replica(tmp_path / "b", 1, url, calls_file)
    assert b.trace("3035550002", at=AT).trace_id == "T00000001"
    assert b.trace("3035550003", at=AT).trace_id == "T00000003"
    assert a.trace("3035550001", at=AT).trace_id == "T00000002"
    late, other = tmp_path / "late.csv", tmp_path / "other.csv"
    late.write_bytes(LATE_CALLS[late_call] + b"\n")
    other.write_bytes(cdr(src="2125550177", dst="3035550099", start="2026-03-02 13:00:00",
                          uniqueid="x2") + b"\n")
    assert cdrtrace.ingest(a, [str(late)]).contested == 1
    assert cdrtrace.ingest(b, [str(late)]).contested == 0     # b checks its traces 1 and 3
    event = json.loads(outbox_event(a))
    assert b.envs.ewrite(lambda txn: replication.apply(txn, b.envs.db, event))
    assert cdrtrace.ingest(b, [str(other)]).contested == 1
    for store in (a, b):
        (record,) = store.trace_records("3035550001", analyst="ann")
        assert (record["trace_id"], record["later_call"]["start"]) == (
            "T00000002", "2026-03-02T11:00:00Z")
    a.close()
    b.close()
