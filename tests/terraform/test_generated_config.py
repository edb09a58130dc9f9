"""The config Terraform generates is a config Meridian accepts, and discovery finds what Terraform deploys.

python-hcl2 reads the example's ``module "meridian_config"`` block (with the
example's variable defaults and ``terraform.tfvars.example``), the block's
values are handed to the real ``meridian-config`` module in a scratch root
module, and ``terraform apply`` (no providers: offline) renders the YAML with
Terraform's own ``yamlencode``. ``gateway.config.model.parse`` must accept it.
Then the GPU pool's instance labels and metadata, as the ``gcp-gpu-pool``
module sets them, are served by the fake Compute API, and GCE discovery with
the generated ``discovery.gce`` settings must find the instance.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import Config, parse
from tests.terraform.conftest import TERRAFORM_DIR, Terraform

EXAMPLE = TERRAFORM_DIR / "examples" / "multi-region"


@pytest.fixture(scope="module")
def evaluator() -> Any:
    from tests.terraform.hcl_eval import Evaluator

    return Evaluator(EXAMPLE, EXAMPLE / "terraform.tfvars.example")


# The region each gateway module of the example runs in: its config's cost.region.
GATEWAYS = {
    "gateway_us": "aws:us-east-1",
    "gateway_eu": "aws:eu-west-1",
    "gcp_gateway_us": "gcp:us-central1",
    "gcp_gateway_eu": "gcp:europe-west4",
}
HERE = GATEWAYS["gateway_us"]


@pytest.fixture(scope="module")
def outputs(evaluator: Any, terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The meridian-config module's YAML outputs, rendered by terraform apply
    (output name → region name → YAML)."""
    root = tmp_path_factory.mktemp("render")
    args = evaluator.module_args("meridian_config")
    source = evaluator.module_dir("meridian_config")
    names = ("yaml", "cloud_run_yaml", "cloud_run_grpc_yaml")
    main = {
        "module": {"meridian_config": {"source": str(source), **args}},
        "output": {n: {"value": f"${{module.meridian_config.{n}}}"} for n in names},
    }
    (root / "main.tf.json").write_text(json.dumps(main, indent=2))
    for step in (("init", "-no-color"), ("apply", "-auto-approve", "-no-color", "-lock=false")):
        result = terraform.run(root, *step)
        assert result.returncode == 0, f"terraform {step[0]}:\n{result.stdout}{result.stderr}"
    rendered = {}
    for name in names:
        output = terraform.run(root, "output", "-json", name)
        assert output.returncode == 0, output.stderr
        rendered[name] = json.loads(output.stdout)
    return rendered


@pytest.fixture(scope="module")
def config(outputs: dict[str, dict[str, str]]) -> Config:
    """The config of the example's first AWS gateway."""
    return parse(outputs["yaml"][HERE], "terraform output meridian_yaml")


def test_each_region_gets_its_own_cost_region(
    config: Config, outputs: dict[str, dict[str, str]], evaluator: Any
) -> None:
    """Transfer is priced from the gateway's own region: one config per region, alike but that."""
    args = evaluator.module_args("meridian_config")
    assert (config.cost.transfer_per_gb, config.cost.transfer_pairs) == (
        args["transfer_per_gb"],
        args["transfer_pairs"],
    )
    for name in ("yaml", "cloud_run_yaml", "cloud_run_grpc_yaml"):
        assert set(outputs[name]) == {r.name for r in config.regions}, name
        for region, text in outputs[name].items():
            regional = parse(text, f"terraform output {name}[{region!r}]")
            assert regional.cost.region == region
    for module, region in GATEWAYS.items():
        given = evaluator.modules[module]["config_yaml"]
        output = "cloud_run_yaml" if module.startswith("gcp_") else "yaml"
        assert given == f'${{module.meridian_config.{output}["{region}"]}}', module
    first, other = (parse(outputs["yaml"][r], r) for r in ("aws:us-east-1", "aws:eu-west-1"))
    assert first.model_dump(exclude={"cost": {"region"}}) == other.model_dump(
        exclude={"cost": {"region"}}
    )


