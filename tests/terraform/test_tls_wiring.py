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

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.terraform.conftest import TERRAFORM_DIR, Terraform

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
    assert "umask 077 && " in definitions
    assert "${module.listener_tls.shell}exec meridian serve" in definitions
    iam = str(load(AWS / "iam.tf"))
    assert "values(module.listener_tls.secrets)" in iam  # the execution role reads them


def test_the_rendered_shell_writes_each_pem_to_its_file_and_out_of_the_environment(
    terraform: Terraform, tmp_path: Path
) -> None:
    """The listener-tls module applied offline; its shell run as the task runs it."""
    files = {n: str(tmp_path / "tls" / f"{n}.pem") for n in ("cert", "key", "client_ca")}
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:meridian/"
    root = tmp_path / "root"
    root.mkdir()
    given = {
        "cert_secret_arn": arn + "cert",
        "key_secret_arn": arn + "key",
        "client_ca_secret_arn": arn + "ca",
        "files": files,
    }
    main = {
        "module": {"tls": {"source": str(AWS / "listener-tls"), "listener_tls": given}},
        "output": {n: {"value": f"${{module.tls.{n}}}"} for n in ("shell", "secrets")},
    }
    (root / "main.tf.json").write_text(json.dumps(main))
    for step in (("init", "-no-color"), ("apply", "-auto-approve", "-no-color", "-lock=false")):
        result = terraform.run(root, *step)
        assert result.returncode == 0, f"terraform {step[0]}:\n{result.stdout}{result.stderr}"
    out = json.loads(terraform.run(root, "output", "-json").stdout)
    assert out["secrets"]["value"] == {
        "MERIDIAN_TLS_CERT": arn + "cert",
        "MERIDIAN_TLS_KEY": arn + "key",
        "MERIDIAN_TLS_CLIENT_CA": arn + "ca",
    }
    pems = {  # what ECS puts in the environment: a secret's value, maybe % and quotes in it
        "MERIDIAN_TLS_CERT": "-----BEGIN CERTIFICATE-----\nMIIB%s'\"x\n-----END CERTIFICATE-----",
        "MERIDIAN_TLS_KEY": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        "MERIDIAN_TLS_CLIENT_CA": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----",
    }
    dump = f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'"
    script = f"umask 077 && {out['shell']['value']}exec {dump}"
    ran = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", **pems},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    environ = json.loads(ran.stdout)
    assert not {k for k in environ if k.startswith("MERIDIAN_TLS_")}  # Meridian never sees them
    for env, name in (("MERIDIAN_TLS_CERT", "cert"), ("MERIDIAN_TLS_KEY", "key")):
        path = Path(files[name])
        assert path.read_text().rstrip("\n") == pems[env].rstrip("\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Path(files["client_ca"]).read_text().startswith("-----BEGIN CERTIFICATE-----\nCA")


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
