"""Entry points only: parse arguments, call the app, map outcomes to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncwatch import __version__, logs
from syncwatch.config import (
    DEFAULT_PATHS,
    EX_CONFIG,
    ConfigError,
    parse_duration,
    secrets_of,
    to_toml,
)
from syncwatch.settings import Config, find_config_path, load_config, redacted_dump
from syncwatch.startup import StartupError

if TYPE_CHECKING:
    from syncwatch.silences import Muter
    from syncwatch.simulator import SimConfig as SimConfigT


def _config(path_arg: str | None) -> Config:
    path = find_config_path(path_arg, os.environ)
    return _load(path)


def _load(path: Path | None) -> Config:
    """load_config, saying which files were looked for when none was found."""
    try:
        return load_config(path)
    except ConfigError as exc:
        if path is None:
            looked = ", ".join(str(p.absolute()) for p in DEFAULT_PATHS)
            exc.problems.append(
                f"no config file found (looked for {looked}); pass -c FILE or set $SYNCWATCH_CONFIG"
            )
        raise


def _setup_logs(config: Config) -> None:
    logs.configure(config.daemon.log_level, config.daemon.log_format, secrets_of(config))


def cmd_run(args: argparse.Namespace) -> int:
    from syncwatch.daemon import run_daemon

    path = find_config_path(args.config, os.environ)
    return run_daemon(_load(path), path)


def cmd_test_notify(args: argparse.Namespace) -> int:
    from syncwatch.dispatch import send_test
    from syncwatch.http import make_http_client
    from syncwatch.notifiers.registry import make_notifier

    config = _config(args.config)
    _setup_logs(config)
    if not config.notifiers:
        print("syncwatch: no notifiers configured: add a [[notifiers]] table", file=sys.stderr)
        return 1
    chosen = [n for n in config.notifiers if args.notifier in (None, n.name)]
    if not chosen:
        known = ", ".join(n.name for n in config.notifiers)
        print(f"syncwatch: no notifier named {args.notifier!r} (known: {known})", file=sys.stderr)
        return 1

    async def send() -> dict[str, str | None]:
        async with make_http_client(
            timeout=config.daemon.request_timeout,
            max_connections=8,
            ca_bundle=config.daemon.ca_bundle,
        ) as client:
            notifiers = {
                n.name: make_notifier(
                    n,
                    client,
                    poll_interval=config.daemon.poll_interval,
                    ca_bundle=config.daemon.ca_bundle,
                )
                for n in chosen
            }
            return await send_test(notifiers, datetime.now(UTC), config.alerting.external_url)

    results = asyncio.run(send())
    for name, error in results.items():
        if error is None:
            print(f"{name}: delivered")
        else:
            print(f"{name}: FAILED: {error}")
    return 0 if all(e is None for e in results.values()) else 1


def cmd_validate(args: argparse.Namespace) -> int:
    config = _config(args.config)
    sys.stdout.write(to_toml(redacted_dump(config)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from syncwatch.check import (
        muted_conditions,
        nagios_status,
        poll_and_evaluate,
        render_json,
        render_table,
    )

    config = _config(args.config)
    _setup_logs(config)
    report = asyncio.run(poll_and_evaluate(config))
    muted = muted_conditions(report, _check_muter(config))
    print(render_json(report, muted) if args.format == "json" else render_table(report, muted))
    return int(nagios_status(report, muted))


def _check_muter(config: Config) -> Muter:
    """What mutes alerts as `run` sees it: the maintenance windows and, when the state
    database exists, its silences (never created here; unreadable means none, said once)."""
    from syncwatch.maintenance import maintenance_muter
    from syncwatch.silence_store import SilenceStore
    from syncwatch.silences import any_of

    muters = [maintenance_muter(config)]
    target = config.daemon.state_target()
    if not isinstance(target, Path) or target.exists():
        try:
            store = SilenceStore(target)
        except StartupError as exc:
            print(f"syncwatch: silences not read: {exc}", file=sys.stderr)
        else:
            muters.append(store.muter())
            store.close()
    return any_of(muters)


def cmd_simulate(args: argparse.Namespace) -> int:
    from syncwatch.simulator import SimConfig, serve

    host, port = args.listen
    public_key = Path(args.paragon_public_key).read_bytes() if args.paragon_public_key else None
    sim = SimConfig(
        orgs=args.orgs,
        syncs_per_org=args.syncs_per_org,
        users=args.users,
        syncs_per_user=args.syncs_per_user,
        seed=args.seed,
        time_scale=args.time_scale,
        churn=args.churn,
        latency=args.latency,
        paragon_public_key_pem=public_key,
    )

    def started(bound_port: int) -> None:
        print(simulator_banner(sim, host, bound_port), flush=True)

    serve(sim, host, port, on_started=started)
    return 0


def simulator_banner(sim: SimConfigT, host: str, port: int) -> str:
    """Where the simulator listens, its credentials, and a config for it ready to paste."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    orgs = [f"org_{o + 1:04d}" for o in range(sim.orgs)]
    users = [f"user-{u + 1:04d}" for u in range(sim.users)]
    lines = [
        f"syncwatch simulate: Timbal and Paragon APIs at {base}",
        f"  {sim.orgs} Timbal orgs x {sim.syncs_per_org} syncs, "
        f"{sim.users} Paragon users x {sim.syncs_per_user} syncs; "
        f"time runs {sim.time_scale:g}x; intended states at {base}/_sim/fleet",
        f"  Timbal API key: {sim.timbal_api_key}",
        f"  Paragon project id: {sim.paragon_project_id}; "
        + (
            "user tokens are minted with your signing key"
            if sim.paragon_public_key_pem
            else f"static user tokens: {sim.paragon_static_token_prefix}:<user id>"
        ),
        "  SIGTERM or Ctrl-C to stop. A config for it (syncwatch check -c sim.toml):",
        "",
        "[timbal]",
        f'base_url = "{base}"',
        f'api_key = "{sim.timbal_api_key}"',
    ]
    lines += [f'[[timbal.orgs]]\nid = "{o}"' for o in orgs]
    if users:
        lines += ["[paragon]", f'base_url = "{base}"']
        if sim.paragon_public_key_pem:
            lines += [
                f'project_id = "{sim.paragon_project_id}"',
                'signing_key_file = "paragon-signing-key.pem"  # the key you passed',
                "users = [" + ", ".join(f'"{u}"' for u in users) + "]",
            ]
        else:
            lines.append("users = [")
            lines += [
                f'  {{ id = "{u}", token = "{sim.paragon_static_token_prefix}:{u}" }},'
                for u in users
            ]
            lines.append("]")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from syncwatch.demo import run_demo

    return run_demo(duration=args.duration)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_port(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT); port 0 picks a free port and prints it."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if (
        not sep
        or not host
        or not port.isdigit()
        or int(port) > 65535
        or (":" in host and not bracketed)
    ):
        raise argparse.ArgumentTypeError(
            f"invalid address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
        )
    return host.strip("[]"), int(port)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


