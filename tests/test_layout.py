"""The code's shape: modules and classes a newcomer can hold in their head, and imports
that follow the data (parsing -> ingestion -> store -> evidence -> reports)."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "engine" / "cdrtrace"
MODULES = sorted(PACKAGE.rglob("*.py"))
# what each layer may import from the package (beyond itself, errors and config)
LAYERS = ["parsing", "ingestion", "store", "evidence", "reports"]
ALLOWED = {
    "parsing": set(),
    "store": {"parsing"},
    "ingestion": {"parsing", "store"},
    "evidence": {"parsing", "store"},
    "reports": {"parsing", "store", "evidence"},
}


def test_the_package_has_its_modules():
    assert len(MODULES) > 30 and (PACKAGE / "api.py") in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_500_lines_and_no_class_over_300(path):
    source = path.read_text()
    assert source.count("\n") <= 500, f"{path.name}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= 300, f"class {node.name}: {size} lines"


def imported_layers(path: pathlib.Path) -> set[str]:
    """The package's top-level parts a module imports (relative imports resolved)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:-1])[:len(parts) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            names = [target] if node.module else [target + [a.name] for a in node.names]
            found.update(t[0] for t in names if t)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cdrtrace."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_follow_the_data(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        upstream = imported_layers(path) - {layer, "errors", "config"}
        assert upstream <= ALLOWED[layer], (
            f"{path.relative_to(PACKAGE)} imports {sorted(upstream - ALLOWED[layer])}")


def test_the_import_check_sees_a_reversed_import(tmp_path, monkeypatch):
    (tmp_path / "parsing").mkdir()
    bad = tmp_path / "parsing" / "bad.py"
    bad.write_text("from ..evidence import traces\nfrom . import numbers\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert imported_layers(bad) == {"evidence", "parsing"}
