"""The one place where the shared upstream/notifier `httpx.AsyncClient` is made."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

from syncwatch import __version__

USER_AGENT = f"syncwatch/{__version__}"


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """System trust store plus `ca_bundle`; verification is never turned off."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def make_http_client(
    *,
    timeout: float,
    max_connections: int,
    ca_bundle: Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """httpx over the aiohttp transport (several times faster here than httpx's default)."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    if transport is None:
        transport = AiohttpTransport(verify=ssl_context(ca_bundle), limits=limits)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        follow_redirects=False,
    )
