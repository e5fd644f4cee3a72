"""The client's connections to the account's host: one urllib3 pool, whose connections take a
slot of the request budget right before each request goes out.

urllib3 directly, not requests: the client sends one kind of request to one host, and requests'
work around each of them (preparing and re-parsing the URL, hooks, cookies, auth, merging the
session's settings) cost about 0.4 ms of CPU per request on loopback, a third of the transport's
whole cost per request.

The proxy and the CA bundle come from the environment as requests took them (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``; ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else
certifi's bundle), resolved once for the account's host. No ``~/.netrc`` credentials are ever
applied: the only credential sent is the token the transport puts in each request's headers.

The timeouts bound the connect and each read; the whole answer, from sending to its last byte,
is bounded by `answer_timeout` (`kommo_dagster.kommo.watchdog`), so that a server trickling
its answer cannot hold a request for ever.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.request import getproxies

import certifi
import urllib3
from urllib3 import BaseHTTPResponse
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util import make_headers, parse_url

from kommo_dagster.kommo.config import environment
from kommo_dagster.kommo.errors import KommoConfigError
from kommo_dagster.kommo.watchdog import WATCHDOG, Armed

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """The proxy and CA bundle the environment names for one host."""

    proxy: str | None  # URL of the proxy to go through, None to connect directly
    ca_bundle: str  # file or folder of the CA certificates that verify an https host

    @classmethod
    def from_environment(cls, base_url: str) -> NetworkSettings:
        """Resolved as requests resolved them for a session that trusts the environment."""
        env = environment()
        bundle = next((env[v] for v in CA_BUNDLE_VARIABLES if env.get(v)), None)
        # requests' default bundle is certifi's.
        return cls(proxy=_proxy_for(base_url), ca_bundle=bundle or certifi.where())

    def __repr__(self) -> str:
        # A proxy URL may carry a password.
        proxy = None if self.proxy is None else _without_credentials(self.proxy)
        return f"NetworkSettings(proxy={proxy!r}, ca_bundle={self.ca_bundle!r})"


def _proxy_for(base_url: str) -> str | None:
    """The proxy requests would pick for ``base_url``. Without any proxy configured (urllib's
    `getproxies`, which requests asks too) there is none, and requests is not imported: its
    import costs about 0.035 s of CPU at each run's start."""
    if not getproxies():
        return None
    # requests' helpers only read the environment here; no request goes through requests.
    from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy

    proxy = select_proxy(base_url, get_environ_proxies(base_url))
    return prepend_scheme_if_needed(proxy, "http") if proxy else None


def _without_credentials(url: str) -> str:
    parts = parse_url(url)
    return parts._replace(auth="***").url if parts.auth else url


class AfterSend(Protocol):
    """Called once a request's bytes are out (or its write failed); ``unused``: none were
    written, its connection is made again and the request will take another slot."""

    def __call__(self, *, unused: bool = False) -> None: ...


class _BudgetedConnection:
    """What `_budgeted` mixes into urllib3's connection class: the slot hooks around the write,
    the deadline of the answer, and a kept-alive connection the server closed made again."""

    before_send: Callable[[], None]
    after_send: AfterSend
    sending: Callable[[Any], Armed]
    kept_alive = False  # whether a request went out on it since it connected
    armed: Armed | None = None  # the deadline of the answer it carries
    # urllib3's connection's, which this class comes before.
    sock: Any
    is_connected: bool
    close: Callable[[], None]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.kept_alive = False

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.sock is None:
            self.connect()
        self.before_send()
        try:
            # A kept-alive connection the server closed during the wait for the slot (idle
            # past its time) would take the request to nowhere. (A new one is not polled:
            # a TLS 1.3 server's session tickets wait in it, unread, which reads as closed.)
            if self.kept_alive and not self.is_connected:
                self.close()
                # The confirmation is not held over the connect, which may outlast its
                # pending record (`PENDING_TTL`): the request would then go out unseen.
                # Settled unused (a slot lost), and confirmed again once connected.
                self.after_send(unused=True)
                self.connect()
                self.before_send()
            self.kept_alive = True
            self.armed = self.sending(self.sock)
            return super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.after_send()  # a write that failed half way may still have reached the server


def _budgeted(
    pool_cls: type[HTTPConnectionPool],
    before_send: Callable[[], None],
    after_send: AfterSend,
    sending: Callable[[Any], Armed],
) -> type[HTTPConnectionPool]:
    """``pool_cls`` whose connections call ``before_send`` once connected, right before the
    request's bytes go out, and ``after_send`` once they are out (or the write failed): the
    rate-limit slot is confirmed as close as possible to the moment the server counts the
    request, so connection set-up does not eat into the safety margin, and then settled to when
    the request really left. Only a connection the server closed during the wait for the slot
    is made again after it (its slot settled unused, and a new one confirmed once connected).

    ``sending`` arms the deadline of the whole answer on the socket the request goes out on;
    it is disarmed as the connection goes back to the pool (urllib3 puts it back itself once
    the body is read), before any other request can take it."""
    hooks = {
        "before_send": staticmethod(before_send),
        "after_send": staticmethod(after_send),
        "sending": staticmethod(sending),
    }
    connection = type("Connection", (_BudgetedConnection, pool_cls.ConnectionCls), hooks)

    class Pool(pool_cls):  # type: ignore[valid-type,misc]
        ConnectionCls = connection

        def _put_conn(self, conn: Any) -> None:
            armed = conn and conn.armed
            if armed is not None:
                conn.armed = None
                if armed.disarm():
                    conn.close()  # its socket is shut down: connect again on its next use
            super()._put_conn(conn)

    Pool.__name__ = Pool.__qualname__ = pool_cls.__name__
    return Pool


