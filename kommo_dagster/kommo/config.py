"""Client settings: where the account lives, the token, the request budget.

Each setting has one environment variable (the `KOMMO_*` names below), and every validation error
names it, so a user can tell which variable to fix. Validation happens before any request.

This is also the one module that reads the environment (`environment`, `account_variable`): the
code location's configuration (`kommo_dagster.settings`) and the client's own `from_env` both
go through it, so a variable means the same thing wherever it is read.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from kommo_dagster.kommo.errors import KommoConfigError
from kommo_dagster.kommo.integers import INTEGER_TEXT

# The variables of the single account; an account of KOMMO_ACCOUNTS reads KOMMO_<ACCOUNT>_*.
ENV_PREFIX = "KOMMO_"
ENV_API_TOKEN = "KOMMO_API_TOKEN"
ENV_SUBDOMAIN = "KOMMO_SUBDOMAIN"
ENV_BASE_URL = "KOMMO_BASE_URL"
ENV_REQUESTS_PER_SECOND = "KOMMO_REQUESTS_PER_SECOND"
ENV_MAX_WORKERS = "KOMMO_MAX_WORKERS"
ENV_RATE_LIMIT_DIR = "KOMMO_RATE_LIMIT_DIR"
ENV_BAN_COOLDOWN_SECONDS = "KOMMO_BAN_COOLDOWN_SECONDS"
ENV_ALLOW_ANY_HOST = "KOMMO_ALLOW_ANY_HOST"
ENV_ALLOW_ABOVE_LIMIT = "KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT"
# The accounts of a code location serving several; each reads its KOMMO_<ACCOUNT>_* variables.
ENV_ACCOUNTS = "KOMMO_ACCOUNTS"
ACCOUNT_NAME = re.compile(r"[a-z0-9_]+")
# The name of the views over all accounts (schema kommo_all): no account may take it.
ALL_ACCOUNTS = "all"

DEFAULT_REQUESTS_PER_SECOND = 7.0
# A budget below this (say 7e-5 for 0.7) leaves a run waiting hours between its requests.
MIN_REQUESTS_PER_SECOND = 0.01
# Kommo's limit per integration; a client sending more gets 429s, then its IP blocked.
KOMMO_REQUESTS_PER_SECOND_LIMIT = 7.0
DEFAULT_MAX_WORKERS = 4
DEFAULT_RATE_LIMIT_DIRNAME = "kommo-dagster-rate-limit"
DEFAULT_BAN_COOLDOWN_SECONDS = 3600.0
# 100 years: a block's message names when the cool-down ends, which must stay a date.
MAX_BAN_COOLDOWN_SECONDS = 100 * 365.25 * 86_400
# The hosts Kommo serves accounts from; anything else needs KOMMO_ALLOW_ANY_HOST=true, so a
# mistyped URL never receives the token.
KOMMO_HOST_SUFFIXES = (".kommo.com", ".amocrm.ru", ".amocrm.com")
# What to do when the host answers as no Kommo account does (404, another API's JSON).
CHECK_HOST = (
    f"check {ENV_BASE_URL} or {ENV_SUBDOMAIN}: kommo.com and amocrm.ru accounts live on "
    "different hosts"
)

_VARIABLE = re.compile(r"\bKOMMO_(?=[A-Z])")
# A Kommo subdomain is one DNS label: letters, digits, hyphens.
_SUBDOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# A label of a host name; '_' too, which a proxy's name (a container's) may hold.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class Secret:
    """A string that does not show itself in repr, str, logs or tracebacks' locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):
        # Pickling would write the token to wherever the pickle goes.
        raise TypeError("a Secret cannot be pickled")


