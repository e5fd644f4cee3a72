"""Tables: selections, their cache, and the with= fields appended at serve time."""

from __future__ import annotations

import numpy as np
import orjson

from kommo_dagster.sandbox.store import DELETED, LIVE, Selection, Table


def _table() -> Table:
    t = Table("things", int_cols=("id", "updated_at"), with_fields=("extra",))
    records = [{"id": 10 + i, "updated_at": 100 + (i % 3), "name": f"n{i}"} for i in range(9)]
    t.load(records, states=[LIVE] * 8 + [DELETED])
    t.with_values["extra"] = list(range(9))
    return t


def test_select_filters_orders_and_breaks_ties_by_id():
    t = _table()
    rows = t.select(Selection(ranges=(("updated_at", 101, 102),), order=("updated_at", False)))
    assert [t.ids[r] for r in rows] == [11, 14, 17, 12, 15]
    desc = t.select(Selection(order=("updated_at", True)))
    assert [t.ids[r] for r in desc] == [15, 12, 17, 14, 11, 16, 13, 10]
    only = t.select(Selection(lists=(("id", (12, 99)),)))
    assert [t.ids[r] for r in only] == [12]
    assert [t.ids[r] for r in t.select(Selection(state=DELETED))] == [18]


def test_a_change_invalidates_cached_selections():
    t = _table()
    sel = Selection(order=("updated_at", False))
    first = t.select(sel)
    assert t.select(sel) is first
    rec = t.record(0)
    rec["updated_at"] = 500
    t.replace(0, rec)
    assert [t.ids[r] for r in t.select(sel)][-1] == 10


def test_with_fields_are_added_only_when_asked():
    t = _table()
    rows = np.array([0, 1])
    plain = [orjson.loads(b) for b in t.bodies_of(rows)]
    assert all("extra" not in r for r in plain)
    extra = [orjson.loads(b) for b in t.bodies_of(rows, with_fields=("extra",))]
    assert [r["extra"] for r in extra] == [0, 1]
    assert t.record(1, with_fields=("extra",))["extra"] == 1


def test_append_grows_every_column():
    t = _table()
    row = t.append({"id": 99, "updated_at": 7}, with_values={"extra": "x"})
    assert t.row_of[99] == row == 9
    assert t.cols["updated_at"][row] == 7 and t.with_values["extra"][row] == "x"
    assert t.ids[t.select(Selection(order=("updated_at", False)))[0]] == 99
