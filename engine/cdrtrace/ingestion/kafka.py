"""Kafka source: `kafka://BROKERS/TOPIC[,TOPIC...]?group=NAME[&librdkafka.setting=value]`.

A consumer group member (confluent-kafka, librdkafka) reads CDR lines, one per message or
several per message, from one topic per switch feed or a topic partitioned by line.

Exactly once: each partition's next offset commits in the same LMDB write transaction as
the records read before it. On assignment the consumer starts each partition from the
offset the store holds, whatever Kafka's group offsets say (or under whatever group); Kafka's offsets are committed
only after the LMDB commit that contains their records (for the group's tooling and lag
monitors), so they are never ahead of the store.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import urllib.parse
from typing import Any

import numpy as np

from ..errors import SourceError
from ..parsing.formats import Format
from ..parsing.parsers import check_named_format
from ..store.archive import FLUSH_ROWS, ArchiveWriter
from ..store.catalog import ArchiveMark, Position
from .live import LiveFeed, StreamOptions, StreamSummary

log = logging.getLogger("cdrtrace.stream")
SCHEME = "kafka://"


def is_kafka(name: str) -> bool:
    return name.startswith(SCHEME)


def parse_url(url: str) -> tuple[str, list[str], str, dict]:
    """(bootstrap servers, topics, group, extra librdkafka settings) of a kafka:// URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise SourceError(f"{url}: expected kafka://BROKER[,BROKER...]/TOPIC?group=NAME")
    topics = [t for t in parts.path.strip("/").split(",") if t]
    if not topics:
        raise SourceError(f"{url}: no topic (kafka://BROKERS/TOPIC?group=NAME)")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    group = query.pop("group", "")
    if not group:
        raise SourceError(f"{url}: no consumer group (add ?group=NAME)")
    return parts.netloc, topics, group, query


class _Partition:
    """One assigned partition: its parser (records numbered on per partition), its source
    id, the next offset to read, and its archive (files, and where it is complete)."""

    def __init__(self, live: LiveFeed, store, key: bytes, name: str, saved: Position | None):
        mark = saved.archive if saved is not None and live.archive_root else None
        self.start = None               # where to seek on assignment
        self.skip_until = -1            # records up to this are archived, not indexed again
        if saved:
            self.source, self.next = saved.source, saved.offset
            record = saved.record
            live.rejects.forget(self.source, record)   # read again from the store's offset
            self.start = saved.offset
            if mark and mark.offset is not None:     # read again for the archive
                self.start, self.skip_until, record = mark.offset, record, mark.record
        else:
            self.source = store.catalog.register_source(name, None, None, live.form.name)
            self.next, record = None, 0  # type: ignore[assignment]  # set by its first message
        self.key, self.name = key, name
        self.newest: int | None = None  # the newest call start read from it in this run
        self.parser = live.new_parser(None, 0, record)
        self.dirty = False
        self.archiver, self.mark = None, mark
        if live.archive_root:
            self.archiver = ArchiveWriter(live.archive_root, self.source,
                                          mark.files if mark else 0)
            self.archiver.prune()
            if mark is None:
                # The archive starts where this run starts reading. The mark must commit
                # with the first offsets even if no archive file is written before a
                # crash: a position saved without one would tell the next run that
                # nothing needs reading again, and those calls would never be archived.
                # A new partition's first offset is known only from its first message.
                self.mark = ArchiveMark(saved.offset if saved else None, record, 0)

    def begin(self, first_offset: int) -> None:
        """The first message of a partition new to the store: the archive starts at it."""
        if self.mark is not None and self.mark.offset is None:
            self.mark = dataclasses.replace(self.mark, offset=first_offset)


