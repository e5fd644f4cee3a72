"""The demo: two Kommo sandbox accounts extracted side by side into one DuckDB file.

Run by `scripts/demo.sh` (which first installs the project into .venv). It starts two sandboxes as
subprocesses, an international kommo.com-style account (``br``) and a Russian amoCRM-style one
(``ru``), and configures one code location for both with ``KOMMO_ACCOUNTS=br,ru``. It then runs
the real Dagster CLI three times per account, the two accounts' runs at the same time (every
full-table stream; every incremental stream with the tables derived from it, as one single-run
range over the sandboxes' window; the analysis views; the lists come from the declarations),
prints every table's row count per account, two queries over ``kommo_all`` (the views that unite
the accounts) and four on one account's analysis views (a wide view, the funnel, the response
times per manager, the managers' month), and says how to open the same runs and file in
`dagster dev`.

Everything stays inside the repository: the database is ``data/kommo_demo.duckdb`` (not the
default ``data/kommo_crm.duckdb``, which is left for a real account) and the Dagster instance is
``.dagster_home/``; both are git-ignored. Any ``KOMMO_*`` variable already set in the shell is
ignored, so the demo can never reach a real account.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from kommo_dagster.derived.declaration import ACTIVITY_TABLES, DERIVED_TABLES
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import FULL_TABLE_STREAMS, INCREMENTAL_STREAMS, STREAMS
from kommo_dagster.orchestration.derived_selection import derived_keys
from kommo_dagster.orchestration.link_assets import link_keys
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess
from kommo_dagster.settings import DEFAULT_START_DATE, Settings

ROOT = Path(__file__).resolve().parents[1]
DATABASE = ROOT / "data" / "kommo_demo.duckdb"
DAGSTER_HOME = ROOT / ".dagster_home"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
# The accounts: name -> (sandbox flavour, seed, leads, what it stands for).
ACCOUNTS = {
    "br": ("kommo", 1, 1000, "an international kommo.com account"),
    "ru": ("amocrm", 2, 600, "a Russian amoCRM account (amocrm.ru)"),
}

LEADS_PER_ACCOUNT_AND_PIPELINE = """
SELECT l.account, p.name AS pipeline, count(*) AS leads,
       count(*) FILTER (l.status_id = 142) AS won, count(*) FILTER (l.status_id = 143) AS lost,
       sum(l.price) FILTER (l.status_id = 142) AS won_value
FROM kommo_all.leads_current AS l          -- every account's current leads, one view
JOIN kommo_all.pipelines AS p ON p.account = l.account AND p.id = l.pipeline_id
GROUP BY l.account, p.name, p.sort
ORDER BY l.account, p.sort
"""

LOSS_REASONS_AND_NOTES = """
WITH notes AS (
    SELECT account, entity_id, count(*) AS notes, count(*) FILTER (note_type LIKE 'call_%') AS calls
    FROM kommo_all.lead_notes_current GROUP BY ALL
)
SELECT l.account, coalesce(r.name, '(no reason)') AS loss_reason, count(*) AS lost_leads,
       sum(coalesce(n.notes, 0)) AS notes, sum(coalesce(n.calls, 0)) AS calls
FROM kommo_all.leads_current AS l
LEFT JOIN kommo_all.loss_reasons AS r ON r.account = l.account AND r.id = l.loss_reason_id
LEFT JOIN notes AS n ON n.account = l.account AND n.entity_id = l.id
WHERE l.status_id = 143
GROUP BY ALL
ORDER BY l.account, lost_leads DESC
"""

# The README's "Analysing" section shows these four with the demo's output (account br: 1,000
# leads of seed 1, the data `kommo-sandbox --leads 1000` serves).
LEADS_BY_UTM_SOURCE = """
SELECT utm_source, count(*) AS leads, sum(price) AS total_price,
       count(*) FILTER (WHERE vip) AS vip_leads
FROM kommo_br.leads_wide
GROUP BY utm_source
ORDER BY leads DESC
"""

FUNNEL = """
SELECT pipeline_name AS pipeline, status_name AS stage, leads_entered AS entered,
       leads_in_stage AS now_in_stage,
       round(median_seconds_in_stage / 86400, 1) AS median_days,
       round(conversion_to_next, 2) AS to_next, won, lost
