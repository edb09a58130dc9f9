"""Regenerate the committed Python stubs of ``proto/**/*.proto`` (``make proto``).

Runs grpcio-tools' bundled ``protoc`` with the message, gRPC and mypy-protobuf
(``.pyi``) plugins, then rewrites the generated imports: ``protoc`` names
modules after the proto's path (``meridian.v1.inference_pb2``), but here they
live inside the ``meridian_proto`` package, so ``from meridian.v1 import ...`` becomes
``from meridian_proto.meridian.v1 import ...``. The ``.proto`` keeps its own path
(``meridian/v1/inference.proto``) in the descriptor, which is what other
languages' stubs and server reflection refer to. (The package is not called
``proto``: that name belongs to proto-plus, which the Google Cloud clients import.)

The output is a pure function of the ``.proto`` files and the pinned tool
versions, which is what lets ``tests/gateway/test_grpc_stubs.py`` regenerate
into a temporary directory and fail when the committed stubs are stale.

Usage: ``python -m meridian_proto.generate [OUT_DIR]`` (default: this directory).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent  # the stubs, a Python package
# The .proto sources: a plain directory at the repository root, no __init__.py,
# so it never shadows proto-plus's top-level ``proto`` module.
PROTOS = ROOT.parent / "proto"
PACKAGE = "meridian_proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def sources(root: Path = PROTOS) -> list[Path]:
    return sorted(root.rglob("*.proto"))


def generated(root: Path) -> list[Path]:
    """The generated files under ``root``, sorted, as paths relative to it."""
    return sorted(
        p.relative_to(root) for p in root.rglob("*") if p.name.endswith(GENERATED_SUFFIXES)
    )


def _plugin(name: str) -> str:
    """A protoc plugin from this interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (mypy-protobuf)")
    return found


def _fix_imports(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # `from meridian.v1 import inference_pb2` -> `from meridian_proto.meridian.v1 import ...`
    text = re.sub(r"^from (meridian\.\S+) import", rf"from {PACKAGE}.\1 import", text, flags=re.M)
    # the module name given to message classes (their __module__, used by pickle)
    text = re.sub(r"'(meridian\.[\w.]+_pb2)'", rf"'{PACKAGE}.\1'", text)
    path.write_text(text, encoding="utf-8")


def generate(out: Path, root: Path = PROTOS) -> list[Path]:
    """Write the stubs of every ``.proto`` under ``root`` into ``out``; return them."""
    out.mkdir(parents=True, exist_ok=True)
    protos = [str(p.relative_to(root)) for p in sources(root)]
    argv = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        *protos,
    ]
    # quiet: mypy-protobuf announces every file it writes on stderr
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"protoc failed:\n{done.stderr}")
    files = generated(out)
    for rel in files:
        _fix_imports(out / rel)
    return files


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for rel in generate(out):
        print(out / rel)


if __name__ == "__main__":
    main()
