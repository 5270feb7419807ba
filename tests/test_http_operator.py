"""The operator over HTTP: the tokens listed (never a token or its hash) and revoked (at
once, audited, the first revocation's time kept), no token created over the network, and
the audit log's checkpoint, which the store's own verification accepts, and never its
entries (they name callers)."""
from __future__ import annotations

import hashlib

import pydantic
import pytest
from test_service import Service, call

import cdrtrace
from cdrtrace import testing
from cdrtrace.evidence.audit import AuditError
from cdrtrace.service import schemas

LINE = "3035550110"
ROLES = ("switch", "care", "analyst", "legal", "operator")


@pytest.fixture
def operated(tmp_path):
    store = cdrtrace.open(tmp_path / "store", create=True)
    running = Service(store)
    tokens = {role: store.tokens.create(f"{role}-1", role) for role in ROLES}
    yield store, running, tokens
    running.stop()
    store.close()


def valid(kind, answer):
    assert answer.status_code == 200, answer.text
    return pydantic.TypeAdapter(kind).validate_json(answer.content)


def test_tokens_are_listed_without_their_secret_and_revoked_at_once(operated):
    store, running, tokens = operated
    operator = tokens["operator"]
    listed = call(running, "GET", "/v1/tokens", operator)
    entries = valid(list[schemas.TokenEntry], listed)
    assert [(t.name, t.role, t.revoked_us) for t in entries] == sorted(
        (f"{role}-1", role, None) for role in ROLES)
    for token in tokens.values():                   # neither a token nor its hash
        assert token not in listed.text
        assert hashlib.sha256(token.encode()).hexdigest() not in listed.text
    assert call(running, "POST", "/v1/trace", tokens["switch"],
                json={"line": LINE, "at": "2026-03-02T14:05:00Z"}).status_code == 200
    revoked = call(running, "DELETE", "/v1/tokens/switch-1", operator)
    assert revoked.status_code == 200 and revoked.json() == {"revoked": "switch-1"}
    assert call(running, "POST", "/v1/trace", tokens["switch"],     # the next request
                json={"line": LINE, "at": "2026-03-02T14:05:00Z"}).status_code == 401
    first = next(t for t in valid(list[schemas.TokenEntry], call(
        running, "GET", "/v1/tokens", operator)) if t.name == "switch-1").revoked_us
    assert first is not None
    again = call(running, "DELETE", "/v1/tokens/switch-1", operator)
    assert again.status_code == 400 and "was revoked at" in again.json()["error"]
    assert next(t for t in store.tokens.listed() if t["name"] == "switch-1")["revoked_us"] == first
    assert call(running, "DELETE", "/v1/tokens/nobody", operator).status_code == 404
    for role in ("analyst", "legal", "care"):
        assert call(running, "DELETE", "/v1/tokens/care-1", tokens[role]).status_code == 403
    assert call(running, "DELETE", "/v1/tokens/care-1").status_code == 401
    assert call(running, "GET", f"/v1/status/{LINE}", tokens["care"]).status_code == 200
    revokes = [e for e in testing.audit_entries(store) if e["action"] == "token_revoke"]
    assert [(e["actor"], e["details"]["token"]) for e in revokes] == [
        ("token:operator-1", "switch-1")]


def test_no_token_is_created_over_the_network(operated):
    store, running, tokens = operated
    made = call(running, "POST", "/v1/tokens", tokens["operator"],
                json={"name": "legal-2", "role": "legal"})
    assert made.status_code == 405 and made.headers["allow"] == "GET"
    assert [t["name"] for t in store.tokens.listed()] == sorted(f"{r}-1" for r in ROLES)


def test_the_audit_checkpoint_is_the_stores_own_and_no_entry_leaves_over_http(operated):
    """The checkpoint served is what `audit checkpoint` writes: the store's own
    verification accepts it, and refuses it forged. The entries, which name the lines
    and callers each identifying read was about, are not served to any token."""
    store, running, tokens = operated
    operator = tokens["operator"]
    call(running, "GET", f"/v1/last-calls/{LINE}", tokens["analyst"])       # audited
    point = valid(schemas.Checkpoint, call(running, "GET", "/v1/audit/checkpoint", operator))
    log = testing.audit_entries(store)
    assert (point.seq, point.hash) == (log[-1]["seq"], log[-1]["hash"])
    assert (log[-1]["actor"], log[-1]["action"]) == ("token:analyst-1", "read_last_calls")
    assert store.audit_verify(checkpoints=[point.model_dump()]) == point.seq
    forged = {**point.model_dump(), "hash": "0" * 64}
    with pytest.raises(AuditError):
        store.audit_verify(checkpoints=[forged])
    for role in ROLES:
        assert call(running, "GET", "/v1/audit/entries", tokens[role]).status_code == 404
    for role in ("analyst", "legal"):
        assert call(running, "GET", "/v1/audit/checkpoint", tokens[role]).status_code == 403


def test_the_readme_lists_every_call_of_each_role(tmp_path):
    """The README's table of the HTTP API by role names every operation of the OpenAPI
    document under its role, and none the document does not have."""
    import os
    import re

    from cdrtrace.service import http

    store = cdrtrace.open(tmp_path / "s", create=True)
    try:
        document = http.build_app(store).openapi()
    finally:
        store.close()
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    table = readme.split("| role | calls |")[1].split("\n\n")[0]
    listed = {}
    for row in table.strip().splitlines()[1:]:
        role, calls = re.match(r"\| `(\w+)` \| (.*) \|$", row).groups()
        paths = re.findall(r"`(?:(?:GET|POST|DELETE)(?:`/`(?:GET|POST))? )?(/v1/[^` ?]*)`", calls)
        base = "/v1/reports/"                                      # "`hot-origins`", ...
        paths += [base + name for name in re.findall(r"`([a-z-]+)`", calls.split(base)[-1].split(";")[0])
                  ] if base in calls else []
        listed[role] = {re.sub(r"\{\w+\}", "{}", p) for p in paths}
    documented = {}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for tag in operation.get("tags", []):
                if tag in ROLES:
                    documented.setdefault(tag, set()).add(re.sub(r"\{\w+\}", "{}", path))
    assert listed.keys() == documented.keys()
    for role in documented:
        assert sorted(listed[role] ^ documented[role]) == [], role
