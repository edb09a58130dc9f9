from __future__ import annotations

import hashlib

import pytest

from gateway.app.runtime import keyring_from
from gateway.config.model import ConfigError, load, parse

GOOD = """\
listen:
  http: 127.0.0.1:8080
  admin: 127.0.0.1:9090
admin:
  token: env:TEST_ADMIN_TOKEN
regions:
  - name: aws:us-east-1
    tags: [US]
  - name: onprem:fra1
    tags: [EU, DE]
    dial: 50
models:
  - name: m
    versions: {v1: 90, v2: 10}
backends:
  - name: b1
    model: m
    version: v1
    region: aws:us-east-1
    provider: vllm
    url: http://10.0.0.1:8000/
    served_model: served
tenants:
  - name: t
    api_keys: ["sha256:KEYDIGEST", "env:TEST_TENANT_KEY"]
    residency: [EU]
""".replace("KEYDIGEST", hashlib.sha256(b"sk-1").hexdigest())


def test_good_config_parses_with_defaults() -> None:
    config = parse(GOOD)
    assert config.backends[0].url == "http://10.0.0.1:8000"
    assert config.regions[1].dial == 50
    assert config.limits.max_body_bytes == 1 << 20
    assert config.tenants[0].residency == frozenset({"EU"})


def test_keys_resolve_from_digest_and_environment() -> None:
    ring = keyring_from(parse(GOOD), {"TEST_TENANT_KEY": "sk-2"})
    assert ring.authenticate("Bearer sk-1") is not None
    assert ring.authenticate("Bearer sk-2") is not None
    assert ring.authenticate("Bearer sk-3") is None
    assert ring.authenticate("Basic sk-1") is None


def test_unset_key_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TEST_TENANT_KEY is not set"):
        keyring_from(parse(GOOD), {})


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [
        ("url: http://10.0.0.1:8000/", "url: ftp://x", 21, "backends.0.url: must be an http"),
        (
            "region: aws:us-east-1",
            "region: aws:nowhere",
            19,
            "backends.0.region: unknown region 'aws:nowhere'",
        ),
        ("{v1: 90, v2: 10}", "{v1: 0, v2: 0}", 14, "at least one version"),
        ("version: v1", "version: v9", 18, "backends.0.version: model 'm' has no version 'v9'"),
        (
            "name: onprem:fra1",
            "name: aws:us-east-1",
            9,
            "regions.1.name: 'aws:us-east-1' is defined twice",
        ),
        ("dial: 50", "dial: 150", 11, "regions.1.dial"),
        ("provider: vllm", "provider: llamacpp", 20, "backends.0.provider"),
        ('"env:TEST_TENANT_KEY"', '"sk-in-clear"', 25, "never in clear"),
        ("    tags: [US]", "    tags: [US]\n    colour: blue", 9, "Extra inputs"),
    ],
)
def test_bad_config_names_the_line(old: str, new: str, line: int, fragment: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse(GOOD.replace(old, new, 1), "meridian.yaml")
    message = str(info.value)
    assert fragment in message
    assert f"meridian.yaml:{line}:" in message, message


def test_an_idle_timeout_a_paced_read_would_hit_is_refused_unless_pacing_is_off() -> None:
    """A paced read waits up to a beat plus the loop's lag; an idle timeout of a beat
    or two would cut streams only once the gateway is busy. Refused at load, the line
    named; accepted with pacing off, and at the bound."""
    short = GOOD + "timeouts:\n  idle_s: 0.05\n"
    with pytest.raises(ConfigError) as info:
        parse(short, "meridian.yaml")
    message = str(info.value)
    assert "timeouts.idle_s: at least 0.1 s while limits.pacing is on" in message, message
    assert f"meridian.yaml:{len(short.splitlines())}:" in message, message  # idle_s's line
    assert parse(short + "limits:\n  pacing: false\n").timeouts.idle_s == 0.05
    assert parse(GOOD + "timeouts:\n  idle_s: 0.1\n").timeouts.idle_s == 0.1


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:4: invalid YAML"):
        parse("listen:\n  http: a\n  admin: [unclosed\n", "x.yaml")


def test_unreadable_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")
