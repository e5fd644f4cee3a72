"""`python -m benchmarks.run`: the benchmark of issue 6, run by hand (never by the tests).

Starts the Kommo sandbox in its own process, drives the real Dagster path (and the dlt peer) in
worker processes (`benchmarks.worker`), and prints one row per scenario and extractor:

1. ceiling: 300 ± 50 ms latency, 7 requests/s, about 100,000 leads: requests against the
   minimum, achieved rate over the limit, wall time over the minimum time, 429s;
2. local: no latency, no limit, 500,000 leads: CPU seconds per 100,000 rows, peak RSS;
3. quiet: after the backfill, today's partition with nothing changed: requests per list;
4. the peer (dlt's REST API source) in the same sandboxes, in the same run;
5. accounts: ten sandbox accounts of 20,000 leads, 7 requests/s and 300 ms each, extracted at
   once through the multi-account configuration (`benchmarks.accounts`).

See benchmarks/README.md for the choices behind each figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import metrics
from benchmarks.accounts import account_sandboxes, run_accounts
from benchmarks.metrics import Row
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
SCENARIOS = ("ceiling", "local", "quiet", "accounts")
EXTRACTORS = ("dagster", "dlt")
NAMES = {"dagster": "kommo-dagster", "dlt": "dlt rest_api (peer)"}
DAY = 86_400


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Sizes and settings of one benchmark run (`--quick` shrinks them to a smoke test)."""

    seed: int = 1
    today: date = dataclasses.field(default_factory=lambda: datetime.now(UTC).date())
    # Days of generated data; they end a few days before today, so today's partition is quiet.
    data_days: int = 31
    # Scenario 1.
    ceiling_leads: int = 100_000
    latency_ms: float = 300.0
    jitter_ms: float = 50.0
    limit: float = 7.0
    # Days of contacts, companies, tasks and events read in scenario 1 (see the README: the
    # other streams are scaled down so the whole benchmark fits in 15 minutes on 2 cores).
    other_days: int = 1
    # Scenario 2.
    local_leads: int = 500_000
    # The client's budget when the sandbox has no limit (the resource needs a number).
    local_client_rps: float = 1000.0
    # Days of leads the peer reads in scenario 2 (all of them would take it most of an hour).
    peer_local_days: int = 1
    # Whether the peer runs dlt's normalize and load in scenario 1 (its extract step is what
    # meets the API; normalizing 100,000 leads takes dlt several minutes).
    peer_ceiling_load: bool = False
    # Scenario 5: accounts extracted at once, leads in each.
    accounts: int = 10
    account_leads: int = 20_000
    # Incremental streams to benchmark (all five by default).
    streams: tuple[str, ...] = INCREMENTAL_STREAMS
    worker_timeout: float = 1800.0

    @property
    def data_start(self) -> date:
        return self.today - timedelta(days=self.data_days + 4)

    @property
    def data_end(self) -> date:
        return self.data_start + timedelta(days=self.data_days)

    def epoch(self, d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())

    def full_window(self) -> tuple[int, int]:
        return self.epoch(self.data_start), self.epoch(self.data_end)

    def other_window(self) -> tuple[int, int]:
        """The ``other_days`` days before the data's last day (that day holds a bulk edit)."""
        end = self.data_end - timedelta(days=1)
        return self.epoch(end - timedelta(days=self.other_days)), self.epoch(end)

    def quiet_window(self) -> tuple[int, int]:
        return self.epoch(self.today), self.epoch(self.today) + DAY

    def peer_local_window(self) -> tuple[int, int]:
        start = self.epoch(self.data_start)
        return start, start + self.peer_local_days * DAY

    def sandbox(self, **overrides: Any) -> SandboxConfig:
        return SandboxConfig(seed=self.seed, start=self.data_start, end=self.data_end, **overrides)


QUICK = {
    "ceiling_leads": 2_000,
    "local_leads": 10_000,
    "accounts": 2,
    "account_leads": 2_000,
    "worker_timeout": 300.0,
}


