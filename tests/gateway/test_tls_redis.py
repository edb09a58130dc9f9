"""The store over ``rediss://`` with a CA bundle (issue 21 item 3). The valkey
binary the tests run is built without TLS ("Failed finding TLS support"), so the
TLS here is a real TLS terminator in front of a real valkey: the bytes redis-py
verifies and speaks are TLS, the server behind is the one production runs."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from gateway.config.model import ConfigError, StoreConfig
from gateway.security.tls import redis_url
from gateway.store import StoreUnavailable, open_store
from tests.redis_server import RedisServer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_terminator(leaf: trustme.LeafCert, upstream: int) -> AsyncIterator[int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
        for t in (_pipe(reader, up_w), _pipe(up_r, writer)):
            task = asyncio.create_task(t)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _port(server: RedisServer) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


async def test_rediss_with_the_ca_bundle_verifies_and_without_it_is_refused(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with tls_terminator(ca.issue_cert("127.0.0.1"), _port(redis_server)) as port:
        url = f"rediss://127.0.0.1:{port}/0"
        store = open_store(StoreConfig(kind="redis", url=url, ca_file=str(tmp_path / "ca.pem")))
        try:
            await store.open()
            await store.ping(2.0)
            assert (await store.load()).revision == 0
        finally:
            await store.close()
        # verification is on: the system's CAs do not know this one
        store = open_store(StoreConfig(kind="redis", url=url))
        try:
            with pytest.raises(StoreUnavailable):
                await store.open()
        finally:
            await store.close()


def test_the_ca_joins_only_rediss_urls() -> None:
    assert redis_url("redis://h:1/0", "/ca.pem") == "redis://h:1/0"
    assert redis_url("rediss://h:1/0", None) == "rediss://h:1/0"
    assert (
        redis_url("rediss://h:1/0", "/etc/a b.pem") == "rediss://h:1/0?ssl_ca_certs=/etc/a%20b.pem"
    )
    assert redis_url("rediss://h:1/0?x=1", "/c") == "rediss://h:1/0?x=1&ssl_ca_certs=/c"


async def test_an_env_url_is_read_without_the_whitespace_around_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A secret mounted or echoed into MERIDIAN_REDIS_URL ends in a newline; one before
    the scheme hid ``rediss://`` from the CA bundle, and a blank one was redis-py's
    traceback instead of a config error."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = StoreConfig(kind="redis", url="env:URL", ca_file=str(tmp_path / "ca.pem"))
    async with tls_terminator(ca.issue_cert("127.0.0.1"), _port(redis_server)) as port:
        for value in (f"rediss://127.0.0.1:{port}/0\n", f"\n rediss://127.0.0.1:{port}/0\r\n"):
            store = open_store(config, {"URL": value})
            try:
                await store.open()
                assert (await store.load()).revision == 0
            finally:
                await store.close()
    with pytest.raises(ConfigError, match="URL is empty"):
        open_store(config, {"URL": " \n"})
    with pytest.raises(ConfigError, match="URL is not set"):
        open_store(config, {})
