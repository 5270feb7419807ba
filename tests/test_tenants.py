"""A switch that hosts several customers' PBXs in one feed (a BroadWorks system of many
groups, a FreeSWITCH of many domains) numbers each customer's extensions alike: two
tenants may each have a 2001. A *57 from one cannot tell whose 2001 dialled it, and the
last call to the other's would be named, an innocent person. A feed whose records name two
or more tenants for lines their switch numbers itself fails closed on such lines, even for
a trace that names the feed (docs/trace-rules.md, "A line a switch numbers itself")."""
from __future__ import annotations

import pathlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import cli
from cdrtrace.config import Feed
from cdrtrace.parsing import parsers, timezones
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.formats import BROADWORKS_COLUMNS
from cdrtrace.parsing.parsers import get_format
from cdrtrace.parsing.reference_fields import hash_bytes
from conftest import cdr, cdr_file, parse_all

AT = "2026-03-02T15:00:00Z"
SAMPLES = pathlib.Path(__file__).parent.parent / "data" / "samples" / "real"
FREESWITCH = get_format("freeswitch")
BROADWORKS = get_format("broadworks")
PAT = "3035550100"          # the caller of tenant A's 2001


def fs(caller: str, dest: str, context: str, clock: str, uuid: str, bleg: str = "") -> bytes:
    """A FreeSWITCH 'example' template record on 2026-03-02 (UTC): answered at clock
    (HH:MM), a minute long."""
    day = "2026-03-02"
    return (f'"Caller","{caller}","{dest}","{context}","{day} {clock}:00","{day} {clock}:05",'
            f'"{day} {clock}:59","59","54","NORMAL_CLEARING","{uuid}","{bleg}","","PCMU","PCMU"'
            ).encode()


# the feed shows its calls' two legs (a DID's A leg and the B leg to the phone it rang), so
# its switch writes B legs, and its traces are not held for want of them (UNLOGGED_LEGS)
LEGS = (fs("3035550999", "+13035552000", "public", "08:00", "a-0", "b-0"),
        fs("3035550999", "2000", "public", "08:00", "b-0"))


def ingest(store, tmp_path, feed: str, *records: bytes, fmt=FREESWITCH) -> None:
    path = cdr_file(tmp_path, *records, name=f"{feed}-{len(list(tmp_path.iterdir()))}.csv")
    cdrtrace.ingest(store, [path], feed=Feed(feed, fmt))


def traced(store, line: str, **kw) -> tuple:
    got = store.trace(line, at=AT, **kw)
    return got.outcome.value, got.call_time


def test_a_feed_of_two_domains_names_no_extensions_caller(store_either, tmp_path):
    """a.example.com's 2001 was called at 14:00; b.example.com's 2001 was never called,
    and its subscriber, harassed on a line the records leave out, dials *57."""
    store = store_either
    ingest(store, tmp_path, "pbx", *LEGS, fs(PAT, "2001", "a.example.com", "14:00", "a-1"))
    assert traced(store, "2001") == ("success", "2026-03-02T14:00:00Z")    # one tenant so far
    ingest(store, tmp_path, "pbx", fs("3035550177", "2002", "b.example.com", "14:10", "b-1"))
    assert traced(store, "2001") == ("untraceable", None)
    assert traced(store, "2001", feed="pbx") == ("untraceable", None)   # naming it tells no more
    assert PAT not in repr(store.trace("2001", at=AT)) + repr(store.status("2001", "pbx"))
    record = store.trace_records("2001", analyst="cic")[-1]
    assert record["call"]["calling"] == "+1" + PAT            # the CIC sees what was recorded
    assert record["call"]["tenants_shared"] == "pbx"
    assert "two or more tenants" in record["reason"] and "feed of their own" in record["reason"]
    # b's own extension is no better off; an E.164 line of the feed is traced as before
    assert traced(store, "2002") == ("untraceable", None)
    ingest(store, tmp_path, "pbx", fs(PAT, "+13035550110", "a.example.com", "14:20", "a-2"))
    assert traced(store, "3035550110") == ("success", "2026-03-02T14:20:00Z")


