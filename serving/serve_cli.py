"""``dxv serve``: start the service on a local Ray (or attach with ``--address``) and keep
it in the foreground; ``dxv serve --stop`` shuts a running one down cleanly."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from models.errors import DxvError

_out = Console()


class ServeError(DxvError):
    code = "serve.error"


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the image-validation service on Ray Serve (Ctrl-C or --stop to end)")
    serve.add_argument("--config", type=Path, default=None, help="serving config (default configs/serving.yaml)")
    serve.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    serve.add_argument("--address", default=None, help="attach to an existing Ray cluster (e.g. auto, ray://host:10001)")
    serve.add_argument("--stop", action="store_true", help="stop the running service")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from serving.service import resolved_placement, run_service, stop_service
    from serving.service_config import DEFAULT_SERVING_CONFIG

    if args.stop:
        outcome = stop_service()
        if outcome == "not_running":
            raise ServeError("no running service to stop (no pid file, or its process has ended)")
        if outcome == "timeout":
            raise ServeError("the service did not stop in time (asked twice); its process is still running")
        _out.print("service stopped")
        return 0

    def ready(config: Any) -> None:
        where = {"ingress": "in the ingress", "pipeline": "in a deployment each, decoded in another"}.get(
            resolved_placement(config), "in a model deployment")
        _out.print(f"service running at http://{config.http.host}:{config.http.port} (OpenAPI at /docs; "
                   f"models {where}); Ctrl-C or 'dxv serve --stop' to end", highlight=False, soft_wrap=True)

    run_service(args.config or DEFAULT_SERVING_CONFIG, tuple(args.overrides), args.address, on_ready=ready)
    _out.print("service stopped")
    return 0
