"""SIGHUP in-process: every broken config of test_config is refused and the old one kept.

`Daemon.reload()` is what the SIGHUP handler runs. For each `BROKEN` case the daemon starts
from a good config, the file is overwritten with the broken one (secret files and all, filled
in exactly as `test_broken_config_exits_78_naming_the_key` does), and the reload must keep
the very same config, poller and notifiers, logging `reload_failed` with the problem line.
Writing the good config back with one change then reloads for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from syncwatch.daemon import Daemon
from syncwatch.settings import load_config
from tests.conftest import toml_value
from tests.test_config import BROKEN, TIMBAL_KEY, Broken, ec_pem, rsa_pem

pytestmark = pytest.mark.usefixtures("clean_env")

CONFIG_NAME = "syncwatch-test.toml"  # the name test_config's `{config}` placeholder stands for


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """A good reload calls logs.configure; other tests must not inherit that."""
    saved = structlog.get_config()
    saved["processors"] = list(saved["processors"])
    yield
    structlog.configure(**saved)


def good_config(tmp_path: Path, listen: str, poll_interval: str = "30s") -> str:
    return f"""
[daemon]
poll_interval = {toml_value(poll_interval)}
listen = {toml_value(listen)}
state_path = {toml_value(str(tmp_path / "state.db"))}
request_timeout = "5s"
log_format = "json"

[timbal]
api_key = {toml_value(TIMBAL_KEY)}
[[timbal.orgs]]
id = "org_1"

[[notifiers]]
name = "console"
type = "console"

[[notifiers]]
name = "hook"
type = "webhook"
url = "https://hooks.example.com/reload-test"
"""


def fill(text: str, tmp_path: Path) -> str:
    """test_config's placeholders, filled the same way."""
    return (
        text.replace("{tmp}", str(tmp_path))
        .replace("{config}", str(tmp_path / CONFIG_NAME))
        .replace("{rsa_pem}", rsa_pem() if "{rsa_pem}" in text else "")
        .replace("{ec_pem}", ec_pem() if "{ec_pem}" in text else "")
    )


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
async def test_sighup_with_each_broken_config_keeps_the_old_one(
    case: Broken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / CONFIG_NAME
    listen = "127.0.0.1:0"
    config_path.write_text(good_config(tmp_path, listen), encoding="utf-8")
    daemon = Daemon(load_config(config_path), config_path)
    try:
        config, poller = daemon.config, daemon.poller
        notifiers = daemon.dispatcher.notifiers
        notifier_objects = dict(notifiers)
        assert sorted(notifiers) == ["console", "hook"]
        assert daemon.liveness.poll_interval == 30

        for name, content in case.files.items():
            (tmp_path / name).write_text(fill(content, tmp_path), encoding="utf-8")
        config_path.write_text(fill(case.toml, tmp_path), encoding="utf-8")
        with capture_logs() as events:
            daemon.reload()

        assert daemon.config is config
        assert daemon.engine.config is config
        assert daemon.poller is poller
        assert daemon.dispatcher.notifiers is notifiers
        assert daemon.dispatcher.notifiers == notifier_objects
        assert all(notifiers[n] is notifier_objects[n] for n in notifier_objects)
        assert daemon.liveness.poll_interval == 30
        failed = [e for e in events if e["event"] == "reload_failed"]
        assert len(failed) == 1, events
        assert failed[0]["log_level"] == "error"
        expected = fill(case.expected, tmp_path)
        assert any(p.startswith(expected) for p in failed[0]["problems"]), failed[0]
        assert not [e for e in events if e["event"] == "reloaded"], events

        # The good config back, with one change: now the reload applies.
        config_path.write_text(good_config(tmp_path, listen, "45s"), encoding="utf-8")
        capsys.readouterr()
        daemon.reload()

        assert daemon.config is not config
        assert daemon.config.daemon.poll_interval == 45
        assert daemon.engine.config is daemon.config
        assert daemon.poller is not poller
        assert daemon.liveness.poll_interval == 45
        assert sorted(daemon.dispatcher.notifiers) == ["console", "hook"]
        assert daemon.dispatcher.notifiers["hook"] is not notifier_objects["hook"]
        # logs.configure ran with the new config: JSON lines on stderr.
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
        assert [line["event"] for line in lines] == ["reloaded"], lines
        assert lines[0]["notifiers"] == ["console", "hook"]
    finally:
        await daemon.client.aclose()
        daemon.store.close()


def test_every_broken_case_is_covered() -> None:
    """The parametrisation above is the whole BROKEN list, not a stale copy."""
    assert len(BROKEN) >= 40
    assert len({c.id for c in BROKEN}) == len(BROKEN)
