"""A crowded second: one second of the cursor holding a page of records or more, which a keyset
walk takes out of its gap and reads on its own, by id (see the package docstring)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.transport import Params, Response
from kommo_dagster.kommo.walks.base import server_since

# What a page by id leaves to do: another page, nothing (every record that stayed in the second
# was read), or the closing check (offset pages were needed; a departure may have shifted one).
Next = Literal["more", "done", "check"]


@dataclass(eq=False, kw_only=True)
class CrowdedSecond:
    """Reading second ``second`` by id: the first page ascending (step ``asc``), then the first
    page descending (``desc``). If the two overlap, every record that stayed in the second was
    on one of them: a record missing from both would lie above the ascending page's highest id
    and below the descending page's lowest, which the overlap rules out. Only a second of over
    two pages needs offset pages by id (``pages``), and then the closing check.

    A walk makes one when it enters the second and drops it when it leaves, so nothing of one
    second's reading is left over for the next. ``ids`` are the second's ids already yielded
    (by the gap's pages too), so none is yielded twice, across walks of the second as well."""

    second: int
    ids: set
    step: Literal["asc", "desc", "pages"] = "asc"
    page: int = 1
    # Ids met by the current walk of the second (the ones whose departure could shift others).
    walk_ids: set = field(default_factory=set)
    asc_max: Any = None
    desc_min: Any = None
    # The server-clock second the current walk began in, known from its first answer.
    since: int | None = None
    started: float = field(default_factory=time.time)
    rewalks: int = 0

    def query(self, *, cursor: str, limit: int) -> Params:
        """The filter, order and page of the next request (the list's own ``with`` aside)."""
        desc = self.step == "desc"
        return [
            (f"filter[{cursor}][from]", self.second),
            (f"filter[{cursor}][to]", self.second),
            ("order[id]", "desc" if desc else "asc"),
            ("limit", limit),
            ("page", 1 if desc else self.page),
        ]

    def new_records(
        self, records: list[dict[str, Any]], resp: Response, *, cursor: str, stream: str
    ) -> list[dict[str, Any]]:
        """The records of a page not yielded yet, now counted as yielded. A record of another
        second means the server ignored the filter, and the by-id argument would not hold."""
        if self.since is None:
            self.since = server_since(self.started, resp)
        ids = self.ids
        out = [r for r in records if r.get("id") not in ids]
        for r in out:
            if r.get(cursor) != self.second:
                raise KommoResponseError(
                    f"Kommo returned a {stream} record outside the requested second"
                )
        ids.update(r["id"] for r in out)
        return out

    def advance(self, page_ids: list[Any], *, full: bool) -> Next:
        """Take in the ids of a page (``full``: as long as asked for, with a next one) and say
        what it leaves to do."""
        self.walk_ids.update(page_ids)
        step = self.step
        if not full and step != "pages":
            # One answer held the whole second.
            return "done"
        if step == "asc":
            self.asc_max = max(page_ids)
            self.step = "desc"
            return "more"
        if step == "desc":
            lowest = min(page_ids)
            if lowest <= self.asc_max:
                return "done"
            self.desc_min = lowest
            self.step, self.page = "pages", 2
            return "more"
        if full and max(page_ids) < self.desc_min:
            self.page += 1
            return "more"
        # Offset pages met the descending page: check nothing left the second meanwhile.
        return "check"

    def restart(self) -> None:
        """Walk the second again from its first page. The ids yielded stay, so nothing is
        yielded twice; the ids met and the start time are the new walk's own, since the next
        check asks about what happened during it."""
        self.step, self.page = "asc", 1
        self.walk_ids = set()
        self.since = None
        self.started = time.time()


__all__ = ["CrowdedSecond"]
