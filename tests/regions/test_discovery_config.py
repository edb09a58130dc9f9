"""The config's ``discovery:`` section: what it accepts, what it refuses (with the line)."""

from __future__ import annotations

import pytest

from gateway.config.model import ConfigError, parse
from gateway.control.discovery import catalog_from, sources_from
from regions.discovery import GceSource, SageMakerSource

BASE = """\
regions:
  - {name: "gcp:us-central1", tags: [US]}
  - {name: "aws:us-east-1", tags: [US]}
models:
  - {name: m, versions: {v1: 100}}
tenants:
  - {name: t, api_keys: ["env:KEY"]}
"""


def test_discovery_only_config_and_its_sources() -> None:
    config = parse(
        BASE
        + """\
discovery:
  refresh_s: 15
  allowed_networks: [10.30.0.0/20, "fd00::/8"]
  gce:
    project: my-project
    zones: [us-central1-a]
    labels: {meridian-role: llm-backend, pool: a}
    accelerators: [nvidia-l4]
  sagemaker:
    regions: [us-east-1, eu-west-1]
    tags: {"meridian:discover": "true", team: search}
"""
    )
    assert config.backends == ()  # discovery alone may provide every backend
    assert config.discovery is not None
    sources = sources_from(config.discovery, catalog_from(config))
    assert [s.name for s in sources] == [
        "sagemaker:us-east-1",
        "sagemaker:eu-west-1",
        "gce:my-project",
    ]
    gce = sources[2]
    assert isinstance(gce, GceSource) and isinstance(sources[0], SageMakerSource)
    assert gce.settings.filter() == (
        '(status = "RUNNING") AND (labels.meridian-role = "llm-backend") AND (labels.pool = "a")'
    )
    assert gce.settings.zones == frozenset({"us-central1-a"}) and not gce.settings.anonymous
    assert sources[0].settings.tags == {"meridian:discover": "true", "team": "search"}


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("", 1, "backends: at least one backend, or a discovery: section"),
        ("discovery: {refresh_s: 5}\n", 8, "discovery needs a 'sagemaker:' or a 'gce:' section"),
        ("discovery:\n  gce: {project: my-project}\n", 8, "gce discovery needs allowed_networks"),
        (
            "discovery:\n  allowed_networks: [10.0.0.0/33]\n  gce: {project: my-project}\n",
            9,
            "discovery.allowed_networks: not a CIDR network: '10.0.0.0/33'",
        ),
        (
            'discovery:\n  allowed_networks: [10.0.0.0/8]\n  gce: {project: my-project, labels: {role: "x\\" OR labels.a"}}\n',
            10,
            "is not a GCE label",
        ),
        (
            "discovery:\n  allowed_networks: [10.0.0.0/8]\n  gce: {project: my-project, credentials: anonymous}\n",
            10,
            "anonymous credentials are for an http:// api_endpoint only",
        ),
        (
            "discovery:\n  sagemaker: {regions: [us-east-1], credentials: emulator, runtime_url: 'https://x.example'}\n",
            9,
            "emulator credentials need an http:// runtime_url",
        ),
        ("discovery:\n  sagemaker: {regions: [mars-1]}\n", 9, "not AWS region names"),
    ],
)
def test_bad_discovery_sections_are_refused_with_their_line(
    section: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse(BASE + section, "meridian.yaml")
    text = str(err.value)
    assert message in text, text
    assert f"meridian.yaml:{line}:" in text, text
