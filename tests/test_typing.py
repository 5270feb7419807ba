"""The package's types hold: mypy on engine/cdrtrace at the strictness pyproject.toml
keeps, and stubtest on the native modules' stubs (and every module against its source)."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*argv, tmp_path):
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_mypy_is_clean(tmp_path):
    out = run("mypy", "--cache-dir", str(tmp_path / "cache"), tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_stubtest_accepts_the_stubs(tmp_path):
    out = run("mypy.stubtest", "--mypy-config-file", "pyproject.toml", "--allowlist",
              ".ci/stubtest-allowlist.txt", "--concise", "cdrtrace", tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr

