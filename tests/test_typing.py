"""The package's types hold: mypy on engine/cdrtrace at the strictness pyproject.toml
keeps, and stubtest on the native modules' stubs (and every module against its source).

Both checks start together when the first of them runs: each is a process of its own
that uses one core, so the two take as long as the longer, not as both."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """{name: the running check's process}, started together; killed if left running."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    argv = {
        "mypy": ["mypy", "--cache-dir", str(cache)],
        "stubtest": ["mypy.stubtest", "--mypy-config-file", "pyproject.toml", "--allowlist",
                     ".ci/stubtest-allowlist.txt", "--concise", "cdrtrace"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, args in argv.items()}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finished(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def test_mypy_is_clean(checks):
    code, out = finished(checks["mypy"])
    assert code == 0, out


def test_stubtest_accepts_the_stubs(checks):
    code, out = finished(checks["stubtest"])
    assert code == 0, out