# Exit codes per command, shown by --help and kept in step with the README by a test.
EXIT_CODES: dict[str, str] = {
    "run": f"0 after SIGTERM/SIGINT; {EX_CONFIG} config error; cannot start: "
    "65 state database corrupt or newer, 69 listen address taken or unavailable, "
    "73 state path cannot be created, 74 disk full or I/O error, 75 state database locked, "
    "77 state file unreadable or read-only",
    "check": "Nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a tenant unreachable); "
    f"{EX_CONFIG} config error",
    "validate": f"0 valid; {EX_CONFIG} invalid",
    "test-notify": f"0 all delivered; 1 any failed or none configured; {EX_CONFIG} config error",
    "demo": "0; the start-up codes of `run`",
    "simulate": "0 after SIGTERM/SIGINT; 2 bad arguments",
}


def version_text() -> str:
    """`syncwatch 0.1.0 (commit 1a2b3c4d5e6f)`; the commit when built or run from git."""
    commit = _commit()
    return f"syncwatch {__version__}" + (f" (commit {commit})" if commit else "")


def _commit() -> str | None:
    try:
        from syncwatch._commit import COMMIT  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        return str(COMMIT)
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return None
    import subprocess

    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


class _VersionAction(argparse.Action):
    """Like argparse's `version`, but asks git only when --version is given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every set default shown; descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncwatch",
        description="Watch Timbal and Paragon syncs; alert when one goes stale or breaks.",
        epilog="Run 'syncwatch COMMAND --help' for a command's options and exit codes.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version (and git commit) and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=(description or summary[:1].upper() + summary[1:] + "."),
            epilog=f"exit codes: {EXIT_CODES[name]}",
            formatter_class=_Help,
        )

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help="config file (if unset: $SYNCWATCH_CONFIG, else ./syncwatch.toml, "
            "else /etc/syncwatch/config.toml)",
        )
        return p

    p = with_config(command("run", "the daemon: poll, alert, serve /metrics until stopped"))
    p.set_defaults(func=cmd_run)

    p = with_config(
        command(
            "check",
            "poll once, print every sync and alert, exit with a Nagios status",
            "Poll every tenant once and print every sync and every alert; sends nothing.\n"
            "CRITICAL beats UNKNOWN beats WARNING: a critical sync alert gives 2 even when\n"
            "a tenant is unreachable; an unreachable tenant alone gives 3 (its state is\n"
            "unknown), as Icinga orders states.",
        )
    )
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(func=cmd_check)

    p = with_config(
        command("validate", "validate the config and print it resolved, secrets redacted")
    )
    p.set_defaults(func=cmd_validate)

    p = with_config(
        command("test-notify", "send one clearly marked test alert through each notifier")
    )
    p.add_argument("--notifier", metavar="NAME", help="only this notifier (default: all)")
    p.set_defaults(func=cmd_test_notify)

    p = command("simulate", "serve simulated Timbal + Paragon APIs over HTTP")
    p.add_argument(
        "--listen",
        type=_host_port,
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to serve on; port 0 picks a free one (printed at start)",
    )
    p.add_argument("--orgs", type=_count, default=3, metavar="N", help="Timbal orgs")
    p.add_argument(
        "--syncs-per-org", type=_count, default=10, metavar="M", help="syncs per Timbal org"
    )
    p.add_argument("--users", type=_count, default=3, metavar="K", help="Paragon Connected Users")
    p.add_argument(
        "--syncs-per-user", type=_count, default=3, metavar="L", help="syncs per Paragon user"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="fleet generator seed")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="simulated seconds per real second",
    )
    p.add_argument(
        "--churn",
        type=float,
        default=0.1,
        metavar="F",
        help="fraction (0-1) of syncs that stall, error and recover over time",
    )
    p.add_argument(
        "--latency",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="delay added to every answer: seconds, or a duration such as 50ms or 2s",
    )
    p.add_argument(
        "--paragon-public-key",
        metavar="PEM",
        help="PEM public key file to verify minted Paragon user tokens "
        "(default: accept static sim tokens)",
    )
    p.set_defaults(func=cmd_simulate)

    p = command(
        "demo",
        "the whole daemon against built-in simulated APIs",
        "The whole daemon against built-in simulated Timbal and Paragon APIs, with a\n"
        "console notifier; simulated time runs 120x faster.",
    )
    p.add_argument(
        "--duration",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="stop after this long, e.g. 60s or 2m (default: until Ctrl-C)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"syncwatch: config: {problem}", file=sys.stderr)
        return EX_CONFIG
    except StartupError as exc:
        # The state file or the listen address cannot be used: one line, a sysexits code.
        print(f"syncwatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code
