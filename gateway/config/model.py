"""The gateway's YAML configuration: schema, loading, and errors that point at a line.

A config is validated whole before anything uses it; a bad file raises
:class:`ConfigError` naming the file, line and field, and the caller keeps
whatever config it was running. Secrets never appear in the file in clear:
API keys are SHA-256 digests (``sha256:<hex>``) or names of environment
variables (``env:NAME``); the admin token likewise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config.base import AWS_REGION, GCP_LOCATION, Strict, location
from gateway.config.cloud import DiscoveryConfig, ReplicationConfig
from gateway.config.cost import CostConfig
from gateway.config.lease import LeaseConfig
from gateway.config.observability import ObservabilityConfig
from gateway.security.keys import secret_digest
from gateway.security.tls import BackendTLSConfig, ListenTLS, identity_clash
from regions.inventory import ProviderKind
from regions.pacing import PERIOD_S

PACED_IDLE_S = 5 * PERIOD_S
"""The shortest ``timeouts.idle_s`` while ``limits.pacing`` is on: a paced read waits up
to a beat plus the loop's lag before it takes what came meanwhile, and the idle
timeout counts that wait; one of a few beats would cut healthy streams exactly when
the gateway is busy (pacing starts at 60% of the loop's thread)."""

_REGION_NAME = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9-]+$")
_SECRET_REF = re.compile(r"^(sha256:[0-9a-f]{64}|env:[A-Za-z_][A-Za-z0-9_]*)$")


class ConfigError(ValueError):
    """A config that cannot be used; ``str()`` is one line per problem, each with its place."""


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class Listen(Strict):
    http: str = "127.0.0.1:8080"
    grpc: str | None = "127.0.0.1:50051"
    admin: str = "127.0.0.1:9090"
    metrics: str | None = (
        None  # GET /metrics alone, without a token (gateway.security.admin_tokens)
    )
    tls: ListenTLS = ListenTLS()  # certificates per listener (gateway.security.tls)

    @field_validator("http", "grpc", "admin", "metrics")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)


class SecretRef(Strict):
    """Either a SHA-256 digest of the secret or the environment variable holding it."""

    ref: str

    def digests(self, environ: Mapping[str, str]) -> str:
        """The secret's SHA-256 hex digest; raises ConfigError if the variable is unset."""
        kind, _, value = self.ref.partition(":")
        if kind == "sha256":
            return value
        secret = environ.get(value)
        if not secret:
            raise ConfigError(f"environment variable {value} is not set")
        try:
            return secret_digest(secret)  # stripped: a secret file's newline is not the key
        except ValueError as exc:
            raise ConfigError(f"environment variable {value} {exc}") from None


def _secret(value: Any) -> Any:
    if isinstance(value, str):
        if not _SECRET_REF.match(value):
            raise ValueError(
                "secrets are written 'sha256:<64 hex digits>' or 'env:VARIABLE', never in clear"
            )
        return {"ref": value}
    return value


