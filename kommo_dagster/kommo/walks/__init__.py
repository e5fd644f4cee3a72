"""How each incremental stream is paged so that no record is lost or repeated while the account
changes, and how a window is split so several requests can be in flight at once.

A *walk* covers one sub-window of cursor values ``[lo, hi]`` (Unix seconds, both inclusive) and
issues one request at a time, so the ordering arguments below hold inside it. The extraction
(`extraction.Extraction`) runs several walks at once, as the stream's `Strategy` starts them, and,
when a worker is idle, splits a walk's unwalked remainder off into a new walk. A walk drops
records outside its current bounds, so a record that a split moved to another walk is yielded
once, by that walk. Keyset walks share their sub-window, a `Gap`, with a second walk from its
other end, and a split first adds that second walk (which costs nothing) before it cuts a gap in
two (which costs a partial page where the new ends meet).

Guarantees, per stream. A record "stays" when its cursor is inside the window and it does not
change for the whole extraction. A change may carry any updated_at: Kommo sets it to the time of
the change (a deletion included), but an integration may set it explicitly, earlier than the
record had, on PATCH and POST of leads, contacts, companies and tasks. So a record can leave a
window or arrive in one, in the past too. No walk below therefore trusts a record's new
updated_at to tell it what moved: each reads in a way where the pages themselves show a
departure. An arrival can only push records further along the order, so it may repeat a row
(dropped by id) but never skip one; only a departure can.

* leads, contacts, companies and their notes (`KeysetWalk`, chosen by the declaration's
  ``paging="keyset"``): the unread part of a list's window is a gap ``[L, H]``. A walk from
  below asks for ``L <= updated_at <= H`` ascending, a walk from above for the same range
  descending, never for an offset, so a record leaving the window (to any updated_at) cannot
  shift an unseen one past us. A full page ending at second ``F`` moves its end of the gap to
  ``F``; the records of ``F`` it held are skipped by id on the next pages from either end. A
  page that is short, or reaches past the other end of the gap, held all that was left of it
  (every record before its last second was on it): the gap is closed, and a page of the other
  walk still in flight yields only what lies inside the gap when it returns. So every record
  that stays is on a page that yields it, whichever end reaches it first, and none twice.
  When a page is full of one second ``T`` (or ends with `CROWD_SHARE` of it or more in ``T``,
  which likely goes on), that second leaves the gap and is read on its own (``from = to = T``)
  by id (`CrowdedSecond`), skipping the ids already yielded: the first page ascending and the
  first page descending. If they overlap, every record that stayed in ``T`` was on one of them
  (one missing from both would lie above the first page's highest id and below the second's
  lowest), whatever arrived or left meanwhile. Only a second of over two pages goes on, in offset
  pages by id that overlap the first page and each other, up to the descending page's lowest id,
  as tasks are read (`overlap.OverlapPages`, below): a record leaving ``T`` below a page's offset
  (changed to any updated_at, deleted, or passing through: back-dated into ``T`` and out again)
  shows as a page starting past the last id read, and the walk steps back over it
  (`test_a_record_passing_through_a_crowded_second_while_it_is_offset_paged_loses_none`). No
  check follows and no second is read twice. The deleted list (``with=only_deleted``) is walked
  the same way, so deleted records arrive with is_deleted true; so are notes, which have none.

* tasks (`OverlapWalk`, `kommo_dagster.kommo.tasks`): Kommo filters tasks on updated_at but orders
  them only by id. The window is cut into equal slices of time, each offset-paged by id in pages
  that overlap: Kommo's offset is ``(page - 1) * limit`` for any limit up to 250, so the next page
  is asked at the limit whose offset lies on or before the last row read and that reaches furthest
  (`overlap.page_at`; a long slice takes about 8% more pages than plain offset paging, a slice of a
  few pages mostly none). A page is a contiguous run of the slice's ids when it is served, so if
  its lowest id is at most the highest id read so far, every task that stayed in the slice up to
  its highest id was on one of the pages, and a short page reached the end. An update never moves a
  task within the id order; a task leaving the slice (to any updated_at) or deleted below the next
  offset shifts the rest down, one arriving (a task passing through, back-dated in and out, does
  both) shifts them up. Either way the next page shows it by its ids: it starts above the highest
  id read (or comes back empty) and the walk steps back to a lower offset instead of going on (more
  step-backs than pages read, and some slack, fail the run as an account changing faster than it is
  read), or it overlaps and nothing was skipped; repeats are dropped by (id, updated_at). So every
  task that stays is yielded, without a check: no slice is read again. A slice is never split (a
  new walk's first page could overlap this one's only once this one's page before it has come
  back); the window is cut into twice as many slices as requests worth having in flight instead. A
  closing walk delivers what the slices cannot: the newest version of a task changed while they
  were read. Where a slice took several requests and the window reaches the second the slices began
  in, it reads the tasks updated since then inside the window
  (`test_a_task_passing_through_a_part_while_it_is_offset_paged_loses_none`).

* events (`PagesWalk`, newest first): events are immutable and only appended with
  created_at = now. In a window that lies in the past (it ended `SETTLED` seconds before the
  server's clock) the result never changes, so offset paging is exact, and a split hands the
  later pages of the same query to a new walk: each page is read once, by one walk. Kommo
  tells no count, so the page a new walk starts at is a guess, and one past the end costs a
  request for nothing; events are not spread evenly (a busy hour, a quiet day), so the guess
  is held low: half what the density so far promises, and at most twice the pages the query
  has shown (`QueryPages.last_to_share`). In a window that includes now, new events enter at
  the top and push rows down: rows can repeat on the next page but never skip one; such a
  window is split by time, each walk paging its own part from the top; once it has settled, a
  split by page of such a part keeps to that part, whose query reaches below it. Repeats are
  dropped by id in every window, so that even a server that inserts events among past ones
  cannot double a row.

In every stream each (id, cursor) is yielded at most once per extraction (and the write keeps one
row per key whatever it is handed), every record that stays is yielded, and a record that changed
during the extraction is yielded in the version(s) the walk met; its newest version lies in the
window of its change, earlier or later, which the next extraction of that window delivers.
"""

from kommo_dagster.kommo.walks.base import Decoder, Job, Walk, records_of, server_since
from kommo_dagster.kommo.walks.keyset import KeysetWalk
from kommo_dagster.kommo.walks.pages import PagesWalk, even_bounds
from kommo_dagster.kommo.walks.strategies import (
    KeysetStrategy,
    NewestFirstStrategy,
    Strategy,
    WalkContext,
)

__all__ = [
    "Decoder",
    "Job",
    "KeysetStrategy",
    "KeysetWalk",
    "NewestFirstStrategy",
    "PagesWalk",
    "Strategy",
    "Walk",
    "WalkContext",
    "even_bounds",
    "records_of",
    "server_since",
]
