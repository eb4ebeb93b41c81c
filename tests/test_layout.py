"""Imports go one way: client_sdk -> learnware_core -> protocol, and market_server ->
learnware_core, protocol; the client and the market never import each other."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"protocol": {"client_sdk", "market_server", "learnware_core"},
             "learnware_core": {"client_sdk", "market_server"},
             "client_sdk": {"market_server"}, "market_server": {"client_sdk"}}


def _imported_roots(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                in ("import_module", "__import__") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            yield node.lineno, node.args[0].value.split(".")[0]


def test_import_direction():
    bad = []
    for pkg, forbidden in FORBIDDEN.items():
        files = list((ROOT / pkg).rglob("*.py"))
        assert files, f"package {pkg} has no modules"
        for f in files:
            for line, root in _imported_roots(f):
                if root in forbidden:
                    bad.append(f"{f.relative_to(ROOT)}:{line} imports {root}")
    assert not bad, ("imports must go client_sdk -> learnware_core -> protocol <- market_server:\n"
                     + "\n".join(bad))
