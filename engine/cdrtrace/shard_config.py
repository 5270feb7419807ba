"""[shard] of cdrtrace.toml: the part of the carrier's lines a store holds, and the other
shards its service forwards traces to (docs/operations.md, "Shards and replicas"); the
section's format is in cdrtrace.config's docstring."""
from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Shard:
    """[shard]: the part of the carrier's lines a store holds (docs/operations.md,
    "Shards and replicas"): only lines with these prefixes are indexed, whatever the
    feed; a Kafka consumer reads only these partitions of its topics; a replica whose
    live feeds are further behind than max_lag_seconds is not ready and answers no trace."""

    name: str
    prefixes: tuple[str, ...]
    partitions: tuple[int, ...] = ()
    max_lag_seconds: float | None = None
    peers: tuple[Peer, ...] = ()        # the other shards, for the service to forward to
    replica: int = 0                    # this store is replica `replica` of `replicas`,
    replicas: int = 1                   # numbering its traces in its own residue class
    evidence: str | None = None         # kafka://BROKERS/TOPIC the replicas share evidence on
    evidence_key_file: str | None = None   # the shard's key: every record on it is signed


@dataclasses.dataclass(frozen=True)
class Peer:
    """[shard.peers.NAME]: another shard: its lines, its replicas' trace services (tried
    in turn), and the file holding a switch token valid on them."""

    name: str
    prefixes: tuple[str, ...]
    replicas: tuple[str, ...]
    token_file: str



SHARD_KEYS = ("name", "prefixes", "partitions", "max_lag_seconds", "peers", "replica",
              "replicas", "evidence", "evidence_key_file")
PEER_KEYS = ("prefixes", "replicas", "token_file")


def check_table(path, where: str, spec: Any, keys: tuple[str, ...], noun: str = "key") -> None:
    """A TOML table ([where]) holding only the keys (each a noun: a key, a role) its
    section knows."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: {where} must be a table ([{where}])")
    unknown = set(spec) - set(keys)
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown {noun}(s) {', '.join(sorted(unknown))} "
                          f"({noun}s: {', '.join(keys)})")


def prefixes_ok(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, str) and p.lstrip("+").isdigit() and p.count("+") <= p.startswith("+")
        for p in value)


def shard(path, spec: Any) -> Shard:
    check_table(path, "shard", spec, SHARD_KEYS)
    name = spec.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise ConfigError(f"{path}: shard.name must be text (1 to 64 characters)")
    prefixes = spec.get("prefixes")
    if not prefixes or not prefixes_ok(prefixes):
        raise ConfigError(f"{path}: shard.prefixes must be a non-empty list of number prefixes "
                          "such as \"+1303\"")
    partitions = spec.get("partitions", [])
    if not isinstance(partitions, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 100_000
            for p in partitions) or len(set(partitions)) != len(partitions):
        raise ConfigError(f"{path}: shard.partitions must be a list of distinct partition "
                          "numbers (0 and up)")
    lag = spec.get("max_lag_seconds")
    if lag is not None and (not isinstance(lag, (int, float)) or isinstance(lag, bool)
                            or lag <= 0):
        raise ConfigError(f"{path}: shard.max_lag_seconds must be a number > 0")
    peers = spec.get("peers", {})
    if not isinstance(peers, dict) or not all(isinstance(p, dict) for p in peers.values()):
        raise ConfigError(f"{path}: shard.peers must be tables ([shard.peers.NAME])")
    replicas, replica = spec.get("replicas", 1), spec.get("replica", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (replica, replicas)) \
            or not 0 <= replica < replicas <= 1000:
        raise ConfigError(f"{path}: shard.replica must be this replica's number, 0 to "
                          "shard.replicas - 1 (replicas: how many the shard has, 1 to 1000)")
    evidence = spec.get("evidence")
    if evidence is not None:
        from .evidence.replication import parse_url

        try:
            parse_url(evidence if isinstance(evidence, str) else "")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    key_file = spec.get("evidence_key_file")
    if evidence is not None and (not isinstance(key_file, str) or not key_file.strip()):
        raise ConfigError(f"{path}: shard.evidence needs shard.evidence_key_file, the file "
                          "holding the key the shard's replicas sign their records with "
                          "(`openssl rand -hex 32`, mode 600, the same key on every replica)")
    return Shard(name.strip(), tuple(prefixes), tuple(sorted(partitions)),
                 None if lag is None else float(lag),
                 tuple(_peer(path, n, p) for n, p in sorted(peers.items())), replica, replicas,
                 evidence, key_file)


def _peer(path, name: str, spec: dict) -> Peer:
    where = f"shard.peers.{name}"
    check_table(path, where, spec, PEER_KEYS)
    if not spec.get("prefixes") or not prefixes_ok(spec["prefixes"]):
        raise ConfigError(f"{path}: {where}.prefixes must be a non-empty list of number "
                          "prefixes")
    replicas = spec.get("replicas")
    if not isinstance(replicas, list) or not replicas or not all(
            isinstance(r, str) and r.startswith(("http://", "https://")) for r in replicas):
        raise ConfigError(f"{path}: {where}.replicas must list the replicas' services "
                          "(http://HOST:PORT)")
    token_file = spec.get("token_file")
    if not isinstance(token_file, str) or not token_file.strip():
        raise ConfigError(f"{path}: {where}.token_file must name the file holding a switch "
                          "token of its replicas")
    return Peer(name, tuple(spec["prefixes"]), tuple(r.rstrip("/") for r in replicas),
                token_file)


def both_served(feed: tuple[str, ...], shard: tuple[str, ...]) -> tuple[str, ...]:
    """The prefixes of lines both a feed's served list and a shard's prefixes admit (an
    empty tuple admits every line): each pair's longer prefix, where one extends the other."""
    if not feed or not shard:
        return feed or shard
    return tuple(sorted({a if a.startswith(b) else b for a in feed for b in shard
                         if a.startswith(b) or b.startswith(a)}))
