"""The README's commands set up their own environment: `scripts/bootstrap.sh` and the scripts
that run it, run from a copy of the scripts with stand-in Pythons, so nothing is installed.

A stand-in records each call (its arguments, one line) in ``calls.log`` and exits 0; the
"system" one hands the version check to the real interpreter, and stands for a Debian without
python3-venv when asked to, by making ``<venv>/bin/python`` and then failing as Debian's venv does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kommo_dagster_tests.wiring import REPO

SCRIPTS = ("scripts/bootstrap.sh", "scripts/test.sh", "scripts/demo.sh", "benchmarks/run.sh")
BASH = shutil.which("bash") or "/bin/bash"

# Records its arguments, then does what a system Python would for the calls bootstrap.sh makes.
SYSTEM_PYTHON = f"""#!{BASH}
echo "system $*" >> "$CALLS"
if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin" && cp "$VENV_PYTHON" "$3/bin/python"
  if [ -n "${{NO_ENSUREPIP:-}}" ]; then
    echo "The virtual environment was not created successfully because ensurepip is not"
    exit 1
  fi
fi
"""
VENV_PYTHON = f"""#!{BASH}
echo "venv $(basename "$0") $*" >> "$CALLS"
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the scripts, so that nothing they run can reach the repository's .venv, beside
    the stand-ins and a PATH of the tools they call."""
    root = tmp_path / "repo"
    for script in SCRIPTS:
        (root / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / script, root / script)
    for name, text in (("venv-python", VENV_PYTHON), ("system-python", SYSTEM_PYTHON)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    # No apt-get on it, so that the branch for a user who cannot install runs even as root.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id", "rm", "mkdir", "cp", "basename"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    return root


def _run(root: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    tmp = root.parent
    bin_dir = tmp / "bin"
    environment = {
        "PATH": str(bin_dir),
        "HOME": str(tmp),
        "PYTHON": str(tmp / "system-python"),
        "VENV_PYTHON": str(tmp / "venv-python"),
        "CALLS": str(tmp / "calls.log"),
        **env,
    }
    return subprocess.run(
        [BASH, str(root / script), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _calls(root: Path) -> list[str]:
    log = root.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_venv_debian_could_not_finish_is_removed_so_the_next_run_makes_it_again(root: Path):
    venv = root / ".venv"
    failed = _run(root, "scripts/bootstrap.sh", NO_ENSUREPIP="1")
    assert failed.returncode == 1
    assert "sudo apt-get install python3-venv" in failed.stderr
    assert not venv.exists()  # Debian's venv had made .venv/bin/python before failing

    # python3-venv installed: the next run makes the environment and installs into it.
    done = _run(root, "scripts/bootstrap.sh")
    assert done.returncode == 0, done.stderr
    calls = _calls(root)
    assert calls.count(f"system -m venv {venv}") == 2
    assert f"venv python -m pip install --quiet --disable-pip-version-check -e {root}[dev]" in calls


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "scripts/test.sh",
            [
                "venv ruff check kommo_dagster kommo_dagster_tests benchmarks scripts",
                "venv ruff format --check kommo_dagster kommo_dagster_tests benchmarks scripts",
                "venv python -m pytest -k sandbox -x",
            ],
        ),
        ("scripts/demo.sh", ["venv python scripts/demo.py -k sandbox -x"]),
        ("benchmarks/run.sh", ["venv python -m benchmarks.run -k sandbox -x"]),
    ],
)
def test_the_scripts_run_from_the_environment_bootstrap_made(
    root: Path, script: str, expected: list[str]
):
    """With KOMMO_VENV set, bootstrap.sh makes the environment there; the script runs its
    tools from there too, not from a .venv that does not exist."""
    venv = root.parent / "elsewhere"
    (venv / "bin").mkdir(parents=True)
    for tool in ("python", "ruff"):
        shutil.copy2(root.parent / "venv-python", venv / "bin" / tool)
    result = _run(root, script, "-k", "sandbox", "-x", KOMMO_VENV=str(venv))
    assert result.returncode == 0, result.stderr
    calls = _calls(root)
    assert not any(call.startswith("system -m venv") for call in calls)  # it was there
    assert any(call.startswith("venv python -m pip install") for call in calls)
    assert calls[-len(expected) :] == expected
    assert not (root / ".venv").exists()


def test_a_folder_kommo_venv_names_that_was_there_keeps_its_files_when_venv_fails(root: Path):
    """KOMMO_VENV may name a folder that holds more than the environment: a venv Debian could
    not finish is removed only where this run made the folder, else only its python is."""
    venv = root.parent / "envs"
    (venv / "notes").mkdir(parents=True)
    (venv / "notes" / "keep.txt").write_text("mine")
    failed = _run(root, "scripts/bootstrap.sh", NO_ENSUREPIP="1", KOMMO_VENV=str(venv))
    assert failed.returncode == 1
    assert "sudo apt-get install python3-venv" in failed.stderr
    assert (venv / "notes" / "keep.txt").read_text() == "mine"
    assert not (venv / "bin" / "python").exists()  # the next run makes the environment again

    done = _run(root, "scripts/bootstrap.sh", KOMMO_VENV=str(venv))
    assert done.returncode == 0, done.stderr
    assert _calls(root).count(f"system -m venv {venv}") == 2


@pytest.mark.parametrize("in_project", [True, False])
def test_the_demos_next_steps_name_the_environment_that_ran_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, in_project: bool
):
    """With ``KOMMO_VENV`` elsewhere, the commands the demo prints at its end run that
    environment's tools, not a ``.venv`` that is not there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kommo_demo", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    prefix = REPO / ".venv" if in_project else tmp_path / "envs" / "kommo"
    monkeypatch.setattr(sys, "prefix", str(prefix))
    tools = ".venv/bin" if in_project else f"{prefix}/bin"
    text = demo._next_steps("2026-11-01", "2026-11-30")
    for command in ("dagster dev -w workspace.yaml", "kommo-sandbox --port 8765", "python -c"):
        assert f" {tools}/{command}" in text
    assert (".venv/bin" in text) == in_project
