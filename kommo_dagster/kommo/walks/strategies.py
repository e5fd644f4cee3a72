"""How a stream's window is cut into walks (keyset from both ends, or newest-first pages) and
what the client learns from each response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import Stream

if TYPE_CHECKING:
    from kommo_dagster.kommo.transport import Transport

from kommo_dagster.kommo.walks.base import (
    Decoder,
    Walk,
    records_of,
)
from kommo_dagster.kommo.walks.keyset import KeysetWalk
from kommo_dagster.kommo.walks.pages import PagesWalk


@dataclass(frozen=True, kw_only=True)
class WalkContext:
    """What walks and strategies use of the client: its transport and how many requests are
    worth having in flight now."""

    transport: Transport
    target_concurrency: Callable[[], int]
    decode: Decoder = records_of


class Strategy:
    """How the extraction of one stream's window starts (`start`), what it keeps of the records
    its walks yield (`accept`), and what it walks next once every walk is done
    (`on_drained`; nothing by default)."""

    def __init__(self, *, context: WalkContext, stream: Stream, lo: int, hi: int) -> None:
        self.context = context
        self.stream = stream
        self.lo, self.hi = lo, hi

    @property
    def with_(self) -> tuple[tuple[str, str], ...]:
        s = self.stream
        return (("with", ",".join(s.with_)),) if s.with_ else ()

    def start(self) -> list[Walk]:
        raise NotImplementedError

    def on_response(self, walk: Walk, resp: Response) -> None:
        """Called with each answer to a walk's page request, before `accept`."""

    def accept(self, walk: Walk, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return records

    def on_drained(self) -> list[Walk]:
        return []

    def fraction(self, walks: list[Walk]) -> float | None:
        """The share of the window covered so far, for progress reports."""
        total = self.hi - self.lo + 1
        walks = [w for w in walks if w.kind in ("live", "pages")]
        if total <= 0 or not walks:
            return None
        return max(0.0, min(1.0, sum(w.covered_seconds() for w in walks) / total))


class KeysetStrategy(Strategy):
    """Leads, contacts, companies: one keyset walk of the live list and, where the stream has
    one, one of the deleted list; each splits as workers fall idle."""

    def start(self) -> list[Walk]:
        s = self.stream
        lists = [("live", self.with_)]
        if s.has_deleted_list:
            lists.append(("deleted", (("with", ",".join((*s.with_, "only_deleted"))),)))
        return [
            KeysetWalk(
                stream=s,
                transport=self.context.transport,
                decode=self.context.decode,
                lo=self.lo,
                hi=self.hi,
                kind=kind,
                base=base,
                cursor=s.cursor or "updated_at",
            )
            for kind, base in lists
        ]

    def fraction(self, walks: list[Walk]) -> float | None:
        """The share of the window outside the live list's gaps (what no page returned lies
        below the first record or above the last: covered too)."""
        gaps = {id(w.gap): w.gap for w in walks if isinstance(w, KeysetWalk) and w.kind == "live"}
        total = self.hi - self.lo + 1
        if total <= 0 or not gaps:
            return None
        left = sum(g.seconds() for g in gaps.values() if g is not None)
        return max(0.0, min(1.0, 1 - left / total))


class NewestFirstStrategy(Strategy):
    """Events: one newest-first walk that splits as workers fall idle."""

    def start(self) -> list[Walk]:
        s = self.stream
        return [
            PagesWalk(
                stream=s,
                transport=self.context.transport,
                decode=self.context.decode,
                lo=self.lo,
                hi=self.hi,
                kind="pages",
                base=self.with_,
                cursor=s.cursor or "created_at",
                newest_first=True,
                # New events enter a window that includes now at the top and push rows down a
                # page; a server that inserts among past events would do the same to a window
                # in the past. Either way a repeat is dropped by id.
                dedupe=True,
            )
        ]


__all__ = [
    "KeysetStrategy",
    "NewestFirstStrategy",
    "Strategy",
    "WalkContext",
]
