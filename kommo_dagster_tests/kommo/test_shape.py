"""The client stays in small pieces: no function in kommo/ reaches 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import kommo_dagster.kommo

LONGEST = 60


def test_no_function_of_the_client_reaches_sixty_lines():
    package = Path(kommo_dagster.kommo.__file__).parent
    lengths = {
        f"{path.relative_to(package)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
    }
    too_long = {name: n for name, n in lengths.items() if n >= LONGEST}
    assert len(lengths) > 100 and not too_long
    # walks/ too: the paging is where functions grow
    assert any(name.startswith("walks/keyset.py:") for name in lengths)
