"""Entry points only: parse arguments, call the app, map outcomes to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from syncwatch import __version__, logs
from syncwatch.config import (
    EX_CONFIG,
    Config,
    ConfigError,
    find_config_path,
    load_config,
    parse_duration,
    redacted_dump,
    secrets_of,
    to_toml,
)
from syncwatch.startup import StartupError


def _config(path_arg: str | None) -> Config:
    path = find_config_path(path_arg, os.environ)
    return load_config(path)


def _setup_logs(config: Config) -> None:
    logs.configure(config.daemon.log_level, config.daemon.log_format, secrets_of(config))


def cmd_run(args: argparse.Namespace) -> int:
    from syncwatch.daemon import run_daemon

    path = find_config_path(args.config, os.environ)
    return run_daemon(load_config(path), path)


def cmd_test_notify(args: argparse.Namespace) -> int:
    from syncwatch.dispatch import send_test
    from syncwatch.http import make_http_client
    from syncwatch.notifiers import make_notifier

    config = _config(args.config)
    _setup_logs(config)
    chosen = [n for n in config.notifiers if args.notifier in (None, n.name)]
    if not chosen:
        known = ", ".join(n.name for n in config.notifiers) or "none configured"
        print(f"syncwatch: no notifier named {args.notifier!r} (known: {known})", file=sys.stderr)
        return 1

    async def send() -> dict[str, str | None]:
        async with make_http_client(
            timeout=config.daemon.request_timeout,
            max_connections=8,
            ca_bundle=config.daemon.ca_bundle,
        ) as client:
            notifiers = {
                n.name: make_notifier(n, client, poll_interval=config.daemon.poll_interval)
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
    from syncwatch.check import nagios_status, poll_and_evaluate, render_json, render_table

    config = _config(args.config)
    _setup_logs(config)
    report = asyncio.run(poll_and_evaluate(config))
    print(render_json(report) if args.format == "json" else render_table(report))
    return int(nagios_status(report))


def cmd_simulate(args: argparse.Namespace) -> int:
    from syncwatch.simulator import SimConfig, serve

    host, _, port = args.listen.rpartition(":")
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
    serve(sim, host.strip("[]") or "127.0.0.1", int(port))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from syncwatch.demo import run_demo

    return run_demo(duration=args.duration)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncwatch",
        description="Watch Timbal and Paragon syncs; alert when one goes stale or breaks.",
    )
    parser.add_argument("--version", action="version", version=f"syncwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            help="config file (default: $SYNCWATCH_CONFIG, "
            "./syncwatch.toml, /etc/syncwatch/config.toml)",
        )
        return p

    p = with_config(sub.add_parser("run", help="the daemon"))
    p.set_defaults(func=cmd_run)

    p = with_config(
        sub.add_parser(
            "check", help="poll once, print every sync and alert, exit with a Nagios status"
        )
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_check)

    p = with_config(
        sub.add_parser(
            "validate", help="validate the config and print it resolved, secrets redacted"
        )
    )
    p.set_defaults(func=cmd_validate)

    p = with_config(
        sub.add_parser("test-notify", help="send a marked test alert through each notifier")
    )
    p.add_argument("--notifier", help="only this notifier (by name)")
    p.set_defaults(func=cmd_test_notify)

    p = sub.add_parser("simulate", help="serve simulated Timbal + Paragon APIs over HTTP")
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    p.add_argument("--orgs", type=int, default=3, help="Timbal orgs")
    p.add_argument("--syncs-per-org", type=int, default=10)
    p.add_argument("--users", type=int, default=3, help="Paragon Connected Users")
    p.add_argument("--syncs-per-user", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second (default %(default)s)",
    )
    p.add_argument(
        "--churn",
        type=float,
        default=0.1,
        help="fraction of syncs that stall, error and recover over time",
    )
    p.add_argument("--latency", type=_duration, default=0.0, help="delay added to every answer")
    p.add_argument("--paragon-public-key", help="PEM public key to verify minted user tokens")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="the whole thing against built-in simulated APIs")
    p.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="stop after this long, e.g. 60s (default: until Ctrl-C)",
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
