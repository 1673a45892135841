"""``dxv``: the project's one command. Each package registers its own subcommands; the
heavy imports happen inside the handlers so that ``dxv --help`` stays fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from models.errors import DxvError

_err = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    from datasets import cli as datasets_cli
    from evaluation import cli as evaluation_cli
    from serving import monitor_cli, serve_cli, state_cli, validate_cli
    from serving.review import cli as review_cli
    from training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="dxv", description="Dental radiograph validation for claims adjudication.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_commands = datasets_cli.register(commands)
    training_cli.register(commands)
    evaluation_cli.register(commands)
    validate_cli.register(commands)
    state_cli.register(commands)
    serve_cli.register(commands)
    report_commands = review_cli.register(commands, data_commands)
    monitor_cli.register(commands, report_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DxvError as exc:
        _err.print(f"[bold red]error[/] ({exc.code}): {exc.message}", highlight=False)
        return 2
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
