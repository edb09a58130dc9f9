"""Each model's SLO and the error budget left, from one gateway's scrape.

``meridian status`` reads the admin ``/metrics`` (with ``--workers N``, the whole
node) and judges the counters since the gateway started against the objectives
the gateway exports (``meridian_slo_objective``, from ``observability.slo``).
The fleet's view over fixed windows is Prometheus's: deploy/prometheus's
recording rules and burn-rate alerts read the same series.

Budget left: ``1 - bad_share / (1 - objective)``; 1.0 is untouched, 0 spent,
below 0 overspent. Availability's bad requests are 5xx answers (the gateway's
or its backends' failures; a client's own 4xx spends nothing); TTFT's are first
tokens later than the model's threshold.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from gateway.cli.admin_client import AdminClient, AdminError


@dataclass(frozen=True, slots=True)
class ModelSlo:
    model: str
    availability_objective: float
    ttft_objective: float  # the share of first tokens within the threshold (0.95: p95)
    ttft_threshold_s: float
    requests: float
    failed: float  # 5xx
    first_tokens: float
    slow: float

    @property
    def availability(self) -> float | None:
        return None if not self.requests else 1 - self.failed / self.requests

    @property
    def ttft_within(self) -> float | None:
        return None if not self.first_tokens else 1 - self.slow / self.first_tokens

    @property
    def availability_budget_left(self) -> float:
        return _left(self.failed, self.requests, self.availability_objective)

    @property
    def ttft_budget_left(self) -> float:
        return _left(self.slow, self.first_tokens, self.ttft_objective)

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "availability": self.availability,
            "ttft_within": self.ttft_within,
            "availability_budget_left": self.availability_budget_left,
            "ttft_budget_left": self.ttft_budget_left,
        }


def _left(bad: float, total: float, objective: float) -> float:
    if not total:
        return 1.0
    return 1 - (bad / total) / (1 - objective)


def report(exposition: str) -> list[ModelSlo]:
    """Per configured model (those with an objective), in name order."""
    from prometheus_client.parser import text_string_to_metric_families  # not in a gateway

    objectives: dict[tuple[str, str], float] = {}
    thresholds: dict[str, float] = {}
    requests: dict[str, float] = {}
    failed: dict[str, float] = {}
    first: dict[str, float] = {}
    slow: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            model = s.labels.get("model", "")
            if s.name == "meridian_slo_objective":
                objectives[(model, s.labels.get("slo", ""))] = s.value
            elif s.name == "meridian_slo_ttft_threshold_seconds":
                thresholds[model] = s.value
            elif s.name == "meridian_requests_total" and model:
                requests[model] = requests.get(model, 0.0) + s.value
                if s.labels.get("status", "").startswith("5"):
                    failed[model] = failed.get(model, 0.0) + s.value
            elif s.name == "meridian_slo_ttft_requests_total":
                first[model] = first.get(model, 0.0) + s.value
                if s.labels.get("good") == "false":
                    slow[model] = slow.get(model, 0.0) + s.value
    models = sorted({m for m, kind in objectives if kind == "availability"})
    return [
        ModelSlo(
            model=m,
            availability_objective=objectives[(m, "availability")],
            ttft_objective=objectives.get((m, "ttft"), 0.95),
            ttft_threshold_s=thresholds.get(m, 0.0),
            requests=requests.get(m, 0.0),
            failed=failed.get(m, 0.0),
            first_tokens=first.get(m, 0.0),
            slow=slow.get(m, 0.0),
        )
        for m in models
    ]


def scrape(client: AdminClient) -> str:
    """The admin ``/metrics`` text (AdminClient speaks JSON only)."""
    request = urllib.request.Request(client.url + "/metrics")
    request.add_header("Authorization", f"Bearer {client.token}")
    try:
        with urllib.request.urlopen(request, timeout=client.timeout) as resp:
            body: bytes = resp.read(16 << 20)  # a scrape is kilobytes; never unbounded
    except urllib.error.HTTPError as exc:
        raise AdminError(f"{exc.code}: cannot read {client.url}/metrics") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the admin API at {client.url}: {reason}") from None
    return body.decode("utf-8", "replace")