FROM kommo_br.pipeline_funnel
ORDER BY pipeline_id, sort
"""


RESPONSE_TIMES = """
SELECT coalesce(u.name, CASE r.user_id WHEN 0 THEN '(bots)' END) AS manager, r.week,
       r.replies, round(r.median_response_seconds / 60, 1) AS median_min,
       round(r.p90_response_seconds / 3600, 1) AS p90_hours,
       round(r.share_within_5_min, 2) AS within_5_min, r.unanswered_runs AS unanswered
FROM kommo_br.response_time_by_manager AS r
LEFT JOIN kommo_br.users AS u ON u.id = r.user_id
WHERE r.week = (SELECT max(week) - 7 FROM kommo_br.response_time_by_manager)
ORDER BY r.replies DESC, manager
"""

MANAGERS_MONTH = """
SELECT coalesce(u.name, CASE a.user_id WHEN 0 THEN '(bots)' END) AS manager,
       sum(messages_sent) AS messages, sum(replies) AS replies,
       sum(calls_in + calls_out) AS calls, round(sum(call_seconds) / 3600, 1) AS call_hours,
       sum(stage_changes) AS stage_moves, sum(leads_won) AS won, sum(leads_lost) AS lost
FROM kommo_br.manager_activity_daily AS a
LEFT JOIN kommo_br.users AS u ON u.id = a.user_id
GROUP BY ALL
ORDER BY messages + calls + stage_moves DESC, manager
LIMIT 10
"""

# Impossible before the link tables: a lead row names no company.
WON_REVENUE_BY_COMPANY = """
SELECT co.name AS company, count(*) AS won_deals, sum(l.price) AS revenue
FROM kommo_br.leads_current AS l
JOIN kommo_br.lead_companies AS c ON c.lead_id = l.id
JOIN kommo_br.companies_current AS co ON co.id = c.company_id
WHERE l.status_id = 142
GROUP BY co.name
ORDER BY revenue DESC, company
LIMIT 10
"""


def main() -> int:
    started = time.monotonic()
    start, end = _window()
    first, last = start.isoformat(), (end - timedelta(days=1)).isoformat()
    with contextlib.ExitStack() as stack:
        sandboxes = _start_sandboxes(stack, start=start, end=end)
        env = _environment(sandboxes, first_partition=first)
        _materialize_everything(env, first=first, last=last)
        _served(sandboxes)
    _report()
    _say(f"\nDone in {time.monotonic() - started:.0f} s.")
    _say(_next_steps(first, last))
    return 0


def _start_sandboxes(
    stack: contextlib.ExitStack, *, start: date, end: date
) -> dict[str, SandboxProcess]:
    """One sandbox process per account, serving ``start`` up to ``end``; stopped when
    ``stack`` closes."""
    days = f"{start}..{end - timedelta(days=1)}"
    sandboxes = {}
    for name, (flavour, seed, leads, what) in ACCOUNTS.items():
        config = SandboxConfig(
            seed=seed,
            leads=leads,
            start=start,
            end=end,
            flavour=flavour,
            token=f"sandbox-token-{name}",
            subdomain=name,
        )
        _say(f"Starting sandbox {name}: {what}, {leads} leads, {days}, 7 requests/s")
        sandboxes[name] = stack.enter_context(SandboxProcess(config))
        _say(f"  serving the Kommo API v4 at {sandboxes[name].base_url}")
    return sandboxes


def _materialize_everything(env: dict[str, str], *, first: str, last: str) -> None:
    """The three CLI runs of each account, the accounts' runs side by side: the full-table
    streams, then the incremental ones with what derives from them, then the views."""
    _say("\nThe full-table streams, both accounts at once:")
    _side_by_side(env, {name: ["--select", _keys(name, FULL_TABLE_STREAMS)] for name in ACCOUNTS})
    # The derived tables (custom-field values, status changes) follow their parents' range
    # in the same run, computed in DuckDB without a request.
    _say(
        f"\nThe incremental streams and the tables derived from them, {first}..{last} as one "
        f"run per account, both at once:"
    )
    incremental = {
        name: [
            "--select",
            ",".join([_keys(name, INCREMENTAL_STREAMS), *_derived(name, partitioned=True)]),
            "--partition-range",
            f"{first}...{last}",
        ]
        for name in ACCOUNTS
    }
    _side_by_side(env, incremental)
    _say("\nThe analysis views, both accounts at once:")
    views = {name: ["--select", ",".join(_derived(name, partitioned=False))] for name in ACCOUNTS}
    _side_by_side(env, views)


def _served(sandboxes: dict[str, SandboxProcess]) -> None:
    """What each sandbox counted: its requests, its busiest second and its 429s."""
    for name, sandbox in sandboxes.items():
        stats = sandbox.stats()
        _say(
            f"\nSandbox {name} served {stats['requests']} requests, at most "
            f"{stats['peak_requests_per_second']} in any second, with "
            f"{stats['rate_limited']} answered 429."
        )


def _window() -> tuple[date, date]:
    """The sandbox's default window, or the last whole month if that is not over yet."""
    default = SandboxConfig()
    today = datetime.now(UTC).date()
    if default.end <= today:
        return default.start, default.end
    end = today.replace(day=1)
    return (end - timedelta(days=1)).replace(day=1), end


