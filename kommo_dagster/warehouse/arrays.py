"""A batch of contract columns typed as the contract says, before DuckDB sees it: a value of
the wrong kind fails here, naming its column, instead of being coerced."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where used: pandas costs a run's start-up half a second and only DataFrames
    # (child streams' parents, user assets) need it; NumPy, PyArrow and the client's decoding
    # (`kommo.columns`) are only needed once batches arrive, not when the definitions load.
    import numpy as np
    import pandas as pd
    import pyarrow as pa

from kommo_dagster.kommo.streams import Stream
from kommo_dagster.warehouse.errors import WarehouseError


def typed_arrays(stream: Stream, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """NumPy arrays of the contract's columns, in contract order, with types that cannot drift.

    integer -> int64, boolean -> bool, each a masked array when it holds NULLs (never float);
    string -> object holding ``str`` or ``None``. ``columns`` is the output of
    `kommo_dagster.kommo.records.to_columns`: exactly the stream's columns. DuckDB scans such a
    dict directly (no DataFrame in between), NULLs taken from the masks.
    """

    names = stream.column_names
    if set(columns) != set(names):
        missing = [n for n in names if n not in columns]
        extra = [n for n in columns if n not in names]
        raise WarehouseError(
            f"{stream.name}: batch columns differ from the contract "
            f"(missing {missing}, unexpected {extra})"
        )
    lengths = {len(columns[n]) for n in names}
    if len(lengths) > 1:
        raise WarehouseError(f"{stream.name}: batch columns have different lengths {lengths}")
    return {c.name: _typed_array(c.type, columns[c.name], c.name) for c in stream.columns}


def typed_frame(stream: Stream, columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """`typed_arrays` as a DataFrame: masked columns become pandas ``Int64`` / ``boolean``."""
    import pandas as pd

    data = {name: _masked_to_pandas(array) for name, array in typed_arrays(stream, columns).items()}
    return pd.DataFrame(data, columns=list(stream.column_names), copy=False)


def _masked_to_pandas(array: np.ndarray) -> Any:
    import numpy as np
    import pandas as pd

    if not isinstance(array, np.ma.MaskedArray):
        return array
    mask = np.ma.getmaskarray(array)
    data = array.data
    return (
        pd.arrays.BooleanArray(data, mask)
        if data.dtype == np.bool_
        else pd.arrays.IntegerArray(data, mask)
    )


_NONE = type(None)


def _typed_array(kind: str, values: Sequence[Any], name: str) -> np.ndarray:
    import numpy as np

    # One pass over the types picks the path: numpy for columns without NULLs, a mask built by
    # numpy for int/bool columns with NULLs, and pandas' checked conversion for anything
    # unusual, which refuses lossy casts.
    kinds = set(map(type, values))
    if kind == "string":
        if not kinds <= {str, _NONE}:
            raise WarehouseError(
                f"column {name!r} (string) holds {sorted(k.__name__ for k in kinds)}"
            )
        return np.array(values, dtype=object)
    scalar, dtype = (int, np.int64) if kind == "integer" else (bool, np.bool_)
    try:
        if kinds <= {scalar}:
            return np.array(values, dtype=dtype)
        if kinds <= {scalar, _NONE}:
            objects = np.array(values, dtype=object)
            mask = np.equal(objects, None)
            objects[mask] = 0
            return np.ma.MaskedArray(objects.astype(dtype), mask)
        if kind == "integer" and bool in kinds:
            raise TypeError("a boolean is not an integer")
        import pandas as pd

        checked = pd.array(values, dtype="Int64" if kind == "integer" else "boolean")
        mask = np.asarray(checked.isna())
        return np.ma.MaskedArray(checked.to_numpy(dtype=dtype, na_value=0), mask)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WarehouseError(
            f"column {name!r} ({kind}) holds a value that is not {kind}: {exc}"
        ) from exc


def arrow_contract_table(stream: Stream, table: pa.Table) -> pa.Table:
    """The table, if its columns are the contract's, in order, with the contract's types."""
    from kommo_dagster.kommo.columns import arrow_schema

    expected = arrow_schema(stream)
    if not table.schema.equals(expected):
        raise WarehouseError(
            f"{stream.name}: batch columns differ from the contract (got {table.schema.names} "
            f"typed {[str(t) for t in table.schema.types]}, expected {expected.names} typed "
            f"{[str(t) for t in expected.types]})"
        )
    return table


def cursor_values(
    columns: Mapping[str, Sequence[Any]] | pa.Table, cursor: str
) -> tuple[np.ndarray, int]:
    """The batch's non-null cursor values and how many were null."""
    import numpy as np
    import pyarrow as pa

    if isinstance(columns, pa.Table):
        values = columns.column(cursor)
        return values.drop_null().to_numpy().astype(np.int64, copy=False), values.null_count
    present = [v for v in columns[cursor] if v is not None]
    return np.array(present, dtype=np.int64), len(columns[cursor]) - len(present)


__all__ = [
    "typed_arrays",
    "typed_frame",
]
