"""Staging and the one-transaction slice write on a real DuckDB file: tables from the contract,
staged batches, slice rewrites, and a failed write that leaves the table as it was."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from kommo_dagster.contract import contract_streams
from kommo_dagster.kommo import unsorted
from kommo_dagster.kommo.columns import columns_table
from kommo_dagster.kommo.streams import DUCKDB_TYPES, STREAMS, get_stream
from kommo_dagster.warehouse.arrays import typed_frame
from kommo_dagster.warehouse.errors import TableSchemaMismatch, WarehouseError
from kommo_dagster.warehouse.leftovers import OWNER_FILE
from kommo_dagster.warehouse.locks import connect
from kommo_dagster.warehouse.registry import refresh_after_write
from kommo_dagster.warehouse.slices import COMMIT_NOT_KNOWN, read_slice
from kommo_dagster.warehouse.sql import table_columns
from kommo_dagster.warehouse.staging import (
    STAGING_CHECKPOINT_THRESHOLD,
    STAGING_THREADS,
    StagedRows,
)
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.failing_write import (
    COMMIT_FAILED,
    DETACH_FAILED,
    MISSING,
    CommitFailingStagedRows,
    DetachFailingStagedRows,
    FailingStagedRows,
)
from kommo_dagster_tests.rows import synthetic_columns

LEADS = get_stream("leads")
OCT1 = EpochWindow.from_datetimes(
    datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
)
OCT2 = EpochWindow.from_datetimes(
    datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC)
)


def _write(db: Path, staged: StagedRows) -> dict[str, int]:
    result = staged.write(db, schema="kommo", timeout=30)
    staged.discard()
    return {"rows": result.rows, "deleted": result.deleted, "table_rows": result.table_rows}


def _staged(stream=LEADS, *, window=OCT1, n=5, first_id=1, **kwargs) -> StagedRows:
    staged = StagedRows(stream, window=window, **kwargs)
    start = window.start if window else 1_790_000_000
    staged.append(synthetic_columns(stream, n, cursor_start=start, step=97, first_id=first_id))
    return staged


def _rows(db: Path, sql: str) -> list[tuple]:
    with connect(db, timeout=30) as con:
        return con.execute(sql).fetchall()


@pytest.mark.parametrize("name", list(STREAMS))
def test_an_empty_write_creates_the_contract_table(db: Path, name: str):
    stream = get_stream(name)
    window = OCT1 if stream.is_incremental else None
    result = _write(db, StagedRows(stream, window=window))
    assert result == {"rows": 0, "deleted": 0, "table_rows": 0}
    with connect(db, timeout=30) as con:
        columns = table_columns(con, schema="kommo", table=name)
    declared = {**contract_streams(), **unsorted.CONTRACT}[name]["columns"]
    assert columns == [(c["name"], DUCKDB_TYPES[c["type"]]) for c in declared]


def test_nullable_integers_stay_integers_and_values_round_trip(db: Path):
    columns = synthetic_columns(LEADS, 6, cursor_start=OCT1.start)
    frame = typed_frame(LEADS, columns)
    assert str(frame["loss_reason_id"].dtype) == "Int64"
    assert str(frame["id"].dtype) == "int64"
    assert str(frame["is_deleted"].dtype) == "boolean"
    staged = StagedRows(LEADS, window=OCT1)
    staged.append(columns)
    _write(db, staged)
    with connect(db, timeout=30) as con:
        got = con.execute(
            "SELECT * FROM kommo.leads ORDER BY id"
        ).fetchall()  # DuckDB's own Python values: int, bool, str, None
        names = [d[0] for d in con.description]
    assert names == list(LEADS.column_names)
    expected = list(zip(*(columns[n] for n in LEADS.column_names), strict=True))
    assert got == expected
    assert isinstance(got[0][names.index("price")], int)


def test_arrow_batches_stage_like_columns_and_must_match_the_contract(db: Path):
    columns = synthetic_columns(LEADS, 6, cursor_start=OCT1.start)
    staged = StagedRows(LEADS, window=OCT1)
    staged.append(columns_table("leads", columns))
    assert staged.rows == 6 and sum(staged.rows_by_day().values()) == 6
    _write(db, staged)
    expected = list(zip(*(columns[n] for n in LEADS.column_names), strict=True))
    assert _rows(db, "SELECT * FROM kommo.leads ORDER BY id") == expected
    wrong = columns_table("leads", columns).drop_columns(["tags"])
    with pytest.raises(WarehouseError, match="differ from the contract"):
        StagedRows(LEADS, window=OCT1).append(wrong)


def test_a_partition_rewrite_replaces_exactly_its_slice(db: Path):
    _write(db, _staged(window=OCT1, n=5, first_id=1))
    _write(db, _staged(window=OCT2, n=7, first_id=100))
    result = _write(db, _staged(window=OCT1, n=3, first_id=50))
    assert result == {"rows": 3, "deleted": 5, "table_rows": 10}
    ids = [r[0] for r in _rows(db, "SELECT id FROM kommo.leads ORDER BY id")]
    assert ids == [50, 51, 52, *range(100, 107)]
    # the same write again changes nothing
    _write(db, _staged(window=OCT1, n=3, first_id=50))
    assert _rows(db, "SELECT count(*), count(DISTINCT id) FROM kommo.leads") == [(10, 10)]


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_repeated_version_is_written_once_and_counted(db: Path, name: str):
    """Whatever an extraction yields, one row per the stream's key reaches the table."""
    stream = get_stream(name)
    window = OCT1 if stream.is_incremental else None
    staged = StagedRows(stream, window=window)
    start = window.start if window else 1_790_000_000
    staged.append(synthetic_columns(stream, 4, cursor_start=start, step=97))
    staged.append(synthetic_columns(stream, 2, cursor_start=start, step=97))
    result = staged.write(db, schema="kommo", timeout=30)
    staged.discard()
    assert (result.rows, result.duplicates, result.table_rows) == (4, 2, 4)
    key = ", ".join(stream.key)
    assert _rows(db, f"SELECT count(*), count(DISTINCT ({key})) FROM kommo.{name}") == [(4, 4)]