def _environment(sandboxes: dict[str, SandboxProcess], *, first_partition: str) -> dict[str, str]:
    DAGSTER_HOME.mkdir(exist_ok=True)
    instance_config = DAGSTER_HOME / "dagster.yaml"
    if not instance_config.exists():
        # Dagster's defaults (SQLite storage in this directory), and the Kommo client's own log
        # lines (retries, 429 pauses) in the runs' event logs, as deploy/dagster.yaml has them.
        instance_config.write_text(
            "# The demo's Dagster instance: runs, event logs, schedules.\n"
            "python_logs:\n  managed_python_loggers:\n    - kommo_dagster.kommo\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMMO_")}
    env.update(
        KOMMO_ACCOUNTS=",".join(sandboxes),
        KOMMO_START_DATE=first_partition,
        KOMMO_DUCKDB_PATH=str(DATABASE),
        DAGSTER_HOME=str(DAGSTER_HOME),
        PYTHONUNBUFFERED="1",
    )
    for name, sandbox in sandboxes.items():
        env[f"KOMMO_{name.upper()}_BASE_URL"] = sandbox.base_url
        env[f"KOMMO_{name.upper()}_API_TOKEN"] = sandbox.token
    # Two processes creating a brand-new instance's storage at once race in its migration.
    with dg.DagsterInstance.from_config(str(DAGSTER_HOME)) as instance:
        instance.get_runs()
    return env


def _keys(account: str, streams: tuple[str, ...]) -> str:
    return ",".join(f"kommo/{account}/{s}" for s in streams)


def _derived(account: str, *, partitioned: bool) -> list[str]:
    """The account's derived and link tables partitioned like their parents, or its views
    and the tables rebuilt whole."""
    settings = Settings(
        account=account,
        schema=f"kommo_{account}",
        start_date=DEFAULT_START_DATE,
        duckdb_path=DATABASE,
    )
    # Unpartitioned: the views, and the tables rebuilt whole from what the ranges extracted.
    keys = derived_keys(settings, partitioned=partitioned) + link_keys(
        settings, partitioned=partitioned
    )
    return [k.to_user_string() for k in keys]


# "2026-... - dagster - INFO - __ASSET_JOB - <run id> - kommo__leads - <message>"
_LOG_LINE = re.compile(r" - dagster - (?P<level>[A-Z]+) - [^ ]+ - [0-9a-f-]{36} - (?P<rest>.*)$")


