"""Assembling and running one gateway process: the listeners and their lifetime.

:class:`Gateway` binds the client HTTP listener, the gRPC listener (when
``listen.grpc`` is set) and the admin listener, all over one :class:`Runtime`.
``start`` returns once they accept connections; ``stop`` drains (readyz 503,
gRPC health NOT_SERVING, in-flight streams finish within the grace period,
the rest end with an error) and closes upstream pools.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.admin.api import admin_app, metrics
from gateway.app.build import Built, build, reloader, start_discovery
from gateway.app.reload import Reloader
from gateway.app.reload import register as register_reloader
from gateway.app.reload import unregister as unregister_reloader
from gateway.app.runtime import Runtime
from gateway.app.wiring import attach
from gateway.config.model import Config
from gateway.control.discovery import Discovery
from gateway.http.api import PIPELINE, RUNTIME, openai_errors, routes
from gateway.security.tls import Watcher
from regions.pacing import PACER

if TYPE_CHECKING:
    from gateway.grpc.server import GrpcServer

log = logging.getLogger("meridian")


def metrics_app(client: web.Application) -> web.Application:
    """``listen.metrics``: ``GET /metrics`` alone, without a token, for a scraper on an
    address only it can reach (the admin listener's ``/metrics`` takes a viewer token)."""
    app = web.Application(middlewares=[openai_errors])
    app[RUNTIME] = client[RUNTIME]
    app.router.add_get("/metrics", metrics)
    return app


# After a response to a request whose body was not read (401, 408, 413...),
# aiohttp reads and drops what the client still sends for this long before it
# closes, so the client reads the error instead of a reset. Its default, 10 s,
# kept a connection per refused slow or oversized upload open that long.
_LINGERING_S = 0.5
# The collector's thresholds once start-up's heap is frozen. A streamed request
# allocates thousands of container objects that die with it; at Python's default
# (700, 10, 10) the young generation was collected hundreds of times a second at
# 200 streams (7.6 % of the busy samples in gc_collect_main) and the middle
# generations, which hold every open stream's state, every tenth of those.
# Cycles are still collected, later; what is not a cycle is freed at once anyway.
# bench.instructions --concurrency 40 --itl-ms 40 --tokens 64: 5.764 -> 5.606 M/request.
GC_THRESHOLDS = (20_000, 20, 20)


def settle_heap() -> None:
    """Once started: start-up's heap out of the collector, then its serving thresholds.

    What start-up made (imports, config, runtime: ~86,000 objects) lives as long
    as the process: out of the collector's generations, a collection walks only
    what requests allocate (it was a quarter of the busy CPU at 200 streams).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, with a malformed request (a bad header, a line too long,
    a duplicate Content-Type, a body that does not decode: the client's fault, also
    when aiohttp meets it draining an unread body) as one DEBUG line instead of an
    ERROR with a traceback per request, which any client could fill the log with.
    Faults of the gateway itself keep their traceback."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):  # a body that does not decode
            exc = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
            kwargs["exc_info"] = None
            msg = f"{msg}: malformed request body: {exc}"
            level = logging.DEBUG
        elif isinstance(exc, HttpProcessingError):
            kwargs["exc_info"] = None
            msg = f"{msg}: malformed request: {exc.code} {exc.message.strip()}"
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


_SERVER_LOG = _ServerLog(logging.getLogger("aiohttp.server"))


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Gateway:
    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str] | None = None,
        *,
        reuse_port: bool = False,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # what SIGHUP and POST /admin/v1/reload re-read
        self._environ = environ
        self._reuse_port = reuse_port
        self._runners: list[web.AppRunner] = []
        self.runtime: Runtime | None = None
        self.http_url = ""
        self.admin_url = ""
        self.metrics_url = ""  # listen.metrics; "" when not set
        self.grpc_address = ""  # HOST:PORT of the gRPC listener; "" when disabled
        self._grpc: GrpcServer | None = None
        self._paced = False  # this gateway holds a watch of regions.pacing.PACER
        self.discovery: Discovery | None = None  # config.discovery: backends found at run time
        self.reloader: Reloader | None = None
        self._tls = Watcher()  # listener certificates, reloaded when their files change

    def client_app(self, built: Built) -> web.Application:
        app = web.Application(
            middlewares=[openai_errors], client_max_size=self.config.limits.max_body_bytes
        )
        app[RUNTIME] = built.runtime
        app[PIPELINE] = built.pipeline
        routes(app)
        return app

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A listener that cannot bind (a busy port): close what was opened, so the
            # process exits on the one error line, without "Unclosed client session".
            await self.stop(grace=0.0)
            raise

    async def _start(self) -> None:
        built = await build(self.config, self._environ)  # the composition root
        runtime = self.runtime = built.runtime
        await attach(runtime, self._environ)  # the control plane: store, canary, limits
        if self.config_path is not None:
            self.reloader = reloader(runtime, self.config_path, self._environ)
            register_reloader(runtime, self.reloader)
        self.discovery = await start_discovery(runtime)  # after attach: it extends the base
        limits = self.config.limits
        client = self.client_app(built)
        self.http_url = await self._listen(
            client,
            self.config.listen.http,
            # aiohttp arms keepalive_timeout from connection start until a
            # complete request head, so it is also the slow-header guard.
            keepalive_timeout=limits.header_timeout_s,
            max_headers=limits.max_headers,
            max_field_size=limits.max_header_bytes,
            max_line_size=limits.max_header_bytes,
            reuse_port=self._reuse_port,
            ssl_context=self._tls.context("http", self.config.listen.tls.http),
        )
        self.admin_url = await self._listen(
            admin_app(client),
            self.config.listen.admin,
            keepalive_timeout=limits.header_timeout_s,
            reuse_port=self._reuse_port,
            ssl_context=self._tls.context("admin", self.config.listen.tls.admin),
        )
        if self.config.listen.metrics is not None:  # for a scraper: no token, no TLS
            self.metrics_url = await self._listen(
                metrics_app(client),
                self.config.listen.metrics,
                keepalive_timeout=limits.header_timeout_s,
                reuse_port=self._reuse_port,
            )
        if self.config.listen.grpc is not None:
            # Imported only here: grpcio's server, health and reflection cost ~12 MiB
            # of RSS a gateway without a gRPC listener never uses.
            from gateway.grpc.server import GrpcServer

            self._grpc = GrpcServer(
                built.pipeline,
                models=lambda: runtime.snapshot.models,
                tracing=runtime.tracing,
                limits=runtime.config.limits,
                timeouts=runtime.config.timeouts,
                reuse_port=self._reuse_port,
            )
            try:
                self.grpc_address = await self._grpc.start(
                    self.config.listen.grpc, self.config.listen.tls.grpc
                )
            except RuntimeError:  # grpcio's "Failed to bind to address": a busy port
                raise OSError(
                    f"cannot bind the gRPC listener to {self.config.listen.grpc}"
                ) from None
        self._paced = limits.pacing and PACER.watch(asyncio.get_running_loop())
        runtime.lifecycle.ready = True
        if self._grpc is not None:
            await self._grpc.ready()
        log.info(
            "meridian serving %s (admin %s, grpc %s)",
            self.http_url,
            self.admin_url,
            self.grpc_address or "off",
        )

    async def _listen(
        self,
        app: web.Application,
        address: str,
        *,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> str:
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            lingering_time=_LINGERING_S,
            logger=_SERVER_LOG,
            **kwargs,
        )
        await runner.setup()
        self._runners.append(runner)
        host, port = _split(address)
        site = web.TCPSite(
            runner, host, port, reuse_port=reuse_port or None, backlog=1024, ssl_context=ssl_context
        )
        await site.start()
        sockets = runner.addresses
        bound = sockets[0][1] if sockets else port
        return f"{'https' if ssl_context else 'http'}://{host}:{bound}"

    async def stop(self, grace: float | None = None) -> int:
        """Drain and close; returns how many streams had to be cut."""
        cut = 0
        if self._paced:
            PACER.unwatch()  # what drains below goes at its own pace
            self._paced = False
        if self.runtime is not None:
            wait = self.config.shutdown.grace_s if grace is None else grace
            if self._grpc is not None:
                await self._grpc.draining()  # health NOT_SERVING before calls are refused
            cut = await self.runtime.lifecycle.drain(wait)
        if self._grpc is not None:
            await self._grpc.stop()
            self._grpc = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self._tls.close()
        if self.reloader is not None:
            await self.reloader.stop()  # adapters a reload retired, streams ended above
            unregister_reloader(self.runtime)
            self.reloader = None
        if self.discovery is not None:
            await self.discovery.stop()  # retiring adapters close; in-flight streams ended above
            self.discovery = None
        if self.runtime is not None:
            if self.runtime.control is not None:
                await self.runtime.control.stop()
            await self.runtime.close()
        return cut

    async def serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[object]] = set()
        # Before start: a SIGHUP sent as soon as the gateway logs "serving" must not kill it.
        loop.add_signal_handler(signal.SIGHUP, self._sighup, reloads)
        await self.start()
        settle_heap()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("draining: refusing new requests, finishing streams in flight")
        cut = await self.stop()
        if cut:
            log.warning("cut %d streams at the end of the grace period", cut)

    def _sighup(self, reloads: set[asyncio.Task[object]]) -> None:
        if self.reloader is None:
            log.warning("SIGHUP: this gateway was not started from a config file; ignored")
            return
        task: asyncio.Task[object] = asyncio.ensure_future(self.reloader.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)