class AdminToken(Strict):
    """A named admin token with a role (gateway.security.admin_tokens)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    token: SecretRef
    role: Literal["viewer", "operator", "admin"]

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        return _secret(value)


class Admin(Strict):
    token: SecretRef | None = None  # the legacy single token: role admin, no name
    tokens: tuple[AdminToken, ...] = ()

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        return _secret(value)

    @model_validator(mode="after")
    def _names(self) -> Admin:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("admin.tokens: each token's name must be unique")
        return self


class Limits(Strict):
    max_body_bytes: int = Field(1 << 20, gt=0)
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    max_headers: int = Field(100, gt=0)
    max_header_bytes: int = Field(8190, gt=0)
    stream_buffer_bytes: int = Field(64 * 1024, gt=0)
    # One event a backend may send (an SSE event, a SageMaker/Vertex payload
    # line): longer is a broken stream. A real chunk is a few hundred bytes.
    max_event_bytes: int = Field(1 << 20, ge=4096, le=64 << 20)
    # While the event loop is behind, streams past their first event read on a
    # beat, so first tokens are not queued behind their chunks (regions.pacing).
    pacing: bool = True


class Timeouts(Strict):
    connect_s: float = Field(3.0, gt=0)
    first_token_s: float = Field(30.0, gt=0)
    idle_s: float = Field(30.0, gt=0)
    total_s: float = Field(600.0, gt=0)


class BreakerConfig(Strict):
    window_size: int = Field(20, gt=0)
    minimum_calls: int = Field(10, gt=0)
    failure_rate: float = Field(0.5, gt=0, le=1)
    slow_call_s: float = Field(10.0, gt=0)
    slow_call_rate: float = Field(0.8, gt=0, le=1)
    open_s: float = Field(10.0, gt=0)
    max_open_s: float = Field(120.0, gt=0)
    half_open_probes: int = Field(3, gt=0)
    max_half_open_s: float = Field(30.0, gt=0)


class EjectionConfig(Strict):
    consecutive_errors: int = Field(5, gt=0)
    base_ejection_s: float = Field(30.0, gt=0)
    max_ejection_s: float = Field(300.0, gt=0)
    max_ejection_share: float = Field(0.5, ge=0, le=1)


class HealthCheckConfig(Strict):
    enabled: bool = True
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    unhealthy_threshold: int = Field(2, gt=0)
    healthy_threshold: int = Field(2, gt=0)


class FailoverConfig(Strict):
    resume: bool = True
    max_resumptions: int = Field(2, ge=0)
    hedge: bool = True
    retry_budget_ratio: float = Field(0.2, ge=0)
    retry_budget_min_per_s: float = Field(10.0, ge=0)
    hedge_budget_ratio: float = Field(0.05, ge=0)
    max_retry_after_s: float = Field(2.0, ge=0)
    breaker: BreakerConfig = BreakerConfig()
    ejection: EjectionConfig = EjectionConfig()
    health_checks: HealthCheckConfig = HealthCheckConfig()


class Shutdown(Strict):
    grace_s: float = Field(30.0, ge=0)


class RegionConfig(Strict):
    name: str = Field(pattern=_REGION_NAME.pattern)
    tags: frozenset[str] = frozenset()
    dial: int = Field(100, ge=0, le=100)
    # Where this region's model weights live (s3://, gs://, file:///): a
    # replication target (regions.replication, docs/replication.md).
    weights: str | None = None

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None) -> str | None:
        return None if value is None else location(value)


class ModelConfig(Strict):
    name: str = Field(min_length=1)
    versions: dict[str, int] = Field(min_length=1)
    cost_weight: float = Field(0.0, ge=0)

    @field_validator("versions")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        if any(w < 0 for w in value.values()):
            raise ValueError("version weights must be >= 0")
        if sum(value.values()) <= 0:
            raise ValueError("at least one version needs a weight above 0")
        return value


class PriceConfig(Strict):
    """Per 1M tokens, or ``per_hour`` (GPU hours) for a self-hosted backend: then a token
    costs ``per_hour / (3600 × tokens/s)`` at the backend's measured output capacity,
    ``tokens_per_s`` until measured and its floor after (regions.throughput); an input
    token costs ``input_ratio`` output tokens (default 0: prefill taken as free)."""

    input_per_m: float = Field(0.0, ge=0)
    output_per_m: float = Field(0.0, ge=0)
    per_hour: float | None = Field(None, gt=0)
    tokens_per_s: float | None = Field(None, gt=0)
    input_ratio: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> PriceConfig:
        if self.per_hour is None:
            # By value, not by fields set: a dumped config (model_dump, GET /admin/v1/config)
            # carries the defaults and must validate again.
            hourly = [
                name
                for name, value in (
                    ("tokens_per_s", self.tokens_per_s),
                    ("input_ratio", self.input_ratio),
                )
                if value
            ]
            if hourly:
                raise ValueError(f"{', '.join(hourly)}: only with per_hour")
        elif self.input_per_m or self.output_per_m:
            raise ValueError("per_hour or input_per_m/output_per_m, not both")
        return self


class SageMakerBackendOptions(Strict):
    """``provider: sagemaker`` (regions.sagemaker). ``region`` defaults to the
    backend's region name after ``aws:``; credentials come from the boto3 chain
    (``profile`` picks a named profile), or fixed fake keys for emulators."""

    endpoint_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    region: str = Field(pattern=AWS_REGION.pattern)
    container: Literal["vllm", "tgi", "lmi", "tei"] = "vllm"
    target_variant: str | None = Field(None, min_length=1, max_length=63)
    inference_component: str | None = Field(None, min_length=1, max_length=63)
    custom_attributes: str | None = Field(None, max_length=1024, pattern=r"^[\x20-\x7e]*$")
    profile: str | None = Field(None, min_length=1)
    credentials: Literal["chain", "emulator"] = "chain"


class VertexBackendOptions(Strict):
    """``provider: vertex`` (regions.vertex, docs/providers.md). ``location``
    defaults to the backend's region name after ``gcp:``; credentials are
    application-default, or a fixed static token for emulators.

    Streaming needs a dedicated endpoint (or Private Service Connect): its
    host is ``dedicated_dns`` (the endpoint's ``dedicatedEndpointDns``), or
    ``{endpoint_id}.{location}-{project_number}.prediction.vertexai.goog``
    from ``project_number``, or read from the endpoint resource at first use
    (``discover_dns``). ``endpoint: psc`` takes the PSC address as ``url``."""

    project: str = Field(min_length=1)
    location: str = Field(pattern=GCP_LOCATION.pattern)
    # Unset only for route predict_embeddings: Google's model (served_model) itself.
    endpoint_id: str = Field("", pattern=r"^[A-Za-z0-9_-]*$")
    route: Literal["chat_completions", "stream_raw_predict", "predict_embeddings"] = (
        "chat_completions"
    )
    credentials: Literal["adc", "emulator"] = "adc"
    endpoint: Literal["dedicated", "psc"] = "dedicated"
    project_number: str | None = Field(None, pattern=r"^[0-9]{1,20}$")
    dedicated_dns: str | None = Field(None, pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    discover_dns: bool = False

    @model_validator(mode="after")
    def _endpoint(self) -> VertexBackendOptions:
        if not self.endpoint_id and self.route != "predict_embeddings":
            raise ValueError(f"endpoint_id: route {self.route} needs the endpoint's ID")
        if not self.endpoint_id and self.discover_dns:
            raise ValueError("discover_dns: reads an endpoint's resource; set endpoint_id")
        return self

    def dns(self) -> str | None:
        """The dedicated endpoint's host name, when the config determines it."""
        if not self.endpoint_id:
            return None  # a publisher model is served from the regional host
        if self.dedicated_dns:
            return self.dedicated_dns
        if self.project_number and self.location != "global":
            host = f"{self.endpoint_id}.{self.location}-{self.project_number}"
            return host + ".prediction.vertexai.goog"
        return None


def _cloud_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill a cloud backend's region/location from ``aws:X``/``gcp:X`` and its
    ``url`` from the provider's regional host, where the config leaves them out."""
    provider = getattr(data.get("provider"), "value", data.get("provider"))
    for other in ("sagemaker", "vertex"):
        if other != provider and data.get(other) is not None:
            raise ValueError(f"'{other}:' options are for provider {other} only")
    key, cloud, pattern = {
        "sagemaker": ("region", "aws", AWS_REGION),
        "vertex": ("location", "gcp", GCP_LOCATION),
    }.get(str(provider), (None, None, None))
    if key is None or pattern is None:
        return data
    options = data.get(str(provider))
    if options is None:
        raise ValueError(f"provider {provider} needs a '{provider}:' options block")
    if not isinstance(options, dict):
        return data
    prefix, _, suffix = str(data.get("region", "")).partition(":")
    if key not in options and prefix == cloud and pattern.match(suffix):
        options = {**options, key: suffix}
        data = {**data, str(provider): options}
    place = options.get(key)
    if provider == "vertex" and options.get("endpoint") == "psc" and "url" not in data:
        raise ValueError("vertex endpoint: psc needs url, the Private Service Connect address")
    if provider == "vertex" and "url" not in data and isinstance(place, str):
        dns = _vertex_dns(options, place)
        if dns is not None:
            data = {**data, "url": f"https://{dns}"}
    if "url" not in data and isinstance(place, str) and pattern.match(place):
        if provider == "sagemaker":
            url = f"https://runtime.sagemaker.{place}.amazonaws.com"
        elif place == "global":
            url = "https://aiplatform.googleapis.com"
        else:
            url = f"https://{place}-aiplatform.googleapis.com"
        data = {**data, "url": url}
    return data


def _vertex_dns(options: dict[str, Any], location: str) -> str | None:
    try:
        return VertexBackendOptions.model_validate({**options, "location": location}).dns()
    except ValueError:
        return None  # reported when the options block itself is validated


_SHARED_VERTEX = (
    "is Vertex AI's shared regional endpoint, which does not stream: Google's 'Choose an "
    "endpoint type' lists no streaming support for shared public endpoints, and a dedicated "
    "endpoint is refused there (400 FAILED_PRECONDITION, 'Dedicated Endpoint cannot be "
    "accessed through the shared Vertex AI domain'). Set vertex.project_number or "
    "vertex.dedicated_dns (the endpoint's dedicatedEndpointDns), or vertex.discover_dns: "
    "true; for Private Service Connect, vertex.endpoint: psc with its url"
)


class BackendConfig(Strict):
    name: str = Field(min_length=1)
    model: str
    version: str
    region: str
    provider: ProviderKind
    url: str
    served_model: str = Field(min_length=1)
    price: PriceConfig = PriceConfig()
    max_concurrency: int = Field(256, gt=0)
    weight: float = Field(1.0, gt=0)
    replica_ready: bool = True
    sagemaker: SageMakerBackendOptions | None = None
    vertex: VertexBackendOptions | None = None
    tls: BackendTLSConfig | None = (
        None  # CA bundle, SNI override, client cert (gateway.security.tls)
    )
    # The served model's context window in tokens (vLLM's max_model_len): a request
    # that cannot fit is not sent there.
    context_length: int | None = Field(None, ge=1)
    # What the served model can do (e.g. no vision for a text-only model); unset:
    # everything its provider's format carries (docs/api.md#capabilities).
    capabilities: (
        list[
            Literal[
                "tools",
                "structured_output",
                "vision",
                "logprobs",
                "multiple_choices",
                "openai_body",
                "embeddings",
            ]
        ]
        | None
    ) = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _cloud_defaults(data) if isinstance(data, dict) else data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _provider_options(self) -> BackendConfig:
        """Emulator credentials never go to the cloud; a Vertex host matches its location."""
        for options in (self.sagemaker, self.vertex):
            emulated = options is not None and options.credentials == "emulator"
            if emulated and not self.url.startswith("http://"):
                raise ValueError("emulator credentials are for http:// emulator URLs only")
        host = self.url.split("://", 1)[1].split("/", 1)[0]
        regional = host.endswith("-aiplatform.googleapis.com")
        if self.vertex is not None and regional and not host.startswith(self.vertex.location + "-"):
            raise ValueError(f"url {host} is not the host of location {self.vertex.location}")
        shared = regional or host == "aiplatform.googleapis.com"
        # :predict answers whole, so Google's embedding models are served on the shared host.
        streams = self.vertex is not None and self.vertex.route != "predict_embeddings"
        if self.vertex is not None and shared and streams and not self.vertex.discover_dns:
            raise ValueError(f"url {host} {_SHARED_VERTEX}")
        return self


class TenantLimitsConfig(Strict):
    """A tenant's limits (gateway.control.limits); unset means unlimited."""

    requests_per_min: int | None = Field(None, gt=0)
    tokens_per_min: int | None = Field(None, gt=0)
    concurrent_streams: int | None = Field(None, gt=0)


class ApiKeyRef(SecretRef):
    """A tenant API key: ``sha256:``/``env:`` alone, or ``{key, name, expires}``
    (gateway.security.keys): the name is what logs show, the expiry (RFC 3339,
    with its offset) when the key stops working."""

    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@:-]+$")
    expires: AwareDatetime | None = None


