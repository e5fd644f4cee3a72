"""A crowded second: one second of the cursor holding a page of records or more, which a keyset
walk takes out of its gap and reads on its own, by id (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.kommo.transport import Params
from kommo_dagster.kommo.walks.base import cursor_values, record_ids
from kommo_dagster.kommo.walks.overlap import OverlapPages, ascending_ids

# What a page by id leaves to do: another page, or nothing (every record that stayed in the
# second was read).
Next = Literal["more", "done"]
# A record without the cursor, told apart from one whose cursor is null.
_MISSING = object()


@dataclass(eq=False, kw_only=True)
class CrowdedSecond:
    """Reading second ``second`` by id: the first page ascending (step ``asc``), then the first
    page descending (``desc``). If the two overlap, every record that stayed in the second was
    on one of them: a record missing from both would lie above the ascending page's highest id
    and below the descending page's lowest, which the overlap rules out. Only a second of over
    two pages goes on (``pages``), in offset pages by id that overlap the ascending page and
    each other (`OverlapPages`), up to the descending page's lowest id: a record leaving the
    second below a page's offset shows as a gap, and the next page steps back over it.

    A walk makes one when it enters the second and drops it when it leaves, so nothing of one
    second's reading is left over for the next. ``ids`` are the second's ids already yielded
    (by the gap's pages too), so none is yielded twice."""

    stream: Stream
    second: int
    ids: set[Any]
    limit: int
    cursor: str = "updated_at"
    step: Literal["asc", "desc", "pages"] = "asc"
    # The lowest id of the first page descending, once offset pages are needed to reach it.
    desc_min: int | None = None
    pages: OverlapPages = field(init=False)

    def __post_init__(self) -> None:
        what = f"{self.stream.name} updated at {self.second}"
        self.pages = OverlapPages(limit=self.limit, what=what)

    def query(self) -> Params:
        """The filter, order and page of the next request (the list's own ``with`` aside)."""
        desc = self.step == "desc"
        page, size = (1, self.limit) if desc else self.pages.next_page()
        return [
            (f"filter[{self.cursor}][from]", self.second),
            (f"filter[{self.cursor}][to]", self.second),
            ("order[id]", "desc" if desc else "asc"),
            ("limit", size),
            ("page", page),
        ]

    def new_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of a page not yielded yet, now counted as yielded. A record of another
        second means the server ignored the filter, and the by-id argument would not hold."""
        ids, page_ids = self.ids, record_ids(self.stream, records)
        out = [r for r, i in zip(records, page_ids, strict=True) if i not in ids]
        for r in out:
            value = r.get(self.cursor, _MISSING)
            if value != self.second:
                # get(), not ``in``: a typed record (`decoding.TypedRecord`) is no mapping.
                has = f"no {self.cursor}" if value is _MISSING else f"{self.cursor} {value!r}"
                raise KommoResponseError(
                    f"Kommo returned a {self.stream.name} record outside the requested second "
                    f"{self.second}: record {r['id']!r} has {has}"
                )
        ids.update(page_ids)
        return out

    def advance(self, records: list[dict[str, Any]], *, has_next: bool) -> Next:
        """Take in a page (``has_next``: the server announced another) and say what it leaves
        to do."""
        if self.step == "desc":
            return self._descending(records, has_next=has_next)
        ids = ascending_ids(self.stream, records)
        taken = self.pages.take(ids, has_next=has_next)
        if taken == "end":
            # The range ended on this page: every record that stayed was read.
            return "done"
        if self.step == "asc":
            self.step = "desc"
            return "more"
        top, desc_min = self.pages.top, self.desc_min
        assert top is not None and desc_min is not None  # set by the pages before these
        return "done" if taken == "on" and top >= desc_min else "more"

    def _descending(self, records: list[dict[str, Any]], *, has_next: bool) -> Next:
        """The first page descending: the whole second if it is short, else the top of it."""
        if not records or not has_next or len(records) < self.limit:
            return "done"
        lowest = min(cursor_values(self.stream, records, "id"))
        top = self.pages.top
        if top is not None and lowest <= top:
            return "done"
        self.desc_min, self.step = lowest, "pages"
        return "more"


__all__ = ["CrowdedSecond"]
