"""Records of one stream, serialised once, and the filtered, ordered selections pages are cut from.

Each record is held as the exact bytes Kommo would send (orjson, once), so a page is a slice of a
row array and a byte join. The numeric values that filters and orders read (updated_at, ids, event
types...) live in numpy columns. A selection (filters + order) is computed once per table version
and cached, so the pages after the first cost a slice; any change to the table bumps the version,
which is what makes offset paging see rows shift while the account churns.

Not thread-safe by itself: `account.Account.lock` guards every table.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

LIVE, DELETED, GONE = 0, 1, 2
NULL_INT = np.iinfo(np.int64).min
_CACHE_SIZE = 64


class AccountParts(Protocol):
    """What the account's parts (its links, its inbox) read of `account.Account`, which builds
    them: named by shape, since importing it from them would be a cycle."""

    seed: Any
    catalog: Any
    tables: Any
    lock: Any
    links: Any
    inbox: Any


@dataclass(frozen=True)
class Selection:
    """What a list request asks for, in a hashable form.

    ranges: (column, lo, hi) inclusive; lists: (column, values) where values are already codes
    for code columns; order: (column, descending) or None for the table's default order.
    """

    state: int = LIVE
    ranges: tuple[tuple[str, int, int], ...] = ()
    lists: tuple[tuple[str, tuple[int, ...]], ...] = ()
    order: tuple[str, bool] | None = None


class Table:
    """One stream's records: bytes per row plus numpy columns for filters and orders.

    `int_cols` are read from the record's top-level keys (None stored as NULL_INT); `code_cols`
    are strings mapped to small integer codes. `with_fields` are values served only when a
    request's `with=` names them (leads' source_id and is_price_modified_by_robot); they are
    appended to the record's bytes at serve time rather than stored twice.
    """

    def __init__(
        self,
        name: str,
        *,
        int_cols: Sequence[str],
        code_cols: Sequence[str] = (),
        with_fields: Sequence[str] = (),
        id_key: str = "id",
        default_order: tuple[str, bool] | None = None,
    ) -> None:
        self.name = name
        self.int_cols = tuple(int_cols)
        self.code_cols = tuple(code_cols)
        self.with_fields = tuple(with_fields)
        self.id_key = id_key
        self.default_order = default_order
        self.bodies: list[bytes] = []
        self.ids: list[Any] = []
        self.row_of: dict[Any, int] = {}
        self.cols: dict[str, np.ndarray] = {
            c: np.empty(0, np.int64) for c in (*self.int_cols, *self.code_cols)
        }
        self.state = np.empty(0, np.int8)
        self.codes: dict[str, dict[str, int]] = {c: {} for c in self.code_cols}
        self.with_values: dict[str, list[Any]] = {f: [] for f in self.with_fields}
        self.version = 0
        self._cache: OrderedDict[tuple[int, Selection], np.ndarray] = OrderedDict()

    # --- building and changing ----------------------------------------------------------------

    def _code(self, col: str, value: Any) -> int:
        if value is None:
            return -1
        vocab = self.codes[col]
        code = vocab.get(value)
        if code is None:
            code = vocab[value] = len(vocab)
        return code

    def _int(self, value: Any) -> int:
        if value is None:
            return NULL_INT
        return int(value)

    def load(
        self,
        records: Iterable[dict[str, Any]],
        *,
        states: Sequence[int] | np.ndarray,
        with_values: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """Bulk-load records (in id order); the table must be empty."""
        assert not self.bodies, "load() fills an empty table"
        dumps = orjson.dumps
        keys = (*self.int_cols, *self.code_cols)
        if self.id_key not in keys:
            keys = (*keys, self.id_key)
        get = operator.itemgetter(*keys) if len(keys) > 1 else (lambda r: (r[keys[0]],))
        bodies = self.bodies
        values = []
        for rec in records:
            # orjson's bytes keep a 4 KiB buffer; a compact copy is a fifth of the memory.
            bodies.append(memoryview(dumps(rec)).tobytes())
            values.append(get(rec))
        columns = dict(zip(keys, zip(*values, strict=True), strict=True)) if values else {}
        self.ids = list(columns.get(self.id_key, ()))
        self.row_of = {rid: row for row, rid in enumerate(self.ids)}
        for c in self.int_cols:
            self.cols[c] = np.asarray(
                [NULL_INT if v is None else v for v in columns.get(c, ())], dtype=np.int64
            )
        for c in self.code_cols:
            self.cols[c] = np.asarray(
                [self._code(c, v) for v in columns.get(c, ())], dtype=np.int64
            )
        self.state = np.asarray(states, dtype=np.int8)
        if len(self.state) != len(self.bodies):
            raise ValueError("one state per record")
        for f in self.with_fields:
            self.with_values[f] = list((with_values or {}).get(f, [None] * len(self.bodies)))
        self._changed()

    def load_serialised(
        self,
        bodies: list[bytes],
        *,
        ids: list[Any],
        ints: Mapping[str, Sequence[int | None] | np.ndarray],
        codes: Mapping[str, Sequence[str | None]] = {},
        states: Sequence[int] | np.ndarray,
    ) -> None:
        """Bulk-load records already serialised, with their filter columns given."""
        assert not self.bodies, "load_serialised() fills an empty table"
        self.bodies = bodies
        self.ids = ids
        self.row_of = {rid: row for row, rid in enumerate(ids)}
        for c in self.int_cols:
            values = ints[c]
            if isinstance(values, np.ndarray):
                self.cols[c] = values.astype(np.int64)
            else:
                self.cols[c] = np.asarray([self._int(v) for v in values], dtype=np.int64)
        for c in self.code_cols:
            self.cols[c] = np.asarray([self._code(c, v) for v in codes[c]], dtype=np.int64)
        self.state = np.asarray(states, dtype=np.int8)
        if not len(self.state) == len(bodies) == len(ids):
            raise ValueError("one id and one state per record")
        for f in self.with_fields:
            self.with_values[f] = [None] * len(bodies)
        self._changed()

    def append(
        self, record: dict[str, Any], *, state: int = LIVE, with_values: Mapping[str, Any] = {}
    ) -> int:
        row = len(self.bodies)
        self.bodies.append(memoryview(orjson.dumps(record)).tobytes())
        self.ids.append(record[self.id_key])
        self.row_of[record[self.id_key]] = row
        for c in self.int_cols:
            self.cols[c] = np.append(self.cols[c], self._int(record.get(c)))
        for c in self.code_cols:
            self.cols[c] = np.append(self.cols[c], self._code(c, record.get(c)))
        self.state = np.append(self.state, np.int8(state))
        for f in self.with_fields:
            self.with_values[f].append(with_values.get(f))
        self._changed()
        return row

    def replace(
        self,
        row: int,
        record: dict[str, Any],
        *,
        state: int | None = None,
        with_values: Mapping[str, Any] = {},
    ) -> None:
        self.bodies[row] = memoryview(orjson.dumps(record)).tobytes()
        for c in self.int_cols:
            self.cols[c][row] = self._int(record.get(c))
        for c in self.code_cols:
            self.cols[c][row] = self._code(c, record.get(c))
        if state is not None:
            self.state[row] = state
        for f, v in with_values.items():
            self.with_values[f][row] = v
        self._changed()

    def set_state(self, row: int, state: int) -> None:
        self.state[row] = state
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.bodies)

    def record(self, row: int, *, with_fields: Iterable[str] = ()) -> dict[str, Any]:
        rec = orjson.loads(self.bodies[row])
        for f in with_fields:
            rec[f] = self.with_values[f][row]
        return rec

    def rows_in_state(self, *states: int) -> np.ndarray:
        return np.flatnonzero(np.isin(self.state, states))

    def code_of(self, col: str, value: str) -> int:
        """The code of a string value; -2 (matches nothing) when no record ever had it."""
        return self.codes[col].get(value, -2)

    def select(self, sel: Selection) -> np.ndarray:
        """Rows matching `sel`, in its order (cached per table version)."""
        key = (self.version, sel)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        mask = self.state == sel.state
        for col, lo, hi in sel.ranges:
            a = self.cols[col]
            mask &= (a >= lo) & (a <= hi)
        for col, values in sel.lists:
            wanted = np.asarray(values, dtype=np.int64)
            if col == "row":
                keep = np.zeros(len(mask), dtype=bool)
                keep[wanted[(wanted >= 0) & (wanted < len(mask))]] = True
                mask &= keep
            else:
                mask &= np.isin(self.cols[col], wanted)
        rows = np.flatnonzero(mask)
        order = sel.order or self.default_order
        if order is not None:
            col, desc = order
            if col != "row":
                # Ties broken by row, which is id order.
                rows = rows[np.lexsort((rows, self.cols[col][rows]))]
            if desc:
                rows = rows[::-1].copy()
        self._cache[key] = rows
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return rows

    def bodies_of(self, rows: np.ndarray, *, with_fields: Sequence[str] = ()) -> list[bytes]:
        bodies = self.bodies
        if not with_fields:
            return [bodies[r] for r in rows.tolist()]
        dumps = orjson.dumps
        out = []
        for r in rows.tolist():
            extra = b"".join(
                b',"' + f.encode() + b'":' + dumps(self.with_values[f][r]) for f in with_fields
            )
            out.append(bodies[r][:-1] + extra + b"}")
        return out