def _api_key(value: Any) -> Any:
    if isinstance(value, dict) and "key" in value:
        rest = {k: v for k, v in value.items() if k != "key"}
        return {**rest, **_secret(value["key"])}
    return _secret(value)


class TenantConfig(Strict):
    name: str = Field(min_length=1)
    api_keys: tuple[ApiKeyRef, ...] = ()
    # client-certificate identities that are this tenant: a URI SAN (a SPIFFE ID) or
    # a DNS SAN, verified by a listener's listen.tls.*.client_ca (gateway.security.tls)
    identities: tuple[str, ...] = ()
    residency: frozenset[str] | None = None
    models: frozenset[str] | None = None
    cost_weight: float | None = Field(None, ge=0)
    explain: bool = False
    limits: TenantLimitsConfig | None = None
    shadow_opt_out: bool = False  # never mirrored to a shadow candidate (gateway.shadow)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return [_api_key(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _credentials(self) -> TenantConfig:
        if not self.api_keys and not self.identities:
            raise ValueError("a tenant needs api_keys, identities or both")
        names = [k.name for k in self.api_keys if k.name is not None]
        if len(set(names)) != len(names):
            raise ValueError("api_keys: each key's name must be unique within its tenant")
        return self


class StoreConfig(Strict):
    """The control-plane store (gateway.store, docs/control-plane.md)."""

    kind: Literal["embedded", "redis"] = "embedded"
    path: str | None = None  # embedded: SQLite file in WAL mode; unset = in memory
    url: str | None = None  # redis: redis[s]://[:password@]host:port[/db], or env:VARIABLE
    # redis: a nearby replica (same forms) for loads and change notices; writes go to url
    read_url: str | None = None
    ca_file: str | None = (
        None  # rediss://: the PEM bundle of the server's CA (gateway.security.tls)
    )
    prefix: str = Field("meridian", pattern=r"^[A-Za-z0-9_.:-]+$")
    resync_s: float = Field(5.0, gt=0)
    counts_flush_s: float = Field(1.0, gt=0)
    lease_ttl_s: float = Field(5.0, gt=0)
    limits_timeout_s: float = Field(0.05, gt=0)
    # the health probe: a PING every probe_s that must answer within
    # probe_timeout_s, or the control plane is degraded until one does
    probe_s: float = Field(1.0, gt=0)
    probe_timeout_s: float = Field(0.5, gt=0)
    # a local file with the last applied state, served by a replica that starts
    # while the store is unreachable (gateway.store.cache); unset = none
    snapshot_path: str | None = Field(None, min_length=1)
    leases: LeaseConfig = LeaseConfig()  # tenant limits (gateway.store.lease)

    @model_validator(mode="after")
    def _url(self) -> StoreConfig:
        if self.kind == "redis" and not self.url:
            raise ValueError("store kind redis needs a url")
        if self.read_url and self.kind != "redis":
            raise ValueError("store read_url needs kind redis")
        return self


