"""Settings of a sandbox: the account it generates and how it misbehaves.

All three dataclasses are frozen; a running sandbox swaps its whole config (see
`KommoSandbox.update_config`), so a request always sees one consistent set of settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from kommo_dagster.sandbox.texts import FLAVOURS

# What churn can change: the records with an updated_at, notes included.
CHURNABLE = (
    "leads",
    "contacts",
    "companies",
    "tasks",
    "lead_notes",
    "contact_notes",
    "company_notes",
)

RateLimitStyle = Literal["json", "html", "header", "mixed"]
RATE_LIMIT_STYLES: tuple[str, ...] = ("json", "html", "header", "mixed")
# How a host that is not a Kommo account answers every API request (`SandboxConfig.wrong_host`).
WrongHost = Literal["404", "html", "json"]
WRONG_HOSTS: tuple[str, ...] = ("404", "html", "json")

# Names of the faults, both for the seeded rates and for `KommoSandbox.inject_fault`.
FAULT_KINDS: tuple[str, ...] = (
    "500_json",  # problem+json 500 with a trace_id
    "500_html",  # an HTML 500 page
    "502",  # HTML bad gateway
    "504",  # HTML gateway timeout
    "drop",  # the socket is closed without any response
    "slow",  # the response comes after FaultConfig.slow_seconds
    "429",  # a 429 in the configured style, without a rate-limit violation (inject only)
    "200_html",  # a 200 with an HTML login page instead of the API's JSON (inject only)
)


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """Seeded per-request probabilities of each fault (0.0 = never, 1.0 = every request).

    Faults are drawn from their own RNG seeded with `seed` (the sandbox seed when None), so a
    client that sends the same requests in the same order meets the same faults.
    """

    error_500_json: float = 0.0
    error_500_html: float = 0.0
    error_502: float = 0.0
    error_504: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    seed: int | None = None

    def rates(self) -> dict[str, float]:
        return {
            "500_json": self.error_500_json,
            "500_html": self.error_500_html,
            "502": self.error_502,
            "504": self.error_504,
            "drop": self.drop,
            "slow": self.slow,
        }

    def __post_init__(self) -> None:
        for kind, rate in self.rates().items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate {kind!r} must be within [0, 1], got {rate}")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must not be negative")


@dataclass(frozen=True, kw_only=True)
class ChurnConfig:
    """The account changes while it serves.

    A churn step applies `updates` updates, `creates` creations and `deletes` deletions to each of
    `streams` (and restores `restores` deleted records), and records the events those changes
    imply. Steps run after every `every_requests` API requests (deterministic for a sequential
    client), every `interval_ms` milliseconds in a background thread, or when a test calls
    `KommoSandbox.churn_step()`.

    A changed record's updated_at becomes the churn clock: `clock()` (Unix seconds; the wall clock
    when None), but never earlier than the newest timestamp already in the account. With
    `backdate` (a probability per update and creation), the change instead carries an *earlier*
    updated_at, drawn from the account's data window below the record's own, as Kommo allows an
    integration to set on PATCH and POST (importers and sync tools do). The events a change
    implies are stamped with the churn clock either way, as Kommo stamps events with its own
    current time.
    """

    every_requests: int | None = None
    interval_ms: float | None = None
    updates: int = 3
    creates: int = 1
    deletes: int = 1
    restores: int = 0
    streams: tuple[str, ...] = CHURNABLE
    clock: Callable[[], int] | None = None
    backdate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.backdate <= 1.0:
            raise ValueError(f"backdate must be within [0, 1], got {self.backdate}")
        if self.every_requests is not None and self.every_requests < 1:
            raise ValueError("every_requests must be at least 1")
        if self.interval_ms is not None and self.interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        unknown = set(self.streams) - set(CHURNABLE)
        if unknown:
            raise ValueError(f"churn can change {', '.join(CHURNABLE)}; not {unknown}")


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """One sandbox: the generated account (seed, scale, window) and its behaviour."""

    seed: int = 1
    # Scale: the number of leads; contacts, companies, tasks and events scale with it.
    leads: int = 300
    # Number of users; None = derived from the scale (at least 12).
    users: int | None = None
    # Data window [start, end), UTC days.
    start: date = date(2026, 10, 1)
    end: date = date(2026, 11, 1)
    # Sliding one-second window counted on arrival; None = unlimited.
    requests_per_second: float | None = 7.0
    rate_limit_style: RateLimitStyle = "json"
    # Length of the sliding window in seconds: Kommo's is one second. Tests lengthen it so that
    # "two requests inside one window" does not depend on how fast the machine is.
    rate_limit_window: float = 1.0
    # After this many violations every request gets Kommo's HTML 403 (an IP block).
    ban_after: int | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    # 402 Payment Required for every API request (the account's paid period has ended).
    unpaid: bool = False
    # 403 problem+json for /api/v4/users (the token's user is not an admin).
    not_admin: bool = False
    # False: the account's unsorted feature is off, GET /api/v4/leads/unsorted answers 204.
    unsorted_inbox: bool = True
    # A 301 to this origin for every API request (an account asked for on the wrong host).
    redirect_to: str | None = None
    # Answer every API request as a host that is not a Kommo account: "404" (an nginx 404 page),
    # "html" (a 200 web page), "json" (200 JSON of some other API).
    wrong_host: WrongHost | None = None
    churn: ChurnConfig | None = None
    token: str = "sandbox-token"
    port: int = 0
    subdomain: str = "sandbox"
    # The words the account is made of (texts.WORDS): "kommo" (international) or "amocrm" (Russian).
    flavour: str = "kommo"

    def __post_init__(self) -> None:
        if self.leads < 0:
            raise ValueError("leads must not be negative")
        if self.end <= self.start:
            raise ValueError(f"the window is empty: start {self.start} >= end {self.end}")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive (None = unlimited)")
        if self.rate_limit_style not in RATE_LIMIT_STYLES:
            raise ValueError(
                f"rate_limit_style must be one of {RATE_LIMIT_STYLES}, "
                f"got {self.rate_limit_style!r}"
            )
        if self.rate_limit_window <= 0:
            raise ValueError("rate_limit_window must be positive")
        if self.ban_after is not None and self.ban_after < 1:
            raise ValueError("ban_after must be at least 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        if not self.token:
            raise ValueError("token must not be empty")
        if self.wrong_host is not None and self.wrong_host not in WRONG_HOSTS:
            raise ValueError(f"wrong_host must be one of {WRONG_HOSTS}, got {self.wrong_host!r}")
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {self.flavour!r}")