def dlt_available() -> bool:
    try:
        import dlt  # noqa: F401
        from dlt.sources import rest_api  # noqa: F401
    except ImportError:
        return False
    return True


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_worker(
    spec: dict[str, Any], *, workdir: Path, label: str, timeout: float
) -> dict[str, Any]:
    """Run ``benchmarks.worker`` on ``spec``; its output goes to a log file in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps({**spec, "workdir": str(workdir)}))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log_path = workdir / "worker.log"
    began = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", str(spec_path), str(result_path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{label}: the worker exited with {proc.returncode}:\n{tail}")
    _log(f"{label}: done in {time.perf_counter() - began:.0f}s")
    return json.loads(result_path.read_text())


def _runs(stream_windows: Sequence[tuple[str, tuple[int, int]]]) -> list[dict[str, Any]]:
    return [{"stream": s, "start": lo, "end": hi} for s, (lo, hi) in stream_windows]


def _row(
    scenario: str,
    extractor: str,
    runs: list[dict[str, Any]],
    *,
    kind: str,
    limit: float | None,
    rss: int | None = None,
    note: str = "",
) -> Row:
    row = Row(
        scenario=scenario,
        extractor=NAMES[extractor],
        streams=[metrics.stream_figures(r) for r in runs],
        peak_rss_bytes=rss,
        limit=limit,
        note=note,
    )
    row.targets = metrics.evaluate_targets(row, kind=kind)
    return row


def _worker_spec(
    extractor: str,
    sandbox: SandboxProcess,
    plan: Plan,
    *,
    requests_per_second: float,
    runs: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """What one extractor's worker is given: the sandbox, the partitions, the budget, the runs."""
    return {
        "engine": extractor,
        "base_url": sandbox.base_url,
        "token": sandbox.token,
        "partitions_start": plan.data_start.isoformat(),
        "requests_per_second": requests_per_second,
        **extra,
        "runs": runs,
    }


def ceiling_and_quiet(
    plan: Plan, *, scenarios: set[str], extractors: list[str], tmp: Path
) -> list[Row]:
    """Scenarios 1 and 3 share one sandbox: the quiet run follows the backfill."""
    config = plan.sandbox(
        leads=plan.ceiling_leads,
        requests_per_second=plan.limit,
        latency_ms=plan.latency_ms,
        latency_jitter_ms=plan.jitter_ms,
    )
    full, other, quiet = plan.full_window(), plan.other_window(), plan.quiet_window()
    ceiling_runs = _runs([(s, full if s == "leads" else other) for s in plan.streams])
    quiet_runs = _runs([(s, quiet) for s in plan.streams])
    runs = (ceiling_runs if "ceiling" in scenarios else []) + (
        quiet_runs if "quiet" in scenarios else []
    )
    rows: list[Row] = []
    _log(f"ceiling sandbox: {plan.ceiling_leads:,} leads, {plan.limit:g}/s, {plan.latency_ms:g} ms")
    with SandboxProcess(config, startup_timeout=600) as sandbox:
        for extractor in extractors:
            extract_only = extractor == "dlt" and not plan.peer_ceiling_load
            spec = _worker_spec(
                extractor,
                sandbox,
                plan,
                requests_per_second=plan.limit,
                runs=runs,
                extract_only=extract_only,
            )
            result = run_worker(
                spec,
                workdir=tmp / f"ceiling-{extractor}",
                label=f"ceiling/quiet, {NAMES[extractor]}",
                timeout=plan.worker_timeout,
            )
            done = result["runs"]
            if "ceiling" in scenarios:
                rows.append(
                    _ceiling_row(
                        plan, extractor, done[: len(ceiling_runs)], extract_only=extract_only
                    )
                )
            if "quiet" in scenarios:
                rows.append(_quiet_row(plan, extractor, done[-len(quiet_runs) :]))
    return rows


def _ceiling_row(
    plan: Plan, extractor: str, runs: list[dict[str, Any]], *, extract_only: bool
) -> Row:
    """Scenario 1's row: the backfill's runs, judged against the limit."""
    note = (
        f"leads over {plan.data_days} days, the other streams over "
        f"{plan.other_days} day(s); one run per stream"
    )
    if extract_only:
        note += "; dlt's extract step only"
    return _row("1 ceiling", extractor, runs, kind="ceiling", limit=plan.limit, note=note)


def _quiet_row(plan: Plan, extractor: str, runs: list[dict[str, Any]]) -> Row:
    """Scenario 3's row: today's partition after the backfill, nothing changed."""
    note = f"partition {plan.today.isoformat()}, nothing changed"
    return _row("3 quiet day", extractor, runs, kind="quiet", limit=None, note=note)


