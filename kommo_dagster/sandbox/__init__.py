"""The Kommo sandbox: a Kommo API v4 account served over HTTP on 127.0.0.1.

Nobody running the tests, the demo or the benchmarks can reach a real Kommo account, so this
package serves one: deterministic, messy data, Kommo's paging and filter semantics, its rate limit
and error pages, injected faults and an account that changes while it is read. It shares nothing
with the client (`kommo_dagster.kommo`) except the contract, so each checks the other.
"""

from kommo_dagster.sandbox.config import (
    FAULT_KINDS,
    RATE_LIMIT_STYLES,
    ChurnConfig,
    FaultConfig,
    SandboxConfig,
)
from kommo_dagster.sandbox.options import config_to_args
from kommo_dagster.sandbox.process import SandboxProcess
from kommo_dagster.sandbox.service import KommoSandbox

__all__ = [
    "FAULT_KINDS",
    "RATE_LIMIT_STYLES",
    "ChurnConfig",
    "FaultConfig",
    "KommoSandbox",
    "SandboxConfig",
    "SandboxProcess",
    "config_to_args",
]
