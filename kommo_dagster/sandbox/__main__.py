"""`python -m kommo_dagster.sandbox` / `kommo-sandbox`: serve a sandbox account until stopped.

Prints `KOMMO_BASE_URL=...` and `KOMMO_API_TOKEN=...` (flushed, one per line, so a parent process
or `eval`-style shell can pick them up), then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import date

from kommo_dagster.sandbox.config import (
    RATE_LIMIT_STYLES,
    WRONG_HOSTS,
    ChurnConfig,
    FaultConfig,
    SandboxConfig,
)
from kommo_dagster.sandbox.service import KommoSandbox
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


def build_parser() -> argparse.ArgumentParser:
    d = SandboxConfig()
    p = argparse.ArgumentParser(
        prog="kommo-sandbox",
        description="Serve a deterministic Kommo API v4 account on 127.0.0.1 for tests, demos "
        "and benchmarks.",
    )
    a = p.add_argument_group("account")
    a.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free one)")
    a.add_argument("--seed", type=int, default=d.seed, help="data seed (default %(default)s)")
    a.add_argument(
        "--leads", type=int, default=d.leads, help="scale: number of leads (default %(default)s)"
    )
    a.add_argument("--users", type=int, default=None, help="number of users (default: by scale)")
    a.add_argument(
        "--start", type=date.fromisoformat, default=d.start, help="data window start, YYYY-MM-DD"
    )
    a.add_argument(
        "--end", type=date.fromisoformat, default=d.end, help="data window end (exclusive)"
    )
    a.add_argument("--token", default=d.token, help="the Bearer token accepted")
    a.add_argument("--subdomain", default=d.subdomain)
    a.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default=d.flavour,
        help="kommo: an international kommo.com account; amocrm: a Russian amocrm.ru one",
    )

    r = p.add_argument_group("rate limit and errors")
    r.add_argument(
        "--rps",
        type=_rps,
        default=d.requests_per_second,
        help="requests per second over a sliding second, 0/none = unlimited (default 7)",
    )
    r.add_argument("--rate-limit-style", choices=RATE_LIMIT_STYLES, default=d.rate_limit_style)
    r.add_argument(
        "--rate-limit-window",
        type=float,
        default=d.rate_limit_window,
        help="seconds of the sliding window (Kommo: 1)",
    )
    r.add_argument("--ban-after", type=int, default=None, help="IP-block (HTML 403) after K 429s")
    r.add_argument("--latency-ms", type=float, default=0.0, help="added to every API response")
    r.add_argument("--jitter-ms", type=float, default=0.0, help="latency +/- this much")
    r.add_argument("--unpaid", action="store_true", help="answer 402 to every request")
    r.add_argument("--not-admin", action="store_true", help="answer 403 to /api/v4/users")
    r.add_argument(
        "--wrong-host",
        choices=WRONG_HOSTS,
        default=None,
        help="answer as a host that is not a Kommo account: a 404 page, a web page, other JSON",
    )

    f = p.add_argument_group("faults (per-request probabilities)")
    fault_help = {
        "500-json": "500 problem+json with a trace_id",
        "500-html": "500 HTML page",
        "502": "502 HTML bad gateway",
        "504": "504 HTML gateway time-out",
        "drop": "close the connection without a response",
        "slow": "answer only after --slow-seconds",
    }
    for kind, text in fault_help.items():
        f.add_argument(f"--fault-{kind}", type=_rate, default=0.0, metavar="RATE", help=text)
    f.add_argument(
        "--slow-seconds",
        type=float,
        default=FaultConfig().slow_seconds,
        help="delay of a slow response (default %(default)s)",
    )
    f.add_argument("--fault-seed", type=int, default=None, help="default: --seed")

    c = p.add_argument_group("churn (the account changes while it serves)")
    c.add_argument(
        "--churn-every-requests",
        type=int,
        default=None,
        metavar="N",
        help="a step every N requests",
    )
    c.add_argument(
        "--churn-interval-ms", type=float, default=None, metavar="MS", help="a step every MS ms"
    )
    dc = ChurnConfig()
    c.add_argument("--churn-updates", type=int, default=dc.updates, help="updates per stream/step")
    c.add_argument(
        "--churn-creates", type=int, default=dc.creates, help="creations per stream/step"
    )
    c.add_argument(
        "--churn-deletes", type=int, default=dc.deletes, help="deletions per stream/step"
    )
    c.add_argument(
        "--churn-restores", type=int, default=dc.restores, help="restores per stream/step"
    )
    c.add_argument(
        "--churn-backdate",
        type=float,
        default=dc.backdate,
        help="share of updates and creations that carry an earlier updated_at (0..1)",
    )
    c.add_argument(
        "--churn-streams",
        default=",".join(ChurnConfig().streams),
        help="comma-separated streams that change",
    )
    return p


def config_from_args(ns: argparse.Namespace) -> SandboxConfig:
    churn = None
    if ns.churn_every_requests or ns.churn_interval_ms:
        churn = ChurnConfig(
            every_requests=ns.churn_every_requests,
            interval_ms=ns.churn_interval_ms,
            updates=ns.churn_updates,
            creates=ns.churn_creates,
            deletes=ns.churn_deletes,
            restores=ns.churn_restores,
            backdate=ns.churn_backdate,
            streams=tuple(s.strip() for s in ns.churn_streams.split(",") if s.strip()),
        )
    return SandboxConfig(
        seed=ns.seed,
        leads=ns.leads,
        users=ns.users,
        start=ns.start,
        end=ns.end,
        requests_per_second=ns.rps,
        rate_limit_style=ns.rate_limit_style,
        rate_limit_window=ns.rate_limit_window,
        ban_after=ns.ban_after,
        latency_ms=ns.latency_ms,
        latency_jitter_ms=ns.jitter_ms,
        faults=FaultConfig(
            error_500_json=ns.fault_500_json,
            error_500_html=ns.fault_500_html,
            error_502=ns.fault_502,
            error_504=ns.fault_504,
            drop=ns.fault_drop,
            slow=ns.fault_slow,
            slow_seconds=ns.slow_seconds,
            seed=ns.fault_seed,
        ),
        unpaid=ns.unpaid,
        not_admin=ns.not_admin,
        wrong_host=ns.wrong_host,
        churn=churn,
        token=ns.token,
        port=ns.port,
        subdomain=ns.subdomain,
        flavour=ns.flavour,
    )


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
