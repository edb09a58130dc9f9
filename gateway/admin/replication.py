"""Admin endpoints of weight replication: a job runs in this gateway replica.

    POST   /admin/v1/replications          {"model", "version", "to": [REGION, ...],
                                            "from": REGION?, "reverify": bool?}  → 202 + job
    GET    /admin/v1/replications          jobs this replica ran recently
    GET    /admin/v1/replications/{job}    live progress (what ``meridian replicate`` draws)
    DELETE /admin/v1/replications/{job}    cancel: unfinished regions end ``failed: interrupted``

Why here and not on the operator's laptop (docs/replication.md): the replica
has the cloud credentials of its instance role and the store connection, the
job outlives a closed terminal, and its status lands in the store that gates
routing. Locations come from the config only — a request names regions,
never URLs (no SSRF). A source region (``from``) must hold a verified copy:
its stored status, if any, must be ``verified``, and the job never builds a
manifest there (only the configured origin may lack one). One job per
(model, version, region) at a time across all replicas: each target is held
by a store lease, renewed while the job runs, so a dead replica's claim
expires and a new run resumes its work; a job that loses a lease (taken by
another holder, or not renewed for a TTL) is cancelled — its regions record
``failed: lease lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.admin.control import actor
from gateway.admin.requests import Refused, json_object, json_response
from gateway.app.runtime import Runtime
from gateway.config.cloud import ReplicationConfig
from gateway.control.plane import ControlPlane
from gateway.control.replication import ControlPlaneSink
from gateway.http.api import RUNTIME
from gateway.http.errors import error_response
from gateway.store import StoreUnavailable
from gateway.store.state import VERIFIED
from regions.replication import (
    JobOptions,
    ReplicationError,
    ReplicationJob,
    StoreFactory,
    StoreSettings,
    Target,
    parse_location,
)
from regions.replication.base import MiB
from regions.replication.manifest import check_name
from regions.tasks import stop_tasks

log = logging.getLogger("meridian.replication")

LEASE_TTL_S = 60.0
_KEEP_FINISHED = 50
_MAX_RUNNING = 8


def settings_from(config: ReplicationConfig) -> StoreSettings:
    return StoreSettings(
        s3_endpoint_url=config.s3_endpoint_url,
        gcs_endpoint=config.gcs_endpoint,
        gcs_project=config.gcs_project,
        gcs_anonymous=config.gcs_credentials == "anonymous",
        multipart_threshold=config.multipart_threshold_mb * MiB,
        part_size=config.part_size_mb * MiB,
    )


@dataclass
class Handle:
    job: ReplicationJob
    leases: list[str]
    holder: str
    task: asyncio.Task[Any] | None = None
    error: str = ""
    cancelled: bool = False  # by a request or a shutdown (a lost lease is an error)
    started: float = field(default_factory=time.time)

    @property
    def state(self) -> str:
        if self.task is None or not self.task.done():
            return "running"
        if self.cancelled:
            return "cancelled"
        return "done" if self.job.report.ok and not self.error else "failed"

    def as_json(self, replica: str) -> dict[str, Any]:
        body = self.job.report.as_json()
        body.update(state=self.state, error=self.error or None, started=self.started)
        body["replica"] = replica
        return body


class Replicator:
    """The jobs of this replica, and the wiring from config to stores and the store."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        factory: StoreFactory | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rt = runtime
        self.jobs: dict[str, Handle] = {}
        self._factory = factory
        self.lease_ttl_s = lease_ttl_s
        self.monotonic = monotonic

    @property
    def factory(self) -> StoreFactory:
        if self._factory is None:
            self._factory = StoreFactory(settings_from(self.rt.config.replication))
        return self._factory

    def _weights(self, region: str) -> str:
        known = {r.name: r for r in self.rt.config.regions}
        if region not in known:
            raise Refused(
                404, f"unknown region '{region}' (known: {', '.join(known)})", "unknown_region"
            )
        weights = known[region].weights
        if weights is None:
            raise Refused(400, f"region '{region}' has no weights location (regions[].weights)")
        return weights

    async def start(self, body: dict[str, Any], control: ControlPlane, who: str) -> Handle:
        model, version, targets, source_region = self._validate(body)
        running = sum(1 for h in self.jobs.values() if h.state == "running")
        if running >= _MAX_RUNNING:
            raise Refused(429, f"{running} replication jobs are already running here", "busy")
        cfg = self.rt.config.replication
        source_url = self._weights(source_region) if source_region else cfg.origin
        if source_url is None:
            raise Refused(400, "no source: set replication.origin in the config or pass 'from'")
        if source_region is not None:
            stored = control.state.replicas.get((model, version, source_region))
            if stored is not None and stored.status != VERIFIED:
                raise Refused(
                    400,
                    f"region {source_region} holds no verified copy of {model}@{version} "
                    f"(its status is {stored.status}): replicate to it first",
                    "source_not_verified",
                )
        job_id = "r-" + secrets.token_hex(4)
        holder = f"{control.replica}/{job_id}"
        leases = [f"replicate/{model}@{version}/{region}" for region in targets]
        await self._take(control, leases, holder)
        try:
            source = await self.factory.open(parse_location(source_url).child(model, version))
            stores = [
                Target(
                    r,
                    await self.factory.open(parse_location(self._weights(r)).child(model, version)),
                )
                for r in targets
            ]
            job = ReplicationJob(
                job_id,
                model,
                version,
                source,
                stores,
                ControlPlaneSink(control, who),
                JobOptions(
                    concurrency=cfg.concurrency,
                    chunk_bytes=cfg.chunk_mb * MiB,
                    reverify=bool(body.get("reverify", False)),
                    publish_every_s=cfg.publish_every_s,
                    build_missing_manifest=source_region is None,  # the origin only
                ),
                source_region=source_region,
            )
        except BaseException:
            await self._release(control, leases, holder)
            raise
        handle = Handle(job, leases, holder)
        handle.task = asyncio.ensure_future(self._run(handle, control))
        self.jobs[job_id] = handle
        self._forget_old()
        return handle

    def _validate(self, body: dict[str, Any]) -> tuple[str, str, list[str], str | None]:
        model, version, to = body.get("model"), body.get("version"), body.get("to")
        models = {m.name: m for m in self.rt.config.models}
        if not isinstance(model, str) or model not in models:
            raise Refused(
                404, f"unknown model {model!r} (known: {', '.join(models)})", "unknown_model"
            )
        versions = list(models[model].versions)
        if not isinstance(version, str) or version not in versions:
            raise Refused(
                400, f"model '{model}' has no version {version!r} (versions: {', '.join(versions)})"
            )
        try:
            check_name("model", model)
            check_name("version", version)
        except ReplicationError as exc:
            raise Refused(400, str(exc)) from None
        if not isinstance(to, list) or not to or not all(isinstance(r, str) for r in to):
            raise Refused(400, "'to' must be a non-empty list of region names")
        if len(set(to)) != len(to) or len(to) > 64:
            raise Refused(400, "'to' lists a region twice (or more than 64 regions)")
        for region in to:
            self._weights(region)
        source = body.get("from")
        if source is not None:
            if not isinstance(source, str):
                raise Refused(400, "'from' must be a region name")
            self._weights(source)
            if source in to:
                raise Refused(400, f"region '{source}' cannot be both source and destination")
        if not isinstance(body.get("reverify", False), bool):
            raise Refused(400, "'reverify' must be true or false")
        return model, version, list(to), source

    async def _take(self, control: ControlPlane, leases: list[str], holder: str) -> None:
        taken: list[str] = []
        for name in leases:
            if not await control.store.lease(name, holder, LEASE_TTL_S):
                await self._release(control, taken, holder)
                what = name.removeprefix("replicate/")
                raise Refused(409, f"a replication of {what} is already running", "conflict")
            taken.append(name)

    async def _release(self, control: ControlPlane, leases: list[str], holder: str) -> None:
        for name in leases:
            with contextlib.suppress(StoreUnavailable):
                await control.store.release_lease(name, holder)

    async def _run(self, handle: Handle, control: ControlPlane) -> None:
        renew = asyncio.ensure_future(self._renew(handle, control))
        try:
            await handle.job.run()
        except asyncio.CancelledError:
            handle.cancelled = not handle.error  # else the lease was lost (see _renew)
        except Exception as exc:  # a bug, not a replication failure: keep the replica up
            log.exception("replication job %s crashed", handle.job.report.job)
            handle.error = f"{type(exc).__name__}: {exc}"
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            await self._release(control, handle.leases, handle.holder)

    async def _renew(self, handle: Handle, control: ControlPlane) -> None:
        """Renew every lease each third of the TTL; cancel the job once one is lost."""
        ttl = self.lease_ttl_s
        renewed = {name: self.monotonic() for name in handle.leases}
        while True:
            await asyncio.sleep(ttl / 3)
            for name in handle.leases:
                what = name.removeprefix("replicate/")
                try:
                    if not await control.store.lease(name, handle.holder, ttl):
                        return self._lost(handle, f"lease lost: {what} is held by another job")
                    renewed[name] = self.monotonic()
                except StoreUnavailable as exc:
                    if self.monotonic() - renewed[name] >= ttl:
                        return self._lost(
                            handle, f"lease lost: {what} not renewed for {ttl:g}s ({exc})"
                        )

    def _lost(self, handle: Handle, reason: str) -> None:
        """Another replica may now run this job: stop, and say why (regions: ``failed``)."""
        log.warning("replication job %s: %s; cancelling it", handle.job.report.job, reason)
        handle.error = handle.job.stop_reason = reason
        if handle.task is not None:
            handle.task.cancel()

    def _forget_old(self) -> None:
        finished = [k for k, h in self.jobs.items() if h.state != "running"]
        for key in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self.jobs[key]

    async def close(self) -> None:
        """Cancel running jobs (their regions record ``failed: interrupted``)."""
        tasks = [h.task for h in self.jobs.values() if h.task is not None and not h.task.done()]
        await stop_tasks(tasks)


