"""Typed batches: a value of the wrong kind fails, naming its column, instead of being
coerced."""

from __future__ import annotations

import pandas as pd
import pytest

from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.arrays import typed_frame
from kommo_dagster.warehouse.errors import WarehouseError
from kommo_dagster_tests.rows import synthetic_columns

LEADS = get_stream("leads")


def test_typed_frame_refuses_lossy_and_misshapen_batches():
    columns = synthetic_columns(LEADS, 3)
    with pytest.raises(WarehouseError, match="price"):
        typed_frame(LEADS, columns | {"price": [1, 2.5, None]})
    with pytest.raises(WarehouseError, match="boolean is not an integer"):
        typed_frame(LEADS, columns | {"price": [1, True, None]})
    with pytest.raises(WarehouseError, match="price"):
        typed_frame(LEADS, columns | {"price": [1, 2**63, None]})
    with pytest.raises(WarehouseError, match="is_deleted"):
        typed_frame(LEADS, columns | {"is_deleted": [True, 1, None]})
    with pytest.raises(WarehouseError, match="name"):
        typed_frame(LEADS, columns | {"name": ["a", 5, None]})
    # integral values of other integer types are taken as they are
    frame = typed_frame(LEADS, columns | {"price": [1, 2.0, None]})
    assert frame["price"].tolist() == [1, 2, pd.NA]
    with pytest.raises(WarehouseError, match="missing"):
        typed_frame(LEADS, {k: v for k, v in columns.items() if k != "tags"})
    with pytest.raises(WarehouseError, match="unexpected"):
        typed_frame(LEADS, columns | {"extra": [1, 2, 3]})
    with pytest.raises(WarehouseError, match="lengths"):
        typed_frame(LEADS, columns | {"price": [1]})
