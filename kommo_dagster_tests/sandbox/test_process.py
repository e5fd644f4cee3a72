"""The sandbox as a process: `python -m kommo_dagster.sandbox` and SandboxProcess."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from datetime import date

import pytest
import requests

from kommo_dagster.sandbox import ChurnConfig, FaultConfig, SandboxConfig, SandboxProcess
from kommo_dagster.sandbox.__main__ import build_parser, config_from_args, parse_config
from kommo_dagster.sandbox.process import config_to_args

pytestmark = pytest.mark.timeout(120)


def test_command_line_round_trips_a_config():
    cfg = SandboxConfig(
        seed=5,
        leads=123,
        users=4,
        start=date(2026, 9, 1),
        end=date(2026, 9, 3),
        requests_per_second=3.5,
        rate_limit_style="mixed",
        rate_limit_window=2.0,
        ban_after=4,
        latency_ms=10.0,
        latency_jitter_ms=2.5,
        faults=FaultConfig(error_500_json=0.1, drop=0.05, slow=0.01, slow_seconds=9.0, seed=3),
        unpaid=True,
        not_admin=True,
        wrong_host="json",
        churn=ChurnConfig(
            every_requests=5, updates=2, creates=0, deletes=3, backdate=0.25, streams=("leads",)
        ),
        token="t0k",
        subdomain="acme",
        flavour="amocrm",
    )
    assert config_from_args(build_parser().parse_args(config_to_args(cfg))) == cfg
    unlimited = config_from_args(build_parser().parse_args(["--rps", "0"]))
    assert unlimited.requests_per_second is None
    assert config_from_args(build_parser().parse_args([])) == SandboxConfig()


def test_bad_options_are_refused(capsys):
    for argv in (
        ["--fault-502", "2"],
        ["--rps", "-1"],
        ["--start", "2026-10-05", "--end", "2026-10-01"],
        ["--rate-limit-style", "xml"],
    ):
        with pytest.raises(SystemExit):
            parse_config(argv)
        assert "error" in capsys.readouterr().err
    with pytest.raises(ValueError, match="clock"):
        config_to_args(SandboxConfig(churn=ChurnConfig(clock=lambda: 0)))


def test_sandbox_process_serves_and_is_controlled_over_http():
    cfg = SandboxConfig(seed=2, leads=60, requests_per_second=None)
    with SandboxProcess(cfg) as sp:
        headers = {"Authorization": f"Bearer {sp.token}"}
        r = requests.get(f"{sp.base_url}/api/v4/leads", headers=headers, timeout=30)
        assert r.status_code == 200
        assert sp.stats()["by_path"] == {"/api/v4/leads": {"200": 1}}
        sp.inject_fault("502")
        assert requests.get(f"{sp.base_url}/api/v4/leads", headers=headers).status_code == 502
        assert sp.churn_step()["leads_updated"] >= 1
        rows = sp.expected_rows("leads")
        assert len(rows) == 60 + 1  # one lead created by the churn step
        sp.update_config(unpaid=True)
        assert requests.get(f"{sp.base_url}/api/v4/leads", headers=headers).status_code == 402
        sp.reset(data=True)
        assert len(sp.expected_rows("leads")) == 60
        assert sp.stats()["requests"] == 0
        proc = sp.proc
    assert proc is not None and proc.returncode == 0


def test_the_module_prints_its_url_and_token_and_stops_on_sigint():
    proc = subprocess.Popen(
        [sys.executable, "-m", "kommo_dagster.sandbox", "--leads", "30", "--token", "abc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        token = proc.stdout.readline().strip()
        assert url.startswith("KOMMO_BASE_URL=http://127.0.0.1:")
        assert token == "KOMMO_API_TOKEN=abc"
        base = url.partition("=")[2]
        r = requests.get(f"{base}/api/v4/account", headers={"Authorization": "Bearer abc"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_failing_start_is_reported():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sp = SandboxProcess(SandboxConfig(leads=10, port=taken.getsockname()[1]))
        try:
            with pytest.raises(RuntimeError, match="exited during start-up"):
                sp.start()
        finally:
            sp.stop()