class Config(Strict):
    listen: Listen = Listen()
    store: StoreConfig = StoreConfig()
    admin: Admin = Admin()
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    failover: FailoverConfig = FailoverConfig()
    shutdown: Shutdown = Shutdown()
    regions: tuple[RegionConfig, ...] = Field(min_length=1)
    models: tuple[ModelConfig, ...] = Field(min_length=1)
    backends: tuple[BackendConfig, ...] = ()  # at least one, unless discovery is set
    tenants: tuple[TenantConfig, ...] = Field(min_length=1)
    discovery: DiscoveryConfig | None = None
    replication: ReplicationConfig = ReplicationConfig()
    observability: ObservabilityConfig = ObservabilityConfig()  # access log, SLOs
    cost: CostConfig = CostConfig()  # transfer between regions (gateway.config.cost)

    @model_validator(mode="after")
    def _references(self) -> Config:
        # Messages start with "@path: " so parse() can point at the offending line.
        if not self.backends and self.discovery is None:
            raise ValueError("@backends: at least one backend, or a discovery: section")
        if self.limits.pacing and self.timeouts.idle_s < PACED_IDLE_S:
            raise ValueError(
                f"@timeouts.idle_s: at least {PACED_IDLE_S:g} s while limits.pacing is on"
                f" (a paced read waits up to a {PERIOD_S * 1000:g} ms beat plus the loop's lag);"
                " raise it or set limits.pacing: false"
            )
        _unique("regions", [r.name for r in self.regions])
        _unique("models", [m.name for m in self.models])
        _unique("backends", [b.name for b in self.backends])
        _unique("tenants", [t.name for t in self.tenants])
        if (clash := identity_clash(self.tenants)) is not None:  # one SAN, one tenant
            raise ValueError(clash)
        regions = {r.name for r in self.regions}
        versions = {m.name: set(m.versions) for m in self.models}
        for i, b in enumerate(self.backends):
            if b.region not in regions:
                raise ValueError(f"@backends.{i}.region: unknown region {b.region!r}")
            if b.model not in versions:
                raise ValueError(f"@backends.{i}.model: unknown model {b.model!r}")
            if b.version not in versions[b.model]:
                raise ValueError(
                    f"@backends.{i}.version: model {b.model!r} has no version {b.version!r}"
                )
        if self.cost.region is not None and self.cost.region not in regions:
            raise ValueError(f"@cost.region: unknown region {self.cost.region!r}")
        for model in self.observability.slo:
            if model not in versions:
                raise ValueError(f"@observability.slo.{model}: unknown model {model!r}")
        tenants = {t.name for t in self.tenants}
        for name in sorted(self.observability.access_log.tenants_off - tenants):
            raise ValueError(f"@observability.access_log.tenants_off: unknown tenant {name!r}")
        return self


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"@{what}.{i}.name: {name!r} is defined twice")
        seen.add(name)


def parse(text: str, source: str = "<config>") -> Config:
    """Validate YAML text into a :class:`Config`; errors name the line of the bad value."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        deeper = {tuple(e["loc"][:-1]) for e in errors if len(e["loc"]) > 1}
        lines = []
        for err in errors:
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if not loc and msg.startswith("@"):
                path, _, msg = msg[1:].partition(": ")
                loc = tuple(int(p) if p.isdigit() else p for p in path.split("."))
            if err["type"] == "too_short" and any(d[: len(loc)] == loc for d in deeper):
                continue  # a consequence of an item's own error, reported on its line

            field = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(node, loc)
            lines.append(f"{source}:{line}: {field}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse(text, str(p))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node along ``loc`` that exists."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, _ in node.value if k.value == str(part)), None)
            if match is None:
                break
            line = (key or match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
