"""Timbal connector syncs: the client (`client`) and what a sync means (`rules`)."""

from syncwatch.models import Source
from syncwatch.sources.base import SourceKind
from syncwatch.sources.timbal.client import TimbalClient, TimbalListing, TimbalRecord
from syncwatch.sources.timbal.rules import TimbalRules

KIND = SourceKind(
    Source.TIMBAL,
    client=lambda config, upstream, now: TimbalClient(config, upstream, now=now),
    rules=TimbalRules.from_config,
)

__all__ = ["KIND", "TimbalClient", "TimbalListing", "TimbalRecord", "TimbalRules"]
