"""Whatever the command line or the configuration says, `cdrtrace` answers with exit 0 or
2 and at most one line of error: never a traceback, never an internal error (70)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdrtrace import cli

SAMPLE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "data", "samples",
                                      "asterisk", "Master.csv"))
# CI runs a fixed set (derandomized: the same examples every run, so it cannot flake);
# CDRTRACE_FUZZ_EXAMPLES=5000 explores fresh ones.
EXAMPLES = int(os.environ.get("CDRTRACE_FUZZ_EXAMPLES", "0"))
FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture],
        "derandomize": not EXAMPLES}
WEIRD = ["", " ", "nan", "inf", "-inf", "-5", "0", "1e7", "1e400", "99999999999999999999",
         "2300-01-01T00:00:00Z", "1969-12-31", "garbage", "3035550110", "+1 303 555 0110",
         "Caller A", "C000001", "T00000001", "\u200b", "a\nb", "\udcff\udcfe", "é", "'", "\"",
         "day=garbage", "/nonexistent/x", "{tmp}", "{tmp}/file", "{tmp}/new", "../..",
         "subpoena", "UTC", "Mars/Base", "asterisk", "cucm", "auto", "syslog", "x" * 300]
VALUES = st.one_of(st.sampled_from(WEIRD), st.text(max_size=8))
COMMANDS = {
    "init": ["--tz", "--country-code", "--audit-key", "--audit-checkpoints"],
    "trace": ["--at", "--wait"],
    "status": [],
    "last-calls": ["--analyst"],
    "stats": [],
    "feeds": [],
    "disclose": ["--trace", "--line", "--kind", "--reference", "--agency", "--officer",
                 "--case-number", "--analyst"],
    "case": ["--origin", "--agency", "--officer", "--case-number", "--analyst", "--waive"],
    "purge": ["--older-than", "--operator"],
    "audit": ["--out", "--operator", "--checkpoint", "--to"],
    "report": ["--line", "--origin", "--analyst", "--days", "--min-calls", "--min-lines"],
    "synth": ["--start", "--days", "--tz", "--format", "--seed", "--legs", "--unreadable"],
    "ingest": ["--format", "--tz", "--country-code", "--rejects", "--archive", "--feed"],
}
POSITIONAL = {"trace": [VALUES], "status": [VALUES], "last-calls": [VALUES],
              "case": [st.sampled_from(["open", "show", "list"]), VALUES],
              "audit": [st.sampled_from(["verify", "export", "checkpoint"])],
              "report": [st.sampled_from(["repeat-origins", "hot-origins", "timeline", "calls"])],
              "ingest": [st.sampled_from([SAMPLE, "{tmp}", "{tmp}/file", "{tmp}/missing.csv"])]}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [command] + [draw(s) for s in POSITIONAL.get(command, [])]
    options = COMMANDS[command]
    for option in draw(st.lists(st.sampled_from(options), max_size=4, unique=True)) if options else ():
        argv += [option, draw(VALUES)]
    if command == "synth":
        argv += ["--calls", "50", "--lines", "20", "--out", "{tmp}/synth.csv"]
    if draw(st.booleans()):
        argv.insert(draw(st.sampled_from([0, len(argv)])), "--json")
    return argv + ["--db", "{tmp}/db"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "file").write_text("not a CDR\n")
    (tmp / "cwd").mkdir()
    assert cli.main(["init", "--db", str(tmp / "db")]) == 0
    assert cli.main(["ingest", SAMPLE, "--db", str(tmp / "db")]) == 0
    return tmp


def run(argv, tmp, capsys):
    here = os.getcwd()
    os.chdir(tmp / "cwd")              # relative paths it writes land in the scratch folder
    try:
        code = cli.main([a.replace("{tmp}", str(tmp)) for a in argv])
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    assert code in (0, 2), (argv, code, out.err or out.out)
    assert "Traceback" not in out.out + out.err
    if code == 2:
        message = out.out if "--json" in argv else out.err
        assert message.count("\n") == 1, message
        if "--json" in argv:
            assert json.loads(message)["exit"] == 2


@settings(max_examples=EXAMPLES or 300, **FUZZ)
@given(argv=command_lines())
def test_any_command_line_exits_0_or_2_without_a_traceback(scratch, capsys, argv):
    run(argv, scratch, capsys)


CONFIG_KEYS = ["format", "zone", "country_code", "served", "min_ring_seconds",
               "cdr_delay_seconds", "columns", "base", "delimiter", "quote", "header", "time",
               "dispositions", "presentations", "fields", "min_columns"]
TOML_VALUES = st.recursive(
    st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False), st.booleans(),
              st.sampled_from(WEIRD[:30]), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(CONFIG_KEYS), inner, max_size=3)),
    max_leaves=6)


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value).replace("Infinity", "inf")


@settings(max_examples=EXAMPLES or 150, **FUZZ)
@given(section=st.sampled_from(["feeds", "dialects"]),
       spec=st.dictionaries(st.sampled_from(CONFIG_KEYS), TOML_VALUES, max_size=5))
def test_any_configuration_value_exits_0_or_2_without_a_traceback(scratch, capsys, section, spec):
    folder = scratch / "config"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    body = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in spec.items())
    (folder / "cdrtrace.toml").write_text(f"[{section}.a]\n{body}\n", encoding="utf-8",
                                          errors="surrogateescape")
    config = str(folder / "cdrtrace.toml")
    run(["feeds", "--config", config], scratch, capsys)
    run(["ingest", SAMPLE, "--feed", "a", "--config", config, "--force"], scratch, capsys)