def local_cost(plan: Plan, *, extractors: list[str], tmp: Path) -> list[Row]:
    config = plan.sandbox(leads=plan.local_leads, requests_per_second=None)
    rows: list[Row] = []
    _log(f"local sandbox: {plan.local_leads:,} leads, no latency, no limit")
    with SandboxProcess(config, startup_timeout=900) as sandbox:
        for extractor in extractors:
            if extractor == "dagster":
                runs = _runs([("leads", plan.full_window())])
                note = f"all {plan.data_days} days of leads"
            else:
                runs = _runs([("leads", plan.peer_local_window())])
                note = (
                    f"first {plan.peer_local_days} day(s) of leads only; peak RSS is for those "
                    "rows, not comparable"
                )
            spec = _worker_spec(
                extractor, sandbox, plan, requests_per_second=plan.local_client_rps, runs=runs
            )
            result = run_worker(
                spec,
                workdir=tmp / f"local-{extractor}",
                label=f"local, {NAMES[extractor]}",
                timeout=plan.worker_timeout,
            )
            row = _row(
                "2 local cost",
                extractor,
                result["runs"],
                kind="local",
                limit=None,
                rss=result["peak_rss_bytes"],
                note=note,
            )
            if extractor == "dlt":
                # Its RSS is for a fraction of the rows: no verdict on the 500,000-lead target.
                row.targets = {k: v for k, v in row.targets.items() if "RSS" not in k}
            rows.append(row)
    return rows


def many_accounts(plan: Plan, *, tmp: Path) -> list[Row]:
    """Scenario 5: ``plan.accounts`` sandboxes, their leads extracted at once (ours only: the
    peer has no shared budget or multi-account configuration to compare)."""
    config = plan.sandbox(
        leads=plan.account_leads,
        requests_per_second=plan.limit,
        latency_ms=plan.latency_ms,
        latency_jitter_ms=plan.jitter_ms,
    )
    _log(
        f"accounts: {plan.accounts} sandboxes of {plan.account_leads:,} leads, {plan.limit:g}/s, "
        f"{plan.latency_ms:g} ms each"
    )
    with account_sandboxes(config, plan.accounts) as accounts:
        result = run_accounts(
            accounts=accounts,
            sandbox_pids=[a["pid"] for a in accounts],
            spec={
                "partitions_start": plan.data_start.isoformat(),
                "requests_per_second": plan.limit,
                "runs": _runs([("leads", plan.full_window())]),
            },
            workdir=tmp / "accounts",
            timeout=plan.worker_timeout,
        )
    _log(result.summary())
    streams = []
    for run in result.runs:
        figures = metrics.stream_figures(run)
        figures.stream = f"{run['account']}/leads"
        streams.append(figures)
    row = Row(
        scenario="5 accounts",
        extractor=NAMES["dagster"],
        streams=streams,
        limit=plan.limit,
        note=result.summary(),
        concurrent=True,
    )
    row.targets = metrics.evaluate_targets(row, kind="accounts")
    return [row]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other work on the machine slows CPU-bound figures: say how busy it was.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def render(
    rows: list[Row], *, plan: Plan, started: datetime, seconds: float, notes: list[str]
) -> str:
    m = machine()
    memory = f", {m['memory_gib']:g} GiB" if "memory_gib" in m else ""
    lines = [
        f"Run {started.strftime('%Y-%m-%d %H:%M')} UTC on {m['cpus']} cores{memory}, "
        f"Python {m['python']} ({m['platform']}); load average {m['load_average_1min']:g} at the "
        f"end; the benchmark took {seconds / 60:.1f} min.",
        "",
        f"Sandbox data: {plan.data_start} .. {plan.data_end} (seed {plan.seed}). Scenario 1: "
        f"{plan.ceiling_leads:,} leads, {plan.latency_ms:g} ± {plan.jitter_ms:g} ms, "
        f"{plan.limit:g} requests/s. Scenario 2: {plan.local_leads:,} leads, no latency, no "
        f"limit. Scenario 3: partition {plan.today}. Scenario 5: {plan.accounts} accounts of "
        f"{plan.account_leads:,} leads, each {plan.latency_ms:g} ± {plan.jitter_ms:g} ms and "
        f"{plan.limit:g} requests/s, at once.",
        "",
        metrics.summary_table(rows),
        "",
        "Per stream:",
        "",
        metrics.streams_table(rows),
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def update_readme(markdown: str, readme: Path = README) -> None:
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END)
    readme.write_text(text[: start + len(README_START)] + "\n" + markdown + text[end:])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark kommo-dagster against the Kommo sandbox (and the dlt peer).",
    )
    p.add_argument("--quick", action="store_true", help="a small smoke configuration")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)",
    )
    p.add_argument(
        "--extractors",
        default=",".join(EXTRACTORS),
        help="comma-separated subset of dagster,dlt (dlt is skipped when not installed)",
    )
    p.add_argument("--ceiling-leads", type=int, help="leads in scenario 1")
    p.add_argument("--other-days", type=int, help="days of the other streams in scenario 1")
    p.add_argument("--local-leads", type=int, help="leads in scenario 2")
    p.add_argument("--peer-local-days", type=int, help="days of leads the peer reads in 2")
    p.add_argument("--accounts", type=int, help="accounts extracted at once in 5 (10)")
    p.add_argument("--account-leads", type=int, help="leads of each account in 5 (20,000)")
    p.add_argument("--latency-ms", type=float, help="sandbox latency in scenario 1 (300)")
    p.add_argument("--jitter-ms", type=float, help="latency jitter in scenario 1 (50)")
    p.add_argument(
        "--streams",
        help=f"comma-separated incremental streams (default: {','.join(INCREMENTAL_STREAMS)})",
    )
    p.add_argument(
        "--peer-ceiling-load",
        action="store_true",
        help="let the peer normalize and load in scenario 1 too (slow)",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.md/json go")
    p.add_argument("--no-save", action="store_true", help="print only; write no files")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (worker logs, DuckDB files) and print where it is",
    )
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="replace the results section of benchmarks/README.md",
    )
    return p


