"""Every source, one line each; the Poller, evaluation, metrics and `check` follow it.

A source is one package under `sources/`: its client, its SourceRules, and
`KIND = SourceKind(source, client=…, rules=…)`; its config table is `[<source>]`.
"""

from __future__ import annotations

from syncwatch.evaluate import SourceRules
from syncwatch.models import Source
from syncwatch.settings import Config
from syncwatch.sources import paragon, timbal
from syncwatch.sources.base import SourceKind

SOURCES: tuple[SourceKind, ...] = (
    timbal.KIND,
    paragon.KIND,
)


def configured(config: Config) -> list[tuple[SourceKind, object]]:
    """Each source with a config table, and that table."""
    tables = ((kind, getattr(config, kind.source)) for kind in SOURCES)
    return [(kind, table) for kind, table in tables if table is not None]


def rules_of(config: Config) -> dict[Source, SourceRules]:
    """The rules every configured source's records are judged by."""
    return {kind.source: kind.rules(table) for kind, table in configured(config)}