@pytest.mark.parametrize("deleted_first", [False, True])
def test_of_two_readings_of_a_version_the_deleted_one_is_kept(db: Path, deleted_first: bool):
    """A lead deleted in place (same updated_at) is read live and deleted in one extraction:
    whichever arrives first, the deleted reading is the one written, as the view's tie rule."""
    staged = StagedRows(LEADS, window=OCT1)
    for deleted in (deleted_first, not deleted_first):
        columns = synthetic_columns(LEADS, 1, cursor_start=OCT1.start + 60)
        columns["is_deleted"] = [deleted]
        staged.append(columns)
    _write(db, staged)
    assert _rows(db, "SELECT id, is_deleted FROM kommo.leads") == [(1, True)]


def test_of_two_readings_of_a_record_without_a_cursor_the_later_is_kept(db: Path):
    """A full-table record read twice (offset pages shifted while they were read): the later
    reading is the newer state."""
    users = get_stream("users")
    staged = StagedRows(users, window=None)
    for name in ("before", "after", "latest"):
        columns = synthetic_columns(users, 1)
        columns["name"] = [name]
        staged.append(columns)
    assert _write(db, staged)["rows"] == 1
    assert _rows(db, "SELECT id, name FROM kommo.users") == [(1, "latest")]


def test_an_account_named_target_is_written_like_any_other(db: Path):
    """Account "target" writes schema kommo_target: no name the write uses for the attached
    file may be taken for it (every statement failed with "Ambiguous reference")."""
    staged = _staged(window=OCT1, n=3)

    def after(con: duckdb.DuckDBPyConnection) -> None:
        refresh_after_write(
            con, "leads", schema="kommo_target", account_schemas={"target": "kommo_target"}
        )

    staged.write(db, schema="kommo_target", timeout=30, after=after)
    staged.discard()
    assert _rows(db, "SELECT count(*) FROM kommo_all.leads WHERE account = 'target'") == [(3,)]


