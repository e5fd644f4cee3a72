"""The sandbox's command-line options: one declaration read by the parser and by
`config_to_args`, so that a `SandboxProcess` starts with the config it was given."""

import dataclasses
from datetime import date

import pytest

from kommo_dagster.sandbox.config import ChurnConfig, FaultConfig, SandboxConfig
from kommo_dagster.sandbox.options import OPTIONS, build_parser, config_from_args, config_to_args

# A config's fields that no command line can carry: the nested sections (their own fields are
# options) and a churn's clock and seed (`config_to_args` refuses them).
NOT_OPTIONS = {"faults", "churn", "churn.clock", "churn.seed"}

# One value unlike the default for every field, written out here (not derived from the options).
CHANGED = {
    "seed": 7,
    "leads": 1234,
    "users": 20,
    "start": date(2026, 9, 1),
    "end": date(2026, 12, 1),
    "requests_per_second": None,
    "rate_limit_style": "mixed",
    "rate_limit_window": 2.5,
    "ban_after": 3,
    "latency_ms": 300.0,
    "latency_jitter_ms": 50.0,
    "unpaid": True,
    "not_admin": True,
    "unsorted_inbox": False,
    "redirect_to": "http://127.0.0.1:1",
    "wrong_host": "html",
    "token": "another-token",
    "port": 8123,
    "subdomain": "elsewhere",
    "flavour": "amocrm",
    "faults.error_500_json": 0.1,
    "faults.error_500_html": 0.2,
    "faults.error_502": 0.3,
    "faults.error_504": 0.4,
    "faults.drop": 0.05,
    "faults.slow": 0.06,
    "faults.slow_seconds": 1.5,
    "faults.seed": 99,
    "churn.every_requests": 5,
    "churn.interval_ms": 250.0,
    "churn.updates": 4,
    "churn.creates": 2,
    "churn.deletes": 3,
    "churn.restores": 1,
    "churn.streams": ("leads", "contacts"),
    "churn.backdate": 0.25,
}


def _fields() -> set[str]:
    own = {f.name for f in dataclasses.fields(SandboxConfig)}
    faults = {f"faults.{f.name}" for f in dataclasses.fields(FaultConfig)}
    churn = {f"churn.{f.name}" for f in dataclasses.fields(ChurnConfig)}
    return (own | faults | churn) - NOT_OPTIONS


# Defaults, but with a churn step every 10 requests, so that the churn's fields are written.
BASE = SandboxConfig(churn=ChurnConfig(every_requests=10))


def _changed(field: str) -> SandboxConfig:
    """`BASE` but for ``field``."""
    section, _, name = field.rpartition(".")
    if section == "":
        return dataclasses.replace(BASE, **{name: CHANGED[field]})
    nested = dataclasses.replace(getattr(BASE, section), **{name: CHANGED[field]})
    return dataclasses.replace(BASE, **{section: nested})


def test_every_field_a_command_line_can_carry_is_an_option():
    assert sorted(o.field for o in OPTIONS) == sorted(_fields())
    assert set(CHANGED) == _fields()
    assert len({o.flag for o in OPTIONS}) == len(OPTIONS)


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_each_option_goes_through_the_command_line_unchanged(field):
    config = _changed(field)
    assert config != BASE
    args = config_to_args(config)
    assert config_from_args(build_parser().parse_args(args)) == config


def test_the_defaults_write_no_option_and_parse_back():
    assert config_to_args(SandboxConfig()) == []
    assert config_from_args(build_parser().parse_args([])) == SandboxConfig()
