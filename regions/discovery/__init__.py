"""Backends that come and go: discovery from the clouds' control planes.

Sources list one cloud's backends (``sagemaker``: endpoints by tag; ``gce``:
GPU instances by label); the :class:`Refresher` (``refresh``) asks them
periodically, vets what they found (``netpolicy``: allowed networks;
``base.Catalog``: configured regions and models) and hands one inventory to
whoever applies it (``gateway.control.discovery``). :class:`TrackedProvider`
lets a removed backend finish its streams before its adapter closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regions.lazy import lazy_names

if TYPE_CHECKING:
    from regions.discovery.base import Catalog, DiscoveryError, Found, Listing, Refused, Source
    from regions.discovery.gce import GceSettings, GceSource
    from regions.discovery.netpolicy import NetworkPolicy
    from regions.discovery.refresh import Inventory, Refresher
    from regions.discovery.sagemaker import SageMakerSettings, SageMakerSource
    from regions.discovery.tracked import TrackedProvider

# Each name loads its own module when first asked for: every executor imports
# ``tracked``, while the sources and the refresher are for a config with a
# ``discovery:`` section alone (idle RSS of a gateway without one).
_HOME = {
    "Catalog": "base",
    "DiscoveryError": "base",
    "Found": "base",
    "Listing": "base",
    "Refused": "base",
    "Source": "base",
    "GceSettings": "gce",
    "GceSource": "gce",
    "NetworkPolicy": "netpolicy",
    "Inventory": "refresh",
    "Refresher": "refresh",
    "SageMakerSettings": "sagemaker",
    "SageMakerSource": "sagemaker",
    "TrackedProvider": "tracked",
}


__getattr__ = lazy_names(__name__, _HOME)


__all__ = [
    "Catalog",
    "DiscoveryError",
    "Found",
    "GceSettings",
    "GceSource",
    "Inventory",
    "Listing",
    "NetworkPolicy",
    "Refresher",
    "Refused",
    "SageMakerSettings",
    "SageMakerSource",
    "Source",
    "TrackedProvider",
]