def _side_by_side(env: dict[str, str], args: dict[str, list[str]]) -> None:
    """One `dagster asset materialize` per account, all at once; each run's own messages are
    shown (not Dagster's debug events) as they come."""
    for account_args in args.values():
        _say(f"  $ dagster asset materialize {' '.join(account_args)}")
    threads = [
        threading.Thread(target=_materialize, args=(env, name, account_args))
        for name, account_args in args.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if _FAILED:
        raise SystemExit(f"dagster asset materialize failed for {', '.join(_FAILED)}")


_FAILED: list[str] = []


def _materialize(env: dict[str, str], account: str, args: list[str]) -> None:
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
            _say(f"  [{account}] " + rest.split(" - ", 1)[-1])
    if process.wait() != 0:
        _say("".join(output[-60:]))
        _FAILED.append(account)


def _report() -> None:
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        _say(f"\nRows in {DATABASE.relative_to(ROOT)}, per account (schema kommo_<account>):")
        width = max(map(len, [*STREAMS, *DERIVED_TABLES, *ACTIVITY_TABLES]))
        _say(f"  {'stream':<{width}} " + " ".join(f"{name:>8}" for name in ACCOUNTS) + "  sync")
        for stream, spec in STREAMS.items():
            counts = [
                con.execute(f"SELECT count(*) FROM kommo_{name}.{stream}").fetchall()[0][0]
                for name in ACCOUNTS
            ]
            sync = f"daily by {spec.cursor}" if spec.is_incremental else "full table"
            cells = " ".join(f"{count:>8,}" for count in counts)
            _say(f"  {stream:<{width}} {cells}  ({sync}, GET {spec.path})")
        _say("\nLeads per account and pipeline, from the kommo_all views over both accounts:")
        sys.stdout.flush()
        con.sql(LEADS_PER_ACCOUNT_AND_PIPELINE).show(max_rows=60, max_width=110)
        _say("\nLost leads per account and loss reason, with the notes and calls on them:")
        sys.stdout.flush()
        con.sql(LOSS_REASONS_AND_NOTES).show(max_rows=30, max_width=110)
        _say("\nDerived in DuckDB, without a request:")
        _counts(con, [*DERIVED_TABLES, *ACTIVITY_TABLES], width=width)
        _say("\nLinks read from the leads and contacts pages (no request of their own):")
        _counts(con, LINK_TABLES, width=width)
        _say("\nbr's revenue of won deals by company, a join the link tables make possible:")
        _say(WON_REVENUE_BY_COMPANY.strip())
        sys.stdout.flush()
        con.sql(WON_REVENUE_BY_COMPANY).show(max_rows=20, max_width=110)
        _say("\nLeads by UTM source, from br's wide view (one typed column per custom field):")
        _say(LEADS_BY_UTM_SOURCE.strip())
        sys.stdout.flush()
        con.sql(LEADS_BY_UTM_SOURCE).show(max_rows=20, max_width=110)
        _say("\nbr's funnel: entered, in the stage now, median days spent, conversion onwards:")
        _say(FUNNEL.strip())
        sys.stdout.flush()
        con.sql(FUNNEL).show(max_rows=60, max_width=130)
        _say("\nbr's response times per manager, the last whole week (bots are user 0):")
        _say(RESPONSE_TIMES.strip())
        sys.stdout.flush()
        con.sql(RESPONSE_TIMES).show(max_rows=30, max_width=130)
        _say("\nWhat br's busiest managers did over the month, from manager_activity_daily:")
        sys.stdout.flush()
        con.sql(MANAGERS_MONTH).show(max_rows=10, max_width=130)


def _counts(con: duckdb.DuckDBPyConnection, tables: Iterable[str], *, width: int) -> None:
    """Each table's rows per account, one line a table."""
    for table in tables:
        counts = [
            con.execute(f"SELECT count(*) FROM kommo_{name}.{table}").fetchall()[0][0]
            for name in ACCOUNTS
        ]
        _say(f"  {table:<{width}} " + " ".join(f"{count:>8,}" for count in counts))


def _venv_bin() -> Path:
    """The tools of the environment running the demo (``KOMMO_VENV``'s, else ``.venv``), as a
    command run from the project's folder names them."""
    tools = Path(sys.prefix) / "bin"
    with contextlib.suppress(ValueError):
        return tools.relative_to(ROOT)
    return tools


def _next_steps(first: str, last: str) -> str:
    db = DATABASE.relative_to(ROOT)
    tools = _venv_bin()
    return f"""
Open the same runs and file in the Dagster UI (from {ROOT}):

  DAGSTER_HOME="$PWD/.dagster_home" KOMMO_ACCOUNTS=br,ru KOMMO_DUCKDB_PATH={db} \\
    KOMMO_START_DATE={first} {tools}/dagster dev -w workspace.yaml

then browse http://127.0.0.1:3000 : Assets shows the groups kommo_br and kommo_ru, with the
{len(STREAMS)} streams of each (kommo/br/<stream>, kommo/ru/<stream>) and what is derived from
them, partitions {first}..{last} materialized, and the runs above under Runs. To materialize
from the UI too, serve the sandboxes in other terminals and add their variables to the command
above:

  {tools}/kommo-sandbox --port 8765 --leads 1000 --subdomain br --token sandbox-token-br
  {tools}/kommo-sandbox --port 8766 --leads 600 --seed 2 --flavour amocrm --subdomain ru \\
    --token sandbox-token-ru
  KOMMO_BR_BASE_URL=http://127.0.0.1:8765 KOMMO_BR_API_TOKEN=sandbox-token-br \\
  KOMMO_RU_BASE_URL=http://127.0.0.1:8766 KOMMO_RU_API_TOKEN=sandbox-token-ru ...

Query the file yourself (while no run is writing it):

  {tools}/python -c "import duckdb; duckdb.connect('{db}', read_only=True)\\
.sql('SELECT account, count(*) FROM kommo_all.leads_current GROUP BY 1').show()"
"""


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