def validate_token(token: str | Secret | None) -> Secret:
    value = token.get_secret_value() if isinstance(token, Secret) else token
    if value is None or not value.strip():
        raise KommoConfigError(
            f"{ENV_API_TOKEN} is empty: set it to the long-lived token of a Kommo private "
            "integration (Settings > Integrations > your integration > Keys and scopes)"
        )
    if value != value.strip() or any(c in value for c in "\r\n"):
        raise KommoConfigError(
            f"{ENV_API_TOKEN} has leading/trailing whitespace or a line break; "
            "paste the token alone"
        )
    # A bearer token is printable ASCII without spaces; anything else (a typographic quote
    # pasted along) cannot go into the header, and failed only at the first request.
    bad = next(
        (i for i, c in enumerate(value) if not (c.isascii() and c.isprintable()) or c == " "),
        None,
    )
    if bad is not None:
        raise KommoConfigError(
            f"{ENV_API_TOKEN} has a character no token has at position {bad + 1} of "
            f"{len(value)} (a space, a control character, or a non-ASCII one such as a "
            "typographic quote pasted along); paste the token alone"
        )
    return Secret(value)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _is_host_name(host: str) -> bool:
    """Whether a connection can be made to ``host``: a space, an empty label or a %-escape
    passed the other checks and failed only when a run first connected."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return all(_HOST_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))
    return True


def _check_host(host: str, base_url: str) -> None:
    host = host.lower().rstrip(".")
    if _is_loopback(host) or any(
        host.endswith(s) and len(host) > len(s) for s in KOMMO_HOST_SUFFIXES
    ):
        return
    raise KommoConfigError(
        f"{ENV_BASE_URL} points at {host}, which is not a Kommo host (*.kommo.com, *.amocrm.ru, "
        f"*.amocrm.com) nor this machine: check it for typos, since the token would be sent "
        f"there; set {ENV_ALLOW_ANY_HOST}=true to allow another host (a proxy), got {base_url!r}"
    )


def parse_bool(value: bool | str | None, *, name: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off) as a bool; unset is false."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise KommoConfigError(f"{name} must be true or false, got {value!r}")


def validate_allow_any_host(value: bool | str | None) -> bool:
    return parse_bool(value, name=ENV_ALLOW_ANY_HOST)


# A number as a setting writes it: ASCII digits, a sign, and for a fraction a decimal point and
# an exponent. Python's int() and float() also read "1_0" as 10 and other scripts' digits
# ("\u0663", an Arabic-Indic 3) as ASCII ones, which no one means in a setting.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def plain_number(text: str, *, fraction: bool = True) -> bool:
    """Whether ``text``, surrounding whitespace aside, is a number written plainly (a whole
    one unless ``fraction``)."""
    return (_PLAIN_NUMBER if fraction else INTEGER_TEXT).fullmatch(text.strip()) is not None


def _number(value: float | str | None, *, default: float) -> float | None:
    """The number ``value`` holds: ``default`` when it is unset, None when it is no number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, str) and not plain_number(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def validate_ban_cooldown(value: float | str | None) -> float:
    seconds = _number(value, default=DEFAULT_BAN_COOLDOWN_SECONDS)
    if seconds is None or isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise KommoConfigError(
            f"{ENV_BAN_COOLDOWN_SECONDS} must be a number of seconds (0 or more), got {value!r}"
        )
    if seconds > MAX_BAN_COOLDOWN_SECONDS:
        raise KommoConfigError(
            f"{ENV_BAN_COOLDOWN_SECONDS} must be at most {MAX_BAN_COOLDOWN_SECONDS:.0f} seconds "
            f"(100 years), got {value!r}"
        )
    return seconds


def base_url_for(
    *, subdomain: str | None, base_url: str | None, allow_any_host: bool = False
) -> str:
    """The account's base URL: the override if given, else ``https://{subdomain}.kommo.com``.
    An override must be a Kommo host or this machine unless ``allow_any_host``."""
    if base_url is not None and base_url.strip():
        return _override_url(base_url, allow_any_host=allow_any_host)
    return _subdomain_url(subdomain)


def _override_url(base_url: str, *, allow_any_host: bool) -> str:
    """``KOMMO_BASE_URL`` reduced to its scheme and host, once it is a bare root URL whose host
    a connection can be made to and, unless ``allow_any_host``, may receive the token."""
    parts, host = _url_parts(base_url)
    _check_bare(parts, base_url)
    if not _is_host_name(host):
        raise KommoConfigError(
            f"{ENV_BASE_URL} has no valid host name (letters, digits, '-' and '_' between "
            f"dots, or an IP address), got {base_url!r}"
        )
    if not allow_any_host:
        _check_host(host, base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _url_parts(base_url: str) -> tuple[SplitResult, str]:
    """The override's parts and host name, when it is an http(s) URL with a host at all."""
    url = base_url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KommoConfigError(
            f"{ENV_BASE_URL} must be an http(s) URL such as https://mycompany.kommo.com, "
            f"got {base_url!r}"
        )
    return parts, parts.hostname


def _check_bare(parts: SplitResult, base_url: str) -> None:
    """Refuse what an account's root URL does not hold: credentials, a query, a fragment, a
    path (such as /api/v4, which the client adds itself) or a malformed port."""
    if parts.query or parts.fragment or parts.username or parts.password:
        # Named with those parts masked: any of them may carry a password or a token.
        masked = parts._replace(
            netloc=("***@" if "@" in parts.netloc else "") + parts.netloc.rpartition("@")[2],
            query="***" if parts.query else "",
            fragment="***" if parts.fragment else "",
        ).geturl()
        raise KommoConfigError(
            f"{ENV_BASE_URL} must be a bare http(s) URL without credentials, query or "
            f"fragment, got {masked!r}"
        )
    if parts.path not in ("", "/"):
        raise KommoConfigError(
            f"{ENV_BASE_URL} must be the account's root URL (no path such as /api/v4), "
            f"got {base_url!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise KommoConfigError(f"{ENV_BASE_URL} has an invalid port: {base_url!r}") from None


def _subdomain_url(subdomain: str | None) -> str:
    """``https://{subdomain}.kommo.com`` for ``KOMMO_SUBDOMAIN``, which must be one DNS label."""
    if subdomain is None or not subdomain.strip():
        raise KommoConfigError(
            f"{ENV_SUBDOMAIN} is not set: set it to the account's subdomain (mycompany for "
            f"https://mycompany.kommo.com), or set {ENV_BASE_URL} to the account's URL"
        )
    name = subdomain.strip()
    if not _SUBDOMAIN.match(name):
        raise KommoConfigError(
            f"{ENV_SUBDOMAIN} must be the bare subdomain (mycompany for "
            f"https://mycompany.kommo.com), without scheme, dots or slashes; got {subdomain!r}. "
            f"For an amoCRM or other host set {ENV_BASE_URL} instead"
        )
    return f"https://{name.lower()}.kommo.com"


def validate_requests_per_second(
    value: float | str | None, *, allow_above_limit: bool = True
) -> float:
    """The budget; above Kommo's 7 only with ``allow_above_limit`` (the code location's
    configuration passes its setting, a client built in Python is trusted)."""
    rps = _number(value, default=DEFAULT_REQUESTS_PER_SECOND)
    if rps is None or isinstance(value, bool):
        raise KommoConfigError(
            f"{ENV_REQUESTS_PER_SECOND} must be a number of requests per second, got {value!r}"
        )
    if not math.isfinite(rps) or rps <= 0:
        raise KommoConfigError(
            f"{ENV_REQUESTS_PER_SECOND} must be a positive number (Kommo allows 7), got {value!r}"
        )
    if rps < MIN_REQUESTS_PER_SECOND:
        raise KommoConfigError(
            f"{ENV_REQUESTS_PER_SECOND} must be at least {MIN_REQUESTS_PER_SECOND:g} (a request "
            f"every {1 / MIN_REQUESTS_PER_SECOND:g} s; slower, a run would wait for hours "
            f"between pages), got {value!r}"
        )
    if rps > KOMMO_REQUESTS_PER_SECOND_LIMIT and not allow_above_limit:
        raise KommoConfigError(
            f"{ENV_REQUESTS_PER_SECOND} is above Kommo's limit of "
            f"{KOMMO_REQUESTS_PER_SECOND_LIMIT:g} requests per second per integration (Kommo "
            f"answers 429, then blocks the IP), got {value!r}; set {ENV_ALLOW_ABOVE_LIMIT}=true "
            f"to allow it (a sandbox, or a limit Kommo raised for you)"
        )
    return rps


def validate_max_workers(value: int | str | None) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_MAX_WORKERS
    try:
        if isinstance(value, str) and not plain_number(value, fraction=False):
            raise ValueError(value)
        workers = int(value)
    except (TypeError, ValueError):
        raise KommoConfigError(f"{ENV_MAX_WORKERS} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or (isinstance(value, float) and value != workers):
        raise KommoConfigError(f"{ENV_MAX_WORKERS} must be an integer, got {value!r}")
    if not 1 <= workers <= 64:
        raise KommoConfigError(f"{ENV_MAX_WORKERS} must be between 1 and 64, got {value!r}")
    return workers


def name_variables(text: str, env_prefix: str) -> str:
    """``text`` naming the variables of the account whose prefix is ``env_prefix``
    (``KOMMO_ACC1_API_TOKEN``) where the client's messages name the single account's
    (``KOMMO_API_TOKEN``)."""
    return text if env_prefix == ENV_PREFIX else _VARIABLE.sub(env_prefix, text)


def rate_limit_dir_for(value: str | os.PathLike | None) -> Path:
    """The directory holding the shared rate-limit files (one per account host)."""
    if value is None or not str(value).strip():
        return Path(tempfile.gettempdir()) / DEFAULT_RATE_LIMIT_DIRNAME
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user of no user on this machine, or no home at all
        home = Path(value).parts[0]
        raise KommoConfigError(
            f"{ENV_RATE_LIMIT_DIR} must be a directory, got {str(value)!r}: this machine has "
            f"no home directory for {home!r}"
        ) from None
    problem = directory_problem(path)
    if problem:
        raise KommoConfigError(
            f"{ENV_RATE_LIMIT_DIR} must be a directory, got {str(value)!r}: {problem}"
        )
    return path


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a folder this process makes (with its parents) and writes in;
    None when it can."""
    # The folder itself, or the nearest one it is to be made in.
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    why = "a folder this process cannot write in" if existing.is_dir() else "not a folder"
    return f"{existing} is {why}"


@dataclass(frozen=True, kw_only=True)
class KommoSettings:
    """Validated client settings. The token is a `Secret`, so repr shows no token."""

    base_url: str
    token: Secret = field(repr=False)
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    max_workers: int = DEFAULT_MAX_WORKERS
    rate_limit_dir: Path = field(default_factory=lambda: rate_limit_dir_for(None))
    ban_cooldown_seconds: float = DEFAULT_BAN_COOLDOWN_SECONDS
    # The prefix of the variables these settings come from; errors name the account's own.
    env_prefix: str = ENV_PREFIX

    @classmethod
    def build(
        cls,
        *,
        token: str | Secret | None,
        subdomain: str | None = None,
        base_url: str | None = None,
        requests_per_second: float | str | None = None,
        max_workers: int | str | None = None,
        rate_limit_dir: str | os.PathLike | None = None,
        ban_cooldown_seconds: float | str | None = None,
        allow_any_host: bool | str | None = None,
        allow_above_limit: bool | str | None = True,
        env_prefix: str = ENV_PREFIX,
    ) -> KommoSettings:
        """Validate raw values, each once; raises `KommoConfigError` naming the variable at
        fault (with ``env_prefix``, the account's own: ``KOMMO_ACC1_API_TOKEN``)."""
        try:
            secret = validate_token(token)
            return cls(
                base_url=base_url_for(
                    subdomain=subdomain,
                    base_url=base_url,
                    allow_any_host=validate_allow_any_host(allow_any_host),
                ),
                token=secret,
                requests_per_second=validate_requests_per_second(
                    requests_per_second,
                    allow_above_limit=parse_bool(allow_above_limit, name=ENV_ALLOW_ABOVE_LIMIT),
                ),
                max_workers=validate_max_workers(max_workers),
                rate_limit_dir=rate_limit_dir_for(rate_limit_dir),
                ban_cooldown_seconds=validate_ban_cooldown(ban_cooldown_seconds),
                env_prefix=env_prefix,
            )
        except KommoConfigError as exc:
            if env_prefix == ENV_PREFIX:
                raise
            raise KommoConfigError(name_variables(str(exc), env_prefix)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KommoSettings:
        env = environment(environ)
        return cls.build(
            token=env.get(ENV_API_TOKEN),
            subdomain=env.get(ENV_SUBDOMAIN),
            base_url=env.get(ENV_BASE_URL),
            requests_per_second=env.get(ENV_REQUESTS_PER_SECOND),
            max_workers=env.get(ENV_MAX_WORKERS),
            rate_limit_dir=env.get(ENV_RATE_LIMIT_DIR),
            ban_cooldown_seconds=env.get(ENV_BAN_COOLDOWN_SECONDS),
            allow_any_host=env.get(ENV_ALLOW_ANY_HOST),
            allow_above_limit=env.get(ENV_ALLOW_ABOVE_LIMIT),
        )


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``environ``, or the process's environment: the one place it is read."""
    return os.environ if environ is None else environ


def variable_value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value stripped; None when it is unset or blank."""
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def account_variable(
    env: Mapping[str, str], suffix: str, *, account: str | None, fallback: bool = True
) -> str:
    """The variable that sets ``suffix`` (``START_DATE``...) for ``account``: its own
    ``KOMMO_<ACCOUNT>_<SUFFIX>`` when set (or always, without ``fallback``), else the shared
    ``KOMMO_<SUFFIX>``. Errors then name the variable really read."""
    if account is None:
        return f"{ENV_PREFIX}{suffix}"
    own = f"{ENV_PREFIX}{account.upper()}_{suffix}"
    if not fallback or variable_value(env, own) is not None:
        return own
    return f"{ENV_PREFIX}{suffix}"


def check_account_name(
    name: str, *, source: str = ENV_ACCOUNTS, error: type[KommoConfigError] = KommoConfigError
) -> str:
    """``name`` if it can name an account; ``error`` (the settings' own) naming ``source``
    otherwise. The one rule, for the code location and the ban command alike."""
    if not ACCOUNT_NAME.fullmatch(name):
        raise error(
            f"{source} names an account {name!r}: account names are lower-case letters, digits "
            f"and _ (they become schema kommo_<name> and asset keys kommo/<name>/<stream>)"
        )
    if name == ALL_ACCOUNTS:
        raise error(
            f"{source} names an account {name!r}, but schema kommo_{ALL_ACCOUNTS} holds the "
            f"views over all accounts; choose another name"
        )
    return name


def parse_account_names(
    value: str | None,
    *,
    source: str = ENV_ACCOUNTS,
    error: type[KommoConfigError] = KommoConfigError,
) -> tuple[str, ...]:
    """``"acc1, acc2"`` -> ``("acc1", "acc2")``; empty or unset -> ``()`` (one account)."""
    if value is None or not value.strip():
        return ()
    names = [part.strip() for part in value.split(",")]
    if any(not n for n in names):
        raise error(f"{source} has an empty name in {value!r}")
    for name in names:
        check_account_name(name, source=source, error=error)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise error(f"{source} names {', '.join(repeated)} more than once")
    return tuple(names)
