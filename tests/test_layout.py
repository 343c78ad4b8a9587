"""The package keeps its shape (docs/architecture.md): few modules at the top, no oversized module, every layer says
what it is for. The layer contract and the no-cycle rule are checked by ``lint-imports`` (pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deploykit"
MAX_TOP_MODULES = 8
MAX_MODULE_LINES = 600


def test_few_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_no_module_is_oversized():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES} == {}


def test_every_layer_says_what_it_is_for_and_imports_nothing():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        doc = ast.get_docstring(tree)
        assert doc and "import" in doc.lower(), f"{init}: the docstring says what the layer may import"
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], \
            f"{init}: a layer's __init__ imports nothing (re-exports would hide where things live)"
