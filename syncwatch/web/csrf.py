"""CSRF tokens for the page's forms: an HMAC under a per-process secret, bound to the user.

A token is `<issued>.<hmac(secret, issued:user)>`; it is valid for MAX_AGE and only for the
user it was issued to (loopback clients without auth share the user ""). A restart makes
new tokens (an open form is refused once, then reloaded). Pure apart from the injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

MAX_AGE = 12 * 3600.0  # s: a form left open over a shift still posts


class Csrf:
    def __init__(self, secret: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.clock = clock

    def _mac(self, issued: str, user: str) -> str:
        message = f"{issued}:{user}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def token(self, user: str) -> str:
        issued = str(int(self.clock()))
        return f"{issued}.{self._mac(issued, user)}"

    def valid(self, token: str, user: str) -> bool:
        issued, _, mac = token.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(mac, self._mac(issued, user)):
            return False
        return 0 <= self.clock() - int(issued) <= MAX_AGE


def same_origin(origin: str | None, scheme: str, host: str | None) -> bool:
    """Whether a POST's `Origin` (when the browser sent one) is this server itself."""
    if origin is None:
        return True  # older browsers and curl send none: the token alone decides then
    parts = urlsplit(origin)
    return bool(host) and parts.scheme == scheme and parts.netloc.lower() == (host or "").lower()
