"""Paragon managed syncs: the client (`client`) and what a sync means (`rules`)."""

from syncwatch.models import Source
from syncwatch.sources.base import SourceKind
from syncwatch.sources.paragon.client import (
    ParagonClient,
    ParagonListing,
    ParagonRecord,
    TokenMinter,
)
from syncwatch.sources.paragon.rules import ParagonRules

KIND = SourceKind(
    Source.PARAGON,
    client=lambda config, upstream, now: ParagonClient(config, upstream, now=now),
    rules=ParagonRules.from_config,
)

__all__ = [
    "KIND",
    "ParagonClient",
    "ParagonListing",
    "ParagonRecord",
    "ParagonRules",
    "TokenMinter",
]
