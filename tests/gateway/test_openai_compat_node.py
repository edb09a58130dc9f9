"""The Node ``openai`` package as a judge (issue 17): streamed tool calls through the gateway.

``tests/node`` is an npm project with a committed package-lock.json; the fixture
runs ``npm ci`` there once per session, so the client comes from the project's
own files. Without node or npm on the machine the test is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

NODE_PROJECT = Path(__file__).resolve().parent.parent / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node client test")
    import subprocess

    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return NODE_PROJECT / "stream_tools.mjs"


async def test_node_client_streams_tool_calls(
    node_client: Path, emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(node_client),
        gw.http_url + "/v1",
        GLOBAL_KEY,
        MODEL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    call = result["call"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "text"}
    assert call["id"].startswith("chatcmpl-tool-")
    assert result["finish"] == "tool_calls"
    accumulated = result["accumulated"]
    assert accumulated["function"]["name"] == "get_weather"
    assert json.loads(accumulated["function"]["arguments"]) == {"city": "text"}
    assert result["answer"]
    sent = em.stats.last_request
    assert sent is not None and sent["messages"][-1]["tool_call_id"] == call["id"]
