"""The demo: a Kommo sandbox account extracted into DuckDB with `dagster asset materialize`.

Run by `scripts/demo.sh` (which first installs the project into .venv). It starts the sandbox as
a subprocess, runs the real Dagster CLI three times (every full-table stream; every incremental
stream with the tables derived from it, as one single-run range over the sandbox's window; the
analysis views; the lists come from the declarations), prints every table's row count and four
queries (two across tables, one on a wide view, the funnel), and says how to open the same runs
and file in `dagster dev`.

Everything stays inside the repository: the database is ``data/kommo_demo.duckdb`` (not the
default ``data/kommo_crm.duckdb``, which is left for a real account) and the Dagster instance is
``.dagster_home/``; both are git-ignored. Any ``KOMMO_*`` variable already set in the shell is
ignored, so the demo can never reach a real account.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from kommo_dagster.derived.assets import derived_keys
from kommo_dagster.derived.declaration import DERIVED_TABLES
from kommo_dagster.kommo.streams import FULL_TABLE_STREAMS, INCREMENTAL_STREAMS, STREAMS
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess
from kommo_dagster.settings import DEFAULT_START_DATE, Settings

ROOT = Path(__file__).resolve().parents[1]
DATABASE = ROOT / "data" / "kommo_demo.duckdb"
DAGSTER_HOME = ROOT / ".dagster_home"
LEADS = 1000
DAGSTER = str(Path(sys.executable).with_name("dagster"))

LEADS_PER_STAGE = """
WITH current_leads AS (  -- the latest version of each lead
    SELECT * FROM kommo.leads
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated_at DESC) = 1
)
SELECT p.name AS pipeline, s.name AS stage, count(*) AS leads, sum(l.price) AS total_price
FROM current_leads AS l
JOIN kommo.pipelines AS p ON p.id = l.pipeline_id
JOIN kommo.statuses AS s ON s.pipeline_id = l.pipeline_id AND s.id = l.status_id
WHERE NOT l.is_deleted
GROUP BY p.name, p.sort, s.name, s.sort
ORDER BY p.sort, s.sort
"""

LOSS_REASONS_AND_NOTES = """
WITH current_leads AS (
    SELECT * FROM kommo.leads
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated_at DESC) = 1
), notes AS (
    SELECT entity_id, count(*) AS notes, count(*) FILTER (note_type LIKE 'call_%') AS calls
    FROM kommo.lead_notes_current GROUP BY entity_id
)
SELECT coalesce(r.name, '(no reason)') AS loss_reason, count(*) AS lost_leads,
       sum(coalesce(n.notes, 0)) AS notes, sum(coalesce(n.calls, 0)) AS calls
FROM current_leads AS l
LEFT JOIN kommo.loss_reasons AS r ON r.id = l.loss_reason_id
LEFT JOIN notes AS n ON n.entity_id = l.id
WHERE l.status_id = 143 AND NOT l.is_deleted
GROUP BY ALL
ORDER BY lost_leads DESC
"""

# The README's "Analysing" section shows these two with the demo's output.
LEADS_BY_UTM_SOURCE = """
SELECT utm_source, count(*) AS leads, sum(price) AS total_price,
       count(*) FILTER (WHERE vip) AS vip_leads
FROM kommo.leads_wide
GROUP BY utm_source
ORDER BY leads DESC
"""

FUNNEL = """
SELECT pipeline_name AS pipeline, status_name AS stage, leads_entered AS entered,
       leads_in_stage AS now_in_stage,
       round(median_seconds_in_stage / 86400, 1) AS median_days,
       round(conversion_to_next, 2) AS to_next, won, lost
FROM kommo.pipeline_funnel
ORDER BY pipeline_id, sort
"""


def main() -> int:
    started = time.monotonic()
    start, end = _window()
    config = SandboxConfig(seed=1, leads=LEADS, start=start, end=end)
    first, last = start.isoformat(), (end - timedelta(days=1)).isoformat()

    _say(f"Starting the Kommo sandbox ({LEADS} leads, {first}..{last}, 7 requests/s) ...")
    with SandboxProcess(config) as sandbox:
        _say(f"  serving the Kommo API v4 at {sandbox.base_url}")
        env = _environment(sandbox.base_url, sandbox.token, first_partition=first)

        _say("\n$ dagster asset materialize --select " + ",".join(_keys(FULL_TABLE_STREAMS)))
        _materialize(env, "--select", ",".join(_keys(FULL_TABLE_STREAMS)))

        # The derived tables (custom-field values, status changes) follow their parents' range
        # in the same run, computed in DuckDB without a request.
        incremental = ",".join(_keys(INCREMENTAL_STREAMS) + _derived(partitioned=True))
        _say(f"\n$ dagster asset materialize --select {incremental}")
        _say(f"    --partition-range {first}...{last}")
        _materialize(env, "--select", incremental, "--partition-range", f"{first}...{last}")
        views = ",".join(_derived(partitioned=False))
        _say(f"\n$ dagster asset materialize --select {views}")
        _materialize(env, "--select", views)
        stats = sandbox.stats()

    _say(
        f"\nThe sandbox served {stats['requests']} requests, at most "
        f"{stats['peak_requests_per_second']} in any second, with {stats['rate_limited']} "
        f"answered 429."
    )
    _report()
    _say(f"\nDone in {time.monotonic() - started:.0f} s.")
    _say(_next_steps(first, last))
    return 0


def _window() -> tuple[date, date]:
    """The sandbox's default window, or the last whole month if that is not over yet."""
    default = SandboxConfig()
    today = datetime.now(UTC).date()
    if default.end <= today:
        return default.start, default.end
    end = today.replace(day=1)
    return (end - timedelta(days=1)).replace(day=1), end


