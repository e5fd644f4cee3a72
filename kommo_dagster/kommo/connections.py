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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util import make_headers, parse_url

from kommo_dagster.kommo.config import environment
from kommo_dagster.kommo.errors import KommoConfigError

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """The proxy and CA bundle the environment names for one host."""

    proxy: str | None  # URL of the proxy to go through, None to connect directly
    ca_bundle: str  # file or folder of the CA certificates that verify an https host

    @classmethod
    def from_environment(cls, base_url: str) -> NetworkSettings:
        """Resolved as requests resolved them for a session that trusts the environment."""
        # requests' helpers only read the environment here; no request goes through requests.
        from requests.utils import (
            DEFAULT_CA_BUNDLE_PATH,
            get_environ_proxies,
            prepend_scheme_if_needed,
            select_proxy,
        )

        proxy = select_proxy(base_url, get_environ_proxies(base_url))
        env = environment()
        bundle = next((env[v] for v in CA_BUNDLE_VARIABLES if env.get(v)), None)
        return cls(
            proxy=prepend_scheme_if_needed(proxy, "http") if proxy else None,
            ca_bundle=bundle or DEFAULT_CA_BUNDLE_PATH,
        )

    def __repr__(self) -> str:
        # A proxy URL may carry a password.
        proxy = None if self.proxy is None else _without_credentials(self.proxy)
        return f"NetworkSettings(proxy={proxy!r}, ca_bundle={self.ca_bundle!r})"


def _without_credentials(url: str) -> str:
    parts = parse_url(url)
    return parts._replace(auth="***").url if parts.auth else url


def _budgeted(
    pool_cls: type[HTTPConnectionPool],
    before_send: Callable[[], None],
    after_send: Callable[[], None],
) -> type[HTTPConnectionPool]:
    """``pool_cls`` whose connections call ``before_send`` once connected, right before the
    request's bytes go out, and ``after_send`` once they are out (or the write failed): the
    rate-limit slot is confirmed as close as possible to the moment the server counts the
    request, so connection set-up does not eat into the safety margin, and then settled to when
    the request really left. Only a connection the server closed during the wait for the slot
    is made again after it (that send is then settled late, and counted so)."""

    class Connection(pool_cls.ConnectionCls):  # type: ignore[name-defined,misc]
        kept_alive = False  # whether a request went out on it since it connected

        def connect(self) -> None:
            super().connect()
            self.kept_alive = False

        def request(self, *args: Any, **kwargs: Any) -> Any:
            if self.sock is None:
                self.connect()
            before_send()
            try:
                # A kept-alive connection the server closed during the wait for the slot (idle
                # past its time) would take the request to nowhere. (A new one is not polled:
                # a TLS 1.3 server's session tickets wait in it, unread, which reads as closed.)
                if self.kept_alive and not self.is_connected:
                    self.close()
                    self.connect()
                self.kept_alive = True
                return super().request(*args, **kwargs)
            finally:
                after_send()  # a write that failed half way may still have reached the server

    return type(pool_cls.__name__, (pool_cls,), {"ConnectionCls": Connection})


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
        after_send: Callable[[], None],
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
            name: _budgeted(cls, before_send, after_send)
            for name, cls in self._manager.pool_classes_by_scheme.items()
        }
        self._pool = self._manager.connection_from_url(base_url)
        # Through a proxy that is not tunnelled to (an http host, an HTTP proxy), a request
        # names the whole URL, as requests sent it.
        proxy = self.settings.proxy
        absolute = proxy is not None and scheme == "http" and not proxy.lower().startswith("socks")
        self._prefix = base_url if absolute else ""

    def get(self, target: str, headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """Send GET ``target`` (path and query) and return once the answer's headers are in;
        the caller reads the body and releases the connection."""
        return self._pool.urlopen(
            "GET",
            self._prefix + target,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )

    def close(self) -> None:
        self._manager.clear()


__all__ = ["Connections", "NetworkSettings"]
