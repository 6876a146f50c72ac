"""Every status page view, checked by axe-core in a real headless Chromium.

The vendored, pinned axe-core (tests/vendor/axe-core/, see its README) runs inside each page
against a daemon over the simulator with firing, suppressed and acknowledged alerts and
active, pending and expired silences; in `prefers-color-scheme: light` and `dark`, at 1280 px
and at a phone's 390 px. No view may have a violation of impact serious or critical; at 390 px
the document may not scroll sideways (wide tables scroll in their own region); every state
drawn in colour also says it in text with a symbol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

import httpx
import pytest

from syncwatch.web import lists, view
from tests.browsing import open_page
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # 4.14.1
BLOCKING = ("serious", "critical")
SCHEMES: tuple[Literal["light", "dark"], ...] = ("light", "dark")
SIZES: dict[str, ViewportSize] = {
    "1280px": {"width": 1280, "height": 900},
    "phone": {"width": 390, "height": 844},
}
NOT_FOUND = "/tenants/timbal/no-such-tenant"
# Every state a page colours (a sync's, an alert's, a severity); each element of one of these
# classes must be the `state` macro's "<symbol> <name>".
STATE_CLASSES = tuple(dict.fromkeys((*view.STATES, *lists.ALERT_STATES, *lists.SEVERITIES)))


@dataclass(frozen=True)
class Fleet:
    """Where the views are, read from the daemon once its alerts fire."""

    tenant: str  # /tenants/{source}/{tenant} of a firing alert
    sync: str  # /syncs/{source}/{tenant}/{sync_id} of that alert
    fingerprint: str  # a firing, unsilenced alert's
    filters: str  # /alerts?... narrowed to that alert's source, tenant, severity, firing


def firing(daemon: Daemon) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = daemon.get("/api/v2/alerts").raise_for_status().json()
    return [a for a in alerts if a["status"]["state"] == "active" and a["labels"].get("sync_id")]


def silence(daemon: Daemon, matchers: dict[str, str], starts: timedelta, comment: str) -> str:
    now = datetime.now(UTC)
    body = {
        "matchers": [{"name": k, "value": v, "isRegex": False} for k, v in matchers.items()],
        "startsAt": (now + starts).isoformat(),
        "endsAt": (now + starts + timedelta(hours=2)).isoformat(),
        "createdBy": "ops@example.com",
        "comment": comment,
    }
    answer = httpx.post(f"{daemon.url}/api/v2/silences", json=body, timeout=20)
    silence_id: str = answer.raise_for_status().json()["silenceID"]
    return silence_id


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, simulator: SimProcess, rsa_keys: Keys
) -> Iterator[Daemon]:
    """A daemon with firing alerts, one silenced, one acknowledged; silences in every state."""
    simulator.reset()
    d = launch(tmp_path_factory.mktemp("a11y"), simulator, rsa_keys)

    def several() -> list[dict[str, Any]] | None:
        alerts = firing(d)
        return alerts if len(alerts) >= 3 else None

    alerts: list[dict[str, Any]] = wait_until(several, timeout=30)
    muted, acked = alerts[-1]["labels"], alerts[-2]
    only = {"alertname": muted["alertname"], "sync_id": muted["sync_id"]}
    silence(d, only, timedelta(0), "known: upstream migration")
    silence(d, {"tenant": "tomorrow"}, timedelta(hours=1), "planned maintenance")
    old = silence(d, {"tenant": "yesterday"}, timedelta(0), "done")
    httpx.delete(f"{d.url}/api/v2/silence/{old}", timeout=20).raise_for_status()
    body = {"createdBy": "oncall@example.com", "comment": "looking at it"}
    url = f"{d.url}/api/v1/alerts/{acked['fingerprint']}/ack"
    httpx.post(url, json=body, timeout=20).raise_for_status()
    yield d
    d.proc.stop()


@pytest.fixture(scope="module")
def fleet(daemon: Daemon) -> Fleet:
    a = firing(daemon)[0]
    labels = a["labels"]
    source, tenant, sync_id = (quote(labels[k], safe="") for k in ("source", "tenant", "sync_id"))
    query = {"source": labels["source"], "tenant": labels["tenant"]}
    query |= {"severity": labels["severity"], "state": "firing"}
    return Fleet(
        tenant=f"/tenants/{source}/{tenant}",
        sync=f"/syncs/{source}/{tenant}/{sync_id}",
        fingerprint=a["fingerprint"],
        filters="/alerts?" + urlencode(query),
    )


def rejected_form(page: Page, _: Fleet) -> None:
    """The silence form as it comes back with an error: its `role="alert"` message shown."""
    page.goto("/silences/new")
    page.fill("#matchers", 'tenant="nobody"')
    page.fill("#duration", "a while")
    page.fill("#author", "ops@example.com")
    page.fill("#comment", "check")
    page.get_by_role("button", name="Create silence").click()
    page.wait_for_selector("#error")


VIEWS: dict[str, Callable[[Page, Fleet], object]] = {
    "overview": lambda p, f: p.goto("/"),
    "tenant list": lambda p, f: p.goto("/tenants"),
    "tenant list none match": lambda p, f: p.goto("/tenants?q=nobody"),
    "tenant": lambda p, f: p.goto(f.tenant),
    "tenant filtered": lambda p, f: p.goto(f.tenant + "?state=critical"),
    "sync": lambda p, f: p.goto(f.sync),
    "alerts": lambda p, f: p.goto("/alerts"),
    "alerts filtered": lambda p, f: p.goto(f.filters),
    "alerts none match": lambda p, f: p.goto("/alerts?tenant=nobody"),
    "silences": lambda p, f: p.goto("/silences"),
    "silence form": lambda p, f: p.goto("/silences/new"),
    "silence form from an alert": lambda p, f: p.goto(f"/silences/new?fingerprint={f.fingerprint}"),
    "silence form rejected": rejected_form,
    "error 404": lambda p, f: p.goto(NOT_FOUND),
}


def axe_findings(page: Page, *, clipped: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """axe-core's serious and critical violations, and the contrasts it could not measure.

    A contrast axe leaves "incomplete" (text it cannot see against a known background) is
    not a contrast shown to meet AA, so it counts too - except where the layout `clipped` text
    on purpose: on a phone a wide table's far columns sit scrolled out of its region, axe
    cannot see them, and the same colours were measured at 1280 px, where nothing is clipped.
    """
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "axe.run(document, {resultTypes: ['violations', 'incomplete']})"
    )
    found = [("violation", v) for v in result["violations"] if v["impact"] in BLOCKING]
    if not clipped:
        found += [("unverified", v) for v in result["incomplete"] if v["id"] == "color-contrast"]
    return found


def describe(where: str, findings: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for kind, v in findings:
        lines.append(f"{where}: {kind} {v['id']} ({v['impact']}) {v['help']}")
        lines.extend(f"    {n['target']}: {n['failureSummary']}" for n in v["nodes"][:5])
        if len(v["nodes"]) > 5:
            lines.append(f"    ... and {len(v['nodes']) - 5} more nodes")
    return lines


SIDEWAYS = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
# Every element coloured as a state: its classes and the text it shows.
COLOURED = """classes => [...document.querySelectorAll(classes.map(c => '.' + c).join(','))]
  .map(e => ({classes: [...e.classList], text: e.innerText.trim()}))"""
BACKGROUND = "() => getComputedStyle(document.body).backgroundColor"


def luminance(rgb: str) -> float:
    """WCAG relative luminance of a computed `rgb(r, g, b)`."""
    channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_the_vendored_axe_core_is_the_pinned_one() -> None:
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256


def test_axe_runs_in_the_page_and_reports_what_it_should(browser: Browser, daemon: Daemon) -> None:
    """The check can fail: an unlabelled field and grey-on-grey text are found."""
    for page in open_page(browser, daemon, javascript=True, bypass_csp=True):
        page.goto("/")
        page.evaluate("""() => document.querySelector("main").insertAdjacentHTML("beforeend",
          '<p style="color:#777;background:#888">faint</p><input id="unnamed">')""")
        found = {v["id"] for _, v in axe_findings(page)}
        assert {"color-contrast", "label"} <= found, found


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_has_no_serious_accessibility_violation(
    browser: Browser, daemon: Daemon, fleet: Fleet, view: str
) -> None:
    refused = (NOT_FOUND, "/silences")  # the 404 view, and the rejected form's 400 answer
    problems: list[str] = []
    for page in open_page(browser, daemon, javascript=True, refused=refused, bypass_csp=True):
        for scheme in SCHEMES:
            for size_name, size in SIZES.items():
                where = f"{view} [{scheme}, {size_name}]"
                page.set_viewport_size(size)
                page.emulate_media(color_scheme=scheme)
                VIEWS[view](page, fleet)
                problems += describe(where, axe_findings(page, clipped=size_name == "phone"))
                if size_name == "phone":
                    wide, shown = page.evaluate(SIDEWAYS)
                    if wide > shown:
                        problems.append(f"{where}: the page scrolls sideways ({wide} > {shown} px)")
    assert not problems, "\n".join(["axe-core 4.14.1 found:", *problems])


@pytest.mark.parametrize("view", ["overview", "tenant", "sync", "alerts"])
def test_states_are_text_with_a_symbol_never_colour_alone(
    browser: Browser, daemon: Daemon, fleet: Fleet, view: str
) -> None:
    symbols: dict[str, set[str]] = {}
    for page in open_page(browser, daemon, javascript=False):
        VIEWS[view](page, fleet)
        coloured = page.evaluate(COLOURED, list(STATE_CLASSES))
        assert coloured, "no state shown"
        for e in coloured:
            (name,) = (c for c in e["classes"] if c in STATE_CLASSES)
            assert "state" in e["classes"], e
            symbol, _, text = e["text"].partition(" ")
            assert text == name, e
            assert len(symbol) == 1, e
            assert not symbol.isalnum(), e
            symbols.setdefault(name, set()).add(symbol)
    assert all(len(s) == 1 for s in symbols.values()), symbols


SAMPLES = """names => document.querySelector("main").insertAdjacentHTML("beforeend",
  '<p id="samples">' + names.map(n => `<span class="state ${n}">${n}</span>`).join(" ")
  + ' <span class="muted">muted</span></p>')"""


def test_every_state_colour_meets_aa_in_both_schemes(browser: Browser, daemon: Daemon) -> None:
    """Each state's colour (and muted text) against the page, whether the fleet shows it or not."""
    for page in open_page(browser, daemon, javascript=True, bypass_csp=True):
        page.goto("/")
        page.evaluate(SAMPLES, list(STATE_CLASSES))
        page.add_script_tag(path=str(AXE))
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            result = page.evaluate("axe.run('#samples', {runOnly: ['color-contrast']})")
            assert not result["violations"], (scheme, result["violations"])
            assert not result["incomplete"], (scheme, result["incomplete"])
            (passed,) = result["passes"]
            assert len(passed["nodes"]) == len(STATE_CLASSES) + 1, (scheme, passed["nodes"])


def test_the_pages_follow_prefers_color_scheme(browser: Browser, daemon: Daemon) -> None:
    for page in open_page(browser, daemon, javascript=False):
        page.goto("/")
        page.emulate_media(color_scheme="light")
        assert luminance(page.evaluate(BACKGROUND)) > 0.8
        page.emulate_media(color_scheme="dark")
        assert luminance(page.evaluate(BACKGROUND)) < 0.05
