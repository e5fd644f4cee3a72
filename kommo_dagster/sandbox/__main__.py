"""`python -m kommo_dagster.sandbox` / `kommo-sandbox`: serve a sandbox account until stopped.

Prints `KOMMO_BASE_URL=...` and `KOMMO_API_TOKEN=...` (flushed, one per line, so a parent process
or `eval`-style shell can pick them up), then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster.sandbox.options import build_parser, config_from_args
from kommo_dagster.sandbox.service import KommoSandbox

__all__ = ["build_parser", "config_from_args", "main", "parse_config"]


def parse_config(argv: list[str] | None = None) -> SandboxConfig:
    """The SandboxConfig of a command line; exits with a usage error when it is invalid."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return config_from_args(ns)
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    began = time.perf_counter()
    sandbox = KommoSandbox(config).start()
    try:
        print(f"KOMMO_BASE_URL={sandbox.base_url}", flush=True)
        print(f"KOMMO_API_TOKEN={sandbox.token}", flush=True)
        rps = config.requests_per_second
        print(
            f"kommo-sandbox: {config.leads} leads, seed {config.seed}, window "
            f"{config.start}..{config.end}, {'unlimited' if rps is None else rps} req/s; "
            f"ready in {time.perf_counter() - began:.1f}s (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
