"""Talking to a Label Studio server: its health, whether it accepts the API key, the SDK client.

The one place that checks a server: ``whp studio status``, ``whp doctor`` and every review
command (through :func:`sdk_client`) ask :func:`check_server`. Nothing here reads settings or
project files; :mod:`pipeline.review.studio` resolves which server and key to use.

A server on this machine (``localhost``, ``127.0.0.0/8``, ``::1``) is always reached directly:
``urllib`` and ``httpx`` would otherwise send the request, API key included, to the proxy in
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (loopback is not exempt unless ``NO_PROXY`` says
so). A remote server is reached as the environment says (proxy, certificates).
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import httpx
    from label_studio_sdk import LabelStudio

URL_KEY = "LABEL_STUDIO_URL"
API_KEY_KEY = "LABEL_STUDIO_API_KEY"
HEALTH = "/health"
WHOAMI = "/api/current-user/whoami"
"""What the key check asks: the key's own user (cheap, and refused with 401 for a wrong key)."""


class StudioError(PipelineError):
    """The Label Studio server cannot be installed, started, reached, or refuses the API key."""


@dataclass(frozen=True)
class ServerCheck:
    """What a server answered: ``health`` and ``key`` are the HTTP statuses of ``/health`` and
    of the key check (``None``: no answer, or not asked)."""

    url: str
    health: int | None
    key: int | None = None

    @property
    def healthy(self) -> bool:
        return self.health == 200

    @property
    def token_accepted(self) -> bool | None:
        """``None`` when the key was not checked or the check got no answer."""
        return None if self.key is None else self.key == 200


def is_loopback(url: str) -> bool:
    """The URL names this machine: ``localhost`` (and its subdomains), ``127.0.0.0/8``, ``::1``."""
    host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_status(url: str, *, token: str | None = None, timeout: float = 5.0) -> int | None:
    """The HTTP status of a GET, or None if nothing answers. Loopback requests bypass proxies."""
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    opener = (urllib.request.build_opener(urllib.request.ProxyHandler({}))
              if is_loopback(url) else urllib.request.build_opener())
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_client(url: str, *, timeout: float) -> httpx.Client:
    """The ``httpx`` client the SDK talks to ``url`` with: no proxy for a loopback server."""
    import httpx

    return httpx.Client(timeout=timeout, follow_redirects=True, trust_env=not is_loopback(url))


def check_server(url: str, *, api_key: str | None = None, timeout: float = 5.0) -> ServerCheck:
    """Ask ``url`` for its health and, when it is healthy and ``api_key`` is given, whether it
    accepts the key (a legacy token or a personal access token)."""
    url = url.rstrip("/")
    health = http_status(url + HEALTH, timeout=timeout)
    key = http_status(url + WHOAMI, token=api_key, timeout=timeout) if health == 200 and api_key else None
    return ServerCheck(url=url, health=health, key=key)


def sdk_client(url: str, api_key: str, *, timeout: float = 60.0) -> LabelStudio:
    """An SDK client for ``url``, checked to be reachable and to accept ``api_key``.

    Raises:
        StudioError: unreachable, unhealthy, or the key refused; the message names the URL and
            the fix, never the key.
    """
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    url = url.rstrip("/")
    health = check_server(url).health
    if health is None:
        raise StudioError(f"Label Studio at {url} is unreachable: run `whp studio start`, or fix {URL_KEY}")
    if health != 200:
        raise StudioError(f"Label Studio at {url} answered /health with HTTP {health}: see its log "
                          "(.studio/server.log for the local server)")
    refused = (f"Label Studio at {url} refused the API key: fix {API_KEY_KEY} (environment or .env) - the local "
               f"server keeps the token it was first started with")
    try:
        # Both arguments explicitly: the SDK's defaults read the environment at import time.
        sdk = LabelStudio(base_url=url, api_key=api_key, timeout=timeout,
                          httpx_client=http_client(url, timeout=timeout))
        sdk.users.whoami()
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise StudioError(f"{refused} (HTTP {exc.status_code})") from None
        raise StudioError(f"Label Studio at {url} answered HTTP {exc.status_code} to the API key check (whoami)") from None
    except Exception as exc:  # noqa: BLE001 - httpx transport errors: the server went away
        raise StudioError(f"Label Studio at {url} is unreachable ({type(exc).__name__}): run `whp studio start`, "
                          f"or fix {URL_KEY}") from None
    return sdk