def plan_from_args(ns: argparse.Namespace) -> Plan:
    overrides: dict[str, Any] = dict(QUICK) if ns.quick else {}
    for name in (
        "ceiling_leads",
        "other_days",
        "local_leads",
        "peer_local_days",
        "accounts",
        "account_leads",
        "latency_ms",
        "jitter_ms",
    ):
        value = getattr(ns, name)
        if value is not None:
            overrides[name] = value
    if ns.streams:
        overrides["streams"] = tuple(_split(ns.streams, INCREMENTAL_STREAMS, "stream"))
    if ns.peer_ceiling_load:
        overrides["peer_ceiling_load"] = True
    return Plan(**overrides)


def _split(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise SystemExit(f"unknown {what}: {unknown or value!r}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    plan = plan_from_args(ns)
    scenarios = set(_split(ns.scenarios, SCENARIOS, "scenario"))
    extractors = _split(ns.extractors, EXTRACTORS, "extractor")
    notes: list[str] = []
    if "dlt" in extractors and not dlt_available():
        extractors.remove("dlt")
        notes.append("The dlt peer was skipped: dlt is not installed (pip install -e '.[bench]').")
        _log(notes[-1])
    started, began = datetime.now(UTC), time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kommo-bench-") as tmp_name:
        tmp = Path(tempfile.mkdtemp(prefix="kommo-bench-")) if ns.keep else Path(tmp_name)
        if ns.keep:
            _log(f"working directory (kept): {tmp}")
        if scenarios & {"ceiling", "quiet"}:
            rows += ceiling_and_quiet(plan, scenarios=scenarios, extractors=extractors, tmp=tmp)
        if "local" in scenarios:
            rows += local_cost(plan, extractors=extractors, tmp=tmp)
        if "accounts" in scenarios:
            rows += many_accounts(plan, tmp=tmp)
    order = {"1": 0, "2": 1, "3": 2, "5": 3}
    rows.sort(key=lambda r: (order.get(r.scenario[0], 9), r.extractor != NAMES["dagster"]))
    seconds = time.perf_counter() - began
    markdown = render(rows, plan=plan, started=started, seconds=seconds, notes=notes)
    print()
    print(markdown)
    if not ns.no_save:
        ns.out.mkdir(parents=True, exist_ok=True)
        (ns.out / "latest.md").write_text(markdown)
        payload = {
            "started": started.isoformat(),
            "seconds": seconds,
            "machine": machine(),
            "plan": {k: str(v) for k, v in dataclasses.asdict(plan).items()},
            "rows": [metrics.as_dict(r) for r in rows],
            "notes": notes,
        }
        (ns.out / "latest.json").write_text(json.dumps(payload, indent=1, default=str))
        _log(f"results written to {ns.out}/latest.md and latest.json")
    if ns.update_readme:
        update_readme(markdown)
        _log(f"updated {README}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