def test_the_key_of_a_status_is_its_pipeline_and_id(db: Path):
    statuses = get_stream("statuses")
    assert statuses.key == ("pipeline_id", "id") and LEADS.key == ("id", "updated_at")
    staged = StagedRows(statuses, window=None)
    columns = synthetic_columns(statuses, 2)
    columns["id"] = [142, 142]  # Kommo's "won" status has the same id in every pipeline
    columns["pipeline_id"] = [1, 2]
    staged.append(columns)
    result = staged.write(db, schema="kommo", timeout=30)
    staged.discard()
    assert (result.rows, result.duplicates) == (2, 0)


def test_a_range_write_replaces_every_day_in_it(db: Path):
    _write(db, _staged(window=OCT1, n=4, first_id=1))
    _write(db, _staged(window=OCT2, n=4, first_id=10))
    both = EpochWindow(OCT1.start, OCT2.end)
    result = _write(db, _staged(window=both, n=2, first_id=500))
    assert result["deleted"] == 8
    assert [r[0] for r in _rows(db, "SELECT id FROM kommo.leads ORDER BY id")] == [500, 501]


def test_a_full_table_write_replaces_the_table(db: Path):
    users = get_stream("users")
    _write(db, _staged(users, window=None, n=4))
    result = _write(db, _staged(users, window=None, n=2, first_id=9))
    assert result == {"rows": 2, "deleted": 4, "table_rows": 2}


def test_a_failed_write_leaves_the_previous_rows(db: Path):
    _write(db, _staged(window=OCT1, n=5, first_id=1))
    before = _rows(db, "SELECT * FROM kommo.leads ORDER BY id")
    failing = FailingStagedRows(LEADS, window=OCT1)
    failing.append(synthetic_columns(LEADS, 2, cursor_start=OCT1.start, first_id=900))
    with pytest.raises(duckdb.CatalogException, match=MISSING) as raised:
        _write(db, failing)
    assert _rows(db, "SELECT * FROM kommo.leads ORDER BY id") == before
    # Raised before the COMMIT: the error says what the write left.
    assert raised.value.__notes__ == [
        "kommo_test.kommo.leads was left as it was: nothing of this run's partitions 2026-10-01 "
        "was written (a run writes its slice of a table in one transaction, once all of it is "
        "read)"
    ]


def test_a_failed_full_table_write_leaves_the_previous_table(db: Path):
    users = get_stream("users")
    _write(db, _staged(users, window=None, n=4))
    failing = FailingStagedRows(users, window=None)
    failing.append(synthetic_columns(users, 2, first_id=900))
    with pytest.raises(duckdb.CatalogException, match=MISSING) as raised:
        _write(db, failing)
    assert [r[0] for r in _rows(db, "SELECT id FROM kommo.users ORDER BY id")] == [1, 2, 3, 4]
    [note] = raised.value.__notes__
    assert note.startswith(
        "kommo_test.kommo.users was left as it was: nothing of this run's full table was written"
    )


@pytest.mark.parametrize(
    ("staged_cls", "message", "notes"),
    [
        (DetachFailingStagedRows, DETACH_FAILED, []),
        # DuckDB may raise from a COMMIT it applied (a checkpoint run in place of the WAL
        # write that fails after the commit): the error says the write may be in.
        (CommitFailingStagedRows, COMMIT_FAILED, [COMMIT_NOT_KNOWN]),
    ],
)
def test_an_error_once_the_commit_ran_does_not_say_the_table_was_left_as_it_was(
    db: Path, staged_cls: type[StagedRows], message: str, notes: list[str]
):
    _write(db, _staged(window=OCT1, n=5, first_id=1))
    late = staged_cls(LEADS, window=OCT1)
    late.append(synthetic_columns(LEADS, 2, cursor_start=OCT1.start, first_id=900))
    with pytest.raises(duckdb.Error, match=message) as raised:
        _write(db, late)
    # The rows are in: the slice was replaced, and the error claims nothing else.
    assert _rows(db, "SELECT id FROM kommo.leads ORDER BY id") == [(900,), (901,)]
    assert getattr(raised.value, "__notes__", []) == notes


