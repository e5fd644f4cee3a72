"""`python -m benchmarks.startup`: where a CLI run's CPU goes before its first request.

Starts ``--accounts`` sandbox accounts (500 leads each), configures the code location for all
of them as `benchmarks.launch` does (a migrated ``DAGSTER_HOME``, ``KOMMO_ACCOUNTS=acc0,...``),
and runs ``dagster asset materialize -m kommo_dagster.definitions --select kommo/acc0/leads
--partition-range FIRST...LAST`` in a child process that records its own CPU time (user +
system) at Dagster's entry points: Dagster imported, the instance opened, our definitions loaded
and resolved, the run created (its planned events stored), and the first request written, where
the child stops. Each phase is the CPU from the previous mark.

``--compare CHECKOUT`` runs another checkout's code the same way (say a git worktree of the commit
before a change), alternating with this one's tries, so both see the same machine. ``--floor``
also runs `benchmarks.floor_location`, the smallest code location with the same asset key,
partitions and number of checks: what Dagster costs any code location up to its first request.
``--env NAME=VALUE`` sets a variable in every try's environment, say one of Dagster's own
switches (``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true``), to weigh what it saves.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from benchmarks.run import Plan

DEFINITIONS = "kommo_dagster.definitions"
FLOOR = "benchmarks.floor_location"


class Target(NamedTuple):
    """What a try runs: the checkout whose code comes first on the path, and the module."""

    root: Path
    module: str = DEFINITIONS

    def label(self) -> str:
        return str(self.root) if self.module == DEFINITIONS else f"{self.module} ({self.root})"


# Imports of the child are the run's own: nothing of the benchmark is imported before the marks.
_MARKS: list[tuple[str, float, float]] = []


class Mark(NamedTuple):
    """A point of the run: the process's CPU by then, and the wall time since its launch."""

    name: str
    cpu: float
    wall: float


def _mark(name: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _MARKS.append((name, usage.ru_utime + usage.ru_stime, time.time()))


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


def _child_marks(root: Path, env: dict[str, str], cli: list[str]) -> list[Mark]:
    """One CLI run of the code in ``root`` (its ``kommo_dagster`` first on the path)."""
    launched = time.time()
    # This file run as a script: nothing of ``root``'s own benchmarks is needed, and its
    # ``kommo_dagster`` comes first on the path (before this checkout's, installed editable).
    done = subprocess.run(
        [sys.executable, __file__, "--child", *cli],
        cwd=root,
        env=env | {"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("[[")]
    if not lines:
        raise RuntimeError(f"the run of {root} reached no request:\n{done.stderr[-3000:]}")
    return [Mark(name, cpu, wall - launched) for name, cpu, wall in json.loads(lines[-1])]


def measure(
    plan: Plan,
    workdir: Path,
    *,
    accounts: int,
    tries: int,
    targets: list[Target],
    extra_env: dict[str, str] | None = None,
) -> dict[Target, list[list[Mark]]]:
    """``tries`` CLI runs of each target, alternating, against ``accounts`` sandbox accounts
    (the code location configured for all of them, the run of the first)."""
    from benchmarks.accounts import account_sandboxes
    from benchmarks.launch import code_location_env

    config = plan.sandbox(leads=500, requests_per_second=plan.limit, latency_ms=plan.latency_ms)
    last = plan.data_end - timedelta(days=1)
    selection = ["--select", "kommo/acc0/leads", "--partition-range", f"{plan.data_start}...{last}"]
    marks: dict[Target, list[list[Mark]]] = {t: [] for t in targets}
    for root in {t.root for t in targets}:
        _compile(root)
    with account_sandboxes(config, accounts) as sandboxes:
        for i in range(tries):
            for k, target in enumerate(targets):
                home = workdir / f"try{i}-{k}"
                env = code_location_env(sandboxes, plan, home) | (extra_env or {})
                cli = ["asset", "materialize", "-m", target.module, *selection]
                marks[target].append(_child_marks(target.root, env, cli))
                shutil.rmtree(home, ignore_errors=True)
    return marks


def _compile(root: Path) -> None:
    """Bytecode for ``root``'s code, as an installed package has it (pip compiles on install).
    Without it a checkout that never wrote its ``__pycache__`` (``PYTHONDONTWRITEBYTECODE``, a
    fresh worktree) compiles every module in each try, and its load looks ~0.05 s dearer."""
    dirs = [str(root / d) for d in ("kommo_dagster", "benchmarks") if (root / d).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True)


def _assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--env``, refused with the value given when it has no name."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _table(runs: list[list[Mark]]) -> str:
    """Each phase's CPU, per try and the median of the tries, and the wall time from launch."""
    lines = [
        "| until | phase CPU s, each try | median | CPU s by then (median) | wall s (median) |",
        "|---|---|---|---|---|",
    ]
    for k, mark in enumerate(runs[0]):
        phase = [run[k].cpu - (run[k - 1].cpu if k else 0.0) for run in runs]
        total = statistics.median(run[k].cpu for run in runs)
        wall = statistics.median(run[k].wall for run in runs)
        each = ", ".join(f"{p:.2f}" for p in phase)
        median = statistics.median(phase)
        lines.append(f"| {mark.name} | {each} | {median:.2f} | {total:.2f} | {wall:.2f} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--accounts", type=int, default=1, help="accounts in the code location")
    parser.add_argument("--tries", type=int, default=3, help="runs of each checkout")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        metavar="CHECKOUT",
        help="another checkout of the project (e.g. a git worktree of an older commit), run "
        "alternately with this one; its own kommo_dagster is loaded",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help=f"also run {FLOOR}: one partitioned asset and its checks, no code of ours",
    )
    parser.add_argument(
        "--env",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable set in every try's environment (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 1
    args = _parser().parse_args(argv)
    from benchmarks.run import ROOT, Plan

    targets = [*(Target(p.resolve()) for p in args.compare), Target(ROOT)]
    if args.floor:
        targets.append(Target(ROOT, FLOOR))
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"kommo-startup-{os.getpid()}"
    load = os.getloadavg()
    try:
        marks = measure(
            Plan(latency_ms=300.0),
            workdir,
            accounts=args.accounts,
            tries=args.tries,
            targets=targets,
            extra_env=dict(args.env),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for name, value in args.env:
        print(f"with {name}={value}")
    for target, runs in marks.items():
        print(f"\n{target.label()} ({args.accounts} accounts configured, {args.tries} tries)\n")
        print(_table(runs))
    loads = f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    print(f"\nload average {loads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
