"""The table contract: the columns and types every stream must land with.

`kommo_streams.json` (the first eight streams), `kommo_extra_streams.json` (the streams around
them), `kommo_activity_streams.json` (conversation and activity tables) and
`kommo_link_streams.json` (the links between records) are verbatim copies of the project's
contract files, shipped inside the package so that an installed copy (or a clone without the
shared folder beside it) carries them. Both the client
side (`kommo_dagster.kommo.streams`) and the sandbox read them from here, and nothing else: they
are the only thing the two share, so each one checks the other.

Entries with ``derived_from`` are tables built from another stream's table without a request to
Kommo; they are part of the contract, but not streams the client extracts.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

CONTRACT_FILE = "kommo_streams.json"
EXTRA_CONTRACT_FILE = "kommo_extra_streams.json"
ACTIVITY_CONTRACT_FILE = "kommo_activity_streams.json"
# In this order: the declaration order of the streams follows it.
CONTRACT_FILES = (CONTRACT_FILE, EXTRA_CONTRACT_FILE, ACTIVITY_CONTRACT_FILE)
# The link tables: rows taken from their parent stream's pages, not streams of their own
# (`kommo_dagster.kommo.links` reads them with `link_contract`).
LINK_CONTRACT_FILE = "kommo_link_streams.json"
PACKAGED_FILES = (*CONTRACT_FILES, LINK_CONTRACT_FILE)


@cache
def load_contract(file: str = CONTRACT_FILE) -> dict[str, Any]:
    """One parsed contract file: ``{"about": ..., "streams": {name: {...}}}``."""
    text = resources.files(__package__).joinpath(file).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def contract_streams() -> dict[str, dict[str, Any]]:
    """Every table of every contract file by name, in file order."""
    streams: dict[str, dict[str, Any]] = {}
    for file in CONTRACT_FILES:
        for name, spec in load_contract(file)["streams"].items():
            if name in streams:
                raise RuntimeError(f"the contract declares {name!r} twice (again in {file})")
            streams[name] = spec
    return streams


def link_contract() -> dict[str, dict[str, Any]]:
    """The link tables (``kommo_link_streams.json``) by name, in file order."""
    return load_contract(LINK_CONTRACT_FILE)["streams"]


def contract_columns(stream: str) -> list[dict[str, str]]:
    """The ordered column list (name, type, description) of one table."""
    return contract_streams()[stream]["columns"]
