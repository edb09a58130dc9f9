"""A package's names loaded with their module on first use (PEP 562 ``__getattr__``).

``meridian serve`` imports only what its config uses: a package that re-exports
its modules' names would otherwise load them all with the package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps a name to its submodule."""

    def attribute(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # __import__, not importlib.import_module: -X importtime lists what it loads.
        __import__(f"{package}.{home}")
        value = getattr(sys.modules[f"{package}.{home}"], name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return attribute
