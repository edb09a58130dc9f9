"""GET /v1/models/{id} and OpenAI's error shape on routes that do not exist (issue 17 item 6)."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.conftest import (
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)


async def test_retrieve_a_model_and_a_missing_one(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], tenant={"models": [MODEL]})
    )
    async with openai.AsyncOpenAI(
        base_url=gw.http_url + "/v1", api_key=GLOBAL_KEY, max_retries=0
    ) as c:
        model = await c.models.retrieve(MODEL)
        assert model.id == MODEL and model.object == "model"
        with pytest.raises(openai.NotFoundError) as caught:
            await c.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/responses/abc", 404),
        ("GET", "/v1/nothing", 404),
        ("DELETE", "/v1/chat/completions", 405),
    ],
)
async def test_unknown_paths_and_methods_answer_in_openais_shape(
    emulators: EmulatorFactory, gateways: GatewayFactory, method: str, path: str, status: int
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    headers = {"Authorization": f"Bearer {EU_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.http_url + path, headers=headers) as resp,
    ):
        assert resp.status == status
        err = (await resp.json())["error"]
    assert set(err) == {"message", "type", "param", "code"}
