"""``python bench/floor.py``: the bench's ``aiohttp`` contender, the framework's floor.

A pass-through proxy in the gateway's own stack (uvloop, aiohttp's server and
client, one keep-alive pool) that does nothing else: no auth, parsing, routing,
accounting, pacing or model rewrite. Headers and status are relayed both ways
(less the hop-by-hop ones) and each upstream read is written to the client as
it comes, like nginx with ``proxy_buffering off``; the request body is read
whole first, as the gateway must to validate it (nginx streams it). Its CPU
per request is what any gateway on this stack pays before its first feature:
the gateway's figure less this one is what Meridian's own work costs, and
this one against nginx's is the framework's share of the gap.

Not part of the product: it exists to be measured (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aiohttp
import uvloop
from aiohttp import web

# Hop-by-hop headers and those aiohttp writes itself; the rest is relayed both
# ways, as nginx does.
_OWN = frozenset(
    h.lower()
    for h in (
        "Host", "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Content-Length", "Date", "Server",
    )
)  # fmt: skip


async def serve(host: str, port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=75.0),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()  # whole, as the gateway reads it to validate it
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _OWN]
        async with session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            out = web.StreamResponse(status=resp.status)
            out.headers.extend((k, v) for k, v in resp.headers.items() if k.lower() not in _OWN)
            await out.prepare(request)
            async for piece in resp.content.iter_any():
                await out.write(piece)
            await out.write_eof()
            return out

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()  # as the gateway's listener
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/floor.py", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
