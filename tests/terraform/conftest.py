"""Tools for the Terraform checks: terraform with its own offline CLI config, checkov in its own venv.

Nothing here relies on the machine's Terraform setup: a CLI config is written
to a temporary file (``TF_CLI_CONFIG_FILE``) that installs providers only
from the filesystem mirror (``MERIDIAN_TF_MIRROR``, default
``/opt/tf-plugins``), never from the network. Init and validation run on a
copy of ``terraform/`` so no ``.terraform`` directory or lock file lands in
the repository. Where a tool or the mirror is missing, the checks skip and
say what is missing.

checkov pins an old ``packaging`` that breaks pytest in one environment
(docs/design.md §10), so it runs from its own virtual environment,
``.venv-checkov`` at the repository root (``MERIDIAN_CHECKOV_VENV``), created
on first use (``make terraform-check`` creates it too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "terraform"
MIRROR = Path(os.environ.get("MERIDIAN_TF_MIRROR", "/opt/tf-plugins"))
CHECKOV_VENV = Path(os.environ.get("MERIDIAN_CHECKOV_VENV", ROOT / ".venv-checkov"))
CHECKOV_REQUIREMENT = "checkov>=3.2,<4"


def mirrored_providers() -> set[str]:
    """``namespace/type`` of every provider in the mirror (unpacked layout)."""
    base = MIRROR / "registry.terraform.io"
    if not base.is_dir():
        return set()
    return {f"{ns.name}/{p.name}" for ns in base.iterdir() if ns.is_dir() for p in ns.iterdir()}


@dataclass(frozen=True)
class Terraform:
    binary: str
    env: dict[str, str]

    def run(self, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not on PATH: Terraform checks skipped")
    home = tmp_path_factory.mktemp("terraform-cli")
    config = home / "cli.tfrc"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n'
    )
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(config),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
    }
    env.pop("TF_DATA_DIR", None)
    return Terraform(binary, env)


@pytest.fixture(scope="session")
def terraform_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of terraform/ (init writes .terraform and lock files)."""
    target = tmp_path_factory.mktemp("tree") / "terraform"
    shutil.copytree(
        TERRAFORM_DIR, target, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
    )
    return target


@pytest.fixture(scope="session")
def checkov() -> Iterator[Path]:
    """The checkov executable, installing its venv on first use (needs the network once)."""
    exe = CHECKOV_VENV / "bin" / "checkov"
    if not exe.exists():
        try:
            if not (CHECKOV_VENV / "bin" / "python").exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", str(CHECKOV_VENV)],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
            subprocess.run(
                [
                    str(CHECKOV_VENV / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    CHECKOV_REQUIREMENT,
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            tail = (
                detail.decode(errors="replace").strip().splitlines()[-1:] if detail else [str(exc)]
            )
            pytest.skip(
                f"checkov venv {CHECKOV_VENV} could not be created (offline?): {' '.join(tail)}"
            )
    yield exe
