"""The sandbox's command-line options, declared once against the `SandboxConfig` fields they set.

`python -m kommo_dagster.sandbox` parses them (`build_parser`, `config_from_args`) and
`SandboxProcess` writes them for a config (`config_to_args`): both read the one declaration
below, so an option cannot be parsed without being written, and its default is the field's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from kommo_dagster.sandbox.config import (
    RATE_LIMIT_STYLES,
    WRONG_HOSTS,
    ChurnConfig,
    FaultConfig,
    SandboxConfig,
)
from kommo_dagster.sandbox.texts import FLAVOURS


def _rps(value: str) -> float | None:
    if value.lower() in ("0", "none", "unlimited", "off"):
        return None
    rps = float(value)
    if rps <= 0:
        raise argparse.ArgumentTypeError("requests per second must be positive, or 0/none")
    return rps


def _rate(value: str) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError("a fault rate is a probability in [0, 1]")
    return rate


def _streams(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


@dataclass(frozen=True)
class Option:
    """One option: its flag, the config field it sets ("faults.seed": a field of
        `SandboxConfig.faults`) and how argparse reads it. `switch`: a flag without a value, which
    sets the field True (or False, ``negates``: for a field that is True by default)."""

    flag: str
    field: str
    help: str | None = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | None = None
    metavar: str | None = None
    switch: bool = False
    negates: bool = False

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def section(self) -> str:
        """ "" for a field of SandboxConfig itself, else the name of the nested config."""
        return self.field.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.field.rpartition(".")[2]


_FAULT_HELP = {
    "500-json": "500 problem+json with a trace_id",
    "500-html": "500 HTML page",
    "502": "502 HTML bad gateway",
    "504": "504 HTML gateway time-out",
    "drop": "close the connection without a response",
    "slow": "answer only after --slow-seconds",
}
# Kinds whose FaultConfig field is not error_<kind>.
_FAULT_FIELDS = {"drop": "drop", "slow": "slow"}

# (argparse group title, its options), in the order --help lists them.
GROUPS: tuple[tuple[str, tuple[Option, ...]], ...] = (
    (
        "account",
        (
            Option("--port", "port", "TCP port on 127.0.0.1 (0 = any free one)", int),
            Option("--seed", "seed", "data seed (default %(default)s)", int),
            Option("--leads", "leads", "scale: number of leads (default %(default)s)", int),
            Option("--users", "users", "number of users (default: by scale)", int),
            Option("--start", "start", "data window start, YYYY-MM-DD", date.fromisoformat),
            Option("--end", "end", "data window end (exclusive)", date.fromisoformat),
            Option("--token", "token", "the Bearer token accepted"),
            Option("--subdomain", "subdomain"),
            Option(
                "--flavour",
                "flavour",
                "kommo: an international kommo.com account; amocrm: a Russian amocrm.ru one",
                choices=FLAVOURS,
            ),
        ),
    ),
    (
        "rate limit and errors",
        (
            Option(
                "--rps",
                "requests_per_second",
                "requests per second over a sliding second, 0/none = unlimited (default 7)",
                _rps,
            ),
            Option("--rate-limit-style", "rate_limit_style", choices=RATE_LIMIT_STYLES),
            Option(
                "--rate-limit-window",
                "rate_limit_window",
                "seconds of the sliding window (Kommo: 1)",
                float,
            ),
            Option("--ban-after", "ban_after", "IP-block (HTML 403) after K 429s", int),
            Option("--latency-ms", "latency_ms", "added to every API response", float),
            Option("--jitter-ms", "latency_jitter_ms", "latency +/- this much", float),
            Option("--unpaid", "unpaid", "answer 402 to every request", switch=True),
            Option("--not-admin", "not_admin", "answer 403 to /api/v4/users", switch=True),
            Option(
                "--no-unsorted-inbox",
                "unsorted_inbox",
                "the unsorted feature is off: /api/v4/leads/unsorted answers 204",
                switch=True,
                negates=True,
            ),
            Option(
                "--redirect-to",
                "redirect_to",
                "answer every API request with a 301 to this origin (a wrong host)",
                metavar="ORIGIN",
            ),
            Option(
                "--wrong-host",
                "wrong_host",
                "answer as a host that is not a Kommo account: a 404 page, a web page, other JSON",
                choices=WRONG_HOSTS,
            ),
        ),
    ),
    (
        "faults (per-request probabilities)",
        (
            *(
                Option(
                    f"--fault-{kind}",
                    "faults." + _FAULT_FIELDS.get(kind, "error_" + kind.replace("-", "_")),
                    text,
                    _rate,
                    metavar="RATE",
                )
                for kind, text in _FAULT_HELP.items()
            ),
            Option(
                "--slow-seconds",
                "faults.slow_seconds",
                "delay of a slow response (default %(default)s)",
                float,
            ),
            Option("--fault-seed", "faults.seed", "default: --seed", int),
        ),
    ),
    (
        "churn (the account changes while it serves)",
        (
            Option(
                "--churn-every-requests",
                "churn.every_requests",
                "a step every N requests",
                int,
                metavar="N",
            ),
            Option(
                "--churn-interval-ms",
                "churn.interval_ms",
                "a step every MS ms",
                float,
                metavar="MS",
            ),
            Option("--churn-updates", "churn.updates", "updates per stream/step", int),
            Option("--churn-creates", "churn.creates", "creations per stream/step", int),
            Option("--churn-deletes", "churn.deletes", "deletions per stream/step", int),
            Option("--churn-restores", "churn.restores", "restores per stream/step", int),
            Option(
                "--churn-backdate",
                "churn.backdate",
                "share of updates and creations that carry an earlier updated_at (0..1)",
                float,
            ),
            Option(
                "--churn-streams", "churn.streams", "comma-separated streams that change", _streams
            ),
        ),
    ),
)
OPTIONS: tuple[Option, ...] = tuple(o for _, group in GROUPS for o in group)

# The config classes of the sections, whose defaults are the options' defaults.
_SECTIONS: dict[str, type] = {"": SandboxConfig, "faults": FaultConfig, "churn": ChurnConfig}


def _defaults() -> dict[str, Any]:
    return {s: cls() for s, cls in _SECTIONS.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kommo-sandbox",
        description="Serve a deterministic Kommo API v4 account on 127.0.0.1 for tests, demos "
        "and benchmarks.",
    )
    defaults = _defaults()
    for title, options in GROUPS:
        group = p.add_argument_group(title)
        for o in options:
            default = getattr(defaults[o.section], o.name)
            if o.switch:
                action = "store_false" if o.negates else "store_true"
                group.add_argument(o.flag, action=action, help=o.help)
                continue
            kwargs: dict[str, Any] = {"default": default, "help": o.help}
            if o.type is not None:
                kwargs["type"] = o.type
            if o.choices is not None:
                kwargs["choices"] = o.choices
            if o.metavar is not None:
                kwargs["metavar"] = o.metavar
            group.add_argument(o.flag, **kwargs)
    return p


def config_from_args(ns: argparse.Namespace) -> SandboxConfig:
    """The config of parsed options; churn only when a step is scheduled (by requests or time)."""
    values: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for o in OPTIONS:
        values[o.section][o.name] = getattr(ns, o.dest)
    churn = values["churn"]
    scheduled = churn["every_requests"] or churn["interval_ms"]
    return SandboxConfig(
        **values[""],
        faults=FaultConfig(**values["faults"]),
        churn=ChurnConfig(**churn) if scheduled else None,
    )


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def config_to_args(config: SandboxConfig) -> list[str]:
    """Command-line arguments of `python -m kommo_dagster.sandbox` for `config`: the options
    whose value is not the default."""
    ch = config.churn
    if ch is not None and (ch.clock is not None or ch.seed is not None):
        raise ValueError("a churn clock or seed cannot be passed to a sandbox subprocess")
    sections = {"": config, "faults": config.faults, "churn": ch}
    defaults = _defaults()
    args: list[str] = []
    for o in OPTIONS:
        source = sections[o.section]
        if source is None:
            continue
        value = getattr(source, o.name)
        if value == getattr(defaults[o.section], o.name):
            continue
        args += [o.flag] if o.switch else [o.flag, _text(value)]
    return args
