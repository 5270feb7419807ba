"""The audit chain against an attacker who can rewrite the store's files: every attack,
with and without rewriting the MACs, is detected by the keyed chain or, for what only a
holder of the key could forge (or a wipe), by a checkpoint kept outside the store."""
from __future__ import annotations

import copy
import json
import os
import stat

import pytest

import cdrtrace
from cdrtrace import cli, testing
from cdrtrace.evidence import audit
from conftest import cdr

LINE = "3035550110"


def removing(k):
    return lambda log: log[:k] + log[k + 1:]


def altering(log):
    log = copy.deepcopy(log)
    log[2]["actor"] = "mallory"
    return log


def inserting(log):
    return log[:2] + [copy.deepcopy(log[1])] + log[2:]


def reordering(log):
    return log[:2] + [log[3], log[2]] + log[4:]


ATTACKS = {"alter": altering, "delete a middle entry": removing(2),
           "delete the last entry": lambda log: log[:-1], "insert": inserting,
           "reorder": reordering, "wipe": lambda log: []}
REWRITES = ["none", "unkeyed", "another key", "the store's key"]


def rechain(log, key):
    """Renumber and re-MAC the entries, as an attacker hiding the edit would."""
    out, prev = [], audit.GENESIS
    for seq, entry in enumerate(log, 1):
        body = {k: v for k, v in entry.items() if k != "hash"} | {"seq": seq, "prev": prev}
        prev = audit.mac(prev, body, key)
        out.append({**body, "hash": prev})
    return out


@pytest.fixture
def audited(store, ingest_records):
    ingest_records(cdr(dst=LINE) + b"\n")
    for who in ("ann", "bob", "cy", "dee", "eve", "fay"):
        store.last_calls(LINE, analyst=who)
    return store


@pytest.mark.parametrize("rewrite", REWRITES)
@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_is_detected(audited, attack, rewrite):
    store = audited
    point = store.audit_checkpoint()
    log = ATTACKS[attack](testing.audit_entries(store))
    key = {"none": None, "unkeyed": None, "another key": os.urandom(32),
           "the store's key": testing.audit_key(store)}[rewrite]
    if rewrite != "none":
        log = rechain(log, key)
    head = (log[-1]["seq"], log[-1]["hash"]) if log else None    # the head rewritten to match
    testing.forge_audit_log(store, log, head)
    with pytest.raises(cdrtrace.AuditError):
        store.audit_verify(checkpoints=[point])
    # a wipe, or a cut tail under a rewritten head, leaves a valid (shorter) chain: only a
    # checkpoint sees it; so does whatever the key's holder re-chained
    prefix = attack == "wipe" or (attack == "delete the last entry" and rewrite == "none")
    if not prefix and rewrite != "the store's key":
        with pytest.raises(cdrtrace.AuditError):   # the keyed chain alone sees it
            store.audit_verify()


def _prev_edited(log):
    log = copy.deepcopy(log)
    log[2]["prev"] = log[0]["hash"]
    return log


@pytest.mark.parametrize("attack, head, message", [
    (removing(2), "fits", "audit log broken at entry 3: found entry 4 under key 3 "
                          "(deleted, inserted or reordered)"),
    (inserting, "fits", "audit log broken at entry 3: found entry 2 under key 3 "
                        "(deleted, inserted or reordered)"),
    (_prev_edited, "fits", "audit log broken at entry 3: it does not follow entry 2"),
    (altering, "fits", "audit log broken at entry 3: its content was altered (or it was "
                       "written without the store's audit key)"),
    (lambda log: log[:-1], "kept", "audit log broken at its end: the head says entry 6, the "
                                   "log ends at entry 5"),
    (lambda log: log, None, "audit log has entries but no head"),
])
def test_a_broken_chain_says_where_and_how(audited, attack, head, message):
    """audit verify names the first entry that breaks the chain and what is wrong with
    it: an operator reading the error knows where to look."""
    log = testing.audit_entries(audited)
    assert len(log) == 6
    forged = attack(log)
    testing.forge_audit_log(audited, forged, None if head is None else
                            (len(log), log[-1]["hash"]) if head == "kept" else
                            (len(forged), forged[-1]["hash"]))
    with pytest.raises(cdrtrace.AuditError) as info:
        audited.audit_verify()
    assert str(info.value) == message


def test_an_untouched_log_verifies_against_its_checkpoints(audited):
    first = audited.audit_checkpoint()
    audited.last_calls(LINE, analyst="gus")
    second = audited.audit_checkpoint()
    assert audited.audit_verify(checkpoints=[first, second]) == 7
    forged = {**second, "seq": 3}                      # a checkpoint edited to fit a cut log
    with pytest.raises(cdrtrace.AuditError, match="does not verify under the store's audit key"):
        audited.audit_verify(checkpoints=[forged])