class _KafkaFeed(LiveFeed):
    """A live feed of interleaved partitions: each keeps its own archive, written (when
    due) for all of them at once, and where each is complete commits with its offset."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.partitions: dict[tuple[str, int], _Partition] = {}

    def archive_due(self) -> bool:
        archivers = [p.archiver for p in self.partitions.values() if p.archiver is not None]
        return bool(archivers) and (
            sum(sum(a.rows.values()) for a in archivers) >= FLUSH_ROWS
            or time.monotonic() - self.archived_at >= self.options.archive_every_s)

    def flush_archive(self) -> None:
        for part in self.partitions.values():
            if part.archiver is None or part.next is None:
                continue
            part.archiver.flush()
            mark = ArchiveMark(part.next, part.parser.record, part.archiver.files)
            if mark != part.mark:
                part.mark, part.dirty = mark, True
        self.archived_at = time.monotonic()


def consume(store, url: str, fmt: str | Format | None = None, *, zone=None, country_code=None,
            feed=None, options: StreamOptions | None = None, stop: threading.Event | None = None,
            rejects_path=None, settings: dict | None = None, archive=None) -> StreamSummary:
    """Consume CDRs from Kafka into the store until stop is set (or the topic has been
    idle options.idle_exit_s). With an archive (archive or the store's archive_dir), each
    partition's calls are archived exactly once, as for a followed file."""
    try:
        from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    except ImportError:   # pragma: no cover - a dependency; a broken install says so
        raise SourceError("Kafka sources need confluent-kafka (pip install confluent-kafka)") from None
    brokers, topics, group, extra = parse_url(url)
    wanted = _partitions(url, extra.pop("partitions", None), getattr(store, "shard", None))
    options = options or StreamOptions()
    stop = stop or threading.Event()
    live = _KafkaFeed(store, fmt, zone, country_code, feed, options=options,
                      rejects_path=rejects_path, label=f"kafka {','.join(topics)}", archive=archive)
    partitions = live.partitions

    def key_of(topic: str, partition: int) -> bytes:
        # the store's own record of what it holds, per topic partition: another group
        # name (a redeployment) must not make it ingest the topic again
        return f"kafka:{topic}/{partition}".encode()

    def save_offsets(txn):
        for part in partitions.values():
            if part.dirty:
                store.catalog.save_position(txn, part.key, Position(
                    part.source, part.next, max(part.parser.record, part.skip_until), part.mark))

    def commit(detach=False, wait=False, stopped=False):
        live.claim(complete_to())
        live.commit(detach=detach, extra=save_offsets, stopped=stopped)
        done = [TopicPartition(t, p, part.next) for (t, p), part in partitions.items() if part.dirty]
        for part in partitions.values():
            part.dirty = False
        if done:   # after the store holds them: Kafka's group offsets never run ahead
            try:
                consumer.commit(offsets=done, asynchronous=not wait)
            except KafkaException as exc:
                log.warning("kafka: group offset commit failed (the store holds them): %s", exc)

    def on_assign(c, assigned):
        for tp in assigned:
            key = key_of(tp.topic, tp.partition)
            part = _Partition(live, store, key, f"kafka://{brokers}/{tp.topic}[{tp.partition}]",
                              store.catalog.position(key))
            partitions[(tp.topic, tp.partition)] = part
            if part.start is not None:
                tp.offset = part.start         # the store's offset, not the group's
        c.assign(assigned)

    def on_revoke(c, revoked):
        if any(p.dirty for p in partitions.values()):
            commit(wait=True)
        for tp in revoked:
            partitions.pop((tp.topic, tp.partition), None)

    def at_end(topic: str, number: int, part: _Partition) -> bool:
        """Has the partition been read to its end (the high watermark of the latest
        fetch)? Until the first fetch answers, the end is unknown: not at it."""
        tp = TopicPartition(topic, number)
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            return False
        at = consumer.position([tp])[0].offset
        if at < 0:       # nothing read from it in this run
            at = part.start if part.start is not None else low
        return at >= high

    def caught_up() -> bool:
        """Has every assigned partition been read to its end? (An empty poll alone is no
        proof: after an assignment, fetching can take a second or more, and a feed taken
        for idle would advance its watermark past calls it has not read, and
        --until-idle would stop before reading them.)"""
        return all(at_end(t, n, p) for (t, n), p in list(partitions.items()))

    def complete_to() -> int | None:
        """The call start up to which the feed's calls are read, for the watermark a
        commit may claim: the least, over its partitions, of the newest call start read
        from each (or, for one read to its end, now less the feed's CDR delay). Each
        partition is a stream of its own: the newest start of one says nothing of
        another that lags (a partition of a slower switch, a fetch that stalls), whose
        calls before it are unread. None while a partition has given nothing yet."""
        now, bound = time.time_ns() // 1000, None
        for (topic, number), part in list(partitions.items()):
            if at_end(topic, number, part):
                read = now - max(live.delay_us, live.late_us)
            elif part.newest is None:
                return None
            else:
                read = part.newest
            bound = read if bound is None else min(bound, read)
        return bound

    config = {"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "enable.partition.eof": False, **extra,
              **(settings or {})}
    try:
        consumer = Consumer(config)
    except KafkaException as exc:
        raise SourceError(f"{url}: {exc}") from None
    with store.envs.writer(f"kafka {url}"):
        try:
            if wanted:       # a shard's partitions: assigned, not balanced in a group
                on_assign(consumer, _existing(consumer, url, topics, wanted, TopicPartition))
            else:
                consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
            while not stop.is_set():
                messages = consumer.consume(num_messages=options.batch_records,
                                            timeout=options.poll_ms / 1000)
                good = []
                for m in messages:
                    error = m.error()
                    if error is None:
                        good.append(m)
                    elif error.fatal() or error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                           KafkaError.TOPIC_AUTHORIZATION_FAILED):
                        raise SourceError(f"{url}: {error.str()}")
                    else:
                        log.warning("kafka %s: %s", url, error.str())
                if not good:
                    if partitions and caught_up():
                        if live.idle():      # at the end of every partition: idle
                            break
                    else:                    # not at the end yet: only fetching is slow
                        live.busy()
                        if live.due():
                            commit()
                    continue
                live.busy()
                _feed_messages(live, partitions, good)
                if live.due():
                    commit()
        except BaseException:
            live.failed = True       # each partition is read again from its committed offset
            raise
        finally:
            try:
                if live.failed:
                    live.abandon()
                else:
                    # before close: the group sees the last offsets
                    commit(detach=not stop.is_set(), wait=True, stopped=stop.is_set())
                    live.finish()
            finally:
                consumer.close()
    return live.summary


