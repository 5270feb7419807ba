"""Evidence you can defend: private on disk, ids never reused, nothing written for a
request refused, and a failed commit that loses nothing."""
from __future__ import annotations

import os
import stat
import time

import pytest

import cdrtrace
from cdrtrace import cli, testing
from cdrtrace.errors import StoreError
from cdrtrace.evidence.outcomes import Outcome
from cdrtrace.ingestion import following
from cdrtrace.ingestion.live import StreamOptions
from cdrtrace.parsing import numbers
from cdrtrace.store import environments, index
from conftest import cdr, cdr_file

LINE = "3035550110"
AFTER = "2026-03-02T23:00:00Z"


def call(minute: int, src: str = "7205550101") -> bytes:
    return cdr(start=f"2026-03-02 14:{minute:02d}:00", end=f"2026-03-02 14:{minute:02d}:30",
               answer="", disposition="NO ANSWER", src=src, dst=LINE,
               uniqueid=f"u{minute}") + b"\n"


def modes(root) -> dict[str, int]:
    """Every path under root -> its permission bits."""
    found = {str(root): stat.S_IMODE(os.stat(root).st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[path] = stat.S_IMODE(os.stat(path).st_mode)
    return found


# ------------------------------------------------------------------ private on disk

def test_everything_a_store_writes_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        db = tmp_path / "store"
        store = cdrtrace.open(db, create=True, archive_dir=str(tmp_path / "store" / "archive"))
        src = tmp_path / "m.csv"
        src.write_bytes(call(3) + b'"broken\n')
        cdrtrace.ingest(store, [str(src)])
        store.trace(LINE, at=AFTER)
        store.close()
        assert cli.main(["audit", "export", "--db", str(db), "--operator", "ops",
                         "--out", str(db / "audit.jsonl")]) == 0
    finally:
        os.umask(old)
    found = modes(db)
    assert (db / "rejects.jsonl").exists() and (db / "archive").exists()
    assert (db / "audit.jsonl").exists() and (db / "evidence" / "data.mdb").exists()
    for path, mode in found.items():
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_a_store_whose_evidence_others_can_read_is_refused_with_the_fix(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True)
    store.close()
    os.chmod(tmp_path / "s" / "evidence" / "data.mdb", 0o644)
    with pytest.raises(cdrtrace.StoreError, match=r"readable by other users.*chmod -R go-rwx"):
        cdrtrace.open(tmp_path / "s")


# ------------------------------------------------------------------ who is acting

@pytest.mark.parametrize("name", ["ann\nbob", "\u200b", "ann\u200b", "a\tb", " \u2028 "])
def test_invisible_or_multi_line_names_are_refused(store, ingest_records, name):
    ingest_records(call(3))
    with pytest.raises(cdrtrace.AccessError, match="printable, on one line"):
        store.last_calls(LINE, analyst=name)


def test_every_audit_entry_records_the_operating_system_user(store, ingest_records):
    import pwd

    ingest_records(call(3))
    store.last_calls(LINE, analyst="ann")
    entry = testing.audit_entries(store)[-1]
    assert entry["actor"] == "ann" and entry["os_user"] == pwd.getpwuid(os.geteuid()).pw_name
    assert store.audit_verify() >= 1


def test_audit_export_needs_an_identity_and_is_audited(store, tmp_path):
    db = str(store.path)
    store.close()
    assert cli.main(["audit", "export", "--db", db, "--out", str(tmp_path / "a.jsonl")]) == 2
    assert cli.main(["audit", "export", "--db", db, "--operator", "ops",
                     "--out", str(tmp_path / "a.jsonl")]) == 0
    with cdrtrace.open(db) as store:
        assert testing.audit_entries(store)[-1]["action"] == "audit_export"


def test_an_export_replaces_a_file_of_its_own_and_makes_it_private(store, tmp_path):
    out = tmp_path / "a.jsonl"
    out.write_text("an older export, longer than this one\n" * 100)
    out.chmod(0o644)
    db = str(store.path)
    store.close()
    assert cli.main(["audit", "export", "--operator", "ops", "--out", str(out), "--db", db]) == 0
    assert "older" not in out.read_text() and stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("planted", ["symlink", "hard link", "another user's", "a folder",
                                     "a pipe"])
@pytest.mark.parametrize("command", ["audit export", "ingest --rejects", "status --pdf"])
def test_callers_data_is_never_written_into_a_file_another_planted(store, tmp_path, monkeypatch,
                                                                   capsys, planted, command):
    """A path in a folder other local users can write (--out /tmp/...) may hold what one of
    them planted: a symbolic link or a hard link to a file of theirs (or, for a privileged
    process, to /etc/passwd), or a file of their own they could read once written. It is
    refused (exit 2, saying why) and left as it was; it was written through."""
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("theirs\n")
    out = tmp_path / "out.jsonl"
    if planted == "symlink":
        out.symlink_to(theirs)
    elif planted == "hard link":
        os.link(theirs, out)
    elif planted == "a folder":
        out.mkdir()
    elif planted == "a pipe":
        os.mkfifo(out)          # nobody reads it: opened for writing, it would wait for ever
    else:
        out.write_text("theirs\n")
        real = os.fstat

        def fstat(fd):       # out's owner another user (a test that runs as root could chown)
            found = real(fd)
            if os.readlink(f"/proc/self/fd/{fd}") != str(out):
                return found
            fields = list(found)
            fields[stat.ST_UID] = os.geteuid() + 1
            return os.stat_result(fields)
        monkeypatch.setattr(os, "fstat", fstat)
    db = str(store.path)
    store.close()
    argv = {"audit export": ["audit", "export", "--operator", "ops", "--out", str(out)],
            "ingest --rejects": ["ingest", "--rejects", str(out),
                                 cdr_file(tmp_path, b"not a record")],
            "status --pdf": ["status", "3035550110", "--pdf", str(out)]}[command]
    assert cli.main([*argv, "--db", db]) == 2
    err = capsys.readouterr().err
    why = {"symlink": "is a symbolic link", "hard link": "is a file with 1 other name(s)",
           "another user's": "is another user's file", "a folder": "not a plain file",
           "a pipe": "is not a plain file"}[planted]
    assert f"{out} {why}" in err or (planted == "a folder" and "Is a directory" in err), err
    assert theirs.read_text() == "theirs\n"
    if planted == "another user's":
        assert out.read_text() == "theirs\n"


# ------------------------------------------------------------------ evidence integrity

def test_trace_ids_are_never_reused_after_a_purge(store, ingest_records):
    ingest_records(call(3))
    first = store.trace(LINE, at=AFTER)
    future = (time.time_ns() // 1000) + 400 * 86400 * 10**6
    assert store.purge(operator="ops", now_us=future)["traces"] == 1
    again = store.trace(LINE, at=AFTER)
    assert (first.trace_id, again.trace_id) == ("T00000001", "T00000002")


@pytest.mark.parametrize("at", ["2300-01-01T00:00:00Z", "1969-12-31T23:59:59Z", 10**17])
def test_an_activation_time_out_of_range_is_refused_before_anything_is_written(
        store, ingest_records, at):
    ingest_records(call(3))
    before = testing.commits(store)
    with pytest.raises(cdrtrace.TraceError, match="out of range"):
        store.trace(LINE, at=at)
    assert testing.commits(store) == before
    assert store.status(LINE).traces == ()


def test_an_exception_inside_a_live_commit_loses_nothing(store, tmp_path, monkeypatch):
    path = tmp_path / "Master.csv"
    path.write_bytes(b"".join(
        cdr(start="2026-03-02 14:03:00", end="2026-03-02 14:03:30", answer="",
            disposition="NO ANSWER", src="7205550101", dst=f"30366{m:05d}", uniqueid=f"u{m}") + b"\n"
        for m in range(100)))
    count_feed, calls = store.catalog.count_feed, []

    def failing(txn, feed, records, *args):
        calls.append(records)
        if records:                      # the first commit that carries records fails
            raise OSError("disk went away")
        return count_feed(txn, feed, records, *args)
    monkeypatch.setattr(store.catalog, "count_feed", failing)
    # the file in one read (its 100 records in the first commit), whatever the default read
    options = StreamOptions(batch_records=10, batch_ms=60_000, poll_ms=1, idle_exit_s=0.05,
                            chunk_bytes=1 << 20)
    with pytest.raises(OSError, match="disk went away"):
        following.follow(store, str(path), options=options)
    assert 100 in calls and testing.position(store, b"follow:" + str(path).encode()).record == 0
    monkeypatch.setattr(store.catalog, "count_feed", count_feed)
    again = following.follow(store, str(path), options=options)
    assert again.resumed
    assert store.stats()["feeds"][0]["records"] == 100        # every record counted once
    assert len(testing.index_items(store)) == 100            # every call indexed
    assert not store.live_feeds()
    assert store.trace("3036600042", at=AFTER).outcome is Outcome.SUCCESS


def test_pseudonyms_never_shift_not_even_after_a_purge(store, ingest_records):
    ingest_records(call(3, src="7205550101"),                                  # Caller A
                   cdr(start="2026-03-03 10:00:00", end="2026-03-03 10:00:30", answer="",
                       disposition="NO ANSWER", src="7205550102", dst=LINE, uniqueid="b") + b"\n")
    store.trace(LINE, at="2026-03-02T15:00:00Z")
    store.trace(LINE, at="2026-03-03T12:00:00Z")
    assert [p.label for p in store.status(LINE).progress] == ["Caller A", "Caller B"]
    day_after = 1772578800 * 10**6                                   # 2026-03-03T23:00:00Z
    assert store.purge(operator="ops", older_than_days=0.5, now_us=day_after)["traces"] == 1
    assert [p.label for p in store.status(LINE).progress] == ["Caller B"]
    case = store.open_case(LINE, "Caller B", agency="PD", officer="O", case_number="1",
                           analyst="ann")
    assert case["origin"] == "+17205550102"
    case = store.open_case(LINE, "Caller A", agency="PD", officer="O", case_number="2",
                           analyst="ann")
    assert case["origin"] == "+17205550101"      # what the customer called Caller A


# ------------------------------------------------------------------ the store's formats

def two_origins(store, tmp_path, first: bool = True, second: bool = True) -> None:
    """Traces of LINE naming 7205550101 (its Caller A) then 7205550102 (Caller B)."""
    if first:
        cdrtrace.ingest(store, [cdr_file(tmp_path, call(3, src="7205550101"), name="a.csv")])
        store.trace(LINE, at="2026-03-02T14:10:00Z")     # before the second call began
    if second:
        cdrtrace.ingest(store, [cdr_file(tmp_path, call(33, src="7205550102"), name="b.csv")])
        store.trace(LINE, at="2026-03-02T16:00:00Z")


def pseudonym_keys(txn, db) -> list[bytes]:
    """The pseudonym entries (line + "o" + origin, line + "#") a sub-database holds."""
    return [bytes(k) for k, _ in txn.cursor(db) if bytes(k)[8:9] in (b"o", b"#")]


def test_traces_recorded_before_labels_were_stored_label_their_successes_only(tmp_path):
    """pseudonyms.of_line for a store older than stored labels: the origins of its
    successful traces get the next labels, in trace order, after those stored; an
    untraceable trace's caller (two callers at the same instant: the record names one)
    gets none, and shifts no label."""
    import lmdb

    from cdrtrace.evidence import pseudonyms

    env = lmdb.open(str(tmp_path / "e"), max_dbs=2)
    db, line = env.open_db(b"p"), b"\x00" * 8
    records = [{"outcome": "untraceable", "call": {"calling": "+17205550109"}},
               {"outcome": "no_call", "call": None},
               {"outcome": "success", "call": {"calling": "+17205550102"}},
               {"outcome": "success", "call": {"calling": "+17205550101"}},
               {"outcome": "already_traced", "call": {"calling": "+17205550101"}}]
    with env.begin(db=db) as txn:
        assert pseudonyms.of_line(txn, db, line, records) == {
            "+17205550102": "Caller A", "+17205550101": "Caller B"}
    with env.begin(write=True, db=db) as txn:                 # one stored already
        pseudonyms.assign(txn, db, line, "+17205550101")
    with env.begin(db=db) as txn:
        assert pseudonyms.of_line(txn, db, line, records) == {
            "+17205550101": "Caller A", "+17205550102": "Caller B"}
    env.close()


def test_a_new_store_keeps_a_lines_pseudonyms_beside_its_traces(tmp_path):
    store = cdrtrace.open(tmp_path / "store", create=True)
    try:
        two_origins(store, tmp_path)
        assert [p.label for p in store.status(LINE).progress] == ["Caller A", "Caller B"]
        envs = store.envs
        assert envs.format == 3
        with envs.eenv.begin() as txn:
            assert txn.get(b"pseudonyms") is None        # no sub-database of their own
            by_line = envs.eenv.open_db(b"by_line", txn=txn, create=False)
            assert sorted(pseudonym_keys(txn, by_line)) == sorted(
                [index.line_key(numbers.normalize(LINE)) + mark for mark in
                 (b"#", b"o+17205550101", b"o+17205550102")])
    finally:
        store.close()


def test_a_format_2_store_keeps_its_pseudonyms_where_they_are(tmp_path, monkeypatch):
    with monkeypatch.context() as m:          # as a release before format 3 made it
        m.setattr(environments, "FORMAT_VERSION", 2)
        store = cdrtrace.open(tmp_path / "store", create=True)
        two_origins(store, tmp_path, second=False)
        store.close()
    store = cdrtrace.open(tmp_path / "store")
    try:
        assert store.envs.format == 2
        two_origins(store, tmp_path, first=False)
        # the label given before is read where it was kept, and the next follows it
        assert [p.label for p in store.status(LINE).progress] == ["Caller A", "Caller B"]
        for number, label in (("1", "Caller A"), ("2", "Caller B")):
            case = store.open_case(LINE, label, agency="PD", officer="O", case_number=number,
                                   analyst="ann")
            assert case["origin"] == "+1720555010" + number
        envs = store.envs
        with envs.eenv.begin() as txn:
            own = envs.eenv.open_db(b"pseudonyms", txn=txn, create=False)
            by_line = envs.eenv.open_db(b"by_line", txn=txn, create=False)
            assert len(pseudonym_keys(txn, own)) == 3 and pseudonym_keys(txn, by_line) == []
        with envs.env.begin() as txn:
            assert txn.get(b"version", db=envs.db["meta"]) == b"2"
    finally:
        store.close()


@pytest.mark.parametrize("version", [b"1", b"4"])
def test_a_store_of_a_format_not_read_is_refused_and_its_format_named(tmp_path, version):
    store = cdrtrace.open(tmp_path / "store", create=True)
    with store.envs.env.begin(write=True) as txn:
        txn.put(b"version", version, db=store.envs.db["meta"])
    store.close()
    with pytest.raises(StoreError, match=f"has store format {version.decode()}; this "
                                         "cdrtrace reads formats 2, 3"):
        cdrtrace.open(tmp_path / "store")


# ------------------------------------------------------------------ refusals are audited

@pytest.mark.parametrize("request_, action", [
    (lambda s: s.disclose({"kind": "subpoena", "reference": "r", "agency": "a", "officer": "o",
                           "case_number": "1"}, analyst="ann", line=""), "disclosure_refused"),
    (lambda s: s.disclose({"kind": "subpoena", "reference": "r\udcff", "agency": "a",
                           "officer": "o", "case_number": "1"}, analyst="ann", line=LINE),
     "disclosure_refused"),
    (lambda s: s.last_calls("not a line", analyst="ann"), "read_last_calls_refused"),
    (lambda s: s.last_calls(LINE, analyst="ann\nmallory"), "read_last_calls_refused"),
    (lambda s: s.case("C000404", analyst="ann"), "case_read_refused"),
    (lambda s: s.open_case(LINE, "Caller Q", agency="a", officer="o", case_number="1",
                           analyst="ann"), "case_open_refused"),
    (lambda s: s.timeline(LINE, "nobody", analyst="ann"), "read_timeline_refused"),
])
def test_every_refused_identifying_request_is_audited(store, ingest_records, request_, action):
    ingest_records(call(3))
    with pytest.raises(cdrtrace.CdrTraceError):
        request_(store)
    entry = testing.audit_entries(store)[-1]
    assert entry["action"] == action and entry["details"]["reason"]
    assert store.audit_verify() >= 1


def test_a_timeline_records_the_line_and_origin_it_read(store, ingest_records):
    ingest_records(call(3))
    store.trace(LINE, at=AFTER)
    table = store.timeline(LINE, "7205550101", analyst="ann")
    assert table.num_rows == 1
    entry = testing.audit_entries(store)[-1]
    assert entry["action"] == "read_timeline"
    assert entry["details"] == {"line": "+13035550110", "origin": "+17205550101"}


# ------------------------------------------------------------------ inputs that must not crash

@pytest.mark.parametrize("fmt", ["cucm", "broadworks"])
def test_a_header_wider_than_a_record_may_be_is_one_clear_error(store, tmp_path, fmt):
    from cdrtrace.parsing import formats

    names = list(formats.CUCM_RELEASES[129] if fmt == "cucm" else formats.BROADWORKS_COLUMNS)
    names += [f"extra{i}" for i in range(1100)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join(["1"] * len(names)) + "\n")
    with pytest.raises(cdrtrace.ParseError, match=r"wide.csv: .* columns, more than the 1023"):
        cdrtrace.ingest(store, [str(path)], fmt=fmt)


SHRINKING = """
import os, sys
from cdrtrace import cli
from cdrtrace.parsing import native
path, fed = sys.argv[2], []
feed = native.CdrParser.feed

def truncating(self, buffer, final=False):
    if not fed:
        os.truncate(path, 1000)          # the switch cuts the file while it is read
    fed.append(1)
    return feed(self, buffer, final)
native.CdrParser.feed = truncating
sys.exit(cli.main(["ingest", path, "--db", sys.argv[1]]))
"""


def test_a_file_truncated_while_it_is_read_is_one_error_not_a_crash(tmp_path):
    import subprocess
    import sys

    db = str(tmp_path / "db")
    cdrtrace.open(db, create=True).close()
    path = tmp_path / "Master.csv"
    path.write_bytes(b"".join(
        cdr(start="2026-03-02 14:03:00", end="2026-03-02 14:03:30", answer="",
            disposition="NO ANSWER", src="7205550101", dst=f"30366{m:05d}", uniqueid=f"u{m}") + b"\n"
        for m in range(5000)))
    out = subprocess.run([sys.executable, "-c", SHRINKING, db, str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr)          # not -7 (SIGBUS)
    assert out.stderr.startswith("cdrtrace: error: ") and "shrank while it was read" in out.stderr
    assert out.stderr.count("\n") == 1


# ------------------------------------------------------------------ files that change

def calls_file(path, first: int, count: int, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(b"".join(
            cdr(start="2026-03-02 14:03:00", end="2026-03-02 14:03:30", answer="",
                disposition="NO ANSWER", src="7205550101", dst=f"30366{m:05d}",
                uniqueid=f"u{m}") + b"\n" for m in range(first, first + count)))


def test_a_file_the_switch_appended_to_is_read_on_from_where_it_ended(store, tmp_path):
    path = tmp_path / "Master.csv"
    calls_file(path, 0, 100)
    assert cdrtrace.ingest(store, [str(path)]).records == 100
    calls_file(path, 100, 50, "ab")
    again = cdrtrace.ingest(store, [str(path)])
    assert (again.records, again.appended, again.skipped) == (50, [str(path)], [])
    assert cdrtrace.ingest(store, [str(path)]).skipped == [str(path)]     # unchanged now
    assert store.stats()["feeds"][0]["records"] == 150                    # none counted twice
    assert len(testing.index_items(store)) == 150
    last = store.last_calls("3036600149", analyst="ann")[0]
    assert last["offset"] > 0 and last["source"] == str(path)             # one source, on
    assert len(testing.sources(store)) == 1


def test_a_file_that_changed_anywhere_is_not_taken_for_one_already_ingested(store, tmp_path):
    path = tmp_path / "Master.csv"
    calls_file(path, 0, 20_000)                                           # ~4.6 MB
    assert cdrtrace.ingest(store, [str(path)]).records == 20_000
    data = bytearray(path.read_bytes())
    at = len(data) // 3 + 1234                      # between any samples a sampler would take
    at = data.index(b"3036", at)
    data[at:at + 10] = b"3039999999"                # the same size, one call changed
    path.write_bytes(bytes(data))
    again = cdrtrace.ingest(store, [str(path)])
    assert again.skipped == [] and again.appended == [] and again.records == 20_000
    assert len(store.last_calls("3039999999", analyst="ann")) == 1


DISK_FULL = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
/* While $FULL names a file (its path's ending), writes to it fail: the disk is full. */
static int full(int fd) {
    const char *which = getenv("FULL");
    char link[64], path[512];
    if (!which || !*which) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    size_t lp = strlen(path), lw = strlen(which);
    return lp >= lw && strcmp(path + lp - lw, which) == 0;
}
#define FAIL_IF_FULL(fd) do { if (full(fd)) { errno = ENOSPC; return -1; } } while (0)
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite");
    FAIL_IF_FULL(fd); return real(fd, b, n, o); }
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    FAIL_IF_FULL(fd); return real(fd, b, n, o); }
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t o) {
    static ssize_t (*real)(int, const struct iovec *, int, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwritev");
    FAIL_IF_FULL(fd); return real(fd, v, c, o); }
ssize_t pwritev64(int fd, const struct iovec *v, int c, off_t o) {
    static ssize_t (*real)(int, const struct iovec *, int, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwritev64");
    FAIL_IF_FULL(fd); return real(fd, v, c, o); }
ssize_t write(int fd, const void *b, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    FAIL_IF_FULL(fd); return real(fd, b, n); }
"""

FULL_DISK_RUN = """
import json, os, sys
import cdrtrace
from cdrtrace import cli
db, csv = sys.argv[1], sys.argv[2]
store = cdrtrace.open(db)
os.environ["FULL"] = "evidence/data.mdb"                 # the evidence cannot be written
full = store.trace("3035550110", at="2026-03-02T23:00:00Z")
os.environ["FULL"] = ""
after = store.trace("3035550110", at="2026-03-02T23:00:00Z")
records = len(store.trace_records("3035550110", analyst="ann"))
verified = store.audit_verify()
store.close()
os.environ["FULL"] = "/data.mdb"                          # now the index cannot be written
code = cli.main(["ingest", csv, "--db", db])
os.environ["FULL"] = ""
again = cdrtrace.open(db)
print(json.dumps({"full": full.to_dict(), "after": after.outcome.value, "records": records,
                  "verified": verified, "ingest_exit": code,
                  "indexed_after": len(again.last_calls("3036600000", analyst="ann"))}))
"""


def test_a_full_disk_is_a_defined_answer_to_the_switch_and_one_line_for_ingest(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "full.c").write_text(DISK_FULL)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "full.so"),
                    str(tmp_path / "full.c"), "-ldl"], check=True)
    db = tmp_path / "db"
    store = cdrtrace.open(db, create=True)
    source = tmp_path / "first.csv"
    source.write_bytes(call(3))
    cdrtrace.ingest(store, [str(source)])
    store.close()
    more = tmp_path / "more.csv"
    calls_file(more, 0, 200)
    out = subprocess.run([sys.executable, "-c", FULL_DISK_RUN, str(db), str(more)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LD_PRELOAD": str(tmp_path / "full.so"), "FULL": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["full"]["outcome"] == "failure"
    assert result["full"]["announcement_id"] == "COT-FAILURE"
    assert "try again later" in result["full"]["announcement"]
    assert "7205550101" not in json.dumps(result["full"])
    assert result["after"] == "success" and result["records"] == 1 and result["verified"] >= 1
    assert result["ingest_exit"] == 2
    err = [line for line in out.stderr.splitlines() if line.startswith("cdrtrace: error")]
    assert len(err) == 1 and "Traceback" not in out.stderr
    assert result["indexed_after"] == 0           # nothing of the failed ingest half-written
    with cdrtrace.open(db) as store:              # intact: the file ingests once space is back
        assert cdrtrace.ingest(store, [str(more)]).records == 200
        assert store.audit_verify() >= 1


# ------------------------------------------------------------------ roles

def me() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


@pytest.mark.parametrize("analysts, allowed", [
    (None, True),                          # no [roles]: the service user does everything
    (["someone-else"], False),
    ("me", True),
    ("@my-group", True),
    ("@another-group", False),
])
def test_roles_decide_who_may_read_callers(store, ingest_records, analysts, allowed):
    user, group = me()
    ingest_records(call(3))
    store.trace(LINE, at=AFTER)
    path = store.path
    store.close()
    if analysts is not None:
        named = {"me": [user], "@my-group": [f"@{group}"], "@another-group": ["@no-such-group-here"]}
        members = named[analysts] if isinstance(analysts, str) else analysts
        (path / "cdrtrace.toml").write_text(
            f"[roles]\nanalyst = {members!r}\nlegal = []\noperator = [{user!r}]\n".replace("'", '"'))
    with cdrtrace.open(path) as reopened:
        if allowed:
            assert reopened.last_calls(LINE, analyst="ann")[0]["calling"] == "+17205550101"
        else:
            with pytest.raises(cdrtrace.AccessError, match=f"'{user}' is not in the analyst role"):
                reopened.last_calls(LINE, analyst="ann")
            assert testing.audit_entries(reopened)[-1]["action"] == "read_last_calls_refused"
        if analysts is not None:            # nobody is in the legal role: no disclosure
            with pytest.raises(cdrtrace.AccessError, match="not in the legal role"):
                reopened.disclose({"kind": "subpoena", "reference": "r", "agency": "a",
                                   "officer": "o", "case_number": "1"}, analyst="ann", line=LINE)
            assert reopened.purge(operator="ops", older_than_days=3650)["traces"] == 0


def test_a_named_configuration_cannot_grant_a_role(store, ingest_records, tmp_path, monkeypatch,
                                                  capsys):
    user, _ = me()
    ingest_records(call(3))
    path = store.path
    store.close()
    (path / "cdrtrace.toml").write_text('[roles]\nanalyst = []\nlegal = []\noperator = []\n')
    granting = tmp_path / "mine.toml"
    granting.write_text(f'[roles]\nanalyst = ["{user}"]\n')
    monkeypatch.setenv("CDRTRACE_CONFIG", str(granting))
    assert cli.main(["last-calls", LINE, "--analyst", "ann", "--db", str(path)]) == 2
    assert "is not in the analyst role" in capsys.readouterr().err
    assert cli.main(["last-calls", LINE, "--analyst", "ann", "--db", str(path),   # not read
                     "--config", str(granting)]) == 2
    assert "only ingest and feeds read" in capsys.readouterr().err


def test_an_archive_folder_with_an_apostrophe_and_a_stray_folder_breaks_no_report(tmp_path):
    root = tmp_path / "carrier's archive"
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(root))
    source = tmp_path / "m.csv"
    source.write_bytes(call(3))
    cdrtrace.ingest(store, [str(source)])
    store.trace(LINE, at=AFTER)
    (root / "day=garbage").mkdir()
    (root / "day=garbage" / "x.parquet").write_bytes(b"not parquet")
    calls = store.archived_calls(LINE, analyst="ann")
    assert calls.num_rows == 1
    timeline = store.timeline(LINE, "7205550101", analyst="ann")
    assert sorted(timeline.column("event").to_pylist()) == ["call", "trace"]
    assert store.purge(operator="ops", older_than_days=0.0)["archive_days"] == 1
    assert (root / "day=garbage").exists()          # not ours: left alone