REPLICATOR = web.AppKey("replicator", Replicator)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(
    handler: Callable[[web.Request, Replicator, ControlPlane], Awaitable[web.Response]],
) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        control = request.app[RUNTIME].control
        if control is None:
            return error_response(503, "the control plane is not running", "control_plane_off")
        try:
            return await handler(request, request.app[REPLICATOR], control)
        except Refused as exc:
            return error_response(exc.status, exc.message, exc.code)
        except StoreUnavailable as exc:
            return error_response(
                503,
                f"the control-plane store is unreachable: {exc}",
                "store_unavailable",
                retry_after=5,
            )

    return run


@_guard
async def start(request: web.Request, rep: Replicator, control: ControlPlane) -> web.Response:
    body = await json_object(request)
    handle = await rep.start(body, control, actor(request))
    return json_response(handle.as_json(control.replica), status=202)


@_guard
async def list_jobs(request: web.Request, rep: Replicator, control: ControlPlane) -> web.Response:
    return json_response({"jobs": [h.as_json(control.replica) for h in rep.jobs.values()]})


def _handle(request: web.Request, rep: Replicator) -> Handle:
    job = request.match_info["job"]
    handle = rep.jobs.get(job)
    if handle is None:
        raise Refused(404, f"no replication job '{job}' on this replica", "unknown_job")
    return handle


@_guard
async def get_job(request: web.Request, rep: Replicator, control: ControlPlane) -> web.Response:
    return json_response(_handle(request, rep).as_json(control.replica))


@_guard
async def cancel_job(request: web.Request, rep: Replicator, control: ControlPlane) -> web.Response:
    handle = _handle(request, rep)
    if handle.task is not None and not handle.task.done():
        handle.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handle.task
    return json_response(handle.as_json(control.replica))


def register(app: web.Application) -> None:
    """Mount the endpoints on the admin app (``app[RUNTIME]`` must be set)."""
    replicator = Replicator(app[RUNTIME])
    app[REPLICATOR] = replicator

    async def cleanup(_app: web.Application) -> None:
        await replicator.close()

    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_post("/admin/v1/replications", start)
    r.add_get("/admin/v1/replications", list_jobs)
    r.add_get("/admin/v1/replications/{job}", get_job)
    r.add_delete("/admin/v1/replications/{job}", cancel_job)
