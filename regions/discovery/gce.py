"""Self-hosted GPU servers (vLLM, TGI) on Compute Engine, found by label.

One refresh is ``InstancesClient.aggregated_list`` over the project with the
server-side filter ``(status = "RUNNING") AND (labels.K = "V") ...``; the
pager follows ``nextPageToken``. Then, where an instance belongs to a managed
instance group (its ``created-by`` metadata names the MIG) and
``managed_groups`` is on, one ``listManagedInstances`` per group drops the
members the MIG is recreating, deleting or reports unhealthy. google-cloud-
compute has no async client (REST only), so the whole round runs in one
worker thread via ``asyncio.to_thread``; the package itself is imported
lazily, in that thread, on the first refresh (it is large, and it depends on
proto-plus, whose top-level module ``proto`` must not be shadowed).

Per-instance schema: each ``meridian-*`` key is read from the instance's
metadata, falling back to a label of the same name (GCE label values cannot
hold dots or upper case, so model names usually need metadata)::

    meridian-model          logical model (required)
    meridian-version        model version (required)
    meridian-served-model   name the server expects (default: the model)
    meridian-provider       vllm | tgi (default vllm)
    meridian-port           serving port (the key is configurable; default 8000)
    meridian-max-concurrency

The address is the first network interface's internal IP (``networkIP``);
the refresher vets it against the allowed networks. The GPU type comes from
``guestAccelerators`` (``.../acceleratorTypes/nvidia-l4``): instances
without one are refused unless ``require_gpu`` is off, and ``accelerators``
restricts the types accepted.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from regions.discovery.base import Catalog, DiscoveryError, Found, Listing, Refused, parse_int
from regions.inventory import BackendSpec, ProviderKind

KEY = "meridian-"
DEFAULT_LABELS: Mapping[str, str] = MappingProxyType({"meridian-role": "llm-backend"})
_PROVIDERS = {"vllm": ProviderKind.VLLM, "tgi": ProviderKind.TGI}
_BUSY_ACTIONS = frozenset(
    {"CREATING", "RECREATING", "DELETING", "ABANDONING", "RESTARTING", "REFRESHING", "STOPPING",
     "SUSPENDING", "VERIFYING", "STARTING", "RESUMING", "CREATING_WITHOUT_RETRIES"}
)  # fmt: skip
_UNHEALTHY = frozenset({"UNHEALTHY", "DRAINING", "TIMEOUT"})


@dataclass(frozen=True, slots=True)
class GceSettings:
    """One project's discovery. ``zones`` empty means every zone.
    ``api_endpoint`` overrides the API host (a private endpoint, or a test
    server); ``anonymous`` skips credentials, for ``http://`` test servers only."""

    project: str
    labels: Mapping[str, str] = field(default_factory=lambda: DEFAULT_LABELS)
    zones: frozenset[str] = frozenset()
    port_key: str = "meridian-port"
    default_port: int = 8000
    accelerators: frozenset[str] = frozenset()
    require_gpu: bool = True
    managed_groups: bool = True
    api_endpoint: str | None = None
    anonymous: bool = False
    timeout_s: float = 20.0
    page_size: int = 500

    def filter(self) -> str:
        """The server-side filter; config validation keeps keys and values to
        GCE's label alphabet, so nothing here needs quoting."""
        terms = ['(status = "RUNNING")']
        terms += [f'(labels.{k} = "{v}")' for k, v in sorted(self.labels.items())]
        return " AND ".join(terms)


