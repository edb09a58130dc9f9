"""terraform fmt, terraform validate (where the providers are mirrored offline), HCL parsing.

Validation runs for every module whose providers are all in the offline
mirror (the AWS modules, and the provider-free meridian-config); the Google
modules and the example (which needs hashicorp/google) are fmt-checked and
parsed with python-hcl2 only. The validations run concurrently (each loads
the AWS provider's schema, a few seconds apiece).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.terraform.conftest import MIRROR, TERRAFORM_DIR, Terraform, mirrored_providers

MODULES = sorted(p.name for p in (TERRAFORM_DIR / "modules").iterdir() if p.is_dir())
EXAMPLES = sorted(p.name for p in (TERRAFORM_DIR / "examples").iterdir() if p.is_dir())


def required_providers(directory: Path) -> dict[str, dict[str, object]]:
    from tests.terraform.hcl_eval import load, unquote

    found: dict[str, dict[str, object]] = {}
    for path in directory.glob("*.tf"):
        for block in load(path).get("terraform", []):
            for providers in block.get("required_providers", []):
                for name, spec in providers.items():
                    if name != "__is_block__":
                        found[name] = {k: v for k, v in spec.items()} | {
                            "source": unquote(str(spec.get("source", f'"hashicorp/{name}"')))
                        }
    return found


def test_fmt(terraform: Terraform) -> None:
    result = terraform.run(TERRAFORM_DIR, "fmt", "-check", "-recursive", "-diff", "-no-color")
    assert result.returncode == 0, (
        f"terraform fmt -recursive terraform/ would change:\n{result.stdout}{result.stderr}"
    )


def test_every_file_parses_with_python_hcl2() -> None:
    from tests.terraform.hcl_eval import load

    files = [*TERRAFORM_DIR.rglob("*.tf"), *TERRAFORM_DIR.rglob("*.tfvars.example")]
    assert len(files) > 20
    for path in files:
        assert load(path) is not None, path


@pytest.fixture(scope="session")
def validations(terraform: Terraform, terraform_copy: Path) -> dict[str, tuple[bool, str]]:
    """module -> (valid, output), for every module whose providers are mirrored."""
    mirrored = mirrored_providers()

    def validatable(name: str) -> bool:
        needed = {
            str(spec["source"])
            for spec in required_providers(terraform_copy / "modules" / name).values()
        }
        return needed <= mirrored

    def validate(name: str) -> tuple[bool, str]:
        directory = terraform_copy / "modules" / name
        aliases = [
            alias
            for spec in required_providers(directory).values()
            for alias in spec.get("configuration_aliases", [])  # type: ignore[attr-defined]
        ]
        if aliases:
            # A module receiving aliased providers cannot be validated alone:
            # give it placeholder configurations, as a caller would.
            blocks = [
                f'provider "{str(a).strip("${}").split(".")[0]}" {{\n  alias  = "{str(a).strip("${}").split(".")[1]}"\n  region = "us-east-1"\n}}\n'
                for a in aliases
            ]
            (directory / "zz_validate_providers.tf").write_text("".join(blocks))
        init = terraform.run(directory, "init", "-backend=false", "-no-color")
        if init.returncode != 0:
            return False, init.stdout + init.stderr
        result = terraform.run(directory, "validate", "-no-color")
        return result.returncode == 0, result.stdout + result.stderr

    names = [n for n in MODULES if validatable(n)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(validate, names), strict=True))


@pytest.mark.parametrize("module", MODULES)
def test_validate_module(module: str, validations: dict[str, tuple[bool, str]]) -> None:
    if module not in validations:
        needed = {
            str(s["source"])
            for s in required_providers(TERRAFORM_DIR / "modules" / module).values()
        }
        missing = ", ".join(sorted(needed - mirrored_providers()))
        pytest.skip(
            f"modules/{module} needs {missing}, which the offline mirror {MIRROR} lacks: "
            "fmt-checked and parsed with python-hcl2 only"
        )
    valid, output = validations[module]
    assert valid, f"terraform validate modules/{module}:\n{output}"


def test_the_aws_modules_were_validated(validations: dict[str, tuple[bool, str]]) -> None:
    """With the AWS provider mirrored, every AWS module must be among those validated."""
    if "hashicorp/aws" not in mirrored_providers():
        pytest.skip("hashicorp/aws is not in the offline mirror")
    aws = [m for m in MODULES if m.startswith("aws-")]
    assert aws and set(aws) <= set(validations)


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_only_use_modules_that_exist(example: str) -> None:
    from tests.terraform.hcl_eval import Evaluator

    evaluator = Evaluator(TERRAFORM_DIR / "examples" / example)
    for name in evaluator.modules:
        source = evaluator.module_dir(name)
        assert source.is_dir() and any(source.glob("*.tf")), f"module {name}: {source}"
