"""Trace evidence shared by the replicas of a shard, over a Kafka topic (docs/operations.md,
"Shards and replicas").

- **Ids that never collide.** `[shard] replica = K` of `replicas = N`: this replica numbers
  its traces K, K + N, K + 2N, ... (K = 0 takes N, 2N, ...), so a trace id is unique across
  the shard and says which replica answered.
- **An outbox.** A trace's evidence commits locally first (the customer's answer waits for
  that alone), with an outbox entry in the same transaction. The replicator sends outbox
  entries to the evidence topic, keyed by line, and deletes each once Kafka acknowledged
  it: sent at least once, never lost, whatever crashes in between.
- **Applying.** The replicator reads every partition of the topic and applies the records
  of the other replicas: a record it holds already (same id, same state) is skipped, so a
  record sent twice is applied once; the topic offsets are saved in the same transaction
  as the records.
- **Signed.** Every record carries an HMAC-SHA256 of its bytes under the shard's key
  (`[shard] evidence_key_file`, the same on each replica): one that anybody else wrote to
  the topic is not applied (logged), so write access to Kafka is not a way to forge
  evidence. The call markers come with them: after a failover the next replica
  answers `already_traced` for a call the first one traced.
- **What it cannot prevent.** Two replicas answering a trace of one call before either
  record reaches the other both say `success`; the call marker keeps the first record
  applied, and the CIC sees both records (the later one names the earlier as
  `original_trace`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import threading
import urllib.parse
from typing import Any

from ..errors import ConfigError
from . import later, marks, pseudonyms
from . import rows as trace_rows
from .marks import CALL_MARK, TRACE_MARK

log = logging.getLogger("cdrtrace.replication")
VERSION = 1
OFFSET = b"offset:"          # + partition number (4 bytes): the next offset to apply
SIGNATURE = "cdrtrace-hmac"  # the message header holding the record's HMAC-SHA256 (hex)


def u64(value: int) -> bytes:
    return int(value).to_bytes(8, "big")


def next_number(last: int, replica: int, replicas: int) -> int:
    """The smallest trace number above last in this replica's residue class."""
    number = last + 1
    return number + (replica - number) % replicas


def parse_url(url: str) -> tuple[str, str, dict]:
    """(bootstrap servers, topic, extra librdkafka settings) of kafka://BROKERS/TOPIC."""
    parts = urllib.parse.urlsplit(url)
    topic = parts.path.strip("/")
    if parts.scheme != "kafka" or not parts.netloc or not topic or "," in topic:
        raise ConfigError(f"shard.evidence: expected kafka://BROKER[,BROKER...]/TOPIC, not {url!r}")
    return parts.netloc, topic, dict(urllib.parse.parse_qsl(parts.query))


def read_key(path: str) -> bytes:
    """The shard's evidence key: the file's text (at least 32 characters), a file nobody
    but its owner may read."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"shard.evidence_key_file: cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    if mode & 0o077:
        raise ConfigError(f"shard.evidence_key_file {path} is readable by other users (mode "
                          f"{mode:o}): chmod 600 it")
    if len(key) < 32:
        raise ConfigError(f"shard.evidence_key_file {path}: the key is shorter than 32 "
                          "characters (make one with `openssl rand -hex 32`)")
    return key


def sign(key: bytes, event: bytes) -> str:
    return hmac.new(key, event, hashlib.sha256).hexdigest()


def signed_by(key: bytes, event: bytes, headers: Any) -> bool:
    """Does the message carry this key's signature of event?"""
    given = dict(headers or ()).get(SIGNATURE)
    return given is not None and hmac.compare_digest(
        given if isinstance(given, bytes) else str(given).encode(), sign(key, event).encode())


def outbox_entry(txn: Any, db: dict, replica: int, number: int, record: bytes, row: bytes,
                 key: bytes, call_id: int | None) -> None:
    """Queue a trace's evidence (its record as stored, JSON) for the other replicas,
    inside the trace's transaction. The entry is the line's key, then the event."""
    head = json.dumps({"v": VERSION, "replica": replica, "number": number,
                       "row": base64.b64encode(row).decode(), "line": key.hex(),
                       "call_id": call_id})
    txn.put(u64(number), key + head[:-1].encode() + b', "record": ' + record + b"}",
            db=db["outbox"])


def apply(txn: Any, db: dict, event: dict) -> bool:
    """Apply one replica's trace evidence; False when it is held already (same state)."""
    number, record = int(event["number"]), event["record"]
    key = bytes.fromhex(event["line"])
    row = base64.b64decode(event["row"])
    held = txn.get(u64(number), db=db["traces"])
    if held is not None:
        earlier = json.loads(held)
        if earlier["outcome"] != "pending" or record["outcome"] == "pending":
            return False
        txn.put(u64(number), json.dumps(record).encode(), db=db["traces"])   # it resolved
        trace_rows.replace(txn, db["trace_rows"], db["trace_segments"], row)
    else:
        txn.put(u64(number), json.dumps(record).encode(), db=db["traces"])
        trace_rows.append_one(txn, db["trace_rows"], number, row)
        txn.put(key + TRACE_MARK + u64(number), b"", db=db["by_line"])
    if record["outcome"] == "success" and event["call_id"] is not None:
        mark = key + CALL_MARK + u64(int(event["call_id"]))
        first = marks.traced_as(txn, db, key, int(event["call_id"]), record["call"]["start_us"])
        if first is None:      # (or a mark of another call with a reused id: replaced)
            txn.put(mark, record["trace_id"].encode(), db=db["by_line"])
        elif first.decode() != record["trace_id"]:
            log.warning("replication: %s and %s both named one call as traced (answered by "
                        "two replicas before either heard of the other)", first.decode(),
                        record["trace_id"])
        pseudonyms.assign(txn, db["pseudonyms"], key, str(pseudonyms.origin_of(record)))
        later.applied(txn, db, number, key, record)   # checked as one made here
    return True


