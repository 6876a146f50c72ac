"""Generate deploy/grafana/syncwatch.json, the syncwatch Grafana dashboard.

    python deploy/grafana/generate.py          # rewrite syncwatch.json
    python deploy/grafana/generate.py --check  # exit 1 if syncwatch.json is out of date

The dashboard is plain dicts so it stays reviewable; tests/test_dashboard.py checks the
committed JSON equals this output and runs every panel's query against a real Prometheus.
A tenant is a Timbal org (`org_id`) or a Paragon user (`user_id`), as on syncwatch_source_up.

Every panel but those in PER_SYNC_ONLY reads the per-tenant aggregates, so it works with
any `metrics.per_sync_series`; a PER_SYNC_ONLY panel says in its description that it needs
per-sync series (empty with "none", only the syncs with an alert with "alerting").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "syncwatch.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TIMBAL = 'org_id=~"$tenant"'
TENANT = 'tenant=~"$tenant"'
PER_SYNC_ONLY = {"Worst staleness ratios"}
PER_SYNC_NOTE = (
    " Needs per-sync series: empty with metrics.per_sync_series = none, only the syncs with"
    " an alert with alerting."
)


def target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }


def stat(title: str, description: str, targets: list[dict[str, Any]], color: str) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": "short",
                "decimals": 0,
                "color": {"mode": "thresholds"},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": color, "value": 1}],
                },
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
        },
    }


def timeseries(
    title: str, description: str, targets: list[dict[str, Any]], unit: str
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {"drawStyle": "line", "fillOpacity": 10, "showPoints": "never"},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def overview() -> list[dict[str, Any]]:
    return [
        row("Fleet overview"),
        stat(
            "Stale Timbal syncs",
            "Timbal syncs syncwatch judges warning or critical by its own thresholds and"
            " overrides: stale or never succeeded (or disabled, with alert_on_disabled).",
            [
                target(
                    "sum(syncwatch_tenant_syncs"
                    f'{{source="timbal", state=~"warning|critical", {TENANT}}}) or vector(0)',
                    "stale",
                    instant=True,
                )
            ],
            "orange",
        ),
        stat(
            "Critical Paragon syncs",
            "Paragon managed syncs syncwatch judges critical: ERRORED (and DISABLED with"
            ' paragon.disabled_severity = "critical").',
            [
                target(
                    "sum(syncwatch_tenant_syncs"
                    f'{{source="paragon", state="critical", {TENANT}}}) or vector(0)',
                    "critical",
                    instant=True,
                )
            ],
            "red",
        ),
        stat(
            "Tenants failing to list",
            "Tenants whose last listing failed (syncwatch_source_up == 0).",
            [
                target(
                    f"count(syncwatch_source_up{{{TENANT}}} == 0) or vector(0)",
                    "down",
                    instant=True,
                )
            ],
            "red",
        ),
        stat(
            "Tenants with invalid records",
            "Tenants whose last listing had records skipped for breaking the upstream API"
            " schema; their syncs' alerts are held (syncwatch_tenant_invalid_records).",
            [
                target(
                    f"count(syncwatch_tenant_invalid_records{{{TENANT}}} > 0) or vector(0)",
                    "tenants",
                    instant=True,
                )
            ],
            "orange",
        ),
    ]


def staleness() -> list[dict[str, Any]]:
    orgs = {
        "type": "table",
        "title": "Worst staleness ratio per org",
        "description": "The 15 Timbal orgs whose stalest sync is furthest behind schedule"
        " (1 = exactly one interval; enabled, not ignored syncs).",
        "datasource": DATASOURCE,
        "targets": [
            {
                **target(
                    "topk(15, syncwatch_tenant_worst_staleness_ratio"
                    f'{{source="timbal", {TENANT}}})',
                    instant=True,
                ),
                "format": "table",
            }
        ],
        "fieldConfig": ratio_colours(),
        "options": {
            "showHeader": True,
            "sortBy": [{"desc": True, "displayName": "staleness ratio"}],
        },
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time": True,
                        "__name__": True,
                        "instance": True,
                        "job": True,
                        "source": True,
                    },
                    "indexByName": {"tenant": 0},
                    "renameByName": {"tenant": "org_id"},
                },
            }
        ],
    }
    table = {
        "type": "table",
        "title": "Worst staleness ratios",
        "description": "The 15 Timbal syncs furthest behind schedule (1 = exactly one interval)."
        + PER_SYNC_NOTE,
        "datasource": DATASOURCE,
        "targets": [
            {
                **target(
                    f"topk(15, syncwatch_timbal_sync_staleness_ratio{{{TIMBAL}}})", instant=True
                ),
                "format": "table",
            }
        ],
        "fieldConfig": ratio_colours(),
        "options": {
            "showHeader": True,
            "sortBy": [{"desc": True, "displayName": "staleness ratio"}],
        },
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time": True,
                        "__name__": True,
                        "instance": True,
                        "job": True,
                    },
                    "indexByName": {"org_id": 0, "name": 1, "sync_id": 2, "connector_id": 3},
                },
            }
        ],
    }
    health = {
        "type": "state-timeline",
        "title": "Source health per tenant",
        "description": "1 = the tenant's last listing succeeded, 0 = it failed.",
        "datasource": DATASOURCE,
        "targets": [target(f"syncwatch_source_up{{{TENANT}}}", "{{source}} {{tenant}}")],
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"color": "red", "index": 0, "text": "down"},
                            "1": {"color": "green", "index": 1, "text": "up"},
                        },
                    }
                ],
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                },
            },
            "overrides": [],
        },
        "options": {"showValue": "never", "legend": {"showLegend": False}},
    }
    states = timeseries(
        "Syncs by state",
        "Syncs per source and the state syncwatch judges them in: ok, warning, critical,"
        " disabled (not alerted on), ignored (by an override), unknown (an upstream status it"
        " does not know).",
        [
            target(
                f"sum by (source, state) (syncwatch_tenant_syncs{{{TENANT}}})",
                "{{source}} {{state}}",
            )
        ],
        "short",
    )
    return [row("Syncs"), orgs, table, states, health]


def ratio_colours() -> dict[str, Any]:
    """A staleness-ratio column: green, orange from 1.5, red from 3 (the default thresholds)."""
    return {
        "defaults": {
            "decimals": 2,
            "thresholds": {
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 1.5},
                    {"color": "red", "value": 3},
                ],
            },
        },
        "overrides": [
            {
                "matcher": {"id": "byName", "options": "Value"},
                "properties": [
                    {"id": "displayName", "value": "staleness ratio"},
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                ],
            }
        ],
    }


def daemon() -> list[dict[str, Any]]:
    return [
        row("Daemon"),
        timeseries(
            "Poll duration p95",
            "95th percentile time to list one tenant's syncs, retries included.",
            [
                target(
                    "histogram_quantile(0.95, sum by (source, le)"
                    " (rate(syncwatch_poll_duration_seconds_bucket[$__rate_interval])))",
                    "{{source}}",
                )
            ],
            "s",
        ),
        timeseries(
            "Notifications by outcome",
            "Deliveries per second by notifier and outcome; `dropped` ones were given up on.",
            [
                target(
                    "sum by (notifier, outcome)"
                    " (rate(syncwatch_notifications_total[$__rate_interval]))",
                    "{{notifier}} {{outcome}}",
                )
            ],
            "ops",
        ),
        timeseries(
            "Outbox pending",
            "Notifications stored and not yet delivered, per notifier.",
            [target("sum by (notifier) (syncwatch_outbox_pending)", "{{notifier}}")],
            "short",
        ),
    ]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each panel an id and a grid position: rows full width, others packed left-right."""
    sizes = {"row": (24, 1), "stat": (6, 4), "table": (12, 10), "state-timeline": (12, 10)}
    x = y = line = 0
    for number, panel in enumerate(panels, start=1):
        w, h = sizes.get(panel["type"], (8, 8))
        if panel["title"] == "Syncs by state":
            w, h = 12, 10  # beside the source health timeline
        if x + w > 24 or panel["type"] == "row":
            x, y = 0, y + line
            line = 0
        panel["id"] = number
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        line = max(line, h)
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "annotations": {"list": []},
        "description": "Timbal and Paragon sync health as exported by syncwatch.",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": layout([*overview(), *staleness(), *daemon()]),
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["syncwatch"],
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                {
                    "type": "query",
                    "name": "tenant",
                    "label": "Tenant",
                    "datasource": DATASOURCE,
                    "definition": "label_values(syncwatch_source_up, tenant)",
                    "query": {
                        "query": "label_values(syncwatch_source_up, tenant)",
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {},
                    "hide": 0,
                    "refresh": 2,
                    "sort": 1,
                },
            ]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "title": "syncwatch",
        "uid": "syncwatch",
        "version": 1,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
