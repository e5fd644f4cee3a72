"""One extractor's share of a scenario, in its own process.

`benchmarks.run` starts ``python -m benchmarks.worker SPEC.json RESULT.json`` once per extractor
and scenario, so that the CPU time and the peak RSS it reads (``getrusage`` of this process and
its children) belong to that extraction alone: not to the sandbox (another process), not to the
orchestrator, not to the other extractor.

The worker runs the spec's runs in order. Before each it resets the sandbox's counters, after it
reads them back, so the requests, statuses and 429s of a run are the server's account, not the
extractor's. Each run extracts one stream over one window:

* ``dagster``: the real code location (`kommo_dagster.definitions.build_definitions`) through
  ``dagster.materialize`` in a temporary ``DAGSTER_HOME`` (SQLite instance), as a single-run
  backfill of the window's partition range, into a temporary DuckDB file;
* ``dlt``: the peer (`benchmarks.dlt_peer`), dlt's REST API source into another DuckDB file.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def peak_rss_bytes() -> int:
    """Peak resident set of this process (Linux reports ru_maxrss in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


class SandboxControl:
    """The sandbox's ``/__sandbox/`` endpoints (not counted as API requests)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def reset_stats(self) -> None:
        self.session.post(f"{self.base_url}/__sandbox/reset", timeout=60).raise_for_status()

    def stats(self) -> dict[str, Any]:
        resp = self.session.get(f"{self.base_url}/__sandbox/stats", timeout=60)
        resp.raise_for_status()
        return resp.json()


def day(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


# --- the Dagster path --------------------------------------------------------------------------


class DagsterRunner:
    """Materializes one stream's window through the project's code location, in process."""

    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        home = workdir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "DAGSTER_HOME": str(home),
            "KOMMO_START_DATE": spec["partitions_start"],
            "KOMMO_DUCKDB_PATH": spec.get("duckdb_path") or str(workdir / "kommo_bench.duckdb"),
            "KOMMO_REQUESTS_PER_SECOND": str(spec["requests_per_second"]),
            # The sandbox's budget may exceed Kommo's 7 per second (local runs).
            "KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT": "true",
            "KOMMO_RATE_LIMIT_DIR": spec.get("rate_limit_dir") or str(workdir / "ratelimit"),
            "KOMMO_STAGING_DIR": str(workdir / "staging"),
        }
        account = spec.get("account")
        if account is None:
            env.update(KOMMO_BASE_URL=spec["base_url"], KOMMO_API_TOKEN=spec["token"])
        else:
            # Several accounts, configured as a deployment would (KOMMO_ACCOUNTS); this worker
            # extracts one of them, as one of the deployment's concurrent runs.
            env["KOMMO_ACCOUNTS"] = ",".join(a["name"] for a in spec["accounts"])
            for a in spec["accounts"]:
                env[f"KOMMO_{a['name'].upper()}_BASE_URL"] = a["base_url"]
                env[f"KOMMO_{a['name'].upper()}_API_TOKEN"] = a["token"]
        os.environ.update(env)
        (workdir / "staging").mkdir(exist_ok=True)
        import dagster as dg

        from benchmarks.observed import ObservedKommoResource
        from kommo_dagster.builder import build_kommo_definitions
        from kommo_dagster.orchestration.accounts import Account, AccountScope, accounts_from_env

        self.dg = dg
        accounts = accounts_from_env()
        (mine,) = [a for a in accounts if a.settings.account == account]
        self.settings = mine.settings
        self.kommo = ObservedKommoResource.from_env(account=account)
        accounts[accounts.index(mine)] = Account(mine.settings, self.kommo)
        self.defs = build_kommo_definitions(accounts)
        self.key_prefix = AccountScope.of(self.settings).key_prefix
        self.instance = dg.DagsterInstance.get()

    def run(self, stream: str, start: int, end: int) -> dict[str, Any]:
        dg = self.dg
        first, last = day(start), day(end - 86_400)
        kwargs: dict[str, Any] = {}
        if first == last:
            kwargs["partition_key"] = first
        else:
            kwargs["tags"] = {
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            }
        self.kommo.observed.clear()
        result = dg.materialize(
            list(self.defs.assets or []),
            resources=self.defs.resources,
            selection=[dg.AssetKey([*self.key_prefix, stream])],
            instance=self.instance,
            raise_on_error=False,
            **kwargs,
        )
        if not result.success:
            raise RuntimeError(f"the Dagster run failed: {_failure(result) or 'unknown error'}")
        extract = None
        for event in result.get_asset_materialization_events():
            value = event.materialization.metadata.get("kommo/extract_seconds")
            if value is not None:
                extract = float(value.value)  # type: ignore[arg-type]
                break
        parts = [
            {
                "kind": p.kind,
                "start": p.start,
                "end": p.end,
                "requests": p.requests,
                "rows": p.rows,
            }
            for client in self.kommo.observed
            for p in client.stats().parts
        ]
        return {"extract_seconds": extract, "parts": parts}

    def lists(self, stream: str, start: int, end: int, out: dict[str, Any]) -> dict[str, int]:
        """The rows of each list the run wrote for the window, counted in its DuckDB table."""
        from kommo_dagster.kommo.streams import get_stream
        from kommo_dagster.warehouse.locks import connect

        spec = get_stream(stream)
        cursor = spec.cursor or "updated_at"
        table = f'{self.settings.schema}."{stream}"'
        # Through the project's lock: other workers' runs may be writing the same file.
        with connect(self.settings.duckdb_path, timeout=300, read_only=True) as con:
            if spec.has_deleted_list:
                live, deleted = con.execute(
                    f"SELECT count(*) FILTER (WHERE NOT is_deleted), "
                    f"count(*) FILTER (WHERE is_deleted) FROM {table} "
                    f"WHERE {cursor} >= ? AND {cursor} < ?",
                    [start, end],
                ).fetchone()  # type: ignore[misc]
                return {"live": int(live), "deleted": int(deleted)}
            (rows,) = con.execute(
                f"SELECT count(*) FROM {table} WHERE {cursor} >= ? AND {cursor} < ?",
                [start, end],
            ).fetchone()  # type: ignore[misc]
            return {"live": int(rows)}


def _failure(result: Any) -> str:
    """The exception the first failed step raised, unwrapped from Dagster's own errors."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None) if event.is_failure else None
        if error is None:
            continue
        # Dagster wraps the asset's exception; report that one, not its own causes.
        while error.cls_name.startswith("Dagster") and error.cause is not None:
            error = error.cause
        return error.message.strip()
    return ""


# --- the peer ----------------------------------------------------------------------------------


class DltRunner:
    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
        os.environ.setdefault("DLT_DATA_DIR", str(workdir / "dlt_data"))
        # Imported here, outside the measured runs, as Dagster is for the Dagster path.
        import dlt  # noqa: F401
        from dlt.sources.rest_api import rest_api_source  # noqa: F401

        from benchmarks import dlt_peer

        self.peer = dlt_peer
        self.spec = spec
        self.workdir = workdir

    def run(self, stream: str, start: int, end: int) -> dict[str, Any]:
        return self.peer.run_stream(
            base_url=self.spec["base_url"],
            token=self.spec["token"],
            stream=stream,
            start=start,
            end=end,
            workdir=self.workdir,
            extract_only=bool(self.spec.get("extract_only")),
        )

    def lists(self, stream: str, start: int, end: int, out: dict[str, Any]) -> dict[str, int]:
        """The rows of the one list the peer reads: its extract step's count, or the table's."""
        if out.get("extract_only"):
            return out["lists"]
        return {"live": self.peer.window_rows(self.workdir, stream, start, end)}


# --- main --------------------------------------------------------------------------------------


# What the sandbox counted in one run, copied into the run's record under the same names.
_SANDBOX_COUNTS = (
    "requests",
    "by_status",
    "by_path",
    "rate_limited",
    "violations",
    "peak_requests_per_second",
    "violations_handler",
    "peak_requests_per_second_handler",
    "arrival_clock",
    "peak_concurrency",
)


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Set the extractor up (its CPU reported apart), wait at the barrier if there is one, then
    run the spec's runs in order."""
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    control = SandboxControl(spec["base_url"])
    cpu0 = cpu_seconds()
    runner: DagsterRunner | DltRunner = (
        DagsterRunner(spec, workdir) if spec["engine"] == "dagster" else DltRunner(spec, workdir)
    )
    setup_cpu = cpu_seconds() - cpu0
    if spec.get("barrier"):
        _wait_at_barrier(Path(spec["barrier"]), spec["account"])
    return {
        "engine": spec["engine"],
        "runs": [_measure_run(runner, control, run) for run in spec["runs"]],
        "setup_cpu": setup_cpu,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _measure_run(
    runner: DagsterRunner | DltRunner, control: SandboxControl, run: dict[str, Any]
) -> dict[str, Any]:
    """One run, timed and its CPU counted around the extraction alone; the sandbox's counters
    are reset before and read after, and the rows written counted after, outside both."""
    control.reset_stats()
    began = time.time()
    c0, t0 = cpu_seconds(), time.perf_counter()
    error = None
    out: dict[str, Any] = {}
    try:
        out = runner.run(run["stream"], run["start"], run["end"])
    except Exception as exc:  # reported as a finding, not raised
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    stats = control.stats()
    if error is None:
        out["lists"] = runner.lists(run["stream"], run["start"], run["end"], out)
    return {
        **run,
        **out,
        "error": error,
        "began": began,
        "wall": wall,
        "cpu": cpu,
        **{name: stats[name] for name in _SANDBOX_COUNTS},
    }


def _wait_at_barrier(barrier: Path, name: str) -> None:
    """Say this worker is set up, then wait for the go: the accounts' runs start together,
    after every worker has paid its imports and definitions."""
    (barrier / f"{name}.ready").touch()
    go = barrier / "go"
    while not go.exists():
        time.sleep(0.02)


def window(start_day: str, days: int) -> tuple[int, int]:
    """Unix-second bounds of ``days`` whole UTC days from ``start_day``."""
    first = datetime.fromisoformat(start_day).replace(tzinfo=UTC)
    return int(first.timestamp()), int((first + timedelta(days=days)).timestamp())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    result = run_spec(spec)
    Path(args[1]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
