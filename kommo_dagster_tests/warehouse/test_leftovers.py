"""Staging directories left by killed runs, with real processes: the next run removes those
whose process has ended, and keeps a live process's, another machine's, and anything without
this project's owner marker."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.leftovers import OWNER_FILE, STAGING_PREFIX, sweep_staging
from kommo_dagster.warehouse.owners import Owner, this_process
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster_tests.rows import synthetic_columns
from kommo_dagster_tests.warehouse.conftest import child_python

LEADS = get_stream("leads")

# A run that stages a batch of leads in argv[1], says where, and keeps it until told to end.
_STAGING_RUN = """
import sys
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster_tests.rows import synthetic_columns
staged = StagedRows(get_stream("leads"), window=None, staging_dir=sys.argv[1])
staged.append(synthetic_columns(staged.stream, 3))
print(staged.directory, flush=True)
sys.stdin.readline()
staged.discard()
"""


@pytest.mark.timeout(120)
def test_the_next_run_removes_a_killed_runs_staging_directory_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    staging = tmp_path / "staging"
    foreign = staging / f"{STAGING_PREFIX}leads-not-ours"
    foreign.mkdir(parents=True)
    (foreign / "data").write_bytes(b"x" * 1000)
    with child_python(_STAGING_RUN, staging) as killed, child_python(_STAGING_RUN, staging) as live:
        left, kept = Path(killed.line), Path(live.line)
        assert left.parent == staging and (left / OWNER_FILE).exists()
        (left / "spill").write_bytes(b"x" * 3_000_000)  # what a big extraction spills
        killed.kill()
        assert left.exists()  # nothing removes it while no run stages
        with caplog.at_level(logging.INFO, logger="kommo_dagster.warehouse.leftovers"):
            staged = StagedRows(LEADS, window=None, staging_dir=staging)
            staged.append(synthetic_columns(LEADS, 2))
        assert not left.exists()
        # The live run's directory, and one this project did not mark, are kept.
        assert live.running() and (kept / OWNER_FILE).exists()
        assert (foreign / "data").exists()
        assert staged.directory is not None and staged.directory.exists()
        removed = [r.getMessage() for r in caplog.records if "ended run" in r.getMessage()]
        assert removed == [f"removed {left} (3.0 MB), left by an ended run"]
        staged.discard()
    # The live run ended as usual and cleared its own; the foreign directory is still there.
    assert sorted(p.name for p in staging.iterdir()) == [foreign.name]


def _left_by(staging: Path, name: str, owner: Owner) -> Path:
    directory = staging / f"{STAGING_PREFIX}leads-{name}"
    directory.mkdir(parents=True)
    (directory / OWNER_FILE).write_text(owner.to_json())
    return directory


def test_a_reused_pid_is_not_taken_for_the_owner_and_other_machines_are_left_alone(
    tmp_path: Path,
):
    me = this_process()
    assert me.started is not None, "the start time is read on Linux"
    # This PID, but a process that started at another time: the owner ended, the PID was reused.
    reused = _left_by(tmp_path, "reused", dataclasses.replace(me, started=f"{me.started}0"))
    mine = _left_by(tmp_path, "mine", me)
    elsewhere = _left_by(tmp_path, "elsewhere", dataclasses.replace(me, host=f"{me.host}-other"))
    other_ns = _left_by(tmp_path, "other-ns", dataclasses.replace(me, namespace="pid:[1]"))
    unreadable = _left_by(tmp_path, "unreadable", me)
    (unreadable / OWNER_FILE).write_text("PID 1")
    # A link to a directory an ended run left is not followed.
    target = _left_by(
        tmp_path / "elsewhere", "target", dataclasses.replace(me, started=f"{me.started}0")
    )
    (tmp_path / f"{STAGING_PREFIX}link").symlink_to(target, target_is_directory=True)

    assert sweep_staging(tmp_path) == [reused]
    assert all(d.exists() for d in (mine, elsewhere, other_ns, unreadable, target))


def test_a_killed_process_has_ended_a_live_one_has_not():
    with child_python(
        "import sys; from kommo_dagster.warehouse.owners import this_process; "
        "print(this_process().to_json(), flush=True); sys.stdin.readline()"
    ) as child:
        owner = Owner.from_json(child.line)
        assert owner is not None and owner.pid == child.pid
        # Alive: not ended, whether or not its start time is known.
        assert not owner.has_ended()
        assert not dataclasses.replace(owner, started=None).has_ended()
        child.kill()
    assert owner.has_ended()
    # Without a start time, a PID no process has is enough.
    assert dataclasses.replace(owner, started=None).has_ended()
    assert not this_process().has_ended()


def test_an_owner_record_round_trips_and_anything_else_is_no_owner():
    me = this_process()
    assert Owner.from_json(me.to_json()) == me
    for text in ("", "PID 12", "[]", '{"host": "h", "pid": "12"}', me.to_json()[:-1]):
        assert Owner.from_json(text) is None
    for pid in (0, -1, 2**31, True):
        assert Owner.from_json(dataclasses.replace(me, pid=pid).to_json()) is None


def _ended_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def test_another_boot_is_not_taken_for_this_machine_and_its_owner_for_ended(tmp_path: Path):
    """Every machine's first PID namespace has the same id: a machine that shares the staging
    directory and has this host name records what this machine would, but for its boot id. Its
    live run's PID may have no process here, or another process: neither says it ended."""
    me = this_process()
    assert me.started is not None, "the start time is read on Linux"
    ticks = me.started.rpartition("/")[2]
    other_boot = dataclasses.replace(me, started=f"00000000-0000-0000-0000-000000000000/{ticks}")
    no_process_here = dataclasses.replace(other_boot, pid=_ended_pid())
    for owner in (other_boot, no_process_here):
        assert not owner.has_ended()
        _left_by(tmp_path, f"pid-{owner.pid}", owner)
    assert sweep_staging(tmp_path) == []
    # Recorded with this boot's id, both are judged: each process has certainly ended.
    for owner in (other_boot, no_process_here):
        assert dataclasses.replace(owner, started=f"{me.started}0").has_ended()


def test_a_marker_that_is_not_text_is_no_owner_and_the_sweep_goes_on(tmp_path: Path):
    """The sweep never raises (it runs as a run stages its first batch): a marker that another
    program wrote, or a damaged disk left, in bytes that are not UTF-8 is no owner."""
    me = this_process()
    garbled = _left_by(tmp_path, "garbled", me)
    (garbled / OWNER_FILE).write_bytes(b"\xff\xfe{")
    reused = _left_by(tmp_path, "reused", dataclasses.replace(me, started=f"{me.started}0"))
    assert sweep_staging(tmp_path) == [reused]
    assert garbled.exists()
