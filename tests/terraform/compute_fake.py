"""A local emulator of the Compute Engine REST API v1: the calls discovery makes.

Google ships no Compute emulator, so tests point the real google-cloud-compute
client at this server (``client_options={"api_endpoint": url}``, anonymous
credentials, REST transport; reference/protocols.md §4). It serves:

* ``GET  /compute/v1/projects/{p}/aggregated/instances`` with ``filter``
  (the AIP-160 subset discovery sends: ``(status = "RUNNING") AND
  (labels.k = "v")``, ``labels.k:*``; anything else is a 400, so a malformed
  filter fails the test instead of matching everything), ``maxResults`` and
  ``pageToken`` paging, and ``NO_RESULTS_ON_PAGE`` warnings for empty zones;
* ``GET  .../zones/{z}/instances/{name}``;
* ``POST .../zones/{z}/instanceGroupManagers/{mig}/listManagedInstances``
  and the regional ``.../regions/{r}/instanceGroupManagers/...`` form.

``fail_next(status)`` answers the next API call with that error (Google's
error JSON); ``requests`` records (method, path, query) of every call. It
lives beside the Terraform tests, which also serve the example's MIG labels
from it to show that discovery finds what Terraform deploys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_TERM = re.compile(
    r'^\(?\s*([a-zA-Z][\w.-]*)\s*(=|!=)\s*"([^"]*)"\s*\)?$|^\(?\s*([\w.-]+):\*\s*\)?$'
)
BASE = "https://www.googleapis.com/compute/v1"


def _error(status: int, message: str) -> web.Response:
    reason = {400: "invalid", 403: "forbidden", 404: "notFound"}.get(status, "backendError")
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason}]}}
    return web.json_response(body, status=status)


def _lookup(instance: dict[str, Any], path: str) -> str | None:
    if path.startswith("labels."):
        value = instance.get("labels", {}).get(path[len("labels.") :])
        return None if value is None else str(value)
    value = instance.get(path)
    return None if value is None else str(value)


def matches(instance: dict[str, Any], expression: str) -> bool:
    """Evaluate the filter subset above; ValueError for anything outside it."""
    if not expression.strip():
        return True
    for term in re.split(r"\s+AND\s+", expression.strip()):
        m = _TERM.match(term.strip())
        if m is None:
            raise ValueError(f"unsupported filter term {term!r}")
        if m.group(4) is not None:
            if _lookup(instance, m.group(4)) is None:
                return False
            continue
        field_, op, want = m.group(1), m.group(2), m.group(3)
        got = _lookup(instance, field_)
        if (got == want) != (op == "="):
            return False
    return True


@dataclass
class FakeCompute:
    project: str = "meridian-test"
    instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # zone -> instances
    managed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # MIG path -> members
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    empty_zones: tuple[str, ...] = ("asia-east1-a",)
    _failures: list[int] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    url: str = ""

    # -- test controls ---------------------------------------------------------

    def add_instance(
        self,
        zone: str,
        name: str,
        *,
        ip: str,
        labels: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        status: str = "RUNNING",
        gpu: str | None = "nvidia-l4",
        gpus: int = 1,
        mig: str | None = None,
    ) -> dict[str, Any]:
        """``mig``: ``zones/Z/instanceGroupManagers/N`` or ``regions/R/...``: the
        instance carries ``created-by`` metadata like a MIG member does."""
        items = [{"key": k, "value": v} for k, v in (metadata or {}).items()]
        if mig is not None:
            items.append({"key": "created-by", "value": f"projects/123456789/{mig}"})
        link = f"{BASE}/projects/{self.project}/zones/{zone}/instances/{name}"
        instance: dict[str, Any] = {
            "kind": "compute#instance",
            "id": str(abs(hash((zone, name))) % 10**18),
            "name": name,
            "zone": f"{BASE}/projects/{self.project}/zones/{zone}",
            "status": status,
            "machineType": f"{BASE}/projects/{self.project}/zones/{zone}/machineTypes/g2-standard-8",
            "labels": dict(labels or {}),
            "metadata": {"kind": "compute#metadata", "items": items},
            "networkInterfaces": [
                {"name": "nic0", "networkIP": ip, "accessConfigs": [{"natIP": "203.0.113.9"}]}
            ],
            "selfLink": link,
        }
        if gpu is not None:
            accel = f"{BASE}/projects/{self.project}/zones/{zone}/acceleratorTypes/{gpu}"
            instance["guestAccelerators"] = [{"acceleratorType": accel, "acceleratorCount": gpus}]
        self.instances.setdefault(zone, []).append(instance)
        if mig is not None:
            self.managed.setdefault(mig, []).append(
                {"instance": link, "instanceStatus": status, "currentAction": "NONE", "id": "1"}
            )
        return instance

    def remove_instance(self, zone: str, name: str) -> None:
        self.instances[zone] = [i for i in self.instances.get(zone, []) if i["name"] != name]

    def set_action(self, mig: str, name: str, action: str, health: str | None = None) -> None:
        for member in self.managed.get(mig, []):
            if member["instance"].endswith(f"/instances/{name}"):
                member["currentAction"] = action
                if health is not None:
                    member["instanceHealth"] = [{"detailedHealthState": health}]

    def fail_next(self, status: int, times: int = 1) -> None:
        self._failures.extend([status] * times)

    # -- server ---------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record])
        p = "/compute/v1/projects/{project}"
        app.router.add_get(p + "/aggregated/instances", self._aggregated)
        app.router.add_get(p + "/zones/{zone}/instances/{name}", self._get)
        app.router.add_post(
            p + "/{scope:zones|regions}/{where}/instanceGroupManagers/{mig}/listManagedInstances",
            self._managed,
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if self._failures:
            return _error(self._failures.pop(0), "injected failure")
        if request.match_info.get("project", self.project) != self.project:
            return _error(
                404, f"The resource 'projects/{request.match_info['project']}' was not found"
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _aggregated(self, request: web.Request) -> web.Response:
        expression = request.query.get("filter", "")
        try:
            rows = [
                (zone, inst)
                for zone in sorted(self.instances)
                for inst in self.instances[zone]
                if matches(inst, expression)
            ]
        except ValueError as exc:
            return _error(400, f"Invalid value for field 'filter': {exc}")
        size = int(request.query.get("maxResults", "500"))
        start = int(request.query.get("pageToken") or 0)
        page = rows[start : start + size]
        items: dict[str, Any] = {}
        for zone, inst in page:
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(inst)
        for zone in self.empty_zones:
            items.setdefault(
                f"zones/{zone}",
                {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": "There are no results for scope 'zones/"
                        + zone
                        + "' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                },
            )
        body: dict[str, Any] = {
            "kind": "compute#instanceAggregatedList",
            "id": f"projects/{self.project}/aggregated/instances",
            "items": items,
        }
        if start + size < len(rows):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def _get(self, request: web.Request) -> web.Response:
        zone, name = request.match_info["zone"], request.match_info["name"]
        for inst in self.instances.get(zone, []):
            if inst["name"] == name:
                return web.json_response(inst)
        return _error(
            404,
            f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found",
        )

    async def _managed(self, request: web.Request) -> web.Response:
        m = request.match_info
        key = f"{m['scope']}/{m['where']}/instanceGroupManagers/{m['mig']}"
        if key not in self.managed:
            return _error(404, f"The resource '{key}' was not found")
        return web.json_response({"managedInstances": self.managed[key]})
