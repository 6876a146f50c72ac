"""The simulated Paragon API: a user's managed syncs, behind static or RS256 user tokens."""

from __future__ import annotations

import time
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncwatch.simulator.faults import Fault, spoil
from syncwatch.simulator.state import SimState
from syncwatch.simulator.upstream import UpstreamAPI
from syncwatch.simulator.wire import PARAGON, dumps, error_response

_JWT_CACHE_MAX: Final = 10_000


class ParagonAPI(UpstreamAPI):
    """`GET /api/syncs` (optionally by `credentialId`) and `GET /api/syncs/{sync_id}`."""

    source = PARAGON
    envelope = "data"

    def __init__(self, state: SimState) -> None:
        super().__init__(state)
        config = state.config
        prefix = config.paragon_static_token_prefix
        self._static_prefix = f"{prefix}:" if prefix else None
        self._public_key = _load_public_key(config.paragon_public_key_pem)
        self._audience = f"useparagon.com/{config.paragon_project_id}"
        self._jwt_cache: dict[str, tuple[str, float]] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/api/syncs", self.endpoint(self.list_syncs), methods=["GET"]),
            Route("/api/syncs/{sync_id}", self.endpoint(self.get_sync), methods=["GET"]),
        ]

    def authenticate(self, request: Request) -> tuple[str, Response | None]:
        header = request.headers.get("authorization")
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "-", error_response(401, "missing bearer token")
        if self._static_prefix is not None and token.startswith(self._static_prefix):
            user = token[len(self._static_prefix) :]
        else:
            user, denied = self._verify_jwt(token)
            if denied is not None:
                return user, denied
        if user not in self.state.fleet.paragon_by_user:
            return user, error_response(403, "forbidden: unknown user")
        return user, None

    def _verify_jwt(self, token: str) -> tuple[str, Response | None]:
        cached = self._jwt_cache.get(token)
        # `exp` is real time: the client mints tokens with its own clock, not the simulated one.
        if cached is not None:
            if cached[1] > time.time():
                return cached[0], None
            del self._jwt_cache[token]
            return cached[0], error_response(401, "token expired")
        if self._public_key is None:
            return _unverified_sub(token), error_response(401, "invalid token")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                audience=self._audience,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return _unverified_sub(token), error_response(401, "token expired")
        except jwt.InvalidTokenError:
            return _unverified_sub(token), error_response(401, "invalid token")
        sub = claims["sub"]
        if len(self._jwt_cache) >= _JWT_CACHE_MAX:
            self._jwt_cache.clear()
        self._jwt_cache[token] = (sub, float(claims["exp"]))
        return sub, None

    def views(self, tenant: str, wanted: str | None, now: int) -> list[dict[str, Any]]:
        return self.state.paragon_views(tenant, wanted, now)

    async def list_syncs(self, request: Request, user: str, fault: Fault | None) -> Response:
        return await self.listing(request, user, request.query_params.get("credentialId"), fault)

    async def get_sync(self, request: Request, user: str, fault: Fault | None) -> Response:
        sync_id: str = request.path_params["sync_id"]
        spec = self.state.fleet.paragon_by_id.get(sync_id)
        # Another user's sync is as invisible as a missing one.
        if spec is None or spec.user_id != user or (PARAGON, sync_id) in self.state.deleted:
            body = dumps({"detail": "sync not found"})
            return await self.state.faults.respond(request, fault, 404, body)
        now = self.state.now()
        view = self.state.paragon_view(spec, now, detail=True)
        # A duplicate fault has no listing to add to here; only poison changes the record.
        broken = spoil([view], fault, now) if fault is not None and fault.kind == "poison" else None
        return await self.state.faults.respond(request, fault, 200, dumps(view), broken)


def _load_public_key(pem: bytes | None) -> RSAPublicKey | None:
    if pem is None:
        return None
    key = load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("paragon_public_key_pem must be an RSA public key (tokens are RS256)")
    return key


def _unverified_sub(token: str) -> str:
    """The `sub` of a token that failed verification: only to attribute the request."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.InvalidTokenError:
        return "-"
    return sub if isinstance(sub, str) else "-"


def rsa_keypair() -> tuple[bytes, bytes]:
    """A fresh RS256 key pair (private PKCS8 PEM, public SPKI PEM) for minting user tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