def test_the_order_the_tenants_came_in_does_not_matter(store, tmp_path):
    ingest(store, tmp_path, "pbx", *LEGS, fs("3035550177", "2002", "b.example.com", "14:10", "b-1"))
    ingest(store, tmp_path, "pbx", fs(PAT, "2001", "a.example.com", "14:00", "a-1"))
    assert traced(store, "2001") == ("untraceable", None)


def test_one_domain_beside_the_dialplans_own_contexts_is_one_tenant(store, tmp_path):
    """A FreeSWITCH context counts as a tenant only where it is a domain name (a multi-
    tenant PBX's, such as FusionPBX's): `public`, `default` and an empty one are the
    dialplan's own, in any installation. A domain's case is not the tenant's."""
    ingest(store, tmp_path, "pbx", *LEGS, fs(PAT, "2001", "a.example.com", "14:00", "a-1"),
           fs("3035550177", "2001", "public", "13:00", "p-1"),
           fs("3035550178", "2002", "default", "13:10", "d-1"),
           fs("3035550179", "2003", "", "13:20", "e-1"),
           fs("3035550180", "2004", "A.Example.COM", "13:30", "c-1"))
    assert traced(store, "2001") == ("success", "2026-03-02T14:00:00Z")
    assert not store.stats()["feeds"][0]["tenants_shared"]


def test_a_domain_that_calls_only_e164_lines_names_no_extension(store, tmp_path):
    ingest(store, tmp_path, "pbx", *LEGS, fs(PAT, "2001", "a.example.com", "14:00", "a-1"),
           fs("3035550177", "+13035550110", "c.example.com", "14:10", "c-1"))
    assert traced(store, "2001") == ("success", "2026-03-02T14:00:00Z")


KAMAILIO = get_format("kamailio")
KAMAILIO_ACC = get_format("kamailio-acc")
T14 = 1772460000            # 2026-03-02 14:00:00 UTC


def kam(caller: str, line: str, domain: str | None, minute: int, callid: str,
        rang: str | None = "1") -> bytes:
    """A dialog CDR of the shipped configuration (acc_cdrs by db_flatstore), answered at
    14:mm: 15 columns, or 14 (domain None: the configuration before called_domain), or 13
    (rang None too)."""
    t = T14 + 60 * minute
    fields = [t + 5, t + 59, "54.0", callid, f"{t}.000000", caller, "", "", line, line, "",
              "200", "OK"] + [v for v in (rang, domain) if v is not None]
    return "|".join(str(v) for v in fields).encode()


def test_a_kamailio_proxy_of_two_domains_names_no_extensions_caller(store_either, tmp_path):
    """A proxy serving two customers' domains (docs/kamailio/kamailio.cfg logs the domain
    a call was for as `called_domain`), each with a 1001. Files written before the column
    was added name no domain, and are read as they were."""
    store = store_either
    ingest(store, tmp_path, "proxy", kam(PAT, "1001", "a.example.com", 0, "c1"),
           kam("3035550176", "1001", None, 1, "c0"), kam("3035550175", "1001", None, 2, "c00", None),
           fmt=KAMAILIO)
    assert traced(store, "1001") == ("success", "2026-03-02T14:02:00Z")    # one tenant so far
    ingest(store, tmp_path, "proxy", kam("3035550177", "1001", "b.example.com", 10, "c2"),
           fmt=KAMAILIO)
    assert traced(store, "1001") == ("untraceable", None)
    assert store.trace_records("1001", analyst="cic")[-1]["call"]["tenants_shared"] == "proxy"
    assert store.stats()["feeds"][0]["tenants"] == ["a.example.com", "b.example.com"]
    assert "3035550177" not in repr(store.trace("1001", at=AT)) + repr(store.status("1001", "proxy"))
    ingest(store, tmp_path, "proxy", kam(PAT, "3035550110", "b.example.com", 20, "c3"), fmt=KAMAILIO)
    assert traced(store, "3035550110") == ("success", "2026-03-02T14:20:00Z")     # E.164


