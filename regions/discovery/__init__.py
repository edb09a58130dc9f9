"""Backends that come and go: discovery from the clouds' control planes.

Sources list one cloud's backends (``sagemaker``: endpoints by tag; ``gce``:
GPU instances by label); the :class:`Refresher` (``refresh``) asks them
periodically, vets what they found (``netpolicy``: allowed networks;
``base.Catalog``: configured regions and models) and hands one inventory to
whoever applies it (``gateway.control.discovery``). :class:`TrackedProvider`
lets a removed backend finish its streams before its adapter closes.
"""

from regions.discovery.base import Catalog, DiscoveryError, Found, Listing, Refused, Source
from regions.discovery.gce import GceSettings, GceSource
from regions.discovery.netpolicy import NetworkPolicy
from regions.discovery.refresh import Inventory, Refresher
from regions.discovery.sagemaker import SageMakerSettings, SageMakerSource
from regions.discovery.tracked import TrackedProvider

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