def _partitions(url: str, given: str | None, shard: Any) -> tuple[int, ...]:
    """The partitions to read: ?partitions=0,1 in the URL, else the store's shard's
    (cdrtrace.toml [shard] partitions); none: the consumer group balances them."""
    if given is None:
        return tuple(shard.partitions) if shard is not None else ()
    try:
        numbers = tuple(sorted({int(p) for p in given.split(",") if p.strip()}))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 0:
        raise SourceError(f"{url}: partitions must be partition numbers, such as partitions=0,1")
    return numbers


def _existing(consumer: Any, url: str, topics: list[str], wanted: tuple[int, ...],
              partition: Any) -> list:
    """The wanted partitions of each topic, each checked to exist."""
    assigned = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        have = set(meta.partitions) if meta is not None and meta.error is None else set()
        missing = [p for p in wanted if p not in have]
        if missing:
            raise SourceError(f"{url}: topic {topic} has no partition "
                              f"{', '.join(map(str, missing))} (it has {len(have)})")
        assigned += [partition(topic, p) for p in wanted]
    return assigned


def _feed_messages(live: LiveFeed, partitions: dict, messages) -> None:
    """Parse a consumed batch, partition by partition: each partition's payloads are joined
    into one buffer (a line end added where a payload lacks one) and parsed at once; the
    records' byte positions map back to their message offsets (the calls' provenance)."""
    by_partition: dict[tuple[str, int], list] = {}
    for m in messages:
        by_partition.setdefault((m.topic(), m.partition()), []).append(m)
    for tp, group in by_partition.items():
        part = partitions.get(tp)
        if part is None:      # revoked meanwhile; the new owner reads them from the store's offset
            continue
        payloads = [m.value() or b"" for m in group]
        payloads = [p if p.endswith(b"\n") else p + b"\n" for p in payloads]
        sizes = np.fromiter((len(p) for p in payloads), np.int64, len(payloads))
        base = part.parser.offset
        starts = base + np.concatenate(([0], np.cumsum(sizes)[:-1]))
        offsets = np.fromiter((m.offset() for m in group), np.int64, len(group))
        if part.next is None:     # the partition's first message this run: no other format's
            check_named_format(live.form, payloads[0], part.name)
            part.begin(int(offsets[0]))
        live.use(part.name, part.source, part.parser, archiver=part.archiver,
                 skip_until=part.skip_until)
        live.feed(b"".join(payloads), final=True,
                  offsets=lambda byte_offsets, s=starts, o=offsets:
                  o[np.searchsorted(s, byte_offsets, side="right") - 1])
        if live.fed_newest is not None:
            part.newest = max(part.newest or live.fed_newest, live.fed_newest)
        # read again for the archive: the committed offset never moves back
        part.next = max(part.next or 0, int(offsets[-1]) + 1)
        part.dirty = True
