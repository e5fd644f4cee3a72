"""Current-state views and full-table history, on DuckDB directly and through real runs."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.streams import STREAMS, get_stream
from kommo_dagster.orchestration.jobs import partition_key
from kommo_dagster.sandbox import ChurnConfig, KommoSandbox
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.locks import connect
from kommo_dagster.warehouse.registry import refresh_after_write
from kommo_dagster.warehouse.sql import column_definitions
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.views import append_history, ensure_current_view
from kommo_dagster_tests.rows import synthetic_columns
from kommo_dagster_tests.wiring import sandbox_kommo


def _create(con: duckdb.DuckDBPyConnection, stream: str, *, schema: str = "kommo") -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(f"CREATE TABLE {schema}.{stream} ({column_definitions(get_stream(stream))})")


def _insert(con: duckdb.DuckDBPyConnection, stream: str, rows: list[dict]) -> None:
    names = STREAMS[stream].column_names
    for row in rows:
        values = [row.get(n) for n in names]
        con.execute(f"INSERT INTO kommo.{stream} VALUES ({', '.join('?' * len(names))})", values)


def test_the_current_view_keeps_the_latest_live_version(tmp_path: Path):
    con = duckdb.connect()
    _create(con, "leads")
    _insert(
        con,
        "leads",
        [
            {"id": 1, "updated_at": 100, "name": "old", "is_deleted": False},
            {"id": 1, "updated_at": 200, "name": "new", "is_deleted": False},
            {"id": 2, "updated_at": 100, "name": "live then", "is_deleted": False},
            {"id": 2, "updated_at": 300, "name": "deleted now", "is_deleted": True},
            {"id": 3, "updated_at": 100, "name": "deleted then", "is_deleted": True},
            {"id": 3, "updated_at": 400, "name": "restored", "is_deleted": False},
            {"id": 4, "updated_at": 100, "name": "no flag", "is_deleted": None},
        ],
    )
    ensure_current_view(con, get_stream("leads"), schema="kommo")
    rows = con.execute("SELECT id, name FROM kommo.leads_current ORDER BY id").fetchall()
    assert rows == [(1, "new"), (3, "restored"), (4, "no flag")]
    # the view has exactly the table's columns
    columns = [d[0] for d in con.execute("SELECT * FROM kommo.leads_current").description]
    assert columns == list(STREAMS["leads"].column_names)


def test_tasks_current_drops_tasks_with_a_task_deleted_event():
    con = duckdb.connect()
    _create(con, "tasks")
    _insert(
        con,
        "tasks",
        [
            {"id": 1, "updated_at": 100, "text": "kept"},
            {"id": 2, "updated_at": 100, "text": "deleted"},
            {"id": 3, "updated_at": 500, "text": "kept: the other entity's event"},
        ],
    )
    # no events table yet: the view creates it empty and keeps every task
    ensure_current_view(con, get_stream("tasks"), schema="kommo")
    assert con.execute("SELECT count(*) FROM kommo.tasks_current").fetchone() == (3,)
    _insert(
        con,
        "events",
        [
            {
                "id": "e1",
                "type": "task_deleted",
                "entity_type": "task",
                "entity_id": 2,
                "created_at": 150,
            },
            {
                "id": "e2",
                "type": "lead_deleted",
                "entity_type": "lead",
                "entity_id": 3,
                "created_at": 600,
            },
            {
                "id": "e3",
                "type": "task_completed",
                "entity_type": "task",
                "entity_id": 1,
                "created_at": 150,
            },
        ],
    )
    rows = con.execute("SELECT id FROM kommo.tasks_current ORDER BY id").fetchall()
    assert rows == [(1,), (3,)]


def test_views_made_in_an_attached_file_work_when_it_is_opened_directly(tmp_path: Path):
    db = tmp_path / "crm.duckdb"
    con = duckdb.connect()
    con.execute(f"ATTACH '{db}' AS target")
    con.execute("CREATE SCHEMA target.kommo")
    con.execute(f"CREATE TABLE target.kommo.events ({column_definitions(get_stream('events'))})")
    con.execute("INSERT INTO target.kommo.events (id, created_at) VALUES ('a', 1), ('a', 1)")
    ensure_current_view(con, get_stream("events"), schema="kommo", catalog="target")
    con.close()
    with duckdb.connect(str(db)) as direct:
        assert direct.execute("SELECT id FROM kommo.events_current").fetchall() == [("a",)]


def test_history_appends_snapshots_and_purges_past_retention():
    con = duckdb.connect()
    _create(con, "pipelines")
    stream = get_stream("pipelines")
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    for age, name in [(40, "forty days"), (31, "thirty-one days"), (10, "ten days")]:
        con.execute("DELETE FROM kommo.pipelines")
        _insert(con, "pipelines", [{"id": 1, "name": name}, {"id": 2, "name": name}])
        append_history(
            con, stream, schema="kommo", snapshot_at=now - timedelta(days=age), retention_days=90
        )
    con.execute("DELETE FROM kommo.pipelines")
    _insert(con, "pipelines", [{"id": 1, "name": "now"}])
    result = append_history(con, stream, schema="kommo", snapshot_at=now, retention_days=30)
    assert result == {"rows": 1, "purged": 4}
    rows = con.execute(
        "SELECT snapshot_at, name FROM kommo.pipelines_history ORDER BY snapshot_at, id"
    ).fetchall()
    assert rows == [
        (datetime(2026, 11, 10, 12), "ten days"),
        (datetime(2026, 11, 10, 12), "ten days"),
        (datetime(2026, 11, 20, 12), "now"),
    ]
    columns = [d[0] for d in con.execute("SELECT * FROM kommo.pipelines_history").description]
    assert columns == ["snapshot_at", *stream.column_names]


def test_a_full_table_write_after_the_contract_gained_a_column_extends_its_history(db: Path):
    """The write recreates the table from the contract; the history table, made by the older
    contract, gains the column instead of failing every write from then on."""
    users = get_stream("users")
    older, added = users.columns[:-1], users.columns[-1]
    with connect(db, timeout=30) as con:
        con.execute("CREATE SCHEMA kommo")
        definitions = ", ".join(f'"{c.name}" {c.duckdb_type}' for c in older)
        con.execute(f"CREATE TABLE kommo.users_history (snapshot_at TIMESTAMP, {definitions})")
        con.execute("INSERT INTO kommo.users_history (snapshot_at, id) VALUES ('2026-11-01', 7)")
    staged = StagedRows(users, window=None)
    staged.append(synthetic_columns(users, 2, first_id=1))
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)

    def after(con: duckdb.DuckDBPyConnection) -> None:
        refresh_after_write(
            con, "users", schema="kommo", full_table=True, snapshot_at=now, retention_days=90
        )

    staged.write(db, schema="kommo", timeout=30, after=after)
    staged.discard()
    with connect(db, timeout=30) as con:
        rows = con.execute(
            f'SELECT id, "{added.name}" IS NULL FROM kommo.users_history ORDER BY snapshot_at, id'
        ).fetchall()
    assert rows == [(7, True), (1, False), (2, False)]


# --- through real runs ------------------------------------------------------------------------


class Loaded:
    def __init__(self, sandbox: KommoSandbox, directory: Path, start: date) -> None:
        self.sandbox = sandbox
        self.settings = Settings(start_date=start, duckdb_path=directory / "crm.duckdb")
        self.defs = build_definitions(
            self.settings,
            kommo=sandbox_kommo(sandbox, directory),
        )
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self, streams, **kwargs) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            list(self.defs.assets or []),
            selection=[dg.AssetKey(["kommo", s]) for s in streams],
            resources=self.defs.resources,
            instance=self.instance,
            **kwargs,
        )

    def sql(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.settings.duckdb_path), read_only=True) as con:
            return con.execute(sql).fetchall()


# Streams whose deletions reach the current views: a deleted list, or deletion events.
STREAMS_WITH_DELETIONS = tuple(
    n for n, s in STREAMS.items() if s.has_deleted_list or s.deleted_event
)


@pytest.mark.timeout(180)
def test_deletions_reach_the_current_views(sandbox_factory, tmp_path: Path):
    today = datetime.now(UTC).date()
    start = today - timedelta(days=5)
    sandbox = sandbox_factory(
        leads=40,
        requests_per_second=None,
        start=start,
        end=today,
        churn=ChurnConfig(updates=0, creates=0, deletes=1, streams=STREAMS_WITH_DELETIONS),
    )
    wh = Loaded(sandbox, tmp_path, start)
    streams = [*STREAMS_WITH_DELETIONS, "events"]
    tags = {
        "dagster/asset_partition_range_start": partition_key(start),
        "dagster/asset_partition_range_end": partition_key(today),
    }
    assert wh.run(streams, tags=tags).success
    live_before = {
        s: {r[0] for r in wh.sql(f"SELECT id FROM kommo.{s}_current")} for s in streams[:4]
    }

    changes = sandbox.churn_step()
    assert changes == {f"{s}_deleted": 1 for s in streams[:4]}
    assert wh.run(streams, partition_key=partition_key(datetime.now(UTC).date())).success

    for stream in streams[:4]:
        live = {r[0] for r in wh.sql(f"SELECT id FROM kommo.{stream}_current")}
        gone = live_before[stream] - live
        assert len(gone) == 1, stream
        assert live == {r["id"] for r in sandbox.records(stream) if not r.get("is_deleted")}
        if stream != "tasks":
            [(deleted,)] = wh.sql(
                f"SELECT is_deleted FROM kommo.{stream} WHERE id = {gone.pop()} "
                f"ORDER BY updated_at DESC LIMIT 1"
            )
            assert deleted is True
    # events have one row per id in their view, as in the table
    assert wh.sql("SELECT count(*) FROM kommo.events_current") == wh.sql(
        "SELECT count(DISTINCT id) FROM kommo.events"
    )


@pytest.mark.timeout(120)
def test_full_table_runs_append_history(sandbox_factory, tmp_path: Path):
    sandbox = sandbox_factory(leads=20, requests_per_second=None)
    wh = Loaded(sandbox, tmp_path, date(2026, 10, 1))
    for _ in range(2):
        assert wh.run(["pipelines", "statuses", "users"]).success
    for stream in ("pipelines", "statuses", "users"):
        [(snapshots, rows)] = wh.sql(
            f"SELECT count(DISTINCT snapshot_at), count(*) FROM kommo.{stream}_history"
        )
        [(table_rows,)] = wh.sql(f"SELECT count(*) FROM kommo.{stream}")
        assert (snapshots, rows) == (2, 2 * table_rows)