def test_a_kamailio_proxy_of_one_domain_is_one_tenant(store, tmp_path):
    """One domain in any case, beside its IPv6 literal (no domain name) and an empty one,
    is one customer's: its extensions are traced. The transaction rows name it alike."""
    ingest(store, tmp_path, "proxy", kam(PAT, "1001", "pbx.example.com", 0, "c1"),
           kam("3035550177", "1002", "PBX.Example.COM", 10, "c2"),
           kam("3035550178", "1003", "[2001:db8::57]", 20, "c3"),
           kam("3035550179", "1004", "", 30, "c4"), fmt=KAMAILIO)
    assert traced(store, "1001") == ("success", "2026-03-02T14:00:00Z")
    assert store.stats()["feeds"][0]["tenants"] == ["pbx.example.com"]
    parser = parsers.make_parser(KAMAILIO_ACC)
    row = "INVITE|f1|t1|c{0}|200|OK|{0}|{1}|||1001|1001|{2}\n".format
    got, bad = parse_all((row(T14, PAT, "|1|a.example.com") + row(T14 + 60, PAT, "|1|b.example.com")
                          + row(T14 + 120, PAT, "|1") + row(T14 + 180, PAT, "")).encode(),
                         parser=parser)       # (and rows of the configurations before)
    assert (len(got), bad, len(parser.take_tenants())) == (4, [], 2)


def test_the_phones_address_kamailios_default_configuration_logs_is_no_tenant(tmp_path):
    """Kamailio's default configuration logs `dst_domain=$rd` in its transaction rows,
    which the acc module evaluates after the location lookup: the phone's address (the
    real Kamailio writes its contact's host there), one per phone, not a customer's
    domain. A table of that configuration read by its columns' names names no tenant; one
    of the shipped configuration's, by the same reading, names its customers'."""
    header = ("id(int,auto) method(string) from_tag(string) to_tag(string) callid(string) "
              "sip_code(string) sip_reason(string) time(int) src_user(string,null) "
              "src_domain(string,null) src_ip(string,null) dst_ouser(string,null) "
              "dst_user(string,null) dst_domain(string,null)\n")
    row = "{0}:INVITE:f{0}:t{0}:c{0}:200:OK:{1}:{2}:pbx.example.com:10.0.0.9:{3}:{3}:{4}\n".format
    data = (header + row(2, T14 + 60, "3035550177", "1002", "10.0.0.22")
            + row(1, T14, PAT, "1001", "10.0.0.21")).encode()
    form = get_format("kamailio-dbtext")

    def tenants(data: bytes) -> tuple:
        names, skip = parsers.read_header(form, data)
        parser = parsers.make_parser(form, header=names, start_offset=skip)
        got, bad = parse_all(data[skip:], parser=parser)
        assert (len(got), bad) == (2, [])
        return parser.take_tenants()
    assert tenants(data) == ()
    # the shipped configuration's column, by its name, is read (a db_text or SQLite table)
    shipped = data.replace(b"dst_domain(", b"called_domain(")
    assert len(tenants(shipped.replace(b"10.0.0.21", b"a.example.com")
                       .replace(b"10.0.0.22", b"b.example.com"))) == 2


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.tuples(st.sampled_from(["1001", "1002", "+13035550110", "alice"]),
                                  st.sampled_from(["a.example.com", "A.example.COM",
                                                   "b.example.com", "10.0.0.1", "", None])),
                        max_size=10),
       chunk=st.integers(1, 600))