class GceSource:
    """``regions.discovery.base.Source`` for one GCP project."""

    def __init__(self, settings: GceSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._compute: Any = None
        self._clients: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return f"gce:{self.settings.project}"

    async def discover(self) -> Listing:
        return await asyncio.to_thread(self._discover)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            transport = getattr(client, "transport", None)
            if transport is not None:
                await asyncio.to_thread(transport.close)

    # -- in the worker thread ------------------------------------------------

    def _client(self, kind: str) -> Any:
        client = self._clients.get(kind)
        if client is not None:
            return client
        if self._compute is None:
            try:
                self._compute = importlib.import_module("google.cloud.compute_v1")
            except (ImportError, AttributeError) as exc:
                # AttributeError: another top-level package named ``proto``
                # shadows proto-plus's (module 'proto' has no attribute 'module').
                raise DiscoveryError(f"{self.name}: google-cloud-compute unusable: {exc}") from None
        kwargs: dict[str, Any] = {"transport": "rest"}
        s = self.settings
        if s.api_endpoint:
            from google.api_core.client_options import ClientOptions

            kwargs["client_options"] = ClientOptions(api_endpoint=s.api_endpoint)
        if s.anonymous:
            credentials: Any = importlib.import_module("google.auth.credentials")
            kwargs["credentials"] = credentials.AnonymousCredentials()
        client = self._clients[kind] = getattr(self._compute, kind)(**kwargs)
        return client

    def _discover(self) -> Listing:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError

        try:
            return self._list()
        except (GoogleAPIError, GoogleAuthError, OSError, ValueError) as exc:
            raise DiscoveryError(f"{self.name}: {type(exc).__name__}: {exc}") from None

    def _list(self) -> Listing:
        s = self.settings
        client = self._client("InstancesClient")
        request = self._compute.AggregatedListInstancesRequest(
            project=s.project, filter=s.filter(), max_results=s.page_size
        )
        found: list[Found] = []
        refused: list[Refused] = []
        members: list[tuple[Found, str]] = []
        for scope, scoped in client.aggregated_list(request=request, timeout=s.timeout_s):
            zone = scope.rpartition("/")[2]
            if s.zones and zone not in s.zones:
                continue
            for instance in scoped.instances:
                result = self.describe(zone, instance)
                if isinstance(result, Refused):
                    refused.append(result)
                    continue
                group = _metadata(instance).get("created-by", "")
                if s.managed_groups and "/instanceGroupManagers/" in group:
                    members.append((result, group))
                else:
                    found.append(result)
        verdicts = self._managed_verdicts({g for _, g in members})
        for result, group in members:
            why = verdicts.get((group, result.spec.name))
            if why is None:
                found.append(result)
            else:
                refused.append(Refused(result.spec.name, why))
        return Listing(tuple(found), tuple(refused))

    def _managed_verdicts(self, groups: set[str]) -> dict[tuple[str, str], str]:
        """(MIG, backend name) -> why not, for members busy or unhealthy in their MIG."""
        out: dict[tuple[str, str], str] = {}
        for group in sorted(groups):
            parts = group.split("/")
            try:
                i = parts.index("instanceGroupManagers")
                scope, where, mig = parts[i - 2], parts[i - 1], parts[i + 1]
            except (ValueError, IndexError):
                continue
            if scope == "zones":
                pager = self._client("InstanceGroupManagersClient").list_managed_instances(
                    project=self.settings.project, zone=where, instance_group_manager=mig,
                    timeout=self.settings.timeout_s,
                )  # fmt: skip
            else:
                pager = self._client("RegionInstanceGroupManagersClient").list_managed_instances(
                    project=self.settings.project, region=where, instance_group_manager=mig,
                    timeout=self.settings.timeout_s,
                )  # fmt: skip
            for member in pager:
                link = str(member.instance).split("/")
                if len(link) < 4:
                    continue
                name = f"gce/{link[-3]}/{link[-1]}"
                action = str(member.current_action or "NONE")
                health = {str(h.detailed_health_state) for h in member.instance_health}
                if action in _BUSY_ACTIONS:
                    out[(group, name)] = f"MIG {mig} is {action.lower()} it"
                elif health & _UNHEALTHY:
                    out[(group, name)] = f"MIG {mig} reports it {'/'.join(sorted(health))}"
        return out

    def describe(self, zone: str, instance: Any) -> Found | Refused:
        """One instance as a backend, or why it cannot be one (pure; no I/O)."""
        s = self.settings
        name = f"gce/{zone}/{instance.name}"
        meta = _metadata(instance)
        labels = dict(instance.labels)

        def get(key: str) -> str | None:
            return meta.get(key) or labels.get(key)

        gpus = [
            (str(a.accelerator_type).rpartition("/")[2], int(a.accelerator_count))
            for a in instance.guest_accelerators
        ]
        if s.require_gpu and not gpus:
            return Refused(name, "no GPU attached")
        if s.accelerators and not any(g in s.accelerators for g, _ in gpus):
            kinds = ",".join(g for g, _ in gpus) or "none"
            return Refused(name, f"GPU {kinds} is not one of {sorted(s.accelerators)}")
        region_name = "gcp:" + zone.rpartition("-")[0]
        region = self.catalog.region(region_name)
        if region is None:
            return Refused(name, f"region {region_name} is not configured")
        model, version = get(KEY + "model"), get(KEY + "version")
        if not model or not version:
            return Refused(name, f"needs {KEY}model and {KEY}version (metadata or labels)")
        kind = _PROVIDERS.get(get(KEY + "provider") or "vllm")
        if kind is None:
            return Refused(name, f"{KEY}provider must be one of {sorted(_PROVIDERS)}")
        interfaces = list(instance.network_interfaces)
        address = str(interfaces[0].network_i_p) if interfaces else ""
        if not address:
            return Refused(name, "no internal IP")
        try:
            port = parse_int(get(s.port_key), s.default_port, maximum=65535)
            concurrency = parse_int(get(KEY + "max-concurrency"), 256)
            host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        except ValueError as exc:
            return Refused(name, f"bad value: {exc}")
        spec = BackendSpec(
            name=name,
            model=model,
            version=version,
            region=region,
            kind=kind,
            url=f"http://{host}:{port}",
            served_model=get(KEY + "served-model") or model,
            max_concurrency=concurrency,
        )
        gpu = ", ".join(f"{g} x{n}" for g, n in gpus) or "no GPU"
        return Found(
            spec, address=address, detail=f"{gpu}, {instance.machine_type.rpartition('/')[2]}"
        )


def _metadata(instance: Any) -> dict[str, str]:
    return {str(i.key): str(i.value) for i in instance.metadata.items}
