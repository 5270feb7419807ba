"""The `cdrtrace` command: every subcommand, JSON output, one-line failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cdrtrace import cli
from conftest import FS_TWO_LEGS, cdr, cdr_file


def run(*argv, env=None):
    """Run the installed command in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run([sys.executable, "-m", "cdrtrace.cli", *argv], capture_output=True,
                          stdin=subprocess.DEVNULL,
                          text=True, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


def test_full_cycle_with_json(tmp_path, capsys):
    db = str(tmp_path / "db")
    # the unreadable record began an hour before the good one (at the same second the
    # trace could not tell which was last: docs/trace-rules.md, "Two callers at the same instant")
    path = cdr_file(tmp_path, cdr(), cdr(disposition="ANSWERD", start="2026-03-02 13:03:11",
                                         answer="2026-03-02 13:03:15", end="2026-03-02 13:03:40"))
    assert cli.main(["init", "--db", db]) == 0
    assert cli.main(["ingest", path, "--db", db, "--tz", "America/Denver", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert (summary["records"], summary["indexed"], summary["rejected"]) == (2, 1, 1)
    assert summary["rejects_path"].endswith("rejects.jsonl")
    assert cli.main(["trace", "303-555-0110", "--at", "2026-03-03T00:00:00Z", "--db", db,
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "success" and result["call_time"] == "2026-03-02T21:03:11Z"
    assert cli.main(["status", "3035550110", "--db", db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["progress"][0]["origin"] == "Caller A"
    assert cli.main(["last-calls", "3035550110", "--analyst", "ann", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["calling"] == "+13035550142"


def test_text_output_and_environment_store(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "db")
    monkeypatch.setenv("CDRTRACE_DB", db)
    cli.main(["init"])
    cli.main(["ingest", cdr_file(tmp_path, cdr())])
    out = capsys.readouterr().out
    assert "records 1  indexed 1  rejected 0" in out
    cli.main(["trace", "3035550110", "--at", "2026-03-03T00:00:00Z"])
    assert "success  [COT-SUCCESS] Your call trace was successful." in capsys.readouterr().out
    cli.main(["status", "3035550110"])
    assert "Caller A: 1 of 3 traced calls" in capsys.readouterr().out


def test_ingest_names_a_cucm_cmr_file_it_did_not_ingest(tmp_path, capsys):
    """A CUCM CMR file among the sources is named with what it is, and the run succeeds."""
    from pathlib import Path
    samples = Path(__file__).resolve().parent.parent / "data" / "samples" / "cucm"
    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db]) == 0
    capsys.readouterr()
    cmr = str(samples / "cmr_StandAloneCluster_01_202603021403_1")
    assert cli.main(["ingest", "--db", db, "--format", "cucm", cmr]) == 0
    assert (f"not ingested {cmr}: a CUCM CMR file (call management records: voice quality, "
            "no calls)") in capsys.readouterr().out


@pytest.mark.parametrize("traced, phrase", [
    (1, "1 of 3 traced calls"), (3, "3 of 3 traced calls"), (4, "4 traced calls (3 needed)")])
def test_the_customer_reads_traced_calls_against_the_threshold(tmp_path, capsys, traced, phrase):
    """Up to the threshold (3, R8) a customer reads "N of 3"; past it, not "4 of 3"."""
    db = str(tmp_path / "db")
    cli.main(["init", "--db", db])
    cli.main(["ingest", "--db", db, cdr_file(tmp_path, *(
        cdr(start=f"2026-03-02 1{h}:03:00", end=f"2026-03-02 1{h}:03:11") for h in range(traced)))])
    for h in range(traced):
        cli.main(["trace", "3035550110", "--at", f"2026-03-02T1{h}:05:00Z", "--db", db])
    capsys.readouterr()
    page = tmp_path / "log.html"
    cli.main(["status", "3035550110", "--db", db, "--html", str(page)])
    eligible = "  - you may request action" if traced >= 3 else ""
    assert f"Caller A: {phrase}{eligible}\n" in capsys.readouterr().out
    cell = phrase.replace(" traced calls", "")              # the log's "Traced calls" column
    assert f"<td>Caller A</td><td>{cell}</td>" in page.read_text()


def test_stdin_source(tmp_path):
    db = str(tmp_path / "db")
    assert run("init", "--db", db)[0] == 0
    proc = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", "-", "--db", db,
                           "--json"], input=cdr() + b"\n", capture_output=True, check=True)
    assert json.loads(proc.stdout)["indexed"] == 1


@pytest.mark.parametrize("argv,message", [
    (["trace", "3035550110"], "cdrtrace: error: no store given: use --db PATH or set CDRTRACE_DB"),
    (["trace", "3035550110", "--db", "{tmp}/none"],
     "cdrtrace: error: no cdrtrace store at {tmp}/none (create one with `cdrtrace init`)"),
    (["trace", "not-a-line", "--db", "{db}"], "cdrtrace: error: not a telephone line: 'not-a-line'"),
    (["ingest", "{tmp}/missing.csv", "--db", "{db}"],
     "cdrtrace: error: cannot read {tmp}/missing.csv: no such file"),
    (["ingest", "{tmp}", "--db", "{db}"], "cdrtrace: error: no files in directory {tmp}"),
    (["ingest", "{tmp}/*.cdr", "--db", "{db}"], "cdrtrace: error: no file matches {tmp}/*.cdr"),
    (["ingest", "--follow", "sqlite://{tmp}/acc.db?table=acc", "--format", "kamailio-dbtext",
      "--db", "{db}"], "cdrtrace: error: sqlite://{tmp}/acc.db?table=acc: an SQLite table is "
     "not followed; ingest it again (without --follow) to read the rows added since, exactly once"),
    (["ingest", "sqlite://{tmp}/acc.db", "--db", "{db}"],
     "cdrtrace: error: sqlite://{tmp}/acc.db: expected sqlite:///PATH/TO/acc.db?table=NAME"),
    (["ingest", "-", "--format", "auto", "--db", "{db}"],
     "cdrtrace: error: cannot tell the format of -: it looks like none of asterisk, "
     "asterisk-custom, freeswitch, cucm, broadworks, kamailio, kamailio-acc, kamailio-dbtext "
     "(name it with --format)"),
    (["ingest", "-", "--format", "sonus", "--db", "{db}"],
     "cdrtrace: error: unknown format 'sonus' (known: asterisk, asterisk-custom, freeswitch, "
     "cucm, broadworks, kamailio, kamailio-acc, kamailio-dbtext)"),
    (["ingest", "-", "--tz", "Mars/Base", "--db", "{db}"],
     "cdrtrace: error: unknown time zone 'Mars/Base' (use an IANA name such as America/Denver)"),
    (["last-calls", "3035550110", "--analyst", "", "--db", "{db}"],
     "cdrtrace: error: reading caller numbers needs an analyst identity"),
    (["trace", "3035550110", "--at", "teatime", "--db", "{db}"],
     "cdrtrace: error: not an ISO-8601 time: 'teatime'"),
])
def test_expected_failures_print_one_line_and_exit_2(tmp_path, argv, message):
    db = str(tmp_path / "db")
    run("init", "--db", db)
    argv = [a.format(tmp=tmp_path, db=db) for a in argv]
    code, out, err = run(*argv, env={"CDRTRACE_DB": ""})
    assert code == 2
    assert err == message.format(tmp=tmp_path, db=db) + "\n"
    assert "Traceback" not in err + out


def test_synth_writes_traffic_and_truth(tmp_path):
    out = tmp_path / "t.csv"
    code, stdout, _ = run("synth", "--calls", "5000", "--lines", "500", "--seed", "4",
                          "--out", str(out), "--json")
    assert code == 0
    summary = json.loads(stdout)
    truth = json.loads((tmp_path / "t.csv.truth.json").read_text())
    assert summary["calls"] == truth["calls"] == out.read_bytes().count(b"\n")
    assert len(truth["campaigns"]) == summary["campaigns"] >= 3
    assert all(c["victim"].startswith("+1") and len(c["calls"]) >= 2 for c in truth["campaigns"])


def test_demo_plays_every_outcome_and_finds_the_planted_campaigns():
    code, out, err = run("demo", "--json")
    assert code == 0, err
    report = json.loads(out)
    outcomes = [t["outcome"] for t in report["traces"]]
    assert {"success", "already_traced", "untraceable", "no_call"} <= set(outcomes)
    via_agi = [t for t in report["traces"] if t.get("via") == "fastagi"]
    assert len(via_agi) == 1 and via_agi[0]["trace_id"] == "T00000001"   # one *57 over FastAGI
    eligible = [r for r in report["repeat_origins"] if r["eligible"]]
    assert eligible and all(r["traced_calls"] >= 3 for r in eligible)
    for status in report["status"]:
        assert "origin" not in json.dumps(status).replace('"origin": "Caller', "")
    code, text, _ = run("demo")
    assert code == 0 and "dials *57" in text and "repeat origins" in text
    assert "(Asterisk, FastAGI) -> COT_OUTCOME=" in text


def test_init_sets_the_zone_and_country_code_of_the_store(tmp_path, capsys):
    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db, "--tz", "Asia/Ho_Chi_Minh", "--country-code", "84"]) == 0
    # a Vietnamese subscriber's call at 21:00 local (14:00 UTC), from a national number
    record = cdr(src="0912345678", clid="", dst="0243825555", dstchannel="PJSIP/0243825555-01",
                 start="2026-03-02 21:00:00", answer="2026-03-02 21:00:05", end="2026-03-02 21:01:00")
    assert cli.main(["ingest", cdr_file(tmp_path, record), "--db", db]) == 0
    capsys.readouterr()
    # --at with no offset is read in the store's zone: 21:30 local is after the call
    assert cli.main(["trace", "024 3825 555", "--at", "2026-03-02T21:30:00", "--db", db,
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["outcome"], result["call_time"]) == ("success", "2026-03-02T14:00:00Z")
    assert cli.main(["last-calls", "+84243825555", "--analyst", "cic", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["calling"] == "+84912345678"
    # an existing store keeps its settings: a different zone is a clear error
    assert cli.main(["init", "--db", db, "--tz", "UTC"]) == 2
    assert "already exists with zone Asia/Ho_Chi_Minh" in capsys.readouterr().err
    assert cli.main(["init", "--db", str(tmp_path / "x"), "--tz", "Mars/Olympus"]) == 2


def test_ingest_over_many_sources_reads_every_one_it_can_and_names_the_others(tmp_path, capsys):
    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db]) == 0
    first = cdr_file(tmp_path, cdr(dst="3035550110"), name="a.csv")
    strange = tmp_path / "b.csv"
    strange.write_bytes(b"this is no CDR file\n")
    last = cdr_file(tmp_path, cdr(dst="3035550111"), name="c.csv")
    missing = str(tmp_path / "nowhere" / "*.csv")
    capsys.readouterr()
    code = cli.main(["ingest", first, str(strange), missing, last, "--db", db, "--format", "auto"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out.startswith("records 2  indexed 2  rejected 0")           # both good files
    assert f"could not read {strange}: cannot tell the format of {strange}" in out
    assert f"could not read {missing}: no file matches {missing}" in out
    assert err == "cdrtrace: error: 2 of 4 source(s) could not be read (named above)\n"
    for line in ("3035550110", "3035550111"):
        assert cli.main(["trace", line, "--at", "2026-03-03T00:00:00Z", "--db", db]) == 0


def test_an_ingest_says_when_its_feed_names_no_caller_yet(tmp_path, capsys):
    """A FreeSWITCH file of A legs alone (the shipped `legs` = `a`): the ingest says its
    feed's calls are untraceable until it shows two legs of a call, and how to fix it;
    once it has, it says nothing more."""
    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db]) == 0
    a_leg = (b'"Pat","7205550101","2001","public","2026-03-02 14:00:00","2026-03-02 14:00:05",'
             b'"2026-03-02 14:01:00","60","55","NORMAL_CLEARING","a-1","b-1","","PCMU","PCMU"')
    capsys.readouterr()
    assert cli.main(["ingest", cdr_file(tmp_path, a_leg), "--db", db, "--format", "freeswitch"]) == 0
    said = "feed (no feed):  NO CALL'S TWO LEGS LOGGED YET: its calls are untraceable"
    out = capsys.readouterr().out
    assert said in out and "set mod_cdr_csv's legs to ab" in out
    (path := tmp_path / "legs.csv").write_bytes(FS_TWO_LEGS)
    assert cli.main(["ingest", str(path), "--db", db, "--format", "freeswitch"]) == 0
    assert "NO CALL'S" not in capsys.readouterr().out


def test_global_options_go_before_or_after_the_command_and_errors_follow_json(tmp_path, capsys):
    db = str(tmp_path / "db")
    assert cli.main(["--db", db, "init"]) == 0
    capsys.readouterr()
    assert cli.main(["--json", "--db", db, "status", "3035550110"]) == 0
    assert json.loads(capsys.readouterr().out)["line"] == "+13035550110"
    assert cli.main(["status", "3035550110", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["traces"] == []
    assert cli.main(["--json", "--db", db, "trace", "not-a-line"]) == 2
    out = capsys.readouterr()
    assert json.loads(out.out) == {"error": "not a telephone line: 'not-a-line'", "exit": 2}
    assert out.err == ""
    assert cli.main(["--json", "trace"]) == 2                 # a usage error, in JSON too
    assert "required: line" in json.loads(capsys.readouterr().out)["error"]
    assert cli.main(["trace"]) == 2
    assert capsys.readouterr().err.startswith("cdrtrace: error: the following arguments")


@pytest.mark.parametrize("argv, message", [
    (["--config", "{cfg}", "stats"], "--config names feeds and dialects, which only ingest "
     "and feeds read; `stats` reads the store's own cdrtrace.toml"),
    (["guide", "--config", "{cfg}"], "--config names feeds and dialects, which only ingest "
     "and feeds read; `guide` reads the store's own cdrtrace.toml"),
    (["--config", "{cfg}", "demo"], "--config names feeds and dialects, which only ingest "
     "and feeds read; `demo` reads none"),
    (["--db", "{db}", "demo"], "--db: `demo` builds a store of its own (--keep DIR keeps it)"),
    (["synth", "--out", "{tmp}/x", "--db", "{db}"],
     "--db: `synth` writes CDR files (--out), not a store"),
])
def test_a_global_option_the_command_would_not_read_is_refused(tmp_path, capsys, argv,
                                                               message):
    """Before, it was ignored without a word: a carrier's contacts in a --config that
    `guide` never read, a demo that did not build in --db."""
    db, cfg = str(tmp_path / "db"), tmp_path / "c.toml"
    assert cli.main(["init", "--db", db]) == 0
    cfg.write_text('[carrier]\nname = "Front Range Telephone"\n')
    capsys.readouterr()
    assert cli.main([a.format(db=db, cfg=cfg, tmp=tmp_path) for a in argv]) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", f"cdrtrace: error: {message}\n")
    assert not (tmp_path / "x").exists()
    cfg.write_text('[feeds.a]\nformat = "asterisk"\n')     # the two that read it, still do
    assert cli.main(["feeds", "--config", str(cfg), "--json"]) == 0
    assert [f["feed"] for f in json.loads(capsys.readouterr().out)] == ["a"]
    (tmp_path / "a.csv").write_bytes(cdr() + b"\n")
    assert cli.main(["ingest", str(tmp_path / "a.csv"), "--feed", "a", "--config", str(cfg),
                     "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["indexed"] == 1


def test_import_and_help_load_no_heavy_library():
    """`import cdrtrace` and `cdrtrace --help` load what they need, not numpy, pyarrow,
    DuckDB, LMDB or Kafka (measured: 0.28 s before, 0.04 s after; see BENCHMARKS.md)."""
    heavy = ("numpy", "pyarrow", "duckdb", "lmdb", "confluent_kafka", "fastapi")
    code = ("import sys, contextlib, io\nimport cdrtrace\nfrom cdrtrace import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        cli.main(['--help'])\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    loaded = subprocess.run([sys.executable, "-c", "import cdrtrace, sys; cdrtrace.open; "
                             "print('numpy' in sys.modules)"], capture_output=True, text=True)
    assert loaded.stdout.strip() == "True"          # the API loads on first use


def test_a_command_starts_no_blas_threads(tmp_path):
    """numpy's OpenBLAS would start a thread per core that spins for about 0.1 s of CPU;
    a command's process has only its own threads (the command sets it to one, unless
    the user said otherwise)."""
    code = ("import os, sys\nfrom cdrtrace import cli\n"
            "assert cli.main(['init', '--db', sys.argv[1]]) == 0\n"
            "import numpy\nprint(len(os.listdir('/proc/self/task')))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "1", out.stdout


def test_an_ingest_without_an_archive_loads_neither_arrow_nor_duckdb(tmp_path):
    """The batch ingest's process loads what it uses: no Arrow (about 30 ms) unless it
    archives, no DuckDB, no asyncio."""
    source = cdr_file(tmp_path, cdr(dst="3035550101"), cdr(dst="3035550102"))
    code = ("import sys, cdrtrace\ns = cdrtrace.open(sys.argv[1], create=True)\n"
            "cdrtrace.ingest(s, [sys.argv[2]])\n"
            "print(sorted(m for m in ('pyarrow', 'duckdb', 'asyncio') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s"), source],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_call_archive_named_on_the_command_line_is_the_stores(tmp_path):
    """README: `ingest --archive DIR`, then `report calls`. The archive an ingest names
    becomes the store's (reports, the timeline, the case report and purge's retention read
    it, in a process that had the store open already too), a store may be made with one
    (`init --archive`), and a second, other archive is refused: its calls would escape the
    reports and the archive's retention."""
    import cdrtrace

    db, archive = str(tmp_path / "db"), tmp_path / "archive"
    path = cdr_file(tmp_path, cdr(src="7205550666", disposition="NO ANSWER"))
    assert run("init", "--db", db)[0] == 0
    serving = cdrtrace.open(db)                   # open before, as `serve` would be
    assert run("ingest", path, "--db", db, "--archive", str(archive))[0] == 0
    code, out, err = run("report", "calls", "--line", "303-555-0110", "--analyst", "ann",
                         "--db", db, "--json")
    assert code == 0, err
    assert [(r["calling"], r["disposition"]) for r in json.loads(out)] == [
        ("+17205550666", "no_answer")]
    assert len(serving.archived_calls("3035550110", analyst="ann")) == 1
    serving.close()
    other = str(tmp_path / "elsewhere")
    code, _, err = run("ingest", path, "--db", db, "--archive", other, "--force")
    assert code == 2 and f"this store's call archive is {archive}" in err and other in err
    assert not os.path.exists(other)
    assert run("ingest", path, "--db", db, "--archive", str(archive) + "/", "--force")[0] == 0
    os.symlink(archive, tmp_path / "link")                             # the same folder
    assert run("ingest", path, "--db", db, "--archive", str(tmp_path / "link"), "--force")[0] == 0
    made = str(tmp_path / "made")
    code, out, err = run("init", "--db", made, "--archive", str(tmp_path / "a2"),
                         "--retention-days", "30", "--archive-retention-days", "7", "--json")
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["archive_dir"], config["retention_days"], config["archive_retention_days"]) == (
        str(tmp_path / "a2"), 30, 7)
    assert run("ingest", path, "--db", made)[0] == 0                # into the store's archive
    assert (tmp_path / "a2").is_dir()
    code, _, err = run("init", "--db", made, "--retention-days", "31")
    assert code == 2 and "retention_days 30" in err
    assert run("init", "--db", str(tmp_path / "bad"), "--retention-days", "0")[0] == 2
    (tmp_path / "a-file").write_text("")
    for given, why in ((str(tmp_path / "a-file"), "it is not a folder"), ("", "it was empty"),
                       (str(tmp_path / "a-file" / "below"), "cannot be the folder")):
        code, _, err = run("init", "--db", str(tmp_path / "bad"), "--archive", given)
        assert code == 2 and why in err, err
        assert not (tmp_path / "bad").exists()                # refused before the store
        with pytest.raises(cdrtrace.StoreError, match=why):
            cdrtrace.open(tmp_path / "bad", create=True, archive_dir=given or " ")


def test_the_readmes_cic_commands_run_as_written(tmp_path):
    """The README's "Call Identification Center" block, command for command (paths moved
    under the test's folder, the optional [--waive ...] left out), on a store where a line
    has three traced calls from one caller: each command exits 0, and the last, the calls
    report over the archive the block's ingest named, lists that ingest's calls."""
    import datetime as dt
    import re

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = readme.split("## Call Identification Center")[1].split("```sh")[1].split("```")[0]
    block = re.sub(r"\s*\[[^\]]*\]", "", block.replace("\\\n", " "))
    commands = [c.split("  #")[0].strip() for c in block.strip().splitlines()
                if c.strip() and not c.startswith("#")]
    env = {"CDRTRACE_DB": str(tmp_path / "store")}
    day = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)

    def calls(*hours):
        return [cdr(src="7205550666", dst="3035550110", disposition="NO ANSWER",
                    start=(day + dt.timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S"),
                    end=(day + dt.timedelta(hours=h, seconds=20)).strftime("%Y-%m-%d %H:%M:%S"),
                    uniqueid=f"u{h}") for h in hours]
    assert run("init", env=env)[0] == 0
    assert run("ingest", cdr_file(tmp_path, *calls(0, 1, 2), name="earlier.csv"), env=env)[0] == 0
    for h in (0, 1, 2):
        at = (day + dt.timedelta(hours=h, minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert run("trace", "303-555-0110", "--at", at, env=env)[0] == 0
    (tmp_path / "subscribers.csv").write_text(
        "number,name,address,served\n+17205550666,Pat Doe,1 Elm St,true\n")
    cdr_file(tmp_path, *calls(3, 4), name="Master.csv")
    (tmp_path / "log").mkdir()
    for command in commands:
        command = command.replace("/var/log/cdrtrace", str(tmp_path / "log")).replace(
            "/srv/cdr-archive", str(tmp_path / "archive"))
        argv = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', command)]
        assert argv[0] == "cdrtrace", command
        proc = subprocess.run([sys.executable, "-m", "cdrtrace.cli", *argv[1:]], cwd=tmp_path,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, **env})
        assert proc.returncode == 0, (command, proc.stderr)
    assert argv[1:3] == ["report", "calls"]
    assert proc.stdout.count("+17205550666") == 2 and "no_answer" in proc.stdout
