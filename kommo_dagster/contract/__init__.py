"""The table contract: the columns and types every stream must land with.

`kommo_streams.json` is a verbatim copy of the project's contract, shipped inside the package so
that an installed copy (or a clone without the shared folder beside it) carries it. Both the client
side (`kommo_dagster.kommo.streams`) and the sandbox read it from here, and nothing else: it is the
only thing they share, so each one checks the other.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

CONTRACT_FILE = "kommo_streams.json"


@cache
def load_contract() -> dict[str, Any]:
    """The parsed contract: ``{"about": ..., "streams": {name: {...}}}``."""
    text = resources.files(__package__).joinpath(CONTRACT_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def contract_columns(stream: str) -> list[dict[str, str]]:
    """The ordered column list (name, type, description) of one stream."""
    return load_contract()["streams"][stream]["columns"]
