"""What each `metrics.per_sync_series` mode costs Prometheus: `python -m benchmarks.cardinality`.

The benchmark fleet (1,000 Timbal orgs x 100 syncs + 10,000 Paragon users x 3 = 130,000
syncs, seed 7, as `python -m benchmarks` runs it) is built in this process: the simulator's
own listings at one instant, parsed by the sources' real models, judged by the real rules,
one cycle of the real engine for the alerts. Then `/metrics` is rendered in each mode, and
for each the series on the page (by kind), its bytes (plain and gzip) and the time of a
first render (the fleet part rendered afresh: the median of `--repeat` renders) are
printed, with ratios against mode `all` measured in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncwatch import logs
from syncwatch.config import PerSyncSeries
from syncwatch.engine import Engine
from syncwatch.evaluate import Report, evaluate_listings
from syncwatch.lifecycle import Alert
from syncwatch.metrics import Telemetry
from syncwatch.models import Listing, Source
from syncwatch.settings import load_config
from syncwatch.simulator import SimConfig
from syncwatch.simulator.state import SimState
from syncwatch.simulator.wire import dumps
from syncwatch.sources.base import parse_listing
from syncwatch.sources.paragon.client import ParagonListing, ParagonRecord
from syncwatch.sources.registry import rules_of
from syncwatch.sources.timbal.client import TimbalListing, TimbalRecord, adopt
from syncwatch.state import StateStore
from syncwatch.store import Store

MODES: tuple[PerSyncSeries, ...] = ("all", "alerting", "none")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# What each family of the page is, for the breakdown.
KINDS = {
    "per-sync": ("syncwatch_timbal_sync_", "syncwatch_paragon_sync_"),
    "alerts": ("syncwatch_alert{",),
    "per-tenant": ("syncwatch_source_",),
    "aggregates": ("syncwatch_tenant_",),
}


def fleet_report(orgs: int, users: int) -> tuple[Report, list[Alert]]:
    """The fleet's listings at NOW, evaluated, and the alerts one engine cycle raises."""
    sim = SimState(
        SimConfig(orgs=orgs, syncs_per_org=100, users=users, syncs_per_user=3, seed=7),
        clock=lambda: NOW,
    )
    now = sim.now()
    listings: list[Listing] = []
    for org in sim.fleet.orgs:
        body = dumps({"syncs": sim.timbal_views(org, None, now)})
        parsed = parse_listing(
            body,
            source=Source.TIMBAL,
            tenant=org,
            listing_model=TimbalListing,
            key="syncs",
            record_model=TimbalRecord,
        )
        adopt(parsed.records, org)  # as TimbalClient does: each record is then its sync
        syncs = [r.to_sync(org) for r in parsed.records]
        listings.append(Listing(Source.TIMBAL, org, syncs, upstream_now=NOW, clock_skew=0.0))
    for user in sim.fleet.users:
        body = dumps({"data": sim.paragon_views(user, None, now)})
        parsed_p = parse_listing(
            body,
            source=Source.PARAGON,
            tenant=user,
            listing_model=ParagonListing,
            key="data",
            record_model=ParagonRecord,
        )
        syncs_p = [r.to_sync(user) for r in parsed_p.records]
        listings.append(Listing(Source.PARAGON, user, syncs_p, upstream_now=NOW, clock_skew=0.0))
    config = load_config(
        None,
        timbal={"api_key": "k", "orgs": [{"id": o} for o in sim.fleet.orgs]},
        paragon={"users": [{"id": u, "token": "t"} for u in sim.fleet.users]},
    )
    report = evaluate_listings(listings, rules_of(config), NOW)
    with tempfile.TemporaryDirectory() as work:
        store = Store(StateStore(Path(work) / "state.db"))
        try:
            engine = Engine(config, store)
            engine.apply(report, NOW)
            alerts = list(engine.alerts.values())
        finally:
            store.close()
    return report, alerts


def kind_of(line: bytes) -> str:
    text = line.decode()
    return next(
        (kind for kind, prefixes in KINDS.items() if text.startswith(prefixes)), "daemon's own"
    )


def measure(
    report: Report, alerts: list[Alert], mode: PerSyncSeries, repeat: int
) -> dict[str, Any]:
    times = []
    page = b""
    for _ in range(repeat):
        telemetry = Telemetry(per_sync_series=mode)
        telemetry.record(report, alerts, NOW.timestamp())
        started = time.perf_counter()
        page, _ = telemetry.render("text/plain")
        times.append(time.perf_counter() - started)
    series = [line for line in page.splitlines() if line and not line.startswith(b"#")]
    return {
        "mode": mode,
        "series": len(series),
        "kinds": dict(Counter(kind_of(line) for line in series)),
        "bytes": len(page),
        "gzip_bytes": len(gzip.compress(page, compresslevel=1)),
        "render": statistics.median(times),
    }


def size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"


def table(rows: Sequence[dict[str, Any]], syncs: int, tenants: int, alerts: int) -> str:
    base = rows[0]
    kinds = [*KINDS, "daemon's own"]
    head = ["mode", "series", *kinds, "vs all", "bytes", "gzip", "render", "vs all"]
    out = [
        f"fleet: {syncs:,} syncs, {tenants:,} tenants, {alerts:,} alerts "
        f"(series by kind; bytes of the text format; render = first render, median)",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            f"`{r['mode']}`",
            f"{r['series']:,}",
            *(f"{r['kinds'].get(k, 0):,}" for k in kinds),
            f"{r['series'] / base['series']:.3f}x",
            size(r["bytes"]),
            size(r["gzip_bytes"]),
            f"{r['render']:.3f} s",
            f"{r['render'] / base['render']:.3f}x",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 orgs and 40 users")
    parser.add_argument("--repeat", type=int, default=3, help="renders per mode (median)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    orgs, users = (20, 40) if args.quick else (1000, 10_000)
    logs.configure("error", "console", [])  # not one line per alert raised
    started = time.perf_counter()
    report, alerts = fleet_report(orgs, users)
    print(f"built the fleet in {time.perf_counter() - started:.1f} s", flush=True)
    rows = [measure(report, alerts, mode, args.repeat) for mode in MODES]
    tenants = len(report.listings)
    print(table(rows, len(report.evaluations), tenants, len(alerts)))
    if args.out is not None:
        result = {"syncs": len(report.evaluations), "tenants": tenants, "alerts": len(alerts)}
        args.out.write_text(json.dumps({**result, "modes": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