def test_generated_config_validates(config: Config, evaluator: Any) -> None:
    regions = {r.name: set(r.tags) for r in config.regions}
    assert regions == {
        "aws:us-east-1": {"US"},
        "aws:eu-west-1": {"EU", "IE"},
        "gcp:us-central1": {"US"},
        "gcp:europe-west4": {"EU", "NL"},
    }
    backends = {b.name: b for b in config.backends}
    blue, green = backends["sagemaker-us-east-1-blue"], backends["sagemaker-us-east-1-green"]
    endpoint = evaluator.module_args("sagemaker_us", strict=False)["endpoint_name"]
    assert blue.sagemaker is not None and green.sagemaker is not None
    assert (blue.sagemaker.endpoint_name, blue.sagemaker.target_variant, blue.version) == (
        endpoint,
        "blue",
        "v1",
    )
    assert (green.sagemaker.target_variant, green.version) == ("green", "v2")
    assert blue.url == "https://runtime.sagemaker.us-east-1.amazonaws.com"
    vertex = backends["vertex-europe-west4"]
    assert vertex.vertex is not None and vertex.vertex.endpoint_id == "4242424242"
    # the dedicated endpoint's DNS name: the shared regional host does not stream
    assert vertex.url == "https://4242424242.europe-west4-123456789012.prediction.vertexai.goog"
    # The variants Terraform deploys are exactly the backends the config routes to.
    variants = {
        v["name"]: v["version"]
        for v in evaluator.module_args("sagemaker_us", strict=False)["variants"]
    }
    assert {b.sagemaker.target_variant: b.version for b in (blue, green)} == variants  # type: ignore[union-attr]
    assert config.store.kind == "redis" and config.store.url == "env:MERIDIAN_REDIS_URL"
    tenants = {t.name: t.residency for t in config.tenants}
    assert tenants == {"default": None, "eu-only": frozenset({"EU"})}
    assert config.discovery is not None and config.discovery.gce is not None
    assert config.discovery.allowed_networks == ("10.30.0.0/20",)


@pytest.mark.parametrize("pairs", [{"aws-gcp": 0.09}, {"aws->gcp": -1}])
def test_a_transfer_pair_meridian_would_refuse_fails_the_plan(
    evaluator: Any, terraform: Terraform, tmp_path: Path, pairs: dict[str, float]
) -> None:
    args = {**evaluator.module_args("meridian_config"), "transfer_pairs": pairs}
    main = {"module": {"m": {"source": str(evaluator.module_dir("meridian_config")), **args}}}
    (tmp_path / "main.tf.json").write_text(json.dumps(main))
    assert terraform.run(tmp_path, "init", "-no-color").returncode == 0
    plan = terraform.run(tmp_path, "plan", "-no-color", "-lock=false")
    assert plan.returncode != 0 and 'write each cloud pair as "FROM->TO"' in plan.stderr


def test_every_env_reference_in_the_config_is_a_deployed_secret(
    config: Config, evaluator: Any
) -> None:
    """A tenant key, the admin token or the store URL named env:X must reach every gateway."""
    refs = {
        k.ref.removeprefix("env:")
        for t in config.tenants
        for k in t.api_keys
        if k.ref.startswith("env:")
    }
    refs.add("MERIDIAN_REDIS_URL")
    assert config.admin.token is not None
    refs.add(config.admin.token.ref.removeprefix("env:"))
    for region, network in evaluator.vars["aws_networks"].items():
        assert refs <= set(network["secret_arns"]), (
            f"aws {region} lacks {refs - set(network['secret_arns'])}"
        )
    assert refs <= set(evaluator.vars["gcp_secret_ids"])


def test_the_listeners_name_the_certificate_files_the_aws_tasks_write(
    config: Config, evaluator: Any
) -> None:
    """listen.tls names the files each AWS gateway module writes from Secrets Manager."""
    files = evaluator.value(evaluator.locals["tls_files"])
    tls = config.listen.tls
    assert tls.http is not None and tls.admin is not None and tls.grpc is not None
    for listener in (tls.http, tls.admin, tls.grpc):
        assert (listener.cert, listener.key) == (files["cert"], files["key"])
    # client certificates reach the gateway only through the gRPC passthrough
    assert tls.grpc.client_ca == files["client_ca"]
    assert tls.http.client_ca is None and tls.admin.client_ca is None
    for module in ("gateway_us", "gateway_eu"):
        given = evaluator.module_args(module, strict=False)["listener_tls"]
        assert given["files"] == files, module
        for secret in ("cert_secret_arn", "key_secret_arn", "client_ca_secret_arn"):
            assert given[secret].startswith("arn:aws:secretsmanager:"), (module, secret)
    # the autoscaling sidecar scrapes /metrics on loopback, without the admin token
    assert config.listen.metrics == "127.0.0.1:9091"