@pytest.mark.parametrize("value", [b"not json", b"[1, 2]", b'{"seq": 1}'])
def test_a_malformed_entry_or_head_is_a_clear_failure(audited, value):
    log = testing.audit_entries(audited)
    testing.forge_audit_log(audited, log, (len(log), log[-1]["hash"]))
    testing.edit_audit_log(audited, lambda txn, db, items: txn.put(items[2][0], value, db=db))
    with pytest.raises(cdrtrace.AuditError, match="audit log broken at entry 3"):
        audited.audit_verify()


def test_a_malformed_head_is_a_clear_failure(audited):
    log = testing.audit_entries(audited)
    testing.forge_audit_log(audited, log, (len(log), log[-1]["hash"]))
    with audited.envs.eenv.begin(write=True) as txn:
        txn.put(b"audit_head", b"{", db=audited.envs.db["emeta"])
    with pytest.raises(cdrtrace.AuditError, match="the head is not readable"):
        audited.audit_verify()


def test_the_key_lives_outside_the_store_and_only_its_user_reads_it(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True)
    key_file = store.config["audit_key_file"]
    assert not key_file.startswith(str(tmp_path / "s"))
    assert key_file.startswith(os.environ["XDG_CONFIG_HOME"])
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key_file)).st_mode) == 0o700
    store.close()
    os.rename(key_file, key_file + ".gone")
    with cdrtrace.open(tmp_path / "s") as store, pytest.raises(
            cdrtrace.AuditError, match="the audit key .* cannot be read"):
        store.audit_verify()


def test_a_service_user_whose_home_is_the_store_gets_no_key_in_it(tmp_path, monkeypatch):
    """The default key file is under the user's home: with the home the store's own
    directory, the key would travel with every copy of the store. Refused, key unmade."""
    home = tmp_path / "store"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(cdrtrace.StoreError, match="inside the store .*--audit-key"):
        cdrtrace.open(home, create=True)
    assert not (home / ".config").exists()
    outside = tmp_path / "keys" / "audit.key"
    with cdrtrace.open(home, create=True, audit_key_file=str(outside)) as store:
        assert store.config["audit_key_file"] == str(outside)    # named apart: made
    assert outside.exists()


@pytest.mark.parametrize("where, refused", [
    ("s/audit.key", True),               # in the store's folder
    ("s/evidence/audit.key", True),      # deeper in it
    ("link/audit.key", True),            # through a link to it
    ("s2/audit.key", False),             # a sibling whose name starts the same: apart
])
def test_init_refuses_a_named_key_inside_the_store(tmp_path, capsys, where, refused):
    db = tmp_path / "s"
    (tmp_path / "link").symlink_to(db, target_is_directory=True)
    key = tmp_path / where
    code = cli.main(["init", "--db", str(db), "--audit-key", str(key)])
    if refused:
        assert code != 0
        assert f"the audit key would be made at {key}, inside the store" \
            in capsys.readouterr().err
        assert not key.exists()
    else:
        assert code == 0 and key.exists()


def test_cli_checkpoint_and_verify(tmp_path, capsys):
    db, points = str(tmp_path / "s"), tmp_path / "elsewhere" / "checkpoints.jsonl"
    points.parent.mkdir()
    assert cli.main(["init", "--db", db, "--audit-checkpoints", str(points)]) == 0
    assert cli.main(["audit", "export", "--db", db, "--operator", "ops"]) == 0
    assert cli.main(["audit", "checkpoint", "--db", db]) == 0
    assert json.loads(points.read_text())["seq"] == 1
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--db", db, "--checkpoint", str(points)]) == 0
    assert "extends all 1 checkpoints" in capsys.readouterr().out
    # a checkpoint file emptied (by whoever could also rewrite the store) proves nothing:
    # it must not pass as 'chain intact' (it did, with no word of checkpoints)
    (empty := tmp_path / "elsewhere" / "emptied.jsonl").write_text("")
    assert cli.main(["audit", "verify", "--db", db, "--checkpoint", str(empty)]) == 2
    assert f"{empty} holds no checkpoint" in capsys.readouterr().err
    with cdrtrace.open(db) as store:
        testing.forge_audit_log(store, [], None)
    assert cli.main(["audit", "verify", "--db", db, "--checkpoint", str(points)]) == 2
    assert "past its end" in capsys.readouterr().err