def _manager(settings: NetworkSettings, **pool_kwargs: Any) -> urllib3.PoolManager:
    """A direct pool manager, or one going through the proxy (its credentials, if its URL
    has any, as requests sent them)."""
    if settings.proxy is None:
        return urllib3.PoolManager(**pool_kwargs)
    from requests.utils import get_auth_from_url

    username, password = get_auth_from_url(settings.proxy)
    if settings.proxy.lower().startswith("socks"):
        # Needs PySocks, as with requests.
        from urllib3.contrib.socks import SOCKSProxyManager

        return SOCKSProxyManager(
            settings.proxy, username=username or None, password=password or None, **pool_kwargs
        )
    auth = make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
    return urllib3.ProxyManager(settings.proxy, proxy_headers=auth, **pool_kwargs)


class AnswerTimeoutError(urllib3.exceptions.ReadTimeoutError):
    """The whole answer took longer than `Connections.answer_timeout` (each read was in time)."""


def answer_timeout(connect: float, read: float) -> float:
    """The longest one exchange may take from sending to the answer's last byte: a connect
    timeout (a reconnect) and a read timeout for the server to start answering, and another
    read timeout for the body to arrive however slowly its bytes come."""
    return connect + 2 * read


class Connections:
    """The pooled, kept-alive connections to one host, with requests' timeouts, and without
    urllib3's retries and redirects (the transport retries and classifies answers itself)."""

    def __init__(
        self,
        base_url: str,
        *,
        pool_size: int,
        timeout: tuple[float, float],
        before_send: Callable[[], None],
        after_send: AfterSend,
    ) -> None:
        self.settings = NetworkSettings.from_environment(base_url)
        scheme = parse_url(base_url).scheme
        tls: dict[str, Any] = {}
        if scheme == "https":
            bundle = self.settings.ca_bundle
            if not os.path.exists(bundle):
                raise KommoConfigError(
                    f"The CA bundle {bundle!r} does not exist: check "
                    f"{' and '.join(CA_BUNDLE_VARIABLES)}"
                )
            tls = {"cert_reqs": "CERT_REQUIRED"}
            tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
        connect, read = timeout
        self.answer_timeout = answer_timeout(connect, read)
        self._local = threading.local()  # the armed deadline of this thread's exchange
        self._manager = _manager(
            self.settings,
            num_pools=1,
            maxsize=max(pool_size, 1),
            block=False,
            timeout=urllib3.Timeout(connect=connect, read=read),
            retries=False,
            **tls,
        )
        self._manager.pool_classes_by_scheme = {
            name: _budgeted(cls, before_send, after_send, self._arm)
            for name, cls in self._manager.pool_classes_by_scheme.items()
        }
        self._pool = self._manager.connection_from_url(base_url)
        # Through a proxy that is not tunnelled to (an http host, an HTTP proxy), a request
        # names the whole URL, as requests sent it.
        proxy = self.settings.proxy
        absolute = proxy is not None and scheme == "http" and not proxy.lower().startswith("socks")
        self._prefix = base_url if absolute else ""

    def get(self, target: str, headers: Mapping[str, str]) -> tuple[BaseHTTPResponse, bytes]:
        """Send GET ``target`` (path and query) and read the whole answer, the connection then
        back in the pool. An answer not all in within `answer_timeout` of sending raises
        `AnswerTimeoutError`."""
        self._local.armed = None
        try:
            resp = self._pool.urlopen(
                "GET",
                self._prefix + target,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
            )
            try:
                # In one read: chunks cost a Python round trip each (10 KB chunks were a tenth
                # of a page's receive cost).
                body = resp.read(decode_content=True) or b""
            finally:
                resp.release_conn()  # disarms the deadline (`_budgeted`)
        except Exception:
            if self._disarm():  # the failure is the deadline's shutting the socket down
                raise self._too_slow(target) from None
            raise
        finally:
            late = self._disarm()  # also when interrupted
        if late:  # a body cut short may still read as whole (one ended by the connection's end)
            raise self._too_slow(target)
        return resp, body

    def _arm(self, sock: Any) -> Armed:
        armed = self._local.armed = WATCHDOG.arm(sock, self.answer_timeout)
        return armed

    def _disarm(self) -> bool:
        """Whether this thread's exchange outlived its deadline (its socket then shut down)."""
        armed: Armed | None = self._local.armed
        return armed is not None and armed.disarm()

    def _too_slow(self, target: str) -> AnswerTimeoutError:
        return AnswerTimeoutError(
            self._pool,
            target,
            f"the whole answer took longer than {self.answer_timeout:g}s",
        )

    def close(self) -> None:
        self._manager.clear()


__all__ = ["AnswerTimeoutError", "Connections", "NetworkSettings", "answer_timeout"]
