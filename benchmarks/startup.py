"""`python -m benchmarks.startup`: where a CLI run's CPU goes before its first request.

Starts one sandbox account (500 leads), configures the code location for it as
`benchmarks.launch` does (a migrated ``DAGSTER_HOME``, ``KOMMO_ACCOUNTS=acc0``), and runs
``dagster asset materialize -m kommo_dagster.definitions --select kommo/acc0/leads
--partition-range FIRST...LAST`` in a child process that records its own CPU time (user +
system) at Dagster's entry points: Dagster imported, the instance opened, our definitions loaded
and resolved, the run created (its planned events stored), and the first request written, where
the child stops. Each phase is the CPU from the previous mark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.run import Plan

# Imports of the child are the run's own: nothing of the benchmark is imported before the marks.
_MARKS: list[tuple[str, float]] = []


def _mark(name: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _MARKS.append((name, usage.ru_utime + usage.ru_stime))


def _around(owner: object, attr: str, *, before: str | None, after: str) -> None:
    """Mark ``before`` when ``owner.attr`` is called and ``after`` when it returns."""
    original = getattr(owner, attr)

    def wrapped(*args: object, **kwargs: object) -> object:
        if before is not None:
            _mark(before)
        try:
            return original(*args, **kwargs)
        finally:
            _mark(after)

    setattr(owner, attr, wrapped)


def _child(cli_args: list[str]) -> None:
    """Run the CLI, print the marks as JSON at the first request and exit."""
    _mark("Python started")
    import urllib3.connection

    def first_request(*_: object, **__: object) -> None:
        _mark("first request")
        print(json.dumps(_MARKS), file=sys.stderr, flush=True)
        os._exit(0)

    urllib3.connection.HTTPConnection.request = first_request  # type: ignore[method-assign]
    import dagster  # noqa: F401
    from dagster._cli import main
    from dagster._core.instance import factory
    from dagster._core.instance.runs.run_domain import RunDomain

    _mark("Dagster and its CLI imported")
    _around(factory, "create_instance_from_dagster_home", before=None, after="instance opened")
    _around(
        RunDomain,
        "create_run_for_job",
        before="definitions loaded and resolved",
        after="run created (its planned events stored)",
    )
    sys.argv = ["dagster", *cli_args]
    main()


def measure(plan: Plan, workdir: Path) -> list[tuple[str, float]]:
    from benchmarks.accounts import account_sandboxes
    from benchmarks.launch import code_location_env
    from benchmarks.run import ROOT

    config = plan.sandbox(leads=500, requests_per_second=plan.limit, latency_ms=plan.latency_ms)
    with account_sandboxes(config, 1) as accounts:
        env = code_location_env(accounts, plan, workdir)
        last = plan.data_end - timedelta(days=1)
        cli = ["asset", "materialize", "-m", "kommo_dagster.definitions", "--select"]
        cli += ["kommo/acc0/leads", "--partition-range", f"{plan.data_start}...{last}"]
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.startup", "--child", *cli],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    lines = [line for line in done.stderr.splitlines() if line.startswith("[[")]
    if not lines:
        raise RuntimeError(f"the run reached no request:\n{done.stderr[-3000:]}")
    return [(name, cpu) for name, cpu in json.loads(lines[-1])]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 1
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.parse_args(argv)
    from benchmarks.run import Plan

    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"kommo-startup-{os.getpid()}"
    try:
        marks = measure(Plan(latency_ms=300.0), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    previous = 0.0
    print("| until | CPU s | phase CPU s |\n|---|---|---|")
    for name, cpu in marks:
        print(f"| {name} | {cpu:.2f} | {cpu - previous:.2f} |")
        previous = cpu
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
