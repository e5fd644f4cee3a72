"""The README's stream tables are the declaration's, rendered (and list every stream)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.stream_docs import (
    TABLES,
    generated_names,
    partitions_table,
    render,
    streams_table,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_tables_are_rendered_from_the_declaration():
    text = README.read_text(encoding="utf-8")
    assert sorted(generated_names(text)) == sorted(TABLES)
    assert render(text) == text, "run: python -m kommo_dagster.stream_docs README.md"


@pytest.mark.parametrize("table", [streams_table, partitions_table])
def test_every_stream_is_in_the_table(table):
    text = table()
    for name in STREAMS:
        assert f"kommo.{name}`" in text or f"kommo/{name}`" in text, name


def test_an_unknown_generated_block_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        render("<!-- generated:nope -->\nold\n<!-- /generated -->")
