"""Live feeds: which followers are attached, and how far their data is complete.

A live ingest heart-beats `live:<feed>` in the index environment's `meta` inside its
commits. A trace activated after a live feed's watermark may be missing its call: it
waits for the feed, or pends until the feed passes it (docs/trace-rules.md, "Late
records").
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from ..errors import NotFoundError, StoreError
from . import index
from .environments import Environments

LIVE_TIMEOUT = 10.0      # seconds without a heartbeat after which a live feed has stalled
# a delay a follower learned (its switch holds records back) is kept for its next start
# until the switch has not shown it for this long (a switch set to write records at once)
LEARNED_KEEP_US = 7 * 86_400 * 1_000_000


def learned_delay(txn: Any, meta: Any, feed: int, now_us: int | None = None) -> tuple[int, int]:
    """(delay_us, seen_us) a follower of the feed learned its switch holds records back,
    or (0, 0): none, or not shown for LEARNED_KEEP_US."""
    raw = txn.get(f"learned-delay:{feed}".encode(), db=meta)
    if raw is None:
        return 0, 0
    kept = json.loads(raw)
    if (now_us or time.time_ns() // 1000) - kept["seen_us"] > LEARNED_KEEP_US:
        return 0, 0
    return kept["delay_us"], kept["seen_us"]


class Liveness:
    """The live feeds of one store."""

    def __init__(self, envs: Environments):
        self.envs = envs
        self.db = envs.db

    def heartbeat(self, txn: Any, feed: int, *, idle_seen_us: int | None, delay_us: int,
                  served: tuple | list = (), source: str = "", stopped: bool = False) -> None:
        """Inside a live ingest's commit: the feed is attached. Its watermark is the newest
        call start ingested or, once its source was seen idle at its end, that moment
        minus the feed's CDR delay, whichever is later. stopped: the follower's last
        commit before it stops while its source goes on (a signal): the feed stays
        attached, stalled at once (attached)."""
        key = f"live:{feed}".encode()
        old = json.loads(txn.get(key, b"{}", db=self.db["meta"]))
        idle = max(idle_seen_us or 0,
                   old.get("idle_seen_us", 0) if old.get("pid") == os.getpid() else 0)
        txn.put(key, json.dumps({
            "pid": os.getpid(), "heartbeat_us": time.time_ns() // 1000, "idle_seen_us": idle,
            "delay_us": delay_us, "served": list(served), "source": source,
            "stopped": stopped}).encode(), db=self.db["meta"])

    def halt(self, txn: Any, feed: int) -> None:
        """A failed follower's feed: attached still (its switch goes on writing), stalled
        at once; nothing else of it changes."""
        key = f"live:{feed}".encode()
        old = txn.get(key, db=self.db["meta"])
        if old is not None:
            txn.put(key, json.dumps({**json.loads(old), "stopped": True}).encode(),
                    db=self.db["meta"])

    def detach(self, txn: Any, feed: int) -> None:
        """Inside the live ingest's last commit, when its source ended (a pipe closed, a
        file or topic idle for --until-idle): the feed is no longer live, its data is
        complete as ingested, and traces no longer wait for it."""
        txn.delete(f"live:{feed}".encode(), db=self.db["meta"])

    def retire(self, feed: int | None, name: str) -> None:
        """An operator's word that a stalled feed's follower is gone for good: its data is
        complete as ingested (detach). A live feed is refused: its follower detaches as it
        stops."""
        live = self.attached().get(feed) if feed is not None else None
        if feed is None or live is None:
            raise NotFoundError(f"no feed named {name!r} is attached (cdrtrace stats lists them)")
        if not live["stalled"]:
            raise StoreError(f"feed {name!r} is live: its follower (process {live['pid']}) "
                             "beats; stop it first")
        self.envs.write(lambda txn: self.detach(txn, feed))

    def learn(self, txn: Any, feed: int, delay_us: int, seen_us: int) -> None:
        """Inside a live ingest's commit: the feed's switch holds its records back this
        long, last shown at seen_us. Kept across restarts and detaches (learned_delay)."""
        txn.put(f"learned-delay:{feed}".encode(),
                json.dumps({"delay_us": delay_us, "seen_us": seen_us}).encode(), db=self.db["meta"])

    def live_feeds(self, txn: Any = None, now_us: int | None = None) -> dict[int, dict]:
        """attached(), less the feeds that stalled: those whose live ingest has heart-beaten
        within LIVE_TIMEOUT."""
        return {feed: live for feed, live in self.attached(txn, now_us).items()
                if not live["stalled"]}

    def attached(self, txn: Any = None, now_us: int | None = None) -> dict[int, dict]:
        """feed id -> {watermark_us, served, heartbeat_us, stalled, ...} for every feed a
        live ingest attached and did not detach. stalled: no heartbeat within LIVE_TIMEOUT
        (its follower died, or hangs): not live, and its data not complete either, as its
        switch goes on writing; traces wait for it as for a live one, until a follower
        runs again or an operator detaches it (Store.detach_feed). A follower stopped
        while its source goes on (a signal, a failure) leaves its feed stalled at once:
        a restart's window is no different from a crash's."""
        if txn is None:
            with self.envs.read() as txn:
                return self.attached(txn, now_us)
        now_us = now_us or time.time_ns() // 1000
        feeds = {}
        cursor = txn.cursor(self.db["meta"])
        if cursor.set_range(b"live:"):
            for key, value in cursor:
                if not key.startswith(b"live:"):
                    break
                live = json.loads(value)
                live["stalled"] = (live.get("stopped", False)
                                   or now_us - live["heartbeat_us"] > LIVE_TIMEOUT * 1e6)
                feed = int(key[5:])
                stats = json.loads(txn.get(f"feedstats:{feed}".encode(), b"{}", db=self.db["meta"]))
                idle_mark = live["idle_seen_us"] - live["delay_us"] if live["idle_seen_us"] else 0
                live["watermark_us"] = max(stats.get("watermark_us", 0), idle_mark)
                feeds[feed] = live
        return feeds

    def behind(self, packed: int, at_us: int, txn: Any = None,
               feeds: dict[int, dict] | None = None) -> bool:
        """Is an attached feed (live, or stalled) that may carry calls to this line behind
        at_us? (feeds: the attached feeds as a snapshot showed them, read once for many
        lines.)"""
        for live in (self.attached(txn) if feeds is None else feeds).values():
            if live["served"] and not index.served_mask(np.array([packed], np.uint64),
                                                        live["served"])[0]:
                continue
            if live["watermark_us"] < at_us:
                return True
        return False

    def stale(self, shard: Any, now_us: int | None = None) -> str | None:
        """Why a shard's replica must not answer traces (its max_lag_seconds): no live feed
        consuming, or one further behind than the bound. None when it may answer."""
        bound = getattr(shard, "max_lag_seconds", None)
        if bound is None:
            return None
        now_us = now_us or time.time_ns() // 1000
        feeds = self.live_feeds(None, now_us)
        if not feeds:
            return f"shard {shard.name}: no live feed is consuming; traces wait for a replica"
        worst = max(now_us - live["watermark_us"] for live in feeds.values()) / 1e6
        if worst > bound:
            return f"shard {shard.name}: {worst:.1f} s behind its feeds (bound {bound:g} s)"
        return None
