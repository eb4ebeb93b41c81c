"""The test suite's own layout (issue 14 item 10): benchmarks import no test code (tests may
import benchmarks: the hostile-request machinery lives in benchmarks/hostile.py), and
tests/conftest.py holds fixtures only, the plain helpers living in tests/helpers.py."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_benchmarks_import_no_test_code():
    bad = {f"{p.relative_to(ROOT)}: {m}"
           for p in sorted((ROOT / "benchmarks").glob("*.py"))
           for m in _imported_modules(p) if m == "tests" or m.startswith("tests.")}
    assert not bad, sorted(bad)


def test_conftest_defines_only_fixtures():
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    plain = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if not any(d.startswith("pytest.fixture") for d in decorators):
                plain.append(node.name)
    assert not plain, f"move these to tests/helpers.py: {plain}"
