"""The packaged contract is the shared one, and the stream declaration follows it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kommo_dagster.contract import contract_columns, load_contract
from kommo_dagster.kommo.streams import STREAMS

SHARED_CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "kommo_streams.json"


@pytest.mark.skipif(not SHARED_CONTRACT.exists(), reason="no shared contract beside this clone")
def test_packaged_contract_is_the_shared_one():
    assert load_contract() == json.loads(SHARED_CONTRACT.read_text(encoding="utf-8"))


def test_every_contract_stream_is_declared_in_contract_order():
    contract = load_contract()["streams"]
    assert list(STREAMS) == list(contract)
    for name, stream in STREAMS.items():
        spec = contract[name]
        assert stream.sync == spec["sync"]
        assert stream.cursor == spec["cursor"]
        assert [(c.name, c.type) for c in stream.columns] == [
            (c["name"], c["type"]) for c in contract_columns(name)
        ]


@pytest.mark.parametrize("name", list(STREAMS))
def test_json_columns_are_the_ones_the_contract_calls_json(name):
    stream = STREAMS[name]
    described_json = {c["name"] for c in contract_columns(name) if "(JSON)" in c["description"]}
    assert {c.name for c in stream.columns if c.is_json} == described_json


def test_page_sizes_are_kommos_maxima():
    assert {n: s.page_size for n, s in STREAMS.items()} == {
        "leads": 250,
        "contacts": 250,
        "companies": 250,
        "pipelines": None,
        "statuses": None,
        "tasks": 250,
        "events": 100,
        "users": 250,
    }
