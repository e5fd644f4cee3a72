"""The sandbox in a subprocess, for tests, benchmarks and the demo that need one.

A separate process keeps the server's CPU off the measured process (benchmarks) and lets several
processes share one account (concurrent runs against one rate limit).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import IO, Any

import orjson
import requests

from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster.sandbox.options import config_to_args

__all__ = ["SandboxProcess", "config_to_args"]


class SandboxProcess:
    """Run `python -m kommo_dagster.sandbox` as a child process.

    >>> with SandboxProcess(SandboxConfig(leads=300)) as sp:
    ...     sp.base_url, sp.token, sp.stats()
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        startup_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> None:
        config = config or SandboxConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.startup_timeout = startup_timeout
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.token = ""
        self._session = requests.Session()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> SandboxProcess:
        cmd = [sys.executable, "-m", "kommo_dagster.sandbox", *config_to_args(self.config)]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream: IO[str]) -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        assert self.proc.stdout is not None
        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        found: dict[str, str] = {}
        try:
            while not {"KOMMO_BASE_URL", "KOMMO_API_TOKEN"} <= found.keys():
                line = lines.get(timeout=self.startup_timeout)
                if line is None:
                    raise RuntimeError(f"the sandbox exited during start-up:\n{self._stderr()}")
                key, sep, value = line.strip().partition("=")
                if sep:
                    found[key] = value
        except queue.Empty:
            self.stop()
            raise RuntimeError(
                f"the sandbox did not start within {self.startup_timeout}s"
            ) from None
        except BaseException:
            self.stop()
            raise
        self.base_url, self.token = found["KOMMO_BASE_URL"], found["KOMMO_API_TOKEN"]
        return self

    def _stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        try:
            self.proc.wait(timeout=5)
            return self.proc.stderr.read()
        except subprocess.TimeoutExpired:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self._session.close()
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        finally:  # a sandbox that exited by itself (a failed start) leaves its pipes open too
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> SandboxProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the /__sandbox controls --------------------------------------------------------------

    def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._session.request(
            method, f"{self.base_url}/__sandbox/{path}", timeout=60, **kwargs
        )
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict[str, Any]:
        return self._control("GET", "stats")

    def reset_stats(self) -> None:
        self._control("POST", "reset")

    def reset(self, *, data: bool = False) -> None:
        self._control("POST", "reset", params={"data": "1" if data else "0"})

    def inject_fault(self, kind: str, *, count: int = 1, path: str | None = None) -> None:
        params: dict[str, Any] = {"kind": kind, "count": count}
        if path is not None:
            params["path"] = path
        self._control("POST", "faults", params=params)

    def churn_step(self, steps: int = 1) -> dict[str, int]:
        return self._control("POST", "churn", params={"steps": steps})

    def update_config(self, **changes: Any) -> dict[str, Any]:
        return self._control("POST", "config", data=orjson.dumps(changes))

    def expected_rows(self, stream: str) -> list[dict[str, Any]]:
        return self._control("GET", "expected_rows", params={"stream": stream})
