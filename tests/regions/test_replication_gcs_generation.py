"""A GCS→GCS rewrite pins the source generation the job checked, like S3's ETag.

Read at the wire: the requests google-cloud-storage itself sends to the PyPI
GCS emulator (which does not enforce the precondition, so the request is
what is checked), and a 412 from the SDK is a copy that fails.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.api_core import exceptions as gexc

from regions.replication.base import ObjectInfo, StoreError
from regions.replication.gcs import GcsStore
from tests.regions.replication_servers import GCS_BUCKETS, gcs_emulator, no_gcs_writer_left_open

FIXTURES = (
    no_gcs_writer_left_open,
    gcs_emulator,
)


def client(endpoint: str) -> Any:
    storage: Any = importlib.import_module("google.cloud.storage")
    credentials: Any = importlib.import_module("google.auth.credentials")
    return storage.Client(
        project="test",
        credentials=credentials.AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


async def test_rewrite_sends_if_source_generation_match(gcs_emulator: str) -> None:
    gcs = client(gcs_emulator)
    sent: list[str] = []
    gcs._http.hooks["response"].append(lambda r, *a, **k: sent.append(r.request.url))
    src = GcsStore(gcs, GCS_BUCKETS[0], "gen/src")
    dst = GcsStore(gcs, GCS_BUCKETS[0], "gen/dst")
    await src.put("w.bin", b"weights")
    info = await src.stat("w.bin")
    assert info is not None and info.tag.isdigit()
    assert await dst.copy_from(src, "w.bin", info, lambda n: None)
    rewrites = [u for u in sent if "/rewriteTo/" in u]
    assert rewrites
    for url in rewrites:
        assert parse_qs(urlsplit(url).query)["ifSourceGenerationMatch"] == [info.tag]
    assert await dst.get("w.bin") == b"weights"


async def test_a_source_replaced_since_the_check_fails_the_copy(gcs_emulator: str) -> None:
    gcs = client(gcs_emulator)
    asked: list[int | None] = []

    def replaced(dst: Any, src: Any, token: str | None, generation: int | None) -> Any:
        asked.append(generation)
        raise gexc.PreconditionFailed(
            "At least one of the pre-conditions you specified did not hold."
        )

    src = GcsStore(gcs, GCS_BUCKETS[0], "gen/src2")
    dst = GcsStore(gcs, GCS_BUCKETS[0], "gen/dst2", rewrite=replaced)
    info = ObjectInfo("w.bin", 7, "1700000000000001")
    with pytest.raises(StoreError, match="changed since it was checked"):
        await dst.copy_from(src, "w.bin", info, lambda n: None)
    assert asked == [1700000000000001]
