"""Loading the code location as `kommo_dagster.definitions` does, from the variables a test sets,
and the message a bad variable fails that load with: the settings tests' way in.

The `environ` fixture (kommo_dagster_tests/conftest.py) clears the process's KOMMO_ variables
first.
"""

from __future__ import annotations

import dagster as dg
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.setting_values import SettingsError

TOKEN = "tok-settings-SECRET-7"


def load_env(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> dg.Definitions:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return build_definitions()  # what loading kommo_dagster.definitions does


def refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    """The message the load of an account with variable ``name`` at ``value`` fails with,
    which names both."""
    with pytest.raises(SettingsError) as failure:
        load_env(monkeypatch, {"KOMMO_API_TOKEN": TOKEN, "KOMMO_SUBDOMAIN": "acme", name: value})
    message = str(failure.value)
    assert message.startswith(f"{name} must be ") and repr(value) in message
    return message
