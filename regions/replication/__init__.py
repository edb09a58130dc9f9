"""Model-weight replication between regions (docs/design.md §7, docs/replication.md).

A manifest per model version (``manifest``), object stores behind one small
async interface (``base``; ``s3``, ``gcs``, ``local``), a resumable, verified,
concurrent job (``job``, ``region``) and the replica status it reports
(``status``), which the control plane turns into the routing gate.
"""

from regions.replication.base import (
    ObjectInfo,
    ObjectStore,
    ReplicationError,
    StoreError,
)
from regions.replication.job import JobOptions, JobReport, ReplicationJob, Target
from regions.replication.location import Location, StoreFactory, StoreSettings, parse_location
from regions.replication.manifest import MANIFEST, FileEntry, Manifest, build_manifest
from regions.replication.status import (
    MemorySink,
    Phase,
    RegionProgress,
    ReplicaStatus,
    ReplicaStatusSink,
    StatusUnavailable,
)

__all__ = [
    "MANIFEST",
    "FileEntry",
    "JobOptions",
    "JobReport",
    "Location",
    "Manifest",
    "MemorySink",
    "ObjectInfo",
    "ObjectStore",
    "Phase",
    "RegionProgress",
    "ReplicaStatus",
    "ReplicaStatusSink",
    "ReplicationError",
    "ReplicationJob",
    "StatusUnavailable",
    "StoreError",
    "StoreFactory",
    "StoreSettings",
    "Target",
    "build_manifest",
    "parse_location",
]
