"""TLS in terraform/: how gRPC reaches the gateway on each cloud.

AWS: with ``listener_tls`` the gateway terminates TLS itself (its certificate
from Secrets Manager, the client certificates of internal services checked
against ``listen.tls.grpc.client_ca``), so the gRPC load balancer must be a
network load balancer forwarding TCP: a TLS-terminating one would drop the
client certificate. GCP: Cloud Run takes h2c on one named port, so gRPC is a
second service behind an HTTP2 backend service, and gRPC's paths route to it.
Read from the modules' HCL (python-hcl2): neither provider plans offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.terraform.conftest import TERRAFORM_DIR

AWS = TERRAFORM_DIR / "modules" / "aws-gateway-region"
GCP = TERRAFORM_DIR / "modules" / "gcp-gateway-region"


def resources(module: Path = AWS) -> dict[tuple[str, str], dict[str, Any]]:
    from tests.terraform.hcl_eval import load, unquote

    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(module.glob("*.tf")):
        for block in load(path).get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    if not name.startswith("__"):
                        found[(unquote(kind), unquote(name))] = body
    return found


def text(value: Any) -> str:
    from tests.terraform.hcl_eval import unquote

    return unquote(str(value))


def test_grpc_is_tcp_passthrough_on_a_network_load_balancer() -> None:
    r = resources()
    listener = r[("aws_lb_listener", "grpc_passthrough")]
    assert text(listener["protocol"]) == "TCP"
    assert "certificate_arn" not in listener and "ssl_policy" not in listener
    (action,) = listener["default_action"]
    assert text(action["type"]) == "forward"
    assert action["target_group_arn"] == "${aws_lb_target_group.grpc_passthrough[0].arn}"
    assert listener["load_balancer_arn"] == "${aws_lb.grpc[0].arn}"
    assert text(r[("aws_lb", "grpc")]["load_balancer_type"]) == "network"
    group = r[("aws_lb_target_group", "grpc_passthrough")]
    assert (text(group["protocol"]), group["port"]) == ("TCP", "${local.ports.grpc}")
    # a draining task (readyz 503) leaves the NLB as it leaves the ALB
    (check,) = group["health_check"]
    assert (text(check["protocol"]), text(check["path"])) == ("HTTPS", "/readyz")


def test_with_listener_tls_grpc_leaves_the_alb_and_the_alb_speaks_https_to_the_tasks() -> None:
    r = resources()
    on = "${local.passthrough ? 1 : 0}"
    off = "${local.passthrough ? 0 : 1}"
    for kind, name in [("aws_lb", "grpc"), ("aws_lb_listener", "grpc_passthrough")]:
        assert r[(kind, name)]["count"] == on, (kind, name)
    for kind, name in [("aws_lb_target_group", "grpc"), ("aws_lb_listener_rule", "grpc")]:
        assert r[(kind, name)]["count"] == off, (kind, name)
    http = r[("aws_lb_target_group", "http")]
    assert http["protocol"] == "${local.target}"
    assert http["health_check"][0]["protocol"] == "${local.target}"
    from tests.terraform.hcl_eval import load

    (alb_locals,) = [b for b in load(AWS / "alb.tf").get("locals", [])]
    assert alb_locals["passthrough"] == "${var.listener_tls != null}"
    assert alb_locals["target"] == '${local.passthrough ? "HTTPS" : "HTTP"}'


def test_the_task_may_read_the_certificate_secrets_and_writes_them_before_meridian_starts() -> None:
    from tests.terraform.hcl_eval import load

    main = load(AWS / "main.tf")
    (task,) = [
        body
        for block in main["resource"]
        for kind, named in block.items()
        if kind == '"aws_ecs_task_definition"'
        for body in named.values()
        if isinstance(body, dict)
    ]
    definitions = str(task["container_definitions"])
    assert "${local.write_tls}exec meridian serve" in definitions
    iam = str(load(AWS / "iam.tf"))
    assert "values(local.tls)" in iam  # the execution role reads the TLS secrets


def test_gcp_grpc_is_an_h2c_service_behind_an_http2_backend_on_the_grpc_paths() -> None:
    from grpc_reflection.v1alpha import reflection

    from gateway.grpc.server import _HEALTH_NAME, SERVICE_NAME
    from tests.terraform.hcl_eval import Evaluator

    r = resources(GCP)
    service = r[("google_cloud_run_v2_service", "grpc")]
    (container,) = service["template"][0]["containers"]
    (port,) = container["ports"]
    assert (text(port["name"]), port["container_port"]) == ("h2c", 8080)
    assert "grpc" in container["startup_probe"][0]  # grpc.health.v1, not an HTTP path
    backend = r[("google_compute_region_backend_service", "grpc")]
    assert text(backend["protocol"]) == "HTTP2"
    matcher = r[("google_compute_region_url_map", "gateway")]["dynamic"][1]['"path_matcher"']
    (content,) = matcher["content"]
    (rule,) = content["path_rule"]
    assert rule["service"] == "${google_compute_region_backend_service.grpc[0].id}"
    assert rule["paths"] == "${local.grpc_paths}"
    gcp = Evaluator(GCP)
    paths = set(gcp.value(gcp.locals["grpc_paths"]))
    # every service the gRPC listener registers routes to the gRPC backend
    names = (SERVICE_NAME, _HEALTH_NAME, reflection.SERVICE_NAME)
    assert paths == {f"/{name}/*" for name in names}