def _environment(base_url: str, token: str, *, first_partition: str) -> dict[str, str]:
    DAGSTER_HOME.mkdir(exist_ok=True)
    instance_config = DAGSTER_HOME / "dagster.yaml"
    if not instance_config.exists():
        # An empty file: Dagster's defaults (SQLite storage in this directory), without the
        # warning Dagster prints when the file is missing.
        instance_config.write_text("# The demo's Dagster instance: runs, event logs, schedules.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMMO_")}
    env.update(
        KOMMO_BASE_URL=base_url,
        KOMMO_API_TOKEN=token,
        KOMMO_START_DATE=first_partition,
        KOMMO_DUCKDB_PATH=str(DATABASE),
        DAGSTER_HOME=str(DAGSTER_HOME),
        PYTHONUNBUFFERED="1",
    )
    return env


def _keys(streams: tuple[str, ...]) -> list[str]:
    return [f"kommo/{s}" for s in streams]


def _derived(*, partitioned: bool) -> list[str]:
    """The derived tables partitioned like their parents, or the views."""
    settings = Settings(start_date=DEFAULT_START_DATE, duckdb_path=DATABASE)
    return [k.to_user_string() for k in derived_keys(settings, partitioned=partitioned)]


# "2026-... - dagster - INFO - __ASSET_JOB - <run id> - kommo__leads - <message>"
_LOG_LINE = re.compile(r" - dagster - (?P<level>[A-Z]+) - [^ ]+ - [0-9a-f-]{36} - (?P<rest>.*)$")


def _materialize(env: dict[str, str], *args: str) -> None:
    """Run the Dagster CLI; show the run's own messages (not Dagster's debug events)."""
    cmd = [DAGSTER, "asset", "materialize", "-m", "kommo_dagster.definitions", *args]
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        match = _LOG_LINE.search(line.rstrip())
        if not match:
            continue
        rest = match["rest"]
        ours = match["level"] in ("INFO", "WARNING", "ERROR") and "kommo/" in rest
        if ours or "RUN_SUCCESS" in rest or "RUN_FAILURE" in rest:
            _say("  " + rest.split(" - ", 1)[-1])
    if process.wait() != 0:
        sys.stdout.write("".join(output[-60:]))
        raise SystemExit(f"dagster asset materialize failed (exit {process.returncode})")


def _report() -> None:
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        _say(f"\nRows in {DATABASE.relative_to(ROOT)}:")
        width = max(map(len, [*STREAMS, *DERIVED_TABLES]))
        for stream, spec in STREAMS.items():
            [(count,)] = con.execute(f"SELECT count(*) FROM kommo.{stream}").fetchall()
            sync = f"daily by {spec.cursor}" if spec.is_incremental else "full table"
            _say(f"  kommo.{stream:<{width}} {count:>7,}  ({sync}, GET {spec.path})")
        _say("\nLeads per pipeline stage (latest version of each lead, deleted ones left out):")
        sys.stdout.flush()
        con.sql(LEADS_PER_STAGE).show(max_rows=60, max_width=110)
        _say("\nLost leads per loss reason, with the notes and calls on them:")
        sys.stdout.flush()
        con.sql(LOSS_REASONS_AND_NOTES).show(max_rows=20, max_width=110)
        _say("\nDerived in DuckDB, without a request:")
        for table in DERIVED_TABLES:
            [(count,)] = con.execute(f"SELECT count(*) FROM kommo.{table}").fetchall()
            _say(f"  kommo.{table:<{width}} {count:>7,}")
        _say("\nLeads by UTM source, from the wide view (one typed column per custom field):")
        _say(LEADS_BY_UTM_SOURCE.strip())
        sys.stdout.flush()
        con.sql(LEADS_BY_UTM_SOURCE).show(max_rows=20, max_width=110)
        _say("\nThe funnel: entered, in the stage now, median days spent, conversion onwards:")
        _say(FUNNEL.strip())
        sys.stdout.flush()
        con.sql(FUNNEL).show(max_rows=60, max_width=130)


def _next_steps(first: str, last: str) -> str:
    db = DATABASE.relative_to(ROOT)
    return f"""
Open the same runs and file in the Dagster UI (from {ROOT}):

  DAGSTER_HOME="$PWD/.dagster_home" KOMMO_DUCKDB_PATH={db} KOMMO_START_DATE={first} \\
    .venv/bin/dagster dev -w workspace.yaml

then browse http://127.0.0.1:3000 : Assets shows the {len(STREAMS)} kommo/* streams and what is
derived from them, partitions {first}..{last} materialized, and the runs above under Runs. To
materialize from the UI too, serve the sandbox in another terminal and add its two variables to
the command above:

  .venv/bin/kommo-sandbox --port 8765 --leads {LEADS}
  KOMMO_BASE_URL=http://127.0.0.1:8765 KOMMO_API_TOKEN=sandbox-token ...

Query the file yourself (while no run is writing it):

  .venv/bin/python -c "import duckdb; duckdb.connect('{db}', read_only=True)\\
.sql('FROM kommo.leads LIMIT 5').show()"
"""


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
