"""Read Terraform values offline with python-hcl2: enough to render the example's config.

python-hcl2 parses HCL into Python data but keeps expressions as text (a
string literal keeps its quotes, ``"\\"US\\""``; an expression is
``"${local.regions}"``). :class:`Evaluator` resolves the small subset the
example's ``module "meridian_config"`` block is kept to: literals, string
templates, and references to ``var.*`` (defaults, overridden by a tfvars
file), ``local.*`` and ``module.M.O``. A module output is taken to be the
module's input of the same name (given in the block, else that variable's
default): the modules the config reads are written so that this holds
(``tests/terraform/test_generated_config.py`` checks the outputs exist).
Anything else raises :class:`Unsupported`, so the block stays simple.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import hcl2

_REF = re.compile(r"\$\{([^{}]+)\}")
_TOKEN = re.compile(r'[A-Za-z_][\w-]*|\["[^"]*"\]|\[\d+\]')


class Unsupported(ValueError):
    """An expression outside the subset (function calls, for-expressions, conditionals)."""


# python-hcl2's parser (lark underneath) keeps state between calls: parsed from
# several threads at once it returns wrong trees (a provider block as a string).
_PARSER = threading.Lock()


def load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    with _PARSER:
        data: dict[str, Any] = hcl2.loads(text)
    return data


def _meta(key: str) -> bool:
    """python-hcl2's own keys (``__is_block__``, ``__comments__``)."""
    return key.startswith("__") and key.endswith("__")


def unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _blocks(files: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """``{name: body}`` of labelled blocks (variable, module, output) across files."""
    out: dict[str, Any] = {}
    for data in files:
        for block in data.get(kind, []):
            for name, body in block.items():
                if not _meta(name):
                    out[unquote(name)] = body
    return out


class Evaluator:
    def __init__(self, directory: Path, tfvars: Path | None = None) -> None:
        self.directory = directory
        files = [load(p) for p in sorted(directory.glob("*.tf"))]
        self.locals: dict[str, Any] = {}
        for data in files:
            for block in data.get("locals", []):
                self.locals.update({k: v for k, v in block.items() if not _meta(k)})
        self.modules = _blocks(files, "module")
        self.outputs = _blocks(files, "output")
        self.vars: dict[str, Any] = {}
        for name, body in _blocks(files, "variable").items():
            if "default" in body:
                self.vars[name] = self.value(body["default"])
        if tfvars is not None:
            self.vars.update({k: self.value(v) for k, v in load(tfvars).items() if not _meta(k)})

    def value(self, raw: Any) -> Any:
        if isinstance(raw, dict):
            return {unquote(k): self.value(v) for k, v in raw.items() if not _meta(k)}
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if isinstance(raw, str):
            if raw.startswith("${") and raw.endswith("}") and _REF.fullmatch(raw):
                return self.expr(raw[2:-1])
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                return _REF.sub(lambda m: str(self.expr(m.group(1))), raw[1:-1])
            raise Unsupported(f"unquoted expression {raw!r}")
        return raw

    def expr(self, text: str) -> Any:
        tokens = _TOKEN.findall(text.strip())
        if "".join(tokens).replace(" ", "") != text.strip().replace(".", "").replace(" ", ""):
            raise Unsupported(f"expression {text!r} is not a plain reference")
        root, rest = tokens[0], tokens[1:]
        if root == "var":
            value = self.vars[rest[0]]
            rest = rest[1:]
        elif root == "local":
            value = self.value(self.locals[rest[0]])
            rest = rest[1:]
        elif root == "module":
            value = self.module_output(rest[0], rest[1])
            rest = rest[2:]
        else:
            raise Unsupported(f"reference {text!r}: only var., local. and module. are evaluated")
        for step in rest:
            if step.startswith('["'):
                value = value[step[2:-2]]
            elif step.startswith("["):
                value = value[int(step[1:-1])]
            else:
                value = value[step]
        return value

    def module_args(self, name: str, *, strict: bool = True) -> dict[str, Any]:
        """A module block's arguments, evaluated; ``strict=False`` leaves out
        those outside the subset (resource attributes of other modules)."""
        skip = {"source", "providers", "count", "for_each", "depends_on"}
        out: dict[str, Any] = {}
        for key, raw in self.modules[name].items():
            if key in skip or _meta(key):
                continue
            try:
                out[key] = self.value(raw)
            except (Unsupported, LookupError):
                if strict:
                    raise
        return out

    def module_dir(self, name: str) -> Path:
        return (self.directory / unquote(self.modules[name]["source"])).resolve()

    def module_output(self, module: str, output: str) -> Any:
        body = self.modules[module]
        source = self.module_dir(module)
        outputs = _blocks([load(p) for p in sorted(source.glob("*.tf"))], "output")
        if output not in outputs:
            raise LookupError(f"module.{module} ({source.name}) has no output {output!r}")
        if output in body:
            return self.value(body[output])
        inner = Evaluator(source)
        if output in inner.vars:
            return inner.vars[output]
        raise Unsupported(
            f"module.{module}.{output} is not an input of the module: give the config a value "
            "the module passes through unchanged"
        )