def test_rows_outside_the_window_are_refused_before_anything_is_deleted(db: Path):
    _write(db, _staged(window=OCT1, n=5))
    stray = StagedRows(LEADS, window=OCT1)
    stray.append(synthetic_columns(LEADS, 2, cursor_start=OCT2.start, first_id=77))
    with pytest.raises(WarehouseError, match="outside the slice") as raised:
        _write(db, stray)
    assert _rows(db, "SELECT count(*) FROM kommo.leads") == [(5,)]
    assert "kommo_test.kommo.leads was left as it was" in raised.value.__notes__[0]


@pytest.mark.parametrize("name", ["users", "leads"])
def test_rows_without_a_key_are_refused_before_anything_is_deleted(db: Path, name: str):
    """Repeats are dropped by grouping the key: two records without an id would be taken for
    one, and one of them lost. So the write refuses them, naming the stream and the key."""
    stream = get_stream(name)
    window = OCT1 if stream.cursor else None
    _write(db, _staged(stream, window=window, n=5))
    staged = _staged(stream, window=window, n=3, first_id=10)
    columns = synthetic_columns(stream, 2, cursor_start=OCT1.start, first_id=20)
    columns["id"] = [None, None]
    staged.append(columns)
    with pytest.raises(WarehouseError, match=f"{name}: 2 rows have no .*id"):
        _write(db, staged)
    assert _rows(db, f"SELECT count(*) FROM kommo.{name}") == [(5,)]


def test_rows_without_a_key_are_refused_before_a_range_counts_its_days():
    """A range run counts each day's rows before the write (`rows_by_day`, which drops the
    repeats of a key): rows without an id in one second must not be merged into one first."""
    staged = StagedRows(LEADS, window=EpochWindow(OCT1.start, OCT2.end))
    columns = synthetic_columns(LEADS, 3, cursor_start=OCT1.start, step=0, first_id=20)
    columns["id"] = [None, None, None]
    staged.append(columns)
    with pytest.raises(WarehouseError, match="leads: 3 rows have no id"):
        staged.rows_by_day()
    assert (staged.rows, staged.duplicates) == (3, 0)
    staged.discard()


def test_staging_spills_past_its_memory_limit_and_cleans_up(db: Path, tmp_path: Path):
    staging = tmp_path / "staging"
    staged = StagedRows(LEADS, window=OCT1, staging_dir=staging, memory_limit="32MB")
    wide = "x" * 2000
    for i in range(25):  # ~100 MB of text through a 32 MB staging instance
        columns = synthetic_columns(LEADS, 2000, cursor_start=OCT1.start, step=1, first_id=i * 2000)
        columns["custom_fields_values"] = [f'["{wide}{j}"]' for j in range(2000)]
        staged.append(columns)
    assert staged.directory is not None and staged.directory.parent == staging
    # DuckDB spilled into it and left the owner marker that lets a later run clear it if killed.
    assert (staged.directory / OWNER_FILE).exists()
    assert len(list(staged.directory.iterdir())) > 1
    result = staged.write(db, schema="kommo", timeout=30)
    assert result.rows == 50_000 == result.table_rows
    staged.discard()
    assert list(staging.iterdir()) == []
    assert _rows(
        db, "SELECT count(DISTINCT id), max(length(custom_fields_values)) FROM kommo.leads"
    )[0] == (50_000, 2000 + 4 + 4)