class Replicator:
    """Sends this replica's outbox to the evidence topic and applies the other replicas'
    records from it. run() until stop is set (`cdrtrace serve` runs one in a thread), or
    step() in turns."""

    def __init__(self, store, url: str, poll_seconds: float = 0.01):
        self.store, self.envs, self.db = store, store.envs, store.envs.db
        self.shard, self.url, self.poll = store.shard, url, poll_seconds
        self.replica = self.shard.replica
        self.key = read_key(self.shard.evidence_key_file)
        self.refused = 0                 # records on the topic not signed with the key
        self.producer: Any = None
        self.consumer: Any = None
        self.sent = self.applied = 0

    def connect(self) -> None:
        """The producer, and the consumer of every partition from the offsets the store
        holds (the first time: from the beginning)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

        shard = self.shard
        brokers, self.topic, extra = parse_url(self.url)
        self.producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                                  "acks": "all", "linger.ms": 1, **extra})
        self.consumer = Consumer({"bootstrap.servers": brokers,    # offsets kept in the store
                                  "group.id": f"cdrtrace-evidence-{shard.name}-{shard.replica}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "enable.partition.eof": False,
                                  "fetch.wait.max.ms": 10, **extra})   # not 500: a trace waits
        meta = self.consumer.list_topics(self.topic, timeout=10)
        partitions = sorted(meta.topics[self.topic].partitions) if self.topic in meta.topics else []
        if not partitions:
            raise ConfigError(f"shard.evidence: no topic {self.topic} at {brokers}")
        with self.envs.eread() as txn:
            saved = {p: txn.get(OFFSET + p.to_bytes(4, "big"), db=self.db["emeta"])
                     for p in partitions}
        self.consumer.assign([TopicPartition(self.topic, p, int(saved[p]) if saved[p]
                                             else OFFSET_BEGINNING) for p in partitions])

    def publish(self, timeout: float = 5.0) -> int:
        """Send the outbox; delete what Kafka acknowledged. Returns entries sent."""
        with self.envs.eread() as txn:
            pending = [(bytes(k), bytes(v)) for k, v in txn.cursor(self.db["outbox"])]
        acked: list[bytes] = []

        def delivered(number: bytes) -> Any:
            def report(err: Any, _msg: Any) -> None:
                if err is None:
                    acked.append(number)
                else:
                    log.warning("replication: trace %d not sent yet: %s",
                                int.from_bytes(number, "big"), err)
            return report
        for number, value in pending:        # the line's key, then the event
            event = value[8:]
            self.producer.produce(self.topic, event, key=value[:8].hex(),
                                  headers=[(SIGNATURE, sign(self.key, event))],
                                  on_delivery=delivered(number))
        if pending:
            self.producer.flush(timeout)
        if acked:
            def delete(txn):
                for number in acked:
                    txn.delete(number, db=self.db["outbox"])
            self.envs.ewrite(delete)
        self.sent += len(acked)
        return len(acked)

    def receive(self, timeout: float | None = None) -> int:
        """Apply what the other replicas sent (one transaction, offsets with it)."""
        messages = self.consumer.consume(num_messages=1000, timeout=self.poll if timeout is None
                                         else timeout)
        good = [m for m in messages if m.error() is None]
        for m in messages:
            if (error := m.error()) is not None:
                log.warning("replication: %s", error.str())
        if not good:
            return 0

        def work(txn) -> int:
            applied = 0
            for m in good:
                raw = m.value() or b""
                if not signed_by(self.key, raw, m.headers()):
                    self.refused += 1
                    log.error("replication: the record at offset %d of partition %d is not "
                              "signed with the shard's key: not applied", m.offset(),
                              m.partition())
                else:
                    event = json.loads(raw)
                    if event.get("v") != VERSION:
                        log.error("replication: a record of version %s at offset %d ignored",
                                  event.get("v"), m.offset())
                    elif event["replica"] != self.replica:
                        applied += apply(txn, self.db, event)
                txn.put(OFFSET + int(m.partition() or 0).to_bytes(4, "big"),
                        str(int(m.offset() or 0) + 1).encode(), db=self.db["emeta"])
            return applied
        applied = self.envs.ewrite(work)
        self.applied += applied
        return applied

    def step(self) -> tuple[int, int]:
        if self.consumer is None:
            self.connect()
        return self.publish(), self.receive()

    def run(self, stop: threading.Event) -> None:
        """Rounds until stop is set; Kafka away only delays them (the outbox keeps the
        evidence), and the last round sends what the final traces left."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:
                log.warning("replication: a round failed (%s); trying again in 1 s", exc)
                stop.wait(1.0)
        try:
            if self.consumer is not None:
                self.publish()
        finally:
            self.close()

    def close(self) -> None:
        if self.consumer is not None:
            self.producer.flush(5)
            self.consumer.close()
            self.consumer = None