def test_cloud_run_gets_the_config_without_listener_certificates(
    config: Config, outputs: dict[str, dict[str, str]]
) -> None:
    """Cloud Run's front end terminates TLS and reaches the container in clear."""
    cloud = parse(outputs["cloud_run_yaml"][HERE], "terraform output cloud_run_yaml")
    assert cloud.listen.tls.model_dump() == {"http": None, "admin": None, "grpc": None}
    assert cloud.model_dump(exclude={"listen": {"tls"}}) == config.model_dump(
        exclude={"listen": {"tls"}}
    )


def test_cloud_runs_grpc_service_serves_grpc_on_its_one_port(
    config: Config, outputs: dict[str, dict[str, str]], evaluator: Any
) -> None:
    grpc = parse(outputs["cloud_run_grpc_yaml"][HERE], "terraform output cloud_run_grpc_yaml")
    assert grpc.listen.grpc == "0.0.0.0:8080"  # the container port Cloud Run sends h2c to
    assert grpc.listen.http.startswith("127.0.0.1:") and grpc.listen.admin.startswith("127.0.0.1:")
    assert grpc.listen.tls.model_dump() == {"http": None, "admin": None, "grpc": None}
    assert grpc.model_dump(exclude={"listen"}) == config.model_dump(exclude={"listen"})
    for module in ("gcp_gateway_us", "gcp_gateway_eu"):
        given = evaluator.modules[module]["grpc_config_yaml"]
        assert given == f'${{module.meridian_config.cloud_run_grpc_yaml["{GATEWAYS[module]}"]}}'


async def test_gce_discovery_finds_the_pool_terraform_deploys(
    config: Config, evaluator: Any
) -> None:
    importlib.import_module("google.cloud.compute_v1")  # a main dependency: fail, never skip
    from gateway.control.discovery import catalog_from, sources_from
    from regions.discovery import GceSource
    from tests.terraform.compute_fake import FakeCompute

    pool = evaluator.module_args("gpu_pool_us", strict=False)
    defaults = _defaults(evaluator.module_dir("gpu_pool_us"))
    port_label, port = (
        pool.get("port_label", defaults["port_label"]),
        pool.get("port", defaults["port"]),
    )
    labels = {**pool.get("labels", {}), **pool["discovery_labels"], port_label: str(port)}
    metadata = {
        "meridian-model": pool["model"],
        "meridian-version": pool["version_name"],
        "meridian-served-model": pool["served_model"],
        "meridian-provider": pool.get("provider_kind", defaults["provider_kind"]),
    }
    gpu = pool.get("accelerator_type", defaults["accelerator_type"])
    fake = FakeCompute(project=evaluator.vars["gcp_project"])
    await fake.start()
    try:
        fake.add_instance(
            pool["zones"][0], "pool-0001", ip="10.30.0.7", labels=labels, metadata=metadata, gpu=gpu,
            mig=f"regions/{pool['region']}/instanceGroupManagers/{pool['name']}",
        )  # fmt: skip
        fake.add_instance(pool["zones"][0], "unlabelled", ip="10.30.0.8", metadata=metadata)
        assert config.discovery is not None and config.discovery.gce is not None
        gce = config.discovery.gce.model_copy(
            update={"api_endpoint": fake.url, "credentials": "anonymous"}
        )
        discovery = config.discovery.model_copy(update={"gce": gce, "sagemaker": None})
        (source,) = sources_from(discovery, catalog_from(config))
        assert isinstance(source, GceSource)
        listing = await source.discover()
        await source.close()
    finally:
        await fake.stop()
    (found,) = listing.found
    assert found.spec.url == f"http://10.30.0.7:{port}" and found.address == "10.30.0.7"
    assert (found.spec.model, found.spec.version) == (pool["model"], pool["version_name"])
    assert found.spec.region.tags == frozenset({"US"})


def _defaults(module: Path) -> dict[str, Any]:
    from tests.terraform.hcl_eval import Evaluator

    return dict(Evaluator(module).vars)
