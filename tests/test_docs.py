"""Docs that are generated stay in step with the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from syncwatch.config import Config

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "docs" / "config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date() -> None:
    """Regenerate with `python docs/config_reference.py`."""
    assert (ROOT / "docs" / "configuration.md").read_text() == _generator().render()


def test_configuration_reference_names_every_top_level_key() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for section in Config.model_fields:
        assert re.search(rf"`{section}[.\[`]", text), section


def test_alerts_reference_covers_every_alertname() -> None:
    from syncwatch.models import AlertName

    text = (ROOT / "docs" / "alerts.md").read_text()
    for name in AlertName:
        assert f"## `{name.value}`" in text, name


def test_metrics_reference_covers_every_metric_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    text = (ROOT / "docs" / "metrics.md").read_text()
    for name in set(re.findall(r"`(syncwatch_[a-z_]+)`", readme)):
        assert name in text, name