def test_staging_keeps_to_one_thread_until_the_write(db: Path):
    """Batches arrive while requests are in flight: DuckDB's pool must not take every core
    then. The write, once the extraction is over, may."""
    staged = StagedRows(LEADS, window=OCT1)
    staged.append(synthetic_columns(LEADS, 3, cursor_start=OCT1.start))
    con = staged._connection()
    assert con.execute("SELECT current_setting('threads')").fetchone() == (STAGING_THREADS,)
    staged.write(db, schema="kommo", timeout=30)
    (threads,) = con.execute("SELECT current_setting('threads')").fetchone()
    assert threads == duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    staged.discard()


def test_staged_rows_are_never_checkpointed(db: Path):
    """A checkpoint of the staging instance compresses every staged row, which the write then
    compresses again into the file: its threshold is far past any extraction's rows, and the
    rows are written all the same."""
    staged = StagedRows(LEADS, window=OCT1)
    staged.append(synthetic_columns(LEADS, 3, cursor_start=OCT1.start))
    (threshold,) = (
        staged._connection().execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    )
    (default,) = (
        duckdb.connect().execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    )
    assert threshold != default
    assert threshold == _duckdb_size(STAGING_CHECKPOINT_THRESHOLD)
    assert staged.write(db, schema="kommo", timeout=30).table_rows == 3
    staged.discard()


def _duckdb_size(text: str) -> str:
    """A size as DuckDB reports it back once set."""
    con = duckdb.connect()
    con.execute(f"SET checkpoint_threshold = '{text}'")
    return con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]


def test_an_existing_table_that_drifted_from_the_contract_is_refused(db: Path):
    with connect(db, timeout=30) as con:
        con.execute("CREATE SCHEMA kommo")
        con.execute("CREATE TABLE kommo.leads (id DOUBLE, updated_at BIGINT)")
    with pytest.raises(TableSchemaMismatch, match="contract"):
        _write(db, _staged(window=OCT1))


def test_read_slice_returns_nullable_types_for_a_window(db: Path):
    _write(db, _staged(window=OCT1, n=4, first_id=1))
    _write(db, _staged(window=OCT2, n=3, first_id=10))
    with connect(db, timeout=30) as con:
        frame = read_slice(con, LEADS, schema="kommo", window=OCT2)
    assert list(frame.columns) == list(LEADS.column_names)
    assert sorted(frame["id"]) == [10, 11, 12]
    assert str(frame["loss_reason_id"].dtype) == "Int64"
    assert frame["loss_reason_id"].isna().sum() == 1
    assert isinstance(frame, pd.DataFrame)


def test_staged_rows_are_counted_per_utc_day():
    both = EpochWindow(OCT1.start, OCT2.end)
    staged = StagedRows(LEADS, window=both)
    staged.append(synthetic_columns(LEADS, 5, cursor_start=OCT1.end - 2 * 3600, step=3600))
    staged.append(synthetic_columns(LEADS, 2, cursor_start=OCT2.start + 60, step=60))
    assert staged.rows_by_day() == {date(2026, 10, 1): 2, date(2026, 10, 2): 5}
    assert (staged.cursors.low, staged.cursors.high) == (OCT1.end - 7200, OCT2.start + 7200)


def test_the_counts_per_day_leave_out_the_repeats_the_write_drops(db: Path):
    """A range run reports each day's rows: a version read twice is one row of its day."""
    both = EpochWindow(OCT1.start, OCT2.end)
    staged = StagedRows(LEADS, window=both)
    staged.append(synthetic_columns(LEADS, 4, cursor_start=OCT1.end - 2 * 3600, step=3600))
    staged.append(synthetic_columns(LEADS, 3, cursor_start=OCT1.end - 2 * 3600, step=3600))
    assert staged.rows_by_day() == {date(2026, 10, 1): 2, date(2026, 10, 2): 2}
    result = _write(db, staged)
    assert (result["rows"], result["table_rows"]) == (4, 4)
