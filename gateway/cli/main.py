"""The ``meridian`` command line.

Errors are one line on stderr and a non-zero exit; no tracebacks for anything
a user can cause (a bad config, a busy port, a bad flag).

The command families import rich only in the commands that print: a gateway
(``serve``) prints nothing, and rich is ~1.3 MiB of its idle RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from gateway.cli import (  # boot first: it sets GRPC_VERBOSITY before grpc loads
    boot,  # noqa: F401
)
from gateway.cli import (
    canary as cli_canary,
)
from gateway.cli import (
    completion as cli_completion,
)
from gateway.cli import (
    config as cli_config,
)
from gateway.cli import (
    key as cli_key,
)
from gateway.cli import (
    region as cli_region,
)
from gateway.cli import (
    replicas as cli_replicas,
)
from gateway.cli import (
    replicate as cli_replicate,
)
from gateway.cli import (
    route as cli_route,
)
from gateway.cli import (
    shadow as cli_shadow,
)
from gateway.cli import (
    status as cli_status,
)
from gateway.cli import (
    usage as cli_usage,
)
from gateway.cli import (
    weights as cli_weights,
)
from gateway.cli.admin_client import AdminError
from gateway.config.check import problems
from gateway.config.model import ConfigError


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-POSIX
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _serve(args: argparse.Namespace) -> int:
    config, found = problems(args.config)  # every problem at once, not the first pass's
    if config is None:
        raise ConfigError("\n".join(found))
    if args.workers == 1:  # SIGHUP and POST /admin/v1/reload re-read args.config
        from gateway.app.server import Gateway

        _run(Gateway(config, config_path=args.config).serve_until_signalled())
        return 0
    from gateway.app.workers import serve  # multiprocessing: only a supervisor needs it

    return serve(config, args.config, workers=args.workers, run=_run)


def _demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo import run_demo

    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://")):
        raise SystemExit(f"meridian: --redis wants a redis:// or rediss:// URL, not {args.redis!r}")
    _run(run_demo(args.http, args.admin, args.grpc or None, args.redis, tls=args.tls))
    return 0


def _emulate(args: argparse.Namespace) -> int:
    if args.kind == "sagemaker":
        return _emulate_sagemaker(args)
    if args.kind == "vertex":
        return _emulate_vertex(args)
    if args.endpoint:
        raise SystemExit("meridian: --endpoint is for the sagemaker and vertex emulators")
    from emulators.vllm import EmulatorConfig, serve_forever

    config = EmulatorConfig(
        served_models=tuple(args.model),
        ttft_s=args.ttft_ms / 1000,
        itl_s=args.itl_ms / 1000,
        default_max_tokens=args.max_tokens,
    )
    _run(serve_forever(args.host, args.port, config))
    return 0


def _emulate_sagemaker(args: argparse.Namespace) -> int:
    from emulators.sagemaker import SageMakerEmulatorConfig, serve_forever

    config = SageMakerEmulatorConfig(
        served_model=args.model[0],
        ttft_s=args.ttft_ms / 1000,
        itl_s=args.itl_ms / 1000,
        default_max_tokens=args.max_tokens,
    )
    if args.endpoint:
        endpoints = {}
        for item in args.endpoint:
            name, _, container = item.partition("=")
            if container not in ("vllm", "tgi", "lmi", "tei") or not name:
                raise SystemExit(f"meridian: --endpoint {item!r}: expected NAME=vllm|tgi|lmi|tei")
            endpoints[name] = container
        config.endpoints = endpoints
    _run(serve_forever(args.host, args.port, config))
    return 0


def _emulate_vertex(args: argparse.Namespace) -> int:
    from emulators.vertex import VertexEmulatorConfig, serve_forever

    config = VertexEmulatorConfig(
        served_model=args.model[0],
        ttft_s=args.ttft_ms / 1000,
        itl_s=args.itl_ms / 1000,
        default_max_tokens=args.max_tokens,
    )
    if args.endpoint:
        config.endpoints = tuple(args.endpoint)
    _run(serve_forever(args.host, args.port, config))
    return 0


def address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` with a port 0-65535 (0 = any free port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:8080, got {text!r}")
    return text


def port(text: str) -> int:
    """An argparse type: a TCP port, 0-65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def optional_address(text: str) -> str:
    """:func:`address`, or ``''`` (the listener is off)."""
    return text if text == "" else address(text)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meridian-gateway")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
        return "unknown"


def admin_options() -> argparse.ArgumentParser:
    """Options shared by every command that talks to the admin API."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin-url", help="admin API URL (env MERIDIAN_ADMIN_URL)")
    common.add_argument("--token", help="admin token (env MERIDIAN_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


class _Parser(argparse.ArgumentParser):
    """A usage error is one line too (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="meridian", description="Global inference gateway")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"meridian {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = admin_options()
    cli_route.add(sub, common)
    for family in (
        cli_config,
        cli_completion,
        cli_status,
        cli_usage,
        cli_weights,
        cli_region,
        cli_canary,
        cli_shadow,
        cli_replicas,
        cli_replicate,
        cli_key,
    ):
        family.add(sub, common)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="YAML config file")
    serve.add_argument("--workers", type=positive, default=1, help="processes sharing the ports")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="gateway + emulated backends in five regions")
    demo.add_argument("--http", type=address, default="127.0.0.1:8080", help="HTTP API address")
    demo.add_argument("--admin", type=address, default="127.0.0.1:9090", help="admin API address")
    demo.add_argument(
        "--grpc", type=optional_address, default="127.0.0.1:50051", help="gRPC address ('' = off)"
    )
    demo.add_argument("--redis", help="control-plane store in Redis (redis://HOST:PORT/DB)")
    demo.add_argument(
        "--tls", action="store_true", help="TLS on every listener, certificates made at start"
    )
    demo.set_defaults(func=_demo)

    emulate = sub.add_parser("emulate", help="run a backend emulator")
    emulate.add_argument("kind", choices=["vllm", "sagemaker", "vertex"])
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=port, required=True)
    emulate.add_argument("--ttft-ms", type=float, default=0.0)
    emulate.add_argument("--itl-ms", type=float, default=0.0)
    emulate.add_argument("--max-tokens", type=int, default=32, help="tokens when unasked")
    emulate.add_argument(
        "--model",
        action="append",
        default=None,
        help="served model name (repeatable)",
    )
    emulate.add_argument(
        "--endpoint",
        action="append",
        default=[],
        help="sagemaker: NAME=vllm|tgi|lmi|tei; vertex: endpoint ID (repeatable)",
    )
    emulate.set_defaults(func=_emulate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "model", "") is None:
        args.model = ["meta-llama/Llama-3.1-8B-Instruct"]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"meridian: config rejected: {exc}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"meridian: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meridian: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not the user's fault: still one line (-v: the traceback)
        if args.verbose:
            raise
        print(
            f"meridian: internal error: {type(exc).__name__}: {exc} (-v shows more)",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