def test_kamailio_tenants_are_read_alike_native_and_reference(records, chunk):
    data = b"".join(kam(PAT, line, domain, i, f"c{i}") + b"\n"
                    for i, (line, domain) in enumerate(records))
    starts, offsets = timezones.zone_table("UTC")
    words = KAMAILIO.vocabularies()          # (its SIP codes)
    native = parsers.native.CdrParser(KAMAILIO.dialect(), starts, offsets, 1, 0, 0.0, 0, *words)
    reference = twin.CdrParser(KAMAILIO.dialect(), "UTC", 1, 0, 0.0, 0, *words)
    assert (parse_all(data, parser=native, chunks=[chunk] * (len(data) // chunk + 2))
            == parse_all(data, parser=reference))
    # a domain name (a dot in it: an IPv4 address too) of a call to an extension
    named = {d.lower() for line, d in records if line in ("1001", "1002") and d and "." in d}
    expected = tuple(sorted(hash_bytes(14695981039346656037, d.encode()) or 1 for d in named)[:2])
    assert native.take_tenants() == reference.take_tenants() == expected


def bw(record_id: str, user: str, called: str, group: str, clock: str,
       direction: str = "Terminating", provider: str = "sp1") -> bytes:
    """A BroadWorks record (positional, GMT), answered at clock (HH:MM), a minute long."""
    v = dict.fromkeys(BROADWORKS_COLUMNS, "")
    v.update(recordId=record_id, serviceProvider=provider, type="Normal", userNumber=user,
             direction=direction, callingNumber="+1" + PAT, callingPresentationIndicator="Public",
             calledNumber=called, startTime=f"20260302{clock.replace(':', '')}00.000",
             userTimeZone="1-000000", answerIndicator="Yes",
             answerTime=f"20260302{clock.replace(':', '')}05.000",
             releaseTime=f"20260302{clock.replace(':', '')}59.000", terminationCause="016",
             group=group)
    return ",".join(v[name] for name in BROADWORKS_COLUMNS).encode()


def test_a_broadworks_feed_of_two_groups_names_no_extensions_caller(store, tmp_path):
    """Extension-only users (no number of their own) in two groups of one system."""
    ingest(store, tmp_path, "bw", bw("1", "2001", "2001", "east", "14:00"), fmt=BROADWORKS)
    assert traced(store, "2001") == ("success", "2026-03-02T14:00:00Z")
    # a call a user of another group placed (its originating record) is not its line's
    ingest(store, tmp_path, "bw", bw("2", "2001", "2001", "west", "14:05", "Originating"),
           fmt=BROADWORKS)
    assert traced(store, "2001") == ("already_traced", "2026-03-02T14:00:00Z")
    ingest(store, tmp_path, "bw", bw("3", "2002", "2002", "west", "14:10"), fmt=BROADWORKS)
    assert traced(store, "2001") == ("untraceable", None)
    # a user with a number of its own, dialled by extension, is traced by that number
    ingest(store, tmp_path, "bw", bw("4", "+13035550110", "2010", "east", "14:20"), fmt=BROADWORKS)
    assert traced(store, "+13035550110") == ("success", "2026-03-02T14:20:00Z")
    assert traced(store, "2010") == ("untraceable", None)


def test_a_broadworks_groups_name_is_its_service_providers(store, tmp_path):
    """Group ids are unique within a service provider (or enterprise) alone: two
    providers' customers may each call their group `main`."""
    ingest(store, tmp_path, "bw", bw("1", "2001", "2001", "main", "14:00"),
           bw("2", "2001", "2001", "MAIN", "14:05"), fmt=BROADWORKS)
    assert traced(store, "2001") == ("success", "2026-03-02T14:05:00Z")    # case aside, one
    ingest(store, tmp_path, "bw", bw("3", "2002", "2002", "main", "14:10", provider="sp2"),
           fmt=BROADWORKS)
    assert traced(store, "2001") == ("untraceable", None)
    # named as the first record of each wrote them, its provider first
    assert sorted(store.stats()["feeds"][0]["tenants"]) == ["sp1/main", "sp2/main"]


def test_a_dialect_names_its_tenant_column(store, tmp_path):
    """An Asterisk that keeps each customer's account code in `accountcode`: a dialect's
    `tenant` field reads every value its column holds."""
    conf = tmp_path / "cdrtrace.toml"
    conf.write_text('[dialects.hosted]\nbase = "asterisk"\nfields = { tenant = "accountcode" }\n')
    form = cdrtrace.config.load(str(conf)).format("hosted")
    ingest(store, tmp_path, "hosted", cdr(accountcode="acme", src=PAT, dst="2001",
                                          start="2026-03-02 14:00:00", uniqueid="x1"), fmt=form)
    assert traced(store, "2001") == ("success", "2026-03-02T14:00:00Z")
    ingest(store, tmp_path, "hosted", cdr(accountcode="globex", src="3035550177", dst="2002",
                                          start="2026-03-02 14:10:00", uniqueid="x2"), fmt=form)
    assert traced(store, "2001") == ("untraceable", None)


def test_a_freeswitch_dialect_naming_its_context_reads_every_context(tmp_path):
    conf = tmp_path / "cdrtrace.toml"
    conf.write_text('[dialects.fs-tenants]\nbase = "freeswitch"\nfields = { tenant = "context" }\n')
    form = cdrtrace.config.load(str(conf)).format("fs-tenants")
    parser = parsers.make_parser(form)
    parse_all(fs(PAT, "2001", "tenant_a", "14:00", "a") + b"\n"
              + fs(PAT, "2001", "tenant_b", "14:10", "b") + b"\n", parser=parser)
    assert len(parser.take_tenants()) == 2
    plain = parsers.make_parser(FREESWITCH)     # the built-in format: domain names alone
    parse_all(fs(PAT, "2001", "tenant_a", "14:00", "a") + b"\n"
              + fs(PAT, "2001", "tenant_b", "14:10", "b") + b"\n", parser=plain)
    assert plain.take_tenants() == ()


def test_a_store_indexed_before_tenants_were_read_notes_them_on_ingesting_again(store, tmp_path):
    """docs/operations.md, "Upgrades": a release before this one noted no tenant; ingesting
    the feed's files again with force notes them, and leaves its calls as they were."""
    from cdrtrace.store import lookup

    path = cdr_file(tmp_path, *LEGS, fs(PAT, "2001", "a.example.com", "14:00", "a-1"),
                    fs("3035550177", "2002", "b.example.com", "14:10", "b-1"), name="pbx.csv")
    cdrtrace.ingest(store, [path], feed=Feed("pbx", FREESWITCH))
    key = lookup.TENANTS + store.catalog.known_feed_id("pbx").to_bytes(2, "big")
    store.envs.write(lambda txn: txn.delete(key, db=store.envs.db["meta"]))    # as before
    calls = store.last_calls("2001", analyst="cic")
    assert traced(store, "2001") == ("success", "2026-03-02T14:00:00Z")
    cdrtrace.ingest(store, [path], feed=Feed("pbx", FREESWITCH), force=True)
    assert traced(store, "2001") == ("untraceable", None)
    assert store.last_calls("2001", analyst="cic") == calls


def test_stats_say_which_feed_holds_several_tenants(store, tmp_path, capsys):
    ingest(store, tmp_path, "pbx", *LEGS, fs(PAT, "2001", "a.example.com", "14:00", "a-1"),
           fs("3035550177", "2002", "b.example.com", "14:10", "b-1"))
    ingest(store, tmp_path, "single", *LEGS, fs(PAT, "2001", "c.example.com", "14:00", "c-1"))
    assert {f["feed"]: (f["tenants_shared"], f["tenants"]) for f in store.stats()["feeds"]} == {
        "pbx": (True, ["a.example.com", "b.example.com"]),       # (in the order of their hash)
        "single": (False, ["c.example.com"])}
    store.close()
    assert cli.main(["--db", str(store.path), "stats"]) == 0
    out = capsys.readouterr().out
    pbx, single = (next(x for x in out.splitlines() if x.startswith(name)) for name in ("pbx", "single"))
    assert "SEVERAL TENANTS' EXTENSIONS (among them a.example.com, b.example.com)" in pbx
    assert "SEVERAL TENANTS" not in single


def test_real_freeswitch_of_two_domains(tmp_path):
    """A hosted FreeSWITCH (a multi-domain PBX, as FusionPBX runs one: each customer's
    dialplan context is its domain), both legs logged: a DID's A leg in `public`, its B
    leg to the extension in the customer's domain. Two customers each have a 1001.
    acme's 1001 was called at 09:00 and globex's at 09:30; acme's customer dials *57 at
    10:00. The build before named the 09:30 caller: globex's, an innocent person, and
    another customer's. The DIDs, E.164 numbers, are traced as before."""
    store = cdrtrace.open(tmp_path / "s", create=True, zone="America/Chicago")
    summary = cdrtrace.ingest(store, [str(SAMPLES / "freeswitch-multi-domain.csv")],
                              feed=Feed("hosted", FREESWITCH, "America/Chicago"))
    assert (summary.records, summary.rejected) == (8, 0)
    at = "2026-03-02T{}:00-06:00".format

    def traced(line: str, when: str) -> tuple:
        got = store.trace(line, at=at(when))
        call = store.trace_records(line, analyst="cic")[-1]["call"] or {}
        return got.outcome.value, got.call_time, call.get("start"), call.get("calling")

    assert traced("1001", "10:00") == ("untraceable", None, "2026-03-02T15:30:01Z", "+17205550177")
    assert store.trace_records("1001", analyst="cic")[-1]["call"]["tenants_shared"] == "hosted"
    assert traced("3035551000", "10:00") == (
        "success", "2026-03-02T15:00:00Z", "2026-03-02T15:00:00Z", "+13035550142")
    assert traced("3035552000", "10:00") == (
        "success", "2026-03-02T15:30:00Z", "2026-03-02T15:30:00Z", "+17205550177")
    # globex's own call from its 1002 to its 1001: whose 1001, the records cannot tell
    assert traced("1001", "10:30") == ("untraceable", None, "2026-03-02T16:20:00Z", "1002")
    assert "7205550177" not in repr(store.status("1001", "hosted"))


# ------------------------------------------------------------ native and reference alike

CONTEXTS = ["a.example.com", "A.EXAMPLE.com", "b.example.com", "public", "default", "", "c.x",
            "a.example.co"]
DESTS = ["2001", "2002", "+13035550110", "3035550111", "alice", "*97"]


def expected_tenants(records: list[tuple[str, str]]) -> tuple[int, ...]:
    """The tenants the rule keeps: of the domain-name contexts, in any case, of records to
    a line that is not an E.164 number, the two least hashed."""
    local = {"2001", "2002"}      # (a SIP user dialled is no line: called 0)
    named = {c.lower() for dest, c in records if dest in local and "." in c}
    return tuple(sorted(hash_bytes(14695981039346656037, c.encode()) or 1 for c in named)[:2])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# (a.example.com hashes least, b.example.com most: the third, between them, displaces b)
@example(records=[("2001", "a.example.com"), ("2002", "b.example.com"), ("2001", "c.x")], chunk=4000)
# (a domain that begins as the one before it is another: its hash is its own)
@example(records=[("2001", "a.example.com"), ("2001", "a.example.co")], chunk=4000)
# (one domain written two ways in two chunks: named as the first wrote it)
@example(records=[("2001", "a.example.com"), ("2001", "A.EXAMPLE.com")], chunk=200)
@given(records=st.lists(st.tuples(st.sampled_from(DESTS), st.sampled_from(CONTEXTS)), max_size=12),
       chunk=st.integers(1, 400))
def test_tenants_are_read_alike_by_the_native_parser_and_its_reference(records, chunk):
    data = b"".join(fs(PAT, dest, context, "14:00", f"u-{i}") + b"\n"
                    for i, (dest, context) in enumerate(records))
    starts, offsets = timezones.zone_table("UTC")
    native = parsers.native.CdrParser(FREESWITCH.dialect(), starts, offsets)
    reference = twin.CdrParser(FREESWITCH.dialect(), "UTC")
    assert (parse_all(data, parser=native, chunks=[chunk] * (len(data) // chunk + 2))
            == parse_all(data, parser=reference))
    got = native.take_tenants()
    assert got == reference.take_tenants() and list(got) == sorted(set(got))
    assert got == expected_tenants(records)
    names = native.take_tenant_names()
    assert names == reference.take_tenant_names() and list(names) == list(got)
    # each named as the first record to name it wrote it
    first: dict = {}
    for dest, context in records:
        if dest in ("2001", "2002") and "." in context:      # the records the rule reads
            first.setdefault(hash_bytes(14695981039346656037, context.lower().encode()) or 1, context)
    assert names == {t: first[t] for t in got}
    assert native.take_tenants() == ()                       # taken once


def bw_tenant(provider: str, group: str) -> int:
    return hash_bytes(hash_bytes(14695981039346656037, provider.lower().encode()),
                      group.lower().encode()) or 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# (one group of two providers in a row: the second is a tenant of its own)
@example(records=[("sp1", "main", "2001", "Terminating"), ("sp2", "main", "2001", "Terminating")],
         chunk=4000)
@example(records=[("sp1", "main", "2001", "Terminating"), ("sp", "main", "2001", "Terminating")],
         chunk=4000)
@given(records=st.lists(st.tuples(st.sampled_from(["sp1", "SP1", "sp2", "sp", ""]),
                                  st.sampled_from(["main", "Main", "east", ""]),
                                  st.sampled_from(["2001", "+13035550110"]),
                                  st.sampled_from(["Terminating", "Originating"])), max_size=10),
       chunk=st.integers(1, 900))
def test_broadworks_tenants_are_read_alike_native_and_reference(records, chunk):
    data = b"".join(bw(str(i), called, called, group, "14:00", direction, provider) + b"\n"
                    for i, (provider, group, called, direction) in enumerate(records))
    starts, offsets = timezones.zone_table("UTC")
    native = parsers.native.CdrParser(BROADWORKS.dialect(), starts, offsets)
    reference = twin.CdrParser(BROADWORKS.dialect(), "UTC")
    assert (parse_all(data, parser=native, chunks=[chunk] * (len(data) // chunk + 2))
            == parse_all(data, parser=reference))
    expected = sorted({bw_tenant(p, g) for p, g, called, direction in records
                       if g and called == "2001" and direction == "Terminating"})[:2]
    assert native.take_tenants() == reference.take_tenants() == tuple(expected)
    first: dict = {}
    for provider, group, called, direction in records:
        if group and called == "2001" and direction == "Terminating":
            first.setdefault(bw_tenant(provider, group), f"{provider}/{group}" if provider else group)
    assert native.take_tenant_names() == reference.take_tenant_names() == {t: first[t] for t in expected}


def test_the_tenants_noted_are_the_same_in_any_order(store, tmp_path):
    """A feed's note merges what each commit took, in whatever order they came: the two
    least distinct, 0 (none) aside, stored as they are read back."""
    from cdrtrace.store import lookup

    assert lookup.least_two((5, 9), (7, 0)) == lookup.least_two((7,), (9, 5)) == (5, 7)
    assert lookup.least_two((), ()) == () and lookup.least_two((3,), (3,)) == (3,)
    meta = store.envs.db["meta"]
    for taken, names in [((9,), {9: "nine"}), ((7, 9), {7: "seven", 9: "NINE"}),
                         ((5, 7), {5: "five", 7: "SEVEN"})]:
        store.envs.write(lambda txn, t=taken, n=names: lookup.note_tenants(txn, meta, 4, t, n))
    with store.envs.read() as txn:
        assert lookup.tenants_of(txn, meta, 4) == (5, 7)
        assert lookup.tenant_names(txn, meta, 4) == ["five", "seven"]    # as first named
        assert lookup.tenants_shared(txn, meta, 4) and not lookup.tenants_shared(txn, meta, 5)


@pytest.mark.parametrize("commits", [{}, {"batch_pairs": 1}])     # one commit, or one a chunk
def test_a_tenant_is_named_as_its_first_record_wrote_it_in_any_chunking(store, tmp_path, commits):
    path = cdr_file(tmp_path, *LEGS, fs(PAT, "2001", "a.example.com", "14:00", "a-1"),
                    *(fs(PAT, "2001", "A.EXAMPLE.COM", f"14:{i:02d}", f"a-{i}") for i in range(2, 9)),
                    fs("3035550177", "2002", "b.example.com", "14:10", "b-1"), name="pbx.csv")
    cdrtrace.ingest(store, [path], feed=Feed("pbx", FREESWITCH), chunk_bytes=64, **commits)
    assert store.stats()["feeds"][0]["tenants"] == ["a.example.com", "b.example.com"]
