"""The generated account as a whole: deterministic, holding every contract column, sized by its
scale, and in either flavour."""

from __future__ import annotations

from typing import Any

import pytest

from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster_tests.sandbox.conftest import generated_account as _account
from kommo_dagster_tests.sandbox.conftest import held


def test_same_seed_and_scale_give_the_same_bytes_and_another_seed_does_not():
    a, b, c = _account(seed=7), _account(seed=7), _account(seed=8)
    for name, table in a.tables.items():
        assert table.bodies == b.tables[name].bodies, name
        assert table.bodies != c.tables[name].bodies, name
    assert a.catalog.users == b.catalog.users


# Kommo serves a tag without a colour with color null or without the key at all
# (sandbox/catalog_build.py makes both): the one column whose key a record may lack.
_KEY_MAY_BE_ABSENT = {(name, "color") for name in STREAMS if name.endswith("_tags")}


def _has_path(record: Any, path: tuple[str | int, ...]) -> bool:
    """Whether ``path`` (keys, list indexes) leads to a value in ``record``, null or not."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(record, list) or len(record) <= step:
                return False
        elif not isinstance(record, dict) or step not in record:
            return False
        record = record[step]
    return True


@pytest.mark.parametrize("stream", STREAMS)
def test_every_contract_column_exists_in_the_records(account, stream):
    """Every record of every declared stream has each column's top-level key, and some record
    has the column's whole source path (the first contact of an inbox entry, a task's result
    text), so extraction reads every column from the sandbox."""
    records = account.records(stream)
    assert records, stream
    for col in STREAMS[stream].columns:
        if (stream, col.name) not in _KEY_MAY_BE_ABSENT:
            assert all(col.source[0] in r for r in records), (stream, col.name)
        assert any(_has_path(r, col.source) for r in records), (stream, col.name, col.source)


def test_statuses_have_conditions_and_users_rights_objects(account):
    statuses = account.records("statuses")
    assert any(s["conditions"] for s in statuses) and any(s["conditions"] == [] for s in statuses)
    users = account.records("users")
    assert any(u["rights"]["is_admin"] for u in users)
    assert any(not u["rights"]["is_active"] for u in users)
    assert "" in {u["name"] for u in users}


def test_scale_sets_the_number_of_leads_and_users():
    acc = _account(leads=40, users=3)
    assert len(acc.tables["leads"]) == 40
    assert len(acc.catalog.users) == 3
    assert len(_account(leads=0).tables["leads"]) == 0


def test_an_amocrm_flavoured_account_speaks_russian():
    """The "amocrm" flavour: Russian names, .ru and .рф domains, Russian-speaking users; the messy
    strings stay, and the same seed in the "kommo" flavour is the international account."""
    amocrm = _account(leads=60, flavour="amocrm")
    words = texts.WORDS["amocrm"]
    ordinary = [u["name"] for u in amocrm.records("users") if u["name"] and not u["name"].isascii()]
    assert {u["lang"] for u in amocrm.records("users")} == {"ru"}
    assert all(u["email"].endswith(words.email_domains) for u in amocrm.records("users"))
    leads = [r["name"] for r in held(amocrm, "leads")]
    plain = [n for n in leads if n not in texts.MESSY_NAMES]
    assert plain and all(n.split(" #")[0] in words.lead_words for n in plain)
    assert all(
        first in words.first_names
        for first in (n.split()[0] for n in ordinary if n not in texts.MESSY_NAMES)
        if not first.isascii() and first not in {"Администратор", "Robô", "José"}
    )
    international = _account(leads=60)
    assert [r["name"] for r in held(international, "leads")] != leads
    with pytest.raises(ValueError, match="flavour must be one of"):
        SandboxConfig(flavour="bitrix")
